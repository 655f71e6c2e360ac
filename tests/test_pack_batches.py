"""pack_batches: a backfill's per-step batches merged per workload, nothing lost or reordered."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.prometheus import pack_batches
from schemas.models import ContainerSample, ContainerSampleBatch

WORKLOADS = ("c/a/Deployment/web", "c/a/Deployment/api", "c/b/StatefulSet/db")


@st.composite
def step_batches(draw: st.DrawFn) -> list[ContainerSampleBatch]:
    batches = []
    for step in range(draw(st.integers(min_value=0, max_value=40))):
        for workload in draw(st.lists(st.sampled_from(WORKLOADS), unique=True)):
            containers = draw(
                st.lists(st.sampled_from(("app", "side", "init")), min_size=1, unique=True)
            )
            at = 1_700_000_000.0 + 300 * step
            batches.append(
                ContainerSampleBatch(
                    source="prometheus",
                    agent="a",
                    workload=workload,
                    timestamp=at,
                    samples=tuple(
                        ContainerSample(
                            container=c, timestamp=at, interval_seconds=300, cpu_usage_cores=0.1
                        )
                        for c in containers
                    ),
                )
            )
    return batches


@given(step_batches(), st.integers(min_value=1, max_value=7))
def test_packing_keeps_every_workloads_samples_in_order_under_the_cap(
    batches: list[ContainerSampleBatch], cap: int
) -> None:
    packed = pack_batches(batches, cap)
    assert all(1 <= len(b.samples) <= cap for b in packed)
    for workload in WORKLOADS:
        before = [s for b in batches if b.workload == workload for s in b.samples]
        after = [s for b in packed if b.workload == workload for s in b.samples]
        assert after == before
    assert all(b.timestamp == b.samples[-1].timestamp for b in packed)
    total = sum(len(b.samples) for b in batches)
    assert len(packed) == sum(
        -(-sum(len(b.samples) for b in batches if b.workload == w) // cap) for w in WORKLOADS
    )
    assert sum(len(b.samples) for b in packed) == total


@pytest.mark.parametrize("cap", [0, 1001])
def test_a_cap_outside_the_contract_is_refused(cap: int) -> None:
    with pytest.raises(ValueError, match="max_samples"):
        pack_batches([], cap)
