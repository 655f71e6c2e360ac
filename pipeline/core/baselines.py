"""Baseline recommenders the backtest holds daytwo against: VPA's and KRR's algorithms.

Both are independent implementations written from the projects' documented algorithms
and default settings (no code copied). Each is a per-container object that the backtest
(:mod:`pipeline.core.backtest`) drives exactly like daytwo's engine: it *observes*
samples one at a time, with the resources in force at that moment, and every hour it is
asked to *decide* whether to propose new values.

Proposal rule (the same for both baselines, from docs/architecture.md): a baseline
proposes when its estimate for CPU request or memory moves more than
:data:`BASELINE_PROPOSAL_THRESHOLD` (10%) from the value in force, or when nothing is in
force yet for a signal it can estimate. A proposal replaces every value it estimates.

``vpa`` -- the Kubernetes Vertical Pod Autoscaler recommender's *target*
(``vertical-pod-autoscaler/docs/flags.md``, "What are the parameters to VPA recommender?",
and ``pkg/recommender/model/aggregations_config.go``):

- CPU: a decaying histogram of usage samples, half-life ``--cpu-histogram-decay-half-life``
  = 24h, exponential buckets from 0.001 core growing 5% each up to 1000 cores
  (``DefaultHistogramBucketSizeGrowth = 0.05``). Every sample weighs the same: the
  estimate depends on the usage alone, never on what is in force (the VPA recommender's
  code weighs by the request, which makes its answer depend on the request it set
  itself; the evaluation protocol of issue 13 holds every recommender to the usage it
  saw, so the baseline follows the documented algorithm, not that feedback). Target =
  p(``--target-cpu-percentile`` = 0.9) x (1 + ``--recommendation-margin-fraction`` = 0.15).
- Memory: one sample per aggregation interval, the peak working set within it
  (``--memory-aggregation-interval`` = 24h; an interval starts at the first sample after
  the previous one ended), weight 1 at the interval's end, in a decaying histogram with
  half-life ``--memory-histogram-decay-half-life`` = 24h, buckets from 1e7 bytes growing
  5% up to 1e12 bytes, over the last ``--memory-aggregation-interval-count`` = 8 intervals.
  Target = p(``--target-memory-percentile`` = 0.9) x 1.15.
- Floors: ``--pod-recommendation-min-cpu-millicores`` = 25 and
  ``--pod-recommendation-min-memory-mb`` = 250 (MiB), for a one-container pod.
- Limits: VPA keeps the limit/request ratio in force; with no ratio known, limit =
  request (the memory limit scored by the backtest).
- Left out: the lower/upper bounds and their confidence multipliers (they do not move the
  target) and OOM bump-ups (``--oom-bump-up-ratio`` = 1.2; traces replayed here carry no
  OOM events of the proposed sizes).

``krr`` -- Robusta KRR's ``simple`` strategy (``robusta_krr/strategies/simple.py``,
``SimpleStrategySettings``; history defaults in ``robusta_krr/core/abstract/strategies.py``;
minimums in ``robusta_krr/core/models/config.py``):

- CPU request = the ``cpu_percentile`` = 95th percentile of usage over the trailing
  ``history_duration`` = 336 h (14 days), computed like Prometheus ``quantile_over_time``
  (linear interpolation between ranks); CPU limit unset.
- Memory request = memory limit = the maximum working set over the same 14 days x
  (1 + ``memory_buffer_percentage`` / 100 = 15%).
- No recommendation for a resource before ``points_required`` = 100 samples and at least
  3 h of history (``history_range_enough``); floors ``cpu_min_value`` = 10 millicores and
  ``memory_min_value`` = 100 (MB, taken as MiB here).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Final

from pipeline.core.histogram import DecayingHistogram
from pipeline.core.sizing import CurrentResources
from pipeline.core.window import SampleInput

_MIB: Final = 1024**2
_HOUR: Final = 3600.0
_DAY: Final = 24 * _HOUR

BASELINE_PROPOSAL_THRESHOLD: Final = 0.10
"""A baseline proposes when an estimate moves more than this share from the value in force."""

# -- VPA recommender defaults (see the module docstring for where each is documented) --
VPA_TARGET_CPU_PERCENTILE: Final = 0.9
VPA_TARGET_MEMORY_PERCENTILE: Final = 0.9
VPA_RECOMMENDATION_MARGIN_FRACTION: Final = 0.15
VPA_CPU_HISTOGRAM_DECAY_HALF_LIFE_SECONDS: Final = _DAY
VPA_MEMORY_HISTOGRAM_DECAY_HALF_LIFE_SECONDS: Final = _DAY
VPA_MEMORY_AGGREGATION_INTERVAL_SECONDS: Final = _DAY
VPA_MEMORY_AGGREGATION_INTERVAL_COUNT: Final = 8
VPA_HISTOGRAM_BUCKET_GROWTH: Final = 0.05
VPA_CPU_FIRST_BUCKET_CORES: Final = 0.001
VPA_CPU_MAX_CORES: Final = 1000.0
VPA_MEMORY_FIRST_BUCKET_BYTES: Final = 1e7
VPA_MEMORY_MAX_BYTES: Final = 1e12
VPA_SAMPLE_WEIGHT: Final = 1.0
"""Every CPU sample's weight in the VPA baseline (equal weights: usage only)."""
VPA_POD_MIN_CPU_CORES: Final = 0.025
VPA_POD_MIN_MEMORY_BYTES: Final = 250 * _MIB

# -- KRR simple strategy defaults --
KRR_CPU_PERCENTILE: Final = 0.95
KRR_MEMORY_BUFFER_FRACTION: Final = 0.15
KRR_HISTORY_SECONDS: Final = 336 * _HOUR
KRR_POINTS_REQUIRED: Final = 100
KRR_MIN_HISTORY_SECONDS: Final = 3 * _HOUR
KRR_CPU_MIN_CORES: Final = 0.010
KRR_MEMORY_MIN_BYTES: Final = 100 * _MIB


@dataclass(frozen=True, slots=True)
class Estimate:
    """What a baseline would set now; None for a signal it cannot estimate (yet)."""

    cpu_request_cores: float | None
    memory_bytes: int | None


def moved_enough(
    estimate: Estimate,
    in_force: CurrentResources,
    threshold: float = BASELINE_PROPOSAL_THRESHOLD,
) -> bool:
    """True when a baseline should propose: an estimate moved > ``threshold`` from the
    value in force, or nothing is in force for a signal it can estimate.

    Why one rule for both baselines: the comparison with daytwo must not hinge on how
    eagerly each baseline re-proposes; DESIGN fixes it at 10% for both.

    >>> moved_enough(Estimate(1.05, None), CurrentResources(cpu_request_cores=1.0))
    False
    >>> moved_enough(Estimate(1.2, None), CurrentResources(cpu_request_cores=1.0))
    True
    """
    # Memory estimates are requests; compare with the request in force, else the limit.
    memory_in_force = (
        in_force.memory_request_bytes
        if in_force.memory_request_bytes is not None
        else in_force.memory_limit_bytes
    )
    pairs: list[tuple[float | None, float | None]] = [
        (estimate.cpu_request_cores, in_force.cpu_request_cores),
        (
            None if estimate.memory_bytes is None else float(estimate.memory_bytes),
            None if memory_in_force is None else float(memory_in_force),
        ),
    ]
    for wanted, current in pairs:
        if wanted is None:
            continue
        if current is None or current <= 0:
            return True
        if abs(wanted - current) > threshold * current:
            return True
    return False


def _scaled_limit(
    new_request: float, request_in_force: float | None, limit_in_force: float | None
) -> float | None:
    # VPA keeps the limit/request proportion in force; without one there is no limit.
    if request_in_force is None or limit_in_force is None or request_in_force <= 0:
        return None
    return new_request * limit_in_force / request_in_force


class VpaRecommender:
    """The VPA recommender's target for one container (see the module docstring).

    Why in the project: "better than VPA" is the claim daytwo has to back with numbers,
    so VPA's algorithm has to run on the same trace, seeing the same past.

    >>> from pipeline.core.window import SampleInput
    >>> vpa = VpaRecommender()
    >>> for i in range(12):
    ...     vpa.observe(SampleInput(300.0 * i, 300.0, 0.5, 100 * 2**20), CurrentResources())
    >>> target = vpa.estimate()
    >>> 0.5 * 1.15 <= target.cpu_request_cores < 0.5 * 1.05 * 1.15 + 0.002
    True
    """

    name: Final = "vpa"

    def __init__(
        self,
        *,
        target_cpu_percentile: float = VPA_TARGET_CPU_PERCENTILE,
        target_memory_percentile: float = VPA_TARGET_MEMORY_PERCENTILE,
        margin_fraction: float = VPA_RECOMMENDATION_MARGIN_FRACTION,
        cpu_half_life_seconds: float = VPA_CPU_HISTOGRAM_DECAY_HALF_LIFE_SECONDS,
        memory_half_life_seconds: float = VPA_MEMORY_HISTOGRAM_DECAY_HALF_LIFE_SECONDS,
        memory_interval_seconds: float = VPA_MEMORY_AGGREGATION_INTERVAL_SECONDS,
        memory_interval_count: int = VPA_MEMORY_AGGREGATION_INTERVAL_COUNT,
        min_cpu_cores: float = VPA_POD_MIN_CPU_CORES,
        min_memory_bytes: int = VPA_POD_MIN_MEMORY_BYTES,
    ) -> None:
        self.target_cpu_percentile = target_cpu_percentile
        self.target_memory_percentile = target_memory_percentile
        self.margin_fraction = margin_fraction
        self.memory_half_life_seconds = memory_half_life_seconds
        self.memory_interval_seconds = memory_interval_seconds
        self.memory_interval_count = memory_interval_count
        self.min_cpu_cores = min_cpu_cores
        self.min_memory_bytes = min_memory_bytes
        self.cpu = DecayingHistogram(
            VPA_CPU_FIRST_BUCKET_CORES,
            1 + VPA_HISTOGRAM_BUCKET_GROWTH,
            VPA_CPU_MAX_CORES,
            cpu_half_life_seconds,
        )
        # (interval end, peak working set) of the current and previous intervals.
        self.memory_peaks: deque[tuple[float, int]] = deque(maxlen=memory_interval_count)
        self._last_timestamp: float | None = None

    def observe(self, sample: SampleInput, in_force: CurrentResources) -> None:
        """Fold one sample in, with the same weight whatever is in force."""
        del in_force  # the documented algorithm weighs usage only
        if self._last_timestamp is not None and sample.timestamp <= self._last_timestamp:
            return
        self._last_timestamp = sample.timestamp
        self.cpu.add(sample.cpu_usage_cores, VPA_SAMPLE_WEIGHT, sample.timestamp)
        memory = sample.memory_working_set_bytes
        if memory is None:
            return
        if self.memory_peaks and sample.timestamp < self.memory_peaks[-1][0]:
            end, peak = self.memory_peaks[-1]
            self.memory_peaks[-1] = (end, max(peak, memory))
        else:
            self.memory_peaks.append((sample.timestamp + self.memory_interval_seconds, memory))

    def estimate(self) -> Estimate:
        """The current targets (after the margin and the floors); None before any sample."""
        cpu: float | None = None
        if not self.cpu.is_empty:
            cpu = max(
                self.cpu.percentile(self.target_cpu_percentile) * (1 + self.margin_fraction),
                self.min_cpu_cores,
            )
        memory: int | None = None
        if self.memory_peaks:
            histogram = DecayingHistogram(
                VPA_MEMORY_FIRST_BUCKET_BYTES,
                1 + VPA_HISTOGRAM_BUCKET_GROWTH,
                VPA_MEMORY_MAX_BYTES,
                self.memory_half_life_seconds,
            )
            for end, peak in self.memory_peaks:
                histogram.add(float(peak), 1.0, end)
            target = histogram.percentile(self.target_memory_percentile)
            memory = max(math.ceil(target * (1 + self.margin_fraction)), self.min_memory_bytes)
        return Estimate(cpu, memory)

    def decide(self, now: float, in_force: CurrentResources) -> CurrentResources | None:
        """New resources to put in force, or None when the target moved 10% or less."""
        del now  # VPA's target depends on the samples only, not on the wall clock
        estimate = self.estimate()
        if not moved_enough(estimate, in_force):
            return None
        return _proposal(estimate, in_force, scale_limits=True)


class KrrRecommender:
    """Robusta KRR's ``simple`` strategy for one container (see the module docstring).

    Why in the project: KRR is the other widely used right-sizer; it reads plain
    percentiles of the trailing 14 days with no decay, a useful contrast to VPA.

    >>> from pipeline.core.window import SampleInput
    >>> krr = KrrRecommender()
    >>> for i in range(200):
    ...     krr.observe(SampleInput(60.0 * i, 60.0, i / 100, 2**30), CurrentResources())
    >>> round(krr.estimate().cpu_request_cores, 4)
    1.8905
    """

    name: Final = "krr"

    def __init__(
        self,
        *,
        cpu_percentile: float = KRR_CPU_PERCENTILE,
        memory_buffer_fraction: float = KRR_MEMORY_BUFFER_FRACTION,
        history_seconds: float = KRR_HISTORY_SECONDS,
        points_required: int = KRR_POINTS_REQUIRED,
        min_history_seconds: float = KRR_MIN_HISTORY_SECONDS,
        min_cpu_cores: float = KRR_CPU_MIN_CORES,
        min_memory_bytes: int = KRR_MEMORY_MIN_BYTES,
    ) -> None:
        self.cpu_percentile = cpu_percentile
        self.memory_buffer_fraction = memory_buffer_fraction
        self.history_seconds = history_seconds
        self.points_required = points_required
        self.min_history_seconds = min_history_seconds
        self.min_cpu_cores = min_cpu_cores
        self.min_memory_bytes = min_memory_bytes
        # KRR queries raw history from Prometheus, so this baseline keeps raw samples of
        # the trailing window (it is a benchmark reference, not streaming state).
        self.cpu_samples: deque[tuple[float, float]] = deque()
        self.memory_samples: deque[tuple[float, int]] = deque()
        self._last_timestamp: float | None = None

    def observe(self, sample: SampleInput, in_force: CurrentResources) -> None:
        """Remember one sample (KRR's estimate does not depend on what is in force)."""
        del in_force
        if self._last_timestamp is not None and sample.timestamp <= self._last_timestamp:
            return
        self._last_timestamp = sample.timestamp
        self.cpu_samples.append((sample.timestamp, sample.cpu_usage_cores))
        if sample.memory_working_set_bytes is not None:
            self.memory_samples.append((sample.timestamp, sample.memory_working_set_bytes))

    def estimate(self, now: float | None = None) -> Estimate:
        """KRR's answer over the trailing history ending at ``now`` (default: last sample)."""
        end = self._last_timestamp if now is None else now
        if end is None:
            return Estimate(None, None)
        oldest = end - self.history_seconds
        for samples in (self.cpu_samples, self.memory_samples):
            while samples and samples[0][0] < oldest:
                samples.popleft()
        cpu: float | None = None
        if self._enough(self.cpu_samples):
            values = sorted(value for _, value in self.cpu_samples)
            cpu = max(quantile_linear(values, self.cpu_percentile), self.min_cpu_cores)
        memory: int | None = None
        if self._enough(self.memory_samples):
            peak = max(value for _, value in self.memory_samples)
            memory = max(math.ceil(peak * (1 + self.memory_buffer_fraction)), self.min_memory_bytes)
        return Estimate(cpu, memory)

    def decide(self, now: float, in_force: CurrentResources) -> CurrentResources | None:
        """New resources to put in force, or None when KRR's answer moved 10% or less."""
        estimate = self.estimate(now)
        if not moved_enough(estimate, in_force):
            return None
        return _proposal(estimate, in_force, scale_limits=False)

    def _enough(self, samples: deque[tuple[float, float]] | deque[tuple[float, int]]) -> bool:
        return (
            len(samples) >= self.points_required
            and samples[-1][0] - samples[0][0] >= self.min_history_seconds
        )


def quantile_linear(sorted_values: list[float], q: float) -> float:
    """The ``q``-quantile of sorted values, interpolating linearly between ranks.

    Why this definition: it is Prometheus's ``quantile_over_time`` (rank ``q * (n - 1)``),
    which is what KRR's CPU query asks Prometheus for.

    >>> quantile_linear([1.0, 2.0, 3.0, 4.0, 5.0], 0.9)
    4.6
    """
    if not sorted_values:
        raise ValueError("quantile of an empty list")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile q must be within [0, 1], got {q!r}")
    rank = q * (len(sorted_values) - 1)
    lower = math.floor(rank)
    upper = min(lower + 1, len(sorted_values) - 1)
    fraction = rank - lower
    return sorted_values[lower] * (1 - fraction) + sorted_values[upper] * fraction


def _proposal(
    estimate: Estimate, in_force: CurrentResources, *, scale_limits: bool
) -> CurrentResources:
    cpu_request = (
        in_force.cpu_request_cores
        if estimate.cpu_request_cores is None
        else estimate.cpu_request_cores
    )
    cpu_limit = in_force.cpu_limit_cores
    if estimate.cpu_request_cores is not None:
        cpu_limit = (
            _scaled_limit(
                estimate.cpu_request_cores, in_force.cpu_request_cores, in_force.cpu_limit_cores
            )
            if scale_limits
            else None
        )
    memory_request = in_force.memory_request_bytes
    memory_limit = in_force.memory_limit_bytes
    if estimate.memory_bytes is not None:
        memory_request = estimate.memory_bytes
        scaled = (
            _scaled_limit(
                estimate.memory_bytes, in_force.memory_request_bytes, in_force.memory_limit_bytes
            )
            if scale_limits
            else None
        )
        memory_limit = estimate.memory_bytes if scaled is None else math.ceil(scaled)
    return CurrentResources(
        cpu_request_cores=cpu_request,
        cpu_limit_cores=cpu_limit,
        memory_request_bytes=memory_request,
        memory_limit_bytes=memory_limit,
        jvm_max_heap_bytes=in_force.jvm_max_heap_bytes,
    )
