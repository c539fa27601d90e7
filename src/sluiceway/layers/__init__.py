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
   TLS), ``redis+sentinel://h1:26379,h2:26379/SERVICE/db`` (a Sentinel-managed
   primary), ``redis+pubsub://...`` (the pub/sub layer on the hosts that
   follow, ``redis+pubsub+sentinel://`` over Sentinel, ``redis+pubsub+cluster://``
   on a Redis Cluster, sharded),
   ``redis+cluster://h1:7000,h2:7001`` (seed nodes of a Redis Cluster) or ``none``;
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
    "check_configured_layers",
    "get_channel_layer",
    "layer_config_from_url",
]

DEFAULT_CHANNEL_LAYER = "default"
ENV_VAR = "SLUICEWAY_CHANNEL_LAYER"

_MEMORY = "sluiceway.layers.memory.InMemoryChannelLayer"
_REDIS = "sluiceway.layers.redis.RedisChannelLayer"
_PUBSUB = "sluiceway.layers.redis_pubsub.RedisPubSubChannelLayer"
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
    "redis_pubsub": _PUBSUB,
    "sluiceway.layers.RedisPubSubChannelLayer": _PUBSUB,
    "channels_redis.pubsub.RedisPubSubChannelLayer": _PUBSUB,
}
# Channels' CONFIG keys that are spelt with units here.
_RENAMED_OPTIONS = {"expiry": "expiry_s", "group_expiry": "group_expiry_s"}
_DISABLED = {"", "none", "off", "disabled", "false", "0"}
# A missing top-level package, and the extra of ours that installs it.
_EXTRAS = {"redis": "redis", "hiredis": "redis", "cryptography": "crypto"}


def __getattr__(name: str) -> Any:
    # Lazy, so that "import sluiceway.layers" never imports redis.
    if name == "RedisChannelLayer":
        return importlib.import_module("sluiceway.layers.redis").RedisChannelLayer
    if name == "RedisPubSubChannelLayer":
        return importlib.import_module("sluiceway.layers.redis_pubsub").RedisPubSubChannelLayer
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
    scheme = url.split("://", 1)[0].lower()
    if scheme.startswith("redis+pubsub"):
        # redis+pubsub://host:6379/0[,...], redis+pubsub+sentinel://... and
        # redis+pubsub+cluster://h1:7000,h2:7001: the same hosts as the queue
        # layer's URLs (cluster=True included), on the pub/sub layer.
        inner = layer_config_from_url("redis" + url[len("redis+pubsub") :])
        if inner is not None and inner["BACKEND"] == _REDIS:
            return {"BACKEND": _PUBSUB, "CONFIG": inner["CONFIG"]}
    if scheme in ("redis+cluster", "rediss+cluster"):
        # Seed nodes of one Redis Cluster: redis+cluster://h1:7000,h2:7001
        seeds = [p.strip() for p in url.split("://", 1)[1].split(",") if p.strip()]
        if not seeds:
            raise ConfigError(f"{ENV_VAR}={url!r}: name at least one seed node")
        hosts = [f"{scheme.partition('+')[0]}://{seed}" for seed in seeds]
        return {"BACKEND": _REDIS, "CONFIG": {"hosts": hosts, "cluster": True}}
    if scheme in ("redis+sentinel", "rediss+sentinel"):
        # One entry: the commas separate sentinels, not hosts.
        return {"BACKEND": _REDIS, "CONFIG": {"hosts": [url]}}
    parts = [p.strip() for p in url.split(",") if p.strip()]
    if parts and parts[0].startswith(("redis://", "rediss://", "unix://")):
        scheme = parts[0].split("://", 1)[0]
        hosts = [p if "://" in p else f"{scheme}://{p}" for p in parts]
        return {"BACKEND": _REDIS, "CONFIG": {"hosts": hosts}}
    raise ConfigError(
        f"{ENV_VAR}={url!r}: expected memory://, redis://host:port/db[,redis://...],"
        " rediss://..., redis+sentinel://h1:26379,h2:26379/SERVICE/db, redis+pubsub://...,"
        " redis+cluster://h1:7000,h2:7001, redis+pubsub+cluster://..."
        " or none"
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

    def built(self) -> dict[str, ChannelLayer]:
        """The layers built so far, by alias (the server's metrics read their ``stats()``)."""
        return dict(self._backends)

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
    def explicit(self) -> bool:
        """True when some source configures the layers (``configure``, Django, ``ENV_VAR``).

        False means only the implicit in-memory default, which cannot fail.
        """
        return (
            self._explicit is not None
            or _django_channel_layers() is not None
            or ENV_VAR in os.environ
        )

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
        path = _BACKEND_ALIASES.get(backend, backend)
        cls = _import_backend(alias, path)
        try:
            layer: ChannelLayer = cls(**config)
        except ImportError as exc:  # an optional package the CONFIG needs (encryption)
            raise ConfigError(_missing_package(alias, path, exc)) from exc
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
    except ImportError as exc:
        raise ConfigError(_missing_package(alias, path, exc)) from exc
    except (AttributeError, ValueError) as exc:
        raise ConfigError(f"channel layer {alias!r}: cannot import BACKEND {path!r}") from exc


def _missing_package(alias: str, path: str, exc: ImportError) -> str:
    """One line for a layer that cannot load: what is missing, and what installs it."""
    missing = (exc.name or "").partition(".")[0]
    extra = _EXTRAS.get(missing)
    if extra is not None:
        return (
            f"channel layer {alias!r} ({path}) needs the {missing!r} package:"
            f" pip install 'sluiceway[{extra}]'"
        )
    return f"channel layer {alias!r}: cannot import BACKEND {path!r}: {type(exc).__name__}: {exc}"


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


def check_configured_layers() -> list[str]:
    """Build every channel layer configured, so that one that cannot load fails now.

    The server calls this before lifespan startup: a configured layer whose
    package is missing (the Redis layer without ``redis``) or whose CONFIG is
    wrong is then a one-line start-up error, not a 500 on every WebSocket.
    Only the implicit in-memory default (nothing configured) is left alone.
    The layers built stay cached for the app; no connection is opened.

    Returns:
        The aliases built.

    Raises:
        ConfigError: a layer cannot be built; the message names the alias
            and, for a missing package, the ``pip install`` that fixes it.
    """
    if not channel_layers.explicit:
        return []
    built = []
    for alias, entry in channel_layers.configs.items():
        if entry is None or (isinstance(entry, str) and layer_config_from_url(entry) is None):
            continue  # disabled
        channel_layers[alias]
        built.append(alias)
    return built


def get_channel_layer(alias: str = DEFAULT_CHANNEL_LAYER) -> ChannelLayer | None:
    """The layer configured as ``alias``, or ``None`` if there is none.

    Raises:
        ConfigError: the alias is configured but its configuration is wrong.
    """
    try:
        return channel_layers[alias]
    except KeyError:
        return None
