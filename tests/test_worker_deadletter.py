"""Acceptance: 10,000 invalid messages all reach the dead-letter topic; valid ones still count.

A real worker process (``python -m pipeline.cli worker``) on the session's Kafka (the
embedded broker unless ``DAYTWO_KAFKA_BOOTSTRAP`` is set), fed by a real aiokafka
producer. Shared helpers are in tests/worker_helpers.py.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from pipeline.launch import start_child, wait_for_records
from pipeline.topics import DEADLETTER_MAX_MESSAGE_BYTES, topic_names
from schemas.models import DeadLetter
from schemas.validate import decode
from tests.invalid_messages import (
    CATEGORIES,
    OVERSIZE_LIMIT_BYTES,
    invalid_container_batches,
)
from tests.worker_helpers import (
    PARTITIONS,
    died,
    free_port,
    metric_sum,
    produce,
    recommendation_sets,
    records_from_offset,
    running,
    samples_of,
    scrape_metrics,
    worker_env,
)

pytestmark = pytest.mark.integration

WORKLOAD = "prod/shop/Deployment/checkout"
CONTAINERS = ("app", "sidecar")
INVALID_COUNT = 10_000
#: How many of them are ~1 MiB payloads (see :func:`invalid_mix`).
OVERSIZED_COUNT = 100
#: One valid batch after every this many invalid messages.
VALID_EVERY = 20
T0 = 1_750_000_000.0
MIB = 1024 * 1024


def invalid_mix(total: int, oversized: int, seed: int) -> list[tuple[bytes, str]]:
    """``total`` messages of :func:`invalid_container_batches`, in its order, keeping only
    the first ``oversized`` of the ~1 MiB "oversized" ones.

    Why not all of them: the generator cycles through its ten categories, so 10,000
    messages hold 1,000 oversized payloads: ~1 GiB in and ~1.4 GiB of dead letters kept
    in the in-memory broker for the rest of the session, and 60-70 s for this test.
    100 of them exercise the same path (size check, 1.4 MB dead letters through the
    worker's producer) in a fraction of that.
    """
    pool = invalid_container_batches(total + total // 10, seed)
    mix: list[tuple[bytes, str]] = []
    kept_oversized = 0
    for raw, category in pool:
        if category == "oversized":
            if kept_oversized == oversized:
                continue
            kept_oversized += 1
        mix.append((raw, category))
        if len(mix) == total:
            break
    assert len(mix) == total
    assert kept_oversized == oversized
    return mix


def valid_batch(index: int, *, last: bool) -> bytes:
    """Valid batch ``index`` (10 s apart); the last one raises the memory peak, so the
    final recommendation differs from the previous one and a set with every sample in
    its evidence is emitted."""
    memory = 900 * MIB if last else (200 + index % 50) * MIB
    ts = T0 + 10 * index
    return orjson.dumps(
        {
            "schema_version": 1,
            "kind": "container-sample-batch",
            "source": "cgroup",
            "agent": "node-1",
            "workload": WORKLOAD,
            "timestamp": ts,
            "samples": [
                {
                    "container": name,
                    "timestamp": ts,
                    "interval_seconds": 10.0,
                    "cpu_usage_cores": 0.1 + (index % 7) / 10,
                    "memory_working_set_bytes": memory,
                }
                for name in CONTAINERS
            ],
        }
    )


def test_ten_thousand_invalid_messages_are_dead_lettered_and_valid_ones_processed(
    kafka_bootstrap: str, make_topic_prefix: Callable[..., str], tmp_path: Path
) -> None:
    """10,000 invalid messages (see :func:`invalid_mix`: every category, 100 of them
    ~1 MiB oversized payloads), one valid batch after every 20, half of the invalid
    ones under the valid workload's key so they share its partition.
    """
    prefix = make_topic_prefix(partitions_override=PARTITIONS)
    names = topic_names(prefix)
    invalid = invalid_mix(INVALID_COUNT, OVERSIZED_COUNT, seed=20_240_601)
    valid_count = INVALID_COUNT // VALID_EVERY
    records: list[tuple[bytes | None, bytes]] = []
    invalid_keys: set[bytes] = set()
    for index, (raw, _) in enumerate(invalid):
        key = WORKLOAD.encode() if index % 2 == 0 else f"bad-{index}".encode()
        invalid_keys.add(key)
        records.append((key, raw))
        if (index + 1) % VALID_EVERY == 0:
            number = (index + 1) // VALID_EVERY - 1
            records.append((WORKLOAD.encode(), valid_batch(number, last=number == valid_count - 1)))
    assert len(records) == INVALID_COUNT + valid_count
    metrics_port = free_port()
    env = worker_env(
        kafka_bootstrap,
        prefix,
        f"dl-{prefix.rstrip('.')}",
        tmp_path / "data",
        DAYTWO_MIN_SAMPLES="10",
        DAYTWO_FLUSH_INTERVAL_SECONDS="1",
        DAYTWO_METRICS_PORT=str(metrics_port),
    )
    started = time.monotonic()
    with running(start_child("worker", ["worker"], env, tmp_path / "logs")) as worker:
        produce(kafka_bootstrap, names.container_samples, records)
        produced = time.monotonic()
        letters = wait_for_records(
            kafka_bootstrap,
            names.deadletter,
            until=lambda got: len(got) >= INVALID_COUNT,
            timeout=150,
            alive=lambda: died(worker),
        )
        dead_lettered = time.monotonic()
        assert len(letters) >= INVALID_COUNT, (
            f"only {len(letters)} dead letters; worker log:\n{worker.log_tail(40)}"
        )
        sets = recommendation_sets(
            wait_for_records(
                kafka_bootstrap,
                names.recommendations,
                until=lambda got: any(
                    samples_of(s) == dict.fromkeys(CONTAINERS, valid_count)
                    for s in recommendation_sets(got)
                ),
                timeout=30,
                alive=lambda: died(worker),
            )
        )
        metrics_text = scrape_metrics(metrics_port)
    stopped = time.monotonic()
    # After the worker stopped: nothing follows the 10,000 on the (one-partition) topic.
    surplus = records_from_offset(
        kafka_bootstrap, names.deadletter, partition=0, offset=INVALID_COUNT
    )
    print(  # timings for the report (pytest -s)
        f"\nproduce {produced - started:.1f} s, all dead-lettered after "
        f"{dead_lettered - started:.1f} s, stopped after {stopped - started:.1f} s"
    )

    assert surplus == []
    assert len(letters) == INVALID_COUNT
    sent_sha = Counter(hashlib.sha256(raw).hexdigest() for raw, _ in invalid)
    oversized_sha = {
        hashlib.sha256(raw).hexdigest() for raw, category in invalid if category == "oversized"
    }
    assert all(
        len(raw) > OVERSIZE_LIMIT_BYTES for raw, category in invalid if category == "oversized"
    )
    letter_sha: Counter[str] = Counter()
    stages: Counter[str] = Counter()
    for letter_key, letter_value in letters:
        assert letter_value is not None
        letter = decode(DeadLetter, letter_value, max_bytes=DEADLETTER_MAX_MESSAGE_BYTES)
        assert letter.reason.strip(), letter
        assert letter.stage.strip(), letter
        assert letter.topic == names.container_samples
        assert letter.partition is not None
        assert letter.offset is not None
        assert letter_key in invalid_keys
        assert letter.key_b64 is not None
        assert base64.b64decode(letter.key_b64) == letter_key
        original = base64.b64decode(letter.value_b64)
        if not letter.truncated:
            assert hashlib.sha256(original).hexdigest() == letter.value_sha256
            assert len(original) == letter.value_size_bytes
        if letter.value_sha256 in oversized_sha:
            assert letter.stage == "size", letter.reason
        letter_sha[letter.value_sha256] += 1
        stages[letter.stage] += 1
    assert letter_sha == sent_sha  # each invalid message exactly once, bytes intact
    assert stages["size"] == OVERSIZED_COUNT
    assert {category for _, category in invalid} == set(CATEGORIES)
    assert len(stages) >= 3, stages

    final = [s for s in sets if samples_of(s) == dict.fromkeys(CONTAINERS, valid_count)]
    assert final, (
        f"no set covering all {valid_count} valid samples: {[samples_of(s) for s in sets]}"
    )
    assert all(s.workload == WORKLOAD for s in sets)
    assert metric_sum(metrics_text, "daytwo_deadletters_total") == INVALID_COUNT
    assert metric_sum(metrics_text, "daytwo_worker_samples_processed_total") == (
        valid_count * len(CONTAINERS)
    )
