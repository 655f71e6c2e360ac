"""agents/publisher.py: producer settings, failure modes, and one round trip to a broker."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from typing import Any

import orjson
import pytest
from aiokafka import (  # type: ignore[import-untyped, unused-ignore]  # aiokafka has no py.typed
    AIOKafkaConsumer,
)
from prometheus_client import CollectorRegistry

from agents.collector import CONTAINER_SAMPLES_TOPIC
from agents.publisher import MAX_REQUEST_SIZE_BYTES, KafkaPublisher, Publisher
from pipeline.errors import BrokerError, ConfigError
from tests.conftest import KAFKA_BOOTSTRAP_ENV


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
