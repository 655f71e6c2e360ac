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
- No CPU decrease (request or limit below the values in force) while the throttled
  ratio's p95 is above ``cpu_throttling_ceiling`` [10%] or, for a JVM, the GC overhead
  p95 is above ``gc_overhead_ceiling`` [5%] (rules ``cpu-no-decrease-under-throttling``,
  ``cpu-no-decrease-under-gc-pressure``).
- An OOM kill raises memory to at least max(limit at the kill * oom_memory_raise_factor,
  + oom_memory_raise_min_bytes) [max(x1.2, +100Mi)] while it is within the history, and
  memory is not decreased below what is in force within ``cooldown_seconds`` [24 h] of
  it (rule ``oom-raise-memory``).
- A JVM (JVM samples seen, or a max heap in the spec) is sized as a whole (see
  :mod:`pipeline.core.jvm`): the heap from its live set, never shrunk under GC pressure;
  the memory limit ≥ heap + non-heap + margin (``jvm-limit-covers-heap``); heap and
  limit proposed together, with a ready-to-paste ``JAVA_TOOL_OPTIONS`` value in
  ``jvm_options`` (``jvm-heap-with-limit``); a change crossing the JVM's ergonomics
  thresholds pins the collector / ActiveProcessorCount (``jvm-ergonomics-threshold``).
- Node fit, last and above every other rule (a pod that fits no node stays Pending):
  given the allocatable ``(cores, bytes)`` of the candidate nodes (``node_fit``, from the
  inventory), the container's requests and limits must fit one of them. If none holds
  them, the candidate with the least memory shortfall (then the least CPU shortfall) is
  the one sized for: CPU request and limit are capped at its allocatable cores (rounded
  down to a millicore), memory request and limit at its allocatable memory (rounded down
  to a MiB), and a JVM's heap shrinks until heap + non-heap + margin fits the capped
  limit (rule ``node-fit-capped``). Only this container is known here: the pod's other
  containers and the node's DaemonSet pods are not subtracted, so fitting is necessary,
  not sufficient.

Risk: ``high`` if any OOM kill was seen or a memory value drops by more than 50%;
``medium`` if CPU throttling ever exceeded 10% of periods or any value drops by more than
30%; else ``low``. Confidence (0..1) = data coverage share of the history window * sample
share, where the sample share reaches 1 at twice ``min_samples``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, TypeVar

from pipeline.core.cost import DEFAULT_PRICES, Prices
from pipeline.core.hpa import hpa_aware_request, hpa_rule
from pipeline.core.jvm import (
    JavaToolOptions,
    NonHeapEstimate,
    check_ergonomics,
    decide_heap,
    estimate_non_heap,
    heap_in_force_bytes,
    heap_sizing_in_use,
    jvm_evidence,
    jvm_margin_bytes,
    jvm_memory_needed_bytes,
    max_heap_option,
    ram_percentage_for,
    rewrite_java_tool_options,
)
from pipeline.core.profiles import Profile
from pipeline.core.quantity import (
    MIB,
    format_cpu,
    format_memory,
    round_up_cpu,
    round_up_memory,
)
from pipeline.core.window import ContainerWindow, HeapSizing
from schemas.hashing import recommendation_hash
from schemas.models import Resources

__all__ = ["DEFAULT_PRICES", "CurrentResources", "NodeFit", "Prices", "recommend"]

SCHEMA_VERSION: Final = 1
T = TypeVar("T", int, float)
TIMES: Final = "\N{MULTIPLICATION SIGN}"

NodeFit = tuple[tuple[float, int], ...]
"""Allocatable ``(cpu_cores, memory_bytes)`` of the nodes a pod could land on (the
inventory's ``node_fit`` fact); empty when unknown."""

HIGH_RISK_MEMORY_DECREASE: Final = 0.5
MEDIUM_RISK_DECREASE: Final = 0.3
MEDIUM_RISK_THROTTLED_RATIO: Final = 0.1

RULE_TEXT_MAX_OPTIONS_CHARS: Final = 400
"""A JAVA_TOOL_OPTIONS value longer than this is left out of the rule's sentence (it is
in ``jvm_options`` anyway), which keeps the sentence within the contract's 1000 chars."""


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

    @classmethod
    def from_limits(
        cls,
        cpu_limit_cores: float | None,
        memory_limit_bytes: int | None,
        *,
        jvm_max_heap_bytes: int | None = None,
    ) -> CurrentResources:
        """What is in force for a bare cgroup: its observed limits.

        A cgroup has no requests; as Kubernetes does for a container that sets only a
        limit, the request is taken to equal the limit. Workload specs from the
        inventory supply the declared requests when there is one.
        """
        return cls(
            cpu_request_cores=cpu_limit_cores,
            cpu_limit_cores=cpu_limit_cores,
            memory_request_bytes=memory_limit_bytes,
            memory_limit_bytes=memory_limit_bytes,
            jvm_max_heap_bytes=jvm_max_heap_bytes,
        )

    def to_dict(self) -> dict[str, float | int | None]:
        """The ``resources`` object of the recommendation contract."""
        return {
            "cpu_request_cores": self.cpu_request_cores,
            "cpu_limit_cores": self.cpu_limit_cores,
            "memory_request_bytes": self.memory_request_bytes,
            "memory_limit_bytes": self.memory_limit_bytes,
            "jvm_max_heap_bytes": self.jvm_max_heap_bytes,
        }


def _oom_cooldown_until(window: ContainerWindow, profile: Profile, now: float) -> float | None:
    """When the cool-down after the last OOM kill ends, or None if none is running."""
    killed_at = window.last_oom_timestamp
    if killed_at is None or now >= killed_at + profile.oom_cooldown_seconds:
        return None
    return killed_at + profile.oom_cooldown_seconds


def recommend(
    window: ContainerWindow,
    profile: Profile,
    *,
    workload: str,
    container: str,
    current: CurrentResources,
    now: float,
    prices: Prices = DEFAULT_PRICES,
    replicas: int = 1,
    node_pool: str | None = None,
    node_fit: NodeFit = (),
) -> dict[str, object] | None:
    """The ``recommendation`` object for one container, or None without enough data.

    None until ``window.sample_count >= profile.min_samples``. The cost delta is per
    running instance (replicas are not known here) and compares requests, a missing
    current request counting as 0. ``hash`` covers workload, container, profile,
    recommended values and sorted rule ids, never timestamps, so the same data gives
    the same hash and the PR sink opens no new PR for it. ``now`` is the clock (the
    OOM cool-down is measured against it). For a JVM, ``jvm_options`` carries the new
    ``JAVA_TOOL_OPTIONS`` value and ``evidence.jvm`` what the JVM rules rest on.

    ``node_fit`` is the allocatable ``(cpu_cores, memory_bytes)`` of the nodes the pod
    could be scheduled on (the inventory's Pareto front); empty means unknown and caps
    nothing. Requests and limits never exceed what one of them offers (rule
    ``node-fit-capped``). This container is checked alone: the window does not know the
    pod's other containers, so their requests are not subtracted from the node.
    """
    peak = window.memory_peak_bytes()
    if window.sample_count < profile.min_samples or window.cpu.is_empty:
        return None
    jvm = window.jvm
    is_jvm = jvm is not None or current.jvm_max_heap_bytes is not None
    if peak is None and not is_jvm:
        return _recommend_cpu_only(
            window,
            profile,
            workload=workload,
            container=container,
            current=current,
            now=now,
            prices=prices,
            replicas=replicas,
            node_pool=node_pool,
            node_fit=node_fit,
        )
    rules: list[dict[str, str]] = []
    gc_overhead_p95 = None if jvm is None else jvm.gc_overhead_percentile(0.95)
    cpu_request, cpu_limit = _size_cpu(window, profile, current, gc_overhead_p95, rules)
    memory = (
        round_up_memory(profile.memory_floor_bytes)
        if peak is None
        else _size_memory_from_peak(window, profile, peak, rules)
    )
    memory = _hold_decrease(
        window,
        profile,
        "memory request",
        memory,
        current.memory_request_bytes,
        format_memory,
        rules,
        round_up=round_up_memory,
    )
    peak_seen = peak if peak is not None else 0
    memory_in_force = (
        current.memory_limit_bytes
        if current.memory_limit_bytes is not None
        else window.memory_limit_bytes
    )

    heap: int | None = current.jvm_max_heap_bytes
    heap_in_force: int | None = None
    jvm_options: dict[str, object] | None = None
    jvm_evidence_object: dict[str, object] | None = None
    jvm_rules_after_oom: list[dict[str, str]] = []
    if is_jvm:
        heap_in_force = heap_in_force_bytes(jvm, current.jvm_max_heap_bytes, memory_in_force)
        decision = decide_heap(
            jvm,
            profile,
            heap_in_force,
            oom_cooldown_until=_oom_cooldown_until(window, profile, now),
        )
        rules.append(_rule(decision.rule_id, decision.text))
        heap = _hold_decrease(
            window,
            profile,
            "JVM max heap",
            decision.heap_bytes,
            heap_in_force,
            format_memory,
            rules,
            round_up=round_up_memory,
        )
        non_heap = estimate_non_heap(jvm)
        memory = max(memory, jvm_memory_needed_bytes(profile, heap, non_heap))
    memory = _guard_memory_after_oom(
        window,
        profile=profile,
        current=current,
        memory_in_force=memory_in_force,
        peak=peak_seen,
        memory=memory,
        now=now,
        rules=rules,
    )
    _note_leak(window, profile, memory, rules)
    memory_before_jvm = memory
    sizing = heap_sizing_in_use(jvm, current.jvm_max_heap_bytes is not None)
    settled = _settle(
        profile,
        _Settled(cpu_request, cpu_limit, memory, heap),
        jvm_fit=(sizing, non_heap) if is_jvm else None,
        node_fit=node_fit,
        rules=rules,
    )
    cpu_request, cpu_limit, memory, heap = (
        settled.cpu_request,
        settled.cpu_limit,
        settled.memory,
        settled.heap,
    )
    ram_percentage = settled.ram_percentage
    if is_jvm:
        assert heap is not None
        margin = jvm_margin_bytes(profile, heap, non_heap.total_bytes)
        rules.append(
            _jvm_limit_rule(heap, non_heap, margin, memory, min(memory_before_jvm, memory))
        )
        ergonomics = check_ergonomics(
            jvm,
            cpu_limit_before=current.cpu_limit_cores
            if current.cpu_limit_cores is not None
            else window.cpu_limit_cores,
            cpu_limit_after=cpu_limit,
            memory_before=memory_in_force,
            memory_after=memory,
        )
        options = rewrite_java_tool_options(
            None if jvm is None else jvm.jvm_options,
            heap_sizing=sizing,
            heap_bytes=heap,
            ram_percentage=ram_percentage,
            memory_limit_bytes=memory,
            heap_in_force_bytes=heap_in_force,
            pin_collector=ergonomics.pin_collector,
            pin_processors=ergonomics.pin_processors,
        )
        jvm_options = options.to_dict()
        jvm_rules_after_oom.append(_jvm_heap_with_limit_rule(options, heap, memory, ram_percentage))
        if ergonomics.text is not None:
            jvm_rules_after_oom.append(_rule("jvm-ergonomics-threshold", ergonomics.text))
        jvm_evidence_object = jvm_evidence(
            jvm,
            heap_in_force=heap_in_force,
            heap_sizing=sizing,
            non_heap=non_heap,
            margin_bytes=margin,
        )
    rules.extend(jvm_rules_after_oom)
    memory_limit = _memory_limit(profile, memory, rules, cap=settled.memory_limit_cap)
    recommended = CurrentResources(
        cpu_request_cores=cpu_request,
        cpu_limit_cores=cpu_limit,
        memory_request_bytes=memory,
        memory_limit_bytes=memory_limit,
        jvm_max_heap_bytes=heap,
    )
    return _assemble(
        window,
        profile,
        workload=workload,
        container=container,
        current=current,
        recommended=recommended,
        rules=rules,
        now=now,
        prices=prices,
        replicas=replicas,
        node_pool=node_pool,
        peak=peak,
        jvm_evidence_object=jvm_evidence_object,
        jvm_options=jvm_options,
    )


def _memory_limit_wanted(profile: Profile, memory: int) -> int:
    """The memory limit the profile's policy asks for with this memory request."""
    if profile.memory_limit_policy == "ratio":
        return round_up_memory(memory * profile.memory_limit_ratio)
    return memory


def _memory_limit(
    profile: Profile, memory: int, rules: list[dict[str, str]], *, cap: int | None = None
) -> int:
    """The memory limit from the final memory value, by the profile's limit policy, at
    most ``cap`` (the allocatable memory of the node sized for; never below ``memory``)."""
    if profile.memory_limit_policy == "ratio":
        wanted = _memory_limit_wanted(profile, memory)
        limit = wanted if cap is None else max(memory, min(wanted, cap))
        capped = f", capped at {format_memory(limit)} to fit the node" if limit < wanted else ""
        rules.append(
            _rule(
                "memory-limit-ratio",
                f"Memory limit = {profile.memory_limit_ratio:g} {TIMES} the request "
                f"{format_memory(memory)} = {format_memory(wanted)} (policy ratio){capped}.",
            )
        )
        return limit
    rules.append(
        _rule(
            "memory-limit-equal-request",
            f"Memory limit = memory request = {format_memory(memory)} (policy equal-request), "
            "so the container is not OOM-killed below what it was promised.",
        )
    )
    return memory


def _recommend_cpu_only(
    window: ContainerWindow,
    profile: Profile,
    *,
    workload: str,
    container: str,
    current: CurrentResources,
    now: float,
    prices: Prices,
    replicas: int = 1,
    node_pool: str | None = None,
    node_fit: NodeFit = (),
) -> dict[str, object]:
    """A recommendation from CPU alone: memory stays as it is (no working set was seen).

    Node fit caps only the CPU here, choosing the node by the memory in force.
    """
    rules: list[dict[str, str]] = []
    cpu_request, cpu_limit = _size_cpu(window, profile, current, None, rules)
    memory_in_force = max(
        (v for v in (current.memory_request_bytes, current.memory_limit_bytes) if v is not None),
        default=0,
    )
    node = _node_to_fit(
        node_fit, cpu_needed=max(cpu_request, cpu_limit or 0.0), memory_needed=memory_in_force
    )
    if node is not None:
        capped = _NodeFitChanges(node)
        cpu_request, cpu_limit = capped.cap_cpu(cpu_request, cpu_limit)
        if capped.changes:
            rules.append(capped.rule())
    rules.append(
        _rule(
            "memory-no-data",
            "Memory left as it is: no working-set sample was seen for this container.",
        )
    )
    recommended = dataclasses.replace(
        current, cpu_request_cores=cpu_request, cpu_limit_cores=cpu_limit
    )
    return _assemble(
        window,
        profile,
        workload=workload,
        container=container,
        current=current,
        recommended=recommended,
        rules=rules,
        now=now,
        prices=prices,
        replicas=replicas,
        node_pool=node_pool,
        peak=None,
        jvm_evidence_object=None,
        jvm_options=None,
    )


def _assemble(
    window: ContainerWindow,
    profile: Profile,
    *,
    workload: str,
    container: str,
    current: CurrentResources,
    recommended: CurrentResources,
    rules: list[dict[str, str]],
    now: float,
    prices: Prices,
    replicas: int,
    node_pool: str | None,
    peak: int | None,
    jvm_evidence_object: dict[str, object] | None,
    jvm_options: dict[str, object] | None,
) -> dict[str, object]:
    jvm = window.jvm
    current_shown = current
    if current.jvm_max_heap_bytes is None and jvm is not None:
        reported = jvm.max_heap_bytes if jvm.max_heap_bytes is not None else jvm.heap_max_bytes
        current_shown = dataclasses.replace(current, jvm_max_heap_bytes=reported)
    cost = prices.monthly_delta_usd(
        (recommended.cpu_request_cores or 0.0) - (current.cpu_request_cores or 0.0),
        (recommended.memory_request_bytes or 0) - (current.memory_request_bytes or 0),
        replicas,
    )
    recommended_dict = recommended.to_dict()
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "recommendation",
        "workload": workload,
        "container": container,
        "profile": profile.name,
        "generated_at": now,
        "current": current_shown.to_dict(),
        "recommended": recommended_dict,
        "rules": rules,
        "evidence": _evidence(window, peak, jvm_evidence_object)
        | {
            "counterfactual": _counterfactual(window, current, recommended, peak),
            "cost": {
                "cpu_core_hour_usd": prices.cpu_core_hour_usd,
                "memory_gib_hour_usd": prices.memory_gib_hour_usd,
                "replicas": replicas,
                "monthly_per_replica_usd": round(cost / replicas, 2),
                "node_pool": node_pool,
            },
        },
        "monthly_cost_delta_usd": round(cost, 2),
        "confidence": _confidence(window, profile),
        "risk": _risk(window, current_shown, recommended),
        "hash": recommendation_hash(
            workload=workload,
            container=container,
            profile=profile.name,
            recommended=Resources.model_validate(recommended_dict),
            rule_ids=[rule["id"] for rule in rules],
        ),
        "jvm_options": jvm_options,
    }


def _size_cpu(
    window: ContainerWindow,
    profile: Profile,
    current: CurrentResources,
    gc_overhead_p95: float | None,
    rules: list[dict[str, str]],
) -> tuple[float, float | None]:
    """CPU request from the percentile, limit by policy, then the no-decrease guards."""
    samples_text = f"{window.sample_count:,} samples"
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

    cpu_request = _cap_cpu_at_max(window, profile, cpu_request, rules)
    cpu_request = _hpa_aware(window, profile, cpu_request, rules)
    cpu_request = _hold_decrease(
        window, profile, "CPU request", cpu_request, current.cpu_request_cores, format_cpu, rules
    )
    cpu_limit = _cpu_limit(profile, current.cpu_limit_cores, cpu_request, rules)
    return _guard_cpu(window, profile, current, gc_overhead_p95, cpu_request, cpu_limit, rules)


def _hpa_aware(
    window: ContainerWindow,
    profile: Profile,
    cpu_request: float,
    rules: list[dict[str, str]],
) -> float:
    """With an HPA on CPU utilisation, the request is what keeps its target holding
    (rule ``hpa-aware``, see :mod:`pipeline.core.hpa`), never what fights it."""
    spec = window.spec
    if spec is None or spec.hpa is None or window.cpu.is_empty:
        return cpu_request
    hpa = spec.hpa
    usage_per_pod = window.cpu.percentile(0.5)
    replicas = max(1, spec.replicas or 1)
    sizing = hpa_aware_request(
        usage_per_pod,
        hpa.target_utilization,
        peak_total_usage=window.cpu_max_cores * replicas,
        max_replicas=hpa.max_replicas,
    )
    rules.append(hpa_rule("cpu", usage_per_pod, sizing, hpa_name=hpa.name))
    return round_up_cpu(max(sizing.request, profile.cpu_floor_cores))


def _cap_cpu_at_max(
    window: ContainerWindow, profile: Profile, cpu_request: float, rules: list[dict[str, str]]
) -> float:
    """Headroom never lifts the CPU request above the highest usage seen, once the window
    covers the profile's minimum history (rule ``cpu-request-capped-at-max``).

    Why: headroom is insurance against usage above the percentile; above the highest
    usage in a day or more of samples it insures against nothing the data shows, and a
    steady workload (p95 close to its max) would otherwise pay for it in full. Too few
    samples (less history than the profile's minimum) and the max is not trusted.
    """
    covered = window.covered_seconds
    highest = round_up_cpu(max(window.cpu_max_cores, profile.cpu_floor_cores))
    if covered < profile.decrease_min_history_seconds or cpu_request <= highest:
        return cpu_request
    rules.append(
        _rule(
            "cpu-request-capped-at-max",
            f"CPU request capped at {format_cpu(highest)}, the highest usage in "
            f"{_duration_text(covered)} of samples, instead of {format_cpu(cpu_request)}: "
            "headroom above it insures against nothing the data shows.",
        )
    )
    return highest


@dataclass(frozen=True, slots=True)
class _Settled:
    """The values sizing settles on, before and after :func:`_settle`."""

    cpu_request: float
    cpu_limit: float | None
    memory: int
    heap: int | None
    ram_percentage: float | None = None
    memory_limit_cap: int | None = None


def _settle(
    profile: Profile,
    wanted: _Settled,
    *,
    jvm_fit: tuple[HeapSizing, NonHeapEstimate] | None,
    node_fit: NodeFit,
    rules: list[dict[str, str]],
) -> _Settled:
    """Fit a JVM's heap and limit together (``jvm_fit``: how it sizes its heap and its
    non-heap estimate), then cap everything to a candidate node (``node-fit-capped``)."""
    memory, heap, ram_percentage = wanted.memory, wanted.heap, None
    if jvm_fit is not None:
        assert heap is not None
        heap, memory, ram_percentage = _fit_heap_and_limit(
            profile, jvm_fit[0], heap, memory, jvm_fit[1]
        )
    node = _node_to_fit(
        node_fit,
        cpu_needed=max(wanted.cpu_request, wanted.cpu_limit or 0.0),
        memory_needed=_memory_limit_wanted(profile, memory),
    )
    if node is None:
        return dataclasses.replace(wanted, memory=memory, heap=heap, ram_percentage=ram_percentage)
    capped = _NodeFitChanges(node)
    cpu_request, cpu_limit = capped.cap_cpu(wanted.cpu_request, wanted.cpu_limit)
    memory_wanted = memory
    if memory > node.memory_bytes and jvm_fit is not None:
        assert heap is not None
        heap_wanted = heap
        heap, memory, ram_percentage = _fit_jvm_into(
            profile, jvm_fit[0], heap, node.memory_bytes, jvm_fit[1]
        )
        capped.note("JVM max heap", heap_wanted, heap, format_memory)
    memory = min(memory, node.memory_bytes)
    equal = profile.memory_limit_policy == "equal-request"
    capped.note(
        "memory request and limit" if equal else "memory request",
        memory_wanted,
        memory,
        format_memory,
    )
    if not equal:
        limit_wanted = _memory_limit_wanted(profile, memory)
        capped.note(
            "memory limit", limit_wanted, min(limit_wanted, node.memory_bytes), format_memory
        )
    if capped.changes:
        rules.append(capped.rule())
    return _Settled(cpu_request, cpu_limit, memory, heap, ram_percentage, node.memory_bytes)


@dataclass(frozen=True, slots=True)
class _NodeSize:
    """The node a recommendation is sized to fit: its allocatable as the inventory saw
    it, and the caps derived from it (rounded down to a millicore and a MiB, so a
    capped value is never above the allocatable)."""

    allocatable_cpu_cores: float
    allocatable_memory_bytes: int
    cpu_cores: float
    memory_bytes: int

    def describe(self) -> str:
        return (
            f"{self.allocatable_cpu_cores:g} cores and "
            f"{_mebibytes(self.allocatable_memory_bytes)} allocatable"
        )


def _node_to_fit(node_fit: NodeFit, *, cpu_needed: float, memory_needed: int) -> _NodeSize | None:
    """The candidate node to size for, or None when nothing needs capping.

    None when ``node_fit`` is empty (unknown) or some candidate already holds
    ``cpu_needed`` cores and ``memory_needed`` bytes (the larger of request and limit).
    Otherwise the candidate with the least memory shortfall, then the least CPU
    shortfall: memory cut below the working set is an OOM kill, a CPU cut only throttles.
    """
    if not node_fit:
        return None
    if any(cpu_needed <= cpu and memory_needed <= memory for cpu, memory in node_fit):
        return None
    cpu, memory = min(
        node_fit,
        key=lambda node: (
            max(0, memory_needed - node[1]),
            max(0.0, cpu_needed - node[0]),
            -node[0],
            -node[1],
        ),
    )
    return _NodeSize(
        allocatable_cpu_cores=cpu,
        allocatable_memory_bytes=memory,
        cpu_cores=max(0.001, math.floor(round(cpu * 1000, 6)) / 1000),
        memory_bytes=max(MIB, memory // MIB * MIB),
    )


class _NodeFitChanges:
    """Collects what the node-fit cap changed, for one ``node-fit-capped`` sentence."""

    __slots__ = ("changes", "node")

    def __init__(self, node: _NodeSize) -> None:
        self.node = node
        self.changes: list[str] = []

    def note(self, what: str, before: T, after: T, fmt: Callable[[T], str]) -> None:
        if after < before:
            self.changes.append(f"{what} {fmt(before)} → {fmt(after)}")

    def cap_cpu(self, request: float, limit: float | None) -> tuple[float, float | None]:
        """Request and limit at most the node's cores (limit ≥ request still holds)."""
        cap = self.node.cpu_cores
        capped_request = min(request, cap)
        capped_limit = None if limit is None else min(limit, cap)
        if limit is not None and capped_limit is not None and limit == request:
            self.note("CPU request and limit", request, capped_request, format_cpu)
        else:
            self.note("CPU request", request, capped_request, format_cpu)
            if limit is not None and capped_limit is not None:
                self.note("CPU limit", limit, capped_limit, format_cpu)
        return capped_request, capped_limit

    def rule(self) -> dict[str, str]:
        return _rule(
            "node-fit-capped",
            f"Capped to fit the largest candidate node ({self.node.describe()}); a pod "
            f"that fits no node stays Pending: {', '.join(self.changes)}. The pod's other "
            "containers and DaemonSet pods are not subtracted from the node.",
        )


def _fit_jvm_into(
    profile: Profile, sizing: HeapSizing, heap: int, memory_cap: int, non_heap: NonHeapEstimate
) -> tuple[int, int, float | None]:
    """Heap, memory and MaxRAMPercentage for a JVM whose memory is capped at ``memory_cap``.

    The largest heap (in whole MiB, at most ``heap``) whose heap + non-heap + margin,
    sized exactly as :func:`_fit_heap_and_limit` sizes it, fits the cap; the memory is
    then the cap. If not even a 1 MiB heap fits beside the non-heap estimate, the heap is
    1 MiB and the memory still the cap: the node cannot hold this JVM as measured.
    """

    def fits(candidate: int) -> bool:
        if jvm_memory_needed_bytes(profile, candidate, non_heap) > memory_cap:
            return False
        return _fit_heap_and_limit(profile, sizing, candidate, memory_cap, non_heap)[1] <= (
            memory_cap
        )

    if fits(heap):
        return _fit_heap_and_limit(profile, sizing, heap, memory_cap, non_heap)
    low, high = 0, heap // MIB  # fits(low * MIB) is assumed, fits(high * MIB) is false
    while high - low > 1:
        middle = (low + high) // 2
        if fits(middle * MIB):
            low = middle
        else:
            high = middle
    if low == 0:
        percentage = None if sizing == "xmx" else ram_percentage_for(MIB, memory_cap)[0]
        return MIB, memory_cap, percentage
    return _fit_heap_and_limit(profile, sizing, low * MIB, memory_cap, non_heap)


def _duration_text(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds / 60:.0f} minutes"


def _note_leak(
    window: ContainerWindow, profile: Profile, memory: int, rules: list[dict[str, str]]
) -> None:
    """Report a suspected leak (rule ``memory-leak-suspected``). Memory still covers the
    peak seen (a limit below observed usage is an OOM kill daytwo would cause), but raises
    come at most once per cool-down: the engine drops the at-risk bypass for memory while
    a leak is suspected, so the limit does not chase the leak without end."""
    leak = window.leak()
    if leak is None:
        return
    rules.append(
        _rule(
            "memory-leak-suspected",
            f"Suspected memory leak: the working set has climbed {_mebibytes(leak.slope_per_hour)}"
            f" per hour since {_iso(leak.since)} (straight-line fit r² {leak.r2:.2f}, "
            f"+{leak.growth_share:.0%}); memory {format_memory(memory)} covers the peak seen, "
            f"and rises at most once per {_duration(profile.proposal_cooldown_seconds)} "
            "cool-down. Fix the leak, or restart on a schedule: a larger limit only "
            "postpones the OOM kill.",
        )
    )


def decreases_allowed_from(window: ContainerWindow, profile: Profile) -> float | None:
    """Trace time from which a value may go down: the profile's minimum history after the
    window's first sample, or after the start of the regime a drift detector found.

    None before the first sample.
    """
    if window.first_timestamp is None:
        return None
    start = window.first_timestamp
    if window.regime_start is not None:
        start = max(start, window.regime_start)
    return start + profile.decrease_min_history_seconds


def _hold_decrease(  # noqa: PLR0917  # private helper, one call per value
    window: ContainerWindow,
    profile: Profile,
    what: str,
    proposed: T,
    in_force: T | None,
    fmt: Callable[[T], str],
    rules: list[dict[str, str]],
    round_up: Callable[[T], T] | None = None,
) -> T:
    """No decrease below the value in force before the window covers the minimum history."""
    allowed_from = decreases_allowed_from(window, profile)
    last = window.last_timestamp
    if in_force is None or allowed_from is None or last is None or last >= allowed_from:
        return proposed
    held = round_up(in_force) if round_up is not None else in_force
    if proposed >= held:
        return proposed
    since = "the last detected drift" if window.regime_start is not None else "the first sample"
    rules.append(
        _rule(
            "no-decrease-before-min-history",
            f"{what[0].upper()}{what[1:]} kept at {fmt(held)} instead of {fmt(proposed)}: "
            f"decreases need {_duration(profile.decrease_min_history_seconds)} of history "
            f"since {since} (until {_iso(allowed_from)}).",
        )
    )
    return held


def _cpu_limit(
    profile: Profile, in_force: float | None, cpu_request: float, rules: list[dict[str, str]]
) -> float | None:
    """The CPU limit by the profile's policy (keep / none / ratio)."""
    if profile.cpu_limit_policy == "none":
        if in_force is None:
            rules.append(_rule("cpu-limit-none", "CPU limit stays unset (policy none)."))
        else:
            rules.append(
                _rule(
                    "cpu-limit-removed",
                    f"CPU limit {format_cpu(in_force)} removed (policy none): a limit throttles "
                    "bursts and saves nothing, since nodes reserve requests, not limits.",
                )
            )
        return None
    if profile.cpu_limit_policy == "ratio":
        limit = round_up_cpu(cpu_request * profile.cpu_limit_ratio)
        rules.append(
            _rule(
                "cpu-limit-ratio",
                f"CPU limit = {profile.cpu_limit_ratio:g} {TIMES} the request "
                f"{format_cpu(cpu_request)} = {format_cpu(limit)} (policy ratio).",
            )
        )
        return limit
    if in_force is None:
        rules.append(_rule("cpu-limit-none", "CPU limit stays unset (policy keep)."))
        return None
    if in_force < cpu_request:
        rules.append(
            _rule(
                "cpu-limit-raised",
                f"CPU limit raised from {format_cpu(in_force)} to the new request "
                f"{format_cpu(cpu_request)} (policy keep; a limit below the request is invalid).",
            )
        )
        return cpu_request
    rules.append(
        _rule("cpu-limit-keep", f"CPU limit kept at {format_cpu(in_force)} (policy keep).")
    )
    return in_force


def _guard_cpu(  # noqa: PLR0917  # private helper, called once, positionally
    window: ContainerWindow,
    profile: Profile,
    current: CurrentResources,
    gc_overhead_p95: float | None,
    cpu_request: float,
    cpu_limit: float | None,
    rules: list[dict[str, str]],
) -> tuple[float, float | None]:
    """No CPU decrease while throttling or GC overhead is above the profile's ceilings."""
    throttled_p95 = window.cpu_throttled_ratio_percentile(0.95)
    pressures = []
    if throttled_p95 is not None and throttled_p95 > profile.cpu_throttling_ceiling:
        pressures.append(
            (
                "cpu-no-decrease-under-throttling",
                f"CFS throttling p95 {throttled_p95:.1%} > ceiling "
                f"{profile.cpu_throttling_ceiling:.1%}",
            )
        )
    if gc_overhead_p95 is not None and gc_overhead_p95 > profile.gc_overhead_ceiling:
        pressures.append(
            (
                "cpu-no-decrease-under-gc-pressure",
                f"GC overhead p95 {gc_overhead_p95:.1%} > ceiling "
                f"{profile.gc_overhead_ceiling:.1%}",
            )
        )
    if pressures:
        proposed_request, proposed_limit = cpu_request, cpu_limit
        if current.cpu_request_cores is not None:
            cpu_request = max(cpu_request, current.cpu_request_cores)
        if current.cpu_limit_cores is not None and cpu_limit is not None:
            cpu_limit = max(cpu_limit, current.cpu_limit_cores)
        if cpu_request != proposed_request or cpu_limit != proposed_limit:
            outcome = (
                f"request kept at {format_cpu(cpu_request)} instead of "
                f"{format_cpu(proposed_request)}"
                if cpu_request != proposed_request
                else f"request {format_cpu(cpu_request)}"
            )
            if cpu_limit is not None and cpu_limit != proposed_limit:
                assert proposed_limit is not None
                outcome += (
                    f", limit kept at {format_cpu(cpu_limit)} instead of "
                    f"{format_cpu(proposed_limit)}"
                )
        else:
            outcome = f"the proposed request {format_cpu(cpu_request)} is no decrease"
        for rule_id, reason in pressures:
            rules.append(_rule(rule_id, f"No CPU decrease while {reason}: {outcome}."))
    return cpu_request, cpu_limit


def _size_memory_from_peak(
    window: ContainerWindow, profile: Profile, peak: int, rules: list[dict[str, str]]
) -> int:
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
        rules.append(_rule("memory-request-peak", f"Memory request = {peak_text}."))
        return round_up_memory(memory_wanted)
    memory = round_up_memory(profile.memory_floor_bytes)
    rules.append(
        _rule(
            "memory-request-floor",
            f"Memory request = the profile floor of {format_memory(memory)}, "
            f"above the {peak_text}.",
        )
    )
    return memory


def _guard_memory_after_oom(
    window: ContainerWindow,
    *,
    profile: Profile,
    current: CurrentResources,
    memory_in_force: int | None,
    peak: int,
    memory: int,
    now: float,
    rules: list[dict[str, str]],
) -> int:
    """Raise memory after an OOM kill; no decrease within the cool-down (``oom-raise-memory``).

    The raise is anchored to the limit in force *at the kill* (recorded by the window),
    not to the current one, so a merged raise is not raised again on the next run.
    """
    killed_at = window.last_oom_timestamp
    if killed_at is None:
        return memory
    cooldown_ends = killed_at + profile.oom_cooldown_seconds
    in_history = now - killed_at < window.history_seconds
    in_cooldown = now < cooldown_ends
    if not (in_history or in_cooldown):
        return memory
    limit_at_kill = window.oom_memory_limit_bytes
    if limit_at_kill is None:
        limit_at_kill = memory_in_force if memory_in_force is not None else peak
    raised = round_up_memory(
        max(
            limit_at_kill * profile.oom_memory_raise_factor,
            limit_at_kill + profile.oom_memory_raise_min_bytes,
        )
    )
    before = memory
    memory = max(memory, raised)
    sentence = (
        f"OOM kill at {_iso(killed_at)} with the memory limit at "
        f"{format_memory(limit_at_kill)}: memory ≥ max({format_memory(limit_at_kill)} {TIMES} "
        f"{profile.oom_memory_raise_factor:.2f}, {format_memory(limit_at_kill)} + "
        f"{format_memory(profile.oom_memory_raise_min_bytes)}) = {format_memory(raised)}"
    )
    if in_cooldown:
        in_force = [v for v in (memory_in_force, current.memory_request_bytes) if v is not None]
        if in_force:
            memory = max(memory, round_up_memory(max(in_force)))
            sentence += (
                f", and no decrease below the {format_memory(max(in_force))} in force until "
                f"{_iso(cooldown_ends)} ({_duration(profile.oom_cooldown_seconds)} cool-down)"
            )
    if memory > before:
        sentence += f"; memory raised from {format_memory(before)} to {format_memory(memory)}"
    rules.append(_rule("oom-raise-memory", sentence + "."))
    return memory


def _fit_heap_and_limit(
    profile: Profile, sizing: str, heap: int, memory: int, non_heap: NonHeapEstimate
) -> tuple[int, int, float | None]:
    """Final heap, memory and MaxRAMPercentage (None for -Xmx sizing).

    With percentage sizing the heap is a share of the limit: the share is rounded up to
    a tenth of a percent (never below the chosen heap), and the limit grows, if needed,
    until it covers that slightly larger heap + non-heap + margin.
    """
    if sizing == "xmx":
        return heap, memory, None
    for _ in range(32):
        percentage, effective_heap = ram_percentage_for(heap, memory)
        needed = jvm_memory_needed_bytes(profile, effective_heap, non_heap)
        if memory >= needed:
            return effective_heap, memory, percentage
        memory = needed
    raise AssertionError("heap percentage and memory limit did not converge")  # pragma: no cover


def _jvm_heap_with_limit_rule(
    options: JavaToolOptions, heap: int, memory: int, ram_percentage: float | None
) -> dict[str, str]:
    heap_flag = (
        max_heap_option(heap)
        if ram_percentage is None
        else f"-XX:MaxRAMPercentage={ram_percentage:.1f} of the {format_memory(memory)} "
        f"limit = a {_mebibytes(heap)} heap"
    )
    with_limit = (
        f"{heap_flag} with a {format_memory(memory)} limit" if ram_percentage is None else heap_flag
    )
    value_text = (
        f'JAVA_TOOL_OPTIONS="{options.value}"'
        if len(options.value) <= RULE_TEXT_MAX_OPTIONS_CHARS
        else "the JAVA_TOOL_OPTIONS value is in jvm_options"
    )
    unknown = (
        " (the JAVA_TOOL_OPTIONS in force is unknown: merge with it)"
        if options.previous is None
        else ""
    )
    return _rule(
        "jvm-heap-with-limit",
        f"Heap and limit change together, never one without the other: {with_limit}; "
        f"{value_text}{unknown}.",
    )


def _jvm_limit_rule(
    heap: int, non_heap: NonHeapEstimate, margin: int, memory: int, memory_before: int
) -> dict[str, str]:
    needed = round_up_memory(heap + non_heap.total_bytes + margin)
    outcome = (
        f"memory raised from {format_memory(memory_before)} to {format_memory(memory)}"
        if memory > memory_before
        else f"the {format_memory(memory)} limit covers it"
    )
    return _rule(
        "jvm-limit-covers-heap",
        f"Memory limit ≥ JVM max heap {_mebibytes(heap)} + non-heap "
        f"{_mebibytes(non_heap.total_bytes)} ({non_heap.describe()}) + margin "
        f"{_mebibytes(margin)} = {format_memory(needed)}; {outcome}.",
    )


def _evidence(
    window: ContainerWindow, peak: int | None, jvm: dict[str, object] | None
) -> dict[str, object]:
    throttled_p95 = window.cpu_throttled_ratio_percentile(0.95)
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
        "cpu_throttled_ratio_p95": None if throttled_p95 is None else round(throttled_p95, 6),
        "last_oom_timestamp": window.last_oom_timestamp,
        "jvm": jvm,
        "drift": window.drift_evidence() or None,
        "leak": None if (leak := window.leak()) is None else leak.to_dict(),
    }


def _counterfactual(
    window: ContainerWindow,
    current: CurrentResources,
    recommended: CurrentResources,
    peak: int | None,
) -> dict[str, object]:
    """What the history would have looked like under the values in force and proposed.

    CPU shares are upper bounds of the share of (decayed, so recent-weighted) sample time
    whose usage was above the request, or at the limit (where CFS throttles); memory is
    the number of stored interval peaks above the limit (every interval that can still be
    the history's maximum; 0 means the limit is above every peak in the history).
    """

    def cpu_share(value: float | None) -> float | None:
        return None if value is None else round(window.cpu.share_above(value), 6)

    def peaks_above(limit: int | None) -> int | None:
        if limit is None or peak is None:
            return None
        return sum(1 for _, value in window.memory_peaks if value > limit)

    return {
        "cpu_above_request_share_current": cpu_share(current.cpu_request_cores),
        "cpu_above_request_share_recommended": cpu_share(recommended.cpu_request_cores),
        "cpu_at_limit_share_current": cpu_share(current.cpu_limit_cores),
        "cpu_at_limit_share_recommended": cpu_share(recommended.cpu_limit_cores),
        "memory_peaks_above_limit_current": peaks_above(current.memory_limit_bytes),
        "memory_peaks_above_limit_recommended": peaks_above(recommended.memory_limit_bytes),
    }


def _confidence(window: ContainerWindow, profile: Profile) -> float:
    coverage_share = min(1.0, window.covered_seconds / window.history_seconds)
    sample_share = min(1.0, window.sample_count / (2 * profile.min_samples))
    return round(coverage_share * sample_share, 3)


def _risk(window: ContainerWindow, current: CurrentResources, new: CurrentResources) -> str:
    memory_drop = max(
        _decrease(current.memory_request_bytes, new.memory_request_bytes),
        _decrease(current.memory_limit_bytes, new.memory_limit_bytes),
        _decrease(current.jvm_max_heap_bytes, new.jvm_max_heap_bytes),
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


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
