"""A stand-in workload with known needs: burns a share of one core, holds memory.

Run as ``python -m pipeline.demo.burner --cores 0.25 --mib 160``. It touches every page
of its buffer so the memory is really resident, then alternates busy and idle slices
of 100 ms so its CPU use is the requested share of a core without being throttled.
"""

from __future__ import annotations

import argparse
import time

SLICE_SECONDS = 0.1


def hold_memory(mib: int) -> bytearray:
    """Allocate ``mib`` MiB and write to every page so it counts as resident."""
    buffer = bytearray(mib * 1024 * 1024)
    for offset in range(0, len(buffer), 4096):
        buffer[offset] = 1
    return buffer


def burn(cores: float, duration_seconds: float | None) -> None:
    """Busy-loop ``cores`` of each slice and sleep the rest, until ``duration``."""
    started = time.monotonic()
    while duration_seconds is None or time.monotonic() - started < duration_seconds:
        slice_start = time.monotonic()
        busy_until = slice_start + SLICE_SECONDS * cores
        while time.monotonic() < busy_until:
            pass
        rest = slice_start + SLICE_SECONDS - time.monotonic()
        if rest > 0:
            time.sleep(rest)


def main() -> None:
    """Parse the flags, hold the memory, burn until killed."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cores", type=float, default=0.25, help="share of one core, 0..1")
    parser.add_argument("--mib", type=int, default=160, help="memory to hold, MiB")
    parser.add_argument("--duration", type=float, default=None, help="seconds (default: forever)")
    args = parser.parse_args()
    if not 0 < args.cores <= 1:
        parser.error("--cores must be in (0, 1]")
    held = hold_memory(args.mib)
    print("ready", flush=True)
    burn(args.cores, args.duration)
    del held


if __name__ == "__main__":
    main()
