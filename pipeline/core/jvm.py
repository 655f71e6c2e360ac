"""JVM full-stack sizing: the heap, everything beside it, and the container limit, together.

Shrinking a container's memory limit without adjusting the Java heap causes GC storms or
OOM kills; growing the heap without the limit does too. This module holds the JVM
knowledge the correlation rules in :mod:`pipeline.core.sizing` use: how much memory a
JVM needs beyond its heap, how the heap is sized from the live set, how the JVM's own
ergonomics react to a new limit, and how to say all of that as a ready-to-paste
``JAVA_TOOL_OPTIONS`` value. Everything is a pure function of a
:class:`~pipeline.core.window.JvmState`, the profile and the values in force.

Non-heap defaults (used only where the JVM agent did not measure the part; every
estimate says which parts are defaults):

- metaspace :data:`DEFAULT_METASPACE_BYTES` = 128 MiB. ``MaxMetaspaceSize`` is unlimited by
  default, so the JDK offers no bound; a framework service (Spring Boot and the like)
  uses roughly 60-120 MiB of class metadata, small services 10-40 MiB.
- code cache :data:`DEFAULT_CODE_CACHE_BYTES` = 48 MiB. ``ReservedCodeCacheSize`` defaults
  to 240 MiB with tiered compilation (the default since JDK 8) and to 48 MiB without it;
  the reservation is address space, only compiled code is resident, and typical
  services use well under 48 MiB, so the untiered default is the estimate.
- thread stacks :data:`DEFAULT_THREAD_STACK_BYTES` = 1 MiB per thread: ``ThreadStackSize``
  (``-Xss``) defaults to 1024 KiB on Linux x86-64 (2 MiB on Linux AArch64, which the
  agent reports as the flag). ``ThreadStackSize=0`` means the system default, taken as
  :data:`SYSTEM_DEFAULT_THREAD_STACK_BYTES` = 8 MiB (glibc uses ``ulimit -s``, usually
  8 MiB). Stacks are committed lazily, so a whole stack per thread overstates, safely.
- threads :data:`DEFAULT_THREAD_COUNT` = 100 when not counted: the JVM's own threads (GC
  workers, compilers, signal and reference handlers: ~20-40) plus a modest pool. The
  Cloud Foundry / Paketo memory calculator assumes 250 for servlet containers (Tomcat's
  200 workers); a measured count always replaces this.
- direct buffers: the measured peak, else an explicit ``MaxDirectMemorySize``, else
  :data:`DEFAULT_DIRECT_MEMORY_BYTES` = 10 MiB (the Paketo memory calculator's default).
  The JDK default bound equals the max heap, which is no estimate at all.

The profile margin (max(``jvm_memory_margin_bytes``, ``jvm_memory_margin_fraction`` x
(heap + non-heap)); balanced max(64 MiB, 10%)) covers what is not itemised: GC data
structures (G1 remembered sets and mark bitmaps grow with the heap), symbol and string
tables, malloc arenas, the heap's alignment to GC regions.

Ergonomics facts used (HotSpot, JDK 11-21, container support on):

- the JVM's memory is the container limit; its processors are ``ceil(cpu limit)``
  unless ``-XX:ActiveProcessorCount`` pins them;
- a "server class machine" has ≥ 2 processors and ≥ 2 GiB - 256 MiB = 1792 MiB; below
  either, the default collector is Serial instead of G1;
- without ``-Xmx`` the max heap is ``MaxRAMPercentage`` (default 25%) of the limit, but
  when ``MinRAMPercentage`` (default 50%) of the limit is below the built-in default max
  heap (96 MiB scaled for 64-bit = 124.8 MiB) the JVM takes ``MinRAMPercentage`` instead;
- ``JAVA_TOOL_OPTIONS`` is read before the command line, so a command-line ``-Xmx``
  overrides the value produced here (the agent's flags show what is really in force).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Final

from pipeline.core.profiles import Profile
from pipeline.core.quantity import MIB, format_memory, round_up_memory
from pipeline.core.window import Collector, HeapSizing, JvmState

DEFAULT_METASPACE_BYTES: Final = 128 * MIB
DEFAULT_CODE_CACHE_BYTES: Final = 48 * MIB
DEFAULT_THREAD_STACK_BYTES: Final = 1 * MIB
SYSTEM_DEFAULT_THREAD_STACK_BYTES: Final = 8 * MIB
DEFAULT_THREAD_COUNT: Final = 100
DEFAULT_DIRECT_MEMORY_BYTES: Final = 10 * MIB

DEFAULT_MAX_RAM_PERCENTAGE: Final = 25.0
DEFAULT_MIN_RAM_PERCENTAGE: Final = 50.0
BUILTIN_DEFAULT_MAX_HEAP_BYTES: Final = 96 * MIB * 13 // 10
"""HotSpot's built-in MaxHeapSize default (``ScaleForWordSize(96M)`` on 64-bit)."""

SERVER_CLASS_MIN_PROCESSORS: Final = 2
SERVER_CLASS_MIN_MEMORY_BYTES: Final = 2048 * MIB - 256 * MIB
"""1792 MiB: below it (or below 2 processors) the JVM defaults to SerialGC, not G1."""

_COLLECTOR_FLAGS: Final[dict[str, str]] = {
    "G1": "-XX:+UseG1GC",
    "Parallel": "-XX:+UseParallelGC",
    "Serial": "-XX:+UseSerialGC",
    "ZGC": "-XX:+UseZGC",
    "Shenandoah": "-XX:+UseShenandoahGC",
}
_ERGONOMIC_COLLECTORS: Final = ("G1", "Serial")
"""The only collectors HotSpot picks by itself (JDK 9+); the others were chosen explicitly."""

_MAX_HEAP_OPTION: Final = re.compile(r"^(?:-Xmx|-XX:MaxHeapSize=)")
_INITIAL_HEAP_OPTION: Final = re.compile(r"^(?:-Xms|-XX:InitialHeapSize=)(?P<size>.*)$")
_MAX_RAM_PERCENTAGE_OPTION: Final = re.compile(r"^-XX:MaxRAMPercentage=")
_MIN_RAM_PERCENTAGE_OPTION: Final = re.compile(r"^-XX:MinRAMPercentage=(?P<value>.*)$")
_INITIAL_RAM_PERCENTAGE_OPTION: Final = re.compile(r"^-XX:InitialRAMPercentage=(?P<value>.*)$")
_COLLECTOR_OPTION: Final = re.compile(
    r"^-XX:\+Use(?:G1|Parallel|ParallelOld|Serial|Z|Shenandoah|ConcMarkSweep|Epsilon)GC$"
)
_PROCESSORS_OPTION: Final = re.compile(r"^-XX:ActiveProcessorCount=(?P<count>\d+)$")
_JVM_SIZE: Final = re.compile(r"^(?P<number>\d+)(?P<unit>[kKmMgGtT]?)$")
_JVM_SIZE_UNITS: Final[dict[str, int]] = {"": 1, "k": 1024, "m": MIB, "g": 1024 * MIB}
_JVM_SIZE_UNITS["t"] = 1024 * _JVM_SIZE_UNITS["g"]

TIMES: Final = "\N{MULTIPLICATION SIGN}"


# -- non-heap --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NonHeapEstimate:
    """Memory a JVM uses outside its heap, part by part; ``defaults`` names estimated parts.

    Why itemised: the memory-limit rule's sentence shows each part, so a reviewer can
    see which numbers were measured and which were the documented defaults.
    """

    metaspace_bytes: int
    code_cache_bytes: int
    thread_count: int
    thread_stack_bytes: int
    direct_memory_bytes: int
    defaults: tuple[str, ...]

    @property
    def thread_stacks_bytes(self) -> int:
        """All thread stacks: threads x stack size."""
        return self.thread_count * self.thread_stack_bytes

    @property
    def total_bytes(self) -> int:
        """Metaspace + code cache + thread stacks + direct buffers."""
        return (
            self.metaspace_bytes
            + self.code_cache_bytes
            + self.thread_stacks_bytes
            + self.direct_memory_bytes
        )

    def describe(self) -> str:
        """The parts in words, e.g. ``metaspace 80.0Mi, code cache 48.0Mi, ...``."""
        text = (
            f"metaspace {_mebibytes(self.metaspace_bytes)}, code cache "
            f"{_mebibytes(self.code_cache_bytes)}, {self.thread_count:,} threads {TIMES} "
            f"{_mebibytes(self.thread_stack_bytes)} stacks = "
            f"{_mebibytes(self.thread_stacks_bytes)}, direct buffers "
            f"{_mebibytes(self.direct_memory_bytes)}"
        )
        if self.defaults:
            text += f"; defaults for {', '.join(self.defaults)}"
        return text

    def to_evidence(self) -> dict[str, object]:
        """The ``evidence.jvm.non_heap`` object of the recommendation contract."""
        return {
            "metaspace_bytes": self.metaspace_bytes,
            "code_cache_bytes": self.code_cache_bytes,
            "thread_count": self.thread_count,
            "thread_stack_bytes": self.thread_stack_bytes,
            "direct_memory_bytes": self.direct_memory_bytes,
            "total_bytes": self.total_bytes,
            "defaults": list(self.defaults),
        }


def estimate_non_heap(jvm: JvmState | None) -> NonHeapEstimate:
    """Non-heap memory from the peaks in ``jvm`` (the history's), else documented defaults.

    See the module docstring for each default and why it was chosen.
    """
    defaults: list[str] = []

    def measured_or(value: int | None, default: int, name: str) -> int:
        if value is None:
            defaults.append(name)
            return default
        return value

    metaspace = measured_or(
        None if jvm is None else jvm.metaspace_peak_bytes, DEFAULT_METASPACE_BYTES, "metaspace"
    )
    code_cache = measured_or(
        None if jvm is None else jvm.code_cache_peak_bytes, DEFAULT_CODE_CACHE_BYTES, "code cache"
    )
    threads = measured_or(
        None if jvm is None else jvm.thread_count_peak, DEFAULT_THREAD_COUNT, "thread count"
    )
    stack_flag = None if jvm is None else jvm.thread_stack_size_bytes
    if stack_flag == 0:
        stack_flag = SYSTEM_DEFAULT_THREAD_STACK_BYTES
    stack = measured_or(stack_flag, DEFAULT_THREAD_STACK_BYTES, "thread stack size")
    direct: int | None = None
    if jvm is not None:
        direct = jvm.direct_memory_peak_bytes
        if direct is None and jvm.max_direct_memory_bytes:  # 0 means "the default"
            direct = jvm.max_direct_memory_bytes
    direct = measured_or(direct, DEFAULT_DIRECT_MEMORY_BYTES, "direct buffers")
    return NonHeapEstimate(
        metaspace_bytes=metaspace,
        code_cache_bytes=code_cache,
        thread_count=threads,
        thread_stack_bytes=stack,
        direct_memory_bytes=direct,
        defaults=tuple(defaults),
    )


def jvm_margin_bytes(profile: Profile, heap_bytes: int, non_heap_bytes: int) -> int:
    """The profile's margin above heap + non-heap: max(bytes, fraction x (heap + non-heap))."""
    return max(
        profile.jvm_memory_margin_bytes,
        math.ceil(profile.jvm_memory_margin_fraction * (heap_bytes + non_heap_bytes)),
    )


def jvm_memory_needed_bytes(profile: Profile, heap_bytes: int, non_heap: NonHeapEstimate) -> int:
    """Smallest container memory limit for a JVM, in whole MiB: heap + non-heap + margin,
    and at least heap / ``profile.jvm_heap_max_share_of_limit``."""
    total = non_heap.total_bytes
    return round_up_memory(
        max(
            heap_bytes + total + jvm_margin_bytes(profile, heap_bytes, total),
            heap_bytes / profile.jvm_heap_max_share_of_limit,
        )
    )


# -- the heap --------------------------------------------------------------------------


def ergonomic_max_heap_bytes(memory_limit_bytes: int, max_ram_percentage: float) -> int:
    """The max heap HotSpot picks from a container limit when ``-Xmx`` is not set.

    ``MaxRAMPercentage`` of the limit, except for small limits, where the JVM uses
    ``MinRAMPercentage`` (default 50%) instead (see the module docstring).
    """
    small = memory_limit_bytes * DEFAULT_MIN_RAM_PERCENTAGE / 100
    if small < BUILTIN_DEFAULT_MAX_HEAP_BYTES:
        return max(1, int(small))
    return max(int(memory_limit_bytes * max_ram_percentage / 100), BUILTIN_DEFAULT_MAX_HEAP_BYTES)


def heap_in_force_bytes(
    jvm: JvmState | None, current_heap_bytes: int | None, memory_limit_bytes: int | None
) -> int | None:
    """The max heap the JVM runs with now, from the best source available.

    In order: the JVM's MaxHeapSize flag, the max heap it reports, the spec's value,
    and the JVM's own ergonomics applied to the memory limit (MaxRAMPercentage, or the
    default 25%). None when none of these is known.
    """
    if jvm is not None:
        if jvm.max_heap_bytes is not None:
            return jvm.max_heap_bytes
        if jvm.heap_max_bytes is not None:
            return jvm.heap_max_bytes
    if current_heap_bytes is not None:
        return current_heap_bytes
    if memory_limit_bytes is None:
        return None
    percentage = DEFAULT_MAX_RAM_PERCENTAGE
    if jvm is not None and jvm.max_ram_percentage is not None:
        percentage = jvm.max_ram_percentage
    return ergonomic_max_heap_bytes(memory_limit_bytes, percentage)


def heap_sizing_in_use(jvm: JvmState | None, has_spec_heap: bool) -> HeapSizing:
    """How the workload sets its heap: the agent's flag, else read from its options.

    An explicit -Xmx in the spec (``has_spec_heap``) or an unknown way means ``"xmx"``:
    an explicit heap size that does not depend on how the JVM reads the limit.
    """
    if jvm is not None:
        if jvm.heap_sizing is not None:
            return jvm.heap_sizing
        if jvm.jvm_options is not None:
            tokens = split_java_options(jvm.jvm_options)
            if any(_MAX_HEAP_OPTION.match(token) for token in tokens):
                return "xmx"
            if any(_MAX_RAM_PERCENTAGE_OPTION.match(token) for token in tokens):
                return "ram-percentage"
            if not has_spec_heap:
                return "default"
    return "xmx"


@dataclass(frozen=True, slots=True)
class HeapDecision:
    """The heap the rules chose and the rule that says why (id, sentence)."""

    heap_bytes: int
    in_force_bytes: int | None
    rule_id: str
    text: str


def decide_heap(
    jvm: JvmState | None,
    profile: Profile,
    in_force: int | None,
    *,
    oom_cooldown_until: float | None = None,
) -> HeapDecision:
    """Size the max heap from the live set, never shrinking it under GC pressure.

    - Pressure = GC overhead p95 above ``gc_overhead_ceiling`` or the live set above
      ``heap_live_set_max_share`` of the heap in force. Under pressure the heap is not
      decreased; it grows to max(in force x (1 + ``gc_pressure_heap_raise``) when the
      GC overhead is high, live set / ``heap_live_set_target_share``, in force)
      (rule ``jvm-no-heap-decrease-under-gc-pressure``).
    - Otherwise, with both a live set and a GC overhead measured, the heap is live set /
      ``heap_live_set_target_share`` (rule ``jvm-heap-live-set``): it may go down.
    - Without them the heap in force is kept (``jvm-heap-kept``), or, if even that is
      unknown, the profile's heap floor is proposed (``jvm-heap-floor``).

    - Within the cool-down after an OOM kill (``oom_cooldown_until`` set) the heap is not
      decreased either (``jvm-no-heap-decrease-after-oom``): a JVM killed while it was
      still growing shows only part of its live set, and the memory it needs comes from
      a larger limit, not a smaller heap.

    Every result is at least ``jvm_heap_floor_bytes`` and a whole number of MiB.
    """
    decision = _decide_heap(jvm, profile, in_force)
    if (
        oom_cooldown_until is not None
        and in_force is not None
        and decision.heap_bytes < round_up_memory(in_force)
    ):
        kept = round_up_memory(in_force)
        return HeapDecision(
            kept,
            in_force,
            "jvm-no-heap-decrease-after-oom",
            f"JVM max heap kept at {format_memory(kept)} instead of "
            f"{format_memory(decision.heap_bytes)}: "
            "the container was OOM-killed within the cool-down, when the live set seen may be "
            "only part of what the JVM needs; the limit grows to fit the heap instead.",
        )
    return decision


def _decide_heap(jvm: JvmState | None, profile: Profile, in_force: int | None) -> HeapDecision:
    floor = round_up_memory(profile.jvm_heap_floor_bytes)
    live = None if jvm is None else jvm.live_set_peak_bytes
    overhead = None if jvm is None else jvm.gc_overhead_percentile(0.95)
    target = None
    if live is not None:
        target = max(floor, round_up_memory(live / profile.heap_live_set_target_share))
    ceiling = profile.gc_overhead_ceiling
    gc_pressure = overhead is not None and overhead > ceiling
    live_pressure = (
        live is not None
        and in_force is not None
        and live > profile.heap_live_set_max_share * in_force
    )
    if gc_pressure or live_pressure:
        reasons = []
        candidates = [floor]
        parts = []
        if in_force is not None:
            candidates.append(round_up_memory(in_force))
        if gc_pressure:
            assert overhead is not None
            reasons.append(f"GC overhead p95 {overhead:.1%} > ceiling {ceiling:.1%}")
            if in_force is not None:
                raised = round_up_memory(in_force * (1 + profile.gc_pressure_heap_raise))
                candidates.append(raised)
                parts.append(
                    f"{_mebibytes(in_force)} {TIMES} {1 + profile.gc_pressure_heap_raise:.2f}"
                )
        if live_pressure:
            assert live is not None
            assert in_force is not None
            reasons.append(
                f"live set {_mebibytes(live)} > {profile.heap_live_set_max_share:.0%} of the "
                f"{_mebibytes(in_force)} heap"
            )
        if target is not None:
            assert live is not None
            candidates.append(target)
            parts.append(f"live set {_mebibytes(live)} / {profile.heap_live_set_target_share:.2f}")
        heap = max(candidates)
        from_text = "" if in_force is None else f" from {_mebibytes(in_force)}"
        basis = f" = max({', '.join(parts)})" if parts else ""
        return HeapDecision(
            heap,
            in_force,
            "jvm-no-heap-decrease-under-gc-pressure",
            f"No heap decrease while {' and '.join(reasons)}: JVM max heap"
            f"{from_text} to {format_memory(heap)}{basis}.",
        )
    if target is not None and overhead is not None:
        assert live is not None
        change = "" if in_force is None else f", was {_mebibytes(in_force)}"
        floor_text = " (the profile's heap floor)" if target == floor else ""
        return HeapDecision(
            target,
            in_force,
            "jvm-heap-live-set",
            f"JVM max heap = live-set peak {_mebibytes(live)} / "
            f"{profile.heap_live_set_target_share:.2f} = {format_memory(target)}{floor_text}"
            f"{change}; GC overhead p95 {overhead:.1%} ≤ ceiling {ceiling:.1%}.",
        )
    missing = " and ".join(
        name for name, value in (("a live set", live), ("a GC overhead", overhead)) if value is None
    )
    if in_force is not None:
        heap = max(floor, round_up_memory(in_force))
        return HeapDecision(
            heap,
            in_force,
            "jvm-heap-kept",
            f"JVM max heap kept at {format_memory(heap)}: without {missing} measured it is "
            "not resized.",
        )
    return HeapDecision(
        floor,
        None,
        "jvm-heap-floor",
        f"JVM max heap unknown and without {missing} measured: the profile's heap floor "
        f"{format_memory(floor)} is proposed.",
    )


def ram_percentage_for(heap_bytes: int, memory_limit_bytes: int) -> tuple[float, int]:
    """MaxRAMPercentage (one decimal, rounded up) that gives at least ``heap_bytes`` of
    ``memory_limit_bytes``, and the heap it gives.

    Rounded up so the heap never falls below the one the rules chose; the caller makes
    the limit cover the (slightly larger) result.
    """
    tenths = min(1000, -(-heap_bytes * 1000 // memory_limit_bytes))
    return tenths / 10, memory_limit_bytes * tenths // 1000


# -- ergonomics ------------------------------------------------------------------------


def is_server_class(processors: int | None, memory_bytes: int) -> bool:
    """HotSpot's "server class machine" test; unknown processors count as ≥ 2 (a host)."""
    enough_processors = processors is None or processors >= SERVER_CLASS_MIN_PROCESSORS
    return enough_processors and memory_bytes >= SERVER_CLASS_MIN_MEMORY_BYTES


def default_collector(processors: int | None, memory_bytes: int) -> Collector:
    """The collector HotSpot (JDK 9+) picks when none is chosen: G1, or Serial when small."""
    return "G1" if is_server_class(processors, memory_bytes) else "Serial"


def active_processors_for(cpu_limit_cores: float | None) -> int | None:
    """Processors a containerised JVM sees for a CPU limit: ceil(limit); None if unlimited."""
    if cpu_limit_cores is None:
        return None
    return max(1, math.ceil(round(cpu_limit_cores, 6)))


@dataclass(frozen=True, slots=True)
class ErgonomicsCheck:
    """What a change does to the JVM's ergonomics, and the pins that keep it as it is."""

    pin_collector: Collector | None
    pin_processors: int | None
    text: str | None


def check_ergonomics(
    jvm: JvmState | None,
    *,
    cpu_limit_before: float | None,
    cpu_limit_after: float | None,
    memory_before: int | None,
    memory_after: int,
) -> ErgonomicsCheck:
    """Flag a change that crosses the JVM's ergonomics thresholds; pin what would change.

    ActiveProcessorCount follows ``ceil(cpu limit)``: when that changes and the options do
    not pin it, it is pinned at the value in force. When the server-class test (≥ 2
    processors, ≥ 1792 MiB) flips, the default collector would switch between G1 and
    Serial: the collector in use is pinned unless the options already choose one (or it
    is one HotSpot never picks by itself). ``text`` is None when nothing is crossed.
    """
    options = split_java_options(jvm.jvm_options or "") if jvm is not None else []
    pinned_processors = _last_int(options, _PROCESSORS_OPTION, "count")
    collector_pinned = any(_COLLECTOR_OPTION.match(token) for token in options)
    in_force_processors = None if jvm is None else jvm.active_processor_count
    sentences: list[str] = []
    pin_processors = None
    before: int | None
    after: int | None
    if pinned_processors is not None:
        before = after = pinned_processors
    else:
        before = (
            in_force_processors
            if in_force_processors is not None
            else active_processors_for(cpu_limit_before)
        )
        after = before
        if cpu_limit_after is not None and cpu_limit_after != cpu_limit_before:
            after = active_processors_for(cpu_limit_after)
        if before is not None and after is not None and after != before:
            pin_processors = before
            sentences.append(
                f"ActiveProcessorCount would change from {before} to {after} with the CPU "
                f"limit; pinned with -XX:ActiveProcessorCount={before}."
            )
            after = before
    pin_collector: Collector | None = None
    if memory_before is not None:
        was = is_server_class(before, memory_before)
        will = is_server_class(after, memory_after)
        if was != will:
            in_use: Collector = (
                jvm.collector
                if jvm is not None and jvm.collector is not None
                else default_collector(before, memory_before)
            )
            crossing = (
                f"The memory limit {format_memory(memory_before)} → {format_memory(memory_after)}"
                f" with {after if after is not None else 'the host'} processors crosses the "
                f"JVM's server-class threshold ({SERVER_CLASS_MIN_PROCESSORS} processors, "
                f"{format_memory(SERVER_CLASS_MIN_MEMORY_BYTES)}): the default collector "
                f"would switch from {default_collector(before, memory_before)} to "
                f"{default_collector(after, memory_after)}"
            )
            if collector_pinned:
                sentences.append(f"{crossing}; the options already choose the collector.")
            elif in_use not in _ERGONOMIC_COLLECTORS:
                sentences.append(f"{crossing}; {in_use} was chosen explicitly, so it stays.")
            else:
                pin_collector = in_use
                sentences.append(f"{crossing}; pinned with {_COLLECTOR_FLAGS[in_use]}.")
    return ErgonomicsCheck(pin_collector, pin_processors, " ".join(sentences) or None)


# -- JAVA_TOOL_OPTIONS -----------------------------------------------------------------


def split_java_options(text: str) -> list[str]:
    """Split a ``JAVA_TOOL_OPTIONS`` value into options as the JVM does (whitespace, quotes
    kept together); tokens stay verbatim so joining them back changes nothing else."""
    tokens: list[str] = []
    current: list[str] = []
    quote: str | None = None
    for char in text:
        if quote is not None:
            current.append(char)
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
            current.append(char)
        elif char.isspace():
            if current:
                tokens.append("".join(current))
                current = []
        else:
            current.append(char)
    if current:
        tokens.append("".join(current))
    return tokens


def parse_jvm_size(text: str) -> int | None:
    """A JVM size argument (``512m``, ``2G``, ``1048576``) in bytes; None if not one."""
    match = _JVM_SIZE.match(text)
    if match is None:
        return None
    return int(match["number"]) * _JVM_SIZE_UNITS[match["unit"].lower()]


def max_heap_option(heap_bytes: int) -> str:
    """``-Xmx`` for a heap, in whole MiB (``-Xmx768m``) or GiB when exact (``-Xmx2g``)."""
    mebibytes = -(-heap_bytes // MIB)
    if mebibytes % 1024 == 0:
        return f"-Xmx{mebibytes // 1024}g"
    return f"-Xmx{mebibytes}m"


@dataclass(frozen=True, slots=True)
class JavaToolOptions:
    """The new ``JAVA_TOOL_OPTIONS`` value, the options that changed, and what was there."""

    value: str
    changed: tuple[str, ...]
    previous: str | None

    def to_dict(self) -> dict[str, object]:
        """The ``jvm_options`` object of the recommendation contract."""
        return {
            "java_tool_options": self.value,
            "changed": list(self.changed),
            "previous": self.previous,
        }


def rewrite_java_tool_options(
    previous: str | None,
    *,
    heap_sizing: HeapSizing,
    heap_bytes: int,
    ram_percentage: float | None,
    memory_limit_bytes: int,
    heap_in_force_bytes: int | None,
    pin_collector: Collector | None = None,
    pin_processors: int | None = None,
) -> JavaToolOptions:
    """Set the heap (and any ergonomics pins) in ``previous``, keeping every other option.

    ``xmx`` sizing replaces ``-Xmx`` / ``-XX:MaxHeapSize`` with ``-Xmx<heap>``; an initial
    heap (``-Xms``) that equalled the old max follows the new one, and one above the new
    max is lowered to it (the JVM refuses to start otherwise). ``ram-percentage`` and
    ``default`` sizing set ``-XX:MaxRAMPercentage``; ``-XX:MinRAMPercentage`` is set to the
    same value when the limit is small enough for the JVM to use it instead (see the
    module docstring), and an ``-XX:InitialRAMPercentage`` above it is lowered to it.
    """
    tokens = split_java_options(previous or "")
    before = list(tokens)
    if heap_sizing == "xmx":
        xmx = max_heap_option(heap_bytes)
        _set_option(tokens, _MAX_HEAP_OPTION, xmx)
        for index, token in enumerate(tokens):
            match = _INITIAL_HEAP_OPTION.match(token)
            size = None if match is None else parse_jvm_size(match["size"])
            if size is not None and (size > heap_bytes or size == heap_in_force_bytes):
                tokens[index] = "-Xms" + xmx.removeprefix("-Xmx")
    else:
        assert ram_percentage is not None
        value = f"{ram_percentage:.1f}"
        _set_option(tokens, _MAX_RAM_PERCENTAGE_OPTION, f"-XX:MaxRAMPercentage={value}")
        minimum = _last_float(tokens, _MIN_RAM_PERCENTAGE_OPTION)
        minimum = DEFAULT_MIN_RAM_PERCENTAGE if minimum is None else minimum
        if memory_limit_bytes * minimum / 100 < BUILTIN_DEFAULT_MAX_HEAP_BYTES:
            _set_option(tokens, _MIN_RAM_PERCENTAGE_OPTION, f"-XX:MinRAMPercentage={value}")
        initial = _last_float(tokens, _INITIAL_RAM_PERCENTAGE_OPTION)
        if initial is not None and initial > ram_percentage:
            _set_option(tokens, _INITIAL_RAM_PERCENTAGE_OPTION, f"-XX:InitialRAMPercentage={value}")
    if pin_collector is not None:
        _set_option(tokens, _COLLECTOR_OPTION, _COLLECTOR_FLAGS[pin_collector])
    if pin_processors is not None:
        _set_option(tokens, _PROCESSORS_OPTION, f"-XX:ActiveProcessorCount={pin_processors}")
    changed = tuple(token for token in tokens if token not in before)
    return JavaToolOptions(" ".join(tokens), changed, previous)


def _set_option(tokens: list[str], pattern: re.Pattern[str], option: str) -> None:
    # Replace the first option the pattern matches in place, drop later ones (the JVM
    # takes the last, so leaving them would override ours); append when there is none.
    positions = [index for index, token in enumerate(tokens) if pattern.match(token)]
    if not positions:
        tokens.append(option)
        return
    tokens[positions[0]] = option
    for index in reversed(positions[1:]):
        del tokens[index]


def _last_int(tokens: list[str], pattern: re.Pattern[str], group: str) -> int | None:
    values = [int(match[group]) for token in tokens if (match := pattern.match(token))]
    return values[-1] if values else None


def _last_float(tokens: list[str], pattern: re.Pattern[str]) -> float | None:
    value = None
    for token in tokens:
        match = pattern.match(token)
        if match is not None:
            try:
                value = float(match["value"])
            except ValueError:
                continue
    return value if value is not None and math.isfinite(value) else None


# -- evidence --------------------------------------------------------------------------


def jvm_evidence(
    jvm: JvmState | None,
    *,
    heap_in_force: int | None,
    heap_sizing: HeapSizing,
    non_heap: NonHeapEstimate,
    margin_bytes: int,
) -> dict[str, object]:
    """The ``evidence.jvm`` object: what the JVM rules rest on."""
    overhead_p95 = None if jvm is None else jvm.gc_overhead_percentile(0.95)
    pause_p99 = None if jvm is None else jvm.gc_pause_percentile_seconds(0.99)
    return {
        "samples": 0 if jvm is None else jvm.sample_count,
        "collector": None if jvm is None else jvm.collector,
        "heap_sizing": heap_sizing,
        "gc_overhead_p95_ratio": None if overhead_p95 is None else round(overhead_p95, 6),
        "gc_overhead_max_ratio": None if jvm is None else jvm.gc_overhead_max,
        "gc_pause_p99_seconds": None if pause_p99 is None else round(pause_p99, 6),
        "gc_pause_max_seconds": None if jvm is None else jvm.gc_pause_max_seconds,
        "live_set_peak_bytes": None if jvm is None else jvm.live_set_peak_bytes,
        "heap_max_bytes": heap_in_force,
        "heap_committed_bytes": None if jvm is None else jvm.heap_committed_bytes,
        "allocation_rate_bytes_per_second": (
            None if jvm is None else jvm.allocation_rate_bytes_per_second
        ),
        "active_processor_count": None if jvm is None else jvm.active_processor_count,
        "non_heap": non_heap.to_evidence(),
        "margin_bytes": margin_bytes,
    }


def _mebibytes(num_bytes: float) -> str:
    return f"{num_bytes / MIB:,.1f}Mi"
