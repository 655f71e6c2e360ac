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
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import FrameType

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
from pipeline.core.quantity import MIB, format_cpu, format_memory, round_up_memory
from pipeline.demo.jvm import allocator_argv, compile_allocator
from pipeline.errors import DaytwoError
from pipeline.launch import Child, start_child, wait_for_records
from pipeline.prsink.body import extract_hash
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
JVM_WORKLOAD = "local/demo/Deployment/jvm-app"
JVM_CONTAINER = "app"
JVM_BRANCH = "daytwo/demo/jvm-app"
JVM_OPTIONS = "-Xmx768m -XX:+UseG1GC -XX:G1PeriodicGCInterval=1000"
JVM_LIVE_MIB = 30
JVM_ALLOC_MIB_PER_S = 2
JVM_MEMORY_LIMIT_BYTES = 1024 * MIB
SCRAPE_SECONDS = 2.0
MIN_SAMPLES = 30
PARTITIONS = 4


@dataclass
class _Workload:
    """The demo workload: the burner process in its cgroup."""

    group: V1Cgroup
    process: subprocess.Popen[bytes]
    started: float

    def stop(self) -> None:
        """Kill the process and remove its cgroup."""
        self.process.kill()
        self.process.wait()
        remove_v1_cgroup(self.group)

    def burned_cores(self) -> float:
        """Average cores used since start, from the cgroup's own cpuacct counter."""
        usage_ns = int((self.group.paths.cpuacct / "cpuacct.usage").read_text())
        return usage_ns / 1e9 / (time.monotonic() - self.started)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


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


def _start_jvm_workload(workdir: Path) -> _Workload:
    """The Java service: a real JVM with a GC log, in its own cgroup."""
    classpath = compile_allocator(workdir / "jvm-classes")
    group = create_v1_cgroup(
        f"daytwo-demo-{os.getpid()}/jvm-app",
        cpu_limit_cores=None,  # as in its manifest: a CPU request, no CPU limit
        memory_limit_bytes=JVM_MEMORY_LIMIT_BYTES,
    )
    argv = allocator_argv(
        classpath,
        java_options=JVM_OPTIONS.split(),
        gc_log=workdir / "jvm-app-gc.log",
        live_mib=JVM_LIVE_MIB,
        alloc_mib_per_s=JVM_ALLOC_MIB_PER_S,
        seconds=0,
    )
    process = spawn_in_cgroup(group, argv, stdout=subprocess.PIPE)
    assert process.stdout is not None
    if process.stdout.readline().strip() != b"ready":
        process.kill()
        process.wait()
        remove_v1_cgroup(group)
        msg = f"the demo JVM did not start (exit {process.poll()})"
        raise RuntimeError(msg)
    return _Workload(group, process, time.monotonic())


def _write_mapping(workdir: Path, burner: _Workload, jvm: _Workload | None) -> None:
    entries = [(burner, WORKLOAD, CONTAINER)]
    if jvm is not None:
        entries.append((jvm, JVM_WORKLOAD, JVM_CONTAINER))
    lines = ["cluster: local", "cgroups:"]
    for workload, workload_id, container in entries:
        lines += [
            f"  - path: /{workload.group.relative_path.strip('/')}",
            f"    workload: {workload_id}",
            f"    container: {container}",
        ]
    if jvm is not None:
        lines += [
            "jvms:",
            f"  - workload: {JVM_WORKLOAD}",
            f"    container: {JVM_CONTAINER}",
            f"    gc_log: {workdir / 'jvm-app-gc.log'}",
            f'    java_options: "{JVM_OPTIONS}"',
        ]
    (workdir / "mapping.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")


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
        process.kill()
        process.wait()
        remove_v1_cgroup(group)
        msg = f"the demo workload did not start (exit {process.poll()})"
        raise RuntimeError(msg)
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


def _start_live_workloads(
    workdir: Path,
    *,
    console: Console,
    env: dict[str, str],
    logs: Path,
    children: list[Child],
    started: list[_Workload],
    wanted: dict[str, str],
) -> None:
    """Start the burner and (where Java is installed) the JVM in real cgroups, then the agent."""
    burner = _start_workload(workdir)
    started.append(burner)
    console.print(
        f"[green]workload[/] burner in cgroup /{burner.group.relative_path.strip('/')}"
        f" (limit {format_cpu(CPU_LIMIT_CORES)} CPU, {format_memory(MEMORY_LIMIT_BYTES)});"
        f" burns {BURN_CORES} cores, holds {HOLD_MIB} MiB"
    )
    jvm: _Workload | None = None
    try:
        jvm = _start_jvm_workload(workdir)
    except (DaytwoError, RuntimeError) as exc:
        console.print(f"[yellow]no JVM workload:[/] {exc}")
    if jvm is not None:
        started.append(jvm)
        wanted[JVM_WORKLOAD] = JVM_BRANCH
        console.print(
            f"[green]workload[/] jvm-app: a real JVM ({JVM_OPTIONS}) in cgroup "
            f"/{jvm.group.relative_path.strip('/')} (limit "
            f"{format_memory(JVM_MEMORY_LIMIT_BYTES)}), live set {JVM_LIVE_MIB} MiB, "
            f"GC log tailed by the agent"
        )
    _write_mapping(workdir, burner, jvm)
    children.append(
        start_child(
            "agent",
            ["agent", "--mapping", str(workdir / "mapping.yaml")],
            env
            | {
                "DAYTWO_SCRAPE_INTERVAL_SECONDS": str(SCRAPE_SECONDS),
                "DAYTWO_METRICS_PORT": "0",
                "DAYTWO_SPOOL_DIR": str(workdir / "agent-spool"),
            },
            logs,
        )
    )
    console.print(
        f"[green]agent[/] scraping every {SCRAPE_SECONDS:g} s; a recommendation needs "
        f"{MIN_SAMPLES} samples (about {MIN_SAMPLES * SCRAPE_SECONDS:.0f} s)"
    )


DEMO_PROFILE_OVERRIDES = (
    '{"evaluation_interval_seconds": 1, "decrease_min_history_seconds": 0, '
    '"proposal_cooldown_seconds": 0}'
)


def run_demo(workdir: Path, *, timeout: float = 170.0, force_replay: bool = False) -> int:
    """Run the demo; returns the process exit code (0 when a branch was produced)."""
    console = Console()
    # SIGTERM (e.g. from `timeout`) must still run the cleanup below: cgroups and
    # child processes outlive us otherwise.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    deadline = time.monotonic() + timeout
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    logs = workdir / "logs"
    logs.mkdir()
    children: list[Child] = []
    started: list[_Workload] = []
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
                    # A demo lasts a minute, not days: evaluate every second of data, allow
                    # decreases at once and propose without a cool-down.
                    "DAYTWO_PROFILE_OVERRIDES": DEMO_PROFILE_OVERRIDES,
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
        wanted = {WORKLOAD: BRANCH}
        if reason is None:
            _start_live_workloads(
                workdir,
                console=console,
                env=env,
                logs=logs,
                children=children,
                started=started,
                wanted=wanted,
            )
        else:
            console.print(
                f"[yellow]cgroups are not writable here ({reason});[/] "
                "replaying the bundled trace instead (no JVM workload in replay)"
            )
            sent = _replay_trace(broker.bootstrap)
            console.print(f"[green]replay[/] published {sent} batches from the bundled trace")
        found = _wait_for_proposals(
            broker.bootstrap, repo, wanted, children=children, deadline=deadline, console=console
        )
        if found is None:
            return _report_failure(
                console, children, "no recommendation on a branch before the timeout"
            )
        _print_result(console, found[WORKLOAD], started[0] if started else None, repo, BRANCH)
        if JVM_WORKLOAD in found:
            _print_jvm_result(console, found[JVM_WORKLOAD], repo)
        return 0
    finally:
        _clean_up(console, children, started, broker)


def _clean_up(
    console: Console, children: list[Child], started: list[_Workload], broker: EmbeddedBroker
) -> None:
    """Stop everything the demo started; one failing step does not skip the others.

    Workloads go in reverse order: a later cgroup may sit in the same parent group.
    """
    steps: list[tuple[str, Callable[[], object]]] = [
        (child.name, child.stop) for child in reversed(children)
    ]
    for workload in reversed(started):
        steps.append((f"pid {workload.process.pid}", workload.stop))
    steps.append(("broker", broker.stop))
    for name, step in steps:
        try:
            step()
        except (OSError, DaytwoError, subprocess.SubprocessError) as exc:
            console.print(f"[yellow]cleanup of {name} failed:[/] {exc}")


def _alive(children: list[Child]) -> str | None:
    for child in children:
        if child.process.poll() is not None:
            return f"{child.name} exited with {child.process.returncode}"
    return None


def _records_until(bootstrap: str, set_hash: str, deadline: float) -> list[bytes]:
    """Recommendation records read until one carrying ``set_hash`` shows up."""

    def seen(records: list[tuple[bytes | None, bytes | None]]) -> bool:
        return any(value is not None and set_hash.encode() in value for _, value in records)

    records = wait_for_records(
        bootstrap,
        topic_names().recommendations,
        seen,
        timeout=max(1.0, min(10.0, deadline - time.monotonic())),
    )
    return [value for _, value in records if value is not None]


def _wait_for_proposals(
    bootstrap: str,
    repo: Path,
    wanted: dict[str, str],
    *,
    children: list[Child],
    deadline: float,
    console: Console,
) -> dict[str, RecommendationSet] | None:
    """Wait until each wanted workload's branch carries a recommendation set.

    The worker refines its proposal as data arrives and the sink follows, so the set
    shown is the one whose hash the branch's PR.md carries when we look. A JVM
    workload waits for a set that already has JVM evidence.
    """
    found: dict[str, RecommendationSet] = {}
    sets: dict[str, RecommendationSet] = {}
    with console.status("waiting for recommendations and their branches"):
        while time.monotonic() < deadline and _alive(children) is None:
            for workload, branch in wanted.items():
                if workload in found:
                    continue
                try:
                    marker = extract_hash(_git(repo, "show", f"{branch}:.daytwo/PR.md"))
                except subprocess.CalledProcessError:
                    marker = None
                if marker is None:
                    continue
                if marker not in sets:
                    for value in _records_until(bootstrap, marker, deadline):
                        candidate = decode(RecommendationSet, value)
                        sets[candidate.hash] = candidate
                shown = sets.get(marker)
                if shown is not None and (
                    workload != JVM_WORKLOAD
                    or any(r.evidence.jvm is not None for r in shown.recommendations)
                ):
                    found[workload] = shown
            if len(found) == len(wanted):
                return found
            time.sleep(0.5)
    return None


def _fmt_cpu(value: float | None) -> str:
    return "-" if value is None else format_cpu(value)


def _fmt_mem(value: int | None) -> str:
    return "-" if value is None else format_memory(round_up_memory(value))


def _print_result(
    console: Console,
    rec_set: RecommendationSet,
    workload: _Workload | None,
    repo: Path,
    branch: str,
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
        console.print(
            f"\nThe burner really used {burned:.3f} cores (its cgroup's cpuacct.usage over "
            f"its lifetime). Recommended CPU request: {format_cpu(request)} "
            f"({(request / burned - 1) * 100:+.1f}% of what it burned: the profile's "
            "percentile and headroom, never above the highest usage seen)."
        )
    _print_branch(console, repo, branch)


def _print_branch(console: Console, repo: Path, branch: str) -> None:
    console.print(f"\n[bold]Branch[/] {branch} in {repo}:")
    diff = _git(repo, "diff", f"main..{branch}", "--", "apps")
    console.print(Syntax(diff, "diff", theme="ansi_dark", background_color="default"))
    console.print(f"PR title and body: git -C {repo} show {branch}:.daytwo/PR.md")


def _print_jvm_result(console: Console, rec_set: RecommendationSet, repo: Path) -> None:
    """The JVM's heap and its container's limit, side by side, with the JVM evidence."""
    rec = rec_set.recommendations[0]
    jvm = rec.evidence.jvm
    table = Table(title=f"\nJVM and container together: {rec_set.workload}")
    for column in ("", "current", "recommended"):
        table.add_column(column)
    table.add_row(
        "JVM max heap",
        _fmt_mem(rec.current.jvm_max_heap_bytes),
        _fmt_mem(rec.recommended.jvm_max_heap_bytes),
    )
    table.add_row(
        "container memory limit",
        _fmt_mem(rec.current.memory_limit_bytes),
        _fmt_mem(rec.recommended.memory_limit_bytes),
    )
    if jvm is not None:
        if jvm.non_heap is not None:
            table.add_row("non-heap estimate", "", _fmt_mem(jvm.non_heap.total_bytes))
        table.add_row("live set (peak)", "", _fmt_mem(jvm.live_set_peak_bytes))
    console.print(table)
    if rec.jvm_options is not None:
        console.print(f"JAVA_TOOL_OPTIONS={rec.jvm_options.java_tool_options}")
    for rule in rec.rules:
        if rule.id.startswith(("jvm-", "oom-")):
            console.print(f"  • [cyan]{rule.id}[/]: {rule.text}")
    _print_branch(console, repo, JVM_BRANCH)


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
