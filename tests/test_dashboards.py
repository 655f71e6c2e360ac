"""Acceptance (issue 7, item 1): every PromQL query of the Grafana dashboards returns data
from a real Prometheus scraping real daytwo processes.

Processes, all on 127.0.0.1::

    daytwo agent ──▶ embedded broker ──▶ worker A ┐ (one consumer group: the partitions
    --source replay     (session)        worker B ┘  are shared)
    --linger                                 │ recommendation sets
                                             ▼
                                            sink ──▶ git repo (dry-run branches)
    Prometheus (Debian package) scrapes agent, A, B and the sink every second, with the
    job names of deploy/prometheus.yml.

The agent is the real ``daytwo agent --source replay --linger --speedup 5000``: it streams
the trace's container samples and, from its JVM columns, the JVM samples (so the JVM
panels have data), publishes through the spooling publisher (so the spool metrics are
real), and, with ``--linger``, keeps serving its /metrics after the trace ends until it is
stopped, so Prometheus still scrapes it when the dashboards are queried.

The trace (2 h of 10 s samples, seeded) is shaped so that every panel has something to
show: ``checkout/app`` is a JVM (GC overhead, heap, non-heap), is throttled, has its
working set step from 700 MiB to 1300 MiB half-way (a memory drift event) and one OOM
kill; ``frontend`` and ``index`` are oversized (decreases, positive savings); ``elastic``
runs near its CPU limit.

After the replay, with every sample applied (checked against Prometheus: the sum of the
workers' counters equals the trace's rows, so nothing was lost or counted twice across the
two workers), each expression found in the dashboard JSON files is evaluated through
``/api/v1/query`` with the template variables replaced by real values (``$workload`` by a
value its own ``label_values`` query returned) and must return at least one series.
"""

from __future__ import annotations

import contextlib
import random
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import polars as pl
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from ruamel.yaml import YAML

from pipeline.core.profiles import get_profile
from pipeline.core.window import ContainerWindow, SampleInput
from pipeline.launch import Child, start_child
from pipeline.metrics import (
    ContainerSnapshot,
    SinkMetrics,
    WorkerMetrics,
    WorkloadSeries,
    drift_event_counts,
    proposal_direction,
)
from tests.prom_helpers import PROMETHEUS_BINARY
from tests.worker_helpers import (
    PARTITIONS,
    free_port,
    is_embedded,
    running,
    worker_env,
)

REPO = Path(__file__).resolve().parents[1]
DASHBOARDS = REPO / "deploy" / "grafana" / "dashboards"
SCRAPE_CONFIG = REPO / "deploy" / "prometheus.yml"
DATASOURCE_UID = "daytwo-prometheus"

T0 = 1_750_000_000
INTERVAL = 10
POINTS = 720  # 2 h
MIB = 1024 * 1024
CHECKOUT = "prod/shop/Deployment/checkout"
FRONTEND = "prod/shop/Deployment/frontend"
ELASTIC = "prod/search/StatefulSet/elastic"
INDEX = "prod/search/StatefulSet/index"
JVM_CONTAINER = (CHECKOUT, "app")
#: The workloads' keys hash to partitions 0, 3, 1 and 2 of 4, so both workers get some.
CONTAINERS = (
    (CHECKOUT, "app"),
    (CHECKOUT, "envoy"),
    (FRONTEND, "web"),
    (ELASTIC, "elastic"),
    (INDEX, "indexer"),
)
#: The replay's pace: the 2 h trace takes 1.4 s.
SPEEDUP = 5000
#: Grafana's built-in interval variables, as Grafana would fill them for a short range.
GRAFANA_INTERVALS = {"__rate_interval": "20s", "__interval": "5s", "__range": "10m"}


# --------------------------------------------------------------------------- the trace


def make_trace(seed: int) -> pl.DataFrame:
    """The trace of the module docstring, with JVM columns for ``checkout/app``."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for index in range(POINTS):
        ts = T0 + INTERVAL * index
        for workload, container in CONTAINERS:
            row: dict[str, Any] = {"timestamp": ts, "workload": workload, "container": container}
            if (workload, container) == JVM_CONTAINER:
                step = index >= POINTS // 2
                row |= {
                    "cpu_cores": round(rng.uniform(0.3, 0.6), 4),
                    "memory_bytes": (1300 if step else 700) * MIB + rng.randint(0, 20) * MIB,
                    "cpu_throttled_ratio": round(rng.uniform(0.05, 0.25), 4),
                    "oom_kills": 1 if index == 3 * POINTS // 4 else 0,
                    "cpu_limit_cores": 1.0,
                    "memory_limit_bytes": 2048 * MIB,
                    "jvm_heap_used_bytes": rng.randint(300, 500) * MIB,
                    "jvm_heap_max_bytes": 1024 * MIB,
                    "jvm_nonheap_bytes": rng.randint(140, 160) * MIB,
                    "jvm_gc_overhead_ratio": round(rng.uniform(0.01, 0.06), 4),
                }
            elif container == "envoy":
                row |= {
                    "cpu_cores": round(rng.uniform(0.02, 0.08), 4),
                    "memory_bytes": rng.randint(50, 70) * MIB,
                    "cpu_throttled_ratio": 0.0,
                    "oom_kills": 0,
                    "cpu_limit_cores": 0.5,
                    "memory_limit_bytes": 256 * MIB,
                }
            elif workload in (FRONTEND, INDEX):
                row |= {
                    "cpu_cores": round(rng.uniform(0.05, 0.15), 4),
                    "memory_bytes": rng.randint(180, 220) * MIB,
                    "cpu_throttled_ratio": 0.0,
                    "oom_kills": 0,
                    "cpu_limit_cores": 2.0,
                    "memory_limit_bytes": 1024 * MIB,
                }
            else:
                row |= {
                    "cpu_cores": round(rng.uniform(0.7, 0.95), 4),
                    "memory_bytes": rng.randint(2400, 2600) * MIB,
                    "cpu_throttled_ratio": round(rng.uniform(0.0, 0.1), 4),
                    "oom_kills": 0,
                    "cpu_limit_cores": 1.0,
                    "memory_limit_bytes": 4096 * MIB,
                }
            rows.append(row)
    return pl.DataFrame(rows, infer_schema_length=None)


# --------------------------------------------------------------------------- the peers

MANIFESTS = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: checkout, namespace: shop}
spec:
  template:
    spec:
      containers:
        - name: app
          image: shop/checkout:1
          resources:
            requests: {cpu: "1", memory: 2Gi}
            limits: {cpu: "1", memory: 2Gi}
        - name: envoy
          image: envoy:1.30
          resources:
            requests: {cpu: 500m, memory: 256Mi}
            limits: {cpu: 500m, memory: 256Mi}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: frontend, namespace: shop}
spec:
  template:
    spec:
      containers:
        - name: web
          image: shop/frontend:1
          resources:
            requests: {cpu: "2", memory: 1Gi}
            limits: {cpu: "2", memory: 1Gi}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: elastic, namespace: search}
spec:
  template:
    spec:
      containers:
        - name: elastic
          image: elastic:8
          resources:
            requests: {cpu: "1", memory: 4Gi}
            limits: {cpu: "1", memory: 4Gi}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: index, namespace: search}
spec:
  template:
    spec:
      containers:
        - name: indexer
          image: indexer:2
          resources:
            requests: {cpu: "2", memory: 1Gi}
            limits: {cpu: "2", memory: 1Gi}
"""


def make_gitops_repo(path: Path) -> None:
    """A real git repository holding the trace's workloads."""
    path.mkdir()

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=path, check=True, capture_output=True, timeout=30)

    git("init", "--quiet", "--initial-branch=main")
    git("config", "user.name", "Test")
    git("config", "user.email", "test@example.invalid")
    (path / "apps.yaml").write_text(MANIFESTS, encoding="utf-8")
    git("add", ".")
    git("commit", "--quiet", "-m", "manifests")


@contextlib.contextmanager
def prometheus(workdir: Path, targets: dict[str, list[int]]) -> Iterator[str]:
    """A real Prometheus scraping ``targets`` (job -> ports) every second; yields its URL."""
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": job,
                "static_configs": [{"targets": [f"127.0.0.1:{port}" for port in ports]}],
            }
            for job, ports in targets.items()
        ],
    }
    config_path = workdir / "prometheus.yml"
    config_path.write_bytes(orjson.dumps(config))  # JSON is YAML
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (workdir / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [
                PROMETHEUS_BINARY,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert process.poll() is None, (workdir / "prometheus.log").read_text()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def query(url: str, expr: str) -> list[dict[str, Any]]:
    """Evaluate ``expr`` now; the result as a list of series (a scalar is one series)."""
    response = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10)
    body = response.json()
    assert response.status_code == 200, f"{expr}: {body.get('error')}"
    data = body["data"]
    if data["resultType"] in ("scalar", "string"):
        return [{"metric": {}, "value": data["result"]}]
    return list(data["result"])


def value_of(url: str, expr: str) -> float:
    """The value of a single-series ``expr`` (NaN when it returns nothing)."""
    series = query(url, expr)
    return float(series[0]["value"][1]) if series else float("nan")


def wait_until(what: str, check: Any, timeout: float, *children: Child) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in children:
            assert child.process.poll() is None, f"{child.name} died:\n{child.log_tail(40)}"
        if check():
            return
        time.sleep(0.5)
    tails = "\n".join(f"--- {c.name}\n{c.log_tail(15)}" for c in children)
    pytest.fail(f"timed out waiting for {what}\n{tails}")


def wait_for_line(child: Child, pattern: str, timeout: float) -> None:
    wait_until(
        f"{child.name}: {pattern!r}",
        lambda: re.search(pattern, child.log_path.read_text(errors="replace")) is not None,
        timeout,
        child,
    )


# --------------------------------------------------------------------------- the dashboards


def load_dashboards() -> dict[str, dict[str, Any]]:
    return {
        path.name: orjson.loads(path.read_bytes()) for path in sorted(DASHBOARDS.glob("*.json"))
    }


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title / refId, expr) for every target of every panel."""
    return [
        (f"{panel['title']} / {target['refId']}", target["expr"])
        for panel in all_panels(dashboard.get("panels", []))
        for target in panel.get("targets", [])
    ]


def variable_queries(dashboard: dict[str, Any]) -> dict[str, str]:
    """Template variable name -> its query (``label_values(expr, label)``)."""
    found = {}
    for variable in dashboard.get("templating", {}).get("list", []):
        raw = variable.get("query")
        found[variable["name"]] = raw["query"] if isinstance(raw, dict) else raw
    return found


LABEL_VALUES = re.compile(r"^label_values\((?P<expr>.+),\s*(?P<label>[a-zA-Z_]\w*)\)$")


def substitute(expr: str, values: dict[str, str]) -> str:
    """Replace ``$name``, ``${name}`` and ``[[name]]`` as Grafana does."""

    def one(match: re.Match[str]) -> str:
        name = match.group("a") or match.group("b") or match.group("c")
        assert name in values, f"unknown template variable {name!r} in {expr}"
        return values[name]

    return re.sub(r"\$\{(?P<a>\w+)\}|\[\[(?P<b>\w+)\]\]|\$(?P<c>\w+)", one, expr)


def test_dashboards_are_provisionable_grafana_json() -> None:
    """Static checks: the three dashboards, unique uids, every query on the provisioned
    datasource and selecting daytwo's own jobs (deploy/prometheus.yml)."""
    dashboards = load_dashboards()
    assert set(dashboards) == {
        "fleet-overview.json",
        "workload-drilldown.json",
        "pipeline-health.json",
    }
    assert len({d["uid"] for d in dashboards.values()}) == len(dashboards)
    jobs = {
        c["job_name"] for c in YAML(typ="safe").load(SCRAPE_CONFIG.read_text())["scrape_configs"]
    }
    for name, dashboard in dashboards.items():
        panels = list(all_panels(dashboard["panels"]))
        assert panels, name
        assert len({p["id"] for p in panels}) == len(panels), name
        for panel in panels:
            assert panel["datasource"]["uid"] == DATASOURCE_UID, (name, panel["title"])
            assert panel["targets"], (name, panel["title"])
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == DATASOURCE_UID, (name, panel["title"])
                selected = set(re.findall(r'job=~?"([^"]+)"', target["expr"]))
                assert selected, f"{name} / {panel['title']}: select a job"
                assert all(job in jobs or re.fullmatch(job, "daytwo-worker") for job in selected), (
                    selected
                )
    drilldown = dashboards["workload-drilldown.json"]
    assert set(variable_queries(drilldown)) == {"workload"}
    assert all("$workload" in expr for _, expr in panel_queries(drilldown))


# --------------------------------------------------------------------------- metrics units


def _snapshot(savings: float | None = None, risk: str | None = None) -> ContainerSnapshot:
    return ContainerSnapshot(
        profile="balanced",
        cpu_usage_cores=0.5,
        current={"cpu_request_cores": 1.0},
        recommended={"cpu_request_cores": 0.6},
        monthly_cost_delta_usd=None if savings is None else -savings,
        risk=risk,
        confidence=0.9,
    )


def _exposition(collector: WorkloadSeries) -> str:
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


def test_per_workload_series_are_bounded_least_recently_updated_first() -> None:
    series = WorkloadSeries(max_workloads=2)
    series.observe("c/ns/Deployment/a", "app", _snapshot(savings=10.0), state_bytes=100)
    series.observe("c/ns/Deployment/b", "app", _snapshot(savings=5.0), state_bytes=100)
    series.observe("c/ns/Deployment/a", "app", _snapshot(savings=10.0), state_bytes=100)
    series.observe("c/ns/Deployment/c", "app", _snapshot(savings=1.0), state_bytes=50)
    # b was the least recently updated: its series went, a and c stay
    assert series.workloads() == ["c/ns/Deployment/a", "c/ns/Deployment/c"]
    text = _exposition(series)
    assert 'workload="c/ns/Deployment/b"' not in text
    assert "daytwo_worker_workloads_dropped_total 1.0" in text
    # the totals still cover every container held, exported or not
    assert "daytwo_worker_proposed_monthly_savings_usd 16.0" in text
    assert "daytwo_worker_state_bytes 250.0" in text
    assert (
        "daytwo_workload_cpu_request_cores"
        '{container="app",state="recommended",workload="c/ns/Deployment/a"} 0.6' in text
    )
    series.forget("c/ns/Deployment/a", "app")
    text = _exposition(series)
    assert 'workload="c/ns/Deployment/a"' not in text
    assert "daytwo_worker_proposed_monthly_savings_usd 6.0" in text


def test_series_without_a_proposal_show_usage_and_current_only() -> None:
    series = WorkloadSeries()
    series.observe(
        "c/ns/Deployment/a",
        "app",
        ContainerSnapshot(
            profile="balanced", cpu_usage_cores=0.25, current={"cpu_request_cores": 1.0}
        ),
    )
    text = _exposition(series)
    assert (
        'daytwo_workload_cpu_usage_cores{container="app",workload="c/ns/Deployment/a"} 0.25' in text
    )
    assert 'state="current"' in text
    assert 'state="recommended"' not in text
    assert "daytwo_workload_recommendation_info{" not in text


@pytest.mark.parametrize(
    ("current", "recommended", "expected"),
    [
        (1.0, 2.0, "up"),
        (2.0, 1.0, "down"),
        (1.0, 1.0, "unchanged"),
        (None, 1.0, "up"),
        (1.0, None, None),
    ],
)
def test_proposal_direction(
    current: float | None, recommended: float | None, expected: str | None
) -> None:
    assert proposal_direction(current, recommended) == expected


def test_drift_events_are_counted_once_and_not_again_from_restored_state() -> None:
    """A memory step makes the window record a drift event; counting it twice (again at
    the next checkpoint, or by a worker that restored the window) must not happen."""
    profile = get_profile("balanced")
    window = ContainerWindow.new(profile)
    for index in range(POINTS):
        memory = (1300 if index >= POINTS // 2 else 700) * MIB
        window.apply(
            SampleInput(
                timestamp=T0 + 10.0 * index,
                interval_seconds=10.0,
                cpu_usage_cores=0.5,
                memory_working_set_bytes=memory,
            )
        )
    registry = CollectorRegistry()
    metrics = WorkerMetrics.create(registry)
    seen: dict[str, int] = {}
    metrics.count_drift("balanced", window, seen)
    counted = registry.get_sample_value(
        "daytwo_worker_drift_events_total", {"signal": "memory", "profile": "balanced"}
    )
    assert counted is not None
    assert counted >= 1
    metrics.count_drift("balanced", window, seen)
    assert (
        registry.get_sample_value(
            "daytwo_worker_drift_events_total", {"signal": "memory", "profile": "balanced"}
        )
        == counted
    )
    restored = ContainerWindow.from_bytes(window.to_bytes())
    other = CollectorRegistry()
    WorkerMetrics.create(other).count_drift("balanced", restored, drift_event_counts(restored))
    assert (
        other.get_sample_value(
            "daytwo_worker_drift_events_total", {"signal": "memory", "profile": "balanced"}
        )
        == 0
    )


def _family_names(registry: CollectorRegistry) -> set[str]:
    return {family.name for family in registry.collect()}


def test_sink_metrics_count_pull_requests_by_action() -> None:
    """The sink counts through ``pipeline.metrics.SinkMetrics``: outcomes, commits and what
    happened to a pull request (the dashboards chart ``daytwo_sink_pull_requests_total``)."""
    from pipeline.prsink.sink import SinkResult  # noqa: PLC0415 - only this test needs it

    registry = CollectorRegistry()
    metrics = SinkMetrics.for_registry(registry)
    assert SinkMetrics.for_registry(registry) is metrics

    def result(outcome: str) -> SinkResult:
        return SinkResult(
            workload="c/ns/Deployment/a",
            branch="daytwo/ns/a",
            commit="abc" if outcome in {"opened", "updated"} else None,
            changed=outcome in {"opened", "updated"},
            files=(),
            reason=outcome,
            outcome=outcome,
        )

    for outcome in ("opened", "updated", "updated", "deferred", "unchanged"):
        metrics.count(result(outcome))
    value = registry.get_sample_value
    assert value("daytwo_sink_pull_requests_total", {"action": "opened"}) == 1
    assert value("daytwo_sink_pull_requests_total", {"action": "updated"}) == 2
    assert value("daytwo_sink_pull_requests_total", {"action": "refused"}) == 1
    assert value("daytwo_sink_commits_total") == 3
    assert value("daytwo_sink_recommendations_total", {"outcome": "unchanged"}) == 1


# --------------------------------------------------------------------------- acceptance


@pytest.mark.integration
def test_every_dashboard_query_returns_data_from_a_real_prometheus(
    kafka_bootstrap: str, make_topic_prefix: Any, tmp_path: Path
) -> None:
    prefix = make_topic_prefix(PARTITIONS)
    trace = make_trace(seed=7)
    trace_path = tmp_path / "trace.csv"
    trace.write_csv(trace_path)
    repo = tmp_path / "gitops"
    make_gitops_repo(repo)
    logs = tmp_path / "logs"
    ports = {name: free_port() for name in ("worker-a", "worker-b", "sink", "agent")}
    jobs = {
        "daytwo-worker": [ports["worker-a"], ports["worker-b"]],
        "daytwo-sink": [ports["sink"]],
        "daytwo-agent": [ports["agent"]],
    }
    (tmp_path / "prom").mkdir()
    app_id = f"dash-{prefix.strip('.')}"

    def worker(name: str) -> Child:
        env = worker_env(
            kafka_bootstrap,
            prefix,
            app_id,
            tmp_path / name,
            DAYTWO_METRICS_PORT=str(ports[name]),
            DAYTWO_FLUSH_INTERVAL_SECONDS="1",
        )
        return start_child(name, ["worker"], env, logs)

    sink_env = {
        "DAYTWO_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "DAYTWO_TOPIC_PREFIX": prefix,
        "DAYTWO_GITOPS_REPO": str(repo),
        "DAYTWO_SINK_GROUP_ID": f"{app_id}-sink",
        "DAYTWO_METRICS_PORT": str(ports["sink"]),
        "DAYTWO_PARTITIONS": str(PARTITIONS),
    }
    if is_embedded(kafka_bootstrap):
        sink_env["DAYTWO_BROKER_IS_EMBEDDED"] = "1"
    with (
        prometheus(tmp_path / "prom", jobs) as url,
        running(worker("worker-a")) as worker_a,
        running(worker("worker-b")) as worker_b,
        running(start_child("sink", ["sink"], sink_env, logs)) as sink,
    ):
        # Both workers in the group before the replay: the partitions are shared from the
        # first record on (a later rebalance would be correct too, just slower).
        for child in (worker_a, worker_b):
            wait_for_line(child, r"Ready", 60)
        agent_env = {
            "DAYTWO_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "DAYTWO_TOPIC_PREFIX": prefix,
            "DAYTWO_SPOOL_DIR": str(tmp_path / "spool"),
            "DAYTWO_METRICS_PORT": str(ports["agent"]),
            "DAYTWO_LOG_LEVEL": "INFO",
        }
        if is_embedded(kafka_bootstrap):
            agent_env["DAYTWO_BROKER_IS_EMBEDDED"] = "1"
        agent = start_child(
            "agent",
            ["agent", "--source", "replay", "--trace", str(trace_path), "--linger",
             "--speedup", str(SPEEDUP)],
            agent_env,
            logs,
        )  # fmt: skip
        children = (worker_a, worker_b, sink, agent)
        with running(agent):
            wait_for_line(agent, r"replayed \d+ batches", 60)
            rows = trace.height
            jvm_rows = trace.filter(pl.col("jvm_gc_overhead_ratio").is_not_null()).height
            # one JVM container: one JVM batch per JVM row, all of them sent
            assert f"JVM: {jvm_rows} batches, {jvm_rows} samples, 0 rejected" in agent.log_tail()
            processed = 'sum(daytwo_worker_samples_processed_total{job="daytwo-worker"})'
            jvm_processed = 'sum(daytwo_worker_jvm_samples_processed_total{job="daytwo-worker"})'
            wait_until(
                "every sample applied, as Prometheus sees it",
                lambda: (
                    value_of(url, processed) == rows and value_of(url, jvm_processed) == jvm_rows
                ),
                60,
                *children,
            )
            wait_until(
                "the sink applied sets",
                lambda: (
                    value_of(url, 'sum(daytwo_sink_recommendations_total{job="daytwo-sink"})') > 0
                ),
                30,
                *children,
            )
            time.sleep(3)  # a few more scrapes: rate windows then hold the final values
            # the two workers really shared the work
            per_worker = query(url, f"{processed.replace('sum(', 'sum by (instance) (')}")
            assert len([s for s in per_worker if float(s["value"][1]) > 0]) == 2, per_worker
            # the memory step was seen as drift, and proposals were counted
            assert value_of(url, 'sum(daytwo_worker_drift_events_total{signal="memory"})') >= 1
            assert value_of(url, "sum(daytwo_worker_proposals_total)") >= len(CONTAINERS)

            failures = []
            evaluated = 0
            for name, dashboard in load_dashboards().items():
                values = dict(GRAFANA_INTERVALS)
                for variable, definition in variable_queries(dashboard).items():
                    match = LABEL_VALUES.match(definition)
                    assert match is not None, f"{name}: variable {variable}: {definition}"
                    series = query(url, substitute(match["expr"], values))
                    options = {s["metric"].get(match["label"]) for s in series} - {None}
                    evaluated += 1
                    if not options:
                        failures.append(f"{name}: variable {variable}: {definition} -> nothing")
                        continue
                    assert options == {w for w, _ in CONTAINERS}, options
                    # the JVM workload has a series in every panel
                    values[variable] = JVM_CONTAINER[0]
                for where, expr in panel_queries(dashboard):
                    evaluated += 1
                    if not query(url, substitute(expr, values)):
                        failures.append(f"{name}: {where}: {expr} -> no series")
            assert evaluated >= 30
            assert not failures, "\n".join(failures)
            # the agent lingered through all of it, and stops cleanly when told
            assert agent.process.poll() is None
            assert agent.stop() == 0, agent.log_tail(20)
