"""Read a node's CPU, memory and pressure from /proc and produce ``node-sample`` objects.

Why: a recommendation must fit on a real node, and contention (PSI) explains throttling
and latency that a container's own counters do not. The kernel gives cumulative CPU
ticks in ``/proc/stat``, memory gauges in ``/proc/meminfo`` and pressure averages in
``/proc/pressure/*``; this module turns two readings into one sample of the
``node-sample`` contract (docs/architecture.md). The root directory is injectable so
tests can run on a synthetic ``/proc``; the clock is passed in.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import CollectorError

__all__ = [
    "NODE_SAMPLE_SOURCE",
    "CpuTimes",
    "NodeReading",
    "NodeSampler",
    "Pressure",
    "node_sample",
    "read_cpu_times",
    "read_meminfo",
    "read_node",
    "read_pressure",
]

NODE_SAMPLE_SOURCE = "node"
SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class CpuTimes:
    """Cumulative CPU ticks of all CPUs (the ``cpu`` line) and the online CPU count.

    ``busy_ticks`` = user + nice + system + irq + softirq (guest time is already inside
    user and nice); ``total_ticks`` adds idle, iowait and steal.
    """

    busy_ticks: int
    total_ticks: int
    online_cpus: int


@dataclass(frozen=True, slots=True)
class Pressure:
    """PSI ``avg10`` percentages; ``None`` where the kernel does not report that line."""

    cpu_some_avg10: float | None
    memory_some_avg10: float | None
    memory_full_avg10: float | None
    io_some_avg10: float | None
    io_full_avg10: float | None

    def to_dict(self) -> dict[str, float | None]:
        """The ``psi`` object of the ``node-sample`` contract."""
        return {
            "cpu_some_avg10": self.cpu_some_avg10,
            "memory_some_avg10": self.memory_some_avg10,
            "memory_full_avg10": self.memory_full_avg10,
            "io_some_avg10": self.io_some_avg10,
            "io_full_avg10": self.io_full_avg10,
        }


@dataclass(frozen=True, slots=True)
class NodeReading:
    """One reading of the node: CPU counters plus memory and pressure gauges."""

    cpu: CpuTimes
    memory_total_bytes: int
    memory_available_bytes: int
    psi: Pressure | None


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii")
    except OSError as error:
        raise CollectorError(
            f"cannot read {path}: {error.strerror or error}; check that /proc is mounted "
            "(or that the agent's --root points at the host's root)"
        ) from error


def read_cpu_times(root: Path = Path("/")) -> CpuTimes:
    """Parse ``<root>/proc/stat``'s aggregate ``cpu`` line and count ``cpuN`` lines."""
    path = root / "proc" / "stat"
    aggregate: list[int] | None = None
    online = 0
    for line in _read(path).splitlines():
        name, _, rest = line.partition(" ")
        if name == "cpu":
            aggregate = [int(field) for field in rest.split()]
        elif name.startswith("cpu") and name[3:].isdigit():
            online += 1
    if aggregate is None or len(aggregate) < 4:
        raise CollectorError(f"{path} has no aggregate 'cpu' line with at least 4 fields")
    padded = [*aggregate, 0, 0, 0, 0, 0, 0][:8]
    user, nice, system, idle, iowait, irq, softirq, steal = padded
    busy = user + nice + system + irq + softirq
    return CpuTimes(
        busy_ticks=busy,
        total_ticks=busy + idle + iowait + steal,
        online_cpus=online or (os.cpu_count() or 1),
    )


def read_meminfo(root: Path = Path("/")) -> tuple[int, int]:
    """``(MemTotal, MemAvailable)`` in bytes from ``<root>/proc/meminfo``."""
    path = root / "proc" / "meminfo"
    values: dict[str, int] = {}
    for line in _read(path).splitlines():
        key, _, rest = line.partition(":")
        fields = rest.split()
        if fields and fields[0].isdigit():
            scale = 1024 if len(fields) > 1 and fields[1] == "kB" else 1
            values[key.strip()] = int(fields[0]) * scale
    missing = [key for key in ("MemTotal", "MemAvailable") if key not in values]
    if missing:
        raise CollectorError(f"{path} lacks {', '.join(missing)} (needs Linux >= 3.14)")
    return values["MemTotal"], values["MemAvailable"]


def _pressure_avg10(path: Path) -> dict[str, float]:
    """``{"some": avg10, "full": avg10}`` for the lines present; {} if unreadable."""
    try:
        text = path.read_text(encoding="ascii")
    except OSError:  # absent, or PSI disabled (reads fail with EOPNOTSUPP)
        return {}
    found: dict[str, float] = {}
    for line in text.splitlines():
        kind, *pairs = line.split()
        for pair in pairs:
            key, _, value = pair.partition("=")
            if key == "avg10":
                found[kind] = float(value)
    return found


def read_pressure(root: Path = Path("/")) -> Pressure | None:
    """PSI avg10 values from ``<root>/proc/pressure``; ``None`` when PSI is absent."""
    directory = root / "proc" / "pressure"
    if not directory.is_dir():
        return None
    cpu = _pressure_avg10(directory / "cpu")
    memory = _pressure_avg10(directory / "memory")
    io = _pressure_avg10(directory / "io")
    if not (cpu or memory or io):
        return None
    return Pressure(
        cpu_some_avg10=cpu.get("some"),
        memory_some_avg10=memory.get("some"),
        memory_full_avg10=memory.get("full"),
        io_some_avg10=io.get("some"),
        io_full_avg10=io.get("full"),
    )


def read_node(root: Path = Path("/")) -> NodeReading:
    """Read CPU ticks, memory and pressure of the node whose root is ``root``."""
    total, available = read_meminfo(root)
    return NodeReading(
        cpu=read_cpu_times(root),
        memory_total_bytes=total,
        memory_available_bytes=available,
        psi=read_pressure(root),
    )


def node_sample(
    previous: NodeReading,
    current: NodeReading,
    *,
    node: str,
    interval_seconds: float,
    timestamp: float,
) -> dict[str, Any] | None:
    """The ``node-sample`` between two readings; ``None`` when no CPU time elapsed.

    Busy cores = busy share of all ticks in the interval x online CPUs, which needs
    neither USER_HZ nor an exact interval.
    """
    total_delta = current.cpu.total_ticks - previous.cpu.total_ticks
    busy_delta = current.cpu.busy_ticks - previous.cpu.busy_ticks
    if interval_seconds <= 0 or total_delta <= 0 or busy_delta < 0:
        return None
    capacity = float(current.cpu.online_cpus)
    used = min(capacity, capacity * busy_delta / total_delta)
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "node-sample",
        "source": NODE_SAMPLE_SOURCE,
        "node": node,
        "timestamp": timestamp,
        "interval_seconds": interval_seconds,
        "cpu_capacity_cores": capacity,
        "cpu_used_cores": used,
        "memory_total_bytes": current.memory_total_bytes,
        "memory_available_bytes": current.memory_available_bytes,
        "memory_used_bytes": max(0, current.memory_total_bytes - current.memory_available_bytes),
        "psi": None if current.psi is None else current.psi.to_dict(),
    }


class NodeSampler:
    """Keeps the previous reading of one node and yields a sample per call.

    The first call only sets the baseline and returns ``None``.
    """

    def __init__(self, node: str, *, root: Path = Path("/")) -> None:
        self.node = node
        self.root = root
        self._previous: NodeReading | None = None
        self._previous_time = 0.0

    def sample(self, now: float) -> dict[str, Any] | None:
        """Read the node at ``now`` (seconds) and return the sample since the last call."""
        reading = read_node(self.root)
        previous, previous_time = self._previous, self._previous_time
        self._previous, self._previous_time = reading, now
        if previous is None:
            return None
        return node_sample(
            previous, reading, node=self.node, interval_seconds=now - previous_time, timestamp=now
        )
