"""permessage-deflate (RFC 7692): negotiation and bounded (de)compression.

Two jobs: pick the parameters of the first acceptable ``permessage-deflate``
offer (RFC 7692 §5 and §7.1), and compress/decompress message payloads with
zlib for one connection (§7.2).

Imports only the standard library and ``sluiceway.errors``.

Invariants:

* No zlib object exists until a compressed message arrives or leaves, and
  without context takeover it is dropped when the message ends: an idle
  connection pays for none.
* Decompression output is bounded: ``decompress`` never produces more than
  ``limit + 1`` bytes per call, so a decompression bomb is refused (1009)
  after inflating at most the limit, never all of it.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from sluiceway.errors import InvalidPayload, MessageTooBig

__all__ = [
    "DEFAULT_DEFLATE_SETTINGS",
    "DeflateParams",
    "DeflateSettings",
    "PerMessageDeflate",
    "negotiate",
]

EXTENSION_NAME = "permessage-deflate"

# RFC 7692 §7.2.2: the receiver appends these 4 bytes before inflating the
# message; the sender strips them (§7.2.1).
_TAIL = b"\x00\x00\xff\xff"

ExtensionParams = Sequence[tuple[str, "str | None"]]


@dataclass(frozen=True, slots=True)
class DeflateSettings:
    """What the server is willing to use; ``negotiate`` meets the offer halfway.

    The window and memory defaults follow the ``websockets`` library (12 bits,
    memLevel 5): a compressor then costs ~32 KiB instead of ~256 KiB and a
    decompressor ~11 KiB instead of ~40 KiB, for a few percent of ratio.
    Messages shorter than ``min_size_bytes`` go out uncompressed (RFC 7692
    lets each message choose, §6): on short messages deflate costs more CPU
    than the bytes it saves.
    """

    server_max_window_bits: int = 12
    client_max_window_bits: int = 12
    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    compress_level: int = 6
    mem_level: int = 5
    min_size_bytes: int = 128

    def __post_init__(self) -> None:
        for name in ("server_max_window_bits", "client_max_window_bits"):
            if not 8 <= getattr(self, name) <= 15:
                raise ValueError(f"{name} must be between 8 and 15")
        if not 0 <= self.compress_level <= 9 or not 1 <= self.mem_level <= 9:
            raise ValueError("compress_level must be 0-9 and mem_level 1-9")


DEFAULT_DEFLATE_SETTINGS = DeflateSettings()


@dataclass(frozen=True, slots=True)
class DeflateParams:
    """The agreed parameters, as the server's response states them.

    A window of ``None`` was left out of the response, which means 15 bits.
    """

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int | None = None
    client_max_window_bits: int | None = None

    def response_value(self) -> str:
        """The ``Sec-WebSocket-Extensions`` response header value."""
        parts = [EXTENSION_NAME]
        if self.server_no_context_takeover:
            parts.append("server_no_context_takeover")
        if self.client_no_context_takeover:
            parts.append("client_no_context_takeover")
        if self.server_max_window_bits is not None:
            parts.append(f"server_max_window_bits={self.server_max_window_bits}")
        if self.client_max_window_bits is not None:
            parts.append(f"client_max_window_bits={self.client_max_window_bits}")
        return "; ".join(parts)


def _window_bits(value: str | None) -> int | None:
    """Parse a window size value: 1*DIGIT, no leading zero, 8-15 (§7.1.2)."""
    # The length check comes before int(): a long run of digits makes int() raise
    # (Python's digit limit) or cost quadratic time, and no valid value has 3 digits.
    if (
        value is None
        or not 1 <= len(value) <= 2
        or not value.isdigit()
        or not value.isascii()
        or value[0] == "0"
    ):
        return None
    bits = int(value)
    return bits if 8 <= bits <= 15 else None


def _accept_offer(params: ExtensionParams, settings: DeflateSettings) -> DeflateParams | None:
    """The response to one offer, or None if the offer is invalid (§7.1)."""
    seen: set[str] = set()
    server_nct = settings.server_no_context_takeover
    client_nct = settings.client_no_context_takeover
    server_bits: int | None = None
    client_bits: int | None = None
    # The server may always lower its own window (§7.1.2.1)...
    if settings.server_max_window_bits < 15:
        server_bits = settings.server_max_window_bits
    for name, value in params:
        # §7.1: "a server MUST decline an offer ... that has ... an extension
        # parameter appearing more than once" or an unknown one.
        if name in seen:
            return None
        seen.add(name)
        if name == "server_no_context_takeover":
            if value is not None:
                return None
            server_nct = True
        elif name == "client_no_context_takeover":
            if value is not None:
                return None
            # The client will not take over its context anyway; saying so
            # lets us drop the decompressor after each message (§7.1.1.2).
            client_nct = True
        elif name == "server_max_window_bits":
            requested = _window_bits(value)
            if requested is None:
                return None
            server_bits = min(requested, settings.server_max_window_bits)
        elif name == "client_max_window_bits":
            if value is None:
                client_bits = settings.client_max_window_bits
            else:
                offered = _window_bits(value)
                if offered is None:
                    return None
                client_bits = min(offered, settings.client_max_window_bits)
        else:
            return None
    # ...but may only limit the client's window when the client offered
    # client_max_window_bits (§7.1.2.2); client_bits stays None otherwise.
    return DeflateParams(
        server_no_context_takeover=server_nct,
        client_no_context_takeover=client_nct,
        server_max_window_bits=server_bits,
        client_max_window_bits=client_bits,
    )


def negotiate(
    offers: Sequence[ExtensionParams], settings: DeflateSettings = DEFAULT_DEFLATE_SETTINGS
) -> DeflateParams | None:
    """Accept the first valid ``permessage-deflate`` offer (RFC 7692 §5.1).

    Args:
        offers: the parameter lists of the client's permessage-deflate offers,
            in the order it sent them (names lower case, values unquoted).
        settings: the server's limits.

    Returns:
        The agreed parameters, or None to decline the extension.
    """
    for params in offers:
        accepted = _accept_offer(params, settings)
        if accepted is not None:
            return accepted
    return None


class PerMessageDeflate:
    """Compression state of one connection, created once the extension is agreed.

    zlib objects are created on first use and, without context takeover,
    dropped after each message (see the module invariants).
    """

    __slots__ = (
        "_compress_level",
        "_decoder",
        "_encoder",
        "_mem_level",
        "_min_size",
        "_receive_bits",
        "_receive_reset",
        "_send_bits",
        "_send_reset",
        "params",
    )

    def __init__(
        self, params: DeflateParams, settings: DeflateSettings = DEFAULT_DEFLATE_SETTINGS
    ) -> None:
        self.params = params
        self._send_bits = params.server_max_window_bits or 15
        self._receive_bits = params.client_max_window_bits or 15
        self._send_reset = params.server_no_context_takeover
        self._receive_reset = params.client_no_context_takeover
        self._compress_level = settings.compress_level
        self._mem_level = settings.mem_level
        # zlib cannot deflate with a 256-byte window (it silently uses 512,
        # madler/zlib#171), so with server_max_window_bits=8 every message
        # goes out uncompressed, which RFC 7692 allows per message.
        self._min_size = settings.min_size_bytes if self._send_bits > 8 else -1
        self._encoder: zlib._Compress | None = None
        self._decoder: zlib._Decompress | None = None

    @property
    def idle(self) -> bool:
        """True when no zlib object is held."""
        return self._encoder is None and self._decoder is None

    def compress(self, data: bytes) -> bytes | None:
        """The compressed payload of one message, or None to send it as is.

        A message is sent uncompressed when it is shorter than
        ``min_size_bytes`` or when the agreed window cannot be honoured.
        """
        if len(data) < self._min_size or self._min_size < 0:
            return None
        encoder = self._encoder
        if encoder is None:
            encoder = zlib.compressobj(
                self._compress_level, zlib.DEFLATED, -self._send_bits, self._mem_level
            )
        out = encoder.compress(data) + encoder.flush(zlib.Z_SYNC_FLUSH)
        # RFC 7692 §7.2.1: remove the empty stored block's 4-byte tail.
        if out.endswith(_TAIL):
            out = out[:-4]
        self._encoder = None if self._send_reset else encoder
        return out

    def decompress(self, data: bytes, *, final: bool, limit: int) -> bytes:
        """Inflate one frame's payload of a compressed message.

        Args:
            data: the frame payload (already unmasked).
            final: this frame ends the message (FIN set).
            limit: how many more bytes the message may grow by.

        Returns:
            The inflated bytes of this frame.

        Raises:
            MessageTooBig: the message would grow past ``limit`` (1009).
            InvalidPayload: the payload is not valid deflate data (1007).
        """
        decoder = self._decoder
        if decoder is None:
            decoder = self._decoder = zlib.decompressobj(-self._receive_bits)
        try:
            # max_length bounds the output: a bomb stops at limit + 1 bytes.
            out = decoder.decompress(data, limit + 1)
            if len(out) > limit:
                raise MessageTooBig(f"message exceeds {limit} bytes after decompression")
            if final:
                limit -= len(out)
                tail = decoder.decompress(_TAIL, limit + 1)
                if tail:
                    if len(tail) > limit:
                        raise MessageTooBig("message exceeds the size limit after decompression")
                    out += tail
        except zlib.error as exc:
            self._decoder = None
            raise InvalidPayload("invalid compressed data") from exc
        except MessageTooBig:
            self._decoder = None
            raise
        if final and (self._receive_reset or decoder.eof):
            # Without context takeover, or after a final deflate block (the
            # stream is over), the next message starts a fresh window.
            self._decoder = None
        return out
