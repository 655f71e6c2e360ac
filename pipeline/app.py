"""The Faust application: topics, the state table and one agent. Thin by design.

Records from ``daytwo.container-samples.v1`` are handed to a
:class:`~pipeline.processor.Processor`. Events are consumed without automatic
acknowledgement; a timer checkpoints every ``flush_interval_seconds``: it writes each
changed container state once to the changelog-backed table, sends the recommendation
sets that changed, and only then acknowledges the events handled before it. Faust's
commit flushes the producer before it commits acknowledged offsets, so a committed
offset never runs ahead of the changelog. After ``kill -9`` the worker recovers the
table and re-reads the unacknowledged tail, which each window skips or applies by
timestamp (idempotent replay).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import faust
from faust.tables.table import Table
from faust.types import TP, EventT
from prometheus_client import CollectorRegistry

from pipeline.core.profiles import Profile
from pipeline.metrics import WorkerMetrics
from pipeline.processor import Processor
from pipeline.profiles_file import ProfileResolver, load_catalog
from pipeline.settings import Settings, require_bootstrap
from pipeline.topics import DEADLETTER_MAX_MESSAGE_BYTES, TopicSpec, ensure_topics, topic_names
from schemas.models import DeadLetter
from schemas.validate import encode

log = logging.getLogger(__name__)

#: Events taken from the stream per batch before the agent hands them to the processor.
TAKE_MAX = 1000
#: Longest a partially filled batch waits (seconds) before it is processed anyway.
TAKE_WITHIN = 0.2
#: Name of the per-container state table (Faust names its changelog after it).
TABLE_NAME = "container-state"


def changelog_topic(settings: Settings) -> TopicSpec:
    """The state table's changelog topic, as it must exist before the worker starts.

    Why explicit: the worker does not let Faust declare topics, so a missing changelog
    would be auto-created with the broker's default partition count (4 on the embedded
    broker, 1 on Apache Kafka). Checkpoints write to the changelog partition equal to
    the input partition, so a changelog with fewer partitions than the input crashes the
    worker ("Unrecognized partition") as soon as a key lands on a higher partition.
    """
    return TopicSpec(
        name=f"{settings.worker_app_id}-{TABLE_NAME}-changelog",
        partitions=settings.partitions,
        compacted=True,
    )


async def ensure_worker_topics(settings: Settings) -> None:
    """Create (or verify) the daytwo topics and the table's changelog for ``settings``.

    Fails with :class:`~pipeline.errors.BrokerError` when an existing topic's partition
    count differs from ``settings.partitions``: input and changelog must agree.
    """
    bootstrap = require_bootstrap(settings)
    await ensure_topics(
        bootstrap, prefix=settings.topic_prefix, partitions_override=settings.partitions
    )
    await ensure_topics(bootstrap, [changelog_topic(settings)])


class CoPartitionedTable(Table[bytes, bytes]):
    """A table whose changelog partition is the input partition its key came from.

    Faust picks a table key's changelog partition from the event being processed,
    which forbids writing from a timer. Our keys are container keys whose input
    partition the processor knows, so the timer can checkpoint outside any event and
    the changelog stays co-partitioned with the input topic.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.partition_of: dict[bytes, int] = {}

    def partition_for_key(self, key: Any) -> int | None:
        """The input partition recorded for ``key`` (see :class:`FaustStore`)."""
        return self.partition_of.get(key)


@dataclass
class FaustStore:
    """The processor's :class:`~pipeline.processor.StateStore` over a Faust table."""

    table: CoPartitionedTable

    def load(self, key: str) -> bytes | None:
        """The last checkpoint recovered or written for ``key``."""
        value = self.table.get(key.encode())
        return value if isinstance(value, bytes) else None

    def save(self, key: str, value: bytes, partition: int) -> None:
        """Write ``key`` to the table; its changelog record goes to ``partition``."""
        raw_key = key.encode()
        self.table.partition_of[raw_key] = partition
        self.table[raw_key] = value


@dataclass
class Worker:
    """Everything one worker process holds: app, topics, processor, pending events."""

    app: faust.App
    processor: Processor
    settings: Settings
    pending: list[tuple[faust.Stream[bytes], EventT[bytes]]] = field(default_factory=list)
    last_offsets: dict[TP, int] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def build_worker(
    settings: Settings, registry: CollectorRegistry, profile: Profile | None = None
) -> Worker:
    """Create the Faust app with its topics, table, agent and checkpoint timer."""
    bootstrap = require_bootstrap(settings)
    names = topic_names(settings.topic_prefix)
    embedded = settings.broker_is_embedded
    app = faust.App(
        settings.worker_app_id,
        broker=[f"kafka://{b.strip()}" for b in bootstrap.split(",")],
        store="memory://",
        datadir=str(settings.data_dir),
        topic_partitions=settings.partitions,
        topic_allow_declare=False,
        web_enabled=False,
        # Tansu answers ListOffsets(latest) with the last batch's base offset + 1, so
        # changelog recovery would stop early unless every record is its own batch.
        producer_max_batch_size=1 if embedded else 16384,
        producer_linger_ms=0 if embedded else 5,
        producer_acks=-1,
        # A dead letter carries the rejected value base64'd (a 1 MiB input becomes
        # ~1.4 MB); Faust's default 1,000,000-byte request cap would crash the agent.
        producer_max_request_size=DEADLETTER_MAX_MESSAGE_BYTES,
        broker_session_timeout=settings.session_timeout_seconds,
        broker_heartbeat_interval=min(1.0, settings.session_timeout_seconds / 4),
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=False,
    )

    def raw_topic(name: str, partitions: int) -> Any:
        """A topic of raw bytes: daytwo encodes and validates its messages itself."""
        return app.topic(
            name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=partitions,
        )

    samples_topic = raw_topic(names.container_samples, settings.partitions)
    jvm_topic = raw_topic(names.jvm_samples, settings.partitions)
    spec_topic = raw_topic(names.workload_specs, settings.partitions)
    deadletter_topic = raw_topic(names.deadletter, 1)
    recommendations_topic = raw_topic(names.recommendations, settings.partitions)
    table = CoPartitionedTable(
        app,
        name=TABLE_NAME,
        default=None,
        key_type=bytes,  # bytes key/value types select faust's raw codec
        value_type=bytes,
        partitions=settings.partitions,
    )
    app.tables.add(table)
    overrides: dict[str, object] = dict(settings.profile_overrides)
    if settings.min_samples is not None:
        overrides["min_samples"] = settings.min_samples
    if settings.memory_peak_interval_seconds is not None:
        overrides["memory_peak_interval_seconds"] = settings.memory_peak_interval_seconds
    profiles = ProfileResolver(
        load_catalog(settings.profiles_file, default_profile=settings.profile), overrides
    )
    metrics = WorkerMetrics.create(registry)
    processor = Processor(
        profile_for=None if profile is not None else profiles.for_spec,
        prices=profiles.catalog.prices,
        profile=profile or profiles.default(),
        store=FaustStore(table),
        metrics=metrics,
        clock=time.time,
        source_topic=names.container_samples,
        jvm_topic=names.jvm_samples,
        spec_topic=names.workload_specs,
    )
    worker = Worker(app=app, processor=processor, settings=settings)

    def consumer_of(handle: Callable[..., DeadLetter | None]) -> Any:
        """A Faust agent body feeding one topic's records to ``handle``."""

        async def consume(stream_t: faust.StreamT[bytes]) -> None:
            stream = cast(faust.Stream[bytes], stream_t)  # noack_take is on the class only
            async for taken in stream.noack_take(TAKE_MAX, within=TAKE_WITHIN):
                events = cast(list[EventT[bytes]], taken)  # noack_take yields events
                async with worker.lock:
                    for event in events:
                        message = event.message
                        dead = handle(
                            message.key,
                            message.value,
                            partition=message.partition,
                            offset=message.offset,
                        )
                        if dead is not None:
                            await deadletter_topic.send(key=message.key, value=encode(dead))
                        worker.pending.append((stream, event))
                        worker.last_offsets[message.tp] = message.offset

        return consume

    app.agent(samples_topic, name="daytwo-container-samples")(consumer_of(processor.handle))
    app.agent(jvm_topic, name="daytwo-jvm-samples")(consumer_of(processor.handle_jvm))
    app.agent(spec_topic, name="daytwo-workload-specs")(consumer_of(processor.handle_spec))

    async def checkpoint() -> None:
        async with worker.lock:
            await _checkpoint(worker, recommendations_topic)

    app.timer(settings.flush_interval_seconds, name="daytwo-checkpoint")(checkpoint)

    async def on_revoked(sender: Any, revoked: set[TP], **kwargs: Any) -> None:
        async with worker.lock:
            await _checkpoint(worker, recommendations_topic)
            processor.forget_partitions({tp.partition for tp in revoked})
            _forget_lag(worker, revoked)  # metrics (issue 7)

    # faust types signal receivers narrower than the documented (sender, *args) shape
    app.on_partitions_revoked.connect(cast(Any, on_revoked))
    return worker


async def _checkpoint(worker: Worker, recommendations_topic: Any) -> None:
    """Write dirty state once, emit changed sets, then ack what they cover."""
    sets = worker.processor.checkpoint()
    for rec_set in sets:
        await recommendations_topic.send(key=rec_set.workload.encode(), value=encode(rec_set))
    for stream, event in worker.pending:
        await stream.ack(event)
    worker.pending.clear()
    _update_lag(worker)


def _update_lag(worker: Worker) -> None:
    """Lag from fetch high watermarks (end offsets read low on the embedded broker)."""
    consumer = worker.app.consumer
    for tp, offset in worker.last_offsets.items():
        # aiokafka answers None before the first fetch of a partition; faust's type omits it
        highwater = cast(int | None, consumer.highwater(tp))
        if highwater is None:
            continue
        worker.processor.metrics.consumer_lag.labels(
            topic=tp.topic, partition=str(tp.partition)
        ).set(max(0, highwater - offset - 1))


def _forget_lag(worker: Worker, revoked: set[TP]) -> None:
    """Stop exporting the lag of revoked partitions: another worker owns it now."""
    for tp in revoked:
        if worker.last_offsets.pop(tp, None) is not None:
            with contextlib.suppress(KeyError):  # never set: no checkpoint since its fetch
                worker.processor.metrics.consumer_lag.remove(tp.topic, str(tp.partition))
