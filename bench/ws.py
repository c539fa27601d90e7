"""WebSocket benchmark: sluiceway beside uvicorn (three engines, and zttp), hypercorn and granian.

    python bench/ws.py [--rounds 3] [--seconds 4] [--idle 5000] [--only sluiceway,uvicorn-wsproto]

Every server runs bench/apps/ws_echo.py pinned to core 0 (``taskset -c 0``); the load generator,
bench/wsload.c (built here with gcc), runs pinned to core 1. For each round and server, in an order
that rotates between rounds: echo with 64 clients of 100-byte text messages, echo with 64 clients of
64 KiB binary messages (messages/s and p99 round trip), then RSS per idle connection with ``--idle``
connections open (server process tree RSS with them open, minus RSS before, divided by the count).
Medians over the rounds go to bench/results/ws.md, with ratios to the fastest uvicorn engine.

Standard library only; never imports sluiceway (the peers' numbers must not depend on it).
Every wait has a deadline, and every server is stopped (SIGKILL as a last resort).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
APP = "bench.apps.ws_echo:app"
SERVER_CORE, LOAD_CORE = "0", "1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
QUIET = ["--log-level", "warning", "--no-access-log", "--lifespan", "off"]


@dataclass(frozen=True)
class Server:
    name: str
    argv: list[str]  # "{port}" is replaced
    package: str


def servers() -> list[Server]:
    py = sys.executable
    uv = [py, "-m", "uvicorn", APP, "--port", "{port}", "--log-level", "warning"]
    uv += ["--no-access-log", "--lifespan", "off", "--loop", "uvloop", "--http", "httptools"]
    return [
        Server(
            "sluiceway",
            [py, "-m", "sluiceway", "run", APP, "--port", "{port}", *QUIET, "--loop", "uvloop"],
            "sluiceway",
        ),
        Server("uvicorn-websockets", [*uv, "--ws", "websockets"], "uvicorn"),
        Server("uvicorn-websockets-sansio", [*uv, "--ws", "websockets-sansio"], "uvicorn"),
        Server("uvicorn-wsproto", [*uv, "--ws", "wsproto"], "uvicorn"),
        # uvicorn 0.55's Zig HTTP/1.1 engine reads the handshake, then hands the connection to
        # the same WebSocket engines: one row, on its fastest engine, shows what the switch costs.
        Server(
            "uvicorn-zttp-websockets-sansio",
            [*uv[:-1], "zttp", "--ws", "websockets-sansio"],
            "zttp",
        ),
        Server(
            "hypercorn",
            [py, "-m", "hypercorn", APP, "-b", "127.0.0.1:{port}", "-k", "uvloop", "-w", "1"],
            "hypercorn",
        ),
        Server(
            "granian",
            _granian_argv(
                [py, "-m", "granian", "--interface", "asgi", "--port", "{port}", "--workers", "1"]
            ),
            "granian",
        ),
    ]


def _granian_argv(base: list[str]) -> list[str]:
    extra = ["--loop", "uvloop", "--log-level", "warning"]
    if _granian_has("--no-ws-compression"):
        extra.append("--no-ws-compression")
    return [*base, *extra, APP]


def _granian_has(flag: str) -> bool:
    try:
        out = subprocess.run(
            [sys.executable, "-m", "granian", "--help"], capture_output=True, text=True, timeout=20
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return flag in out


def version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def tree_rss_kib(pid: int) -> int:
    total = 0
    for p in tree(pid):
        with contextlib.suppress(OSError), open(f"/proc/{p}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


@contextlib.contextmanager
def running(server: Server, log: Path) -> Iterator[tuple[int, int]]:
    port = free_port()
    argv = ["taskset", "-c", SERVER_CORE, *(a.replace("{port}", str(port)) for a in server.argv)]
    # Run from the repository root, sluiceway from this checkout's src/.
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"{server.name} exited with {proc.returncode}; see {log}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"{server.name} did not listen within 30 s; see {log}")
            time.sleep(0.1)
        yield port, proc.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def tree_cpu_s(pid: int) -> float:
    total = 0
    for p in tree(pid):
        with contextlib.suppress(OSError, IndexError, ValueError), open(f"/proc/{p}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime, all threads
    return total / CLOCK_TICKS


def echo(
    wsload: Path, port: int, pid: int, size: int, kind: str, seconds: float
) -> dict[str, float]:
    """One echo run; adds the server's CPU time per message (steadier on a shared machine)."""
    argv = ["taskset", "-c", LOAD_CORE, str(wsload), "echo", "127.0.0.1", str(port), "/"]
    argv += ["64", str(size), kind, str(seconds), "1"]
    cpu_before = tree_cpu_s(pid)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    cpu = tree_cpu_s(pid) - cpu_before
    if not done.stdout.strip():
        raise SystemExit(f"wsload failed: {done.stderr.strip()}")
    result: dict[str, float] = json.loads(done.stdout)
    result["cpu_us_per_msg"] = cpu * 1e6 / max(result["all_messages"], 1)
    return result


def idle_kib_per_conn(wsload: Path, port: int, pid: int, count: int) -> float:
    # Warm the server (imports, first-connection allocations) before the baseline.
    subprocess.run(
        [str(wsload), "echo", "127.0.0.1", str(port), "/", "4", "100", "text", "0.5", "0.2"],
        capture_output=True,
        timeout=60,
    )
    time.sleep(0.5)
    before = tree_rss_kib(pid)
    argv = [
        "taskset",
        "-c",
        LOAD_CORE,
        str(wsload),
        "idle",
        "127.0.0.1",
        str(port),
        "/",
        str(count),
    ]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        opened = int(line[1]) if len(line) == 2 and line[0] == "ready" else 0
        time.sleep(1.0)  # let the server finish the last handshakes' bookkeeping
        after = tree_rss_kib(pid)
    finally:
        if proc.stdin:
            proc.stdin.close()
        proc.wait(60)
    if opened < count:
        print(f"    only {opened}/{count} idle connections opened", file=sys.stderr)
    return (after - before) / max(opened, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--idle", type=int, default=5000)
    parser.add_argument("--only", default="")
    parser.add_argument("--out", default=str(HERE / "results" / "ws.md"))
    args = parser.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, args.idle * 2 + 1024))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    build = Path(os.environ.get("TMPDIR", "/tmp")) / "sluiceway-bench-ws"
    build.mkdir(exist_ok=True)
    wsload = build / "wsload"
    subprocess.run(["gcc", "-O2", "-o", str(wsload), str(HERE / "wsload.c")], check=True)

    chosen = [s for s in servers() if version(s.package) is not None]
    if args.only:
        names = set(args.only.split(","))
        chosen = [s for s in chosen if s.name in names]
    log = build / "servers.log"
    results: dict[str, list[dict[str, float]]] = {s.name: [] for s in chosen}
    for rnd in range(args.rounds):
        order = chosen[rnd % len(chosen) :] + chosen[: rnd % len(chosen)]
        for server in order:
            with running(server, log) as (port, pid):
                text = echo(wsload, port, pid, 100, "text", args.seconds)
                binary = echo(wsload, port, pid, 65536, "binary", args.seconds)
                idle = idle_kib_per_conn(wsload, port, pid, args.idle) if args.idle else 0.0
            row = {
                "text_mps": text["msgs_per_s"],
                "text_p99_us": text["p99_us"],
                "text_cpu_us": text["cpu_us_per_msg"],
                "bin_mps": binary["msgs_per_s"],
                "bin_p99_us": binary["p99_us"],
                "bin_cpu_us": binary["cpu_us_per_msg"],
                "idle_kib": idle,
                "errors": text["errors"] + binary["errors"],
            }
            results[server.name].append(row)
            print(f"round {rnd + 1} {server.name}: {json.dumps(row)}", flush=True)

    med = {
        n: {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        for n, rows in results.items()
    }
    uvicorns = [n for n in med if n.startswith("uvicorn")]
    base_text = max((med[n]["text_mps"] for n in uvicorns), default=0.0)
    base_bin = max((med[n]["bin_mps"] for n in uvicorns), default=0.0)
    lines = [
        "# WebSocket echo benchmark",
        "",
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.python_implementation()} "
        f"{platform.python_version()}, {os.cpu_count()} cores ({platform.machine()}), "
        f"server on core {SERVER_CORE}, bench/wsload.c on core {LOAD_CORE}; "
        f"{args.rounds} interleaved rounds, medians; "
        f"{args.seconds:g} s per echo run after 1 s warm-up; "
        f"idle RSS with {args.idle} connections open.",
        "",
        "| server | version | text 100 B msg/s | p99 ms | server CPU µs/msg | x fastest uvicorn "
        "| binary 64 KiB msg/s | p99 ms | server CPU µs/msg | x fastest uvicorn "
        "| KiB per idle conn |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for server in chosen:
        m = med[server.name]
        text_x = m["text_mps"] / base_text if base_text else 0.0
        bin_x = m["bin_mps"] / base_bin if base_bin else 0.0
        lines.append(
            f"| {server.name} | {version(server.package)} | {m['text_mps']:,.0f} "
            f"| {m['text_p99_us'] / 1000:.2f} | {m['text_cpu_us']:.1f} | {text_x:.2f} "
            f"| {m['bin_mps']:,.0f} | {m['bin_p99_us'] / 1000:.2f} | {m['bin_cpu_us']:.1f} "
            f"| {bin_x:.2f} | {m['idle_kib']:.1f} |"
        )
    lines += [
        "",
        "x fastest uvicorn: messages/s divided by the best median of uvicorn's rows "
        "(its engines, and zttp). Server CPU µs/msg is the server process tree's user+system "
        "CPU time over the whole run divided by the messages echoed: it moves less than "
        "messages/s when the machine is shared.",
    ]
    lines += ["", "Raw rounds:", "", "```"]
    lines += [f"{n}: {json.dumps(rows)}" for n, rows in results.items()]
    lines += ["```", ""]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
