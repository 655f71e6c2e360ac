"""The hottest decode: container-sample batches straight from bytes with msgspec.

Why a second decoder for one message kind: a worker catching up reads hundreds of
thousands of container samples a second, and the pydantic fast path of
:func:`schemas.validate.decode` costs about 3 µs per fully filled sample (a dozen
constrained fields), more than everything the window then does with it. msgspec
decodes and checks the same bounds in C in a fraction of that (docs/benchmarks.md).

Same contract, stricter or equal: the structs below repeat the bounds of
``container-sample-batch.v1.schema.json`` (and of :mod:`schemas.models`, built from the
same constants); unknown fields are refused; bools are not numbers; patterns get the
ECMA-262 meaning of ``$``. Anything msgspec refuses is handed to
:func:`schemas.validate.decode`, which accepts what the schema accepts (``5.0`` for an
integer, say) or explains the failure in the schema's words, so the dead-letter reasons
stay those of the reference path. ``tests/test_schemas_wire.py`` checks that both agree.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from schemas.models import (
    _NO_CONTROL,
    LABEL_PATTERN,
    MAX_CORES,
    MAX_INTERVAL_SECONDS,
    MAX_SAFE_INTEGER,
    MAX_SAMPLES_PER_BATCH,
    MAX_THROTTLED_SECONDS,
    MAX_TIMESTAMP_SECONDS,
    SOURCE_PATTERN,
    WORKLOAD_ID_PATTERN,
    ContainerSampleBatch,
)
from schemas.validate import DEFAULT_MAX_BYTES, _ecma_dollar, decode

Meta = msgspec.Meta
Timestamp = Annotated[float, Meta(ge=0, le=MAX_TIMESTAMP_SECONDS)]
Count = Annotated[int, Meta(ge=0, le=MAX_SAFE_INTEGER)]
ByteCount = Annotated[int, Meta(ge=0, le=MAX_SAFE_INTEGER)]


class WireContainerSample(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One container sample as the schema defines it (attribute names of
    :class:`schemas.models.ContainerSample`)."""

    container: Annotated[
        str, Meta(min_length=1, max_length=128, pattern=_ecma_dollar(LABEL_PATTERN))
    ]
    timestamp: Timestamp
    interval_seconds: Annotated[float, Meta(gt=0, le=MAX_INTERVAL_SECONDS)]
    cpu_usage_cores: Annotated[float, Meta(ge=0, le=MAX_CORES)]
    cpu_periods: Count | None = None
    cpu_throttled_periods: Count | None = None
    cpu_throttled_seconds: Annotated[float, Meta(ge=0, le=MAX_THROTTLED_SECONDS)] | None = None
    cpu_throttled_ratio: Annotated[float, Meta(ge=0, le=1)] | None = None
    memory_working_set_bytes: ByteCount | None = None
    memory_usage_bytes: ByteCount | None = None
    memory_rss_bytes: ByteCount | None = None
    memory_cache_bytes: ByteCount | None = None
    oom_kills: Count | None = None
    cpu_limit_cores: Annotated[float, Meta(gt=0, le=MAX_CORES)] | None = None
    memory_limit_bytes: Annotated[int, Meta(ge=1, le=MAX_SAFE_INTEGER)] | None = None


class WireContainerBatch(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A ``container-sample-batch`` as the schema defines it (attribute names of
    :class:`schemas.models.ContainerSampleBatch`)."""

    schema_version: Literal[1]
    kind: Literal["container-sample-batch"]
    source: Annotated[str, Meta(min_length=1, max_length=64, pattern=_ecma_dollar(SOURCE_PATTERN))]
    agent: Annotated[
        str, Meta(min_length=1, max_length=253, pattern=_ecma_dollar(f"^[^{_NO_CONTROL}]+$"))
    ]
    workload: Annotated[
        str, Meta(min_length=7, max_length=512, pattern=_ecma_dollar(WORKLOAD_ID_PATTERN))
    ]
    timestamp: Timestamp
    samples: Annotated[
        tuple[WireContainerSample, ...], Meta(min_length=1, max_length=MAX_SAMPLES_PER_BATCH)
    ]
    sequence: Count | None = None


_DECODER = msgspec.json.Decoder(WireContainerBatch)


def decode_container_batch_fast(raw: bytes) -> WireContainerBatch | ContainerSampleBatch:
    """A container-samples value, validated: msgspec's struct when it takes the bytes,
    else what :func:`schemas.validate.decode` makes of them (a model, or
    :class:`~pipeline.errors.InvalidMessageError` with the reference reason)."""
    if len(raw) <= DEFAULT_MAX_BYTES:
        try:
            return _DECODER.decode(raw)
        except (msgspec.MsgspecError, ValueError):  # ValueError: bytes that are not UTF-8
            pass  # explained (or accepted, where the schema is laxer) below
    return decode(ContainerSampleBatch, raw)
