"""HTTP/2 fields <-> ASGI: the request scope from a HEADERS block, the response block from ``send``.

The connection (``http2/connection.py``) has already checked a request's
fields against RFC 9113 §8.2-§8.3 (lowercase names, no connection-specific
fields, pseudo-headers first and well formed). What is left here is the ASGI
mapping (www spec, "HTTP Connection Scope"): pseudo-headers leave the header
list, ``:authority`` becomes the ``host`` header at its front (replacing any
``host`` the client also sent, as RFC 9113 §8.3.1 says the two must agree and
``:authority`` wins), and ``:path`` is split like an HTTP/1.1 origin-form
target.

On the way out, an app's headers are validated as strictly as over HTTP/1.1
(no CR, LF or NUL; names are tokens) and lowercased (RFC 9113 §8.2.1: a
field name with an uppercase letter makes the response malformed), and the
connection-specific fields an app may carry over from HTTP/1.1 habits
(``connection``, ``keep-alive``, ``transfer-encoding``...) are dropped, as RFC
9113 §8.2.2 forbids sending them; the server's own ``date``/``server`` and
``--header`` extras are added unless the app set them.

Imports ``sluiceway.asgi``, ``sluiceway.errors`` and the standard library.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from sluiceway.errors import ASGIMessageError

# RFC 9113 §8.2.2: these must never appear in an HTTP/2 message.
_CONNECTION_SPECIFIC: Final = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade")
)
# RFC 9110 §5.6.2 tchar, as a byte table: a field name must be a token.
_TCHAR: Final = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz")
_STATUS: Final = [b"%d" % n for n in range(600)]

DATE_SERVER: Final = frozenset((b"date", b"server"))


class Request:
    """What the scope needs from a request's HEADERS block (pseudo-headers split off)."""

    __slots__ = ("authority", "headers", "method", "path", "protocol", "scheme")

    def __init__(self) -> None:
        self.method = ""
        self.scheme = ""
        self.path = b""
        self.authority: bytes | None = None
        self.protocol: bytes | None = None  # RFC 8441 extended CONNECT
        self.headers: list[tuple[bytes, bytes]] = []


def split_request(fields: list[tuple[bytes, bytes]]) -> Request:
    """Split a validated request field list into pseudo-headers and the ASGI header list."""
    request = Request()
    headers = request.headers
    host_at = -1
    for name, value in fields:
        if name[:1] == b":":
            if name == b":method":
                request.method = value.decode("ascii", "replace")
            elif name == b":path":
                request.path = value
            elif name == b":scheme":
                request.scheme = value.decode("ascii", "replace")
            elif name == b":authority":
                request.authority = value
            elif name == b":protocol":
                request.protocol = value
            continue
        if name == b"host":
            if host_at >= 0:
                continue  # one host only; :authority (below) or the first wins
            host_at = len(headers)
        headers.append((name, value))
    authority = request.authority
    if authority is not None:
        # www spec: ":authority" is given as "host", at the start of the list,
        # replacing a host field the client also sent.
        if host_at >= 0:
            del headers[host_at]
        headers.insert(0, (b"host", authority))
    return request


def parse_default_headers(raw: bytes) -> list[tuple[bytes, bytes]]:
    """The server's default header lines (``b"date: ...\\r\\n"``...) as field pairs."""
    fields = []
    for line in raw.split(b"\r\n"):
        if line:
            name, _, value = line.partition(b": ")
            fields.append((name, value))
    return fields


def response_fields(
    status: int,
    headers: Iterable[Any],
    defaults: list[tuple[bytes, bytes]],
) -> tuple[list[tuple[bytes, bytes]], int]:
    """Validate an app's response head; return ``(fields, content_length or -1)``.

    Raises:
        ASGIMessageError: a header is not a pair of bytes, holds CR/LF/NUL,
            or its name is not a token; a Content-Length is not a number.
    """
    fields = [(b":status", _STATUS[status])]
    content_length = -1
    overrides = 0
    try:
        for name, value in headers:
            name = _checked_name(name)
            if type(value) is not bytes or 13 in value or 10 in value or 0 in value:
                raise ASGIMessageError(f"invalid value for response header {name!r}")
            if name in _CONNECTION_SPECIFIC:
                continue
            if name == b"content-length":
                stripped = value.strip(b" \t")
                if not stripped.isdigit() or len(stripped) > 18:
                    raise ASGIMessageError(f"invalid Content-Length response header {value!r}")
                length = int(stripped)
                if content_length >= 0:
                    if length != content_length:
                        raise ASGIMessageError("conflicting Content-Length response headers")
                    continue
                content_length = length
                value = stripped
            elif name in DATE_SERVER:
                overrides |= 1 if name == b"date" else 2
            fields.append((name, value))
    except ASGIMessageError:
        raise
    except (TypeError, ValueError) as exc:
        raise ASGIMessageError(f"response headers must be [name, value] pairs: {exc}") from exc
    for name, value in defaults:
        if overrides and name in DATE_SERVER and overrides & (1 if name == b"date" else 2):
            continue
        fields.append((name, value))
    return fields, content_length


def trailer_fields(headers: Iterable[Any]) -> list[tuple[bytes, bytes]]:
    """Validate trailers: as for a head, but no pseudo-headers (RFC 9113 §8.1)."""
    fields = []
    try:
        for name, value in headers:
            name = _checked_name(name)
            if type(value) is not bytes or 13 in value or 10 in value or 0 in value:
                raise ASGIMessageError(f"invalid value for trailer {name!r}")
            if name not in _CONNECTION_SPECIFIC:
                fields.append((name, value))
    except ASGIMessageError:
        raise
    except (TypeError, ValueError) as exc:
        raise ASGIMessageError(f"trailers must be [name, value] pairs: {exc}") from exc
    return fields


def _checked_name(raw: Any) -> bytes:
    if type(raw) is not bytes:
        raise ASGIMessageError(f"response header names must be bytes, got {type(raw).__name__}")
    name: bytes = raw if raw.islower() else raw.lower()
    if not name or not _TCHAR.issuperset(name):
        raise ASGIMessageError(f"invalid response header name {name!r}")
    return name
