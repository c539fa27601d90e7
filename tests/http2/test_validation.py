"""validation.py through the connection: malformed requests are stream errors (RFC 9113 §8.1.1).

Each malformed request must end in RST_STREAM PROTOCOL_ERROR with no
``RequestReceived`` (the app never sees it) and the connection going on.
These are request-smuggling defences: each field here would be read
differently by an HTTP/1.1 hop behind us. The h2spec ids in brackets check
the same rule.
"""

from __future__ import annotations

import pytest

from sluiceway.http2 import events as ev
from sluiceway.http2.connection import H2Config

from .h2_support import GET, PROTOCOL_ERROR, Client, assert_stream_error

Fields = list[tuple[bytes, bytes]]

M, S, A, P = (
    (b":method", b"GET"),
    (b":scheme", b"https"),
    (b":authority", b"a.example"),
    (b":path", b"/"),
)

MALFORMED: list[tuple[str, Fields]] = [
    # §8.2.1 field names: lowercase tokens [8.1.2/1]
    ("uppercase-name", [M, S, A, P, (b"X-Upper", b"1")]),
    ("space-in-name", [M, S, A, P, (b"x bad", b"1")]),
    ("colon-in-name", [M, S, A, P, (b"x:bad", b"1")]),
    ("empty-name-cve-2019-9516", [M, S, A, P, (b"", b"1")]),  # the 0-length headers leak
    ("nul-in-name", [M, S, A, P, (b"x\x00", b"1")]),
    # §8.2.1 field values
    ("cr-in-value", [M, S, A, P, (b"x-a", b"1\r2")]),
    ("lf-in-value", [M, S, A, P, (b"x-a", b"1\nx-smuggled: 2")]),
    ("nul-in-value", [M, S, A, P, (b"x-a", b"1\x002")]),
    ("leading-space-in-value", [M, S, A, P, (b"x-a", b" 1")]),
    ("trailing-tab-in-value", [M, S, A, P, (b"x-a", b"1\t")]),
    # §8.2.2 connection-specific fields [8.1.2.2/1, 8.1.2.2/2]
    ("connection", [M, S, A, P, (b"connection", b"keep-alive")]),
    ("keep-alive", [M, S, A, P, (b"keep-alive", b"timeout=5")]),
    ("proxy-connection", [M, S, A, P, (b"proxy-connection", b"close")]),
    ("transfer-encoding", [M, S, A, P, (b"transfer-encoding", b"chunked")]),
    ("upgrade", [M, S, A, P, (b"upgrade", b"websocket")]),
    ("te-gzip", [M, S, A, P, (b"te", b"gzip")]),
    # §8.3 pseudo-header fields [8.1.2.1/1-4, 8.1.2.3/1-7]
    ("unknown-pseudo", [M, S, A, P, (b":test", b"ok")]),
    ("response-pseudo", [M, S, A, P, (b":status", b"200")]),
    ("pseudo-after-regular", [(b"x-a", b"1"), M, S, A, P]),
    ("empty-path", [M, S, A, (b":path", b"")]),
    ("no-method", [S, A, P]),
    ("no-scheme", [M, A, P]),
    ("no-path", [M, S, A]),
    ("duplicate-method", [M, M, S, A, P]),
    ("duplicate-scheme", [M, S, S, A, P]),
    ("duplicate-path", [M, S, A, P, P]),
    ("duplicate-authority", [M, S, A, A, P]),
    ("absolute-form-path", [M, S, A, (b":path", b"http://evil.example/")]),
    ("space-in-path", [M, S, A, (b":path", b"/a HTTP/1.1")]),
    ("asterisk-path-not-options", [M, S, A, (b":path", b"*")]),
    ("method-not-a-token", [(b":method", b"GE T"), S, A, P]),
    ("empty-method", [(b":method", b""), S, A, P]),
    ("scheme-not-a-scheme", [M, (b":scheme", b"ht tp"), A, P]),
    ("userinfo-in-authority", [M, S, (b":authority", b"user@a.example"), P]),
    ("space-in-authority", [M, S, (b":authority", b"a.example x"), P]),
    ("host-differs-from-authority", [M, S, A, P, (b"host", b"b.example")]),
    # RFC 9113 §8.5 / RFC 8441 §4: CONNECT
    ("connect-with-path", [(b":method", b"CONNECT"), A, P]),
    ("connect-without-authority", [(b":method", b"CONNECT")]),
    ("protocol-without-connect", [M, S, A, P, (b":protocol", b"websocket")]),
    (
        "extended-connect-without-path",
        [(b":method", b"CONNECT"), (b":protocol", b"websocket"), S, A],
    ),
    # §8.1.1 content-length
    ("content-length-not-a-number", [M, S, A, P, (b"content-length", b"1e3")]),
    ("content-length-negative", [M, S, A, P, (b"content-length", b"-1")]),
    ("content-length-list", [M, S, A, P, (b"content-length", b"1, 1")]),
    ("content-lengths-differ", [M, S, A, P, (b"content-length", b"1"), (b"content-length", b"2")]),
]


@pytest.mark.parametrize("fields", [m[1] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_request_is_a_stream_error_the_app_never_sees(fields: Fields) -> None:
    client = Client()
    client.start()
    assert client.request(1, fields, end_stream=False) == []
    assert_stream_error(client, 1, PROTOCOL_ERROR)
    assert client.server.open_stream_count == 0
    assert client.request(3) == [ev.RequestReceived(3, GET, True)]  # the connection goes on


VALID: list[tuple[str, Fields]] = [
    ("get", [M, S, A, P]),
    ("no-authority", [M, S, P]),
    ("query", [M, S, A, (b":path", b"/a?b=c&d")]),
    ("options-asterisk", [(b":method", b"OPTIONS"), S, A, (b":path", b"*")]),
    ("te-trailers", [M, S, A, P, (b"te", b"trailers")]),
    ("host-equal-to-authority", [M, S, A, P, (b"host", b"A.example")]),
    ("empty-value", [M, S, A, P, (b"x-empty", b"")]),
    ("inner-space-in-value", [M, S, A, P, (b"user-agent", b"a b c")]),
    ("obs-text-in-value", [M, S, A, P, (b"x-latin", b"caf\xe9")]),
    ("repeated-cookies", [M, S, A, P, (b"cookie", b"a=1"), (b"cookie", b"b=2")]),
    (
        "equal-content-lengths",
        [(b":method", b"POST"), S, A, P, (b"content-length", b"0"), (b"content-length", b"0")],
    ),
    ("connect", [(b":method", b"CONNECT"), (b":authority", b"a.example:443")]),
    (
        "extended-connect",
        [(b":method", b"CONNECT"), (b":protocol", b"websocket"), S, A, (b":path", b"/chat")],
    ),
    ("other-scheme-path", [M, (b":scheme", b"foo+bar"), A, (b":path", b"opaque")]),
]


@pytest.mark.parametrize("fields", [v[1] for v in VALID], ids=[v[0] for v in VALID])
def test_valid_request_reaches_the_app_as_sent(fields: Fields) -> None:
    client = Client()
    client.start()
    assert client.request(1, fields) == [ev.RequestReceived(1, fields, True)]
    assert client.resets() == {}


def test_extended_connect_is_refused_when_not_enabled() -> None:
    client = Client(H2Config(enable_connect_protocol=False))
    client.start()
    fields = [(b":method", b"CONNECT"), (b":protocol", b"websocket"), S, A, (b":path", b"/chat")]
    assert client.request(1, fields, end_stream=False) == []
    assert_stream_error(client, 1, PROTOCOL_ERROR)


@pytest.mark.parametrize(
    "trailers",
    [
        [(b"X-Upper", b"1")],
        [(b"x-a", b"1\r\n")],
        [(b"transfer-encoding", b"chunked")],
        [(b":path", b"/")],
    ],
    ids=["uppercase", "crlf", "connection-specific", "pseudo"],
)
def test_malformed_trailers_are_a_stream_error(trailers: Fields) -> None:
    client = Client()
    client.start()
    client.request(1, [(b":method", b"POST"), S, A, P], end_stream=False)
    assert client.send(client.headers(1, trailers)) == [ev.StreamReset(1, PROTOCOL_ERROR)]
    assert_stream_error(client, 1, PROTOCOL_ERROR)


def test_fields_found_valid_are_remembered_within_bounds() -> None:
    from sluiceway.http2.frames import H2StreamError
    from sluiceway.http2.validation import CHECKED_FIELDS_MAX, check_request

    checked: set[tuple[bytes, bytes]] = set()
    long_value = (b"cookie", b"c" * 1000)
    for n in range(3 * CHECKED_FIELDS_MAX):
        fields = [M, S, A, (b":path", b"/%d" % n), (b"x-n", b"%d" % n), long_value]
        assert check_request(1, fields, True, checked) == -1
        assert len(checked) <= CHECKED_FIELDS_MAX
    assert long_value not in checked
    assert not any(name == b":path" for name, _ in checked)
    # A remembered field is not checked again, but the rules that depend on
    # the whole list still are.
    with pytest.raises(H2StreamError, match="duplicate"):
        check_request(1, [M, M, S, A, P], True, checked)
