"""A thin wrapper over the ``git`` command line for the PR sink.

Why the CLI and no library: the user's repository is whatever ``git`` on this machine
says it is (config, worktrees, hooks, attributes, LFS, safe.directory), and only git
itself honours all of that; a library would re-implement part of it and disagree on
the rest. Commands run without a shell, with explicit argument lists.

Commits are made in a temporary *linked worktree* so the user's checkout, index and
current branch are never touched, and a branch ref is moved with a compare-and-swap
(``update-ref <new> <old>``) so a concurrent writer is detected, not overwritten. The
bot's commits run no hooks and are not GPG-signed (a bot has no key; review happens in
the PR).

Talking to a remote (:meth:`GitRepo.open_clone`, :meth:`GitRepo.fetch`,
:meth:`GitRepo.push`): the sink keeps a bare clone of its own. An https token never goes
into a URL or an argument list (both show up in ``ps``, logs and ``.git/config``): git
asks a tiny ``GIT_ASKPASS`` script, which echoes the token from the child's environment,
and the user's credential helpers are switched off so nothing stores it. Pushes use
``--force-with-lease`` with the exact remote head the sink checked, so a human's push in
between is never overwritten.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from pipeline.errors import SinkError
from pipeline.prsink.forge import Secret, redact

_ZERO_SHA = "0" * 40
# Variables that would point git at another repository or index than ours.
_GIT_LOCATION_VARIABLES = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
)


@dataclass(frozen=True)
class CommitAuthor:
    """Who the sink's commits are by (also the committer and the Signed-off-by line)."""

    name: str = "daytwo"
    email: str = "daytwo@localhost"


@dataclass(frozen=True)
class GitCredentials:
    """How git authenticates to an https remote: a user name and a token source.

    ``token`` is called for every remote command, so an expiring GitHub App
    installation token is refreshed the same way the forge client refreshes it.
    GitHub takes ``x-access-token`` as the user name for App and personal tokens,
    GitLab ``oauth2``.
    """

    username: str
    token: Callable[[], Secret]


@dataclass(frozen=True)
class CommitInfo:
    """One commit's identities and daytwo trailer, enough to tell the bot's from a human's."""

    sha: str
    author_email: str
    committer_email: str
    set_hash: str | None

    def is_by(self, email: str) -> bool:
        """Authored and committed with ``email`` and carrying daytwo's trailer."""
        wanted = email.casefold()
        return (
            self.author_email.casefold() == wanted
            and self.committer_email.casefold() == wanted
            and self.set_hash is not None
        )


#: The trailer every bot commit carries: which recommendation set it proposes.
SET_TRAILER = "Daytwo-Recommendation-Set"

# Answers git's "Username for ...:" / "Password for ...:" prompts from the environment
# of the git child process; holds no secret itself.
_ASKPASS_SCRIPT = """#!/bin/sh
case "$1" in
  Username*) printf '%s\\n' "$DAYTWO_ASKPASS_USERNAME" ;;
  *) printf '%s\\n' "$DAYTWO_ASKPASS_TOKEN" ;;
esac
"""


def check_remote_url(url: str) -> str:
    """``url`` if it carries no password; a token belongs in the environment, not a URL."""
    parts = urlsplit(url)
    if parts.scheme and parts.password:
        raise SinkError(
            f"the GitOps remote URL for {parts.hostname} has a password or token in it; "
            "remove it and set the token's environment variable or file instead"
        )
    return url


def _checked_relative_path(path: str) -> PurePosixPath:
    relative = PurePosixPath(path)
    if (
        relative.is_absolute()
        or not relative.parts
        or any(part in ("..", "") for part in relative.parts)
        or relative.parts[0] == ".git"
        or "\\" in path
        or relative.as_posix() != path
    ):
        raise SinkError(f"refusing to write {path!r}: not a plain path inside the repository")
    return relative


class GitRepo:
    """One local git repository, driven through the ``git`` executable."""

    def __init__(
        self, path: Path, *, git: str = "git", credentials: GitCredentials | None = None
    ) -> None:
        self.path = Path(path)
        self.git = git
        self.credentials = credentials
        self._askpass: Path | None = None
        self._secret_values: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"GitRepo({str(self.path)!r})"

    def _askpass_script(self) -> Path:
        if self._askpass is None:
            directory = Path(tempfile.mkdtemp(prefix="daytwo-askpass-"))
            weakref.finalize(self, shutil.rmtree, directory, True)
            script = directory / "askpass.sh"
            script.write_text(_ASKPASS_SCRIPT, encoding="utf-8")
            script.chmod(stat.S_IRWXU)
            self._askpass = script
        return self._askpass

    def _credential_environment(self) -> dict[str, str]:
        """Askpass wiring for remote commands; empty without credentials."""
        if self.credentials is None:
            return {}
        secret = self.credentials.token().reveal()
        self._secret_values = (secret,)
        return {
            "GIT_ASKPASS": str(self._askpass_script()),
            "DAYTWO_ASKPASS_USERNAME": self.credentials.username,
            "DAYTWO_ASKPASS_TOKEN": secret,
            # An empty credential.helper resets the user's helpers: nothing stores the token.
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "credential.helper",
            "GIT_CONFIG_VALUE_0": "",
        }

    def _environment(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        environment = {
            key: value for key, value in os.environ.items() if key not in _GIT_LOCATION_VARIABLES
        }
        environment["GIT_TERMINAL_PROMPT"] = "0"
        environment["LC_ALL"] = "C"
        if extra:
            environment.update(extra)
        return environment

    def run(
        self,
        *arguments: str,
        cwd: Path | None = None,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``git <arguments>`` in the repository; failure is a SinkError with stderr."""
        command = [self.git, *arguments]
        try:
            completed = subprocess.run(
                command,
                cwd=cwd or self.path,
                input=stdin,
                capture_output=True,
                env=self._environment(env),
                check=False,
            )
        except OSError as error:
            raise SinkError(f"cannot run {self.git!r}: {error}") from error
        if check and completed.returncode != 0:
            stderr = redact(
                completed.stderr.decode("utf-8", "replace").strip(), *self._secret_values
            )
            raise SinkError(
                f"git {' '.join(arguments)} failed in {cwd or self.path} "
                f"(exit {completed.returncode}): {stderr}"
            )
        return completed

    def _text(self, *arguments: str) -> str:
        return self.run(*arguments).stdout.decode("utf-8", "replace").strip()

    def resolve(self, ref: str) -> str:
        """The commit sha ``ref`` points at; SinkError if it is not a commit."""
        completed = self.run("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
        if completed.returncode != 0:
            raise SinkError(f"{ref!r} is not a commit in {self.path}")
        return completed.stdout.decode().strip()

    def branch_exists(self, branch: str) -> bool:
        """Whether ``refs/heads/<branch>`` exists."""
        completed = self.run(
            "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}^{{commit}}", check=False
        )
        return completed.returncode == 0

    def default_branch(self) -> str:
        """The branch PRs target: origin's HEAD, else ``main``, else ``master``, else HEAD's.

        Why not simply the current branch: the user may have a feature branch checked out,
        and a right-sizing PR belongs on the branch the GitOps tool deploys.
        """
        completed = self.run(
            "symbolic-ref", "--quiet", "--short", "refs/remotes/origin/HEAD", check=False
        )
        if completed.returncode == 0:
            remote_head = completed.stdout.decode().strip()
            branch = remote_head.removeprefix("origin/")
            if self.branch_exists(branch):
                return branch
        for candidate in ("main", "master"):
            if self.branch_exists(candidate):
                return candidate
        completed = self.run("symbolic-ref", "--quiet", "--short", "HEAD", check=False)
        branch = completed.stdout.decode().strip()
        if completed.returncode == 0 and self.branch_exists(branch):
            return branch
        raise SinkError(f"cannot tell the default branch of {self.path}: pass a base branch")

    def list_files_at(self, ref: str) -> list[str]:
        """Every file path (POSIX, repo-relative) in the tree of ``ref``."""
        self.resolve(ref)
        output = self.run("ls-tree", "-r", "-z", "--name-only", ref).stdout
        return [name.decode("utf-8", "surrogateescape") for name in output.split(b"\0") if name]

    def read_file_at(self, ref: str, path: str) -> str | None:
        """The UTF-8 text of ``path`` at ``ref``, or None if the file does not exist there."""
        self.resolve(ref)
        completed = self.run("cat-file", "blob", f"{ref}:{path}", check=False)
        if completed.returncode != 0:
            return None
        try:
            return completed.stdout.decode("utf-8")
        except UnicodeDecodeError as error:
            raise SinkError(f"{path} at {ref} is not UTF-8 text") from error

    def read_files_at(self, ref: str, paths: Iterable[str]) -> dict[str, str]:
        """Several files at ``ref`` in one ``git cat-file --batch`` call.

        Files that are missing, not blobs or not UTF-8 are left out; the caller decides
        whether that matters.
        """
        wanted = [path for path in paths if "\n" not in path]
        if not wanted:
            return {}
        commit = self.resolve(ref)
        request = "".join(f"{commit}:{path}\n" for path in wanted).encode(
            "utf-8", "surrogateescape"
        )
        output = self.run("cat-file", "--batch", stdin=request).stdout
        files: dict[str, str] = {}
        position = 0
        for path in wanted:
            header_end = output.index(b"\n", position)
            header = output[position:header_end]
            position = header_end + 1
            if header.endswith((b" missing", b" ambiguous")):
                continue
            _, object_type, size_text = header.split()
            size = int(size_text)
            content = output[position : position + size]
            position += size + 1
            if object_type != b"blob":
                continue
            try:
                files[path] = content.decode("utf-8")
            except UnicodeDecodeError:
                continue
        return files

    def _checked_out_at(self, branch: str) -> str | None:
        output = self._text("worktree", "list", "--porcelain")
        worktree = None
        for line in output.splitlines():
            if line.startswith("worktree "):
                worktree = line.removeprefix("worktree ")
            elif line == f"branch refs/heads/{branch}":
                return worktree
        return None

    def commit_on_branch(
        self,
        branch: str,
        base: str,
        files: Mapping[str, str],
        *,
        message: str,
        author_name: str,
        author_email: str,
        signoff: bool = True,
    ) -> str | None:
        """Commit ``files`` (repo-relative path → full text) on ``branch``; return the sha.

        The branch starts from ``base`` if it does not exist, else from its own tip.
        Returns None, creating or moving nothing, when the files already have exactly
        this content there (no empty commits). The work happens in a temporary linked
        worktree that is always removed.
        """
        self._check_branch_name(branch)
        exists = self.branch_exists(branch)
        start = self.resolve(f"refs/heads/{branch}" if exists else base)
        sha = self._commit_in_worktree(
            start,
            files,
            message=message,
            author=CommitAuthor(author_name, author_email),
            signoff=signoff,
        )
        if sha is None:
            return None
        expected_old = start if exists else _ZERO_SHA
        self.run("update-ref", "-m", "daytwo sink", f"refs/heads/{branch}", sha, expected_old)
        return sha

    def commit_on_base(
        self,
        branch: str,
        base: str,
        files: Mapping[str, str],
        *,
        message: str,
        author: CommitAuthor,
        signoff: bool = True,
    ) -> str | None:
        """One fresh commit of ``files`` on top of ``base``, set as the local ``branch``.

        Why not on the branch's tip: a PR bot's branch is rebuilt on the current base for
        every new proposal (one commit, no merge conflicts with a base that moved on), and
        then force-pushed. Returns None, moving nothing, when ``base`` already has exactly
        this content.
        """
        self._check_branch_name(branch)
        start = self.resolve(base)
        sha = self._commit_in_worktree(
            start, files, message=message, author=author, signoff=signoff
        )
        if sha is None:
            return None
        old = self.resolve_optional(f"refs/heads/{branch}") or _ZERO_SHA
        self.run("update-ref", "-m", "daytwo sink", f"refs/heads/{branch}", sha, old)
        return sha

    def _check_branch_name(self, branch: str) -> None:
        if self.run("check-ref-format", "--branch", branch, check=False).returncode != 0:
            raise SinkError(f"{branch!r} is not a valid branch name")
        checked_out = self._checked_out_at(branch)
        if checked_out is not None:
            raise SinkError(
                f"branch {branch} is checked out in {checked_out}; switch that checkout to "
                "another branch so the sink can update it"
            )

    def _commit_in_worktree(
        self,
        start: str,
        files: Mapping[str, str],
        *,
        message: str,
        author: CommitAuthor,
        signoff: bool,
    ) -> str | None:
        """Commit ``files`` on top of ``start`` in a scratch worktree; None if nothing changes."""
        relative_paths = {path: _checked_relative_path(path) for path in files}
        identity = {
            "GIT_AUTHOR_NAME": author.name,
            "GIT_AUTHOR_EMAIL": author.email,
            "GIT_COMMITTER_NAME": author.name,
            "GIT_COMMITTER_EMAIL": author.email,
        }
        scratch = Path(tempfile.mkdtemp(prefix="daytwo-sink-"))
        hooks = scratch / "no-hooks"
        hooks.mkdir()
        worktree = scratch / "worktree"
        no_hooks = ("-c", f"core.hooksPath={hooks}")
        added = False
        try:
            self.run(*no_hooks, "worktree", "add", "--detach", "--quiet", str(worktree), start)
            added = True
            for path, relative in relative_paths.items():
                target = worktree.joinpath(*relative.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(files[path], encoding="utf-8", newline="")
            # --force: a .gitignore of the user's (say, of .daytwo/) must not hide our files.
            self.run("add", "--force", "--", *relative_paths, cwd=worktree)
            if self.run("diff", "--cached", "--quiet", cwd=worktree, check=False).returncode == 0:
                return None
            commit_arguments = [
                *no_hooks,
                "-c",
                "commit.gpgsign=false",
                "commit",
                "--quiet",
                "--no-verify",
                "-m",
                message,
            ]
            if signoff:
                commit_arguments.append("--signoff")
            self.run(*commit_arguments, cwd=worktree, env=identity)
            return self._text("-C", str(worktree), "rev-parse", "HEAD")
        finally:
            if added:
                self.run("worktree", "remove", "--force", str(worktree), check=False)
            shutil.rmtree(scratch, ignore_errors=True)
            self.run("worktree", "prune", check=False)

    # -- remotes

    @classmethod
    def open_clone(
        cls,
        remote_url: str,
        path: Path,
        *,
        remote: str = "origin",
        credentials: GitCredentials | None = None,
        git: str = "git",
    ) -> GitRepo:
        """The sink's own bare clone of ``remote_url`` at ``path``, created if missing.

        Why bare and the sink's own: the sink never needs a checkout (it commits in
        scratch worktrees), and a clone nobody works in cannot have local edits or a
        checked-out daytwo branch. Call :meth:`fetch` before reading refs.
        """
        check_remote_url(remote_url)
        path = Path(path)
        repo = cls(path, git=git, credentials=credentials)
        if path.exists() and any(path.iterdir()):
            if repo.run("rev-parse", "--git-dir", check=False).returncode != 0:
                raise SinkError(f"{path} exists and is not a git repository; empty it or move it")
            if repo.run("remote", "get-url", remote, check=False).returncode == 0:
                repo.run("remote", "set-url", remote, remote_url)
            else:
                repo.run("remote", "add", remote, remote_url)
            return repo
        path.mkdir(parents=True, exist_ok=True)
        repo.run("init", "--bare", "--quiet")
        repo.run("remote", "add", remote, remote_url)
        return repo

    def _remote_environment(self) -> dict[str, str]:
        return self._credential_environment()

    def fetch(self, remote: str = "origin") -> None:
        """Bring every remote branch into ``refs/remotes/<remote>/``; deleted ones go."""
        self.run(
            "fetch",
            "--quiet",
            "--prune",
            "--no-tags",
            remote,
            f"+refs/heads/*:refs/remotes/{remote}/*",
            env=self._remote_environment(),
        )

    def remote_default_branch(self, remote: str = "origin") -> str:
        """The branch the remote's HEAD names (what the GitOps tool deploys, as a rule)."""
        output = self.run(
            "ls-remote", "--symref", remote, "HEAD", env=self._remote_environment()
        ).stdout.decode("utf-8", "replace")
        for line in output.splitlines():
            if line.startswith("ref: refs/heads/") and line.endswith("\tHEAD"):
                return line.removeprefix("ref: refs/heads/").removesuffix("\tHEAD")
        raise SinkError(f"cannot tell the default branch of remote {remote!r}: pass a base branch")

    def resolve_optional(self, ref: str) -> str | None:
        """The commit ``ref`` points at, or None when there is no such ref."""
        completed = self.run("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
        return completed.stdout.decode().strip() if completed.returncode == 0 else None

    def commits_between(self, base: str, head: str) -> list[CommitInfo]:
        """Commits reachable from ``head`` but not from ``base``, newest first."""
        output = self._text(
            "log",
            "-z",
            f"--format=%H%x1f%ae%x1f%ce%x1f%(trailers:key={SET_TRAILER},valueonly,separator=%x20)",
            f"{base}..{head}",
        )
        commits = []
        for record in output.split("\0"):
            if not record.strip():
                continue
            sha, author_email, committer_email, trailer = record.strip("\n").split("\x1f")
            hashes = trailer.split()
            commits.append(
                CommitInfo(sha, author_email, committer_email, hashes[-1] if hashes else None)
            )
        return commits

    def push(self, branch: str, sha: str, *, expected: str | None, remote: str = "origin") -> bool:
        """Set the remote's ``branch`` to ``sha`` if, and only if, it is now at ``expected``.

        ``expected`` None means the branch must not exist yet. Returns False when the
        remote moved since the caller looked (someone pushed: fetch and decide again);
        any other failure is a SinkError. A forced update happens only through this lease.
        """
        lease = f"refs/heads/{branch}:{expected or ''}"
        completed = self.run(
            "push",
            "--porcelain",
            "--no-verify",
            f"--force-with-lease={lease}",
            remote,
            f"{sha}:refs/heads/{branch}",
            env=self._remote_environment(),
            check=False,
        )
        if completed.returncode == 0:
            return True
        report = completed.stdout.decode("utf-8", "replace") + completed.stderr.decode(
            "utf-8", "replace"
        )
        if "stale info" in report or "fetch first" in report or "non-fast-forward" in report:
            return False
        raise SinkError(
            f"git push of {branch} to {remote} failed (exit {completed.returncode}): "
            + redact(report.strip(), *self._secret_values)
        )
