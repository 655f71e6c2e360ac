"""agents/publisher.py: producer settings, failure modes, and one round trip to a broker."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import (  # type: ignore[import-untyped, unused-ignore]  # aiokafka has no py.typed
    AIOKafkaConsumer,
)
from prometheus_client import CollectorRegistry

from agents.collector import CONTAINER_SAMPLES_TOPIC, OutgoingMessage, run_agent
from agents.limits import InputGuard, InputLimits
from agents.publisher import MAX_REQUEST_SIZE_BYTES, KafkaPublisher, Publisher, SpoolingPublisher
from agents.spool import Spool
from pipeline.broker import EmbeddedBroker
from pipeline.errors import BrokerError, ConfigError
from pipeline.topics import ensure_topics
from tests.conftest import KAFKA_BOOTSTRAP_ENV, unique_topic_prefix


def test_producer_is_idempotent_acks_all_batched_and_allows_8_mib() -> None:
    settings = KafkaPublisher(
        "127.0.0.1:9092", linger_ms=5, client_id="agent-x"
    ).producer_settings()
    assert settings["enable_idempotence"] is True
    assert settings["acks"] == "all"
    assert settings["linger_ms"] == 5
    assert settings["compression_type"] is None
    assert settings["max_request_size"] == MAX_REQUEST_SIZE_BYTES == 8 * 1024 * 1024
    relaxed = KafkaPublisher("127.0.0.1:9092", idempotent=False).producer_settings()
    assert relaxed["enable_idempotence"] is False
    assert relaxed["acks"] == "all"
    assert settings["client_id"] == "agent-x"
    assert settings["bootstrap_servers"] == "127.0.0.1:9092"


@pytest.mark.parametrize("linger_ms", [0, -1])
def test_unbatched_producer_is_refused(linger_ms: int) -> None:
    with pytest.raises(ConfigError, match="linger_ms"):
        KafkaPublisher("127.0.0.1:9092", linger_ms=linger_ms)


def test_counters_live_on_the_registry_passed_in() -> None:
    registry = CollectorRegistry()
    KafkaPublisher("127.0.0.1:9092", registry=registry)
    names = {metric.name for metric in registry.collect()}
    assert {"daytwo_agent_messages_sent", "daytwo_agent_messages_failed"} <= names


def test_send_before_start_says_how_to_use_it() -> None:
    async def main() -> None:
        await KafkaPublisher("127.0.0.1:9092").send("t", b"k", b"v")

    with pytest.raises(BrokerError, match="start"):
        asyncio.run(main())


def closed_local_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # nothing listens there once the probe is closed


def test_unreachable_broker_is_a_broker_error_naming_the_address() -> None:
    address = f"127.0.0.1:{closed_local_port()}"

    async def main() -> None:
        async with KafkaPublisher(address, request_timeout_ms=2_000):
            pass

    started = time.monotonic()
    with pytest.raises(BrokerError, match=address):
        asyncio.run(main())
    assert time.monotonic() - started < 30


def test_kafka_publisher_satisfies_the_protocol() -> None:
    publisher: Publisher = KafkaPublisher("127.0.0.1:9092")
    assert callable(publisher.flush)


async def read_back(bootstrap: str, topic: str, count: int) -> list[Any]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    received: list[Any] = []
    try:
        deadline = time.monotonic() + 20
        while len(received) < count and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                received.extend(records)
    finally:
        await consumer.stop()
    return received


@pytest.mark.integration
def test_messages_reach_the_broker_keyed_and_counted(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    topic = topic_prefix + CONTAINER_SAMPLES_TOPIC
    registry = CollectorRegistry()
    messages = [
        (f"local/demo/Deployment/w{i % 3}".encode(), orjson.dumps({"n": i})) for i in range(20)
    ]
    # The embedded broker (Tansu) cannot init idempotent aiokafka producers; a real Kafka can.
    idempotent = bool(os.environ.get(KAFKA_BOOTSTRAP_ENV))

    async def main() -> list[Any]:
        async with KafkaPublisher(
            kafka_bootstrap, registry=registry, idempotent=idempotent
        ) as publisher:
            for key, value in messages:
                await publisher.send(topic, key, value)
            await publisher.flush()
        return await read_back(kafka_bootstrap, topic, len(messages))

    received = asyncio.run(main())
    assert registry.get_sample_value("daytwo_agent_messages_sent_total", {"topic": topic}) == 20
    assert registry.get_sample_value("daytwo_agent_messages_failed_total", {"topic": topic}) is None
    assert sorted((r.key, r.value) for r in received) == sorted(messages)
    partitions_by_key: dict[bytes, set[int]] = {}
    for record in received:
        partitions_by_key.setdefault(record.key, set()).add(record.partition)
    assert all(len(partitions) == 1 for partitions in partitions_by_key.values())


# --- SpoolingPublisher: surviving a broker outage ---------------------------------------

SAMPLES = "daytwo.container-samples.v1"
WORKLOADS = [f"local/demo/Deployment/w{i}".encode() for i in range(3)]


class StepClock:
    """Monotonic time plus a jump the test controls: the publisher retries the broker
    only when the test moves the clock past its back-off (no race with topic creation)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset

    def jump(self, seconds: float = 3600.0) -> None:
        self.offset += seconds


def spooling_publisher(
    bootstrap: str,
    spool_dir: Path,
    registry: CollectorRegistry,
    clock: StepClock,
    *,
    spool_max_bytes: int = 1 << 20,
    limits: InputLimits | None = None,
    drain_batch_records: int = 500,
    drain_budget_seconds: float = 5.0,
    guarded: bool = True,
) -> SpoolingPublisher:
    """A spooling publisher that retries only when the test's clock jumps.

    ``guarded=False`` leaves out the input guard, so oversized records reach the
    producer (to be refused there).
    """
    kafka = KafkaPublisher(bootstrap, idempotent=False, request_timeout_ms=1_500, registry=registry)
    return SpoolingPublisher(
        kafka,
        Spool(spool_dir, spool_max_bytes, registry),
        guard=InputGuard(limits or InputLimits(), registry) if guarded else None,
        registry=registry,
        retry_initial_seconds=600.0,  # only StepClock.jump() lets it retry
        retry_max_seconds=600.0,
        drain_batch_records=drain_batch_records,
        drain_budget_seconds=drain_budget_seconds,
        clock=clock,
    )


def connected(publisher: SpoolingPublisher) -> bool:
    """Read through a call: mypy would otherwise narrow the property across awaits."""
    return publisher.connected


async def until(condition: Callable[[], bool], timeout_seconds: float = 30.0) -> None:
    """Poll ``condition`` every 10 ms; fail the test if it stays false too long."""
    for _ in range(int(timeout_seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"condition still false after {timeout_seconds} s")


def batch(serial: int, size: int = 0) -> tuple[bytes, bytes]:
    """One message per 'scrape': key = workload, value carries the agent's serial."""
    return WORKLOADS[serial % 3], orjson.dumps({"serial": serial, "pad": "x" * size})


@pytest.fixture
def restartable_broker() -> Iterator[EmbeddedBroker]:
    """An embedded broker of this test alone, restartable on the same port."""
    broker = EmbeddedBroker(port=closed_local_port())
    try:
        yield broker
    finally:
        broker.stop()


def restart(broker: EmbeddedBroker, prefix: str) -> None:
    """Start the (in-memory, hence empty) broker and create the topics again."""
    broker.start()
    asyncio.run(ensure_topics(broker.bootstrap, prefix=prefix, partitions_override=1))


def crash(broker: EmbeddedBroker) -> None:
    """Kill the broker at once (SIGKILL), as a node or broker crash would.

    Why not ``stop()`` alone: Tansu ignores SIGTERM while clients are connected, so a
    graceful stop waits out its 5 s grace period.
    """
    pid = broker.pid
    assert pid is not None
    os.killpg(pid, signal.SIGKILL)
    broker.stop()


def serials(records: list[Any]) -> list[int]:
    return [int(orjson.loads(record.value)["serial"]) for record in records]


@pytest.mark.integration
def test_outage_spools_then_drains_in_order_exactly_once(
    restartable_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    broker, prefix = restartable_broker, unique_topic_prefix()
    topic = prefix + SAMPLES
    restart(broker, prefix)
    registry, clock = CollectorRegistry(), StepClock()

    async def main() -> list[Any]:
        publisher = spooling_publisher(broker.bootstrap, tmp_path, registry, clock)
        async with publisher:
            assert connected(publisher)
            for serial in range(4):
                await publisher.send(topic, *batch(serial))
            await publisher.flush()
            assert publisher.spool.depth_records == 0  # delivered directly

            crash(broker)  # everything it held is gone: it is in-memory
            for cycle in range(4):  # four scrapes while the broker is away
                for serial in range(4 + 5 * cycle, 9 + 5 * cycle):
                    await publisher.send(topic, *batch(serial))
                await publisher.flush()
            assert not connected(publisher)
            assert publisher.spool.depth_records == 20
            clock.jump()
            await publisher.flush()  # due to retry, but the broker still refuses
            assert not connected(publisher)
            assert publisher.spool.depth_records == 20

            await asyncio.to_thread(restart, broker, prefix)
            for serial in range(24, 26):  # scraped before the retry: queued behind
                await publisher.send(topic, *batch(serial))
            assert publisher.spool.depth_records == 22
            clock.jump()
            await publisher.flush()
            assert connected(publisher)
            assert publisher.spool.depth_records == 0
            assert publisher.spool.disk_bytes <= 64  # space given back
            await publisher.send(topic, *batch(26))  # direct again
            assert publisher.spool.depth_records == 0
        return await read_back(broker.bootstrap, topic, 23)

    received = asyncio.run(main())
    assert serials(received) == list(range(4, 27))  # each once, in order, no gap
    assert registry.get_sample_value("daytwo_agent_messages_spooled_total", {"topic": topic}) == 22
    assert registry.get_sample_value("daytwo_agent_messages_drained_total", {"topic": topic}) == 22
    assert registry.get_sample_value("daytwo_agent_broker_connected") == 1
    assert registry.get_sample_value("daytwo_agent_spool_depth_records") == 0


@pytest.mark.integration
def test_new_messages_queue_behind_a_partly_drained_spool(
    restartable_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    broker, prefix = restartable_broker, unique_topic_prefix()
    topic = prefix + SAMPLES
    registry, clock = CollectorRegistry(), StepClock()

    async def main() -> list[Any]:
        # Two records per flush: the drain budget is spent after the first batch.
        publisher = spooling_publisher(
            broker.bootstrap,
            tmp_path,
            registry,
            clock,
            drain_batch_records=2,
            drain_budget_seconds=1e-9,
        )
        async with publisher:  # the broker is not running yet
            for serial in range(6):
                await publisher.send(topic, *batch(serial))
            await asyncio.to_thread(restart, broker, prefix)
            clock.jump()
            await publisher.flush()
            assert connected(publisher)
            assert publisher.spool.depth_records == 4
            for serial in range(6, 9):  # connected, but older ones still wait
                await publisher.send(topic, *batch(serial))
            assert publisher.spool.depth_records == 7
            for _ in range(4):
                await publisher.flush()
            assert publisher.spool.depth_records == 0
        return await read_back(broker.bootstrap, topic, 9)

    assert serials(asyncio.run(main())) == list(range(9))


def drain_test_publisher(
    bootstrap: str, spool_dir: Path, registry: CollectorRegistry, clock: StepClock
) -> SpoolingPublisher:
    """No input guard: these records must reach the producer to be refused there."""
    return spooling_publisher(
        bootstrap, spool_dir, registry, clock, spool_max_bytes=32 << 20, guarded=False
    )


@pytest.mark.integration
def test_a_record_kafka_refuses_for_good_is_dropped_and_does_not_block(
    restartable_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    broker, prefix = restartable_broker, unique_topic_prefix()
    topic = prefix + SAMPLES
    registry, clock = CollectorRegistry(), StepClock()
    too_large = b"x" * (MAX_REQUEST_SIZE_BYTES + 1)  # the producer refuses it for good

    async def main() -> list[Any]:
        async with drain_test_publisher(broker.bootstrap, tmp_path, registry, clock) as publisher:
            await publisher.send(topic, *batch(0))  # broker not running: spooled
            await publisher.send(topic, b"k", too_large)
            await publisher.send(topic, *batch(1))
            await asyncio.to_thread(restart, broker, prefix)
            clock.jump()
            await publisher.flush()
            assert connected(publisher)
            assert publisher.spool.depth_records == 0
            await publisher.send(topic, b"k", too_large)  # directly: dropped as well
            await publisher.send(topic, *batch(2))
            await publisher.flush()
            assert connected(publisher)
        return await read_back(broker.bootstrap, topic, 3)

    assert serials(asyncio.run(main())) == [0, 1, 2]
    dropped = {"reason": "rejected_by_broker"}
    assert registry.get_sample_value("daytwo_agent_messages_dropped_total", dropped) == 2


@pytest.mark.integration
def test_a_failed_send_keeps_itself_and_everything_behind_it(
    restartable_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    broker, prefix = restartable_broker, unique_topic_prefix()
    topic = prefix + SAMPLES
    registry, clock = CollectorRegistry(), StepClock()
    invalid_topic = "not a topic!"  # its metadata never arrives: a retriable failure
    spooled = [(topic, *batch(0)), (invalid_topic, *batch(1)), (topic, *batch(2))]

    async def main() -> tuple[list[tuple[str, bytes, bytes | None]], list[Any]]:
        async with drain_test_publisher(broker.bootstrap, tmp_path, registry, clock) as publisher:
            for message in spooled:
                await publisher.send(*message)
            await asyncio.to_thread(restart, broker, prefix)
            clock.jump()
            await publisher.flush()
            assert not connected(publisher)  # the failure counts as an outage
            kept = [(r.topic, r.key, r.value) for r in publisher.spool.peek_batch(10)]
        delivered = len(spooled) - len(kept)
        return kept, await read_back(broker.bootstrap, topic, delivered)

    kept, received = asyncio.run(main())
    # What stays is a suffix that starts at or before the failed record: nothing after
    # a failure is acknowledged in the spool, nothing is reordered or lost.
    assert (invalid_topic, *batch(1)) in kept
    assert kept == spooled[len(spooled) - len(kept) :]
    assert [(topic, r.key, r.value) for r in received] == spooled[: len(spooled) - len(kept)]


@pytest.mark.integration
def test_spool_outlives_the_agent_and_its_cap_keeps_the_newest(
    restartable_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    broker, prefix = restartable_broker, unique_topic_prefix()
    topic = prefix + SAMPLES
    cap = 16 * 1024
    small = InputLimits(max_payload_bytes=1000)
    first_registry = CollectorRegistry()

    async def agent_while_broker_never_started() -> None:
        publisher = spooling_publisher(
            broker.bootstrap,
            tmp_path,
            first_registry,
            StepClock(),
            spool_max_bytes=cap,
            limits=small,
        )
        async with publisher:  # start() does not fail: it spools
            assert not connected(publisher)
            for serial in range(200):
                await publisher.send(topic, *batch(serial, size=100))
                assert publisher.spool.disk_bytes <= cap
            await publisher.flush()

    asyncio.run(agent_while_broker_never_started())
    evicted = first_registry.get_sample_value("daytwo_agent_spool_evicted_records_total")
    assert evicted is not None
    assert 0 < evicted < 200
    restart(broker, prefix)

    registry = CollectorRegistry()

    async def next_agent() -> list[Any]:
        publisher = spooling_publisher(
            broker.bootstrap, tmp_path, registry, StepClock(), spool_max_bytes=cap, limits=small
        )
        async with publisher:
            kept = publisher.spool.depth_records
            assert kept == 200 - evicted
            await publisher.flush()
            assert publisher.spool.depth_records == 0
        return await read_back(broker.bootstrap, topic, kept)

    received = asyncio.run(next_agent())
    assert serials(received) == list(range(int(evicted), 200))


@pytest.mark.integration
def test_run_agent_keeps_publishing_through_an_outage(
    restartable_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    broker, prefix = restartable_broker, unique_topic_prefix()
    restart(broker, prefix)
    registry, clock = CollectorRegistry(), StepClock()

    class SerialCollector:
        """Emits one batch per scrape with the agent's next serial number."""

        def __init__(self) -> None:
            self.produced = 0

        def messages(self, now: float) -> list[OutgoingMessage]:
            key, value = batch(self.produced)
            self.produced += 1
            return [OutgoingMessage(SAMPLES, key, value)]

    collector = SerialCollector()

    async def main() -> tuple[int, int, list[Any]]:
        stop = asyncio.Event()
        publisher = spooling_publisher(broker.bootstrap, tmp_path, registry, clock)

        async def outage() -> int:
            await until(lambda: collector.produced >= 5)
            await asyncio.to_thread(crash, broker)
            # Whatever the broker acknowledged before it died died with it (in-memory).
            lost = registry.get_sample_value(
                "daytwo_agent_messages_sent_total", {"topic": prefix + SAMPLES}
            )
            await until(lambda: not connected(publisher) and publisher.spool.depth_records >= 10)
            await asyncio.to_thread(restart, broker, prefix)
            clock.jump()
            await until(lambda: publisher.spool.depth_records == 0 and collector.produced >= 30)
            stop.set()
            return int(lost or 0)

        async with publisher:
            agent = run_agent(
                [collector],
                publisher,
                interval_seconds=0.02,
                stop_event=stop,
                clock=time.time,
                topic_prefix=prefix,
            )
            published, lost = await asyncio.gather(agent, outage())
        received = await read_back(broker.bootstrap, prefix + SAMPLES, published - lost)
        return published, lost, received

    published, lost, received = asyncio.run(main())
    assert published == collector.produced
    assert lost >= 4  # the 5th scrape had started, so the first 4 were flushed (acked)
    # From the first batch the broker did not acknowledge before it died on, every
    # batch arrives once and in order, up to the last one: no gap, no duplicate.
    assert serials(received) == list(range(lost, collector.produced))
    assert registry.get_sample_value("daytwo_agent_spool_depth_records") == 0


def test_over_limit_payloads_are_rejected_and_counted_not_spooled(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    limits = InputLimits(max_payload_bytes=100)

    async def main() -> SpoolingPublisher:
        address = f"127.0.0.1:{closed_local_port()}"
        publisher = spooling_publisher(address, tmp_path, registry, StepClock(), limits=limits)
        async with publisher:
            await publisher.send("t", b"k", b"v" * 101)
            await publisher.send("t", b"k", b"v" * 100)
            assert publisher.spool.depth_records == 1  # broker down: the small one waits
        return publisher

    asyncio.run(main())
    assert (
        registry.get_sample_value("daytwo_agent_rejected_total", {"reason": "payload_too_large"})
        == 1
    )
    assert registry.get_sample_value("daytwo_agent_messages_spooled_total", {"topic": "t"}) == 1


def test_create_wires_one_registry_and_refuses_a_cap_below_one_payload(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    publisher = SpoolingPublisher.create(
        "127.0.0.1:9092", tmp_path / "spool", spool_max_bytes=4 << 20, registry=registry
    )
    names = {metric.name for metric in registry.collect()}
    assert {
        "daytwo_agent_messages_sent",
        "daytwo_agent_messages_spooled",
        "daytwo_agent_rejected",
        "daytwo_agent_spool_depth_bytes",
        "daytwo_agent_spool_depth_records",
        "daytwo_agent_spool_evicted_records",
        "daytwo_agent_spool_evicted_bytes",
        "daytwo_agent_broker_connected",
    } <= names
    as_protocol: Publisher = publisher
    assert callable(as_protocol.flush)
    asyncio.run(publisher.close())
    with pytest.raises(ConfigError, match="payload limit"):
        SpoolingPublisher.create("127.0.0.1:9092", tmp_path / "small", spool_max_bytes=64 * 1024)
    # The refused publisher released its spool directory again.
    Spool(tmp_path / "small", 64 * 1024).close()


# --- agents/limits.py -----------------------------------------------------------------


def rejected(registry: CollectorRegistry, reason: str) -> float:
    return registry.get_sample_value("daytwo_agent_rejected_total", {"reason": reason}) or 0.0


def test_labels_per_sample_are_capped() -> None:
    registry = CollectorRegistry()
    guard = InputGuard(InputLimits(max_labels_per_sample=3), registry)
    assert guard.admit_labels({"a": "1", "b": "2", "c": "3"})
    assert not guard.admit_labels({str(i): "x" for i in range(4)})
    assert rejected(registry, "too_many_labels") == 1


def test_distinct_containers_are_capped_and_idle_ones_forgotten() -> None:
    registry = CollectorRegistry()
    guard = InputGuard(InputLimits(max_containers=2, container_idle_seconds=60), registry)
    assert guard.admit_container("w/a:c1", now=0)
    assert guard.admit_container("w/a:c2", now=10)
    assert not guard.admit_container("w/a:c3", now=20)
    assert guard.admit_container("w/a:c1", now=50)  # known ones always pass
    assert rejected(registry, "too_many_containers") == 1
    # At 75 s c2 (last seen at 10) is idle; c1 (seen at 50) is not.
    assert guard.admit_container("w/a:c3", now=75)
    assert not guard.admit_container("w/a:c2", now=76)
    assert registry.get_sample_value("daytwo_agent_tracked_containers") == 2


def test_admit_batch_drops_only_the_samples_over_the_cap() -> None:
    registry = CollectorRegistry()
    guard = InputGuard(InputLimits(max_containers=2), registry)
    sample_batch = {
        "workload": "c/ns/Deployment/w",
        "samples": [{"container": name} for name in ("a", "b", "c", "a")],
    }
    admitted = guard.admit_batch(sample_batch, now=0)
    assert admitted is not None
    assert [s["container"] for s in admitted["samples"]] == ["a", "b", "a"]
    assert len(sample_batch["samples"]) == 4  # the input is not modified
    assert (
        guard.admit_batch({"workload": "c/ns/Deployment/x", "samples": [{"container": "a"}]}, 1)
        is None
    )
    assert guard.admit_batch(admitted, now=2) is admitted
    assert rejected(registry, "too_many_containers") == 2


@pytest.mark.parametrize("field", ["max_payload_bytes", "max_labels_per_sample", "max_containers"])
def test_limits_must_be_positive(field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        InputLimits(**{field: 0})
