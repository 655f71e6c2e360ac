"""Profiles: the built-ins state their intent, custom YAML fails loudly, and the same data
gives ordered answers (cost-optimized <= balanced <= performance-first)."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.profiles import (
    BALANCED,
    BUILTIN_PROFILES,
    COST_OPTIMIZED,
    PERFORMANCE_FIRST,
    assign_profile,
    get_profile,
)
from pipeline.core.quantity import MIB
from pipeline.core.sizing import CurrentResources, recommend
from pipeline.core.window import ContainerWindow, SampleInput
from pipeline.errors import ConfigError
from pipeline.profiles_file import ProfileResolver, load_catalog, parse_catalog

T0 = 1_700_000_000.0


def test_the_three_built_ins_state_their_intent() -> None:
    assert set(BUILTIN_PROFILES) == {"cost-optimized", "balanced", "performance-first"}
    assert get_profile("balanced") is BALANCED
    assert (COST_OPTIMIZED.cpu_percentile, COST_OPTIMIZED.cpu_headroom) == (0.80, 0.10)
    assert (BALANCED.cpu_percentile, BALANCED.cpu_headroom) == (0.95, 0.10)
    assert (PERFORMANCE_FIRST.cpu_percentile, PERFORMANCE_FIRST.cpu_headroom) == (0.99, 0.30)
    assert (COST_OPTIMIZED.memory_headroom, PERFORMANCE_FIRST.memory_headroom) == (0.10, 0.30)
    # What ordering rests on is shared (module docstring): history, half-life, sensitivity.
    for profile in BUILTIN_PROFILES.values():
        assert profile.history_seconds == BALANCED.history_seconds
        assert profile.cpu_half_life_seconds == BALANCED.cpu_half_life_seconds
        assert profile.drift_sensitivity == BALANCED.drift_sensitivity
    with pytest.raises(dataclasses.FrozenInstanceError):
        BALANCED.cpu_headroom = 0.5  # type: ignore[misc]  # the point: profiles are frozen


def test_unknown_profile_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown profile 'turbo'.*'cost-optimized'"):
        get_profile("turbo")


def test_assignment_annotation_then_namespace_then_default() -> None:
    defaults = {"dev": "cost-optimized"}
    annotated = {"daytwo.io/profile": "performance-first"}
    assert assign_profile(annotated, "dev", defaults) == "performance-first"
    assert assign_profile({}, "dev", defaults) == "cost-optimized"
    assert assign_profile(None, "shop", defaults) == "balanced"


PROFILES_YAML = """\
profiles:
  - name: checkout
    extends: performance-first
    cpu_headroom: 0.5
  - name: checkout-canary
    extends: checkout
    proposal_cooldown_seconds: 3600
namespace_defaults:
  dev: cost-optimized
  shop: checkout
prices:
  cpu_core_hour_usd: 0.02
  node_pools:
    spot: {cpu_core_hour_usd: 0.009}
"""


def test_a_profiles_file_defines_extends_and_assigns(tmp_path: Path) -> None:
    path = tmp_path / "profiles.yaml"
    path.write_text(PROFILES_YAML, encoding="utf-8")
    catalog = load_catalog(path)
    checkout = catalog.get("checkout")
    assert (checkout.cpu_percentile, checkout.cpu_headroom) == (0.99, 0.5)
    canary = catalog.get("checkout-canary")
    assert (canary.cpu_headroom, canary.proposal_cooldown_seconds) == (0.5, 3600)
    assert catalog.for_workload("prod/shop/Deployment/cart").name == "checkout"
    assert catalog.for_workload("prod/dev/Deployment/cart").name == "cost-optimized"
    assert catalog.for_workload("prod/other/Deployment/cart").name == "balanced"
    annotated = {"daytwo.io/profile": "checkout-canary"}
    assert catalog.for_workload("prod/dev/Deployment/x", annotated).name == "checkout-canary"
    assert catalog.prices.default.cpu_core_hour_usd == 0.02
    assert catalog.prices.default.memory_gib_hour_usd == 0.004237  # OpenCost's default
    assert catalog.prices.for_pool("spot").cpu_core_hour_usd == 0.009
    assert catalog.prices.for_pool("spot").memory_gib_hour_usd == 0.004237
    assert catalog.prices.for_pool("unknown").cpu_core_hour_usd == 0.02
    resolver = ProfileResolver(catalog, {"min_samples": 3})
    assert resolver.for_workload("prod/shop/Deployment/cart").min_samples == 3
    assert resolver.default().name == "balanced"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            "  - {name: fast, cpu_percentil: 0.9}",
            r"profiles\.yaml: profiles\[0\]: profile 'fast': unknown field\(s\) 'cpu_percentil'",
        ),
        (
            "  - {name: fast, cpu_percentile: 1.5}",
            r"profiles\.yaml: profiles\[0\]: profile 'fast': field 'cpu_percentile' must be a "
            r"number in \(0, 1\], got 1\.5",
        ),
        (
            "  - {name: fast, cpu_percentile: 0}",
            r"field 'cpu_percentile' must be a number in \(0, 1\], got 0",
        ),
        (
            "  - {name: fast, cpu_headroom: -0.1}",
            r"profiles\.yaml: profiles\[0\]: profile 'fast': field 'cpu_headroom' must be a "
            r"number in \[0, 10\], got -0\.1",
        ),
        (
            "  - {name: fast, memory_headroom: -1}",
            r"field 'memory_headroom' must be a number in \[0, 10\], got -1",
        ),
        ("  - {name: fast, extends: turbo}", r"profile 'fast': field 'extends': unknown profile"),
        ("  - {name: balanced}", r"'balanced' is built in and cannot be redefined"),
        ("  - {name: Fast_Profile}", r"field 'name' must be a lowercase DNS label"),
        ("  - {name: fast, cpu_limit_policy: remove}", r"'cpu_limit_policy' must be one of"),
    ],
)
def test_custom_profile_errors_name_file_field_and_range(
    tmp_path: Path, entry: str, message: str
) -> None:
    path = tmp_path / "profiles.yaml"
    path.write_text(f"profiles:\n{entry}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_catalog(path)


def test_file_level_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['profile'\]"):
        parse_catalog({"profile": []}, source="p.yaml")
    with pytest.raises(ConfigError, match=r"namespace_defaults\['dev'\]: unknown profile 'x'"):
        parse_catalog({"namespace_defaults": {"dev": "x"}}, source="p.yaml")
    with pytest.raises(ConfigError, match="defined twice"):
        parse_catalog({"profiles": [{"name": "a"}, {"name": "a"}]}, source="p.yaml")
    with pytest.raises(ConfigError, match=r"prices: field 'cpu_core_hour_usd' must be"):
        parse_catalog({"prices": {"cpu_core_hour_usd": -1}}, source="p.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("profiles: [\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_catalog(bad)
    tagged = tmp_path / "tagged.yaml"
    tagged.write_text("profiles: !!python/object:os.system {}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_catalog(tagged)
    with pytest.raises(ConfigError, match="cannot read profiles file"):
        load_catalog(tmp_path / "missing.yaml")


# -- ordering ----------------------------------------------------------------------------

ORDERED = ("cost-optimized", "balanced", "performance-first")
REQUESTS = ("cpu_request_cores", "memory_request_bytes")


def _trace(seed: int, hours: int, shape: str) -> list[SampleInput]:
    rng = random.Random(seed)
    samples = []
    for i in range(hours * 60):  # one sample a minute
        t = T0 + 60.0 * i
        level = 0.2 + 0.8 * (i >= hours * 30) if shape == "step" else 0.5
        if shape == "cycle":
            level = 0.3 + 0.3 * (1 + ((i // 60) % 24 >= 12))
        cpu = max(0.0, rng.gauss(level, 0.2 * level))
        memory = int((200 + 100 * level) * MIB + rng.gauss(0, 10 * MIB))
        throttled = min(1.0, max(0.0, rng.gauss(0.05, 0.05)))
        samples.append(
            SampleInput(
                timestamp=t,
                interval_seconds=60.0,
                cpu_usage_cores=cpu,
                memory_working_set_bytes=max(0, memory),
                cpu_throttled_ratio=throttled,
                oom_kills=1 if rng.random() < 0.002 else 0,
                cpu_limit_cores=2.0,
                memory_limit_bytes=1024 * MIB,
            )
        )
    return samples


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    hours=st.integers(2, 72),
    shape=st.sampled_from(["steady", "step", "cycle"]),
    current_cpu=st.one_of(st.none(), st.floats(0.05, 4.0)),
    current_memory=st.one_of(st.none(), st.integers(64 * MIB, 4096 * MIB)),
)
def test_the_same_trace_gives_ordered_answers(
    seed: int, hours: int, shape: str, current_cpu: float | None, current_memory: int | None
) -> None:
    samples = _trace(seed, hours, shape)
    current = CurrentResources(
        cpu_request_cores=current_cpu,
        cpu_limit_cores=None if current_cpu is None else 2 * current_cpu,
        memory_request_bytes=current_memory,
        memory_limit_bytes=current_memory,
    )
    answers = []
    for name in ORDERED:
        profile = BUILTIN_PROFILES[name]
        window = ContainerWindow.new(profile)
        for sample in samples:
            window.apply(sample)
        rec = recommend(
            window,
            profile,
            workload="prod/shop/Deployment/a",
            container="a",
            current=current,
            now=samples[-1].timestamp,
        )
        assert rec is not None
        recommended = rec["recommended"]
        assert isinstance(recommended, dict)
        answers.append(recommended)
    for field in REQUESTS:
        values = [answer[field] for answer in answers]
        assert values == sorted(values), f"{field}: {dict(zip(ORDERED, values, strict=True))}"
