"""The Redis layer's wire format: Lua scripts, list entries, host specs.

Kept apart from ``redis.py`` so the data layout can be read in one place.
Every script runs atomically in Redis; each documents its KEYS and ARGV.

An entry in a list is ``<13-digit deadline ms><channels>\\n<payload>``, where
``<channels>`` is one channel name or, for a group message into a process's
inbox, the comma-separated names of its members in that process. Channel
names cannot contain ``,`` or a newline (``base.py``), so the split is exact.

Imports only the standard library.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sluiceway.errors import ConfigError

# Shared Lua: drop expired entries at the head of a list, releasing their
# capacity count when the list is an inbox.
LUA_TRIM = """
local function trim(key, counts, now)
  local head = redis.call('LINDEX', key, 0)
  -- An entry we did not write (no deadline) is dropped like an expired one.
  while head and (tonumber(string.sub(head, 1, 13)) or 0) <= now do
    redis.call('LPOP', key)
    local newline = string.find(head, '\\n', 14, true)
    if counts and newline then
      for ch in string.gmatch(string.sub(head, 14, newline - 1), '[^,]+') do
        if redis.call('HINCRBY', counts, ch, -1) <= 0 then redis.call('HDEL', counts, ch) end
      end
    end
    head = redis.call('LINDEX', key, 0)
  end
end
local function admit(key, counts, ch, cap)
  if counts then
    -- One call in the common case; undone in the rare full one.
    if redis.call('HINCRBY', counts, ch, 1) > cap then
      redis.call('HINCRBY', counts, ch, -1)
      return false
    end
    return true
  end
  return redis.call('LLEN', key) < cap
end
"""

# KEYS: list, counts ('' for a normal channel)
# ARGV: now ms, capacity, entry, ttl ms, channel
LUA_SEND = (
    LUA_TRIM
    + """
local counts = KEYS[2]
if counts == '' then counts = nil end
trim(KEYS[1], counts, tonumber(ARGV[1]))
if not admit(KEYS[1], counts, ARGV[5], tonumber(ARGV[2])) then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if counts then redis.call('PEXPIRE', counts, ARGV[4]) end
return 1
"""
)

# KEYS: group zset, group capacity hash
# ARGV: now ms, deadline (13 digits), payload, ttl ms, default capacity, key prefix 'P:'
# A normal channel gets its own entry; the members living in one process's
# inbox share one entry naming them all, so a group of 1,000 consumers in one
# process costs one copy of the payload, not 1,000.
# Returns the members skipped because they were full.
LUA_GROUP_SEND = (
    LUA_TRIM
    + """
local now = tonumber(ARGV[1])
local ttl = ARGV[4]
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
local full = {}
local inboxes = {}
local order = {}
local default_cap = tonumber(ARGV[5])
local overrides = redis.call('EXISTS', KEYS[2]) == 1
for _, ch in ipairs(members) do
  local cap = default_cap
  if overrides then cap = tonumber(redis.call('HGET', KEYS[2], ch) or ARGV[5]) end
  local bang = string.find(ch, '!', 1, true)
  if bang then
    local inbox = string.sub(ch, 1, bang)
    local names = inboxes[inbox]
    if not names then
      names = {}
      inboxes[inbox] = names
      order[#order + 1] = inbox
      trim(ARGV[6] .. 'c:' .. inbox, ARGV[6] .. 'n:' .. inbox, now)
    end
    if admit(nil, ARGV[6] .. 'n:' .. inbox, ch, cap) then
      names[#names + 1] = ch
    else
      full[#full + 1] = ch
    end
  else
    local key = ARGV[6] .. 'c:' .. ch
    trim(key, nil, now)
    if admit(key, nil, ch, cap) then
      redis.call('RPUSH', key, ARGV[2] .. ch .. '\\n' .. ARGV[3])
      redis.call('PEXPIRE', key, ttl)
    else
      full[#full + 1] = ch
    end
  end
end
for _, inbox in ipairs(order) do
  local names = inboxes[inbox]
  if #names > 0 then
    local key = ARGV[6] .. 'c:' .. inbox
    redis.call('RPUSH', key, ARGV[2] .. table.concat(names, ',') .. '\\n' .. ARGV[3])
    redis.call('PEXPIRE', key, ttl)
    redis.call('PEXPIRE', ARGV[6] .. 'n:' .. inbox, ttl)
  end
end
return full
"""
)

# KEYS: counts hash; ARGV[1]: "channel=n,channel=n,..." (one string: packing
# thousands of arguments costs the client more than Lua spends splitting one).
LUA_RELEASE = """
for ch, n in string.gmatch(ARGV[1], '([^,=]+)=(%d+)') do
  if redis.call('HINCRBY', KEYS[1], ch, -tonumber(n)) <= 0 then
    redis.call('HDEL', KEYS[1], ch)
  end
end
return 0
"""


def host_spec(host: object) -> tuple[str, dict[str, Any]]:
    """Normalise one ``hosts`` item: a URL, ``(host, port)`` or ``{"address": ..., **kw}``."""
    if isinstance(host, str):
        url = host if "://" in host else f"redis://{host}"
        return url, {}
    if isinstance(host, (tuple, list)) and len(host) == 2:
        return f"redis://{host[0]}:{int(host[1])}/0", {}
    if isinstance(host, Mapping):
        options = dict(host)
        address = options.pop("address", None)
        if address is None:
            raise ConfigError(f"redis host {host!r} needs an 'address'")
        url, _ = host_spec(address)
        return url, options
    raise ConfigError(f"redis host {host!r}: expected a URL, (host, port) or a dict")


def public_id(url: str) -> str:
    """The URL without its password: a host's identity on the hash ring."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def encode_entry(deadline_ms: int, channel: str, payload: bytes) -> bytes:
    return b"%013d%s\n%s" % (deadline_ms, channel.encode("ascii"), payload)


def parse_entry(entry: bytes) -> tuple[float, str, bytes]:
    """``(deadline in epoch seconds, channels, payload)``.

    Raises:
        ValueError, UnicodeDecodeError: not an entry this layer wrote.
    """
    newline = entry.index(b"\n", 13)
    return int(entry[:13]) / 1000.0, entry[13:newline].decode("ascii"), entry[newline + 1 :]
