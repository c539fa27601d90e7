"""A connection's last answer carries its FIN (transport/fin.py).

When the server closes after an answer, the FIN rides in the answer's last
segment instead of following it alone. The client's kernel counts the
segments it received (``TCP_INFO``): a closing exchange must bring no more
segments without data than a keep-alive exchange on a fresh connection does
(the SYN-ACK and the ACK of the request), so no bare FIN.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
import sys
from pathlib import Path
from typing import Any

import pytest

from sluiceway import Config, Server
from sluiceway.transport import fin
from tests.support import TIMEOUT_S, accepted, local_tls, serve

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="TCP_CORK and TCP_INFO are Linux's")

# struct tcp_info (linux/tcp.h): tcpi_segs_in and tcpi_data_segs_in.
_SEGS_IN = 140
_DATA_SEGS_IN = 152

KEEP_ALIVE = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
CLIENT_CLOSE = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"


async def hello(scope: Any, receive: Any, send: Any) -> None:
    headers = [(b"content-length", b"5")]
    if scope["path"] == "/app-closes":
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"hello"})


async def exchange(port: int, request: bytes, *, until_eof: bool) -> tuple[bytes, int]:
    """Send ``request`` on a fresh connection; the bytes read and the segments
    without data received, taken once the answer is in (or at EOF)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), TIMEOUT_S)
        await loop.sock_sendall(sock, request)
        data = b""
        while True:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), TIMEOUT_S)
            data += chunk
            if not chunk or (not until_eof and data.endswith(b"hello")):
                break
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
        (segs_in,) = struct.unpack_from("I", info, _SEGS_IN)
        (data_segs_in,) = struct.unpack_from("I", info, _DATA_SEGS_IN)
        return data, segs_in - data_segs_in
    finally:
        sock.close()


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(CLIENT_CLOSE, id="client-connection-close"),
        pytest.param(b"GET / HTTP/1.0\r\n\r\n", id="http-1.0"),
        pytest.param(b"GET /app-closes HTTP/1.1\r\nHost: a\r\n\r\n", id="app-connection-close"),
        pytest.param(b"GET / HTTP/1.1\r\n\r\n", id="400-no-host"),
    ],
)
async def test_the_last_answer_carries_the_fin(request_bytes: bytes) -> None:
    async with serve(hello) as srv:
        data, baseline = await exchange(srv.port, KEEP_ALIVE, until_eof=False)
        assert data.startswith(b"HTTP/1.1 200 ")
        data, bare = await exchange(srv.port, request_bytes, until_eof=True)
        assert data.startswith((b"HTTP/1.1 200 ", b"HTTP/1.1 400 "))
        assert bare == baseline


async def test_a_unix_socket_closes_as_before(tmp_path: Path) -> None:
    path = str(tmp_path / "app.sock")
    server = Server(Config(uds=path, lifespan="off"), hello)
    await asyncio.wait_for(server.start(), TIMEOUT_S)
    try:
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(CLIENT_CLOSE)
        answer = await asyncio.wait_for(reader.read(), TIMEOUT_S)  # to EOF
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"hello")
        writer.close()
    finally:
        await asyncio.wait_for(server.shutdown(), TIMEOUT_S)


async def test_tls_is_not_corked(tmp_path: Path) -> None:
    # Corked, the answer would wait for the kernel's cork limit: the TLS close
    # waits for the client's close_notify, which the client sends once it has
    # our close_notify, held behind the cork.
    tls = local_tls(tmp_path)
    async with serve(hello, ssl_context=tls.server_context, **tls.options) as srv:

        def client() -> tuple[ssl.SSLSocket, bytes]:
            raw = socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT_S)
            sock = tls.client_context.wrap_socket(raw, server_hostname="127.0.0.1")
            sock.sendall(CLIENT_CLOSE)
            data = b""
            while not data.endswith(b"hello"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
            return sock, data  # no close_notify from us: the server side stays open

        sock, data = await asyncio.to_thread(client)
        try:
            assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"hello")
            side = await accepted(srv)
            server_sock = side._transport.get_extra_info("socket")
            assert server_sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK) == 0
        finally:
            sock.close()


@pytest.mark.parametrize("cork", [fin.tcp_cork, fin.tcp_cork_python], ids=["c", "python"])
def test_tcp_cork_sets_the_option_and_never_raises(cork: Any) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    with listener, socket.create_connection(listener.getsockname()) as client:
        assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK) == 0
        cork(client.fileno())
        assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK) == 1
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as unix:
        cork(unix.fileno())  # not TCP: ignored
    closed = socket.socket()
    fd = closed.fileno()
    closed.close()
    cork(fd)  # no longer open: ignored
