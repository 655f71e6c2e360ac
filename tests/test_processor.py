"""Unit tests of the worker's Processor: real core, in-memory store, private registry.

No Faust and no broker: :class:`MemoryStore` is a dict behind the ``StateStore``
protocol that also records every ``save`` call, so the tests can count checkpoint
writes exactly (the design allows one write per dirty container per flush interval).

Timeline used by most tests (one batch every 10 s per workload)::

    t = T0      T0+10   T0+20   ...   checkpoint()   ...   checkpoint()
        batch   batch   batch          ^ writes dirty keys once, emits changed sets
"""

from __future__ import annotations

import base64
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from pipeline.core import engine as engine_module
from pipeline.core.cost import PriceBook, Prices
from pipeline.core.profiles import Profile, get_profile
from pipeline.core.sizing import recommend
from pipeline.metrics import WorkerMetrics
from pipeline.processor import Processor
from pipeline.profiles_file import ProfileResolver, load_catalog
from schemas.hashing import recommendation_set_hash
from schemas.models import RecommendationSet
from tests.invalid_messages import CATEGORIES, invalid_container_batches

SOURCE_TOPIC = "t.daytwo.container-samples.v1"
WORKLOAD_A = "prod/shop/Deployment/checkout"
WORKLOAD_B = "prod/shop/Deployment/cart"
PARTITION_A = 1
PARTITION_B = 2
T0 = 1_750_000_000.0
NOW = T0 + 100_000.0
MIB = 1024 * 1024
PROFILE = get_profile("balanced").with_overrides(
    min_samples=3, decrease_min_history_seconds=0.0, evaluation_interval_seconds=10.0
)


@dataclass
class MemoryStore:
    """The ``StateStore`` protocol over a dict, recording each save (key, partition)."""

    data: dict[str, bytes] = field(default_factory=dict)
    saves: list[tuple[str, int]] = field(default_factory=list)

    def load(self, key: str) -> bytes | None:
        return self.data.get(key)

    def save(self, key: str, value: bytes, partition: int) -> None:
        self.data[key] = value
        self.saves.append((key, partition))


@dataclass
class Harness:
    """A processor with its store and private registry."""

    processor: Processor
    store: MemoryStore
    registry: CollectorRegistry

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


def make_harness(
    store: MemoryStore | None = None,
    *,
    profile: Profile = PROFILE,
    clock: Callable[[], float] = lambda: NOW,
) -> Harness:
    registry = CollectorRegistry()
    store = store if store is not None else MemoryStore()
    processor = Processor(
        profile=profile,
        store=store,
        metrics=WorkerMetrics.create(registry),
        clock=clock,
        source_topic=SOURCE_TOPIC,
    )
    return Harness(processor, store, registry)


def batch(workload: str, ts: float, containers: dict[str, tuple[float, int]]) -> bytes:
    """A valid container-sample-batch with one sample per container (cpu cores, bytes)."""
    return orjson.dumps(
        {
            "schema_version": 1,
            "kind": "container-sample-batch",
            "source": "cgroup",
            "agent": "node-1",
            "workload": workload,
            "timestamp": ts,
            "samples": [
                {
                    "container": name,
                    "timestamp": ts,
                    "interval_seconds": 10.0,
                    "cpu_usage_cores": cpu,
                    "memory_working_set_bytes": memory,
                }
                for name, (cpu, memory) in containers.items()
            ],
        }
    )


@dataclass(frozen=True)
class Record:
    key: bytes
    value: bytes
    partition: int


def feed(harness: Harness, records: Sequence[Record], first_offset: int = 0) -> None:
    for offset, record in enumerate(records, start=first_offset):
        dead = harness.processor.handle(
            record.key, record.value, partition=record.partition, offset=offset
        )
        assert dead is None, dead


def steady_records(
    workload: str, partition: int, containers: Sequence[str], count: int, start: float = T0
) -> list[Record]:
    """``count`` batches 10 s apart with constant usage (so the recommendation is stable)."""
    return [
        Record(
            workload.encode(),
            batch(workload, start + 10 * i, dict.fromkeys(containers, (0.25, 200 * MIB))),
            partition,
        )
        for i in range(count)
    ]


def by_workload(sets: Sequence[RecommendationSet]) -> dict[str, RecommendationSet]:
    result = {s.workload: s for s in sets}
    assert len(result) == len(sets), "one set per workload per checkpoint"
    return result


# -- invalid input ---------------------------------------------------------------------


def test_every_invalid_record_becomes_a_dead_letter_counted_by_stage() -> None:
    harness = make_harness()
    messages = invalid_container_batches(300, seed=11)
    stages: Counter[str] = Counter()
    for offset, (raw, category) in enumerate(messages):
        dead = harness.processor.handle(b"some-key", raw, partition=3, offset=offset)
        assert dead is not None, f"{category} message was accepted: {raw[:200]!r}"
        assert dead.topic == SOURCE_TOPIC
        assert (dead.partition, dead.offset) == (3, offset)
        assert dead.reason.strip()
        assert not dead.truncated
        assert base64.b64decode(dead.value_b64) == raw
        assert dead.key_b64 is not None
        assert base64.b64decode(dead.key_b64) == b"some-key"
        stages[dead.stage] += 1
    assert len(stages) >= 2, f"expected several rejecting stages, got {stages}"
    for stage, count in stages.items():
        assert harness.metric("daytwo_deadletters_total", stage=stage) == count
    assert {category for _, category in messages} == set(CATEGORIES)
    # Nothing invalid reached the state: no checkpoint work, no set.
    assert not harness.processor.has_dirty
    assert harness.processor.checkpoint() == []
    assert harness.store.saves == []
    assert harness.metric("daytwo_worker_batches_processed_total") == 0


def test_a_tombstone_is_dead_lettered_as_an_empty_value() -> None:
    harness = make_harness()
    dead = harness.processor.handle(WORKLOAD_A.encode(), None, partition=0, offset=7)
    assert dead is not None
    assert dead.value_size_bytes == 0
    assert dead.value_b64 == ""
    assert harness.metric("daytwo_deadletters_total", stage=dead.stage) == 1


def test_a_batch_under_another_workloads_key_is_dead_lettered_at_route() -> None:
    harness = make_harness()
    raw = batch(WORKLOAD_A, T0, {"app": (0.1, 100 * MIB)})
    dead = harness.processor.handle(WORKLOAD_B.encode(), raw, partition=0, offset=0)
    assert dead is not None
    assert dead.stage == "route"
    assert WORKLOAD_A in dead.reason
    assert base64.b64decode(dead.value_b64) == raw
    assert harness.metric("daytwo_deadletters_total", stage="route") == 1
    assert not harness.processor.has_dirty
    # The same bytes under the right key (or no key) are fine.
    assert harness.processor.handle(WORKLOAD_A.encode(), raw, partition=0, offset=1) is None
    assert (
        harness.processor.handle(
            None, batch(WORKLOAD_A, T0 + 10, {"app": (0.1, 1)}), partition=0, offset=2
        )
        is None
    )
    assert harness.metric("daytwo_worker_samples_processed_total") == 2


# -- replay ---------------------------------------------------------------------------


def test_a_replayed_batch_changes_nothing_and_is_counted() -> None:
    records = steady_records(WORKLOAD_A, PARTITION_A, ["app", "sidecar"], 4)
    once = make_harness()
    feed(once, records)
    twice = make_harness()
    feed(twice, records)
    feed(twice, records[1:])  # redelivered after a crash, say
    assert twice.metric("daytwo_worker_samples_replayed_total") == 3 * 2
    assert twice.metric("daytwo_worker_samples_processed_total") == 4 * 2
    assert once.metric("daytwo_worker_samples_replayed_total") == 0
    sets_once = once.processor.checkpoint()
    sets_twice = twice.processor.checkpoint()
    assert sets_twice == sets_once
    assert twice.store.data == once.store.data
    # The proposal was made when the third sample (min_samples) arrived; the fourth moved
    # nothing enough to be proposed again.
    assert sets_twice[0].recommendations[0].evidence.samples == PROFILE.min_samples


def test_replay_alone_dirties_nothing() -> None:
    harness = make_harness()
    records = steady_records(WORKLOAD_A, PARTITION_A, ["app"], 4)
    feed(harness, records)
    harness.processor.checkpoint()
    saves = len(harness.store.saves)
    feed(harness, records)
    assert not harness.processor.has_dirty
    assert harness.processor.checkpoint() == []
    assert len(harness.store.saves) == saves


# -- checkpoints ------------------------------------------------------------------------


def test_checkpoint_writes_each_dirty_key_once_and_emits_only_changed_sets() -> None:
    harness = make_harness()
    records_a = steady_records(WORKLOAD_A, PARTITION_A, ["app", "sidecar"], 5)
    records_b = steady_records(WORKLOAD_B, PARTITION_B, ["main"], 5)
    feed(harness, [r for pair in zip(records_a, records_b, strict=True) for r in pair])

    sets = by_workload(harness.processor.checkpoint())
    expected_saves = {
        (f"{WORKLOAD_A}:app", PARTITION_A),
        (f"{WORKLOAD_A}:sidecar", PARTITION_A),
        (f"{WORKLOAD_B}:main", PARTITION_B),
    }
    assert sorted(harness.store.saves) == sorted(expected_saves)  # each once
    assert set(sets) == {WORKLOAD_A, WORKLOAD_B}
    set_a = sets[WORKLOAD_A]
    assert [r.container for r in set_a.recommendations] == ["app", "sidecar"]
    # Proposed at min_samples; samples 4 and 5 change nothing worth a proposal.
    assert all(r.evidence.samples == PROFILE.min_samples for r in set_a.recommendations)
    assert set_a.hash == recommendation_set_hash(r.hash for r in set_a.recommendations)
    assert harness.metric("daytwo_worker_recommendations_emitted_total") == 2
    assert harness.metric("daytwo_worker_checkpoints_total") == 3

    # More of the same usage for A: its state is saved again, but no set is emitted.
    harness.store.saves.clear()
    feed(harness, steady_records(WORKLOAD_A, PARTITION_A, ["app", "sidecar"], 3, T0 + 50))
    assert harness.processor.checkpoint() == []
    assert sorted(harness.store.saves) == sorted(
        [(f"{WORKLOAD_A}:app", PARTITION_A), (f"{WORKLOAD_A}:sidecar", PARTITION_A)]
    )

    # A's app container gets much busier: only A's set is emitted, with a new hash,
    # and it carries both containers (the set is the workload's whole proposal).
    harness.store.saves.clear()
    busy = [
        Record(
            WORKLOAD_A.encode(),
            batch(WORKLOAD_A, T0 + 80 + 10 * i, {"app": (2.0, 200 * MIB)}),
            PARTITION_A,
        )
        for i in range(20)
    ]
    feed(harness, busy)
    changed = harness.processor.checkpoint()
    assert [s.workload for s in changed] == [WORKLOAD_A]
    assert changed[0].hash != set_a.hash
    app, sidecar = changed[0].recommendations
    assert app.recommended.cpu_request_cores is not None
    assert set_a.recommendations[0].recommended.cpu_request_cores is not None
    assert (
        app.recommended.cpu_request_cores > set_a.recommendations[0].recommended.cpu_request_cores
    )
    assert sidecar.hash == set_a.recommendations[1].hash
    # Only the container that was fed is written (it recorded its proposal); the
    # sidecar rides along in the set unchanged, and B had nothing new.
    assert sorted(harness.store.saves) == [(f"{WORKLOAD_A}:app", PARTITION_A)]

    # Nothing new: a checkpoint writes nothing and emits nothing.
    harness.store.saves.clear()
    assert harness.processor.checkpoint() == []
    assert harness.store.saves == []
    assert harness.metric("daytwo_worker_recommendations_emitted_total") == 3


def test_state_below_min_samples_is_saved_but_no_set_is_emitted() -> None:
    harness = make_harness()
    feed(harness, steady_records(WORKLOAD_A, PARTITION_A, ["app"], PROFILE.min_samples - 1))
    assert harness.processor.checkpoint() == []
    assert harness.store.saves == [(f"{WORKLOAD_A}:app", PARTITION_A)]
    feed(
        harness,
        steady_records(WORKLOAD_A, PARTITION_A, ["app"], 1, T0 + 10 * PROFILE.min_samples),
    )
    (emitted,) = harness.processor.checkpoint()
    assert emitted.recommendations[0].evidence.samples == PROFILE.min_samples


# -- restore ------------------------------------------------------------------------------


def varied_records(seed: int, count: int) -> list[Record]:
    """Interleaved batches of two workloads with seeded, varying usage."""
    rng = random.Random(seed)
    records = []
    for i in range(count):
        workload, partition, containers = (
            (WORKLOAD_A, PARTITION_A, ("app", "sidecar"))
            if i % 2 == 0
            else (WORKLOAD_B, PARTITION_B, ("main",))
        )
        usage = {
            c: (round(rng.uniform(0.01, 3.0), 3), rng.randint(50, 900) * MIB) for c in containers
        }
        records.append(Record(workload.encode(), batch(workload, T0 + 10 * i, usage), partition))
    return records


RESTORE_RECORDS = varied_records(seed=5, count=40)


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_a_new_processor_over_the_same_store_continues_identically(data: st.DataObject) -> None:
    """Crash model: checkpoint after ``checkpointed`` records, handle up to ``crashed``
    without a checkpoint, then die; a new processor over the store gets redelivered
    everything from ``resume`` (≤ checkpointed: an older committed offset) onwards."""
    n = len(RESTORE_RECORDS)
    checkpointed = data.draw(st.integers(0, n), label="checkpointed")
    crashed = data.draw(st.integers(checkpointed, n), label="crashed")
    resume = data.draw(st.integers(0, checkpointed), label="resume")

    reference = make_harness()
    feed(reference, RESTORE_RECORDS)
    reference_sets = by_workload(reference.processor.checkpoint())

    store = MemoryStore()
    first = make_harness(store)
    feed(first, RESTORE_RECORDS[:checkpointed])
    emitted = by_workload(first.processor.checkpoint())
    feed(first, RESTORE_RECORDS[checkpointed:crashed], first_offset=checkpointed)
    # ... the first worker dies here: its un-checkpointed state is lost.

    second = make_harness(store)
    feed(second, RESTORE_RECORDS[resume:], first_offset=resume)
    emitted.update(by_workload(second.processor.checkpoint()))

    assert store.data == reference.store.data
    assert {w: s.hash for w, s in emitted.items()} == {w: s.hash for w, s in reference_sets.items()}
    replayed_samples = sum(
        len(orjson.loads(r.value)["samples"]) for r in RESTORE_RECORDS[resume:checkpointed]
    )
    assert second.metric("daytwo_worker_samples_replayed_total") == replayed_samples


# -- rebalance ------------------------------------------------------------------------------


def test_forget_partitions_drops_only_those_partitions() -> None:
    harness = make_harness(profile=PROFILE.with_overrides(min_samples=1))
    feed(harness, steady_records(WORKLOAD_A, PARTITION_A, ["app", "sidecar"], 3))
    feed(harness, steady_records(WORKLOAD_B, PARTITION_B, ["main"], 3))
    harness.processor.checkpoint()
    assert harness.metric("daytwo_worker_tracked_containers") == 3

    harness.processor.forget_partitions({PARTITION_A})
    assert harness.metric("daytwo_worker_tracked_containers") == 1

    # Prove what is still cached: remove the checkpoints of A:sidecar and B:main. B is
    # cached, so it continues at 4 samples; A:sidecar was dropped, so it starts afresh;
    # A:app was dropped too and is reloaded from its checkpoint. (A higher memory peak
    # makes every recommendation change, so every set is emitted.)
    del harness.store.data[f"{WORKLOAD_A}:sidecar"]
    del harness.store.data[f"{WORKLOAD_B}:main"]
    higher = (0.25, 900 * MIB)
    feed(
        harness,
        [
            Record(
                WORKLOAD_A.encode(),
                batch(WORKLOAD_A, T0 + 30, {"app": higher, "sidecar": higher}),
                PARTITION_A,
            ),
            Record(WORKLOAD_B.encode(), batch(WORKLOAD_B, T0 + 30, {"main": higher}), PARTITION_B),
        ],
    )
    sets = by_workload(harness.processor.checkpoint())
    samples = {
        (s.workload, r.container): r.evidence.samples
        for s in sets.values()
        for r in s.recommendations
    }
    assert samples == {
        (WORKLOAD_A, "app"): 4,
        (WORKLOAD_A, "sidecar"): 1,
        (WORKLOAD_B, "main"): 4,
    }


def test_forgetting_an_unknown_partition_changes_nothing() -> None:
    harness = make_harness()
    feed(harness, steady_records(WORKLOAD_A, PARTITION_A, ["app"], 3))
    harness.processor.checkpoint()
    harness.processor.forget_partitions({7})
    assert harness.metric("daytwo_worker_tracked_containers") == 1


@pytest.mark.parametrize("partition", [0, 5])
def test_the_save_goes_to_the_partition_the_input_came_from(partition: int) -> None:
    harness = make_harness()
    feed(harness, steady_records(WORKLOAD_A, partition, ["app"], 1))
    harness.processor.checkpoint()
    assert harness.store.saves == [(f"{WORKLOAD_A}:app", partition)]


def test_a_container_whose_sizing_fails_is_counted_and_the_others_still_checkpoint(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Fault injection: sizing raises for the sidecar only (stands in for a core bug).

    def failing_for_sidecar(*args: Any, **kwargs: Any) -> dict[str, object] | None:
        if kwargs["container"] == "sidecar":
            raise RuntimeError("sizing bug")
        return recommend(*args, **kwargs)

    monkeypatch.setattr(engine_module, "recommend", failing_for_sidecar, raising=True)
    harness = make_harness()
    feed(harness, steady_records(WORKLOAD_A, PARTITION_A, ["app", "sidecar"], 5))

    sets = harness.processor.checkpoint()

    assert [r.container for s in sets for r in s.recommendations] == ["app"]
    assert sorted(k for k, _ in harness.store.saves) == [
        f"{WORKLOAD_A}:app",
        f"{WORKLOAD_A}:sidecar",
    ]
    # Counted per failed evaluation: each of the five samples opened an evaluation tick.
    assert harness.metric("daytwo_worker_sizing_errors_total") == 5
    assert "sizing bug" in caplog.text


# -- workload specs ---------------------------------------------------------------------


def spec_record(workload: str, ts: float, profile: str, replicas: int, cpu_request: float) -> bytes:
    return orjson.dumps(
        {
            "schema_version": 1,
            "kind": "workload-spec",
            "source": "inventory",
            "workload": workload,
            "timestamp": ts,
            "profile": profile,
            "replicas": replicas,
            "containers": [
                {
                    "name": "app",
                    "cpu_request_cores": cpu_request,
                    "memory_request_bytes": 512 * MIB,
                    "memory_limit_bytes": 512 * MIB,
                }
            ],
            "annotations": {},
        }
    )


def spec_harness(store: MemoryStore | None = None) -> Harness:
    harness = make_harness(store)
    resolver = ProfileResolver(
        load_catalog(None),
        {"min_samples": 3, "decrease_min_history_seconds": 0.0, "evaluation_interval_seconds": 10},
    )
    harness.processor.profile_for = resolver.for_spec
    return harness


def test_a_workload_spec_sets_profile_resources_in_force_and_replicas() -> None:
    harness = spec_harness()
    spec = spec_record(WORKLOAD_A, T0 - 1, "performance-first", 4, 2.0)
    assert (
        harness.processor.handle_spec(WORKLOAD_A.encode(), spec, partition=PARTITION_A, offset=0)
        is None
    )
    feed(harness, steady_records(WORKLOAD_A, PARTITION_A, ["app"], 5))
    sets = harness.processor.checkpoint()
    (rec,) = sets[0].recommendations
    assert rec.profile == "performance-first"
    # In force is what the spec declares (not the cgroup's observed limits).
    assert rec.current.cpu_request_cores == 2.0
    assert rec.current.memory_limit_bytes == 512 * MIB
    assert rec.evidence.cost is not None
    assert rec.evidence.cost.replicas == 4
    assert rec.monthly_cost_delta_usd == pytest.approx(
        4 * rec.evidence.cost.monthly_per_replica_usd, abs=0.05
    )
    # The spec lives in the window: a new processor over the same store still knows it.
    again = spec_harness(harness.store)
    feed(again, steady_records(WORKLOAD_A, PARTITION_A, ["app"], 3, T0 + 100))
    (current,) = again.processor.current_sets()[0].recommendations
    assert (current.profile, current.current.cpu_request_cores) == ("performance-first", 2.0)


def test_an_older_spec_is_ignored_and_a_bad_one_dead_lettered() -> None:
    harness = spec_harness()
    key = WORKLOAD_A.encode()
    newer = spec_record(WORKLOAD_A, T0 + 10, "cost-optimized", 1, 1.0)
    older = spec_record(WORKLOAD_A, T0, "performance-first", 1, 3.0)
    assert harness.processor.handle_spec(key, newer, partition=PARTITION_A, offset=0) is None
    assert harness.processor.handle_spec(key, older, partition=PARTITION_A, offset=1) is None
    feed(harness, steady_records(WORKLOAD_A, PARTITION_A, ["app"], 5))
    (rec,) = harness.processor.current_sets()[0].recommendations
    assert (rec.profile, rec.current.cpu_request_cores) == ("cost-optimized", 1.0)
    dead = harness.processor.handle_spec(key, b'{"kind": "workload-spec"}', partition=0, offset=2)
    assert dead is not None
    assert dead.stage == "validate"
    assert harness.processor.handle_spec(key, None, partition=0, offset=3) is None  # tombstone


def test_the_profiles_files_default_prices_apply_without_a_spec() -> None:
    harness = make_harness()
    harness.processor.prices = PriceBook(Prices(cpu_core_hour_usd=0.05, memory_gib_hour_usd=0.01))
    feed(harness, steady_records(WORKLOAD_A, PARTITION_A, ["app"], 5))
    (rec,) = harness.processor.current_sets()[0].recommendations
    assert rec.evidence.cost is not None
    assert (rec.evidence.cost.cpu_core_hour_usd, rec.evidence.cost.node_pool) == (0.05, None)
