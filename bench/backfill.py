"""Backfill: analyse 14 days x 1,000 workloads of history from a real Prometheus.

Setup (cached, not measured): ``tests/prom_helpers.py`` generates a seeded cluster
(Deployments, StatefulSets, DaemonSets, CronJobs with cAdvisor and kube-state-metrics
series on a 5-minute grid), writes it as OpenMetrics, one file per 18-hour block window,
and backfills each with ``promtool tsdb create-blocks-from openmetrics`` while the next is
written. 18-hour blocks are what a Prometheus with the default 15-day retention compacts
two weeks of history into. The TSDB is kept under ``$XDG_CACHE_HOME/daytwo-bench``
(``~/.cache/daytwo-bench``) keyed by seed, size, length and block size, so a rerun skips
it.

Measured, per run (a fresh :class:`~agents.prometheus.PromQLClient` against one started
``prometheus``): :meth:`~agents.prometheus.PrometheusSource.backfill` over the whole
range, every batch folded into one :class:`~pipeline.core.engine.ContainerEngine` per
container as it arrives, then every container evaluated at its last sample (what
``daytwo analyze`` does with a trace). Reported: wall time (and the part spent in the
engines), PromQL queries and series returned (the client's counters), the largest range
answer, samples and containers.

Run: ``.venv/bin/python -m bench.backfill [--quick]`` (needs /usr/bin/prometheus and
/usr/bin/promtool, the Debian ``prometheus`` package).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from agents.prometheus import PrometheusSource, PrometheusSourceConfig, PromQLClient
from bench.common import (
    chosen_config,
    echo,
    machine,
    markdown_table,
    parser,
    print_table,
    record_unless_disabled,
    spread,
)
from pipeline.core.engine import ContainerEngine
from pipeline.core.profiles import BALANCED
from pipeline.core.sizing import CurrentResources
from pipeline.core.window import SampleRun
from schemas.models import ContainerSample
from tests.prom_helpers import (
    build_prometheus,
    generate_cluster,
    prometheus_available,
    running_prometheus,
)

CONTAINERS_PER_WORKLOAD: Final = 2.2
"""About how many concurrent containers the generator makes per workload (replicas x
sidecars; a CronJob counts once): its ``containers`` argument is workloads x this."""
TARGET_SECONDS: Final = 600.0
FOLD_SAMPLES: Final = 288
"""Samples per container folded at once (a day of the 5-minute grid)."""


@dataclass(frozen=True)
class BackfillConfig:
    """Sizes of one backfill benchmark."""

    workloads: int
    days: float
    runs: int
    interval_seconds: int = 300
    seed: int = 14
    #: TSDB block size: 18 h, the largest block a Prometheus with the default 15-day
    #: retention compacts into (block ranges 2 h x 3^n, at most a tenth of the retention)
    block_seconds: int = 18 * 3600


QUICK: Final = BackfillConfig(workloads=8, days=0.25, runs=1)
FULL: Final = BackfillConfig(workloads=1000, days=14.0, runs=1)


def cache_root() -> Path:
    """Where generated TSDBs are kept between runs."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "daytwo-bench"


@dataclass(frozen=True)
class Dataset:
    """A backfilled TSDB and what it holds."""

    tsdb: Path
    start: float
    end: float
    workloads: int
    pod_containers: int
    setup_seconds: dict[str, float]
    cached: bool


def _dataset(directory: Path, meta: dict[str, Any], *, cached: bool) -> Dataset:
    """A :class:`Dataset` from the cache entry's ``meta.json`` contents."""
    return Dataset(
        directory / "tsdb",
        meta["start"],
        meta["end"],
        meta["workloads"],
        meta["pod_containers"],
        meta["setup_seconds"],
        cached=cached,
    )


def dataset(config: BackfillConfig, root: Path) -> Dataset:
    """The TSDB for ``config``: from the cache, else generated and backfilled into it."""
    containers = round(config.workloads * CONTAINERS_PER_WORKLOAD)
    hours = config.days * 24
    key = (
        f"prom-s{config.seed}-c{containers}-h{hours:g}-i{config.interval_seconds}"
        f"-b{config.block_seconds}"
    )
    directory = root / key
    meta_path = directory / "meta.json"
    if meta_path.exists():
        return _dataset(directory, json.loads(meta_path.read_text()), cached=True)
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    echo(f"generating {config.days:g} days x ~{config.workloads} workloads (cached in {directory})")
    began = time.perf_counter()
    cluster = generate_cluster(
        seed=config.seed, containers=containers, hours=hours, interval=config.interval_seconds
    )
    timings = {"generate": time.perf_counter() - began}
    timings |= build_prometheus(cluster, directory, block_seconds=config.block_seconds)
    meta = {
        "start": float(cluster.start),
        "end": float(cluster.end),
        "workloads": len({c.workload for c in cluster.containers}),
        "pod_containers": len(cluster.containers),
        "setup_seconds": timings,
    }
    meta_path.write_text(json.dumps(meta))  # written last: marks the cache complete
    return _dataset(directory, meta, cached=False)


@dataclass(frozen=True)
class BackfillRun:
    """One backfill + analysis."""

    seconds: float
    engine_seconds: float
    queries: int
    series: int
    largest_range_series: int
    largest_range_points: int
    batches: int
    samples: int
    containers: int
    recommendations: int


def analyse(url: str, data: Dataset, config: BackfillConfig) -> BackfillRun:
    """Backfill the whole range and fold it into one engine per container.

    ``engine_seconds`` is timed around the consumer's loop; the source's helper thread
    fetches the next chunk meanwhile, so it includes waiting for the GIL.
    """
    engines: dict[tuple[str, str], ContainerEngine] = {}
    batches = samples = 0
    engine_seconds = 0.0
    began = time.perf_counter()
    # Prometheus runs on this host, as daytwo would run next to it in the cluster: no
    # gzip (over a loopback it only costs CPU on both sides of the same two cores).
    with PromQLClient(url, timeout_seconds=300, gzip_responses=False) as client:
        source = PrometheusSource(
            client,
            PrometheusSourceConfig(
                cluster="bench",
                step_seconds=float(config.interval_seconds),
                scrape_interval_seconds=float(config.interval_seconds),
            ),
        )
        # Each container's samples are folded in runs (ContainerEngine.apply_run, the
        # worker's path), FOLD_SAMPLES at a time: the source's batches hold one step each.
        pending: dict[tuple[str, str], list[ContainerSample]] = {}

        def fold(key: tuple[str, str], run: list[ContainerSample]) -> None:
            engine = engines.get(key)
            if engine is None:
                engine = engines[key] = ContainerEngine(BALANCED, workload=key[0], container=key[1])
            engine.apply_run(SampleRun.of(run))
            run.clear()

        for batch in source.backfill(data.start, data.end):
            folded = time.perf_counter()
            batches += 1
            for sample in batch.samples:
                key = (batch.workload, sample.container)
                run = pending.setdefault(key, [])
                run.append(sample)
                if len(run) >= FOLD_SAMPLES:
                    fold(key, run)
                samples += 1
            engine_seconds += time.perf_counter() - folded
        folded = time.perf_counter()
        for key, run in pending.items():
            if run:
                fold(key, run)
        recommendations = 0
        for engine in engines.values():
            last = engine.window.last_timestamp
            if last is not None and engine.evaluate(last, CurrentResources()).recommendation:
                recommendations += 1
        engine_seconds += time.perf_counter() - folded
        return BackfillRun(
            seconds=time.perf_counter() - began,
            engine_seconds=engine_seconds,
            queries=client.queries_issued,
            series=client.series_returned,
            largest_range_series=client.largest_range_series,
            largest_range_points=client.largest_range_points,
            batches=batches,
            samples=samples,
            containers=len(engines),
            recommendations=recommendations,
        )


@dataclass
class BackfillReport:
    """Everything the command prints and records."""

    config: BackfillConfig
    data: Dataset
    runs: list[BackfillRun]
    prometheus_start_seconds: float


def run(config: BackfillConfig, root: Path | None = None) -> BackfillReport | str:
    """Run the benchmark, or say why it cannot run here."""
    if not prometheus_available():
        return "/usr/bin/prometheus or /usr/bin/promtool is absent (Debian package `prometheus`)"
    data = dataset(config, root if root is not None else cache_root())
    runs = []
    with tempfile.TemporaryDirectory(prefix="daytwo-bench-prom-") as tmp:
        began = time.perf_counter()
        with running_prometheus(data.tsdb, Path(tmp)) as server:
            started = time.perf_counter() - began
            for index in range(config.runs):
                echo(f"backfill run {index + 1}/{config.runs}")
                runs.append(analyse(server.url, data, config))
    return BackfillReport(config, data, runs, started)


def render(report: BackfillReport) -> str:
    """Print the table; return the markdown body of the result block."""
    config, data, runs = report.config, report.data, report.runs
    seconds = spread([r.seconds for r in runs])
    first = runs[0]
    cold = sum(data.setup_seconds.values()) + report.prometheus_start_seconds + first.seconds
    rows = [
        ("history", f"{config.days:g} days, {config.interval_seconds} s grid"),
        ("workloads / pod containers generated", f"{data.workloads:,} / {data.pod_containers:,}"),
        ("containers analysed (workload x container)", f"{first.containers:,}"),
        ("samples analysed", f"{first.samples:,} in {first.batches:,} batches"),
        ("backfill + analysis wall time (s)", seconds.text("{:.1f}")),
        ("  of which in the engines (s)", spread([r.engine_seconds for r in runs]).text("{:.1f}")),
        (
            "  of which Prometheus + the source (s)",
            spread([r.seconds - r.engine_seconds for r in runs]).text("{:.1f}"),
        ),
        ("PromQL queries", f"{first.queries:,}"),
        ("series returned", f"{first.series:,}"),
        (
            "largest range answer",
            f"{first.largest_range_series:,} series x {first.largest_range_points:,} points",
        ),
        ("containers with a recommendation", f"{first.recommendations:,}"),
        (
            f"target < {TARGET_SECONDS / 60:.0f} min",
            "met" if seconds.median < TARGET_SECONDS else "missed",
        ),
        ("prometheus start (s, not measured)", f"{report.prometheus_start_seconds:.1f}"),
        (
            "setup: generate / OpenMetrics (promtool alongside) / promtool after (s)",
            " / ".join(
                f"{data.setup_seconds.get(k, 0.0):.0f}"
                for k in ("generate", "write_openmetrics", "promtool_backfill")
            )
            + (" (from the cache)" if data.cached else ""),
        ),
        (
            "first (cold) run: setup + start + one analysis (s)",
            f"{cold:.0f}" + (" (setup from an earlier run)" if data.cached else ""),
        ),
    ]
    print_table("daytwo backfill from a real Prometheus", ("measure", "value"), rows)
    return markdown_table(("measure", "value"), rows)


def main(argv: Sequence[str] | None = None) -> BackfillReport | str:
    """``python -m bench.backfill``."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    options_parser = parser("Backfill: 14 days x 1,000 workloads from a real Prometheus.")
    options_parser.add_argument("--cache", type=Path, default=None, help="TSDB cache directory")
    options = options_parser.parse_args(args_list)
    config = chosen_config(options, quick=QUICK, full=FULL)
    host = machine()
    report = run(config, options.cache)
    if isinstance(report, str):
        print(f"backfill benchmark skipped: {report}")
        return report
    body = render(report)
    record_unless_disabled(options, "backfill", args_list, host=host, body=body)
    return report


if __name__ == "__main__":
    main()
