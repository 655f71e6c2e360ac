"""The PR sink's memory per workload, kept in a compacted Kafka topic.

Why Kafka and not a dict: the sink is restarted (deploys, crashes, rebalances) and the
recommendation topic is replayed; without memory a restarted sink would reopen every PR
a human closed. One small JSON value per workload (key = workload id) on the compacted
``daytwo.sink-state.v1`` is all it needs: the last recommendation set it decided about,
the PR it opened, that PR's state, and the values the PR proposed (so a PR a human
closed is reopened only when a new set differs *materially* from what was refused).

:class:`SinkState` is the value; :class:`MemoryStateStore` and :class:`KafkaStateStore`
keep it. Reads are from a local cache filled at start-up (the sink's decisions are
synchronous); writes go to Kafka and wait for the broker's acknowledgement before the
sink commits its input offsets.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

import orjson

# aiokafka ships no py.typed; unused-ignore keeps this valid once pyproject lists it.
from aiokafka import (  # type: ignore[import-untyped, unused-ignore]
    AIOKafkaConsumer,
    AIOKafkaProducer,
    TopicPartition,
)
from aiokafka.errors import KafkaError  # type: ignore[import-untyped, unused-ignore]

from pipeline.errors import BrokerError

logger = logging.getLogger(__name__)

STATE_VERSION = 1

#: What became of the workload's last set:
#: ``open`` a PR shows it; ``closed`` a human closed the PR and the set was not
#: materially different; ``merged`` the PR was merged; ``human-branch`` a human pushed
#: to the bot's branch (the bot commented instead); ``deferred`` a PR quota or the
#: forge said wait (``pending_set`` holds the set to retry); ``in-base`` the base branch
#: already says it; ``pushed`` a branch without a forge (push only).
PrStatus = Literal["open", "closed", "merged", "human-branch", "deferred", "in-base", "pushed"]
_STATUSES = frozenset(("open", "closed", "merged", "human-branch", "deferred", "in-base", "pushed"))

#: Resource values per container, as in a recommendation's ``recommended`` object.
ProposedValues = dict[str, dict[str, float | int | None]]


@dataclass(frozen=True)
class SinkState:
    """What the sink remembers about one workload (the value on the state topic).

    ``proposed`` holds the values the PR (open, or the one a human closed) shows per
    container; it is what a new set is compared with under the profile's thresholds.
    """

    workload: str
    set_hash: str
    status: PrStatus
    pr_number: int | None = None
    proposed: ProposedValues = field(default_factory=dict)
    pending_set: Mapping[str, Any] | None = None
    retry_after: float | None = None
    updated_at: float = 0.0

    def to_json(self) -> bytes:
        """The topic value (orjson, keys sorted so equal states are equal bytes)."""
        return orjson.dumps(
            {
                "version": STATE_VERSION,
                "workload": self.workload,
                "set_hash": self.set_hash,
                "status": self.status,
                "pr_number": self.pr_number,
                "proposed": self.proposed,
                "pending_set": self.pending_set,
                "retry_after": self.retry_after,
                "updated_at": self.updated_at,
            },
            option=orjson.OPT_SORT_KEYS,
        )

    @classmethod
    def from_json(cls, raw: bytes) -> SinkState:
        """Parse a topic value; ValueError for anything this version did not write."""
        data = orjson.loads(raw)
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise ValueError("not a sink-state v1 value")
        status = data["status"]
        if status not in _STATUSES:
            raise ValueError(f"unknown sink-state status {status!r}")
        proposed = data.get("proposed") or {}
        if not isinstance(proposed, dict):
            raise ValueError("sink-state 'proposed' must be an object")
        pr_number = data.get("pr_number")
        return cls(
            workload=str(data["workload"]),
            set_hash=str(data["set_hash"]),
            status=status,
            pr_number=int(pr_number) if pr_number is not None else None,
            proposed={str(k): dict(v) for k, v in proposed.items()},
            pending_set=data.get("pending_set"),
            retry_after=data.get("retry_after"),
            updated_at=float(data.get("updated_at") or 0.0),
        )

    def evolve(self, **changes: Any) -> SinkState:
        """A copy with ``changes`` applied (frozen dataclass)."""
        return replace(self, **changes)


class SinkStateStore(Protocol):
    """Where the sink keeps :class:`SinkState`: read from a cache, written durably."""

    def get(self, workload: str) -> SinkState | None:
        """The last state written for ``workload``, or None."""
        ...

    def all(self) -> list[SinkState]:
        """Every state known (to re-queue deferred sets after a restart)."""
        ...

    async def put(self, state: SinkState) -> None:
        """Write ``state``; returns when it is durable."""
        ...


class MemoryStateStore:
    """A :class:`SinkStateStore` in a dict: for dry runs and one-shot tools, forgets on exit."""

    def __init__(self) -> None:
        self._states: dict[str, SinkState] = {}

    def get(self, workload: str) -> SinkState | None:
        """The state in memory, or None."""
        return self._states.get(workload)

    def all(self) -> list[SinkState]:
        """Every state in memory."""
        return list(self._states.values())

    async def put(self, state: SinkState) -> None:
        """Keep ``state`` in memory."""
        self._states[state.workload] = state


class KafkaStateStore:
    """A :class:`SinkStateStore` on a compacted topic, read to its end at start-up.

    Use :meth:`open` (reads the topic) and :meth:`close`. Reading to the end uses the
    fetch responses' high watermark, not ListOffsets alone, because the embedded broker
    answers ListOffsets wrongly for batches of several records (see DESIGN.md); each
    state is also produced and awaited on its own, so every batch holds one record.
    """

    def __init__(self, bootstrap: str, topic: str, *, idempotent: bool = True) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self._idempotent = idempotent
        self._states: dict[str, SinkState] = {}
        self._producer: Any = None

    @classmethod
    async def open(
        cls, bootstrap: str, topic: str, *, idempotent: bool = True, load_seconds: float = 30.0
    ) -> KafkaStateStore:
        """A store with every state on ``topic`` loaded and a producer started."""
        store = cls(bootstrap, topic, idempotent=idempotent)
        await store._load(load_seconds)
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", enable_idempotence=idempotent
        )
        try:
            await producer.start()
        except KafkaError as error:
            await producer.stop()
            raise BrokerError(
                f"cannot start the sink-state producer at {bootstrap}: {error!r}"
            ) from error
        store._producer = producer
        return store

    async def close(self) -> None:
        """Stop the producer."""
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def _load(self, load_seconds: float) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            group_id=None,
        )
        try:
            await consumer.start()
        except KafkaError as error:
            await consumer.stop()
            raise BrokerError(f"cannot read {self.topic} at {self.bootstrap}: {error!r}") from error
        try:
            await consumer.topics()  # fetches metadata for every topic
            partitions = consumer.partitions_for_topic(self.topic)
            if not partitions:
                raise BrokerError(
                    f"topic {self.topic} does not exist; create it with "
                    "ensure_topics([SINK_STATE_SPEC], prefix=...)"
                )
            assigned = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            consumer.assign(assigned)
            await consumer.seek_to_beginning(*assigned)
            ends: dict[TopicPartition, int] = await consumer.end_offsets(assigned)
            deadline = asyncio.get_running_loop().time() + load_seconds
            while True:
                batches = await consumer.getmany(timeout_ms=200, max_records=1000)
                for records in batches.values():
                    for record in records:
                        self._apply(record.key, record.value)
                pending = []
                for tp in assigned:
                    end = max(ends.get(tp, 0), consumer.highwater(tp) or 0)
                    if await consumer.position(tp) < end:
                        pending.append(tp)
                if not pending:
                    break
                if asyncio.get_running_loop().time() > deadline:
                    raise BrokerError(
                        f"reading {self.topic} did not reach its end within {load_seconds:.0f} s"
                    )
        finally:
            await consumer.stop()
        logger.info("sink state: %d workloads read from %s", len(self._states), self.topic)

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        workload = key.decode("utf-8", "replace")
        if value is None:
            self._states.pop(workload, None)
            return
        try:
            self._states[workload] = SinkState.from_json(value)
        except (ValueError, KeyError, TypeError) as error:
            logger.warning("ignoring an unreadable sink state for %s: %s", workload, error)

    def get(self, workload: str) -> SinkState | None:
        """The last state for ``workload`` (from the cache the topic filled)."""
        return self._states.get(workload)

    def all(self) -> list[SinkState]:
        """Every state known."""
        return list(self._states.values())

    async def put(self, state: SinkState) -> None:
        """Produce ``state`` and wait until the broker has it; then cache it."""
        if self._producer is None:
            raise BrokerError("the sink-state store is closed")
        await self._producer.send_and_wait(
            self.topic, value=state.to_json(), key=state.workload.encode("utf-8")
        )
        self._states[state.workload] = state
