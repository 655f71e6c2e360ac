"""Acceptance (issue 7, item 2): workers share the partitions; a worker joining, leaving
(SIGTERM) and crashing (SIGKILL) mid-replay loses and double-counts nothing.

One consumer group, three worker processes, 6 partitions, 8 workloads whose keys hash to
all 6 partitions (checked below), 160 batches per workload in five stages::

    batches   0 ...... 49 | 50 ..... 99 | 100 .... 124 | 125 .... 139 | 140 ... 159
    workers   A, B        | A, B, +C    | A, C         | A, C → A     | A
                            (C joins:     (B left with   (C killed with SIGKILL right
                            rebalance)    SIGTERM)       after the stage is produced)

The last batch of every stage carries a new memory maximum for every container, so
each stage ends with a proposal: its set shows how many samples the state holds then.
The test waits for each stage's sets before the next change, so every membership change
happens with state in play.

The final recommendations must equal those of a single worker over the same input (the
worker's own :class:`~pipeline.processor.Processor`, run in this process with the same
profile settings, no Kafka). ``evidence.samples`` = 160 per container proves each
sample was counted exactly once (lost: fewer, counted twice: more), and the changelog's
last record of every container says the same.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson
import pytest
from aiokafka.partitioner import (  # type: ignore[import-untyped, unused-ignore]
    DefaultPartitioner,
)
from prometheus_client import CollectorRegistry

from pipeline.app import changelog_topic
from pipeline.launch import Child, start_child, wait_for_records
from pipeline.metrics import WorkerMetrics
from pipeline.processor import Processor
from pipeline.profiles_file import ProfileResolver, load_catalog
from pipeline.settings import Settings
from pipeline.topics import topic_names
from schemas.models import RecommendationSet
from tests.worker_helpers import (
    FAST_PROFILE_OVERRIDES,
    T0,
    Input,
    MemoryStore,
    all_at,
    died,
    final_by_container,
    free_port,
    metric_sum,
    produce,
    read_all,
    recommendation_sets,
    records_between,
    running,
    scrape_metrics,
    staged_input,
    worker_env,
)

pytestmark = pytest.mark.integration

#: Six partitions: Faust's assignor is sticky and fills each worker up to
#: ceil(partitions / workers), so with four partitions a third worker would get none.
PARTITIONS = 6
WORKLOADS = {
    "prod/shop/Deployment/checkout": ("app", "envoy"),
    "prod/shop/Deployment/search": ("app",),
    "prod/shop/Deployment/payments": ("app",),
    "prod/shop/Deployment/catalog": ("app", "exporter"),
    "prod/shop/Deployment/cart": ("app",),
    "prod/shop/Deployment/frontend": ("web",),
    "prod/shop/Deployment/basket": ("app",),
    "prod/shop/Deployment/orders": ("app",),
}
STAGE_ENDS = (50, 100, 125, 140, 160)
BATCHES = STAGE_ENDS[-1]
#: Below the profile's 60: the first stage must already propose.
MIN_SAMPLES = 20


def partition_of(workload: str) -> int:
    """The partition a producer's default partitioner (murmur2) gives this key."""
    partitions = list(range(PARTITIONS))
    return int(DefaultPartitioner()(workload.encode(), partitions, partitions))


def stage(data: list[Input], number: int) -> Sequence[tuple[bytes | None, bytes]]:
    start = 0 if number == 0 else STAGE_ENDS[number - 1]
    return records_between(data, start, STAGE_ENDS[number])


def single_worker_reference(data: list[Input]) -> list[RecommendationSet]:
    """What one worker publishes for ``data``: the worker's processor, profiles resolved
    as ``pipeline/app.py`` resolves them from the same settings, checkpointed per stage."""
    settings = Settings(
        profile_overrides=orjson.loads(FAST_PROFILE_OVERRIDES), min_samples=MIN_SAMPLES
    )
    profiles = ProfileResolver(
        load_catalog(settings.profiles_file, default_profile=settings.profile),
        {**settings.profile_overrides, "min_samples": MIN_SAMPLES},
    )
    processor = Processor(
        profile_for=profiles.for_spec,
        profile=profiles.default(),
        store=MemoryStore(),
        metrics=WorkerMetrics.create(CollectorRegistry()),
        clock=lambda: T0,
        source_topic="in",
    )
    sets: list[RecommendationSet] = []
    offset = 0
    for number in range(len(STAGE_ENDS)):
        for key, value in stage(data, number):
            assert key is not None
            dead = processor.handle(key, value, partition=partition_of(key.decode()), offset=offset)
            assert dead is None
            offset += 1
        sets.extend(processor.checkpoint())
    return sets


def test_workloads_cover_every_partition() -> None:
    """Otherwise a worker could sit idle and the test would prove less."""
    assert {partition_of(w) for w in WORKLOADS} == set(range(PARTITIONS))


def test_join_leave_and_crash_keep_every_sample_exactly_once(
    kafka_bootstrap: str, make_topic_prefix: Callable[..., str], tmp_path: Path
) -> None:
    data = staged_input(WORKLOADS, stage_ends=STAGE_ENDS, seed=11, peak_step_mib=150)
    prefix = make_topic_prefix(PARTITIONS)
    names = topic_names(prefix)
    app_id = f"scale-{prefix.strip('.')}"
    logs = tmp_path / "logs"
    ports = {name: free_port() for name in ("a", "b", "c")}
    reference = final_by_container(single_worker_reference(data))
    assert len(reference) == sum(len(c) for c in WORKLOADS.values())

    def worker(name: str) -> Child:
        env = worker_env(
            kafka_bootstrap,
            prefix,
            app_id,
            tmp_path / f"worker-{name}",
            DAYTWO_METRICS_PORT=str(ports[name]),
            DAYTWO_FLUSH_INTERVAL_SECONDS="1",
            DAYTWO_MIN_SAMPLES=str(MIN_SAMPLES),
            DAYTWO_PARTITIONS=str(PARTITIONS),
        )
        return start_child(f"worker-{name}", ["worker"], env, logs)

    def wait_stage(number: int, *alive: Child) -> None:
        count = STAGE_ENDS[number]
        records = wait_for_records(
            kafka_bootstrap,
            names.recommendations,
            all_at(WORKLOADS, count),
            timeout=60,
            alive=lambda: died(*alive),
        )
        assert all_at(WORKLOADS, count)(records), (
            f"stage {number}: not every container reached {count} samples\n"
            + "\n".join(f"--- {c.name}\n{c.log_tail(20)}" for c in alive)
        )

    def wait_until_ready(child: Child) -> None:
        deadline = time.monotonic() + 60
        while "[^Worker]: Ready" not in child.log_path.read_text(errors="replace"):
            assert died(child) is None, died(child)
            assert time.monotonic() < deadline, child.log_tail()
            time.sleep(0.2)

    def processed(name: str) -> float:
        return metric_sum(scrape_metrics(ports[name]), "daytwo_worker_samples_processed_total")

    with running(worker("a")) as a, running(worker("b")) as b:
        produce(kafka_bootstrap, names.container_samples, stage(data, 0))
        wait_stage(0, a, b)
        assert processed("a") > 0, "worker A got no partition"
        assert processed("b") > 0, "worker B got no partition"
        with running(worker("c")) as c:
            wait_until_ready(c)  # joined: the group rebalanced over three members
            produce(kafka_bootstrap, names.container_samples, stage(data, 1))
            wait_stage(1, a, b, c)
            assert processed("c") > 0, "worker C joined but took over no partition"
            assert b.stop(timeout=30) == 0, b.log_tail()  # SIGTERM: a clean leave
            produce(kafka_bootstrap, names.container_samples, stage(data, 2))
            wait_stage(2, a, c)
            produce(kafka_bootstrap, names.container_samples, stage(data, 3))
            c.kill()  # SIGKILL mid-replay: whatever it has not checkpointed is lost
        produce(kafka_bootstrap, names.container_samples, stage(data, 4))
        wait_stage(4, a)
        records = read_all(
            kafka_bootstrap, names.recommendations, at_least=1, timeout=30, quiet_seconds=3
        )
        changelog = read_all(
            kafka_bootstrap,
            changelog_topic(Settings(topic_prefix=prefix, worker_app_id=app_id)).name,
            at_least=1,
            timeout=30,
        )

    final = final_by_container(recommendation_sets(records))
    assert final == reference
    evidence = {key: orjson.loads(orjson.dumps(value["evidence"])) for key, value in final.items()}
    assert {key: e["samples"] for key, e in evidence.items()} == dict.fromkeys(reference, BATCHES)
    latest = {key: value for key, value in changelog if key is not None and value is not None}
    assert {key.decode(): orjson.loads(value)["samples"] for key, value in latest.items()} == (
        dict.fromkeys(reference, BATCHES)
    )
