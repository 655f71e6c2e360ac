"""Batched application (``apply_run``) equals applying sample by sample, to the last bit.

The worker folds whole batches in through :meth:`ContainerWindow.apply_run` and
:meth:`ContainerEngine.apply_run`; ``daytwo analyze`` and the tests of the rules use the
per-sample :meth:`apply`. Both must give the same state bytes, the same drift events and
the same proposals, however the samples are cut into runs (duplicates and replays
included).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.engine import ContainerEngine
from pipeline.core.profiles import BALANCED, COST_OPTIMIZED
from pipeline.core.sizing import CurrentResources
from pipeline.core.window import ContainerWindow, SampleInput, SampleRun

GIB = 2**30


def _cut(samples: Sequence[SampleInput], rng: random.Random, widest: int) -> list[SampleRun]:
    runs = []
    start = 0
    while start < len(samples):
        stop = min(len(samples), start + rng.randint(1, widest))
        runs.append(SampleRun.of(samples[start:stop]))
        start = stop
    return runs


def _stepped(count: int, seed: int) -> list[SampleInput]:
    """10 s samples whose CPU, memory and throttling double a third of the way in and
    halve two thirds of the way in (drift events on all three signals), with an OOM kill
    and a limit change, and now and then a replayed (older) or duplicate sample."""
    rng = random.Random(seed)
    samples = []
    for i in range(count):
        level = 2.0 if count // 3 <= i < 2 * count // 3 else 1.0
        timestamp = 1_750_000_000.0 + 10.0 * i
        if i > 10 and rng.random() < 0.03:
            timestamp -= 10.0 * rng.randint(0, 5)  # a replay: at or before the last one
        samples.append(
            SampleInput(
                timestamp=timestamp,
                interval_seconds=10.0,
                cpu_usage_cores=0.4 * level * rng.uniform(0.9, 1.1),
                memory_working_set_bytes=None
                if rng.random() < 0.05
                else int(300e6 * level * rng.uniform(0.97, 1.03)),
                cpu_throttled_ratio=None if i % 7 == 0 else min(1.0, 0.05 * level),
                oom_kills=1 if i == count // 2 else (None if i % 5 == 0 else 0),
                cpu_limit_cores=2.0,
                memory_limit_bytes=GIB if i < count // 2 else None,
            )
        )
    return samples


def test_a_stepped_day_cut_into_runs_equals_sample_by_sample() -> None:
    samples = _stepped(9000, seed=3)
    one_by_one = ContainerWindow.new(BALANCED)
    applied = [one_by_one.apply(sample) for sample in samples]
    assert one_by_one.drift is not None
    for signal in ("cpu", "memory", "throttling"):  # the reweighting paths are exercised
        assert one_by_one.drift.event_count(signal) >= 1, signal
    for seed, widest in ((1, 1), (2, 7), (3, 60), (4, 1000)):
        batched = ContainerWindow.new(BALANCED)
        flags: list[bool] = []
        for run in _cut(samples, random.Random(seed), widest):
            fresh = set(batched.apply_run(run))
            flags.extend(index in fresh for index in range(len(run)))
        assert flags == applied
        assert batched.to_bytes() == one_by_one.to_bytes(), widest


finite = st.floats(min_value=0, max_value=64, allow_nan=False)
sample_lists = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=400),  # timestamp step (0: a duplicate)
        st.booleans(),  # go back in time (a replay)
        finite,
        st.none() | st.integers(min_value=0, max_value=2**40),
        st.none() | st.floats(min_value=0, max_value=1),
        st.none() | st.integers(min_value=0, max_value=3),
        st.none() | st.floats(min_value=0.1, max_value=64),
        st.none() | st.integers(min_value=1, max_value=2**40),
    ),
    min_size=1,
    max_size=120,
)


Row = tuple[int, bool, float, int | None, float | None, int | None, float | None, int | None]


@settings(max_examples=150, deadline=None)
@given(sample_lists, st.integers(min_value=1, max_value=40), st.integers(0, 2**16))
def test_any_samples_cut_anyhow_equal_sample_by_sample(
    rows: list[Row],
    widest: int,
    seed: int,
) -> None:
    timestamp = 1_700_000_000.0
    samples = []
    for step, back, cpu, memory, ratio, kills, cpu_limit, memory_limit in rows:
        timestamp += -step if back else step
        samples.append(
            SampleInput(
                timestamp=timestamp,
                interval_seconds=float(max(step, 1)),
                cpu_usage_cores=cpu,
                memory_working_set_bytes=memory,
                cpu_throttled_ratio=ratio,
                oom_kills=kills,
                cpu_limit_cores=cpu_limit,
                memory_limit_bytes=memory_limit,
            )
        )
    one_by_one = ContainerWindow.new(COST_OPTIMIZED)
    for sample in samples:
        one_by_one.apply(sample)
    batched = ContainerWindow.new(COST_OPTIMIZED)
    for run in _cut(samples, random.Random(seed), widest):
        batched.apply_run(run)
    assert batched.to_bytes() == one_by_one.to_bytes()


def _engine() -> ContainerEngine:
    return ContainerEngine(
        BALANCED, workload="c/ns/Deployment/web", container="app", evaluate_on_ticks=True
    )


def test_engine_runs_evaluate_on_the_same_ticks_and_propose_the_same() -> None:
    """Two weeks of the stepped shape: the same proposals (hashes, times) and state
    whether fed sample by sample (the spec set from each sample's limits, as the worker
    did) or in runs of any width with ``limits_in_force``."""
    samples = _stepped(2 * 7 * 8640 // 6, seed=5)  # 60 s apart on average after thinning
    samples = [s for i, s in enumerate(samples) if i % 6 == 0 or s.oom_kills]
    reference = _engine()
    reference_proposals = []
    for sample in samples:
        reference.spec = CurrentResources.from_limits(
            sample.cpu_limit_cores,
            sample.memory_limit_bytes,
            jvm_max_heap_bytes=reference.spec.jvm_max_heap_bytes,
        )
        reference.apply(sample)
        reference_proposals.extend(reference.take_proposals())
    assert reference_proposals, "the shape must make the engine propose"
    assert not reference.failures
    for seed, widest in ((1, 3), (2, 50), (3, 1000)):
        engine = _engine()
        proposals = []
        for run in _cut(samples, random.Random(seed), widest):
            engine.apply_run(run, limits_in_force=True)
            proposals.extend(engine.take_proposals())
        assert not engine.failures
        assert [p.recommendation for p in proposals] == [
            p.recommendation for p in reference_proposals
        ]
        assert engine.window.to_bytes() == reference.window.to_bytes()
        assert engine.spec == reference.spec


def test_a_run_of_only_replayed_samples_changes_nothing() -> None:
    window = ContainerWindow.new(BALANCED)
    samples = _stepped(50, seed=9)
    window.apply_run(SampleRun.of(samples))
    before = window.to_bytes()
    assert window.apply_run(SampleRun.of(samples)) == []
    assert window.to_bytes() == before
    assert math.isclose(window.covered_seconds, 10.0 * window.sample_count)
