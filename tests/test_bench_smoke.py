"""Smoke tests of bench/: every benchmark runs with tiny sizes, so none of them rots.

No timing is asserted (the numbers depend on the machine); what is checked is that each
benchmark measured what it says (samples counted, sizes positive, proposals found, every
recommender scored) and recorded its block in the markdown file it was given.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import backfill, drift_latency, quality, state_size, throughput
from bench.common import machine, marker, record, spread
from bench.profiling import STAGES, parse_collapsed, summarise_stacks
from bench.shapes import SHAPES
from tests.prom_helpers import prometheus_available


def recorded(doc: Path, benchmark: str) -> str:
    """The text of ``doc`` after the benchmark's marker (its newest block first)."""
    text = doc.read_text(encoding="utf-8")
    assert marker(benchmark) in text
    after = text.split(marker(benchmark), 1)[1]
    assert "- command: `.venv/bin/python -m bench." in after
    assert "- machine: " in after
    return after


def test_record_inserts_the_newest_block_first_under_the_marker(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# title\n\n## A\n\n{marker('a')}\n\n## B\n\n{marker('b')}\n", encoding="utf-8")
    host = machine()
    record(doc, "a", command="first", host=host, body="body one")
    record(doc, "a", command="second", host=host, body="body two")
    record(doc, "c", command="third", host=host, body="body three")
    text = doc.read_text(encoding="utf-8")
    section_a = text.split(marker("a"), 1)[1].split("## B", 1)[0]
    assert section_a.index("body two") < section_a.index("body one")
    assert "body three" not in section_a
    assert text.rstrip().endswith("body three")
    assert text.startswith("# title")


def test_spread_reports_median_and_range() -> None:
    summary = spread([3.0, 1.0, 2.0, 10.0])
    assert summary.median == 2.5
    assert (summary.low, summary.high, summary.runs) == (1.0, 10.0, 4)
    assert summary.relative_spread == pytest.approx(9.0 / 2.5)


def test_collapsed_stacks_are_summarised_by_stage() -> None:
    text = (
        "<module> (pipeline/cli.py:1);handle (pipeline/processor.py:90);"
        "decode_container_batch (schemas/validate.py:254) 3\n"
        "<module> (pipeline/cli.py:1);handle (pipeline/processor.py:90);"
        "apply (pipeline/core/engine.py:200);apply (pipeline/core/window.py:671) 5\n"
        "<module> (pipeline/cli.py:1);select (selectors.py:468) 2\n"
    )
    summary = summarise_stacks(parse_collapsed(text))
    labels = {label for label, *_ in STAGES}
    assert summary.total == 10
    handle = next(label for label in labels if label.startswith("Processor.handle"))
    assert summary.inclusive[handle] == 8
    shares = dict(summary.stage_rows())
    assert shares[handle] == "80.0%"
    assert shares["outside the processor (Faust, aiokafka, event loop, producer)"] == "20.0%"
    assert summary.hottest(1) == [("apply (core/window.py)", "50.0%")]


@pytest.mark.integration
def test_throughput_quick(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    report = throughput.main(["--quick", "--no-profile", "--doc", str(doc)])
    assert all(stage.rate > 0 for stage in report.stages)
    assert {s.unit for s in report.stages} == {"sample", "call"}
    [e2e] = report.end_to_end
    assert e2e.samples == report.config.samples
    assert e2e.cpu_seconds > 0
    assert e2e.wall_seconds > 0
    assert "samples per worker CPU-second" in recorded(doc, "throughput")


def test_state_size_quick(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    report = state_size.main(["--quick", "--doc", str(doc)])
    assert report is not None
    assert set(report.serialised) == set(state_size.TEMPLATE_SHAPES)
    assert all(size > 500 for size in report.serialised.values())
    assert all(size > 0 for size in report.in_memory.values())
    assert [f.containers for f in report.fleets] == list(state_size.QUICK.fleet_sizes)
    for fleet in report.fleets:
        assert all(
            after > before for after, before in zip(fleet.after, fleet.baseline, strict=True)
        )
    assert "serialised bytes" in recorded(doc, "state_size")


def test_drift_latency_quick(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    report = drift_latency.main(["--quick", "--doc", str(doc)])
    assert len(report.cases) == 3 * 2
    for case in report.cases:
        # a doubled signal is always proposed higher, within the give-up window
        assert case.proposed_after is not None, case
        assert case.after is not None
        assert case.before is not None
        assert case.after > case.before
    assert "proposal after (trace min)" in recorded(doc, "drift_latency")


def test_quality_quick(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    chart = tmp_path / "pareto.png"
    report = quality.main(["--quick", "--doc", str(doc), "--chart", str(chart)])
    [generated] = report.generated
    assert set(generated) == set(quality.recommenders())
    for scores in generated.values():
        assert scores.metrics.scored_samples > 0
        assert scores.metrics.simulated_oom_kills is not None  # the generated set has memory
    assert set(report.per_shape) == set(SHAPES)
    assert chart.read_bytes().startswith(b"\x89PNG")
    assert "proposals / container-week" in recorded(doc, "quality")


@pytest.mark.integration
@pytest.mark.skipif(
    not prometheus_available(), reason="needs /usr/bin/prometheus and /usr/bin/promtool"
)
def test_backfill_quick(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    report = backfill.main(["--quick", "--doc", str(doc), "--cache", str(tmp_path / "cache")])
    assert isinstance(report, backfill.BackfillReport)
    [one] = report.runs
    assert one.queries > 0
    assert one.series > 0
    assert one.samples > 0
    assert one.containers > 0
    assert "PromQL queries" in recorded(doc, "backfill")
