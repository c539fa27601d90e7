"""HTTP/1.1 bytes on the wire: status lines, response heads, chunks, error replies.

The response side validates what the application hands us before any byte of
it reaches the socket (RFC 9110 §5.5, RFC 9112 §4): header names must be
tokens, values must not contain CR, LF or NUL (response splitting,
CVE-2020-7695 in uvicorn), status must be an int in 100..599, and each header
must be a pair of ``bytes``. A violation raises ``ASGIMessageError``; the
caller turns it into a 500 (or a closed connection if the head already went).

The request side adds the checks llhttp leaves to us (RFC 9112 §6.1, §3.2):
the transfer coding must be exactly ``chunked``; ``Host`` must appear once on
HTTP/1.1, and it, like an absolute-form target's authority, must be
``uri-host [":" port]`` (``check_host``), which leaves no room for userinfo.

Invariants: every function here is pure (bytes in, bytes out, or an
exception); nothing here does I/O. Imports only ``sluiceway.errors`` and the
standard library.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any, Final

from sluiceway.errors import (
    ASGIMessageError,
    BadRequest,
    NotImplementedByServer,
    ProtocolError,
)

CRLF: Final = b"\r\n"
_SEP: Final = b": "


def _reason(code: int) -> bytes:
    try:
        return HTTPStatus(code).phrase.encode("ascii")
    except ValueError:
        return b""


# Precomputed once: the status line is a dict lookup per response.
STATUS_LINES: Final[dict[int, bytes]] = {
    code: b"HTTP/1.1 %d %s\r\n" % (code, _reason(code)) for code in range(100, 600)
}

# Statuses whose responses never carry content (RFC 9110 §6.4.1).
NO_BODY_STATUSES: Final = frozenset((*range(100, 200), 204, 304))

# Kinds of response header the head builder treats specially.
PLAIN: Final = 0
CONTENT_LENGTH: Final = 1
TRANSFER_ENCODING: Final = 2
CONNECTION: Final = 3
DATE: Final = 4
SERVER: Final = 5
_SPECIAL_NAMES: Final = {
    b"content-length": CONTENT_LENGTH,
    b"transfer-encoding": TRANSFER_ENCODING,
    b"connection": CONNECTION,
    b"date": DATE,
    b"server": SERVER,
}
# RFC 9110 §5.6.2: token = 1*tchar
_TOKEN: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+").fullmatch
# Header names already validated, mapped to their kind. Names come from a
# small set in practice (apps reuse constants), so this turns validation into
# one dict lookup; the size cap keeps a hostile app from growing it.
_NAME_KINDS: Final[dict[bytes, int]] = {}
_NAME_CACHE_MAX: Final = 4096
# Content-Length values already parsed (the same few sizes recur: fixed
# pages, JSON of one shape); capped for the same reason.
_LENGTHS: Final[dict[bytes, int]] = {}
_LENGTH_CACHE_MAX: Final = 4096


def _name_kind(name: Any) -> int:
    if type(name) is not bytes:
        raise ASGIMessageError(f"response header name must be bytes, got {type(name).__name__}")
    if _TOKEN(name) is None:
        raise ASGIMessageError(f"invalid response header name {name!r}")
    kind = _SPECIAL_NAMES.get(name.lower(), PLAIN)
    if len(_NAME_KINDS) < _NAME_CACHE_MAX:
        _NAME_KINDS[name] = kind
    return kind


def _check_value(value: Any) -> None:
    if type(value) is not bytes:
        raise ASGIMessageError(f"response header value must be bytes, got {type(value).__name__}")
    # Ints, not b"\r": bytes.__contains__ with a one-byte bytes needle first
    # fails as an int inside CPython (~10x slower); same test, same strictness.
    if 13 in value or 10 in value or 0 in value:
        raise ASGIMessageError(f"response header value contains CR, LF or NUL: {value!r}")


def check_status(status: Any) -> int:
    """Return ``status`` if it is an int in 100..599, else raise ``ASGIMessageError``."""
    if type(status) is not int or not 100 <= status <= 599:
        raise ASGIMessageError(f"response status must be an int in 100..599, got {status!r}")
    return status


def encode_headers(headers: Iterable[Any]) -> tuple[list[bytes], int, bool, int]:
    """Validate and encode the application's response headers.

    Returns ``(parts, content_length, close, overrides)``: the encoded header
    lines as a list of byte pieces (join them), the declared Content-Length or
    -1, whether the app asked for ``Connection: close``, and a bit set of
    default headers the app supplied itself (``1 << DATE``, ``1 << SERVER``).
    ``Transfer-Encoding`` is dropped: the server owns framing (ASGI www spec,
    Response Start).
    """
    parts: list[bytes] = []
    content_length = -1
    close = False
    overrides = 0
    kinds = _NAME_KINDS
    try:
        for name, value in headers:
            kind = kinds.get(name)
            if kind is None:
                kind = _name_kind(name)
            # _check_value, inlined: this runs for every header of every response.
            if type(value) is not bytes or 13 in value or 10 in value or 0 in value:  # CR LF NUL
                _check_value(value)
            if kind:
                if kind == TRANSFER_ENCODING:
                    continue
                if kind == CONTENT_LENGTH:
                    length = _LENGTHS.get(value)
                    if length is None:
                        length = parse_content_length(value)
                        if len(_LENGTHS) < _LENGTH_CACHE_MAX:
                            _LENGTHS[value] = length
                    if content_length not in (-1, length):
                        raise ASGIMessageError("conflicting Content-Length response headers")
                    if content_length == length:
                        continue
                    content_length = length
                elif kind == CONNECTION:
                    close = close or b"close" in value.lower()
                else:
                    overrides |= 1 << kind
            parts += (name, _SEP, value, CRLF)
    except ASGIMessageError:
        raise
    except (TypeError, ValueError) as exc:
        raise ASGIMessageError(f"response headers must be [name, value] pairs: {exc}") from exc
    return parts, content_length, close, overrides


def parse_content_length(value: bytes) -> int:
    """Parse a Content-Length value strictly (RFC 9110 §8.6: 1*DIGIT)."""
    value = value.strip(b" \t")
    if not value.isdigit() or len(value) > 18:
        raise ASGIMessageError(f"invalid Content-Length response header {value!r}")
    return int(value)


def default_headers_without(default_headers: bytes, overrides: int) -> bytes:
    """Drop the defaults (Date, Server) that the application set itself."""
    drop = []
    if overrides & (1 << DATE):
        drop.append(b"date:")
    if overrides & (1 << SERVER):
        drop.append(b"server:")
    lines = default_headers.split(CRLF)
    kept = [line for line in lines if line and not line.lower().startswith(tuple(drop))]
    return b"".join(line + CRLF for line in kept)


# -- chunked transfer coding (RFC 9112 §7.1) ----------------------------------

LAST_CHUNK: Final = b"0\r\n\r\n"


def chunk_header(size: int) -> bytes:
    return b"%x\r\n" % size


def encode_trailers(headers: Iterable[Any]) -> bytes:
    """Encode trailer fields after the last chunk (RFC 9112 §7.1.2)."""
    parts, _, _, _ = encode_headers(headers)
    return b"0\r\n" + b"".join(parts) + CRLF


def encode_early_hint(links: Iterable[Any]) -> bytes:
    """A 103 Early Hints head with one Link field per entry (RFC 8297)."""
    parts = [STATUS_LINES[103]]
    try:
        for link in links:
            _check_value(link)
            parts += (b"link: ", link, CRLF)
    except TypeError as exc:
        raise ASGIMessageError("early_hint links must be an iterable of bytes") from exc
    parts.append(CRLF)
    return b"".join(parts)


# -- error replies ------------------------------------------------------------

_ERROR_BODIES: Final = {
    400: b"Bad Request",
    408: b"Request Timeout",
    413: b"Content Too Large",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    503: b"Service Unavailable",
    505: b"HTTP Version Not Supported",
}


def error_response(status: int, default_headers: bytes, *, close: bool = True) -> bytes:
    """A complete plain-text error response. No exception text ever goes here."""
    body = _ERROR_BODIES.get(status) or _reason(status) or b"Error"
    return b"".join(
        (
            STATUS_LINES[status],
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n" if close else b"",
            default_headers,
            CRLF,
            body,
        )
    )


CONTINUE_100: Final = b"HTTP/1.1 100 Continue\r\n\r\n"


# -- request-side strictness llhttp leaves to us --------------------------------


def check_transfer_encoding(value: bytes) -> None:
    """Accept exactly ``chunked`` (RFC 9112 §6.1, §7).

    llhttp already rejects ``chunked`` that is not last and repeated codings;
    what it lets through (``gzip, chunked``) names a coding we cannot decode,
    so RFC 9112 §6.1 says 501.
    """
    codings = [c.strip(b" \t").lower() for c in value.split(b",")]
    if codings == [b"chunked"]:
        return
    if codings and codings[-1] == b"chunked" and all(_TOKEN(c) for c in codings):
        raise NotImplementedByServer(f"unsupported transfer coding {value!r}")
    raise BadRequest(f"invalid Transfer-Encoding {value!r}")


# RFC 3986 §3.2.2: a reg-name's bytes are unreserved (ALPHA DIGIT - . _ ~) or
# sub-delims (! $ & ' ( ) * + , ; =), besides pct-encoded triplets. 1 = allowed.
_REG_NAME: Final = bytes(
    c in b"-._~!$&'()*+,;=0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    for c in range(256)
)
_HEX: Final = bytes(c in b"0123456789abcdefABCDEF" for c in range(256))


def check_host(value: bytes) -> None:
    """Accept a Host field value (or an authority) of the form ``uri-host [":" port]``.

    RFC 9110 §7.2 and RFC 3986 §3.2.2-3.2.3: ``uri-host`` is an IP-literal in
    brackets, an IPv4 address or a reg-name (which covers the IPv4 form), and
    ``port`` is ``*DIGIT``. Anything else is the "invalid field value" that
    RFC 9112 §3.2 answers with 400: a space, a second colon, and userinfo
    (``good.example@evil.example``; RFC 9110 §4.2.4 says to treat it as an
    error), which would let the app see one host while routing used another.
    Trailing whitespace is not part of the value (llhttp already dropped the
    leading one). An empty value is valid (RFC 9112 §3.2: a target without an
    authority). One pass over the bytes and no allocation on the reg-name path
    (llhttp's path runs it for every Host value other than the last valid one).

    Raises:
        BadRequest: the value is not ``uri-host [":" port]``.
    """
    end = len(value)
    while end and (value[end - 1] == 32 or value[end - 1] == 9):  # SP, HTAB
        end -= 1
    at = 0
    if end and value[0] == 91:  # "[": IP-literal
        close = value.find(b"]", 1, end)
        if close < 0 or not _is_ip_literal(value[1:close]):
            raise BadRequest("invalid IP literal in the host")
        at = close + 1
    else:
        while at < end:
            c = value[at]
            if _REG_NAME[c]:
                at += 1
            elif c == 37 and at + 2 < end and _HEX[value[at + 1]] and _HEX[value[at + 2]]:
                at += 3  # "%" HEXDIG HEXDIG
            else:
                break
    if at < end and value[at] == 58:  # ":" port
        at += 1
        while at < end and 48 <= value[at] <= 57:
            at += 1
    if at != end:
        raise BadRequest("host is not uri-host [:port]")


def _is_ip_literal(inner: bytes) -> bool:
    """What RFC 3986 §3.2.2 allows between "[" and "]": IPv6address or IPvFuture."""
    if inner[:1] in (b"v", b"V"):  # "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" )
        dot = inner.find(b".")
        rest = inner[dot + 1 :]
        return (
            dot > 1
            and all(_HEX[c] for c in inner[1:dot])
            and bool(rest)
            and all(_REG_NAME[c] or c == 58 for c in rest)
        )
    if 37 in inner:
        return False  # a zone ID ("%25eth0", RFC 6874) is not part of RFC 3986's IPv6address
    try:
        ipaddress.IPv6Address(inner.decode("ascii"))
    except ValueError:  # UnicodeDecodeError is one too
        return False
    return True


def protocol_error_status(exc: ProtocolError) -> int:
    status = exc.status
    return status if status in _ERROR_BODIES else 400
