"""Prometheus source: container samples from cAdvisor and kube-state-metrics series.

Why: most clusters already run Prometheus with cAdvisor (kubelet) and kube-state-metrics
scraped, often with weeks of history. Reading it gives daytwo days of history on its first
run (backfill) and a live feed afterwards (continuous mode) without an agent per node.

Pieces:

* :class:`PromQLClient`: ``GET /api/v1/query`` and ``/api/v1/query_range`` on httpx (base
  URL and transport injectable; bearer token or basic auth from env or file, never logged).
  Every failure becomes a :class:`~pipeline.errors.CollectorError` naming the PromQL and
  Prometheus's own error text. It counts queries issued and series returned.
* :class:`PrometheusSource`: plans time chunks and shards so that no query exceeds the
  :class:`QueryBudget`, runs the range queries, resolves each pod's owner chain and yields
  one :class:`~schemas.models.ContainerSampleBatch` per workload per step (source
  ``prometheus``), exactly like the cgroup collector publishes.

Series read (the usual names; ``container!=""`` and ``container!="POD"`` drop the pod
cgroup and the pause container):

==================================================  =========================================
``container_cpu_usage_seconds_total``               ``cpu_usage_cores`` (rate, see below)
``container_memory_working_set_bytes``              ``memory_working_set_bytes`` (max in step)
``container_cpu_cfs_throttled_periods_total`` /
``container_cpu_cfs_periods_total``                 ``cpu_throttled_ratio`` (rate / rate)
``container_oom_events_total`` (or kube-state-      ``oom_kills`` (rate x step, rounded)
metrics restarts whose last reason is OOMKilled)
``kube_pod_container_resource_limits``              ``cpu_limit_cores``, ``memory_limit_bytes``
``kube_pod_container_resource_requests``            requests in :meth:`workload_specs`
``kube_pod_owner``, ``kube_replicaset_owner``,
``kube_job_owner``                                  workload id ``cluster/namespace/Kind/name``
==================================================  =========================================

Rate semantics (what ``cpu_usage_cores`` means)
-----------------------------------------------
A sample at evaluation time ``t`` with step ``S`` and scrape interval ``s`` carries
``rate(container_cpu_usage_seconds_total[W])`` evaluated at ``t`` with the window
``W = S + s/2`` (override: ``rate_window_seconds``). When the counter is scraped on a grid
of ``s`` that ``t`` falls on and ``S = k·s``, the window ``[t-W, t]`` holds exactly the
``k+1`` samples ``C(t-S) … C(t)``: no sample sits on the window's edge (so Prometheus 2's
closed and Prometheus 3's left-open windows agree), Prometheus extrapolates the first
sample by ``s/2`` to the window start and the division by ``W`` cancels that, giving

    cores(t) = (C(t) - C(t-S) + resets) / S

the mean over the step, as the cgroup collector computes it (a counter that went down is
taken to have restarted from 0, so its new value counts as growth). Edges, all Prometheus's:

* the first sample of a series has no rate, so a container's first step yields no sample
  (the cgroup collector's first reading is a baseline too);
* zero-point clamp: Prometheus assumes a counter never was negative. When the first
  sample in the window is below ``growth · (s/2) / S`` (a container that just started,
  a counter that was 0), the extrapolation stops at the counter's zero point and
  ``cores(t) = (growth + C_first) / W`` instead of ``growth / S`` (lower, by at most
  the factor ``S / W``);
* with scrape jitter the window holds ``k`` or ``k+1`` samples and the value is
  Prometheus's extrapolated rate (close to, not exactly, the step mean).

The same rule gives the throttled ratio (rate of throttled periods / rate of periods, 0
when no period ran) and OOM kills (``rate x S`` rounded to a whole count). Memory is
``max_over_time(container_memory_working_set_bytes[S - 1ms])``: the peak of the samples in
``(t-S, t]``, the sample itself when ``S = s``. Limits are the kube-state-metrics values
at ``t`` (Prometheus's 5-minute lookback).

Replicas: samples from several pods of one workload carry the same container name, and
the pipeline keeps one sample per container and timestamp, so replicas are merged: the
busiest replica's CPU, memory, throttled ratio and limits (a per-pod request must fit it),
and the sum of OOM kills.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
from collections import defaultdict
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, cast

import httpx
import orjson
from prometheus_client import CollectorRegistry, Counter
from pydantic import ValidationError

from agents.collector import CONTAINER_SAMPLES_TOPIC, OutgoingMessage
from pipeline.errors import CollectorError, ConfigError
from schemas.models import (
    MAX_SAMPLES_PER_BATCH,
    ContainerSample,
    ContainerSampleBatch,
    ContainerSpec,
    WorkloadSpec,
)
from schemas.validate import encode

__all__ = [
    "PROMETHEUS_SOURCE",
    "PromQLClient",
    "PrometheusAuth",
    "PrometheusMetrics",
    "PrometheusSource",
    "PrometheusSourceConfig",
    "QueryBudget",
    "Series",
    "Shard",
]

PROMETHEUS_SOURCE: Final = "prometheus"
#: Prometheus refuses range queries with more points per series than this (its default).
PROMETHEUS_MAX_POINTS_PER_SERIES: Final = 11_000
#: Prometheus's default lookback for instant selectors (seconds).
PROMETHEUS_LOOKBACK_SECONDS: Final = 300.0
#: The label daytwo's shard-count queries write (never a label of a real series).
_SHARD_LABEL: Final = "daytwo_shard"
_CONTAINER_FILTER: Final = 'container!="",container!="POD"'
_KEY_LABELS: Final = "namespace, pod, container"
_MAX_PREFIX_DEPTH: Final = 253
_LONG_QUERY_CHARS: Final = 2000
_ERROR_BODY_CHARS: Final = 300
_MAX_SAFE_INTEGER: Final = 2**53 - 1
_WORKLOAD_KINDS_OWNING_REPLICASETS: Final = frozenset({"Deployment", "Rollout"})

log = logging.getLogger(__name__)

ContainerKey = tuple[str, str, str]  # namespace, pod, container


# --------------------------------------------------------------------------- client


@dataclass(frozen=True)
class PrometheusAuth:
    """Credentials for a Prometheus behind auth: a bearer token or basic auth.

    Token and password may come from files (a projected service-account token rotates;
    the file is re-read on every request). The secrets never appear in ``repr``, logs or
    error messages.
    """

    bearer_token: str | None = field(default=None, repr=False)
    bearer_token_file: Path | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    password_file: Path | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PrometheusAuth | None:
        """Read ``DAYTWO_PROMETHEUS_{BEARER_TOKEN,BEARER_TOKEN_FILE,USERNAME,PASSWORD,
        PASSWORD_FILE}``; ``None`` when none is set. Raises ConfigError on a mix."""
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(f"DAYTWO_PROMETHEUS_{name}")
            return value or None

        token_file, password_file = get("BEARER_TOKEN_FILE"), get("PASSWORD_FILE")
        auth = cls(
            bearer_token=get("BEARER_TOKEN"),
            bearer_token_file=Path(token_file) if token_file else None,
            username=get("USERNAME"),
            password=get("PASSWORD"),
            password_file=Path(password_file) if password_file else None,
        )
        if auth == cls():
            return None
        auth.check()
        return auth

    def check(self) -> None:
        """Raise ConfigError unless exactly one complete kind of credential is set."""
        bearer = self.bearer_token is not None or self.bearer_token_file is not None
        basic = self.username is not None or self.password is not None or self.password_file
        if bearer and basic:
            raise ConfigError(
                "Prometheus auth: set either a bearer token (DAYTWO_PROMETHEUS_BEARER_TOKEN"
                "[_FILE]) or basic auth (DAYTWO_PROMETHEUS_USERNAME and _PASSWORD[_FILE]), "
                "not both"
            )
        if self.bearer_token is not None and self.bearer_token_file is not None:
            raise ConfigError("Prometheus auth: set the bearer token or its file, not both")
        if basic and (
            self.username is None or (self.password is None) == (self.password_file is None)
        ):
            raise ConfigError(
                "Prometheus basic auth needs DAYTWO_PROMETHEUS_USERNAME and exactly one of "
                "DAYTWO_PROMETHEUS_PASSWORD or DAYTWO_PROMETHEUS_PASSWORD_FILE"
            )

    def httpx_auth(self) -> httpx.Auth:
        """The httpx auth flow that adds the header to each request."""
        self.check()
        return _CredentialsAuth(self)


def _read_secret(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise CollectorError(
            f"cannot read the Prometheus {what} file {path}: {error.strerror or error}"
        ) from error


class _CredentialsAuth(httpx.Auth):
    """Adds the Authorization header, re-reading secret files each request (rotation)."""

    def __init__(self, credentials: PrometheusAuth) -> None:
        self._credentials = credentials

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        creds = self._credentials
        if creds.bearer_token is not None or creds.bearer_token_file is not None:
            token = creds.bearer_token
            if token is None:
                assert creds.bearer_token_file is not None  # checked: one of the two
                token = _read_secret(creds.bearer_token_file, "bearer token")
            request.headers["Authorization"] = f"Bearer {token}"
        elif creds.username is not None:
            password = creds.password
            if password is None:
                assert creds.password_file is not None  # checked: one of the two
                password = _read_secret(creds.password_file, "password")
            basic = httpx.BasicAuth(creds.username, password)
            request = next(basic.auth_flow(request))
        yield request


@dataclass(frozen=True, slots=True)
class Series:
    """One result series: its labels and its ``(timestamp, value)`` points in time order."""

    labels: Mapping[str, str]
    points: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class PrometheusMetrics:
    """The Prometheus source's own counters (issue 8 reports them), on a registry passed in."""

    queries: Counter
    series: Counter
    query_errors: Counter
    skipped: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> PrometheusMetrics:
        """Register the counters (on a private registry by default)."""
        registry = registry if registry is not None else CollectorRegistry()
        return cls(
            queries=Counter(
                "daytwo_prometheus_queries_total",
                "PromQL queries sent to Prometheus, by endpoint (query, query_range).",
                ["endpoint"],
                registry=registry,
            ),
            series=Counter(
                "daytwo_prometheus_series_total",
                "Series returned by Prometheus over all queries.",
                registry=registry,
            ),
            query_errors=Counter(
                "daytwo_prometheus_query_errors_total",
                "PromQL queries that failed (unreachable, rejected, malformed answer).",
                registry=registry,
            ),
            skipped=Counter(
                "daytwo_prometheus_skipped_total",
                "Container samples not emitted, by reason (no owner, invalid value).",
                ["reason"],
                registry=registry,
            ),
        )


class PromQLClient:
    """A small, strict PromQL HTTP client.

    Why not a generic client: daytwo must keep Prometheus safe and explain failures, so
    this one counts every query and series, records the largest answer (series and points)
    for budget checks, and turns every failure into a CollectorError that quotes the
    PromQL and Prometheus's error text. Long queries (sharded selectors) go as POST form
    bodies, which Prometheus accepts on the same endpoints.

    Example::

        with PromQLClient("http://prometheus:9090") as client:
            series = client.query("up", at=1_704_067_200)
    """

    def __init__(
        self,
        base_url: str,
        *,
        transport: httpx.BaseTransport | None = None,
        auth: PrometheusAuth | None = None,
        timeout_seconds: float = 60.0,
        metrics: PrometheusMetrics | None = None,
        gzip_responses: bool = True,
    ) -> None:
        """``gzip_responses``: ask Prometheus to compress its answers. Its JSON shrinks
        ~10x, which matters across a network; next to Prometheus (same host, a fast
        cluster network) compressing and decompressing only costs CPU on both sides."""
        self.base_url = base_url.rstrip("/")
        self.metrics = metrics if metrics is not None else PrometheusMetrics.create()
        self._client = httpx.Client(
            base_url=self.base_url,
            transport=transport,
            auth=auth.httpx_auth() if auth is not None else None,
            timeout=timeout_seconds,
            headers={
                "Accept": "application/json",
                "Accept-Encoding": "gzip" if gzip_responses else "identity",
            },
        )
        #: guards the counters below: the source's backfill queries from a helper thread
        self._counting = threading.Lock()
        #: queries sent (instant and range), series received, over this client's life
        self.queries_issued = 0
        self.series_returned = 0
        #: the most series, and the most points of one series, of any range query answer
        #: (what the query budget bounds)
        self.largest_range_series = 0
        self.largest_range_points = 0

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __enter__(self) -> PromQLClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def query(self, promql: str, *, at: float) -> list[Series]:
        """Instant query at ``at`` (epoch seconds); each series has one point.

        A range-vector answer (a bare ``x[5m]`` selector) comes back with all its points.
        """
        data = self._get("query", promql, {"query": promql, "time": _fmt_time(at)})
        return self._series(data, promql, ("vector", "matrix", "scalar"))

    def query_range(self, promql: str, *, start: float, end: float, step: float) -> list[Series]:
        """Range query over ``[start, end]`` every ``step`` seconds."""
        params = {
            "query": promql,
            "start": _fmt_time(start),
            "end": _fmt_time(end),
            "step": _fmt_time(step),
        }
        data = self._get("query_range", promql, params)
        series = self._series(data, promql, ("matrix",))
        self._count_range(len(series), max((len(s.points) for s in series), default=0))
        return series

    def query_range_indexed(
        self,
        promql: str,
        *,
        start: float,
        end: float,
        step: float,
        key_labels: Sequence[str],
    ) -> dict[tuple[str, ...], dict[float, float]]:
        """Range query answered as ``(values of key_labels) → {timestamp: value}``.

        Why: the Prometheus source looks every point up by container and time. Building
        those dicts straight from the decoded JSON, without a :class:`Series` of tuples
        in between, halves the per-point cost of decoding weeks of history. Non-finite
        values are dropped; a missing label reads ``""``; when several series share a key
        the last one wins (group the PromQL ``by`` the key labels). Counted like
        :meth:`query_range`.
        """
        params = {
            "query": promql,
            "start": _fmt_time(start),
            "end": _fmt_time(end),
            "step": _fmt_time(step),
        }
        data = self._get("query_range", promql, params)
        isfinite = math.isfinite
        indexed: dict[tuple[str, ...], dict[float, float]] = {}
        most_points = 0
        try:
            if data["resultType"] != "matrix":
                raise TypeError(f"resultType {data['resultType']!r}, expected 'matrix'")
            for item in data["result"]:
                labels = item["metric"]
                values = item["values"]
                most_points = max(most_points, len(values))
                indexed[tuple([labels.get(name, "") for name in key_labels])] = {
                    float(t): number for t, v in values if isfinite(number := float(v))
                }
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as error:
            raise self._fail(
                f"Prometheus answered query {promql!r} with an unexpected shape: {error}",
                error,
            ) from error
        series = len(data["result"])
        with self._counting:
            self.series_returned += series
        self.metrics.series.inc(series)
        self._count_range(series, most_points)
        return indexed

    def _count_range(self, series: int, most_points: int) -> None:
        with self._counting:
            self.largest_range_series = max(self.largest_range_series, series)
            self.largest_range_points = max(self.largest_range_points, most_points)

    def _fail(self, message: str, error: Exception | None = None) -> CollectorError:
        self.metrics.query_errors.inc()
        collector_error = CollectorError(message)
        if error is not None:
            collector_error.__cause__ = error
        return collector_error

    def _get(self, endpoint: str, promql: str, params: dict[str, str]) -> Any:
        with self._counting:
            self.queries_issued += 1
        self.metrics.queries.labels(endpoint=endpoint).inc()
        path = f"/api/v1/{endpoint}"
        try:
            if len(promql) > _LONG_QUERY_CHARS:
                response = self._client.post(path, data=params)
            else:
                response = self._client.get(path, params=params)
        except CollectorError:
            self.metrics.query_errors.inc()
            raise
        except httpx.HTTPError as error:
            raise self._fail(
                f"Prometheus at {self.base_url} could not be reached for query {promql!r}: "
                f"{type(error).__name__}: {error}; check the URL, the network and that "
                "Prometheus is up",
                error,
            ) from error
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError as error:
            snippet = response.text[:_ERROR_BODY_CHARS].strip()
            raise self._fail(
                f"Prometheus at {self.base_url} answered HTTP {response.status_code} with "
                f"non-JSON for query {promql!r}: {snippet!r} (is the URL Prometheus's, and "
                "is the auth right?)",
                error,
            ) from error
        if not isinstance(body, dict) or body.get("status") != "success":
            detail = body if not isinstance(body, dict) else body.get("error", body)
            error_type = body.get("errorType", "unknown") if isinstance(body, dict) else "unknown"
            raise self._fail(
                f"Prometheus rejected query {promql!r} (HTTP {response.status_code}, "
                f"{error_type}): {detail}"
            )
        for warning in body.get("warnings") or ():
            log.warning("Prometheus warning for query %r: %s", promql, warning)
        return body.get("data")

    def _series(self, data: Any, promql: str, allowed: tuple[str, ...]) -> list[Series]:
        try:
            result_type = data["resultType"]
            result = data["result"]
            if result_type not in allowed:
                raise TypeError(f"resultType {result_type!r}, expected one of {allowed}")
            if result_type == "scalar":
                series = [Series({}, ((float(result[0]), float(result[1])),))]
            elif result_type == "vector":
                series = [
                    Series(item["metric"], ((float(item["value"][0]), float(item["value"][1])),))
                    for item in result
                ]
            else:
                series = [
                    Series(
                        item["metric"],
                        tuple((float(t), float(v)) for t, v in item["values"]),
                    )
                    for item in result
                ]
        except (KeyError, TypeError, ValueError, IndexError) as error:
            raise self._fail(
                f"Prometheus answered query {promql!r} with an unexpected shape: {error}",
                error,
            ) from error
        with self._counting:
            self.series_returned += len(series)
        self.metrics.series.inc(len(series))
        return series


def _fmt_time(seconds: float) -> str:
    """Epoch seconds as Prometheus reads them (integral values without a fraction)."""
    return str(int(seconds)) if float(seconds).is_integer() else repr(float(seconds))


def _fmt_duration(seconds: float) -> str:
    """A PromQL duration in whole milliseconds (``300000ms``)."""
    milliseconds = round(seconds * 1000)
    if milliseconds < 1:
        raise ConfigError(f"PromQL duration must be at least 1 ms, got {seconds} s")
    return f"{milliseconds}ms"


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class QueryBudget:
    """How much one query may ask of Prometheus.

    * ``max_series_per_query``: above this many series (counted first with a cheap
      ``count(...)`` instant query) a query is sharded by namespace, then by pod-name
      prefix;
    * ``max_points_per_series``: Prometheus's own limit (11,000 by default);
    * ``max_samples_per_query``: series budget x points; time ranges are split so that
      ``max_series_per_query x points ≤ max_samples_per_query``. It also bounds the
      agent's memory: at most two chunks are held at a time (the one being emitted
      and the next, fetched meanwhile).
    """

    max_series_per_query: int = 500
    max_points_per_series: int = PROMETHEUS_MAX_POINTS_PER_SERIES
    max_samples_per_query: int = 250_000

    def __post_init__(self) -> None:
        if self.max_series_per_query < 1:
            raise ConfigError("max_series_per_query must be at least 1")
        if not 1 <= self.max_points_per_series <= PROMETHEUS_MAX_POINTS_PER_SERIES:
            raise ConfigError(
                "max_points_per_series must be within 1..11000 (Prometheus's maximum)"
            )
        if self.max_samples_per_query < 1:
            raise ConfigError("max_samples_per_query must be at least 1")

    @property
    def points_per_chunk(self) -> int:
        """Points per series that one range query may return."""
        return max(
            1,
            min(
                self.max_points_per_series,
                self.max_samples_per_query // self.max_series_per_query,
            ),
        )


@dataclass(frozen=True, slots=True)
class Shard:
    """Extra label matchers that restrict a query to part of the cluster.

    ``namespace`` restricts the namespace (``namespace="a"`` or ``namespace=~"a|b"``),
    ``pod`` the pod names (``pod=~"web-.*|api"``); empty strings mean "all".
    """

    namespace: str = ""
    pod: str = ""

    def matchers(self, *, with_pod: bool = True) -> str:
        """The matchers to add inside ``{...}`` (with a leading comma when non-empty)."""
        parts = [part for part in (self.namespace, self.pod if with_pod else "") if part]
        return "".join("," + part for part in parts)


def _promql_string(value: str) -> str:
    """A PromQL double-quoted string literal."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _alternation(parts: Sequence[str]) -> str:
    return "|".join(parts)


def _namespace_matcher(namespaces: Sequence[str]) -> str:
    if len(namespaces) == 1:
        return f"namespace={_promql_string(namespaces[0])}"
    return f"namespace=~{_promql_string(_alternation([re.escape(n) for n in namespaces]))}"


def _containers(metrics: Sequence[str], matchers: str, window: str) -> str:
    """PromQL: one series per container seen in any of ``metrics`` within ``window``."""
    seen = " or ".join(
        f"last_over_time({metric}{{{_CONTAINER_FILTER}{matchers}}}[{window}])" for metric in metrics
    )
    return f"group by ({_KEY_LABELS}) ({seen})"


def _pack(items: Sequence[tuple[str, int]], budget: int) -> list[list[str]]:
    """Greedy, order-keeping bin packing of (key, count) into groups of ≤ budget."""
    groups: list[list[str]] = []
    current: list[str] = []
    total = 0
    for key, count in items:
        if current and total + count > budget:
            groups.append(current)
            current, total = [], 0
        current.append(key)
        total += count
    if current:
        groups.append(current)
    return groups


# --------------------------------------------------------------------------- the source


@dataclass(frozen=True)
class PrometheusSourceConfig:
    """What the Prometheus source needs to know; every field has a safe default but
    ``cluster`` (the first segment of every workload id)."""

    cluster: str
    step_seconds: float = 300.0
    scrape_interval_seconds: float = 30.0
    rate_window_seconds: float | None = None
    budget: QueryBudget = field(default_factory=QueryBudget)
    agent: str = PROMETHEUS_SOURCE
    oom_source: Literal["cadvisor", "kube-state-metrics"] = "cadvisor"
    #: continuous mode: only evaluate steps this old, so late scrapes have landed
    ingest_delay_seconds: float = 60.0
    #: continuous mode: after a pause, catch up at most this much history
    max_catch_up_seconds: float = 3600.0
    profile: str = "balanced"

    def __post_init__(self) -> None:
        if not self.cluster or "/" in self.cluster or any(c.isspace() for c in self.cluster):
            raise ConfigError(
                f"cluster name {self.cluster!r} must be non-empty without '/' or spaces "
                "(it is the first segment of workload ids)"
            )
        if self.step_seconds < 1:
            raise ConfigError(f"step_seconds must be at least 1, got {self.step_seconds}")
        if self.scrape_interval_seconds <= 0:
            raise ConfigError("scrape_interval_seconds must be > 0")
        if self.rate_window_seconds is not None and self.rate_window_seconds < self.step_seconds:
            raise ConfigError(
                "rate_window_seconds must cover at least one step "
                f"({self.rate_window_seconds} < {self.step_seconds})"
            )

    @property
    def rate_window(self) -> float:
        """``W``: the rate window, ``step + scrape_interval / 2`` unless overridden."""
        if self.rate_window_seconds is not None:
            return self.rate_window_seconds
        return self.step_seconds + self.scrape_interval_seconds / 2


@dataclass(slots=True)
class _ChunkData:
    """One shard's answers for one time chunk, keyed by container and timestamp."""

    cpu: dict[ContainerKey, dict[float, float]] = field(default_factory=dict)
    memory: dict[ContainerKey, dict[float, float]] = field(default_factory=dict)
    throttled_ratio: dict[ContainerKey, dict[float, float]] = field(default_factory=dict)
    oom: dict[ContainerKey, dict[float, float]] = field(default_factory=dict)
    oom_known: set[ContainerKey] = field(default_factory=set)
    cpu_limit: dict[ContainerKey, dict[float, float]] = field(default_factory=dict)
    memory_limit: dict[ContainerKey, dict[float, float]] = field(default_factory=dict)


@dataclass(slots=True)
class _Merged:
    """One container name of one workload at one timestamp, replicas merged."""

    cpu: float
    memory: float
    ratio: float | None = None
    oom: int | None = None
    cpu_limit: float | None = None
    memory_limit: float | None = None

    def merge(self, other: _Merged) -> None:
        self.cpu = max(self.cpu, other.cpu)
        self.memory = max(self.memory, other.memory)
        self.ratio = _max_optional(self.ratio, other.ratio)
        if other.oom is not None:
            self.oom = other.oom if self.oom is None else self.oom + other.oom
        self.cpu_limit = _max_optional(self.cpu_limit, other.cpu_limit)
        self.memory_limit = _max_optional(self.memory_limit, other.memory_limit)


def _max_optional(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _by_key(series: list[Series]) -> dict[ContainerKey, dict[float, float]]:
    """Index ``by (namespace, pod, container)`` answers; non-finite points are dropped."""
    indexed: dict[ContainerKey, dict[float, float]] = {}
    for item in series:
        labels = item.labels
        key = (labels.get("namespace", ""), labels.get("pod", ""), labels.get("container", ""))
        indexed[key] = {t: v for t, v in item.points if math.isfinite(v)}
    return indexed


class PrometheusSource:
    """Container samples from Prometheus, for backfill and for continuous mode.

    ``backfill(start, end)`` yields batches in time order, chunk by chunk;
    ``messages(now)`` is the continuous mode and fits :func:`agents.collector.run_agent`
    (a :class:`~agents.collector.Collector`): each call emits the steps that completed
    since the previous call.

    Example::

        config = PrometheusSourceConfig(cluster="prod", step_seconds=300)
        with PrometheusSource(PromQLClient("http://prometheus:9090"), config) as source:
            for batch in source.backfill(now - 7 * 86400, now):
                ...
    """

    def __init__(self, client: PromQLClient, config: PrometheusSourceConfig) -> None:
        self.client = client
        self.config = config
        self._last_emitted: float | None = None
        self._warned_pods: set[tuple[str, str]] = set()

    def close(self) -> None:
        """Close the client's connections."""
        self.client.close()

    @property
    def _sampled_metrics(self) -> tuple[str, ...]:
        """The metrics whose containers the range queries return (for shard counting)."""
        metrics: tuple[str, ...] = (
            "container_cpu_usage_seconds_total",
            "kube_pod_container_resource_limits",
        )
        if self.config.oom_source == "kube-state-metrics":
            metrics += ("kube_pod_container_status_restarts_total",)
        return metrics

    def __enter__(self) -> PrometheusSource:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- plan

    def chunks(self, start: float, end: float) -> list[tuple[float, float]]:
        """The ``[first, last]`` evaluation times of each range query, step-aligned.

        ``start`` is rounded up and ``end`` down to a multiple of the step, so that a
        backfill and a later continuous run evaluate at the same instants.
        """
        step = self.config.step_seconds
        first = math.ceil(start / step) * step
        last = math.floor(end / step) * step
        span = (self.config.budget.points_per_chunk - 1) * step
        chunks: list[tuple[float, float]] = []
        while first <= last:
            chunk_end = min(first + span, last)
            chunks.append((first, chunk_end))
            first = chunk_end + step
        return chunks

    def _count(self, promql: str, at: float) -> list[Series]:
        """A planning query: instant, one point per counted group, cheap for Prometheus."""
        return self.client.query(promql, at=at)

    def shards(self, metrics: Sequence[str], *, at: float, lookback_seconds: float) -> list[Shard]:
        """Shards of the cluster that each hold at most the series budget of containers.

        Every range query groups ``by (namespace, pod, container)``, so the series one
        returns are at most the containers seen in any of ``metrics`` during the lookback
        before ``at``. Counts those first (one cheap ``count(...)`` instant query); if over
        budget, counts by namespace and packs namespaces into shards; a namespace alone
        over budget is split by pod-name prefix, one character deeper each time.
        """
        budget = self.config.budget.max_series_per_query
        window = _fmt_duration(lookback_seconds)
        total_series = self._count(f"count({_containers(metrics, '', window)})", at)
        total = int(total_series[0].points[0][1]) if total_series else 0
        if total <= budget:
            return [Shard()]
        by_namespace = self._count(f"count by (namespace) ({_containers(metrics, '', window)})", at)
        counts = sorted((s.labels.get("namespace", ""), int(s.points[0][1])) for s in by_namespace)
        shards: list[Shard] = []
        light = [(ns, count) for ns, count in counts if count <= budget]
        for group in _pack(light, budget):
            shards.append(Shard(namespace=_namespace_matcher(group)))
        for namespace, _count in (item for item in counts if item[1] > budget):
            parts = self._pod_prefix_parts(metrics, namespace, "", at, window)
            for group in _pack(parts, budget):
                shards.append(
                    Shard(
                        namespace=_namespace_matcher([namespace]),
                        pod=f"pod=~{_promql_string(_alternation(group))}",
                    )
                )
        return shards

    def _pod_prefix_parts(
        self, metrics: Sequence[str], namespace: str, prefix: str, at: float, window: str
    ) -> list[tuple[str, int]]:
        """(pod regex, container count) parts of one namespace, each within the budget."""
        budget = self.config.budget.max_series_per_query
        if len(prefix) > _MAX_PREFIX_DEPTH:
            raise CollectorError(f"cannot shard pods of namespace {namespace!r} further")
        escaped = re.escape(prefix)
        matchers = f",namespace={_promql_string(namespace)},pod=~{_promql_string(escaped + '.*')}"
        # The shard label is the prefix plus the next character (or the whole name when
        # it is no longer than the prefix): count the containers under each.
        counted = self._count(
            f"count by ({_SHARD_LABEL}) (label_replace({_containers(metrics, matchers, window)}, "
            f'{_promql_string(_SHARD_LABEL)}, "$1", "pod", '
            f"{_promql_string('(' + escaped + '.?).*')}))",
            at,
        )
        parts: list[tuple[str, int]] = []
        for item in sorted(counted, key=lambda s: s.labels.get(_SHARD_LABEL, "")):
            shard_prefix = item.labels.get(_SHARD_LABEL, "")
            count = int(item.points[0][1])
            if shard_prefix == prefix:  # the pod named exactly ``prefix``
                if count > budget:
                    raise CollectorError(
                        f"pod {prefix!r} in namespace {namespace!r} alone has {count} "
                        f"containers, more than the series budget ({budget}); "
                        "raise max_series_per_query"
                    )
                parts.append((re.escape(shard_prefix), count))
            elif count <= budget:
                parts.append((re.escape(shard_prefix) + ".*", count))
            else:
                parts.extend(self._pod_prefix_parts(metrics, namespace, shard_prefix, at, window))
        return parts

    # ---------------------------------------------------------------- fetch

    def _range(
        self, promql: str, first: float, last: float
    ) -> dict[ContainerKey, dict[float, float]]:
        """A ``by (namespace, pod, container)`` range query, indexed by container."""
        indexed = self.client.query_range_indexed(
            promql,
            start=first,
            end=last,
            step=self.config.step_seconds,
            key_labels=("namespace", "pod", "container"),
        )
        # the keys are 3-tuples: exactly the three key labels were asked for
        return cast(dict[ContainerKey, dict[float, float]], indexed)

    def _fetch(
        self, shard: Shard, first: float, last: float, lookback_seconds: float
    ) -> _ChunkData:
        config = self.config
        window = _fmt_duration(config.rate_window)
        peak_window = _fmt_duration(config.step_seconds - 0.001)
        selector = _CONTAINER_FILTER + shard.matchers()

        def rate(metric: str) -> dict[ContainerKey, dict[float, float]]:
            return self._range(
                f"sum by ({_KEY_LABELS}) (rate({metric}{{{selector}}}[{window}]))",
                first,
                last,
            )

        data = _ChunkData()
        data.cpu = rate("container_cpu_usage_seconds_total")
        data.memory = self._range(
            f"max by ({_KEY_LABELS}) (max_over_time("
            f"container_memory_working_set_bytes{{{selector}}}[{peak_window}]))",
            first,
            last,
        )
        throttled = (
            f"sum by ({_KEY_LABELS}) "
            f"(rate(container_cpu_cfs_throttled_periods_total{{{selector}}}[{window}]))"
        )
        periods = (
            f"sum by ({_KEY_LABELS}) "
            f"(rate(container_cpu_cfs_periods_total{{{selector}}}[{window}]))"
        )
        # throttled / periods where periods ran, 0 where none ran (as the cgroup collector)
        data.throttled_ratio = self._range(
            f"({throttled} / ({periods} > 0)) or ({periods} * 0)", first, last
        )
        # OOM kills are rare: fetch only the non-zero points, and which containers have
        # the counter at all (those read 0 elsewhere, the others None).
        if config.oom_source == "cadvisor":
            oom_metric = f"container_oom_events_total{{{selector}}}"
            oom_rate = f"sum by ({_KEY_LABELS}) (rate({oom_metric}[{window}]))"
        else:
            oom_metric = f"kube_pod_container_status_restarts_total{{{selector}}}"
            oom_rate = (
                f"sum by ({_KEY_LABELS}) (rate({oom_metric}[{window}]) and on ({_KEY_LABELS}) "
                f'kube_pod_container_status_last_terminated_reason{{reason="OOMKilled"'
                f"{shard.matchers()}}} == 1)"
            )
        data.oom = self._range(f"{oom_rate} > 0", first, last)
        data.oom_known = set(
            _by_key(
                self.client.query(
                    f"group by ({_KEY_LABELS}) "
                    f"(last_over_time({oom_metric}[{_fmt_duration(lookback_seconds)}]))",
                    at=last,
                )
            )
        )
        data.cpu_limit, data.memory_limit = self._resources(
            "kube_pod_container_resource_limits", shard, first, last
        )
        return data

    def _resources(
        self, metric: str, shard: Shard, first: float, last: float
    ) -> tuple[dict[ContainerKey, dict[float, float]], dict[ContainerKey, dict[float, float]]]:
        """(cpu, memory) values of a kube-state-metrics resource metric; one query each, so
        that neither returns more series than there are containers."""
        cpu, memory = (
            self._range(
                f'max by ({_KEY_LABELS}) ({metric}{{resource="{resource}"{shard.matchers()}}})',
                first,
                last,
            )
            for resource in ("cpu", "memory")
        )
        return cpu, memory

    def _owners(
        self, shard: Shard, at: float, lookback_seconds: float
    ) -> dict[tuple[str, str], str]:
        """``(namespace, pod) → workload id`` for pods seen in the lookback before ``at``.

        Pod → ReplicaSet → Deployment (or Rollout), pod → Job → CronJob, pod →
        StatefulSet / DaemonSet; a ReplicaSet or Job without an owner is the workload
        itself, a bare pod is ``Pod``.
        """
        window = _fmt_duration(lookback_seconds)

        def owners(
            metric: str, subject: str, matchers: str
        ) -> dict[tuple[str, str], tuple[str, str]]:
            answer = self.client.query(
                f"max by (namespace, {subject}, owner_kind, owner_name) "
                f"(last_over_time({metric}{{{matchers.lstrip(',')}}}[{window}]))",
                at=at,
            )
            found: dict[tuple[str, str], tuple[str, str]] = {}
            for item in sorted(answer, key=lambda s: sorted(s.labels.items())):
                labels = item.labels
                key = (labels.get("namespace", ""), labels.get(subject, ""))
                kind, name = labels.get("owner_kind", ""), labels.get("owner_name", "")
                # A pod may list several owners; the controller wins, so keep the first
                # real one and let "<none>" lose against anything else.
                if key not in found or found[key][0] in {"", "<none>"}:
                    found[key] = (kind, name)
            return found

        pods = owners("kube_pod_owner", "pod", shard.matchers())
        kinds = {kind for kind, _ in pods.values()}
        replicasets = (
            owners("kube_replicaset_owner", "replicaset", shard.matchers(with_pod=False))
            if "ReplicaSet" in kinds
            else {}
        )
        jobs = (
            owners("kube_job_owner", "job_name", shard.matchers(with_pod=False))
            if "Job" in kinds
            else {}
        )
        cluster = self.config.cluster
        resolved: dict[tuple[str, str], str] = {}
        for (namespace, pod), owner in pods.items():
            kind, name = _workload_owner(namespace, pod, owner, replicasets, jobs)
            resolved[(namespace, pod)] = f"{cluster}/{namespace}/{kind}/{name}"
        return resolved

    # ---------------------------------------------------------------- assemble

    def _assemble(
        self,
        data: _ChunkData,
        owners: Mapping[tuple[str, str], str],
        merged: dict[float, dict[str, dict[str, _Merged]]],
    ) -> None:
        """Add one shard's answers to ``merged``: timestamp → workload → container name →
        sample, replicas merged (the shards of a chunk share one ``merged``)."""
        step = self.config.step_seconds
        no_points: dict[float, float] = {}
        for key, cpu_points in data.cpu.items():
            namespace, pod, container = key
            memory_points = data.memory.get(key)
            if not memory_points:
                continue
            workload = owners.get((namespace, pod))
            if workload is None:
                if (namespace, pod) not in self._warned_pods:
                    self._warned_pods.add((namespace, pod))
                    log.warning(
                        "pod %s/%s has no kube_pod_owner series (is kube-state-metrics "
                        "scraped?); its samples are skipped",
                        namespace,
                        pod,
                    )
                self.client.metrics.skipped.labels(reason="no-owner").inc(len(cpu_points))
                continue
            throttled_ratio = data.throttled_ratio.get(key, no_points)
            oom = data.oom.get(key, no_points)
            oom_default = 0 if key in data.oom_known else None
            cpu_limit = data.cpu_limit.get(key, no_points)
            memory_limit = data.memory_limit.get(key, no_points)
            for t, cores in cpu_points.items():
                memory = memory_points.get(t)
                if memory is None:
                    continue
                ratio = throttled_ratio.get(t)
                oom_rate = oom.get(t)
                sample = _Merged(
                    cores if cores > 0.0 else 0.0,
                    memory,
                    None if ratio is None else min(1.0, max(0.0, ratio)),
                    oom_default if oom_rate is None else max(0, round(oom_rate * step)),
                    cpu_limit.get(t),
                    memory_limit.get(t),
                )
                at_time = merged.get(t)
                if at_time is None:
                    merged[t] = {workload: {container: sample}}
                    continue
                containers = at_time.get(workload)
                if containers is None:
                    at_time[workload] = {container: sample}
                    continue
                existing = containers.get(container)
                if existing is None:
                    containers[container] = sample
                else:
                    existing.merge(sample)

    def _batches(
        self, merged: Mapping[float, Mapping[str, Mapping[str, _Merged]]]
    ) -> Iterator[ContainerSampleBatch]:
        step = self.config.step_seconds
        for t in sorted(merged):
            at_time = merged[t]
            for workload in sorted(at_time):
                samples: list[ContainerSample] = []
                containers = at_time[workload]
                # most workloads have one container name: nothing to sort
                names = sorted(containers) if len(containers) > 1 else containers
                for container in names:
                    value = containers[container]
                    memory_limit = value.memory_limit
                    try:
                        samples.append(
                            ContainerSample(
                                container=container,
                                timestamp=t,
                                interval_seconds=step,
                                cpu_usage_cores=value.cpu,
                                cpu_throttled_ratio=value.ratio,
                                memory_working_set_bytes=round(value.memory),
                                oom_kills=value.oom,
                                cpu_limit_cores=value.cpu_limit or None,
                                memory_limit_bytes=(
                                    None if memory_limit is None else _limit_bytes(memory_limit)
                                ),
                            )
                        )
                    except ValidationError as error:
                        self.client.metrics.skipped.labels(reason="invalid").inc()
                        log.warning(
                            "skipping %s:%s at %s: %s",
                            workload,
                            container,
                            t,
                            error.errors()[0]["msg"],
                        )
                if not samples:
                    continue
                try:
                    yield ContainerSampleBatch(
                        source=PROMETHEUS_SOURCE,
                        agent=self.config.agent,
                        workload=workload,
                        timestamp=t,
                        samples=tuple(samples),
                    )
                except ValidationError as error:
                    self.client.metrics.skipped.labels(reason="invalid").inc(len(samples))
                    log.warning("skipping batch of %s at %s: %s", workload, t, error)

    # ---------------------------------------------------------------- public

    def backfill(
        self,
        start: float,
        end: float,
        *,
        progress: Callable[[float, float], None] | None = None,
    ) -> Iterator[ContainerSampleBatch]:
        """Batches for every step in ``[start, end]`` (step-aligned), in time order.

        Chunk by chunk (see :meth:`chunks`), shard by shard (see :meth:`shards`). Over
        several chunks a helper thread queries the next chunk while this one's batches
        are consumed (its queries still run one at a time), so at most two chunks are in
        memory. ``progress(done_until, end)`` is called after each chunk (for a progress
        bar). A failed query raises its CollectorError when its chunk is reached.
        """
        chunks = self.chunks(start, end)
        if len(chunks) <= 1:  # continuous mode, a runner's chunk: no helper thread
            for first, last in chunks:
                yield from self._emit(
                    self._batches(self._chunk(first, last, None)), last, end, progress
                )
            return
        # While the batches of one chunk are emitted (and the consumer folds them), a
        # helper thread fetches the next: Prometheus evaluates while Python decodes.
        cancelled = threading.Event()
        with ThreadPoolExecutor(1, thread_name_prefix="daytwo-prometheus") as helper:
            upcoming: Future[list[ContainerSampleBatch]] = helper.submit(
                self._chunk_batches, *chunks[0], cancelled
            )
            try:
                for index, (_first, last) in enumerate(chunks):
                    batches = upcoming.result()
                    if index + 1 < len(chunks):
                        upcoming = helper.submit(self._chunk_batches, *chunks[index + 1], cancelled)
                    yield from self._emit(batches, last, end, progress)
            finally:
                cancelled.set()  # a consumer that stopped early: skip the rest

    def _chunk(
        self, first: float, last: float, cancelled: threading.Event | None
    ) -> dict[float, dict[str, dict[str, _Merged]]]:
        """Query and merge one chunk, shard by shard (stops early once ``cancelled``)."""
        lookback = last - first + self.config.rate_window
        shards = self.shards(self._sampled_metrics, at=last, lookback_seconds=lookback)
        merged: dict[float, dict[str, dict[str, _Merged]]] = {}
        for shard in shards:
            if cancelled is not None and cancelled.is_set():
                break
            data = self._fetch(shard, first, last, lookback)
            owners = self._owners(shard, last, lookback)
            self._assemble(data, owners, merged)
        return merged

    def _chunk_batches(
        self, first: float, last: float, cancelled: threading.Event
    ) -> list[ContainerSampleBatch]:
        """One chunk's batches, built by the helper thread (the consumer only iterates)."""
        return list(self._batches(self._chunk(first, last, cancelled)))

    def _emit(
        self,
        batches: Iterable[ContainerSampleBatch],
        last: float,
        end: float,
        progress: Callable[[float, float], None] | None,
    ) -> Iterator[ContainerSampleBatch]:
        yield from batches
        self._last_emitted = last if self._last_emitted is None else max(self._last_emitted, last)
        if progress is not None:
            progress(last, end)

    def poll(self, now: float) -> list[ContainerSampleBatch]:
        """Continuous mode: the batches of the steps completed since the last poll.

        Evaluates up to ``now - ingest_delay_seconds`` (step-aligned); after a pause it
        catches up at most ``max_catch_up_seconds``. The first poll emits one step.
        """
        config = self.config
        step = config.step_seconds
        due = math.floor((now - config.ingest_delay_seconds) / step) * step
        if self._last_emitted is None:
            first = due
        else:
            first = max(self._last_emitted + step, due - config.max_catch_up_seconds)
        if first > due:
            return []
        batches = list(self.backfill(first, due))
        self._last_emitted = due
        return batches

    def messages(self, now: float) -> list[OutgoingMessage]:
        """:meth:`poll`, encoded for ``daytwo.container-samples.v1`` (key = workload)."""
        return [
            OutgoingMessage(CONTAINER_SAMPLES_TOPIC, batch.workload.encode(), encode(batch))
            for batch in self.poll(now)
        ]

    def workload_specs(self, at: float) -> list[WorkloadSpec]:
        """Declared requests and limits per workload at ``at``, from kube-state-metrics.

        Container samples carry only the observed limits; requests live in the
        ``workload-spec`` contract. Replicas = pods seen at ``at`` (None for DaemonSets);
        with several replicas (a rollout in progress) the larger value of each field wins.
        Profile and annotations are not in Prometheus: the configured default profile
        and no annotations (the Kubernetes inventory publishes the full spec).
        """
        lookback = PROMETHEUS_LOOKBACK_SECONDS
        shards = self.shards(
            ("kube_pod_container_resource_requests", "kube_pod_container_resource_limits"),
            at=at,
            lookback_seconds=lookback,
        )
        specs: dict[str, dict[str, dict[str, float]]] = {}
        pods_of: dict[str, set[str]] = defaultdict(set)
        for shard in shards:
            owners = self._owners(shard, at, lookback)
            for field_prefix, metric, resource in (
                ("request", "kube_pod_container_resource_requests", "cpu"),
                ("request", "kube_pod_container_resource_requests", "memory"),
                ("limit", "kube_pod_container_resource_limits", "cpu"),
                ("limit", "kube_pod_container_resource_limits", "memory"),
            ):
                answer = self.client.query(
                    f'max by ({_KEY_LABELS}) ({metric}{{resource="{resource}"{shard.matchers()}}})',
                    at=at,
                )
                name = f"{resource}_{field_prefix}"
                for item in answer:
                    labels = item.labels
                    workload = owners.get((labels.get("namespace", ""), labels.get("pod", "")))
                    value = item.points[0][1]
                    if workload is None or not math.isfinite(value):
                        continue
                    pods_of[workload].add(labels.get("pod", ""))
                    container = specs.setdefault(workload, {}).setdefault(
                        labels.get("container", ""), {}
                    )
                    container[name] = max(value, container.get(name, value))
        result: list[WorkloadSpec] = []
        for workload in sorted(specs):
            kind = workload.split("/")[2]
            containers = []
            for name, values in sorted(specs[workload].items()):
                containers.append(
                    ContainerSpec(
                        name=name,
                        cpu_request_cores=values.get("cpu_request"),
                        cpu_limit_cores=values.get("cpu_limit") or None,
                        memory_request_bytes=_whole_bytes(values.get("memory_request")),
                        memory_limit_bytes=_limit_bytes(values.get("memory_limit")),
                    )
                )
            result.append(
                WorkloadSpec(
                    source=PROMETHEUS_SOURCE,
                    workload=workload,
                    timestamp=at,
                    profile=self.config.profile,
                    replicas=None if kind == "DaemonSet" else len(pods_of[workload]),
                    containers=tuple(containers),
                    annotations={},
                )
            )
        return result


def pack_batches(
    batches: Iterable[ContainerSampleBatch], max_samples: int = MAX_SAMPLES_PER_BATCH
) -> list[ContainerSampleBatch]:
    """Each workload's batches merged into batches of up to ``max_samples`` samples.

    Why: a backfill yields one batch per workload and step (1-3 samples), and a worker
    pays its per-message cost per batch; history is caught up ~8x faster in batches of
    a few hundred samples (docs/benchmarks.md). Each workload's samples keep their order
    (so its containers' timestamps still rise), workloads come in the order they first
    appear, and a merged batch carries the timestamp of its last sample's batch.
    """
    if not 1 <= max_samples <= MAX_SAMPLES_PER_BATCH:
        msg = f"max_samples must be within 1 ... {MAX_SAMPLES_PER_BATCH}, got {max_samples}"
        raise ValueError(msg)
    by_workload: dict[str, list[tuple[ContainerSampleBatch, ContainerSample]]] = {}
    for batch in batches:
        held = by_workload.setdefault(batch.workload, [])
        held.extend((batch, sample) for sample in batch.samples)
    packed = []
    for held in by_workload.values():
        for first in range(0, len(held), max_samples):
            part = held[first : first + max_samples]
            last = part[-1][0]
            packed.append(
                ContainerSampleBatch(
                    source=last.source,
                    agent=last.agent,
                    workload=last.workload,
                    timestamp=last.timestamp,
                    samples=tuple(sample for _, sample in part),
                )
            )
    return packed


def _workload_owner(
    namespace: str,
    pod: str,
    owner: tuple[str, str],
    replicasets: Mapping[tuple[str, str], tuple[str, str]],
    jobs: Mapping[tuple[str, str], tuple[str, str]],
) -> tuple[str, str]:
    """The (kind, name) of the workload at the top of a pod's owner chain."""
    kind, name = owner
    if kind in {"", "<none>"}:
        return "Pod", pod
    if kind == "ReplicaSet":
        parent = replicasets.get((namespace, name))
        if parent is not None and parent[0] in _WORKLOAD_KINDS_OWNING_REPLICASETS:
            return parent
    elif kind == "Job":
        parent = jobs.get((namespace, name))
        if parent is not None and parent[0] == "CronJob":
            return parent
    return kind, name


def _whole_bytes(value: float | None) -> int | None:
    if value is None or not math.isfinite(value) or value < 0:
        return None
    return min(round(value), _MAX_SAFE_INTEGER)


def _limit_bytes(value: float | None) -> int | None:
    whole = _whole_bytes(value)
    return whole if whole else None
