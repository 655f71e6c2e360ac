"""Charts for the PR body: usage against the current and recommended request and limit.

Rendered as Mermaid ``xychart-beta`` blocks, which GitHub (and GitLab) draw in a PR
description, so the chart needs no image committed on the branch and no renderer here.

What it can show: a recommendation carries the window's summary statistics (CPU p50,
p95 and peak; the memory working-set peak; for a JVM the live set), not the time
series, so each chart puts those as bars next to the request and limit in force and
proposed, with the proposed request drawn as a line across all bars. xychart-beta has no
legend, so every bar is a labelled category and the caption names the line.

Pure: no I/O, deterministic for a given recommendation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_MIB = 1024**2


@dataclass(frozen=True)
class Chart:
    """One xychart: labelled bars, optional constant lines, a unit, a caption."""

    title: str
    unit: str
    categories: tuple[str, ...]
    bars: tuple[float, ...]
    lines: tuple[tuple[str, float], ...]

    def y_max(self) -> float:
        """A round axis maximum a little above the tallest bar or line."""
        top = max([*self.bars, *(value for _, value in self.lines), 0.0])
        return nice_ceiling(top * 1.1) if top > 0 else 1.0

    def mermaid(self) -> str:
        """The fenced ``mermaid`` block (the fence included)."""
        count = len(self.categories)
        lines = [
            "```mermaid",
            "xychart-beta",
            f'    title "{_label(self.title)}"',
            "    x-axis [" + ", ".join(f'"{_label(c)}"' for c in self.categories) + "]",
            f'    y-axis "{_label(self.unit)}" 0 --> {_number(self.y_max())}',
            "    bar [" + ", ".join(_number(v) for v in self.bars) + "]",
        ]
        lines.extend(
            "    line [" + ", ".join([_number(value)] * count) + "]" for _, value in self.lines
        )
        lines.append("```")
        return "\n".join(lines)

    def caption(self) -> str:
        """One sentence naming what the lines are (xychart-beta draws no legend)."""
        if not self.lines:
            return f"Bars: {', '.join(self.categories)} ({self.unit})."
        named = ", ".join(
            f"line {index}: {name} ({_number(value)} {self.unit})"
            for index, (name, value) in enumerate(self.lines, start=1)
        )
        return f"Bars: {', '.join(self.categories)} ({self.unit}); {named}."


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k at or above ``value`` (axis maxima)."""
    if value <= 0:
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        candidate = step * 10.0**exponent
        if candidate >= value * (1 - 1e-12):
            return float(f"{candidate:.12g}")
    return 10.0 ** (exponent + 1)  # pragma: no cover - the loop always returns


def _number(value: float) -> str:
    """Plain decimal text Mermaid's lexer accepts (no exponent, at most 2 decimals)."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _label(text: str) -> str:
    """Text safe inside Mermaid's double quotes."""
    return " ".join(text.replace('"', "'").split())


def _get(mapping: Mapping[str, Any] | None, key: str) -> float | None:
    if not mapping:
        return None
    value = mapping.get(key)
    return float(value) if isinstance(value, int | float) else None


def _collect(
    pairs: Sequence[tuple[str, float | None]], scale: float
) -> tuple[tuple[str, ...], tuple[float, ...]]:
    shown = [(name, value / scale) for name, value in pairs if value is not None]
    return tuple(name for name, _ in shown), tuple(value for _, value in shown)


def cpu_chart(recommendation: Mapping[str, Any]) -> Chart | None:
    """CPU usage p50 / p95 / peak against the request and limit, in millicores.

    None when the evidence has no CPU usage at all (nothing to compare against).
    """
    evidence: Mapping[str, Any] = recommendation.get("evidence") or {}
    current = recommendation.get("current") or {}
    recommended = recommendation.get("recommended") or {}
    usage = [
        ("usage p50", _get(evidence, "cpu_p50_cores")),
        ("usage p95", _get(evidence, "cpu_p95_cores")),
        ("usage peak", _get(evidence, "cpu_max_cores")),
    ]
    if all(value is None for _, value in usage):
        return None
    settings = _settings_pairs(current, recommended, "cpu_request_cores", "cpu_limit_cores")
    categories, bars = _collect([*usage, *settings], 1 / 1000)
    lines = _proposed_lines(current, recommended, "cpu_request_cores", "cpu_limit_cores", 1000)
    return Chart(
        title=f"CPU of {recommendation.get('container', '?')}: usage vs request and limit",
        unit="millicores",
        categories=categories,
        bars=bars,
        lines=lines,
    )


def memory_chart(recommendation: Mapping[str, Any]) -> Chart | None:
    """Memory working-set peak (and a JVM's live set and heap) against request and limit, MiB.

    None when the evidence has no memory usage.
    """
    evidence: Mapping[str, Any] = recommendation.get("evidence") or {}
    current = recommendation.get("current") or {}
    recommended = recommendation.get("recommended") or {}
    jvm: Mapping[str, Any] = evidence.get("jvm") or {}
    usage = [
        ("working-set peak", _get(evidence, "memory_peak_bytes")),
        ("JVM live-set peak", _get(jvm, "live_set_peak_bytes")),
    ]
    if all(value is None for _, value in usage):
        return None
    settings = _settings_pairs(current, recommended, "memory_request_bytes", "memory_limit_bytes")
    heap = [
        ("heap now", _get(current, "jvm_max_heap_bytes")),
        ("heap new", _get(recommended, "jvm_max_heap_bytes")),
    ]
    categories, bars = _collect([*usage, *settings, *heap], _MIB)
    lines = _proposed_lines(
        current, recommended, "memory_request_bytes", "memory_limit_bytes", 1 / _MIB
    )
    return Chart(
        title=f"Memory of {recommendation.get('container', '?')}: usage vs request and limit",
        unit="MiB",
        categories=categories,
        bars=bars,
        lines=lines,
    )


def _settings_pairs(
    current: Mapping[str, Any], recommended: Mapping[str, Any], request: str, limit: str
) -> list[tuple[str, float | None]]:
    """Request and limit now and proposed; a null proposal keeps the value in force."""

    def proposed(field: str) -> float | None:
        value = _get(recommended, field)
        return value if value is not None else _get(current, field)

    return [
        ("request now", _get(current, request)),
        ("request new", proposed(request)),
        ("limit now", _get(current, limit)),
        ("limit new", proposed(limit)),
    ]


def _proposed_lines(
    current: Mapping[str, Any],
    recommended: Mapping[str, Any],
    request: str,
    limit: str,
    scale: float,
) -> tuple[tuple[str, float], ...]:
    lines = []
    for name, field in (("proposed request", request), ("proposed limit", limit)):
        value = _get(recommended, field)
        if value is None:
            value = _get(current, field)
        if value is not None:
            lines.append((name, value * scale))
    return tuple(lines)


def charts_markdown(recommendation: Mapping[str, Any]) -> list[str]:
    """The chart blocks with captions for one container; empty when there is no usage."""
    lines: list[str] = []
    for chart in (cpu_chart(recommendation), memory_chart(recommendation)):
        if chart is None:
            continue
        lines.extend([chart.mermaid(), "", chart.caption(), ""])
    if lines:
        lines.append(
            "_The recommendation carries summary statistics of the window (percentiles "
            "and peaks), not the time series, so the charts show those against the values "
            "in force and proposed._"
        )
    return lines
