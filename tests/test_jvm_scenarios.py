"""Acceptance: a JVM and its container are sized together, with real JVMs in real cgroups.

Each scenario runs ``pipeline/demo/Allocator.java`` (a known live set and allocation rate)
in a throw-away cgroup v1 group with a memory limit and a CFS quota, with unified GC
logging on. Every ~0.5 s the cgroup is scraped by :class:`agents.collector.ContainerCollector`
and the GC log by :class:`agents.jvm_collector.JvmCollector` (flags from the
``java_options`` via PrintFlagsFinal, as the agent does); the encoded messages go to a
:class:`pipeline.processor.Processor` in-process (no broker: fast), and the recommendation
of its checkpoint is asserted on. Real JVM timing is noisy, so the assertions are on
directions and invariants, never on exact numbers::

    t=0   create cgroup, baseline scrape     t≈1  JVM "ready"       t≈N  checkpoint()
          spawn java in it                         scrape, feed, ...        assert

(a) heap and limit far above use   -> heap and limit both decrease, limit ≥ heap + non-heap
(b) heap close to the live set, GC-bound -> heap and limit increase under GC pressure
(c) limit below heap + non-heap, kernel OOM kill -> limit raised to fit the heap, OOM rule
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from agents.cgroup_admin import V1Cgroup, create_v1_cgroup, remove_v1_cgroup, spawn_in_cgroup
from agents.collector import ContainerCollector
from agents.jvm_collector import JvmCollector
from agents.jvm_mapping import parse_jvm_mapping
from agents.mapping import parse_mapping
from pipeline.core.jvm import max_heap_option
from pipeline.core.profiles import Profile, get_profile
from pipeline.core.quantity import round_up_memory
from pipeline.demo.jvm import allocator_argv, compile_allocator
from pipeline.launch import start_child, wait_for_records
from pipeline.metrics import WorkerMetrics
from pipeline.processor import Processor
from pipeline.topics import topic_names
from schemas.models import JvmFlags, JvmSample, JvmSampleBatch, Recommendation
from schemas.validate import encode
from tests.cgroup_helpers import MIB, requires_v1_cgroups, unique_cgroup_path, wait_for_line
from tests.worker_helpers import (
    PARTITIONS,
    MemoryStore,
    died,
    free_port,
    metric_sum,
    produce,
    recommendation_sets,
    running,
    scrape_metrics,
    worker_env,
)

pytestmark = pytest.mark.integration

CLUSTER = "local"
WORKLOAD = "local/shop/Deployment/jvm-app"
CONTAINER = "app"
SCRAPE_SECONDS = 0.5
MIN_SAMPLES = 16
JVM_MIN_SAMPLES = 10
READY_TIMEOUT_SECONDS = 15.0
SCENARIO_TIMEOUT_SECONDS = 30.0
#: A small min_samples so a scenario needs ~10 s of scrapes; everything else is balanced.
PROFILE = get_profile("balanced").with_overrides(
    min_samples=MIN_SAMPLES, decrease_min_history_seconds=0.0
)


@dataclass
class ScenarioRun:
    """What a scenario observed: the recommendation and the samples behind it."""

    recommendation: Recommendation
    container_samples: list[dict[str, Any]]
    jvm_samples: list[dict[str, Any]]
    jvm_exit_code: int | None


@pytest.fixture(scope="module")
def allocator_classpath(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The allocator, compiled once for the module (javac takes about a second)."""
    return compile_allocator(tmp_path_factory.mktemp("allocator"))


@contextmanager
def _jvm_cgroup(memory_limit_bytes: int, cpu_limit_cores: float) -> Iterator[V1Cgroup]:
    group = create_v1_cgroup(
        unique_cgroup_path("daytwo-jvm"),
        cpu_limit_cores=cpu_limit_cores,
        memory_limit_bytes=memory_limit_bytes,
    )
    try:
        yield group
    finally:
        remove_v1_cgroup(group, timeout_seconds=10.0)


def run_scenario(
    tmp_path: Path,
    classpath: Path,
    *,
    java_options: list[str],
    memory_limit_bytes: int,
    cpu_limit_cores: float,
    live_mib: float,
    alloc_mib_per_s: float,
    expect_ready: bool = True,
    profile: Profile = PROFILE,
) -> ScenarioRun:
    """Run the allocator in a fresh cgroup, scrape and process until a recommendation.

    The cgroup is scraped once before the JVM starts (the collector's baseline), so an
    OOM kill during start-up is still seen as an increase of the cgroup's counter.
    """
    gc_log = tmp_path / "gc.log"
    registry = CollectorRegistry()
    processor = Processor(
        profile=profile,
        store=MemoryStore(),
        metrics=WorkerMetrics.create(registry),
        clock=time.time,
        source_topic="daytwo.container-samples.v1",
    )
    container_samples: list[dict[str, Any]] = []
    jvm_samples: list[dict[str, Any]] = []
    with _jvm_cgroup(memory_limit_bytes, cpu_limit_cores) as group:
        cgroups = ContainerCollector(
            parse_mapping(
                f"cluster: {CLUSTER}\ncgroups:\n  - path: {group.relative_path}\n"
                f"    workload: {WORKLOAD}\n    container: {CONTAINER}\n"
            ),
            agent="test",
        )
        jvms = JvmCollector(
            parse_jvm_mapping(
                orjson.dumps(
                    {
                        "cluster": CLUSTER,
                        "jvms": [
                            {
                                "workload": WORKLOAD,
                                "container": CONTAINER,
                                "gc_log": str(gc_log),
                                "java_options": " ".join(java_options),
                            }
                        ],
                    }
                ).decode()
            ),
            agent="test",
        )
        assert cgroups.messages(time.time()) == []  # baseline
        argv = allocator_argv(
            classpath,
            java_options=java_options,
            gc_log=gc_log,
            live_mib=live_mib,
            alloc_mib_per_s=alloc_mib_per_s,
            seconds=0,
        )
        process = spawn_in_cgroup(group, argv, stdout=subprocess.PIPE)
        try:
            if expect_ready:
                wait_for_line(process, "ready", READY_TIMEOUT_SECONDS)
            offset = 0
            next_scrape = time.monotonic()
            give_up = next_scrape + SCENARIO_TIMEOUT_SECONDS
            while len(container_samples) < MIN_SAMPLES or len(jvm_samples) < JVM_MIN_SAMPLES:
                if time.monotonic() > give_up:
                    pytest.fail(
                        f"only {len(container_samples)} container and {len(jvm_samples)} JVM "
                        f"samples after {SCENARIO_TIMEOUT_SECONDS} s"
                    )
                next_scrape += SCRAPE_SECONDS
                time.sleep(max(0.0, next_scrape - time.monotonic()))
                now = time.time()
                for message in cgroups.messages(now):
                    assert (
                        processor.handle(message.key, message.value, partition=0, offset=offset)
                        is None
                    )
                    container_samples.extend(orjson.loads(message.payload)["samples"])
                    offset += 1
                for message in jvms.messages(now):
                    assert (
                        processor.handle_jvm(message.key, message.value, partition=0, offset=offset)
                        is None
                    )
                    jvm_samples.extend(orjson.loads(message.payload)["samples"])
                    offset += 1
            exit_code = process.poll()
        finally:
            process.kill()
            process.wait(timeout=10)
            assert process.stdout is not None
            process.stdout.close()
            jvms.close()
    processor.checkpoint()
    # The recommendation from all the scenario's data (a proposal may have come earlier,
    # from less of it: the hysteresis decides when to publish, not what is right).
    sets = processor.current_sets()
    assert len(sets) == 1, sets
    (recommendation,) = sets[0].recommendations
    return ScenarioRun(recommendation, container_samples, jvm_samples, exit_code)


def _rule_ids(recommendation: Recommendation) -> list[str]:
    return [rule.id for rule in recommendation.rules]


def _rule_text(recommendation: Recommendation, rule_id: str) -> str:
    return next(rule.text for rule in recommendation.rules if rule.id == rule_id)


def _assert_limit_covers_heap(recommendation: Recommendation) -> tuple[int, int]:
    """The invariant of every JVM recommendation; returns (recommended heap, limit)."""
    new = recommendation.recommended
    jvm = recommendation.evidence.jvm
    assert jvm is not None, "a JVM container without evidence.jvm"
    assert jvm.samples >= JVM_MIN_SAMPLES
    assert new.jvm_max_heap_bytes is not None, "heap not recommended with the limit"
    assert new.memory_limit_bytes is not None
    assert jvm.non_heap is not None
    assert jvm.margin_bytes is not None
    needed = new.jvm_max_heap_bytes + jvm.non_heap.total_bytes + jvm.margin_bytes
    assert new.memory_limit_bytes >= needed
    assert "jvm-limit-covers-heap" in _rule_ids(recommendation)
    # The JAVA_TOOL_OPTIONS value is ready to paste and says the same heap.
    options = recommendation.jvm_options
    assert options is not None
    assert max_heap_option(new.jvm_max_heap_bytes) in options.java_tool_options.split()
    assert options.java_tool_options in _rule_text(recommendation, "jvm-heap-with-limit")
    return new.jvm_max_heap_bytes, new.memory_limit_bytes


@pytest.mark.cgroup
@requires_v1_cgroups
def test_oversized_heap_and_limit_both_shrink_and_still_fit(
    tmp_path: Path, allocator_classpath: Path
) -> None:
    """(a) -Xmx768m in a 1 GiB container holding ~30 MiB live: heap and limit decrease.

    ``G1PeriodicGCInterval`` makes an idle G1 run a concurrent cycle each second (as
    containers often configure it to give memory back), which is what measures the live
    set of a JVM whose heap never fills up.
    """
    heap_in_force = 768 * MIB
    limit_in_force = 1024 * MIB
    run = run_scenario(
        tmp_path,
        allocator_classpath,
        java_options=["-Xmx768m", "-XX:+UseG1GC", "-XX:G1PeriodicGCInterval=1000"],
        memory_limit_bytes=limit_in_force,
        cpu_limit_cores=1.0,
        live_mib=30,
        alloc_mib_per_s=2,
    )
    rec = run.recommendation
    assert run.jvm_exit_code is None, "the JVM died during the scenario"
    assert rec.current.jvm_max_heap_bytes == heap_in_force
    assert rec.current.memory_limit_bytes == limit_in_force
    heap, limit = _assert_limit_covers_heap(rec)
    assert heap < heap_in_force
    assert limit < limit_in_force
    jvm = rec.evidence.jvm
    assert jvm is not None
    assert jvm.live_set_peak_bytes is not None
    assert heap >= jvm.live_set_peak_bytes  # shrunk, but never below what is live
    ids = _rule_ids(rec)
    assert "jvm-heap-with-limit" in ids
    assert "jvm-heap-live-set" in ids
    assert rec.jvm_options is not None
    assert "-Xmx768m" not in rec.jvm_options.java_tool_options
    assert "-XX:G1PeriodicGCInterval=1000" in rec.jvm_options.java_tool_options


@pytest.mark.cgroup
@requires_v1_cgroups
def test_gc_bound_heap_grows_together_with_its_limit(
    tmp_path: Path, allocator_classpath: Path
) -> None:
    """(b) -Xmx96m with ~60 MiB live and 100 MiB/s of garbage: heap and limit increase."""
    heap_in_force = 96 * MIB
    limit_in_force = 256 * MIB
    run = run_scenario(
        tmp_path,
        allocator_classpath,
        java_options=["-Xmx96m", "-XX:+UseG1GC"],
        memory_limit_bytes=limit_in_force,
        cpu_limit_cores=1.0,
        live_mib=60,
        alloc_mib_per_s=100,
    )
    rec = run.recommendation
    assert run.jvm_exit_code is None, "the JVM died during the scenario"
    assert rec.current.jvm_max_heap_bytes == heap_in_force
    heap, limit = _assert_limit_covers_heap(rec)
    assert heap > heap_in_force
    assert limit > limit_in_force
    jvm = rec.evidence.jvm
    assert jvm is not None
    assert jvm.live_set_peak_bytes is not None
    # The pressure the rule reacts to was really there: the live set fills most of the
    # heap (or GC takes more than the ceiling), so no rule may shrink it.
    overhead = jvm.gc_overhead_p95_ratio or 0.0
    assert (
        jvm.live_set_peak_bytes > PROFILE.heap_live_set_max_share * heap_in_force
        or overhead > PROFILE.gc_overhead_ceiling
    )
    assert "jvm-no-heap-decrease-under-gc-pressure" in _rule_ids(rec)


@pytest.mark.cgroup
@requires_v1_cgroups
def test_oom_killed_jvm_gets_a_limit_that_fits_its_heap(
    tmp_path: Path, allocator_classpath: Path
) -> None:
    """(c) -Xmx512m in a 200 MiB container: the kernel OOM-kills the JVM building its
    400 MiB live set; the limit is raised and heap + non-heap fit inside it."""
    heap_in_force = 512 * MIB
    limit_in_force = 200 * MIB
    run = run_scenario(
        tmp_path,
        allocator_classpath,
        java_options=["-Xmx512m", "-XX:+UseG1GC"],
        memory_limit_bytes=limit_in_force,
        cpu_limit_cores=1.0,
        live_mib=400,
        alloc_mib_per_s=50,
        expect_ready=False,
    )
    rec = run.recommendation
    assert run.jvm_exit_code == -signal.SIGKILL, "the JVM was not killed by the kernel"
    assert sum(sample["oom_kills"] or 0 for sample in run.container_samples) >= 1
    assert rec.evidence.oom_kills is not None
    assert rec.evidence.oom_kills >= 1
    assert rec.current.jvm_max_heap_bytes == heap_in_force
    heap, limit = _assert_limit_covers_heap(rec)
    assert limit > limit_in_force
    assert limit >= max(
        limit_in_force * PROFILE.oom_memory_raise_factor,
        limit_in_force + PROFILE.oom_memory_raise_min_bytes,
    )
    assert heap < limit
    # killed while still building its live set: the heap is kept, the limit fits it
    assert heap == heap_in_force
    assert "jvm-no-heap-decrease-after-oom" in _rule_ids(rec)
    assert "oom-raise-memory" in _rule_ids(rec)
    assert "jvm-heap-with-limit" in _rule_ids(rec)
    assert rec.risk == "high"


def _kafka_jvm_batch(ts: float) -> bytes:
    """A JVM batch as the JVM agent publishes it (built and encoded through the contract)."""
    return encode(
        JvmSampleBatch(
            source="gclog",
            agent="node-1",
            workload=KAFKA_WORKLOAD,
            timestamp=ts,
            samples=(
                JvmSample(
                    container=CONTAINER,
                    timestamp=ts,
                    interval_seconds=10.0,
                    collector="G1",
                    gc_overhead_ratio=0.01,
                    gc_pause_seconds=0.1,
                    gc_pause_max_seconds=0.02,
                    gc_count=5,
                    full_gc_count=0,
                    heap_committed_bytes=512 * MIB,
                    heap_max_bytes=KAFKA_HEAP_BYTES,
                    live_set_bytes=KAFKA_LIVE_SET_BYTES,
                    allocation_rate_bytes_per_second=20.0 * MIB,
                    metaspace_used_bytes=60 * MIB,
                    flags=JvmFlags(
                        max_heap_bytes=KAFKA_HEAP_BYTES, heap_sizing="xmx", collector="G1"
                    ),
                    jvm_options="-Xmx1g -XX:+UseG1GC",
                ),
            ),
        )
    )


def _kafka_container_batch(ts: float) -> bytes:
    return orjson.dumps(
        {
            "schema_version": 1,
            "kind": "container-sample-batch",
            "source": "cgroup",
            "agent": "node-1",
            "workload": KAFKA_WORKLOAD,
            "timestamp": ts,
            "samples": [
                {
                    "container": CONTAINER,
                    "timestamp": ts,
                    "interval_seconds": 10.0,
                    "cpu_usage_cores": 0.2,
                    "memory_working_set_bytes": 700 * MIB,
                    "memory_limit_bytes": 2048 * MIB,
                    "cpu_limit_cores": 1.0,
                }
            ],
        }
    )


KAFKA_WORKLOAD = "prod/shop/Deployment/jvm-checkout"
KAFKA_HEAP_BYTES = 1024 * MIB
KAFKA_LIVE_SET_BYTES = 300 * MIB
KAFKA_BATCHES = 12


def test_worker_consumes_jvm_samples_topic_into_the_recommendation(
    kafka_bootstrap: str, make_topic_prefix: Callable[..., str], tmp_path: Path
) -> None:
    """A real ``daytwo worker`` reads ``daytwo.jvm-samples.v1`` next to the container
    topic and sizes the container with its JVM: evidence.jvm is filled from the JVM
    batches, and the heap is recommended with the limit."""
    prefix = make_topic_prefix(partitions_override=PARTITIONS)
    names = topic_names(prefix)
    t0 = time.time() - 10 * KAFKA_BATCHES
    metrics_port = free_port()
    env = worker_env(
        kafka_bootstrap,
        prefix,
        f"jvm-{prefix.rstrip('.')}",
        tmp_path / "data",
        DAYTWO_MIN_SAMPLES="10",
        DAYTWO_FLUSH_INTERVAL_SECONDS="1",
        DAYTWO_METRICS_PORT=str(metrics_port),
    )

    def has_jvm_evidence(records: list[tuple[bytes | None, bytes | None]]) -> bool:
        return any(
            rec.evidence.jvm is not None and rec.evidence.jvm.samples == KAFKA_BATCHES
            for rec_set in recommendation_sets(records)
            for rec in rec_set.recommendations
        )

    with running(start_child("worker", ["worker"], env, tmp_path / "logs")) as worker:
        key = KAFKA_WORKLOAD.encode()
        produce(
            kafka_bootstrap,
            names.jvm_samples,
            [(key, _kafka_jvm_batch(t0 + 10 * i)) for i in range(KAFKA_BATCHES)],
        )
        # Proposals are made as container samples arrive: let the JVM ones land first, so
        # the proposal rests on all of them (the two topics are consumed independently).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not died(worker):
            try:
                applied = metric_sum(
                    scrape_metrics(metrics_port), "daytwo_worker_jvm_samples_processed_total"
                )
            except OSError:
                applied = 0.0
            if applied >= KAFKA_BATCHES:
                break
            time.sleep(0.2)
        produce(
            kafka_bootstrap,
            names.container_samples,
            [(key, _kafka_container_batch(t0 + 10 * i)) for i in range(KAFKA_BATCHES)],
        )
        records = wait_for_records(
            kafka_bootstrap,
            names.recommendations,
            until=has_jvm_evidence,
            timeout=60,
            alive=lambda: died(worker),
        )
    recs = [
        rec
        for rec_set in recommendation_sets(records)
        for rec in rec_set.recommendations
        if rec.evidence.jvm is not None and rec.evidence.jvm.samples == KAFKA_BATCHES
    ]
    assert recs, f"no recommendation with the JVM evidence; worker log:\n{worker.log_tail(40)}"
    rec = recs[-1]
    jvm = rec.evidence.jvm
    assert jvm is not None
    assert jvm.live_set_peak_bytes == KAFKA_LIVE_SET_BYTES
    assert jvm.heap_max_bytes == KAFKA_HEAP_BYTES
    assert jvm.collector == "G1"
    assert rec.current.jvm_max_heap_bytes == KAFKA_HEAP_BYTES
    # live set / heap_live_set_target_share, with GC overhead under the ceiling
    assert rec.recommended.jvm_max_heap_bytes == round_up_memory(
        KAFKA_LIVE_SET_BYTES / get_profile("balanced").heap_live_set_target_share
    )
    _assert_limit_covers_heap(rec)
