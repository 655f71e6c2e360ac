"""Where agents put their messages: a ``Publisher`` protocol and its Kafka implementation.

Why: collectors should not know about Kafka. They hand bytes to a :class:`Publisher`;
:class:`KafkaPublisher` sends them with aiokafka the way the design asks (idempotent,
``acks="all"``, ``linger_ms > 0`` so one scrape's messages travel in a few batches) and
counts what was delivered in ``daytwo_agent_messages_sent_total{topic}`` on a registry
passed in. Both publishers here accept a ``None`` value: a tombstone, how a compacted
topic (``daytwo.workload-specs.v1``) learns that a key is gone; the spool keeps it too.

:class:`SpoolingPublisher` wraps a :class:`KafkaPublisher` with an on-disk
:class:`~agents.spool.Spool` so an agent survives a broker outage: while the broker is
unreachable messages go to the spool, and once it answers again the spool drains oldest
first before any new message is sent directly. A spooled message is removed only after
the broker acknowledged it. It also enforces the payload-size input limit
(:class:`~agents.limits.InputGuard`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

# aiokafka ships without type information (no py.typed marker).
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped, unused-ignore]
from aiokafka.errors import (  # type: ignore[import-untyped, unused-ignore]
    CorruptRecordException,
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)
from prometheus_client import CollectorRegistry, Counter, Gauge

from agents.limits import InputGuard, InputLimits
from agents.spool import RECORD_OVERHEAD_BYTES, SEGMENT_HEADER_BYTES, Spool, SpoolError
from pipeline.errors import BrokerError, ConfigError

__all__ = ["MAX_REQUEST_SIZE_BYTES", "KafkaPublisher", "Publisher", "SpoolingPublisher"]

log = logging.getLogger(__name__)

MAX_REQUEST_SIZE_BYTES = 8 * 1024 * 1024


# Errors that reject one record for good: retrying it can never succeed, and keeping it
# at the head of the spool would block every record behind it. Anything else (timeouts,
# lost connections, leader elections, missing topics or ACLs) is an outage to wait out.
_PERMANENT_REJECTIONS: tuple[type[BaseException], ...] = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    InvalidTopicError,
    CorruptRecordException,
)


def _failure(delivery: asyncio.Future[Any]) -> BaseException | None:
    """The exception a delivery future ended with (None: acknowledged)."""
    if delivery.cancelled():
        return asyncio.CancelledError("delivery cancelled")
    return delivery.exception()


def _is_permanent(error: BaseException) -> bool:
    """Whether the broker or client refused this record for good (see above)."""
    cause = error.__cause__ if isinstance(error, BrokerError) else error
    return isinstance(cause, _PERMANENT_REJECTIONS)


def _delivery_error(delivery: asyncio.Future[Any]) -> str | None:
    """Why a delivery future failed, or None when the broker acknowledged it."""
    if delivery.cancelled():
        return "cancelled"
    error = delivery.exception()
    return None if error is None else repr(error)


class Publisher(Protocol):
    """Anything an agent can publish keyed messages to (Kafka, or a test's list)."""

    async def send(self, topic: str, key: bytes, value: bytes | None) -> None:
        """Queue one message (a None value is a tombstone); delivery errors surface at the
        latest in :meth:`flush`."""

    async def flush(self) -> None:
        """Wait until every queued message is delivered (or raise ``BrokerError``)."""

    async def close(self) -> None:
        """Flush and release connections; the publisher is unusable afterwards."""


class KafkaPublisher:
    """An idempotent aiokafka producer behind the :class:`Publisher` protocol.

    Use as ``async with KafkaPublisher("127.0.0.1:9092") as publisher: ...`` or call
    :meth:`start` / :meth:`stop`. Each instance registers its counters on ``registry``
    (a private registry when none is given, so tests never touch the global one).

    ``idempotent=False`` exists for the embedded broker only: aiokafka sends
    InitProducerId v0 (no producer id / epoch fields) and Tansu 0.6's in-memory storage
    answers it with UnknownError, so an idempotent producer cannot start there.
    ``acks="all"`` stays on either way.
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        linger_ms: int = 20,
        client_id: str = "daytwo-agent",
        request_timeout_ms: int = 30_000,
        idempotent: bool = True,
        registry: CollectorRegistry | None = None,
    ) -> None:
        if linger_ms <= 0:
            raise ConfigError(f"linger_ms must be > 0 so messages are batched, got {linger_ms}")
        if not bootstrap.strip():
            raise ConfigError("bootstrap servers must not be empty (e.g. 127.0.0.1:9092)")
        self._settings: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "client_id": client_id,
            "enable_idempotence": idempotent,
            "acks": "all",
            "linger_ms": linger_ms,
            "compression_type": None,
            "max_request_size": MAX_REQUEST_SIZE_BYTES,
            "request_timeout_ms": request_timeout_ms,
        }
        registry = registry if registry is not None else CollectorRegistry()
        self.messages_sent = Counter(
            "daytwo_agent_messages_sent_total",
            "Messages the agent delivered to Kafka, by topic.",
            ["topic"],
            registry=registry,
        )
        self.messages_failed = Counter(
            "daytwo_agent_messages_failed_total",
            "Messages Kafka did not acknowledge, by topic.",
            ["topic"],
            registry=registry,
        )
        self._producer: Any = None
        self._pending: set[asyncio.Future[Any]] = set()
        self._failures: list[str] = []

    def producer_settings(self) -> dict[str, Any]:
        """The keyword arguments given to ``AIOKafkaProducer`` (for logs and checks)."""
        return dict(self._settings)

    async def start(self) -> None:
        """Connect to the cluster; raises ``BrokerError`` when it cannot be reached."""
        if self._producer is not None:
            return
        producer = AIOKafkaProducer(**self._settings)
        try:
            await producer.start()
        except KafkaError as error:
            await producer.stop()
            raise BrokerError(
                f"cannot start a Kafka producer for {self._settings['bootstrap_servers']}: "
                f"{error!r}; check that the broker runs and the address is right (on the "
                "embedded broker, idempotent producers fail: pass idempotent=False)"
            ) from error
        self._producer = producer

    @property
    def started(self) -> bool:
        """Whether :meth:`start` succeeded and :meth:`stop` was not called since."""
        return self._producer is not None

    async def _queue(self, topic: str, key: bytes, value: bytes | None) -> asyncio.Future[Any]:
        if self._producer is None:
            raise BrokerError("KafkaPublisher.send() before start(); use 'async with'")
        try:
            delivery: asyncio.Future[Any] = await self._producer.send(topic, value=value, key=key)
        except KafkaError as error:
            self.messages_failed.labels(topic=topic).inc()
            raise BrokerError(f"cannot queue a message for {topic}: {error!r}") from error
        return delivery

    async def send(self, topic: str, key: bytes, value: bytes | None) -> None:
        """Queue ``value`` under ``key``; returns once it is in a batch, not when acked."""
        delivery = await self._queue(topic, key, value)
        self._pending.add(delivery)
        delivery.add_done_callback(lambda done: self._delivered(topic, done))

    async def send_tracked(
        self, topic: str, key: bytes, value: bytes | None
    ) -> asyncio.Future[Any]:
        """Queue a message and return its delivery future; the caller handles failure.

        Why: :class:`SpoolingPublisher` must know which message the broker refused so
        it can keep exactly those. Counters are updated as for :meth:`send`, but a
        failure is not raised again by :meth:`flush`.
        """
        delivery = await self._queue(topic, key, value)
        delivery.add_done_callback(lambda done: self._count(topic, _delivery_error(done)))
        return delivery

    def _count(self, topic: str, error: str | None) -> None:
        if error is None:
            self.messages_sent.labels(topic=topic).inc()
        else:
            self.messages_failed.labels(topic=topic).inc()

    def _delivered(self, topic: str, delivery: asyncio.Future[Any]) -> None:
        self._pending.discard(delivery)
        error = _delivery_error(delivery)
        self._count(topic, error)
        if error is not None:
            self._failures.append(f"{topic}: {error}")

    async def flush(self) -> None:
        """Wait for every queued message; raise ``BrokerError`` if any was not acked."""
        if self._producer is None:
            return
        await self._producer.flush()
        if self._pending:
            await asyncio.wait(set(self._pending))
        if self._failures:
            failures, self._failures = self._failures, []
            raise BrokerError(
                f"{len(failures)} message(s) were not delivered: {'; '.join(failures[:3])}"
            )

    async def stop(self) -> None:
        """Flush what is queued and close the producer (safe to call twice)."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def close(self) -> None:
        """Same as :meth:`stop`, to satisfy :class:`Publisher`."""
        await self.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()


@dataclass(frozen=True, slots=True)
class _InFlight:
    topic: str
    key: bytes
    value: bytes | None
    delivery: asyncio.Future[Any]


class SpoolingPublisher:
    """A :class:`Publisher` that spools to disk while Kafka is unreachable.

    Why: the agent loop (:func:`agents.collector.run_agent`) must keep scraping through
    a broker outage and lose nothing it can keep within the spool's cap. Behaviour:

    * Connected and the spool empty: messages go straight to Kafka; :meth:`flush`
      waits for their acknowledgements and spools the ones that failed, in order.
    * A failed or timed-out delivery, a failed queueing, or a broker that cannot be
      reached at :meth:`start` marks the broker down: from then on every message is
      appended to the spool (in order, behind anything spooled before).
    * Each :meth:`flush` while down retries the broker once the back-off has passed
      (``retry_initial_seconds`` doubling up to ``retry_max_seconds``). When it answers,
      the spool drains oldest first in batches of ``drain_batch_records``; a batch's
      records are acknowledged in the spool only up to the first one the broker did
      not acknowledge, and the rest stay for the next attempt (at-least-once: a record
      after a failed one may be sent twice, never lost or overtaken by a newer one of
      the same key). New messages keep going to the spool until it is empty, so order
      per key is preserved. One flush drains for at most ``drain_budget_seconds`` so a
      long backlog does not stall scraping; the next flush continues.

    * A record Kafka refuses for good (too large for the producer or broker, an
      invalid topic name, a corrupt record) is dropped and counted in
      ``daytwo_agent_messages_dropped_total{reason="rejected_by_broker"}`` instead of
      blocking the spool forever; every other failure counts as an outage.

    :meth:`flush` therefore does not raise :class:`BrokerError` on an outage; it
    returns when every message is acknowledged or safely spooled. Messages larger
    than the guard's payload limit are rejected (counted) before anything else.
    ``clock`` (monotonic seconds) times the back-off and the drain budget.
    """

    def __init__(
        self,
        kafka: KafkaPublisher,
        spool: Spool,
        *,
        guard: InputGuard | None = None,
        registry: CollectorRegistry | None = None,
        drain_batch_records: int = 500,
        drain_budget_seconds: float = 5.0,
        retry_initial_seconds: float = 1.0,
        retry_max_seconds: float = 30.0,
        max_in_flight: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if drain_batch_records < 1 or max_in_flight < 1:
            msg = "drain_batch_records and max_in_flight must be at least 1"
            raise ConfigError(msg)
        if drain_budget_seconds <= 0 or retry_initial_seconds < 0:
            msg = "drain_budget_seconds must be > 0 and retry_initial_seconds >= 0"
            raise ConfigError(msg)
        if retry_max_seconds < retry_initial_seconds:
            msg = "retry_max_seconds must be at least retry_initial_seconds"
            raise ConfigError(msg)
        if guard is not None and (
            SEGMENT_HEADER_BYTES + RECORD_OVERHEAD_BYTES + guard.limits.max_payload_bytes
            > spool.max_bytes
        ):
            msg = (
                f"the spool cap ({spool.max_bytes} bytes) is smaller than one message of the "
                f"payload limit ({guard.limits.max_payload_bytes} bytes); raise the cap"
            )
            raise ConfigError(msg)
        self.kafka = kafka
        self.spool = spool
        self.guard = guard
        self._drain_batch_records = drain_batch_records
        self._drain_budget_seconds = drain_budget_seconds
        self._retry_initial_seconds = retry_initial_seconds
        self._retry_max_seconds = retry_max_seconds
        self._max_in_flight = max_in_flight
        self._clock = clock
        self._connected = False
        self._backoff_seconds = retry_initial_seconds
        self._retry_at = clock()
        self._in_flight: list[_InFlight] = []
        self._busy = asyncio.Lock()
        self._closed = False
        registry = registry if registry is not None else CollectorRegistry()
        self.messages_spooled = Counter(
            "daytwo_agent_messages_spooled_total",
            "Messages written to the on-disk spool because the broker was unreachable.",
            ["topic"],
            registry=registry,
        )
        self.messages_drained = Counter(
            "daytwo_agent_messages_drained_total",
            "Spooled messages the broker acknowledged after an outage, by topic.",
            ["topic"],
            registry=registry,
        )
        self.messages_dropped = Counter(
            "daytwo_agent_messages_dropped_total",
            "Messages the agent gave up on, by reason: rejected_by_broker (refused for "
            "good, e.g. too large), spool_write_failed (broker down and disk refused).",
            ["reason"],
            registry=registry,
        )
        self._connected_gauge = Gauge(
            "daytwo_agent_broker_connected",
            "1 while the agent delivers to Kafka directly, 0 while it spools.",
            registry=registry,
        )

    @classmethod
    def create(
        cls,
        bootstrap: str,
        spool_dir: Path,
        *,
        spool_max_bytes: int,
        limits: InputLimits | None = None,
        registry: CollectorRegistry | None = None,
        idempotent: bool = True,
        request_timeout_ms: int = 30_000,
        linger_ms: int = 20,
        client_id: str = "daytwo-agent",
        clock: Callable[[], float] = time.monotonic,
    ) -> SpoolingPublisher:
        """Wire producer, spool and input guard on one registry (what an agent runs).

        ``request_timeout_ms`` is also how long an unacknowledged message waits before
        it counts as failed and is spooled: the outage detection time.
        """
        registry = registry if registry is not None else CollectorRegistry()
        kafka = KafkaPublisher(
            bootstrap,
            linger_ms=linger_ms,
            client_id=client_id,
            request_timeout_ms=request_timeout_ms,
            idempotent=idempotent,
            registry=registry,
        )
        guard = InputGuard(limits if limits is not None else InputLimits(), registry)
        spool = Spool(spool_dir, spool_max_bytes, registry)
        try:
            return cls(kafka, spool, guard=guard, registry=registry, clock=clock)
        except BaseException:
            spool.close()
            raise

    @property
    def connected(self) -> bool:
        """True while messages go to Kafka directly (the broker answered last time)."""
        return self._connected

    async def start(self) -> None:
        """Connect to Kafka if it answers; otherwise start spooling (never raises)."""
        if self._connected:
            return
        await self._reconnect()

    async def send(self, topic: str, key: bytes, value: bytes | None) -> None:
        """Deliver directly when connected and nothing is spooled, else spool.

        A message over the payload limit is rejected (counted, logged) and dropped; a
        tombstone (``value`` None) has no payload and always passes.
        """
        if self._closed:
            raise BrokerError("SpoolingPublisher.send() after close()")
        if (
            self.guard is not None
            and value is not None
            and not self.guard.admit_payload(topic, value)
        ):
            return
        if self._direct_possible() and len(self._in_flight) >= self._max_in_flight:
            await self.flush_in_flight()
        if self._direct_possible():
            try:
                delivery = await self.kafka.send_tracked(topic, key, value)
            except BrokerError as error:
                if _is_permanent(error):
                    self._drop_rejected(topic, error)
                    return
                # Earlier messages still in flight must reach the spool before this one.
                await self.flush_in_flight()
                if self._connected:
                    await self._mark_down(str(error))
            else:
                self._in_flight.append(_InFlight(topic, key, value, delivery))
                return
        self._spool(topic, key, value)

    def _direct_possible(self) -> bool:
        return self._connected and self.spool.depth_records == 0 and not self._busy.locked()

    def _spool(self, topic: str, key: bytes, value: bytes | None) -> None:
        try:
            self.spool.append(topic, key, value)
        except SpoolError as error:
            self.messages_dropped.labels(reason="spool_write_failed").inc()
            log.error("broker down and the spool refused a message for %s: %s", topic, error)
            return
        self.messages_spooled.labels(topic=topic).inc()

    def _drop_rejected(self, topic: str, error: BaseException) -> None:
        self.messages_dropped.labels(reason="rejected_by_broker").inc()
        log.error(
            "Kafka refused a message for %s for good (%r); dropped it, it can never be "
            "delivered (daytwo_agent_messages_dropped_total counts these)",
            topic,
            error.__cause__ if isinstance(error, BrokerError) else error,
        )

    async def flush_in_flight(self) -> None:
        """Wait for direct deliveries; spool the failed ones in order (then: broker down)."""
        async with self._busy:
            await self._settle()

    async def _settle(self) -> None:
        pending, self._in_flight = self._in_flight, []
        if not pending:
            return
        await asyncio.wait([entry.delivery for entry in pending])
        outage: BaseException | None = None
        for entry in pending:
            error = _failure(entry.delivery)
            if error is None:
                continue
            if _is_permanent(error):
                self._drop_rejected(entry.topic, error)
                continue
            outage = outage or error
            self._spool(entry.topic, entry.key, entry.value)
        if outage is not None:
            await self._mark_down(repr(outage))

    async def flush(self) -> None:
        """Settle direct deliveries, then drain the spool if the broker answers.

        Returns once every message is acknowledged or spooled; an outage is not an
        error here (it is logged, and visible in ``daytwo_agent_broker_connected``).
        """
        async with self._busy:
            await self._settle()
            if self.spool.depth_records == 0:
                return
            if not self._connected and self._clock() < self._retry_at:
                return
            if not self._connected and not await self._reconnect():
                return
            await self._drain()

    async def _drain(self) -> None:
        deadline = self._clock() + self._drain_budget_seconds
        first = True  # at least one batch per flush, however small the budget
        while self.spool.depth_records and (first or self._clock() < deadline):
            first = False
            batch = self.spool.peek_batch(self._drain_batch_records, MAX_REQUEST_SIZE_BYTES)
            outcomes: list[asyncio.Future[Any] | BaseException] = []
            for record in batch:
                try:
                    outcomes.append(
                        await self.kafka.send_tracked(record.topic, record.key, record.value)
                    )
                except BrokerError as error:
                    outcomes.append(error)
                    if not _is_permanent(error):
                        break  # an outage: keep this record and the rest for later
            deliveries = [item for item in outcomes if isinstance(item, asyncio.Future)]
            if deliveries:
                await asyncio.wait(deliveries)
            handled = 0
            outage: BaseException | None = None
            for record, item in zip(batch, outcomes, strict=False):
                failure = _failure(item) if isinstance(item, asyncio.Future) else item
                if failure is None:
                    self.messages_drained.labels(topic=record.topic).inc()
                elif _is_permanent(failure):
                    self._drop_rejected(record.topic, failure)
                else:
                    outage = failure
                    break
                handled += 1
            # Only the prefix the broker answered for leaves the spool; after a failure
            # the rest is sent again later (possibly twice, never out of order).
            self.spool.ack(batch[:handled])
            if outage is not None or handled < len(batch):
                await self._mark_down(repr(outage) if outage else "drain interrupted")
                return
        if self.spool.depth_records == 0:
            log.info("spool drained: every spooled message reached Kafka")

    async def _reconnect(self) -> bool:
        try:
            await self.kafka.start()
        except BrokerError as error:
            await self._mark_down(str(error))
            return False
        if not self._connected:
            log.info(
                "Kafka answers; %d spooled message(s) will be sent first",
                self.spool.depth_records,
            )
        self._connected = True
        self._connected_gauge.set(1)
        self._backoff_seconds = self._retry_initial_seconds
        return True

    async def _mark_down(self, reason: str) -> None:
        if self._connected:
            log.warning(
                "Kafka unreachable (%s); spooling messages to %s until it answers again",
                reason,
                self.spool.path,
            )
        self._connected = False
        self._connected_gauge.set(0)
        self._retry_at = self._clock() + self._backoff_seconds
        self._backoff_seconds = min(
            max(self._backoff_seconds * 2, self._retry_initial_seconds), self._retry_max_seconds
        )
        # A fresh producer on reconnect: no stale metadata or connections from before.
        try:
            await self.kafka.stop()
        except KafkaError as error:
            log.debug("stopping the failed producer raised %r", error)

    async def close(self) -> None:
        """Deliver what can be delivered within one drain budget, keep the rest on disk.

        What is still spooled is sent by the next process that opens the same spool
        directory. Safe to call twice.
        """
        if self._closed:
            return
        try:
            await self.flush()
        finally:
            self._closed = True
            try:
                await self.kafka.stop()
            finally:
                self.spool.close()

    async def stop(self) -> None:
        """Same as :meth:`close`."""
        await self.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
