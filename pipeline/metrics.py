"""The worker's own Prometheus metrics, on a registry passed in.

Names follow ``daytwo_<thing>_<unit>`` with base units and ``_total`` for counters;
labels are bounded (stage, topic, partition), never per sample or per container.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


@dataclass(frozen=True)
class WorkerMetrics:
    """Counters and gauges a pipeline worker updates; one instance per registry."""

    samples_processed: Counter
    samples_replayed: Counter
    jvm_samples_processed: Counter
    batches_processed: Counter
    recommendations_emitted: Counter
    deadletters: Counter
    checkpoints: Counter
    sizing_errors: Counter
    tracked_containers: Gauge
    consumer_lag: Gauge
    checkpoint_seconds: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry) -> WorkerMetrics:
        """Register the worker metrics on ``registry`` (a private one in tests)."""
        return cls(
            samples_processed=Counter(
                "daytwo_worker_samples_processed_total",
                "Container samples applied to per-container state.",
                registry=registry,
            ),
            samples_replayed=Counter(
                "daytwo_worker_samples_replayed_total",
                "Samples skipped because one at or after their timestamp was already "
                "applied (idempotent replay after a restart).",
                registry=registry,
            ),
            jvm_samples_processed=Counter(
                "daytwo_worker_jvm_samples_processed_total",
                "JVM samples applied to per-container state.",
                registry=registry,
            ),
            batches_processed=Counter(
                "daytwo_worker_batches_processed_total",
                "Valid container-sample batches consumed.",
                registry=registry,
            ),
            recommendations_emitted=Counter(
                "daytwo_worker_recommendations_emitted_total",
                "Recommendation sets sent to the recommendations topic.",
                registry=registry,
            ),
            deadletters=Counter(
                "daytwo_deadletters_total",
                "Input records sent to the dead-letter topic, by the stage that rejected them.",
                ["stage"],
                registry=registry,
            ),
            checkpoints=Counter(
                "daytwo_worker_checkpoints_total",
                "Container states written to the changelog-backed table.",
                registry=registry,
            ),
            sizing_errors=Counter(
                "daytwo_worker_sizing_errors_total",
                "Containers whose sizing failed at a checkpoint (logged with a traceback).",
                registry=registry,
            ),
            tracked_containers=Gauge(
                "daytwo_worker_tracked_containers",
                "Containers whose state this worker holds in memory.",
                registry=registry,
            ),
            consumer_lag=Gauge(
                "daytwo_worker_consumer_lag_messages",
                "Messages between the fetch high watermark and the last processed offset.",
                ["topic", "partition"],
                registry=registry,
            ),
            checkpoint_seconds=Histogram(
                "daytwo_worker_checkpoint_seconds",
                "Time to checkpoint dirty state and emit recommendations.",
                registry=registry,
            ),
        )


def serve_metrics(registry: CollectorRegistry, port: int, addr: str = "0.0.0.0") -> None:  # noqa: S104 - scraped from outside the pod
    """Expose ``registry`` on ``http://addr:port/metrics`` (a daemon thread)."""
    if port:
        start_http_server(port, addr=addr, registry=registry)
