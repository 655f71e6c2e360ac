"""The bare-metal agent's mapping file: which cgroup is which workload's container.

Why: on a host without a kubelet, nothing says that ``/daytwo-demo/burner`` is the
``burner`` container of ``local/demo/Deployment/burner``. The operator writes it down::

    cluster: local
    cgroups:
      - path: /daytwo-demo/burner      # relative to each controller's mount
        workload: local/demo/Deployment/burner
        container: burner

It is loaded with ruamel.yaml (safe loader) and validated with pydantic; a bad file
raises ``ConfigError`` naming the file and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from pipeline.errors import ConfigError

__all__ = ["WORKLOAD_KINDS", "AgentMapping", "CgroupMapping", "load_mapping", "parse_mapping"]

#: Kinds a workload id may name (``Process`` for bare processes and cgroups).
WORKLOAD_KINDS = frozenset(
    {"Deployment", "StatefulSet", "DaemonSet", "CronJob", "Job", "Rollout", "Process"}
)
_SEGMENT = r"[^/\s]+"
WORKLOAD_ID_PATTERN = rf"^{_SEGMENT}/{_SEGMENT}/{_SEGMENT}/{_SEGMENT}$"
# Same shapes as the container-sample-batch schema (schemas/), so every mapped name is valid
# on the wire.
_CONTAINER_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$"

WorkloadId = Annotated[
    str,
    Field(
        pattern=WORKLOAD_ID_PATTERN,
        max_length=512,
        description="workload id: cluster/namespace/kind/name",
    ),
]


class CgroupMapping(BaseModel):
    """One cgroup and the container it belongs to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str = Field(description="cgroup path relative to each controller mount, e.g. /x/y")
    workload: WorkloadId
    container: str = Field(
        pattern=_CONTAINER_PATTERN,
        max_length=128,
        description="container name (letters, digits, '-', '.', '_'; no ':')",
    )

    @field_validator("path")
    @classmethod
    def _path_is_below_the_mount(cls, value: str) -> str:
        parts = [part for part in value.split("/") if part]
        if not value.startswith("/") or not parts:
            raise ValueError("must be an absolute cgroup path below the mount, e.g. /demo/app")
        if any(part in {".", ".."} for part in parts):
            raise ValueError("must not contain '.' or '..' components")
        return "/" + "/".join(parts)

    @field_validator("workload")
    @classmethod
    def _workload_kind_is_known(cls, value: str) -> str:
        kind = value.split("/")[2]
        if kind not in WORKLOAD_KINDS:
            raise ValueError(f"kind {kind!r} is not one of {sorted(WORKLOAD_KINDS)}")
        return value

    @property
    def container_key(self) -> str:
        """``workload:container``, the identity the pipeline keys per-container state by."""
        return f"{self.workload}:{self.container}"


class AgentMapping(BaseModel):
    """The whole mapping file: the cluster name and the cgroups to watch."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cluster: str = Field(pattern=r"^[^/\s]+$", description="cluster name, first workload id part")
    cgroups: tuple[CgroupMapping, ...] = Field(
        description="cgroups to watch (may be empty when the file lists only jvms)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> AgentMapping:
        seen_keys: set[str] = set()
        seen_paths: set[str] = set()
        for index, entry in enumerate(self.cgroups):
            if entry.workload.split("/")[0] != self.cluster:
                raise ValueError(
                    f"cgroups[{index}].workload {entry.workload!r} is not in cluster "
                    f"{self.cluster!r}"
                )
            if entry.container_key in seen_keys:
                raise ValueError(f"cgroups[{index}]: container {entry.container_key!r} twice")
            if entry.path in seen_paths:
                raise ValueError(f"cgroups[{index}].path {entry.path!r} is mapped twice")
            seen_keys.add(entry.container_key)
            seen_paths.add(entry.path)
        return self

    def workloads(self) -> dict[str, tuple[CgroupMapping, ...]]:
        """Entries grouped by workload id, in file order (one message per workload)."""
        grouped: dict[str, list[CgroupMapping]] = {}
        for entry in self.cgroups:
            grouped.setdefault(entry.workload, []).append(entry)
        return {workload: tuple(entries) for workload, entries in grouped.items()}


def _field_name(location: tuple[int | str, ...]) -> str:
    name = ""
    for part in location:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else part)
    return name or "(top level)"


def parse_mapping(text: str, *, source: str = "<mapping>") -> AgentMapping:
    """Parse and validate mapping YAML; ``source`` names the file in error messages."""
    try:
        document = YAML(typ="safe", pure=True).load(text)
    except YAMLError as error:
        raise ConfigError(f"{source}: not valid YAML: {error}") from error
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: expected a mapping with 'cluster' and 'cgroups' keys")
    # The ``jvms:`` section belongs to agents/jvm_mapping.py; a file may hold only it.
    cgroup_part = {k: v for k, v in document.items() if k != "jvms"}
    if "jvms" in document and "cgroups" not in document:
        cgroup_part["cgroups"] = []
    elif not cgroup_part.get("cgroups"):
        raise ConfigError(f"{source}: invalid mapping: cgroups: list at least one cgroup")
    try:
        return AgentMapping.model_validate(cgroup_part)
    except ValidationError as error:
        items = error.errors()
        entry_failed = any(len(item["loc"]) > 1 for item in items)
        # pydantic also reports a too-short tuple when entries failed; that is noise.
        problems = "; ".join(
            f"{_field_name(tuple(item['loc']))}: {item['msg']}"
            for item in items
            if not (entry_failed and item["type"] == "too_short")
        )
        raise ConfigError(f"{source}: invalid mapping: {problems}") from error


def load_mapping(path: Path) -> AgentMapping:
    """Load the mapping file at ``path``; raises ``ConfigError`` naming file and field."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read mapping file: {error}") from error
    return parse_mapping(text, source=str(path))
