"""Unified JVM GC logs (``-Xlog:gc*``, JDK 11-21): parse, tail across rotation, aggregate.

Why: the GC log is the one JVM signal every JVM can produce without an agent inside it, and
it carries what sizing a container around a JVM needs: how long the application stood
still (GC overhead), how much it really keeps alive (live set after old/full collections),
how fast it allocates, and the heap bounds in force (the ``gc,init`` lines).

Three layers, so the parsing stays pure:

* :class:`GcLogParser` turns text lines into events (:class:`GcPause`, :class:`GcCycleEnd`,
  :class:`MetaspaceUsage`, :class:`JvmStart`) and fills :class:`GcLogInit` from the init
  lines. It never raises on input: a malformed or truncated line is counted in
  ``bad_lines`` and skipped. Lines it has no use for (phases, tasks) are ignored, not bad.
* :class:`IntervalAggregator` turns events into one :class:`GcIntervalSummary` per scrape
  interval (GC overhead = pause time / wall time of the interval).
* :class:`GcLogTailer` does the file I/O: follows ``gc.log`` across the JVM's own rotation
  (``-Xlog:...:filecount=N,filesize=M`` renames the full file to ``gc.log.NN``) and across
  truncation, returning every complete line exactly once.

Decorations understood: any mix of ``uptime`` (``[0.043s]``), ``uptimemillis``/``nanos``,
``time``/``utctime`` (ISO-8601), ``timemillis``/``nanos``, ``level``, ``tags``, ``pid``/``tid``;
the default for a file output is ``[uptime][level][tags]``.

    >>> parser = GcLogParser()
    >>> line = "[0.04s][gc] GC(0) Pause Young (Normal) (G1 Evacuation Pause) 6M->1M(34M) 5.3ms"
    >>> [event] = parser.feed(line)
    >>> (event.kind, event.cause, event.duration_seconds, event.heap_after_bytes)
    ('young', 'G1 Evacuation Pause', 0.0053, 1048576)
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Final, Literal

__all__ = [
    "CollectorName",
    "GcCycleEnd",
    "GcEvent",
    "GcIntervalSummary",
    "GcLogInit",
    "GcLogParser",
    "GcLogTailer",
    "GcPause",
    "IntervalAggregator",
    "JvmStart",
    "LogDecorations",
    "MetaspaceUsage",
    "PauseKind",
    "parse_size",
    "split_decorations",
]

log = logging.getLogger(__name__)

CollectorName = Literal["G1", "Parallel", "Serial", "ZGC", "Shenandoah", "other"]
PauseKind = Literal[
    "young",
    "mixed",
    "full",
    "degenerated",
    "remark",
    "cleanup",
    "init-mark",
    "final-mark",
    "init-update-refs",
    "final-update-refs",
    "mark-start",
    "mark-end",
    "relocate-start",
    "other",
]

#: Pause kinds after which the heap holds (about) only live data.
OLD_PAUSE_KINDS: Final[frozenset[str]] = frozenset({"mixed", "full", "degenerated"})
#: Pause kinds counted as full collections (the collector fell back to stop-the-world).
FULL_PAUSE_KINDS: Final[frozenset[str]] = frozenset({"full", "degenerated"})

_UNITS: Final = {"B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = r"(\d{1,19})([BKMGT])"
_MS = r"(\d{1,12}(?:\.\d{1,9})?)ms"
_PARENS = r"(?: \((?:[^()]|\([^()]*\))*\))*"
_TIMEMILLIS_FLOOR: Final = 10**11  # ms values above this are epoch times, not uptimes
_TIMENANOS_FLOOR: Final = 10**17

_DECORATION = re.compile(r"\[([^\[\]]*)\]")
_UPTIME_S = re.compile(r"^(\d+(?:\.\d+)?)s$")
_INTEGER_UNIT = re.compile(r"^(\d+)(ms|ns)$")
_ISO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?$")
_LEVELS: Final = frozenset({"trace", "debug", "info", "warning", "error"})
_TAGS = re.compile(r"^[a-z0-9_]+(?:,[a-z0-9_]+)*$")

_GC_ID = re.compile(r"^GC\((\d{1,18})\)\s+")
_GENERATION = re.compile(r"^[YyOo]: ")
_PAUSE_END = re.compile(
    rf"^Pause ([A-Za-z][A-Za-z ]*{_PARENS})(?: {_SIZE}->{_SIZE}\({_SIZE}\))? {_MS}$"
)
_PAUSE_START = re.compile(rf"^Pause [A-Za-z][A-Za-z ]*{_PARENS}$")
_Z_CYCLE_END = re.compile(
    rf"^(?:Garbage|Major|Minor) Collection \((.+)\) {_SIZE}\(\d{{1,3}}%\)->{_SIZE}\(\d{{1,3}}%\)"
    r"(?: (\d{1,12}(?:\.\d{1,9})?)s)?$"
)
_Z_CYCLE_START = re.compile(r"^(?:Garbage|Major|Minor) Collection \(((?:[^()]|\([^()]*\))*)\)$")
_Z_CYCLE_PREFIX = re.compile(r"^(?:Garbage|Major|Minor) Collection\b")
_Z_CAPACITY = re.compile(rf"^Capacity:\s+{_SIZE} \(")
_Z_LIVE = re.compile(rf"^Live:\s+-\s+{_SIZE} \(")
_G1_CYCLE = re.compile(rf"^Concurrent (?:Mark|Undo) Cycle(?: {_MS})?$")
_G1_CYCLE_PREFIX = re.compile(r"^Concurrent (?:Mark|Undo) Cycle\b")
_SHEN_CLEANUP = re.compile(rf"^Concurrent cleanup(?: {_SIZE}->{_SIZE}\({_SIZE}\) {_MS})?$")
_METASPACE = re.compile(rf"^Metaspace: {_SIZE}(?:\({_SIZE}\))?->{_SIZE}(?:\({_SIZE}\))?(?:\s|$)")
_METASPACE_Z = re.compile(rf"^Metaspace: {_SIZE} used, {_SIZE} committed, {_SIZE} reserved$")
_USING = re.compile(r"^(?:Using|Initializing) (.+?)$")
_CPUS = re.compile(r"^CPUs: (\d{1,7}) total, (\d{1,7}) available$")
_CAPACITY_INIT = re.compile(rf"^(?:Heap )?(Min|Initial|Max) Capacity: {_SIZE}$")
_REGION = re.compile(rf"^Heap [Rr]egion [Ss]ize: {_SIZE}$")
_WORKERS = re.compile(r"^(?:Parallel|GC) Workers: (\d{1,7})\b")
_MEMORY = re.compile(rf"^Memory: {_SIZE}$")
_VERSION = re.compile(r"^Version: (\S+)")

_COLLECTORS: Final[dict[str, CollectorName]] = {
    "G1": "G1",
    "Parallel": "Parallel",
    "Serial": "Serial",
    "Shenandoah": "Shenandoah",
    "The Z Garbage Collector": "ZGC",
    "ZGC": "ZGC",
}
_G1_YOUNG_TYPES: Final = frozenset({"Normal", "Concurrent Start", "Prepare Mixed", "Mixed"})
_PAUSE_KINDS: Final[dict[str, PauseKind]] = {
    "young": "young",
    "initial mark": "young",  # JDK <= 11 G1: a young pause that starts concurrent marking
    "full": "full",
    "degenerated gc": "degenerated",
    "remark": "remark",
    "cleanup": "cleanup",
    "init mark": "init-mark",
    "final mark": "final-mark",
    "init update refs": "init-update-refs",
    "final update refs": "final-update-refs",
    "mark start": "mark-start",
    "mark end": "mark-end",
    "relocate start": "relocate-start",
}
_SHENANDOAH_KINDS: Final = frozenset(
    {"degenerated", "init-mark", "final-mark", "init-update-refs", "final-update-refs"}
)
_ZGC_KINDS: Final = frozenset({"mark-start", "mark-end", "relocate-start"})
_EVENT_KEYWORDS: Final = ("Pause ", "Concurrent ", "Garbage Collection ", "Metaspace: ")


def parse_size(number: str, unit: str) -> int:
    """``("34", "M")`` → 35651584: HotSpot prints sizes with binary K/M/G/T suffixes."""
    return int(number) * _UNITS[unit]


@dataclass(frozen=True, slots=True)
class LogDecorations:
    """What the ``[...]`` prefix of one log line says: when, how important, which tags."""

    uptime_seconds: float | None
    timestamp: float | None
    level: str | None
    tags: tuple[str, ...]


def _parse_iso(text: str) -> float:
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:  # no offset printed: take it as UTC rather than guess
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def split_decorations(line: str) -> tuple[LogDecorations, str] | None:
    """Split ``[0.043s][info][gc,start] GC(0) ...`` into decorations and the message.

    Returns None when the line has no complete decoration prefix followed by a space (a
    truncated or foreign line). Unknown decorations (pid, tid, hostname) are skipped.
    """
    position = 0
    values: list[str] = []
    while position < len(line) and line[position] == "[":
        match = _DECORATION.match(line, position)
        if match is None:
            return None
        values.append(match.group(1).strip())
        position = match.end()
    if not values or line[position : position + 1] != " ":
        return None  # the JVM always writes a space after the decorations
    found: dict[str, Any] = {}
    for value in values:
        _classify_decoration(value, found)
    decorations = LogDecorations(
        uptime_seconds=found.get("uptime"),
        timestamp=found.get("timestamp"),
        level=found.get("level"),
        tags=found.get("tags", ()),
    )
    return decorations, line[position:].strip()


def _classify_decoration(value: str, found: dict[str, Any]) -> None:
    """Put one decoration's meaning into ``found`` (uptime, timestamp, level or tags)."""
    if (match := _UPTIME_S.match(value)) is not None:
        found["uptime"] = float(match.group(1))
    elif (match := _INTEGER_UNIT.match(value)) is not None:
        number, unit = int(match.group(1)), match.group(2)
        scale, epoch_floor = (1000, _TIMEMILLIS_FLOOR) if unit == "ms" else (1e9, _TIMENANOS_FLOOR)
        found["timestamp" if number >= epoch_floor else "uptime"] = number / scale
    elif _ISO_TIME.match(value) is not None:
        found["timestamp"] = _parse_iso(value)
    elif value in _LEVELS:
        found["level"] = value
    elif _TAGS.match(value) is not None and not value.isdigit():
        found["tags"] = tuple(value.split(","))


@dataclass(frozen=True, slots=True)
class GcPause:
    """One stop-the-world pause: the application stood still for ``duration_seconds``."""

    uptime_seconds: float | None
    timestamp: float | None
    gc_id: int
    kind: PauseKind
    name: str
    cause: str | None
    duration_seconds: float
    heap_before_bytes: int | None = None
    heap_after_bytes: int | None = None
    heap_capacity_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class GcCycleEnd:
    """The end of a concurrent cycle (G1 marking, a ZGC collection, Shenandoah cleanup).

    ``duration_seconds`` is wall time mostly spent concurrently (not a pause); heap numbers
    are there when the collector prints them; ``live_bytes`` is ZGC's marked live data.
    """

    uptime_seconds: float | None
    timestamp: float | None
    gc_id: int
    name: str
    cause: str | None
    duration_seconds: float | None
    heap_before_bytes: int | None = None
    heap_after_bytes: int | None = None
    heap_capacity_bytes: int | None = None
    live_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class MetaspaceUsage:
    """Metaspace used and committed after a collection (class metadata, outside the heap)."""

    uptime_seconds: float | None
    timestamp: float | None
    gc_id: int | None
    used_bytes: int
    committed_bytes: int | None


@dataclass(frozen=True, slots=True)
class JvmStart:
    """A JVM announced its collector: a new JVM (or a restart) writes to this log."""

    uptime_seconds: float | None
    timestamp: float | None
    collector: CollectorName


GcEvent = GcPause | GcCycleEnd | MetaspaceUsage | JvmStart


@dataclass(slots=True)
class GcLogInit:
    """What the JVM said about itself at start (``Using G1``, ``gc,init`` lines)."""

    collector: CollectorName | None = None
    version: str | None = None
    cpus_total: int | None = None
    cpus_available: int | None = None
    memory_bytes: int | None = None
    heap_min_bytes: int | None = None
    heap_initial_bytes: int | None = None
    heap_max_bytes: int | None = None
    region_size_bytes: int | None = None
    parallel_workers: int | None = None


def _paren_groups(text: str) -> tuple[str, list[str]]:
    """``"Young (Normal) (G1 Evacuation Pause)"`` → ``("Young", ["Normal", "G1 ..."])``."""
    head_end = text.find(" (")
    head = text if head_end < 0 else text[:head_end]
    groups: list[str] = []
    depth = 0
    start = 0
    for index, char in enumerate(text):
        if char == "(":
            if depth == 0:
                start = index + 1
            depth += 1
        elif char == ")" and depth > 0:
            depth -= 1
            if depth == 0:
                groups.append(text[start:index])
    return head.strip(), groups


@dataclass(slots=True)
class _CycleNotes:
    """Per-GC-id facts printed before the line that ends the collection."""

    cause: str | None = None
    capacity_bytes: int | None = None
    live_bytes: int | None = None


@dataclass(slots=True)
class GcLogParser:
    """Stateful line parser: feed lines in order, get events; never raises on bad input.

    State is small: the init facts, the last Shenandoah trigger, and notes for GC ids whose
    end line has not come yet (bounded: only the newest 64 ids are kept).
    """

    init: GcLogInit = field(default_factory=GcLogInit)
    #: lines that could not be parsed (truncated, malformed, no decorations)
    bad_lines: int = 0
    #: lines fed so far
    lines: int = 0
    _trigger: str | None = None
    _notes: dict[int, _CycleNotes] = field(default_factory=dict)

    def feed_lines(self, lines: Iterable[str]) -> list[GcEvent]:
        """Parse many lines; the events in order."""
        events: list[GcEvent] = []
        for line in lines:
            events.extend(self.feed(line))
        return events

    def feed(self, line: str) -> list[GcEvent]:
        """Parse one line (with or without its newline); zero or more events."""
        self.lines += 1
        text = line.rstrip("\r\n")
        if not text.strip():
            return []
        try:
            events = self._parse(text)
        except (ValueError, IndexError, KeyError, OverflowError) as error:
            log.debug("bad GC log line %r: %s", text[:200], error)
            events = None
        if events is None:
            self.bad_lines += 1
            return []
        return events

    def _note(self, gc_id: int) -> _CycleNotes:
        notes = self._notes.get(gc_id)
        if notes is None:
            notes = self._notes[gc_id] = _CycleNotes()
            while len(self._notes) > 64:
                del self._notes[next(iter(self._notes))]
        return notes

    def _parse(self, text: str) -> list[GcEvent] | None:
        """Events for one line, ``[]`` for a line of no interest, None for a bad line."""
        split = split_decorations(text)
        if split is None:
            return None
        decorations, message = split
        gc_id_match = _GC_ID.match(message)
        if gc_id_match is None:
            # "GC(12" or "GC(12)" with nothing after: cut
            return None if message.startswith("GC(") else self._parse_global(decorations, message)
        gc_id = int(gc_id_match.group(1))
        body = _GENERATION.sub("", message[gc_id_match.end() :].strip(), count=1)
        # an event we cannot place in time is useless for rates: as bad as a cut keyword
        timeless = decorations.uptime_seconds is None and decorations.timestamp is None
        if any(keyword.startswith(body) for keyword in _EVENT_KEYWORDS) or (
            timeless and body.startswith(("Pause ", "Concurrent", "Garbage"))
        ):
            return None
        handler = self._handler_for(body)
        if handler is None or timeless:
            self._note_table_row(gc_id, body)
            return []
        return handler(decorations, gc_id, body)

    def _note_table_row(self, gc_id: int, body: str) -> None:
        """ZGC's heap table rows: capacity and live data, used when the cycle ends."""
        if (match := _Z_CAPACITY.match(body)) is not None:
            self._note(gc_id).capacity_bytes = parse_size(match.group(1), match.group(2))
        elif (match := _Z_LIVE.match(body)) is not None:
            self._note(gc_id).live_bytes = parse_size(match.group(1), match.group(2))

    def _handler_for(
        self, body: str
    ) -> Callable[[LogDecorations, int, str], list[GcEvent] | None] | None:
        """The method that parses a GC-id line of this shape, if it is an event line."""
        if body.startswith("Pause "):
            return self._pause
        if _Z_CYCLE_PREFIX.match(body) is not None:
            return self._z_cycle
        if _G1_CYCLE_PREFIX.match(body) is not None:
            return self._g1_cycle
        if body.startswith("Concurrent cleanup"):
            return self._shenandoah_cleanup
        if body.startswith("Metaspace:"):
            return self._metaspace
        return None

    def _pause(self, deco: LogDecorations, gc_id: int, body: str) -> list[GcEvent] | None:
        match = _PAUSE_END.match(body)
        if match is None:
            return [] if _PAUSE_START.match(body) is not None else None
        name = match.group(1)
        head, groups = _paren_groups(name)
        kind = _PAUSE_KINDS.get(head.lower(), "other")
        cause: str | None = None
        if kind == "young" and groups and groups[0] in _G1_YOUNG_TYPES:
            if groups[0] == "Mixed":
                kind = "mixed"
            cause = groups[1] if len(groups) > 1 else None
        elif kind in _SHENANDOAH_KINDS:
            cause = self._trigger
        elif kind in _ZGC_KINDS:
            cause = self._notes[gc_id].cause if gc_id in self._notes else None
        elif groups:
            cause = groups[-1]
        before = after = capacity = None
        if match.group(2) is not None:
            before = parse_size(match.group(2), match.group(3))
            after = parse_size(match.group(4), match.group(5))
            capacity = parse_size(match.group(6), match.group(7))
        return [
            GcPause(
                uptime_seconds=deco.uptime_seconds,
                timestamp=deco.timestamp,
                gc_id=gc_id,
                kind=kind,
                name=name,
                cause=cause,
                duration_seconds=float(match.group(8)) / 1000,
                heap_before_bytes=before,
                heap_after_bytes=after,
                heap_capacity_bytes=capacity,
            )
        ]

    def _z_cycle(self, deco: LogDecorations, gc_id: int, body: str) -> list[GcEvent] | None:
        match = _Z_CYCLE_END.match(body)
        if match is None:
            start = _Z_CYCLE_START.match(body)
            if start is None:
                return None
            self._note(gc_id).cause = start.group(1)
            return []
        notes = self._notes.pop(gc_id, _CycleNotes())
        seconds = match.group(6)
        return [
            GcCycleEnd(
                uptime_seconds=deco.uptime_seconds,
                timestamp=deco.timestamp,
                gc_id=gc_id,
                name=body.split(" (", 1)[0],
                cause=match.group(1),
                duration_seconds=None if seconds is None else float(seconds),
                heap_before_bytes=parse_size(match.group(2), match.group(3)),
                heap_after_bytes=parse_size(match.group(4), match.group(5)),
                heap_capacity_bytes=notes.capacity_bytes or self.init.heap_max_bytes,
                live_bytes=notes.live_bytes,
            )
        ]

    def _g1_cycle(self, deco: LogDecorations, gc_id: int, body: str) -> list[GcEvent] | None:
        match = _G1_CYCLE.match(body)
        if match is None:
            return None
        if match.group(1) is None:
            return []  # the cycle's start line
        return [
            GcCycleEnd(
                uptime_seconds=deco.uptime_seconds,
                timestamp=deco.timestamp,
                gc_id=gc_id,
                name=body.rsplit(" ", 1)[0],
                cause=None,
                duration_seconds=float(match.group(1)) / 1000,
            )
        ]

    def _shenandoah_cleanup(
        self, deco: LogDecorations, gc_id: int, body: str
    ) -> list[GcEvent] | None:
        match = _SHEN_CLEANUP.match(body)
        if match is None:
            return None if body != "Concurrent cleanup" else []
        if match.group(1) is None:
            return []
        return [
            GcCycleEnd(
                uptime_seconds=deco.uptime_seconds,
                timestamp=deco.timestamp,
                gc_id=gc_id,
                name="Concurrent cleanup",
                cause=self._trigger,
                duration_seconds=float(match.group(7)) / 1000,
                heap_before_bytes=parse_size(match.group(1), match.group(2)),
                heap_after_bytes=parse_size(match.group(3), match.group(4)),
                heap_capacity_bytes=parse_size(match.group(5), match.group(6)),
            )
        ]

    def _metaspace(
        self, deco: LogDecorations, gc_id: int | None, body: str
    ) -> list[GcEvent] | None:
        if (match := _METASPACE.match(body)) is not None:
            used = parse_size(match.group(5), match.group(6))
            committed = (
                None if match.group(7) is None else parse_size(match.group(7), match.group(8))
            )
            if match.group(3) is None and match.group(7) is not None:
                committed = None  # JDK 11 "used->used(reserved)": the bracket is reserved
        elif (match := _METASPACE_Z.match(body)) is not None:
            used = parse_size(match.group(1), match.group(2))
            committed = parse_size(match.group(3), match.group(4))
        else:
            return None
        if deco.uptime_seconds is None and deco.timestamp is None:
            return []
        return [MetaspaceUsage(deco.uptime_seconds, deco.timestamp, gc_id, used, committed)]

    def _parse_global(self, deco: LogDecorations, message: str) -> list[GcEvent] | None:
        """Lines without a GC id: init facts, triggers, metaspace of Shenandoah."""
        if message.startswith("Trigger: "):
            self._trigger = message[len("Trigger: ") :].split(". ", 1)[0].strip() or None
            return []
        if message.startswith("Metaspace:"):
            return self._metaspace(deco, None, message)
        if message.startswith(("Pause ", "Concurrent cleanup ")):
            return None  # these always carry a GC id; without one the line is damaged
        if (match := _USING.match(message)) is not None:
            return self._announced(deco, match.group(1), message)
        self._parse_init(message)
        return []

    def _announced(self, deco: LogDecorations, name: str, message: str) -> list[GcEvent]:
        """``Using G1`` / ``Initializing The Z Garbage Collector``: a JVM (re)starts here."""
        collector = _COLLECTORS.get(name)
        if collector is None:
            return []  # "Using 2 workers ..." and the like
        if not message.startswith("Initializing") and self.init.collector == collector:
            return []  # ZGC's "Using ..." after its "Initializing ..."
        if self.init.collector is not None:  # a new JVM writes to this log
            self.init = GcLogInit()
            self._trigger = None
            self._notes.clear()
        self.init.collector = collector
        return [JvmStart(deco.uptime_seconds, deco.timestamp, collector)]

    def _parse_init(self, message: str) -> None:
        """Fill :attr:`init` from one ``gc,init`` (or JDK 11 ``gc,heap``) line, if it is one."""
        init = self.init
        if (match := _CPUS.match(message)) is not None:
            init.cpus_total, init.cpus_available = int(match.group(1)), int(match.group(2))
        elif (match := _CAPACITY_INIT.match(message)) is not None:
            size = parse_size(match.group(2), match.group(3))
            which = match.group(1)
            if which == "Min":
                init.heap_min_bytes = size
            elif which == "Initial":
                init.heap_initial_bytes = size
            else:
                init.heap_max_bytes = size
        elif (match := _REGION.match(message)) is not None:
            init.region_size_bytes = parse_size(match.group(1), match.group(2))
        elif (match := _WORKERS.match(message)) is not None:
            init.parallel_workers = int(match.group(1))
        elif (match := _MEMORY.match(message)) is not None:
            init.memory_bytes = parse_size(match.group(1), match.group(2))
        elif (match := _VERSION.match(message)) is not None:
            init.version = match.group(1)


# --------------------------------------------------------------------------- aggregation


@dataclass(frozen=True, slots=True)
class GcIntervalSummary:
    """What one scrape interval of GC log says, in jvm-sample terms (None = not seen)."""

    interval_seconds: float
    collector: CollectorName | None
    gc_overhead_ratio: float
    gc_pause_seconds: float
    gc_pause_max_seconds: float | None
    gc_count: int
    full_gc_count: int
    heap_used_after_gc_bytes: int | None
    heap_committed_bytes: int | None
    heap_max_bytes: int | None
    live_set_bytes: int | None
    allocation_rate_bytes_per_second: float | None
    metaspace_used_bytes: int | None

    def sample_fields(self) -> dict[str, Any]:
        """The jvm-sample fields this summary fills (without container and timestamp)."""
        return {
            "interval_seconds": self.interval_seconds,
            "collector": self.collector,
            "gc_overhead_ratio": self.gc_overhead_ratio,
            "gc_pause_seconds": self.gc_pause_seconds,
            "gc_pause_max_seconds": self.gc_pause_max_seconds,
            "gc_count": self.gc_count,
            "full_gc_count": self.full_gc_count,
            "heap_used_after_gc_bytes": self.heap_used_after_gc_bytes,
            "heap_committed_bytes": self.heap_committed_bytes,
            "heap_max_bytes": self.heap_max_bytes,
            "live_set_bytes": self.live_set_bytes,
            "allocation_rate_bytes_per_second": self.allocation_rate_bytes_per_second,
            "metaspace_used_bytes": self.metaspace_used_bytes,
        }


def _event_time(event: GcEvent) -> float | None:
    return event.uptime_seconds if event.uptime_seconds is not None else event.timestamp


@dataclass(slots=True)
class IntervalAggregator:
    """Turns a stream of GC events into one summary per interval.

    Per interval: pause sum, max and count, full collections, the largest heap after a
    collection. Carried across intervals (they describe the JVM, not the interval): the
    live set (heap after the last mixed/full/degenerated pause, G1 remark/cleanup, or
    concurrent cycle end), heap committed, metaspace, and the last heap-after used for the
    allocation rate, which is ``sum(heap before GC - heap after the previous GC)`` over the
    JVM uptime between them. A JVM restart (uptime going backwards, or a new ``Using ...``
    line) drops the carried values, since they described the previous JVM.
    """

    collector: CollectorName | None = None
    live_set_bytes: int | None = None
    heap_committed_bytes: int | None = None
    metaspace_used_bytes: int | None = None
    _pause_seconds: float = 0.0
    _pause_max: float | None = None
    _gc_ids: set[int] = field(default_factory=set)
    _full_ids: set[int] = field(default_factory=set)
    # Collections already counted in an earlier interval: a G1 concurrent cycle's
    # Remark and Cleanup share its id and may fall into different intervals.
    _counted_ids: set[int] = field(default_factory=set)
    _heap_after_max: int | None = None
    _allocated_bytes: int = 0
    _allocation_span: float = 0.0
    _previous_after: tuple[int, float] | None = None
    _last_time: float | None = None

    def add_all(self, events: Iterable[GcEvent]) -> None:
        """Add events in log order."""
        for event in events:
            self.add(event)

    def _restart(self) -> None:
        self.live_set_bytes = None
        self.heap_committed_bytes = None
        self.metaspace_used_bytes = None
        self._previous_after = None
        self._last_time = None
        self._counted_ids = set()  # a new JVM numbers its collections from 0 again

    def add(self, event: GcEvent) -> None:
        """Account one event to the open interval."""
        moment = _event_time(event)
        if isinstance(event, JvmStart):
            self._restart()
            self.collector = event.collector
            return
        if moment is not None:
            if self._last_time is not None and moment < self._last_time - 1e-3:
                self._restart()
            self._last_time = moment
        if isinstance(event, MetaspaceUsage):
            self.metaspace_used_bytes = event.used_bytes
            return
        self._gc_ids.add(event.gc_id)
        old = True  # a concurrent cycle's end, unless a pause says otherwise
        if isinstance(event, GcPause):
            self._pause_seconds += event.duration_seconds
            self._pause_max = max(self._pause_max or 0.0, event.duration_seconds)
            if event.kind in FULL_PAUSE_KINDS:
                self._full_ids.add(event.gc_id)
            old = event.kind in OLD_PAUSE_KINDS or event.kind in {"remark", "cleanup"}
        self._account_heap(event, moment, old=old)

    def _account_heap(
        self, event: GcPause | GcCycleEnd, moment: float | None, *, old: bool
    ) -> None:
        if event.heap_capacity_bytes is not None:
            self.heap_committed_bytes = event.heap_capacity_bytes
        if isinstance(event, GcCycleEnd) and event.live_bytes is not None:
            self.live_set_bytes = event.live_bytes
        if event.heap_after_bytes is None:
            return
        after = event.heap_after_bytes
        self._heap_after_max = max(self._heap_after_max or 0, after)
        if old and not (isinstance(event, GcCycleEnd) and event.live_bytes is not None):
            self.live_set_bytes = after
        if event.heap_before_bytes is not None and moment is not None:
            if self._previous_after is not None:
                previous_bytes, previous_time = self._previous_after
                self._allocated_bytes += max(0, event.heap_before_bytes - previous_bytes)
                self._allocation_span += max(0.0, moment - previous_time)
            self._previous_after = (after, moment)

    def close(
        self, interval_seconds: float, *, heap_max_bytes: int | None = None
    ) -> GcIntervalSummary:
        """End the interval of ``interval_seconds`` wall time; return it and start the next.

        GC overhead is pause time / ``interval_seconds``, capped at 1 (pauses logged late
        can slightly exceed a short interval).
        """
        if interval_seconds <= 0:
            raise ValueError(f"interval_seconds must be > 0, got {interval_seconds}")
        allocation_rate = (
            self._allocated_bytes / self._allocation_span if self._allocation_span > 0 else None
        )
        summary = GcIntervalSummary(
            interval_seconds=interval_seconds,
            collector=self.collector,
            gc_overhead_ratio=min(1.0, self._pause_seconds / interval_seconds),
            gc_pause_seconds=min(self._pause_seconds, 86_400.0),
            gc_pause_max_seconds=self._pause_max,
            gc_count=len(self._gc_ids - self._counted_ids),
            full_gc_count=len(self._full_ids),
            heap_used_after_gc_bytes=self._heap_after_max,
            heap_committed_bytes=self.heap_committed_bytes,
            heap_max_bytes=heap_max_bytes,
            live_set_bytes=self.live_set_bytes,
            allocation_rate_bytes_per_second=allocation_rate,
            metaspace_used_bytes=self.metaspace_used_bytes,
        )
        self._pause_seconds = 0.0
        self._pause_max = None
        self._counted_ids |= self._gc_ids
        if self._counted_ids:  # ids grow; keep only a recent window, memory stays bounded
            newest = max(self._counted_ids)
            self._counted_ids = {i for i in self._counted_ids if i > newest - 1024}
        self._gc_ids = set()
        self._full_ids = set()
        self._heap_after_max = None
        self._allocated_bytes = 0
        self._allocation_span = 0.0
        return summary


# --------------------------------------------------------------------------- tailing

_READ_CHUNK: Final = 1 << 20
_FileId = tuple[int, int]


def _file_id(stat: os.stat_result) -> _FileId:
    return (stat.st_dev, stat.st_ino)


class GcLogTailer:
    """Follows one GC log file across the JVM's rotation; every complete line once.

    How rotation is survived: the open file descriptor keeps pointing at the file it was
    opened on, whatever its name becomes. Each :meth:`read_lines` drains it; when the path
    now names another file (rotation: the JVM renamed ``gc.log`` to ``gc.log.NN`` and opened
    a new one) the old descriptor is drained a last time, archived siblings that appeared
    and were never read (several rotations between two reads) are read whole, oldest first,
    and then the new file from its start. A file that shrank under the same inode was
    truncated (``>`` by an operator, or a JVM restart without rotation): reading restarts at
    offset 0. A trailing line without its newline is held back until it is complete (or the
    file it is in was rotated away, then it is returned as it is).

    ``start_at_end`` skips what the current file holds at the first read (e.g. an agent
    started next to a long-running JVM); archives present at the first read are never read.
    """

    def __init__(self, path: Path, *, start_at_end: bool = False) -> None:
        self.path = path
        self.start_at_end = start_at_end
        self._file: BinaryIO | None = None
        self._file_id: _FileId | None = None
        self._partial = b""
        self._seen: set[_FileId] = set()
        self._started = False
        #: rotations followed and truncations noticed, for metrics and tests
        self.rotations = 0
        self.truncations = 0

    def close(self) -> None:
        """Close the open file, if any."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> GcLogTailer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _siblings(self) -> list[tuple[Path, os.stat_result]]:
        prefix = self.path.name + "."
        found: list[tuple[Path, os.stat_result]] = []
        try:
            entries = list(os.scandir(self.path.parent))
        except OSError:
            return found
        for entry in entries:
            suffix = entry.name[len(prefix) :]
            if entry.name.startswith(prefix) and suffix.isdigit():
                try:
                    found.append((Path(entry.path), entry.stat()))
                except OSError:
                    continue  # deleted by the JVM's filecount limit meanwhile
        return found

    def _lines(self, data: bytes, *, final: bool) -> list[str]:
        data = self._partial + data
        *complete, self._partial = data.split(b"\n")
        if final and self._partial:
            complete.append(self._partial)
            self._partial = b""
        return [raw.decode("utf-8", errors="replace").rstrip("\r") for raw in complete]

    def _drain(self) -> bytes:
        assert self._file is not None
        parts: list[bytes] = []
        while chunk := self._file.read(_READ_CHUNK):
            parts.append(chunk)
        return b"".join(parts)

    def _open_current(self) -> bool:
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return False
        self._file = handle
        self._file_id = _file_id(os.fstat(handle.fileno()))
        self._seen.add(self._file_id)
        return True

    def _skip_to_end(self) -> None:
        assert self._file is not None
        self._file.seek(0, os.SEEK_END)

    def read_lines(self) -> list[str]:
        """Every complete line written since the previous call, in order."""
        if self._file is None:
            if self._started:
                # the file appeared, or reappeared after a rotation: archives made meanwhile
                # come first
                return self._follow_rotation()
            self._started = True
            self._seen.update(_file_id(stat) for _, stat in self._siblings())
            if not self._open_current():
                return []
            if self.start_at_end:
                self._skip_to_end()
        lines = self._lines(self._drain(), final=False)
        try:
            current = self.path.stat()
        except FileNotFoundError:
            return lines  # between the JVM's rename and its new file: next call
        if _file_id(current) != self._file_id:
            lines += self._lines(self._drain(), final=True)
            self.close()
            self.rotations += 1
            lines += self._follow_rotation()
        elif self._file is not None and current.st_size < self._file.tell():
            self.truncations += 1
            self._file.seek(0)
            self._partial = b""
            lines += self._lines(self._drain(), final=False)
        return lines

    def _follow_rotation(self) -> list[str]:
        """After the old file is drained: unseen archives (oldest first), then the new file."""
        if not self._open_current():
            return []
        siblings = self._siblings()
        present = {_file_id(stat) for _, stat in siblings}
        assert self._file_id is not None
        present.add(self._file_id)
        self._seen &= present  # forget deleted files, so a reused inode is not skipped
        lines: list[str] = []
        unseen = [
            (stat.st_mtime_ns, path, stat)
            for path, stat in siblings
            if _file_id(stat) not in self._seen
        ]
        for _, path, stat in sorted(unseen):
            self._seen.add(_file_id(stat))
            try:
                data = path.read_bytes()
            except OSError:
                continue  # deleted by the filecount limit before we got to it
            lines += self._lines(data, final=True)
        lines += self._lines(self._drain(), final=False)
        return lines
