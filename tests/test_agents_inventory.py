"""The Kubernetes inventory on recorded API responses (tests/fixtures/k8s/, see its README).

The pure core gets the documents as the API server sends them; the watch shell runs the
real lightkube client against an ``httpx2.MockTransport`` that serves the same documents
(no cluster is reachable here), including a watch stream that ends in ``410 Gone``.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from typing import Any

import httpx2
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from lightkube import AsyncClient
from lightkube.config.kubeconfig import KubeConfig
from prometheus_client import CollectorRegistry

from agents.inventory import (
    FACTS_ANNOTATION,
    KINDS,
    WORKLOAD_SPECS_TOPIC,
    ClusterState,
    HpaTarget,
    InventoryConfig,
    InventoryMetrics,
    KubernetesInventory,
    MalformedObjectError,
    OwnerRef,
    Workload,
    _pareto,
    build_workloads,
    container_specs,
    facts_from_spec,
    hpa_info,
    jvm_options,
    node_info,
    pod_index,
    resolve_owner_chain,
)
from pipeline.core.hpa import hpa_aware_request, hpa_rule
from pipeline.core.quantity import parse_cpu, parse_memory
from schemas.models import WorkloadSpec
from schemas.validate import decode
from tests.k8s_fixtures import K8S_FIXTURES, LIST_FILES, items, loaded_state, recorded

NOW = 1_772_446_500.0  # 2026-03-02T10:15:00Z


def item(kind: str, name: str) -> dict[str, Any]:
    return next(obj for obj in items(kind) if obj["metadata"]["name"] == name)


def workloads_by_id() -> dict[str, Workload]:
    errors: list[str] = []
    built = build_workloads(loaded_state(), cluster="prod", timestamp=NOW, errors=errors)
    assert errors == []
    return {workload.id: workload for workload in built}


# --------------------------------------------------------------------------- owner chains


@pytest.mark.parametrize(
    ("namespace", "pod", "chain"),
    [
        (
            "shop",
            "checkout-6d4cf56db6-7xk2p",
            [("ReplicaSet", "checkout-6d4cf56db6"), ("Deployment", "checkout")],
        ),
        ("shop", "web-7c9f8b7d5-lm2np", [("ReplicaSet", "web-7c9f8b7d5"), ("Rollout", "web")]),
        ("shop", "legacy-rs-9xk2q", [("ReplicaSet", "legacy-rs")]),
        ("payments", "ledger-0", [("StatefulSet", "ledger")]),
        ("monitoring", "node-exporter-5xq2v", [("DaemonSet", "node-exporter")]),
        (
            "batch",
            "nightly-report-28934560-k2x9p",
            [("Job", "nightly-report-28934560"), ("CronJob", "nightly-report")],
        ),
        ("batch", "migrate-db-8fj3l", [("Job", "migrate-db")]),
        ("analytics", "spark-pi-driver", [("SparkApplication", "spark-pi")]),
        ("shop", "debug-shell", []),
        ("kube-system", "kube-proxy-gke-prod-default-pool-1a2b3c4d-x7k9", []),
    ],
)
def test_owner_chain_of_every_kind(namespace: str, pod: str, chain: list[tuple[str, str]]) -> None:
    state = loaded_state()
    resolved = resolve_owner_chain(state, item("Pod", pod))
    assert resolved == (OwnerRef("Pod", pod), *(OwnerRef(kind, name) for kind, name in chain))
    top = resolved[-1]
    assert pod_index(state, cluster="prod")[(namespace, pod)].workload == (
        f"prod/{namespace}/{top.kind}/{top.name}"
    )


def test_a_pod_whose_replicaset_is_not_listed_is_unresolved_until_it_arrives() -> None:
    state = loaded_state()
    ghost = item("Pod", "ghost-5f7d8c9b4-abcde")
    assert resolve_owner_chain(state, ghost) is None
    assert ("shop", "ghost-5f7d8c9b4-abcde") not in pod_index(state, cluster="prod")
    replicaset = copy.deepcopy(item("ReplicaSet", "checkout-6d4cf56db6"))
    replicaset["metadata"].update(
        name="ghost-5f7d8c9b4",
        uid=ghost["metadata"]["ownerReferences"][0]["uid"],
        ownerReferences=[
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": "ghost",
                "uid": "x",
                "controller": True,
            }
        ],
    )
    state.apply("ADDED", "ReplicaSet", replicaset)
    chain = resolve_owner_chain(state, ghost)
    assert chain is not None
    assert chain[-1] == OwnerRef("Deployment", "ghost")


def test_an_owner_recreated_under_the_same_name_is_not_the_pods_owner() -> None:
    state = loaded_state()
    replicaset = copy.deepcopy(item("ReplicaSet", "checkout-6d4cf56db6"))
    replicaset["metadata"]["uid"] = "a-different-object"
    state.apply("MODIFIED", "ReplicaSet", replicaset)
    assert resolve_owner_chain(state, item("Pod", "checkout-6d4cf56db6-7xk2p")) is None


def test_only_the_controller_reference_counts() -> None:
    pod = copy.deepcopy(item("Pod", "debug-shell"))
    pod["metadata"]["ownerReferences"] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "y"}  # not a controller
    ]
    assert resolve_owner_chain(loaded_state(), pod) == (OwnerRef("Pod", "debug-shell"),)


# --------------------------------------------------------------------------- specs


def container_values(pod_spec_container: dict[str, Any]) -> tuple[Any, ...]:
    resources = pod_spec_container.get("resources", {})
    requests, limits = resources.get("requests", {}), resources.get("limits", {})
    cpu_limit = parse_cpu(limits["cpu"]) if "cpu" in limits else None
    memory_limit = parse_memory(limits["memory"]) if "memory" in limits else None
    return (
        pod_spec_container["name"],
        parse_cpu(requests["cpu"]) if "cpu" in requests else cpu_limit,
        cpu_limit,
        parse_memory(requests["memory"]) if "memory" in requests else memory_limit,
        memory_limit,
    )


def spec_values(spec: WorkloadSpec) -> list[tuple[Any, ...]]:
    return [
        (
            c.name,
            c.cpu_request_cores,
            c.cpu_limit_cores,
            c.memory_request_bytes,
            c.memory_limit_bytes,
        )
        for c in spec.containers
    ]


def test_the_deployment_spec_is_built_exactly_from_its_template() -> None:
    workload = workloads_by_id()["prod/shop/Deployment/checkout"]
    template = item("Deployment", "checkout")["spec"]["template"]["spec"]
    sidecar = template["initContainers"][1]
    assert sidecar["restartPolicy"] == "Always"  # a native sidecar runs all along
    expected = [container_values(c) for c in [*template["containers"], sidecar]]
    assert spec_values(workload.spec) == expected
    assert [c.name for c in workload.spec.containers] == ["app", "istio-proxy", "log-shipper"]
    assert workload.spec.replicas == item("Deployment", "checkout")["spec"]["replicas"]
    assert workload.spec.profile == "performance-first"
    assert workload.spec.source == "inventory"
    assert workload.spec.timestamp == NOW
    # the manifest copy is dropped, other annotations kept, facts added
    annotations = item("Deployment", "checkout")["metadata"]["annotations"]
    assert set(workload.spec.annotations) == (
        set(annotations) - {"kubectl.kubernetes.io/last-applied-configuration"}
    ) | {FACTS_ANNOTATION}
    # what goes on the wire is a valid workload-spec
    wire = decode(WorkloadSpec, orjson.dumps(workload.spec.model_dump(mode="json")))
    assert wire == workload.spec


@pytest.mark.parametrize(
    ("workload", "kind", "name", "replicas"),
    [
        ("prod/payments/StatefulSet/ledger", "StatefulSet", "ledger", 3),
        ("prod/monitoring/DaemonSet/node-exporter", "DaemonSet", "node-exporter", None),
        ("prod/shop/Rollout/web", "Rollout", "web", 4),
        ("prod/shop/ReplicaSet/legacy-rs", "ReplicaSet", "legacy-rs", 1),
        ("prod/batch/Job/migrate-db", "Job", "migrate-db", 1),
    ],
)
def test_template_kinds_give_their_template_and_replicas(
    workload: str, kind: str, name: str, replicas: int | None
) -> None:
    built = workloads_by_id()[workload]
    template = item(kind, name)["spec"]["template"]["spec"]
    assert spec_values(built.spec) == [container_values(c) for c in template["containers"]]
    assert built.spec.replicas == replicas


def test_a_cronjob_is_one_workload_sized_from_its_job_template() -> None:
    workloads = workloads_by_id()
    built = workloads["prod/batch/CronJob/nightly-report"]
    job = item("CronJob", "nightly-report")["spec"]["jobTemplate"]["spec"]
    assert spec_values(built.spec) == [
        container_values(c) for c in job["template"]["spec"]["containers"]
    ]
    # limits only: the request is the limit, as the API server defaults it on pods
    report = built.spec.containers[0]
    assert report.cpu_request_cores == report.cpu_limit_cores == 1.0
    assert built.spec.replicas == job["parallelism"]
    # the Job it created is not a workload of its own
    assert "prod/batch/Job/nightly-report-28934560" not in workloads


def test_bare_static_and_custom_controller_pods_are_sized_from_the_pod() -> None:
    workloads = workloads_by_id()
    bare = workloads["prod/shop/Pod/debug-shell"]
    assert spec_values(bare.spec) == [
        container_values(c) for c in item("Pod", "debug-shell")["spec"]["containers"]
    ]
    assert bare.spec.replicas == 1
    assert bare.facts.owner_chain == (("Pod", "debug-shell"),)
    assert "owner" in bare.spec.annotations
    assert "kubectl.kubernetes.io/last-applied-configuration" not in bare.spec.annotations
    static = workloads["prod/kube-system/Pod/kube-proxy-gke-prod-default-pool-1a2b3c4d-x7k9"]
    assert static.spec.containers[0].name == "kube-proxy"
    spark = workloads["prod/analytics/SparkApplication/spark-pi"]
    assert spark.facts.owner_chain == (("SparkApplication", "spark-pi"),)


def test_workloads_without_pods_still_get_a_spec_and_old_replicasets_none() -> None:
    workloads = workloads_by_id()
    catalog = workloads["prod/shop/Deployment/catalog"]
    assert catalog.spec.replicas == 0
    assert catalog.facts.pods == 0
    assert spec_values(catalog.spec) == [("catalog", None, None, None, None)]
    assert not any("ReplicaSet/checkout" in ident for ident in workloads)
    assert not any("ghost" in ident for ident in workloads)  # unresolved: left out


def test_every_built_spec_is_valid_on_the_wire() -> None:
    for workload in workloads_by_id().values():
        raw = orjson.dumps(workload.spec.model_dump(mode="json"))
        assert decode(WorkloadSpec, raw) == workload.spec
        assert facts_from_spec(workload.spec) == workload.facts


@pytest.mark.parametrize(
    ("workload", "profile", "source"),
    [
        ("prod/shop/Deployment/checkout", "performance-first", "workload"),
        ("prod/monitoring/DaemonSet/node-exporter", "balanced", "pod-template"),
        ("prod/payments/StatefulSet/ledger", "performance-first", "namespace"),  # label
        ("prod/shop/Rollout/web", "cost-optimized", "namespace"),  # annotation
        ("prod/batch/CronJob/nightly-report", "balanced", "default"),  # both invalid
        ("prod/batch/Job/migrate-db", "balanced", "default"),
    ],
)
def test_profile_comes_from_workload_then_template_then_namespace(
    workload: str, profile: str, source: str
) -> None:
    built = workloads_by_id()[workload]
    assert (built.spec.profile, built.facts.profile_source) == (profile, source)


def test_the_default_profile_is_configurable() -> None:
    built = build_workloads(
        loaded_state(), cluster="prod", timestamp=NOW, default_profile="cost-optimized"
    )
    migrate = next(w for w in built if w.id == "prod/batch/Job/migrate-db")
    assert migrate.spec.profile == "cost-optimized"


# --------------------------------------------------------------------------- JVM options


def test_jvm_options_from_env_args_and_shell_command_lines() -> None:
    workloads = workloads_by_id()
    (checkout,) = workloads["prod/shop/Deployment/checkout"].facts.jvm
    env = item("Deployment", "checkout")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert checkout.container == "app"
    assert checkout.options == env[0]["value"]
    assert checkout.heap_sizing == "ram-percentage"
    (ledger,) = workloads["prod/payments/StatefulSet/ledger"].facts.jvm
    assert ledger.args == ("-Xms2g", "-Xmx3g", "-XX:+UseParallelGC")  # from `sh -c "..."`
    assert ledger.from_refs == ("JAVA_OPTS",)
    assert ledger.heap_sizing == "xmx"
    (web,) = workloads["prod/shop/Rollout/web"].facts.jvm
    assert web.args == ("-Xmx384m",)  # -D and -jar are not sizing options
    (spark,) = workloads["prod/analytics/SparkApplication/spark-pi"].facts.jvm
    assert spark.env == {"JDK_JAVA_OPTIONS": "-Xmx1g"}
    assert workloads["prod/monitoring/DaemonSet/node-exporter"].facts.jvm == ()


def test_jvm_options_of_a_plain_container_are_none() -> None:
    assert jvm_options({"name": "x", "args": ["--port", "80"], "env": [{"name": "A"}]}) is None


# --------------------------------------------------------------------------- nodes


@pytest.mark.parametrize(
    ("node", "pool", "capacity"),
    [
        ("gke-prod-default-pool-1a2b3c4d-x7k9", "default-pool", "on-demand"),
        ("gke-prod-highmem-pool-5e6f7a8b-q2w3", "highmem-pool", "spot"),
        ("ip-10-0-12-34.eu-west-1.compute.internal", "general-spot", "spot"),
        ("ip-10-0-40-7.eu-west-1.compute.internal", "system", "on-demand"),
        ("ip-10-0-77-201.eu-west-1.compute.internal", "batch", "spot"),
        ("aks-userpool-12345678-vmss000003", "userpool", "spot"),
        ("kind-worker", None, None),
    ],
)
def test_node_allocatable_pool_and_capacity_type(
    node: str, pool: str | None, capacity: str | None
) -> None:
    every = items("Node") + recorded("nodes_other_providers")["items"]
    obj = next(n for n in every if n["metadata"]["name"] == node)
    info = node_info(obj)
    allocatable = obj["status"]["allocatable"]
    assert info.allocatable_cpu_cores == parse_cpu(allocatable["cpu"])
    assert info.allocatable_memory_bytes == parse_memory(allocatable["memory"])
    assert (info.pool, info.capacity_type) == (pool, capacity)
    assert info.instance_type == obj["metadata"]["labels"].get("node.kubernetes.io/instance-type")


def test_node_fit_is_the_largest_node_of_the_workloads_pool() -> None:
    workloads = workloads_by_id()
    ledger = workloads["prod/payments/StatefulSet/ledger"]
    highmem = [node_info(n) for n in items("Node") if "highmem" in n["metadata"]["name"]]
    biggest = max(highmem, key=lambda n: n.allocatable_memory_bytes or 0)
    assert ledger.facts.node_pools == ("highmem-pool",)
    assert ledger.facts.capacity_types == ("spot",)
    assert ledger.facts.node_fit == (
        (biggest.allocatable_cpu_cores, biggest.allocatable_memory_bytes),
    )
    checkout = workloads["prod/shop/Deployment/checkout"]
    assert checkout.facts.node_pools == ("default-pool",)
    assert all(cpu < 4 for cpu, _ in checkout.facts.node_fit)


points = st.lists(
    st.tuples(
        st.floats(min_value=0.1, max_value=256, allow_nan=False),
        st.integers(min_value=1, max_value=2**40),
    ),
    max_size=40,
)


@given(points)
def test_node_fit_front_covers_every_node_and_no_point_dominates_another(
    nodes: list[tuple[float, int]],
) -> None:
    front = _pareto(nodes)
    for cpu, memory in nodes:
        assert any(c >= cpu and m >= memory for c, m in front)
    for index, (cpu, memory) in enumerate(front):
        others = front[:index] + front[index + 1 :]
        assert not any(c >= cpu and m >= memory for c, m in others)


# --------------------------------------------------------------------------- HPAs


def test_hpa_targets_are_read_from_autoscaling_v2() -> None:
    workloads = workloads_by_id()
    checkout = workloads["prod/shop/Deployment/checkout"].facts.hpa
    assert checkout is not None
    spec = item("HorizontalPodAutoscaler", "checkout")["spec"]
    assert (checkout.min_replicas, checkout.max_replicas) == (
        spec["minReplicas"],
        spec["maxReplicas"],
    )
    cpu_target = spec["metrics"][0]["resource"]["target"]["averageUtilization"] / 100
    memory_value = parse_memory(spec["metrics"][1]["resource"]["target"]["averageValue"])
    assert checkout.targets == (
        HpaTarget("cpu", cpu_target, None),
        HpaTarget("memory", None, float(memory_value)),
    )
    assert checkout.other_metrics == ("Pods",)
    web = workloads["prod/shop/Rollout/web"].facts.hpa
    assert web is not None
    assert web.targets == (HpaTarget("cpu", 0.6, None, container="web"),)
    legacy = workloads["prod/shop/ReplicaSet/legacy-rs"].facts.hpa
    assert legacy is not None
    assert legacy.targets == (HpaTarget("cpu", 0.8, None),)  # autoscaling/v2's default
    assert legacy.min_replicas == 1
    assert workloads["prod/payments/StatefulSet/ledger"].facts.hpa is None


def test_hpa_awareness_from_recorded_objects_to_a_request_and_its_rule() -> None:
    """Acceptance: the HPA read from the API makes the request HPA-aware, and says so."""
    workload = workloads_by_id()["prod/shop/Deployment/checkout"]
    assert workload.facts.hpa is not None
    cpu = next(t for t in workload.facts.hpa.targets if t.resource == "cpu")
    assert cpu.utilization is not None
    app = workload.spec.containers[0]
    assert app.cpu_request_cores is not None
    # at minReplicas each pod uses a third of the request: the HPA cannot scale in
    usage_per_pod = app.cpu_request_cores / 3
    sizing = hpa_aware_request(
        usage_per_pod,
        cpu.utilization,
        peak_total_usage=usage_per_pod * workload.facts.hpa.min_replicas,
        max_replicas=workload.facts.hpa.max_replicas,
    )
    assert sizing.request == pytest.approx(usage_per_pod / cpu.utilization)
    assert usage_per_pod / sizing.request == pytest.approx(cpu.utilization)
    rule = hpa_rule("cpu", usage_per_pod, sizing, hpa_name=workload.facts.hpa.name)
    assert rule["id"] == "hpa-aware"
    assert "70%" in rule["text"]
    assert "HPA checkout" in rule["text"]


# --------------------------------------------------------------------------- malformed


def test_malformed_objects_are_skipped_with_errors_naming_the_field() -> None:
    state = ClusterState()
    nameless = copy.deepcopy(item("Pod", "debug-shell"))
    del nameless["metadata"]["name"]
    errors = state.replace("Pod", [nameless, item("Pod", "ledger-0"), "not an object"])  # type: ignore[list-item]  # a malformed list item on purpose
    assert len(errors) == 2
    assert "$.metadata.name" in errors[0]
    assert "expected an object" in errors[1]
    assert [obj["metadata"]["name"] for obj in state.objects("Pod")] == ["ledger-0"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: c["resources"]["requests"].update(cpu="12 cores"), "resources"),
        (lambda c: c.update(resources=["cpu"]), "expected an object"),
        (lambda c: c.pop("name"), "containers[0].name"),
    ],
)
def test_bad_container_fields_raise_clear_errors(
    mutate: Callable[[dict[str, Any]], object], message: str
) -> None:
    pod_spec = copy.deepcopy(item("Pod", "ledger-0")["spec"])
    mutate(pod_spec["containers"][0])
    with pytest.raises(MalformedObjectError, match=message.replace("[", r"\[").replace("]", r"\]")):
        container_specs(pod_spec)


def test_bad_hpas_and_nodes_raise_clear_errors() -> None:
    hpa = copy.deepcopy(item("HorizontalPodAutoscaler", "checkout"))
    del hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"]
    with pytest.raises(MalformedObjectError, match=r"metrics\[0\].resource.target"):
        hpa_info(hpa)
    hpa["spec"]["maxReplicas"] = "twelve"
    with pytest.raises(MalformedObjectError, match="maxReplicas"):
        hpa_info(hpa)
    node = copy.deepcopy(items("Node")[0])
    node["status"]["allocatable"]["memory"] = "lots"
    with pytest.raises(MalformedObjectError, match=r"status.allocatable"):
        node_info(node)


def test_a_broken_workload_is_reported_and_the_others_still_built() -> None:
    state = loaded_state()
    broken = copy.deepcopy(item("StatefulSet", "ledger"))
    broken["spec"]["template"]["spec"]["containers"] = []
    state.apply("MODIFIED", "StatefulSet", broken)
    errors: list[str] = []
    built = build_workloads(state, cluster="prod", timestamp=NOW, errors=errors)
    assert len(errors) == 1
    assert errors[0].startswith("prod/payments/StatefulSet/ledger: ")
    assert "at least one container" in errors[0]
    assert len(built) == len(workloads_by_id()) - 1


def test_facts_that_are_not_inventory_facts_are_a_clear_error() -> None:
    workload = workloads_by_id()["prod/shop/Deployment/checkout"]
    bad = workload.spec.model_copy(update={"annotations": {FACTS_ANNOTATION: "{}"}})
    with pytest.raises(MalformedObjectError, match=FACTS_ANNOTATION):
        facts_from_spec(bad)


# --------------------------------------------------------------------------- the shell


PATHS = {
    kind: (
        f"/api/{info.version}/{info.plural}"
        if not info.group
        else f"/apis/{info.group}/{info.version}/{info.plural}"
    )
    for kind, info in KINDS.items()
}


class RecordedApiServer:
    """Serves the recorded documents: lists by path, one watch stream for pods."""

    def __init__(self, watch_lines: bytes, stop: asyncio.Event | None = None) -> None:
        self.watch_lines = watch_lines
        self.stop = stop
        self.requests: list[httpx2.Request] = []
        self.pod_lists = 0
        self.on_second_pod_list: Callable[[], None] | None = None

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        kind = next(k for k, path in PATHS.items() if request.url.path == path)
        watching = request.url.params.get("watch") == "true"
        if kind != "Pod":
            if watching:
                return httpx2.Response(200, content=b"")  # a quiet watch
            return httpx2.Response(200, json=recorded(LIST_FILES[kind]))
        if not watching:
            self.pod_lists += 1
            if self.pod_lists == 2 and self.on_second_pod_list is not None:
                self.on_second_pod_list()
            return httpx2.Response(200, json=recorded("pods"))
        if self.pod_lists == 1:
            return httpx2.Response(200, content=self.watch_lines)
        if self.stop is not None:  # the scenario ends after this failed watch
            self.stop.set()
        return httpx2.Response(500, json={"kind": "Status", "code": 500, "message": "boom"})


KUBECONFIG = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [{"name": "prod", "cluster": {"server": "https://k8s.test"}}],
    "users": [{"name": "agent", "user": {"token": "service-account-token"}}],
    "contexts": [{"name": "prod", "context": {"cluster": "prod", "user": "agent"}}],
    "current-context": "prod",
}


def client_for(handler: Callable[[httpx2.Request], httpx2.Response]) -> AsyncClient:
    config = KubeConfig.from_dict(KUBECONFIG)
    return AsyncClient(config=config, transport=httpx2.MockTransport(handler))


async def no_sleep(_: float) -> None:
    await asyncio.sleep(0)


def test_watch_applies_events_and_relists_on_410_gone() -> None:
    async def scenario() -> None:
        stop = asyncio.Event()
        server = RecordedApiServer((K8S_FIXTURES / "watch_pods.jsonl").read_bytes(), stop)
        registry = CollectorRegistry()
        inventory = KubernetesInventory(
            client_for(server),
            InventoryConfig(cluster="prod", kinds=("Pod",)),
            metrics=InventoryMetrics.create(registry),
            sleep=no_sleep,
        )
        seen_before_relist: dict[str, bool] = {}

        def snapshot() -> None:
            seen_before_relist["added"] = (
                inventory.state.get("Pod", "shop", "checkout-6d4cf56db6-n3v8b") is not None
            )
            seen_before_relist["deleted"] = (
                inventory.state.get("Pod", "shop", "debug-shell") is None
            )

        server.on_second_pod_list = snapshot

        await asyncio.wait_for(inventory.watch_kind("Pod", stop), timeout=10)
        assert [
            (r.url.params.get("watch"), r.url.params.get("resourceVersion"))
            for r in server.requests
        ] == [(None, None), ("true", "48213377"), (None, None), ("true", "48213377")]
        assert seen_before_relist == {"added": True, "deleted": True}
        # the relist replaced the state with the fresh list
        assert inventory.state.get("Pod", "shop", "checkout-6d4cf56db6-n3v8b") is None
        assert inventory.state.get("Pod", "shop", "debug-shell") is not None
        watch = server.requests[1]
        assert watch.url.params["watch"] == "true"
        assert (
            watch.url.params["resourceVersion"] == recorded("pods")["metadata"]["resourceVersion"]
        )
        assert watch.headers["Authorization"] == "Bearer service-account-token"
        assert registry.get_sample_value("daytwo_inventory_relists_total", {"kind": "Pod"}) == 2
        assert (
            registry.get_sample_value("daytwo_inventory_watch_errors_total", {"kind": "Pod"}) == 1
        )  # the 500 on the second watch, retried with backoff

    asyncio.run(scenario())


def test_pod_watch_can_be_scoped_to_one_node() -> None:
    async def scenario() -> None:
        server = RecordedApiServer(b"")
        inventory = KubernetesInventory(
            client_for(server),
            InventoryConfig(cluster="prod", node_name="gke-prod-default-pool-1a2b3c4d-x7k9"),
        )
        await inventory.list_kind("Pod")
        assert server.requests[0].url.params["fieldSelector"] == (
            "spec.nodeName=gke-prod-default-pool-1a2b3c4d-x7k9"
        )

    asyncio.run(scenario())


def test_messages_publish_specs_once_and_again_only_when_they_change() -> None:
    async def scenario() -> None:
        server = RecordedApiServer(b"")
        inventory = KubernetesInventory(client_for(server), InventoryConfig(cluster="prod"))
        assert inventory.messages(NOW) == []  # nothing before every kind was listed
        for kind in KINDS:
            await inventory.list_kind(kind)
        assert inventory.ready
        first = inventory.messages(NOW)
        assert {m.topic for m in first} == {WORKLOAD_SPECS_TOPIC}
        assert sorted(m.key.decode() for m in first) == sorted(workloads_by_id())
        for message in first:
            spec = decode(WorkloadSpec, message.payload)
            assert spec.workload == message.key.decode()
        assert inventory.messages(NOW + 60) == []  # unchanged: compacted topic has it
        scaled = copy.deepcopy(item("Deployment", "checkout"))
        scaled["spec"]["replicas"] = 7
        inventory.state.apply("MODIFIED", "Deployment", scaled)
        (changed,) = inventory.messages(NOW + 120)
        assert changed.key == b"prod/shop/Deployment/checkout"
        assert decode(WorkloadSpec, changed.payload).replicas == 7
        index = inventory.pod_workloads()
        assert index[("shop", "debug-shell")].workload == "prod/shop/Pod/debug-shell"

    asyncio.run(scenario())


def test_a_missing_rollout_crd_disables_rollouts_only() -> None:
    async def scenario() -> None:
        def handler(request: httpx2.Request) -> httpx2.Response:
            return httpx2.Response(
                404,
                json={
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "message": "the server could not find the requested resource",
                    "reason": "NotFound",
                    "code": 404,
                },
            )

        inventory = KubernetesInventory(
            client_for(handler),
            InventoryConfig(cluster="prod", kinds=("Rollout",)),
            sleep=no_sleep,
        )
        await asyncio.wait_for(inventory.watch_kind("Rollout", asyncio.Event()), timeout=5)
        assert inventory.ready  # disabled kinds do not block publishing

    asyncio.run(scenario())


def test_a_node_scoped_inventory_serves_the_pod_index_but_publishes_no_specs() -> None:
    async def scenario() -> None:
        server = RecordedApiServer(b"")
        inventory = KubernetesInventory(
            client_for(server), InventoryConfig(cluster="prod", node_name="n1")
        )
        for kind in KINDS:
            await inventory.list_kind(kind)
        assert inventory.ready
        assert inventory.messages(NOW) == []
        assert inventory.pod_workloads()[("payments", "ledger-0")].workload == (
            "prod/payments/StatefulSet/ledger"
        )

    asyncio.run(scenario())


def test_a_rollout_with_a_workload_ref_is_sized_from_the_referenced_deployment() -> None:
    state = loaded_state()
    rollout = copy.deepcopy(item("Rollout", "web"))
    del rollout["spec"]["template"]
    rollout["spec"]["workloadRef"] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "checkout",
    }
    state.apply("MODIFIED", "Rollout", rollout)
    built = {w.id: w for w in build_workloads(state, cluster="prod", timestamp=NOW)}
    assert spec_values(built["prod/shop/Rollout/web"].spec) == spec_values(
        built["prod/shop/Deployment/checkout"].spec
    )
    assert built["prod/shop/Rollout/web"].spec.replicas == rollout["spec"]["replicas"]
    rollout["spec"]["workloadRef"]["name"] = "missing"
    state.apply("MODIFIED", "Rollout", rollout)
    errors: list[str] = []
    build_workloads(state, cluster="prod", timestamp=NOW, errors=errors)
    assert any("workloadRef" in error for error in errors)
