"""Typed, immutable mirrors of the JSON Schema contracts in this package.

The ``*.schema.json`` files are the source of truth; these pydantic models give the rest
of daytwo attribute access, type checking and the same bounds. Producers build models and
call :func:`schemas.validate.encode`; consumers get models from :func:`schemas.validate.decode`,
which runs the JSON Schema first, so everything that reaches a model on the ingest path
already satisfies the contract.

Conventions shared by every model:

* frozen, ``extra="forbid"``, no NaN or infinity; arrays are tuples, so a decoded message
  cannot be changed by accident;
* a field that may be null may also be absent in JSON (absent means null), and defaults to
  ``None`` here;
* ``schema_version`` and ``kind`` have defaults so producers need not repeat them, but the
  schemas require them on the wire.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

SCHEMA_BASE_URI: Final = "https://daytwo.dev/schemas/"

MAX_TIMESTAMP_SECONDS: Final = 4_102_444_800  # 2100-01-01; catches milliseconds sent by mistake
MAX_INTERVAL_SECONDS: Final = 86_400
MAX_CORES: Final = 100_000
MAX_THROTTLED_SECONDS: Final = MAX_INTERVAL_SECONDS * MAX_CORES
MAX_SAFE_INTEGER: Final = 2**53 - 1  # exact in float64; rejects cgroup v1's "unlimited" ~2**63
MAX_INT32: Final = 2**31 - 1
MAX_INT64: Final = 2**63 - 1
MAX_SAMPLES_PER_BATCH: Final = 1000
MAX_CONTAINERS: Final = 256
MAX_RULES: Final = 64
MAX_COST_USD: Final = 1_000_000_000
DEADLETTER_MAX_BYTES: Final = 4 * 1024 * 1024
DEADLETTER_MAX_B64_CHARS: Final = 4 * ((DEADLETTER_MAX_BYTES + 2) // 3)
MAX_REASON_CHARS: Final = 1000
MAX_JVM_OPTIONS_CHARS: Final = 8192

_NO_CONTROL = r"\x00-\x20\x7f-\x9f"
_WORKLOAD_SEGMENT = f"[^/{_NO_CONTROL}]+"
WORKLOAD_ID_PATTERN: Final = (
    f"^{_WORKLOAD_SEGMENT}/{_WORKLOAD_SEGMENT}/{_WORKLOAD_SEGMENT}/{_WORKLOAD_SEGMENT}$"
)
LABEL_PATTERN: Final = r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$"
PROFILE_PATTERN: Final = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"
SOURCE_PATTERN: Final = r"^[a-z][a-z0-9._-]*$"
SHA256_HEX_PATTERN: Final = r"^[0-9a-f]{64}$"
BASE64_PATTERN: Final = r"^[A-Za-z0-9+/]*={0,2}$"

Timestamp = Annotated[float, Field(ge=0, le=MAX_TIMESTAMP_SECONDS)]
IntervalSeconds = Annotated[float, Field(gt=0, le=MAX_INTERVAL_SECONDS)]
Cores = Annotated[float, Field(ge=0, le=MAX_CORES)]
LimitCores = Annotated[float, Field(gt=0, le=MAX_CORES)]
ByteCount = Annotated[int, Field(ge=0, le=MAX_SAFE_INTEGER)]
LimitBytes = Annotated[int, Field(ge=1, le=MAX_SAFE_INTEGER)]
Count = Annotated[int, Field(ge=0, le=MAX_SAFE_INTEGER)]
Ratio = Annotated[float, Field(ge=0, le=1)]
Percent = Annotated[float, Field(ge=0, le=100)]
Sha256Hex = Annotated[str, StringConstraints(pattern=SHA256_HEX_PATTERN)]
WorkloadId = Annotated[
    str, StringConstraints(min_length=7, max_length=512, pattern=WORKLOAD_ID_PATTERN)
]
ContainerName = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=LABEL_PATTERN)
]
NodeName = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=LABEL_PATTERN)]
ProfileName = Annotated[
    str, StringConstraints(min_length=1, max_length=63, pattern=PROFILE_PATTERN)
]
SourceName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=SOURCE_PATTERN)]
AgentName = Annotated[
    str, StringConstraints(min_length=1, max_length=253, pattern=f"^[^{_NO_CONTROL}]+$")
]
RuleId = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")
]
Base64Text = Annotated[
    str, StringConstraints(max_length=DEADLETTER_MAX_B64_CHARS, pattern=BASE64_PATTERN)
]
AnnotationKey = Annotated[str, StringConstraints(min_length=1, max_length=317)]
AnnotationValue = Annotated[str, StringConstraints(max_length=262_144)]

Risk = Literal["low", "medium", "high"]


class Contract(BaseModel):
    """Base of every contract model: immutable, strict about unknown fields, finite numbers."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Message(Contract):
    """A top-level message with its own schema file; ``schema_id`` names that schema's $id."""

    schema_id: ClassVar[str]
    # An int bounded to 1 rather than Literal[1]: pydantic's Literal check also accepts
    # `true` (True == 1), which the schema's const rejects.
    schema_version: Annotated[int, Field(ge=1, le=1)] = 1


class ContainerSample(Contract):
    """One container's usage over one scrape interval (see container-sample in the batch schema)."""

    container: ContainerName
    timestamp: Timestamp
    interval_seconds: IntervalSeconds
    cpu_usage_cores: Cores
    cpu_periods: Count | None = None
    cpu_throttled_periods: Count | None = None
    cpu_throttled_seconds: Annotated[float, Field(ge=0, le=MAX_THROTTLED_SECONDS)] | None = None
    cpu_throttled_ratio: Ratio | None = None
    memory_working_set_bytes: ByteCount | None = None
    memory_usage_bytes: ByteCount | None = None
    memory_rss_bytes: ByteCount | None = None
    memory_cache_bytes: ByteCount | None = None
    oom_kills: Count | None = None
    cpu_limit_cores: LimitCores | None = None
    memory_limit_bytes: LimitBytes | None = None


class ContainerSampleBatch(Message):
    """All container samples of one workload from one scrape: the unit agents publish."""

    schema_id: ClassVar[str] = SCHEMA_BASE_URI + "container-sample-batch.v1.json"
    kind: Literal["container-sample-batch"] = "container-sample-batch"
    source: SourceName
    agent: AgentName
    workload: WorkloadId
    timestamp: Timestamp
    sequence: Count | None = None
    """The agent's per-batch number, 0, 1, 2 ... per (agent, process start); a consumer
    finds lost batches as gaps and duplicates as repeats (see the schema's description)."""
    samples: Annotated[
        tuple[ContainerSample, ...], Field(min_length=1, max_length=MAX_SAMPLES_PER_BATCH)
    ]


CollectorName = Literal["G1", "Parallel", "Serial", "ZGC", "Shenandoah", "other"]
HeapSizing = Literal["xmx", "ram-percentage", "default"]
PauseSeconds = Annotated[float, Field(ge=0, le=MAX_INTERVAL_SECONDS)]


class JvmFlags(Contract):
    """The JVM flags in force, so heap and container limit are sized together (jvm-flags)."""

    max_heap_bytes: LimitBytes | None = None
    initial_heap_bytes: ByteCount | None = None
    max_ram_percentage: Percent | None = None
    heap_sizing: HeapSizing | None = None
    active_processor_count: Annotated[int, Field(ge=1, le=MAX_CORES)] | None = None
    parallel_gc_threads: Annotated[int, Field(ge=0, le=MAX_CORES)] | None = None
    thread_stack_size_bytes: ByteCount | None = None
    max_metaspace_bytes: LimitBytes | None = None
    max_direct_memory_bytes: ByteCount | None = None
    collector: CollectorName | None = None


class JvmSample(Contract):
    """One JVM's GC and memory over one scrape interval (see jvm-sample in the batch schema)."""

    container: ContainerName
    timestamp: Timestamp
    interval_seconds: IntervalSeconds
    collector: CollectorName | None = None
    gc_overhead_ratio: Ratio | None = None
    gc_pause_seconds: PauseSeconds | None = None
    gc_pause_max_seconds: PauseSeconds | None = None
    gc_count: Count | None = None
    full_gc_count: Count | None = None
    heap_used_after_gc_bytes: ByteCount | None = None
    heap_committed_bytes: ByteCount | None = None
    heap_max_bytes: LimitBytes | None = None
    live_set_bytes: ByteCount | None = None
    allocation_rate_bytes_per_second: Annotated[float, Field(ge=0, le=MAX_SAFE_INTEGER)] | None = (
        None
    )
    metaspace_used_bytes: ByteCount | None = None
    code_cache_bytes: ByteCount | None = None
    thread_count: Count | None = None
    direct_memory_bytes: ByteCount | None = None
    flags: JvmFlags | None = None
    jvm_options: Annotated[str, StringConstraints(max_length=MAX_JVM_OPTIONS_CHARS)] | None = None


class JvmSampleBatch(Message):
    """All JVM samples of one workload from one scrape: the unit the JVM agent publishes."""

    schema_id: ClassVar[str] = SCHEMA_BASE_URI + "jvm-sample-batch.v1.json"
    kind: Literal["jvm-sample-batch"] = "jvm-sample-batch"
    source: SourceName
    agent: AgentName
    workload: WorkloadId
    timestamp: Timestamp
    samples: Annotated[tuple[JvmSample, ...], Field(min_length=1, max_length=MAX_SAMPLES_PER_BATCH)]


class Psi(Contract):
    """Pressure stall averages (percent over 10 s); each None when the kernel lacks it."""

    cpu_some_avg10: Percent | None = None
    memory_some_avg10: Percent | None = None
    memory_full_avg10: Percent | None = None
    io_some_avg10: Percent | None = None
    io_full_avg10: Percent | None = None


class NodeSample(Message):
    """Capacity, usage and pressure of one node, so recommendations fit real nodes."""

    schema_id: ClassVar[str] = SCHEMA_BASE_URI + "node-sample.v1.json"
    kind: Literal["node-sample"] = "node-sample"
    source: SourceName
    node: NodeName
    timestamp: Timestamp
    interval_seconds: IntervalSeconds
    cpu_capacity_cores: LimitCores
    cpu_used_cores: Cores
    memory_total_bytes: LimitBytes
    memory_available_bytes: ByteCount
    memory_used_bytes: ByteCount
    psi: Psi | None = None


class ContainerSpec(Contract):
    """Declared requests and limits of one container; None where not set."""

    name: ContainerName
    cpu_request_cores: Cores | None = None
    cpu_limit_cores: LimitCores | None = None
    memory_request_bytes: ByteCount | None = None
    memory_limit_bytes: LimitBytes | None = None


class WorkloadSpec(Message):
    """What a workload declares (profile, replicas, containers), to know what to change."""

    schema_id: ClassVar[str] = SCHEMA_BASE_URI + "workload-spec.v1.json"
    kind: Literal["workload-spec"] = "workload-spec"
    source: SourceName
    workload: WorkloadId
    timestamp: Timestamp
    profile: ProfileName
    replicas: Annotated[int, Field(ge=0, le=MAX_INT32)] | None = None
    containers: Annotated[tuple[ContainerSpec, ...], Field(min_length=1, max_length=MAX_CONTAINERS)]
    annotations: Annotated[dict[AnnotationKey, AnnotationValue], Field(max_length=256)]


class Resources(Contract):
    """Resource settings of one container, current or recommended; None where not set."""

    cpu_request_cores: Cores | None = None
    cpu_limit_cores: LimitCores | None = None
    memory_request_bytes: ByteCount | None = None
    memory_limit_bytes: LimitBytes | None = None
    jvm_max_heap_bytes: LimitBytes | None = None


class Rule(Contract):
    """A rule that fired, with the sentence the PR body shows."""

    id: RuleId
    text: Annotated[str, StringConstraints(min_length=1, max_length=1000)]


NonHeapPart = Literal[
    "metaspace", "code cache", "thread count", "thread stack size", "direct buffers"
]
MAX_JAVA_TOOL_OPTIONS_CHARS: Final = 40960
JvmCollectorName = Annotated[
    str, StringConstraints(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9]+$")
]


class JvmNonHeap(Contract):
    """The non-heap estimate a JVM's memory limit covers, part by part (jvm-non-heap)."""

    metaspace_bytes: ByteCount
    code_cache_bytes: ByteCount
    thread_count: Count
    thread_stack_bytes: ByteCount
    direct_memory_bytes: ByteCount
    total_bytes: ByteCount
    defaults: Annotated[tuple[NonHeapPart, ...], Field(max_length=5)]


class DriftEvidence(Contract):
    """A drift event the River detectors found (drift-evidence)."""

    signal: Literal["cpu", "memory", "gc_overhead", "throttling"]
    detector: Literal["adwin", "page-hinkley"]
    detected_at: Timestamp
    regime_start: Timestamp
    direction: Literal["up", "down"]
    level_before: Annotated[float, Field(ge=0, le=MAX_SAFE_INTEGER)]
    level_after: Annotated[float, Field(ge=0, le=MAX_SAFE_INTEGER)]


class LeakEvidence(Contract):
    """A suspected memory leak: a steady climb that fits a straight line (leak-evidence)."""

    since: Timestamp
    slope_per_hour: Annotated[float, Field(ge=0, le=MAX_SAFE_INTEGER)]
    r2: Ratio
    growth_share: Annotated[float, Field(ge=0, le=1000)]


class CounterfactualEvidence(Contract):
    """The history against the values in force and the recommended ones (counterfactual)."""

    cpu_above_request_share_current: Ratio | None = None
    cpu_above_request_share_recommended: Ratio | None = None
    cpu_at_limit_share_current: Ratio | None = None
    cpu_at_limit_share_recommended: Ratio | None = None
    memory_peaks_above_limit_current: Annotated[int, Field(ge=0, le=1_000_000)] | None = None
    memory_peaks_above_limit_recommended: Annotated[int, Field(ge=0, le=1_000_000)] | None = None


class CostEvidence(Contract):
    """How the monthly cost delta was computed (cost-evidence)."""

    cpu_core_hour_usd: Annotated[float, Field(ge=0, le=1000)]
    memory_gib_hour_usd: Annotated[float, Field(ge=0, le=1000)]
    replicas: Annotated[int, Field(ge=1, le=100_000)]
    monthly_per_replica_usd: Annotated[float, Field(ge=-1e9, le=1e9)]
    node_pool: Annotated[str, StringConstraints(max_length=253)] | None = None


class JvmEvidence(Contract):
    """What the JVM correlation rules rest on (jvm-evidence); None where unknown."""

    samples: Count
    collector: JvmCollectorName | None = None
    heap_sizing: Literal["xmx", "ram-percentage", "default"]
    gc_overhead_p95_ratio: Ratio | None = None
    gc_overhead_max_ratio: Ratio | None = None
    gc_pause_p99_seconds: Annotated[float, Field(ge=0, le=MAX_INTERVAL_SECONDS)] | None = None
    gc_pause_max_seconds: Annotated[float, Field(ge=0, le=MAX_INTERVAL_SECONDS)] | None = None
    live_set_peak_bytes: ByteCount | None = None
    heap_max_bytes: LimitBytes | None = None
    heap_committed_bytes: ByteCount | None = None
    allocation_rate_bytes_per_second: Annotated[float, Field(ge=0, le=1e15)] | None = None
    active_processor_count: Annotated[int, Field(ge=1, le=MAX_INT32)] | None = None
    non_heap: JvmNonHeap | None = None
    margin_bytes: ByteCount | None = None


class Evidence(Contract):
    """The data a recommendation rests on; signals the data lacked are None."""

    samples: Count
    coverage_seconds: Annotated[float, Field(ge=0, le=MAX_TIMESTAMP_SECONDS)]
    first_timestamp: Timestamp | None = None
    last_timestamp: Timestamp | None = None
    cpu_p50_cores: Cores | None = None
    cpu_p95_cores: Cores | None = None
    cpu_max_cores: Cores | None = None
    memory_peak_bytes: ByteCount | None = None
    cpu_throttled_ratio_max: Ratio | None = None
    oom_kills: Count | None = None
    cpu_throttled_ratio_p95: Ratio | None = None
    last_oom_timestamp: Timestamp | None = None
    jvm: JvmEvidence | None = None
    drift: Annotated[tuple[DriftEvidence, ...], Field(max_length=4)] | None = None
    leak: LeakEvidence | None = None
    counterfactual: CounterfactualEvidence | None = None
    cost: CostEvidence | None = None


class JvmOptions(Contract):
    """The JAVA_TOOL_OPTIONS value that goes with a recommended heap and limit."""

    java_tool_options: Annotated[
        str, StringConstraints(min_length=1, max_length=MAX_JAVA_TOOL_OPTIONS_CHARS)
    ]
    changed: Annotated[
        tuple[
            Annotated[
                str,
                StringConstraints(min_length=2, max_length=256, pattern=r"^-[^\x00-\x1f\x7f]+$"),
            ],
            ...,
        ],
        Field(max_length=16),
    ]
    previous: Annotated[str, StringConstraints(max_length=32768)] | None = None


class Recommendation(Message):
    """A right-sizing proposal for one container; ``hash`` makes repeats recognisable."""

    schema_id: ClassVar[str] = SCHEMA_BASE_URI + "recommendation.v1.json"
    kind: Literal["recommendation"] = "recommendation"
    workload: WorkloadId
    container: ContainerName
    profile: ProfileName
    generated_at: Timestamp
    current: Resources
    recommended: Resources
    rules: Annotated[tuple[Rule, ...], Field(max_length=MAX_RULES)]
    evidence: Evidence
    monthly_cost_delta_usd: Annotated[float, Field(ge=-MAX_COST_USD, le=MAX_COST_USD)]
    confidence: Ratio
    risk: Risk
    hash: Sha256Hex
    jvm_options: JvmOptions | None = None


class RecommendationSet(Message):
    """Every current recommendation of one workload: one compacted record per workload."""

    schema_id: ClassVar[str] = SCHEMA_BASE_URI + "recommendation-set.v1.json"
    kind: Literal["recommendation-set"] = "recommendation-set"
    workload: WorkloadId
    generated_at: Timestamp
    recommendations: Annotated[tuple[Recommendation, ...], Field(max_length=MAX_CONTAINERS)]
    hash: Sha256Hex


class DeadLetter(Message):
    """An input daytwo could not use: original bytes (base64) and why, never dropped silently."""

    schema_id: ClassVar[str] = SCHEMA_BASE_URI + "deadletter.v1.json"
    kind: Literal["deadletter"] = "deadletter"
    topic: Annotated[
        str, StringConstraints(min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._-]+$")
    ]
    partition: Annotated[int, Field(ge=0, le=MAX_INT32)] | None
    offset: Annotated[int, Field(ge=0, le=MAX_INT64)] | None
    key_b64: Base64Text | None
    value_b64: Base64Text
    value_size_bytes: Count
    value_sha256: Sha256Hex
    truncated: bool
    reason: Annotated[str, StringConstraints(min_length=1, max_length=MAX_REASON_CHARS)]
    stage: Annotated[
        str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9._-]*$")
    ]
    failed_at: Timestamp


MESSAGE_MODELS: Final[tuple[type[Message], ...]] = (
    ContainerSampleBatch,
    NodeSample,
    WorkloadSpec,
    Recommendation,
    RecommendationSet,
    DeadLetter,
    JvmSampleBatch,
)
"""Every top-level message model, one per schema file."""
