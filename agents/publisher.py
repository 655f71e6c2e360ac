"""Where agents put their messages: a ``Publisher`` protocol and its Kafka implementation.

Why: collectors should not know about Kafka. They hand bytes to a :class:`Publisher`;
:class:`KafkaPublisher` sends them with aiokafka the way the design asks (idempotent,
``acks="all"``, ``linger_ms > 0`` so one scrape's messages travel in a few batches) and
counts what was delivered in ``daytwo_agent_messages_sent_total{topic}`` on a registry
passed in.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any, Protocol, Self

# aiokafka ships without type information (no py.typed marker).
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped, unused-ignore]
from aiokafka.errors import KafkaError  # type: ignore[import-untyped, unused-ignore]
from prometheus_client import CollectorRegistry, Counter

from pipeline.errors import BrokerError, ConfigError

__all__ = ["MAX_REQUEST_SIZE_BYTES", "KafkaPublisher", "Publisher"]

MAX_REQUEST_SIZE_BYTES = 8 * 1024 * 1024


class Publisher(Protocol):
    """Anything an agent can publish keyed messages to (Kafka, or a test's list)."""

    async def send(self, topic: str, key: bytes, value: bytes) -> None:
        """Queue one message; delivery errors surface at the latest in :meth:`flush`."""

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

    async def send(self, topic: str, key: bytes, value: bytes) -> None:
        """Queue ``value`` under ``key``; returns once it is in a batch, not when acked."""
        if self._producer is None:
            raise BrokerError("KafkaPublisher.send() before start(); use 'async with'")
        try:
            delivery: asyncio.Future[Any] = await self._producer.send(topic, value=value, key=key)
        except KafkaError as error:
            self.messages_failed.labels(topic=topic).inc()
            raise BrokerError(f"cannot queue a message for {topic}: {error}") from error
        self._pending.add(delivery)
        delivery.add_done_callback(lambda done: self._delivered(topic, done))

    def _delivered(self, topic: str, delivery: asyncio.Future[Any]) -> None:
        self._pending.discard(delivery)
        error = None if not delivery.cancelled() else "cancelled"
        if error is None and delivery.exception() is not None:
            error = str(delivery.exception())
        if error is None:
            self.messages_sent.labels(topic=topic).inc()
        else:
            self.messages_failed.labels(topic=topic).inc()
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
