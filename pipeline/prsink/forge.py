"""What the PR sink needs from a forge (GitHub, GitLab), and the rules every client obeys.

The sink speaks to one :class:`Forge`; :mod:`pipeline.prsink.github` and
:mod:`pipeline.prsink.gitlab` implement it over REST. Everything the two share lives
here, so both behave alike:

* small frozen values for what a forge answers (:class:`PullRequest`,
  :class:`PullRequestStatus`, :class:`CommitIdentity`);
* one error tree under :class:`pipeline.errors.DaytwoError` (:class:`ForgeError`), with
  :class:`RateLimitedError` and :class:`PrQuotaExceededError` for the sink to count and retry later;
* :class:`Secret` and :func:`load_token`: a token read from an environment variable or a
  file, which never shows up in a repr, a log line or an exception message;
* :class:`WriteLimiter`: writes one at a time and spaced, at most N open and M new PRs
  per hour, and ``Retry-After`` / rate-limit reset headers honoured with a sleep function
  passed in (tests never sleep);
* :class:`ForgeHttp`: the thin httpx session both clients use (injectable transport and
  base URL, so tests talk to ``httpx.MockTransport`` or a local Prism mock server);
* :class:`RestForge`: the base of both clients (session and limiter set up alike, the
  same choice of a branch's PR, open-PR counting and quota-guarded creation).
"""

from __future__ import annotations

import email.utils
import hashlib
import logging
import os
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import httpx

from pipeline.errors import DaytwoError

logger = logging.getLogger(__name__)

PullRequestState = Literal["open", "closed", "merged"]
Clock = Callable[[], float]
Sleep = Callable[[float], None]

#: Page size of the forges' list endpoints (both cap it at 100).
PAGE_SIZE = 100
#: How many pages of open PRs are counted for the open quota (10,000 PRs).
MAX_OPEN_PAGES = 100

#: GitHub asks integrators to wait at least a minute after a secondary rate limit that
#: names no reset time, and to back off exponentially when it repeats.
DEFAULT_BACKOFF_SECONDS = 60.0


# --------------------------------------------------------------------------- errors


class ForgeError(DaytwoError):
    """A forge (GitHub, GitLab) call failed; the message says which call and what to do."""


class ForgeAuthError(ForgeError):
    """The token is missing, unreadable, or rejected (401/403): fix the token or its scopes."""


class ForgeNotFoundError(ForgeError):
    """The repository, project or pull request does not exist or the token cannot see it."""


class ForgeRejectedError(ForgeError):
    """The forge refused the request as invalid or conflicting (400/409/422): a PR exists."""


class ForgeUnavailableError(ForgeError):
    """The forge could not be reached or answered 5xx; retry later."""


class RateLimitedError(ForgeError):
    """A write must wait: the forge's rate limit, or daytwo's own PR quota.

    ``retry_after`` is the number of seconds after which trying again may succeed, or
    None when only a state change (a PR merged or closed) frees the quota.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PrQuotaExceededError(RateLimitedError):
    """daytwo's own quota refused a new PR: ``kind`` is ``"open"`` or ``"hourly"``.

    Why a quota at all: a burst of recommendations (first run on a big cluster) must not
    bury reviewers under hundreds of PRs; the rest wait for the next cycle.
    """

    def __init__(
        self,
        message: str,
        *,
        kind: Literal["open", "hourly"],
        limit: int,
        retry_after: float | None,
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.kind = kind
        self.limit = limit


# --------------------------------------------------------------------------- values


def body_digest(body: str) -> str:
    """SHA-256 hex of a PR body: compare bodies without keeping or logging them."""
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class PullRequest:
    """One pull (GitHub) or merge (GitLab) request as the sink needs it.

    ``number`` is GitHub's PR number or GitLab's project-scoped ``iid``. ``state`` folds
    the forges' vocabularies into open / closed (without merge) / merged.
    """

    number: int
    url: str
    state: PullRequestState
    head_branch: str
    base_branch: str
    title: str
    body_sha256: str
    head_sha: str | None = None
    labels: tuple[str, ...] = ()
    body: str = field(default="", repr=False)


@dataclass(frozen=True)
class CommitIdentity:
    """Who made the newest commit on a PR's branch, as far as the forge tells.

    Neither forge's REST API says who *pushed*; the newest commit's author and committer
    are the best evidence. ``*_login`` is the forge account linked to the e-mail, if any.
    """

    sha: str
    author_name: str | None
    author_email: str | None
    committer_email: str | None = None
    author_login: str | None = None
    committer_login: str | None = None


@dataclass(frozen=True)
class PullRequestStatus:
    """A PR plus what the hygiene rules need: who closed or merged it, the newest commit.

    ``closed_by_human`` is True for a PR closed without merge by anyone but the bot
    (daytwo never closes PRs, so the forge's silence about who did counts as human).
    """

    pull_request: PullRequest
    closed_by: str | None
    closed_by_human: bool
    merged_by: str | None
    last_commit: CommitIdentity | None

    def last_commit_is_by(self, email_address: str) -> bool | None:
        """Whether the newest commit was authored and committed with this e-mail.

        None when the forge did not say (no commits listed). The sink passes its own
        commit e-mail: False means a human pushed to the bot's branch, so never overwrite.
        """
        commit = self.last_commit
        if commit is None:
            return None
        wanted = email_address.casefold()
        emails = {e.casefold() for e in (commit.author_email, commit.committer_email) if e}
        return bool(emails) and emails == {wanted}


@runtime_checkable
class Forge(Protocol):
    """The calls the PR sink makes on a forge; GitHub and GitLab clients implement them.

    Every write goes through one :class:`WriteLimiter`, so a caller may call these from
    several threads; writes still reach the forge one at a time.
    """

    def find_pull_request(self, head_branch: str) -> PullRequest | None:
        """The open PR from ``head_branch``, else the newest closed/merged one, else None."""
        ...

    def create_pull_request(
        self,
        *,
        head_branch: str,
        base_branch: str,
        title: str,
        body: str,
        labels: Sequence[str] = (),
    ) -> PullRequest:
        """Open a PR; raises :class:`PrQuotaExceededError` when the quota refuses it."""
        ...

    def update_pull_request(
        self, number: int, *, title: str | None = None, body: str | None = None
    ) -> PullRequest:
        """Replace the title and/or body of an existing PR."""
        ...

    def add_labels(self, number: int, labels: Sequence[str]) -> None:
        """Add labels to a PR, keeping the ones it has."""
        ...

    def comment(self, number: int, body: str) -> None:
        """Add a comment (superseded, or a human pushed to the branch)."""
        ...

    def pull_request_status(self, number: int) -> PullRequestStatus:
        """The PR with who closed or merged it and the newest commit's identity."""
        ...

    def check_new_pull_request_quota(self) -> None:
        """Raise :class:`PrQuotaExceededError` if a new PR would be refused now.

        The sink calls this before pushing a new branch, so it pushes no branch that
        would get no PR.
        """
        ...


# --------------------------------------------------------------------------- secrets


class Secret:
    """A token or private key that never prints itself.

    ``repr``/``str``/f-strings show only where it came from; :meth:`reveal` is the one
    way to the value, called where the HTTP header or JWT is built. Not picklable, so it
    cannot leak through a multiprocessing queue or a cache file either.
    """

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str) -> None:
        if not value:
            raise ForgeAuthError(f"the secret from {source} is empty")
        self._value = value
        self.source = source

    def reveal(self) -> str:
        """The secret value; use it only to build a request, never to log."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret(source={self.source!r})"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("a Secret is not picklable")


def load_token(
    *,
    env_var: str | None = None,
    file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Secret:
    """Read a forge token from ``$env_var`` (first) or ``file`` (trailing newline dropped).

    Why both: CI and local runs set a variable; Kubernetes mounts secrets as files.
    Raises :class:`ForgeAuthError` naming where it looked, never what it found.
    """
    variables = os.environ if environ is None else environ
    if env_var:
        from_env = variables.get(env_var, "").strip()
        if from_env:
            return Secret(from_env, f"${env_var}")
    if file is not None:
        value: str | None
        try:
            value = file.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            value = None
        except OSError as error:
            raise ForgeAuthError(
                f"cannot read the forge token file {file}: {error.strerror}"
            ) from None
        if value:
            return Secret(value, str(file))
        if value is not None:
            raise ForgeAuthError(f"the forge token file {file} is empty")
    places = [f"set ${env_var}" if env_var else "", f"create {file}" if file else ""]
    raise ForgeAuthError(
        "no forge token found: " + (" or ".join(p for p in places if p) or "pass a token")
    )


def redact(text: str, *secrets: str) -> str:
    """``text`` with every secret value replaced by ``***`` (errors quote forge replies)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


# --------------------------------------------------------------------------- limits


@dataclass(frozen=True)
class WriteLimits:
    """How hard the sink may write to a forge (from the sink's settings).

    ``max_open_pull_requests`` (N) counts open PRs whose head branch starts with the
    bot's prefix; ``max_new_pull_requests_per_hour`` (M) is a sliding hour. GitHub asks
    for at least a second between mutating requests. A rate-limit wait longer than
    ``max_wait_seconds`` is not slept: :class:`RateLimitedError` is raised for the sink to
    retry in its next cycle.
    """

    max_open_pull_requests: int = 20
    max_new_pull_requests_per_hour: int = 5
    min_seconds_between_writes: float = 1.0
    max_retries: int = 3
    max_wait_seconds: float = 900.0
    open_count_ttl_seconds: float = 300.0

    def __post_init__(self) -> None:
        if self.max_open_pull_requests < 0 or self.max_new_pull_requests_per_hour < 0:
            raise ValueError("PR quotas must be >= 0")
        if self.min_seconds_between_writes < 0 or self.max_retries < 0:
            raise ValueError("write spacing and retries must be >= 0")


def _header_float(headers: Mapping[str, str], name: str) -> float | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return float(value.strip())
    except ValueError:
        return None


def _retry_after_seconds(value: str, now: float) -> float | None:
    """``Retry-After`` is delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def rate_limit_wait(
    status: int, headers: Mapping[str, str], body_text: str, *, now: float, attempt: int
) -> float | None:
    """Seconds to wait before retrying a rate-limited response, or None if it is not one.

    Follows GitHub's published rules (also what GitLab sends): ``retry-after`` first;
    else ``x-ratelimit-remaining: 0`` (GitLab: ``ratelimit-remaining``) with the reset
    epoch (plus one second for clock skew); else a 429, or a 403 whose message speaks of
    a rate limit, waits a minute, doubling on each repeat. Any other 403 is a permission
    problem, not a wait. ``headers`` must be case-insensitive (httpx's are).
    """
    if status not in (403, 429):
        return None
    retry_after = headers.get("retry-after")
    if retry_after is not None:
        seconds = _retry_after_seconds(retry_after, now)
        if seconds is not None:
            return seconds
    for prefix in ("x-ratelimit", "ratelimit"):
        remaining = _header_float(headers, f"{prefix}-remaining")
        reset = _header_float(headers, f"{prefix}-reset")
        if remaining is not None and remaining <= 0 and reset is not None:
            return max(0.0, reset - now) + 1.0
    if status == 429 or "rate limit" in body_text.lower():
        return DEFAULT_BACKOFF_SECONDS * 2.0**attempt
    return None


class WriteLimiter:
    """Serialises a forge's writes and enforces the PR quotas; one per forge client.

    Why here and not in the sink: every path that writes (create, update, label,
    comment) must obey it, and threads or a future async sink must not slip past.
    ``clock`` returns epoch seconds (reset headers are epochs); ``sleep`` is injected so
    tests advance a fake clock instead of waiting.
    """

    def __init__(self, limits: WriteLimits, *, clock: Clock, sleep: Sleep) -> None:
        self.limits = limits
        self.clock = clock
        self.sleep = sleep
        self._write_lock = threading.RLock()
        self._last_write_at: float | None = None
        self._created_at: deque[float] = deque()
        self._open_count: int | None = None
        self._open_counted_at = 0.0

    @contextmanager
    def serialised_write(self) -> Iterator[None]:
        """Hold the write slot: one write at a time, spaced by the minimum interval."""
        with self._write_lock:
            if self._last_write_at is not None:
                wait = self._last_write_at + self.limits.min_seconds_between_writes - self.clock()
                if wait > 0:
                    self.sleep(wait)
            try:
                yield
            finally:
                self._last_write_at = self.clock()

    def check_new_pull_request(self, count_open: Callable[[], int]) -> None:
        """Raise :class:`PrQuotaExceededError` if the hourly or open quota is used up.

        ``count_open`` asks the forge (the durable truth, so a restart does not reset the
        open quota); its answer is cached for ``open_count_ttl_seconds`` and kept current
        by :meth:`record_new_pull_request`. The hourly window is this process's memory.
        """
        with self._write_lock:
            now = self.clock()
            while self._created_at and self._created_at[0] <= now - 3600.0:
                self._created_at.popleft()
            hourly = self.limits.max_new_pull_requests_per_hour
            if len(self._created_at) >= hourly:
                retry_after = self._created_at[0] + 3600.0 - now if self._created_at else 3600.0
                raise PrQuotaExceededError(
                    f"{hourly} new PRs in the last hour already (max_new_pull_requests_per_hour); "
                    f"the next one may open in {retry_after:.0f} s",
                    kind="hourly",
                    limit=hourly,
                    retry_after=retry_after,
                )
            if (
                self._open_count is None
                or now - self._open_counted_at >= self.limits.open_count_ttl_seconds
            ):
                self._open_count = count_open()
                self._open_counted_at = now
            maximum = self.limits.max_open_pull_requests
            if self._open_count >= maximum:
                raise PrQuotaExceededError(
                    f"{self._open_count} daytwo PRs are open (max_open_pull_requests={maximum}); "
                    "a new one opens when one is merged or closed",
                    kind="open",
                    limit=maximum,
                    retry_after=None,
                )

    def record_new_pull_request(self) -> None:
        """Count a PR just opened against both quotas."""
        with self._write_lock:
            self._created_at.append(self.clock())
            if self._open_count is not None:
                self._open_count += 1

    def forget_open_count(self) -> None:
        """Drop the cached open count (the caller knows PRs were merged or closed)."""
        with self._write_lock:
            self._open_count = None


# --------------------------------------------------------------------------- HTTP


class TokenProvider(Protocol):
    """Where a client gets the secret for each request (a static token or an App's)."""

    def token(self) -> Secret:
        """The secret to send now; may refresh an expiring one."""
        ...


@dataclass(frozen=True)
class StaticToken:
    """A personal, project or CI token that does not expire while the sink runs."""

    secret: Secret

    def token(self) -> Secret:
        """The same secret every time."""
        return self.secret


def _reply_message(response: httpx.Response) -> str:
    """The forge's own error message (GitHub ``message``, GitLab ``message``/``error``)."""
    try:
        payload = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(payload, Mapping):
        message = payload.get("message", payload.get("error", ""))
        text = str(message)
        errors = payload.get("errors")
        if errors:
            text = f"{text} {errors}"
        return text[:300]
    return str(payload)[:200]


class ForgeHttp:
    """One forge's HTTP session: auth header, retries on rate limits, errors mapped.

    ``auth_headers`` turns the current secret into headers (``Authorization: Bearer``
    or ``PRIVATE-TOKEN``). Reads run freely; :meth:`write` runs inside the limiter's
    write slot, so a rate-limit sleep holds back every other write too.
    """

    def __init__(
        self,
        *,
        forge_name: str,
        base_url: str,
        tokens: TokenProvider,
        auth_headers: Callable[[Secret], dict[str, str]],
        limiter: WriteLimiter,
        default_headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.forge_name = forge_name
        self.limiter = limiter
        self._tokens = tokens
        self._auth_headers = auth_headers
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers=dict(default_headers or {}),
            transport=transport,
            timeout=timeout,
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"ForgeHttp({self.forge_name}, {str(self._client.base_url)!r})"

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def get(self, path: str, params: Mapping[str, str | int] | None = None) -> Any:
        """GET ``path`` and return the decoded JSON."""
        return self._send("GET", path, params=params, body=None)

    def write(self, method: str, path: str, body: Mapping[str, Any] | None) -> Any:
        """A mutating request (POST/PATCH/PUT) inside the write slot; returns the JSON."""
        with self.limiter.serialised_write():
            return self._send(method, path, params=None, body=body)

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None,
        body: Mapping[str, Any] | None,
    ) -> Any:
        limits = self.limiter.limits
        attempt = 0
        while True:
            secret = self._tokens.token()
            try:
                response = self._client.request(
                    method,
                    path,
                    params=dict(params) if params else None,
                    json=body,
                    headers=self._auth_headers(secret),
                )
            except httpx.TransportError as error:
                raise ForgeUnavailableError(
                    f"{self.forge_name}: {method} {path} failed: {type(error).__name__}: "
                    f"{redact(str(error), secret.reveal())}; retry later"
                ) from None
            message = redact(_reply_message(response), secret.reveal()) if response.is_error else ""
            wait = rate_limit_wait(
                response.status_code,
                response.headers,
                message,
                now=self.limiter.clock(),
                attempt=attempt,
            )
            if wait is None:
                return self._decoded(method, path, response, message, secret)
            if attempt >= limits.max_retries or wait > limits.max_wait_seconds:
                raise RateLimitedError(
                    f"{self.forge_name} rate limit: {method} {path} answered "
                    f"{response.status_code} after {attempt + 1} tries; retry in {wait:.0f} s",
                    retry_after=wait,
                )
            logger.warning(
                "%s rate limit on %s %s (%s); waiting %.0f s",
                self.forge_name,
                method,
                path,
                response.status_code,
                wait,
            )
            self.limiter.sleep(wait)
            attempt += 1

    def _decoded(
        self, method: str, path: str, response: httpx.Response, message: str, secret: Secret
    ) -> Any:
        status = response.status_code
        where = f"{self.forge_name}: {method} {path} answered {status}"
        if status in (401, 403):
            raise ForgeAuthError(
                f"{where}: {message or 'forbidden'}; check the token from {secret.source} "
                "and its scopes (pull requests and issues: write; contents: write)"
            )
        if status == 404:
            raise ForgeNotFoundError(f"{where}: {message or 'not found'}")
        if status in (400, 409, 422):
            raise ForgeRejectedError(f"{where}: {message}")
        if status >= 500:
            raise ForgeUnavailableError(f"{where}: {message}; retry later")
        if response.is_error:
            raise ForgeError(f"{where}: {message}")
        if status == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ForgeError(f"{where} with a body that is not JSON") from None


def require_mapping(value: Any, what: str) -> Mapping[str, Any]:
    """``value`` as a JSON object, or a :class:`ForgeError` naming what was expected."""
    if not isinstance(value, Mapping):
        raise ForgeError(f"expected a JSON object for {what}, got {type(value).__name__}")
    return value


def require_list(value: Any, what: str) -> list[Any]:
    """``value`` as a JSON array, or a :class:`ForgeError` naming what was expected."""
    if not isinstance(value, list):
        raise ForgeError(f"expected a JSON array for {what}, got {type(value).__name__}")
    return value


def default_clock() -> float:
    """Wall-clock epoch seconds: rate-limit reset headers are epochs."""
    return time.time()


class RestForge(ABC):
    """The base of the GitHub and GitLab clients: what is the same on both forges.

    Why one base: both must set up the session and the write limiter alike, pick the
    same PR for a branch, count the bot's open PRs the same way for the quota, and open
    a PR only inside the quota; the subclasses keep only their REST dialect (paths,
    field names, state vocabulary). ``body_field`` names the PR body in update calls.
    """

    body_field = "body"

    def __init__(
        self,
        *,
        forge_name: str,
        base_url: str,
        tokens: TokenProvider | Secret,
        auth_headers: Callable[[Secret], dict[str, str]],
        default_headers: Mapping[str, str],
        head_prefix: str,
        limits: WriteLimits | None,
        clock: Clock,
        sleep: Sleep,
        transport: httpx.BaseTransport | None,
        timeout: float,
    ) -> None:
        self.head_prefix = head_prefix
        provider = StaticToken(tokens) if isinstance(tokens, Secret) else tokens
        self.limiter = WriteLimiter(limits or WriteLimits(), clock=clock, sleep=sleep)
        self.http = ForgeHttp(
            forge_name=forge_name,
            base_url=base_url,
            tokens=provider,
            auth_headers=auth_headers,
            limiter=self.limiter,
            default_headers=default_headers,
            transport=transport,
            timeout=timeout,
        )

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self.http.close()

    @abstractmethod
    def _pull_requests_from(self, head_branch: str) -> list[PullRequest]:
        """Every PR (any state) the forge lists for ``head_branch``."""

    @abstractmethod
    def _open_page(self, page: int) -> list[Any]:
        """Page ``page`` (from 1, :data:`PAGE_SIZE` long) of the raw open PRs."""

    @abstractmethod
    def _head_branch_of(self, item: Any) -> str:
        """The head (source) branch of one raw item of :meth:`_open_page`."""

    def find_pull_request(self, head_branch: str) -> PullRequest | None:
        """The open PR from ``head_branch``, else the newest closed/merged one, else None."""
        candidates = [
            pr for pr in self._pull_requests_from(head_branch) if pr.head_branch == head_branch
        ]
        for pr in candidates:
            if pr.state == "open":
                return pr
        return max(candidates, key=lambda pr: pr.number, default=None)

    def count_open_pull_requests(self) -> int:
        """Open PRs whose head branch starts with ``head_prefix`` (for the open quota)."""
        count = 0
        for page in range(1, MAX_OPEN_PAGES + 1):
            items = self._open_page(page)
            count += sum(
                1 for item in items if self._head_branch_of(item).startswith(self.head_prefix)
            )
            if len(items) < PAGE_SIZE:
                break
        return count

    def check_new_pull_request_quota(self) -> None:
        """Raise :class:`PrQuotaExceededError` if a new PR would be refused now."""
        self.limiter.check_new_pull_request(self.count_open_pull_requests)

    def _create_within_quota(self, path: str, request: Mapping[str, Any]) -> Any:
        """POST a new PR inside the write slot, after the quota check; count it."""
        with self.limiter.serialised_write():
            self.limiter.check_new_pull_request(self.count_open_pull_requests)
            payload = self.http.write("POST", path, request)
            self.limiter.record_new_pull_request()
        return payload

    def _title_and_body(self, title: str | None, body: str | None) -> dict[str, str]:
        """The fields an update changes; ValueError when there is neither."""
        changes = {
            key: value
            for key, value in (("title", title), (self.body_field, body))
            if value is not None
        }
        if not changes:
            raise ValueError("update_pull_request needs a title or a body")
        return changes
