"""Channel layers: the public API and the registry of configured layers.

``get_channel_layer(alias="default")`` returns the layer configured under
``alias``, building it on first use, or ``None`` when that alias is disabled
or unknown. Where the configuration comes from, first match wins:

1. ``channel_layers.configure(...)``: a settings object with a
   ``CHANNEL_LAYERS`` attribute, or a dict in Channels' format
   ``{"default": {"BACKEND": ..., "CONFIG": {...}}}`` (a URL string or
   ``None`` may stand in for an alias's dict);
2. Django's ``settings.CHANNEL_LAYERS``, if Django is already imported and
   configured (so a Channels project moves over unchanged);
3. the ``SLUICEWAY_CHANNEL_LAYER`` environment variable: ``memory://``,
   ``redis://host:port/db`` (several hosts comma-separated, ``rediss://`` for
   TLS) or ``none``;
4. otherwise the ``default`` alias is an in-memory layer: the embedded
   default for one process. Set ``SLUICEWAY_CHANNEL_LAYER=none`` to have no
   layer at all (``get_channel_layer()`` then returns ``None``; consumers
   must cope with that, and do).

Layers are toolkit code: importing this package never imports the server,
and ``redis`` is imported only when a Redis layer is built.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping
from typing import Any

from sluiceway.errors import ConfigError
from sluiceway.layers.base import BaseChannelLayer, ChannelLayer
from sluiceway.layers.memory import InMemoryChannelLayer

__all__ = [
    "DEFAULT_CHANNEL_LAYER",
    "BaseChannelLayer",
    "ChannelLayer",
    "ChannelLayerManager",
    "InMemoryChannelLayer",
    "RedisChannelLayer",
    "channel_layers",
    "get_channel_layer",
    "layer_config_from_url",
]

DEFAULT_CHANNEL_LAYER = "default"
ENV_VAR = "SLUICEWAY_CHANNEL_LAYER"

_MEMORY = "sluiceway.layers.memory.InMemoryChannelLayer"
_REDIS = "sluiceway.layers.redis.RedisChannelLayer"
# Backend names accepted for BACKEND, Channels' own paths included so that a
# Channels settings dict works as is.
_BACKEND_ALIASES = {
    "memory": _MEMORY,
    "inmemory": _MEMORY,
    "redis": _REDIS,
    "sluiceway.layers.InMemoryChannelLayer": _MEMORY,
    "sluiceway.layers.RedisChannelLayer": _REDIS,
    "channels.layers.InMemoryChannelLayer": _MEMORY,
    "channels_redis.core.RedisChannelLayer": _REDIS,
    "channels_redis.pubsub.RedisPubSubChannelLayer": _REDIS,
}
# Channels' CONFIG keys that are spelt with units here.
_RENAMED_OPTIONS = {"expiry": "expiry_s", "group_expiry": "group_expiry_s"}
_DISABLED = {"", "none", "off", "disabled", "false", "0"}


def __getattr__(name: str) -> Any:
    # Lazy, so that "import sluiceway.layers" never imports redis.
    if name == "RedisChannelLayer":
        return importlib.import_module("sluiceway.layers.redis").RedisChannelLayer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def layer_config_from_url(url: str) -> dict[str, Any] | None:
    """Turn ``memory://`` / ``redis://h1,redis://h2`` / ``none`` into a layer dict.

    Raises:
        ConfigError: an unknown scheme.
    """
    url = url.strip()
    if url.lower() in _DISABLED:
        return None
    if url.startswith("memory://"):
        return {"BACKEND": _MEMORY, "CONFIG": {}}
    parts = [p.strip() for p in url.split(",") if p.strip()]
    if parts and parts[0].startswith(("redis://", "rediss://", "unix://")):
        scheme = parts[0].split("://", 1)[0]
        hosts = [p if "://" in p else f"{scheme}://{p}" for p in parts]
        return {"BACKEND": _REDIS, "CONFIG": {"hosts": hosts}}
    raise ConfigError(
        f"{ENV_VAR}={url!r}: expected memory://, redis://host:port/db[,redis://...],"
        " rediss://... or none"
    )


class ChannelLayerManager:
    """Builds and caches one layer per alias from the resolved configuration."""

    def __init__(self) -> None:
        self._explicit: dict[str, Any] | None = None
        self._backends: dict[str, ChannelLayer] = {}

    def configure(self, settings: object | Mapping[str, Any] | None = None) -> None:
        """Use ``settings`` (an object with ``CHANNEL_LAYERS``, or that dict itself).

        Layers already built are dropped (not closed); call ``close_all`` first
        if they hold connections.
        """
        if settings is None:
            self._explicit = None
        elif isinstance(settings, Mapping):
            self._explicit = dict(settings)
        elif hasattr(settings, "CHANNEL_LAYERS"):
            self._explicit = dict(settings.CHANNEL_LAYERS)
        else:
            raise ConfigError("channel layer settings need a CHANNEL_LAYERS attribute or a dict")
        self._backends.clear()

    def drop_built(self) -> None:
        """Forget the layers built so far and keep the configuration source.

        The next lookup builds them anew from it: ``sluiceway.django`` calls
        this when Django's ``CHANNEL_LAYERS`` setting changes. The dropped
        layers are not closed (this may run outside any event loop).
        """
        self._backends.clear()

    def reset(self) -> None:
        """Forget the configuration and every built layer (tests use this)."""
        self._explicit = None
        self._backends.clear()

    @property
    def configs(self) -> dict[str, Any]:
        if self._explicit is not None:
            return self._explicit
        django_layers = _django_channel_layers()
        if django_layers is not None:
            return django_layers
        env = os.environ.get(ENV_VAR)
        if env is not None:
            return {DEFAULT_CHANNEL_LAYER: layer_config_from_url(env)}
        return {DEFAULT_CHANNEL_LAYER: {"BACKEND": _MEMORY, "CONFIG": {}}}

    def __contains__(self, alias: object) -> bool:
        if not isinstance(alias, str):
            return False
        return alias in self._backends or self.configs.get(alias) is not None

    def __getitem__(self, alias: str) -> ChannelLayer:
        layer = self._backends.get(alias)
        if layer is None:
            layer = self._backends[alias] = self.make_backend(alias)
        return layer

    def set(self, alias: str, layer: ChannelLayer | None) -> ChannelLayer | None:
        """Install ``layer`` under ``alias`` (``None`` removes it); returns the old one."""
        old = self._backends.pop(alias, None)
        if layer is not None:
            self._backends[alias] = layer
        return old

    def make_backend(self, alias: str) -> ChannelLayer:
        """Build the layer for ``alias``.

        Raises:
            KeyError: ``alias`` is not configured, or is disabled.
            ConfigError: the configuration is wrong.
        """
        entry = self.configs.get(alias)
        if isinstance(entry, str):
            entry = layer_config_from_url(entry)
        if entry is None:
            raise KeyError(alias)
        if not isinstance(entry, Mapping):
            raise ConfigError(f"channel layer {alias!r}: expected a dict or a URL")
        backend = entry.get("BACKEND")
        if not isinstance(backend, str):
            raise ConfigError(f"channel layer {alias!r}: no BACKEND given")
        config = {_RENAMED_OPTIONS.get(k, k): v for k, v in (entry.get("CONFIG") or {}).items()}
        cls = _import_backend(alias, _BACKEND_ALIASES.get(backend, backend))
        try:
            layer: ChannelLayer = cls(**config)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"channel layer {alias!r}: {exc}") from exc
        return layer

    async def close_all(self) -> None:
        """Close every built layer (releases Redis connections)."""
        backends = list(self._backends.values())
        self._backends.clear()
        for layer in backends:
            await layer.close()


def _import_backend(alias: str, path: str) -> Any:
    module_name, _, attr = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"channel layer {alias!r}: cannot import BACKEND {path!r}") from exc


def _django_channel_layers() -> dict[str, Any] | None:
    conf = sys.modules.get("django.conf")
    if conf is None:
        return None
    settings = getattr(conf, "settings", None)
    try:
        if settings is None or not settings.configured:
            return None
        layers = getattr(settings, "CHANNEL_LAYERS", None)
    except Exception:  # a half-configured Django must not break layer lookup
        return None
    return dict(layers) if layers else None


channel_layers = ChannelLayerManager()


def get_channel_layer(alias: str = DEFAULT_CHANNEL_LAYER) -> ChannelLayer | None:
    """The layer configured as ``alias``, or ``None`` if there is none.

    Raises:
        ConfigError: the alias is configured but its configuration is wrong.
    """
    try:
        return channel_layers[alias]
    except KeyError:
        return None
