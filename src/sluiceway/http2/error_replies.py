"""The answers an HTTP/2 stream makes itself when its app fails, or may not run.

* ``app_failed``: the app raised. Unless the client left (not an error:
  ``connection/app_errors.py``), the exception is logged and the stream
  ``abandon``-ed;
* ``app_returned_early``: the app returned before finishing its response;
* ``abandon``: before the response head, a 500; after it, RST_STREAM
  INTERNAL_ERROR (RFC 9113 §8.1: a response cannot be taken back);
* ``finish_with_error``: a server-made 500, or 503 (shutting down,
  ``--limit-concurrency``), that completes the exchange like any response
  (access log, metrics, the stream forgotten once out).

No exception text goes on the wire. Functions take the ``H2Protocol`` and
work on its state, as its methods did (mypyc compiles the calls between
these modules natively).

Imports ``sluiceway.asgi.http``, ``sluiceway.connection.app_errors`` and its
sibling ``frames``; ``protocol`` and ``stream`` for types only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from sluiceway.asgi.http import ResponseState
from sluiceway.connection.app_errors import (
    ERROR_BODIES,
    client_left,
    report_early_return,
    report_exception,
)
from sluiceway.http2.frames import ErrorCode

if TYPE_CHECKING:
    from sluiceway.http2.protocol import H2Protocol
    from sluiceway.http2.stream import H2Stream

_S_HEAD: Final = ResponseState.HEAD
_S_DONE: Final = ResponseState.DONE


def app_failed(proto: H2Protocol, stream: H2Stream, exc: BaseException) -> None:
    if client_left(stream.cycle.response_state, exc, proto.flow.closed or stream.ended):
        return  # the client reset the stream or left
    report_exception(exc, proto._metrics)
    abandon(proto, stream)


def app_returned_early(proto: H2Protocol, stream: H2Stream) -> None:
    report_early_return(stream.cycle.response_state)
    abandon(proto, stream)


def abandon(proto: H2Protocol, stream: H2Stream) -> None:
    if stream.cycle.response_state <= _S_HEAD:
        finish_with_error(proto, stream, 500)
    else:
        stream.ended = True
        proto.reset(stream.stream_id, ErrorCode.INTERNAL_ERROR)
        stream.cycle.feed_disconnect()
        proto.forget(stream)
    proto._schedule_flush()


def finish_with_error(proto: H2Protocol, stream: H2Stream, status: int) -> None:
    cycle = stream.cycle
    if not stream.ended and not proto.flow.closed:
        fields = [(b":status", b"%d" % status), (b"content-type", b"text/plain; charset=utf-8")]
        fields += proto.default_fields()
        body = ERROR_BODIES[status]
        fields.append((b"content-length", b"%d" % len(body)))
        proto.send_headers(stream.stream_id, fields, False)
        stream.ended = True
        proto.send_data(stream.stream_id, body, True)
        stream.sent = len(body)  # the access log's bytes, as for any response
        proto._schedule_flush()
    cycle.status = status
    cycle.response_state = _S_DONE
    cycle.feed_disconnect()
    proto.response_complete(stream)
