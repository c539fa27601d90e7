"""``sluiceway worker APP CHANNEL [CHANNEL ...]``: background consumers for named channels.

For each named channel the worker keeps one application instance with the
scope ``{"type": "channel", "channel": name}`` (as Channels' worker does; a
``ChannelNameRouter`` inside the app picks the consumer by name) and feeds it
the messages ``layer.receive(name)`` returns. A queue of one message sits
between the two, so a slow consumer leaves messages in the layer, where its
capacity and expiry apply, instead of piling them up in the worker: at most
two are out of the layer per channel (one queued, one held by the listener
waiting for room), and their expiry is not checked again.

An instance that returns or raises is logged and started afresh: at once if
a message already waits for it, else for the next message; the worker itself
keeps running. SIGTERM or SIGINT stops receiving,
gives the messages already handed to instances
``--graceful-timeout`` seconds from their hand-over (ASGI has no "done"
signal, so time is the bound), then cancels the instances, returns to the
layer the messages taken from it but never handed over, and closes it. Messages
still in the layer stay there for the next worker. A second signal cancels
at once.

Exit codes: 0 after a graceful stop; 2 for a usage error, an app that does
not import or no channel layer, as one line on stderr.

Imports the toolkit side (layers, importer, asgi compat) and logging setup;
never the HTTP server.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from sluiceway.asgi.compat import guarantee_single_callable
from sluiceway.asgi.types import ASGIApp, Message
from sluiceway.errors import ASGIMessageError, ConfigError, InvalidChannelName
from sluiceway.layers import DEFAULT_CHANNEL_LAYER, ChannelLayer, get_channel_layer
from sluiceway.layers.base import require_valid_channel_name

logger = logging.getLogger("sluiceway.error")

EXIT_USAGE = 2


def _fail(message: str) -> NoReturn:
    sys.stderr.write(f"sluiceway worker: error: {message}\n")
    sys.stderr.flush()
    raise SystemExit(EXIT_USAGE)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        _fail(f"{message} (see 'sluiceway worker --help')")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sluiceway worker",
        description="Consume channel-layer channels with an ASGI app (scope type 'channel').",
    )
    parser.add_argument("app", help='the application, "module:attribute"')
    parser.add_argument("channels", nargs="+", metavar="channel", help="channel names to consume")
    parser.add_argument(
        "--layer",
        default=DEFAULT_CHANNEL_LAYER,
        help="channel layer alias (default: %(default)s); configure it with"
        " SLUICEWAY_CHANNEL_LAYER or CHANNEL_LAYERS",
    )
    parser.add_argument("--app-dir", default=".", help="directory put first on sys.path")
    parser.add_argument(
        "--graceful-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long instances may finish their message on shutdown (default: %(default)s)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug", "trace"],
    )
    return parser


@dataclass(eq=False)
class _Instance:
    """One application instance consuming one channel."""

    channel: str
    queue: asyncio.Queue[Message] = field(default_factory=lambda: asyncio.Queue(maxsize=1))
    task: asyncio.Task[None] | None = None
    # A message taken from the layer whose hand-over was cut short by shutdown.
    leftover: Message | None = None


class Worker:
    """Runs ``app`` for each of ``channels`` on ``layer`` until ``stop()``.

    Args:
        app: an ASGI 2 or 3 application.
        channels: channel names; process-local names (with ``!``) are refused.
        layer: the channel layer to receive from.
        graceful_timeout_s: how long ``stop`` lets instances finish.
    """

    def __init__(
        self,
        app: Any,
        channels: Sequence[str],
        layer: ChannelLayer,
        graceful_timeout_s: float = 30.0,
    ) -> None:
        for channel in channels:
            require_valid_channel_name(channel)
            if "!" in channel:
                raise ConfigError(f"a worker consumes named channels, not {channel!r}")
        self.app: ASGIApp = guarantee_single_callable(app)
        self.channels = list(dict.fromkeys(channels))
        self.layer = layer
        self.graceful_timeout_s = graceful_timeout_s
        self._instances = {name: _Instance(name) for name in self.channels}
        self._listeners: list[asyncio.Task[None]] = []
        self._stopping: asyncio.Event | None = None
        self._last_handover: float | None = None
        self.messages_handled = 0

    async def run(self) -> None:
        """Consume until ``stop()`` is called, then drain and return."""
        self._stopping = asyncio.Event()
        if type(self.layer).__name__ == "InMemoryChannelLayer":
            logger.warning(
                "worker uses an in-memory channel layer: only this process can send to it"
                " (set SLUICEWAY_CHANNEL_LAYER=redis://... to share one)"
            )
        self._listeners = [
            asyncio.ensure_future(self._listen(inst)) for inst in self._instances.values()
        ]
        logger.info("worker consuming %s", ", ".join(self.channels))
        await self._stopping.wait()
        for task in self._listeners:
            task.cancel()
        await asyncio.gather(*self._listeners, return_exceptions=True)
        await self._drain()

    def stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()

    async def _listen(self, inst: _Instance) -> None:
        backoff = 0.1
        while True:
            try:
                message = await self.layer.receive(inst.channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                # The layer retries connection trouble itself; anything that
                # still escapes must not kill the worker.
                logger.exception("receiving on %r failed; retrying", inst.channel)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            if inst.task is None or inst.task.done():
                inst.task = asyncio.ensure_future(self._run_instance(inst))
            try:
                await inst.queue.put(message)
            except asyncio.CancelledError:
                inst.leftover = message  # taken off the layer: must not be lost
                raise

    async def _run_instance(self, inst: _Instance) -> None:
        scope = {"type": "channel", "channel": inst.channel, "asgi": {"version": "3.0"}}
        taken = 0

        async def receive() -> Message:
            nonlocal taken
            message = await inst.queue.get()
            self._last_handover = asyncio.get_running_loop().time()
            self.messages_handled += 1
            taken += 1
            return message

        async def send(message: Message) -> None:
            raise ASGIMessageError(
                f"a worker's app cannot send ASGI messages (got {message.get('type')!r});"
                " use the channel layer"
            )

        backoff = 0.1
        while True:
            taken = 0
            try:
                await self.app(scope, receive, send)
                logger.warning("application for channel %r returned; restarting it", inst.channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("application for channel %r raised; restarting it", inst.channel)
            # The listener restarts an instance only before it hands over a
            # message: if one is already queued (the listener may be blocked
            # on a full queue), nobody else would ever take it.
            if inst.queue.empty():
                return
            if taken == 0:
                # An app that ends without receiving must not spin the loop.
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            else:
                backoff = 0.1

    async def _drain(self) -> None:
        """Give every message handed over at least ``graceful_timeout_s``, then cancel.

        ASGI has no "done with this message" signal, and consumers read ahead
        (they await ``receive()`` while a handler still runs), so an instance
        waiting in ``receive()`` may still be busy. The only bound that holds
        for any app is time since the last hand-over.
        """
        loop = asyncio.get_running_loop()
        for inst in self._instances.values():
            if inst.leftover is not None and not inst.queue.full():
                inst.queue.put_nowait(inst.leftover)
                inst.leftover = None
                self._last_handover = loop.time()
        tasks = [i.task for i in self._instances.values() if i.task is not None]
        while True:
            # A message still queued is handed over during the wait, which moves
            # the deadline: recompute it until nothing new was handed over.
            pending = [t for t in tasks if not t.done()]
            if not pending or self._last_handover is None:
                break
            remaining = self._last_handover + self.graceful_timeout_s - loop.time()
            if remaining <= 0:
                break
            logger.info("waiting up to %.1f s for messages in hand", remaining)
            await asyncio.wait(pending, timeout=remaining)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for inst in self._instances.values():
            await self._give_back(inst)

    async def _give_back(self, inst: _Instance) -> None:
        """Return to the layer what was taken from it but never handed over.

        The next worker gets them, at the back of the channel: order bends,
        nothing is lost (unless the layer refuses them, which is logged).
        """
        messages = []
        while not inst.queue.empty():
            messages.append(inst.queue.get_nowait())
        if inst.leftover is not None:
            messages.append(inst.leftover)
            inst.leftover = None
        for message in messages:
            try:
                await self.layer.send(inst.channel, dict(message))
            except Exception:
                logger.exception("could not return a message to %r on shutdown", inst.channel)


async def serve(worker: Worker) -> None:
    """Run ``worker`` with SIGTERM/SIGINT handlers; close the layer afterwards."""
    loop = asyncio.get_running_loop()
    signals = 0
    main_task = asyncio.current_task()

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            logger.info("worker shutting down")
            worker.stop()
        elif main_task is not None:
            main_task.cancel()

    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, on_signal)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
            pass
    try:
        await worker.run()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await worker.layer.close()


def main(argv: Sequence[str] | argparse.Namespace | None = None) -> int:
    """Entry point of ``sluiceway worker``; ``argv`` without the subcommand."""
    if isinstance(argv, argparse.Namespace):
        args = argv
    else:
        args = build_parser().parse_args(list(sys.argv[2:] if argv is None else argv))

    from sluiceway.importer import load_app
    from sluiceway.logconfig import configure_logging

    configure_logging(args.log_level, False)
    try:
        app = load_app(args.app, app_dir=args.app_dir)
        layer = get_channel_layer(args.layer)
        if layer is None:
            raise ConfigError(
                f"no channel layer {args.layer!r} is configured"
                " (set SLUICEWAY_CHANNEL_LAYER, e.g. redis://localhost:6379/0)"
            )
        worker = Worker(app, args.channels, layer, args.graceful_timeout)
    except (ConfigError, InvalidChannelName) as exc:
        _fail(str(exc))
    try:
        asyncio.run(serve(worker))
    except KeyboardInterrupt:
        return 130
    return 0
