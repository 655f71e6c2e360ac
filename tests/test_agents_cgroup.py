"""agents/cgroup.py: mount discovery, v1/v2 readers and rates, against real cgroups."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.cgroup import (
    CgroupMounts,
    CgroupPaths,
    CgroupReading,
    RateCalculator,
    parse_mountinfo,
    read_cgroup,
)
from agents.cgroup_admin import V1Cgroup, spawn_in_cgroup
from pipeline.errors import CollectorError
from tests.cgroup_helpers import (
    BUSY_LOOP,
    MIB,
    RunningCgroup,
    allocate_on_request,
    hold_memory,
    process_in_v1_cgroup,
    requires_v1_cgroups,
)

# This host's layout: cpu and cpuacct separate, plus an empty cgroup2 ("hybrid").
SEPARATE_MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

# The common systemd layout: cpu and cpuacct co-mounted, a bind mount of a subtree of
# memory that must not win over the hierarchy's root mount.
COMOUNTED_MOUNTINFO = """\
25 30 0:23 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:10 - cgroup cgroup rw,cpu,cpuacct
31 25 0:27 /kubepods /mnt/bound\\040memory rw - cgroup cgroup rw,memory
32 25 0:27 / /sys/fs/cgroup/memory rw,nosuid shared:11 - cgroup cgroup rw,memory
33 25 0:28 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
"""

V2_ONLY_MOUNTINFO = """\
26 22 0:24 / /sys/fs/cgroup rw,nosuid,nodev,noexec - cgroup2 cgroup2 rw,nsdelegate
"""


# ----------------------------------------------------------------------------- mounts


def test_separate_cpu_and_cpuacct_mounts_are_found_and_hybrid_counts_as_v1() -> None:
    mounts = parse_mountinfo(SEPARATE_MOUNTINFO, root=Path("/host"))
    assert mounts.v1["cpu"] == Path("/host/sys/fs/cgroup/cpu")
    assert mounts.v1["cpuacct"] == Path("/host/sys/fs/cgroup/cpuacct")
    assert mounts.v1["memory"] == Path("/host/sys/fs/cgroup/memory")
    assert mounts.unified == Path("/host/sys/fs/cgroup/unified")
    assert mounts.version == 1
    paths = mounts.resolve("/demo/burner")
    assert paths.cpuacct == Path("/host/sys/fs/cgroup/cpuacct/demo/burner")
    assert len(paths.directories()) == 3


def test_comounted_cpu_cpuacct_share_a_directory_and_root_mount_beats_bind_mount() -> None:
    mounts = parse_mountinfo(COMOUNTED_MOUNTINFO)
    assert mounts.v1["cpu"] == mounts.v1["cpuacct"] == Path("/sys/fs/cgroup/cpu,cpuacct")
    assert mounts.v1["memory"] == Path("/sys/fs/cgroup/memory")
    assert "name=systemd" not in mounts.v1
    assert mounts.unified is None
    paths = mounts.resolve("/a/b")
    assert paths.cpu == paths.cpuacct
    assert paths.directories() == (
        Path("/sys/fs/cgroup/cpu,cpuacct/a/b"),
        Path("/sys/fs/cgroup/memory/a/b"),
    )


def test_escaped_mount_point_is_decoded() -> None:
    mounts = parse_mountinfo("31 25 0:27 / /mnt/my\\040memory rw - cgroup cgroup rw,memory\n")
    assert mounts.v1["memory"] == Path("/mnt/my memory")


def test_v2_only_host_resolves_to_one_directory() -> None:
    mounts = parse_mountinfo(V2_ONLY_MOUNTINFO)
    assert mounts.version == 2
    paths = mounts.resolve("/kubepods/pod1/ctr")
    assert paths.version == 2
    assert paths.directories() == (Path("/sys/fs/cgroup/kubepods/pod1/ctr"),)


def test_no_cgroup_mounts_is_an_error_that_says_what_to_check() -> None:
    mounts = parse_mountinfo("22 27 0:21 / /proc rw - proc proc rw\n")
    with pytest.raises(CollectorError, match="mountinfo"):
        _ = mounts.version


def test_path_escaping_the_mount_is_refused() -> None:
    mounts = parse_mountinfo(SEPARATE_MOUNTINFO)
    with pytest.raises(CollectorError, match=r"\.\."):
        mounts.resolve("/demo/../../etc")


def test_discover_reads_an_injected_mountinfo_file(tmp_path: Path) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(COMOUNTED_MOUNTINFO)
    mounts = CgroupMounts.discover(mountinfo, root=tmp_path)
    assert mounts.v1["cpu"] == tmp_path / "sys/fs/cgroup/cpu,cpuacct"
    with pytest.raises(CollectorError, match="cannot read mount table"):
        CgroupMounts.discover(tmp_path / "absent")


def test_this_hosts_mounts_are_discovered() -> None:
    mounts = CgroupMounts.discover()
    assert mounts.version in (1, 2)
    root = mounts.resolve("/")
    for directory in root.directories():
        assert directory.is_dir()


# --------------------------------------------------------------------- synthetic trees


def write_files(directory: Path, files: dict[str, str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)


def test_v1_reader_on_a_comounted_synthetic_tree(tmp_path: Path) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(COMOUNTED_MOUNTINFO)
    mounts = CgroupMounts.discover(mountinfo, root=tmp_path)
    paths = mounts.resolve("/demo/app")
    write_files(
        paths.cpu,
        {
            "cpuacct.usage": "2500000000\n",
            "cpu.stat": "nr_periods 40\nnr_throttled 10\nthrottled_time 300000000\n",
            "cpu.cfs_quota_us": "150000\n",
            "cpu.cfs_period_us": "100000\n",
        },
    )
    write_files(
        paths.memory,
        {
            "memory.usage_in_bytes": "104857600\n",
            # local fields differ from total_* on purpose: the hierarchical ones win
            "memory.stat": (
                "cache 1\nrss 2\ninactive_file 3\n"
                "total_cache 20971520\ntotal_rss 73400320\ntotal_inactive_file 10485760\n"
            ),
            "memory.limit_in_bytes": "9223372036854771712\n",
            "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        },
    )
    reading = read_cgroup(paths)
    assert reading == CgroupReading(
        version=1,
        cpu_usage_ns=2_500_000_000,
        cpu_periods=40,
        cpu_throttled_periods=10,
        cpu_throttled_ns=300_000_000,
        cpu_limit_cores=1.5,
        memory_usage_bytes=100 * MIB,
        memory_inactive_file_bytes=10 * MIB,
        memory_rss_bytes=70 * MIB,
        memory_cache_bytes=20 * MIB,
        memory_limit_bytes=None,  # 9223372036854771712 is v1's "unlimited"
        oom_kills=2,
    )
    assert reading.memory_working_set_bytes == 90 * MIB


def test_v1_reader_falls_back_to_local_fields_and_no_quota(tmp_path: Path) -> None:
    cpu, memory = tmp_path / "cpu", tmp_path / "memory"
    write_files(
        cpu,
        {
            "cpuacct.usage": "7\n",
            "cpu.stat": "nr_periods 0\nnr_throttled 0\nthrottled_time 0\n",
            "cpu.cfs_quota_us": "-1\n",
            "cpu.cfs_period_us": "100000\n",
        },
    )
    write_files(
        memory,
        {
            "memory.usage_in_bytes": "4096\n",
            "memory.stat": "cache 100\nrss 200\ninactive_file 8192\n",
            "memory.limit_in_bytes": "52428800\n",
            "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\n",  # kernel < 4.13
        },
    )
    reading = read_cgroup(CgroupPaths.for_v1(cpu=cpu, cpuacct=cpu, memory=memory))
    assert reading.cpu_limit_cores is None
    assert (reading.memory_rss_bytes, reading.memory_cache_bytes) == (200, 100)
    assert reading.memory_limit_bytes == 50 * MIB
    assert reading.oom_kills is None
    assert reading.memory_working_set_bytes == 0  # 4096 - 8192 floored at 0


def test_v2_reader_converts_units_and_reads_max_as_unlimited(tmp_path: Path) -> None:
    write_files(
        tmp_path,
        {
            "cpu.stat": (
                "usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n"
                "nr_periods 30\nnr_throttled 6\nthrottled_usec 250000\n"
            ),
            "cpu.max": "max 100000\n",
            "memory.current": "209715200\n",
            "memory.stat": "anon 157286400\nfile 41943040\ninactive_file 31457280\n",
            "memory.max": "max\n",
            "memory.events": "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n",
        },
    )
    reading = read_cgroup(CgroupPaths.for_v2(tmp_path))
    assert reading.version == 2
    assert reading.cpu_usage_ns == 1_500_000_000
    assert reading.cpu_throttled_ns == 250_000_000
    assert (reading.cpu_periods, reading.cpu_throttled_periods) == (30, 6)
    assert reading.cpu_limit_cores is None
    assert reading.memory_limit_bytes is None
    assert reading.memory_rss_bytes == 150 * MIB
    assert reading.memory_cache_bytes == 40 * MIB
    assert reading.memory_working_set_bytes == 170 * MIB
    assert reading.oom_kills == 1

    (tmp_path / "cpu.max").write_text("250000 100000\n")
    (tmp_path / "memory.max").write_text("536870912\n")
    limited = read_cgroup(CgroupPaths.for_v2(tmp_path))
    assert limited.cpu_limit_cores == 2.5
    assert limited.memory_limit_bytes == 512 * MIB


def test_v2_without_cpu_controller_has_no_throttling_fields(tmp_path: Path) -> None:
    write_files(
        tmp_path,
        {
            "cpu.stat": "usage_usec 10\nuser_usec 5\nsystem_usec 5\n",
            "memory.current": "1000\n",
            "memory.stat": "anon 600\nfile 400\ninactive_file 100\n",
            "memory.max": "max\n",
        },
    )
    reading = read_cgroup(CgroupPaths.for_v2(tmp_path))
    assert reading.cpu_periods is None
    assert reading.cpu_throttled_ns is None
    assert reading.cpu_limit_cores is None
    assert reading.oom_kills is None
    calculator = RateCalculator()
    assert calculator.update(reading, 0.0) is None
    sample = calculator.update(reading, 1.0)
    assert sample is not None
    assert sample.cpu_throttled_ratio is None
    assert sample.to_container_sample("c", 1.0)["cpu_throttled_seconds"] is None


def test_missing_cgroup_raises_collector_error_naming_the_path(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    with pytest.raises(CollectorError, match=str(gone)) as raised:
        read_cgroup(CgroupPaths.for_v2(gone))
    assert "mapping" in str(raised.value)


def test_missing_counter_file_raises_collector_error(tmp_path: Path) -> None:
    write_files(tmp_path, {"cpu.stat": "usage_usec 1\n"})
    with pytest.raises(CollectorError, match="memory"):
        read_cgroup(CgroupPaths.for_v2(tmp_path))


# ---------------------------------------------------------------------------- rates


def reading_with(
    usage_ns: int = 0,
    periods: int = 0,
    throttled: int = 0,
    throttled_ns: int = 0,
    oom_kills: int = 0,
    usage_bytes: int = 0,
) -> CgroupReading:
    return CgroupReading(
        version=1,
        cpu_usage_ns=usage_ns,
        cpu_periods=periods,
        cpu_throttled_periods=throttled,
        cpu_throttled_ns=throttled_ns,
        cpu_limit_cores=None,
        memory_usage_bytes=usage_bytes,
        memory_inactive_file_bytes=0,
        memory_rss_bytes=None,
        memory_cache_bytes=None,
        memory_limit_bytes=None,
        oom_kills=oom_kills,
    )


def test_rates_between_two_readings() -> None:
    # t=10: usage 1 s, 100 periods, 5 throttled  ->  t=12: usage 4 s, 120 periods, 15 throttled
    calculator = RateCalculator()
    assert calculator.update(reading_with(1_000_000_000, 100, 5, 10_000_000), 10.0) is None
    sample = calculator.update(reading_with(4_000_000_000, 120, 15, 510_000_000, 1), 12.0)
    assert sample is not None
    assert sample.interval_seconds == 2.0
    assert sample.cpu_usage_cores == pytest.approx(1.5)
    assert (sample.cpu_periods, sample.cpu_throttled_periods) == (20, 10)
    assert sample.cpu_throttled_ratio == pytest.approx(0.5)
    assert sample.cpu_throttled_seconds == pytest.approx(0.5)
    assert sample.oom_kills == 1
    assert not sample.counter_reset
    assert calculator.resets == 0


def test_counter_reset_takes_the_new_value_as_the_delta() -> None:
    # the container restarted between t=1 and t=2: usage fell from 9 s to 0.5 s
    calculator = RateCalculator()
    calculator.update(reading_with(9_000_000_000, 90, 9), 1.0)
    sample = calculator.update(reading_with(500_000_000, 5, 1), 2.0)
    assert sample is not None
    assert sample.counter_reset
    assert sample.cpu_usage_cores == pytest.approx(0.5)
    assert (sample.cpu_periods, sample.cpu_throttled_periods) == (5, 1)
    assert calculator.resets == 1


def test_clock_not_moving_forward_yields_no_sample_and_rebases() -> None:
    calculator = RateCalculator()
    calculator.update(reading_with(0), 5.0)
    assert calculator.update(reading_with(1_000_000_000), 5.0) is None
    assert calculator.update(reading_with(2_000_000_000), 4.0) is None
    sample = calculator.update(reading_with(3_000_000_000), 6.0)
    assert sample is not None
    assert sample.cpu_usage_cores == pytest.approx(0.5)  # 1 s over 2 s since t=4


counters = st.integers(min_value=0, max_value=2**62)
readings = st.builds(
    reading_with,
    usage_ns=counters,
    periods=counters,
    throttled=counters,
    throttled_ns=counters,
    oom_kills=st.integers(min_value=0, max_value=1000),
    usage_bytes=counters,
)


@given(
    st.lists(
        st.tuples(readings, st.floats(min_value=1e-3, max_value=3600.0)),
        min_size=2,
        max_size=30,
    )
)
def test_counter_resets_never_give_negative_samples(
    timeline: list[tuple[CgroupReading, float]],
) -> None:
    calculator = RateCalculator()
    now = 0.0
    expected_resets = 0
    previous: CgroupReading | None = None
    for reading, step in timeline:
        now += step
        sample = calculator.update(reading, now)
        if previous is None:
            assert sample is None
        else:
            assert sample is not None
            assert sample.cpu_usage_cores >= 0
            assert sample.cpu_periods is not None
            assert sample.cpu_periods >= 0
            assert sample.cpu_throttled_periods is not None
            assert sample.cpu_throttled_periods >= 0
            assert sample.cpu_throttled_seconds is not None
            assert sample.cpu_throttled_seconds >= 0
            assert sample.cpu_throttled_ratio is not None
            assert 0.0 <= sample.cpu_throttled_ratio <= 1.0
            assert sample.oom_kills is not None
            assert sample.oom_kills >= 0
            went_down = (
                reading.cpu_usage_ns < previous.cpu_usage_ns
                or (reading.cpu_periods or 0) < (previous.cpu_periods or 0)
                or (reading.cpu_throttled_periods or 0) < (previous.cpu_throttled_periods or 0)
                or (reading.cpu_throttled_ns or 0) < (previous.cpu_throttled_ns or 0)
                or (reading.oom_kills or 0) < (previous.oom_kills or 0)
            )
            assert sample.counter_reset == went_down
            expected_resets += went_down
        previous = reading
    assert calculator.resets == expected_resets


@given(
    st.lists(st.integers(min_value=0, max_value=10**12), min_size=2, max_size=30),
    st.integers(min_value=0, max_value=10**12),
)
def test_growing_counters_sum_to_total_growth(increments: list[int], start: int) -> None:
    calculator = RateCalculator()
    usage = start
    total_seconds = 0.0
    calculator.update(reading_with(usage, oom_kills=0), 0.0)
    for index, increment in enumerate(increments, start=1):
        usage += increment
        sample = calculator.update(reading_with(usage), float(index))
        assert sample is not None
        total_seconds += sample.cpu_usage_cores * sample.interval_seconds
    assert total_seconds == pytest.approx(sum(increments) / 1e9, rel=1e-9)
    assert calculator.resets == 0


# ----------------------------------------------------------------- real v1 cgroups


@pytest.mark.cgroup
@requires_v1_cgroups
def test_busy_loop_under_half_a_core_reads_half_a_core_and_is_throttled() -> None:
    with process_in_v1_cgroup(BUSY_LOOP, cpu_limit_cores=0.5) as running:
        running.wait_for_line("ready")
        calculator = RateCalculator()
        calculator.update(read_cgroup(running.group.paths), time.monotonic())
        time.sleep(1.2)
        sample = calculator.update(read_cgroup(running.group.paths), time.monotonic())
    assert sample is not None
    assert sample.cpu_usage_cores == pytest.approx(0.5, rel=0.2)
    assert sample.cpu_limit_cores == 0.5
    assert sample.cpu_throttled_periods is not None
    assert sample.cpu_throttled_periods > 0
    assert sample.cpu_throttled_seconds is not None
    assert sample.cpu_throttled_seconds > 0
    assert sample.cpu_throttled_ratio is not None
    assert sample.cpu_throttled_ratio > 0.5
    assert sample.cpu_periods is not None
    assert 8 <= sample.cpu_periods <= 14


@pytest.mark.cgroup
@requires_v1_cgroups
def test_process_holding_100_mib_shows_a_working_set_of_at_least_100_mib() -> None:
    with process_in_v1_cgroup(hold_memory(100), memory_limit_bytes=400 * MIB) as running:
        running.wait_for_line("ready")
        reading = read_cgroup(running.group.paths)
    assert reading.memory_working_set_bytes >= 100 * MIB
    assert reading.memory_rss_bytes is not None
    assert reading.memory_rss_bytes >= 100 * MIB
    assert reading.memory_limit_bytes == 400 * MIB
    assert reading.memory_working_set_bytes <= 400 * MIB


@pytest.mark.cgroup
@requires_v1_cgroups
def test_allocation_past_the_limit_is_oom_killed_and_counted() -> None:
    with process_in_v1_cgroup(allocate_on_request(100), memory_limit_bytes=50 * MIB) as running:
        running.wait_for_line("ready")
        calculator = RateCalculator()
        assert calculator.update(read_cgroup(running.group.paths), 1.0) is None
        running.send_line()
        status = running.process.wait(timeout=20)
        sample = calculator.update(read_cgroup(running.group.paths), 2.0)
    assert status == -9  # SIGKILL from the OOM killer
    assert sample is not None
    assert sample.oom_kills is not None
    assert sample.oom_kills >= 1
    assert sample.memory_limit_bytes == 50 * MIB


# ------------------------------------------------ v2 reader vs v1 reader, same cgroup


def keyed(text: str) -> dict[str, int]:
    return {key: int(value) for key, value in (line.split() for line in text.splitlines())}


def snapshot(running: RunningCgroup, v1_copy: Path, v2_tree: Path) -> None:
    """Copy the live v1 files, and write the same numbers as a v2 cgroup would show them."""
    paths = running.group.paths
    raw = {
        "cpuacct.usage": (paths.cpuacct / "cpuacct.usage").read_text(),
        "cpu.stat": (paths.cpu / "cpu.stat").read_text(),
        "cpu.cfs_quota_us": (paths.cpu / "cpu.cfs_quota_us").read_text(),
        "cpu.cfs_period_us": (paths.cpu / "cpu.cfs_period_us").read_text(),
        "memory.usage_in_bytes": (paths.memory / "memory.usage_in_bytes").read_text(),
        "memory.stat": (paths.memory / "memory.stat").read_text(),
        "memory.limit_in_bytes": (paths.memory / "memory.limit_in_bytes").read_text(),
        "memory.oom_control": (paths.memory / "memory.oom_control").read_text(),
    }
    shutil.rmtree(v1_copy, ignore_errors=True)
    write_files(v1_copy, raw)
    cpu_stat, memory_stat = keyed(raw["cpu.stat"]), keyed(raw["memory.stat"])
    usage_ns = int(raw["cpuacct.usage"])
    quota = int(raw["cpu.cfs_quota_us"])
    oom_kills = keyed(raw["memory.oom_control"])["oom_kill"]
    write_files(
        v2_tree,
        {
            "cpu.stat": (
                f"usage_usec {usage_ns // 1000}\nuser_usec 0\nsystem_usec 0\n"
                f"nr_periods {cpu_stat['nr_periods']}\nnr_throttled {cpu_stat['nr_throttled']}\n"
                f"throttled_usec {cpu_stat['throttled_time'] // 1000}\n"
            ),
            "cpu.max": f"{quota if quota > 0 else 'max'} {int(raw['cpu.cfs_period_us'])}\n",
            "memory.current": raw["memory.usage_in_bytes"],
            "memory.stat": (
                f"anon {memory_stat['total_rss']}\nfile {memory_stat['total_cache']}\n"
                f"inactive_file {memory_stat['total_inactive_file']}\n"
            ),
            "memory.max": raw["memory.limit_in_bytes"],
            "memory.events": f"low 0\nhigh 0\nmax 0\noom 0\noom_kill {oom_kills}\n",
        },
    )


@pytest.mark.cgroup
@requires_v1_cgroups
def test_v2_reader_gives_the_same_rates_as_v1_for_the_same_live_cgroup(tmp_path: Path) -> None:
    v1_copy, v2_tree = tmp_path / "v1", tmp_path / "v2"
    v1_paths = CgroupPaths.for_v1(cpu=v1_copy, cpuacct=v1_copy, memory=v1_copy)
    v2_paths = CgroupPaths.for_v2(v2_tree)
    v1_rates, v2_rates = RateCalculator(), RateCalculator()
    with process_in_v1_cgroup(
        BUSY_LOOP, cpu_limit_cores=0.5, memory_limit_bytes=300 * MIB
    ) as running:
        running.wait_for_line("ready")
        samples = []
        for _ in range(2):
            now = time.monotonic()
            snapshot(running, v1_copy, v2_tree)
            samples.append(
                (
                    v1_rates.update(read_cgroup(v1_paths), now),
                    v2_rates.update(read_cgroup(v2_paths), now),
                )
            )
            time.sleep(1.0)
    from_v1, from_v2 = samples[1]
    assert from_v1 is not None
    assert from_v2 is not None
    assert from_v2.cpu_usage_cores == pytest.approx(0.5, rel=0.2)
    # microsecond truncation is the only difference allowed
    assert from_v2.cpu_usage_cores == pytest.approx(from_v1.cpu_usage_cores, abs=1e-5)
    assert from_v2.cpu_throttled_seconds == pytest.approx(from_v1.cpu_throttled_seconds, abs=1e-5)
    assert from_v2.cpu_periods == from_v1.cpu_periods
    assert from_v2.cpu_throttled_periods == from_v1.cpu_throttled_periods
    assert from_v2.cpu_throttled_periods is not None
    assert from_v2.cpu_throttled_periods > 0
    assert from_v2.cpu_limit_cores == from_v1.cpu_limit_cores == 0.5
    assert from_v2.memory_working_set_bytes == from_v1.memory_working_set_bytes > 0
    assert from_v2.memory_rss_bytes == from_v1.memory_rss_bytes
    assert from_v2.memory_limit_bytes == from_v1.memory_limit_bytes == 300 * MIB
    assert from_v2.oom_kills == from_v1.oom_kills == 0


@pytest.mark.cgroup
@requires_v1_cgroups
def test_recreated_cgroup_counts_a_reset_not_a_negative_rate() -> None:
    calculator = RateCalculator()
    path = None
    with process_in_v1_cgroup(BUSY_LOOP, cpu_limit_cores=1.0) as first:
        first.wait_for_line("ready")
        time.sleep(0.5)
        path = first.group.relative_path
        calculator.update(read_cgroup(first.group.paths), 0.0)
    with process_in_v1_cgroup(BUSY_LOOP, cpu_limit_cores=1.0, relative_path=path) as second:
        second.wait_for_line("ready")
        sample = calculator.update(read_cgroup(second.group.paths), 1.0)
    assert sample is not None
    assert sample.counter_reset
    assert calculator.resets == 1
    assert sample.cpu_usage_cores >= 0


def test_spawned_child_that_cannot_join_exits_97(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-cgroup"
    group = V1Cgroup("/x", CgroupPaths.for_v2(missing), ())
    process = spawn_in_cgroup(group, ["true"], stderr=subprocess.DEVNULL)
    assert process.wait(timeout=10) == 97
