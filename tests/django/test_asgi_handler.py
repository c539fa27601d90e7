"""sluiceway.django.asgi: Django's handler with each request's sync work on a reused thread.

Served by a real sluiceway server, driven by httpx. The views record the
thread their sync work ran on: sequential requests share a pooled thread,
concurrent ones never do, and a request that left its thread busy (the client
went away while its sync view ran) never hands that thread to the next one.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.test import override_settings
from django.urls import path

from sluiceway.django.asgi import HAS_EXECUTOR, RequestThreads, get_asgi_application
from tests.server.serving import running

pytestmark = pytest.mark.skipif(
    not HAS_EXECUTOR,
    reason="asgiref < 3.13 (Python 3.10) has no ThreadSensitiveContext(executor=): "
    "get_asgi_application() is Django's own there",
)

T = 10.0
seen: list[int] = []
release = threading.Event()
entered = threading.Event()


def sync_view(request: HttpRequest) -> HttpResponse:
    seen.append(threading.get_ident())
    return HttpResponse(str(threading.get_ident()))


def blocking_view(request: HttpRequest) -> HttpResponse:
    seen.append(threading.get_ident())
    entered.set()
    release.wait(T)
    return HttpResponse("late")


async def async_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"hello": "world"})


urlpatterns = [
    path("sync", sync_view),
    path("block", blocking_view),
    path("async", async_view),
]


@pytest.fixture
def app() -> Iterator[RequestThreads]:
    with override_settings(ROOT_URLCONF=__name__, MIDDLEWARE=[]):
        application = get_asgi_application()
        assert isinstance(application, RequestThreads)
        seen.clear()
        release.clear()
        entered.clear()
        yield application
        release.set()


async def test_django_answers_as_without_the_wrapper(app: RequestThreads) -> None:
    async with running(app) as server, httpx.AsyncClient(timeout=T) as client:
        base = f"http://127.0.0.1:{server.port}"
        reply = await client.get(f"{base}/async")
        assert reply.status_code == 200 and reply.json() == {"hello": "world"}
        assert reply.headers["content-type"] == "application/json"
        assert (await client.get(f"{base}/missing")).status_code == 404


async def test_sequential_requests_reuse_one_thread(app: RequestThreads) -> None:
    async with running(app) as server, httpx.AsyncClient(timeout=T) as client:
        for _ in range(20):
            assert (await client.get(f"http://127.0.0.1:{server.port}/sync")).status_code == 200
    # Django's own handler starts (and joins) a new thread for every request.
    # Here a thread is reused once its request is over; the client's next
    # request may arrive while the last one is still closing, hence two.
    assert len(seen) == 20 and app.threads_started <= 2
    assert threading.get_ident() not in seen  # never the event loop's thread
    assert 1 <= app.idle_threads <= 2


async def test_concurrent_requests_never_share_a_thread(app: RequestThreads) -> None:
    async with running(app) as server, httpx.AsyncClient(timeout=T) as client:
        base = f"http://127.0.0.1:{server.port}"
        blocked = asyncio.ensure_future(client.get(f"{base}/block"))
        await asyncio.to_thread(entered.wait, T)
        # While /block holds its thread, another request gets another thread.
        other = await client.get(f"{base}/sync")
        release.set()
        assert (await blocked).text == "late"
    blocker, other_thread = seen
    assert int(other.text) == other_thread != blocker


async def test_a_thread_left_busy_is_not_reused() -> None:
    # Through Django's handler a request's sync work is over when the handler
    # returns (asgiref finishes a cancelled sync call before it lets go); an
    # app that leaves work on its thread must still not pass it on.
    from asgiref.sync import sync_to_async

    threads: list[int] = []

    def record() -> None:
        threads.append(threading.get_ident())

    left: list[asyncio.Future[Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await sync_to_async(record)()
        if scope["path"] == "/leave-busy":
            left.append(asyncio.ensure_future(sync_to_async(release.wait)(T)))
            await asyncio.sleep(0)  # the task hands its call to this request's thread

    pool = RequestThreads(app)
    release.clear()
    try:
        await pool({"type": "http", "path": "/"}, None, None)  # type: ignore[arg-type]
        await pool({"type": "http", "path": "/leave-busy"}, None, None)  # type: ignore[arg-type]
        assert threads[0] == threads[1]  # the first thread was reused...
        await pool({"type": "http", "path": "/"}, None, None)  # type: ignore[arg-type]
        assert threads[2] != threads[1]  # ...but not once it was left busy
        assert pool.threads_started == 2
    finally:
        release.set()
        await asyncio.gather(*left, return_exceptions=True)


def concurrent_app(parties: int) -> tuple[Any, list[int]]:
    """An app whose requests each hold their thread until ``parties`` of them hold one."""
    from asgiref.sync import sync_to_async

    barrier = threading.Barrier(parties)
    threads: list[int] = []

    def meet() -> None:
        threads.append(threading.get_ident())
        barrier.wait(T)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await sync_to_async(meet)()

    return app, threads


async def test_as_many_threads_as_requests_in_flight_stay_for_the_next_ones() -> None:
    # 40 requests at once, twice: the second wave finds the first wave's 40
    # threads idle. (With a pool that kept 32, 8 threads ended as the first
    # wave finished and 8 new ones started for the second: under steady load
    # past the pool's size, a thread started every few requests.)
    app, threads = concurrent_app(40)
    pool = RequestThreads(app)
    scope = {"type": "http", "path": "/"}
    for _ in range(2):
        await asyncio.gather(*(pool(dict(scope), None, None) for _ in range(40)))  # type: ignore[arg-type]
    assert len(set(threads)) == 40 and pool.threads_started == 40
    assert pool.idle_threads == 40


async def test_a_thread_idle_past_the_timeout_ends() -> None:
    app, threads = concurrent_app(2)
    pool = RequestThreads(app, idle_timeout_s=0.05)
    scope = {"type": "http", "path": "/"}
    await asyncio.gather(*(pool(dict(scope), None, None) for _ in range(2)))  # type: ignore[arg-type]
    assert pool.idle_threads == 2
    await asyncio.sleep(0.1)  # both idle past the timeout: the subject is time itself
    single, _ = concurrent_app(1)
    pool.app = single
    await pool(dict(scope), None, None)  # type: ignore[arg-type]
    # The newest idle thread served it; the older one had idled too long and ended.
    assert pool.idle_threads == 1 and pool.threads_started == 2
    alive = {t.ident for t in threading.enumerate()}
    first_two = set(threads)
    deadline = asyncio.get_running_loop().time() + T
    while len(first_two & alive) != 1:  # ending is the thread's own, after shutdown()
        assert asyncio.get_running_loop().time() < deadline, "the idle thread did not end"
        await asyncio.sleep(0.01)
        alive = {t.ident for t in threading.enumerate()}


def test_a_request_thread_runs_calls_in_order_and_counts_what_is_left() -> None:
    from sluiceway.django.asgi import _RequestThread

    executor = _RequestThread()
    gate = threading.Event()
    ran: list[tuple[str, int]] = []

    def record(name: str) -> str:
        ran.append((name, threading.get_ident()))
        return name

    def fail() -> None:
        raise ValueError("from the sync side")

    first = executor.submit(gate.wait, T)
    queued = [executor.submit(record, "a"), executor.submit(fail), executor.submit(record, "b")]
    skipped = executor.submit(record, "cancelled")
    assert skipped.cancel()  # still queued: never runs, but counted as done
    assert not executor.idle
    gate.set()
    assert first.result(T) is True
    assert queued[0].result(T) == "a" and queued[2].result(T) == "b"
    with pytest.raises(ValueError, match="from the sync side"):
        queued[1].result(T)
    assert [name for name, _ in ran] == ["a", "b"]
    assert len({ident for _, ident in ran}) == 1 and ran[0][1] != threading.get_ident()
    executor.submit(record, "last").result(T)
    assert executor.idle  # every call is counted before its future resolves
    executor.shutdown(wait=True)
    assert not executor._thread.is_alive()
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(record, "late")


@pytest.mark.parametrize("kind", ["asyncio", "uvloop"])
def test_a_request_thread_hands_results_back_to_the_loop_that_asked(kind: str) -> None:
    import operator

    import uvloop

    from sluiceway.django.asgi import _RequestThread

    async def main() -> None:
        loop = asyncio.get_running_loop()
        executor = _RequestThread()
        gate = threading.Event()
        ran: list[str] = []
        first = loop.run_in_executor(executor, gate.wait, T)
        assert isinstance(first, asyncio.Future)  # the loop's own future, not a wrapper
        skipped = loop.run_in_executor(executor, ran.append, "cancelled")
        failing = loop.run_in_executor(executor, operator.truediv, 1, 0)
        skipped.cancel()  # still queued: never runs
        gate.set()
        assert await first is True
        with pytest.raises(ZeroDivisionError):
            await failing
        await loop.run_in_executor(executor, ran.append, "after")
        assert ran == ["after"] and executor.idle
        executor.shutdown()

    if kind == "uvloop":
        uvloop.run(main())
    else:
        asyncio.run(main())


def test_a_call_outliving_its_loop_leaves_the_thread_working() -> None:
    from sluiceway.django.asgi import _RequestThread

    executor = _RequestThread()
    gate = threading.Event()
    loop = asyncio.new_event_loop()

    async def start() -> Any:
        return loop.run_in_executor(executor, gate.wait, T)

    pending = loop.run_until_complete(start())
    loop.close()  # the call's result has nowhere to go now
    gate.set()
    assert not pending.done()
    assert executor.submit(threading.get_ident).result(T) == executor._thread.ident
    executor.shutdown()
