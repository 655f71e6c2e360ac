"""The PR body: golden text, well-formed Mermaid charts, honest counterfactual bounds.

The golden file pins every section of a rich body (JVM, drift, leak, cost); regenerate
it after a deliberate change with ``DAYTWO_UPDATE_GOLDEN=1 pytest tests/test_prsink_body.py``
and read the diff. Mermaid blocks are checked against a strict reading of the
xychart-beta grammar here, and by Mermaid's own parser when it is installed
(``npm install --prefix tests/tools/mermaid mermaid@11 jsdom@26``, or point
``DAYTWO_MERMAID_DIR`` at a directory with both).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.prsink.body import counterfactual_lines, extract_hash, render_pr, share_above
from pipeline.prsink.chart import Chart, cpu_chart, memory_chart, nice_ceiling
from schemas.models import RecommendationSet
from schemas.validate import validate_dict
from tests.test_prsink_sink import GI, MI, checkout_set, recommendation, recommendation_set

GOLDEN = Path(__file__).parent / "fixtures" / "prsink" / "pr-body.golden.md"
MERMAID_DIR = Path(
    os.environ.get("DAYTWO_MERMAID_DIR", Path(__file__).parent / "tools" / "mermaid")
)


def rich_set() -> dict[str, Any]:
    """A JVM container with every evidence field, and a plain sidecar."""
    app = recommendation(
        "app",
        current={
            "cpu_request_cores": 1.0,
            "cpu_limit_cores": 2.0,
            "memory_request_bytes": 2 * GI,
            "memory_limit_bytes": 2 * GI,
            "jvm_max_heap_bytes": 1536 * MI,
        },
        recommended={
            "cpu_request_cores": 0.45,
            "cpu_limit_cores": 1.2,
            "memory_request_bytes": 1280 * MI,
            "memory_limit_bytes": 1280 * MI,
            "jvm_max_heap_bytes": 896 * MI,
        },
        cost=-41.27,
    )
    app["rules"] = [
        {"id": "cpu.request.p95", "text": "CPU request = p95 (390m) x 1.15 headroom, rounded up."},
        {"id": "cpu.limit.peak", "text": "CPU limit = peak (1.05 cores) + 15%."},
        {"id": "jvm.heap.live-set", "text": "Heap = live-set peak (610Mi) x 1.4 for GC headroom."},
        {"id": "jvm.limit.covers", "text": "Memory limit covers heap + non-heap + margin."},
    ]
    app["evidence"].update(
        {
            "cpu_p50_cores": 0.21,
            "cpu_p95_cores": 0.39,
            "cpu_max_cores": 1.05,
            "memory_peak_bytes": 1100 * MI,
            "cpu_throttled_ratio_p95": 0.01,
            "cpu_throttled_ratio_max": 0.08,
            "oom_kills": 1,
            "last_oom_timestamp": 1_749_600_000.0,
            "jvm": {
                "samples": 10080,
                "collector": "G1",
                "heap_sizing": "xmx",
                "gc_overhead_p95_ratio": 0.012,
                "gc_overhead_max_ratio": 0.045,
                "gc_pause_p99_seconds": 0.085,
                "gc_pause_max_seconds": 1.25,
                "live_set_peak_bytes": 610 * MI,
                "heap_max_bytes": 1536 * MI,
                "non_heap": {
                    "metaspace_bytes": 120 * MI,
                    "code_cache_bytes": 48 * MI,
                    "thread_count": 80,
                    "thread_stack_bytes": MI,
                    "direct_memory_bytes": 32 * MI,
                    "total_bytes": 280 * MI,
                    "defaults": ["direct buffers"],
                },
                "margin_bytes": 104 * MI,
            },
            "drift": [
                {
                    "signal": "memory",
                    "detector": "adwin",
                    "detected_at": 1_749_800_000.0,
                    "regime_start": 1_749_780_000.0,
                    "direction": "up",
                    "level_before": 800.0 * MI,
                    "level_after": 1000.0 * MI,
                }
            ],
            "leak": {
                "since": 1_749_700_000.0,
                "slope_per_hour": 2.5 * MI,
                "r2": 0.93,
                "growth_share": 0.18,
            },
            "cost": {
                "cpu_core_hour_usd": 0.031611,
                "memory_gib_hour_usd": 0.004237,
                "replicas": 3,
                "monthly_per_replica_usd": -13.76,
                "node_pool": "general-purpose",
            },
        }
    )
    app["jvm_options"] = {
        "java_tool_options": "-XX:+UseG1GC -Xmx896m",
        "changed": ["-Xmx896m"],
        "previous": "-XX:+UseG1GC -Xmx1536m",
    }
    sidecar = recommendation(
        "envoy",
        current={"cpu_request_cores": 0.1, "memory_request_bytes": 128 * MI},
        recommended={"cpu_request_cores": 0.05, "memory_request_bytes": 96 * MI},
        cost=-1.12,
    )
    return recommendation_set(app, sidecar)


def test_golden_body() -> None:
    title, body = render_pr(rich_set())
    text = f"# {title}\n\n{body}\n"
    if os.environ.get("DAYTWO_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(text, encoding="utf-8")
    assert text == GOLDEN.read_text(encoding="utf-8")


def test_the_rich_set_honours_the_contract() -> None:
    validate_dict(RecommendationSet, rich_set())  # the golden input is a real message


def test_body_has_every_section_a_reviewer_needs() -> None:
    rec_set = rich_set()
    _, body = render_pr(rec_set)
    app = body.split("### Container `envoy`")[0]
    for heading in ("Why", "Evidence", "Cost", "Risk", "With the new values over the same window"):
        assert f"**{heading}**" in app
    assert (
        "| JVM options (`JAVA_TOOL_OPTIONS`) | `-XX:+UseG1GC -Xmx1536m` | "
        "**`-XX:+UseG1GC -Xmx896m`** | `-Xmx896m` |"
    ) in app
    assert "- `cpu.limit.peak`: CPU limit = peak (1.05 cores) + 15%." in app
    assert "- GC overhead (pause time / wall time): p95 1.2%, worst 4.5%" in app
    assert "- GC pauses: p99 85 ms, longest 1.25 s" in app
    assert "- drift: memory rose from 800Mi to 1000Mi since 2025-06-13 02:00 UTC" in app
    assert "- suspected memory leak: working set climbing 2.5Mi/h" in app
    assert "- per replica: -$13.76 a month" in app
    assert "- replicas: 3" in app
    assert "- total: **-$41.27 a month**" in app
    assert "node pool `general-purpose`" in app
    assert "- OOM kills: 1 (last at 2025-06-11 00:00 UTC)" in app
    assert "- the container was OOM-killed within the window" in app
    assert extract_hash(body) == rec_set["hash"]
    assert body.count("```mermaid") == 4  # CPU and memory for both containers


# -- Mermaid ------------------------------------------------------------------------------

_NUMBER = r"-?\d+(?:\.\d+)?"
_ARRAY = re.compile(rf"^\[({_NUMBER}(?:, {_NUMBER})*)\]$")


def parse_xychart(block: str) -> dict[str, Any]:
    """A strict reading of the xychart-beta subset the renderer uses; AssertionError if not."""
    lines = block.splitlines()
    assert lines[0] == "```mermaid", "opening fence"
    assert lines[-1] == "```", "closing fence"
    assert lines[1] == "xychart-beta", "header"
    chart: dict[str, Any] = {"bars": [], "lines": []}
    for line in lines[2:-1]:
        assert line.startswith("    "), f"indent: {line!r}"
        keyword, _, rest = line.strip().partition(" ")
        if keyword == "title":
            match = re.fullmatch(r'"([^"\n]*)"', rest)
            assert match, f"title: {rest!r}"
            chart["title"] = match.group(1)
        elif keyword == "x-axis":
            match = re.fullmatch(r'\[("[^"\n]+"(?:, "[^"\n]+")*)\]', rest)
            assert match, f"x-axis: {rest!r}"
            chart["x"] = re.findall(r'"([^"]+)"', match.group(1))
        elif keyword == "y-axis":
            match = re.fullmatch(rf'"([^"\n]+)" ({_NUMBER}) --> ({_NUMBER})', rest)
            assert match, f"y-axis: {rest!r}"
            chart["y"] = (float(match.group(2)), float(match.group(3)))
        elif keyword in ("bar", "line"):
            match = _ARRAY.fullmatch(rest)
            assert match, f"{keyword}: {rest!r}"
            chart[f"{keyword}s"].append([float(v) for v in match.group(1).split(", ")])
        else:
            raise AssertionError(f"unknown statement {keyword!r}")
    assert {"title", "x", "y"} <= chart.keys(), "title, x-axis and y-axis are required"
    low, high = chart["y"]
    assert low < high
    for series in chart["bars"] + chart["lines"]:
        assert len(series) == len(chart["x"]), "one value per category"
        assert all(low <= value <= high for value in series), "values inside the y-axis"
    assert chart["bars"], "at least one bar series"
    return chart


def mermaid_blocks(body: str) -> list[str]:
    return re.findall(r"```mermaid\n.*?\n```", body, flags=re.DOTALL)


def test_every_chart_block_is_well_formed_and_shows_the_evidence() -> None:
    rec_set = rich_set()
    _, body = render_pr(rec_set)
    blocks = mermaid_blocks(body)
    charts = [parse_xychart(block) for block in blocks]
    cpu = charts[0]
    assert cpu["x"] == [
        "usage p50",
        "usage p95",
        "usage peak",
        "request now",
        "request new",
        "limit now",
        "limit new",
    ]
    assert cpu["bars"] == [[210, 390, 1050, 1000, 450, 2000, 1200]]
    assert cpu["lines"] == [[450] * 7, [1200] * 7]
    memory = charts[1]
    assert memory["x"][:2] == ["working-set peak", "JVM live-set peak"]
    assert memory["bars"][0][:2] == [1100, 610]
    assert memory["x"][-2:] == ["heap now", "heap new"]
    assert memory["bars"][0][-2:] == [1536, 896]


@pytest.mark.parametrize(
    "broken",
    [
        '```mermaid\nxychart-beta\n    title "t"\n    x-axis ["a", "b"]\n'
        '    y-axis "u" 0 --> 10\n    bar [1]\n```',  # one value short
        '```mermaid\nxychart-beta\n    title "t"\n    x-axis ["a"]\n'
        '    y-axis "u" 0 --> 10\n    bar [11]\n```',  # above the axis
        '```mermaid\nxychart-beta\n    title "a "quoted" t"\n    x-axis ["a"]\n'
        '    y-axis "u" 0 --> 10\n    bar [1]\n```',  # quote inside the title
        '```mermaid\nxychart-beta\n    x-axis ["a"]\n    bar [1]\n```',  # no title / y-axis
    ],
)
def test_the_checker_rejects_broken_blocks(broken: str) -> None:
    with pytest.raises(AssertionError):
        parse_xychart(broken)


finite = st.floats(min_value=0.0, max_value=64.0, allow_nan=False, allow_infinity=False)
memory_bytes = st.integers(min_value=1, max_value=512 * GI)


@settings(max_examples=150, deadline=None)
@given(
    p50=finite,
    spread=st.tuples(finite, finite),
    memory_peak=memory_bytes,
    request=st.one_of(st.none(), finite.filter(lambda v: v > 0)),
    limit=st.one_of(st.none(), memory_bytes),
    container=st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9._\"-]{0,20}[A-Za-z0-9])?", fullmatch=True),
)
def test_charts_are_well_formed_for_any_values(
    p50: float,
    spread: tuple[float, float],
    memory_peak: int,
    request: float | None,
    limit: int | None,
    container: str,
) -> None:
    rec = recommendation(
        "app",
        current={"cpu_request_cores": 0.5, "memory_limit_bytes": GI},
        recommended={"cpu_request_cores": request, "memory_limit_bytes": limit},
    )
    rec["container"] = container
    rec["evidence"].update(
        {
            "cpu_p50_cores": p50,
            "cpu_p95_cores": p50 + spread[0],
            "cpu_max_cores": p50 + spread[0] + spread[1],
            "memory_peak_bytes": memory_peak,
        }
    )
    for chart in (cpu_chart(rec), memory_chart(rec)):
        assert chart is not None
        parsed = parse_xychart(chart.mermaid())
        assert parsed["x"] == list(chart.categories)
    cpu = cpu_chart(rec)
    assert cpu is not None
    # Bars are the evidence itself, in millicores (2 decimals shown).
    assert parse_xychart(cpu.mermaid())["bars"][0][2] == pytest.approx(
        (p50 + spread[0] + spread[1]) * 1000, abs=0.006
    )


def test_nice_ceiling_is_at_or_above_and_round() -> None:
    for value, expected in ((0.3, 0.5), (1.0, 1.0), (1.01, 2.0), (2.2, 2.5), (780, 1000)):
        assert nice_ceiling(value) == expected
    assert Chart("t", "u", ("a",), (0.0,), ()).y_max() == 1.0


def _mermaid_parser_dir() -> Path:
    if shutil.which("node") is None or not (MERMAID_DIR / "node_modules" / "mermaid").is_dir():
        pytest.skip(
            "Mermaid's parser is not installed: npm install --prefix tests/tools/mermaid "
            "mermaid@11 jsdom@26 (or set DAYTWO_MERMAID_DIR)"
        )
    return MERMAID_DIR


_PARSE_SCRIPT = """
import { JSDOM } from 'jsdom';
const dom = new JSDOM('<!doctype html><html><body></body></html>');
globalThis.window = dom.window;
globalThis.document = dom.window.document;
const { default: mermaid } = await import('mermaid');
let input = '';
for await (const chunk of process.stdin) input += chunk;
const results = [];
for (const source of JSON.parse(input)) {
  try {
    const parsed = await mermaid.parse(source);
    results.push({ ok: true, type: parsed.diagramType });
  } catch (error) {
    results.push({ ok: false, error: String(error.message || error).slice(0, 300) });
  }
}
console.log(JSON.stringify(results));
"""


def mermaid_parse(sources: list[str]) -> list[dict[str, Any]]:
    """Mermaid's own parser on each source (without the fence)."""
    directory = _mermaid_parser_dir()
    completed = subprocess.run(
        ["node", "--input-type=module", "--eval", _PARSE_SCRIPT],
        cwd=directory,
        input=json.dumps(sources),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    results: list[dict[str, Any]] = json.loads(completed.stdout.strip().splitlines()[-1])
    return results


@pytest.mark.integration
def test_mermaid_itself_parses_every_chart() -> None:
    blocks = mermaid_blocks(render_pr(rich_set())[1]) + mermaid_blocks(render_pr(checkout_set())[1])
    sources = [block.removeprefix("```mermaid\n").removesuffix("\n```") for block in blocks]
    broken = sources[0].replace("    bar [", "    bar [1, ", 1).replace("]", "", 1)
    results = mermaid_parse([*sources, broken])
    assert results[:-1] == [{"ok": True, "type": "xychart"}] * len(sources)
    assert results[-1]["ok"] is False  # the parser does reject a broken block


# -- counterfactual -------------------------------------------------------------------------


def test_share_above_reads_the_percentiles() -> None:
    assert share_above(1.0, 0.1, 0.3, 0.9) == ("no sample", 0.0)
    assert share_above(0.9, 0.1, 0.3, 0.9) == ("no sample", 0.0)
    assert share_above(0.3, 0.1, 0.3, 0.9) == ("at most 5% of samples", 0.05)
    assert share_above(0.2, 0.1, 0.3, 0.9)[1] == 0.5
    assert share_above(0.05, 0.1, 0.3, 0.9) == ("more than half of the samples", None)


@settings(max_examples=200, deadline=None)
@given(p50=finite, gaps=st.tuples(finite, finite), low=finite, step=finite.filter(lambda v: v > 0))
def test_a_higher_value_never_leaves_more_samples_above_it(
    p50: float, gaps: tuple[float, float], low: float, step: float
) -> None:
    p95, peak = p50 + gaps[0], p50 + gaps[0] + gaps[1]
    order = {0.0: 0, 0.05: 1, 0.5: 2, None: 3}
    lower = order[share_above(low, p50, p95, peak)[1]]
    higher = order[share_above(low + step, p50, p95, peak)[1]]
    assert higher <= lower


def test_counterfactual_uses_the_new_values_and_counts_samples() -> None:
    rec = copy.deepcopy(checkout_set()["recommendations"][0])
    lines = counterfactual_lines(rec)
    assert lines[0] == (
        "- CPU request 348m: at most 5% of samples (≤ 1,008 of 20,160) would have used more "
        "CPU than requested"
    )
    # The memory limit is unchanged (null): the one in force (1Gi) is what counts.
    assert any(
        line.startswith("- memory limit 1Gi: no sample reaching the limit") for line in lines
    )
    rec["recommended"]["memory_limit_bytes"] = 256 * MI  # below the 401Mi peak
    lines = counterfactual_lines(rec)
    assert (
        "- memory limit 256Mi: at least the peak sample (401Mi) would have been at the limit"
        in ("\n".join(lines))
    )
    assert lines[-1].startswith("- _Derived from the window's percentiles")
