"""Start daytwo processes as children and watch topics: shared by the demo and tests.

A worker, agent or sink runs as its own OS process (``python -m pipeline.cli ...``),
configured only through ``DAYTWO_*`` environment variables, exactly as an operator
would run it. :func:`read_topic` and :func:`wait_for_records` watch what they produce.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from aiokafka import AIOKafkaConsumer


@dataclass
class Child:
    """A daytwo child process with its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    _log: IO[bytes] | None = field(default=None, repr=False)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, wait, then SIGKILL; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        if self._log is not None:
            self._log.close()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL at once (crash tests)."""
        self.process.kill()
        self.process.wait(10)
        if self._log is not None:
            self._log.close()

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the child's log, for error messages."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def daytwo_env(settings_env: Mapping[str, str]) -> dict[str, str]:
    """This process's environment plus ``settings_env`` (``DAYTWO_*`` values)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAYTWO_")}
    env.update(settings_env)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def start_child(
    name: str, args: list[str], settings_env: Mapping[str, str], log_dir: Path
) -> Child:
    """Run ``daytwo <args>`` as a child with its own log file in ``log_dir``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    log = log_path.open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", *args],
        env=daytwo_env(settings_env),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    return Child(name, process, log_path, log)


async def read_topic(
    bootstrap: str,
    topic: str,
    *,
    until: Callable[[list[tuple[bytes | None, bytes | None]]], bool],
    timeout: float,  # noqa: ASYNC109 - a deadline for the whole read, checked per poll
    alive: Callable[[], str | None] | None = None,
) -> list[tuple[bytes | None, bytes | None]]:
    """Read ``topic`` from the start until ``until(records)`` holds or ``timeout``.

    ``alive`` may return a reason to give up early (e.g. a child died). Returns the
    records read (key, value) in order; the caller asserts on them.
    """
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=16 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    records: list[tuple[bytes | None, bytes | None]] = []
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not until(records):
            if alive is not None and alive() is not None:
                break
            batches = await consumer.getmany(timeout_ms=500)
            for tp in sorted(batches, key=lambda t: t.partition):
                records.extend((m.key, m.value) for m in batches[tp])
    finally:
        await consumer.stop()
    return records


def wait_for_records(
    bootstrap: str,
    topic: str,
    until: Callable[[list[tuple[bytes | None, bytes | None]]], bool],
    timeout: float,
    alive: Callable[[], str | None] | None = None,
) -> list[tuple[bytes | None, bytes | None]]:
    """Blocking form of :func:`read_topic`."""
    return asyncio.run(read_topic(bootstrap, topic, until=until, timeout=timeout, alive=alive))
