"""The end of a server process, bounded whatever the app does.

After ``--timeout-graceful-shutdown`` the runner cancels the app tasks still
running. An app can refuse to end: it catches ``CancelledError`` and carries
on, or it waits on a thread (``run_in_executor``, ``sync_to_async``) that no
cancellation can stop. Unbounded, the process then never exits: cleaning up
a loop waits on every cancelled task, and the interpreter joins every
non-daemon thread at exit (``concurrent.futures`` workers are such threads).

So every wait in the stop sequence has a bound, and what is still running
after its bound is *abandoned*: one ERROR line on ``sluiceway.error`` per task
(the request it serves and the app line it is stuck on) or thread, then the
process ends with ``os._exit`` (after flushing the logs) and the code the CLI
documents: 0, or 130 once a second signal forced the exit.

Bounds (``process_exit_bound_s`` adds them up for the supervisor):

* cancelled tasks: ``cancel_wait_s``, as long again as the graceful timeout,
  at most ``CANCEL_WAIT_MAX_S``;
* a second signal (the ``force`` event) cuts any wait to ``FORCED_WAIT_S``;
* once ``serve()`` has returned, SIGINT/SIGTERM end the process at once
  (``exit_now_on_signal``): the server has stopped, nothing is left to drain.

Imports only the standard library and ``sluiceway.accesslog``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Collection, Iterator
from types import CoroutineType, FrameType, GeneratorType
from typing import Any, NoReturn

from sluiceway.accesslog import escape

logger = logging.getLogger("sluiceway.error")

CANCEL_WAIT_MAX_S = 5.0
FORCED_WAIT_S = 0.5
EXIT_FORCED = 130  # sluiceway.cli.EXIT_FORCED, which the server side does not import

# How far describe_task follows what a task awaits (a few objects per await level).
_WALK_LIMIT = 64
# Frames in these directories are plumbing; the app's frame is the one worth naming.
_PLUMBING = tuple(
    os.path.join(os.path.dirname(path), "")
    for path in (asyncio.__file__, os.path.dirname(__file__))
)


def cancel_wait_s(graceful_timeout_s: float) -> float:
    """How long cancelled tasks get to end: the graceful timeout again, at most 5 s.

    Enough for ``finally`` blocks that await (a rollback, a goodbye frame); a
    short graceful timeout asks for a quick stop, so this is short too.
    """
    return min(CANCEL_WAIT_MAX_S, graceful_timeout_s)


def process_exit_bound_s(graceful_timeout_s: float, lifespan_shutdown_timeout_s: float) -> float:
    """The longest a server process takes from its first signal to its exit, if its loop runs.

    The drain, then the cancelled requests, lifespan shutdown (its timeout, up
    to 1 s for the task to end, then a cancel), closing the listeners (1 s),
    the loop's other tasks and, at exit, threads: each bounded as above.
    """
    wait_s = cancel_wait_s(graceful_timeout_s)
    lifespan_s = lifespan_shutdown_timeout_s + min(lifespan_shutdown_timeout_s, 1.0) + wait_s
    # The loop's other tasks and its async generators share one wait (the
    # generators get FORCED_WAIT_S at least), then the threads get their own.
    last_s = wait_s + FORCED_WAIT_S + wait_s
    return graceful_timeout_s + wait_s + lifespan_s + 1.0 + last_s


async def wait_bounded(
    futures: Collection[asyncio.Future[Any]],
    timeout_s: float,
    force: asyncio.Event | None = None,
) -> set[asyncio.Future[Any]]:
    """Wait until all of ``futures`` are done, at most ``timeout_s``; return those still pending.

    ``force`` set (a second signal), before or during the wait, cuts what is
    left of it to ``FORCED_WAIT_S``. Nothing is cancelled: the caller decides.
    """
    pending = {future for future in futures if not future.done()}
    if not pending:
        return pending
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    # One waiter for all: a FIRST_COMPLETED loop over thousands of requests is quadratic.
    everything: asyncio.Future[Any] = asyncio.ensure_future(asyncio.wait(pending))
    try:
        if force is not None and not force.is_set():
            forced: asyncio.Future[Any] = asyncio.ensure_future(force.wait())
            try:
                await asyncio.wait(
                    {everything, forced}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                forced.cancel()
        if force is not None and force.is_set():
            deadline = min(deadline, loop.time() + FORCED_WAIT_S)
        if not everything.done():
            # Even with no time left, one loop pass: a task cancelled just now
            # has not yet been told, and most end on their first step.
            await asyncio.wait({everything}, timeout=max(0.0, deadline - loop.time()))
    finally:
        everything.cancel()  # stops waiting; asyncio.wait never cancels what it waits for
    return {future for future in pending if not future.done()}


# --- saying what was abandoned -----------------------------------------------------------


def describe_task(task: asyncio.Future[Any]) -> str:
    """The request a task serves and the app line it waits on, as far as can be seen.

    Follows what the task awaits, down to the app's coroutine: the ASGI scope
    is in the locals of the first frame that has one, and the innermost frame
    outside asyncio and sluiceway is where the app is stuck. Compiled (mypyc)
    coroutines show no frame; what they await is among their references.
    The path is escaped: whatever formatter writes this line, a request
    cannot forge another.
    """
    scope: dict[str, Any] | None = None
    stuck: FrameType | None = None
    for frame in _frames(_awaited(task)):
        if scope is None:
            scope = _scope_in(frame)
        if not frame.f_code.co_filename.startswith(_PLUMBING):
            stuck = frame
    parts = []
    if scope is not None:
        parts.append(_describe_scope(scope))
    elif isinstance(task, asyncio.Task):
        parts.append(repr(task.get_name()))
    if stuck is not None:
        code = stuck.f_code
        parts.append(f"in {code.co_name}() at {code.co_filename}:{stuck.f_lineno}")
    return ", ".join(parts) if parts else escape(repr(task)[:200])


def awaited_tasks(task: asyncio.Future[Any]) -> set[asyncio.Future[Any]]:
    """``task`` and the tasks (and futures) it awaits, directly or through others."""
    return {obj for obj in _awaited(task) if isinstance(obj, asyncio.Future)}


def _awaited(task: asyncio.Future[Any]) -> Iterator[object]:
    """``task``, then what it awaits, and so on down, outermost first (bounded)."""
    todo: list[object] = [task]
    seen: set[int] = set()
    while todo and len(seen) < _WALK_LIMIT:
        obj = todo.pop(0)
        if obj is None or id(obj) in seen:
            continue
        seen.add(id(obj))
        yield obj
        if isinstance(obj, asyncio.Task):
            todo.append(obj.get_coro())
        elif isinstance(obj, CoroutineType):
            todo.append(obj.cr_await)
        elif isinstance(obj, GeneratorType):
            todo.append(obj.gi_yieldfrom)
        elif not isinstance(obj, asyncio.Future):
            todo.extend(ref for ref in gc.get_referents(obj) if _is_awaitable_step(ref))


def _frames(objects: Iterator[object]) -> Iterator[FrameType]:
    """The frames of the interpreted coroutines (and generators) among ``objects``."""
    for obj in objects:
        if isinstance(obj, CoroutineType) and obj.cr_frame is not None:
            yield obj.cr_frame
        elif isinstance(obj, GeneratorType) and obj.gi_frame is not None:
            yield obj.gi_frame


def _is_awaitable_step(obj: object) -> bool:
    kind = type(obj)
    return isinstance(obj, asyncio.Future) or (hasattr(kind, "send") and hasattr(kind, "throw"))


def _scope_in(frame: FrameType) -> dict[str, Any] | None:
    for value in frame.f_locals.values():
        if isinstance(value, dict) and "asgi" in value and isinstance(value.get("type"), str):
            return value
    return None


def _describe_scope(scope: dict[str, Any]) -> str:
    kind = scope["type"]
    if kind == "http":
        return f"{escape(str(scope.get('method', '?')))} {escape(str(scope.get('path', '?')))}"
    if kind == "websocket":
        return f"WebSocket {escape(str(scope.get('path', '?')))}"
    return escape(kind)


def report_abandoned(tasks: Collection[asyncio.Future[Any]], waited_s: float) -> None:
    """One ERROR line per task still running ``waited_s`` after it was cancelled."""
    for task in tasks:
        logger.error(
            "Abandoned task %s: still running %.1f s after it was cancelled.",
            describe_task(task),
            waited_s,
        )


# --- the loop's last run ------------------------------------------------------------------


def finish_loop(
    loop: asyncio.AbstractEventLoop, wait_s: float, abandoned: Collection[asyncio.Future[Any]]
) -> bool:
    """Cancel the loop's other tasks, close its async generators, within ``wait_s``.

    ``abandoned`` are tasks already given up on (and reported): they are not
    waited for again. Returns True when anything was abandoned, before or here.
    """

    async def settle() -> bool:
        start = loop.time()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.sleep(0)  # most cancelled tasks end on the step this lets them take
        fresh = [task for task in tasks if task not in abandoned and not task.done()]
        if fresh:
            logger.info("Waiting up to %g s for %d background task(s) to end.", wait_s, len(fresh))
        left = await wait_bounded(fresh, wait_s)
        report_abandoned(left, loop.time() - start)
        closing = asyncio.ensure_future(loop.shutdown_asyncgens())
        remaining = max(FORCED_WAIT_S, start + wait_s - loop.time())
        if await wait_bounded([closing], remaining):
            logger.error("Abandoned closing the async generators: not done after %.1f s.", wait_s)
            return True
        return bool(left or abandoned)

    return loop.run_until_complete(settle())


# --- ending the process ----------------------------------------------------------------------


def hard_exit(code: int) -> NoReturn:
    """Flush the logs and end the process now.

    ``os._exit``, not ``sys.exit``: the interpreter's exit joins every
    non-daemon thread (a thread stuck in ``run_in_executor`` never ends) and
    finalizes the abandoned tasks, running app code again.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # closed, or being written by the code we interrupted
            stream.flush()
    os._exit(code)


def exit_now_on_signal() -> None:
    """From now on, SIGINT and SIGTERM end the process at once with exit code 130.

    For after ``serve()`` returned (its handlers are gone): the server has
    stopped, so a signal means "do not wait for the last clean-up". Without
    this, a SIGTERM then killed the process by the signal (-15), and a
    SIGINT raised KeyboardInterrupt in the middle of the clean-up.
    """

    def on_signal(signum: int, frame: FrameType | None) -> None:
        logger.warning("Received %s again: exiting now.", signal.Signals(signum).name)
        hard_exit(EXIT_FORCED)

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # not the main thread: signals are not ours
            signal.signal(sig, on_signal)


def bound_interpreter_exit(wait_s: float, code: int) -> None:
    """Let the interpreter's exit wait at most ``wait_s`` for non-daemon threads, then end it.

    The interpreter joins non-daemon threads at exit, executor workers
    included, and cancelling a task does not stop the thread it waits on. A
    daemon watchdog starts counting when the interpreter starts to exit, and
    if threads still run after ``wait_s`` it names them and calls
    ``hard_exit(code)``. Idle executor workers are told to stop at exit and
    do so at once: they are not abandoned.
    """
    if not _blocking_threads():
        return
    exiting = threading.Event()
    # threading's own exit hook, the one concurrent.futures uses to join its
    # workers; the public atexit runs only after those joins, too late. It
    # runs hooks newest first, so ours starts the clock before any join.
    register = getattr(threading, "_register_atexit", None)
    if register is None:
        exiting.set()
    else:
        register(exiting.set)
    watchdog = threading.Thread(
        target=_watch_exit, args=(exiting, wait_s, code), name="sluiceway-exit", daemon=True
    )
    watchdog.start()


def _blocking_threads() -> list[threading.Thread]:
    main = threading.main_thread()
    return [t for t in threading.enumerate() if t is not main and not t.daemon and t.is_alive()]


def _watch_exit(exiting: threading.Event, wait_s: float, code: int) -> None:
    exiting.wait()
    deadline = time.monotonic() + wait_s
    for thread in _blocking_threads():
        thread.join(max(0.0, deadline - time.monotonic()))
    stuck = _blocking_threads()
    if not stuck:
        return
    for thread in stuck:
        logger.error(
            "Abandoned thread %r: still running %g s after the server stopped"
            " (a blocking call no cancellation can stop).",
            thread.name,
            wait_s,
        )
    hard_exit(code)
