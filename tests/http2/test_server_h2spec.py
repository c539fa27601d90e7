"""h2spec, the HTTP/2 conformance suite, against the real server, HTTP/1.1 served on the same port.

Cleartext with prior knowledge (where http2/3.5/2, an invalid preface,
fails on every server that tells the protocols apart by the first bytes),
TLS with ALPN, and strict mode (147 cases: 146 plus 5.4.1/2, GOAWAY before
the close) on both. Each run is followed by an HTTP/1.1 request on the same
port. The app answers every request with more than 5 bytes, which h2spec's
6.9.2/2 (a negative window) needs, or it skips that case. Both loops.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import local_tls, raw_connection

from .server_support import run_h2spec, serving

BODY = b"hello from sluiceway over HTTP/2\n"


async def app(scope: Any, receive: Any, send: Any) -> None:
    while (await receive()).get("more_body"):
        pass
    headers = [(b"content-type", b"text/plain")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BODY})


@pytest.mark.parametrize(
    ("over_tls", "strict", "cases"),
    [(False, False, 146), (True, False, 146), (False, True, 147), (True, True, 147)],
    ids=["h2c", "tls", "h2c-strict", "tls-strict"],
)
async def test_h2spec_passes_every_case(
    over_tls: bool, strict: bool, cases: int, tmp_path: Path
) -> None:
    tls = local_tls(tmp_path)
    options = ["-t", "-k"] if over_tls else []
    if strict:
        options.append("-S")
    async with serving(app, access_log=False, **(tls.options if over_tls else {})) as server:
        assert server.port is not None
        summary, failures = await run_h2spec(server.port, *options)
        assert summary == (cases, cases, 0, 0), failures
        # HTTP/1.1 on the same port, after all of it.
        if over_tls:
            async with httpx.AsyncClient(verify=tls.client_context) as client:
                response = await client.get(f"https://127.0.0.1:{server.port}/")
            assert response.http_version == "HTTP/1.1" and response.content == BODY
        else:
            async with raw_connection(server.port) as conn:
                await conn.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
                assert (await conn.read_response()).body == BODY
