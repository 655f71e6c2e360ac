"""Micrometer scraping against a real local HTTP server serving Micrometer-style text."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agents.micrometer import MicrometerRates, MicrometerScraper, parse_exposition
from pipeline.errors import CollectorError
from schemas.models import JvmSample

MIB = 1 << 20


_YOUNG = 'action="end of minor GC",cause="G1 Evacuation Pause",gc="G1 Young Generation"'
_OLD = 'action="end of major GC",cause="System.gc()",gc="G1 Old Generation"'


def exposition(*, pauses: int, pause_sum: float, allocated: float, threads: int = 31) -> str:
    """What Spring Boot 3 / Micrometer 1.12 serves for a G1 JVM (JVM meters, HELP shortened)."""
    young, full = pauses - 1, 1
    return f"""\
# HELP jvm_memory_used_bytes The amount of used memory
# TYPE jvm_memory_used_bytes gauge
jvm_memory_used_bytes{{area="heap",id="G1 Survivor Space"}} 4194304.0
jvm_memory_used_bytes{{area="heap",id="G1 Old Gen"}} 52428800.0
jvm_memory_used_bytes{{area="heap",id="G1 Eden Space"}} 20971520.0
jvm_memory_used_bytes{{area="nonheap",id="Metaspace"}} 6.7108864E7
jvm_memory_used_bytes{{area="nonheap",id="CodeHeap 'non-nmethods'"}} 1500000.0
jvm_memory_used_bytes{{area="nonheap",id="CodeHeap 'profiled nmethods'"}} 8000000.0
jvm_memory_used_bytes{{area="nonheap",id="CodeHeap 'non-profiled nmethods'"}} 2500000.0
jvm_memory_used_bytes{{area="nonheap",id="Compressed Class Space"}} 8388608.0
# HELP jvm_memory_committed_bytes The amount of memory in bytes that is committed
# TYPE jvm_memory_committed_bytes gauge
jvm_memory_committed_bytes{{area="heap",id="G1 Survivor Space"}} 8388608.0
jvm_memory_committed_bytes{{area="heap",id="G1 Old Gen"}} 92274688.0
jvm_memory_committed_bytes{{area="heap",id="G1 Eden Space"}} 33554432.0
jvm_memory_committed_bytes{{area="nonheap",id="Metaspace"}} 68157440.0
# HELP jvm_memory_max_bytes The maximum amount of memory in bytes that can be used
# TYPE jvm_memory_max_bytes gauge
jvm_memory_max_bytes{{area="heap",id="G1 Survivor Space"}} -1.0
jvm_memory_max_bytes{{area="heap",id="G1 Old Gen"}} 536870912.0
jvm_memory_max_bytes{{area="heap",id="G1 Eden Space"}} -1.0
jvm_memory_max_bytes{{area="nonheap",id="Metaspace"}} -1.0
# HELP jvm_gc_pause_seconds Time spent in GC pause
# TYPE jvm_gc_pause_seconds summary
jvm_gc_pause_seconds_count{{{_YOUNG}}} {young}
jvm_gc_pause_seconds_sum{{{_YOUNG}}} {pause_sum - 0.5}
jvm_gc_pause_seconds_count{{{_OLD}}} {full}
jvm_gc_pause_seconds_sum{{{_OLD}}} 0.5
# HELP jvm_gc_pause_seconds_max Time spent in GC pause
# TYPE jvm_gc_pause_seconds_max gauge
jvm_gc_pause_seconds_max{{{_YOUNG}}} 0.012
jvm_gc_pause_seconds_max{{{_OLD}}} 0.0
# HELP jvm_threads_live_threads The current number of live threads
# TYPE jvm_threads_live_threads gauge
jvm_threads_live_threads {threads}.0
# HELP jvm_buffer_memory_used_bytes An estimate of the memory used for this buffer pool
# TYPE jvm_buffer_memory_used_bytes gauge
jvm_buffer_memory_used_bytes{{id="mapped"}} 0.0
jvm_buffer_memory_used_bytes{{id="direct"}} 1048576.0
# HELP jvm_gc_live_data_size_bytes Size of long-lived heap memory pool after reclamation
# TYPE jvm_gc_live_data_size_bytes gauge
jvm_gc_live_data_size_bytes 4.194304E7
# HELP jvm_gc_memory_allocated_bytes_total Incremented for an increase in the young pool
# TYPE jvm_gc_memory_allocated_bytes_total counter
jvm_gc_memory_allocated_bytes_total {allocated}
# HELP process_cpu_usage The "recent cpu usage" for the Java Virtual Machine process
# TYPE process_cpu_usage gauge
process_cpu_usage 0.05
"""


class _Endpoint:
    """A real HTTP server on 127.0.0.1 whose body and status the test sets."""

    def __init__(self) -> None:
        self.body = ""
        self.status = 200
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                data = endpoint.body.encode()
                self.send_response(endpoint.status)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep test output quiet

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/actuator/prometheus"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def endpoint() -> Iterator[_Endpoint]:
    served = _Endpoint()
    yield served
    served.stop()


def test_snapshot_sums_pools_and_series(endpoint: _Endpoint) -> None:
    endpoint.body = exposition(pauses=10, pause_sum=1.5, allocated=1e9)
    with MicrometerScraper(endpoint.url) as scraper:
        snapshot = scraper.scrape()
    assert snapshot.heap_used_bytes == 4194304 + 52428800 + 20971520
    assert snapshot.heap_committed_bytes == 8388608 + 92274688 + 33554432
    assert snapshot.heap_max_bytes == 512 * MIB  # the -1 pools have no own maximum
    assert snapshot.metaspace_used_bytes == 64 * MIB
    assert snapshot.code_cache_bytes == 1_500_000 + 8_000_000 + 2_500_000
    assert snapshot.threads_live == 31
    assert snapshot.direct_memory_bytes == MIB
    assert snapshot.live_data_bytes == 40 * MIB
    assert snapshot.gc_pause_count == 10
    assert snapshot.gc_pause_sum_seconds == pytest.approx(1.5)
    assert snapshot.gc_pause_max_seconds == pytest.approx(0.012)
    assert snapshot.major_gc_count == 1
    assert snapshot.collector == "G1"


def test_rates_between_scrapes_and_a_counter_reset(endpoint: _Endpoint) -> None:
    rates = MicrometerRates()
    with MicrometerScraper(endpoint.url) as scraper:
        endpoint.body = exposition(pauses=10, pause_sum=1.5, allocated=1e9)
        assert rates.update(scraper.scrape(), 1000.0) is None  # baseline
        endpoint.body = exposition(pauses=14, pause_sum=2.0, allocated=1.5e9, threads=40)
        fields = rates.update(scraper.scrape(), 1010.0)
        assert fields is not None
        assert fields["interval_seconds"] == 10.0
        assert fields["gc_pause_seconds"] == pytest.approx(0.5)
        assert fields["gc_overhead_ratio"] == pytest.approx(0.05)
        assert fields["gc_count"] == 4
        assert fields["full_gc_count"] == 0
        assert fields["allocation_rate_bytes_per_second"] == pytest.approx(5e7)
        assert fields["thread_count"] == 40
        sample = JvmSample.model_validate({"container": "app", "timestamp": 1010.0, **fields})
        assert sample.heap_max_bytes == 512 * MIB

        # the JVM restarted: counters start again from zero
        endpoint.body = exposition(pauses=3, pause_sum=0.8, allocated=2e8)
        fields = rates.update(scraper.scrape(), 1020.0)
        assert fields is not None
        assert rates.counter_resets == 1
        assert fields["gc_count"] == 3
        assert fields["gc_pause_seconds"] == pytest.approx(0.8)
        assert fields["allocation_rate_bytes_per_second"] == pytest.approx(2e7)
        # a clock that did not advance gives nothing rather than dividing by zero
        assert rates.update(scraper.scrape(), 1020.0) is None


def test_failures_name_the_endpoint(endpoint: _Endpoint) -> None:
    with MicrometerScraper(endpoint.url) as scraper:
        endpoint.status = 503
        endpoint.body = "down"
        with pytest.raises(CollectorError, match=r"127\.0\.0\.1"):
            scraper.scrape()
        endpoint.status = 200
        endpoint.body = "this is { not an exposition"
        with pytest.raises(CollectorError, match="not a Prometheus exposition"):
            scraper.scrape()
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/metrics"
    with (
        MicrometerScraper(url, timeout_seconds=1) as scraper,
        pytest.raises(CollectorError, match=re.escape(f"micrometer endpoint {url}")),
    ):
        scraper.scrape()


def test_an_endpoint_without_jvm_meters_gives_nones() -> None:
    snapshot = parse_exposition("# TYPE up gauge\nup 1\n")
    assert snapshot.heap_used_bytes is None
    assert snapshot.collector is None
    assert snapshot.gc_pause_count is None
    rates = MicrometerRates()
    rates.update(snapshot, 1.0)
    fields = rates.update(snapshot, 2.0)
    assert fields is not None
    assert fields["gc_overhead_ratio"] is None
    assert fields["gc_count"] is None
