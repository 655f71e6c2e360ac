"""Input limits of an agent: payload size, labels per sample, distinct containers.

Why: an agent runs on every node and reads sources it does not control (a Prometheus
with a cardinality explosion, a Micrometer endpoint with a thousand tags, a cluster
that churns containers). Unbounded input must not become unbounded memory in the agent,
oversized Kafka messages, or per-container state the pipeline has to carry. So each
limit turns over-limit input into a rejection counted in
``daytwo_agent_rejected_total{reason}`` (reasons in :data:`REJECT_REASONS`), logged
once per reason, and the agent keeps going with the input that fits.

Where each check runs: the publisher checks payload size (it sees the encoded bytes);
sources that parse labelled series (Prometheus, Micrometer) call
:meth:`InputGuard.admit_labels` per series; collectors call
:meth:`InputGuard.admit_batch` on each sample batch before encoding it, which drops the
samples of containers beyond the distinct-container cap.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge

from pipeline.errors import ConfigError

__all__ = [
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "REASON_CONTAINERS",
    "REASON_LABELS",
    "REASON_PAYLOAD",
    "REJECT_REASONS",
    "InputGuard",
    "InputLimits",
]

log = logging.getLogger(__name__)

# Apache Kafka's default message.max.bytes is 1 MiB + 12; stay under it with headroom
# for the record overhead so a message that passes here is never refused by the broker.
DEFAULT_MAX_PAYLOAD_BYTES: Final = 1_000_000
REASON_PAYLOAD: Final = "payload_too_large"
REASON_LABELS: Final = "too_many_labels"
REASON_CONTAINERS: Final = "too_many_containers"
REJECT_REASONS: Final = (REASON_PAYLOAD, REASON_LABELS, REASON_CONTAINERS)


@dataclass(frozen=True, slots=True)
class InputLimits:
    """The caps one agent enforces; defaults fit a large node with room to spare.

    ``container_idle_seconds``: a container not seen for this long stops counting
    against ``max_containers`` (pods come and go; the cap is on what is live).
    """

    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    max_labels_per_sample: int = 64
    max_containers: int = 5_000
    container_idle_seconds: float = 3_600.0

    def __post_init__(self) -> None:
        for name in ("max_payload_bytes", "max_labels_per_sample", "max_containers"):
            if getattr(self, name) < 1:
                msg = f"input limit {name} must be at least 1, got {getattr(self, name)}"
                raise ConfigError(msg)
        if self.container_idle_seconds <= 0:
            msg = f"container_idle_seconds must be > 0, got {self.container_idle_seconds}"
            raise ConfigError(msg)


class InputGuard:
    """Applies :class:`InputLimits`, counting every rejection by reason.

    Memory is bounded by ``max_containers`` entries (container key → last seen), kept
    in least-recently-seen order so idle ones are forgotten in O(forgotten).
    """

    def __init__(self, limits: InputLimits, registry: CollectorRegistry | None = None) -> None:
        self.limits = limits
        registry = registry if registry is not None else CollectorRegistry()
        self.rejected = Counter(
            "daytwo_agent_rejected_total",
            "Input the agent refused because it broke a limit, by reason.",
            ["reason"],
            registry=registry,
        )
        self._last_seen: OrderedDict[str, float] = OrderedDict()
        Gauge(
            "daytwo_agent_tracked_containers",
            "Distinct containers counted against the agent's container cap.",
            registry=registry,
        ).set_function(lambda: float(len(self._last_seen)))
        self._warned: set[str] = set()

    def _reject(self, reason: str, detail: str) -> None:
        self.rejected.labels(reason=reason).inc()
        level = logging.DEBUG if reason in self._warned else logging.WARNING
        self._warned.add(reason)
        log.log(
            level,
            "rejected input (%s): %s; daytwo_agent_rejected_total counts further ones",
            reason,
            detail,
        )

    def admit_payload(self, topic: str, value: bytes) -> bool:
        """Whether an encoded message is small enough to publish."""
        if len(value) <= self.limits.max_payload_bytes:
            return True
        self._reject(
            REASON_PAYLOAD,
            f"a {len(value)}-byte message for {topic} exceeds {self.limits.max_payload_bytes}",
        )
        return False

    def admit_labels(self, labels: Mapping[str, str]) -> bool:
        """Whether a labelled series (Prometheus, Micrometer) has few enough labels."""
        if len(labels) <= self.limits.max_labels_per_sample:
            return True
        self._reject(
            REASON_LABELS,
            f"a series with {len(labels)} labels exceeds {self.limits.max_labels_per_sample}",
        )
        return False

    def admit_container(self, container_key: str, now: float) -> bool:
        """Whether ``container_key`` may be reported at ``now`` (epoch seconds).

        Known containers are always admitted (and marked seen); a new one only while
        fewer than ``max_containers`` were seen within ``container_idle_seconds``.
        """
        if container_key in self._last_seen:
            self._last_seen[container_key] = now
            self._last_seen.move_to_end(container_key)
            return True
        if len(self._last_seen) >= self.limits.max_containers:
            self.forget_idle(now)
        if len(self._last_seen) >= self.limits.max_containers:
            self._reject(
                REASON_CONTAINERS,
                f"{container_key} would be container number {len(self._last_seen) + 1}; "
                f"the agent reports at most {self.limits.max_containers}",
            )
            return False
        self._last_seen[container_key] = now
        return True

    def forget_idle(self, now: float) -> int:
        """Stop counting containers unseen for ``container_idle_seconds``; how many."""
        cutoff = now - self.limits.container_idle_seconds
        forgotten = 0
        while self._last_seen:
            key, seen = next(iter(self._last_seen.items()))
            if seen >= cutoff:
                break
            del self._last_seen[key]
            forgotten += 1
        return forgotten

    def admit_batch(self, batch: dict[str, Any], now: float) -> dict[str, Any] | None:
        """A sample batch without the samples of containers over the cap.

        Works for ``container-sample-batch`` and ``jvm-sample-batch`` (a ``workload``
        and ``samples`` each with a ``container``). Returns the batch itself when all
        samples are admitted, a copy with fewer samples otherwise, and ``None`` when
        none is left (publish nothing: an empty batch is invalid).
        """
        workload = str(batch["workload"])
        samples = batch["samples"]
        admitted = [
            sample
            for sample in samples
            if self.admit_container(f"{workload}:{sample['container']}", now)
        ]
        if len(admitted) == len(samples):
            return batch
        if not admitted:
            return None
        return {**batch, "samples": admitted}
