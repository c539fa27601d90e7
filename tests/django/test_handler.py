"""sluiceway.django.handler: Django's request cycle, with one task and two thread hops per request.

The first tests serve the handler (through ``get_asgi_application()``) on a real
sluiceway server, driven by httpx and raw sockets: the signals run where Django
runs them, a client that leaves cancels the view, a response that was streaming
when the client left is closed. The rest call the application directly, as a
server would, to reach the cases a well-behaved server never produces on demand:
a view that keeps its cancellation, a cancellation from outside that must not be
taken for the client's, a message other than ``http.disconnect`` after the body.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import django
import httpx
import pytest
from django.core import signals
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.test import override_settings
from django.urls import path

from sluiceway.django.asgi import HAS_EXECUTOR, RequestThreads, get_asgi_application
from tests.server.serving import running

pytestmark = pytest.mark.skipif(
    not HAS_EXECUTOR or django.VERSION < (5, 0) or sys.version_info < (3, 11),
    reason="get_asgi_application() uses Django's own handler here",
)

T = 10.0


class Record:
    """What the views, the receivers and the stream saw, and events to await them by."""

    def __init__(self) -> None:
        self.threads: dict[str, int] = {}
        self.started_paths: list[str] = []
        self.async_started_paths: list[str] = []
        self.finished = 0
        self.finished_event = asyncio.Event()
        self.entered = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.stream_closed = asyncio.Event()
        self.loop = asyncio.get_running_loop()

    def on_loop(self, event: asyncio.Event) -> None:
        self.loop.call_soon_threadsafe(event.set)


rec: Record


def sync_view(request: HttpRequest) -> HttpResponse:
    rec.threads["view"] = threading.get_ident()
    return HttpResponse("sync")


async def echo_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse(request.body[::-1])


async def waiting_view(request: HttpRequest) -> HttpResponse:
    rec.entered.set()
    try:
        await asyncio.sleep(T)
    except asyncio.CancelledError:
        rec.cancelled.set()
        raise
    return HttpResponse("too late")


async def keeping_view(request: HttpRequest) -> HttpResponse:
    rec.entered.set()
    try:
        await asyncio.sleep(T)
    except asyncio.CancelledError:
        rec.cancelled.set()  # and carry on: Django lets a view handle its cancellation
    return HttpResponse("kept")


async def quick_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"quick": True})  # never suspends


async def streaming_view(request: HttpRequest) -> StreamingHttpResponse:
    async def parts() -> AsyncIterator[bytes]:
        try:
            yield b"first part\n"
            rec.entered.set()
            await asyncio.sleep(T)
            yield b"never sent\n"
        finally:
            rec.stream_closed.set()

    return StreamingHttpResponse(parts())


urlpatterns = [
    path("sync", sync_view),
    path("echo", echo_view),
    path("wait", waiting_view),
    path("keep", keeping_view),
    path("quick", quick_view),
    path("stream", streaming_view),
]


def on_started(sender: Any, scope: Any, **kwargs: Any) -> None:
    rec.threads["started"] = threading.get_ident()
    rec.started_paths.append(scope["path"])


async def on_started_async(sender: Any, scope: Any, **kwargs: Any) -> None:
    rec.async_started_paths.append(scope["path"])


def on_finished(sender: Any, **kwargs: Any) -> None:
    rec.threads["finished"] = threading.get_ident()
    rec.finished += 1
    rec.on_loop(rec.finished_event)


@pytest.fixture
async def app() -> AsyncIterator[RequestThreads]:
    global rec
    rec = Record()
    signals.request_started.connect(on_started)
    signals.request_finished.connect(on_finished)
    try:
        with override_settings(ROOT_URLCONF=__name__, MIDDLEWARE=[]):
            application = get_asgi_application()
            assert isinstance(application, RequestThreads)
            from sluiceway.django.handler import ASGIHandler

            assert isinstance(application.app, ASGIHandler)
            yield application
    finally:
        signals.request_started.disconnect(on_started)
        signals.request_finished.disconnect(on_finished)


@pytest.fixture
def async_receiver() -> Iterator[None]:
    signals.request_started.connect(on_started_async)
    yield
    signals.request_started.disconnect(on_started_async)


# -- through the server ----------------------------------------------------------------


async def test_the_signals_run_on_the_request_thread_as_the_sync_view_does(
    app: RequestThreads,
) -> None:
    async with running(app) as server, httpx.AsyncClient(timeout=T) as client:
        reply = await client.get(f"http://127.0.0.1:{server.port}/sync")
        assert reply.status_code == 200 and reply.text == "sync"
        await asyncio.wait_for(rec.finished_event.wait(), T)
    assert rec.started_paths == ["/sync"]  # request_started got the scope
    # close_old_connections must meet the view's database connection: one thread.
    assert rec.threads["started"] == rec.threads["view"] == rec.threads["finished"]
    assert rec.threads["view"] != threading.get_ident()


async def test_an_async_request_started_receiver_is_called_too(
    app: RequestThreads, async_receiver: None
) -> None:
    async with running(app) as server, httpx.AsyncClient(timeout=T) as client:
        for name in ("quick", "echo"):
            assert (await client.get(f"http://127.0.0.1:{server.port}/{name}")).status_code == 200
    assert rec.async_started_paths == rec.started_paths == ["/quick", "/echo"]


async def test_a_body_reaches_the_view(app: RequestThreads) -> None:
    async with running(app) as server, httpx.AsyncClient(timeout=T) as client:
        body = bytes(range(256)) * 300  # several reads of the socket
        reply = await client.post(f"http://127.0.0.1:{server.port}/echo", content=body)
        assert reply.status_code == 200 and reply.content == body[::-1]


async def test_a_client_leaving_cancels_the_view_and_finishes_the_request(
    app: RequestThreads,
) -> None:
    async with running(app) as server:
        _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /wait HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await asyncio.wait_for(rec.entered.wait(), T)
        writer.close()
        await asyncio.wait_for(rec.cancelled.wait(), T)
        await asyncio.wait_for(rec.finished_event.wait(), T)
        assert rec.finished == 1  # request_finished, once, though no response was made
        async with httpx.AsyncClient(timeout=T) as client:  # and the server goes on
            assert (await client.get(f"http://127.0.0.1:{server.port}/quick")).status_code == 200


async def test_a_response_streaming_when_the_client_leaves_is_closed(app: RequestThreads) -> None:
    async with running(app) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"first part\n"), T)
        assert head.startswith(b"HTTP/1.1 200 ")
        await asyncio.wait_for(rec.entered.wait(), T)
        writer.close()
        await asyncio.wait_for(rec.stream_closed.wait(), T)
        # response.close() ran (it sends request_finished), as under Django's handler.
        await asyncio.wait_for(rec.finished_event.wait(), T)
        assert rec.finished == 1


# -- called directly, as a server would ---------------------------------------------------


def scope_for(path_: str, query_string: bytes = b"") -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path_,
        "raw_path": path_.encode(),
        "query_string": query_string,
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


class Peer:
    """The server's side of one request: the body, then what ``after_body`` gives."""

    def __init__(self, after_body: Any = None) -> None:
        self.calls = 0
        self.sent: list[dict[str, Any]] = []
        self.after_body = after_body

    async def receive(self) -> dict[str, Any]:
        self.calls += 1
        if self.calls == 1:
            return {"type": "http.request", "body": b"", "more_body": False}
        if self.after_body is None:
            await asyncio.Event().wait()  # no disconnect: the listener is cancelled
        message: dict[str, Any] = await self.after_body()
        return message

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])


async def call(app: RequestThreads, scope: dict[str, Any], peer: Peer) -> int:
    """Run the app in a task of its own, as a server does; its cancel count after."""

    async def run() -> int:
        await app(scope, peer.receive, peer.send)
        task = asyncio.current_task()
        assert task is not None
        return task.cancelling()

    return await asyncio.wait_for(asyncio.ensure_future(run()), T)


async def test_a_view_that_never_suspends_is_answered_without_listening(
    app: RequestThreads,
) -> None:
    peer = Peer()
    assert await call(app, scope_for("/quick"), peer) == 0
    assert peer.status == 200
    assert peer.calls == 1  # the body only: the listener ended before its first step


async def test_a_view_that_keeps_its_cancellation_leaves_the_task_uncancelled(
    app: RequestThreads,
) -> None:
    async def leave() -> dict[str, Any]:
        await rec.entered.wait()
        return {"type": "http.disconnect"}

    peer = Peer(leave)
    assert await call(app, scope_for("/keep"), peer) == 0  # the listener's cancel, taken back
    assert rec.cancelled.is_set()
    assert peer.status == 200 and peer.sent[1]["body"] == b"kept"  # Django sends it too


async def test_a_cancellation_from_outside_is_not_taken_for_the_clients(
    app: RequestThreads,
) -> None:
    peer = Peer()
    task = asyncio.ensure_future(app(scope_for("/wait"), peer.receive, peer.send))
    await asyncio.wait_for(rec.entered.wait(), T)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, T)
    assert rec.cancelled.is_set() and peer.sent == []


async def test_a_cancellation_from_outside_as_the_client_leaves_still_cancels(
    app: RequestThreads,
) -> None:
    task: asyncio.Future[None]

    async def leave_and_cancel() -> dict[str, Any]:
        await rec.entered.wait()
        task.cancel()  # the server's own cancellation, in the same step as the client's
        return {"type": "http.disconnect"}

    peer = Peer(leave_and_cancel)
    task = asyncio.ensure_future(app(scope_for("/wait"), peer.receive, peer.send))
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, T)
    assert rec.cancelled.is_set()


async def test_a_message_other_than_disconnect_after_the_body_is_an_error(
    app: RequestThreads,
) -> None:
    async def another_request() -> dict[str, Any]:
        await rec.entered.wait()
        return {"type": "http.request", "body": b"", "more_body": False}

    peer = Peer(another_request)
    with pytest.raises(AssertionError, match="Invalid ASGI message after request body"):
        await call(app, scope_for("/wait"), peer)
    assert rec.cancelled.is_set()  # the view did not run on unattended


async def test_a_request_django_cannot_build_gets_400_and_is_finished(
    app: RequestThreads,
) -> None:
    peer = Peer()
    assert await call(app, scope_for("/sync", query_string=b"q=\xff"), peer) == 0
    assert peer.status == 400
    assert rec.finished == 1  # the error response was closed: request_finished
    assert "view" not in rec.threads
