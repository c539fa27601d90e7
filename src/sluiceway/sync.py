"""Thread bridges between sync and async code: asgiref's sync API, faster.

``sync_to_async``, ``async_to_sync``, ``ThreadSensitiveContext``,
``AsyncSingleThreadContext``, ``Local``, ``iscoroutinefunction`` and
``markcoroutinefunction``, with asgiref's names and signatures, so a Django
project changes ``asgiref.sync`` to ``sluiceway.sync`` and nothing else.

Where a call runs:

* ``sync_to_async(f)`` (thread-sensitive, the default) runs ``f`` in ONE
  thread per outermost context, so code that is not thread-safe (ORMs,
  sqlite connections) always meets the same thread:

  1. if the awaiting coroutine was started by ``async_to_sync`` from a sync
     thread, ``f`` goes back to that thread (it is blocked waiting anyway and
     serves such calls while it waits);
  2. else, inside ``async with ThreadSensitiveContext()``, to the thread of
     the outermost such block (a nested block shares it), or to the block's
     own ``executor=`` when one was given (that block also hides step 1);
  3. else, where asgiref is loaded and a caller up the stack is asgiref's
     (Django runs each request in asgiref's ``ThreadSensitiveContext``; a
     Django ``TestCase`` runs async tests under asgiref's ``async_to_sync``),
     to the thread asgiref would pick, so Django's calls and ours meet one
     database connection;
  4. else to the one process-wide thread-sensitive thread.

  ``thread_sensitive=False`` runs ``f`` in ``executor`` (or a shared pool).
* ``async_to_sync(g)`` runs ``g`` on the loop of the ``sync_to_async`` call
  the current thread is serving (no second loop, no deadlock: that loop is
  free, it is only awaiting us); from a thread with no loop at all (a script,
  a Celery task) on ONE long-lived background loop in a daemon thread, so
  loop-bound clients (a Redis pool) survive across calls; inside
  ``with AsyncSingleThreadContext()`` on that block's own loop;
  ``force_new_loop=True`` skips the outer loop and, outside such a block,
  runs ``g`` on a new loop that is closed when ``g`` returns. From a thread
  whose loop is running it raises ``RuntimeError``: blocking there would
  deadlock.

Invariants:

* contextvars flow both ways: the callee runs in a copy of the caller's
  context and the values it sets are applied back when it returns (or
  raises). Deleting a variable does not flow back (a ``Context`` cannot say).
  ``sync_to_async(f, context=ctx)`` runs in ``ctx`` itself and applies
  nothing back (asgiref's rule).
* Return values and exceptions pass through untouched (tracebacks kept).
* A wrapper takes the wrapped callable's name, docstring and ``__wrapped__``,
  never its ``__dict__``, so wrappers nest (``sync_to_async(async_to_sync(g))``)
  and an object's own ``func`` attribute is not taken for the callable.
* A ``sync_to_async`` wrapper is a coroutine function to
  ``inspect.iscoroutinefunction`` (and so to asgiref's and Django's checks),
  on every supported Python; an ``async_to_sync`` wrapper is not.
* ``sync_to_async`` refuses whatever returns a coroutine when called: a
  coroutine function (also one marked with ``markcoroutinefunction``), or an
  object whose ``__call__`` is one.
* Cancelling an ``await sync_to_async(f)()`` returns control at once; the
  thread cannot be interrupted, so it finishes ``f``, the result is
  discarded, its context changes are not applied, and an exception it raises
  is logged on ``sluiceway.sync`` at ERROR so it is never silent. A later
  thread-sensitive call waits behind it, in order.
* The hot path is one ``SimpleQueue.put`` to wake the thread and one
  ``call_soon_threadsafe`` to wake the loop: no ``concurrent.futures`` future,
  no lock.

Imports only the standard library and its helpers ``sluiceway.sync_contexts``
(the two blocks), ``sluiceway.sync_workers`` and ``sluiceway.local`` (the
toolkit never imports the server); asgiref is read from ``sys.modules`` when
something else loaded it, never imported.
"""

from __future__ import annotations

import asyncio
import asyncio.coroutines
import contextlib
import contextvars
import functools
import inspect
import logging
import sys
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any, Generic, ParamSpec, TypeVar, overload

from sluiceway.local import Local
from sluiceway.sync_contexts import (
    AsyncSingleThreadContext,
    ThreadSensitiveContext,
    context_thread_var,
    single_thread_var,
    waiter_var,
)
from sluiceway.sync_workers import (
    Job,
    LoopThread,
    SyncWaiter,
    apply_context,
    asgiref_executor,
    background_loop,
    global_pool,
    global_sensitive_thread,
    run_call,
    state,
)

__all__ = [
    "AsyncSingleThreadContext",
    "AsyncToSync",
    "Local",
    "SyncToAsync",
    "ThreadSensitiveContext",
    "async_to_sync",
    "iscoroutinefunction",
    "markcoroutinefunction",
    "sync_to_async",
]

P = ParamSpec("P")
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])

logger = logging.getLogger(__name__)

# -- coroutine-function marking ----------------------------------------------------------

if sys.version_info >= (3, 12):
    iscoroutinefunction = inspect.iscoroutinefunction
    markcoroutinefunction = inspect.markcoroutinefunction
else:
    # inspect's check honours no marker before 3.12; asyncio's honours the
    # ``_is_coroutine`` attribute, and is what asgiref uses there too.
    _COROUTINE_MARK: Any = getattr(asyncio.coroutines, "_is_coroutine", None)

    def iscoroutinefunction(func: object) -> bool:
        """True if ``func`` is a coroutine function or marked as one."""
        return asyncio.iscoroutinefunction(func)

    def markcoroutinefunction(func: F) -> F:
        """Mark ``func`` so ``iscoroutinefunction`` reports it as a coroutine function."""
        func._is_coroutine = _COROUTINE_MARK  # type: ignore[attr-defined]  # asyncio's marker
        return func


async def _coroutine_code(*args: Any, **kwargs: Any) -> None:
    """Lends its code object (flag CO_COROUTINE) to ``SyncToAsync`` before 3.12."""


def _wrap(wrapper: Callable[..., Any], func: Callable[..., Any]) -> None:
    """Give ``wrapper`` the name, docstring and ``__wrapped__`` of ``func``.

    Not its ``__dict__`` (``functools.update_wrapper``'s default ``updated``):
    copying that over a wrapper object replaces the wrapper's own attributes
    with the wrapped object's, so ``sync_to_async(async_to_sync(g))`` took the
    inner wrapper's ``func`` (the coroutine function ``g``) for its own. Marker
    attributes of ``func`` stay reachable through ``__wrapped__``.
    """
    functools.update_wrapper(wrapper, func, updated=())
    # A wrapped bound method keeps saying whose it is (asgiref does this).
    with contextlib.suppress(AttributeError):
        wrapper.__self__ = func.__self__  # type: ignore[attr-defined]  # not on every callable


def _is_async_callable(func: Callable[..., Any]) -> bool:
    """Tell whether calling ``func`` returns a coroutine, as far as can be seen.

    True for a coroutine function (also behind ``functools.partial``, as a
    bound method or marked with ``markcoroutinefunction``) and for an object
    whose type's ``__call__`` is one (a ``SyncToAsync``, an ASGI app class
    instance). A class is called through its metaclass's ``__call__``, so it
    counts as sync: that builds an instance.
    """
    while isinstance(func, functools.partial):
        func = func.func
    # A call is looked up on the type (special method lookup), not the instance.
    return iscoroutinefunction(func) or iscoroutinefunction(type(func).__call__)


# -- the wrappers ------------------------------------------------------------------------


class SyncToAsync(Generic[P, R]):
    """An awaitable wrapper around a sync callable; see ``sync_to_async``."""

    if sys.version_info < (3, 12):
        # inspect.iscoroutinefunction honours no marker before 3.12, but takes
        # any object with a function's attributes for a function and reads the
        # CO_COROUTINE flag of its __code__ (inspect._signature_is_functionlike).
        # inspect.signature() is unaffected: it follows __wrapped__ first.
        __code__ = _coroutine_code.__code__
        __defaults__ = None
        __kwdefaults__ = None
        __name__ = "sync_to_async"  # replaced by the wrapped callable's, if it has one
        _is_coroutine = _COROUTINE_MARK

    def __init__(
        self,
        func: Callable[P, R],
        thread_sensitive: bool = True,
        executor: Executor | None = None,
        context: contextvars.Context | None = None,
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
        if sys.version_info >= (3, 12):
            markcoroutinefunction(self)
        self.func = func
        # What runs in the thread: ``func``, or a subclass's wrapper of it
        # (sluiceway.django's database_sync_to_async).
        self.target: Callable[..., R] = func
        self.context = context
        self._thread_sensitive = thread_sensitive
        self._executor = executor

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[R] = loop.create_future()
        given = self.context
        ctx = contextvars.copy_context() if given is None else given
        if self._thread_sensitive:
            job: Job = (run_call, (loop, fut, ctx, self.target, args, kwargs))
            waiter = waiter_var.get()
            if waiter is None or not waiter.submit(job):
                sink = context_thread_var.get()
                foreign = None if sink is not None else asgiref_executor(loop)
                if foreign is not None:
                    foreign.submit(run_call, loop, fut, ctx, self.target, args, kwargs)
                else:
                    sink = sink or global_sensitive_thread()
                    if sink.ident == threading.get_ident():
                        raise RuntimeError(
                            "sync_to_async(): this loop runs inside the thread-sensitive "
                            "thread itself, so the call would wait for itself; use "
                            "async_to_sync() instead of starting a loop there"
                        )
                    sink.submit(job)
        else:
            executor = self._executor or global_pool()
            executor.submit(run_call, loop, fut, ctx, self.target, args, kwargs)
        try:
            result = await fut
        except asyncio.CancelledError:
            logger.debug("sync_to_async: caller cancelled; %r runs on in its thread", self.func)
            raise
        except BaseException:
            if given is None:
                apply_context(ctx, None)
            raise
        if given is None:
            apply_context(ctx, None)
        return result

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        # Decorating a method: bind it like a function would be bound.
        if instance is None:
            return self
        return functools.partial(self.__call__, instance)


class AsyncToSync(Generic[P, R]):
    """A blocking wrapper around an async callable; see ``async_to_sync``."""

    def __init__(self, func: Callable[P, Awaitable[R]], force_new_loop: bool = False) -> None:
        if not callable(func):
            raise TypeError("async_to_sync() takes an async callable")
        _wrap(self, func)
        self.func = func
        self.force_new_loop = force_new_loop

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        if asyncio._get_running_loop() is not None:
            raise RuntimeError(
                "async_to_sync() cannot be called from a thread whose event loop is running: "
                "it would block that loop forever; await the coroutine directly instead"
            )
        fresh: LoopThread | None = None
        loop = None if self.force_new_loop else state.loop
        if loop is None or not loop.is_running():
            single = single_thread_var.get()
            if single is not None:
                loop = single.loop()
            elif self.force_new_loop:
                fresh = LoopThread("sluiceway-async-to-sync-new")
                loop = fresh.loop
            else:
                loop = background_loop()
        try:
            ok, value = self._run_on(loop, args, kwargs)
        finally:
            if fresh is not None:
                fresh.close()
        if ok:
            return value  # type: ignore[no-any-return]  # the outcome tuple is untyped
        raise value

    def _run_on(
        self, loop: asyncio.AbstractEventLoop, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[bool, Any]:
        waiter = SyncWaiter()
        ctx = contextvars.copy_context()
        ctx.run(waiter_var.set, waiter)
        loop.call_soon_threadsafe(_start_task, loop, waiter, self.func, args, kwargs, context=ctx)
        try:
            outcome = waiter.wait()
        except BaseException:
            # KeyboardInterrupt while blocked: do not leave the coroutine running,
            # and send later thread-sensitive calls elsewhere.
            waiter.close()
            loop.call_soon_threadsafe(waiter.cancel)
            raise
        apply_context(outcome[2], waiter_var)
        return outcome[0], outcome[1]

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        if instance is None:
            return self
        return functools.partial(self.__call__, instance)


def _start_task(
    loop: asyncio.AbstractEventLoop,
    waiter: SyncWaiter,
    func: Callable[..., Awaitable[Any]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> None:
    # Runs in the caller's copied context, which the new task copies again.
    waiter.task = loop.create_task(_drive(waiter, func, args, kwargs))


async def _drive(
    waiter: SyncWaiter,
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
    context: contextvars.Context | None = None,
) -> SyncToAsync[P, R]: ...


@overload
def sync_to_async(
    func: None = None,
    *,
    thread_sensitive: bool = True,
    executor: Executor | None = None,
    context: contextvars.Context | None = None,
) -> Callable[[Callable[P, R]], SyncToAsync[P, R]]: ...


def sync_to_async(
    func: Callable[P, R] | None = None,
    *,
    thread_sensitive: bool = True,
    executor: Executor | None = None,
    context: contextvars.Context | None = None,
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
        context: run in this ``contextvars.Context`` rather than a copy of the
            caller's; its changes are then not applied back to the caller.

    Raises:
        TypeError: ``func`` is a coroutine function, or ``executor`` is given
            with ``thread_sensitive=True``.
    """
    if func is None:

        def decorate(f: Callable[P, R]) -> SyncToAsync[P, R]:
            return SyncToAsync(
                f, thread_sensitive=thread_sensitive, executor=executor, context=context
            )

        return decorate
    return SyncToAsync(func, thread_sensitive=thread_sensitive, executor=executor, context=context)


@overload
def async_to_sync(
    func: Callable[P, Awaitable[R]], *, force_new_loop: bool = False
) -> AsyncToSync[P, R]: ...


@overload
def async_to_sync(
    func: None = None, *, force_new_loop: bool = False
) -> Callable[[Callable[P, Awaitable[R]]], AsyncToSync[P, R]]: ...


def async_to_sync(
    func: Callable[P, Awaitable[R]] | None = None, *, force_new_loop: bool = False
) -> AsyncToSync[P, R] | Callable[[Callable[P, Awaitable[R]]], AsyncToSync[P, R]]:
    """Make an async callable callable from sync code, blocking until it returns.

    Usable as ``async_to_sync(g)(...)``, ``@async_to_sync`` or
    ``@async_to_sync(force_new_loop=True)``.

    Args:
        func: the async callable.
        force_new_loop: do not run on the loop of an outer ``sync_to_async``
            call; run on a new loop, closed when the call returns (inside an
            ``AsyncSingleThreadContext``, on that block's loop).

    Raises (when called):
        RuntimeError: the calling thread's event loop is running.
    """
    if func is None:

        def decorate(f: Callable[P, Awaitable[R]]) -> AsyncToSync[P, R]:
            return AsyncToSync(f, force_new_loop=force_new_loop)

        return decorate
    return AsyncToSync(func, force_new_loop=force_new_loop)
