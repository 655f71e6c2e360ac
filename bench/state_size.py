"""State size: bytes per tracked container (serialised and in memory) and RSS per fleet.

1. *Template windows*: a week (full) of 10 s samples of several generated shapes
   (bench/shapes.py, with a CFS throttled ratio as the cgroup agent reports it) goes
   through a :class:`~pipeline.core.engine.ContainerEngine` with evaluation on ticks, so
   every part of the state is filled: CPU and throttling histograms, memory peaks, the
   drift detectors (River ADWIN + Page-Hinkley per signal), the last proposal.
2. *Serialised*: ``len(window.to_bytes())``, what each checkpoint writes to the changelog.
3. *In memory* (tracemalloc): a restored window inside its engine, and a tracked
   container of the in-process :class:`~pipeline.processor.Processor` including the
   store's copy of its serialised state (the worker's ``memory://`` Faust table keeps
   one too).
4. *RSS*: a fresh child process per fleet size runs the in-process Processor with an
   in-memory store (no Faust, no Kafka): the store is filled with N checkpoints (as after
   changelog recovery), one agent batch per workload is handled (N containers loaded
   into the cache) and a checkpoint writes them all back. RSS is read from /proc. An idle
   real ``daytwo worker`` on the embedded broker gives the baseline Faust and aiokafka
   add; worker RSS at N = that baseline + the child's growth.

Run: ``.venv/bin/python -m bench.state_size [--quick]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import orjson

from bench.common import (
    MIB,
    agent_batches,
    chosen_config,
    container_names,
    echo,
    markdown_table,
    parser,
    print_table,
    rss_bytes,
    run_and_record,
    spread,
    workload_id,
)
from bench.shapes import cautious_spec, shape_samples
from bench.throughput import (
    ensure_isolated_topics,
    kafka,
    new_processor,
    worker_env,
)
from pipeline.core.drift import DriftConfig, DriftTracker
from pipeline.core.engine import ContainerEngine
from pipeline.core.histogram import DecayingHistogram
from pipeline.core.profiles import BALANCED
from pipeline.core.window import ContainerWindow, SampleInput
from tests.worker_helpers import MemoryStore

TARGET_BYTES_PER_CONTAINER: Final = 4096
TARGET_RSS_100K_BYTES: Final = 1024**3
TEMPLATE_SHAPES: Final = ("steady", "daily", "bursty", "step-up", "jvm-gc")
CHUNK_WORKLOADS: Final = 1000


@dataclass(frozen=True)
class StateSizeConfig:
    """Sizes of one state-size benchmark."""

    history_days: float
    interval_seconds: float
    fleet_sizes: tuple[int, ...]
    tracemalloc_copies: int
    runs: int
    idle_worker: bool = True


QUICK: Final = StateSizeConfig(
    history_days=0.5,
    interval_seconds=60.0,
    fleet_sizes=(200, 1000),
    tracemalloc_copies=50,
    runs=1,
    idle_worker=False,
)
FULL: Final = StateSizeConfig(
    history_days=7.0,
    interval_seconds=10.0,
    fleet_sizes=(10_000, 100_000),
    tracemalloc_copies=500,
    runs=3,
)


def _with_throttling(samples: list[SampleInput], limit: float) -> list[SampleInput]:
    """Add the throttled ratio a CFS quota of ``limit`` cores would show."""
    return [
        dataclasses.replace(
            s,
            cpu_throttled_ratio=round(min(1.0, max(0.0, s.cpu_usage_cores / limit - 0.8) * 2), 4),
        )
        for s in samples
    ]


def template_windows(config: StateSizeConfig) -> dict[str, bytes]:
    """Shape name -> serialised window after ``history_days`` of samples."""
    templates = {}
    for shape in TEMPLATE_SHAPES:
        samples = shape_samples(
            shape, days=config.history_days, interval_seconds=config.interval_seconds
        )
        spec = cautious_spec(samples)
        samples = _with_throttling(samples, spec.cpu_limit_cores or 1.0)
        engine = ContainerEngine(
            BALANCED,
            workload=f"bench/shapes/Deployment/{shape}",
            container="app",
            evaluate_on_ticks=True,
        )
        engine.spec = spec
        for sample in samples:
            engine.apply(sample)
        templates[shape] = engine.window.to_bytes()
    return templates


def traced_bytes_per_engine(template: bytes, copies: int) -> float:
    """tracemalloc: bytes one restored window inside its engine holds."""
    ContainerWindow.from_bytes(template)  # warm caches (River layout check) outside the trace
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [
            ContainerEngine(
                BALANCED,
                workload=workload_id(i),
                container="app",
                window=ContainerWindow.from_bytes(template),
                evaluate_on_ticks=True,
            )
            for i in range(copies)
        ]
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del kept
    return (after - before) / copies


def traced_components(template: bytes, copies: int) -> dict[str, float]:
    """tracemalloc: bytes per restored component (CPU histogram, drift detectors)."""
    state = orjson.loads(template)
    config = DriftConfig.from_sensitivity(float(state["drift_sens"]))
    builders: dict[str, Callable[[], object]] = {
        "CPU histogram (DecayingHistogram)": lambda: DecayingHistogram.from_state(state["cpu"]),
        "drift detectors (DriftTracker: River ADWIN + Page-Hinkley x 4 signals)": lambda: (
            DriftTracker.from_state(state["drift"], config)
        ),
    }
    sizes = {}
    for name, build in builders.items():
        build()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            kept = [build() for _ in range(copies)]
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        del kept
        sizes[name] = (after - before) / copies
    return sizes


def _last_timestamp(templates: Sequence[bytes]) -> float:
    last = max(ContainerWindow.from_bytes(t).last_timestamp or 0.0 for t in templates)
    return last + 10.0


def fill_fleet(
    containers: int, templates: Sequence[bytes], *, containers_per_workload: int = 2
) -> tuple[MemoryStore, object]:
    """A processor tracking ``containers`` containers, as after recovery plus one batch each.

    The store gets one checkpoint per container (cycling the templates), then one agent
    batch per workload is handled (each container is restored into the cache) and a
    checkpoint writes every window back. Returns the store and the processor.
    """
    store = MemoryStore()
    names = container_names(containers_per_workload)
    workloads = max(1, containers // containers_per_workload)
    for index in range(workloads):
        workload = workload_id(index)
        for offset, name in enumerate(names):
            template = templates[(index * containers_per_workload + offset) % len(templates)]
            store.data[f"{workload}:{name}"] = bytes(bytearray(template))
    processor = new_processor(store)
    start = _last_timestamp(templates)
    offset = 0
    for first in range(0, workloads, CHUNK_WORKLOADS):
        chunk = agent_batches(
            workloads=min(CHUNK_WORKLOADS, workloads - first),
            containers_per_workload=containers_per_workload,
            scrapes=1,
            start=start,
            first_workload=first,
        )
        for key, value in chunk:
            dead = processor.handle(key, value, partition=offset % 8, offset=offset)
            if dead is not None:
                raise RuntimeError(f"benchmark input rejected: {dead.reason}")
            offset += 1
    processor.checkpoint()
    return store, processor


def traced_bytes_per_tracked(templates: Sequence[bytes], copies: int) -> float:
    """tracemalloc: bytes per container a Processor holds (cache + store copy)."""
    fill_fleet(min(copies, 20), templates)  # warm-up outside the trace
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = fill_fleet(copies, templates)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del kept
    return (after - before) / copies


# -- child process: RSS of one fleet -------------------------------------------------------


def child_main(containers: int, templates_path: Path) -> None:
    """Fill one fleet in this fresh process; print RSS and timings as JSON."""
    templates = [bytes.fromhex(t) for t in json.loads(templates_path.read_text()).values()]
    baseline = rss_bytes()
    began = time.perf_counter()
    kept = fill_fleet(containers, templates)
    seconds = time.perf_counter() - began
    after = rss_bytes()
    print(json.dumps({"baseline": baseline, "after": after, "seconds": seconds}))
    del kept


@dataclass(frozen=True)
class FleetRss:
    """RSS of one fleet size over the runs."""

    containers: int
    baseline: list[int]
    after: list[int]
    seconds: list[float]


def measure_fleet(
    containers: int, templates: dict[str, bytes], runs: int, workdir: Path
) -> FleetRss:
    """Run :func:`child_main` ``runs`` times in fresh processes."""
    path = workdir / "templates.json"
    path.write_text(json.dumps({k: v.hex() for k, v in templates.items()}))
    baseline, after, seconds = [], [], []
    for _ in range(runs):
        completed = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.state_size",
                "--child",
                str(containers),
                "--templates",
                str(path),
            ],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        result = json.loads(completed.stdout.strip().splitlines()[-1])
        baseline.append(int(result["baseline"]))
        after.append(int(result["after"]))
        seconds.append(float(result["seconds"]))
    return FleetRss(containers, baseline, after, seconds)


def idle_worker_rss(workdir: Path) -> int | None:
    """RSS of a real ``daytwo worker`` with no containers, on the embedded broker."""
    import uuid  # noqa: PLC0415

    from pipeline.launch import start_child  # noqa: PLC0415

    with kafka() as broker:
        run_id = uuid.uuid4().hex[:8]
        prefix, app_id = f"bench-{run_id}.", f"bench-state-{run_id}"
        ensure_isolated_topics(broker, prefix, app_id, 8)
        env = worker_env(broker, prefix, app_id, workdir / run_id, port=0)
        env["DAYTWO_PARTITIONS"] = "8"
        child = start_child(f"idle-{run_id}", ["worker"], env, workdir / "logs")
        try:
            time.sleep(15.0)  # started, joined the group, assigned, idle
            if child.process.poll() is not None:
                return None
            return rss_bytes(child.process.pid)
        finally:
            child.stop(timeout=20)


# -- the command ---------------------------------------------------------------------------


@dataclass
class StateSizeReport:
    """Everything the command prints and records."""

    config: StateSizeConfig
    serialised: dict[str, int]
    in_memory: dict[str, float]
    per_tracked: float
    components: dict[str, float]
    fleets: list[FleetRss]
    idle_worker: int | None


def run(config: StateSizeConfig) -> StateSizeReport:
    """Run the whole benchmark."""
    echo("building template windows")
    templates = template_windows(config)
    serialised = {shape: len(data) for shape, data in templates.items()}
    echo("tracemalloc")
    in_memory = {
        shape: traced_bytes_per_engine(data, config.tracemalloc_copies)
        for shape, data in templates.items()
    }
    per_tracked = traced_bytes_per_tracked(list(templates.values()), config.tracemalloc_copies)
    components = traced_components(templates["daily"], config.tracemalloc_copies)
    fleets = []
    with tempfile.TemporaryDirectory(prefix="daytwo-bench-") as tmp:
        for size in config.fleet_sizes:
            echo(f"RSS with {size:,} containers")
            fleets.append(measure_fleet(size, templates, config.runs, Path(tmp)))
        idle = None
        if config.idle_worker:
            echo("idle worker RSS")
            idle = idle_worker_rss(Path(tmp))
    return StateSizeReport(config, serialised, in_memory, per_tracked, components, fleets, idle)


def render(report: StateSizeReport) -> str:
    """Print the tables; return the markdown body of the result block."""
    config = report.config
    shape_rows = [
        (
            shape,
            f"{report.serialised[shape]:,}",
            f"{report.in_memory[shape]:,.0f}",
        )
        for shape in report.serialised
    ]
    mean_serialised = sum(report.serialised.values()) / len(report.serialised)
    mean_memory = sum(report.in_memory.values()) / len(report.in_memory)
    shape_rows.append(("mean", f"{mean_serialised:,.0f}", f"{mean_memory:,.0f}"))
    shape_headers = ("shape", "serialised bytes (to_bytes)", "in memory bytes (tracemalloc)")
    verdict = (
        f"target {TARGET_BYTES_PER_CONTAINER:,} B: serialised "
        f"{'met' if mean_serialised <= TARGET_BYTES_PER_CONTAINER else 'missed'} "
        f"({mean_serialised / TARGET_BYTES_PER_CONTAINER:.0%} of it); in memory "
        f"{mean_memory / TARGET_BYTES_PER_CONTAINER:.1f}x the target per window, "
        f"{report.per_tracked / TARGET_BYTES_PER_CONTAINER:.1f}x per tracked container "
        f"({report.per_tracked:,.0f} B incl. processor bookkeeping and the store's copy)"
    )
    component_rows = [(name, f"{size:,.0f}") for name, size in report.components.items()]
    component_headers = ("component of the daily-shape window", "in memory bytes (tracemalloc)")
    fleet_rows = []
    for fleet in report.fleets:
        after = spread([float(a) for a in fleet.after])
        growth = spread(
            [
                float(a - b) / fleet.containers
                for a, b in zip(fleet.after, fleet.baseline, strict=True)
            ]
        )
        estimate = ""
        if report.idle_worker is not None:
            worker = report.idle_worker + growth.median * fleet.containers
            estimate = f"{worker / MIB:,.0f}"
        fleet_rows.append(
            (
                f"{fleet.containers:,}",
                f"{spread([float(b) for b in fleet.baseline]).median / MIB:,.0f}",
                f"{after.median / MIB:,.0f} ({after.low / MIB:,.0f}..{after.high / MIB:,.0f})",
                f"{growth.median:,.0f}",
                estimate,
                spread(fleet.seconds).text("{:.1f}"),
            )
        )
    fleet_headers = (
        "containers",
        "RSS before (MiB)",
        "RSS after (MiB, median (min..max))",
        "RSS growth per container (B)",
        "estimated worker RSS (MiB) = idle worker + growth",
        "fill time (s)",
    )
    print_table("daytwo state per container", shape_headers, shape_rows)
    print(verdict)
    print_table("where a window's memory goes", component_headers, component_rows)
    print_table(
        "daytwo worker RSS by fleet size (in-process Processor, in-memory store)",
        fleet_headers,
        fleet_rows,
    )
    idle = (
        f"idle `daytwo worker` RSS (Faust, aiokafka, no containers): "
        f"{report.idle_worker / MIB:,.0f} MiB"
        if report.idle_worker is not None
        else "idle worker RSS: not measured"
    )
    print(idle)
    rss_verdict = ""
    for fleet in report.fleets:
        if fleet.containers == 100_000 and report.idle_worker is not None:
            fleet_growth = spread(
                [float(a - b) for a, b in zip(fleet.after, fleet.baseline, strict=True)]
            ).median
            total = report.idle_worker + fleet_growth
            rss_verdict = (
                f"target: 100k containers under 1 GiB: "
                f"{'met' if total < TARGET_RSS_100K_BYTES else 'missed'} "
                f"(estimated {total / 1024**3:.2f} GiB)"
            )
    if rss_verdict:
        print(rss_verdict)
    return "\n\n".join(
        part
        for part in (
            f"Templates: {config.history_days:g} days of {config.interval_seconds:g} s samples "
            f"per shape, profile balanced, evaluation on ticks; tracemalloc over "
            f"{config.tracemalloc_copies} restored copies. RSS: in-process Processor with an "
            f"in-memory store in a fresh process per run (no Faust/Kafka; the idle worker "
            f"line adds what they cost), {config.runs} run(s) per size.",
            markdown_table(shape_headers, shape_rows),
            verdict + ".",
            markdown_table(component_headers, component_rows),
            markdown_table(fleet_headers, fleet_rows),
            idle + ".",
            rss_verdict + ("." if rss_verdict else ""),
        )
        if part
    )


def main(argv: Sequence[str] | None = None) -> StateSizeReport | None:
    """``python -m bench.state_size``."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    options_parser = parser("State size: bytes per tracked container, RSS by fleet size.")
    options_parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    options_parser.add_argument("--templates", type=Path, default=None, help=argparse.SUPPRESS)
    options = options_parser.parse_args(args_list)
    if options.child is not None:
        child_main(options.child, options.templates)
        return None
    config = chosen_config(options, quick=QUICK, full=FULL)
    return run_and_record(
        options, "state_size", args_list, measure=lambda: run(config), render=render
    )


if __name__ == "__main__":
    main()
