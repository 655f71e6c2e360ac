"""Shared forge rules: rate limits honoured, PR quotas, writes serialised, secrets hidden.

Time is a fake clock whose injected ``sleep`` advances it and records each call, so a
test asserts exactly how long the client would have waited, without waiting.
"""

from __future__ import annotations

import json
import logging
import pickle
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import DaytwoError
from pipeline.prsink.forge import (
    ForgeAuthError,
    ForgeError,
    ForgeUnavailableError,
    PrQuotaExceededError,
    RateLimitedError,
    Secret,
    WriteLimiter,
    WriteLimits,
    load_token,
    rate_limit_wait,
)
from pipeline.prsink.github import GitHubAppTokens, GitHubForge, app_jwt
from pipeline.prsink.gitlab import GitLabForge

TOKEN = "ghp_SECRETvalue0123456789abcdefghijkl"
START = 1_700_000_000.0


class FakeTime:
    """A thread-safe fake clock; ``sleep`` advances it and records the seconds."""

    def __init__(self, now: float = START) -> None:
        self.now = now
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def clock(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds


Handler = Callable[[httpx.Request], httpx.Response]


def github(handler: Handler, time_: FakeTime, **limits: Any) -> GitHubForge:
    settings: dict[str, Any] = {"min_seconds_between_writes": 0.0}
    settings.update(limits)
    return GitHubForge(
        "octo-org",
        "gitops",
        Secret(TOKEN, "$GITHUB_TOKEN"),
        transport=httpx.MockTransport(handler),
        clock=time_.clock,
        sleep=time_.sleep,
        limits=WriteLimits(**settings),
    )


def then_ok(*first: httpx.Response) -> tuple[Handler, list[httpx.Request]]:
    """Answer ``first`` in order, then 201 ``{}``; record every request."""
    queue = list(first)
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return queue.pop(0) if queue else httpx.Response(201, json={"id": 1})

    return handle, seen


# --------------------------------------------------------------------------- rate limits


def test_retry_after_is_slept_then_the_write_succeeds() -> None:
    time_ = FakeTime()
    handler, seen = then_ok(httpx.Response(429, headers={"Retry-After": "7"}, json={}))
    github(handler, time_).comment(1, "hi")

    assert time_.sleeps == [7.0]
    assert len(seen) == 2


def test_secondary_rate_limit_403_with_retry_after() -> None:
    time_ = FakeTime()
    handler, seen = then_ok(
        httpx.Response(
            403,
            headers={"retry-after": "30"},
            json={"message": "You have exceeded a secondary rate limit."},
        )
    )
    github(handler, time_).comment(1, "hi")

    assert time_.sleeps == [30.0]
    assert len(seen) == 2


def test_primary_limit_remaining_zero_waits_until_reset() -> None:
    time_ = FakeTime()
    reset = int(START) + 120
    handler, _ = then_ok(
        httpx.Response(
            403,
            headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)},
            json={"message": "API rate limit exceeded"},
        )
    )
    github(handler, time_).comment(1, "hi")

    assert time_.sleeps == [121.0]  # until the reset, plus one second of skew


def test_secondary_limit_without_headers_backs_off_a_minute_doubling() -> None:
    time_ = FakeTime()
    limited = {"message": "You have exceeded a secondary rate limit. Please wait."}
    handler, _ = then_ok(httpx.Response(403, json=limited), httpx.Response(403, json=limited))
    github(handler, time_).comment(1, "hi")

    assert time_.sleeps == [60.0, 120.0]


def test_plain_403_is_a_permission_error_not_a_wait() -> None:
    time_ = FakeTime()
    handler, seen = then_ok(
        httpx.Response(403, json={"message": "Resource not accessible by integration"})
    )
    with pytest.raises(ForgeAuthError, match="not accessible"):
        github(handler, time_).comment(1, "hi")

    assert time_.sleeps == []
    assert len(seen) == 1


def test_retries_are_bounded_and_end_in_rate_limited() -> None:
    time_ = FakeTime()
    handler, seen = then_ok(*[httpx.Response(429, headers={"Retry-After": "5"}) for _ in range(9)])
    with pytest.raises(RateLimitedError) as caught:
        github(handler, time_, max_retries=2).comment(1, "hi")

    assert time_.sleeps == [5.0, 5.0]
    assert len(seen) == 3
    assert caught.value.retry_after == 5.0
    assert isinstance(caught.value, ForgeError)
    assert isinstance(caught.value, DaytwoError)


def test_a_wait_longer_than_allowed_is_not_slept() -> None:
    time_ = FakeTime()
    handler, seen = then_ok(httpx.Response(429, headers={"Retry-After": "3600"}))
    with pytest.raises(RateLimitedError) as caught:
        github(handler, time_, max_wait_seconds=900.0).comment(1, "hi")

    assert time_.sleeps == []
    assert len(seen) == 1
    assert caught.value.retry_after == 3600.0


def test_retry_after_as_an_http_date() -> None:
    when = datetime.fromtimestamp(START + 45, UTC)
    headers = httpx.Headers({"Retry-After": format_datetime(when, usegmt=True)})
    assert rate_limit_wait(429, headers, "", now=START, attempt=0) == 45.0


def test_gitlab_ratelimit_headers_are_understood() -> None:
    headers = httpx.Headers({"RateLimit-Remaining": "0", "RateLimit-Reset": str(int(START) + 10)})
    assert rate_limit_wait(429, headers, "", now=START, attempt=0) == 11.0


@given(
    status=st.integers(100, 599).filter(lambda s: s not in (403, 429)),
    seconds=st.integers(0, 10_000),
)
def test_only_403_and_429_are_ever_rate_limits(status: int, seconds: int) -> None:
    headers = httpx.Headers({"Retry-After": str(seconds), "x-ratelimit-remaining": "0"})
    assert rate_limit_wait(status, headers, "rate limit", now=START, attempt=0) is None


@given(seconds=st.integers(0, 100_000), status=st.sampled_from([403, 429]))
def test_retry_after_seconds_are_taken_as_given(seconds: int, status: int) -> None:
    headers = httpx.Headers({"Retry-After": str(seconds)})
    assert rate_limit_wait(status, headers, "", now=START, attempt=3) == float(seconds)


def test_writes_are_spaced_by_the_minimum_interval() -> None:
    time_ = FakeTime()
    handler, _ = then_ok()
    forge = github(handler, time_, min_seconds_between_writes=1.0)
    forge.comment(1, "a")
    forge.comment(1, "b")
    time_.now += 5.0
    forge.comment(1, "c")

    assert time_.sleeps == [1.0]  # only the back-to-back write waited


# --------------------------------------------------------------------------- quotas


class GitHubPulls:
    """A GitHub double that keeps PRs: list (paged, by state/head), create, close."""

    def __init__(self) -> None:
        self.pulls: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.gets = 0

    def close(self, number: int) -> None:
        self.pulls[number - 1]["state"] = "closed"

    def handle(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            if request.method == "GET":
                self.gets += 1
                params = request.url.params
                state = params.get("state", "open")
                found = [p for p in self.pulls if state == "all" or p["state"] == state]
                page, per_page = int(params.get("page", "1")), int(params.get("per_page", "30"))
                return httpx.Response(200, json=found[(page - 1) * per_page : page * per_page])
            payload = json.loads(request.content)
            number = len(self.pulls) + 1
            pr = {
                "number": number,
                "html_url": f"https://github.com/octo-org/gitops/pull/{number}",
                "state": "open",
                "title": payload["title"],
                "body": payload["body"],
                "merged_at": None,
                "head": {"ref": payload["head"], "sha": "a" * 40},
                "base": {"ref": payload["base"], "sha": "b" * 40},
                "labels": [],
            }
            self.pulls.append(pr)
            return httpx.Response(201, json=pr)


def burst(forge: GitHubForge, count: int, start: int = 0) -> tuple[int, list[PrQuotaExceededError]]:
    created = 0
    refused: list[PrQuotaExceededError] = []
    for index in range(start, start + count):
        try:
            forge.create_pull_request(
                head_branch=f"daytwo/ns/w{index}", base_branch="main", title="t", body="b"
            )
            created += 1
        except PrQuotaExceededError as error:
            refused.append(error)
    return created, refused


def test_500_recommendations_in_a_burst_respect_hourly_and_open_quotas() -> None:
    time_ = FakeTime()
    double = GitHubPulls()
    forge = github(double.handle, time_, max_open_pull_requests=8, max_new_pull_requests_per_hour=5)

    created, refused = burst(forge, 500)
    assert created == 5
    assert len(refused) == 495
    assert {error.kind for error in refused} == {"hourly"}
    assert 0 < (refused[0].retry_after or 0) <= 3600

    time_.now += 3601  # a new hour: three more fit under the open limit of 8
    created, refused = burst(forge, 500, start=500)
    assert created == 3
    assert refused[0].kind == "open"
    assert refused[0].retry_after is None
    assert "max_open_pull_requests=8" in str(refused[0])
    assert sum(1 for p in double.pulls if p["state"] == "open") == 8

    double.close(1)
    double.close(2)
    time_.now += 3601  # past the open-count cache and the hourly window
    created, _ = burst(forge, 10, start=1000)
    assert created == 2
    assert sum(1 for p in double.pulls if p["state"] == "open") == 8


def test_open_count_is_cached_and_kept_current_between_refreshes() -> None:
    time_ = FakeTime()
    double = GitHubPulls()
    forge = github(double.handle, time_, max_new_pull_requests_per_hour=100)
    burst(forge, 4)
    assert double.gets == 1  # one count, then kept current locally

    time_.now += 301
    forge.check_new_pull_request_quota()
    assert double.gets == 2  # the cache expired: counted again from the forge


def test_quota_check_without_creating() -> None:
    time_ = FakeTime()
    forge = github(GitHubPulls().handle, time_, max_new_pull_requests_per_hour=0)
    with pytest.raises(PrQuotaExceededError) as caught:
        forge.check_new_pull_request_quota()
    assert caught.value.kind == "hourly"
    assert isinstance(caught.value, RateLimitedError)


def test_write_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="quotas"):
        WriteLimits(max_open_pull_requests=-1)


# --------------------------------------------------------------------------- threads


class ConcurrencyProbe:
    """A handler that measures how many requests are inside it at once."""

    def __init__(self, barrier_parties: int = 0) -> None:
        self.inside = 0
        self.most_inside = 0
        self.lock = threading.Lock()
        self.barrier = threading.Barrier(barrier_parties) if barrier_parties else None

    def handle(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        try:
            if self.barrier is not None:
                self.barrier.wait(timeout=5)
            else:
                threading.Event().wait(0.002)  # give an overlapping request its chance
        finally:
            with self.lock:
                self.inside -= 1
        status = 200 if request.method == "GET" else 201
        return httpx.Response(status, json=[] if request.method == "GET" else {"id": 1})


def run_threads(count: int, work: Callable[[int], None]) -> None:
    errors: list[BaseException] = []

    def guarded(index: int) -> None:
        try:
            work(index)
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=guarded, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors


def test_writes_are_serialised_across_threads() -> None:
    probe = ConcurrencyProbe()
    forge = github(probe.handle, FakeTime())

    def write(index: int) -> None:
        for _ in range(5):
            forge.comment(index, "hello")
            forge.add_labels(index, ["daytwo"])

    run_threads(8, write)
    assert probe.most_inside == 1


def test_the_probe_sees_overlap_when_calls_are_not_serialised() -> None:
    """Control for the test above: reads are not serialised, and the probe notices."""
    probe = ConcurrencyProbe(barrier_parties=2)
    forge = github(probe.handle, FakeTime())

    def read(index: int) -> None:
        forge.find_pull_request(f"daytwo/ns/{index}")

    run_threads(2, read)
    assert probe.most_inside == 2


# --------------------------------------------------------------------------- secrets


def test_load_token_from_env_then_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")

    from_env = load_token(env_var="GH_TOKEN", file=token_file, environ={"GH_TOKEN": "from-env"})
    from_file = load_token(env_var="GH_TOKEN", file=token_file, environ={})

    assert (from_env.reveal(), from_env.source) == ("from-env", "$GH_TOKEN")
    assert (from_file.reveal(), from_file.source) == ("from-file", str(token_file))


def test_missing_or_empty_tokens_say_where_to_put_one(tmp_path: Path) -> None:
    with pytest.raises(ForgeAuthError, match=r"set \$GH_TOKEN or create .*missing"):
        load_token(env_var="GH_TOKEN", file=tmp_path / "missing", environ={})
    empty = tmp_path / "empty"
    empty.write_text("  \n")
    with pytest.raises(ForgeAuthError, match="is empty"):
        load_token(file=empty, environ={})


def test_unreadable_token_file_is_reported_when_the_variable_is_unset(tmp_path: Path) -> None:
    with pytest.raises(ForgeAuthError, match="cannot read the forge token file"):
        load_token(env_var="GH_TOKEN", file=tmp_path, environ={"GH_TOKEN": ""})  # a directory


def test_secret_never_prints_itself() -> None:
    secret = Secret(TOKEN, "$GITHUB_TOKEN")
    for shown in (repr(secret), str(secret), f"{secret}", f"{secret!r}", "{}".format(secret)):  # noqa: UP032
        assert TOKEN not in shown
        assert "$GITHUB_TOKEN" in shown
    with pytest.raises(TypeError):
        pickle.dumps(secret)


def test_token_never_in_logs_errors_or_reprs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # httpx and httpcore log requests at DEBUG/INFO
    time_ = FakeTime()
    answers = iter(
        [
            httpx.Response(429, headers={"Retry-After": "1"}, json={"message": "slow down"}),
            httpx.Response(201, json={"id": 1}),
            # A forge echoing the token back must not carry it into our message.
            httpx.Response(401, json={"message": f"Bad credentials for {TOKEN}"}),
        ]
    )

    def handle(request: httpx.Request) -> httpx.Response:
        answer = next(answers, None)
        if answer is None:
            raise httpx.ConnectError(f"refused while sending {TOKEN}", request=request)
        return answer

    forge = github(handle, time_)
    texts: list[str] = [repr(forge), repr(forge.http), repr(forge.limiter)]
    forge.comment(1, "retried after a 429")
    with pytest.raises(ForgeAuthError) as auth_error:
        forge.comment(1, "unauthorised")
    with pytest.raises(ForgeUnavailableError) as transport_error:
        forge.comment(1, "unreachable")

    for error in (auth_error.value, transport_error.value):
        texts += [str(error), repr(error), *map(str, error.args)]
    texts += [record.getMessage() for record in caplog.records]
    texts += [str(record.args) for record in caplog.records]
    assert any("rate limit" in text for text in texts)  # the retry was logged
    for text in texts:
        assert TOKEN not in text
    assert "$GITHUB_TOKEN" in str(auth_error.value)  # says where the token came from


def test_gitlab_private_token_never_in_errors_or_reprs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret_value = "glpat-SECRET0123456789abcd"

    def handle(request: httpx.Request) -> httpx.Response:
        assert request.headers["private-token"] == secret_value
        return httpx.Response(403, json={"message": f"403 Forbidden {secret_value}"})

    forge = GitLabForge(
        "platform/gitops",
        Secret(secret_value, "/run/secrets/gitlab"),
        transport=httpx.MockTransport(handle),
    )
    with pytest.raises(ForgeAuthError) as caught:
        forge.comment(1, "x")
    texts = [str(caught.value), repr(caught.value), repr(forge), repr(forge.http)]
    texts += [record.getMessage() for record in caplog.records]
    for text in texts:
        assert secret_value not in text
    assert "/run/secrets/gitlab" in str(caught.value)


def test_app_private_key_and_tokens_stay_hidden(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    signed_jwts: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        signed = request.headers["authorization"].removeprefix("Bearer ")
        signed_jwts.append(signed)
        return httpx.Response(403, text=f"bad JWT {signed}")

    tokens = GitHubAppTokens(
        app_id="1",
        private_key=Secret(pem, "/keys/app.pem"),
        owner="o",
        repo="r",
        installation_id=5,
        transport=httpx.MockTransport(handle),
        clock=FakeTime().clock,
    )
    with pytest.raises(ForgeAuthError) as caught:
        tokens.token()
    body_line = pem.splitlines()[1]
    texts = [str(caught.value), repr(caught.value), repr(tokens)]
    texts += [record.getMessage() for record in caplog.records]
    for text in texts:
        assert body_line not in text
        assert signed_jwts[0] not in text
    assert app_jwt("1", Secret(pem, "k"), now=START).count(".") == 2


def test_limiter_serialised_write_releases_on_error() -> None:
    limiter = WriteLimiter(WriteLimits(), clock=FakeTime().clock, sleep=FakeTime().sleep)
    with pytest.raises(RuntimeError), limiter.serialised_write():
        raise RuntimeError("boom")
    acquired = threading.Event()

    def other() -> None:
        with limiter.serialised_write():
            acquired.set()

    thread = threading.Thread(target=other)
    thread.start()
    thread.join(timeout=5)
    assert acquired.is_set()
