"""The JVM agent: one ``jvm-sample-batch`` per workload per scrape, from GC logs and Micrometer.

Why a collector of its own: a container must never be sized apart from the JVM inside it,
so the pipeline needs, next to each container sample, the heap bounds, live set and GC
overhead of its JVM. This class is the thin shell that does the I/O and calls the pure
parts (:mod:`agents.jvm_gclog`, :mod:`agents.micrometer`, :mod:`agents.jvm_flags`).

Per JVM and scrape: new GC-log lines are parsed and aggregated over the interval since the
previous scrape; the Micrometer endpoint (if any) is scraped and differenced; the flags are
read once (jcmd on ``pid``, else PrintFlagsFinal for ``java_options``; a failure is retried
after ``flags_retry_seconds``). Where both sources give a value the GC log wins (it sees
every pause); Micrometer adds threads, direct buffers and code cache. The first scrape of a
JVM only sets baselines, like the cgroup collector's. Each batch is built as the
:class:`schemas.models.JvmSampleBatch` model, so what leaves here satisfies the contract.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
from pydantic import ValidationError

from agents.collector import AgentMetrics, OutgoingMessage
from agents.jvm_flags import (
    FlagValue,
    flags_object,
    read_flags_final,
    read_vm_command_line,
    read_vm_flags,
)
from agents.jvm_gclog import GcLogParser, GcLogTailer, IntervalAggregator
from agents.jvm_mapping import JvmAgentMapping, JvmMapping
from agents.micrometer import MicrometerRates, MicrometerScraper
from pipeline.errors import CollectorError
from schemas.models import JvmSample, JvmSampleBatch
from schemas.validate import encode

__all__ = ["JVM_SAMPLES_TOPIC", "JvmCollector"]

JVM_SAMPLES_TOPIC: Final = "daytwo.jvm-samples.v1"
log = logging.getLogger(__name__)


@dataclass
class _JvmState:
    """Everything the collector keeps for one JVM between scrapes."""

    entry: JvmMapping
    tailer: GcLogTailer | None
    scraper: MicrometerScraper | None
    parser: GcLogParser = field(default_factory=GcLogParser)
    aggregator: IntervalAggregator = field(default_factory=IntervalAggregator)
    rates: MicrometerRates = field(default_factory=MicrometerRates)
    last_scrape: float | None = None
    flags: dict[str, FlagValue] | None = None
    command_line: str | None = None
    flags_tried_at: float | None = None


class JvmCollector:
    """Scrapes every JVM of a ``jvms:`` mapping; implements the agent's Collector protocol."""

    def __init__(
        self,
        mapping: JvmAgentMapping,
        *,
        agent: str | None = None,
        metrics: AgentMetrics | None = None,
        transport: httpx.BaseTransport | None = None,
        flags_timeout_seconds: float = 20.0,
        flags_retry_seconds: float = 300.0,
    ) -> None:
        self.mapping = mapping
        self.agent = agent or socket.gethostname()
        self.metrics = metrics if metrics is not None else AgentMetrics.create()
        self.flags_timeout_seconds = flags_timeout_seconds
        self.flags_retry_seconds = flags_retry_seconds
        self._states = [
            _JvmState(
                entry=entry,
                tailer=None
                if entry.gc_log is None
                else GcLogTailer(entry.gc_log, start_at_end=entry.start_at_end),
                scraper=None
                if entry.micrometer_url is None
                else MicrometerScraper(entry.micrometer_url, transport=transport),
            )
            for entry in mapping.jvms
        ]

    @property
    def bad_lines(self) -> int:
        """GC-log lines that could not be parsed, over all JVMs, since start."""
        return sum(state.parser.bad_lines for state in self._states)

    def close(self) -> None:
        """Close log files and HTTP clients."""
        for state in self._states:
            if state.tailer is not None:
                state.tailer.close()
            if state.scraper is not None:
                state.scraper.close()

    def _failed(self, source: str, state: _JvmState, error: CollectorError) -> None:
        self.metrics.read_errors.labels(source=source).inc()
        log.warning("%s of %s: %s", source, state.entry.container_key, error)

    def _read_flags(self, state: _JvmState, now: float) -> None:
        entry = state.entry
        if state.flags is not None or (entry.pid is None and entry.java_options is None):
            return
        if state.flags_tried_at is not None and now - state.flags_tried_at < (
            self.flags_retry_seconds
        ):
            return
        state.flags_tried_at = now
        timeout = self.flags_timeout_seconds
        try:
            if entry.pid is not None:
                state.flags = read_vm_flags(entry.pid, timeout=timeout)
                if entry.java_options is None:
                    state.command_line = read_vm_command_line(entry.pid, timeout=timeout)
            else:
                assert entry.java_options is not None
                state.flags = read_flags_final(entry.java_options, java=entry.java, timeout=timeout)
        except CollectorError as error:
            self._failed("jvm-flags", state, error)

    def _gc_log_fields(self, state: _JvmState, interval: float | None) -> dict[str, Any] | None:
        if state.tailer is None:
            return None
        try:
            lines = state.tailer.read_lines()
        except OSError as error:
            self._failed("gclog", state, CollectorError(f"{state.entry.gc_log}: {error}"))
            return None
        state.aggregator.add_all(state.parser.feed_lines(lines))
        heap_max = state.parser.init.heap_max_bytes
        if state.flags is not None and "MaxHeapSize" in state.flags:
            heap_max = flags_object(state.flags).get("max_heap_bytes") or heap_max
        summary = state.aggregator.close(interval or 1.0, heap_max_bytes=heap_max)
        return None if interval is None else summary.sample_fields()

    def _micrometer_fields(self, state: _JvmState, now: float) -> dict[str, Any] | None:
        if state.scraper is None:
            return None
        try:
            snapshot = state.scraper.scrape()
        except CollectorError as error:
            self._failed("micrometer", state, error)
            return None
        return state.rates.update(snapshot, now)

    def _sample(self, state: _JvmState, now: float) -> tuple[JvmSample, str] | None:
        interval = None if state.last_scrape is None else now - state.last_scrape
        if interval is not None and interval <= 0:
            return None
        state.last_scrape = now
        self._read_flags(state, now)
        from_log = self._gc_log_fields(state, interval)
        from_metrics = self._micrometer_fields(state, now)
        if interval is None or (from_log is None and from_metrics is None):
            return None  # baseline, or every source failed this time
        fields: dict[str, Any] = dict(from_metrics or {})
        for name, value in (from_log or {}).items():
            if value is not None or name not in fields:
                fields[name] = value
        fields["interval_seconds"] = interval
        options = state.entry.java_options or state.command_line
        flags = flags_object(state.flags or {}, options=[options], init=state.parser.init)
        fields["flags"] = flags if any(v is not None for v in flags.values()) else None
        fields["jvm_options"] = options
        if fields.get("heap_max_bytes") is None:
            fields["heap_max_bytes"] = flags["max_heap_bytes"]
        source = (
            "jvm"
            if from_log is not None and from_metrics is not None
            else ("gclog" if from_log is not None else "micrometer")
        )
        try:
            sample = JvmSample.model_validate(
                {"container": state.entry.container, "timestamp": now, **fields}
            )
        except ValidationError as error:  # e.g. an interval longer than the contract's day
            self._failed("jvm", state, CollectorError(f"sample outside the contract: {error}"))
            return None
        return sample, source

    def scrape(self, now: float) -> list[JvmSampleBatch]:
        """One batch per workload that has samples at ``now`` (none on the first scrape)."""
        by_workload: dict[str, list[tuple[JvmSample, str]]] = {}
        for state in self._states:
            sampled = self._sample(state, now)
            if sampled is not None:
                by_workload.setdefault(state.entry.workload, []).append(sampled)
        batches = []
        for workload, samples in by_workload.items():
            sources = {source for _, source in samples}
            batches.append(
                JvmSampleBatch(
                    source=sources.pop() if len(sources) == 1 else "jvm",
                    agent=self.agent,
                    workload=workload,
                    timestamp=now,
                    samples=tuple(sample for sample, _ in samples),
                )
            )
        return batches

    def messages(self, now: float) -> list[OutgoingMessage]:
        """:meth:`scrape`, encoded for ``daytwo.jvm-samples.v1`` keyed by workload id."""
        return [
            OutgoingMessage(JVM_SAMPLES_TOPIC, batch.workload.encode(), encode(batch))
            for batch in self.scrape(now)
        ]
