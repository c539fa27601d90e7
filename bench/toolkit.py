"""Toolkit benchmark: sluiceway's routing, middleware, consumers and sync bridge beside
Django Channels' and asgiref's own classes, in one process, one command.

    python bench/toolkit.py                   # 7 interleaved rounds, all scenarios
    python bench/toolkit.py --rounds 3 --scenarios a,d --output bench/results/toolkit.md

Scenarios (issue 4), each reported in operations per second:

(a) URLRouter dispatch over 200 ``path()`` routes (``r<i>/<int:pk>/``), targets spread over
    all routes, leaf app a no-op. One op = one dispatch.
(b) A full cookie + session + auth middleware stack per HTTP request. The request carries a
    valid signed-cookie session (both sides use signed cookie sessions: Django's
    ``signed_cookies`` engine and our ``SignedCookieStore``); the app reads the user and
    increments a counter in the session, so the session is saved and the cookie re-set.
    Anonymous user: no user-table lookup on either side. One op = one request.
(c) Events through an async WebSocket echo consumer via each project's own test
    communicator: connect, 1,000 receive/send round trips, disconnect. One op = one
    round trip.
(d) ``sync_to_async`` round trips of a no-op function (thread_sensitive=True, the default
    on both sides). One op = one call.

Method: one event loop (the stdlib one, as under pytest), each scenario runs a warm-up, then
``--rounds`` rounds; in each round every implementation runs once, alternating which goes
first. Cells are medians over rounds; the ratio is sluiceway / peer.

Needs: ``channels`` and ``django`` (bench only, not a sluiceway dependency); asgiref comes
with Django.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Import sluiceway from this checkout's src/, and nothing from bench/ by accident.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(ROOT / "src"))

ROUTES = 200

Runner = Callable[[int], Awaitable[float]]  # ops -> seconds


# ---------------------------------------------------------------------------------------------
# Django / Channels set-up (bench only)


def setup_django() -> None:
    import django
    from django.conf import settings

    if settings.configured:
        return
    settings.configure(
        DEBUG=False,
        SECRET_KEY="bench-secret-key-bench-secret-key",
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "channels",
        ],
        SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": str(Path(tempfile.gettempdir()) / "sluiceway-bench-toolkit.sqlite3"),
            }
        },
        USE_TZ=True,
        ROOT_URLCONF=__name__,
    )
    django.setup()


urlpatterns: list[Any] = []  # ROOT_URLCONF for Django; Channels routes on its own


# ---------------------------------------------------------------------------------------------
# Fakes for the ASGI server side: as cheap as possible, identical for both implementations


async def noop_app(scope: Any, receive: Any, send: Any) -> None:
    return None


def http_scope(path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.5"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def receive_request() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


# ---------------------------------------------------------------------------------------------
# (a) routing


def routing_runner(which: str) -> Runner:
    if which == "channels":
        from channels.routing import URLRouter
        from django.urls import path
    else:
        from sluiceway.routing import URLRouter, path  # type: ignore[assignment]

    router = URLRouter([path(f"r{i}/<int:pk>/", noop_app) for i in range(ROUTES)])
    # Stride through the routes so every position is hit equally often.
    scopes = [http_scope(f"/r{(i * 37) % ROUTES}/{i}/", []) for i in range(ROUTES)]

    async def run(ops: int) -> float:
        n = len(scopes)
        start = time.perf_counter()
        for i in range(ops):
            await router(scopes[i % n], receive_request, noop_send)
        return time.perf_counter() - start

    return run


async def noop_send(message: Any) -> None:
    return None


# ---------------------------------------------------------------------------------------------
# (b) cookie + session + auth stack


async def session_app(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    user = scope["user"]
    session = scope["session"]
    session["visits"] = session.get("visits", 0) + 1
    body = str(session["visits"]).encode() if not user.is_authenticated else b"user"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def first_cookie(stack: Any) -> bytes:
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    await stack(http_scope("/", []), receive_request, send)
    for name, value in sent[0]["headers"]:
        if name.lower() == b"set-cookie":
            return bytes(value.split(b";", 1)[0])
    raise RuntimeError("the stack set no session cookie")


def middleware_runner(which: str) -> Runner:
    if which == "channels":
        from channels.auth import AuthMiddlewareStack

        stack = AuthMiddlewareStack(session_app)
    else:
        from sluiceway.middleware import AuthMiddlewareStack as OurStack

        async def no_users(user_id: Any) -> None:
            return None

        stack = OurStack(session_app, no_users, secret_key="bench-secret-key-bench-secret-key")
    cookie: list[bytes] = []
    responses = 0
    bodies: set[bytes] = set()

    async def send(message: Any) -> None:
        nonlocal responses
        if message["type"] == "http.response.start":
            responses += 1
            if not any(k.lower() == b"set-cookie" for k, _ in message.get("headers", ())):
                raise RuntimeError(f"{which}: the changed session was not saved")
        else:
            bodies.add(message.get("body", b""))

    async def run(ops: int) -> float:
        nonlocal responses
        if not cookie:
            cookie.append(await first_cookie(stack))
        scope = http_scope("/", [(b"host", b"testserver"), (b"cookie", cookie[0])])
        responses = 0
        start = time.perf_counter()
        for _ in range(ops):
            await stack(dict(scope), receive_request, send)
        elapsed = time.perf_counter() - start
        # Every request carries the cookie of the first visit: the count read back must be 2.
        if responses != ops or bodies != {b"2"}:
            raise RuntimeError(f"{which}: {responses}/{ops} responses, bodies {bodies}")
        bodies.clear()
        return elapsed

    return run


# ---------------------------------------------------------------------------------------------
# (c) WebSocket consumer through the test communicators


def channels_websocket_communicator() -> Any:
    """channels.testing.WebsocketCommunicator, without installing daphne.

    The package's ``__init__`` imports its live-server test case, which needs
    daphne; the communicator itself does not. A placeholder module lets the
    import through (only the live server would need the real thing).
    """
    import types

    if "daphne.testing" not in sys.modules:
        try:
            import daphne.testing  # noqa: F401
        except ImportError:
            placeholder = types.ModuleType("daphne.testing")
            placeholder.DaphneProcess = object  # type: ignore[attr-defined]
            sys.modules.setdefault("daphne", types.ModuleType("daphne"))
            sys.modules["daphne.testing"] = placeholder
    from channels.testing import WebsocketCommunicator

    return WebsocketCommunicator


def consumer_runner(which: str) -> Runner:
    if which == "channels":
        from channels.generic.websocket import AsyncWebsocketConsumer

        WebsocketCommunicator = channels_websocket_communicator()
    else:
        from sluiceway.consumers import AsyncWebsocketConsumer  # type: ignore[assignment]
        from sluiceway.testing import WebsocketCommunicator  # type: ignore[assignment]

    class Echo(AsyncWebsocketConsumer):  # type: ignore[misc, valid-type]
        async def receive(self, text_data: Any = None, bytes_data: Any = None) -> None:
            await self.send(text_data=text_data)

    app = Echo.as_asgi()

    async def run(ops: int) -> float:
        start = time.perf_counter()
        done = 0
        while done < ops:
            comm = WebsocketCommunicator(app, "/ws/")
            connected, _ = await comm.connect()
            if not connected:
                raise RuntimeError(f"{which}: the consumer refused the connection")
            batch = min(1000, ops - done)
            for i in range(batch):
                await comm.send_to(text_data="m")
                if await comm.receive_from() != "m":
                    raise RuntimeError(f"{which}: wrong echo at event {i}")
            await comm.disconnect()
            done += batch
        return time.perf_counter() - start

    return run


# ---------------------------------------------------------------------------------------------
# (d) sync_to_async


def sync_runner(which: str) -> Runner:
    if which == "asgiref":
        from asgiref.sync import sync_to_async
    else:
        from sluiceway.sync import sync_to_async  # type: ignore[assignment]

    def work() -> int:
        return 1

    call = sync_to_async(work)

    async def run(ops: int) -> float:
        start = time.perf_counter()
        total = 0
        for _ in range(ops):
            total += await call()
        if total != ops:
            raise RuntimeError(f"{which}: wrong results")
        return time.perf_counter() - start

    return run


# ---------------------------------------------------------------------------------------------


SCENARIOS: dict[str, tuple[str, Callable[[str], Runner], str, int, float]] = {
    # key: (title, runner factory, peer, ops per round, target ratio)
    "a": ("URLRouter dispatch, 200 routes", routing_runner, "channels", 20_000, 2.0),
    "b": ("cookie+session+auth stack, per request", middleware_runner, "channels", 2_000, 2.0),
    "c": ("WebSocket consumer events via communicators", consumer_runner, "channels", 3_000, 3.0),
    "d": ("sync_to_async round trips", sync_runner, "asgiref", 3_000, 1.0),
}


async def measure(key: str, rounds: int) -> tuple[float, float]:
    _title, factory, peer, ops, _ = SCENARIOS[key]
    runners = {"sluiceway": factory("sluiceway"), peer: factory(peer)}
    for run in runners.values():  # warm-up: imports, caches, thread start
        await run(max(ops // 10, 10))
    rates: dict[str, list[float]] = {name: [] for name in runners}
    order = list(runners)
    for r in range(rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            rates[name].append(ops / await runners[name](ops))
        print(
            f"  ({key}) round {r + 1}: " + ", ".join(f"{n} {rates[n][-1]:,.0f}/s" for n in order),
            file=sys.stderr,
        )
    return statistics.median(rates["sluiceway"]), statistics.median(rates[peer])


def versions() -> str:
    from importlib.metadata import version

    parts = [f"Python {platform.python_version()}"]
    for package in ("channels", "django", "asgiref"):
        parts.append(f"{package} {version(package)}")
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--scenarios", default="a,b,c,d")
    parser.add_argument("--output", type=Path, default=None, help="write a Markdown table here")
    args = parser.parse_args(argv)
    keys = [k.strip() for k in args.scenarios.split(",") if k.strip()]
    unknown = [k for k in keys if k not in SCENARIOS]
    if unknown or args.rounds < 1:
        parser.error(f"unknown scenario(s) {unknown}; choose from {','.join(SCENARIOS)}")
    try:
        setup_django()
    except ImportError as exc:
        print(f"bench/toolkit.py needs channels and django: {exc}", file=sys.stderr)
        return 2

    async def run_all() -> list[tuple[str, float, float]]:
        return [(k, *(await measure(k, args.rounds))) for k in keys]

    results = asyncio.run(run_all())
    lines = [
        f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.machine()} "
        f"({platform.processor() or platform.platform()}), {versions()}; "
        f"{args.rounds} interleaved rounds, medians.",
        "",
        "| scenario | sluiceway ops/s | peer | peer ops/s | ratio | target |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for key, ours, theirs in results:
        title, _, peer, _, target = SCENARIOS[key]
        ratio = ours / theirs
        mark = "met" if ratio >= target else "MISSED"
        lines.append(
            f"| ({key}) {title} | {ours:,.0f} | {peer} | {theirs:,.0f} | "
            f"{ratio:.2f}x | {target:g}x {mark} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.output is not None:
        args.output.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
