"""Drift latency: from a 2x step in memory or in CPU to a proposal, per built-in profile.

Timeline of one case (trace time; ``|`` = evaluation ticks, every
``evaluation_interval_seconds`` of data)::

    steady 0.5 cores / 512 MiB (±5% / ±1% noise)        2x the signal from here
    (in force at first: 1 core request, 2 cores limit, 1 GiB memory; the baseline is
    longer than every profile's minimum history, so it was right-sized before the step)
    |....|....|....|....| ... baseline days ... |....|..S.|....|....|....P
    proposals are "merged" at once:                      ^ step    ^ drift   ^ the first
    the spec in force is the last proposal                           event     proposal that
                                                                               raises it

A :class:`~pipeline.core.engine.ContainerEngine` with ``evaluate_on_ticks=True`` (as the
worker runs it) is fed samples every ``interval_seconds``; every proposal goes in force
at once (as after a merged PR). Measured after the step: the drift event's detection
time, the first proposal that raises the stepped value (CPU request, or memory limit),
both in trace time, and the wall time the engine spent from the step's first sample to
that proposal (compute only: live, the trace latency *is* wall time, plus the worker's
flush interval and the agent's scrape interval). Runs differ by noise seed and by where
within an evaluation interval the step lands.

Run: ``.venv/bin/python -m bench.drift_latency [--quick]``.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from bench.common import (
    chosen_config,
    echo,
    markdown_table,
    parser,
    print_table,
    run_and_record,
    spread,
)
from pipeline.core.backtest import resources_from_mapping
from pipeline.core.engine import ContainerEngine
from pipeline.core.profiles import BUILTIN_PROFILES, Profile
from pipeline.core.sizing import CurrentResources
from pipeline.core.window import SampleInput

MIB: Final = 1024 * 1024
START: Final = 1_704_067_200.0
StepSignal = Literal["memory", "cpu"]
INITIAL_SPEC: Final = CurrentResources(
    cpu_request_cores=1.0,
    cpu_limit_cores=2.0,
    memory_request_bytes=1024 * MIB,
    memory_limit_bytes=1024 * MIB,
)
"""In force before the first proposal: a generous hand-set spec (2x the usage)."""
SIGNALS: Final[tuple[StepSignal, ...]] = ("memory", "cpu")


@dataclass(frozen=True)
class DriftLatencyConfig:
    """Sizes of one drift-latency benchmark."""

    baseline_days: float
    interval_seconds: float
    give_up_hours: float
    runs: int


QUICK: Final = DriftLatencyConfig(
    baseline_days=2.1, interval_seconds=120.0, give_up_hours=6.0, runs=1
)
FULL: Final = DriftLatencyConfig(
    baseline_days=3.0, interval_seconds=15.0, give_up_hours=24.0, runs=5
)


@dataclass(frozen=True)
class Case:
    """One profile, one stepped signal, one seed."""

    profile: str
    signal: StepSignal
    detected_after: float | None
    """Trace seconds from the step to the drift event of that signal (None: none)."""
    proposed_after: float | None
    """Trace seconds from the step to the first proposal raising the value (None: none)."""
    compute_seconds: float | None
    """Wall seconds the engine spent from the step's first sample to that proposal."""
    before: float | None
    after: float | None
    """The value in force before the step, and the one proposed."""


def _sample(
    t: float, interval: float, cpu: float, memory: float, rng: random.Random
) -> SampleInput:
    return SampleInput(
        timestamp=t,
        interval_seconds=interval,
        cpu_usage_cores=round(cpu * rng.uniform(0.95, 1.05), 6),
        memory_working_set_bytes=int(memory * rng.uniform(0.99, 1.01)),
    )


def _field(signal: StepSignal) -> str:
    return "memory_limit_bytes" if signal == "memory" else "cpu_request_cores"


def run_case(profile: Profile, signal: StepSignal, config: DriftLatencyConfig, seed: int) -> Case:
    """Feed baseline then step; return when the stepped value is proposed higher (or give up)."""
    rng = random.Random(seed)
    interval = config.interval_seconds
    engine = ContainerEngine(
        profile, workload="bench/drift/Deployment/app", container="app", evaluate_on_ticks=True
    )
    engine.spec = INITIAL_SPEC
    cpu, memory = 0.5, 512.0 * MIB
    # The step lands at a random sample within an evaluation interval, as it would live.
    ticks = max(1, int(profile.evaluation_interval_seconds // interval))
    step_at = START + config.baseline_days * 86_400.0 + rng.randrange(ticks) * interval
    end = step_at + config.give_up_hours * 3600.0
    field = _field(signal)
    before: float | None = None
    t = START
    step_wall: float | None = None
    proposal: tuple[float, float, float] | None = None  # (trace delay, compute, value)
    while t < end:
        stepped = t >= step_at
        if stepped and step_wall is None:
            before = getattr(engine.spec, field)
            step_wall = time.perf_counter()
        factor = 2.0 if stepped else 1.0
        sample = _sample(
            t,
            interval,
            cpu * (factor if signal == "cpu" else 1.0),
            memory * (factor if signal == "memory" else 1.0),
            rng,
        )
        engine.apply(sample)
        for decision in engine.take_proposals():
            assert decision.recommendation is not None
            proposed = resources_from_mapping(decision.recommendation["recommended"])
            previous = getattr(engine.spec, field)
            engine.spec = proposed  # merged at once
            value = getattr(proposed, field)
            raised = value is not None and (previous is None or value > previous)
            if stepped and raised and proposal is None:
                assert step_wall is not None
                proposal = (t - step_at, time.perf_counter() - step_wall, value)
        detected = _detected_after(engine, signal, step_at)
        if proposal is not None and detected is not None:
            break
        t += interval
    return Case(
        profile.name,
        signal,
        _detected_after(engine, signal, step_at),
        None if proposal is None else proposal[0],
        None if proposal is None else proposal[1],
        before,
        None if proposal is None else proposal[2],
    )


def _detected_after(engine: ContainerEngine, signal: StepSignal, step_at: float) -> float | None:
    drift = engine.window.drift
    event = None if drift is None else drift.last_event(signal)
    if event is None or event.detected_at < step_at:
        return None
    return event.detected_at - step_at


@dataclass
class DriftLatencyReport:
    """Every case of every run."""

    config: DriftLatencyConfig
    cases: list[Case]


def run(config: DriftLatencyConfig) -> DriftLatencyReport:
    """All profiles x signals x runs."""
    cases: list[Case] = []
    for name, profile in BUILTIN_PROFILES.items():
        for signal in SIGNALS:
            echo(f"{name}: 2x step in {signal}")
            cases.extend(run_case(profile, signal, config, seed) for seed in range(config.runs))
    return DriftLatencyReport(config, cases)


def _minutes(values: list[float | None]) -> str:
    known = [v / 60 for v in values if v is not None]
    missing = len(values) - len(known)
    if not known:
        return "none"
    text = spread(known).text("{:.1f}")
    return text + (f"; {missing} without" if missing else "")


def _milliseconds(values: list[float | None]) -> str:
    known = [v * 1000 for v in values if v is not None]
    return spread(known).text("{:.1f} ms") if known else "none"


def _value(signal: StepSignal, value: float | None) -> str:
    if value is None:
        return "unset"
    return f"{value / MIB:,.0f} MiB" if signal == "memory" else f"{value:.3f} cores"


def render(report: DriftLatencyReport) -> str:
    """Print the table; return the markdown body of the result block."""
    rows = []
    groups: dict[tuple[str, StepSignal], list[Case]] = {}
    for case in report.cases:
        groups.setdefault((case.profile, case.signal), []).append(case)
    for (profile, signal), cases in groups.items():
        afters = [c.after for c in cases if c.after is not None]
        rows.append(
            (
                profile,
                f"2x {signal}",
                _minutes([c.detected_after for c in cases]),
                _minutes([c.proposed_after for c in cases]),
                _milliseconds([c.compute_seconds for c in cases]),
                f"{_value(signal, cases[0].before)} → "
                + (_value(signal, spread(afters).median) if afters else "no proposal"),
            )
        )
    headers = (
        "profile",
        "step",
        "drift event after (trace min)",
        "proposal after (trace min)",
        "engine compute step→proposal (wall)",
        "value in force → proposed (median)",
    )
    print_table(
        "daytwo drift latency (in-process ContainerEngine, evaluation on ticks)", headers, rows
    )
    config = report.config
    intro = (
        f"Baseline {config.baseline_days:g} days of {config.interval_seconds:g} s samples "
        f"(0.5 cores ±5%, 512 MiB ±1%; in force at first: 1 core request, 2 cores limit, "
        f"1 GiB memory), then 2x the signal; every proposal goes in force at once; "
        f"{config.runs} noise seeds per case, giving up {config.give_up_hours:g} h after the "
        "step. In process only; live, the wall-clock latency is the trace latency plus the "
        "agent's scrape interval and the worker's flush interval (5 s by default). The "
        "end-to-end variant on the embedded broker is not built yet."
    )
    return intro + "\n\n" + markdown_table(headers, rows)


def main(argv: Sequence[str] | None = None) -> DriftLatencyReport:
    """``python -m bench.drift_latency``."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    options = parser("Drift latency: 2x step to proposal, per profile.").parse_args(args_list)
    config = chosen_config(options, quick=QUICK, full=FULL)
    return run_and_record(
        options, "drift_latency", args_list, measure=lambda: run(config), render=render
    )


if __name__ == "__main__":
    main()
