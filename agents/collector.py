"""The bare-metal agent: scrape mapped cgroups and the node, publish one batch per workload.

Why: this is the thin shell around :mod:`agents.cgroup` and :mod:`agents.node`. It owns
the per-container rate state, groups samples into one ``container-sample-batch`` per
workload per scrape (design rule: batch at every boundary), and keeps going when one
cgroup cannot be read (a container that exited must not silence the others). The clock
is passed in: ``scrape(now)`` never looks at the time itself, and :func:`run_agent` gets
a ``clock`` callable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson
from prometheus_client import CollectorRegistry, Counter

from agents.cgroup import CgroupMounts, RateCalculator, read_cgroup
from agents.limits import InputGuard
from agents.mapping import AgentMapping, CgroupMapping
from agents.node import NodeSampler
from agents.publisher import Publisher
from pipeline.errors import CollectorError

__all__ = [
    "CONTAINER_SAMPLES_TOPIC",
    "NODE_SAMPLES_TOPIC",
    "AgentMetrics",
    "BatchSequence",
    "Collector",
    "ContainerCollector",
    "NodeCollector",
    "OutgoingMessage",
    "guard_message",
    "run_agent",
]

CONTAINER_SAMPLES_TOPIC = "daytwo.container-samples.v1"
NODE_SAMPLES_TOPIC = "daytwo.node-samples.v1"
#: Topics whose messages are sample batches (``workload`` + ``samples[].container``): the
#: ones the distinct-container cap applies to. (jvm_collector.JVM_SAMPLES_TOPIC is the
#: second; it imports this module, so the name is written out here.)
SAMPLE_BATCH_TOPICS = frozenset({CONTAINER_SAMPLES_TOPIC, "daytwo.jvm-samples.v1"})
CGROUP_SOURCE = "cgroup"
SCHEMA_VERSION = 1

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentMetrics:
    """The collector-side counters of an agent, on a registry passed in."""

    read_errors: Counter
    counter_resets: Counter
    scrape_errors: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> AgentMetrics:
        """Register the agent's collector metrics (on a private registry by default)."""
        registry = registry if registry is not None else CollectorRegistry()
        return cls(
            read_errors=Counter(
                "daytwo_agent_read_errors_total",
                "Cgroup or /proc reads that failed (that container is skipped this scrape).",
                ["source"],
                registry=registry,
            ),
            counter_resets=Counter(
                "daytwo_agent_counter_resets_total",
                "Cgroup counters that went backwards (container recreated), by workload.",
                ["workload"],
                registry=registry,
            ),
            scrape_errors=Counter(
                "daytwo_agent_scrape_errors_total",
                "Whole collector scrapes that failed in the agent loop.",
                registry=registry,
            ),
        )


@dataclass(frozen=True)
class OutgoingMessage:
    """One message ready for a :class:`~agents.publisher.Publisher`."""

    topic: str
    key: bytes
    value: bytes | None
    """None: a tombstone (the key is gone from a compacted topic)."""

    @property
    def payload(self) -> bytes:
        """The value of a message that is not a tombstone (ValueError on a tombstone)."""
        if self.value is None:
            raise ValueError(f"{self.topic} {self.key!r} is a tombstone: it has no payload")
        return self.value


class Collector(Protocol):
    """Anything :func:`run_agent` can scrape: returns encoded messages for ``now``."""

    def messages(self, now: float) -> list[OutgoingMessage]:
        """Scrape at ``now`` (epoch seconds) and return what to publish."""
        ...


class ContainerCollector:
    """Reads every cgroup of a mapping and yields one batch per workload per scrape.

    ``mounts`` defaults to the host's (``/proc/self/mountinfo``); pass
    ``CgroupMounts.discover(mountinfo_path, root=...)`` to read a synthetic tree.
    """

    def __init__(
        self,
        mapping: AgentMapping,
        *,
        mounts: CgroupMounts | None = None,
        agent: str | None = None,
        metrics: AgentMetrics | None = None,
    ) -> None:
        self.mapping = mapping
        self.mounts = mounts if mounts is not None else CgroupMounts.discover()
        self.agent = agent or socket.gethostname()
        self.metrics = metrics if metrics is not None else AgentMetrics.create()
        self._calculators: dict[str, RateCalculator] = {
            entry.container_key: RateCalculator() for entry in mapping.cgroups
        }
        #: reads that failed since this collector was built (also in ``metrics``)
        self.read_errors = 0
        self._failing: set[str] = set()

    def _sample(self, entry: CgroupMapping, now: float) -> dict[str, Any] | None:
        calculator = self._calculators[entry.container_key]
        try:
            reading = read_cgroup(self.mounts.resolve(entry.path))
        except CollectorError as error:
            self.read_errors += 1
            self.metrics.read_errors.labels(source=CGROUP_SOURCE).inc()
            # warn once when a container starts failing, not on every scrape
            level = logging.DEBUG if entry.container_key in self._failing else logging.WARNING
            self._failing.add(entry.container_key)
            log.log(level, "skipping %s until it can be read: %s", entry.container_key, error)
            return None
        if entry.container_key in self._failing:
            self._failing.discard(entry.container_key)
            log.info("%s can be read again", entry.container_key)
        sample = calculator.update(reading, now)
        if sample is None:
            return None
        if sample.counter_reset:
            self.metrics.counter_resets.labels(workload=entry.workload).inc()
            log.info("counters of %s went backwards (recreated?)", entry.container_key)
        return sample.to_container_sample(entry.container, now)

    def scrape(self, now: float) -> list[tuple[str, dict[str, Any]]]:
        """One ``(workload id, container-sample-batch)`` per workload that has samples.

        The first scrape only sets baselines, so it returns nothing; a container whose
        cgroup cannot be read is logged, counted and left out of its workload's batch.
        """
        batches: list[tuple[str, dict[str, Any]]] = []
        for workload, entries in self.mapping.workloads().items():
            samples = [
                sample for entry in entries if (sample := self._sample(entry, now)) is not None
            ]
            if not samples:
                continue
            batches.append(
                (
                    workload,
                    {
                        "schema_version": SCHEMA_VERSION,
                        "kind": "container-sample-batch",
                        "source": CGROUP_SOURCE,
                        "agent": self.agent,
                        "workload": workload,
                        "timestamp": now,
                        "samples": samples,
                    },
                )
            )
        return batches

    def messages(self, now: float) -> list[OutgoingMessage]:
        """:meth:`scrape`, encoded with orjson for ``daytwo.container-samples.v1``."""
        return [
            OutgoingMessage(CONTAINER_SAMPLES_TOPIC, workload.encode(), orjson.dumps(batch))
            for workload, batch in self.scrape(now)
        ]


class NodeCollector:
    """Samples this node from ``<root>/proc`` once per scrape."""

    def __init__(
        self,
        node: str | None = None,
        *,
        root: Path = Path("/"),
        metrics: AgentMetrics | None = None,
    ) -> None:
        self.node = node or socket.gethostname()
        self.metrics = metrics if metrics is not None else AgentMetrics.create()
        self._sampler = NodeSampler(self.node, root=root)

    def scrape(self, now: float) -> dict[str, Any] | None:
        """The ``node-sample`` since the previous scrape (``None`` on the first)."""
        try:
            return self._sampler.sample(now)
        except CollectorError:
            self.metrics.read_errors.labels(source="proc").inc()
            raise

    def messages(self, now: float) -> list[OutgoingMessage]:
        """:meth:`scrape`, encoded with orjson for ``daytwo.node-samples.v1``."""
        sample = self.scrape(now)
        if sample is None:
            return []
        return [OutgoingMessage(NODE_SAMPLES_TOPIC, self.node.encode(), orjson.dumps(sample))]


class BatchSequence:
    """The agent's per-batch sequence numbers: 0, 1, 2 ... for one process.

    Why: a consumer can only prove that no batch was lost between an agent and the topic
    (through a broker outage and the spool) if the agent numbers what it publishes; a gap
    is a loss, a repeat an at-least-once duplicate. One instance per agent process, shared
    by every path that publishes ``container-sample-batch`` messages, and numbers are
    taken only for batches actually handed to the publisher (after the input guard), so
    the numbers have no gaps of their own.

    >>> sequence = BatchSequence()
    >>> sequence.take(), sequence.take()
    (0, 1)
    """

    __slots__ = ("_next",)

    def __init__(self, first: int = 0) -> None:
        if first < 0:
            raise ValueError(f"a batch sequence starts at 0 or above, got {first}")
        self._next = first

    @property
    def next_number(self) -> int:
        """The number the next batch will get (how many were taken, from 0)."""
        return self._next

    def take(self) -> int:
        """The next number, consumed."""
        number = self._next
        self._next += 1
        return number

    def stamp(self, message: OutgoingMessage) -> OutgoingMessage:
        """``message`` with the next ``sequence`` when it is a container-sample batch.

        Messages of other topics pass unchanged and take no number; so does a value that
        is not a JSON object (the worker dead-letters it: it is no batch to count).
        """
        if message.topic != CONTAINER_SAMPLES_TOPIC or message.value is None:
            return message
        try:
            batch = orjson.loads(message.value)
        except orjson.JSONDecodeError:
            return message
        if not isinstance(batch, dict):
            return message
        batch["sequence"] = self.take()
        return OutgoingMessage(message.topic, message.key, orjson.dumps(batch))


def guard_message(
    message: OutgoingMessage, guard: InputGuard, now: float
) -> OutgoingMessage | None:
    """``message`` without the samples of containers over the guard's container cap.

    Why here: every source (cgroup, kubelet, Prometheus, JVM) hands the loop encoded
    batches, so the cap is applied once, for all of them, at the last point before
    publishing. Messages of other topics (node samples, workload specs) pass unchanged;
    ``None`` means nothing of the batch is left to publish.
    """
    if message.topic not in SAMPLE_BATCH_TOPICS or message.value is None:
        return message
    batch = orjson.loads(message.value)
    admitted = guard.admit_batch(batch, now)
    if admitted is None:
        return None
    if admitted is batch:
        return message
    return OutgoingMessage(message.topic, message.key, orjson.dumps(admitted))


async def run_agent(
    collectors: Sequence[Collector],
    publisher: Publisher,
    *,
    interval_seconds: float,
    stop_event: asyncio.Event,
    clock: Callable[[], float],
    metrics: AgentMetrics | None = None,
    topic_prefix: str = "",
    guard: InputGuard | None = None,
    wait_for: Callable[[], bool] | None = None,
    sequence: BatchSequence | None = None,
) -> int:
    """Scrape every collector each interval and publish, until ``stop_event`` is set.

    ``topic_prefix`` is put in front of every topic name (isolated test topics).
    ``guard`` applies the distinct-container cap to sample batches (see
    :func:`guard_message`). ``wait_for``: a readiness check (the inventory has listed
    everything) polled each interval; no collector is scraped before it holds.
    ``sequence`` numbers the container-sample batches that pass the guard (see
    :class:`BatchSequence`; a fresh one from 0 when not given: one per process).

    Each cycle's messages are flushed before the next sleep, so delivery errors surface
    once per interval. A collector that raises ``CollectorError`` is logged and counted;
    the others still publish. Returns the number of messages published.
    """
    if interval_seconds <= 0:
        raise ValueError(f"interval_seconds must be > 0, got {interval_seconds}")
    metrics = metrics if metrics is not None else AgentMetrics.create()
    sequence = sequence if sequence is not None else BatchSequence()
    published = 0
    next_due = clock()
    while not stop_event.is_set():
        now = clock()
        if wait_for is None or wait_for():
            published += await _publish_cycle(
                collectors,
                publisher,
                now,
                metrics=metrics,
                topic_prefix=topic_prefix,
                guard=guard,
                sequence=sequence,
            )
        next_due += interval_seconds
        delay = next_due - clock()
        if delay < 0:  # a slow cycle: skip missed ticks rather than bursting
            next_due = clock()
            delay = 0.0
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop_event.wait(), timeout=delay)
    return published


async def _publish_cycle(
    collectors: Sequence[Collector],
    publisher: Publisher,
    now: float,
    *,
    metrics: AgentMetrics,
    topic_prefix: str,
    guard: InputGuard | None,
    sequence: BatchSequence,
) -> int:
    published = 0
    for collector in collectors:
        try:
            outgoing = collector.messages(now)
        except CollectorError as error:
            metrics.scrape_errors.inc()
            log.warning("scrape of %s failed: %s", type(collector).__name__, error)
            continue
        for message in outgoing:
            admitted = message if guard is None else guard_message(message, guard, now)
            if admitted is None:
                continue
            admitted = sequence.stamp(admitted)
            await publisher.send(topic_prefix + admitted.topic, admitted.key, admitted.value)
            published += 1
    await publisher.flush()
    return published
