"""Process runners behind ``daytwo agent|worker|sink``: wire settings to the parts.

Each runner owns one process's lifetime: it serves metrics, handles SIGINT/SIGTERM
as a clean stop, and turns settings into the constructor arguments of the parts.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from ruamel.yaml import YAML

from agents.cgroup import CgroupMounts
from agents.collector import (
    CONTAINER_SAMPLES_TOPIC,
    AgentMetrics,
    BatchSequence,
    Collector,
    ContainerCollector,
    NodeCollector,
    OutgoingMessage,
    guard_message,
    run_agent,
)
from agents.inventory import InventoryConfig, InventoryMetrics, KubernetesInventory
from agents.jvm_collector import JVM_SAMPLES_TOPIC, JvmCollector
from agents.jvm_mapping import JvmAgentMapping, load_jvm_mapping
from agents.kubelet import KubeletClient, KubeletConfig, KubeletMetrics, KubeletSource
from agents.limits import InputLimits
from agents.mapping import AgentMapping, load_mapping
from agents.prometheus import (
    PrometheusAuth,
    PrometheusMetrics,
    PrometheusSource,
    PrometheusSourceConfig,
    PromQLClient,
    QueryBudget,
    pack_batches,
)
from agents.publisher import SpoolingPublisher
from agents.replay import ReplayProgress, read_trace, stream_trace
from pipeline.core.profiles import DEFAULT_PROFILE_NAME
from pipeline.errors import ConfigError
from pipeline.metrics import serve_metrics
from pipeline.prsink.git import CommitAuthor
from pipeline.prsink.sink import load_values_map, run_sink
from pipeline.settings import Settings, require_bootstrap
from pipeline.topics import topic_names
from schemas.models import ContainerSampleBatch
from schemas.validate import encode

log = logging.getLogger(__name__)


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)


def run_agent_process(
    settings: Settings,
    registry: CollectorRegistry | None = None,
    *,
    kube_client: Any | None = None,
) -> None:
    """Run ``daytwo agent`` with the configured source, publishing through the spool.

    Why one entry point for every source: each source is a small class; this function
    turns the settings into them, checks what each source needs before anything starts
    (so a bad flag fails at once with a message naming it), serves metrics, and publishes
    through a :class:`~agents.publisher.SpoolingPublisher` with the input limits. The
    live sources run until SIGINT/SIGTERM; a replay and a ``backfill_only`` Prometheus
    run end by themselves, a replay with ``replay_linger`` only at SIGINT/SIGTERM (its
    metrics stay on /metrics for a scraper after the trace ends). ``kube_client`` (a
    ``lightkube.AsyncClient``) replaces the in-cluster / ``KUBECONFIG`` client of the
    kubelet and inventory sources.
    """
    bootstrap = require_bootstrap(settings)
    plan = _plan_agent(settings)
    registry = registry if registry is not None else CollectorRegistry()
    if settings.log_level.upper() != "DEBUG":
        # one INFO line per kubelet / Prometheus / API request would drown the agent's own
        for name in ("httpx", "httpx2"):
            logging.getLogger(name).setLevel(logging.WARNING)
    serve_metrics(registry, settings.metrics_port)
    asyncio.run(_run_agent(settings, plan, bootstrap, registry, kube_client))


@dataclass(frozen=True)
class _AgentPlan:
    """What the settings resolved to, checked before anything is started."""

    agent: str
    mapping: AgentMapping | None = None
    jvms: JvmAgentMapping | None = None
    trace: pl.DataFrame | None = None
    backfill: tuple[float, float] | None = None


def _plan_agent(settings: Settings) -> _AgentPlan:
    """Check that the chosen source has what it needs; read its files."""
    source = settings.source
    agent = settings.node_name or socket.gethostname()
    if source == "cgroup":
        if settings.mapping_file is None:
            msg = "the cgroup agent needs a mapping file: --mapping FILE or DAYTWO_MAPPING_FILE"
            raise ConfigError(msg)
        return _AgentPlan(agent, mapping=load_mapping(settings.mapping_file))
    if source == "replay":
        if settings.trace_file is None:
            msg = "the replay source needs a trace: --trace FILE or DAYTWO_TRACE_FILE"
            raise ConfigError(msg)
        trace = read_trace(settings.trace_file)
        if trace.height == 0:
            msg = f"trace {settings.trace_file} has no rows to replay"
            raise ConfigError(msg)
        return _AgentPlan(agent, trace=trace)
    if source == "prometheus":
        if settings.prometheus_url is None:
            msg = (
                "the prometheus source needs Prometheus: --prometheus-url URL or "
                "DAYTWO_PROMETHEUS_URL"
            )
            raise ConfigError(msg)
        PrometheusAuth.from_env()  # a half-configured credential fails here, not later
        window = _backfill_window(settings, now=time.time())
        if settings.backfill_only and window is None:
            msg = "--backfill-only needs --backfill-start or --backfill-days"
            raise ConfigError(msg)
        return _AgentPlan(agent, backfill=window)
    if source == "kubelet":
        if settings.node_name is None:
            msg = (
                "the kubelet source needs this node's name: DAYTWO_NODE_NAME (spec.nodeName "
                "through the downward API) or --node-name"
            )
            raise ConfigError(msg)
        if (settings.kubelet_host or settings.node_ip) is None:
            msg = (
                "the kubelet source needs the kubelet's address: DAYTWO_NODE_IP "
                "(status.hostIP through the downward API) or --kubelet-host"
            )
            raise ConfigError(msg)
        return _AgentPlan(agent)
    if source in ("jvm-log", "micrometer"):
        return _AgentPlan(agent, jvms=_jvm_mapping(settings))
    return _AgentPlan(agent)  # inventory: needs only the Kubernetes API


def _backfill_window(settings: Settings, *, now: float) -> tuple[float, float] | None:
    """``(start, end)`` epoch seconds of the Prometheus backfill, or None (no backfill)."""
    end = now if settings.backfill_end is None else _epoch(settings.backfill_end)
    if settings.backfill_start is not None:
        start = _epoch(settings.backfill_start)
    elif settings.backfill_days is not None:
        start = end - settings.backfill_days * 86_400
    else:
        return None
    if start >= end:
        msg = (
            f"the backfill starts ({_iso(start)}) at or after its end ({_iso(end)}); "
            "check --backfill-start / --backfill-end"
        )
        raise ConfigError(msg)
    return start, end


def _epoch(moment: datetime) -> float:
    """Epoch seconds; a time without a zone is UTC (as in trace files)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _jvm_mapping(settings: Settings) -> JvmAgentMapping:
    """The JVMs of the jvm-log / micrometer source: flags, plus a mapping's ``jvms:``."""
    flag, values, field_name = (
        ("--gc-log", settings.jvm_gc_logs, "gc_log")
        if settings.source == "jvm-log"
        else ("--micrometer", settings.micrometer_endpoints, "micrometer_url")
    )
    entries: list[dict[str, Any]] = []
    for value in values:
        target, sep, where = value.partition("=")
        workload, colon, container = target.rpartition(":")
        if not sep or not colon or not workload or not container or not where:
            msg = (
                f"{flag} {value!r}: expected WORKLOAD:CONTAINER={field_name.upper()}, e.g. "
                f"{settings.cluster_name}/shop/Deployment/checkout:app="
                + ("/var/log/gc.log" if field_name == "gc_log" else "http://10.0.0.7:8080/metrics")
            )
            raise ConfigError(msg)
        entries.append({"workload": workload, "container": container, field_name: where})
    if settings.mapping_file is not None and _has_jvms(settings.mapping_file):
        from_file = load_jvm_mapping(settings.mapping_file)
        if not entries:
            return from_file
        entries += [entry.model_dump(exclude_defaults=True) for entry in from_file.jvms]
    if not entries:
        env = "DAYTWO_JVM_GC_LOGS" if field_name == "gc_log" else "DAYTWO_MICROMETER_ENDPOINTS"
        msg = (
            f"the {settings.source} source needs at least one JVM: {flag} "
            f"WORKLOAD:CONTAINER={field_name.upper()} (or {env}), or a mapping file with a "
            "jvms: section (--mapping)"
        )
        raise ConfigError(msg)
    try:
        return JvmAgentMapping.model_validate({"cluster": settings.cluster_name, "jvms": entries})
    except ValidationError as error:
        problems = "; ".join(
            ".".join(str(part) for part in item["loc"]) + f": {item['msg']}"
            for item in error.errors()
        )
        msg = f"invalid {flag} values (cluster {settings.cluster_name!r}): {problems}"
        raise ConfigError(msg) from error


def _has_jvms(path: Path) -> bool:
    """Whether the mapping file has a ``jvms:`` section (read by the JVM collector)."""
    try:
        document = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    except OSError as error:
        msg = f"{path}: cannot read mapping file: {error.strerror or error}"
        raise ConfigError(msg) from error
    return isinstance(document, dict) and "jvms" in document


async def _run_agent(
    settings: Settings,
    plan: _AgentPlan,
    bootstrap: str,
    registry: CollectorRegistry,
    kube_client: Any | None,
) -> None:
    stop = asyncio.Event()
    _stop_on_signals(stop)
    spool_dir = settings.spool_dir or settings.data_dir / "spool"
    spool_dir.mkdir(parents=True, exist_ok=True)
    publisher = SpoolingPublisher.create(
        bootstrap,
        spool_dir,
        spool_max_bytes=settings.spool_max_bytes,
        limits=InputLimits(
            max_payload_bytes=settings.agent_max_payload_bytes,
            max_labels_per_sample=settings.agent_max_labels_per_sample,
            max_containers=settings.agent_max_containers,
            container_idle_seconds=settings.agent_container_idle_seconds,
        ),
        registry=registry,
        idempotent=not settings.broker_is_embedded,
        request_timeout_ms=round(settings.publish_timeout_seconds * 1000),
        client_id=f"daytwo-agent-{settings.source}",
    )
    async with publisher:
        if not publisher.connected:
            log.warning(
                "Kafka at %s does not answer; spooling to %s until it does", bootstrap, spool_dir
            )
        with contextlib.ExitStack() as closers:
            await _run_source(
                settings,
                plan=plan,
                publisher=publisher,
                registry=registry,
                kube_client=kube_client,
                stop=stop,
                closers=closers,
            )
        await publisher.flush()
        left = publisher.spool.depth_records
        if left:
            log.warning(
                "%d message(s) stay spooled in %s; the next agent with this spool directory "
                "sends them",
                left,
                spool_dir,
            )


async def _run_source(
    settings: Settings,
    *,
    plan: _AgentPlan,
    publisher: SpoolingPublisher,
    registry: CollectorRegistry,
    kube_client: Any | None,
    stop: asyncio.Event,
    closers: contextlib.ExitStack,
) -> None:
    metrics = AgentMetrics.create(registry)
    guard = publisher.guard
    sequence = BatchSequence()  # one per process: every path numbers its batches from it

    async def loop(collectors: list[Collector], wait_for: Callable[[], bool] | None = None) -> None:
        await run_agent(
            collectors,
            publisher,
            interval_seconds=settings.scrape_interval_seconds,
            stop_event=stop,
            clock=time.time,
            metrics=metrics,
            topic_prefix=settings.topic_prefix,
            guard=guard,
            wait_for=wait_for,
            sequence=sequence,
        )

    source = settings.source
    if source == "replay":
        assert plan.trace is not None  # _plan_agent read it
        await _replay(settings, plan.trace, publisher, stop, agent=plan.agent, sequence=sequence)
        if settings.replay_linger and not stop.is_set():
            log.info("the trace has been sent; serving metrics until SIGTERM/SIGINT (--linger)")
            await stop.wait()
    elif source == "prometheus":
        prometheus = PrometheusSource(
            PromQLClient(
                settings.prometheus_url or "",
                auth=PrometheusAuth.from_env(),
                metrics=PrometheusMetrics.create(registry),
            ),
            PrometheusSourceConfig(
                cluster=settings.cluster_name,
                step_seconds=settings.prometheus_step_seconds,
                scrape_interval_seconds=settings.prometheus_scrape_interval_seconds,
                budget=QueryBudget(max_series_per_query=settings.prometheus_max_series_per_query),
                agent=plan.agent,
                profile=settings.profile or DEFAULT_PROFILE_NAME,
            ),
        )
        closers.callback(prometheus.close)
        if plan.backfill is not None:
            await _prometheus_backfill(
                prometheus, plan.backfill, settings, publisher, stop, sequence=sequence
            )
        if not settings.backfill_only and not stop.is_set():
            await loop([prometheus])
    elif source in ("kubelet", "inventory"):
        await _kubernetes(
            settings,
            plan=plan,
            registry=registry,
            kube_client=kube_client,
            stop=stop,
            closers=closers,
            loop=loop,
        )
    elif source in ("jvm-log", "micrometer"):
        assert plan.jvms is not None  # _plan_agent built it
        jvm = JvmCollector(plan.jvms, agent=plan.agent, metrics=metrics)
        closers.callback(jvm.close)
        await loop([jvm])
    else:  # cgroup: the mapped cgroups, this node, and the JVMs of the mapping file
        assert plan.mapping is not None
        assert settings.mapping_file is not None
        mounts = CgroupMounts.discover()  # from /proc/self/mountinfo: v1, v2 or both
        collectors: list[Collector] = [NodeCollector(plan.agent, metrics=metrics)]
        if plan.mapping.cgroups:
            collectors.append(ContainerCollector(plan.mapping, mounts=mounts, metrics=metrics))
        if _has_jvms(settings.mapping_file):
            jvm = JvmCollector(load_jvm_mapping(settings.mapping_file), metrics=metrics)
            closers.callback(jvm.close)
            collectors.append(jvm)
        await loop(collectors)


async def _kubernetes(
    settings: Settings,
    *,
    plan: _AgentPlan,
    registry: CollectorRegistry,
    kube_client: Any | None,
    stop: asyncio.Event,
    closers: contextlib.ExitStack,
    loop: Callable[[list[Collector], Callable[[], bool] | None], Awaitable[None]],
) -> None:
    """The kubelet source (node-scoped inventory for the pod map) or the cluster-wide
    inventory that publishes workload specs; the inventory watches in the background."""
    client = kube_client if kube_client is not None else _kubernetes_client()
    node_scoped = settings.source == "kubelet"
    inventory = KubernetesInventory(
        client,
        InventoryConfig(
            cluster=settings.cluster_name,
            node_name=settings.node_name if node_scoped else None,
            default_profile=settings.profile or DEFAULT_PROFILE_NAME,
        ),
        metrics=InventoryMetrics.create(registry),
    )
    collectors: list[Collector] = [inventory]
    if node_scoped:
        kubelet_client = KubeletClient(
            KubeletConfig(
                node_name=plan.agent,
                host=settings.kubelet_host or settings.node_ip or "",
                port=settings.kubelet_port,
                token_file=settings.kubelet_token_file,
                ca_file=settings.kubelet_ca_file,
                insecure_skip_tls_verify=settings.kubelet_insecure_skip_tls_verify,
            )
        )
        closers.callback(kubelet_client.close)
        collectors = [
            KubeletSource(
                kubelet_client,
                inventory.pod_workloads,
                agent=plan.agent,
                metrics=KubeletMetrics.create(registry),
            )
        ]
    watching = asyncio.create_task(inventory.run(stop), name="inventory")
    try:
        await loop(collectors, _readiness(inventory))
    finally:
        stop.set()
        await watching
        if kube_client is None:
            await client.close()


def _kubernetes_client() -> Any:
    """lightkube's client from the pod's ServiceAccount, else ``KUBECONFIG`` / ~/.kube/config."""
    from lightkube import AsyncClient  # noqa: PLC0415 - only the Kubernetes sources need it
    from lightkube.core.exceptions import ConfigError as KubeConfigError  # noqa: PLC0415

    try:
        return AsyncClient()
    except KubeConfigError as error:
        msg = (
            "the kubelet and inventory sources need the Kubernetes API: run in a pod with "
            f"a ServiceAccount, or point KUBECONFIG at a kubeconfig ({error})"
        )
        raise ConfigError(msg) from error


def _readiness(inventory: KubernetesInventory) -> Callable[[], bool]:
    """``inventory.ready``, logging once while waiting and once when it holds."""
    said: set[str] = set()

    def ready() -> bool:
        state = "ready" if inventory.ready else "waiting"
        if state not in said:
            said.add(state)
            if state == "waiting":
                log.info("waiting for the inventory to list pods and their owners")
            else:
                log.info("inventory ready: %d pods mapped", len(inventory.pod_workloads()))
        return inventory.ready

    return ready


@contextlib.contextmanager
def _progress_bar(description: str, total: float) -> Iterator[Callable[[float, str], None]]:
    """A rich progress bar on stderr: ``update(completed, detail)``."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    ) as bar:
        task = bar.add_task(description, total=total, detail="")

        def update(completed: float, detail: str) -> None:
            bar.update(task, completed=completed, detail=detail)

        yield update


async def _replay(
    settings: Settings,
    trace: pl.DataFrame,
    publisher: SpoolingPublisher,
    stop: asyncio.Event,
    *,
    agent: str,
    sequence: BatchSequence,
) -> None:
    speedup = settings.replay_speedup
    pace = "max" if math.isinf(speedup) else f"x{speedup:g}"
    with _progress_bar(f"replay {pace}", trace.height) as update:

        def show(state: ReplayProgress) -> None:
            moment = "" if state.trace_time is None else f" · trace time {_iso(state.trace_time)}"
            update(
                state.samples_sent, f"{state.samples_sent}/{state.samples_total} samples{moment}"
            )

        result = await stream_trace(
            trace,
            publisher,
            topic=settings.topic_prefix + CONTAINER_SAMPLES_TOPIC,
            jvm_topic=settings.topic_prefix + JVM_SAMPLES_TOPIC,
            speedup=speedup,
            stop_event=stop,
            guard=publisher.guard,
            progress=show,
            agent=agent,
            sequence=sequence,
            pack_samples=settings.replay_pack_samples,
        )
    log.info(
        "replayed %d batches (%d samples, %d rejected; JVM: %d batches, %d samples, "
        "%d rejected) of %s in %.2f s at %s%s",
        result.batches,
        result.samples,
        result.rejected_samples,
        result.jvm_batches,
        result.jvm_samples,
        result.rejected_jvm_samples,
        settings.trace_file,
        result.wall_seconds,
        pace,
        " (stopped early)" if result.stopped_early else "",
    )


def _backfill_chunk(
    source: PrometheusSource, first: float, last: float
) -> list[ContainerSampleBatch]:
    """One chunk's batches (blocking HTTP: run on a worker thread)."""
    return list(source.backfill(first, last))


async def _prometheus_backfill(
    source: PrometheusSource,
    window: tuple[float, float],
    settings: Settings,
    publisher: SpoolingPublisher,
    stop: asyncio.Event,
    *,
    sequence: BatchSequence,
) -> None:
    """Publish the history in ``window`` chunk by chunk (queries run off the event loop)."""
    start, end = window
    topic = settings.topic_prefix + CONTAINER_SAMPLES_TOPIC
    guard = publisher.guard
    samples = 0
    with _progress_bar("prometheus backfill", end - start) as update:
        update(0, f"from {_iso(start)}")
        for first, last in source.chunks(start, end):
            if stop.is_set():
                break
            batches = await asyncio.to_thread(_backfill_chunk, source, first, last)
            for batch in pack_batches(batches):  # history: the catch-up shape
                message = OutgoingMessage(
                    CONTAINER_SAMPLES_TOPIC, batch.workload.encode(), encode(batch)
                )
                admitted = (
                    message if guard is None else guard_message(message, guard, batch.timestamp)
                )
                if admitted is None:
                    continue
                admitted = sequence.stamp(admitted)
                await publisher.send(topic, admitted.key, admitted.value)
                samples += len(batch.samples)
            await publisher.flush()
            update(last - start, f"{samples} samples · trace time {_iso(last)}")
    log.info(
        "backfilled %d samples from %s to %s%s",
        samples,
        _iso(start),
        _iso(end),
        " (stopped early)" if stop.is_set() else "",
    )


def run_sink_process(settings: Settings, registry: CollectorRegistry) -> None:
    """Consume recommendation sets until stopped: PRs for real, or local branches.

    With ``gitops_remote_url`` set the sink publishes for real (its own clone of the
    remote, the forge the settings name, its memory on the sink-state topic); otherwise
    it stays the dry run on the local repository ``gitops_repo`` (branch + .daytwo/PR.md).
    """
    from pipeline.prsink.sink import build_publisher  # noqa: PLC0415 - local to the sink runner
    from pipeline.topics import SINK_STATE_SPEC  # noqa: PLC0415 - local to the sink runner

    bootstrap = require_bootstrap(settings)
    for_real = settings.gitops_remote_url is not None
    if not for_real and settings.gitops_repo is None:
        msg = (
            "the sink needs the GitOps repository: --repo PATH or DAYTWO_GITOPS_REPO for a "
            "dry run, or DAYTWO_GITOPS_REMOTE_URL to push branches and open pull requests"
        )
        raise ConfigError(msg)
    # Before serving metrics: a bad forge setting or token fails the start, loudly.
    publisher = build_publisher(settings) if for_real else None
    serve_metrics(registry, settings.metrics_port)
    names = topic_names(settings.topic_prefix)
    log.info(
        "sink: %s",
        f"publishing to {settings.gitops_remote_url} ({settings.forge_kind or 'no forge'})"
        if for_real
        else f"dry run on {settings.gitops_repo}",
    )

    async def main() -> None:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        await run_sink(
            bootstrap,
            None if for_real else settings.gitops_repo,
            group_id=settings.sink_group_id,
            topic=names.recommendations,
            deadletter_topic=names.deadletter,
            stop_event=stop,
            registry=registry,
            base_branch=settings.gitops_base_branch,
            author=CommitAuthor(settings.git_author_name, settings.git_author_email),
            idempotent=not settings.broker_is_embedded,
            publisher=publisher,
            values_map=load_values_map(settings.helm_values_map),
            state_topic=settings.topic_prefix + SINK_STATE_SPEC.name if for_real else None,
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
