"""Python cost per request of the HTTP/1.1 protocol, without sockets: steady numbers for H1 work.

    python bench/micro_http1.py                      # sluiceway and uvicorn, GET /, 64 connections
    python bench/micro_http1.py --path '/json?name=sluice&page=2' --server sluiceway

End-to-end numbers (bench/http_load.py) mix the kernel's loopback TCP (about a third of a request's
CPU here) with the server's Python, and swing with whatever else runs on a shared machine. This
drives the real protocol object of each server (``HTTP1Protocol``; uvicorn's
``HttpToolsProtocol``) with an in-memory transport on a uvloop loop, the way a busy event loop
does: every connection gets one request (``data_received``), then the loop runs once so the app
tasks answer, and so on. What is left is parser callbacks, scope building, task scheduling, the
ASGI cycle, header encoding and the app: the part of a request H1 can change.

Output: microseconds of process CPU per request, the best of ``--repeat`` runs (as timeit
does: other work on the machine only ever adds time) with the median beside it, and requests per
CPU-second; the ratio to uvicorn says how far the Python side alone would carry an end-to-end
ratio. Invariants: every response is checked to arrive whole (one per request, status 200); a
run that loses one fails instead of reporting a number. Imports sluiceway and uvicorn (that is
its point), so it lives apart from the wrk harness.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Keep this script's folder off sys.path (nothing in bench/ may shadow a library), and
# reach the apps folder explicitly.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.append(str(_HERE / "apps"))

# ruff: noqa: E402
import argparse
import asyncio
import gc
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import uvloop
from http_apps import app as bench_app


class MemoryTransport(asyncio.Transport):
    """Just enough transport for a server protocol: counts responses, never blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.responses = 0
        self.ok = 0
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        # Every scenario here answers with one write per response that starts with its status line.
        view = bytes(data[:12])
        if view.startswith(b"HTTP/1.1 "):
            self.responses += 1
            if view == b"HTTP/1.1 200":
                self.ok += 1

    def writelines(self, chunks: Any) -> None:
        self.write(b"".join(chunks))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {
            "peername": ("127.0.0.1", 50000),
            "sockname": ("127.0.0.1", 8000),
        }.get(name, default)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_reading(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass


def sluiceway_factory(loop: asyncio.AbstractEventLoop) -> Callable[[], asyncio.Protocol]:
    from sluiceway.config import Config
    from sluiceway.connection.state import ServerState
    from sluiceway.server.listener import make_protocol_factory

    config = Config(access_log=False)
    app: Any = bench_app
    # As the runner does by default (uvicorn's Config.load() wraps its app the same way).
    if getattr(config, "proxy_headers", False):
        from sluiceway.server.proxy_headers import ProxyHeadersMiddleware, TrustedHosts

        app = ProxyHeadersMiddleware(app, TrustedHosts(config.forwarded_allow_ips))
    return make_protocol_factory(config, app, ServerState(config))


def uvicorn_factory(loop: asyncio.AbstractEventLoop) -> Callable[[], asyncio.Protocol]:
    from uvicorn.config import Config
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.server import ServerState

    config = Config(bench_app, http="httptools", loop="none", access_log=False, log_level="error")
    config.load()
    state = ServerState()
    return lambda: HttpToolsProtocol(config=config, server_state=state, app_state={}, _loop=loop)


FACTORIES = {"sluiceway": sluiceway_factory, "uvicorn": uvicorn_factory}


async def run_once(
    factory: Callable[[], asyncio.Protocol], request: bytes, connections: int, rounds: int
) -> float:
    """Serve ``connections * rounds`` requests; return process CPU seconds spent."""
    pairs = []
    for _ in range(connections):
        proto = factory()
        transport = MemoryTransport()
        proto.connection_made(transport)
        pairs.append((proto, transport))

    def feed() -> None:
        for proto, _transport in pairs:
            proto.data_received(request)

    loop = asyncio.get_running_loop()
    gc.collect()
    start = time.process_time()
    for _ in range(rounds):
        # From a loop callback, as a transport's read callback delivers data (not from
        # inside this task): sluiceway runs an app's first step there (connection/tasks.py).
        loop.call_soon(feed)
        # The next pass runs feed and then the app tasks; a few more finish any that
        # awaited something.
        for _ in range(4):
            await asyncio.sleep(0)
    spent = time.process_time() - start
    expected = rounds
    for proto, transport in pairs:
        if transport.ok != expected:
            raise SystemExit(
                f"{type(proto).__name__}: {transport.ok} of {expected} responses were 200"
                f" ({transport.responses} responses in all)"
            )
        proto.connection_lost(None)
    return spent


def measure(
    name: str, request: bytes, connections: int, rounds: int, repeat: int
) -> tuple[float, list[float]]:
    """Best µs per request over ``repeat`` runs, and every run (one warm-up run first)."""
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        factory = FACTORIES[name](loop)
        per_request = []
        for i in range(repeat + 1):
            spent = loop.run_until_complete(run_once(factory, request, connections, rounds))
            if i:  # the first run warms caches and lazy imports
                per_request.append(1e6 * spent / (connections * rounds))
        return min(per_request), per_request
    finally:
        loop.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/micro_http1.py", description=__doc__)
    parser.add_argument("--server", default="sluiceway,uvicorn", help="comma list")
    parser.add_argument("--path", default="/", help="request target (default /)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=300, help="requests per connection per run")
    parser.add_argument("--repeat", type=int, default=5, help="measured runs (best reported)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    request = (
        f"GET {args.path} HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: micro\r\n"
        "Accept: */*\r\n\r\n"
    ).encode()
    names = [n.strip() for n in args.server.split(",") if n.strip()]
    unknown = [n for n in names if n not in FACTORIES]
    if unknown:
        parser.error(f"unknown server {', '.join(unknown)}; choose from {', '.join(FACTORIES)}")
    results = {}
    for name in names:
        best, runs = measure(name, request, args.connections, args.rounds, args.repeat)
        results[name] = best
        print(
            f"{name:<10} {best:7.2f} µs/request  ({1e6 / best:,.0f} req/CPU-s;"
            f" median {statistics.median(runs):.2f}, worst {max(runs):.2f})"
        )
    if "uvicorn" in results:
        for name, best in results.items():
            if name != "uvicorn":
                print(f"{name}: {best / results['uvicorn']:.2f}x uvicorn's Python cost per request")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
