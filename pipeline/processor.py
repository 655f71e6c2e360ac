"""The worker's logic between Kafka and the core, with no Faust in it.

A :class:`Processor` takes raw records from the container-samples topic, validates them
(invalid ones become dead-letter records), applies samples to each container's
:class:`~pipeline.core.window.ContainerWindow`, and on :meth:`Processor.checkpoint`
writes every changed window once to the state store and returns the recommendation
sets that changed. The Faust app (``pipeline/app.py``) only moves bytes in and out.

Checkpoint discipline: live state sits in an in-memory cache; the store (a
changelog-backed Faust table) is written once per dirty container per checkpoint. The
caller acknowledges input records only after a checkpoint, so committed offsets never
run ahead of the changelog; records redelivered after a crash are skipped by each
window's last-applied timestamp, which makes replay idempotent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from agents.inventory import facts_from_spec
from pipeline.core.cost import PriceBook
from pipeline.core.engine import ContainerEngine
from pipeline.core.profiles import Profile
from pipeline.core.sizing import CurrentResources, recommend
from pipeline.core.window import (
    ContainerSpecState,
    ContainerWindow,
    HpaTargetState,
    JvmSampleInput,
    SampleRun,
)
from pipeline.errors import CollectorError, ConfigError, InvalidMessageError
from pipeline.metrics import WorkerMetrics, drift_event_counts
from pipeline.topics import JVM_SAMPLES, WORKLOAD_SPECS
from schemas.hashing import recommendation_set_hash
from schemas.models import (
    ContainerSample,
    ContainerSampleBatch,
    DeadLetter,
    JvmSample,
    JvmSampleBatch,
    Recommendation,
    RecommendationSet,
    WorkloadSpec,
)
from schemas.validate import decode, make_deadletter, validate_dict
from schemas.wire import WireContainerBatch, WireContainerSample, decode_container_batch_fast

log = logging.getLogger(__name__)


class StateStore(Protocol):
    """Where container windows are checkpointed (a Faust table in production)."""

    def load(self, key: str) -> bytes | None:
        """The last checkpoint of ``key``, or None."""

    def save(self, key: str, value: bytes, partition: int) -> None:
        """Checkpoint ``key`` into the changelog partition of its input partition."""


@dataclass
class _Tracked:
    """One container's live state and where its input comes from."""

    engine: ContainerEngine
    partition: int
    workload: str
    container: str
    recommendation: Recommendation | None = None
    """What this container contributed to its workload's last published set."""
    # metrics (issue 7): inputs of the per-workload series and the drift counter
    last_run: tuple[SampleRun, int] | None = None
    """The run and index of the newest sample applied since the last checkpoint, which
    turns it into :attr:`last_sample` (once per flush, not once per batch)."""
    last_sample: _NewestSample | None = None
    last_gc_overhead_ratio: float | None = None
    drift_seen: dict[str, int] = field(default_factory=dict)

    @property
    def window(self) -> ContainerWindow:
        return self.engine.window


@dataclass
class Processor:
    """Applies container batches to per-container windows; checkpoints on demand."""

    profile: Profile
    store: StateStore
    metrics: WorkerMetrics
    clock: Callable[[], float]
    source_topic: str
    jvm_topic: str = JVM_SAMPLES
    spec_topic: str = WORKLOAD_SPECS
    prices: PriceBook = field(default_factory=PriceBook)
    """Unit prices, by node pool (the profiles file's ``prices``)."""
    profile_for: Callable[[str, str | None], Profile] | None = None
    """The profile of a workload id and the profile its spec names (None: none yet), by
    the catalog's namespace defaults; else ``profile`` for every container."""
    _tracked: dict[str, _Tracked] = field(default_factory=dict)
    _dirty: set[str] = field(default_factory=set)
    _workload_containers: dict[str, set[str]] = field(default_factory=dict)
    _pending_sets: dict[str, RecommendationSet] = field(default_factory=dict)

    def handle(
        self, key: bytes | None, value: bytes | None, *, partition: int, offset: int
    ) -> DeadLetter | None:
        """Apply one record; return a dead-letter record if it is invalid.

        Nothing is raised for bad input: a worker never crashes on a record. A
        tombstone (no value) is invalid on this topic and dead-lettered as empty.
        """
        value = value if value is not None else b""
        try:
            batch = decode_container_batch_fast(value)
            _check_key(key, batch.workload)
        except InvalidMessageError as exc:
            return self._dead_letter(
                exc,
                topic=self.source_topic,
                key=key,
                value=value,
                partition=partition,
                offset=offset,
            )
        self._apply_batch(batch, partition)
        return None

    def handle_jvm(
        self, key: bytes | None, value: bytes | None, *, partition: int, offset: int
    ) -> DeadLetter | None:
        """Apply one record of the JVM-samples topic; like :meth:`handle`.

        The JVM topic is keyed and partitioned like the container topic, so a
        container's JVM and cgroup samples meet in the same window on one worker.
        """
        value = value if value is not None else b""
        try:
            batch = decode(JvmSampleBatch, value)
            _check_key(key, batch.workload)
            inputs = [_jvm_input(sample) for sample in batch.samples]
        except InvalidMessageError as exc:
            return self._dead_letter(
                exc,
                topic=self.jvm_topic,
                key=key,
                value=value,
                partition=partition,
                offset=offset,
            )
        for sample, sample_input in zip(batch.samples, inputs, strict=True):
            tracked = self._get(batch.workload, sample.container, partition)
            if tracked.engine.apply_jvm(sample_input):
                self.metrics.jvm_samples_processed.inc()
                if sample_input.gc_overhead_ratio is not None:  # metrics (issue 7)
                    tracked.last_gc_overhead_ratio = sample_input.gc_overhead_ratio
                self._dirty.add(_container_key(batch.workload, sample.container))
            else:
                self.metrics.samples_replayed.inc()
        return None

    def handle_spec(
        self, key: bytes | None, value: bytes | None, *, partition: int, offset: int
    ) -> DeadLetter | None:
        """Apply one record of the workload-specs topic: what the workload declares.

        The spec's profile (the inventory resolved annotation ``daytwo.io/profile``, then
        the namespace default) picks each container's profile; its requests and limits
        are what is in force; its replicas multiply the cost. It is kept in each
        container's window, so it survives restarts. A tombstone (the workload is gone)
        is ignored: its windows simply stop receiving samples.
        """
        if value is None:
            return None
        try:
            spec = decode(WorkloadSpec, value)
            _check_key(key, spec.workload)
        except InvalidMessageError as exc:
            return self._dead_letter(
                exc,
                topic=self.spec_topic,
                key=key,
                value=value,
                partition=partition,
                offset=offset,
            )
        for container in spec.containers:
            tracked = self._get(spec.workload, container.name, partition)
            previous = tracked.window.spec
            if previous is not None and previous.timestamp >= spec.timestamp:
                continue  # replayed or out of date
            state = ContainerSpecState(
                hpa=_cpu_hpa(spec, container.name),
                node_pool=_node_pool(spec),
                profile=spec.profile,
                replicas=spec.replicas,
                resources={
                    "cpu_request_cores": container.cpu_request_cores,
                    "cpu_limit_cores": container.cpu_limit_cores,
                    "memory_request_bytes": _float(container.memory_request_bytes),
                    "memory_limit_bytes": _float(container.memory_limit_bytes),
                    "jvm_max_heap_bytes": None,
                },
                timestamp=spec.timestamp,
                node_fit=_node_fit(spec),
            )
            tracked.window.spec = state
            self._apply_spec(tracked)
            self._dirty.add(_container_key(spec.workload, container.name))
        return None

    def _apply_spec(self, tracked: _Tracked) -> None:
        """Make the engine follow its window's spec: profile, resources in force, replicas,
        and the nodes it must fit (all kept in the window, so a restart keeps them)."""
        state = tracked.window.spec
        if state is None:
            return
        engine = tracked.engine
        engine.node_fit = state.node_fit
        if self.profile_for is not None:
            try:
                engine.profile = self.profile_for(tracked.workload, state.profile)
            except ConfigError as exc:
                log.warning(
                    "%s: %s; keeping profile %s", tracked.workload, exc, engine.profile.name
                )
        resources = state.resources
        engine.spec = CurrentResources(
            cpu_request_cores=resources["cpu_request_cores"],
            cpu_limit_cores=resources["cpu_limit_cores"],
            memory_request_bytes=_int(resources["memory_request_bytes"]),
            memory_limit_bytes=_int(resources["memory_limit_bytes"]),
            jvm_max_heap_bytes=engine.spec.jvm_max_heap_bytes,
        )
        engine.replicas = max(1, state.replicas or 1)
        engine.node_pool = state.node_pool if state.node_pool in self.prices.node_pools else None
        engine.prices = self.prices.for_pool(state.node_pool)

    def _dead_letter(
        self,
        exc: InvalidMessageError,
        *,
        topic: str,
        key: bytes | None,
        value: bytes,
        partition: int,
        offset: int,
    ) -> DeadLetter:
        self.metrics.deadletters.labels(stage=exc.stage).inc()
        return make_deadletter(
            topic=topic,
            partition=partition,
            offset=offset,
            key=key,
            value=value,
            reason=exc.reason,
            stage=exc.stage,
            failed_at=self.clock(),
        )

    def _apply_batch(
        self, batch: ContainerSampleBatch | WireContainerBatch, partition: int
    ) -> None:
        """Apply a validated batch, one run per container (the contract's bounds are
        stricter than the window's, so no sample can fail and no batch is partial)."""
        self.metrics.batches_processed.inc()
        by_container: dict[str, list[ContainerSample | WireContainerSample]] = {}
        for sample in batch.samples:
            by_container.setdefault(sample.container, []).append(sample)
        applied = 0
        keys = set()
        for container, samples in by_container.items():
            tracked = self._get(batch.workload, container, partition)
            run = SampleRun.of(samples)
            fresh = tracked.engine.apply_run(run, limits_in_force=tracked.window.spec is None)
            key = _container_key(batch.workload, container)
            keys.add(key)
            if fresh:
                applied += len(fresh)
                tracked.last_run = (run, fresh[-1])  # metrics (issue 7)
                self._dirty.add(key)
        if applied:
            self.metrics.samples_processed.inc(applied)
        if applied < len(batch.samples):
            self.metrics.samples_replayed.inc(len(batch.samples) - applied)
        self._collect_proposals(keys)

    def _get(self, workload: str, container: str, partition: int) -> _Tracked:
        key = _container_key(workload, container)
        tracked = self._tracked.get(key)
        if tracked is None:
            saved = self.store.load(key)
            profile = self.profile_for(workload, None) if self.profile_for else self.profile
            window = (
                ContainerWindow.from_bytes(saved)
                if saved is not None
                else ContainerWindow.new(profile)
            )
            engine = ContainerEngine(
                profile,
                workload=workload,
                container=container,
                prices=self.prices.default,
                window=window,
                evaluate_on_ticks=True,
            )
            tracked = _Tracked(
                engine, partition, workload, container, drift_seen=drift_event_counts(window)
            )  # metrics (issue 7): drift counted from the restored state on
            self._apply_spec(tracked)
            self._tracked[key] = tracked
            self._workload_containers.setdefault(workload, set()).add(key)
            self.metrics.tracked_containers.set(len(self._tracked))
        tracked.partition = partition
        return tracked

    def checkpoint(self) -> list[RecommendationSet]:
        """Write each dirty window once; return the recommendation sets to publish.

        Containers are evaluated as samples arrive, on the profile's evaluation ticks of
        trace time (see :class:`~pipeline.core.engine.ContainerEngine`), so a replay
        decides like the live system did. A workload's set is built when a member's
        recommendation passes the profile's hysteresis (a proposal, recorded in its
        window so it survives restarts) and carries every member that was ever proposed;
        the latest set per workload is returned here. Call this, send the returned sets,
        then acknowledge the input records handled before it.
        """
        if not self._dirty:
            return []
        with self.metrics.checkpoint_seconds.time():
            sets = [self._pending_sets[w] for w in sorted(self._pending_sets)]
            self._pending_sets.clear()
            for key in sorted(self._dirty):
                tracked = self._tracked[key]
                if tracked.last_run is not None:
                    tracked.last_sample = _newest(*tracked.last_run)
                    tracked.last_run = None  # the batch's columns are not kept
                state = tracked.window.to_bytes()
                self.store.save(key, state, tracked.partition)
                self.metrics.checkpoints.inc()
                self.metrics.observe_container(  # metrics (issue 7)
                    tracked.engine,
                    last_sample=tracked.last_sample,
                    jvm_gc_overhead_ratio=tracked.last_gc_overhead_ratio,
                    recommendation=tracked.recommendation,
                    drift_seen=tracked.drift_seen,
                    state_bytes=len(state),
                )
            self._dirty.clear()
        self.metrics.recommendations_emitted.inc(len(sets))
        return sets

    def _collect_proposals(self, keys: set[str]) -> None:
        """Turn the proposals the engines of ``keys`` made while applying samples into
        their workloads' pending sets, built now: a set then depends on the records
        handled so far and on nothing else (not on when a checkpoint happens)."""
        proposed_now: set[str] = set()
        for key in sorted(keys):
            tracked = self._tracked[key]
            for failure in tracked.engine.failures:
                # One container's sizing failing (a bug, or a proposal the contract
                # rejects) must not stop the others or the checkpoint: its state is
                # still saved and it is evaluated again at its next tick.
                log.error(
                    "sizing %s failed; state kept, no recommendation",
                    key,
                    exc_info=(type(failure), failure, failure.__traceback__),
                )
                self.metrics.sizing_errors.inc()
            tracked.engine.failures.clear()
            for decision in tracked.engine.take_proposals():
                try:
                    tracked.recommendation = validate_dict(Recommendation, decision.recommendation)
                except InvalidMessageError:
                    log.exception("proposal for %s breaks the contract; not sent", key)
                    self.metrics.sizing_errors.inc()
                    continue
                self.metrics.count_proposal(tracked.recommendation)  # metrics (issue 7)
                log.info("%s: %s", key, decision.reason)
                proposed_now.add(key)
        for workload in sorted({self._tracked[key].workload for key in proposed_now}):
            self._pending_sets[workload] = self._set_for(workload, self.clock(), proposed_now)

    def _set_for(self, workload: str, now: float, proposed_now: set[str]) -> RecommendationSet:
        """The workload's set: members proposing now with their proposal, the others that
        were ever proposed with their recommendation as of their data (so a restarted
        worker, whose state is the same, builds the same set)."""
        recs = []
        for key in sorted(self._workload_containers.get(workload, ())):
            tracked = self._tracked[key]
            if tracked.window.last_proposal_timestamp is None:
                continue
            if key not in proposed_now:
                tracked.recommendation = self._current_recommendation(tracked)
            if tracked.recommendation is not None:
                recs.append(tracked.recommendation)
        return RecommendationSet(
            schema_version=1,
            kind="recommendation-set",
            workload=workload,
            generated_at=now,
            recommendations=tuple(recs),
            hash=recommendation_set_hash(r.hash for r in recs),
        )

    def current_sets(self) -> list[RecommendationSet]:
        """What daytwo recommends now for every tracked workload, past the hysteresis.

        Why: a proposal is published only when it is worth a PR; a test, a report or an
        operator asking "what would it say now?" wants the recommendation from all the data
        so far instead. Nothing is recorded: this changes no state.
        """
        sets = []
        for workload in sorted(self._workload_containers):
            recs = []
            for key in sorted(self._workload_containers[workload]):
                rec = self._current_recommendation(self._tracked[key])
                if rec is not None:
                    recs.append(rec)
            if recs:
                sets.append(
                    RecommendationSet(
                        schema_version=1,
                        kind="recommendation-set",
                        workload=workload,
                        generated_at=self.clock(),
                        recommendations=tuple(recs),
                        hash=recommendation_set_hash(r.hash for r in recs),
                    )
                )
        return sets

    def _current_recommendation(self, tracked: _Tracked) -> Recommendation | None:
        last = tracked.window.last_timestamp
        if last is None:
            return None
        engine = tracked.engine
        proposal = recommend(
            engine.window,
            engine.profile,
            workload=tracked.workload,
            container=tracked.container,
            current=engine.in_force(engine.spec),
            now=last,
            prices=engine.prices,
            replicas=engine.replicas,
            node_pool=engine.node_pool,
            node_fit=engine.node_fit,
        )
        return None if proposal is None else validate_dict(Recommendation, proposal)

    def forget_partitions(self, partitions: set[int]) -> None:
        """Drop cached state of revoked partitions (it is in the changelog already).

        Call only right after a checkpoint, so nothing dirty is dropped.
        """
        for key in [k for k, t in self._tracked.items() if t.partition in partitions]:
            tracked = self._tracked.pop(key)
            self._dirty.discard(key)
            self.metrics.workloads.forget(tracked.workload, tracked.container)  # issue 7
            members = self._workload_containers.get(tracked.workload)
            if members is not None:
                members.discard(key)
                if not members:
                    del self._workload_containers[tracked.workload]
        self.metrics.tracked_containers.set(len(self._tracked))

    @property
    def has_dirty(self) -> bool:
        """Whether a checkpoint would write anything."""
        return bool(self._dirty)


def _check_key(key: bytes | None, workload: str) -> None:
    """Records must be keyed by their workload id (that is what partitions state)."""
    if key is not None and key != workload.encode():
        msg = (
            f"record key {key[:200]!r} does not match the batch's workload "
            f"{workload!r}; producers must key by workload id"
        )
        raise InvalidMessageError(msg, stage="route")


def _jvm_input(sample: JvmSample) -> JvmSampleInput:
    flags = sample.flags
    return JvmSampleInput(
        timestamp=sample.timestamp,
        interval_seconds=sample.interval_seconds,
        collector=sample.collector or (flags.collector if flags else None),
        gc_overhead_ratio=sample.gc_overhead_ratio,
        gc_pause_max_seconds=sample.gc_pause_max_seconds,
        gc_count=sample.gc_count,
        full_gc_count=sample.full_gc_count,
        heap_used_after_gc_bytes=sample.heap_used_after_gc_bytes,
        heap_committed_bytes=sample.heap_committed_bytes,
        heap_max_bytes=sample.heap_max_bytes,
        live_set_bytes=sample.live_set_bytes,
        allocation_rate_bytes_per_second=sample.allocation_rate_bytes_per_second,
        metaspace_used_bytes=sample.metaspace_used_bytes,
        code_cache_bytes=sample.code_cache_bytes,
        thread_count=sample.thread_count,
        direct_memory_bytes=sample.direct_memory_bytes,
        max_heap_bytes=flags.max_heap_bytes if flags else None,
        max_ram_percentage=flags.max_ram_percentage if flags else None,
        heap_sizing=flags.heap_sizing if flags else None,
        active_processor_count=flags.active_processor_count if flags else None,
        thread_stack_size_bytes=flags.thread_stack_size_bytes if flags else None,
        max_direct_memory_bytes=flags.max_direct_memory_bytes if flags else None,
        jvm_options=sample.jvm_options,
    )


def _container_key(workload: str, container: str) -> str:
    return f"{workload}:{container}"


@dataclass(frozen=True, slots=True)
class _NewestSample:
    """The values of a run's sample the metrics show (already validated: no checks)."""

    cpu_usage_cores: float
    memory_working_set_bytes: int | None
    cpu_throttled_ratio: float | None


def _newest(run: SampleRun, index: int) -> _NewestSample:
    return _NewestSample(
        run.cpu_cores[index], run.memory_working_set_bytes[index], run.cpu_throttled_ratios[index]
    )


def _float(value: int | None) -> float | None:
    return None if value is None else float(value)


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


def _cpu_hpa(spec: WorkloadSpec, container: str) -> HpaTargetState | None:
    """The HPA scaling this container's workload on CPU utilisation, from the inventory's
    facts annotation (None without one, or when the facts cannot be read)."""
    try:
        facts = facts_from_spec(spec)
    except CollectorError as exc:
        log.warning("%s: unreadable inventory facts, no HPA: %s", spec.workload, exc)
        return None
    if facts is None or facts.hpa is None:
        return None
    for target in facts.hpa.targets:
        if (
            target.resource == "cpu"
            and target.utilization is not None
            and target.container in {None, container}
        ):
            return HpaTargetState(facts.hpa.name, target.utilization, facts.hpa.max_replicas)
    return None


def _node_pool(spec: WorkloadSpec) -> str | None:
    """The workload's node pool when the inventory saw exactly one (its prices apply)."""
    try:
        facts = facts_from_spec(spec)
    except CollectorError:
        return None
    if facts is None or len(facts.node_pools) != 1:
        return None
    return facts.node_pools[0]


def _node_fit(spec: WorkloadSpec) -> tuple[tuple[float, int], ...]:
    """Allocatable (cores, bytes) of the nodes the workload's pods could land on, from the
    inventory's facts; empty (no cap) without facts or when they cannot be read."""
    try:
        facts = facts_from_spec(spec)
    except CollectorError:
        return ()
    return () if facts is None else facts.node_fit
