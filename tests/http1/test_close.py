"""How a connection ends after its last answer (RFC 9112 §9.6).

Closing a socket with request bytes still unread makes the kernel send a RST
and throw away what it has not sent yet: the end of the answer. So when the
server ends a connection with the request not fully read (an upload the app
did not read), or ends it on its own (the app's ``Connection: close``, a
shutdown) while the client may still be sending, it closes in stages: it
half-closes, reads and drops what still arrives, and closes at the client's
EOF or one second later. When the client asked for the close and all it sent
has been read, it must send nothing more, and the server closes at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

from tests.support import RawConnection, Served, accepted, serve

ANSWER_BYTES = 2 * 1024 * 1024
UPLOAD_BYTES = 1024 * 1024


def answer_without_reading(connection_close: bool) -> Any:
    """Answers 2 MiB at once, never reading the request body."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-length", b"%d" % ANSWER_BYTES)]
        if connection_close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"x" * ANSWER_BYTES})

    return app


@contextlib.asynccontextmanager
async def slow_reader(srv: Served) -> AsyncIterator[RawConnection]:
    """A client with a small receive buffer: most of a large answer waits in the server's
    kernel send buffer, where a RST would destroy it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (srv.host, srv.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    conn = RawConnection(reader, writer)
    try:
        yield conn
    finally:
        await conn.close()


def upload_head(extra: bytes = b"") -> bytes:
    return b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n%s\r\n" % (
        UPLOAD_BYTES,
        extra,
    )


async def test_an_unread_upload_does_not_reset_the_answer_the_client_asked_to_close() -> None:
    async with serve(answer_without_reading(False)) as srv, slow_reader(srv) as conn:
        # Half the body: the server stops reading it (the app never asks), so bytes stay
        # unread in its socket while it answers.
        conn.writer.write(upload_head(b"Connection: close\r\n") + b"u" * (UPLOAD_BYTES // 2))
        response = await conn.read_response()
        assert (response.status, len(response.body)) == (200, ANSWER_BYTES)
        assert response.header(b"connection") == b"close"
        assert await conn.at_eof()


async def test_an_unread_upload_does_not_reset_the_answer_when_the_app_closes() -> None:
    async with serve(answer_without_reading(True)) as srv, slow_reader(srv) as conn:
        conn.writer.write(upload_head() + b"u" * (UPLOAD_BYTES // 2))
        response = await conn.read_response()
        assert (response.status, len(response.body)) == (200, ANSWER_BYTES)
        assert await conn.at_eof()


async def test_the_client_ends_a_lingering_close_with_its_own() -> None:
    async with serve(answer_without_reading(True)) as srv, slow_reader(srv) as conn:
        side = await accepted(srv)
        conn.writer.write(upload_head() + b"u" * (UPLOAD_BYTES // 2))
        assert (await conn.read_response()).status == 200
        assert await conn.at_eof()
        assert not side._transport.is_closing()  # still reading what the client sends
        conn.writer.write_eof()
        await asyncio.wait_for(srv.state.wait_connections_closed(), 5.0)


async def test_a_client_that_asked_to_close_and_sent_all_is_not_waited_for() -> None:
    async def hello(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"hi"})

    async with serve(hello) as srv, slow_reader(srv) as conn:
        side = await accepted(srv)
        await conn.send(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert (await conn.read_response()).body == b"hi"
        assert await conn.at_eof()
        # Closed outright, not half-closed to wait for an EOF that is not needed.
        assert side._transport.is_closing()
