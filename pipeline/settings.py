"""One validated, frozen settings object for every daytwo process.

Environment variables (``DAYTWO_*``), an optional YAML file (``DAYTWO_CONFIG`` or
``--config``) and CLI flags all land in :class:`Settings`. Precedence, highest first:
CLI flags, environment, YAML file, defaults. The CLI's ``--help`` text is taken from
the field descriptions below, so documentation and behaviour cannot drift apart.

>>> Settings(kafka_bootstrap="kafka:9092").kafka_bootstrap
'kafka:9092'
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from pipeline.errors import ConfigError


class Settings(BaseSettings):
    """Everything a daytwo process can be told, validated once at start-up."""

    model_config = SettingsConfigDict(env_prefix="DAYTWO_", frozen=True, extra="forbid")

    config: Path | None = Field(
        default=None, description="YAML settings file (keys are the field names below)."
    )
    kafka_bootstrap: str | None = Field(
        default=None,
        description=(
            "Kafka bootstrap address host:port. Unset: commands that need Kafka ask you to "
            "start one (`daytwo broker`); the demo starts the embedded broker itself."
        ),
    )
    broker_is_embedded: bool = Field(
        default=False,
        description=(
            "The broker is the embedded Tansu broker: apply its workarounds (one record "
            "per changelog batch, see docs/architecture.md)."
        ),
    )
    topic_prefix: str = Field(
        default="", description="Prefix for every daytwo topic name (isolation in tests)."
    )
    partitions: int = Field(
        default=8, ge=1, le=1024, description="Partitions of the keyed daytwo topics."
    )
    profile: str | None = Field(
        default=None,
        description="Default sizing profile for workloads without an annotation or namespace "
        "default (else the profiles file's default_profile, else balanced).",
    )
    profiles_file: Path | None = Field(
        default=None,
        description="YAML file with custom profiles, namespace defaults and prices "
        "(see pipeline/profiles_file.py).",
    )
    profile_overrides: dict[str, float | int | str] = Field(
        default_factory=dict,
        description="Profile fields overridden for every profile, e.g. "
        "'{\"evaluation_interval_seconds\": 5}' (JSON in the environment); for demos and tests.",
    )
    min_samples: int | None = Field(
        default=None,
        ge=1,
        description="Override the profile's minimum samples before a recommendation.",
    )
    memory_peak_interval_seconds: float | None = Field(
        default=None,
        gt=0,
        description="Override the profile's memory peak interval (seconds).",
    )
    flush_interval_seconds: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="Worker checkpoint interval: each container's state is written at most "
        "once per interval, and input offsets are committed only after it.",
    )
    worker_app_id: str = Field(
        default="daytwo-worker", description="Faust application id (consumer group)."
    )
    session_timeout_seconds: float = Field(
        default=10.0,
        ge=1.0,
        le=300.0,
        description="Worker: consumer-group session timeout. A restarted worker waits this "
        "long for its dead predecessor to leave the group; longer tolerates slower "
        "checkpoints (seconds).",
    )
    sink_group_id: str = Field(
        default="daytwo-sink", description="Sink: Kafka consumer group of the PR sink."
    )
    data_dir: Path = Field(
        default=Path(".daytwo-data"), description="Directory for worker-local files."
    )
    metrics_port: int = Field(
        default=9464,
        ge=0,
        le=65535,
        description="Port of the Prometheus /metrics endpoint (0 = off).",
    )
    scrape_interval_seconds: float = Field(
        default=10.0, gt=0, le=3600, description="Agent scrape interval (seconds)."
    )
    mapping_file: Path | None = Field(
        default=None, description="Agent: YAML file mapping cgroup paths to workloads."
    )
    node_name: str | None = Field(
        default=None, description="Agent: node name in node samples (default: hostname)."
    )
    # -- agent sources (issue 6; pipeline/runners.py wires them, `daytwo agent --help`)
    source: Literal[
        "cgroup", "kubelet", "prometheus", "jvm-log", "micrometer", "replay", "inventory"
    ] = Field(
        default="cgroup",
        description="Agent: where samples come from: cgroup (the mapped cgroups and this "
        "node), kubelet (this node's kubelet /stats/summary, pods mapped by the inventory), "
        "prometheus (backfill, then continuous), jvm-log (JVM GC logs), micrometer (JVM "
        "metrics endpoints), replay (a trace file), inventory (cluster-wide workload specs "
        "to the compacted workload-specs topic).",
    )
    cluster_name: str = Field(
        default="local",
        pattern=r"^[^/\s]+$",
        max_length=253,
        description="Agent: cluster name, the first part of every workload id the kubelet, "
        "prometheus, inventory and jvm sources build.",
    )
    prometheus_url: str | None = Field(
        default=None,
        pattern=r"^https?://\S+$",
        description="Agent (prometheus): base URL of Prometheus, e.g. http://prometheus:9090. "
        "Credentials: DAYTWO_PROMETHEUS_BEARER_TOKEN (or _BEARER_TOKEN_FILE), or "
        "DAYTWO_PROMETHEUS_USERNAME with DAYTWO_PROMETHEUS_PASSWORD (or _PASSWORD_FILE).",
    )
    prometheus_step_seconds: float = Field(
        default=60.0,
        ge=1,
        le=86400,
        description="Agent (prometheus): evaluation step, one sample per container per step "
        "(a multiple of the scrape interval).",
    )
    prometheus_scrape_interval_seconds: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="Agent (prometheus): how often Prometheus scrapes cAdvisor (sets the "
        "rate window: step + scrape interval / 2).",
    )
    prometheus_max_series_per_query: int = Field(
        default=500,
        ge=1,
        description="Agent (prometheus): series budget of one query; bigger selections are "
        "sharded by namespace and pod prefix so Prometheus stays safe.",
    )
    backfill_start: datetime | None = Field(
        default=None,
        description="Agent (prometheus): backfill history from this time (ISO-8601 or epoch "
        "seconds) before going continuous. Exclusive with backfill_days.",
    )
    backfill_days: float | None = Field(
        default=None,
        gt=0,
        le=366,
        description="Agent (prometheus): backfill this many days of history before going "
        "continuous. Exclusive with backfill_start.",
    )
    backfill_end: datetime | None = Field(
        default=None,
        description="Agent (prometheus): end of the backfill (default: now).",
    )
    backfill_only: bool = Field(
        default=False,
        description="Agent (prometheus): exit after the backfill instead of going continuous.",
    )
    node_ip: str | None = Field(
        default=None,
        description="Agent (kubelet): this node's IP (status.hostIP through the downward API); "
        "the kubelet is reached there unless kubelet_host is set.",
    )
    kubelet_host: str | None = Field(
        default=None, description="Agent (kubelet): kubelet address (default: node_ip)."
    )
    kubelet_port: int = Field(
        default=10250, ge=1, le=65535, description="Agent (kubelet): kubelet HTTPS port."
    )
    kubelet_token_file: Path = Field(
        default=Path("/var/run/secrets/kubernetes.io/serviceaccount/token"),
        description="Agent (kubelet): bearer token file (the ServiceAccount's, re-read on "
        "every call; needs only 'get' on nodes/stats).",
    )
    kubelet_ca_file: Path | None = Field(
        default=Path("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"),
        description="Agent (kubelet): CA bundle that signed the kubelet's serving "
        "certificate (default: the ServiceAccount's ca.crt).",
    )
    kubelet_insecure_skip_tls_verify: bool = Field(
        default=False,
        description="Agent (kubelet): do not verify the kubelet's certificate (self-signed "
        "kubelet certificates only, like metrics-server's --kubelet-insecure-tls).",
    )
    trace_file: Path | None = Field(
        default=None,
        description="Agent (replay): trace file to stream (CSV or Parquet; columns in "
        "docs/architecture.md); the agent exits at its end.",
    )
    replay_speedup: float = Field(
        default=1.0,
        description="Agent (replay): trace seconds per wall-clock second (1 ... 10000), or "
        "'max' to send as fast as the broker takes them (no pacing); samples keep their "
        "original timestamps.",
    )
    replay_pack_samples: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="Agent (replay, with --speedup max): catch up like a backfill, with one "
        "batch per workload holding its consecutive instants, up to this many samples "
        "(1 ... 1000), instead of one batch per workload per instant; far fewer messages "
        "for the worker to consume (docs/benchmarks.md). Unset: one batch per instant.",
    )
    replay_linger: bool = Field(
        default=False,
        description="Agent (replay): when the trace has been sent, keep running and serving "
        "metrics until SIGTERM/SIGINT instead of exiting, so a Prometheus scraping the agent "
        "still sees what it published.",
    )
    jvm_gc_logs: list[str] = Field(
        default_factory=list,
        description="Agent (jvm-log): GC logs to tail, each WORKLOAD:CONTAINER=PATH, the "
        "workload id with the container name, then the log file (repeat the flag; a JSON "
        "list in the environment). Alternatively a mapping file with a jvms: section.",
    )
    micrometer_endpoints: list[str] = Field(
        default_factory=list,
        description="Agent (micrometer): JVM metrics endpoints, each WORKLOAD:CONTAINER=URL "
        "(repeat the flag; a JSON list in the environment). Alternatively a mapping file "
        "with a jvms: section.",
    )
    spool_dir: Path | None = Field(
        default=None,
        description="Agent: directory of the on-disk spool that holds messages while Kafka "
        "is unreachable (default: <data_dir>/spool); one agent per directory.",
    )
    spool_max_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=4096,
        description="Agent: size cap of the spool; beyond it the oldest messages are "
        "evicted (counted and logged).",
    )
    publish_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="Agent: how long an unacknowledged message waits before the broker "
        "counts as down and messages go to the spool.",
    )
    agent_max_payload_bytes: int = Field(
        default=1_000_000,
        ge=1,
        description="Agent input limit: largest encoded message; larger ones are rejected "
        "(counted by reason).",
    )
    agent_max_labels_per_sample: int = Field(
        default=64,
        ge=1,
        description="Agent input limit: labels per scraped series (Prometheus, Micrometer).",
    )
    agent_max_containers: int = Field(
        default=5000,
        ge=1,
        description="Agent input limit: distinct containers reported; samples of further "
        "ones are rejected (reason too_many_containers).",
    )
    agent_container_idle_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="Agent input limit: a container unseen this long stops counting "
        "against agent_max_containers.",
    )
    gitops_repo: Path | None = Field(
        default=None, description="Sink: local git repository holding the manifests."
    )
    gitops_base_branch: str | None = Field(
        default=None, description="Sink: branch PRs are based on (default: repo's HEAD)."
    )
    git_author_name: str = Field(default="daytwo", description="Sink: commit author name.")
    git_author_email: str = Field(
        default="daytwo@localhost", description="Sink: commit author e-mail."
    )
    log_level: str = Field(default="INFO", description="Log level (DEBUG, INFO, WARNING...).")
    # -- PR sink: remote, forge, quotas (see pipeline/prsink/sink.py, build_forge)
    gitops_remote_url: str | None = Field(
        default=None,
        description="Sink: GitOps remote to clone, fetch and push (a local path or an "
        "https/ssh URL without a token in it). Unset: dry-run on --repo (local branch + "
        ".daytwo/PR.md).",
    )
    gitops_clone_dir: Path | None = Field(
        default=None,
        description="Sink: where the sink keeps its own bare clone of the remote "
        "(default: <data_dir>/gitops-clone).",
    )
    git_username: str | None = Field(
        default=None,
        description="Sink: user name git sends with the token over https (default: "
        "x-access-token for GitHub, oauth2 for GitLab).",
    )
    helm_values_map: Path | None = Field(
        default=None,
        description="Sink: YAML file mapping workload id (or 'workload id:container') to "
        "the Helm values file and key path of its resources, 'values.yaml#app.resources' "
        "(for workloads without the daytwo.io/values-path annotation).",
    )
    forge_kind: Literal["github", "gitlab"] | None = Field(
        default=None,
        description="Sink: forge to open pull/merge requests on (github or gitlab); unset "
        "pushes branches only.",
    )
    forge_repository: str | None = Field(
        default=None,
        description="Sink: repository on the forge: 'owner/name' on GitHub, the project "
        "path ('group/project') or numeric id on GitLab.",
    )
    forge_api_url: str | None = Field(
        default=None,
        description="Sink: forge REST API base URL (default https://api.github.com or "
        "https://gitlab.com/api/v4; set it for GitHub Enterprise or self-managed GitLab).",
    )
    forge_token_env: str = Field(
        default="DAYTWO_FORGE_TOKEN",
        description="Sink: name of the environment variable holding the forge token "
        "(also used for git over https); never logged.",
    )
    forge_token_file: Path | None = Field(
        default=None,
        description="Sink: file holding the forge token (a mounted secret), read when the "
        "variable is unset.",
    )
    github_app_id: str | None = Field(
        default=None,
        description="Sink: GitHub App id; with the key file, the sink uses App "
        "installation tokens instead of a static token.",
    )
    github_app_private_key_file: Path | None = Field(
        default=None, description="Sink: the GitHub App's private key (PEM file)."
    )
    github_app_installation_id: int | None = Field(
        default=None,
        ge=1,
        description="Sink: the App's installation id (default: looked up on the repository).",
    )
    forge_bot_logins: list[str] = Field(
        default_factory=list,
        description="Sink: forge accounts that are the bot itself (e.g. daytwo[bot]); a PR "
        "closed by any other account was closed by a human and is not reopened unless the "
        "recommendation changes materially.",
    )
    pr_max_open: int = Field(
        default=20,
        ge=0,
        description="Sink: at most this many daytwo PRs open at once; further new PRs wait.",
    )
    pr_max_new_per_hour: int = Field(
        default=5, ge=0, description="Sink: at most this many new PRs in any hour."
    )

    @field_validator("replay_speedup", mode="before")
    @classmethod
    def _speedup_max(cls, value: object) -> object:
        if isinstance(value, str):
            if value.strip().lower() == "max":
                return math.inf  # agents.replay.UNPACED (not imported: it pulls in polars)
            try:
                return float(value)
            except ValueError:
                msg = f"replay_speedup must be a number within 1 ... 10000 or 'max', got {value!r}"
                raise ValueError(msg) from None
        return value

    @field_validator("replay_speedup")
    @classmethod
    def _speedup_range(cls, value: float) -> float:
        if value != math.inf and not 1.0 <= value <= 10_000.0:
            msg = f"replay_speedup must be within 1 ... 10000 or 'max', got {value:g}"
            raise ValueError(msg)
        return value

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap_shape(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        for part in value.split(","):
            host, sep, port = part.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                msg = f"kafka_bootstrap must be host:port[,host:port...], got {value!r}"
                raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _one_backfill_start(self) -> Settings:
        if self.backfill_start is not None and self.backfill_days is not None:
            msg = "set backfill_start or backfill_days, not both"
            raise ValueError(msg)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """CLI (init) > environment > YAML file > defaults."""
        return (init_settings, env_settings, _YamlSource(settings_cls, init_settings))


class _YamlSource(PydanticBaseSettingsSource):
    """Reads the YAML file named by ``config`` (from the CLI) or ``DAYTWO_CONFIG``."""

    def __init__(
        self, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource
    ) -> None:
        super().__init__(settings_cls)
        self._init = init_settings

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        # Unused: __call__ returns the whole mapping at once.
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        import os  # noqa: PLC0415 - only needed here

        path = self._init().get("config") or os.environ.get("DAYTWO_CONFIG")
        if not path:
            return {}
        return load_yaml_settings(Path(path))


def load_yaml_settings(path: Path) -> dict[str, Any]:
    """Read a settings YAML file; errors name the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        msg = f"cannot read settings file {path}: {exc.strerror}"
        raise ConfigError(msg) from exc
    try:
        data = YAML(typ="safe").load(text)
    except YAMLError as exc:
        msg = f"settings file {path} is not valid YAML: {exc}"
        raise ConfigError(msg) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        msg = f"settings file {path} must hold a mapping of setting names to values"
        raise ConfigError(msg)
    return {str(k): v for k, v in data.items()}


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from CLI overrides (None = not given), env and YAML.

    Validation errors become one :class:`ConfigError` that names each bad field.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        msg = f"invalid settings: {problems}"
        raise ConfigError(msg) from exc


def require_bootstrap(settings: Settings) -> str:
    """The Kafka address, or a ConfigError that says how to get one."""
    if settings.kafka_bootstrap is None:
        msg = (
            "no Kafka to talk to: set DAYTWO_KAFKA_BOOTSTRAP=host:port (or --kafka-bootstrap), "
            "e.g. after starting the embedded broker with `daytwo broker`"
        )
        raise ConfigError(msg)
    return settings.kafka_bootstrap
