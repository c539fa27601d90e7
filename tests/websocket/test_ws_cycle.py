"""WebSocketCycle on its own: the ASGI rules, with a recording sink in place of the wire.

The wire behaviour of the same rules is tested over real sockets in test_ws_server.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sluiceway.asgi.types import HeaderList, Message, Receive, Send
from sluiceway.asgi.websocket import WebSocketCycle, WSState
from sluiceway.errors import ASGIMessageError, ClientDisconnected


class RecordingSink:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def accept(self, subprotocol: str | None, headers: HeaderList) -> None:
        self.calls.append(("accept", subprotocol, headers))

    def send_response(self, status: int, headers: HeaderList, body: bytes, more: bool) -> None:
        self.calls.append(("response", status, headers, body, more))

    def send_data(self, data: str | bytes) -> None:
        self.calls.append(("data", data))

    def close(self, code: int, reason: str) -> None:
        self.calls.append(("close", code, reason))

    def abort(self) -> None:
        self.calls.append(("abort",))

    def pause_reading(self) -> None:
        self.calls.append(("pause",))

    def resume_reading(self) -> None:
        self.calls.append(("resume",))


def make(
    max_queue: int = 4, subprotocols: list[str] | None = None
) -> tuple[WebSocketCycle, RecordingSink]:
    sink = RecordingSink()
    scope = {"type": "websocket", "subprotocols": subprotocols or []}
    return WebSocketCycle(scope, sink, max_queue), sink


async def test_connect_first_then_accept_with_subprotocol_and_headers() -> None:
    cycle, sink = make(subprotocols=["chat", "json"])
    assert await cycle.receive() == {"type": "websocket.connect"}
    await cycle.send(
        {"type": "websocket.accept", "subprotocol": "json", "headers": [(b"x-a", b"1")]}
    )
    assert sink.calls == [("accept", "json", [(b"x-a", b"1")])]
    assert cycle.state is WSState.CONNECTED


@pytest.mark.parametrize(
    "message",
    [
        {"type": "websocket.accept", "subprotocol": "nope"},
        {"type": "websocket.accept", "subprotocol": b"chat"},
        {"type": "websocket.accept", "headers": [(b"sec-websocket-protocol", b"chat")]},
        {"type": "websocket.accept", "headers": [("x", "y")]},
        {"type": "websocket.accept", "headers": [b"xyz"]},
        {"type": "websocket.send", "text": "too early"},
        {"type": "http.response.start", "status": 200},
        {"no": "type"},
        {"type": "websocket.http.response.start", "status": 101},
        {"type": "websocket.http.response.start", "status": "200"},
    ],
)
async def test_bad_messages_before_accept(message: Message) -> None:
    cycle, sink = make(subprotocols=["chat"])
    await cycle.receive()
    with pytest.raises(ASGIMessageError):
        await cycle.send(message)
    assert sink.calls == []


@pytest.mark.parametrize(
    "message",
    [
        {"type": "websocket.send"},
        {"type": "websocket.send", "bytes": None, "text": None},
        {"type": "websocket.send", "bytes": b"x", "text": "x"},
        {"type": "websocket.send", "text": b"x"},
        {"type": "websocket.send", "bytes": "x"},
        {"type": "websocket.close", "code": 1005},
        {"type": "websocket.close", "code": 999},
        {"type": "websocket.close", "code": "1000"},
        {"type": "websocket.close", "reason": "é" * 62},
        {"type": "websocket.accept"},
        {"type": "websocket.http.response.start", "status": 403},
    ],
)
async def test_bad_messages_after_accept(message: Message) -> None:
    cycle, sink = make()
    await cycle.receive()
    await cycle.send({"type": "websocket.accept"})
    with pytest.raises(ASGIMessageError):
        await cycle.send(message)
    assert sink.calls[1:] == []


async def test_send_both_keys_one_none_is_fine() -> None:
    cycle, sink = make()
    await cycle.receive()
    await cycle.send({"type": "websocket.accept"})
    await cycle.send({"type": "websocket.send", "bytes": None, "text": "hi"})
    await cycle.send({"type": "websocket.send", "bytes": bytearray(b"\x00"), "text": None})
    assert sink.calls[1:] == [("data", "hi"), ("data", b"\x00")]


async def test_close_before_accept_is_403_and_send_after_raises_oserror() -> None:
    cycle, sink = make()
    await cycle.receive()
    await cycle.send({"type": "websocket.close"})
    assert sink.calls == [("response", 403, [], b"", False)]
    with pytest.raises(ClientDisconnected) as info:
        await cycle.send({"type": "websocket.send", "text": "x"})
    assert isinstance(info.value, OSError)


async def test_denial_response_streams_body() -> None:
    cycle, sink = make()
    await cycle.receive()
    await cycle.send(
        {"type": "websocket.http.response.start", "status": 401, "headers": [(b"a", b"b")]}
    )
    await cycle.send({"type": "websocket.http.response.body", "body": b"no", "more_body": True})
    await cycle.send({"type": "websocket.http.response.body", "body": b"pe"})
    assert sink.calls == [
        ("response", 401, [(b"a", b"b")], b"no", True),
        ("response", 401, [(b"a", b"b")], b"pe", False),
    ]
    assert cycle.state is WSState.CLOSED


async def test_close_code_and_reason_defaults() -> None:
    cycle, sink = make()
    await cycle.receive()
    await cycle.send({"type": "websocket.accept"})
    await cycle.send({"type": "websocket.close", "reason": None})
    assert sink.calls[-1] == ("close", 1000, "")


async def test_queue_pauses_and_resumes_reading() -> None:
    cycle, sink = make(max_queue=2)
    await cycle.receive()
    await cycle.send({"type": "websocket.accept"})
    cycle.deliver("a")
    assert ("pause",) not in sink.calls
    cycle.deliver(b"b")
    assert sink.calls[-1] == ("pause",)
    assert await cycle.receive() == {"type": "websocket.receive", "text": "a"}
    assert sink.calls[-1] == ("resume",)
    assert await cycle.receive() == {"type": "websocket.receive", "bytes": b"b"}


async def test_disconnect_after_queued_messages_and_repeats() -> None:
    cycle, _ = make()
    await cycle.receive()
    await cycle.send({"type": "websocket.accept"})
    cycle.deliver("last")
    cycle.peer_closed(1001, "bye")
    assert (await cycle.receive())["text"] == "last"
    gone = {"type": "websocket.disconnect", "code": 1001, "reason": "bye"}
    assert await cycle.receive() == gone
    assert await cycle.receive() == gone
    with pytest.raises(ClientDisconnected):
        await cycle.send({"type": "websocket.send", "text": "x"})


async def test_receive_waits_for_a_message() -> None:
    cycle, _ = make()
    await cycle.receive()
    task = asyncio.ensure_future(cycle.receive())
    await asyncio.sleep(0)
    assert not task.done()
    cycle.deliver("x")
    assert (await asyncio.wait_for(task, 5))["text"] == "x"


async def _raise_before_accept(scope: Any, receive: Receive, send: Send) -> None:
    await receive()
    raise RuntimeError("boom")


async def _raise_after_accept(scope: Any, receive: Receive, send: Send) -> None:
    await receive()
    await send({"type": "websocket.accept"})
    raise RuntimeError("boom")


async def _return_without_answer(scope: Any, receive: Receive, send: Send) -> None:
    await receive()


async def _return_after_accept(scope: Any, receive: Receive, send: Send) -> None:
    await receive()
    await send({"type": "websocket.accept"})


async def _send_after_disconnect(scope: Any, receive: Receive, send: Send) -> None:
    await receive()
    await send({"type": "websocket.accept"})
    scope["cycle"].peer_closed(1006)
    await send({"type": "websocket.send", "text": "x"})


async def _raise_after_denial_start(scope: Any, receive: Receive, send: Send) -> None:
    await receive()
    await send({"type": "websocket.http.response.start", "status": 401})
    raise RuntimeError("boom")


async def _raise_inside_denial_body(scope: Any, receive: Receive, send: Send) -> None:
    await receive()
    await send({"type": "websocket.http.response.start", "status": 401})
    await send({"type": "websocket.http.response.body", "body": b"x", "more_body": True})
    raise RuntimeError("boom")


@pytest.mark.parametrize(
    ("app", "last_call", "logged"),
    [
        (_raise_before_accept, ("response", 500), True),
        # Only the head was kept back: a whole 500 can still replace it.
        (_raise_after_denial_start, ("response", 500), True),
        # Part of the denial is out: the connection is cut short.
        (_raise_inside_denial_body, ("abort",), True),
        (_raise_after_accept, ("close", 1011), True),
        (_return_without_answer, ("response", 500), True),
        (_return_after_accept, ("close", 1000), False),
        (_send_after_disconnect, ("accept",), False),
    ],
)
async def test_run_maps_app_endings(
    app: Any, last_call: tuple[Any, ...], logged: bool, caplog: pytest.LogCaptureFixture
) -> None:
    cycle, sink = make()
    cycle.scope["cycle"] = cycle
    with caplog.at_level("ERROR", logger="sluiceway.error"):
        await cycle.run(app)
    assert sink.calls[-1][: len(last_call)] == last_call
    assert bool(caplog.records) is logged


async def test_peer_gone_during_a_denial_ends_quietly(caplog: pytest.LogCaptureFixture) -> None:
    cycle, sink = make()

    async def app(scope: Any, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.http.response.start", "status": 401})
        cycle.peer_closed(1006)
        await send({"type": "websocket.http.response.body", "body": b"x"})

    with caplog.at_level("ERROR", logger="sluiceway.error"):
        await cycle.run(app)
    assert sink.calls == []
    assert not caplog.records
