"""The checks of a received request's fields (RFC 9113 §8.1-§8.3, RFC 8441 §4).

A request that fails any of them is malformed: a stream error of type
PROTOCOL_ERROR (RFC 9113 §8.1.1), never a connection error, and the app
never sees it. They are smuggling defences: a field an HTTP/1.1 hop would
read differently (CR/LF/NUL, ``transfer-encoding``, a second pseudo-header,
a ``:path`` with spaces, a ``host`` that contradicts ``:authority``) stops here.

One pass over the list, with byte-level tests (``bytes.translate`` deletes
the allowed bytes; anything left is a bad byte) rather than a regex per field:
this runs once per request on the hot path, and a connection skips the
fields it already found valid (most repeat on every request).

Imports the standard library and the sibling ``frames`` (for the error).
"""

from __future__ import annotations

from typing import Final

from sluiceway.http2.frames import ErrorCode, H2StreamError

__all__ = ["CHECKED_FIELDS_MAX", "check_request", "check_trailers"]

# RFC 9110 §5.6.2 tchar, lowercase only: RFC 9113 §8.2.1 forbids uppercase names.
_NAME_CHARS: Final = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
# RFC 9110 §9.1: a method is a token, case-sensitive.
_METHOD_CHARS: Final = _NAME_CHARS + b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# RFC 3986 §3.1: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ).
_SCHEME_CHARS: Final = b"+-.0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
# :path and :authority: visible ASCII and obs-text; no space, control or DEL,
# which an HTTP/1.1 hop would split a request line on.
_TARGET_CHARS: Final = bytes(range(0x21, 0x7F)) + bytes(range(0x80, 0x100))
_DIGITS: Final = b"0123456789"

# RFC 9113 §8.2.2: connection-specific fields make a message malformed.
_CONNECTION_SPECIFIC: Final = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade")
)

# Request pseudo-header fields (RFC 9113 §8.3.1, RFC 8441 §4) as bits, to
# catch duplicates and check the required set with one integer.
_METHOD: Final = 1
_SCHEME: Final = 2
_AUTHORITY: Final = 4
_PATH: Final = 8
_PROTOCOL: Final = 16
_PSEUDO: Final = {
    b":method": _METHOD,
    b":scheme": _SCHEME,
    b":authority": _AUTHORITY,
    b":path": _PATH,
    b":protocol": _PROTOCOL,
}
_REQUIRED: Final = _METHOD | _SCHEME | _PATH

# The valid fields a connection remembers (see check_request): at most this
# many, none longer than _CHECKED_VALUE_MAX, so the memory stays small (the
# tuples are mostly the HPACK table's own).
CHECKED_FIELDS_MAX: Final = 64
_CHECKED_VALUE_MAX: Final = 256


def _malformed(stream_id: int, reason: str) -> H2StreamError:
    return H2StreamError(stream_id, ErrorCode.PROTOCOL_ERROR, reason)


def _check_regular(stream_id: int, name: bytes, value: bytes) -> None:
    """RFC 9113 §8.2.1 and §8.2.2 for one regular field."""
    if not name or name.translate(None, _NAME_CHARS):
        raise _malformed(stream_id, "invalid field name")
    if 13 in value or 10 in value or 0 in value:
        raise _malformed(stream_id, "CR, LF or NUL in a field value")
    if value and (value[0] in (32, 9) or value[-1] in (32, 9)):
        raise _malformed(stream_id, "whitespace around a field value")
    if name in _CONNECTION_SPECIFIC:
        raise _malformed(stream_id, "connection-specific field")
    if name == b"te" and value != b"trailers":
        raise _malformed(stream_id, 'te other than "trailers"')


def _check_pseudo(stream_id: int, bit: int, value: bytes) -> None:
    """The value of one request pseudo-header field (RFC 9113 §8.3.1, RFC 8441 §4)."""
    if bit == _METHOD:
        if not value or value.translate(None, _METHOD_CHARS):
            raise _malformed(stream_id, "invalid :method")
    elif bit == _PATH:
        if not value or value.translate(None, _TARGET_CHARS):
            raise _malformed(stream_id, "empty or invalid :path")
    elif bit == _SCHEME:
        if not value or value.translate(None, _SCHEME_CHARS):
            raise _malformed(stream_id, "invalid :scheme")
    elif bit == _AUTHORITY:
        # No userinfo in an http(s) authority; nothing a Host line would split on.
        if value.translate(None, _TARGET_CHARS) or 64 in value:
            raise _malformed(stream_id, "invalid :authority")
    elif not value or value.translate(None, _NAME_CHARS):
        raise _malformed(stream_id, "invalid :protocol")


def check_request(
    stream_id: int,
    fields: list[tuple[bytes, bytes]],
    allow_protocol: bool,
    checked: set[tuple[bytes, bytes]],
) -> int:
    """Check a request's field section (RFC 9113 §8.2, §8.3; RFC 8441 §4).

    Args:
        stream_id: the stream, for the error.
        fields: the decoded field list, in wire order.
        allow_protocol: whether ``:protocol`` (extended CONNECT) is allowed,
            i.e. we sent SETTINGS_ENABLE_CONNECT_PROTOCOL = 1.
        checked: the connection's fields already found valid, which are not
            checked again (a client repeats most fields on every request; the
            HPACK decoder even hands back the same tuples). Short values only,
            up to ``CHECKED_FIELDS_MAX`` entries, then it starts over; per
            connection, so one client's fields never speed up another's checks.

    Returns:
        The content-length, or -1 without the field.

    Raises:
        H2StreamError: PROTOCOL_ERROR, the request is malformed.
    """
    seen = 0
    regular = False
    method = b""
    scheme = b""
    path = b""
    authority: bytes | None = None
    host: bytes | None = None
    content_length = -1
    for field in fields:
        name, value = field
        if name[:1] == b":":
            # §8.3: pseudo-header fields first, each once, only the defined ones.
            if regular:
                raise _malformed(stream_id, "pseudo-header field after a regular field")
            bit = _PSEUDO.get(name, 0)
            if not bit or (bit == _PROTOCOL and not allow_protocol):
                raise _malformed(stream_id, "unknown pseudo-header field")
            if seen & bit:
                raise _malformed(stream_id, "duplicate pseudo-header field")
            seen |= bit
            if field not in checked:
                _check_pseudo(stream_id, bit, value)
                if bit != _PATH:  # a new :path per request would only churn the cache
                    _remember(checked, field)
            if bit == _METHOD:
                method = value
            elif bit == _PATH:
                path = value
            elif bit == _SCHEME:
                scheme = value
            elif bit == _AUTHORITY:
                authority = value
            continue
        regular = True
        if field not in checked:
            _check_regular(stream_id, name, value)
            _remember(checked, field)
        if name == b"content-length":
            if not value or value.translate(None, _DIGITS) or len(value) > 18:
                raise _malformed(stream_id, "invalid content-length")
            length = int(value)
            if content_length >= 0 and length != content_length:
                raise _malformed(stream_id, "conflicting content-length fields")
            content_length = length
        elif name == b"host":
            host = value
    if method == b"CONNECT":
        if seen & _PROTOCOL:
            # RFC 8441 §4: extended CONNECT carries all of them.
            if seen & _REQUIRED != _REQUIRED or authority is None:
                raise _malformed(stream_id, "extended CONNECT without :scheme, :path or :authority")
        elif seen & (_SCHEME | _PATH) or authority is None:
            # RFC 9113 §8.5: CONNECT has :method and :authority only.
            raise _malformed(stream_id, "CONNECT with :scheme or :path, or without :authority")
    elif seen & _REQUIRED != _REQUIRED:
        raise _malformed(stream_id, "missing :method, :scheme or :path")
    elif seen & _PROTOCOL:
        raise _malformed(stream_id, ":protocol outside CONNECT")
    elif (
        (scheme == b"http" or scheme == b"https")
        and path[0] != 47
        and (path != b"*" or method != b"OPTIONS")
    ):
        # §8.3.1: an origin-form path, or "*" for OPTIONS.
        raise _malformed(stream_id, ":path is neither origin-form nor OPTIONS *")
    if host is not None and authority is not None and host.lower() != authority.lower():
        # §8.3.1: a Host that names another entity than :authority.
        raise _malformed(stream_id, "host differs from :authority")
    return content_length


def _remember(checked: set[tuple[bytes, bytes]], field: tuple[bytes, bytes]) -> None:
    if len(field[1]) > _CHECKED_VALUE_MAX:
        return
    if len(checked) >= CHECKED_FIELDS_MAX:
        checked.clear()
    checked.add(field)


def check_trailers(stream_id: int, fields: list[tuple[bytes, bytes]]) -> None:
    """Check a trailer section: regular fields only (RFC 9113 §8.1, §8.2).

    Raises:
        H2StreamError: PROTOCOL_ERROR, the trailers are malformed.
    """
    for name, value in fields:
        if name[:1] == b":":
            raise _malformed(stream_id, "pseudo-header field in trailers")
        _check_regular(stream_id, name, value)
