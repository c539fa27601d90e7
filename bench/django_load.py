"""A Django project on sluiceway against Channels on Daphne and on uvicorn (issue 19).

    python bench/django_load.py [--rounds 3] [--duration 8] [--output bench/results/django.md]

One Django project (bench/apps/django_bench: an async JSON view, with no middleware and no
database, and the Channels tutorial's consumer shape as a group echo, on the in-memory
layer) served three ways, with only the imports differing:

- ``daphne``: Daphne with Channels' router and consumer base (``asgi_channels``), what a
  Channels project runs today;
- ``uvicorn``: uvicorn (uvloop, httptools) with the same Channels application;
- ``sluiceway``: ``sluiceway run`` with sluiceway.django's router and consumer base
  (``asgi_sluiceway``).

Cases: ``json``, wrk with 64 connections on ``GET /json``; ``ws``, bench/wsload.c echo with 64
WebSocket clients of 100-byte text messages (each message goes through ``group_send`` and
back). Each server runs pinned to core 0, the load tool to core 1; every round runs every
server on every case, in an order that rotates between rounds; medians over the rounds, and
sluiceway's ratio to each peer paired round by round (the same round's numbers divided).

Standard library only (through bench/common.py); never imports sluiceway or Django.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    BenchError,
    RunningServer,
    ServerSpec,
    fail,
    format_table,
    machine_info,
    measure,
    median,
    python_module_version,
    run_load_tool,
    run_wrk,
    start_server,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CHANNELS_APP = "bench.apps.django_bench.asgi_channels:application"
SLUICEWAY_APP = "bench.apps.django_bench.asgi_sluiceway:application"
CASES = ("json", "ws")
# sluiceway's and uvicorn's common flags: quiet logs, no lifespan, uvloop.
QUIET = ["--log-level", "warning", "--no-access-log", "--lifespan", "off", "--loop", "uvloop"]


def servers() -> list[ServerSpec]:
    py = sys.executable
    return [
        ServerSpec(
            "sluiceway",
            lambda port: [
                py,
                "-m",
                "sluiceway",
                "run",
                SLUICEWAY_APP,
                "--port",
                str(port),
                *QUIET,
            ],
            python_module_version("sluiceway"),
        ),
        ServerSpec(
            "daphne",
            lambda port: [
                py,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                str(port),
                "-v",
                "0",
                CHANNELS_APP,
            ],
            python_module_version("daphne"),
        ),
        ServerSpec(
            "uvicorn",
            lambda port: [
                py,
                "-m",
                "uvicorn",
                CHANNELS_APP,
                "--port",
                str(port),
                *QUIET,
                "--http",
                "httptools",
            ],
            python_module_version("uvicorn"),
        ),
    ]


def build_wsload(directory: Path) -> Path:
    binary = directory / "wsload"
    subprocess.run(["gcc", "-O2", "-o", str(binary), str(HERE / "wsload.c")], check=True)
    return binary


def ws_echo(wsload: Path, server: RunningServer, seconds: float) -> float:
    """Messages per second echoed by 64 clients through the consumer and the layer."""
    argv = [str(wsload), "echo", "127.0.0.1", str(server.port), "/ws/echo/"]
    argv += ["64", "100", "text", str(seconds), "1"]
    out, _ = run_load_tool(argv, timeout_s=seconds + 60)
    if not out.stdout.strip():
        raise BenchError(f"wsload failed against {server.spec.name}: {out.stderr.strip()}")
    result = json.loads(out.stdout)
    return float(result["msgs_per_s"])


def json_rps(server: RunningServer, seconds: float) -> float:
    result = measure(
        server,
        lambda: run_wrk(f"http://127.0.0.1:{server.port}/json", connections=64, duration_s=seconds),
    )
    if result.errors:
        raise BenchError(f"{server.spec.name} /json: {result.error_detail()}")
    return result.rps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    specs = [s for s in servers() if s.version() is not None]
    missing = {"sluiceway", "daphne", "uvicorn"} - {s.name for s in specs}
    if missing:
        fail(f"not installed: {', '.join(sorted(missing))} (pip install -r bench/requirements.txt)")
    results: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="sluiceway-django-bench-") as tmp:
        wsload = build_wsload(Path(tmp))
        for round_no in range(args.rounds):
            order = specs[round_no % len(specs) :] + specs[: round_no % len(specs)]
            for spec in order:
                try:
                    server = start_server(spec, cwd=ROOT, log_dir=Path(tmp), ready_path="/json")
                except BenchError as exc:
                    fail(str(exc))
                try:
                    for case in CASES:
                        if case == "json":
                            value = json_rps(server, args.duration)
                        else:
                            value = ws_echo(wsload, server, args.duration)
                        results.setdefault((spec.name, case), []).append(value)
                        print(
                            f"round {round_no + 1} {spec.name:10} {case:5} {value:10,.0f}/s",
                            flush=True,
                        )
                except BenchError as exc:
                    fail(str(exc))
                finally:
                    server.stop()
    report = render(results, specs, args)
    print(report)
    if args.output:
        args.output.write_text(report + "\n")
    return 0


def render(
    results: dict[tuple[str, str], list[float]], specs: list[ServerSpec], args: argparse.Namespace
) -> str:
    info = machine_info()
    lines = [
        "# Django: sluiceway + sluiceway.django against Daphne + Channels and uvicorn + Channels",
        "",
        f"`python bench/django_load.py --rounds {args.rounds} --duration {args.duration:g}`;"
        f" {info['cpu']}, {info['cores']} cores, {info['python']}, {info['date']}.",
        "Server on core 0, load tool on core 1. json: wrk -c64 `GET /json` (requests/s);"
        " ws: 64 WebSocket clients echoing 100-byte messages through `group_send` (messages/s).",
        "Versions: "
        + ", ".join(f"{s.name} {s.version()}" for s in specs)
        + f", channels {python_module_version('channels')()},"
        f" Django {python_module_version('django')()}.",
        "",
    ]
    header = ["case", *(s.name for s in specs), "vs daphne (paired)", "vs uvicorn (paired)"]
    rows = []
    for case in CASES:
        ours = results[("sluiceway", case)]
        row = [case, *(f"{median(results[(s.name, case)]):,.0f}" for s in specs)]
        for peer in ("daphne", "uvicorn"):
            paired = [a / b for a, b in zip(ours, results[(peer, case)], strict=True) if b]
            row.append(f"{median(paired):.2f}x (" + ", ".join(f"{r:.2f}" for r in paired) + ")")
        rows.append(row)
    lines.append(format_table(header, rows, markdown=True))
    return "\n".join(lines)


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except BenchError as exc:
        fail(str(exc))
