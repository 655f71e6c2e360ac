"""Render the title and Markdown body of a right-sizing pull request.

A reviewer decides from this text alone whether to merge, so it shows what changes (a
table per container with the change in percent, JVM options included), why (each rule's
sentence), on what evidence (percentiles, peaks, throttling, OOM kills, GC, coverage,
drift, a suspected leak), the money (per replica and in total, with the prices used),
the risk, a chart of usage against the request and limit (:mod:`pipeline.prsink.chart`)
and a counterfactual: how much of the window's usage the new values would have left
above the request or the limit. The body ends with a hidden marker carrying the
recommendation set's hash, so the sink can tell that a PR already says exactly this.

The counterfactual is the engine's replay of the window against the current and the
proposed values (``evidence.counterfactual``) when the recommendation carries it; older
recommendations without it get bounds derived from the percentiles and peaks (a proposed
request at or above p95 leaves at most 5% of samples above it).

Pure: no I/O, deterministic for a given recommendation set.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pipeline.core.quantity import format_cpu, format_memory, round_up_memory
from pipeline.errors import SinkError
from pipeline.prsink.chart import charts_markdown
from pipeline.prsink.locate import WorkloadId

_MARKER_PATTERN = re.compile(r"<!-- daytwo:hash=([0-9a-f]{64}) -->")
_HASH = re.compile(r"[0-9a-f]{64}")

# (label, field of `resources`, formatter)
_ROWS: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("CPU request", "cpu_request_cores", lambda v: format_cpu(float(v))),
    ("CPU limit", "cpu_limit_cores", lambda v: format_cpu(float(v))),
    ("Memory request", "memory_request_bytes", lambda v: format_memory(int(v))),
    ("Memory limit", "memory_limit_bytes", lambda v: format_memory(int(v))),
    ("JVM max heap", "jvm_max_heap_bytes", lambda v: format_memory(int(v))),
)


def hash_marker(set_hash: str) -> str:
    """The hidden HTML comment that records which recommendation set a PR shows."""
    if not _HASH.fullmatch(set_hash):
        raise SinkError(f"recommendation set hash {set_hash!r} is not a sha256 hex digest")
    return f"<!-- daytwo:hash={set_hash} -->"


def extract_hash(text: str) -> str | None:
    """The hash in the last daytwo marker of a PR body (or PR.md), None if there is none.

    The last one wins because the renderer writes it last; text quoted above it cannot
    override it.
    """
    found = _MARKER_PATTERN.findall(text)
    return found[-1] if found else None


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _percent_change(current: float | None, recommended: float | None) -> str:
    if recommended is None:
        return "—"
    if current is None:
        return "new"
    if current == recommended:
        return "= 0%"
    if current == 0:
        return "↑ from 0"
    change = (recommended - current) / current * 100
    arrow = "↑" if change > 0 else "↓"
    return f"{arrow} {change:+.1f}%"


def _quantity(value: Any, formatter: Callable[[Any], str]) -> str:
    return "unset" if value is None else formatter(value)


def _usd(amount: float) -> str:
    sign = "-" if amount < 0 else "+"
    return f"{sign}${abs(amount):,.2f}"


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    shown = [
        f"{value}{unit}" for value, unit in ((days, "d"), (hours, "h"), (minutes, "m")) if value
    ]
    return " ".join(shown[:2]) or "0m"


def _timestamp(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def _container_table(recommendation: Mapping[str, Any]) -> list[str]:
    current: Mapping[str, Any] = recommendation.get("current") or {}
    recommended: Mapping[str, Any] = recommendation.get("recommended") or {}
    lines = ["| resource | current | recommended | change |", "| --- | ---: | ---: | ---: |"]
    for label, field, formatter in _ROWS:
        before, after = current.get(field), recommended.get(field)
        if before is None and after is None:
            continue
        shown_after = "(unchanged)" if after is None else f"**{formatter(after)}**"
        lines.append(
            f"| {label} | {_quantity(before, formatter)} | {shown_after} | "
            f"{_percent_change(before, after)} |"
        )
    jvm_options = recommendation.get("jvm_options")
    if isinstance(jvm_options, Mapping) and jvm_options.get("java_tool_options"):
        previous = jvm_options.get("previous")
        changed = " ".join(f"`{_cell(str(option))}`" for option in jvm_options.get("changed") or ())
        lines.append(
            f"| JVM options (`JAVA_TOOL_OPTIONS`) | "
            f"{'unknown' if previous is None else _code(str(previous))} | "
            f"**{_code(str(jvm_options['java_tool_options']))}** | {changed or '—'} |"
        )
    return lines


def _code(text: str) -> str:
    """Inline code in a table cell (empty text shown as empty quotes)."""
    shown = _cell(text).replace("`", "'")
    return f"`{shown}`" if shown else '""'


def _percent(ratio: float) -> str:
    return f"{ratio * 100:.1f}%"


def _seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _evidence_lines(evidence: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    samples = evidence.get("samples")
    if samples is not None:
        coverage = evidence.get("coverage_seconds")
        span = f" covering {_duration(float(coverage))}" if coverage is not None else ""
        window = ""
        if evidence.get("first_timestamp") is not None or evidence.get("last_timestamp"):
            window = (
                f" ({_timestamp(evidence.get('first_timestamp'))} → "
                f"{_timestamp(evidence.get('last_timestamp'))})"
            )
        lines.append(f"- data coverage: {int(samples):,} samples{span}{window}")
    cpu = [
        (name, evidence.get(field))
        for name, field in (("p50", "cpu_p50_cores"), ("p95", "cpu_p95_cores"))
    ]
    cpu.append(("peak", evidence.get("cpu_max_cores")))
    shown_cpu = [f"{name} {format_cpu(float(value))}" for name, value in cpu if value is not None]
    if shown_cpu:
        lines.append("- CPU usage: " + ", ".join(shown_cpu))
    if evidence.get("memory_peak_bytes") is not None:
        peak = round_up_memory(int(evidence["memory_peak_bytes"]))
        lines.append(f"- memory working-set peak: {format_memory(peak)}")
    throttled = [
        f"{label} {_percent(float(evidence[field]))} of periods"
        for label, field in (
            ("p95", "cpu_throttled_ratio_p95"),
            ("worst interval", "cpu_throttled_ratio_max"),
        )
        if evidence.get(field) is not None
    ]
    if throttled:
        lines.append("- CPU throttling: " + ", ".join(throttled))
    if evidence.get("oom_kills") is not None:
        last = evidence.get("last_oom_timestamp")
        when = f" (last at {_timestamp(float(last))})" if last is not None else ""
        lines.append(f"- OOM kills: {int(evidence['oom_kills'])}{when}")
    jvm = evidence.get("jvm")
    if isinstance(jvm, Mapping):
        lines.extend(_jvm_lines(jvm))
    for event in evidence.get("drift") or ():
        lines.append(_drift_line(event))
    leak = evidence.get("leak")
    if isinstance(leak, Mapping):
        slope = float(leak["slope_per_hour"])
        lines.append(
            f"- suspected memory leak: working set climbing "
            f"{slope / 1024**2:.1f}Mi/h since "
            f"{_timestamp(float(leak['since']))} (straight-line fit r² {float(leak['r2']):.2f}, "
            f"+{_percent(float(leak['growth_share']))} over the climb); memory is not raised "
            "to chase it — look for the leak"
        )
    return lines


def _jvm_lines(jvm: Mapping[str, Any]) -> list[str]:
    facts = []
    if jvm.get("collector"):
        facts.append(f"{jvm['collector']} collector")
    facts.append(f"heap set by {jvm.get('heap_sizing', '?')}")
    if jvm.get("heap_max_bytes") is not None:
        facts.append(
            f"max heap in force {format_memory(round_up_memory(int(jvm['heap_max_bytes'])))}"
        )
    if jvm.get("samples") is not None:
        facts.append(f"{int(jvm['samples']):,} JVM samples")
    lines = ["- JVM: " + ", ".join(facts)]
    gc = [
        f"{label} {_percent(float(jvm[field]))}"
        for label, field in (("p95", "gc_overhead_p95_ratio"), ("worst", "gc_overhead_max_ratio"))
        if jvm.get(field) is not None
    ]
    if gc:
        lines.append("- GC overhead (pause time / wall time): " + ", ".join(gc))
    pauses = [
        f"{label} {_seconds(float(jvm[field]))}"
        for label, field in (("p99", "gc_pause_p99_seconds"), ("longest", "gc_pause_max_seconds"))
        if jvm.get(field) is not None
    ]
    if pauses:
        lines.append("- GC pauses: " + ", ".join(pauses))
    if jvm.get("live_set_peak_bytes") is not None:
        live = format_memory(round_up_memory(int(jvm["live_set_peak_bytes"])))
        lines.append(f"- live set after GC (peak): {live}")
    non_heap = jvm.get("non_heap")
    if isinstance(non_heap, Mapping):
        defaults = list(non_heap.get("defaults") or ())
        note = f" (defaults used for {', '.join(defaults)})" if defaults else " (all measured)"
        lines.append(
            f"- non-heap estimate: {format_memory(round_up_memory(int(non_heap['total_bytes'])))}"
            f"{note}"
        )
    return lines


_DRIFT_UNITS: dict[str, Callable[[float], str]] = {
    "cpu": format_cpu,
    "memory": lambda v: format_memory(round_up_memory(v)),
    "gc_overhead": _percent,
    "throttling": _percent,
}


def _plain_number(value: float) -> str:
    return f"{value:g}"


def _drift_line(event: Mapping[str, Any]) -> str:
    signal = str(event["signal"])
    unit = _DRIFT_UNITS.get(signal, _plain_number)
    verb = "rose" if event["direction"] == "up" else "fell"
    return (
        f"- drift: {signal.replace('_', ' ')} {verb} from {unit(float(event['level_before']))} "
        f"to {unit(float(event['level_after']))} since {_timestamp(float(event['regime_start']))} "
        f"({event['detector']}, detected {_timestamp(float(event['detected_at']))}); the window "
        "weighs the new level"
    )


def _cost_lines(recommendation: Mapping[str, Any]) -> list[str]:
    delta = recommendation.get("monthly_cost_delta_usd")
    cost = (recommendation.get("evidence") or {}).get("cost")
    if not isinstance(cost, Mapping):
        return [] if delta is None else [f"- {_usd(float(delta))} a month in total"]
    replicas = int(cost["replicas"])
    pool = cost.get("node_pool")
    lines = [
        f"- per replica: {_usd(float(cost['monthly_per_replica_usd']))} a month",
        f"- replicas: {replicas}",
    ]
    if delta is not None:
        lines.append(f"- total: **{_usd(float(delta))} a month**")
    lines.append(
        f"- prices: ${float(cost['cpu_core_hour_usd']):.6g} per vCPU-hour, "
        f"${float(cost['memory_gib_hour_usd']):.6g} per GiB-hour, 730 h a month"
        + (f", node pool `{_cell(str(pool))}`" if pool else " (default prices)")
    )
    return lines


def _effective(recommendation: Mapping[str, Any], field: str) -> float | None:
    """The value after the PR: the proposal, else the value in force."""
    value = (recommendation.get("recommended") or {}).get(field)
    if value is None:
        value = (recommendation.get("current") or {}).get(field)
    return float(value) if value is not None else None


def share_above(
    value: float, p50: float | None, p95: float | None, peak: float | None
) -> tuple[str, float | None]:
    """How much of the window's usage lies above ``value``, from the percentiles alone.

    Returns (words, upper bound as a share, or None when only a lower bound is known).
    A value at or above the peak leaves no sample above it; at or above p95, at most
    5%; at or above p50, at most 50%; below p50, more than half.
    """
    if peak is not None and value >= peak:
        return "no sample", 0.0
    if p95 is not None and value >= p95:
        return "at most 5% of samples", 0.05
    if p50 is not None and value >= p50:
        return "between 5% and 50% of samples" if p95 is not None else "at most 50% of samples", 0.5
    if p50 is not None:
        return "more than half of the samples", None
    if peak is not None:
        return "some samples (the peak is above it)", None
    return "an unknown share of samples", None


def _bounded_count(share: float | None, samples: int | None) -> str:
    if share is None or samples is None or share == 0.0:
        return ""
    return f" (≤ {math.floor(share * samples):,} of {samples:,})"


def _share_and_count(share: float, samples: int | None) -> str:
    count = f" (about {round(share * samples):,} of {samples:,} samples)" if samples else ""
    return f"{_percent(share)}{count}"


def replayed_lines(
    replay: Mapping[str, Any], samples: int | None, cpu_limit: float | None
) -> list[str]:
    """The engine's replay of the window against the current and the new values.

    Why prefer it: the engine still has the history when it recommends, so these are
    measured (recent samples weigh more; CPU shares are upper bounds), not derived from
    percentiles.
    """
    lines: list[str] = []
    for label, key, unset in (
        ("CPU above the request", "cpu_above_request_share", "no request"),
        ("CPU at the limit (throttled)", "cpu_at_limit_share", "no limit"),
    ):
        now, new = replay.get(f"{key}_current"), replay.get(f"{key}_recommended")
        if now is None and new is None:
            if key == "cpu_at_limit_share" and cpu_limit is None:
                lines.append(f"- {label}: never, no CPU limit is set now or proposed")
            continue
        shown_now = unset if now is None else f"{_percent(float(now))} of sample time"
        shown_new = unset if new is None else _share_and_count(float(new), samples)
        lines.append(f"- {label}: {shown_now} now → {shown_new} with the new values")
    now_peaks = replay.get("memory_peaks_above_limit_current")
    new_peaks = replay.get("memory_peaks_above_limit_recommended")
    if now_peaks is not None or new_peaks is not None:
        lines.append(
            "- memory peaks above the limit (each an OOM kill): "
            f"{'no limit' if now_peaks is None else int(now_peaks)} now → "
            f"{'no limit' if new_peaks is None else int(new_peaks)} with the new values"
        )
    if lines:
        lines.append(
            "- _Replayed over the window's history (recent samples weigh more); CPU shares "
            "are upper bounds._"
        )
    return lines


def counterfactual_lines(recommendation: Mapping[str, Any]) -> list[str]:
    """With the new values, how much of the window would have been above request / limit.

    The engine's replay (``evidence.counterfactual``) when the recommendation carries
    it; otherwise bounds derived from the percentiles and peaks, the sentences saying
    which percentile each bound comes from.
    """
    evidence: Mapping[str, Any] = recommendation.get("evidence") or {}
    replay = evidence.get("counterfactual")
    if isinstance(replay, Mapping):
        samples = evidence.get("samples")
        replayed = replayed_lines(
            replay,
            int(samples) if isinstance(samples, int) else None,
            _effective(recommendation, "cpu_limit_cores"),
        )
        if replayed:
            return replayed
    samples = evidence.get("samples")
    count = int(samples) if isinstance(samples, int) else None
    p50 = evidence.get("cpu_p50_cores")
    p95 = evidence.get("cpu_p95_cores")
    cpu_peak = evidence.get("cpu_max_cores")
    lines: list[str] = []
    has_cpu = any(v is not None for v in (p50, p95, cpu_peak))
    for label, field, consequence in (
        ("CPU request", "cpu_request_cores", "would have used more CPU than requested"),
        (
            "CPU limit",
            "cpu_limit_cores",
            "would have averaged above the limit (throttling inside a sample interval "
            "does not show in these statistics)",
        ),
    ):
        value = _effective(recommendation, field)
        if value is None or not has_cpu:
            continue
        words, share = share_above(
            value,
            None if p50 is None else float(p50),
            None if p95 is None else float(p95),
            None if cpu_peak is None else float(cpu_peak),
        )
        lines.append(
            f"- {label} {format_cpu(value)}: {words}{_bounded_count(share, count)} {consequence}"
        )
    memory_peak = evidence.get("memory_peak_bytes")
    if memory_peak is not None:
        peak = int(memory_peak)
        for label, field, none_above, peak_above in (
            ("memory request", "memory_request_bytes", "above the request", "above the request"),
            (
                "memory limit",
                "memory_limit_bytes",
                "reaching the limit, so no OOM kill",
                "at the limit: an OOM kill",
            ),
        ):
            value = _effective(recommendation, field)
            if value is None:
                continue
            shown = format_memory(int(value))
            peak_text = format_memory(round_up_memory(peak))
            if value > peak:
                margin = format_memory(round_up_memory(value - peak))
                lines.append(
                    f"- {label} {shown}: no sample {none_above} (the working-set peak "
                    f"{peak_text} stays {margin} below it)"
                )
            else:
                lines.append(
                    f"- {label} {shown}: at least the peak sample ({peak_text}) would have "
                    f"been {peak_above}"
                )
    if lines:
        lines.append(
            "- _Derived from the window's percentiles and peaks (weighted toward recent "
            "samples), so these are bounds, not a per-sample replay._"
        )
    return lines


def _risk_lines(recommendation: Mapping[str, Any]) -> list[str]:
    risk = str(recommendation.get("risk", "unknown"))
    confidence = recommendation.get("confidence")
    sure = f" at confidence {float(confidence) * 100:.0f}%" if confidence is not None else ""
    lines = [f"- **{risk}**{sure}"]
    evidence: Mapping[str, Any] = recommendation.get("evidence") or {}
    peak = evidence.get("memory_peak_bytes")
    limit = _effective(recommendation, "memory_limit_bytes")
    if peak is not None and limit is not None and limit < 1.1 * float(peak):
        lines.append(
            f"- the memory limit {format_memory(int(limit))} leaves less than 10% above the "
            "observed working-set peak: an unseen spike can end in an OOM kill"
        )
    request = _effective(recommendation, "cpu_request_cores")
    p95 = evidence.get("cpu_p95_cores")
    if request is not None and p95 is not None and request < float(p95):
        lines.append(
            f"- the CPU request {format_cpu(request)} is below usage p95 "
            f"{format_cpu(float(p95))}: the pod relies on idle node capacity at busy times"
        )
    if evidence.get("leak"):
        lines.append("- memory is climbing like a leak; the proposal does not follow it up")
    if int(evidence.get("oom_kills") or 0) > 0:
        lines.append("- the container was OOM-killed within the window")
    return lines


def _totals(
    recommendations: Sequence[Mapping[str, Any]], field: str
) -> tuple[float | None, float | None]:
    """Pod-wide current and proposed sums of ``field``.

    An unset current value counts as 0 (nothing reserved), a null recommendation as the
    current value (left as is). None when no container has the field at all.
    """
    before_total = after_total = 0.0
    counted = False
    for recommendation in recommendations:
        before = (recommendation.get("current") or {}).get(field)
        after = (recommendation.get("recommended") or {}).get(field)
        if before is None and after is None:
            continue
        counted = True
        before_total += float(before or 0.0)
        after_total += float(before or 0.0) if after is None else float(after)
    return (before_total, after_total) if counted else (None, None)


def render_title(rec_set: Mapping[str, Any]) -> str:
    """One line: which workload, and the pod-wide request change for CPU and memory."""
    workload = WorkloadId.parse(str(rec_set["workload"]))
    recommendations: Sequence[Mapping[str, Any]] = rec_set.get("recommendations") or ()
    changes: list[str] = []
    cpu_before, cpu_after = _totals(recommendations, "cpu_request_cores")
    if cpu_before is not None and cpu_after is not None and cpu_before != cpu_after:
        changes.append(f"cpu {format_cpu(cpu_before)}→{format_cpu(cpu_after)}")
    memory_before, memory_after = _totals(recommendations, "memory_request_bytes")
    if memory_before is not None and memory_after is not None and memory_before != memory_after:
        changes.append(
            f"memory {format_memory(int(memory_before))}→{format_memory(int(memory_after))}"
        )
    title = f"daytwo: right-size {workload.namespace}/{workload.name}"
    return f"{title} ({', '.join(changes)})" if changes else title


def render_body(
    rec_set: Mapping[str, Any],
    *,
    sources: Mapping[str, str] | None = None,
    notes: Sequence[str] = (),
) -> str:
    """The Markdown body: summary, one section per container, hidden hash marker last.

    ``sources`` says per container where its values are written (one line each, from
    :meth:`pipeline.prsink.locate.SourceOfTruth.describe`), so a reviewer knows why the
    diff touches that file; ``notes`` are what the patch could not do and a human must
    (shown under "Action needed"). Both are optional: without them the body describes
    the recommendation alone.
    """
    recommendations: Sequence[Mapping[str, Any]] = rec_set.get("recommendations") or ()
    total_delta = sum(float(r.get("monthly_cost_delta_usd") or 0.0) for r in recommendations)
    lines = [
        f"daytwo proposes new resource settings for `{rec_set['workload']}` "
        f"({len(recommendations)} container{'s' if len(recommendations) != 1 else ''}).",
        "",
        f"**Estimated monthly cost change: {_usd(total_delta)}** (all replicas)",
        "",
    ]
    for recommendation in recommendations:
        lines.extend(
            _container_section(
                recommendation, (sources or {}).get(str(recommendation["container"]))
            )
        )
    if notes:
        lines.extend(
            ["**Action needed**", "", *(f"- {' '.join(note.split())}" for note in notes), ""]
        )
    lines.extend(
        [
            "Values marked (unchanged) are left as they are in the manifest. "
            "Merge to apply; close to dismiss (daytwo reopens only when the recommendation "
            "changes materially).",
            "",
            hash_marker(str(rec_set["hash"])),
        ]
    )
    return "\n".join(lines)


def _container_section(recommendation: Mapping[str, Any], source: str | None) -> list[str]:
    facts = []
    if recommendation.get("profile"):
        facts.append(f"profile **{recommendation['profile']}**")
    if recommendation.get("confidence") is not None:
        facts.append(f"confidence **{float(recommendation['confidence']) * 100:.0f}%**")
    facts.append(f"risk **{recommendation.get('risk', 'unknown')}**")
    delta = recommendation.get("monthly_cost_delta_usd")
    if delta is not None:
        facts.append(f"monthly cost **{_usd(float(delta))}**")
    lines = [f"### Container `{recommendation['container']}`", "", ", ".join(facts), ""]
    if source:
        lines.extend([f"Written to: {_written_to(source)}", ""])
    lines.extend(_container_table(recommendation))
    rules: Sequence[Mapping[str, Any]] = recommendation.get("rules") or ()
    sections: list[tuple[str, list[str]]] = [
        (
            "Why",
            [f"- `{rule['id']}`: {' '.join(str(rule['text']).split())}" for rule in rules],
        ),
        ("Evidence", _evidence_lines(recommendation.get("evidence") or {})),
        ("Cost", _cost_lines(recommendation)),
        ("Risk", _risk_lines(recommendation)),
        ("With the new values over the same window", counterfactual_lines(recommendation)),
        ("Usage against request and limit", charts_markdown(recommendation)),
    ]
    for heading, body in sections:
        if body:
            lines.extend(["", f"**{heading}**", "", *body])
    lines.append("")
    return lines


def _written_to(source: str) -> str:
    """A source description with its repository path set as code (``a/b.yaml#x.y``)."""
    return _SOURCE_PATH.sub(lambda match: f"`{match[0]}`", " ".join(source.split()), count=1)


# The first path-like token of a source description: ``overlays/prod/resources.yaml`` or
# ``envs/prod/values.yaml#checkout.app.resources``.
_SOURCE_PATH = re.compile(r"[^\s`]+\.ya?ml(?:#[^\s`]+)?")


def render_pr(
    rec_set: Mapping[str, Any],
    *,
    sources: Mapping[str, str] | None = None,
    notes: Sequence[str] = (),
) -> tuple[str, str]:
    """Title and Markdown body of the PR for one recommendation set (plain dicts).

    ``sources`` and ``notes`` as in :func:`render_body`.
    """
    return render_title(rec_set), render_body(rec_set, sources=sources, notes=notes)
