"""Kubernetes workload inventory: pods → owners → workload specs, HPAs and node pools.

Why: a recommendation is only as good as what daytwo knows about the workload it sizes —
the requests and limits *declared* in its template (not a pod's defaulted copy), its
replicas, whether an HPA scales it on the same resource (HPA-aware sizing,
:mod:`pipeline.core.hpa`), the JVM options it starts with, the profile its team chose,
and the nodes it can land on (never recommend above the largest node that could host the
pod). The kubelet source also needs the inventory to turn a pod name into a workload id.

Layout (design rule: math apart from I/O):

* **pure core** — :class:`ClusterState` holds the listed and watched objects as the API
  sent them (plain dicts, trimmed of what daytwo never reads); :func:`resolve_owner_chain`,
  :func:`node_info`, :func:`hpa_info`, :func:`container_specs`, :func:`jvm_options` and
  :func:`build_workloads` are functions of those dicts, so tests feed recorded API
  responses (``tests/fixtures/k8s/``) straight in. Malformed objects raise
  :class:`MalformedObjectError` naming the kind, object and field.
* **thin shell** — :class:`KubernetesInventory` lists and watches each kind with lightkube
  (async), reconnects with capped exponential backoff, resumes watches from the last
  ``resourceVersion`` and relists on ``410 Gone``; as a :class:`~agents.collector.Collector`
  it publishes changed specs to the compacted ``daytwo.workload-specs.v1``, and a
  tombstone (the key with a null value) once for a workload it published that is gone.

Workload identity (``cluster/namespace/Kind/name``), following each pod's *controller*
owner reference (``controller: true``):

=====================================  ==========================================
pod owner chain                        workload
=====================================  ==========================================
Pod → ReplicaSet → Deployment          ``Deployment``
Pod → ReplicaSet → Rollout             ``Rollout`` (``argoproj.io/v1alpha1``)
Pod → ReplicaSet (no controller)       ``ReplicaSet``
Pod → StatefulSet / DaemonSet          that kind
Pod → Job → CronJob                    ``CronJob``
Pod → Job (no controller)              ``Job``
Pod → other controller (a CR)          that kind (its spec is read from the pod)
Pod without controller, static pod     ``Pod`` (a static pod's owner is its Node)
=====================================  ==========================================

A chain through a ReplicaSet or Job that is not (yet) in the state is *unresolved*
(``None``): guessing from names would publish a wrong workload id, so the pod is left out
until its owner arrives. An owner whose ``uid`` differs from the reference is a recreated
object and counts as missing.

What the spec carries: the contract (``workload-spec.v1``) has requests, limits, replicas,
profile and annotations. Everything else the inventory learns (owner chain, HPA, JVM
options, node pools, node fit, where the profile came from) travels as canonical JSON in
the reserved annotation :data:`FACTS_ANNOTATION` (read back with :func:`facts_from_spec`),
so consumers get it without a schema change. Requests: a container with a limit but no
request gets request = limit, as the API server defaults it on the pods it creates.
``kubectl.kubernetes.io/last-applied-configuration`` (a copy of the manifest, up to
256 KiB) is dropped from the annotations.

Profile: the workload's annotation ``daytwo.io/profile``, else its pod template's, else
the namespace's annotation (or label) ``daytwo.io/default-profile``, else the configured
default (``balanced``); ``profile_source`` in the facts says which, so a worker with a
different default can tell "defaulted" from "chosen". An invalid value (not a lowercase
DNS label) is logged and skipped.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import re
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Literal

import httpx2
import orjson
from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import create_global_resource, create_namespaced_resource
from prometheus_client import CollectorRegistry, Counter, Gauge

from agents.collector import OutgoingMessage
from agents.jvm_flags import heap_sizing_from_options
from pipeline.core.profiles import DEFAULT_PROFILE_NAME, PROFILE_ANNOTATION
from pipeline.core.quantity import parse_cpu, parse_memory
from pipeline.errors import CollectorError, QuantityError
from schemas.models import PROFILE_PATTERN, ContainerSpec, WorkloadSpec
from schemas.validate import encode

__all__ = [
    "FACTS_ANNOTATION",
    "INVENTORY_SOURCE",
    "KINDS",
    "NAMESPACE_PROFILE_KEY",
    "WORKLOAD_SPECS_TOPIC",
    "ClusterState",
    "HpaInfo",
    "HpaTarget",
    "InventoryConfig",
    "InventoryFacts",
    "InventoryMetrics",
    "JvmOptions",
    "KindInfo",
    "KubernetesInventory",
    "MalformedObjectError",
    "NodeInfo",
    "OwnerRef",
    "PodWorkload",
    "Workload",
    "build_workloads",
    "container_specs",
    "facts_from_spec",
    "hpa_info",
    "jvm_options",
    "node_info",
    "pod_index",
    "resolve_owner_chain",
    "workload_id",
]

INVENTORY_SOURCE: Final = "inventory"
WORKLOAD_SPECS_TOPIC: Final = "daytwo.workload-specs.v1"
NAMESPACE_PROFILE_KEY: Final = "daytwo.io/default-profile"
"""Namespace annotation (or label) naming the default profile of its workloads."""
FACTS_ANNOTATION: Final = "inventory.daytwo.io/facts"
"""Reserved spec annotation holding :class:`InventoryFacts` as canonical JSON."""
FACTS_VERSION: Final = 1
LAST_APPLIED_ANNOTATION: Final = "kubectl.kubernetes.io/last-applied-configuration"
MAX_SPEC_ANNOTATIONS: Final = 256

#: Node labels naming the node pool, most specific first (GKE, EKS managed node groups,
#: AKS, Karpenter v1 and its v1alpha5 predecessor).
NODE_POOL_LABELS: Final = (
    "cloud.google.com/gke-nodepool",
    "eks.amazonaws.com/nodegroup",
    "kubernetes.azure.com/agentpool",
    "karpenter.sh/nodepool",
    "karpenter.sh/provisioner-name",
)
INSTANCE_TYPE_LABEL: Final = "node.kubernetes.io/instance-type"
JVM_OPTION_ENV: Final = ("JAVA_TOOL_OPTIONS", "JDK_JAVA_OPTIONS", "JAVA_OPTS")

_PROFILE_RE: Final = re.compile(PROFILE_PATTERN)

CapacityType = Literal["spot", "on-demand"]
ProfileSource = Literal["workload", "pod-template", "namespace", "default"]

log = logging.getLogger(__name__)


class MalformedObjectError(CollectorError):
    """An API object lacks a field daytwo needs or has the wrong type there.

    The message names the kind, ``namespace/name`` and the JSON path, so the bad object
    can be found with ``kubectl get``; the inventory skips it and counts it.
    """


# --------------------------------------------------------------------------- kinds


@dataclass(frozen=True, slots=True)
class KindInfo:
    """Where a kind lives in the API: group, version, plural, and whether it is namespaced."""

    group: str
    version: str
    plural: str
    namespaced: bool = True
    optional: bool = False  # a CRD that may not be installed (Argo Rollouts)

    @property
    def api_version(self) -> str:
        """``apps/v1`` style, ``v1`` for the core group."""
        return f"{self.group}/{self.version}" if self.group else self.version


KINDS: Final[Mapping[str, KindInfo]] = {
    "Namespace": KindInfo("", "v1", "namespaces", namespaced=False),
    "Node": KindInfo("", "v1", "nodes", namespaced=False),
    "Pod": KindInfo("", "v1", "pods"),
    "ReplicaSet": KindInfo("apps", "v1", "replicasets"),
    "Deployment": KindInfo("apps", "v1", "deployments"),
    "StatefulSet": KindInfo("apps", "v1", "statefulsets"),
    "DaemonSet": KindInfo("apps", "v1", "daemonsets"),
    "Job": KindInfo("batch", "v1", "jobs"),
    "CronJob": KindInfo("batch", "v1", "cronjobs"),
    "HorizontalPodAutoscaler": KindInfo("autoscaling", "v2", "horizontalpodautoscalers"),
    "Rollout": KindInfo("argoproj.io", "v1alpha1", "rollouts", optional=True),
}
#: Owner kinds whose own controller decides the workload (so they must be known).
_INTERMEDIATE_KINDS: Final = frozenset({"ReplicaSet", "Job"})
_PARENT_KINDS: Final[Mapping[str, frozenset[str]]] = {
    "ReplicaSet": frozenset({"Deployment", "Rollout"}),
    "Job": frozenset({"CronJob"}),
}
_TEMPLATE_KINDS: Final = frozenset(
    {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Rollout"}
)


# --------------------------------------------------------------------------- field access


def _describe(obj: Mapping[str, Any], kind: str) -> str:
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping):
        return f"{kind} (no metadata)"
    name = meta.get("name", "?")
    namespace = meta.get("namespace")
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise MalformedObjectError(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _sequence(value: object, where: str) -> Sequence[Any]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise MalformedObjectError(f"{where}: expected a list, got {type(value).__name__}")
    return value


def _string(value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise MalformedObjectError(f"{where}: expected a non-empty string, got {value!r}")
    return value


def _int(value: object, where: str, default: int | None) -> int | None:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MalformedObjectError(f"{where}: expected an integer >= 0, got {value!r}")
    return value


def _string_map(value: object, where: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for key, item in _mapping(value, where).items():
        if not isinstance(item, str):
            raise MalformedObjectError(f"{where}.{key}: expected a string, got {item!r}")
        result[str(key)] = item
    return result


def _metadata(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise MalformedObjectError(f"{kind}: expected an object, got {type(obj).__name__}")
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping):
        raise MalformedObjectError(f"{_describe(obj, kind)}: $.metadata is missing")
    return meta


def object_key(obj: Mapping[str, Any], kind: str) -> tuple[str, str]:
    """``(namespace, name)`` of an object (namespace ``""`` for cluster-scoped kinds)."""
    meta = _metadata(obj, kind)
    where = _describe(obj, kind)
    name = _string(meta.get("name"), f"{where}: $.metadata.name")
    if KINDS[kind].namespaced:
        return _string(meta.get("namespace"), f"{where}: $.metadata.namespace"), name
    return "", name


# --------------------------------------------------------------------------- state


def _trim(kind: str, obj: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of an object daytwo reads; bounds memory on clusters with many pods."""
    meta = _metadata(obj, kind)
    kept_meta = {
        key: meta[key]
        for key in ("name", "namespace", "uid", "ownerReferences", "labels", "resourceVersion")
        if key in meta
    }
    annotations = meta.get("annotations")
    if isinstance(annotations, Mapping):
        kept_meta["annotations"] = {
            k: v for k, v in annotations.items() if k != LAST_APPLIED_ANNOTATION
        }
    trimmed: dict[str, Any] = {"metadata": kept_meta}
    if "spec" in obj:
        trimmed["spec"] = obj["spec"]
    status = obj.get("status")
    if isinstance(status, Mapping):
        keep = {
            "Node": ("allocatable", "capacity"),
            "Pod": ("phase",),
            "HorizontalPodAutoscaler": ("currentReplicas", "desiredReplicas"),
        }.get(kind, ())
        trimmed["status"] = {key: status[key] for key in keep if key in status}
    return trimmed


class ClusterState:
    """The objects the inventory knows, per kind, keyed by ``(namespace, name)``.

    Pure and synchronous: the watch shell feeds it list results (:meth:`replace`) and
    watch events (:meth:`apply`); everything else reads it. Objects are stored trimmed.
    """

    def __init__(self) -> None:
        self._objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {
            kind: {} for kind in KINDS
        }
        #: bumped on every change, so callers can skip rebuilding an unchanged state
        self.generation = 0

    def replace(self, kind: str, items: Iterable[Mapping[str, Any]]) -> list[str]:
        """Set all objects of ``kind`` (a fresh list). Returns errors of skipped objects."""
        fresh: dict[tuple[str, str], dict[str, Any]] = {}
        errors: list[str] = []
        for item in items:
            try:
                fresh[object_key(item, kind)] = _trim(kind, item)
            except MalformedObjectError as error:
                errors.append(str(error))
        self._objects[kind] = fresh
        self.generation += 1
        return errors

    def apply(self, event_type: str, kind: str, obj: Mapping[str, Any]) -> None:
        """Apply one watch event (``ADDED``, ``MODIFIED``, ``DELETED``; others ignored)."""
        if event_type not in {"ADDED", "MODIFIED", "DELETED"}:
            return
        key = object_key(obj, kind)
        if event_type == "DELETED":
            self._objects[kind].pop(key, None)
        else:
            self._objects[kind][key] = _trim(kind, obj)
        self.generation += 1

    def get(self, kind: str, namespace: str, name: str) -> Mapping[str, Any] | None:
        """One object, or ``None`` when it is not (or not yet) known."""
        return self._objects[kind].get((namespace, name))

    def objects(self, kind: str) -> list[Mapping[str, Any]]:
        """All objects of a kind, in key order (stable output for tests and diffs)."""
        items = self._objects[kind]
        return [items[key] for key in sorted(items)]


# --------------------------------------------------------------------------- owners


@dataclass(frozen=True, slots=True)
class OwnerRef:
    """One link of an owner chain: kind and name (same namespace as the pod)."""

    kind: str
    name: str


def controller_of(obj: Mapping[str, Any], kind: str) -> tuple[OwnerRef, str | None] | None:
    """The controller owner reference (``controller: true``) and its uid, if any."""
    meta = _metadata(obj, kind)
    where = f"{_describe(obj, kind)}: $.metadata.ownerReferences"
    for index, ref in enumerate(_sequence(meta.get("ownerReferences"), where)):
        ref_map = _mapping(ref, f"{where}[{index}]")
        if ref_map.get("controller") is True:
            uid = ref_map.get("uid")
            return (
                OwnerRef(
                    _string(ref_map.get("kind"), f"{where}[{index}].kind"),
                    _string(ref_map.get("name"), f"{where}[{index}].name"),
                ),
                uid if isinstance(uid, str) else None,
            )
    return None


def resolve_owner_chain(state: ClusterState, pod: Mapping[str, Any]) -> tuple[OwnerRef, ...] | None:
    """The chain from a pod up to its workload, pod first; ``None`` while unresolvable.

    See the module docstring for the table. ``None`` means an intermediate owner
    (ReplicaSet, Job) is not in the state or is a different object with the same name.
    """
    namespace, pod_name = object_key(pod, "Pod")
    chain = [OwnerRef("Pod", pod_name)]
    found = controller_of(pod, "Pod")
    if found is None or found[0].kind == "Node":  # bare pod, or static (mirror) pod
        return tuple(chain)
    owner, uid = found
    chain.append(owner)
    if owner.kind not in _INTERMEDIATE_KINDS:
        return tuple(chain)
    parent = state.get(owner.kind, namespace, owner.name)
    if parent is None or (uid is not None and _metadata(parent, owner.kind).get("uid") != uid):
        return None
    parent_owner = controller_of(parent, owner.kind)
    if parent_owner is not None and parent_owner[0].kind in _PARENT_KINDS[owner.kind]:
        chain.append(parent_owner[0])
    return tuple(chain)


def workload_id(cluster: str, namespace: str, kind: str, name: str) -> str:
    """``cluster/namespace/kind/name``: the key of every topic."""
    return f"{cluster}/{namespace}/{kind}/{name}"


# --------------------------------------------------------------------------- nodes


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What sizing needs from a node: allocatable resources, pool and price class."""

    name: str
    allocatable_cpu_cores: float | None
    allocatable_memory_bytes: int | None
    pool: str | None
    capacity_type: CapacityType | None
    instance_type: str | None


def _capacity_type(labels: Mapping[str, str]) -> CapacityType | None:
    karpenter = labels.get("karpenter.sh/capacity-type")
    if karpenter is not None:
        return "spot" if karpenter.lower() == "spot" else "on-demand"
    eks = labels.get("eks.amazonaws.com/capacityType")
    if eks is not None:
        return "spot" if eks.upper() == "SPOT" else "on-demand"
    if "true" in (
        labels.get("cloud.google.com/gke-spot"),
        labels.get("cloud.google.com/gke-preemptible"),
    ):
        return "spot"
    azure = labels.get("kubernetes.azure.com/scalesetpriority")
    if azure is not None:
        return "spot" if azure.lower() == "spot" else "on-demand"
    if any(label in labels for label in NODE_POOL_LABELS):
        return "on-demand"  # a known provider's pool without its spot marker
    return None


def node_info(node: Mapping[str, Any]) -> NodeInfo:
    """Allocatable CPU/memory, node pool and capacity type (spot/on-demand) of a Node.

    Pool: the first of :data:`NODE_POOL_LABELS` present. Capacity type from Karpenter's
    ``karpenter.sh/capacity-type``, EKS's ``eks.amazonaws.com/capacityType``, GKE's
    ``cloud.google.com/gke-spot`` / ``gke-preemptible``, AKS's
    ``kubernetes.azure.com/scalesetpriority``; ``None`` when no known label says.
    """
    _, name = object_key(node, "Node")
    where = _describe(node, "Node")
    labels = _string_map(_metadata(node, "Node").get("labels"), f"{where}: $.metadata.labels")
    allocatable = _mapping(
        _mapping(node.get("status"), f"{where}: $.status").get("allocatable"),
        f"{where}: $.status.allocatable",
    )
    try:
        cpu = parse_cpu(allocatable["cpu"]) if "cpu" in allocatable else None
        memory = parse_memory(allocatable["memory"]) if "memory" in allocatable else None
    except QuantityError as error:
        raise MalformedObjectError(f"{where}: $.status.allocatable: {error}") from None
    pool = next((labels[label] for label in NODE_POOL_LABELS if labels.get(label)), None)
    return NodeInfo(
        name=name,
        allocatable_cpu_cores=cpu,
        allocatable_memory_bytes=memory,
        pool=pool,
        capacity_type=_capacity_type(labels),
        instance_type=labels.get(INSTANCE_TYPE_LABEL),
    )


# --------------------------------------------------------------------------- HPAs


@dataclass(frozen=True, slots=True)
class HpaTarget:
    """One CPU or memory target of an HPA.

    ``utilization`` is a fraction of the request (``averageUtilization: 70`` → 0.7): only
    such targets couple the request to the replica count. ``average_value`` (cores or
    bytes per pod) scales on absolute usage, independent of the request. ``container`` is
    set for ``ContainerResource`` metrics.
    """

    resource: Literal["cpu", "memory"]
    utilization: float | None
    average_value: float | None
    container: str | None = None


@dataclass(frozen=True, slots=True)
class HpaInfo:
    """An ``autoscaling/v2`` HPA as sizing sees it."""

    name: str
    target_kind: str
    target_name: str
    min_replicas: int
    max_replicas: int
    targets: tuple[HpaTarget, ...]
    other_metrics: tuple[str, ...]  # Pods / Object / External, or other resources
    current_replicas: int | None = None


def _hpa_target(
    spec: Mapping[str, Any], resource: str, container: str | None, where: str
) -> HpaTarget:
    target = _mapping(spec.get("target"), f"{where}.target")
    kind = target.get("type")
    utilization = average = None
    if kind == "Utilization":
        value = _int(target.get("averageUtilization"), f"{where}.target.averageUtilization", None)
        if not value:
            raise MalformedObjectError(f"{where}.target.averageUtilization: must be > 0")
        utilization = value / 100
    elif kind == "AverageValue":
        raw = target.get("averageValue")
        if not isinstance(raw, str | int | float) or isinstance(raw, bool):
            raise MalformedObjectError(f"{where}.target.averageValue: a quantity, got {raw!r}")
        try:
            average = parse_cpu(raw) if resource == "cpu" else float(parse_memory(str(raw)))
        except (QuantityError, TypeError) as error:
            raise MalformedObjectError(f"{where}.target.averageValue: {error}") from None
    else:
        raise MalformedObjectError(
            f"{where}.target.type: a resource metric needs Utilization or AverageValue, got "
            f"{kind!r}"
        )
    return HpaTarget(resource, utilization, average, container)  # type: ignore[arg-type]  # resource checked by the caller


def hpa_info(hpa: Mapping[str, Any]) -> HpaInfo:
    """Scale target, replica bounds and CPU/memory targets of an ``autoscaling/v2`` HPA."""
    _, name = object_key(hpa, "HorizontalPodAutoscaler")
    described = _describe(hpa, "HorizontalPodAutoscaler")
    where = f"{described}: $.spec"
    spec = _mapping(hpa.get("spec"), where)
    ref = _mapping(spec.get("scaleTargetRef"), f"{where}.scaleTargetRef")
    max_replicas = _int(spec.get("maxReplicas"), f"{where}.maxReplicas", None)
    if max_replicas is None or max_replicas < 1:
        raise MalformedObjectError(f"{where}.maxReplicas: required and >= 1")
    min_replicas = _int(spec.get("minReplicas"), f"{where}.minReplicas", 1)
    targets: list[HpaTarget] = []
    other: list[str] = []
    for index, metric in enumerate(_sequence(spec.get("metrics"), f"{where}.metrics")):
        at = f"{where}.metrics[{index}]"
        metric_map = _mapping(metric, at)
        metric_type = _string(metric_map.get("type"), f"{at}.type")
        if metric_type in {"Resource", "ContainerResource"}:
            field_name = "resource" if metric_type == "Resource" else "containerResource"
            body = _mapping(metric_map.get(field_name), f"{at}.{field_name}")
            resource = _string(body.get("name"), f"{at}.{field_name}.name")
            container = None
            if metric_type == "ContainerResource":
                container = _string(body.get("container"), f"{at}.{field_name}.container")
            if resource in {"cpu", "memory"}:
                targets.append(_hpa_target(body, resource, container, f"{at}.{field_name}"))
                continue
            other.append(f"{metric_type}:{resource}")
        else:
            other.append(metric_type)
    if not spec.get("metrics"):  # autoscaling/v2 default: 80% average CPU utilisation
        targets.append(HpaTarget("cpu", 0.8, None))
    status = _mapping(hpa.get("status"), f"{described}: $.status")
    return HpaInfo(
        name=name,
        target_kind=_string(ref.get("kind"), f"{where}.scaleTargetRef.kind"),
        target_name=_string(ref.get("name"), f"{where}.scaleTargetRef.name"),
        min_replicas=min_replicas or 1,
        max_replicas=max_replicas,
        targets=tuple(targets),
        other_metrics=tuple(other),
        current_replicas=_int(
            status.get("currentReplicas"), f"{described}: $.status.currentReplicas", None
        ),
    )


# --------------------------------------------------------------------------- containers


def _pod_containers(pod_spec: Mapping[str, Any], where: str) -> list[Mapping[str, Any]]:
    """Long-running containers: ``containers`` plus native sidecars (init, restartPolicy Always)."""
    result = [
        _mapping(item, f"{where}.containers[{index}]")
        for index, item in enumerate(_sequence(pod_spec.get("containers"), f"{where}.containers"))
    ]
    for index, item in enumerate(
        _sequence(pod_spec.get("initContainers"), f"{where}.initContainers")
    ):
        init = _mapping(item, f"{where}.initContainers[{index}]")
        if init.get("restartPolicy") == "Always":
            result.append(init)
    return result


def container_specs(
    pod_spec: Mapping[str, Any], where: str = "$.spec"
) -> tuple[ContainerSpec, ...]:
    """Declared requests and limits of each long-running container of a pod spec.

    A missing request with a limit set becomes the limit (API-server defaulting), a
    CPU limit of 0 or an absent one is ``None``.
    """
    specs: list[ContainerSpec] = []
    for index, container in enumerate(_pod_containers(pod_spec, where)):
        at = f"{where}.containers[{index}]"
        name = _string(container.get("name"), f"{at}.name")
        resources = _mapping(container.get("resources"), f"{at}.resources")
        requests = _mapping(resources.get("requests"), f"{at}.resources.requests")
        limits = _mapping(resources.get("limits"), f"{at}.resources.limits")
        try:
            cpu_limit = parse_cpu(limits["cpu"]) if "cpu" in limits else None
            memory_limit = parse_memory(limits["memory"]) if "memory" in limits else None
            cpu_request = parse_cpu(requests["cpu"]) if "cpu" in requests else cpu_limit
            memory_request = (
                parse_memory(requests["memory"]) if "memory" in requests else memory_limit
            )
        except QuantityError as error:
            raise MalformedObjectError(f"{at}.resources: {error}") from None
        specs.append(
            ContainerSpec(
                name=name,
                cpu_request_cores=cpu_request,
                cpu_limit_cores=cpu_limit or None,
                memory_request_bytes=memory_request,
                memory_limit_bytes=memory_limit or None,
            )
        )
    if not specs:
        raise MalformedObjectError(f"{where}.containers: a pod spec needs at least one container")
    return tuple(specs)


@dataclass(frozen=True, slots=True)
class JvmOptions:
    """JVM options a container starts with, as declared (literal env values and args).

    ``env`` holds literal values of ``JAVA_TOOL_OPTIONS``, ``JDK_JAVA_OPTIONS`` and
    ``JAVA_OPTS`` (a ``valueFrom`` is recorded as ``from_refs``: the inventory has no
    ConfigMap/Secret access, by design); ``args`` the ``-X…`` tokens of command and args.
    ``heap_sizing`` is which option a heap recommendation must edit.
    """

    container: str
    env: Mapping[str, str]
    args: tuple[str, ...]
    from_refs: tuple[str, ...]
    heap_sizing: Literal["xmx", "ram-percentage", "default"]

    @property
    def options(self) -> str:
        """All options in the order the JVM reads them (tool options, then command line)."""
        parts = [self.env[name] for name in JVM_OPTION_ENV if name in self.env]
        return " ".join([*parts, *self.args])


def jvm_options(container: Mapping[str, Any], where: str = "$") -> JvmOptions | None:
    """The JVM options of one container spec, or ``None`` when it shows none."""
    name = _string(container.get("name"), f"{where}.name")
    env: dict[str, str] = {}
    refs: list[str] = []
    for index, item in enumerate(_sequence(container.get("env"), f"{where}.env")):
        var = _mapping(item, f"{where}.env[{index}]")
        var_name = var.get("name")
        if var_name not in JVM_OPTION_ENV:
            continue
        if isinstance(var.get("value"), str):
            env[str(var_name)] = var["value"]
        elif var.get("valueFrom") is not None:
            refs.append(str(var_name))
    tokens: list[str] = []
    for part in ("command", "args"):
        for index, token in enumerate(_sequence(container.get(part), f"{where}.{part}")):
            text = _string(token, f"{where}.{part}[{index}]") if token != "" else ""
            # shell wrappers (sh -c "java -Xmx1g ...") hide options inside one argument
            pieces = shlex.split(text) if " " in text else [text]
            tokens.extend(piece for piece in pieces if piece.startswith("-X"))
    if not env and not tokens and not refs:
        return None
    sizing = heap_sizing_from_options(*(env[n] for n in JVM_OPTION_ENV if n in env), *tokens)
    return JvmOptions(name, env, tuple(tokens), tuple(refs), sizing)


# --------------------------------------------------------------------------- workloads


@dataclass(frozen=True, slots=True)
class InventoryFacts:
    """What the inventory knows beyond the ``workload-spec`` contract (see the module doc).

    ``owner_chain`` runs from the pod's direct owner up to the workload (pod names churn,
    so they are left out; a bare or static pod's chain is the pod itself).

    ``node_fit`` lists the allocatable ``(cpu_cores, memory_bytes)`` of the largest
    candidate nodes (Pareto front: no listed node is smaller in both), candidates being
    the nodes of the workload's pools, or all nodes when no pool is known. A
    recommendation must fit one of them (DaemonSet pods on the node are not subtracted).
    """

    owner_chain: tuple[tuple[str, str], ...]
    profile_source: ProfileSource
    hpa: HpaInfo | None
    jvm: tuple[JvmOptions, ...]
    node_pools: tuple[str, ...]
    capacity_types: tuple[str, ...]
    node_fit: tuple[tuple[float, int], ...]
    pods: int

    def to_json(self) -> str:
        """Canonical JSON (sorted keys) for :data:`FACTS_ANNOTATION`."""
        body = asdict(self)
        body["version"] = FACTS_VERSION
        return orjson.dumps(body, option=orjson.OPT_SORT_KEYS).decode()

    @classmethod
    def from_json(cls, text: str) -> InventoryFacts:
        """Parse :meth:`to_json` output; raises :class:`MalformedObjectError` otherwise."""
        try:
            body = orjson.loads(text)
            if body.pop("version") != FACTS_VERSION:
                raise MalformedObjectError(f"{FACTS_ANNOTATION}: unknown facts version")
            hpa = body["hpa"]
            return cls(
                owner_chain=tuple((kind, name) for kind, name in body["owner_chain"]),
                profile_source=body["profile_source"],
                hpa=None
                if hpa is None
                else HpaInfo(
                    **{
                        **hpa,
                        "targets": tuple(HpaTarget(**t) for t in hpa["targets"]),
                        "other_metrics": tuple(hpa["other_metrics"]),
                    }
                ),
                jvm=tuple(
                    JvmOptions(
                        **{**j, "args": tuple(j["args"]), "from_refs": tuple(j["from_refs"])}
                    )
                    for j in body["jvm"]
                ),
                node_pools=tuple(body["node_pools"]),
                capacity_types=tuple(body["capacity_types"]),
                node_fit=tuple((float(c), int(m)) for c, m in body["node_fit"]),
                pods=int(body["pods"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as error:
            raise MalformedObjectError(
                f"{FACTS_ANNOTATION}: not inventory facts: {error}"
            ) from None


def facts_from_spec(spec: WorkloadSpec) -> InventoryFacts | None:
    """The inventory facts a published spec carries, ``None`` for other sources' specs."""
    text = spec.annotations.get(FACTS_ANNOTATION)
    return None if text is None else InventoryFacts.from_json(text)


@dataclass(frozen=True, slots=True)
class Workload:
    """One workload as built from the state: the contract object and its facts."""

    id: str
    spec: WorkloadSpec
    facts: InventoryFacts

    def content_key(self) -> bytes:
        """The spec without its timestamp: unchanged key → nothing to republish."""
        return orjson.dumps(
            self.spec.model_dump(mode="json", exclude={"timestamp"}), option=orjson.OPT_SORT_KEYS
        )


@dataclass(frozen=True, slots=True)
class PodWorkload:
    """The kubelet source's view of one pod: its workload and its containers' limits."""

    workload: str
    uid: str | None
    containers: Mapping[str, ContainerSpec] = field(default_factory=dict)


def _valid_profile(value: str | None) -> bool:
    return value is not None and len(value) <= 63 and _PROFILE_RE.fullmatch(value) is not None


def _namespace_defaults(state: ClusterState) -> dict[str, str]:
    defaults: dict[str, str] = {}
    for namespace in state.objects("Namespace"):
        meta = _metadata(namespace, "Namespace")
        value = _string_map(meta.get("annotations"), "namespace annotations").get(
            NAMESPACE_PROFILE_KEY
        ) or _string_map(meta.get("labels"), "namespace labels").get(NAMESPACE_PROFILE_KEY)
        if value is None:
            continue
        if _valid_profile(value):
            defaults[str(meta.get("name"))] = value
        else:
            log.warning(
                "namespace %s: %s=%r is not a profile name",
                meta.get("name"),
                NAMESPACE_PROFILE_KEY,
                value,
            )
    return defaults


def _template(
    state: ClusterState, kind: str, obj: Mapping[str, Any]
) -> tuple[Mapping[str, Any], Mapping[str, Any], int | None]:
    """(pod template metadata, pod spec, replicas) of a workload object."""
    where = _describe(obj, kind)
    spec = _mapping(obj.get("spec"), f"{where}: $.spec")
    replicas: int | None
    if kind == "CronJob":
        job = _mapping(
            _mapping(spec.get("jobTemplate"), f"{where}: $.spec.jobTemplate").get("spec"),
            f"{where}: $.spec.jobTemplate.spec",
        )
        template = _mapping(job.get("template"), f"{where}: $.spec.jobTemplate.spec.template")
        replicas = _int(job.get("parallelism"), f"{where}: $.spec.jobTemplate.spec.parallelism", 1)
        path = "$.spec.jobTemplate.spec.template"
    else:
        template = _mapping(spec.get("template"), f"{where}: $.spec.template")
        path = "$.spec.template"
        if kind == "Rollout" and not template and spec.get("workloadRef") is not None:
            ref = _mapping(spec.get("workloadRef"), f"{where}: $.spec.workloadRef")
            namespace, _ = object_key(obj, kind)
            referenced = state.get(
                "Deployment",
                namespace,
                _string(ref.get("name"), f"{where}: $.spec.workloadRef.name"),
            )
            if referenced is None:
                raise MalformedObjectError(
                    f"{where}: $.spec.workloadRef names an unknown Deployment"
                )
            template = _mapping(
                _mapping(referenced.get("spec"), "workloadRef spec").get("template"),
                f"{where}: workloadRef template",
            )
        if kind == "DaemonSet":
            replicas = None
        elif kind == "Job":
            replicas = _int(spec.get("parallelism"), f"{where}: $.spec.parallelism", 1)
        else:
            replicas = _int(spec.get("replicas"), f"{where}: $.spec.replicas", 1)
    pod_spec = _mapping(template.get("spec"), f"{where}: {path}.spec")
    return _mapping(template.get("metadata"), f"{where}: {path}.metadata"), pod_spec, replicas


def _pareto(points: Iterable[tuple[float, int]]) -> tuple[tuple[float, int], ...]:
    unique = sorted(set(points), reverse=True)
    front: list[tuple[float, int]] = []
    for cpu, memory in unique:
        if not any(c >= cpu and m >= memory for c, m in front):
            front.append((cpu, memory))
    return tuple(sorted(front))


@dataclass
class _Group:
    chain: tuple[OwnerRef, ...]
    pods: list[Mapping[str, Any]] = field(default_factory=list)


def _group_pods(state: ClusterState) -> tuple[dict[tuple[str, str, str], _Group], int]:
    groups: dict[tuple[str, str, str], _Group] = {}
    unresolved = 0
    for pod in state.objects("Pod"):
        chain = resolve_owner_chain(state, pod)
        if chain is None:
            unresolved += 1
            continue
        namespace, _ = object_key(pod, "Pod")
        top = chain[-1]
        groups.setdefault((namespace, top.kind, top.name), _Group(chain)).pods.append(pod)
    return groups, unresolved


@dataclass(frozen=True)
class _Context:
    """What building one workload needs from the whole state."""

    state: ClusterState
    cluster: str
    nodes: Mapping[str, NodeInfo]
    hpas: Mapping[tuple[str, str, str], HpaInfo]
    namespace_defaults: Mapping[str, str]
    default_profile: str
    timestamp: float
    source: str


def _nodes_and_hpas(
    state: ClusterState, errors: list[str]
) -> tuple[dict[str, NodeInfo], dict[tuple[str, str, str], HpaInfo]]:
    nodes: dict[str, NodeInfo] = {}
    hpas: dict[tuple[str, str, str], HpaInfo] = {}
    for node in state.objects("Node"):
        try:
            info = node_info(node)
        except MalformedObjectError as error:
            errors.append(str(error))
            continue
        nodes[info.name] = info
    for hpa in state.objects("HorizontalPodAutoscaler"):
        try:
            scaler = hpa_info(hpa)
        except MalformedObjectError as error:
            errors.append(str(error))
            continue
        namespace, _ = object_key(hpa, "HorizontalPodAutoscaler")
        hpas[(namespace, scaler.target_kind, scaler.target_name)] = scaler
    return nodes, hpas


def build_workloads(
    state: ClusterState,
    *,
    cluster: str,
    timestamp: float,
    default_profile: str = DEFAULT_PROFILE_NAME,
    source: str = INVENTORY_SOURCE,
    errors: list[str] | None = None,
    unbuildable: set[str] | None = None,
) -> list[Workload]:
    """Every workload in the state as a :class:`Workload` (spec + facts), sorted by id.

    Workloads come from the top-level objects (Deployments, StatefulSets, DaemonSets,
    CronJobs, Rollouts, Jobs and ReplicaSets without a controller — even with 0 pods) and
    from pods whose top owner is not a template kind (bare pods, static pods, custom
    controllers: their spec is read from the first pod, replicas = pods seen). A workload
    (or node, or HPA) that cannot be built is skipped and its error appended to ``errors``;
    the id of such a workload is also added to ``unbuildable``, because it still exists
    (a caller must not take its absence from the result for a deletion).
    """
    errors = errors if errors is not None else []
    groups, _ = _group_pods(state)
    nodes, hpas = _nodes_and_hpas(state, errors)
    context = _Context(
        state, cluster, nodes, hpas, _namespace_defaults(state), default_profile, timestamp, source
    )
    candidates: dict[tuple[str, str, str], Mapping[str, Any] | None] = {}
    for kind in sorted(_TEMPLATE_KINDS):
        for obj in state.objects(kind):
            owner = controller_of(obj, kind) if kind in _INTERMEDIATE_KINDS else None
            if owner is not None and owner[0].kind in _PARENT_KINDS[kind]:
                continue  # part of a Deployment / Rollout / CronJob
            namespace, name = object_key(obj, kind)
            candidates[(namespace, kind, name)] = obj
    for key in groups:
        candidates.setdefault(key, None)

    workloads: list[Workload] = []
    for key, top in candidates.items():
        group = groups.get(key)
        chain = group.chain if group else (OwnerRef(key[1], key[2]),)
        try:
            workloads.append(_build_one(context, key, top, chain, group.pods if group else []))
        except (MalformedObjectError, ValueError) as error:
            errors.append(f"{workload_id(cluster, *key)}: {error}")
            if unbuildable is not None:
                unbuildable.add(workload_id(cluster, *key))
    return sorted(workloads, key=lambda w: w.id)


def _build_one(
    context: _Context,
    key: tuple[str, str, str],
    obj: Mapping[str, Any] | None,
    chain: tuple[OwnerRef, ...],
    pods: Sequence[Mapping[str, Any]],
) -> Workload:
    namespace, kind, name = key
    state = context.state
    template_meta: Mapping[str, Any]
    if obj is not None:
        template_meta, pod_spec, replicas = _template(state, kind, obj)
        annotations = _string_map(
            _metadata(obj, kind).get("annotations"),
            f"{_describe(obj, kind)}: $.metadata.annotations",
        )
        where = f"{_describe(obj, kind)}: $.spec.template.spec"
    else:
        pod = pods[0]
        template_meta = _metadata(pod, "Pod")
        pod_spec = _mapping(pod.get("spec"), f"{_describe(pod, 'Pod')}: $.spec")
        replicas = len(pods)
        annotations = _string_map(
            template_meta.get("annotations"), f"{_describe(pod, 'Pod')}: $.metadata.annotations"
        )
        where = f"{_describe(pod, 'Pod')}: $.spec"
    containers = container_specs(pod_spec, where)
    template_annotations = _string_map(
        template_meta.get("annotations"), f"{where}: template annotations"
    )

    profile: str = context.default_profile
    profile_source: ProfileSource = "default"
    for candidate, origin in (
        (annotations.get(PROFILE_ANNOTATION), "workload"),
        (template_annotations.get(PROFILE_ANNOTATION), "pod-template"),
        (context.namespace_defaults.get(namespace), "namespace"),
    ):
        if candidate is None:
            continue
        if _valid_profile(candidate):
            profile, profile_source = candidate, origin  # type: ignore[assignment]  # origin is one of the literals above
            break
        log.warning(
            "%s/%s/%s: profile %r is not a profile name; ignored", namespace, kind, name, candidate
        )

    jvm = tuple(
        options
        for index, container in enumerate(_pod_containers(pod_spec, where))
        if (options := jvm_options(container, f"{where}.containers[{index}]")) is not None
    )
    pools: set[str] = set()
    capacity: set[str] = set()
    for pod in pods:
        node_name = _mapping(pod.get("spec"), "pod spec").get("nodeName")
        node = context.nodes.get(node_name) if isinstance(node_name, str) else None
        if node is not None and node.pool:
            pools.add(node.pool)
        if node is not None and node.capacity_type:
            capacity.add(node.capacity_type)
    selector = _string_map(pod_spec.get("nodeSelector"), f"{where}.nodeSelector")
    pools.update(selector[label] for label in NODE_POOL_LABELS if label in selector)
    candidates = [n for n in context.nodes.values() if not pools or n.pool in pools]
    node_fit = _pareto(
        (n.allocatable_cpu_cores, n.allocatable_memory_bytes)
        for n in candidates
        if n.allocatable_cpu_cores is not None and n.allocatable_memory_bytes is not None
    )
    facts = InventoryFacts(
        owner_chain=tuple((link.kind, link.name) for link in chain[1:] or chain),
        profile_source=profile_source,
        hpa=context.hpas.get(key),
        jvm=jvm,
        node_pools=tuple(sorted(pools)),
        capacity_types=tuple(sorted(capacity)),
        node_fit=node_fit,
        pods=len(pods),
    )
    kept = dict(sorted(annotations.items())[: MAX_SPEC_ANNOTATIONS - 1])
    kept[FACTS_ANNOTATION] = facts.to_json()
    ident = workload_id(context.cluster, namespace, kind, name)
    spec = WorkloadSpec(
        source=context.source,
        workload=ident,
        timestamp=context.timestamp,
        profile=profile,
        replicas=replicas,
        containers=containers,
        annotations=kept,
    )
    return Workload(ident, spec, facts)


def pod_index(state: ClusterState, *, cluster: str) -> dict[tuple[str, str], PodWorkload]:
    """``(namespace, pod name) → PodWorkload`` for every pod whose chain resolves.

    Container limits come from the pod's own spec (what the kubelet enforces).
    Pods that cannot be resolved or are malformed are left out (the kubelet source
    counts them as unmapped).
    """
    index: dict[tuple[str, str], PodWorkload] = {}
    for pod in state.objects("Pod"):
        try:
            chain = resolve_owner_chain(state, pod)
            if chain is None:
                continue
            namespace, name = object_key(pod, "Pod")
            specs = container_specs(_mapping(pod.get("spec"), "$.spec"))
        except MalformedObjectError as error:
            log.debug("pod left out of the index: %s", error)
            continue
        uid = _metadata(pod, "Pod").get("uid")
        index[(namespace, name)] = PodWorkload(
            workload=workload_id(cluster, namespace, chain[-1].kind, chain[-1].name),
            uid=uid if isinstance(uid, str) else None,
            containers={spec.name: spec for spec in specs},
        )
    return index


# --------------------------------------------------------------------------- shell


@dataclass(frozen=True)
class InventoryConfig:
    """How the inventory runs: cluster name, scope, profile default, backoff."""

    cluster: str
    #: restrict the pod watch to one node (the per-node agent's kubelet source); such an
    #: inventory serves the pod index only and publishes no specs (see ``messages``)
    node_name: str | None = None
    default_profile: str = DEFAULT_PROFILE_NAME
    #: kinds to watch; default all of :data:`KINDS` (Rollout is skipped when absent)
    kinds: tuple[str, ...] = tuple(KINDS)
    backoff_initial_seconds: float = 1.0
    backoff_max_seconds: float = 60.0
    #: server-side watch timeout; lightkube reconnects with the last resourceVersion
    watch_timeout_seconds: int = 300

    def __post_init__(self) -> None:
        if not self.cluster or "/" in self.cluster or any(c.isspace() for c in self.cluster):
            raise ValueError(
                f"cluster name {self.cluster!r} must be non-empty without '/' or spaces"
            )
        unknown = set(self.kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown kinds {sorted(unknown)}; known: {sorted(KINDS)}")


@dataclass(frozen=True)
class InventoryMetrics:
    """The inventory's own counters, on a registry passed in."""

    relists: Counter
    watch_errors: Counter
    malformed_objects: Counter
    unresolved_pods: Gauge
    specs_published: Counter
    tombstones: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> InventoryMetrics:
        """Register the metrics (on a private registry by default)."""
        registry = registry if registry is not None else CollectorRegistry()
        return cls(
            relists=Counter(
                "daytwo_inventory_relists_total",
                "Full lists of a kind (start, 410 Gone, reconnect after an error).",
                ["kind"],
                registry=registry,
            ),
            watch_errors=Counter(
                "daytwo_inventory_watch_errors_total",
                "List or watch requests that failed (retried with backoff).",
                ["kind"],
                registry=registry,
            ),
            malformed_objects=Counter(
                "daytwo_inventory_malformed_objects_total",
                "API objects skipped because a field daytwo needs was missing or invalid.",
                ["kind"],
                registry=registry,
            ),
            unresolved_pods=Gauge(
                "daytwo_inventory_unresolved_pods",
                "Pods whose owner chain cannot be resolved yet (owner not listed).",
                registry=registry,
            ),
            specs_published=Counter(
                "daytwo_inventory_specs_published_total",
                "Workload specs published because they changed.",
                registry=registry,
            ),
            tombstones=Counter(
                "daytwo_inventory_tombstones_total",
                "Tombstones (null values) published for workloads that disappeared.",
                registry=registry,
            ),
        )


class _GoneError(Exception):
    """The watch's resourceVersion is too old (410): relist."""


@functools.cache
def _resource(kind: str) -> Any:
    """A lightkube generic resource class: objects stay the API's JSON (what tests record)."""
    info = KINDS[kind]
    factory = create_namespaced_resource if info.namespaced else create_global_resource
    return factory(info.group, info.version, kind, info.plural)


class KubernetesInventory:
    """Lists and watches the cluster with lightkube; publishes changed workload specs.

    ``client`` is a ``lightkube.AsyncClient`` (tests pass one with an ``httpx2``
    mock transport serving recorded responses). :meth:`run` keeps one task per kind:
    list → watch from the list's ``resourceVersion`` → apply events; a ``410 Gone``
    (resourceVersion compacted away) relists at once; any other failure waits
    ``backoff`` (doubling up to the max, with jitter from ``rng``) and relists. An
    optional kind (Rollout) answered with 404 (CRD not installed) or 403 (not in the
    ClusterRole) is disabled with one warning.
    """

    def __init__(
        self,
        client: Any,
        config: InventoryConfig,
        *,
        metrics: InventoryMetrics | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.client = client
        self.config = config
        self.state = ClusterState()
        self.metrics = metrics if metrics is not None else InventoryMetrics.create()
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()  # noqa: S311  # jitter, not crypto
        self._listed: set[str] = set()
        self._disabled: set[str] = set()
        self._published: dict[str, bytes] = {}
        self._index_cache: tuple[int, dict[tuple[str, str], PodWorkload]] | None = None

    @property
    def ready(self) -> bool:
        """True once every enabled kind was listed (before that specs would be partial)."""
        return all(kind in self._listed or kind in self._disabled for kind in self.config.kinds)

    async def run(self, stop_event: asyncio.Event) -> None:
        """Watch every configured kind until ``stop_event`` is set."""
        tasks = [
            asyncio.create_task(self.watch_kind(kind, stop_event), name=f"inventory-{kind}")
            for kind in self.config.kinds
        ]
        try:
            await stop_event.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def list_kind(self, kind: str) -> str:
        """List ``kind`` into the state; returns the list's resourceVersion."""
        fields = (
            {"spec.nodeName": self.config.node_name}
            if (kind == "Pod" and self.config.node_name)
            else None
        )
        listing = self.client.list(
            _resource(kind), namespace="*" if KINDS[kind].namespaced else None, fields=fields
        )
        items = [item.to_dict() async for item in listing]
        errors = self.state.replace(kind, items)
        for error_text in errors:
            self.metrics.malformed_objects.labels(kind=kind).inc()
            log.warning("skipped: %s", error_text)
        self.metrics.relists.labels(kind=kind).inc()
        self._listed.add(kind)
        return str(listing.resourceVersion)

    async def watch_kind(self, kind: str, stop_event: asyncio.Event) -> None:
        """List, then watch ``kind`` forever (until ``stop_event``), relisting on 410."""

        delay = self.config.backoff_initial_seconds
        while not stop_event.is_set():
            try:
                version = await self.list_kind(kind)
                delay = self.config.backoff_initial_seconds
                await self._watch_from(kind, version)
            except _GoneError:
                log.info("%s watch expired (410 Gone): relisting", kind)
                continue
            except ApiError as error:
                code = error.status.code
                if KINDS[kind].optional and code in {403, 404}:
                    self._disabled.add(kind)
                    log.warning(
                        "%s not watched: the API answered %s (%s). Install the CRD and grant "
                        "list/watch on %s.%s to include them.",
                        kind,
                        code,
                        error.status.message,
                        KINDS[kind].plural,
                        KINDS[kind].group,
                    )
                    return
                if code == 410:
                    continue
                self._note_error(kind, f"{code} {error.status.message}", code == 403)
            except (httpx2.HTTPError, OSError) as error:
                self._note_error(kind, str(error) or type(error).__name__, False)
            jitter = 0.5 + self._rng.random()  # 0.5x .. 1.5x
            await self._sleep(min(delay, self.config.backoff_max_seconds) * jitter)
            delay = min(delay * 2, self.config.backoff_max_seconds)

    def _note_error(self, kind: str, text: str, forbidden: bool) -> None:
        self.metrics.watch_errors.labels(kind=kind).inc()
        hint = (
            f" — grant list and watch on {KINDS[kind].plural} (API group "
            f"'{KINDS[kind].group}') to the agent's ServiceAccount"
            if forbidden
            else ""
        )
        log.warning("listing/watching %s failed: %s%s; retrying", kind, text, hint)

    async def _watch_from(self, kind: str, version: str) -> None:

        fields = (
            {"spec.nodeName": self.config.node_name}
            if (kind == "Pod" and self.config.node_name)
            else None
        )
        stream = self.client.watch(
            _resource(kind),
            namespace="*" if KINDS[kind].namespaced else None,
            fields=fields,
            resource_version=version,
            server_timeout=self.config.watch_timeout_seconds,
        )
        try:
            async for event_type, obj in stream:
                try:
                    self.state.apply(event_type, kind, obj.to_dict())
                except MalformedObjectError as error:
                    self.metrics.malformed_objects.labels(kind=kind).inc()
                    log.warning("skipped watch event: %s", error)
        except ApiError as error:
            if error.status.code == 410:
                raise _GoneError from None
            raise
        except httpx2.HTTPStatusError as error:  # an HTTP 410 on the watch request itself
            if error.response.status_code == 410:
                raise _GoneError from None
            raise

    # -- what the rest of the agent reads

    def pod_workloads(self) -> Mapping[tuple[str, str], PodWorkload]:
        """The pod → workload index for the kubelet source (cached per state generation)."""
        cached = self._index_cache
        if cached is None or cached[0] != self.state.generation:
            cached = (self.state.generation, pod_index(self.state, cluster=self.config.cluster))
            self._index_cache = cached
        return cached[1]

    def workloads(self, now: float, unbuildable: set[str] | None = None) -> list[Workload]:
        """Every workload at ``now`` (errors are logged and counted, not raised).

        ``unbuildable`` collects the ids of workloads that exist but could not be built
        (see :func:`build_workloads`).
        """
        errors: list[str] = []
        workloads = build_workloads(
            self.state,
            cluster=self.config.cluster,
            timestamp=now,
            default_profile=self.config.default_profile,
            errors=errors,
            unbuildable=unbuildable,
        )
        for error in errors:
            self.metrics.malformed_objects.labels(kind="workload").inc()
            log.warning("workload spec skipped: %s", error)
        _, unresolved = _group_pods(self.state)
        self.metrics.unresolved_pods.set(unresolved)
        return workloads

    def messages(self, now: float) -> list[OutgoingMessage]:
        """Specs that changed since last published, tombstones for workloads now gone.

        Nothing until :attr:`ready`. The topic is compacted, so unchanged specs are not
        republished; a restarted agent republishes everything once (harmless: same
        values). A workload this process published that is no longer in the state gets
        one tombstone (its key, value ``None``: how a compacted topic says "deleted"),
        logged and counted in ``daytwo_inventory_tombstones_total``; if it comes back it
        is published again like a new one. A workload that still exists but cannot be
        built (malformed) keeps its last spec: it is neither republished nor tombstoned.
        Ids published by an earlier process are unknown to this one, so a workload
        deleted while no inventory ran keeps its last spec in the topic (no tombstone
        for an id this process never published). A node-scoped
        inventory (``node_name`` set) publishes nothing: it sees only its node's pods, so
        its pod-derived facts (pools, pod count) would differ from node to node and the
        compacted value would flap; it serves :meth:`pod_workloads` only. Run one
        cluster-wide inventory to publish specs.
        """
        if not self.ready or self.config.node_name is not None:
            return []
        outgoing: list[OutgoingMessage] = []
        unbuildable: set[str] = set()
        present: set[str] = set()
        for workload in self.workloads(now, unbuildable):
            present.add(workload.id)
            key = workload.content_key()
            if self._published.get(workload.id) == key:
                continue
            self._published[workload.id] = key
            outgoing.append(
                OutgoingMessage(WORKLOAD_SPECS_TOPIC, workload.id.encode(), encode(workload.spec))
            )
        self.metrics.specs_published.inc(len(outgoing))
        gone = sorted(set(self._published) - present - unbuildable)
        for gone_id in gone:
            del self._published[gone_id]
            log.info("workload %s is gone: publishing a tombstone", gone_id)
            outgoing.append(_tombstone(WORKLOAD_SPECS_TOPIC, gone_id.encode()))
        self.metrics.tombstones.inc(len(gone))
        return outgoing


def _tombstone(topic: str, key: bytes) -> OutgoingMessage:
    """A record with ``key`` and a null value: "deleted" on a compacted topic (the
    publishers and the spool carry ``None`` through)."""
    return OutgoingMessage(topic, key, None)
