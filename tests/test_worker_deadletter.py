"""Acceptance: 10,000 invalid messages all reach the dead-letter topic; valid ones still count.

A real worker process (``python -m pipeline.cli worker``) on the session's Kafka (the
embedded broker unless ``DAYTWO_KAFKA_BOOTSTRAP`` is set), fed by a real aiokafka
producer. This module also holds the small helpers the other worker-level tests share
(environment, producing, starting and always stopping children, reading sets).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import socket
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import orjson
import pytest
from aiokafka import (  # type: ignore[import-untyped, unused-ignore]
    AIOKafkaConsumer,
    AIOKafkaProducer,
    TopicPartition,
)

from pipeline.launch import Child, start_child, wait_for_records
from pipeline.topics import DEADLETTER_MAX_MESSAGE_BYTES, topic_names
from schemas.models import DeadLetter, RecommendationSet
from schemas.validate import decode
from tests.invalid_messages import (
    CATEGORIES,
    OVERSIZE_LIMIT_BYTES,
    invalid_container_batches,
)

pytestmark = pytest.mark.integration

#: Partitions of the keyed topics in worker tests (any count works; 4 keeps logs short).
PARTITIONS = 4
Record = tuple[bytes | None, bytes | None]


# -- shared helpers ----------------------------------------------------------------------


def worker_env(
    bootstrap: str, prefix: str, app_id: str, data_dir: Path, **extra: str
) -> dict[str, str]:
    """``DAYTWO_*`` settings of one isolated worker (own topics, group, changelog, files)."""
    env = {
        "DAYTWO_KAFKA_BOOTSTRAP": bootstrap,
        "DAYTWO_TOPIC_PREFIX": prefix,
        "DAYTWO_WORKER_APP_ID": app_id,
        "DAYTWO_DATA_DIR": str(data_dir),
        "DAYTWO_PARTITIONS": str(PARTITIONS),
        "DAYTWO_METRICS_PORT": "0",
        "DAYTWO_LOG_LEVEL": "INFO",
        # A restarted worker waits this long for its killed predecessor to leave.
        "DAYTWO_SESSION_TIMEOUT_SECONDS": "3",
    }
    if is_embedded(bootstrap):
        env["DAYTWO_BROKER_IS_EMBEDDED"] = "1"
    env.update(extra)
    return env


def is_embedded(bootstrap: str) -> bool:
    """Whether the tests run on the embedded broker (no external Kafka configured)."""
    return os.environ.get("DAYTWO_KAFKA_BOOTSTRAP", "") != bootstrap


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def produce_async(
    bootstrap: str, topic: str, records: Sequence[tuple[bytes | None, bytes]]
) -> None:
    """Send ``records`` in order and wait until the broker acknowledged all of them."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=False,  # the embedded broker refuses InitProducerId
        linger_ms=5,
        max_request_size=DEADLETTER_MAX_MESSAGE_BYTES,
    )
    await producer.start()
    try:
        deliveries = [await producer.send(topic, value, key=key) for key, value in records]
        await producer.flush()
        for delivery in deliveries:
            await delivery
    finally:
        await producer.stop()


def produce(bootstrap: str, topic: str, records: Sequence[tuple[bytes | None, bytes]]) -> None:
    """Blocking :func:`produce_async`."""
    asyncio.run(produce_async(bootstrap, topic, records))


@contextlib.contextmanager
def running(child: Child) -> Iterator[Child]:
    """Yield ``child``; stop it on the way out whatever happened (no leaked processes)."""
    try:
        yield child
    finally:
        if child.process.poll() is None:
            child.stop(timeout=20)
        else:
            child.stop(timeout=1)  # closes the log file


def died(*children: Child) -> str | None:
    """A reason to stop waiting: a child that exited, with its log tail."""
    for child in children:
        code = child.process.poll()
        if code is not None:
            return f"{child.name} exited with {code}:\n{child.log_tail(40)}"
    return None


async def read_all_async(
    bootstrap: str, topic: str, *, at_least: int, give_up_after: float, quiet_seconds: float = 2.0
) -> list[Record]:
    """Every record of ``topic``: read until ``at_least`` arrived and then nothing more
    for ``quiet_seconds`` (or ``give_up_after`` seconds passed), so surplus records are seen too."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=16 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    records: list[Record] = []
    await consumer.start()
    try:
        deadline = time.monotonic() + give_up_after
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            if len(records) >= at_least and time.monotonic() - last_new > quiet_seconds:
                break
            batches = await consumer.getmany(timeout_ms=200)
            for tp in sorted(batches, key=lambda t: t.partition):
                records.extend((m.key, m.value) for m in batches[tp])
                last_new = time.monotonic()
    finally:
        await consumer.stop()
    return records


def read_all(
    bootstrap: str, topic: str, *, at_least: int, timeout: float, quiet_seconds: float = 2.0
) -> list[Record]:
    """Blocking :func:`read_all_async`."""
    return asyncio.run(
        read_all_async(
            bootstrap,
            topic,
            at_least=at_least,
            give_up_after=timeout,
            quiet_seconds=quiet_seconds,
        )
    )


async def _records_from_offset(
    bootstrap: str, topic: str, partition: int, offset: int, wait_seconds: float
) -> list[Record]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        records: list[Record] = []
        deadline = time.monotonic() + wait_seconds
        while time.monotonic() < deadline:
            batches = await consumer.getmany(tp, timeout_ms=200)
            records.extend((m.key, m.value) for m in batches.get(tp, []))
    finally:
        await consumer.stop()
    return records


def records_from_offset(
    bootstrap: str, topic: str, *, partition: int, offset: int, wait_seconds: float = 2.0
) -> list[Record]:
    """What a partition holds at and after ``offset`` (polled for ``wait_seconds``): a
    cheap way to prove nothing follows the records already read."""
    return asyncio.run(_records_from_offset(bootstrap, topic, partition, offset, wait_seconds))


def recommendation_sets(records: Sequence[Record]) -> list[RecommendationSet]:
    """Decode every record of the recommendations topic (they must all be valid)."""
    return [decode(RecommendationSet, value) for _, value in records if value is not None]


def samples_of(rec_set: RecommendationSet) -> dict[str, int]:
    """Container name → evidence.samples of one set."""
    return {r.container: r.evidence.samples for r in rec_set.recommendations}


def scrape_metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def metric_sum(text: str, name: str) -> float:
    """Sum of every sample of ``name`` (all label sets) in Prometheus text format."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


# -- the test -------------------------------------------------------------------------------

WORKLOAD = "prod/shop/Deployment/checkout"
CONTAINERS = ("app", "sidecar")
INVALID_COUNT = 10_000
#: How many of them are ~1 MiB payloads (see :func:`invalid_mix`).
OVERSIZED_COUNT = 100
#: One valid batch after every this many invalid messages.
VALID_EVERY = 20
T0 = 1_750_000_000.0
MIB = 1024 * 1024


def invalid_mix(total: int, oversized: int, seed: int) -> list[tuple[bytes, str]]:
    """``total`` messages of :func:`invalid_container_batches`, in its order, keeping only
    the first ``oversized`` of the ~1 MiB "oversized" ones.

    Why not all of them: the generator cycles through its ten categories, so 10,000
    messages hold 1,000 oversized payloads: ~1 GiB in and ~1.4 GiB of dead letters kept
    in the in-memory broker for the rest of the session, and 60-70 s for this test.
    100 of them exercise the same path (size check, 1.4 MB dead letters through the
    worker's producer) in a fraction of that.
    """
    pool = invalid_container_batches(total + total // 10, seed)
    mix: list[tuple[bytes, str]] = []
    kept_oversized = 0
    for raw, category in pool:
        if category == "oversized":
            if kept_oversized == oversized:
                continue
            kept_oversized += 1
        mix.append((raw, category))
        if len(mix) == total:
            break
    assert len(mix) == total
    assert kept_oversized == oversized
    return mix


def valid_batch(index: int, *, last: bool) -> bytes:
    """Valid batch ``index`` (10 s apart); the last one raises the memory peak, so the
    final recommendation differs from the previous one and a set with every sample in
    its evidence is emitted."""
    memory = 900 * MIB if last else (200 + index % 50) * MIB
    ts = T0 + 10 * index
    return orjson.dumps(
        {
            "schema_version": 1,
            "kind": "container-sample-batch",
            "source": "cgroup",
            "agent": "node-1",
            "workload": WORKLOAD,
            "timestamp": ts,
            "samples": [
                {
                    "container": name,
                    "timestamp": ts,
                    "interval_seconds": 10.0,
                    "cpu_usage_cores": 0.1 + (index % 7) / 10,
                    "memory_working_set_bytes": memory,
                }
                for name in CONTAINERS
            ],
        }
    )


def test_ten_thousand_invalid_messages_are_dead_lettered_and_valid_ones_processed(
    kafka_bootstrap: str, make_topic_prefix: Callable[..., str], tmp_path: Path
) -> None:
    """10,000 invalid messages (see :func:`invalid_mix`: every category, 100 of them
    ~1 MiB oversized payloads), one valid batch after every 20, half of the invalid
    ones under the valid workload's key so they share its partition.
    """
    prefix = make_topic_prefix(partitions_override=PARTITIONS)
    names = topic_names(prefix)
    invalid = invalid_mix(INVALID_COUNT, OVERSIZED_COUNT, seed=20_240_601)
    valid_count = INVALID_COUNT // VALID_EVERY
    records: list[tuple[bytes | None, bytes]] = []
    invalid_keys: set[bytes] = set()
    for index, (raw, _) in enumerate(invalid):
        key = WORKLOAD.encode() if index % 2 == 0 else f"bad-{index}".encode()
        invalid_keys.add(key)
        records.append((key, raw))
        if (index + 1) % VALID_EVERY == 0:
            number = (index + 1) // VALID_EVERY - 1
            records.append((WORKLOAD.encode(), valid_batch(number, last=number == valid_count - 1)))
    assert len(records) == INVALID_COUNT + valid_count
    metrics_port = free_port()
    env = worker_env(
        kafka_bootstrap,
        prefix,
        f"dl-{prefix.rstrip('.')}",
        tmp_path / "data",
        DAYTWO_MIN_SAMPLES="10",
        DAYTWO_FLUSH_INTERVAL_SECONDS="1",
        DAYTWO_METRICS_PORT=str(metrics_port),
    )
    started = time.monotonic()
    with running(start_child("worker", ["worker"], env, tmp_path / "logs")) as worker:
        produce(kafka_bootstrap, names.container_samples, records)
        produced = time.monotonic()
        letters = wait_for_records(
            kafka_bootstrap,
            names.deadletter,
            until=lambda got: len(got) >= INVALID_COUNT,
            timeout=150,
            alive=lambda: died(worker),
        )
        dead_lettered = time.monotonic()
        assert len(letters) >= INVALID_COUNT, (
            f"only {len(letters)} dead letters; worker log:\n{worker.log_tail(40)}"
        )
        sets = recommendation_sets(
            wait_for_records(
                kafka_bootstrap,
                names.recommendations,
                until=lambda got: any(
                    samples_of(s) == dict.fromkeys(CONTAINERS, valid_count)
                    for s in recommendation_sets(got)
                ),
                timeout=30,
                alive=lambda: died(worker),
            )
        )
        metrics_text = scrape_metrics(metrics_port)
    stopped = time.monotonic()
    # After the worker stopped: nothing follows the 10,000 on the (one-partition) topic.
    surplus = records_from_offset(
        kafka_bootstrap, names.deadletter, partition=0, offset=INVALID_COUNT
    )
    print(  # timings for the report (pytest -s)
        f"\nproduce {produced - started:.1f} s, all dead-lettered after "
        f"{dead_lettered - started:.1f} s, stopped after {stopped - started:.1f} s"
    )

    assert surplus == []
    assert len(letters) == INVALID_COUNT
    sent_sha = Counter(hashlib.sha256(raw).hexdigest() for raw, _ in invalid)
    oversized_sha = {
        hashlib.sha256(raw).hexdigest() for raw, category in invalid if category == "oversized"
    }
    assert all(
        len(raw) > OVERSIZE_LIMIT_BYTES for raw, category in invalid if category == "oversized"
    )
    letter_sha: Counter[str] = Counter()
    stages: Counter[str] = Counter()
    for letter_key, letter_value in letters:
        assert letter_value is not None
        letter = decode(DeadLetter, letter_value, max_bytes=DEADLETTER_MAX_MESSAGE_BYTES)
        assert letter.reason.strip(), letter
        assert letter.stage.strip(), letter
        assert letter.topic == names.container_samples
        assert letter.partition is not None
        assert letter.offset is not None
        assert letter_key in invalid_keys
        assert letter.key_b64 is not None
        assert base64.b64decode(letter.key_b64) == letter_key
        original = base64.b64decode(letter.value_b64)
        if not letter.truncated:
            assert hashlib.sha256(original).hexdigest() == letter.value_sha256
            assert len(original) == letter.value_size_bytes
        if letter.value_sha256 in oversized_sha:
            assert letter.stage == "size", letter.reason
        letter_sha[letter.value_sha256] += 1
        stages[letter.stage] += 1
    assert letter_sha == sent_sha  # each invalid message exactly once, bytes intact
    assert stages["size"] == OVERSIZED_COUNT
    assert {category for _, category in invalid} == set(CATEGORIES)
    assert len(stages) >= 3, stages

    final = [s for s in sets if samples_of(s) == dict.fromkeys(CONTAINERS, valid_count)]
    assert final, (
        f"no set covering all {valid_count} valid samples: {[samples_of(s) for s in sets]}"
    )
    assert all(s.workload == WORKLOAD for s in sets)
    assert metric_sum(metrics_text, "daytwo_deadletters_total") == INVALID_COUNT
    assert metric_sum(metrics_text, "daytwo_worker_samples_processed_total") == (
        valid_count * len(CONTAINERS)
    )
