"""The C head reader (``sluiceway.http1._head``) against llhttp, the parser it stands in for.

Its one safety property: whatever head it takes, llhttp takes too, with the
same method, target, version, fields, keep-alive and end, and no body. Then a
request cannot mean one thing on the fast path and another on the fallback
(the shape of every smuggling bug). The generated heads below mix valid parts
with the bytes parsers disagree about (CR, LF, NUL, DEL, obs-text, spaces and
tabs in odd places, '#', folded lines, framing fields), and a good share of
them must be taken, so the comparison is not vacuous.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import httptools
import pytest

from sluiceway.config import Config
from sluiceway.connection.state import ServerState
from sluiceway.http1 import wire
from sluiceway.server.listener import make_protocol_factory
from tests.http1.apps import read_body
from tests.http1.test_write_batching import RecordingTransport

head = pytest.importorskip("sluiceway.http1._head")
parse_head = head.parse_head

MAX_LINE = 8190
MAX_HEAD = 65536


class _Recorder:
    def __init__(self, parser_box: list[Any]) -> None:
        self.box = parser_box
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.keep_alive: bool | None = None
        self.version: str | None = None
        self.method: str | None = None
        self.complete = 0
        self.body = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        parser = self.box[0]
        self.keep_alive = parser.should_keep_alive()
        self.version = parser.get_http_version()
        self.method = parser.get_method().decode("ascii")

    def on_body(self, body: bytes) -> None:
        self.body = True

    def on_message_complete(self) -> None:
        self.complete += 1


def llhttp(data: bytes) -> _Recorder | None:
    """What llhttp makes of ``data`` as one whole request, or None if it refuses it."""
    box: list[Any] = []
    recorder = _Recorder(box)
    parser = httptools.HttpRequestParser(recorder)
    box.append(parser)
    try:
        parser.feed_data(data)
    except httptools.HttpParserError:
        return None
    return recorder


def assert_llhttp_agrees(data: bytes) -> bool:
    """True if the reader took ``data``; then llhttp must read it the same way."""
    taken = parse_head(data, 0, MAX_LINE, MAX_HEAD)
    if taken is None:
        return False
    method, target, version, headers, keep_alive, end = taken
    seen = llhttp(data[:end])
    assert seen is not None, f"llhttp refuses a head the reader took: {data!r}"
    assert seen.complete == 1 and not seen.body, data
    assert (seen.method, seen.url, seen.version) == (method, target, version), data
    assert seen.headers == headers, data
    assert seen.keep_alive == keep_alive, data
    hosts = [value for name, value in headers if name == b"host"]
    assert len(hosts) == 1 if version == "1.1" else len(hosts) <= 1, data
    for host in hosts:
        wire.check_host(host)  # the protocol's own check would take it too (issue 16)
    return True


# -- heads made of the pieces parsers disagree about ------------------------------------

_METHODS = [b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS"] * 3 + [
    b"CONNECT", b"PROPFIND", b"get", b"GE T", b"GETS", b""]  # fmt: skip
_ODD = [b"\r", b"\n", b"\x00", b"\x7f", b"\x80", b"\xff", b" ", b"\t", b"#", b"?", b":", b"\x0b"]
_VISIBLE = [bytes([c]) for c in range(0x21, 0x7F) if c != 0x23]  # '#' is in _ODD
_VERSIONS = [b"HTTP/1.1"] * 20 + [b"HTTP/1.0"] * 8 + [b"HTTP/2.0", b"HTTP/1.2", b"http/1.1",
                                                     b"HTTP/1.1 ", b"HTTP/01.1"]  # fmt: skip
_PLAIN_NAMES = [b"Accept", b"X-Thing", b"User-Agent", b"Cookie", b"X_Under", b"a!#$%&'*+-.^_`|~z",
                b"Connection"]  # fmt: skip
_ODD_NAMES = [b"Host", b"host", b"HOST", b"Content-Length", b"Transfer-Encoding", b"Expect",
              b"TE", b"Upgrade", b"Proxy-Connection", b"Host ", b" Host", b"Ho\tst", b"X(y)",
              b""]  # fmt: skip
# Mostly hosts the reader takes; then ones it must leave to llhttp's path (where
# check_host takes the IP literal, the escape and the trailing space, and refuses the rest).
_HOSTS = [b"a", b"example.com", b"a:80", b"127.0.0.1:8000", b"x-y~!$&'()*+,;=", b"a:", b""] * 10 + [
    b"[::1]:80", b"a b", b"a@b", b"a%41", b"a:b", b"a/b", b"a ", b"a:8a", b"a?", b'"a"',
]  # fmt: skip
_CONNECTION_VALUES = [b"close", b"Close", b"keep-alive", b"Keep-Alive", b"upgrade",
                      b"close, keep-alive", b"close ", b" close", b"te", b""]  # fmt: skip
_ODD_ENDINGS = [b"\n", b"\r", b"\r\r\n", b"\n\r", b""]


def _ending(rng: random.Random) -> bytes:
    return rng.choice(_ODD_ENDINGS) if rng.random() < 0.03 else b"\r\n"


def _text(rng: random.Random, size: int, odd: float) -> bytes:
    return b"".join(rng.choice(_ODD if rng.random() < odd else _VISIBLE) for _ in range(size))


def _random_head(rng: random.Random) -> bytes:
    odd = rng.choice((0.0, 0.0, 0.0, 0.01, 0.1))
    target = b"/" + _text(rng, rng.randrange(0, 30), odd)
    if rng.random() < 0.05:
        target = b"http://a" + target
    line = rng.choice(_METHODS) + b" " + target + b" " + rng.choice(_VERSIONS)
    parts = [(b"\r\n" if rng.random() < 0.03 else b"") + line + _ending(rng)]
    names = [b"Host"] + [
        rng.choice(_ODD_NAMES if rng.random() < 0.05 else _PLAIN_NAMES)
        for _ in range(rng.randrange(0, 6))
    ]
    rng.shuffle(names)
    if rng.random() < 0.1:
        names.remove(b"Host")
    for name in names:
        if name.lower().strip() == b"connection":
            value = rng.choice(_CONNECTION_VALUES)
        elif name.lower().strip() == b"content-length":
            value = rng.choice([b"0", b"5", b"x"])
        elif name.lower().strip() == b"host" and rng.random() < 0.95:
            value = rng.choice(_HOSTS)
        else:
            value = _text(rng, rng.randrange(0, 20), odd)
        colon = rng.choice([b":", b": ", b":\t", b": ", b":  "] * 5 + [b" :", b"\t:", b""])
        parts.append(name + colon + value + _ending(rng))
        if rng.random() < 0.03:
            parts.append(b" folded" + b"\r\n")  # obs-fold: a continuation line
    parts.append(_ending(rng))
    data = b"".join(parts)
    if rng.random() < 0.1:
        data = data[: rng.randrange(len(data))]  # cut short: never a whole head
    if rng.random() < 0.2:
        at = rng.randrange(len(data) + 1)
        data = data[:at] + rng.choice(_ODD) + data[at + 1 :]
    return data


def test_llhttp_reads_every_generated_head_the_reader_takes() -> None:
    rng = random.Random(20261202)
    taken = 0
    total = 20_000
    for _ in range(total):
        if assert_llhttp_agrees(_random_head(rng)):
            taken += 1
    # Both sides of the comparison are exercised.
    assert total * 0.1 < taken < total * 0.9, taken


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            b"GET /json?name=x&page=2 HTTP/1.1\r\nHost: a:80\r\nUser-Agent: wrk\r\n\r\n",
            (
                "GET",
                b"/json?name=x&page=2",
                "1.1",
                [(b"host", b"a:80"), (b"user-agent", b"wrk")],
                True,
            ),
        ),
        (
            b"HEAD / HTTP/1.1\r\nhost: a\r\nConnection: CLOSE\r\n\r\n",
            ("HEAD", b"/", "1.1", [(b"host", b"a"), (b"connection", b"CLOSE")], False),
        ),
        (b"GET / HTTP/1.0\r\n\r\n", ("GET", b"/", "1.0", [], False)),
        (
            b"OPTIONS /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            ("OPTIONS", b"/x", "1.0", [(b"connection", b"keep-alive")], True),
        ),
        # As llhttp gives it: leading whitespace dropped, trailing kept, empty allowed.
        (
            b"GET /p?q=/a?b HTTP/1.1\r\nHost:a\r\nX-E:\r\nX-W: \t v w \t\r\n\r\n",
            (
                "GET",
                b"/p?q=/a?b",
                "1.1",
                [(b"host", b"a"), (b"x-e", b""), (b"x-w", b"v w \t")],
                True,
            ),
        ),
    ],
)
def test_heads_it_takes(data: bytes, expected: tuple[Any, ...]) -> None:
    taken = parse_head(data + b"GET / HTTP/1.1\r\n", 0, MAX_LINE, MAX_HEAD)
    assert taken is not None
    assert taken[:5] == expected
    assert taken[5] == len(data)  # the next request's bytes are left alone
    assert assert_llhttp_agrees(data)


@pytest.mark.parametrize(
    "data",
    [
        # Framing and the connection's fate: llhttp's path decides.
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nProxy-Connection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close, te\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nConnection: close\r\n\r\n",
        # Malformed heads: llhttp's path answers them.
        b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        b"GET / HTTP/1.1\nHost: a\n\n",
        b"GET / HTTP/1.1\r\nHost: a\rX: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: caf\xc3\xa9\r\n\r\n",
        # Hosts that are not plain (issue 16): llhttp's path checks them in full.
        b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a@evil\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: good.example@evil.example\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a:b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a:80 \r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a%41\r\n\r\n",
        b"GET / HTTP/1.0\r\nHost: a/b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
        b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
        b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n",
        b"get / HTTP/1.1\r\nHost: a\r\n\r\n",
        # Incomplete: llhttp buffers it across reads.
        b"GET / HTTP/1.1\r\nHost: a\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n\r",
        b"GET / HTT",
    ],
)
def test_heads_it_leaves_to_llhttp(data: bytes) -> None:
    assert parse_head(data, 0, MAX_LINE, MAX_HEAD) is None


def test_limits_are_the_protocols() -> None:
    target = b"/" + b"a" * 99
    line = b"GET " + target + b" HTTP/1.1\r\nHost: h\r\n\r\n"
    assert parse_head(line, 0, 100, MAX_HEAD) is not None
    assert parse_head(line, 0, 99, MAX_HEAD) is None  # llhttp's path answers 414
    fields = b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"v" * 10 + b"\r\n\r\n"
    size = (4 + 1 + 4) + (1 + 10 + 4)  # name + value + 4 per field, as on_header counts
    assert parse_head(fields, 0, MAX_LINE, size) is not None
    assert parse_head(fields, 0, MAX_LINE, size - 1) is None  # 431 from llhttp's path


def test_reads_from_an_offset_and_leaves_what_follows() -> None:
    first = b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
    second = b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n"
    data = first + second + b"POST /3 HTTP/1.1\r\n"
    one = parse_head(data, 0, MAX_LINE, MAX_HEAD)
    assert one is not None and one[1] == b"/1" and one[5] == len(first)
    two = parse_head(data, one[5], MAX_LINE, MAX_HEAD)
    assert two is not None and two[1] == b"/2" and two[5] == len(first + second)
    assert parse_head(data, two[5], MAX_LINE, MAX_HEAD) is None
    assert parse_head(data, len(data), MAX_LINE, MAX_HEAD) is None
    assert parse_head(bytearray(first), 0, MAX_LINE, MAX_HEAD) is None  # bytes only


# -- the protocol answers the same with the reader and without it --------------------------


async def _echo(scope: Any, receive: Any, send: Any) -> None:
    body = await read_body(receive)
    seen = [scope[key] for key in ("method", "http_version", "path", "raw_path", "query_string")]
    text = repr((seen, scope["headers"], body)).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": text})


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


async def _answer(
    stream: bytes | list[bytes], reader: bool, pieces: int = 1
) -> tuple[bytes, bool, list[str]]:
    """What one connection writes for ``stream`` (a list of reads, or bytes cut into
    ``pieces`` reads), if it closed, and what it logged."""
    logger = logging.getLogger("sluiceway.error")
    level = logger.level
    lines = _Lines()
    logger.addHandler(lines)
    logger.setLevel(logging.INFO)
    try:
        wire, closed = await _connection(stream, reader, pieces)
    finally:
        logger.removeHandler(lines)
        logger.setLevel(level)
    return wire, closed, lines.lines


async def _connection(stream: bytes | list[bytes], reader: bool, pieces: int) -> tuple[bytes, bool]:
    config = Config(access_log=False, date_header=False)
    protocol: Any = make_protocol_factory(config, _echo, ServerState(config))()
    if not reader:
        protocol._parse_head = None  # as when the C extension did not build
    transport = RecordingTransport()
    protocol.connection_made(transport)
    if isinstance(stream, bytes):
        step = max(1, -(-len(stream) // pieces))
        stream = [stream[at : at + step] for at in range(0, len(stream), step)]
    for data in stream:
        protocol.data_received(data)
        await asyncio.sleep(0)
    quiet = 0
    while quiet < 5:  # until a few loop passes go by with nothing more written
        written = len(transport.calls)
        await asyncio.sleep(0)
        quiet = quiet + 1 if len(transport.calls) == written else 0
    protocol.connection_lost(None)
    return transport.wire(), transport.closing


_STREAMS = [
    GET_A := b"GET /a?x=1 HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n",
    GET_A * 3,
    GET_A + b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc" + GET_A,
    GET_A + b"GET /c HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n" + GET_A,
    b"GET /10 HTTP/1.0\r\n\r\n" + GET_A,
    b"GET /10 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" + GET_A,
    GET_A + b"GET /bad HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n" + GET_A,
    GET_A + b"GET /two-hosts HTTP/1.1\r\nHost: h\r\nHost: i\r\n\r\n",
    b"HEAD /h HTTP/1.1\r\nHost: h\r\nX-W: v \t\r\n\r\n" + GET_A,
    b"GET /caf%C3%A9/%2F?q=%20 HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"v" * 70000 + b"\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n" + GET_A,
    GET_A + b"GET /bad-host HTTP/1.1\r\nHost: a@evil\r\n\r\n" + GET_A,
    b"GET /v6 HTTP/1.1\r\nHost: [::1]:80\r\n\r\n" + GET_A,
]


@pytest.mark.parametrize("pieces", [1, 3])
@pytest.mark.parametrize("stream", _STREAMS)
async def test_the_protocol_answers_the_same_without_the_reader(stream: bytes, pieces: int) -> None:
    with_reader = await _answer(stream, True, pieces)
    assert with_reader == await _answer(stream, False, pieces)
    assert with_reader[0].startswith(b"HTTP/1.1 ")


_POST = b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
_CHUNKED = b"POST /p HTTP/1.1\r\nHost: h\r\nTE: trailers\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(
    "reads",
    [
        # What llhttp's request set (framing, expectations) must not leak into the next one.
        [_POST, GET_A],
        [_CHUNKED + b"3\r\nabc\r\n0\r\n\r\n", GET_A],
        [b"GET /e HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n", GET_A],
        [_POST.replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n"), GET_A],
        [GET_A, _POST, GET_A + GET_A],
        # A head cut across reads goes to llhttp, whole ones after it to the reader.
        [GET_A[:10], GET_A[10:] + GET_A],
        [b"GET /c HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", GET_A],
    ],
)
async def test_requests_across_reads_are_answered_the_same_without_the_reader(
    reads: list[bytes],
) -> None:
    with_reader = await _answer(reads, True)
    assert with_reader == await _answer(reads, False)
    assert with_reader[0].startswith(b"HTTP/1.1 ")


async def test_generated_request_streams_are_answered_the_same_without_the_reader() -> None:
    rng = random.Random(8)
    for _ in range(150):
        stream = b"".join(_random_head(rng) for _ in range(rng.randrange(1, 4)))
        assert await _answer(stream, True) == await _answer(stream, False), stream


@pytest.mark.parametrize("stream", [_STREAMS[2], _STREAMS[3]], ids=["post-between", "close"])
async def test_every_cut_into_two_reads_is_answered_the_same_without_the_reader(
    stream: bytes,
) -> None:
    for cut in range(1, len(stream)):
        reads = [stream[:cut], stream[cut:]]
        assert await _answer(reads, True) == await _answer(reads, False), cut
