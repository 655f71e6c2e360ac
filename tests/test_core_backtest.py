"""The backtest harness: no lookahead, scoring against the value in force, pooling."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.backtest import (
    ContainerSeries,
    Recommender,
    replay_container,
    run_backtest,
    score,
)
from pipeline.core.baselines import KrrRecommender, VpaRecommender
from pipeline.core.sizing import CurrentResources
from pipeline.core.window import SampleInput


def sample(t: float, cpu: float, memory: int | None = None) -> SampleInput:
    return SampleInput(
        timestamp=t, interval_seconds=5.0, cpu_usage_cores=cpu, memory_working_set_bytes=memory
    )


@dataclass
class Scripted:
    """Proposes given resources at given decision instants; records what it was shown."""

    script: dict[float, CurrentResources]
    observed: list[float] = field(default_factory=list)
    decided: list[tuple[float, float | None]] = field(default_factory=list)

    def observe(self, sample: SampleInput, in_force: CurrentResources) -> None:
        del in_force
        self.observed.append(sample.timestamp)

    def decide(self, now: float, in_force: CurrentResources) -> CurrentResources | None:
        del in_force
        # no lookahead: at decision instant `now` only strictly earlier samples were seen
        assert all(t < now for t in self.observed)
        self.decided.append((now, self.observed[-1] if self.observed else None))
        return self.script.get(now)


def test_scoring_on_a_hand_drawn_timeline() -> None:
    # step 10 s, warm-up 20 s, a week of 25 s. Samples every 5 s:
    #
    #   t        0    5   10   15   20   25   30   35   40   45
    #   usage   .1   .1   .1   .1   .5  1.5  1.5  2.5   .1  2.0
    #   memory  50   50   50   50   50   90  130   50   50  110
    #   decide            ^P1                 ^P2               P1 = 1 core / 100 B,
    #   in force  none    | 1/100 ...         | 2/120 ...        P2 = 2 cores / 120 B
    #   scored                      x    x    x    x    x    x   (t >= 0 + 20)
    #
    # requests in force for the scored samples: 1 1 2 2 2 2 -> mean 10/6
    # usage above the request: t=25 (1.5 > 1), t=35 (2.5 > 2) -> 2/6
    # memory limits 100 100 120 120 120 120 -> mean 680/6; above the limit: t=30 (130 >
    # 120) -> 1 kill (t=25: 90 <= 100; t=45: 110 <= 120)
    usage = [0.1, 0.1, 0.1, 0.1, 0.5, 1.5, 1.5, 2.5, 0.1, 2.0]
    memory = [50, 50, 50, 50, 50, 90, 130, 50, 50, 110]
    series = ContainerSeries(
        "c/ns/Deployment/app",
        "app",
        [sample(5.0 * i, u, m) for i, (u, m) in enumerate(zip(usage, memory, strict=True))],
    )
    p1 = CurrentResources(cpu_request_cores=1.0, memory_limit_bytes=100)
    p2 = CurrentResources(cpu_request_cores=2.0, memory_limit_bytes=120)
    recommender = Scripted({10.0: p1, 30.0: p2})
    replay = replay_container(series, recommender, grid_start=0.0, step_seconds=10.0)
    assert replay.in_force == [CurrentResources()] * 2 + [p1] * 4 + [p2] * 4
    # decided at 10 (having seen 0, 5), 20 (..15), 30 (..25), 40 (..35)
    assert recommender.decided == [(10.0, 5.0), (20.0, 15.0), (30.0, 25.0), (40.0, 35.0)]
    metrics = score([replay], grid_start=0.0, warmup_seconds=20.0, week_seconds=25.0)
    assert metrics.scored_samples == 6
    assert metrics.mean_cpu_request_cores == pytest.approx(10 / 6)
    assert metrics.cpu_under_provisioned_share == pytest.approx(2 / 6)
    assert metrics.mean_memory_limit_bytes == pytest.approx(680 / 6)
    assert metrics.simulated_oom_kills == 1
    assert metrics.proposals == 2
    assert metrics.proposals_per_week == {"c/ns/Deployment/app:app": [1, 1]}
    assert metrics.max_proposals_per_week == 1
    assert metrics.to_json() == {
        "mean_cpu_request_cores": pytest.approx(10 / 6),
        "cpu_under_provisioned_share": pytest.approx(2 / 6),
        "mean_memory_limit_bytes": pytest.approx(680 / 6),
        "simulated_oom_kills": 1,
        "proposals": 2,
    }


def test_nothing_in_force_is_no_request_and_no_limit() -> None:
    # Never proposes: each scored sample counts a 0-core request (under-provisioned when
    # usage > 0), no OOM kill, and no memory limit to average.
    series = ContainerSeries(
        "c/ns/Deployment/app",
        "app",
        [sample(0.0, 0.3, 10), sample(5.0, 0.0, 10), sample(10.0, 0.2, 10)],
    )
    metrics = run_backtest(
        [series], lambda w, c: Scripted({}), step_seconds=5.0, warmup_seconds=0.0
    )
    assert metrics.mean_cpu_request_cores == 0.0
    assert metrics.cpu_under_provisioned_share == pytest.approx(2 / 3)
    assert metrics.mean_memory_limit_bytes is None
    assert metrics.simulated_oom_kills == 0
    assert metrics.proposals == 0


def test_the_trace_spec_is_in_force_until_the_first_proposal() -> None:
    spec = CurrentResources(cpu_request_cores=0.25, memory_limit_bytes=20)
    series = ContainerSeries(
        "c/ns/Deployment/app", "app", [sample(5.0 * i, 0.5, 30) for i in range(4)], spec
    )
    metrics = run_backtest(
        [series], lambda w, c: Scripted({}), step_seconds=5.0, warmup_seconds=0.0
    )
    assert metrics.mean_cpu_request_cores == 0.25
    assert metrics.cpu_under_provisioned_share == 1.0
    assert metrics.simulated_oom_kills == 4


def test_cpu_only_trace_has_null_memory_metrics() -> None:
    series = ContainerSeries(
        "c/ns/Deployment/app", "app", [sample(300.0 * i, 0.5) for i in range(600)]
    )
    metrics = run_backtest([series], lambda w, c: VpaRecommender())
    assert metrics.mean_cpu_request_cores is not None
    assert metrics.mean_memory_limit_bytes is None
    assert metrics.simulated_oom_kills is None


def test_containers_pool_by_sample() -> None:
    # container a: 4 samples with 1 core in force; container b: 2 samples with 3 cores
    a = ContainerSeries(
        "c/ns/Deployment/app", "a", [sample(5.0 * i, 0.5) for i in range(4)], CurrentResources(1.0)
    )
    b = ContainerSeries(
        "c/ns/Deployment/app", "b", [sample(5.0 * i, 2.5) for i in range(2)], CurrentResources(3.0)
    )
    metrics = run_backtest([a, b], lambda w, c: Scripted({}), step_seconds=5.0, warmup_seconds=0.0)
    assert metrics.scored_samples == 6
    assert metrics.mean_cpu_request_cores == pytest.approx((4 * 1.0 + 2 * 3.0) / 6)
    assert metrics.cpu_under_provisioned_share == 0.0
    assert metrics.proposals_per_week == {
        "c/ns/Deployment/app:a": [0],
        "c/ns/Deployment/app:b": [0],
    }


def test_a_container_starting_later_gets_its_own_warm_up() -> None:
    early = ContainerSeries(
        "c/ns/Deployment/app", "early", [sample(10.0 * i, 1.0) for i in range(10)]
    )
    late = ContainerSeries(
        "c/ns/Deployment/app", "late", [sample(50.0 + 10.0 * i, 1.0) for i in range(5)]
    )
    metrics = run_backtest(
        [early, late], lambda w, c: Scripted({}), step_seconds=10.0, warmup_seconds=30.0
    )
    # early: t = 30..90 (7 samples); late: t = 80, 90 (2 samples)
    assert metrics.scored_samples == 9


sample_values = st.tuples(st.floats(0.0, 4.0), st.integers(0, 8 * 2**30))


@settings(max_examples=40, deadline=None)
@given(
    prefix=st.lists(sample_values, min_size=72, max_size=72),
    tail_a=st.lists(sample_values, min_size=1, max_size=60),
    tail_b=st.lists(sample_values, min_size=1, max_size=60),
    cut_hour=st.integers(1, 12),
    recommender=st.sampled_from(["vpa", "krr", "scripted"]),
)
def test_no_lookahead(
    prefix: list[tuple[float, int]],
    tail_a: list[tuple[float, int]],
    tail_b: list[tuple[float, int]],
    cut_hour: int,
    recommender: str,
) -> None:
    # Two series identical before the cut (hour `cut_hour` of the grid), different from
    # it on: what was in force before the cut, and every proposal made up to it
    # (decision instants <= cut see only samples before the cut), must be the same.
    step = 600.0  # 10-minute samples, six per hour
    cut = cut_hour * 3600.0
    n_before = int(cut // step)
    shared = [sample(step * i, c, m) for i, (c, m) in enumerate(prefix[:n_before])]
    after_a = [sample(cut + step * i, c, m) for i, (c, m) in enumerate(tail_a)]
    after_b = [sample(cut + step * i, c, m) for i, (c, m) in enumerate(tail_b)]

    def make() -> Recommender:
        if recommender == "vpa":
            return VpaRecommender()
        if recommender == "krr":
            return KrrRecommender(points_required=3, min_history_seconds=0.0)
        return Scripted({3600.0 * h: CurrentResources(float(h)) for h in range(0, 40, 3)})

    series_a = ContainerSeries("c/ns/Deployment/app", "app", shared + after_a)
    series_b = ContainerSeries("c/ns/Deployment/app", "app", shared + after_b)
    replay_a = replay_container(series_a, make(), grid_start=0.0)
    replay_b = replay_container(series_b, make(), grid_start=0.0)
    # the sample at the cut is scored against the decision taken at the cut
    assert replay_a.in_force[: n_before + 1] == replay_b.in_force[: n_before + 1]
    proposals_a = [p for p in replay_a.proposals if p.timestamp <= cut]
    proposals_b = [p for p in replay_b.proposals if p.timestamp <= cut]
    assert proposals_a == proposals_b


def test_decisions_start_at_the_end_of_the_warm_up_for_everyone() -> None:
    # Issue 13, one protocol: step 10 s, warm-up 30 s. Before the fix the harness asked
    # for decisions from t=10 on, so a recommender that proposes at its first chance
    # (the baselines) had a value in force while one that waited (daytwo) was scored on
    # nothing. Now the first decision for every recommender is at t=30.
    series = ContainerSeries(
        "c/ns/Deployment/app", "app", [sample(5.0 * i, 0.5) for i in range(12)]
    )
    recommender = Scripted({})
    run_backtest([series], lambda w, c: recommender, step_seconds=10.0, warmup_seconds=30.0)
    assert [now for now, _ in recommender.decided] == [30.0, 40.0, 50.0]
