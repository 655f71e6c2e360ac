"""The PR sink: recommendation sets in, one branch and one pull request per workload out.

Two modes share the locating and patching:

* **Dry run** (no remote): :func:`apply_recommendation_set` patches the manifest on the
  base branch of a local repository, writes the PR text to ``.daytwo/PR.md`` and commits
  both on ``daytwo/<namespace>/<name>``. The same set again (same hash) makes no commit.
* **For real**: :class:`PullRequestPublisher` works in the sink's own clone of the GitOps
  remote and a :class:`~pipeline.prsink.forge.Forge`. It rebuilds the workload's branch
  as one signed-off commit on the current base, force-pushes it with a lease (only a
  branch whose commits are all the bot's), then opens the PR (labels ``daytwo``,
  ``right-sizing``) or updates its title and body.

Hygiene, like the best PR bots: the same set twice makes no commit and no forge call; a
newer set updates the open PR; a PR a human closed stays closed unless a new set differs
*materially* from what that PR proposed (the profile's minimum change, the rule the
engine applies); a branch a human pushed to is never overwritten (the bot comments on
the PR instead); new PRs respect the forge's open and hourly quotas and wait (deferred)
when they are used up. That memory is :class:`~pipeline.prsink.state.SinkState` on the
compacted state topic, so a restarted sink decides exactly as the one before.

:func:`run_sink` is the thin Kafka shell around both (aiokafka consumer, manual offset
commits after the batch is applied and its state written, dead letters for anything that
cannot be applied, deferred sets retried when their wait is over).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

# aiokafka ships no py.typed; unused-ignore keeps this valid once pyproject lists it.
from aiokafka import (  # type: ignore[import-untyped, unused-ignore]
    AIOKafkaConsumer,
    AIOKafkaProducer,
)
from aiokafka.errors import KafkaError  # type: ignore[import-untyped, unused-ignore]
from prometheus_client import CollectorRegistry
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from pipeline.core.engine import material_changes
from pipeline.core.profiles import DEFAULT_PROFILE_NAME, Profile, get_profile
from pipeline.core.quantity import parse_cpu, parse_memory
from pipeline.core.sizing import CurrentResources
from pipeline.errors import (
    BrokerError,
    ConfigError,
    DaytwoError,
    InvalidMessageError,
    SinkError,
)
from pipeline.metrics import SinkMetrics
from pipeline.prsink.body import extract_hash, render_pr
from pipeline.prsink.forge import (
    Forge,
    ForgeUnavailableError,
    PullRequest,
    RateLimitedError,
    StaticToken,
    TokenProvider,
    WriteLimits,
    body_digest,
    load_token,
)
from pipeline.prsink.git import SET_TRAILER, CommitAuthor, GitCredentials, GitRepo
from pipeline.prsink.locate import (
    AmbiguousSourceError,
    HostileYamlError,
    Location,
    SourceNotFoundError,
    SourceOfTruth,
    ValuesRef,
    WorkloadId,
    is_manifest_path,
    load_document,
    split_documents,
)
from pipeline.prsink.patch import ContainerChange, declared_resources, patch_workload
from pipeline.prsink.state import (
    KafkaStateStore,
    ProposedValues,
    SinkState,
    SinkStateStore,
)
from pipeline.topics import (
    DEADLETTER,
    DEADLETTER_MAX_MESSAGE_BYTES,
    RECOMMENDATIONS,
    SINK_STATE_SPEC,
    ensure_topics,
)
from schemas.models import RecommendationSet
from schemas.validate import decode, encode, make_deadletter

if TYPE_CHECKING:
    from pipeline.settings import Settings

logger = logging.getLogger(__name__)

RECOMMENDATIONS_TOPIC = RECOMMENDATIONS
DEADLETTER_TOPIC = DEADLETTER
#: Where the PR title and body live on the branch in dry-run mode.
PR_NOTE_PATH = ".daytwo/PR.md"
#: Labels every daytwo PR carries.
PR_LABELS = ("daytwo", "right-sizing")
#: Every daytwo branch starts with this; the bot force-pushes nothing else.
BRANCH_PREFIX = "daytwo/"
#: How long a set waits when the open-PR quota is full (only a merge or close frees it).
OPEN_QUOTA_RETRY_SECONDS = 300.0


@dataclass(frozen=True)
class SinkResult:
    """What the sink did for one recommendation set.

    ``commit`` is the new commit's sha (None when nothing was committed), ``changed``
    says whether the branch moved, ``files`` lists the paths written in that commit
    (empty when none), and ``reason`` says in words why (for logs and the demo).
    ``outcome`` is one word for metrics (see :data:`OUTCOMES`), ``pull_request`` the PR
    number when a forge is involved.
    """

    workload: str
    branch: str
    commit: str | None
    changed: bool
    files: tuple[str, ...]
    reason: str = ""
    outcome: str = ""
    pull_request: int | None = None


#: Every outcome the sink reports (bounded metric label values).
OUTCOMES = (
    "committed",  # dry run: a commit on the local branch
    "unchanged",  # the same set again, or nothing to do
    "in-base",  # the base branch already says this
    "opened",  # pushed and a new PR opened
    "updated",  # pushed (or body refreshed) on the open PR
    "pushed",  # pushed, no forge configured
    "closed-kept",  # a human closed the PR and the change is not material
    "human-branch",  # a human pushed to the bot's branch: commented, not overwritten
    "deferred",  # quota or forge rate limit: retried later
    "refused",  # the repository cannot be patched safely: dead-lettered, nothing written
)

#: Why a set was refused (bounded label values of ``daytwo_sink_refusals_total``).
REFUSAL_REASONS = ("hostile-yaml", "ambiguous-source", "source-not-found", "unpatchable")


def refusal_reason(error: BaseException) -> str | None:
    """The refusal label for an error that means "this repository cannot be patched safely".

    None for anything else (a malformed message, a broker or forge failure): those are
    not the repository's fault and keep their own handling.
    """
    if isinstance(error, HostileYamlError):
        return "hostile-yaml"
    if isinstance(error, AmbiguousSourceError):
        return "ambiguous-source"
    if isinstance(error, SourceNotFoundError):
        return "source-not-found"
    if isinstance(error, SinkError | ConfigError) and not isinstance(error, InvalidMessageError):
        return "unpatchable"
    return None


def branch_for(workload: WorkloadId) -> str:
    """The one branch per workload: ``daytwo/<namespace>/<name>``."""
    return f"{BRANCH_PREFIX}{workload.namespace}/{workload.name}"


def render_pr_note(
    rec_set: Mapping[str, Any],
    *,
    sources: Mapping[str, str] | None = None,
    notes: Sequence[str] = (),
) -> str:
    """The content of ``.daytwo/PR.md``: the title as a heading, then the body."""
    title, body = render_pr(rec_set, sources=sources, notes=notes)
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


#: A Helm values map: ``workload id[:container]`` → values file and YAML path (see
#: :func:`pipeline.prsink.locate.locate_source`).
ValuesMap = Mapping[str, ValuesRef | Mapping[str, str]]


@dataclass(frozen=True)
class Proposal:
    """A set's change to the GitOps repo: every file it writes and the PR text for it.

    ``files`` maps repo paths to their full new text (only files that change; a new
    Kustomize patch file and the kustomization listing it included). ``sources`` says,
    per container, where its values were written (:meth:`SourceOfTruth.describe`), and
    ``notes`` what a reviewer must do by hand; both are also in the body.
    """

    files: dict[str, str]
    title: str
    body: str
    sources: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def note(self) -> str:
        """``.daytwo/PR.md``: the title as a heading, then the body."""
        return f"# {self.title}\n\n{self.body}\n"


def _parse_quantity(key: str, raw: object) -> float | int | None:
    if raw is None or isinstance(raw, bool | Mapping | list):
        return None
    try:
        return parse_cpu(str(raw)) if key == "cpu" else parse_memory(str(raw))
    except (ValueError, ArithmeticError, DaytwoError):
        return None


def _resources_mapping(value: Any) -> dict[str, float | int | None]:
    """A ``resources`` mapping (``requests`` / ``limits``) in the contract's base units."""
    sections = value if isinstance(value, Mapping) else {}

    def read(section: str, key: str) -> float | int | None:
        values = sections.get(section)
        return _parse_quantity(key, values.get(key) if isinstance(values, Mapping) else None)

    return {
        "cpu_request_cores": read("requests", "cpu"),
        "cpu_limit_cores": read("limits", "cpu"),
        "memory_request_bytes": read("requests", "memory"),
        "memory_limit_bytes": read("limits", "memory"),
    }


def _declared_at(files: Mapping[str, str], location: Location, kind: str, container: str) -> Any:
    """``declared_resources`` of one document, or {} when it does not declare the container."""
    text = files.get(location.path)
    if text is None:
        return {}
    try:
        return declared_resources(text, location.document_index, kind, container)
    except SinkError:
        return {}


def declared_current(
    files: Mapping[str, str], source: SourceOfTruth
) -> dict[str, float | int | None]:
    """What the repository declares for the container now, where its values are written.

    Why from the source of truth: the PR's "current" column must be what the reviewer
    sees change in the diff. A Kustomize overlay patch overrides its base field by
    field, so a value the patch leaves out is the base's; a Helm values path or a JSON
    6902 patch holds the ``resources`` mapping itself. None where nothing declares it.
    """
    if source.key_path:
        text = files.get(source.path)
        if text is None:
            return {}
        try:
            value: Any = load_document(split_documents(text)[source.document_index])
            for segment in source.key_path:
                if isinstance(segment, int):
                    value = value[segment] if isinstance(value, list) else None
                else:
                    value = value.get(segment) if isinstance(value, Mapping) else None
        except (IndexError, YAMLError, SinkError):
            return {}
        return _resources_mapping(value)
    here = _declared_at(
        files, Location(source.path, source.document_index), source.kind, source.container
    )
    base = (
        _declared_at(files, source.base, source.kind, source.container)
        if source.base is not None and source.base.path != source.path
        else {}
    )
    return {
        key: (here.get(key) if here.get(key) is not None else base.get(key))
        for key in _RESOURCE_FIELDS[:4]
    }


def _with_declared_current(
    rec_set: Mapping[str, Any], files: Mapping[str, str], sources: Mapping[str, SourceOfTruth]
) -> dict[str, Any]:
    """The set with each member's ``current`` taken from the repository on the base branch.

    Where the repository leaves a value unset the recommendation's observed value stays,
    so the PR says what the files declare and, failing that, what was in force.
    """
    members = []
    for rec in rec_set.get("recommendations", ()):
        observed = dict(rec.get("current") or {})
        source = sources.get(str(rec["container"]))
        declared = declared_current(files, source) if source is not None else {}
        current = {k: (v if v is not None else observed.get(k)) for k, v in declared.items()}
        members.append({**rec, "current": {**observed, **current}})
    return {**rec_set, "recommendations": members}


def propose(
    files: Mapping[str, str],
    rec_set: Mapping[str, Any],
    *,
    values_map: ValuesMap | None = None,
    annotations: Mapping[str, str] | None = None,
) -> Proposal | None:
    """Patch one workload in ``files`` (every manifest of the repo); None if nothing changes.

    Pure over ``files`` (repo path → text), so the dry run, the real publisher and the
    documentation's example PR all go through the same code. Raises :class:`SinkError`
    (:class:`~pipeline.prsink.locate.HostileYamlError`,
    :class:`~pipeline.prsink.locate.AmbiguousSourceError`,
    :class:`~pipeline.prsink.locate.SourceNotFoundError`) naming the file when the
    workload cannot be patched safely; nothing is returned half done.
    """
    workload, recommendations = _check_set(rec_set)
    plan = patch_workload(
        files,
        workload,
        [ContainerChange.from_recommendation(rec) for rec in recommendations],
        values_map=values_map,
        annotations=annotations,
    )
    if not plan.files:
        return None
    sources = {container: source.describe() for container, source in plan.sources.items()}
    title, body = render_pr(
        _with_declared_current(rec_set, files, plan.sources), sources=sources, notes=plan.notes
    )
    return Proposal(dict(plan.files), title, body, sources, plan.notes)


def manifest_files_at(repo: GitRepo, ref: str) -> dict[str, str]:
    """Every YAML file of the repository at ``ref`` (path → text), for :func:`propose`."""
    return repo.read_files_at(
        ref, (path for path in repo.list_files_at(ref) if is_manifest_path(path))
    )


def build_proposal(
    repo: GitRepo,
    rec_set: Mapping[str, Any],
    base: str,
    *,
    values_map: ValuesMap | None = None,
) -> Proposal | None:
    """:func:`propose` over the repository as it is at ``base``; None if ``base`` says it.

    Raises :class:`SinkError` when the workload cannot be found or patched safely.
    """
    _check_set(rec_set)
    return propose(manifest_files_at(repo, base), rec_set, values_map=values_map)


def commit_message(title: str, rec_set: Mapping[str, Any]) -> str:
    """Title, a line naming the set, and the trailer that marks the commit as the bot's."""
    set_hash = str(rec_set.get("hash", ""))
    return (
        f"{title}\n\nRecommendation set {set_hash} for {rec_set['workload']}.\n\n"
        f"{SET_TRAILER}: {set_hash}\n"
    )


def _stale_files(repo: GitRepo, base: str, branch: str, keep: Mapping[str, str]) -> dict[str, str]:
    """Files ``branch`` changed from ``base`` that ``keep`` does not write: their base text."""
    changed = repo.run("diff", "--name-only", "-z", base, f"refs/heads/{branch}").stdout
    paths = [name.decode("utf-8", "surrogateescape") for name in changed.split(b"\0") if name]
    return repo.read_files_at(base, (path for path in paths if path not in keep))


def apply_recommendation_set(
    repo: GitRepo,
    rec_set: Mapping[str, Any],
    *,
    base_branch: str | None = None,
    author: CommitAuthor | None = None,
    values_map: ValuesMap | None = None,
) -> SinkResult:
    """Dry run: propose one workload's recommendations as a commit on its local branch.

    Reads every manifest from ``base_branch`` (default: the repo's default branch), never
    from the user's working tree. Raises :class:`SinkError` when the workload cannot be
    found or patched safely (nothing is committed then), :class:`InvalidMessageError`
    for a malformed set.
    """
    workload, recommendations = _check_set(rec_set)
    author = author or CommitAuthor()
    branch = branch_for(workload)
    set_hash = str(rec_set.get("hash", ""))
    workload_text = str(workload)
    if not recommendations:
        return SinkResult(
            workload_text, branch, None, False, (), "no recommendations in the set", "unchanged"
        )
    if repo.branch_exists(branch):
        note = repo.read_file_at(branch, PR_NOTE_PATH)
        if note is not None and extract_hash(note) == set_hash:
            already = "already proposed"
            return SinkResult(workload_text, branch, None, False, (), already, "unchanged")
    base = base_branch or repo.default_branch()
    proposal = build_proposal(repo, rec_set, base, values_map=values_map)
    if proposal is None:
        return SinkResult(
            workload_text, branch, None, False, (), f"{base} already says this", "in-base"
        )
    files = {**proposal.files, PR_NOTE_PATH: proposal.note}
    if repo.branch_exists(branch):
        # The branch stacks proposals; a file an older one changed and this one leaves
        # alone goes back to the base's text, so the branch says exactly this proposal.
        files = {**_stale_files(repo, base, branch, files), **files}
    commit = repo.commit_on_branch(
        branch,
        base,
        files,
        message=commit_message(proposal.title, rec_set),
        author_name=author.name,
        author_email=author.email,
        signoff=True,
    )
    if commit is None:
        return SinkResult(
            workload_text, branch, None, False, (), "branch already has this content", "unchanged"
        )
    return SinkResult(
        workload_text, branch, commit, True, tuple(files), f"committed on {branch}", "committed"
    )


# --------------------------------------------------------------------------- for real


def proposed_values(rec_set: Mapping[str, Any]) -> ProposedValues:
    """Each container's ``recommended`` object: what a PR for this set proposes."""
    return {
        str(rec["container"]): dict(rec.get("recommended") or {})
        for rec in rec_set.get("recommendations") or ()
    }


_RESOURCE_FIELDS = (
    "cpu_request_cores",
    "cpu_limit_cores",
    "memory_request_bytes",
    "memory_limit_bytes",
    "jvm_max_heap_bytes",
)


def _profile_for(name: object, profiles: Mapping[str, Profile]) -> Profile:
    try:
        return get_profile(str(name), profiles)
    except ConfigError:
        logger.warning("unknown profile %r; materiality by %s", name, DEFAULT_PROFILE_NAME)
        return get_profile(DEFAULT_PROFILE_NAME)


def _resources(values: Mapping[str, Any]) -> CurrentResources:
    def number(key: str) -> float | None:
        value = values.get(key)
        return float(value) if isinstance(value, int | float) else None

    def whole(key: str) -> int | None:
        value = number(key)
        return None if value is None else int(value)

    return CurrentResources(
        cpu_request_cores=number("cpu_request_cores"),
        cpu_limit_cores=number("cpu_limit_cores"),
        memory_request_bytes=whole("memory_request_bytes"),
        memory_limit_bytes=whole("memory_limit_bytes"),
        jvm_max_heap_bytes=whole("jvm_max_heap_bytes"),
    )


def material_difference(
    refused: ProposedValues,
    rec_set: Mapping[str, Any],
    profiles: Mapping[str, Profile] | None = None,
) -> list[str]:
    """What in ``rec_set`` differs materially from the values of a PR a human closed.

    "Materially" is the engine's own rule (:func:`pipeline.core.engine.material_changes`)
    under each container's profile, with the refused values in the place of the values
    in force: a move of at least ``min_change_relative`` and the absolute minimum, or a
    value newly proposed. A container the refused PR did not cover counts as material.
    Returns one ``container: change`` line per difference; empty means keep it closed.
    """
    differences = []
    for rec in rec_set.get("recommendations") or ():
        container = str(rec["container"])
        recommended = {k: (rec.get("recommended") or {}).get(k) for k in _RESOURCE_FIELDS}
        if container not in refused:
            differences.append(f"{container}: not in the closed PR")
            continue
        profile = _profile_for(rec.get("profile", DEFAULT_PROFILE_NAME), profiles or {})
        for change in material_changes(_resources(refused[container]), recommended, profile):
            differences.append(f"{container}: {change.describe()}")
    return differences


class BranchMovedError(SinkError):
    """The remote branch moved between the sink's fetch and its push (someone pushed)."""


@dataclass(frozen=True)
class Publication:
    """What :meth:`PullRequestPublisher.publish` did, and the state to remember.

    ``state`` None means nothing new to remember (write nothing to the state topic).
    """

    result: SinkResult
    state: SinkState | None


class PullRequestPublisher:
    """Publishes recommendation sets as branches on a remote and PRs on a forge.

    ``repo`` is the sink's own clone (see :meth:`GitRepo.open_clone`); ``forge`` None
    pushes branches only. One publisher per sink; :meth:`publish` is synchronous (git
    and HTTP) and meant to run in a worker thread, one set at a time.
    """

    def __init__(
        self,
        repo: GitRepo,
        forge: Forge | None,
        *,
        remote: str = "origin",
        base_branch: str | None = None,
        author: CommitAuthor | None = None,
        labels: Sequence[str] = PR_LABELS,
        profiles: Mapping[str, Profile] | None = None,
        clock: Callable[[], float] = time.time,
        values_map: ValuesMap | None = None,
    ) -> None:
        self.repo = repo
        self.forge = forge
        self.remote = remote
        self.author = author or CommitAuthor()
        self.labels = tuple(labels)
        self.profiles = dict(profiles or {})
        self.clock = clock
        self.values_map = dict(values_map or {})
        self._base_branch = base_branch
        self._files_at: tuple[str, dict[str, str]] | None = None

    def refresh(self) -> None:
        """Fetch the remote (the base branch and the bot's branches) once."""
        self.repo.fetch(self.remote)

    @property
    def base_branch(self) -> str:
        """The branch PRs target: as configured, else the remote's HEAD."""
        if self._base_branch is None:
            self._base_branch = self.repo.remote_default_branch(self.remote)
        return self._base_branch

    def publish(
        self, rec_set: Mapping[str, Any], state: SinkState | None, *, fetch: bool = True
    ) -> Publication:
        """Decide and act for one set; see the module docstring for the rules.

        ``fetch`` False skips the fetch when the caller just did :meth:`refresh` for a
        batch. A push refused by its lease (someone pushed meanwhile) is decided again
        once after a fresh fetch.
        """
        workload, recommendations = _check_set(rec_set)
        set_hash = str(rec_set.get("hash", ""))
        if state is not None and state.set_hash == set_hash and state.status != "deferred":
            return Publication(
                self._result(workload, "unchanged", f"set already handled ({state.status})"),
                None,
            )
        if not recommendations:
            return Publication(self._result(workload, "unchanged", "no recommendations"), None)
        try:
            if fetch:
                self.refresh()
            try:
                return self._publish(workload, rec_set, state)
            except BranchMovedError:
                self.refresh()
                return self._publish(workload, rec_set, state)
        except RateLimitedError as error:
            retry = error.retry_after
            if retry is None:
                retry = OPEN_QUOTA_RETRY_SECONDS
            return self._deferred(workload, rec_set, state, retry, str(error))
        except ForgeUnavailableError as error:
            return self._deferred(workload, rec_set, state, 60.0, str(error))

    def _result(
        self,
        workload: WorkloadId,
        outcome: str,
        reason: str,
        *,
        commit: str | None = None,
        files: tuple[str, ...] = (),
        pull_request: int | None = None,
    ) -> SinkResult:
        return SinkResult(
            str(workload),
            branch_for(workload),
            commit,
            commit is not None,
            files,
            reason,
            outcome,
            pull_request,
        )

    def _deferred(
        self,
        workload: WorkloadId,
        rec_set: Mapping[str, Any],
        state: SinkState | None,
        retry_seconds: float,
        reason: str,
    ) -> Publication:
        now = self.clock()
        new_state = SinkState(
            workload=str(workload),
            set_hash=str(rec_set.get("hash", "")),
            status="deferred",
            pr_number=state.pr_number if state else None,
            proposed=state.proposed if state else {},
            pending_set=dict(rec_set),
            retry_after=now + retry_seconds,
            updated_at=now,
        )
        return Publication(
            self._result(workload, "deferred", f"retry in {retry_seconds:.0f} s: {reason}"),
            new_state,
        )

    def _state(
        self,
        workload: WorkloadId,
        rec_set: Mapping[str, Any],
        status: Any,
        pr_number: int | None,
        proposed: ProposedValues,
    ) -> SinkState:
        return SinkState(
            workload=str(workload),
            set_hash=str(rec_set.get("hash", "")),
            status=status,
            pr_number=pr_number,
            proposed=proposed,
            updated_at=self.clock(),
        )

    def _manifests_at(self, ref: str) -> dict[str, str]:
        """Every YAML file at ``ref``, read once per base commit (a batch shares it)."""
        commit = self.repo.resolve(ref)
        if self._files_at is None or self._files_at[0] != commit:
            self._files_at = (commit, manifest_files_at(self.repo, commit))
        return self._files_at[1]

    def _publish(
        self, workload: WorkloadId, rec_set: Mapping[str, Any], state: SinkState | None
    ) -> Publication:
        branch = branch_for(workload)
        base = self.base_branch
        base_ref = f"refs/remotes/{self.remote}/{base}"
        self.repo.resolve(base_ref)
        forge = self.forge
        pr: PullRequest | None = forge.find_pull_request(branch) if forge else None
        if forge is not None and pr is not None and pr.state == "closed":
            kept = self._keep_closed(forge, workload, rec_set, state, pr)
            if kept is not None:
                return kept
            pr = None
        elif pr is not None and pr.state != "open":
            pr = None  # merged: a new proposal is a new PR

        if forge is not None and pr is None:
            # Before any git work or push: a burst of sets for new workloads costs one
            # quota check each, and no branch is pushed that would get no PR.
            forge.check_new_pull_request_quota()

        proposal = propose(self._manifests_at(base_ref), rec_set, values_map=self.values_map)
        if proposal is None:
            return Publication(
                self._result(
                    workload,
                    "in-base",
                    f"{base} already says this",
                    pull_request=pr.number if pr else None,
                ),
                self._state(
                    workload,
                    rec_set,
                    "in-base",
                    pr.number if pr else None,
                    proposed_values(rec_set),
                ),
            )

        remote_ref = f"refs/remotes/{self.remote}/{branch}"
        remote_head = self.repo.resolve_optional(remote_ref)
        already_pushed = False
        if remote_head is not None:
            commits = self.repo.commits_between(base_ref, remote_head)
            foreign = [c for c in commits if not c.is_by(self.author.email)]
            if foreign:
                return self._human_branch(
                    workload, rec_set, state, pr, proposal=proposal, foreign_sha=foreign[0].sha
                )
            already_pushed = bool(commits) and commits[0].set_hash == rec_set.get("hash")

        commit = (
            None if already_pushed else self._push(branch, base_ref, proposal, rec_set, remote_head)
        )
        files = () if commit is None else tuple(sorted(proposal.files))
        proposed = proposed_values(rec_set)
        if forge is None:
            return Publication(
                self._result(workload, "pushed", f"pushed {branch}", commit=commit, files=files),
                self._state(workload, rec_set, "pushed", None, proposed),
            )
        if pr is None:
            pr = forge.create_pull_request(
                head_branch=branch,
                base_branch=base,
                title=proposal.title,
                body=proposal.body,
                labels=self.labels,
            )
            outcome, reason = "opened", f"opened PR #{pr.number}"
        else:
            if pr.title != proposal.title or pr.body_sha256 != body_digest(proposal.body):
                pr = forge.update_pull_request(pr.number, title=proposal.title, body=proposal.body)
            outcome, reason = "updated", f"updated PR #{pr.number}"
        return Publication(
            self._result(
                workload, outcome, reason, commit=commit, files=files, pull_request=pr.number
            ),
            self._state(workload, rec_set, "open", pr.number, proposed),
        )

    def _push(
        self,
        branch: str,
        base_ref: str,
        proposal: Proposal,
        rec_set: Mapping[str, Any],
        remote_head: str | None,
    ) -> str:
        """Rebuild ``branch`` as one commit on the base and push it with a lease.

        The lease is ``remote_head``, the head the caller checked was all the bot's, so
        a push that races a human's is refused (BranchMovedError) instead of winning.
        """
        if not branch.startswith(BRANCH_PREFIX):
            raise SinkError(f"refusing to push {branch}: not a daytwo branch")
        commit = self.repo.commit_on_base(
            branch,
            base_ref,
            proposal.files,
            message=commit_message(proposal.title, rec_set),
            author=self.author,
            signoff=True,
        )
        if commit is None:  # pragma: no cover - build_proposal saw a difference
            raise SinkError(f"{branch}: the patch made no change on {base_ref}")
        if not self.repo.push(branch, commit, expected=remote_head, remote=self.remote):
            raise BranchMovedError(f"{branch} moved on {self.remote} during the update")
        return commit

    def _keep_closed(
        self,
        forge: Forge,
        workload: WorkloadId,
        rec_set: Mapping[str, Any],
        state: SinkState | None,
        pr: PullRequest,
    ) -> Publication | None:
        """Keep a PR a human closed closed, unless this set differs materially from it.

        Returns the publication that keeps it closed, or None to propose anew. Compares
        with the values the closed PR proposed, from the sink state; without state for
        that PR (state lost) this set becomes the reference and nothing reopens now.
        """
        status = forge.pull_request_status(pr.number)
        if not status.closed_by_human:
            return None
        known = state is not None and state.pr_number == pr.number and bool(state.proposed)
        refused = state.proposed if known and state is not None else None
        differences = material_difference(refused, rec_set, self.profiles) if refused else []
        if differences:
            logger.info(
                "%s: material change since closed PR #%s: %s",
                workload,
                pr.number,
                "; ".join(differences),
            )
            return None
        why = (
            "no material change from what it proposed"
            if refused
            else "what it proposed is unknown (no sink state): this set is the reference now"
        )
        closer = status.closed_by or "a human"
        return Publication(
            self._result(
                workload,
                "closed-kept",
                f"PR #{pr.number} was closed by {closer}; {why}",
                pull_request=pr.number,
            ),
            self._state(
                workload, rec_set, "closed", pr.number, refused or proposed_values(rec_set)
            ),
        )

    def _human_branch(
        self,
        workload: WorkloadId,
        rec_set: Mapping[str, Any],
        state: SinkState | None,
        pr: PullRequest | None,
        *,
        proposal: Proposal,
        foreign_sha: str,
    ) -> Publication:
        """Someone else committed on the bot's branch: never overwrite; say so on the PR."""
        branch = branch_for(workload)
        if self.forge is not None and pr is not None:
            self.forge.comment(
                pr.number,
                f"daytwo has a newer recommendation for `{workload}` "
                f"(set `{str(rec_set.get('hash', ''))[:12]}`), but `{branch}` has commits "
                f"daytwo did not make (newest: `{foreign_sha[:12]}`), so daytwo leaves the "
                "branch alone. To let daytwo update it, drop those commits or close this "
                "PR. The new proposal:\n\n"
                f"**{proposal.title}**\n\n{proposal.body}",
            )
        where = f"commented on PR #{pr.number}" if pr is not None else "no open PR to comment on"
        return Publication(
            self._result(
                workload,
                "human-branch",
                f"{branch} has commits by someone else ({foreign_sha[:12]}); {where}",
                pull_request=pr.number if pr else None,
            ),
            self._state(
                workload,
                rec_set,
                "human-branch",
                pr.number if pr else (state.pr_number if state else None),
                state.proposed if state else {},
            ),
        )


def process_record(
    repo: GitRepo,
    value: bytes,
    *,
    base_branch: str | None = None,
    author: CommitAuthor | None = None,
    values_map: ValuesMap | None = None,
) -> SinkResult:
    """Dry run: decode one Kafka value (validated against the contract) and apply it."""
    rec_set = decode(RecommendationSet, value)
    return apply_recommendation_set(
        repo,
        rec_set.model_dump(mode="json"),
        base_branch=base_branch,
        author=author,
        values_map=values_map,
    )


#: Sends a dead letter: (key, value bytes) → awaited until the broker has it.
DeadletterPublisher = Callable[[bytes | None, bytes], Awaitable[None]]


@dataclass
class PublishTarget:
    """The real-mode half of :func:`handle_record`: a publisher and where state lives."""

    publisher: PullRequestPublisher
    store: SinkStateStore

    async def publish(self, rec_set: Mapping[str, Any], *, fetch: bool = True) -> SinkResult:
        """Publish in a worker thread, then write the new state before returning."""
        workload = str(rec_set["workload"])
        state = self.store.get(workload)
        publication = await asyncio.to_thread(self.publisher.publish, rec_set, state, fetch=fetch)
        if publication.state is not None:
            await self.store.put(publication.state)
        return publication.result


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
    target: PublishTarget | None = None,
    fetch: bool = True,
    values_map: ValuesMap | None = None,
) -> SinkResult | None:
    """Apply one record, or dead-letter it; never raises for a bad or unpatchable record.

    Why every exception is caught: one poisoned record must not stop the sink for all
    other workloads; it is kept (original bytes + reason) on the dead-letter topic and
    counted. Tombstones (value None, a deleted workload) are skipped. With ``target``
    the set is published for real (``repo`` is then unused), else applied as a dry run.
    """
    if value is None:
        return None
    try:
        if target is None:
            result = await asyncio.to_thread(
                process_record,
                repo,
                value,
                base_branch=base_branch,
                author=author,
                values_map=values_map,
            )
        else:
            rec_set = decode(RecommendationSet, value).model_dump(mode="json")
            result = await target.publish(rec_set, fetch=fetch)
    except Exception as error:  # every failure dead-letters (see docstring)
        stage = error.stage if isinstance(error, InvalidMessageError) else "apply"
        refused = refusal_reason(error)
        if refused is not None:
            # The repository, not the message, is at fault: say which file and why, so
            # someone can fix it; nothing was written to git or the forge.
            logger.warning(
                "refused %s (%s[%s]@%s, %s): %s; nothing written, dead-lettered",
                key.decode("utf-8", "replace") if key else "?",
                topic,
                partition,
                offset,
                refused,
                error,
            )
            metrics.count_refusal(refused)
        elif not isinstance(error, InvalidMessageError | SinkError):
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
    metrics.count(result)
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


async def retry_deferred(
    target: PublishTarget,
    *,
    clock: Callable[[], float],
    metrics: SinkMetrics,
    on_result: Callable[[SinkResult], None] | None = None,
) -> list[SinkResult]:
    """Publish again every deferred set whose wait is over (state says which, and holds it).

    Why from the state and not memory: a deferred set's offset is already committed, so
    after a restart only the state topic still has it.
    """
    now = clock()
    due = [
        state
        for state in target.store.all()
        if state.status == "deferred"
        and state.pending_set is not None
        and (state.retry_after is None or state.retry_after <= now)
    ]
    results: list[SinkResult] = []
    if not due:
        return results
    await asyncio.to_thread(target.publisher.refresh)  # one fetch for the whole round
    for state in sorted(due, key=lambda s: (s.retry_after or 0.0, s.workload)):
        if state.pending_set is None:  # pragma: no cover - filtered above
            continue
        try:
            result = await target.publish(state.pending_set, fetch=False)
        except (SinkError, ConfigError) as error:
            reason = refusal_reason(error) or "unpatchable"
            logger.warning(
                "refused the deferred set for %s (%s): %s; nothing written",
                state.workload,
                reason,
                error,
            )
            metrics.count_refusal(reason)
            await target.store.put(state.evolve(status="in-base", pending_set=None))
            continue
        metrics.count(result)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def _sink_repository(repo_path: Path | None, publisher: PullRequestPublisher | None) -> GitRepo:
    """The publisher's clone for real, else the local repository of the dry run."""
    if publisher is not None:
        return publisher.repo
    if repo_path is None:
        raise ConfigError("the dry run needs the local GitOps repository (repo_path)")
    return GitRepo(repo_path)


async def run_sink(
    bootstrap: str,
    repo_path: Path | None,
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
    publisher: PullRequestPublisher | None = None,
    state_topic: str | None = None,
    values_map: ValuesMap | None = None,
) -> None:
    """Consume recommendation sets until ``stop_event`` is set.

    Without ``publisher`` this is the dry run on the local repository at ``repo_path``
    (required then). With it, sets are published for real (``repo_path`` is unused) and
    the sink's memory lives on ``state_topic`` (created if missing; required), read in
    full before the first record is handled. ``values_map`` maps workloads to Helm
    values in the dry run; the publisher carries its own.

    Offsets are committed only after every record of a batch was applied (its state
    written) or dead-lettered, so a crash replays (harmlessly: applying is idempotent)
    instead of losing a recommendation. ``idempotent=False`` is for the embedded broker
    only, whose in-memory storage answers aiokafka's InitProducerId with UnknownError
    (see agents/publisher.py); the producers keep ``acks="all"`` either way.
    """
    repo = _sink_repository(repo_path, publisher)
    metrics = SinkMetrics.for_registry(registry)
    target: PublishTarget | None = None
    store: KafkaStateStore | None = None
    if publisher is not None:
        if state_topic is None:
            raise ConfigError("publishing for real needs the sink-state topic (state_topic)")
        await ensure_topics(bootstrap, [dataclasses.replace(SINK_STATE_SPEC, name=state_topic)])
        store = await KafkaStateStore.open(bootstrap, state_topic, idempotent=idempotent)
        target = PublishTarget(publisher, store)
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

    try:
        await _start(producer, bootstrap)
        try:
            await _start(consumer, bootstrap)
            try:
                while not stop_event.is_set():
                    batches = await consumer.getmany(
                        timeout_ms=poll_timeout_ms, max_records=max_records
                    )
                    fetched = False
                    if target is not None and batches:
                        await asyncio.to_thread(target.publisher.refresh)
                        fetched = True
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
                                target=target,
                                fetch=not fetched,
                                values_map=values_map,
                            )
                    if batches:
                        await consumer.commit()
                    if target is not None:
                        await retry_deferred(
                            target, clock=clock, metrics=metrics, on_result=on_result
                        )
            finally:
                await consumer.stop()
        finally:
            await producer.stop()
    finally:
        if store is not None:
            await store.close()


# --------------------------------------------------------------------------- from settings


def forge_tokens(settings: Settings, *, clock: Callable[[], float] = time.time) -> TokenProvider:
    """Where the forge token comes from: a GitHub App, else ``$<forge_token_env>`` / file.

    One provider serves the forge client and git over https alike, so an App's
    installation token is refreshed for both. Never logged.
    """
    if settings.forge_kind == "github" and settings.github_app_id:
        from pipeline.prsink.github import (  # noqa: PLC0415 - only for GitHub Apps
            GITHUB_API_URL,
            GitHubAppTokens,
            load_private_key,
        )

        if settings.github_app_private_key_file is None:
            raise ConfigError("a GitHub App needs DAYTWO_GITHUB_APP_PRIVATE_KEY_FILE")
        owner, name = _github_repository(settings)
        return GitHubAppTokens(
            app_id=settings.github_app_id,
            private_key=load_private_key(settings.github_app_private_key_file),
            owner=owner,
            repo=name,
            installation_id=settings.github_app_installation_id,
            base_url=settings.forge_api_url or GITHUB_API_URL,
            clock=clock,
        )
    return StaticToken(load_token(env_var=settings.forge_token_env, file=settings.forge_token_file))


def _github_repository(settings: Settings) -> tuple[str, str]:
    owner, _, name = (settings.forge_repository or "").partition("/")
    if not owner or not name or "/" in name:
        raise ConfigError(
            "DAYTWO_FORGE_REPOSITORY must be 'owner/name' on GitHub, got "
            f"{settings.forge_repository!r}"
        )
    return owner, name


def build_forge(
    settings: Settings,
    tokens: TokenProvider,
    *,
    clock: Callable[[], float] = time.time,
) -> Forge | None:
    """The forge client the settings describe, or None when no forge is configured."""
    from pipeline.prsink.github import GITHUB_API_URL, GitHubForge  # noqa: PLC0415
    from pipeline.prsink.gitlab import GITLAB_API_URL, GitLabForge  # noqa: PLC0415

    if settings.forge_kind is None:
        return None
    if not settings.forge_repository:
        raise ConfigError(
            "a forge needs its repository: set DAYTWO_FORGE_REPOSITORY (GitHub 'owner/name', "
            "GitLab project path or id)"
        )
    limits = WriteLimits(
        max_open_pull_requests=settings.pr_max_open,
        max_new_pull_requests_per_hour=settings.pr_max_new_per_hour,
    )
    if settings.forge_kind == "gitlab":
        return GitLabForge(
            settings.forge_repository,
            tokens,
            base_url=settings.forge_api_url or GITLAB_API_URL,
            limits=limits,
            clock=clock,
            bot_usernames=settings.forge_bot_logins,
        )
    owner, name = _github_repository(settings)
    return GitHubForge(
        owner,
        name,
        tokens,
        base_url=settings.forge_api_url or GITHUB_API_URL,
        limits=limits,
        clock=clock,
        bot_logins=settings.forge_bot_logins,
    )


def load_values_map(path: Path | None) -> dict[str, ValuesRef]:
    """Read the Helm values map (``DAYTWO_HELM_VALUES_MAP``): ``{workload id[:container]:
    "values.yaml#key.path.to.resources"}``; errors name the file and the entry."""
    if path is None:
        return {}
    try:
        data = YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))
    except (OSError, YAMLError) as exc:
        raise ConfigError(f"cannot read the Helm values map {path}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: the Helm values map must map workload ids to 'file#path'")
    refs: dict[str, ValuesRef] = {}
    for key, value in data.items():
        if not isinstance(value, str):
            raise ConfigError(f"{path}: entry {key!r} must be a 'values.yaml#path' string")
        try:
            refs[str(key)] = ValuesRef.parse(value)
        except ConfigError as exc:
            raise ConfigError(f"{path}: entry {key!r}: {exc}") from None
    return refs


def build_publisher(
    settings: Settings,
    *,
    profiles: Mapping[str, Profile] | None = None,
    clock: Callable[[], float] = time.time,
) -> PullRequestPublisher:
    """The real-mode publisher the settings describe: the sink's clone and the forge.

    Needs ``gitops_remote_url``. Git over https authenticates with the forge's token
    (user ``x-access-token`` on GitHub, ``oauth2`` on GitLab, unless ``git_username``
    says otherwise) through GIT_ASKPASS; a remote without https needs no token.
    """
    if settings.gitops_remote_url is None:
        raise ConfigError("publishing needs DAYTWO_GITOPS_REMOTE_URL (a path or URL)")
    needs_token = settings.forge_kind is not None or settings.gitops_remote_url.startswith(
        "https://"
    )
    tokens = forge_tokens(settings, clock=clock) if needs_token else None
    forge = build_forge(settings, tokens, clock=clock) if tokens is not None else None
    credentials: GitCredentials | None = None
    if tokens is not None and settings.gitops_remote_url.startswith("https://"):
        username = settings.git_username or (
            "oauth2" if settings.forge_kind == "gitlab" else "x-access-token"
        )
        credentials = GitCredentials(username, tokens.token)
    clone_dir = settings.gitops_clone_dir or settings.data_dir / "gitops-clone"
    repo = GitRepo.open_clone(settings.gitops_remote_url, clone_dir, credentials=credentials)
    return PullRequestPublisher(
        repo,
        forge,
        base_branch=settings.gitops_base_branch,
        author=CommitAuthor(settings.git_author_name, settings.git_author_email),
        profiles=profiles,
        clock=clock,
        values_map=load_values_map(settings.helm_values_map),
    )
