"""Send a connection's last answer and its FIN in one TCP segment.

A server that closes after its answer normally sends two segments: the
answer, then (at ``close``/``shutdown``) a bare FIN. Over a real network the
FIN is one more small packet; over loopback each segment also runs the
receiver's whole TCP input path in the sender's context, and wakes the
client once more. Corking the socket (``TCP_CORK``) just before the last
write keeps its final, partial segment in the kernel; the ``close`` or
``shutdown`` that follows at once uncorks it, and Linux tacks the FIN onto
that unsent segment. Scenario (e), a new connection per request, gains
+17 % requests/s from it (docs/performance.md, session 6).

Only for plain TCP on Linux. Not under TLS: the TLS close waits for the
peer's close_notify, which the peer cannot send before it has our corked
bytes, so the answer would wait for the kernel's 200 ms cork limit. The
caller must close or half-close right after, or the answer waits for that
limit too.

Imports only the standard library.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any, Final

_TCP_CORK: Final[int | None] = getattr(socket, "TCP_CORK", None)
_TCP_FAMILIES: Final = (socket.AF_INET, socket.AF_INET6)


def cork_for_fin(transport: Any) -> None:
    """Cork ``transport``'s socket before its last write; the close must follow.

    Does nothing where corking does not apply (not Linux, a Unix socket, a
    transport without a socket). Never raises: the FIN then goes alone, as
    it would without this.
    """
    if _TCP_CORK is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in _TCP_FAMILIES:
        return
    with contextlib.suppress(OSError):  # closed under us: nothing to send either way
        sock.setsockopt(socket.IPPROTO_TCP, _TCP_CORK, 1)
