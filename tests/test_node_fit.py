"""Node fit (issue 6): a recommendation never asks for more than one candidate node offers.

The candidates' allocatable ``(cores, bytes)`` come from the inventory's facts
(``node_fit``); sizing caps requests and limits to the node it sizes for (rule
``node-fit-capped``), shrinking a JVM's heap so heap + non-heap + margin still fits.

Timeline of the unit windows (one sample a minute, an hour of history, no minimum
history, so nothing holds a decrease and the highest-usage cap is not in play)::

    t = T0+60   T0+120  ...   T0+3600   ← recommend(now = T0+3600)
        sample  sample  ...   sample
"""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from agents.inventory import build_workloads
from pipeline.core.engine import ContainerEngine
from pipeline.core.jvm import estimate_non_heap, jvm_memory_needed_bytes, max_heap_option
from pipeline.core.profiles import BALANCED, Profile
from pipeline.core.sizing import CurrentResources, recommend
from pipeline.core.window import ContainerWindow, JvmSampleInput, SampleInput
from pipeline.metrics import WorkerMetrics
from pipeline.processor import Processor
from pipeline.profiles_file import ProfileResolver, load_catalog
from schemas.models import Recommendation
from schemas.validate import encode, validator_for
from tests.k8s_fixtures import loaded_state
from tests.test_agents_inventory import NOW
from tests.test_processor import MemoryStore, batch

MIB = 1024**2
GIB = 1024**3
T0 = 1_699_999_800.0
WORKLOAD = "prod/batch/CronJob/nightly-report"
# A 24 h minimum history the hour of samples does not cover: the request is the plain
# p95 x headroom (cpu-request-capped-at-max needs the minimum history to apply).
UNCOVERED = BALANCED.with_overrides(min_samples=5)
# No minimum history: nothing is held at the value in force.
FEW = BALANCED.with_overrides(min_samples=5, decrease_min_history_seconds=0.0)
SCHEMA = validator_for(Recommendation)

STEADY_JVM: dict[str, Any] = {
    "collector": "G1",
    "gc_overhead_ratio": 0.005,
    "gc_pause_max_seconds": 0.02,
    "gc_count": 3,
    "full_gc_count": 0,
    "heap_used_after_gc_bytes": 3 * GIB,
    "heap_committed_bytes": 6 * GIB,
    "metaspace_used_bytes": 60 * MIB,
    "code_cache_bytes": 20 * MIB,
    "thread_count": 30,
    "direct_memory_bytes": 2 * MIB,
    "active_processor_count": 4,
    "thread_stack_size_bytes": MIB,
}


def window_of(
    profile: Profile,
    *,
    cpu: float | list[float],
    mem: int | None,
    minutes: int = 60,
    jvm: dict[str, Any] | None = None,
) -> ContainerWindow:
    """One container sample a minute (and a JVM sample, if ``jvm``)."""
    window = ContainerWindow.new(profile)
    usage = cpu if isinstance(cpu, list) else [cpu] * minutes
    for i, cores in enumerate(usage):
        t = T0 + 60 * (i + 1)
        window.apply(SampleInput(t, 60.0, cores, mem))
        if jvm is not None:
            window.apply_jvm(JvmSampleInput(timestamp=t, interval_seconds=60.0, **jvm))
    return window


def size(
    window: ContainerWindow,
    profile: Profile,
    node_fit: tuple[tuple[float, int], ...] = (),
    current: CurrentResources | None = None,
) -> dict[str, Any]:
    """The recommendation, checked against the contract."""
    last = window.last_timestamp
    assert last is not None
    rec = recommend(
        window,
        profile,
        workload=WORKLOAD,
        container="report",
        current=current or CurrentResources(),
        now=last,
        node_fit=node_fit,
    )
    assert rec is not None
    SCHEMA.validate(orjson.loads(orjson.dumps(rec)))
    return rec


def rules_of(rec: dict[str, Any]) -> dict[str, str]:
    return {rule["id"]: rule["text"] for rule in rec["rules"]}


def fits_one(rec: dict[str, Any], node_fit: tuple[tuple[float, int], ...]) -> bool:
    """Whether the recommended requests and limits fit together on one candidate."""
    new = rec["recommended"]
    cpu = max(new["cpu_request_cores"] or 0.0, new["cpu_limit_cores"] or 0.0)
    memory = max(new["memory_request_bytes"] or 0, new["memory_limit_bytes"] or 0)
    return any(cpu <= cores and memory <= allocatable for cores, allocatable in node_fit)


# -- CPU -----------------------------------------------------------------------------------


def test_cpu_asking_six_cores_is_capped_at_the_largest_nodes_three_and_a_half() -> None:
    # usage 5.2 cores steady: p95 (5.2 .. 5.46, one histogram bucket) x 1.15 ≈ 6 cores;
    # the largest candidate offers 3.5 cores (and plenty of memory).
    window = window_of(UNCOVERED, cpu=5.2, mem=GIB)
    node_fit = ((2.0, 8 * GIB), (3.5, 16 * GIB))
    current = CurrentResources(cpu_request_cores=4.0, cpu_limit_cores=8.0)
    free = size(window, UNCOVERED, current=current)
    assert free["recommended"]["cpu_request_cores"] >= 5.98
    assert "node-fit-capped" not in rules_of(free)

    capped = size(window, UNCOVERED, node_fit, current=current)
    new = capped["recommended"]
    assert new["cpu_request_cores"] == 3.5
    assert new["cpu_limit_cores"] == 3.5  # policy keep: 8 cores in force, capped too
    assert new["memory_request_bytes"] == free["recommended"]["memory_request_bytes"]
    text = rules_of(capped)["node-fit-capped"]
    assert "3.5 cores" in text
    assert "CPU request" in text
    assert "CPU limit 8 → 3500m" in text
    assert capped["hash"] != free["hash"]


def test_the_cpu_cap_rounds_down_to_a_millicore() -> None:
    window = window_of(UNCOVERED, cpu=5.2, mem=GIB)
    rec = size(window, UNCOVERED, ((3.9275, 16 * GIB),))
    assert rec["recommended"]["cpu_request_cores"] == 3.927


def test_a_ratio_cpu_limit_above_the_node_is_capped_and_stays_above_the_request() -> None:
    # request 1.2 x 1.15 ≈ 1.4 fits the 2-core node, but the ratio limit (x2 = 2.8) does not.
    profile = UNCOVERED.with_overrides(cpu_limit_policy="ratio", cpu_limit_ratio=2.0)
    window = window_of(profile, cpu=1.2, mem=GIB)
    free = size(window, profile)
    assert free["recommended"]["cpu_limit_cores"] > 2.0
    rec = size(window, profile, ((2.0, 16 * GIB),))
    new = rec["recommended"]
    assert new["cpu_request_cores"] == free["recommended"]["cpu_request_cores"] < 2.0
    assert new["cpu_limit_cores"] == 2.0
    assert "CPU limit" in rules_of(rec)["node-fit-capped"]


def test_a_cpu_only_container_gets_its_cpu_capped_and_its_memory_left() -> None:
    window = window_of(UNCOVERED, cpu=5.2, mem=None)
    current = CurrentResources(memory_request_bytes=GIB, memory_limit_bytes=GIB)
    rec = size(window, UNCOVERED, ((3.5, 16 * GIB),), current=current)
    assert rec["recommended"]["cpu_request_cores"] == 3.5
    assert rec["recommended"]["memory_limit_bytes"] == GIB
    assert {"memory-no-data", "node-fit-capped"} <= set(rules_of(rec))


# -- memory --------------------------------------------------------------------------------


def test_memory_above_the_largest_node_is_capped_at_its_allocatable() -> None:
    # working set 20Gi x 1.15 = 23Gi; the largest node offers 16Gi - 12345 bytes, which
    # rounds down to 16383Mi.
    window = window_of(FEW, cpu=0.5, mem=20 * GIB)
    allocatable = 16 * GIB - 12345
    free = size(window, FEW)
    assert free["recommended"]["memory_request_bytes"] > allocatable
    rec = size(window, FEW, ((4.0, 8 * GIB), (2.0, allocatable)))
    new = rec["recommended"]
    assert new["memory_request_bytes"] == new["memory_limit_bytes"] == 16383 * MIB
    text = rules_of(rec)["node-fit-capped"]
    assert "memory request and limit" in text
    assert f"{allocatable / MIB:,.1f}Mi" in text
    assert new["cpu_request_cores"] == free["recommended"]["cpu_request_cores"]


def test_a_ratio_memory_limit_is_capped_without_touching_a_request_that_fits() -> None:
    # working set 8Gi x 1.15 = 9420.8 → 9421Mi request; ratio 1.5 → 14131.5 → 14132Mi,
    # above the 12Gi node, so the limit is 12Gi and the request stays.
    profile = FEW.with_overrides(memory_limit_policy="ratio", memory_limit_ratio=1.5)
    window = window_of(profile, cpu=0.5, mem=8 * GIB)
    rec = size(window, profile, ((4.0, 12 * GIB),))
    new = rec["recommended"]
    assert new["memory_request_bytes"] == 9421 * MIB
    assert new["memory_limit_bytes"] == 12 * GIB
    rules = rules_of(rec)
    assert "memory limit 14132Mi → 12Gi" in rules["node-fit-capped"]
    assert "capped at 12Gi to fit the node" in rules["memory-limit-ratio"]


def test_the_node_sized_for_is_the_one_that_keeps_memory_whole() -> None:
    # Candidates: 8 cores / 16Gi and 2 cores / 64Gi. The container wants ~6 cores and
    # 23Gi: no node holds both. Cutting memory below the working set is an OOM kill,
    # cutting CPU only throttles, so it is sized for the 64Gi node: CPU 2, memory whole.
    window = window_of(UNCOVERED, cpu=5.2, mem=20 * GIB)
    node_fit = ((2.0, 64 * GIB), (8.0, 16 * GIB))
    free = size(window, UNCOVERED)
    rec = size(window, UNCOVERED, node_fit)
    assert rec["recommended"]["cpu_request_cores"] == 2.0
    assert rec["recommended"]["memory_request_bytes"] == free["recommended"]["memory_request_bytes"]
    assert fits_one(rec, node_fit)


def test_no_cap_without_node_facts_or_when_a_node_holds_it() -> None:
    window = window_of(UNCOVERED, cpu=5.2, mem=20 * GIB)
    free = size(window, UNCOVERED)
    large = size(window, UNCOVERED, ((4.0, 8 * GIB), (64.0, 256 * GIB)))
    assert "node-fit-capped" not in rules_of(free)
    assert large["recommended"] == free["recommended"]
    assert large["hash"] == free["hash"]


# -- a JVM ---------------------------------------------------------------------------------


def assert_limit_covers_heap(rec: dict[str, Any], profile: Profile) -> None:
    heap = rec["recommended"]["jvm_max_heap_bytes"]
    non_heap = rec["evidence"]["jvm"]["non_heap"]["total_bytes"]
    margin = max(
        profile.jvm_memory_margin_bytes, profile.jvm_memory_margin_fraction * (heap + non_heap)
    )
    assert rec["recommended"]["memory_limit_bytes"] >= heap + non_heap + margin
    assert heap <= rec["recommended"]["memory_limit_bytes"] * profile.jvm_heap_max_share_of_limit


def test_a_capped_jvm_gets_the_largest_heap_that_still_fits_the_capped_limit() -> None:
    # live set 3Gi → heap ~6Gi (live set at half the heap), memory ~7Gi; the node offers
    # 4Gi, so the limit is 4096Mi and the heap the largest whole MiB that fits it.
    jvm = {
        **STEADY_JVM,
        "live_set_bytes": 3 * GIB,
        "max_heap_bytes": 6 * GIB,
        "heap_max_bytes": 6 * GIB,
        "heap_sizing": "xmx",
        "jvm_options": "-Xmx6g",
    }
    window = window_of(FEW, cpu=1.0, mem=5 * GIB, jvm=jvm)
    free = size(window, FEW)
    assert free["recommended"]["memory_limit_bytes"] > 4 * GIB
    rec = size(window, FEW, ((8.0, 4 * GIB),))
    new = rec["recommended"]
    assert new["memory_limit_bytes"] == 4 * GIB
    heap = new["jvm_max_heap_bytes"]
    assert heap < free["recommended"]["jvm_max_heap_bytes"]
    assert heap % MIB == 0
    assert_limit_covers_heap(rec, FEW)
    non_heap = estimate_non_heap(window.jvm)
    assert jvm_memory_needed_bytes(FEW, heap, non_heap) <= 4 * GIB
    assert jvm_memory_needed_bytes(FEW, heap + MIB, non_heap) > 4 * GIB  # the largest
    assert max_heap_option(heap) in rec["jvm_options"]["java_tool_options"]
    assert "JVM max heap" in rules_of(rec)["node-fit-capped"]


def test_a_capped_percentage_sized_jvm_keeps_its_heap_share_inside_the_limit() -> None:
    jvm = {
        **STEADY_JVM,
        "live_set_bytes": 3 * GIB,
        "max_heap_bytes": 6 * GIB,
        "heap_max_bytes": 6 * GIB,
        "heap_sizing": "ram-percentage",
        "max_ram_percentage": 75.0,
        "jvm_options": "-XX:MaxRAMPercentage=75.0",
    }
    window = window_of(FEW, cpu=1.0, mem=5 * GIB, jvm=jvm)
    rec = size(window, FEW, ((8.0, 4 * GIB),))
    new = rec["recommended"]
    assert new["memory_limit_bytes"] == 4 * GIB
    assert_limit_covers_heap(rec, FEW)
    options = rec["jvm_options"]["java_tool_options"]
    percentage = float(options.split("MaxRAMPercentage=")[1].split()[0])
    # the heap the JVM will take from the limit is the recommended heap
    assert 4 * GIB * round(percentage * 10) // 1000 == new["jvm_max_heap_bytes"]


# -- the property --------------------------------------------------------------------------

# Allocatable CPU is whole millicores (the kubelet reports e.g. "3920m"), as parse_cpu
# gives it: the nearest float to k / 1000.
NODES = st.lists(
    st.tuples(
        st.integers(min_value=100, max_value=32_000).map(lambda millicores: millicores / 1000),
        st.integers(min_value=512 * MIB, max_value=128 * GIB),
    ),
    min_size=1,
    max_size=4,
).map(tuple)


@settings(max_examples=120, deadline=None)
@given(
    usage=st.lists(st.floats(min_value=0.0, max_value=40.0), min_size=6, max_size=30),
    working_set=st.integers(min_value=16 * MIB, max_value=160 * GIB),
    node_fit=NODES,
    cpu_limit=st.none() | st.floats(min_value=0.1, max_value=64.0),
    memory_policy=st.sampled_from(["equal-request", "ratio"]),
    cpu_policy=st.sampled_from(["keep", "none", "ratio"]),
)
def test_a_recommendation_never_exceeds_what_one_candidate_node_offers(
    usage: list[float],
    working_set: int,
    node_fit: tuple[tuple[float, int], ...],
    cpu_limit: float | None,
    memory_policy: str,
    cpu_policy: str,
) -> None:
    profile = UNCOVERED.with_overrides(
        memory_limit_policy=memory_policy,
        memory_limit_ratio=1.5,
        cpu_limit_policy=cpu_policy,
        cpu_limit_ratio=2.0,
    )
    window = window_of(profile, cpu=usage, mem=working_set)
    current = CurrentResources(cpu_limit_cores=cpu_limit)
    free = size(window, profile, current=current)
    rec = size(window, profile, node_fit, current=current)
    new = rec["recommended"]
    largest_cpu = max(cpu for cpu, _ in node_fit)
    largest_memory = max(memory for _, memory in node_fit)
    for field in ("cpu_request_cores", "cpu_limit_cores"):
        assert new[field] is None or new[field] <= largest_cpu
    for field in ("memory_request_bytes", "memory_limit_bytes"):
        assert new[field] <= largest_memory
    assert fits_one(rec, node_fit)
    if new["cpu_limit_cores"] is not None:
        assert new["cpu_limit_cores"] >= new["cpu_request_cores"]
    assert new["memory_limit_bytes"] >= new["memory_request_bytes"]
    if fits_one(free, node_fit):
        assert new == free["recommended"]
        assert "node-fit-capped" not in rules_of(rec)
    else:
        assert "node-fit-capped" in rules_of(rec)


# -- the engine and the worker -------------------------------------------------------------


def test_the_engine_passes_its_node_fit_to_sizing() -> None:
    engine = ContainerEngine(UNCOVERED, workload=WORKLOAD, container="report")
    for i in range(10):
        engine.apply(SampleInput(T0 + 60 * (i + 1), 60.0, 5.2, GIB))
    before = engine.evaluate(T0 + 600, CurrentResources()).recommendation
    engine.node_fit = ((3.5, 16 * GIB),)
    after = engine.evaluate(T0 + 600, CurrentResources()).recommendation
    assert before is not None
    assert after is not None
    assert before["recommended"]["cpu_request_cores"] > 3.5  # type: ignore[index]  # the contract's dict
    assert after["recommended"]["cpu_request_cores"] == 3.5  # type: ignore[index]  # the contract's dict


FAST = {"min_samples": 3, "decrease_min_history_seconds": 0.0, "evaluation_interval_seconds": 10}


def worker() -> Processor:
    resolver = ProfileResolver(load_catalog(None), FAST)
    return Processor(
        profile=resolver.default(),
        store=MemoryStore(),
        metrics=WorkerMetrics.create(CollectorRegistry()),
        clock=lambda: NOW + 1000,
        source_topic="t.samples",
        profile_for=resolver.for_spec,
    )


def feed_heavy_usage(processor: Processor, container: str, *, first_offset: int) -> list[Any]:
    """Six batches of 6 cores and a 14Gi working set; the sets the checkpoint publishes."""
    key = WORKLOAD.encode()
    for i in range(6):
        raw = batch(WORKLOAD, NOW + 10 * (i + 1), {container: (6.0, 14 * GIB)})
        assert processor.handle(key, raw, partition=0, offset=first_offset + i) is None
    return processor.checkpoint()


def test_the_node_fit_from_recorded_objects_caps_the_workers_recommendation() -> None:
    (workload,) = [
        w
        for w in build_workloads(loaded_state(), cluster="prod", timestamp=NOW)
        if w.id == WORKLOAD
    ]
    ((node_cpu, node_memory),) = workload.facts.node_fit  # one pool, one node shape
    container = workload.spec.containers[0].name
    assert workload.spec.containers[0].cpu_limit_cores is not None  # policy keep raises it

    processor = worker()
    assert (
        processor.handle_spec(WORKLOAD.encode(), encode(workload.spec), partition=0, offset=0)
        is None
    )
    published = feed_heavy_usage(processor, container, first_offset=1)

    (proposed,) = [r for s in published for r in s.recommendations if r.container == container]
    (rec_set,) = processor.current_sets()
    (current,) = [r for r in rec_set.recommendations if r.container == container]
    for rec in (proposed, current):
        new = rec.recommended
        assert new.cpu_request_cores == new.cpu_limit_cores == node_cpu
        assert new.memory_request_bytes == new.memory_limit_bytes == node_memory // MIB * MIB
        rules = {rule.id: rule.text for rule in rec.rules}
        assert f"{node_cpu:g} cores" in rules["node-fit-capped"]

    # The same records without the inventory's facts: nothing caps them.
    bare = worker()
    spec = workload.spec.model_copy(update={"annotations": {}})
    assert bare.handle_spec(WORKLOAD.encode(), encode(spec), partition=0, offset=0) is None
    feed_heavy_usage(bare, container, first_offset=1)
    (free_set,) = bare.current_sets()
    (free,) = [r for r in free_set.recommendations if r.container == container]
    assert free.recommended.cpu_request_cores is not None
    assert free.recommended.cpu_request_cores > node_cpu
    assert "node-fit-capped" not in {rule.id for rule in free.rules}


def test_a_restarted_worker_still_caps_to_the_node() -> None:
    """The node fit is kept in the window's spec state, so a worker restored from its
    checkpoint caps as before without waiting for the inventory to republish."""
    (workload,) = [
        w
        for w in build_workloads(loaded_state(), cluster="prod", timestamp=NOW)
        if w.id == WORKLOAD
    ]
    ((node_cpu, _),) = workload.facts.node_fit
    container = workload.spec.containers[0].name
    processor = worker()
    assert (
        processor.handle_spec(WORKLOAD.encode(), encode(workload.spec), partition=0, offset=0)
        is None
    )
    feed_heavy_usage(processor, container, first_offset=1)
    store = processor.store
    restarted = worker()
    restarted.store = store
    key = WORKLOAD.encode()
    raw = batch(WORKLOAD, NOW + 70, {container: (6.0, 14 * GIB)})
    assert restarted.handle(key, raw, partition=0, offset=7) is None
    (rec_set,) = restarted.current_sets()
    (rec,) = [r for r in rec_set.recommendations if r.container == container]
    assert rec.recommended.cpu_request_cores == node_cpu


@settings(max_examples=60, deadline=None)
@given(
    live_set=st.integers(min_value=64 * MIB, max_value=24 * GIB),
    working_set=st.integers(min_value=256 * MIB, max_value=48 * GIB),
    node_fit=NODES.filter(lambda nodes: max(memory for _, memory in nodes) >= GIB),
    heap_sizing=st.sampled_from(["xmx", "ram-percentage"]),
)
def test_a_capped_jvm_limit_still_covers_heap_and_non_heap(
    live_set: int, working_set: int, node_fit: tuple[tuple[float, int], ...], heap_sizing: str
) -> None:
    jvm = {
        **STEADY_JVM,
        "live_set_bytes": live_set,
        "heap_used_after_gc_bytes": live_set,
        "max_heap_bytes": 2 * live_set,
        "heap_max_bytes": 2 * live_set,
        "heap_sizing": heap_sizing,
        "jvm_options": "-XX:MaxRAMPercentage=50.0" if heap_sizing != "xmx" else "",
    }
    window = window_of(FEW, cpu=1.0, mem=working_set, minutes=10, jvm=jvm)
    rec = size(window, FEW, node_fit)
    assert fits_one(rec, node_fit)
    assert_limit_covers_heap(rec, FEW)
