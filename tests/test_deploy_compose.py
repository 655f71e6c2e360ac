"""docker-compose.yml is valid Compose and names only what the code really has.

No Docker engine is needed: the file is validated against the Compose Specification
JSON schema (the copy the npm package ``dclint`` ships; ``npm ci --prefix deploy/tools
--ignore-scripts`` installs it, pinned by deploy/tools/package-lock.json), then every
``daytwo`` command line is parsed by the real typer app, every ``DAYTWO_*`` variable is
checked against :class:`pipeline.settings.Settings` and validated by it, and every port,
image tag, mounted file and scrape target is checked against the code and the other
deploy files.

References the design needs but the code does not have yet are listed in
``PENDING_IN_CODE``; their tests are strict xfails, so they start failing (and the entry
must go) the day the code gains them.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
import typer.main
from ruamel.yaml import YAML

from agents.mapping import load_mapping
from pipeline.cli import app as cli_app
from pipeline.settings import Settings
from pipeline.topics import DEADLETTER_MAX_MESSAGE_BYTES

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
PROMETHEUS_CONFIG = REPO / "deploy" / "prometheus.yml"
GRAFANA_PROVISIONING = REPO / "deploy" / "grafana" / "provisioning"
COMPOSE_SCHEMA = REPO / "deploy/tools/node_modules/dclint/schemas/compose.schema.json"
INSTALL_HINT = "npm ci --prefix deploy/tools --ignore-scripts"

#: Reference (as produced by :func:`references`) -> why the code lacks it, and who adds it.
PENDING_IN_CODE: dict[str, str] = {}

#: Ports the third-party images listen on by default (their documentation).
PROMETHEUS_DEFAULT_PORT = 9090
GRAFANA_DEFAULT_PORT = 3000

_INTERPOLATION = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?-)(?P<default>[^}]*))?\}"
)
_EXACT_TAG = re.compile(r"^[a-z0-9][a-z0-9./_-]*:v?\d+\.\d+\.\d+(-[A-Za-z0-9.]+)?$")
_DIGEST = re.compile(r"^[a-z0-9][a-z0-9./_-]*(:[A-Za-z0-9._-]+)?@sha256:[0-9a-f]{64}$")


def interpolate(value: str, environ: Mapping[str, str]) -> str:
    """Resolve Compose's ``${NAME}``, ``${NAME:-default}``, ``${NAME-default}`` and ``$$``.

    Why: the file's defaults (what ``docker compose up`` uses on a bare machine) are what
    the settings must accept.
    """

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, default = match.group("name"), match.group("op"), match.group("default")
        current = environ.get(name)
        if op == ":-" and not current:
            return default or ""
        if op == "-" and current is None:
            return default or ""
        return current or ""

    return _INTERPOLATION.sub(replace, value)


def load_compose() -> dict[str, Any]:
    """The compose file as plain data, YAML merge keys (``<<: *daytwo``) applied."""
    data = YAML(typ="safe").load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    # Round-trip through JSON: plain dicts/lists/str for jsonschema, like `docker compose
    # config` would see them.
    loaded = orjson.loads(orjson.dumps(data))
    assert isinstance(loaded, dict)
    return loaded


def load_compose_schema() -> dict[str, Any]:
    """The Compose Specification schema from the installed npm package (not vendored)."""
    if not COMPOSE_SCHEMA.is_file():
        pytest.fail(f"Compose schema not installed at {COMPOSE_SCHEMA}: run `{INSTALL_HINT}`")
    schema = orjson.loads(COMPOSE_SCHEMA.read_bytes())
    assert isinstance(schema, dict)
    return schema


def compose_errors(document: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """Every schema violation as ``path: message`` (empty when the file is valid)."""
    # The file says "https://json-schema.org/draft-07/schema", a spelling jsonschema's
    # registry does not know; name the draft explicitly instead of letting it guess.
    assert "draft-07" in str(schema.get("$schema")), schema.get("$schema")
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'/'.join(str(part) for part in error.absolute_path)}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def is_daytwo(service: Mapping[str, Any]) -> bool:
    """A service that runs the daytwo image (its ENTRYPOINT is ``daytwo``)."""
    return str(service.get("image", "")).split(":")[0] == "daytwo"


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    """The service's environment with the file's defaults interpolated."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {str(k): interpolate(str(v), {}) for k, v in raw.items()}


def settings_env_names() -> dict[str, str]:
    """``DAYTWO_*`` variable name -> Settings field, as pydantic-settings reads them, plus
    the secret variable the sink reads its forge token from by name (``forge_token_env``),
    which is deliberately not a field (a secret never lands in the settings object)."""
    prefix = str(Settings.model_config.get("env_prefix", ""))
    names = {f"{prefix}{name}".upper(): name for name in Settings.model_fields}
    names[str(Settings.model_fields["forge_token_env"].default)] = "forge_token_env"
    return names


def daytwo_args(service: Mapping[str, Any]) -> list[str]:
    """The arguments after the image's ``daytwo`` entry point."""
    command = service.get("command", [])
    if isinstance(command, str):
        command = command.split()
    return [interpolate(str(part), {}) for part in command]


def metrics_port(service: Mapping[str, Any]) -> int:
    """The port a daytwo service serves /metrics on, as its settings resolve it."""
    value = environment(service).get("DAYTWO_METRICS_PORT")
    if value is not None:
        return int(value)
    default = Settings.model_fields["metrics_port"].default
    assert isinstance(default, int)
    return default


def container_ports(service: Mapping[str, Any]) -> set[int]:
    """Container-side ports a service publishes (``ports``) or exposes (``expose``)."""
    found: set[int] = set()
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            found.add(int(entry["target"]))
        else:
            found.add(int(str(entry).split("/")[0].rsplit(":", 1)[-1]))
    found.update(int(str(entry).split("/")[0]) for entry in service.get("expose", []))
    return found


def references(compose: Mapping[str, Any]) -> Iterator[str]:
    """Every command and DAYTWO_* variable the compose file asks of the code."""
    for name, service in compose["services"].items():
        if not is_daytwo(service):
            continue
        args = daytwo_args(service)
        yield f"cli {name} {' '.join(args)}"
        for variable in environment(service):
            if variable.startswith("DAYTWO_"):
                yield f"env {name} {variable}"


def _reference_params() -> list[Any]:
    params = []
    for reference in sorted(set(references(load_compose()))):
        marks = []
        if reference in PENDING_IN_CODE:
            marks.append(pytest.mark.xfail(strict=True, reason=PENDING_IN_CODE[reference]))
        params.append(pytest.param(reference, marks=marks, id=reference))
    return params


def check_reference(reference: str, compose: Mapping[str, Any]) -> None:
    """Assert that one reference exists in the code (a subcommand and its options, or a
    Settings field)."""
    kind, service_name, rest = reference.split(" ", 2)
    if kind == "env":
        assert rest in settings_env_names(), f"{rest} is not a Settings field"
        return
    group = typer.main.get_command(cli_app)
    args = rest.split()
    assert args, f"service {service_name} runs `daytwo` without a subcommand"
    commands: dict[str, Any] = getattr(group, "commands", {})
    command = commands.get(args[0])
    assert command is not None, f"`daytwo {args[0]}` is not a subcommand"
    # Parses (and type-converts) the options exactly as `daytwo` would, without running.
    command.make_context(args[0], args[1:])


# --- the Compose Specification ------------------------------------------------------


def test_compose_file_validates_against_the_compose_spec() -> None:
    assert compose_errors(load_compose(), load_compose_schema()) == []


@pytest.mark.parametrize(
    ("service_key", "value"),
    [("not_a_compose_key", True), ("ports", "9464"), ("depends_on", 3)],
)
def test_the_schema_check_rejects_invalid_services(service_key: str, value: object) -> None:
    broken = copy.deepcopy(load_compose())
    broken["services"]["worker-1"][service_key] = value
    assert compose_errors(broken, load_compose_schema()) != []


# --- commands and settings ------------------------------------------------------------


@pytest.mark.parametrize("reference", _reference_params())
def test_every_command_and_variable_exists_in_the_code(reference: str) -> None:
    check_reference(reference, load_compose())


def test_pending_entries_are_still_referenced() -> None:
    assert set(PENDING_IN_CODE) <= set(references(load_compose()))


def test_the_reference_check_rejects_what_the_code_lacks() -> None:
    compose = load_compose()
    for bogus in (
        "cli worker-1 frobnicate",
        "cli worker-1 worker --no-such-flag",
        "env x DAYTWO_NOPE",
    ):
        with pytest.raises((AssertionError, typer.TyperException)):
            check_reference(bogus, compose)


def test_every_daytwo_service_environment_is_accepted_by_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, service in load_compose()["services"].items():
        if not is_daytwo(service):
            continue
        for variable in list(os.environ):
            if variable.startswith("DAYTWO_"):
                monkeypatch.delenv(variable)
        for variable, value in environment(service).items():
            monkeypatch.setenv(variable, value)
        settings = Settings()
        assert settings.kafka_bootstrap == "kafka:9092", name


def test_daytwo_services_agree_on_topics_and_partitions() -> None:
    services = [s for s in load_compose()["services"].values() if is_daytwo(s)]
    for field in ("DAYTWO_PARTITIONS", "DAYTWO_TOPIC_PREFIX"):
        values = {environment(s).get(field) for s in services if daytwo_args(s)[0] != "agent"}
        values.discard(None)
        assert len(values) <= 1, f"{field} differs between services: {values}"


def test_topics_are_created_by_a_one_shot_service_before_anything_uses_them() -> None:
    services = load_compose()["services"]
    creators = [n for n, s in services.items() if is_daytwo(s) and daytwo_args(s)[:1] == ["topics"]]
    assert creators == ["topics"]
    assert services["topics"]["restart"] == "on-failure"
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name, service in services.items():
        if is_daytwo(service) and name != "topics":
            condition = service["depends_on"]["topics"]["condition"]
            assert condition == "service_completed_successfully", name


def test_kafka_is_single_node_kraft_without_auto_created_topics() -> None:
    kafka = environment(load_compose()["services"]["kafka"])
    assert set(kafka["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert int(kafka["KAFKA_MESSAGE_MAX_BYTES"]) >= DEADLETTER_MAX_MESSAGE_BYTES
    advertised = kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert "PLAINTEXT://kafka:9092" in advertised


# --- ports ------------------------------------------------------------------------------


def _listener_ports(listeners: str) -> set[int]:
    return {int(item.rsplit(":", 1)[1]) for item in listeners.split(",")}


def test_daytwo_services_expose_exactly_their_metrics_port() -> None:
    for name, service in load_compose()["services"].items():
        if is_daytwo(service):
            port = metrics_port(service)
            assert container_ports(service) == ({port} if port else set()), name


def test_third_party_ports_are_ports_those_processes_listen_on() -> None:
    services = load_compose()["services"]
    kafka = environment(services["kafka"])
    listening = _listener_ports(kafka["KAFKA_LISTENERS"])
    assert container_ports(services["kafka"]) <= listening
    assert _listener_ports(kafka["KAFKA_ADVERTISED_LISTENERS"]) <= listening
    address = next(
        arg.split("=", 1)[1]
        for arg in services["prometheus"]["command"]
        if arg.startswith("--web.listen-address=")
    )
    prometheus_port = int(address.rsplit(":", 1)[1] or PROMETHEUS_DEFAULT_PORT)
    assert container_ports(services["prometheus"]) == {prometheus_port}
    grafana_port = int(
        environment(services["grafana"]).get("GF_SERVER_HTTP_PORT", GRAFANA_DEFAULT_PORT)
    )
    assert container_ports(services["grafana"]) == {grafana_port}
    for service in services.values():
        for entry in service.get("ports", []):
            assert str(entry).startswith("127.0.0.1:"), f"{entry} is published on every interface"


def test_every_image_has_an_exact_tag_and_daytwo_is_this_version() -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "version"
    ]
    for name, service in load_compose()["services"].items():
        image = str(service.get("image", ""))
        assert _EXACT_TAG.match(image) or _DIGEST.match(image), f"{name}: {image!r}"
        assert not image.endswith(":latest")
        if is_daytwo(service):
            assert image == f"daytwo:{version}", name
            assert service["build"] == "."


# --- files it mounts, Prometheus and Grafana ---------------------------------------------


def _bind_mounts(service: Mapping[str, Any]) -> Iterator[tuple[Path, str]]:
    for volume in service.get("volumes", []):
        source, target = interpolate(str(volume), {}).split(":")[:2]
        if source.startswith("./"):
            yield REPO / source, target


def test_mounted_repository_files_exist_and_the_agent_mapping_loads() -> None:
    services = load_compose()["services"]
    for name, service in services.items():
        for source, _ in _bind_mounts(service):
            if ".daytwo-demo" not in source.parts:  # created by `daytwo demo`
                assert source.exists(), f"{name} mounts missing {source}"
    agent = services["agent"]
    mapping_path = environment(agent)["DAYTWO_MAPPING_FILE"]
    sources = {target: source for source, target in _bind_mounts(agent)}
    mapping = load_mapping(sources[mapping_path])
    assert mapping.cgroups
    assert ("/sys/fs/cgroup:/sys/fs/cgroup:ro") in agent["volumes"]
    assert agent["cgroup"] == "host"


def _scrape_targets() -> dict[str, set[str]]:
    config = YAML(typ="safe").load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    return {
        job["job_name"]: {
            target for static in job["static_configs"] for target in static["targets"]
        }
        for job in config["scrape_configs"]
    }


def test_prometheus_scrapes_every_daytwo_service_on_its_metrics_port() -> None:
    services = load_compose()["services"]
    targets = set().union(*_scrape_targets().values())
    expected = {
        f"{service.get('hostname', name)}:{metrics_port(service)}"
        for name, service in services.items()
        if is_daytwo(service) and metrics_port(service)
    }
    assert expected, "no daytwo service serves metrics"
    assert expected <= targets
    known_hosts = set(services) | {s.get("hostname") for s in services.values()}
    for target in targets - expected:
        host, port = target.rsplit(":", 1)
        assert host in known_hosts or host == "localhost", target
        if host == "localhost":
            assert int(port) in container_ports(services["prometheus"])
    assert PROMETHEUS_CONFIG.name in str(services["prometheus"]["volumes"])


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (Debian package prometheus)"
)
def test_promtool_accepts_the_prometheus_config() -> None:
    result = subprocess.run(
        ["promtool", "check", "config", "--syntax-only", str(PROMETHEUS_CONFIG)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_provisions_the_compose_prometheus_and_the_dashboards_folder() -> None:
    services = load_compose()["services"]
    yaml = YAML(typ="safe")
    datasources = yaml.load((GRAFANA_PROVISIONING / "datasources" / "prometheus.yaml").read_text())
    (datasource,) = datasources["datasources"]
    assert datasource["type"] == "prometheus"
    address = next(
        a for a in services["prometheus"]["command"] if a.startswith("--web.listen-address=")
    )
    assert datasource["url"] == f"http://prometheus:{address.rsplit(':', 1)[1]}"
    providers = yaml.load((GRAFANA_PROVISIONING / "dashboards" / "daytwo.yaml").read_text())
    (provider,) = providers["providers"]
    mounts = {target: source for source, target in _bind_mounts(services["grafana"])}
    dashboards = mounts[provider["options"]["path"]]
    assert dashboards == REPO / "deploy/grafana/dashboards"
    assert dashboards.is_dir()
    assert mounts["/etc/grafana/provisioning"] == GRAFANA_PROVISIONING
    for dashboard in dashboards.glob("*.json"):
        assert isinstance(orjson.loads(dashboard.read_bytes()), dict), dashboard
