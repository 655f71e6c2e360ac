"""The engine: hysteresis rules, and seeded golden timelines that pin drift behaviour.

Every timeline runs the built-in ``balanced`` profile through :class:`ContainerEngine`
exactly as the stream does (``evaluate_on_ticks``: one evaluation per 5 minutes of trace
time), with nothing in force but the engine's own last proposal (as after a merged PR).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Iterator

from pipeline.core.engine import ContainerEngine, Decision, decide, material_changes
from pipeline.core.profiles import BALANCED
from pipeline.core.quantity import MIB
from pipeline.core.sizing import CurrentResources
from pipeline.core.window import SampleInput

T0 = 1_700_000_100.0  # a multiple of 300 s (evaluation ticks)
STEP = 15.0
DAY = 86_400.0
WORKLOAD = "prod/shop/Deployment/checkout"


def engine() -> ContainerEngine:
    return ContainerEngine(BALANCED, workload=WORKLOAD, container="app", evaluate_on_ticks=True)


def run(
    eng: ContainerEngine,
    seconds: float,
    cpu: Callable[[float], float],
    memory: Callable[[float], float],
    *,
    start: float = T0,
) -> Iterator[tuple[float, Decision]]:
    """Feed 15-second samples from ``start`` for ``seconds``; yield (time, proposal)."""
    for i in range(int(seconds / STEP)):
        t = start + i * STEP
        eng.apply(
            SampleInput(
                timestamp=t,
                interval_seconds=STEP,
                cpu_usage_cores=max(0.0, cpu(t)),
                memory_working_set_bytes=max(0, int(memory(t))),
            )
        )
        for proposal in eng.take_proposals():
            yield t, proposal
    assert not eng.failures


def recommended(decision: Decision, field: str) -> float:
    assert decision.recommendation is not None
    values = decision.recommendation["recommended"]
    assert isinstance(values, dict)
    value = values[field]
    assert isinstance(value, int | float)
    return float(value)


def rule_ids(decision: Decision) -> set[str]:
    assert decision.recommendation is not None
    rules = decision.recommendation["rules"]
    assert isinstance(rules, list)
    return {rule["id"] for rule in rules}


# -- golden timelines -------------------------------------------------------------------


def test_a_2x_memory_step_is_detected_and_proposed_within_15_minutes() -> None:
    # memory  500Mi ±2% ─────────────── 2 days ──────────────┐ 1000Mi ±2% ── 1 h
    # cpu     0.5 ±10%                                          (unchanged)
    # proposals: the first after 24 h of history (memory ≈ 575Mi), then one within
    # 15 min of the step raising memory to ≥ 1000Mi x 1.15, bypassing the 7-day
    # cool-down because the working set is above the limit in force.
    rng = random.Random(4)
    step_at = T0 + 2 * DAY
    eng = engine()

    def memory(t: float) -> float:
        level = 500 * MIB if t < step_at else 1000 * MIB
        return level * (1 + rng.gauss(0, 0.02))

    proposals = list(run(eng, 2 * DAY + 3600, lambda _: 0.5 * (1 + rng.gauss(0, 0.1)), memory))
    before = [(t, p) for t, p in proposals if t < step_at]
    after = [(t, p) for t, p in proposals if t >= step_at]
    assert len(before) == 1
    assert recommended(before[0][1], "memory_limit_bytes") < 700 * MIB
    assert after, "no proposal after the step"
    first_after, proposal = after[0]
    assert first_after - step_at <= 900
    assert recommended(proposal, "memory_limit_bytes") >= 1000 * MIB * 1.15
    assert "within the cool-down to prevent risk" in proposal.reason
    assert eng.window.drift is not None
    event = eng.window.drift.last_event("memory")
    assert event is not None
    assert event.direction == "up"
    assert event.detected_at - step_at <= 900


def test_stationary_noise_for_30_days_proposes_once() -> None:
    # cpu 0.5 ±20%, memory 400Mi ±3%, 30 days of 15-s samples: one proposal (after the
    # first 24 h), then nothing: no value moves by the minimum change.
    rng = random.Random(11)
    eng = engine()
    proposals = list(
        run(
            eng,
            30 * DAY,
            lambda _: 0.5 * (1 + rng.gauss(0, 0.2)),
            lambda _: 400 * MIB * (1 + rng.gauss(0, 0.03)),
        )
    )
    assert len(proposals) == 1, [(t - T0, p.reason) for t, p in proposals]
    assert proposals[0][0] - T0 >= DAY - STEP


def test_a_daily_pattern_does_not_alternate_up_and_down() -> None:
    # cpu 0.2 .. 1.0 cores, one period a day (±5% noise), memory 300..500Mi with it;
    # 21 days. Proposals may come (the first day has no "yesterday" to tell the cycle
    # from drift, so the first proposal sees part of it and later ones catch up), but
    # never an increase after a decrease of the same value (or the other way round).
    rng = random.Random(5)
    eng = engine()

    def phase(t: float) -> float:
        return 0.5 * (1 + math.sin(2 * math.pi * (t - T0) / DAY))

    proposals = list(
        run(
            eng,
            21 * DAY,
            lambda t: (0.2 + 0.8 * phase(t)) * (1 + rng.gauss(0, 0.05)),
            lambda t: (300 + 200 * phase(t)) * MIB * (1 + rng.gauss(0, 0.01)),
        )
    )
    assert proposals
    # ... and the catching up is over by the end of the first cool-down (day 8): the
    # last 12 days propose nothing.
    assert all(t - T0 < 9 * DAY for t, _ in proposals), [(t - T0, p.reason) for t, p in proposals]
    for field in ("cpu_request_cores", "memory_request_bytes"):
        values = [recommended(p, field) for _, p in proposals]
        moves = [b - a for a, b in itertools.pairwise(values) if b != a]
        signs = [m > 0 for m in moves]
        assert all(x == signs[0] for x in signs), f"{field} alternates: {values}"


def test_a_linear_memory_climb_is_reported_as_a_suspected_leak() -> None:
    # memory climbs 300Mi → 900Mi over 2 days (12.5Mi/h), cpu steady. The first proposal
    # (after 24 h) covers the peak; from then on the working set keeps outgrowing the
    # limit, which would normally be a risk that bypasses the cool-down — but a leak is
    # suspected, so memory does not chase it: no second proposal within the cool-down,
    # and the recommendation says why.
    rng = random.Random(8)
    eng = engine()
    proposals = list(
        run(
            eng,
            2 * DAY,
            lambda _: 0.3 * (1 + rng.gauss(0, 0.1)),
            lambda t: (300 * MIB + 600 * MIB * (t - T0) / (2 * DAY)) * (1 + rng.gauss(0, 0.01)),
        )
    )
    leak = eng.window.leak()
    assert leak is not None
    assert math.isclose(leak.slope_per_hour, 12.5 * MIB, rel_tol=0.1)
    assert len(proposals) == 1, [(t - T0, p.reason) for t, p in proposals]
    decision = eng.evaluate(T0 + 2 * DAY, CurrentResources())
    assert decision.recommendation is not None
    assert "memory-leak-suspected" in rule_ids(decision)
    assert not decision.propose
    assert "within the cool-down" in decision.reason
    evidence = decision.recommendation["evidence"]
    assert isinstance(evidence, dict)
    assert evidence["leak"] is not None
    # The recommendation itself still covers the peak seen (never a limit below usage).
    peak = eng.window.memory_peak_bytes()
    assert peak is not None
    assert recommended(decision, "memory_limit_bytes") >= peak


# -- hysteresis rules -------------------------------------------------------------------


def fed_engine(hours: float, cpu: float = 0.5, memory: int = 400 * MIB) -> ContainerEngine:
    eng = ContainerEngine(BALANCED, workload=WORKLOAD, container="app")
    for i in range(int(hours * 3600 / 60)):
        eng.apply(SampleInput(T0 + 60 * i, 60.0, cpu, memory))
    return eng


def test_material_changes_need_both_the_relative_and_the_absolute_minimum() -> None:
    current = CurrentResources(cpu_request_cores=1.0, memory_request_bytes=1024 * MIB)
    small = {"cpu_request_cores": 1.05, "memory_request_bytes": 1024 * MIB + 40 * MIB}
    assert material_changes(current, small, BALANCED) == []
    big = {"cpu_request_cores": 0.8, "memory_request_bytes": 1024 * MIB}
    (change,) = material_changes(current, big, BALANCED)
    assert (change.field, change.is_increase) == ("cpu_request_cores", False)
    # 10% of a tiny request is less than the 20m absolute minimum: not worth a PR.
    tiny = CurrentResources(cpu_request_cores=0.05)
    assert material_changes(tiny, {"cpu_request_cores": 0.06}, BALANCED) == []
    # Setting an unset value or removing a limit always counts; removal is an increase.
    limit = CurrentResources(cpu_limit_cores=2.0)
    (removed,) = material_changes(limit, {"cpu_limit_cores": None}, BALANCED)
    assert removed.is_increase


def test_the_first_proposal_waits_for_the_minimum_history() -> None:
    eng = fed_engine(hours=12)
    decision = eng.evaluate(T0 + 12 * 3600, CurrentResources())
    assert not decision.propose
    assert "waits for 24 h of history" in decision.reason
    eng = fed_engine(hours=25)
    assert eng.evaluate(T0 + 25 * 3600, CurrentResources()).propose


def test_cooldown_holds_a_decrease_but_not_an_increase_at_risk() -> None:
    eng = fed_engine(hours=25)
    first = eng.evaluate(T0 + 25 * 3600, CurrentResources())
    assert first.propose
    # Usage halves for a day: a decrease worth proposing, but within the 7-day cool-down.
    start = T0 + 25 * 3600
    for i in range(26 * 60):
        eng.apply(SampleInput(start + 60 * i, 60.0, 0.1, 150 * MIB))
    later = start + 26 * 3600
    held = eng.evaluate(later, CurrentResources())
    assert not held.propose
    assert "within the cool-down" in held.reason
    # Memory jumps above the limit in force: the increase goes through at once.
    for i in range(30):
        eng.apply(SampleInput(later + 60 * (i + 1), 60.0, 0.1, 900 * MIB))
    urgent = eng.evaluate(later + 1800, CurrentResources())
    assert urgent.propose
    assert "prevent risk" in urgent.reason
    # ... and after the cool-down a decrease is proposed again.
    assert eng.window.last_proposal_timestamp is not None


def test_the_same_recommendation_is_not_proposed_twice() -> None:
    eng = fed_engine(hours=25)
    first = eng.evaluate(T0 + 25 * 3600, CurrentResources())
    assert first.propose
    again = decide(
        first.recommendation,
        window=eng.window,
        profile=BALANCED,
        current=CurrentResources(),
        now=T0 + 30 * DAY,
    )
    assert again == (False, "unchanged since the last proposal")


def test_a_decrease_must_save_the_minimum_per_month() -> None:
    profile = BALANCED.with_overrides(min_monthly_saving_usd=100.0)
    eng = ContainerEngine(profile, workload=WORKLOAD, container="app")
    for i in range(26 * 60):
        eng.apply(SampleInput(T0 + 60 * i, 60.0, 0.2, 200 * MIB))
    current = CurrentResources(
        cpu_request_cores=1.0,
        cpu_limit_cores=2.0,
        memory_request_bytes=1024 * MIB,
        memory_limit_bytes=1024 * MIB,
    )
    decision = eng.evaluate(T0 + 26 * 3600, current)
    assert not decision.propose
    assert "under the profile's $100.00" in decision.reason
