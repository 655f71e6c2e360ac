"""Issue 6: the inventory tombstones a workload that disappears from the cluster.

The compacted topic ``daytwo.workload-specs.v1`` keeps the last value per key forever;
a record with the key and a null value is how it learns that a workload is gone. The
inventory runs on the recorded API answers (``tests/fixtures/k8s``) served by the real
lightkube client over an ``httpx2.MockTransport``; snapshots are changed with watch events
(``ClusterState.apply``), as the watch shell would. Timeline of the main scenario::

    round        1          2                  3        4                5
    debug-shell  spec       tombstone          -        spec (back)      tombstone
    ledger       spec       tombstone          -        -                -
    others       spec       -                  -        -                -

The tombstone also has to survive the agent loop (input guard, batch numbering), the
on-disk spool (reopened, and next to records in the layout spools had before tombstones
existed) and a real broker.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lightkube import AsyncClient
from lightkube.config.kubeconfig import KubeConfig
from prometheus_client import CollectorRegistry

from agents.collector import OutgoingMessage, run_agent
from agents.inventory import (
    KINDS,
    WORKLOAD_SPECS_TOPIC,
    ClusterState,
    InventoryConfig,
    InventoryMetrics,
    KubernetesInventory,
    build_workloads,
)
from agents.limits import InputGuard, InputLimits
from agents.publisher import KafkaPublisher, SpoolingPublisher
from agents.spool import RECORD_MAGIC, SEGMENT_MAGIC, Spool
from schemas.models import WorkloadSpec
from schemas.validate import decode
from tests.conftest import KAFKA_BOOTSTRAP_ENV
from tests.k8s_fixtures import LIST_FILES, items, recorded
from tests.test_agents_publisher import read_back

NOW = 1_772_446_500.0  # 2026-03-02T10:15:00Z
CLUSTER = "prod"
DEBUG_SHELL = "prod/shop/Pod/debug-shell"
LEDGER = "prod/payments/StatefulSet/ledger"
SPOOL_CAP_BYTES = 4 << 20

KUBECONFIG = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [{"name": "prod", "cluster": {"server": "https://k8s.test"}}],
    "users": [{"name": "agent", "user": {"token": "service-account-token"}}],
    "contexts": [{"name": "prod", "context": {"cluster": "prod", "user": "agent"}}],
    "current-context": "prod",
}
LIST_PATHS = {
    (f"/api/{info.version}/{info.plural}" if not info.group else
     f"/apis/{info.group}/{info.version}/{info.plural}"): kind
    for kind, info in KINDS.items()
}  # fmt: skip


def serve_recorded_lists(request: httpx2.Request) -> httpx2.Response:
    """The API server's list answers, as recorded (this file never watches)."""
    kind = LIST_PATHS[request.url.path]
    return httpx2.Response(200, json=recorded(LIST_FILES[kind]))


async def listed_inventory(registry: CollectorRegistry) -> KubernetesInventory:
    """A cluster-wide inventory that listed every kind once (so it is ready)."""
    client = AsyncClient(
        config=KubeConfig.from_dict(KUBECONFIG),
        transport=httpx2.MockTransport(serve_recorded_lists),
    )
    inventory = KubernetesInventory(
        client, InventoryConfig(cluster=CLUSTER), metrics=InventoryMetrics.create(registry)
    )
    for kind in KINDS:
        await inventory.list_kind(kind)
    await client.close()
    assert inventory.ready
    return inventory


def item(kind: str, name: str) -> dict[str, Any]:
    return next(obj for obj in items(kind) if obj["metadata"]["name"] == name)


def tombstones(registry: CollectorRegistry) -> float:
    value = registry.get_sample_value("daytwo_inventory_tombstones_total")
    assert value is not None  # registered from the start, at 0
    return value


def delete_ledger(state: ClusterState) -> None:
    """The StatefulSet and its only pod: nothing of the workload is left."""
    state.apply("DELETED", "StatefulSet", item("StatefulSet", "ledger"))
    state.apply("DELETED", "Pod", item("Pod", "ledger-0"))


def published(messages: list[OutgoingMessage]) -> dict[str, bytes | None]:
    """Key → value of one round (each key at most once per round)."""
    keys = [message.key.decode() for message in messages]
    assert len(keys) == len(set(keys))
    assert {message.topic for message in messages} <= {WORKLOAD_SPECS_TOPIC}
    # OutgoingMessage.value is typed bytes; a tombstone carries None at run time.
    values: list[bytes | None] = [message.value for message in messages]
    return dict(zip(keys, values, strict=True))


# --------------------------------------------------------------------------- inventory


def test_a_vanished_workload_gets_one_tombstone_and_comes_back_as_a_spec(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = CollectorRegistry()
    inventory = asyncio.run(listed_inventory(registry))
    state = inventory.state

    first = published(inventory.messages(NOW))  # round 1: every workload, no tombstone
    assert DEBUG_SHELL in first
    assert LEDGER in first
    assert None not in first.values()
    assert tombstones(registry) == 0

    state.apply("DELETED", "Pod", item("Pod", "debug-shell"))  # a bare pod: its last pod
    delete_ledger(state)
    with caplog.at_level(logging.INFO, logger="agents.inventory"):
        second = published(inventory.messages(NOW + 60))  # round 2
    assert second == {DEBUG_SHELL: None, LEDGER: None}  # nothing else changed
    assert tombstones(registry) == 2
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any(DEBUG_SHELL in text and "tombstone" in text for text in logged)
    assert any(LEDGER in text and "tombstone" in text for text in logged)

    assert inventory.messages(NOW + 120) == []  # round 3: once, not every round
    assert tombstones(registry) == 2

    state.apply("ADDED", "Pod", item("Pod", "debug-shell"))  # round 4: it is back
    back = published(inventory.messages(NOW + 180))
    assert list(back) == [DEBUG_SHELL]
    value = back[DEBUG_SHELL]
    assert value is not None
    spec = decode(WorkloadSpec, value)
    assert spec.workload == DEBUG_SHELL
    assert spec.timestamp == NOW + 180

    state.apply("DELETED", "Pod", item("Pod", "debug-shell"))  # round 5: gone again
    assert published(inventory.messages(NOW + 240)) == {DEBUG_SHELL: None}
    assert tombstones(registry) == 3
    assert registry.get_sample_value("daytwo_inventory_specs_published_total") == len(first) + 1


def test_a_workload_that_cannot_be_built_keeps_its_spec_until_it_is_really_gone() -> None:
    registry = CollectorRegistry()
    inventory = asyncio.run(listed_inventory(registry))
    assert LEDGER in published(inventory.messages(NOW))

    broken = copy.deepcopy(item("StatefulSet", "ledger"))
    broken["spec"]["template"]["spec"]["containers"] = []  # still there, but unbuildable
    inventory.state.apply("MODIFIED", "StatefulSet", broken)
    assert inventory.messages(NOW + 60) == []  # neither a spec nor a tombstone
    assert tombstones(registry) == 0

    delete_ledger(inventory.state)
    assert published(inventory.messages(NOW + 120)) == {LEDGER: None}
    assert tombstones(registry) == 1


def test_no_tombstone_for_a_workload_this_process_never_published() -> None:
    """The documented start-up choice: what an earlier process published is unknown."""
    registry = CollectorRegistry()
    inventory = asyncio.run(listed_inventory(registry))
    delete_ledger(inventory.state)  # gone before this process published anything
    first = published(inventory.messages(NOW))
    assert LEDGER not in first
    assert None not in first.values()
    assert tombstones(registry) == 0


def spec_content(spec: WorkloadSpec) -> bytes:
    return orjson.dumps(
        spec.model_dump(mode="json", exclude={"timestamp"}), option=orjson.OPT_SORT_KEYS
    )


#: Kinds whose objects the property removes and brings back (nodes, HPAs and namespaces
#: only change facts; they stay).
WORKLOAD_KINDS = ("Pod", "ReplicaSet", "Deployment", "StatefulSet", "DaemonSet", "Job",
                  "CronJob", "Rollout")  # fmt: skip
ALL_OBJECTS = [(kind, obj["metadata"]["name"]) for kind in WORKLOAD_KINDS for obj in items(kind)]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    snapshots=st.lists(
        st.sets(st.sampled_from(ALL_OBJECTS)), min_size=1, max_size=5
    )  # each: the objects absent in that round
)
def test_the_compacted_topic_always_equals_the_current_cluster(
    snapshots: list[set[tuple[str, str]]],
) -> None:
    """After every round, applying the records in order (null value = delete the key, as
    compaction does) gives exactly the workloads of the current state, with their current
    specs; a tombstone is only ever sent for a key that holds a spec."""
    registry = CollectorRegistry()
    inventory = asyncio.run(listed_inventory(registry))
    topic: dict[str, bytes] = {}
    sent_tombstones = 0
    for round_number, absent in enumerate(snapshots):
        for kind in WORKLOAD_KINDS:
            kept = [obj for obj in items(kind) if (kind, obj["metadata"]["name"]) not in absent]
            assert inventory.state.replace(kind, kept) == []
        now = NOW + 60 * round_number
        for key, value in published(inventory.messages(now)).items():
            if value is None:
                assert key in topic  # never a tombstone for a key that holds nothing
                del topic[key]
                sent_tombstones += 1
            else:
                topic[key] = value
        errors: list[str] = []
        expected = build_workloads(inventory.state, cluster=CLUSTER, timestamp=now, errors=errors)
        assert errors == []
        assert {key: spec_content(decode(WorkloadSpec, value)) for key, value in topic.items()} == {
            workload.id: spec_content(workload.spec) for workload in expected
        }
    assert tombstones(registry) == sent_tombstones


class ListPublisher:
    """A :class:`~agents.publisher.Publisher` that keeps what it was given."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None]] = []

    async def send(self, topic: str, key: bytes, value: bytes | None) -> None:
        self.sent.append((topic, key, value))

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        return None


def test_the_agent_loop_hands_the_tombstone_to_the_publisher() -> None:
    """run_agent's input guard and batch numbering pass the null value through."""

    async def scenario() -> list[tuple[str, bytes, bytes | None]]:
        registry = CollectorRegistry()
        inventory = await listed_inventory(registry)
        stop = asyncio.Event()
        rounds = 0

        class SecondRoundDeletes:
            def messages(self, now: float) -> list[OutgoingMessage]:
                nonlocal rounds
                rounds += 1
                if rounds == 2:
                    inventory.state.apply("DELETED", "Pod", item("Pod", "debug-shell"))
                    stop.set()
                return inventory.messages(now)

        publisher = ListPublisher()
        clock: Callable[[], float] = iter(NOW + 60 * i for i in range(100)).__next__
        await run_agent(
            [SecondRoundDeletes()],
            publisher,
            interval_seconds=0.001,
            stop_event=stop,
            clock=clock,
            guard=InputGuard(InputLimits(), registry),
        )
        return publisher.sent

    sent = asyncio.run(scenario())
    last = sent[-1]
    assert last == (WORKLOAD_SPECS_TOPIC, DEBUG_SHELL.encode(), None)
    assert [value for _, _, value in sent].count(None) == 1


# --------------------------------------------------------------------------- spool


def old_layout_record(topic: str, key: bytes, value: bytes) -> bytes:
    """A record as spools wrote them before tombstones (layout in agents/spool.py)."""
    topic_bytes = topic.encode()
    body = struct.pack(">HI", len(topic_bytes), len(key)) + topic_bytes + key + value
    length = struct.pack(">I", len(body))
    return RECORD_MAGIC + length + struct.pack(">I", zlib.crc32(body, zlib.crc32(length))) + body


def test_a_tombstone_round_trips_through_the_spool_next_to_older_records(
    tmp_path: Path,
) -> None:
    # A segment left by an agent from before tombstones, with an empty value in it.
    (tmp_path / f"{1:020d}.seg").write_bytes(
        SEGMENT_MAGIC
        + old_layout_record(WORKLOAD_SPECS_TOPIC, b"prod/a/Deployment/x", b'{"v":1}')
        + old_layout_record(WORKLOAD_SPECS_TOPIC, b"prod/a/Deployment/y", b"")
    )
    with Spool(tmp_path, 1 << 16) as spool:
        spool.append(WORKLOAD_SPECS_TOPIC, DEBUG_SHELL.encode(), None)
        spool.append(WORKLOAD_SPECS_TOPIC, b"prod/a/Deployment/z", b"")
    registry = CollectorRegistry()
    with Spool(tmp_path, 1 << 16, registry) as reopened:
        records = reopened.peek_batch(10)
    assert registry.get_sample_value("daytwo_agent_spool_corrupt_records_total") == 0
    assert [(r.key, r.value) for r in records] == [
        (b"prod/a/Deployment/x", b'{"v":1}'),
        (b"prod/a/Deployment/y", b""),
        (DEBUG_SHELL.encode(), None),  # not b"": a tombstone stays a tombstone
        (b"prod/a/Deployment/z", b""),
    ]


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    messages=st.lists(
        st.tuples(st.binary(max_size=40), st.none() | st.binary(max_size=40)), max_size=20
    )
)
def test_the_spool_gives_back_every_value_and_tombstone_in_order(
    tmp_path_factory: pytest.TempPathFactory, messages: list[tuple[bytes, bytes | None]]
) -> None:
    path = tmp_path_factory.mktemp("spool")
    with Spool(path, 1 << 16) as spool:
        for key, value in messages:
            spool.append(WORKLOAD_SPECS_TOPIC, key, value)
    with Spool(path, 1 << 16) as reopened:
        records = reopened.peek_batch(100) if messages else []
    assert [(r.topic, r.key, r.value) for r in records] == [
        (WORKLOAD_SPECS_TOPIC, key, value) for key, value in messages
    ]


# --------------------------------------------------------------------------- broker


@pytest.mark.integration
def test_a_spooled_tombstone_reaches_the_broker_as_a_null_value(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """Spooled during an outage by one process, drained by the next: still a null value."""
    topic = topic_prefix + WORKLOAD_SPECS_TOPIC
    spec = b'{"still": "a spec"}'
    with Spool(tmp_path, SPOOL_CAP_BYTES) as spool:  # what an agent left behind
        spool.append(topic, LEDGER.encode(), spec)
        spool.append(topic, DEBUG_SHELL.encode(), None)
    # The embedded broker (Tansu) cannot init idempotent aiokafka producers; a real Kafka can.
    idempotent = bool(os.environ.get(KAFKA_BOOTSTRAP_ENV))

    async def main() -> list[Any]:
        registry = CollectorRegistry()
        kafka = KafkaPublisher(kafka_bootstrap, idempotent=idempotent, registry=registry)
        spooling = SpoolingPublisher(
            kafka,
            Spool(tmp_path, SPOOL_CAP_BYTES, registry),  # holds one largest payload
            guard=InputGuard(InputLimits(), registry),  # a tombstone has no payload to weigh
            registry=registry,
        )
        async with spooling as publisher:
            await publisher.flush()  # drains the spool
            assert publisher.spool.depth_records == 0
            await publisher.send(topic, LEDGER.encode(), None)  # direct, not spooled
            await publisher.flush()
        return await read_back(kafka_bootstrap, topic, 3)

    received = asyncio.run(main())
    by_key: dict[bytes, list[bytes | None]] = {}
    for record in received:  # order holds per key (one partition each), not across keys
        by_key.setdefault(record.key, []).append(record.value)
    assert by_key == {LEDGER.encode(): [spec, None], DEBUG_SHELL.encode(): [None]}
