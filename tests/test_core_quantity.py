"""Kubernetes quantities: parsing, rounding up, canonical formatting."""

from __future__ import annotations

import doctest

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.core import quantity
from pipeline.core.quantity import (
    GIB,
    KIB,
    MIB,
    format_cpu,
    format_memory,
    parse_cpu,
    parse_memory,
    round_up_cpu,
    round_up_memory,
)
from pipeline.errors import DaytwoError, QuantityError


@pytest.mark.parametrize(
    ("text", "cores"),
    [
        ("250m", 0.25),
        ("1", 1.0),
        ("0.5", 0.5),
        (".5", 0.5),
        ("1e3m", 1.0),
        ("2e-1", 0.2),
        ("1500m", 1.5),
        ("100m", 0.1),
        ("0.1", 0.1),
        ("500000u", 0.5),
        ("250000000n", 0.25),
        (" 2 ", 2.0),
        ("1k", 1000.0),
        ("+3", 3.0),
    ],
)
def test_parse_cpu_strings(text: str, cores: float) -> None:
    assert parse_cpu(text) == cores


def test_parse_cpu_numbers_are_cores() -> None:
    assert parse_cpu(2) == 2.0
    assert parse_cpu(0.25) == 0.25


@pytest.mark.parametrize(
    ("text", "num_bytes"),
    [
        ("512Mi", 512 * MIB),
        ("1Gi", GIB),
        ("1.5Gi", 3 * GIB // 2),
        ("4Ki", 4 * KIB),
        ("1Ti", 1024**4),
        ("1Pi", 1024**5),
        ("1Ei", 1024**6),
        ("1k", 1000),
        ("1M", 10**6),
        ("1G", 10**9),
        ("1T", 10**12),
        ("1P", 10**15),
        ("1E", 10**18),
        ("123", 123),
        ("129e6", 129_000_000),
        ("1.5", 2),  # fractional bytes round up, like the API server
        ("1500m", 2),
        ("0", 0),
    ],
)
def test_parse_memory_strings(text: str, num_bytes: int) -> None:
    assert parse_memory(text) == num_bytes


@pytest.mark.parametrize(
    "garbage",
    ["", "abc", "12Q", "1.2.3", "Mi", "-1", "-250m", "1e99", "1 Gi", "1iGi", "0x10", "nan", "1e"],
)
def test_garbage_is_rejected_with_a_clear_error(garbage: str) -> None:
    with pytest.raises(QuantityError, match=r"quantity|exponent|negative"):
        parse_memory(garbage)
    with pytest.raises(QuantityError):
        parse_cpu(garbage)


def test_bad_numbers_are_rejected() -> None:
    with pytest.raises(QuantityError):
        parse_cpu(float("nan"))
    with pytest.raises(QuantityError):
        parse_cpu(-1)
    with pytest.raises(QuantityError):
        parse_cpu(True)
    with pytest.raises(QuantityError, match="int of bytes"):
        parse_memory(1.5)  # type: ignore[arg-type]  # the point: a float is refused
    with pytest.raises(QuantityError):
        parse_memory(-5)
    assert issubclass(QuantityError, DaytwoError)


def test_round_up_cpu_to_whole_millicores() -> None:
    assert round_up_cpu(0.3473) == 0.348
    assert round_up_cpu(0.348) == 0.348
    assert round_up_cpu(0.3481) == 0.349
    # 0.3 * 1.16 is 0.34800000000000003 in floats: it stays on 348m, no extra millicore.
    assert round_up_cpu(0.3 * 1.16) == 0.348
    assert round_up_cpu(0.0) == 0.0
    assert round_up_cpu(0.0000001) == 0.001


def test_round_up_memory_to_whole_mebibytes() -> None:
    assert round_up_memory(500_000_000) == 477 * MIB
    assert round_up_memory(MIB) == MIB
    assert round_up_memory(MIB + 1) == 2 * MIB
    assert round_up_memory(0) == 0
    assert round_up_memory(3 * MIB * 1.0) == 3 * MIB
    assert round_up_memory(412.3 * MIB * 1.15) == 475 * MIB


@pytest.mark.parametrize(
    ("cores", "text"),
    [(0.25, "250m"), (1.5, "1500m"), (2.0, "2"), (0.001, "1m"), (0.0, "0"), (16, "16")],
)
def test_format_cpu(cores: float, text: str) -> None:
    assert format_cpu(cores) == text


@pytest.mark.parametrize(
    ("num_bytes", "text"),
    [
        (512 * MIB, "512Mi"),
        (1536 * MIB, "1536Mi"),
        (2 * GIB, "2Gi"),
        (4 * KIB, "4Ki"),
        (1000, "1000"),
        (0, "0"),
        (1024 * GIB, "1024Gi"),
    ],
)
def test_format_memory(num_bytes: int, text: str) -> None:
    assert format_memory(num_bytes) == text


@given(st.integers(min_value=0, max_value=10_000_000))
def test_cpu_round_trip_for_whole_millicores(millicores: int) -> None:
    cores = millicores / 1000
    assert round_up_cpu(cores) == cores
    assert parse_cpu(format_cpu(cores)) == cores


@given(st.floats(min_value=0, max_value=10_000, allow_nan=False))
def test_cpu_rounding_never_goes_down_and_round_trips(cores: float) -> None:
    rounded = round_up_cpu(cores)
    assert rounded >= cores - 1e-9 * max(1.0, cores)
    assert rounded - cores < 0.001 + 1e-9 * max(1.0, cores)
    assert parse_cpu(format_cpu(rounded)) == rounded
    assert round_up_cpu(rounded) == rounded


@given(st.integers(min_value=0, max_value=2**53))
def test_memory_round_trip_for_any_byte_count(num_bytes: int) -> None:
    assert parse_memory(format_memory(num_bytes)) == num_bytes
    rounded = round_up_memory(num_bytes)
    assert num_bytes <= rounded < num_bytes + MIB
    assert rounded % MIB == 0
    assert parse_memory(format_memory(rounded)) == rounded
    assert format_memory(rounded).endswith(("Mi", "Gi")) or rounded == 0


def test_module_examples_run() -> None:
    assert doctest.testmod(quantity).failed == 0
