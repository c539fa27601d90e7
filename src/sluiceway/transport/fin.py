"""Send a connection's last answer and its FIN in one TCP segment.

A server that closes after its answer normally sends two segments: the
answer, then (at ``close``/``shutdown``) a bare FIN. Over a real network the
FIN is one more small packet; over loopback each segment also runs the
receiver's whole TCP input path in the sender's context, and wakes the
client once more. Corking the socket (``TCP_CORK``) just before the last
write keeps its final, partial segment in the kernel; the ``close`` or
``shutdown`` that follows at once uncorks it, and Linux tacks the FIN onto
that unsent segment. Scenario (e), a new connection per request, gained
11 % to 17 % requests/s from it in two A/Bs (docs/performance.md, session 6).

Only for plain TCP (not Unix sockets) on Linux. Not under TLS: the TLS
close waits for the peer's close_notify, which the peer cannot send before
it has our corked bytes, so the answer would wait for the kernel's 200 ms
cork limit. The caller must close or half-close right after, or the answer
waits for that limit too.

Imports only the standard library and our optional C helper.
"""

from __future__ import annotations

import _socket
from collections.abc import Callable
from typing import Any, Final

_TCP_CORK: Final[int | None] = getattr(_socket, "TCP_CORK", None)


def tcp_cork_python(fd: int) -> None:
    """Set ``TCP_CORK`` on socket descriptor ``fd``, ignoring errors (the fallback)."""
    if _TCP_CORK is None:
        return
    # uvloop's socket stand-in builds a ``socket.socket`` (and its Python
    # __init__) for each option set; the C type over the same descriptor, let go
    # of at once, costs less. The family does not matter to the option.
    try:
        raw = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM, 0, fd)
    except OSError:
        return  # closed under us: nothing to send either way
    try:
        raw.setsockopt(_socket.IPPROTO_TCP, _TCP_CORK, 1)
    except OSError:
        pass  # not TCP after all
    finally:
        raw.detach()


try:
    # Our own C helper (src/sluiceway/_speedups.c), built by `pip install` where
    # a compiler exists: no socket object, so no getsockname() check of the
    # descriptor; about 1 us against 2.7 per closed connection.
    from sluiceway._speedups import tcp_cork as _c_tcp_cork
except ImportError:  # pragma: no cover - the build is optional
    tcp_cork: Callable[[int], None] = tcp_cork_python
else:
    tcp_cork = _c_tcp_cork


def cork_for_fin(transport: Any) -> None:
    """Cork the TCP socket under ``transport`` before its last write; the close must follow.

    The caller has checked that the transport is plain TCP. Does nothing off
    Linux or without a socket; never raises: the FIN then goes alone, as it
    would without this.
    """
    if _TCP_CORK is None:
        return
    sock = transport.get_extra_info("socket")
    fd = -1 if sock is None else sock.fileno()
    if fd >= 0:
        tcp_cork(fd)
