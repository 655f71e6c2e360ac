"""The JVM agent's mapping file: which GC log / Micrometer endpoint is which container's JVM.

Why: a GC log path or a metrics URL says nothing about the workload it belongs to. The
operator writes it down, next to (or instead of) the cgroup mapping::

    cluster: local
    jvms:
      - workload: local/shop/Deployment/checkout
        container: app
        gc_log: /var/log/checkout/gc.log            # -Xlog:gc*:file=... of that JVM
        micrometer_url: http://127.0.0.1:8080/actuator/prometheus
        java_options: "-XX:MaxRAMPercentage=75 -XX:+UseG1GC"   # as the JVM sees them
        pid: 4242                                    # optional: jcmd VM.flags instead

Every entry needs ``gc_log`` or ``micrometer_url`` (or both). Flags come from ``pid``
(jcmd) when given, else from ``java_options`` (``java ... -XX:+PrintFlagsFinal -version``).
A bad file raises ``ConfigError`` naming the file and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from agents.mapping import WORKLOAD_KINDS, WorkloadId
from pipeline.errors import ConfigError
from schemas.models import LABEL_PATTERN, MAX_JVM_OPTIONS_CHARS

__all__ = ["JvmAgentMapping", "JvmMapping", "load_jvm_mapping", "parse_jvm_mapping"]


class JvmMapping(BaseModel):
    """One JVM: where its signals are, and which workload's container it runs in."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    workload: WorkloadId
    container: str = Field(
        pattern=LABEL_PATTERN, max_length=128, description="container name the JVM runs in"
    )
    gc_log: Path | None = Field(
        default=None, description="the JVM's unified GC log file (-Xlog:gc*:file=...)"
    )
    micrometer_url: Annotated[str, Field(pattern=r"^https?://\S+$")] | None = Field(
        default=None, description="Prometheus endpoint with Micrometer's JVM meters"
    )
    java_options: Annotated[str, Field(max_length=MAX_JVM_OPTIONS_CHARS)] | None = Field(
        default=None,
        description="JVM options as the JVM sees them (JAVA_TOOL_OPTIONS + command line)",
    )
    pid: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="pid of the running JVM, for jcmd VM.flags"
    )
    java: str = Field(default="java", description="java launcher used for PrintFlagsFinal")
    start_at_end: bool = Field(
        default=False, description="skip what the GC log already holds when the agent starts"
    )

    @field_validator("workload")
    @classmethod
    def _workload_kind_is_known(cls, value: str) -> str:
        kind = value.split("/")[2]
        if kind not in WORKLOAD_KINDS:
            raise ValueError(f"kind {kind!r} is not one of {sorted(WORKLOAD_KINDS)}")
        return value

    @model_validator(mode="after")
    def _has_a_source(self) -> JvmMapping:
        if self.gc_log is None and self.micrometer_url is None:
            raise ValueError("needs gc_log or micrometer_url (or both)")
        return self

    @property
    def container_key(self) -> str:
        """``workload:container``, the identity the pipeline keys per-container state by."""
        return f"{self.workload}:{self.container}"


class JvmAgentMapping(BaseModel):
    """The whole ``jvms:`` mapping: the cluster name and the JVMs to watch."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cluster: str = Field(pattern=r"^[^/\s]+$", description="cluster name, first workload id part")
    jvms: tuple[JvmMapping, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> JvmAgentMapping:
        seen: set[str] = set()
        for index, entry in enumerate(self.jvms):
            if entry.workload.split("/")[0] != self.cluster:
                raise ValueError(
                    f"jvms[{index}].workload {entry.workload!r} is not in cluster {self.cluster!r}"
                )
            if entry.container_key in seen:
                raise ValueError(f"jvms[{index}]: container {entry.container_key!r} twice")
            seen.add(entry.container_key)
        return self

    def workloads(self) -> dict[str, tuple[JvmMapping, ...]]:
        """Entries grouped by workload id, in file order (one message per workload)."""
        grouped: dict[str, list[JvmMapping]] = {}
        for entry in self.jvms:
            grouped.setdefault(entry.workload, []).append(entry)
        return {workload: tuple(entries) for workload, entries in grouped.items()}


def parse_jvm_mapping(text: str, *, source: str = "<jvm mapping>") -> JvmAgentMapping:
    """Parse and validate the YAML; other top-level keys (``cgroups``) are left alone."""
    try:
        document = YAML(typ="safe", pure=True).load(text)
    except YAMLError as error:
        raise ConfigError(f"{source}: not valid YAML: {error}") from error
    if not isinstance(document, dict) or "jvms" not in document:
        raise ConfigError(f"{source}: expected a mapping with 'cluster' and 'jvms' keys")
    try:
        return JvmAgentMapping.model_validate(
            {"cluster": document.get("cluster"), "jvms": document["jvms"]}
        )
    except ValidationError as error:
        problems = "; ".join(
            ".".join(str(part) for part in item["loc"]) + f": {item['msg']}"
            for item in error.errors()
        )
        raise ConfigError(f"{source}: invalid jvms mapping: {problems}") from error


def load_jvm_mapping(path: Path) -> JvmAgentMapping:
    """Load the ``jvms:`` section of the mapping file at ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read mapping file: {error}") from error
    return parse_jvm_mapping(text, source=str(path))
