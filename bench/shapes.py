"""Generated workload shapes: the documented traces the quality, state-size and
drift-latency benchmarks run on.

Why generated: real traces (the NAB series) carry CPU only and show few of the shapes
that break right-sizers. Each shape below is deterministic for a seed, sampled every
``interval_seconds`` from ``start``, with multiplicative noise; CPU in cores, memory
(working set) in bytes.

- ``steady``: CPU 0.5 cores ±5%; memory 512 MiB ±1%.
- ``daily``: CPU 0.2..1.0 cores, a sine with a 24 h period (low at 06:00, high at
  18:00 UTC); memory 400..600 MiB in the same phase.
- ``weekly``: the daily cycle on weekdays, 30% of it on days 6 and 7 of each week;
  memory 600 MiB + 300 MiB x the CPU factor.
- ``bursty``: CPU 0.15 cores with bursts of 1..2 cores lasting 5..30 min, one every
  3 h on average; memory 300 MiB, 450 MiB during a burst.
- ``step-up``: 0.4 cores and 400 MiB, both x2 from day 7.
- ``step-down``: 0.8 cores and 800 MiB, both x0.5 from day 7.
- ``leak``: CPU 0.3 cores; memory 300 MiB + 60 MiB a day, never released (no restart).
- ``jvm-gc``: a JVM under GC pressure as its cgroup shows it. CPU 0.6 cores + a
  young-GC spike (+0.8 cores) every second minute + a full GC (2 cores for 2 minutes)
  every 6 h; memory a heap sawtooth 1.1..1.5 GiB (fills in 10 minutes, then collected)
  + 180 MiB non-heap.

The JVM shape is what its container's cgroup shows (CPU, working set): the trace format's
JVM columns (``jvm_heap_used_bytes``, ...) are not read by ``daytwo backtest`` yet
(pipeline/batch.py), so the JVM rules do not take part in this shape's backtest.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Final

from pipeline.core.backtest import ContainerSeries
from pipeline.core.sizing import CurrentResources
from pipeline.core.window import SampleInput

MIB: Final = 1024 * 1024
DAY: Final = 86_400.0
START: Final = 1_704_067_200.0  # 2024-01-01T00:00:00Z, a Monday

SHAPES: Final = (
    "steady",
    "daily",
    "weekly",
    "bursty",
    "step-up",
    "step-down",
    "leak",
    "jvm-gc",
)


@dataclass
class _Burst:
    until: float = -1.0
    level: float = 0.0


def _cycle(t: float) -> float:
    """0..1, lowest at 06:00 UTC and highest at 18:00 UTC."""
    return 0.5 + 0.5 * math.sin(2 * math.pi * ((t - START) % DAY) / DAY - math.pi / 2)


def _weekday_factor(t: float) -> float:
    day = int((t - START) // DAY) % 7
    return 0.3 if day >= 5 else 1.0


def shape_point(
    shape: str, t: float, rng: random.Random, burst: _Burst, interval: float
) -> tuple[float, int]:
    """(CPU cores, working-set bytes) of ``shape`` at ``t`` (see the module table)."""
    elapsed = t - START
    noise = rng.uniform(0.95, 1.05)
    if shape == "steady":
        return 0.5 * noise, int(512 * MIB * rng.uniform(0.99, 1.01))
    if shape == "daily":
        level = _cycle(t)
        return (0.2 + 0.8 * level) * noise, int((400 + 200 * level) * MIB * rng.uniform(0.99, 1.01))
    if shape == "weekly":
        factor = (0.2 + 0.8 * _cycle(t)) * _weekday_factor(t)
        return factor * noise, int((600 + 300 * factor) * MIB * rng.uniform(0.99, 1.01))
    if shape == "bursty":
        if t >= burst.until and rng.random() < interval / (3 * 3600):
            burst.until = t + rng.uniform(300, 1800)
            burst.level = rng.uniform(1.0, 2.0)
        if t < burst.until:
            return burst.level * noise, int(450 * MIB * rng.uniform(0.98, 1.02))
        return 0.15 * noise, int(300 * MIB * rng.uniform(0.99, 1.01))
    if shape in ("step-up", "step-down"):
        base_cpu, base_memory, factor = (0.4, 400, 2.0) if shape == "step-up" else (0.8, 800, 0.5)
        scale = factor if elapsed >= 7 * DAY else 1.0
        return base_cpu * scale * noise, int(base_memory * scale * MIB * rng.uniform(0.99, 1.01))
    if shape == "leak":
        memory = (300 + 60 * elapsed / DAY) * MIB * rng.uniform(0.995, 1.005)
        return 0.3 * noise, int(memory)
    if shape == "jvm-gc":
        cpu = 0.6
        if int(elapsed // 60) % 2 == 0:
            cpu += 0.8  # young collection
        if elapsed % (6 * 3600) < 120:
            cpu = 2.0  # full collection
        heap = 1.1 + 0.4 * ((elapsed % 600) / 600)  # GiB: fills in 10 minutes, collected
        return cpu * noise, int(heap * 1024 * MIB + 180 * MIB)
    raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")


def shape_samples(
    shape: str,
    *,
    days: float,
    interval_seconds: float = 60.0,
    seed: int = 8,
    start: float = START,
) -> list[SampleInput]:
    """``days`` of ``shape`` as samples every ``interval_seconds`` (seeded)."""
    rng = random.Random(f"{shape}-{seed}")
    burst = _Burst()
    count = int(days * DAY / interval_seconds)
    samples = []
    for index in range(count):
        t = start + index * interval_seconds
        cpu, memory = shape_point(shape, t, rng, burst, interval_seconds)
        samples.append(
            SampleInput(
                timestamp=t,
                interval_seconds=interval_seconds,
                cpu_usage_cores=round(max(0.0, cpu), 6),
                memory_working_set_bytes=memory,
            )
        )
    return samples


def cautious_spec(samples: list[SampleInput]) -> CurrentResources:
    """What a cautious human would have set before any right-sizing: CPU request 2x the
    first day's mean (limit 2x the request), memory request = limit = 1.5x the first
    day's peak, rounded up to 64 MiB."""
    first_day = [s for s in samples if s.timestamp < samples[0].timestamp + DAY] or samples
    cpu = 2 * sum(s.cpu_usage_cores for s in first_day) / len(first_day)
    peak = max(s.memory_working_set_bytes or 0 for s in first_day)
    memory = math.ceil(1.5 * peak / (64 * MIB)) * 64 * MIB
    return CurrentResources(
        cpu_request_cores=round(cpu, 3),
        cpu_limit_cores=round(2 * cpu, 3),
        memory_request_bytes=memory,
        memory_limit_bytes=memory,
    )


def generated_set(
    *, days: float, interval_seconds: float = 60.0, seed: int = 8, shapes: tuple[str, ...] = SHAPES
) -> list[ContainerSeries]:
    """One container per shape (workload ``bench/shapes/Deployment/<shape>``)."""
    series = []
    for shape in shapes:
        samples = shape_samples(shape, days=days, interval_seconds=interval_seconds, seed=seed)
        series.append(
            ContainerSeries(
                f"bench/shapes/Deployment/{shape}", "app", samples, cautious_spec(samples)
            )
        )
    return series
