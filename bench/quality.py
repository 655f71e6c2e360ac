"""Quality: daytwo's profiles against the ``vpa`` and ``krr`` baselines, replayed.

The same harness as ``daytwo backtest`` (:func:`pipeline.batch.backtest_series`: every
hour of trace time each recommender sees only the past, the next hour is scored against
the value in force, the first day is warm-up) runs over

- the NAB CPU series in ``../shared/data/nab`` (``--nab DIR``; real AWS CloudWatch CPU of
  2-vCPU instances, read by :func:`pipeline.batch.nab_trace`; CPU only, so no memory
  metrics), skipped with a message when the directory is absent;
- the generated set of bench/shapes.py (steady, daily, weekly, bursty, step up, step
  down, leak, JVM with GC pressure; CPU and memory; JVM columns are not read by the
  backtest yet), one container per shape, once per seed (``--runs``).

Reported per set and recommender: mean CPU request (cores, pooled over samples), share
of samples above the CPU request (under-provisioned), mean memory limit, simulated OOM
kills (samples above the memory limit in force), and proposals per container-week (mean
and the worst week). A Pareto chart (cost against risk, one point per recommender x
profile) is written to docs/pareto.png.

Run: ``.venv/bin/python -m bench.quality [--quick]``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bench.common import (
    MIB,
    REPO_ROOT,
    chosen_config,
    echo,
    markdown_table,
    parser,
    print_table,
    run_and_record,
    spread,
)
from bench.shapes import SHAPES, generated_set
from pipeline.batch import backtest_series, nab_trace, trace_series
from pipeline.core.backtest import BacktestMetrics, ContainerSeries
from pipeline.core.profiles import BUILTIN_PROFILES

NAB_DIR: Final = REPO_ROOT.parent / "shared" / "data" / "nab"
PARETO_PATH: Final = REPO_ROOT / "docs" / "pareto.png"


@dataclass(frozen=True)
class QualityConfig:
    """Sizes of one quality benchmark."""

    days: float
    interval_seconds: float
    runs: int
    nab_limit: int | None = None
    """Use at most this many NAB series (None: all)."""


QUICK: Final = QualityConfig(days=2.5, interval_seconds=600.0, runs=1, nab_limit=1)
FULL: Final = QualityConfig(days=14.0, interval_seconds=60.0, runs=3)


@dataclass(frozen=True)
class Scores:
    """One recommender on one set (one seed)."""

    metrics: BacktestMetrics
    containers: int

    @property
    def proposals_per_container_week(self) -> float:
        """Proposals per container per simulated week."""
        weeks = sum(len(w) for w in self.metrics.proposals_per_week.values())
        return self.metrics.proposals / weeks if weeks else 0.0


def recommenders() -> list[str]:
    """Row names: ``daytwo:<profile>`` for each built-in profile, then the baselines."""
    return [f"daytwo:{name}" for name in BUILTIN_PROFILES] + ["vpa", "krr"]


def score_set(series: Sequence[ContainerSeries]) -> dict[str, Scores]:
    """Every recommender over ``series`` (vpa and krr do not depend on the profile)."""
    scores: dict[str, Scores] = {}
    for name, profile in BUILTIN_PROFILES.items():
        results = backtest_series(series, profile)
        scores[f"daytwo:{name}"] = Scores(results["daytwo"], len(series))
        scores.setdefault("vpa", Scores(results["vpa"], len(series)))
        scores.setdefault("krr", Scores(results["krr"], len(series)))
    return scores


def nab_series(directory: Path, limit: int | None) -> list[ContainerSeries] | str:
    """The NAB CPU series as containers, or why there are none."""
    if not directory.is_dir():
        return f"NAB directory {directory} is absent; the NAB part is skipped"
    paths = sorted(directory.glob("*cpu_utilization*.csv"))[: limit if limit else None]
    if not paths:
        return f"no *cpu_utilization*.csv series in {directory}; the NAB part is skipped"
    series: list[ContainerSeries] = []
    for path in paths:
        series.extend(trace_series(nab_trace(path)))
    return series


@dataclass
class QualityReport:
    """Scores per set per seed, and per shape for the per-shape table."""

    config: QualityConfig
    nab: dict[str, Scores] | str
    generated: list[dict[str, Scores]]
    per_shape: dict[str, dict[str, Scores]]
    seconds: float
    chart: Path | None


def run(config: QualityConfig, chart_path: Path | None, nab_dir: Path) -> QualityReport:
    """Score every set; draw the chart if ``chart_path``."""
    began = time.perf_counter()
    found = nab_series(nab_dir, config.nab_limit)
    if isinstance(found, str):
        echo(found)
        nab: dict[str, Scores] | str = found
    else:
        echo(f"NAB: {len(found)} series")
        nab = score_set(found)
    generated = []
    per_shape: dict[str, dict[str, Scores]] = {}
    for seed in range(config.runs):
        echo(f"generated set, seed {seed}")
        series = generated_set(
            days=config.days, interval_seconds=config.interval_seconds, seed=seed
        )
        generated.append(score_set(series))
        if seed == 0:
            for one in series:
                shape = one.workload.rsplit("/", 1)[1]
                per_shape[shape] = score_set([one])
    chart = None
    if chart_path is not None:
        chart = draw_pareto(nab, generated, chart_path)
    return QualityReport(config, nab, generated, per_shape, time.perf_counter() - began, chart)


# -- tables -------------------------------------------------------------------------------


def _fmt(value: float | None, pattern: str) -> str:
    return "n/a" if value is None else pattern.format(value)


def _median(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return spread(known).median if known else None


def _range(values: Sequence[float | None], pattern: str) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "n/a"
    summary = spread(known)
    if summary.runs == 1 or summary.low == summary.high:
        return pattern.format(summary.median)
    low, high = pattern.format(summary.low), pattern.format(summary.high)
    return f"{pattern.format(summary.median)} ({low}..{high})"


def summary_rows(runs: Sequence[dict[str, Scores]]) -> list[tuple[str, ...]]:
    """One row per recommender: medians over the runs (min..max where they differ)."""
    rows: list[tuple[str, ...]] = []
    for name in recommenders():
        scores = [run[name] for run in runs]
        memory = [s.metrics.mean_memory_limit_bytes for s in scores]
        kills = [s.metrics.simulated_oom_kills for s in scores]
        rows.append(
            (
                name,
                _range([s.metrics.mean_cpu_request_cores for s in scores], "{:.3f}"),
                _range([s.metrics.cpu_under_provisioned_share for s in scores], "{:.2%}"),
                _range([None if m is None else m / MIB for m in memory], "{:,.0f}"),
                _range([None if k is None else float(k) for k in kills], "{:,.0f}"),
                _range([s.proposals_per_container_week for s in scores], "{:.2f}"),
                _range([float(s.metrics.max_proposals_per_week) for s in scores], "{:.0f}"),
            )
        )
    return rows


SUMMARY_HEADERS: Final = (
    "recommender",
    "mean CPU request (cores)",
    "CPU under-provisioned",
    "mean memory limit (MiB)",
    "simulated OOM kills",
    "proposals / container-week",
    "most in one week",
)


def shape_rows(per_shape: dict[str, dict[str, Scores]]) -> list[tuple[str, ...]]:
    """balanced vs vpa vs krr per shape (seed 0)."""
    rows: list[tuple[str, ...]] = []
    for shape in SHAPES:
        if shape not in per_shape:
            continue
        for name in ("daytwo:balanced", "vpa", "krr"):
            metrics = per_shape[shape][name].metrics
            rows.append(
                (
                    shape,
                    name,
                    _fmt(metrics.mean_cpu_request_cores, "{:.3f}"),
                    _fmt(metrics.cpu_under_provisioned_share, "{:.2%}"),
                    _fmt(
                        None
                        if metrics.mean_memory_limit_bytes is None
                        else metrics.mean_memory_limit_bytes / MIB,
                        "{:,.0f}",
                    ),
                    _fmt(
                        None
                        if metrics.simulated_oom_kills is None
                        else float(metrics.simulated_oom_kills),
                        "{:,.0f}",
                    ),
                    str(metrics.proposals),
                )
            )
    return rows


SHAPE_HEADERS: Final = (
    "shape",
    "recommender",
    "mean CPU request",
    "CPU under",
    "mean memory limit (MiB)",
    "OOM kills",
    "proposals",
)


# -- chart --------------------------------------------------------------------------------


Point = tuple[float | None, float | None, float | None, float | None]
"""(CPU cost, CPU risk, memory cost, memory risk) of one recommender; None: no signal."""


Panel = tuple[str, dict[str, tuple[float, float]], str, str]


def _cpu_panel(title: str, points: dict[str, Point], unit: str) -> Panel:
    """A CPU cost/risk panel: (title, name -> (cores, % above request), x label, y label)."""
    return (
        title,
        {n: (p[0], p[1] * 100) for n, p in points.items() if p[0] is not None and p[1] is not None},
        f"mean CPU request (cores per {unit})  → cost",
        "samples above the CPU request (%)  → risk",
    )


def _points(runs: Sequence[dict[str, Scores]]) -> dict[str, Point]:
    """name -> (CPU cost, CPU risk, memory cost MiB, memory risk kills), medians over runs."""
    points = {}
    for name in recommenders():
        scores = [run[name].metrics for run in runs]
        memory = _median([m.mean_memory_limit_bytes for m in scores])
        points[name] = (
            _median([m.mean_cpu_request_cores for m in scores]),
            _median([m.cpu_under_provisioned_share for m in scores]),
            None if memory is None else memory / MIB,
            _median(
                [
                    None if m.simulated_oom_kills is None else float(m.simulated_oom_kills)
                    for m in scores
                ]
            ),
        )
    return points


def pareto_optimal(points: dict[str, tuple[float, float]]) -> set[str]:
    """Names no other point beats on both cost and risk (and strictly on one)."""
    optimal = set()
    for name, (cost, risk) in points.items():
        dominated = any(
            other != name and c <= cost and r <= risk and (c < cost or r < risk)
            for other, (c, r) in points.items()
        )
        if not dominated:
            optimal.add(name)
    return optimal


def _panel(axis: object, points: dict[str, tuple[float, float]], colours: dict[str, str]) -> None:
    """Scatter ``points`` on ``axis``; names of points that coincide share one label."""
    labels: dict[tuple[float, float], list[str]] = {}
    for name, (x, y) in points.items():
        axis.scatter(x, y, color=colours.get(name, "tab:blue"), s=40)  # type: ignore[attr-defined]  # matplotlib Axes
        labels.setdefault((round(x, 6), round(y, 6)), []).append(name.removeprefix("daytwo:"))
    for (x, y), names in labels.items():
        axis.annotate(  # type: ignore[attr-defined]  # matplotlib Axes
            ", ".join(names), (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points"
        )
    axis.grid(visible=True, alpha=0.3)  # type: ignore[attr-defined]  # matplotlib Axes


def draw_pareto(
    nab: dict[str, Scores] | str, generated: Sequence[dict[str, Scores]], path: Path
) -> Path | None:
    """Cost against risk, one point per recommender x profile: CPU on the generated set
    (mean request vs share of samples above it), CPU on the NAB series, and memory on the
    generated set (mean limit vs simulated OOM kills)."""
    try:
        import matplotlib  # noqa: PLC0415  # a dev dependency

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        echo("matplotlib is not installed (.venv/bin/pip install matplotlib): no chart")
        return None
    colours = {"vpa": "tab:red", "krr": "tab:orange"}
    points = _points(generated)
    panels = [_cpu_panel("CPU, generated set", points, "container")]
    if not isinstance(nab, str):
        panels.append(_cpu_panel("CPU, NAB series", _points([nab]), "series"))
    panels.append(
        (
            "memory, generated set",
            {n: (p[2], p[3]) for n, p in points.items() if p[2] is not None and p[3] is not None},
            "mean memory limit (MiB per container)  → cost",
            "simulated OOM kills (samples above the limit)  → risk",
        )
    )
    figure, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 5))
    for axis, (title, panel_points, x_label, y_label) in zip(axes, panels, strict=True):
        _panel(axis, panel_points, colours)
        axis.set_title(title)
        axis.set_xlabel(x_label)
        axis.set_ylabel(y_label)
    figure.suptitle("daytwo profiles (blue) vs vpa (red) and krr (orange): lower left is better")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


# -- the command ---------------------------------------------------------------------------


def render(report: QualityReport) -> str:
    """Print the tables; return the markdown body of the result block."""
    config = report.config
    parts = [
        f"Generated set: {len(SHAPES)} shapes x {config.days:g} days of "
        f"{config.interval_seconds:g} s samples, {config.runs} seed(s) (median, min..max "
        "over seeds); in force before the first proposal: a cautious hand-set spec "
        "(CPU request 2x the first day's mean, memory 1.5x its peak). Backtest step 1 h, "
        f"warm-up 1 day. Took {report.seconds:.0f} s."
    ]
    generated_rows = summary_rows(report.generated)
    print_table("quality: generated set", SUMMARY_HEADERS, generated_rows)
    parts.append(
        "Generated set (all shapes pooled):\n\n" + markdown_table(SUMMARY_HEADERS, generated_rows)
    )
    if isinstance(report.nab, str):
        print(report.nab)
        parts.append(f"NAB: {report.nab}.")
    else:
        nab_rows = summary_rows([report.nab])
        print_table("quality: NAB CPU series", SUMMARY_HEADERS, nab_rows)
        parts.append(
            "NAB CPU series (`*cpu_utilization*` in ../shared/data/nab, read as 2-vCPU "
            "instances; CPU only, so the memory columns are n/a):\n\n"
            + markdown_table(SUMMARY_HEADERS, nab_rows)
        )
    rows = shape_rows(report.per_shape)
    print_table("quality per shape (seed 0): balanced vs vpa vs krr", SHAPE_HEADERS, rows)
    parts.append(
        "Per shape (seed 0), balanced against the baselines:\n\n"
        + markdown_table(SHAPE_HEADERS, rows)
    )
    points = _points(report.generated)
    cpu_front = pareto_optimal(
        {n: (p[0], p[1]) for n, p in points.items() if p[0] is not None and p[1] is not None}
    )
    memory_front = pareto_optimal(
        {n: (p[2], p[3]) for n, p in points.items() if p[2] is not None and p[3] is not None}
    )
    front = (
        f"Pareto-optimal on the generated set: CPU {', '.join(sorted(cpu_front))}; "
        f"memory {', '.join(sorted(memory_front))}."
    )
    print(front)
    parts.append(front)
    if report.chart is not None:
        parts.append("Chart: ![cost against risk](pareto.png) (docs/pareto.png).")
    return "\n\n".join(parts)


def main(argv: Sequence[str] | None = None) -> QualityReport:
    """``python -m bench.quality``."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    options_parser = parser("Quality: profiles against vpa and krr, replayed.")
    options_parser.add_argument(
        "--nab", type=Path, default=NAB_DIR, help="directory of the NAB series"
    )
    options_parser.add_argument(
        "--chart", type=Path, default=PARETO_PATH, help="where the Pareto PNG goes"
    )
    options = options_parser.parse_args(args_list)
    config = chosen_config(options, quick=QUICK, full=FULL)
    chart = None if options.no_record and options.chart == PARETO_PATH else options.chart
    return run_and_record(
        options,
        "quality",
        args_list,
        measure=lambda: run(config, chart, options.nab),
        render=render,
    )


if __name__ == "__main__":
    main()
