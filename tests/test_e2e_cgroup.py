"""Acceptance, end to end with real peers only: a real process in a real cgroup →
``daytwo agent`` → Kafka (the session's embedded broker) → ``daytwo worker`` →
recommendations topic → ``daytwo sink`` → a commit on a branch of a real git repo.

The process burns a known share of a core (a duty-cycle loop measured in thread CPU
time, well below its 1-core quota, so never throttled) and holds ~100 MiB. The CPU it
really burned is read from its cgroup's ``cpuacct.usage`` at the end, and the request
on the branch must be that x (1 + the balanced profile's headroom) within ±25% (the
histogram's p95 of per-second rates sits a little above the mean; bucket width is 5%;
the request is never above the highest usage seen, which caps the headroom).
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from agents.cgroup_admin import V1Cgroup
from pipeline.core.profiles import get_profile
from pipeline.core.quantity import format_cpu, parse_cpu, parse_memory, round_up_memory
from pipeline.launch import start_child, wait_for_records
from pipeline.topics import topic_names
from tests.cgroup_helpers import MIB, process_in_v1_cgroup, requires_v1_cgroups
from tests.worker_helpers import (
    PARTITIONS,
    died,
    recommendation_sets,
    running,
    worker_env,
)

pytestmark = [pytest.mark.integration, pytest.mark.cgroup, requires_v1_cgroups]

CPU_SHARE = 0.3
HELD_MIB = 100
CPU_LIMIT_CORES = 1.0
MEMORY_LIMIT_BYTES = 512 * MIB
WORKLOAD = "local/shop/Deployment/burner"
CONTAINER = "burner"
BRANCH = "daytwo/shop/burner"
MANIFEST_PATH = "apps/shop/burner.yaml"
DECOY_PATH = "apps/staging/burner.yaml"
PR_NOTE = ".daytwo/PR.md"
MIN_SAMPLES = 15

#: Touches HELD_MIB MiB, says "ready", then burns CPU_SHARE of a core in 20 ms periods:
#: a burst of exactly share x 20 ms of *thread CPU time*, then sleep to the next period.
BURNER = f"""
import time
block = b'\\x01' * ({HELD_MIB} * 1024 * 1024)
print('ready', flush=True)
period = 0.02
burst = period * {CPU_SHARE}
next_start = time.monotonic()
while True:
    burst_from = time.thread_time()
    while time.thread_time() - burst_from < burst:
        pass
    next_start += period
    delay = next_start - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    elif delay < -1.0:  # starved for a second: do not make up for it in one long burst
        next_start = time.monotonic()
"""

MANIFEST = """\
# Shop: the burner service. Comments and layout must survive a daytwo patch.
apiVersion: v1
kind: Service
metadata:
  name: burner
  namespace: shop
spec:
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: burner
  namespace: shop
  labels: {app: burner}
spec:
  replicas: 2  # two zones
  template:
    metadata:
      labels: {app: burner}
    spec:
      containers:
        - name: burner
          image: "registry.example/burner:1.0"   # pinned on purpose
          resources:
            requests:
              cpu: "2"        # a guess from day one
              memory: 1Gi
            limits:
              cpu: "1"
              memory: 1Gi
        - name: sidecar
          image: envoy:1.30
          resources:
            requests: {cpu: 100m, memory: 64Mi}
"""

DECOY = MANIFEST.replace("namespace: shop", "namespace: staging")


def git(repo: Path, *args: str) -> str:
    completed = subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True, timeout=30
    )
    return completed.stdout


def make_gitops_repo(path: Path) -> str:
    """A real repository with the shop manifest and a decoy; returns the base commit."""
    path.mkdir()
    git(path, "init", "--quiet", "--initial-branch=main")
    git(path, "config", "user.name", "Test")
    git(path, "config", "user.email", "test@example.invalid")
    for relative, text in ((MANIFEST_PATH, MANIFEST), (DECOY_PATH, DECOY)):
        target = path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    git(path, "add", ".")
    git(path, "commit", "--quiet", "-m", "initial manifests")
    return git(path, "rev-parse", "HEAD").strip()


def branch_head(repo: Path, branch: str) -> str | None:
    completed = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    return completed.stdout.strip() if completed.returncode == 0 else None


def wait_for_branch(
    repo: Path, branch: str, timeout: float, alive: Callable[[], str | None]
) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reason = alive()
        if reason is not None:
            pytest.fail(reason)
        head = branch_head(repo, branch)
        if head is not None:
            return head
        time.sleep(0.25)
    pytest.fail(f"branch {branch} did not appear within {timeout} s")


def resources_block(text: str, container: str) -> range:
    """1-based line numbers of ``container``'s ``resources:`` block (key line included)."""
    lines = text.splitlines()
    start_container = next(
        i for i, line in enumerate(lines) if re.fullmatch(rf"\s*- name: {container}\s*", line)
    )
    key = next(
        i
        for i in range(start_container + 1, len(lines))
        if re.fullmatch(r"\s*resources:\s*(#.*)?", lines[i])
    )
    indent = len(lines[key]) - len(lines[key].lstrip())
    end = key + 1
    while end < len(lines):
        line = lines[end]
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        end += 1
    return range(key + 1, end + 1)


def changed_lines(diff: str) -> tuple[set[int], set[int]]:
    """(old line numbers removed, new line numbers added) of a ``git diff -U0``."""
    removed: set[int] = set()
    added: set[int] = set()
    for match in re.finditer(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@", diff, re.MULTILINE):
        old_start, old_count = int(match[1]), int(match[2] or "1")
        new_start, new_count = int(match[3]), int(match[4] or "1")
        removed.update(range(old_start, old_start + old_count))
        added.update(range(new_start, new_start + new_count))
    return removed, added


def cpu_seconds(group: V1Cgroup) -> float:
    return int((group.paths.cpuacct / "cpuacct.usage").read_text()) / 1e9


def burner_container(document: Any) -> dict[str, Any]:
    containers = document["spec"]["template"]["spec"]["containers"]
    (found,) = [c for c in containers if c["name"] == CONTAINER]
    assert isinstance(found, dict)
    return found


def test_a_real_process_in_a_real_cgroup_becomes_a_commit_on_a_branch(
    kafka_bootstrap: str, make_topic_prefix: Callable[..., str], tmp_path: Path
) -> None:
    prefix = make_topic_prefix(partitions_override=PARTITIONS)
    names = topic_names(prefix)
    repo = tmp_path / "gitops"
    base = make_gitops_repo(repo)
    logs = tmp_path / "logs"
    started = time.monotonic()

    with process_in_v1_cgroup(
        BURNER, cpu_limit_cores=CPU_LIMIT_CORES, memory_limit_bytes=MEMORY_LIMIT_BYTES
    ) as burner:
        spawned = time.monotonic()
        burner.wait_for_line("ready")
        mapping = tmp_path / "mapping.yaml"
        mapping.write_text(
            "cluster: local\n"
            "cgroups:\n"
            f"  - path: {burner.group.relative_path}\n"
            f"    workload: {WORKLOAD}\n"
            f"    container: {CONTAINER}\n",
            encoding="utf-8",
        )
        env = worker_env(
            kafka_bootstrap,
            prefix,
            f"e2e-{prefix.rstrip('.')}",
            tmp_path / "data",
            DAYTWO_MIN_SAMPLES=str(MIN_SAMPLES),
            DAYTWO_FLUSH_INTERVAL_SECONDS="1",
            DAYTWO_SCRAPE_INTERVAL_SECONDS="1",
            DAYTWO_MAPPING_FILE=str(mapping),
            DAYTWO_NODE_NAME="e2e-node",
            DAYTWO_GITOPS_REPO=str(repo),
        )
        with (
            running(start_child("worker", ["worker"], env, logs)) as worker,
            running(start_child("sink", ["sink"], env, logs)) as sink,
            running(start_child("agent", ["agent"], env, logs)) as agent,
        ):
            head = wait_for_branch(repo, BRANCH, 90, alive=lambda: died(worker, sink, agent))
            burned = cpu_seconds(burner.group) / (time.monotonic() - spawned)
            max_usage = int((burner.group.paths.memory / "memory.max_usage_in_bytes").read_text())
    print(f"\nbranch after {time.monotonic() - started:.1f} s; burned {burned:.3f} cores")

    # The branch: one commit on top of the base, touching the manifest and the note only.
    assert git(repo, "rev-list", f"{base}..{head}").split() == [head]
    assert set(git(repo, "diff", "--name-only", base, head).split()) == {MANIFEST_PATH, PR_NOTE}
    assert git(repo, "status", "--porcelain") == ""  # the user's checkout is untouched
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD").strip() == "main"

    # The patched YAML parses, and holds the numbers the process really needed.
    patched = git(repo, "show", f"{head}:{MANIFEST_PATH}")
    service, deployment = YAML(typ="safe", pure=True).load_all(patched)
    assert service["kind"] == "Service"
    container = burner_container(deployment)
    requests, limits = container["resources"]["requests"], container["resources"]["limits"]
    cpu_request = parse_cpu(str(requests["cpu"]))
    factor = 1 + get_profile("balanced").cpu_headroom
    expected_cpu = burned * factor
    assert abs(cpu_request - expected_cpu) <= 0.25 * expected_cpu, (
        f"CPU request {requests['cpu']} vs {burned:.3f} cores burned x {factor:.2f}"
    )
    memory_request = parse_memory(str(requests["memory"]))
    assert parse_memory(str(limits["memory"])) == memory_request
    assert memory_request >= HELD_MIB * MIB
    assert memory_request <= round_up_memory(max_usage * 1.15)
    assert parse_cpu(str(limits["cpu"])) == CPU_LIMIT_CORES  # policy keep: the 1-core limit
    sidecar = deployment["spec"]["template"]["spec"]["containers"][1]
    assert sidecar["resources"] == {"requests": {"cpu": "100m", "memory": "64Mi"}}

    # It is what the worker recommended (the set whose hash the note carries).
    note = git(repo, "show", f"{head}:{PR_NOTE}")
    marker = re.search(r"<!-- daytwo:hash=([0-9a-f]{64}) -->", note)
    assert marker is not None
    sets = recommendation_sets(
        wait_for_records(
            kafka_bootstrap,
            names.recommendations,
            until=lambda got: any(s.hash == marker[1] for s in recommendation_sets(got)),
            timeout=10,
        )
    )
    (proposed,) = {s.hash: s for s in sets if s.hash == marker[1]}.values()
    (recommendation,) = proposed.recommendations
    assert recommendation.evidence.samples >= MIN_SAMPLES
    assert recommendation.recommended.cpu_request_cores is not None
    assert str(requests["cpu"]) == format_cpu(recommendation.recommended.cpu_request_cores)

    # Only lines inside the burner container's resources block changed.
    diff = git(repo, "diff", "-U0", base, head, "--", MANIFEST_PATH)
    removed, added = changed_lines(diff)
    assert removed or added
    assert removed <= set(resources_block(MANIFEST, CONTAINER)), diff
    assert added <= set(resources_block(patched, CONTAINER)), diff
    for kept in ("# Shop: the burner service.", "replicas: 2  # two zones", "# pinned on purpose"):
        assert kept in patched

    # The PR text: a heading, the change table, and the marker.
    assert note.startswith("# daytwo: right-size shop/burner")
    assert "| resource | current | recommended | change |" in note
    assert re.search(r"^\| CPU request \|.*\|", note, re.MULTILINE)
    assert re.search(r"^\| Memory limit \|.*\|", note, re.MULTILINE)
