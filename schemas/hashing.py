"""Content hashes for recommendations, so proposing the same thing twice changes nothing.

The hash is the sha256 of a canonical JSON form: keys sorted, no whitespace, integral
floats written as integers (``2.0`` and ``2`` hash alike, whichever way a producer built
the number), non-finite numbers refused. Producers (the sizing core) and consumers (the
PR sink) call the same functions here, so they always agree.

    >>> canonical_sha256({"b": 1, "a": 2.0}) == canonical_sha256({"a": 2, "b": 1.0})
    True
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping

import orjson

from schemas.models import Resources

_INT64_BOUND = 2**63


def _canonical(value: object) -> object:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot hash a non-finite number: {value!r}")
        # An integral float is an exact integer; only orjson's 64-bit integer range limits
        # the rewrite (larger integral floats stay floats).
        return int(value) if value.is_integer() and abs(value) < _INT64_BOUND else value
    if isinstance(value, int):
        return value
    if isinstance(value, Mapping):
        canonical: dict[str, object] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"cannot hash a mapping with a non-string key: {key!r}")
            canonical[key] = _canonical(item)
        return canonical
    if isinstance(value, list | tuple):
        return [_canonical(item) for item in value]
    raise TypeError(f"cannot hash a value of type {type(value).__name__}: only JSON data")


def canonical_sha256(data: object) -> str:
    """Return the sha256 hex digest of ``data``'s canonical JSON (see the module docstring).

    ``data`` must be JSON data (dict with str keys, list/tuple, str, int, float, bool, None);
    pass ``model.model_dump(mode="json")`` for a model.
    """
    encoded = orjson.dumps(_canonical(data), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(encoded).hexdigest()


def recommendation_hash(
    *, workload: str, container: str, profile: str, recommended: Resources, rule_ids: Iterable[str]
) -> str:
    """The ``hash`` of a recommendation: what it proposes, never when.

    Covers workload, container, profile, the recommended resources and the sorted rule ids
    (the order rules fired in is not a change); timestamps, evidence and cost are left out
    so a repeat of the same proposal hashes the same and opens no new PR.
    """
    return canonical_sha256(
        {
            "workload": workload,
            "container": container,
            "profile": profile,
            "recommended": recommended.model_dump(mode="json"),
            "rule_ids": sorted(rule_ids),
        }
    )


def recommendation_set_hash(member_hashes: Iterable[str]) -> str:
    """The ``hash`` of a recommendation-set: sha256 of the canonical JSON array of the sorted
    member hashes, so the set's hash changes exactly when some member's proposal changes."""
    return canonical_sha256(sorted(member_hashes))
