"""The msgspec decoder of container batches (schemas/wire.py) keeps the contract exactly.

It must accept what the JSON Schema accepts with the same values, and refuse what the
schema refuses with the reference path's stage and reason, on generated messages broken
in one place, on every field pushed just past each of its bounds, and on the catalogue
of invalid batches the rest of the suite uses.
"""

from __future__ import annotations

from typing import Any

import msgspec
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import InvalidMessageError
from schemas.models import ContainerSampleBatch
from schemas.validate import REGISTRY, decode_by_schema, schema_of
from schemas.wire import WireContainerBatch, decode_container_batch_fast
from tests.invalid_messages import invalid_container_batches, valid_container_batch
from tests.test_schemas import (
    _FAST,
    _ODD_VALUES,
    _mutate,
    _paths,
    boundary_cases,
    message_strategy,
)


def _plain(decoded: object) -> object:
    """Accepted messages as plain JSON data, whichever decoder built them."""
    if isinstance(decoded, WireContainerBatch):
        return orjson.loads(msgspec.json.encode(decoded))
    assert isinstance(decoded, ContainerSampleBatch)
    return orjson.loads(orjson.dumps(decoded.model_dump(mode="json")))


def _outcome(raw: bytes, *, fast: bool) -> object:
    try:
        decoded = (
            decode_container_batch_fast(raw)
            if fast
            else decode_by_schema(ContainerSampleBatch, raw)
        )
    except InvalidMessageError as exc:
        return (exc.stage, exc.reason)
    return ("ok", _plain(decoded))


@settings(_FAST, max_examples=300)
@given(message_strategy(ContainerSampleBatch), st.data())
def test_the_wire_decoder_agrees_with_the_schema_on_mutated_batches(
    instance: dict[str, Any], data: st.DataObject
) -> None:
    path = data.draw(st.sampled_from(_paths(instance)))
    how = data.draw(st.sampled_from(["replace", "delete", "add"]))
    odd = data.draw(st.sampled_from(_ODD_VALUES))
    raw = orjson.dumps(_mutate(instance, path, how, odd))
    assert _outcome(raw, fast=True) == _outcome(raw, fast=False)


@settings(_FAST, max_examples=200)
@given(message_strategy(ContainerSampleBatch))
def test_valid_batches_take_the_wire_path_with_their_values(instance: dict[str, Any]) -> None:
    raw = orjson.dumps(instance)
    decoded = decode_container_batch_fast(raw)
    assert _outcome(raw, fast=True) == _outcome(raw, fast=False)
    # only integers spelt as floats (5.0), which the schema allows, need the lax path
    assert isinstance(decoded, WireContainerBatch) or _has_float_integer(raw)


def _has_float_integer(raw: bytes) -> bool:
    try:
        msgspec.json.decode(raw, type=WireContainerBatch)
    except msgspec.ValidationError as exc:
        return "Expected `int`, got `float`" in str(exc)
    return False


def test_every_field_just_past_its_bounds_is_refused_like_the_schema_does() -> None:
    schema = schema_of(ContainerSampleBatch)
    resolver = REGISTRY.resolver(base_uri=schema["$id"])

    @settings(_FAST, max_examples=4)
    @given(message_strategy(ContainerSampleBatch, full=True))
    def every_field(instance: dict[str, Any]) -> None:
        for path, value, valid, raw in boundary_cases(instance, schema, resolver):
            fast = _outcome(raw, fast=True)
            assert fast == _outcome(raw, fast=False), (path, value)
            assert (fast[0] == "ok") == valid, (path, value, fast)  # type: ignore[index]

    every_field()


def test_the_catalogue_of_invalid_batches_is_refused_with_the_reference_reasons() -> None:
    for raw, _category in invalid_container_batches(400, seed=11):
        fast = _outcome(raw, fast=True)
        assert fast[0] != "ok"  # type: ignore[index]
        assert fast == _outcome(raw, fast=False)
    raw = valid_container_batch("prod/shop/Deployment/web", "app", 1.7e9, 0.5, 2**28)
    assert isinstance(decode_container_batch_fast(raw), WireContainerBatch)
