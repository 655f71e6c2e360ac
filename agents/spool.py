"""A bounded on-disk spool: where an agent's messages wait while Kafka is unreachable.

Why: an agent must never lose data because the broker blinked, and it must never fill
the node's disk or memory because the broker stayed away. :class:`Spool` is a small
append-only log in one directory. The publisher appends what it could not deliver,
reads it back oldest first with :meth:`Spool.peek_batch`, and removes records with
:meth:`Spool.ack` only after the broker acknowledged them. When the size cap is
reached the oldest records are evicted (counted and logged), never the newest.

On-disk layout (one directory per agent; a second process opening it is refused)::

    lock                          flock()ed while a Spool has the directory open
    head                          "<segment id> <offset>": where the oldest un-acked
                                  record starts (written atomically on ack)
    00000000000000000007.seg      segments, oldest first; each starts with b"D2SPOOL1"

A record is ``magic (4 bytes) | body length (u32) | crc32 (u32) | body`` with the body
``topic length (u16) | key length (u32) | topic | key | value`` and the CRC over the
length field and the body. A tombstone (value ``None``: "deleted" on a compacted topic)
sets the top bit of the key length and has no value bytes; keys are far below 2 GiB, so
spools written before tombstones existed read the same. A record torn by a crash (or
any damaged region) fails its length or CRC check; reading skips it with a warning,
finds the next record magic and keeps going, so one bad write never hides the records
after it.

Durability (fsync policy): every append is written to the operating system at once
(``write`` + ``flush``), so a crash of the agent process loses nothing it appended.
Segments are ``fsync``-ed when they are rolled and on :meth:`Spool.close`, and the
directory is ``fsync``-ed when a segment is created. A power cut or kernel crash can
therefore lose at most the records appended to the active segment since it was created
(one segment is about 1/8 of the cap), plus the last part of the acknowledged
position, which only means those records are sent again (duplicates, absorbed by the
pipeline's idempotent replay rule). ``fsync_each_append=True`` closes that window at
the price of one fsync per record.

Eviction works a segment at a time (the oldest whole segment goes), like Kafka's
retention: disk usage including segment headers and acknowledged bytes not yet
reclaimed never exceeds ``max_bytes``.

Memory stays small whatever the backlog: the spool keeps a few counters per segment
(at most about 9 segments with the default sizing), never the records; a peek reads one
batch from disk. Segments are created when the first record needs one and deleted as
soon as every record in them is acknowledged or evicted.

All I/O is synchronous and small (one write per record, one read per peeked batch), so
an asyncio publisher may call it directly.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import logging
import os
import re
import struct
import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Final, Self

from prometheus_client import CollectorRegistry, Counter, Gauge

from pipeline.errors import ConfigError, DaytwoError

__all__ = [
    "DEFAULT_SEGMENT_BYTES_CEILING",
    "MIN_SPOOL_BYTES",
    "RECORD_OVERHEAD_BYTES",
    "SEGMENT_HEADER_BYTES",
    "Spool",
    "SpoolError",
    "SpoolRecord",
    "encoded_record_size",
]

log = logging.getLogger(__name__)

SEGMENT_MAGIC: Final = b"D2SPOOL1"
SEGMENT_HEADER_BYTES: Final = len(SEGMENT_MAGIC)
RECORD_MAGIC: Final = b"\xd2\x5c\x0f\x1e"
_RECORD_HEADER: Final = struct.Struct(">4sII")  # magic, body length, crc32
_LENGTH: Final = struct.Struct(">I")
_BODY_PREFIX: Final = struct.Struct(">HI")  # topic length, key length
RECORD_OVERHEAD_BYTES: Final = _RECORD_HEADER.size + _BODY_PREFIX.size
MIN_SPOOL_BYTES: Final = 4096
DEFAULT_SEGMENT_BYTES_CEILING: Final = 16 * 1024 * 1024
_SEGMENTS_PER_SPOOL: Final = 8
_MAX_TOPIC_BYTES: Final = 0xFFFF
_TOMBSTONE_FLAG: Final = 0x8000_0000  # top bit of the key length: the value is None
_MAX_KEY_BYTES: Final = _TOMBSTONE_FLAG - 1
_RESYNC_CHUNK_BYTES: Final = 64 * 1024
_SEGMENT_NAME: Final = re.compile(r"^(\d{20})\.seg$")
_HEAD_FILE: Final = "head"
_LOCK_FILE: Final = "lock"


class SpoolError(DaytwoError):
    """The spool directory cannot be used (locked, unwritable, disk full, misuse)."""


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    """One spooled message, as :meth:`Spool.peek_batch` read it back.

    ``segment_id``, ``start`` and ``end`` say where it lies so :meth:`Spool.ack` can
    check that acknowledgements arrive oldest first; ``start`` is where reading began
    (it includes any damaged bytes skipped just before the record).
    """

    topic: str
    key: bytes
    value: bytes | None  # None: a tombstone
    segment_id: int
    start: int
    end: int
    size_bytes: int


def encoded_record_size(topic: str, key: bytes, value: bytes | None) -> int:
    """Bytes one record takes on disk (what counts against the spool's cap)."""
    value_bytes = 0 if value is None else len(value)
    return RECORD_OVERHEAD_BYTES + len(topic.encode("utf-8")) + len(key) + value_bytes


def _encode_record(topic: str, key: bytes, value: bytes | None) -> bytes:
    topic_bytes = topic.encode("utf-8")
    if len(topic_bytes) > _MAX_TOPIC_BYTES:
        msg = f"topic name of {len(topic_bytes)} bytes cannot be spooled (at most 65535)"
        raise SpoolError(msg)
    if len(key) > _MAX_KEY_BYTES:
        msg = f"a key of {len(key)} bytes cannot be spooled (at most {_MAX_KEY_BYTES})"
        raise SpoolError(msg)
    key_field = len(key) if value is not None else len(key) | _TOMBSTONE_FLAG
    body = _BODY_PREFIX.pack(len(topic_bytes), key_field) + topic_bytes + key + (value or b"")
    length = _LENGTH.pack(len(body))
    crc = zlib.crc32(body, zlib.crc32(length))
    return RECORD_MAGIC + length + _LENGTH.pack(crc) + body


@dataclass(frozen=True, slots=True)
class _Found:
    start: int
    offset: int
    end: int
    topic: str
    key: bytes
    value: bytes | None


@dataclass(frozen=True, slots=True)
class _Damaged:
    offset: int
    length: int


def _parse_at(handle: BinaryIO, offset: int, limit: int) -> _Found | None:
    """The record at ``offset`` if it is whole and its CRC matches, else None."""
    handle.seek(offset)
    header = handle.read(_RECORD_HEADER.size)
    if len(header) < _RECORD_HEADER.size or offset + _RECORD_HEADER.size > limit:
        return None
    magic, length, crc = _RECORD_HEADER.unpack(header)
    end = offset + _RECORD_HEADER.size + length
    if magic != RECORD_MAGIC or length < _BODY_PREFIX.size or end > limit:
        return None
    body = handle.read(length)
    if len(body) < length or zlib.crc32(body, zlib.crc32(_LENGTH.pack(length))) != crc:
        return None
    topic_length, key_field = _BODY_PREFIX.unpack_from(body)
    tombstone = bool(key_field & _TOMBSTONE_FLAG)
    key_start = _BODY_PREFIX.size + topic_length
    value_start = key_start + (key_field & _MAX_KEY_BYTES)
    if value_start > length or (tombstone and value_start != length):
        return None
    try:
        topic = body[_BODY_PREFIX.size : key_start].decode("utf-8")
    except UnicodeDecodeError:
        return None
    value = None if tombstone else body[value_start:]
    return _Found(offset, offset, end, topic, body[key_start:value_start], value)


def _find_magic(handle: BinaryIO, offset: int, limit: int) -> int | None:
    """Offset of the next record magic at or after ``offset`` (before ``limit``)."""
    overlap = len(RECORD_MAGIC) - 1
    position = offset
    while position < limit:
        handle.seek(position)
        chunk = handle.read(min(_RESYNC_CHUNK_BYTES, limit - position))
        if not chunk:
            return None
        found = chunk.find(RECORD_MAGIC)
        if found >= 0:
            return position + found
        if len(chunk) <= overlap:
            return None
        position += len(chunk) - overlap
    return None


def _scan(handle: BinaryIO, start: int, limit: int) -> Iterator[_Found | _Damaged]:
    """Every record between ``start`` and ``limit``, and every damaged region, in order."""
    position = start
    scan_start = start
    while position < limit:
        found = _parse_at(handle, position, limit)
        if found is not None:
            yield _Found(scan_start, position, found.end, found.topic, found.key, found.value)
            position = scan_start = found.end
            continue
        resume = _find_magic(handle, position + 1, limit)
        yield _Damaged(position, (limit if resume is None else resume) - position)
        if resume is None:
            return
        position = resume


@dataclass(slots=True)
class _Segment:
    segment_id: int
    path: Path
    size: int
    live_records: int = 0
    live_bytes: int = 0


def _segment_name(segment_id: int) -> str:
    return f"{segment_id:020d}.seg"


def _write_all(writer: io.FileIO, data: bytes) -> None:
    """Write every byte (a raw write may be partial) or raise ``OSError``."""
    view = memoryview(data)
    while view:
        written = writer.write(view)
        if not written:
            msg = f"short write to {writer.name!r}"
            raise OSError(msg)
        view = view[written:]


def _fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class Spool:
    """A size-capped FIFO of ``(topic, key, value)`` records that survives restarts.

    ``value`` may be ``None`` (a tombstone); it reads back as ``None``, not ``b""``.

    ``Spool(path, max_bytes, registry)`` opens (or creates) the directory, reads the
    segments a previous process left there in order, skipping damaged records with a
    warning, and starts a fresh segment for new appends. Typical use by a publisher::

        spool.append(topic, key, value)          # broker unreachable
        batch = spool.peek_batch(500)            # broker back: oldest first
        ...send them, wait for the acks...
        spool.ack(batch[:delivered])             # only the acknowledged prefix

    Metrics on ``registry``: ``daytwo_agent_spool_depth_bytes`` / ``_depth_records``
    (un-acknowledged records), ``daytwo_agent_spool_disk_bytes``,
    ``daytwo_agent_spool_evicted_records_total`` / ``_evicted_bytes_total`` and
    ``daytwo_agent_spool_corrupt_records_total`` (damaged regions skipped on open).
    """

    def __init__(
        self,
        path: Path,
        max_bytes: int,
        registry: CollectorRegistry | None = None,
        *,
        segment_bytes: int | None = None,
        fsync_each_append: bool = False,
    ) -> None:
        if max_bytes < MIN_SPOOL_BYTES:
            msg = f"spool max_bytes must be at least {MIN_SPOOL_BYTES}, got {max_bytes}"
            raise ConfigError(msg)
        if segment_bytes is None:
            segment_bytes = min(max_bytes // _SEGMENTS_PER_SPOOL, DEFAULT_SEGMENT_BYTES_CEILING)
        if not SEGMENT_HEADER_BYTES + RECORD_OVERHEAD_BYTES < segment_bytes <= max_bytes:
            msg = (
                f"spool segment_bytes must be above {SEGMENT_HEADER_BYTES + RECORD_OVERHEAD_BYTES}"
                f" and at most max_bytes ({max_bytes}), got {segment_bytes}"
            )
            raise ConfigError(msg)
        self.path = path
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._fsync_each_append = fsync_each_append
        self._segments: deque[_Segment] = deque()
        self._head_offset = SEGMENT_HEADER_BYTES
        # Unbuffered (raw file): a failed write leaves nothing behind in a Python buffer
        # that a later flush could add after the truncation that undoes it.
        self._writer: io.FileIO | None = None  # open on the newest segment, if any
        self._next_segment_id = 1
        self._closed = False
        self._evicting = False
        self._burst_records = 0
        self._burst_bytes = 0
        self._lock = self._acquire_lock()
        registry = registry if registry is not None else CollectorRegistry()
        self.evicted_records = Counter(
            "daytwo_agent_spool_evicted_records_total",
            "Spooled records dropped unsent because the spool reached its size cap.",
            registry=registry,
        )
        self.evicted_bytes = Counter(
            "daytwo_agent_spool_evicted_bytes_total",
            "Bytes of spooled records dropped unsent because the spool was full.",
            registry=registry,
        )
        self.corrupt_records = Counter(
            "daytwo_agent_spool_corrupt_records_total",
            "Damaged or torn spool regions skipped when the spool was opened.",
            registry=registry,
        )
        Gauge(
            "daytwo_agent_spool_depth_bytes",
            "Bytes of spooled records not yet acknowledged by the broker.",
            registry=registry,
        ).set_function(lambda: float(self.depth_bytes))
        Gauge(
            "daytwo_agent_spool_depth_records",
            "Spooled records not yet acknowledged by the broker.",
            registry=registry,
        ).set_function(lambda: float(self.depth_records))
        Gauge(
            "daytwo_agent_spool_disk_bytes",
            "Bytes the spool's segment files take on disk (at most the cap).",
            registry=registry,
        ).set_function(lambda: float(self.disk_bytes))
        try:
            self._load()
            self._make_room(0)  # the cap may have shrunk since the last process
        except BaseException:
            self._release()
            raise

    # -- sizes ---------------------------------------------------------------------

    @property
    def depth_records(self) -> int:
        """Records appended and not yet acknowledged or evicted."""
        return sum(segment.live_records for segment in self._segments)

    @property
    def depth_bytes(self) -> int:
        """On-disk bytes of those records (headers included, damaged bytes excluded)."""
        return sum(segment.live_bytes for segment in self._segments)

    @property
    def disk_bytes(self) -> int:
        """Bytes of every segment file, what the cap bounds."""
        return sum(segment.size for segment in self._segments)

    # -- writing -------------------------------------------------------------------

    def append(self, topic: str, key: bytes, value: bytes | None) -> None:
        """Add one record at the tail, evicting the oldest segments if the cap needs it.

        Raises :class:`SpoolError` when the record alone is larger than the spool
        could ever hold, or the disk refuses the write (the file is left as before).
        """
        self._check_open()
        record = _encode_record(topic, key, value)
        if SEGMENT_HEADER_BYTES + len(record) > self.max_bytes:
            msg = (
                f"a {len(record)}-byte record does not fit a spool capped at "
                f"{self.max_bytes} bytes; reject such payloads before spooling"
            )
            raise SpoolError(msg)
        active = self._segments[-1] if self._writer is not None else None
        if active is None or (
            active.size > SEGMENT_HEADER_BYTES and active.size + len(record) > self.segment_bytes
        ):
            # Segments are created on demand: the new header must fit under the cap too.
            self._seal_active()
            self._make_room(SEGMENT_HEADER_BYTES + len(record))
            self._open_new_segment()
            active = self._segments[-1]
        else:
            self._make_room(len(record))
        writer = self._writer
        if writer is None:  # _open_new_segment() sets it or raises
            msg = f"spool {self.path} has no segment to write to"
            raise SpoolError(msg)
        try:
            _write_all(writer, record)
            if self._fsync_each_append:
                os.fsync(writer.fileno())
        except OSError as error:
            with contextlib.suppress(OSError):
                writer.seek(active.size)
                writer.truncate(active.size)
            msg = f"cannot append to spool segment {active.path}: {error}"
            raise SpoolError(msg) from error
        active.size += len(record)
        active.live_records += 1
        active.live_bytes += len(record)

    def _make_room(self, size: int) -> None:
        while self.disk_bytes + size > self.max_bytes:
            self._evict_oldest()

    def _evict_oldest(self) -> None:
        if not self._segments or (self._writer is not None and len(self._segments) == 1):
            # append() checked that the record (and a segment header) fit the cap alone
            msg = f"spool {self.path} cannot make room: only the active segment is left"
            raise SpoolError(msg)
        oldest = self._segments[0]
        records, size = oldest.live_records, oldest.live_bytes
        self._drop_head_segment()
        self.evicted_records.inc(records)
        self.evicted_bytes.inc(size)
        self._burst_records += records
        self._burst_bytes += size
        if not self._evicting:
            self._evicting = True
            log.warning(
                "spool %s is full (cap %d bytes): evicting the oldest records, first %d "
                "record(s) / %d bytes; the broker has been unreachable too long or the cap "
                "is too small (daytwo_agent_spool_evicted_records_total counts them)",
                self.path,
                self.max_bytes,
                records,
                size,
            )
        else:
            log.debug("spool %s evicted %d more record(s) / %d bytes", self.path, records, size)

    def _end_eviction_burst(self) -> None:
        if self._evicting and self.depth_bytes <= self.max_bytes // 2:
            log.warning(
                "spool %s drained below half its cap; %d record(s) / %d bytes were evicted "
                "while it was full",
                self.path,
                self._burst_records,
                self._burst_bytes,
            )
            self._evicting = False
            self._burst_records = self._burst_bytes = 0

    def _open_new_segment(self) -> None:
        segment_id = self._next_segment_id
        path = self.path / _segment_name(segment_id)
        try:
            writer = io.FileIO(path, "xb")
            _write_all(writer, SEGMENT_MAGIC)
            _fsync_directory(self.path)
        except OSError as error:
            msg = f"cannot create spool segment {path}: {error}"
            raise SpoolError(msg) from error
        self._writer = writer
        self._next_segment_id = segment_id + 1
        if not self._segments:
            self._head_offset = SEGMENT_HEADER_BYTES
        self._segments.append(_Segment(segment_id, path, SEGMENT_HEADER_BYTES))

    def _seal_active(self, *, sync: bool = True) -> None:
        """Close the segment being written (fsync it first); the next append rolls."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        try:
            if sync:
                os.fsync(writer.fileno())
        except OSError as error:
            log.warning("cannot sync spool segment %s: %s", self._segments[-1].path, error)
        finally:
            writer.close()

    def _drop_head_segment(self) -> None:
        if self._writer is not None and len(self._segments) == 1:
            self._seal_active(sync=False)  # fully acknowledged: nothing left to sync
        segment = self._segments.popleft()
        self._head_offset = SEGMENT_HEADER_BYTES
        with contextlib.suppress(FileNotFoundError):
            segment.path.unlink()

    # -- reading and acknowledging ---------------------------------------------------

    def peek_batch(self, max_records: int, max_bytes: int | None = None) -> list[SpoolRecord]:
        """The oldest un-acknowledged records, in append order, without removing them.

        Stops at ``max_records`` records or once ``max_bytes`` (if given) are reached;
        at least one record is returned while the spool is not empty.
        """
        self._check_open()
        if max_records < 1:
            msg = f"max_records must be at least 1, got {max_records}"
            raise ValueError(msg)
        batch: list[SpoolRecord] = []
        batch_bytes = 0
        for index, segment in enumerate(self._segments):
            if segment.live_records == 0:
                continue
            start = self._head_offset if index == 0 else SEGMENT_HEADER_BYTES
            with segment.path.open("rb") as handle:
                for item in _scan(handle, start, segment.size):
                    if isinstance(item, _Damaged):
                        log.debug(
                            "spool %s: skipping %d damaged bytes at %d",
                            segment.path,
                            item.length,
                            item.offset,
                        )
                        continue
                    size = item.end - item.offset
                    batch.append(
                        SpoolRecord(
                            item.topic,
                            item.key,
                            item.value,
                            segment.segment_id,
                            item.start,
                            item.end,
                            size,
                        )
                    )
                    batch_bytes += size
                    if len(batch) >= max_records or (
                        max_bytes is not None and batch_bytes >= max_bytes
                    ):
                        return batch
        return batch

    def ack(self, records: Iterable[SpoolRecord]) -> None:
        """Remove records the broker acknowledged; they must be the oldest, in order.

        Records that are already gone (evicted since they were peeked, or acked
        twice) are ignored. A record that is not the oldest remaining one raises
        :class:`SpoolError`: acknowledging out of order would lose the ones skipped.
        """
        self._check_open()
        changed = False
        try:
            for record in records:
                changed = self._ack_one(record) or changed
        finally:
            if changed:
                self._write_head()
                self._end_eviction_burst()

    def _ack_one(self, record: SpoolRecord) -> bool:
        if not self._segments:
            return False  # everything is gone already (evicted, or acked twice)
        head = self._segments[0]
        if record.segment_id < head.segment_id or (
            record.segment_id == head.segment_id and record.start < self._head_offset
        ):
            return False
        if record.segment_id != head.segment_id or record.start != self._head_offset:
            msg = (
                f"spool ack out of order: record at segment {record.segment_id} offset "
                f"{record.start}, but the oldest un-acked record is at segment "
                f"{head.segment_id} offset {self._head_offset}; ack what peek_batch "
                "returned, oldest first"
            )
            raise SpoolError(msg)
        self._head_offset = record.end
        head.live_records -= 1
        head.live_bytes -= record.size_bytes
        if head.live_records == 0:
            self._drop_head_segment()  # the active one too: appends start a fresh one
        return True

    def _write_head(self) -> None:
        target = self.path / _HEAD_FILE
        temporary = self.path / (_HEAD_FILE + ".tmp")
        if self._segments:
            text = f"{self._segments[0].segment_id} {self._head_offset}\n"
        else:  # everything acknowledged: all segments before the next one are done
            text = f"{self._next_segment_id} {SEGMENT_HEADER_BYTES}\n"
        try:
            temporary.write_text(text, encoding="ascii")
            temporary.replace(target)
        except OSError as error:
            # Losing the head position only means re-sending acknowledged records.
            log.warning("cannot record the spool position in %s: %s", target, error)

    # -- opening -------------------------------------------------------------------

    def _acquire_lock(self) -> BinaryIO:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            lock = (self.path / _LOCK_FILE).open("ab")
        except OSError as error:
            msg = f"cannot use spool directory {self.path}: {error}"
            raise SpoolError(msg) from error
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            lock.close()
            msg = (
                f"spool directory {self.path} is in use by another process ({error}); "
                "give each agent its own spool directory"
            )
            raise SpoolError(msg) from error
        return lock

    def _read_head(self) -> tuple[int, int] | None:
        try:
            text = (self.path / _HEAD_FILE).read_text(encoding="ascii")
        except FileNotFoundError:
            return None
        except OSError as error:
            log.warning("cannot read spool position %s: %s", self.path / _HEAD_FILE, error)
            return None
        parts = text.split()
        if len(parts) != 2 or not all(part.isdigit() for part in parts):
            log.warning("ignoring malformed spool position %r in %s", text, self.path)
            return None
        return int(parts[0]), int(parts[1])

    def _load(self) -> None:
        """Index the segments a previous process left, oldest first."""
        found = sorted(
            (int(match.group(1)), entry)
            for entry in self.path.iterdir()
            if (match := _SEGMENT_NAME.match(entry.name))
        )
        head = self._read_head()
        # Segment ids only grow, also across restarts: a head position naming an id
        # must never come to mean a newer segment created under a reused id.
        self._next_segment_id = max([1] + [i + 1 for i, _ in found] + [head[0] + 1 if head else 1])
        first_start: int | None = None
        for segment_id, path in found:
            start = SEGMENT_HEADER_BYTES
            if head is not None and segment_id < head[0]:
                path.unlink()  # fully acknowledged before the last shutdown or crash
                continue
            if head is not None and segment_id == head[0]:
                start = head[1]
            segment = self._index_segment(segment_id, path, start)
            if segment is None or segment.live_records == 0:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                continue
            if first_start is None:
                first_start = start
            self._segments.append(segment)
        self._head_offset = first_start if first_start is not None else SEGMENT_HEADER_BYTES

    def _index_segment(self, segment_id: int, path: Path, start: int) -> _Segment | None:
        size = path.stat().st_size
        with path.open("rb") as handle:
            if handle.read(SEGMENT_HEADER_BYTES) != SEGMENT_MAGIC:
                if size >= SEGMENT_HEADER_BYTES:
                    self.corrupt_records.inc()
                    log.warning("spool segment %s has no spool header; discarding it", path)
                return None
            if not SEGMENT_HEADER_BYTES <= start <= size:
                log.warning(
                    "spool position %d is outside segment %s (%d bytes); reading it whole",
                    start,
                    path,
                    size,
                )
                start = SEGMENT_HEADER_BYTES
            segment = _Segment(segment_id, path, size)
            for item in _scan(handle, start, size):
                if isinstance(item, _Damaged):
                    self.corrupt_records.inc()
                    log.warning(
                        "spool segment %s: skipping %d damaged or torn byte(s) at offset %d "
                        "(a write cut short by a crash?); the records after it are kept",
                        path,
                        item.length,
                        item.offset,
                    )
                    continue
                segment.live_records += 1
                segment.live_bytes += item.end - item.offset
        return segment

    # -- closing -------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            msg = f"spool {self.path} is closed"
            raise SpoolError(msg)

    def close(self) -> None:
        """Sync the active segment to disk, record the position and unlock; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._seal_active()
        self._write_head()
        self._release()

    def _release(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_UN)
        self._lock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Spool({str(self.path)!r}, {self.depth_records} records, "
            f"{self.disk_bytes}/{self.max_bytes} bytes)"
        )
