"""The in-process communicators: scopes, conversations, errors and timeouts."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import pytest

from sluiceway.errors import ASGIMessageError, InvalidState
from sluiceway.testing import (
    ApplicationCommunicator,
    ApplicationExited,
    HttpCommunicator,
    WebsocketCommunicator,
)

Receive = Any
Send = Any


async def echo_http(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send(
        {
            "type": "http.response.start",
            "status": 201,
            "headers": [
                (b"x-path", scope["path"].encode()),
                (b"x-method", scope["method"].encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"got:", "more_body": True})
    await send({"type": "http.response.body", "body": body})


async def ws_echo(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    message = await receive()
    assert message["type"] == "websocket.connect"
    offered = scope["subprotocols"]
    await send({"type": "websocket.accept", "subprotocol": offered[0] if offered else None})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


async def test_http_round_trip_collects_streamed_body() -> None:
    comm = HttpCommunicator(echo_http, "post", "/a/b", body=b"hello")
    response = await comm.get_response()
    assert response["status"] == 201
    assert (b"x-path", b"/a/b") in response["headers"]
    assert (b"x-method", b"POST") in response["headers"]
    assert response["body"] == b"got:hello"
    await comm.wait()


def test_http_scope_follows_the_spec() -> None:
    comm = HttpCommunicator(
        echo_http,
        "GET",
        "/caf%C3%A9/x y?q=1&r=%20",
        headers=[("Content-Type", "text/plain"), (b"X-Raw", b"v")],
    )
    scope = comm.scope
    assert scope["type"] == "http"
    assert scope["asgi"]["version"] == "3.0"
    assert scope["path"] == "/café/x y"
    assert scope["raw_path"] == b"/caf%C3%A9/x%20y"
    assert scope["query_string"] == b"q=1&r=%20"
    assert scope["headers"] == [(b"content-type", b"text/plain"), (b"x-raw", b"v")]
    assert scope["root_path"] == ""
    assert scope["scheme"] == "http"
    assert scope["http_version"] == "1.1"
    assert scope["client"] and scope["server"]
    assert scope["state"] == {} and scope["extensions"] == {}


def test_bad_scope_input_is_rejected() -> None:
    with pytest.raises(ValueError):
        HttpCommunicator(echo_http, "GET", "no-slash")
    with pytest.raises(TypeError):
        HttpCommunicator(echo_http, "GET", "/", headers=[(1, 2)])
    with pytest.raises(TypeError):
        HttpCommunicator(echo_http, "GET", "/", body="text")  # type: ignore[arg-type]


async def test_app_exception_is_reraised_in_the_test() -> None:
    async def broken(scope: Any, receive: Receive, send: Send) -> None:
        await receive()
        raise KeyError("boom")

    comm = HttpCommunicator(broken, "GET", "/")
    with pytest.raises(KeyError, match="boom"):
        await comm.get_response()


async def test_output_sent_before_failure_is_delivered_first() -> None:
    async def app(scope: Any, receive: Receive, send: Send) -> None:
        await send({"type": "one"})
        raise RuntimeError("after")

    comm = ApplicationCommunicator(app, {"type": "custom"})
    assert await comm.receive_output() == {"type": "one"}
    with pytest.raises(RuntimeError, match="after"):
        await comm.receive_output()


async def test_timeout_cancels_the_app() -> None:
    cancelled = asyncio.Event()

    async def silent(scope: Any, receive: Receive, send: Send) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    comm = ApplicationCommunicator(silent, {"type": "custom"})
    with pytest.raises(asyncio.TimeoutError):
        await comm.receive_output(timeout=0.05)
    assert cancelled.is_set()
    assert comm.done


async def test_wait_times_out_and_cancels() -> None:
    async def forever(scope: Any, receive: Receive, send: Send) -> None:
        await receive()

    comm = ApplicationCommunicator(forever, {"type": "custom"})
    with pytest.raises(asyncio.TimeoutError):
        await comm.wait(timeout=0.05)
    assert comm.done


async def test_app_that_returns_early_is_reported() -> None:
    async def quitter(scope: Any, receive: Receive, send: Send) -> None:
        return None

    comm = ApplicationCommunicator(quitter, {"type": "custom"})
    with pytest.raises(ApplicationExited):
        await comm.receive_output()
    await comm.wait()


async def test_receive_nothing() -> None:
    async def delayed(scope: Any, receive: Receive, send: Send) -> None:
        message = await receive()
        await send({"type": "reply", "to": message["type"]})
        await receive()

    comm = ApplicationCommunicator(delayed, {"type": "custom"})
    assert await comm.receive_nothing(timeout=0.02) is True
    await comm.send_input({"type": "ping"})
    assert await comm.receive_nothing(timeout=0.5) is False
    assert await comm.receive_output() == {"type": "reply", "to": "ping"}
    await comm.stop()


async def test_receive_nothing_surfaces_a_crash() -> None:
    async def crash(scope: Any, receive: Receive, send: Send) -> None:
        raise ValueError("crashed")

    comm = ApplicationCommunicator(crash, {"type": "custom"})
    with pytest.raises(ValueError, match="crashed"):
        await comm.receive_nothing(timeout=0.5)


async def test_send_input_after_crash_raises() -> None:
    async def crash(scope: Any, receive: Receive, send: Send) -> None:
        raise ValueError("early")

    comm = ApplicationCommunicator(crash, {"type": "custom"})
    while not comm.done:  # let the app run to its crash without observing it
        await asyncio.sleep(0)
    with pytest.raises(ValueError, match="early"):
        await comm.send_input({"type": "x"})


async def test_non_dict_message_from_app_is_an_error() -> None:
    async def bad(scope: Any, receive: Receive, send: Send) -> None:
        await send("not a message")

    comm = ApplicationCommunicator(bad, {"type": "custom"})
    with pytest.raises(ASGIMessageError):
        await comm.receive_output()


async def test_wrong_http_event_order_is_reported() -> None:
    async def body_first(scope: Any, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "http.response.body", "body": b"x"})

    with pytest.raises(ASGIMessageError, match=r"http\.response\.start"):
        await HttpCommunicator(body_first, "GET", "/").get_response()


async def test_asgi2_app_is_adapted() -> None:
    class Legacy:
        def __init__(self, scope: Any) -> None:
            self.scope = scope

        async def __call__(self, receive: Receive, send: Send) -> None:
            await receive()
            await send({"type": "http.response.start", "status": 204})
            await send({"type": "http.response.body"})

    response = await HttpCommunicator(Legacy, "GET", "/").get_response()
    assert response == {"status": 204, "headers": [], "body": b""}


async def test_context_variables_do_not_leak_into_the_app() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    var.set("from the test")

    async def app(scope: Any, receive: Receive, send: Send) -> None:
        await send({"type": "seen", "value": var.get()})

    comm = ApplicationCommunicator(app, {"type": "custom"})
    assert (await comm.receive_output())["value"] == "unset"


def test_built_outside_a_loop_starts_on_first_use() -> None:
    async def app(scope: Any, receive: Receive, send: Send) -> None:
        await send({"type": "hi"})

    comm = ApplicationCommunicator(app, {"type": "custom"})

    async def run() -> dict[str, Any]:
        message = dict(await comm.receive_output())
        await comm.wait()
        return message

    assert asyncio.run(run()) == {"type": "hi"}


async def test_websocket_conversation() -> None:
    comm = WebsocketCommunicator(ws_echo, "/ws/?token=1", subprotocols=["chat", "v2"])
    assert comm.scope["type"] == "websocket"
    assert comm.scope["scheme"] == "ws"
    assert comm.scope["subprotocols"] == ["chat", "v2"]
    assert comm.scope["query_string"] == b"token=1"
    connected, subprotocol = await comm.connect()
    assert connected and subprotocol == "chat"
    await comm.send_to(text_data="hi")
    assert await comm.receive_from() == "hi"
    await comm.send_to(bytes_data=b"\x00\x01")
    assert await comm.receive_from() == b"\x00\x01"
    await comm.send_json_to({"a": [1, 2]})
    assert await comm.receive_json_from() == {"a": [1, 2]}
    assert await comm.receive_nothing()
    await comm.disconnect()
    assert comm.done


async def test_websocket_rejected_handshake_reports_close_code() -> None:
    async def deny(scope: Any, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.close", "code": 4003})

    comm = WebsocketCommunicator(deny, "/")
    assert await comm.connect() == (False, 4003)
    with pytest.raises(InvalidState):
        await comm.send_to(text_data="too late")


async def test_websocket_misuse() -> None:
    comm = WebsocketCommunicator(ws_echo, "/")
    await comm.connect()
    with pytest.raises(ValueError):
        await comm.send_to()
    with pytest.raises(ValueError):
        await comm.send_to(text_data="a", bytes_data=b"b")
    with pytest.raises(TypeError):
        await comm.send_to(text_data=b"bytes")  # type: ignore[arg-type]
    await comm.send_to(bytes_data=b"raw")
    with pytest.raises(ASGIMessageError):
        await comm.receive_json_from()
    await comm.disconnect()


async def test_receive_from_reports_an_unexpected_close() -> None:
    async def closer(scope: Any, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await receive()
        await send({"type": "websocket.close", "code": 1008})

    comm = WebsocketCommunicator(closer, "/")
    assert (await comm.connect())[0]
    await comm.send_to(text_data="x")
    with pytest.raises(ASGIMessageError, match="1008"):
        await comm.receive_from()
