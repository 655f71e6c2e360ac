"""The Dockerfile builds the image the deploy files promise, without a Docker engine.

Parsed statically: pinned base images, a non-root user, only runtime dependencies
installed under constraints.txt (which must pin the whole runtime closure), every
package the distribution needs copied in, and the ``daytwo`` entry point. The
HEALTHCHECK command is executed for real against a live /metrics endpoint.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import re
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from prometheus_client import CollectorRegistry, Counter, start_http_server

from pipeline.settings import Settings

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
PYPROJECT: dict[str, Any] = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))

_PYTHON_BASE = re.compile(r"^python:3\.11\.\d+-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?$")


@dataclasses.dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: keyword (upper case) and its raw arguments."""

    keyword: str
    arguments: str

    def exec_form(self) -> list[str] | None:
        """The JSON (exec-form) argument list, or None for shell form."""
        text = self.arguments
        if self.keyword == "HEALTHCHECK":
            text = text.split("CMD", 1)[1]
        try:
            parsed = json.loads(text)
        except ValueError:
            return None
        return parsed if isinstance(parsed, list) else None


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions in order; comments dropped, backslash continuations joined."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, arguments = line.partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip()))
    assert not pending, "Dockerfile ends inside a continuation"
    return instructions


def stages(instructions: list[Instruction]) -> Iterator[list[Instruction]]:
    """The build stages, each starting with its FROM."""
    current: list[Instruction] = []
    for instruction in instructions:
        if instruction.keyword == "FROM" and current:
            yield current
            current = []
        if instruction.keyword == "FROM" or current:
            current.append(instruction)
    yield current


def resolved_bases(instructions: list[Instruction]) -> list[str]:
    """Each stage's base image with global ARG defaults substituted (stage names kept)."""
    args: dict[str, str] = {}
    bases: list[str] = []
    for instruction in instructions:
        if instruction.keyword == "ARG" and not bases and "=" in instruction.arguments:
            name, value = instruction.arguments.split("=", 1)
            args[name] = value
        if instruction.keyword == "FROM":
            image = instruction.arguments.split()[0]
            bases.append(re.sub(r"\$\{?(\w+)\}?", lambda m: args[m.group(1)], image))
    return bases


def instructions() -> list[Instruction]:
    """The repository's Dockerfile, parsed."""
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def final_stage() -> list[Instruction]:
    """The instructions of the stage that becomes the image."""
    return list(stages(instructions()))[-1]


def test_every_base_image_is_pinned_slim_python_3_11() -> None:
    stage_names = {
        i.arguments.split()[-1]
        for i in instructions()
        if i.keyword == "FROM" and " AS " in i.arguments.upper()
    }
    bases = [b for b in resolved_bases(instructions()) if b not in stage_names]
    assert bases
    for base in bases:
        assert _PYTHON_BASE.match(base), f"{base} is not an exact slim python 3.11 tag"
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"


def test_the_parser_and_pin_check_catch_unpinned_bases() -> None:
    loose = parse_dockerfile(
        "ARG IMG=python:3.11-slim\nFROM ${IMG} AS b\nFROM b\nFROM python:latest\n"
    )
    assert resolved_bases(loose) == ["python:3.11-slim", "b", "python:latest"]
    assert not _PYTHON_BASE.match("python:3.11-slim")
    assert not _PYTHON_BASE.match("python:latest")


def test_image_runs_as_a_non_root_user() -> None:
    users = [i.arguments for i in final_stage() if i.keyword == "USER"]
    assert users, "the final stage never leaves root"
    user = users[-1].split(":")[0]
    assert user.isdigit(), "use a numeric uid (runAsNonRoot can only check a number)"
    assert int(user) != 0
    last_user = max(n for n, i in enumerate(final_stage()) if i.keyword == "USER")
    assert all(i.keyword != "RUN" for i in final_stage()[last_user:]), "RUN after USER"
    # The uid the Kubernetes manifests and compose run as is the one created here.
    created = " ".join(i.arguments for i in final_stage() if i.keyword == "RUN")
    assert f"--uid {user}" in created


def test_only_runtime_dependencies_are_installed_under_constraints() -> None:
    installs = [
        i.arguments for i in instructions() if i.keyword == "RUN" and "pip install" in i.arguments
    ]
    assert len(installs) == 1
    words = installs[0].split()
    assert words[words.index("-c") + 1] == "constraints.txt"
    assert words[-1] == ".", "install the project itself, without extras (no [dev])"
    assert "[dev]" not in installs[0]


def _runtime_closure() -> set[str]:
    """Every distribution installing the project pulls in (no extras), by normalised name."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in seen or (requirement.marker and not requirement.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        todo.extend(Requirement(r) for r in importlib.metadata.requires(requirement.name) or [])
    return seen


def test_constraints_pin_the_whole_runtime_closure() -> None:
    pins: dict[str, str] = {}
    for line in (REPO / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, version = line.split("==", 1)
            pins[canonicalize_name(name)] = version.strip()
    closure = _runtime_closure()
    assert closure >= {"faust-streaming", "aiokafka", "pydantic"}
    assert closure - set(pins) == set(), "unpinned runtime dependencies"
    for name in closure:
        assert pins[name] == importlib.metadata.version(name), name


def test_the_build_copies_everything_the_distribution_packages() -> None:
    copied = set()
    for instruction in instructions():
        if instruction.keyword == "COPY" and not instruction.arguments.startswith("--from"):
            copied.update(instruction.arguments.split()[:-1])
    for source in copied:
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"
    packages = {
        p.rstrip("*") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    assert packages <= copied
    assert {"pyproject.toml", "constraints.txt", PYPROJECT["project"]["readme"]} <= copied


def test_entrypoint_is_the_daytwo_console_script() -> None:
    (entrypoint,) = [i for i in final_stage() if i.keyword == "ENTRYPOINT"]
    assert entrypoint.exec_form() == ["daytwo"]
    assert "daytwo" in PYPROJECT["project"]["scripts"]


def _healthcheck_command() -> list[str]:
    (healthcheck,) = [i for i in final_stage() if i.keyword == "HEALTHCHECK"]
    command = healthcheck.exec_form()
    assert command is not None, "HEALTHCHECK should use exec form"
    assert command[0] == "python"
    return [sys.executable, *command[1:]]


def _run_healthcheck(env: dict[str, str]) -> int:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DAYTWO_")}
    return subprocess.run(
        _healthcheck_command(), env={**clean, **env}, capture_output=True, timeout=30, check=False
    ).returncode


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_healthcheck_passes_when_metrics_are_served_and_fails_when_not() -> None:
    registry = CollectorRegistry()
    Counter("daytwo_probe_total", "Healthcheck probe.", registry=registry)
    port = _free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        assert _run_healthcheck({"DAYTWO_METRICS_PORT": str(port)}) == 0
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert _run_healthcheck({"DAYTWO_METRICS_PORT": str(_free_port())}) != 0
    assert _run_healthcheck({"DAYTWO_METRICS_PORT": "0"}) == 0, "metrics off means healthy"


def test_exposed_port_is_the_default_metrics_port() -> None:
    exposed = {int(i.arguments.split("/")[0]) for i in final_stage() if i.keyword == "EXPOSE"}
    assert exposed == {Settings.model_fields["metrics_port"].default}
