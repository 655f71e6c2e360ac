"""Helpers shared by the worker-level integration tests.

Environment for one isolated worker, producing records, starting children that are
always stopped, reading topics back and scraping /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from aiokafka import (  # type: ignore[import-untyped, unused-ignore]
    AIOKafkaConsumer,
    AIOKafkaProducer,
    TopicPartition,
)

from pipeline.launch import Child
from pipeline.topics import DEADLETTER_MAX_MESSAGE_BYTES
from schemas.models import RecommendationSet
from schemas.validate import decode

#: Partitions of the keyed topics in worker tests (any count works; 4 keeps logs short).
PARTITIONS = 4
Record = tuple[bytes | None, bytes | None]


FAST_PROFILE_OVERRIDES = (
    '{"evaluation_interval_seconds": 1, "decrease_min_history_seconds": 0, '
    '"proposal_cooldown_seconds": 0}'
)


@dataclass
class MemoryStore:
    """The processor's StateStore as a dict (what Faust's ``memory://`` table keeps too)."""

    data: dict[str, bytes] = field(default_factory=dict)

    def load(self, key: str) -> bytes | None:
        """The last value saved for ``key``."""
        return self.data.get(key)

    def save(self, key: str, value: bytes, partition: int) -> None:
        """Keep ``value`` (the partition does not matter in memory)."""
        del partition
        self.data[key] = value


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
        # Tests run for seconds, not days: evaluate every second of data, allow decreases
        # at once and propose without a cool-down (the hysteresis has its own tests).
        "DAYTWO_PROFILE_OVERRIDES": FAST_PROFILE_OVERRIDES,
    }
    if is_embedded(bootstrap):
        env["DAYTWO_BROKER_IS_EMBEDDED"] = "1"
    env.update(extra)
    return env


def is_embedded(bootstrap: str) -> bool:
    """Whether the tests run on the embedded broker (no external Kafka configured)."""
    return os.environ.get("DAYTWO_KAFKA_BOOTSTRAP", "") != bootstrap


def free_port() -> int:
    """A TCP port free on localhost right now (for a child's /metrics server)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def produce_async(
    bootstrap: str,
    topic: str,
    records: Sequence[tuple[bytes | None, bytes]],
    *,
    idempotent: bool = False,
    linger_ms: int = 5,
    max_batch_size: int = 16384,
) -> None:
    """Send ``records`` in order and wait until the broker acknowledged all of them.

    Not idempotent by default: the embedded broker refuses InitProducerId. The
    throughput benchmark batches harder (``linger_ms``, ``max_batch_size``).
    """
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=idempotent,
        linger_ms=linger_ms,
        max_batch_size=max_batch_size,
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


def scrape_metrics(port: int, names: Sequence[str] = ()) -> str:
    """The /metrics page on ``port``; only the families ``names`` when given (prometheus
    client's ``name[]`` filter: a poll that does not make the worker render every
    per-workload series, ~130 ms of CPU with 2,000 containers)."""
    query = urllib.parse.urlencode([("name[]", name) for name in names])
    url = f"http://127.0.0.1:{port}/metrics" + (f"?{query}" if query else "")
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def metric_sum(text: str, name: str) -> float:
    """Sum of every sample of ``name`` (all label sets) in Prometheus text format."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


# -- the test -------------------------------------------------------------------------------


# -- staged input and what the workers must end with --------------------------------------

MIB = 1024 * 1024
T0 = 1_750_000_000.0
Input = list[tuple[bytes, bytes]]


def staged_input(
    workloads: Mapping[str, Sequence[str]],
    *,
    stage_ends: Sequence[int],
    seed: int,
    peak_step_mib: int,
) -> list[Input]:
    """Batches by index up to ``stage_ends[-1]`` (one batch per workload and index, every
    container in it), usage from a seeded RNG, 10 s apart from :data:`T0`.

    The last batch of every stage (``index + 1`` in ``stage_ends``) carries a new memory
    maximum for every container, ``1000 + peak_step_mib * stage`` MiB, so the checkpoint
    that covers it always emits a set (only a changed hash emits one): that set shows
    how many samples the state holds at the end of the stage.
    """
    rng = random.Random(seed)
    by_index: list[Input] = []
    for index in range(stage_ends[-1]):
        stage = stage_ends.index(index + 1) if index + 1 in stage_ends else None
        ts = T0 + 10 * index
        records: Input = []
        for workload, containers in workloads.items():
            samples = []
            for container in containers:
                memory = rng.randint(100, 400) * MIB
                if stage is not None:
                    memory = (1000 + peak_step_mib * stage) * MIB
                samples.append(
                    {
                        "container": container,
                        "timestamp": ts,
                        "interval_seconds": 10.0,
                        "cpu_usage_cores": round(rng.lognormvariate(-1.5, 0.6), 4),
                        "memory_working_set_bytes": memory,
                        "cpu_throttled_ratio": round(rng.uniform(0, 0.05), 4),
                        "cpu_limit_cores": 2.0,
                        "memory_limit_bytes": 2048 * MIB,
                    }
                )
            batch = {
                "schema_version": 1,
                "kind": "container-sample-batch",
                "source": "cgroup",
                "agent": "node-1",
                "workload": workload,
                "timestamp": ts,
                "samples": samples,
            }
            records.append((workload.encode(), orjson.dumps(batch)))
        by_index.append(records)
    return by_index


def records_between(
    data: Sequence[Input], start: int, end: int
) -> list[tuple[bytes | None, bytes]]:
    """The records of batches ``start`` .. ``end - 1``, in order."""
    return [record for index in range(start, end) for record in data[index]]


def all_at(workloads: Mapping[str, Sequence[str]], count: int) -> Callable[[list[Record]], bool]:
    """Until-condition: every workload has a set whose containers all hold ``count``."""

    def done(records: list[Record]) -> bool:
        complete = {
            s.workload
            for s in recommendation_sets(records)
            if samples_of(s) == dict.fromkeys(workloads[s.workload], count)
        }
        return complete == set(workloads)

    return done


def final_by_container(sets: Sequence[RecommendationSet]) -> dict[str, dict[str, object]]:
    """The last set of each workload, per container, without the generation time."""
    last = {s.workload: s for s in sets}
    return {
        f"{r.workload}:{r.container}": r.model_dump(mode="json", exclude={"generated_at"})
        for s in last.values()
        for r in s.recommendations
    }
