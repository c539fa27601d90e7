"""HPACK (RFC 7541) encoding of the field blocks we send: our responses, sans-I/O.

The decoder, the static table and what both share are in ``hpack.py``. One
``Encoder`` lives per connection, with its own dynamic table (§2.3.2, §4),
and blocks must go through it in the order they cross the wire.

We are the server, so it encodes responses. Exact static-table matches
(``:status: 200``) and fields already in the dynamic table are one index;
names that carry secrets are never indexed (§7.1.3: ``set-cookie``,
``authorization``...); values that change from response to response are
sent without indexing (``content-length``, ``etag``..., as nghttp2 does), and
so is a field that would take over half the table; every other field is
indexed, so a repeated ``content-type``, ``server`` or ``date`` costs one byte
from the second response on. Literals are never Huffman-coded: what is left
after indexing (the digits of a length, a cookie) would shrink by a few bytes
for microseconds of pure-Python work each (bench/micro_hpack.py prints both).

Speed: the encoder remembers recent header lists, and single fields, whose
encoding left its table unchanged; each cache is emptied on any table change,
so a hit returns exactly what encoding again would.

Imports ``sluiceway.http2.hpack`` and the standard library; compiled with
mypyc like it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Final

from sluiceway.http2.hpack import (
    DEFAULT_TABLE_SIZE,
    ENTRY_OVERHEAD,
    FIRST_DYNAMIC,
    STATIC_TABLE,
    Field,
)

__all__ = ["Encoder"]


def _encode_integer(value: int, prefix: int, flags: int) -> bytes:
    """``value`` with an N-bit prefix (``prefix`` = 2**N - 1) under the high ``flags`` (§5.1)."""
    if value < prefix:
        return bytes((flags | value,))
    out = bytearray((flags | prefix,))
    value -= prefix
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# Encoder policy.
# RFC 7541 §7.1.3: values an attacker could guess piece by piece through the
# compressed size (CRIME) are never indexed, and intermediaries must keep them so.
_NEVER_INDEXED: Final[frozenset[bytes]] = frozenset(
    (b"authorization", b"cookie", b"proxy-authorization", b"set-cookie")
)
# Values that differ from response to response: indexing them would only push
# the useful entries out. The list nghttp2's encoder uses (hd_deflate_should_indexing),
# less the request-only names.
_NOT_INDEXED: Final[frozenset[bytes]] = frozenset(
    (b"age", b"content-length", b"content-range", b"etag", b"last-modified", b"location")
)
_STATIC_FIELDS: Final[dict[Field, int]] = {}
_STATIC_NAMES: Final[dict[bytes, int]] = {}
for _index, _field in enumerate(STATIC_TABLE, 1):
    _STATIC_FIELDS.setdefault(_field, _index)
    _STATIC_NAMES.setdefault(_field[0], _index)
# The encodings of the one-byte indexed representations (§6.1), 1..126.
_INDEXED: Final[tuple[bytes, ...]] = tuple(bytes((0x80 | i,)) for i in range(0x7F))
# A literal's one-byte length (§5.2, H = 0), 0..126.
_LENGTHS: Final[tuple[bytes, ...]] = tuple(bytes((i,)) for i in range(0x7F))
# Encoder caches, emptied whenever the table changes (at most once a second in a
# steady stream of responses: when the date changes).
_ENCODING_CACHE_ENTRIES: Final = 16
_ENCODING_CACHE_MAX_FIELDS: Final = 32
_KNOWN_FIELDS: Final = 64


class Encoder:
    """Encodes the field blocks we send on one connection (RFC 7541 §3).

    The dynamic table starts at 4096 bytes (RFC 9113 §6.5.2) and never grows
    past that, even if the peer allows more: a response's repeated fields fit,
    and the peer's memory is spared (§4.2 lets the encoder pick any size up to
    the peer's limit).
    """

    # Oldest first. The entry inserted n-th (counting from 0) has index
    # 62 + (_inserted - 1 - n) while it lives (§2.3.3).
    _entries: deque[Field]
    _inserted: int
    _fields: dict[Field, int]  # field -> insertion number of its newest live copy
    _names: dict[bytes, int]  # name -> insertion number of the newest live entry with that name
    _table_size: int
    _capacity: int
    _smallest_pending: int  # -1, or the smallest size set since the last block (§4.2)
    # What encoding gave while the table stayed as it is: lists, and single fields.
    _lists: dict[tuple[Field, ...], bytes]
    _known: dict[Field, bytes]

    def __init__(self) -> None:
        self._entries = deque()
        self._inserted = 0
        self._fields = {}
        self._names = {}
        self._table_size = 0
        self._capacity = DEFAULT_TABLE_SIZE
        self._smallest_pending = -1
        self._lists = {}
        self._known = {}

    @property
    def table_size(self) -> int:
        """Size of the dynamic table (§4.1)."""
        return self._table_size

    def dynamic_entries(self) -> list[Field]:
        """The dynamic table, newest entry (index 62) first."""
        return list(reversed(self._entries))

    def set_max_table_size(self, size: int) -> None:
        """Apply the peer's SETTINGS_HEADER_TABLE_SIZE.

        The table shrinks now if it must; the next block starts with the
        dynamic table size update(s) §4.2 requires: the smallest size set
        since the last block, then the final one.
        """
        if size < 0:
            raise ValueError("table size must not be negative")
        capacity = min(size, DEFAULT_TABLE_SIZE)
        if capacity == self._capacity and self._smallest_pending < 0:
            return
        if self._smallest_pending < 0 or capacity < self._smallest_pending:
            self._smallest_pending = capacity
        self._capacity = capacity
        self._evict(capacity)
        self._changed()

    def encode(self, headers: Iterable[Field]) -> bytes:
        """Encode one header list: (name, value) tuples of bytes, names already lowercase.

        Returns:
            The field block, to be sent in one HEADERS frame plus CONTINUATION
            frames as needed, before any other block of this connection.
        """
        fields = tuple(headers)
        cached = self._lists.get(fields)
        if cached is not None:
            return cached
        out: list[bytes] = []
        inserted = self._inserted
        if self._smallest_pending >= 0:
            if self._smallest_pending < self._capacity:
                out.append(_encode_integer(self._smallest_pending, 0x1F, 0x20))
            out.append(_encode_integer(self._capacity, 0x1F, 0x20))
            self._smallest_pending = -1
            inserted = -1  # a block that starts with an update is never repeated as it is
        known = self._known
        for field in fields:
            data = known.get(field)
            if data is None:
                data = self._encode_field(field)
            out.append(data)
        block = b"".join(out)
        if self._inserted == inserted and len(fields) <= _ENCODING_CACHE_MAX_FIELDS:
            if len(self._lists) >= _ENCODING_CACHE_ENTRIES:
                del self._lists[next(iter(self._lists))]
            self._lists[fields] = block
        return block

    def _encode_field(self, field: Field) -> bytes:
        """One field's representation; remembered until the table changes, unless it inserts."""
        name, value = field
        index = _STATIC_FIELDS.get(field)
        if index is None:
            number = self._fields.get(field)
            if number is not None:
                index = FIRST_DYNAMIC - 1 + self._inserted - number
        if index is not None:  # §6.1
            data = _INDEXED[index] if index < 0x7F else _encode_integer(index, 0x7F, 0x80)
        else:
            size = len(name) + len(value) + ENTRY_OVERHEAD
            if name in _NEVER_INDEXED:  # §6.2.3
                prefix, flags = 0x0F, 0x10
            elif name in _NOT_INDEXED or 2 * size > self._capacity:  # §6.2.2
                prefix, flags = 0x0F, 0x00
            else:  # §6.2.1
                prefix, flags = 0x3F, 0x40
            name_index = _STATIC_NAMES.get(name)
            if name_index is None:
                number = self._names.get(name)
                if number is not None:
                    name_index = FIRST_DYNAMIC - 1 + self._inserted - number
            if name_index is not None:
                head = _encode_integer(name_index, prefix, flags)
            else:
                head = bytes((flags,)) + _string_length(name) + name
            data = head + _string_length(value) + value
            if flags == 0x40:
                self._insert(field, size)
                return data
            if name in _NOT_INDEXED:
                return data  # seldom seen twice: it would only push out the fields that are
        if len(self._known) >= _KNOWN_FIELDS:
            del self._known[next(iter(self._known))]
        self._known[field] = data
        return data

    def _insert(self, field: Field, size: int) -> None:
        """Add an entry as the peer's decoder will (§4.4); the caller checked it fits."""
        self._evict(self._capacity - size)
        self._entries.append(field)
        self._fields[field] = self._inserted
        self._names[field[0]] = self._inserted
        self._inserted += 1
        self._table_size += size
        self._changed()

    def _evict(self, room: int) -> None:
        """Drop the oldest entries until the table's size is at most ``room`` (§4.3)."""
        entries = self._entries
        while self._table_size > room:
            number = self._inserted - len(entries)
            field = entries.popleft()
            name, value = field
            self._table_size -= len(name) + len(value) + ENTRY_OVERHEAD
            if self._fields.get(field) == number:
                del self._fields[field]
            if self._names.get(name) == number:
                del self._names[name]

    def _changed(self) -> None:
        """The table or its size changed: no remembered encoding holds any more."""
        self._lists.clear()
        self._known.clear()


def _string_length(data: bytes) -> bytes:
    """The length prefix of a raw (not Huffman-coded) string literal (§5.2)."""
    return _LENGTHS[len(data)] if len(data) < 0x7F else _encode_integer(len(data), 0x7F, 0)
