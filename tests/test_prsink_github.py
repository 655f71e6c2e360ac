"""GitHub client: contract tests against GitHub's published OpenAPI description (Prism),
and behaviour tests on shaped responses (``httpx.MockTransport``).

Contract: a session-scoped Prism serves ``@octokit/openapi``'s ``api.github.com``
description on 127.0.0.1 and validates every request; each test asserts Prism accepted
all of the client's requests (2xx, no request violations) and that the client parses
Prism's example answers. Examples are GitHub's documentation samples, so the tests check
shapes, not values. One test sends a malformed body to prove the check can fail.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from pipeline.prsink.forge import (
    CommitIdentity,
    Forge,
    ForgeAuthError,
    ForgeRejectedError,
    PullRequest,
    Secret,
    WriteLimits,
)
from pipeline.prsink.github import (
    GITHUB_API_VERSION,
    GitHubAppTokens,
    GitHubForge,
    app_jwt,
    load_private_key,
)
from tests.contract.prism import (
    PrismRecordingTransport,
    PrismServer,
    github_spec_for_prism,
    start_prism,
)

TOKEN = "ghp_contractTEST0123456789abcdefghijklmn"
BRANCH = "daytwo/shop/checkout"
NO_WAIT = WriteLimits(min_seconds_between_writes=0.0)


class FakeTime:
    """A clock and a sleep that advances it; records every sleep."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


# --------------------------------------------------------------------------- contract


@pytest.fixture(scope="session")
def prism_github(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrismServer]:
    """Prism serving GitHub's description, started once per session."""
    directory = tmp_path_factory.mktemp("prism-github")
    try:
        server = start_prism(github_spec_for_prism(directory), directory / "prism.log")
    except RuntimeError as error:
        pytest.fail(str(error))
    yield server
    server.stop()


@pytest.fixture
def recorder() -> Iterator[PrismRecordingTransport]:
    transport = PrismRecordingTransport()
    yield transport
    transport.close()


@pytest.fixture
def contract_forge(
    prism_github: PrismServer, recorder: PrismRecordingTransport
) -> Iterator[GitHubForge]:
    time_ = FakeTime()
    forge = GitHubForge(
        "octo-org",
        "gitops",
        Secret(TOKEN, "test"),
        base_url=prism_github.base_url,
        transport=recorder,
        limits=NO_WAIT,
        clock=time_.clock,
        sleep=time_.sleep,
    )
    yield forge
    forge.close()


def assert_all_accepted(recorder: PrismRecordingTransport, expected: list[tuple[str, str]]) -> None:
    """Prism accepted every request (2xx, no request violation), in the expected order."""
    assert [(e.method, e.path) for e in recorder.exchanges] == expected
    for exchange in recorder.exchanges:
        assert exchange.request_violations == (), exchange
        assert 200 <= exchange.status < 300, exchange
        assert exchange.sent_headers["accept"] == "application/vnd.github+json"
        assert exchange.sent_headers["x-github-api-version"] == GITHUB_API_VERSION
        assert exchange.sent_headers["authorization"] == f"Bearer {TOKEN}"


def assert_pull_request_shape(pr: PullRequest) -> None:
    assert pr.number > 0
    assert pr.url.startswith("http")
    assert pr.state in ("open", "closed", "merged")
    assert pr.head_branch
    assert pr.base_branch
    assert len(pr.body_sha256) == 64


def test_contract_list_by_head_branch(
    contract_forge: GitHubForge, recorder: PrismRecordingTransport
) -> None:
    found = contract_forge.list_pull_requests(BRANCH)
    contract_forge.find_pull_request(BRANCH)

    assert found
    for pr in found:
        assert_pull_request_shape(pr)
    assert_all_accepted(recorder, [("GET", "/repos/octo-org/gitops/pulls")] * 2)
    query = httpx.QueryParams(recorder.exchanges[0].query)
    assert query["head"] == f"octo-org:{BRANCH}"
    assert query["state"] == "all"


def test_contract_create_with_labels(
    contract_forge: GitHubForge, recorder: PrismRecordingTransport
) -> None:
    pr = contract_forge.create_pull_request(
        head_branch=BRANCH,
        base_branch="main",
        title="daytwo: right-size shop/checkout",
        body="| container | cpu |\n| --- | --- |",
        labels=["daytwo", "right-sizing"],
    )

    assert_pull_request_shape(pr)
    assert_all_accepted(
        recorder,
        [
            ("GET", "/repos/octo-org/gitops/pulls"),  # open count for the quota
            ("POST", "/repos/octo-org/gitops/pulls"),
            ("POST", f"/repos/octo-org/gitops/issues/{pr.number}/labels"),
        ],
    )
    created = json.loads(recorder.exchanges[1].body)
    assert created == {
        "title": "daytwo: right-size shop/checkout",
        "head": BRANCH,
        "base": "main",
        "body": "| container | cpu |\n| --- | --- |",
    }


def test_contract_update_and_comment(
    contract_forge: GitHubForge, recorder: PrismRecordingTransport
) -> None:
    updated = contract_forge.update_pull_request(7, title="new title", body="new body")
    contract_forge.update_pull_request(7, body="only the body")
    contract_forge.comment(7, "Superseded by a newer recommendation.")

    assert_pull_request_shape(updated)
    assert_all_accepted(
        recorder,
        [
            ("PATCH", "/repos/octo-org/gitops/pulls/7"),
            ("PATCH", "/repos/octo-org/gitops/pulls/7"),
            ("POST", "/repos/octo-org/gitops/issues/7/comments"),
        ],
    )
    assert json.loads(recorder.exchanges[1].body) == {"body": "only the body"}


def test_contract_status_and_open_count(
    contract_forge: GitHubForge, recorder: PrismRecordingTransport
) -> None:
    status = contract_forge.pull_request_status(7)
    count = contract_forge.count_open_pull_requests()

    assert_pull_request_shape(status.pull_request)
    assert isinstance(status.last_commit, CommitIdentity)
    assert status.last_commit.sha
    assert count >= 0
    paths = [(e.method, e.path) for e in recorder.exchanges]
    assert paths[0] == ("GET", "/repos/octo-org/gitops/pulls/7")
    assert ("GET", "/repos/octo-org/gitops/pulls/7/commits") in paths
    assert_all_accepted(recorder, paths)


def test_contract_issue_view_is_accepted(
    contract_forge: GitHubForge, recorder: PrismRecordingTransport
) -> None:
    """Prism's example PR is open, so status() skips the issue view; check that call alone.

    Only acceptance is asserted: the description's issue example wraps an Example
    Object inside ``value``, so Prism answers with that wrapper, not an issue. Parsing
    ``closed_by`` is covered by the behaviour tests below.
    """
    issue = contract_forge.http.get("/repos/octo-org/gitops/issues/7")

    assert isinstance(issue, dict)
    assert_all_accepted(recorder, [("GET", "/repos/octo-org/gitops/issues/7")])


@pytest.fixture(scope="module")
def rsa_private_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def test_contract_app_installation_token(
    prism_github: PrismServer, recorder: PrismRecordingTransport, rsa_private_pem: str
) -> None:
    time_ = FakeTime()
    tokens = GitHubAppTokens(
        app_id="12345",
        private_key=Secret(rsa_private_pem, "test key"),
        owner="octo-org",
        repo="gitops",
        base_url=prism_github.base_url,
        transport=recorder,
        clock=time_.clock,
    )

    token = tokens.token()

    assert token.reveal()
    assert (recorder.exchanges[0].method, recorder.exchanges[0].path) == (
        "GET",
        "/repos/octo-org/gitops/installation",
    )
    assert recorder.exchanges[1].method == "POST"
    assert recorder.exchanges[1].path.startswith("/app/installations/")
    for exchange in recorder.exchanges:
        assert exchange.request_violations == ()
        assert 200 <= exchange.status < 300
    tokens.close()


def test_contract_harness_rejects_a_malformed_request(
    contract_forge: GitHubForge, recorder: PrismRecordingTransport
) -> None:
    """The check can fail: a body without ``head``/``base`` and a bad enum get 422."""
    with pytest.raises(ForgeRejectedError, match="422"):
        contract_forge.http.write("POST", "/repos/octo-org/gitops/pulls", {"title": 1})
    with pytest.raises(ForgeRejectedError, match="422"):
        contract_forge.http.get("/repos/octo-org/gitops/pulls", {"state": "everything"})

    first, second = recorder.exchanges
    assert first.status == 422
    messages = " ".join(v["message"] for v in first.request_violations)
    assert "'head'" in messages
    assert "'base'" in messages
    assert second.status == 422
    assert second.request_violations[0]["location"] == ["request", "query", "state"]


# --------------------------------------------------------------------------- behaviour


def pr_payload(
    number: int,
    *,
    branch: str = BRANCH,
    state: str = "open",
    merged_at: str | None = None,
    commits: int = 1,
    body: str | None = "body",
) -> dict[str, Any]:
    """A pull-request object with the fields GitHub documents (subset the client reads)."""
    return {
        "number": number,
        "html_url": f"https://github.com/octo-org/gitops/pull/{number}",
        "state": state,
        "title": f"PR {number}",
        "body": body,
        "merged_at": merged_at,
        "merged_by": {"login": "reviewer", "type": "User"} if merged_at else None,
        "head": {"ref": branch, "sha": "a" * 40},
        "base": {"ref": "main", "sha": "b" * 40},
        "labels": [{"name": "daytwo"}],
        "commits": commits,
    }


def commit_payload(sha: str, email: str, login: str | None) -> dict[str, Any]:
    user = {"login": login, "type": "User"} if login else None
    return {
        "sha": sha,
        "commit": {
            "author": {"name": "someone", "email": email, "date": "2024-01-01T00:00:00Z"},
            "committer": {"name": "someone", "email": email, "date": "2024-01-01T00:00:00Z"},
        },
        "author": user,
        "committer": user,
    }


Handler = Callable[[httpx.Request], httpx.Response]


def mock_forge(handler: Handler, **kwargs: Any) -> GitHubForge:
    time_ = FakeTime()
    options: dict[str, Any] = {
        "transport": httpx.MockTransport(handler),
        "limits": NO_WAIT,
        "clock": time_.clock,
        "sleep": time_.sleep,
    }
    options.update(kwargs)
    return GitHubForge("octo-org", "gitops", Secret(TOKEN, "test"), **options)


def test_github_forge_satisfies_the_protocol() -> None:
    forge = mock_forge(lambda request: httpx.Response(200, json=[]))
    assert isinstance(forge, Forge)


def test_find_prefers_the_open_pr_over_newer_closed_ones() -> None:
    listing = [
        pr_payload(9, state="closed"),
        pr_payload(8, state="closed", merged_at="2024-01-01T00:00:00Z"),
        pr_payload(5, state="open"),
        pr_payload(12, branch="daytwo/shop/checkout-v2"),  # a different branch
    ]
    forge = mock_forge(lambda request: httpx.Response(200, json=listing))

    found = forge.find_pull_request(BRANCH)

    assert found is not None
    assert (found.number, found.state) == (5, "open")


def test_find_returns_newest_closed_or_merged_when_none_is_open() -> None:
    listing = [
        pr_payload(3, state="closed", merged_at="2024-01-01T00:00:00Z"),
        pr_payload(4, state="closed"),
    ]
    forge = mock_forge(lambda request: httpx.Response(200, json=listing))

    found = forge.find_pull_request(BRANCH)

    assert found is not None
    assert (found.number, found.state) == (4, "closed")
    assert (
        mock_forge(lambda request: httpx.Response(200, json=[])).find_pull_request(BRANCH) is None
    )


def status_handler(
    pr: dict[str, Any], closer: dict[str, Any] | None, commits: list[dict[str, Any]]
) -> tuple[Handler, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        path = request.url.path
        if path.endswith("/commits"):
            return httpx.Response(200, json=commits)
        if "/issues/" in path:
            return httpx.Response(200, json={"number": pr["number"], "closed_by": closer})
        return httpx.Response(200, json=pr)

    return handle, seen


def test_status_closed_by_a_human() -> None:
    handler, _ = status_handler(
        pr_payload(4, state="closed"),
        {"login": "alice", "type": "User"},
        [commit_payload("c1", "daytwo@example.com", None)],
    )
    status = mock_forge(handler, bot_logins={"daytwo[bot]"}).pull_request_status(4)

    assert status.pull_request.state == "closed"
    assert status.closed_by == "alice"
    assert status.closed_by_human is True
    assert status.last_commit_is_by("daytwo@example.com") is True


def test_status_closed_by_the_bot_itself_is_not_human() -> None:
    handler, _ = status_handler(
        pr_payload(4, state="closed"), {"login": "daytwo[bot]", "type": "Bot"}, []
    )
    status = mock_forge(handler, bot_logins={"daytwo[bot]"}).pull_request_status(4)

    assert status.closed_by == "daytwo[bot]"
    assert status.closed_by_human is False
    assert status.last_commit is None
    assert status.last_commit_is_by("daytwo@example.com") is None


def test_status_merged_is_never_closed_by_human_and_reads_the_last_commit_page() -> None:
    handler, seen = status_handler(
        pr_payload(4, state="closed", merged_at="2024-01-01T00:00:00Z", commits=150),
        None,
        [
            commit_payload("older", "daytwo@example.com", None),
            commit_payload("newest", "alice@example.com", "alice"),
        ],
    )
    status = mock_forge(handler).pull_request_status(4)

    assert status.pull_request.state == "merged"
    assert status.closed_by_human is False
    assert status.merged_by == "reviewer"
    assert status.last_commit is not None
    assert status.last_commit.sha == "newest"
    assert status.last_commit.author_login == "alice"
    assert status.last_commit_is_by("daytwo@example.com") is False
    commits_request = next(r for r in seen if r.url.path.endswith("/commits"))
    assert commits_request.url.params["page"] == "2"  # 150 commits, 100 a page
    assert not any("/issues/" in r.url.path for r in seen)  # merged: no closer lookup


def test_enterprise_base_url_and_path_quoting() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"id": 1})

    forge = mock_forge(handle, base_url="https://ghe.example.com/api/v3/")
    forge.comment(3, "hello")

    assert (
        str(seen[0].url) == "https://ghe.example.com/api/v3/repos/octo-org/gitops/issues/3/comments"
    )
    assert seen[0].headers["authorization"] == f"Bearer {TOKEN}"


def test_existing_pr_conflict_is_a_rejection_with_githubs_message() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json=[])
        return httpx.Response(
            422,
            json={
                "message": "Validation Failed",
                "errors": [
                    {
                        "resource": "PullRequest",
                        "code": "custom",
                        "message": f"A pull request already exists for octo-org:{BRANCH}.",
                    }
                ],
            },
        )

    with pytest.raises(ForgeRejectedError, match="already exists"):
        mock_forge(handle).create_pull_request(
            head_branch=BRANCH, base_branch="main", title="t", body="b"
        )


def test_update_needs_something_to_change() -> None:
    with pytest.raises(ValueError, match="title or a body"):
        mock_forge(lambda request: httpx.Response(200, json={})).update_pull_request(1)


def test_app_jwt_is_short_lived_rs256_signed_by_the_key(rsa_private_pem: str) -> None:
    now = 1_700_000_000.0
    signed = app_jwt("12345", Secret(rsa_private_pem, "test key"), now=now)

    private = serialization.load_pem_private_key(rsa_private_pem.encode(), None)
    assert isinstance(private, rsa.RSAPrivateKey)
    claims = jwt.decode(
        signed,
        private.public_key(),
        algorithms=["RS256"],
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims["iss"] == "12345"
    assert claims["iat"] <= now
    assert 0 < claims["exp"] - claims["iat"] <= 600
    assert claims["exp"] > now


def test_app_tokens_are_cached_until_close_to_expiry(rsa_private_pem: str) -> None:
    exchanges: list[str] = []
    time_ = FakeTime(now=1_700_000_000.0)

    def handle(request: httpx.Request) -> httpx.Response:
        exchanges.append(request.url.path)
        expires = time_.now + 3600
        return httpx.Response(
            201,
            json={
                "token": f"ghs_{len(exchanges)}",
                "expires_at": datetime.fromtimestamp(expires, UTC).isoformat(),
            },
        )

    tokens = GitHubAppTokens(
        app_id="1",
        private_key=Secret(rsa_private_pem, "k"),
        owner="octo-org",
        repo="gitops",
        installation_id=99,
        transport=httpx.MockTransport(handle),
        clock=time_.clock,
    )
    first = tokens.token().reveal()
    time_.now += 3000  # 10 minutes before expiry: still cached
    assert tokens.token().reveal() == first
    time_.now += 400  # inside the 5-minute refresh margin
    assert tokens.token().reveal() != first
    assert exchanges == ["/app/installations/99/access_tokens"] * 2


def test_private_key_file_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "app.pem"
    with pytest.raises(ForgeAuthError, match=r"app\.pem"):
        load_private_key(missing)
    missing.write_text("not a key at all")
    with pytest.raises(ForgeAuthError, match="not a usable RSA PEM key") as caught:
        app_jwt("1", load_private_key(missing), now=0.0)
    assert "not a key at all" not in str(caught.value)
