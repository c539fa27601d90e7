"""What a server says when an ASGI app fails, whichever protocol carried the request.

HTTP/1.1 (``http1/error_replies.py``) and HTTP/2 (``http2/error_replies.py``)
answer a failed app differently on the wire (a 500 then keep-alive or
close; a 500 or RST_STREAM INTERNAL_ERROR), but decide and report the same
way, here:

* ``client_left``: an exception that only says the client went away
  (``ClientDisconnected`` once the connection or stream is gone, or a
  response the client aborted) is not the app's error: ASGI's www spec 2.4
  says not to log it;
* ``report_exception``: anything else is logged once, with its traceback, on
  ``sluiceway.error``, and counted for ``--metrics-port``;
* ``report_early_return``: an app that returned without finishing its
  response is logged, in one of two sentences;
* ``ERROR_BODIES``: the plain-text body of a server-made 500 or 503.

Imports ``sluiceway.accesslog``, ``sluiceway.asgi.http``, ``sluiceway.errors``
and its sibling ``metrics``.
"""

from __future__ import annotations

from typing import Final

from sluiceway import accesslog
from sluiceway.asgi.http import ResponseState
from sluiceway.connection.metrics import Metrics
from sluiceway.errors import ClientDisconnected

__all__ = ["ERROR_BODIES", "client_left", "report_early_return", "report_exception"]

ERROR_BODIES: Final = {500: b"Internal Server Error", 503: b"Service Unavailable"}

_ABORTED: Final = ResponseState.ABORTED
_HEAD: Final = ResponseState.HEAD


def client_left(state: ResponseState, exc: BaseException, gone: bool) -> bool:
    """``exc`` only says the client left (``gone``: its connection or stream is over)."""
    return state is _ABORTED or (gone and isinstance(exc, ClientDisconnected))


def report_exception(exc: BaseException, metrics: Metrics | None) -> None:
    accesslog.error_logger.error("Exception in ASGI application", exc_info=exc)
    if metrics is not None:
        metrics.app_exceptions += 1


def report_early_return(state: ResponseState) -> None:
    accesslog.error_logger.error(
        "ASGI application returned without sending a response"
        if state <= _HEAD
        else "ASGI application returned before finishing its response"
    )
