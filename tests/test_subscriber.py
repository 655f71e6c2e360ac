"""``daytwo recommendations``: the topic read as a third party would, on a real broker.

The sets on the topic are made by the worker's own code (an in-process
:class:`~pipeline.processor.Processor` fed sample batches), so they are what a worker
publishes. Timeline of the topic in these tests::

    offset  key          value
    ...     checkout     set v1 (2 containers)
    ...     cart         set v1
    ...     search       set v1
    ...     junk         not a recommendation-set (skipped, reported on stderr)
    ...     checkout     set v2 (later data: the one a snapshot must show)
    ...     search       tombstone (deleted: a snapshot must not show it)
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from queue import Empty, Queue

import orjson
import pytest
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.core.profiles import get_profile
from pipeline.metrics import WorkerMetrics
from pipeline.processor import Processor
from pipeline.subscriber import workload_matcher
from pipeline.topics import topic_names
from schemas.models import RecommendationSet
from schemas.validate import decode, encode
from tests.worker_helpers import produce

pytestmark = pytest.mark.integration

CHECKOUT = "prod/shop/Deployment/checkout"
CART = "prod/shop/Deployment/cart"
SEARCH = "prod/search/StatefulSet/search"
T0 = 1_750_000_000.0
MIB = 1024 * 1024
PROFILE = get_profile("balanced").with_overrides(
    min_samples=3, decrease_min_history_seconds=0.0, evaluation_interval_seconds=10.0
)


class _Store:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def load(self, key: str) -> bytes | None:
        return self.data.get(key)

    def save(self, key: str, value: bytes, partition: int) -> None:
        self.data[key] = value


def worker_sets(
    containers: dict[str, tuple[str, ...]], *, batches: int, memory_mib: int, start: float = T0
) -> dict[str, RecommendationSet]:
    """The last set per workload a worker emits for ``batches`` steady batches."""
    processor = Processor(
        profile=PROFILE,
        store=_Store(),
        metrics=WorkerMetrics.create(CollectorRegistry()),
        clock=lambda: start + 10 * batches,
        source_topic="in",
    )
    for index in range(batches):
        ts = start + 10 * index
        for workload, names in containers.items():
            value = orjson.dumps(
                {
                    "schema_version": 1,
                    "kind": "container-sample-batch",
                    "source": "cgroup",
                    "agent": "node-1",
                    "workload": workload,
                    "timestamp": ts,
                    "samples": [
                        {
                            "container": name,
                            "timestamp": ts,
                            "interval_seconds": 10.0,
                            "cpu_usage_cores": 0.2 + 0.1 * (index % 3),
                            "memory_working_set_bytes": memory_mib * MIB,
                            "cpu_limit_cores": 4.0,
                            "memory_limit_bytes": 4096 * MIB,
                        }
                        for name in names
                    ],
                }
            )
            assert processor.handle(workload.encode(), value, partition=0, offset=index) is None
    sets = {s.workload: s for s in processor.checkpoint()}
    assert set(sets) == set(containers), "the fixture must make every workload propose"
    return sets


@pytest.fixture(scope="module")
def versions() -> dict[str, RecommendationSet]:
    """v1 sets of three workloads and a v2 of checkout (more memory, later data)."""
    v1 = worker_sets(
        {CHECKOUT: ("app", "envoy"), CART: ("app",), SEARCH: ("search",)}, batches=8, memory_mib=300
    )
    v2 = worker_sets({CHECKOUT: ("app", "envoy")}, batches=8, memory_mib=900, start=T0 + 3600)
    assert v2[CHECKOUT].hash != v1[CHECKOUT].hash
    return {
        "checkout-v1": v1[CHECKOUT],
        "cart": v1[CART],
        "search": v1[SEARCH],
        "checkout-v2": v2[CHECKOUT],
    }


@pytest.fixture
def filled_topic(
    kafka_bootstrap: str,
    make_topic_prefix: Callable[..., str],
    versions: dict[str, RecommendationSet],
) -> str:
    """A prefix whose recommendations topic holds the timeline of the module docstring."""
    prefix = make_topic_prefix(4)
    produce(
        kafka_bootstrap,
        topic_names(prefix).recommendations,
        [
            (CHECKOUT.encode(), encode(versions["checkout-v1"])),
            (CART.encode(), encode(versions["cart"])),
            (SEARCH.encode(), encode(versions["search"])),
            (b"prod/x/Deployment/junk", b'{"kind": "not-a-set"}'),
            (CHECKOUT.encode(), encode(versions["checkout-v2"])),
        ],
    )
    produce(kafka_bootstrap, topic_names(prefix).recommendations, [(SEARCH.encode(), None)])  # type: ignore[list-item]  # a tombstone has no value
    return prefix


def invoke(bootstrap: str, prefix: str, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        app,
        ["recommendations", "--kafka-bootstrap", bootstrap, "--topic-prefix", prefix, *args],
    )
    return result.exit_code, result.stdout, result.stderr


def test_snapshot_prints_the_latest_set_of_each_live_workload_as_json_lines(
    kafka_bootstrap: str, filled_topic: str, versions: dict[str, RecommendationSet]
) -> None:
    code, out, err = invoke(kafka_bootstrap, filled_topic, "--format", "json")
    assert code == 0, err
    printed = [decode(RecommendationSet, line.encode()) for line in out.splitlines()]
    # latest per workload (checkout v2 replaces v1), the tombstoned one gone, sorted
    assert printed == [versions["cart"], versions["checkout-v2"]]
    assert "skipped invalid record" in err
    assert "prod/x" not in out


def test_snapshot_filters_by_workload_id_or_pattern(
    kafka_bootstrap: str, filled_topic: str, versions: dict[str, RecommendationSet]
) -> None:
    code, out, _ = invoke(kafka_bootstrap, filled_topic, "--format", "json", "--workload", CART)
    assert code == 0
    assert [decode(RecommendationSet, line.encode()) for line in out.splitlines()] == [
        versions["cart"]
    ]
    code, out, _ = invoke(
        kafka_bootstrap, filled_topic, "--format", "json", "--workload", "prod/shop/*/check*"
    )
    assert code == 0
    assert [decode(RecommendationSet, line.encode()).workload for line in out.splitlines()] == [
        CHECKOUT
    ]


def test_snapshot_table_shows_every_container_with_its_change(
    kafka_bootstrap: str, filled_topic: str, versions: dict[str, RecommendationSet]
) -> None:
    code, out, err = invoke(kafka_bootstrap, filled_topic)
    assert code == 0, err
    rows = {
        (line.split("│")[1].strip(), line.split("│")[2].strip())
        for line in out.splitlines()
        if line.count("│") > 5
    }
    assert rows >= {(CART, "app"), (CHECKOUT, "app"), (CHECKOUT, "envoy")}
    assert SEARCH not in out
    recommended = versions["checkout-v2"].recommendations[0].recommended.memory_limit_bytes
    assert recommended is not None
    assert f"{recommended / MIB:.0f}Mi" in out


def test_missing_topic_is_an_error_that_says_what_to_do(kafka_bootstrap: str) -> None:
    code, _, err = invoke(kafka_bootstrap, "t-nonexistent.")
    assert code == 1
    assert "does not exist" in err
    assert "daytwo topics" in err


def test_workload_matcher_exact_and_glob() -> None:
    assert workload_matcher(CART)(CART)
    assert not workload_matcher(CART)(CART + "x")
    assert workload_matcher("prod/*/Deployment/*")(CHECKOUT)
    assert not workload_matcher("prod/*/Deployment/*")(SEARCH)
    assert workload_matcher(None)(SEARCH)


@contextlib.contextmanager
def follower(
    bootstrap: str, prefix: str, *args: str
) -> Iterator[tuple[subprocess.Popen[bytes], Queue[str], Callable[[], str]]]:
    """``daytwo recommendations --follow`` as a child: the process, its stdout lines in a
    queue, and a function returning its stderr so far."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAYTWO_")}
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipeline.cli",
                "recommendations",
                "--follow",
                "--format",
                "json",
                "--kafka-bootstrap",
                bootstrap,
                "--topic-prefix",
                prefix,
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
        )
        lines: Queue[str] = Queue()

        def pump() -> None:
            assert process.stdout is not None
            for raw in process.stdout:
                lines.put(raw.decode())

        def errors() -> str:
            stderr.seek(0)
            return stderr.read().decode(errors="replace")

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            yield process, lines, errors
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(10)
            reader.join(10)
            assert process.stdout is not None
            process.stdout.close()


def next_line(lines: Queue[str], timeout: float) -> str | None:
    try:
        return lines.get(timeout=timeout)
    except Empty:
        return None


def test_follow_prints_only_new_sets_and_stops_cleanly_on_sigterm(
    kafka_bootstrap: str, filled_topic: str, versions: dict[str, RecommendationSet]
) -> None:
    topic = topic_names(filled_topic).recommendations
    with follower(kafka_bootstrap, filled_topic) as (process, lines, errors):
        # The follower skips what is on the topic once it has caught up; until then a
        # new record may count as old. Publish the new set until it shows up.
        deadline = time.monotonic() + 30
        first = None
        while first is None and time.monotonic() < deadline:
            assert process.poll() is None, errors()
            produce(kafka_bootstrap, topic, [(CART.encode(), encode(versions["cart"]))])
            first = next_line(lines, 1.0)
        assert first is not None, "the follower printed nothing"
        assert decode(RecommendationSet, first.encode()) == versions["cart"]
        produce(kafka_bootstrap, topic, [(SEARCH.encode(), None)])  # type: ignore[list-item]  # tombstone
        deleted = next_line(lines, 10.0)
        assert deleted is not None
        assert orjson.loads(deleted) == {
            "workload": SEARCH,
            "deleted": True,
        }
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0, errors()
    # nothing that was on the topic before the follower caught up was printed as new;
    # only repeats of the probe may follow
    rest = []
    while (line := next_line(lines, 0.1)) is not None:
        rest.append(line)
    assert all(decode(RecommendationSet, r.encode()) == versions["cart"] for r in rest)


def test_follow_from_beginning_prints_the_history_first_then_new_sets(
    kafka_bootstrap: str, filled_topic: str, versions: dict[str, RecommendationSet]
) -> None:
    topic = topic_names(filled_topic).recommendations
    with follower(kafka_bootstrap, filled_topic, "--from-beginning", "--workload", CHECKOUT) as (
        process,
        lines,
        errors,
    ):
        history = [next_line(lines, 20.0), next_line(lines, 5.0)]
        assert [decode(RecommendationSet, h.encode()) for h in history if h] == [
            versions["checkout-v1"],
            versions["checkout-v2"],
        ]
        produce(kafka_bootstrap, topic, [(CART.encode(), encode(versions["cart"]))])
        produce(kafka_bootstrap, topic, [(CHECKOUT.encode(), encode(versions["checkout-v1"]))])
        new = next_line(lines, 20.0)
        assert new is not None
        assert decode(RecommendationSet, new.encode()) == versions["checkout-v1"]  # cart filtered
        process.send_signal(signal.SIGINT)
        assert process.wait(15) == 0, errors()
