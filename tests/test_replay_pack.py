"""A packed replay (``--speedup max --pack N``) says the same thing in fewer messages.

Packing is how a catching-up agent makes the worker fast (docs/benchmarks.md): each
batch holds one workload's consecutive instants. It must change nothing downstream: the
same samples per workload in the same order, valid batches under the cap, numbered
without gaps, and a worker that ends in the same state with the same recommendations.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

import agents.replay
from agents.replay import UNPACED, read_trace, stream_trace
from pipeline.core.profiles import BALANCED
from pipeline.errors import ConfigError
from pipeline.metrics import WorkerMetrics
from pipeline.processor import Processor
from schemas.validate import decode_container_batch
from tests.worker_helpers import MemoryStore

T0 = 1_750_000_000
WORKLOADS = ("c/shop/Deployment/web", "c/shop/Deployment/api", "c/ops/StatefulSet/db")
INSTANTS = 400


class ListPublisher:
    """Keeps what was sent, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    async def send(self, topic: str, key: bytes, value: bytes | None) -> None:
        assert value is not None  # no tombstones in these tests
        self.sent.append((topic, key, value))

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        return None


def write_trace(path: Path) -> Path:
    rng = random.Random(4)
    lines = ["timestamp,workload,container,cpu_cores,memory_bytes"]
    for i in range(INSTANTS):
        for w, workload in enumerate(WORKLOADS):
            for container in ("app", "sidecar"):
                step = 2.0 if i > INSTANTS // 2 and w == 0 else 1.0
                cpu = 0.3 * step * rng.uniform(0.8, 1.2)
                memory = int(200e6 * step * rng.uniform(0.95, 1.05))
                lines.append(f"{T0 + 10 * i},{workload},{container},{cpu:.6f},{memory}")
    path.write_text("\n".join(lines) + "\n")
    return path


def replay(path: Path, pack: int | None) -> ListPublisher:
    publisher = ListPublisher()
    asyncio.run(
        stream_trace(read_trace(path), publisher, topic="t", speedup=UNPACED, pack_samples=pack)
    )
    return publisher


def worker_fed(publisher: ListPublisher) -> tuple[Processor, MemoryStore]:
    store = MemoryStore()
    processor = Processor(
        profile=BALANCED,
        store=store,
        metrics=WorkerMetrics.create(CollectorRegistry()),
        clock=lambda: 0.0,
        source_topic="t",
    )
    for offset, (_, key, value) in enumerate(publisher.sent):
        assert processor.handle(key, value, partition=0, offset=offset) is None
    processor.checkpoint()
    return processor, store


def test_a_packed_replay_sends_the_same_samples_in_far_fewer_batches(tmp_path: Path) -> None:
    path = write_trace(tmp_path / "trace.csv")
    plain, packed = replay(path, None), replay(path, 100)
    assert len(plain.sent) == INSTANTS * len(WORKLOADS)
    assert len(packed.sent) == len(WORKLOADS) * (INSTANTS * 2 // 100)
    batches = [decode_container_batch(value) for _, _, value in packed.sent]
    assert [b.sequence for b in batches] == list(range(len(batches)))
    assert all(len(b.samples) <= 100 for b in batches)
    for workload in WORKLOADS:
        key = workload.encode()
        assert all(
            b.workload == workload
            for (_, k, _), b in zip(packed.sent, batches, strict=True)
            if k == key
        )

        def samples(publisher: ListPublisher, key: bytes = key) -> list[object]:
            return [
                s
                for _, k, value in publisher.sent
                if k == key
                for s in decode_container_batch(value).samples
            ]

        assert samples(packed) == samples(plain)


def test_a_worker_fed_packed_batches_ends_where_one_fed_scrapes_does(tmp_path: Path) -> None:
    path = write_trace(tmp_path / "trace.csv")
    (plain, plain_store), (packed, packed_store) = (
        worker_fed(replay(path, None)),
        worker_fed(replay(path, 333)),
    )
    assert plain_store.data.keys() == packed_store.data.keys()
    for key, state in plain_store.data.items():
        assert packed_store.data[key] == state, key
    plain_sets = [(s.workload, s.hash) for s in plain.current_sets()]
    assert plain_sets == [(s.workload, s.hash) for s in packed.current_sets()]
    assert len(plain_sets) == len(WORKLOADS)


def test_packing_holds_back_a_bounded_number_of_samples(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a small buffer every workload is flushed early, order still kept."""
    monkeypatch.setattr(agents.replay, "PACK_BUFFER_SAMPLES", 50)
    path = write_trace(tmp_path / "trace.csv")
    packed, plain = replay(path, 1000), replay(path, None)
    batches = [decode_container_batch(value) for _, _, value in packed.sent]
    assert max(len(b.samples) for b in batches) <= 50 + 2
    assert sorted(s.timestamp for b in batches for s in b.samples) == sorted(
        s.timestamp for _, _, v in plain.sent for s in decode_container_batch(v).samples
    )
    last: dict[str, float] = {}
    for batch in batches:
        for sample in batch.samples:
            key = f"{batch.workload}:{sample.container}"
            assert sample.timestamp > last.get(key, 0.0)
            last[key] = sample.timestamp


@pytest.mark.parametrize(("speedup", "pack"), [(1000.0, 10), (UNPACED, 0), (UNPACED, 1001)])
def test_packing_is_refused_when_paced_or_out_of_bounds(
    tmp_path: Path, speedup: float, pack: int
) -> None:
    path = write_trace(tmp_path / "trace.csv")
    began = time.monotonic()
    with pytest.raises(ConfigError, match="pack"):
        asyncio.run(
            stream_trace(
                read_trace(path), ListPublisher(), topic="t", speedup=speedup, pack_samples=pack
            )
        )
    assert time.monotonic() - began < 5.0
