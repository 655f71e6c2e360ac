"""Per-container state: everything sizing needs from a container's history, in ~2 KB.

A :class:`ContainerWindow` never keeps raw samples. It keeps

- a :class:`~pipeline.core.histogram.DecayingHistogram` of CPU usage, each sample
  weighted by its interval (so a 60 s sample counts six times a 10 s one);
- the memory working-set peak per interval (``profile.memory_peak_interval_seconds``),
  as the short list of intervals that can still be the maximum of the history window
  (see :meth:`ContainerWindow.memory_peak_bytes`);
- counters and extremes for the evidence: samples, covered seconds, first and last
  timestamp, CPU max, throttling max, OOM kills, the last observed limits;
- a decaying histogram of the CFS throttled ratio (its p95 guards CPU decreases);
- the time of the last OOM kill and the memory limit in force at it (the OOM rule raises
  memory from that limit, once, and forbids decreases for the profile's cool-down);
- a :class:`JvmState` once JVM samples arrive (:meth:`ContainerWindow.apply_jvm`): GC
  overhead and pause histograms, live-set and non-heap peaks over the history, the last
  heap sizes, flags and ``JAVA_TOOL_OPTIONS`` (see :class:`JvmState`);
- ``last_emitted_hash``, so a restarted worker knows what it already published.

Replay is idempotent: a sample at or before the last applied timestamp changes nothing
(container and JVM samples each against their own last timestamp). State is serialised
explicitly (versioned orjson, never pickle) so a checkpoint written by one release is
read, or rejected with a clear message, by the next: this release writes version 5 and
reads versions 1 to 5.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol

import orjson

from pipeline.core.drift import (
    SIGNALS,
    DriftConfig,
    DriftEvent,
    DriftStateError,
    DriftTracker,
    LeakSuspicion,
    Signal,
)
from pipeline.core.histogram import DecayingHistogram
from pipeline.core.profiles import Profile
from pipeline.errors import DaytwoError, InvalidMessageError

STATE_VERSION: Final = 5
"""Version written by :meth:`ContainerWindow.to_bytes`."""

READABLE_STATE_VERSIONS: Final = (1, 2, 3, 4, 5)
"""Versions :meth:`ContainerWindow.from_bytes` reads; version 1 predates JVM state,
throttling percentiles and the OOM time, version 2 the regime start and the time of the
last proposal, version 3 the drift detectors, version 4 the workload spec; what a
version lacks starts empty when it is read."""

DRIFT_REWEIGHT: Final = 1e-3
"""On a drift, what the histograms held so far is multiplied by this: minutes of the new
regime then outweigh days of the old one, and the recommendation follows quickly."""

CPU_FIRST_BUCKET_CORES: Final = 0.001
CPU_BUCKET_RATIO: Final = 1.05
CPU_MAX_CORES: Final = 1000.0

MAX_PEAK_CANDIDATES: Final = 32
"""Bound on stored memory peak intervals; beyond it, adjacent ones merge conservatively."""

MAX_JVM_PEAK_CANDIDATES: Final = 4
"""Bound per JVM peak series (live set, metaspace, ...): five of them, so kept shorter."""

# Ratio histograms (throttled ratio, GC overhead): coarse buckets keep the state small;
# the percentile is an upper bound within 15% (+ the first bucket), which only makes the
# "above the ceiling" guards fire a little early, never late.
RATIO_FIRST_BUCKET: Final = 0.002
RATIO_BUCKET_RATIO: Final = 1.15
RATIO_MAX: Final = 1.0
# GC pauses: 1 ms first bucket, 30% wide buckets, up to 10 minutes (evidence only, and
# an upper bound already: coarse buckets keep the state small).
PAUSE_FIRST_BUCKET_SECONDS: Final = 0.001
PAUSE_BUCKET_RATIO: Final = 1.3
PAUSE_MAX_SECONDS: Final = 600.0

GC_HEAP_CHANGE_TOLERANCE: Final = 0.1
"""A max heap differing by more than this share from the one the GC statistics describe
restarts them: GC overhead measured on another heap size says little about this one."""

Collector = Literal["G1", "Parallel", "Serial", "ZGC", "Shenandoah", "other"]
HeapSizing = Literal["xmx", "ram-percentage", "default"]
COLLECTORS: Final[tuple[Collector, ...]] = (
    "G1",
    "Parallel",
    "Serial",
    "ZGC",
    "Shenandoah",
    "other",
)
"""Collectors a JVM sample may name; "other" is one HotSpot never picks by itself."""
HEAP_SIZINGS: Final[tuple[HeapSizing, ...]] = ("xmx", "ram-percentage", "default")
MAX_JVM_OPTIONS_CHARS: Final = 32768


class WindowStateError(DaytwoError):
    """A serialised container window cannot be read (corrupt, or an unknown version)."""


@dataclass(frozen=True, slots=True)
class SampleInput:
    """One container sample as the window needs it, in base units (seconds, cores, bytes).

    Why a separate type from the wire model: the core stays free of pydantic and of
    fields it does not use. ``None`` means the source did not report that signal (a
    CPU-only trace has no working set: memory is then left as it is).
    Invalid values raise :class:`~pipeline.errors.InvalidMessageError` (stage
    ``"window"``), which the worker turns into a dead-letter record.
    """

    timestamp: float
    interval_seconds: float
    cpu_usage_cores: float
    memory_working_set_bytes: int | None
    cpu_throttled_ratio: float | None = None
    oom_kills: int | None = None
    cpu_limit_cores: float | None = None
    memory_limit_bytes: int | None = None

    def __post_init__(self) -> None:
        _require(_finite(self.timestamp), "timestamp must be a finite number", self.timestamp)
        _require(
            _finite(self.interval_seconds) and self.interval_seconds > 0,
            "interval_seconds must be > 0",
            self.interval_seconds,
        )
        _require(
            _finite(self.cpu_usage_cores) and self.cpu_usage_cores >= 0,
            "cpu_usage_cores must be ≥ 0",
            self.cpu_usage_cores,
        )
        if self.memory_working_set_bytes is not None:
            _require(
                _whole(self.memory_working_set_bytes) and self.memory_working_set_bytes >= 0,
                "memory_working_set_bytes must be an integer ≥ 0 or None",
                self.memory_working_set_bytes,
            )
        if self.cpu_throttled_ratio is not None:
            _require(
                _finite(self.cpu_throttled_ratio) and 0 <= self.cpu_throttled_ratio <= 1,
                "cpu_throttled_ratio must be within [0, 1]",
                self.cpu_throttled_ratio,
            )
        if self.oom_kills is not None:
            _require(
                _whole(self.oom_kills) and self.oom_kills >= 0,
                "oom_kills must be an integer ≥ 0",
                self.oom_kills,
            )
        if self.cpu_limit_cores is not None:
            _require(
                _finite(self.cpu_limit_cores) and self.cpu_limit_cores > 0,
                "cpu_limit_cores must be > 0 or None",
                self.cpu_limit_cores,
            )
        if self.memory_limit_bytes is not None:
            _require(
                _whole(self.memory_limit_bytes) and self.memory_limit_bytes > 0,
                "memory_limit_bytes must be an integer > 0 or None",
                self.memory_limit_bytes,
            )


class SampleFields(Protocol):
    """The fields a container sample has under these names: :class:`SampleInput`, and
    the contract's ``ContainerSample`` (schemas/models.py, schemas/wire.py)."""

    @property
    def timestamp(self) -> float: ...
    @property
    def interval_seconds(self) -> float: ...
    @property
    def cpu_usage_cores(self) -> float: ...
    @property
    def memory_working_set_bytes(self) -> int | None: ...
    @property
    def cpu_throttled_ratio(self) -> float | None: ...
    @property
    def oom_kills(self) -> int | None: ...
    @property
    def cpu_limit_cores(self) -> float | None: ...
    @property
    def memory_limit_bytes(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class SampleRun:
    """Consecutive samples of one container, by column: how batches reach the window.

    Why columns: the worker applies a whole batch at once; building one
    :class:`SampleInput` per sample (and re-checking what the contract already
    checked) cost more than applying it. The values must already be valid — built
    with :meth:`of` from checked :class:`SampleInput`\\ s, or by the worker from
    samples its pydantic contract validated (the same bounds, stricter); all columns
    have one entry per sample, None where the sample did not report the signal.
    """

    timestamps: Sequence[float]
    intervals: Sequence[float]
    cpu_cores: Sequence[float]
    memory_working_set_bytes: Sequence[int | None]
    cpu_throttled_ratios: Sequence[float | None]
    oom_kills: Sequence[int | None]
    cpu_limit_cores: Sequence[float | None]
    memory_limit_bytes: Sequence[int | None]

    def __len__(self) -> int:
        return len(self.timestamps)

    @classmethod
    def of(cls, samples: Sequence[SampleFields]) -> SampleRun:
        """The run of validated samples: each :class:`SampleInput` checked itself, or
        the contract's samples (pydantic or msgspec checked the same bounds)."""
        return cls(
            timestamps=[s.timestamp for s in samples],
            intervals=[s.interval_seconds for s in samples],
            cpu_cores=[s.cpu_usage_cores for s in samples],
            memory_working_set_bytes=[s.memory_working_set_bytes for s in samples],
            cpu_throttled_ratios=[s.cpu_throttled_ratio for s in samples],
            oom_kills=[s.oom_kills for s in samples],
            cpu_limit_cores=[s.cpu_limit_cores for s in samples],
            memory_limit_bytes=[s.memory_limit_bytes for s in samples],
        )

    def sample(self, index: int) -> SampleInput:
        """Sample ``index`` as a :class:`SampleInput` (checked again)."""
        return SampleInput(
            timestamp=self.timestamps[index],
            interval_seconds=self.intervals[index],
            cpu_usage_cores=self.cpu_cores[index],
            memory_working_set_bytes=self.memory_working_set_bytes[index],
            cpu_throttled_ratio=self.cpu_throttled_ratios[index],
            oom_kills=self.oom_kills[index],
            cpu_limit_cores=self.cpu_limit_cores[index],
            memory_limit_bytes=self.memory_limit_bytes[index],
        )

    def slice(self, start: int, stop: int) -> SampleRun:
        """Samples ``start`` to ``stop - 1``."""
        return SampleRun(
            timestamps=self.timestamps[start:stop],
            intervals=self.intervals[start:stop],
            cpu_cores=self.cpu_cores[start:stop],
            memory_working_set_bytes=self.memory_working_set_bytes[start:stop],
            cpu_throttled_ratios=self.cpu_throttled_ratios[start:stop],
            oom_kills=self.oom_kills[start:stop],
            cpu_limit_cores=self.cpu_limit_cores[start:stop],
            memory_limit_bytes=self.memory_limit_bytes[start:stop],
        )

    def select(self, indices: Sequence[int]) -> SampleRun:
        """The samples at ``indices``, in that order."""
        return SampleRun(
            timestamps=[self.timestamps[i] for i in indices],
            intervals=[self.intervals[i] for i in indices],
            cpu_cores=[self.cpu_cores[i] for i in indices],
            memory_working_set_bytes=[self.memory_working_set_bytes[i] for i in indices],
            cpu_throttled_ratios=[self.cpu_throttled_ratios[i] for i in indices],
            oom_kills=[self.oom_kills[i] for i in indices],
            cpu_limit_cores=[self.cpu_limit_cores[i] for i in indices],
            memory_limit_bytes=[self.memory_limit_bytes[i] for i in indices],
        )


def fresh_indices(timestamps: Sequence[float], last_applied: float | None) -> list[int]:
    """Indices of the samples a window would apply: each newer than every sample before
    it and than ``last_applied`` (the idempotent replay rule, for a whole run)."""
    newest = -math.inf if last_applied is None else last_applied
    fresh = []
    for index, timestamp in enumerate(timestamps):
        if timestamp > newest:
            fresh.append(index)
            newest = timestamp
    return fresh


@dataclass(frozen=True, slots=True)
class JvmSampleInput:
    """One JVM sample as the window needs it, in base units (seconds, bytes, ratios).

    Why: a container is never sized apart from the JVM inside it, so the window keeps
    what the JVM agent (GC logs, flags, Micrometer) reports beside the cgroup signals.
    Every field but ``timestamp`` and ``interval_seconds`` is optional (``None`` = the
    source did not report it); flags (``collector`` .. ``jvm_options``) keep their last
    reported value in the window. Invalid values raise
    :class:`~pipeline.errors.InvalidMessageError` (stage ``"window"``).

    Signals over the interval: ``gc_overhead_ratio`` (pause time / wall time, 0..1),
    ``gc_pause_max_seconds`` (longest pause), ``gc_count`` / ``full_gc_count`` (pauses
    and full collections), ``allocation_rate_bytes_per_second``. Levels at the end of
    it: ``heap_used_after_gc_bytes`` (after the last collection of any kind),
    ``live_set_bytes`` (after the last old / full collection), ``heap_committed_bytes``,
    ``heap_max_bytes`` (what the runtime reports as its max), ``metaspace_used_bytes``,
    ``code_cache_bytes``, ``thread_count``, ``direct_memory_bytes``.

    Flags in force: ``max_heap_bytes`` (MaxHeapSize), ``max_ram_percentage``,
    ``heap_sizing`` (how the heap is set: ``"xmx"`` for -Xmx / MaxHeapSize,
    ``"ram-percentage"`` for MaxRAMPercentage, ``"default"`` for neither),
    ``active_processor_count``, ``thread_stack_size_bytes`` (ThreadStackSize; 0 = the
    system default), ``max_direct_memory_bytes`` (0 = the default, i.e. the max heap)
    and ``jvm_options``, the ``JAVA_TOOL_OPTIONS`` value in force ("" when empty).
    """

    timestamp: float
    interval_seconds: float
    collector: Collector | None = None
    gc_overhead_ratio: float | None = None
    gc_pause_max_seconds: float | None = None
    gc_count: int | None = None
    full_gc_count: int | None = None
    heap_used_after_gc_bytes: int | None = None
    heap_committed_bytes: int | None = None
    heap_max_bytes: int | None = None
    live_set_bytes: int | None = None
    allocation_rate_bytes_per_second: float | None = None
    metaspace_used_bytes: int | None = None
    code_cache_bytes: int | None = None
    thread_count: int | None = None
    direct_memory_bytes: int | None = None
    max_heap_bytes: int | None = None
    max_ram_percentage: float | None = None
    heap_sizing: HeapSizing | None = None
    active_processor_count: int | None = None
    thread_stack_size_bytes: int | None = None
    max_direct_memory_bytes: int | None = None
    jvm_options: str | None = None

    def __post_init__(self) -> None:
        _require(_finite(self.timestamp), "timestamp must be a finite number", self.timestamp)
        _require(
            _finite(self.interval_seconds) and self.interval_seconds > 0,
            "interval_seconds must be > 0",
            self.interval_seconds,
        )
        if self.collector is not None:
            _require(
                self.collector in COLLECTORS,
                f"collector must be one of {list(COLLECTORS)}",
                self.collector,
            )
        if self.heap_sizing is not None:
            _require(
                self.heap_sizing in HEAP_SIZINGS,
                f"heap_sizing must be one of {list(HEAP_SIZINGS)}",
                self.heap_sizing,
            )
        if self.gc_overhead_ratio is not None:
            _require(
                _finite(self.gc_overhead_ratio) and 0 <= self.gc_overhead_ratio <= 1,
                "gc_overhead_ratio must be within [0, 1]",
                self.gc_overhead_ratio,
            )
        for name, value in (
            ("gc_pause_max_seconds", self.gc_pause_max_seconds),
            ("allocation_rate_bytes_per_second", self.allocation_rate_bytes_per_second),
        ):
            if value is not None:
                _require(_finite(value) and value >= 0, f"{name} must be ≥ 0", value)
        if self.max_ram_percentage is not None:
            _require(
                _finite(self.max_ram_percentage) and 0 < self.max_ram_percentage <= 100,
                "max_ram_percentage must be within (0, 100]",
                self.max_ram_percentage,
            )
        for name, count in (
            ("gc_count", self.gc_count),
            ("full_gc_count", self.full_gc_count),
            ("heap_used_after_gc_bytes", self.heap_used_after_gc_bytes),
            ("heap_committed_bytes", self.heap_committed_bytes),
            ("live_set_bytes", self.live_set_bytes),
            ("metaspace_used_bytes", self.metaspace_used_bytes),
            ("code_cache_bytes", self.code_cache_bytes),
            ("thread_count", self.thread_count),
            ("direct_memory_bytes", self.direct_memory_bytes),
            ("thread_stack_size_bytes", self.thread_stack_size_bytes),
            ("max_direct_memory_bytes", self.max_direct_memory_bytes),
        ):
            if count is not None:
                _require(_whole(count) and count >= 0, f"{name} must be an integer ≥ 0", count)
        for name, positive in (
            ("heap_max_bytes", self.heap_max_bytes),
            ("max_heap_bytes", self.max_heap_bytes),
            ("active_processor_count", self.active_processor_count),
        ):
            if positive is not None:
                _require(
                    _whole(positive) and positive > 0, f"{name} must be an integer > 0", positive
                )
        if self.jvm_options is not None:
            _require(
                isinstance(self.jvm_options, str)
                and len(self.jvm_options) <= MAX_JVM_OPTIONS_CHARS
                and "\x00" not in self.jvm_options,
                f"jvm_options must be a string of at most {MAX_JVM_OPTIONS_CHARS} characters "
                "without NUL",
                self.jvm_options if not isinstance(self.jvm_options, str) else "…",
            )


@dataclass(slots=True)
class JvmState:
    """Compact JVM history of one container, kept inside its :class:`ContainerWindow`.

    Why this shape: the correlation rules need percentiles of GC overhead and pauses
    (decaying histograms, like CPU), the largest live set and non-heap parts the JVM
    reached within the history (sliding-window peaks, like memory, at most
    :data:`MAX_JVM_PEAK_CANDIDATES` each), and the last heap sizes and flags in force.

    - ``gc_overhead``: GC pause time / wall time per sample, weighted by its interval.
    - ``gc_pause``: each interval's longest pause, weighted by the interval's pause count,
      so its p99 is an upper bound of the true pause p99 (every pause counted at its
      interval's longest).
    - GC statistics describe one heap size (``gc_heap_bytes``); when the max heap in force
      moves by more than :data:`GC_HEAP_CHANGE_TOLERANCE`, they restart, so a heap that was
      just enlarged is not held to the GC overhead of the smaller one.
    - ``live_set_peaks``: live set after old / full GC; a sample without one contributes
      its heap used after GC instead, which can only overstate the live set.
    """

    gc_overhead: DecayingHistogram
    gc_pause: DecayingHistogram
    last_timestamp: float | None = None
    sample_count: int = 0
    covered_seconds: float = 0.0
    gc_heap_bytes: int | None = None
    gc_overhead_max: float | None = None
    gc_pause_max_seconds: float | None = None
    gc_count_total: int | None = None
    full_gc_count_total: int | None = None
    live_set_peaks: list[tuple[float, int]] = field(default_factory=list)
    metaspace_peaks: list[tuple[float, int]] = field(default_factory=list)
    code_cache_peaks: list[tuple[float, int]] = field(default_factory=list)
    thread_peaks: list[tuple[float, int]] = field(default_factory=list)
    direct_memory_peaks: list[tuple[float, int]] = field(default_factory=list)
    heap_max_bytes: int | None = None
    heap_committed_bytes: int | None = None
    allocation_rate_bytes_per_second: float | None = None
    collector: Collector | None = None
    max_heap_bytes: int | None = None
    max_ram_percentage: float | None = None
    heap_sizing: HeapSizing | None = None
    active_processor_count: int | None = None
    thread_stack_size_bytes: int | None = None
    max_direct_memory_bytes: int | None = None
    jvm_options: str | None = None

    @classmethod
    def new(cls, half_life_seconds: float) -> JvmState:
        """Empty JVM state whose histograms decay with ``half_life_seconds``."""
        return cls(
            gc_overhead=_ratio_histogram(half_life_seconds),
            gc_pause=_pause_histogram(half_life_seconds),
        )

    @property
    def live_set_peak_bytes(self) -> int | None:
        """Largest live set (after GC) within the history; None if never reported."""
        return _peak_of(self.live_set_peaks)

    @property
    def metaspace_peak_bytes(self) -> int | None:
        """Largest metaspace use within the history; None if never reported."""
        return _peak_of(self.metaspace_peaks)

    @property
    def code_cache_peak_bytes(self) -> int | None:
        """Largest code cache use within the history; None if never reported."""
        return _peak_of(self.code_cache_peaks)

    @property
    def thread_count_peak(self) -> int | None:
        """Most live threads within the history; None if never reported."""
        return _peak_of(self.thread_peaks)

    @property
    def direct_memory_peak_bytes(self) -> int | None:
        """Largest direct (NIO) buffer memory within the history; None if never reported."""
        return _peak_of(self.direct_memory_peaks)

    def gc_overhead_percentile(self, p: float) -> float | None:
        """Upper bound of the ``p``-quantile of GC overhead (≤ 1), None without data."""
        if self.gc_overhead.is_empty:
            return None
        return min(RATIO_MAX, self.gc_overhead.percentile(p))

    def gc_pause_percentile_seconds(self, p: float) -> float | None:
        """Upper bound of the ``p``-quantile of GC pauses in seconds, None without data."""
        if self.gc_pause.is_empty:
            return None
        return self.gc_pause.percentile(p)

    def apply(
        self, sample: JvmSampleInput, *, peak_interval_seconds: float, history_seconds: float
    ) -> bool:
        """Fold ``sample`` in; False (and no change) if at or before the last one applied."""
        if self.last_timestamp is not None and sample.timestamp <= self.last_timestamp:
            return False
        t = sample.timestamp
        self._restart_gc_statistics_on_heap_change(sample)
        if sample.gc_overhead_ratio is not None:
            self.gc_overhead.add(sample.gc_overhead_ratio, sample.interval_seconds, t)
            self.gc_overhead_max = max(self.gc_overhead_max or 0.0, sample.gc_overhead_ratio)
        if sample.gc_pause_max_seconds is not None and sample.gc_count != 0:
            self.gc_pause.add(
                min(sample.gc_pause_max_seconds, PAUSE_MAX_SECONDS),
                float(sample.gc_count or 1),
                t,
            )
            self.gc_pause_max_seconds = max(
                self.gc_pause_max_seconds or 0.0, sample.gc_pause_max_seconds
            )
        if sample.gc_count is not None:
            self.gc_count_total = (self.gc_count_total or 0) + sample.gc_count
        if sample.full_gc_count is not None:
            self.full_gc_count_total = (self.full_gc_count_total or 0) + sample.full_gc_count
        live = (
            sample.live_set_bytes
            if sample.live_set_bytes is not None
            else sample.heap_used_after_gc_bytes
        )
        for peaks, value in (
            (self.live_set_peaks, live),
            (self.metaspace_peaks, sample.metaspace_used_bytes),
            (self.code_cache_peaks, sample.code_cache_bytes),
            (self.thread_peaks, sample.thread_count),
            (self.direct_memory_peaks, sample.direct_memory_bytes),
        ):
            if value is None:
                _expire_peaks(peaks, t, peak_interval_seconds, history_seconds)
            else:
                _add_peak(
                    peaks,
                    t,
                    value,
                    interval=peak_interval_seconds,
                    history=history_seconds,
                    cap=MAX_JVM_PEAK_CANDIDATES,
                )
        if sample.heap_max_bytes is not None:
            self.heap_max_bytes = sample.heap_max_bytes
        if sample.heap_committed_bytes is not None:
            self.heap_committed_bytes = sample.heap_committed_bytes
        if sample.allocation_rate_bytes_per_second is not None:
            self.allocation_rate_bytes_per_second = sample.allocation_rate_bytes_per_second
        self._keep_flags(sample)
        self.sample_count += 1
        self.covered_seconds += sample.interval_seconds
        self.last_timestamp = t
        return True

    def _restart_gc_statistics_on_heap_change(self, sample: JvmSampleInput) -> None:
        heap = sample.max_heap_bytes if sample.max_heap_bytes is not None else sample.heap_max_bytes
        if heap is None:
            return
        previous = self.gc_heap_bytes
        if previous is not None and abs(heap - previous) > GC_HEAP_CHANGE_TOLERANCE * previous:
            half_life = self.gc_overhead.half_life_seconds
            self.gc_overhead = _ratio_histogram(half_life)
            self.gc_pause = _pause_histogram(half_life)
            self.gc_overhead_max = None
            self.gc_pause_max_seconds = None
        if previous is None or abs(heap - previous) > GC_HEAP_CHANGE_TOLERANCE * previous:
            self.gc_heap_bytes = heap

    def _keep_flags(self, sample: JvmSampleInput) -> None:
        if sample.collector is not None:
            self.collector = sample.collector
        if sample.max_heap_bytes is not None:
            self.max_heap_bytes = sample.max_heap_bytes
        if sample.max_ram_percentage is not None:
            self.max_ram_percentage = sample.max_ram_percentage
        if sample.heap_sizing is not None:
            self.heap_sizing = sample.heap_sizing
        if sample.active_processor_count is not None:
            self.active_processor_count = sample.active_processor_count
        if sample.thread_stack_size_bytes is not None:
            self.thread_stack_size_bytes = sample.thread_stack_size_bytes
        if sample.max_direct_memory_bytes is not None:
            self.max_direct_memory_bytes = sample.max_direct_memory_bytes
        if sample.jvm_options is not None:
            self.jvm_options = sample.jvm_options

    def to_state(self) -> dict[str, object]:
        """JSON-ready dict; histograms without their constant configuration, short keys."""
        return {
            "gc": _histogram_data(self.gc_overhead),
            "pause": _histogram_data(self.gc_pause),
            "last": self.last_timestamp,
            "samples": self.sample_count,
            "covered": self.covered_seconds,
            "gc_heap": self.gc_heap_bytes,
            "gc_max": self.gc_overhead_max,
            "pause_max": self.gc_pause_max_seconds,
            "gcs": self.gc_count_total,
            "full_gcs": self.full_gc_count_total,
            "live": _peaks_data(self.live_set_peaks),
            "meta": _peaks_data(self.metaspace_peaks),
            "code": _peaks_data(self.code_cache_peaks),
            "thr": _peaks_data(self.thread_peaks),
            "direct": _peaks_data(self.direct_memory_peaks),
            "heap_max": self.heap_max_bytes,
            "committed": self.heap_committed_bytes,
            "alloc": self.allocation_rate_bytes_per_second,
            "collector": self.collector,
            "xmx": self.max_heap_bytes,
            "ram_pct": self.max_ram_percentage,
            "heap_sizing": self.heap_sizing,
            "cpus": self.active_processor_count,
            "xss": self.thread_stack_size_bytes,
            "max_direct": self.max_direct_memory_bytes,
            "options": self.jvm_options,
        }

    @classmethod
    def from_state(cls, state: object, half_life_seconds: float) -> JvmState:
        """Rebuild from :meth:`to_state`; TypeError / ValueError / KeyError if malformed."""
        if not isinstance(state, dict):
            raise TypeError("'jvm' must be an object or null")
        collector = _optional_str(state["collector"])
        if collector is not None and collector not in COLLECTORS:
            raise ValueError(f"unknown collector {collector!r}")
        heap_sizing = _optional_str(state["heap_sizing"])
        if heap_sizing is not None and heap_sizing not in HEAP_SIZINGS:
            raise ValueError(f"unknown heap sizing {heap_sizing!r}")
        return cls(
            gc_overhead=_histogram_from(state["gc"], _ratio_histogram(half_life_seconds)),
            gc_pause=_histogram_from(state["pause"], _pause_histogram(half_life_seconds)),
            last_timestamp=_optional_number(state["last"]),
            sample_count=_integer(state["samples"]),
            covered_seconds=_number(state["covered"]),
            gc_heap_bytes=_optional_integer(state["gc_heap"]),
            gc_overhead_max=_optional_number(state["gc_max"]),
            gc_pause_max_seconds=_optional_number(state["pause_max"]),
            gc_count_total=_optional_integer(state["gcs"]),
            full_gc_count_total=_optional_integer(state["full_gcs"]),
            live_set_peaks=_peaks_from(state["live"]),
            metaspace_peaks=_peaks_from(state["meta"]),
            code_cache_peaks=_peaks_from(state["code"]),
            thread_peaks=_peaks_from(state["thr"]),
            direct_memory_peaks=_peaks_from(state["direct"]),
            heap_max_bytes=_optional_integer(state["heap_max"]),
            heap_committed_bytes=_optional_integer(state["committed"]),
            allocation_rate_bytes_per_second=_optional_number(state["alloc"]),
            collector=collector,
            max_heap_bytes=_optional_integer(state["xmx"]),
            max_ram_percentage=_optional_number(state["ram_pct"]),
            heap_sizing=heap_sizing,
            active_processor_count=_optional_integer(state["cpus"]),
            thread_stack_size_bytes=_optional_integer(state["xss"]),
            max_direct_memory_bytes=_optional_integer(state["max_direct"]),
            jvm_options=_optional_str(state["options"]),
        )


@dataclass(frozen=True, slots=True)
class HpaTargetState:
    """An HPA scaling the workload on CPU utilisation of the request (from the inventory)."""

    name: str
    target_utilization: float
    max_replicas: int

    def to_state(self) -> list[object]:
        """Compact JSON-ready list."""
        return [self.name, self.target_utilization, self.max_replicas]

    @classmethod
    def from_state(cls, data: object) -> HpaTargetState | None:
        """Rebuild from :meth:`to_state`; TypeError if malformed."""
        if data is None:
            return None
        if not isinstance(data, list) or len(data) != 3 or not isinstance(data[0], str):
            raise TypeError("spec hpa must be null or [name, target, max replicas]")
        return cls(data[0], _number(data[1]), _integer(data[2]))


@dataclass(frozen=True, slots=True)
class ContainerSpecState:
    """What the workload's spec (from the inventory) says about this container.

    Why in the window: the spec topic is read once per record like the samples, so what
    it said must survive a restart with the rest of the state. ``resources`` holds the
    declared values (:data:`RESOURCE_FIELDS`, None where unset).
    """

    profile: str
    replicas: int | None
    resources: dict[str, float | None]
    timestamp: float
    hpa: HpaTargetState | None = None
    node_pool: str | None = None
    node_fit: tuple[tuple[float, int], ...] = ()
    """Allocatable (cores, bytes) of the nodes the pod can land on (the inventory's
    facts); sizing never recommends what fits none of them. Empty: unknown."""

    def to_state(self) -> dict[str, object]:
        """JSON-ready dict (``fit`` only when known, so older states read the same)."""
        state: dict[str, object] = {
            "profile": self.profile,
            "replicas": self.replicas,
            "resources": self.resources,
            "t": self.timestamp,
            "hpa": None if self.hpa is None else self.hpa.to_state(),
            "pool": self.node_pool,
        }
        if self.node_fit:
            state["fit"] = [[cores, memory] for cores, memory in self.node_fit]
        return state

    @classmethod
    def from_state(cls, data: object) -> ContainerSpecState | None:
        """Rebuild from :meth:`to_state`; TypeError / KeyError if malformed."""
        if data is None:
            return None
        if not isinstance(data, dict):
            raise TypeError("'spec' must be an object or null")
        profile = data["profile"]
        if not isinstance(profile, str):
            raise TypeError("spec profile must be a string")
        resources = _resources_from(data["resources"])
        if resources is None:
            raise TypeError("spec resources must be an object")
        return cls(
            profile=profile,
            replicas=_optional_integer(data["replicas"]),
            resources=resources,
            timestamp=_number(data["t"]),
            hpa=HpaTargetState.from_state(data["hpa"]),
            node_pool=_optional_str(data["pool"]),
            node_fit=_node_fit_from(data.get("fit", [])),
        )


def _node_fit_from(data: object) -> tuple[tuple[float, int], ...]:
    if not isinstance(data, list):
        raise TypeError("spec fit must be a list of [cores, bytes] pairs")
    fit = []
    for pair in data:
        if not isinstance(pair, list) or len(pair) != 2:
            raise TypeError(f"a node fit must be a [cores, bytes] pair, got {pair!r}")
        cores, memory = _number(pair[0]), _integer(pair[1])
        if not (cores > 0 and memory > 0):
            raise ValueError(f"a node fit must be positive, got {pair!r}")
        fit.append((cores, memory))
    return tuple(fit)


@dataclass(slots=True)
class ContainerWindow:
    """Compact, replay-safe summary of one container's usage; see the module docstring.

    Create with :meth:`new`, feed with :meth:`apply`, persist with :meth:`to_bytes`.
    The profile's half-life, peak interval and history are copied in at creation and
    stored with the state, so :meth:`apply` needs no profile.
    """

    cpu: DecayingHistogram
    memory_peak_interval_seconds: float
    history_seconds: float
    memory_peaks: list[tuple[float, int]] = field(default_factory=list)
    sample_count: int = 0
    covered_seconds: float = 0.0
    first_timestamp: float | None = None
    last_timestamp: float | None = None
    cpu_max_cores: float = 0.0
    cpu_throttled_ratio_max: float | None = None
    oom_kills_total: int | None = None
    cpu_limit_cores: float | None = None
    memory_limit_bytes: int | None = None
    last_emitted_hash: str | None = None
    throttling: DecayingHistogram | None = None
    last_oom_timestamp: float | None = None
    oom_memory_limit_bytes: int | None = None
    jvm: JvmState | None = None
    regime_start: float | None = None
    last_proposal_timestamp: float | None = None
    last_proposed: dict[str, float | None] | None = None
    drift_sensitivity: float = 0.5
    drift: DriftTracker | None = None
    spec: ContainerSpecState | None = None

    def __post_init__(self) -> None:
        if self.throttling is None:
            self.throttling = _ratio_histogram(self.cpu.half_life_seconds)
        if self.drift is None:
            self.drift = DriftTracker.new(DriftConfig.from_sensitivity(self.drift_sensitivity))

    @classmethod
    def new(cls, profile: Profile) -> ContainerWindow:
        """An empty window shaped by ``profile`` (CPU half-life, peak interval, history)."""
        return cls(
            cpu=DecayingHistogram(
                CPU_FIRST_BUCKET_CORES,
                CPU_BUCKET_RATIO,
                CPU_MAX_CORES,
                profile.cpu_half_life_seconds,
            ),
            memory_peak_interval_seconds=profile.memory_peak_interval_seconds,
            history_seconds=profile.history_seconds,
            drift_sensitivity=profile.drift_sensitivity,
        )

    @property
    def last_applied_jvm_timestamp(self) -> float | None:
        """Timestamp of the newest JVM sample applied; older or equal ones are skipped."""
        return None if self.jvm is None else self.jvm.last_timestamp

    def cpu_throttled_ratio_percentile(self, p: float) -> float | None:
        """Upper bound of the ``p``-quantile of the throttled ratio (decayed like CPU, ≤ 1);
        None when no sample reported throttling."""
        assert self.throttling is not None  # set in __post_init__
        if self.throttling.is_empty:
            return None
        return min(RATIO_MAX, self.throttling.percentile(p))

    def apply_jvm(self, sample: JvmSampleInput) -> bool:
        """Fold a JVM sample into the window; False (and no change) if already seen.

        JVM samples have their own last-applied timestamp (they come from another topic
        and clock), so replaying either stream is harmless and neither blocks the other.
        The JVM state appears with the first JVM sample and marks the container a JVM.
        """
        if self.jvm is None:
            self.jvm = JvmState.new(self.cpu.half_life_seconds)
        applied = self.jvm.apply(
            sample,
            peak_interval_seconds=self.memory_peak_interval_seconds,
            history_seconds=self.history_seconds,
        )
        if applied and sample.gc_overhead_ratio is not None:
            self._track("gc_overhead", sample.timestamp, sample.gc_overhead_ratio)
        return applied

    def _track(self, signal: Signal, timestamp: float, value: float) -> None:
        assert self.drift is not None  # set in __post_init__
        event = self.drift.update(signal, timestamp, value)
        if event is not None:
            self._reweight(event)

    def _reweight(self, event: DriftEvent) -> None:
        """A new regime: weigh it over the old one (see :data:`DRIFT_REWEIGHT`)."""
        self.regime_start = max(self.regime_start or event.regime_start, event.regime_start)
        if event.signal == "cpu":
            self.cpu.scale(DRIFT_REWEIGHT)
        elif event.signal == "throttling":
            assert self.throttling is not None
            self.throttling.scale(DRIFT_REWEIGHT)
        elif event.signal == "gc_overhead" and self.jvm is not None:
            self.jvm.gc_overhead.scale(DRIFT_REWEIGHT)
        elif event.signal == "memory":
            # Peaks of intervals that ended before the new regime began no longer count;
            # the interval holding the change and everything after it stay.
            start = event.regime_start - self.memory_peak_interval_seconds
            self.memory_peaks[:] = [peak for peak in self.memory_peaks if peak[0] > start]

    def drift_evidence(self) -> list[dict[str, object]]:
        """The last drift event of each signal, for the recommendation's evidence."""
        if self.drift is None:
            return []
        events = (self.drift.last_event(signal) for signal in SIGNALS)
        return [event.to_dict() for event in events if event is not None]

    def leak(self) -> LeakSuspicion | None:
        """A suspected memory leak (a steady climb), or None."""
        return None if self.drift is None else self.drift.leak()

    @property
    def last_applied_timestamp(self) -> float | None:
        """Timestamp of the newest sample applied; older or equal samples are skipped."""
        return self.last_timestamp

    def apply(self, sample: SampleInput) -> bool:
        """Fold ``sample`` into the window; False (and no change) if it was already seen.

        "Already seen" means its timestamp is at or before the last applied one, which
        makes replaying a topic from an earlier offset harmless.
        """
        return self.apply_values(
            sample.timestamp,
            sample.interval_seconds,
            sample.cpu_usage_cores,
            sample.memory_working_set_bytes,
            sample.cpu_throttled_ratio,
            sample.oom_kills,
            sample.cpu_limit_cores,
            sample.memory_limit_bytes,
        )

    def apply_values(  # noqa: PLR0917  # one per signal, positional: the live hot path
        self,
        timestamp: float,
        interval_seconds: float,
        cpu_usage_cores: float,
        memory_working_set_bytes: int | None,
        cpu_throttled_ratio: float | None,
        oom_kills: int | None,
        cpu_limit_cores: float | None,
        memory_limit_bytes: int | None,
    ) -> bool:
        """:meth:`apply` for one sample's values the caller already validated (a
        :class:`SampleInput`'s checks, or the contract's): no object per sample."""
        if self.last_timestamp is not None and timestamp <= self.last_timestamp:
            return False
        self.cpu.add(cpu_usage_cores, interval_seconds, timestamp)
        if memory_working_set_bytes is not None:
            self._add_memory_peak(timestamp, memory_working_set_bytes)
            self._track("memory", timestamp, float(memory_working_set_bytes))
        self._track("cpu", timestamp, cpu_usage_cores)
        if cpu_throttled_ratio is not None:
            self._track("throttling", timestamp, cpu_throttled_ratio)
        self.sample_count += 1
        self.covered_seconds += interval_seconds
        if self.first_timestamp is None:
            self.first_timestamp = timestamp
        self.last_timestamp = timestamp
        self.cpu_max_cores = max(self.cpu_max_cores, cpu_usage_cores)
        if cpu_throttled_ratio is not None:
            self.cpu_throttled_ratio_max = max(
                self.cpu_throttled_ratio_max or 0.0, cpu_throttled_ratio
            )
            assert self.throttling is not None  # set in __post_init__
            self.throttling.add(cpu_throttled_ratio, interval_seconds, timestamp)
        if oom_kills is not None:
            self.oom_kills_total = (self.oom_kills_total or 0) + oom_kills
            if oom_kills > 0:
                # The limit in force at the kill: this sample's, else the last one seen.
                self.last_oom_timestamp = timestamp
                self.oom_memory_limit_bytes = (
                    memory_limit_bytes
                    if memory_limit_bytes is not None
                    else self.memory_limit_bytes
                )
        self.cpu_limit_cores = cpu_limit_cores
        self.memory_limit_bytes = memory_limit_bytes
        return True

    def apply_run(self, run: SampleRun) -> list[int]:
        """Fold a run of samples in, exactly as :meth:`apply` on each in order would; the
        indices of the samples applied (the others were already seen).

        Why a second way in: applying batch by batch, column by column, costs a fraction
        of a call per sample. Each structure takes its column in one pass, split only
        where a drift event reweights it (for the CPU histogram and memory peaks after
        the sample that completed the event, for the throttling histogram before it, as
        :meth:`apply` orders them), so the state is equal to the last bit.
        """
        fresh = fresh_indices(run.timestamps, self.last_timestamp)
        if fresh:
            self.apply_fresh_run(run if len(fresh) == len(run) else run.select(fresh))
        return fresh

    def apply_fresh_run(self, run: SampleRun) -> None:
        """:meth:`apply_run` for a non-empty run the caller already cut to fresh samples
        (strictly increasing timestamps, all after :attr:`last_applied_timestamp`)."""
        assert self.drift is not None  # set in __post_init__
        assert self.throttling is not None
        timestamps = run.timestamps
        memory = run.memory_working_set_bytes
        ratios = run.cpu_throttled_ratios
        memory_events = self.drift.update_run(
            "memory", timestamps, [None if m is None else float(m) for m in memory]
        )
        cpu_events = self.drift.update_run("cpu", timestamps, run.cpu_cores)
        throttling_events = self.drift.update_run("throttling", timestamps, ratios)
        self._cpu_run(run, cpu_events)
        self._memory_run(timestamps, memory, memory_events)
        self._throttling_run(run, throttling_events)
        covered = self.covered_seconds
        for interval in run.intervals:
            covered += interval
        self.covered_seconds = covered
        self.sample_count += len(timestamps)
        if self.first_timestamp is None:
            self.first_timestamp = timestamps[0]
        self.last_timestamp = timestamps[-1]
        self.cpu_max_cores = max(self.cpu_max_cores, *run.cpu_cores)
        reported = [ratio for ratio in ratios if ratio is not None]
        if reported:
            self.cpu_throttled_ratio_max = max(self.cpu_throttled_ratio_max or 0.0, *reported)
        memory_limit = self.memory_limit_bytes
        for index, kills in enumerate(run.oom_kills):
            if kills is not None:
                self.oom_kills_total = (self.oom_kills_total or 0) + kills
                if kills > 0:
                    limit = run.memory_limit_bytes[index]
                    self.last_oom_timestamp = timestamps[index]
                    self.oom_memory_limit_bytes = limit if limit is not None else memory_limit
            memory_limit = run.memory_limit_bytes[index]
        self.cpu_limit_cores = run.cpu_limit_cores[-1]
        self.memory_limit_bytes = memory_limit

    def _cpu_run(self, run: SampleRun, events: list[tuple[int, DriftEvent]]) -> None:
        start = 0
        for index, event in events:  # an event reweights after its sample is in
            self.cpu.add_run(
                run.cpu_cores[start : index + 1],
                run.intervals[start : index + 1],
                run.timestamps[start : index + 1],
            )
            self._reweight(event)
            start = index + 1
        if start == 0:
            self.cpu.add_run(run.cpu_cores, run.intervals, run.timestamps)
        elif start < len(run):
            self.cpu.add_run(run.cpu_cores[start:], run.intervals[start:], run.timestamps[start:])

    def _memory_run(
        self,
        timestamps: Sequence[float],
        memory: Sequence[int | None],
        events: list[tuple[int, DriftEvent]],
    ) -> None:
        at = dict(events)
        peaks = self.memory_peaks
        interval = self.memory_peak_interval_seconds
        history = self.history_seconds
        floor = math.floor
        for index, working_set in enumerate(memory):
            if working_set is None:
                continue
            timestamp = timestamps[index]
            start = floor(timestamp / interval) * interval
            if peaks and peaks[-1][0] == start and working_set <= peaks[-1][1]:
                # the interval's peak stands: only the history can move (_add_peak's result)
                _expire_peaks(peaks, timestamp, interval, history)
            else:
                self._add_memory_peak(timestamp, working_set)
            if index in at:
                self._reweight(at[index])

    def _throttling_run(self, run: SampleRun, events: list[tuple[int, DriftEvent]]) -> None:
        throttling = self.throttling
        assert throttling is not None  # __post_init__
        at = dict(events)
        values: list[float] = []
        weights: list[float] = []
        times: list[float] = []
        for index, ratio in enumerate(run.cpu_throttled_ratios):
            if ratio is None:
                continue
            if index in at:  # a throttling event reweights before its own sample is in
                throttling.add_run(values, weights, times)
                values, weights, times = [], [], []
                self._reweight(at[index])
            values.append(ratio)
            weights.append(run.intervals[index])
            times.append(run.timestamps[index])
        if values:
            throttling.add_run(values, weights, times)

    def memory_peak_bytes(self) -> int | None:
        """Largest working-set peak in the history window ending at the last sample.

        Exact while at most :data:`MAX_PEAK_CANDIDATES` intervals can still become the
        maximum (always, unless memory falls steadily for days); beyond that, the
        estimate can only be too high, never too low. None before the first sample.
        """
        return self.memory_peaks[0][1] if self.memory_peaks else None

    def _add_memory_peak(self, timestamp: float, working_set: int) -> None:
        interval = self.memory_peak_interval_seconds
        _add_peak(
            self.memory_peaks,
            timestamp,
            working_set,
            interval=interval,
            history=self.history_seconds,
            cap=MAX_PEAK_CANDIDATES,
        )

    # -- serialisation ---------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Versioned orjson encoding of the whole state (``{"v": 5, ...}``)."""
        state: dict[str, object] = {
            "v": STATE_VERSION,
            "cpu": self.cpu.to_state(),
            "peak_interval": self.memory_peak_interval_seconds,
            "history": self.history_seconds,
            "peak_start": [start for start, _ in self.memory_peaks],
            "peak_bytes": [peak for _, peak in self.memory_peaks],
            "samples": self.sample_count,
            "covered": self.covered_seconds,
            "first": self.first_timestamp,
            "last": self.last_timestamp,
            "cpu_max": self.cpu_max_cores,
            "throttled_max": self.cpu_throttled_ratio_max,
            "oom_kills": self.oom_kills_total,
            "cpu_limit": self.cpu_limit_cores,
            "memory_limit": self.memory_limit_bytes,
            "emitted_hash": self.last_emitted_hash,
            "throttling": None if self.throttling is None else _histogram_data(self.throttling),
            "last_oom": self.last_oom_timestamp,
            "oom_limit": self.oom_memory_limit_bytes,
            "jvm": None if self.jvm is None else self.jvm.to_state(),
            "regime": self.regime_start,
            "proposed_at": self.last_proposal_timestamp,
            "proposed": self.last_proposed,
            "drift_sens": self.drift_sensitivity,
            "drift": None if self.drift is None else self.drift.to_state(encoded=True),
            "spec": None if self.spec is None else self.spec.to_state(),
        }
        # An exact-size copy: orjson's bytes keep the whole buffer it wrote into (8 KB
        # for a 2.6 KB state), and a worker keeps one checkpoint per container.
        return bytes(memoryview(orjson.dumps(state)))

    @classmethod
    def from_bytes(cls, data: bytes) -> ContainerWindow:
        """Decode :meth:`to_bytes` output; :class:`WindowStateError` if unreadable.

        An unknown ``"v"`` is rejected rather than guessed at: a checkpoint from a newer
        release must not be half-understood by an older worker.
        """
        try:
            state = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise WindowStateError(f"container window state is not valid JSON: {exc}") from exc
        if not isinstance(state, dict):
            raise WindowStateError("container window state must be a JSON object")
        version = state.get("v")
        if version not in READABLE_STATE_VERSIONS or isinstance(version, bool):
            raise WindowStateError(
                f"container window state has version {version!r}; this release reads "
                f"versions {', '.join(map(str, READABLE_STATE_VERSIONS))}. Drop the checkpoint "
                "(the window rebuilds from new samples) or run a release that knows that version."
            )
        try:
            cpu_state = state["cpu"]
            if not isinstance(cpu_state, dict):
                raise TypeError("'cpu' must be an object")
            starts = state["peak_start"]
            peaks = state["peak_bytes"]
            if not isinstance(starts, list) or not isinstance(peaks, list):
                raise TypeError("'peak_start' and 'peak_bytes' must be lists")
            if len(starts) != len(peaks):
                raise TypeError("'peak_start' and 'peak_bytes' differ in length")
            cpu = DecayingHistogram.from_state(cpu_state)
            half_life = cpu.half_life_seconds
            v2 = version >= 2
            v3 = version >= 3
            v4 = version >= 4
            v5 = version >= 5
            sensitivity = _number(state["drift_sens"]) if v4 else 0.5
            return cls(
                cpu=cpu,
                memory_peak_interval_seconds=_number(state["peak_interval"]),
                history_seconds=_number(state["history"]),
                memory_peaks=[
                    (_number(start), _integer(peak))
                    for start, peak in zip(starts, peaks, strict=True)
                ],
                sample_count=_integer(state["samples"]),
                covered_seconds=_number(state["covered"]),
                first_timestamp=_optional_number(state["first"]),
                last_timestamp=_optional_number(state["last"]),
                cpu_max_cores=_number(state["cpu_max"]),
                cpu_throttled_ratio_max=_optional_number(state["throttled_max"]),
                oom_kills_total=_optional_integer(state["oom_kills"]),
                cpu_limit_cores=_optional_number(state["cpu_limit"]),
                memory_limit_bytes=_optional_integer(state["memory_limit"]),
                last_emitted_hash=_optional_str(state["emitted_hash"]),
                throttling=_histogram_from(state["throttling"], _ratio_histogram(half_life))
                if v2
                else None,
                last_oom_timestamp=_optional_number(state["last_oom"]) if v2 else None,
                oom_memory_limit_bytes=_optional_integer(state["oom_limit"]) if v2 else None,
                jvm=None
                if not v2 or state["jvm"] is None
                else JvmState.from_state(state["jvm"], half_life),
                regime_start=_optional_number(state["regime"]) if v3 else None,
                last_proposal_timestamp=_optional_number(state["proposed_at"]) if v3 else None,
                last_proposed=_resources_from(state["proposed"]) if v3 else None,
                drift_sensitivity=sensitivity,
                drift=DriftTracker.from_state(
                    state["drift"], DriftConfig.from_sensitivity(sensitivity)
                )
                if v4 and state["drift"] is not None
                else None,
                spec=ContainerSpecState.from_state(state["spec"]) if v5 else None,
            )
        except KeyError as exc:
            raise WindowStateError(
                f"container window state lacks the field {exc.args[0]!r}"
            ) from exc
        except (TypeError, ValueError, DriftStateError) as exc:
            raise WindowStateError(f"container window state is malformed: {exc}") from exc


def _add_peak(
    peaks: list[tuple[float, int]],
    timestamp: float,
    value: int,
    *,
    interval: float,
    history: float,
    cap: int,
) -> None:
    # ``peaks`` is a "sliding window maximum" queue: interval starts increase and peaks
    # strictly decrease, so the head is the maximum of the window. An interval whose peak
    # is at or below a later one's can never be the maximum again and is dropped on
    # arrival of that later peak; the head expires with the history (_expire_peaks).
    start = math.floor(timestamp / interval) * interval
    if peaks and peaks[-1][0] == start:
        value = max(value, peaks[-1][1])
        peaks.pop()
    while peaks and peaks[-1][1] <= value:
        peaks.pop()
    peaks.append((start, value))
    _expire_peaks(peaks, timestamp, interval, history)
    while len(peaks) > cap:
        _merge_closest_peaks(peaks)


def _expire_peaks(
    peaks: list[tuple[float, int]], timestamp: float, interval: float, history: float
) -> None:
    oldest_kept = timestamp - history
    while peaks and peaks[0][0] + interval <= oldest_kept:
        peaks.pop(0)


def _peak_of(peaks: list[tuple[float, int]]) -> int | None:
    return peaks[0][1] if peaks else None


def _peaks_data(peaks: list[tuple[float, int]]) -> list[list[float | int]]:
    # Interval starts are whole seconds in practice: written as integers (2 bytes less
    # each) and read back as the same floats.
    return [[int(start) if start.is_integer() else start, value] for start, value in peaks]


def _peaks_from(data: object) -> list[tuple[float, int]]:
    if not isinstance(data, list):
        raise TypeError("a peak series must be a list of [start, value] pairs")
    peaks: list[tuple[float, int]] = []
    for pair in data:
        if not isinstance(pair, list) or len(pair) != 2:
            raise TypeError(f"a peak must be a [start, value] pair, got {pair!r}")
        peaks.append((_number(pair[0]), _integer(pair[1])))
    return peaks


def _ratio_histogram(half_life_seconds: float) -> DecayingHistogram:
    return DecayingHistogram(RATIO_FIRST_BUCKET, RATIO_BUCKET_RATIO, RATIO_MAX, half_life_seconds)


def _pause_histogram(half_life_seconds: float) -> DecayingHistogram:
    return DecayingHistogram(
        PAUSE_FIRST_BUCKET_SECONDS, PAUSE_BUCKET_RATIO, PAUSE_MAX_SECONDS, half_life_seconds
    )


_HISTOGRAM_CONFIG_KEYS: Final = ("first_bucket", "ratio", "max_value", "half_life_seconds")


def _histogram_data(histogram: DecayingHistogram) -> list[object]:
    # The configuration is a constant of this module (and the half-life the window's),
    # so only the data is stored, as [reference, [bucket indices], [weights]]: smaller.
    state = histogram.to_state()
    return [state["reference"], state["index"], state["weight"]]


def _histogram_from(data: object, empty: DecayingHistogram) -> DecayingHistogram:
    if not isinstance(data, list) or len(data) != 3:  # the triple written above
        raise TypeError("a histogram must be a [reference, indices, weights] list")
    reference, indices, weights = data
    config = {key: empty.to_state()[key] for key in _HISTOGRAM_CONFIG_KEYS}
    return DecayingHistogram.from_state(
        {**config, "reference": reference, "index": indices, "weight": weights}
    )


def _merge_closest_peaks(peaks: list[tuple[float, int]]) -> None:
    # Merge the adjacent pair whose peaks differ least (relatively): the later interval
    # takes the earlier, higher peak. The maximum can only be overestimated, and only by
    # that smallest difference, for at most the time between the two intervals.
    best = min(
        range(len(peaks) - 1),
        key=lambda i: (peaks[i][1] - peaks[i + 1][1]) / max(peaks[i][1], 1),
    )
    peaks[best : best + 2] = [(peaks[best + 1][0], peaks[best][1])]


RESOURCE_FIELDS: Final = (
    "cpu_request_cores",
    "cpu_limit_cores",
    "memory_request_bytes",
    "memory_limit_bytes",
    "jvm_max_heap_bytes",
)
"""The resource values a proposal sets (the contract's ``resources`` object)."""


def _resources_from(data: object) -> dict[str, float | None] | None:
    if data is None:
        return None
    if not isinstance(data, dict) or set(data) != set(RESOURCE_FIELDS):
        raise TypeError(f"'proposed' must be null or an object with {list(RESOURCE_FIELDS)}")
    return {key: _optional_number(data[key]) for key in RESOURCE_FIELDS}


def _require(ok: bool, message: str, value: object) -> None:
    if not ok:
        raise InvalidMessageError(f"sample {message}, got {value!r}", stage="window")


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: object) -> float:
    if not _finite(value):
        raise TypeError(f"expected a finite number, got {value!r}")
    assert isinstance(value, int | float)
    return float(value)


def _optional_number(value: object) -> float | None:
    return None if value is None else _number(value)


def _integer(value: object) -> int:
    if not _whole(value):
        raise TypeError(f"expected an integer, got {value!r}")
    assert isinstance(value, int)
    return value


def _optional_integer(value: object) -> int | None:
    return None if value is None else _integer(value)


def _optional_str(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"expected a string or null, got {value!r}")
