"""The Prometheus source against a real Prometheus holding backfilled, known history.

Acceptance (issue 6, line 1): 7 days x 200 containers of cAdvisor / kube-state-metrics
series generated with a seed, backfilled with ``promtool tsdb create-blocks-from
openmetrics``, served by a real ``prometheus`` on 127.0.0.1; the samples the source emits
equal the generated ones, rate semantics included (see agents/prometheus.py).

Smaller tests use 6 hours x 30 containers plus a hand-written scenario (counter reset,
a counter that starts near 0, an OOM kill seen by kube-state-metrics).
"""

from __future__ import annotations

import base64
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from agents.prometheus import (
    PrometheusAuth,
    PrometheusMetrics,
    PrometheusSource,
    PrometheusSourceConfig,
    PromQLClient,
    QueryBudget,
)
from pipeline.errors import CollectorError, ConfigError
from schemas.models import ContainerSampleBatch
from schemas.validate import decode_container_batch
from tests.prom_helpers import (
    DEFAULT_START,
    GeneratedCluster,
    PrometheusServer,
    backfill,
    build_prometheus,
    free_port,
    generate_cluster,
    prometheus_available,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not prometheus_available(),
        reason="needs Debian's prometheus: apt-get install -y prometheus",
    ),
]

CLUSTER = "prod"
STEP = 300.0  # evaluation step = scrape interval of the generated history
WINDOW = STEP + STEP / 2  # the source's rate window: step + scrape interval / 2


def source_config(**overrides: Any) -> PrometheusSourceConfig:
    """The configuration every test uses (5-minute steps over a 5-minute scrape grid)."""
    settings: dict[str, Any] = {
        "cluster": CLUSTER,
        "step_seconds": STEP,
        "scrape_interval_seconds": STEP,
    }
    settings.update(overrides)
    return PrometheusSourceConfig(**settings)


# --------------------------------------------------------------------------- expectations


def prometheus_rate(previous: float, current: float) -> float:
    """``rate(x[W])`` at a grid point whose window holds exactly ``previous`` and ``current``.

    The documented semantics, written out independently of the source: growth (a counter
    that went down restarted from 0, so its new value is the growth), extrapolated by
    ``s/2`` towards the window start unless the counter's zero point is closer, over W.
    """
    growth = current - previous if current >= previous else current
    to_start = STEP / 2
    if growth > 0 and previous >= 0:
        to_start = min(to_start, STEP * previous / growth)
    return growth * (STEP + to_start) / STEP / WINDOW


def _max_optional(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else max(a, b)


SampleKey = tuple[str, float]  # workload id, timestamp
Samples = dict[SampleKey, dict[str, dict[str, Any]]]


def expected_samples(cluster: GeneratedCluster) -> Samples:
    """What the source must emit for the generated history, replicas merged by name."""
    expected: Samples = {}
    for c in cluster.containers:
        workload = f"{CLUSTER}/{c.workload}"
        for index in range(c.first + 1, c.last + 1):
            now, before = index - c.first, index - c.first - 1
            ratio: float | None = None
            if c.periods is not None and c.throttled_periods is not None:
                periods = prometheus_rate(c.periods[before], c.periods[now])
                throttled = prometheus_rate(c.throttled_periods[before], c.throttled_periods[now])
                ratio = min(1.0, throttled / periods) if periods > 0 else 0.0
            spec = c.spec_at(index)
            sample: dict[str, Any] = {
                "cpu_usage_cores": prometheus_rate(c.cpu_seconds[before], c.cpu_seconds[now]),
                "memory_working_set_bytes": int(c.memory_bytes[now]),
                "cpu_throttled_ratio": ratio,
                "oom_kills": round(prometheus_rate(c.oom_events[before], c.oom_events[now]) * STEP),
                "cpu_limit_cores": spec.cpu_limit,
                "memory_limit_bytes": spec.memory_limit,
            }
            containers = expected.setdefault((workload, float(cluster.time_of(index))), {})
            other = containers.get(c.container)
            if other is None:
                containers[c.container] = sample
                continue
            for name in ("cpu_usage_cores", "memory_working_set_bytes"):
                other[name] = max(other[name], sample[name])
            for name in ("cpu_throttled_ratio", "cpu_limit_cores", "memory_limit_bytes"):
                other[name] = _max_optional(other[name], sample[name])
            other["oom_kills"] += sample["oom_kills"]
    return expected


def emitted_samples(batches: Iterable[ContainerSampleBatch]) -> Samples:
    """The same shape from the source's batches; checks the batch envelope on the way."""
    emitted: Samples = {}
    for batch in batches:
        assert batch.source == "prometheus"
        key = (batch.workload, batch.timestamp)
        assert key not in emitted, f"two batches for {key}"
        containers = emitted[key] = {}
        for sample in batch.samples:
            assert sample.timestamp == batch.timestamp
            assert sample.interval_seconds == STEP
            assert sample.container not in containers
            containers[sample.container] = {
                "cpu_usage_cores": sample.cpu_usage_cores,
                "memory_working_set_bytes": sample.memory_working_set_bytes,
                "cpu_throttled_ratio": sample.cpu_throttled_ratio,
                "oom_kills": sample.oom_kills,
                "cpu_limit_cores": sample.cpu_limit_cores,
                "memory_limit_bytes": sample.memory_limit_bytes,
            }
    return emitted


def differences(expected: Samples, emitted: Samples) -> list[str]:
    """Human-readable mismatches (floats compared within 1e-9, the rest exactly)."""
    problems: list[str] = []
    missing = sorted(set(expected) - set(emitted))
    extra = sorted(set(emitted) - set(expected))
    problems += [f"missing batch {key}" for key in missing[:5]]
    problems += [f"unexpected batch {key}" for key in extra[:5]]
    for key in sorted(set(expected) & set(emitted)):
        want, got = expected[key], emitted[key]
        if set(want) != set(got):
            problems.append(f"{key}: containers {sorted(got)} != {sorted(want)}")
            continue
        for container, fields in want.items():
            for name, value in fields.items():
                actual = got[container][name]
                if isinstance(value, float) and name in {"cpu_usage_cores", "cpu_throttled_ratio"}:
                    same = actual is not None and math.isclose(
                        actual, value, rel_tol=1e-9, abs_tol=1e-12
                    )
                else:
                    same = actual == value
                if not same:
                    problems.append(f"{key} {container}.{name}: {actual!r} != {value!r}")
    return problems


# --------------------------------------------------------------------------- fixtures


@dataclass
class Served:
    """A generated cluster and the real Prometheus serving it."""

    cluster: GeneratedCluster
    server: PrometheusServer
    timings: dict[str, float]


def _serve(
    cluster: GeneratedCluster, root: Path, extra_files: Iterable[Path] = ()
) -> Iterator[Served]:
    timings = build_prometheus(cluster, root)
    extra = list(extra_files)
    if extra:
        backfill(extra, root / "tsdb")
    server = PrometheusServer(tsdb=root / "tsdb", workdir=root)
    began = time.perf_counter()
    server.start()
    timings["prometheus_start"] = time.perf_counter() - began
    try:
        yield Served(cluster, server, timings)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def week(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """7 days x 200 containers, 5-minute scrapes, backfilled and served."""
    began = time.perf_counter()
    cluster = generate_cluster(seed=6, containers=200, hours=7 * 24)
    generated = time.perf_counter() - began
    for served in _serve(cluster, tmp_path_factory.mktemp("prom-week")):
        served.timings["generate"] = generated
        yield served


#: The hand-written scenario lives one day before the generated clusters (its own blocks).
HANDMADE_START = DEFAULT_START - 86_400
HANDMADE_SERIES: dict[str, list[float]] = {
    # reset-0: the container restarts between index 2 and 3; its counter starts again.
    #   index      0     1     2     3    4    5
    #   counter  1000  1030  1060   18   48   78
    #   cores      -   0.1   0.1  0.06 0.1  0.1   (18 s of CPU in the reset interval)
    'container_cpu_usage_seconds_total{namespace="handmade",pod="reset-0",container="app"}': [
        1000,
        1030,
        1060,
        18,
        48,
        78,
    ],
    'container_memory_working_set_bytes{namespace="handmade",pod="reset-0",container="app"}': [
        104857600
    ]
    * 6,
    'container_oom_events_total{namespace="handmade",pod="reset-0",container="app"}': [0] * 6,
    # kube-state-metrics sees the restart, and that it was an OOM kill
    'kube_pod_container_status_restarts_total{namespace="handmade",pod="reset-0",'
    'container="app"}': [0, 0, 0, 1, 1, 1],
    'kube_pod_container_status_last_terminated_reason{namespace="handmade",pod="reset-0",'
    'container="app",reason="OOMKilled"}': [0, 0, 0, 1, 1, 1],
    'kube_pod_owner{namespace="handmade",pod="reset-0",owner_kind="StatefulSet",'
    'owner_name="reset",owner_is_controller="true"}': [1] * 6,
}
#: fresh-1-abcde: a CronJob's pod scraped from index 3 with 2 s of CPU already used:
#   index      3    4    5
#   counter    2   32   62
#   cores      -  (30 + 2) / 450 = 0.0711 (zero-point clamp)   0.1
HANDMADE_FRESH: dict[str, list[float]] = {
    'container_cpu_usage_seconds_total{namespace="handmade",pod="fresh-1-abcde",container="job"}': [
        2,
        32,
        62,
    ],
    'container_memory_working_set_bytes{namespace="handmade",pod="fresh-1-abcde",'
    'container="job"}': [52428800] * 3,
    'container_oom_events_total{namespace="handmade",pod="fresh-1-abcde",container="job"}': [0] * 3,
    'kube_pod_owner{namespace="handmade",pod="fresh-1-abcde",owner_kind="Job",'
    'owner_name="fresh-1",owner_is_controller="true"}': [1] * 3,
    'kube_job_owner{namespace="handmade",job_name="fresh-1",owner_kind="CronJob",'
    'owner_name="fresh",owner_is_controller="true"}': [1] * 3,
}


def write_handmade(path: Path) -> Path:
    """The hand-written scenario as OpenMetrics (untyped families, 5-minute grid)."""
    lines: list[str] = []
    for series, first_index in ((HANDMADE_SERIES, 0), (HANDMADE_FRESH, 3)):
        for name, values in series.items():
            for offset, value in enumerate(values):
                timestamp = HANDMADE_START + (first_index + offset) * int(STEP)
                lines.append(f"{name} {value} {timestamp}\n")
    # OpenMetrics wants each family's lines together
    lines.sort(key=lambda line: line.split("{", 1)[0])
    path.write_text("".join(lines) + "# EOF\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """6 hours x 30 containers plus the hand-written scenario, served."""
    root = tmp_path_factory.mktemp("prom-small")
    cluster = generate_cluster(seed=7, containers=30, hours=6)
    handmade = write_handmade(root / "handmade.om")
    yield from _serve(cluster, root, [handmade])


# --------------------------------------------------------------------------- acceptance


def test_week_of_history_equals_what_was_generated(week: Served) -> None:
    cluster = week.cluster
    began = time.perf_counter()
    with PromQLClient(week.server.url) as client:
        source = PrometheusSource(client, source_config())
        batches = list(source.backfill(cluster.start, cluster.end))
        queries, series = client.queries_issued, client.series_returned
    week.timings["source_backfill"] = time.perf_counter() - began

    began = time.perf_counter()
    expected = expected_samples(cluster)
    emitted = emitted_samples(batches)
    problems = differences(expected, emitted)
    week.timings["compare"] = time.perf_counter() - began
    print(  # the timings the issue asks to report (visible with -s)
        "\nweek timings (s):",
        {name: round(seconds, 2) for name, seconds in week.timings.items()},
        f"queries={queries} series={series} batches={len(batches)}",
        f"samples={sum(len(b.samples) for b in batches)}",
    )
    assert not problems, f"{len(problems)} differences, first: {problems[:10]}"

    # the run covered what it should: 7 days of steps, every kind of owner, 200 containers
    timestamps = {t for _, t in emitted}
    assert len(timestamps) == cluster.points - 1  # the first grid point has no rate yet
    kinds = {workload.split("/")[2] for workload, _ in emitted}
    assert kinds == {"Deployment", "StatefulSet", "DaemonSet", "CronJob"}
    assert cluster.concurrent_containers >= 200


def test_rate_semantics_match_the_generators_per_interval_rates(week: Served) -> None:
    """Where no edge applies, the documented rate is the generator's own per-interval rate;
    the edges (counter resets, the zero-point clamp) both occur in the week's history."""
    clamped = resets = plain = 0
    for c in week.cluster.containers:
        for now in range(1, c.last - c.first + 1):
            previous, current = c.cpu_seconds[now - 1], c.cpu_seconds[now]
            growth = current - previous if current >= previous else current
            if c.first + now in c.resets:
                resets += 1
                # restarted right after the previous scrape: the new value is the growth
                assert math.isclose(prometheus_rate(previous, current), current / STEP)
            elif previous < growth / 2:
                clamped += 1
                assert math.isclose(
                    prometheus_rate(previous, current), (growth + previous) / WINDOW
                )
            else:
                plain += 1
                assert math.isclose(
                    prometheus_rate(previous, current),
                    c.cpu_rates[now],
                    rel_tol=1e-9,
                    abs_tol=1e-12,
                )
    assert resets > 10
    assert clamped > 10
    assert plain > 100 * clamped


def test_workload_specs_equal_the_generated_requests_and_limits(week: Served) -> None:
    cluster = week.cluster
    for index in (400, 1600):  # before and after every generated spec change
        at = float(cluster.time_of(index))
        expected: dict[str, tuple[set[str], dict[str, list[Any]]]] = {}
        for c in cluster.containers:
            # visible within Prometheus's 5-minute lookback: scraped at index or index - 1
            if not c.first <= index <= c.last + 1:
                continue
            spec = c.spec_at(min(index, c.last))
            pods, containers = expected.setdefault(f"{CLUSTER}/{c.workload}", (set(), {}))
            pods.add(c.pod)
            values = [spec.cpu_request, spec.cpu_limit, spec.memory_request, spec.memory_limit]
            if c.container in containers:
                values = [
                    _max_optional(a, b)
                    for a, b in zip(containers[c.container], values, strict=True)
                ]
            containers[c.container] = values
        with PromQLClient(week.server.url) as client:
            specs = PrometheusSource(client, source_config()).workload_specs(at)
        got = {
            spec.workload: (
                spec.replicas,
                {
                    c.name: [
                        c.cpu_request_cores,
                        c.cpu_limit_cores,
                        c.memory_request_bytes,
                        c.memory_limit_bytes,
                    ]
                    for c in spec.containers
                },
            )
            for spec in specs
        }
        want = {
            workload: (None if "/DaemonSet/" in workload else len(pods), containers)
            for workload, (pods, containers) in expected.items()
        }
        assert got == want
        assert all(spec.source == "prometheus" and spec.timestamp == at for spec in specs)


# --------------------------------------------------------------------------- chunking


def test_budget_splits_queries_and_the_union_equals_one_big_query(small: Served) -> None:
    cluster = small.cluster
    with PromQLClient(small.server.url) as unbounded_client:
        unbounded = PrometheusSource(
            unbounded_client,
            source_config(
                budget=QueryBudget(max_series_per_query=10_000, max_samples_per_query=10**9)
            ),
        )
        reference = list(unbounded.backfill(cluster.start, cluster.end))
        assert unbounded.chunks(cluster.start, cluster.end) == [(cluster.start, cluster.end)]
        widest = unbounded_client.largest_range_series

    budget = QueryBudget(max_series_per_query=4, max_samples_per_query=4 * 12)
    with PromQLClient(small.server.url) as client:
        source = PrometheusSource(client, source_config(budget=budget))
        shards = source.shards(
            ("container_cpu_usage_seconds_total", "kube_pod_container_resource_limits"),
            at=cluster.end,
            lookback_seconds=cluster.end - cluster.start,
        )
        progress: list[tuple[float, float]] = []
        chunked = list(
            source.backfill(cluster.start, cluster.end, progress=lambda *p: progress.append(p))
        )
        assert client.largest_range_series <= 4
        assert client.largest_range_points <= 12
        assert client.queries_issued > 5 * unbounded_client.queries_issued

    assert widest > 4  # the budget had something to split
    chunks = source.chunks(cluster.start, cluster.end)
    assert len(chunks) == math.ceil(cluster.points / 12)
    assert progress == [(last, cluster.end) for _, last in chunks]
    assert any(shard.pod for shard in shards), "a namespace over budget is split by pod prefix"
    assert any(not shard.pod for shard in shards), "small namespaces are packed together"
    assert [b.model_dump() for b in chunked] == [b.model_dump() for b in reference]


def test_a_pod_over_the_budget_alone_is_refused_with_advice(small: Served) -> None:
    with PromQLClient(small.server.url) as client:
        source = PrometheusSource(
            client,
            source_config(budget=QueryBudget(max_series_per_query=1, max_samples_per_query=100)),
        )
        two_container_pods = {
            (c.namespace, c.pod)
            for c in small.cluster.containers
            if sum(o.pod == c.pod for o in small.cluster.containers) > 1
        }
        assert two_container_pods, "the seed generates sidecars"
        with pytest.raises(CollectorError, match="raise max_series_per_query"):
            list(source.backfill(small.cluster.start, small.cluster.start + 3600))


@given(
    start=st.integers(0, 10**9),
    steps=st.floats(0, 3000),
    step=st.sampled_from([1.0, 15.0, 60.0, 300.0]),
    points=st.integers(1, 500),
)
def test_chunks_cover_every_step_once_within_the_points_limit(
    start: int, steps: float, step: float, points: int
) -> None:
    length = steps * step
    config = source_config(
        step_seconds=step,
        budget=QueryBudget(max_series_per_query=1, max_samples_per_query=points),
    )
    never_called = httpx.MockTransport(lambda request: httpx.Response(500))
    source = PrometheusSource(PromQLClient("http://prom", transport=never_called), config)
    chunks = source.chunks(start, start + length)
    sizes = [round((last - first) / step) + 1 for first, last in chunks]
    covered = [
        first + i * step
        for (first, _), size in zip(chunks, sizes, strict=True)
        for i in range(size)
    ]
    first_step = math.ceil(start / step) * step
    last_step = math.floor((start + length) / step) * step
    wanted = round((last_step - first_step) / step) + 1 if first_step <= last_step else 0
    assert covered == [first_step + i * step for i in range(wanted)]
    assert all(size <= points for size in sizes)
    source.close()


# --------------------------------------------------------------------------- semantics


def test_counter_reset_and_the_zero_point_edge(small: Served) -> None:
    with PromQLClient(small.server.url) as client:
        source = PrometheusSource(client, source_config())
        batches = list(source.backfill(HANDMADE_START, HANDMADE_START + 5 * STEP))
    cores = {
        (b.workload, round((b.timestamp - HANDMADE_START) / STEP)): b.samples[0].cpu_usage_cores
        for b in batches
    }
    reset, fresh = f"{CLUSTER}/handmade/StatefulSet/reset", f"{CLUSTER}/handmade/CronJob/fresh"
    assert cores == pytest.approx(
        {
            (reset, 1): 0.1,
            (reset, 2): 0.1,
            (reset, 3): 18 / STEP,  # went down: the new value is the growth
            (reset, 4): 0.1,
            (reset, 5): 0.1,
            (fresh, 4): (30 + 2) / WINDOW,  # started near 0: Prometheus's zero-point clamp
            (fresh, 5): 0.1,
        },
        rel=1e-9,
    )
    assert all(b.samples[0].oom_kills == 0 for b in batches)


def test_oom_kills_from_kube_state_metrics(small: Served) -> None:
    with PromQLClient(small.server.url) as client:
        source = PrometheusSource(client, source_config(oom_source="kube-state-metrics"))
        batches = list(source.backfill(HANDMADE_START, HANDMADE_START + 5 * STEP))
    oom = {
        (b.workload.split("/")[-1], round((b.timestamp - HANDMADE_START) / STEP)): b.samples[
            0
        ].oom_kills
        for b in batches
    }
    assert oom == {
        ("reset", 1): 0,
        ("reset", 2): 0,
        ("reset", 3): 1,
        ("reset", 4): 0,
        ("reset", 5): 0,
        ("fresh", 4): None,  # no kube-state-metrics restart series for it: unknown
        ("fresh", 5): None,
    }


def test_continuous_mode_emits_each_completed_step_once(small: Served) -> None:
    cluster = small.cluster
    with PromQLClient(small.server.url) as client:
        reference = list(
            PrometheusSource(client, source_config()).backfill(cluster.start, cluster.end)
        )
        by_time: dict[float, list[dict[str, Any]]] = {}
        for batch in reference:
            by_time.setdefault(batch.timestamp, []).append(batch.model_dump())

        source = PrometheusSource(client, source_config(ingest_delay_seconds=60))
        t = float(cluster.time_of(10))
        first = source.poll(t + 60 + 299)  # step t is due, t + 300 is not yet
        assert [b.model_dump() for b in first] == by_time[t]
        assert source.poll(t + 60 + 299) == []
        messages = source.messages(t + 3 * STEP + 60)  # after a pause: the three steps missed
        decoded = [decode_container_batch(m.payload) for m in messages]
        assert sorted({b.timestamp for b in decoded}) == [t + STEP, t + 2 * STEP, t + 3 * STEP]
        assert [b.model_dump() for b in decoded] == [
            batch for moment in (t + STEP, t + 2 * STEP, t + 3 * STEP) for batch in by_time[moment]
        ]
        assert all(m.key == b.workload.encode() for m, b in zip(messages, decoded, strict=True))
        assert {m.topic for m in messages} == {"daytwo.container-samples.v1"}


# --------------------------------------------------------------------------- errors


def test_errors_quote_the_query_and_prometheus_s_reason(small: Served) -> None:
    registry = CollectorRegistry()
    metrics = PrometheusMetrics.create(registry)
    with PromQLClient(small.server.url, metrics=metrics) as client:
        with pytest.raises(CollectorError) as bad_syntax:
            client.query("sum(rate(container_cpu_usage_seconds_total[5m]", at=DEFAULT_START)
        message = str(bad_syntax.value)
        assert "sum(rate(container_cpu_usage_seconds_total[5m]" in message
        assert "parse error" in message
        assert "bad_data" in message

        with pytest.raises(CollectorError, match="11,000 points"):
            client.query_range("up", start=DEFAULT_START, end=DEFAULT_START + 20_000, step=1)
    assert registry.get_sample_value("daytwo_prometheus_query_errors_total") == 2
    assert registry.get_sample_value("daytwo_prometheus_queries_total", {"endpoint": "query"}) == 1

    with PromQLClient(f"{small.server.url}/not-prometheus") as client:
        with pytest.raises(CollectorError, match="non-JSON") as not_json:
            client.query("up", at=DEFAULT_START)
        assert "HTTP 404" in str(not_json.value)

    unused = f"http://127.0.0.1:{free_port()}"
    with PromQLClient(unused) as client:
        with pytest.raises(CollectorError, match="could not be reached") as refused:
            client.query("up", at=DEFAULT_START)
        assert unused in str(refused.value)
        assert "'up'" in str(refused.value)


def test_budget_and_config_are_validated() -> None:
    with pytest.raises(ConfigError, match="11000"):
        QueryBudget(max_points_per_series=11_001)
    with pytest.raises(ConfigError, match="cluster"):
        PrometheusSourceConfig(cluster="a/b")
    with pytest.raises(ConfigError, match="rate_window_seconds"):
        PrometheusSourceConfig(cluster="prod", step_seconds=300, rate_window_seconds=60)
    assert (
        QueryBudget(max_series_per_query=100, max_samples_per_query=50_000).points_per_chunk == 500
    )
    assert (
        QueryBudget(max_series_per_query=1, max_samples_per_query=10**9).points_per_chunk == 11_000
    )


# --------------------------------------------------------------------------- auth


def _recording_transport(seen: list[httpx.Request], status: int = 200) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if status != 200:
            return httpx.Response(status, text="Unauthorized")
        body = {"status": "success", "data": {"resultType": "vector", "result": []}}
        return httpx.Response(200, content=orjson.dumps(body))

    return httpx.MockTransport(handle)


def test_bearer_token_file_is_reread_and_never_shown(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first-secret\n")
    auth = PrometheusAuth.from_env({"DAYTWO_PROMETHEUS_BEARER_TOKEN_FILE": str(token_file)})
    assert auth is not None
    seen: list[httpx.Request] = []
    with PromQLClient("http://prom", transport=_recording_transport(seen), auth=auth) as client:
        client.query("up", at=0)
        token_file.write_text("rotated-secret\n")
        client.query("up", at=0)
    assert [r.headers["Authorization"] for r in seen] == [
        "Bearer first-secret",
        "Bearer rotated-secret",
    ]
    assert "secret" not in repr(auth)

    denied: list[httpx.Request] = []
    secret = PrometheusAuth(bearer_token="very-secret-token")
    with (
        PromQLClient(
            "http://prom", transport=_recording_transport(denied, 401), auth=secret
        ) as client,
        pytest.raises(CollectorError, match="auth") as error,
    ):
        client.query("up", at=0)
    assert "very-secret-token" not in str(error.value)
    assert "very-secret-token" not in repr(secret)


def test_basic_auth_from_env_and_bad_combinations(tmp_path: Path) -> None:
    password_file = tmp_path / "password"
    password_file.write_text("hunter2")
    auth = PrometheusAuth.from_env(
        {
            "DAYTWO_PROMETHEUS_USERNAME": "daytwo",
            "DAYTWO_PROMETHEUS_PASSWORD_FILE": str(password_file),
        }
    )
    seen: list[httpx.Request] = []
    with PromQLClient("http://prom", transport=_recording_transport(seen), auth=auth) as client:
        client.query("up", at=0)
    assert (
        seen[0].headers["Authorization"] == "Basic " + base64.b64encode(b"daytwo:hunter2").decode()
    )
    assert PrometheusAuth.from_env({}) is None
    with pytest.raises(ConfigError, match="not both"):
        PrometheusAuth.from_env(
            {"DAYTWO_PROMETHEUS_BEARER_TOKEN": "t", "DAYTWO_PROMETHEUS_USERNAME": "u"}
        )
    with pytest.raises(ConfigError, match="USERNAME"):
        PrometheusAuth.from_env({"DAYTWO_PROMETHEUS_PASSWORD": "p"})
