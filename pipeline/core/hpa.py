"""HPA-aware request sizing: size per-pod requests so a HorizontalPodAutoscaler keeps working.

Why: an HPA on CPU or memory scales on *utilisation* = usage / request, averaged over the
pods (``Resource`` metrics use the sum of the pod's container requests; ``ContainerResource``
one container's). Right-sizing the request underneath it changes what the HPA sees: halve
the request and the same load reads as twice the utilisation, so the HPA doubles the
replicas. Sizing each pod from its own usage peak plus headroom therefore fights the HPA
(the classic VPA-plus-HPA-on-the-same-metric conflict). The HPA-aware rule instead asks:
which request makes the HPA's target hold at the usage we observe?

    request = usage_per_pod / U            (U = target utilisation as a fraction, 0.7 = 70%)

Timeline, one pod, target 70%, request 1 core:

    usage/pod  0.7 ──────────── HPA in control: 0.7 / 0.7 = 1.0 core, no change proposed
    usage/pod  0.2 ──────────── at minReplicas, HPA cannot scale in: 0.2 / 0.7 = 0.29 core
    usage/pod  1.1 ──────────── at maxReplicas, HPA cannot scale out: 1.1 / 0.7 = 1.57 cores

While the HPA controls the replica count, per-pod usage sits near U x request and the rule
is a fixed point: it proposes nothing, because replicas x request is already what the load
needs (the knob is the HPA target, not the request). It moves the request only where the
HPA is pinned at a bound. It never fights the HPA: the request never goes below
``peak_total_usage / (max_replicas x U)``, the request at which the HPA would need all of
its ``maxReplicas`` to hold the target at the observed peak load, because below that the
HPA saturates at max and every pod runs hot.

Pure: numbers in, numbers and a rule dict out; no Kubernetes objects, no I/O.

>>> hpa_request(0.35, 0.7)
0.5
>>> hpa_aware_request(0.07, 0.7, peak_total_usage=3.5, max_replicas=10).binding
'max-replicas'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "HPA_RULE_ID",
    "HpaSizing",
    "hpa_aware_request",
    "hpa_request",
    "hpa_request_floor",
    "hpa_rule",
]

HPA_RULE_ID: Final = "hpa-aware"
#: Utilisation targets above this (1000%) are treated as a unit mistake, not an intent.
MAX_TARGET_UTILIZATION: Final = 10.0

HpaResource = Literal["cpu", "memory"]
Binding = Literal["target", "max-replicas"]


def _check_target(target_utilization: float) -> None:
    if not math.isfinite(target_utilization) or not 0 < target_utilization <= (
        MAX_TARGET_UTILIZATION
    ):
        raise ValueError(
            "target_utilization must be a fraction of the request in (0, "
            f"{MAX_TARGET_UTILIZATION:g}] (70% is 0.7), got {target_utilization!r}"
        )


def _check_usage(name: str, value: float) -> None:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def hpa_request(usage_per_pod: float, target_utilization: float) -> float:
    """The per-pod request at which ``usage_per_pod`` reads as the HPA's target utilisation.

    ``target_utilization`` is a fraction of the request (``averageUtilization: 70`` → 0.7;
    above 1 is allowed, HPAs may target 150%). ``usage_per_pod`` is in the resource's unit
    (cores or bytes) and should be the usage the profile sizes for (e.g. its percentile).
    """
    _check_usage("usage_per_pod", usage_per_pod)
    _check_target(target_utilization)
    return usage_per_pod / target_utilization


def hpa_request_floor(
    peak_total_usage: float, target_utilization: float, max_replicas: int
) -> float:
    """The smallest per-pod request the HPA can still honour at ``peak_total_usage``.

    Below it the HPA would need more than ``max_replicas`` pods to bring utilisation down
    to the target at the observed peak (summed over all pods), so it would sit at
    ``maxReplicas`` with every pod above target: the HPA would be fought, not helped.
    """
    _check_usage("peak_total_usage", peak_total_usage)
    _check_target(target_utilization)
    if max_replicas < 1:
        raise ValueError(f"max_replicas must be >= 1, got {max_replicas!r}")
    return peak_total_usage / (max_replicas * target_utilization)


@dataclass(frozen=True, slots=True)
class HpaSizing:
    """An HPA-aware request and which constraint set it.

    ``binding`` is ``"target"`` when ``usage_per_pod / U`` decided, ``"max-replicas"``
    when the floor that keeps the HPA below ``maxReplicas`` at peak load was higher.
    """

    request: float
    binding: Binding
    target_utilization: float
    floor: float | None


def hpa_aware_request(
    usage_per_pod: float,
    target_utilization: float,
    *,
    peak_total_usage: float | None = None,
    max_replicas: int | None = None,
) -> HpaSizing:
    """:func:`hpa_request`, raised to :func:`hpa_request_floor` when both bounds are known.

    Pass ``peak_total_usage`` (the peak of usage summed over all replicas) and
    ``max_replicas`` (the HPA's ``maxReplicas``) to enforce "never fight the HPA"; without
    them only the target rule applies.
    """
    request = hpa_request(usage_per_pod, target_utilization)
    floor: float | None = None
    if peak_total_usage is not None and max_replicas is not None:
        floor = hpa_request_floor(peak_total_usage, target_utilization, max_replicas)
    if floor is not None and floor > request:
        return HpaSizing(floor, "max-replicas", target_utilization, floor)
    return HpaSizing(request, "target", target_utilization, floor)


def _amount(resource: HpaResource, value: float) -> str:
    if resource == "cpu":
        return f"{value:.3g} cores"
    return f"{value / 1024**2:.0f} MiB"


def hpa_rule(
    resource: HpaResource,
    usage_per_pod: float,
    sizing: HpaSizing,
    *,
    hpa_name: str | None = None,
) -> dict[str, str]:
    """The ``{"id": "hpa-aware", "text": ...}`` rule explaining an HPA-aware request.

    One sentence a reviewer can check: which HPA, which target, which usage, which result,
    and, when the max-replicas floor decided, why the request was not lowered further.
    """
    who = f"HPA {hpa_name}" if hpa_name else "The HPA"
    percent = f"{sizing.target_utilization * 100:.0f}%"
    request = _amount(resource, sizing.request)
    if sizing.binding == "max-replicas":
        text = (
            f"{who} scales on {resource} at {percent} of the request, so the request is "
            f"kept at {request}: any lower and the observed peak load would need more than "
            "its maxReplicas to hold that target (daytwo does not fight the HPA)."
        )
    else:
        text = (
            f"{who} scales on {resource} at {percent} of the request, so the request is "
            f"{_amount(resource, usage_per_pod)} per pod / {percent} = {request}, which keeps "
            "the HPA's target utilisation where it is instead of fighting it."
        )
    return {"id": HPA_RULE_ID, "text": text}
