"""A refused WebSocket handshake reaches a client that is still sending: the lingering close.

The client here is sequential, as a simple client or a proxy is: it sends the
whole request (the handshake and whatever follows it: a body, pipelined
bytes), then reads. Closing with those bytes unread makes the kernel answer
with a RST that can destroy the refusal before the client reads it; not
reading them leaves such a client blocked in its send. Either way it never sees
the answer. The server must half-close, read and discard what still comes, and
close at the client's EOF or after a short linger (RFC 9112 §9.6).

The junk is far more than the kernel buffers for a peer that does not read:
the client's send buffer is fixed small, so its send completes only if the
server reads. Over TLS, which cannot half-close, the refusal is followed by the
close_notify at once.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from tests.support import TIMEOUT_S, local_tls, serve
from tests.websocket.ws_support import upgrade_request

Scope = dict[str, Any]
JUNK = b"\x00" * (1024 * 1024)


async def close_before_accept(scope: Scope, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "websocket.close", "code": 1008})


async def deny_with_body(scope: Scope, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "websocket.http.response.start", "status": 401, "headers": []})
    await send({"type": "websocket.http.response.body", "body": b"who ", "more_body": True})
    await send({"type": "websocket.http.response.body", "body": b"are you?"})


async def accept(scope: Scope, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "websocket.accept"})  # never reached: the handshake is refused first


CASES = {
    # The app refuses (asgi/websocket.py, websocket/protocol.py).
    "close_before_accept_403": (close_before_accept, upgrade_request() + JUNK, 403, b""),
    "denial_response_401": (deny_with_body, upgrade_request() + JUNK, 401, b"who are you?"),
    # The handshake itself is refused (http1/upgrade.py).
    "request_body_400": (
        accept,
        upgrade_request(extra=b"Content-Length: %d\r\n" % len(JUNK)) + JUNK,
        400,
        None,
    ),
    "wrong_version_426": (accept, upgrade_request(version=b"8") + JUNK, 426, None),
}


@asynccontextmanager
async def sequential_client(port: int, data: bytes) -> AsyncIterator[socket.socket]:
    """A socket that has sent all of ``data`` (bounded by the timeout); closed on exit."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    # Fixed (no autotuning), so the junk cannot all wait in our own send buffer.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), TIMEOUT_S)
        await asyncio.wait_for(loop.sock_sendall(sock, data), TIMEOUT_S)
        yield sock
    finally:
        sock.close()


async def read_to_eof(sock: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    chunks = []
    while chunk := await asyncio.wait_for(loop.sock_recv(sock, 65536), TIMEOUT_S):
        chunks.append(chunk)
    return b"".join(chunks)


def check_response(raw: bytes, status: int, body: bytes | None) -> None:
    """One whole response, and nothing after it."""
    head, sep, rest = raw.partition(b"\r\n\r\n")
    assert sep, raw[:200]
    lines = head.split(b"\r\n")
    assert lines[0].startswith(b"HTTP/1.1 %d " % status), lines[0]
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(b":") for line in lines[1:])
    }
    assert headers[b"connection"] == b"close"
    if b"content-length" in headers:
        assert len(rest) == int(headers[b"content-length"])
    else:  # chunked
        assert headers[b"transfer-encoding"] == b"chunked" and rest.endswith(b"0\r\n\r\n")
        rest = decode_chunked(rest)
    if body is not None:
        assert rest == body


def decode_chunked(data: bytes) -> bytes:
    out = []
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return b"".join(out)
        out.append(data[:size])
        data = data[size + 2 :]


@pytest.mark.parametrize("case", list(CASES))
async def test_refusal_reaches_a_client_still_sending(case: str) -> None:
    app, request, status, body = CASES[case]
    async with serve(app) as srv:
        async with sequential_client(srv.port, request) as sock:
            check_response(await read_to_eof(sock), status, body)
        # The client closed: the server's side goes at once, not at a timeout.
        await asyncio.wait_for(srv.state.wait_connections_closed(), TIMEOUT_S)


@pytest.mark.parametrize("case", ["close_before_accept_403", "wrong_version_426"])
async def test_the_linger_is_bounded_when_the_client_never_closes(case: str) -> None:
    app, request, status, body = CASES[case]
    async with serve(app) as srv, sequential_client(srv.port, request) as sock:
        check_response(await read_to_eof(sock), status, body)
        # Still open on our side: the server closes its own after the linger.
        await asyncio.wait_for(srv.state.wait_connections_closed(), TIMEOUT_S)


@pytest.mark.parametrize("case", ["denial_response_401", "wrong_version_426"])
async def test_refusal_over_tls_is_closed_at_once(case: str, tmp_path: Any) -> None:
    """TLS cannot half-close: the answer goes out, then the close_notify."""
    app, request, status, body = CASES[case]
    tls = local_tls(tmp_path)
    async with serve(app, ssl_context=tls.server_context, **tls.options) as srv:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", srv.port, ssl=tls.client_context), TIMEOUT_S
        )
        writer.write(request[: -len(JUNK)])  # the handshake alone
        check_response(await asyncio.wait_for(reader.read(), TIMEOUT_S), status, body)
        writer.close()
        await asyncio.wait_for(srv.state.wait_connections_closed(), TIMEOUT_S)
