"""GC-log parsing, aggregation and tailing, against real JVM logs.

The fixtures in tests/fixtures/gclogs/ were written by real JVMs (make_fixtures.sh; the
README there has each command). Every value asserted below was read off the quoted log
line; the counts were cross-checked with grep. A JVM is started only by the rotation test.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.jvm_gclog import (
    GcCycleEnd,
    GcEvent,
    GcLogParser,
    GcLogTailer,
    GcPause,
    IntervalAggregator,
    JvmStart,
    MetaspaceUsage,
    parse_size,
    split_decorations,
)

FIXTURES = Path(__file__).parent / "fixtures" / "gclogs"
MIB = 1 << 20
LOGS = sorted(path.name for path in FIXTURES.glob("*.log"))


def _lines(name: str) -> list[str]:
    return (FIXTURES / name).read_text(encoding="utf-8").splitlines()


def _parse(name: str) -> tuple[GcLogParser, list[GcEvent]]:
    parser = GcLogParser()
    return parser, parser.feed_lines(_lines(name))


def _pauses(events: list[GcEvent]) -> list[GcPause]:
    return [event for event in events if isinstance(event, GcPause)]


def _pause(events: list[GcEvent], gc_id: int, kind: str) -> GcPause:
    [found] = [p for p in _pauses(events) if p.gc_id == gc_id and p.kind == kind]
    return found


# --------------------------------------------------------------------------- real logs


def test_every_collector_has_a_fixture() -> None:
    assert LOGS == [
        "g1-time-uptime.log",
        "g1.log",
        "parallel.log",
        "serial.log",
        "shenandoah.log",
        "zgc.log",
    ]


@pytest.mark.parametrize(
    ("name", "collector"),
    [
        ("g1.log", "G1"),
        ("g1-time-uptime.log", "G1"),
        ("parallel.log", "Parallel"),
        ("serial.log", "Serial"),
        ("zgc.log", "ZGC"),
        ("shenandoah.log", "Shenandoah"),
    ],
)
def test_real_logs_parse_without_bad_lines_and_give_the_init_facts(
    name: str, collector: str
) -> None:
    parser, events = _parse(name)
    assert parser.bad_lines == 0
    assert parser.lines == len(_lines(name))
    # every fixture ran with -Xms32m -Xmx64m -XX:ActiveProcessorCount=2 on JDK 17.0.15
    assert parser.init.collector == collector
    assert parser.init.heap_min_bytes == 32 * MIB
    assert parser.init.heap_initial_bytes == 32 * MIB
    assert parser.init.heap_max_bytes == 64 * MIB
    assert (parser.init.cpus_total, parser.init.cpus_available) == (2, 2)
    assert parser.init.version == "17.0.15+6-Debian-1deb12u1"
    assert isinstance(events[0], JvmStart)
    assert events[0].collector == collector


def _grep_pause_ends(name: str) -> int:
    """Independent count: lines whose message is a pause with a duration."""
    return sum(
        1 for line in _lines(name) if re.search(r"\] GC\(\d+\) (?:[YO]: )?Pause .*ms$", line)
    )


@pytest.mark.parametrize(
    ("name", "kinds"),
    [
        ("g1.log", {"young": 27, "mixed": 1, "remark": 5, "cleanup": 5, "full": 1}),
        ("parallel.log", {"young": 21, "full": 3}),
        ("serial.log", {"young": 31, "full": 3}),
        ("zgc.log", {"mark-start": 7, "mark-end": 7, "relocate-start": 7}),
        (
            "shenandoah.log",
            {
                "init-mark": 19,
                "final-mark": 18,
                "init-update-refs": 17,
                "final-update-refs": 17,
                "degenerated": 1,
            },
        ),
    ],
)
def test_pause_counts_by_kind(name: str, kinds: dict[str, int]) -> None:
    _, events = _parse(name)
    pauses = _pauses(events)
    counted: dict[str, int] = {}
    for pause in pauses:
        counted[pause.kind] = counted.get(pause.kind, 0) + 1
    assert counted == kinds
    assert len(pauses) == _grep_pause_ends(name)


def test_g1_mixed_pause_read_off_the_log() -> None:
    # g1.log:470  GC(27) Pause Young (Mixed) (G1 Evacuation Pause) 46M->39M(64M) 0.502ms
    _, events = _parse("g1.log")
    mixed = _pause(events, 27, "mixed")
    assert mixed.uptime_seconds == pytest.approx(0.329)
    assert mixed.name == "Young (Mixed) (G1 Evacuation Pause)"
    assert mixed.cause == "G1 Evacuation Pause"
    assert mixed.duration_seconds == pytest.approx(0.000502)
    assert (mixed.heap_before_bytes, mixed.heap_after_bytes, mixed.heap_capacity_bytes) == (
        46 * MIB,
        39 * MIB,
        64 * MIB,
    )
    # g1.log:579  GC(34) Pause Full (System.gc()) 49M->33M(64M) 2.684ms
    full = _pause(events, 34, "full")
    assert full.cause == "System.gc()"
    assert full.duration_seconds == pytest.approx(0.002684)
    assert (full.heap_before_bytes, full.heap_after_bytes) == (49 * MIB, 33 * MIB)
    # g1.log:499  GC(29) Pause Remark 45M->39M(64M) 0.251ms ... :524 Concurrent Mark Cycle 3.192ms
    remark = _pause(events, 29, "remark")
    assert (remark.heap_before_bytes, remark.heap_after_bytes) == (45 * MIB, 39 * MIB)
    [cycle] = [e for e in events if isinstance(e, GcCycleEnd) and e.gc_id == 29]
    assert cycle.name == "Concurrent Mark Cycle"
    assert cycle.duration_seconds == pytest.approx(0.003192)


def test_parallel_and_serial_full_pauses_read_off_the_log() -> None:
    # parallel.log:97  GC(11) Pause Full (Ergonomics) 32M->16M(47M) 11.687ms
    _, events = _parse("parallel.log")
    full = _pause(events, 11, "full")
    assert full.cause == "Ergonomics"
    assert full.duration_seconds == pytest.approx(0.011687)
    assert (full.heap_before_bytes, full.heap_after_bytes, full.heap_capacity_bytes) == (
        32 * MIB,
        16 * MIB,
        47 * MIB,
    )
    # serial.log:215  GC(31) Pause Full (Allocation Failure) 30M->17M(42M) 9.027ms
    _, events = _parse("serial.log")
    full = _pause(events, 31, "full")
    assert full.cause == "Allocation Failure"
    assert full.duration_seconds == pytest.approx(0.009027)
    assert (full.heap_after_bytes, full.heap_capacity_bytes) == (17 * MIB, 42 * MIB)


def test_zgc_cycle_with_its_pauses_capacity_and_live_data() -> None:
    # zgc.log:64   GC(1) Pause Mark Start 0.006ms
    # zgc.log:91   GC(1)  Capacity:       64M (100%) ...
    # zgc.log:94   GC(1)      Live:         -                12M (20%) ...
    # zgc.log:98   GC(1) Garbage Collection (Allocation Stall) 64M(100%)->22M(34%)
    _, events = _parse("zgc.log")
    mark_start = _pause(events, 1, "mark-start")
    assert mark_start.duration_seconds == pytest.approx(0.000006)
    assert mark_start.cause == "Allocation Stall"
    assert mark_start.heap_after_bytes is None
    [cycle] = [e for e in events if isinstance(e, GcCycleEnd) and e.gc_id == 1]
    assert cycle.cause == "Allocation Stall"
    assert (cycle.heap_before_bytes, cycle.heap_after_bytes) == (64 * MIB, 22 * MIB)
    assert cycle.heap_capacity_bytes == 64 * MIB
    assert cycle.live_bytes == 12 * MIB


def test_shenandoah_degenerated_pause_takes_its_trigger_as_cause() -> None:
    # shenandoah.log:604  Trigger: Handle Allocation Failure
    # shenandoah.log:616  GC(10) Pause Degenerated GC (Outside of Cycle) 58M->36M(64M) 2.701ms
    _, events = _parse("shenandoah.log")
    degenerated = _pause(events, 10, "degenerated")
    assert degenerated.cause == "Handle Allocation Failure"
    assert degenerated.duration_seconds == pytest.approx(0.002701)
    assert (degenerated.heap_before_bytes, degenerated.heap_after_bytes) == (58 * MIB, 36 * MIB)
    # shenandoah.log:84  GC(0) Concurrent cleanup 24M->9M(34M) 0.009ms (the cycle's last)
    cleanups = [e for e in events if isinstance(e, GcCycleEnd) and e.gc_id == 0]
    assert [(c.heap_before_bytes, c.heap_after_bytes) for c in cleanups] == [
        (22 * MIB, 22 * MIB),
        (24 * MIB, 9 * MIB),
    ]
    assert cleanups[-1].heap_capacity_bytes == 34 * MIB


def test_time_decoration_gives_epoch_timestamps() -> None:
    # g1-time-uptime.log:20  [2026-11-26T18:14:13.692+0000][0.038s][info][gc,start    ] GC(0) ...
    _, events = _parse("g1-time-uptime.log")
    first = _pauses(events)[0]
    expected = datetime(2026, 11, 26, 18, 14, 13, 692000, tzinfo=UTC).timestamp()
    assert first.timestamp is not None
    assert first.timestamp == pytest.approx(expected, abs=0.01)
    assert first.uptime_seconds == pytest.approx(0.038, abs=0.002)


def test_metaspace_is_read_from_the_per_gc_lines() -> None:
    # g1.log: "GC(0) Metaspace: 74K(320K)->74K(320K) NonClass: ..." (first collection)
    _, events = _parse("g1.log")
    first = next(e for e in events if isinstance(e, MetaspaceUsage))
    line = next(line for line in _lines("g1.log") if "GC(0) Metaspace:" in line)
    used, committed = re.findall(r"->(\d+)K\((\d+)K\)", line)[0]
    assert (first.used_bytes, first.committed_bytes) == (int(used) * 1024, int(committed) * 1024)


def test_older_jdk_shapes_parse_too() -> None:
    parser = GcLogParser()
    events = parser.feed_lines(
        [
            # JDK 11 G1: metaspace as used->used(reserved), initial-mark pause
            "[1.0s][info][gc] GC(3) Pause Initial Mark (G1 Humongous Allocation) 9M->8M(30M) 2.5ms",
            "[1.1s][info][gc,metaspace] GC(3) Metaspace: 3000K->3000K(1056768K)",
            # JDK 21 generational ZGC
            "[2000ms][info][gc] GC(4) Y: Pause Mark Start 0.010ms",
            "[2100ms][info][gc] GC(4) Major Collection (Warmup) 14M(1%)->8M(1%) 0.020s",
        ]
    )
    assert parser.bad_lines == 0
    young, metaspace, mark_start, cycle = events
    assert isinstance(young, GcPause)
    assert (young.kind, young.cause, young.heap_after_bytes) == (
        "young",
        "G1 Humongous Allocation",
        8 * MIB,
    )
    assert isinstance(metaspace, MetaspaceUsage)
    assert (metaspace.used_bytes, metaspace.committed_bytes) == (3000 * 1024, None)
    assert isinstance(mark_start, GcPause)
    assert (mark_start.kind, mark_start.uptime_seconds) == ("mark-start", 2.0)
    assert isinstance(cycle, GcCycleEnd)
    assert (cycle.duration_seconds, cycle.heap_after_bytes) == (0.02, 8 * MIB)


# --------------------------------------------------------------------------- malformed input


def _event_lines() -> list[str]:
    """Real lines that yield a pause or cycle event, from every fixture."""
    found = []
    for name in LOGS:
        parser = GcLogParser()
        for line in _lines(name):
            if any(isinstance(e, GcPause | GcCycleEnd) for e in parser.feed(line)):
                found.append(line)
    return found


EVENT_LINES = _event_lines()
REAL_LINES = [line for name in LOGS for line in _lines(name)]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(EVENT_LINES), st.data())
def test_a_cut_event_line_never_yields_an_event_and_a_cut_tail_is_counted(
    line: str, data: st.DataObject
) -> None:
    cut = data.draw(st.integers(min_value=0, max_value=len(line) - 1))
    parser = GcLogParser()
    events = parser.feed(line[:cut])
    assert not any(isinstance(e, GcPause | GcCycleEnd) for e in events)
    # cut inside the numbers after the name ("... 6M->1M(34M) 5.3"): always a bad line
    numbers_start = re.search(r" (?=\d)", line[line.index("] ") :])
    assert numbers_start is not None
    if cut > line.index("] ") + numbers_start.end():
        assert parser.bad_lines == 1
    # cut inside the decorations: always bad
    if cut < line.index("] ") + 1:
        assert parser.bad_lines == (1 if cut > 0 else 0)


_JUNK = st.text(alphabet=st.characters(codec="utf-8"), max_size=200)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.one_of(
            _JUNK,
            st.sampled_from(REAL_LINES),
            st.builds(
                lambda p, s: p + s, st.sampled_from(["[1.5s][info][gc] ", "[x][", "GC("]), _JUNK
            ),
            st.builds(
                lambda line, at, junk: line[:at] + junk + line[at:],
                st.sampled_from(REAL_LINES),
                st.integers(min_value=0, max_value=120),
                _JUNK,
            ),
        ),
        max_size=30,
    )
)
def test_no_input_makes_the_parser_raise_and_events_stay_sane(lines: list[str]) -> None:
    parser = GcLogParser()
    aggregator = IntervalAggregator()
    for line in lines:
        events = parser.feed(line)
        aggregator.add_all(events)
        for event in events:
            if isinstance(event, GcPause):
                assert event.duration_seconds >= 0
            if isinstance(event, GcPause | GcCycleEnd):
                sizes = (event.heap_before_bytes, event.heap_after_bytes, event.heap_capacity_bytes)
                assert all(size is None or size >= 0 for size in sizes)
    assert 0 <= parser.bad_lines <= parser.lines == len(lines)
    summary = aggregator.close(10.0)
    assert 0 <= summary.gc_overhead_ratio <= 1
    rate = summary.allocation_rate_bytes_per_second
    assert rate is None or rate >= 0


@pytest.mark.parametrize(
    "line",
    [
        "[0.043s][info][gc] GC(0) Pause Young (Normal) (G1 Evacuation Pause) 6M->1M(34M) 5.3",
        "[0.043s][info][gc          ] GC(0) Pause Young (Normal) (G1 Evac",
        "[0.043s][info][gc          ] GC(0) Pause Young (Normal) (G1 Evacuation Pause) 6M->1M(3",
        "[0.043s][info][gc          ] GC(0) Pau",
        "[0.043s][info][gc          ] GC(",
        "[0.043s][info][gc   ",
        "[0.043s][info][gc]",
        "GC(0) Pause Young (Normal) (G1 Evacuation Pause) 6M->1M(34M) 5.300ms",
        "[0.043s][info][gc] GC(0) Pause Young (Normal) 99999999999999999999M->1M(34M) 5.300ms",
        "[0.043s][info][gc] GC(9) Concurrent cleanup 24M->9M(",
        "[0.043s][info][gc] GC(9) Garbage Collection (Warmup) 56M(88%)->1",
        "[0.043s][info][gc] GC(9) Metaspace: 74K(3",
        "\x00\x01binary",
    ],
)
def test_known_damaged_lines_are_counted_bad(line: str) -> None:
    parser = GcLogParser()
    assert parser.feed(line) == []
    assert parser.bad_lines == 1


def test_uninteresting_lines_are_not_bad() -> None:
    parser = GcLogParser()
    for line in [
        "",
        "[0.042s][info][gc,phases   ] GC(0)   Pre Evacuate Collection Set: 0.1ms",
        "[0.037s][info][gc,start    ] GC(0) Pause Young (Normal) (G1 Evacuation Pause)",
        "[0.186s][info][gc,start    ] GC(19) Pause Full (System.gc())",
        "[1.711s][info][gc,heap,exit] ",
        "[0.043s][info][gc,cpu      ] GC(0) User=0.00s Sys=0.00s Real=0.00s",
    ]:
        assert parser.feed(line) == []
    assert parser.bad_lines == 0


def test_decorations_split_and_size_units() -> None:
    split = split_decorations("[1700000000123ms][12ms][1234][warning][gc,heap] text here")
    assert split is not None
    decorations, message = split
    assert decorations.timestamp == pytest.approx(1_700_000_000.123)
    assert decorations.uptime_seconds == pytest.approx(0.012)
    assert (decorations.level, decorations.tags, message) == (
        "warning",
        ("gc", "heap"),
        "text here",
    )
    assert parse_size("3", "G") == 3 << 30
    assert parse_size("7", "B") == 7


# --------------------------------------------------------------------------- aggregation

_TIMELINE = [
    # uptime 10 s    11 s     12 s: two young pauses then a full one
    "[10.000s][info][gc] Using G1",
    "[10.000s][info][gc] GC(0) Pause Young (Normal) (G1 Evacuation Pause) 100M->20M(200M) 10.000ms",
    "[11.000s][info][gc] GC(1) Pause Young (Normal) (G1 Evacuation Pause) 120M->30M(200M) 20.000ms",
    "[12.000s][info][gc] GC(2) Pause Full (G1 Compaction Pause) 130M->25M(180M) 50.000ms",
    "[12.000s][info][gc,metaspace] GC(2) Metaspace: 1000K(2000K)->900K(2000K) NonClass: x",
]


def test_interval_values_from_a_drawn_timeline() -> None:
    parser = GcLogParser()
    aggregator = IntervalAggregator()
    aggregator.add_all(parser.feed_lines(_TIMELINE))
    summary = aggregator.close(10.0, heap_max_bytes=256 * MIB)
    assert summary.collector == "G1"
    assert summary.gc_pause_seconds == pytest.approx(0.080)
    assert summary.gc_overhead_ratio == pytest.approx(0.008)
    assert summary.gc_pause_max_seconds == pytest.approx(0.050)
    assert (summary.gc_count, summary.full_gc_count) == (3, 1)
    assert summary.heap_used_after_gc_bytes == 30 * MIB
    assert summary.live_set_bytes == 25 * MIB  # after the full collection, not the young ones
    assert summary.heap_committed_bytes == 180 * MIB
    assert summary.heap_max_bytes == 256 * MIB
    # (120 - 20) MiB over 1 s and (130 - 30) MiB over 1 s
    assert summary.allocation_rate_bytes_per_second == pytest.approx(100 * MIB)
    assert summary.metaspace_used_bytes == 900 * 1024

    # the next interval: nothing happened; per-interval values reset, JVM facts carry over
    quiet = aggregator.close(5.0)
    assert (quiet.gc_pause_seconds, quiet.gc_count, quiet.gc_overhead_ratio) == (0.0, 0, 0.0)
    assert quiet.gc_pause_max_seconds is None
    assert quiet.allocation_rate_bytes_per_second is None
    assert quiet.live_set_bytes == 25 * MIB

    # allocation continues from the last heap-after of the previous interval
    aggregator.add_all(
        parser.feed(
            "[14.000s][gc] GC(3) Pause Young (Normal) (G1 Evacuation Pause) 65M->30M(180M) 1ms"
        )
    )
    assert aggregator.close(5.0).allocation_rate_bytes_per_second == pytest.approx(20 * MIB)


def test_overhead_is_capped_at_one_and_a_restart_drops_carried_values() -> None:
    parser = GcLogParser()
    aggregator = IntervalAggregator()
    aggregator.add_all(parser.feed_lines(_TIMELINE))
    assert aggregator.close(0.05).gc_overhead_ratio == 1.0
    # uptime goes back: another JVM writes here now; its first GC has no predecessor
    aggregator.add_all(
        parser.feed(
            "[0.500s][info][gc] GC(0) Pause Young (Normal) (G1 Evacuation Pause) 9M->2M(30M) 1.0ms"
        )
    )
    after_restart = aggregator.close(1.0)
    assert after_restart.live_set_bytes is None
    assert after_restart.allocation_rate_bytes_per_second is None
    assert after_restart.heap_committed_bytes == 30 * MIB
    with pytest.raises(ValueError):
        aggregator.close(0)


def test_whole_real_log_as_one_interval_matches_its_pause_lines() -> None:
    parser, events = _parse("parallel.log")
    aggregator = IntervalAggregator()
    aggregator.add_all(events)
    summary = aggregator.close(10.0, heap_max_bytes=parser.init.heap_max_bytes)
    durations = [
        float(m.group(1)) / 1000
        for line in _lines("parallel.log")
        if (m := re.search(r"\] GC\(\d+\) Pause .* (\d+\.\d+)ms$", line))
    ]
    assert summary.gc_pause_seconds == pytest.approx(sum(durations))
    assert summary.gc_pause_max_seconds == pytest.approx(max(durations))
    assert summary.gc_count == 24
    # parallel.log:189+  GC(25) Pause Full (System.gc()) ...->16M(45M): the last full pause
    last_full = [p for p in _pauses(events) if p.kind == "full"][-1]
    assert summary.live_set_bytes == last_full.heap_after_bytes
    assert summary.heap_max_bytes == 64 * MIB


# --------------------------------------------------------------------------- tailing


def _append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)


def test_tailer_follows_rename_rotation_without_loss_or_repeat(tmp_path: Path) -> None:
    log = tmp_path / "gc.log"
    assert GcLogTailer(log).read_lines() == []  # not there yet
    tailer = GcLogTailer(log)
    _append(log, "a1\na2\na3-partial")
    assert tailer.read_lines() == ["a1", "a2"]
    _append(log, "-done\na4\n")  # written after our read, before the rotation
    log.rename(tmp_path / "gc.log.00")
    _append(log, "b1\n")
    assert tailer.read_lines() == ["a3-partial-done", "a4", "b1"]
    assert tailer.read_lines() == []
    # two rotations between reads: the middle file is found among the archives
    _append(log, "b2\n")
    log.rename(tmp_path / "gc.log.01")
    _append(log, "c1\nc2\n")
    time.sleep(0.01)  # distinct mtimes, as the JVM's successive files have
    log.rename(tmp_path / "gc.log.02")
    _append(log, "d1\n")
    assert tailer.read_lines() == ["b2", "c1", "c2", "d1"]
    assert tailer.rotations == 2
    tailer.close()


def test_tailer_restarts_after_truncation_and_keeps_a_cut_line_at_rotation(
    tmp_path: Path,
) -> None:
    log = tmp_path / "gc.log"
    _append(log, "old1\nold2\n")
    with GcLogTailer(log, start_at_end=True) as tailer:
        assert tailer.read_lines() == []  # history skipped
        _append(log, "new1\n")
        assert tailer.read_lines() == ["new1"]
        log.write_text("t1\n", encoding="utf-8")  # truncated and rewritten, same inode
        assert tailer.read_lines() == ["t1"]
        assert tailer.truncations == 1
        _append(log, "cut-at-rotat")
        log.rename(tmp_path / "gc.log.00")
        _append(log, "n1\n")
        assert tailer.read_lines() == ["cut-at-rotat", "n1"]


def test_tailer_ignores_archives_that_existed_before_it_started(tmp_path: Path) -> None:
    (tmp_path / "gc.log.00").write_text("ancient\n", encoding="utf-8")
    log = tmp_path / "gc.log"
    log.write_text("x1\n", encoding="utf-8")
    with GcLogTailer(log) as tailer:
        assert tailer.read_lines() == ["x1"]
        log.rename(tmp_path / "gc.log.01")
        log.write_text("y1\n", encoding="utf-8")
        assert tailer.read_lines() == ["y1"]


@pytest.mark.skipif(shutil.which("javac") is None, reason="needs a JDK")
def test_tailer_follows_a_real_jvm_rotating_its_log(tmp_path: Path) -> None:
    subprocess.run(
        ["javac", "-d", str(tmp_path), str(FIXTURES / "GcFixtureAllocator.java")],
        check=True,
        timeout=60,
    )
    log = tmp_path / "gc.log"
    process = subprocess.Popen(
        [
            "java",
            "-XX:+UseSerialGC",
            "-Xmx64m",
            f"-Xlog:gc*:file={log}::filecount=50,filesize=4k",
            "-cp",
            str(tmp_path),
            "GcFixtureAllocator",
            "100",
            "1024",
            "6",
            "40",
        ],
        stdout=subprocess.DEVNULL,
    )
    tailer = GcLogTailer(log)
    read: list[str] = []
    try:
        while process.poll() is None:
            read += tailer.read_lines()
            time.sleep(0.002)
        assert process.wait(timeout=30) == 0
        read += tailer.read_lines()
    finally:
        process.kill()
        tailer.close()
    archives = sorted(tmp_path.glob("gc.log.*"), key=lambda p: int(p.suffix[1:]))
    assert len(archives) >= 3, "the JVM should have rotated several times"
    written = [
        line for path in [*archives, log] for line in path.read_text(encoding="utf-8").splitlines()
    ]
    assert read == written
    assert tailer.rotations >= 1
    parser = GcLogParser()
    parser.feed_lines(read)
    assert parser.bad_lines == 0
