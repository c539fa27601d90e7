"""OriginValidator / AllowedHostsOriginValidator: handshakes from bad origins are closed."""

from __future__ import annotations

from typing import Any

import pytest

from sluiceway.middleware import AllowedHostsOriginValidator, OriginValidator
from sluiceway.testing import HttpCommunicator, WebsocketCommunicator


async def accept(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await receive()
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    await receive()
    await send({"type": "websocket.accept"})
    await receive()


async def handshake(app: Any, origin: str | None, *extra: str) -> bool:
    headers = [] if origin is None else [("origin", origin)]
    headers += [("origin", o) for o in extra]
    comm = WebsocketCommunicator(app, "/", headers=headers)
    connected, detail = await comm.connect()
    if connected:
        await comm.disconnect()
    else:
        assert detail == 1008
        await comm.wait()
    return bool(connected)


ORIGIN_CASES = [
    # pattern, origin, allowed
    ("https://example.com", "https://example.com", True),
    ("https://example.com", "https://EXAMPLE.com:443", True),
    ("https://example.com", "http://example.com", False),
    ("https://example.com", "https://example.com:8443", False),
    ("https://example.com", "https://evil-example.com", False),
    ("https://example.com", "https://example.com.evil.net", False),
    ("https://example.com:8443", "https://example.com:8443", True),
    ("example.com", "http://example.com", True),
    ("example.com", "https://example.com:9000", True),
    ("example.com:8080", "http://example.com:8080", True),
    ("example.com:8080", "http://example.com", False),
    (".example.com", "https://example.com", True),
    (".example.com", "https://a.b.example.com", True),
    (".example.com", "https://badexample.com", False),
    ("*.example.com", "https://chat.example.com", True),
    ("*.example.com", "https://example.com", False),
    ("http://[::1]:8000", "http://[::1]:8000", True),
    ("[::1]", "http://[::1]:1234", True),
    ("example.com", "null", False),
    ("example.com", "not a url", False),
    ("example.com", "http://example.com:99999", False),
    ("example.com", "", False),
]


@pytest.mark.parametrize(("pattern", "origin", "allowed"), ORIGIN_CASES)
async def test_origin_patterns(pattern: str, origin: str, allowed: bool) -> None:
    assert await handshake(OriginValidator(accept, [pattern]), origin) is allowed


async def test_missing_origin_rejected_unless_allowed() -> None:
    assert await handshake(OriginValidator(accept, ["example.com"]), None) is False
    relaxed = OriginValidator(accept, ["example.com"], allow_missing_origin=True)
    assert await handshake(relaxed, None) is True
    assert await handshake(relaxed, "https://evil.com") is False
    assert await handshake(OriginValidator(accept, ["*"]), None) is True
    assert await handshake(OriginValidator(accept, ["*"]), "https://anything.io") is True


async def test_several_origin_headers_are_rejected() -> None:
    app = OriginValidator(accept, ["example.com"])
    assert await handshake(app, "http://example.com", "http://example.com") is False


async def test_allowed_hosts_ignores_scheme_and_port() -> None:
    app = AllowedHostsOriginValidator(accept, ["example.com", ".example.org"])
    assert await handshake(app, "https://example.com:8443") is True
    assert await handshake(app, "http://sub.example.org") is True
    assert await handshake(app, "http://example.net") is False
    assert await handshake(app, None) is False


async def test_http_passes_through() -> None:
    app = OriginValidator(accept, ["example.com"])
    comm = HttpCommunicator(app, "GET", "/", headers=[("origin", "https://evil.com")])
    assert (await comm.get_response())["status"] == 200


@pytest.mark.parametrize("pattern", ["", "https://", "*.", "exa*mple.com", "a/b"])
def test_invalid_patterns_fail_at_construction(pattern: str) -> None:
    with pytest.raises(ValueError):
        OriginValidator(accept, [pattern])


def test_a_single_string_is_a_mistake() -> None:
    with pytest.raises(TypeError):
        OriginValidator(accept, "example.com")
