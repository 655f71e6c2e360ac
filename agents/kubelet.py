"""kubelet source: the node's ``/stats/summary`` → container samples keyed by workload.

Why: on Kubernetes the kubelet already measures every container on its node (through
cAdvisor or the CRI); one HTTPS call per node per interval gives CPU and memory for all of
them, without host mounts or privileges. The inventory (:mod:`agents.inventory`) turns
each ``podRef`` into a workload id.

Least privilege — how the agent reaches the kubelet
---------------------------------------------------
The agent calls its own node's kubelet directly, ``GET https://<node>:10250/stats/summary``,
with the pod's ServiceAccount token as bearer token (re-read on every call: projected
tokens rotate). With webhook authentication and authorisation (the default on managed
clusters and kubeadm), the kubelet checks the token with a TokenReview and then asks the
API server a SubjectAccessReview for verb ``get`` on resource ``nodes``, subresource
``stats`` — the kubelet maps the request paths ``/stats/*`` to ``nodes/stats`` (``/metrics/*``
to ``nodes/metrics``, ``/logs/*`` to ``nodes/log``, everything else to ``nodes/proxy``); see
https://kubernetes.io/docs/reference/access-authn-authz/kubelet-authn-authz/. So the
ClusterRole needs only ``get`` on ``nodes/stats``. The alternative path through the API
server, ``/api/v1/nodes/{node}/proxy/stats/summary``, is authorised by the API server as
``nodes/proxy`` — which also allows exec-like kubelet endpoints — so daytwo does not use it.

TLS: the kubelet's serving certificate is verified with ``ca_file`` (the ServiceAccount's
``ca.crt`` by default, which works when kubelets use cluster-CA-signed serving certificates,
``serverTLSBootstrap``). Clusters with self-signed kubelet certificates need
``insecure_skip_tls_verify`` (as metrics-server's ``--kubelet-insecure-tls``): documented,
off by default.

CPU: rate of the cumulative counter, not ``usageNanoCores``
-----------------------------------------------------------
Each container reports ``usageNanoCores`` (a rate the kubelet computed over its own
housekeeping window, ~10-15 s, ending somewhere before the call) and
``usageCoreNanoSeconds`` (cumulative). daytwo uses

    cpu_usage_cores = Δ usageCoreNanoSeconds / 1e9 / Δ cpu.time

between two polls: the mean over the *whole* interval, every core-second counted once
whatever the poll interval (``usageNanoCores`` polled every 60 s sees only the last ~15 s
of each minute and misses bursts in between), the same semantics as the cgroup and
Prometheus sources. ``cpu.time`` is a ``metav1.Time`` with second precision; the error
that brings to one interval cancels over consecutive intervals (the deltas telescope), and
a container whose ``cpu.time`` advanced less than ``min_interval_seconds`` keeps its older
baseline (a cached summary that did not refresh yields no sample instead of a division by
~0). The first poll of a container only sets the baseline. A counter that went down or a
changed container ``startTime`` is a restart: counted, and a new baseline. Only when a
runtime omits ``usageCoreNanoSeconds`` is ``usageNanoCores / 1e9`` used.

Memory: ``workingSetBytes`` (what the kubelet evicts on and the OOM killer approximates),
plus ``usageBytes`` and ``rssBytes`` when present. Limits come from the pod spec in the
inventory. Replicas of one workload on this node are merged into one sample per container
(the busiest replica's CPU, the largest memory values), as the Prometheus source does: the
pipeline keeps one sample per container and timestamp.
"""

from __future__ import annotations

import logging
import math
import re
import socket
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import httpx
import orjson
from prometheus_client import CollectorRegistry, Counter

from agents.collector import CONTAINER_SAMPLES_TOPIC, OutgoingMessage
from agents.inventory import PodWorkload
from pipeline.errors import CollectorError
from schemas.models import MAX_SAFE_INTEGER, ContainerSample, ContainerSampleBatch
from schemas.validate import encode

__all__ = [
    "KUBELET_PORT",
    "KUBELET_SOURCE",
    "SUMMARY_PATH",
    "Conversion",
    "KubeletClient",
    "KubeletConfig",
    "KubeletMetrics",
    "KubeletSource",
    "MalformedSummaryError",
    "SummaryConverter",
    "parse_kube_time",
]

KUBELET_SOURCE: Final = "kubelet"
KUBELET_PORT: Final = 10250
SUMMARY_PATH: Final = "/stats/summary"
SERVICE_ACCOUNT_DIR: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount")
_ERROR_BODY_CHARS: Final = 300
_TIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|z|[+-]\d{2}:\d{2})$"
)

log = logging.getLogger(__name__)


class MalformedSummaryError(CollectorError):
    """``/stats/summary`` did not have the documented shape; the message names the JSON path."""


def parse_kube_time(value: object, where: str) -> float:
    """RFC 3339 time (``metav1.Time``, fractions up to nanoseconds) → UTC epoch seconds."""
    match = _TIME.match(value) if isinstance(value, str) else None
    if match is None:
        raise MalformedSummaryError(f"{where}: expected an RFC 3339 time, got {value!r}")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        moment = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=UTC
        )
    except ValueError as error:
        raise MalformedSummaryError(f"{where}: {error}: {value!r}") from None
    offset = 0
    if zone not in {"Z", "z"}:
        sign = 1 if zone[0] == "+" else -1
        offset = sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    seconds = moment.timestamp() - offset
    return seconds + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)


def _optional_object(value: object, where: str) -> Mapping[str, Any] | None:
    return None if value is None else _object(value, where)


def _object(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise MalformedSummaryError(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _count(value: object, where: str) -> int | None:
    """A non-negative integer field (bytes, nanoseconds); absent → None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MalformedSummaryError(f"{where}: expected an integer >= 0, got {value!r}")
    return value


def _name(value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise MalformedSummaryError(f"{where}: expected a non-empty string, got {value!r}")
    return value


# --------------------------------------------------------------------------- pure conversion


@dataclass(frozen=True, slots=True)
class _Baseline:
    start: str | None
    counter: int
    time: float


@dataclass(frozen=True, slots=True)
class _Reading:
    """One container of one pod, converted."""

    workload: str
    container: str
    cpu_cores: float
    interval_seconds: float
    working_set: int
    usage: int | None
    rss: int | None
    spec: PodWorkload


@dataclass(frozen=True)
class Conversion:
    """What one summary turned into, and what it could not place (for metrics and logs)."""

    batches: list[ContainerSampleBatch]
    unmapped_pods: tuple[str, ...] = ()
    #: (namespace/pod/container, reason); reasons: "no cpu stats", "no working set",
    #: "implausible" (a bounded metric label)
    skipped: tuple[tuple[str, str], ...] = ()
    resets: tuple[str, ...] = ()


@dataclass
class SummaryConverter:
    """Turns successive ``/stats/summary`` documents into container-sample batches.

    Pure apart from the per-container CPU baselines it keeps between calls (bounded: a
    container absent from a summary is forgotten). ``min_interval_seconds`` is the
    shortest ``cpu.time`` advance that yields a sample (see the module docstring).
    """

    agent: str
    source: str = KUBELET_SOURCE
    min_interval_seconds: float = 5.0
    _baselines: dict[tuple[str, str, str], _Baseline] = field(default_factory=dict)

    def convert(
        self,
        summary: object,
        pods: Mapping[tuple[str, str], PodWorkload],
        now: float,
    ) -> Conversion:
        """One batch per workload with samples at ``now``; raises on a malformed document."""
        document = _object(summary, "$")
        pod_list = document.get("pods")
        if pod_list is None:
            pod_list = []
        if not isinstance(pod_list, list):
            raise MalformedSummaryError(f"$.pods: expected a list, got {type(pod_list).__name__}")
        readings: list[_Reading] = []
        unmapped: list[str] = []
        skipped: list[tuple[str, str]] = []
        resets: list[str] = []
        seen: set[tuple[str, str, str]] = set()
        for index, pod in enumerate(pod_list):
            where = f"$.pods[{index}]"
            pod_map = _object(pod, where)
            ref = _object(pod_map.get("podRef"), f"{where}.podRef")
            namespace = _name(ref.get("namespace"), f"{where}.podRef.namespace")
            pod_name = _name(ref.get("name"), f"{where}.podRef.name")
            containers = pod_map.get("containers") or []
            if not isinstance(containers, list):
                raise MalformedSummaryError(f"{where}.containers: expected a list")
            spec = pods.get((namespace, pod_name))
            if spec is None:
                unmapped.append(f"{namespace}/{pod_name}")
            for c_index, container in enumerate(containers):
                at = f"{where}.containers[{c_index}]"
                stats = _object(container, at)
                name = _name(stats.get("name"), f"{at}.name")
                key = (namespace, pod_name, name)
                seen.add(key)
                reading = self._reading(key, stats, at, spec=spec, skipped=skipped, resets=resets)
                if reading is not None and spec is not None:
                    readings.append(reading)
        for key in list(self._baselines):
            if key not in seen:
                del self._baselines[key]
        return Conversion(
            self._batches(readings, now), tuple(unmapped), tuple(skipped), tuple(resets)
        )

    def _cpu(
        self,
        key: tuple[str, str, str],
        stats: Mapping[str, Any],
        at: str,
        resets: list[str],
    ) -> tuple[float, float] | str:
        """(cores, interval) or the reason there is no CPU value this time."""
        cpu = _optional_object(stats.get("cpu"), f"{at}.cpu")
        if cpu is None or cpu.get("time") is None:
            return "no cpu stats"
        time = parse_kube_time(cpu.get("time"), f"{at}.cpu.time")
        start = stats.get("startTime")
        start_text = start if isinstance(start, str) else None
        counter = _count(cpu.get("usageCoreNanoSeconds"), f"{at}.cpu.usageCoreNanoSeconds")
        if counter is None:
            return self._cpu_from_rate(key, cpu, at, start_text, time)
        previous = self._baselines.get(key)
        if previous is not None and (previous.start != start_text or counter < previous.counter):
            resets.append("/".join(key))
            previous = None
        if previous is None:
            self._baselines[key] = _Baseline(start_text, counter, time)
            return "baseline"
        interval = time - previous.time
        if interval < self.min_interval_seconds:
            return "interval too short"  # keep the older baseline: a longer, exact window
        self._baselines[key] = _Baseline(start_text, counter, time)
        return (counter - previous.counter) / 1e9 / interval, interval

    def _cpu_from_rate(
        self,
        key: tuple[str, str, str],
        cpu: Mapping[str, Any],
        at: str,
        start: str | None,
        time: float,
    ) -> tuple[float, float] | str:
        """Fallback for runtimes without the cumulative counter: the kubelet's own rate."""
        nano_cores = _count(cpu.get("usageNanoCores"), f"{at}.cpu.usageNanoCores")
        if nano_cores is None:
            return "no cpu stats"
        previous = self._baselines.get(key)
        if previous is not None and time - previous.time < self.min_interval_seconds:
            return "interval too short"
        self._baselines[key] = _Baseline(start, 0, time)
        if previous is None:
            return "baseline"
        return nano_cores / 1e9, time - previous.time

    def _reading(
        self,
        key: tuple[str, str, str],
        stats: Mapping[str, Any],
        at: str,
        *,
        spec: PodWorkload | None,
        skipped: list[tuple[str, str]],
        resets: list[str],
    ) -> _Reading | None:
        where = "/".join(key)
        cpu = self._cpu(key, stats, at, resets)
        memory = _optional_object(stats.get("memory"), f"{at}.memory") or {}
        working_set = _count(memory.get("workingSetBytes"), f"{at}.memory.workingSetBytes")
        usage = _count(memory.get("usageBytes"), f"{at}.memory.usageBytes")
        rss = _count(memory.get("rssBytes"), f"{at}.memory.rssBytes")
        if isinstance(cpu, str):
            if cpu not in {"baseline", "interval too short"}:
                skipped.append((where, cpu))
            return None
        if working_set is None:
            skipped.append((where, "no working set"))
            return None
        if spec is None:
            return None
        cores, interval = cpu
        if not math.isfinite(cores) or cores > 100_000 or interval > 86_400:
            log.warning("%s: implausible cpu %r cores over %r s; skipped", where, cores, interval)
            skipped.append((where, "implausible"))
            return None
        return _Reading(
            workload=spec.workload,
            container=key[2],
            cpu_cores=cores,
            interval_seconds=interval,
            working_set=min(working_set, MAX_SAFE_INTEGER),
            usage=None if usage is None else min(usage, MAX_SAFE_INTEGER),
            rss=None if rss is None else min(rss, MAX_SAFE_INTEGER),
            spec=spec,
        )

    def _batches(self, readings: list[_Reading], now: float) -> list[ContainerSampleBatch]:
        merged: dict[str, dict[str, list[_Reading]]] = {}
        for reading in readings:
            merged.setdefault(reading.workload, {}).setdefault(reading.container, []).append(
                reading
            )
        batches: list[ContainerSampleBatch] = []
        for workload in sorted(merged):
            samples: list[ContainerSample] = []
            for container, replicas in sorted(merged[workload].items()):
                busiest = max(replicas, key=lambda r: r.cpu_cores)
                declared = busiest.spec.containers.get(container)
                samples.append(
                    ContainerSample(
                        container=container,
                        timestamp=now,
                        interval_seconds=busiest.interval_seconds,
                        cpu_usage_cores=busiest.cpu_cores,
                        memory_working_set_bytes=max(r.working_set for r in replicas),
                        memory_usage_bytes=_max_or_none(r.usage for r in replicas),
                        memory_rss_bytes=_max_or_none(r.rss for r in replicas),
                        cpu_limit_cores=declared.cpu_limit_cores if declared else None,
                        memory_limit_bytes=declared.memory_limit_bytes if declared else None,
                    )
                )
            batches.append(
                ContainerSampleBatch(
                    source=self.source,
                    agent=self.agent,
                    workload=workload,
                    timestamp=now,
                    samples=tuple(samples),
                )
            )
        return batches


def _max_or_none(values: Any) -> int | None:
    present = [value for value in values if value is not None]
    return max(present) if present else None


# --------------------------------------------------------------------------- shell


@dataclass(frozen=True)
class KubeletConfig:
    """Where the kubelet is and how to authenticate (see the module docstring)."""

    node_name: str
    #: the node's address as seen from the pod (``status.hostIP`` via the downward API)
    host: str
    port: int = KUBELET_PORT
    token_file: Path = SERVICE_ACCOUNT_DIR / "token"
    ca_file: Path | None = SERVICE_ACCOUNT_DIR / "ca.crt"
    insecure_skip_tls_verify: bool = False
    timeout_seconds: float = 10.0
    min_interval_seconds: float = 5.0

    @property
    def url(self) -> str:
        """``https://host:port/stats/summary`` (IPv6 hosts bracketed)."""
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"https://{host}:{self.port}{SUMMARY_PATH}"


class KubeletClient:
    """``GET /stats/summary`` on one kubelet with the ServiceAccount token (never logged).

    ``transport`` is injectable (tests use ``httpx.MockTransport`` serving recorded
    documents). Every failure is a :class:`~pipeline.errors.CollectorError` that says what
    to do: 401 → the kubelet does not accept the token (webhook authentication off?),
    403 → the ClusterRole lacks ``get`` on ``nodes/stats``.
    """

    def __init__(
        self, config: KubeletConfig, *, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.config = config
        verify: bool | ssl.SSLContext = False
        if not config.insecure_skip_tls_verify:
            # httpx 0.28 takes an SSL context, not a CA path (the path form is deprecated).
            verify = (
                ssl.create_default_context(cafile=str(config.ca_file))
                if config.ca_file is not None
                else True
            )
        self._client = httpx.Client(
            timeout=config.timeout_seconds, transport=transport, verify=verify
        )

    def _token(self) -> str:
        try:
            return self.config.token_file.read_text().strip()
        except OSError as error:
            raise CollectorError(
                f"cannot read the ServiceAccount token {self.config.token_file}: "
                f"{error.strerror}; mount it (automountServiceAccountToken: true)"
            ) from None

    def summary(self) -> Any:
        """The decoded summary document (shape checked by :class:`SummaryConverter`)."""
        url = self.config.url
        try:
            response = self._client.get(
                url,
                headers={"Authorization": f"Bearer {self._token()}", "Accept": "application/json"},
            )
        except httpx.HTTPError as error:
            raise CollectorError(f"kubelet {url}: {type(error).__name__}: {error}") from None
        if response.status_code != 200:
            hint = {
                401: "the kubelet rejected the token; it needs --authentication-token-webhook",
                403: "the ServiceAccount needs 'get' on 'nodes/stats' (see rbac.yaml)",
            }.get(response.status_code, "")
            body = response.text[:_ERROR_BODY_CHARS].strip()
            raise CollectorError(
                f"kubelet {url} answered {response.status_code}: {body}"
                + (f" — {hint}" if hint else "")
            )
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError as error:
            raise MalformedSummaryError(f"kubelet {url}: not JSON: {error}") from None

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()


@dataclass(frozen=True)
class KubeletMetrics:
    """The kubelet source's counters, on a registry passed in."""

    unmapped_pods: Counter
    skipped_containers: Counter
    counter_resets: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> KubeletMetrics:
        """Register the metrics (on a private registry by default)."""
        registry = registry if registry is not None else CollectorRegistry()
        return cls(
            unmapped_pods=Counter(
                "daytwo_kubelet_unmapped_pods_total",
                "Pods in /stats/summary the inventory could not map to a workload (per scrape).",
                registry=registry,
            ),
            skipped_containers=Counter(
                "daytwo_kubelet_skipped_containers_total",
                "Containers in /stats/summary without usable stats, by reason.",
                ["reason"],
                registry=registry,
            ),
            counter_resets=Counter(
                "daytwo_kubelet_counter_resets_total",
                "CPU counters that restarted (container restarted) between two polls.",
                registry=registry,
            ),
        )


class KubeletSource:
    """The collector: poll the kubelet, map pods with the inventory, emit batches.

    ``pods`` returns the current pod index (``KubernetesInventory.pod_workloads``), so
    the source always sees the inventory's latest state.
    """

    def __init__(
        self,
        client: KubeletClient,
        pods: Callable[[], Mapping[tuple[str, str], PodWorkload]],
        *,
        agent: str | None = None,
        metrics: KubeletMetrics | None = None,
    ) -> None:
        self.client = client
        self.pods = pods
        self.metrics = metrics if metrics is not None else KubeletMetrics.create()
        self.converter = SummaryConverter(
            agent=agent or client.config.node_name or socket.gethostname(),
            min_interval_seconds=client.config.min_interval_seconds,
        )

    def scrape(self, now: float) -> list[ContainerSampleBatch]:
        """Poll once and convert; counts unmapped pods, skipped containers and resets."""
        result = self.converter.convert(self.client.summary(), self.pods(), now)
        if result.unmapped_pods:
            self.metrics.unmapped_pods.inc(len(result.unmapped_pods))
            log.debug("pods not in the inventory (yet): %s", ", ".join(result.unmapped_pods))
        for where, reason in result.skipped:
            self.metrics.skipped_containers.labels(reason=reason).inc()
            log.debug("%s skipped: %s", where, reason)
        self.metrics.counter_resets.inc(len(result.resets))
        return result.batches

    def messages(self, now: float) -> list[OutgoingMessage]:
        """:meth:`scrape`, encoded for ``daytwo.container-samples.v1`` (key = workload)."""
        return [
            OutgoingMessage(CONTAINER_SAMPLES_TOPIC, batch.workload.encode(), encode(batch))
            for batch in self.scrape(now)
        ]
