"""Create a cgroup v1 group with CPU and memory limits, run processes in it, remove it.

Why: the demo, the end-to-end tests and the cgroup reader's own tests need a real
"container" on a bare host: a cgroup with a CFS quota and a memory limit and a process
inside it. This is the small, reusable part of that (it needs root and writable v1
``cpu``, ``cpuacct`` and ``memory`` hierarchies). It works with ``cpu`` and ``cpuacct``
mounted separately or together.

Example::

    group = create_v1_cgroup("/daytwo-demo/burner", cpu_limit_cores=0.5,
                             memory_limit_bytes=256 * 2**20)
    process = spawn_in_cgroup(group, [sys.executable, "-c", "while True: pass"])
    ...
    process.kill(); process.wait()
    remove_v1_cgroup(group)
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.cgroup import CgroupMounts, CgroupPaths
from pipeline.errors import CollectorError

__all__ = [
    "V1Cgroup",
    "create_v1_cgroup",
    "remove_v1_cgroup",
    "spawn_in_cgroup",
    "v1_cgroups_writable",
]

_CONTROLLERS = ("cpu", "cpuacct", "memory")
DEFAULT_CFS_PERIOD_US = 100_000

# Joins the shell to every cgroup.procs file given (count first), then execs the command,
# so the command starts already inside the cgroup (no window where it runs outside).
_JOIN_AND_EXEC = (
    'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 97; shift; '
    'n=$((n - 1)); done; exec "$@"'
)


@dataclass(frozen=True)
class V1Cgroup:
    """A cgroup created by :func:`create_v1_cgroup`.

    ``relative_path`` is what a mapping file names (relative to each controller mount);
    ``paths`` is what :func:`agents.cgroup.read_cgroup` reads; ``created`` lists the
    directories this call made (leaf last), so removal leaves pre-existing parents alone.
    """

    relative_path: str
    paths: CgroupPaths
    created: tuple[Path, ...]

    def procs_files(self) -> tuple[Path, ...]:
        """One ``cgroup.procs`` per distinct controller directory."""
        return tuple(directory / "cgroup.procs" for directory in self.paths.directories())

    def pids(self) -> set[int]:
        """Processes currently in the cgroup (in any of its controller directories)."""
        found: set[int] = set()
        for procs in self.procs_files():
            with contextlib.suppress(OSError):
                found.update(int(line) for line in procs.read_text().split())
        return found


def v1_cgroups_writable(mounts: CgroupMounts | None = None) -> str | None:
    """``None`` when v1 cpu, cpuacct and memory can be created here, else the reason why not."""
    try:
        mounts = mounts or CgroupMounts.discover()
    except CollectorError as error:
        return str(error)
    for controller in _CONTROLLERS:
        mount = mounts.v1.get(controller)
        if mount is None:
            return f"cgroup v1 controller {controller!r} is not mounted (see /proc/self/mountinfo)"
        if not os.access(mount, os.W_OK):
            return f"cgroup v1 mount {mount} is not writable (needs root)"
    return None


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value, encoding="ascii")
    except OSError as error:
        raise CollectorError(f"cannot write {value!r} to {path}: {error}") from error


def create_v1_cgroup(
    relative_path: str,
    *,
    cpu_limit_cores: float | None,
    memory_limit_bytes: int | None,
    mounts: CgroupMounts | None = None,
    cfs_period_us: int = DEFAULT_CFS_PERIOD_US,
) -> V1Cgroup:
    """Create (or reuse) the v1 cgroup at ``relative_path`` and set its limits.

    ``cpu_limit_cores`` becomes ``cpu.cfs_quota_us`` over ``cfs_period_us``;
    ``memory_limit_bytes`` becomes ``memory.limit_in_bytes`` (and the memory+swap limit
    where swap accounting exists, so the process is OOM-killed rather than swapped).
    ``None`` leaves a limit unset.
    """
    mounts = mounts or CgroupMounts.discover()
    missing = [name for name in _CONTROLLERS if name not in mounts.v1]
    if missing:
        raise CollectorError(
            f"cgroup v1 controllers {missing} are not mounted; this helper needs v1 "
            "cpu, cpuacct and memory hierarchies (see /proc/self/mountinfo)"
        )
    parts = [part for part in relative_path.split("/") if part]
    if not parts or any(part in {".", ".."} for part in parts):
        raise CollectorError(f"cgroup path {relative_path!r} must name a group below the root")
    created: list[Path] = []
    for mount in dict.fromkeys(mounts.v1[name] for name in _CONTROLLERS):
        directory = mount
        for part in parts:
            directory = directory / part
            if not directory.exists():
                try:
                    directory.mkdir()
                except OSError as error:
                    raise CollectorError(
                        f"cannot create cgroup {directory}: {error}; run as root"
                    ) from error
                created.append(directory)
    group = V1Cgroup(
        relative_path="/" + "/".join(parts),
        paths=mounts.resolve("/".join(parts)),
        created=tuple(created),
    )
    try:
        cpu_dir, memory_dir = group.paths.cpu, group.paths.memory
        _write(cpu_dir / "cpu.cfs_period_us", str(cfs_period_us))
        quota = -1 if cpu_limit_cores is None else max(1000, round(cpu_limit_cores * cfs_period_us))
        _write(cpu_dir / "cpu.cfs_quota_us", str(quota))
        if memory_limit_bytes is not None:
            _write(memory_dir / "memory.limit_in_bytes", str(memory_limit_bytes))
            memsw = memory_dir / "memory.memsw.limit_in_bytes"
            if memsw.exists():
                _write(memsw, str(memory_limit_bytes))
    except CollectorError:
        remove_v1_cgroup(group)
        raise
    return group


def spawn_in_cgroup(
    group: V1Cgroup, argv: Sequence[str], **popen_options: Any
) -> subprocess.Popen[bytes]:
    """Start ``argv`` inside ``group`` (it is in the cgroup before its first instruction).

    ``popen_options`` go to :class:`subprocess.Popen` (``stdin``, ``stdout``, ``env``...).
    A child that could not join the cgroup exits with status 97.
    """
    procs = [str(path) for path in group.procs_files()]
    command = ["/bin/sh", "-c", _JOIN_AND_EXEC, "daytwo-join-cgroup", str(len(procs)), *procs]
    return subprocess.Popen([*command, *argv], **popen_options)


def remove_v1_cgroup(group: V1Cgroup, *, timeout_seconds: float = 5.0) -> None:
    """Kill whatever still runs in ``group`` and remove the directories it created.

    Only processes inside this cgroup are signalled. Raises ``CollectorError`` when the
    cgroup is still busy after ``timeout_seconds``.
    """
    deadline = time.monotonic() + timeout_seconds
    while pids := group.pids():
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise CollectorError(f"processes {sorted(pids)} are still in {group.relative_path}")
        time.sleep(0.01)
    for directory in reversed(group.created):
        while True:
            try:
                directory.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError as error:
                if time.monotonic() > deadline:
                    raise CollectorError(f"cannot remove cgroup {directory}: {error}") from error
                time.sleep(0.01)
