"""GitLab client on recorded, documentation-shaped responses (no OpenAPI is published).

The double in tests/contract/gitlab_double.py checks every request against the
documented attributes of its endpoint and answers with the JSON in tests/contract/gitlab/.
Every test asserts the double saw no contract violation; one test proves it reports them.
"""

from __future__ import annotations

import httpx
import pytest

from pipeline.prsink.forge import (
    Forge,
    ForgeAuthError,
    ForgeNotFoundError,
    ForgeRejectedError,
    PrQuotaExceededError,
    Secret,
    WriteLimits,
)
from pipeline.prsink.gitlab import GitLabForge, parse_merge_request, project_path_segment
from tests.contract.gitlab_double import GitLabDouble, recorded

TOKEN = "glpat-recordedTEST0123456789"
BASE = "https://gitlab.example.com/api/v4"
BOT = "project_42_bot_5f1d"


class FakeTime:
    def __init__(self) -> None:
        self.now = 1_714_640_000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def make_forge(
    double: GitLabDouble, *, limits: WriteLimits | None = None, time_: FakeTime | None = None
) -> GitLabForge:
    time_ = time_ or FakeTime()
    return GitLabForge(
        "platform/gitops",
        Secret(TOKEN, "test"),
        base_url=BASE,
        transport=double.transport(),
        limits=limits or WriteLimits(min_seconds_between_writes=0.0),
        clock=time_.clock,
        sleep=time_.sleep,
        bot_usernames={BOT},
    )


@pytest.fixture
def double() -> GitLabDouble:
    return GitLabDouble(token=TOKEN)


def test_gitlab_forge_satisfies_the_protocol(double: GitLabDouble) -> None:
    assert isinstance(make_forge(double), Forge)


def test_project_path_is_one_encoded_segment() -> None:
    assert project_path_segment("platform/gitops") == "platform%2Fgitops"
    assert project_path_segment("a/b/c.d") == "a%2Fb%2Fc.d"
    assert project_path_segment(42) == "42"


def test_find_open_merge_request_by_source_branch(double: GitLabDouble) -> None:
    found = make_forge(double).find_pull_request("daytwo/shop/checkout")

    assert found is not None
    assert (found.number, found.state, found.head_branch, found.base_branch) == (
        7,
        "open",
        "daytwo/shop/checkout",
        "main",
    )
    assert found.labels == ("daytwo", "right-sizing")
    assert found.head_sha == "6104942438c14ec7bd21c6cd5bd995272b3faff6"
    request = double.requests[0]
    assert request.url.params["source_branch"] == "daytwo/shop/checkout"
    assert request.url.params["state"] == "all"
    assert b"platform%2Fgitops" in request.url.raw_path
    assert double.violations == []


def test_find_returns_none_for_an_unknown_branch(double: GitLabDouble) -> None:
    assert make_forge(double).find_pull_request("daytwo/shop/nothing") is None
    assert double.violations == []


def test_create_sends_labels_comma_separated_then_find_sees_it(double: GitLabDouble) -> None:
    forge = make_forge(double)
    created = forge.create_pull_request(
        head_branch="daytwo/shop/payments",
        base_branch="main",
        title="daytwo: right-size shop/payments",
        body="table",
        labels=["daytwo", "right-sizing"],
    )

    assert created.state == "open"
    assert created.labels == ("daytwo", "right-sizing")
    assert forge.find_pull_request("daytwo/shop/payments") == created
    assert double.violations == []


def test_create_conflict_is_a_rejection(double: GitLabDouble) -> None:
    with pytest.raises(ForgeRejectedError, match="already exists"):
        make_forge(double).create_pull_request(
            head_branch="daytwo/shop/checkout", base_branch="main", title="t", body="b"
        )


def test_update_add_labels_and_comment(double: GitLabDouble) -> None:
    forge = make_forge(double)
    updated = forge.update_pull_request(7, title="new title", body="new body")
    forge.add_labels(7, ["superseded"])
    forge.comment(7, "Superseded by a newer recommendation.")

    assert (updated.title, updated.body) == ("new title", "new body")
    assert double.merge_requests[7]["labels"] == ["daytwo", "right-sizing", "superseded"]
    methods = [(r.method, r.url.raw_path.decode().split("?")[0]) for r in double.requests]
    assert methods == [
        ("PUT", "/api/v4/projects/platform%2Fgitops/merge_requests/7"),
        ("PUT", "/api/v4/projects/platform%2Fgitops/merge_requests/7"),
        ("POST", "/api/v4/projects/platform%2Fgitops/merge_requests/7/notes"),
    ]
    assert double.violations == []


def test_status_closed_by_a_human_who_pushed_last(double: GitLabDouble) -> None:
    status = make_forge(double).pull_request_status(6)

    assert status.pull_request.state == "closed"
    assert status.closed_by == "alice"
    assert status.closed_by_human is True
    assert status.last_commit is not None
    assert status.last_commit.sha == "0b4bc9a49b562e85de7cc9e834518ea6828729b9"  # newest first
    assert status.last_commit_is_by("daytwo@example.com") is False
    assert double.violations == []


def test_status_closed_by_the_bot_is_not_human_and_merged_maps_to_merged(
    double: GitLabDouble,
) -> None:
    closed = double.merge_requests[6]
    closed["closed_by"] = dict(closed["closed_by"], username=BOT)
    double.commits = double.commits[1:]  # only the bot's commit
    status = make_forge(double).pull_request_status(6)

    assert status.closed_by_human is False
    assert status.last_commit_is_by("daytwo@example.com") is True

    merged = recorded("merge_request.json")
    merged.update(state="merged", merged_by={"username": "alice"}, merged_at="2024-05-03T10:00:00Z")
    assert parse_merge_request(merged).state == "merged"
    locked = dict(merged, state="locked")
    assert parse_merge_request(locked).state == "open"


def test_double_reports_contract_violations(double: GitLabDouble) -> None:
    """The check can fail: a create without ``title`` and an undocumented attribute."""
    forge = make_forge(double)
    with pytest.raises(ForgeRejectedError):  # 400 from the double maps to a rejection
        forge.http.write(
            "POST", "/projects/platform%2Fgitops/merge_requests", {"source_branch": "x"}
        )
    with pytest.raises(ForgeRejectedError):
        forge.http.write("PUT", "/projects/platform%2Fgitops/merge_requests/7", {"colour": "x"})

    assert double.violations == [
        "target_branch is missing",
        "undocumented update attributes ['colour']",
    ]


def test_wrong_token_and_missing_mr_map_to_errors(double: GitLabDouble) -> None:
    with pytest.raises(ForgeNotFoundError):
        make_forge(double).pull_request_status(404)
    other = GitLabForge(
        "platform/gitops",
        Secret("glpat-wrong", "$GITLAB_TOKEN"),
        base_url=BASE,
        transport=double.transport(),
    )
    with pytest.raises(ForgeAuthError, match=r"\$GITLAB_TOKEN") as caught:
        other.find_pull_request("daytwo/shop/checkout")
    assert "glpat-wrong" not in str(caught.value)


def test_retry_after_on_429_is_honoured(double: GitLabDouble) -> None:
    answers = iter(
        [
            httpx.Response(
                429, headers={"Retry-After": "12"}, json={"message": "429 Too Many Requests"}
            )
        ]
    )

    def handle(request: httpx.Request) -> httpx.Response:
        return next(answers, None) or double.handle(request)

    time_ = FakeTime()
    forge = GitLabForge(
        "platform/gitops",
        Secret(TOKEN, "test"),
        base_url=BASE,
        transport=httpx.MockTransport(handle),
        clock=time_.clock,
        sleep=time_.sleep,
        limits=WriteLimits(min_seconds_between_writes=0.0),
    )
    forge.comment(7, "hello")

    assert time_.sleeps == [12.0]
    assert double.violations == []


def test_open_quota_counts_only_bot_branches(double: GitLabDouble) -> None:
    for iid in range(10, 13):
        mr = recorded("merge_request.json")
        mr.update(iid=iid, source_branch=f"daytwo/ns/w{iid}")
        double.merge_requests[iid] = mr
    human = recorded("merge_request.json")
    human.update(iid=20, source_branch="feature/login")
    double.merge_requests[20] = human
    forge = make_forge(
        double, limits=WriteLimits(max_open_pull_requests=4, min_seconds_between_writes=0)
    )

    assert forge.count_open_pull_requests() == 4  # !7 and !10-!12; not feature/login, not closed !6
    with pytest.raises(PrQuotaExceededError) as caught:
        forge.create_pull_request(
            head_branch="daytwo/ns/new", base_branch="main", title="t", body="b"
        )
    assert caught.value.kind == "open"
    assert double.violations == []
