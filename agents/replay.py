"""Replay source: trace files (CSV or Parquet) turned into container-sample batches.

The trace format is the one ``daytwo analyze`` and ``daytwo backtest`` read (see
docs/architecture.md): one row per sample with ``timestamp``, ``workload``,
``container``, ``cpu_cores`` required and the other columns optional. Rows are grouped
into one batch per workload and timestamp, in time order, with the original
timestamps, so a replay looks to the pipeline exactly like a live agent.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.errors import CollectorError

#: The trace format's required columns; ``daytwo analyze`` and ``backtest`` need no more.
REQUIRED_COLUMNS = ("timestamp", "workload", "container", "cpu_cores")
#: Container samples on the wire still require a working set (a CPU-only sample stream
#: is a later extension), so the replay agent also needs these.
REPLAY_REQUIRED_COLUMNS = (*REQUIRED_COLUMNS, "memory_bytes")
#: trace column -> container-sample field
OPTIONAL_COLUMNS = {
    "cpu_throttled_ratio": "cpu_throttled_ratio",
    "oom_kills": "oom_kills",
    "cpu_limit_cores": "cpu_limit_cores",
    "memory_limit_bytes": "memory_limit_bytes",
}
_INT_FIELDS = {"memory_working_set_bytes", "oom_kills", "memory_limit_bytes"}


def read_trace(path: Path) -> pl.DataFrame:
    """Load a trace with epoch-second float timestamps, sorted by time.

    ISO-8601 timestamps are converted to epoch seconds (UTC). Missing required columns
    raise :class:`CollectorError` naming them.
    """
    try:
        frame = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path)
    except (OSError, pl.exceptions.PolarsError) as exc:
        msg = f"cannot read trace {path}: {exc}"
        raise CollectorError(msg) from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        msg = f"trace {path} lacks required column(s) {', '.join(missing)}"
        raise CollectorError(msg)
    if frame.schema["timestamp"] == pl.String:
        frame = frame.with_columns(
            pl.col("timestamp").str.to_datetime(time_zone="UTC").dt.epoch("ms") / 1000.0
        )
    return with_intervals(frame.with_columns(pl.col("timestamp").cast(pl.Float64)))


def with_intervals(frame: pl.DataFrame) -> pl.DataFrame:
    """Sort by time and add ``interval_seconds``: the time since the container's previous
    sample; the first sample of a container takes its median interval (1 s if alone)."""
    interval = pl.col("timestamp").diff().over("workload", "container")
    return frame.sort("timestamp").with_columns(
        interval.fill_null(interval.median().over("workload", "container"))
        .fill_null(1.0)
        .alias("interval_seconds")
    )


def trace_batches(
    frame: pl.DataFrame, *, source: str = "replay", agent: str = "replay"
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (workload id, container-sample-batch dict) in trace-time order.

    Raises :class:`CollectorError` when the trace has no ``memory_bytes`` column or a row
    without a value in it: container samples on the wire carry a working set, so a
    CPU-only trace can be analysed and backtested but not replayed.
    """
    missing = [c for c in REPLAY_REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        msg = (
            f"the replay agent needs trace column(s) {', '.join(missing)} (container samples "
            "carry a memory working set); a CPU-only trace works with `daytwo analyze` and "
            "`daytwo backtest`"
        )
        raise CollectorError(msg)
    nulls = frame.filter(pl.col("memory_bytes").is_null())
    if nulls.height:
        first = nulls.row(0, named=True)
        msg = (
            f"the replay agent needs memory_bytes on every row; {nulls.height} row(s) lack it, "
            f"the first at timestamp {first['timestamp']} for {first['workload']}:"
            f"{first['container']}"
        )
        raise CollectorError(msg)
    present = {c: f for c, f in OPTIONAL_COLUMNS.items() if c in frame.columns}
    for (timestamp, workload), group in frame.group_by(
        "timestamp", "workload", maintain_order=True
    ):
        samples = []
        for row in group.iter_rows(named=True):
            sample: dict[str, Any] = {
                "container": row["container"],
                "timestamp": float(row["timestamp"]),
                "interval_seconds": float(row["interval_seconds"]),
                "cpu_usage_cores": float(row["cpu_cores"]),
                "memory_working_set_bytes": int(row["memory_bytes"]),
            }
            for column, field in present.items():
                value = row[column]
                if value is not None:
                    sample[field] = int(value) if field in _INT_FIELDS else float(value)
            samples.append(sample)
        yield (
            str(workload),
            {
                "schema_version": 1,
                "kind": "container-sample-batch",
                "source": source,
                "agent": agent,
                "workload": str(workload),
                "timestamp": float(timestamp),
                "samples": samples,
            },
        )
