"""``daytwo demo``: the whole pipeline on one machine, every stage real.

Starts the embedded broker, creates a GitOps repository with example manifests,
starts a workload with known needs in a real cgroup (or, where cgroups are not
writable, replays the bundled trace), runs agent, worker and sink as separate
processes, and prints the recommendation and the branch it produced with its diff.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import orjson
from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table

from agents.cgroup_admin import (
    V1Cgroup,
    create_v1_cgroup,
    remove_v1_cgroup,
    spawn_in_cgroup,
    v1_cgroups_writable,
)
from agents.publisher import KafkaPublisher
from agents.replay import read_trace, trace_batches
from pipeline.broker import EmbeddedBroker
from pipeline.core.quantity import MIB, format_cpu, format_memory
from pipeline.launch import Child, start_child, wait_for_records
from pipeline.topics import ensure_topics, topic_names
from schemas.models import Recommendation, RecommendationSet
from schemas.validate import decode

WORKLOAD = "local/demo/Deployment/burner"
CONTAINER = "burner"
BRANCH = "daytwo/demo/burner"
BURN_CORES = 0.25
HOLD_MIB = 160
CPU_LIMIT_CORES = 1.0
MEMORY_LIMIT_BYTES = 512 * MIB
SCRAPE_SECONDS = 2.0
MIN_SAMPLES = 30
PARTITIONS = 4


@dataclass
class _Workload:
    """The demo workload: the burner process in its cgroup."""

    group: V1Cgroup
    process: subprocess.Popen[bytes]
    started: float

    def burned_cores(self) -> float:
        """Average cores used since start, from the cgroup's own cpuacct counter."""
        usage_ns = int((self.group.paths.cpuacct / "cpuacct.usage").read_text())
        return usage_ns / 1e9 / (time.monotonic() - self.started)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _git(repo: Path, *args: str) -> str:
    env = dict(
        os.environ,
        GIT_AUTHOR_NAME="daytwo demo",
        GIT_AUTHOR_EMAIL="demo@localhost",
        GIT_COMMITTER_NAME="daytwo demo",
        GIT_COMMITTER_EMAIL="demo@localhost",
    )
    done = subprocess.run(
        ["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout


def create_gitops_repo(target: Path) -> Path:
    """Copy the example manifests into a new git repository on branch ``main``."""
    source = resources.files("pipeline.demo").joinpath("gitops")
    with resources.as_file(source) as path:
        shutil.copytree(path, target)
    _git(target, "init", "--quiet", "--initial-branch=main")
    _git(target, "add", "-A")
    _git(target, "commit", "--quiet", "-m", "Example manifests")
    return target


def _start_workload(workdir: Path) -> _Workload:
    group = create_v1_cgroup(
        f"daytwo-demo-{os.getpid()}/burner",
        cpu_limit_cores=CPU_LIMIT_CORES,
        memory_limit_bytes=MEMORY_LIMIT_BYTES,
    )
    process = spawn_in_cgroup(
        group,
        [
            sys.executable,
            "-m",
            "pipeline.demo.burner",
            "--cores",
            str(BURN_CORES),
            "--mib",
            str(HOLD_MIB),
        ],
        stdout=subprocess.PIPE,
    )
    started = time.monotonic()
    assert process.stdout is not None
    if process.stdout.readline().strip() != b"ready":
        remove_v1_cgroup(group)
        msg = f"the demo workload did not start (exit {process.poll()})"
        raise RuntimeError(msg)
    (workdir / "mapping.yaml").write_text(
        "cluster: local\n"
        "cgroups:\n"
        f"  - path: /{group.relative_path.strip('/')}\n"
        f"    workload: {WORKLOAD}\n"
        f"    container: {CONTAINER}\n",
        encoding="utf-8",
    )
    return _Workload(group, process, started)


def _replay_trace(bootstrap: str) -> int:
    trace = resources.files("pipeline.demo").joinpath("trace.csv")
    with resources.as_file(trace) as path:
        frame = read_trace(path)

    async def publish() -> int:
        sent = 0
        async with KafkaPublisher(bootstrap, idempotent=False) as publisher:
            for workload, batch in trace_batches(frame):
                await publisher.send(
                    topic_names().container_samples, workload.encode(), orjson.dumps(batch)
                )
                sent += 1
            await publisher.flush()
        return sent

    return asyncio.run(publish())


def run_demo(workdir: Path, *, timeout: float = 170.0, force_replay: bool = False) -> int:
    """Run the demo; returns the process exit code (0 when a branch was produced)."""
    console = Console()
    deadline = time.monotonic() + timeout
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    logs = workdir / "logs"
    logs.mkdir()
    children: list[Child] = []
    workload: _Workload | None = None
    broker = EmbeddedBroker(log_path=logs / "broker.log")
    try:
        with console.status("starting the embedded Kafka broker"):
            broker.start()
            asyncio.run(ensure_topics(broker.bootstrap, partitions_override=PARTITIONS))
        console.print(f"[green]broker[/] Tansu (in-memory) at {broker.bootstrap}")
        repo = create_gitops_repo(workdir / "gitops")
        console.print(f"[green]gitops[/] example manifests in {repo}")
        env = {
            "DAYTWO_KAFKA_BOOTSTRAP": broker.bootstrap,
            "DAYTWO_BROKER_IS_EMBEDDED": "1",
            "DAYTWO_PARTITIONS": str(PARTITIONS),
            "DAYTWO_LOG_LEVEL": "WARNING",
        }
        worker_port = _free_port()
        children.append(
            start_child(
                "worker",
                ["worker"],
                env
                | {
                    "DAYTWO_MIN_SAMPLES": str(MIN_SAMPLES),
                    "DAYTWO_FLUSH_INTERVAL_SECONDS": "2",
                    "DAYTWO_SESSION_TIMEOUT_SECONDS": "3",
                    "DAYTWO_DATA_DIR": str(workdir / "worker-data"),
                    "DAYTWO_METRICS_PORT": str(worker_port),
                },
                logs,
            )
        )
        console.print(
            f"[green]worker[/] Faust worker, metrics at http://127.0.0.1:{worker_port}/metrics"
        )
        children.append(
            start_child(
                "sink",
                ["sink"],
                env | {"DAYTWO_GITOPS_REPO": str(repo), "DAYTWO_METRICS_PORT": "0"},
                logs,
            )
        )
        console.print("[green]sink[/] dry-run PR sink on the GitOps repository")
        reason = "--replay was given" if force_replay else v1_cgroups_writable()
        if reason is None:
            workload = _start_workload(workdir)
            console.print(
                f"[green]workload[/] burner in cgroup /{workload.group.relative_path.strip('/')}"
                f" (limit {format_cpu(CPU_LIMIT_CORES)} CPU, {format_memory(MEMORY_LIMIT_BYTES)});"
                f" burns {BURN_CORES} cores, holds {HOLD_MIB} MiB"
            )
            children.append(
                start_child(
                    "agent",
                    ["agent", "--mapping", str(workdir / "mapping.yaml")],
                    env
                    | {
                        "DAYTWO_SCRAPE_INTERVAL_SECONDS": str(SCRAPE_SECONDS),
                        "DAYTWO_METRICS_PORT": "0",
                    },
                    logs,
                )
            )
            console.print(
                f"[green]agent[/] scraping every {SCRAPE_SECONDS:g} s; a recommendation needs "
                f"{MIN_SAMPLES} samples (about {MIN_SAMPLES * SCRAPE_SECONDS:.0f} s)"
            )
        else:
            console.print(
                f"[yellow]cgroups are not writable here ({reason});[/] "
                "replaying the bundled trace instead"
            )
            sent = _replay_trace(broker.bootstrap)
            console.print(f"[green]replay[/] published {sent} batches from the bundled trace")
        rec_set = _wait_for_recommendation(broker.bootstrap, children, deadline, console)
        if rec_set is None:
            return _report_failure(console, children, "no recommendation before the timeout")
        commit = _wait_for_branch(repo, rec_set.hash, children, deadline)
        if commit is None:
            return _report_failure(console, children, "the sink made no branch before the timeout")
        _print_result(console, rec_set, workload, repo)
        return 0
    finally:
        for child in reversed(children):
            child.stop()
        if workload is not None:
            workload.process.kill()
            workload.process.wait()
            remove_v1_cgroup(workload.group)
        broker.stop()


def _alive(children: list[Child]) -> str | None:
    for child in children:
        if child.process.poll() is not None:
            return f"{child.name} exited with {child.process.returncode}"
    return None


def _wait_for_recommendation(
    bootstrap: str, children: list[Child], deadline: float, console: Console
) -> RecommendationSet | None:
    def has_ours(records: list[tuple[bytes | None, bytes | None]]) -> bool:
        return any(key == WORKLOAD.encode() for key, _ in records)

    with console.status("waiting for the first recommendation"):
        records = wait_for_records(
            bootstrap,
            topic_names().recommendations,
            has_ours,
            timeout=max(1.0, deadline - time.monotonic()),
            alive=lambda: _alive(children),
        )
    for key, value in records:
        if key == WORKLOAD.encode() and value is not None:
            return decode(RecommendationSet, value)
    return None


def _wait_for_branch(
    repo: Path, set_hash: str, children: list[Child], deadline: float
) -> str | None:
    """Wait until the sink committed this recommendation set on the branch."""
    while time.monotonic() < deadline and _alive(children) is None:
        try:
            note = _git(repo, "show", f"{BRANCH}:.daytwo/PR.md")
        except subprocess.CalledProcessError:
            note = ""
        if set_hash in note:
            return _git(repo, "rev-parse", BRANCH).strip()
        time.sleep(0.5)
    return None


def _fmt_cpu(value: float | None) -> str:
    return "-" if value is None else format_cpu(value)


def _fmt_mem(value: int | None) -> str:
    return "-" if value is None else format_memory(value)


def _print_result(
    console: Console, rec_set: RecommendationSet, workload: _Workload | None, repo: Path
) -> None:
    table = Table(title=f"Recommendations for {rec_set.workload}")
    for column in ("container", "resource", "current", "recommended"):
        table.add_column(column)
    for rec in rec_set.recommendations:
        _add_rows(table, rec)
    console.print(table)
    for rec in rec_set.recommendations:
        ev = rec.evidence
        console.print(
            f"[bold]{rec.container}[/] profile {rec.profile}, confidence {rec.confidence:.2f}, "
            f"risk {rec.risk}, monthly cost delta ${rec.monthly_cost_delta_usd:+.2f}; "
            f"evidence: {ev.samples} samples over {ev.coverage_seconds:.0f} s"
        )
        for rule in rec.rules:
            console.print(f"  • [cyan]{rule.id}[/]: {rule.text}")
    if workload is not None:
        burned = workload.burned_cores()
        rec = next(r for r in rec_set.recommendations if r.container == CONTAINER)
        request = rec.recommended.cpu_request_cores or 0.0
        expected = burned * 1.15
        console.print(
            f"\nThe burner really used {burned:.3f} cores (its cgroup's cpuacct.usage over "
            f"its lifetime); x 1.15 = {expected:.3f}. Recommended CPU request: "
            f"{format_cpu(request)} ({(request / expected - 1) * 100:+.1f}%)."
        )
    console.print(f"\n[bold]Branch[/] {BRANCH} in {repo}:")
    diff = _git(repo, "diff", f"main..{BRANCH}", "--", "apps")
    console.print(Syntax(diff, "diff", theme="ansi_dark", background_color="default"))
    console.print(f"PR title and body: git -C {repo} show {BRANCH}:.daytwo/PR.md")


def _add_rows(table: Table, rec: Recommendation) -> None:
    cur, new = rec.current, rec.recommended
    table.add_row(
        rec.container,
        "cpu request",
        _fmt_cpu(cur.cpu_request_cores),
        _fmt_cpu(new.cpu_request_cores),
    )
    table.add_row("", "cpu limit", _fmt_cpu(cur.cpu_limit_cores), _fmt_cpu(new.cpu_limit_cores))
    table.add_row(
        "", "memory request", _fmt_mem(cur.memory_request_bytes), _fmt_mem(new.memory_request_bytes)
    )
    table.add_row(
        "", "memory limit", _fmt_mem(cur.memory_limit_bytes), _fmt_mem(new.memory_limit_bytes)
    )


def _report_failure(console: Console, children: list[Child], what: str) -> int:
    console.print(f"[red]demo failed:[/] {what}")
    for child in children:
        tail = child.log_tail(15)
        if tail:
            console.print(f"[bold]{child.name} log ({child.log_path}):[/]\n{tail}")
    return 1
