"""The WebSocket opening handshake (RFC 6455 §4.2; over HTTP/2, RFC 8441 §5).

``validate_request`` checks an HTTP/1.1 upgrade request and returns either a
``Handshake`` (what the client asked for: key, subprotocols, the agreed
permessage-deflate parameters) or a ``Rejection`` (status, headers, body) for
the HTTP layer to send. ``build_accept_response`` turns a ``Handshake`` and
the app's ``websocket.accept`` choices into the 101 response head.

The parts that do not depend on the HTTP version are public on their own,
for the HTTP/2 carrier (``http2/websocket.py``): ``validate_fields`` checks
the fields an extended CONNECT shares with an upgrade (RFC 8441 §5:
Sec-WebSocket-Version, -Protocol and -Extensions as in RFC 6455; there is no
Sec-WebSocket-Key, so its ``Handshake`` has an empty key and accept), and
``accept_fields`` validates the app's accept (subprotocol, extra headers)
into the fields any answer carries. The HTTP/1.1 functions run the same
checks in the same order as before the split: their output is byte for byte
what it was.

Imports only the standard library and the sibling ``deflate`` module.

Invariants: nothing here raises for bad input from the client or the app;
every failure is a ``Rejection`` value. Header names given to these functions
may be in any case; header values are bytes, decoded as latin-1.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sluiceway.websocket.deflate import (
    DEFAULT_DEFLATE_SETTINGS,
    EXTENSION_NAME,
    DeflateParams,
    DeflateSettings,
    negotiate,
)

__all__ = [
    "Handshake",
    "Rejection",
    "accept_fields",
    "accept_key",
    "build_accept_response",
    "parse_extensions",
    "validate_fields",
    "validate_request",
]

# RFC 6455 §1.3: the GUID appended to the key before hashing.
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# RFC 9110 §5.6.2: token = 1*tchar.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TOKEN_BYTES = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 9110 §5.5: field-value bytes; CR, LF and NUL are never allowed.
_FIELD_VALUE_BAD = re.compile(rb"[\x00\r\n]")

# Response headers the handshake writes itself; an app may not set them
# (ASGI www spec, websocket.accept: Sec-WebSocket-Protocol comes from
# ``subprotocol``; the others would break the upgrade).
_RESERVED_RESPONSE_HEADERS = frozenset(
    {
        b"upgrade",
        b"connection",
        b"sec-websocket-accept",
        b"sec-websocket-protocol",
        b"sec-websocket-extensions",
        b"content-length",
        b"transfer-encoding",
    }
)

HeaderPairs = Iterable[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class Rejection:
    """An HTTP response that refuses the handshake.

    ``headers`` are extra headers (names lower case); ``to_bytes`` adds
    Content-Type, Content-Length and ``Connection: close``.
    """

    status: int
    reason: str
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes = b""

    def to_bytes(self, default_headers: bytes = b"") -> bytes:
        """The whole HTTP/1.1 response: status line, headers and body.

        ``default_headers`` are the server's own lines (Date, Server), each
        ending with CRLF, as every other response carries them.
        """
        lines = [f"HTTP/1.1 {self.status} {_REASONS.get(self.status, 'Error')}".encode()]
        lines.extend(name + b": " + value for name, value in self.headers)
        lines.append(b"content-type: text/plain; charset=utf-8")
        lines.append(b"content-length: " + str(len(self.body)).encode())
        lines.append(b"connection: close")
        return b"\r\n".join(lines) + b"\r\n" + default_headers + b"\r\n" + self.body


_REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    426: "Upgrade Required",
    500: "Internal Server Error",
}


def _bad_request(reason: str) -> Rejection:
    return Rejection(400, reason, (), f"{reason}\n".encode())


@dataclass(frozen=True, slots=True)
class Handshake:
    """A valid opening handshake request.

    Attributes:
        key: the Sec-WebSocket-Key as sent; empty over HTTP/2 (RFC 8441 §5).
        accept: the Sec-WebSocket-Accept value that answers it; empty over HTTP/2.
        subprotocols: Sec-WebSocket-Protocol tokens in the client's order.
        deflate: the agreed permessage-deflate parameters, or None.
    """

    key: bytes = b""
    accept: bytes = b""
    subprotocols: tuple[str, ...] = ()
    deflate: DeflateParams | None = None


def accept_key(key: bytes | str) -> bytes:
    """The Sec-WebSocket-Accept value for ``key`` (RFC 6455 §4.2.2 item 5.4)."""
    raw = key.encode("latin-1") if isinstance(key, str) else key
    return base64.b64encode(hashlib.sha1(raw + _GUID).digest())


def _split_list(value: str) -> list[str]:
    """Elements of a comma-separated header list (RFC 9110 §5.6.1), empties dropped."""
    return [item for item in (part.strip(" \t") for part in value.split(",")) if item]


def _has_token(values: list[bytes], token: str) -> bool:
    for value in values:
        for item in _split_list(value.decode("latin-1")):
            if item.lower() == token:
                return True
    return False


def _unquote(value: str) -> str | None:
    """Unquote an RFC 9110 quoted-string; None if malformed."""
    inner = value[1:-1]
    if len(value) < 2 or not value.endswith('"'):
        return None
    out = []
    escaped = False
    for char in inner:
        if escaped:
            out.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            return None
        else:
            out.append(char)
    return None if escaped else "".join(out)


def parse_extensions(
    values: Sequence[bytes],
) -> list[tuple[str, list[tuple[str, str | None]]]] | None:
    """Parse Sec-WebSocket-Extensions values (RFC 6455 §9.1).

    Returns:
        ``[(name, [(param, value or None), ...]), ...]`` in order, names
        lower case, quoted values unquoted (RFC 7692 §7.1 requires them to be
        tokens after unquoting); None if a value is malformed.
    """
    result: list[tuple[str, list[tuple[str, str | None]]]] = []
    for raw in values:
        # Quoted strings could hide a comma or semicolon; none of the
        # permessage-deflate values can contain one, so splitting first and
        # rejecting leftover quotes below is exact for what we accept.
        for element in _split_list(raw.decode("latin-1")):
            parts = [part.strip(" \t") for part in element.split(";")]
            name = parts[0]
            if not _TOKEN.fullmatch(name):
                return None
            params: list[tuple[str, str | None]] = []
            for part in parts[1:]:
                key, eq, value = part.partition("=")
                key = key.strip(" \t")
                if not _TOKEN.fullmatch(key):
                    return None
                if not eq:
                    params.append((key.lower(), None))
                    continue
                value = value.strip(" \t")
                if value.startswith('"'):
                    unquoted = _unquote(value)
                    if unquoted is None:
                        return None
                    value = unquoted
                if not _TOKEN.fullmatch(value):
                    return None
                params.append((key.lower(), value))
            result.append((name.lower(), params))
    return result


def validate_request(
    method: str | bytes,
    http_version: str,
    headers: HeaderPairs,
    *,
    deflate: DeflateSettings | None = DEFAULT_DEFLATE_SETTINGS,
) -> Handshake | Rejection:
    """Check an HTTP/1.1 WebSocket upgrade request (RFC 6455 §4.2.1).

    Args:
        method: the request method.
        http_version: the request's version; only "1.1" upgrades (RFC 8441,
            WebSocket over HTTP/2, is an extended CONNECT: ``validate_fields``).
        headers: ``(name, value)`` pairs as received.
        deflate: the server's permessage-deflate settings, or None to never
            agree to compression.

    Returns:
        A ``Handshake`` to hand to the app, or a ``Rejection`` to send: 426
        with ``Sec-WebSocket-Version: 13`` for an unsupported version, 400 for
        anything else that is malformed.
    """
    if (method.decode("latin-1") if isinstance(method, bytes) else method) != "GET":
        return _bad_request("WebSocket handshake requires GET")
    if http_version != "1.1":
        # §4.1: "The method of the request MUST be GET, and the HTTP version
        # MUST be at least 1.1."
        return _bad_request("WebSocket handshake requires HTTP/1.1")

    by_name = _by_name(headers)

    if not by_name.get(b"host"):
        return _bad_request("missing Host header")
    if not _has_token(by_name.get(b"upgrade", []), "websocket"):
        return _bad_request("missing or invalid Upgrade: websocket header")
    if not _has_token(by_name.get(b"connection", []), "upgrade"):
        return _bad_request("Connection header does not contain upgrade")
    # RFC 9110 §7.8: the switch happens after the whole request message. The
    # HTTP/1 layer hands over at the end of the head, so a body would be read as
    # frames (smuggled past a proxy that saw one request): refuse any body.
    if by_name.get(b"transfer-encoding") or any(
        v.strip(b" \t") != b"0" for v in by_name.get(b"content-length", [])
    ):
        return _bad_request("WebSocket handshake must not carry a request body")

    rejection = _check_version(by_name)
    if rejection is not None:
        return rejection

    keys = by_name.get(b"sec-websocket-key", [])
    if len(keys) != 1:
        return _bad_request("missing or repeated Sec-WebSocket-Key")
    key = keys[0].strip(b" \t")
    try:
        # §4.1 item 7: base64 of 16 random bytes, so exactly 24 characters.
        decoded = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if len(decoded) != 16:
        return _bad_request("invalid Sec-WebSocket-Key")

    offer = _offer(by_name, deflate)
    if isinstance(offer, Rejection):
        return offer
    return Handshake(key=key, accept=accept_key(key), subprotocols=offer[0], deflate=offer[1])


def validate_fields(
    headers: HeaderPairs,
    *,
    deflate: DeflateSettings | None = DEFAULT_DEFLATE_SETTINGS,
) -> Handshake | Rejection:
    """Check the WebSocket fields of a handshake whatever its HTTP version.

    RFC 8441 §5: an extended CONNECT uses Sec-WebSocket-Version, -Protocol
    and -Extensions as RFC 6455 §4.2.1 does, and no Sec-WebSocket-Key; the
    method, ``:protocol`` and the other pseudo-headers are the HTTP/2
    layer's to check. ``validate_request`` runs these same checks.

    Returns:
        A ``Handshake`` with an empty key and accept, or a ``Rejection``: 426
        with ``Sec-WebSocket-Version: 13`` (and ``Upgrade: websocket``, which
        an HTTP/2 answer drops as connection-specific) for an unsupported
        version, 400 for a malformed Sec-WebSocket-Protocol.
    """
    by_name = _by_name(headers)
    rejection = _check_version(by_name)
    if rejection is not None:
        return rejection
    offer = _offer(by_name, deflate)
    if isinstance(offer, Rejection):
        return offer
    return Handshake(subprotocols=offer[0], deflate=offer[1])


def _by_name(headers: HeaderPairs) -> dict[bytes, list[bytes]]:
    by_name: dict[bytes, list[bytes]] = {}
    for name, value in headers:
        by_name.setdefault(name.lower(), []).append(value)
    return by_name


def _check_version(by_name: dict[bytes, list[bytes]]) -> Rejection | None:
    # §4.4: an unsupported version gets 426 and the versions we speak.
    versions = by_name.get(b"sec-websocket-version", [])
    if len(versions) != 1 or versions[0].strip(b" \t") != b"13":
        return Rejection(
            426,
            "unsupported Sec-WebSocket-Version",
            ((b"sec-websocket-version", b"13"), (b"upgrade", b"websocket")),
            b"unsupported Sec-WebSocket-Version, this server speaks 13\n",
        )
    return None


def _offer(
    by_name: dict[bytes, list[bytes]], deflate: DeflateSettings | None
) -> tuple[tuple[str, ...], DeflateParams | None] | Rejection:
    """The offered subprotocols and the agreed permessage-deflate (§4.2.1 items 8, 9)."""
    subprotocols: list[str] = []
    for value in by_name.get(b"sec-websocket-protocol", []):
        for item in _split_list(value.decode("latin-1")):
            if not _TOKEN.fullmatch(item):
                return _bad_request("invalid Sec-WebSocket-Protocol")
            subprotocols.append(item)

    agreed: DeflateParams | None = None
    ext_values = by_name.get(b"sec-websocket-extensions")
    if deflate is not None and ext_values:
        # A malformed extensions header declines every extension rather than
        # refusing the connection: compression is optional (RFC 6455 §9.1).
        extensions = parse_extensions(ext_values) or []
        offers = [params for name, params in extensions if name == EXTENSION_NAME]
        if offers:
            agreed = negotiate(offers, deflate)
    return tuple(subprotocols), agreed


def build_accept_response(
    handshake: Handshake,
    subprotocol: str | None = None,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> bytes | Rejection:
    """The 101 Switching Protocols head that completes the handshake.

    Args:
        handshake: the result of ``validate_request``.
        subprotocol: the app's choice from ``websocket.accept``, or None.
        headers: extra headers from ``websocket.accept`` (ASGI 2.1+), names
            lower case as ASGI requires.

    Returns:
        The response head bytes, ending with the blank line, or a 500
        ``Rejection`` when the app's subprotocol or headers are invalid
        (see ``accept_fields``).
    """
    fields = accept_fields(handshake, subprotocol, headers)
    if isinstance(fields, Rejection):
        return fields
    lines = [
        b"HTTP/1.1 101 Switching Protocols",
        b"upgrade: websocket",
        b"connection: Upgrade",
        b"sec-websocket-accept: " + handshake.accept,
    ]
    lines.extend(name + b": " + value for name, value in fields)
    lines.append(b"\r\n")
    return b"\r\n".join(lines)


def accept_fields(
    handshake: Handshake,
    subprotocol: str | None = None,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> list[tuple[bytes, bytes]] | Rejection:
    """The fields every accepting answer carries, whatever its HTTP version.

    Sec-WebSocket-Protocol for ``subprotocol``, Sec-WebSocket-Extensions for
    the agreed permessage-deflate, then the app's ``headers``, in that order.
    The 101 of HTTP/1.1 adds them after its own lines; the 200 of HTTP/2
    (RFC 8441 §5) after ``:status``.

    Returns:
        The ``(name, value)`` pairs, names as the app gave them, or a 500
        ``Rejection`` when the app's subprotocol or headers are invalid (a
        token is required; CR, LF and NUL are refused; handshake headers and
        HTTP/2 pseudo headers are the server's to write).
    """
    fields: list[tuple[bytes, bytes]] = []
    if subprotocol is not None:
        if not isinstance(subprotocol, str) or not _TOKEN.fullmatch(subprotocol):
            return _app_error(f"invalid subprotocol {subprotocol!r}")
        fields.append((b"sec-websocket-protocol", subprotocol.encode("ascii")))
    if handshake.deflate is not None:
        fields.append((b"sec-websocket-extensions", handshake.deflate.response_value().encode()))
    for pair in headers:
        try:
            name, value = pair
        except (TypeError, ValueError):
            return _app_error("a header is not a (name, value) pair")
        if not isinstance(name, bytes) or not isinstance(value, bytes):
            return _app_error("header names and values must be bytes")
        if not _TOKEN_BYTES.fullmatch(name) or _FIELD_VALUE_BAD.search(value):
            return _app_error(f"invalid header {name!r}")
        if name.lower() in _RESERVED_RESPONSE_HEADERS:
            return _app_error(f"header {name!r} is set by the server")
        fields.append((name, value))
    return fields


def _app_error(reason: str) -> Rejection:
    # The reason is for the log; the client gets no detail of the app's bug.
    return Rejection(500, f"websocket.accept: {reason}", (), b"Internal Server Error\n")
