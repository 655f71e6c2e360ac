"""Prometheus metrics of daytwo's processes, each on a registry passed in.

Names follow ``daytwo_<thing>_<unit>`` with base units (cores, bytes, seconds, USD,
ratios 0..1) and ``_total`` for counters. Labels are bounded: stage, topic, partition,
signal, profile, resource, direction, state; the per-workload series (``workload``,
``container``) are capped by :class:`WorkloadSeries`, which keeps the most recently
updated workloads and counts the ones it drops.

Who exports what (the Grafana dashboards in deploy/grafana/dashboards chart these):

- worker (:class:`WorkerMetrics`): samples in (``daytwo_worker_samples_processed_total``,
  ``..._replayed_total``, ``..._jvm_samples_processed_total``), sets out
  (``daytwo_worker_recommendations_emitted_total``), proposals by profile, resource and
  direction, drift events by signal and profile, dead letters by stage, consumer lag
  from fetch high watermarks, state size, proposed savings, and per-workload usage,
  current and recommended resources, risk and confidence.
- agent: ``agents/collector.py`` (read/scrape errors), ``agents/publisher.py``
  (messages sent/failed/spooled/drained/dropped), ``agents/spool.py`` (spool depth).
- sink: :class:`SinkMetrics` (recommendation sets applied, commits, pull requests
  opened/updated/refused, dead letters).
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline.core.drift import SIGNALS
from pipeline.core.engine import ContainerEngine
from pipeline.core.window import ContainerWindow
from schemas.models import Recommendation

#: Stages at which input is rejected (``InvalidMessageError.stage``); pre-set to 0 so a
#: dashboard shows "no dead letters" rather than "no data".
DEADLETTER_STAGES: Final = ("size", "decode", "validate", "model", "route")
#: Request resources whose proposals are counted by direction.
PROPOSAL_RESOURCES: Final = (("cpu", "cpu_request_cores"), ("memory", "memory_request_bytes"))
DIRECTIONS: Final = ("up", "down", "unchanged")
#: ``daytwo_sink_pull_requests_total`` actions (see :class:`SinkMetrics`).
SINK_PR_ACTIONS: Final = ("opened", "updated", "refused")
#: Per-workload series kept at most for this many workloads (least recently updated
#: dropped first): ~15 series per container keeps a worker's scrape small.
DEFAULT_MAX_WORKLOADS: Final = 500
#: ``Resources`` field -> per-workload metric name (the unit is in the name).
RESOURCE_METRICS: Final = (
    ("cpu_request_cores", "daytwo_workload_cpu_request_cores", "CPU request"),
    ("cpu_limit_cores", "daytwo_workload_cpu_limit_cores", "CPU limit"),
    ("memory_request_bytes", "daytwo_workload_memory_request_bytes", "Memory request"),
    ("memory_limit_bytes", "daytwo_workload_memory_limit_bytes", "Memory limit"),
    ("jvm_max_heap_bytes", "daytwo_workload_jvm_max_heap_bytes", "JVM maximum heap"),
)


class LastSample(Protocol):
    """What the per-workload series show of a container's newest sample."""

    @property
    def cpu_usage_cores(self) -> float: ...
    @property
    def memory_working_set_bytes(self) -> int | None: ...
    @property
    def cpu_throttled_ratio(self) -> float | None: ...


@dataclass(frozen=True, slots=True)
class ContainerSnapshot:
    """What the per-workload series show for one container, taken at a checkpoint.

    Why a snapshot: the gauges are read on the HTTP thread while the worker mutates its
    windows on the event loop; a frozen copy per checkpoint is cheap and consistent.
    ``current`` and ``recommended`` are keyed by the ``Resources`` field names.
    """

    profile: str
    cpu_usage_cores: float | None = None
    memory_working_set_bytes: int | None = None
    cpu_throttled_ratio: float | None = None
    oom_kills: int | None = None
    jvm_gc_overhead_ratio: float | None = None
    current: Mapping[str, float | None] = field(default_factory=dict)
    recommended: Mapping[str, float | None] | None = None
    monthly_cost_delta_usd: float | None = None
    risk: str | None = None
    confidence: float | None = None


class WorkloadSeries(Collector):
    """Per-workload gauges with a bounded label set, plus the worker's totals over them.

    Why a custom collector: labelled gauges would need every child removed by hand when a
    workload is evicted or its partition moves to another worker; here the exported
    series are exactly the snapshots held, at most ``max_workloads`` workloads (least
    recently updated evicted first, counted in ``daytwo_worker_workloads_dropped_total``).
    The totals (state bytes, proposed savings) cover every container held, evicted or not.
    """

    def __init__(self, max_workloads: int = DEFAULT_MAX_WORKLOADS) -> None:
        if max_workloads < 1:
            msg = f"max_workloads must be at least 1, got {max_workloads}"
            raise ValueError(msg)
        self.max_workloads = max_workloads
        self._lock = threading.Lock()  # observe() on the event loop, collect() on HTTP
        self._workloads: OrderedDict[str, dict[str, ContainerSnapshot]] = OrderedDict()
        self._state_bytes: dict[tuple[str, str], int] = {}
        self._savings: dict[tuple[str, str], float] = {}
        self._dropped = 0

    def observe(
        self,
        workload: str,
        container: str,
        snapshot: ContainerSnapshot,
        state_bytes: int | None = None,
    ) -> None:
        """Record ``container``'s latest snapshot (and its saved state size)."""
        key = (workload, container)
        with self._lock:
            containers = self._workloads.get(workload)
            if containers is None:
                while len(self._workloads) >= self.max_workloads:
                    self._workloads.popitem(last=False)
                    self._dropped += 1
                containers = self._workloads[workload] = {}
            else:
                self._workloads.move_to_end(workload)
            containers[container] = snapshot
            if state_bytes is not None:
                self._state_bytes[key] = state_bytes
            if snapshot.monthly_cost_delta_usd is not None:
                self._savings[key] = -snapshot.monthly_cost_delta_usd
            else:
                self._savings.pop(key, None)

    def forget(self, workload: str, container: str) -> None:
        """Stop exporting ``container`` (its partition moved to another worker)."""
        with self._lock:
            containers = self._workloads.get(workload)
            if containers is not None:
                containers.pop(container, None)
                if not containers:
                    del self._workloads[workload]
            self._state_bytes.pop((workload, container), None)
            self._savings.pop((workload, container), None)

    def workloads(self) -> list[str]:
        """The workloads whose series are exported now, least recently updated first."""
        with self._lock:
            return list(self._workloads)

    def describe(self) -> Iterable[Metric]:
        """The families this collector yields (names only, for duplicate checks)."""
        return self._families()

    def collect(self) -> Iterable[Metric]:
        """Every series from the snapshots held (called per scrape)."""
        with self._lock:
            families = self._families()
            self._fill(families)
        return families

    def _families(self) -> list[Metric]:
        pair = ["workload", "container"]
        stated = [*pair, "state"]
        families: list[Metric] = [
            GaugeMetricFamily(
                "daytwo_workload_cpu_usage_cores",
                "CPU usage of the container's last sample (cores).",
                labels=pair,
            ),
            GaugeMetricFamily(
                "daytwo_workload_memory_working_set_bytes",
                "Memory working set of the container's last sample.",
                labels=pair,
            ),
            GaugeMetricFamily(
                "daytwo_workload_cpu_throttled_ratio",
                "CFS throttled periods / periods in the container's last sample.",
                labels=pair,
            ),
            CounterMetricFamily(
                "daytwo_workload_oom_kills",
                "OOM kills seen in the container's state since it began.",
                labels=pair,
            ),
            GaugeMetricFamily(
                "daytwo_workload_jvm_gc_overhead_ratio",
                "GC pause time / wall time in the container's last JVM sample.",
                labels=pair,
            ),
        ]
        families.extend(
            GaugeMetricFamily(
                name,
                f"{what} of the container: state=current (in force) or recommended "
                "(the last proposal).",
                labels=stated,
            )
            for _, name, what in RESOURCE_METRICS
        )
        families += [
            GaugeMetricFamily(
                "daytwo_workload_proposed_monthly_savings_usd",
                "Monthly cost saved if the workload's current proposals were applied "
                "(negative: they cost more).",
                labels=["workload"],
            ),
            GaugeMetricFamily(
                "daytwo_workload_recommendation_confidence_ratio",
                "Confidence of the container's last proposal (0..1).",
                labels=pair,
            ),
            GaugeMetricFamily(
                "daytwo_workload_recommendation_info",
                "1 per container with a proposal; its profile and risk as labels.",
                labels=[*pair, "profile", "risk"],
            ),
            GaugeMetricFamily(
                "daytwo_worker_proposed_monthly_savings_usd",
                "Sum of the proposed monthly savings of every container this worker holds.",
            ),
            GaugeMetricFamily(
                "daytwo_worker_state_bytes",
                "Size of the saved state of every container this worker holds.",
            ),
            GaugeMetricFamily(
                "daytwo_worker_exported_workloads",
                "Workloads whose per-workload series this worker exports now.",
            ),
            CounterMetricFamily(
                "daytwo_worker_workloads_dropped",
                "Workloads whose per-workload series were dropped to stay within the cap "
                "(least recently updated first).",
            ),
        ]
        return families

    def _fill(self, families: list[Metric]) -> None:
        by_name = {family.name: family for family in families}

        def put(name: str, labels: list[str], value: float | None) -> None:
            if value is not None:
                family = by_name[name]
                assert isinstance(family, GaugeMetricFamily | CounterMetricFamily)
                family.add_metric(labels, value)

        for workload, containers in self._workloads.items():
            savings = [
                -snap.monthly_cost_delta_usd
                for snap in containers.values()
                if snap.monthly_cost_delta_usd is not None
            ]
            if savings:
                put("daytwo_workload_proposed_monthly_savings_usd", [workload], sum(savings))
            for container, snap in sorted(containers.items()):
                pair = [workload, container]
                put("daytwo_workload_cpu_usage_cores", pair, snap.cpu_usage_cores)
                put("daytwo_workload_memory_working_set_bytes", pair, snap.memory_working_set_bytes)
                put("daytwo_workload_cpu_throttled_ratio", pair, snap.cpu_throttled_ratio)
                put("daytwo_workload_oom_kills", pair, snap.oom_kills)
                put("daytwo_workload_jvm_gc_overhead_ratio", pair, snap.jvm_gc_overhead_ratio)
                for resource, name, _ in RESOURCE_METRICS:
                    put(name, [*pair, "current"], snap.current.get(resource))
                    if snap.recommended is not None:
                        put(name, [*pair, "recommended"], snap.recommended.get(resource))
                put("daytwo_workload_recommendation_confidence_ratio", pair, snap.confidence)
                if snap.risk is not None:
                    put(
                        "daytwo_workload_recommendation_info",
                        [*pair, snap.profile, snap.risk],
                        1.0,
                    )
        put("daytwo_worker_proposed_monthly_savings_usd", [], sum(self._savings.values()))
        put("daytwo_worker_state_bytes", [], float(sum(self._state_bytes.values())))
        put("daytwo_worker_exported_workloads", [], float(len(self._workloads)))
        put("daytwo_worker_workloads_dropped", [], float(self._dropped))


def drift_event_counts(window: ContainerWindow) -> dict[str, int]:
    """Drift events recorded in ``window`` per signal (restored with its state).

    Why: the worker counts the increase of these between checkpoints; the counts of a
    window loaded from the changelog are its baseline, so a partition that moves to
    another worker does not count its past events again.
    """
    drift = window.drift
    if drift is None:
        return {}
    return {signal: drift.event_count(signal) for signal in SIGNALS}


def proposal_direction(current: float | None, recommended: float | None) -> str | None:
    """``up``, ``down`` or ``unchanged``; None when nothing is recommended.

    A recommendation where nothing was set counts as ``up`` (it adds a reservation).
    """
    if recommended is None:
        return None
    if current is None or recommended > current:
        return "up"
    return "down" if recommended < current else "unchanged"


@dataclass(frozen=True)
class WorkerMetrics:
    """Counters and gauges a pipeline worker updates; one instance per registry."""

    samples_processed: Counter
    samples_replayed: Counter
    jvm_samples_processed: Counter
    batches_processed: Counter
    recommendations_emitted: Counter
    deadletters: Counter
    checkpoints: Counter
    sizing_errors: Counter
    tracked_containers: Gauge
    consumer_lag: Gauge
    checkpoint_seconds: Histogram
    proposals: Counter
    drift_events: Counter
    workloads: WorkloadSeries
    _profiles_seen: set[str] = field(default_factory=set)

    @classmethod
    def create(
        cls, registry: CollectorRegistry, *, max_workloads: int = DEFAULT_MAX_WORKLOADS
    ) -> WorkerMetrics:
        """Register the worker metrics on ``registry`` (a private one in tests)."""
        deadletters = Counter(
            "daytwo_deadletters_total",
            "Input records sent to the dead-letter topic, by the stage that rejected them.",
            ["stage"],
            registry=registry,
        )
        for stage in DEADLETTER_STAGES:
            deadletters.labels(stage=stage)
        workloads = WorkloadSeries(max_workloads)
        registry.register(workloads)
        return cls(
            samples_processed=Counter(
                "daytwo_worker_samples_processed_total",
                "Container samples applied to per-container state.",
                registry=registry,
            ),
            samples_replayed=Counter(
                "daytwo_worker_samples_replayed_total",
                "Samples skipped because one at or after their timestamp was already "
                "applied (idempotent replay after a restart).",
                registry=registry,
            ),
            jvm_samples_processed=Counter(
                "daytwo_worker_jvm_samples_processed_total",
                "JVM samples applied to per-container state.",
                registry=registry,
            ),
            batches_processed=Counter(
                "daytwo_worker_batches_processed_total",
                "Valid container-sample batches consumed.",
                registry=registry,
            ),
            recommendations_emitted=Counter(
                "daytwo_worker_recommendations_emitted_total",
                "Recommendation sets sent to the recommendations topic.",
                registry=registry,
            ),
            deadletters=deadletters,
            checkpoints=Counter(
                "daytwo_worker_checkpoints_total",
                "Container states written to the changelog-backed table.",
                registry=registry,
            ),
            sizing_errors=Counter(
                "daytwo_worker_sizing_errors_total",
                "Containers whose sizing failed at a checkpoint (logged with a traceback).",
                registry=registry,
            ),
            tracked_containers=Gauge(
                "daytwo_worker_tracked_containers",
                "Containers whose state this worker holds in memory.",
                registry=registry,
            ),
            consumer_lag=Gauge(
                "daytwo_worker_consumer_lag_messages",
                "Messages between the fetch high watermark and the last processed offset.",
                ["topic", "partition"],
                registry=registry,
            ),
            checkpoint_seconds=Histogram(
                "daytwo_worker_checkpoint_seconds",
                "Time to checkpoint dirty state and emit recommendations.",
                registry=registry,
            ),
            proposals=Counter(
                "daytwo_worker_proposals_total",
                "Container proposals (recommendations past the profile's hysteresis), by "
                "profile, request resource and direction against the value in force.",
                ["profile", "resource", "direction"],
                registry=registry,
            ),
            drift_events=Counter(
                "daytwo_worker_drift_events_total",
                "Drift events (a signal entered a new regime), by signal and profile.",
                ["signal", "profile"],
                registry=registry,
            ),
            workloads=workloads,
        )

    def _see_profile(self, profile: str) -> None:
        """Pre-set a profile's bounded label sets to 0 (charts show 0, not no data)."""
        if profile in self._profiles_seen:
            return
        self._profiles_seen.add(profile)
        for signal in SIGNALS:
            self.drift_events.labels(signal=signal, profile=profile)
        for resource, _ in PROPOSAL_RESOURCES:
            for direction in DIRECTIONS:
                self.proposals.labels(profile=profile, resource=resource, direction=direction)

    def count_proposal(self, recommendation: Recommendation) -> None:
        """Count one proposal per request resource, by its direction."""
        self._see_profile(recommendation.profile)
        current = recommendation.current.model_dump()
        recommended = recommendation.recommended.model_dump()
        for resource, field_name in PROPOSAL_RESOURCES:
            direction = proposal_direction(current[field_name], recommended[field_name])
            if direction is not None:
                self.proposals.labels(
                    profile=recommendation.profile, resource=resource, direction=direction
                ).inc()

    def count_drift(self, profile: str, window: ContainerWindow, seen: dict[str, int]) -> None:
        """Count the drift events ``window`` recorded since ``seen``; update ``seen``."""
        self._see_profile(profile)
        for signal, count in drift_event_counts(window).items():
            new = count - seen.get(signal, 0)
            if new > 0:
                self.drift_events.labels(signal=signal, profile=profile).inc(new)
            seen[signal] = count

    def observe_container(
        self,
        engine: ContainerEngine,
        *,
        last_sample: LastSample | None,
        jvm_gc_overhead_ratio: float | None,
        recommendation: Recommendation | None,
        drift_seen: dict[str, int],
        state_bytes: int,
    ) -> None:
        """At a checkpoint: count new drift events and refresh the container's series.

        ``recommendation`` is the container's last proposal (None before one, and after
        a restart until the next one: then only the recommended values are shown, from
        the window); ``drift_seen`` the drift counts already counted (updated here).
        """
        profile = engine.profile.name
        self.count_drift(profile, engine.window, drift_seen)
        window = engine.window
        snapshot = ContainerSnapshot(
            profile=profile,
            cpu_usage_cores=None if last_sample is None else last_sample.cpu_usage_cores,
            memory_working_set_bytes=(
                None if last_sample is None else last_sample.memory_working_set_bytes
            ),
            cpu_throttled_ratio=None if last_sample is None else last_sample.cpu_throttled_ratio,
            oom_kills=window.oom_kills_total,
            jvm_gc_overhead_ratio=jvm_gc_overhead_ratio,
            current=engine.spec.to_dict(),
            # after a restart or a rebalance the window still knows what it last proposed
            recommended=(
                window.last_proposed
                if recommendation is None
                else recommendation.recommended.model_dump()
            ),
            monthly_cost_delta_usd=(
                None if recommendation is None else recommendation.monthly_cost_delta_usd
            ),
            risk=None if recommendation is None else recommendation.risk,
            confidence=None if recommendation is None else recommendation.confidence,
        )
        self.workloads.observe(engine.workload, engine.container, snapshot, state_bytes)


@dataclass
class SinkMetrics:
    """The PR sink's metrics, registered on the registry passed in (never the global).

    Why here: every process's metric names live in one module, next to what the
    dashboards chart. The names and help texts match the counters ``pipeline/prsink/sink.py``
    defines today, so the sink can import this class instead without a chart changing:

    - ``recommendations{outcome}``: sets handled by outcome (committed, unchanged,
      in-base, opened, updated, pushed, closed-kept, human-branch, deferred, refused);
    - ``commits``, ``deadletters{stage}``, ``human_branches``, ``refusals{reason}`` as
      in the sink;
    - ``pull_requests{action}``: forge outcomes, pre-set to 0 so charts show them from
      the start: ``opened`` (a new pull/merge request, or in dry-run a new local branch
      with PR.md), ``updated`` (an existing one got a commit or body for a changed set),
      ``refused`` (the forge or the PR quota refused; the set stays pending).

    Create once per registry with :meth:`for_registry` (a restarted sink in the same
    process keeps counting instead of failing on duplicate names).
    """

    registry: CollectorRegistry
    recommendations: Counter = field(init=False)
    commits: Counter = field(init=False)
    deadletters: Counter = field(init=False)
    human_branches: Counter = field(init=False)
    refusals: Counter = field(init=False)
    pull_requests: Counter = field(init=False)

    def __post_init__(self) -> None:
        self.recommendations = Counter(
            "daytwo_sink_recommendations_total",
            "Recommendation sets the sink handled, by outcome (committed, unchanged, in-base, "
            "opened, updated, pushed, closed-kept, human-branch, deferred, refused).",
            ["outcome"],
            registry=self.registry,
        )
        self.commits = Counter(
            "daytwo_sink_commits_total",
            "Commits the sink made on daytwo branches.",
            registry=self.registry,
        )
        self.deadletters = Counter(
            "daytwo_sink_deadletters_total",
            "Records the sink could not apply and sent to the dead-letter topic, by stage.",
            ["stage"],
            registry=self.registry,
        )
        self.human_branches = Counter(
            "daytwo_sink_human_branch_refusals_total",
            "Updates not pushed because someone else committed on the bot's branch.",
            registry=self.registry,
        )
        self.refusals = Counter(
            "daytwo_sink_refusals_total",
            "Recommendation sets refused because the GitOps repository cannot be patched "
            "safely, by reason (hostile-yaml, ambiguous-source, source-not-found, unpatchable).",
            ["reason"],
            registry=self.registry,
        )
        self.pull_requests = Counter(
            "daytwo_sink_pull_requests_total",
            "Pull/merge requests by action: opened, updated or refused (see SinkMetrics).",
            ["action"],
            registry=self.registry,
        )
        for action in SINK_PR_ACTIONS:
            self.pull_requests.labels(action=action)

    @classmethod
    def for_registry(cls, registry: CollectorRegistry) -> SinkMetrics:
        """The registry's sink metrics, created once."""
        metrics = _SINK_METRICS.get(registry)
        if metrics is None:
            metrics = _SINK_METRICS[registry] = cls(registry)
        return metrics

    def count(self, result: SinkOutcome) -> None:
        """Count one handled set by outcome, its commit, a refusal to overwrite a human's
        branch, and what it did to a pull request (opened, updated, refused)."""
        outcome = result.outcome or ("committed" if result.changed else "unchanged")
        self.recommendations.labels(outcome=outcome).inc()
        if result.commit is not None:
            self.commits.inc()
        if outcome == "human-branch":
            self.human_branches.inc()
        action = SINK_PR_ACTION_BY_OUTCOME.get(outcome)
        if action is not None:
            self.pull_requests.labels(action=action).inc()

    def count_refusal(self, reason: str) -> None:
        """Count a set refused because the repository cannot be patched safely."""
        self.recommendations.labels(outcome="refused").inc()
        self.refusals.labels(reason=reason).inc()


class SinkOutcome(Protocol):
    """What :meth:`SinkMetrics.count` reads of a sink result."""

    @property
    def outcome(self) -> str | None: ...
    @property
    def changed(self) -> bool: ...
    @property
    def commit(self) -> str | None: ...


SINK_PR_ACTION_BY_OUTCOME: Final[dict[str, str]] = {
    "opened": "opened",
    "updated": "updated",
    "deferred": "refused",
}
"""Sink outcomes that opened, updated or (quota, forge) refused a pull request; a dry run
commits a local branch and opens nothing."""


_SINK_METRICS: weakref.WeakKeyDictionary[CollectorRegistry, SinkMetrics] = (
    weakref.WeakKeyDictionary()
)


def serve_metrics(registry: CollectorRegistry, port: int, addr: str = "0.0.0.0") -> None:  # noqa: S104 - scraped from outside the pod
    """Expose ``registry`` on ``http://addr:port/metrics`` (a daemon thread)."""
    if port:
        start_http_server(port, addr=addr, registry=registry)
