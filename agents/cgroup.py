"""Read a container's cgroup counters (v1 and v2) and turn them into rates.

Why this module exists: the sizing core needs CPU in cores, throttling per interval, the
memory *working set* (what the kernel would not reclaim, as cAdvisor and the kubelet
compute it) and OOM kills per interval. The kernel only exposes cumulative counters and
gauges, spread over several files whose names differ between cgroup v1 and v2. This
module hides those differences:

* :class:`CgroupMounts` finds where each controller is mounted by reading
  ``/proc/self/mountinfo`` (``cpu`` and ``cpuacct`` may be separate mounts or one
  ``cpu,cpuacct`` mount), and resolves a cgroup path relative to each mount.
* :func:`read_cgroup` reads one :class:`CgroupReading` of raw counters, in base units.
* :class:`RateCalculator` turns two consecutive readings into a :class:`CgroupSample`,
  surviving counter resets (a container restarted under the same cgroup path).

The clock is passed in; nothing here calls ``time.time()``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from pipeline.errors import CollectorError

__all__ = [
    "UNLIMITED_MEMORY_THRESHOLD_BYTES",
    "V1_CONTROLLERS",
    "CgroupMounts",
    "CgroupPaths",
    "CgroupReading",
    "CgroupSample",
    "RateCalculator",
    "parse_mountinfo",
    "read_cgroup",
]

#: v1 reports "no limit" as PAGE_COUNTER_MAX * page size (9223372036854771712 on 4 KiB
#: pages). Any limit at or above 2**53 bytes (8 PiB: more than any machine, and past what
#: a JSON number carries exactly, so the contract rejects it) is treated as unlimited.
UNLIMITED_MEMORY_THRESHOLD_BYTES = 2**53

#: Controller names that can appear in a v1 cgroup mount's super options.
V1_CONTROLLERS = frozenset(
    {
        "blkio",
        "cpu",
        "cpuacct",
        "cpuset",
        "devices",
        "freezer",
        "hugetlb",
        "memory",
        "misc",
        "net_cls",
        "net_prio",
        "perf_event",
        "pids",
        "rdma",
    }
)

_REQUIRED_V1 = ("cpu", "cpuacct", "memory")
_MOUNTINFO_ESCAPE = re.compile(r"\\([0-7]{3})")
_NS_PER_SECOND = 1_000_000_000
_NS_PER_USEC = 1_000


# --------------------------------------------------------------------------- mounts


def _unescape_mount_field(field: str) -> str:
    """Decode the octal escapes (``\\040`` for space, ...) that mountinfo uses."""
    return _MOUNTINFO_ESCAPE.sub(lambda match: chr(int(match.group(1), 8)), field)


def _rerooted(mount_point: str, root: Path) -> Path:
    return root / mount_point.lstrip("/")


@dataclass(frozen=True)
class CgroupMounts:
    """Where the cgroup hierarchies are mounted on this host.

    ``v1`` maps each v1 controller name to its mount directory (``cpu`` and ``cpuacct``
    map to the same directory when they are co-mounted); ``unified`` is the cgroup2
    mount, if any. Build it with :meth:`discover` (reads mountinfo) so tests can point
    it at a synthetic tree.
    """

    v1: Mapping[str, Path]
    unified: Path | None

    @classmethod
    def discover(
        cls,
        mountinfo_path: Path = Path("/proc/self/mountinfo"),
        *,
        root: Path = Path("/"),
    ) -> CgroupMounts:
        """Read ``mountinfo_path`` and return the cgroup mounts, re-rooted under ``root``.

        ``root`` lets a test describe mounts as the host sees them (``/sys/fs/cgroup/cpu``)
        while the files live under a temporary directory.
        """
        try:
            text = mountinfo_path.read_text(encoding="utf-8")
        except OSError as error:
            raise CollectorError(
                f"cannot read mount table {mountinfo_path}: {error}; "
                "check that /proc is mounted (or pass the right mountinfo path)"
            ) from error
        return parse_mountinfo(text, root=root)

    @property
    def version(self) -> Literal[1, 2]:
        """1 when the v1 cpu, cpuacct and memory controllers are mounted, else 2.

        Hybrid hosts (v1 controllers plus an empty cgroup2 at ``/sys/fs/cgroup/unified``)
        count as v1, because that is where the controllers' counters are.
        """
        if all(name in self.v1 for name in _REQUIRED_V1):
            return 1
        if self.unified is not None:
            return 2
        missing = ", ".join(name for name in _REQUIRED_V1 if name not in self.v1)
        raise CollectorError(
            f"no usable cgroup hierarchy: v1 controllers missing ({missing}) and no "
            "cgroup2 mount; check /proc/self/mountinfo and mount the cgroup filesystems"
        )

    def resolve(self, relative_path: str) -> CgroupPaths:
        """Directories of the cgroup at ``relative_path`` (relative to each mount)."""
        parts = [part for part in relative_path.split("/") if part]
        if any(part in {".", ".."} for part in parts):
            raise CollectorError(
                f"cgroup path {relative_path!r} must not contain '.' or '..' components"
            )
        relative = "/".join(parts)
        if self.version == 1:
            return CgroupPaths.for_v1(
                cpu=self.v1["cpu"] / relative,
                cpuacct=self.v1["cpuacct"] / relative,
                memory=self.v1["memory"] / relative,
            )
        assert self.unified is not None  # version 2 implies a unified mount
        return CgroupPaths.for_v2(self.unified / relative)


def parse_mountinfo(text: str, *, root: Path = Path("/")) -> CgroupMounts:
    """Parse ``/proc/<pid>/mountinfo`` text into :class:`CgroupMounts`.

    When a controller is mounted more than once, the mount of the hierarchy's root
    (mountinfo field 4 = ``/``) wins over a bind mount of a subtree.
    """
    v1: dict[str, Path] = {}
    v1_is_root: dict[str, bool] = {}
    unified: Path | None = None
    for line in text.splitlines():
        if " - " not in line:
            continue
        before, after = line.split(" - ", 1)
        head = before.split()
        tail = after.split()
        if len(head) < 5 or len(tail) < 3:
            continue
        mount_root, mount_point = head[3], _unescape_mount_field(head[4])
        fs_type, super_options = tail[0], tail[2].split(",")
        if fs_type == "cgroup2":
            if unified is None or mount_root == "/":
                unified = _rerooted(mount_point, root)
        elif fs_type == "cgroup":
            for option in super_options:
                if option not in V1_CONTROLLERS:
                    continue
                if option in v1 and (v1_is_root[option] or mount_root != "/"):
                    continue
                v1[option] = _rerooted(mount_point, root)
                v1_is_root[option] = mount_root == "/"
    return CgroupMounts(v1=MappingProxyType(v1), unified=unified)


@dataclass(frozen=True)
class CgroupPaths:
    """The directories of one cgroup: one per controller on v1, one directory on v2.

    On v2, ``cpu``, ``cpuacct`` and ``memory`` are the same directory. On v1 with
    ``cpu,cpuacct`` co-mounted, ``cpu`` and ``cpuacct`` are the same directory.
    """

    version: Literal[1, 2]
    cpu: Path
    cpuacct: Path
    memory: Path

    @classmethod
    def for_v1(cls, *, cpu: Path, cpuacct: Path, memory: Path) -> CgroupPaths:
        """A v1 cgroup given its directory under each controller mount."""
        return cls(version=1, cpu=cpu, cpuacct=cpuacct, memory=memory)

    @classmethod
    def for_v2(cls, directory: Path) -> CgroupPaths:
        """A v2 cgroup given its one directory in the unified hierarchy."""
        return cls(version=2, cpu=directory, cpuacct=directory, memory=directory)

    def directories(self) -> tuple[Path, ...]:
        """The distinct directories, in cpu, cpuacct, memory order."""
        return tuple(dict.fromkeys((self.cpu, self.cpuacct, self.memory)))


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True)
class CgroupReading:
    """Raw cumulative counters and gauges of one cgroup at one instant, in base units.

    Counters (``cpu_usage_ns``, ``cpu_periods``, ``cpu_throttled_periods``,
    ``cpu_throttled_ns``, ``oom_kills``) only grow while the cgroup lives; gauges are
    the rest. ``None`` means the kernel does not expose the value here (for example no
    CFS statistics on a v2 cgroup without the cpu controller, or no limit set).
    """

    version: Literal[1, 2]
    cpu_usage_ns: int
    cpu_periods: int | None
    cpu_throttled_periods: int | None
    cpu_throttled_ns: int | None
    cpu_limit_cores: float | None
    memory_usage_bytes: int
    memory_inactive_file_bytes: int
    memory_rss_bytes: int | None
    memory_cache_bytes: int | None
    memory_limit_bytes: int | None
    oom_kills: int | None

    @property
    def memory_working_set_bytes(self) -> int:
        """Usage minus inactive file cache, floored at 0 (the kubelet's eviction signal)."""
        return max(0, self.memory_usage_bytes - self.memory_inactive_file_bytes)


def _missing(path: Path, error: OSError) -> CollectorError:
    return CollectorError(
        f"cannot read cgroup file {path}: {error.strerror or error}; check that the cgroup "
        "exists (the container may have exited or been recreated), that the mapping path "
        "is relative to the controller mount, and that the agent runs as root"
    )


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii")
    except OSError as error:
        raise _missing(path, error) from error


def _parse_int(path: Path, text: str) -> int:
    try:
        return int(text.strip())
    except ValueError as error:
        raise CollectorError(
            f"cgroup file {path} holds {text.strip()!r}, not an integer"
        ) from error


def _read_int(path: Path) -> int:
    return _parse_int(path, _read_text(path))


def _read_keyed(path: Path) -> dict[str, int]:
    """Read a flat-keyed file (``key value`` per line) such as cpu.stat or memory.stat."""
    values: dict[str, int] = {}
    for line in _read_text(path).splitlines():
        fields = line.split()
        if len(fields) != 2:
            continue
        try:
            values[fields[0]] = int(fields[1])
        except ValueError:
            continue
    return values


def _require_directories(paths: CgroupPaths) -> None:
    for directory in paths.directories():
        if not directory.is_dir():
            raise CollectorError(
                f"cgroup directory {directory} does not exist; check the path in the "
                "mapping file (relative to each controller mount, e.g. /daytwo-demo/burner) "
                "and that the container is running"
            )


def _first_present(values: Mapping[str, int], *keys: str) -> int | None:
    for key in keys:
        if key in values:
            return values[key]
    return None


def _memory_limit(raw: int) -> int | None:
    return None if raw >= UNLIMITED_MEMORY_THRESHOLD_BYTES else raw


def _read_v1(paths: CgroupPaths) -> CgroupReading:
    usage_ns = _read_int(paths.cpuacct / "cpuacct.usage")
    cpu_stat = _read_keyed(paths.cpu / "cpu.stat")
    quota_us = _read_int(paths.cpu / "cpu.cfs_quota_us")
    period_us = _read_int(paths.cpu / "cpu.cfs_period_us")
    cpu_limit = quota_us / period_us if quota_us > 0 and period_us > 0 else None

    memory_usage = _read_int(paths.memory / "memory.usage_in_bytes")
    memory_stat = _read_keyed(paths.memory / "memory.stat")
    # total_* are hierarchical (match usage_in_bytes, which counts descendants);
    # the unprefixed fields are this cgroup alone.
    inactive_file = _first_present(memory_stat, "total_inactive_file", "inactive_file") or 0
    oom_control = _read_keyed(paths.memory / "memory.oom_control")
    return CgroupReading(
        version=1,
        cpu_usage_ns=usage_ns,
        cpu_periods=cpu_stat.get("nr_periods"),
        cpu_throttled_periods=cpu_stat.get("nr_throttled"),
        cpu_throttled_ns=cpu_stat.get("throttled_time"),
        cpu_limit_cores=cpu_limit,
        memory_usage_bytes=memory_usage,
        memory_inactive_file_bytes=inactive_file,
        memory_rss_bytes=_first_present(memory_stat, "total_rss", "rss"),
        memory_cache_bytes=_first_present(memory_stat, "total_cache", "cache"),
        memory_limit_bytes=_memory_limit(_read_int(paths.memory / "memory.limit_in_bytes")),
        oom_kills=oom_control.get("oom_kill"),
    )


def _parse_cpu_max(path: Path, text: str) -> float | None:
    fields = text.split()
    if len(fields) != 2:
        raise CollectorError(f"cgroup file {path} holds {text.strip()!r}, not 'QUOTA PERIOD'")
    if fields[0] == "max":
        return None
    quota, period = _parse_int(path, fields[0]), _parse_int(path, fields[1])
    return quota / period if quota > 0 and period > 0 else None


def _read_v2(paths: CgroupPaths) -> CgroupReading:
    directory = paths.memory
    cpu_stat = _read_keyed(directory / "cpu.stat")
    if "usage_usec" not in cpu_stat:
        raise CollectorError(f"cgroup file {directory / 'cpu.stat'} has no usage_usec line")
    cpu_max_path = directory / "cpu.max"
    cpu_limit = (
        _parse_cpu_max(cpu_max_path, _read_text(cpu_max_path)) if cpu_max_path.exists() else None
    )
    throttled_usec = cpu_stat.get("throttled_usec")
    memory_stat = _read_keyed(directory / "memory.stat")
    memory_max_path = directory / "memory.max"
    memory_max_text = _read_text(memory_max_path).strip()
    memory_limit = (
        None
        if memory_max_text == "max"
        else _memory_limit(_parse_int(memory_max_path, memory_max_text))
    )
    events_path = directory / "memory.events"
    events = _read_keyed(events_path) if events_path.exists() else {}
    return CgroupReading(
        version=2,
        cpu_usage_ns=cpu_stat["usage_usec"] * _NS_PER_USEC,
        cpu_periods=cpu_stat.get("nr_periods"),
        cpu_throttled_periods=cpu_stat.get("nr_throttled"),
        cpu_throttled_ns=None if throttled_usec is None else throttled_usec * _NS_PER_USEC,
        cpu_limit_cores=cpu_limit,
        memory_usage_bytes=_read_int(directory / "memory.current"),
        memory_inactive_file_bytes=memory_stat.get("inactive_file", 0),
        memory_rss_bytes=memory_stat.get("anon"),
        memory_cache_bytes=memory_stat.get("file"),
        memory_limit_bytes=memory_limit,
        oom_kills=events.get("oom_kill"),
    )


def read_cgroup(paths: CgroupPaths) -> CgroupReading:
    """Read the counters of one cgroup; raises ``CollectorError`` when it is missing.

    Example::

        mounts = CgroupMounts.discover()
        reading = read_cgroup(mounts.resolve("/daytwo-demo/burner"))
    """
    _require_directories(paths)
    return _read_v1(paths) if paths.version == 1 else _read_v2(paths)


# --------------------------------------------------------------------------- rates


@dataclass(frozen=True, slots=True)
class CgroupSample:
    """What happened in one cgroup between two readings, in the units of the contract.

    Rates and counts cover the interval; memory values and limits are the gauges of the
    later reading. ``counter_reset`` is true when a counter went backwards (the cgroup
    was recreated, e.g. a container restart).
    """

    interval_seconds: float
    cpu_usage_cores: float
    cpu_periods: int | None
    cpu_throttled_periods: int | None
    cpu_throttled_seconds: float | None
    cpu_throttled_ratio: float | None
    memory_working_set_bytes: int
    memory_usage_bytes: int
    memory_rss_bytes: int | None
    memory_cache_bytes: int | None
    oom_kills: int | None
    cpu_limit_cores: float | None
    memory_limit_bytes: int | None
    counter_reset: bool

    def to_container_sample(self, container: str, timestamp: float) -> dict[str, Any]:
        """The ``container-sample`` message object (see docs/architecture.md)."""
        return {
            "container": container,
            "timestamp": timestamp,
            "interval_seconds": self.interval_seconds,
            "cpu_usage_cores": self.cpu_usage_cores,
            "cpu_periods": self.cpu_periods,
            "cpu_throttled_periods": self.cpu_throttled_periods,
            "cpu_throttled_seconds": self.cpu_throttled_seconds,
            "cpu_throttled_ratio": self.cpu_throttled_ratio,
            "memory_working_set_bytes": self.memory_working_set_bytes,
            "memory_usage_bytes": self.memory_usage_bytes,
            "memory_rss_bytes": self.memory_rss_bytes,
            "memory_cache_bytes": self.memory_cache_bytes,
            "oom_kills": self.oom_kills,
            "cpu_limit_cores": self.cpu_limit_cores,
            "memory_limit_bytes": self.memory_limit_bytes,
        }


def _counter_delta(previous: int, current: int) -> tuple[int, bool]:
    """Growth of a cumulative counter; after a reset the new value is the growth."""
    if current >= previous:
        return current - previous, False
    return max(0, current), True


def _optional_delta(previous: int | None, current: int | None) -> tuple[int | None, bool]:
    if previous is None or current is None:
        return None, False
    return _counter_delta(previous, current)


class RateCalculator:
    """Turns consecutive :class:`CgroupReading` s of one cgroup into samples.

    Keep one per container. The first reading only sets the baseline (no sample).
    A counter that goes down means the cgroup was recreated: its new value is taken as
    the growth since the reset (never a negative delta) and :attr:`resets` counts it.
    A clock that does not move forward yields no sample and re-bases.
    """

    def __init__(self) -> None:
        self._previous: CgroupReading | None = None
        self._previous_time = 0.0
        #: how many updates saw at least one counter go backwards
        self.resets = 0

    def update(self, reading: CgroupReading, now: float) -> CgroupSample | None:
        """Feed the reading taken at ``now`` (seconds); return the interval's sample."""
        previous, previous_time = self._previous, self._previous_time
        self._previous, self._previous_time = reading, now
        if previous is None:
            return None
        interval = now - previous_time
        if interval <= 0:
            return None

        usage_ns, usage_reset = _counter_delta(previous.cpu_usage_ns, reading.cpu_usage_ns)
        periods, periods_reset = _optional_delta(previous.cpu_periods, reading.cpu_periods)
        throttled, throttled_reset = _optional_delta(
            previous.cpu_throttled_periods, reading.cpu_throttled_periods
        )
        throttled_ns, throttled_ns_reset = _optional_delta(
            previous.cpu_throttled_ns, reading.cpu_throttled_ns
        )
        oom_kills, oom_reset = _optional_delta(previous.oom_kills, reading.oom_kills)
        reset = usage_reset or periods_reset or throttled_reset or throttled_ns_reset or oom_reset
        if reset:
            self.resets += 1

        ratio: float | None = None
        if periods is not None and throttled is not None:
            ratio = min(1.0, throttled / periods) if periods > 0 else 0.0
        return CgroupSample(
            interval_seconds=interval,
            cpu_usage_cores=usage_ns / _NS_PER_SECOND / interval,
            cpu_periods=periods,
            cpu_throttled_periods=throttled,
            cpu_throttled_seconds=None if throttled_ns is None else throttled_ns / _NS_PER_SECOND,
            cpu_throttled_ratio=ratio,
            memory_working_set_bytes=reading.memory_working_set_bytes,
            memory_usage_bytes=reading.memory_usage_bytes,
            memory_rss_bytes=reading.memory_rss_bytes,
            memory_cache_bytes=reading.memory_cache_bytes,
            oom_kills=oom_kills,
            cpu_limit_cores=reading.cpu_limit_cores,
            memory_limit_bytes=reading.memory_limit_bytes,
            counter_reset=reset,
        )
