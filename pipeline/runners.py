"""Process runners behind ``daytwo agent|worker|sink``: wire settings to the parts.

Each runner owns one process's lifetime: it serves metrics, handles SIGINT/SIGTERM
as a clean stop, and turns settings into the constructor arguments of the parts.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import signal
import socket
import time
from pathlib import Path

from prometheus_client import CollectorRegistry
from ruamel.yaml import YAML

from agents.cgroup import CgroupMounts
from agents.collector import AgentMetrics, Collector, ContainerCollector, NodeCollector, run_agent
from agents.jvm_collector import JvmCollector
from agents.jvm_mapping import load_jvm_mapping
from agents.mapping import load_mapping
from agents.publisher import KafkaPublisher
from pipeline.errors import ConfigError
from pipeline.metrics import serve_metrics
from pipeline.prsink.git import CommitAuthor
from pipeline.prsink.sink import run_sink
from pipeline.settings import Settings, require_bootstrap
from pipeline.topics import topic_names

log = logging.getLogger(__name__)


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)


def run_agent_process(settings: Settings, registry: CollectorRegistry | None = None) -> None:
    """Scrape the mapped cgroups and this node every interval; publish to Kafka."""
    bootstrap = require_bootstrap(settings)
    if settings.mapping_file is None:
        msg = "the cgroup agent needs a mapping file: --mapping FILE or DAYTWO_MAPPING_FILE"
        raise ConfigError(msg)
    mapping = load_mapping(settings.mapping_file)
    registry = registry if registry is not None else CollectorRegistry()
    serve_metrics(registry, settings.metrics_port)
    mounts = CgroupMounts.discover()  # from /proc/self/mountinfo: v1, v2 or both
    metrics = AgentMetrics.create(registry)
    node = settings.node_name or socket.gethostname()
    collectors: list[Collector] = [NodeCollector(node, metrics=metrics)]
    if mapping.cgroups:
        collectors.append(ContainerCollector(mapping, mounts=mounts, metrics=metrics))
    if _has_jvms(settings.mapping_file):
        collectors.append(JvmCollector(load_jvm_mapping(settings.mapping_file), metrics=metrics))

    async def main() -> None:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        async with KafkaPublisher(
            bootstrap, idempotent=not settings.broker_is_embedded, registry=registry
        ) as publisher:
            await run_agent(
                collectors,
                publisher,
                interval_seconds=settings.scrape_interval_seconds,
                stop_event=stop,
                clock=time.time,
                metrics=metrics,
                topic_prefix=settings.topic_prefix,
            )

    asyncio.run(main())


def _has_jvms(path: Path) -> bool:
    """Whether the mapping file has a ``jvms:`` section (read by the JVM collector)."""
    document = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    return isinstance(document, dict) and "jvms" in document


def run_sink_process(settings: Settings, registry: CollectorRegistry) -> None:
    """Consume recommendation sets and commit them as branches until stopped."""
    bootstrap = require_bootstrap(settings)
    if settings.gitops_repo is None:
        msg = "the sink needs the GitOps repository: --repo PATH or DAYTWO_GITOPS_REPO"
        raise ConfigError(msg)
    serve_metrics(registry, settings.metrics_port)
    names = topic_names(settings.topic_prefix)

    async def main() -> None:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        await run_sink(
            bootstrap,
            settings.gitops_repo,  # type: ignore[arg-type]  # checked above; closure loses it
            group_id=settings.sink_group_id,
            topic=names.recommendations,
            deadletter_topic=names.deadletter,
            stop_event=stop,
            registry=registry,
            base_branch=settings.gitops_base_branch,
            author=CommitAuthor(settings.git_author_name, settings.git_author_email),
            idempotent=not settings.broker_is_embedded,
        )

    asyncio.run(main())


def run_worker_process(settings: Settings, registry: CollectorRegistry) -> None:
    """Run one Faust worker until SIGINT/SIGTERM."""
    import faust  # noqa: PLC0415 - heavy import, only for this command

    from pipeline.app import build_worker, ensure_worker_topics  # noqa: PLC0415

    require_bootstrap(settings)
    # On a helper thread: asyncio.run here would leave the main thread without the
    # event loop Faust's worker expects to find.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, ensure_worker_topics(settings)).result()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    worker = build_worker(settings, registry)
    serve_metrics(registry, settings.metrics_port)
    with contextlib.suppress(SystemExit):
        faust.Worker(
            worker.app, loglevel=settings.log_level.upper(), quiet=True
        ).execute_from_commandline()
