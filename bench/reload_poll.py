"""CPU that ``--reload`` costs while nothing changes: polling vs watchfiles, on a large tree.

    python bench/reload_poll.py [--files 10000] [--seconds 10] [--delay 1.0]

Builds a throwaway tree of ``--files`` ``.py`` files (100 per directory),
then for each backend runs the watcher as the supervisor does, ``changes()``
every ``--delay`` seconds for ``--seconds``, and reads this process's CPU
time (user + system, all threads: watchfiles reports from a thread) around
that. Prints the CPU share of one core and, for polling, the cost of one
walk. Not load-sensitive as the HTTP benches are (one core, no sockets):
the numbers go to docs/usage.md (Reload).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder heads sys.path: keep bench/ modules from shadowing libraries.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

import argparse
import os
import platform
import tempfile
import time

from sluiceway.server.reload import make_watcher


def build_tree(root: Path, files: int) -> None:
    for index in range(files):
        directory = root / f"pkg{index // 100:04d}"
        directory.mkdir(exist_ok=True)
        (directory / f"mod{index % 100:03d}.py").write_text("x = 1\n")


def cpu_s() -> float:
    return time.process_time()  # user + system, every thread of this process


def measure(root: Path, backend: str, seconds: float, delay: float) -> tuple[float, float]:
    """(CPU share of one core over the run, CPU seconds of the baseline call)."""
    watcher = make_watcher([str(root)], backend=backend)  # type: ignore[arg-type]
    try:
        start_cpu = cpu_s()
        watcher.changes()  # the baseline: one walk, or the notifier's set-up
        baseline = cpu_s() - start_cpu
        start_cpu, start = cpu_s(), time.monotonic()
        end = start + seconds
        while time.monotonic() < end:
            time.sleep(delay)
            if watcher.changes():
                raise SystemExit("something changed the tree during the run")
        return (cpu_s() - start_cpu) / (time.monotonic() - start), baseline
    finally:
        watcher.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--delay", type=float, default=1.0, help="--reload-delay")
    args = parser.parse_args()
    print(f"# {platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} cores")
    print(f"# {args.files} files, changes() every {args.delay} s for {args.seconds} s")
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        build_tree(root, args.files)
        for backend in ("poll", "watchfiles"):
            share, baseline = measure(root, backend, args.seconds, args.delay)
            print(
                f"{backend:>10}: {share * 100:5.2f}% of one core;"
                f" first call {baseline * 1000:.0f} ms CPU"
            )


if __name__ == "__main__":
    main()
