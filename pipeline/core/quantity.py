"""Kubernetes resource quantities: parse what manifests say, write what they should say.

Manifests spell CPU as ``"250m"``, ``"0.5"`` or ``2`` and memory as ``"512Mi"``,
``"1G"`` or ``536870912``. The sizing math works in base units (cores as ``float``,
bytes as ``int``), so every value crosses this module on the way in and on the way
out. Parsing uses exact fractions, so ``"0.1"`` and ``"100m"`` give the same float.

Rounding is always *up* (to whole millicores and whole MiB): a recommendation is a
floor the workload needs, and rounding it down would undercut the headroom it was
computed with.

>>> parse_cpu("250m"), parse_memory("1.5Gi")
(0.25, 1610612736)
>>> format_cpu(round_up_cpu(0.3473)), format_memory(round_up_memory(500_000_000))
('348m', '477Mi')
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Final

from pipeline.errors import QuantityError

KIB: Final = 1024
MIB: Final = 1024**2
GIB: Final = 1024**3

_BINARY_SUFFIXES: Final[dict[str, int]] = {
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
    "Pi": 1024**5,
    "Ei": 1024**6,
}
_DECIMAL_SUFFIXES: Final[dict[str, Fraction]] = {
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 10**3),
    "": Fraction(1),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
}
# Number, optional decimal exponent, optional suffix. Kubernetes allows either an
# exponent or a suffix; we also accept both ("1e3m") because the meaning is unambiguous.
# "1E" is exa (an exponent needs digits after the e), "1e3" is a thousand.
_QUANTITY: Final = re.compile(
    r"(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+))"
    r"(?:[eE](?P<exponent>[+-]?\d+))?"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?"
)
# Anything beyond this is a typo, and 10**huge would stall the parser.
_MAX_EXPONENT: Final = 30
# Float products such as 0.3 * 1.15 land a hair above a whole millicore or MiB;
# within this relative distance we treat them as the whole unit instead of adding one.
_WHOLE_UNIT_TOLERANCE: Final = 1e-9


def _parse_quantity(value: str, what: str) -> Fraction:
    text = value.strip()
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise QuantityError(
            f"{what} quantity {value!r} is not a Kubernetes quantity; "
            "use a number with an optional suffix, e.g. '250m', '1.5', '512Mi', '1G'."
        )
    number = Fraction(match["number"])
    exponent = int(match["exponent"] or 0)
    if abs(exponent) > _MAX_EXPONENT:
        raise QuantityError(
            f"{what} quantity {value!r} has exponent {exponent}; "
            f"the exponent must be within ±{_MAX_EXPONENT}."
        )
    suffix = match["suffix"] or ""
    scale = (
        Fraction(_BINARY_SUFFIXES[suffix])
        if suffix in _BINARY_SUFFIXES
        else _DECIMAL_SUFFIXES[suffix]
    )
    result = number * Fraction(10) ** exponent * scale
    if result < 0:
        raise QuantityError(f"{what} quantity {value!r} is negative; resources must be ≥ 0.")
    return result


def _check_number(value: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise QuantityError(f"{what} must be a number or a quantity string, got {value!r}.")
    if not math.isfinite(value) or value < 0:
        raise QuantityError(f"{what} must be a finite number ≥ 0, got {value!r}.")
    return value


def parse_cpu(value: str | int | float) -> float:
    """Parse a CPU quantity (``"250m"``, ``"0.5"``, ``"1e3m"``, ``2``) into cores.

    Numbers are taken as cores already. Raises :class:`QuantityError` for anything
    that is not a non-negative quantity, so a bad manifest fails loudly, not as 0.
    """
    if isinstance(value, str):
        return float(_parse_quantity(value, "CPU"))
    return float(_check_number(value, "CPU"))


def parse_memory(value: str | int) -> int:
    """Parse a memory quantity (``"512Mi"``, ``"1G"``, ``"1.5Gi"``, ``"129e6"``) into bytes.

    Fractional bytes are rounded up, as the Kubernetes API server does. Raises
    :class:`QuantityError` for garbage, negative values and floats passed as numbers
    (a float byte count is almost always a unit mix-up; pass a string instead).
    """
    if isinstance(value, str):
        return math.ceil(_parse_quantity(value, "memory"))
    if isinstance(value, bool) or not isinstance(value, int):
        raise QuantityError(f"memory must be an int of bytes or a quantity string, got {value!r}.")
    if value < 0:
        raise QuantityError(f"memory must be ≥ 0 bytes, got {value!r}.")
    return value


def _ceil_with_tolerance(units: float) -> int:
    nearest = round(units)
    if abs(units - nearest) <= _WHOLE_UNIT_TOLERANCE * max(1.0, abs(units)):
        return int(nearest)
    return math.ceil(units)


def round_up_cpu(cores: float) -> float:
    """Round cores up to a whole millicore, the finest CPU unit Kubernetes accepts.

    Values within float noise of a whole millicore (``0.3 * 1.16``) stay on it.
    """
    _check_number(cores, "CPU")
    return _ceil_with_tolerance(cores * 1000) / 1000


def round_up_memory(num_bytes: float) -> int:
    """Round bytes up to a whole MiB, so recommended memory reads well in a manifest.

    Integers are rounded exactly; floats within float noise of a whole MiB stay on it.
    """
    _check_number(num_bytes, "memory")
    if isinstance(num_bytes, int):
        return -(-num_bytes // MIB) * MIB
    return _ceil_with_tolerance(num_bytes / MIB) * MIB


def format_cpu(cores: float) -> str:
    """Write cores in canonical manifest form: ``"2"`` for whole cores, else ``"1500m"``.

    The value is rounded up to a whole millicore first (see :func:`round_up_cpu`).
    """
    millicores = round(round_up_cpu(cores) * 1000)
    if millicores % 1000 == 0:
        return str(millicores // 1000)
    return f"{millicores}m"


def format_memory(num_bytes: int) -> str:
    """Write bytes in canonical manifest form: ``"2Gi"``, else ``"1536Mi"``, ``"4Ki"``, bytes.

    The largest binary unit that divides the value exactly wins, so the text parses back
    to the same number of bytes.
    """
    if isinstance(num_bytes, bool) or not isinstance(num_bytes, int) or num_bytes < 0:
        raise QuantityError(f"memory must be an int of bytes ≥ 0, got {num_bytes!r}.")
    if num_bytes == 0:
        return "0"
    for suffix, size in (("Gi", GIB), ("Mi", MIB), ("Ki", KIB)):
        if num_bytes % size == 0:
            return f"{num_bytes // size}{suffix}"
    return str(num_bytes)
