"""Serve GitHub's published OpenAPI description with Prism, for the forge contract tests.

Why Prism: it validates every request against the description (path, query, body) and
answers 422 with the violations in an ``sl-violations`` header when one does not conform,
so a test can assert that GitHub would accept what our client sends, without a network.

Why a trimmed copy: the full ``api.github.com.json`` (13 MB, 800+ paths) takes Prism
about 7 s to load on this machine; the same description cut down to the paths the
client calls, plus every component those reference, loads in under a second. The
operations themselves are copied verbatim. Set ``DAYTWO_CONTRACT_FULL_SPEC=1`` to serve
the untrimmed file instead.

Tools come from ``tests/contract/node_modules`` (``npm ci --prefix tests/contract``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx

CONTRACT_DIR = Path(__file__).resolve().parent
PRISM_BIN = CONTRACT_DIR / "node_modules" / ".bin" / "prism"
GITHUB_SPEC = (
    CONTRACT_DIR / "node_modules" / "@octokit" / "openapi" / "generated" / "api.github.com.json"
)
INSTALL_HINT = "run `npm ci --prefix tests/contract` (Node.js 20+) to install Prism and the spec"

#: Every GitHub endpoint the client calls; a new call must be added here to be served.
GITHUB_PATHS = (
    "/repos/{owner}/{repo}/pulls",
    "/repos/{owner}/{repo}/pulls/{pull_number}",
    "/repos/{owner}/{repo}/pulls/{pull_number}/commits",
    "/repos/{owner}/{repo}/issues/{issue_number}",
    "/repos/{owner}/{repo}/issues/{issue_number}/labels",
    "/repos/{owner}/{repo}/issues/{issue_number}/comments",
    "/repos/{owner}/{repo}/installation",
    "/app/installations/{installation_id}/access_tokens",
)


def _references(node: Any) -> Iterable[str]:
    """Every local ``$ref`` under ``node``."""
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            ref = current.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/components/"):
                yield ref
            stack.extend(current.values())
        elif isinstance(current, list):
            stack.extend(current)


def trim_openapi(spec: dict[str, Any], paths: Iterable[str]) -> dict[str, Any]:
    """``spec`` reduced to ``paths`` and the transitive closure of the components they use.

    Top-level extensions (``x-webhooks``) are dropped: they reference components the
    kept paths do not need and Prism would fail resolving them.
    """
    kept_paths = {path: spec["paths"][path] for path in paths}
    components: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    pending = list(_references(kept_paths))
    while pending:
        ref = pending.pop()
        if ref in seen:
            continue
        seen.add(ref)
        _, _, section, name = ref.split("/", 3)
        node = spec["components"][section][name]
        components.setdefault(section, {})[name] = node
        pending.extend(_references(node))
    trimmed = {key: value for key, value in spec.items() if not key.startswith("x-")}
    trimmed["paths"] = kept_paths
    trimmed["components"] = components
    return trimmed


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class PrismServer:
    """A running ``prism mock`` on 127.0.0.1; stop it with :meth:`stop`."""

    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    start_seconds: float
    _log: TextIO = field(repr=False)

    def stop(self) -> None:
        """Terminate Prism (its own process group) and wait for it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()


def start_prism(spec_path: Path, log_path: Path, *, timeout: float = 90.0) -> PrismServer:
    """Start Prism on a free port and wait until it answers HTTP; raises RuntimeError."""
    if not PRISM_BIN.exists() or not GITHUB_SPEC.exists():
        raise RuntimeError(f"Prism or @octokit/openapi is not installed: {INSTALL_HINT}")
    port = free_port()
    log = log_path.open("w", encoding="utf-8")
    started = time.monotonic()
    process = subprocess.Popen(
        [str(PRISM_BIN), "mock", "--host", "127.0.0.1", "--port", str(port), str(spec_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    server = PrismServer(process, base_url, log_path, 0.0, log)
    deadline = started + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            server.stop()
            tail = log_path.read_text(encoding="utf-8")[-2000:]
            raise RuntimeError(f"Prism exited with {process.returncode}:\n{tail}")
        try:
            # A bare TCP probe: cheap, where an httpx client per try costs an SSL context.
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
        except OSError:
            time.sleep(0.05)
            continue
        server.start_seconds = time.monotonic() - started
        return server
    server.stop()
    raise RuntimeError(f"Prism did not answer within {timeout} s; see {log_path}")


def github_spec_for_prism(directory: Path) -> Path:
    """The description Prism serves: trimmed (default) or the full file."""
    if os.environ.get("DAYTWO_CONTRACT_FULL_SPEC") == "1":
        return GITHUB_SPEC
    spec = json.loads(GITHUB_SPEC.read_text(encoding="utf-8"))
    trimmed = directory / "api.github.com.trimmed.json"
    trimmed.write_text(json.dumps(trim_openapi(spec, GITHUB_PATHS)), encoding="utf-8")
    return trimmed


@dataclass(frozen=True)
class Exchange:
    """One request as the client sent it, and Prism's verdict."""

    method: str
    path: str
    query: str
    sent_headers: httpx.Headers
    body: bytes
    status: int
    request_violations: tuple[dict[str, Any], ...]


class PrismRecordingTransport(httpx.BaseTransport):
    """Forwards to Prism, records each exchange and Prism's request violations.

    The one rewrite: ``Accept: application/vnd.github+json`` becomes
    ``application/json`` on the way to Prism, because GitHub's description lists its
    responses under ``application/json`` and Prism's content negotiation does not know
    that GitHub serves that media type for ``vnd.github+json``. The header the client
    sent is recorded unchanged, and the tests check it.
    """

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()
        self.exchanges: list[Exchange] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        sent_headers = httpx.Headers(request.headers)
        body = request.read()
        forwarded_headers = httpx.Headers(request.headers)
        if forwarded_headers.get("accept") == "application/vnd.github+json":
            forwarded_headers["accept"] = "application/json"
        forwarded = httpx.Request(
            request.method, request.url, headers=forwarded_headers, content=body
        )
        upstream = self._inner.handle_request(forwarded)
        content = upstream.read()
        upstream.close()
        headers = httpx.Headers(upstream.headers)
        headers.pop("content-encoding", None)  # content above is already decoded
        response = httpx.Response(upstream.status_code, headers=headers, content=content)
        violations = json.loads(response.headers.get("sl-violations", "[]"))
        self.exchanges.append(
            Exchange(
                method=request.method,
                path=request.url.path,
                query=request.url.query.decode(),
                sent_headers=sent_headers,
                body=body,
                status=response.status_code,
                request_violations=tuple(
                    v for v in violations if v.get("location", [None])[0] == "request"
                ),
            )
        )
        return response

    def close(self) -> None:
        self._inner.close()
