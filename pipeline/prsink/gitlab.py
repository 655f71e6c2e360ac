"""GitLab REST v4 client for the PR sink: merge requests as the sink's pull requests.

Implements :class:`pipeline.prsink.forge.Forge` on one project (numeric id or
``group/sub/project`` path, URL-encoded into one path segment as GitLab requires). The
base URL includes ``/api/v4`` (``https://gitlab.example.com/api/v4`` for self-managed),
and the transport is injected for tests. Authentication is a personal, project or
group access token in the ``PRIVATE-TOKEN`` header.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from pipeline.prsink.forge import (
    PAGE_SIZE,
    Clock,
    CommitIdentity,
    ForgeError,
    PullRequest,
    PullRequestState,
    PullRequestStatus,
    RestForge,
    Secret,
    Sleep,
    TokenProvider,
    WriteLimits,
    body_digest,
    require_list,
    require_mapping,
)

GITLAB_API_URL = "https://gitlab.com/api/v4"
#: GitLab's merge request states mapped onto the sink's three. ``locked`` is a short
#: transitional state while a merge runs: still open as far as the sink is concerned.
_STATES: dict[str, PullRequestState] = {
    "opened": "open",
    "locked": "open",
    "closed": "closed",
    "merged": "merged",
}


def _private_token(secret: Secret) -> dict[str, str]:
    return {"PRIVATE-TOKEN": secret.reveal()}


def _username(user: Any) -> str | None:
    if isinstance(user, Mapping) and isinstance(user.get("username"), str):
        return str(user["username"])
    return None


def project_path_segment(project: str | int) -> str:
    """A project id or ``group/sub/project`` path as one URL path segment (``/`` → ``%2F``)."""
    return quote(str(project), safe="")


def parse_merge_request(payload: Any) -> PullRequest:
    """A GitLab merge request object as a :class:`~pipeline.prsink.forge.PullRequest`."""
    mr = require_mapping(payload, "a GitLab merge request")
    body = mr.get("description") or ""
    state = _STATES.get(str(mr.get("state")))
    if state is None:
        raise ForgeError(f"GitLab merge request in an unknown state {mr.get('state')!r}")
    diff_refs = mr.get("diff_refs")
    head_sha = mr.get("sha") or (
        diff_refs.get("head_sha") if isinstance(diff_refs, Mapping) else None
    )
    labels = tuple(
        str(label["name"] if isinstance(label, Mapping) else label)
        for label in mr.get("labels") or ()
    )
    try:
        return PullRequest(
            number=int(mr["iid"]),
            url=str(mr["web_url"]),
            state=state,
            head_branch=str(mr["source_branch"]),
            base_branch=str(mr["target_branch"]),
            title=str(mr["title"]),
            body_sha256=body_digest(str(body)),
            head_sha=str(head_sha) if head_sha else None,
            labels=labels,
            body=str(body),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ForgeError(f"GitLab merge request without a usable {error}") from None


def parse_commit(payload: Any) -> CommitIdentity:
    """A GitLab commit object (from ``/merge_requests/:iid/commits``)."""
    commit = require_mapping(payload, "a GitLab commit")
    return CommitIdentity(
        sha=str(commit.get("id", "")),
        author_name=commit.get("author_name"),
        author_email=commit.get("author_email"),
        committer_email=commit.get("committer_email"),
    )


class GitLabForge(RestForge):
    """:class:`~pipeline.prsink.forge.Forge` on one GitLab project (merge requests).

    ``bot_usernames`` names the bot's own accounts (a project access token's bot user,
    e.g. ``project_42_bot_…``); a merge request closed by anyone else was closed by a human.
    """

    body_field = "description"

    def __init__(
        self,
        project: str | int,
        tokens: TokenProvider | Secret,
        *,
        base_url: str = GITLAB_API_URL,
        limits: WriteLimits | None = None,
        clock: Clock = time.time,
        sleep: Sleep = time.sleep,
        transport: httpx.BaseTransport | None = None,
        bot_usernames: Iterable[str] = (),
        head_prefix: str = "daytwo/",
        timeout: float = 30.0,
    ) -> None:
        super().__init__(
            forge_name="GitLab",
            base_url=base_url,
            tokens=tokens,
            auth_headers=_private_token,
            default_headers={"Accept": "application/json", "User-Agent": "daytwo-prsink"},
            head_prefix=head_prefix,
            limits=limits,
            clock=clock,
            sleep=sleep,
            transport=transport,
            timeout=timeout,
        )
        self.project = str(project)
        self.bot_usernames = frozenset(bot_usernames)
        self._mrs = f"/projects/{project_path_segment(project)}/merge_requests"

    def __repr__(self) -> str:
        return f"GitLabForge({self.project})"

    # -- reads

    def list_merge_requests(self, source_branch: str) -> list[PullRequest]:
        """Every merge request (any state) from ``source_branch``, newest first."""
        payload = self.http.get(
            self._mrs,
            {
                "source_branch": source_branch,
                "state": "all",
                "order_by": "created_at",
                "sort": "desc",
                "per_page": PAGE_SIZE,
            },
        )
        return [parse_merge_request(item) for item in require_list(payload, "a list of MRs")]

    def _pull_requests_from(self, head_branch: str) -> list[PullRequest]:
        return self.list_merge_requests(head_branch)

    def _open_page(self, page: int) -> list[Any]:
        return require_list(
            self.http.get(self._mrs, {"state": "opened", "per_page": PAGE_SIZE, "page": page}),
            "a list of MRs",
        )

    def _head_branch_of(self, item: Any) -> str:
        return str(require_mapping(item, "an MR").get("source_branch", ""))

    def pull_request_status(self, number: int) -> PullRequestStatus:
        """The MR with who closed/merged it (one GET) and its newest commit (one GET)."""
        raw = require_mapping(self.http.get(f"{self._mrs}/{number}"), "a merge request")
        mr = parse_merge_request(raw)
        closed_by = _username(raw.get("closed_by")) if mr.state == "closed" else None
        # GitLab lists a merge request's commits newest first.
        commits = require_list(
            self.http.get(f"{self._mrs}/{number}/commits", {"per_page": 1}), "a list of commits"
        )
        return PullRequestStatus(
            pull_request=mr,
            closed_by=closed_by,
            closed_by_human=mr.state == "closed" and closed_by not in self.bot_usernames,
            merged_by=_username(raw.get("merged_by")),
            last_commit=parse_commit(commits[0]) if commits else None,
        )

    # -- writes

    def create_pull_request(
        self,
        *,
        head_branch: str,
        base_branch: str,
        title: str,
        body: str,
        labels: Sequence[str] = (),
    ) -> PullRequest:
        """Open a merge request with its labels in one call (quota permitting)."""
        request: dict[str, Any] = {
            "source_branch": head_branch,
            "target_branch": base_branch,
            "title": title,
            "description": body,
            "remove_source_branch": True,
        }
        if labels:
            request["labels"] = ",".join(labels)
        return parse_merge_request(self._create_within_quota(self._mrs, request))

    def update_pull_request(
        self, number: int, *, title: str | None = None, body: str | None = None
    ) -> PullRequest:
        """Replace the title and/or description."""
        changes = self._title_and_body(title, body)
        return parse_merge_request(self.http.write("PUT", f"{self._mrs}/{number}", changes))

    def add_labels(self, number: int, labels: Sequence[str]) -> None:
        """Add labels, keeping existing ones (``add_labels`` on the update call)."""
        if labels:
            self.http.write("PUT", f"{self._mrs}/{number}", {"add_labels": ",".join(labels)})

    def comment(self, number: int, body: str) -> None:
        """Add a note (comment) to the merge request."""
        self.http.write("POST", f"{self._mrs}/{number}/notes", {"body": body})
