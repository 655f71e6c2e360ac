"""The recorded Kubernetes API answers under ``tests/fixtures/k8s``, loaded one way.

Why shared: the inventory and kubelet tests read the same recorded cluster (list
answers per kind, kubelet summaries); one loader keeps them on the same files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agents.inventory import ClusterState

K8S_FIXTURES = Path(__file__).parent / "fixtures" / "k8s"
#: The recorded list answer (file stem) of every kind the inventory watches.
LIST_FILES = {
    "Namespace": "namespaces",
    "Node": "nodes",
    "Pod": "pods",
    "ReplicaSet": "replicasets",
    "Deployment": "deployments",
    "StatefulSet": "statefulsets",
    "DaemonSet": "daemonsets",
    "Job": "jobs",
    "CronJob": "cronjobs",
    "HorizontalPodAutoscaler": "hpas",
    "Rollout": "rollouts",
}


def recorded(name: str) -> dict[str, Any]:
    """The recorded JSON document ``tests/fixtures/k8s/<name>.json``."""
    document: dict[str, Any] = json.loads((K8S_FIXTURES / f"{name}.json").read_text())
    return document


def items(kind: str) -> list[dict[str, Any]]:
    """The objects of ``kind`` in the recorded list answer."""
    result: list[dict[str, Any]] = recorded(LIST_FILES[kind])["items"]
    return result


def loaded_state() -> ClusterState:
    """A :class:`ClusterState` holding every recorded kind (none of them malformed)."""
    state = ClusterState()
    for kind in LIST_FILES:
        assert state.replace(kind, items(kind)) == []
    return state
