"""The sink end to end on a real git repository, the PR text, and the dead-letter path."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import (  # type: ignore[import-untyped, unused-ignore]
    AIOKafkaConsumer,
    AIOKafkaProducer,
    TopicPartition,
)
from prometheus_client import CollectorRegistry

from pipeline.errors import ConfigError, SinkError
from pipeline.metrics import SinkMetrics
from pipeline.prsink.body import counterfactual_lines, extract_hash, hash_marker, render_pr
from pipeline.prsink.git import CommitAuthor, GitRepo
from pipeline.prsink.sink import (
    PR_NOTE_PATH,
    SinkResult,
    apply_recommendation_set,
    handle_record,
    run_sink,
)
from pipeline.runners import run_sink_process
from pipeline.settings import Settings
from pipeline.topics import topic_names
from schemas.models import DeadLetter, RecommendationSet
from schemas.validate import decode, validate_dict
from tests.test_prsink_patch import assert_confined

MI = 1024**2
GI = 1024**3
WORKLOAD = "prod/shop/Deployment/checkout"
MANIFEST_PATH = "apps/shop/checkout.yaml"

MANIFEST = """\
# Checkout: the money path. Change with care.
apiVersion: v1
kind: Service
metadata:
  name: checkout
  namespace: shop
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: checkout
  namespace: shop
spec:
  replicas: 3  # three zones
  template:
    spec:
      containers:
        - name: app
          image: "registry.example/checkout:1.2.3"
          resources:
            requests:
              cpu: 500m   # from the load test
              memory: 1Gi
            limits:
              memory: 1Gi
        - name: envoy
          image: envoy:1.30   # sidecar
          ports: [{containerPort: 9901}]
"""


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def recommendation(
    container: str, *, current: dict[str, Any], recommended: dict[str, Any], cost: float = -6.17
) -> dict[str, Any]:
    resources = (
        "cpu_request_cores",
        "cpu_limit_cores",
        "memory_request_bytes",
        "memory_limit_bytes",
        "jvm_max_heap_bytes",
    )
    return {
        "schema_version": 1,
        "kind": "recommendation",
        "workload": WORKLOAD,
        "container": container,
        "profile": "balanced",
        "generated_at": 1_750_000_000.0,
        "current": {key: current.get(key) for key in resources},
        "recommended": {key: recommended.get(key) for key in resources},
        "rules": [
            {"id": "cpu-p95-headroom", "text": "CPU request = p95 (300m) x 1.16 headroom."},
            {"id": "memory-peak", "text": "Memory = 7-day peak (401Mi) + 25%, rounded up."},
        ],
        "evidence": {
            "samples": 20160,
            "coverage_seconds": 7 * 86400.0,
            "first_timestamp": 1_749_395_200.0,
            "last_timestamp": 1_750_000_000.0,
            "cpu_p50_cores": 0.12,
            "cpu_p95_cores": 0.3,
            "cpu_max_cores": 0.9,
            "memory_peak_bytes": 401 * MI - 4096,  # shown rounded up to MiB
            "cpu_throttled_ratio_max": 0.125,
            "oom_kills": 0,
        },
        "monthly_cost_delta_usd": cost,
        "confidence": 0.82,
        "risk": "low",
        "hash": sha(f"{container}{sorted(recommended.items())}"),
    }


def recommendation_set(*recommendations: dict[str, Any]) -> dict[str, Any]:
    data = {
        "schema_version": 1,
        "kind": "recommendation-set",
        "workload": WORKLOAD,
        "generated_at": 1_750_000_000.0,
        "recommendations": list(recommendations),
        "hash": sha("".join(sorted(r["hash"] for r in recommendations))),
    }
    validate_dict(RecommendationSet, data)  # the fixture itself honours the contract
    return data


def checkout_set(cpu: float = 0.348, memory: int = 512 * MI) -> dict[str, Any]:
    app = recommendation(
        "app",
        current={"cpu_request_cores": 0.5, "memory_request_bytes": GI, "memory_limit_bytes": GI},
        recommended={"cpu_request_cores": cpu, "memory_request_bytes": memory},
    )
    envoy = recommendation(
        "envoy",
        current={},
        recommended={"cpu_request_cores": 0.05, "memory_request_bytes": 64 * MI},
    )
    return recommendation_set(app, envoy)


def git(root: Path, *arguments: str) -> str:
    completed = subprocess.run(
        ["git", *arguments], cwd=root, capture_output=True, text=True, check=True
    )
    return completed.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> GitRepo:
    root = tmp_path / "gitops"
    (root / "apps" / "shop").mkdir(parents=True)
    git(root, "init", "--quiet", "-b", "main")
    git(root, "config", "user.name", "Someone")
    git(root, "config", "user.email", "someone@example.com")
    (root / MANIFEST_PATH).write_text(MANIFEST, encoding="utf-8")
    (root / "apps" / "shop" / "cart.yaml").write_text(
        MANIFEST.replace("checkout", "cart"), encoding="utf-8"
    )
    git(root, "add", ".")
    git(root, "commit", "--quiet", "-m", "initial")
    return GitRepo(root)


# -- PR text ----------------------------------------------------------------------------


def test_title_names_the_workload_and_the_pod_wide_request_change() -> None:
    app_only = recommendation_set(checkout_set()["recommendations"][0])
    title, _ = render_pr(app_only)
    assert title == "daytwo: right-size shop/checkout (cpu 500m→348m, memory 1Gi→512Mi)"
    unchanged = recommendation(
        "app",
        current={"cpu_request_cores": 0.5},
        recommended={"cpu_request_cores": 0.5, "memory_request_bytes": None},
    )
    assert render_pr(recommendation_set(unchanged))[0] == "daytwo: right-size shop/checkout"
    # Pod-wide: the sidecar had no requests (0) and gets 50m / 64Mi.
    assert render_pr(checkout_set())[0] == (
        "daytwo: right-size shop/checkout (cpu 500m→398m, memory 1Gi→576Mi)"
    )


def test_body_shows_changes_reasons_evidence_money_and_the_marker() -> None:
    rec_set = checkout_set()
    _, body = render_pr(rec_set)
    assert "| CPU request | 500m | **348m** | ↓ -30.4% |" in body
    assert "| Memory request | 1Gi | **512Mi** | ↓ -50.0% |" in body
    assert "| Memory limit | 1Gi | (unchanged) | — |" in body
    assert "| CPU request | unset | **50m** | new |" in body
    assert "- `cpu-p95-headroom`: CPU request = p95 (300m) x 1.16 headroom." in body
    assert (
        "- data coverage: 20,160 samples covering 7d (2025-06-08 15:06 UTC → 2025-06-15 15:06 UTC)"
    ) in body
    assert "- CPU usage: p50 120m, p95 300m, peak 900m" in body
    assert "- memory working-set peak: 401Mi" in body
    assert "- CPU throttling: worst interval 12.5% of periods" in body
    assert "- OOM kills: 0" in body
    assert "confidence **82%**, risk **low**, monthly cost **-$6.17**" in body
    assert "**Estimated monthly cost change: -$12.34** (all replicas)" in body
    assert body.rstrip().endswith(hash_marker(rec_set["hash"]))
    assert extract_hash(body) == rec_set["hash"]


def test_marker_refuses_a_hash_that_could_break_out_of_the_comment() -> None:
    with pytest.raises(SinkError, match="sha256"):
        hash_marker("abc --> <script>")
    assert extract_hash("no marker here") is None


# -- apply_recommendation_set -----------------------------------------------------------


def test_apply_commits_the_patch_and_the_pr_note_on_the_workload_branch(repo: GitRepo) -> None:
    root = repo.path
    status_before = git(root, "status", "--porcelain")
    rec_set = checkout_set()

    result = apply_recommendation_set(repo, rec_set, author=CommitAuthor("bot", "bot@x.invalid"))

    branch = "daytwo/shop/checkout"
    assert result == SinkResult(
        WORKLOAD,
        branch,
        git(root, "rev-parse", branch),
        True,
        (MANIFEST_PATH, PR_NOTE_PATH),
        f"committed on {branch}",
        "committed",
    )
    assert git(root, "status", "--porcelain") == status_before
    assert git(root, "diff", "--name-only", f"main..{branch}").split("\n") == [
        PR_NOTE_PATH,
        MANIFEST_PATH,
    ]
    diff = git(root, "diff", "-U0", f"main..{branch}", "--", MANIFEST_PATH)
    changed = [
        line
        for line in diff.splitlines()
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert changed
    resource_line = re.compile(r"^[+-] +(resources:|requests:|limits:|cpu: |memory: )")
    assert all(resource_line.match(line) for line in changed), changed
    patched = repo.read_file_at(branch, MANIFEST_PATH)
    assert patched is not None
    assert_confined(MANIFEST, patched, 1, "Deployment", "app", "envoy")
    with pytest.raises(AssertionError):  # the check can fail: envoy's block is new
        assert_confined(MANIFEST, patched, 1, "Deployment", "app")
    note = repo.read_file_at(branch, PR_NOTE_PATH)
    assert note is not None
    assert note.startswith("# daytwo: right-size shop/checkout (cpu 500m→398m, ")
    assert extract_hash(note) == rec_set["hash"]


def test_the_same_set_again_makes_no_commit_and_a_new_one_extends_the_branch(
    repo: GitRepo,
) -> None:
    first = apply_recommendation_set(repo, checkout_set())
    assert first.commit is not None

    again = apply_recommendation_set(repo, checkout_set())
    assert (again.commit, again.changed, again.files) == (None, False, ())
    assert git(repo.path, "rev-parse", first.branch) == first.commit

    changed = apply_recommendation_set(repo, checkout_set(cpu=0.4))
    assert changed.changed
    assert changed.commit is not None
    assert git(repo.path, "rev-parse", f"{changed.commit}^") == first.commit
    patched = repo.read_file_at(first.branch, MANIFEST_PATH)
    assert patched is not None
    assert "cpu: 400m   # from the load test" in patched


def test_a_set_the_base_already_says_makes_no_branch(repo: GitRepo) -> None:
    in_force = recommendation(
        "app",
        current={"cpu_request_cores": 0.5, "memory_request_bytes": GI},
        recommended={"cpu_request_cores": 0.5, "memory_request_bytes": GI},
    )
    result = apply_recommendation_set(repo, recommendation_set(in_force))
    assert (result.commit, result.changed) == (None, False)
    assert not repo.branch_exists("daytwo/shop/checkout")


def test_the_base_branch_is_read_not_the_working_tree(repo: GitRepo) -> None:
    (repo.path / MANIFEST_PATH).unlink()  # a messy checkout must not matter
    assert apply_recommendation_set(repo, checkout_set(), base_branch="main").changed


def test_unknown_workload_and_container_are_sink_errors(repo: GitRepo) -> None:
    rec_set = checkout_set()
    rec_set["workload"] = "prod/shop/Deployment/payments"
    for recommendation_ in rec_set["recommendations"]:
        recommendation_["workload"] = rec_set["workload"]
    with pytest.raises(SinkError, match="no Deployment named 'payments'"):
        apply_recommendation_set(repo, rec_set)
    rec_set = checkout_set()
    rec_set["recommendations"][1]["container"] = "istio-proxy"
    with pytest.raises(SinkError, match="no container named 'istio-proxy'"):
        apply_recommendation_set(repo, rec_set)
    assert not repo.branch_exists("daytwo/shop/checkout")


# -- handle_record: the per-record step of run_sink -------------------------------------


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_records_are_applied_or_dead_lettered_and_counted(repo: GitRepo) -> None:
    registry = CollectorRegistry()
    metrics = SinkMetrics(registry)
    letters: list[tuple[bytes | None, bytes]] = []
    results: list[SinkResult] = []

    async def publish(key: bytes | None, value: bytes) -> None:
        letters.append((key, value))

    async def handle(value: bytes | None, offset: int) -> SinkResult | None:
        return await handle_record(
            repo,
            topic="daytwo.recommendations.v1",
            partition=3,
            offset=offset,
            key=WORKLOAD.encode(),
            value=value,
            metrics=metrics,
            publish_deadletter=publish,
            clock=lambda: 1_750_000_100.0,
            on_result=results.append,
        )

    good = orjson.dumps(checkout_set())
    unknown = checkout_set()
    unknown["workload"] = "prod/shop/Deployment/payments"
    for member in unknown["recommendations"]:
        member["workload"] = unknown["workload"]

    async def scenario() -> None:
        assert await handle(good, 0) is not None
        assert await handle(good, 1) is not None
        assert await handle(b"{not json", 2) is None
        assert await handle(orjson.dumps(unknown), 3) is None
        assert await handle(None, 4) is None  # tombstone: skipped, not dead-lettered

    asyncio.run(scenario())

    assert [result.changed for result in results] == [True, False]
    assert sample(registry, "daytwo_sink_commits_total") == 1
    assert sample(registry, "daytwo_sink_recommendations_total", outcome="committed") == 1
    assert sample(registry, "daytwo_sink_recommendations_total", outcome="unchanged") == 1
    assert sample(registry, "daytwo_sink_deadletters_total", stage="decode") == 1
    assert sample(registry, "daytwo_sink_deadletters_total", stage="apply") == 1
    decoded = [decode(DeadLetter, value) for _, value in letters]
    assert [(letter.offset, letter.stage) for letter in decoded] == [(2, "decode"), (3, "apply")]
    assert base64.b64decode(decoded[0].value_b64) == b"{not json"
    assert "payments" in decoded[1].reason
    assert all(key == WORKLOAD.encode() for key, _ in letters)
    assert all(letter.partition == 3 and letter.failed_at == 1_750_000_100.0 for letter in decoded)


# -- run_sink against the session's Kafka (embedded broker unless configured) -----------


@pytest.mark.integration
def test_run_sink_applies_dead_letters_and_commits_offsets(
    repo: GitRepo, kafka_bootstrap: str, topic_prefix: str
) -> None:
    topics = topic_names(topic_prefix)
    registry = CollectorRegistry()
    results: list[SinkResult] = []
    group = f"{topic_prefix}sink"

    async def produce(records: list[tuple[bytes, bytes]]) -> set[int]:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            return {
                (await producer.send_and_wait(topics.recommendations, value, key=key)).partition
                for key, value in records
            }
        finally:
            await producer.stop()

    async def run_until(done: Callable[[], bool], seconds: float) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(
            run_sink(
                kafka_bootstrap,
                repo.path,
                group_id=group,
                topic=topics.recommendations,
                deadletter_topic=topics.deadletter,
                stop_event=stop,
                registry=registry,
                on_result=results.append,
                poll_timeout_ms=200,
                idempotent=False,  # the embedded broker cannot start idempotent producers
            )
        )
        deadline = asyncio.get_running_loop().time() + seconds
        # Polling: the dead-letter count is a metric, nothing to wait on as an event.
        while not done() and asyncio.get_running_loop().time() < deadline and not task.done():  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.wait_for(task, 15)

    def dead_letters() -> float:
        return sample(registry, "daytwo_sink_deadletters_total", stage="decode")

    key = WORKLOAD.encode()
    [partition] = asyncio.run(produce([(key, orjson.dumps(checkout_set())), (key, b"\x00garbage")]))
    asyncio.run(run_until(lambda: bool(results) and dead_letters() == 1, 30))

    assert [result.changed for result in results] == [True]
    assert repo.branch_exists("daytwo/shop/checkout")
    assert sample(registry, "daytwo_sink_commits_total") == 1

    async def read_dead_letter() -> bytes:
        consumer = AIOKafkaConsumer(
            topics.deadletter, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            return bytes((await asyncio.wait_for(consumer.getone(), 15)).value)
        finally:
            await consumer.stop()

    letter = decode(DeadLetter, asyncio.run(read_dead_letter()))
    assert base64.b64decode(letter.value_b64) == b"\x00garbage"
    assert letter.topic == topics.recommendations

    async def committed() -> int | None:
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group)
        await consumer.start()
        try:
            offset: int | None = await consumer.committed(
                TopicPartition(topics.recommendations, partition)
            )
            return offset
        finally:
            await consumer.stop()

    # The group's offset was committed past both records (one key: one partition).
    assert asyncio.run(committed()) == 2


def test_the_pr_shows_what_the_manifest_declares_as_current(repo: GitRepo) -> None:
    # The agent observed cgroup limits (2 cores, 3Gi) that the manifest does not say;
    # the reviewer must see the file's 500m / 1Gi, and the observed CPU limit only
    # where the manifest sets none.
    app = recommendation(
        "app",
        current={
            "cpu_request_cores": 2.0,
            "cpu_limit_cores": 2.0,
            "memory_request_bytes": 3 * GI,
            "memory_limit_bytes": 3 * GI,
        },
        recommended={"cpu_request_cores": 0.348, "memory_request_bytes": 512 * MI},
    )
    apply_recommendation_set(repo, recommendation_set(app))

    note = repo.read_file_at("daytwo/shop/checkout", PR_NOTE_PATH)
    assert note is not None
    current = {
        cells[1].strip(): cells[2].strip()
        for cells in (line.split("|") for line in note.splitlines() if line.startswith("| "))
    }
    assert current["CPU request"] == "500m"
    assert current["Memory request"] == "1Gi"
    assert current["Memory limit"] == "1Gi"
    assert current["CPU limit"] == "2"  # unset in the file: the observed value stays


def test_a_jvm_heap_change_lands_in_java_tool_options_with_the_limit(repo: GitRepo) -> None:
    # envoy's manifest has no JAVA_TOOL_OPTIONS: the PR says so instead of silently
    # shipping a smaller limit around the old heap; app gets its options patched.
    manifest = MANIFEST.replace(
        '          image: "registry.example/checkout:1.2.3"\n',
        '          image: "registry.example/checkout:1.2.3"\n'
        "          env:\n"
        "            - name: JAVA_TOOL_OPTIONS\n"
        "              value: -Xmx768m\n",
    )
    (repo.path / MANIFEST_PATH).write_text(manifest, encoding="utf-8")
    git(repo.path, "commit", "--quiet", "-am", "app is a JVM")
    members = []
    for container in ("app", "envoy"):
        rec = recommendation(
            container,
            current={"jvm_max_heap_bytes": 768 * MI},
            recommended={
                "memory_request_bytes": 400 * MI,
                "memory_limit_bytes": 400 * MI,
                "jvm_max_heap_bytes": 200 * MI,
            },
        )
        rec["jvm_options"] = {
            "java_tool_options": "-Xmx200m",
            "changed": ["-Xmx200m"],
            "previous": "-Xmx768m",
        }
        members.append(rec)

    result = apply_recommendation_set(repo, recommendation_set(*members))

    patched = repo.read_file_at(result.branch, MANIFEST_PATH)
    assert patched is not None
    # Quoted or plain is patch.py's choice; the value is what matters here.
    assert re.search(r'^              value: "?-Xmx200m"?$', patched, flags=re.MULTILINE)
    assert "-Xmx768m" not in patched
    note = repo.read_file_at(result.branch, PR_NOTE_PATH)
    assert note is not None
    action = note.split("**Action needed**", 1)[1]
    assert "- container `envoy` declares none of JAVA_TOOL_OPTIONS" in action
    assert "container `app` declares none" not in note
    # Each container says where its values went (the reviewer's map of the diff).
    assert note.count(f"Written to: manifest `{MANIFEST_PATH}` (document 1)") == 2


# -- the counterfactual the engine replayed, and the sink's settings ----------------------


def test_the_engines_replay_is_shown_instead_of_percentile_bounds() -> None:
    rec_set = checkout_set()
    app = rec_set["recommendations"][0]
    bounds = counterfactual_lines(app)
    assert any("Derived from the window's percentiles" in line for line in bounds)
    app["evidence"]["counterfactual"] = {
        "cpu_above_request_share_current": 0.0,
        "cpu_above_request_share_recommended": 0.0125,
        "cpu_at_limit_share_current": None,
        "cpu_at_limit_share_recommended": None,
        "memory_peaks_above_limit_current": 3,
        "memory_peaks_above_limit_recommended": 0,
    }
    validate_dict(RecommendationSet, rec_set)

    replayed = counterfactual_lines(app)

    assert replayed[0] == (
        "- CPU above the request: 0.0% of sample time now → 1.2% (about 252 of 20,160 samples) "
        "with the new values"
    )
    assert "- memory peaks above the limit (each an OOM kill): 3 now → 0 with the new values" in (
        replayed
    )
    assert not any("percentiles" in line for line in replayed)


def test_the_sink_needs_a_repository_or_a_remote() -> None:
    settings = Settings(kafka_bootstrap="127.0.0.1:9")
    with pytest.raises(ConfigError, match="DAYTWO_GITOPS_REMOTE_URL"):
        run_sink_process(settings, CollectorRegistry())


def test_the_helm_values_map_file_is_read_with_clear_errors(tmp_path: Path) -> None:
    from pipeline.prsink.sink import load_values_map  # noqa: PLC0415 - one test's import

    good = tmp_path / "values-map.yaml"
    good.write_text(
        "prod/shop/Deployment/checkout:app: envs/prod/values.yaml#app.resources\n",
        encoding="utf-8",
    )
    (ref,) = load_values_map(good).values()
    assert ref.file == "envs/prod/values.yaml"
    assert load_values_map(None) == {}
    bad = tmp_path / "bad.yaml"
    bad.write_text("prod/shop/Deployment/checkout: values.yaml\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.yaml: entry 'prod/shop/Deployment/checkout'"):
        load_values_map(bad)
