"""Build and launch the demo JVM workload (``Allocator.java``) with GC logging on.

Why: the demo and the JVM integration tests need a real JVM whose live set and
allocation rate are known, started with the heap options under test and a unified GC
log the JVM agent can tail. This module compiles the bundled ``Allocator.java`` once
(``javac``) and builds the ``java`` command line; starting it (in a cgroup or not) is
left to the caller.

Example::

    classpath = compile_allocator(Path("/tmp/daytwo-jvm"))
    argv = allocator_argv(classpath, java_options=["-Xmx256m"], gc_log=Path("gc.log"),
                          live_mib=30, alloc_mib_per_s=20, seconds=0)
    subprocess.Popen(argv, stdout=subprocess.PIPE)  # prints "ready" once the live set exists
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from pipeline.errors import DaytwoError

__all__ = ["ALLOCATOR_CLASS", "ALLOCATOR_SOURCE", "allocator_argv", "compile_allocator"]

#: The bundled Java source, next to this module.
ALLOCATOR_SOURCE = Path(__file__).with_name("Allocator.java")
#: The main class name ``java`` is asked to run.
ALLOCATOR_CLASS = "Allocator"


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise DaytwoError(
            f"{name!r} is not on PATH; install a JDK (11 or newer) to run the JVM workload"
        )
    return found


def compile_allocator(target_dir: Path) -> Path:
    """Compile ``Allocator.java`` into ``target_dir`` and return it as the classpath.

    Skips ``javac`` when the class file is newer than the source, so repeated calls
    (one per test) cost nothing. Raises :class:`DaytwoError` when no JDK is installed
    or the compilation fails, with ``javac``'s own message.
    """
    target_dir.mkdir(parents=True, exist_ok=True)
    compiled = target_dir / f"{ALLOCATOR_CLASS}.class"
    if compiled.exists() and compiled.stat().st_mtime >= ALLOCATOR_SOURCE.stat().st_mtime:
        return target_dir
    done = subprocess.run(
        [_tool("javac"), "-d", str(target_dir), str(ALLOCATOR_SOURCE)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0 or not compiled.exists():
        raise DaytwoError(f"javac failed on {ALLOCATOR_SOURCE}: {done.stderr.strip()}")
    return target_dir


def allocator_argv(
    classpath: Path,
    *,
    java_options: list[str],
    gc_log: Path,
    live_mib: float,
    alloc_mib_per_s: float,
    seconds: float,
) -> list[str]:
    """The ``java`` command that runs the allocator with ``java_options`` and a GC log.

    ``-Xlog:gc*:file=<gc_log>`` comes after ``java_options`` (the unified log the JVM
    agent tails); ``seconds=0`` runs until killed.
    """
    if min(live_mib, alloc_mib_per_s, seconds) < 0:
        raise DaytwoError("live_mib, alloc_mib_per_s and seconds must not be negative")
    return [
        _tool("java"),
        *java_options,
        f"-Xlog:gc*:file={gc_log}",
        "-cp",
        str(classpath),
        ALLOCATOR_CLASS,
        "--live-mib",
        f"{live_mib:g}",
        "--alloc-mib-per-s",
        f"{alloc_mib_per_s:g}",
        "--seconds",
        f"{seconds:g}",
    ]
