"""Per-container state: everything sizing needs from a container's history, in ~2 KB.

A :class:`ContainerWindow` never keeps raw samples. It keeps

- a :class:`~pipeline.core.histogram.DecayingHistogram` of CPU usage, each sample
  weighted by its interval (so a 60 s sample counts six times a 10 s one);
- the memory working-set peak per interval (``profile.memory_peak_interval_seconds``),
  as the short list of intervals that can still be the maximum of the history window
  (see :meth:`ContainerWindow.memory_peak_bytes`);
- counters and extremes for the evidence: samples, covered seconds, first and last
  timestamp, CPU max, throttling max, OOM kills, the last observed limits;
- ``last_emitted_hash``, so a restarted worker knows what it already published.

Replay is idempotent: a sample at or before the last applied timestamp changes nothing.
State is serialised explicitly (versioned orjson, never pickle) so a checkpoint written
by one release is read, or rejected with a clear message, by the next.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

import orjson

from pipeline.core.histogram import DecayingHistogram
from pipeline.core.profiles import Profile
from pipeline.errors import DaytwoError, InvalidMessageError

STATE_VERSION: Final = 1
"""Version written by :meth:`ContainerWindow.to_bytes`; others are rejected on read."""

CPU_FIRST_BUCKET_CORES: Final = 0.001
CPU_BUCKET_RATIO: Final = 1.05
CPU_MAX_CORES: Final = 1000.0

MAX_PEAK_CANDIDATES: Final = 32
"""Bound on stored memory peak intervals; beyond it, adjacent ones merge conservatively."""


class WindowStateError(DaytwoError):
    """A serialised container window cannot be read (corrupt, or an unknown version)."""


@dataclass(frozen=True, slots=True)
class SampleInput:
    """One container sample as the window needs it, in base units (seconds, cores, bytes).

    Why a separate type from the wire model: the core stays free of pydantic and of
    fields it does not use. ``None`` means the source did not report that signal.
    Invalid values raise :class:`~pipeline.errors.InvalidMessageError` (stage
    ``"window"``), which the worker turns into a dead-letter record.
    """

    timestamp: float
    interval_seconds: float
    cpu_usage_cores: float
    memory_working_set_bytes: int
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
        _require(
            _whole(self.memory_working_set_bytes) and self.memory_working_set_bytes >= 0,
            "memory_working_set_bytes must be an integer ≥ 0",
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
        )

    @property
    def last_applied_timestamp(self) -> float | None:
        """Timestamp of the newest sample applied; older or equal samples are skipped."""
        return self.last_timestamp

    def apply(self, sample: SampleInput) -> bool:
        """Fold ``sample`` into the window; False (and no change) if it was already seen.

        "Already seen" means its timestamp is at or before the last applied one, which
        makes replaying a topic from an earlier offset harmless.
        """
        if self.last_timestamp is not None and sample.timestamp <= self.last_timestamp:
            return False
        self.cpu.add(sample.cpu_usage_cores, sample.interval_seconds, sample.timestamp)
        self._add_memory_peak(sample.timestamp, sample.memory_working_set_bytes)
        self.sample_count += 1
        self.covered_seconds += sample.interval_seconds
        if self.first_timestamp is None:
            self.first_timestamp = sample.timestamp
        self.last_timestamp = sample.timestamp
        self.cpu_max_cores = max(self.cpu_max_cores, sample.cpu_usage_cores)
        if sample.cpu_throttled_ratio is not None:
            self.cpu_throttled_ratio_max = max(
                self.cpu_throttled_ratio_max or 0.0, sample.cpu_throttled_ratio
            )
        if sample.oom_kills is not None:
            self.oom_kills_total = (self.oom_kills_total or 0) + sample.oom_kills
        self.cpu_limit_cores = sample.cpu_limit_cores
        self.memory_limit_bytes = sample.memory_limit_bytes
        return True

    def memory_peak_bytes(self) -> int | None:
        """Largest working-set peak in the history window ending at the last sample.

        Exact while at most :data:`MAX_PEAK_CANDIDATES` intervals can still become the
        maximum (always, unless memory falls steadily for days); beyond that, the
        estimate can only be too high, never too low. None before the first sample.
        """
        return self.memory_peaks[0][1] if self.memory_peaks else None

    def _add_memory_peak(self, timestamp: float, working_set: int) -> None:
        # memory_peaks is a "sliding window maximum" queue: interval starts increase and
        # peaks strictly decrease, so the head is the maximum of the window. An interval
        # whose peak is at or below a later one's can never be the maximum again and is
        # dropped on arrival of that later peak; the head expires with the history.
        interval = self.memory_peak_interval_seconds
        start = math.floor(timestamp / interval) * interval
        peaks = self.memory_peaks
        if peaks and peaks[-1][0] == start:
            working_set = max(working_set, peaks[-1][1])
            peaks.pop()
        while peaks and peaks[-1][1] <= working_set:
            peaks.pop()
        peaks.append((start, working_set))
        oldest_kept = timestamp - self.history_seconds
        while peaks and peaks[0][0] + interval <= oldest_kept:
            peaks.pop(0)
        while len(peaks) > MAX_PEAK_CANDIDATES:
            _merge_closest_peaks(peaks)

    # -- serialisation ---------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Versioned orjson encoding of the whole state (``{"v": 1, ...}``)."""
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
        }
        return orjson.dumps(state)

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
        if version != STATE_VERSION:
            raise WindowStateError(
                f"container window state has version {version!r}; this release reads only "
                f"version {STATE_VERSION}. Drop the checkpoint (the window rebuilds from "
                "new samples) or run a release that knows that version."
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
            return cls(
                cpu=DecayingHistogram.from_state(cpu_state),
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
            )
        except KeyError as exc:
            raise WindowStateError(
                f"container window state lacks the field {exc.args[0]!r}"
            ) from exc
        except (TypeError, ValueError) as exc:
            raise WindowStateError(f"container window state is malformed: {exc}") from exc


def _merge_closest_peaks(peaks: list[tuple[float, int]]) -> None:
    # Merge the adjacent pair whose peaks differ least (relatively): the later interval
    # takes the earlier, higher peak. The maximum can only be overestimated, and only by
    # that smallest difference, for at most the time between the two intervals.
    best = min(
        range(len(peaks) - 1),
        key=lambda i: (peaks[i][1] - peaks[i + 1][1]) / max(peaks[i][1], 1),
    )
    peaks[best : best + 2] = [(peaks[best + 1][0], peaks[best][1])]


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
