"""HPA-awareness end to end: recorded Kubernetes objects → the inventory's workload spec →
the worker → a recommendation that sizes the request for the HPA instead of fighting it
(issue 6, acceptance 2), costed with the prices of the workload's node pool."""

from __future__ import annotations

import orjson
from prometheus_client import CollectorRegistry

from agents.inventory import build_workloads
from pipeline.core.cost import DEFAULT_PRICES, PriceBook, Prices
from pipeline.core.hpa import hpa_aware_request
from pipeline.core.quantity import round_up_cpu
from pipeline.metrics import WorkerMetrics
from pipeline.processor import Processor
from pipeline.profiles_file import ProfileResolver, load_catalog
from schemas.validate import encode
from tests.k8s_fixtures import loaded_state
from tests.test_agents_inventory import NOW
from tests.test_processor import MemoryStore, batch

WORKLOAD = "prod/shop/Deployment/checkout"
FAST = {"min_samples": 3, "decrease_min_history_seconds": 0.0, "evaluation_interval_seconds": 10}


def test_a_cpu_hpa_from_recorded_objects_sizes_the_request_for_its_target() -> None:
    (workload,) = [
        w
        for w in build_workloads(loaded_state(), cluster="prod", timestamp=NOW)
        if w.id == WORKLOAD
    ]
    assert workload.facts.hpa is not None
    cpu_target = next(t for t in workload.facts.hpa.targets if t.resource == "cpu")
    assert cpu_target.utilization is not None
    container = workload.spec.containers[0].name

    resolver = ProfileResolver(load_catalog(None), FAST)
    (pool,) = workload.facts.node_pools
    spot = Prices(cpu_core_hour_usd=0.01, memory_gib_hour_usd=0.001)
    processor = Processor(
        prices=PriceBook(DEFAULT_PRICES, {pool: spot}),
        profile=resolver.default(),
        store=MemoryStore(),
        metrics=WorkerMetrics.create(CollectorRegistry()),
        clock=lambda: NOW + 1000,
        source_topic="t.samples",
        profile_for=resolver.for_spec,
    )
    key = WORKLOAD.encode()
    assert processor.handle_spec(key, encode(workload.spec), partition=0, offset=0) is None
    usage = 0.35  # cores per pod, steady
    for i in range(6):
        raw = batch(WORKLOAD, NOW + 10 * (i + 1), {container: (usage, 200 * 1024 * 1024)})
        assert processor.handle(key, raw, partition=0, offset=i + 1) is None
    processor.checkpoint()
    (rec_set,) = processor.current_sets()
    (rec,) = [r for r in rec_set.recommendations if r.container == container]
    rules = {rule.id: rule.text for rule in rec.rules}
    assert "hpa-aware" in rules
    assert f"{cpu_target.utilization * 100:.0f}%" in rules["hpa-aware"]
    # usage / target, raised to the max-replicas floor if that binds; the histogram's p50
    # is an upper bound within one 5% bucket of the usage.
    lowest = hpa_aware_request(
        usage,
        cpu_target.utilization,
        peak_total_usage=usage * (workload.spec.replicas or 1),
        max_replicas=workload.facts.hpa.max_replicas,
    ).request
    assert rec.recommended.cpu_request_cores is not None
    assert (
        round_up_cpu(lowest)
        <= rec.recommended.cpu_request_cores
        <= round_up_cpu(lowest * 1.05 + 0.002)
    )
    # The spec's requests are what is in force, and its replicas multiply the cost.
    declared = workload.spec.containers[0]
    assert rec.current.cpu_request_cores == declared.cpu_request_cores
    assert rec.evidence.cost is not None
    assert rec.evidence.cost.replicas == max(1, workload.spec.replicas or 1)
    # ... and its node pool's prices are the ones the cost uses.
    assert rec.evidence.cost.node_pool == pool
    assert rec.evidence.cost.cpu_core_hour_usd == spot.cpu_core_hour_usd
    assert orjson.loads(encode(rec_set))["workload"] == WORKLOAD
