"""Mutated requests never crash the server, never draw a 500, never log a traceback.

A seeded fuzzer: a corpus of valid requests (bodies by length and chunked,
trailers, pipelining, HTTP/1.0, absolute form, ``Expect``) each mutated a few
ways at a time (a byte changed, a byte from a set that matters to HTTP's
grammar inserted, a byte or a line deleted, a line repeated, the bytes cut
short). Every case goes over a real socket, then the client half-closes and
reads to the end. What comes back must be a sequence of well-formed HTTP/1.1
responses (status line, header syntax, framing that matches the bytes) whose
statuses are the app's 200 or one of the server's 4xx/5xx answers to bad
input, never 500; nothing may reach the error log; and the server must still
answer a plain request after all of it. The seeds are fixed, so a failure
names a case that fails again.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import random
import re
from collections.abc import Sequence
from typing import Any

import pytest

from tests.support import TIMEOUT_S, Served, exchange, read_by, serve

CASES_PER_SEED = 250
# FUZZ_SEEDS=60 runs a deeper search (30,000 cases, about 20 s); CI runs the first four.
SEEDS = range(int(os.environ.get("FUZZ_SEEDS", "4")))

# Requests after which the connection stays open...
KEEP_ALIVE = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /path/x%20y?q=1&r=%ff HTTP/1.1\r\nHost: example.com\r\nUser-Agent: fuzz\r\n"
    b"Accept: */*\r\nCookie: a=b; c=d\r\n\r\n",
    b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\n"
    b"hello world",
    b"POST /chunked HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n",
    b"POST /trailers HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTE: trailers\r\n\r\n"
    b"3\r\nabc\r\n0\r\nX-Checksum: 1\r\n\r\n",
    b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n"
    b"POST /two HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nxyz"
    b"GET /three HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET http://example.com:8080/abs?x=1 HTTP/1.1\r\nHost: example.com:8080\r\n\r\n",
    b"PUT /expect HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\nbody",
    b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
]
# ... and requests whose last one closes it.
CLOSING = [
    b"GET /old HTTP/1.0\r\n\r\n",
    b"GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /again HTTP/1.0\r\n\r\n",
    b"DELETE /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
]
CORPUS = KEEP_ALIVE + CLOSING
# Ends a keep-alive case, so the server closes once it has answered everything.
LAST = b"GET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"

# Bytes that HTTP/1.1's grammar gives a meaning to, and a few it forbids.
SPECIAL = b'\r\n\x00 \t:;,=-+/?#%"\\\x7f\x80\xff0123456789aAfFxX'

# What the server may answer to bad input: its own error statuses.
SERVER_STATUSES = {400, 404, 405, 408, 413, 414, 417, 431, 501, 505}

STATUS_LINE = re.compile(rb"HTTP/1\.1 ([1-5][0-9]{2}) [^\r\n\x00]*")
HEADER_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+): ?([^\r\n\x00]*)")


def mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        if not buf:
            break
        at = rng.randrange(len(buf))
        kind = rng.randrange(6)
        if kind == 0:
            buf[at] = rng.randrange(256)
        elif kind == 1:
            buf[at:at] = bytes([rng.choice(SPECIAL)])
        elif kind == 2:
            del buf[at]
        elif kind == 3:
            start = buf.rfind(b"\n", 0, at) + 1
            end = buf.find(b"\n", at)
            if end >= 0:
                buf[start:start] = buf[start : end + 1]  # the line again
        elif kind == 4:
            start = buf.rfind(b"\n", 0, at) + 1
            end = buf.find(b"\n", at)
            if end >= 0:
                del buf[start : end + 1]  # the line gone
        else:
            del buf[at:]  # cut short
    return bytes(buf)


def parse_responses(wire: bytes) -> list[tuple[int, bytes]]:
    """(status, body) of each well-formed response ``wire`` holds; AssertionError if any is not."""
    responses: list[tuple[int, bytes]] = []
    rest = wire
    while rest:
        head, sep, rest = rest.partition(b"\r\n\r\n")
        assert sep, f"a response head without its blank line: {head[:200]!r}"
        status_line, *header_lines = head.split(b"\r\n")
        match = STATUS_LINE.fullmatch(status_line)
        assert match, f"bad status line {status_line!r}"
        status = int(match.group(1))
        headers: dict[bytes, bytes] = {}
        for line in header_lines:
            field = HEADER_LINE.fullmatch(line)
            assert field, f"bad header line {line!r}"
            name = field.group(1).lower()
            assert name not in headers or name == b"set-cookie", f"{name!r} twice"
            headers[name] = field.group(2)
        if status < 200:
            responses.append((status, b""))
            continue
        body_at = len(wire) - len(rest)
        if b"transfer-encoding" in headers:
            assert b"content-length" not in headers
            assert headers[b"transfer-encoding"] == b"chunked"
            while True:
                size_line, sep, rest = rest.partition(b"\r\n")
                assert sep and re.fullmatch(rb"[0-9a-f]+", size_line), size_line
                size = int(size_line, 16)
                if size == 0:
                    if rest.startswith(b"\r\n"):
                        rest = rest[2:]
                    else:
                        trailers, sep, rest = rest.partition(b"\r\n\r\n")
                        assert sep, "trailers without their blank line"
                        assert all(HEADER_LINE.fullmatch(t) for t in trailers.split(b"\r\n"))
                    break
                assert rest[size : size + 2] == b"\r\n", "chunk not closed by CRLF"
                rest = rest[size + 2 :]
        elif b"content-length" in headers:
            length = int(headers[b"content-length"])
            assert len(rest) >= length, "body shorter than its Content-Length"
            rest = rest[length:]
        else:
            assert headers.get(b"connection") == b"close", "no framing and no close"
            rest = b""
        responses.append((status, wire[body_at : len(wire) - len(rest)]))
    return responses


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return  # the client went away mid-body: there is no one to answer
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = json.dumps({"method": scope["method"], "path": scope["path"], "size": size}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def one_case(
    srv: Served, data: bytes, cuts: Sequence[int] = (), *, half_close: bool = True
) -> list[tuple[int, bytes]]:
    """Send ``data`` and parse what comes back until the server closes.

    With ``cuts``, ``data`` goes in pieces split there, each read by the server
    before the next is sent (no more once the server is closing). With
    ``half_close`` the client then shuts its side, so the server closes at once;
    without it, ``data`` must end with a request that closes the connection.
    (A half-close that lands while pipelined answers are pending ends them
    early: the server, as uvicorn's and granian's, takes it for a disconnect.)
    """
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", srv.port), TIMEOUT_S
    )
    try:
        if cuts:
            server_side = await server_side_of(srv, writer.get_extra_info("sockname")[1])
            bounds = [0, *cuts, len(data)]
            for start, end in itertools.pairwise(bounds):
                if server_side._transport.is_closing():
                    break
                writer.write(data[start:end])
                await read_by(server_side)
        else:
            writer.write(data)
        if half_close and writer.can_write_eof() and not writer.is_closing():
            writer.write_eof()  # a whole request or not, nothing more is coming
        try:
            wire = await asyncio.wait_for(reader.read(), TIMEOUT_S)
        except ConnectionError:
            wire = b""  # closed on unread bytes (after a 4xx): a RST may win the race
    finally:
        writer.close()
    return parse_responses(wire)


async def server_side_of(srv: Served, client_port: int) -> Any:
    """The server's protocol object for the connection from ``client_port``."""

    async def find() -> Any:
        while True:
            for conn in srv.state.connections:
                client = getattr(getattr(conn, "info", None), "client", None)
                if client is not None and client[1] == client_port:
                    return conn
            await asyncio.sleep(0)  # the accept runs in a later loop pass than the connect

    return await asyncio.wait_for(find(), TIMEOUT_S)


@pytest.mark.parametrize("seed", SEEDS)
async def test_mutated_requests_get_well_formed_answers(
    seed: int, caplog: pytest.LogCaptureFixture
) -> None:
    rng = random.Random(seed)
    caplog.set_level(logging.WARNING, logger="sluiceway")
    seen: set[int] = set()
    async with serve(app, access_log=False, request_headers_timeout_s=2.0) as srv:
        for case in range(CASES_PER_SEED):
            data = mutate(rng, rng.choice(CORPUS))
            try:
                statuses = [status for status, _ in await one_case(srv, data)]
            except AssertionError as exc:
                raise AssertionError(f"seed {seed} case {case}: {data!r}: {exc}") from None
            unexpected = [s for s in statuses if s != 200 and s >= 200 and s not in SERVER_STATUSES]
            assert not unexpected, f"seed {seed} case {case}: {data!r} -> {statuses}"
            seen.update(statuses)
        response = await exchange(srv.port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        assert response.status == 200
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
    assert {200, 400} <= seen  # the mutations reach both sides of the parser


def final(responses: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    # A 100 Continue goes out only if the app awaits a body that has not arrived yet.
    return [(status, body) for status, body in responses if status != 100]


async def test_valid_requests_split_anywhere_get_the_same_answers() -> None:
    """Every corpus request cut in two at every byte: the parser's state crosses reads."""
    async with serve(app, access_log=False) as srv:
        for data in [*(case + LAST for case in KEEP_ALIVE), *CLOSING]:
            whole = final(await one_case(srv, data, half_close=False))
            assert whole and all(status == 200 for status, _ in whole), whole
            for cut in range(1, len(data)):
                pieces = final(await one_case(srv, data, [cut], half_close=False))
                assert pieces == whole, (data, cut)


@pytest.mark.parametrize("seed", SEEDS)
async def test_mutated_requests_in_pieces_get_well_formed_answers(
    seed: int, caplog: pytest.LogCaptureFixture
) -> None:
    rng = random.Random(1000 + seed)
    caplog.set_level(logging.WARNING, logger="sluiceway")
    async with serve(app, access_log=False, request_headers_timeout_s=2.0) as srv:
        for case in range(CASES_PER_SEED // 2):
            data = mutate(rng, rng.choice(CORPUS))
            pieces = min(max(len(data) - 1, 0), rng.randint(1, 4))
            cuts = sorted(rng.sample(range(1, len(data)), pieces)) if pieces else []
            try:
                statuses = [status for status, _ in await one_case(srv, data, cuts)]
            except AssertionError as exc:
                raise AssertionError(f"seed {seed} case {case}: {data!r} {cuts}: {exc}") from None
            unexpected = [s for s in statuses if s != 200 and s >= 200 and s not in SERVER_STATUSES]
            assert not unexpected, f"seed {seed} case {case}: {data!r} {cuts} -> {statuses}"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
