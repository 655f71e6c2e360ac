"""GitRepo against real git: commits land on the branch, the user's checkout never moves."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pipeline.errors import SinkError
from pipeline.prsink.git import GitRepo

pytestmark = pytest.mark.integration


def git(root: Path, *arguments: str) -> str:
    completed = subprocess.run(
        ["git", *arguments], cwd=root, capture_output=True, text=True, check=True
    )
    return completed.stdout.strip()


def init_repo(root: Path, branch: str = "main") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "--quiet", "-b", branch)
    git(root, "config", "user.name", "Someone")
    git(root, "config", "user.email", "someone@example.com")
    (root / "apps").mkdir()
    (root / "apps" / "web.yaml").write_text("kind: Deployment\n", encoding="utf-8")
    (root / "with space.yaml").write_text("a: 1\n", encoding="utf-8")
    (root / "binary.yaml").write_bytes(b"\xff\xfe\x00")
    git(root, "add", ".")
    git(root, "commit", "--quiet", "-m", "initial")
    return root


@pytest.fixture
def repo(tmp_path: Path) -> GitRepo:
    return GitRepo(init_repo(tmp_path / "gitops"))


def commit(repo: GitRepo, files: dict[str, str], branch: str = "daytwo/shop/web") -> str | None:
    return repo.commit_on_branch(
        branch,
        "main",
        files,
        message="daytwo: right-size shop/web",
        author_name="daytwo bot",
        author_email="bot@daytwo.invalid",
    )


def test_default_branch_prefers_main_then_master_then_head(tmp_path: Path) -> None:
    assert GitRepo(init_repo(tmp_path / "a")).default_branch() == "main"
    assert GitRepo(init_repo(tmp_path / "b", "master")).default_branch() == "master"
    assert GitRepo(init_repo(tmp_path / "c", "trunk")).default_branch() == "trunk"
    empty = tmp_path / "d"
    empty.mkdir()
    git(empty, "init", "--quiet")
    with pytest.raises(SinkError, match="default branch"):
        GitRepo(empty).default_branch()


def test_reads_files_at_a_ref(repo: GitRepo) -> None:
    assert repo.read_file_at("main", "apps/web.yaml") == "kind: Deployment\n"
    assert repo.read_file_at("main", "missing.yaml") is None
    assert sorted(repo.list_files_at("main")) == [
        "apps/web.yaml",
        "binary.yaml",
        "with space.yaml",
    ]
    assert repo.read_files_at(
        "main", ["with space.yaml", "missing.yaml", "apps", "binary.yaml", "apps/web.yaml"]
    ) == {"with space.yaml": "a: 1\n", "apps/web.yaml": "kind: Deployment\n"}
    with pytest.raises(SinkError, match="not a commit"):
        repo.read_file_at("no-such-branch", "apps/web.yaml")


def test_commit_creates_the_branch_and_leaves_the_checkout_alone(repo: GitRepo) -> None:
    root = repo.path
    (root / "apps" / "web.yaml").write_text("kind: Deployment  # local edit\n", encoding="utf-8")
    (root / "untracked.txt").write_text("mine\n", encoding="utf-8")
    status_before = git(root, "status", "--porcelain")
    head_before = git(root, "rev-parse", "HEAD")

    sha = commit(repo, {"apps/web.yaml": "kind: Deployment\nx: 1\n", ".daytwo/PR.md": "# t\n"})

    assert sha is not None
    assert repo.branch_exists("daytwo/shop/web")
    assert git(root, "rev-parse", "daytwo/shop/web") == sha
    assert git(root, "rev-parse", f"{sha}^") == head_before
    assert repo.read_file_at("daytwo/shop/web", "apps/web.yaml") == "kind: Deployment\nx: 1\n"
    assert git(root, "status", "--porcelain") == status_before
    assert git(root, "rev-parse", "HEAD") == head_before
    assert git(root, "symbolic-ref", "--short", "HEAD") == "main"
    assert (root / "apps" / "web.yaml").read_text() == "kind: Deployment  # local edit\n"
    assert len(git(root, "worktree", "list", "--porcelain").split("\n\n")) == 1
    message = git(root, "log", "-1", "--format=%an <%ae>%n%B", sha)
    assert message.startswith("daytwo bot <bot@daytwo.invalid>\ndaytwo: right-size shop/web")
    assert "Signed-off-by: daytwo bot <bot@daytwo.invalid>" in message


def test_same_content_makes_no_commit_and_changes_extend_the_branch(repo: GitRepo) -> None:
    files = {"apps/web.yaml": "kind: Deployment\nx: 1\n"}
    first = commit(repo, files)
    assert first is not None
    assert commit(repo, files) is None
    assert git(repo.path, "rev-parse", "daytwo/shop/web") == first
    second = commit(repo, {"apps/web.yaml": "kind: Deployment\nx: 2\n"})
    assert second is not None
    assert git(repo.path, "rev-parse", f"{second}^") == first
    # Content equal to the base makes no branch at all.
    assert commit(repo, {"apps/web.yaml": "kind: Deployment\n"}, branch="daytwo/shop/other") is None
    assert not repo.branch_exists("daytwo/shop/other")


def test_line_endings_and_bytes_are_written_exactly(repo: GitRepo) -> None:
    text = "a: 1\r\nb: 'é'\r\n"
    sha = commit(repo, {"apps/crlf.yaml": text})
    assert sha is not None
    raw = subprocess.run(
        ["git", "cat-file", "blob", f"{sha}:apps/crlf.yaml"],
        cwd=repo.path,
        capture_output=True,
        check=True,
    ).stdout
    assert raw == text.encode("utf-8")


def test_user_hooks_do_not_run(repo: GitRepo) -> None:
    hooks = repo.path / ".git" / "hooks"
    for hook in ("pre-commit", "post-checkout", "commit-msg"):
        path = hooks / hook
        path.write_text(f"#!/bin/sh\ntouch '{repo.path}/ran-{hook}'\nexit 1\n", encoding="utf-8")
        path.chmod(0o755)
    assert commit(repo, {"apps/web.yaml": "kind: Deployment\ny: 1\n"}) is not None
    assert not list(repo.path.glob("ran-*"))


@pytest.mark.parametrize("bad", ["../escape.yaml", "/etc/passwd", ".git/config", "a//b", "a\\b"])
def test_paths_outside_the_repository_are_refused(repo: GitRepo, bad: str) -> None:
    with pytest.raises(SinkError, match="refusing to write"):
        commit(repo, {bad: "x"})


def test_checked_out_branch_bad_branch_and_bad_base_are_errors(repo: GitRepo) -> None:
    with pytest.raises(SinkError, match="checked out"):
        commit(repo, {"apps/web.yaml": "x: 1\n"}, branch="main")
    with pytest.raises(SinkError, match="not a valid branch name"):
        commit(repo, {"apps/web.yaml": "x: 1\n"}, branch="bad..name")
    with pytest.raises(SinkError, match="not a commit"):
        repo.commit_on_branch(
            "daytwo/x/y",
            "nope",
            {"a.yaml": "x"},
            message="m",
            author_name="n",
            author_email="e@x",
        )
    assert len(git(repo.path, "worktree", "list", "--porcelain").split("\n\n")) == 1


def test_git_failure_carries_stderr(tmp_path: Path) -> None:
    with pytest.raises(SinkError, match="not a git repository"):
        GitRepo(tmp_path).run("status")
