"""The ``daytwo`` command: broker, topics, agent, worker, sink, analyze, backtest, demo.

Each sub-command builds one :class:`~pipeline.settings.Settings` from its flags, the
``DAYTWO_*`` environment and the optional YAML file, then calls a thin runner. Flag
help comes from the settings' field descriptions.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import typer
from prometheus_client import CollectorRegistry

from pipeline.errors import DaytwoError
from pipeline.settings import Settings, load_settings, require_bootstrap

app = typer.Typer(
    name="daytwo",
    help="Full-stack right-sizing for Kubernetes, proposed as pull requests.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _help(field: str) -> str:
    description = Settings.model_fields[field].description
    return description or field


ConfigOpt = Annotated[Path | None, typer.Option("--config", help=_help("config"))]
BootstrapOpt = Annotated[
    str | None, typer.Option("--kafka-bootstrap", help=_help("kafka_bootstrap"))
]
PrefixOpt = Annotated[str | None, typer.Option("--topic-prefix", help=_help("topic_prefix"))]
LogOpt = Annotated[str | None, typer.Option("--log-level", help=_help("log_level"))]


def _settings(**overrides: Any) -> Settings:
    try:
        settings = load_settings(**overrides)
    except DaytwoError as exc:
        typer.echo(f"daytwo: {exc}", err=True)
        raise typer.Exit(2) from exc
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return settings


def _fail(exc: DaytwoError) -> typer.Exit:
    typer.echo(f"daytwo: {exc}", err=True)
    return typer.Exit(1)


@app.command()
def broker(
    port: Annotated[
        int | None, typer.Option(help="Port to listen on (default: a free one).")
    ] = None,
    partitions: Annotated[int | None, typer.Option(help=_help("partitions"))] = None,
    topic_prefix: PrefixOpt = None,
) -> None:
    """Run the embedded Kafka-compatible broker on 127.0.0.1 with daytwo's topics, until
    Ctrl-C. Prints the bootstrap address on stdout."""
    from pipeline.broker import run_broker_forever  # noqa: PLC0415 - keep CLI start fast
    from pipeline.topics import ensure_topics  # noqa: PLC0415

    settings = _settings(partitions=partitions, topic_prefix=topic_prefix)

    def create_topics(bootstrap: str) -> None:
        asyncio.run(
            ensure_topics(
                bootstrap, prefix=settings.topic_prefix, partitions_override=settings.partitions
            )
        )

    try:
        run_broker_forever(port, on_ready=create_topics)
    except DaytwoError as exc:
        raise _fail(exc) from exc


@app.command()
def topics(
    config: ConfigOpt = None,
    kafka_bootstrap: BootstrapOpt = None,
    topic_prefix: PrefixOpt = None,
    partitions: Annotated[int | None, typer.Option(help=_help("partitions"))] = None,
) -> None:
    """Create daytwo's topics (idempotent; checks partition counts)."""
    from pipeline.topics import ensure_topics  # noqa: PLC0415

    settings = _settings(
        config=config,
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        partitions=partitions,
    )
    try:
        asyncio.run(
            ensure_topics(
                require_bootstrap(settings),
                prefix=settings.topic_prefix,
                partitions_override=settings.partitions,
            )
        )
    except DaytwoError as exc:
        raise _fail(exc) from exc
    typer.echo("topics ready")


@app.command()
def agent(
    source: Annotated[str | None, typer.Option("--source", help=_help("source"))] = None,
    config: ConfigOpt = None,
    kafka_bootstrap: BootstrapOpt = None,
    topic_prefix: PrefixOpt = None,
    mapping_file: Annotated[
        Path | None, typer.Option("--mapping", help=_help("mapping_file"))
    ] = None,
    scrape_interval_seconds: Annotated[
        float | None, typer.Option("--interval", help=_help("scrape_interval_seconds"))
    ] = None,
    node_name: Annotated[str | None, typer.Option("--node-name", help=_help("node_name"))] = None,
    cluster_name: Annotated[
        str | None, typer.Option("--cluster-name", help=_help("cluster_name"))
    ] = None,
    prometheus_url: Annotated[
        str | None, typer.Option("--prometheus-url", help=_help("prometheus_url"))
    ] = None,
    prometheus_step_seconds: Annotated[
        float | None, typer.Option("--step", help=_help("prometheus_step_seconds"))
    ] = None,
    prometheus_scrape_interval_seconds: Annotated[
        float | None,
        typer.Option(
            "--prometheus-scrape-interval", help=_help("prometheus_scrape_interval_seconds")
        ),
    ] = None,
    prometheus_max_series_per_query: Annotated[
        int | None,
        typer.Option("--max-series-per-query", help=_help("prometheus_max_series_per_query")),
    ] = None,
    backfill_start: Annotated[
        str | None, typer.Option("--backfill-start", help=_help("backfill_start"))
    ] = None,
    backfill_days: Annotated[
        float | None, typer.Option("--backfill-days", help=_help("backfill_days"))
    ] = None,
    backfill_end: Annotated[
        str | None, typer.Option("--backfill-end", help=_help("backfill_end"))
    ] = None,
    backfill_only: Annotated[
        bool | None,
        typer.Option("--backfill-only/--continuous", help=_help("backfill_only")),
    ] = None,
    node_ip: Annotated[str | None, typer.Option("--node-ip", help=_help("node_ip"))] = None,
    kubelet_host: Annotated[
        str | None, typer.Option("--kubelet-host", help=_help("kubelet_host"))
    ] = None,
    kubelet_port: Annotated[
        int | None, typer.Option("--kubelet-port", help=_help("kubelet_port"))
    ] = None,
    kubelet_token_file: Annotated[
        Path | None, typer.Option("--kubelet-token-file", help=_help("kubelet_token_file"))
    ] = None,
    kubelet_ca_file: Annotated[
        Path | None, typer.Option("--kubelet-ca-file", help=_help("kubelet_ca_file"))
    ] = None,
    kubelet_insecure_skip_tls_verify: Annotated[
        bool | None,
        typer.Option(
            "--kubelet-insecure-tls",
            help=_help("kubelet_insecure_skip_tls_verify"),
        ),
    ] = None,
    trace_file: Annotated[Path | None, typer.Option("--trace", help=_help("trace_file"))] = None,
    replay_speedup: Annotated[
        str | None, typer.Option("--speedup", help=_help("replay_speedup"))
    ] = None,
    replay_pack_samples: Annotated[
        int | None, typer.Option("--pack", help=_help("replay_pack_samples"))
    ] = None,
    replay_linger: Annotated[
        bool | None, typer.Option("--linger/--no-linger", help=_help("replay_linger"))
    ] = None,
    jvm_gc_logs: Annotated[
        list[str] | None, typer.Option("--gc-log", help=_help("jvm_gc_logs"))
    ] = None,
    micrometer_endpoints: Annotated[
        list[str] | None, typer.Option("--micrometer", help=_help("micrometer_endpoints"))
    ] = None,
    spool_dir: Annotated[Path | None, typer.Option("--spool-dir", help=_help("spool_dir"))] = None,
    spool_max_bytes: Annotated[
        int | None, typer.Option("--spool-max-bytes", help=_help("spool_max_bytes"))
    ] = None,
    agent_max_containers: Annotated[
        int | None, typer.Option("--max-containers", help=_help("agent_max_containers"))
    ] = None,
    metrics_port: Annotated[int | None, typer.Option(help=_help("metrics_port"))] = None,
    log_level: LogOpt = None,
) -> None:
    """Collect samples from one source and publish them to Kafka (spooled to disk while
    Kafka is unreachable). Sources: cgroup (default), kubelet, prometheus, jvm-log,
    micrometer, replay, inventory."""
    from pipeline.runners import run_agent_process  # noqa: PLC0415

    settings = _settings(
        config=config,
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        source=source,
        mapping_file=mapping_file,
        scrape_interval_seconds=scrape_interval_seconds,
        node_name=node_name,
        cluster_name=cluster_name,
        prometheus_url=prometheus_url,
        prometheus_step_seconds=prometheus_step_seconds,
        prometheus_scrape_interval_seconds=prometheus_scrape_interval_seconds,
        prometheus_max_series_per_query=prometheus_max_series_per_query,
        backfill_start=backfill_start,
        backfill_days=backfill_days,
        backfill_end=backfill_end,
        backfill_only=backfill_only,
        node_ip=node_ip,
        kubelet_host=kubelet_host,
        kubelet_port=kubelet_port,
        kubelet_token_file=kubelet_token_file,
        kubelet_ca_file=kubelet_ca_file,
        kubelet_insecure_skip_tls_verify=kubelet_insecure_skip_tls_verify,
        trace_file=trace_file,
        replay_speedup=replay_speedup,
        replay_pack_samples=replay_pack_samples,
        replay_linger=replay_linger,
        jvm_gc_logs=jvm_gc_logs or None,
        micrometer_endpoints=micrometer_endpoints or None,
        spool_dir=spool_dir,
        spool_max_bytes=spool_max_bytes,
        agent_max_containers=agent_max_containers,
        metrics_port=metrics_port,
        log_level=log_level,
    )
    try:
        run_agent_process(settings)
    except DaytwoError as exc:
        raise _fail(exc) from exc


@app.command()
def inventory(
    config: ConfigOpt = None,
    kafka_bootstrap: BootstrapOpt = None,
    topic_prefix: PrefixOpt = None,
    cluster_name: Annotated[
        str | None, typer.Option("--cluster-name", help=_help("cluster_name"))
    ] = None,
    profile: Annotated[str | None, typer.Option(help=_help("profile"))] = None,
    scrape_interval_seconds: Annotated[
        float | None, typer.Option("--interval", help=_help("scrape_interval_seconds"))
    ] = None,
    spool_dir: Annotated[Path | None, typer.Option("--spool-dir", help=_help("spool_dir"))] = None,
    metrics_port: Annotated[int | None, typer.Option(help=_help("metrics_port"))] = None,
    log_level: LogOpt = None,
) -> None:
    """Watch the cluster's workloads (one replica per cluster) and publish each changed
    workload spec to the compacted workload-specs topic, keyed by workload id. Same as
    `daytwo agent --source inventory`."""
    from pipeline.runners import run_agent_process  # noqa: PLC0415

    settings = _settings(
        config=config,
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        source="inventory",
        cluster_name=cluster_name,
        profile=profile,
        scrape_interval_seconds=scrape_interval_seconds,
        spool_dir=spool_dir,
        metrics_port=metrics_port,
        log_level=log_level,
    )
    try:
        run_agent_process(settings)
    except DaytwoError as exc:
        raise _fail(exc) from exc


@app.command()
def worker(
    config: ConfigOpt = None,
    kafka_bootstrap: BootstrapOpt = None,
    topic_prefix: PrefixOpt = None,
    profile: Annotated[str | None, typer.Option(help=_help("profile"))] = None,
    min_samples: Annotated[int | None, typer.Option(help=_help("min_samples"))] = None,
    flush_interval_seconds: Annotated[
        float | None, typer.Option("--flush-interval", help=_help("flush_interval_seconds"))
    ] = None,
    metrics_port: Annotated[int | None, typer.Option(help=_help("metrics_port"))] = None,
    data_dir: Annotated[Path | None, typer.Option(help=_help("data_dir"))] = None,
    log_level: LogOpt = None,
) -> None:
    """Run a pipeline worker (Faust): windows, sizing, recommendations."""
    from pipeline.runners import run_worker_process  # noqa: PLC0415

    settings = _settings(
        config=config,
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        profile=profile,
        min_samples=min_samples,
        flush_interval_seconds=flush_interval_seconds,
        metrics_port=metrics_port,
        data_dir=data_dir,
        log_level=log_level,
    )
    try:
        run_worker_process(settings, CollectorRegistry())
    except DaytwoError as exc:
        raise _fail(exc) from exc


@app.command()
def sink(
    config: ConfigOpt = None,
    kafka_bootstrap: BootstrapOpt = None,
    topic_prefix: PrefixOpt = None,
    gitops_repo: Annotated[Path | None, typer.Option("--repo", help=_help("gitops_repo"))] = None,
    gitops_base_branch: Annotated[
        str | None, typer.Option("--base-branch", help=_help("gitops_base_branch"))
    ] = None,
    metrics_port: Annotated[int | None, typer.Option(help=_help("metrics_port"))] = None,
    log_level: LogOpt = None,
) -> None:
    """Consume recommendations: one pull request per workload on GitHub or GitLab when
    DAYTWO_GITOPS_REMOTE_URL and the forge settings are set, else (dry run) a local
    branch per workload in --repo with its PR text in .daytwo/PR.md."""
    from pipeline.runners import run_sink_process  # noqa: PLC0415

    settings = _settings(
        config=config,
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        gitops_repo=gitops_repo,
        gitops_base_branch=gitops_base_branch,
        metrics_port=metrics_port,
        log_level=log_level,
    )
    try:
        run_sink_process(settings, CollectorRegistry())
    except DaytwoError as exc:
        raise _fail(exc) from exc


@app.command()
def recommendations(
    follow: Annotated[
        bool, typer.Option("--follow", help="Keep printing sets as they arrive (Ctrl-C stops).")
    ] = False,
    from_beginning: Annotated[
        bool,
        typer.Option(
            "--from-beginning", help="With --follow: first print every set already on the topic."
        ),
    ] = False,
    workload: Annotated[
        str | None,
        typer.Option(help="Only this workload id, or a shell pattern such as 'prod/shop/*'."),
    ] = None,
    output: Annotated[
        Literal["table", "json"],
        typer.Option("--format", help="table, or json: one recommendation-set per line."),
    ] = "table",
    config: ConfigOpt = None,
    kafka_bootstrap: BootstrapOpt = None,
    topic_prefix: PrefixOpt = None,
    log_level: LogOpt = None,
) -> None:
    """Read the recommendations topic as a third party would (no consumer group). Without
    --follow: the latest set of every workload, then exit."""
    from pipeline.subscriber import run_subscriber  # noqa: PLC0415
    from pipeline.topics import topic_names  # noqa: PLC0415

    settings = _settings(
        config=config,
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        log_level=log_level or "WARNING",
    )
    try:
        run_subscriber(
            require_bootstrap(settings),
            topic_names(settings.topic_prefix).recommendations,
            follow_topic=follow,
            from_beginning=from_beginning,
            workload=workload,
            output=output,
            out=sys.stdout,
            err=sys.stderr,
        )
    except DaytwoError as exc:
        raise _fail(exc) from exc


TraceOpt = Annotated[
    Path,
    typer.Option(
        "--trace",
        exists=True,
        dir_okay=False,
        help="Trace file (CSV or Parquet; columns in docs/architecture.md).",
    ),
]
ProfileOpt = Annotated[
    str | None,
    typer.Option("--profile", help="Profile to size with (built in or from --profiles-file)."),
]
ProfilesFileOpt = Annotated[
    Path | None, typer.Option("--profiles-file", help=_help("profiles_file"))
]


def _batch_profile(settings: Settings, name: str | None) -> Any:
    from pipeline.profiles_file import load_catalog  # noqa: PLC0415  # batch-only import

    catalog = load_catalog(settings.profiles_file, default_profile=settings.profile)
    return catalog.get(name or catalog.default_profile)


@app.command()
def analyze(
    trace: TraceOpt,
    profile_name: ProfileOpt = None,
    output: Annotated[
        Literal["table", "json", "yaml", "csv"],
        typer.Option("--format", help="Output format."),
    ] = "table",
    profiles_file: ProfilesFileOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Print recommendations for every container in a trace file (no broker needed)."""
    from pipeline.batch import analyze as run_analyze  # noqa: PLC0415  # keeps startup light

    settings = _settings(config=config, profiles_file=profiles_file)
    try:
        typer.echo(run_analyze(trace, _batch_profile(settings, profile_name), output))
    except DaytwoError as exc:
        raise _fail(exc) from exc


@app.command()
def backtest(
    trace: TraceOpt,
    profile_name: ProfileOpt = None,
    output: Annotated[
        Literal["json", "table"],
        typer.Option("--format", help="Output format."),
    ] = "json",
    profiles_file: ProfilesFileOpt = None,
    nab_vcpus: Annotated[
        float | None,
        typer.Option(
            "--nab-vcpus",
            help="The file is a Numenta Anomaly Benchmark series (timestamp,value in CPU "
            "percent) of an instance with this many vCPUs.",
        ),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Replay a trace as a live system would and score daytwo against the vpa and krr
    baselines: mean request, under-provisioned share, simulated OOM kills, proposals."""
    import orjson  # noqa: PLC0415  # batch-only import

    from pipeline.batch import backtest as run_backtest  # noqa: PLC0415  # keeps startup light

    settings = _settings(config=config, profiles_file=profiles_file)
    try:
        report = run_backtest(trace, _batch_profile(settings, profile_name), nab_vcpus=nab_vcpus)
    except DaytwoError as exc:
        raise _fail(exc) from exc
    if output == "json":
        typer.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        return
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    table = Table(title=f"backtest {report['trace']} ({report['profile']})")
    results = cast(dict[str, dict[str, float | None]], report["results"])
    metrics = list(next(iter(results.values())))
    table.add_column("recommender")
    for metric in metrics:
        table.add_column(metric, justify="right")
    for name, values in results.items():
        table.add_row(name, *("—" if values[m] is None else f"{values[m]:.6g}" for m in metrics))
    Console().print(table)


@app.command()
def demo(
    workdir: Annotated[
        Path, typer.Option(help="Scratch directory for the demo (recreated).")
    ] = Path(".daytwo-demo"),
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 170.0,
    force_replay: Annotated[
        bool, typer.Option("--replay", help="Replay the bundled trace even if cgroups work.")
    ] = False,
) -> None:
    """Everything on one machine: broker, a real workload in a real cgroup, agent,
    worker and sink; prints the recommendations and the branch with its diff."""
    from pipeline.demo import run_demo  # noqa: PLC0415

    _settings(log_level="WARNING")  # the demo prints its own progress
    try:
        code = run_demo(workdir, timeout=timeout, force_replay=force_replay)
    except DaytwoError as exc:
        raise _fail(exc) from exc
    raise typer.Exit(code)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="daytwo")
    sys.exit(0)


if __name__ == "__main__":
    main()
