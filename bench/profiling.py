"""Profile summaries the benchmarks write down: where the time of a worker goes.

Why a module: the throughput benchmark profiles a real ``daytwo worker`` process with
py-spy (collapsed stacks) and the in-process :class:`~pipeline.processor.Processor`
with pyinstrument; both are reduced to the same two views so they can be compared:

- *inclusive* share of a fixed list of daytwo functions (the stages of the pipeline),
  plus everything outside the processor (Faust, aiokafka, the event loop);
- *self* time of the hottest functions.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

PY_SPY: Final = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "py-spy"

#: (label, function name, file suffix) of the stages whose inclusive time is reported.
STAGES: Final[tuple[tuple[str, str, str], ...]] = (
    ("Processor.handle (all per-record work)", "handle", "pipeline/processor.py"),
    ("  decode + validate (msgspec)", "decode_container_batch_fast", "schemas/wire.py"),
    ("  columns per container (SampleRun)", "of", "pipeline/core/window.py"),
    ("  ContainerEngine.apply_run", "apply_run", "pipeline/core/engine.py"),
    ("    ContainerWindow.apply_fresh_run", "apply_fresh_run", "pipeline/core/window.py"),
    ("      DriftTracker.update_run", "update_run", "pipeline/core/drift.py"),
    ("      DecayingHistogram.add_run", "add_run", "pipeline/core/histogram.py"),
    ("    ContainerEngine.evaluate (sizing on ticks)", "evaluate", "pipeline/core/engine.py"),
    ("  metrics counters (prometheus_client)", "inc", "prometheus_client/metrics.py"),
    ("Processor.checkpoint", "checkpoint", "pipeline/processor.py"),
    ("  ContainerWindow.to_bytes", "to_bytes", "pipeline/core/window.py"),
    ("  FaustStore.save (table write → changelog)", "save", "pipeline/app.py"),
)


@dataclass
class ProfileSummary:
    """Sample counts of one profile: total, per stage (inclusive) and per function (self)."""

    total: float = 0.0
    inclusive: dict[str, float] = field(default_factory=dict)
    self_time: dict[str, float] = field(default_factory=dict)

    def stage_rows(self) -> list[tuple[str, str]]:
        """``(stage, share of all samples)`` for every stage, plus what lies outside."""
        if not self.total:
            return []
        rows = [
            (label, f"{self.inclusive.get(label, 0.0) / self.total:.1%}") for label, *_ in STAGES
        ]
        inside = self.inclusive.get(STAGES[0][0], 0.0) + self.inclusive.get(
            "Processor.checkpoint", 0.0
        )
        rows.append(
            (
                "outside the processor (Faust, aiokafka, event loop, producer)",
                f"{max(0.0, self.total - inside) / self.total:.1%}",
            )
        )
        return rows

    def hottest(self, count: int = 12) -> list[tuple[str, str]]:
        """The ``count`` functions with the most self time, with their share."""
        if not self.total:
            return []
        ranked = sorted(self.self_time.items(), key=lambda item: -item[1])[:count]
        return [(name, f"{value / self.total:.1%}") for name, value in ranked]


def _stage_of(function: str, file: str) -> str | None:
    for label, name, suffix in STAGES:
        if function.endswith(name) and file.endswith(suffix):
            return label
    return None


def summarise_stacks(stacks: Iterable[tuple[Sequence[tuple[str, str]], float]]) -> ProfileSummary:
    """Reduce ``(frames root→leaf as (function, file), weight)`` stacks to a summary."""
    summary = ProfileSummary()
    for frames, weight in stacks:
        summary.total += weight
        seen: set[str] = set()
        for function, file in frames:
            label = _stage_of(function, file)
            if label is not None and label not in seen:
                seen.add(label)
                summary.inclusive[label] = summary.inclusive.get(label, 0.0) + weight
        if frames:
            function, file = frames[-1]
            short = "/".join(Path(file).parts[-2:])
            name = f"{function} ({short})"
            summary.self_time[name] = summary.self_time.get(name, 0.0) + weight
    return summary


def parse_collapsed(text: str) -> list[tuple[list[tuple[str, str]], float]]:
    """py-spy ``--format raw`` output: ``frame;frame;... count`` lines, frames as
    ``function (file:line)``."""
    stacks: list[tuple[list[tuple[str, str]], float]] = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = []
        for frame in stack.split(";"):
            function, _, where = frame.partition(" (")
            file = where.rsplit(":", 1)[0] if where else ""
            frames.append((function.strip(), file))
        stacks.append((frames, float(count)))
    return stacks


def py_spy_available() -> bool:
    """Whether the py-spy binary is installed in the venv (a dev dependency)."""
    return PY_SPY.exists()


def py_spy_record(pid: int, seconds: float, output: Path) -> subprocess.Popen[bytes]:
    """Start sampling ``pid`` for ``seconds`` into ``output`` (collapsed stacks)."""
    return subprocess.Popen(
        [
            str(PY_SPY),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, round(seconds))),
            "--rate",
            "200",
            "--format",
            "raw",
            "--output",
            str(output),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def finish_py_spy(
    process: subprocess.Popen[bytes], output: Path, timeout: float
) -> ProfileSummary | str:
    """Wait for a py-spy recording; the summary, or why there is none."""
    deadline = time.monotonic() + timeout
    try:
        _, stderr = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        return "py-spy did not finish in time"
    if not output.exists():
        return f"py-spy wrote nothing: {stderr.decode(errors='replace').strip()[-300:]}"
    return summarise_stacks(parse_collapsed(output.read_text(encoding="utf-8", errors="replace")))


def summarise_pyinstrument(session: object) -> ProfileSummary:
    """The same summary from a pyinstrument session (its frame tree)."""
    root = session.root_frame()  # type: ignore[attr-defined]  # pyinstrument's Session is untyped here
    stacks: list[tuple[list[tuple[str, str]], float]] = []

    def walk(frame: object, path: list[tuple[str, str]]) -> None:
        identifier = str(frame.identifier)  # type: ignore[attr-defined]  # pyinstrument Frame
        if identifier.startswith("["):
            # synthetic frames ("[self]", "[await]") hold time spent in their parent
            stacks.append((path, float(frame.time)))  # type: ignore[attr-defined]  # pyinstrument Frame
            return
        here = [*path, (str(frame.function), str(frame.file_path or ""))]  # type: ignore[attr-defined]  # pyinstrument Frame
        children = list(frame.children)  # type: ignore[attr-defined]  # pyinstrument Frame
        own = float(frame.time) - sum(float(c.time) for c in children)  # type: ignore[attr-defined]  # pyinstrument Frame
        if own > 1e-12:
            stacks.append((here, own))
        for child in children:
            walk(child, here)

    if root is not None:
        walk(root, [])
    return summarise_stacks(stacks)
