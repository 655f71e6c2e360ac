"""Backtest: replay per-container sample series as a live system would see them, and score.

The harness drives any :class:`Recommender` (daytwo's engine, the ``vpa`` and ``krr``
baselines of :mod:`pipeline.core.baselines`) the same way:

Timeline of one container (``|`` = decision instants, one per ``step_seconds``, on a grid
anchored at the trace's first timestamp; ``.`` = samples)::

    trace start                          first sample + warm-up (1 day)
    |  .  .  .  |  .  .  .  |  .  .  .  | ... |  .  .  .  |  .  .  .  |
    ^ decide(b) sees only samples with timestamp < b; a proposal made at b is in
      force for every sample with timestamp >= b until the next proposal.

One protocol for every recommender (issue 13): decisions start at the end of the
container's warm-up (the first grid instant at or after its first sample + warm-up, which
is when scoring starts), and the first decision each recommender makes is put in force.
Before it, what is in force is the trace's spec (or nothing), for everyone alike.

For each sample in time order: first every decision instant ``b <= sample.timestamp``
not yet passed is run (``decide(b, in_force)``; a non-None answer becomes the value in
force, as after a merged PR), then the sample is scored against the value in force (if
the container's warm-up is over), then the recommender observes it. So what was in
force at any time depends only on samples strictly before the last decision instant.

Scoring, per scored sample (timestamp >= the container's first sample + ``warmup_seconds``):

- CPU request in force: the last proposal's ``cpu_request_cores``, else the trace's
  spec (the container's first sample's columns), else *nothing*. Nothing in force is
  Kubernetes' "no request": it counts as 0 cores in ``mean_cpu_request_cores`` and as
  under-provisioned whenever usage is above 0.
- ``cpu_under_provisioned_share``: share of scored samples with CPU usage strictly above
  the request in force.
- Memory limit in force: likewise; nothing in force is "no limit": no simulated OOM kill,
  and the sample does not enter ``mean_memory_limit_bytes`` (an unbounded limit has no
  mean). ``simulated_oom_kills`` counts one kill per scored sample whose working set is
  strictly above the memory limit in force.
- Memory metrics are None when no scored sample carries a working set (the trace lacks
  the signal); every mean is None when nothing was scored.
- ``proposals`` counts every proposal, warm-up included (the first sizing is a PR too).

Several containers pool by sample: every mean and share is over the union of all
containers' scored samples (so with equal sample counts, the mean request times the
number of containers is the total reserved); kills and proposals are summed. Proposals
per simulated week (weeks counted from the trace's first timestamp) are kept per
container in :attr:`BacktestMetrics.proposals_per_week`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from pipeline.core.engine import ContainerEngine
from pipeline.core.sizing import CurrentResources
from pipeline.core.window import SampleInput

DEFAULT_STEP_SECONDS: Final = 3600.0
DEFAULT_WARMUP_SECONDS: Final = 86400.0
WEEK_SECONDS: Final = 7 * 86400.0


class Recommender(Protocol):
    """One container's recommender as the backtest drives it.

    Why a protocol: daytwo's engine and each baseline plug into the same replay, so the
    comparison differs only in the algorithm, never in what each one was allowed to see.
    """

    def observe(self, sample: SampleInput, in_force: CurrentResources) -> None:
        """Learn from one sample; ``in_force`` is what was in force when it was taken."""

    def decide(self, now: float, in_force: CurrentResources) -> CurrentResources | None:
        """At decision instant ``now``: the resources to propose, or None for no proposal."""


RecommenderFactory = Callable[[str, str], Recommender]
"""(workload, container) -> a fresh recommender for that container."""


@dataclass(frozen=True, slots=True)
class ContainerSeries:
    """One container's samples in time order, with the spec in force before any proposal."""

    workload: str
    container: str
    samples: Sequence[SampleInput]
    initial: CurrentResources = field(default_factory=CurrentResources)


@dataclass(frozen=True, slots=True)
class Proposal:
    """A proposal the replay put in force, at decision instant ``timestamp``."""

    workload: str
    container: str
    timestamp: float
    resources: CurrentResources


@dataclass(frozen=True, slots=True)
class ContainerReplay:
    """What happened to one container: the value in force at each sample, and proposals.

    ``in_force[i]`` is what was in force when ``samples[i]`` was taken.
    """

    series: ContainerSeries
    in_force: list[CurrentResources]
    proposals: list[Proposal]


@dataclass(frozen=True, slots=True)
class BacktestMetrics:
    """One recommender's scores over a whole trace (see the module docstring)."""

    mean_cpu_request_cores: float | None
    cpu_under_provisioned_share: float | None
    mean_memory_limit_bytes: float | None
    simulated_oom_kills: int | None
    proposals: int
    scored_samples: int
    proposals_per_week: dict[str, list[int]] = field(default_factory=dict)
    """container key (workload:container) -> proposals in week 0, 1, ... of the trace."""

    def to_json(self) -> dict[str, float | int | None]:
        """The ``M`` object of ``daytwo backtest --format json``: exactly DESIGN's five fields."""
        return {
            "mean_cpu_request_cores": self.mean_cpu_request_cores,
            "cpu_under_provisioned_share": self.cpu_under_provisioned_share,
            "mean_memory_limit_bytes": self.mean_memory_limit_bytes,
            "simulated_oom_kills": self.simulated_oom_kills,
            "proposals": self.proposals,
        }

    @property
    def max_proposals_per_week(self) -> int:
        """The most proposals any one container got within one simulated week."""
        return max((max(weeks, default=0) for weeks in self.proposals_per_week.values()), default=0)


def trace_start(series: Sequence[ContainerSeries]) -> float | None:
    """The first timestamp of all series (the decision grid's anchor), None if empty."""
    firsts = [s.samples[0].timestamp for s in series if s.samples]
    return min(firsts) if firsts else None


def replay_container(
    series: ContainerSeries,
    recommender: Recommender,
    *,
    grid_start: float,
    step_seconds: float = DEFAULT_STEP_SECONDS,
    decide_from: float | None = None,
) -> ContainerReplay:
    """Replay one container without lookahead (see the module docstring's timeline).

    ``decide_from``: no decision instant before this time is run (the recommender
    observes every sample all the same). :func:`run_backtest` passes the end of the
    container's warm-up, so every recommender makes its first decision at the same
    instant, when scoring starts, and none is scored on what it did (or did not do)
    during the warm-up.

    Why separate from scoring: the no-lookahead property is stated (and tested) on what
    was in force, independently of any metric.
    """
    if not (math.isfinite(step_seconds) and step_seconds > 0):
        raise ValueError(f"step_seconds must be a finite number > 0, got {step_seconds!r}")
    in_force = series.initial
    timeline: list[CurrentResources] = []
    proposals: list[Proposal] = []
    if not series.samples:
        return ContainerReplay(series, timeline, proposals)
    first = series.samples[0].timestamp
    if first < grid_start:
        raise ValueError(f"series starts at {first}, before the grid start {grid_start}")
    next_decision = grid_start + step_seconds * (
        math.floor((first - grid_start) / step_seconds) + 1
    )
    if decide_from is not None and decide_from > next_decision:
        next_decision = grid_start + step_seconds * math.ceil(
            (decide_from - grid_start) / step_seconds
        )
    for sample in series.samples:
        while sample.timestamp >= next_decision:
            proposed = recommender.decide(next_decision, in_force)
            if proposed is not None:
                in_force = proposed
                proposals.append(
                    Proposal(series.workload, series.container, next_decision, proposed)
                )
            next_decision += step_seconds
        timeline.append(in_force)
        recommender.observe(sample, in_force)
    return ContainerReplay(series, timeline, proposals)


def score(
    replays: Sequence[ContainerReplay],
    *,
    grid_start: float,
    warmup_seconds: float = DEFAULT_WARMUP_SECONDS,
    week_seconds: float = WEEK_SECONDS,
) -> BacktestMetrics:
    """Pool the scored samples of every container into one :class:`BacktestMetrics`."""
    scored = 0
    cpu_request_sum = 0.0
    under = 0
    memory_samples = 0
    memory_limit_sum = 0.0
    memory_limited = 0
    kills = 0
    proposals = 0
    per_week: dict[str, list[int]] = {}
    last = grid_start
    for replay in replays:
        samples = replay.series.samples
        if samples:
            last = max(last, samples[-1].timestamp)
    weeks = max(1, math.ceil((last - grid_start) / week_seconds))
    for replay in replays:
        samples = replay.series.samples
        key = f"{replay.series.workload}:{replay.series.container}"
        counts = per_week.setdefault(key, [0] * weeks)
        for proposal in replay.proposals:
            week = min(int((proposal.timestamp - grid_start) // week_seconds), weeks - 1)
            counts[week] += 1
        proposals += len(replay.proposals)
        if not samples:
            continue
        scoring_from = samples[0].timestamp + warmup_seconds
        for sample, in_force in zip(samples, replay.in_force, strict=True):
            if sample.timestamp < scoring_from:
                continue
            scored += 1
            request = in_force.cpu_request_cores
            cpu_request_sum += request or 0.0
            if sample.cpu_usage_cores > (request or 0.0):
                under += 1
            memory = sample.memory_working_set_bytes
            if memory is None:
                continue
            memory_samples += 1
            limit = in_force.memory_limit_bytes
            if limit is None:
                continue
            memory_limited += 1
            memory_limit_sum += limit
            if memory > limit:
                kills += 1
    return BacktestMetrics(
        mean_cpu_request_cores=cpu_request_sum / scored if scored else None,
        cpu_under_provisioned_share=under / scored if scored else None,
        mean_memory_limit_bytes=memory_limit_sum / memory_limited if memory_limited else None,
        simulated_oom_kills=kills if memory_samples else None,
        proposals=proposals,
        scored_samples=scored,
        proposals_per_week=per_week,
    )


def run_backtest(
    series: Sequence[ContainerSeries],
    factory: RecommenderFactory,
    *,
    step_seconds: float = DEFAULT_STEP_SECONDS,
    warmup_seconds: float = DEFAULT_WARMUP_SECONDS,
    week_seconds: float = WEEK_SECONDS,
) -> BacktestMetrics:
    """Replay every container with a fresh recommender from ``factory`` and score them.

    Why per container: every recommender here sizes one container from its own history;
    the pooled metrics then describe the whole trace.
    """
    start = trace_start(series)
    if start is None:
        return score([], grid_start=0.0, warmup_seconds=warmup_seconds, week_seconds=week_seconds)
    replays = [
        replay_container(
            one,
            factory(one.workload, one.container),
            grid_start=start,
            step_seconds=step_seconds,
            decide_from=one.samples[0].timestamp + warmup_seconds if one.samples else None,
        )
        for one in series
    ]
    return score(
        replays, grid_start=start, warmup_seconds=warmup_seconds, week_seconds=week_seconds
    )


class EngineRecommender:
    """daytwo's :class:`~pipeline.core.engine.ContainerEngine` as a backtest recommender.

    Why an adapter: the engine speaks recommendation objects and decisions (what the
    stream publishes); the backtest needs only "what goes in force now". A proposal is
    the engine's ``recommended`` values, exactly as the sink would patch them.
    """

    __slots__ = ("engine", "last_reason")

    def __init__(self, engine: ContainerEngine) -> None:
        self.engine = engine
        self.last_reason = ""

    def observe(self, sample: SampleInput, in_force: CurrentResources) -> None:
        """Apply the sample to the engine's window (what is in force is passed at decide)."""
        del in_force
        self.engine.apply(sample)

    def decide(self, now: float, in_force: CurrentResources) -> CurrentResources | None:
        """The engine's recommendation when its hysteresis lets a proposal through now."""
        decision = self.engine.evaluate(now, in_force)
        self.last_reason = decision.reason
        if not decision.propose or decision.recommendation is None:
            return None
        return resources_from_mapping(decision.recommendation["recommended"])


def resources_from_mapping(resources: object) -> CurrentResources:
    """A contract ``resources`` object (``current`` / ``recommended``) as CurrentResources."""
    if not isinstance(resources, Mapping):
        raise TypeError(f"resources must be a mapping, got {type(resources).__name__}")

    def number(key: str) -> float | None:
        value = resources.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"resources field {key!r} must be a number or null, got {value!r}")
        return float(value)

    def whole(key: str) -> int | None:
        value = number(key)
        return None if value is None else round(value)

    return CurrentResources(
        cpu_request_cores=number("cpu_request_cores"),
        cpu_limit_cores=number("cpu_limit_cores"),
        memory_request_bytes=whole("memory_request_bytes"),
        memory_limit_bytes=whole("memory_limit_bytes"),
        jvm_max_heap_bytes=whole("jvm_max_heap_bytes"),
    )
