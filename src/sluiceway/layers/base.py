"""The channel layer contract: the ``ChannelLayer`` Protocol, name and message rules.

Every backend (``memory``, ``redis``) derives from ``BaseChannelLayer`` so the
rules an app sees are identical whichever backend runs, and identical to
Django Channels' (``channels/layers.py``) so apps move over unchanged:

* channel and group names are ``str`` shorter than 100 characters made of
  ASCII letters, digits, ``-``, ``_`` and ``.``; a channel name may add one
  ``!`` followed by the same characters: a *process-local* channel whose part
  up to and including the ``!`` (its *non-local name*) says which process
  receives it;
* a message is a ``dict`` with a ``str`` ``"type"``; ``__asgi_channel__`` is
  reserved;
* ``capacity`` per channel, overridable by pattern (``channel_capacity``: a
  glob string or a compiled regex, first match wins, as in Channels).

Imports only the standard library and ``sluiceway.errors``; never the server.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

from sluiceway.errors import InvalidChannelName, InvalidMessage

MAX_NAME_LENGTH = 100

# Same grammar as channels/layers.py BaseChannelLayer, so names valid there are
# valid here and the other way round.
_CHANNEL_NAME = re.compile(r"^[a-zA-Z\d\-_.]+(![a-zA-Z\d\-_.]*)?$")
_GROUP_NAME = re.compile(r"^[a-zA-Z\d\-_.]+$")

RESERVED_KEY = "__asgi_channel__"

# Names already checked: a dict lookup is several times cheaper than the regex,
# and the same few names are checked on every send and receive. Bounded: it is
# simply emptied when full.
_SEEN_MAX = 4096
_seen_channel_names: dict[str, None] = {}

CapacityPatterns = (
    Mapping["str | re.Pattern[str]", int] | Iterable[tuple["str | re.Pattern[str]", int]]
)


@runtime_checkable
class ChannelLayer(Protocol):
    """What consumers, workers and apps may rely on, whatever the backend."""

    extensions: list[str]

    async def send(self, channel: str, message: dict[str, Any]) -> None: ...

    async def receive(self, channel: str) -> dict[str, Any]: ...

    async def new_channel(self, prefix: str = "specific") -> str: ...

    async def group_add(self, group: str, channel: str) -> None: ...

    async def group_discard(self, group: str, channel: str) -> None: ...

    async def group_send(self, group: str, message: dict[str, Any]) -> None: ...

    async def flush(self) -> None: ...

    async def close(self) -> None: ...


def _name_error(kind: str, name: object) -> InvalidChannelName:
    return InvalidChannelName(
        f"{kind} name {name!r} is invalid: it must be a str shorter than {MAX_NAME_LENGTH}"
        " characters of ASCII letters, digits, hyphens, underscores or periods"
        + (" (and, for a process-local channel, one '!')" if kind == "channel" else "")
    )


def require_valid_channel_name(name: object) -> str:
    """Return ``name`` if it is a valid channel name.

    Raises:
        InvalidChannelName: wrong type, too long or a forbidden character.
    """
    if type(name) is str and name in _seen_channel_names:
        return name
    if type(name) is not str or len(name) >= MAX_NAME_LENGTH or not _CHANNEL_NAME.match(name):
        raise _name_error("channel", name)
    if len(_seen_channel_names) >= _SEEN_MAX:
        _seen_channel_names.clear()
    _seen_channel_names[name] = None
    return name


def require_valid_group_name(name: object) -> str:
    """Return ``name`` if it is a valid group name.

    Raises:
        InvalidChannelName: wrong type, too long or a forbidden character.
    """
    if type(name) is not str or len(name) >= MAX_NAME_LENGTH or not _GROUP_NAME.match(name):
        raise _name_error("group", name)
    return name


def require_valid_message(message: object) -> dict[str, Any]:
    """Return ``message`` if it is a dict with a str ``type`` and no reserved key.

    Raises:
        InvalidMessage: anything else.
    """
    if not isinstance(message, dict):
        raise InvalidMessage(f"a layer message must be a dict, got {type(message).__name__}")
    kind = message.get("type")
    if not isinstance(kind, str):
        raise InvalidMessage("a layer message needs a 'type' key holding a str")
    if RESERVED_KEY in message:
        raise InvalidMessage(f"the {RESERVED_KEY!r} key is reserved for the layer")
    return message


def non_local_name(name: str) -> str:
    """The part of a process-local channel name up to and including ``!``.

    A name without ``!`` is its own non-local name. Senders and receivers both
    shard and route on this, so a process's channels all live in one inbox.
    """
    bang = name.find("!")
    return name if bang < 0 else name[: bang + 1]


def compile_capacities(
    channel_capacity: CapacityPatterns | None,
) -> list[tuple[re.Pattern[str], int]]:
    """Turn ``{glob-or-regex: capacity}`` into an ordered list of compiled patterns."""
    if not channel_capacity:
        return []
    items = channel_capacity.items() if isinstance(channel_capacity, Mapping) else channel_capacity
    compiled: list[tuple[re.Pattern[str], int]] = []
    for pattern, capacity in items:
        if not isinstance(capacity, int) or capacity <= 0:
            raise ValueError(f"capacity for {pattern!r} must be a positive int, got {capacity!r}")
        if isinstance(pattern, re.Pattern):
            compiled.append((pattern, capacity))
        else:
            compiled.append((re.compile(fnmatch.translate(pattern)), capacity))
    return compiled


class BaseChannelLayer:
    """Shared configuration and checks; backends implement the I/O.

    Args:
        expiry_s: seconds a message may wait in a channel; older ones are
            never delivered.
        group_expiry_s: seconds a group membership lasts unless renewed by
            another ``group_add``.
        capacity: messages a channel holds before ``send`` raises ``ChannelFull``.
        channel_capacity: per-channel overrides, ``{glob or compiled regex: capacity}``;
            the first match wins.
    """

    extensions: list[str] = ["groups", "flush"]  # noqa: RUF012 - the Channels API is a list

    def __init__(
        self,
        *,
        expiry_s: float = 60.0,
        group_expiry_s: float = 86400.0,
        capacity: int = 100,
        channel_capacity: CapacityPatterns | None = None,
    ) -> None:
        if expiry_s <= 0:
            raise ValueError("expiry_s must be positive")
        if group_expiry_s <= 0:
            raise ValueError("group_expiry_s must be positive")
        if not isinstance(capacity, int) or capacity <= 0:
            raise ValueError("capacity must be a positive int")
        self.expiry_s = float(expiry_s)
        self.group_expiry_s = float(group_expiry_s)
        self.capacity = capacity
        self.channel_capacity = compile_capacities(channel_capacity)
        # Members skipped by group_send because their channel was full.
        self.group_send_full_skips = 0

    def get_capacity(self, channel: str) -> int:
        """The capacity of ``channel``: the first matching override, else the default."""
        for pattern, capacity in self.channel_capacity:
            if pattern.match(channel):
                return capacity
        return self.capacity
