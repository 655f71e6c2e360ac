"""GitRepo against real git: commits land on the branch, the user's checkout never moves."""

from __future__ import annotations

import base64
import http.server
import os
import subprocess
import threading
from pathlib import Path

import pytest

from pipeline.errors import SinkError
from pipeline.prsink.forge import Secret
from pipeline.prsink.git import (
    SET_TRAILER,
    CommitAuthor,
    CommitInfo,
    GitCredentials,
    GitRepo,
    check_remote_url,
)

pytestmark = pytest.mark.integration


def git(root: Path, *arguments: str, check: bool = True) -> str:
    completed = subprocess.run(
        ["git", *arguments], cwd=root, capture_output=True, text=True, check=check
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


# -- remotes: a real bare remote, pushes with a lease, tokens through GIT_ASKPASS ----------


BOT = CommitAuthor("daytwo", "bot@daytwo.invalid")


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    """A bare remote whose main holds the seed repository's history."""
    seed = init_repo(tmp_path / "seed")
    bare = tmp_path / "remote.git"
    git(tmp_path, "init", "--bare", "--quiet", "-b", "main", str(bare))
    git(seed, "push", "--quiet", str(bare), "main")
    return bare


def human_clone(remote: Path, where: Path) -> Path:
    git(where.parent, "clone", "--quiet", str(remote), str(where))
    git(where, "config", "user.name", "Alice")
    git(where, "config", "user.email", "alice@example.com")
    return where


def test_clone_fetch_commit_on_base_and_push(remote: Path, tmp_path: Path) -> None:
    clone = GitRepo.open_clone(str(remote), tmp_path / "clone")
    clone.fetch()
    assert clone.remote_default_branch() == "main"
    base = "refs/remotes/origin/main"
    sha = clone.commit_on_base(
        "daytwo/shop/web",
        base,
        {"apps/web.yaml": "kind: Deployment\nx: 1\n"},
        message=f"m\n\n{SET_TRAILER}: {'a' * 64}\n",
        author=BOT,
    )
    assert sha is not None
    assert clone.push("daytwo/shop/web", sha, expected=None)
    assert git(remote, "rev-parse", "refs/heads/daytwo/shop/web") == sha
    [info] = clone.commits_between(base, sha)
    assert info == CommitInfo(sha, BOT.email, BOT.email, "a" * 64)
    assert info.is_by(BOT.email)
    assert not info.is_by("alice@example.com")
    body = git(remote, "log", "-1", "--format=%B", sha)
    assert "Signed-off-by: daytwo <bot@daytwo.invalid>" in body
    # Re-opening the clone keeps it and updates the URL.
    again = GitRepo.open_clone(str(remote), tmp_path / "clone")
    assert again.resolve_optional("refs/remotes/origin/daytwo/shop/web") == sha


def test_force_push_is_a_lease_a_human_push_in_between_wins(remote: Path, tmp_path: Path) -> None:
    clone = GitRepo.open_clone(str(remote), tmp_path / "clone")
    clone.fetch()
    base = "refs/remotes/origin/main"
    branch = "daytwo/shop/web"

    def propose(text: str) -> str:
        sha = clone.commit_on_base(
            branch,
            base,
            {"apps/web.yaml": text},
            message=f"m\n\n{SET_TRAILER}: {'b' * 64}\n",
            author=BOT,
        )
        assert sha is not None
        return sha

    first = propose("x: 1\n")
    assert clone.push(branch, first, expected=None)
    # The bot's own update: a forced, non-fast-forward push, allowed by the lease.
    second = propose("x: 2\n")
    # Rebuilt on the base, not on top of the first: the push is not a fast-forward.
    assert git(clone.path, "rev-parse", f"{second}^") == git(remote, "rev-parse", "main")
    assert clone.push(branch, second, expected=first)
    assert git(remote, "rev-parse", f"refs/heads/{branch}") == second
    # A human pushes on top; the bot's next push still expects `second`: refused.
    alice = human_clone(remote, tmp_path / "alice")
    git(alice, "checkout", "--quiet", branch)
    (alice / "apps" / "web.yaml").write_text("x: 99  # keep\n", encoding="utf-8")
    git(alice, "commit", "--quiet", "-am", "hands off")
    git(alice, "push", "--quiet", "origin", branch)
    human = git(alice, "rev-parse", "HEAD")
    third = propose("x: 3\n")
    assert not clone.push(branch, third, expected=second)
    assert git(remote, "rev-parse", f"refs/heads/{branch}") == human
    # The same with a branch that must not exist yet.
    assert not clone.push(branch, third, expected=None)
    clone.fetch()
    commits = clone.commits_between(base, human)
    assert [c.is_by(BOT.email) for c in commits] == [False, True]


def test_a_token_in_the_url_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SinkError, match="token") as raised:
        GitRepo.open_clone("https://x:ghp_secret@github.com/o/r.git", tmp_path / "c")
    assert "ghp_secret" not in str(raised.value)
    assert check_remote_url("https://github.com/o/r.git") == "https://github.com/o/r.git"


class _GitHttp(http.server.BaseHTTPRequestHandler):
    """git's smart HTTP protocol through the real ``git http-backend``, behind Basic auth."""

    root: Path
    expected: str
    seen: list[str]

    def log_message(self, format: str, *args: object) -> None:
        return

    def _serve(self) -> None:
        header = self.headers.get("Authorization", "")
        self.seen.append(header)
        if header != "Basic " + base64.b64encode(self.expected.encode()).decode():
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        environment = {
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "REQUEST_METHOD": self.command,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(length),
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
            "REMOTE_USER": "daytwo",
            "REMOTE_ADDR": "127.0.0.1",
            "PATH": os.environ.get("PATH", ""),
        }
        output = subprocess.run(
            ["git", "http-backend"], input=body, env=environment, capture_output=True, check=True
        ).stdout
        head, _, payload = output.partition(b"\r\n\r\n")
        status = 200
        headers = []
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(": ")
            if name.lower() == "status":
                status = int(value.split()[0])
            else:
                headers.append((name, value))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = _serve  # noqa: N815 - http.server's naming
    do_POST = _serve  # noqa: N815 - http.server's naming


def test_the_token_reaches_git_over_http_only_through_askpass(remote: Path, tmp_path: Path) -> None:
    token = "s3cret-token-123"
    git(remote, "config", "http.receivepack", "true")
    seen: list[str] = []
    handler = type(
        "Handler",
        (_GitHttp,),
        {"root": remote.parent, "expected": f"x-access-token:{token}", "seen": seen},
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{remote.name}"
        credentials = GitCredentials("x-access-token", lambda: Secret(token, "$TEST_TOKEN"))
        clone = GitRepo.open_clone(url, tmp_path / "clone", credentials=credentials)
        clone.fetch()
        assert clone.remote_default_branch() == "main"
        sha = clone.commit_on_base(
            "daytwo/shop/web",
            "refs/remotes/origin/main",
            {"apps/web.yaml": "x: 1\n"},
            message="m",
            author=BOT,
        )
        assert sha is not None
        assert clone.push("daytwo/shop/web", sha, expected=None)
        assert git(remote, "rev-parse", "refs/heads/daytwo/shop/web") == sha
        assert any(header.startswith("Basic ") for header in seen)
        # Nowhere on disk: not in the clone's config, not in the remote URL.
        for path in (tmp_path / "clone").rglob("*"):
            if path.is_file():
                assert token.encode() not in path.read_bytes(), path
        # A wrong token fails, and the error does not quote it.
        wrong = GitCredentials("x-access-token", lambda: Secret("wrong-token-456", "$X"))
        denied = GitRepo.open_clone(url, tmp_path / "denied", credentials=wrong)
        with pytest.raises(SinkError) as raised:
            denied.fetch()
        assert "wrong-token-456" not in str(raised.value)
        # Without credentials git may not prompt: it fails instead of hanging.
        with pytest.raises(SinkError):
            GitRepo.open_clone(url, tmp_path / "anonymous").fetch()
    finally:
        server.shutdown()
        server.server_close()
