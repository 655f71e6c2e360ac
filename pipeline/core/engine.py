"""One container's recommender: its window, its profile, and the hysteresis between them.

:class:`ContainerEngine` is what the stream worker, ``daytwo analyze`` and ``daytwo
backtest`` share: samples go in (:meth:`ContainerEngine.apply`), and
:meth:`ContainerEngine.evaluate` returns the current recommendation together with the
decision whether it is worth proposing now (:func:`decide`). Proposals are what reach
the recommendations topic and, through the sink, a pull request; a recommendation that
is not proposed is still returned, for ``analyze`` and for the evidence.

Hysteresis, from the profile (the values of ``balanced`` in brackets):

- **Minimum change.** A value is worth proposing only if it moves by at least
  ``min_change_relative`` [10%] of the value in force *and* by at least
  ``min_change_cpu_cores`` [20m] or ``min_change_memory_bytes`` [32Mi]. Setting a value
  that was unset, or removing a limit, always counts.
- **Minimum saving.** A proposal that only lowers values must save at least
  ``min_monthly_saving_usd`` [$0.50] a month per replica.
- **Cool-down.** No proposal within ``proposal_cooldown_seconds`` [7 days] of the last
  one, unless it raises a value that is at risk: memory after an OOM kill since the
  last proposal or with the working-set peak at :data:`MEMORY_AT_RISK_SHARE` of the
  limit in force or above; CPU while throttled or under GC pressure above the
  profile's ceilings, or while the profile's CPU percentile (before headroom) is above
  the request in force.
- **Minimum history for decreases** is applied inside the sizing itself (rule
  ``no-decrease-before-min-history``), so a recommendation never proposes a decrease
  the profile would not allow yet. The same minimum history gates a container's
  *first* proposal (unless something is at risk): a handful of samples is not enough
  to set requests from.

Time is trace time: ``now`` is the time of the data (the last sample's timestamp for a
live stream), so a replay at any speed makes the same decisions as the live system.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from pipeline.core.profiles import Profile
from pipeline.core.quantity import format_cpu, format_memory
from pipeline.core.sizing import DEFAULT_PRICES, CurrentResources, Prices, recommend
from pipeline.core.window import (
    RESOURCE_FIELDS,
    ContainerWindow,
    JvmSampleInput,
    SampleInput,
    SampleRun,
    fresh_indices,
)

MEMORY_AT_RISK_SHARE: Final = 0.9
"""A working-set peak at this share of the memory limit in force or above puts memory at
risk: an increase then bypasses the cool-down."""

CPU_FIELDS: Final = ("cpu_request_cores", "cpu_limit_cores")
MEMORY_FIELDS: Final = ("memory_request_bytes", "memory_limit_bytes", "jvm_max_heap_bytes")


@dataclass(frozen=True, slots=True)
class Decision:
    """A container's recommendation and whether it is proposed now, with the reason.

    ``recommendation`` is the contract's object (None without enough data); when
    ``propose`` is True the caller publishes it and treats its ``recommended`` values
    as in force from then on. ``reason`` is one sentence for logs and reports.
    """

    recommendation: dict[str, object] | None
    propose: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Change:
    """How one resource value moves between what is in force and the recommendation."""

    field: str
    before: float | None
    after: float | None

    @property
    def is_increase(self) -> bool:
        """More of the resource: a higher value, a value set, or a limit removed."""
        if self.before is None:
            return self.after is not None
        if self.after is None:
            return self.field.endswith("limit_cores") or self.field.endswith("limit_bytes")
        return self.after > self.before

    def describe(self) -> str:
        """``cpu_request_cores 500m → 250m`` style text."""
        fmt = format_cpu if self.field.startswith("cpu") else _format_bytes
        before = "unset" if self.before is None else fmt(self.before)
        after = "unset" if self.after is None else fmt(self.after)
        return f"{self.field} {before} → {after}"


def material_changes(
    current: CurrentResources, recommended: Mapping[str, object], profile: Profile
) -> list[Change]:
    """The values that move enough to be worth a proposal under ``profile``."""
    in_force = current.to_dict()
    changes = []
    for field in (*CPU_FIELDS, *MEMORY_FIELDS):
        before = in_force[field]
        after_value = recommended.get(field)
        after = float(after_value) if isinstance(after_value, int | float) else None
        if before is None and after is None:
            continue
        if before is None or after is None:
            if field == "jvm_max_heap_bytes" and after is None:
                continue  # no heap proposed: nothing to change
            changes.append(Change(field, before, after))
            continue
        delta = abs(after - before)
        minimum = (
            profile.min_change_cpu_cores
            if field.startswith("cpu")
            else float(profile.min_change_memory_bytes)
        )
        if delta > 0 and delta >= profile.min_change_relative * before and delta >= minimum:
            changes.append(Change(field, before, after))
    return changes


def risks(window: ContainerWindow, profile: Profile, current: CurrentResources) -> list[str]:
    """What is at risk now, as sentences starting ``memory:`` or ``cpu:``, for the
    cool-down bypass. Memory is never "at risk" while a leak is suspected: raising the
    limit for a leak only postpones the kill, so it waits for the cool-down."""
    found = []
    leaking = window.leak() is not None
    if (
        not leaking
        and window.last_oom_timestamp is not None
        and (
            window.last_proposal_timestamp is None
            or window.last_oom_timestamp > window.last_proposal_timestamp
        )
    ):
        found.append("memory: an OOM kill since the last proposal")
    limit = (
        current.memory_limit_bytes
        if current.memory_limit_bytes is not None
        else window.memory_limit_bytes
    )
    peak = window.memory_peak_bytes()
    if (
        not leaking
        and limit is not None
        and peak is not None
        and peak >= MEMORY_AT_RISK_SHARE * limit
    ):
        found.append(
            f"memory: the working-set peak {format_memory(peak)} is at "
            f"{peak / limit:.0%} of the {format_memory(limit)} limit"
        )
    throttled = window.cpu_throttled_ratio_percentile(0.95)
    if throttled is not None and throttled > profile.cpu_throttling_ceiling:
        found.append(f"cpu: throttled p95 {throttled:.1%} above the ceiling")
    if window.jvm is not None:
        gc = window.jvm.gc_overhead_percentile(0.95)
        if gc is not None and gc > profile.gc_overhead_ceiling:
            found.append(f"cpu: GC overhead p95 {gc:.1%} above the ceiling")
    if current.cpu_request_cores is not None and not window.cpu.is_empty:
        used = window.cpu.percentile(profile.cpu_percentile)
        if used > current.cpu_request_cores * (1 + profile.min_change_relative):
            found.append(
                f"cpu: usage p{profile.cpu_percentile * 100:g} {used:.3f} cores is above the "
                f"{format_cpu(current.cpu_request_cores)} request"
            )
    return found


def decide(  # noqa: PLR0911  # a ladder of reasons, each its own return
    recommendation: Mapping[str, object] | None,
    *,
    window: ContainerWindow,
    profile: Profile,
    current: CurrentResources,
    now: float,
) -> tuple[bool, str]:
    """Whether ``recommendation`` is worth proposing now, and why (see the module docstring)."""
    if recommendation is None:
        return False, (
            f"not enough data yet: {window.sample_count} of {profile.min_samples} samples"
        )
    if recommendation.get("hash") == window.last_emitted_hash:
        return False, "unchanged since the last proposal"
    recommended = recommendation.get("recommended")
    if not isinstance(recommended, Mapping):
        raise TypeError("recommendation lacks its 'recommended' resources")
    changes = material_changes(current, recommended, profile)
    if not changes:
        return False, (
            f"no value moves by {profile.min_change_relative:.0%} and the profile's minimum "
            "absolute change"
        )
    described = ", ".join(change.describe() for change in changes)
    increases = [c for c in changes if c.is_increase]
    if not increases:
        cost = recommendation.get("monthly_cost_delta_usd")
        saving = -float(cost) if isinstance(cost, int | float) else math.inf
        if saving < profile.min_monthly_saving_usd:
            return False, (
                f"saves ${saving:.2f} a month, under the profile's "
                f"${profile.min_monthly_saving_usd:.2f}: {described}"
            )
    last = window.last_proposal_timestamp
    at_risk = risks(window, profile, current)
    if last is None:
        covered = window.covered_seconds
        if covered < profile.decrease_min_history_seconds and not at_risk:
            return False, (
                f"a first proposal waits for {profile.decrease_min_history_seconds / 3600:g} h "
                f"of history ({covered / 3600:.1f} h so far) unless something is at risk"
            )
        return True, f"proposed: {described}"
    cooldown_ends = last + profile.proposal_cooldown_seconds
    if now >= cooldown_ends:
        return True, f"proposed: {described}"
    bypass = [
        reason
        for reason in at_risk
        if any((c.field in MEMORY_FIELDS) == reason.startswith("memory:") for c in increases)
    ]
    if bypass:
        return True, f"proposed within the cool-down to prevent risk ({'; '.join(bypass)}): " + (
            described
        )
    return False, f"within the cool-down until {cooldown_ends:.0f}: {described}"


class ContainerEngine:
    """Window + profile + hysteresis for one container, with the clock passed in.

    >>> from pipeline.core.profiles import BALANCED
    >>> engine = ContainerEngine(BALANCED.with_overrides(min_samples=1),
    ...                          workload="c/ns/Deployment/app", container="app")
    >>> engine.apply(SampleInput(timestamp=0.0, interval_seconds=15.0, cpu_usage_cores=0.5,
    ...                          memory_working_set_bytes=256 * 2**20))
    True
    >>> engine.evaluate(15.0, CurrentResources()).propose
    True
    """

    __slots__ = (
        "container",
        "evaluate_on_ticks",
        "failures",
        "node_fit",
        "node_pool",
        "prices",
        "profile",
        "proposals",
        "replicas",
        "spec",
        "window",
        "workload",
    )

    def __init__(
        self,
        profile: Profile,
        *,
        workload: str,
        container: str,
        prices: Prices = DEFAULT_PRICES,
        window: ContainerWindow | None = None,
        evaluate_on_ticks: bool = False,
    ) -> None:
        self.profile = profile
        self.workload = workload
        self.container = container
        self.prices = prices
        self.window = window if window is not None else ContainerWindow.new(profile)
        self.evaluate_on_ticks = evaluate_on_ticks
        self.spec = CurrentResources()
        """What the spec (or the cgroup) says is in force; the stream keeps it current."""
        self.replicas = 1
        """Replicas the cost delta is multiplied by (the spec's; 1 when unknown)."""
        self.node_pool: str | None = None
        """The node pool whose prices :attr:`prices` are (for the evidence; None: default)."""
        self.node_fit: tuple[tuple[float, int], ...] = ()
        """Allocatable (cores, bytes) of the nodes the pod could land on; recommendations
        never exceed what one of them offers (empty: unknown, no cap)."""
        self.proposals: list[Decision] = []
        """Proposals made on ticks since :meth:`take_proposals` last emptied the list."""
        self.failures: list[Exception] = []
        """Evaluations that raised (a bug, or a value the contract rejects), for the shell
        to log and count; the sample is applied regardless."""

    def apply(self, sample: SampleInput) -> bool:
        """Fold a container sample in; False if it was already seen (idempotent replay).

        With ``evaluate_on_ticks``, the first sample in each new interval of the profile's
        ``evaluation_interval_seconds`` (trace time) is followed by an evaluation as of
        that sample against :attr:`spec`; proposals collect in :attr:`proposals`. Which
        samples trigger it depends on the data alone, so a worker that restarts from a
        checkpoint and is fed the same records proposes exactly what an uninterrupted
        one did, whenever either of them checkpointed.
        """
        last = self.window.last_timestamp
        if not self.window.apply(sample):
            return False
        self._after_one(sample.timestamp, last)
        return True

    def _after_one(self, timestamp: float, last: float | None) -> None:
        """Evaluate if the sample just applied at ``timestamp`` opened a new tick."""
        if self.evaluate_on_ticks:
            tick = self.profile.evaluation_interval_seconds
            if last is None or math.floor(timestamp / tick) > math.floor(last / tick):
                self._evaluate_on_tick(timestamp)

    def apply_run(self, run: SampleRun, *, limits_in_force: bool = False) -> list[int]:
        """Fold a run of samples in, exactly as :meth:`apply` on each in order would
        (evaluations on the same ticks included); the indices of the samples applied.

        ``limits_in_force``: the container has no spec, so what is in force is what its
        cgroup reports (:meth:`CurrentResources.from_limits`): each evaluation takes the
        limits of the sample it runs at, and the run leaves :attr:`spec` at its last
        sample's, as a caller setting :attr:`spec` before each :meth:`apply` would.
        """
        window = self.window
        if len(run) == 1:  # the live shape: one sample per container and batch
            if limits_in_force:
                self.spec = self._limits_spec(run, 0)
            last = window.last_timestamp
            if not window.apply_values(
                run.timestamps[0],
                run.intervals[0],
                run.cpu_cores[0],
                run.memory_working_set_bytes[0],
                run.cpu_throttled_ratios[0],
                run.oom_kills[0],
                run.cpu_limit_cores[0],
                run.memory_limit_bytes[0],
            ):
                return []
            self._after_one(run.timestamps[0], last)
            return [0]
        fresh = fresh_indices(run.timestamps, window.last_timestamp)
        if fresh:
            applied = run if len(fresh) == len(run) else run.select(fresh)
            if not self.evaluate_on_ticks:
                window.apply_fresh_run(applied)
            else:
                self._apply_ticking(applied, limits_in_force=limits_in_force)
        if limits_in_force and len(run):
            self.spec = self._limits_spec(run, len(run) - 1)
        return fresh

    def _apply_ticking(self, run: SampleRun, *, limits_in_force: bool) -> None:
        tick = self.profile.evaluation_interval_seconds
        floor = math.floor
        last = self.window.last_timestamp
        last_tick = None if last is None else floor(last / tick)
        start = 0
        for index, timestamp in enumerate(run.timestamps):
            this_tick = floor(timestamp / tick)
            if last_tick is None or this_tick > last_tick:
                self.window.apply_fresh_run(run.slice(start, index + 1))
                start = index + 1
                if limits_in_force:
                    self.spec = self._limits_spec(run, index)
                self._evaluate_on_tick(timestamp)
            last_tick = this_tick
        if start < len(run):
            self.window.apply_fresh_run(run.slice(start, len(run)))

    def _limits_spec(self, run: SampleRun, index: int) -> CurrentResources:
        return CurrentResources.from_limits(
            run.cpu_limit_cores[index],
            run.memory_limit_bytes[index],
            jvm_max_heap_bytes=self.spec.jvm_max_heap_bytes,
        )

    def _evaluate_on_tick(self, now: float) -> None:
        try:
            decision = self.evaluate(now, self.spec)
        except Exception as exc:  # handed to the shell; the sample is kept
            self.failures.append(exc)
        else:
            if decision.propose:
                self.proposals.append(decision)

    def take_proposals(self) -> list[Decision]:
        """The proposals made since the last call (oldest first), emptying the list."""
        taken, self.proposals = self.proposals, []
        return taken

    def apply_jvm(self, sample: JvmSampleInput) -> bool:
        """Fold a JVM sample in; False if it was already seen."""
        return self.window.apply_jvm(sample)

    def in_force(self, current: CurrentResources) -> CurrentResources:
        """What is in force: ``current`` when anything of it is known, else the last
        proposal (as after a merged pull request), else nothing."""
        proposed = self.window.last_proposed
        if any(value is not None for value in current.to_dict().values()) or proposed is None:
            return current
        return CurrentResources(
            cpu_request_cores=proposed["cpu_request_cores"],
            cpu_limit_cores=proposed["cpu_limit_cores"],
            memory_request_bytes=_optional_int(proposed["memory_request_bytes"]),
            memory_limit_bytes=_optional_int(proposed["memory_limit_bytes"]),
            jvm_max_heap_bytes=_optional_int(proposed["jvm_max_heap_bytes"]),
        )

    def evaluate(self, now: float, current: CurrentResources) -> Decision:
        """The recommendation as of ``now`` (trace time) and whether to propose it.

        ``current`` is what the spec or the cgroup says is in force; when it says nothing,
        the last proposal counts as in force (:meth:`in_force`).

        A proposal is recorded in the window (time and hash), so the next call measures
        the cool-down from it and a restarted worker remembers it.
        """
        current = self.in_force(current)
        recommendation = recommend(
            self.window,
            self.profile,
            workload=self.workload,
            container=self.container,
            current=current,
            now=now,
            prices=self.prices,
            replicas=self.replicas,
            node_pool=self.node_pool,
            node_fit=self.node_fit,
        )
        propose, reason = decide(
            recommendation, window=self.window, profile=self.profile, current=current, now=now
        )
        if propose and recommendation is not None:
            hash_value = recommendation["hash"]
            assert isinstance(hash_value, str)
            recommended = recommendation["recommended"]
            assert isinstance(recommended, dict)
            self.window.last_proposal_timestamp = now
            self.window.last_emitted_hash = hash_value
            self.window.last_proposed = {
                key: None if recommended.get(key) is None else float(recommended[key])
                for key in RESOURCE_FIELDS
            }
        return Decision(recommendation, propose, reason)


def _format_bytes(value: float) -> str:
    return format_memory(int(value))


def _optional_int(value: float | None) -> int | None:
    return None if value is None else int(value)
