"""deflate.py: RFC 7692 negotiation and bounded (de)compression."""

from __future__ import annotations

import itertools
import os
import tracemalloc
import zlib

import pytest

from sluiceway.errors import InvalidPayload, MessageTooBig
from sluiceway.websocket.deflate import (
    DeflateParams,
    DeflateSettings,
    PerMessageDeflate,
    negotiate,
)

Offer = list[tuple[str, str | None]]


def raw_deflate(data: bytes, wbits: int = 15) -> bytes:
    """What a client sends: raw deflate, sync-flushed, 4-byte tail removed."""
    encoder = zlib.compressobj(6, zlib.DEFLATED, -wbits)
    out = encoder.compress(data) + encoder.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def raw_inflate(data: bytes, wbits: int = 15) -> bytes:
    return zlib.decompressobj(-wbits).decompress(data + b"\x00\x00\xff\xff")


# -- negotiation (RFC 7692 §7.1) ------------------------------------------------

LOOSE = DeflateSettings(server_max_window_bits=15, client_max_window_bits=15)


@pytest.mark.parametrize(
    ("offer", "settings", "expected"),
    [
        ([], LOOSE, DeflateParams()),
        ([], DeflateSettings(), DeflateParams(server_max_window_bits=12)),
        (
            [("client_max_window_bits", None)],
            DeflateSettings(),
            DeflateParams(server_max_window_bits=12, client_max_window_bits=12),
        ),
        ([("client_max_window_bits", None)], LOOSE, DeflateParams(client_max_window_bits=15)),
        ([("client_max_window_bits", "10")], LOOSE, DeflateParams(client_max_window_bits=10)),
        ([("server_max_window_bits", "9")], LOOSE, DeflateParams(server_max_window_bits=9)),
        (
            [("server_max_window_bits", "15")],
            DeflateSettings(),
            DeflateParams(server_max_window_bits=12),
        ),
        (
            [("server_no_context_takeover", None)],
            LOOSE,
            DeflateParams(server_no_context_takeover=True),
        ),
        (
            [("client_no_context_takeover", None)],
            LOOSE,
            DeflateParams(client_no_context_takeover=True),
        ),
        (
            [],
            DeflateSettings(
                server_max_window_bits=15,
                server_no_context_takeover=True,
                client_no_context_takeover=True,
            ),
            DeflateParams(server_no_context_takeover=True, client_no_context_takeover=True),
        ),
    ],
)
def test_negotiation_answers(
    offer: Offer, settings: DeflateSettings, expected: DeflateParams
) -> None:
    assert negotiate([offer], settings) == expected


@pytest.mark.parametrize(
    "offer",
    [
        [("unknown", None)],
        [("server_no_context_takeover", "1")],
        [("client_no_context_takeover", "yes")],
        [("server_max_window_bits", None)],
        [("server_max_window_bits", "7")],
        [("server_max_window_bits", "16")],
        [("server_max_window_bits", "010")],
        [("server_max_window_bits", "a")],
        [("client_max_window_bits", "0")],
        [("client_max_window_bits", "١٢")],  # non-ASCII digits
        [("server_no_context_takeover", None), ("server_no_context_takeover", None)],
        [("client_max_window_bits", "10"), ("client_max_window_bits", "11")],
    ],
)
def test_invalid_offers_are_declined(offer: Offer) -> None:
    assert negotiate([offer]) is None


def test_the_first_acceptable_offer_wins() -> None:
    offers: list[Offer] = [[("bogus", None)], [("server_max_window_bits", "10")], []]
    assert negotiate(offers, LOOSE) == DeflateParams(server_max_window_bits=10)


def test_response_value() -> None:
    params = DeflateParams(True, True, 10, 9)
    assert params.response_value() == (
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
        "server_max_window_bits=10; client_max_window_bits=9"
    )
    assert DeflateParams().response_value() == "permessage-deflate"


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError):
        DeflateSettings(server_max_window_bits=7)
    with pytest.raises(ValueError):
        DeflateSettings(compress_level=10)


# -- compression -----------------------------------------------------------------


def test_compress_round_trips_with_context_takeover() -> None:
    codec = PerMessageDeflate(DeflateParams(server_max_window_bits=12), DeflateSettings())
    peer = zlib.decompressobj(-12)
    message = b"The quick brown fox jumps over the lazy dog. " * 20
    sizes = []
    for _ in range(3):
        out = codec.compress(message)
        assert out is not None and not out.endswith(b"\x00\x00\xff\xff")
        assert peer.decompress(out + b"\x00\x00\xff\xff") == message
        sizes.append(len(out))
    # Context takeover: a repeated message costs almost nothing the second time.
    assert sizes[1] < sizes[0] // 4
    assert not codec.idle


def test_without_server_context_takeover_each_message_stands_alone() -> None:
    codec = PerMessageDeflate(DeflateParams(server_no_context_takeover=True))
    message = os.urandom(64).hex().encode() * 4
    first = codec.compress(message)
    second = codec.compress(message)
    assert first == second
    assert first is not None and raw_inflate(first) == message
    assert codec.idle  # the deflater was dropped after each message


def test_short_messages_go_out_uncompressed() -> None:
    codec = PerMessageDeflate(DeflateParams(), DeflateSettings(min_size_bytes=128))
    assert codec.compress(b"x" * 127) is None
    assert codec.compress(b"x" * 128) is not None
    assert PerMessageDeflate(DeflateParams(), DeflateSettings(min_size_bytes=0)).compress(b"")


def test_a_256_byte_window_is_honoured_by_not_compressing() -> None:
    # zlib cannot deflate with window bits 8 (it uses 9), which could break a
    # client that allocated 256 bytes; sending uncompressed is always allowed.
    codec = PerMessageDeflate(DeflateParams(server_max_window_bits=8))
    assert codec.compress(b"y" * 10_000) is None
    assert codec.idle


# -- decompression -----------------------------------------------------------------


def test_decompress_a_whole_message_and_then_another_with_context() -> None:
    codec = PerMessageDeflate(DeflateParams())
    encoder = zlib.compressobj(6, zlib.DEFLATED, -15)
    for message in (b"hello hello hello", b"hello hello hello", b""):
        wire = encoder.compress(message) + encoder.flush(zlib.Z_SYNC_FLUSH)
        assert codec.decompress(wire[:-4], final=True, limit=1000) == message


def test_decompress_fragments() -> None:
    codec = PerMessageDeflate(DeflateParams(client_no_context_takeover=True))
    message = os.urandom(3000).hex().encode()
    wire = raw_deflate(message)
    cuts = [0, 1, 2, 100, len(wire) // 2, len(wire)]
    out = b""
    for i, (a, b) in enumerate(itertools.pairwise(cuts)):
        out += codec.decompress(wire[a:b], final=i == len(cuts) - 2, limit=len(message) - len(out))
    assert out == message
    assert codec.idle  # client_no_context_takeover: the inflater went with the message


def test_decompress_honours_the_agreed_client_window() -> None:
    codec = PerMessageDeflate(DeflateParams(client_max_window_bits=9))
    message = b"abcdefgh" * 500
    assert codec.decompress(raw_deflate(message, 9), final=True, limit=10**6) == message


def test_exactly_the_limit_is_allowed() -> None:
    codec = PerMessageDeflate(DeflateParams())
    message = b"z" * 5000
    assert codec.decompress(raw_deflate(message), final=True, limit=5000) == message
    with pytest.raises(MessageTooBig):
        PerMessageDeflate(DeflateParams()).decompress(raw_deflate(message), final=True, limit=4999)


def test_a_decompression_bomb_is_refused_without_inflating_it() -> None:
    # CVE class: decompression bomb (permessage-deflate servers that applied
    # their size limit before inflating). 64 MiB of zeros is ~64 KiB on the
    # wire; with a 1 MiB limit we must stop after about 1 MiB of output.
    bomb = raw_deflate(bytes(64 * 1024 * 1024))
    assert len(bomb) < 100 * 1024
    codec = PerMessageDeflate(DeflateParams())
    tracemalloc.start()
    try:
        with pytest.raises(MessageTooBig):
            codec.decompress(bomb, final=True, limit=1024 * 1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024
    assert codec.idle  # a failed inflater is not kept


def test_a_bomb_in_the_flush_tail_is_also_bounded() -> None:
    # The output the 4-byte tail releases counts against the same limit.
    codec = PerMessageDeflate(DeflateParams())
    wire = raw_deflate(b"q" * 2000)
    with pytest.raises(MessageTooBig):
        codec.decompress(wire, final=True, limit=1999)


def test_corrupt_data_is_invalid_payload() -> None:
    codec = PerMessageDeflate(DeflateParams())
    with pytest.raises(InvalidPayload):
        codec.decompress(b"\xff\xff\xff\xff\xff", final=True, limit=1000)
    assert codec.idle


def test_a_final_deflate_block_resets_the_window_for_the_next_message() -> None:
    # A client may end a message with BFINAL set; its stream is then over and
    # the next message starts afresh (RFC 7692 §7.2.3.4).
    codec = PerMessageDeflate(DeflateParams())
    compressor = zlib.compressobj(wbits=-15)  # zlib.compress(wbits=) is 3.11+
    first = compressor.compress(b"first message") + compressor.flush()
    assert codec.decompress(first, final=True, limit=100) == b"first message"
    assert codec.decompress(raw_deflate(b"second"), final=True, limit=100) == b"second"


def test_no_zlib_object_until_used() -> None:
    codec = PerMessageDeflate(DeflateParams())
    assert codec.idle
