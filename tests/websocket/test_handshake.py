"""handshake.py: request validation, negotiation and the 101 response.

Cross-checked with the ``websockets`` library's sans-I/O client, which validates
our response (accept key, subprotocol, extension parameters) on its own.
"""

from __future__ import annotations

import pytest
from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.http11 import Response
from websockets.protocol import State as WSState
from websockets.uri import parse_uri

from sluiceway.websocket.deflate import DeflateParams, DeflateSettings
from sluiceway.websocket.handshake import (
    Handshake,
    Rejection,
    accept_key,
    build_accept_response,
    parse_extensions,
    validate_request,
)

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def request_headers(**overrides: bytes | None) -> list[tuple[bytes, bytes]]:
    headers = {
        b"host": b"example.com",
        b"upgrade": b"websocket",
        b"connection": b"Upgrade",
        b"sec-websocket-key": KEY,
        b"sec-websocket-version": b"13",
    }
    for name, value in overrides.items():
        key = name.replace("_", "-").encode()
        if value is None:
            headers.pop(key, None)
        else:
            headers[key] = value
    return list(headers.items())


def validate(headers: list[tuple[bytes, bytes]], **kwargs: object) -> Handshake | Rejection:
    return validate_request("GET", "1.1", headers, **kwargs)  # type: ignore[arg-type]


def test_rfc_example_accept_key() -> None:
    # RFC 6455 §1.3.
    assert accept_key(KEY) == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert accept_key(KEY.decode()) == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_a_valid_request_is_accepted() -> None:
    result = validate(request_headers())
    assert result == Handshake(key=KEY, accept=b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")


def test_header_names_and_tokens_are_case_insensitive() -> None:
    headers = [
        (b"Host", b"example.com"),
        (b"Upgrade", b"WebSocket"),
        (b"Connection", b"keep-alive"),
        (b"connection", b"X, UPGRADE"),
        (b"Sec-WebSocket-Key", b" " + KEY + b" "),
        (b"Sec-WebSocket-Version", b"13"),
    ]
    result = validate(headers)
    assert isinstance(result, Handshake) and result.key == KEY


@pytest.mark.parametrize(
    ("method", "version", "overrides"),
    [
        ("POST", "1.1", {}),
        (b"HEAD", "1.1", {}),
        ("GET", "1.0", {}),
        ("GET", "2", {}),
        ("GET", "1.1", {"host": None}),
        ("GET", "1.1", {"upgrade": None}),
        ("GET", "1.1", {"upgrade": b"h2c"}),
        ("GET", "1.1", {"connection": None}),
        ("GET", "1.1", {"connection": b"keep-alive"}),
        ("GET", "1.1", {"connection": b"upgrades"}),
        ("GET", "1.1", {"sec_websocket_key": None}),
        ("GET", "1.1", {"sec_websocket_key": b"not base64!!"}),
        ("GET", "1.1", {"sec_websocket_key": b"c2hvcnQ="}),  # 5 bytes
        ("GET", "1.1", {"sec_websocket_key": b"AAAAAAAAAAAAAAAAAAAAAAAAAA=="}),  # 19 bytes
        ("GET", "1.1", {"sec_websocket_protocol": b"chat, bad proto"}),
    ],
)
def test_malformed_requests_get_400(
    method: str | bytes, version: str, overrides: dict[str, bytes | None]
) -> None:
    result = validate_request(method, version, request_headers(**overrides))
    assert isinstance(result, Rejection)
    assert result.status == 400
    response = result.to_bytes()
    assert response.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"connection: close\r\n" in response
    head, _, body = response.partition(b"\r\n\r\n")
    assert f"content-length: {len(body)}".encode() in head


def test_a_repeated_key_gets_400() -> None:
    result = validate([*request_headers(), (b"sec-websocket-key", KEY)])
    assert isinstance(result, Rejection) and result.status == 400


@pytest.mark.parametrize("version", [None, b"8", b"12", b"14", b"13, 8", b""])
def test_other_versions_get_426_with_the_supported_version(version: bytes | None) -> None:
    # RFC 6455 §4.4.
    result = validate(request_headers(sec_websocket_version=version))
    assert isinstance(result, Rejection)
    assert result.status == 426
    assert (b"sec-websocket-version", b"13") in result.headers
    response = result.to_bytes()
    assert response.startswith(b"HTTP/1.1 426 Upgrade Required\r\n")
    assert b"\r\nsec-websocket-version: 13\r\n" in response


def test_subprotocols_keep_the_client_order_across_headers() -> None:
    headers = [
        *request_headers(),
        (b"sec-websocket-protocol", b"chat, superchat"),
        (b"Sec-WebSocket-Protocol", b" v2.json ,,"),
    ]
    result = validate(headers)
    assert isinstance(result, Handshake)
    assert result.subprotocols == ("chat", "superchat", "v2.json")


def test_parse_extensions() -> None:
    values = [b'permessage-deflate; client_max_window_bits; server_max_window_bits="10"', b"x-foo"]
    assert parse_extensions(values) == [
        (
            "permessage-deflate",
            [("client_max_window_bits", None), ("server_max_window_bits", "10")],
        ),
        ("x-foo", []),
    ]
    assert parse_extensions([b"permessage-deflate; a=b c"]) is None
    assert parse_extensions([b'permessage-deflate; a="unterminated']) is None
    assert parse_extensions([b"bad name"]) is None


def test_deflate_is_negotiated_or_declined() -> None:
    offer = [
        *request_headers(),
        (b"sec-websocket-extensions", b"x-unknown, permessage-deflate; client_max_window_bits"),
    ]
    result = validate(offer)
    assert isinstance(result, Handshake)
    assert result.deflate == DeflateParams(server_max_window_bits=12, client_max_window_bits=12)
    # Switched off, or an offer we cannot accept: no extension, still a connection.
    result = validate(offer, deflate=None)
    assert isinstance(result, Handshake) and result.deflate is None
    bad = [*request_headers(), (b"sec-websocket-extensions", b"permessage-deflate; foo=1")]
    result = validate(bad)
    assert isinstance(result, Handshake) and result.deflate is None
    malformed = [*request_headers(), (b"sec-websocket-extensions", b"permessage-deflate; ;;=")]
    result = validate(malformed)
    assert isinstance(result, Handshake) and result.deflate is None


def test_accept_response_head() -> None:
    handshake = validate(request_headers(sec_websocket_protocol=b"chat"))
    assert isinstance(handshake, Handshake)
    head = build_accept_response(handshake, "chat", [(b"set-cookie", b"a=1"), [b"x-b", b"2"]])  # type: ignore[list-item]
    assert head == (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"upgrade: websocket\r\n"
        b"connection: Upgrade\r\n"
        b"sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        b"sec-websocket-protocol: chat\r\n"
        b"set-cookie: a=1\r\n"
        b"x-b: 2\r\n"
        b"\r\n"
    )


@pytest.mark.parametrize(
    ("subprotocol", "headers"),
    [
        ("bad proto", []),
        ("chat\r\nx-evil: 1", []),
        (None, [(b"x-evil", b"a\r\nset-cookie: b=1")]),
        (None, [(b"x-evil", b"a\nb")]),
        (None, [(b"x-evil", b"a\x00b")]),
        (None, [(b"bad name", b"1")]),
        (None, [(b"x:y", b"1")]),
        (None, [(b":authority", b"x")]),
        (None, [("x-str", "not bytes")]),
        (None, [(b"only-one",)]),
        (None, [(b"sec-websocket-protocol", b"chat")]),
        (None, [(b"Sec-WebSocket-Accept", b"forged")]),
        (None, [(b"connection", b"close")]),
        (None, [(b"content-length", b"0")]),
    ],
)
def test_bad_app_choices_become_a_500_not_a_broken_response(
    subprotocol: str | None, headers: list[tuple[bytes, bytes]]
) -> None:
    handshake = validate(request_headers())
    assert isinstance(handshake, Handshake)
    result = build_accept_response(handshake, subprotocol, headers)
    assert isinstance(result, Rejection)
    assert result.status == 500
    response = result.to_bytes()
    assert response.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    # Nothing of the app's mistake reaches the client.
    assert b"evil" not in response and b"forged" not in response


def _handshake_with_websockets_client(
    client: ClientProtocol,
    *,
    subprotocol: str | None = None,
    settings: DeflateSettings | None = None,
) -> tuple[Handshake, Response]:
    request = client.connect()
    client.send_request(request)
    raw = b"".join(client.data_to_send())
    head, _, _ = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    method, _target, version = lines[0].split(b" ")
    headers = [tuple(part.strip() for part in line.split(b":", 1)) for line in lines[1:]]
    handshake = validate_request(
        method,
        version.removeprefix(b"HTTP/").decode(),
        headers,  # type: ignore[arg-type]
        **({} if settings is None else {"deflate": settings}),
    )
    assert isinstance(handshake, Handshake)
    response = build_accept_response(handshake, subprotocol)
    assert isinstance(response, bytes)
    client.receive_data(response)
    (event,) = client.events_received()
    assert isinstance(event, Response)
    return handshake, event


def test_the_websockets_client_accepts_our_response() -> None:
    client = ClientProtocol(parse_uri("ws://example.com/chat"), subprotocols=["chat", "v2"])
    handshake, response = _handshake_with_websockets_client(client, subprotocol="v2")
    assert handshake.subprotocols == ("chat", "v2")
    assert client.state is WSState.OPEN, client.handshake_exc
    assert client.subprotocol == "v2"
    assert response.status_code == 101


@pytest.mark.parametrize(
    "factory",
    [
        ClientPerMessageDeflateFactory(),
        ClientPerMessageDeflateFactory(client_max_window_bits=True),
        ClientPerMessageDeflateFactory(client_max_window_bits=9),
        ClientPerMessageDeflateFactory(server_max_window_bits=10),
        ClientPerMessageDeflateFactory(server_max_window_bits=8),
        ClientPerMessageDeflateFactory(server_no_context_takeover=True),
        ClientPerMessageDeflateFactory(client_no_context_takeover=True),
    ],
)
def test_the_websockets_client_accepts_our_deflate_answer(
    factory: ClientPerMessageDeflateFactory,
) -> None:
    client = ClientProtocol(parse_uri("ws://example.com/"), extensions=[factory])
    handshake, _ = _handshake_with_websockets_client(client)
    assert client.state is WSState.OPEN, client.handshake_exc
    assert handshake.deflate is not None
    assert [ext.name for ext in client.extensions] == ["permessage-deflate"]
