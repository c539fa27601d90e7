"""The fragmented message being reassembled on one connection (RFC 6455 §5.4), sans I/O.

``connection.py`` creates a ``FragmentedMessage`` at the first frame of a message that is not FIN
and drops it after the last one, so a connection between messages holds none of this state.

Imports only the standard library, ``sluiceway.errors`` and the sibling ``events`` module.

Invariants:

* ``size`` counts bytes after inflation and ``wire`` bytes as received; the connection checks
  both against its limits from each fragment's header, before the fragment is buffered.
* Text is validated fragment by fragment (§8.1): invalid UTF-8 fails at the first fragment that
  shows it, and a code point split across fragments is fine.
* Memory is bounded by ``size``, not by the number of fragments: payloads go into one
  ``bytearray``, so endless empty continuations (legal: Autobahn 6.1.2 sends them) or 1-byte
  fragments cost no per-fragment object. Text is decoded once more, whole, at the end.
"""

from __future__ import annotations

import codecs

from sluiceway.errors import InvalidPayload
from sluiceway.websocket.events import BytesMessage, TextMessage

__all__ = ["FragmentedMessage", "Utf8Decoder"]

Utf8Decoder = codecs.getincrementaldecoder("utf-8")


class FragmentedMessage:
    """One message arriving in fragments.

    Args:
        text: a text message (validated and decoded as it arrives).
        compressed: its first frame had RSV1 (permessage-deflate, RFC 7692 §6.1).
    """

    __slots__ = ("buffer", "compressed", "size", "utf8", "wire")

    def __init__(self, text: bool, compressed: bool) -> None:
        self.compressed = compressed
        self.buffer = bytearray()
        self.size = 0
        self.wire = 0
        self.utf8: codecs.IncrementalDecoder | None = Utf8Decoder() if text else None

    def add(self, payload: bytes, final: bool) -> None:
        """Append one fragment's (inflated) payload.

        Raises:
            InvalidPayload: the text so far is not valid UTF-8 (1007).
        """
        self.size += len(payload)
        utf8 = self.utf8
        if utf8 is not None:
            try:
                # Validation only: the text is decoded whole in message().
                utf8.decode(payload, final)
            except UnicodeDecodeError as exc:
                raise InvalidPayload("text message is not valid UTF-8") from exc
        if payload:
            self.buffer += payload

    def message(self) -> TextMessage | BytesMessage:
        """The whole message, once the final fragment was added."""
        if self.utf8 is not None:
            # Validated fragment by fragment in add(), so this cannot fail.
            return TextMessage(self.buffer.decode("utf-8"))
        return BytesMessage(bytes(self.buffer))
