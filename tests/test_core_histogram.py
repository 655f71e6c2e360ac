"""The decaying histogram: buckets, conservative percentiles, decay, compact state."""

from __future__ import annotations

import doctest
import math

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.core import histogram as histogram_module
from pipeline.core.histogram import MAX_DECAY_EXPONENT, DecayingHistogram

DAY = 86400.0


def cpu_histogram(half_life: float = DAY) -> DecayingHistogram:
    return DecayingHistogram(0.001, 1.05, 1000.0, half_life)


def weighted_quantile(values: list[float], weights: list[int], p: float) -> float:
    """Smallest value whose cumulative weight reaches p of the total (exact integer sums)."""
    pairs = sorted(zip(values, weights, strict=True))
    threshold = p * float(sum(weights))
    cumulative = 0
    for value, weight in pairs:
        cumulative += weight
        if cumulative >= threshold:
            return value
    return pairs[-1][0]


def test_bucket_boundaries_grow_by_the_ratio() -> None:
    h = DecayingHistogram(1.0, 2.0, 100.0, DAY)
    # starts: 0, 1, 3, 7, 15, 31, 63 (next would be 127 > 100: bucket 6 holds max_value)
    assert [h.bucket_start(i) for i in range(h.num_buckets)] == [0, 1, 3, 7, 15, 31, 63]
    assert h.bucket_end(6) == 127
    assert h.bucket_index(0.0) == 0
    assert h.bucket_index(0.999) == 0
    assert h.bucket_index(1.0) == 1
    assert h.bucket_index(6.99) == 2
    assert h.bucket_index(100.0) == 6
    assert h.bucket_index(1e9) == 6  # beyond max_value: counted in the last bucket


@given(st.floats(min_value=0, max_value=999.0, allow_nan=False))
def test_every_value_lies_in_its_bucket(value: float) -> None:
    h = cpu_histogram()
    index = h.bucket_index(value)
    assert h.bucket_start(index) <= value < h.bucket_end(index)


def test_constructor_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="first_bucket"):
        DecayingHistogram(0.0, 1.05, 10.0, DAY)
    with pytest.raises(ValueError, match="ratio"):
        DecayingHistogram(0.01, 1.0, 10.0, DAY)
    with pytest.raises(ValueError, match="max_value"):
        DecayingHistogram(0.01, 1.05, 0.001, DAY)
    with pytest.raises(ValueError, match="half_life"):
        DecayingHistogram(0.01, 1.05, 10.0, 0.0)


def test_empty_histogram() -> None:
    h = cpu_histogram()
    assert h.is_empty
    assert h.total_weight == 0.0
    assert h.percentile(0.95) == 0.0
    h.add(0.5, 0.0, 100.0)  # zero weight: nothing happens
    assert h.is_empty
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        h.percentile(1.5)


def test_percentile_is_the_upper_bound_of_the_bucket() -> None:
    h = DecayingHistogram(1.0, 2.0, 100.0, DAY)
    # values 2, 2, 2, 5 (weight 1 each), all at t = 0
    #   bucket [1,3): weight 3    bucket [3,7): weight 1
    for value in (2.0, 2.0, 2.0, 5.0):
        h.add(value, 1.0, 0.0)
    assert h.percentile(0.5) == 3.0  # 2 lies in [1, 3): answer 3, never below 2
    assert h.percentile(0.75) == 3.0  # cumulative 3/4 reaches 0.75 in [1, 3)
    assert h.percentile(0.76) == 7.0
    assert h.percentile(1.0) == 7.0
    assert h.percentile(0.0) == 3.0  # the lowest non-empty bucket


def test_negative_values_count_as_zero() -> None:
    h = DecayingHistogram(1.0, 2.0, 100.0, DAY)
    h.add(-0.0001, 1.0, 0.0)
    assert h.percentile(1.0) == 1.0


@given(
    st.lists(
        st.tuples(st.floats(min_value=0, max_value=900.0), st.integers(min_value=1, max_value=100)),
        min_size=1,
        max_size=200,
    ),
    st.floats(min_value=0.0, max_value=1.0),
)
def test_percentile_is_conservative_within_one_bucket(
    samples: list[tuple[float, int]], p: float
) -> None:
    # All samples at one timestamp: no decay, so the weighted empirical quantile is exact.
    h = cpu_histogram()
    for value, weight in samples:
        h.add(value, float(weight), 1_700_000_000.0)
    true_quantile = weighted_quantile([v for v, _ in samples], [w for _, w in samples], p)
    estimate = h.percentile(p)
    assert estimate > true_quantile
    assert estimate <= true_quantile * h.ratio + h.first_bucket


@given(
    st.lists(
        st.tuples(
            st.floats(min_value=0, max_value=900.0),
            st.floats(min_value=0.1, max_value=100.0),
            st.floats(min_value=0, max_value=30 * DAY),
        ),
        min_size=1,
        max_size=100,
    ),
    st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=2, max_size=10),
)
def test_percentile_is_monotonic_in_p(
    samples: list[tuple[float, float, float]], ps: list[float]
) -> None:
    h = cpu_histogram()
    for value, weight, timestamp in sorted(samples, key=lambda s: s[2]):
        h.add(value, weight, timestamp)
    answers = [h.percentile(p) for p in sorted(ps)]
    assert answers == sorted(answers)


def test_older_samples_count_less() -> None:
    # time  0 ────────── 1 half-life ────────── 2 half-lives
    #       value 1.0 (w=1)                      value 10.0 (w=1)
    # the newer sample weighs 2**2 = 4 times the older one: 80% of the total.
    h = DecayingHistogram(0.5, 2.0, 100.0, 3600.0)
    h.add(1.0, 1.0, 0.0)
    h.add(10.0, 1.0, 7200.0)
    assert h.percentile(0.25) == h.bucket_end(h.bucket_index(10.0))
    assert h.percentile(0.2) == h.bucket_end(h.bucket_index(1.0))
    share_of_newer = 4 / 5
    newer = h.to_state()
    weights = dict(zip(newer["index"], newer["weight"], strict=True))  # type: ignore[call-overload]  # state lists are JSON data
    assert math.isclose(weights[h.bucket_index(10.0)] / h.total_weight, share_of_newer)

    # The same two samples at the same time weigh the same: p25 is the lower value.
    flat = DecayingHistogram(0.5, 2.0, 100.0, 3600.0)
    flat.add(1.0, 1.0, 7200.0)
    flat.add(10.0, 1.0, 7200.0)
    assert flat.percentile(0.25) == flat.bucket_end(flat.bucket_index(1.0))


def test_reference_moves_forward_without_changing_relative_weights() -> None:
    # One sample per half-life for 3 * MAX_DECAY_EXPONENT half-lives, each in its own
    # bucket: the reference must move (else weights overflow past 2**60) while every
    # bucket keeps weight 2**(k - last) relative to the newest one, except buckets that
    # became negligible (< 1e-12 of the heaviest at a move), which are dropped.
    half_life = 60.0
    h = DecayingHistogram(1.0, 1.01, 10_000.0, half_life)
    steps = int(3 * MAX_DECAY_EXPONENT)
    for k in range(steps):
        h.add(float(k * 10 + 5), 1.0, k * half_life)
    state = h.to_state()
    assert state["reference"] is not None
    assert state["reference"] > 0.0  # type: ignore[operator]  # a float in JSON data
    weights = dict(zip(state["index"], state["weight"], strict=True))  # type: ignore[call-overload]  # JSON data
    newest = weights[h.bucket_index(float((steps - 1) * 10 + 5))]
    assert newest <= 2.0 ** (MAX_DECAY_EXPONENT + 1)
    kept = 0
    for k in range(steps):
        expected = 2.0 ** (k - (steps - 1))
        index = h.bucket_index(float(k * 10 + 5))
        if index in weights:
            assert math.isclose(weights[index] / newest, expected, rel_tol=1e-9)
            kept += 1
        else:
            assert expected < 1e-11
    assert kept >= 2 * MAX_DECAY_EXPONENT


def test_far_older_sample_no_longer_counts() -> None:
    h = DecayingHistogram(1.0, 2.0, 100.0, 1.0)
    h.add(50.0, 1.0, 10_000.0)
    h.add(2.0, 1.0, 0.0)  # 10,000 half-lives before the reference: weight underflows to 0
    assert h.percentile(0.0) == h.bucket_end(h.bucket_index(50.0))


def test_state_is_sparse_and_round_trips_to_an_equal_histogram() -> None:
    h = cpu_histogram()
    for k, value in enumerate((0.1, 0.1, 0.2, 3.0)):
        h.add(value, 10.0, 1_700_000_000.0 + 10 * k)
    state = h.to_state()
    assert state["index"] == sorted({h.bucket_index(v) for v in (0.1, 0.2, 3.0)})
    restored = DecayingHistogram.from_state(orjson.loads(orjson.dumps(state)))
    assert restored == h
    assert restored.to_state() == state
    assert [restored.percentile(p / 10) for p in range(11)] == [
        h.percentile(p / 10) for p in range(11)
    ]
    h.add(0.5, 10.0, 1_700_000_100.0)
    assert restored != h


@given(
    st.lists(
        st.tuples(
            st.floats(min_value=0, max_value=2000.0),
            st.floats(min_value=0.001, max_value=1000.0),
            st.floats(min_value=0, max_value=400 * DAY),
        ),
        max_size=60,
    )
)
def test_state_round_trip_is_exact(samples: list[tuple[float, float, float]]) -> None:
    h = cpu_histogram()
    for value, weight, timestamp in sorted(samples, key=lambda s: s[2]):
        h.add(value, weight, timestamp)
    restored = DecayingHistogram.from_state(orjson.loads(orjson.dumps(h.to_state())))
    assert restored == h
    for p in (0.0, 0.5, 0.9, 0.95, 0.99, 1.0):
        assert restored.percentile(p) == h.percentile(p)


@pytest.mark.parametrize(
    "damage",
    [
        {"index": [0, 1], "weight": [1.0]},
        {"index": [100_000], "weight": [1.0]},
        {"index": [1], "weight": [-1.0]},
        {"index": ["1"], "weight": [1.0]},
        {"ratio": "1.05"},
        {"weight": None},
    ],
)
def test_from_state_rejects_malformed_state(damage: dict[str, object]) -> None:
    h = cpu_histogram()
    h.add(0.5, 1.0, 0.0)
    state = {**h.to_state(), **damage}
    with pytest.raises(ValueError, match=r"histogram|ratio|number"):
        DecayingHistogram.from_state(state)


def test_from_state_names_a_missing_field() -> None:
    state = cpu_histogram().to_state()
    del state["reference"]
    with pytest.raises(ValueError, match="reference"):
        DecayingHistogram.from_state(state)


def test_module_examples_run() -> None:
    assert doctest.testmod(histogram_module).failed == 0


@given(
    values=st.lists(st.floats(min_value=0.0, max_value=50.0), min_size=1, max_size=200),
    threshold=st.floats(min_value=0.0, max_value=60.0),
)
def test_share_above_is_an_upper_bound_within_one_bucket(
    values: list[float], threshold: float
) -> None:
    histogram = DecayingHistogram(0.001, 1.05, 100.0, 365 * 86400.0)
    for value in values:
        histogram.add(value, 1.0, 0.0)
    true_share = sum(1 for v in values if v > threshold) / len(values)
    assert histogram.share_above(threshold) >= true_share - 1e-12
    # ... and counts nothing from buckets that lie wholly at or below the threshold.
    loose = sum(1 for v in values if v > threshold / 1.05 - 0.001) / len(values)
    assert histogram.share_above(threshold) <= loose + 1e-12


def test_share_above_of_an_empty_histogram_is_zero() -> None:
    assert DecayingHistogram(0.001, 1.05, 100.0, 3600.0).share_above(0.5) == 0.0


@given(
    st.lists(
        st.tuples(
            st.floats(min_value=-1, max_value=2000, allow_nan=False),
            st.floats(min_value=0.1, max_value=60),
            st.floats(min_value=0, max_value=40 * 86400),
        ),
        min_size=1,
        max_size=60,
    ),
    st.floats(allow_nan=True, allow_infinity=True),
)
def test_share_above_equals_its_definition_over_every_bucket(
    samples: list[tuple[float, float, float]], value: float
) -> None:
    """share_above reads a tail of the sorted buckets; it must equal the definition: the
    weight of every bucket whose end lies above ``value``, over the total."""
    histogram = DecayingHistogram(0.01, 1.05, 1000.0, 86400.0)
    for sample_value, weight, timestamp in sorted(samples, key=lambda s: s[2]):
        histogram.add(sample_value, weight, timestamp)
    state = histogram.to_state()
    weights = dict(zip(state["index"], state["weight"], strict=True))  # type: ignore[call-overload]
    total = math.fsum(weights.values())
    above = math.fsum(w for i, w in weights.items() if histogram.bucket_end(i) > value)
    expected = min(1.0, above / total) if total > 0 else 0.0
    assert histogram.share_above(value) == expected
