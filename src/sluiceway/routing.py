"""Routers: pick the ASGI app for a connection by scope type, URL path or channel.

``ProtocolTypeRouter`` dispatches on ``scope["type"]``, ``URLRouter`` on the
path with Django-style ``path()`` / ``re_path()`` routes, and
``ChannelNameRouter`` on ``scope["channel"]``. All three are plain ASGI apps,
so they nest and wrap like any other.

Invariants:

* Route patterns are compiled once, when ``path()``/``re_path()``/``URLRouter``
  run. A router whose routes allow it also builds one alternation of all its
  patterns, so a dispatch is one regex match, not one per route; routes are
  still tried in order, exactly as the linear scan would.
* A router never mutates the scope it was given: it hands a copy to the child.
  ``scope["path"]`` stays whole; nested routers read the unmatched rest from
  ``scope["path_remaining"]`` (the key Channels uses), and captured values
  accumulate in ``scope["url_route"] = {"args": tuple, "kwargs": dict}``.
* ``scope["path"]`` includes ``scope["root_path"]`` (current ASGI reading, as
  uvicorn and Starlette do it); the outermost router strips ``root_path``
  before matching, and a path outside ``root_path`` matches nothing.
* A route whose app is a router (bare or behind middleware) matches only if
  that router matches the rest in turn: the whole chain of nested routes is
  resolved before any app is called, so a nested router's "no match" goes on
  to the next route (as Channels and Django's resolver do), and an exception
  raised by a matched app never does. A bare nested router is descended into
  directly; one behind middleware is handed the resolution, so each level is
  matched once per request.
* No match answers the client (HTTP 404, WebSocket close before accept, which
  a server turns into 403); other scope types get a ``ValueError``.

Toolkit module: imports ``sluiceway.asgi``, ``sluiceway._toolkit`` and
``sluiceway.url_converters`` (the converters of ``path()``) only, never the
server side.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from sluiceway._toolkit import answer_lifespan, refuse_websocket, send_text_response
from sluiceway.asgi.compat import guarantee_single_callable
from sluiceway.asgi.types import ASGIApp, Receive, Scope, Send
from sluiceway.url_converters import CONVERTERS, Converter, register_converter

__all__ = [
    "ChannelNameRouter",
    "ProtocolTypeRouter",
    "Route",
    "URLRouter",
    "path",
    "re_path",
    "register_converter",
]

logger = logging.getLogger(__name__)


# -- routes -------------------------------------------------------------------

_PARAMETER = re.compile(r"<(?:(?P<converter>[^>:]+):)?(?P<parameter>[^>]+)>")
# Inline global flags or back references cannot sit inside an alternation of
# several routes; a router holding such a route falls back to the linear scan.
_UNCOMBINABLE = re.compile(r"\(\?P=|\\[1-9]|\(\?[aiLmsux]+\)")
_NAMED_GROUP = re.compile(r"\(\?P<[A-Za-z_][A-Za-z0-9_]*>")


@dataclass(frozen=True, slots=True)
class _Group:
    index: int  # 1-based, relative to the route's own pattern
    name: str | None
    converter: Converter | None


@dataclass(frozen=True, slots=True)
class Route:
    """One compiled route; build it with ``path()`` or ``re_path()``."""

    pattern: str
    app: ASGIApp
    regex: re.Pattern[str]
    # The pattern with groups unnamed, for the router's combined regex, or
    # None when it cannot be combined.
    combinable: str | None
    groups: tuple[_Group, ...]
    positional: bool  # re_path with no named groups: values go to "args"
    prefix: bool  # the app is a router: match a prefix and pass on the rest
    extra_kwargs: Mapping[str, Any]
    name: str | None
    # The literal first path segment every match starts with, or None if
    # unknown (re_path, or a parameter inside the first segment).
    segment: str | None = None
    # The nested router behind ``app`` (``app`` itself, or inside middleware)
    # when ``prefix``: the route matches only if that router matches the rest.
    router: URLRouter | None = None

    def extract(self, match: re.Match[str], base: int) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Return (args, kwargs) for a match whose route groups start after ``base``.

        Raises:
            ValueError: a converter refused the value (the route does not match).
        """
        if self.positional:
            return tuple(match.group(base + g.index) for g in self.groups), dict(self.extra_kwargs)
        kwargs: dict[str, Any] = {}
        for g in self.groups:
            value = match.group(base + g.index)
            if value is None:
                continue
            kwargs[g.name or ""] = value if g.converter is None else g.converter.to_python(value)
        kwargs.update(self.extra_kwargs)
        return (), kwargs


def _find_router(app: Any) -> URLRouter | None:
    # Look through middleware wrappers (``.inner`` as in Channels, ``.app`` or
    # ``.application``) so ``path("api/", AuthMiddlewareStack(URLRouter(...)))`` nests.
    for _ in range(16):  # bounded: a wrapper cycle must not hang route definition
        if isinstance(app, URLRouter):
            return app
        app = (
            getattr(app, "inner", None)
            or getattr(app, "app", None)
            or getattr(app, "application", None)
        )
        if app is None:
            return None
    return None


def path(
    route: str,
    app: Any,
    kwargs: Mapping[str, Any] | None = None,
    name: str | None = None,
    *,
    converters: Mapping[str, Converter] | None = None,
) -> Route:
    """A Django-style route: ``path("rooms/<int:room_id>/", app)``.

    Literal text matches exactly; ``<converter:name>`` captures a value
    (converter defaults to ``str``). A route whose app is a ``URLRouter``
    matches a prefix of the path, and only if that router matches the rest;
    any other route matches the whole rest. ``converters`` replaces the
    registry of converter names for this route (``sluiceway.django`` passes
    Django's own, so ``django.urls.register_converter`` is honoured).

    Raises:
        ValueError: unknown converter or a parameter name that is not an identifier.
    """
    router = _find_router(app)
    prefix = router is not None
    parts = ["^"]
    groups: list[_Group] = []
    count = 0
    position = 0
    for m in _PARAMETER.finditer(route):
        parts.append(re.escape(route[position : m.start()]))
        position = m.end()
        parameter = m.group("parameter")
        if not parameter.isidentifier():
            raise ValueError(f"route {route!r}: {parameter!r} is not a Python identifier")
        converter_name = m.group("converter") or "str"
        converter = (CONVERTERS if converters is None else converters).get(converter_name)
        if converter is None:
            raise ValueError(f"route {route!r}: unknown converter {converter_name!r}")
        count += 1
        groups.append(_Group(count, parameter, converter))
        parts.append(f"({converter.regex})")
        count += re.compile(converter.regex).groups
    parts.append(re.escape(route[position:]))
    literal = route[:groups_start] if (groups_start := route.find("<")) >= 0 else route
    segment = literal[: literal.index("/")] if "/" in literal else None
    if not prefix:
        parts.append(r"\Z")
    source = "".join(parts)
    return Route(
        pattern=route,
        app=guarantee_single_callable(app),
        regex=re.compile(source),
        combinable=None if _UNCOMBINABLE.search(source) else source,
        groups=tuple(groups),
        positional=False,
        prefix=prefix,
        extra_kwargs=dict(kwargs or {}),
        name=name,
        segment=segment,
        router=router,
    )


def re_path(
    regex: str,
    app: Any,
    kwargs: Mapping[str, Any] | None = None,
    name: str | None = None,
) -> Route:
    """A regex route: ``re_path(r"^rooms/(?P<room>\\w+)/$", app)``.

    Searched against the rest of the path (as Django does); named groups go to
    ``kwargs`` as strings, or, when there are none, all groups go to ``args``.
    A trailing ``$`` on a non-router route means the true end of the path.

    Raises:
        re.error: the regex does not compile.
    """
    router = _find_router(app)
    prefix = router is not None
    source = regex
    if not prefix and source.endswith("$") and not source.endswith("\\$"):
        # Django's fullmatch rule: "$" alone would also match before a final
        # newline, and a newline can arrive percent-encoded in the path.
        source = source[:-1] + r"\Z"
    compiled = re.compile(source)
    names = {index: group_name for group_name, index in compiled.groupindex.items()}
    if names:
        groups = tuple(_Group(i, n, None) for i, n in sorted(names.items()))
    else:
        groups = tuple(_Group(i, None, None) for i in range(1, compiled.groups + 1))
    combinable: str | None = None
    # The combined regex matches at position 0, as a search of a pattern
    # anchored by "^" would. A "|" may hide an unanchored branch
    # (r"^a/$|b/$" searches "b/" anywhere): such a route stays searched alone.
    if source.startswith("^") and "|" not in source and not _UNCOMBINABLE.search(source):
        unnamed = _NAMED_GROUP.sub("(", source)
        try:
            if re.compile(unnamed).groups == compiled.groups:
                combinable = unnamed
        except re.error:
            combinable = None
    return Route(
        pattern=regex,
        app=guarantee_single_callable(app),
        regex=compiled,
        combinable=combinable,
        groups=groups,
        positional=not names,
        prefix=prefix,
        extra_kwargs=dict(kwargs or {}),
        name=name,
        router=router,
    )


# -- the routers --------------------------------------------------------------


# (route, args, kwargs, unmatched rest, the nested router's own resolution of
# that rest when the route's app is a router, else None)
_Resolved: TypeAlias = "tuple[Route, tuple[Any, ...], dict[str, Any], str, _Resolved | None]"


def _descend(
    router: URLRouter, route: Route, args: tuple[Any, ...], kwargs: dict[str, Any], rest: str
) -> _Resolved | None:
    """Accept a prefix route only if its nested ``router`` matches the rest in turn."""
    # One leading "/" is dropped at each level (routes are written without it).
    inner = router._lookup(rest[1:] if rest.startswith("/") else rest)
    return None if inner is None else (route, args, kwargs, rest, inner)


class _RouteSet:
    """Routes tried in order: one combined regex when possible, else one by one.

    A prefix route whose nested router has no match for the rest does not
    match (Django's resolver and Channels go on to the next route too).
    """

    __slots__ = ("combined", "routes", "starts")

    def __init__(self, routes: tuple[Route, ...]) -> None:
        self.routes = routes
        self.combined: re.Pattern[str] | None = None
        self.starts: dict[int, int] = {}  # wrapper group number -> route index
        sources = [route.combinable for route in routes]
        if len(routes) < 2 or any(s is None for s in sources):
            return
        parts = []
        group = 1
        for index, (route, source) in enumerate(zip(routes, sources, strict=True)):
            self.starts[group] = index
            parts.append(f"({source})")
            group += 1 + route.regex.groups
        try:
            self.combined = re.compile("|".join(parts))
        except (re.error, RecursionError):
            # A custom converter's named group, repeated across routes, is a
            # duplicate name in one pattern; the routes still match one by one.
            self.combined = None

    def match(self, rest: str) -> _Resolved | None:
        start = 0
        combined = self.combined
        if combined is not None:
            m = combined.match(rest)
            if m is None:
                return None
            wrapper = m.lastindex or 0
            index = self.starts[wrapper]
            route = self.routes[index]
            try:
                args, kwargs = route.extract(m, wrapper)
            except ValueError:
                pass  # a converter said no
            else:
                router = route.router
                if router is None:
                    return route, args, kwargs, rest[m.end(wrapper) :], None
                found = _descend(router, route, args, kwargs, rest[m.end(wrapper) :])
                if found is not None:
                    return found
            start = index + 1  # go on from the next route, one by one
        for route in self.routes[start:]:
            m = route.regex.search(rest)
            if m is None:
                continue
            try:
                args, kwargs = route.extract(m, 0)
            except ValueError:
                continue
            router = route.router
            if router is None:
                return route, args, kwargs, rest[m.end() :], None
            found = _descend(router, route, args, kwargs, rest[m.end() :])
            if found is not None:
                return found
        return None


# Above this many (segments x unkeyed routes), per-segment sets would repeat
# too many patterns; one set of all routes is used instead.
_MAX_BUCKET_COPIES = 4096


class URLRouter:
    """Route ``http`` and ``websocket`` scopes by path to the first matching route.

    Args:
        routes: ``Route`` objects from ``path()`` and ``re_path()``, in priority order.
    """

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes: tuple[Route, ...] = tuple(routes)
        for route in self.routes:
            if not isinstance(route, Route):
                raise TypeError(f"URLRouter takes path()/re_path() routes, got {route!r}")
        # A path() route whose literal start holds a "/" can only match paths
        # whose first segment is that literal: index routes by it, so that a
        # dispatch tries only the routes that can match, still in order.
        keys = {r.segment for r in self.routes if r.segment is not None}
        unkeyed = sum(1 for r in self.routes if r.segment is None)
        if len(keys) * unkeyed > _MAX_BUCKET_COPIES:
            keys = set()
        self._buckets = {
            key: _RouteSet(tuple(r for r in self.routes if r.segment in (key, None)))
            for key in keys
        }
        self._others = _RouteSet(
            tuple(r for r in self.routes if r.segment is None or r.segment not in keys)
        )
        # (path_remaining, its resolution) left by a parent router that resolved
        # it before calling the middleware wrapping us; see __call__.
        self._pending: tuple[str, _Resolved] | None = None

    def match(self, rest: str) -> tuple[Route, tuple[Any, ...], dict[str, Any], str] | None:
        """Return (route, args, kwargs, unmatched rest) for ``rest``, or None.

        A route whose app is a nested router matches only if that router
        matches the unmatched rest in turn; otherwise the next route is tried.
        """
        found = self._lookup(rest)
        return None if found is None else found[:4]

    def _lookup(self, rest: str) -> _Resolved | None:
        slash = rest.find("/")
        segment = rest[:slash] if slash >= 0 else rest
        return self._buckets.get(segment, self._others).match(rest)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The whole chain of nested routes is resolved before any app is
        # called, so a nested router's "no match" falls through to the next
        # route, and an exception raised by a matched app never does.
        rest = scope.get("path_remaining")
        pending = self._pending
        found: _Resolved | None
        if pending is not None and pending[0] is rest:
            # Our parent resolved this very string already. Resolution depends
            # on the string alone, so even another request's entry is right.
            self._pending = None
            found = pending[1]
        else:
            if rest is None:
                full = scope.get("path")
                if not isinstance(full, str):
                    raise ValueError("URLRouter needs a scope with a 'path' (http or websocket)")
                rest = _strip_root_path(full, scope.get("root_path") or "")
            if rest is not None and rest.startswith("/"):
                rest = rest[1:]
            found = None if rest is None else self._lookup(rest)
        if found is None:
            await _no_route(scope, receive, send)
            return
        route, args, kwargs, remainder, inner = found
        outer = scope.get("url_route")
        if outer:
            args = (*outer.get("args", ()), *args)
            kwargs = {**outer.get("kwargs", {}), **kwargs}
        # A plain URLRouter nested without middleware would only redo the match
        # already made: descend into it here, and the leaf gets the same scope.
        while inner is not None and route.app is route.router and type(route.app) is URLRouter:
            route, inner_args, inner_kwargs, remainder, inner = inner
            args = (*args, *inner_args)
            kwargs = {**kwargs, **inner_kwargs}
        child = dict(scope)
        child["url_route"] = {"args": args, "kwargs": kwargs}
        if route.prefix:
            child["path_remaining"] = remainder
            if inner is not None and route.router is not None:
                # Behind middleware: leave the nested router our resolution.
                route.router._pending = (remainder, inner)
        else:
            child.pop("path_remaining", None)
        await route.app(child, receive, send)


def _strip_root_path(full: str, root_path: str) -> str | None:
    """Return the path below ``root_path``, or None if it lies outside it."""
    root = root_path.rstrip("/")
    if not root:
        return full
    if full == root or full.startswith(root + "/"):
        return full[len(root) :]
    return None


async def _no_route(scope: Scope, receive: Receive, send: Send) -> None:
    kind = scope.get("type")
    logger.debug("no route for %s %r", kind, scope.get("path"))
    if kind == "http":
        await send_text_response(send, 404, "Not Found")
    elif kind == "websocket":
        await refuse_websocket(receive, send, 1000)
    else:
        raise ValueError(f"No route found for path {scope.get('path')!r} in a {kind!r} scope")


class ProtocolTypeRouter:
    """Dispatch on ``scope["type"]``: ``ProtocolTypeRouter({"http": app, ...})``.

    An unrouted ``lifespan`` scope is answered with startup/shutdown complete,
    so the router runs under servers that have lifespan on; any other unrouted
    type raises ``ValueError`` naming it.
    """

    def __init__(self, application_mapping: Mapping[str, Any]) -> None:
        self.application_mapping: dict[str, ASGIApp] = {
            kind: guarantee_single_callable(app) for kind, app in application_mapping.items()
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        app = self.application_mapping.get(kind)
        if app is not None:
            await app(scope, receive, send)
        elif kind == "lifespan":
            await answer_lifespan(receive, send)
        else:
            raise ValueError(f"No application configured for scope type {kind!r}")


class ChannelNameRouter:
    """Dispatch ``channel`` scopes by ``scope["channel"]`` (background workers)."""

    def __init__(self, application_mapping: Mapping[str, Any]) -> None:
        self.application_mapping: dict[str, ASGIApp] = {
            name: guarantee_single_callable(app) for name, app in application_mapping.items()
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if "channel" not in scope:
            raise ValueError("ChannelNameRouter got a scope with no 'channel' key")
        app = self.application_mapping.get(scope["channel"])
        if app is None:
            raise ValueError(f"No application configured for channel name {scope['channel']!r}")
        await app(scope, receive, send)
