"""The kubelet source on recorded ``/stats/summary`` documents (tests/fixtures/k8s/).

Two summaries of node ``gke-prod-default-pool-1a2b3c4d-x7k9`` 15 s apart; the pod →
workload index comes from the inventory over the recorded API lists, as in the agent.
Expected values are computed from the documents, never typed in.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from agents.inventory import PodWorkload, pod_index
from agents.kubelet import (
    KubeletClient,
    KubeletConfig,
    KubeletMetrics,
    KubeletSource,
    MalformedSummaryError,
    SummaryConverter,
    parse_kube_time,
)
from pipeline.errors import CollectorError
from schemas.validate import decode_container_batch, encode
from tests.k8s_fixtures import loaded_state, recorded

NODE = "gke-prod-default-pool-1a2b3c4d-x7k9"
NOW0, NOW1 = 1_772_446_501.0, 1_772_446_516.0


def summary(name: str) -> dict[str, Any]:
    return recorded(f"stats_summary_{name}")


def index() -> dict[tuple[str, str], PodWorkload]:
    return pod_index(loaded_state(), cluster="prod")


def container(document: dict[str, Any], pod: str, name: str) -> dict[str, Any]:
    entry = next(p for p in document["pods"] if p["podRef"]["name"] == pod)
    found: dict[str, Any] = next(c for c in entry["containers"] if c["name"] == name)
    return found


def rate(pod: str, name: str) -> float:
    before, after = container(summary("t0"), pod, name), container(summary("t1"), pod, name)
    seconds = parse_kube_time(after["cpu"]["time"], "t1") - parse_kube_time(
        before["cpu"]["time"], "t0"
    )
    delta = after["cpu"]["usageCoreNanoSeconds"] - before["cpu"]["usageCoreNanoSeconds"]
    return float(delta / 1e9 / seconds)


def test_the_first_summary_sets_baselines_and_the_second_gives_rates() -> None:
    converter = SummaryConverter(agent=NODE)
    pods = index()
    first = converter.convert(summary("t0"), pods, NOW0)
    assert first.batches == []
    second = converter.convert(summary("t1"), pods, NOW1)
    by_workload = {batch.workload: batch for batch in second.batches}
    assert sorted(by_workload) == [
        "prod/kube-system/Pod/kube-proxy-gke-prod-default-pool-1a2b3c4d-x7k9",
        "prod/monitoring/DaemonSet/node-exporter",
        "prod/shop/Deployment/checkout",
    ]
    exporter = by_workload["prod/monitoring/DaemonSet/node-exporter"].samples[0]
    assert exporter.cpu_usage_cores == pytest.approx(rate("node-exporter-5xq2v", "node-exporter"))
    assert exporter.interval_seconds == 15.0
    after = container(summary("t1"), "node-exporter-5xq2v", "node-exporter")["memory"]
    assert exporter.memory_working_set_bytes == after["workingSetBytes"]
    assert exporter.memory_usage_bytes == after["usageBytes"]
    assert exporter.memory_rss_bytes == after["rssBytes"]
    for batch in second.batches:
        assert batch.source == "kubelet"
        assert batch.agent == NODE
        assert batch.timestamp == NOW1
        assert all(sample.timestamp == NOW1 for sample in batch.samples)
        assert decode_container_batch(encode(batch)) == batch  # valid on the wire


def test_replicas_on_one_node_merge_into_one_sample_per_container() -> None:
    converter = SummaryConverter(agent=NODE)
    pods = index()
    converter.convert(summary("t0"), pods, NOW0)
    batches = converter.convert(summary("t1"), pods, NOW1).batches
    checkout = next(b for b in batches if b.workload == "prod/shop/Deployment/checkout")
    replicas = ["checkout-6d4cf56db6-7xk2p", "checkout-6d4cf56db6-qz8mn"]
    assert [s.container for s in checkout.samples] == ["app", "istio-proxy", "log-shipper"]
    for sample in checkout.samples:
        assert sample.cpu_usage_cores == pytest.approx(
            max(rate(pod, sample.container) for pod in replicas)
        )
        assert sample.memory_working_set_bytes == max(
            container(summary("t1"), pod, sample.container)["memory"]["workingSetBytes"]
            for pod in replicas
        )
    app = checkout.samples[0]
    # the busiest replica's CPU and the other replica's larger working set
    assert rate(replicas[1], "app") > rate(replicas[0], "app")
    assert (
        app.memory_working_set_bytes
        == (container(summary("t1"), replicas[0], "app")["memory"]["workingSetBytes"])
    )
    # limits come from the pod spec in the inventory
    spec = pods[("shop", replicas[0])].containers
    assert app.memory_limit_bytes == spec["app"].memory_limit_bytes == 2**30
    assert app.cpu_limit_cores is None
    assert checkout.samples[1].cpu_limit_cores == spec["istio-proxy"].cpu_limit_cores == 2.0


def test_restarts_missing_stats_and_unknown_pods_are_reported_not_guessed() -> None:
    converter = SummaryConverter(agent=NODE)
    pods = index()
    converter.convert(summary("t0"), pods, NOW0)
    result = converter.convert(summary("t1"), pods, NOW1)
    assert result.resets == ("shop/debug-shell/shell",)  # new startTime, counter went down
    assert ("batch/migrate-db-8fj3l/migrate", "no working set") in result.skipped
    assert result.unmapped_pods == ("shop/old-pod-6b5c4d7f8-zz9yy",)
    workloads = {batch.workload for batch in result.batches}
    assert "prod/shop/Pod/debug-shell" not in workloads  # a new baseline, no sample yet
    assert not any("old-pod" in workload for workload in workloads)


def test_a_summary_that_did_not_refresh_keeps_the_older_baseline() -> None:
    converter = SummaryConverter(agent=NODE)
    pods = index()
    converter.convert(summary("t0"), pods, NOW0)
    assert converter.convert(summary("t0"), pods, NOW0 + 5).batches == []  # cached: same time
    batches = converter.convert(summary("t1"), pods, NOW1).batches
    exporter = next(b for b in batches if "node-exporter" in b.workload).samples[0]
    assert exporter.cpu_usage_cores == pytest.approx(rate("node-exporter-5xq2v", "node-exporter"))


def test_without_the_cumulative_counter_the_kubelets_rate_is_used() -> None:
    before, after = summary("t0"), summary("t1")
    for document in (before, after):
        for pod in document["pods"]:
            for entry in pod["containers"]:
                entry["cpu"].pop("usageCoreNanoSeconds")
    converter = SummaryConverter(agent=NODE)
    converter.convert(before, index(), NOW0)
    batches = converter.convert(after, index(), NOW1).batches
    exporter = next(b for b in batches if "node-exporter" in b.workload).samples[0]
    nano = container(after, "node-exporter-5xq2v", "node-exporter")["cpu"]["usageNanoCores"]
    assert exporter.cpu_usage_cores == nano / 1e9


def test_containers_that_disappear_are_forgotten() -> None:
    converter = SummaryConverter(agent=NODE)
    converter.convert(summary("t0"), index(), NOW0)
    empty_node = {"node": summary("t0")["node"], "pods": []}
    assert converter.convert(empty_node, index(), NOW0 + 30).batches == []
    # after forgetting, t1 is only a baseline again
    assert converter.convert(summary("t1"), index(), NOW1).batches == []


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda d: d.update(pods={"a": 1}), r"\$\.pods"),
        (lambda d: d["pods"][0].pop("podRef"), r"\$\.pods\[0\]\.podRef"),
        (lambda d: d["pods"][1]["podRef"].update(name=""), r"\$\.pods\[1\]\.podRef\.name"),
        (
            lambda d: d["pods"][0]["containers"][0]["cpu"].update(usageCoreNanoSeconds="12"),
            r"containers\[0\]\.cpu\.usageCoreNanoSeconds",
        ),
        (
            lambda d: d["pods"][0]["containers"][1]["cpu"].update(time="yesterday"),
            r"containers\[1\]\.cpu\.time",
        ),
        (
            lambda d: d["pods"][2]["containers"][0]["memory"].update(workingSetBytes=-1),
            r"memory\.workingSetBytes",
        ),
    ],
)
def test_malformed_summaries_raise_errors_naming_the_path(mutate: Any, path: str) -> None:
    document = copy.deepcopy(summary("t1"))
    mutate(document)
    with pytest.raises(MalformedSummaryError, match=path):
        SummaryConverter(agent=NODE).convert(document, index(), NOW1)


def test_a_summary_that_is_not_an_object_is_malformed() -> None:
    with pytest.raises(MalformedSummaryError, match=r"^\$: expected an object"):
        SummaryConverter(agent=NODE).convert([], index(), NOW1)
    assert issubclass(MalformedSummaryError, CollectorError)  # run_agent counts and goes on


times = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2099, 12, 31), timezones=st.just(UTC)
)


@given(times, st.integers(min_value=-14 * 60, max_value=14 * 60), st.integers(0, 999_999))
def test_kube_times_parse_to_the_same_instant_in_any_offset(
    moment: datetime, offset_minutes: int, micros: int
) -> None:
    moment = moment.replace(microsecond=micros)
    zone = timedelta(minutes=offset_minutes)
    local = moment.astimezone(timezone(zone))
    text = local.isoformat()
    assert parse_kube_time(text, "t") == pytest.approx(moment.timestamp(), abs=1e-6)
    whole = moment.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert parse_kube_time(whole, "t") == moment.replace(microsecond=0).timestamp()


def test_nanosecond_fractions_are_kept() -> None:
    assert parse_kube_time("2026-03-02T10:15:00.123456789Z", "t") == pytest.approx(
        1_772_446_500.123456789
    )


# --------------------------------------------------------------------------- the shell


def kubelet_config(tmp_path: Path, **overrides: Any) -> KubeletConfig:
    token = tmp_path / "token"
    token.write_text("projected-token-1\n")
    return KubeletConfig(
        node_name=NODE, host="10.132.0.17", token_file=token, ca_file=None, **overrides
    )


def test_the_client_calls_stats_summary_on_port_10250_with_the_token(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=summary("t0"))

    config = kubelet_config(tmp_path)
    client = KubeletClient(config, transport=httpx.MockTransport(handler))
    assert client.summary() == summary("t0")
    config.token_file.write_text("projected-token-2")  # rotated: read again on every call
    client.summary()
    assert str(seen[0].url) == "https://10.132.0.17:10250/stats/summary"
    assert [r.headers["Authorization"] for r in seen] == [
        "Bearer projected-token-1",
        "Bearer projected-token-2",
    ]


@pytest.mark.parametrize(
    ("status", "hint"),
    [(401, "authentication-token-webhook"), (403, "nodes/stats"), (500, "answered 500")],
)
def test_kubelet_errors_say_what_to_do(tmp_path: Path, status: int, hint: str) -> None:
    def handler(_: httpx.Request) -> httpx.Response:
        return httpx.Response(status, text="Forbidden (user=system:serviceaccount:daytwo:agent)")

    client = KubeletClient(kubelet_config(tmp_path), transport=httpx.MockTransport(handler))
    with pytest.raises(CollectorError, match=hint):
        client.summary()


def test_a_body_that_is_not_json_and_a_missing_token_are_clear_errors(tmp_path: Path) -> None:
    def handler(_: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>proxy error</html>")

    config = kubelet_config(tmp_path)
    client = KubeletClient(config, transport=httpx.MockTransport(handler))
    with pytest.raises(MalformedSummaryError, match="not JSON"):
        client.summary()
    config.token_file.unlink()
    with pytest.raises(CollectorError, match="ServiceAccount token"):
        client.summary()


def test_ipv6_hosts_are_bracketed(tmp_path: Path) -> None:
    config = kubelet_config(tmp_path, port=10250)
    assert KubeletConfig(node_name=NODE, host="fd00::17").url == (
        "https://[fd00::17]:10250/stats/summary"
    )
    assert config.url.startswith("https://10.132.0.17:")


def test_the_source_end_to_end(tmp_path: Path) -> None:
    documents = [summary("t0"), summary("t1")]

    def handler(_: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=documents.pop(0))

    registry = CollectorRegistry()
    source = KubeletSource(
        KubeletClient(kubelet_config(tmp_path), transport=httpx.MockTransport(handler)),
        index,
        metrics=KubeletMetrics.create(registry),
    )
    assert source.messages(NOW0) == []
    messages = source.messages(NOW1)
    assert {m.topic for m in messages} == {"daytwo.container-samples.v1"}
    for message in messages:
        batch = decode_container_batch(message.payload)
        assert message.key.decode() == batch.workload
        assert batch.agent == NODE
    value = registry.get_sample_value
    assert value("daytwo_kubelet_unmapped_pods_total") == 2  # old-pod, on both polls
    assert value("daytwo_kubelet_counter_resets_total") == 1
    assert value("daytwo_kubelet_skipped_containers_total", {"reason": "no working set"}) == 1
