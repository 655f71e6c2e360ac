"""deploy/kubernetes: valid manifests, least-privilege RBAC, and only what the code has.

Static, no cluster: the kustomization is rendered in Python (and compared with
``kubectl kustomize`` where kubectl exists); every rendered object is validated with
``kubernetes-validate`` against the Kubernetes OpenAPI schemas of ``KUBERNETES_VERSION``
in strict mode (unknown fields fail); the ServiceMonitor, a prometheus-operator CRD that
is not in those schemas, is validated against the JSON schema of the prometheus-operator
v1 API models that ``cloudcoil-models-prometheus-operator`` generates from the CRDs,
closed (``additionalProperties: false``) so unknown fields fail there too.

References the design needs but the code does not have yet are listed in
``PENDING_IN_CODE``; their tests are strict xfails, so they fail (and the entry must go)
the day the code gains them.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema

# kubernetes-validate ships no type information (no py.typed).
import kubernetes_validate  # type: ignore[import-untyped]
import orjson
import pytest
import typer
import typer.main
from cloudcoil.models.prometheus_operator import v1 as prometheus_operator_v1
from hypothesis import given
from hypothesis import strategies as st
from ruamel.yaml import YAML

from pipeline.cli import app as cli_app
from pipeline.profiles_file import load_catalog
from pipeline.settings import Settings

REPO = Path(__file__).resolve().parents[1]
KUSTOMIZE_DIR = REPO / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.30"
BUILT_IN_PROFILES = frozenset({"performance-first", "balanced", "cost-optimized"})

#: Reference (as produced by :func:`references`) -> why the code lacks it, and who adds it.
PENDING_IN_CODE: dict[str, str] = {}

#: The only API access daytwo has: (apiGroup, resource) -> allowed verbs.
LEAST_PRIVILEGE: dict[tuple[str, str], frozenset[str]] = {
    ("", "nodes/stats"): frozenset({"get"}),
    **{
        (group, resource): frozenset({"list", "watch"})
        for group, resources in {
            "": ("pods", "nodes", "namespaces"),
            "apps": ("replicasets", "deployments", "statefulsets", "daemonsets"),
            "batch": ("jobs", "cronjobs"),
            "autoscaling": ("horizontalpodautoscalers",),
        }.items()
        for resource in resources
    },
}

CLUSTER_SCOPED = frozenset({"Namespace", "ClusterRole", "ClusterRoleBinding"})
WORKLOAD_KINDS = frozenset({"Deployment", "DaemonSet", "StatefulSet", "Job", "CronJob"})


# --- rendering --------------------------------------------------------------------------


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    """Every non-empty document of a YAML file, as plain JSON-compatible data."""
    documents = YAML(typ="safe").load_all(path.read_text(encoding="utf-8"))
    return [orjson.loads(orjson.dumps(doc)) for doc in documents if doc]


def load_kustomization() -> dict[str, Any]:
    """deploy/kubernetes/kustomization.yaml."""
    (kustomization,) = load_yaml_documents(KUSTOMIZE_DIR / "kustomization.yaml")
    return kustomization


def render(kustomization: Mapping[str, Any], base: Path) -> list[dict[str, Any]]:
    """What ``kustomize build`` makes of this kustomization (the features it uses).

    Why in Python: no kustomize binary is guaranteed on CI; unknown kustomize features
    fail loudly here rather than being ignored.
    """
    supported = {"apiVersion", "kind", "namespace", "resources", "images"}
    unsupported = set(kustomization) - supported
    assert not unsupported, f"renderer does not implement {sorted(unsupported)}"
    images = {image["name"]: image for image in kustomization.get("images", [])}
    objects: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        for obj in load_yaml_documents(base / resource):
            if "namespace" in kustomization and obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = kustomization["namespace"]
            for container in containers(obj):
                name = container["image"].split(":")[0].split("@")[0]
                if name in images:
                    override = images[name]
                    new_name = override.get("newName", name)
                    container["image"] = f"{new_name}:{override['newTag']}"
            objects.append(obj)
    return objects


def rendered() -> list[dict[str, Any]]:
    """The rendered kustomization of deploy/kubernetes."""
    return render(load_kustomization(), KUSTOMIZE_DIR)


def pod_spec(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """The pod template's spec of a workload object, None for other kinds."""
    if obj["kind"] == "CronJob":
        spec: dict[str, Any] = obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        return spec
    if obj["kind"] in WORKLOAD_KINDS:
        template_spec: dict[str, Any] = obj["spec"]["template"]["spec"]
        return template_spec
    return None


def containers(obj: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every container (init containers too) of a workload object."""
    spec = pod_spec(obj)
    if spec is not None:
        yield from spec.get("initContainers", [])
        yield from spec["containers"]


def by_kind(objects: Iterable[Mapping[str, Any]], kind: str) -> dict[str, Mapping[str, Any]]:
    """Objects of one kind by name."""
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}


def test_kustomization_lists_exactly_the_resource_files() -> None:
    listed = load_kustomization()["resources"]
    assert len(listed) == len(set(listed))
    for name in listed:
        assert (KUSTOMIZE_DIR / name).is_file(), f"kustomization lists missing {name}"
    on_disk = {p.name for p in KUSTOMIZE_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert on_disk == set(listed), f"not listed: {sorted(on_disk - set(listed))}"


def test_rendered_objects_are_unique_and_namespaced() -> None:
    objects = rendered()
    keys = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(keys) == len(set(keys))
    namespace = load_kustomization()["namespace"]
    assert ("Namespace", namespace) in keys
    for obj in objects:
        if obj["kind"] not in CLUSTER_SCOPED:
            assert obj["metadata"]["namespace"] == namespace


@pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl (with kustomize) not installed"
)
def test_python_rendering_matches_kubectl_kustomize() -> None:
    result = subprocess.run(
        ["kubectl", "kustomize", str(KUSTOMIZE_DIR)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "KUBECONFIG": os.devnull},
    )
    assert result.returncode == 0, result.stderr
    from_kubectl = [doc for doc in YAML(typ="safe").load_all(result.stdout) if doc]
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    ours = sorted(rendered(), key=key)
    theirs = sorted((orjson.loads(orjson.dumps(d)) for d in from_kubectl), key=key)
    assert ours == theirs


# --- schema validation ----------------------------------------------------------------


def kubernetes_errors(obj: Mapping[str, Any]) -> str | None:
    """None when the object is valid for KUBERNETES_VERSION (strict), else the error."""
    try:
        kubernetes_validate.validate(dict(obj), KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return f"{'.'.join(str(p) for p in error.path)}: {error.message}"
    return None


def _closed(schema: Any) -> Any:
    """The schema with every object that declares properties closed to others."""
    if isinstance(schema, dict):
        closed = {key: _closed(value) for key, value in schema.items()}
        if "properties" in closed and closed.get("type", "object") == "object":
            closed.setdefault("additionalProperties", False)
        return closed
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    return schema


SERVICE_MONITOR_SCHEMA = _closed(
    prometheus_operator_v1.ServiceMonitor.model_json_schema(by_alias=True)
)


def service_monitor_errors(obj: Mapping[str, Any]) -> list[str]:
    """Violations of the closed prometheus-operator ServiceMonitor schema."""
    validator = jsonschema.Draft202012Validator(SERVICE_MONITOR_SCHEMA)
    return [
        f"{'/'.join(str(p) for p in error.absolute_path)}: {error.message}"
        for error in validator.iter_errors(obj)
    ]


def _core_objects() -> list[pytest.ParameterSet]:
    return [
        pytest.param(obj, id=f"{obj['kind']}/{obj['metadata']['name']}")
        for obj in rendered()
        if obj["kind"] != "ServiceMonitor"
    ]


@pytest.mark.parametrize("obj", _core_objects())
def test_manifest_is_valid_kubernetes(obj: dict[str, Any]) -> None:
    assert kubernetes_errors(obj) is None


def test_strict_validation_rejects_unknown_and_mistyped_fields() -> None:
    worker = copy.deepcopy(by_kind(rendered(), "Deployment")["daytwo-worker"])
    worker["spec"]["replica"] = 2
    assert kubernetes_errors(worker) is not None
    worker = copy.deepcopy(by_kind(rendered(), "Deployment")["daytwo-worker"])
    worker["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] = "1Gi"
    assert kubernetes_errors(worker) is not None


def test_service_monitor_is_valid_for_the_prometheus_operator() -> None:
    (monitor,) = by_kind(rendered(), "ServiceMonitor").values()
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert service_monitor_errors(monitor) == []
    prometheus_operator_v1.ServiceMonitor.model_validate(monitor)


def test_service_monitor_check_rejects_unknown_and_mistyped_fields() -> None:
    (monitor,) = by_kind(rendered(), "ServiceMonitor").values()
    unknown = copy.deepcopy(monitor)
    unknown["spec"]["endpoints"][0]["portName"] = "metrics"
    assert service_monitor_errors(unknown) != []
    mistyped = copy.deepcopy(monitor)
    mistyped["spec"]["endpoints"] = "metrics"
    assert service_monitor_errors(mistyped) != []


# --- RBAC -------------------------------------------------------------------------------


def rbac_violations(role: Mapping[str, Any]) -> list[str]:
    """Everything a Role/ClusterRole grants beyond LEAST_PRIVILEGE (empty: acceptable).

    Why a checker and not a snapshot: it states the policy (which verbs on which
    resources), so a new rule is judged, not just noticed.
    """
    name = f"{role['kind']}/{role['metadata']['name']}"
    problems = []
    if "aggregationRule" in role:
        problems.append(f"{name}: aggregationRule pulls in rules from other roles")
    for index, rule in enumerate(role.get("rules") or []):
        where = f"{name} rule {index}"
        if rule.get("nonResourceURLs"):
            problems.append(f"{where}: nonResourceURLs {rule['nonResourceURLs']}")
        groups = rule.get("apiGroups") or []
        resources = rule.get("resources") or []
        verbs = rule.get("verbs") or []
        if not groups or not resources or not verbs:
            problems.append(f"{where}: needs apiGroups, resources and verbs")
        for group in groups:
            for resource in resources:
                allowed = LEAST_PRIVILEGE.get((group, resource))
                if allowed is None:
                    problems.append(f"{where}: {resource!r} in group {group!r} is not allowed")
                    continue
                extra = sorted(set(verbs) - allowed)
                if extra:
                    problems.append(f"{where}: verbs {extra} on {resource!r} are not allowed")
    return problems


def test_every_role_is_within_least_privilege() -> None:
    roles = [o for o in rendered() if o["kind"] in {"Role", "ClusterRole"}]
    assert roles
    for role in roles:
        assert rbac_violations(role) == []


def test_roles_grant_everything_the_agent_needs() -> None:
    granted = {
        (group, resource, verb)
        for role in rendered()
        if role["kind"] in {"Role", "ClusterRole"}
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    needed = {(g, r, v) for (g, r), verbs in LEAST_PRIVILEGE.items() for v in verbs}
    assert granted == needed


def _role(*rules: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"kind": "ClusterRole", "metadata": {"name": "probe"}, "rules": list(rules), **extra}


@pytest.mark.parametrize(
    "rule",
    [
        {"apiGroups": ["*"], "resources": ["pods"], "verbs": ["list"]},
        {"apiGroups": [""], "resources": ["*"], "verbs": ["list"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["*"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["nodes/proxy"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "create"]},
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["patch"]},
        {"apiGroups": [""], "resources": ["nodes/stats"], "verbs": ["get", "list"]},
        {
            "apiGroups": ["rbac.authorization.k8s.io"],
            "resources": ["clusterroles"],
            "verbs": ["escalate"],
        },
        {
            "apiGroups": ["rbac.authorization.k8s.io"],
            "resources": ["clusterroles"],
            "verbs": ["bind"],
        },
        {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["impersonate"]},
        {"apiGroups": ["apps"], "resources": ["pods"], "verbs": ["list"]},
        {"nonResourceURLs": ["/metrics"], "verbs": ["get"]},
    ],
)
def test_rbac_checker_rejects_a_bad_rule(rule: dict[str, Any]) -> None:
    assert rbac_violations(_role(rule)) != []


def test_rbac_checker_rejects_aggregation() -> None:
    aggregated = _role(aggregationRule={"clusterRoleSelectors": [{"matchLabels": {"x": "y"}}]})
    assert rbac_violations(aggregated) != []


_ALLOWED_PAIRS = sorted(LEAST_PRIVILEGE)
_ANY_VERB = st.sampled_from(
    [
        "get",
        "list",
        "watch",
        "create",
        "update",
        "patch",
        "delete",
        "deletecollection",
        "*",
        "escalate",
        "bind",
        "impersonate",
        "proxy",
    ]
)


@given(
    pair=st.sampled_from(_ALLOWED_PAIRS),
    verbs=st.lists(_ANY_VERB, min_size=1, max_size=4, unique=True),
)
def test_rbac_checker_accepts_exactly_the_allowed_verbs(
    pair: tuple[str, str], verbs: list[str]
) -> None:
    rule = {"apiGroups": [pair[0]], "resources": [pair[1]], "verbs": verbs}
    accepted = rbac_violations(_role(rule)) == []
    assert accepted == (set(verbs) <= LEAST_PRIVILEGE[pair])


def test_bindings_grant_only_our_roles_to_our_service_accounts() -> None:
    objects = rendered()
    roles = {
        (o["kind"], o["metadata"]["name"]) for o in objects if o["kind"] in {"Role", "ClusterRole"}
    }
    accounts = set(by_kind(objects, "ServiceAccount"))
    namespace = load_kustomization()["namespace"]
    bound = set()
    for binding in (o for o in objects if o["kind"] in {"RoleBinding", "ClusterRoleBinding"}):
        ref = binding["roleRef"]
        assert (ref["kind"], ref["name"]) in roles, f"binds a role not checked here: {ref}"
        for subject in binding["subjects"]:
            assert subject["kind"] == "ServiceAccount", subject
            assert subject["name"] in accounts, subject
            assert subject["namespace"] == namespace, subject
            bound.add(subject["name"])
    assert bound == {"daytwo-agent"}
    for obj in objects:
        spec = pod_spec(obj)
        if spec is not None and spec["serviceAccountName"] not in bound:
            assert spec.get("automountServiceAccountToken") is False, obj["metadata"]["name"]


# --- pods: resources and hardening -------------------------------------------------------


def _workloads() -> list[pytest.ParameterSet]:
    return [
        pytest.param(obj, id=f"{obj['kind']}/{obj['metadata']['name']}")
        for obj in rendered()
        if pod_spec(obj) is not None
    ]


@pytest.mark.parametrize("obj", _workloads())
def test_every_container_has_requests_limits_and_a_locked_down_context(obj: dict[str, Any]) -> None:
    spec = pod_spec(obj)
    assert spec is not None
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    for forbidden in ("hostNetwork", "hostPID", "hostIPC"):
        assert not spec.get(forbidden), forbidden
    assert all("hostPath" not in volume for volume in spec.get("volumes", []))
    for container in containers(obj):
        resources = container["resources"]
        for bound in ("requests", "limits"):
            assert set(resources[bound]) >= {"cpu", "memory"}, (container["name"], bound)
        context = container["securityContext"]
        assert context["runAsNonRoot"] is True
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert not context.get("privileged")


def test_images_have_this_exact_version() -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "version"
    ]
    images = {c["image"] for obj in rendered() for c in containers(obj)}
    assert images == {f"daytwo:{version}"}


def test_topology_matches_the_design() -> None:
    objects = rendered()
    assert set(by_kind(objects, "DaemonSet")) == {"daytwo-agent"}
    deployments = by_kind(objects, "Deployment")
    assert deployments["daytwo-worker"]["spec"]["replicas"] == 2
    assert deployments["daytwo-sink"]["spec"]["replicas"] == 1
    (budget,) = by_kind(objects, "PodDisruptionBudget").values()
    worker_labels = deployments["daytwo-worker"]["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= worker_labels.items()
    assert 0 < budget["spec"]["minAvailable"] < deployments["daytwo-worker"]["spec"]["replicas"]


def test_no_secret_is_shipped_and_referenced_ones_are_optional_and_documented() -> None:
    objects = rendered()
    assert not by_kind(objects, "Secret")
    readme = (KUSTOMIZE_DIR / "README.md").read_text(encoding="utf-8")
    referenced = 0
    for obj in objects:
        for container in containers(obj):
            for variable in container.get("env", []):
                secret = variable.get("valueFrom", {}).get("secretKeyRef")
                if secret:
                    referenced += 1
                    assert secret["optional"] is True, "a missing Secret must mean dry-run"
                    assert secret["name"] in readme
                    assert secret["key"] in readme
    assert referenced


# --- what the manifests ask of the code ------------------------------------------------------


def _config_maps() -> dict[str, Mapping[str, Any]]:
    return by_kind(rendered(), "ConfigMap")


def container_environment(container: Mapping[str, Any]) -> dict[str, str]:
    """A container's environment as the kubelet would build it (ConfigMaps, then env);
    downward-API and Secret values become stand-ins."""
    config_maps = _config_maps()
    values: dict[str, str] = {}
    for source in container.get("envFrom", []):
        values.update(config_maps[source["configMapRef"]["name"]]["data"])
    for variable in container.get("env", []):
        if "value" in variable:
            values[variable["name"]] = variable["value"]
        elif "fieldRef" in variable["valueFrom"]:
            values[variable["name"]] = "node-1"
        else:
            values[variable["name"]] = ""
    return values


def references() -> Iterator[str]:
    """Every subcommand line and DAYTWO_* variable the manifests ask of the code."""
    for obj in rendered():
        for container in containers(obj):
            yield f"cli {' '.join(container['args'])}"
            for variable in container_environment(container):
                if variable.startswith("DAYTWO_"):
                    yield f"env {variable}"


def _reference_params() -> list[pytest.ParameterSet]:
    params = []
    for reference in sorted(set(references())):
        marks = []
        if reference in PENDING_IN_CODE:
            marks.append(pytest.mark.xfail(strict=True, reason=PENDING_IN_CODE[reference]))
        params.append(pytest.param(reference, marks=marks, id=reference))
    return params


def settings_env_names() -> set[str]:
    """The DAYTWO_* names pydantic-settings reads for the Settings fields, plus the secret
    variable the sink reads its forge token from by name (``forge_token_env``)."""
    prefix = str(Settings.model_config.get("env_prefix", ""))
    names = {f"{prefix}{name}".upper() for name in Settings.model_fields}
    return names | {str(Settings.model_fields["forge_token_env"].default)}


def check_reference(reference: str) -> None:
    """Assert that one reference exists in the code: a Settings field, or a subcommand
    whose options parse."""
    kind, rest = reference.split(" ", 1)
    if kind == "env":
        assert rest in settings_env_names(), f"{rest} is not a Settings field"
        return
    args = rest.split()
    commands: dict[str, Any] = getattr(typer.main.get_command(cli_app), "commands", {})
    assert args[0] in commands, f"`daytwo {args[0]}` is not a subcommand"
    commands[args[0]].make_context(args[0], args[1:])


@pytest.mark.parametrize("reference", _reference_params())
def test_every_command_and_variable_exists_in_the_code(reference: str) -> None:
    check_reference(reference)


def test_pending_entries_are_still_referenced() -> None:
    assert set(PENDING_IN_CODE) <= set(references())


def test_the_reference_check_rejects_what_the_code_lacks() -> None:
    for bogus in ("cli frobnicate", "cli worker --no-such-flag", "env DAYTWO_NOPE"):
        with pytest.raises((AssertionError, typer.TyperException)):
            check_reference(bogus)


def test_every_container_environment_is_accepted_by_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for obj in rendered():
        for container in containers(obj):
            for variable in list(os.environ):
                if variable.startswith("DAYTWO_"):
                    monkeypatch.delenv(variable)
            for variable, value in container_environment(container).items():
                monkeypatch.setenv(variable, value)
            settings = Settings()
            assert settings.kafka_bootstrap, obj["metadata"]["name"]


def test_ports_services_and_monitor_line_up_with_the_metrics_port() -> None:
    objects = rendered()
    default_port = Settings.model_fields["metrics_port"].default
    pods: dict[str, tuple[dict[str, str], dict[str, int]]] = {}
    for obj in objects:
        for container in containers(obj):
            port = int(container_environment(container).get("DAYTWO_METRICS_PORT", default_port))
            named = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert named == {"metrics": port}, obj["metadata"]["name"]
            for probe in ("readinessProbe", "livenessProbe"):
                assert container[probe]["httpGet"]["port"] in ("metrics", port)
            pods[obj["metadata"]["name"]] = (obj["spec"]["template"]["metadata"]["labels"], named)
    services = by_kind(objects, "Service")
    for name, service in services.items():
        selector = service["spec"]["selector"]
        matches = [ports for labels, ports in pods.values() if selector.items() <= labels.items()]
        assert len(matches) == 1, f"Service {name} selects {len(matches)} workloads"
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in matches[0] or port["targetPort"] in matches[0].values()
    assert len(services) == len(pods), "one metrics Service per workload"
    (monitor,) = by_kind(objects, "ServiceMonitor").values()
    selected = [
        s
        for s in services.values()
        if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
    ]
    assert len(selected) == len(services)
    for endpoint in monitor["spec"]["endpoints"]:
        assert all(endpoint["port"] in {p["name"] for p in s["spec"]["ports"]} for s in selected)


def test_referenced_config_maps_and_accounts_exist() -> None:
    objects = rendered()
    config_maps, accounts = set(_config_maps()), set(by_kind(objects, "ServiceAccount"))
    for obj in objects:
        spec = pod_spec(obj)
        if spec is None:
            continue
        assert spec["serviceAccountName"] in accounts
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps
        for container in containers(obj):
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in config_maps


_PROFILE_KEYS = re.compile(r"^[a-z][a-z0-9_]*$")


def test_profiles_config_map_follows_the_profile_format(tmp_path: Path) -> None:
    config_map = _config_maps()["daytwo-profiles"]
    text = config_map["data"]["profiles.yaml"]
    document = YAML(typ="safe").load(text)
    profiles = document["profiles"]
    assert profiles
    names = [p["name"] for p in profiles]
    assert len(names) == len(set(names))
    for profile in profiles:
        assert profile["name"] not in BUILT_IN_PROFILES
        assert profile["extends"] in BUILT_IN_PROFILES | set(names)
        assert 0 < profile["cpu_percentile"] <= 1
        assert profile["cpu_headroom"] >= 0
        assert all(_PROFILE_KEYS.match(key) for key in profile)
    worker = by_kind(rendered(), "Deployment")["daytwo-worker"]
    (container,) = worker["spec"]["template"]["spec"]["containers"]
    path = container_environment(container)["DAYTWO_PROFILES_FILE"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in worker["spec"]["template"]["spec"]["volumes"]}
    (volume_name,) = [
        n for n, v in volumes.items() if v.get("configMap", {}).get("name") == "daytwo-profiles"
    ]
    assert path == f"{mounts[volume_name]}/profiles.yaml"
    # And the workers' own loader reads it, with the values it states.
    profiles_file = tmp_path / "profiles.yaml"
    profiles_file.write_text(text, encoding="utf-8")
    catalog = load_catalog(profiles_file)
    for profile in profiles:
        loaded = catalog.get(profile["name"])
        assert loaded.cpu_percentile == profile["cpu_percentile"]
        assert loaded.cpu_headroom == profile["cpu_headroom"]
