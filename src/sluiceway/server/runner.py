"""``Server``: bind, lifespan, serve, signals, graceful drain (``run()`` is in ``process.py``).

``Server(config, app)`` is the async object (tests and embedding):
``await start()`` loads the app, binds the listening sockets (so a port in
use fails before the app's startup runs), runs lifespan startup, then starts
accepting; ``port``/``sockets`` tell what was bound. ``await shutdown()``
stops accepting, asks every connection to finish (idle keep-alive ones close
at once, in-flight requests complete) for up to
``graceful_shutdown_timeout_s``, aborts what is left and cancels its app
tasks, then runs lifespan shutdown. ``await serve()`` does both around
SIGINT/SIGTERM (installed before startup, so a signal during a slow lifespan
startup cancels it and ``serve()`` returns); a second signal skips the wait
(``forced`` becomes True). With ``limit_max_requests``, reaching the limit
(plus its jitter) is a first signal too: ``serve()`` drains and returns.

Every wait in ``shutdown()`` is bounded (``server/stopping.py``), whatever the
app does: a task still running ``cancel_wait_s`` after its cancel (an app that
swallows ``CancelledError``), or a lifespan task that will not end, is logged
at ERROR and left in ``abandoned``; a second signal cuts every wait short.

With ``proxy_headers`` on, the connections see the app wrapped in
``ProxyHeadersMiddleware`` (lifespan sees the bare app). ``sockets=`` makes a
``Server`` serve sockets bound elsewhere: a worker under the supervisor.

uvicorn's API works as written: ``Server(Config(app, ...))`` takes the app
from the config (and, as uvicorn's, sets up logging when it serves);
``server.run()`` serves in a new loop in the calling thread; ``started`` is
a bool other threads poll (``started_event`` is the ``asyncio.Event``);
``should_exit``/``force_exit`` set from any thread wake the loop through
``call_soon_threadsafe`` (nothing polls them). Signal handlers go in from
the main thread only, through ``install_signal_handlers()``, which a
subclass may override with a no-op.

Start-up failures raise ``ConfigError`` (bad app path, unreadable TLS file,
port in use) or ``LifespanFailed``.

Imports ``sluiceway.config``, ``sluiceway.server.*``, ``sluiceway.transport``,
``sluiceway.lifespan``, ``sluiceway.importer``; the toolkit only for
``--interface wsgi`` (``sluiceway.wsgi``), on demand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any

from sluiceway import __version__
from sluiceway.asgi.trace import MessageTrace, tracing
from sluiceway.asgi.types import ASGIApp
from sluiceway.config import Config
from sluiceway.connection.state import ServerState
from sluiceway.errors import ConfigError
from sluiceway.importer import load_app
from sluiceway.lifespan import Lifespan
from sluiceway.server.app_adapters import FreshContext, adapt
from sluiceway.server.hosting import (
    configure_logging_from,
    hot_path_build,
    new_event_loop,
    run_in_loop,
    say_engine_notes,
)
from sluiceway.server.sockets import bind_sockets, describe_socket, removable_path
from sluiceway.server.stopping import (
    FORCED_WAIT_S,
    awaited_tasks,
    cancel_wait_s,
    report_abandoned,
    wait_bounded,
)

# bind_sockets is re-exported: tests and embedders import it from here.
__all__ = ["Server", "bind_sockets", "describe_socket"]

logger = logging.getLogger("sluiceway.error")

# make_protocol_factory(config, app, state, ssl_context) -> protocol factory.
ProtocolFactoryMaker = Callable[..., Callable[[], asyncio.Protocol]]

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Server:
    """One listening server on a running event loop; see the module docstring."""

    def __init__(
        self,
        config: Config,
        app: Any = None,
        *,
        protocol_factory: ProtocolFactoryMaker | None = None,
        sockets: list[socket.socket] | None = None,
        on_started: Callable[[Server], None] | None = None,
    ) -> None:
        # uvicorn's Server(config) takes the app from the config; such a
        # server also sets up logging when it serves, as uvicorn's Config does.
        self._uvicorn_form = app is None
        if app is None:
            app = config.app
            if app is None:
                raise ConfigError("Server(config) needs the app: Config(app, ...)")
        self.config = config
        self.app_source = app
        self.app: ASGIApp | None = None
        self.state = ServerState(config)
        self.lifespan: Lifespan | None = None
        self.servers: list[asyncio.AbstractServer] = []
        self.sockets: list[socket.socket] = []
        # Set once start() is serving: serve() as a task, then await this.
        # (``started`` is uvicorn's bool of the same fact, for other threads.)
        self.started_event = asyncio.Event()
        self._protocol_factory = protocol_factory
        # Sockets bound by someone else (the supervisor, for a worker): served
        # and closed here, but a Unix socket's path is not ours to unlink.
        self._given_sockets = sockets
        self._on_started = on_started
        # Made here, not in start(): a signal during lifespan startup must find them.
        self._exit = asyncio.Event()
        self._force = asyncio.Event()
        # uvicorn's should_exit/force_exit, settable from any thread; serve()
        # mirrors them into the events above on its loop (_wake).
        self._should_exit = False
        self._force_exit = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._installed_signals: list[signal.Signals] = []
        self._started = False
        self._stopped = False
        self._uds_path: str | None = None
        self._port: int | None = None
        # Tasks shutdown() gave up waiting for (reported), and its own helpers
        # stuck awaiting them: the runner's last clean-up does not wait again.
        self.abandoned: set[asyncio.Future[Any]] = set()
        self._cancel_wait_s = cancel_wait_s(config.graceful_shutdown_timeout_s)
        # The --metrics-port listener (or a worker's writer): server/metrics_listener.py.
        self._metrics: Any = None

    # -- public API ----------------------------------------------------------------------

    @property
    def forced(self) -> bool:
        """True once a second exit request (or ``force``) skipped the drain."""
        return self._force.is_set()

    @property
    def started(self) -> bool:
        """True once serving (uvicorn's flag, polled from other threads); see ``started_event``."""
        return self.started_event.is_set()

    @property
    def should_exit(self) -> bool:
        """uvicorn's flag: set it True, from any thread, to shut down gracefully."""
        return self._should_exit

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        if value:
            self._set_exit(force=False)

    @property
    def force_exit(self) -> bool:
        """uvicorn's flag: set it True, from any thread, to skip the drain."""
        return self._force_exit

    @force_exit.setter
    def force_exit(self, value: bool) -> None:
        if value:
            self._set_exit(force=True)

    @property
    def port(self) -> int | None:
        """The TCP port bound (the real one when the config said 0); None on a Unix socket."""
        return self._port

    async def start(self) -> None:
        """Load the app, bind, run lifespan startup, start accepting.

        Raises:
            ConfigError: the app cannot be loaded, a TLS file is bad, or binding failed.
            LifespanFailed: the app's lifespan startup failed.
        """
        if self._started:
            raise RuntimeError("Server.start() called twice")
        self._started = True
        loop = asyncio.get_running_loop()
        config = self.config
        self.app = self._load_app()
        if tracing():  # --log-level trace: wrapped only then, so the hot path pays nothing
            self.app = MessageTrace(self.app)
        # After the app's import (it may configure the layers), before binding
        # and lifespan: a configured layer that cannot load is a one-line
        # start-up error, not a 500 on every WebSocket later.
        from sluiceway.layers import check_configured_layers

        check_configured_layers()
        ssl_context = None
        if config.is_ssl:
            from sluiceway.transport.tls import create_ssl_context

            ssl_context = create_ssl_context(config)
        if self._given_sockets is not None:
            self.sockets = list(self._given_sockets)
        else:
            self.sockets = bind_sockets(config)
            self._uds_path = removable_path(config, self.sockets)
        # Read now: it stays answerable after shutdown closed the sockets.
        for sock in self.sockets:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                self._port = int(sock.getsockname()[1])
                break
        # The start-up lines in order: this banner, the app's startup, then "Listening on".
        logger.info(
            "sluiceway %s (pid %d, %s loop, Python %s, %s)",
            __version__,
            os.getpid(),
            type(loop).__module__.split(".")[0],
            sys.version.split()[0],
            hot_path_build(),
        )
        try:
            self.lifespan = Lifespan(
                self.app,
                config.lifespan,
                self.state.lifespan_state,
                config.lifespan_startup_timeout_s,
                config.lifespan_shutdown_timeout_s,
            )
            await self.lifespan.startup()
            app = self.app
            if config.proxy_headers:
                from sluiceway.server.proxy_headers import ProxyHeadersMiddleware, TrustedHosts

                app = ProxyHeadersMiddleware(app, TrustedHosts(config.forwarded_allow_ips))
            factory = self._make_factory()(config, app, self.state, ssl_context)
            for sock in self.sockets:
                self.servers.append(await _serve_on(loop, sock, factory, ssl_context, config))
            if config.metrics_port is not None:
                from sluiceway.server.metrics_listener import start_exporter

                self._metrics = await start_exporter(self.state, config)
        except BaseException:
            # A failed or cancelled start cleans up after itself: serve() skips shutdown().
            if self.lifespan is not None:
                await self.lifespan.cancel()
            self._close_sockets()
            raise
        self.state.start_clock(loop)
        if config.limit_max_requests is not None:
            self.state.request_limit = request_limit(
                config.limit_max_requests, config.limit_max_requests_jitter
            )
            self.state.on_request_limit = self._on_request_limit
        scheme = "https" if ssl_context is not None else "http"
        if self._given_sockets is None:  # else the supervisor said it once for all workers
            for sock in self.sockets:
                logger.info("Listening on %s", describe_socket(sock, scheme, config))
        self.started_event.set()

    def run(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's ``Server.run()``: ``serve()`` in a new event loop, in this thread.

        Unlike ``sluiceway.run()`` it leaves the process alone (no worker
        processes, no exit code, no ``os._exit``): it may run in a thread of
        a bigger program, as in uvicorn's run-in-a-thread test pattern.

        Raises:
            ConfigError: as ``serve()``.
            LifespanFailed: the app's lifespan startup failed.
        """
        if self.config.workers > 1 or self.config.reload:
            logger.warning("Server.run() serves one process: run() does workers and reload.")
        loop = new_event_loop(self.config.loop)
        run_in_loop(loop, self, self.serve(sockets))

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        """Start, wait for SIGINT/SIGTERM (or ``request_exit()``, ``should_exit``), shut down.

        The signal handlers go in before ``start()``: a signal during a slow
        lifespan startup cancels the startup (the app's task is cancelled,
        ``lifespan.shutdown`` is not sent since startup never completed) and
        ``serve()`` returns normally, instead of Python's default handling
        killing the process with no cleanup. ``sockets``: serve these, bound
        elsewhere, as uvicorn's ``serve(sockets=...)``.
        """
        if sockets is not None:
            self._given_sockets = sockets
        if self._uvicorn_form:
            configure_logging_from(self.config)
            say_engine_notes(self.config)
        self._loop = asyncio.get_running_loop()
        self._wake()  # should_exit set before serve() began
        self._installed_signals = []
        self.install_signal_handlers()
        installed = self._installed_signals
        try:
            started = await self._start_unless_exit()
        except BaseException:
            self._remove_signal_handlers(installed)
            raise
        if not started:
            self._remove_signal_handlers(installed)
            logger.info("Stopped during application startup.")
            return
        try:
            if installed and self._given_sockets is None:
                logger.info("Press CTRL+C to stop.")
            if self._on_started is not None:
                self._on_started(self)
            await self._exit.wait()
        finally:
            await self.shutdown()
            self._remove_signal_handlers(installed)

    def request_exit(self, force: bool = False) -> None:
        """Ask ``serve()`` to shut down (a second request, or ``force``, skips the drain)."""
        self._set_exit(force=force or self._should_exit)

    def _set_exit(self, force: bool) -> None:
        """Record an exit request and wake ``serve()``'s loop, from any thread."""
        self._should_exit = True
        self._force_exit = self._force_exit or force
        loop = self._loop
        if loop is None:
            return  # serve() has not begun: it looks at the flags when it does
        try:
            in_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            in_loop = False
        if in_loop:
            self._wake()
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing left to stop
            loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        if self._should_exit:
            self._exit.set()
        if self._force_exit:
            self._force.set()

    async def wait_exit_requested(self) -> None:
        """Return once a signal or ``request_exit()`` asked the server to stop."""
        await self._exit.wait()

    def _on_request_limit(self) -> None:
        logger.info(
            "Served %d requests, the limit was %d (--limit-max-requests): shutting down.",
            self.state.requests,
            self.state.request_limit,
        )
        self.request_exit()

    async def shutdown(self) -> None:
        """Stop accepting, drain connections (bounded), then lifespan shutdown."""
        if self._stopped or not self._started:
            return
        self._stopped = True
        state = self.state
        state.shutting_down = True
        for server in self.servers:
            server.close()
        for conn in list(state.connections):
            conn.shutdown()
        await self._drain()
        state.stop_clock()
        if self.lifespan is not None:
            await self._stop_lifespan(self.lifespan)
        closing = [asyncio.ensure_future(server.wait_closed()) for server in self.servers]
        await wait_bounded(closing, 1.0, self._force)
        if self._metrics is not None:
            await self._metrics.close()  # after the drain: the last counts are in
        self._close_sockets()
        logger.info("Server stopped.")

    # -- internals -----------------------------------------------------------------------

    async def _start_unless_exit(self) -> bool:
        """``start()``, abandoned if an exit is requested first; True when it started."""
        starting = asyncio.ensure_future(self.start())
        exiting = asyncio.ensure_future(self._exit.wait())
        try:
            await asyncio.wait({starting, exiting}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            exiting.cancel()
            if not starting.done():
                starting.cancel()
                # Bounded: a lifespan startup that swallows the cancel is abandoned.
                self._abandon(await wait_bounded([starting], self._cancel_wait_s, self._force))
        if not starting.done() or starting.cancelled():
            return False
        starting.result()  # ConfigError, LifespanFailed
        return True

    def _load_app(self) -> ASGIApp:
        config = self.config
        source = self.app_source
        if isinstance(source, str):
            if config.env_file is not None:
                from sluiceway.envfile import load_env_file

                load_env_file(config.env_file)
            source = load_app(source, config.app_dir, config.factory)
        elif config.factory:
            try:
                source = source()
            except Exception as exc:
                raise ConfigError(f"app factory raised {type(exc).__name__}: {exc}") from None
        app = adapt(source, config.interface)
        return FreshContext(app) if config.reset_contextvars else app

    def _make_factory(self) -> ProtocolFactoryMaker:
        if self._protocol_factory is not None:
            return self._protocol_factory
        from sluiceway.server.listener import make_protocol_factory

        maker: ProtocolFactoryMaker = make_protocol_factory
        return maker

    async def _drain(self) -> None:
        state = self.state
        timeout = self.config.graceful_shutdown_timeout_s
        if state.connections and not self.forced:
            closed = asyncio.ensure_future(state.wait_connections_closed())
            forced = asyncio.ensure_future(self._force.wait())
            await asyncio.wait({closed, forced}, timeout=timeout, return_when="FIRST_COMPLETED")
            for waiter in (closed, forced):
                waiter.cancel()
        if state.connections:
            if not self.forced:
                logger.warning(
                    "Graceful shutdown timed out after %g s; closing %d connection(s).",
                    timeout,
                    len(state.connections),
                )
            for conn in list(state.connections):
                conn.abort()
        tasks = [task for task in state.tasks if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            # Cancelled apps get a moment to run their finally blocks, not forever:
            # an app can catch CancelledError and carry on.
            self._abandon(await wait_bounded(tasks, self._cancel_wait_s, self._force))

    async def _stop_lifespan(self, lifespan: Lifespan) -> None:
        """Lifespan shutdown, or only its cancel when forced; bounded either way.

        ``Lifespan.shutdown`` waits for the app's answer (its timeout), up to
        1 s more for the task to end, then cancels it and waits for that
        without a bound, as ``Lifespan.cancel`` does.
        """
        wait_s = self._cancel_wait_s
        if not self.forced:
            timeout = lifespan.shutdown_timeout_s + min(lifespan.shutdown_timeout_s, 1.0)
            shutting = asyncio.ensure_future(lifespan.shutdown())
            left = await wait_bounded([shutting], timeout + wait_s, self._force)
            if not left:
                return
            if not self.forced:
                # shutdown() has cancelled the app's task already, in vain.
                self._abandon(left)
                return
            # A second signal during lifespan shutdown: cancel it now.
            shutting.cancel()
            self.abandoned.update(awaited_tasks(shutting))
        # Forced: the user wants out now, and a shutdown handler could take as
        # long as the drain just skipped.
        cancelling = asyncio.ensure_future(lifespan.cancel())
        self._abandon(await wait_bounded([cancelling], wait_s, self._force))

    def _abandon(self, tasks: set[asyncio.Future[Any]]) -> None:
        waited = FORCED_WAIT_S if self.forced else self._cancel_wait_s
        report_abandoned(tasks, waited)
        for task in tasks:
            # With the tasks it awaits (the lifespan task under a helper): reported once.
            self.abandoned.update(awaited_tasks(task))

    def install_signal_handlers(self) -> None:
        """SIGINT/SIGTERM stop ``serve()``; in the main thread only.

        uvicorn's name: a subclass that overrides it with a no-op serves
        without touching the process's signals.
        """
        if threading.current_thread() is not threading.main_thread():
            return  # signals are delivered to the main thread alone
        loop = asyncio.get_running_loop()
        for sig in HANDLED_SIGNALS:
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
            except (ValueError, RuntimeError, NotImplementedError):
                continue  # a loop without signal support
            self._installed_signals.append(sig)

    def _remove_signal_handlers(self, installed: list[signal.Signals]) -> None:
        loop = asyncio.get_running_loop()
        for sig in installed:
            loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._exit.is_set():
            logger.warning("Received %s again: forcing exit.", sig.name)
        elif not self.started:
            # Nothing is in flight yet: promising a drain would mislead.
            logger.info("Received %s during application startup: stopping.", sig.name)
        else:
            logger.info(
                "Received %s: shutting down (up to %g s for requests in flight).",
                sig.name,
                self.config.graceful_shutdown_timeout_s,
            )
        self.request_exit()

    def _close_sockets(self) -> None:
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.close()
        if self._uds_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._uds_path)
            self._uds_path = None


def request_limit(limit: int, jitter: int) -> int:
    """``--limit-max-requests`` plus a random 0..``jitter``, drawn once per process."""
    return limit + random.randint(0, jitter) if jitter else limit


# Python 3.13's loops (asyncio's and uvloop's) unlink a Unix socket's path
# when its server closes, unless told not to: the path is removed here only
# when this server bound it (``removable_path``), never systemd's or a
# supervisor's. Before 3.13 asyncio has no such argument (and unlinks nothing).
_KEEP_SOCKET_FILE: dict[str, Any] = {"cleanup_socket": False} if sys.version_info >= (3, 13) else {}


async def _serve_on(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    factory: Callable[[], asyncio.Protocol],
    ssl_context: Any,
    config: Config,
) -> asyncio.AbstractServer:
    if sock.family == socket.AF_UNIX:
        return await loop.create_unix_server(
            factory, sock=sock, ssl=ssl_context, backlog=config.backlog, **_KEEP_SOCKET_FILE
        )
    return await loop.create_server(factory, sock=sock, ssl=ssl_context, backlog=config.backlog)
