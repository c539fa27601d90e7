"""Shared test helpers: a real server on an ephemeral port, and a raw socket client.

``async with serve(app, **config_kwargs) as srv:`` runs ``app`` behind the
HTTP/1.1 protocol on ``127.0.0.1:0`` and yields a ``Served`` with ``.host``,
``.port``, ``.url`` and ``.state`` (the ``ServerState``). Leaving the block
shuts the server down the way the runner does (graceful, then abort/cancel).

``async with raw_connection(port) as conn:`` gives a ``RawConnection`` to
send exact bytes and read back either one complete HTTP response
(``read_response``) or everything until the server closes
(``read_until_close``). Every read has a timeout: a test never hangs.

``accepted(srv)`` and ``read_by(server_side)`` let a test send bytes that the
server reads in separate reads: a client in the server's own loop can write
several times before the server's read callback runs (``RawConnection.send``
never yields on Python 3.12+, whose ``wait_for`` runs the coroutine in the
caller's task), and the server then gets the pieces in one read.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import fcntl
import ssl
import struct
import termios
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme

from sluiceway.config import Config
from sluiceway.connection.state import ServerState
from sluiceway.server.listener import make_protocol_factory

TIMEOUT_S = 5.0


@dataclass
class Served:
    host: str
    port: int
    state: ServerState
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


@contextlib.asynccontextmanager
async def serve(
    app: Any,
    *,
    ssl_context: ssl.SSLContext | None = None,
    lifespan_state: dict[str, Any] | None = None,
    **config_kwargs: Any,
) -> AsyncIterator[Served]:
    """Serve ``app`` on an ephemeral 127.0.0.1 port for the duration of the block."""
    loop = asyncio.get_running_loop()
    config = Config(host="127.0.0.1", port=0, **config_kwargs)
    state = ServerState(config, lifespan_state)
    factory = make_protocol_factory(config, app, state, ssl_context)
    server = await loop.create_server(factory, "127.0.0.1", 0, ssl=ssl_context)
    state.start_clock(loop)
    port = server.sockets[0].getsockname()[1]
    try:
        yield Served("127.0.0.1", port, state, "https" if ssl_context else "http")
    finally:
        server.close()
        state.shutting_down = True
        for conn in list(state.connections):
            conn.shutdown()
        try:
            await asyncio.wait_for(state.wait_connections_closed(), TIMEOUT_S)
        except asyncio.TimeoutError:
            for conn in list(state.connections):
                conn.abort()
        tasks = [t for t in state.tasks if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=TIMEOUT_S)
        state.stop_clock()
        await server.wait_closed()


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    raw: bytes
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def header_values(self, name: bytes) -> list[bytes]:
        return [value for key, value in self.headers if key == name]


class RawConnection:
    """Exact bytes in, parsed (or raw) bytes out, every wait bounded."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, data: bytes) -> None:
        if self.writer.transport.is_closing():
            # The server reset the connection: asyncio's drain() would raise
            # ConnectionResetError, but uvloop's write() raises RuntimeError
            # first. One answer for both loops.
            raise ConnectionResetError("the connection is closed")
        self.writer.write(data)
        await asyncio.wait_for(self.writer.drain(), TIMEOUT_S)

    async def read_until_close(self, timeout: float = TIMEOUT_S) -> bytes:
        """Everything the server sends until it closes the connection."""
        return await asyncio.wait_for(self.reader.read(), timeout)

    async def read_response(self, *, head: bool = False, timeout: float = TIMEOUT_S) -> Response:
        """One complete response (1xx interim responses count as one each)."""
        return await asyncio.wait_for(self._read_response(head), timeout)

    async def _read_response(self, head: bool) -> Response:
        raw_head = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw_head[:-4].split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers.append((name.strip().lower(), value.strip()))
        response = Response(status, headers, b"", raw_head)
        if head or status < 200 or status in (204, 304):
            return response
        length = response.header(b"content-length")
        chunked = (response.header(b"transfer-encoding") or b"").lower() == b"chunked"
        raw = [raw_head]
        if chunked:
            body = []
            while True:
                size_line = await self.reader.readuntil(b"\r\n")
                raw.append(size_line)
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    break
                chunk = await self.reader.readexactly(size + 2)
                raw.append(chunk)
                body.append(chunk[:-2])
            while True:
                line = await self.reader.readuntil(b"\r\n")
                raw.append(line)
                if line == b"\r\n":
                    break
                name, _, value = line[:-2].partition(b":")
                response.trailers.append((name.strip().lower(), value.strip()))
            response.body = b"".join(body)
        elif length is not None:
            response.body = await self.reader.readexactly(int(length))
            raw.append(response.body)
        else:
            response.body = await self.reader.read()
            raw.append(response.body)
        response.raw = b"".join(raw)
        return response

    async def at_eof(self, timeout: float = TIMEOUT_S) -> bool:
        """True if the server closed the connection (no further bytes)."""
        data = await asyncio.wait_for(self.reader.read(1), timeout)
        return data == b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await asyncio.wait_for(self.writer.wait_closed(), TIMEOUT_S)


@contextlib.asynccontextmanager
async def raw_connection(port: int, host: str = "127.0.0.1") -> AsyncIterator[RawConnection]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), TIMEOUT_S)
    conn = RawConnection(reader, writer)
    try:
        yield conn
    finally:
        await conn.close()


async def accepted(srv: Served, timeout: float = TIMEOUT_S) -> Any:
    """The server side (the HTTP/1.1 protocol) of the one connection made to ``srv``."""

    async def one() -> Any:
        while not srv.state.connections:
            await asyncio.sleep(0)  # the accept runs in a later loop pass than the connect
        (server_side,) = srv.state.connections
        return server_side

    return await asyncio.wait_for(one(), timeout)


async def read_by(server_side: Any, timeout: float = TIMEOUT_S) -> None:
    """Wait until ``server_side`` has read every byte sent to it so far, or is closing.

    The transport's read callback hands each read to ``data_received`` at once,
    so an empty kernel receive queue means the server has seen the bytes.
    Plain TCP only (TLS reads ahead into its own buffer).
    """
    transport = server_side._transport

    async def drained() -> None:
        while not transport.is_closing():
            fd = transport.get_extra_info("socket").fileno()
            (unread,) = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))
            if unread == 0:
                return
            await asyncio.sleep(0)

    await asyncio.wait_for(drained(), timeout)


async def exchange(port: int, data: bytes, *, head: bool = False) -> Response:
    """Send ``data`` on a fresh connection and read one response."""
    async with raw_connection(port) as conn:
        await conn.send(data)
        return await conn.read_response(head=head)


@dataclass
class LocalTLS:
    """A throwaway CA's certificate for 127.0.0.1, as contexts and as the files options take."""

    server_context: ssl.SSLContext
    client_context: ssl.SSLContext
    cert_file: Path
    key_file: Path

    @property
    def options(self) -> dict[str, str]:
        """``ssl_certfile``/``ssl_keyfile`` for ``serve(...)``: the ``tls`` extension reads them."""
        return {"ssl_certfile": str(self.cert_file), "ssl_keyfile": str(self.key_file)}


def local_tls(directory: Path) -> LocalTLS:
    """Issue a 127.0.0.1 certificate from a fresh trustme CA; the client context trusts only it."""
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    issued.configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    key_file.write_bytes(issued.private_key_pem.bytes())
    return LocalTLS(server_context, client_context, cert_file, key_file)


def imported_modules(tree: ast.AST, package: str) -> list[tuple[str, ast.AST]]:
    """Every module an import statement names (``from a import b`` names a and a.b)."""
    found: list[tuple[str, ast.AST]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the package
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found.append((base, node))
            found += [(f"{base}.{alias.name}", node) for alias in node.names]
    return found
