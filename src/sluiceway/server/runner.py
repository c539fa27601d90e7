"""Run a server: bind, lifespan, serve, signals, graceful drain; ``run()`` and ``Server``.

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

``run(app, **options)`` builds the ``Config``, sets up logging and the event
loop (uvloop unless unavailable: said once) and serves until a signal; with
``workers`` > 1 or ``reload`` it hands over to ``server/supervisor.py``. It
owns the process's end: the loop's other tasks get a bounded wait too, a
signal after ``serve()`` returned exits at once (130), and if anything was
abandoned (a task, or at exit a thread) the process ends by ``os._exit``
instead of waiting on it forever.

Start-up failures raise ``ConfigError`` (bad app path, unreadable TLS file,
port in use: the CLI exits 2) or ``LifespanFailed`` (exit 1).

Imports ``sluiceway.config``, ``sluiceway.server.*``, ``sluiceway.transport``,
``sluiceway.lifespan``, ``sluiceway.importer``; the toolkit only for
``--interface wsgi`` (``sluiceway.wsgi``), on demand.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import random
import signal
import socket
import sys
from collections.abc import Callable
from importlib.machinery import EXTENSION_SUFFIXES
from typing import Any, cast

from sluiceway import __version__
from sluiceway.asgi.compat import double_to_single_callable, guarantee_single_callable
from sluiceway.asgi.types import ASGIApp
from sluiceway.config import Config, config_from_options
from sluiceway.errors import ConfigError
from sluiceway.importer import load_app
from sluiceway.lifespan import Lifespan
from sluiceway.server.sockets import bind_sockets, describe_socket
from sluiceway.server.state import ServerState
from sluiceway.server.stopping import (
    EXIT_FORCED,
    FORCED_WAIT_S,
    awaited_tasks,
    bound_interpreter_exit,
    cancel_wait_s,
    exit_now_on_signal,
    finish_loop,
    hard_exit,
    report_abandoned,
    wait_bounded,
)

# bind_sockets is re-exported: tests and embedders import it from here.
__all__ = ["Server", "bind_sockets", "describe_socket", "run", "serve_config"]

logger = logging.getLogger("sluiceway.error")

# make_protocol_factory(config, app, state, ssl_context) -> protocol factory.
ProtocolFactoryMaker = Callable[..., Callable[[], asyncio.Protocol]]

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def hot_path_build() -> str:
    """``compiled`` if setup.py's mypyc step built the HTTP hot path, else ``pure Python``.

    Said once at start, as the loop is: an install without a C compiler or
    mypyc silently runs about a fifth slower per request.
    """
    from sluiceway.http1 import protocol

    return "compiled" if protocol.__file__.endswith(tuple(EXTENSION_SUFFIXES)) else "pure Python"


class Server:
    """One listening server on a running event loop; see the module docstring."""

    def __init__(
        self,
        config: Config,
        app: Any,
        *,
        protocol_factory: ProtocolFactoryMaker | None = None,
        sockets: list[socket.socket] | None = None,
        on_started: Callable[[Server], None] | None = None,
    ) -> None:
        self.config = config
        self.app_source = app
        self.app: ASGIApp | None = None
        self.state = ServerState(config)
        self.lifespan: Lifespan | None = None
        self.servers: list[asyncio.AbstractServer] = []
        self.sockets: list[socket.socket] = []
        # Set once start() is serving: serve() as a task, then await this.
        self.started = asyncio.Event()
        self._protocol_factory = protocol_factory
        # Sockets bound by someone else (the supervisor, for a worker): served
        # and closed here, but a Unix socket's path is not ours to unlink.
        self._given_sockets = sockets
        self._on_started = on_started
        # Made here, not in start(): a signal during lifespan startup must find them.
        self._exit = asyncio.Event()
        self._force = asyncio.Event()
        self._started = False
        self._stopped = False
        self._uds_path: str | None = None
        self._port: int | None = None
        # Tasks shutdown() gave up waiting for (reported), and its own helpers
        # stuck awaiting them: the runner's last clean-up does not wait again.
        self.abandoned: set[asyncio.Future[Any]] = set()
        self._cancel_wait_s = cancel_wait_s(config.graceful_shutdown_timeout_s)

    # -- public API ----------------------------------------------------------------------

    @property
    def forced(self) -> bool:
        """True once a second exit request (or ``force``) skipped the drain."""
        return self._force.is_set()

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
        ssl_context = None
        if config.is_ssl:
            from sluiceway.transport.tls import create_ssl_context

            ssl_context = create_ssl_context(config)
        if self._given_sockets is not None:
            self.sockets = list(self._given_sockets)
        else:
            self.sockets = bind_sockets(config)
            self._uds_path = config.uds
        # Read now: it stays answerable after shutdown closed the sockets.
        for sock in self.sockets:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                self._port = int(sock.getsockname()[1])
                break
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
        logger.info(
            "sluiceway %s (pid %d, %s loop, Python %s, %s)",
            __version__,
            os.getpid(),
            type(loop).__module__.split(".")[0],
            sys.version.split()[0],
            hot_path_build(),
        )
        scheme = "https" if ssl_context is not None else "http"
        if self._given_sockets is None:  # else the supervisor said it once for all workers
            for sock in self.sockets:
                logger.info("Listening on %s", describe_socket(sock, scheme, config))
        self.started.set()

    async def serve(self) -> None:
        """Start, wait for SIGINT/SIGTERM (or ``request_exit()``), shut down.

        The signal handlers go in before ``start()``: a signal during a slow
        lifespan startup cancels the startup (the app's task is cancelled,
        ``lifespan.shutdown`` is not sent since startup never completed) and
        ``serve()`` returns normally, instead of Python's default handling
        killing the process with no cleanup.
        """
        installed = self._install_signal_handlers()
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
        if self._exit.is_set() or force:
            self._force.set()
        self._exit.set()

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
        return _adapt(source, config.interface)

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

    def _install_signal_handlers(self) -> list[signal.Signals]:
        loop = asyncio.get_running_loop()
        installed = []
        for sig in HANDLED_SIGNALS:
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
            except (ValueError, RuntimeError, NotImplementedError):
                # Not the main thread, or a loop without signal support.
                continue
            installed.append(sig)
        return installed

    def _remove_signal_handlers(self, installed: list[signal.Signals]) -> None:
        loop = asyncio.get_running_loop()
        for sig in installed:
            loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._exit.is_set():
            logger.warning("Received %s again: forcing exit.", sig.name)
        elif not self.started.is_set():
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


def _adapt(source: Any, interface: str) -> ASGIApp:
    """The ASGI 3 callable that serves ``source`` under ``--interface``."""
    if interface == "asgi3":
        return cast(ASGIApp, source)
    if interface == "asgi2":
        return double_to_single_callable(source)
    if interface == "wsgi":
        # The toolkit's adapter, imported only when asked for: the server
        # itself never depends on the toolkit.
        from sluiceway.wsgi import WsgiToAsgi

        return WsgiToAsgi(source)
    return guarantee_single_callable(source)


def request_limit(limit: int, jitter: int) -> int:
    """``--limit-max-requests`` plus a random 0..``jitter``, drawn once per process."""
    return limit + random.randint(0, jitter) if jitter else limit


async def _serve_on(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    factory: Callable[[], asyncio.Protocol],
    ssl_context: Any,
    config: Config,
) -> asyncio.AbstractServer:
    if sock.family == socket.AF_UNIX:
        return await loop.create_unix_server(
            factory, sock=sock, ssl=ssl_context, backlog=config.backlog
        )
    return await loop.create_server(factory, sock=sock, ssl=ssl_context, backlog=config.backlog)


# --- run() --------------------------------------------------------------------------------


def new_event_loop(name: str) -> asyncio.AbstractEventLoop:
    """uvloop for ``auto``/``uvloop`` when it imports; asyncio's loop otherwise."""
    if name in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if name == "uvloop":
                raise ConfigError("--loop uvloop: uvloop is not installed") from None
            logger.warning("uvloop is not installed: using the asyncio event loop.")
        else:
            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
            return loop
    return asyncio.new_event_loop()


def run(app: Any, **options: Any) -> None:
    """Serve ``app`` (an ASGI app or a ``"module:attribute"`` string) until a signal.

    ``options`` are ``Config`` field names (``host``, ``port``, ``uds``,
    ``lifespan``, ``keep_alive_timeout_s``, ...).

    It ends the process, as the CLI does, rather than return, when the app
    left a task that would not end (after logging it); once the server has
    stopped, SIGINT/SIGTERM end the process at once with code 130.

    Raises:
        ConfigError: a bad option, app path, TLS file or address.
        LifespanFailed: the app's lifespan startup failed.
        KeyboardInterrupt: a second signal forced the exit.
    """
    from sluiceway.logconfig import configure_logging

    config = config_from_options(**options)
    configure_logging(config.log_level, config.access_log, config.log_config, config.use_colors)
    serve_config(config, app)


def serve_config(
    config: Config,
    app: Any,
    *,
    sockets: list[socket.socket] | None = None,
    on_started: Callable[[Server], None] | None = None,
) -> None:
    """``run()`` for an already built ``Config`` (the CLI's entry point).

    With ``workers`` > 1 or ``reload``, this process becomes the supervisor
    (``server/supervisor.py``) and the app must be a ``"module:attribute"``
    string, which each worker process imports. ``sockets`` and ``on_started``
    are the worker's side of that: serve these already bound sockets, and
    call ``on_started(server)`` once accepting.

    Raises:
        ConfigError: as ``run()``, or workers/reload asked for an app object.
        LifespanFailed: the app's lifespan startup failed.
    """
    if sockets is None and (config.workers > 1 or config.reload):
        if not isinstance(app, str):
            raise ConfigError(
                "--workers and --reload need the app as an import string ('module:attribute')"
            )
        from sluiceway.server.supervisor import supervise

        supervise(config, app)
        return
    loop = new_event_loop(config.loop)

    def started(server: Server) -> None:
        _freeze_startup_heap()
        if on_started is not None:
            on_started(server)

    server = Server(config, app, sockets=sockets, on_started=started)
    served = False
    abandoned = False
    wait_s = cancel_wait_s(config.graceful_shutdown_timeout_s)
    try:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.serve())
        served = True
    finally:
        if served:
            exit_now_on_signal()  # serve() took its handlers with it
        if server.forced:
            wait_s = FORCED_WAIT_S
        try:
            abandoned = finish_loop(loop, wait_s, server.abandoned)
        finally:
            asyncio.set_event_loop(None)
            loop.close()
    code = EXIT_FORCED if server.forced else 0
    if abandoned:
        # Returning would leave them to the interpreter's exit, which waits
        # for the threads they started and runs their code again as it
        # finalizes them.
        logger.warning("Exiting without the task(s) abandoned above.")
        hard_exit(code)
    bound_interpreter_exit(wait_s, code)
    if server.forced:
        raise KeyboardInterrupt


def _freeze_startup_heap() -> None:
    """Move everything alive once serving starts out of the cyclic GC's reach.

    The modules, the app and its startup state live for the whole process, yet
    every full collection scanned them all: under load that was a ~5 ms pause
    several times a second, doubling p99 (bench/results/http.md). Frozen
    objects are still freed by reference counting; only cycles among them
    would stay, and those are long-lived anyway. Done for the process entry
    points only, never for a ``Server`` embedded in someone else's process.
    """
    gc.collect()
    gc.freeze()
