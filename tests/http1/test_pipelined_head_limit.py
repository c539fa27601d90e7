"""The head-size limit counts one request head: never the requests and bodies before it (issue 16).

A big read of pipelined requests holds many complete requests and then the
start of one more. The bytes before that last head are not its own, so they
must not count against ``max_request_headers_bytes`` (the issue: 431 after
8,266 of 20,000 pipelined GETs, and after three of five 60 KB POSTs). A head
that really is too large, even one that begins in the middle of such a read,
still gets its 431.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from tests.http1.apps import echo, hello
from tests.support import RawConnection, accepted, raw_connection, read_by, serve

GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
_STATUS = re.compile(rb"HTTP/1\.1 (\d{3}) ")


async def statuses_until(conn: RawConnection, count: int, timeout: float = 30.0) -> list[int]:
    """Read responses until ``count`` status lines came or the server closed; their statuses.

    Counting status lines is enough here: every response body these tests get
    (``Hello, world!``, echoed ``x`` bytes) holds no "HTTP/1.1 ".
    """
    data = bytearray()
    statuses: list[int] = []
    scanned = 0  # statuses before this offset are counted

    async def read() -> None:
        nonlocal scanned
        while len(statuses) < count:
            chunk = await conn.reader.read(1 << 20)
            if not chunk:
                return
            data.extend(chunk)
            for match in _STATUS.finditer(data, scanned):
                statuses.append(int(match.group(1)))
                scanned = match.end()

    await asyncio.wait_for(read(), timeout)
    return statuses


async def test_twenty_thousand_pipelined_gets_in_one_write_are_all_answered() -> None:
    async with serve(hello, access_log=False) as srv, raw_connection(srv.port) as conn:
        # One write, not awaited: the server answers while the client still
        # sends, and a client waiting to drain first would never read them.
        conn.writer.write(GET * 20_000)
        statuses = await statuses_until(conn, 20_000)
    assert len(statuses) == 20_000
    assert set(statuses) == {200}


async def test_five_pipelined_60kb_posts_in_one_write_are_all_answered() -> None:
    body = b"x" * 60_000
    post = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 60000\r\n\r\n" + body
    async with serve(echo, access_log=False) as srv, raw_connection(srv.port) as conn:
        conn.writer.write(post * 5)
        responses = [await conn.read_response() for _ in range(5)]
    assert [(r.status, r.body == body) for r in responses] == [(200, True)] * 5


async def send_reads(srv: Any, conn: RawConnection, reads: list[bytes]) -> None:
    """Send ``reads`` so that the server gets each in one read of its own."""
    server_side = await accepted(srv)
    for data in reads:
        await conn.send(data)
        await read_by(server_side)


async def test_pipelined_60kb_posts_cut_inside_heads_are_all_answered() -> None:
    # The POST case with its reads made exact: the middle read finishes a
    # head, carries its 60 KB body, and ends inside the next head. That read
    # is far over the 1.25 KiB limit, yet no head in it is.
    body = b"x" * 60_000
    post = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 60000\r\n\r\n" + body
    stream = post * 4
    cut_1 = len(post) + 10  # inside the second head
    cut_2 = 2 * len(post) + 10  # inside the third
    limits: dict[str, Any] = {"max_request_headers_bytes": 1024, "max_request_line_bytes": 256}
    async with serve(echo, access_log=False, **limits) as srv, raw_connection(srv.port) as conn:
        await send_reads(srv, conn, [stream[:cut_1], stream[cut_1:cut_2], stream[cut_2:]])
        responses = [await conn.read_response() for _ in range(4)]
    assert [(r.status, r.body == body) for r in responses] == [(200, True)] * 4


async def test_gets_in_reads_that_end_inside_heads_are_all_answered() -> None:
    # Every read but the first starts and ends inside a head, with whole
    # requests between: the GET case at a size where each read is one read.
    stream = GET * 200  # 5.6 KB per read in four reads, limit 1.25 KiB
    reads = [stream[at : at + 1401] for at in range(0, len(stream), 1401)]
    limits: dict[str, Any] = {"max_request_headers_bytes": 1024, "max_request_line_bytes": 256}
    async with serve(hello, access_log=False, **limits) as srv, raw_connection(srv.port) as conn:
        await send_reads(srv, conn, reads)
        statuses = await statuses_until(conn, 200)
    assert statuses == [200] * 200


async def test_an_oversized_head_after_pipelined_requests_is_still_431() -> None:
    big = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n"
    async with (
        serve(hello, access_log=False, max_request_headers_bytes=1024) as srv,
        raw_connection(srv.port) as conn,
    ):
        await conn.send(GET * 3 + big + GET)
        statuses = await statuses_until(conn, 5)
        assert await conn.at_eof()
    assert statuses == [200, 200, 200, 431]


async def test_a_field_that_never_ends_after_pipelined_requests_is_still_431() -> None:
    # The head begins inside a read of earlier requests, so that read is not
    # counted; the reads after it are, and stop it well before it ends.
    limits: dict[str, Any] = {"max_request_headers_bytes": 1024, "max_request_line_bytes": 256}
    async with serve(hello, access_log=False, **limits) as srv, raw_connection(srv.port) as conn:
        server_side = await accepted(srv)
        await conn.send(GET * 3 + b"GET / HTTP/1.1\r\nHost: a\r\nX-Endless: ")
        assert await statuses_until(conn, 3) == [200] * 3
        sent = 0
        while sent < 100_000:
            await read_by(server_side)
            # StreamReader has no public peek: its buffer says an answer has arrived.
            if conn.reader._buffer or conn.reader.at_eof():  # type: ignore[attr-defined]
                break
            try:
                await conn.send(b"a" * 1000)
            except ConnectionError:
                break  # answered and closed already
            sent += 1000
        response = await conn.read_response()
    assert response.status == 431
    assert sent < 5000  # cut off after a few reads past the limit, not at some larger bound


async def test_a_read_from_one_chunked_body_into_the_next_counts_only_the_next() -> None:
    # The chunked-framing bound (bytes fed minus body bytes) has the same
    # rule: the 20 KB of the first request in the middle read are not framing
    # of the second, whose body has only just begun there.
    chunk = b"c" * 20_000
    head = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    first = head + b"%x\r\n" % len(chunk) + chunk + b"\r\n0\r\n\r\n"
    second = head + b"1\r\nz\r\n0\r\n\r\n"
    stream = first + second
    cut_1 = len(head) + 100  # inside the first body
    cut_2 = len(first) + len(head) + 6  # just after the second body's first chunk
    limits: dict[str, Any] = {"max_request_headers_bytes": 1024, "max_request_line_bytes": 256}
    async with serve(echo, access_log=False, **limits) as srv, raw_connection(srv.port) as conn:
        await send_reads(srv, conn, [stream[:cut_1], stream[cut_1:cut_2], stream[cut_2:]])
        responses = [await conn.read_response() for _ in range(2)]
    assert [(r.status, r.body) for r in responses] == [(200, chunk), (200, b"z")]
