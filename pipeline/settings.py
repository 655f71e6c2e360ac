"""One validated, frozen settings object for every daytwo process.

Environment variables (``DAYTWO_*``), an optional YAML file (``DAYTWO_CONFIG`` or
``--config``) and CLI flags all land in :class:`Settings`. Precedence, highest first:
CLI flags, environment, YAML file, defaults. The CLI's ``--help`` text is taken from
the field descriptions below, so documentation and behaviour cannot drift apart.

>>> Settings(kafka_bootstrap="kafka:9092").kafka_bootstrap
'kafka:9092'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator
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
