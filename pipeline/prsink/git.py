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
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pipeline.errors import SinkError

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

    def __init__(self, path: Path, *, git: str = "git") -> None:
        self.path = Path(path)
        self.git = git

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
            stderr = completed.stderr.decode("utf-8", "replace").strip()
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
        relative_paths = {path: _checked_relative_path(path) for path in files}
        if self.run("check-ref-format", "--branch", branch, check=False).returncode != 0:
            raise SinkError(f"{branch!r} is not a valid branch name")
        checked_out = self._checked_out_at(branch)
        if checked_out is not None:
            raise SinkError(
                f"branch {branch} is checked out in {checked_out}; switch that checkout to "
                "another branch so the sink can update it"
            )
        exists = self.branch_exists(branch)
        start = self.resolve(f"refs/heads/{branch}" if exists else base)
        identity = {
            "GIT_AUTHOR_NAME": author_name,
            "GIT_AUTHOR_EMAIL": author_email,
            "GIT_COMMITTER_NAME": author_name,
            "GIT_COMMITTER_EMAIL": author_email,
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
            sha = self._text("-C", str(worktree), "rev-parse", "HEAD")
            expected_old = start if exists else _ZERO_SHA
            self.run(
                "update-ref",
                "-m",
                "daytwo sink",
                f"refs/heads/{branch}",
                sha,
                expected_old,
            )
            return sha
        finally:
            if added:
                self.run("worktree", "remove", "--force", str(worktree), check=False)
            shutil.rmtree(scratch, ignore_errors=True)
            self.run("worktree", "prune", check=False)
