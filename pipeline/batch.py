"""Batch commands on the stream's core: ``daytwo analyze`` and ``daytwo backtest``.

This is the I/O shell around :mod:`pipeline.core.engine` and :mod:`pipeline.core.backtest`:
it reads a trace file (CSV or Parquet, the format of docs/architecture.md, through
:func:`agents.replay.read_trace`), turns each container's rows into
:class:`~pipeline.core.window.SampleInput` series, runs the pure core, and renders the
result. The same engine that serves the stream answers here, so a trace analysed in
batch gets the recommendation the live worker would publish for it.

Trace rows map to samples as the replay agent maps them to wire samples: ``cpu_cores``,
``memory_bytes`` (optional: CPU-only traces such as the NAB series give CPU-only
recommendations and null memory metrics), ``cpu_throttled_ratio``, ``oom_kills``,
``cpu_limit_cores`` and ``memory_limit_bytes``. The spec columns (``cpu_request_cores``,
``cpu_limit_cores``, ``memory_request_bytes``, ``memory_limit_bytes``) give what is in
force: for ``analyze`` each row as the worker would hold it at that sample (a missing
request takes the limit, see :func:`stream_specs`), for ``backtest`` the first row (until
the first proposal replaces it).

The JVM columns (``jvm_heap_used_bytes``, ``jvm_heap_max_bytes``, ``jvm_nonheap_bytes``,
``jvm_gc_overhead_ratio``) become :class:`~pipeline.core.window.JvmSampleInput` samples
mapped as the replay agent maps them to ``jvm-sample`` fields
(:func:`agents.replay.jvm_fields`, whose docstring says where the non-heap figure goes),
applied to the container's engine just before the container sample of the same row,
the order in which the replay publishes them. A JVM trace therefore gets the heap with
the limit (``jvm_max_heap_bytes``, rules ``jvm-limit-covers-heap`` and
``jvm-heap-with-limit``), in ``analyze`` and in ``backtest`` alike.

``analyze`` reports, per container, the last recommendation the engine *proposes* when
fed the trace as the worker is fed (trace-time ticks, hysteresis), falling back to the
end-of-trace recommendation (flagged in the table) when nothing would be proposed.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Literal

import orjson
import polars as pl
from rich.console import Console
from rich.table import Table
from ruamel.yaml import YAML

from agents.replay import JVM_COLUMNS as JVM_TRACE_COLUMNS
from agents.replay import jvm_fields, read_trace, with_intervals
from pipeline.core.backtest import (
    BacktestMetrics,
    ContainerSeries,
    EngineRecommender,
    Recommender,
    run_backtest,
)
from pipeline.core.baselines import KrrRecommender, VpaRecommender
from pipeline.core.engine import ContainerEngine, Decision
from pipeline.core.profiles import Profile
from pipeline.core.quantity import format_cpu, format_memory
from pipeline.core.sizing import DEFAULT_PRICES, CurrentResources, Prices
from pipeline.core.window import JvmSampleInput, SampleInput
from pipeline.errors import CollectorError, InvalidMessageError
from schemas.models import Recommendation
from schemas.validate import validate_dict

OutputFormat = Literal["table", "json", "yaml", "csv"]
OUTPUT_FORMATS: Final[tuple[str, ...]] = ("table", "json", "yaml", "csv")

RESOURCE_FIELDS: Final = (
    "cpu_request_cores",
    "cpu_limit_cores",
    "memory_request_bytes",
    "memory_limit_bytes",
    "jvm_max_heap_bytes",
)

NAB_VCPUS: Final = 2.0
"""The NAB AWS CloudWatch series are CPU % of instances read here as 2 vCPUs."""


# -- traces ------------------------------------------------------------------------------


def load_trace(path: Path) -> pl.DataFrame:
    """Read a trace file (see :func:`agents.replay.read_trace`); CollectorError if unreadable."""
    return read_trace(path)


def nab_trace(
    path: Path,
    *,
    vcpus: float = NAB_VCPUS,
    workload: str | None = None,
    container: str = "main",
) -> pl.DataFrame:
    """A Numenta Anomaly Benchmark CPU series (``timestamp,value``) in the trace shape.

    Why: the NAB ``*_cpu_utilization_*`` series are real, public, multi-week CPU traces;
    ``value`` is CPU % of the instance, so usage = value / 100 x ``vcpus`` cores. The
    workload id defaults to ``nab/nab/Process/<file stem>``. Timestamps (``YYYY-MM-DD
    HH:MM:SS``, UTC) become epoch seconds. The result has the trace columns
    ``timestamp, workload, container, cpu_cores`` and can be written with
    ``frame.write_csv`` and read back by :func:`load_trace`.
    """
    try:
        raw = pl.read_csv(path, schema_overrides={"timestamp": pl.String, "value": pl.Float64})
    except (OSError, pl.exceptions.PolarsError) as exc:
        msg = f"cannot read NAB series {path}: {exc}"
        raise CollectorError(msg) from exc
    if raw.columns[:2] != ["timestamp", "value"]:
        msg = f"NAB series {path} must have the columns timestamp,value; got {raw.columns}"
        raise CollectorError(msg)
    name = workload if workload is not None else f"nab/nab/Process/{path.stem}"
    return raw.select(
        (
            pl.col("timestamp")
            .str.to_datetime("%Y-%m-%d %H:%M:%S", time_zone="UTC")
            .dt.epoch("s")
            .cast(pl.Float64)
        ).alias("timestamp"),
        pl.lit(name).alias("workload"),
        pl.lit(container).alias("container"),
        (pl.col("value") / 100.0 * vcpus).alias("cpu_cores"),
    )


def trace_series(
    frame: pl.DataFrame, *, spec_row: Literal["first", "last"] = "first"
) -> list[ContainerSeries]:
    """One :class:`ContainerSeries` per (workload, container) of a loaded trace, in time order.

    ``spec_row`` chooses which row's spec columns are the resources in force: the first
    (a backtest starts from it) or the last (``analyze`` reports against it). Invalid
    values raise :class:`CollectorError` naming the row.
    """
    if "interval_seconds" not in frame.columns:
        frame = with_intervals(frame)
    columns = set(frame.columns)
    series: list[ContainerSeries] = []
    for (workload, container), group in frame.sort("timestamp").group_by(
        "workload", "container", maintain_order=True
    ):
        rows = list(group.iter_rows(named=True))
        samples = [_sample(row, columns) for row in rows]
        spec = _spec(rows[0] if spec_row == "first" else rows[-1], columns)
        series.append(ContainerSeries(str(workload), str(container), samples, spec))
    return series


def _optional(row: dict[str, object], columns: set[str], name: str) -> object:
    return row[name] if name in columns else None


def _number(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {value!r}")
    return float(value)


def _whole(value: object) -> int | None:
    number = _number(value)
    return None if number is None else round(number)


def _sample(row: dict[str, object], columns: set[str]) -> SampleInput:
    def number(name: str) -> float | None:
        return _number(_optional(row, columns, name))

    def whole(name: str) -> int | None:
        return _whole(_optional(row, columns, name))

    try:
        cpu = number("cpu_cores")
        timestamp = number("timestamp")
        if cpu is None or timestamp is None:
            raise TypeError("timestamp and cpu_cores are required")
        interval = number("interval_seconds")
        return SampleInput(
            timestamp=timestamp,
            interval_seconds=1.0 if interval is None else interval,
            cpu_usage_cores=cpu,
            memory_working_set_bytes=whole("memory_bytes"),
            cpu_throttled_ratio=number("cpu_throttled_ratio"),
            oom_kills=whole("oom_kills"),
            cpu_limit_cores=number("cpu_limit_cores"),
            memory_limit_bytes=whole("memory_limit_bytes"),
        )
    except (InvalidMessageError, TypeError) as exc:
        msg = (
            f"trace row at timestamp {row.get('timestamp')} for {row.get('workload')}:"
            f"{row.get('container')} is invalid: {exc}"
        )
        raise CollectorError(msg) from exc


def _spec(row: dict[str, object], columns: set[str]) -> CurrentResources:
    try:
        return CurrentResources(
            cpu_request_cores=_number(_optional(row, columns, "cpu_request_cores")),
            cpu_limit_cores=_number(_optional(row, columns, "cpu_limit_cores")),
            memory_request_bytes=_whole(_optional(row, columns, "memory_request_bytes")),
            memory_limit_bytes=_whole(_optional(row, columns, "memory_limit_bytes")),
        )
    except TypeError as exc:
        msg = (
            f"trace row at timestamp {row.get('timestamp')} for {row.get('workload')}:"
            f"{row.get('container')} has an invalid spec: {exc}"
        )
        raise CollectorError(msg) from exc


JvmSeries = dict[tuple[str, str], dict[float, JvmSampleInput]]
"""(workload, container) -> the container's JVM samples by timestamp."""


def trace_jvm(frame: pl.DataFrame) -> JvmSeries:
    """The JVM samples of a loaded trace, per (workload, container), by timestamp.

    Why by timestamp: each JVM sample belongs to the container sample of its row, and
    the engine is fed it just before that sample (as the replay publishes the two). Rows
    without JVM values give none; a trace without JVM columns gives an empty mapping. Of
    two rows of a container at the same instant the first counts, as in the stream (the
    window skips a sample at or before its last one). Invalid values raise
    :class:`CollectorError` naming the row.
    """
    columns = set(frame.columns)
    if not any(column in columns for column in JVM_TRACE_COLUMNS):
        return {}
    if "interval_seconds" not in columns:
        frame = with_intervals(frame)
    series: JvmSeries = {}
    for row in frame.sort("timestamp").iter_rows(named=True):
        fields = jvm_fields(row, columns)
        if fields is None:
            continue
        by_time = series.setdefault((str(row["workload"]), str(row["container"])), {})
        timestamp = _number(row["timestamp"])
        if timestamp is None or timestamp in by_time:
            continue
        interval = _number(row["interval_seconds"])
        try:
            by_time[timestamp] = JvmSampleInput(
                timestamp=timestamp,
                interval_seconds=1.0 if interval is None else interval,
                **fields,
            )
        except InvalidMessageError as exc:
            msg = (
                f"trace row at timestamp {row.get('timestamp')} for {row.get('workload')}:"
                f"{row.get('container')} has invalid JVM values: {exc}"
            )
            raise CollectorError(msg) from exc
    return series


# -- analyze -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContainerAnalysis:
    """What ``daytwo analyze`` found for one container of a trace.

    ``proposal`` is the last decision the engine *proposed* while the trace was fed to it
    the way the stream worker is fed (evaluation on trace-time ticks, hysteresis, cool-
    down), so it is what the worker would have published last for this container;
    ``proposals`` counts them. ``final`` is the evaluation at the container's last sample,
    whether or not it would be proposed (its ``reason`` says why not).
    """

    series: ContainerSeries
    proposal: Decision | None
    proposals: int
    final: Decision

    @property
    def reported(self) -> dict[str, object] | None:
        """The recommendation analyze reports: the last proposal, else the end-of-trace
        recommendation (None without enough data for either)."""
        if self.proposal is not None:
            return self.proposal.recommendation
        return self.final.recommendation

    @property
    def key(self) -> str:
        """``workload:container``."""
        return f"{self.series.workload}:{self.series.container}"


def stream_specs(frame: pl.DataFrame) -> dict[tuple[str, str], list[CurrentResources]]:
    """What the stream worker holds in force at each sample of each container, in time order.

    Why: the worker's spec for a container without a workload spec is what its samples
    show, sample by sample, with a request equal to the limit when no request is given
    (Kubernetes' defaulting when only a limit is set; ``pipeline/processor.py`` does the
    same for bare cgroups). A trace's spec columns stand for the workload spec the
    inventory would publish; a null request takes the limit.
    """
    if "interval_seconds" not in frame.columns:
        frame = with_intervals(frame)
    columns = set(frame.columns)
    specs: dict[tuple[str, str], list[CurrentResources]] = {}
    for (workload, container), group in frame.sort("timestamp").group_by(
        "workload", "container", maintain_order=True
    ):
        rows = group.iter_rows(named=True)
        specs[(str(workload), str(container))] = [_stream_spec(row, columns) for row in rows]
    return specs


def _stream_spec(row: dict[str, object], columns: set[str]) -> CurrentResources:
    declared = _spec(row, columns)
    return CurrentResources(
        cpu_request_cores=(
            declared.cpu_request_cores
            if declared.cpu_request_cores is not None
            else declared.cpu_limit_cores
        ),
        cpu_limit_cores=declared.cpu_limit_cores,
        memory_request_bytes=(
            declared.memory_request_bytes
            if declared.memory_request_bytes is not None
            else declared.memory_limit_bytes
        ),
        memory_limit_bytes=declared.memory_limit_bytes,
    )


def analyze_trace(
    frame: pl.DataFrame, profile: Profile, *, prices: Prices = DEFAULT_PRICES
) -> list[ContainerAnalysis]:
    """Feed each container of a loaded trace to the engine as the worker does; collect.

    Why: ``daytwo analyze`` must say what the stream would propose for the same file
    (``daytwo agent --source replay`` into ``daytwo worker``), not a recommendation the
    stream never publishes. So each container gets a :class:`ContainerEngine` with
    ``evaluate_on_ticks=True``; before each sample its spec is set to what the worker
    would hold (:func:`stream_specs`), the row's JVM sample (:func:`trace_jvm`) goes in
    just before its container sample, proposals are taken after each sample, and a
    proposal that breaks the recommendation contract is dropped as the worker drops it.
    The end-of-trace evaluation against the last sample's spec is kept as ``final``.
    A sizing failure on a tick (a bug) is raised, naming the container.
    """
    series = trace_series(frame, spec_row="last")
    specs = stream_specs(frame)
    jvm = trace_jvm(frame)
    results: list[ContainerAnalysis] = []
    for one in series:
        if not one.samples:
            continue
        engine = ContainerEngine(
            profile,
            workload=one.workload,
            container=one.container,
            prices=prices,
            evaluate_on_ticks=True,
        )
        proposal: Decision | None = None
        proposals = 0
        container_specs = specs[(one.workload, one.container)]
        container_jvm = jvm.get((one.workload, one.container), {})
        for sample, spec in zip(one.samples, container_specs, strict=True):
            jvm_sample = container_jvm.get(sample.timestamp)
            if jvm_sample is not None:
                engine.apply_jvm(jvm_sample)
            engine.spec = spec
            engine.apply(sample)
            if engine.failures:
                failure = engine.failures[0]
                msg = f"sizing {one.workload}:{one.container} failed at {sample.timestamp}"
                raise CollectorError(msg) from failure
            for decision in engine.take_proposals():
                if _breaks_contract(decision.recommendation):
                    continue
                proposal = decision
                proposals += 1
        final = engine.evaluate(one.samples[-1].timestamp, container_specs[-1])
        results.append(ContainerAnalysis(one, proposal, proposals, final))
    return results


def _breaks_contract(recommendation: dict[str, object] | None) -> bool:
    try:
        validate_dict(Recommendation, recommendation)
    except InvalidMessageError:
        return True
    return False


def analyze(path: Path, profile: Profile, fmt: OutputFormat = "table") -> str:
    """``daytwo analyze``: per container of a trace, what the stream would propose, rendered.

    Each container's reported recommendation is the last one the engine *proposes* when
    fed the trace the way the worker is fed (:func:`analyze_trace`): replaying the same
    file through ``daytwo agent --source replay`` into ``daytwo worker`` publishes the
    same values, rules and hash. When nothing would be proposed (too little history, no
    change worth a pull request), the recommendation at the end of the trace is reported
    instead, and the table flags it.

    ``json`` is the list of those recommendation objects (the contract of
    schemas/recommendation.v1.schema.json); ``yaml`` the same list; ``csv`` one row per
    container with the current and recommended values flattened; ``table`` a terminal
    table with the reported recommendation, where it comes from, and the end-of-trace
    decision with its reason. Containers with too little data for any recommendation are
    left out of json/yaml/csv and listed in the table.
    """
    if fmt not in OUTPUT_FORMATS:
        msg = f"unknown output format {fmt!r}; choose one of {', '.join(OUTPUT_FORMATS)}"
        raise ValueError(msg)
    analyses = analyze_trace(load_trace(path), profile)
    recommendations = [a.reported for a in analyses if a.reported is not None]
    if fmt == "json":
        return orjson.dumps(recommendations, option=orjson.OPT_INDENT_2).decode() + "\n"
    if fmt == "yaml":
        yaml = YAML(typ="safe", pure=True)
        yaml.default_flow_style = False
        stream = io.StringIO()
        yaml.dump(recommendations, stream)
        return stream.getvalue()
    if fmt == "csv":
        return _csv(recommendations)
    return _table(analyses, profile)


def _csv(recommendations: list[dict[str, object]]) -> str:
    schema: dict[str, type[pl.DataType]] = {
        "workload": pl.String,
        "container": pl.String,
        "profile": pl.String,
    }
    for side in ("current", "recommended"):
        for name in RESOURCE_FIELDS:
            schema[f"{side}_{name}"] = pl.Int64 if name.endswith("_bytes") else pl.Float64
    schema |= {
        "monthly_cost_delta_usd": pl.Float64,
        "confidence": pl.Float64,
        "risk": pl.String,
        "rules": pl.String,
        "hash": pl.String,
    }
    rows = [_csv_row(r) for r in recommendations]
    return pl.DataFrame(rows, schema=schema, orient="row").write_csv()


def _csv_row(recommendation: dict[str, object]) -> list[object]:
    row: list[object] = [
        recommendation["workload"],
        recommendation["container"],
        recommendation["profile"],
    ]
    for side in ("current", "recommended"):
        resources = recommendation[side]
        assert isinstance(resources, dict)
        row.extend(_csv_value(name, resources.get(name)) for name in RESOURCE_FIELDS)
    rules = recommendation["rules"]
    assert isinstance(rules, list)
    row.extend(
        [
            recommendation["monthly_cost_delta_usd"],
            recommendation["confidence"],
            recommendation["risk"],
            " ".join(str(rule["id"]) for rule in rules),
            recommendation["hash"],
        ]
    )
    return row


def _csv_value(name: str, value: object) -> float | int | None:
    number = _number(value)
    if number is None:
        return None
    return round(number) if name.endswith("_bytes") else number


def _table(analyses: list[ContainerAnalysis], profile: Profile) -> str:
    table = Table(title=f"daytwo recommendations (profile {profile.name})", show_footer=True)
    total = 0.0
    for analysis in analyses:
        reported = analysis.reported
        delta = None if reported is None else reported.get("monthly_cost_delta_usd")
        if isinstance(delta, int | float):
            total += delta
    for header, footer in (
        ("container", "total"),
        ("CPU request", ""),
        ("memory limit", ""),
        ("$/month", f"{total:+.2f}"),
        ("risk", ""),
        ("reported", ""),
        ("at the end of the trace", ""),
    ):
        table.add_column(header, footer=footer)
    for analysis in analyses:
        final, reported = analysis.final, analysis.reported
        if reported is None:
            table.add_row(analysis.key, "", "", "", "", "nothing", final.reason)
            continue
        current, recommended = reported["current"], reported["recommended"]
        assert isinstance(current, dict)
        assert isinstance(recommended, dict)
        table.add_row(
            analysis.key,
            _arrow(current.get("cpu_request_cores"), recommended.get("cpu_request_cores"), True),
            _arrow(current.get("memory_limit_bytes"), recommended.get("memory_limit_bytes"), False),
            f"{reported['monthly_cost_delta_usd']:+.2f}",
            str(reported["risk"]),
            _source(analysis),
            _at_end(analysis),
        )
    console = Console(file=io.StringIO(), width=200, color_system=None, force_terminal=False)
    console.print(table)
    output = console.file
    assert isinstance(output, io.StringIO)
    return output.getvalue()


def _source(analysis: ContainerAnalysis) -> str:
    """Where the reported recommendation comes from (the flag the brief asks for)."""
    if analysis.proposal is None:
        return "end of trace (FALLBACK: nothing would be proposed)"
    evidence = analysis.proposal.recommendation or {}
    stats = evidence.get("evidence")
    last = stats.get("last_timestamp") if isinstance(stats, dict) else None
    when = f" at {_iso(last)}" if isinstance(last, int | float) else ""
    return f"last proposal{when} ({analysis.proposals} in all)"


def _at_end(analysis: ContainerAnalysis) -> str:
    """The end-of-trace decision; with its values when they differ from the reported ones."""
    final, reported = analysis.final, analysis.reported
    recommendation = final.recommendation
    if recommendation is None or reported is None or recommendation["hash"] == reported["hash"]:
        return final.reason
    recommended = recommendation["recommended"]
    assert isinstance(recommended, dict)
    cpu = recommended.get("cpu_request_cores")
    memory = recommended.get("memory_limit_bytes")
    values = (
        f"CPU {format_cpu(float(cpu)) if isinstance(cpu, int | float) else 'unset'}, memory "
        f"{format_memory(int(memory)) if isinstance(memory, int | float) else 'unset'}"
    )
    return f"{values}: {final.reason}"


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M")


def _arrow(before: object, after: object, cpu: bool) -> str:
    def text(value: object) -> str:
        if not isinstance(value, int | float):
            return "unset"
        return format_cpu(float(value)) if cpu else format_memory(int(value))

    return f"{text(before)} → {text(after)}"


# -- backtest ----------------------------------------------------------------------------


class JvmFedRecommender(EngineRecommender):
    """daytwo's engine in the backtest, fed each container sample's JVM sample first.

    Why: the backtest protocol carries container samples only; a JVM trace must still
    size the heap with the limit there, as in ``analyze`` and the stream. ``jvm`` is the
    container's JVM samples by timestamp (:func:`trace_jvm`).
    """

    __slots__ = ("jvm",)

    def __init__(self, engine: ContainerEngine, jvm: Mapping[float, JvmSampleInput]) -> None:
        super().__init__(engine)
        self.jvm = jvm

    def observe(self, sample: SampleInput, in_force: CurrentResources) -> None:
        """Apply the sample's JVM sample (if any), then the sample."""
        jvm_sample = self.jvm.get(sample.timestamp)
        if jvm_sample is not None:
            self.engine.apply_jvm(jvm_sample)
        super().observe(sample, in_force)


def backtest_series(
    series: Sequence[ContainerSeries],
    profile: Profile,
    *,
    prices: Prices = DEFAULT_PRICES,
    jvm: JvmSeries | None = None,
) -> dict[str, BacktestMetrics]:
    """daytwo (``profile``), ``vpa`` and ``krr`` replayed over the same series, scored.

    Why the full metrics: the JSON output keeps DESIGN's five fields; tests and bench/
    also need the scored sample count and the proposals per simulated week. ``jvm``
    (:func:`trace_jvm`) feeds daytwo's engine the JVM samples; the baselines size the
    container alone, as VPA and KRR do.
    """
    jvm_series = jvm if jvm is not None else {}

    def daytwo(workload: str, container: str) -> Recommender:
        engine = ContainerEngine(profile, workload=workload, container=container, prices=prices)
        return JvmFedRecommender(engine, jvm_series.get((workload, container), {}))

    def vpa(workload: str, container: str) -> Recommender:
        del workload, container
        return VpaRecommender()

    def krr(workload: str, container: str) -> Recommender:
        del workload, container
        return KrrRecommender()

    return {
        "daytwo": run_backtest(series, daytwo),
        "vpa": run_backtest(series, vpa),
        "krr": run_backtest(series, krr),
    }


def backtest(path: Path, profile: Profile, *, nab_vcpus: float | None = None) -> dict[str, object]:
    """``daytwo backtest --format json``: ``{"trace", "profile", "results": {name: M}}``.

    Each ``M`` has exactly ``mean_cpu_request_cores``, ``cpu_under_provisioned_share``,
    ``mean_memory_limit_bytes``, ``simulated_oom_kills`` and ``proposals`` (see
    :mod:`pipeline.core.backtest` for their exact definitions). With ``nab_vcpus`` the
    file is a Numenta Anomaly Benchmark series (``timestamp,value`` in CPU percent of
    an instance with that many vCPUs) instead of a trace.
    """
    frame = load_trace(path) if nab_vcpus is None else nab_trace(path, vcpus=nab_vcpus)
    results = backtest_series(trace_series(frame), profile, jvm=trace_jvm(frame))
    return {
        "trace": str(path),
        "profile": profile.name,
        "results": {name: metrics.to_json() for name, metrics in results.items()},
    }
