"""The dry-run PR sink: recommendation sets in, one branch per workload out.

:func:`apply_recommendation_set` is the whole decision, free of Kafka: locate the
workload's manifest on the base branch, patch every container's ``resources``, write the
PR text to ``.daytwo/PR.md`` and commit both on ``daytwo/<namespace>/<name>``. It is
idempotent, because the topic is compacted and replayed from the start after every
restart: the same set again (same hash) makes no commit, and a set that is already what
the base branch says makes no branch at all.

:func:`run_sink` is the thin Kafka shell around it (aiokafka consumer, manual offset
commits after the batch is applied, dead letters for anything that cannot be applied).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# aiokafka ships no py.typed; unused-ignore keeps this valid once pyproject lists it.
from aiokafka import (  # type: ignore[import-untyped, unused-ignore]
    AIOKafkaConsumer,
    AIOKafkaProducer,
)
from aiokafka.errors import KafkaError  # type: ignore[import-untyped, unused-ignore]
from prometheus_client import CollectorRegistry, Counter

from pipeline.errors import BrokerError, InvalidMessageError, SinkError
from pipeline.prsink.body import extract_hash, render_pr
from pipeline.prsink.git import CommitAuthor, GitRepo
from pipeline.prsink.locate import WorkloadId, find_workload_document, is_manifest_path
from pipeline.prsink.patch import (
    EnvVarMissingError,
    declared_resources,
    patch_env_value,
    patch_resources,
)
from pipeline.topics import DEADLETTER, DEADLETTER_MAX_MESSAGE_BYTES, RECOMMENDATIONS
from schemas.models import RecommendationSet
from schemas.validate import decode, encode, make_deadletter

logger = logging.getLogger(__name__)

RECOMMENDATIONS_TOPIC = RECOMMENDATIONS
DEADLETTER_TOPIC = DEADLETTER
#: Where the PR title and body live on the branch in dry-run mode.
PR_NOTE_PATH = ".daytwo/PR.md"


@dataclass(frozen=True)
class SinkResult:
    """What the sink did for one recommendation set.

    ``commit`` is the new commit's sha (None when nothing was committed), ``changed``
    says whether the branch moved, ``files`` lists the paths written in that commit
    (empty when none), and ``reason`` says in words why (for logs and the demo).
    """

    workload: str
    branch: str
    commit: str | None
    changed: bool
    files: tuple[str, ...]
    reason: str = ""


def branch_for(workload: WorkloadId) -> str:
    """The one branch per workload: ``daytwo/<namespace>/<name>``."""
    return f"daytwo/{workload.namespace}/{workload.name}"


#: The variable the JVM reads its options from; ``jvm_options`` in a recommendation is
#: its ready-to-paste value.
JVM_OPTIONS_VARIABLE = "JAVA_TOOL_OPTIONS"


def _with_declared_current(
    rec_set: Mapping[str, Any], manifest: str, document_index: int
) -> dict[str, Any]:
    """The set with each member's ``current`` taken from the manifest on the base branch.

    Where the manifest leaves a value unset the recommendation's observed value stays,
    so the PR says what the file declares and, failing that, what was in force.
    """
    kind = WorkloadId.parse(str(rec_set["workload"])).kind
    members = []
    for rec in rec_set.get("recommendations", ()):
        declared = declared_resources(manifest, document_index, kind, str(rec["container"]))
        observed = dict(rec.get("current") or {})
        current = {k: (v if v is not None else observed.get(k)) for k, v in declared.items()}
        members.append({**rec, "current": {**observed, **current}})
    return {**rec_set, "recommendations": members}


def render_pr_note(rec_set: Mapping[str, Any]) -> str:
    """The content of ``.daytwo/PR.md``: the title as a heading, then the body."""
    title, body = render_pr(rec_set)
    return f"# {title}\n\n{body}\n"


def _check_set(rec_set: Mapping[str, Any]) -> tuple[WorkloadId, Sequence[Mapping[str, Any]]]:
    """Cheap structural checks for callers that did not go through schemas.validate."""
    if rec_set.get("kind") != "recommendation-set":
        raise InvalidMessageError(
            f"expected kind 'recommendation-set', got {rec_set.get('kind')!r}", stage="validate"
        )
    try:
        workload = WorkloadId.parse(str(rec_set["workload"]))
    except (KeyError, SinkError) as error:
        raise InvalidMessageError(f"bad workload id: {error}", stage="validate") from error
    recommendations = rec_set.get("recommendations")
    if not isinstance(recommendations, Sequence) or isinstance(recommendations, str):
        raise InvalidMessageError("recommendations must be a list", stage="validate")
    seen: set[str] = set()
    for recommendation in recommendations:
        if not isinstance(recommendation, Mapping):
            raise InvalidMessageError("each recommendation must be an object", stage="validate")
        if recommendation.get("workload", rec_set["workload"]) != rec_set["workload"]:
            raise InvalidMessageError(
                f"recommendation for {recommendation.get('workload')!r} inside the set of "
                f"{rec_set['workload']!r}",
                stage="validate",
            )
        container = recommendation.get("container")
        if not isinstance(container, str) or container in seen:
            raise InvalidMessageError(
                f"container name missing or repeated: {container!r}", stage="validate"
            )
        seen.add(container)
        if not isinstance(recommendation.get("recommended"), Mapping):
            raise InvalidMessageError(
                f"recommendation for {container!r} has no 'recommended' object", stage="validate"
            )
    return workload, recommendations


def apply_recommendation_set(
    repo: GitRepo,
    rec_set: Mapping[str, Any],
    *,
    base_branch: str | None = None,
    author: CommitAuthor | None = None,
) -> SinkResult:
    """Propose one workload's recommendations as a commit on its daytwo branch.

    Reads the manifest from ``base_branch`` (default: the repo's default branch), never
    from the user's working tree. Raises :class:`SinkError` when the manifest cannot be
    found or patched safely, :class:`InvalidMessageError` for a malformed set.
    """
    workload, recommendations = _check_set(rec_set)
    author = author or CommitAuthor()
    branch = branch_for(workload)
    set_hash = str(rec_set.get("hash", ""))
    workload_text = str(workload)
    if not recommendations:
        return SinkResult(workload_text, branch, None, False, (), "no recommendations in the set")
    if repo.branch_exists(branch):
        note = repo.read_file_at(branch, PR_NOTE_PATH)
        if note is not None and extract_hash(note) == set_hash:
            return SinkResult(workload_text, branch, None, False, (), "already proposed")
    base = base_branch or repo.default_branch()
    manifests = repo.read_files_at(
        base, (path for path in repo.list_files_at(base) if is_manifest_path(path))
    )
    location = find_workload_document(sorted(manifests.items()), workload)
    original = manifests[location.path]
    patched = original
    missing_env: list[str] = []
    for recommendation in recommendations:
        patched = patch_resources(
            patched,
            location.document_index,
            workload.kind,
            str(recommendation["container"]),
            recommendation["recommended"],
        )
        jvm_options = recommendation.get("jvm_options")
        if isinstance(jvm_options, Mapping) and jvm_options.get("java_tool_options"):
            # The heap moves with the limit, in the same commit, or the PR says why not.
            try:
                patched = patch_env_value(
                    patched,
                    location.document_index,
                    workload.kind,
                    str(recommendation["container"]),
                    name=JVM_OPTIONS_VARIABLE,
                    value=str(jvm_options["java_tool_options"]),
                )
            except EnvVarMissingError:
                missing_env.append(str(recommendation["container"]))
    if patched == original:
        return SinkResult(
            workload_text, branch, None, False, (), f"{location.path} on {base} already says this"
        )
    note = render_pr_note(_with_declared_current(rec_set, original, location.document_index))
    for container in missing_env:
        note += (
            f"\n> **Action needed:** container `{container}` declares no "
            f"`{JVM_OPTIONS_VARIABLE}`; set it as shown above in the same change as the "
            "memory limit, or the JVM keeps its old heap inside the new limit.\n"
        )
    title = note.splitlines()[0].removeprefix("# ")
    message = f"{title}\n\nRecommendation set {set_hash} for {workload_text}.\n"
    files = {location.path: patched, PR_NOTE_PATH: note}
    commit = repo.commit_on_branch(
        branch,
        base,
        files,
        message=message,
        author_name=author.name,
        author_email=author.email,
        signoff=True,
    )
    if commit is None:
        return SinkResult(workload_text, branch, None, False, (), "branch already has this content")
    return SinkResult(workload_text, branch, commit, True, tuple(files), f"committed on {branch}")


def process_record(
    repo: GitRepo,
    value: bytes,
    *,
    base_branch: str | None = None,
    author: CommitAuthor | None = None,
) -> SinkResult:
    """Decode one Kafka value (validated against the contract) and apply it."""
    rec_set = decode(RecommendationSet, value)
    return apply_recommendation_set(
        repo, rec_set.model_dump(mode="json"), base_branch=base_branch, author=author
    )


@dataclass
class SinkMetrics:
    """The sink's own counters, registered on the registry passed in (never the global)."""

    registry: CollectorRegistry
    recommendations: Counter = field(init=False)
    commits: Counter = field(init=False)
    deadletters: Counter = field(init=False)

    def __post_init__(self) -> None:
        self.recommendations = Counter(
            "daytwo_sink_recommendations_total",
            "Recommendation sets the sink applied, by outcome (committed or unchanged).",
            ["outcome"],
            registry=self.registry,
        )
        self.commits = Counter(
            "daytwo_sink_commits_total",
            "Commits the sink made on daytwo branches.",
            registry=self.registry,
        )
        self.deadletters = Counter(
            "daytwo_sink_deadletters_total",
            "Records the sink could not apply and sent to the dead-letter topic, by stage.",
            ["stage"],
            registry=self.registry,
        )

    @classmethod
    def for_registry(cls, registry: CollectorRegistry) -> SinkMetrics:
        """The registry's sink counters, created once; a restarted sink keeps counting."""
        metrics = _METRICS_BY_REGISTRY.get(registry)
        if metrics is None:
            metrics = _METRICS_BY_REGISTRY[registry] = cls(registry)
        return metrics


_METRICS_BY_REGISTRY: weakref.WeakKeyDictionary[CollectorRegistry, SinkMetrics] = (
    weakref.WeakKeyDictionary()
)


#: Sends a dead letter: (key, value bytes) → awaited until the broker has it.
DeadletterPublisher = Callable[[bytes | None, bytes], Awaitable[None]]


async def handle_record(
    repo: GitRepo,
    *,
    topic: str,
    partition: int | None,
    offset: int | None,
    key: bytes | None,
    value: bytes | None,
    metrics: SinkMetrics,
    publish_deadletter: DeadletterPublisher,
    clock: Callable[[], float],
    base_branch: str | None = None,
    author: CommitAuthor | None = None,
    on_result: Callable[[SinkResult], None] | None = None,
) -> SinkResult | None:
    """Apply one record, or dead-letter it; never raises for a bad or unpatchable record.

    Why every exception is caught: one poisoned record must not stop the sink for all
    other workloads; it is kept (original bytes + reason) on the dead-letter topic and
    counted. Tombstones (value None, a deleted workload) are skipped.
    """
    if value is None:
        return None
    try:
        result = await asyncio.to_thread(
            process_record, repo, value, base_branch=base_branch, author=author
        )
    except Exception as error:  # every failure dead-letters (see docstring)
        stage = error.stage if isinstance(error, InvalidMessageError) else "apply"
        if not isinstance(error, InvalidMessageError | SinkError):
            logger.exception("unexpected error applying %s[%s]@%s", topic, partition, offset)
        letter = make_deadletter(
            topic=topic,
            partition=partition,
            offset=offset,
            key=key,
            value=value,
            reason=f"{type(error).__name__}: {error}",
            stage=stage,
            failed_at=clock(),
        )
        await publish_deadletter(key, encode(letter))
        metrics.deadletters.labels(stage=stage).inc()
        return None
    metrics.recommendations.labels(outcome="committed" if result.changed else "unchanged").inc()
    if result.commit is not None:
        metrics.commits.inc()
    if on_result is not None:
        on_result(result)
    return result


async def _start(client: Any, bootstrap: str) -> None:
    """Start an aiokafka client; on failure close it (no leak) and say what to check."""
    try:
        await client.start()
    except BaseException as error:  # cancelled or failed: close it either way
        await client.stop()
        if not isinstance(error, KafkaError):
            raise
        raise BrokerError(
            f"cannot start the sink's Kafka {type(client).__name__} at {bootstrap}: {error!r} "
            "(is the broker up? on the embedded broker pass idempotent=False)"
        ) from error


async def run_sink(
    bootstrap: str,
    repo_path: Path,
    *,
    group_id: str = "daytwo-sink",
    topic: str = RECOMMENDATIONS_TOPIC,
    deadletter_topic: str = DEADLETTER_TOPIC,
    stop_event: asyncio.Event,
    registry: CollectorRegistry,
    base_branch: str | None = None,
    author: CommitAuthor | None = None,
    on_result: Callable[[SinkResult], None] | None = None,
    poll_timeout_ms: int = 1000,
    max_records: int = 100,
    clock: Callable[[], float] = time.time,
    idempotent: bool = True,
) -> None:
    """Consume recommendation sets until ``stop_event`` is set.

    Offsets are committed only after every record of a batch was applied or
    dead-lettered, so a crash replays (harmlessly: applying is idempotent) instead of
    losing a recommendation. ``idempotent=False`` is for the embedded broker only, whose
    in-memory storage answers aiokafka's InitProducerId with UnknownError (see
    agents/publisher.py); the dead-letter producer keeps ``acks="all"`` either way.
    """
    repo = GitRepo(repo_path)
    metrics = SinkMetrics.for_registry(registry)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=idempotent,
        linger_ms=5,
        max_request_size=DEADLETTER_MAX_MESSAGE_BYTES,
    )

    async def publish_deadletter(key: bytes | None, value: bytes) -> None:
        await producer.send_and_wait(deadletter_topic, value=value, key=key)

    await _start(producer, bootstrap)
    try:
        await _start(consumer, bootstrap)
        try:
            while not stop_event.is_set():
                batches = await consumer.getmany(
                    timeout_ms=poll_timeout_ms, max_records=max_records
                )
                for records in batches.values():
                    for record in records:
                        await handle_record(
                            repo,
                            topic=record.topic,
                            partition=record.partition,
                            offset=record.offset,
                            key=record.key,
                            value=record.value,
                            metrics=metrics,
                            publish_deadletter=publish_deadletter,
                            clock=clock,
                            base_branch=base_branch,
                            author=author,
                            on_result=on_result,
                        )
                if batches:
                    await consumer.commit()
        finally:
            await consumer.stop()
    finally:
        await producer.stop()
