"""What every benchmark shares: the machine description, statistics over runs, the
result block written to docs/benchmarks.md, rich tables and agent-format input.

Why one module: every result must be comparable across runs and machines, so each
benchmark describes the machine, reports median and spread, and records its block the
same way (newest first under the benchmark's marker in docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import platform
import random
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final, Protocol, TypeVar

from rich.console import Console
from rich.table import Table

from schemas.models import MAX_SAMPLES_PER_BATCH, ContainerSample, ContainerSampleBatch
from schemas.validate import encode

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
DOC_PATH: Final = REPO_ROOT / "docs" / "benchmarks.md"
MIB: Final = 1024 * 1024
GIB: Final = 1024 * MIB

Row = Sequence[object]


@dataclass(frozen=True)
class Machine:
    """Where a benchmark ran: without it a number means nothing."""

    cpu_model: str
    cores: int
    ram_bytes: int
    python: str
    os: str
    load_average: tuple[float, float, float]

    def describe(self) -> str:
        """One line for the result block."""
        load = ", ".join(f"{value:.2f}" for value in self.load_average)
        return (
            f"{self.cpu_model}, {self.cores} cores, {self.ram_bytes / GIB:.1f} GiB RAM, "
            f"Python {self.python}, {self.os}; load average at start {load} "
            "(shared machine: other engineers' jobs ran alongside)"
        )


def machine() -> Machine:
    """Describe this machine from /proc (Linux) and the interpreter."""
    cpu_model = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    ram = 0
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                ram = int(line.split()[1]) * 1024
                break
    return Machine(
        cpu_model=cpu_model,
        cores=os.cpu_count() or 1,
        ram_bytes=ram,
        python=platform.python_version(),
        os=platform.platform(terse=True),
        load_average=os.getloadavg(),
    )


@dataclass(frozen=True)
class Spread:
    """Median and range of repeated measurements (the spread is max - min over median)."""

    median: float
    low: float
    high: float
    runs: int

    @property
    def relative_spread(self) -> float:
        """(max - min) / median; 0 for one run."""
        return (self.high - self.low) / self.median if self.median else 0.0

    def text(self, fmt: str = "{:,.0f}") -> str:
        """``median (min..max, ±x%, n runs)``."""
        if self.runs == 1:
            return f"{fmt.format(self.median)} (1 run)"
        return (
            f"{fmt.format(self.median)} ({fmt.format(self.low)}..{fmt.format(self.high)}, "
            f"spread {self.relative_spread:.0%}, {self.runs} runs)"
        )


def spread(values: Sequence[float]) -> Spread:
    """Summarise ``values`` (at least one)."""
    if not values:
        raise ValueError("spread of no values")
    return Spread(statistics.median(values), min(values), max(values), len(values))


def parser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark takes: --quick, --runs, --doc, --no-record."""
    parsed = argparse.ArgumentParser(description=description)
    parsed.add_argument(
        "--quick", action="store_true", help="small sizes: seconds instead of minutes"
    )
    parsed.add_argument("--runs", type=int, default=None, help="repetitions for median and spread")
    parsed.add_argument(
        "--doc", type=Path, default=DOC_PATH, help="markdown file that receives the result block"
    )
    parsed.add_argument(
        "--no-record", action="store_true", help="print only; do not touch the markdown file"
    )
    return parsed


class RunsConfig(Protocol):
    """A benchmark's frozen config dataclass: anything with a ``runs`` field."""

    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    @property
    def runs(self) -> int:
        """Repetitions for median and spread."""
        ...


ConfigT = TypeVar("ConfigT", bound=RunsConfig)


def chosen_config(options: argparse.Namespace, *, quick: ConfigT, full: ConfigT) -> ConfigT:
    """The config --quick picks, with --runs (when given) replacing its repetitions.

    Why here: every benchmark reads the two common options the same way.
    """
    base = quick if options.quick else full
    return dataclasses.replace(base, runs=options.runs or base.runs)


def record_unless_disabled(
    options: argparse.Namespace, benchmark: str, argv: Sequence[str], *, host: Machine, body: str
) -> None:
    """Record ``body`` as ``benchmark``'s newest result block in ``--doc``, unless --no-record.

    Why one place: every block names the same rerun command (``python -m bench.NAME``
    with the arguments given) and the machine, so results stay comparable.
    """
    if not options.no_record:
        record(
            options.doc,
            benchmark,
            command=command_line(f"bench.{benchmark}", argv),
            host=host,
            body=body,
        )


ReportT = TypeVar("ReportT")


def run_and_record(
    options: argparse.Namespace,
    benchmark: str,
    argv: Sequence[str],
    *,
    measure: Callable[[], ReportT],
    render: Callable[[ReportT], str],
) -> ReportT:
    """Describe the machine, measure, render (tables on stdout) and record the block.

    Why the machine first: the load average it reports must be the one at the start.
    """
    host = machine()
    report = measure()
    record_unless_disabled(options, benchmark, argv, host=host, body=render(report))
    return report


def command_line(module: str, argv: Sequence[str]) -> str:
    """How to rerun this benchmark, for the result block."""
    return " ".join([".venv/bin/python", "-m", module, *argv])


def print_table(title: str, headers: Sequence[str], rows: Sequence[Row]) -> None:
    """A rich table on stdout."""
    table = Table(title=title)
    for header in headers:
        table.add_column(header)
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    Console(width=160).print(table)


def markdown_table(headers: Sequence[str], rows: Sequence[Row]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = [
        "| " + " | ".join(headers) + " |",
        "| " + " | ".join("---" for _ in headers) + " |",
    ]
    lines.extend(
        "| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows
    )
    return "\n".join(lines)


def marker(benchmark: str) -> str:
    """The HTML comment under which a benchmark's result blocks are inserted."""
    return f"<!-- results:{benchmark} -->"


def record(doc: Path, benchmark: str, *, command: str, host: Machine, body: str) -> str:
    """Insert a result block for ``benchmark`` into ``doc`` (newest first); return it.

    The block goes right after the benchmark's marker; a document without that marker
    (a fresh file, a test's temporary copy) gets a section with the marker appended.
    """
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    block = (
        f"#### Run of {now}\n\n"
        f"- command: `{command}`\n"
        f"- machine: {host.describe()}\n\n"
        f"{body.strip()}\n"
    )
    tag = marker(benchmark)
    text = doc.read_text(encoding="utf-8") if doc.exists() else "# daytwo benchmarks\n"
    if tag in text:
        head, tail = text.split(tag, 1)
        text = f"{head}{tag}\n\n{block}{tail}"
    else:
        text = f"{text.rstrip()}\n\n## Results: {benchmark}\n\n{tag}\n\n{block}"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text, encoding="utf-8")
    return block


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size of a process (this one by default), from /proc."""
    status = Path(f"/proc/{pid or 'self'}/status")
    for line in status.read_text(encoding="utf-8").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise OSError(f"no VmRSS in {status}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14, 15)


# -- agent-format input -------------------------------------------------------------------


def workload_id(index: int) -> str:
    """A workload id of the synthetic fleet."""
    return f"bench/ns-{index % 50:02d}/Deployment/app-{index:06d}"


def container_names(count: int) -> list[str]:
    """Container names of a synthetic pod: ``app``, then sidecars."""
    return ["app", *(f"sidecar-{i}" for i in range(1, count))]


def agent_batches(
    *,
    workloads: int,
    containers_per_workload: int,
    scrapes: int,
    interval_seconds: float = 10.0,
    start: float = 1_750_000_000.0,
    seed: int = 8,
    first_workload: int = 0,
    scrapes_per_batch: int = 1,
) -> list[tuple[bytes, bytes]]:
    """``(key, value)`` records as the cgroup agent publishes them, in scrape order.

    One ``container-sample-batch`` per workload per scrape (key = workload id), or with
    ``scrapes_per_batch`` > 1 per that many consecutive scrapes (how a catching-up agent
    packs them: ``daytwo agent --source replay --speedup max --pack N``), every
    sample with the fields a cgroup v2 agent fills (usage, periods and throttling,
    memory breakdown, OOM kills, limits), values from a seeded RNG around a per-container
    level, so windows, histograms and drift detectors see realistic noise. Workloads are
    numbered from ``first_workload`` (to build a large fleet chunk by chunk).
    """
    rng = random.Random(seed)
    names = container_names(containers_per_workload)
    levels = [
        [(rng.uniform(0.05, 1.5), rng.uniform(64, 1500) * MIB) for _ in names]
        for _ in range(workloads)
    ]
    if scrapes_per_batch < 1 or scrapes_per_batch * containers_per_workload > MAX_SAMPLES_PER_BATCH:
        raise ValueError(f"a batch must hold 1 ... {MAX_SAMPLES_PER_BATCH} samples")
    pending: dict[str, list[ContainerSample]] = {}
    records: list[tuple[bytes, bytes]] = []
    for scrape in range(scrapes):
        timestamp = start + scrape * interval_seconds
        for index in range(workloads):
            workload = workload_id(first_workload + index)
            samples = pending.setdefault(workload, [])
            for name, (cpu_level, memory_level) in zip(names, levels[index], strict=True):
                cpu = max(0.0, cpu_level * rng.uniform(0.7, 1.3))
                periods = int(interval_seconds * 10)
                throttled = rng.randrange(0, 4) if cpu > 1.2 else 0
                working_set = int(memory_level * rng.uniform(0.95, 1.05))
                samples.append(
                    ContainerSample(
                        container=name,
                        timestamp=timestamp,
                        interval_seconds=interval_seconds,
                        cpu_usage_cores=round(cpu, 6),
                        cpu_periods=periods,
                        cpu_throttled_periods=throttled,
                        cpu_throttled_seconds=throttled * 0.01,
                        cpu_throttled_ratio=throttled / periods,
                        memory_working_set_bytes=working_set,
                        memory_usage_bytes=working_set + 8 * MIB,
                        memory_rss_bytes=int(working_set * 0.8),
                        memory_cache_bytes=int(working_set * 0.2),
                        oom_kills=0,
                        cpu_limit_cores=2.0,
                        memory_limit_bytes=2 * GIB,
                    )
                )
            if (scrape + 1) % scrapes_per_batch and scrape + 1 < scrapes:
                continue
            batch = ContainerSampleBatch(
                source="cgroup",
                agent="bench-agent",
                workload=workload,
                timestamp=timestamp,
                samples=tuple(pending.pop(workload)),
            )
            records.append((workload.encode(), encode(batch)))
    return records


def echo(text: str) -> None:
    """Progress on stderr (stdout keeps the tables)."""
    print(text, file=sys.stderr, flush=True)
