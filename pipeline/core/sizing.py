"""Sizing: turn a container's window and its profile into one recommendation object.

:func:`recommend` is a pure function of the window, the profile, what is in force now
and the time passed in. It returns the JSON-ready ``recommendation`` object of
docs/architecture.md, including the rules that decided each number (one sentence each,
with the numbers), the evidence, the monthly cost delta, a confidence, a risk level and
a content hash that does not change when the same data is seen again.

The math (balanced profile in brackets):

- CPU request = p(cpu_percentile) [p95] of the decaying CPU histogram * (1 +
  cpu_headroom) [* 1.15], at least cpu_floor_cores [10m], rounded up to a millicore.
- Memory request = the highest per-interval working-set peak in the history window *
  (1 + memory_headroom) [* 1.15], at least memory_floor_bytes [64Mi] and at least the
  JVM max heap * (1 + memory_headroom) when one is known, rounded up to a MiB.
- CPU limit (policy ``keep``): the current limit, raised to the request if below it;
  none stays none. Memory limit (policy ``equal-request``): the memory request.

Risk: ``high`` if any OOM kill was seen or a memory value drops by more than 50%;
``medium`` if CPU throttling ever exceeded 10% of periods or any value drops by more than
30%; else ``low``. Confidence (0..1) = data coverage share of the history window * sample
share, where the sample share reaches 1 at twice ``min_samples``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from pipeline.core.profiles import Profile
from pipeline.core.quantity import (
    GIB,
    MIB,
    format_cpu,
    format_memory,
    round_up_cpu,
    round_up_memory,
)
from pipeline.core.window import ContainerWindow
from schemas.hashing import recommendation_hash
from schemas.models import Resources

SCHEMA_VERSION: Final = 1
TIMES: Final = "\N{MULTIPLICATION SIGN}"

HIGH_RISK_MEMORY_DECREASE: Final = 0.5
MEDIUM_RISK_DECREASE: Final = 0.3
MEDIUM_RISK_THROTTLED_RATIO: Final = 0.1


@dataclass(frozen=True, slots=True)
class CurrentResources:
    """What is in force for a container now (from its spec or observed); None = not set.

    Why a type of its own: the worker fills it from workload specs or, for bare cgroups,
    from observed limits, and sizing must not care which.
    """

    cpu_request_cores: float | None = None
    cpu_limit_cores: float | None = None
    memory_request_bytes: int | None = None
    memory_limit_bytes: int | None = None
    jvm_max_heap_bytes: int | None = None

    def to_dict(self) -> dict[str, float | int | None]:
        """The ``resources`` object of the recommendation contract."""
        return {
            "cpu_request_cores": self.cpu_request_cores,
            "cpu_limit_cores": self.cpu_limit_cores,
            "memory_request_bytes": self.memory_request_bytes,
            "memory_limit_bytes": self.memory_limit_bytes,
            "jvm_max_heap_bytes": self.jvm_max_heap_bytes,
        }


@dataclass(frozen=True, slots=True)
class Prices:
    """Unit prices for the cost delta; defaults are OpenCost's default on-demand prices.

    Why configurable: clusters differ (spot, committed use, on-prem); pass your own.
    """

    cpu_core_hour_usd: float = 0.031611
    memory_gib_hour_usd: float = 0.004237
    hours_per_month: float = 730.0

    def monthly_delta_usd(self, delta_cpu_cores: float, delta_memory_bytes: int) -> float:
        """Monthly cost of adding (or, if negative, saving) this much CPU and memory."""
        per_hour = (
            delta_cpu_cores * self.cpu_core_hour_usd
            + delta_memory_bytes / GIB * self.memory_gib_hour_usd
        )
        return per_hour * self.hours_per_month


DEFAULT_PRICES: Final = Prices()


def recommend(
    window: ContainerWindow,
    profile: Profile,
    *,
    workload: str,
    container: str,
    current: CurrentResources,
    now: float,
    prices: Prices = DEFAULT_PRICES,
) -> dict[str, object] | None:
    """The ``recommendation`` object for one container, or None without enough data.

    None until ``window.sample_count >= profile.min_samples``. The cost delta is per
    running instance (replicas are not known here) and compares requests, a missing
    current request counting as 0. ``hash`` covers workload, container, profile,
    recommended values and sorted rule ids, never timestamps, so the same data gives
    the same hash and the PR sink opens no new PR for it.
    """
    peak = window.memory_peak_bytes()
    if window.sample_count < profile.min_samples or peak is None or window.cpu.is_empty:
        return None
    rules: list[dict[str, str]] = []
    samples_text = f"{window.sample_count:,} samples"

    # CPU request.
    pname = _percentile_name(profile.cpu_percentile)
    cpu_basis = window.cpu.percentile(profile.cpu_percentile)
    cpu_factor = 1 + profile.cpu_headroom
    cpu_wanted = cpu_basis * cpu_factor
    basis_text = (
        f"{pname} of {cpu_basis:.3f} cores {TIMES} {cpu_factor:.2f} = "
        f"{format_cpu(cpu_wanted)} over {samples_text}"
    )
    if cpu_wanted >= profile.cpu_floor_cores:
        cpu_request = round_up_cpu(cpu_wanted)
        rules.append(_rule("cpu-request-percentile", f"CPU request = {basis_text}."))
    else:
        cpu_request = round_up_cpu(profile.cpu_floor_cores)
        rules.append(
            _rule(
                "cpu-request-floor",
                f"CPU request = the profile floor of {format_cpu(cpu_request)}, "
                f"above {basis_text}.",
            )
        )

    # CPU limit.
    cpu_limit = current.cpu_limit_cores
    if cpu_limit is None:
        rules.append(_rule("cpu-limit-none", "CPU limit stays unset (policy keep)."))
    elif cpu_limit < cpu_request:
        rules.append(
            _rule(
                "cpu-limit-raised",
                f"CPU limit raised from {format_cpu(cpu_limit)} to the new request "
                f"{format_cpu(cpu_request)} (policy keep; a limit below the request is invalid).",
            )
        )
        cpu_limit = cpu_request
    else:
        rules.append(
            _rule("cpu-limit-keep", f"CPU limit kept at {format_cpu(cpu_limit)} (policy keep).")
        )

    # Memory request and limit.
    memory_factor = 1 + profile.memory_headroom
    memory_wanted = peak * memory_factor
    interval_text = _duration(window.memory_peak_interval_seconds)
    history_text = _duration(window.history_seconds)
    peak_text = (
        f"highest {interval_text} working-set peak of {_mebibytes(peak)} in the "
        f"{history_text} history {TIMES} {memory_factor:.2f} = "
        f"{format_memory(round_up_memory(memory_wanted))}"
    )
    if memory_wanted >= profile.memory_floor_bytes:
        memory = round_up_memory(memory_wanted)
        rules.append(_rule("memory-request-peak", f"Memory request = {peak_text}."))
    else:
        memory = round_up_memory(profile.memory_floor_bytes)
        rules.append(
            _rule(
                "memory-request-floor",
                f"Memory request = the profile floor of {format_memory(memory)}, "
                f"above the {peak_text}.",
            )
        )
    heap = current.jvm_max_heap_bytes
    if heap is not None:
        heap_floor = round_up_memory(heap * memory_factor)
        if heap_floor > memory:
            rules.append(
                _rule(
                    "memory-jvm-heap-floor",
                    f"Memory request raised from {format_memory(memory)} to "
                    f"{format_memory(heap_floor)} = JVM max heap of {_mebibytes(heap)} {TIMES} "
                    f"{memory_factor:.2f}, so the heap the JVM may grow to fits.",
                )
            )
            memory = heap_floor
    rules.append(
        _rule(
            "memory-limit-equal-request",
            f"Memory limit = memory request = {format_memory(memory)} (policy equal-request), "
            "so the container is not OOM-killed below what it was promised.",
        )
    )

    recommended = CurrentResources(
        cpu_request_cores=cpu_request,
        cpu_limit_cores=cpu_limit,
        memory_request_bytes=memory,
        memory_limit_bytes=memory,
        jvm_max_heap_bytes=heap,
    )
    cost = prices.monthly_delta_usd(
        cpu_request - (current.cpu_request_cores or 0.0),
        memory - (current.memory_request_bytes or 0),
    )
    recommended_dict = recommended.to_dict()
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "recommendation",
        "workload": workload,
        "container": container,
        "profile": profile.name,
        "generated_at": now,
        "current": current.to_dict(),
        "recommended": recommended_dict,
        "rules": rules,
        "evidence": _evidence(window, peak),
        "monthly_cost_delta_usd": round(cost, 2),
        "confidence": _confidence(window, profile),
        "risk": _risk(window, current, recommended),
        "hash": recommendation_hash(
            workload=workload,
            container=container,
            profile=profile.name,
            recommended=Resources.model_validate(recommended_dict),
            rule_ids=[rule["id"] for rule in rules],
        ),
    }


def _evidence(window: ContainerWindow, peak: int) -> dict[str, object]:
    return {
        "samples": window.sample_count,
        "coverage_seconds": window.covered_seconds,
        "first_timestamp": window.first_timestamp,
        "last_timestamp": window.last_timestamp,
        "cpu_p50_cores": round(window.cpu.percentile(0.5), 6),
        "cpu_p95_cores": round(window.cpu.percentile(0.95), 6),
        "cpu_max_cores": window.cpu_max_cores,
        "memory_peak_bytes": peak,
        "cpu_throttled_ratio_max": window.cpu_throttled_ratio_max,
        "oom_kills": window.oom_kills_total,
    }


def _confidence(window: ContainerWindow, profile: Profile) -> float:
    coverage_share = min(1.0, window.covered_seconds / window.history_seconds)
    sample_share = min(1.0, window.sample_count / (2 * profile.min_samples))
    return round(coverage_share * sample_share, 3)


def _risk(window: ContainerWindow, current: CurrentResources, new: CurrentResources) -> str:
    memory_drop = max(
        _decrease(current.memory_request_bytes, new.memory_request_bytes),
        _decrease(current.memory_limit_bytes, new.memory_limit_bytes),
    )
    any_drop = max(
        memory_drop,
        _decrease(current.cpu_request_cores, new.cpu_request_cores),
        _decrease(current.cpu_limit_cores, new.cpu_limit_cores),
    )
    if (window.oom_kills_total or 0) > 0 or memory_drop > HIGH_RISK_MEMORY_DECREASE:
        return "high"
    throttled = window.cpu_throttled_ratio_max or 0.0
    if throttled > MEDIUM_RISK_THROTTLED_RATIO or any_drop > MEDIUM_RISK_DECREASE:
        return "medium"
    return "low"


def _decrease(before: float | None, after: float | None) -> float:
    """Relative decrease from ``before`` to ``after`` (0 when unknown or not a decrease)."""
    if before is None or after is None or before <= 0:
        return 0.0
    return max(0.0, (before - after) / before)


def _rule(rule_id: str, text: str) -> dict[str, str]:
    return {"id": rule_id, "text": text}


def _percentile_name(p: float) -> str:
    return f"p{p * 100:.10g}"


def _mebibytes(num_bytes: float) -> str:
    return f"{num_bytes / MIB:,.1f}Mi"


def _duration(seconds: float) -> str:
    for unit, size in (("day", 86400.0), ("hour", 3600.0), ("minute", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}-{unit}"
    return f"{seconds:g}-second"
