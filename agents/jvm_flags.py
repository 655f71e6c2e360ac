"""The JVM flags in force: PrintFlagsFinal, ``jcmd VM.flags``, options strings, GC-log init.

Why: sizing a container without knowing how its JVM sizes the heap is the mistake daytwo
exists to avoid. A recommendation must change ``-Xmx`` *or* ``-XX:MaxRAMPercentage``,
whichever the workload uses, and must know the collector and processor count the JVM
picked, because both follow the container's limits (ergonomics).

Sources, best first:

* ``jcmd <pid> VM.flags -all`` on the running JVM (:func:`read_vm_flags`) — the truth for
  that JVM, run from a place that can attach to it (same user, same PID namespace);
* ``java <options> -XX:+PrintFlagsFinal -version`` (:func:`read_flags_final`) — what a JVM
  started with these options *on this machine* would use; ergonomic values (heap from
  MaxRAMPercentage, processor count) reflect the machine and cgroup where it runs;
* the options string itself (:func:`heap_sizing_from_options`) and the GC log's init lines
  (:class:`agents.jvm_gclog.GcLogInit`).

The parsers are pure functions of text; only the two ``read_*`` functions run processes.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from agents.jvm_gclog import CollectorName, GcLogInit
from pipeline.errors import CollectorError

__all__ = [
    "FlagValue",
    "HeapSizing",
    "collector_from_flags",
    "flags_object",
    "heap_sizing_from_options",
    "option_tokens",
    "parse_flags_text",
    "read_flags_final",
    "read_vm_command_line",
    "read_vm_flags",
]

HeapSizing = Literal["xmx", "ram-percentage", "default"]

MAX_SAFE_INTEGER: Final = 2**53 - 1
_FINAL_LINE = re.compile(
    r"^\s*(?P<type>[a-z_0-9]+)\s+(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s+:?=\s*(?P<value>\S*)"
    r"\s*(?:\{(?P<kinds>[^}]*)\})?\s*(?:\{(?P<origin>[^}]*)\})?\s*$"
)
_XX_FLAG = re.compile(r"^-XX:(?:(?P<bool>[+-])(?P<bname>\w+)|(?P<name>\w+)=(?P<value>.*))$")
_SIZE_OPTION = re.compile(r"^(\d+)([kKmMgGtT]?)$")
_COLLECTOR_FLAGS: Final[tuple[tuple[str, CollectorName], ...]] = (
    ("UseZGC", "ZGC"),
    ("UseShenandoahGC", "Shenandoah"),
    ("UseG1GC", "G1"),
    ("UseParallelGC", "Parallel"),
    ("UseParallelOldGC", "Parallel"),
    ("UseSerialGC", "Serial"),
    ("UseEpsilonGC", "other"),
    ("UseConcMarkSweepGC", "other"),
)
_DEFAULT_TIMEOUT_SECONDS: Final = 20.0


@dataclass(frozen=True, slots=True)
class FlagValue:
    """One flag: its value as printed and where it came from (``command line``, ...)."""

    value: str
    origin: str | None = None


def parse_flags_text(text: str) -> dict[str, FlagValue]:
    """Parse PrintFlagsFinal / ``VM.flags -all`` tables or ``VM.flags`` one-liners.

    Both shapes come out the same: ``{"MaxHeapSize": FlagValue("67108864", "command
    line")}``; booleans are ``"true"``/``"false"``. Lines that are neither are skipped (the
    ``[Global flags]`` header, ``java -version`` output, jcmd's ``<pid>:`` line).
    """
    flags: dict[str, FlagValue] = {}
    for line in text.splitlines():
        if (match := _FINAL_LINE.match(line)) is not None:
            flags[match.group("name")] = FlagValue(match.group("value"), match.group("origin"))
            continue
        for token in line.split():
            if (flag := _XX_FLAG.match(token)) is None:
                continue
            if flag.group("bool") is not None:
                value = "true" if flag.group("bool") == "+" else "false"
                flags[flag.group("bname")] = FlagValue(value)
            else:
                flags[flag.group("name")] = FlagValue(flag.group("value"))
    return flags


def option_tokens(*options: str | None) -> list[str]:
    """Split option strings (JAVA_TOOL_OPTIONS, then the command line) shell-style, in order.

    An unbalanced quote does not raise: the string is split on whitespace instead.
    """
    tokens: list[str] = []
    for text in options:
        if not text:
            continue
        try:
            tokens.extend(shlex.split(text))
        except ValueError:
            tokens.extend(text.split())
    return tokens


def _size_option(text: str) -> int | None:
    match = _SIZE_OPTION.match(text)
    if match is None:
        return None
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    return int(match.group(1)) * scale[match.group(2).lower()]


def heap_sizing_from_options(*options: str | None) -> HeapSizing:
    """How the heap maximum is set by these options: the one a recommendation must edit.

    ``-Xmx`` / ``-XX:MaxHeapSize`` win over ``-XX:MaxRAMPercentage`` (the JVM ignores the
    percentage when the size is explicit); ``MaxRAMFraction`` and ``MaxRAM`` count as
    ram-percentage style; nothing → ``default`` (ergonomics: 25 % of the container limit).
    Pass ``JAVA_TOOL_OPTIONS`` first and the command line after, as the JVM reads them.
    """
    explicit = ram = False
    for token in option_tokens(*options):
        if token.startswith("-Xmx") or token.startswith("-XX:MaxHeapSize="):
            explicit = True
        elif token.startswith(("-XX:MaxRAMPercentage=", "-XX:MaxRAMFraction=", "-XX:MaxRAM=")):
            ram = True
    if explicit:
        return "xmx"
    return "ram-percentage" if ram else "default"


def _sizing_from_origins(flags: Mapping[str, FlagValue]) -> HeapSizing | None:
    """The same answer from PrintFlagsFinal origins, when no options string is known."""

    def set_by_user(name: str) -> bool | None:
        flag = flags.get(name)
        if flag is None or flag.origin is None:
            return None
        return flag.origin.strip() in {"command line", "environment", "config file"}

    heap, percentage = set_by_user("MaxHeapSize"), set_by_user("MaxRAMPercentage")
    if heap is None and percentage is None:
        return None
    if heap:
        return "xmx"
    return "ram-percentage" if percentage else "default"


def collector_from_flags(flags: Mapping[str, FlagValue]) -> CollectorName | None:
    """The collector a ``Use...GC`` flag selects (``other`` for Epsilon and CMS)."""
    for name, collector in _COLLECTOR_FLAGS:
        flag = flags.get(name)
        if flag is not None and flag.value == "true":
            return collector
    return None


def _int_flag(flags: Mapping[str, FlagValue], name: str) -> int | None:
    flag = flags.get(name)
    if flag is None:
        return None
    try:
        return int(flag.value)
    except ValueError:
        return None


def _bounded(value: int | None, low: int, high: int = MAX_SAFE_INTEGER) -> int | None:
    return value if value is not None and low <= value <= high else None


def flags_object(
    flags: Mapping[str, FlagValue],
    *,
    options: Sequence[str | None] = (),
    init: GcLogInit | None = None,
) -> dict[str, Any]:
    """The jvm-sample ``flags`` object from parsed flags, the options and the GC-log init.

    Flags win; the GC log fills what they lack (heap max, collector, the processors the
    JVM detected). Values the contract cannot carry become None: MaxMetaspaceSize and
    MaxDirectMemorySize at their "unlimited/unset" defaults, ActiveProcessorCount -1 (not
    pinned: the detected count is reported instead). ThreadStackSize is printed in KiB.
    """
    max_heap = _bounded(_int_flag(flags, "MaxHeapSize"), 1)
    percentage_flag = flags.get("MaxRAMPercentage")
    try:
        percentage = float(percentage_flag.value) if percentage_flag is not None else None
    except ValueError:
        percentage = None
    if percentage is not None and not 0 <= percentage <= 100:
        percentage = None
    processors = _bounded(_int_flag(flags, "ActiveProcessorCount"), 1, 100_000)
    stack_kib = _int_flag(flags, "ThreadStackSize")
    present = [text for text in options if text]
    if present:
        sizing: HeapSizing | None = heap_sizing_from_options(*present)
    else:
        sizing = _sizing_from_origins(flags)
    if init is not None:
        max_heap = max_heap if max_heap is not None else init.heap_max_bytes
        if processors is None:
            processors = _bounded(init.cpus_available, 1, 100_000)
    return {
        "max_heap_bytes": max_heap,
        "initial_heap_bytes": _bounded(_int_flag(flags, "InitialHeapSize"), 0),
        "max_ram_percentage": percentage,
        "heap_sizing": sizing,
        "active_processor_count": processors,
        "parallel_gc_threads": _bounded(_int_flag(flags, "ParallelGCThreads"), 0, 100_000),
        "thread_stack_size_bytes": _bounded(None if stack_kib is None else stack_kib * 1024, 0),
        "max_metaspace_bytes": _bounded(_int_flag(flags, "MaxMetaspaceSize"), 1),
        "max_direct_memory_bytes": _bounded(_int_flag(flags, "MaxDirectMemorySize"), 1),
        "collector": collector_from_flags(flags) or (init.collector if init is not None else None),
    }


def _run(command: Sequence[str], *, timeout: float, what: str) -> str:
    try:
        done = subprocess.run(
            list(command), capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise CollectorError(f"{what}: could not run {command[0]!r}: {error}") from error
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise CollectorError(f"{what}: {command[0]} exited with {done.returncode}: {detail[0]}")
    return done.stdout + done.stderr


def read_flags_final(
    options: str | Sequence[str] = (),
    *,
    java: str = "java",
    java_tool_options: str | None = None,
    timeout: float = _DEFAULT_TIMEOUT_SECONDS,
) -> dict[str, FlagValue]:
    """Run ``java <options> -XX:+PrintFlagsFinal -version`` and parse the table.

    ``java_tool_options`` is passed as options before ``options`` (as the JVM would read
    the environment variable), not through the environment, so the agent's own environment
    cannot leak in. Raises CollectorError when java is missing, fails or times out.
    """
    tokens = option_tokens(options) if isinstance(options, str) else list(options)
    command = [java, *option_tokens(java_tool_options), *tokens]
    command += ["-XX:+PrintFlagsFinal", "-version"]
    text = _run(command, timeout=timeout, what="PrintFlagsFinal")
    flags = parse_flags_text(text)
    if "MaxHeapSize" not in flags:
        raise CollectorError(f"PrintFlagsFinal: no flag table in the output of {command}")
    return flags


def read_vm_flags(
    pid: int, *, jcmd: str = "jcmd", timeout: float = _DEFAULT_TIMEOUT_SECONDS
) -> dict[str, FlagValue]:
    """``jcmd <pid> VM.flags -all`` of a running JVM, parsed (with each flag's origin)."""
    text = _run([jcmd, str(pid), "VM.flags", "-all"], timeout=timeout, what="jcmd VM.flags")
    flags = parse_flags_text(text)
    if "MaxHeapSize" not in flags:
        raise CollectorError(f"jcmd VM.flags: no flags for pid {pid}: {text.strip()[:200]}")
    return flags


def read_vm_command_line(
    pid: int, *, jcmd: str = "jcmd", timeout: float = _DEFAULT_TIMEOUT_SECONDS
) -> str | None:
    """The ``jvm_args`` of a running JVM (``jcmd <pid> VM.command_line``), or None.

    Why: with a pid but no configured options string, this is the options string as seen.
    """
    text = _run([jcmd, str(pid), "VM.command_line"], timeout=timeout, what="jcmd command_line")
    for line in text.splitlines():
        if line.startswith("jvm_args:"):
            return line[len("jvm_args:") :].strip() or None
    return None
