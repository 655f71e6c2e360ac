"""Replay source: trace files (CSV or Parquet) turned into container and JVM sample batches.

The trace format is the one ``daytwo analyze`` and ``daytwo backtest`` read (see
docs/architecture.md): one row per sample with ``timestamp``, ``workload``,
``container``, ``cpu_cores`` required and the other columns optional. Rows are grouped
into one batch per workload and timestamp, in time order, with the original
timestamps, so a replay looks to the pipeline exactly like a live agent. A trace without
``memory_bytes`` (CPU-only, such as the NAB series) streams samples without a working
set; the worker then recommends CPU only, as ``daytwo analyze`` does for the same file.

JVM columns: rows with any of ``jvm_heap_used_bytes``, ``jvm_heap_max_bytes``,
``jvm_nonheap_bytes``, ``jvm_gc_overhead_ratio`` also give a ``jvm-sample-batch`` for the
same workload and timestamp (topic ``daytwo.jvm-samples.v1``), as a GC-log or Micrometer
agent would send beside the cgroup agent. The mapping (:data:`JVM_COLUMNS`):

- ``jvm_heap_used_bytes`` → ``heap_used_after_gc_bytes`` (the window takes it as the
  live set when no ``live_set_bytes`` is reported; a trace has none);
- ``jvm_heap_max_bytes`` → ``heap_max_bytes`` (the max heap the runtime reports; no
  ``flags`` are invented, so the heap is sized as an explicit ``-Xmx``);
- ``jvm_gc_overhead_ratio`` → ``gc_overhead_ratio``;
- ``jvm_nonheap_bytes`` → ``metaspace_used_bytes``, with ``code_cache_bytes`` = 0. The
  column is the JVM's non-heap area as JMX reports it (``MemoryMXBean`` non-heap used:
  metaspace, compressed class space and the code cache pools). ``jvm-sample`` has no
  total, only the parts; metaspace is the closest field and usually the largest part, so
  the whole figure goes there, and the code cache is sent as 0 because it is already
  inside that figure: the sizing's non-heap sum then counts it once instead of adding
  its 48 MiB default on top. Thread stacks and direct buffers are outside the JMX
  non-heap area, so they keep the documented defaults of :mod:`pipeline.core.jvm`.

:func:`stream_trace` publishes those batches paced by the trace's own clock divided by a
speed-up (x1 ... x10,000, or :data:`UNPACED` for "as fast as the publisher takes them"):
trace time ``t`` is sent at ``start + (t - t0) / speedup`` of wall time. It never sleeps
for less than a few milliseconds: everything due sooner goes out at once, so at high
speed-ups the replay runs at the publisher's batch throughput instead of paying a timer
per trace instant. Every container batch published carries the agent's next ``sequence``
number (:class:`~agents.collector.BatchSequence`), so a consumer can prove none was lost;
JVM batches, like the JVM collector's, carry none. A JVM batch goes out just before the
container batch of the same workload and instant, the order in which ``daytwo analyze``
applies them.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson
import polars as pl

from agents.collector import BatchSequence
from agents.limits import InputGuard
from agents.publisher import Publisher
from pipeline.errors import CollectorError, ConfigError
from schemas.models import MAX_SAMPLES_PER_BATCH

#: The replay's speed-up range: real time ... 10,000 trace seconds per second.
MIN_SPEEDUP = 1.0
MAX_SPEEDUP = 10_000.0
#: No pacing: every batch is sent as soon as the publisher takes it (``--speedup max``).
UNPACED = math.inf
#: How ``--speedup`` spells :data:`UNPACED`.
UNPACED_NAME = "max"
#: Shortest wait worth a timer: anything due sooner is sent at once (see the module doc).
MIN_SLEEP_SECONDS = 0.005
#: Report progress at least every this many batches while not waiting.
_PROGRESS_EVERY_BATCHES = 500

#: The trace format's required columns; ``daytwo analyze``, ``backtest`` and the replay
#: agent need no more.
REQUIRED_COLUMNS = ("timestamp", "workload", "container", "cpu_cores")
#: trace column -> container-sample field (absent or null in the trace: left out of the
#: sample, which means null on the wire)
OPTIONAL_COLUMNS = {
    "memory_bytes": "memory_working_set_bytes",
    "cpu_throttled_ratio": "cpu_throttled_ratio",
    "oom_kills": "oom_kills",
    "cpu_limit_cores": "cpu_limit_cores",
    "memory_limit_bytes": "memory_limit_bytes",
}
_INT_FIELDS = {"memory_working_set_bytes", "oom_kills", "memory_limit_bytes"}
#: trace column -> jvm-sample field (see the module doc for ``jvm_nonheap_bytes``)
JVM_COLUMNS = {
    "jvm_heap_used_bytes": "heap_used_after_gc_bytes",
    "jvm_heap_max_bytes": "heap_max_bytes",
    "jvm_nonheap_bytes": "metaspace_used_bytes",
    "jvm_gc_overhead_ratio": "gc_overhead_ratio",
}
_JVM_INT_FIELDS = {"heap_used_after_gc_bytes", "heap_max_bytes", "metaspace_used_bytes"}


def read_trace(path: Path) -> pl.DataFrame:
    """Load a trace with epoch-second float timestamps, sorted by time.

    ISO-8601 timestamps are converted to epoch seconds (UTC). Missing required columns
    raise :class:`CollectorError` naming them.
    """
    try:
        frame = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path)
    except (OSError, pl.exceptions.PolarsError) as exc:
        msg = f"cannot read trace {path}: {exc}"
        raise CollectorError(msg) from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        msg = f"trace {path} lacks required column(s) {', '.join(missing)}"
        raise CollectorError(msg)
    if frame.schema["timestamp"] == pl.String:
        frame = frame.with_columns(
            pl.col("timestamp").str.to_datetime(time_zone="UTC").dt.epoch("ms") / 1000.0
        )
    return with_intervals(frame.with_columns(pl.col("timestamp").cast(pl.Float64)))


def parse_speedup(text: str) -> float:
    """A ``--speedup`` value: a number within x1 ... x10,000, or ``max`` (:data:`UNPACED`).

    Why a parser here: the CLI and the settings take the speed-up as text so that "as
    fast as possible" has a name instead of a magic number; the bounds live with the
    replay. Raises :class:`ConfigError` naming the allowed values.
    """
    cleaned = text.strip().lower()
    if cleaned == UNPACED_NAME:
        return UNPACED
    try:
        value = float(cleaned)
    except ValueError:
        value = math.nan
    if not MIN_SPEEDUP <= value <= MAX_SPEEDUP:
        msg = (
            f"replay speed-up must be a number within {MIN_SPEEDUP:g} ... {MAX_SPEEDUP:g} or "
            f"{UNPACED_NAME!r} (no pacing), got {text!r}"
        )
        raise ConfigError(msg)
    return value


def with_intervals(frame: pl.DataFrame) -> pl.DataFrame:
    """Sort by time and add ``interval_seconds``: the time since the container's previous
    sample; the first sample of a container takes its median interval (1 s if alone)."""
    interval = pl.col("timestamp").diff().over("workload", "container")
    return frame.sort("timestamp").with_columns(
        interval.fill_null(interval.median().over("workload", "container"))
        .fill_null(1.0)
        .alias("interval_seconds")
    )


def jvm_fields(row: Mapping[str, object], columns: Collection[str]) -> dict[str, Any] | None:
    """The JVM signals of one trace row as ``jvm-sample`` fields; None when it has none.

    Why one function: the replay (wire samples) and ``daytwo analyze`` / ``backtest``
    (:class:`~pipeline.core.window.JvmSampleInput`, whose fields have the same names) must
    read a trace's JVM columns alike, or the stream and the batch answer would differ.
    Absent columns and null values are left out; bytes are rounded to whole numbers. A
    non-heap value also sets ``code_cache_bytes`` to 0 (it is inside that figure, see the
    module doc). A value that is not a finite number raises :class:`CollectorError`
    naming the row.
    """
    fields: dict[str, Any] = {}
    for column, field in JVM_COLUMNS.items():
        if column not in columns:
            continue
        value = row[column]
        if value is None:
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            msg = (
                f"trace row at timestamp {row.get('timestamp')} for {row.get('workload')}:"
                f"{row.get('container')}: {column} must be a finite number, got {value!r}"
            )
            raise CollectorError(msg)
        fields[field] = round(value) if field in _JVM_INT_FIELDS else float(value)
    if not fields:
        return None
    if "metaspace_used_bytes" in fields:
        fields["code_cache_bytes"] = 0
    return fields


def has_jvm_values(frame: pl.DataFrame) -> bool:
    """Whether any row of the trace has a JVM value (a JVM column that is not all null)."""
    return any(
        column in frame.columns and frame[column].null_count() < frame.height
        for column in JVM_COLUMNS
    )


@dataclass(frozen=True, slots=True)
class TraceScrape:
    """One workload at one trace instant: what live agents would send for one scrape.

    ``container_batch`` is the ``container-sample-batch`` (without ``sequence``);
    ``jvm_batch`` the ``jvm-sample-batch`` of the rows with JVM values, None when the
    instant has none.
    """

    workload: str
    timestamp: float
    container_batch: dict[str, Any]
    jvm_batch: dict[str, Any] | None


def trace_scrapes(
    frame: pl.DataFrame, *, source: str = "replay", agent: str = "replay"
) -> Iterator[TraceScrape]:
    """Yield one :class:`TraceScrape` per (timestamp, workload) in trace-time order.

    Optional columns that are absent, or null on a row, are left out of that row's sample
    (null on the wire): a trace without ``memory_bytes`` gives CPU-only samples. JVM
    columns map as :func:`jvm_fields` says. Raises :class:`CollectorError` when a required
    column is missing (a frame not from :func:`read_trace`) or a JVM value is not a number.
    """
    missing = [c for c in (*REQUIRED_COLUMNS, "interval_seconds") if c not in frame.columns]
    if missing:
        msg = f"the replay needs trace column(s) {', '.join(missing)} (see read_trace)"
        raise CollectorError(msg)
    columns = set(frame.columns)
    present = {c: f for c, f in OPTIONAL_COLUMNS.items() if c in columns}
    with_jvm = any(column in columns for column in JVM_COLUMNS)
    for (timestamp, workload), group in frame.group_by(
        "timestamp", "workload", maintain_order=True
    ):
        samples = []
        jvm_samples = []
        for row in group.iter_rows(named=True):
            sample: dict[str, Any] = {
                "container": row["container"],
                "timestamp": float(row["timestamp"]),
                "interval_seconds": float(row["interval_seconds"]),
                "cpu_usage_cores": float(row["cpu_cores"]),
            }
            for column, field in present.items():
                value = row[column]
                if value is not None:
                    sample[field] = int(value) if field in _INT_FIELDS else float(value)
            samples.append(sample)
            jvm = jvm_fields(row, columns) if with_jvm else None
            if jvm is not None:
                jvm_samples.append(
                    {
                        "container": sample["container"],
                        "timestamp": sample["timestamp"],
                        "interval_seconds": sample["interval_seconds"],
                        **jvm,
                    }
                )
        header: dict[str, Any] = {
            "source": source,
            "agent": agent,
            "workload": str(workload),
            "timestamp": float(timestamp),
        }
        yield TraceScrape(
            workload=str(workload),
            timestamp=float(timestamp),
            container_batch=_batch("container-sample-batch", samples, **header),
            jvm_batch=_batch("jvm-sample-batch", jvm_samples, **header) if jvm_samples else None,
        )


def _batch(
    kind: str,
    samples: list[dict[str, Any]],
    *,
    source: str,
    agent: str,
    workload: str,
    timestamp: float,
) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "kind": kind,
        "source": source,
        "agent": agent,
        "workload": workload,
        "timestamp": timestamp,
        "samples": samples,
    }


def trace_batches(
    frame: pl.DataFrame, *, source: str = "replay", agent: str = "replay"
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (workload id, container-sample-batch dict) in trace-time order.

    The container half of :func:`trace_scrapes` (JVM columns are not read here). The
    batches carry no ``sequence``: :func:`stream_trace` numbers the ones it publishes.
    """
    for scrape in trace_scrapes(frame, source=source, agent=agent):
        yield scrape.workload, scrape.container_batch


def trace_jvm_batches(
    frame: pl.DataFrame, *, source: str = "replay", agent: str = "replay"
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (workload id, jvm-sample-batch dict) in trace-time order: the JVM half of
    :func:`trace_scrapes`, for the instants whose rows have JVM values."""
    for scrape in trace_scrapes(frame, source=source, agent=agent):
        if scrape.jvm_batch is not None:
            yield scrape.workload, scrape.jvm_batch


@dataclass(frozen=True, slots=True)
class ReplayProgress:
    """Where a replay is: samples sent of the trace's total, and the trace time reached."""

    samples_sent: int
    samples_total: int
    trace_time: float | None
    trace_start: float | None
    trace_end: float | None


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What one replay published (``rejected_samples``: over the container cap).

    ``batches`` / ``samples`` count container-sample batches and their samples;
    ``jvm_batches`` / ``jvm_samples`` / ``rejected_jvm_samples`` the same for the JVM
    columns. ``next_sequence`` is the number the agent's next batch would get: the
    container batches of this replay were numbered up to ``next_sequence - 1``.
    """

    batches: int
    samples: int
    rejected_samples: int
    trace_start: float | None
    trace_end: float | None
    wall_seconds: float
    stopped_early: bool
    next_sequence: int = 0
    jvm_batches: int = 0
    jvm_samples: int = 0
    rejected_jvm_samples: int = 0


async def stream_trace(
    frame: pl.DataFrame,
    publisher: Publisher,
    *,
    topic: str,
    speedup: float,
    jvm_topic: str | None = None,
    stop_event: asyncio.Event | None = None,
    guard: InputGuard | None = None,
    progress: Callable[[ReplayProgress], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    source: str = "replay",
    agent: str = "replay",
    sequence: BatchSequence | None = None,
    pack_samples: int | None = None,
) -> ReplayResult:
    """Publish a trace (from :func:`read_trace`) paced at ``speedup`` and return a summary.

    Why: a replay must look like a live agent to the pipeline (one batch per workload
    per instant, original timestamps, arriving in time order) while letting a week of
    trace run in a minute. Before waiting for a later instant, everything sent so far
    is flushed, so what is due has reached Kafka when the wait starts. ``speedup`` is
    within x1 ... x10,000, or :data:`UNPACED` (no waiting at all: the batches go out at
    the publisher's throughput, flushed once at the end). Container batches go to
    ``topic``; the JVM columns' batches to ``jvm_topic``, each just before the container
    batch of its workload and instant (a trace with JVM values and no ``jvm_topic`` is
    refused with :class:`ConfigError`: nothing of a trace is dropped silently).
    ``guard`` drops samples of containers over the cap (counted by the guard). Each
    published container batch takes the next number of ``sequence`` (a fresh one from 0
    when not given: one per agent process). Setting ``stop_event`` ends the replay early
    (what was sent is flushed). ``clock`` is monotonic seconds.

    ``pack_samples`` (unpaced only): catch up like a backfill does, with one batch per
    workload holding its consecutive instants, up to this many samples (at most the
    contract's 1,000), instead of one batch per instant: each workload's samples still
    arrive in time order, in far fewer messages (what makes a consumer fast; see
    docs/benchmarks.md). A JVM batch goes just before the container batch covering its
    instants.
    """
    _check_replay(frame, speedup, jvm_topic, pack_samples)
    sequence = sequence if sequence is not None else BatchSequence()
    stop_event = stop_event if stop_event is not None else asyncio.Event()
    total = frame.height
    first = float(frame["timestamp"].min()) if total else None  # type: ignore[arg-type]  # a float column
    last = float(frame["timestamp"].max()) if total else None  # type: ignore[arg-type]  # a float column
    started = clock()
    batches = samples = rejected = 0
    jvm_batches = jvm_samples = jvm_rejected = 0
    instant: float | None = None
    stopped = False

    def report() -> None:
        if progress is not None:
            progress(ReplayProgress(samples + rejected, total, instant, first, last))

    scrapes = trace_scrapes(frame, source=source, agent=agent)
    for scrape in scrapes if pack_samples is None else packed_scrapes(scrapes, pack_samples):
        timestamp = scrape.timestamp
        if timestamp != instant:
            instant = timestamp
            assert first is not None  # a batch exists, so the frame is not empty
            due = started + (timestamp - first) / speedup  # speedup inf: due = started
            if due - clock() > MIN_SLEEP_SECONDS:
                await publisher.flush()
                report()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop_event.wait(), timeout=max(0.0, due - clock()))
            if stop_event.is_set():
                stopped = True
                break
        key = scrape.workload.encode()
        if scrape.jvm_batch is not None and jvm_topic is not None:
            admitted, dropped = _admit(guard, scrape.jvm_batch, timestamp)
            jvm_rejected += dropped
            if admitted is not None:
                await publisher.send(jvm_topic, key, orjson.dumps(admitted))
                jvm_batches += 1
                jvm_samples += len(admitted["samples"])
        admitted, dropped = _admit(guard, scrape.container_batch, timestamp)
        rejected += dropped
        if admitted is None:
            continue
        admitted["sequence"] = sequence.take()
        await publisher.send(topic, key, orjson.dumps(admitted))
        batches += 1
        samples += len(admitted["samples"])
        if batches % _PROGRESS_EVERY_BATCHES == 0:
            report()
    await publisher.flush()
    report()
    return ReplayResult(
        batches=batches,
        samples=samples,
        rejected_samples=rejected,
        trace_start=first,
        trace_end=last,
        wall_seconds=clock() - started,
        stopped_early=stopped,
        next_sequence=sequence.next_number,
        jvm_batches=jvm_batches,
        jvm_samples=jvm_samples,
        rejected_jvm_samples=jvm_rejected,
    )


PACK_BUFFER_SAMPLES: Final = 200_000
"""Most samples :func:`packed_scrapes` holds back at once (all workloads together)."""


def packed_scrapes(scrapes: Iterable[TraceScrape], max_samples: int) -> Iterator[TraceScrape]:
    """Merge each workload's consecutive scrapes into scrapes of up to ``max_samples``
    container samples (and the JVM samples of the same instants).

    A workload's merged scrape is yielded when the next one would overflow it, when more
    than :data:`PACK_BUFFER_SAMPLES` samples are held in all (memory stays bounded), and
    at the end; each workload's samples keep their order. The merged scrape's timestamp
    is its last instant (a batch's ``timestamp`` is when it was assembled).
    """
    held: dict[str, TraceScrape] = {}
    held_samples = 0
    for scrape in scrapes:
        current = held.get(scrape.workload)
        size = len(scrape.container_batch["samples"])
        if current is not None and len(current.container_batch["samples"]) + size > max_samples:
            held_samples -= len(current.container_batch["samples"])
            yield held.pop(scrape.workload)
            current = None
        held[scrape.workload] = scrape if current is None else _merged(current, scrape)
        held_samples += size
        if held_samples > PACK_BUFFER_SAMPLES:
            yield from held.values()
            held.clear()
            held_samples = 0
    yield from held.values()


def _merged(first: TraceScrape, then: TraceScrape) -> TraceScrape:
    container = {
        **first.container_batch,
        "timestamp": then.timestamp,
        "samples": first.container_batch["samples"] + then.container_batch["samples"],
    }
    jvm = first.jvm_batch
    if then.jvm_batch is not None:
        jvm = (
            {**then.jvm_batch, "samples": jvm["samples"] + then.jvm_batch["samples"]}
            if jvm is not None
            else then.jvm_batch
        )
    return TraceScrape(then.workload, then.timestamp, container, jvm)


def _check_replay(
    frame: pl.DataFrame, speedup: float, jvm_topic: str | None, pack_samples: int | None
) -> None:
    if pack_samples is not None:
        if speedup != UNPACED:
            raise ConfigError("packing several instants into a batch needs an unpaced replay")
        if not 1 <= pack_samples <= MAX_SAMPLES_PER_BATCH:
            msg = f"pack_samples must be within 1 ... {MAX_SAMPLES_PER_BATCH}, got {pack_samples}"
            raise ConfigError(msg)
    if speedup != UNPACED and not MIN_SPEEDUP <= speedup <= MAX_SPEEDUP:
        msg = (
            f"replay speed-up must be within {MIN_SPEEDUP:g} ... {MAX_SPEEDUP:g} or unpaced, "
            f"got {speedup:g}"
        )
        raise ConfigError(msg)
    if jvm_topic is None and has_jvm_values(frame):
        columns = ", ".join(c for c in JVM_COLUMNS if c in frame.columns)
        msg = f"the trace has JVM values ({columns}): the replay needs the JVM samples topic"
        raise ConfigError(msg)


def _admit(
    guard: InputGuard | None, batch: dict[str, Any], timestamp: float
) -> tuple[dict[str, Any] | None, int]:
    """The batch as the guard lets it through, and how many samples it dropped."""
    admitted = batch if guard is None else guard.admit_batch(batch, timestamp)
    offered = len(batch["samples"])
    return admitted, offered - (0 if admitted is None else len(admitted["samples"]))
