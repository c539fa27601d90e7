"""What Django's own ASGI handler costs per request, with no server at all (issue 19).

    taskset -c 0 python bench/django_inprocess.py [--requests 6400] [--concurrency 64]

The bench project's async JSON view (bench/apps/django_bench, no middleware, no
database) is called in process, ``app(scope, receive, send)``, by ``--concurrency``
tasks at once on one event loop, and the process's CPU time per request is printed for:

- ``django``: ``django.core.asgi.get_asgi_application()``, Django's handler as is
  (a thread started per request, and another to join it);
- ``sluiceway.django``: ``sluiceway.django.asgi.get_asgi_application()``, what the
  server runs: on Django 5.0+ sluiceway.django.handler's leaner handler, with each
  request's sync work on a reused thread;
- ``threads only``: Django's own handler with sluiceway.django's reused threads (what
  the server ran before sluiceway.django.handler);
- ``no threads``: sluiceway.django's handler with its sync work run inline on the loop's
  thread. Not something to deploy (a sync view or a database call would block the
  loop, and Django refuses database access there): what the handler costs with no
  thread at all. It is not lower than ``sluiceway.django``: running a call inline still
  goes through a ``concurrent.futures.Future`` chained to the loop's, which costs about
  what a hop to a reused thread that answers on the loop's own future does.

The server's budget per request for a multiple of Daphne's rate is the time Daphne
takes per request divided by that multiple (bench/results/django.md has Daphne's
rate); this prints what Django alone takes of it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.apps.django_bench.settings")

SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.3"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/json",
    "raw_path": b"/json",
    "query_string": b"",
    "root_path": "",
    "headers": [(b"host", b"bench")],
    "client": ("127.0.0.1", 50000),
    "server": ("127.0.0.1", 8000),
}


class Inline(Executor):
    """Runs what it is given at once, on the caller's thread (measurement only)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


def applications() -> dict[str, Any]:
    import django
    from asgiref.sync import ThreadSensitiveContext
    from django.core.asgi import get_asgi_application as django_application

    from sluiceway.django.asgi import RequestThreads, get_asgi_application

    django.setup()
    served = get_asgi_application()
    # The handler the server runs (sluiceway.django.handler's on Django 5.0+), unwrapped.
    handler = served.app if isinstance(served, RequestThreads) else served

    async def no_threads(scope: Any, receive: Any, send: Any) -> None:
        async with ThreadSensitiveContext(executor=Inline()):
            await handler(scope, receive, send)

    return {
        "django": django_application(),
        "sluiceway.django": served,
        "threads only": RequestThreads(django_application()),
        "no threads": no_threads,
    }


async def one_request(app: Any) -> None:
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.get_running_loop().create_future()  # no disconnect: wait forever
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(dict(SCOPE), receive, send)
    if status != 200:
        raise SystemExit(f"the view answered {status}")


async def measure(app: Any, requests: int, concurrency: int) -> float:
    """CPU microseconds per request, after a warm-up."""

    async def worker(n: int) -> None:
        for _ in range(n):
            await one_request(app)

    await asyncio.gather(*(worker(10) for _ in range(concurrency)))
    per_task = max(1, requests // concurrency)
    start = time.process_time()
    await asyncio.gather(*(worker(per_task) for _ in range(concurrency)))
    return (time.process_time() - start) / (per_task * concurrency) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=6400)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    apps = applications()
    results: dict[str, list[float]] = {name: [] for name in apps}
    for _ in range(args.rounds):
        for name, app in apps.items():
            results[name].append(asyncio.run(measure(app, args.requests, args.concurrency)))
    for name, values in results.items():
        values.sort()
        cells = ", ".join(f"{v:.0f}" for v in values)
        print(f"{name:18} {values[len(values) // 2]:6.0f} µs CPU per request (rounds: {cells})")


if __name__ == "__main__":
    main()
