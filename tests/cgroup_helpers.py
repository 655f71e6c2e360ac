"""Test helpers: run a real process inside a real, throw-away cgroup v1 group.

The reusable part (create / spawn / remove) lives in :mod:`agents.cgroup_admin`; this
module adds what tests need around it: a skip marker with a clear reason, unique names,
small child programs that say when they are ready, and a context manager that always
cleans up.

Example::

    @requires_v1_cgroups
    def test_something() -> None:
        with process_in_v1_cgroup(BUSY_LOOP, cpu_limit_cores=0.5) as running:
            running.wait_for_line("ready")
            reading = read_cgroup(running.group.paths)
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from agents.cgroup_admin import (
    V1Cgroup,
    create_v1_cgroup,
    remove_v1_cgroup,
    spawn_in_cgroup,
    v1_cgroups_writable,
)

MIB = 1024 * 1024

#: Why cgroup tests cannot run here, or None when they can.
V1_CGROUP_SKIP_REASON = v1_cgroups_writable()

#: Marks a test as needing writable v1 cpu, cpuacct and memory hierarchies, and skips
#: it with the reason when they are not there (not root, cgroup v2 only, ...).
requires_v1_cgroups = pytest.mark.skipif(
    V1_CGROUP_SKIP_REASON is not None,
    reason=f"needs writable cgroup v1 cpu/cpuacct/memory: {V1_CGROUP_SKIP_REASON}",
)

#: A child that says "ready" and then spins forever.
BUSY_LOOP = "print('ready', flush=True)\nwhile True:\n    pass\n"


def hold_memory(mib: int) -> str:
    """A child that touches ``mib`` MiB of anonymous memory, says "ready", then sleeps."""
    return (
        "import time\n"
        f"block = b'\\x01' * ({mib} * {MIB})\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)\n"
    )


def allocate_on_request(mib: int) -> str:
    """A child that says "ready", waits for a stdin line, then touches ``mib`` MiB."""
    return (
        "import sys, time\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n"
        f"block = b'\\x01' * ({mib} * {MIB})\n"
        "print('allocated', flush=True)\n"
        "time.sleep(600)\n"
    )


def wait_for_line(
    process: subprocess.Popen[bytes], expected: str, timeout_seconds: float = 10.0
) -> None:
    """Block until ``process`` prints ``expected`` on a line (fails the test otherwise)."""
    stdout = process.stdout
    assert stdout is not None
    deadline = time.monotonic() + timeout_seconds
    while (remaining := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([stdout], [], [], remaining)
        if not ready:
            break
        line = stdout.readline()
        if not line:
            pytest.fail(f"child exited (status {process.wait()}) before {expected!r}")
        if line.decode().strip() == expected:
            return
    pytest.fail(f"child did not print {expected!r} within {timeout_seconds} s")


@dataclass
class RunningCgroup:
    """A live cgroup with one Python child process in it."""

    group: V1Cgroup
    process: subprocess.Popen[bytes]

    def wait_for_line(self, expected: str, timeout_seconds: float = 10.0) -> None:
        """Block until the child prints ``expected`` on a line (fails the test otherwise)."""
        wait_for_line(self.process, expected, timeout_seconds)

    def send_line(self, text: str = "go") -> None:
        """Write one line to the child's stdin."""
        stdin = self.process.stdin
        assert stdin is not None
        stdin.write(text.encode() + b"\n")
        stdin.flush()


def unique_cgroup_path(prefix: str = "daytwo-test") -> str:
    """A cgroup path no other test run (or engineer on this host) is using."""
    return f"/{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@contextmanager
def process_in_v1_cgroup(
    python_code: str,
    *,
    cpu_limit_cores: float | None = None,
    memory_limit_bytes: int | None = None,
    relative_path: str | None = None,
) -> Iterator[RunningCgroup]:
    """Create a unique v1 cgroup with the given limits and run ``python -c code`` in it.

    The child's stdin and stdout are pipes (see :meth:`RunningCgroup.wait_for_line`).
    On exit the child is killed and reaped and the cgroup directories are removed.
    """
    group = create_v1_cgroup(
        relative_path or unique_cgroup_path(),
        cpu_limit_cores=cpu_limit_cores,
        memory_limit_bytes=memory_limit_bytes,
    )
    process: subprocess.Popen[bytes] | None = None
    try:
        process = spawn_in_cgroup(
            group,
            [sys.executable, "-I", "-c", python_code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        yield RunningCgroup(group=group, process=process)
    finally:
        if process is not None:
            process.kill()
            process.wait(timeout=10)
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    stream.close()
        remove_v1_cgroup(group)
