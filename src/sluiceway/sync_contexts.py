"""The blocks of ``sluiceway.sync``: ``ThreadSensitiveContext`` and ``AsyncSingleThreadContext``.

Each block sets a context variable that the wrappers in ``sluiceway.sync``
read to pick where a call runs (that module's docstring has the order):
``context_thread_var`` holds the thread of the outermost
``ThreadSensitiveContext`` in force, ``single_thread_var`` the
``AsyncSingleThreadContext`` in force, and ``waiter_var`` the
``async_to_sync`` call whose coroutine runs in this context (a block with its
own executor hides it).

Imports only the standard library and ``sluiceway.sync_workers``.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from concurrent.futures import Executor
from types import TracebackType

from sluiceway.sync_workers import ExecutorSink, LoopThread, SerialThread, Sink, SyncWaiter

__all__ = [
    "AsyncSingleThreadContext",
    "ThreadSensitiveContext",
    "context_thread_var",
    "single_thread_var",
    "waiter_var",
]

# The async_to_sync call whose coroutine runs in this context, if any.
waiter_var: contextvars.ContextVar[SyncWaiter | None] = contextvars.ContextVar(
    "sluiceway.sync.waiter", default=None
)
# The ThreadSensitiveContext in force, if any.
context_thread_var: contextvars.ContextVar[Sink | None] = contextvars.ContextVar(
    "sluiceway.sync.context_thread", default=None
)
# The AsyncSingleThreadContext in force, if any.
single_thread_var: contextvars.ContextVar[AsyncSingleThreadContext | None] = contextvars.ContextVar(
    "sluiceway.sync.single_thread", default=None
)


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

    Args:
        executor: run this block's calls in this executor instead, even inside
            another block or an ``async_to_sync`` call (asgiref 3.13's rule).
            It must run one call at a time on one thread
            (``ThreadPoolExecutor(max_workers=1)``); the caller owns it and it
            is not shut down. Such a block can be entered once; a call made in
            it after it ended raises ``RuntimeError``.
    """

    def __init__(self, *, executor: Executor | None = None) -> None:
        self._executor = executor
        self._sink: Sink | None = None
        self._token: contextvars.Token[Sink | None] | None = None
        self._waiter_token: contextvars.Token[SyncWaiter | None] | None = None
        self._used = False

    async def __aenter__(self) -> ThreadSensitiveContext:
        if self._executor is not None:
            if self._token is not None:
                raise RuntimeError("ThreadSensitiveContext is already entered")
            if self._used:
                # Entering again would hand tasks that outlived the first block
                # to the second.
                raise RuntimeError(
                    "ThreadSensitiveContext with an executor cannot be entered again"
                )
            self._used = True
            self._sink = ExecutorSink(self._executor)
            self._token = context_thread_var.set(self._sink)
            # The async_to_sync thread above would otherwise take precedence;
            # sending our calls there is what the executor is meant to replace.
            self._waiter_token = waiter_var.set(None)
            return self
        enclosing = context_thread_var.get()
        if enclosing is not None and not enclosing.stopped:
            return self  # nested: the outermost block's thread serves this one
        self._sink = SerialThread("sluiceway-sync-context")
        self._token = context_thread_var.set(self._sink)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._waiter_token is not None:
            waiter_var.reset(self._waiter_token)
            self._waiter_token = None
        if self._token is not None:
            context_thread_var.reset(self._token)
            self._token = None
        if self._sink is not None:
            self._sink.stop()
            self._sink = None


class AsyncSingleThreadContext:
    """Run every ``async_to_sync`` call in this block on one loop in one thread.

    A sync context manager (``with AsyncSingleThreadContext():``). Calls that
    would not run on an outer ``sync_to_async``'s loop (from a plain thread,
    or with ``force_new_loop=True``) run on a loop that belongs to the
    outermost such block, started on first use and closed when the block
    ends, so objects bound to a loop or a thread survive between the calls.
    Re-entrant: only the outermost block owns the loop.
    """

    def __init__(self) -> None:
        self._token: contextvars.Token[AsyncSingleThreadContext | None] | None = None
        self._loop_thread: LoopThread | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> AsyncSingleThreadContext:
        if single_thread_var.get() is None:
            self._token = single_thread_var.set(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is None:
            return
        single_thread_var.reset(self._token)
        self._token = None
        with self._lock:
            loop_thread, self._loop_thread = self._loop_thread, None
        if loop_thread is not None:
            loop_thread.close()

    def loop(self) -> asyncio.AbstractEventLoop:
        """This block's loop, started on first use."""
        with self._lock:
            if self._loop_thread is None:
                self._loop_thread = LoopThread("sluiceway-async-single-thread")
            return self._loop_thread.loop
