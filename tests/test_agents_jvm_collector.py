"""The JVM collector end to end: a real JVM writing a GC log, a real local Micrometer
endpoint, real jcmd; every message decoded with the contract's own decoder."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from agents.collector import AgentMetrics
from agents.jvm_collector import JVM_SAMPLES_TOPIC, JvmCollector
from agents.jvm_mapping import JvmAgentMapping, load_jvm_mapping, parse_jvm_mapping
from pipeline.errors import ConfigError
from pipeline.topics import ALL_TOPICS, JVM_SAMPLES, topic_names
from schemas.models import JvmSampleBatch
from schemas.validate import decode
from tests.test_agents_micrometer import exposition

FIXTURES = Path(__file__).parent / "fixtures" / "gclogs"
MIB = 1 << 20
needs_jdk = pytest.mark.skipif(shutil.which("jcmd") is None, reason="needs a JDK")


@pytest.fixture(scope="module")
def classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("javac") is None:
        pytest.skip("needs a JDK")
    out = tmp_path_factory.mktemp("classes")
    subprocess.run(
        ["javac", "-d", str(out), str(FIXTURES / "GcFixtureAllocator.java")],
        check=True,
        timeout=60,
    )
    return out


def _java(classes: Path, log: Path, *args: str, options: tuple[str, ...]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            "java",
            *options,
            f"-Xlog:gc*:file={log}",
            "-cp",
            str(classes),
            "GcFixtureAllocator",
            *args,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )


def test_topic_is_registered_with_the_architecture_table() -> None:
    assert JVM_SAMPLES_TOPIC == JVM_SAMPLES == topic_names().jvm_samples
    [spec] = [spec for spec in ALL_TOPICS if spec.name == JVM_SAMPLES]
    assert (spec.partitions, spec.compacted) == (8, False)
    assert topic_names("t.").jvm_samples in topic_names("t.").all()


@needs_jdk
def test_gc_log_of_a_real_jvm_becomes_valid_batches_that_add_up(
    classes: Path, tmp_path: Path
) -> None:
    log = tmp_path / "gc.log"
    options = "-XX:+UseG1GC -Xmx64m -Xms32m"
    mapping = JvmAgentMapping.model_validate(
        {
            "cluster": "local",
            "jvms": [
                {
                    "workload": "local/shop/Deployment/checkout",
                    "container": "app",
                    "gc_log": str(log),
                    "java_options": options,
                }
            ],
        }
    )
    collector = JvmCollector(mapping, agent="node-1")
    start = time.time()
    assert collector.messages(start) == []  # baseline, before the JVM even started
    process = _java(classes, log, "40", "1024", "8", "120", options=tuple(options.split()))
    batches: list[JvmSampleBatch] = []
    try:
        while process.poll() is None:
            time.sleep(0.3)
            for message in collector.messages(time.time()):
                assert message.topic == "daytwo.jvm-samples.v1"
                assert message.key == b"local/shop/Deployment/checkout"
                batches.append(decode(JvmSampleBatch, message.payload))
        assert process.wait(timeout=30) == 0
        batches += [decode(JvmSampleBatch, m.payload) for m in collector.messages(time.time())]
    finally:
        process.kill()
        process.wait(timeout=10)
        assert process.stdout is not None
        process.stdout.close()
        collector.close()
    samples = [sample for batch in batches for sample in batch.samples]
    assert len(samples) >= 3
    assert {batch.source for batch in batches} == {"gclog"}
    text = log.read_text(encoding="utf-8")
    durations = [float(ms) / 1000 for ms in re.findall(r"\] GC\(\d+\) Pause .* ([\d.]+)ms\n", text)]
    # collections: every id with a pause, plus G1 concurrent cycles that end without one
    # (an Undo cycle); a cycle's Remark and Cleanup share its id and count once
    gc_ids = set(re.findall(r"\] GC\((\d+)\) Pause .* [\d.]+ms\n", text)) | set(
        re.findall(r"\] GC\((\d+)\) Concurrent (?:Mark|Undo) Cycle [\d.]+ms\n", text)
    )
    # nothing lost or counted twice across the scrapes
    assert sum(s.gc_pause_seconds or 0 for s in samples) == pytest.approx(sum(durations))
    assert sum(s.gc_count or 0 for s in samples) == len(gc_ids)
    assert sum(s.full_gc_count or 0 for s in samples) == text.count("Pause Full (System.gc()) ")
    assert max(s.gc_pause_max_seconds or 0 for s in samples) == pytest.approx(max(durations))
    # wall-clock intervals: consecutive, positive, and the overhead is pause / interval
    for sample in samples:
        assert sample.gc_overhead_ratio == pytest.approx(
            min(1.0, (sample.gc_pause_seconds or 0) / sample.interval_seconds)
        )
    last = samples[-1]
    assert last.collector == "G1"
    assert last.heap_max_bytes == 64 * MIB
    assert last.live_set_bytes is not None
    assert 0 < last.live_set_bytes < 64 * MIB
    assert last.jvm_options == options
    assert last.flags is not None
    assert (last.flags.max_heap_bytes, last.flags.heap_sizing) == (64 * MIB, "xmx")
    assert last.flags.initial_heap_bytes == 32 * MIB
    assert last.flags.collector == "G1"
    assert collector.bad_lines == 0


@pytest.fixture
def micrometer() -> Iterator[tuple[str, list[str]]]:
    """A real local endpoint; the test appends the body each GET should serve."""
    bodies: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = (bodies[0] if len(bodies) == 1 else bodies.pop(0)).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/metrics", bodies
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@needs_jdk
def test_micrometer_and_jcmd_flags_of_a_running_jvm(
    classes: Path, tmp_path: Path, micrometer: tuple[str, list[str]]
) -> None:
    url, bodies = micrometer
    log = tmp_path / "gc.log"
    process = _java(classes, log, "20", "256", "1", "0", "60000", options=("-Xmx48m",))
    assert process.stdout is not None
    try:
        assert process.stdout.readline().startswith("ready")
        mapping_file = tmp_path / "mapping.yaml"
        mapping_file.write_text(
            f"""\
cluster: local
cgroups: []   # the cgroup agent's section; ignored here
jvms:
  - workload: local/shop/Deployment/checkout
    container: app
    gc_log: {log}
    pid: {process.pid}
  - workload: local/shop/Deployment/checkout
    container: sidecar
    micrometer_url: {url}
  - workload: local/pay/StatefulSet/ledger
    container: db
    micrometer_url: {url.replace("/metrics", "/other")}
""",
            encoding="utf-8",
        )
        mapping = load_jvm_mapping(mapping_file)
        metrics = AgentMetrics.create()
        collector = JvmCollector(mapping, agent="node-1", metrics=metrics)
        bodies += [
            exposition(pauses=10, pause_sum=1.5, allocated=1e9),
            exposition(pauses=10, pause_sum=1.5, allocated=1e9),
            exposition(pauses=14, pause_sum=2.0, allocated=1.5e9),
            exposition(pauses=14, pause_sum=2.0, allocated=1.5e9),
        ]
        assert collector.messages(1000.0) == []
        messages = collector.messages(1010.0)
        collector.close()
    finally:
        process.kill()
        process.wait(timeout=10)
        process.stdout.close()
    by_key = {m.key: decode(JvmSampleBatch, m.payload) for m in messages}
    assert set(by_key) == {b"local/shop/Deployment/checkout", b"local/pay/StatefulSet/ledger"}
    checkout = by_key[b"local/shop/Deployment/checkout"]
    assert checkout.source == "jvm"  # one sample from the log, one from Micrometer
    app, sidecar = checkout.samples
    assert app.container == "app"
    assert app.flags is not None
    assert (app.flags.max_heap_bytes, app.flags.heap_sizing) == (48 * MIB, "xmx")
    assert app.jvm_options is not None
    assert "-Xmx48m" in app.jvm_options  # read from the JVM with jcmd VM.command_line
    assert app.heap_max_bytes == 48 * MIB
    assert sidecar.gc_count == 4
    assert sidecar.gc_pause_seconds == pytest.approx(0.5)
    assert sidecar.thread_count == 31
    assert sidecar.heap_max_bytes == 512 * MIB
    assert sidecar.flags is None
    assert by_key[b"local/pay/StatefulSet/ledger"].source == "micrometer"


def test_mapping_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"jvms\.0: .*gc_log or micrometer_url"):
        parse_jvm_mapping("cluster: c\njvms:\n  - {workload: c/n/Deployment/x, container: a}\n")
    with pytest.raises(ConfigError, match="not in cluster"):
        parse_jvm_mapping(
            "cluster: c\njvms:\n  - {workload: d/n/Deployment/x, container: a, gc_log: /x}\n"
        )
    with pytest.raises(ConfigError, match="'jvms'"):
        parse_jvm_mapping("cluster: c\ncgroups: []\n")
