"""AsyncHttpConsumer: whole and streamed responses, body limits, disconnect, long poll."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from sluiceway.consumers import AsyncHttpConsumer
from sluiceway.layers import channel_layers
from sluiceway.testing import ApplicationCommunicator, HttpCommunicator, http_scope

NO_LAYER = "no-such-layer"

events: list[str] = []


@pytest.fixture
def memory_layer() -> Iterator[None]:
    channel_layers.configure({"default": {"BACKEND": "memory"}})
    yield
    channel_layers.reset()


class Hello(AsyncHttpConsumer):
    channel_layer_alias = NO_LAYER
    max_body_bytes = 10

    async def handle(self, body: bytes) -> None:
        events.append("handle")
        if self.scope["path"] == "/stream/":
            await self.send_headers(headers={"content-type": "text/plain"})
            for part in (b"a", b"b"):
                await self.send_body(part, more_body=True)
            await self.send_body(b"c")
        elif self.scope["path"] == "/fail/":
            raise KeyError("handler bug")
        elif self.scope["path"] == "/silent/":
            return
        else:
            await self.send_response(
                201, b"got:" + body, headers=[(b"content-type", b"text/plain")]
            )

    async def disconnect(self) -> None:
        events.append("disconnect")


async def test_whole_response_and_single_disconnect() -> None:
    events.clear()
    comm = HttpCommunicator(Hello.as_asgi(), "POST", "/", body=b"hi")
    response = await comm.get_response()
    assert response["status"] == 201
    assert response["body"] == b"got:hi"
    assert response["headers"] == [(b"content-type", b"text/plain")]
    await comm.wait()
    assert events == ["handle", "disconnect"]


async def test_body_in_several_chunks_is_joined() -> None:
    comm = ApplicationCommunicator(Hello.as_asgi(), http_scope("POST", "/"))
    await comm.send_input({"type": "http.request", "body": b"ab", "more_body": True})
    await comm.send_input({"type": "http.request", "body": b"cd", "more_body": False})
    assert (await comm.receive_output())["status"] == 201
    assert (await comm.receive_output())["body"] == b"got:abcd"
    await comm.wait()


async def test_streamed_response() -> None:
    comm = ApplicationCommunicator(Hello.as_asgi(), http_scope("GET", "/stream/"))
    await comm.send_input({"type": "http.request", "body": b"", "more_body": False})
    start = await comm.receive_output()
    assert start["headers"] == [(b"content-type", b"text/plain")]
    bodies = [await comm.receive_output() for _ in range(3)]
    assert [(m["body"], m["more_body"]) for m in bodies] == [
        (b"a", True),
        (b"b", True),
        (b"c", False),
    ]
    await comm.wait()


async def test_declared_body_over_the_limit_is_413_without_handle() -> None:
    events.clear()
    comm = HttpCommunicator(
        Hello.as_asgi(), "POST", "/", body=b"x" * 11, headers=[("content-length", "11")]
    )
    response = await comm.get_response()
    assert response["status"] == 413
    await comm.wait()
    assert events == ["disconnect"]


async def test_streamed_body_over_the_limit_is_413() -> None:
    events.clear()
    comm = ApplicationCommunicator(Hello.as_asgi(), http_scope("POST", "/"))
    for _ in range(3):
        await comm.send_input({"type": "http.request", "body": b"xxxx", "more_body": True})
    assert (await comm.receive_output())["status"] == 413
    assert (await comm.receive_output())["more_body"] is False
    await comm.wait()
    assert events == ["disconnect"]


async def test_handler_exception_propagates_after_disconnect() -> None:
    events.clear()
    comm = HttpCommunicator(Hello.as_asgi(), "GET", "/fail/")
    await comm.send_input({"type": "http.request", "body": b"", "more_body": False})
    with pytest.raises(KeyError, match="handler bug"):
        await comm.wait()
    assert events == ["handle", "disconnect"]


async def test_handle_that_never_responds_is_an_error_without_a_layer() -> None:
    comm = HttpCommunicator(Hello.as_asgi(), "GET", "/silent/")
    await comm.send_input({"type": "http.request", "body": b"", "more_body": False})
    with pytest.raises(RuntimeError, match="without responding"):
        await comm.wait()


async def test_handle_that_never_responds_is_an_error_with_the_default_layer(
    memory_layer: None,
) -> None:
    # Nothing has this consumer's channel name, so no layer message can answer.
    silent = type("Silent", (Hello,), {"channel_layer_alias": "default"})
    comm = HttpCommunicator(silent.as_asgi(), "GET", "/silent/")
    await comm.send_input({"type": "http.request", "body": b"", "more_body": False})
    with pytest.raises(RuntimeError, match="without responding"):
        await comm.wait(2)


async def test_client_disconnect_before_body_ends() -> None:
    events.clear()
    comm = ApplicationCommunicator(Hello.as_asgi(), http_scope("POST", "/"))
    await comm.send_input({"type": "http.request", "body": b"ab", "more_body": True})
    await comm.send_input({"type": "http.disconnect"})
    await comm.wait()
    assert events == ["disconnect"]


async def test_misuse_of_send_body_is_refused() -> None:
    class Misuse(AsyncHttpConsumer):
        channel_layer_alias = NO_LAYER

        async def handle(self, body: bytes) -> None:
            with pytest.raises(RuntimeError, match="send_headers"):
                await self.send_body(b"x")
            await self.send_headers()
            with pytest.raises(TypeError, match="bytes"):
                await self.send_body("text")  # type: ignore[arg-type]
            await self.send_body(b"ok")
            with pytest.raises(RuntimeError, match="complete"):
                await self.send_body(b"again")

    response = await HttpCommunicator(Misuse.as_asgi(), "GET", "/").get_response()
    assert response == {"status": 200, "headers": [], "body": b"ok"}


async def test_response_header_names_are_lowercased() -> None:
    class Mixed(AsyncHttpConsumer):
        channel_layer_alias = NO_LAYER

        async def handle(self, body: bytes) -> None:
            await self.send_response(200, b"", headers={"Content-Type": "text/plain"})

    response = await HttpCommunicator(Mixed.as_asgi(), "GET", "/").get_response()
    # ASGI www spec, http.response.start: header names must be lowercased.
    assert response["headers"] == [(b"content-type", b"text/plain")]


class LongPoll(AsyncHttpConsumer):
    async def handle(self, body: bytes) -> None:
        await self.send_headers(headers=[(b"content-type", b"application/json")])
        await self.send_body(b"", more_body=True)
        await self.send({"type": "poll.ready", "channel": self.channel_name})

    async def poll_event(self, message: dict[str, Any]) -> None:
        await self.send_body(message["payload"])


async def test_long_poll_finished_by_a_layer_message(memory_layer: None) -> None:
    comm = ApplicationCommunicator(LongPoll.as_asgi(), http_scope("GET", "/poll/"))
    await comm.send_input({"type": "http.request", "body": b"", "more_body": False})
    assert (await comm.receive_output())["type"] == "http.response.start"
    assert (await comm.receive_output())["more_body"] is True
    ready = await comm.receive_output()
    await channel_layers["default"].send(
        ready["channel"], {"type": "poll.event", "payload": b'{"n": 1}'}
    )
    final = await comm.receive_output()
    assert (final["body"], final["more_body"]) == (b'{"n": 1}', False)
    await comm.wait()


def test_a_consumer_without_handle_fails_when_built_naming_handle() -> None:
    class NoHandle(AsyncHttpConsumer):
        pass

    with pytest.raises(TypeError, match="handle"):
        NoHandle()
