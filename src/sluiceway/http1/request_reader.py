"""HOT PATH: the bytes that come in on an HTTP/1.1 connection, up to a started request.

Delegated to from ``http1/protocol.py`` on every request, in the order the
bytes go:

* ``read_common_heads``: whole common bodyless requests at the start of a
  read, each read in one call to ``http1/_head.c`` (``PARSE_HEAD``) and then
  taken the way llhttp's callbacks would take it, without their calls;
* ``feed``: everything else goes to llhttp. Its errors, and a
  ``ProtocolError`` raised in a callback, become ``error_replies``'
  answers; an Upgrade head goes to ``switching.on_upgrade``;
* the llhttp callbacks in firing order (``on_message_begin``, ``on_url``,
  ``on_header``, ``on_headers_complete``, ``on_body``,
  ``on_message_complete``; the protocol's methods of those names call
  these), with ``_head_complete``: the scope, the ``H1Cycle``, and its
  start (``HTTP1Protocol._start``) or place in the pipeline.

Invariants:

* Callbacks fill the scope directly; there are no intermediate event objects.
* The request head is capped in bytes (414/431), counting only that head's
  bytes, never the requests and bodies before it in the same read; a
  chunked body's framing is capped per body byte (llhttp skips chunk
  extensions without counting them).
* ``Host`` and an absolute-form target's authority are ``uri-host [":" port]``
  (``wire.check_host``, 400 otherwise), on both head paths: http1/_head.c
  takes only plain hosts and leaves the rest to llhttp's path, which checks.
* A request body must keep making progress (``_BODY_PROGRESS_BYTES`` per
  body timeout) or the protocol's ``deadline`` cuts it off (408).

Functions take the ``HTTP1Protocol`` and work on its state, as its methods
did (mypyc compiles the calls between these modules natively).

Imports ``sluiceway.asgi``, ``sluiceway.errors``, ``httptools`` and its
``http1`` siblings; ``http1/protocol.py`` for types only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import httptools

from sluiceway.asgi.scope import http_scope, split_target, target_authority, with_host
from sluiceway.errors import (
    BadRequest,
    BodyTooLarge,
    ConnectionClosing,
    HeadersTooLarge,
    NotImplementedByServer,
    ProtocolError,
    URITooLong,
    VersionNotSupported,
)
from sluiceway.http1 import error_replies, switching, wire
from sluiceway.http1.cycle import H1Cycle, Phase

if TYPE_CHECKING:
    from sluiceway.http1.protocol import HTTP1Protocol

_IDLE: Final = Phase.IDLE
_HEAD: Final = Phase.HEAD
_BODY: Final = Phase.BODY
_CLOSED: Final = Phase.CLOSED

# Header names the protocol looks at while they stream past (RFC 9112 §6-7, §9.3).
_WATCHED: Final = frozenset(
    (
        b"host",
        b"content-length",
        b"transfer-encoding",
        b"expect",
        b"te",
        b"upgrade",
        b"connection",
    )
)
_HTTP11: Final = "1.1"


# What the C head reader returns: method, target, version, headers, keep-alive, end offset.
Head = tuple[str, bytes, str, list[tuple[bytes, bytes]], bool, int]
HeadReader = Callable[[bytes, int, int, int], Head | None]


def _load_head_reader() -> HeadReader | None:
    try:
        from sluiceway.http1._head import parse_head
    except ImportError:  # built without a C compiler: llhttp reads every head
        return None
    return parse_head


# http1/_head.c reads the common bodyless request head in one call, where
# httptools makes one Python call per part of it; what it declines goes to llhttp.
PARSE_HEAD: Final = _load_head_reader()
_METHODS: Final = {
    m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")
}
# Chunked request framing (size lines, chunk extensions, CRLFs, the trailer
# section) is bounded, since llhttp skips extensions without counting them
# (Node CVE-2024-22019). Allowed beyond the body: ``Shared.max_framing`` (a
# fixed 4 KiB plus the head budget, connection/shared.py), plus this much per
# body byte: every chunk but the last carries at least one, and a 1-byte chunk
# costs 5 bytes of framing ("1\r\n", "\r\n"), 12 with an 8-digit zero-padded size.
_CHUNK_FRAMING_PER_BODY_BYTE: Final = 16
# A request body makes progress when this many more of its bytes have come
# since the body deadline last moved; only then does it move again. So a
# body must keep above 1 KiB per --timeout-request-body (about 34 B/s at the
# default 30 s), and one that drips a byte every few seconds is cut off
# (issue 16). nginx's client_body_timeout moves on any byte and never cuts a
# drip; Apache's mod_reqtimeout asks for 500 B/s by default.
_BODY_PROGRESS_BYTES: Final = 1024


def read_common_heads(conn: HTTP1Protocol, parse_head: HeadReader, data: bytes) -> bytes:
    """Serve the requests at the start of ``data`` that http1/_head.c reads; return the rest.

    Each is a whole bodyless request, so it goes the way llhttp's
    callbacks would take it (begin, head complete, message complete)
    without their calls. The first head the reader declines, and all
    after it, go to llhttp; what follows a request that asked to close
    is returned for data_received to refuse.
    """
    offset = 0
    size = len(data)
    while True:
        head = parse_head(data, offset, conn._max_line, conn._max_head)
        if head is None:
            return data[offset:] if offset else data
        method, conn._url, version, conn._headers, keep_alive, offset = head
        _begin_message(conn)
        try:
            _head_complete(conn, method, version, keep_alive)
            on_message_complete(conn)
        except ProtocolError as exc:
            error_replies.reject(conn, exc)
            return b""
        except Exception as exc:
            error_replies.internal_error(conn, exc)
            return b""
        if offset == size or conn._phase is not _IDLE:
            return b""  # all read, or an app that ran closed the connection
        if conn._peer_closing:
            return data[offset:]


def feed(conn: HTTP1Protocol, data: bytes, phase: Phase) -> None:
    """Feed ``data`` to llhttp (its callbacks are below); ``phase``: the connection's before it.

    llhttp's errors and a ``ProtocolError`` raised in a callback become
    ``error_replies``' answers; an Upgrade head goes to
    ``switching.on_upgrade``. Then what llhttp buffers unseen is bounded:
    a head arriving in pieces, the framing of a chunked body.
    """
    try:
        conn._parser.feed_data(data)
    except httptools.HttpParserUpgrade as exc:
        switching.on_upgrade(conn, data, int(exc.args[0]))
        return
    except httptools.HttpParserCallbackError as exc:
        cause = exc.__context__
        if isinstance(cause, ProtocolError):
            error_replies.reject(conn, cause)
            return
        if isinstance(cause, ConnectionClosing):
            return
        if isinstance(cause, (KeyboardInterrupt, SystemExit)):
            raise cause from None  # from an app's first step (eager start): not ours to swallow
        error_replies.internal_error(conn, cause or exc)
        return
    except httptools.HttpParserInvalidMethodError:
        error_replies.reject(conn, BadRequest("invalid method"))
        return
    except httptools.HttpParserError as exc:
        error_replies.reject(conn, BadRequest(str(exc)))
        return
    after = conn._phase
    if after is _HEAD:
        # A head arriving in pieces: llhttp buffers partial names/values
        # itself, so bound the bytes fed to it since the head began. Only
        # that head's: when it began inside this read (on_message_begin
        # set -1), what came before it in ``data`` were earlier requests
        # and their bodies, which a big read of pipelined requests holds
        # plenty of (issue 16: 431 after 8,266 valid GETs). That first
        # read of the head is not counted, since where in it the head
        # began is not known: llhttp may hold one read (256 KiB at most on
        # asyncio and uvloop) beyond the limit; every later read counts
        # whole. Complete fields are counted exactly by on_header.
        fed = conn._head_fed
        fed = fed + len(data) if fed >= 0 else 0
        conn._head_fed = fed
        if fed > conn._shared.max_head + conn._shared.max_line:
            error_replies.reject(conn, HeadersTooLarge("request head too large"))
    elif after is _BODY and conn._te is not None:
        if phase is _BODY and conn._head_fed >= 0:
            # Inside a chunked body (``_te`` is only ever "chunked" here):
            # all of ``data`` belonged to it, so framing = fed - body.
            fed = conn._chunked_fed + len(data)
            conn._chunked_fed = fed
            body = conn._body_bytes
            if fed - body > conn._shared.max_framing + body * _CHUNK_FRAMING_PER_BODY_BYTE:
                error_replies.reject(conn, BadRequest("chunked framing too large"))
        else:
            # This read crossed the head (or an earlier request, then this
            # head): not counted, and the next read is. At most two reads
            # per request go uncounted.
            conn._head_fed = 0


# -- parser callbacks, in firing order ---------------------------------------------


def on_message_begin(conn: HTTP1Protocol) -> None:
    if conn._phase is _CLOSED:
        # An app that ran during this feed closed the connection: the
        # pipelined requests after its own are not read.
        raise ConnectionClosing
    conn._url = b""
    conn._headers = []
    conn._head_bytes = 0
    conn._head_fed = -1  # this head began inside the current read
    conn._body_bytes = 0
    conn._host_count = 0
    _begin_message(conn)
    conn._phase = _HEAD
    conn.deadline = conn._loop.time() + conn._headers_timeout_s


def _begin_message(conn: HTTP1Protocol) -> None:
    conn._fresh = False
    if conn._watched:
        # Only a request that carried one of these fields changed them.
        conn._watched = False
        conn._content_length = -1
        conn._te = None
        conn._chunked_fed = 0
        conn._expect_continue = False
        conn._te_trailers = False
        conn._upgrade = None
        conn._connection_field = False


def on_url(conn: HTTP1Protocol, url: bytes) -> None:
    conn._url += url
    if len(conn._url) > conn._max_line:
        raise URITooLong("request target too long")


def on_header(conn: HTTP1Protocol, name: bytes, value: bytes) -> None:
    size = conn._head_bytes + len(name) + len(value) + 4
    conn._head_bytes = size
    if size > conn._max_head:
        raise HeadersTooLarge("request header fields too large")
    if conn._phase is not _HEAD:
        return  # a trailer field of a chunked body (RFC 9112 §7.1.2): not passed on
    name = name.lower()
    if name in _WATCHED:
        if name == b"host":
            conn._host_count += 1
            conn._host = value
        else:
            _watch(conn, name, value)
    conn._headers.append((name, value))


def _watch(conn: HTTP1Protocol, name: bytes, value: bytes) -> None:
    conn._watched = True
    if name == b"content-length":
        # llhttp already rejected malformed and duplicate values.
        conn._content_length = int(value)
    elif name == b"transfer-encoding":
        conn._te = value
    elif name == b"expect":
        conn._expect_continue = value.strip(b" \t").lower() == b"100-continue"
    elif name == b"te":
        conn._te_trailers = b"trailers" in value.lower()
    elif name == b"connection":
        conn._connection_field = True
    else:
        conn._upgrade = value.strip(b" \t").lower()


def on_headers_complete(conn: HTTP1Protocol) -> None:
    if conn._phase is _CLOSED:
        return
    shared = conn._shared
    parser = conn._parser
    keep_alive = parser.should_keep_alive()
    # llhttp accepts only HTTP/0.9, 1.0, 1.1 and 2.0, and of those only 1.1
    # keeps a connection alive without a Connection field: then the version
    # is known without get_http_version(), which formats a new str per call.
    version = _HTTP11 if keep_alive and not conn._connection_field else parser.get_http_version()
    if version == "1.1":
        # RFC 9112 §3.2: exactly one Host on HTTP/1.1.
        if conn._host_count != 1:
            raise BadRequest("missing or duplicate Host header")
    elif version == "1.0":
        if conn._host_count > 1:
            raise BadRequest("duplicate Host header")
        if conn._te is not None:
            # RFC 9112 §6.1: HTTP/1.0 with Transfer-Encoding is faulty framing.
            raise BadRequest("Transfer-Encoding in an HTTP/1.0 request")
    else:
        raise VersionNotSupported(f"HTTP/{version}")
    if conn._host_count:
        host = conn._host
        # A server's clients send the same few hosts: each new one is
        # checked (a compare instead of a byte loop, per request).
        if host != shared.last_host:
            wire.check_host(host)  # RFC 9112 §3.2: an invalid Host is a 400
            shared.last_host = host
    if conn._te is not None:
        wire.check_transfer_encoding(conn._te)
    if shared.max_body is not None and conn._content_length > shared.max_body:
        raise BodyTooLarge("declared Content-Length over the limit")
    raw_method = parser.get_method()
    method = _METHODS.get(raw_method) or raw_method.decode("ascii")
    if method == "CONNECT":
        raise NotImplementedByServer("CONNECT is not supported")
    _head_complete(conn, method, version, keep_alive)


def _head_complete(conn: HTTP1Protocol, method: str, version: str, keep_alive: bool) -> None:
    """The head is read and checked: build the scope and the cycle, and start or queue it."""
    shared = conn._shared
    conn._first_data = None  # an HTTP/1 request came: error_replies.reject answers from now on
    url = conn._url
    if url[:1] == b"/":  # origin-form, nearly every request: no authority to look for
        if 63 not in url and 35 not in url:  # "?" and "#", as ints: faster
            raw_path, query = url, b""
        elif 35 not in url:
            raw_path, _, query = url.partition(b"?")
        else:
            raw_path, query = split_target(url)
    else:
        raw_path, query = split_target(url)
        authority = target_authority(url)
        if authority is not None:
            # RFC 9110 §4.2.1: an http(s) URI with an empty host is invalid.
            if not authority or authority[0] == 58:  # ":"
                raise BadRequest("absolute-form target without a host")
            if 64 in authority:  # "@"
                # RFC 9110 §4.2.4: userinfo in a target URI is an error
                # (http://good.example@evil.example/ names evil.example).
                raise BadRequest("userinfo in the request target")
            wire.check_host(authority)
            conn._headers = with_host(conn._headers, authority)
    info = conn.info
    scope = http_scope(
        method,
        version,
        info.scheme,
        raw_path,
        query,
        shared.root_path,
        conn._headers,
        info.client,
        info.server,
        conn._state.lifespan_state,
        info.tls,
    )
    has_body = conn._content_length > 0 or conn._te is not None
    cycle = H1Cycle(
        scope, conn, expect_continue=conn._expect_continue and has_body and version == "1.1"
    )
    cycle.keep_alive = keep_alive
    cycle.client_close = not keep_alive
    conn._peer_closing = not keep_alive
    cycle.is_head = method == "HEAD"
    cycle.http10 = version == "1.0"
    cycle.te_trailers = conn._te_trailers
    if conn._timed:
        cycle.started = conn._loop.time()
        cycle.target = url
    conn._state.requests += 1
    conn._parsing = cycle
    conn._phase = _BODY
    if has_body:
        # A body must make progress (on_body) before this deadline, or it
        # is cut off with a 408 (on_deadline): a stalled upload must not
        # hold the connection and the app's task forever.
        conn.deadline = conn._loop.time() + shared.body_timeout_s
        conn._progress_at = _BODY_PROGRESS_BYTES
    else:
        conn.deadline = None
    if conn._upgrade is not None and conn._parser.should_upgrade():
        # Held until llhttp raises HttpParserUpgrade (after the body, if any).
        conn._upgrade_cycle = cycle
    elif not has_body:
        # on_message_complete fires next, in this same feed: the app starts
        # there, seeing a whole request (keep-alive and the keep-alive
        # deadline are decided once the parser is past it).
        conn._complete_cycle = cycle
    elif conn._active is None:
        conn._start(cycle)
    else:
        conn._enqueue(cycle)


def on_body(conn: HTTP1Protocol, body: bytes) -> None:
    size = conn._body_bytes + len(body)
    conn._body_bytes = size
    metrics = conn._metrics
    if metrics is not None:
        metrics.request_body_bytes += len(body)
    limit = conn._shared.max_body
    if limit is not None and size > limit:
        raise BodyTooLarge("request body over the limit")
    if size >= conn._progress_at:
        # Progress: the body deadline moves (see _BODY_PROGRESS_BYTES).
        conn._progress_at = size + _BODY_PROGRESS_BYTES
        conn.deadline = conn._loop.time() + conn._shared.body_timeout_s
    if conn._parsing is not None:
        conn._parsing.feed_body(body)


def on_message_complete(conn: HTTP1Protocol) -> None:
    if conn._phase is _CLOSED:
        return
    parsing = conn._parsing
    if parsing is not None and parsing is conn._upgrade_cycle and switching.upgrade_body(conn):
        # httptools had llhttp skip this body (an Upgrade request): it
        # follows in the bytes handed to switching.on_upgrade, not read yet.
        return
    conn._phase = _IDLE
    conn.deadline = None
    if parsing is not None:
        parsing.feed_end()
        conn._parsing = None
    cycle = conn._complete_cycle
    if cycle is not None:
        conn._complete_cycle = None
        if conn._active is None:
            conn._start(cycle, eager=True)
        else:
            conn._enqueue(cycle)
