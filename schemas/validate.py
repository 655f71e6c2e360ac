"""The ingest path: bytes from Kafka in, a validated model (or a reason to dead-letter) out.

Every consumer decodes through :func:`decode`, so a message is accepted only if it is
within the size limit, is JSON (NaN and Infinity are not JSON), satisfies its JSON Schema
(the contract) and builds its pydantic model. Valid messages take a fast path (one strict
pydantic pass over the bytes); anything else is explained by orjson and the compiled JSON
Schema validator, so reasons always speak the schema's language. Any failure raises
:class:`pipeline.errors.InvalidMessageError` with a one-line reason that names the JSON path
and the problem, and a ``stage`` (``size``, ``decode``, ``validate``, ``model``) for metrics.
The caller turns it into a dead letter with :func:`make_deadletter`.

Schemas are read once from the package files and compiled into validators at import time;
the hot path does no schema loading.

    >>> batch = decode_container_batch(valid_bytes)  # doctest: +SKIP
    >>> encode(batch) == valid_bytes                 # doctest: +SKIP
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator, Mapping
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Final, TypeVar, cast

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from jsonschema.protocols import Validator
from jsonschema.validators import extend
from pydantic import ValidationError as ModelValidationError
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from pipeline.errors import InvalidMessageError
from schemas.models import (
    DEADLETTER_MAX_BYTES,
    MAX_REASON_CHARS,
    MESSAGE_MODELS,
    ContainerSampleBatch,
    DeadLetter,
    Message,
    RecommendationSet,
)

M = TypeVar("M", bound=Message)

DEFAULT_MAX_BYTES: Final = 1_048_576
REASON_MAX_CHARS: Final = 500
_SCHEMA_SUFFIX: Final = ".schema.json"
_NON_JSON_NUMBERS: Final = ("NaN", "Infinity", "-Infinity")
_CONSTANT_FIELDS: Final = frozenset({"schema_version", "kind"})


def _ecma_dollar(pattern: str) -> str:
    r"""Rewrite ``$`` anchors to ``\Z`` so Python matches JSON Schema's ECMA-262 meaning.

    In ECMA-262 (what JSON Schema's ``pattern`` means) and in pydantic's Rust engine, ``$``
    matches only at the end of the string; Python's ``re`` also matches before a final
    newline, which would let ``"web\n"`` through the schema and then fail in the model.
    """
    out: list[str] = []
    in_class = False
    escaped = False
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "$":
            out.append(r"\Z")
            continue
        out.append(char)
    return "".join(out)


@lru_cache(maxsize=256)
def _compiled_pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(_ecma_dollar(pattern))


def _pattern_keyword(
    validator: Validator, pattern: str, instance: object, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if isinstance(instance, str) and _compiled_pattern(pattern).search(instance) is None:
        yield ValidationError(f"{_short_repr(instance)} does not match {pattern!r}")


# types-jsonschema leaves extend() unannotated; the result is a validator class.
ContractValidator: type[Validator] = extend(  # type: ignore[no-untyped-call]
    Draft202012Validator, {"pattern": _pattern_keyword}
)
"""Draft 2020-12 validator whose ``pattern`` keyword has ECMA-262 ``$`` semantics."""


def _schema_files() -> dict[str, dict[str, Any]]:
    """Read every ``*.schema.json`` shipped in this package, keyed by its ``$id``."""
    try:
        package_dir: Any = resources.files(__package__ or "schemas")
    except (NotADirectoryError, TypeError):
        # An editable install made before schemas/__init__.py existed registers `schemas`
        # as a namespace package, which importlib.resources cannot read on Python 3.11;
        # the files sit next to this module either way.
        package_dir = Path(__file__).parent
    contents: dict[str, dict[str, Any]] = {}
    for entry in package_dir.iterdir():
        if entry.name.endswith(_SCHEMA_SUFFIX):
            schema = orjson.loads(entry.read_bytes())
            contents[schema["$id"]] = schema
    return contents


SCHEMAS: Final[Mapping[str, dict[str, Any]]] = _schema_files()
"""Every contract schema, keyed by ``$id``."""

# Registered without their "$schema" keyword (the dialect is given explicitly): jsonschema
# picks the validator class anew for a subschema that carries "$schema", so following a
# $ref into recommendation.v1.json would otherwise leave ContractValidator for the stock
# Draft202012Validator and its Python-flavoured `pattern`.
REGISTRY: Final[Registry[Any]] = Registry().with_resources(
    (
        schema_id,
        DRAFT202012.create_resource({k: v for k, v in schema.items() if k != "$schema"}),
    )
    for schema_id, schema in SCHEMAS.items()
)
"""Offline registry so ``$ref`` between contracts (recommendation-set → recommendation) resolves."""


def _compile(model: type[Message]) -> Validator:
    schema = SCHEMAS[model.schema_id]
    ContractValidator.check_schema(schema)
    validator: Validator = ContractValidator(schema, registry=REGISTRY)
    return validator


_VALIDATORS: Final[dict[type[Message], Validator]] = {
    model: _compile(model) for model in MESSAGE_MODELS
}


def schema_of(kind_model: type[Message]) -> Mapping[str, Any]:
    """Return the JSON Schema (as loaded) that ``kind_model`` mirrors, e.g. for docs and tests."""
    return SCHEMAS[kind_model.schema_id]


def validator_for(kind_model: type[Message]) -> Validator:
    """Return the compiled validator for ``kind_model``'s schema (shared; do not mutate)."""
    return _VALIDATORS[kind_model]


def _short_repr(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= REASON_MAX_CHARS else line[: REASON_MAX_CHARS - 3] + "..."


def _model_reason(error: ModelValidationError) -> str:
    first = error.errors(include_url=False)[0]
    path = "$" + "".join(
        f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"]
    )
    return _one_line(f"{path}: {first['msg']}")


def validate_dict(kind_model: type[M], data: object) -> M:
    """Check already-parsed JSON data against ``kind_model``'s schema, then build the model.

    Use this where data arrives parsed (a trace row turned into a dict, a test); raw bytes
    go through :func:`decode`. Raises InvalidMessageError (stage ``validate`` or ``model``).
    """
    error = best_match(_VALIDATORS[kind_model].iter_errors(cast("Any", data)))
    if error is not None:
        raise InvalidMessageError(
            _one_line(f"{error.json_path}: {error.message}"), stage="validate"
        )
    try:
        return kind_model.model_validate(data)
    except ModelValidationError as exc:
        raise InvalidMessageError(_model_reason(exc), stage="model") from None


def _wire_constants_present(model: Message) -> bool:
    """True when ``schema_version`` and ``kind`` came from the input, as the schema requires.

    The models default them for producers' convenience, so a successful fast validation
    alone does not prove they were on the wire.
    """
    if not model.model_fields_set >= _CONSTANT_FIELDS:
        return False
    if isinstance(model, RecommendationSet):
        return all(member.model_fields_set >= _CONSTANT_FIELDS for member in model.recommendations)
    return True


def decode(kind_model: type[M], raw: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> M:
    """Turn one Kafka value into a validated ``kind_model``, or say precisely why not.

    The size check runs first, so an oversized payload is rejected without parsing it.
    Then a fast path: pydantic parses and validates the bytes in one strict pass (Rust, about
    60x faster than jsonschema here). Strict mode accepts a subset of what the schema accepts
    (tests/test_schemas.py checks the two agree), so a message it accepts is valid. Anything
    it rejects takes the explaining path: orjson, the compiled JSON Schema validator and the
    model in lax mode (which accepts what strict mode may not, such as ``5.0`` for an integer,
    exactly as the schema does). Raises InvalidMessageError with stage ``size``, ``decode``
    (not JSON), ``validate`` (contract violated) or ``model``.
    """
    if len(raw) > max_bytes:
        raise InvalidMessageError(
            f"payload of {len(raw)} bytes exceeds the {max_bytes}-byte limit", stage="size"
        )
    try:
        fast = kind_model.model_validate_json(raw, strict=True)
    except ModelValidationError:
        pass  # explained below
    else:
        if _wire_constants_present(fast):
            return fast
    return decode_by_schema(kind_model, raw, max_bytes=max_bytes)


def decode_by_schema(kind_model: type[M], raw: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> M:
    """The reference path: size, orjson, JSON Schema, then the model in lax mode.

    Same contract as :func:`decode` without its fast path; slower (jsonschema is pure
    Python) but it is the contract spelled out, so tests compare :func:`decode` against it.
    """
    if len(raw) > max_bytes:
        raise InvalidMessageError(
            f"payload of {len(raw)} bytes exceeds the {max_bytes}-byte limit", stage="size"
        )
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        reason = f"not valid JSON: {exc}"
        if exc.doc[exc.pos : exc.pos + 9].startswith(_NON_JSON_NUMBERS):
            reason += " (NaN and Infinity are not JSON numbers)"
        raise InvalidMessageError(_one_line(reason), stage="decode") from None
    return validate_dict(kind_model, data)


def decode_container_batch(raw: bytes) -> ContainerSampleBatch:
    """Decode a ``daytwo.container-samples.v1`` value (the hottest path) with the 1 MiB limit."""
    return decode(ContainerSampleBatch, raw)


def encode(model: Message) -> bytes:
    """Serialise a message for the wire: orjson, keys sorted, so equal models give equal bytes.

    Compacted topics and content hashes rely on that determinism.
    """
    return orjson.dumps(model.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def make_deadletter(
    *,
    topic: str,
    partition: int | None,
    offset: int | None,
    key: bytes | None,
    value: bytes,
    reason: str,
    stage: str,
    failed_at: float,
    max_value_bytes: int = DEADLETTER_MAX_BYTES,
) -> DeadLetter:
    """Wrap a rejected record so nothing invalid is dropped silently.

    The value is kept complete (base64) up to ``max_value_bytes`` (at most 4 MiB, the
    schema's cap), else its first ``max_value_bytes`` bytes with ``truncated=True``; the key
    is capped the same way. ``value_sha256`` and ``value_size_bytes`` always describe the
    whole original value, so a truncated letter still identifies it. An over-long reason is
    cut to the schema's 1000 characters rather than failing on the error path.
    """
    if not 0 <= max_value_bytes <= DEADLETTER_MAX_BYTES:
        raise ValueError(
            f"max_value_bytes must be within 0..{DEADLETTER_MAX_BYTES} (the schema's cap), "
            f"got {max_value_bytes}"
        )
    truncated = len(value) > max_value_bytes or (key is not None and len(key) > max_value_bytes)
    one_line_reason = " ".join(reason.split()) or "(no reason given)"
    if len(one_line_reason) > MAX_REASON_CHARS:
        one_line_reason = one_line_reason[: MAX_REASON_CHARS - 3] + "..."
    return DeadLetter(
        topic=topic,
        partition=partition,
        offset=offset,
        key_b64=None if key is None else _b64(key[:max_value_bytes]),
        value_b64=_b64(value[:max_value_bytes]),
        value_size_bytes=len(value),
        value_sha256=hashlib.sha256(value).hexdigest(),
        truncated=truncated,
        reason=one_line_reason,
        stage=stage,
        failed_at=failed_at,
    )
