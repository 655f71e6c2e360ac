"""daytwo's Kafka topics: names, partition counts, cleanup policies, and their creation.

Why explicit creation: auto-created topics get the broker's default partition count
(4 on the embedded Tansu broker, 1 on a default Apache Kafka), and a Faust table whose
source topic and changelog disagree on partitions crashes with ``PartitionsMismatch``.
So every daytwo process calls :func:`ensure_topics` before it produces or consumes.
The table in docs/architecture.md ("Topics") is the contract this module encodes.

Tests isolate themselves with a name prefix: ``topic_names("t-3f2a.")`` gives
``t-3f2a.daytwo.container-samples.v1`` and so on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

# aiokafka ships no py.typed; unused-ignore keeps these valid once pyproject lists it.
from aiokafka.admin import (  # type: ignore[import-untyped, unused-ignore]
    AIOKafkaAdminClient,
    NewTopic,
)
from aiokafka.admin.config_resource import (  # type: ignore[import-untyped, unused-ignore]
    ConfigResource,
    ConfigResourceType,
)
from aiokafka.errors import (  # type: ignore[import-untyped, unused-ignore]
    TopicAlreadyExistsError,
    for_code,
)

from pipeline.errors import BrokerError

__all__ = [
    "ALL_TOPICS",
    "CONTAINER_SAMPLES",
    "DEADLETTER",
    "DEADLETTER_MAX_MESSAGE_BYTES",
    "JVM_SAMPLES",
    "NODE_SAMPLES",
    "RECOMMENDATIONS",
    "SINK_STATE",
    "SINK_STATE_SPEC",
    "WORKLOAD_SPECS",
    "TopicNames",
    "TopicSpec",
    "ensure_topics",
    "topic_names",
    "topic_specs",
]

CONTAINER_SAMPLES: Final = "daytwo.container-samples.v1"
NODE_SAMPLES: Final = "daytwo.node-samples.v1"
JVM_SAMPLES: Final = "daytwo.jvm-samples.v1"
WORKLOAD_SPECS: Final = "daytwo.workload-specs.v1"
RECOMMENDATIONS: Final = "daytwo.recommendations.v1"
DEADLETTER: Final = "daytwo.deadletter.v1"

# A dead-letter record carries the original value base64'd (complete up to 4 MiB, so
# ~5.6 MiB of text) plus its JSON envelope; 8 MiB leaves room. Producers writing to it
# need ``max_request_size`` at least this large, consumers fetch it regardless.
DEADLETTER_MAX_MESSAGE_BYTES: Final = 8 * 1024 * 1024

_TOPIC_READY_TIMEOUT_SECONDS: Final = 30.0


@dataclasses.dataclass(frozen=True, slots=True)
class TopicSpec:
    """How one topic must look: why a dataclass — creation and verification share it.

    ``max_message_bytes`` None leaves the broker default (1 MiB on Apache Kafka).
    ``partitions_fixed`` marks topics whose partition count is part of their meaning
    (the dead-letter log is one ordered partition); ``partitions_override`` skips them.
    """

    name: str
    partitions: int
    compacted: bool
    max_message_bytes: int | None = None
    partitions_fixed: bool = False

    def __post_init__(self) -> None:
        if self.partitions < 1:
            msg = f"topic {self.name!r} needs at least one partition, got {self.partitions}"
            raise BrokerError(msg)

    @property
    def cleanup_policy(self) -> str:
        """Kafka ``cleanup.policy`` value for this topic."""
        return "compact" if self.compacted else "delete"

    def kafka_configs(self) -> dict[str, str]:
        """Topic-level Kafka configs to create the topic with."""
        configs = {"cleanup.policy": self.cleanup_policy}
        if self.max_message_bytes is not None:
            configs["max.message.bytes"] = str(self.max_message_bytes)
        return configs


ALL_TOPICS: Final[tuple[TopicSpec, ...]] = (
    TopicSpec(CONTAINER_SAMPLES, partitions=8, compacted=False),
    TopicSpec(NODE_SAMPLES, partitions=8, compacted=False),
    TopicSpec(JVM_SAMPLES, partitions=8, compacted=False),
    TopicSpec(WORKLOAD_SPECS, partitions=8, compacted=True),
    TopicSpec(RECOMMENDATIONS, partitions=8, compacted=True),
    TopicSpec(
        DEADLETTER,
        partitions=1,
        compacted=False,
        max_message_bytes=DEADLETTER_MAX_MESSAGE_BYTES,
        partitions_fixed=True,
    ),
)

# The PR sink's own memory (issue 5), kept apart from ALL_TOPICS: only the sink reads or
# writes it, and it creates it itself (``ensure_topics([SINK_STATE_SPEC], prefix=...)``).
# Key = workload id, value = small JSON (pipeline/prsink/state.py): last set hash, PR
# number and state, values proposed in the PR, so a restarted sink never reopens a PR a
# human closed.
SINK_STATE: Final = "daytwo.sink-state.v1"
SINK_STATE_SPEC: Final = TopicSpec(SINK_STATE, partitions=8, compacted=True)


@dataclasses.dataclass(frozen=True, slots=True)
class TopicNames:
    """The concrete topic names one deployment (or one test) uses, prefix applied."""

    container_samples: str
    node_samples: str
    jvm_samples: str
    workload_specs: str
    recommendations: str
    deadletter: str

    def all(self) -> tuple[str, ...]:
        """Every name, in the order of the architecture's topic table."""
        return (
            self.container_samples,
            self.node_samples,
            self.jvm_samples,
            self.workload_specs,
            self.recommendations,
            self.deadletter,
        )


def topic_names(prefix: str = "") -> TopicNames:
    """Topic names with ``prefix`` prepended, so tests and tenants can share a broker."""
    return TopicNames(
        container_samples=prefix + CONTAINER_SAMPLES,
        node_samples=prefix + NODE_SAMPLES,
        jvm_samples=prefix + JVM_SAMPLES,
        workload_specs=prefix + WORKLOAD_SPECS,
        recommendations=prefix + RECOMMENDATIONS,
        deadletter=prefix + DEADLETTER,
    )


def topic_specs(
    specs: Iterable[TopicSpec] = ALL_TOPICS,
    *,
    prefix: str = "",
    partitions_override: int | None = None,
) -> list[TopicSpec]:
    """The specs as they will be created: name prefixed, partition count overridden.

    Why separate from :func:`ensure_topics`: the worker must declare its Faust topics
    with exactly the partition counts that were created, and this is the one place
    that computes them. ``partitions_override`` applies to every topic not marked
    ``partitions_fixed`` (i.e. not the dead-letter topic).
    """
    if partitions_override is not None and partitions_override < 1:
        msg = f"partitions_override must be at least 1, got {partitions_override}"
        raise BrokerError(msg)
    resolved = []
    for spec in specs:
        partitions = spec.partitions
        if partitions_override is not None and not spec.partitions_fixed:
            partitions = partitions_override
        resolved.append(dataclasses.replace(spec, name=prefix + spec.name, partitions=partitions))
    return resolved


async def ensure_topics(
    bootstrap: str,
    specs: Iterable[TopicSpec] = ALL_TOPICS,
    *,
    prefix: str = "",
    partitions_override: int | None = None,
    replication_factor: int = 1,
) -> list[TopicSpec]:
    """Create the topics that are missing and verify the ones that exist; idempotent.

    Why: producers and Faust must never auto-create a daytwo topic (wrong partition
    count, no compaction). An existing topic with a different partition count or
    cleanup policy raises :class:`BrokerError` naming both values, because silently
    using it would break key → partition affinity or lose compacted state.

    Returns the specs as created (see :func:`topic_specs`). Waits until every topic's
    partitions have leaders, so a producer started right after does not race creation.
    """
    wanted = topic_specs(specs, prefix=prefix, partitions_override=partitions_override)
    if not wanted:
        return wanted
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="daytwo-topics")
    try:
        await admin.start()
        response = await admin.create_topics(
            [
                NewTopic(
                    spec.name,
                    spec.partitions,
                    replication_factor,
                    topic_configs=spec.kafka_configs(),
                )
                for spec in wanted
            ]
        )
        preexisting = _creation_outcome(response.topic_errors)
        await _wait_for_partitions(admin, wanted)
        await _verify_cleanup_policies(admin, [s for s in wanted if s.name in preexisting])
    except BrokerError:
        raise
    except Exception as exc:  # aiokafka raises many unrelated types; name the broker
        msg = f"could not create daytwo topics on Kafka at {bootstrap}: {exc!r}"
        raise BrokerError(msg) from exc
    finally:
        await admin.close()
    return wanted


def _creation_outcome(topic_errors: Sequence[Sequence[Any]]) -> set[str]:
    """Names that already existed; raise on any other creation error."""
    preexisting: set[str] = set()
    for entry in topic_errors:
        name, code = str(entry[0]), int(entry[1])
        message = entry[2] if len(entry) > 2 else None
        if code == 0:
            continue
        if code == TopicAlreadyExistsError.errno:
            preexisting.add(name)
            continue
        error_type = for_code(code).__name__
        msg = f"creating topic {name!r} failed: {error_type} ({message or 'no message'})"
        raise BrokerError(msg)
    return preexisting


async def _wait_for_partitions(admin: Any, wanted: Sequence[TopicSpec]) -> None:
    """Wait until metadata shows every topic with a leader per partition; check counts."""
    expected = {spec.name: spec.partitions for spec in wanted}
    deadline = time.monotonic() + _TOPIC_READY_TIMEOUT_SECONDS
    while True:
        described = await admin.describe_topics(list(expected))
        pending = []
        for topic in described:
            name = str(topic["topic"])
            if name not in expected:
                continue
            partitions = topic["partitions"]
            if topic["error_code"] != 0 or not partitions:
                pending.append(name)
                continue
            if len(partitions) != expected[name]:
                msg = (
                    f"topic {name!r} exists with {len(partitions)} partitions but daytwo "
                    f"needs {expected[name]}; delete it (its data is lost) or use another "
                    "topic prefix"
                )
                raise BrokerError(msg)
            if any(partition["leader"] < 0 for partition in partitions):
                pending.append(name)
        missing = set(expected) - {str(topic["topic"]) for topic in described}
        pending.extend(sorted(missing))
        if not pending:
            return
        if time.monotonic() > deadline:
            msg = f"topics {sorted(pending)} have no leader after {_TOPIC_READY_TIMEOUT_SECONDS} s"
            raise BrokerError(msg)
        await asyncio.sleep(0.1)


async def _verify_cleanup_policies(admin: Any, existing: Sequence[TopicSpec]) -> None:
    """Refuse a pre-existing topic whose compaction setting contradicts the contract."""
    if not existing:
        return
    responses = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, spec.name) for spec in existing]
    )
    policies = _cleanup_policies(response.to_object() for response in responses)
    for spec in existing:
        # A topic described without the key runs with the broker default, "delete".
        actual = policies.get(spec.name, "delete")
        actual_compacted = "compact" in actual.split(",")
        if actual_compacted != spec.compacted:
            msg = (
                f"topic {spec.name!r} exists with cleanup.policy={actual!r} but daytwo "
                f"needs {spec.cleanup_policy!r}; fix it with kafka-configs or recreate it"
            )
            raise BrokerError(msg)


def _cleanup_policies(described: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    policies: dict[str, str] = {}
    for response in described:
        for resource in response["resources"]:
            if resource["error_code"] != 0:
                continue
            for entry in resource["config_entries"]:
                if entry["config_names"] == "cleanup.policy":
                    policies[str(resource["resource_name"])] = str(entry["config_value"])
    return policies
