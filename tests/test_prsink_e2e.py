"""The PR sink end to end, for real: the ``daytwo sink`` process, Kafka, git and GitHub;
and the example PR in ``docs/example-pr.md``, kept equal to what the sink renders.

A recommendation set on the recommendations topic (the session's embedded broker)
becomes, through a real ``daytwo sink`` child process configured only by ``DAYTWO_*``
variables, a branch pushed to a real bare git remote holding the Kustomize layout of
``tests/fixtures/gitops/kustomize``, and a pull request on GitHub played by Prism
serving GitHub's published OpenAPI description (``tests/contract/prism.py``).

The sink talks to a small recording proxy in front of Prism, which keeps every
exchange and Prism's request violations; every forge call must be accepted by the
description. At the end a malformed request goes through the same proxy and must be
flagged, so the check is shown able to fail.

Timeline (seconds, roughly): 0 sink starts, clones the remote, reads the state topic;
~2 the set is consumed: fetch, find the PR by head branch, check the open quota, patch
the overlay, push the branch, open the PR, label it (writes 1 s apart, GitHub's rule).
"""

from __future__ import annotations

import difflib
import json
import math
import os
import random
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from pipeline.core.engine import ContainerEngine
from pipeline.core.profiles import get_profile
from pipeline.core.sizing import CurrentResources
from pipeline.core.window import JvmSampleInput, SampleInput
from pipeline.launch import start_child
from pipeline.prsink.sink import propose
from pipeline.topics import topic_names
from schemas.hashing import recommendation_set_hash
from schemas.models import RecommendationSet
from schemas.validate import validate_dict
from tests.contract.prism import (
    PrismRecordingTransport,
    PrismServer,
    github_spec_for_prism,
    start_prism,
)
from tests.test_prsink_body import mermaid_blocks, mermaid_parse
from tests.test_prsink_hygiene import layout_files, make_remote
from tests.test_prsink_sink import MI, recommendation, recommendation_set
from tests.worker_helpers import died, is_embedded, produce, running

LAYOUT = Path(__file__).parent / "fixtures" / "gitops" / "kustomize"
WORKLOAD = "prod/shop-prod/Deployment/checkout"
BRANCH = "daytwo/shop-prod/checkout"
OVERLAY_PATCH = "overlays/prod/resources.yaml"
OWNER, REPO = "octo-org", "gitops"
TOKEN = "ghp_e2eTEST0123456789abcdefghijklmnopqr"
TOKEN_ENV = "E2E_GITHUB_TOKEN"
BOT_EMAIL = "daytwo-bot@example.invalid"


# --------------------------------------------------------------------------- GitHub


@pytest.fixture(scope="module")
def prism(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrismServer]:
    """Prism serving GitHub's description (trimmed to the client's paths)."""
    directory = tmp_path_factory.mktemp("prism-e2e")
    try:
        server = start_prism(github_spec_for_prism(directory), directory / "prism.log")
    except RuntimeError as error:
        pytest.fail(str(error))
    yield server
    server.stop()


class RecordingProxy:
    """An HTTP server on 127.0.0.1 that forwards to Prism and records every exchange.

    Why a proxy: the sink is another process, so the recording transport the contract
    tests plug into the client cannot be used; this puts the same transport (and its
    ``Accept`` rewrite, see :class:`PrismRecordingTransport`) in between instead.
    """

    def __init__(self, upstream: str) -> None:
        self.transport = PrismRecordingTransport()
        lock = threading.Lock()
        transport = self.transport

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = [
                    (name, value)
                    for name, value in self.headers.items()
                    if name.lower() not in ("host", "content-length", "connection")
                ]
                request = httpx.Request(
                    self.command, upstream + self.path, headers=headers, content=body
                )
                with lock:  # one exchange at a time, in the order the sink made them
                    response = transport.handle_request(request)
                content = response.content
                self.send_response(response.status_code)
                for name, value in response.headers.items():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            # http.server dispatches on these names; the forge uses only these methods.
            def do_GET(self) -> None:
                self.forward()

            def do_POST(self) -> None:
                self.forward()

            def do_PATCH(self) -> None:
                self.forward()

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the exchanges are recorded, not printed."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def calls(self) -> list[tuple[str, str]]:
        return [(e.method, e.path) for e in self.transport.exchanges]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)
        self.transport.close()


@pytest.fixture
def github(prism: PrismServer) -> Iterator[RecordingProxy]:
    proxy = RecordingProxy(prism.base_url)
    yield proxy
    proxy.close()


# --------------------------------------------------------------------------- git


def git(root: Path, *arguments: str) -> str:
    completed = subprocess.run(
        ["git", *arguments], cwd=root, capture_output=True, text=True, check=True, timeout=30
    )
    return completed.stdout


def remote_head(remote: Path, branch: str) -> str | None:
    completed = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"],
        cwd=remote,
        capture_output=True,
        text=True,
        check=False,
    )
    return completed.stdout.strip() or None


def resources_lines(text: str, container: str) -> set[int]:
    """1-based line numbers of ``container``'s ``resources:`` block, key line included."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == f"- name: {container}")
    key = next(i for i in range(start + 1, len(lines)) if lines[i].strip() == "resources:")
    indent = len(lines[key]) - len(lines[key].lstrip())
    end = key + 1
    while end < len(lines) and (
        not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent
    ):
        end += 1
    return set(range(key + 1, end + 1))


def changed_lines(diff: str) -> tuple[set[int], set[int]]:
    """(old line numbers removed, new line numbers added) of a ``git diff -U0``."""
    removed: set[int] = set()
    added: set[int] = set()
    for match in re.finditer(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@", diff, re.MULTILINE):
        removed.update(range(int(match[1]), int(match[1]) + int(match[2] or "1")))
        added.update(range(int(match[3]), int(match[3]) + int(match[4] or "1")))
    return removed, added


def wait_until(what: str, done: Callable[[], bool], alive: Callable[[], str | None]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        reason = alive()
        if reason is not None:
            pytest.fail(reason)
        if done():
            return
        time.sleep(0.2)
    pytest.fail(f"{what} did not happen within 60 s")


# --------------------------------------------------------------------------- the test


def overlay_set() -> dict[str, Any]:
    """The app container of the prod overlay: smaller requests, a memory limit kept."""
    app = recommendation(
        "app",
        current={
            "cpu_request_cores": 1.0,
            "memory_request_bytes": 2048 * MI,
            "memory_limit_bytes": 2048 * MI,
        },
        recommended={
            "cpu_request_cores": 0.4,
            "memory_request_bytes": 1280 * MI,
            "memory_limit_bytes": 1536 * MI,
        },
    )
    app["workload"] = WORKLOAD
    rec_set = recommendation_set(app)
    rec_set["workload"] = WORKLOAD
    return rec_set


@pytest.mark.integration
def test_a_recommendation_on_the_topic_becomes_a_pushed_branch_and_a_github_pr(
    kafka_bootstrap: str,
    make_topic_prefix: Callable[..., str],
    github: RecordingProxy,
    tmp_path: Path,
) -> None:
    prefix = make_topic_prefix(partitions_override=2)
    names = topic_names(prefix)
    remote = make_remote(tmp_path, layout_files(LAYOUT))
    base = git(remote, "rev-parse", "main").strip()
    env = {
        "DAYTWO_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "DAYTWO_TOPIC_PREFIX": prefix,
        "DAYTWO_SINK_GROUP_ID": f"{prefix}sink",
        "DAYTWO_DATA_DIR": str(tmp_path / "data"),
        "DAYTWO_METRICS_PORT": "0",
        "DAYTWO_LOG_LEVEL": "INFO",
        "DAYTWO_GITOPS_REMOTE_URL": str(remote),
        "DAYTWO_GIT_AUTHOR_NAME": "daytwo",
        "DAYTWO_GIT_AUTHOR_EMAIL": BOT_EMAIL,
        "DAYTWO_FORGE_KIND": "github",
        "DAYTWO_FORGE_REPOSITORY": f"{OWNER}/{REPO}",
        "DAYTWO_FORGE_API_URL": github.base_url,
        "DAYTWO_FORGE_TOKEN_ENV": TOKEN_ENV,
        TOKEN_ENV: TOKEN,
        "NO_PROXY": "127.0.0.1,localhost",
    }
    if is_embedded(kafka_bootstrap):
        env["DAYTWO_BROKER_IS_EMBEDDED"] = "1"
    rec_set = overlay_set()
    produce(kafka_bootstrap, names.recommendations, [(WORKLOAD.encode(), orjson.dumps(rec_set))])
    labels_call = ("POST", f"/repos/{OWNER}/{REPO}/issues/")

    with running(start_child("sink", ["sink"], env, tmp_path / "logs")) as sink:
        wait_until(
            "the labelled PR",
            lambda: any(
                method == labels_call[0] and path.startswith(labels_call[1])
                for method, path in github.calls()
            ),
            alive=lambda: died(sink),
        )
        log = sink.log_path.read_text(encoding="utf-8")

    # -- the branch: one signed-off commit by the bot on the base, only the overlay's
    # resources lines changed.
    head = remote_head(remote, BRANCH)
    assert head is not None, log
    assert git(remote, "rev-list", f"{base}..{head}").split() == [head]
    message = git(remote, "log", "-1", "--format=%an <%ae>%n%B", head)
    assert message.startswith(f"daytwo <{BOT_EMAIL}>\n")
    assert f"Signed-off-by: daytwo <{BOT_EMAIL}>" in message
    assert git(remote, "diff", "--name-only", base, head).split() == [OVERLAY_PATCH]
    before = git(remote, "show", f"{base}:{OVERLAY_PATCH}")
    after = git(remote, "show", f"{head}:{OVERLAY_PATCH}")
    removed, added = changed_lines(git(remote, "diff", "-U0", base, head, "--", OVERLAY_PATCH))
    assert removed
    assert added
    assert removed <= resources_lines(before, "app")
    assert added <= resources_lines(after, "app")
    assert '              cpu: "400m"          # peak season' in after.splitlines()
    assert "              memory: 1536Mi" in after.splitlines()

    # -- GitHub: every call accepted by the description, in the order a PR bot makes them.
    repo_path = f"/repos/{OWNER}/{REPO}"
    exchanges = github.transport.exchanges
    assert exchanges
    for exchange in exchanges:
        assert exchange.request_violations == (), exchange
        assert 200 <= exchange.status < 300, exchange
        assert exchange.sent_headers["authorization"] == f"Bearer {TOKEN}"
    calls = github.calls()
    assert calls[0] == ("GET", f"{repo_path}/pulls")  # find the PR by its head branch
    assert dict(httpx.QueryParams(exchanges[0].query)) == {
        "head": f"{OWNER}:{BRANCH}",
        "state": "all",
        "sort": "created",
        "direction": "desc",
        "per_page": "100",
    }
    writes = [(m, p) for m, p in calls if m != "GET"]
    [created] = [e for e in exchanges if e.method == "POST" and e.path == f"{repo_path}/pulls"]
    number = writes[1][1].split("/")[-2]
    assert writes == [
        ("POST", f"{repo_path}/pulls"),
        ("POST", f"{repo_path}/issues/{number}/labels"),
    ]
    opened = json.loads(created.body)
    assert (opened["head"], opened["base"]) == (BRANCH, "main")
    assert (
        opened["title"] == "daytwo: right-size shop-prod/checkout (cpu 1→400m, memory 2Gi→1280Mi)"
    )
    assert (
        "Written to: Kustomize strategic-merge patch `overlays/prod/resources.yaml`"
        in opened["body"]
    )
    assert f"<!-- daytwo:hash={rec_set['hash']} -->" in opened["body"]
    labelled = json.loads(exchanges[-1].body)
    assert labelled == {"labels": ["daytwo", "right-sizing"]}
    assert TOKEN not in log  # never logged

    # -- the check can fail: a malformed PR through the same proxy is flagged.
    bad = httpx.post(
        f"{github.base_url}{repo_path}/pulls",
        json={"title": 42, "head": BRANCH},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert bad.status_code >= 400
    assert github.transport.exchanges[-1].request_violations


# --------------------------------------------------------------------------- docs/example-pr.md

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_DOC = ROOT / "docs" / "example-pr.md"
EXAMPLE_SET = Path(__file__).parent / "fixtures" / "prsink" / "example-set.json"
EXAMPLE_PREAMBLE = """\
# Example: a daytwo pull request

What daytwo proposes for `prod/shop-prod/Deployment/checkout`, a JVM service (G1, heap set
by `-Xmx`) with a log-shipper sidecar, deployed with Kustomize (a base and a `prod`
overlay that patches the resources). The recommendation is what daytwo's engine made
from 14 days of per-minute samples with a daily cycle and a release on day 10 that
raised the heap's live set (`tests/fixtures/prsink/example-set.json`); the repository
is `tests/fixtures/gitops/kustomize`.

Below the line: the pull request's title and description exactly as the sink renders
them (GitHub draws the `xychart-beta` charts), then the diff of the branch it pushes.
`tests/test_prsink_e2e.py` fails when this page and the renderer disagree; regenerate it
with `DAYTWO_UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_prsink_e2e.py -k example`.

---

"""


def engine_example_set() -> dict[str, Any]:
    """A recommendation set straight from the engine, over a seeded synthetic fortnight.

    app: CPU follows a daily sine (p95 ~0.5 core against a 1-core request), the JVM's
    live set steps from ~300Mi to ~390Mi on day 10 (a release), heap fixed at -Xmx1536m
    in a 2Gi limit. log-shipper: a few millicores and ~45Mi, no resources declared.
    """
    rng = random.Random(7)
    profile = get_profile("balanced")
    app = ContainerEngine(profile, workload=WORKLOAD, container="app")
    shipper = ContainerEngine(profile, workload=WORKLOAD, container="log-shipper")
    start, step = 1_749_400_000.0, 60.0
    now = start
    for index in range(14 * 1440):
        now = start + index * step
        load = 0.5 + 0.5 * math.sin(2 * math.pi * ((index % 1440) / 1440 - 0.3))
        released = index >= 10 * 1440
        cpu = max(0.02, 0.12 + 0.35 * load + rng.gauss(0, 0.03))
        live = (300 + 90 * released) * MI + rng.gauss(0, 6) * MI
        heap_after_gc = live + 120 * load * MI
        app.apply(
            SampleInput(
                timestamp=now,
                interval_seconds=step,
                cpu_usage_cores=cpu,
                memory_working_set_bytes=int(heap_after_gc + 410 * MI + rng.gauss(0, 8) * MI),
                cpu_throttled_ratio=min(1.0, (cpu - 0.45) * 0.4) if cpu > 0.45 else 0.0,
                oom_kills=0,
                memory_limit_bytes=2048 * MI,
            )
        )
        app.apply_jvm(
            JvmSampleInput(
                timestamp=now,
                interval_seconds=step,
                collector="G1",
                gc_overhead_ratio=max(0.0, 0.004 + 0.012 * load + rng.gauss(0, 0.002)),
                gc_pause_max_seconds=max(0.002, 0.02 + 0.04 * load + rng.gauss(0, 0.01)),
                gc_count=int(3 + 6 * load),
                full_gc_count=0,
                heap_used_after_gc_bytes=int(heap_after_gc),
                heap_committed_bytes=1024 * MI,
                heap_max_bytes=1536 * MI,
                live_set_bytes=int(live),
                metaspace_used_bytes=118 * MI,
                code_cache_bytes=46 * MI,
                thread_count=74,
                direct_memory_bytes=24 * MI,
                max_heap_bytes=1536 * MI,
                heap_sizing="xmx",
                active_processor_count=2,
                thread_stack_size_bytes=MI,
                max_direct_memory_bytes=0,
                jvm_options="-Xmx1536m -XX:+UseG1GC",
            )
        )
        shipper.apply(
            SampleInput(
                timestamp=now,
                interval_seconds=step,
                cpu_usage_cores=max(0.001, 0.004 + 0.01 * load + rng.gauss(0, 0.002)),
                memory_working_set_bytes=int((40 + 6 * load) * MI + rng.gauss(0, 1) * MI),
            )
        )
    members = []
    for engine, current in (
        (
            app,
            CurrentResources(
                cpu_request_cores=1.0,
                cpu_limit_cores=None,
                memory_request_bytes=2048 * MI,
                memory_limit_bytes=2048 * MI,
                jvm_max_heap_bytes=1536 * MI,
            ),
        ),
        (shipper, CurrentResources(None, None, None, None, None)),
    ):
        recommendation_ = engine.evaluate(now, current).recommendation
        assert recommendation_ is not None, engine.container
        members.append(dict(recommendation_))
    return {
        "schema_version": 1,
        "kind": "recommendation-set",
        "workload": WORKLOAD,
        "generated_at": now,
        "recommendations": members,
        "hash": recommendation_set_hash(str(member["hash"]) for member in members),
    }


def example_document(rec_set: dict[str, Any]) -> str:
    """The page: preamble, the PR as the sink renders it, the branch's diff."""
    files = layout_files(LAYOUT)
    proposal = propose(files, rec_set)
    assert proposal is not None
    diff = "".join(
        "".join(
            difflib.unified_diff(
                files.get(path, "").splitlines(keepends=True),
                text.splitlines(keepends=True),
                "/dev/null" if path not in files else f"a/{path}",
                f"b/{path}",
                n=2,
            )
        )
        for path, text in sorted(proposal.files.items())
    )
    return (
        f"{EXAMPLE_PREAMBLE}**Title:** {proposal.title}\n\n**Description:**\n\n{proposal.body}\n\n"
        f"---\n\n## Files changed on `{BRANCH}`\n\n```diff\n{diff}```\n"
    )


def test_docs_example_pr_is_what_the_sink_renders() -> None:
    if os.environ.get("DAYTWO_UPDATE_GOLDEN"):
        EXAMPLE_SET.write_text(json.dumps(engine_example_set(), indent=2) + "\n", encoding="utf-8")
    rec_set = json.loads(EXAMPLE_SET.read_text(encoding="utf-8"))
    validate_dict(RecommendationSet, rec_set)  # a real message of the contract
    document = example_document(rec_set)
    if os.environ.get("DAYTWO_UPDATE_GOLDEN"):
        EXAMPLE_DOC.write_text(document, encoding="utf-8")
    assert EXAMPLE_DOC.read_text(encoding="utf-8") == document
    # What the page is there to show.
    for shown in (
        "| JVM options (`JAVA_TOOL_OPTIONS`) |",
        "- drift: memory rose",
        "- GC overhead (pause time / wall time):",
        "**Cost**",
        "**With the new values over the same window**",
        "```mermaid\nxychart-beta",
        "Written to: Kustomize strategic-merge patch `overlays/prod/resources.yaml`",
        "Written to: new Kustomize strategic-merge patch",
        "+++ b/overlays/prod/daytwo-deployment-checkout.yaml",
    ):
        assert shown in document, shown


def test_the_example_set_is_the_engines_own() -> None:
    """The frozen example is what the engine says for that fortnight (regenerate if not)."""
    assert engine_example_set() == json.loads(EXAMPLE_SET.read_text(encoding="utf-8"))


@pytest.mark.integration
def test_mermaid_parses_every_chart_of_the_example() -> None:
    blocks = mermaid_blocks(EXAMPLE_DOC.read_text(encoding="utf-8"))
    assert len(blocks) == 4  # CPU and memory, for both containers
    sources = [block.removeprefix("```mermaid\n").removesuffix("\n```") for block in blocks]
    assert mermaid_parse(sources) == [{"ok": True, "type": "xychart"}] * len(sources)
