"""HPACK (RFC 7541): the field-block codec of the HTTP/2 engine, sans-I/O.

``Decoder`` turns the field blocks a client sends into ``(name, value)`` bytes
pairs; ``Encoder`` (``hpack_encoder.py``) turns our responses into blocks.
Each keeps its own dynamic table (§2.3.2, §4), so one of each lives per
connection, and blocks must go through them in the order they cross the wire.

Decoder: strict RFC 7541. Any malformed block raises ``HPACKError`` (a
connection error COMPRESSION_ERROR, RFC 9113 §4.3): index 0 or past the
tables (§2.3.3, §6.1), a truncated representation, an integer past 2**32 - 1
or longer than 5 continuation bytes (§5.1 leaves the limit to us), a bad
Huffman string (§5.2), a dynamic table size update after a field or above
``max_table_size``, or missing after that setting was lowered (§4.2, §6.3).
A block whose decoded list passes ``max_header_list_size`` (counted as RFC
9113 §6.5.2) raises ``HeaderListTooLarge`` only after the whole block was
processed, so the dynamic table stays in sync and the connection can go on
(RFC 9113 §10.5.1); past the limit no more fields are kept. Work and memory
are linear in the block's size (an HPACK bomb cannot multiply them): every
representation consumes at least one byte, an indexed field shares the
table's tuple instead of copying it, and a literal is a slice of the block
(Huffman expands it at most 8/5).

Encoder: ``hpack_encoder.py``, with this module's static table.

Speed: the decoder keeps the static and dynamic tables in one list indexed by
the HPACK index itself, and remembers the result of recent blocks that left
the dynamic table unchanged (what h2load and polling clients send: the same
request again, all indexed or literals without indexing). Every such cache
holds a pure function of its key and of a table that has not changed since:
each is emptied on any table change, so a hit returns exactly what decoding
again would. Huffman strings are decoded once per connection while they
repeat (a small per-decoder cache; per connection, so that one client cannot
learn from timing what another sent).

Imports ``sluiceway.http2.huffman`` and the standard library. Plain classes
with typed attributes, bytes in and out: mypyc can compile this module (and
then checks the argument types: ``decode`` takes ``bytes`` only).
"""

from __future__ import annotations

from typing import Final

from sluiceway.http2 import huffman

__all__ = [
    "STATIC_TABLE",
    "Decoder",
    "HPACKError",
    "HeaderListTooLarge",
]

Field = tuple[bytes, bytes]


# Plain exceptions, as the connection code expects: it maps them to the wire itself
# (COMPRESSION_ERROR; 431 or RST_STREAM). Not ProtocolError subclasses with an h2_error
# attribute: a mypyc-compiled subclass of a class from an uncompiled module loses such
# class attribute overrides, and the mapping would silently change once compiled.
class HPACKError(Exception):
    """The block cannot be decoded: a connection error COMPRESSION_ERROR (RFC 9113 §4.3)."""


class HeaderListTooLarge(Exception):
    """The decoded list passed max_header_list_size (RFC 9113 §10.5.1).

    The stream/connection layer answers 431 or RST_STREAM; the decoder state
    stays consistent (the whole block was still processed, so the dynamic
    table is in sync).
    """


# RFC 7541 Appendix A. Index i is STATIC_TABLE[i - 1].
STATIC_TABLE: Final[tuple[Field, ...]] = (
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
)
FIRST_DYNAMIC: Final = len(STATIC_TABLE) + 1  # 62: the newest dynamic entry (§2.3.3)
# RFC 9113 §6.5.2: SETTINGS_HEADER_TABLE_SIZE starts at 4096 for both sides.
DEFAULT_TABLE_SIZE: Final = 4096
# RFC 7541 §4.1: an entry's size is its name and value lengths plus 32.
ENTRY_OVERHEAD: Final = 32

# RFC 7541 §5.1 leaves integer limits to the implementation ("MUST be treated
# as decoding errors"). Every integer here is an index, a length or a table
# size, all far below 2**32; 5 continuation bytes hold 35 bits, enough for any
# such value written without padding, and bound the work on zero padding (the
# hpack library stops at the same count).
_MAX_INTEGER: Final = 2**32 - 1
_MAX_CONTINUATION_SHIFT: Final = 28  # the 5th continuation byte has shift 28

# Decoder caches, per connection. Bounded so that a hostile peer can make them
# hold at most entries x (key + decoded text, at most 8/5 of the key): about
# 11 kB for blocks and 5 kB for strings. A repeated request block is tens of
# bytes once its fields are indexed.
_BLOCK_CACHE_ENTRIES: Final = 8
_BLOCK_CACHE_MAX_BLOCK: Final = 512
_HUFFMAN_CACHE_ENTRIES: Final = 16
_HUFFMAN_CACHE_MAX_STRING: Final = 128


def _read_integer(block: bytes, pos: int, value: int) -> tuple[int, int]:
    """The continuation bytes of an integer whose prefix was all ones (§5.1).

    ``value`` is the prefix's value (2**N - 1) and ``pos`` the first byte after
    it. Returns the integer and the position after its last byte.
    """
    end = len(block)
    shift = 0
    while True:
        if pos >= end:
            raise HPACKError("truncated integer")
        byte = block[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        if byte < 0x80:
            break
        if shift == _MAX_CONTINUATION_SHIFT:
            raise HPACKError("integer encoding too long")
        shift += 7
    if value > _MAX_INTEGER:
        raise HPACKError("integer too large")
    return value, pos


class Decoder:
    """Decodes the field blocks one peer sends on one connection (RFC 7541 §3).

    Args:
        max_table_size: the SETTINGS_HEADER_TABLE_SIZE we advertised (set it
            to the new value once the peer acknowledged a change, RFC 9113
            §6.5.3); a dynamic table size update above it is an error, and so
            is a block that does not begin with one while the table is still
            larger than it (§4.2: the peer must signal the change first).
        max_header_list_size: limit on a decoded list, counted as RFC 9113
            §6.5.2: len(name) + len(value) + 32 per field.
    """

    max_table_size: int
    max_header_list_size: int
    # [unused, static 1..61, dynamic 62.. newest first]: the HPACK index is the list index.
    _table: list[Field]
    _sizes: list[int]  # §4.1 size of each _table entry, in step with it (saves two len() a field)
    _table_size: int  # §4.1 size of the dynamic entries
    _capacity: int  # the maximum size the peer last set (§4.2), initially the protocol's 4096
    _blocks: dict[bytes, tuple[list[Field], int]]  # blocks that left the table unchanged; size
    _strings: dict[bytes, bytes]

    def __init__(
        self, max_table_size: int = DEFAULT_TABLE_SIZE, max_header_list_size: int = 65536
    ) -> None:
        self.max_table_size = max_table_size
        self.max_header_list_size = max_header_list_size
        self._table = [(b"", b""), *STATIC_TABLE]
        self._sizes = [len(name) + len(value) + ENTRY_OVERHEAD for name, value in self._table]
        self._table_size = 0
        # The peer's encoder starts at the protocol's initial value, whatever we advertise,
        # until it says otherwise (§4.2); a smaller max_table_size makes it say so.
        self._capacity = min(DEFAULT_TABLE_SIZE, max_table_size)
        self._blocks = {}
        self._strings = {}

    @property
    def table_size(self) -> int:
        """Size of the dynamic table (§4.1)."""
        return self._table_size

    @property
    def table_capacity(self) -> int:
        """The dynamic table's maximum size, as the peer last set it (§4.2)."""
        return self._capacity

    def dynamic_entries(self) -> list[Field]:
        """The dynamic table, newest entry (index 62) first."""
        return self._table[FIRST_DYNAMIC:]

    def decode(self, block: bytes) -> list[Field]:
        """Decode one complete field block (HEADERS plus any CONTINUATION payloads), as bytes.

        Returns:
            The fields in order, names and values exactly as sent.

        Raises:
            HPACKError: the block is malformed; the table is no longer usable.
            HeaderListTooLarge: the list passed ``max_header_list_size``; the
                table is in sync and later blocks decode normally.
        """
        if self._capacity > self.max_table_size and not (block and block[0] & 0xE0 == 0x20):
            # §4.2: after our SETTINGS lowered the size, the next block starts with an update.
            raise HPACKError("dynamic table size update missing")
        cached = self._blocks.get(block)
        if cached is not None:
            if cached[1] > self.max_header_list_size:
                raise HeaderListTooLarge("header list too large")
            return cached[0].copy()
        table = self._table
        sizes = self._sizes
        entries = len(table)
        limit = self.max_header_list_size
        end = len(block)
        pos = 0
        changed = False
        if end and block[0] & 0xE0 == 0x20:
            pos = self._size_updates(block)
            changed = True
            entries = len(table)
        fields: list[Field] = []
        size = 0
        while pos < end:
            byte = block[pos]
            pos += 1
            if byte & 0x80:  # §6.1 indexed field: the common case, kept short
                index = byte & 0x7F
                if index == 0x7F:
                    index, pos = _read_integer(block, pos, 0x7F)
                if not 0 < index < entries:
                    raise HPACKError("invalid index")
                size += sizes[index]
                if size <= limit:
                    fields.append(table[index])
                continue
            if byte & 0x40:  # §6.2.1 with incremental indexing: 6-bit name index
                prefix = 0x3F
            elif byte & 0x20:
                raise HPACKError("dynamic table size update after a field")  # §4.2
            else:  # §6.2.2 without indexing / §6.2.3 never indexed: 4-bit name index
                prefix = 0x0F
            index = byte & prefix
            if index == prefix:
                index, pos = _read_integer(block, pos, prefix)
            if index == 0:
                name, pos = self._read_string(block, pos)
            elif index < entries:
                name = table[index][0]
            else:
                raise HPACKError("invalid index")
            value, pos = self._read_string(block, pos)
            field = (name, value)
            if prefix == 0x3F:
                self._insert(field)
                entries = len(table)
                changed = True
            size += len(name) + len(value) + ENTRY_OVERHEAD
            if size <= limit:
                fields.append(field)
        # Past the limit the fields were dropped, but the block was still read to its end:
        # its insertions keep our table in step with the peer's encoder.
        if changed:
            self._blocks.clear()
        if size > limit:
            raise HeaderListTooLarge("header list too large")
        if not changed and end <= _BLOCK_CACHE_MAX_BLOCK:
            # A pure function of the block and a table that has not changed since.
            if len(self._blocks) >= _BLOCK_CACHE_ENTRIES:
                del self._blocks[next(iter(self._blocks))]
            self._blocks[block] = (fields.copy(), size)
        return fields

    def _read_string(self, block: bytes, pos: int) -> tuple[bytes, int]:
        """A string literal (§5.2) at ``pos``; returns it and the position after it."""
        if pos >= len(block):
            raise HPACKError("truncated string literal")
        first = block[pos]
        pos += 1
        length = first & 0x7F
        if length == 0x7F:
            length, pos = _read_integer(block, pos, 0x7F)
        stop = pos + length
        if stop > len(block):
            raise HPACKError("truncated string literal")
        data = block[pos:stop]
        if first & 0x80:
            decoded = self._strings.get(data)
            if decoded is None:
                try:
                    decoded = huffman.decode(data)
                except huffman.HuffmanError as exc:
                    raise HPACKError(str(exc)) from exc
                if length <= _HUFFMAN_CACHE_MAX_STRING:
                    if len(self._strings) >= _HUFFMAN_CACHE_ENTRIES:
                        del self._strings[next(iter(self._strings))]
                    self._strings[data] = decoded
            data = decoded
        return data, stop

    def _size_updates(self, block: bytes) -> int:
        """The dynamic table size updates at the start of a block (§4.2, §6.3)."""
        pos = 0
        end = len(block)
        while pos < end and block[pos] & 0xE0 == 0x20:
            size = block[pos] & 0x1F
            pos += 1
            if size == 0x1F:
                size, pos = _read_integer(block, pos, 0x1F)
            if size > self.max_table_size:
                raise HPACKError("dynamic table size update above SETTINGS_HEADER_TABLE_SIZE")
            self._capacity = size
            self._evict(size)
        return pos

    def _insert(self, field: Field) -> None:
        """Add an entry (§4.4): evict from the oldest until it fits; one too big empties all."""
        size = len(field[0]) + len(field[1]) + ENTRY_OVERHEAD
        if size > self._capacity:
            del self._table[FIRST_DYNAMIC:]
            del self._sizes[FIRST_DYNAMIC:]
            self._table_size = 0
            return
        self._evict(self._capacity - size)
        self._table.insert(FIRST_DYNAMIC, field)
        self._sizes.insert(FIRST_DYNAMIC, size)
        self._table_size += size

    def _evict(self, room: int) -> None:
        """Drop the oldest entries until the table's size is at most ``room`` (§4.3)."""
        table = self._table
        sizes = self._sizes
        while self._table_size > room:
            table.pop()
            self._table_size -= sizes.pop()
