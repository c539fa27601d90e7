"""Trust ``X-Forwarded-For`` / ``X-Forwarded-Proto`` from known proxies (``--proxy-headers``).

``ProxyHeadersMiddleware(app, trusted)`` is a pure ASGI middleware the runner
wraps around the app. For an ``http`` or ``websocket`` scope whose peer (the
``client`` the server saw) is trusted (``--forwarded-allow-ips``), it sets:

* ``client`` to the right-most address in ``X-Forwarded-For`` that is not
  itself trusted: every trusted proxy appends the peer it saw, so walking the
  chain from the right, the first untrusted hop is the client as far as our
  proxies can vouch for it; anything to its left was written by that client
  and can be forged. If every hop is trusted, the left-most one is the client.
  The port is the one the entry carries (``1.2.3.4:5678``, ``[::1]:80``),
  else 0: the server cannot know it.
* ``scheme`` from ``X-Forwarded-Proto`` (its right-most value, the one our
  nearest proxy set): ``https``/``wss`` make an http scope ``https`` and a
  websocket scope ``wss``; ``http``/``ws`` the plain ones.

Several ``X-Forwarded-For`` header lines are joined in order (RFC 9110 §5.3).
Anything malformed (an entry that is not an IP address, an unknown proto, bytes
that are not ASCII) leaves the scope as the server built it: never an error.
The RFC 7239 ``Forwarded`` header is not read, on purpose: a proxy that only
sets the ``X-Forwarded-*`` pair passes a client's own ``Forwarded`` through
untouched, so honouring both would let the client choose its address.

Untrusted peers and lifespan scopes cost one set lookup: ``__call__`` is a
plain function returning the app's awaitable, so no coroutine frame is added
to any request.

Imports only the standard library and ``sluiceway.asgi.types``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Iterable
from operator import itemgetter
from typing import Final

from sluiceway.asgi.types import ASGIApp, Receive, Scope, Send

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_HTTP_SCHEMES: Final = {"http": "http", "https": "https", "ws": "http", "wss": "https"}
_WS_SCHEMES: Final = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}


class TrustedHosts:
    """The peers whose forwarding headers are believed: addresses, networks or ``*``.

    Raises:
        ValueError: an entry that is neither ``*``, an IP address nor a network.
    """

    __slots__ = ("addresses", "always", "networks")

    def __init__(self, entries: Iterable[str]) -> None:
        self.always = False
        self.addresses: set[str] = set()
        self.networks: list[IPNetwork] = []
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            if entry == "*":
                self.always = True
                continue
            network = ipaddress.ip_network(entry, strict=False)
            if network.num_addresses == 1:
                # Kept as text: the hot-path test is a set lookup on the
                # string the server put in scope["client"].
                self.addresses.add(str(network.network_address))
            else:
                self.networks.append(network)

    def __contains__(self, host: object) -> bool:
        if self.always:
            return True
        if not isinstance(host, str):
            return False
        if host in self.addresses:
            return True
        if not self.networks:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if str(address) in self.addresses:  # a non-canonical spelling of a listed one
            return True
        return any(address in network for network in self.networks)

    def client_from_chain(self, chain: str) -> tuple[str, int] | None:
        """The client an ``X-Forwarded-For`` value names, or None if it is malformed."""
        hops = [hop.strip() for hop in chain.split(",")]
        if not hops or any(not hop for hop in hops):
            return None
        if self.always:
            return parse_node(hops[0])
        for hop in reversed(hops):
            node = parse_node(hop)
            if node is None:
                # Written by the client or an untrusted hop: nothing here or
                # to its left can be believed.
                return None
            if node[0] not in self:
                return node
        return parse_node(hops[0])


def parse_node(text: str) -> tuple[str, int] | None:
    """``1.2.3.4``, ``1.2.3.4:80``, ``::1``, ``[::1]`` or ``[::1]:80`` -> (address, port)."""
    port = 0
    host = text
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                return None
            port_text = rest[1:]
            if not port_text.isdigit() or len(port_text) > 5:
                return None
            port = int(port_text)
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        if not port_text.isdigit() or len(port_text) > 5:
            return None
        port = int(port_text)
    if port > 65535:
        return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    return str(address), port


class ProxyHeadersMiddleware:
    """Rewrite ``client`` and ``scheme`` from trusted proxies' headers; see the module docstring."""

    _asgi_single_callable = True  # compat.py: never mistake this for an ASGI 2 app

    __slots__ = ("_addresses", "_always", "_slow_check", "app", "trusted")

    def __init__(self, app: ASGIApp, trusted: TrustedHosts) -> None:
        self.app = app
        self.trusted = trusted
        # Per request: one C-level set lookup for the usual literal addresses;
        # networks and '*' go through TrustedHosts.__contains__.
        self._addresses = frozenset(trusted.addresses)
        self._always = trusted.always
        self._slow_check = trusted.__contains__ if trusted.networks or trusted.always else None

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        client = scope.get("client")  # lifespan scopes have none
        if client is not None:
            host = client[0]
            # Most requests, even from a proxy, carry neither header: look for
            # them with a loop that runs in C before anything else is done.
            if (
                host in self._addresses or (self._slow_check is not None and self._slow_check(host))
            ) and not _FORWARDING_NAMES.isdisjoint(map(_NAME, scope["headers"])):
                apply_forwarded(scope, self.trusted)
        elif self._always and scope["type"] in _CONNECTION_TYPES:
            # A Unix-socket peer has no address: only "*" trusts it.
            apply_forwarded(scope, self.trusted)
        return self.app(scope, receive, send)


_CONNECTION_TYPES: Final = frozenset({"http", "websocket"})
_FORWARDING_NAMES: Final = frozenset({b"x-forwarded-for", b"x-forwarded-proto"})
_NAME: Final = itemgetter(0)


def apply_forwarded(scope: Scope, trusted: TrustedHosts) -> None:
    """Set ``client``/``scheme`` in place from the scope's forwarding headers."""
    chain: list[bytes] = []
    proto: bytes | None = None
    for name, value in scope["headers"]:
        if name in _FORWARDING_NAMES:
            if name == b"x-forwarded-for":
                chain.append(value)
            else:
                proto = value  # the last line wins, as its right-most value would
    if proto is not None:
        scheme = _scheme(proto, scope["type"] == "websocket")
        if scheme is not None:
            scope["scheme"] = scheme
    if chain:
        try:
            text = b",".join(chain).decode("ascii")
        except UnicodeDecodeError:
            return
        client = trusted.client_from_chain(text)
        if client is not None:
            scope["client"] = client


def _scheme(raw: bytes, websocket: bool) -> str | None:
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return None
    value = text.rpartition(",")[2].strip().lower()
    return (_WS_SCHEMES if websocket else _HTTP_SCHEMES).get(value)
