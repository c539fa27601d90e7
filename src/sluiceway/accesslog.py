"""Access and error log lines, safe against what clients send.

One access line per response on logger ``sluiceway.access``::

    127.0.0.1:53122 - "GET /a?b=1 HTTP/1.1" 200 13 0.4ms

and for a WebSocket (``log_websocket``) one when the handshake is answered
and, if it was accepted, one when the session ends::

    127.0.0.1:53124 - "WebSocket /chat" [accepted]
    127.0.0.1:53124 - "WebSocket /chat" [closed 1000] 5012.7ms
    127.0.0.1:53126 - "WebSocket /admin" 403 0.6ms

Each record also carries ``client_addr``, ``request_line`` and
``status_code`` as attributes, the fields uvicorn's ``AccessFormatter``
format strings use (``logconfig_uvicorn.UvicornAccessFormatter`` formats them).

Application and protocol errors go to ``sluiceway.error``. Everything that
came from the client (the request target, header-derived text) passes
through ``escape`` first: control characters, ANSI escape sequences and
quotes are written as backslash escapes, so a request can neither forge a
second log line nor colour a terminal (CVE-2020-7694 hit uvicorn for this).

Cost on the hot path: the protocol checks ``access_enabled()`` once per
connection and skips all formatting when the logger would drop the record.

Imports only the standard library.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

access_logger = logging.getLogger("sluiceway.access")
error_logger = logging.getLogger("sluiceway.error")


def access_enabled() -> bool:
    return access_logger.isEnabledFor(logging.INFO)


def escape(text: str) -> str:
    """Make client-controlled text safe to put in a log line."""
    if text.isprintable() and '"' not in text and "\\" not in text:
        return text
    out = []
    for ch in text:
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    return "".join(out)


def format_client(client: tuple[str, int] | None) -> str:
    if client is None:
        return "-"
    return f"{client[0]}:{client[1]}"


def log_access(
    client: str,
    method: str,
    target: bytes,
    http_version: str,
    status: int,
    sent_bytes: int,
    duration_s: float,
) -> None:
    request_line = f"{escape(method)} {escape(target.decode('latin-1'))} HTTP/{http_version}"
    access_logger.info(
        '%s - "%s" %d %d %.1fms',
        client,
        request_line,
        status,
        sent_bytes,
        duration_s * 1000.0,
        extra={"client_addr": client, "request_line": request_line, "status_code": status},
    )


def websocket_line(scope: Mapping[str, Any]) -> str:
    """``WebSocket /path?query``, escaped: the request line of a WebSocket's access lines."""
    target = scope.get("raw_path") or scope["path"].encode("utf-8")
    query = scope.get("query_string")
    if query:
        target = target + b"?" + query
    return "WebSocket " + escape(target.decode("latin-1"))


def log_websocket(client: str, request_line: str, outcome: str, duration_s: float | None) -> None:
    """One access line of a WebSocket: its handshake's outcome, or its end.

    ``outcome`` is ``[accepted]`` (no duration, as uvicorn's line), a refusal's
    status (``403``), or ``[closed CODE]``; see docs/websocket.md.
    """
    status: int | str = int(outcome) if outcome.isdigit() else outcome
    extra = {"client_addr": client, "request_line": request_line, "status_code": status}
    if duration_s is None:
        access_logger.info('%s - "%s" %s', client, request_line, outcome, extra=extra)
    else:
        access_logger.info(
            '%s - "%s" %s %.1fms', client, request_line, outcome, duration_s * 1000.0, extra=extra
        )


def log_exchange(
    connection_text: str,
    connection_client: tuple[str, int] | None,
    scope: Mapping[str, Any],
    target: bytes,
    status: int,
    sent_bytes: int,
    duration_s: float,
) -> None:
    """The access line of one request/response, from its scope.

    ``--proxy-headers`` may have put the real client in the scope: that one is
    logged; otherwise ``connection_text``, formatted once per connection.
    """
    client = scope["client"]
    log_access(
        connection_text if client is connection_client else format_client(client),
        scope["method"],
        target,
        scope["http_version"],
        status,
        sent_bytes,
        duration_s,
    )
