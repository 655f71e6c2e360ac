"""Read the recommendations topic as a third party would: ``daytwo recommendations``.

Why: the topic is daytwo's public output. Anything that wants right-sizing proposals (a
chat bot, a ticketing bridge, a cost report) reads ``daytwo.recommendations.v1``: a
compacted topic keyed by workload id whose values are ``recommendation-set`` messages
(``schemas/recommendation-set.v1.schema.json``), each holding every current
recommendation of that workload's containers. This module is the reference reader, and
its code is the example to copy: a plain aiokafka consumer with no consumer group (so
it never disturbs daytwo's own groups and commits nothing), every partition assigned,
values validated against the schema.

Two ways to read:

- **snapshot** (default): from the beginning up to the end of every partition as the
  fetch high watermarks report it, keeping the latest set per workload (what compaction
  converges to); then stop. A tombstone (no value) deletes the workload's set.
- **follow**: every set as it arrives until stopped; from the end of the topic, or
  with ``from_beginning`` everything first.

Example (all proposals of one namespace, as JSON lines, then keep following)::

    daytwo recommendations --follow --from-beginning --workload 'prod/shop/*' --format json
"""

from __future__ import annotations

import asyncio
import fnmatch
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import IO, Literal

import orjson
from aiokafka import (  # type: ignore[import-untyped, unused-ignore]
    AIOKafkaConsumer,
    TopicPartition,
)
from rich.console import Console
from rich.table import Table

from pipeline.errors import BrokerError, InvalidMessageError
from schemas.models import Recommendation, RecommendationSet
from schemas.validate import decode, encode

#: A set holds up to 256 recommendations of a few KiB each: more than the 1 MiB default.
MAX_SET_BYTES = 16 * 1024 * 1024
#: A snapshot that has not caught up with the high watermarks by then gives up.
DEFAULT_SNAPSHOT_TIMEOUT_SECONDS = 60.0

OutputFormat = Literal["json", "table"]


@dataclass(frozen=True, slots=True)
class Received:
    """One record of the recommendations topic: a valid set, or a tombstone (``None``)."""

    workload: str
    recommendation_set: RecommendationSet | None
    partition: int
    offset: int


def workload_matcher(pattern: str | None) -> Callable[[str], bool]:
    """A predicate for ``--workload``: an exact id, or a shell pattern (``prod/shop/*``).

    >>> workload_matcher("prod/*")("prod/shop/Deployment/checkout")
    True
    """
    if pattern is None:
        return lambda _workload: True
    if any(char in pattern for char in "*?["):
        return lambda workload: fnmatch.fnmatchcase(workload, pattern)
    return lambda workload: workload == pattern


class RecommendationReader:
    """A group-less consumer of every partition of the recommendations topic, from the
    start of each (the topic is compacted: its start is the current state).

    ``on_invalid(partition, offset, reason)`` is told about records that fail the
    schema; they are skipped (a reader must not stop on one bad record).
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        workload: str | None = None,
        on_invalid: Callable[[int, int, str], None] | None = None,
    ) -> None:
        self.topic = topic
        self._matches = workload_matcher(workload)
        self._on_invalid = on_invalid
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=MAX_SET_BYTES,
            fetch_max_bytes=4 * MAX_SET_BYTES,
            client_id="daytwo-recommendations-reader",
        )
        self._partitions: list[TopicPartition] = []

    async def start(self) -> None:
        """Connect and assign every partition; :class:`BrokerError` if the topic is missing."""
        try:
            await self._consumer.start()
        except Exception as exc:  # aiokafka raises several unrelated types here
            msg = f"cannot connect to Kafka to read {self.topic}: {exc}"
            raise BrokerError(msg) from exc
        try:
            topics = await self._consumer.topics()
            if self.topic not in topics:
                msg = (
                    f"topic {self.topic} does not exist: check --topic-prefix / "
                    "DAYTWO_TOPIC_PREFIX, or create the topics with `daytwo topics`"
                )
                raise BrokerError(msg)
            partitions = self._consumer.partitions_for_topic(self.topic) or set()
            self._partitions = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            self._consumer.assign(self._partitions)
        except BaseException:
            await self._consumer.stop()
            raise

    async def stop(self) -> None:
        """Close the consumer."""
        await self._consumer.stop()

    async def poll(self, timeout_ms: int = 500) -> list[Received]:
        """The records fetched within ``timeout_ms``, in partition then offset order."""
        batches = await self._consumer.getmany(timeout_ms=timeout_ms)
        received: list[Received] = []
        for tp in sorted(batches, key=lambda t: t.partition):
            for message in batches[tp]:
                item = self._decode(message.key, message.value, tp.partition, message.offset)
                if item is not None:
                    received.append(item)
        return received

    def _decode(
        self, key: bytes | None, value: bytes | None, partition: int, offset: int
    ) -> Received | None:
        workload = key.decode(errors="replace") if key is not None else None
        if value is None:
            if workload is None or not self._matches(workload):
                return None
            return Received(workload, None, partition, offset)
        if workload is not None and not self._matches(workload):
            return None
        try:
            rec_set = decode(RecommendationSet, value, max_bytes=MAX_SET_BYTES)
        except InvalidMessageError as exc:
            if self._on_invalid is not None:
                self._on_invalid(partition, offset, exc.reason)
            return None
        if not self._matches(rec_set.workload):
            return None
        return Received(rec_set.workload, rec_set, partition, offset)

    async def caught_up(self) -> bool:
        """Whether every partition's position reached its last fetched high watermark.

        Why high watermarks and not end offsets: on the embedded broker ListOffsets reads
        low when a batch holds several records (docs/architecture.md); fetch responses
        carry the right high watermark for every partition, empty ones included.
        """
        for tp in self._partitions:
            highwater = self._consumer.highwater(tp)
            if highwater is None or await self._consumer.position(tp) < highwater:
                return False
        return True


async def read_snapshot(
    bootstrap: str,
    topic: str,
    *,
    workload: str | None = None,
    timeout_seconds: float = DEFAULT_SNAPSHOT_TIMEOUT_SECONDS,
    on_invalid: Callable[[int, int, str], None] | None = None,
) -> dict[str, RecommendationSet]:
    """The latest set per workload: the whole topic read once, tombstones applied."""
    reader = RecommendationReader(bootstrap, topic, workload=workload, on_invalid=on_invalid)
    await reader.start()
    latest: dict[str, RecommendationSet] = {}
    try:
        deadline = time.monotonic() + timeout_seconds
        while True:
            for item in await reader.poll(timeout_ms=200):
                if item.recommendation_set is None:
                    latest.pop(item.workload, None)
                else:
                    latest[item.workload] = item.recommendation_set
            if await reader.caught_up():
                return dict(sorted(latest.items()))
            if time.monotonic() > deadline:
                msg = f"{topic}: not caught up with the high watermarks in {timeout_seconds} s"
                raise BrokerError(msg)
    finally:
        await reader.stop()


async def follow(
    bootstrap: str,
    topic: str,
    *,
    from_beginning: bool,
    workload: str | None = None,
    stop: asyncio.Event | None = None,
    on_invalid: Callable[[int, int, str], None] | None = None,
) -> AsyncIterator[Received]:
    """Every record as it arrives (tombstones included) until ``stop`` is set.

    Without ``from_beginning`` the records already on the topic are read and skipped up
    to the high watermarks rather than starting at the "latest" offset: on the embedded
    broker that offset reads low and old sets would be printed as new.
    """
    reader = RecommendationReader(bootstrap, topic, workload=workload, on_invalid=on_invalid)
    await reader.start()
    skipping = not from_beginning
    try:
        while stop is None or not stop.is_set():
            items = await reader.poll(timeout_ms=200)
            if skipping:
                skipping = not await reader.caught_up()
                continue
            for item in items:
                yield item
    finally:
        await reader.stop()


def set_json_line(rec_set: RecommendationSet) -> str:
    """One set as a single line of JSON, exactly the wire contract (NDJSON output)."""
    return encode(rec_set).decode()


def _cores(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}"


def _mib(value: float | None) -> str:
    return "—" if value is None else f"{value / 2**20:.0f}Mi"


def _change(current: str, recommended: str) -> str:
    return recommended if current == recommended else f"{current} → {recommended}"


def _row(rec: Recommendation) -> list[str]:
    now, new = rec.current, rec.recommended
    return [
        rec.workload,
        rec.container,
        rec.profile,
        _change(_cores(now.cpu_request_cores), _cores(new.cpu_request_cores)),
        _change(_cores(now.cpu_limit_cores), _cores(new.cpu_limit_cores)),
        _change(_mib(now.memory_request_bytes), _mib(new.memory_request_bytes)),
        _change(_mib(now.memory_limit_bytes), _mib(new.memory_limit_bytes)),
        f"{rec.monthly_cost_delta_usd:+.2f}",
        rec.risk,
        f"{rec.confidence:.2f}",
    ]


def sets_table(sets: Iterable[RecommendationSet], title: str | None = None) -> Table:
    """A table with one row per recommended container of ``sets``."""
    table = Table(title=title)
    for column in (
        "workload",
        "container",
        "profile",
        "cpu request",
        "cpu limit",
        "memory request",
        "memory limit",
        "$/month",
        "risk",
        "confidence",
    ):
        table.add_column(column, justify="right" if column == "$/month" else "left")
    for rec_set in sets:
        if not rec_set.recommendations:
            table.add_row(rec_set.workload, "(no proposals)", *[""] * 8)
        for rec in rec_set.recommendations:
            table.add_row(*_row(rec))
    return table


def print_sets(sets: Iterable[RecommendationSet], output: OutputFormat, out: IO[str]) -> None:
    """Write ``sets`` to ``out`` as JSON lines or as one table."""
    if output == "json":
        for rec_set in sets:
            out.write(set_json_line(rec_set) + "\n")
        out.flush()
        return
    Console(file=out, width=200).print(sets_table(sets))


def run_subscriber(
    bootstrap: str,
    topic: str,
    *,
    follow_topic: bool,
    from_beginning: bool,
    workload: str | None,
    output: OutputFormat,
    out: IO[str],
    err: IO[str],
    stop: asyncio.Event | None = None,
) -> None:
    """What ``daytwo recommendations`` does: a snapshot, or follow until stopped.

    In follow mode each set is printed as it arrives (a tombstone as
    ``{"workload": ..., "deleted": true}`` in JSON, a line in table mode); SIGINT or
    SIGTERM stops it cleanly when ``stop`` is not given.
    """

    def invalid(partition: int, offset: int, reason: str) -> None:
        err.write(f"daytwo: skipped invalid record at {topic}[{partition}]@{offset}: {reason}\n")
        err.flush()

    async def snapshot() -> None:
        latest = await read_snapshot(bootstrap, topic, workload=workload, on_invalid=invalid)
        print_sets(latest.values(), output, out)

    async def follow_forever() -> None:
        stop_event = stop if stop is not None else _stop_on_signals()
        async for item in follow(
            bootstrap,
            topic,
            from_beginning=from_beginning,
            workload=workload,
            stop=stop_event,
            on_invalid=invalid,
        ):
            if item.recommendation_set is not None:
                print_sets([item.recommendation_set], output, out)
            elif output == "json":
                out.write(
                    orjson.dumps({"workload": item.workload, "deleted": True}).decode() + "\n"
                )
                out.flush()
            else:
                out.write(f"{item.workload}: deleted (tombstone)\n")
                out.flush()

    asyncio.run(follow_forever() if follow_topic else snapshot())


def _stop_on_signals() -> asyncio.Event:
    import signal  # noqa: PLC0415 - only the follow mode needs it

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return stop
