"""Routers that take Django's URL patterns: ``django.urls.path()`` / ``re_path()``.

``URLRouter([path("ws/chat/<str:room>/", ChatConsumer.as_asgi())])`` with
``path`` from ``django.urls`` works as it does in Channels. Each Django pattern
becomes a route of the toolkit's router (its first-segment index and combined
regex apply), built from the pattern's own route string or regex:

* ``path()`` uses Django's converters, including those added with
  ``django.urls.register_converter``; a converter's ``to_python`` raising
  ``ValueError`` means no match, as in Django's resolver.
* ``re_path()`` regexes are searched, ``$`` is the true end of the path, named
  groups are kwargs and unnamed ones args: Django's rules.
* Nesting: a pattern whose view is a ``URLRouter`` (bare or in middleware)
  matches a prefix, as in Channels; so does ``include([...])`` (and an
  included URLconf module's ``urlpatterns``), which Channels refuses.
* ``kwargs`` given to ``path()`` reach ``scope["url_route"]["kwargs"]``.

Routes from ``sluiceway.routing.path()`` can be mixed in. ``ProtocolTypeRouter``
and ``ChannelNameRouter`` are the toolkit's; ``get_default_application()``
imports ``settings.ASGI_APPLICATION`` as Channels' does.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.urls.converters import get_converters
from django.urls.resolvers import RegexPattern, RoutePattern, URLPattern, URLResolver

from sluiceway import routing
from sluiceway.routing import ChannelNameRouter, ProtocolTypeRouter, Route

__all__ = ["ChannelNameRouter", "ProtocolTypeRouter", "URLRouter", "get_default_application"]


def _convert(pattern: Any) -> Route:
    """One toolkit route for a Django ``URLPattern`` or ``URLResolver``."""
    if isinstance(pattern, Route):
        return pattern
    if isinstance(pattern, URLResolver):
        app: Any = URLRouter(pattern.url_patterns)
        extra = pattern.default_kwargs
    elif isinstance(pattern, URLPattern):
        app = pattern.callback
        extra = pattern.default_args
    else:
        raise TypeError(f"URLRouter takes django.urls.path()/re_path() patterns, got {pattern!r}")
    match = pattern.pattern
    name = getattr(match, "name", None)
    if isinstance(match, RoutePattern):
        return routing.path(match._route, app, extra, name, converters=get_converters())
    if isinstance(match, RegexPattern):
        return routing.re_path(match._regex, app, extra, name)
    raise TypeError(f"URLRouter: unsupported pattern type {type(match).__name__}")


class URLRouter(routing.URLRouter):
    """The toolkit's ``URLRouter``, taking Django URL patterns (see the module docstring).

    Raises:
        TypeError: something that is not a pattern.
        ValueError: a converter name Django does not know.
    """

    def __init__(self, routes: Iterable[Any]) -> None:
        super().__init__([_convert(route) for route in routes])


def get_default_application() -> Any:
    """Import and return ``settings.ASGI_APPLICATION`` (``"module.attribute"``).

    Raises:
        ImproperlyConfigured: the setting is missing or cannot be imported.
    """
    path = getattr(settings, "ASGI_APPLICATION", None)
    if not path:
        raise ImproperlyConfigured("ASGI_APPLICATION is not set")
    module_name, _, attribute = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ImproperlyConfigured(f"Cannot import ASGI_APPLICATION module {path!r}") from exc
