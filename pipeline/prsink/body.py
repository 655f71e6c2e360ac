"""Render the title and Markdown body of a right-sizing pull request.

A reviewer decides from this text alone whether to merge, so it shows what changes (a
table per container with the change in percent), why (each rule's sentence), on what
evidence, how sure daytwo is, the risk and the money. The body ends with a hidden
marker carrying the recommendation set's hash, so the sink (and later the forges) can
tell that a PR already says exactly this and skip rewriting it.

Pure: no I/O, deterministic for a given recommendation set.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pipeline.core.quantity import format_cpu, format_memory, round_up_memory
from pipeline.errors import SinkError
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
    return lines


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
        lines.append(f"- samples: {int(samples):,}{span}{window}")
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
        lines.append(f"- memory peak: {format_memory(peak)}")
    if evidence.get("cpu_throttled_ratio_max") is not None:
        ratio = float(evidence["cpu_throttled_ratio_max"])
        lines.append(f"- CPU throttling (worst interval): {ratio * 100:.1f}% of periods")
    if evidence.get("oom_kills") is not None:
        lines.append(f"- OOM kills: {int(evidence['oom_kills'])}")
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


def render_body(rec_set: Mapping[str, Any]) -> str:
    """The Markdown body: summary, one section per container, hidden hash marker last."""
    recommendations: Sequence[Mapping[str, Any]] = rec_set.get("recommendations") or ()
    total_delta = sum(float(r.get("monthly_cost_delta_usd") or 0.0) for r in recommendations)
    lines = [
        f"daytwo proposes new resource settings for `{rec_set['workload']}` "
        f"({len(recommendations)} container{'s' if len(recommendations) != 1 else ''}).",
        "",
        f"**Estimated monthly cost change: {_usd(total_delta)}**",
        "",
    ]
    for recommendation in recommendations:
        profile = recommendation.get("profile")
        confidence = recommendation.get("confidence")
        lines.append(f"### Container `{recommendation['container']}`")
        lines.append("")
        facts = []
        if profile:
            facts.append(f"profile **{profile}**")
        if confidence is not None:
            facts.append(f"confidence **{float(confidence) * 100:.0f}%**")
        facts.append(f"risk **{recommendation.get('risk', 'unknown')}**")
        delta = recommendation.get("monthly_cost_delta_usd")
        if delta is not None:
            facts.append(f"monthly cost **{_usd(float(delta))}**")
        lines.extend([", ".join(facts), ""])
        lines.extend(_container_table(recommendation))
        rules: Sequence[Mapping[str, Any]] = recommendation.get("rules") or ()
        if rules:
            lines.extend(["", "Why:", ""])
            lines.extend(
                f"- `{rule['id']}`: {' '.join(str(rule['text']).split())}" for rule in rules
            )
        evidence_lines = _evidence_lines(recommendation.get("evidence") or {})
        if evidence_lines:
            lines.extend(["", "Evidence:", ""])
            lines.extend(evidence_lines)
        lines.append("")
    lines.extend(
        [
            "Values marked (unchanged) are left as they are in the manifest. "
            "Merge to apply; close to dismiss.",
            "",
            hash_marker(str(rec_set["hash"])),
        ]
    )
    return "\n".join(lines)


def render_pr(rec_set: Mapping[str, Any]) -> tuple[str, str]:
    """Title and Markdown body of the PR for one recommendation set (plain dicts)."""
    return render_title(rec_set), render_body(rec_set)
