"""The VPA and KRR baselines on series whose answers can be worked out by hand."""

from __future__ import annotations

import random
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.core.baselines import (
    KRR_POINTS_REQUIRED,
    VPA_POD_MIN_CPU_CORES,
    VPA_POD_MIN_MEMORY_BYTES,
    Estimate,
    KrrRecommender,
    VpaRecommender,
    moved_enough,
    quantile_linear,
)
from pipeline.core.sizing import CurrentResources
from pipeline.core.window import SampleInput

GIB = 1024**3
MIB = 1024**2
HOUR = 3600.0
DAY = 24 * HOUR
NOTHING = CurrentResources()


def sample(t: float, cpu: float, memory: int | None = None, interval: float = 300.0) -> SampleInput:
    return SampleInput(
        timestamp=t, interval_seconds=interval, cpu_usage_cores=cpu, memory_working_set_bytes=memory
    )


# -- VPA -------------------------------------------------------------------------------


def test_vpa_constant_cpu_is_value_times_margin_within_one_bucket() -> None:
    vpa = VpaRecommender()
    for i in range(288):  # one day of 5-minute samples at 0.4 cores
        vpa.observe(sample(300.0 * i, 0.4), NOTHING)
    cpu = vpa.estimate().cpu_request_cores
    assert cpu is not None
    # the bucket holding 0.4 ends at most 5% (+ the 1-millicore first bucket) above it
    assert 0.4 * 1.15 <= cpu <= (0.4 * 1.05 + 0.001) * 1.15


def test_vpa_forgets_an_old_level_after_a_few_half_lives() -> None:
    # 2 days at 1.0 core, then d days at 0.2. With a 24 h half-life the old level keeps a
    # share 0.75 * 2**-d / (0.75 * 2**-d + 1 - 2**-d) of the weight: 43% after 1 day
    # (p90 still at 1.0), 4.8% after 4 days (p90 down at 0.2).
    vpa = VpaRecommender()
    t = 0.0
    for _ in range(2 * 288):
        vpa.observe(sample(t, 1.0), NOTHING)
        t += 300.0
    for day in range(1, 5):
        for _ in range(288):
            vpa.observe(sample(t, 0.2), NOTHING)
            t += 300.0
        cpu = vpa.estimate().cpu_request_cores
        assert cpu is not None
        if day == 1:
            assert cpu >= 1.0 * 1.15
        if day == 4:
            assert 0.2 * 1.15 <= cpu <= (0.2 * 1.05 + 0.001) * 1.15


def test_vpa_estimate_does_not_depend_on_the_request_in_force() -> None:
    # Issue 13: the VPA baseline follows the documented algorithm, usage only. The same
    # alternating usage (1.0 and 0.2) observed once under wildly varying requests and
    # once under a constant one gives the same target; under the old request weighting
    # the first followed 0.2 and the second 1.0.
    varied, constant = VpaRecommender(), VpaRecommender()
    for i in range(288):
        usage = 1.0 if i % 2 else 0.2
        request = 0.1 if i % 2 else 2.0
        varied.observe(sample(300.0 * i, usage), CurrentResources(cpu_request_cores=request))
        constant.observe(sample(300.0 * i, usage), CurrentResources(cpu_request_cores=1.0))
    a, b = varied.estimate().cpu_request_cores, constant.estimate().cpu_request_cores
    assert a is not None
    assert a == b
    assert a >= 1.0 * 1.15


def test_vpa_memory_is_the_daily_peak_times_margin() -> None:
    vpa = VpaRecommender()
    for i in range(3 * 288):  # three days; one 2 GiB spike a day, 1 GiB otherwise
        memory = 2 * GIB if i % 288 == 100 else GIB
        vpa.observe(sample(300.0 * i, 0.5, memory), NOTHING)
    memory_target = vpa.estimate().memory_bytes
    assert memory_target is not None
    # every daily peak is 2 GiB, so p90 of the peaks is the 2 GiB bucket
    assert 2 * GIB * 1.15 <= memory_target <= (2 * GIB * 1.05 + 1e7) * 1.15 + 1


def test_vpa_memory_peaks_older_than_eight_intervals_are_dropped() -> None:
    vpa = VpaRecommender()
    t = 0.0
    vpa.observe(sample(t, 0.5, 8 * GIB), NOTHING)  # one huge peak on day 0
    for _ in range(10 * 288):  # then ten days at 1 GiB
        t += 300.0
        vpa.observe(sample(t, 0.5, GIB), NOTHING)
    memory_target = vpa.estimate().memory_bytes
    assert memory_target is not None
    assert memory_target <= (GIB * 1.05 + 1e7) * 1.15 + 1


def test_vpa_floors_for_a_tiny_container() -> None:
    vpa = VpaRecommender()
    for i in range(20):
        vpa.observe(sample(300.0 * i, 0.001, 10 * MIB), NOTHING)
    assert vpa.estimate() == Estimate(VPA_POD_MIN_CPU_CORES, VPA_POD_MIN_MEMORY_BYTES)


def test_vpa_proposal_keeps_the_limit_to_request_ratio() -> None:
    vpa = VpaRecommender()
    for i in range(288):
        vpa.observe(sample(300.0 * i, 1.0, GIB), NOTHING)
    in_force = CurrentResources(
        cpu_request_cores=0.1,
        cpu_limit_cores=0.2,
        memory_request_bytes=512 * MIB,
        memory_limit_bytes=1024 * MIB,
    )
    proposal = vpa.decide(288 * 300.0, in_force)
    assert proposal is not None
    assert proposal.cpu_request_cores is not None
    assert proposal.cpu_limit_cores == pytest.approx(2 * proposal.cpu_request_cores)
    assert proposal.memory_request_bytes is not None
    assert proposal.memory_limit_bytes is not None
    assert proposal.memory_limit_bytes == pytest.approx(2 * proposal.memory_request_bytes, abs=1)
    # once in force, the same data proposes nothing
    assert vpa.decide(288 * 300.0, proposal) is None


def test_vpa_cpu_only_series_estimates_no_memory() -> None:
    vpa = VpaRecommender()
    for i in range(12):
        vpa.observe(sample(300.0 * i, 0.3), NOTHING)
    proposal = vpa.decide(3600.0, NOTHING)
    assert proposal is not None
    assert proposal.cpu_request_cores is not None
    assert proposal.memory_limit_bytes is None


# -- KRR -------------------------------------------------------------------------------


def test_krr_cpu_is_p95_of_a_known_list_and_memory_is_max_plus_15_percent() -> None:
    values = [i / 100 for i in range(200)]  # 0.00 .. 1.99
    random.Random(4).shuffle(values)
    krr = KrrRecommender()
    for i, value in enumerate(values):
        krr.observe(sample(60.0 * i, value, (1000 + i) * MIB, interval=60.0), NOTHING)
    estimate = krr.estimate()
    # rank 0.95 * 199 = 189.05 -> 1.89 + 0.05 * 0.01
    assert estimate.cpu_request_cores == pytest.approx(1.8905)
    assert estimate.memory_bytes == pytest.approx(1199 * MIB * 1.15, abs=1)


def test_krr_looks_back_fourteen_days_only() -> None:
    krr = KrrRecommender()
    krr.observe(sample(0.0, 5.0, 8 * GIB), NOTHING)  # a spike at day 0
    t = 0.0
    for _ in range(15 * 288):  # then fifteen days at 0.5 cores / 1 GiB
        t += 300.0
        krr.observe(sample(t, 0.5, GIB), NOTHING)
    assert krr.estimate() == Estimate(0.5, round(GIB * 1.15))


def test_krr_needs_100_points_and_3_hours() -> None:
    few = KrrRecommender()
    for i in range(KRR_POINTS_REQUIRED - 1):
        few.observe(sample(300.0 * i, 0.5, GIB), NOTHING)
    assert few.estimate() == Estimate(None, None)
    assert few.decide(300.0 * KRR_POINTS_REQUIRED, NOTHING) is None
    short = KrrRecommender()
    for i in range(KRR_POINTS_REQUIRED):  # 100 samples 10 s apart: under 3 hours
        short.observe(sample(10.0 * i, 0.5, GIB, interval=10.0), NOTHING)
    assert short.estimate() == Estimate(None, None)


def test_krr_proposes_request_and_limit_for_memory_and_no_cpu_limit() -> None:
    krr = KrrRecommender()
    for i in range(200):
        krr.observe(sample(300.0 * i, 0.5, GIB), NOTHING)
    proposal = krr.decide(200 * 300.0, CurrentResources(cpu_limit_cores=4.0))
    assert proposal == CurrentResources(
        cpu_request_cores=0.5,
        cpu_limit_cores=None,
        memory_request_bytes=round(GIB * 1.15),
        memory_limit_bytes=round(GIB * 1.15),
    )


@given(st.lists(st.floats(0, 1e3), min_size=2, max_size=200), st.integers(1, 99))
def test_quantile_linear_matches_the_inclusive_definition(values: list[float], pct: int) -> None:
    expected = statistics.quantiles(values, n=100, method="inclusive")[pct - 1]
    assert quantile_linear(sorted(values), pct / 100) == pytest.approx(expected, abs=1e-9)


# -- the proposal rule -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("estimate", "in_force", "expected"),
    [
        (Estimate(1.09, None), CurrentResources(cpu_request_cores=1.0), False),  # within 10%
        (Estimate(1.11, None), CurrentResources(cpu_request_cores=1.0), True),
        (Estimate(0.89, None), CurrentResources(cpu_request_cores=1.0), True),
        (Estimate(1.0, None), NOTHING, True),  # nothing in force yet
        (Estimate(None, None), NOTHING, False),  # nothing to propose
        (Estimate(1.0, 1000), CurrentResources(cpu_request_cores=1.0), True),  # memory new
        (
            Estimate(1.0, 1200),
            CurrentResources(cpu_request_cores=1.0, memory_request_bytes=1000),
            True,
        ),
        (
            Estimate(1.0, 1050),
            CurrentResources(cpu_request_cores=1.0, memory_limit_bytes=1000),
            False,
        ),
    ],
)
def test_moved_enough(estimate: Estimate, in_force: CurrentResources, expected: bool) -> None:
    assert moved_enough(estimate, in_force) is expected
