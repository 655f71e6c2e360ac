"""GitHub REST client for the PR sink (github.com or GitHub Enterprise Server).

Implements :class:`pipeline.prsink.forge.Forge` with the documented REST endpoints
(API version ``2022-11-28``) over httpx. The base URL and the transport are injected:
GitHub Enterprise lives at ``https://HOST/api/v3``, and the contract tests point the
client at a Prism mock of GitHub's published OpenAPI description.

Authentication is a token (:class:`~pipeline.prsink.forge.StaticToken`) or a GitHub App
installation token (:class:`GitHubAppTokens`), which is what an organisation should
give a bot: scoped to one repository, short-lived, and not tied to a person.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import jwt

from pipeline.prsink.forge import (
    PAGE_SIZE,
    Clock,
    CommitIdentity,
    ForgeAuthError,
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
    redact,
    require_list,
    require_mapping,
)

GITHUB_API_URL = "https://api.github.com"
GITHUB_API_VERSION = "2022-11-28"
GITHUB_MEDIA_TYPE = "application/vnd.github+json"


def github_headers() -> dict[str, str]:
    """Headers every GitHub request carries (media type and pinned API version)."""
    return {
        "Accept": GITHUB_MEDIA_TYPE,
        "X-GitHub-Api-Version": GITHUB_API_VERSION,
        "User-Agent": "daytwo-prsink",
    }


def _bearer(secret: Secret) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret.reveal()}"}


def _login(user: Any) -> str | None:
    if isinstance(user, Mapping) and isinstance(user.get("login"), str):
        return str(user["login"])
    return None


def _mapping_or_empty(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def parse_pull_request(payload: Any) -> PullRequest:
    """A GitHub ``pull-request`` / ``pull-request-simple`` object as a :class:`PullRequest`."""
    pr = require_mapping(payload, "a GitHub pull request")
    head = require_mapping(pr.get("head"), "a pull request's head")
    base = require_mapping(pr.get("base"), "a pull request's base")
    body = pr.get("body") or ""
    state: PullRequestState
    if pr.get("merged_at") or pr.get("merged") is True:
        state = "merged"
    elif pr.get("state") == "open":
        state = "open"
    else:
        state = "closed"
    labels = tuple(
        str(label["name"])
        for label in pr.get("labels") or ()
        if isinstance(label, Mapping) and "name" in label
    )
    try:
        return PullRequest(
            number=int(pr["number"]),
            url=str(pr["html_url"]),
            state=state,
            head_branch=str(head["ref"]),
            base_branch=str(base["ref"]),
            title=str(pr["title"]),
            body_sha256=body_digest(str(body)),
            head_sha=str(head["sha"]) if head.get("sha") else None,
            labels=labels,
            body=str(body),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ForgeError(f"GitHub pull request without a usable {error}") from None


def parse_commit(payload: Any) -> CommitIdentity:
    """A GitHub ``commit`` object (from ``/pulls/{n}/commits``) as a :class:`CommitIdentity`."""
    entry = require_mapping(payload, "a GitHub commit")
    git_commit = require_mapping(entry.get("commit"), "a commit's git data")
    author = _mapping_or_empty(git_commit.get("author"))
    committer = _mapping_or_empty(git_commit.get("committer"))
    return CommitIdentity(
        sha=str(entry.get("sha", "")),
        author_name=author.get("name"),
        author_email=author.get("email"),
        committer_email=committer.get("email"),
        author_login=_login(entry.get("author")),
        committer_login=_login(entry.get("committer")),
    )


class GitHubForge(RestForge):
    """:class:`~pipeline.prsink.forge.Forge` on one GitHub repository.

    ``bot_logins`` names the accounts that are the bot itself (e.g. ``daytwo[bot]``);
    any other account that closed a PR is a human. ``head_prefix`` selects the bot's
    branches when counting open PRs for the quota.
    """

    def __init__(
        self,
        owner: str,
        repo: str,
        tokens: TokenProvider | Secret,
        *,
        base_url: str = GITHUB_API_URL,
        limits: WriteLimits | None = None,
        clock: Clock = time.time,
        sleep: Sleep = time.sleep,
        transport: httpx.BaseTransport | None = None,
        bot_logins: Iterable[str] = (),
        head_prefix: str = "daytwo/",
        timeout: float = 30.0,
    ) -> None:
        super().__init__(
            forge_name="GitHub",
            base_url=base_url,
            tokens=tokens,
            auth_headers=_bearer,
            default_headers=github_headers(),
            head_prefix=head_prefix,
            limits=limits,
            clock=clock,
            sleep=sleep,
            transport=transport,
            timeout=timeout,
        )
        self.owner = owner
        self.repo = repo
        self.bot_logins = frozenset(bot_logins)
        self._repo_path = f"/repos/{quote(owner, safe='')}/{quote(repo, safe='')}"

    def __repr__(self) -> str:
        return f"GitHubForge({self.owner}/{self.repo})"

    # -- reads

    def list_pull_requests(self, head_branch: str) -> list[PullRequest]:
        """Every PR (any state) whose head is ``owner:head_branch``, newest first."""
        payload = self.http.get(
            f"{self._repo_path}/pulls",
            {
                "head": f"{self.owner}:{head_branch}",
                "state": "all",
                "sort": "created",
                "direction": "desc",
                "per_page": PAGE_SIZE,
            },
        )
        return [parse_pull_request(item) for item in require_list(payload, "a list of PRs")]

    def _pull_requests_from(self, head_branch: str) -> list[PullRequest]:
        return self.list_pull_requests(head_branch)

    def get_pull_request(self, number: int) -> PullRequest:
        """One PR by number."""
        return parse_pull_request(self.http.get(f"{self._repo_path}/pulls/{number}"))

    def _open_page(self, page: int) -> list[Any]:
        return require_list(
            self.http.get(
                f"{self._repo_path}/pulls", {"state": "open", "per_page": PAGE_SIZE, "page": page}
            ),
            "a list of PRs",
        )

    def _head_branch_of(self, item: Any) -> str:
        return parse_pull_request(item).head_branch

    def pull_request_status(self, number: int) -> PullRequestStatus:
        """The PR, who closed/merged it, and its newest commit (three GETs)."""
        raw = require_mapping(self.http.get(f"{self._repo_path}/pulls/{number}"), "a PR")
        pr = parse_pull_request(raw)
        merged_by = _login(raw.get("merged_by"))
        closed_by: str | None = None
        if pr.state == "closed":
            # Only the issue view of a PR names who closed it.
            issue = require_mapping(self.http.get(f"{self._repo_path}/issues/{number}"), "an issue")
            closed_by = _login(issue.get("closed_by"))
        return PullRequestStatus(
            pull_request=pr,
            closed_by=closed_by,
            closed_by_human=pr.state == "closed" and closed_by not in self.bot_logins,
            merged_by=merged_by,
            last_commit=self._last_commit(number, raw.get("commits")),
        )

    def _last_commit(self, number: int, commit_count: Any) -> CommitIdentity | None:
        # GitHub lists a PR's commits oldest first; the last page holds the newest.
        count = commit_count if isinstance(commit_count, int) and commit_count > 0 else 1
        page = math.ceil(count / PAGE_SIZE)
        commits = require_list(
            self.http.get(
                f"{self._repo_path}/pulls/{number}/commits",
                {"per_page": PAGE_SIZE, "page": page},
            ),
            "a list of commits",
        )
        return parse_commit(commits[-1]) if commits else None

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
        """Open a PR (quota permitting), then label it."""
        payload = self._create_within_quota(
            f"{self._repo_path}/pulls",
            {"title": title, "head": head_branch, "base": base_branch, "body": body},
        )
        pr = parse_pull_request(payload)
        if labels:
            self.add_labels(pr.number, labels)
        return pr

    def update_pull_request(
        self, number: int, *, title: str | None = None, body: str | None = None
    ) -> PullRequest:
        """Replace the title and/or body."""
        changes = self._title_and_body(title, body)
        return parse_pull_request(
            self.http.write("PATCH", f"{self._repo_path}/pulls/{number}", changes)
        )

    def add_labels(self, number: int, labels: Sequence[str]) -> None:
        """Add labels (GitHub creates missing ones)."""
        if labels:
            self.http.write(
                "POST", f"{self._repo_path}/issues/{number}/labels", {"labels": list(labels)}
            )

    def comment(self, number: int, body: str) -> None:
        """Comment on the PR's conversation."""
        self.http.write("POST", f"{self._repo_path}/issues/{number}/comments", {"body": body})


# --------------------------------------------------------------------------- GitHub App


def load_private_key(path: Path) -> Secret:
    """Read a GitHub App's private key (PEM) from a file, as a :class:`Secret`."""
    try:
        return Secret(path.read_text(encoding="utf-8"), str(path))
    except OSError as error:
        raise ForgeAuthError(
            f"cannot read the GitHub App private key {path}: {error.strerror}"
        ) from None


def app_jwt(app_id: str, private_key: Secret, *, now: float) -> str:
    """The short JWT (RS256, 9 minutes, issued 60 s back for clock skew) an App signs in with.

    GitHub accepts at most 10 minutes; the back-dated ``iat`` covers a server clock
    slightly ahead of ours.
    """
    issued = int(now) - 60
    try:
        return jwt.encode(
            {"iat": issued, "exp": issued + 600 - 60, "iss": app_id},
            private_key.reveal(),
            algorithm="RS256",
        )
    except (ValueError, TypeError, jwt.PyJWTError) as error:
        raise ForgeAuthError(
            f"the GitHub App private key from {private_key.source} is not a usable RSA PEM key "
            f"({type(error).__name__})"
        ) from None


class GitHubAppTokens:
    """Installation tokens for a GitHub App, refreshed five minutes before they expire.

    Given the App id and its private key, signs a JWT, finds the installation on the
    repository (unless ``installation_id`` is given) and exchanges the JWT for an
    installation token via ``POST /app/installations/{id}/access_tokens``.
    """

    def __init__(
        self,
        *,
        app_id: str,
        private_key: Secret,
        owner: str,
        repo: str,
        installation_id: int | None = None,
        base_url: str = GITHUB_API_URL,
        transport: httpx.BaseTransport | None = None,
        clock: Clock = time.time,
        timeout: float = 30.0,
    ) -> None:
        self.app_id = app_id
        self.owner = owner
        self.repo = repo
        self.installation_id = installation_id
        self._private_key = private_key
        self._clock = clock
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers=github_headers(),
            transport=transport,
            timeout=timeout,
        )
        self._token: Secret | None = None
        self._expires_at = 0.0

    def __repr__(self) -> str:
        return f"GitHubAppTokens(app_id={self.app_id!r}, repo={self.owner}/{self.repo})"

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    def token(self) -> Secret:
        """A valid installation token, fetched or refreshed when needed."""
        now = self._clock()
        if self._token is None or now >= self._expires_at - 300.0:
            self._token, self._expires_at = self._exchange(now)
        return self._token

    def _app_request(self, method: str, path: str, signed: str) -> Mapping[str, Any]:
        try:
            response = self._client.request(
                method, path, headers={"Authorization": f"Bearer {signed}"}
            )
        except httpx.TransportError as error:
            raise ForgeAuthError(
                f"GitHub App token exchange: {method} {path} failed: {type(error).__name__}"
            ) from None
        if response.is_error:
            raise ForgeAuthError(
                f"GitHub App token exchange: {method} {path} answered {response.status_code}: "
                f"{redact(response.text[:200], signed)}; check the App id, key and installation"
            )
        return require_mapping(response.json(), f"the answer to {method} {path}")

    def _exchange(self, now: float) -> tuple[Secret, float]:
        signed = app_jwt(self.app_id, self._private_key, now=now)
        if self.installation_id is None:
            installation = self._app_request(
                "GET",
                f"/repos/{quote(self.owner, safe='')}/{quote(self.repo, safe='')}/installation",
                signed,
            )
            self.installation_id = int(installation["id"])
        answer = self._app_request(
            "POST", f"/app/installations/{self.installation_id}/access_tokens", signed
        )
        token = answer.get("token")
        if not isinstance(token, str) or not token:
            raise ForgeAuthError("GitHub App token exchange answered without a token")
        expires = answer.get("expires_at")
        try:
            expires_at = datetime.fromisoformat(str(expires)).timestamp()
        except ValueError:
            expires_at = now + 3600.0  # GitHub's documented lifetime
        return Secret(token, f"GitHub App {self.app_id} installation token"), expires_at
