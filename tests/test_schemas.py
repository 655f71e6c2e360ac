"""The event contracts: JSON Schema files, their pydantic mirrors and the ingest path.

How instances are generated: hypothesis-jsonschema 0.23.1 cannot build objects with the
installed Hypothesis (its object strategy calls a private ``many.more()`` that no longer
exists), so :func:`schema_strategy` walks the schema itself for the structural keywords
(objects, arrays, nullable types, ``$ref`` through the offline registry) and hands every
leaf (numbers with bounds, strings with ECMA-262 patterns, const, enum) to
hypothesis-jsonschema. It raises on any keyword it does not understand, so a schema change
cannot silently widen what the tests skip. Arrays and maps are generated short (a few
items) to keep the tests fast; their bounds are tested with explicit examples.

"Round trip" equality, defined honestly: the input and the model's JSON dump are compared
after dropping null-valued keys (the contracts say absent means null); numbers compare by
value (an integer in a ``number`` field comes back as the equal float), and the dump must
itself satisfy the schema, which checks that integers stay integers.
"""

from __future__ import annotations

import base64
import hashlib
import math
import random
from collections.abc import Iterator, Mapping
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema
from referencing._core import Resolver

from pipeline.errors import InvalidMessageError
from schemas.hashing import canonical_sha256, recommendation_hash, recommendation_set_hash
from schemas.models import (
    DEADLETTER_MAX_BYTES,
    MESSAGE_MODELS,
    ContainerSample,
    ContainerSampleBatch,
    DeadLetter,
    Evidence,
    Message,
    NodeSample,
    Recommendation,
    RecommendationSet,
    Resources,
    Rule,
    WorkloadSpec,
)
from schemas.validate import (
    DEFAULT_MAX_BYTES,
    REGISTRY,
    SCHEMAS,
    ContractValidator,
    decode,
    decode_by_schema,
    decode_container_batch,
    encode,
    make_deadletter,
    schema_of,
    validate_dict,
    validator_for,
)
from tests.invalid_messages import CATEGORIES, invalid_container_batches, valid_container_batch

# --------------------------------------------------------------------------- generation

_STRUCTURAL = frozenset(
    {
        "$schema",
        "$id",
        "$defs",
        "title",
        "description",
        "type",
        "properties",
        "required",
        "additionalProperties",
        "maxProperties",
        "propertyNames",
        "items",
        "minItems",
        "maxItems",
    }
)
_LEAF = frozenset(
    {
        "title",
        "description",
        "type",
        "const",
        "enum",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "minLength",
        "maxLength",
        "pattern",
    }
)
_SHORT = 3  # extra items beyond minItems / entries in maps, to keep examples small


def _leaf_strategy(schema: Mapping[str, Any]) -> st.SearchStrategy[Any]:
    unknown = set(schema) - _LEAF
    if unknown:
        raise NotImplementedError(f"schema_strategy does not handle {sorted(unknown)}")
    return from_schema({k: v for k, v in schema.items() if k not in ("title", "description")})


def schema_strategy(
    schema: Mapping[str, Any], resolver: Resolver[Any], *, full: bool = False
) -> st.SearchStrategy[Any]:
    """Instances valid against ``schema`` (see the module docstring for what is delegated).

    ``full`` draws every optional property, non-null, and at least one item per array and
    map, so that every field of the contract is present to be broken.
    """
    if "$ref" in schema:
        resolved = resolver.lookup(schema["$ref"])
        return schema_strategy(resolved.contents, resolved.resolver, full=full)
    schema_type = schema.get("type")
    if isinstance(schema_type, list) and "null" in schema_type and len(schema_type) > 1:
        others = [t for t in schema_type if t != "null"]
        rest = schema_strategy(
            dict(schema, type=others[0] if len(others) == 1 else others), resolver, full=full
        )
        return rest if full else st.none() | rest
    if schema_type in ("object", "array") and set(schema) - _STRUCTURAL:
        raise NotImplementedError(
            f"schema_strategy does not handle {sorted(set(schema) - _STRUCTURAL)}"
        )
    if schema_type == "object":
        properties = schema.get("properties")
        if properties is not None:
            assert schema.get("additionalProperties") is False
            required = set(schema.get("required", ()))
            subs = {
                name: schema_strategy(sub, resolver, full=full) for name, sub in properties.items()
            }
            return st.fixed_dictionaries(
                {name: sub for name, sub in subs.items() if full or name in required},
                optional={
                    name: sub for name, sub in subs.items() if not full and name not in required
                },
            )
        keys = _leaf_strategy({"type": "string", **schema.get("propertyNames", {})})
        values = schema_strategy(schema["additionalProperties"], resolver, full=full)
        size = 1 if full else min(schema.get("maxProperties", _SHORT), _SHORT)
        return st.dictionaries(keys, values, min_size=1 if full else 0, max_size=size)
    if schema_type == "array":
        min_items = max(schema.get("minItems", 0), 1 if full else 0)
        # ``full`` exists to break every field: one item per array already holds each
        # field once, and more items only multiply the (slow) schema checks.
        extra = 0 if full else _SHORT
        return st.lists(
            schema_strategy(schema["items"], resolver, full=full),
            min_size=min_items,
            max_size=min(schema.get("maxItems", min_items + extra), min_items + extra),
        )
    return _leaf_strategy(schema)


def message_strategy(model: type[Message], *, full: bool = False) -> st.SearchStrategy[Any]:
    """Valid JSON instances of ``model``'s schema."""
    schema = schema_of(model)
    return schema_strategy(schema, REGISTRY.resolver(base_uri=schema["$id"]), full=full)


def without_nulls(value: Any) -> Any:
    """Drop null-valued keys recursively and turn tuples into lists (absent means null)."""
    if isinstance(value, Mapping):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [without_nulls(v) for v in value]
    return value


_FAST = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --------------------------------------------------------------------------- the schema files


def test_every_schema_file_is_a_valid_2020_12_schema_with_its_id_and_constants() -> None:
    assert {model.schema_id for model in MESSAGE_MODELS} == set(SCHEMAS)
    for model in MESSAGE_MODELS:
        schema = schema_of(model)
        ContractValidator.check_schema(dict(schema))
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        kind = model.model_fields["kind"].default
        assert schema["$id"] == f"https://daytwo.dev/schemas/{kind}.v1.json"
        assert schema["properties"]["kind"] == {**schema["properties"]["kind"], "const": kind}
        assert schema["properties"]["schema_version"]["const"] == 1
        assert {"schema_version", "kind"} <= set(schema["required"])


def _object_schemas(node: Any) -> list[Mapping[str, Any]]:
    found: list[Mapping[str, Any]] = []
    if isinstance(node, Mapping):
        types = node.get("type")
        if types == "object" or (isinstance(types, list) and "object" in types):
            found.append(node)
        for value in node.values():
            found.extend(_object_schemas(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_object_schemas(value))
    return found


def test_every_object_in_every_schema_forbids_unknown_properties_and_says_why() -> None:
    for schema in SCHEMAS.values():
        for obj in _object_schemas(schema):
            assert obj.get("additionalProperties") is False or "propertyNames" in obj, obj
            for name, prop in obj.get("properties", {}).items():
                if "$ref" not in prop:
                    assert prop.get("description"), f"{schema['$id']}: {name} lacks a description"


def test_recommendation_set_resolves_recommendation_offline_and_reports_inner_path() -> None:
    valid = _recommendation_dict()
    broken = dict(valid, confidence=1.5)
    data = _recommendation_set_dict([valid, broken])
    with pytest.raises(InvalidMessageError) as caught:
        validate_dict(RecommendationSet, data)
    assert caught.value.reason.startswith("$.recommendations[1].confidence:")


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("model", MESSAGE_MODELS, ids=lambda m: m.__name__)
def test_schema_generated_instances_round_trip_through_model_and_schema(
    model: type[Message],
) -> None:
    validator = validator_for(model)

    @_FAST
    @given(message_strategy(model))
    def round_trip(instance: dict[str, Any]) -> None:
        assert validator.is_valid(instance)
        built = validate_dict(model, instance)
        dumped = built.model_dump(mode="json")
        assert validator.is_valid(dumped)
        assert without_nulls(dumped) == without_nulls(instance)
        wire = encode(built)
        assert decode(model, wire, max_bytes=len(wire)) == built
        assert decode(model, orjson.dumps(instance), max_bytes=1 << 24) == built
        assert encode(decode(model, wire, max_bytes=len(wire))) == wire

    round_trip()


_ODD_VALUES: list[Any] = [
    None,
    True,
    False,
    -1,
    -0.5,
    0,
    3.0,
    1.0000001,
    100.5,
    86_400.5,
    100_000.5,
    4_102_444_801,
    2**31,
    2**53,
    2**63 - 1,
    1e300,
    "",
    "x",
    "web\n",
    "UPPER",
    "a" * 600,
    [],
    {},
    [1],
    {"extra": 1},
]


def _paths(value: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    paths = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            paths.extend(_paths(item, (*prefix, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            paths.extend(_paths(item, (*prefix, index)))
    return paths


def _mutate(instance: Any, path: tuple[str | int, ...], how: str, odd: Any) -> Any:
    if not path:
        return odd if how == "replace" else instance
    head, rest = path[0], path[1:]
    copy: Any = dict(instance) if isinstance(instance, dict) else list(instance)
    if rest:
        copy[head] = _mutate(copy[head], rest, how, odd)
    elif how == "delete" and isinstance(copy, dict):
        del copy[head]
    elif how == "add" and isinstance(copy[head], dict):
        copy[head] = {**copy[head], "unexpected": odd}
    else:
        copy[head] = odd
    return copy


def _outcome(model: type[Message], raw: bytes, *, fast: bool) -> object:
    """The model, or (stage, reason). Stage "model" would mean the schema accepted what the
    model refuses: a drift between the two that must never happen."""
    decoder = decode if fast else decode_by_schema
    try:
        return decoder(model, raw, max_bytes=1 << 24)
    except InvalidMessageError as exc:
        outcome = (exc.stage, exc.reason)
    assert outcome[0] != "model", outcome[1]
    return outcome


@pytest.mark.parametrize("model", MESSAGE_MODELS, ids=lambda m: m.__name__)
def test_fast_path_agrees_with_the_schema_on_mutated_messages(model: type[Message]) -> None:
    """decode() accepts through strict pydantic first; that must never accept more than the
    schema does. Compare it with the reference path on valid messages broken in one place."""

    @settings(_FAST, max_examples=120)
    @given(message_strategy(model), st.data())
    def agree(instance: dict[str, Any], data: st.DataObject) -> None:
        path = data.draw(st.sampled_from(_paths(instance)))
        how = data.draw(st.sampled_from(["replace", "delete", "add"]))
        odd = data.draw(st.sampled_from(_ODD_VALUES))
        raw = orjson.dumps(_mutate(instance, path, how, odd))
        assert _outcome(model, raw, fast=True) == _outcome(model, raw, fast=False)

    agree()


Path = tuple[str | int, ...]


def _schema_paths(
    instance: Any, schema: Mapping[str, Any], resolver: Resolver[Any], prefix: Path = ()
) -> list[tuple[Path, Mapping[str, Any]]]:
    """Every location in ``instance`` with the (resolved) subschema that governs it."""
    if "$ref" in schema:
        resolved = resolver.lookup(schema["$ref"])
        return _schema_paths(instance, resolved.contents, resolved.resolver, prefix)
    found: list[tuple[Path, Mapping[str, Any]]] = [(prefix, schema)]
    if isinstance(instance, dict):
        for key, item in instance.items():
            sub = schema.get("properties", {}).get(key, schema.get("additionalProperties"))
            found.extend(_schema_paths(item, sub, resolver, (*prefix, key)))
    elif isinstance(instance, list):
        for index, item in enumerate(instance):
            found.extend(_schema_paths(item, schema["items"], resolver, (*prefix, index)))
    return found


def _violations(schema: Mapping[str, Any], current: Any) -> list[Any]:
    """Values that break ``schema`` in one way each: just past every bound, wrong types."""
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else types
    bad: list[Any] = []
    if "maximum" in schema:
        top = schema["maximum"]
        bad += [top + 1, math.nextafter(float(top), math.inf)] if top < 2**53 else [top + 1]
    if "minimum" in schema:
        bottom = schema["minimum"]
        bad += [bottom - 1, math.nextafter(float(bottom), -math.inf)]
    if "exclusiveMinimum" in schema:
        bad += [schema["exclusiveMinimum"], schema["exclusiveMinimum"] - 1]
    if "integer" in types:
        bad += [0.5, "1"]
    if "number" in types:
        bad += ["0.5", True]
    if "string" in types:
        bad += [1]
        if "maxLength" in schema and schema["maxLength"] < 10_000:
            bad.append("a" * (schema["maxLength"] + 1))
        if schema.get("minLength", 0) > 0:
            bad.append("")
        if "pattern" in schema and isinstance(current, str):
            bad += [current + "\n", " " + current, current + "\x00"]
    if "boolean" in types:
        bad += [0, "true", None]
    if "const" in schema or "enum" in schema:
        bad += ["other", None, True]
    if "null" not in types and "const" not in schema and "enum" not in schema:
        bad.append(None)
    if "object" in types:
        bad += [[], "x"]
    if "array" in types:
        bad += [{}, "x"]
    return bad


def _valid_extremes(schema: Mapping[str, Any], current: Any) -> list[Any]:
    """Values the schema still accepts at its edges: each bound itself, the integer 5 spelt
    5.0, strings of exactly the allowed length (where no pattern constrains them)."""
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else types
    good: list[Any] = []
    if "integer" in types or "number" in types:
        good += [schema[bound] for bound in ("minimum", "maximum") if bound in schema]
        if "exclusiveMinimum" in schema and "number" in types:
            good.append(math.nextafter(float(schema["exclusiveMinimum"]), math.inf))
    if "integer" in types and isinstance(current, int) and abs(current) < 2**53:
        good.append(float(current))
    if "string" in types and "pattern" not in schema:
        good += ["a" * schema.get("minLength", 0) or "a", "a" * schema.get("maxLength", 100)]
    return good


def _get(instance: Any, path: Path) -> Any:
    for part in path:
        instance = instance[part]
    return instance


def boundary_cases(
    instance: dict[str, Any], schema: Mapping[str, Any], resolver: Resolver[Any]
) -> Iterator[tuple[Path, Any, bool, bytes]]:
    """Every field of ``instance`` broken in each way its schema forbids, and set to each
    edge it allows: ``(path, value, valid, encoded message)``."""
    for path, sub in _schema_paths(instance, schema, resolver):
        current = _get(instance, path)
        cases = [(value, False) for value in _violations(sub, current)]
        cases += [(value, True) for value in _valid_extremes(sub, current)]
        if sub.get("properties"):
            cases += [({**current, "unexpected": 1}, False)]
            for name in sub.get("required", ()):
                cases += [({k: v for k, v in current.items() if k != name}, False)]
        for value, valid in cases:
            yield path, value, valid, orjson.dumps(_mutate(instance, path, "replace", value))


@pytest.mark.parametrize("model", MESSAGE_MODELS, ids=lambda m: m.__name__)
def test_every_field_just_past_its_bounds_is_rejected_by_both_paths(model: type[Message]) -> None:
    """Exhaustive per field: break each one in every way its schema forbids, and try the
    edges it allows; the fast path and the schema must agree, and accept exactly the latter.
    A model bound looser or stricter than its schema's fails here."""
    schema = schema_of(model)
    resolver = REGISTRY.resolver(base_uri=schema["$id"])

    @settings(_FAST, max_examples=3)
    @given(message_strategy(model, full=True))
    def every_field(instance: dict[str, Any]) -> None:
        for path, value, valid, raw in boundary_cases(instance, schema, resolver):
            fast = _outcome(model, raw, fast=True)
            assert fast == _outcome(model, raw, fast=False), (path, value)
            assert isinstance(fast, Message) == valid, (path, value, fast)

    every_field()


# --------------------------------------------------------------------------- explicit examples

_WORKLOAD = "prod/shop/Deployment/checkout"
_HASH = "ab" * 32


def _batch_dict(**sample_overrides: Any) -> dict[str, Any]:
    sample = {
        "container": "app",
        "timestamp": 1_700_000_010.0,
        "interval_seconds": 10,
        "cpu_usage_cores": 0.25,
        "memory_working_set_bytes": 200_000_000,
        **sample_overrides,
    }
    return {
        "schema_version": 1,
        "kind": "container-sample-batch",
        "source": "cgroup",
        "agent": "node-1",
        "workload": _WORKLOAD,
        "timestamp": 1_700_000_010.0,
        "samples": [sample],
    }


def _node_dict(**overrides: Any) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "kind": "node-sample",
        "source": "node",
        "node": "worker-1.example.internal",
        "timestamp": 1_700_000_000.0,
        "interval_seconds": 15.0,
        "cpu_capacity_cores": 16,
        "cpu_used_cores": 3.5,
        "memory_total_bytes": 64 << 30,
        "memory_available_bytes": 40 << 30,
        "memory_used_bytes": 24 << 30,
        "psi": {"cpu_some_avg10": 1.5, "memory_full_avg10": None},
        **overrides,
    }


def _spec_dict(**overrides: Any) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "kind": "workload-spec",
        "source": "inventory",
        "workload": _WORKLOAD,
        "timestamp": 1_700_000_000.0,
        "profile": "balanced",
        "replicas": 3,
        "containers": [{"name": "app", "cpu_request_cores": 0.5, "memory_limit_bytes": 1 << 30}],
        "annotations": {"daytwo.io/profile": "balanced"},
        **overrides,
    }


def _recommendation_dict(**overrides: Any) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "kind": "recommendation",
        "workload": _WORKLOAD,
        "container": "app",
        "profile": "balanced",
        "generated_at": 1_700_000_100.0,
        "current": {"cpu_request_cores": 1.0, "memory_limit_bytes": 2 << 30},
        "recommended": {
            "cpu_request_cores": 0.4,
            "cpu_limit_cores": None,
            "memory_request_bytes": 600 << 20,
            "memory_limit_bytes": 1 << 30,
            "jvm_max_heap_bytes": None,
        },
        "rules": [{"id": "cpu.request.p95", "text": "p95 CPU is 0.31 cores over 7 days."}],
        "evidence": {
            "samples": 60_480,
            "coverage_seconds": 604_800,
            "first_timestamp": 1_699_395_300.0,
            "last_timestamp": 1_700_000_100.0,
            "cpu_p95_cores": 0.31,
            "memory_peak_bytes": 700 << 20,
            "oom_kills": 0,
        },
        "monthly_cost_delta_usd": -12.5,
        "confidence": 0.8,
        "risk": "low",
        "hash": _HASH,
        **overrides,
    }


def _recommendation_set_dict(members: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "kind": "recommendation-set",
        "workload": _WORKLOAD,
        "generated_at": 1_700_000_100.0,
        "recommendations": members,
        "hash": _HASH,
    }


def _deadletter_dict(**overrides: Any) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "kind": "deadletter",
        "topic": "daytwo.container-samples.v1",
        "partition": 3,
        "offset": 1234,
        "key_b64": base64.b64encode(_WORKLOAD.encode()).decode(),
        "value_b64": base64.b64encode(b"not json").decode(),
        "value_size_bytes": 8,
        "value_sha256": hashlib.sha256(b"not json").hexdigest(),
        "truncated": False,
        "reason": "not valid JSON",
        "stage": "decode",
        "failed_at": 1_700_000_000.5,
        **overrides,
    }


_VALID_EXAMPLES: list[tuple[type[Message], dict[str, Any]]] = [
    (ContainerSampleBatch, _batch_dict()),
    (
        ContainerSampleBatch,
        _batch_dict(memory_limit_bytes=None, cpu_throttled_ratio=1, oom_kills=2),
    ),
    (
        ContainerSampleBatch,
        _batch_dict(memory_working_set_bytes=5.0),
    ),  # JSON says 5.0 is an integer
    (NodeSample, _node_dict()),
    (NodeSample, _node_dict(psi=None)),
    (WorkloadSpec, _spec_dict()),
    (WorkloadSpec, _spec_dict(replicas=None, annotations={})),
    (Recommendation, _recommendation_dict()),
    (Recommendation, _recommendation_dict(rules=[], monthly_cost_delta_usd=0)),
    (RecommendationSet, _recommendation_set_dict([_recommendation_dict()])),
    (RecommendationSet, _recommendation_set_dict([])),
    (DeadLetter, _deadletter_dict()),
    (DeadLetter, _deadletter_dict(key_b64=None, partition=None, offset=None)),
]


@pytest.mark.parametrize(("model", "data"), _VALID_EXAMPLES)
def test_explicit_valid_examples_decode_to_equal_models(
    model: type[Message], data: dict[str, Any]
) -> None:
    decoded = decode(model, orjson.dumps(data))
    assert without_nulls(decoded.model_dump(mode="json")) == without_nulls(data)
    assert validate_dict(model, data) == decoded


_INVALID_EXAMPLES: list[tuple[type[Message], dict[str, Any], str]] = [
    (ContainerSampleBatch, _batch_dict(container="web\n"), "$.samples[0].container"),
    (ContainerSampleBatch, _batch_dict(container="app:1"), "$.samples[0].container"),
    (ContainerSampleBatch, _batch_dict(timestamp=1_700_000_010_000), "$.samples[0].timestamp"),
    (ContainerSampleBatch, _batch_dict(interval_seconds=0), "$.samples[0].interval_seconds"),
    (
        ContainerSampleBatch,
        _batch_dict(memory_limit_bytes=9_223_372_036_854_771_712),
        "memory_limit",
    ),
    (ContainerSampleBatch, _batch_dict(cpu_limit_cores=0), "$.samples[0].cpu_limit_cores"),
    (ContainerSampleBatch, dict(_batch_dict(), workload="prod/shop/checkout"), "$.workload"),
    (ContainerSampleBatch, dict(_batch_dict(), workload="prod/shop/Deploy ment/x"), "$.workload"),
    (ContainerSampleBatch, dict(_batch_dict(), samples=[]), "$.samples"),
    (ContainerSampleBatch, dict(_batch_dict(), kind="node-sample"), "$.kind"),
    (ContainerSampleBatch, dict(_batch_dict(), source="Cgroup"), "$.source"),
    (NodeSample, _node_dict(psi={"cpu_some_avg10": 101}), "$.psi.cpu_some_avg10"),
    (NodeSample, _node_dict(cpu_capacity_cores=0), "$.cpu_capacity_cores"),
    (NodeSample, _node_dict(memory_used_bytes=None), "$.memory_used_bytes"),
    (WorkloadSpec, _spec_dict(containers=[]), "$.containers"),
    (WorkloadSpec, _spec_dict(profile="Balanced"), "$.profile"),
    (WorkloadSpec, _spec_dict(annotations={"a": 1}), "$.annotations.a"),
    (WorkloadSpec, _spec_dict(replicas=-1), "$.replicas"),
    (Recommendation, _recommendation_dict(risk="none"), "$.risk"),
    (Recommendation, _recommendation_dict(hash="AB" * 32), "$.hash"),
    (Recommendation, _recommendation_dict(confidence=-0.1), "$.confidence"),
    (Recommendation, _recommendation_dict(rules=[{"id": "x"}]), "$.rules[0]"),
    (Recommendation, _recommendation_dict(current=None), "$.current"),
    (
        RecommendationSet,
        _recommendation_set_dict([{"kind": "recommendation"}]),
        "$.recommendations[0]",
    ),
    (
        RecommendationSet,
        _recommendation_set_dict([_recommendation_dict(container="web\n")]),
        "$.recommendations[0].container",
    ),
    (DeadLetter, _deadletter_dict(value_b64="not base64!"), "$.value_b64"),
    (DeadLetter, _deadletter_dict(truncated="no"), "$.truncated"),
    (DeadLetter, {k: v for k, v in _deadletter_dict().items() if k != "offset"}, "offset"),
]


@pytest.mark.parametrize(("model", "data", "where"), _INVALID_EXAMPLES)
def test_explicit_invalid_examples_are_rejected_naming_the_field(
    model: type[Message], data: dict[str, Any], where: str
) -> None:
    with pytest.raises(InvalidMessageError) as caught:
        decode(model, orjson.dumps(data))
    assert caught.value.stage == "validate"
    assert where in caught.value.reason
    assert "\n" not in caught.value.reason


def test_models_refuse_what_the_schema_refuses_when_built_directly() -> None:
    with pytest.raises(ValueError, match="container"):
        ContainerSample(
            container="web\n",
            timestamp=1.0,
            interval_seconds=1.0,
            cpu_usage_cores=0.0,
            memory_working_set_bytes=0,
        )
    with pytest.raises(ValueError, match="cpu_usage_cores"):
        ContainerSample(
            container="web",
            timestamp=1.0,
            interval_seconds=1.0,
            cpu_usage_cores=math.nan,
            memory_working_set_bytes=0,
        )


def test_missing_kind_is_rejected_although_the_model_has_a_default() -> None:
    data = _batch_dict()
    del data["kind"]
    with pytest.raises(InvalidMessageError, match=r"^\$: 'kind' is a required property"):
        decode_container_batch(orjson.dumps(data))
    member = _recommendation_dict()
    del member["schema_version"]
    with pytest.raises(InvalidMessageError, match=r"recommendations\[0\]"):
        decode(RecommendationSet, orjson.dumps(_recommendation_set_dict([member])))


# --------------------------------------------------------------------------- ingest path


def test_size_limit_is_checked_before_parsing_with_an_exact_reason() -> None:
    body = orjson.dumps(_batch_dict())
    at_limit = body[:-1] + b" " * (DEFAULT_MAX_BYTES - len(body)) + b"}"
    assert len(at_limit) == DEFAULT_MAX_BYTES
    assert decode_container_batch(at_limit).workload == _WORKLOAD
    over = b" " + at_limit
    with pytest.raises(InvalidMessageError) as caught:
        decode_container_batch(over)
    assert caught.value.stage == "size"
    assert caught.value.reason == (
        f"payload of {DEFAULT_MAX_BYTES + 1} bytes exceeds the {DEFAULT_MAX_BYTES}-byte limit"
    )
    with pytest.raises(InvalidMessageError, match="payload of 17 bytes exceeds the 16-byte"):
        decode(ContainerSampleBatch, b"{" + b" " * 15 + b"}", max_bytes=16)


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_are_not_json(literal: bytes) -> None:
    raw = orjson.dumps(_batch_dict(cpu_usage_cores=0.123456)).replace(b"0.123456", literal)
    with pytest.raises(InvalidMessageError) as caught:
        decode_container_batch(raw)
    assert caught.value.stage == "decode"
    assert "NaN and Infinity are not JSON numbers" in caught.value.reason


def test_long_reasons_are_cut_to_one_line_of_500_characters() -> None:
    data = dict(_batch_dict(), agent="x" * 5000)
    with pytest.raises(InvalidMessageError) as caught:
        decode_container_batch(orjson.dumps(data))
    assert caught.value.reason.startswith("$.agent:")
    assert len(caught.value.reason) <= 500


def test_two_thousand_invalid_batches_are_all_rejected_with_a_reason() -> None:
    messages = invalid_container_batches(2000, seed=20240611)
    expected_stage = {
        "oversized": "size",
        "not-json": "decode",
        "nan-infinity": "decode",
        "empty": "decode",
    }
    counts = dict.fromkeys(CATEGORIES, 0)
    for raw, category in messages:
        counts[category] += 1
        with pytest.raises(InvalidMessageError) as caught:
            decode_container_batch(raw)
        assert caught.value.reason.strip(), category
        assert caught.value.stage == expected_stage.get(category, "validate"), (category, raw[:200])
    assert counts == dict.fromkeys(CATEGORIES, 200)


def test_invalid_batches_are_deterministic_per_seed() -> None:
    assert invalid_container_batches(50, seed=1) == invalid_container_batches(50, seed=1)
    assert invalid_container_batches(50, seed=1) != invalid_container_batches(50, seed=2)


@given(
    workload=st.from_regex(r"\A[a-z]{1,8}/[a-z0-9-]{1,12}/(Deployment|Process)/[a-z0-9.-]{1,20}\Z"),
    container=st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?\Z"),
    ts=st.floats(0, 4_102_444_800),
    cpu=st.floats(0, 100_000),
    mem=st.integers(0, 2**53 - 1),
)
@settings(deadline=None)
def test_valid_batches_from_the_helper_are_accepted_with_their_values(
    workload: str, container: str, ts: float, cpu: float, mem: int
) -> None:
    batch = decode_container_batch(valid_container_batch(workload, container, ts, cpu, mem))
    assert batch.workload == workload
    (sample,) = batch.samples
    assert (sample.container, sample.timestamp, sample.cpu_usage_cores) == (container, ts, cpu)
    assert sample.memory_working_set_bytes == mem
    assert sample.oom_kills is None


def test_encode_is_deterministic_and_sorted() -> None:
    spec_a = validate_dict(WorkloadSpec, _spec_dict(annotations={"b": "2", "a": "1"}))
    spec_b = validate_dict(WorkloadSpec, _spec_dict(annotations={"a": "1", "b": "2"}))
    assert encode(spec_a) == encode(spec_b)
    assert list(orjson.loads(encode(spec_a))) == sorted(orjson.loads(encode(spec_a)))


# --------------------------------------------------------------------------- dead letters


def test_deadletter_keeps_small_values_whole_and_round_trips() -> None:
    value = b'{"broken": '
    letter = make_deadletter(
        topic="daytwo.container-samples.v1",
        partition=2,
        offset=99,
        key=b"prod/shop/Deployment/checkout",
        value=value,
        reason="not valid JSON:\n  unexpected end",
        stage="decode",
        failed_at=1_700_000_000.0,
    )
    assert base64.b64decode(letter.value_b64) == value
    assert letter.key_b64 is not None
    assert base64.b64decode(letter.key_b64) == b"prod/shop/Deployment/checkout"
    assert (letter.truncated, letter.value_size_bytes) == (False, len(value))
    assert letter.value_sha256 == hashlib.sha256(value).hexdigest()
    assert letter.reason == "not valid JSON: unexpected end"
    assert decode(DeadLetter, encode(letter)) == letter


def test_deadletter_truncates_at_four_mebibytes_but_hashes_the_whole_value() -> None:
    value = random.Random(5).randbytes(DEADLETTER_MAX_BYTES + 1)
    letter = make_deadletter(
        topic="t",
        partition=None,
        offset=None,
        key=None,
        value=value,
        reason="payload too large",
        stage="size",
        failed_at=0.0,
    )
    assert letter.truncated
    assert base64.b64decode(letter.value_b64) == value[:DEADLETTER_MAX_BYTES]
    assert letter.value_size_bytes == len(value)
    assert letter.value_sha256 == hashlib.sha256(value).hexdigest()
    assert letter.key_b64 is None
    wire = encode(letter)
    assert decode(DeadLetter, wire, max_bytes=len(wire)) == letter


def test_deadletter_cap_cuts_the_key_too_and_limits_reason_and_cap() -> None:
    letter = make_deadletter(
        topic="t",
        partition=0,
        offset=0,
        key=b"k" * 11,
        value=b"v" * 10,
        reason="r" * 5000,
        stage="validate",
        failed_at=1.0,
        max_value_bytes=10,
    )
    assert letter.truncated
    assert letter.key_b64 is not None
    assert base64.b64decode(letter.key_b64) == b"k" * 10
    assert base64.b64decode(letter.value_b64) == b"v" * 10
    assert len(letter.reason) == 1000
    with pytest.raises(ValueError, match="max_value_bytes"):
        make_deadletter(
            topic="t",
            partition=0,
            offset=0,
            key=None,
            value=b"",
            reason="r",
            stage="s",
            failed_at=1.0,
            max_value_bytes=DEADLETTER_MAX_BYTES + 1,
        )


# --------------------------------------------------------------------------- hashing


@given(st.dictionaries(st.text(max_size=5), st.integers(-(2**53), 2**53), max_size=6))
def test_canonical_hash_ignores_key_order_and_int_float_spelling(data: dict[str, int]) -> None:
    reordered = dict(reversed(list(data.items())))
    as_floats = {k: float(v) for k, v in data.items()}
    assert canonical_sha256(data) == canonical_sha256(reordered) == canonical_sha256(as_floats)
    expected = hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()
    assert canonical_sha256(data) == expected


def test_canonical_hash_changes_with_content_and_refuses_non_json() -> None:
    assert canonical_sha256({"a": 1}) != canonical_sha256({"a": 2})
    assert canonical_sha256({"a": 0.5}) != canonical_sha256({"a": 0.25})
    with pytest.raises(ValueError, match="non-finite"):
        canonical_sha256({"a": math.inf})
    with pytest.raises(TypeError):
        canonical_sha256({"a": {1, 2}})


def test_recommendation_hash_covers_the_proposal_not_its_order_or_time() -> None:
    recommended = Resources(cpu_request_cores=0.5, memory_limit_bytes=1 << 30)
    base = {"workload": _WORKLOAD, "container": "app", "profile": "balanced"}
    first = recommendation_hash(**base, recommended=recommended, rule_ids=["b", "a"])
    assert first == recommendation_hash(**base, recommended=recommended, rule_ids=["a", "b"])
    changed = Resources(cpu_request_cores=0.6, memory_limit_bytes=1 << 30)
    assert first != recommendation_hash(**base, recommended=changed, rule_ids=["a", "b"])
    assert first != recommendation_hash(**base, recommended=recommended, rule_ids=["a"])
    rec = Recommendation(
        workload=_WORKLOAD,
        container="app",
        profile="balanced",
        generated_at=1.0,
        current=Resources(),
        recommended=recommended,
        rules=(Rule(id="a", text="A."), Rule(id="b", text="B.")),
        evidence=Evidence(samples=1, coverage_seconds=10.0),
        monthly_cost_delta_usd=0.0,
        confidence=0.5,
        risk="low",
        hash=first,
    )
    later = rec.model_copy(update={"generated_at": 2.0})
    assert (
        recommendation_hash(
            **base, recommended=later.recommended, rule_ids=[r.id for r in later.rules]
        )
        == rec.hash
    )
    other = "0" * 64
    assert recommendation_set_hash([first, other]) == recommendation_set_hash([other, first])
    assert recommendation_set_hash([first]) != recommendation_set_hash([first, other])
