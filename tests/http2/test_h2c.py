"""``Upgrade: h2c`` (RFC 7540 §3.2) on the HTTP/1.1 port, with curl and with the ``h2`` client.

A request with a body up to the HTTP/1.1 buffer (64 KiB) is read whole, then
the 101 goes out and HTTP/2 answers it on stream 1; a larger body, a missing
or undecodable ``HTTP2-Settings``, or ``--no-http2`` keep HTTP/1.1.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest

from tests.support import TIMEOUT_S, serve


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    text = f"{scope['http_version']} {scope['method']} {scope['path']} {len(body)}"
    hosts = [v for n, v in scope["headers"] if n == b"host"]
    names = {n for n, _ in scope["headers"]}
    if scope["http_version"] == "2":  # the fields that served only the upgrade are gone
        assert b"http2-settings" not in names and b"upgrade" not in names
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": f"{text} {hosts}".encode()})


async def upgrade(port: int, body: bytes, settings: bytes | None) -> tuple[bytes, bytes]:
    """Send an h2c upgrade request; return (the status line, what answered it)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    fields = b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
    if settings is None:
        settings = client.initiate_upgrade_connection()
    if settings:
        fields += b"HTTP2-Settings: " + settings + b"\r\n"
    head = b"POST /up?q=1 HTTP/1.1\r\nHost: h.test\r\n%sContent-Length: %d\r\n\r\n"
    writer.write(head % (fields, len(body)) + body)
    try:
        line = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT_S)
        status = line.split(b"\r\n", 1)[0]
        if b" 101 " not in status:
            return status, await asyncio.wait_for(reader.read(65536), TIMEOUT_S)
        writer.write(client.data_to_send())
        answer = b""
        while True:
            data = await asyncio.wait_for(reader.read(65536), TIMEOUT_S)
            assert data, "closed before the answer"
            for event in client.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    assert event.stream_id == 1
                    answer += event.data
                elif isinstance(event, h2.events.StreamEnded):
                    return status, answer
            writer.write(client.data_to_send())
    finally:
        writer.close()


@pytest.mark.parametrize("size", [0, 5, 65536])
async def test_the_upgraded_request_is_answered_over_http2(size: int) -> None:
    async with serve(echo) as srv:
        status, answer = await upgrade(srv.port, b"x" * size, None)
    assert status == b"HTTP/1.1 101 Switching Protocols"
    assert answer == f"2 POST /up {size} [b'h.test']".encode()


async def test_a_body_over_the_buffer_stays_on_http11() -> None:
    async with serve(echo) as srv:
        status, answer = await upgrade(srv.port, b"x" * 65537, None)
    assert status == b"HTTP/1.1 200 OK"
    assert answer.endswith(b"1.1 POST /up 65537 [b'h.test']")


@pytest.mark.parametrize("settings", [b"", b"not base64!", base64.urlsafe_b64encode(b"12345")])
async def test_without_valid_settings_the_upgrade_is_ignored(settings: bytes) -> None:
    async with serve(echo) as srv:
        status, answer = await upgrade(srv.port, b"abc", settings)
    assert status == b"HTTP/1.1 200 OK"
    assert answer.endswith(b"1.1 POST /up 3 [b'h.test']")


async def test_no_http2_ignores_the_upgrade() -> None:
    async with serve(echo, http2=False) as srv:
        status, answer = await upgrade(srv.port, b"abc", None)
    assert status == b"HTTP/1.1 200 OK"
    assert answer.endswith(b"1.1 POST /up 3 [b'h.test']")


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is installed by CI's apt step")
@pytest.mark.parametrize("data", [[], ["--data-binary", "hello"]])
async def test_curl_upgrades(data: list[str]) -> None:
    async with serve(echo) as srv:
        proc = await asyncio.create_subprocess_exec(
            "curl", "-s", "--http2", *data, f"http://127.0.0.1:{srv.port}/up",
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), TIMEOUT_S)
    method, size = ("POST", 5) if data else ("GET", 0)
    assert out == f"2 {method} /up {size} [b'127.0.0.1:{srv.port}']".encode()
