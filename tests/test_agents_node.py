"""agents/node.py against a synthetic /proc and the real one."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agents.node import (
    NodeSampler,
    node_sample,
    read_cpu_times,
    read_meminfo,
    read_node,
    read_pressure,
)
from pipeline.errors import CollectorError

NODE_SAMPLE_FIELDS = {
    "schema_version",
    "kind",
    "source",
    "node",
    "timestamp",
    "interval_seconds",
    "cpu_capacity_cores",
    "cpu_used_cores",
    "memory_total_bytes",
    "memory_available_bytes",
    "memory_used_bytes",
    "psi",
}
PSI_FIELDS = {
    "cpu_some_avg10",
    "memory_some_avg10",
    "memory_full_avg10",
    "io_some_avg10",
    "io_full_avg10",
}

MEMINFO = """\
MemTotal:        8000000 kB
MemFree:         1000000 kB
MemAvailable:    2000000 kB
Buffers:          100000 kB
HugePages_Total:       0
"""


def fake_root(tmp_path: Path, stat: str, *, pressure: dict[str, str] | None = None) -> Path:
    proc = tmp_path / "proc"
    proc.mkdir(exist_ok=True)
    (proc / "stat").write_text(stat)
    (proc / "meminfo").write_text(MEMINFO)
    if pressure is not None:
        (proc / "pressure").mkdir(exist_ok=True)
        for name, text in pressure.items():
            (proc / "pressure" / name).write_text(text)
    return tmp_path


def proc_stat(user: int, system: int, idle: int, steal: int = 0, cpus: int = 4) -> str:
    #      user nice system idle iowait irq softirq steal guest guest_nice
    lines = [f"cpu  {user} 0 {system} {idle} 0 0 0 {steal} 0 0"]
    lines += [f"cpu{index} 1 0 1 1 0 0 0 0 0 0" for index in range(cpus)]
    lines += ["intr 12345", "ctxt 999", "btime 1700000000", "processes 42"]
    return "\n".join(lines) + "\n"


def test_busy_cores_are_the_busy_share_of_ticks_times_online_cpus(tmp_path: Path) -> None:
    # ticks:   user system idle   busy total
    # before    100    100  800    200  1000
    # after     300    200 1100    500  1600   -> 300 busy of 600 = 50% of 4 CPUs = 2 cores
    root = fake_root(tmp_path, proc_stat(100, 100, 800), pressure={})
    sampler = NodeSampler("node-a", root=root)
    assert sampler.sample(100.0) is None
    (root / "proc" / "stat").write_text(proc_stat(300, 200, 1100))
    sample = sampler.sample(110.0)
    assert sample is not None
    assert set(sample) == NODE_SAMPLE_FIELDS
    assert sample["kind"] == "node-sample"
    assert sample["schema_version"] == 1
    assert sample["node"] == "node-a"
    assert sample["timestamp"] == 110.0
    assert sample["interval_seconds"] == 10.0
    assert sample["cpu_capacity_cores"] == 4.0
    assert sample["cpu_used_cores"] == pytest.approx(2.0)
    assert sample["memory_total_bytes"] == 8_000_000 * 1024
    assert sample["memory_available_bytes"] == 2_000_000 * 1024
    assert sample["memory_used_bytes"] == 6_000_000 * 1024


def test_steal_counts_in_the_total_but_not_as_busy(tmp_path: Path) -> None:
    # delta: user +100, idle +100, steal +200 -> busy 100 of 400 -> 25% of 2 CPUs
    before = read_cpu_times(fake_root(tmp_path, proc_stat(0, 0, 0, steal=0, cpus=2)))
    after = read_cpu_times(fake_root(tmp_path, proc_stat(100, 0, 100, steal=200, cpus=2)))
    assert (after.busy_ticks - before.busy_ticks, after.total_ticks - before.total_ticks) == (
        100,
        400,
    )
    node_before = read_node(tmp_path)
    node_after = read_node(tmp_path)
    assert node_sample(node_before, node_after, node="n", interval_seconds=1, timestamp=1) is None


def test_pressure_reads_avg10_of_some_and_full_lines(tmp_path: Path) -> None:
    root = fake_root(
        tmp_path,
        proc_stat(1, 1, 1),
        pressure={
            # an older kernel: the cpu file has no "full" line
            "cpu": "some avg10=12.50 avg60=3.00 avg300=1.00 total=123\n",
            "memory": (
                "some avg10=0.75 avg60=0.20 avg300=0.10 total=9\n"
                "full avg10=0.25 avg60=0.10 avg300=0.00 total=4\n"
            ),
        },
    )
    (root / "proc" / "pressure" / "io").mkdir()  # unreadable as a file -> None
    pressure = read_pressure(root)
    assert pressure is not None
    assert pressure.to_dict() == {
        "cpu_some_avg10": 12.5,
        "memory_some_avg10": 0.75,
        "memory_full_avg10": 0.25,
        "io_some_avg10": None,
        "io_full_avg10": None,
    }


def test_no_pressure_directory_gives_null_psi(tmp_path: Path) -> None:
    root = fake_root(tmp_path, proc_stat(1, 1, 1))
    sampler = NodeSampler("n", root=root)
    sampler.sample(0.0)
    (root / "proc" / "stat").write_text(proc_stat(2, 2, 2))
    sample = sampler.sample(1.0)
    assert sample is not None
    assert sample["psi"] is None


def test_missing_meminfo_is_a_collector_error_naming_the_file(tmp_path: Path) -> None:
    root = fake_root(tmp_path, proc_stat(1, 1, 1))
    (root / "proc" / "meminfo").unlink()
    with pytest.raises(CollectorError, match="meminfo"):
        read_node(root)


def test_meminfo_without_memavailable_is_refused(tmp_path: Path) -> None:
    root = fake_root(tmp_path, proc_stat(1, 1, 1))
    (root / "proc" / "meminfo").write_text("MemTotal: 100 kB\nMemFree: 50 kB\n")
    with pytest.raises(CollectorError, match="MemAvailable"):
        read_meminfo(root)


def test_stat_without_cpu_line_is_refused(tmp_path: Path) -> None:
    root = fake_root(tmp_path, "intr 1\nctxt 2\n")
    with pytest.raises(CollectorError, match="cpu"):
        read_cpu_times(root)


def test_real_proc_matches_what_the_os_reports() -> None:
    times = read_cpu_times()
    assert times.online_cpus == os.cpu_count()
    total, available = read_meminfo()
    assert total == os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert 0 < available <= total


def test_real_node_sees_a_burning_child_as_at_least_most_of_a_core() -> None:
    sampler = NodeSampler("this-node")
    burner = subprocess.Popen([sys.executable, "-I", "-c", "while True: pass"])
    try:
        time.sleep(0.2)
        start = time.monotonic()
        assert sampler.sample(start) is None
        time.sleep(0.8)
        sample = sampler.sample(time.monotonic())
    finally:
        burner.kill()
        burner.wait()
    assert sample is not None
    assert sample["cpu_capacity_cores"] == float(os.cpu_count() or 0)
    assert 0.7 <= sample["cpu_used_cores"] <= sample["cpu_capacity_cores"]
    assert sample["interval_seconds"] == pytest.approx(0.8, abs=0.2)
    if Path("/proc/pressure").is_dir():
        psi = sample["psi"]
        assert psi is not None
        assert set(psi) == PSI_FIELDS
        assert psi["cpu_some_avg10"] is not None
        assert 0.0 <= psi["cpu_some_avg10"] <= 100.0
