"""Message bodies to bytes and back: msgpack, optionally encrypted with Fernet.

Both backends pass every message through ``MessageSerializer`` once per
``send``/``group_send``: Redis stores the bytes, the in-memory layer decodes
them again right away. That gives both the same rules (what cannot be packed
fails on ``send`` with ``InvalidMessage`` in either backend) and an isolated
copy, cheaper than ``copy.deepcopy``.

Encryption (optional extra ``crypto``) uses ``cryptography``'s Fernet:
AES-128-CBC plus HMAC-SHA256 with a timestamp. Keys are any strings; each is
stretched with SHA-256 into a Fernet key. The first key encrypts; every key
decrypts (``MultiFernet``), so a key is rotated by putting the new key first,
deploying, then dropping the old key once no message sealed with it can still
be queued (after ``expiry_s``).

Imports msgpack, optionally cryptography, and ``sluiceway.errors``.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from typing import Any

import msgpack

from sluiceway.errors import ConfigError, InvalidMessage

# Redis caps a string at 512 MiB, but a channel message is a notification,
# not a file transfer; 1 MiB keeps one runaway sender from filling Redis.
DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024


class MessageSerializer:
    """msgpack with optional symmetric encryption and a size limit.

    Args:
        symmetric_encryption_keys: strings or bytes; the first encrypts, all
            decrypt. ``None`` or empty: messages are stored in clear.
        max_message_bytes: the largest packed (and sealed) message accepted.
    """

    def __init__(
        self,
        symmetric_encryption_keys: Sequence[str | bytes] | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        if max_message_bytes <= 0:
            raise ConfigError("max_message_bytes must be positive")
        self.max_message_bytes = max_message_bytes
        self._crypter: Any = None
        if symmetric_encryption_keys:
            if isinstance(symmetric_encryption_keys, (str, bytes)):
                raise ConfigError("symmetric_encryption_keys must be a list of keys, not one key")
            try:
                from cryptography.fernet import Fernet, MultiFernet
            except ImportError as exc:  # pragma: no cover - installed in the test env
                raise ConfigError(
                    "symmetric_encryption_keys needs the 'cryptography' package"
                    " (pip install 'sluiceway[crypto]')"
                ) from exc
            self._crypter = MultiFernet([Fernet(_fernet_key(k)) for k in symmetric_encryption_keys])

    @property
    def encrypted(self) -> bool:
        return self._crypter is not None

    def dumps(self, message: dict[str, Any]) -> bytes:
        """Pack (and seal) ``message``.

        Raises:
            InvalidMessage: a value msgpack cannot represent, or too large.
        """
        try:
            data: bytes = msgpack.packb(message, use_bin_type=True)
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidMessage(f"layer message cannot be serialised: {exc}") from exc
        if self._crypter is not None:
            data = self._crypter.encrypt(data)
        if len(data) > self.max_message_bytes:
            raise InvalidMessage(
                f"layer message is {len(data)} bytes serialised;"
                f" the limit is {self.max_message_bytes}"
            )
        return data

    def loads(self, data: bytes) -> dict[str, Any]:
        """Open and unpack bytes made by ``dumps`` (with any of the keys).

        Raises:
            InvalidMessage: the bytes are not a message sealed with our keys.
        """
        if self._crypter is not None:
            try:
                data = self._crypter.decrypt(data)
            except Exception as exc:  # InvalidToken, or garbage that is not base64
                raise InvalidMessage("layer message cannot be decrypted with our keys") from exc
        try:
            message = msgpack.unpackb(data, raw=False)
        except Exception as exc:  # msgpack raises several unrelated types
            raise InvalidMessage(f"layer message cannot be deserialised: {exc}") from exc
        if not isinstance(message, dict):
            raise InvalidMessage("layer message did not deserialise to a dict")
        return message


def _fernet_key(key: str | bytes) -> bytes:
    raw = key.encode("utf-8") if isinstance(key, str) else key
    if not raw:
        raise ConfigError("an encryption key must not be empty")
    return base64.urlsafe_b64encode(hashlib.sha256(raw).digest())
