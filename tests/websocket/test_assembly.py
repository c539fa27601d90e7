"""assembly.py: one fragmented message, fragment by fragment (RFC 6455 §5.4, §8.1)."""

from __future__ import annotations

import pytest

from sluiceway.errors import InvalidPayload
from sluiceway.websocket.assembly import FragmentedMessage
from sluiceway.websocket.events import BytesMessage, TextMessage


def test_binary_fragments_join_and_count_their_size() -> None:
    message = FragmentedMessage(text=False, compressed=False)
    message.add(b"ab", final=False)
    message.add(b"", final=False)
    message.add(b"cde", final=True)
    assert message.size == 5
    assert message.message() == BytesMessage(b"abcde")


def test_a_code_point_may_span_fragments() -> None:
    encoded = "hé€𝄞".encode()
    message = FragmentedMessage(text=True, compressed=False)
    for i, byte in enumerate(encoded):
        message.add(bytes([byte]), final=i == len(encoded) - 1)
    assert message.message() == TextMessage("hé€𝄞")


def test_invalid_utf8_fails_at_the_fragment_that_shows_it() -> None:
    message = FragmentedMessage(text=True, compressed=False)
    message.add(b"ok", final=False)
    with pytest.raises(InvalidPayload):
        message.add(b"\xc3\x28", final=False)  # a lead byte followed by a non-continuation


def test_a_code_point_cut_by_the_final_fragment_fails() -> None:
    message = FragmentedMessage(text=True, compressed=False)
    message.add(b"\xe2\x82", final=False)
    with pytest.raises(InvalidPayload):
        message.add(b"", final=True)
