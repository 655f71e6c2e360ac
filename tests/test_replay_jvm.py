"""A trace's JVM columns reach the engine: in ``analyze``, ``backtest`` and the replay.

DESIGN's trace format has optional JVM columns (``jvm_heap_used_bytes``,
``jvm_heap_max_bytes``, ``jvm_nonheap_bytes``, ``jvm_gc_overhead_ratio``). Here:

- ``daytwo analyze`` on a trace with them recommends the heap with the limit
  (``jvm_max_heap_bytes``, rules ``jvm-limit-covers-heap`` and ``jvm-heap-with-limit``)
  for the JVM container, resting on the trace's own numbers (live-set peak, non-heap
  peak), and nothing JVM for the container without them; without the columns, the same
  rows give no heap at all;
- ``daytwo backtest`` feeds them to daytwo's engine (a higher limit than the working set
  alone asks for), while the baselines stay container-only;
- the replay's batches (JVM batch, then container batch, per instant) fed to an
  in-process :class:`~pipeline.processor.Processor` propose exactly what analyze reports
  (hypothesis, random JVM traces);
- the real path: ``daytwo agent --source replay`` (a child) into a real ``daytwo worker``
  publishes, for a single-container JVM trace, the recommendation analyze reports
  (values, rule ids, hash).
"""

from __future__ import annotations

import asyncio
import json
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from agents.replay import JVM_COLUMNS, read_trace, stream_trace, trace_scrapes
from pipeline.batch import analyze, backtest
from pipeline.core.profiles import BALANCED
from pipeline.errors import CollectorError, ConfigError
from pipeline.launch import start_child
from pipeline.metrics import WorkerMetrics
from pipeline.processor import Processor
from pipeline.topics import topic_names
from schemas.models import RecommendationSet
from tests.test_replay_nab import (
    CountingPublisher,
    assert_stream_matches_analyze,
    comparable,
    expected_from_analyze,
    last_sets,
    wait_for,
)
from tests.worker_helpers import (
    PARTITIONS,
    MemoryStore,
    free_port,
    is_embedded,
    metric_sum,
    read_all,
    recommendation_sets,
    running,
    scrape_metrics,
    worker_env,
)

MIB = 2**20
T0 = 1_750_000_000
JVM_WORKLOAD = "prod/shop/Deployment/checkout"
PLAIN_WORKLOAD = "prod/shop/Deployment/frontend"
#: Minutes, not days: a first proposal after 30 min of data, ticks every 2 min.
OVERRIDES: dict[str, float | int] = {
    "min_samples": 5,
    "evaluation_interval_seconds": 120.0,
    "decrease_min_history_seconds": 1800.0,
    "proposal_cooldown_seconds": 3600.0,
}
FAST = BALANCED.with_overrides(**OVERRIDES)


def jvm_trace(
    *, seconds: float = 5400.0, step: int = 30, seed: int = 3, plain: bool = True
) -> pl.DataFrame:
    """``checkout/app`` is a JVM: 1 GiB max heap, a live set and non-heap whose peaks come
    in the first three samples, a steady 1% GC overhead; ``frontend/web`` (with ``plain``)
    has the same container signals and null JVM columns. Both have a 2 GiB limit."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for index in range(int(seconds // step)):
        early = index < 3
        container = {
            "timestamp": T0 + index * step,
            "cpu_cores": round(0.3 + rng.uniform(-0.05, 0.05), 4),
            "memory_bytes": 700 * MIB + rng.randint(0, 8) * MIB,
            "cpu_limit_cores": 2.0,
            "memory_limit_bytes": 2048 * MIB,
        }
        rows.append(
            {
                **container,
                "workload": JVM_WORKLOAD,
                "container": "app",
                "jvm_heap_used_bytes": 400 * MIB if early else rng.randint(300, 390) * MIB,
                "jvm_heap_max_bytes": 1024 * MIB,
                "jvm_nonheap_bytes": 150 * MIB if early else rng.randint(130, 149) * MIB,
                "jvm_gc_overhead_ratio": 0.01,
            }
        )
        if plain:
            rows.append(
                {
                    **container,
                    "workload": PLAIN_WORKLOAD,
                    "container": "web",
                    **dict.fromkeys(JVM_COLUMNS),
                }
            )
    return pl.DataFrame(rows, infer_schema_length=None)


def analyzed(frame: pl.DataFrame, path: Path) -> dict[str, dict[str, Any]]:
    """analyze's json for ``frame`` (written to ``path``), by container name."""
    frame.write_csv(path)
    return {r["container"]: r for r in orjson.loads(analyze(path, FAST, "json"))}


def rule_ids(recommendation: dict[str, Any]) -> list[str]:
    return [rule["id"] for rule in recommendation["rules"]]


# -- analyze and backtest ----------------------------------------------------------------


def test_analyze_sizes_the_heap_with_the_limit_for_a_jvm_trace(tmp_path: Path) -> None:
    frame = jvm_trace()
    found = analyzed(frame, tmp_path / "jvm.csv")
    app, web = found["app"], found["web"]
    jvm_rows = frame.filter(pl.col("container") == "app")
    live_peak = jvm_rows["jvm_heap_used_bytes"].max()
    non_heap_peak = jvm_rows["jvm_nonheap_bytes"].max()
    assert isinstance(live_peak, int)
    assert isinstance(non_heap_peak, int)

    heap = app["recommended"]["jvm_max_heap_bytes"]
    assert heap is not None
    assert {"jvm-limit-covers-heap", "jvm-heap-with-limit"} <= set(rule_ids(app))
    # the heap rests on the trace's live set, the limit covers heap + the trace's non-heap
    assert heap >= live_peak
    assert app["recommended"]["memory_limit_bytes"] >= heap + non_heap_peak
    jvm = app["evidence"]["jvm"]
    assert jvm["live_set_peak_bytes"] == live_peak
    assert jvm["non_heap"]["metaspace_bytes"] == non_heap_peak
    assert jvm["non_heap"]["code_cache_bytes"] == 0  # inside the JMX non-heap figure
    assert jvm["heap_max_bytes"] == jvm_rows["jvm_heap_max_bytes"].max()
    assert app["current"]["jvm_max_heap_bytes"] == jvm_rows["jvm_heap_max_bytes"].max()
    assert app["jvm_options"]["java_tool_options"]
    # the container without JVM values gets nothing of the JVM
    assert web["recommended"]["jvm_max_heap_bytes"] is None
    assert not [rule for rule in rule_ids(web) if rule.startswith("jvm-")]
    # and without the columns the JVM container is sized as a plain one
    plain = analyzed(frame.drop(*JVM_COLUMNS), tmp_path / "plain.csv")["app"]
    assert plain["recommended"]["jvm_max_heap_bytes"] is None
    assert plain["recommended"]["memory_limit_bytes"] < heap + non_heap_peak


def test_backtest_feeds_the_jvm_columns_to_daytwo_only(tmp_path: Path) -> None:
    """Two days of 5-minute samples (the first day is warm-up): daytwo keeps the limit
    above heap + non-heap, which the working set alone would not ask for."""
    frame = jvm_trace(seconds=2 * 86_400, step=300, plain=False)
    with_jvm, without = tmp_path / "jvm.csv", tmp_path / "plain.csv"
    frame.write_csv(with_jvm)
    frame.drop(*JVM_COLUMNS).write_csv(without)
    results = backtest(with_jvm, FAST)["results"]
    plain_results = backtest(without, FAST)["results"]
    assert isinstance(results, dict)
    assert isinstance(plain_results, dict)
    live_peak = frame["jvm_heap_used_bytes"].max()
    non_heap_peak = frame["jvm_nonheap_bytes"].max()
    assert isinstance(live_peak, int)
    assert isinstance(non_heap_peak, int)
    jvm_limit = results["daytwo"]["mean_memory_limit_bytes"]
    plain_limit = plain_results["daytwo"]["mean_memory_limit_bytes"]
    heap_needed = live_peak / FAST.heap_live_set_target_share  # the heap the rules size
    assert jvm_limit >= heap_needed + non_heap_peak > plain_limit
    assert results["vpa"] == plain_results["vpa"]
    assert results["krr"] == plain_results["krr"]


def test_a_bad_jvm_value_is_reported_with_its_place(tmp_path: Path) -> None:
    frame = jvm_trace(seconds=600, plain=False)
    bad_time = T0 + 300
    over_one = frame.with_columns(
        pl.when(pl.col("timestamp") == bad_time)
        .then(1.5)
        .otherwise(pl.col("jvm_gc_overhead_ratio"))
        .alias("jvm_gc_overhead_ratio")
    )
    path = tmp_path / "bad.csv"
    over_one.write_csv(path)
    with pytest.raises(CollectorError, match=rf"{bad_time}\.0 for {JVM_WORKLOAD}:app.*invalid JVM"):
        analyze(path, FAST, "json")
    # a column of text: named at its first row
    text = frame.with_columns(pl.lit("lots").alias("jvm_heap_used_bytes"))
    text.write_csv(path)
    with pytest.raises(CollectorError, match=rf"{T0}\.0 for {JVM_WORKLOAD}:app.*finite number"):
        analyze(path, FAST, "json")


def test_a_replay_without_a_jvm_topic_refuses_a_jvm_trace() -> None:
    """Nothing of a trace is dropped silently: JVM values need somewhere to go."""
    frame = read_trace_frame(jvm_trace(seconds=300, plain=False))
    with pytest.raises(ConfigError, match=r"jvm_heap_used_bytes.*JVM samples topic"):
        asyncio.run(stream_trace(frame, CountingPublisher(), topic="t", speedup=1000.0))
    publisher = CountingPublisher()
    result = asyncio.run(
        stream_trace(frame, publisher, topic="t", jvm_topic="j", speedup=float("inf"))
    )
    assert result.jvm_batches == result.batches == frame.height == publisher.sent // 2


def read_trace_frame(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` as :func:`agents.replay.read_trace` returns it (with intervals)."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "trace.csv"
        frame.write_csv(path)
        return read_trace(path)


# -- the replay's batches into a processor == analyze ------------------------------------


@st.composite
def jvm_traces(draw: st.DrawFn) -> pl.DataFrame:
    """1-3 single-container workloads, minute samples with gaps; JVM values on every row,
    on some, or on none; non-heap present or absent; the max heap may change once (the
    window restarts its GC statistics then)."""
    rows: list[dict[str, Any]] = []
    jvm_mode = draw(st.sampled_from(["all", "some", "none"]))
    non_heap = draw(st.booleans())
    for index in range(draw(st.integers(1, 3))):
        points = draw(st.integers(3, 150))
        base = draw(st.floats(0.05, 2.0))
        live = draw(st.integers(50, 900)) * MIB
        heap_change_at = draw(st.integers(0, points))
        overhead = draw(st.sampled_from([0.0, 0.01, 0.04, 0.12]))
        t = float(T0 + draw(st.integers(0, 600)))
        for i in range(points):
            t += draw(st.sampled_from([60.0, 60.0, 60.0, 120.0]))
            has_jvm = jvm_mode == "all" or (jvm_mode == "some" and i % 4 != 1)
            row: dict[str, Any] = {
                "timestamp": t,
                "workload": f"prod/ns/Deployment/app-{index}",
                "container": "main",
                "cpu_cores": round(base * (1 + 0.1 * ((i * 7) % 5)), 4),
                "memory_bytes": live + 300 * MIB + (i % 13) * MIB,
                "memory_limit_bytes": 4096 * MIB,
                "jvm_heap_used_bytes": live - (i % 11) * MIB if has_jvm else None,
                "jvm_heap_max_bytes": (
                    (1024 if i < heap_change_at else 2048) * MIB if has_jvm else None
                ),
                "jvm_gc_overhead_ratio": overhead + 0.001 * (i % 3) if has_jvm else None,
                "jvm_nonheap_bytes": 120 * MIB + (i % 5) * MIB if has_jvm else None,
            }
            rows.append(row)
    frame = pl.DataFrame(rows, infer_schema_length=None)
    return frame if non_heap else frame.drop("jvm_nonheap_bytes")


def processor_sets(path: Path) -> list[RecommendationSet]:
    """Feed the replay's scrapes of ``path`` (JVM batch first, as the replay publishes
    them, encoded as on the wire) to a Processor; the sets it proposes, in order."""

    processor = Processor(
        profile=FAST,
        store=MemoryStore(),
        metrics=WorkerMetrics.create(CollectorRegistry()),
        clock=lambda: 1_800_000_000.0,
        source_topic="t.daytwo.container-samples.v1",
    )
    sets: list[RecommendationSet] = []
    for offset, scrape in enumerate(trace_scrapes(read_trace(path))):
        key = scrape.workload.encode()
        if scrape.jvm_batch is not None:
            letter = processor.handle_jvm(
                key, orjson.dumps(scrape.jvm_batch), partition=0, offset=offset
            )
            assert letter is None, letter
        letter = processor.handle(
            key, orjson.dumps(scrape.container_batch), partition=0, offset=offset
        )
        assert letter is None, letter
        sets.extend(processor.checkpoint())
    return sets


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(frame=jvm_traces())
def test_analyze_reports_what_the_processor_proposes_for_replayed_jvm_batches(
    frame: pl.DataFrame,
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "trace.csv"
        frame.write_csv(path)
        reported, fallback = expected_from_analyze(path, FAST)
        sets = processor_sets(path)
    assert_stream_matches_analyze(sets, reported, fallback)


def test_the_fixed_jvm_trace_is_proposed_with_its_heap_in_process(tmp_path: Path) -> None:
    """The trace of the integration test below, without a broker: proposals happen, the
    last one carries the heap, and it is analyze's."""
    path = tmp_path / "jvm.csv"
    jvm_trace(plain=False).write_csv(path)
    reported, fallback = expected_from_analyze(path, FAST)
    assert not fallback
    sets = processor_sets(path)
    assert_stream_matches_analyze(sets, reported, fallback)
    (member,) = last_sets(sets)[JVM_WORKLOAD].recommendations
    assert member.recommended.jvm_max_heap_bytes is not None


# -- the real path: daytwo agent --source replay into daytwo worker -------------------------

#: 1.5 h of trace at x1,000: 5.4 s of pacing. Paced on purpose: the worker consumes the
#: container and JVM topics with two independent Faust agents, so unpaced a whole trace
#: of one could be applied before the other; paced, the JVM samples trail by well under
#: the 30 min before a first proposal, and the trace's JVM signals reach their peaks in
#: its first samples, so the proposals do not depend on the interleaving.
SPEEDUP = 1000


def without_jvm_sample_count(recommendation: dict[str, Any]) -> dict[str, Any]:
    """The recommendation without ``evidence.jvm.samples``: how many JVM samples the
    worker had applied at the proposing tick depends on how the two topics interleaved."""
    copy = json.loads(json.dumps(recommendation))
    copy["evidence"]["jvm"].pop("samples")
    return dict(copy)


@pytest.mark.integration
def test_a_replayed_jvm_trace_through_a_real_worker_matches_analyze(
    kafka_bootstrap: str, make_topic_prefix: Callable[..., str], tmp_path: Path
) -> None:
    frame = jvm_trace(plain=False)
    path = tmp_path / "jvm.csv"
    frame.write_csv(path)
    reported, fallback = expected_from_analyze(path, FAST)
    assert not fallback
    expected = reported[JVM_WORKLOAD]
    assert expected["recommended"]["jvm_max_heap_bytes"] is not None

    prefix = make_topic_prefix(partitions_override=PARTITIONS)
    names = topic_names(prefix)
    metrics_port = free_port()
    env = worker_env(
        kafka_bootstrap,
        prefix,
        f"jvm-{prefix.rstrip('.')}",
        tmp_path / "worker",
        DAYTWO_PROFILE_OVERRIDES=json.dumps(OVERRIDES),  # what analyze uses: FAST
        DAYTWO_METRICS_PORT=str(metrics_port),
        DAYTWO_FLUSH_INTERVAL_SECONDS="1",
    )
    agent_env = {
        "DAYTWO_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "DAYTWO_TOPIC_PREFIX": prefix,
        "DAYTWO_SPOOL_DIR": str(tmp_path / "spool"),
        "DAYTWO_METRICS_PORT": "0",
        "DAYTWO_LOG_LEVEL": "INFO",
    }
    if is_embedded(kafka_bootstrap):
        agent_env["DAYTWO_BROKER_IS_EMBEDDED"] = "1"
    logs = tmp_path / "logs"
    with running(start_child("worker", ["worker"], env, logs)) as worker:
        wait_for(lambda: "Ready" in worker.log_tail(200), 60, worker)
        began = time.monotonic()
        agent = start_child(
            "agent",
            ["agent", "--source", "replay", "--trace", str(path), "--speedup", str(SPEEDUP)],
            agent_env,
            logs,
        )
        with running(agent):
            assert agent.process.wait(timeout=60) == 0, agent.log_tail(40)
        replay_seconds = time.monotonic() - began
        assert f"JVM: {frame.height} batches, {frame.height} samples" in agent.log_tail()

        def applied() -> bool:
            text = scrape_metrics(metrics_port)
            return (
                metric_sum(text, "daytwo_worker_samples_processed_total") >= frame.height
                and metric_sum(text, "daytwo_worker_jvm_samples_processed_total") >= frame.height
            )

        wait_for(applied, 60, worker)
        time.sleep(3.0)  # three flush intervals: the last proposals are sent
        assert metric_sum(scrape_metrics(metrics_port), "daytwo_worker_sizing_errors_total") == 0
        sets = recommendation_sets(
            read_all(kafka_bootstrap, names.recommendations, at_least=1, timeout=30)
        )
    print(f"\nreplay x{SPEEDUP} incl. agent start-up: {replay_seconds:.2f} s")
    (member,) = last_sets(sets)[JVM_WORKLOAD].recommendations
    published = member.model_dump(mode="json")
    assert comparable(published) == comparable(expected)
    assert without_jvm_sample_count(published) == without_jvm_sample_count(expected)
    assert {"jvm-limit-covers-heap", "jvm-heap-with-limit"} <= set(rule_ids(published))
