"""The Redis layer's wire format: Lua scripts, list entries, host specs.

Kept apart from ``redis.py`` so the data layout can be read in one place.
Every script runs atomically in Redis; each documents its KEYS and ARGV.

An entry in a list is ``<13-digit deadline ms><channels>\\n<payload>``, where
``<channels>`` is one channel name or, for a group message into a process's
inbox, the comma-separated names of its members in that process. Channel
names cannot contain ``,`` or a newline (``base.py``), so the split is exact.

Invariants: the work of one script call is bounded (a large group is walked
in parts, one call each), so no call holds Redis for long; a capacity
release applies only to the counts of the epoch it was counted in.

Imports only the standard library and ``sluiceway.errors``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sluiceway.errors import ConfigError
from sluiceway.layers.redis_sentinel import (
    is_sentinel_url,
    parse_sentinel_url,
    sentinel_host_spec,
    sentinel_public_id,
)

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

# KEYS: list, counts (absent, or '', for a normal channel: on a cluster an
# extra key would have to share the list's slot)
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

# The member loop shared by both group_send scripts: serves ``members`` and
# returns those skipped because they were full. A normal channel gets its own
# entry; the members living in one process's inbox share one entry naming them
# all, so a group of 1,000 consumers in one process costs one copy of the
# payload, not 1,000 (one per call for a group walked in several).
# ARGV (every group script): now ms, deadline (13 digits), payload, ttl ms,
# default capacity. ``head`` is the start of the members' keys: the key prefix
# 'P:', or on a cluster the prefix and the hash tag of the members' bucket
# 'P:{tag}:' (``redis_cluster.py``).
LUA_SERVE = (
    LUA_TRIM
    + """
local function serve(members, capkey, head)
  local now = tonumber(ARGV[1])
  local ttl = ARGV[4]
  local full = {}
  local inboxes = {}
  local order = {}
  local default_cap = tonumber(ARGV[5])
  local overrides = redis.call('EXISTS', capkey) == 1
  for _, ch in ipairs(members) do
    local cap = default_cap
    if overrides then cap = tonumber(redis.call('HGET', capkey, ch) or ARGV[5]) end
    local bang = string.find(ch, '!', 1, true)
    if bang then
      local inbox = string.sub(ch, 1, bang)
      local names = inboxes[inbox]
      if not names then
        names = {}
        inboxes[inbox] = names
        order[#order + 1] = inbox
        trim(head .. 'c:' .. inbox, head .. 'n:' .. inbox, now)
      end
      if admit(nil, head .. 'n:' .. inbox, ch, cap) then
        names[#names + 1] = ch
      else
        full[#full + 1] = ch
      end
    else
      local key = head .. 'c:' .. ch
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
      local key = head .. 'c:' .. inbox
      redis.call('RPUSH', key, ARGV[2] .. table.concat(names, ',') .. '\\n' .. ARGV[3])
      redis.call('PEXPIRE', key, ttl)
      redis.call('PEXPIRE', head .. 'n:' .. inbox, ttl)
    end
  end
  return full
end
"""
)

# One call of a group_send on one host: the whole group when it is small
# (the common case: one call, atomic), else the next part of a walk through
# the group in score order, one call per round trip.
#
# What one call may do is bounded by a budget of work (ARGV[7]): a member
# in a process inbox costs 1 (a counter increment; its process's members
# share one pushed entry), a normal channel 3 (a push to its own list, about
# three times the time). A group whose every member would fit is served whole.
# KEYS: group zset, group capacity hash, served set (a fresh name per group_send),
# and on a cluster the bucket's probe key (see LUA_GROUP_SEND_NODE), never read:
# declared, it makes Redis refuse the call (TRYAGAIN or ASK) while the slot
# migrates, before anything runs, so no call serves half its members.
# ARGV: as LUA_SERVE, then the key head (see LUA_SERVE), then the budget,
# then the cursor the previous call returned ('', 0, '' on the first): a
# score, how many members of that score were walked, and the top score of the
# group when the walk began.
# Returns {1 if done else 0, cursor score, cursor count, top score, skipped member, ...}.
#
# The walk is exact while the group changes under it. A member that renews
# (group_add again) gets a score above the top and is met again at the end:
# the served set tells whether it was served before it moved. One that leaves
# is simply not met. Members of the cursor's score are read again from up to
# 32 before the cursor (and checked against the served set), so that as many
# of them leaving between two calls cannot shift a member past the cursor.
# Only those, and the members above the top, are looked up: the others are
# met for the first time by construction.
LUA_GROUP_SEND = (
    LUA_SERVE
    + """
local budget = tonumber(ARGV[7])
local score, offset, top = ARGV[8], tonumber(ARGV[9]), ARGV[10]
if score == '' then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]))
  if redis.call('ZCARD', KEYS[1]) * 3 <= budget then
    local result = {1, '', 0, ''}
    for _, ch in ipairs(serve(redis.call('ZRANGE', KEYS[1], 0, -1), KEYS[2], ARGV[6])) do
      result[#result + 1] = ch
    end
    return result
  end
  score, offset = '-inf', 0
  top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2]
end
local back = math.min(offset, 32)
local want = budget + back + 1
local page = redis.call(
  'ZRANGEBYSCORE', KEYS[1], score, '+inf', 'WITHSCORES', 'LIMIT', offset - back, want)
local top_n = tonumber(top)
local fresh = {}
local spent = 0
local last, run = score, offset - back
local taken = 0
for i = 1, #page, 2 do
  local ch, s = page[i], page[i + 1]
  if (i > 2 * back and tonumber(s) <= top_n) or redis.call('SISMEMBER', KEYS[3], ch) == 0 then
    local cost = string.find(ch, '!', 1, true) and 1 or 3
    if spent + cost > budget then break end
    spent = spent + cost
    fresh[#fresh + 1] = ch
  end
  if s == last then run = run + 1 else last, run = s, 1 end
  taken = i + 1
end
local done = taken == #page and #page < 2 * want
if done then
  redis.call('UNLINK', KEYS[3])
elseif #fresh > 0 then
  redis.call('SADD', KEYS[3], unpack(fresh))
  redis.call('PEXPIRE', KEYS[3], ARGV[4])
end
local result = {done and 1 or 0, last, run, top}
for _, ch in ipairs(serve(fresh, KEYS[2], ARGV[6])) do result[#result + 1] = ch end
return result
"""
)

# A group_send on one node of a Redis Cluster: every bucket of the group that
# node holds, in one call (``redis_cluster.py``). Declared keys must share one
# slot even with ``allow-cross-slot-keys``: the flag only lets the script touch
# keys of other slots on the same node. So the script declares none, and is
# given its keys as arguments; a member's list shares the slot of its bucket's
# membership, so every key it builds is on the node too.
# ARGV: as LUA_SERVE, then the budget, then per bucket on the node its group
# zset, its group capacity hash and its key head.
# First it reads each bucket's probe key, ``head .. 'probe'``, which never
# exists (no write yet): Redis refuses that read when the bucket's slot is not
# on this node any more, or is migrating (an absent key of a migrating slot is
# "elsewhere"). Then the script returns {-1} having done nothing, and the
# caller sends per bucket instead; otherwise every key the script touches is
# safely here, and it runs to the end.
# Else it returns {n, the n bucket numbers (1-based) too large for the budget
# left, to be walked one by one with LUA_GROUP_SEND, skipped member, ...}.
LUA_GROUP_SEND_NODE = (
    "#!lua flags=allow-cross-slot-keys\n"
    + LUA_SERVE
    + """
local now = tonumber(ARGV[1])
local budget = tonumber(ARGV[6])
local buckets = (#ARGV - 6) / 3
for i = 1, buckets do
  if type(redis.pcall('EXISTS', ARGV[6 + 3 * i] .. 'probe')) == 'table' then return {-1} end
end
local walk = {}
local full = {}
for i = 1, buckets do
  local g, capkey, head = ARGV[4 + 3 * i], ARGV[5 + 3 * i], ARGV[6 + 3 * i]
  redis.call('ZREMRANGEBYSCORE', g, '-inf', now)
  local n = redis.call('ZCARD', g)
  if n > 0 then
    local members = nil
    if n * 3 > budget and n <= budget then
      -- Maybe it fits at its real cost: 1 a member in an inbox, 3 otherwise.
      members = redis.call('ZRANGE', g, 0, -1)
      n = 0
      for _, ch in ipairs(members) do
        n = n + (string.find(ch, '!', 1, true) and 1 or 3)
      end
    else
      n = n * 3
    end
    if n <= budget then
      budget = budget - n
      members = members or redis.call('ZRANGE', g, 0, -1)
      for _, ch in ipairs(serve(members, capkey, head)) do full[#full + 1] = ch end
    else
      walk[#walk + 1] = i
    end
  end
end
local result = {#walk}
for _, i in ipairs(walk) do result[#result + 1] = i end
for _, ch in ipairs(full) do result[#result + 1] = ch end
return result
"""
)

# The name of the counts hash field that holds the epoch of its inbox: the
# token the inbox's process wrote when it last (re)built the counts. No channel
# name starts with '!', so it cannot collide with a channel's count.
EPOCH_FIELD = "!epoch"

# KEYS: counts hash; ARGV[1]: "channel=n,channel=n,..." (one string: packing
# thousands of arguments costs the client more than Lua spends splitting one),
# ARGV[2]: the epoch the releases belong to ('' while the process holds no
# counts of its own: then the hash has no epoch either).
# A release counted against a hash of another epoch would subtract messages
# the hash never counted (Redis restarted, or the key expired, since): it is
# refused, and 0 returned so that the process rebuilds the counts.
LUA_RELEASE = """
if (redis.call('HGET', KEYS[1], '!epoch') or '') ~= ARGV[2] then return 0 end
for ch, n in string.gmatch(ARGV[1], '([^,=]+)=(%d+)') do
  if redis.call('HINCRBY', KEYS[1], ch, -tonumber(n)) <= 0 then
    redis.call('HDEL', KEYS[1], ch)
  end
end
return 1
"""

# Rebuild the counts of an inbox, unless they are intact (the hash holds the
# epoch the process last wrote).
# KEYS: counts hash, inbox list
# ARGV: the process's current epoch ('' if none yet), the new epoch, ttl ms,
# "channel=n,..." the messages of each channel in the process's local buffer.
# A channel's count is then what the process holds plus what waits in the
# inbox for it: exactly the messages not yet received by the app. With none
# at all the hash is deleted, not left holding an epoch alone: a key nobody
# needs would outlive flush() and fill Redis with one per idle process.
# Returns 1 if rebuilt (the new epoch holds), 2 if there was nothing to count
# (no epoch holds), 0 if intact.
LUA_RESYNC = """
if ARGV[1] ~= '' and redis.call('HGET', KEYS[1], '!epoch') == ARGV[1] then return 0 end
local counts = {}
for ch, n in string.gmatch(ARGV[4], '([^,=]+)=(%d+)') do
  counts[ch] = (counts[ch] or 0) + tonumber(n)
end
for _, entry in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  local newline = string.find(entry, '\\n', 14, true)
  if newline then
    for ch in string.gmatch(string.sub(entry, 14, newline - 1), '[^,]+') do
      counts[ch] = (counts[ch] or 0) + 1
    end
  end
end
redis.call('DEL', KEYS[1])
if next(counts) == nil then return 2 end
redis.call('HSET', KEYS[1], '!epoch', ARGV[2])
for ch, n in pairs(counts) do redis.call('HSET', KEYS[1], ch, n) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""


def host_spec(host: object) -> tuple[str, dict[str, Any]]:
    """Normalise one ``hosts`` item: a URL, ``(host, port)`` or ``{"address": ..., **kw}``."""
    if isinstance(host, str):
        url = host if "://" in host else f"redis://{host}"
        if is_sentinel_url(url):
            parse_sentinel_url(url)  # a bad Sentinel URL fails here, not at first use
        return url, {}
    if isinstance(host, (tuple, list)) and len(host) == 2:
        return f"redis://{host[0]}:{int(host[1])}/0", {}
    if isinstance(host, Mapping):
        sentinel = sentinel_host_spec(host)  # channels_redis's Sentinel dict, or ours
        if sentinel is not None:
            return sentinel
        options = dict(host)
        address = options.pop("address", None)
        if address is None:
            raise ConfigError(f"redis host {host!r} needs an 'address'")
        url, _ = host_spec(address)
        return url, options
    raise ConfigError(f"redis host {host!r}: expected a URL, (host, port) or a dict")


def public_id(url: str) -> str:
    """The URL without its password: a host's identity on the hash ring."""
    if is_sentinel_url(url):
        return sentinel_public_id(url)
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
