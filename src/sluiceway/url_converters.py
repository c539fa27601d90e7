"""Path converters for ``path()`` routes: Django's converter interface, and its five built-ins.

A converter has ``regex`` (what a ``<name:value>`` segment may match),
``to_python`` (the value the app sees; ``ValueError`` means "this route does
not match") and ``to_url``. ``CONVERTERS`` is the registry ``path()`` reads by
name; ``register_converter`` adds to it, for routes defined afterwards.

Toolkit module: imports only the standard library.
"""

from __future__ import annotations

import re
import uuid
from typing import Any, Protocol

__all__ = ["CONVERTERS", "Converter", "register_converter"]


class Converter(Protocol):
    regex: str

    def to_python(self, value: str) -> Any: ...

    def to_url(self, value: Any) -> str: ...


class StringConverter:
    regex = "[^/]+"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: Any) -> str:
        return str(value)


class IntConverter:
    regex = "[0-9]+"

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value: Any) -> str:
        return str(value)


class SlugConverter(StringConverter):
    regex = "[-a-zA-Z0-9_]+"


class UUIDConverter:
    regex = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"

    def to_python(self, value: str) -> uuid.UUID:
        return uuid.UUID(value)

    def to_url(self, value: Any) -> str:
        return str(value)


class PathConverter(StringConverter):
    regex = ".+"


CONVERTERS: dict[str, Converter] = {
    "str": StringConverter(),
    "int": IntConverter(),
    "slug": SlugConverter(),
    "uuid": UUIDConverter(),
    "path": PathConverter(),
}


def register_converter(converter: Any, type_name: str) -> None:
    """Make ``<type_name:...>`` available in ``path()`` routes defined afterwards.

    ``converter`` is a class or instance with ``regex``, ``to_python`` and
    ``to_url`` (Django's converter interface, so Django converters work).
    ``to_python`` raising ``ValueError`` means "this route does not match".
    """
    instance = converter() if isinstance(converter, type) else converter
    if not isinstance(getattr(instance, "regex", None), str) or not callable(
        getattr(instance, "to_python", None)
    ):
        raise TypeError("a converter needs a str 'regex' and a 'to_python' method")
    re.compile(instance.regex)  # fail now, not on the first request
    CONVERTERS[type_name] = instance
