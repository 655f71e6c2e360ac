"""Sizing profiles: the intent a team states once, applied to every container it owns.

A profile says which percentile of CPU usage a request must cover, how much headroom
goes on top, how memory is measured (the peak per interval over the history), the
floors below which no request goes, how limits follow requests, and the JVM and risk
targets the correlation rules enforce (GC overhead ceiling, the live set's share of the
heap, the margin above heap + non-heap, the throttling ceiling, the cool-down after an
OOM kill and how far an OOM kill raises memory). Only ``balanced``
is built in so far; ``performance-first`` and ``cost-optimized`` come later, and teams
will add their own from YAML through :meth:`Profile.with_overrides`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Final, Literal

from pipeline.errors import ConfigError

CpuLimitPolicy = Literal["keep"]
MemoryLimitPolicy = Literal["equal-request"]

CPU_LIMIT_POLICIES: Final[tuple[str, ...]] = ("keep",)
MEMORY_LIMIT_POLICIES: Final[tuple[str, ...]] = ("equal-request",)

_MIB: Final = 1024**2
_HOUR: Final = 3600.0
_DAY: Final = 24 * _HOUR


@dataclass(frozen=True, slots=True)
class Profile:
    """Everything the sizing math needs to know about a team's intent, validated once.

    Fields (units are base units):

    - ``cpu_percentile``: share of (time-weighted, decayed) CPU usage the request covers,
      in (0, 1].
    - ``cpu_headroom`` / ``memory_headroom``: fraction added on top (0.15 = +15%), 0..10.
    - ``cpu_floor_cores`` / ``memory_floor_bytes``: no request goes below these.
    - ``cpu_half_life_seconds``: CPU samples lose half their weight per half-life.
    - ``memory_peak_interval_seconds``: memory is summarised as the peak per interval;
      the request covers the largest peak within ``history_seconds``.
    - ``min_samples``: no recommendation before this many samples were applied.
    - ``cpu_limit_policy``: ``"keep"`` keeps the current CPU limit (none stays none),
      raised to the new request if it is below it.
    - ``memory_limit_policy``: ``"equal-request"`` sets the memory limit to the request,
      so the container is never OOM-killed below what the scheduler promised it.

    JVM and risk targets (see :mod:`pipeline.core.jvm` for the rules that use them):

    - ``gc_overhead_ceiling``: GC pause time / wall time (p95 over the history) above
      which neither the heap nor the CPU is decreased, in (0, 1].
    - ``heap_live_set_max_share``: the live set after GC may fill at most this share of
      the heap; above it the heap is under pressure and grows, in (0, 1].
    - ``heap_live_set_target_share``: a resized heap is the live set / this share; lower
      than the max share, so a freshly sized heap has slack before the pressure rule
      fires again (hysteresis), in (0, heap_live_set_max_share].
    - ``gc_pressure_heap_raise``: under GC-overhead pressure the heap grows at least by
      this fraction of the heap in force (0.25 = +25%), 0..10.
    - ``jvm_heap_floor_bytes``: no recommended heap goes below this.
    - ``jvm_memory_margin_bytes`` / ``jvm_memory_margin_fraction``: the memory limit
      covers heap + non-heap + max(margin bytes, fraction x (heap + non-heap)); the
      margin absorbs what is not measured (GC data structures, malloc arenas, symbol
      tables, heap alignment).
    - ``cpu_throttling_ceiling``: CFS throttled-period ratio (p95 over the history) above
      which the CPU request and limit are not decreased, in [0, 1].
    - ``cooldown_seconds``: after an OOM kill, no memory decrease for this long.
    - ``oom_memory_raise_factor`` / ``oom_memory_raise_min_bytes``: an OOM kill raises the
      memory limit in force at the kill to at least max(limit x factor, limit + min bytes).
    """

    name: str
    cpu_percentile: float = 0.95
    cpu_headroom: float = 0.15
    memory_headroom: float = 0.15
    cpu_floor_cores: float = 0.01
    memory_floor_bytes: int = 64 * _MIB
    cpu_half_life_seconds: float = 24 * _HOUR
    memory_peak_interval_seconds: float = 300.0
    history_seconds: float = 8 * _DAY
    min_samples: int = 60
    cpu_limit_policy: CpuLimitPolicy = "keep"
    memory_limit_policy: MemoryLimitPolicy = "equal-request"
    gc_overhead_ceiling: float = 0.05
    heap_live_set_max_share: float = 0.7
    heap_live_set_target_share: float = 0.5
    gc_pressure_heap_raise: float = 0.25
    jvm_heap_floor_bytes: int = 64 * _MIB
    jvm_memory_margin_bytes: int = 64 * _MIB
    jvm_memory_margin_fraction: float = 0.1
    cpu_throttling_ceiling: float = 0.1
    cooldown_seconds: float = 24 * _HOUR
    oom_memory_raise_factor: float = 1.2
    oom_memory_raise_min_bytes: int = 100 * _MIB

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError(f"profile field 'name' must be a non-empty string, got {self.name!r}")
        where = f"profile {self.name!r}"
        _check_float(where, "cpu_percentile", self.cpu_percentile, 0.0, 1.0, low_open=True)
        _check_float(where, "cpu_headroom", self.cpu_headroom, 0.0, 10.0)
        _check_float(where, "memory_headroom", self.memory_headroom, 0.0, 10.0)
        _check_float(where, "cpu_floor_cores", self.cpu_floor_cores, 0.001, 1024.0)
        _check_int(where, "memory_floor_bytes", self.memory_floor_bytes, _MIB, 2**50)
        _check_float(where, "cpu_half_life_seconds", self.cpu_half_life_seconds, 60.0, 365 * _DAY)
        _check_float(
            where, "memory_peak_interval_seconds", self.memory_peak_interval_seconds, 1.0, _DAY
        )
        _check_float(where, "history_seconds", self.history_seconds, _HOUR, 365 * _DAY)
        if self.history_seconds < self.memory_peak_interval_seconds:
            raise ConfigError(
                f"{where}: field 'history_seconds' ({self.history_seconds}) must be at least "
                f"'memory_peak_interval_seconds' ({self.memory_peak_interval_seconds})."
            )
        _check_int(where, "min_samples", self.min_samples, 1, 10_000_000)
        if self.cpu_limit_policy not in CPU_LIMIT_POLICIES:
            raise ConfigError(
                f"{where}: field 'cpu_limit_policy' must be one of {list(CPU_LIMIT_POLICIES)}, "
                f"got {self.cpu_limit_policy!r}."
            )
        if self.memory_limit_policy not in MEMORY_LIMIT_POLICIES:
            raise ConfigError(
                f"{where}: field 'memory_limit_policy' must be one of "
                f"{list(MEMORY_LIMIT_POLICIES)}, got {self.memory_limit_policy!r}."
            )
        _check_float(
            where, "gc_overhead_ceiling", self.gc_overhead_ceiling, 0.0, 1.0, low_open=True
        )
        _check_float(
            where, "heap_live_set_max_share", self.heap_live_set_max_share, 0.0, 1.0, low_open=True
        )
        _check_float(
            where,
            "heap_live_set_target_share",
            self.heap_live_set_target_share,
            0.0,
            self.heap_live_set_max_share,
            low_open=True,
        )
        _check_float(where, "gc_pressure_heap_raise", self.gc_pressure_heap_raise, 0.0, 10.0)
        _check_int(where, "jvm_heap_floor_bytes", self.jvm_heap_floor_bytes, _MIB, 2**50)
        _check_int(where, "jvm_memory_margin_bytes", self.jvm_memory_margin_bytes, 0, 2**50)
        _check_float(
            where, "jvm_memory_margin_fraction", self.jvm_memory_margin_fraction, 0.0, 10.0
        )
        _check_float(where, "cpu_throttling_ceiling", self.cpu_throttling_ceiling, 0.0, 1.0)
        _check_float(where, "cooldown_seconds", self.cooldown_seconds, 0.0, 365 * _DAY)
        _check_float(where, "oom_memory_raise_factor", self.oom_memory_raise_factor, 1.0, 10.0)
        _check_int(where, "oom_memory_raise_min_bytes", self.oom_memory_raise_min_bytes, 0, 2**50)

    def with_overrides(self, **overrides: object) -> Profile:
        """A copy with some fields changed (validated again), e.g. from settings or YAML.

        Unknown field names raise :class:`ConfigError` listing the known ones, so a typo
        in a team's profile file is reported instead of silently ignored.
        """
        known = [field.name for field in dataclasses.fields(self)]
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise ConfigError(
                f"profile {self.name!r}: unknown field(s) {unknown}; known fields are {known}."
            )
        return dataclasses.replace(self, **overrides)  # type: ignore[arg-type]  # checked in __post_init__


def _check_float(
    where: str,
    field: str,
    value: object,
    low: float,
    high: float,
    *,
    low_open: bool = False,
) -> None:
    interval = f"{'(' if low_open else '['}{low}, {high}]"
    ok = (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value > low if low_open else value >= low)
        and value <= high
    )
    if not ok:
        raise ConfigError(
            f"{where}: field {field!r} must be a number in {interval}, got {value!r}."
        )


def _check_int(where: str, field: str, value: object, low: int, high: int) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
    if not ok:
        raise ConfigError(
            f"{where}: field {field!r} must be an integer in [{low}, {high}], got {value!r}."
        )


BALANCED: Final = Profile(name="balanced")
"""p95 CPU + 15%, memory peak + 15%, floors 10m / 64Mi, 24 h CPU half-life, 8 days history;
GC overhead ceiling 5%, live set ≤ 70% of the heap (resized to 50%), JVM margin
max(64Mi, 10%), throttling ceiling 10%, 24 h cool-down after an OOM kill, which raises
memory by max(x1.2, +100Mi)."""

BUILTIN_PROFILES: Final[dict[str, Profile]] = {BALANCED.name: BALANCED}
"""Profiles every installation has, by name."""


def get_profile(name: str) -> Profile:
    """Look up a built-in profile by name; :class:`ConfigError` lists the valid names."""
    try:
        return BUILTIN_PROFILES[name]
    except KeyError:
        raise ConfigError(
            f"unknown profile {name!r}; built-in profiles are {sorted(BUILTIN_PROFILES)}."
        ) from None
