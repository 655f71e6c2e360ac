"""Micrometer / Prometheus JVM endpoints: scrape, parse, and turn counters into rates.

Why: many JVM services already expose Micrometer's JVM binders (Spring Boot's
``/actuator/prometheus``); reading them needs no GC log and no attach rights, and gives
what the GC log does not: threads, direct buffers, code cache, metaspace per pool.

* :func:`parse_exposition` (pure) reads the text exposition with prometheus-client's parser
  into a :class:`MicrometerSnapshot` (gauges as they are, counters cumulative).
* :class:`MicrometerRates` (pure, stateful) turns two snapshots into one jvm-sample's
  fields: pause time, count and overhead over the interval, allocation rate, with counter
  resets (the JVM restarted) handled as Prometheus' ``increase()`` does.
* :class:`MicrometerScraper` does the HTTP GET with an injectable httpx transport.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import httpx
from prometheus_client.parser import text_string_to_metric_families

from agents.jvm_gclog import CollectorName
from pipeline.errors import CollectorError

__all__ = ["MicrometerRates", "MicrometerScraper", "MicrometerSnapshot", "parse_exposition"]

MAX_SAFE_INTEGER: Final = 2**53 - 1
_MAJOR_ACTIONS: Final = frozenset({"end of major GC"})
_COLLECTOR_BY_GC_NAME: Final[tuple[tuple[str, CollectorName], ...]] = (
    ("G1 ", "G1"),
    ("PS ", "Parallel"),
    ("ZGC", "ZGC"),
    ("Shenandoah", "Shenandoah"),
    ("Copy", "Serial"),
    ("MarkSweepCompact", "Serial"),
)


@dataclass(frozen=True, slots=True)
class MicrometerSnapshot:
    """One scrape of a JVM's Micrometer metrics (None where the endpoint lacks a meter)."""

    heap_used_bytes: int | None = None
    heap_committed_bytes: int | None = None
    heap_max_bytes: int | None = None
    metaspace_used_bytes: int | None = None
    code_cache_bytes: int | None = None
    threads_live: int | None = None
    direct_memory_bytes: int | None = None
    live_data_bytes: int | None = None
    gc_pause_count: float | None = None
    gc_pause_sum_seconds: float | None = None
    gc_pause_max_seconds: float | None = None
    major_gc_count: float | None = None
    allocated_bytes_total: float | None = None
    collector: CollectorName | None = None


def _whole(value: float | None) -> int | None:
    if value is None or not math.isfinite(value) or value < 0:
        return None
    return min(round(value), MAX_SAFE_INTEGER)


def _collector(gc_names: set[str]) -> CollectorName | None:
    for name in sorted(gc_names):
        for prefix, collector in _COLLECTOR_BY_GC_NAME:
            if name.startswith(prefix):
                return collector
    return "other" if gc_names else None


class _Totals:
    """Sums and maxima over the series of one exposition, one method per meter name."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.pause_max: float | None = None
        self.gc_names: set[str] = set()

    def add(self, key: str, value: float) -> None:
        self.sums[key] = self.sums.get(key, 0.0) + value

    def memory_used(self, labels: dict[str, str], value: float) -> None:
        pool = labels.get("id", "")
        if labels.get("area") == "heap":
            self.add("heap_used", value)
        elif pool == "Metaspace":
            self.add("metaspace", value)
        elif pool.startswith(("CodeHeap", "Code Cache")):
            self.add("code_cache", value)

    def memory_committed(self, labels: dict[str, str], value: float) -> None:
        if labels.get("area") == "heap":
            self.add("heap_committed", value)

    def memory_max(self, labels: dict[str, str], value: float) -> None:
        if labels.get("area") != "heap":
            return
        if value >= 0:  # -1: this pool has no own maximum (G1 eden and survivor)
            self.add("heap_max", value)

    def direct_buffers(self, labels: dict[str, str], value: float) -> None:
        if labels.get("id") == "direct":
            self.sums["direct"] = value

    def pause_count(self, labels: dict[str, str], value: float) -> None:
        self.add("pause_count", value)
        if labels.get("action") in _MAJOR_ACTIONS:
            self.add("major_count", value)

    def pause_sum(self, _labels: dict[str, str], value: float) -> None:
        self.add("pause_sum", value)

    def pause_maximum(self, _labels: dict[str, str], value: float) -> None:
        self.pause_max = max(self.pause_max or 0.0, value)

    def gauge(self, key: str) -> Callable[[dict[str, str], float], None]:
        def keep(_labels: dict[str, str], value: float) -> None:
            self.sums[key] = value

        return keep


def parse_exposition(text: str) -> MicrometerSnapshot:
    """Read the JVM meters from a Prometheus text exposition (Micrometer's names).

    Memory is summed over pools: ``area="heap"`` pools for the heap (a max of -1, "no
    limit", leaves that pool out of the max), ``id="Metaspace"`` and the ``CodeHeap ...`` /
    ``Code Cache`` pools for non-heap. GC pause count and sum are summed over every
    ``gc``/``action``/``cause`` series, the max is the largest. Series that are NaN are
    ignored. Raises ValueError when the text is not an exposition at all.
    """
    totals = _Totals()
    handlers: dict[str, Callable[[dict[str, str], float], None]] = {
        "jvm_memory_used_bytes": totals.memory_used,
        "jvm_memory_committed_bytes": totals.memory_committed,
        "jvm_memory_max_bytes": totals.memory_max,
        "jvm_threads_live_threads": totals.gauge("threads"),
        "jvm_buffer_memory_used_bytes": totals.direct_buffers,
        "jvm_gc_live_data_size_bytes": totals.gauge("live"),
        "jvm_gc_memory_allocated_bytes_total": totals.gauge("allocated"),
        "jvm_gc_pause_seconds_count": totals.pause_count,
        "jvm_gc_pause_seconds_sum": totals.pause_sum,
        "jvm_gc_pause_seconds_max": totals.pause_maximum,
    }
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            handler = handlers.get(sample.name)
            value = float(sample.value)
            if handler is None or math.isnan(value):
                continue
            if sample.name.startswith("jvm_gc_pause_seconds") and "gc" in sample.labels:
                totals.gc_names.add(sample.labels["gc"])
            handler(sample.labels, value)
    sums = totals.sums
    heap_max = sums.get("heap_max")
    return MicrometerSnapshot(
        heap_used_bytes=_whole(sums.get("heap_used")),
        heap_committed_bytes=_whole(sums.get("heap_committed")),
        heap_max_bytes=_whole(heap_max) or None,
        metaspace_used_bytes=_whole(sums.get("metaspace")),
        code_cache_bytes=_whole(sums.get("code_cache")),
        threads_live=_whole(sums.get("threads")),
        direct_memory_bytes=_whole(sums.get("direct")),
        live_data_bytes=_whole(sums.get("live")),
        gc_pause_count=sums.get("pause_count"),
        gc_pause_sum_seconds=sums.get("pause_sum"),
        gc_pause_max_seconds=totals.pause_max,
        major_gc_count=sums.get("major_count"),
        allocated_bytes_total=sums.get("allocated"),
        collector=_collector(totals.gc_names),
    )


def _increase(current: float | None, previous: float | None) -> tuple[float | None, bool]:
    """Counter increase and whether it was reset (went backwards: counted from zero)."""
    if current is None or previous is None:
        return None, False
    if current < previous:
        return current, True
    return current - previous, False


class MicrometerRates:
    """Two consecutive snapshots → one jvm-sample's fields; the first only sets a baseline.

    ``counter_resets`` counts scrapes in which a cumulative counter went backwards (the
    JVM restarted); the increase is then the counter's new value, as in Prometheus.
    """

    def __init__(self) -> None:
        self._previous: tuple[MicrometerSnapshot, float] | None = None
        self.counter_resets = 0

    def update(self, snapshot: MicrometerSnapshot, now: float) -> dict[str, Any] | None:
        """Fields for the interval ending at ``now``, or None on the first call or a clock
        that did not advance."""
        previous = self._previous
        if previous is not None and now <= previous[1]:
            return None
        self._previous = (snapshot, now)
        if previous is None:
            return None
        before, then = previous
        interval = now - then
        pause_sum, reset_sum = _increase(snapshot.gc_pause_sum_seconds, before.gc_pause_sum_seconds)
        pause_count, reset_count = _increase(snapshot.gc_pause_count, before.gc_pause_count)
        major, reset_major = _increase(snapshot.major_gc_count, before.major_gc_count)
        allocated, reset_alloc = _increase(
            snapshot.allocated_bytes_total, before.allocated_bytes_total
        )
        if reset_sum or reset_count or reset_major or reset_alloc:
            self.counter_resets += 1
        return {
            "interval_seconds": interval,
            "collector": snapshot.collector,
            "gc_overhead_ratio": None if pause_sum is None else min(1.0, pause_sum / interval),
            "gc_pause_seconds": None if pause_sum is None else min(pause_sum, 86_400.0),
            "gc_pause_max_seconds": (
                None
                if snapshot.gc_pause_max_seconds is None
                else min(snapshot.gc_pause_max_seconds, 86_400.0)
            ),
            "gc_count": _whole(pause_count),
            "full_gc_count": _whole(major),
            "heap_committed_bytes": snapshot.heap_committed_bytes,
            "heap_max_bytes": snapshot.heap_max_bytes,
            "live_set_bytes": snapshot.live_data_bytes,
            "allocation_rate_bytes_per_second": (
                None if allocated is None else min(allocated / interval, float(MAX_SAFE_INTEGER))
            ),
            "metaspace_used_bytes": snapshot.metaspace_used_bytes,
            "code_cache_bytes": snapshot.code_cache_bytes,
            "thread_count": snapshot.threads_live,
            "direct_memory_bytes": snapshot.direct_memory_bytes,
        }


class MicrometerScraper:
    """GETs one Prometheus endpoint; the transport is injectable (tests, proxies, TLS)."""

    def __init__(
        self,
        url: str,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout_seconds: float = 5.0,
    ) -> None:
        self.url = url
        self._client = httpx.Client(
            transport=transport,
            timeout=timeout_seconds,
            headers={"Accept": "text/plain;version=0.0.4"},
        )

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    def __enter__(self) -> MicrometerScraper:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def scrape(self) -> MicrometerSnapshot:
        """One GET and parse; raises CollectorError naming the URL on any failure."""
        try:
            response = self._client.get(self.url)
            response.raise_for_status()
        except httpx.HTTPError as error:
            raise CollectorError(f"micrometer endpoint {self.url}: {error}") from error
        try:
            return parse_exposition(response.text)
        except ValueError as error:
            raise CollectorError(
                f"micrometer endpoint {self.url}: not a Prometheus exposition: {error}"
            ) from error
