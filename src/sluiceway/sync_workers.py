"""The threads and loops behind ``sluiceway.sync``: where a bridged call is run.

``sluiceway.sync`` holds the public API; this module holds the machinery it
routes calls to:

* ``SerialThread``: one daemon thread running jobs in order (the process-wide
  thread-sensitive thread, and one per ``ThreadSensitiveContext``);
* ``ExecutorSink``: a ``ThreadSensitiveContext(executor=...)``'s caller-owned
  executor, behind the same ``submit(job)`` interface;
* ``SyncWaiter``: a thread blocked in ``async_to_sync``, serving the
  thread-sensitive calls of the coroutine it waits for;
* ``LoopThread``: an event loop running in a daemon thread (the long-lived
  background loop, an ``AsyncSingleThreadContext``'s, a ``force_new_loop``
  call's);
* ``asgiref_executor``: where asgiref would send a thread-sensitive call made
  here, when a caller up the stack is asgiref's (Django's own bridges, a
  Django ``TestCase``'s async test). Read from ``sys.modules``: asgiref is
  never imported by sluiceway.

Invariants: a job is ``(callable, args)`` and runs exactly once, in submission
order per thread; a job whose thread has stopped is refused with
``RuntimeError``, never queued behind the stop marker where its caller would
wait for ever. Imports only the standard library and ``sluiceway.local``.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import queue
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

from sluiceway.local import THREADS_INHERIT_CONTEXT, rehome

logger = logging.getLogger("sluiceway.sync")

_MISSING: Any = object()

# (callable, args) pairs a worker thread runs; None tells a serial thread to stop.
Job = tuple[Callable[..., None], tuple[Any, ...]]


class _ThreadState(threading.local):
    # The loop whose sync_to_async call this thread is running right now.
    loop: asyncio.AbstractEventLoop | None = None


state = _ThreadState()


def apply_context(ctx: contextvars.Context, skip: contextvars.ContextVar[Any] | None) -> None:
    """Copy into the current context every variable ``ctx`` changed."""
    for var, value in ctx.items():
        if var is not skip and var.get(_MISSING) is not value:
            var.set(value)
    if THREADS_INHERIT_CONTEXT:
        rehome(ctx)  # the callee's Local data now belongs to this thread


def _settle(fut: asyncio.Future[Any], func: Callable[..., Any], ok: bool, value: Any) -> None:
    """On the loop: hand a thread's outcome to the waiting coroutine."""
    if fut.done():
        # The caller was cancelled; the call ran on anyway (see sluiceway.sync).
        if not ok:
            logger.error(
                "sync_to_async: %r raised after its caller was cancelled",
                func,
                exc_info=value,
            )
        return
    if ok:
        fut.set_result(value)
    elif isinstance(value, StopIteration):
        # A Future refuses StopIteration (it would end the awaiting generator).
        err = RuntimeError(f"{func!r} raised StopIteration")
        err.__cause__ = value
        fut.set_exception(err)
    else:
        fut.set_exception(value)


def run_call(
    loop: asyncio.AbstractEventLoop,
    fut: asyncio.Future[Any],
    ctx: contextvars.Context,
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> None:
    """In a worker thread: run ``func`` in ``ctx`` and post the outcome back."""
    previous = state.loop
    state.loop = loop
    ok = True
    value: Any
    try:
        if THREADS_INHERIT_CONTEXT:
            ctx.run(rehome, ctx)
        value = ctx.run(func, *args, **kwargs)
    except BaseException as exc:
        ok = False
        value = exc
    finally:
        state.loop = previous
    try:
        loop.call_soon_threadsafe(_settle, fut, func, ok, value)
    except RuntimeError:
        # The loop is closed: nobody is waiting for this result any more.
        if not ok:
            logger.error("sync_to_async: %r raised after its loop closed", func, exc_info=value)


_ENDED = (
    "sync_to_async(): the ThreadSensitiveContext this call belongs to has "
    "ended (a task started inside it outlived it)"
)


class SerialThread:
    """One daemon thread that runs jobs in submission order."""

    __slots__ = ("_lock", "_name", "_queue", "_stopped", "ident")

    def __init__(self, name: str) -> None:
        self._name = name
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._stopped = False
        self.ident: int | None = None

    def submit(self, job: Job) -> None:
        # Behind the stop marker a job would never run and its caller would
        # wait for ever: refuse it loudly instead.
        if self._stopped:
            raise RuntimeError(_ENDED)
        if self.ident is None:
            self._start()
        self._queue.put(job)

    @property
    def stopped(self) -> bool:
        """True once ``stop`` was called: the thread takes no more jobs."""
        return self._stopped

    def stop(self) -> None:
        """Let the thread finish what is queued, then exit."""
        self._stopped = True
        if self.ident is not None:
            self._queue.put(None)

    def _start(self) -> None:
        with self._lock:
            if self.ident is None:
                thread = threading.Thread(target=self._work, name=self._name, daemon=True)
                thread.start()
                self.ident = thread.ident

    def _work(self) -> None:
        get = self._queue.get
        while True:
            job = get()
            if job is None:
                return
            job[0](*job[1])


class ExecutorSink:
    """A caller-owned executor as a ``ThreadSensitiveContext``'s thread.

    The executor must run one call at a time on one thread (asgiref's rule,
    e.g. ``ThreadPoolExecutor(max_workers=1)``); it is never shut down here.
    """

    __slots__ = ("_executor", "_stopped")

    ident = None  # unknown: the self-deadlock check cannot apply

    def __init__(self, executor: Executor) -> None:
        self._executor = executor
        self._stopped = False

    def submit(self, job: Job) -> None:
        if self._stopped:
            raise RuntimeError(_ENDED)
        self._executor.submit(job[0], *job[1])

    @property
    def stopped(self) -> bool:
        return self._stopped

    def stop(self) -> None:
        self._stopped = True


Sink = SerialThread | ExecutorSink


class SyncWaiter:
    """A sync thread blocked in ``async_to_sync``, serving calls meant for it."""

    __slots__ = ("_lock", "_open", "_queue", "task")

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._open = True
        self.task: asyncio.Task[None] | None = None

    def submit(self, job: Job) -> bool:
        """Queue a job for the waiting thread; False once it stopped waiting."""
        with self._lock:
            if not self._open:
                return False
            self._queue.put(job)
        return True

    def finish(self, ok: bool, value: Any, ctx: contextvars.Context) -> None:
        self._queue.put((_done, (ok, value, ctx)))

    def wait(self) -> tuple[bool, Any, contextvars.Context]:
        """Run submitted jobs until the coroutine's outcome arrives."""
        get = self._queue.get
        while True:
            func, args = get()
            if func is _done:
                break
            func(*args)
        with self._lock:
            self._open = False
        # Jobs that slipped in before we closed still deserve to run.
        while True:
            try:
                func, more = self._queue.get_nowait()
            except queue.Empty:
                break
            func(*more)
        return args[0], args[1], args[2]

    def close(self) -> None:
        with self._lock:
            self._open = False

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()


def _done(*_: Any) -> None:
    """Marker job: the coroutine of an ``async_to_sync`` call has finished."""


class LoopThread:
    """An event loop running for ever in a daemon thread, until ``close()``."""

    __slots__ = ("_thread", "loop")

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def close(self) -> None:
        """From another thread: cancel what still runs on the loop, stop it, close it."""
        if self.loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(_wind_down(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


async def _wind_down() -> None:
    # What asyncio.run does at its end: no task or async generator is left
    # half-run on a loop that is about to close.
    me = asyncio.current_task()
    rest = [t for t in asyncio.all_tasks() if t is not me]
    for task in rest:
        task.cancel()
    await asyncio.gather(*rest, return_exceptions=True)
    await asyncio.get_running_loop().shutdown_asyncgens()


_globals_lock = threading.Lock()
_sensitive_thread: SerialThread | None = None
_default_pool: ThreadPoolExecutor | None = None
_background: LoopThread | None = None


def global_sensitive_thread() -> SerialThread:
    global _sensitive_thread
    if _sensitive_thread is None:
        with _globals_lock:
            if _sensitive_thread is None:
                _sensitive_thread = SerialThread("sluiceway-sync-sensitive")
    return _sensitive_thread


def global_pool() -> ThreadPoolExecutor:
    global _default_pool
    if _default_pool is None:
        with _globals_lock:
            if _default_pool is None:
                _default_pool = ThreadPoolExecutor(thread_name_prefix="sluiceway-sync")
    return _default_pool


def background_loop() -> asyncio.AbstractEventLoop:
    global _background
    if _background is None:
        with _globals_lock:
            if _background is None:
                _background = LoopThread("sluiceway-async-to-sync")
    return _background.loop


def _forget_threads() -> None:
    # A forked child inherits none of the parent's threads: start afresh.
    global _sensitive_thread, _default_pool, _background
    _sensitive_thread = None
    _default_pool = None
    _background = None
    state.loop = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_threads)


class _Asgiref:
    """What ``asgiref_executor`` reads of a loaded ``asgiref.sync``, looked up once."""

    __slots__ = ("current_var", "module", "to_async", "to_sync")

    def __init__(self, module: Any) -> None:
        self.module = module
        self.to_sync: Any = module.AsyncToSync
        self.to_async: Any = module.SyncToAsync
        # asgiref keeps AsyncToSync.executors.current in a Local whose storage is
        # a ContextVar (asgiref 3.7 and later). Reading the Local costs a lock and
        # a raised AttributeError (5 us, a sixth of a round trip) when nothing is
        # set, which is the common case; the variable's own get() says so at once.
        storage = getattr(self.to_sync.executors, "_storage", None)
        var = getattr(storage, "_data", None)
        self.current_var: contextvars.ContextVar[Any] | None = (
            var if isinstance(var, contextvars.ContextVar) else None
        )


_asgiref: _Asgiref | None = None


def asgiref_executor(loop: asyncio.AbstractEventLoop) -> Executor | None:
    """The executor asgiref would pick for a thread-sensitive call here, or None.

    Django runs every request in asgiref's ``ThreadSensitiveContext`` and its
    async tests under asgiref's ``async_to_sync``; a sluiceway call made there
    must meet the same thread as Django's own calls (the same database
    connection, the test's transaction). asgiref's order: the executor of the
    ``async_to_sync`` above us, then the context's, then the one registered
    for this loop by an ``async_to_sync`` that started it.

    Raises:
        RuntimeError: asgiref's context with an executor has exited (asgiref's
            own rule for tasks that outlived it).
    """
    global _asgiref
    module = sys.modules.get("asgiref.sync")
    if module is None:
        return None
    try:
        found = _asgiref
        if found is None or found.module is not module:
            found = _asgiref = _Asgiref(module)
        to_sync, to_async = found.to_sync, found.to_async
        if found.current_var is None or found.current_var.get(None) is not None:
            current: Executor | None = getattr(to_sync.executors, "current", None)
            if current is not None:
                return current
        context = to_async.thread_sensitive_context.get(None)
        if context is not None:
            if getattr(context, "_exited", False):
                raise RuntimeError(
                    "sync_to_async(): asgiref's ThreadSensitiveContext has exited "
                    "(a task started inside it outlived it)"
                )
            executors = to_async.context_to_thread_executor
            executor: Executor | None = executors.get(context)
            if executor is None:
                # What asgiref does on the context's first call.
                executor = executors[context] = ThreadPoolExecutor(max_workers=1)
            return executor
        loop_executor: Executor | None = to_sync.loop_thread_executors.get(loop)
        return loop_executor
    except AttributeError:
        return None  # an asgiref whose internals differ: keep our own threads
