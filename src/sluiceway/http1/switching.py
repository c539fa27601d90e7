"""Switching protocols on an HTTP/1.1 connection: the HTTP/2 hand-off and the Upgrade dispatch.

Delegated to from ``http1/protocol.py`` off the per-request path:

* ``sniff_h2``: a fresh cleartext connection whose first bytes may be the
  HTTP/2 preface (RFC 9113 §3.3, prior knowledge); ``hand_to_h2`` gives the
  transport to an ``H2Protocol`` (also after ALPN chose h2, RFC 9113 §3.2);
* ``on_upgrade``: llhttp stopped after an ``Upgrade`` request head: h2c
  (``upgrade_to_h2c``, RFC 7540 §3.2: 101, then the request is HTTP/2 stream
  1), a WebSocket handshake (``http1/upgrade.py``), or declined and served as
  HTTP/1.1;
* ``read_raw_body``: the body llhttp skipped after an Upgrade head, read by
  its Content-Length (never taken for the next request: that would smuggle
  one past a proxy that saw a single request), and the h2c switch that waits
  for it.

Functions take the ``HTTP1Protocol`` and work on its state, as its methods
did (mypyc compiles the calls between these modules natively).

Imports ``sluiceway.asgi.http``, ``sluiceway.errors``, its ``http1`` siblings
and, lazily, ``sluiceway.http2`` (the hand-off); ``http1/protocol.py`` for
types only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import httptools

from sluiceway.asgi.http import BODY_HIGH_WATER_BYTES
from sluiceway.errors import BadRequest, ProtocolError
from sluiceway.http1 import response_writer, upgrade
from sluiceway.http1.cycle import NO_PARSER, H1Cycle, Phase
from sluiceway.http1.error_replies import reject

if TYPE_CHECKING:
    from sluiceway.asgi.http import HTTPCycle
    from sluiceway.http1.protocol import HTTP1Protocol
    from sluiceway.http2.config import H2Config
    from sluiceway.http2.protocol import H2Protocol

_IDLE: Final = Phase.IDLE
_CLOSED: Final = Phase.CLOSED
_SWITCHING_TO_H2C: Final = (
    b"HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: h2c\r\n\r\n"
)
# RFC 9113 §3.4: what a client with prior knowledge of HTTP/2 sends first.
_H2_PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def sniff_h2(conn: HTTP1Protocol, h2: H2Config, data: bytes) -> bytes:
    """Bytes starting with "P" on a fresh cleartext connection: the HTTP/2 preface, or not.

    Returns what HTTP/1.1 should read, or ``b""`` when the bytes went to
    HTTP/2 or are held (a preface cut across reads). RFC 9113 §3.3: a
    client that knows the server speaks HTTP/2 starts with the 24-byte
    preface; anything else here is HTTP/1.1 (a first line that is neither
    is refused in ``error_replies.reject``).
    """
    head = conn._h2_head
    if head:
        data = head + data
        conn._h2_head = b""
    if _H2_PREFACE.startswith(data[:24]):
        if len(data) < len(_H2_PREFACE):
            conn._h2_head = data  # a preface cut across reads: wait for the rest
            return b""
        hand_to_h2(conn, h2, data)
        return b""
    return data


def hand_to_h2(
    conn: HTTP1Protocol,
    config: H2Config,
    data: bytes,
    upgrade_settings: bytes | None = None,
    upgraded: HTTPCycle | None = None,
) -> H2Protocol:
    """Give the transport to a new ``H2Protocol`` that reads ``data`` first.

    ``upgraded``: the whole request that asked for h2c (RFC 7540 §3.2);
    HTTP/2 answers it on stream 1.
    """
    from sluiceway.http2.protocol import H2Protocol

    h2 = H2Protocol(conn._shared, config)
    conn._phase = _CLOSED
    conn.deadline = None
    conn._state.remove_connection(conn)
    conn._transport.set_protocol(h2)  # type: ignore[arg-type]  # a Protocol by duck typing
    conn._parser = NO_PARSER
    h2.start(conn._transport, conn.info, data, upgrade_settings, upgraded)
    return h2


def on_upgrade(conn: HTTP1Protocol, data: bytes, offset: int) -> None:
    """llhttp stopped at the end of an Upgrade request's head, at ``data[offset]``.

    In order: ``Upgrade: h2c`` (``upgrade_to_h2c``), a WebSocket handshake
    (``http1/upgrade.py``), else the request is served as plain HTTP/1.1
    (RFC 9110 §7.8 lets a server ignore Upgrade).
    """
    response_writer.flush_held(conn)  # an earlier answer still held goes out before the 101
    cycle = conn._upgrade_cycle
    conn._upgrade_cycle = None
    rest = data[offset:]
    if cycle is None:
        reject(conn, BadRequest("unexpected upgrade"))
        return
    h2 = conn._shared.h2
    if (
        h2 is not None
        and conn._upgrade == b"h2c"
        and conn._te is None  # a chunked body: below
        and not conn._shared.tls  # RFC 7540 §3.2: h2c is for cleartext only
        and conn._active is None
        and not conn._pipeline
        and upgrade_to_h2c(conn, h2, cycle, rest)
    ):
        return
    if conn._shared.ws_enabled and conn._active is None and not conn._pipeline:
        request = upgrade.UpgradeRequest(
            transport=conn._transport,
            info=conn.info,
            scope=dict(cycle.scope),
            upgrade=conn._upgrade or b"",
            buffered=rest,
            app=conn._app,
            config=conn._shared.config,
            state=conn._state,
        )
        if upgrade.try_upgrade(request):
            conn._phase = _CLOSED
            conn.deadline = None
            conn._state.remove_connection(conn)
            return
    # Declined: serve it as plain HTTP. llhttp stays in upgrade mode, so
    # the bytes after the head go to a fresh parser, after the body
    # httptools had llhttp skip: read here by its Content-Length, never
    # taken for the next request (that would smuggle one past a proxy
    # that saw a single request). A chunked one we do not decode: 400.
    conn._parser = httptools.HttpRequestParser(conn)
    if upgrade_body(conn):
        if conn._te is not None:
            reject(conn, BadRequest("a chunked request body with an Upgrade not taken"))
            return
        conn._raw_body_left = conn._content_length
    else:
        conn._phase = _IDLE
    conn._enqueue(cycle)
    if rest:
        conn.data_received(rest)


def upgrade_body(conn: HTTP1Protocol) -> bool:
    """Whether the Upgrade request being read has a body (which llhttp skipped)."""
    return conn._content_length > 0 or conn._te is not None


def read_raw_body(conn: HTTP1Protocol, data: bytes) -> bytes:
    """Feed the skipped body of a declined Upgrade request; return the bytes after it."""
    left = conn._raw_body_left
    chunk = data[:left] if len(data) > left else data
    conn._raw_body_left = left - len(chunk)
    try:
        conn.on_body(chunk)
    except ProtocolError as exc:
        conn._raw_body_left = 0
        reject(conn, exc)
        return b""
    if conn._raw_body_left:
        return b""
    rest = data[len(chunk) :]
    pending = conn._h2c_pending
    if pending is not None and conn._parsing is not None:
        # The h2c upgrade request is whole: switch, and HTTP/2 answers it.
        conn._h2c_pending = None
        cycle = conn._parsing
        conn._parsing = None
        conn._upgrade_cycle = None
        cycle.feed_end()
        switch_to_h2c(conn, pending[0], pending[1], cycle, rest)
        return b""
    conn.on_message_complete()
    return rest


def upgrade_to_h2c(conn: HTTP1Protocol, h2: H2Config, cycle: H1Cycle, rest: bytes) -> bool:
    """``Upgrade: h2c`` (RFC 7540 §3.2): 101, then this request is HTTP/2 stream 1.

    Declined (False: the request is served over HTTP/1.1, as the RFC lets
    a server do) unless there is exactly one ``HTTP2-Settings`` field, it
    is named in ``Connection`` (§3.2.1), and it decodes.
    """
    from sluiceway.http2.frames import H2ConnectionError, decode_http2_settings

    settings = [v for n, v in cycle.scope["headers"] if n == b"http2-settings"]
    connection = b",".join(v for n, v in cycle.scope["headers"] if n == b"connection")
    options = {token.strip(b" \t").lower() for token in connection.split(b",")}
    if len(settings) != 1 or b"http2-settings" not in options:
        return False
    try:
        payload = decode_http2_settings(settings[0])
    except H2ConnectionError:
        return False
    if conn._content_length > BODY_HIGH_WATER_BYTES:
        # Held whole before the switch, as RFC 7540 §3.2 has the client
        # send it: a larger one is served over HTTP/1.1 instead (RFC 9110
        # §7.8 lets a server ignore Upgrade), so memory stays bounded.
        return False
    if conn._content_length > 0:
        # The 101 waits for the body (curl stops sending it at the 101).
        conn._h2c_pending = (h2, payload)
        conn._raw_body_left = conn._content_length
        conn.data_received(rest)
        return True
    switch_to_h2c(conn, h2, payload, cycle, rest)
    return True


def switch_to_h2c(
    conn: HTTP1Protocol, h2: H2Config, payload: bytes, cycle: H1Cycle, rest: bytes
) -> None:
    conn._transport.write(_SWITCHING_TO_H2C)
    hand_to_h2(conn, h2, rest, payload, cycle)
