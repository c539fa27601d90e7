"""The ceiling for one Python core: a uvloop protocol that answers without parsing HTTP.

    python bench/apps/raw_uvloop.py PORT

Every request head (counted by its blank line) gets a canned response, written once per read
that completes heads: "Hello, world!", or for ``GET /download`` 1 MiB built once at start and
written in one call. A ``Connection: close`` request gets its answer and FIN in one segment
(``TCP_CORK`` before the write, as sluiceway does). It is no server (no parsing, no ASGI, no
limits); it exists so bench/http_load.py can show how much of a real server's cost per request
is the event loop and the socket calls alone, and in (c) how fast wrk can take a download
(``--servers ceiling``, scenarios a, c and e only).
Must not import: sluiceway.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from typing import cast

import uvloop

RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 13\r\n\r\nHello, world!"
)
CLOSING = RESPONSE.replace(b"\r\n\r\n", b"\r\nconnection: close\r\n\r\n", 1)
MIB = 1 << 20
DOWNLOAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: %d\r\n\r\n" % MIB
) + b"x" * MIB


class Answer(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.pending = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        data = self.pending + data
        heads = data.count(b"\r\n\r\n")
        self.pending = data[data.rfind(b"\r\n\r\n") + 4 :] if heads else data
        if not heads:
            return
        if b"onnection: close" in data:
            sock = self.transport.get_extra_info("socket")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
            self.transport.write(CLOSING)
            self.transport.close()
        elif data.startswith(b"GET /download"):
            self.transport.write(DOWNLOAD * heads)
        else:
            self.transport.write(RESPONSE * heads)


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    server = await loop.create_server(Answer, "127.0.0.1", port, backlog=4096)
    async with server:
        await stop


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))
