"""One exception root for daytwo, with a short tree under it.

Every error daytwo raises on purpose derives from :class:`DaytwoError`, so callers
(the CLI, Faust agents, the sink) can tell an expected, explainable failure from a
bug. Messages say what went wrong and what to do about it.
"""

from __future__ import annotations


class DaytwoError(Exception):
    """Root of every error daytwo raises deliberately."""


class ConfigError(DaytwoError):
    """Settings, profile or mapping files are invalid; the message names the field."""


class InvalidMessageError(DaytwoError):
    """A message failed decoding or schema validation; it goes to the dead-letter topic."""

    def __init__(self, reason: str, *, stage: str = "validate") -> None:
        super().__init__(reason)
        self.reason = reason
        self.stage = stage


class BrokerError(DaytwoError):
    """The Kafka broker could not be started, reached or configured."""


class CollectorError(DaytwoError):
    """A collector could not read its source (cgroup, /proc, trace file)."""


class SinkError(DaytwoError):
    """The PR sink could not locate, patch or commit a workload's manifest."""


class QuantityError(DaytwoError):
    """A Kubernetes quantity ("250m", "1.5Gi") could not be parsed or is out of range."""
