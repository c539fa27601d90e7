"""The ASGI vocabulary: scopes, messages and application callables.

Typed after ``asgiref.typing`` where it helps; messages stay plain dicts on the
wire between server and app (the spec says dicts), so these TypedDicts describe
them for mypy without costing anything at run time.

Imports nothing but the standard library.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, Literal, Protocol, TypedDict

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]

Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ASGI2Instance(Protocol):
    def __call__(self, receive: Receive, send: Send) -> Awaitable[None]: ...


ASGI2App = Callable[[Scope], ASGI2Instance]

Headers = Iterable[tuple[bytes, bytes]]
HeaderList = list[tuple[bytes, bytes]]

ASGI_VERSION: dict[str, str] = {"version": "3.0", "spec_version": "2.5"}


class ASGIVersions(TypedDict):
    version: str
    spec_version: str


class HTTPScope(TypedDict):
    type: Literal["http"]
    asgi: ASGIVersions
    http_version: str
    method: str
    scheme: str
    path: str
    raw_path: bytes
    query_string: bytes
    root_path: str
    headers: HeaderList
    client: tuple[str, int] | None
    server: tuple[str, int | None] | None
    state: dict[str, Any]
    extensions: dict[str, dict[object, object]]


class WebSocketScope(TypedDict):
    type: Literal["websocket"]
    asgi: ASGIVersions
    http_version: str
    scheme: str
    path: str
    raw_path: bytes
    query_string: bytes
    root_path: str
    headers: HeaderList
    client: tuple[str, int] | None
    server: tuple[str, int | None] | None
    subprotocols: list[str]
    state: dict[str, Any]
    extensions: dict[str, dict[object, object]]


class LifespanScope(TypedDict):
    type: Literal["lifespan"]
    asgi: ASGIVersions
    state: dict[str, Any]


class HTTPRequestEvent(TypedDict):
    type: Literal["http.request"]
    body: bytes
    more_body: bool


class HTTPDisconnectEvent(TypedDict):
    type: Literal["http.disconnect"]


class HTTPResponseStartEvent(TypedDict, total=False):
    type: Literal["http.response.start"]
    status: int
    headers: Headers
    trailers: bool


class HTTPResponseBodyEvent(TypedDict, total=False):
    type: Literal["http.response.body"]
    body: bytes
    more_body: bool


class WebSocketConnectEvent(TypedDict):
    type: Literal["websocket.connect"]


class WebSocketReceiveEvent(TypedDict, total=False):
    type: Literal["websocket.receive"]
    bytes: bytes | None
    text: str | None


class WebSocketDisconnectEvent(TypedDict, total=False):
    type: Literal["websocket.disconnect"]
    code: int
    reason: str
