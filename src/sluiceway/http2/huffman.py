"""HPACK's Huffman code (RFC 7541 §5.2, Appendix B): a byte-at-a-time decoder and an encoder.

The code is a canonical, complete prefix code over 257 symbols (the 256 byte
values and EOS). Decoding runs a finite-state machine built once at import:
its states are the 256 internal nodes of the code tree (state 0 is the root)
plus a sink state for a string that decoded EOS, and each state has 256
transitions, one per input byte, each giving the bytes it completes (zero, one
or two symbols: every code is at least 5 bits long) and the next state. So a
string costs one table step per input byte, with no per-bit work.

Strictness (§5.2): EOS inside a string, padding longer than 7 bits and padding
that is not the most significant bits of EOS (all ones) are errors. All three
end in a state outside ``_ACCEPTING``: the root (the last symbol ended on a
byte boundary) or one of the 7 nodes reached from it by 1 to 7 one-bits.

``encode`` serves the tests and bench/micro_hpack.py: our HPACK encoder sends
its literals raw (hpack_encoder.py says why).

Invariants: everything here is a pure function of its argument; the tables are
built once, at import (some 15 ms and 2 MB), and never change. Imports only the
standard library.
"""

from __future__ import annotations

from typing import Final

__all__ = ["HuffmanError", "decode", "encode", "encoded_length"]


class HuffmanError(ValueError):
    """The string is not a valid Huffman-coded string (RFC 7541 §5.2)."""


# RFC 7541 Appendix B: (code, bit length) for each symbol, the code's bits
# aligned to the right; symbol 256 is EOS. Four symbols a line, the comment
# numbering the first.
# fmt: off
_CODE_TABLE: Final[tuple[tuple[int, int], ...]] = (
    (0x1FF8, 13), (0x7FFFD8, 23), (0xFFFFFE2, 28), (0xFFFFFE3, 28),  # 0
    (0xFFFFFE4, 28), (0xFFFFFE5, 28), (0xFFFFFE6, 28), (0xFFFFFE7, 28),  # 4
    (0xFFFFFE8, 28), (0xFFFFEA, 24), (0x3FFFFFFC, 30), (0xFFFFFE9, 28),  # 8
    (0xFFFFFEA, 28), (0x3FFFFFFD, 30), (0xFFFFFEB, 28), (0xFFFFFEC, 28),  # 12
    (0xFFFFFED, 28), (0xFFFFFEE, 28), (0xFFFFFEF, 28), (0xFFFFFF0, 28),  # 16
    (0xFFFFFF1, 28), (0xFFFFFF2, 28), (0x3FFFFFFE, 30), (0xFFFFFF3, 28),  # 20
    (0xFFFFFF4, 28), (0xFFFFFF5, 28), (0xFFFFFF6, 28), (0xFFFFFF7, 28),  # 24
    (0xFFFFFF8, 28), (0xFFFFFF9, 28), (0xFFFFFFA, 28), (0xFFFFFFB, 28),  # 28
    (0x14, 6), (0x3F8, 10), (0x3F9, 10), (0xFFA, 12),  # 32
    (0x1FF9, 13), (0x15, 6), (0xF8, 8), (0x7FA, 11),  # 36
    (0x3FA, 10), (0x3FB, 10), (0xF9, 8), (0x7FB, 11),  # 40
    (0xFA, 8), (0x16, 6), (0x17, 6), (0x18, 6),  # 44
    (0x0, 5), (0x1, 5), (0x2, 5), (0x19, 6),  # 48
    (0x1A, 6), (0x1B, 6), (0x1C, 6), (0x1D, 6),  # 52
    (0x1E, 6), (0x1F, 6), (0x5C, 7), (0xFB, 8),  # 56
    (0x7FFC, 15), (0x20, 6), (0xFFB, 12), (0x3FC, 10),  # 60
    (0x1FFA, 13), (0x21, 6), (0x5D, 7), (0x5E, 7),  # 64
    (0x5F, 7), (0x60, 7), (0x61, 7), (0x62, 7),  # 68
    (0x63, 7), (0x64, 7), (0x65, 7), (0x66, 7),  # 72
    (0x67, 7), (0x68, 7), (0x69, 7), (0x6A, 7),  # 76
    (0x6B, 7), (0x6C, 7), (0x6D, 7), (0x6E, 7),  # 80
    (0x6F, 7), (0x70, 7), (0x71, 7), (0x72, 7),  # 84
    (0xFC, 8), (0x73, 7), (0xFD, 8), (0x1FFB, 13),  # 88
    (0x7FFF0, 19), (0x1FFC, 13), (0x3FFC, 14), (0x22, 6),  # 92
    (0x7FFD, 15), (0x3, 5), (0x23, 6), (0x4, 5),  # 96
    (0x24, 6), (0x5, 5), (0x25, 6), (0x26, 6),  # 100
    (0x27, 6), (0x6, 5), (0x74, 7), (0x75, 7),  # 104
    (0x28, 6), (0x29, 6), (0x2A, 6), (0x7, 5),  # 108
    (0x2B, 6), (0x76, 7), (0x2C, 6), (0x8, 5),  # 112
    (0x9, 5), (0x2D, 6), (0x77, 7), (0x78, 7),  # 116
    (0x79, 7), (0x7A, 7), (0x7B, 7), (0x7FFE, 15),  # 120
    (0x7FC, 11), (0x3FFD, 14), (0x1FFD, 13), (0xFFFFFFC, 28),  # 124
    (0xFFFE6, 20), (0x3FFFD2, 22), (0xFFFE7, 20), (0xFFFE8, 20),  # 128
    (0x3FFFD3, 22), (0x3FFFD4, 22), (0x3FFFD5, 22), (0x7FFFD9, 23),  # 132
    (0x3FFFD6, 22), (0x7FFFDA, 23), (0x7FFFDB, 23), (0x7FFFDC, 23),  # 136
    (0x7FFFDD, 23), (0x7FFFDE, 23), (0xFFFFEB, 24), (0x7FFFDF, 23),  # 140
    (0xFFFFEC, 24), (0xFFFFED, 24), (0x3FFFD7, 22), (0x7FFFE0, 23),  # 144
    (0xFFFFEE, 24), (0x7FFFE1, 23), (0x7FFFE2, 23), (0x7FFFE3, 23),  # 148
    (0x7FFFE4, 23), (0x1FFFDC, 21), (0x3FFFD8, 22), (0x7FFFE5, 23),  # 152
    (0x3FFFD9, 22), (0x7FFFE6, 23), (0x7FFFE7, 23), (0xFFFFEF, 24),  # 156
    (0x3FFFDA, 22), (0x1FFFDD, 21), (0xFFFE9, 20), (0x3FFFDB, 22),  # 160
    (0x3FFFDC, 22), (0x7FFFE8, 23), (0x7FFFE9, 23), (0x1FFFDE, 21),  # 164
    (0x7FFFEA, 23), (0x3FFFDD, 22), (0x3FFFDE, 22), (0xFFFFF0, 24),  # 168
    (0x1FFFDF, 21), (0x3FFFDF, 22), (0x7FFFEB, 23), (0x7FFFEC, 23),  # 172
    (0x1FFFE0, 21), (0x1FFFE1, 21), (0x3FFFE0, 22), (0x1FFFE2, 21),  # 176
    (0x7FFFED, 23), (0x3FFFE1, 22), (0x7FFFEE, 23), (0x7FFFEF, 23),  # 180
    (0xFFFEA, 20), (0x3FFFE2, 22), (0x3FFFE3, 22), (0x3FFFE4, 22),  # 184
    (0x7FFFF0, 23), (0x3FFFE5, 22), (0x3FFFE6, 22), (0x7FFFF1, 23),  # 188
    (0x3FFFFE0, 26), (0x3FFFFE1, 26), (0xFFFEB, 20), (0x7FFF1, 19),  # 192
    (0x3FFFE7, 22), (0x7FFFF2, 23), (0x3FFFE8, 22), (0x1FFFFEC, 25),  # 196
    (0x3FFFFE2, 26), (0x3FFFFE3, 26), (0x3FFFFE4, 26), (0x7FFFFDE, 27),  # 200
    (0x7FFFFDF, 27), (0x3FFFFE5, 26), (0xFFFFF1, 24), (0x1FFFFED, 25),  # 204
    (0x7FFF2, 19), (0x1FFFE3, 21), (0x3FFFFE6, 26), (0x7FFFFE0, 27),  # 208
    (0x7FFFFE1, 27), (0x3FFFFE7, 26), (0x7FFFFE2, 27), (0xFFFFF2, 24),  # 212
    (0x1FFFE4, 21), (0x1FFFE5, 21), (0x3FFFFE8, 26), (0x3FFFFE9, 26),  # 216
    (0xFFFFFFD, 28), (0x7FFFFE3, 27), (0x7FFFFE4, 27), (0x7FFFFE5, 27),  # 220
    (0xFFFEC, 20), (0xFFFFF3, 24), (0xFFFED, 20), (0x1FFFE6, 21),  # 224
    (0x3FFFE9, 22), (0x1FFFE7, 21), (0x1FFFE8, 21), (0x7FFFF3, 23),  # 228
    (0x3FFFEA, 22), (0x3FFFEB, 22), (0x1FFFFEE, 25), (0x1FFFFEF, 25),  # 232
    (0xFFFFF4, 24), (0xFFFFF5, 24), (0x3FFFFEA, 26), (0x7FFFF4, 23),  # 236
    (0x3FFFFEB, 26), (0x7FFFFE6, 27), (0x3FFFFEC, 26), (0x3FFFFED, 26),  # 240
    (0x7FFFFE7, 27), (0x7FFFFE8, 27), (0x7FFFFE9, 27), (0x7FFFFEA, 27),  # 244
    (0x7FFFFEB, 27), (0xFFFFFFE, 28), (0x7FFFFEC, 27), (0x7FFFFED, 27),  # 248
    (0x7FFFFEE, 27), (0x7FFFFEF, 27), (0x7FFFFF0, 27), (0x3FFFFEE, 26),  # 252
    (0x3FFFFFFF, 30),  # 256
)
# fmt: on
_EOS: Final = 256
_CODES: Final[tuple[int, ...]] = tuple(code for code, _ in _CODE_TABLE)
_LENGTHS: Final[tuple[int, ...]] = tuple(length for _, length in _CODE_TABLE)


def _build_tree() -> list[int]:
    """The code tree, flat: ``tree[2 * node + bit]`` is an internal node (> 0) or ~symbol (< 0)."""
    tree = [0, 0]  # node 0 is the root; 0 also marks "no child yet" (the root is nobody's child)
    for symbol, (code, length) in enumerate(_CODE_TABLE):
        node = 0
        for shift in range(length - 1, 0, -1):
            slot = 2 * node + ((code >> shift) & 1)
            if tree[slot] == 0:
                tree[slot] = len(tree) // 2
                tree += [0, 0]
            node = tree[slot]
        tree[2 * node + (code & 1)] = ~symbol
    return tree


def _build_machine() -> tuple[list[int], list[bytes], frozenset[int]]:
    """Transitions per (state, byte): next state (times 256, ready to add a byte) and output."""
    tree = _build_tree()
    states = len(tree) // 2  # 256: a complete code over 257 symbols has 256 internal nodes
    sink = states
    # First per (state, 4-bit nibble), walking the tree bit by bit; then each byte is two
    # nibbles, which keeps the import-time work to about 65 thousand cheap steps.
    nibble_next: list[int] = []
    nibble_out: list[bytes] = []
    for state in range(states):
        for nibble in range(16):
            node = state
            out = bytearray()
            for shift in (3, 2, 1, 0):
                child = tree[2 * node + ((nibble >> shift) & 1)]
                if child >= 0:
                    node = child
                elif ~child == _EOS:
                    node = sink  # RFC 7541 §5.2: EOS inside a string is a decoding error
                    break
                else:
                    out.append(~child)
                    node = 0
            nibble_next.append(node)
            nibble_out.append(bytes(out))
    # The 65,792 transitions share their int and bytes objects: 2 MB in all, not 3.
    shifted = [state << 8 for state in range(states + 1)]
    outputs: dict[bytes, bytes] = {}
    next_state: list[int] = []
    output: list[bytes] = []
    for state in range(states):
        for byte in range(256):
            first = state * 16 + (byte >> 4)
            middle = nibble_next[first]
            if middle == sink:
                next_state.append(shifted[sink])
                output.append(b"")
                continue
            second = middle * 16 + (byte & 15)
            both = nibble_out[first] + nibble_out[second]
            next_state.append(shifted[nibble_next[second]])
            output.append(outputs.setdefault(both, both))
    next_state += [shifted[sink]] * 256  # the sink's row: it stays there, whatever follows
    output += [b""] * 256
    accepting = [0]
    node = 0
    for _ in range(7):  # the padding: a proper prefix of EOS, at most 7 bits (§5.2)
        node = tree[2 * node + 1]
        accepting.append(node << 8)
    return next_state, output, frozenset(accepting)


_NEXT, _OUTPUT, _ACCEPTING = _build_machine()


def decode(data: bytes) -> bytes:
    """Decode a Huffman-coded string.

    Raises:
        HuffmanError: EOS in the string, or padding longer than 7 bits or not all ones (§5.2).
    """
    next_state = _NEXT
    output = _OUTPUT
    parts: list[bytes] = []
    state = 0
    for byte in data:
        step = state | byte
        parts.append(output[step])
        state = next_state[step]
    if state not in _ACCEPTING:
        raise HuffmanError("invalid Huffman-coded string")
    return b"".join(parts)


def encode(data: bytes) -> bytes:
    """Huffman-code a string, padded with the most significant bits of EOS (§5.2)."""
    bits = 0
    nbits = 0
    codes = _CODES
    lengths = _LENGTHS
    for byte in data:
        length = lengths[byte]
        bits = (bits << length) | codes[byte]
        nbits += length
    pad = -nbits & 7
    return ((bits << pad) | ((1 << pad) - 1)).to_bytes((nbits + pad) >> 3, "big")


def encoded_length(data: bytes) -> int:
    """Bytes that ``encode(data)`` would take, without encoding it."""
    lengths = _LENGTHS
    return (sum([lengths[byte] for byte in data]) + 7) >> 3
