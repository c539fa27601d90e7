"""HTTP/1.1 benchmark: sluiceway beside uvicorn (httptools and zttp), granian and gunicorn.

    python bench/http_load.py                      # 3 rounds of 10 s, every server, every scenario
    python bench/http_load.py --duration 3 --rounds 1 --servers sluiceway,uvicorn --scenarios a,b

Each server runs one worker with one thread, pinned to core 0, serving bench/apps/http_apps.py;
wrk runs pinned to core 1. Scenarios (issue 3): (a) plaintext keep-alive, (b) small JSON with a
query string, (c) 1 MiB download in 64 KiB chunks, (d) 1 MiB upload read in full, (e) a new
connection per request. Rounds are interleaved: each round starts every server (on its own port,
all on core 0; an idle one sleeps) and runs the scenarios in turn, every server on one scenario
before the next, the server order rotated per scenario and per round so no server always goes
first. A ratio thus compares runs a minute apart at most, not a whole round. Each cell is the
median over rounds. A full run writes bench/results/http.md; a shortened run only
prints unless --output is given.

Invariants: before each measured run the scenario's response is checked for correctness (a
server that answers fast but wrong gets no number); a server that fails to start or breaks is
reported in one line and the run goes on with the others. Must not import: sluiceway.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This script shares its name with the standard library's `http` package, and Python puts the
# script's folder first on sys.path: take it off before importing http.client, then put it at
# the end so `common` (beside this file) still imports. Hence the imports below the fix-up.
# ruff: noqa: E402
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.append(str(_HERE))

import argparse
import http.client
import json
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from common import (
    HOST,
    BenchError,
    LoadResult,
    RunningServer,
    ServerSpec,
    fail,
    format_table,
    machine_info,
    measure,
    median,
    python_module_version,
    run_wrk,
    start_server,
)

BENCH_DIR = _HERE
APPS_DIR = BENCH_DIR / "apps"
DEFAULT_OUTPUT = BENCH_DIR / "results" / "http.md"
BASELINE = "uvicorn"
MIB = 1024 * 1024

# Ratios to uvicorn that issue 3 asks sluiceway to reach (requests/s).
TARGETS = {"a": 1.3, "b": 1.4, "c": 1.4, "d": 1.1, "e": 1.3}


# ---------------------------------------------------------------------------------------------
# Servers


def _script(name: str) -> str:
    """The console script ``name`` installed beside this Python, else the one on PATH.

    So ``some-venv/bin/python bench/http_load.py`` runs every server on that venv's Python:
    the peers started with ``sys.executable`` and the two started by their scripts alike.
    """
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else shutil.which(name) or name


def _sluiceway_argv(port: int) -> list[str]:
    return [
        _script("sluiceway"), "run", "http_apps:app",
        "--host", HOST, "--port", str(port), "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip


def _uvicorn_argv(port: int) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", "http_apps:app", "--host", HOST, "--port", str(port),
        "--http", "httptools", "--loop", "uvloop", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip


def _uvicorn_zttp_argv(port: int) -> list[str]:
    # uvicorn's other HTTP/1.1 engine (uvicorn >= 0.55): the zttp parser, written in Zig.
    return [
        sys.executable, "-m", "uvicorn", "http_apps:app", "--host", HOST, "--port", str(port),
        "--http", "zttp", "--loop", "uvloop", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip


def _uvicorn_zttp_version() -> str | None:
    uvicorn, zttp = python_module_version("uvicorn")(), python_module_version("zttp")()
    return f"{uvicorn} (zttp {zttp})" if uvicorn and zttp else None


def _granian_argv(port: int) -> list[str]:
    return [
        _script("granian"), "--interface", "asgi", "--http", "1",
        "--host", HOST, "--port", str(port), "--workers", "1", "--runtime-threads", "1",
        "--no-access-log", "--log-level", "warning", "http_apps:app",
    ]  # fmt: skip


def _gunicorn_argv(port: int) -> list[str]:
    # "-k asgi" is gunicorn's own asyncio ASGI worker (gunicorn >= 24); no access log by default.
    return [
        sys.executable, "-m", "gunicorn", "-k", "asgi", "--asgi-loop", "uvloop", "-w", "1",
        "-b", f"{HOST}:{port}", "--log-level", "warning", "http_apps:app",
    ]  # fmt: skip


def _ceiling_argv(port: int) -> list[str]:
    return [sys.executable, str(APPS_DIR / "raw_uvloop.py"), str(port)]


def _sluiceway_version() -> str | None:
    version = python_module_version("sluiceway")()
    if version is None or not (Path(_sluiceway_src()) / "cli.py").exists():
        return None  # no CLI yet: nothing to run
    return version


def _sluiceway_src() -> str:
    import importlib.util

    spec = importlib.util.find_spec("sluiceway")
    if spec is None or spec.origin is None:
        return ""
    return str(Path(spec.origin).parent)


SERVERS: dict[str, ServerSpec] = {
    "sluiceway": ServerSpec("sluiceway", _sluiceway_argv, _sluiceway_version),
    "uvicorn": ServerSpec("uvicorn", _uvicorn_argv, python_module_version("uvicorn")),
    "uvicorn-zttp": ServerSpec("uvicorn-zttp", _uvicorn_zttp_argv, _uvicorn_zttp_version),
    "granian": ServerSpec("granian", _granian_argv, python_module_version("granian")),
    "gunicorn": ServerSpec("gunicorn", _gunicorn_argv, python_module_version("gunicorn")),
    # Not a server: a uvloop protocol answering without parsing (bench/apps/raw_uvloop.py).
    "ceiling": ServerSpec("ceiling", _ceiling_argv, python_module_version("uvloop")),
}
DEFAULT_SERVERS = ("sluiceway", "uvicorn", "uvicorn-zttp", "granian", "gunicorn")
# Scenarios a server can run at all (the ceiling only knows canned answers).
ONLY_SCENARIOS = {"ceiling": {"a", "c", "e"}}


# ---------------------------------------------------------------------------------------------
# Scenarios


def _get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, bool]:
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read(), resp.will_close
    finally:
        conn.close()


def _check_plaintext(port: int) -> None:
    status, body, _ = _get(port, "/")
    if (status, body) != (200, b"Hello, world!"):
        raise BenchError(f"GET / answered {status} {body[:60]!r}")


def _check_json(port: int) -> None:
    status, body, _ = _get(port, "/json?name=sluice&page=2")
    expected = {"message": "Hello, world!", "name": "sluice", "page": 2}
    if status != 200 or json.loads(body) != expected:
        raise BenchError(f"GET /json answered {status} {body[:80]!r}")


def _check_download(port: int) -> None:
    status, body, _ = _get(port, "/download")
    if status != 200 or len(body) != MIB:
        raise BenchError(f"GET /download answered {status} with {len(body)} bytes")


def _check_upload(port: int) -> None:
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("POST", "/upload", body=b"x" * MIB)
        resp = conn.getresponse()
        status, body = resp.status, resp.read()
    finally:
        conn.close()
    if (status, body) != (200, str(MIB).encode()):
        raise BenchError(f"POST /upload answered {status} {body[:60]!r}")


def _check_close(port: int) -> None:
    status, body, will_close = _get(port, "/", {"Connection": "close"})
    if (status, body, will_close) != (200, b"Hello, world!", True):
        raise BenchError(f"GET / with Connection: close answered {status}, close={will_close}")


_UPLOAD_LUA = f"""
wrk.method = "POST"
wrk.body = string.rep("x", {MIB})
wrk.headers["Content-Type"] = "application/octet-stream"
"""


@dataclass(frozen=True)
class Scenario:
    key: str
    name: str
    title: str
    path: str
    check: Callable[[int], None]
    lua: str = ""
    headers: tuple[str, ...] = ()


SCENARIOS = [
    Scenario("a", "plaintext", "(a) plaintext, keep-alive", "/", _check_plaintext),
    Scenario("b", "json", "(b) small JSON, query string", "/json?name=sluice&page=2", _check_json),
    Scenario("c", "download", "(c) 1 MiB download, 64 KiB chunks", "/download", _check_download),
    Scenario(
        "d", "upload", "(d) 1 MiB upload, read in full", "/upload", _check_upload, _UPLOAD_LUA
    ),
    Scenario(
        "e",
        "close",
        "(e) new connection per request",
        "/",
        _check_close,
        headers=("Connection: close",),
    ),
]


# ---------------------------------------------------------------------------------------------
# The run


@dataclass
class Cell:
    """Every round's result for one (server, scenario), and the first failure if any."""

    results: list[LoadResult]
    failure: str = ""

    def med(self, attr: str) -> float:
        return median([getattr(r, attr) for r in self.results])


Results = dict[tuple[str, str], Cell]


def run(
    servers: Sequence[ServerSpec],
    scenarios: Sequence[Scenario],
    *,
    rounds: int,
    duration_s: float,
    warmup_s: float,
    connections: int,
    log_dir: Path,
) -> Results:
    results: Results = {(s.name, sc.key): Cell([]) for s in servers for sc in scenarios}
    for s in servers:
        for sc in scenarios:
            if sc.key not in ONLY_SCENARIOS.get(s.name, {sc.key}):
                results[(s.name, sc.key)].failure = "not applicable"
    for round_no in range(rounds):
        # Every server is up for the whole round (idle ones sleep on core 0 and cost it nothing)
        # and the servers take turns on each scenario: the runs compared in a ratio are at most
        # a few runs apart, so a machine whose speed drifts over minutes moves them together.
        running: dict[str, RunningServer] = {}
        try:
            for spec in servers:
                if all(results[(spec.name, sc.key)].failure for sc in scenarios):
                    continue
                try:
                    running[spec.name] = start_server(spec, cwd=APPS_DIR, log_dir=log_dir)
                except BenchError as exc:
                    _fail_all(results, spec.name, scenarios, f"did not start: {exc}")
            for sc_no, sc in enumerate(scenarios):
                print(f"round {round_no + 1}/{rounds}: {sc.title}", flush=True)
                shift = (round_no + sc_no) % len(servers)
                for spec in [*servers[shift:], *servers[:shift]]:
                    server = running.get(spec.name)
                    cell = results[(spec.name, sc.key)]
                    if server is None or cell.failure:
                        continue
                    if server.proc.poll() is not None:
                        _fail_all(results, spec.name, scenarios, "exited during the run")
                        continue
                    try:
                        result = _run_scenario(server, sc, duration_s, warmup_s, connections)
                    except (BenchError, OSError, ValueError, http.client.HTTPException) as exc:
                        cell.failure = str(exc).splitlines()[0]
                        print(f"  {spec.name:<10} FAILED: {cell.failure}", flush=True)
                        continue
                    cell.results.append(result)
                    print(_progress_line(spec.name, result), flush=True)
        finally:
            for server in running.values():
                server.stop()
    return results


def _run_scenario(
    server: RunningServer, sc: Scenario, duration_s: float, warmup_s: float, connections: int
) -> LoadResult:
    sc.check(server.port)
    url = f"http://{HOST}:{server.port}{sc.path}"

    def load(seconds: float) -> Callable[[], LoadResult]:
        return lambda: run_wrk(
            url, connections=connections, duration_s=seconds, lua=sc.lua, headers=sc.headers
        )

    if warmup_s > 0:
        load(warmup_s)()
    return measure(server, load(duration_s))


def _progress_line(server: str, r: LoadResult) -> str:
    return (
        f"  {server:<10} {r.rps:>10,.0f} req/s  p99 {r.p99_ms:7.2f} ms"
        f"  {r.per_cpu_s:>9,.0f} req/CPU-s  errors {r.error_detail() or 0}"
    )


def _fail_all(results: Results, server: str, scenarios: Sequence[Scenario], why: str) -> None:
    print(f"  {server} {why}", flush=True)  # with the server's log tail
    short = why.split("; its log ends", 1)[0]
    for sc in scenarios:
        cell = results[(server, sc.key)]
        cell.failure = cell.failure or short


# ---------------------------------------------------------------------------------------------
# Reporting


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base > 0 and value > 0 else "n/a"


def scenario_table(
    results: Results, servers: Sequence[str], sc: Scenario, *, markdown: bool
) -> str:
    header = [
        "server",
        "req/s",
        "p99 ms",
        "req/CPU-s",
        "CPU %",
        "sys %",
        "wrk CPU %",
        "others on core 0 %",
        "vs uvicorn",
        "vs uvicorn (CPU)",
        "errors",
    ]
    base = results.get((BASELINE, sc.key))
    base_rps = base.med("rps") if base and base.results else 0.0
    base_cpu = base.med("per_cpu_s") if base and base.results else 0.0
    rows = []
    for name in servers:
        cell = results[(name, sc.key)]
        if not cell.results:
            why = "n/a" if cell.failure == "not applicable" else f"failed: {cell.failure}"
            rows.append([name, *["-"] * 9, why])
            continue
        cpu_pct = median([100 * r.server_cpu_s / r.duration_s for r in cell.results])
        rows.append(
            [
                name,
                f"{cell.med('rps'):,.0f}",
                f"{cell.med('p99_ms'):.2f}",
                f"{cell.med('per_cpu_s'):,.0f}",
                f"{cpu_pct:.0f}",
                f"{100 * cell.med('sys_share'):.0f}",
                f"{100 * cell.med('load_cpu_share'):.0f}",
                f"{100 * cell.med('others_share'):.0f}",
                _ratio(cell.med("rps"), base_rps),
                _ratio(cell.med("per_cpu_s"), base_cpu),
                str(sum(r.errors for r in cell.results)) + (" (partial)" if cell.failure else ""),
            ]
        )
    return format_table(header, rows, markdown=markdown)


def targets_table(results: Results, scenarios: Sequence[Scenario]) -> str:
    header = [
        "scenario",
        "target",
        "req/s ratio",
        "req/CPU-s ratio",
        "p99 sluiceway",
        "p99 uvicorn",
        "met",
    ]
    rows = []
    for sc in scenarios:
        ours, base = results.get(("sluiceway", sc.key)), results.get((BASELINE, sc.key))
        if not (ours and ours.results and base and base.results):
            rows.append([sc.title, f"{TARGETS[sc.key]:.1f}x", "-", "-", "-", "-", "n/a"])
            continue
        ratio = ours.med("rps") / base.med("rps")
        p99_ok = ours.med("p99_ms") <= base.med("p99_ms")
        met = "yes" if ratio >= TARGETS[sc.key] and p99_ok else "no"
        rows.append(
            [
                sc.title,
                f"{TARGETS[sc.key]:.1f}x",
                f"{ratio:.2f}x",
                _ratio(ours.med("per_cpu_s"), base.med("per_cpu_s")),
                f"{ours.med('p99_ms'):.2f}",
                f"{base.med('p99_ms'):.2f}",
                met,
            ]
        )
    return format_table(header, rows, markdown=True)


def head_to_head_table(
    results: Results, servers: Sequence[str], scenarios: Sequence[Scenario]
) -> str:
    """sluiceway against each other server, paired round by round.

    The main tables divide one server's median by another's, and the two medians may come
    from different rounds. On a machine whose speed drifts by half over minutes that ratio
    moves with the drift. Here each round's two runs (a minute apart at most) are compared
    with each other: a cell is the median of the per-round requests/s ratios and, in
    brackets, the rounds sluiceway was ahead in. A server that failed in some round is
    compared only over the rounds both finished (a cell keeps its rounds in order and stops
    at its first failure, so the first N results of two cells are the same N rounds).
    """
    peers = [name for name in servers if name != "sluiceway"]
    rows = []
    for sc in scenarios:
        ours = results.get(("sluiceway", sc.key))
        row = [sc.title]
        for peer in peers:
            theirs = results[(peer, sc.key)]
            # Unequal lengths after a failure: compare the rounds both have.
            pairs = list(zip(ours.results, theirs.results, strict=False)) if ours else []
            ratios = [a.rps / b.rps for a, b in pairs if a.rps > 0 and b.rps > 0]
            if not ratios:
                row.append("n/a")
                continue
            ahead = sum(ratio > 1 for ratio in ratios)
            row.append(f"{median(ratios):.2f}x ({ahead}/{len(ratios)})")
        rows.append(row)
    return format_table(["scenario", *[f"vs {peer}" for peer in peers]], rows, markdown=True)


def raw_table(results: Results, servers: Sequence[str], scenarios: Sequence[Scenario]) -> str:
    header = [
        "scenario",
        "server",
        "round",
        "req/s",
        "p99 ms",
        "server CPU s",
        "req/CPU-s",
        "others on core 0 %",
        "errors",
    ]
    rows = []
    for sc in scenarios:
        for name in servers:
            for i, r in enumerate(results[(name, sc.key)].results, 1):
                rows.append(
                    [
                        sc.key, name, str(i), f"{r.rps:,.0f}", f"{r.p99_ms:.2f}",
                        f"{r.server_cpu_s:.2f}", f"{r.per_cpu_s:,.0f}",
                        f"{100 * r.others_share:.0f}", str(r.errors),
                    ]
                )  # fmt: skip
    return format_table(header, rows, markdown=True)


def markdown_report(
    results: Results,
    servers: Sequence[ServerSpec],
    scenarios: Sequence[Scenario],
    args: argparse.Namespace,
    versions: dict[str, str],
) -> str:
    info = machine_info()
    names = [s.name for s in servers]
    load_start, load_end = args.load_average
    lines = [
        "# HTTP/1.1 benchmark results",
        "",
        f"Written by `{' '.join(['python bench/http_load.py', *args.argv])}` on {info['date']}.",
        "",
        f"- Machine: {info['cpu']}, {info['cores']} cores, Linux {info['kernel']}",
        f"- {info['python']}; {info['wrk']}",
        "- Servers: " + ", ".join(f"{n} {versions[n]}" for n in names),
        f"- {args.rounds} interleaved rounds of {args.duration:g} s"
        f" (after {args.warmup:g} s warm-up), {args.connections} connections, one wrk thread;"
        " each cell is the median over rounds.",
        "- In each round every server is up (idle ones sleep) and they take turns on each"
        " scenario, in an order rotated per scenario and per round.",
        "- Each server: one worker, one thread, pinned to core 0 (`taskset -c 0`); wrk on core 1.",
        f"- sluiceway at commit {_git_commit()}; 1-minute load average {load_start:.1f} at the"
        f" start and {load_end:.1f} at the end (2 cores; above ~2 other work shared the machine).",
        "- req/CPU-s: requests per CPU-second of the server's whole process tree (utime+stime from"
        " /proc); CPU % is that CPU time over the run's wall time (100 = core 0 saturated);"
        " others on core 0 % is the rest of core 0's busy time (other processes, interrupts,"
        " steal): where it is high, requests/s understates every server and req/CPU-s is the"
        " number to compare.",
        "",
        "## Ratio to uvicorn: requests/s",
        "",
        _ratio_matrix(results, names, scenarios, "rps"),
        "",
        "## Ratio to uvicorn: requests per server CPU-second (steadier on a shared machine)",
        "",
        _ratio_matrix(results, names, scenarios, "per_cpu_s"),
        "",
    ]
    if "sluiceway" in names and BASELINE in names:
        lines += [
            "## sluiceway against its targets (issue 3)",
            "",
            targets_table(results, scenarios),
            "",
        ]
    if "sluiceway" in names and len(names) > 1:
        lines += [
            "## sluiceway against each server, round by round",
            "",
            "Median of the per-round requests/s ratios; in brackets, the rounds sluiceway was"
            " ahead in. Each round's two runs are a minute apart at most, so the machine's"
            " drift over minutes cancels here, where a ratio of two medians can take them"
            " from different rounds.",
            "",
            head_to_head_table(results, names, scenarios),
            "",
        ]
    for sc in scenarios:
        lines += [f"## {sc.title}", "", scenario_table(results, names, sc, markdown=True), ""]
    lines += ["## Every round", "", raw_table(results, names, scenarios), ""]
    return "\n".join(lines)


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(BENCH_DIR), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def _ratio_matrix(
    results: Results, names: Sequence[str], scenarios: Sequence[Scenario], attr: str
) -> str:
    rows = []
    for sc in scenarios:
        base = results.get((BASELINE, sc.key))
        base_value = base.med(attr) if base and base.results else 0.0
        row = [sc.title]
        for name in names:
            cell = results[(name, sc.key)]
            if cell.results:
                row.append(_ratio(cell.med(attr), base_value))
            else:
                row.append("n/a" if cell.failure == "not applicable" else "failed")
        rows.append(row)
    return format_table(["scenario", *names], rows, markdown=True)


# ---------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench/http_load.py",
        description="HTTP/1.1 benchmark of sluiceway and its peers.",
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run (default 10)")
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="unmeasured seconds first (default 1)"
    )
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    parser.add_argument(
        "--servers",
        default=",".join(DEFAULT_SERVERS),
        help=f"comma list from {','.join(SERVERS)} (default {','.join(DEFAULT_SERVERS)})",
    )
    parser.add_argument(
        "--add-server",
        action="append",
        default=[],
        metavar="NAME=COMMAND",
        help="also run COMMAND (shell words; {port} is replaced) as server NAME, e.g. to A/B a"
        " patched sluiceway: exp='python /tmp/exp.py run http_apps:app --port {port}'",
    )
    parser.add_argument(
        "--scenarios", default="a,b,c,d,e", help="comma list of a,b,c,d,e (or their names)"
    )
    parser.add_argument(
        "--output", type=Path, default=None,
        help=f"markdown file to write (default {DEFAULT_OUTPUT.relative_to(BENCH_DIR.parent)}"
        " for a full run: 3+ rounds of 10+ s)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    args.argv = list(argv)
    if args.rounds < 1 or args.duration < 1 or args.connections < 1 or args.warmup < 0:
        parser.error("--rounds, --duration and --connections must be at least 1, --warmup >= 0")
    return args


def _command_spec(name: str, command: str) -> ServerSpec:
    words = shlex.split(command)

    def argv(port: int) -> list[str]:
        return [w.replace("{port}", str(port)) for w in words]

    return ServerSpec(name, argv, lambda: "(--add-server)")


def _pick(kind: str, wanted: str, known: dict[str, object]) -> list[str]:
    picked = [w.strip() for w in wanted.split(",") if w.strip()]
    unknown = [p for p in picked if p not in known]
    if unknown or not picked:
        fail(f"unknown {kind} {', '.join(unknown) or '(none)'}; choose from {', '.join(known)}")
    return picked


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    by_name: dict[str, object] = {**{s.key: s for s in SCENARIOS}, **{s.name: s for s in SCENARIOS}}
    scenario_keys = _pick("scenario", args.scenarios, by_name)
    scenarios = [s for s in SCENARIOS if s.key in scenario_keys or s.name in scenario_keys]
    versions: dict[str, str] = {}
    servers = []
    for extra in args.add_server:
        name, sep, command = extra.partition("=")
        if not sep or not name or "{port}" not in command:
            fail(f"--add-server wants NAME=COMMAND with {{port}} in it, got {extra!r}")
        SERVERS[name] = _command_spec(name, command)
        args.servers += "," + name
    for name in _pick("server", args.servers, dict(SERVERS)):
        version = SERVERS[name].version()
        if version is None:
            print(
                f"skipping {name}: not installed (or, for sluiceway, no CLI yet)", file=sys.stderr
            )
            continue
        versions[name] = version
        servers.append(SERVERS[name])
    if not servers:
        fail("no server to run")
    if shutil.which("taskset") is None or shutil.which("wrk") is None:
        fail("needs taskset (util-linux) and wrk on PATH")

    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="sluiceway-bench-logs-") as logs:
        try:
            results = run(
                servers,
                scenarios,
                rounds=args.rounds,
                duration_s=args.duration,
                warmup_s=args.warmup,
                connections=args.connections,
                log_dir=Path(logs),
            )
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    args.load_average = (load_start, os.getloadavg()[0])
    names = [s.name for s in servers]
    print()
    for sc in scenarios:
        print(sc.title)
        print(scenario_table(results, names, sc, markdown=False))
        print()
    if "sluiceway" in names and BASELINE in names:
        print("sluiceway against its targets (issue 3)")
        print(targets_table(results, scenarios))
        print()
    if "sluiceway" in names and len(names) > 1:
        print("sluiceway against each server, round by round (median ratio; rounds ahead)")
        print(head_to_head_table(results, names, scenarios))
        print()

    output = args.output
    full_run = args.rounds >= 3 and args.duration >= 10
    if output is None and full_run:
        output = DEFAULT_OUTPUT
    if output is None:
        print("shortened run: results not written (pass --output FILE to keep them)")
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(markdown_report(results, servers, scenarios, args, versions))
        print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
