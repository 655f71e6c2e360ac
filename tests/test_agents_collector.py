"""agents/collector.py: batches per workload, contract-valid messages, the agent loop."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry

from agents.cgroup import CgroupMounts
from agents.collector import (
    CONTAINER_SAMPLES_TOPIC,
    NODE_SAMPLES_TOPIC,
    AgentMetrics,
    Collector,
    ContainerCollector,
    NodeCollector,
    run_agent,
)
from agents.mapping import parse_mapping
from pipeline.errors import CollectorError
from schemas.models import ContainerSampleBatch, NodeSample
from schemas.validate import decode
from tests.cgroup_helpers import BUSY_LOOP, MIB, process_in_v1_cgroup, requires_v1_cgroups

V2_MOUNTINFO = "26 22 0:24 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"

MAPPING = """\
cluster: local
cgroups:
  - path: /demo/web
    workload: local/demo/Deployment/web
    container: web
  - path: /demo/web-sidecar-gone
    workload: local/demo/Deployment/web
    container: sidecar
  - path: /demo/db
    workload: local/demo/StatefulSet/db
    container: postgres
"""


def write_v2_cgroup(
    directory: Path, *, usage_usec: int, periods: int, throttled: int, oom_kills: int
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "cpu.stat": (
            f"usage_usec {usage_usec}\nuser_usec 0\nsystem_usec 0\n"
            f"nr_periods {periods}\nnr_throttled {throttled}\nthrottled_usec {throttled * 1000}\n"
        ),
        "cpu.max": "200000 100000\n",
        "memory.current": f"{64 * MIB}\n",
        "memory.stat": f"anon {48 * MIB}\nfile {16 * MIB}\ninactive_file {8 * MIB}\n",
        "memory.max": f"{256 * MIB}\n",
        "memory.events": f"low 0\nhigh 0\nmax 0\noom 0\noom_kill {oom_kills}\n",
    }
    for name, text in files.items():
        (directory / name).write_text(text)


@pytest.fixture
def synthetic_host(tmp_path: Path) -> tuple[CgroupMounts, Path]:
    (tmp_path / "mountinfo").write_text(V2_MOUNTINFO)
    mounts = CgroupMounts.discover(tmp_path / "mountinfo", root=tmp_path)
    assert mounts.unified is not None
    return mounts, mounts.unified


def test_one_batch_per_workload_and_a_missing_cgroup_only_skips_itself(
    synthetic_host: tuple[CgroupMounts, Path],
) -> None:
    mounts, unified = synthetic_host
    for name in ("web", "db"):
        write_v2_cgroup(unified / "demo" / name, usage_usec=0, periods=0, throttled=0, oom_kills=0)
    registry = CollectorRegistry()
    collector = ContainerCollector(
        parse_mapping(MAPPING),
        mounts=mounts,
        agent="host-1",
        metrics=AgentMetrics.create(registry),
    )
    assert collector.scrape(1_700_000_000.0) == []  # baselines only
    assert collector.read_errors == 1  # the sidecar's cgroup does not exist

    # 10 s later: web used 5 s of CPU (0.5 cores), 100 periods, 25 throttled, one OOM kill
    write_v2_cgroup(
        unified / "demo" / "web", usage_usec=5_000_000, periods=100, throttled=25, oom_kills=1
    )
    batches = dict(collector.scrape(1_700_000_010.0))
    assert collector.read_errors == 2
    assert registry.get_sample_value("daytwo_agent_read_errors_total", {"source": "cgroup"}) == 2
    assert set(batches) == {"local/demo/Deployment/web", "local/demo/StatefulSet/db"}

    web = batches["local/demo/Deployment/web"]
    assert {key: web[key] for key in ("kind", "source", "agent", "workload", "timestamp")} == {
        "kind": "container-sample-batch",
        "source": "cgroup",
        "agent": "host-1",
        "workload": "local/demo/Deployment/web",
        "timestamp": 1_700_000_010.0,
    }
    [sample] = web["samples"]
    assert sample["container"] == "web"
    assert sample["interval_seconds"] == 10.0
    assert sample["cpu_usage_cores"] == pytest.approx(0.5)
    assert (sample["cpu_periods"], sample["cpu_throttled_periods"]) == (100, 25)
    assert sample["cpu_throttled_ratio"] == pytest.approx(0.25)
    assert sample["cpu_throttled_seconds"] == pytest.approx(0.025)
    assert sample["memory_working_set_bytes"] == 56 * MIB
    assert sample["memory_rss_bytes"] == 48 * MIB
    assert sample["oom_kills"] == 1
    assert (sample["cpu_limit_cores"], sample["memory_limit_bytes"]) == (2.0, 256 * MIB)

    # every batch is a valid contract message once encoded
    for batch in batches.values():
        decoded = decode(ContainerSampleBatch, orjson.dumps(batch))
        assert decoded.workload == batch["workload"]


def test_messages_are_keyed_by_workload_on_the_container_topic(
    synthetic_host: tuple[CgroupMounts, Path],
) -> None:
    mounts, unified = synthetic_host
    write_v2_cgroup(unified / "demo" / "db", usage_usec=0, periods=0, throttled=0, oom_kills=0)
    mapping = parse_mapping(
        "cluster: local\ncgroups:\n  - path: /demo/db\n"
        "    workload: local/demo/StatefulSet/db\n    container: postgres\n"
    )
    collector = ContainerCollector(mapping, mounts=mounts, agent="host-1")
    collector.messages(1_700_000_000.0)
    messages = collector.messages(1_700_000_001.0)
    assert [(m.topic, m.key) for m in messages] == [
        (CONTAINER_SAMPLES_TOPIC, b"local/demo/StatefulSet/db")
    ]
    assert orjson.loads(messages[0].payload)["samples"][0]["container"] == "postgres"


def test_node_collector_emits_a_valid_node_sample_keyed_by_node() -> None:
    collector = NodeCollector("node-1")
    assert collector.messages(1_700_000_000.0) == []
    time.sleep(0.05)
    [message] = collector.messages(1_700_000_000.1)
    assert (message.topic, message.key) == (NODE_SAMPLES_TOPIC, b"node-1")
    sample = decode(NodeSample, message.payload)
    assert sample.node == "node-1"


class ListPublisher:
    """An in-memory Publisher: records what was sent and flushed."""

    def __init__(self, stop_after_flushes: int, stop_event: asyncio.Event) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.flushes = 0
        self.closed = False
        self._stop_after = stop_after_flushes
        self._stop_event = stop_event

    async def send(self, topic: str, key: bytes, value: bytes | None) -> None:
        assert value is not None  # no tombstones in these tests
        self.sent.append((topic, key, value))

    async def flush(self) -> None:
        self.flushes += 1
        if self.flushes >= self._stop_after:
            self._stop_event.set()

    async def close(self) -> None:
        self.closed = True


def test_run_agent_publishes_every_interval_and_survives_a_failing_collector(
    synthetic_host: tuple[CgroupMounts, Path], tmp_path: Path
) -> None:
    mounts, unified = synthetic_host
    for name in ("web", "db"):
        write_v2_cgroup(unified / "demo" / name, usage_usec=0, periods=0, throttled=0, oom_kills=0)
    registry = CollectorRegistry()
    metrics = AgentMetrics.create(registry)
    broken_node = NodeCollector("broken", root=tmp_path / "no-proc-here", metrics=metrics)
    collectors: list[Collector] = [
        broken_node,
        ContainerCollector(parse_mapping(MAPPING), mounts=mounts, agent="h", metrics=metrics),
        NodeCollector("node-1", metrics=metrics),
    ]

    async def main() -> tuple[ListPublisher, int, float]:
        stop = asyncio.Event()
        publisher = ListPublisher(stop_after_flushes=4, stop_event=stop)
        started = time.monotonic()
        published = await run_agent(
            collectors,
            publisher,
            interval_seconds=0.05,
            stop_event=stop,
            clock=time.time,
            metrics=metrics,
        )
        return publisher, published, time.monotonic() - started

    publisher, published, elapsed = asyncio.run(main())
    assert publisher.flushes == 4
    assert elapsed >= 0.15  # three sleeps of one interval between four cycles
    assert published == len(publisher.sent)
    # cycle 1 sets baselines; cycles 2-4 each send 2 workload batches + 1 node sample
    keys = [(topic, key) for topic, key, _ in publisher.sent]
    assert keys.count((CONTAINER_SAMPLES_TOPIC, b"local/demo/Deployment/web")) == 3
    assert keys.count((CONTAINER_SAMPLES_TOPIC, b"local/demo/StatefulSet/db")) == 3
    assert keys.count((NODE_SAMPLES_TOPIC, b"node-1")) == 3
    assert registry.get_sample_value("daytwo_agent_scrape_errors_total") == 4
    assert registry.get_sample_value("daytwo_agent_read_errors_total", {"source": "proc"}) == 4
    for topic, _, value in publisher.sent:
        model = ContainerSampleBatch if topic == CONTAINER_SAMPLES_TOPIC else NodeSample
        decode(model, value)


def test_run_agent_refuses_a_non_positive_interval() -> None:
    async def main() -> None:
        stop = asyncio.Event()
        await run_agent(
            [], ListPublisher(1, stop), interval_seconds=0, stop_event=stop, clock=time.time
        )

    with pytest.raises(ValueError, match="interval_seconds"):
        asyncio.run(main())


def test_node_collector_failure_is_a_collector_error(tmp_path: Path) -> None:
    with pytest.raises(CollectorError, match="proc"):
        NodeCollector("n", root=tmp_path).scrape(1.0)


@pytest.mark.cgroup
@requires_v1_cgroups
def test_collector_reads_a_real_cgroup_named_in_a_mapping() -> None:
    with process_in_v1_cgroup(
        BUSY_LOOP, cpu_limit_cores=0.5, memory_limit_bytes=200 * MIB
    ) as running:
        running.wait_for_line("ready")
        mapping = parse_mapping(
            "cluster: local\ncgroups:\n"
            f"  - path: {running.group.relative_path}\n"
            "    workload: local/demo/Deployment/burner\n    container: burner\n"
        )
        collector = ContainerCollector(mapping)
        assert collector.scrape(time.time()) == []
        time.sleep(1.0)
        [(workload, batch)] = collector.scrape(time.time())
    assert workload == "local/demo/Deployment/burner"
    decode(ContainerSampleBatch, orjson.dumps(batch))
    [sample] = batch["samples"]
    assert sample["cpu_usage_cores"] == pytest.approx(0.5, rel=0.2)
    assert sample["cpu_limit_cores"] == 0.5
    assert sample["memory_limit_bytes"] == 200 * MIB
    assert sample["cpu_throttled_periods"] > 0
