"""Redis Sentinel host specs: parsing them, and the pools that follow the primary.

A Sentinel-managed Redis is one ``hosts`` entry, written either as a URL::

    redis+sentinel://[[user]:password@]host1:26379,host2:26379/SERVICE[/db]

(``rediss+sentinel://`` for TLS to the primary) or as a dict, ours or the
one ``channels_redis`` 4.3 takes (``utils.create_pool``)::

    {"sentinels": [("host1", 26379), ...], "master_name": "SERVICE",
     "sentinel_kwargs": {...}, "db": 0, "password": ..., **redis options}

(``service`` is accepted for ``master_name``). Both normalise to the URL form
plus a dict of options, so the rest of the layer handles a Sentinel entry as
it handles a plain URL: the URL, without its password, is the entry's place
on the hash ring, identical in every process.

Every connection made from a Sentinel entry is a ``SentinelManagedConnection``:
each (re)connection asks the sentinels for the primary's address first, so a
connection lost in a failover comes back on the promoted replica, and a write
refused as ``READONLY`` (an old primary demoted under us) drops the
connection and asks again. The layer's own retry loops (``Backoff``) drive the
reconnections; while no primary is known (the sentinels have not agreed yet)
a connection attempt fails fast with ``MasterNotFoundError``, a
``ConnectionError``, so callers see the outage exactly as a dead server.

Imports only the standard library and ``sluiceway.errors`` (``redis_conn.py``
builds the pools).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from sluiceway.errors import ConfigError

SCHEMES = ("redis+sentinel", "rediss+sentinel")
_DEFAULT_SENTINEL_PORT = 26379


def is_sentinel_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in SCHEMES


def parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], str, dict[str, Any]]:
    """``(sentinels, service, primary connection options)`` of a Sentinel URL.

    Raises:
        ConfigError: no sentinel, no service name, or a bad port or db.
    """
    scheme, _, rest = url.partition("://")
    netloc, _, path = rest.partition("/")
    options: dict[str, Any] = {}
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, _, password = userinfo.partition(":")
        if user:
            options["username"] = unquote(user)
        if password:
            options["password"] = unquote(password)
    sentinels: list[tuple[str, int]] = []
    for item in netloc.split(","):
        host, _, port = item.strip().rpartition(":") if ":" in item else (item.strip(), "", "")
        try:
            sentinels.append((host.strip("[]"), int(port) if port else _DEFAULT_SENTINEL_PORT))
        except ValueError:
            raise ConfigError(f"redis sentinel URL {url!r}: bad port in {item!r}") from None
    if not sentinels or not all(host for host, _ in sentinels):
        raise ConfigError(f"redis sentinel URL {url!r}: no sentinel host")
    service, _, db = path.strip("/").partition("/")
    if not service:
        raise ConfigError(f"redis sentinel URL {url!r}: expected .../SERVICE[/db]")
    try:
        options["db"] = int(db) if db else 0
    except ValueError:
        raise ConfigError(f"redis sentinel URL {url!r}: bad db {db!r}") from None
    if scheme.lower() == "rediss+sentinel":
        options["ssl"] = True
    return sentinels, service, options


def sentinel_host_spec(host: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """A dict with ``sentinels`` as ``(URL, options)``; ``None`` for any other dict.

    Raises:
        ConfigError: ``sentinels`` without a service name, or a bad sentinel.
    """
    if "sentinels" not in host:
        return None
    options = dict(host)
    sentinels = options.pop("sentinels")
    service = options.pop("master_name", None) or options.pop("service", None)
    if not isinstance(service, str) or not service:
        raise ConfigError(f"redis host {dict(host)!r}: 'sentinels' needs a 'master_name'")
    items: list[str] = []
    for sentinel in sentinels if not isinstance(sentinels, str) else [sentinels]:
        if isinstance(sentinel, str):
            items.append(sentinel)
        elif isinstance(sentinel, (tuple, list)) and len(sentinel) == 2:
            items.append(f"{sentinel[0]}:{int(sentinel[1])}")
        else:
            raise ConfigError(f"redis sentinel {sentinel!r}: expected (host, port) or 'host:port'")
    db = int(options.pop("db", 0))
    scheme = "rediss+sentinel" if options.pop("ssl", False) else "redis+sentinel"
    return f"{scheme}://{','.join(items)}/{service}/{db}", options


def sentinel_public_id(url: str) -> str:
    """The URL without its user and password: the entry's place on the hash ring."""
    scheme, _, rest = url.partition("://")
    netloc, _, path = rest.partition("/")
    return f"{scheme.lower()}://{netloc.rpartition('@')[2]}/{path}"
