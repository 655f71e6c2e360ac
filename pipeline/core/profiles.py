"""Sizing profiles: the intent a team states once, applied to every container it owns.

A profile says which percentile of CPU usage a request must cover and how much
headroom goes on top, how memory is measured (the peak per interval over the history)
and its headroom, how limits follow requests, how long a history counts and how fast
it fades, how much history a decrease needs, how sensitive drift detection is, which
change is worth a pull request and how long to wait between two, and the JVM and risk
targets the correlation rules enforce.

Three profiles are built in (:data:`BUILTIN_PROFILES`); teams add their own in YAML
(:func:`profile_from_mapping`, loaded by :mod:`pipeline.profiles_file`), usually by
extending a built-in and changing a few fields. A workload picks its profile with the
annotation ``daytwo.io/profile``, else its namespace's default, else ``balanced``
(:func:`assign_profile`).

Starting points and why (the backtest in docs/benchmarks.md is the evidence):

============== ============ ============ =========== ============= ===================
profile        CPU request  memory       CPU limit   decrease      cool-down between
                            request                  needs         proposals
============== ============ ============ =========== ============= ===================
cost-optimized p80 + 10%    peak + 10%   none        12 h history  3 days
balanced       p95 + 10%    peak + 15%   keep        24 h history  7 days
performance    p99 + 30%    peak + 30%   none        48 h history  7 days
============== ============ ============ =========== ============= ===================

Balanced started from the field's p95 + 15% and was tuned on the backtest of the four
real NAB CPU series (docs/benchmarks.md): once headroom can never lift a request above
the highest usage seen (rule ``cpu-request-capped-at-max``) and the window follows a
drift within minutes, +10% keeps the share of under-provisioned samples well below
VPA's (p90 + 15%) while asking for about 10% less CPU; +15% asked for 9.8% less.

The three share the history window (8 days), the CPU half-life (24 h), the peak
interval, the floors and the drift sensitivity, so the same data gives ordered answers
(cost-optimized <= balanced <= performance-first for every request): every rule is
monotone in the fields that differ (a higher percentile, more headroom, a lower GC or
throttling ceiling, a smaller live-set share, a longer OOM cool-down can only raise a
value). A custom profile may change any of them.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from pipeline.errors import ConfigError

CpuLimitPolicy = Literal["keep", "none", "ratio"]
MemoryLimitPolicy = Literal["equal-request", "ratio"]

CPU_LIMIT_POLICIES: Final[tuple[str, ...]] = ("keep", "none", "ratio")
MEMORY_LIMIT_POLICIES: Final[tuple[str, ...]] = ("equal-request", "ratio")

PROFILE_ANNOTATION: Final = "daytwo.io/profile"
"""Workload annotation that names its profile."""
DEFAULT_PROFILE_NAME: Final = "balanced"

_NAME_PATTERN: Final = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_MIB: Final = 1024**2
_HOUR: Final = 3600.0
_DAY: Final = 24 * _HOUR


@dataclass(frozen=True, slots=True)
class Profile:
    """Everything the sizing math and the hysteresis need to know about a team's intent.

    Validated once, at construction: every error names the profile, the field and the
    allowed range. Fields (base units: seconds, cores, bytes, US dollars):

    Requests

    - ``cpu_percentile``: share of (time-weighted, decayed) CPU usage the request covers,
      in (0, 1].
    - ``cpu_headroom`` / ``memory_headroom``: fraction added on top (0.15 = +15%), 0..10.
    - ``cpu_floor_cores`` / ``memory_floor_bytes``: no request goes below these.
    - ``memory_peak_interval_seconds``: memory is summarised as the peak per interval;
      the request covers the largest peak within ``history_seconds``.

    Limits

    - ``cpu_limit_policy``: ``"keep"`` keeps the CPU limit in force (none stays none),
      raised to the new request if below it; ``"none"`` removes it (throttling costs
      latency and saves nothing: the scheduler reserves requests, not limits);
      ``"ratio"`` sets it to ``cpu_limit_ratio`` x the request.
    - ``memory_limit_policy``: ``"equal-request"`` sets the memory limit to the request,
      so the container is never OOM-killed below what the scheduler promised it;
      ``"ratio"`` sets it to ``memory_limit_ratio`` x the request.

    History

    - ``history_seconds``: how far back memory peaks count.
    - ``cpu_half_life_seconds``: CPU samples lose half their weight per half-life.
    - ``min_samples``: no recommendation before this many samples were applied.
    - ``decrease_min_history_seconds``: no proposal lowers a value before the window
      covers this much time (since its first sample or the last detected drift): the
      confidence VPA also waits for before it trusts a low estimate.
    - ``drift_sensitivity``: in (0, 1]; how readily a level shift or a gradual change is
      believed (see :mod:`pipeline.core.drift`). On drift the window re-weights toward
      the new regime.

    Hysteresis (see :mod:`pipeline.core.engine`)

    - ``evaluation_interval_seconds``: the stream evaluates a container each time its
      data crosses a multiple of this (trace time), so what is proposed depends on the
      data only, never on when a worker happened to checkpoint or restart.
    - ``min_change_relative``: a value must move by at least this share of the value in
      force to be worth a proposal, and by at least ``min_change_cpu_cores`` /
      ``min_change_memory_bytes``.
    - ``min_monthly_saving_usd``: a proposal that only lowers values must save at least
      this much per month and replica.
    - ``proposal_cooldown_seconds``: no proposal within this time of the last one,
      except increases that prevent risk (an OOM kill, memory at the limit, CPU
      throttling or GC pressure above the ceilings).

    JVM and risk targets (see :mod:`pipeline.core.jvm` for the rules that use them)

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
    - ``jvm_heap_max_share_of_limit``: the heap may fill at most this share of the
      container's memory limit (the rest is for non-heap memory the agent cannot see).
    - ``jvm_memory_margin_bytes`` / ``jvm_memory_margin_fraction``: the memory limit
      covers heap + non-heap + max(margin bytes, fraction x (heap + non-heap)).
    - ``cpu_throttling_ceiling``: CFS throttled-period ratio (p95 over the history) above
      which the CPU request and limit are not decreased, in [0, 1].
    - ``oom_cooldown_seconds``: after an OOM kill, no memory decrease for this long.
    - ``oom_memory_raise_factor`` / ``oom_memory_raise_min_bytes``: an OOM kill raises the
      memory limit in force at the kill to at least max(limit x factor, limit + min bytes).
    """

    name: str
    cpu_percentile: float = 0.95
    cpu_headroom: float = 0.10
    memory_headroom: float = 0.15
    cpu_floor_cores: float = 0.01
    memory_floor_bytes: int = 64 * _MIB
    memory_peak_interval_seconds: float = 300.0
    cpu_limit_policy: CpuLimitPolicy = "keep"
    cpu_limit_ratio: float = 2.0
    memory_limit_policy: MemoryLimitPolicy = "equal-request"
    memory_limit_ratio: float = 1.0
    history_seconds: float = 8 * _DAY
    cpu_half_life_seconds: float = 24 * _HOUR
    min_samples: int = 60
    decrease_min_history_seconds: float = 24 * _HOUR
    drift_sensitivity: float = 0.5
    evaluation_interval_seconds: float = 300.0
    min_change_relative: float = 0.10
    min_change_cpu_cores: float = 0.02
    min_change_memory_bytes: int = 32 * _MIB
    min_monthly_saving_usd: float = 0.5
    proposal_cooldown_seconds: float = 7 * _DAY
    gc_overhead_ceiling: float = 0.05
    heap_live_set_max_share: float = 0.7
    heap_live_set_target_share: float = 0.5
    gc_pressure_heap_raise: float = 0.25
    jvm_heap_floor_bytes: int = 64 * _MIB
    jvm_heap_max_share_of_limit: float = 0.8
    jvm_memory_margin_bytes: int = 64 * _MIB
    jvm_memory_margin_fraction: float = 0.1
    cpu_throttling_ceiling: float = 0.1
    oom_cooldown_seconds: float = 24 * _HOUR
    oom_memory_raise_factor: float = 1.2
    oom_memory_raise_min_bytes: int = 100 * _MIB

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_PATTERN.match(self.name):
            raise ConfigError(
                f"profile field 'name' must be a lowercase DNS label (a-z, 0-9, '-', at most "
                f"63 characters, as in the annotation {PROFILE_ANNOTATION}), got {self.name!r}."
            )
        _validate(self, f"profile {self.name!r}")

    def with_overrides(self, **overrides: object) -> Profile:
        """A copy with some fields changed (validated again), e.g. from settings or YAML.

        Unknown field names raise :class:`ConfigError` listing the known ones, so a typo
        in a team's profile file is reported instead of silently ignored.
        """
        return self.overridden(overrides)

    def overridden(self, overrides: Mapping[str, object], source: str | None = None) -> Profile:
        """:meth:`with_overrides` from a mapping; ``source`` (e.g. the file) prefixes errors."""
        where = f"{source}: " if source else ""
        known = [field.name for field in dataclasses.fields(self)]
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise ConfigError(
                f"{where}profile {overrides.get('name', self.name)!r}: unknown field(s) "
                f"{', '.join(map(repr, unknown))}; known fields are {', '.join(known)}."
            )
        try:
            return dataclasses.replace(self, **overrides)  # type: ignore[arg-type]  # checked in __post_init__
        except ConfigError as exc:
            raise ConfigError(f"{where}{exc}") from None


def _validate(profile: Profile, where: str) -> None:  # one check per field
    p = profile
    _check_float(where, "cpu_percentile", p.cpu_percentile, 0.0, 1.0, low_open=True)
    _check_float(where, "cpu_headroom", p.cpu_headroom, 0.0, 10.0)
    _check_float(where, "memory_headroom", p.memory_headroom, 0.0, 10.0)
    _check_float(where, "cpu_floor_cores", p.cpu_floor_cores, 0.001, 1024.0)
    _check_int(where, "memory_floor_bytes", p.memory_floor_bytes, _MIB, 2**50)
    _check_float(where, "memory_peak_interval_seconds", p.memory_peak_interval_seconds, 1.0, _DAY)
    _check_choice(where, "cpu_limit_policy", p.cpu_limit_policy, CPU_LIMIT_POLICIES)
    _check_float(where, "cpu_limit_ratio", p.cpu_limit_ratio, 1.0, 100.0)
    _check_choice(where, "memory_limit_policy", p.memory_limit_policy, MEMORY_LIMIT_POLICIES)
    _check_float(where, "memory_limit_ratio", p.memory_limit_ratio, 1.0, 100.0)
    _check_float(where, "history_seconds", p.history_seconds, _HOUR, 365 * _DAY)
    if p.history_seconds < p.memory_peak_interval_seconds:
        raise ConfigError(
            f"{where}: field 'history_seconds' ({p.history_seconds}) must be at least "
            f"'memory_peak_interval_seconds' ({p.memory_peak_interval_seconds})."
        )
    _check_float(where, "cpu_half_life_seconds", p.cpu_half_life_seconds, 60.0, 365 * _DAY)
    _check_int(where, "min_samples", p.min_samples, 1, 10_000_000)
    _check_float(
        where, "decrease_min_history_seconds", p.decrease_min_history_seconds, 0.0, 365 * _DAY
    )
    _check_float(where, "drift_sensitivity", p.drift_sensitivity, 0.0, 1.0, low_open=True)
    _check_float(where, "evaluation_interval_seconds", p.evaluation_interval_seconds, 1.0, _DAY)
    _check_float(where, "min_change_relative", p.min_change_relative, 0.0, 10.0)
    _check_float(where, "min_change_cpu_cores", p.min_change_cpu_cores, 0.0, 1024.0)
    _check_int(where, "min_change_memory_bytes", p.min_change_memory_bytes, 0, 2**50)
    _check_float(where, "min_monthly_saving_usd", p.min_monthly_saving_usd, 0.0, 1e9)
    _check_float(where, "proposal_cooldown_seconds", p.proposal_cooldown_seconds, 0.0, 365 * _DAY)
    _check_float(where, "gc_overhead_ceiling", p.gc_overhead_ceiling, 0.0, 1.0, low_open=True)
    _check_float(
        where, "heap_live_set_max_share", p.heap_live_set_max_share, 0.0, 1.0, low_open=True
    )
    _check_float(
        where,
        "heap_live_set_target_share",
        p.heap_live_set_target_share,
        0.0,
        p.heap_live_set_max_share,
        low_open=True,
    )
    _check_float(where, "gc_pressure_heap_raise", p.gc_pressure_heap_raise, 0.0, 10.0)
    _check_int(where, "jvm_heap_floor_bytes", p.jvm_heap_floor_bytes, _MIB, 2**50)
    _check_float(
        where,
        "jvm_heap_max_share_of_limit",
        p.jvm_heap_max_share_of_limit,
        0.0,
        1.0,
        low_open=True,
    )
    _check_int(where, "jvm_memory_margin_bytes", p.jvm_memory_margin_bytes, 0, 2**50)
    _check_float(where, "jvm_memory_margin_fraction", p.jvm_memory_margin_fraction, 0.0, 10.0)
    _check_float(where, "cpu_throttling_ceiling", p.cpu_throttling_ceiling, 0.0, 1.0)
    _check_float(where, "oom_cooldown_seconds", p.oom_cooldown_seconds, 0.0, 365 * _DAY)
    _check_float(where, "oom_memory_raise_factor", p.oom_memory_raise_factor, 1.0, 10.0)
    _check_int(where, "oom_memory_raise_min_bytes", p.oom_memory_raise_min_bytes, 0, 2**50)


def _check_choice(where: str, field: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(
            f"{where}: field {field!r} must be one of {', '.join(allowed)}, got {value!r}."
        )


def _check_float(
    where: str,
    field: str,
    value: object,
    low: float,
    high: float,
    *,
    low_open: bool = False,
) -> None:
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
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
"""p95 CPU + 10%, memory peak + 15%, CPU limit kept, memory limit = request; decreases
after 24 h of history, 7 days between proposals, changes under 10% (or 20m / 32Mi, or
$0.50 a month) not proposed; GC overhead ceiling 5%, live set <= 70% of the heap
(resized to 50%), heap <= 80% of the limit, JVM margin max(64Mi, 10%), throttling
ceiling 10%, 24 h memory cool-down after an OOM kill, which raises memory by
max(x1.2, +100Mi)."""

COST_OPTIMIZED: Final = BALANCED.with_overrides(
    name="cost-optimized",
    cpu_percentile=0.80,
    cpu_headroom=0.10,
    memory_headroom=0.10,
    cpu_limit_policy="none",
    decrease_min_history_seconds=12 * _HOUR,
    proposal_cooldown_seconds=3 * _DAY,
    min_change_relative=0.05,
    gc_overhead_ceiling=0.08,
    heap_live_set_max_share=0.8,
    heap_live_set_target_share=0.6,
    jvm_heap_max_share_of_limit=0.85,
    jvm_memory_margin_bytes=48 * _MIB,
    jvm_memory_margin_fraction=0.08,
    cpu_throttling_ceiling=0.15,
    oom_cooldown_seconds=12 * _HOUR,
)
"""p80 CPU + 10%, memory peak + 10%, no CPU limit: for dev namespaces and batch work that
can wait. Decreases after 12 h, proposals every 3 days, changes from 5%."""

PERFORMANCE_FIRST: Final = BALANCED.with_overrides(
    name="performance-first",
    cpu_percentile=0.99,
    cpu_headroom=0.30,
    memory_headroom=0.30,
    cpu_limit_policy="none",
    decrease_min_history_seconds=48 * _HOUR,
    min_change_relative=0.15,
    gc_overhead_ceiling=0.03,
    heap_live_set_max_share=0.6,
    heap_live_set_target_share=0.4,
    gc_pressure_heap_raise=0.5,
    jvm_heap_max_share_of_limit=0.7,
    jvm_memory_margin_bytes=96 * _MIB,
    jvm_memory_margin_fraction=0.15,
    cpu_throttling_ceiling=0.05,
    oom_cooldown_seconds=48 * _HOUR,
    oom_memory_raise_factor=1.3,
    oom_memory_raise_min_bytes=128 * _MIB,
)
"""p99 CPU + 30%, memory peak + 30%, no CPU limit (no throttling, ever): for
latency-critical services. Decreases only after 48 h, changes from 15%."""

BUILTIN_PROFILES: Final[dict[str, Profile]] = {
    p.name: p for p in (COST_OPTIMIZED, BALANCED, PERFORMANCE_FIRST)
}
"""Profiles every installation has, by name."""


def get_profile(name: str, custom: Mapping[str, Profile] | None = None) -> Profile:
    """Look up a profile by name (custom ones first); :class:`ConfigError` lists the names."""
    known = {**BUILTIN_PROFILES, **(custom or {})}
    try:
        return known[name]
    except KeyError:
        msg = f"unknown profile {name!r}; known profiles are {sorted(known)}."
        raise ConfigError(msg) from None


def profile_from_mapping(
    data: object, *, source: str, known: Mapping[str, Profile] | None = None
) -> Profile:
    """Build a custom profile from one YAML/JSON mapping, e.g. one entry of a profiles file.

    Why: teams state intent in their GitOps repo; a typo must fail loudly with the file,
    the field and the allowed range, never fall back to a default. The mapping needs
    ``name``; ``extends`` names the profile it starts from (default ``balanced``; a
    built-in or one defined earlier in ``known``); every other key is a :class:`Profile`
    field.

    >>> profile_from_mapping({"name": "checkout", "extends": "performance-first",
    ...                       "cpu_headroom": 0.5}, source="profiles.yaml").cpu_percentile
    0.99
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: a profile must be a mapping of fields, got {data!r}.")
    fields = dict(data)
    name = fields.get("name")
    if not isinstance(name, str):
        raise ConfigError(f"{source}: a profile needs a 'name' (a lowercase DNS label).")
    if name in BUILTIN_PROFILES:
        raise ConfigError(
            f"{source}: profile {name!r} is built in and cannot be redefined; give the custom "
            f"profile another name and 'extends: {name}'."
        )
    base_name = fields.pop("extends", DEFAULT_PROFILE_NAME)
    if not isinstance(base_name, str):
        raise ConfigError(f"{source}: profile {name!r}: field 'extends' must be a profile name.")
    try:
        base = get_profile(base_name, known)
    except ConfigError as exc:
        raise ConfigError(f"{source}: profile {name!r}: field 'extends': {exc}") from None
    return base.overridden({str(k): v for k, v in fields.items()}, source)


def assign_profile(
    annotations: Mapping[str, str] | None,
    namespace: str,
    namespace_defaults: Mapping[str, str],
    default: str = DEFAULT_PROFILE_NAME,
) -> str:
    """The profile name a workload gets: its annotation, else its namespace's, else default.

    >>> assign_profile({"daytwo.io/profile": "performance-first"}, "shop", {"shop": "x"})
    'performance-first'
    >>> assign_profile({}, "dev", {"dev": "cost-optimized"})
    'cost-optimized'
    """
    if annotations and annotations.get(PROFILE_ANNOTATION):
        return annotations[PROFILE_ANNOTATION]
    return namespace_defaults.get(namespace, default)
