"""HPA-aware sizing: the request that keeps an HPA's target utilisation, never fighting it.

Timeline drawn in pipeline/core/hpa.py. The invariants checked here with hypothesis:

* at the recommended request the observed per-pod usage reads exactly as the target;
* the HPA never needs more than ``maxReplicas`` to hold the target at the observed peak;
* the request is the smallest one satisfying both (no extra headroom sneaks in).
"""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.core.hpa import (
    HPA_RULE_ID,
    hpa_aware_request,
    hpa_request,
    hpa_request_floor,
    hpa_rule,
)

usage = st.floats(min_value=0.001, max_value=1000, allow_nan=False)
targets = st.floats(min_value=0.05, max_value=2.0, allow_nan=False)
replicas = st.integers(min_value=1, max_value=500)


@given(usage, targets)
def test_at_the_request_usage_reads_as_the_target(per_pod: float, target: float) -> None:
    request = hpa_request(per_pod, target)
    assert per_pod / request == pytest.approx(target)


def test_a_worked_example() -> None:
    # 0.35 cores per pod, HPA at 70 %: 0.5 cores keeps the HPA where it is
    assert hpa_request(0.35, 0.7) == pytest.approx(0.5)
    # 10 pods max, 3.5 cores peak in total, 70 %: below 0.5 cores the HPA would need > 10
    assert hpa_request_floor(3.5, 0.7, 10) == pytest.approx(0.5)


@given(usage, targets, st.floats(min_value=0, max_value=10_000, allow_nan=False), replicas)
def test_the_hpa_never_needs_more_than_max_replicas(
    per_pod: float, target: float, peak_total: float, max_replicas: int
) -> None:
    sizing = hpa_aware_request(
        per_pod, target, peak_total_usage=peak_total, max_replicas=max_replicas
    )
    needed = peak_total / (sizing.request * target)  # the HPA's desired replicas at peak
    assert needed <= max_replicas * (1 + 1e-9)
    assert sizing.request >= hpa_request(per_pod, target)
    assert sizing.request == max(
        hpa_request(per_pod, target), hpa_request_floor(peak_total, target, max_replicas)
    )
    expected_binding = (
        "max-replicas"
        if hpa_request_floor(peak_total, target, max_replicas) > hpa_request(per_pod, target)
        else "target"
    )
    assert sizing.binding == expected_binding


@given(usage, targets)
def test_without_bounds_only_the_target_rule_applies(per_pod: float, target: float) -> None:
    sizing = hpa_aware_request(per_pod, target)
    assert (sizing.request, sizing.binding, sizing.floor) == (
        hpa_request(per_pod, target),
        "target",
        None,
    )


@pytest.mark.parametrize("target", [0.0, -0.7, math.nan, math.inf, 70.0])
def test_targets_outside_a_fraction_of_the_request_are_refused(target: float) -> None:
    with pytest.raises(ValueError, match="target_utilization"):
        hpa_request(1.0, target)


@pytest.mark.parametrize(("per_pod", "name"), [(-1.0, "usage_per_pod"), (math.nan, "usage")])
def test_negative_or_missing_usage_is_refused(per_pod: float, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        hpa_request(per_pod, 0.7)


def test_max_replicas_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_replicas"):
        hpa_request_floor(1.0, 0.7, 0)


def test_the_rule_explains_the_target_in_one_sentence() -> None:
    sizing = hpa_aware_request(0.35, 0.7)
    rule = hpa_rule("cpu", 0.35, sizing, hpa_name="checkout")
    assert rule["id"] == HPA_RULE_ID == "hpa-aware"
    text = rule["text"]
    assert text.endswith(".")
    assert re.search(r"[.!?]\s+[A-Z]", text) is None  # one sentence
    assert "HPA checkout" in text
    assert "70%" in text
    assert "0.5 cores" in text
    assert "0.35 cores" in text


def test_the_rule_says_why_the_request_was_not_lowered_further() -> None:
    per_pod = 256 * 1024**2 * 0.1  # memory: pods idle at 10 % of 256 MiB
    sizing = hpa_aware_request(per_pod, 0.8, peak_total_usage=8 * 1024**3, max_replicas=10)
    assert sizing.binding == "max-replicas"
    rule = hpa_rule("memory", per_pod, sizing)
    assert "maxReplicas" in rule["text"]
    assert "The HPA scales on memory at 80%" in rule["text"]
    assert f"{sizing.request / 1024**2:.0f} MiB" in rule["text"]
