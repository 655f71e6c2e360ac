"""Throughput: container samples per second per worker core, end to end and per stage.

End to end: agent-format batches are produced to the container-samples topic of the
embedded broker (or ``$DAYTWO_KAFKA_BOOTSTRAP``) *before* a real ``daytwo worker``
process starts, so the worker consumes a backlog as fast as it can. The headline input is
the catch-up shape: each batch holds one workload's consecutive scrapes (what
``daytwo agent --source replay --speedup max --pack N`` sends, and where a worker needs
its speed); one extra run uses the live shape (one batch per workload per scrape). The
worker's ``daytwo_worker_samples_processed_total`` counter (its /metrics endpoint, asked
for that one family so the poll does not make it render every per-workload series) and
its CPU time (/proc) are polled; the rate is samples over wall time and over the
worker's CPU seconds (= per core: the worker is one asyncio thread). Checkpoints (every
flush interval: one changelog record per dirty container) run inside the measured span.

Per stage, in process, on the same records: decode (orjson), decode + validate (pydantic,
and msgspec: the worker's path), the column runs, window update (incl. drift), drift
alone, engine apply with evaluation on ticks, one evaluation, checkpoint serialisation,
restore, and the whole :class:`~pipeline.processor.Processor` with an in-memory store
(the ceiling without Faust and Kafka). A py-spy profile of the worker and a pyinstrument
profile of the in-process processor say where the time goes.

Run: ``.venv/bin/python -m bench.throughput [--quick]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import orjson
from prometheus_client import CollectorRegistry

from bench.common import (
    agent_batches,
    chosen_config,
    cpu_seconds,
    echo,
    markdown_table,
    parser,
    print_table,
    run_and_record,
    spread,
)
from bench.profiling import (
    ProfileSummary,
    finish_py_spy,
    py_spy_available,
    py_spy_record,
    summarise_pyinstrument,
)
from pipeline.broker import EmbeddedBroker
from pipeline.core.drift import DriftConfig, DriftTracker
from pipeline.core.engine import ContainerEngine
from pipeline.core.profiles import BALANCED
from pipeline.core.sizing import CurrentResources
from pipeline.core.window import ContainerWindow, SampleRun
from pipeline.launch import Child, start_child
from pipeline.metrics import WorkerMetrics
from pipeline.processor import Processor
from pipeline.settings import Settings
from pipeline.topics import topic_names
from schemas.models import ContainerSample, ContainerSampleBatch
from schemas.validate import decode_container_batch
from schemas.wire import decode_container_batch_fast
from tests.worker_helpers import MemoryStore, free_port, metric_sum, produce_async, scrape_metrics

TARGET_SAMPLES_PER_SECOND: Final = 250_000
SAMPLES_METRIC: Final = "daytwo_worker_samples_processed_total"
POLL_SECONDS: Final = 0.5


@dataclass(frozen=True)
class ThroughputConfig:
    """Sizes of one throughput benchmark."""

    workloads: int
    containers_per_workload: int
    scrapes: int
    runs: int
    partitions: int = 8
    flush_interval_seconds: float = 5.0
    end_to_end: bool = True
    profile: bool = True
    timeout_seconds: float = 240.0
    scrapes_per_batch: int = 120
    """Consecutive scrapes each batch holds: the catch-up shape a replay (``--pack``) or a
    backfill publishes, which is where a worker needs its speed (a live fleet of 100,000
    containers scraped every 10 s sends only 10,000 samples/s)."""
    live_scrapes: int | None = 60
    """An extra end-to-end run in the live shape (one batch per workload per scrape) over
    this many scrapes, to show the per-message cost."""

    @property
    def samples(self) -> int:
        """Container samples per run."""
        return self.workloads * self.containers_per_workload * self.scrapes


QUICK: Final = ThroughputConfig(
    workloads=20,
    containers_per_workload=2,
    scrapes=30,
    runs=1,
    scrapes_per_batch=10,
    live_scrapes=None,
)
FULL: Final = ThroughputConfig(workloads=1000, containers_per_workload=2, scrapes=360, runs=3)


def new_processor(store: MemoryStore | None = None) -> Processor:
    """A :class:`Processor` as the worker builds it, on a private registry and a dict store."""
    return Processor(
        profile=BALANCED,
        store=store if store is not None else MemoryStore(),
        metrics=WorkerMetrics.create(CollectorRegistry()),
        clock=time.time,
        source_topic="bench.daytwo.container-samples.v1",
    )


# -- per stage, in process ----------------------------------------------------------------


@dataclass(frozen=True)
class StageResult:
    """One stage: seconds per run over ``units`` samples (or calls)."""

    name: str
    seconds: list[float]
    units: int
    unit: str = "sample"
    note: str = ""

    @property
    def per_unit_microseconds(self) -> float:
        """Median microseconds per unit."""
        return spread(self.seconds).median / self.units * 1e6

    @property
    def rate(self) -> float:
        """Median units per second (one core: every stage is single-threaded)."""
        return self.units / spread(self.seconds).median


def _timed(action: Callable[[], object], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        action()
        times.append(time.perf_counter() - began)
    return times


def _keyed_runs(batches: Sequence[ContainerSampleBatch]) -> list[tuple[str, str, SampleRun]]:
    """Each batch's samples as one column run per container, as the processor cuts them."""
    runs: list[tuple[str, str, SampleRun]] = []
    for batch in batches:
        by_container: dict[str, list[ContainerSample]] = {}
        for sample in batch.samples:
            by_container.setdefault(sample.container, []).append(sample)
        runs.extend(
            (batch.workload, container, SampleRun.of(samples))
            for container, samples in by_container.items()
        )
    return runs


def measure_stages(records: Sequence[tuple[bytes, bytes]], runs: int) -> list[StageResult]:
    """Time every stage of the per-record path over ``records`` (see the module docstring)."""
    values = [value for _, value in records]
    batches = [decode_container_batch(value) for value in values]
    samples = sum(len(batch.samples) for batch in batches)
    keyed = _keyed_runs(batches)
    containers = {(w, c) for w, c, _ in keyed}
    results = [
        StageResult(
            "decode: orjson.loads", _timed(lambda: [orjson.loads(v) for v in values], runs), samples
        ),
        StageResult(
            "decode + validate: pydantic strict fast path (decode_container_batch; "
            "no longer on the worker's path)",
            _timed(lambda: [decode_container_batch(v) for v in values], runs),
            samples,
        ),
        StageResult(
            "decode + validate: msgspec (schemas/wire.py, the worker's path)",
            _timed(lambda: [decode_container_batch_fast(v) for v in values], runs),
            samples,
        ),
        StageResult(
            "columns: one SampleRun per container and batch (SampleRun.of)",
            _timed(lambda: _keyed_runs(batches), runs),
            samples,
        ),
    ]

    def windows() -> None:
        state: dict[tuple[str, str], ContainerWindow] = {}
        for workload, container, run in keyed:
            window = state.get((workload, container))
            if window is None:
                window = state[(workload, container)] = ContainerWindow.new(BALANCED)
            window.apply_run(run)

    results.append(
        StageResult(
            "window update incl. drift (ContainerWindow.apply_run)", _timed(windows, runs), samples
        )
    )

    def drift() -> None:
        config = DriftConfig.from_sensitivity(BALANCED.drift_sensitivity)
        trackers: dict[tuple[str, str], DriftTracker] = {}
        for workload, container, run in keyed:
            tracker = trackers.get((workload, container))
            if tracker is None:
                tracker = trackers[(workload, container)] = DriftTracker.new(config)
            memory = [None if m is None else float(m) for m in run.memory_working_set_bytes]
            tracker.update_run("memory", run.timestamps, memory)
            tracker.update_run("cpu", run.timestamps, run.cpu_cores)
            tracker.update_run("throttling", run.timestamps, run.cpu_throttled_ratios)

    results.append(
        StageResult(
            "  of which drift detectors alone (DriftTracker.update_run)",
            _timed(drift, runs),
            samples,
        )
    )

    engines: dict[tuple[str, str], ContainerEngine] = {}

    def engine_apply() -> None:
        engines.clear()
        for workload, container, run in keyed:
            engine = engines.get((workload, container))
            if engine is None:
                engine = engines[(workload, container)] = ContainerEngine(
                    BALANCED, workload=workload, container=container, evaluate_on_ticks=True
                )
                engine.spec = CurrentResources(
                    cpu_request_cores=2.0,
                    cpu_limit_cores=2.0,
                    memory_request_bytes=2**31,
                    memory_limit_bytes=2**31,
                )
            engine.apply_run(run)

    results.append(
        StageResult(
            "engine apply: window + drift + sizing on evaluation ticks (ContainerEngine.apply_run)",
            _timed(engine_apply, runs),
            samples,
            note=f"ticks every {BALANCED.evaluation_interval_seconds:.0f} s of trace time",
        )
    )
    last = max(run.timestamps[-1] for _, _, run in keyed)
    spec = CurrentResources(
        cpu_request_cores=2.0,
        cpu_limit_cores=2.0,
        memory_request_bytes=2**31,
        memory_limit_bytes=2**31,
    )

    def evaluate() -> None:
        for engine in engines.values():
            engine.window.last_emitted_hash = None
            engine.window.last_proposal_timestamp = None
            engine.evaluate(last, spec)

    results.append(
        StageResult(
            "one evaluation: sizing + hysteresis (ContainerEngine.evaluate)",
            _timed(evaluate, runs),
            len(engines),
            unit="call",
        )
    )
    results.append(
        StageResult(
            "checkpoint serialisation (ContainerWindow.to_bytes)",
            _timed(lambda: [e.window.to_bytes() for e in engines.values()], runs),
            len(engines),
            unit="call",
            note="once per dirty container per flush; live (flush <= scrape interval): "
            "once per sample",
        )
    )
    encoded = [e.window.to_bytes() for e in engines.values()]
    results.append(
        StageResult(
            "restore (ContainerWindow.from_bytes, on recovery / first touch)",
            _timed(lambda: [ContainerWindow.from_bytes(b) for b in encoded], runs),
            len(encoded),
            unit="call",
        )
    )

    def processor_run() -> None:
        processor = new_processor()
        per_flush = max(1, len(values) // 10)
        for index, (key, value) in enumerate(records):
            processor.handle(key, value, partition=index % 8, offset=index)
            if index % per_flush == per_flush - 1:
                processor.checkpoint()
        processor.checkpoint()

    results.append(
        StageResult(
            "whole Processor (handle + checkpoint x10), in-memory store, no Faust/Kafka",
            _timed(processor_run, runs),
            samples,
            note=f"{len(containers)} containers",
        )
    )
    return results


def profile_processor(records: Sequence[tuple[bytes, bytes]]) -> ProfileSummary | str:
    """pyinstrument over one in-process Processor run."""
    try:
        from pyinstrument import Profiler  # noqa: PLC0415  # a dev dependency, optional
    except ImportError:
        return "pyinstrument is not installed (.venv/bin/pip install pyinstrument)"
    processor = new_processor()
    profiler = Profiler(interval=0.0005)
    profiler.start()
    for index, (key, value) in enumerate(records):
        processor.handle(key, value, partition=index % 8, offset=index)
        if index % 2000 == 1999:
            processor.checkpoint()
    processor.checkpoint()
    session = profiler.stop()
    return summarise_pyinstrument(session)


# -- end to end ---------------------------------------------------------------------------


@dataclass(frozen=True)
class EndToEndRun:
    """One worker consuming one backlog."""

    samples: int
    wall_seconds: float
    cpu_seconds: float
    startup_seconds: float
    produce_seconds: float
    broker_cpu_share: float | None = None
    """Cores the embedded broker used while the worker consumed (same machine)."""
    profile: ProfileSummary | str | None = None

    @property
    def wall_rate(self) -> float:
        """Samples per wall-clock second."""
        return self.samples / self.wall_seconds

    @property
    def cpu_rate(self) -> float:
        """Samples per CPU second of the worker process (= per core)."""
        return self.samples / self.cpu_seconds


@dataclass(frozen=True)
class Kafka:
    """The broker a benchmark runs against."""

    bootstrap: str
    embedded: bool
    broker_pid: int | None
    """The embedded broker's process (its CPU time is reported), None for an external one."""


@contextlib.contextmanager
def kafka() -> Iterator[Kafka]:
    """``$DAYTWO_KAFKA_BOOTSTRAP`` if set, else a fresh embedded broker."""
    external = os.environ.get("DAYTWO_KAFKA_BOOTSTRAP")
    if external:
        yield Kafka(external, embedded=False, broker_pid=None)
        return
    with EmbeddedBroker() as broker:
        yield Kafka(broker.bootstrap, embedded=True, broker_pid=broker.pid)


def worker_env(
    broker: Kafka, prefix: str, app_id: str, data_dir: Path, port: int
) -> dict[str, str]:
    """``DAYTWO_*`` settings of one isolated benchmark worker (defaults otherwise)."""
    env = {
        "DAYTWO_KAFKA_BOOTSTRAP": broker.bootstrap,
        "DAYTWO_TOPIC_PREFIX": prefix,
        "DAYTWO_WORKER_APP_ID": app_id,
        "DAYTWO_DATA_DIR": str(data_dir),
        "DAYTWO_METRICS_PORT": str(port),
        "DAYTWO_LOG_LEVEL": "WARNING",
    }
    if broker.embedded:
        env["DAYTWO_BROKER_IS_EMBEDDED"] = "1"
    return env


def ensure_isolated_topics(broker: Kafka, prefix: str, app_id: str, partitions: int) -> None:
    """Create the daytwo topics under ``prefix`` and the changelog of ``app_id``."""
    from pipeline.app import ensure_worker_topics  # noqa: PLC0415  # imports faust

    settings = Settings(
        kafka_bootstrap=broker.bootstrap,
        topic_prefix=prefix,
        worker_app_id=app_id,
        partitions=partitions,
        broker_is_embedded=broker.embedded,
    )
    asyncio.run(ensure_worker_topics(settings))


def run_end_to_end(
    broker: Kafka,
    records: Sequence[tuple[bytes, bytes]],
    samples: int,
    config: ThroughputConfig,
    workdir: Path,
    *,
    profile_seconds: float = 0.0,
) -> EndToEndRun:
    """Produce ``records``, start a worker, wait until it applied ``samples`` samples."""
    run_id = uuid.uuid4().hex[:8]
    prefix = f"bench-{run_id}."
    app_id = f"bench-throughput-{run_id}"
    ensure_isolated_topics(broker, prefix, app_id, config.partitions)
    began = time.perf_counter()
    # Batched by aiokafka, as the agent's publisher does; waits for every ack.
    asyncio.run(
        produce_async(
            broker.bootstrap,
            topic_names(prefix).container_samples,
            records,
            idempotent=not broker.embedded,  # the embedded broker refuses InitProducerId
            linger_ms=20,
            max_batch_size=1024 * 1024,
        )
    )
    produce_seconds = time.perf_counter() - began
    port = free_port()
    env = worker_env(broker, prefix, app_id, workdir / run_id, port)
    env["DAYTWO_PARTITIONS"] = str(config.partitions)
    env["DAYTWO_FLUSH_INTERVAL_SECONDS"] = str(config.flush_interval_seconds)
    started = time.perf_counter()
    child = start_child(f"worker-{run_id}", ["worker"], env, workdir / "logs")
    try:
        polls = _poll(child, port, samples, config, broker, workdir, profile_seconds)
    finally:
        child.stop(timeout=20)
    return _run_from_polls(polls.points, samples, started, produce_seconds, polls.profile)


@dataclass
class _Polls:
    points: list[tuple[float, float, float, float | None]]
    """(time, samples applied, worker CPU s, broker CPU s) per poll."""
    profile: ProfileSummary | str | None = None


def _poll(
    child: Child,
    port: int,
    samples: int,
    config: ThroughputConfig,
    broker: Kafka,
    workdir: Path,
    profile_seconds: float,
) -> _Polls:
    """Scrape the worker's /metrics every POLL_SECONDS until ``samples`` were applied.

    Scraping is not free (the worker renders its per-workload series), so it is polled
    twice a second, not faster, and the start and end are interpolated between polls.
    """
    deadline = time.perf_counter() + config.timeout_seconds
    polls = _Polls([])
    spy = None
    spy_output = workdir / f"py-spy-{child.process.pid}.txt"
    while time.perf_counter() < deadline:
        if child.process.poll() is not None:
            raise RuntimeError(
                f"worker exited with {child.process.returncode}:\n{child.log_tail(40)}"
            )
        try:
            done = metric_sum(scrape_metrics(port, (SAMPLES_METRIC,)), SAMPLES_METRIC)
        except OSError:
            time.sleep(0.1)
            continue
        now = time.perf_counter()
        broker_cpu = cpu_seconds(broker.broker_pid) if broker.broker_pid is not None else None
        polls.points.append((now, done, cpu_seconds(child.process.pid), broker_cpu))
        if done == 0 and spy is None and profile_seconds > 0 and py_spy_available():
            spy = py_spy_record(child.process.pid, profile_seconds, spy_output)
        if done >= samples:
            if spy is not None:
                polls.profile = finish_py_spy(spy, spy_output, timeout=profile_seconds + 30)
            return polls
        time.sleep(POLL_SECONDS)
    raise RuntimeError(
        f"worker applied fewer than {samples} samples in {config.timeout_seconds} s:\n"
        + child.log_tail(40)
    )


def _run_from_polls(
    points: list[tuple[float, float, float, float | None]],
    samples: int,
    started: float,
    produce_seconds: float,
    profile: ProfileSummary | str | None,
) -> EndToEndRun:
    """Start and end of the backlog's consumption, interpolated between polls.

    End: linear between the last poll below ``samples`` and the first at or above it.
    Start: extrapolated back to 0 applied at the rate between the first poll that saw
    samples and the end (a steady rate); with a single such poll, the last poll that
    saw none (an overestimate by up to one poll interval).
    """
    first = next(i for i, p in enumerate(points) if p[1] > 0)
    last = len(points) - 1
    if first == 0:
        raise RuntimeError("the worker applied samples before its metrics answered")

    def at(index: int, fraction: float, column: int) -> float:
        low, high = points[index], points[min(index + 1, last)]
        a, b = low[column], high[column]
        assert a is not None
        assert b is not None
        return float(a) + fraction * (float(b) - float(a))

    if last > first:
        before_end = last - 1
        span = points[last][1] - points[before_end][1]
        end_fraction = (samples - points[before_end][1]) / span if span else 1.0
        end = [at(before_end, end_fraction, c) for c in (0, 2)]
        applied = points[first][1]
        total = points[last][1] - points[first][1]
        back = applied / total if total else 0.0
        start = [
            points[first][c] - back * (points[last][c] - points[first][c])  # type: ignore[operator]  # columns 0 and 2 are floats
            for c in (0, 2)
        ]
    else:
        start = [points[first - 1][0], points[first - 1][2]]
        end = [points[last][0], points[last][2]]
    broker_cpu = None
    if points[last][3] is not None and points[first - 1][3] is not None:
        broker_cpu = float(points[last][3] or 0.0) - float(points[first - 1][3] or 0.0)
    window = points[last][0] - points[first - 1][0]
    return EndToEndRun(
        samples=samples,
        wall_seconds=end[0] - start[0],
        cpu_seconds=end[1] - start[1],
        startup_seconds=start[0] - started,
        produce_seconds=produce_seconds,
        broker_cpu_share=None if broker_cpu is None or window <= 0 else broker_cpu / window,
        profile=profile,
    )


# -- the command ---------------------------------------------------------------------------


@dataclass
class ThroughputReport:
    """Everything the command prints and records."""

    config: ThroughputConfig
    stages: list[StageResult]
    end_to_end: list[EndToEndRun]
    worker_profile: ProfileSummary | str | None
    processor_profile: ProfileSummary | str | None
    live: EndToEndRun | None = None


def run(config: ThroughputConfig) -> ThroughputReport:
    """Run the whole benchmark (stages, end to end, profiles)."""
    records = agent_batches(
        workloads=config.workloads,
        containers_per_workload=config.containers_per_workload,
        scrapes=config.scrapes,
        scrapes_per_batch=config.scrapes_per_batch,
    )
    echo(f"generated {config.samples:,} samples in {len(records):,} batches")
    echo("per-stage timings")
    stages = measure_stages(records, config.runs)
    processor_profile = profile_processor(records) if config.profile else None
    e2e: list[EndToEndRun] = []
    worker_profile: ProfileSummary | str | None = None
    live: EndToEndRun | None = None
    if config.end_to_end:
        with kafka() as broker, tempfile.TemporaryDirectory(prefix="daytwo-bench-") as tmp:
            for index in range(config.runs):
                echo(f"end to end run {index + 1}/{config.runs}")
                e2e.append(run_end_to_end(broker, records, config.samples, config, Path(tmp)))
            if config.live_scrapes:
                echo("end to end run in the live shape (one batch per workload per scrape)")
                live_records = agent_batches(
                    workloads=config.workloads,
                    containers_per_workload=config.containers_per_workload,
                    scrapes=config.live_scrapes,
                )
                live_samples = sum(len(orjson.loads(v)["samples"]) for _, v in live_records)
                live = run_end_to_end(broker, live_records, live_samples, config, Path(tmp))
            if config.profile:
                echo("end to end run under py-spy")
                expected = e2e[0].wall_seconds if e2e else 5.0
                profiled = run_end_to_end(
                    broker,
                    records,
                    config.samples,
                    config,
                    Path(tmp),
                    profile_seconds=max(1.0, expected * 0.8),
                )
                worker_profile = (
                    profiled.profile if py_spy_available() else "py-spy is not installed"
                )
    return ThroughputReport(config, stages, e2e, worker_profile, processor_profile, live)


def _stage_rows(report: ThroughputReport) -> list[tuple[str, str, str, str]]:
    rows = []
    for stage in report.stages:
        per = f"{stage.per_unit_microseconds:,.1f} µs/{stage.unit}"
        rate = f"{stage.rate:,.0f} {stage.unit}s/s"
        rows.append((stage.name, per, rate, stage.note))
    return rows


def _e2e_rows(report: ThroughputReport) -> list[tuple[str, str]]:
    if not report.end_to_end:
        return []
    runs = report.end_to_end
    per_core = spread([r.cpu_rate for r in runs])
    return [
        ("samples per worker CPU-second (per core)", per_core.text()),
        ("samples per wall-clock second", spread([r.wall_rate for r in runs]).text()),
        (
            "worker CPU use while consuming (cores)",
            spread([r.cpu_seconds / r.wall_seconds for r in runs]).text("{:.2f}"),
        ),
        ("samples measured per run", f"{runs[0].samples:,}"),
        (
            "embedded broker CPU use meanwhile (cores, same machine)",
            spread([r.broker_cpu_share for r in runs if r.broker_cpu_share is not None]).text(
                "{:.2f}"
            )
            if all(r.broker_cpu_share is not None for r in runs)
            else "n/a (external broker)",
        ),
        (
            "worker start → first sample applied (s)",
            spread([r.startup_seconds for r in runs]).text("{:.1f}"),
        ),
        (
            "producing the backlog (s, not measured)",
            spread([r.produce_seconds for r in runs]).text("{:.1f}"),
        ),
        *(
            [
                (
                    f"live shape: one batch per workload per scrape ({report.live.samples:,} "
                    "samples, 1 run): per core / per wall second",
                    f"{report.live.cpu_rate:,.0f} / {report.live.wall_rate:,.0f}",
                )
            ]
            if report.live is not None
            else []
        ),
        (
            f"target {TARGET_SAMPLES_PER_SECOND:,}/s per core",
            f"missed: {TARGET_SAMPLES_PER_SECOND / per_core.median:.1f}x short"
            if per_core.median < TARGET_SAMPLES_PER_SECOND
            else "met",
        ),
    ]


def _profile_markdown(title: str, profile: ProfileSummary | str | None) -> str:
    if profile is None:
        return ""
    if isinstance(profile, str):
        return f"{title}: not available ({profile}).\n"
    stage_table = markdown_table(("stage (inclusive)", "share of samples"), profile.stage_rows())
    hot_table = markdown_table(("function (self time)", "share"), profile.hottest(10))
    return f"{title}:\n\n{stage_table}\n\n{hot_table}\n"


def render(report: ThroughputReport) -> str:
    """Print the tables; return the markdown body of the result block."""
    config = report.config
    print_table(
        "daytwo throughput: per stage, in process (one core)",
        ("stage", "cost", "rate", "note"),
        _stage_rows(report),
    )
    e2e_rows = _e2e_rows(report)
    if e2e_rows:
        print_table(
            "daytwo throughput: end to end (daytwo worker on the embedded broker)",
            ("measure", "value"),
            e2e_rows,
        )
    for title, profile in (
        ("worker (py-spy)", report.worker_profile),
        ("in-process Processor (pyinstrument)", report.processor_profile),
    ):
        if isinstance(profile, ProfileSummary):
            print_table(f"profile: {title}", ("stage (inclusive)", "share"), profile.stage_rows())
            print_table(
                f"profile: {title}, hottest functions",
                ("function (self)", "share"),
                profile.hottest(10),
            )
        elif profile is not None:
            print(f"profile {title}: {profile}")
    parts = [
        f"Input: {config.workloads:,} workloads x {config.containers_per_workload} containers x "
        f"{config.scrapes} scrapes (10 s apart) = {config.samples:,} samples, packed "
        f"{config.scrapes_per_batch} scrapes per batch as a catching-up agent sends them "
        f"({-(-config.scrapes // config.scrapes_per_batch) * config.workloads:,} batches of up "
        f"to {config.scrapes_per_batch * config.containers_per_workload} samples); "
        f"{config.partitions} partitions, flush interval {config.flush_interval_seconds:g} s, "
        "profile balanced.",
    ]
    if e2e_rows:
        parts.append(
            "End to end (a real `daytwo worker` process):\n\n"
            + markdown_table(("measure", "value"), e2e_rows)
        )
    parts.append(
        "Per stage, in process (median of the runs):\n\n"
        + markdown_table(("stage", "cost", "rate", "note"), _stage_rows(report))
    )
    parts.append(
        _profile_markdown(
            "Profile of the worker process (py-spy, share of samples)", report.worker_profile
        )
    )
    parts.append(
        _profile_markdown(
            "Profile of the in-process Processor (pyinstrument)", report.processor_profile
        )
    )
    return "\n\n".join(part for part in parts if part)


def main(argv: Sequence[str] | None = None) -> ThroughputReport:
    """``python -m bench.throughput``."""
    import sys  # noqa: PLC0415

    args_list = list(sys.argv[1:] if argv is None else argv)
    options_parser = parser("Throughput: container samples per second per worker core.")
    options_parser.add_argument(
        "--no-profile", action="store_true", help="skip the py-spy and pyinstrument profiles"
    )
    options = options_parser.parse_args(args_list)
    config = chosen_config(options, quick=QUICK, full=FULL)
    config = dataclasses.replace(config, profile=config.profile and not options.no_profile)
    return run_and_record(
        options, "throughput", args_list, measure=lambda: run(config), render=render
    )


if __name__ == "__main__":
    main()
