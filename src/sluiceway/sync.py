"""Thread bridges between sync and async code: ``sync_to_async``, ``async_to_sync``.

Where a call runs:

* ``sync_to_async(f)`` (thread-sensitive, the default) runs ``f`` in ONE
  thread per outermost context, so code that is not thread-safe (ORMs,
  sqlite connections) always meets the same thread:

  1. if the awaiting coroutine was started by ``async_to_sync`` from a sync
     thread, ``f`` goes back to that thread (it is blocked waiting anyway and
     serves such calls while it waits);
  2. else, inside ``async with ThreadSensitiveContext()``, to the thread of
     the outermost such block (a nested block shares it);
  3. else to the one process-wide thread-sensitive thread.

  ``thread_sensitive=False`` runs ``f`` in ``executor`` (or a shared pool).
* ``async_to_sync(g)`` runs ``g`` on the loop of the ``sync_to_async`` call
  the current thread is serving (no second loop, no deadlock: that loop is
  free, it is only awaiting us); from a thread with no loop at all (a script,
  a Celery task) on ONE long-lived background loop in a daemon thread, so
  loop-bound clients (a Redis pool) survive across calls. From a thread whose
  loop is running it raises ``RuntimeError``: blocking there would deadlock.

Invariants:

* contextvars flow both ways: the callee runs in a copy of the caller's
  context and the values it sets are applied back when it returns (or
  raises). Deleting a variable does not flow back (a ``Context`` cannot say).
* Return values and exceptions pass through untouched (tracebacks kept).
* A wrapper takes the wrapped callable's name, docstring and ``__wrapped__``,
  never its ``__dict__``, so wrappers nest (``sync_to_async(async_to_sync(g))``)
  and an object's own ``func`` attribute is not taken for the callable.
* ``sync_to_async`` refuses whatever returns a coroutine when called: a
  coroutine function, or an object whose ``__call__`` is one.
* Cancelling an ``await sync_to_async(f)()`` returns control at once; the
  thread cannot be interrupted, so it finishes ``f``, the result is
  discarded, its context changes are not applied, and an exception it raises
  is logged on ``sluiceway.sync`` at ERROR so it is never silent. A later
  thread-sensitive call waits behind it, in order.
* The hot path is one ``SimpleQueue.put`` to wake the thread and one
  ``call_soon_threadsafe`` to wake the loop: no ``concurrent.futures`` future,
  no lock.

Imports only the standard library (the toolkit never imports the server).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import os
import queue
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from types import TracebackType
from typing import Any, Generic, ParamSpec, TypeVar, overload

__all__ = ["ThreadSensitiveContext", "async_to_sync", "sync_to_async"]

P = ParamSpec("P")
R = TypeVar("R")

logger = logging.getLogger(__name__)

_MISSING: Any = object()

# (callable, args) pairs a worker thread runs; None tells a serial thread to stop.
_Job = tuple[Callable[..., None], tuple[Any, ...]]


class _ThreadState(threading.local):
    # The loop whose sync_to_async call this thread is running right now.
    loop: asyncio.AbstractEventLoop | None = None


_state = _ThreadState()


def _apply_context(ctx: contextvars.Context, skip: contextvars.ContextVar[Any] | None) -> None:
    """Copy into the current context every variable ``ctx`` changed."""
    for var, value in ctx.items():
        if var is not skip and var.get(_MISSING) is not value:
            var.set(value)


def _settle(fut: asyncio.Future[Any], func: Callable[..., Any], ok: bool, value: Any) -> None:
    """On the loop: hand a thread's outcome to the waiting coroutine."""
    if fut.done():
        # The caller was cancelled; the call ran on anyway (see docstring).
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


def _run_call(
    loop: asyncio.AbstractEventLoop,
    fut: asyncio.Future[Any],
    ctx: contextvars.Context,
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> None:
    """In a worker thread: run ``func`` in ``ctx`` and post the outcome back."""
    previous = _state.loop
    _state.loop = loop
    ok = True
    value: Any
    try:
        value = ctx.run(func, *args, **kwargs)
    except BaseException as exc:
        ok = False
        value = exc
    finally:
        _state.loop = previous
    try:
        loop.call_soon_threadsafe(_settle, fut, func, ok, value)
    except RuntimeError:
        # The loop is closed: nobody is waiting for this result any more.
        if not ok:
            logger.error("sync_to_async: %r raised after its loop closed", func, exc_info=value)


class _SerialThread:
    """One daemon thread that runs jobs in submission order."""

    __slots__ = ("_lock", "_name", "_queue", "_stopped", "ident")

    def __init__(self, name: str) -> None:
        self._name = name
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._stopped = False
        self.ident: int | None = None

    def submit(self, job: _Job) -> None:
        # Behind the stop marker a job would never run and its caller would
        # wait for ever: refuse it loudly instead.
        if self._stopped:
            raise RuntimeError(
                "sync_to_async(): the ThreadSensitiveContext this call belongs to has "
                "ended (a task started inside it outlived it)"
            )
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


class _SyncWaiter:
    """A sync thread blocked in ``async_to_sync``, serving calls meant for it."""

    __slots__ = ("_lock", "_open", "_queue", "task")

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._open = True
        self.task: asyncio.Task[None] | None = None

    def submit(self, job: _Job) -> bool:
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


# The async_to_sync call whose coroutine runs in this context, if any.
_waiter_var: contextvars.ContextVar[_SyncWaiter | None] = contextvars.ContextVar(
    "sluiceway.sync.waiter", default=None
)
# The ThreadSensitiveContext in force, if any.
_context_thread_var: contextvars.ContextVar[_SerialThread | None] = contextvars.ContextVar(
    "sluiceway.sync.context_thread", default=None
)

_globals_lock = threading.Lock()
_sensitive_thread: _SerialThread | None = None
_default_pool: ThreadPoolExecutor | None = None
_background_loop: asyncio.AbstractEventLoop | None = None


def _global_sensitive_thread() -> _SerialThread:
    global _sensitive_thread
    if _sensitive_thread is None:
        with _globals_lock:
            if _sensitive_thread is None:
                _sensitive_thread = _SerialThread("sluiceway-sync-sensitive")
    return _sensitive_thread


def _global_pool() -> ThreadPoolExecutor:
    global _default_pool
    if _default_pool is None:
        with _globals_lock:
            if _default_pool is None:
                _default_pool = ThreadPoolExecutor(thread_name_prefix="sluiceway-sync")
    return _default_pool


def _get_background_loop() -> asyncio.AbstractEventLoop:
    global _background_loop
    loop = _background_loop
    if loop is None:
        with _globals_lock:
            if _background_loop is None:
                new = asyncio.new_event_loop()
                threading.Thread(
                    target=new.run_forever, name="sluiceway-async-to-sync", daemon=True
                ).start()
                _background_loop = new
            loop = _background_loop
    return loop


def _forget_threads() -> None:
    # A forked child inherits none of the parent's threads: start afresh.
    global _sensitive_thread, _default_pool, _background_loop
    _sensitive_thread = None
    _default_pool = None
    _background_loop = None
    _state.loop = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_threads)


def _wrap(wrapper: Callable[..., Any], func: Callable[..., Any]) -> None:
    """Give ``wrapper`` the name, docstring and ``__wrapped__`` of ``func``.

    Not its ``__dict__`` (``functools.update_wrapper``'s default ``updated``):
    copying that over a wrapper object replaces the wrapper's own attributes
    with the wrapped object's, so ``sync_to_async(async_to_sync(g))`` took the
    inner wrapper's ``func`` (the coroutine function ``g``) for its own. Marker
    attributes of ``func`` stay reachable through ``__wrapped__``.
    """
    functools.update_wrapper(wrapper, func, updated=())


def _is_async_callable(func: Callable[..., Any]) -> bool:
    """Tell whether calling ``func`` returns a coroutine, as far as can be seen.

    True for a coroutine function (also behind ``functools.partial`` or as a
    bound method) and for an object whose type's ``__call__`` is one (a
    ``SyncToAsync``, an ASGI app class instance). A class is called through
    its metaclass's ``__call__``, so it counts as sync: that builds an instance.
    """
    while isinstance(func, functools.partial):
        func = func.func
    # A call is looked up on the type (special method lookup), not the instance.
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(type(func).__call__)


class ThreadSensitiveContext:
    """Give thread-sensitive calls inside this block a thread of their own.

    Use one per request or connection when calls from different requests must
    not share state through a thread (``async with ThreadSensitiveContext():``).
    The thread starts on first use and exits when the block ends, after the
    calls already queued.

    Only the outermost block owns a thread: a block nested in another (a
    middleware and a view each opening one) shares the outer block's thread,
    as asgiref does, so a transaction opened in the outer block is seen in the
    inner one. A block entered in a task that outlived its own outer block
    (whose thread has stopped) starts a thread of its own.
    """

    def __init__(self) -> None:
        self._thread: _SerialThread | None = None
        self._token: contextvars.Token[_SerialThread | None] | None = None

    async def __aenter__(self) -> ThreadSensitiveContext:
        enclosing = _context_thread_var.get()
        if enclosing is not None and not enclosing.stopped:
            return self  # nested: the outermost block's thread serves this one
        self._thread = _SerialThread("sluiceway-sync-context")
        self._token = _context_thread_var.set(self._thread)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None:
            _context_thread_var.reset(self._token)
            self._token = None
        if self._thread is not None:
            self._thread.stop()
            self._thread = None


class SyncToAsync(Generic[P, R]):
    """An awaitable wrapper around a sync callable; see ``sync_to_async``."""

    def __init__(
        self,
        func: Callable[P, R],
        thread_sensitive: bool = True,
        executor: Executor | None = None,
    ) -> None:
        if not callable(func) or _is_async_callable(func):
            # Running it in a thread would hand back an un-awaited coroutine.
            raise TypeError(
                "sync_to_async() takes a sync callable, not a coroutine function "
                "or an object whose __call__ is async"
            )
        if thread_sensitive and executor is not None:
            raise TypeError("sync_to_async(): executor must not be set when thread_sensitive=True")
        _wrap(self, func)
        self.func = func
        self._thread_sensitive = thread_sensitive
        self._executor = executor

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[R] = loop.create_future()
        ctx = contextvars.copy_context()
        job: _Job = (_run_call, (loop, fut, ctx, self.func, args, kwargs))
        if self._thread_sensitive:
            waiter = _waiter_var.get()
            if waiter is None or not waiter.submit(job):
                thread = _context_thread_var.get() or _global_sensitive_thread()
                if thread.ident == threading.get_ident():
                    raise RuntimeError(
                        "sync_to_async(): this loop runs inside the thread-sensitive thread "
                        "itself, so the call would wait for itself; use async_to_sync() "
                        "instead of starting a loop there"
                    )
                thread.submit(job)
        else:
            executor = self._executor or _global_pool()
            executor.submit(_run_call, loop, fut, ctx, self.func, args, kwargs)
        try:
            result = await fut
        except asyncio.CancelledError:
            logger.debug("sync_to_async: caller cancelled; %r runs on in its thread", self.func)
            raise
        except BaseException:
            _apply_context(ctx, None)
            raise
        _apply_context(ctx, None)
        return result

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        # Decorating a method: bind it like a function would be bound.
        if instance is None:
            return self
        return functools.partial(self.__call__, instance)


class AsyncToSync(Generic[P, R]):
    """A blocking wrapper around an async callable; see ``async_to_sync``."""

    def __init__(self, func: Callable[P, Awaitable[R]]) -> None:
        if not callable(func):
            raise TypeError("async_to_sync() takes an async callable")
        _wrap(self, func)
        self.func = func

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        if asyncio._get_running_loop() is not None:
            raise RuntimeError(
                "async_to_sync() cannot be called from a thread whose event loop is running: "
                "it would block that loop forever; await the coroutine directly instead"
            )
        loop = _state.loop
        if loop is None or not loop.is_running():
            loop = _get_background_loop()
        waiter = _SyncWaiter()
        ctx = contextvars.copy_context()
        ctx.run(_waiter_var.set, waiter)
        loop.call_soon_threadsafe(_start_task, loop, waiter, self.func, args, kwargs, context=ctx)
        try:
            ok, value, task_ctx = waiter.wait()
        except BaseException:
            # KeyboardInterrupt while blocked: do not leave the coroutine running,
            # and send later thread-sensitive calls elsewhere.
            waiter.close()
            loop.call_soon_threadsafe(waiter.cancel)
            raise
        _apply_context(task_ctx, _waiter_var)
        if ok:
            return value  # type: ignore[no-any-return]  # the outcome tuple is untyped
        raise value

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        if instance is None:
            return self
        return functools.partial(self.__call__, instance)


def _start_task(
    loop: asyncio.AbstractEventLoop,
    waiter: _SyncWaiter,
    func: Callable[..., Awaitable[Any]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> None:
    # Runs in the caller's copied context, which the new task copies again.
    waiter.task = loop.create_task(_drive(waiter, func, args, kwargs))


async def _drive(
    waiter: _SyncWaiter,
    func: Callable[..., Awaitable[Any]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> None:
    try:
        result = await func(*args, **kwargs)
    except BaseException as exc:
        # Handed to the blocked thread, which re-raises it; not re-raised here
        # so the loop does not report it a second time.
        waiter.finish(False, exc, contextvars.copy_context())
    else:
        waiter.finish(True, result, contextvars.copy_context())


@overload
def sync_to_async(
    func: Callable[P, R],
    *,
    thread_sensitive: bool = True,
    executor: Executor | None = None,
) -> SyncToAsync[P, R]: ...


@overload
def sync_to_async(
    func: None = None,
    *,
    thread_sensitive: bool = True,
    executor: Executor | None = None,
) -> Callable[[Callable[P, R]], SyncToAsync[P, R]]: ...


def sync_to_async(
    func: Callable[P, R] | None = None,
    *,
    thread_sensitive: bool = True,
    executor: Executor | None = None,
) -> SyncToAsync[P, R] | Callable[[Callable[P, R]], SyncToAsync[P, R]]:
    """Make a sync callable awaitable by running it in a thread.

    Usable as ``sync_to_async(f)``, ``@sync_to_async`` or
    ``@sync_to_async(thread_sensitive=False)``.

    Args:
        func: the sync callable.
        thread_sensitive: run in the one thread of the outermost context (see
            the module docstring) rather than in a pool.
        executor: the pool for ``thread_sensitive=False`` calls (default: a
            shared ``ThreadPoolExecutor``).

    Raises:
        TypeError: ``func`` is a coroutine function, or ``executor`` is given
            with ``thread_sensitive=True``.
    """
    if func is None:

        def decorate(f: Callable[P, R]) -> SyncToAsync[P, R]:
            return SyncToAsync(f, thread_sensitive=thread_sensitive, executor=executor)

        return decorate
    return SyncToAsync(func, thread_sensitive=thread_sensitive, executor=executor)


def async_to_sync(func: Callable[P, Awaitable[R]]) -> AsyncToSync[P, R]:
    """Make an async callable callable from sync code, blocking until it returns.

    Usable as ``async_to_sync(g)(...)`` or ``@async_to_sync``.

    Raises (when called):
        RuntimeError: the calling thread's event loop is running.
    """
    return AsyncToSync(func)
