"""Where a server spends its time per request: py-spy under a wrk load, summarised as text.

    python bench/profile_http.py                          # sluiceway, plaintext, 10 s
    python bench/profile_http.py --server uvicorn --path /json?name=sluice\\&page=2 --native
    python bench/profile_http.py --svg bench/results/profile-plaintext.svg

The server runs as in bench/http_load.py (one worker pinned to core 0, wrk on core 1, same app);
py-spy samples it (non-blocking, so the server is not paused) while wrk loads it. The summary
turns sample shares into microseconds per request: the server tree's CPU time over the run,
divided by the requests wrk completed, split by the share of samples each function (or area of
code) was on top of the stack (self) or anywhere on it (inclusive).

Invariants: py-spy runs on the load core, so sampling costs the load generator, not the server
(except with --native, where py-spy must pause the server for each sample); idle samples are
left out (py-spy's default), so shares are of on-CPU time. Must not import: sluiceway.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

sys.path.append(str(Path(__file__).resolve().parent))

from common import (
    HOST,
    LOAD_CORE,
    BenchError,
    LoadResult,
    RunningServer,
    fail,
    format_table,
    measure,
    pinned,
    run_wrk,
    start_server,
)


def _load_http_bench() -> ModuleType:
    # bench/http_load.py cannot be imported as "http" (the standard library owns that name).
    path = Path(__file__).resolve().parent / "http_load.py"
    spec = importlib.util.spec_from_file_location("bench_http", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


BENCH_HTTP = _load_http_bench()

# Where a frame's file sits decides its area; the first pattern found in the path wins.
AREAS = [
    ("http_apps.py", "app (bench/apps/http_apps.py)"),
    ("sluiceway/http1/", "sluiceway http1"),
    ("sluiceway/asgi/", "sluiceway asgi"),
    ("sluiceway/transport/", "sluiceway transport"),
    ("sluiceway/server/", "sluiceway server"),
    ("sluiceway/", "sluiceway (other)"),
    ("uvicorn/", "uvicorn"),
    ("gunicorn", "gunicorn"),
    ("granian", "granian"),
    ("httptools", "httptools (llhttp)"),
    ("uvloop", "uvloop (libuv, C)"),
    ("asyncio/", "asyncio (stdlib)"),
    ("libc", "libc / kernel calls"),
    ("python3", "CPython interpreter"),
    ("libpython", "CPython interpreter"),
]


def area_of(frame: str) -> str:
    for needle, area in AREAS:
        if needle in frame:
            return area
    return "other"


def parse_raw(text: str) -> Counter[tuple[str, ...]]:
    """py-spy's raw (collapsed) output: one ``frame;frame;...;leaf count`` line per stack."""
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = tuple(f for f in stack.split(";") if not f.startswith(("process ", "thread ")))
        if frames:
            stacks[frames] += int(count)
    return stacks


def summarise(
    stacks: Counter[tuple[str, ...]], per_request_us: float, top: int
) -> tuple[str, str, str]:
    """Tables (self by function, inclusive by function, self by area) in µs per request."""
    total = sum(stacks.values()) or 1
    self_by_fn: Counter[str] = Counter()
    incl_by_fn: Counter[str] = Counter()
    self_by_area: Counter[str] = Counter()
    for frames, count in stacks.items():
        self_by_fn[frames[-1]] += count
        self_by_area[area_of(frames[-1])] += count
        for frame in set(frames):
            incl_by_fn[frame] += count

    def rows(counter: Counter[str]) -> list[list[str]]:
        return [
            [name[:110], f"{100 * n / total:.1f}", f"{per_request_us * n / total:.2f}"]
            for name, n in counter.most_common(top)
        ]

    header = ["function (file)", "% samples", "µs/request"]
    return (
        format_table(header, rows(self_by_fn), markdown=True),
        format_table(header, rows(incl_by_fn), markdown=True),
        format_table(["area", "% samples", "µs/request"], rows(self_by_area), markdown=True),
    )


def record(
    server: RunningServer,
    url: str,
    *,
    duration_s: float,
    connections: int,
    output: Path,
    fmt: str,
    native: bool,
    rate: int,
    headers: Sequence[str] = (),
) -> LoadResult:
    """Sample ``server`` with py-spy into ``output`` while wrk loads ``url``."""
    argv = ["py-spy", "record", "--pid", str(server.pid), "--subprocesses"]
    argv += ["--rate", str(rate), "--duration", str(int(duration_s)), "--format", fmt]
    argv += ["--output", str(output)]
    # Whole functions, not lines: the table sums by function, and a flame graph split by line
    # scatters one function over many boxes.
    argv.append("--nolineno" if fmt == "raw" else "--function")
    # py-spy can only unwind C frames with the process paused, so --native costs the server some
    # throughput (the shares stay meaningful; the req/s of that run does not).
    argv.append("--native" if native else "--nonblocking")
    spy = subprocess.Popen(
        pinned(LOAD_CORE, argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        result = measure(
            server,
            lambda: run_wrk(url, connections=connections, duration_s=duration_s, headers=headers),
        )
        _, err = spy.communicate(timeout=duration_s + 30)
    except BaseException:
        spy.kill()
        spy.wait(timeout=10)
        raise
    if spy.returncode != 0 or not output.exists():
        raise BenchError(f"py-spy failed ({spy.returncode}): {err.strip()[-300:]}")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/profile_http.py", description=__doc__)
    parser.add_argument("--server", default="sluiceway", choices=list(BENCH_HTTP.SERVERS))
    parser.add_argument("--path", default="/", help="request path (default /, the plaintext case)")
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        help="extra request header, e.g. 'Connection: close'",
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds sampled (default 10)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--native", action="store_true", help="include C frames (uvloop, llhttp)")
    parser.add_argument("--top", type=int, default=20, help="rows per table (default 20)")
    parser.add_argument("--svg", type=Path, help="also record a flame graph to this file")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if shutil.which("py-spy") is None:
        fail("py-spy is not installed (pip install -r bench/requirements.txt)")
    spec = BENCH_HTTP.SERVERS[args.server]
    if spec.version() is None:
        fail(f"{args.server} is not installed (or, for sluiceway, has no CLI yet)")

    with tempfile.TemporaryDirectory(prefix="sluiceway-profile-") as tmp:
        tmp_dir = Path(tmp)
        try:
            server = start_server(spec, cwd=BENCH_HTTP.APPS_DIR, log_dir=tmp_dir)
        except BenchError as exc:
            fail(str(exc))
        try:
            url = f"http://{HOST}:{server.port}{args.path}"
            run_wrk(url, connections=args.connections, duration_s=1, headers=args.header)  # warm-up
            raw = tmp_dir / "profile.txt"
            result = record(
                server, url, duration_s=args.duration, connections=args.connections,
                output=raw, fmt="raw", native=args.native, rate=args.rate, headers=args.header,
            )  # fmt: skip
            if args.svg:
                record(
                    server, url, duration_s=args.duration, connections=args.connections,
                    output=args.svg, fmt="flamegraph", native=args.native, rate=args.rate,
                    headers=args.header,
                )  # fmt: skip
            stacks = parse_raw(raw.read_text())
        except BenchError as exc:
            fail(str(exc))
        finally:
            server.stop()

    per_request_us = 1e6 / result.per_cpu_s if result.per_cpu_s else 0.0
    by_self, by_incl, by_area = summarise(stacks, per_request_us, args.top)
    print(
        f"{args.server} GET {args.path}: {result.rps:,.0f} req/s, p99 {result.p99_ms:.2f} ms,"
        f" {result.per_cpu_s:,.0f} req/CPU-s = {per_request_us:.1f} µs of server CPU per request;"
        f" {sum(stacks.values())} samples{' (with native frames)' if args.native else ''}"
    )
    print("\n### Self time by area\n\n" + by_area)
    print("\n### Self time by function\n\n" + by_self)
    print("\n### Inclusive time by function\n\n" + by_incl)
    if args.svg:
        print(f"\nflame graph: {args.svg}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
