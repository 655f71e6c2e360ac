"""Profiles and sizing: the recommendation contract, its math, rules, cost, risk, hash."""

from __future__ import annotations

import re

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.profiles import BALANCED, Profile
from pipeline.core.quantity import round_up_cpu
from pipeline.core.sizing import CurrentResources, Prices, recommend
from pipeline.core.window import ContainerWindow, SampleInput
from schemas.models import Recommendation
from schemas.validate import validator_for

TIMES = "\N{MULTIPLICATION SIGN}"
MIB = 1024**2
GIB = 1024**3
T0 = 1_699_999_800.0
WORKLOAD = "prod/shop/Deployment/checkout"
FEW = BALANCED.with_overrides(min_samples=5, decrease_min_history_seconds=0.0)


def window_of(
    profile: Profile,
    cpu: list[float],
    mem: list[int],
    *,
    step: float = 10.0,
    throttled: float | None = None,
    oom_kills: int | None = None,
) -> ContainerWindow:
    window = ContainerWindow.new(profile)
    for i, (c, m) in enumerate(zip(cpu, mem, strict=True)):
        window.apply(
            SampleInput(
                timestamp=T0 + step * (i + 1),
                interval_seconds=step,
                cpu_usage_cores=c,
                memory_working_set_bytes=m,
                cpu_throttled_ratio=throttled,
                oom_kills=oom_kills,
            )
        )
    return window


def rec_for(
    window: ContainerWindow,
    profile: Profile = FEW,
    current: CurrentResources | None = None,
    now: float = T0 + 86400,
) -> dict[str, object]:
    rec = recommend(
        window,
        profile,
        workload=WORKLOAD,
        container="app",
        current=current or CurrentResources(),
        now=now,
    )
    assert rec is not None
    return rec


def rules_of(rec: dict[str, object]) -> dict[str, str]:
    rules = rec["rules"]
    assert isinstance(rules, list)
    return {rule["id"]: rule["text"] for rule in rules}


def recommended(rec: dict[str, object]) -> dict[str, float | int | None]:
    value = rec["recommended"]
    assert isinstance(value, dict)
    return value


# -- profiles ---------------------------------------------------------------------------


# -- the recommendation -----------------------------------------------------------------


def test_no_recommendation_before_min_samples() -> None:
    # samples: 1 2 3 4 │ 5 ← min_samples reached: first recommendation
    window = window_of(FEW, [0.3] * 4, [400 * MIB] * 4)
    assert (
        recommend(
            window, FEW, workload=WORKLOAD, container="app", current=CurrentResources(), now=T0
        )
        is None
    )
    window.apply(SampleInput(T0 + 1000, 10.0, 0.3, 400 * MIB))
    assert rec_for(window) is not None


def test_a_steady_container_gets_the_contract_the_schema_describes() -> None:
    # 1,440 one-minute samples (a day): CPU steady at 0.3 cores, memory at 400Mi.
    # CPU: p95 lies in the histogram bucket holding 0.3 → its upper bound u, 0.3 < u ≤ 0.316
    #      u * 1.10 is above the highest usage seen (0.3), so the request is capped there
    #      (cpu-request-capped-at-max): 300m
    # memory: peak 400Mi * 1.15 = 460Mi exactly → request = limit = 460Mi
    window = window_of(FEW, [0.3] * 1440, [400 * MIB] * 1440, step=60.0)
    current = CurrentResources(
        cpu_request_cores=1.0,
        cpu_limit_cores=2.0,
        memory_request_bytes=GIB,
        memory_limit_bytes=GIB,
    )
    rec = rec_for(window, current=current, now=T0 + 90000.0)
    validator_for(Recommendation).validate(orjson.loads(orjson.dumps(rec)))  # JSON-ready
    Recommendation.model_validate(rec)
    assert rec["schema_version"] == 1
    assert rec["kind"] == "recommendation"
    assert (rec["workload"], rec["container"], rec["profile"]) == (WORKLOAD, "app", "balanced")
    assert rec["generated_at"] == T0 + 90000.0
    assert rec["current"] == {
        "cpu_request_cores": 1.0,
        "cpu_limit_cores": 2.0,
        "memory_request_bytes": GIB,
        "memory_limit_bytes": GIB,
        "jvm_max_heap_bytes": None,
    }
    new = recommended(rec)
    cpu_request = new["cpu_request_cores"]
    assert isinstance(cpu_request, float)
    assert cpu_request == 0.3
    assert new["cpu_limit_cores"] == 2.0
    assert new["memory_request_bytes"] == new["memory_limit_bytes"] == 460 * MIB
    assert new["jvm_max_heap_bytes"] is None

    rules = rules_of(rec)
    assert list(rules) == [
        "cpu-request-percentile",
        "cpu-request-capped-at-max",
        "cpu-limit-keep",
        "memory-request-peak",
        "memory-limit-equal-request",
    ]
    assert re.fullmatch(
        rf"CPU request = p95 of 0\.3\d\d cores {TIMES} 1\.10 = 3\d\dm over 1,440 samples\.",
        rules["cpu-request-percentile"],
    )
    assert rules["cpu-request-capped-at-max"].startswith(
        "CPU request capped at 300m, the highest usage in 1.0 days of samples"
    )
    assert rules["memory-request-peak"] == (
        "Memory request = highest 5-minute working-set peak of 400.0Mi in the 8-day history"
        f" {TIMES} 1.15 = 460Mi."
    )
    assert "460Mi" in rules["memory-limit-equal-request"]
    assert rules["cpu-limit-keep"] == "CPU limit kept at 2 (policy keep)."

    evidence = rec["evidence"]
    assert isinstance(evidence, dict)
    assert evidence["samples"] == 1440
    assert evidence["coverage_seconds"] == 1440 * 60.0
    assert (evidence["first_timestamp"], evidence["last_timestamp"]) == (T0 + 60, T0 + 86400)
    assert 0.3 < evidence["cpu_p50_cores"] == evidence["cpu_p95_cores"] <= 0.316
    assert evidence["cpu_max_cores"] == 0.3
    assert evidence["memory_peak_bytes"] == 400 * MIB
    assert (evidence["cpu_throttled_ratio_max"], evidence["oom_kills"]) == (None, None)

    # cost: (Δcpu * $0.031611 + ΔGiB * $0.004237) * 730 h, both deltas negative here
    expected = ((cpu_request - 1.0) * 0.031611 + (460 / 1024 - 1.0) * 0.004237) * 730
    assert rec["monthly_cost_delta_usd"] == pytest.approx(expected, abs=0.005)
    # one day of coverage in an 8-day history; 1,440 samples ≥ 2 * min_samples
    assert rec["confidence"] == pytest.approx(1 / 8, abs=0.001)
    # memory 1Gi → 460Mi is a 55% decrease
    assert rec["risk"] == "high"


def test_floors_apply_to_an_idle_container() -> None:
    # 0.001 cores * 1.15 is far below 10m; 10Mi * 1.15 far below 64Mi
    rec = rec_for(window_of(FEW, [0.001] * 10, [10 * MIB] * 10))
    new = recommended(rec)
    assert new["cpu_request_cores"] == 0.01
    assert new["memory_request_bytes"] == new["memory_limit_bytes"] == 64 * MIB
    rules = rules_of(rec)
    assert set(rules) == {
        "cpu-request-floor",
        "cpu-limit-none",
        "memory-request-floor",
        "memory-limit-equal-request",
    }
    assert rules["cpu-request-floor"].startswith(
        "CPU request = the profile floor of 10m, above p95"
    )
    assert rules["memory-request-floor"].startswith("Memory request = the profile floor of 64Mi")


@pytest.mark.parametrize(
    ("current_limit", "rule_id", "new_limit"),
    [
        (None, "cpu-limit-none", None),
        (0.2, "cpu-limit-raised", "request"),
        (4.0, "cpu-limit-keep", 4.0),
    ],
)
def test_cpu_limit_policy_keep(
    current_limit: float | None, rule_id: str, new_limit: float | str | None
) -> None:
    window = window_of(FEW, [0.5] * 10, [100 * MIB] * 10)
    rec = rec_for(window, current=CurrentResources(cpu_limit_cores=current_limit))
    new = recommended(rec)
    assert rule_id in rules_of(rec)
    if new_limit == "request":
        assert new["cpu_limit_cores"] == new["cpu_request_cores"]
        assert "raised from 200m to the new request" in rules_of(rec)[rule_id]
    else:
        assert new["cpu_limit_cores"] == new_limit


def test_a_known_jvm_heap_keeps_memory_above_heap_and_non_heap() -> None:
    # Changed by issue 3 (was: memory ≥ heap x 1.15). A spec heap of 512Mi and no JVM
    # samples: the heap is kept, and memory covers heap + the documented non-heap
    # defaults (metaspace 128Mi + code cache 48Mi + 100 threads x 1Mi + direct 10Mi =
    # 286Mi) + margin max(64Mi, 10% of 798Mi = 79.8Mi) = 877.8Mi → 878Mi.
    window = window_of(FEW, [0.5] * 10, [200 * MIB] * 10)
    rec = rec_for(window, current=CurrentResources(jvm_max_heap_bytes=512 * MIB))
    new = recommended(rec)
    assert new["memory_request_bytes"] == new["memory_limit_bytes"] == 878 * MIB
    assert new["jvm_max_heap_bytes"] == 512 * MIB
    rules = rules_of(rec)
    assert {"jvm-heap-kept", "jvm-limit-covers-heap", "jvm-heap-with-limit"} <= set(rules)
    assert "memory-jvm-heap-floor" not in rules
    assert "non-heap 286.0Mi" in rules["jvm-limit-covers-heap"]
    assert rec["jvm_options"] == {
        "java_tool_options": "-Xmx512m",
        "changed": ["-Xmx512m"],
        "previous": None,
    }
    Recommendation.model_validate(rec)


def test_cost_counts_a_missing_current_request_as_zero_and_takes_prices() -> None:
    window = window_of(FEW, [0.5] * 10, [1000 * MIB] * 10)
    rec = rec_for(window)
    new = recommended(rec)
    cpu, mem = new["cpu_request_cores"], new["memory_request_bytes"]
    assert isinstance(cpu, float)
    assert isinstance(mem, int)
    assert rec["monthly_cost_delta_usd"] == pytest.approx(
        (cpu * 0.031611 + mem / GIB * 0.004237) * 730, abs=0.005
    )
    doubled = recommend(
        window,
        FEW,
        workload=WORKLOAD,
        container="app",
        current=CurrentResources(),
        now=T0,
        prices=Prices(cpu_core_hour_usd=2 * 0.031611, memory_gib_hour_usd=2 * 0.004237),
    )
    assert doubled is not None
    single, double = rec["monthly_cost_delta_usd"], doubled["monthly_cost_delta_usd"]
    assert isinstance(single, float)
    assert isinstance(double, float)
    assert double == pytest.approx(2 * single, abs=0.011)  # each rounded to cents


@pytest.mark.parametrize(
    ("signals", "current", "risk"),
    [
        ({}, CurrentResources(cpu_request_cores=0.6, memory_request_bytes=260 * MIB), "low"),
        ({"oom_kills": 1}, CurrentResources(), "high"),
        ({}, CurrentResources(memory_limit_bytes=1024 * MIB), "high"),  # 1Gi → 230Mi
        ({}, CurrentResources(memory_request_bytes=400 * MIB), "medium"),  # → 230Mi: -42%
        ({}, CurrentResources(cpu_request_cores=2.0), "medium"),  # → ~0.6 cores: -70%
        ({"throttled": 0.25}, CurrentResources(), "medium"),
        ({"throttled": 0.05, "oom_kills": 0}, CurrentResources(), "low"),
    ],
)
def test_risk_levels(signals: dict[str, float], current: CurrentResources, risk: str) -> None:
    window = window_of(
        FEW,
        [0.5] * 10,
        [200 * MIB] * 10,
        throttled=signals.get("throttled"),
        oom_kills=int(signals["oom_kills"]) if "oom_kills" in signals else None,
    )
    assert rec_for(window, current=current)["risk"] == risk


def test_confidence_grows_with_coverage_and_samples() -> None:
    profile = BALANCED.with_overrides(min_samples=50, history_seconds=3600.0)
    # 50 samples of 10 s: sample share 50/100, coverage 500/3600
    young = rec_for(window_of(profile, [0.5] * 50, [MIB * 100] * 50), profile)
    # 400 samples of 10 s: sample share 1, coverage 4000/3600 capped at 1
    old = rec_for(window_of(profile, [0.5] * 400, [MIB * 100] * 400), profile)
    assert young["confidence"] == pytest.approx(0.5 * 500 / 3600, abs=0.001)
    assert old["confidence"] == 1.0


def test_hash_ignores_time_and_wording_but_not_the_proposal() -> None:
    # Same values, one more sample and another `now`: the texts change ("11 samples"),
    # the proposal does not, so the hash stays. A different memory peak changes it.
    a = rec_for(window_of(FEW, [0.5] * 10, [200 * MIB] * 10), now=T0 + 100)
    b = rec_for(window_of(FEW, [0.5] * 11, [200 * MIB] * 11), now=T0 + 99999)
    c = rec_for(window_of(FEW, [0.5] * 10, [300 * MIB] * 10), now=T0 + 100)
    assert rules_of(a) != rules_of(b)
    assert a["hash"] == b["hash"]
    assert a["hash"] != c["hash"]
    other_container = recommend(
        window_of(FEW, [0.5] * 10, [200 * MIB] * 10),
        FEW,
        workload=WORKLOAD,
        container="sidecar",
        current=CurrentResources(),
        now=T0,
    )
    assert other_container is not None
    assert other_container["hash"] != a["hash"]


# -- invariants --------------------------------------------------------------------------

NO_DECAY = BALANCED.with_overrides(
    min_samples=1, cpu_half_life_seconds=365 * 86400.0, decrease_min_history_seconds=0.0
)


def empirical_quantile(values: list[float], p: float) -> float:
    """Smallest sample whose share of samples at or below it reaches p."""
    ordered = sorted(values)
    for k, value in enumerate(ordered, start=1):
        if k / len(ordered) >= p:
            return value
    return ordered[-1]


@settings(max_examples=150)
@given(
    st.lists(
        st.tuples(
            st.floats(min_value=0.0, max_value=64.0),
            st.integers(min_value=0, max_value=256 * GIB),
        ),
        min_size=1,
        max_size=200,
    )
)
def test_recommendation_covers_p95_and_peak_with_headroom(
    samples: list[tuple[float, int]],
) -> None:
    # 10 s samples, at most 2,000 s in all: inside the history, and with a 365-day
    # half-life the decay changes sample weights by < 0.005%, far less than one sample's
    # share, so the histogram's weighted p95 is the samples' p95.
    cpu = [c for c, _ in samples]
    mem = [m for _, m in samples]
    window = window_of(NO_DECAY, cpu, mem)
    rec = rec_for(window, NO_DECAY)
    new = recommended(rec)
    cpu_request, memory_limit = new["cpu_request_cores"], new["memory_limit_bytes"]
    assert isinstance(cpu_request, float)
    assert isinstance(memory_limit, int)

    # CPU ≥ p95 x (1 + headroom), unless that is above the highest usage seen: headroom
    # never lifts a request above it (rule cpu-request-capped-at-max).
    factor = 1 + NO_DECAY.cpu_headroom
    p95 = empirical_quantile(cpu, 0.95)
    highest = round_up_cpu(max(*cpu, NO_DECAY.cpu_floor_cores))
    assert cpu_request >= min(p95 * factor, highest) * (1 - 1e-12)
    # ... and at most one histogram bucket (ratio 1.05 plus the 1m first bucket) above it,
    # measured at a slightly higher percentile so that decay cannot tip a tie.
    upper = empirical_quantile(cpu, 0.951)
    assert cpu_request <= round_up_cpu(max((upper * 1.05 + 0.001) * factor, 0.01)) + 1e-9
    assert cpu_request <= max(highest, round_up_cpu(NO_DECAY.cpu_floor_cores))

    peak = max(mem)
    assert memory_limit >= peak * 1.15
    assert memory_limit <= max(peak * 1.15, 64 * MIB) + MIB
    assert new["memory_request_bytes"] == memory_limit


def test_the_counterfactual_replays_the_history_against_both_values() -> None:
    # A day of one-minute samples: CPU 0.2 cores, and 1.0 cores for 2.5% of the minutes;
    # memory 300Mi with one 700Mi peak. In force: request 0.1 cores, limit 0.5, 512Mi.
    cpu = [1.0 if i % 40 == 0 else 0.2 for i in range(1440)]
    memory = [700 * MIB if i == 700 else 300 * MIB for i in range(1440)]
    window = window_of(FEW, cpu, memory, step=60.0)
    current = CurrentResources(
        cpu_request_cores=0.1,
        cpu_limit_cores=0.5,
        memory_request_bytes=512 * MIB,
        memory_limit_bytes=512 * MIB,
    )
    rec = rec_for(window, current=current, now=T0 + 90000.0)
    evidence = rec["evidence"]
    assert isinstance(evidence, dict)
    counterfactual = evidence["counterfactual"]
    assert isinstance(counterfactual, dict)
    # Today every minute is above the 0.1 request, and the bursts sit at the 0.5 limit.
    assert counterfactual["cpu_above_request_share_current"] == pytest.approx(1.0)
    assert counterfactual["cpu_at_limit_share_current"] == pytest.approx(0.025, abs=0.001)
    # The recommendation covers p95 (0.2 cores + headroom): only the bursts are above it.
    assert counterfactual["cpu_above_request_share_recommended"] == pytest.approx(0.025, abs=1e-3)
    # The 700Mi peak was above the 512Mi limit in force (an OOM kill), not above the new one.
    assert counterfactual["memory_peaks_above_limit_current"] == 1
    assert counterfactual["memory_peaks_above_limit_recommended"] == 0
    Recommendation.model_validate(rec)
