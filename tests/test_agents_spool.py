"""agents/spool.py: FIFO order, acks, the size cap, restarts and torn writes, on real files."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from prometheus_client import CollectorRegistry

from agents.spool import (
    MIN_SPOOL_BYTES,
    RECORD_OVERHEAD_BYTES,
    SEGMENT_HEADER_BYTES,
    Spool,
    SpoolError,
    SpoolRecord,
    encoded_record_size,
)
from pipeline.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
Message = tuple[str, bytes, bytes | None]


def messages(count: int, size: int = 40, start: int = 0) -> list[Message]:
    """Distinct messages: the value starts with its serial number."""
    return [
        (f"topic-{i % 2}", f"key-{i % 3}".encode(), f"{i:08d}".encode() + b"x" * size)
        for i in range(start, start + count)
    ]


def contents(spool: Spool) -> list[Message]:
    if spool.depth_records == 0:
        return []
    return [(r.topic, r.key, r.value) for r in spool.peek_batch(spool.depth_records)]


def segment_files(path: Path) -> list[Path]:
    return sorted(path.glob("*.seg"))


def test_records_come_back_in_order_and_leave_only_when_acked(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    sent = messages(10)
    with Spool(tmp_path, 1 << 20, registry) as spool:
        for message in sent:
            spool.append(*message)
        assert spool.depth_records == 10
        assert spool.depth_bytes == sum(encoded_record_size(*m) for m in sent)
        assert registry.get_sample_value("daytwo_agent_spool_depth_records") == 10
        assert registry.get_sample_value("daytwo_agent_spool_depth_bytes") == spool.depth_bytes

        first = spool.peek_batch(4)
        assert [(r.topic, r.key, r.value) for r in first] == sent[:4]
        assert spool.peek_batch(4) == first  # peeking removes nothing
        spool.ack(first[:3])
        assert contents(spool) == sent[3:]
        spool.ack(first)  # the first three again: already gone, ignored
        assert contents(spool) == sent[4:]
        spool.ack(spool.peek_batch(100))
        assert spool.depth_records == 0
        assert spool.peek_batch(5) == []
        assert registry.get_sample_value("daytwo_agent_spool_depth_bytes") == 0
        # Emptied: the disk space is given back; a new append starts a new segment.
        assert spool.disk_bytes == 0
        assert segment_files(tmp_path) == []
        spool.append(*sent[0])
        assert contents(spool) == sent[:1]


def test_peek_batch_stops_at_the_byte_budget_but_returns_at_least_one(tmp_path: Path) -> None:
    with Spool(tmp_path, 1 << 20) as spool:
        for message in messages(5, size=1000):
            spool.append(*message)
        assert len(spool.peek_batch(100, max_bytes=1)) == 1
        assert len(spool.peek_batch(100, max_bytes=2500)) == 3


def test_acks_out_of_order_are_refused(tmp_path: Path) -> None:
    with Spool(tmp_path, 1 << 20) as spool:
        for message in messages(3):
            spool.append(*message)
        batch = spool.peek_batch(3)
        with pytest.raises(SpoolError, match="out of order"):
            spool.ack([batch[1]])
        assert spool.depth_records == 3


def test_reopening_continues_where_the_last_process_stopped(tmp_path: Path) -> None:
    sent = messages(30)
    with Spool(tmp_path, 1 << 20, segment_bytes=600) as spool:
        for message in sent[:20]:
            spool.append(*message)
        spool.ack(spool.peek_batch(7))
    remaining = segment_files(tmp_path)
    assert len(remaining) >= 2  # the records span several segments...
    assert remaining[0].name != f"{1:020d}.seg"  # ...and the fully acked first one is gone
    with Spool(tmp_path, 1 << 20, segment_bytes=600) as spool:
        assert contents(spool) == sent[7:20]
        for message in sent[20:]:
            spool.append(*message)
        spool.ack(spool.peek_batch(10))
    with Spool(tmp_path, 1 << 20, segment_bytes=600) as spool:
        assert contents(spool) == sent[17:]


def test_a_killed_process_loses_nothing_it_appended(tmp_path: Path) -> None:
    # The child appends and dies without close() (no fsync, no head file): the records
    # are in the page cache, which a process crash does not lose.
    child = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from agents.spool import Spool\n"
        "spool = Spool(Path(sys.argv[1]), 1 << 20)\n"
        "for i in range(50):\n"
        "    spool.append('t', b'k', str(i).encode())\n"
        "spool.ack(spool.peek_batch(5))\n"
        "os._exit(9)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", child, str(tmp_path)], cwd=REPO_ROOT, check=False, timeout=60
    )
    assert result.returncode == 9
    with Spool(tmp_path, 1 << 20) as spool:
        assert [r.value for r in spool.peek_batch(100)] == [str(i).encode() for i in range(5, 50)]


def test_a_second_process_cannot_open_the_same_directory(tmp_path: Path) -> None:
    with Spool(tmp_path, 1 << 20), pytest.raises(SpoolError, match="in use"):
        Spool(tmp_path, 1 << 20)
    with Spool(tmp_path, 1 << 20) as spool:  # released on close
        assert spool.depth_records == 0


def test_torn_write_at_the_tail_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sent = messages(5)
    with Spool(tmp_path, 1 << 20) as spool:
        for message in sent:
            spool.append(*message)
    (segment,) = segment_files(tmp_path)
    size = segment.stat().st_size
    # Cut the last record in half, as a crash in the middle of its write would.
    with segment.open("r+b") as handle:
        handle.truncate(size - encoded_record_size(*sent[-1]) // 2)
    registry = CollectorRegistry()
    with (
        caplog.at_level(logging.WARNING, logger="agents.spool"),
        Spool(tmp_path, 1 << 20, registry) as spool,
    ):
        assert contents(spool) == sent[:4]
        spool.append(*messages(1, start=99)[0])  # still writable, after the survivors
        assert contents(spool) == sent[:4] + messages(1, start=99)
    assert registry.get_sample_value("daytwo_agent_spool_corrupt_records_total") == 1
    assert any("torn" in record.getMessage() for record in caplog.records)


def test_damage_in_the_middle_skips_one_record_and_keeps_the_rest(tmp_path: Path) -> None:
    sent = messages(5)
    with Spool(tmp_path, 1 << 20) as spool:
        for message in sent:
            spool.append(*message)
    (segment,) = segment_files(tmp_path)
    third = SEGMENT_HEADER_BYTES + sum(encoded_record_size(*m) for m in sent[:2])
    data = bytearray(segment.read_bytes())
    data[third + RECORD_OVERHEAD_BYTES + 10] ^= 0xFF  # flip a byte inside the 3rd body
    segment.write_bytes(bytes(data))
    registry = CollectorRegistry()
    with Spool(tmp_path, 1 << 20, registry) as spool:
        assert contents(spool) == sent[:2] + sent[3:]
        spool.ack(spool.peek_batch(3))  # acks may run across the skipped region
        assert contents(spool) == sent[4:]
    assert registry.get_sample_value("daytwo_agent_spool_corrupt_records_total") == 1


def test_the_cap_evicts_the_oldest_counts_them_and_logs_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    cap = 16 * 1024
    sent = messages(400, size=100)
    with (
        caplog.at_level(logging.WARNING, logger="agents.spool"),
        Spool(tmp_path, cap, registry) as spool,
    ):
        for message in sent:
            spool.append(*message)
            assert spool.disk_bytes <= cap
            assert sum(p.stat().st_size for p in segment_files(tmp_path)) <= cap
        kept = contents(spool)
        evicted_records = registry.get_sample_value("daytwo_agent_spool_evicted_records_total")
        evicted_bytes = registry.get_sample_value("daytwo_agent_spool_evicted_bytes_total")
        assert kept == sent[len(sent) - len(kept) :]  # the newest, contiguous
        assert evicted_records == len(sent) - len(kept) > 0
        assert evicted_bytes == sum(encoded_record_size(*m) for m in sent[: len(sent) - len(kept)])
        # Eviction goes a segment (1/8 of the cap) at a time, so most of the cap is used.
        assert spool.depth_bytes > cap * 6 // 8
    full_warnings = [r for r in caplog.records if "is full" in r.getMessage()]
    assert len(full_warnings) == 1


def test_an_ack_of_records_evicted_after_the_peek_is_harmless(tmp_path: Path) -> None:
    with Spool(tmp_path, MIN_SPOOL_BYTES, segment_bytes=1024) as spool:
        for message in messages(10, size=60):
            spool.append(*message)
        stale = spool.peek_batch(3)
        for message in messages(60, size=60, start=10):
            spool.append(*message)
        before = contents(spool)
        spool.ack(stale)
        assert contents(spool) == before


def test_refuses_records_larger_than_the_spool_and_tiny_caps(tmp_path: Path) -> None:
    with Spool(tmp_path, MIN_SPOOL_BYTES) as spool:
        with pytest.raises(SpoolError, match="does not fit"):
            spool.append("t", b"k", b"v" * MIN_SPOOL_BYTES)
        assert spool.depth_records == 0
    with pytest.raises(ConfigError, match="max_bytes"):
        Spool(tmp_path / "small", MIN_SPOOL_BYTES - 1)
    with pytest.raises(ConfigError, match="segment_bytes"):
        Spool(tmp_path / "seg", MIN_SPOOL_BYTES, segment_bytes=MIN_SPOOL_BYTES + 1)


@pytest.fixture
def tiny_filesystem() -> Iterator[Path]:
    """A real 16 KiB tmpfs, to see what the spool does when the disk is full (root)."""
    mount_point = Path(tempfile.mkdtemp(prefix="daytwo-tiny-fs-"))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mount_point)],
        check=False,
        capture_output=True,
    )
    if mounted.returncode != 0:
        mount_point.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)
        mount_point.rmdir()


def test_a_full_disk_refuses_the_append_and_keeps_what_was_written(
    tiny_filesystem: Path,
) -> None:
    written: list[Message] = []
    with Spool(tiny_filesystem, 1 << 20) as spool:  # the cap is above the disk's size
        with pytest.raises(SpoolError, match="cannot append"):  # noqa: PT012 - loop until full
            for message in messages(1000, size=200):
                spool.append(*message)
                written.append(message)
        assert 0 < len(written) < 1000
        assert contents(spool) == written
        spool.ack(spool.peek_batch(len(written)))  # frees the disk
        spool.append(*messages(1, start=5000)[0])
        assert contents(spool) == messages(1, start=5000)
    with Spool(tiny_filesystem, 1 << 20) as spool:
        assert contents(spool) == messages(1, start=5000)


def test_a_closed_spool_refuses_work(tmp_path: Path) -> None:
    spool = Spool(tmp_path, MIN_SPOOL_BYTES)
    spool.close()
    spool.close()
    with pytest.raises(SpoolError, match="closed"):
        spool.append("t", b"k", b"v")


class SpoolModel(RuleBasedStateMachine):
    """Any interleaving of append / peek / ack / reopen behaves like a capped FIFO.

    The model is a deque of what was appended and not acknowledged. The spool may drop
    records only from the front, and only when an append would exceed the cap.
    """

    cap = MIN_SPOOL_BYTES
    segment_bytes = 700

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="daytwo-spool-model-"))
        self.spool = self.open()
        self.model: deque[Message] = deque()
        self.peeked: list[SpoolRecord] = []
        self.serial = 0
        self.evicted = 0
        self.evicted_counted = 0.0

    def open(self) -> Spool:
        self.registry = CollectorRegistry()
        return Spool(self.directory, self.cap, self.registry, segment_bytes=self.segment_bytes)

    @rule(size=st.integers(0, 400), topic=st.sampled_from(["a", "bb"]))
    def append(self, size: int, topic: str) -> None:
        value = self.serial.to_bytes(8, "big") + b"v" * size
        self.serial += 1
        disk_before = self.spool.disk_bytes
        self.spool.append(topic, b"k", value)
        self.model.append((topic, b"k", value))
        dropped = len(self.model) - self.spool.depth_records
        assert dropped >= 0
        if dropped:  # only the cap may take records (invariant: only the oldest); the
            # record might need a fresh segment, whose header counts against the cap too
            needed = SEGMENT_HEADER_BYTES + encoded_record_size(topic, b"k", value)
            assert disk_before + needed > self.cap
        for _ in range(dropped):
            self.model.popleft()
        self.evicted += dropped

    @rule(count=st.integers(1, 12))
    def peek(self, count: int) -> None:
        self.peeked = self.spool.peek_batch(count)
        assert [(r.topic, r.key, r.value) for r in self.peeked] == list(self.model)[:count]

    @precondition(lambda self: bool(self.peeked))
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        count = data.draw(st.integers(0, len(self.peeked)))
        acked, self.peeked = self.peeked[:count], self.peeked[count:]
        self.spool.ack(acked)
        for record in acked:  # a record evicted since the peek is no longer in front
            if self.model and self.model[0][2] == record.value:
                self.model.popleft()

    @rule()
    def reopen(self) -> None:
        self.evicted_counted += self.evicted_total()
        self.spool.close()
        self.spool = self.open()

    @rule()
    def crash_and_reopen(self) -> None:
        """Open what a killed process leaves: the files as they are now, no close()."""
        self.evicted_counted += self.evicted_total()
        survivor = Path(tempfile.mkdtemp(prefix="daytwo-spool-model-"))
        for entry in self.directory.iterdir():
            if entry.name != "lock":
                shutil.copy2(entry, survivor / entry.name)
        self.spool.close()
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory = survivor
        self.spool = self.open()

    def evicted_total(self) -> float:
        value = self.registry.get_sample_value("daytwo_agent_spool_evicted_records_total")
        return value or 0.0

    @invariant()
    def spool_equals_model(self) -> None:
        assert contents(self.spool) == list(self.model)
        assert self.spool.depth_records == len(self.model)
        assert self.spool.disk_bytes <= self.cap
        assert self.evicted_counted + self.evicted_total() == self.evicted

    def teardown(self) -> None:
        self.spool.close()
        shutil.rmtree(self.directory, ignore_errors=True)


SpoolModel.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
test_spool_behaves_like_a_capped_fifo = SpoolModel.TestCase
