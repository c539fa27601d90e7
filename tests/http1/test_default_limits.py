"""The default head limits let long real-world requests through (docs/usage.md "Limits").

With the defaults (64 KiB request target, 64 KiB of header fields, a 128 KiB
HTTP/2 header list), a 60 KiB URL (an OAuth or SAML redirect, an analytics
beacon) with 60 kB of cookies is served over HTTP/1.1 and over HTTP/2 (h2c),
and the first byte past the target limit is still a 414. Real server and
independent clients (httpx; h2 for HTTP/2); the old 8 KiB target limit gave
414 and the old 64 KiB HTTP/2 list 431 here.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from sluiceway.config import Config
from tests.server.serving import running
from tests.support import raw_connection

TARGET = Config().max_request_line_bytes


async def sizes(scope: Any, receive: Any, send: Any) -> None:
    """Answers with the lengths of the query string and of the cookie field it got."""
    if scope["type"] != "http":
        return
    cookie = b"".join(value for name, value in scope["headers"] if name == b"cookie")
    body = json.dumps({"query": len(scope["query_string"]), "cookie": len(cookie)}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def long_request() -> tuple[str, dict[str, str]]:
    query = "state=" + "s" * (60 * 1024)
    cookie = "; ".join(f"c{i}={'v' * 3000}" for i in range(20))  # 20 cookies, 60 kB
    return f"/callback?{query}", {"cookie": cookie}


@pytest.mark.parametrize("http2", [False, True], ids=["HTTP/1.1", "h2c"])
async def test_a_60_kib_url_with_60_kb_of_cookies_is_served(http2: bool) -> None:
    path, headers = long_request()
    client = httpx.AsyncClient(http1=not http2, http2=http2, timeout=5.0)
    async with running(sizes) as server, client:
        response = await client.get(f"http://127.0.0.1:{server.port}{path}", headers=headers)
    assert response.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
    assert response.status_code == 200
    expected = {"query": len(path) - len("/callback?"), "cookie": len(headers["cookie"])}
    assert response.json() == expected


async def test_a_target_one_byte_over_the_default_is_414() -> None:
    async with running(sizes) as server, raw_connection(server.port) as conn:
        target = b"/" + b"a" * TARGET
        await conn.send(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await conn.read_response()).status == 414
