"""Deterministic generators of valid and invalid container-sample-batch messages.

A helper for tests (and benchmarks) that need realistic bad input: every invalid message
starts as a valid batch and is then broken in one way, so a rejection proves the decoder
caught that one defect, not some accident of the fixture.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Final

import orjson

CATEGORIES: Final = (
    "wrong-type",
    "nan-infinity",
    "negative-usage",
    "missing-required",
    "oversized",
    "not-json",
    "wrong-schema-version",
    "ratio-above-one",
    "extra-field",
    "empty",
)
"""The invalid categories, in the order :func:`invalid_container_batches` cycles through them."""

OVERSIZE_LIMIT_BYTES: Final = 1_048_576

_REQUIRED_TOP: Final = (
    "schema_version",
    "kind",
    "source",
    "agent",
    "workload",
    "timestamp",
    "samples",
)
_REQUIRED_SAMPLE: Final = (
    "container",
    "timestamp",
    "interval_seconds",
    "cpu_usage_cores",
)
_USAGE_FIELDS: Final = (
    "cpu_usage_cores",
    "memory_working_set_bytes",
    "memory_usage_bytes",
    "memory_rss_bytes",
    "memory_cache_bytes",
    "cpu_throttled_seconds",
    "cpu_periods",
    "oom_kills",
)
# A float that never occurs in generated batches, replaced by a NaN/Infinity literal after
# serialisation (orjson cannot write those, which is the point).
_PLACEHOLDER: Final = 987654.123456789
_PLACEHOLDER_BYTES: Final = orjson.dumps(_PLACEHOLDER)


def _sample(
    container: str, ts: float, cpu: float, mem: int, rng: random.Random | None = None
) -> dict[str, Any]:
    sample: dict[str, Any] = {
        "container": container,
        "timestamp": ts,
        "interval_seconds": 10.0,
        "cpu_usage_cores": cpu,
        "memory_working_set_bytes": mem,
    }
    if rng is not None:
        periods = rng.randint(1, 100)
        throttled = rng.randint(0, periods)
        sample.update(
            cpu_periods=periods,
            cpu_throttled_periods=throttled,
            cpu_throttled_seconds=round(throttled * 0.01, 4),
            cpu_throttled_ratio=throttled / periods,
            memory_usage_bytes=mem + rng.randint(0, 1 << 20),
            memory_rss_bytes=rng.randint(0, mem),
            memory_cache_bytes=rng.randint(0, 1 << 20),
            oom_kills=rng.randint(0, 2),
            cpu_limit_cores=rng.choice([None, 0.5, 1.0, 4.0]),
            memory_limit_bytes=rng.choice([None, 1 << 30, 4 << 30]),
        )
    return sample


def _batch(workload: str, ts: float, samples: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "kind": "container-sample-batch",
        "source": "cgroup",
        "agent": "node-1",
        "workload": workload,
        "timestamp": ts,
        "samples": samples,
    }


def valid_container_batch(workload: str, container: str, ts: float, cpu: float, mem: int) -> bytes:
    """One valid batch with a single sample carrying only the required signals."""
    return orjson.dumps(_batch(workload, ts, [_sample(container, ts, cpu, mem)]))


def _random_valid_batch(rng: random.Random) -> dict[str, Any]:
    workload = f"prod/ns-{rng.randint(0, 99)}/Deployment/app-{rng.randint(0, 999)}"
    ts = 1_700_000_000.0 + rng.randint(0, 10_000_000)
    samples = [
        _sample(
            f"c{index}",
            ts,
            round(rng.uniform(0, 8), 3),
            rng.randint(0, 8 << 30),
            rng if rng.random() < 0.5 else None,
        )
        for index in range(rng.randint(1, 5))
    ]
    return _batch(workload, ts, samples)


def _wrong_type(batch: dict[str, Any], rng: random.Random) -> bytes:
    sample = rng.choice(batch["samples"])
    mutation = rng.randrange(8)
    if mutation == 0:
        sample["cpu_usage_cores"] = str(sample["cpu_usage_cores"])
    elif mutation == 1:
        sample["memory_working_set_bytes"] = True
    elif mutation == 2:
        sample["container"] = 42
    elif mutation == 3:
        batch["samples"] = {"container": "c0"}
    elif mutation == 4:
        batch["timestamp"] = [batch["timestamp"]]
    elif mutation == 5:
        sample["memory_working_set_bytes"] = sample["memory_working_set_bytes"] + 0.5
    elif mutation == 6:
        sample["timestamp"] = None
    else:
        return orjson.dumps([batch])
    return orjson.dumps(batch)


def _nan_infinity(batch: dict[str, Any], rng: random.Random) -> bytes:
    field = rng.choice(["cpu_usage_cores", "timestamp", "interval_seconds"])
    rng.choice(batch["samples"])[field] = _PLACEHOLDER
    literal = rng.choice([b"NaN", b"Infinity", b"-Infinity"])
    return orjson.dumps(batch).replace(_PLACEHOLDER_BYTES, literal, 1)


def _negative_usage(batch: dict[str, Any], rng: random.Random) -> bytes:
    field = rng.choice(_USAGE_FIELDS)
    is_float = field.endswith(("_cores", "_seconds"))
    negative = -rng.choice([0.001, 0.5, 3.0]) if is_float else -rng.choice([1, 2, 1 << 20])
    rng.choice(batch["samples"])[field] = negative
    return orjson.dumps(batch)


def _missing_required(batch: dict[str, Any], rng: random.Random) -> bytes:
    if rng.random() < 0.5:
        del batch[rng.choice(_REQUIRED_TOP)]
    else:
        del rng.choice(batch["samples"])[rng.choice(_REQUIRED_SAMPLE)]
    return orjson.dumps(batch)


_OVERSIZED_POOL: dict[int, bytes] = {}


def _oversized(batch: dict[str, Any], rng: random.Random) -> bytes:
    # Each variant is built once per process from its own fixed seed and then shared (bytes
    # are immutable): 200 distinct 1 MiB payloads would cost 200 MiB for no extra coverage,
    # and a fixed seed keeps the output independent of earlier calls.
    variant = rng.randrange(3)
    if variant not in _OVERSIZED_POOL:
        base = _random_valid_batch(random.Random(variant))
        body = orjson.dumps(base)
        if variant == 0:  # valid JSON padded with whitespace: only the size is wrong
            payload = body[:-1] + b" " * OVERSIZE_LIMIT_BYTES + b"}"
        elif variant == 1:  # one very long string field
            base["agent"] = "a" * OVERSIZE_LIMIT_BYTES
            payload = orjson.dumps(base)
        else:  # many samples (also far above maxItems)
            sample_size = len(orjson.dumps(base["samples"][0]))
            base["samples"] = [base["samples"][0]] * (OVERSIZE_LIMIT_BYTES // sample_size + 1)
            payload = orjson.dumps(base)
        _OVERSIZED_POOL[variant] = payload
    return _OVERSIZED_POOL[variant]


def _not_json(batch: dict[str, Any], rng: random.Random) -> bytes:
    body = orjson.dumps(batch)
    mutation = rng.randrange(5)
    if mutation == 0:  # truncated: a proper prefix of a JSON object is never JSON
        return body[: rng.randrange(1, len(body))]
    if mutation == 1:  # invalid UTF-8 inside a string
        return body.replace(b'"cgroup"', b'"cg\xffroup"', 1)
    if mutation == 2:  # Python repr, not JSON
        return repr(batch).encode()
    if mutation == 3:  # trailing garbage
        return body + b" trailing"
    return bytes([0]) + rng.randbytes(rng.randint(0, 64))


def _wrong_schema_version(batch: dict[str, Any], rng: random.Random) -> bytes:
    batch["schema_version"] = rng.choice([0, 2, -1, 1.5, "1", True, None, 99])
    return orjson.dumps(batch)


def _ratio_above_one(batch: dict[str, Any], rng: random.Random) -> bytes:
    rng.choice(batch["samples"])["cpu_throttled_ratio"] = rng.choice([1.0000001, 1.5, 2, 100.0])
    return orjson.dumps(batch)


def _extra_field(batch: dict[str, Any], rng: random.Random) -> bytes:
    target = batch if rng.random() < 0.5 else rng.choice(batch["samples"])
    target[rng.choice(["extra", "cpu_usage", "note", "memory_bytes"])] = rng.choice([1, "x", None])
    return orjson.dumps(batch)


def _empty(batch: dict[str, Any], rng: random.Random) -> bytes:
    return rng.choice([b"", b" ", b"\n", b"\t\r\n "])


_MUTATORS: Final[dict[str, Callable[[dict[str, Any], random.Random], bytes]]] = {
    "wrong-type": _wrong_type,
    "nan-infinity": _nan_infinity,
    "negative-usage": _negative_usage,
    "missing-required": _missing_required,
    "oversized": _oversized,
    "not-json": _not_json,
    "wrong-schema-version": _wrong_schema_version,
    "ratio-above-one": _ratio_above_one,
    "extra-field": _extra_field,
    "empty": _empty,
}


def invalid_container_batches(n: int, seed: int) -> list[tuple[bytes, str]]:
    """``n`` invalid container-sample-batch messages with their category, cycling through
    :data:`CATEGORIES`; the same ``(n, seed)`` always gives the same bytes."""
    rng = random.Random(seed)
    messages: list[tuple[bytes, str]] = []
    for index in range(n):
        category = CATEGORIES[index % len(CATEGORIES)]
        messages.append((_MUTATORS[category](_random_valid_batch(rng), rng), category))
    return messages
