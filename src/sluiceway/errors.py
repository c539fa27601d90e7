"""The exception hierarchy of sluiceway.

Every protocol error carries its wire meaning as class attributes, so that each
protocol maps errors to the wire in one function::

    SluicewayError
    ├─ ConfigError                 bad option or app path (CLI: one line, exit 2)
    ├─ ProtocolError               status / close_code / h2_error
    │  ├─ RemoteProtocolError      the peer broke the protocol
    │  │  ├─ BadRequest            400
    │  │  ├─ RequestTimeout        408 (a request body that stopped coming)
    │  │  ├─ URITooLong            414
    │  │  ├─ HeadersTooLarge       431
    │  │  ├─ NotImplementedByServer 501 (unknown transfer coding, CONNECT)
    │  │  ├─ VersionNotSupported   505
    │  │  ├─ BodyTooLarge          413 / 1009
    │  │  ├─ WebSocketProtocolError 1002
    │  │  ├─ InvalidPayload        1007
    │  │  └─ MessageTooBig         1009
    │  └─ LocalProtocolError       we, or the app, misused the protocol
    │     ├─ ASGIMessageError      malformed or out-of-order ASGI message
    │     └─ InvalidState
    ├─ ConnectionClosing           stops llhttp mid-feed once we close (never escapes HTTP/1.1)
    ├─ AppError                    wraps an app exception and the phase it hit
    ├─ LifespanFailed              lifespan startup failed (CLI: exit 1)
    └─ LayerError                  channel layers
       ├─ ChannelFull
       ├─ InvalidChannelName     also a TypeError, as Channels raises
       └─ InvalidMessage         not a dict with a "type", not serialisable, too large

``ClientDisconnected`` is what ``send`` raises once the peer has gone (ASGI
spec 2.4+ asks for an ``OSError`` subclass), so it derives from ``OSError``.

This module imports nothing but the standard library.
"""

from __future__ import annotations


class SluicewayError(Exception):
    """Base class of every error sluiceway raises on purpose."""


class ConfigError(SluicewayError):
    """A configuration value, CLI option or app import path is wrong."""


class ProtocolError(SluicewayError):
    """A protocol rule was broken. Subclasses carry their wire meaning."""

    status: int = 400
    close_code: int = 1002
    h2_error: int = 0x1  # PROTOCOL_ERROR


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol."""


class BadRequest(RemoteProtocolError):
    status = 400


class RequestTimeout(RemoteProtocolError):
    """The request body made no progress in time (RFC 9110 §15.5.9)."""

    status = 408


class URITooLong(RemoteProtocolError):
    status = 414


class HeadersTooLarge(RemoteProtocolError):
    status = 431
    h2_error = 0xB  # ENHANCE_YOUR_CALM


class NotImplementedByServer(RemoteProtocolError):
    """The request asks for something this server does not do (RFC 9110 §15.6.2)."""

    status = 501


class VersionNotSupported(RemoteProtocolError):
    """The request's HTTP version is neither 1.0 nor 1.1 (RFC 9110 §15.6.6)."""

    status = 505


class BodyTooLarge(RemoteProtocolError):
    status = 413
    close_code = 1009


class WebSocketProtocolError(RemoteProtocolError):
    close_code = 1002


class InvalidPayload(RemoteProtocolError):
    close_code = 1007


class MessageTooBig(RemoteProtocolError):
    status = 413
    close_code = 1009


class LocalProtocolError(ProtocolError):
    """We, or the application, misused the protocol."""

    status = 500
    close_code = 1011
    h2_error = 0x2  # INTERNAL_ERROR


class ASGIMessageError(LocalProtocolError):
    """The application sent a malformed or out-of-order ASGI message."""


class InvalidState(LocalProtocolError):
    """An operation is not allowed in the current state."""


class ConnectionClosing(SluicewayError):
    """Raised from a parser callback once the connection is closing: parse no more."""


class AppError(SluicewayError):
    """Wraps an exception raised by the application, with the phase it hit."""

    def __init__(self, phase: str, exc: BaseException) -> None:
        super().__init__(f"application failed during {phase}: {exc!r}")
        self.phase = phase
        self.exc = exc


class LifespanFailed(SluicewayError):
    """The application's lifespan startup failed; the server must not serve.

    ``message`` is the app's own text (``lifespan.startup.failed``), or a
    description of the exception it raised under ``--lifespan on``.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ClientDisconnected(OSError):
    """Raised by ``send`` after the client has gone away (ASGI spec 2.4+)."""


class LayerError(SluicewayError):
    """Base class of channel layer errors."""


class ChannelFull(LayerError):
    """The channel is at capacity."""


class InvalidChannelName(LayerError, ValueError, TypeError):
    """A channel or group name breaks the naming rules.

    Channels raises ``TypeError`` for bad names; deriving from it too lets
    code written for Channels catch ours unchanged.
    """


class InvalidMessage(LayerError, ValueError):
    """A layer message is not a dict with a ``type``, cannot be serialised or is too large."""
