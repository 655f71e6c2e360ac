"""PR hygiene against a real bare git remote and a forge double that keeps state.

``FakeForge`` is an in-memory implementation of our own :class:`Forge` Protocol (PRs,
comments, who closed what), using the real :class:`WriteLimiter` for the quotas; every
call is recorded, so "no forge write" and "no forge call" are checked, not assumed.
The restart test keeps the sink's memory on the session's real Kafka.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import re
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped, unused-ignore]
from prometheus_client import CollectorRegistry

from pipeline.errors import ConfigError
from pipeline.metrics import SinkMetrics
from pipeline.prsink.body import extract_hash
from pipeline.prsink.forge import (
    Forge,
    ForgeAuthError,
    PullRequest,
    PullRequestState,
    PullRequestStatus,
    WriteLimiter,
    WriteLimits,
    body_digest,
)
from pipeline.prsink.git import SET_TRAILER, CommitAuthor, GitRepo
from pipeline.prsink.github import GitHubForge
from pipeline.prsink.locate import HostileYamlError
from pipeline.prsink.sink import (
    PR_LABELS,
    PublishTarget,
    PullRequestPublisher,
    SinkResult,
    apply_recommendation_set,
    build_publisher,
    handle_record,
    material_difference,
    proposed_values,
    retry_deferred,
    run_sink,
)
from pipeline.prsink.state import KafkaStateStore, MemoryStateStore, SinkState
from pipeline.settings import Settings
from pipeline.topics import SINK_STATE_SPEC, ensure_topics, topic_names
from schemas.models import DeadLetter
from schemas.validate import decode
from tests.test_prsink_sink import (
    MANIFEST,
    MANIFEST_PATH,
    WORKLOAD,
    checkout_set,
    recommendation,
    recommendation_set,
)

BOT = CommitAuthor("daytwo", "bot@daytwo.invalid")
BRANCH = "daytwo/shop/checkout"
WRITES = ("create_pull_request", "update_pull_request", "add_labels", "comment")


class FakeForge:
    """A forge that keeps PRs in memory and records every call (a test double of ours)."""

    def __init__(self, limits: WriteLimits | None = None, *, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.limiter = WriteLimiter(
            limits or WriteLimits(min_seconds_between_writes=0.0, open_count_ttl_seconds=0.0),
            clock=clock,
            sleep=lambda seconds: None,
        )
        self.pull_requests: dict[int, PullRequest] = {}
        self.closed_by: dict[int, str] = {}
        self.comments: list[tuple[int, str]] = []
        self.calls: list[str] = []

    # -- the Protocol

    def find_pull_request(self, head_branch: str) -> PullRequest | None:
        self.calls.append("find_pull_request")
        mine = [pr for pr in self.pull_requests.values() if pr.head_branch == head_branch]
        opened = [pr for pr in mine if pr.state == "open"]
        return opened[0] if opened else max(mine, key=lambda pr: pr.number, default=None)

    def create_pull_request(
        self,
        *,
        head_branch: str,
        base_branch: str,
        title: str,
        body: str,
        labels: Sequence[str] = (),
    ) -> PullRequest:
        self.calls.append("create_pull_request")
        with self.limiter.serialised_write():
            self.limiter.check_new_pull_request(self.count_open)
            number = len(self.pull_requests) + 1
            pr = PullRequest(
                number=number,
                url=f"https://forge.invalid/pr/{number}",
                state="open",
                head_branch=head_branch,
                base_branch=base_branch,
                title=title,
                body_sha256=body_digest(body),
                labels=tuple(labels),
                body=body,
            )
            self.pull_requests[number] = pr
            self.limiter.record_new_pull_request()
        return pr

    def update_pull_request(
        self, number: int, *, title: str | None = None, body: str | None = None
    ) -> PullRequest:
        self.calls.append("update_pull_request")
        pr = self.pull_requests[number]
        if body is not None:
            pr = dataclasses.replace(pr, body=body, body_sha256=body_digest(body))
        if title is not None:
            pr = dataclasses.replace(pr, title=title)
        self.pull_requests[number] = pr
        return pr

    def add_labels(self, number: int, labels: Sequence[str]) -> None:
        self.calls.append("add_labels")
        pr = self.pull_requests[number]
        self.pull_requests[number] = dataclasses.replace(
            pr, labels=tuple(dict.fromkeys([*pr.labels, *labels]))
        )

    def comment(self, number: int, body: str) -> None:
        self.calls.append("comment")
        self.comments.append((number, body))

    def pull_request_status(self, number: int) -> PullRequestStatus:
        self.calls.append("pull_request_status")
        pr = self.pull_requests[number]
        closer = self.closed_by.get(number)
        return PullRequestStatus(
            pull_request=pr,
            closed_by=closer,
            closed_by_human=pr.state == "closed" and closer != "daytwo[bot]",
            merged_by=None,
            last_commit=None,
        )

    def check_new_pull_request_quota(self) -> None:
        self.calls.append("check_new_pull_request_quota")
        self.limiter.check_new_pull_request(self.count_open)

    # -- what humans do, and what tests look at

    def count_open(self) -> int:
        return sum(1 for pr in self.pull_requests.values() if pr.state == "open")

    def set_state(self, number: int, state: PullRequestState, by: str = "alice") -> None:
        self.pull_requests[number] = dataclasses.replace(self.pull_requests[number], state=state)
        self.closed_by[number] = by

    def writes(self) -> list[str]:
        return [call for call in self.calls if call in WRITES]


def git(root: Path, *arguments: str) -> str:
    completed = subprocess.run(
        ["git", *arguments], cwd=root, capture_output=True, text=True, check=True
    )
    return completed.stdout.strip()


def init_with_files(root: Path, files: dict[str, str]) -> None:
    """A new repository at ``root`` (branch main) whose one commit holds ``files``."""
    root.mkdir()
    git(root, "init", "--quiet", "-b", "main")
    git(root, "config", "user.name", "Someone")
    git(root, "config", "user.email", "someone@example.com")
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text, encoding="utf-8")
    git(root, "add", ".")
    git(root, "commit", "--quiet", "-m", "initial")


def make_remote(tmp_path: Path, files: dict[str, str]) -> Path:
    seed = tmp_path / "seed"
    init_with_files(seed, files)
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "--bare", "--quiet", "-b", "main", str(remote))
    git(seed, "push", "--quiet", str(remote), "main")
    return remote


class Clock:
    def __init__(self) -> None:
        self.now = 1_750_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclasses.dataclass
class World:
    remote: Path
    forge: FakeForge
    publisher: PullRequestPublisher
    clock: Clock
    tmp_path: Path

    def remote_head(self, branch: str = BRANCH) -> str | None:
        completed = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"],
            cwd=self.remote,
            capture_output=True,
            text=True,
            check=False,
        )
        return completed.stdout.strip() or None

    def publish(
        self, rec_set: dict[str, Any], state: SinkState | None
    ) -> tuple[SinkResult, SinkState | None]:
        publication = self.publisher.publish(rec_set, state)
        return publication.result, publication.state or state


def make_world(
    tmp_path: Path, files: dict[str, str] | None = None, limits: WriteLimits | None = None
) -> World:
    remote = make_remote(tmp_path, files or {MANIFEST_PATH: MANIFEST})
    clock = Clock()
    forge = FakeForge(limits, clock=clock)
    repo = GitRepo.open_clone(str(remote), tmp_path / "sink-clone")
    publisher = PullRequestPublisher(repo, forge, author=BOT, clock=clock)
    return World(remote, forge, publisher, clock, tmp_path)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


def test_the_double_satisfies_the_forge_protocol() -> None:
    forge: Forge = FakeForge(clock=Clock())
    assert isinstance(forge, Forge)


def test_a_first_set_pushes_one_signed_off_commit_and_opens_a_labelled_pr(world: World) -> None:
    rec_set = checkout_set()
    result, state = world.publish(rec_set, None)

    assert result.outcome == "opened"
    head = world.remote_head()
    assert head is not None
    assert result.commit == head
    assert git(world.remote, "rev-parse", f"{head}^") == git(world.remote, "rev-parse", "main")
    log = git(world.remote, "log", "-1", "--format=%an <%ae>|%cn <%ce>%n%B", head)
    assert log.startswith("daytwo <bot@daytwo.invalid>|daytwo <bot@daytwo.invalid>")
    assert f"{SET_TRAILER}: {rec_set['hash']}" in log
    assert "Signed-off-by: daytwo <bot@daytwo.invalid>" in log
    changed = git(world.remote, "diff", "--name-only", "main", head).splitlines()
    assert changed == [MANIFEST_PATH]  # no .daytwo/PR.md on a real branch
    [pr] = world.forge.pull_requests.values()
    assert (pr.head_branch, pr.base_branch, pr.labels) == (BRANCH, "main", PR_LABELS)
    assert extract_hash(pr.body) == rec_set["hash"]
    assert pr.title.startswith("daytwo: right-size shop/checkout")
    assert state is not None
    assert (state.status, state.pr_number, state.set_hash) == ("open", pr.number, rec_set["hash"])
    assert state.proposed == proposed_values(rec_set)


def test_the_same_set_twice_is_no_commit_and_no_forge_call(world: World) -> None:
    rec_set = checkout_set()
    _, state = world.publish(rec_set, None)
    head, calls = world.remote_head(), list(world.forge.calls)

    again = world.publisher.publish(rec_set, state)

    assert again.result.outcome == "unchanged"
    assert again.state is None  # nothing new to write to the state topic either
    assert world.remote_head() == head
    assert world.forge.calls == calls


def test_without_state_the_same_set_still_writes_nothing(world: World) -> None:
    # State lost (or a crash after the push): the branch and PR already say it.
    rec_set = checkout_set()
    world.publish(rec_set, None)
    head, writes = world.remote_head(), world.forge.writes()

    result, _ = world.publish(rec_set, None)

    assert result.outcome == "updated"
    assert result.commit is None
    assert world.remote_head() == head
    assert world.forge.writes() == writes


def test_a_newer_set_force_pushes_the_bots_branch_and_updates_the_open_pr(world: World) -> None:
    first_set, second_set = checkout_set(), checkout_set(cpu=0.25)
    first, state = world.publish(first_set, None)
    second, state = world.publish(second_set, state)

    assert second.outcome == "updated"
    assert second.pull_request == first.pull_request
    head = world.remote_head()
    assert head == second.commit != first.commit
    # Rebuilt on main (force-push), not stacked on the first proposal.
    assert git(world.remote, "rev-parse", f"{head}^") == git(world.remote, "rev-parse", "main")
    assert "cpu: 250m   # from the load test" in git(
        world.remote, "show", f"{head}:{MANIFEST_PATH}"
    )
    [pr] = world.forge.pull_requests.values()
    assert extract_hash(pr.body) == second_set["hash"]
    assert "cpu 500m→300m" in pr.title  # pod-wide: 250m + the sidecar's 50m
    assert world.forge.writes() == ["create_pull_request", "update_pull_request"]
    assert state is not None
    assert state.set_hash == second_set["hash"]


def test_a_branch_a_human_pushed_to_is_never_overwritten_the_pr_gets_one_comment(
    world: World,
) -> None:
    _, state = world.publish(checkout_set(), None)
    alice = world.tmp_path / "alice"
    git(world.tmp_path, "clone", "--quiet", "-b", BRANCH, str(world.remote), str(alice))
    git(alice, "config", "user.name", "Alice")
    git(alice, "config", "user.email", "alice@example.com")
    manifest = alice / MANIFEST_PATH
    manifest.write_text(manifest.read_text() + "# reviewed by alice\n", encoding="utf-8")
    git(alice, "commit", "--quiet", "-am", "keep the sidecar as is")
    git(alice, "push", "--quiet", "origin", BRANCH)
    human_head = git(alice, "rev-parse", "HEAD")
    registry = CollectorRegistry()
    metrics = SinkMetrics(registry)

    newer = checkout_set(cpu=0.25)
    result, state = world.publish(newer, state)
    metrics.count(result)

    assert result.outcome == "human-branch"
    assert world.remote_head() == human_head
    [(number, comment)] = world.forge.comments
    assert number == result.pull_request
    assert human_head[:12] in comment
    assert "leaves the branch alone" in comment
    assert registry.get_sample_value("daytwo_sink_human_branch_refusals_total") == 1
    # The same newer set again: no second comment, no push.
    again, _ = world.publish(newer, state)
    assert again.outcome == "unchanged"
    assert len(world.forge.comments) == 1
    assert world.remote_head() == human_head


def test_a_pr_a_human_closed_is_reopened_only_for_a_material_change(world: World) -> None:
    opened, state = world.publish(checkout_set(cpu=0.348), None)
    assert opened.pull_request == 1
    world.forge.set_state(1, "closed", by="alice")
    head = world.remote_head()
    writes = world.forge.writes()

    # 348m → 360m: +3.4%, under balanced's 10% minimum change: stays closed.
    small = checkout_set(cpu=0.36)
    assert material_difference(state.proposed if state else {}, small) == []
    kept, state = world.publish(small, state)
    assert kept.outcome == "closed-kept"
    assert world.forge.writes() == writes
    assert world.remote_head() == head
    assert state is not None
    assert state.status == "closed"
    assert state.proposed == proposed_values(checkout_set(cpu=0.348))  # the refused values

    # Drifting by small steps does not creep past the threshold: still compared with 348m.
    kept_again, state = world.publish(checkout_set(cpu=0.37), state)
    assert kept_again.outcome == "closed-kept"

    # 348m → 200m: material. A new PR, a new push.
    material = checkout_set(cpu=0.2)
    reopened, state = world.publish(material, state)
    assert reopened.outcome == "opened"
    assert reopened.pull_request == 2
    assert world.remote_head() == reopened.commit != head
    assert world.forge.pull_requests[2].state == "open"
    assert state is not None
    assert (state.status, state.pr_number) == ("open", 2)


def test_a_merged_pr_then_a_newer_set_opens_a_new_pr(world: World) -> None:
    _, state = world.publish(checkout_set(), None)
    world.forge.set_state(1, "merged", by="alice")
    result, _ = world.publish(checkout_set(cpu=0.25), state)
    assert (result.outcome, result.pull_request) == ("opened", 2)


def deployment(name: str) -> str:
    return MANIFEST.split("---\n")[1].replace("checkout", name)


def set_for(name: str, cpu: float = 0.3) -> dict[str, Any]:
    workload = f"prod/shop/Deployment/{name}"
    rec = recommendation(
        "app", current={"cpu_request_cores": 0.5}, recommended={"cpu_request_cores": cpu}
    )
    rec["workload"] = workload
    rec_set = recommendation_set(rec)
    rec_set["workload"] = workload
    return rec_set


def test_a_burst_of_500_sets_respects_the_open_and_hourly_quotas(tmp_path: Path) -> None:
    names = [f"svc-{index:03d}" for index in range(500)]
    world = make_world(
        tmp_path,
        {f"apps/shop/{name}.yaml": deployment(name) for name in names},
        WriteLimits(
            max_open_pull_requests=7,
            max_new_pull_requests_per_hour=4,
            min_seconds_between_writes=0.0,
            open_count_ttl_seconds=0.0,
        ),
    )
    store = MemoryStateStore()
    target = PublishTarget(world.publisher, store)
    metrics = SinkMetrics(CollectorRegistry())

    async def burst() -> list[SinkResult]:
        world.publisher.refresh()
        return [await target.publish(set_for(name), fetch=False) for name in names]

    results = asyncio.run(burst())

    outcomes = [result.outcome for result in results]
    assert outcomes.count("opened") == 4
    assert outcomes.count("deferred") == 496
    branches = git(world.remote, "for-each-ref", "--format=%(refname)", "refs/heads/daytwo/")
    assert len(branches.splitlines()) == 4  # no branch pushed that got no PR
    deferred = [s for s in store.all() if s.status == "deferred"]
    assert len(deferred) == 496
    assert all(s.pending_set is not None for s in deferred)

    # An hour later the hourly quota allows 4 more, but only 3 fit under 7 open.
    world.clock.now += 3601
    retried = asyncio.run(retry_deferred(target, clock=world.clock, metrics=metrics))
    assert [r.outcome for r in retried].count("opened") == 3
    assert world.forge.count_open() == 7
    # A merge frees one slot; waiting sets come back after their retry time.
    world.forge.set_state(1, "merged")
    world.clock.now += 3601
    retried = asyncio.run(retry_deferred(target, clock=world.clock, metrics=metrics))
    assert [r.outcome for r in retried].count("opened") == 1
    assert world.forge.count_open() == 7
    assert len(world.forge.pull_requests) == 8


@pytest.mark.integration
def test_the_memory_survives_a_restart_through_the_state_topic(
    world: World, kafka_bootstrap: str, topic_prefix: str
) -> None:
    topic = topic_prefix + SINK_STATE_SPEC.name

    async def open_store() -> KafkaStateStore:
        await ensure_topics(kafka_bootstrap, [SINK_STATE_SPEC], prefix=topic_prefix)
        return await KafkaStateStore.open(kafka_bootstrap, topic, idempotent=False)

    async def first_life() -> None:
        store = await open_store()
        try:
            target = PublishTarget(world.publisher, store)
            assert (await target.publish(checkout_set(cpu=0.348))).outcome == "opened"
            world.forge.set_state(1, "closed", by="alice")
            assert (await target.publish(checkout_set(cpu=0.36))).outcome == "closed-kept"
        finally:
            await store.close()

    asyncio.run(first_life())
    head, calls = world.remote_head(), list(world.forge.calls)

    async def second_life() -> None:
        # A new process: new clone, new publisher, state only from the topic.
        store = await open_store()
        try:
            state = store.get(WORKLOAD)
            assert state is not None
            assert (state.status, state.pr_number) == ("closed", 1)
            assert state.proposed == proposed_values(checkout_set(cpu=0.348))
            repo = GitRepo.open_clone(str(world.remote), world.tmp_path / "second-clone")
            publisher = PullRequestPublisher(repo, world.forge, author=BOT, clock=world.clock)
            target = PublishTarget(publisher, store)
            # The set it last saw: nothing at all.
            assert (await target.publish(checkout_set(cpu=0.36))).outcome == "unchanged"
            assert world.forge.calls == calls
            # Another immaterial one: kept closed, compared with the refused 348m.
            assert (await target.publish(checkout_set(cpu=0.37))).outcome == "closed-kept"
            assert world.forge.writes() == ["create_pull_request"]
            assert world.remote_head() == head
            # A material one: a new PR.
            assert (await target.publish(checkout_set(cpu=0.2))).outcome == "opened"
        finally:
            await store.close()

    asyncio.run(second_life())
    assert world.forge.count_open() == 1


@pytest.mark.integration
def test_run_sink_publishes_for_real_and_a_replay_changes_nothing(
    world: World, kafka_bootstrap: str, topic_prefix: str
) -> None:
    topics = topic_names(topic_prefix)
    state_topic = topic_prefix + SINK_STATE_SPEC.name
    results: list[SinkResult] = []

    async def produce() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(
                topics.recommendations, orjson.dumps(checkout_set()), key=WORKLOAD.encode()
            )
        finally:
            await producer.stop()

    async def run(group: str, count: int) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(
            run_sink(
                kafka_bootstrap,
                world.tmp_path / "unused",
                group_id=group,
                topic=topics.recommendations,
                deadletter_topic=topics.deadletter,
                stop_event=stop,
                registry=CollectorRegistry(),
                on_result=results.append,
                poll_timeout_ms=200,
                idempotent=False,
                publisher=world.publisher,
                state_topic=state_topic,
            )
        )
        deadline = asyncio.get_running_loop().time() + 30
        while len(results) < count and asyncio.get_running_loop().time() < deadline:
            if task.done():
                break
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.wait_for(task, 15)

    asyncio.run(produce())
    asyncio.run(run(f"{topic_prefix}sink-a", 1))
    assert [r.outcome for r in results] == ["opened"]
    head, calls = world.remote_head(), list(world.forge.calls)
    # A new consumer group replays the compacted topic from the start, like a reset.
    asyncio.run(run(f"{topic_prefix}sink-b", 2))
    assert [r.outcome for r in results] == ["opened", "unchanged"]
    assert world.remote_head() == head
    assert world.forge.calls == calls


def test_settings_build_the_publisher_the_clone_and_the_forge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = make_remote(tmp_path, {MANIFEST_PATH: MANIFEST})
    monkeypatch.setenv("TEST_FORGE_TOKEN", "tok-123")
    settings = Settings(
        gitops_remote_url=str(remote),
        gitops_clone_dir=tmp_path / "clone",
        forge_kind="github",
        forge_repository="acme/gitops",
        forge_token_env="TEST_FORGE_TOKEN",
        pr_max_open=3,
        pr_max_new_per_hour=2,
        git_author_email="bot@daytwo.invalid",
    )
    publisher = build_publisher(settings)
    assert isinstance(publisher.forge, GitHubForge)
    assert publisher.forge.limiter.limits.max_open_pull_requests == 3
    assert publisher.forge.limiter.limits.max_new_pull_requests_per_hour == 2
    assert publisher.author.email == "bot@daytwo.invalid"
    publisher.refresh()
    assert publisher.base_branch == "main"
    assert "tok-123" not in repr(publisher.forge.http)
    # No forge: branches are pushed, no PRs.
    push_only = build_publisher(settings.model_copy(update={"forge_kind": None}))
    assert push_only.forge is None
    result = push_only.publish(checkout_set(), None)
    assert result.result.outcome == "pushed"
    assert result.result.commit == git(remote, "rev-parse", f"refs/heads/{BRANCH}")
    with pytest.raises(ConfigError, match="owner/name"):
        build_publisher(settings.model_copy(update={"forge_repository": "acme"}))
    monkeypatch.delenv("TEST_FORGE_TOKEN")
    with pytest.raises(ForgeAuthError, match="TEST_FORGE_TOKEN"):
        build_publisher(settings)


# -- refusals: hostile YAML and ambiguity write nothing (issue 5, acceptance 4) ----------


def alias_bomb() -> str:
    """Nine aliases a level, six levels: 9**6 nodes once expanded (billion laughs)."""
    lines = ["  l0: &l0 [" + ", ".join(["lol"] * 9) + "]"]
    lines += [f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 7)]
    return "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: checkout-lol}\ndata:\n" + "\n".join(
        lines
    )


REPLICAS_LINE = "  replicas: 3  # three zones\n"
HOSTILE_REPOS = {
    "python-tag": (
        {
            MANIFEST_PATH: MANIFEST.replace(
                REPLICAS_LINE,
                REPLICAS_LINE + '  selector: !!python/object/apply:os.system ["id"]\n',
            )
        },
        "hostile-yaml",
        f"{MANIFEST_PATH} (document 1) uses the Python-specific tag",
    ),
    "billion-laughs": (
        {MANIFEST_PATH: MANIFEST + "---\n" + alias_bomb() + "\n"},
        "hostile-yaml",
        f"{MANIFEST_PATH} (document 2): aliases expand to",
    ),
    "duplicate-keys": (
        {MANIFEST_PATH: MANIFEST.replace(REPLICAS_LINE, REPLICAS_LINE + "  replicas: 4\n")},
        "hostile-yaml",
        f"{MANIFEST_PATH} (document 1) cannot be read safely",
    ),
    "ambiguous": (
        {MANIFEST_PATH: MANIFEST, "legacy/checkout.yaml": MANIFEST},
        "ambiguous-source",
        f"built 2 ways: {MANIFEST_PATH} (document 1); legacy/checkout.yaml (document 1)",
    ),
}


def all_refs(repo: Path) -> str:
    return git(repo, "for-each-ref", "--format=%(objectname) %(refname)")


@pytest.mark.parametrize("case", sorted(HOSTILE_REPOS))
def test_hostile_yaml_and_ambiguity_are_refused_and_nothing_is_written(
    tmp_path: Path, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    files, reason, message = HOSTILE_REPOS[case]
    world = make_world(tmp_path, files)
    store = MemoryStateStore()
    registry = CollectorRegistry()
    metrics = SinkMetrics(registry)
    letters: list[bytes] = []
    results: list[SinkResult] = []

    async def publish_deadletter(key: bytes | None, value: bytes) -> None:
        letters.append(value)

    remote_before = all_refs(world.remote)
    value = orjson.dumps(checkout_set())

    result = asyncio.run(
        handle_record(
            world.publisher.repo,
            topic="daytwo.recommendations.v1",
            partition=0,
            offset=7,
            key=WORKLOAD.encode(),
            value=value,
            metrics=metrics,
            publish_deadletter=publish_deadletter,
            clock=world.clock,
            on_result=results.append,
            target=PublishTarget(world.publisher, store),
        )
    )

    assert result is None
    assert results == []
    # Nothing written: no ref moved or appeared on the remote, no local daytwo branch
    # in the sink's clone, no forge write, no state record.
    assert all_refs(world.remote) == remote_before
    assert git(world.publisher.repo.path, "for-each-ref", "refs/heads/") == ""
    assert world.forge.writes() == []
    assert store.all() == []
    # Refused with the file named, kept as a dead letter, counted, and logged.
    [letter] = [decode(DeadLetter, raw) for raw in letters]
    assert message in letter.reason
    assert base64.b64decode(letter.value_b64) == value
    assert registry.get_sample_value("daytwo_sink_refusals_total", {"reason": reason}) == 1
    assert (
        registry.get_sample_value("daytwo_sink_recommendations_total", {"outcome": "refused"}) == 1
    )
    assert any(message in record.getMessage() for record in caplog.records)


def test_the_dry_run_refuses_hostile_yaml_without_a_branch(tmp_path: Path) -> None:
    files, _, message = HOSTILE_REPOS["python-tag"]
    root = tmp_path / "local"
    init_with_files(root, files)
    before = all_refs(root), git(root, "status", "--porcelain")
    with pytest.raises(HostileYamlError, match=re.escape(message)):
        apply_recommendation_set(GitRepo(root), checkout_set())
    assert (all_refs(root), git(root, "status", "--porcelain")) == before


# -- Kustomize: every file of the plan in one commit, the sources in the body ------------

KUSTOMIZE_LAYOUT = Path(__file__).parent / "fixtures" / "gitops" / "kustomize"
KUSTOMIZE_WORKLOAD = "prod/shop-prod/Deployment/checkout"


def layout_files(root: Path) -> dict[str, str]:
    return {
        path.relative_to(root).as_posix(): path.read_text(encoding="utf-8")
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def kustomize_set() -> dict[str, Any]:
    app = recommendation(
        "app",
        current={"cpu_request_cores": 2.0, "memory_request_bytes": 4 * 1024**3},
        recommended={
            "cpu_request_cores": 0.35,
            "cpu_limit_cores": 1.5,
            "memory_request_bytes": 1536 * 1024**2,
            "memory_limit_bytes": 1536 * 1024**2,
        },
    )
    app["jvm_options"] = {
        "java_tool_options": "-Xmx1g -XX:+UseG1GC",
        "changed": ["-Xmx1g"],
        "previous": "-Xmx512m -XX:+UseG1GC",
    }
    shipper = recommendation(
        "log-shipper",
        current={},
        recommended={"cpu_request_cores": 0.05, "memory_request_bytes": 64 * 1024**2},
    )
    rec_set = recommendation_set(app, shipper)
    rec_set["workload"] = KUSTOMIZE_WORKLOAD
    for member in rec_set["recommendations"]:
        member["workload"] = KUSTOMIZE_WORKLOAD
    return rec_set


def test_a_kustomize_overlay_is_patched_in_one_commit_and_the_body_says_where(
    tmp_path: Path,
) -> None:
    world = make_world(tmp_path, layout_files(KUSTOMIZE_LAYOUT))
    rec_set = kustomize_set()

    result, state = world.publish(rec_set, None)

    branch = "daytwo/shop-prod/checkout"
    assert result.outcome == "opened"
    head = world.remote_head(branch)
    assert head is not None
    assert head == result.commit
    assert git(world.remote, "rev-parse", f"{head}^") == git(world.remote, "rev-parse", "main")
    new_patch = "overlays/prod/daytwo-deployment-checkout.yaml"
    expected = sorted(
        ["overlays/prod/kustomization.yaml", "overlays/prod/resources.yaml", new_patch]
    )
    assert sorted(git(world.remote, "diff", "--name-only", "main", head).splitlines()) == expected
    assert result.files == tuple(expected)
    # The base is untouched: the overlay's own patch carries the new values.
    assert "base/deployment.yaml" not in expected
    kustomization = git(world.remote, "show", f"{head}:overlays/prod/kustomization.yaml")
    assert "  - path: daytwo-deployment-checkout.yaml" in kustomization.splitlines()
    [pr] = world.forge.pull_requests.values()
    assert "Written to: Kustomize strategic-merge patch `overlays/prod/resources.yaml`" in pr.body
    assert f"Written to: new Kustomize strategic-merge patch `{new_patch}`" in pr.body
    # "current" is what the overlay declares (its 1 CPU over the base's 250m), not what
    # the recommendation observed (2 cores).
    assert "| CPU request | 1 | **350m** |" in pr.body
    # The same set again: nothing.
    again = world.publisher.publish(rec_set, state)
    assert again.result.outcome == "unchanged"
    assert world.remote_head(branch) == head
