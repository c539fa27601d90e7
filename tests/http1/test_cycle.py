"""HTTPCycle on its own: a recording sink, no sockets."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import pytest

from sluiceway.asgi.http import (
    BODY_HIGH_WATER_BYTES,
    FileSlice,
    HTTPCycle,
    RequestState,
    ResponseState,
    transition_table,
)
from sluiceway.errors import ASGIMessageError, ClientDisconnected


class RecordingSink:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.write_paused = False
        self.completed: list[HTTPCycle] = []

    async def drain(self) -> None:
        self.calls.append(("drain",))

    def send_continue(self) -> None:
        self.calls.append(("continue",))

    def send_early_hint(self, links: Iterable[Any]) -> None:
        self.calls.append(("hint", list(links)))

    def send_head(
        self,
        status: int,
        headers: Iterable[Any],
        body: bytes,
        more_body: bool,
        trailers: bool,
        file_bytes: int = -1,
    ) -> None:
        self.calls.append(("head", status, list(headers), body, more_body))

    def send_body(self, body: bytes, more_body: bool) -> None:
        self.calls.append(("body", body, more_body))

    def open_file(self, file: Any, offset: int | None, count: int | None) -> FileSlice:
        return FileSlice(file, offset or 0, count or 0, owned=False)

    async def send_file(self, part: FileSlice, more_body: bool) -> None:
        self.calls.append(("file", part.count, more_body))

    def send_trailers(self, headers: Iterable[Any], more_trailers: bool) -> None:
        self.calls.append(("trailers", list(headers), more_trailers))

    def response_complete(self, cycle: HTTPCycle) -> None:
        self.completed.append(cycle)

    def pause_reading(self) -> None:
        self.calls.append(("pause",))

    def resume_reading(self) -> None:
        self.calls.append(("resume",))

    def body_read(self, n: int) -> None:
        pass  # only HTTP/2 counts what the app read (tests/http2/test_server_flow.py)


def make(expect_continue: bool = False) -> tuple[HTTPCycle, RecordingSink]:
    sink = RecordingSink()
    return HTTPCycle({"type": "http"}, sink, expect_continue=expect_continue), sink


async def test_head_and_first_body_reach_the_sink_together() -> None:
    cycle, sink = make()
    await cycle.send({"type": "http.response.start", "status": 201, "headers": [(b"a", b"b")]})
    assert sink.calls == []  # nothing written before the first body (www spec)
    await cycle.send({"type": "http.response.body", "body": b"x"})
    assert sink.calls == [("head", 201, [(b"a", b"b")], b"x", False)]
    assert cycle.response_state is ResponseState.DONE
    assert sink.completed == [cycle]


async def test_body_chunks_and_trailers() -> None:
    cycle, sink = make()
    await cycle.send({"type": "http.response.start", "status": 200, "trailers": True})
    await cycle.send({"type": "http.response.body", "body": b"a", "more_body": True})
    await cycle.send({"type": "http.response.body", "body": b"b"})
    assert cycle.response_state is ResponseState.TRAILERS
    await cycle.send({"type": "http.response.trailers", "headers": [(b"t", b"1")]})
    assert sink.calls[-1] == ("trailers", [(b"t", b"1")], False)
    assert cycle.response_state is ResponseState.DONE


@pytest.mark.parametrize(
    ("messages", "fragment"),
    [
        ([{"type": "http.response.body"}], "state START"),
        ([{"type": "http.response.start", "status": 200}] * 2, "state HEAD"),
        ([{"type": "http.response.bogus"}], "unknown"),
        ([{"type": "http.response.start", "status": 700}], "100..599"),
        ([{"type": "http.response.start", "status": True}], "100..599"),
    ],
)
async def test_illegal_messages_name_the_problem(
    messages: list[dict[str, Any]], fragment: str
) -> None:
    cycle, _ = make()
    with pytest.raises(ASGIMessageError, match=fragment):
        for message in messages:
            await cycle.send(message)


async def test_body_after_done_is_ignored_but_start_is_an_error() -> None:
    cycle, sink = make()
    await cycle.send({"type": "http.response.start", "status": 200})
    await cycle.send({"type": "http.response.body"})
    calls = list(sink.calls)
    await cycle.send({"type": "http.response.body", "body": b"late"})
    assert sink.calls == calls
    with pytest.raises(ASGIMessageError):
        await cycle.send({"type": "http.response.start", "status": 200})


async def test_send_after_disconnect_raises_oserror() -> None:
    cycle, _ = make()
    cycle.feed_disconnect()
    with pytest.raises(ClientDisconnected) as info:
        await cycle.send({"type": "http.response.start", "status": 200})
    assert isinstance(info.value, OSError)
    assert await cycle.receive() == {"type": "http.disconnect"}


async def test_receive_streams_body_and_pauses_above_high_water() -> None:
    cycle, sink = make()
    cycle.feed_body(b"x" * (BODY_HIGH_WATER_BYTES + 1))
    assert ("pause",) in sink.calls
    message = await cycle.receive()
    assert message == {
        "type": "http.request",
        "body": b"x" * (BODY_HIGH_WATER_BYTES + 1),
        "more_body": True,
    }
    assert ("resume",) in sink.calls
    waiter = asyncio.ensure_future(cycle.receive())
    await asyncio.sleep(0)
    assert not waiter.done()
    cycle.feed_body(b"yz")
    assert (await asyncio.wait_for(waiter, 1))["body"] == b"yz"
    cycle.feed_end()
    assert await cycle.receive() == {"type": "http.request", "body": b"", "more_body": False}
    assert cycle.request_state is RequestState.DELIVERED


async def test_receive_after_delivery_waits_for_response_then_disconnect() -> None:
    cycle, _ = make()
    cycle.feed_end()
    await cycle.receive()
    waiter = asyncio.ensure_future(cycle.receive())
    await asyncio.sleep(0)
    assert not waiter.done()
    await cycle.send({"type": "http.response.start", "status": 200})
    await cycle.send({"type": "http.response.body"})
    assert await asyncio.wait_for(waiter, 1) == {"type": "http.disconnect"}


async def test_expect_continue_is_sent_on_first_receive_only() -> None:
    cycle, sink = make(expect_continue=True)
    waiter = asyncio.ensure_future(cycle.receive())
    await asyncio.sleep(0)
    assert sink.calls == [("continue",)]
    cycle.feed_body(b"data")
    cycle.feed_end()
    assert (await asyncio.wait_for(waiter, 1))["body"] == b"data"
    assert sink.calls == [("continue",)]


async def test_send_drains_when_the_sink_is_paused() -> None:
    cycle, sink = make()
    sink.write_paused = True
    await cycle.send({"type": "http.response.start", "status": 200})
    await cycle.send({"type": "http.response.body", "body": b"x", "more_body": True})
    assert sink.calls[-1] == ("drain",)


def test_transition_table_lists_every_legal_pair() -> None:
    table = transition_table()
    assert ("START", "http.response.start") in table
    assert ("TRAILERS", "http.response.trailers") in table
    assert all(state != "DONE" for state, _ in table)
