"""Per-container drift detection: has a signal's level moved, and is memory leaking?

Sizing from a long history is wrong right after a workload changes (a release doubles
its memory, a traffic shift halves its CPU). :class:`DriftTracker` watches four signals
per container and says when one of them entered a new regime, so sizing can weigh the
new regime and the recommendation can cite the change as evidence. It also watches
memory for a steady climb (a suspected leak), which should never be "right-sized" by
raising the limit.

How a sample travels (cheap per sample, River once per aggregate bucket)::

    sample ──▶ bucket of ``aggregate_seconds`` (sum, count)          per sample: a few adds
                  │ bucket closes when a later sample arrives
                  ▼
            bucket mean / regime level ──▶ river ADWIN       (level shifts; whole percent)
            (normalised: ~1.0 in a     └─▶ river PageHinkley (gradual change)
             stationary regime)
                  │ either fires: both stop, the next ``regime_warmup_buckets`` are averaged
                  ▼
            |new mean - level| >= min_relative_shift * level ?
                  │ no: same regime, fresh detectors (noise or a real but small shift)
                  │ yes: new regime (that mean is its level), fresh detectors, and:
                  ▼      level within the band held one period earlier? ── yes: seasonal,
            DriftEvent (detected_at = the sample that closed the last        counted, no
            averaged bucket; level_after = the averaged mean)                 event

One step therefore gives one event: the detectors restart on the new regime, and the
event is reported only once the new level has held for the averaging buckets (with the
defaults a 2x step is reported about 9 to 10 minutes after it happened).

Normalisation: detectors see ``bucket mean / regime level``, where the regime level is
the mean of the regime's first ``regime_warmup_buckets`` buckets, fixed for the regime's
life. A fixed divisor keeps a stationary regime near 1.0 whatever the unit (bytes,
cores, ratio), so one ADWIN delta and one Page-Hinkley threshold serve every signal
and every container; an adaptive divisor would absorb the very shifts we look for. A
per-signal floor (``*_floor``) stands in for levels near zero (throttling is often 0).
ADWIN is fed that ratio in whole percent (``round(100 * x)``): its saved bucket totals
are then integers and its bucket variances short binary fractions, which halves its
saved size; a 1 % resolution is far finer than the shifts that count.

Daily cycles: a workload busy by day and idle by night changes level twice a day, and
the detectors rightly see that. What makes it *not* drift is that it happened at the
same time yesterday. Each signal remembers the regimes of the last period (first bucket
and level; one pair for a steady signal, a dozen for a cyclic one). A new level that
lies within the band of levels held within ``seasonal_tolerance_seconds`` of the same
time one period earlier (widened by ``min_relative_shift``, twice that if the signal was
moving then, since a moving signal's regime levels lag it by up to one shift) is
counted as seasonal (:meth:`DriftTracker.seasonal_count`, :meth:`DriftTracker.is_periodic`):
the detectors follow it but no :class:`DriftEvent` is returned. The first period of a
cyclic workload therefore does produce events; later periods do not (a 0.2..1.0 core
daily sine: 6 to 8 events on day one, 1 or 2 on day two, none on days three to
fourteen, about 8 seasonal matches a day). A real step on a cyclic workload is still an
event, though it may wait for a phase at which yesterday's band does not cover it.

State: explicit, versioned JSON (``{"v": 1, ...}``), never pickle. River's
Page-Hinkley keeps its state in plain Python attributes, which are written as numbers.
River's ADWIN (0.26) keeps its state in a Rust object whose ``__getstate__`` returns
opaque bytes: a bincode encoding of that object's fields followed by the wrapper's
constructor arguments. This module decodes those bytes into numbers and lists
(``_adwin_to_state``), writes those, and on restore validates them, re-encodes them
and hands them to the Rust object's ``__setstate__``; the restored detector's bytes
equal the saved one's. The layout is checked once per process against the installed
River (decode, compare with the object's own getters, re-encode, same bytes); if a River
release changes it, saving and restoring fail with :class:`DriftStateError` naming the
River version instead of restoring garbage. The ADWIN window is capped at
``adwin_max_window_buckets`` so that state stays small; at the cap ADWIN restarts on the
same regime while Page-Hinkley (constant-size state, never capped) covers the minutes
ADWIN needs to warm up.

Memory leaks: a least-squares line is fitted (running sums, no samples kept) to the
memory bucket means since the current climb began; see :meth:`DriftTracker.leak`.

Everything here is pure: no clock (timestamps come with the samples), no I/O.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal, cast

import orjson
import river
from river.drift import ADWIN, PageHinkley
from river.stats import Mean

from pipeline.errors import DaytwoError

_RIVER_VERSION: Final[str] = str(getattr(river, "__version__", "unknown"))

Signal = Literal["cpu", "memory", "gc_overhead", "throttling"]
SIGNALS: Final[tuple[Signal, ...]] = ("cpu", "memory", "gc_overhead", "throttling")
"""Signals a tracker watches, in state order: CPU cores, memory working-set bytes, JVM
GC overhead ratio, CFS throttled ratio."""

Detector = Literal["adwin", "page-hinkley"]
Direction = Literal["up", "down"]

STATE_VERSION: Final = 1
"""Version written by :meth:`DriftTracker.to_state` and the only one it reads."""

ADWIN_MAX_BUCKETS: Final = 1
"""River ADWIN's ``max_buckets`` (entries per exponential row before merging). One keeps
the window a binary counter: at most one (total, variance) pair per power of two, which
is what keeps the saved state small; cut points stay exact for the recent past, where
changes are looked for. Not configurable: restored rows must match it."""
ADWIN_CLOCK: Final = 1
"""Check for a cut on every bucket (River's default, 32, would check every 32 minutes)."""
ADWIN_MIN_WINDOW_LENGTH: Final = 5
ADWIN_GRACE_PERIOD: Final = 10
PH_MIN_INSTANCES: Final = 30
"""Page-Hinkley buckets before it may fire (River's default)."""
MAX_REGIME_HISTORY: Final = 24
"""Bound on remembered regimes per signal (for the same-time-yesterday comparison)."""
LEVEL_SIGNIFICANT_DIGITS: Final = 6
"""Regime levels are rounded to this many significant digits when set: plenty for a
divisor and for evidence, and short in the saved state."""


class DriftStateError(DaytwoError, ValueError):
    """Saved drift state is malformed, of an unknown version, or River's ADWIN layout
    changed; the container's drift detection restarts from scratch if the caller
    chooses to drop the state."""


# -- configuration -----------------------------------------------------------------


def _check_range(name: str, value: float, low: float, high: float, *, open_low: bool) -> None:
    inside_low = value > low if open_low else value >= low
    if not (math.isfinite(value) and inside_low and value <= high):
        bracket = "(" if open_low else "["
        raise ValueError(f"DriftConfig.{name} must be in {bracket}{low}, {high}], got {value!r}")


@dataclass(frozen=True, slots=True)
class DriftConfig:
    """Tuning of drift and leak detection; a profile carries one number, see
    :meth:`from_sensitivity`. Every field is validated on construction."""

    aggregate_seconds: float = 60.0
    """Samples are averaged per bucket of this length and detectors see one value per
    bucket: no River call on the per-sample path, and less noise in what they see."""
    adwin_delta: float = 0.002
    """River ADWIN confidence; higher = more sensitive (and more false alarms)."""
    ph_threshold: float = 3.0
    """Page-Hinkley threshold (lambda) on the normalised signal: a regime that moved by
    a share ``s`` crosses it after about ``threshold / (s - ph_delta)`` buckets."""
    ph_delta: float = 0.05
    """Page-Hinkley tolerated drift per bucket, as a share of the regime level."""
    ph_alpha: float = 0.9999
    """Page-Hinkley forgetting factor (River's default)."""
    min_relative_shift: float = 0.25
    """A detected change counts only if the level moved by at least this share of the
    previous level: statistically real but small shifts are not worth a new regime."""
    regime_warmup_buckets: int = 5
    """Buckets averaged to set a regime's level (the normalisation divisor); detectors
    start after them."""
    adwin_max_window_buckets: int = 128
    """ADWIN's window is restarted (same regime) when it holds this many buckets (about
    two hours of 60 s buckets: at most 7 rows of state). ADWIN's job is the sharp
    shift, which a couple of hours of reference shows as well as a month; the regime
    level and Page-Hinkley carry the long memory."""
    seasonal_period_seconds: float = 86400.0
    """A change to the level seen one period earlier (same time of day) is seasonal."""
    seasonal_tolerance_seconds: float = 7200.0
    """Half-width of the window, one period earlier, whose regime levels (widened by
    ``min_relative_shift``, doubled if several regimes fall in it) a new level must lie
    within to count as seasonal."""
    cpu_floor_cores: float = 0.01
    """Levels below this are treated as this (normalisation and shift share)."""
    memory_floor_bytes: float = 16 * 1024 * 1024
    """Levels below this are treated as this (normalisation and shift share)."""
    ratio_floor: float = 0.05
    """Floor for the ratio signals (GC overhead, throttling), which are often ~0: a
    move from 0.1 % to 0.5 % throttled is noise, not a new regime."""
    leak_min_seconds: float = 6 * 3600
    """A climb must last this long before it is called a suspected leak ..."""
    leak_min_relative_growth: float = 0.2
    """... and grow memory (by the fitted line) by at least this share ..."""
    leak_min_r2: float = 0.9
    """... and fit a straight line this well (a step fits a line with r² ≤ 0.75)."""
    leak_segment_seconds: float = 2 * 86400
    """A climb segment that is not a suspected leak after this long starts afresh, so a
    leak that begins after a long flat stretch is not diluted by it."""

    def __post_init__(self) -> None:
        _check_range("aggregate_seconds", self.aggregate_seconds, 0.0, 86400.0, open_low=True)
        _check_range("adwin_delta", self.adwin_delta, 0.0, 1.0, open_low=True)
        if self.adwin_delta >= 1.0:
            raise ValueError(f"DriftConfig.adwin_delta must be < 1, got {self.adwin_delta!r}")
        _check_range("ph_threshold", self.ph_threshold, 0.0, 1e6, open_low=True)
        _check_range("ph_delta", self.ph_delta, 0.0, 1.0, open_low=False)
        _check_range("ph_alpha", self.ph_alpha, 0.0, 1.0, open_low=True)
        _check_range("min_relative_shift", self.min_relative_shift, 0.0, 10.0, open_low=True)
        for name in ("regime_warmup_buckets", "adwin_max_window_buckets"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"DriftConfig.{name} must be an int, got {value!r}")
        _check_range("regime_warmup_buckets", self.regime_warmup_buckets, 1, 10_000, open_low=False)
        _check_range(
            "adwin_max_window_buckets",
            self.adwin_max_window_buckets,
            4 * ADWIN_MIN_WINDOW_LENGTH,
            2**20,
            open_low=False,
        )
        _check_range(
            "seasonal_period_seconds", self.seasonal_period_seconds, 0.0, 1e8, open_low=True
        )
        _check_range(
            "seasonal_tolerance_seconds",
            self.seasonal_tolerance_seconds,
            0.0,
            self.seasonal_period_seconds / 2,
            open_low=False,
        )
        _check_range("cpu_floor_cores", self.cpu_floor_cores, 0.0, 1e3, open_low=True)
        _check_range("memory_floor_bytes", self.memory_floor_bytes, 0.0, 2.0**50, open_low=True)
        _check_range("ratio_floor", self.ratio_floor, 0.0, 1.0, open_low=True)
        _check_range("leak_min_seconds", self.leak_min_seconds, 0.0, 1e8, open_low=True)
        _check_range(
            "leak_min_relative_growth", self.leak_min_relative_growth, 0.0, 100.0, open_low=True
        )
        _check_range("leak_min_r2", self.leak_min_r2, 0.0, 1.0, open_low=True)
        _check_range(
            "leak_segment_seconds",
            self.leak_segment_seconds,
            self.leak_min_seconds,
            1e9,
            open_low=False,
        )

    @classmethod
    def from_sensitivity(cls, sensitivity: float) -> DriftConfig:
        """The config for a profile's one-number drift sensitivity in (0, 1].

        0.5 gives the defaults; higher detects sooner and raises more false alarms.
        With ``k = 2 * (sensitivity - 0.5)`` in (-1, 1]:

        - ``adwin_delta = 0.002 * 100**k``          (2e-5 .. 0.2)
        - ``ph_threshold = 3.0 / 4**k``              (12 .. 0.75)
        - ``min_relative_shift = 0.25 / 2**k``       (0.5 .. 0.125)
        - ``leak_min_seconds = 6 h / 2**k``          (12 h .. 3 h)

        The rest keep their defaults.
        """
        _check_range("sensitivity", sensitivity, 0.0, 1.0, open_low=True)
        k = 2.0 * (sensitivity - 0.5)
        return cls(
            adwin_delta=0.002 * 100.0**k,
            ph_threshold=3.0 / 4.0**k,
            min_relative_shift=0.25 / 2.0**k,
            leak_min_seconds=6 * 3600 / 2.0**k,
        )

    def floor(self, signal: Signal) -> float:
        """The smallest level this signal is normalised by (its unit's "nearly zero")."""
        if signal == "cpu":
            return self.cpu_floor_cores
        if signal == "memory":
            return self.memory_floor_bytes
        return self.ratio_floor


# -- results -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DriftEvent:
    """A signal entered a new regime: the evidence a recommendation cites for weighing
    recent history over old, in the signal's own units (cores, bytes, ratio)."""

    signal: Signal
    detector: Detector
    detected_at: float
    """Timestamp of the sample that completed detection (it closed the last bucket)."""
    regime_start: float
    """Best estimate of when the new level began."""
    direction: Direction
    level_before: float
    level_after: float

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict for the recommendation's evidence."""
        return {
            "signal": self.signal,
            "detector": self.detector,
            "detected_at": self.detected_at,
            "regime_start": self.regime_start,
            "direction": self.direction,
            "level_before": self.level_before,
            "level_after": self.level_after,
        }


@dataclass(frozen=True, slots=True)
class LeakSuspicion:
    """Memory has climbed steadily (a straight line fits) for long enough to suspect a
    leak: raising the limit would only postpone the OOM kill."""

    since: float
    """Start of the climbing segment (timestamp)."""
    slope_per_hour: float
    """Fitted growth in bytes per hour."""
    r2: float
    """Coefficient of determination of the straight-line fit."""
    growth_share: float
    """Fitted growth over the segment as a share of the fitted starting level."""

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict for the recommendation's evidence."""
        return {
            "since": self.since,
            "slope_per_hour": self.slope_per_hour,
            "r2": self.r2,
            "growth_share": self.growth_share,
        }


# -- River ADWIN state (bincode of river's Rust AdaptiveWindowing) -------------------

# Field order of river 0.26's `AdaptiveWindowing` (serde + bincode 1: little endian,
# fixed-width ints, u64 lengths): delta f64, clock i32, max_buckets u64,
# min_window_length f64, grace_period f64, total f64, variance f64, width f64,
# total_width f64, n_buckets i32, max_n_buckets i32, tick i32, n_detections i32,
# bucket_list: u64 count, then per row: max_size u64, current_idx u64,
# totals (u64 len, f64 * len), variances (u64 len, f64 * len).
_ADWIN_HEAD = struct.Struct("<diQdddddd4i")
_U64 = struct.Struct("<Q")
_ROW_HEAD = struct.Struct("<QQ")
# ... followed by the Python wrapper's constructor arguments: delta f64, clock i32,
# max_buckets u64, min_window_length i32, grace_period i32.
_ADWIN_ARGS = struct.Struct("<diQii")
_ADWIN_SCALARS: Final = ("total", "variance", "width", "total_width")
_ADWIN_COUNTERS: Final = ("n_buckets", "max_n_buckets", "tick", "n_detections")


def _new_adwin(config: DriftConfig) -> ADWIN:
    return ADWIN(  # type: ignore[no-untyped-call]  # river ships no type hints
        delta=config.adwin_delta,
        clock=ADWIN_CLOCK,
        max_buckets=ADWIN_MAX_BUCKETS,
        min_window_length=ADWIN_MIN_WINDOW_LENGTH,
        grace_period=ADWIN_GRACE_PERIOD,
    )


def _decode_adwin_bytes(raw: bytes) -> dict[str, object]:
    """River's ADWIN state bytes → named numbers and rows (filled entries only)."""
    head = _ADWIN_HEAD.unpack_from(raw, 0)
    offset = _ADWIN_HEAD.size
    (n_rows,) = _U64.unpack_from(raw, offset)
    offset += _U64.size
    rows: list[list[float]] = []
    for _ in range(n_rows):
        max_size, filled = _ROW_HEAD.unpack_from(raw, offset)
        offset += _ROW_HEAD.size
        columns: list[tuple[float, ...]] = []
        for _column in range(2):
            (length,) = _U64.unpack_from(raw, offset)
            offset += _U64.size
            if max_size != ADWIN_MAX_BUCKETS or length != max_size + 1 or filled > max_size + 1:
                raise DriftStateError("unexpected ADWIN row layout")
            columns.append(struct.unpack_from(f"<{length}d", raw, offset))
            offset += 8 * length
        totals, variances = columns
        if any(v != 0.0 for v in totals[filled:]) or any(v != 0.0 for v in variances[filled:]):
            raise DriftStateError("ADWIN row holds data past its fill mark")
        row: list[float] = []
        for index in range(filled):
            row += [totals[index], variances[index]]
        rows.append(row)
    arguments = _ADWIN_ARGS.unpack_from(raw, offset)
    if offset + _ADWIN_ARGS.size != len(raw):
        raise DriftStateError("ADWIN state has trailing bytes")
    if arguments != (head[0], head[1], head[2], int(head[3]), int(head[4])):
        raise DriftStateError("ADWIN constructor arguments disagree with its fields")
    decoded: dict[str, object] = {
        "delta": head[0],
        "clock": head[1],
        "max_buckets": head[2],
        "min_window_length": head[3],
        "grace_period": head[4],
    }
    decoded.update(zip(_ADWIN_SCALARS, head[5:9], strict=True))
    decoded.update(zip(_ADWIN_COUNTERS, head[9:13], strict=True))
    decoded["rows"] = rows
    return decoded


def _encode_adwin_bytes(config: DriftConfig, fields: dict[str, object]) -> bytes:
    """Named numbers and rows → the bytes River's ADWIN ``__setstate__`` reads."""
    rows = cast(list[list[float]], fields["rows"])
    parts = [
        _ADWIN_HEAD.pack(
            config.adwin_delta,
            ADWIN_CLOCK,
            ADWIN_MAX_BUCKETS,
            float(ADWIN_MIN_WINDOW_LENGTH),
            float(ADWIN_GRACE_PERIOD),
            *(cast(float, fields[name]) for name in _ADWIN_SCALARS),
            *(cast(int, fields[name]) for name in _ADWIN_COUNTERS),
        ),
        _U64.pack(len(rows)),
    ]
    capacity = ADWIN_MAX_BUCKETS + 1
    for row in rows:
        filled = len(row) // 2
        padding = [0.0] * (capacity - filled)
        parts.append(_ROW_HEAD.pack(ADWIN_MAX_BUCKETS, filled))
        parts.append(_U64.pack(capacity))
        parts.append(struct.pack(f"<{capacity}d", *row[0::2], *padding))
        parts.append(_U64.pack(capacity))
        parts.append(struct.pack(f"<{capacity}d", *row[1::2], *padding))
    parts.append(
        _ADWIN_ARGS.pack(
            config.adwin_delta,
            ADWIN_CLOCK,
            ADWIN_MAX_BUCKETS,
            ADWIN_MIN_WINDOW_LENGTH,
            ADWIN_GRACE_PERIOD,
        )
    )
    return b"".join(parts)


@functools.cache
def _adwin_layout_problem() -> str | None:
    """Check once per process that the installed River's ADWIN bytes have the layout
    this module reads and writes; the reason if not."""
    config = DriftConfig()
    try:
        probe = _new_adwin(config)
        for index in range(777):
            value = 1.0 + 0.01 * (index % 13) + (0.5 if index > 700 else 0.0)
            probe.update(value)  # type: ignore[no-untyped-call]  # river ships no type hints
        raw = probe._helper.__getstate__()
        decoded = _decode_adwin_bytes(raw)
        same_fields = (
            decoded["width"] == probe.width
            and decoded["total"] == probe.total
            and decoded["variance"] == probe.variance
            and decoded["n_detections"] == probe.n_detections
            and decoded["delta"] == config.adwin_delta
            and decoded["clock"] == ADWIN_CLOCK
        )
        if not same_fields or _encode_adwin_bytes(config, decoded) != raw:
            return "decoded fields disagree with the detector"
    except (AttributeError, TypeError, struct.error, DriftStateError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _require_adwin_layout() -> None:
    problem = _adwin_layout_problem()
    if problem is not None:
        raise DriftStateError(
            f"river {_RIVER_VERSION} stores ADWIN state in a layout daytwo does not "
            f"know ({problem}); daytwo's drift state supports river 0.26's layout"
        )


def _adwin_to_state(detector: ADWIN) -> list[object]:
    # Saved as a list: total, variance, total_width, then the counters n_buckets,
    # max_n_buckets, tick and n_detections, then rows; rows[i] lists total and variance
    # of each filled entry of 2**i values. The window width is implied by the rows.
    _require_adwin_layout()
    decoded = _decode_adwin_bytes(detector._helper.__getstate__())
    return [
        decoded["total"],
        decoded["variance"],
        decoded["total_width"],
        *(decoded[name] for name in _ADWIN_COUNTERS),
        decoded["rows"],
    ]


def _adwin_from_state(state: object, config: DriftConfig, where: str) -> ADWIN:
    _require_adwin_layout()
    if not isinstance(state, list) or len(state) != 8:
        raise DriftStateError(f"drift state '{where}' must be a list of 8 items")
    total, variance, total_width, *counters, rows_raw = state
    checked: dict[str, object] = {
        "total": _as_finite(total, f"{where}[0]"),
        "variance": _as_finite(variance, f"{where}[1]"),
        "total_width": _as_finite(total_width, f"{where}[2]"),
    }
    for offset, (name, value) in enumerate(zip(_ADWIN_COUNTERS, counters, strict=True)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
            raise DriftStateError(f"drift state '{where}[{3 + offset}]' ({name}) must be an int")
        checked[name] = value
    if not isinstance(rows_raw, list) or not 1 <= len(rows_raw) <= 40:
        raise DriftStateError(f"drift state '{where}[7]' must be a list of 1..40 rows")
    rows: list[list[float]] = []
    width = 0
    for power, row in enumerate(rows_raw):
        if not isinstance(row, list) or len(row) % 2 or len(row) > 2 * (ADWIN_MAX_BUCKETS + 1):
            raise DriftStateError(f"drift state '{where}[7][{power}]' is malformed")
        rows.append([_as_finite(value, f"{where}[7][{power}]") for value in row])
        width += (len(row) // 2) * 2**power
    checked["width"] = float(width)
    checked["rows"] = rows
    detector = _new_adwin(config)
    detector._helper.__setstate__(_encode_adwin_bytes(config, checked))
    return detector


# -- River Page-Hinkley state (plain Python attributes) -----------------------------


def _new_page_hinkley(config: DriftConfig) -> PageHinkley:
    return PageHinkley(
        min_instances=PH_MIN_INSTANCES,
        delta=config.ph_delta,
        threshold=config.ph_threshold,
        alpha=config.ph_alpha,
        mode="both",
    )


def _page_hinkley_to_state(detector: PageHinkley) -> list[object]:
    # [n, mean, sum_increase, sum_decrease, min_increase (None = +inf), max_decrease]
    mean = detector._x_mean
    min_increase = detector._min_increase
    return [
        mean.n,
        mean._mean,
        detector._sum_increase,
        detector._sum_decrease,
        None if math.isinf(min_increase) else min_increase,
        detector._max_decrease,
    ]


def _page_hinkley_from_state(state: object, config: DriftConfig) -> PageHinkley:
    if not isinstance(state, list) or len(state) != 6:
        raise DriftStateError("drift state 'ph' must be a list of 6 numbers")
    n, mean, sum_increase, sum_decrease, min_increase, max_decrease = state
    detector = _new_page_hinkley(config)
    count = _as_finite(n, "ph[0]")
    if count < 0:
        raise DriftStateError("drift state 'ph[0]' (observations) must be >= 0")
    detector._x_mean = Mean._from_state(count, _as_finite(mean, "ph[1]"))
    detector._sum_increase = _as_finite(sum_increase, "ph[2]")
    detector._sum_decrease = _as_finite(sum_decrease, "ph[3]")
    detector._min_increase = math.inf if min_increase is None else _as_finite(min_increase, "ph")
    # River starts max_decrease at the int -1; keep the type so arithmetic is identical.
    if isinstance(max_decrease, bool):
        raise DriftStateError("drift state 'ph[5]' must be a number")
    restored: float = (
        max_decrease if isinstance(max_decrease, int) else _as_finite(max_decrease, "ph[5]")
    )
    detector._max_decrease = restored  # type: ignore[assignment]  # river infers int from -1
    return detector


# -- validation helpers ------------------------------------------------------------


def _expect_dict(value: object, where: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise DriftStateError(f"drift state '{where}' must be an object, got {value!r:.60}")
    return cast(dict[str, object], value)


def _as_finite(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DriftStateError(f"drift state '{where}' must be a number, got {value!r:.60}")
    number = float(value)
    if not math.isfinite(number):
        raise DriftStateError(f"drift state '{where}' must be finite, got {value!r}")
    return number


def _finite(fields: dict[str, object], name: str, where: str) -> float:
    if name not in fields:
        raise DriftStateError(f"drift state '{where}' lacks the field {name!r}")
    return _as_finite(fields[name], f"{where}.{name}")


def _optional_finite(fields: dict[str, object], name: str, where: str) -> float | None:
    if fields.get(name) is None:
        return None
    return _finite(fields, name, where)


def _int(fields: dict[str, object], name: str, where: str, *, low: int, high: int) -> int:
    value = fields.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise DriftStateError(
            f"drift state '{where}.{name}' must be an int in [{low}, {high}], got {value!r:.60}"
        )
    return value


def _round_level(value: float) -> float:
    return float(f"{value:.{LEVEL_SIGNIFICANT_DIGITS}g}")


# -- per-signal tracking -----------------------------------------------------------


class _SignalTrack:
    """One signal's aggregation bucket, regime, detectors and recent regimes."""

    __slots__ = (
        "adwin",
        "adwin_cache",
        "adwin_updates",
        "bucket",
        "bucket_count",
        "bucket_sum",
        "event_count",
        "floor",
        "history",
        "last_event",
        "last_seasonal_at",
        "last_timestamp",
        "pending",
        "pending_start",
        "ph",
        "ph_down_anchor",
        "ph_up_anchor",
        "seasonal_count",
        "signal",
        "warm_count",
        "warm_sum",
    )

    def __init__(self, signal: Signal, config: DriftConfig) -> None:
        self.signal: Signal = signal
        self.floor = config.floor(signal)
        self.last_timestamp = -math.inf
        self.bucket: int | None = None
        self.bucket_sum = 0.0
        self.bucket_count = 0
        # Regimes, oldest first, as [first bucket index, level]; the last one is in
        # force. Empty until the first level is known.
        self.history: list[list[float]] = []
        # Detecting: both detectors set. Averaging (the first regime, or confirming a
        # detection): both None, and warm_* collect bucket means.
        self.adwin: ADWIN | None = None
        self.ph: PageHinkley | None = None
        # ADWIN's saved form changes only when it is fed (once per bucket) or replaced;
        # decoding River's bytes is the costliest part of a checkpoint, so the last
        # result is kept with the detector and update count it was made from.
        self.adwin_updates = 0
        self.adwin_cache: tuple[object, int, bytes] | None = None
        self.ph_up_anchor = 0
        self.ph_down_anchor = 0
        self.warm_sum = 0.0
        self.warm_count = 0
        self.pending: Detector | None = None
        self.pending_start = 0
        self.last_event: DriftEvent | None = None
        self.event_count = 0
        self.seasonal_count = 0
        self.last_seasonal_at: float | None = None

    @property
    def level(self) -> float | None:
        return self.history[-1][1] if self.history else None


class DriftTracker:
    """Drift and leak detection for one container's four signals.

    Feed every raw sample to :meth:`update` (cheap: River runs once per aggregate
    bucket); keep the result of :meth:`to_state` in the container's checkpoint.

    A detection is confirmed before it is reported: the next ``regime_warmup_buckets``
    buckets are averaged, and only if their mean moved by ``min_relative_shift`` from
    the regime's level is there a new regime (and an event, unless it is seasonal).
    That mean is the event's ``level_after`` and the new regime's level. Either way both
    detectors restart, so one step gives one event, not a burst.

    >>> tracker = DriftTracker.new(DriftConfig())
    >>> events = [tracker.update("cpu", 60.0 * i, 1.0 if i < 600 else 2.0)
    ...           for i in range(700)]
    >>> [(e.direction, e.level_before, e.level_after) for e in events if e]
    [('up', 1.0, 2.0)]
    """

    __slots__ = (
        "_config",
        "_leak_n",
        "_leak_since",
        "_leak_start_level",
        "_leak_sum_t",
        "_leak_sum_tt",
        "_leak_sum_ty",
        "_leak_sum_y",
        "_leak_sum_yy",
        "_tracks",
    )

    def __init__(self, config: DriftConfig) -> None:
        self._config = config
        self._tracks: dict[str, _SignalTrack] = {s: _SignalTrack(s, config) for s in SIGNALS}
        self._leak_reset(None, 1.0)

    @classmethod
    def new(cls, config: DriftConfig) -> DriftTracker:
        """An empty tracker: every signal starts by learning its first regime's level."""
        return cls(config)

    @property
    def config(self) -> DriftConfig:
        """The tuning this tracker runs with."""
        return self._config

    # -- per sample --------------------------------------------------------------

    def update(self, signal: Signal, timestamp: float, value: float) -> DriftEvent | None:
        """Account one raw sample; the event if it completed a drift detection.

        Samples must be time-ordered per signal: one at or before the signal's last
        timestamp is ignored (replays are idempotent). Non-finite values raise
        ValueError: they would poison every sum after them.
        """
        try:
            track = self._tracks[signal]
        except KeyError:
            raise ValueError(
                f"unknown drift signal {signal!r}; expected one of {SIGNALS}"
            ) from None
        if timestamp <= track.last_timestamp:
            return None
        if not (math.isfinite(value) and math.isfinite(timestamp)):
            raise ValueError(
                f"drift {signal} sample must be finite, got {value!r} at {timestamp!r}"
            )
        track.last_timestamp = timestamp
        bucket = math.floor(timestamp / self._config.aggregate_seconds)
        if bucket == track.bucket:
            track.bucket_sum += value
            track.bucket_count += 1
            return None
        event = None
        if track.bucket is not None:
            mean = track.bucket_sum / track.bucket_count
            event = self._close_bucket(track, track.bucket, mean, timestamp)
        track.bucket = bucket
        track.bucket_sum = value
        track.bucket_count = 1
        return event

    def update_run(
        self, signal: Signal, timestamps: Sequence[float], values: Sequence[float | None]
    ) -> list[tuple[int, DriftEvent]]:
        """Account a run of raw samples of one signal; the events with the index of the
        sample that completed each.

        Exactly :meth:`update` on every pair in order (a None value is a sample that did
        not report this signal and is passed over), with the per-sample bookkeeping done
        on local variables: the worker's hot path feeds whole batches through here.
        """
        try:
            track = self._tracks[signal]
        except KeyError:
            raise ValueError(
                f"unknown drift signal {signal!r}; expected one of {SIGNALS}"
            ) from None
        aggregate = self._config.aggregate_seconds
        floor = math.floor
        events: list[tuple[int, DriftEvent]] = []
        last = track.last_timestamp
        bucket = track.bucket
        bucket_sum = track.bucket_sum
        bucket_count = track.bucket_count
        try:
            for index, (timestamp, value) in enumerate(zip(timestamps, values, strict=True)):
                if value is None or timestamp <= last:
                    continue
                # x - x is 0.0 exactly for finite x, NaN for NaN and ±inf (no call)
                if not (value - value == 0.0 and timestamp - timestamp == 0.0):
                    raise ValueError(
                        f"drift {signal} sample must be finite, got {value!r} at {timestamp!r}"
                    )
                last = timestamp
                new_bucket = floor(timestamp / aggregate)
                if new_bucket == bucket:
                    bucket_sum += value
                    bucket_count += 1
                    continue
                if bucket is not None:
                    track.last_timestamp = last
                    track.bucket = bucket
                    event = self._close_bucket(track, bucket, bucket_sum / bucket_count, timestamp)
                    if event is not None:
                        events.append((index, event))
                bucket = new_bucket
                bucket_sum = value
                bucket_count = 1
        finally:
            track.last_timestamp = last
            track.bucket = bucket
            track.bucket_sum = bucket_sum
            track.bucket_count = bucket_count
        return events

    def _close_bucket(
        self, track: _SignalTrack, bucket: int, mean: float, now: float
    ) -> DriftEvent | None:
        config = self._config
        if track.signal == "memory":
            self._leak_add(bucket * config.aggregate_seconds, mean)
        adwin, ph, level = track.adwin, track.ph, track.level
        if adwin is None or ph is None or level is None:
            if track.warm_count == 0 and level is None:
                track.pending_start = bucket
            track.warm_sum += mean
            track.warm_count += 1
            if track.warm_count < config.regime_warmup_buckets:
                return None
            return self._settle(track, _round_level(track.warm_sum / track.warm_count), now)
        x = mean / max(level, track.floor)
        # ADWIN sees whole percent of the regime level: its bucket totals are then
        # integers and its bucket variances short binary fractions, which keeps the
        # saved state small; 1 % resolution is far finer than the shifts that count.
        adwin.update(float(round(100.0 * x)))  # type: ignore[no-untyped-call]  # river: no hints
        track.adwin_updates += 1
        ph.update(x)  # type: ignore[no-untyped-call]  # river ships no type hints
        if ph._sum_increase <= ph._min_increase:
            track.ph_up_anchor = bucket
        if ph._sum_decrease >= ph._max_decrease:
            track.ph_down_anchor = bucket
        if adwin.drift_detected:
            track.pending = "adwin"
            track.pending_start = bucket + 1 - int(adwin.width)
        elif ph.drift_detected:
            rising = ph._sum_increase - ph._min_increase > ph.threshold
            track.pending = "page-hinkley"
            track.pending_start = track.ph_up_anchor if rising else track.ph_down_anchor
        else:
            if adwin.width >= config.adwin_max_window_buckets:
                track.adwin = _new_adwin(config)
            return None
        # confirm: average the next buckets, then decide (detectors restart either way)
        track.adwin = track.ph = None
        track.warm_sum = 0.0
        track.warm_count = 0
        return None

    def _settle(self, track: _SignalTrack, after: float, now: float) -> DriftEvent | None:
        """A level was averaged: the first regime's, or one confirming a detection."""
        config = self._config
        before = track.level
        detector = track.pending
        start = track.pending_start
        track.pending = None
        track.warm_sum = 0.0
        track.warm_count = 0
        track.adwin = _new_adwin(config)
        track.ph = _new_page_hinkley(config)
        track.ph_up_anchor = track.ph_down_anchor = start
        if before is None:
            track.history.append([start, after])
            return None
        if detector is None or abs(after - before) < config.min_relative_shift * max(
            before, track.floor
        ):
            return None  # real but small, or noise: the regime goes on
        seasonal = self._matches_last_period(track, start, after)
        history = track.history
        history.append([start, after])
        period_buckets = config.seasonal_period_seconds / config.aggregate_seconds
        tolerance_buckets = config.seasonal_tolerance_seconds / config.aggregate_seconds
        horizon = start - period_buckets - 2 * tolerance_buckets
        while len(history) > MAX_REGIME_HISTORY or (len(history) > 1 and history[1][0] <= horizon):
            del history[0]
        if seasonal:
            track.seasonal_count += 1
            track.last_seasonal_at = now
            return None
        event = DriftEvent(
            signal=track.signal,
            detector=detector,
            detected_at=now,
            regime_start=start * config.aggregate_seconds,
            direction="up" if after > before else "down",
            level_before=before,
            level_after=after,
        )
        track.last_event = event
        track.event_count += 1
        return event

    def _matches_last_period(self, track: _SignalTrack, start: int, level: float) -> bool:
        """Whether ``level`` is a level this signal held one period before ``start``."""
        config = self._config
        history = track.history
        then = start - config.seasonal_period_seconds / config.aggregate_seconds
        tolerance = config.seasonal_tolerance_seconds / config.aggregate_seconds
        low, high = then - tolerance, then + tolerance
        if history[0][0] > low:
            return False  # not observed for a full period: nothing to compare with
        held = [
            past_level
            for index, (first_bucket, past_level) in enumerate(history)
            if first_bucket <= high and (index + 1 == len(history) or history[index + 1][0] >= low)
        ]
        lowest, highest = min(held), max(held)
        # A signal that was moving then (several regimes in the window) was only known
        # to within one min_relative_shift of its regime levels (that is when a regime
        # gets replaced), so its band is twice as wide as a steady signal's.
        margin = config.min_relative_shift * (2.0 if len(held) > 1 else 1.0)
        return (
            lowest - margin * max(lowest, track.floor)
            < level
            < highest + margin * max(highest, track.floor)
        )

    # -- leak --------------------------------------------------------------------

    def _leak_reset(self, since: float | None, start_level: float) -> None:
        self._leak_since = since
        self._leak_start_level = start_level
        self._leak_n = 0
        self._leak_sum_t = self._leak_sum_y = 0.0
        self._leak_sum_tt = self._leak_sum_ty = self._leak_sum_yy = 0.0

    def _leak_add(self, timestamp: float, level: float) -> None:
        # A climb segment lasts while memory stays at or above where it began; one that
        # is no leak after leak_segment_seconds restarts, so that a later climb is not
        # diluted by a long flat stretch before it.
        since = self._leak_since
        if (
            since is None
            or level < self._leak_start_level
            or (
                timestamp - since >= self._config.leak_segment_seconds
                and self._leak_fit(timestamp) is None
            )
        ):
            self._leak_reset(timestamp, max(level, 1.0))
            since = timestamp
        hours = (timestamp - since) / 3600.0
        share = level / self._leak_start_level - 1.0
        self._leak_n += 1
        self._leak_sum_t += hours
        self._leak_sum_y += share
        self._leak_sum_tt += hours * hours
        self._leak_sum_ty += hours * share
        self._leak_sum_yy += share * share

    def _leak_fit(self, until: float) -> LeakSuspicion | None:
        config = self._config
        n = self._leak_n
        since = self._leak_since
        if since is None or n < 3 or until - since < config.leak_min_seconds:
            return None
        sxx = self._leak_sum_tt - self._leak_sum_t**2 / n
        sxy = self._leak_sum_ty - self._leak_sum_t * self._leak_sum_y / n
        syy = self._leak_sum_yy - self._leak_sum_y**2 / n
        if sxx <= 0.0 or syy <= 0.0 or sxy <= 0.0:
            return None
        slope = sxy / sxx  # share of the start level per hour
        r2 = min(1.0, sxy * sxy / (sxx * syy))
        fitted_start = 1.0 + (self._leak_sum_y - slope * self._leak_sum_t) / n
        if fitted_start <= 0.0:
            return None
        growth = slope * (until - since) / 3600.0 / fitted_start
        if r2 < config.leak_min_r2 or growth < config.leak_min_relative_growth:
            return None
        return LeakSuspicion(
            since=since,
            slope_per_hour=slope * self._leak_start_level,
            r2=r2,
            growth_share=growth,
        )

    # -- queries -----------------------------------------------------------------

    def leak(self) -> LeakSuspicion | None:
        """The current memory climb if it looks like a leak: it has lasted at least
        ``leak_min_seconds``, a straight line fits it (r² at least ``leak_min_r2``) and
        it grew memory by ``leak_min_relative_growth``. A step fits a line with r² of
        at most 0.75, so a one-off jump is not mistaken for a leak."""
        return self._leak_fit(self._tracks["memory"].last_timestamp)

    def last_event(self, signal: Signal) -> DriftEvent | None:
        """The most recent drift event of ``signal`` (kept in state, for evidence)."""
        return self._tracks[signal].last_event

    def event_count(self, signal: Signal) -> int:
        """Drift events of ``signal`` since the tracker started."""
        return self._tracks[signal].event_count

    def seasonal_count(self, signal: Signal) -> int:
        """Confirmed changes of ``signal`` that matched its level one period earlier
        (followed by the detectors, no event)."""
        return self._tracks[signal].seasonal_count

    def is_periodic(self, signal: Signal) -> bool:
        """Whether ``signal`` repeated last period's levels within the last period: a
        cyclic workload, whose swings percentiles size, not drift."""
        track = self._tracks[signal]
        if track.last_seasonal_at is None:
            return False
        horizon = self._config.seasonal_period_seconds + self._config.seasonal_tolerance_seconds
        return track.last_timestamp - track.last_seasonal_at <= horizon

    # -- state -------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        """Trackers are equal when their configurations and saved states are."""
        if not isinstance(other, DriftTracker):
            return NotImplemented
        return self.config == other.config and self.to_state() == other.to_state()

    __hash__ = None  # type: ignore[assignment]  # mutable: must not be hashable

    def to_state(self, *, encoded: bool = False) -> dict[str, object]:
        """JSON-ready, versioned state; floats at full precision, so a restored tracker
        behaves exactly like one that never stopped.

        ``encoded``: ADWIN's part is an :class:`orjson.Fragment` of its JSON (for
        ``orjson.dumps``, which writes the same bytes either way): decoding River's bytes
        is the costliest part of a checkpoint, so each detector's last encoding is kept
        with it, as compact bytes rather than a few hundred Python floats per container.

        ``{"v": 1, "agg": aggregate_seconds, "signals": {name: S}, "leak": L}`` where
        each ``S`` (signals without samples are left out) has

        - ``t``: last sample timestamp; ``b``: ``[sum, count]`` of the open bucket
          (its index is ``floor(t / agg)``);
        - ``h``: recent regimes ``[[first bucket index, level], ...]``, last in force;
        - either ``a`` (ADWIN, see ``_adwin_to_state``), ``p`` (Page-Hinkley ``[n,
          mean, sum_increase, sum_decrease, min_increase or null for +inf,
          max_decrease]``) and ``k`` (buckets since Page-Hinkley's up/down anchors),
          or ``w``: ``[sum, count, first bucket, detector or null]`` while a level is
          being averaged;
        - ``n``: ``[events, seasonal matches, last seasonal time or null]``;
        - ``e``: the last event ``[detector, detected_at, regime_start, direction,
          level_before, level_after]``, if any;

        and ``L`` is the memory climb fit ``[since, start level, points, Σt, Σy, Σt²,
        Σty, Σy²]`` (t in hours since ``since``, y as a share of the start level).
        """
        signals: dict[str, object] = {}
        for name, track in self._tracks.items():
            if track.bucket is None:
                continue
            entry: dict[str, object] = {
                "t": track.last_timestamp,
                "b": [track.bucket_sum, track.bucket_count],
                "h": track.history,
            }
            if track.adwin is None or track.ph is None:
                entry["w"] = [track.warm_sum, track.warm_count, track.pending_start, track.pending]
            else:
                cache = track.adwin_cache
                if cache is None or cache[0] is not track.adwin or cache[1] != track.adwin_updates:
                    # exact-size copy: orjson's bytes keep their whole write buffer
                    encoding = bytes(memoryview(orjson.dumps(_adwin_to_state(track.adwin))))
                    cache = (track.adwin, track.adwin_updates, encoding)
                    track.adwin_cache = cache
                entry["a"] = orjson.Fragment(cache[2]) if encoded else orjson.loads(cache[2])
                entry["p"] = _page_hinkley_to_state(track.ph)
                entry["k"] = [
                    track.bucket - track.ph_up_anchor,
                    track.bucket - track.ph_down_anchor,
                ]
            if track.event_count or track.seasonal_count:
                entry["n"] = [track.event_count, track.seasonal_count, track.last_seasonal_at]
            event = track.last_event
            if event is not None:
                entry["e"] = [
                    event.detector,
                    event.detected_at,
                    event.regime_start,
                    event.direction,
                    event.level_before,
                    event.level_after,
                ]
            signals[name] = entry
        state: dict[str, object] = {
            "v": STATE_VERSION,
            "agg": self._config.aggregate_seconds,
            "signals": signals,
        }
        if self._leak_since is not None:
            state["leak"] = [
                self._leak_since,
                self._leak_start_level,
                self._leak_n,
                self._leak_sum_t,
                self._leak_sum_y,
                self._leak_sum_tt,
                self._leak_sum_ty,
                self._leak_sum_yy,
            ]
        return state

    @classmethod
    def from_state(cls, state: object, config: DriftConfig) -> DriftTracker:
        """Rebuild a tracker from :meth:`to_state` output (after a JSON round trip).

        Raises :class:`DriftStateError` (a ValueError) naming the field on malformed
        state, an unknown version or a changed ``aggregate_seconds`` (bucket indices
        would no longer line up); the caller may then start afresh with :meth:`new`.
        The detectors take their other tuning from ``config``, so a changed profile
        sensitivity applies from the restore on.
        """
        fields = _expect_dict(state, "<root>")
        version = fields.get("v")
        if version != STATE_VERSION:
            raise DriftStateError(
                f"drift state version {version!r} is not supported (this release reads "
                f"version {STATE_VERSION}); drop it to restart drift detection"
            )
        if fields.get("agg") != config.aggregate_seconds:
            raise DriftStateError(
                f"drift state was aggregated per {fields.get('agg')!r} s, the config says "
                f"{config.aggregate_seconds} s; drop it to restart drift detection"
            )
        tracker = cls(config)
        signals = _expect_dict(fields.get("signals"), "signals")
        for name, entry in signals.items():
            if name not in tracker._tracks:
                raise DriftStateError(f"drift state names an unknown signal {name!r}")
            _restore_track(tracker._tracks[name], _expect_dict(entry, name), config)
        if "leak" in fields:
            tracker._restore_leak(fields["leak"])
        return tracker

    def _restore_leak(self, leak: object) -> None:
        if not isinstance(leak, list) or len(leak) != 8:
            raise DriftStateError("drift state 'leak' must be a list of 8 numbers")
        since, start_level, count, *sums = leak
        self._leak_since = _as_finite(since, "leak[0]")
        self._leak_start_level = _as_finite(start_level, "leak[1]")
        if self._leak_start_level <= 0:
            raise DriftStateError("drift state 'leak[1]' (start level) must be > 0")
        self._leak_n = _as_count(count, "leak[2]")
        (
            self._leak_sum_t,
            self._leak_sum_y,
            self._leak_sum_tt,
            self._leak_sum_ty,
            self._leak_sum_yy,
        ) = (_as_finite(value, "leak") for value in sums)


def _as_count(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**53:
        raise DriftStateError(f"drift state '{where}' must be an int >= 0, got {value!r:.60}")
    return value


def _as_bucket(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not -(2**53) < value < 2**53:
        raise DriftStateError(f"drift state '{where}' must be a bucket index, got {value!r:.60}")
    return value


def _pair_list(value: object, where: str, length: int) -> list[object]:
    if not isinstance(value, list) or len(value) != length:
        raise DriftStateError(f"drift state '{where}' must be a list of {length} items")
    return value


def _restore_track(track: _SignalTrack, entry: dict[str, object], config: DriftConfig) -> None:
    where = track.signal
    track.last_timestamp = _finite(entry, "t", where)
    track.bucket = math.floor(track.last_timestamp / config.aggregate_seconds)
    bucket_sum, bucket_count = _pair_list(entry.get("b"), f"{where}.b", 2)
    track.bucket_sum = _as_finite(bucket_sum, f"{where}.b[0]")
    track.bucket_count = _as_count(bucket_count, f"{where}.b[1]")
    history = entry.get("h")
    if not isinstance(history, list) or len(history) > MAX_REGIME_HISTORY:
        raise DriftStateError(f"drift state '{where}.h' must be a list of at most 24 pairs")
    for pair in history:
        first_bucket, level = _pair_list(pair, f"{where}.h[]", 2)
        track.history.append([_as_bucket(first_bucket, f"{where}.h[]"), _as_finite(level, where)])
    if "a" in entry:
        if not track.history:
            raise DriftStateError(f"drift state '{where}' has detectors but no regime level")
        track.adwin = _adwin_from_state(entry["a"], config, f"{where}.a")
        track.ph = _page_hinkley_from_state(entry.get("p"), config)
        up, down = _pair_list(entry.get("k"), f"{where}.k", 2)
        track.ph_up_anchor = track.bucket - _as_count(up, f"{where}.k[0]")
        track.ph_down_anchor = track.bucket - _as_count(down, f"{where}.k[1]")
    else:
        warm_sum, warm_count, first_bucket, pending = _pair_list(entry.get("w"), f"{where}.w", 4)
        track.warm_sum = _as_finite(warm_sum, f"{where}.w[0]")
        track.warm_count = _as_count(warm_count, f"{where}.w[1]")
        track.pending_start = _as_bucket(first_bucket, f"{where}.w[2]")
        if pending not in (None, "adwin", "page-hinkley"):
            raise DriftStateError(f"drift state '{where}.w[3]' names an unknown detector")
        track.pending = pending
    if "n" in entry:
        events, seasonal, seasonal_at = _pair_list(entry["n"], f"{where}.n", 3)
        track.event_count = _as_count(events, f"{where}.n[0]")
        track.seasonal_count = _as_count(seasonal, f"{where}.n[1]")
        track.last_seasonal_at = (
            None if seasonal_at is None else _as_finite(seasonal_at, f"{where}.n[2]")
        )
    if "e" in entry:
        detector, detected_at, regime_start, direction, before, after = _pair_list(
            entry["e"], f"{where}.e", 6
        )
        if detector not in ("adwin", "page-hinkley") or direction not in ("up", "down"):
            raise DriftStateError(f"drift state '{where}.e' has a bad detector or direction")
        track.last_event = DriftEvent(
            signal=track.signal,
            detector=detector,
            detected_at=_as_finite(detected_at, f"{where}.e[1]"),
            regime_start=_as_finite(regime_start, f"{where}.e[2]"),
            direction=direction,
            level_before=_as_finite(before, f"{where}.e[4]"),
            level_after=_as_finite(after, f"{where}.e[5]"),
        )
