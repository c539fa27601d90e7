"""Building ASGI connection scopes (HTTP spec 2.5; reused by WebSocket).

``websocket_scope`` derives the ``websocket`` scope of a handshake from the
``http`` scope of its request, the same way for an HTTP/1.1 upgrade and an
HTTP/2 extended CONNECT (RFC 8441).

The protocol splits the request target once (``split_target``), decodes the
path only when it holds a ``%`` (``decode_path``) and then builds the scope
with one dict literal (``http_scope``). Everything constant per connection
(client, server, scheme, TLS info) comes from a ``ConnectionInfo``-like
object built once in ``connection_made``.

Invariants: ``path`` is ``root_path`` + the percent-decoded UTF-8 target path
(the current www spec: ``path`` is the full path, ``root_path`` the mount
point); ``raw_path`` is the path bytes exactly as sent, with no query and no
root path; ``extensions`` and ``state`` are fresh dicts in every scope, so an
app mutating them cannot leak into the next request.

Imports only the standard library and ``sluiceway.asgi.types``.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import unquote

from sluiceway.asgi.types import ASGI_VERSION, HeaderList

_VERSION: Final = ASGI_VERSION["version"]
_SPEC_VERSION: Final = ASGI_VERSION["spec_version"]


def split_target(target: bytes) -> tuple[bytes, bytes]:
    """Split a request target into ``(raw_path, query_string)``.

    Handles origin-form (``/a?b``), absolute-form (``http://h/a?b``, RFC 9112
    §3.2.2) and asterisk-form (``*``). A fragment, which clients must not send,
    is dropped.
    """
    if 35 in target:  # b"#" as an int: a one-byte bytes needle is ~10x slower
        target = target.partition(b"#")[0]
    path, _, query = target.partition(b"?")
    if path[:1] != b"/" and path != b"*":
        # absolute-form: scheme "://" authority path-abempty
        scheme_end = path.find(b"://")
        if scheme_end > 0:
            slash = path.find(b"/", scheme_end + 3)
            path = path[slash:] if slash >= 0 else b"/"
    return path, query


def target_authority(target: bytes) -> bytes | None:
    """The authority of an absolute-form target (``http://h:1/p`` -> ``h:1``), else None.

    Returned as sent, userinfo included: the caller must refuse userinfo and
    check the rest before it reaches a scope (``http1/request_reader.py`` does, with
    ``wire.check_host``; RFC 9110 §4.2.4).
    """
    scheme_end = target.find(b"://")
    if scheme_end <= 0 or target[:1] == b"/":
        return None
    start = scheme_end + 3
    end = len(target)
    for stop in (b"/", b"?", b"#"):
        found = target.find(stop, start)
        if 0 <= found < end:
            end = found
    return target[start:end]


def with_host(headers: HeaderList, authority: bytes) -> HeaderList:
    """``headers`` with every Host field replaced by one carrying ``authority``.

    RFC 9112 §3.2.2: a server given an absolute-form target must ignore the
    Host field and use the target's authority, so the app sees what routing
    used (an app building URLs from Host would otherwise trust the client's
    second, possibly different, opinion).
    """
    replaced: HeaderList = []
    placed = False
    for name, value in headers:
        if name != b"host":
            replaced.append((name, value))
        elif not placed:  # where the client put it; any duplicate is dropped
            replaced.append((b"host", authority))
            placed = True
    if not placed:  # HTTP/1.0 may omit Host
        replaced.append((b"host", authority))
    return replaced


def decode_path(raw_path: bytes) -> str:
    """Percent-decode a path as UTF-8 (invalid sequences become U+FFFD)."""
    text = raw_path.decode("latin-1")
    if "%" in text:
        return unquote(text)
    return text


def http_extensions(tls: dict[str, Any] | None) -> dict[str, dict[Any, Any]]:
    """A fresh ``extensions`` dict listing exactly what sluiceway implements."""
    ext: dict[str, dict[Any, Any]] = {
        "http.response.pathsend": {},
        "http.response.zerocopysend": {},
        "http.response.early_hint": {},
        "http.response.trailers": {},
    }
    if tls is not None:
        ext["tls"] = {**tls}
    return ext


def http_scope(
    method: str,
    http_version: str,
    scheme: str,
    raw_path: bytes,
    query_string: bytes,
    root_path: str,
    headers: HeaderList,
    client: tuple[str, int] | None,
    server: tuple[str, int | None] | None,
    state: dict[str, Any],
    tls: dict[str, Any] | None,
) -> dict[str, Any]:
    """Build an ``http`` scope. ``state`` is copied shallowly here.

    Positional on purpose: it runs once per request on the hot path.
    """
    text = raw_path.decode("latin-1")
    if "%" in text:
        text = unquote(text)
    extensions: dict[str, dict[Any, Any]] = {
        "http.response.pathsend": {},
        "http.response.zerocopysend": {},
        "http.response.early_hint": {},
        "http.response.trailers": {},
    }
    if tls is not None:
        extensions["tls"] = {**tls}
    return {
        "type": "http",
        "asgi": {"version": _VERSION, "spec_version": _SPEC_VERSION},
        "http_version": http_version,
        "method": method,
        "scheme": scheme,
        "path": root_path + text if root_path else text,
        "raw_path": raw_path,
        "query_string": query_string,
        "root_path": root_path,
        "headers": headers,
        "client": client,
        "server": server,
        "state": state.copy(),
        "extensions": extensions,
    }


def websocket_scope(http_scope: dict[str, Any], subprotocols: tuple[str, ...]) -> dict[str, Any]:
    """The ``websocket`` scope of a handshake request (ASGI www spec 2.5).

    Everything the request line and headers gave the ``http`` scope carries
    over (http_version, path, raw_path, query_string, root_path, headers,
    client, server, state); ``method`` goes, ``scheme`` becomes ws/wss, and
    ``extensions`` lists what a WebSocket can use: the denial response, and
    TLS facts.
    """
    scope = dict(http_scope)
    scope.pop("method", None)
    scope["type"] = "websocket"
    scope["scheme"] = "wss" if http_scope.get("scheme") == "https" else "ws"
    scope["subprotocols"] = list(subprotocols)
    extensions: dict[str, dict[object, object]] = {"websocket.http.response": {}}
    tls = http_scope.get("extensions", {}).get("tls")
    if tls is not None:
        extensions["tls"] = tls
    scope["extensions"] = extensions
    return scope
