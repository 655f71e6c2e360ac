"""Every ``daytwo agent --source ...`` through the real CLI against the embedded broker.

Each source runs as the user runs it (``daytwo agent`` in-process for the sources that
end by themselves, as a child process stopped with SIGTERM for the live ones) against a
real peer: a generated trace file, a real Prometheus holding backfilled history, a kubelet
over HTTPS and a Kubernetes API over HTTP on 127.0.0.1 serving the recorded documents of
tests/fixtures/k8s, a real GC log (tests/fixtures/gclogs). What arrives on the topics is
compared with what the library parts compute from the same input, or with the generated
truth, never with typed-in numbers.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlparse

import polars as pl
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from agents.inventory import KINDS, ClusterState, build_workloads, pod_index
from agents.jvm_gclog import GcLogParser, IntervalAggregator
from agents.kubelet import SummaryConverter
from pipeline.cli import app
from pipeline.launch import Child, start_child
from schemas.models import ContainerSample, ContainerSampleBatch, JvmSampleBatch, WorkloadSpec
from schemas.validate import decode, decode_container_batch
from tests.prom_helpers import generate_cluster, prometheus_available, running_prometheus
from tests.test_agents_prometheus import differences, emitted_samples, expected_samples
from tests.worker_helpers import (
    died,
    free_port,
    is_embedded,
    metric_sum,
    read_all,
    running,
    scrape_metrics,
)

pytestmark = pytest.mark.integration

K8S = Path(__file__).parent / "fixtures" / "k8s"
GCLOGS = Path(__file__).parent / "fixtures" / "gclogs"
NODE = "gke-prod-default-pool-1a2b3c4d-x7k9"
SAMPLES = "daytwo.container-samples.v1"
LIST_FILES = {
    "Namespace": "namespaces",
    "Node": "nodes",
    "Pod": "pods",
    "ReplicaSet": "replicasets",
    "Deployment": "deployments",
    "StatefulSet": "statefulsets",
    "DaemonSet": "daemonsets",
    "Job": "jobs",
    "CronJob": "cronjobs",
    "HorizontalPodAutoscaler": "hpas",
    "Rollout": "rollouts",
}


@pytest.fixture
def agent_env(kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The broker's bootstrap, with the embedded broker's producer workaround switched on
    for in-process runs (no DAYTWO_* from the outside leaks in)."""
    for name in list(os.environ):
        if name.startswith("DAYTWO_"):
            monkeypatch.delenv(name)
    if is_embedded(kafka_bootstrap):
        monkeypatch.setenv("DAYTWO_BROKER_IS_EMBEDDED", "1")
    return kafka_bootstrap


def child_env(bootstrap: str, prefix: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    """Settings of an agent child process: own topics, spool, no metrics port."""
    env = {
        "DAYTWO_KAFKA_BOOTSTRAP": bootstrap,
        "DAYTWO_TOPIC_PREFIX": prefix,
        "DAYTWO_SPOOL_DIR": str(tmp_path / "spool"),
        "DAYTWO_METRICS_PORT": "0",
        "DAYTWO_LOG_LEVEL": "INFO",
    }
    if is_embedded(bootstrap):
        env["DAYTWO_BROKER_IS_EMBEDDED"] = "1"
    env.update(extra)
    return env


def cli(*args: str) -> tuple[int, str]:
    """``daytwo <args>`` in this process; its exit code and everything it printed."""
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def wait_until(condition: Callable[[], bool], timeout: float, *children: Child) -> None:
    """Poll ``condition``; fail with the child's log if it died or time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        reason = died(*children)
        assert reason is None, reason
        time.sleep(0.05)
    tails = "\n".join(child.log_tail(40) for child in children)
    pytest.fail(f"condition not met within {timeout} s\n{tails}")


# --------------------------------------------------------------------------- replay


def write_trace(
    path: Path, *, interval: int, points: int, start: int = 1_704_067_200
) -> pl.DataFrame:
    """Two workloads x two containers on a regular grid, values varying per row."""
    rows: list[dict[str, Any]] = []
    for index in range(points):
        for w, workload in enumerate(
            ("prod/shop/Deployment/checkout", "prod/pay/StatefulSet/ledger")
        ):
            for c, container in enumerate(("app", "sidecar")):
                rows.append(
                    {
                        "timestamp": start + index * interval,
                        "workload": workload,
                        "container": container,
                        "cpu_cores": round(0.05 + 0.01 * ((index * 7 + w + c) % 23), 4),
                        "memory_bytes": 50 * 2**20 + index * 4096 + w * 1000 + c,
                    }
                )
    frame = pl.DataFrame(rows)
    frame.write_csv(path)
    return frame


def test_replay_at_x1000_arrives_complete_in_order_with_original_timestamps_on_time(
    agent_env: str, make_topic_prefix: Callable[..., str], tmp_path: Path
) -> None:
    interval, points = 10, 301
    duration = (points - 1) * interval / 1000  # 3 s of wall time at x1000
    trace = write_trace(tmp_path / "trace.csv", interval=interval, points=points)
    prefix = make_topic_prefix()

    began = time.monotonic()
    code, output = cli(
        "agent", "--source", "replay", "--trace", str(tmp_path / "trace.csv"), "--speedup", "1000",
        "--kafka-bootstrap", agent_env, "--topic-prefix", prefix, "--metrics-port", "0",
        "--spool-dir", str(tmp_path / "spool"),
    )  # fmt: skip
    took = time.monotonic() - began
    assert code == 0, output

    batches = [
        decode_container_batch(value)
        for _, value in read_all(agent_env, prefix + SAMPLES, at_least=2 * points, timeout=30)
        if value is not None
    ]
    assert all(batch.source == "replay" for batch in batches)
    arrived: dict[str, list[tuple[float, str, float, int | None]]] = {}
    for batch in batches:
        arrived.setdefault(batch.workload, []).extend(
            (s.timestamp, s.container, s.cpu_usage_cores, s.memory_working_set_bytes)
            for s in batch.samples
        )
        assert {s.timestamp for s in batch.samples} == {batch.timestamp}
    expected: dict[str, list[tuple[float, str, float, int | None]]] = {}
    for row in trace.iter_rows(named=True):
        expected.setdefault(row["workload"], []).append(
            (float(row["timestamp"]), row["container"], row["cpu_cores"], row["memory_bytes"])
        )
    # complete and, per workload (one partition), in the trace's order
    assert arrived == expected
    for samples in arrived.values():
        times = [t for t, *_ in samples]
        assert times == sorted(times)
    # paced by the trace clock / 1000 (loosely: scheduling, producer start, reading)
    assert 0.5 * duration <= took <= 5 * duration + 5.0, f"{took:.2f} s for {duration} s"


def test_replay_at_x10000_is_not_held_back_per_message(
    agent_env: str, make_topic_prefix: Callable[..., str], tmp_path: Path
) -> None:
    """20,000 batches with 1 s between instants: x10,000 means 0.1 ms per instant, far
    below any timer; the replay must run at batch throughput."""
    interval, points = 1, 10_001
    write_trace(tmp_path / "trace.csv", interval=interval, points=points)
    prefix = make_topic_prefix()
    began = time.monotonic()
    code, output = cli(
        "agent", "--source", "replay", "--trace", str(tmp_path / "trace.csv"),
        "--speedup", "10000", "--kafka-bootstrap", agent_env, "--topic-prefix", prefix,
        "--metrics-port", "0", "--spool-dir", str(tmp_path / "spool"),
    )  # fmt: skip
    took = time.monotonic() - began
    assert code == 0, output
    assert took < 15.0, f"x10,000 replay of {2 * points} batches took {took:.1f} s"
    records = read_all(agent_env, prefix + SAMPLES, at_least=2 * points, timeout=30)
    assert len(records) == 2 * points


def write_jvm_trace(path: Path, *, points: int, interval: int = 10) -> pl.DataFrame:
    """``checkout/app`` is a JVM (its JVM columns null on every fifth row, non-heap absent
    on every third), ``checkout/sidecar`` is not (null JVM columns)."""
    start = 1_704_067_200
    rows: list[dict[str, Any]] = []
    for index in range(points):
        for container in ("app", "sidecar"):
            jvm = container == "app" and index % 5 != 4
            rows.append(
                {
                    "timestamp": start + index * interval,
                    "workload": "prod/shop/Deployment/checkout",
                    "container": container,
                    "cpu_cores": round(0.1 + 0.01 * (index % 13), 4),
                    "memory_bytes": 600 * 2**20 + index * 4096,
                    "jvm_heap_used_bytes": 300 * 2**20 + index * 8192 if jvm else None,
                    "jvm_heap_max_bytes": 1024 * 2**20 if jvm else None,
                    "jvm_nonheap_bytes": 150 * 2**20 + index if jvm and index % 3 else None,
                    "jvm_gc_overhead_ratio": round(0.001 * (index % 40), 4) if jvm else None,
                }
            )
    frame = pl.DataFrame(rows, infer_schema_length=None)
    frame.write_csv(path)
    return frame


def test_replay_streams_the_jvm_columns_and_lingers_until_stopped(
    kafka_bootstrap: str, make_topic_prefix: Callable[..., str], tmp_path: Path
) -> None:
    """``--linger``: after the trace, the agent keeps serving /metrics until SIGTERM, then
    exits 0. The JVM columns arrive as jvm-sample batches, one per JVM row, with the
    trace's timestamps and the documented field mapping."""
    points = 200
    trace = write_jvm_trace(tmp_path / "trace.csv", points=points)
    prefix = make_topic_prefix()
    port = free_port()
    env = child_env(kafka_bootstrap, prefix, tmp_path, DAYTWO_METRICS_PORT=str(port))
    agent = start_child(
        "agent",
        ["agent", "--source", "replay", "--trace", str(tmp_path / "trace.csv"),
         "--speedup", "1000", "--linger"],
        env,
        tmp_path / "logs",
    )  # fmt: skip
    with running(agent):
        wait_until(lambda: "(--linger)" in agent.log_tail(), 60, agent)
        time.sleep(1.0)
        assert agent.process.poll() is None, "the agent exited although --linger was given"
        metrics = scrape_metrics(port)
        jvm_rows = trace.filter(pl.col("jvm_heap_max_bytes").is_not_null())
        assert (
            metric_sum(metrics, "daytwo_agent_messages_sent_total")
            == trace["timestamp"].n_unique() + jvm_rows.height
        )
        records = read_all(
            kafka_bootstrap, prefix + "daytwo.jvm-samples.v1", at_least=jvm_rows.height, timeout=30
        )
        assert agent.stop() == 0, agent.log_tail(40)
    assert "Traceback" not in agent.log_tail(200)

    batches = [decode(JvmSampleBatch, value) for _, value in records if value is not None]
    assert all(batch.source == "replay" for batch in batches)
    arrived = [
        (s.timestamp, s.container, s.interval_seconds, s.heap_used_after_gc_bytes,
         s.heap_max_bytes, s.metaspace_used_bytes, s.code_cache_bytes, s.gc_overhead_ratio)
        for batch in batches
        for s in batch.samples
    ]  # fmt: skip
    for batch in batches:
        assert {s.timestamp for s in batch.samples} == {batch.timestamp}
    nonheap = jvm_rows["jvm_nonheap_bytes"]
    expected = [
        (float(row["timestamp"]), row["container"], 10.0, row["jvm_heap_used_bytes"],
         row["jvm_heap_max_bytes"], row["jvm_nonheap_bytes"],
         None if row["jvm_nonheap_bytes"] is None else 0, row["jvm_gc_overhead_ratio"])
        for row in jvm_rows.iter_rows(named=True)
    ]  # fmt: skip
    assert arrived == expected
    assert 0 < nonheap.null_count() < len(nonheap)  # both branches of the non-heap mapping


# --------------------------------------------------------------------------- prometheus


@pytest.mark.skipif(not prometheus_available(), reason="needs Debian's prometheus package")
def test_prometheus_backfill_publishes_the_generated_history(
    agent_env: str, make_topic_prefix: Callable[..., str], tmp_path: Path
) -> None:
    from tests.prom_helpers import build_prometheus  # noqa: PLC0415 - heavy only here

    cluster = generate_cluster(seed=61, containers=6, hours=3)
    build_prometheus(cluster, tmp_path / "prom")
    prefix = make_topic_prefix()
    with running_prometheus(tmp_path / "prom" / "tsdb", tmp_path / "prom") as server:
        code, output = cli(
            "agent", "--source", "prometheus", "--prometheus-url", server.url,
            "--cluster-name", "prod", "--step", "300", "--prometheus-scrape-interval", "300",
            "--backfill-start", str(cluster.start), "--backfill-end", str(cluster.end),
            "--backfill-only", "--kafka-bootstrap", agent_env, "--topic-prefix", prefix,
            "--metrics-port", "0", "--spool-dir", str(tmp_path / "spool"),
        )  # fmt: skip
    assert code == 0, output
    expected = expected_samples(cluster)
    # history goes out packed: a workload's steps in batches of up to 1,000 samples
    records = read_all(agent_env, prefix + SAMPLES, at_least=1, timeout=30)
    batches = [decode_container_batch(value) for _, value in records if value is not None]
    assert len(batches) < len(expected) / 2, "the backfill was not packed"
    problems = differences(expected, emitted_samples(per_step(batches)))
    assert not problems, problems[:10]


def per_step(batches: list[ContainerSampleBatch]) -> list[ContainerSampleBatch]:
    """Packed batches cut back into one per workload and step (what the source yields)."""
    steps: dict[tuple[str, float], list[ContainerSample]] = {}
    envelope: dict[tuple[str, float], ContainerSampleBatch] = {}
    for batch in batches:
        for sample in batch.samples:
            steps.setdefault((batch.workload, sample.timestamp), []).append(sample)
            envelope[(batch.workload, sample.timestamp)] = batch
    return [
        envelope[key].model_copy(update={"timestamp": key[1], "samples": tuple(samples)})
        for key, samples in steps.items()
    ]


# --------------------------------------------------------------------------- kubernetes


def recorded(kind: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((K8S / f"{LIST_FILES[kind]}.json").read_text())
    return document


def pods_on(node: str | None) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = recorded("Pod")["items"]
    return [p for p in items if node is None or p.get("spec", {}).get("nodeName") == node]


def fixture_state(node: str | None) -> ClusterState:
    state = ClusterState()
    for kind in LIST_FILES:
        state.replace(kind, pods_on(node) if kind == "Pod" else recorded(kind)["items"])
    return state


class _ApiHandler(BaseHTTPRequestHandler):
    """A read-only Kubernetes API: lists from the recordings, watches that stay quiet."""

    closing: ClassVar[threading.Event]
    paths: ClassVar[dict[str, str]] = {
        (
            f"/api/{i.version}/{i.plural}"
            if not i.group
            else f"/apis/{i.group}/{i.version}/{i.plural}"
        ): k
        for k, i in KINDS.items()
    }

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        kind = self.paths.get(url.path)
        if kind is None:
            self.send_error(404)
            return
        if query.get("watch") in {"true", "1"}:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.flush()
            self.closing.wait(min(float(query.get("timeoutSeconds", 30)), 30))
            return
        document = recorded(kind)
        selector = query.get("fieldSelector", "")
        if kind == "Pod" and selector.startswith("spec.nodeName="):
            document = {**document, "items": pods_on(selector.split("=", 1)[1])}
        body = json.dumps(document).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


class _KubeletHandler(BaseHTTPRequestHandler):
    """``/stats/summary``: the first recorded summary once, then the second one."""

    served: ClassVar[list[str]]

    def do_GET(self) -> None:
        if self.path != "/stats/summary":
            self.send_error(404)
            return
        self.served.append(self.headers.get("Authorization", ""))
        name = "t0" if len(self.served) == 1 else "t1"
        body = (K8S / f"stats_summary_{name}.json").read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@contextlib.contextmanager
def serving(server: ThreadingHTTPServer) -> Iterator[int]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def api_server(tmp_path: Path) -> Iterator[Path]:
    """A Kubernetes API on 127.0.0.1; yields a kubeconfig file pointing at it."""
    closing = threading.Event()
    handler = type("Api", (_ApiHandler,), {"closing": closing})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    with serving(server) as port:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {"name": "prod", "cluster": {"server": f"http://127.0.0.1:{port}"}}
                    ],
                    "users": [{"name": "agent", "user": {"token": "api-token"}}],
                    "contexts": [{"name": "prod", "context": {"cluster": "prod", "user": "agent"}}],
                    "current-context": "prod",
                }
            )
        )
        try:
            yield kubeconfig
        finally:
            closing.set()


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (the kubelet's serving certificate)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubelet")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "kubelet.crt", directory / "kubelet.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def without_time(batch: ContainerSampleBatch) -> dict[str, Any]:
    return {s.container: s.model_dump(exclude={"timestamp"}) for s in batch.samples}


def test_kubelet_source_maps_pods_with_the_inventory_and_publishes_rates(
    kafka_bootstrap: str, make_topic_prefix: Callable[..., str], tmp_path: Path
) -> None:
    import ssl  # noqa: PLC0415

    cert, key = self_signed_certificate(tmp_path)
    token = tmp_path / "token"
    token.write_text("kubelet-token\n")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    served: list[str] = []
    kubelet = ThreadingHTTPServer(
        ("127.0.0.1", 0), type("K", (_KubeletHandler,), {"served": served})
    )
    kubelet.daemon_threads = True
    kubelet.socket = context.wrap_socket(kubelet.socket, server_side=True)

    # the oracle: the library's own conversion of the same two summaries
    index = pod_index(fixture_state(NODE), cluster="prod")
    converter = SummaryConverter(agent=NODE)
    converter.convert(json.loads((K8S / "stats_summary_t0.json").read_text()), index, 0.0)
    expected = converter.convert(
        json.loads((K8S / "stats_summary_t1.json").read_text()), index, 1.0
    )
    assert expected.batches, "the fixtures must yield samples"

    prefix = make_topic_prefix()
    with api_server(tmp_path) as kubeconfig, serving(kubelet) as kubelet_port:
        env = child_env(
            kafka_bootstrap, prefix, tmp_path,
            DAYTWO_NODE_NAME=NODE, DAYTWO_NODE_IP="127.0.0.1", DAYTWO_CLUSTER_NAME="prod",
            DAYTWO_KUBELET_PORT=str(kubelet_port), DAYTWO_KUBELET_CA_FILE=str(cert),
            DAYTWO_KUBELET_TOKEN_FILE=str(token), DAYTWO_SCRAPE_INTERVAL_SECONDS="0.3",
            KUBECONFIG=str(kubeconfig),
        )  # fmt: skip
        with running(
            start_child("agent", ["agent", "--source", "kubelet"], env, tmp_path)
        ) as child:
            wait_until(lambda: len(served) >= 3, 30, child)
            records = read_all(
                kafka_bootstrap, prefix + SAMPLES, at_least=len(expected.batches), timeout=20
            )
            assert child.stop() == 0, child.log_tail()
    batches = [decode_container_batch(value) for _, value in records if value is not None]
    assert {b.source for b in batches} == {"kubelet"}
    assert {b.agent for b in batches} == {NODE}
    assert {b.workload: without_time(b) for b in batches} == {
        b.workload: without_time(b) for b in expected.batches
    }
    assert len(batches) == len(expected.batches)  # the unchanged third summary adds nothing
    assert set(served) == {"Bearer kubelet-token"}


def test_inventory_publishes_every_workload_spec_keyed_by_workload_id(
    kafka_bootstrap: str, make_topic_prefix: Callable[..., str], tmp_path: Path
) -> None:
    expected = {
        w.id: w.spec.model_dump(exclude={"timestamp"})
        for w in build_workloads(fixture_state(None), cluster="prod", timestamp=0.0)
    }
    prefix = make_topic_prefix()
    with api_server(tmp_path) as kubeconfig:
        env = child_env(
            kafka_bootstrap, prefix, tmp_path, DAYTWO_CLUSTER_NAME="prod",
            DAYTWO_SCRAPE_INTERVAL_SECONDS="0.3", KUBECONFIG=str(kubeconfig),
        )  # fmt: skip
        with running(start_child("inventory", ["inventory"], env, tmp_path)) as child:
            records = read_all(
                kafka_bootstrap, prefix + "daytwo.workload-specs.v1", at_least=len(expected),
                timeout=30, quiet_seconds=1.5,
            )  # fmt: skip
            assert child.stop() == 0, child.log_tail()
    published: dict[str, dict[str, Any]] = {}
    for key, value in records:
        assert key is not None
        assert value is not None
        spec = decode(WorkloadSpec, value)
        assert key.decode() == spec.workload
        published[spec.workload] = spec.model_dump(exclude={"timestamp"})
    assert len(records) == len(expected)  # unchanged specs are not published again
    assert published == expected


# --------------------------------------------------------------------------- jvm-log


def read_position(pid: int, path: Path) -> int | None:
    """How far process ``pid`` has read its open file ``path`` (/proc fdinfo)."""
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if fd.readlink() == path:
                    for line in Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text().splitlines():
                        if line.startswith("pos:"):
                            return int(line.split()[1])
    return None


def test_jvm_log_source_publishes_what_the_gc_log_says(
    kafka_bootstrap: str, make_topic_prefix: Callable[..., str], tmp_path: Path
) -> None:
    lines = (GCLOGS / "g1.log").read_text().splitlines(keepends=True)
    first, rest = "".join(lines[:40]), "".join(lines[40:])
    parser = GcLogParser()
    parser.feed_lines(first.splitlines())
    aggregator = IntervalAggregator()
    aggregator.add_all(parser.feed_lines(rest.splitlines()))
    truth = aggregator.close(1.0, heap_max_bytes=parser.init.heap_max_bytes).sample_fields()
    assert truth["gc_count"], "the fixture's tail must hold collections"

    log = tmp_path / "gc.log"
    log.write_text(first)
    workload = "prod/shop/Deployment/checkout"
    prefix = make_topic_prefix()
    env = child_env(kafka_bootstrap, prefix, tmp_path, DAYTWO_SCRAPE_INTERVAL_SECONDS="0.3")
    args = [
        "agent",
        "--source",
        "jvm-log",
        "--cluster-name",
        "prod",
        "--gc-log",
        f"{workload}:app={log}",
    ]
    with running(start_child("agent", args, env, tmp_path)) as child:
        # the first scrape only sets the baseline: append once it has read the head
        wait_until(lambda: read_position(child.process.pid, log) == len(first.encode()), 30, child)
        with log.open("a") as handle:
            handle.write(rest)
        size = log.stat().st_size
        wait_until(lambda: read_position(child.process.pid, log) == size, 30, child)
        time.sleep(1.0)  # the scrape that read the tail publishes within one interval
        assert child.stop() == 0, child.log_tail()
    records = read_all(
        kafka_bootstrap, prefix + "daytwo.jvm-samples.v1", at_least=1, timeout=20, quiet_seconds=1
    )
    samples = [
        sample
        for _, value in records
        if value is not None
        for sample in decode(JvmSampleBatch, value).samples
        if sample.gc_count
    ]
    assert {s.container for s in samples} == {"app"}
    assert sum(s.gc_count or 0 for s in samples) == truth["gc_count"]
    assert max(s.gc_pause_max_seconds or 0 for s in samples) == truth["gc_pause_max_seconds"]
    assert sum(s.gc_pause_seconds or 0 for s in samples) == pytest.approx(truth["gc_pause_seconds"])
    assert (
        max(s.heap_used_after_gc_bytes or 0 for s in samples) == truth["heap_used_after_gc_bytes"]
    )
    assert {s.collector for s in samples} == {parser.init.collector}  # from "Using G1"


# --------------------------------------------------------------------------- bad flags


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["--source", "nope"], 2, "source: Input should be 'cgroup'"),
        (["--source", "replay"], 1, "--trace FILE"),
        (["--source", "replay", "--trace", "{tmp}/t.csv", "--speedup", "20000"], 2,
         "replay_speedup"),
        (["--source", "replay", "--trace", "{tmp}/missing.csv"], 1, "cannot read trace"),
        (["--source", "prometheus"], 1, "--prometheus-url"),
        (["--source", "prometheus", "--prometheus-url", "http://p:9090", "--backfill-only"], 1,
         "--backfill-start or --backfill-days"),
        (["--source", "prometheus", "--backfill-start", "2024-01-01", "--backfill-days", "1"], 2,
         "not both"),
        (["--source", "kubelet"], 1, "DAYTWO_NODE_NAME"),
        (["--source", "kubelet", "--node-name", "n1"], 1, "DAYTWO_NODE_IP"),
        (["--source", "jvm-log"], 1, "--gc-log WORKLOAD:CONTAINER=GC_LOG"),
        (["--source", "jvm-log", "--gc-log", "/var/log/gc.log"], 1, "expected WORKLOAD:CONTAINER"),
        (["--source", "jvm-log", "--gc-log", "other/a/Deployment/b:app=/x"], 1,
         "not in cluster 'local'"),
        (["--source", "micrometer"], 1, "--micrometer WORKLOAD:CONTAINER=MICROMETER_URL"),
        (["--source", "cgroup"], 1, "--mapping FILE"),
    ],
)  # fmt: skip
def test_bad_flags_give_clear_errors(
    args: list[str], code: int, says: str, agent_env: str, tmp_path: Path
) -> None:
    write_trace(tmp_path / "t.csv", interval=10, points=2)
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    exit_code, output = cli("agent", *argv, "--kafka-bootstrap", agent_env, "--metrics-port", "0")
    assert exit_code == code, output
    assert says in " ".join(output.split()), output
    assert "Traceback" not in output
