"""A decaying histogram with exponential buckets: percentiles of a long history in ~1 KB.

The idea follows the Kubernetes Vertical Pod Autoscaler's recommender (its
``util/histogram.go`` and ``decaying_histogram.go``); this is an independent
implementation of it.

Buckets: bucket 0 is ``[0, first_bucket)``; every next bucket is ``ratio`` times wider
than the one before, so bucket ``i`` starts at ``first_bucket * (ratio**i - 1) /
(ratio - 1)``. The relative error of a percentile is therefore bounded by the ratio
(5% with 1.05) at every scale, from millicores to hundreds of cores, with a few hundred
buckets. The last bucket is the one that holds ``max_value``; larger values are counted
in it too (so choose ``max_value`` above anything plausible).

Decay: a sample at time ``t`` is added with weight ``weight * 2**((t - reference) /
half_life)``. Newer samples weigh exponentially more, which is the same as every old
sample losing half its weight per half-life, but costs one bucket update per sample
instead of a pass over all buckets. When the exponent would grow past
:data:`MAX_DECAY_EXPONENT`, the reference moves forward and all weights are scaled down
once (renormalisation), so the numbers stay in a comfortable float range.

Percentiles are conservative: :meth:`DecayingHistogram.percentile` returns the *upper*
boundary of the bucket that holds the requested percentile, so the answer is never below
the true (weighted) percentile of the values added, and at most one bucket above it.
(VPA returns the start of the next bucket, which is the same number; we state it as the
upper boundary because that is the guarantee callers rely on.)
"""

from __future__ import annotations

import bisect
import functools
import math
from collections.abc import Sequence
from typing import Final

MAX_DECAY_EXPONENT: Final = 20.0
"""Renormalise when a new sample's decay exponent (in half-lives) would exceed this."""

_PRUNE_RELATIVE_WEIGHT: Final = 1e-12
"""At renormalisation, buckets lighter than this share of the heaviest are dropped."""


class DecayingHistogram:
    """Weighted, exponentially decaying histogram of non-negative values.

    Why: per-container CPU state must summarise days of 10-second samples in a small,
    constant amount of memory, favour recent behaviour, and still answer "p95" with a
    known error bound. Timestamps are arguments: the histogram never reads a clock.

    >>> h = DecayingHistogram(0.01, 1.05, 100.0, 86400.0)
    >>> for v in (0.1, 0.2, 0.3):
    ...     h.add(v, 10.0, 0.0)
    >>> 0.3 <= h.percentile(1.0) < 0.3 * 1.05 + 0.01
    True
    """

    __slots__ = (
        "_boundaries",
        "_first_bucket",
        "_half_life_seconds",
        "_max_value",
        "_ratio",
        "_reference_timestamp",
        "_sorted_cache",
        "_total_cache",
        "_weights",
    )

    def __init__(
        self, first_bucket: float, ratio: float, max_value: float, half_life_seconds: float
    ) -> None:
        if not (math.isfinite(first_bucket) and first_bucket > 0):
            raise ValueError(f"first_bucket must be a finite number > 0, got {first_bucket!r}")
        if not (math.isfinite(ratio) and ratio > 1):
            raise ValueError(f"ratio must be a finite number > 1, got {ratio!r}")
        if not (math.isfinite(max_value) and max_value > first_bucket):
            raise ValueError(
                f"max_value must be finite and > first_bucket ({first_bucket}), got {max_value!r}"
            )
        if not (math.isfinite(half_life_seconds) and half_life_seconds > 0):
            raise ValueError(
                f"half_life_seconds must be a finite number > 0, got {half_life_seconds!r}"
            )
        self._first_bucket = float(first_bucket)
        self._ratio = float(ratio)
        self._max_value = float(max_value)
        self._half_life_seconds = float(half_life_seconds)
        self._boundaries = _bucket_starts(self._first_bucket, self._ratio, self._max_value)
        self._weights: dict[int, float] = {}
        self._reference_timestamp: float | None = None
        # Sizing asks several percentiles and shares of one state; the total and the
        # sorted buckets are kept until the next change (every mutation clears them).
        self._total_cache: float | None = None
        self._sorted_cache: list[int] | None = None

    # -- configuration -------------------------------------------------------------

    @property
    def first_bucket(self) -> float:
        """Width of bucket 0, which starts at 0."""
        return self._first_bucket

    @property
    def ratio(self) -> float:
        """Each bucket is this many times wider than the previous one."""
        return self._ratio

    @property
    def max_value(self) -> float:
        """The last bucket holds this value; larger values are counted in it too."""
        return self._max_value

    @property
    def half_life_seconds(self) -> float:
        """A sample's weight halves relative to a new one after this many seconds."""
        return self._half_life_seconds

    @property
    def num_buckets(self) -> int:
        """Number of buckets, the last one open-ended."""
        return len(self._boundaries)

    @property
    def reference_timestamp(self) -> float | None:
        """Timestamp at which a sample gets its plain weight; None until the first add."""
        return self._reference_timestamp

    def bucket_start(self, index: int) -> float:
        """Lower (inclusive) boundary of bucket ``index``."""
        return self._boundaries[index]

    def bucket_end(self, index: int) -> float:
        """Upper (exclusive) boundary of bucket ``index``; the last one extends the series."""
        if index + 1 < len(self._boundaries):
            return self._boundaries[index + 1]
        return self._boundaries[index] * self._ratio + self._first_bucket

    def bucket_index(self, value: float) -> int:
        """Index of the bucket holding ``value`` (clamped to the first and last bucket)."""
        if not value >= self._boundaries[1]:  # also catches NaN
            return 0
        return min(bisect.bisect_right(self._boundaries, value) - 1, len(self._boundaries) - 1)

    # -- data ----------------------------------------------------------------------

    @property
    def total_weight(self) -> float:
        """Sum of bucket weights, in units relative to :attr:`reference_timestamp`."""
        total = self._total_cache
        if total is None:
            total = self._total_cache = math.fsum(self._weights.values())
        return total

    def _changed(self) -> None:
        self._total_cache = None
        self._sorted_cache = None

    def _sorted_indices(self) -> list[int]:
        indices = self._sorted_cache
        if indices is None:
            indices = self._sorted_cache = sorted(self._weights)
        return indices

    @property
    def is_empty(self) -> bool:
        """True when no weight is left (nothing added, or everything pruned)."""
        return not self._weights

    def add(self, value: float, weight: float, timestamp: float) -> None:
        """Add ``value`` with ``weight`` observed at ``timestamp`` (seconds).

        Negative values are clamped to 0 (a counter reset can produce a tiny negative
        rate); a zero weight is a no-op.
        """
        if not math.isfinite(value):
            raise ValueError(f"value must be finite, got {value!r}")
        if not (math.isfinite(weight) and weight >= 0):
            raise ValueError(f"weight must be finite and ≥ 0, got {weight!r}")
        if not math.isfinite(timestamp):
            raise ValueError(f"timestamp must be finite, got {timestamp!r}")
        if weight == 0:
            return
        if self._reference_timestamp is None or not self._weights:
            self._reference_timestamp = self._aligned(timestamp)
        elif (timestamp - self._reference_timestamp) / self._half_life_seconds > (
            MAX_DECAY_EXPONENT
        ):
            self._shift_reference(self._aligned(timestamp))
        exponent = (timestamp - self._reference_timestamp) / self._half_life_seconds
        decayed = weight * 2.0**exponent
        if not math.isfinite(decayed):
            raise ValueError(f"weight {weight!r} overflows at timestamp {timestamp!r}")
        if decayed == 0.0:  # so far before the reference that it no longer counts
            return
        index = self.bucket_index(max(value, 0.0))
        self._changed()
        self._weights[index] = self._weights.get(index, 0.0) + decayed

    def add_run(
        self, values: Sequence[float], weights: Sequence[float], timestamps: Sequence[float]
    ) -> None:
        """:meth:`add` for each ``(value, weight, timestamp)`` in order, for values the
        caller already validated (finite; weights ≥ 0; timestamps finite).

        Why: the worker folds whole batches in; this is the same arithmetic in the same
        order (so the same bucket weights to the last bit) without a method call and three
        checks per sample. A weight that overflows still raises ValueError.
        """
        self._changed()
        boundaries = self._boundaries
        second = boundaries[1]
        last_index = len(boundaries) - 1
        half_life = self._half_life_seconds
        weights_by_index = self._weights
        reference = self._reference_timestamp
        for value, weight, timestamp in zip(values, weights, timestamps, strict=True):
            if weight == 0:
                continue
            if reference is None or not weights_by_index:
                reference = self._reference_timestamp = self._aligned(timestamp)
            elif (timestamp - reference) / half_life > MAX_DECAY_EXPONENT:
                reference = self._aligned(timestamp)
                self._shift_reference(reference)
                weights_by_index = self._weights
            decayed = weight * 2.0 ** ((timestamp - reference) / half_life)
            if not math.isfinite(decayed):
                raise ValueError(f"weight {weight!r} overflows at timestamp {timestamp!r}")
            if decayed == 0.0:
                continue
            if not value >= second:  # also negative values (clamped to 0) and NaN
                index = 0
            else:
                index = min(bisect.bisect_right(boundaries, value) - 1, last_index)
            weights_by_index[index] = weights_by_index.get(index, 0.0) + decayed

    def scale(self, factor: float) -> None:
        """Multiply every weight by ``factor`` in (0, 1]: what is in the histogram now
        counts that much less against what comes next (used when a drift detector says
        the old regime is over)."""
        if not (math.isfinite(factor) and 0 < factor <= 1):
            raise ValueError(f"scale factor must be within (0, 1], got {factor!r}")
        heaviest = max(self._weights.values(), default=0.0) * factor
        self._changed()
        self._weights = {
            index: weight * factor
            for index, weight in self._weights.items()
            if weight * factor > heaviest * _PRUNE_RELATIVE_WEIGHT
        }

    def share_above(self, value: float) -> float:
        """Upper bound of the (decayed) weight share of values above ``value``, in [0, 1].

        Every bucket that can hold a value above ``value`` counts in full, so the answer
        is never below the true share. 0.0 for an empty histogram.
        """
        if not self._weights:
            return 0.0
        total = self.total_weight
        # Bucket ends increase with the index, so the buckets ending above ``value`` are a
        # tail of the sorted indices: from the bucket holding ``value`` (unless even the
        # last one ends below it, or value is NaN). fsum is exact in any order.
        first = self.bucket_index(value)
        if not self.bucket_end(first) > value:
            return 0.0
        indices = self._sorted_indices()
        weights = self._weights
        above = math.fsum(weights[i] for i in indices[bisect.bisect_left(indices, first) :])
        return min(1.0, above / total) if total > 0 else 0.0

    def percentile(self, p: float) -> float:
        """Upper boundary of the bucket holding the weighted ``p``-quantile (``0 ≤ p ≤ 1``).

        That is the smallest bucket whose cumulative weight reaches ``p`` of the total,
        so the answer is ≥ the true quantile and < ``true * ratio + first_bucket``.
        Returns 0.0 for an empty histogram.
        """
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"percentile p must be within [0, 1], got {p!r}")
        if not self._weights:
            return 0.0
        indices = self._sorted_indices()
        threshold = p * self.total_weight
        cumulative = 0.0
        for index in indices:
            cumulative += self._weights[index]
            if cumulative >= threshold:
                return self.bucket_end(index)
        return self.bucket_end(indices[-1])

    # -- state ---------------------------------------------------------------------

    def to_state(self) -> dict[str, object]:
        """A compact, JSON-ready dict: configuration, reference and non-zero buckets.

        Weights are kept at full float precision (orjson writes the shortest text that
        reads back to the same float), so :meth:`from_state` restores an *equal*
        histogram. Rounding would save a few hundred bytes but would make a worker
        restored from a checkpoint diverge from one that never restarted.
        """
        indices = sorted(self._weights)
        return {
            "first_bucket": self._first_bucket,
            "ratio": self._ratio,
            "max_value": self._max_value,
            "half_life_seconds": self._half_life_seconds,
            "reference": self._reference_timestamp,
            "index": indices,
            "weight": [self._weights[i] for i in indices],
        }

    @classmethod
    def from_state(cls, state: dict[str, object]) -> DecayingHistogram:
        """Rebuild a histogram from :meth:`to_state` output; ValueError on malformed state."""
        try:
            histogram = cls(
                _as_float(state["first_bucket"]),
                _as_float(state["ratio"]),
                _as_float(state["max_value"]),
                _as_float(state["half_life_seconds"]),
            )
            reference = state["reference"]
            indices = state["index"]
            weights = state["weight"]
        except KeyError as exc:
            raise ValueError(f"histogram state lacks the field {exc.args[0]!r}") from exc
        if not isinstance(indices, list) or not isinstance(weights, list):
            raise ValueError("histogram state 'index' and 'weight' must be lists")
        if len(indices) != len(weights):
            raise ValueError("histogram state 'index' and 'weight' differ in length")
        for index, weight in zip(indices, weights, strict=True):
            if isinstance(index, bool) or not isinstance(index, int):
                raise ValueError(f"histogram bucket index must be an int, got {index!r}")
            if not 0 <= index < histogram.num_buckets:
                raise ValueError(f"histogram bucket index {index} is out of range")
            value = _as_float(weight)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"histogram bucket weight must be > 0, got {weight!r}")
            histogram._weights[index] = value
        histogram._changed()
        histogram._reference_timestamp = None if reference is None else _as_float(reference)
        return histogram

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DecayingHistogram):
            return NotImplemented
        return self.to_state() == other.to_state()

    __hash__ = None  # type: ignore[assignment]  # mutable: must not be hashable

    def __repr__(self) -> str:
        return (
            f"DecayingHistogram(first_bucket={self._first_bucket}, ratio={self._ratio}, "
            f"max_value={self._max_value}, half_life_seconds={self._half_life_seconds}, "
            f"buckets={len(self._weights)}, total_weight={self.total_weight:.6g})"
        )

    # -- internals -----------------------------------------------------------------

    def _aligned(self, timestamp: float) -> float:
        # Whole half-lives keep references reproducible whatever the first sample's time.
        return math.floor(timestamp / self._half_life_seconds) * self._half_life_seconds

    def _shift_reference(self, new_reference: float) -> None:
        assert self._reference_timestamp is not None
        factor = 2.0 ** ((self._reference_timestamp - new_reference) / self._half_life_seconds)
        self._changed()
        scaled = {index: weight * factor for index, weight in self._weights.items()}
        heaviest = max(scaled.values(), default=0.0)
        self._weights = {
            index: weight
            for index, weight in scaled.items()
            if weight > heaviest * _PRUNE_RELATIVE_WEIGHT
        }
        self._reference_timestamp = new_reference


@functools.lru_cache(maxsize=64)
def _bucket_starts(first_bucket: float, ratio: float, max_value: float) -> tuple[float, ...]:
    # Start of bucket i = first * (ratio**i - 1) / (ratio - 1); stop at the bucket that
    # holds max_value (it also takes every larger value). Cached and immutable: every
    # histogram of a configuration shares one table (a few hundred floats, ~7 KB, that
    # each of 100,000 containers would otherwise carry; docs/benchmarks.md).
    starts = [0.0]
    index = 1
    while True:
        start = first_bucket * (ratio**index - 1) / (ratio - 1)
        if start > max_value:
            return tuple(starts)
        starts.append(start)
        index += 1


def _as_float(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number in histogram state, got {value!r}")
    return float(value)
