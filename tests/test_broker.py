"""The embedded broker and topic management, against a real broker (no mocks).

Most tests use the session broker from conftest (embedded Tansu, or
``$DAYTWO_KAFKA_BOOTSTRAP``); lifecycle tests start their own embedded broker.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import (  # type: ignore[import-untyped, unused-ignore]  # aiokafka has no py.typed
    AIOKafkaConsumer,
    AIOKafkaProducer,
)
from aiokafka.admin import (  # type: ignore[import-untyped, unused-ignore]  # no py.typed
    AIOKafkaAdminClient,
    NewTopic,
)
from aiokafka.admin.config_resource import (  # type: ignore[import-untyped, unused-ignore]
    ConfigResource,
    ConfigResourceType,
)
from hypothesis import given
from hypothesis import strategies as st

from pipeline.broker import EmbeddedBroker, wait_for_kafka
from pipeline.errors import BrokerError
from pipeline.topics import (
    ALL_TOPICS,
    CONTAINER_SAMPLES,
    DEADLETTER,
    DEADLETTER_MAX_MESSAGE_BYTES,
    JVM_SAMPLES,
    NODE_SAMPLES,
    RECOMMENDATIONS,
    WORKLOAD_SPECS,
    TopicSpec,
    ensure_topics,
    topic_names,
    topic_specs,
)
from tests.conftest import unique_topic_prefix

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[1]


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
        return True


def pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, max_request_size=DEADLETTER_MAX_MESSAGE_BYTES
    )
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def consume(bootstrap: str, topic: str, count: int) -> list[Any]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    received: list[Any] = []
    try:
        async with asyncio.timeout(15):
            while len(received) < count:
                batches = await consumer.getmany(timeout_ms=500)
                for messages in batches.values():
                    received.extend(messages)
    finally:
        await consumer.stop()
    return received


async def describe(bootstrap: str, names: list[str]) -> tuple[dict[str, int], dict[str, str]]:
    """Partition counts and cleanup.policy of ``names`` as the broker reports them."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        topics = await admin.describe_topics(names)
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
        )
    finally:
        await admin.close()
    partitions = {str(t["topic"]): len(t["partitions"]) for t in topics if t["error_code"] == 0}
    policies: dict[str, str] = {}
    for response in responses:
        for resource in response.to_object()["resources"]:
            for entry in resource["config_entries"]:
                if entry["config_names"] == "cleanup.policy":
                    policies[str(resource["resource_name"])] = str(entry["config_value"])
    return partitions, policies


# --- lifecycle -------------------------------------------------------------------------


def test_start_answers_kafka_and_stop_releases_process_and_port() -> None:
    broker = EmbeddedBroker()
    with broker:
        assert broker.is_running()
        assert broker.bootstrap == f"127.0.0.1:{broker.port}"
        pid = broker.pid
        assert pid is not None
        asyncio.run(wait_for_kafka(broker.bootstrap, 5.0))
        assert not port_is_free("127.0.0.1", broker.port)
        log_path = broker.log_path
        assert log_path is not None
        assert log_path.exists()
    assert not broker.is_running()
    assert broker.pid is None
    assert not pid_exists(pid)
    assert port_is_free("127.0.0.1", broker.port)
    broker.stop()  # a second stop is harmless


def test_log_goes_to_the_requested_file(tmp_path: Path) -> None:
    log_path = tmp_path / "logs" / "tansu.log"
    with EmbeddedBroker(log_path=log_path) as broker:
        assert broker.log_path == log_path
    assert "tansu" in log_path.read_text().lower()
    assert log_path.exists()  # a log the caller asked for is kept after stop


def test_start_on_a_taken_port_fails_fast_with_the_broker_log() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        broker = EmbeddedBroker(port=port, startup_timeout=10.0)
        started = time.monotonic()
        with pytest.raises(BrokerError, match="exited") as caught:
            broker.start()
        broker.stop()
    assert time.monotonic() - started < 5.0
    assert "Address in use" in str(caught.value)
    assert not broker.is_running()


def test_wait_for_kafka_gives_up_with_a_clear_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: connections are refused
        started = time.monotonic()
        with pytest.raises(BrokerError, match=re.escape(f"127.0.0.1:{port}")):
            asyncio.run(wait_for_kafka(f"127.0.0.1:{port}", 0.5))
    assert 0.4 < time.monotonic() - started < 5.0


def test_run_broker_forever_prints_bootstrap_and_stops_cleanly_on_sigint() -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", "from pipeline.broker import run_broker_forever as r; r()"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        bootstrap = process.stdout.readline().strip()
        host, _, port = bootstrap.rpartition(":")
        assert host == "127.0.0.1"
        asyncio.run(wait_for_kafka(bootstrap, 5.0))
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert port_is_free("127.0.0.1", int(port))


# --- produce / consume -----------------------------------------------------------------


def test_keyed_records_roundtrip_in_order(kafka_bootstrap: str, topic_prefix: str) -> None:
    topic = topic_names(topic_prefix).container_samples
    records = [(b"prod/shop/Deployment/checkout", f"sample-{i}".encode()) for i in range(5)]
    asyncio.run(produce(kafka_bootstrap, topic, records))
    received = asyncio.run(consume(kafka_bootstrap, topic, len(records)))
    assert [(m.key, m.value) for m in received] == records
    assert len({m.partition for m in received}) == 1  # one key, one partition


def test_a_1_5_mb_message_fits_the_deadletter_topic(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    topic = topic_names(topic_prefix).deadletter
    payload = os.urandom(1_500_000)
    asyncio.run(produce(kafka_bootstrap, topic, [(b"original-key", payload)]))
    [message] = asyncio.run(consume(kafka_bootstrap, topic, 1))
    assert message.key == b"original-key"
    assert message.value == payload


# --- topics ----------------------------------------------------------------------------


def test_ensure_topics_creates_the_architecture_table(kafka_bootstrap: str) -> None:
    prefix = unique_topic_prefix()
    created = asyncio.run(ensure_topics(kafka_bootstrap, prefix=prefix))
    names = topic_names(prefix)
    partitions, policies = asyncio.run(describe(kafka_bootstrap, list(names.all())))
    assert [spec.name for spec in created] == list(names.all())
    assert partitions == {
        names.container_samples: 8,
        names.node_samples: 8,
        names.jvm_samples: 8,
        names.workload_specs: 8,
        names.recommendations: 8,
        names.deadletter: 1,
    }
    # Tansu reports only the configs set at creation; Apache Kafka reports all of them.
    assert policies[names.workload_specs] == "compact"
    assert policies[names.recommendations] == "compact"
    assert policies.get(names.container_samples, "delete") == "delete"
    assert policies.get(names.deadletter, "delete") == "delete"


def test_ensure_topics_is_idempotent(kafka_bootstrap: str) -> None:
    prefix = unique_topic_prefix()
    first = asyncio.run(ensure_topics(kafka_bootstrap, prefix=prefix, partitions_override=2))
    second = asyncio.run(ensure_topics(kafka_bootstrap, prefix=prefix, partitions_override=2))
    assert first == second
    partitions, _ = asyncio.run(describe(kafka_bootstrap, list(topic_names(prefix).all())))
    assert partitions[topic_names(prefix).recommendations] == 2
    assert partitions[topic_names(prefix).deadletter] == 1  # fixed, not overridden


def test_ensure_topics_refuses_a_partition_count_mismatch(kafka_bootstrap: str) -> None:
    prefix = unique_topic_prefix()
    asyncio.run(ensure_topics(kafka_bootstrap, prefix=prefix, partitions_override=2))
    with pytest.raises(BrokerError, match="2 partitions but daytwo needs 8"):
        asyncio.run(ensure_topics(kafka_bootstrap, prefix=prefix))


def test_ensure_topics_refuses_an_uncompacted_existing_topic(kafka_bootstrap: str) -> None:
    prefix = unique_topic_prefix()
    name = prefix + RECOMMENDATIONS

    async def create_plain() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(name, 8, 1)])
        finally:
            await admin.close()

    asyncio.run(create_plain())
    with pytest.raises(BrokerError, match=r"cleanup\.policy"):
        asyncio.run(ensure_topics(kafka_bootstrap, prefix=prefix))


def test_ensure_topics_names_the_broker_it_cannot_reach() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        with pytest.raises(BrokerError, match=re.escape(f"127.0.0.1:{port}")):
            asyncio.run(ensure_topics(f"127.0.0.1:{port}"))


# --- pure helpers ----------------------------------------------------------------------


def test_topic_table_matches_the_architecture() -> None:
    assert [(s.name, s.partitions, s.compacted) for s in ALL_TOPICS] == [
        (CONTAINER_SAMPLES, 8, False),
        (NODE_SAMPLES, 8, False),
        (JVM_SAMPLES, 8, False),
        (WORKLOAD_SPECS, 8, True),
        (RECOMMENDATIONS, 8, True),
        (DEADLETTER, 1, False),
    ]
    assert ALL_TOPICS[-1].max_message_bytes == DEADLETTER_MAX_MESSAGE_BYTES


@given(
    prefix=st.from_regex(r"[a-zA-Z0-9._-]{0,20}", fullmatch=True),
    override=st.none() | st.integers(min_value=1, max_value=64),
)
def test_topic_specs_prefix_names_and_override_only_unfixed_partitions(
    prefix: str, override: int | None
) -> None:
    resolved = topic_specs(prefix=prefix, partitions_override=override)
    assert [spec.name for spec in resolved] == list(topic_names(prefix).all())
    for base, spec in zip(ALL_TOPICS, resolved, strict=True):
        assert spec.name == prefix + base.name
        expected = base.partitions if override is None or base.partitions_fixed else override
        assert spec.partitions == expected
        assert (spec.compacted, spec.max_message_bytes) == (base.compacted, base.max_message_bytes)


def test_invalid_partition_counts_are_refused() -> None:
    with pytest.raises(BrokerError):
        TopicSpec("x", partitions=0, compacted=False)
    with pytest.raises(BrokerError):
        topic_specs(partitions_override=0)
