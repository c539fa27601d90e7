"""hpack.py and huffman.py: RFC 7541 examples, strictness, bombs, and the hpack library as a peer.

The ``hpack`` package (python-hyper, installed with ``h2``) is the independent
reference: its encoder feeds our decoder, its decoder checks our encoder, and
both decoders must agree on mutated blocks. Everything runs without an event
loop, from fixed seeds.
"""

from __future__ import annotations

import functools
import random
import tracemalloc
from collections.abc import Callable

import hpack
import pytest

from sluiceway.http2 import huffman
from sluiceway.http2.hpack import (
    STATIC_TABLE,
    Decoder,
    HeaderListTooLarge,
    HPACKError,
    _read_integer,
)
from sluiceway.http2.hpack_encoder import Encoder, _encode_integer

Fields = list[tuple[bytes, bytes]]


def block(text: str) -> bytes:
    return bytes.fromhex(text)


def entry_sizes(entries: Fields) -> list[int]:
    return [len(name) + len(value) + 32 for name, value in entries]


# --- RFC 7541 Appendix C -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "prefix", "encoded"),
    [(10, 0x1F, "0a"), (1337, 0x1F, "1f9a0a"), (42, 0xFF, "2a")],
    ids=["C.1.1", "C.1.2", "C.1.3"],
)
def test_integer_examples(value: int, prefix: int, encoded: str) -> None:
    data = block(encoded)
    assert _encode_integer(value, prefix, 0) == data
    if data[0] & prefix == prefix:
        assert _read_integer(data, 1, prefix) == (value, len(data))


C2 = [
    (
        "C.2.1",
        "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
        [(b"custom-key", b"custom-header")],
        [(b"custom-key", b"custom-header")],
    ),
    ("C.2.2", "040c 2f73 616d 706c 652f 7061 7468", [(b":path", b"/sample/path")], []),
    ("C.2.3", "1008 7061 7373 776f 7264 0673 6563 7265 74", [(b"password", b"secret")], []),
    ("C.2.4", "82", [(b":method", b"GET")], []),
]


@pytest.mark.parametrize(("name", "data", "fields", "table"), C2, ids=[c[0] for c in C2])
def test_field_representation_examples(name: str, data: str, fields: Fields, table: Fields) -> None:
    decoder = Decoder()
    assert decoder.decode(block(data)) == fields
    assert decoder.dynamic_entries() == table
    assert decoder.table_size == sum(entry_sizes(table))


AUTHORITY = (b":authority", b"www.example.com")
CACHE_CONTROL = (b"cache-control", b"no-cache")
CUSTOM = (b"custom-key", b"custom-value")
REQUESTS: list[tuple[Fields, Fields, int]] = [
    (
        [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), AUTHORITY],
        [AUTHORITY],
        57,
    ),
    (
        [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), AUTHORITY, CACHE_CONTROL],
        [CACHE_CONTROL, AUTHORITY],
        110,
    ),
    (
        [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":path", b"/index.html"),
            AUTHORITY,
            CUSTOM,
        ],
        [CUSTOM, CACHE_CONTROL, AUTHORITY],
        164,
    ),
]
C3 = [
    "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
    "8286 84be 5808 6e6f 2d63 6163 6865",
    "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
]
C4 = [
    "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
    "8286 84be 5886 a8eb 1064 9cbf",
    "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
]

DATE1 = (b"date", b"Mon, 21 Oct 2013 20:13:21 GMT")
DATE2 = (b"date", b"Mon, 21 Oct 2013 20:13:22 GMT")
LOCATION = (b"location", b"https://www.example.com")
PRIVATE = (b"cache-control", b"private")
COOKIE = (b"set-cookie", b"foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1")
GZIP = (b"content-encoding", b"gzip")
RESPONSES: list[tuple[Fields, Fields, int]] = [
    (
        [(b":status", b"302"), PRIVATE, DATE1, LOCATION],
        [LOCATION, DATE1, PRIVATE, (b":status", b"302")],
        222,
    ),
    (
        [(b":status", b"307"), PRIVATE, DATE1, LOCATION],
        [(b":status", b"307"), LOCATION, DATE1, PRIVATE],
        222,
    ),
    ([(b":status", b"200"), PRIVATE, DATE2, LOCATION, GZIP, COOKIE], [COOKIE, GZIP, DATE2], 215),
]
C5 = [
    "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133"
    " 2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70"
    " 6c65 2e63 6f6d",
    "4803 3330 37c1 c0bf",
    "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d"
    " 54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049"
    " 5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e"
    " 3d31",
]
C6 = [
    "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6"
    " 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
    "4883 640e ffc1 c0bf",
    "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab"
    " 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f"
    " 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
]


@pytest.mark.parametrize(
    ("blocks", "expected", "table_size"),
    [(C3, REQUESTS, 4096), (C4, REQUESTS, 4096), (C5, RESPONSES, 256), (C6, RESPONSES, 256)],
    ids=["C.3", "C.4", "C.5", "C.6"],
)
def test_request_and_response_examples(
    blocks: list[str], expected: list[tuple[Fields, Fields, int]], table_size: int
) -> None:
    # C.5/C.6 run with a 256-byte table: the examples assume it from the first block.
    decoder = Decoder(max_table_size=table_size)
    for data, (fields, table, size) in zip(blocks, expected, strict=True):
        assert decoder.decode(block(data)) == fields
        assert decoder.dynamic_entries() == table
        assert decoder.table_size == size == sum(entry_sizes(table))


@pytest.mark.parametrize("examples", [REQUESTS, RESPONSES], ids=["requests", "responses"])
def test_encoder_output_of_the_example_lists_decodes_in_the_reference(
    examples: list[tuple[Fields, Fields, int]],
) -> None:
    encoder = Encoder()
    ours = Decoder()
    reference = hpack.Decoder()
    for fields, _, _ in examples:
        data = encoder.encode(fields)
        assert ours.decode(data) == fields
        assert reference.decode(data, raw=True) == fields
        assert list(reference.header_table.dynamic_entries) == encoder.dynamic_entries()


def test_huffman_matches_the_reference_on_every_byte() -> None:
    from hpack.huffman_table import decode_huffman

    every = bytes(range(256))
    rng = random.Random(7541)
    samples = [every, every[::-1], b"", *(rng.randbytes(rng.randrange(40)) for _ in range(300))]
    for data in samples:
        encoded = huffman.encode(data)
        assert huffman.encoded_length(data) == len(encoded)
        assert decode_huffman(encoded) == data
        assert huffman.decode(encoded) == data


# --- errors --------------------------------------------------------------------------------

# (id, block): each is malformed by the rule its id names; the decoder starts empty (4096).
MALFORMED = [
    ("index-zero", b"\x80"),  # §6.1: index 0 is not used
    ("index-past-static", b"\xbe"),  # 62 with an empty dynamic table (§2.3.3)
    ("index-multibyte-past", b"\xff\x80\x01"),  # 127 + 128
    ("literal-name-index-past", b"\x7e\x01a"),  # §6.2.1 name index 62
    ("literal-4bit-name-index-past", b"\x0f\x2f\x01a"),  # §6.2.2 name index 62
    ("truncated-integer", b"\xff"),
    ("truncated-integer-continuation", b"\xff\x80"),
    ("truncated-name", b"\x40"),
    ("truncated-name-bytes", b"\x40\x05ab"),
    ("truncated-value", b"\x40\x01a"),
    ("truncated-value-bytes", b"\x40\x01a\x05ab"),
    ("truncated-length", b"\x40\x7f"),
    # §5.1: more than 5 continuation bytes (zero padding of a size update to 31).
    ("integer-six-continuation-bytes", b"\x3f\x80\x80\x80\x80\x80\x00"),
    ("integer-too-large", _encode_integer(2**32, 0x7F, 0x80)),
    # §5.2: EOS in the string (30 one bits, then two bits of padding).
    ("huffman-eos", b"\x00\x01a\x84\xff\xff\xff\xff"),
    # §5.2: "a" is 00011; eight more one bits make padding longer than 7 bits.
    ("huffman-padding-too-long", b"\x00\x01a\x82\x1f\xff"),
    # §5.2: "a" padded with zeros instead of the EOS prefix.
    ("huffman-padding-not-ones", b"\x00\x01a\x81\x18"),
    ("huffman-padding-not-ones-in-name", b"\x00\x81\x18\x01a"),
    ("huffman-padding-partly-ones", b"\x00\x01a\x81\x1a"),
    # §4.2: a size update after a field representation.
    ("size-update-after-field", b"\x82\x20"),
    ("size-update-after-updates-and-field", b"\x20\x3f\xe1\x1f\x82\x3f\xe1\x1f"),
    # §6.3: above the SETTINGS_HEADER_TABLE_SIZE we advertised (4096 + 1).
    ("size-update-above-max", b"\x3f\xe2\x1f"),
]


@pytest.mark.parametrize("data", [m[1] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_blocks_are_compression_errors(data: bytes) -> None:
    with pytest.raises(HPACKError):
        Decoder().decode(data)
    # The reference agrees: each of these is malformed for it too.
    with pytest.raises(hpack.HPACKDecodingError):
        hpack.Decoder().decode(data, raw=True)


def test_integer_limits_are_exact() -> None:
    # Five continuation bytes are allowed, even as zero padding (31 + 0).
    decoder = Decoder()
    assert decoder.decode(b"\x3f\x80\x80\x80\x80\x00") == []
    assert decoder.table_capacity == 31
    # The largest value allowed, then one more, with a table limit that would accept both.
    decoder = Decoder(max_table_size=2**40)
    decoder.decode(_encode_integer(2**32 - 1, 0x1F, 0x20))
    assert decoder.table_capacity == 2**32 - 1
    with pytest.raises(HPACKError, match="integer too large"):
        decoder.decode(_encode_integer(2**32, 0x1F, 0x20))


def test_size_updates_at_the_start_are_applied_in_order() -> None:
    decoder = Decoder()
    decoder.decode(block(C3[0]))  # inserts :authority (57 bytes)
    # 0 empties the table, then 4096 allows it again; the field after them is decoded.
    assert decoder.decode(b"\x20\x3f\xe1\x1f\x82") == [(b":method", b"GET")]
    assert decoder.dynamic_entries() == []
    assert decoder.table_capacity == 4096
    assert decoder.decode(b"\x3f\xe1\x1f") == []  # exactly the maximum


def test_lowered_setting_requires_an_update_at_the_start_of_the_next_block() -> None:
    decoder = Decoder()
    decoder.decode(block(C3[0]))
    assert decoder.decode(b"\x82") == [(b":method", b"GET")]  # now cached
    decoder.max_table_size = 100  # our SETTINGS_HEADER_TABLE_SIZE = 100 was acknowledged
    # §4.2: the peer's encoder must signal the smaller size first; the cached block too.
    with pytest.raises(HPACKError, match="update missing"):
        decoder.decode(b"\x82")
    decoder = Decoder()
    decoder.decode(block(C3[0]))
    decoder.max_table_size = 100
    with pytest.raises(HPACKError, match="above SETTINGS_HEADER_TABLE_SIZE"):
        decoder.decode(b"\x3f\x46\x82")  # an update to 101
    decoder = Decoder()
    decoder.decode(block(C3[0]))
    decoder.max_table_size = 100
    assert decoder.decode(b"\x3f\x45\xbe") == [AUTHORITY]  # 100: the 57-byte entry stays
    assert decoder.table_capacity == 100


def test_entry_larger_than_the_table_empties_it() -> None:
    # §4.4: not an error; the table ends up empty.
    decoder = Decoder(max_table_size=256)
    decoder.decode(block(C5[0]))
    big = b"v" * 300
    assert decoder.decode(b"\x40\x01x\x7f" + _encode_integer(300, 0x7F, 0)[1:] + big) == [
        (b"x", big)
    ]
    assert decoder.dynamic_entries() == []
    assert decoder.table_size == 0


def test_insertion_may_evict_the_entry_its_name_refers_to() -> None:
    # §4.4: the name is read before the eviction that makes room for the new entry.
    decoder = Decoder(max_table_size=256)
    decoder.decode(b"\x3f\x61")  # a 128-byte table: room for one 60-byte entry of two
    first = (b"n" * 14, b"v" * 14)
    decoder.decode(b"\x40\x0e" + first[0] + b"\x0e" + first[1])
    second = (b"n" * 14, b"w" * 40)  # 86 bytes: the first entry must go to make room
    assert decoder.decode(b"\x7e\x28" + second[1]) == [second]
    assert decoder.dynamic_entries() == [second]


# --- header list size and bombs ------------------------------------------------------------


def literal_with_indexing(name: bytes, value: bytes) -> bytes:
    return (
        b"\x40"
        + _encode_integer(len(name), 0x7F, 0)
        + name
        + _encode_integer(len(value), 0x7F, 0)
        + value
    )


def test_list_size_is_counted_as_rfc9113_and_the_limit_is_inclusive() -> None:
    fields = [(b":method", b"GET"), (b":path", b"/")]  # (7+3+32) + (5+1+32) = 80
    assert Decoder(max_header_list_size=80).decode(b"\x82\x84") == fields
    with pytest.raises(HeaderListTooLarge):
        Decoder(max_header_list_size=79).decode(b"\x82\x84")


def test_bomb_of_references_to_one_big_entry_is_cut_off_with_bounded_memory() -> None:
    value = b"a" * 4000
    bomb = literal_with_indexing(b"x", value) + b"\xbe" * 10_000  # 40 MB if materialised
    decoder = Decoder()
    tracemalloc.start()
    try:
        with pytest.raises(HeaderListTooLarge):
            decoder.decode(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The value is one 4 kB slice; past 64 kB of list the fields are not kept, so the list
    # stays at 16 entries (10,000 references alone would be 80 kB).
    assert peak < 40_000
    # The entry was inserted all the same: the next block sees the same table as the peer.
    assert decoder.decode(b"\xbe") == [(b"x", value)]
    # And a bomb that only references the entry is refused the same way, again and again.
    for _ in range(2):
        with pytest.raises(HeaderListTooLarge):
            decoder.decode(b"\xbe" * 10_000)


def test_insertions_after_the_limit_still_reach_the_table() -> None:
    decoder = Decoder(max_header_list_size=100)
    too_big = literal_with_indexing(b"a", b"1" * 100) + literal_with_indexing(b"b", b"2")
    with pytest.raises(HeaderListTooLarge):
        decoder.decode(too_big)
    assert decoder.dynamic_entries() == [(b"b", b"2"), (b"a", b"1" * 100)]
    assert decoder.decode(b"\xbe") == [(b"b", b"2")]


def test_malformed_after_the_limit_is_still_a_compression_error() -> None:
    # The table is out of step after a malformed block: the connection error wins.
    with pytest.raises(HPACKError):
        Decoder(max_header_list_size=40).decode(b"\x82\x82\x80")


def test_limit_changes_apply_to_a_block_seen_before() -> None:
    decoder = Decoder(max_header_list_size=50)
    with pytest.raises(HeaderListTooLarge):
        decoder.decode(b"\x82\x84")
    decoder.max_header_list_size = 80
    assert decoder.decode(b"\x82\x84") == [(b":method", b"GET"), (b":path", b"/")]
    decoder.max_header_list_size = 79
    with pytest.raises(HeaderListTooLarge):
        decoder.decode(b"\x82\x84")


# --- decoder caches ------------------------------------------------------------------------


def test_repeated_block_follows_the_table() -> None:
    decoder = Decoder()
    decoder.decode(literal_with_indexing(b"k", b"one"))
    for _ in range(3):  # decoded, then twice from the cache; the caller may change its list
        fields = decoder.decode(b"\xbe")
        assert fields == [(b"k", b"one")]
        fields.append((b"changed", b"by the caller"))
    decoder.decode(literal_with_indexing(b"k", b"two"))
    assert decoder.decode(b"\xbe") == [(b"k", b"two")]
    decoder.decode(b"\x20")  # a size update alone changes the table too
    with pytest.raises(HPACKError):
        decoder.decode(b"\xbe")


def test_repeated_huffman_strings_decode_the_same() -> None:
    decoder = Decoder()
    data = b"\x04" + bytes((0x80 | 12,)) + huffman.encode(b"/index.html?q=1")
    data2 = b"\x04" + bytes((0x80 | 12,)) + huffman.encode(b"/index.html?q=2")
    for _ in range(3):
        assert decoder.decode(data + data2) == [
            (b":path", b"/index.html?q=1"),
            (b":path", b"/index.html?q=2"),
        ]
        assert decoder.decode(b"\x82" + data2) == [
            (b":method", b"GET"),
            (b":path", b"/index.html?q=2"),
        ]


def test_caches_stay_bounded_against_distinct_blocks() -> None:
    # A hostile peer sends only new blocks and new strings: the caches must not grow with them.
    decoder = Decoder()
    for i in range(1000):
        path = huffman.encode(b"/%d" % i)
        decoder.decode(b"\x04" + bytes((0x80 | len(path),)) + path)
    assert len(decoder._blocks) <= 8
    assert len(decoder._strings) <= 16
    encoder = Encoder()
    for i in range(1000):
        encoder.encode([(b":status", b"200"), (b"set-cookie", b"id=%d" % i)])
    assert len(encoder._lists) <= 16
    assert len(encoder._known) <= 64


# --- encoder -------------------------------------------------------------------------------


def reference_decode(decoder: hpack.Decoder, data: bytes) -> list[tuple[bytes, bytes]]:
    # hpack types its fields as bytes | str whatever ``raw`` says; with raw=True they are bytes.
    return [(bytes(name), bytes(value)) for name, value in decoder.decode(data, raw=True)]


def test_repeated_response_is_all_indexes_from_the_second_on() -> None:
    response = [
        (b":status", b"200"),
        (b"content-type", b"text/plain"),
        (b"server", b"sluiceway"),
        (b"date", b"Mon, 21 Oct 2013 20:13:21 GMT"),
    ]
    encoder = Encoder()
    reference = hpack.Decoder()
    first = encoder.encode(response)
    assert first[:1] == b"\x88"  # §6.1 static index 8
    assert reference_decode(reference, first) == response
    second = encoder.encode(response)
    assert second == b"\x88\xc0\xbf\xbe"  # newest (date) is 62
    assert reference_decode(reference, second) == response
    assert encoder.encode(list(response)) == second


def test_sensitive_fields_are_never_indexed() -> None:
    encoder = Encoder()
    reference = hpack.Decoder()
    fields = [
        (b"set-cookie", b"session=abc"),
        (b"authorization", b"Bearer x"),
        (b"cookie", b"a=b"),
        (b"proxy-authorization", b"Basic y"),
    ]
    for _ in range(2):
        data = encoder.encode(fields)
        assert data[:2] == b"\x1f\x28"  # §6.2.3 never indexed, static name 55 (set-cookie)
        decoded = reference.decode(data, raw=True)
        assert decoded == fields
        assert all(isinstance(field, hpack.NeverIndexedHeaderTuple) for field in decoded)
    assert encoder.dynamic_entries() == []


def test_volatile_and_large_fields_are_not_indexed() -> None:
    encoder = Encoder()
    fields = [
        (b"content-length", b"13"),
        (b"etag", b'"abc"'),
        (b"location", b"/next"),
        (b"x-big", b"v" * 3000),
    ]
    data = encoder.encode(fields)
    assert data[:3] == b"\x0f\x0d\x02"  # §6.2.2 without indexing, static name 28, length 2
    assert hpack.Decoder().decode(data, raw=True) == fields
    assert encoder.dynamic_entries() == []


def test_new_names_are_indexed_and_reused_by_name() -> None:
    encoder = Encoder()
    reference = hpack.Decoder()
    first = encoder.encode([(b"x-custom", b"one")])
    assert first == b"\x40\x08x-custom\x03one"
    second = encoder.encode([(b"x-custom", b"two")])
    assert second == b"\x7e\x03two"  # name from dynamic index 62
    assert reference_decode(reference, first + second) == [
        (b"x-custom", b"one"),
        (b"x-custom", b"two"),
    ]


def test_table_size_setting_emits_updates_at_the_start_of_the_next_block() -> None:
    encoder = Encoder()
    reference = hpack.Decoder()
    for _ in range(2):  # the second encoding is remembered: the setting must void it
        reference.decode(encoder.encode([(b"server", b"sluiceway")]), raw=True)
    # The peer lowers, then restores its SETTINGS_HEADER_TABLE_SIZE between two blocks:
    # §4.2 wants the smallest value, then the final one.
    encoder.set_max_table_size(0)
    encoder.set_max_table_size(4096)
    data = encoder.encode([(b"server", b"sluiceway")])
    assert data.startswith(b"\x20\x3f\xe1\x1f")
    assert reference_decode(reference, data) == [(b"server", b"sluiceway")]
    # Lowered below the entry's 47 bytes: one update, and the table is trimmed to fit.
    encoder.set_max_table_size(40)
    reference.max_allowed_table_size = 40
    data = encoder.encode([(b"server", b"sluiceway")])
    assert data.startswith(b"\x3f\x09")
    assert reference_decode(reference, data) == [(b"server", b"sluiceway")]
    assert encoder.dynamic_entries() == list(reference.header_table.dynamic_entries) == []
    # Raised above our cap: the table stays at 4096 after one update back up.
    encoder.set_max_table_size(65536)
    reference.max_allowed_table_size = 65536
    data = encoder.encode([])
    assert data == b"\x3f\xe1\x1f"
    assert encoder.encode([]) == b""
    reference.decode(data)
    assert reference.header_table_size == 4096
    # The same value again changes nothing, and needs no update.
    encoder.set_max_table_size(8192)
    assert encoder.encode([]) == b""
    with pytest.raises(ValueError):
        encoder.set_max_table_size(-1)


def test_large_indexes_and_lengths_use_continuation_bytes() -> None:
    encoder = Encoder()
    ours = Decoder()
    reference = hpack.Decoder()
    names = [(b"x-%03d" % i, b"v") for i in range(100)]  # 100 entries of 38 bytes
    long_name = (b"n" * 200, b"w" * 300)
    for fields in (names, names, [long_name]):
        data = encoder.encode(fields)
        assert ours.decode(data) == fields
        assert reference_decode(reference, data) == fields


# --- random round trips with the reference ---------------------------------------------------

NAMES = [
    b":status",
    b"content-type",
    b"content-length",
    b"server",
    b"date",
    b"set-cookie",
    b"cache-control",
    b"etag",
    b"vary",
    b"x-request-id",
    b"x-custom",
    b"location",
]
VALUES = [
    b"",
    b"200",
    b"404",
    b"text/plain",
    b"sluiceway",
    b"no-cache",
    b"\x00\xff\x80",
    b"a" * 200,
]


def random_fields(rng: random.Random) -> Fields:
    fields = []
    for _ in range(rng.randrange(12)):
        name = rng.choice(NAMES) if rng.random() < 0.8 else rng.randbytes(rng.randrange(1, 12))
        if rng.random() < 0.6:
            value = rng.choice(VALUES)
        else:
            value = rng.randbytes(rng.choice([1, 5, 30, 130]))
        fields.append((name, value))
    return fields


def test_reference_encoder_to_our_decoder() -> None:
    rng = random.Random(1)
    for _ in range(20):
        encoder = hpack.Encoder()
        decoder = Decoder(max_table_size=8192)
        lists = [random_fields(rng) for _ in range(8)]  # repeated lists exercise the caches
        for _ in range(40):
            if rng.random() < 0.1:
                encoder.header_table_size = rng.choice([0, 100, 256, 4096, 8192])
            fields = rng.choice(lists)
            sensitive = rng.random() < 0.2
            sent = [hpack.NeverIndexedHeaderTuple(*f) if sensitive else f for f in fields]
            data = encoder.encode(sent, huffman=rng.random() < 0.7)
            assert decoder.decode(data) == fields
            assert decoder.dynamic_entries() == list(encoder.header_table.dynamic_entries)


def test_our_encoder_to_the_reference_decoder() -> None:
    rng = random.Random(2)
    for _ in range(20):
        encoder = Encoder()
        reference = hpack.Decoder(max_header_list_size=2**30)
        ours = Decoder()
        lists = [random_fields(rng) for _ in range(8)]
        for _ in range(40):
            if rng.random() < 0.1:
                size = rng.choice([0, 64, 256, 4096, 65536])
                encoder.set_max_table_size(size)
                reference.max_allowed_table_size = size
            fields = rng.choice(lists)
            data = encoder.encode(fields)
            assert reference_decode(reference, data) == fields
            assert ours.decode(data) == fields
            entries = encoder.dynamic_entries()
            assert entries == list(reference.header_table.dynamic_entries)
            assert entries == ours.dynamic_entries()
            assert encoder.table_size == ours.table_size


# --- fuzz against the reference decoder ------------------------------------------------------


def mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        choice = rng.randrange(5)
        position = rng.randrange(len(buf) + 1)
        if choice == 0 and buf:  # flip bits of one byte
            buf[position % len(buf)] ^= 1 << rng.randrange(8)
        elif choice == 1 and buf:  # a random byte
            buf[position % len(buf)] = rng.randrange(256)
        elif choice == 2:  # insert bytes
            buf[position:position] = rng.randbytes(rng.randrange(1, 4))
        elif choice == 3:  # delete bytes
            del buf[position : position + rng.randrange(1, 4)]
        else:  # truncate
            del buf[position:]
    return bytes(buf)


def outcome(decode: Callable[[bytes], object], data: bytes) -> object:
    try:
        return decode(data)
    except (HPACKError, hpack.HPACKDecodingError):
        return "error"


def test_fuzz_agrees_with_the_reference_decoder() -> None:
    rng = random.Random(3)
    seeds = [block(b) for b in C3 + C4] + [block(c[1]) for c in C2]
    encoder = hpack.Encoder()
    seeds += [encoder.encode(random_fields(rng), huffman=rng.random() < 0.7) for _ in range(30)]
    prime = block(C3[0])  # gives both a dynamic entry to refer to
    accepted = 0
    for case in range(10_000):
        if case % 10 == 0:
            data = rng.randbytes(rng.randrange(1, 20))
        else:
            data = mutate(rng, rng.choice(seeds))
        ours = Decoder(max_header_list_size=2**30)
        reference = hpack.Decoder(max_header_list_size=2**30)
        ours.decode(prime)
        reference.decode(prime, raw=True)
        ours_got = outcome(ours.decode, data)
        reference_got = outcome(functools.partial(reference_decode, reference), data)
        # No leniency and no extra strictness on any of these: the two agree exactly.
        assert ours_got == reference_got, data.hex()
        if ours_got != "error":
            accepted += 1
            assert ours.dynamic_entries() == list(reference.header_table.dynamic_entries)
    assert accepted > 1000  # the mutations leave enough valid blocks to compare outputs


def test_static_table_is_rfc7541_appendix_a() -> None:
    from hpack.table import HeaderTable

    assert STATIC_TABLE == HeaderTable.STATIC_TABLE
    assert len(STATIC_TABLE) == 61
