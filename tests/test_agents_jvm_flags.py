"""JVM flags from real JVMs: PrintFlagsFinal for an options string, jcmd on a running JVM."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents.jvm_flags import (
    FlagValue,
    collector_from_flags,
    flags_object,
    heap_sizing_from_options,
    option_tokens,
    parse_flags_text,
    read_flags_final,
    read_vm_command_line,
    read_vm_flags,
)
from agents.jvm_gclog import GcLogInit
from pipeline.errors import CollectorError
from schemas.models import JvmFlags

pytestmark = pytest.mark.skipif(shutil.which("jcmd") is None, reason="needs a JDK")

FIXTURES = Path(__file__).parent / "fixtures" / "gclogs"
MIB = 1 << 20


def test_print_flags_final_for_an_xmx_command_line() -> None:
    flags = read_flags_final("-Xmx96m -XX:+UseSerialGC -XX:ActiveProcessorCount=3 -Xss512k")
    assert flags["MaxHeapSize"] == FlagValue(str(96 * MIB), "command line")
    assert flags["UseSerialGC"].value == "true"
    flags_dict = flags_object(flags, options=["-Xmx96m -XX:+UseSerialGC"])
    assert flags_dict["max_heap_bytes"] == 96 * MIB
    assert flags_dict["heap_sizing"] == "xmx"
    assert flags_dict["collector"] == "Serial"
    assert flags_dict["active_processor_count"] == 3
    assert flags_dict["thread_stack_size_bytes"] == 512 * 1024
    assert flags_dict["max_metaspace_bytes"] is None  # unlimited by default
    assert flags_dict["max_direct_memory_bytes"] is None  # unset by default
    JvmFlags.model_validate(flags_dict)  # fits the contract


def test_print_flags_final_for_ram_percentage_and_java_tool_options() -> None:
    flags = read_flags_final(
        ["-XX:MaxRAMPercentage=50", "-XX:MaxMetaspaceSize=128m"],
        java_tool_options="-XX:+UseParallelGC -XX:ParallelGCThreads=3",
    )
    described = flags_object(flags)  # no options string: origins decide
    assert described["heap_sizing"] == "ram-percentage"
    assert described["max_ram_percentage"] == 50.0
    assert described["max_metaspace_bytes"] == 128 * MIB
    assert described["collector"] == "Parallel"
    assert described["parallel_gc_threads"] == 3
    # the heap is half of what this machine (or its cgroup) offers, so it is ergonomic
    assert flags["MaxHeapSize"].origin == "ergonomic"
    assert described["max_heap_bytes"] > 0
    assert flags_object(read_flags_final(""))["heap_sizing"] == "default"


def test_print_flags_final_failures_are_collector_errors() -> None:
    with pytest.raises(CollectorError, match="exited with 1"):
        read_flags_final("-XX:+NoSuchFlagAtAll")
    with pytest.raises(CollectorError, match="could not run"):
        read_flags_final("", java="/nonexistent/java")


@pytest.fixture(scope="module")
def running_jvm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[subprocess.Popen[str]]:
    """A real JVM that stays up for jcmd (GcFixtureAllocator holding for 60 s)."""
    classes = tmp_path_factory.mktemp("classes")
    subprocess.run(
        ["javac", "-d", str(classes), str(FIXTURES / "GcFixtureAllocator.java")],
        check=True,
        timeout=60,
    )
    process = subprocess.Popen(
        [
            "java",
            "-XX:+UseG1GC",
            "-Xmx80m",
            "-XX:MaxDirectMemorySize=16m",
            "-cp",
            str(classes),
            "GcFixtureAllocator",
            "20",
            "64",
            "1",
            "0",
            "60000",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().startswith("ready")
    yield process
    process.kill()
    process.wait(timeout=10)
    process.stdout.close()


def test_jcmd_vm_flags_of_a_running_jvm(running_jvm: subprocess.Popen[str]) -> None:
    flags = read_vm_flags(running_jvm.pid)
    assert flags["MaxHeapSize"] == FlagValue(str(80 * MIB), "command line")
    assert collector_from_flags(flags) == "G1"
    command_line = read_vm_command_line(running_jvm.pid)
    assert command_line is not None
    assert "-Xmx80m" in command_line
    described = flags_object(flags, options=[command_line])
    assert described["heap_sizing"] == "xmx"
    assert described["max_direct_memory_bytes"] == 16 * MIB
    assert described["max_heap_bytes"] == 80 * MIB
    # the short form (only flags that differ from their defaults) parses to the same values
    short = subprocess.run(
        ["jcmd", str(running_jvm.pid), "VM.flags"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    short_flags = parse_flags_text(short)
    assert short_flags["MaxHeapSize"].value == str(80 * MIB)
    assert short_flags["UseG1GC"].value == "true"


def test_jcmd_on_a_pid_that_is_gone_is_a_collector_error() -> None:
    gone = subprocess.Popen(["true"])
    gone.wait(timeout=10)
    with pytest.raises(CollectorError, match="jcmd"):
        read_vm_flags(gone.pid, timeout=30)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (("-Xmx1g",), "xmx"),
        (("-XX:MaxHeapSize=512m",), "xmx"),
        (("-XX:MaxRAMPercentage=75.0",), "ram-percentage"),
        (("-XX:MaxRAMPercentage=75.0", "-Xmx1g"), "xmx"),  # explicit size wins
        (("-XX:MaxRAMFraction=2",), "ram-percentage"),
        (("-Dapp.name=-Xmx1g -Xms1g",), "default"),  # a property value is not an option
        (("-XX:+UseG1GC", None, ""), "default"),
        (("-Xmx1g 'unbalanced",), "xmx"),
    ],
)
def test_heap_sizing_from_options(options: tuple[str | None, ...], expected: str) -> None:
    assert heap_sizing_from_options(*options) == expected


def test_option_tokens_keep_quoted_values_together() -> None:
    assert option_tokens("-Da='x y' -Xmx1g", None) == ["-Da=x y", "-Xmx1g"]


def test_gc_log_init_fills_what_the_flags_lack() -> None:
    init = GcLogInit(collector="ZGC", cpus_available=2, heap_max_bytes=64 * MIB)
    described = flags_object(
        {"ActiveProcessorCount": FlagValue("-1"), "ThreadStackSize": FlagValue("1024")},
        init=init,
    )
    assert described["collector"] == "ZGC"
    assert described["active_processor_count"] == 2
    assert described["max_heap_bytes"] == 64 * MIB
    assert described["thread_stack_size_bytes"] == 1 << 20
    assert described["heap_sizing"] is None  # nothing says how it was set
    JvmFlags.model_validate(described)
