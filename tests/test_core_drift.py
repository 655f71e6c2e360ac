"""Drift and leak detection: seeded golden timelines, exact restore, small state."""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Iterator

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.drift import (
    SIGNALS,
    DriftConfig,
    DriftEvent,
    DriftStateError,
    DriftTracker,
    LeakSuspicion,
    Signal,
    _adwin_from_state,
    _adwin_to_state,
    _new_adwin,
)
from pipeline.errors import DaytwoError

MIB = 1024**2
MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0
STEP_SECONDS = 15.0
SAMPLES_PER_DAY = int(DAY / STEP_SECONDS)  # 5,760
T0 = 1_700_006_400.0  # 2023-11-15 00:00 UTC: a whole number of days and of buckets

Series = Callable[[float], float]


def timestamps(days: float, start: float = T0) -> Iterator[float]:
    for index in range(int(days * SAMPLES_PER_DAY)):
        yield start + index * STEP_SECONDS


def feed(tracker: DriftTracker, signal: Signal, series: Series, days: float) -> list[DriftEvent]:
    events = []
    for t in timestamps(days):
        event = tracker.update(signal, t, series(t))
        if event is not None:
            events.append(event)
    return events


def noisy(rng: random.Random, level: float, share: float) -> float:
    return level * (1.0 + rng.uniform(-share, share))


# -- golden timelines ----------------------------------------------------------------


def test_memory_step_up_is_one_event_within_15_minutes() -> None:
    # memory
    #  1000 MiB |                                         ┌────── (1 h)
    #   500 MiB |─────────────────────────────────────────┘  ±2 % noise
    #           T0                                   T0+2d = step
    # expect: exactly one event, up, detected <= 15 min after the step
    rng = random.Random(11)
    step = T0 + 2 * DAY

    def memory(t: float) -> float:
        return noisy(rng, 500 * MIB if t < step else 1000 * MIB, 0.02)

    tracker = DriftTracker.new(DriftConfig())
    events = feed(tracker, "memory", memory, days=2 + 1 / 24)

    assert len(events) == 1
    (event,) = events
    assert event.signal == "memory"
    assert event.direction == "up"
    assert 0 < event.detected_at - step <= 900
    assert abs(event.regime_start - step) <= 5 * MINUTE
    assert event.level_before == pytest.approx(500 * MIB, rel=0.02)
    assert event.level_after == pytest.approx(1000 * MIB, rel=0.02)
    assert tracker.last_event("memory") == event
    assert tracker.event_count("memory") == 1
    assert tracker.leak() is None


def test_memory_step_down_is_detected_downwards() -> None:
    # memory
    #   800 MiB |──────────────────────────┐   ±2 % noise
    #   400 MiB |                          └──────── (2 h)
    #           T0                   T0+1d = step
    rng = random.Random(5)
    step = T0 + DAY

    def memory(t: float) -> float:
        return noisy(rng, 800 * MIB if t < step else 400 * MIB, 0.02)

    tracker = DriftTracker.new(DriftConfig())
    events = feed(tracker, "memory", memory, days=1 + 2 / 24)

    assert [event.direction for event in events] == ["down"]
    assert 0 < events[0].detected_at - step <= 900
    assert events[0].level_after == pytest.approx(400 * MIB, rel=0.02)


def test_thirty_stationary_days_give_no_event_and_small_state() -> None:
    # cpu          0.5 cores ±20 %     ───────────────────────────── 30 days
    # memory       500 MiB ±3 %        ─────────────────────────────
    # gc_overhead  3 % ±50 %           ─────────────────────────────
    # throttling   0 with 10 % bursts  ─────────────────────────────
    # expect: no event on any signal; state (sampled hourly) always < 2 KB of JSON
    rng = random.Random(2024)
    tracker = DriftTracker.new(DriftConfig())
    largest_state = 0
    events: list[DriftEvent] = []
    update = tracker.update
    for index, t in enumerate(timestamps(30)):
        for event in (
            update("cpu", t, 0.5 * (1.0 + rng.uniform(-0.2, 0.2))),
            update("memory", t, 500 * MIB * (1.0 + rng.uniform(-0.03, 0.03))),
            update("gc_overhead", t, 0.03 * (1.0 + rng.uniform(-0.5, 0.5))),
            update("throttling", t, 0.0 if rng.random() < 0.9 else rng.uniform(0.0, 0.05)),
        ):
            if event is not None:
                events.append(event)
        if index % 240 == 0:
            largest_state = max(largest_state, len(orjson.dumps(tracker.to_state())))

    assert events == []
    assert all(tracker.event_count(signal) == 0 for signal in SIGNALS)
    assert not any(tracker.is_periodic(signal) for signal in SIGNALS)
    assert tracker.leak() is None
    assert 0 < largest_state < 2048


def test_daily_cycle_is_recognised_as_seasonal_after_the_first_days() -> None:
    # cpu (cores), 14 days, +-10 % noise:
    #   1.0 |    .-.                 .-.
    #   0.6 |---'   '.           .--'   '.          ...
    #   0.2 |          '-.___.--'          '-.___
    #       0h   6h        18h    24h  30h
    # The first day has no "yesterday" to compare with, so its phases are events. From
    # day 3 on, changes repeat yesterday's levels: counted as seasonal, not events.
    rng = random.Random(7)

    def cpu(t: float) -> float:
        return noisy(rng, 0.6 + 0.4 * math.sin(2 * math.pi * (t - T0) / DAY), 0.1)

    tracker = DriftTracker.new(DriftConfig())
    events = feed(tracker, "cpu", cpu, days=14)

    first_two_days = [e for e in events if e.detected_at < T0 + 2 * DAY]
    later = [e for e in events if e.detected_at >= T0 + 2 * DAY]
    assert first_two_days  # the detectors do see each phase at first
    # not an event every half-day: 24 half-days follow, allow a stray one per 4 days
    assert len(later) <= 3
    assert tracker.seasonal_count("cpu") >= 5 * 12  # most daily swings were matched
    assert tracker.is_periodic("cpu")


def test_linear_memory_climb_is_a_leak_with_its_slope() -> None:
    # memory
    #   900 MiB |                                 /
    #           |                    ////////////
    #   300 MiB |///////////////////               (2 days, ±1 % noise)
    #           T0                                T0+2d
    # slope = 600 MiB / 48 h = 12.5 MiB/h
    rng = random.Random(3)

    def memory(t: float) -> float:
        return noisy(rng, (300 + 600 * (t - T0) / (2 * DAY)) * MIB, 0.01)

    tracker = DriftTracker.new(DriftConfig())
    feed(tracker, "memory", memory, days=2)

    leak = tracker.leak()
    assert leak is not None
    assert leak.slope_per_hour / MIB == pytest.approx(12.5, rel=0.05)
    assert leak.r2 >= 0.9
    assert leak.growth_share >= 1.5  # 300 -> 900 MiB
    assert leak.since - T0 <= 2 * HOUR
    assert orjson.loads(orjson.dumps(leak.to_dict()))["slope_per_hour"] == leak.slope_per_hour


def test_leak_needs_the_configured_duration() -> None:
    # the same climb, but only 4 h of it: shorter than leak_min_seconds (6 h)
    rng = random.Random(3)

    def memory(t: float) -> float:
        return noisy(rng, (300 + 600 * (t - T0) / (2 * DAY)) * MIB, 0.01)

    tracker = DriftTracker.new(DriftConfig())
    feed(tracker, "memory", memory, days=4 / 24)
    assert tracker.leak() is None


def test_memory_step_and_steady_memory_are_not_leaks() -> None:
    # memory (2x step at T0+1d, then flat for a day) and a steady series: leak() stays
    # None at every hour, before and after the step.
    #  1000 MiB |                ┌────────────────
    #   500 MiB |────────────────┘
    rng = random.Random(9)
    step = T0 + DAY
    stepped = DriftTracker.new(DriftConfig())
    steady = DriftTracker.new(DriftConfig())
    for index, t in enumerate(timestamps(2)):
        stepped.update("memory", t, noisy(rng, 500 * MIB if t < step else 1000 * MIB, 0.02))
        steady.update("memory", t, noisy(rng, 500 * MIB, 0.02))
        if index % 240 == 0:
            assert stepped.leak() is None, f"step called a leak at {(t - T0) / HOUR} h"
            assert steady.leak() is None, f"steady memory called a leak at {(t - T0) / HOUR} h"
    assert stepped.event_count("memory") == 1


def test_small_shift_below_min_relative_shift_is_no_event() -> None:
    # cpu 1.0 cores ±2 % for a day, then 1.1 cores: statistically real, but only 10 %
    rng = random.Random(1)
    step = T0 + DAY

    def cpu(t: float) -> float:
        return noisy(rng, 1.0 if t < step else 1.1, 0.02)

    tracker = DriftTracker.new(DriftConfig())
    assert feed(tracker, "cpu", cpu, days=1.5) == []


# -- samples: ordering, replay, bad input --------------------------------------------


def test_replayed_and_older_samples_change_nothing() -> None:
    rng = random.Random(4)
    samples = [(t, noisy(rng, 2.0 if t > T0 + 6 * HOUR else 1.0, 0.05)) for t in timestamps(0.5)]
    once = DriftTracker.new(DriftConfig())
    twice = DriftTracker.new(DriftConfig())
    for t, value in samples:
        once.update("cpu", t, value)
        twice.update("cpu", t, value)
        twice.update("cpu", t, value * 3)  # same timestamp: ignored
        assert twice.update("cpu", t - 30.0, 99.0) is None  # older: ignored
    for t, value in samples:  # a full replay
        assert twice.update("cpu", t, value) is None
    assert once.to_state() == twice.to_state()
    assert once.event_count("cpu") == 1


def test_unknown_signal_and_non_finite_values_are_rejected() -> None:
    tracker = DriftTracker.new(DriftConfig())
    with pytest.raises(ValueError, match="unknown drift signal"):
        tracker.update("disk", T0, 1.0)  # type: ignore[arg-type]  # deliberately wrong
    with pytest.raises(ValueError, match="finite"):
        tracker.update("cpu", T0, math.nan)
    with pytest.raises(ValueError, match="finite"):
        tracker.update("cpu", T0, math.inf)


def test_event_to_dict_is_json_ready() -> None:
    event = DriftEvent("cpu", "adwin", T0 + 60, T0, "up", 0.5, 1.0)
    assert orjson.loads(orjson.dumps(event.to_dict())) == {
        "signal": "cpu",
        "detector": "adwin",
        "detected_at": T0 + 60,
        "regime_start": T0,
        "direction": "up",
        "level_before": 0.5,
        "level_after": 1.0,
    }
    leak = LeakSuspicion(since=T0, slope_per_hour=1e6, r2=0.95, growth_share=0.3)
    assert orjson.loads(orjson.dumps(leak.to_dict()))["r2"] == 0.95


# -- configuration -------------------------------------------------------------------


def test_sensitivity_half_is_the_defaults_and_higher_is_more_sensitive() -> None:
    assert DriftConfig.from_sensitivity(0.5) == DriftConfig()
    low, high = DriftConfig.from_sensitivity(0.1), DriftConfig.from_sensitivity(1.0)
    assert low.adwin_delta < DriftConfig().adwin_delta < high.adwin_delta < 1.0
    assert low.ph_threshold > DriftConfig().ph_threshold > high.ph_threshold
    assert low.min_relative_shift > high.min_relative_shift
    assert low.leak_min_seconds > high.leak_min_seconds


@pytest.mark.parametrize("sensitivity", [0.0, -0.1, 1.01, math.nan])
def test_sensitivity_outside_zero_one_is_rejected(sensitivity: float) -> None:
    with pytest.raises(ValueError, match="sensitivity"):
        DriftConfig.from_sensitivity(sensitivity)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("aggregate_seconds", 0.0),
        ("adwin_delta", 1.0),
        ("adwin_delta", 0.0),
        ("ph_threshold", -1.0),
        ("min_relative_shift", 0.0),
        ("regime_warmup_buckets", 0),
        ("adwin_max_window_buckets", 8),
        ("seasonal_tolerance_seconds", 50_000.0),
        ("leak_min_r2", 1.5),
        ("leak_segment_seconds", 3600.0),
    ],
)
def test_config_names_the_bad_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"DriftConfig.{field}"):
        DriftConfig(**{field: value})  # type: ignore[arg-type]  # one field at a time


# -- state ---------------------------------------------------------------------------


def test_adwin_state_round_trips_to_the_same_river_bytes() -> None:
    config = DriftConfig()
    rng = random.Random(8)
    detector = _new_adwin(config)
    for index in range(1000):
        value = rng.gauss(1.0 if index < 900 else 3.0, 0.1)
        detector.update(value)  # type: ignore[no-untyped-call]  # river ships no type hints
    saved = orjson.loads(orjson.dumps(_adwin_to_state(detector)))
    restored = _adwin_from_state(saved, config, "adwin")
    assert restored._helper.__getstate__() == detector._helper.__getstate__()
    assert (restored.width, restored.total) == (detector.width, detector.total)


def _series(seed: int, steps: int, cyclic: bool, climb: bool) -> list[tuple[Signal, float, float]]:
    """Nine hours of interleaved samples: random steps, gaps and replays; optionally a
    2-hour CPU cycle (against a 2-hour seasonal period) and a memory climb."""
    rng = random.Random(seed)
    level = {"cpu": 0.5, "memory": 400.0 * MIB, "gc_overhead": 0.02, "throttling": 0.0}
    step_times = sorted(rng.uniform(T0 + HOUR, T0 + 8 * HOUR) for _ in range(steps))
    samples: list[tuple[Signal, float, float]] = []
    t = T0
    while t < T0 + 9 * HOUR:
        while step_times and step_times[0] <= t:
            step_times.pop(0)
            signal = rng.choice(SIGNALS)
            level[signal] = level[signal] * rng.choice([0.4, 2.5]) + rng.choice([0.0, 0.1])
        shape = dict.fromkeys(SIGNALS, 1.0)
        if cyclic:
            shape["cpu"] = 1.0 + 0.6 * math.sin(2 * math.pi * (t - T0) / (2 * HOUR))
        if climb:
            shape["memory"] = 1.0 + (t - T0) / (3 * HOUR)
        for signal in SIGNALS:
            if rng.random() < 0.9:
                value = level[signal] * shape[signal] * (1 + rng.uniform(-0.05, 0.05))
                samples.append((signal, t, value))
        if rng.random() < 0.02:
            samples.append(("cpu", t - 45.0, 1.0))  # an old sample: ignored
        t += 600.0 if rng.random() < 0.01 else rng.choice([15.0, 15.0, 30.0])
    return samples


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    steps=st.integers(0, 6),
    cyclic=st.booleans(),
    climb=st.booleans(),
    cut=st.floats(0.0, 1.0),
    sensitivity=st.sampled_from([0.3, 0.5, 0.9]),
)
def test_restored_tracker_behaves_like_one_that_never_stopped(
    seed: int, steps: int, cyclic: bool, climb: bool, cut: float, sensitivity: float
) -> None:
    config = dataclasses.replace(
        DriftConfig.from_sensitivity(sensitivity),
        seasonal_period_seconds=2 * HOUR,
        seasonal_tolerance_seconds=15 * MINUTE,
        leak_min_seconds=HOUR,
        leak_segment_seconds=3 * HOUR,
    )
    samples = _series(seed, steps, cyclic, climb)
    split = int(cut * len(samples))

    uninterrupted = DriftTracker.new(config)
    expected = [uninterrupted.update(*sample) for sample in samples]

    first = DriftTracker.new(config)
    got = [first.update(*sample) for sample in samples[:split]]
    checkpoint = orjson.dumps(first.to_state())
    restored = DriftTracker.from_state(orjson.loads(checkpoint), config)
    got += [restored.update(*sample) for sample in samples[split:]]

    assert got == expected
    assert restored.to_state() == uninterrupted.to_state()
    assert restored.leak() == uninterrupted.leak()
    for signal in SIGNALS:
        assert restored.last_event(signal) == uninterrupted.last_event(signal)
        assert restored.seasonal_count(signal) == uninterrupted.seasonal_count(signal)


def _saved_tracker() -> dict[str, object]:
    rng = random.Random(12)
    tracker = DriftTracker.new(DriftConfig())
    for t in timestamps(0.3):
        tracker.update("cpu", t, noisy(rng, 1.0 if t < T0 + 3 * HOUR else 2.0, 0.05))
        tracker.update("memory", t, noisy(rng, 300 * MIB, 0.01))
    state = orjson.loads(orjson.dumps(tracker.to_state()))
    assert isinstance(state, dict)
    assert state["v"] == 1
    return state


def test_state_is_plain_versioned_json() -> None:
    state = _saved_tracker()
    cpu = state["signals"]["cpu"]  # type: ignore[index]  # parsed JSON
    assert cpu["e"][0] in ("adwin", "page-hinkley")
    assert all(isinstance(row, list) for row in cpu["a"][7])
    restored = DriftTracker.from_state(state, DriftConfig())
    assert restored.to_state() == state


def _broken(path: list[str | int], value: object) -> dict[str, object]:
    state = _saved_tracker()
    target: object = state
    for key in path[:-1]:
        target = target[key]  # type: ignore[index]  # walking parsed JSON
    target[path[-1]] = value  # type: ignore[index]  # walking parsed JSON
    return state


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["v"], 2, "version 2"),
        (["v"], None, "version None"),
        (["agg"], 30.0, "aggregated per 30.0"),
        (["signals"], [], "'signals' must be an object"),
        (["signals", "cpu", "t"], "soon", "'cpu.t' must be a number"),
        (["signals", "cpu", "b"], [1.0], "'cpu.b' must be a list of 2"),
        (["signals", "cpu", "a", 7], [[1.0, 0.0, 2.0]], r"cpu.a\[7\]\[0\]' is malformed"),
        (["signals", "cpu", "a", 0], math.inf, r"'cpu.a\[0\]' must be finite"),
        (["signals", "cpu", "a", 1], "1.0", r"'cpu.a\[1\]' must be a number"),
        (["signals", "cpu", "a", 3], -1, "n_buckets"),
        (["signals", "cpu", "p"], [1.0, 2.0], "'ph' must be a list of 6"),
        (["signals", "cpu", "e", 3], "sideways", "bad detector or direction"),
        (["signals", "memory", "n"], [1, 2], "'memory.n' must be a list of 3"),
        (["leak"], [1.0], "'leak' must be a list of 8"),
    ],
)
def test_malformed_state_is_rejected_with_the_field(
    path: list[str | int], value: object, message: str
) -> None:
    with pytest.raises(DriftStateError, match=message) as caught:
        DriftTracker.from_state(_broken(path, value), DriftConfig())
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, DaytwoError)


def test_unknown_signal_in_state_and_non_dict_state_are_rejected() -> None:
    state = _saved_tracker()
    state["signals"]["disk"] = state["signals"]["cpu"]  # type: ignore[index]  # parsed JSON
    with pytest.raises(DriftStateError, match="unknown signal 'disk'"):
        DriftTracker.from_state(state, DriftConfig())
    with pytest.raises(DriftStateError, match="must be an object"):
        DriftTracker.from_state(b"\x80\x04pickle", DriftConfig())


def test_adwin_rows_must_add_up_to_whole_buckets() -> None:
    # a row of 2**i values holding half an entry cannot come from River
    state = _saved_tracker()
    rows = state["signals"]["memory"]["a"][7]  # type: ignore[index]  # parsed JSON
    rows.append([5.0])
    with pytest.raises(DriftStateError, match="malformed"):
        DriftTracker.from_state(state, DriftConfig())


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_update_run_refuses_non_finite_values_after_applying_what_came_before(
    bad: float,
) -> None:
    """Like update(): the samples before the bad one are in, the bad one raises, and the
    tracker equals one fed the good prefix sample by sample."""
    timestamps = [60.0 * i for i in range(30)]
    values: list[float | None] = [1.0] * 30
    values[20] = bad
    batched = DriftTracker.new(DriftConfig())
    with pytest.raises(ValueError, match="finite"):
        batched.update_run("cpu", timestamps, values)
    one_by_one = DriftTracker.new(DriftConfig())
    for timestamp in timestamps[:20]:
        one_by_one.update("cpu", timestamp, 1.0)
    assert batched.to_state() == one_by_one.to_state()
    with pytest.raises(ValueError, match="finite"):
        batched.update_run("cpu", [math.inf], [1.0])  # a non-finite time too
