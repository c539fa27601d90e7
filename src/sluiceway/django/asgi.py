"""Django's ASGI application, with each request's sync work on a thread reused between requests.

``get_asgi_application()`` is ``django.core.asgi.get_asgi_application()``
wrapped in ``RequestThreads`` (on Django 5.0+ and Python 3.11+, with the
handler of ``sluiceway.django.handler``, which spends less per request on
asyncio machinery). Django runs every HTTP request inside a fresh
asgiref ``ThreadSensitiveContext``: all the request's thread-sensitive sync
work (sync middleware, sync views, ``response.close()`` and the
``request_finished`` receivers such as ``close_old_connections``) runs on one
thread of its own, so requests stay apart and a request's database
connections live on one thread. asgiref makes that thread for the request
and, when the context exits, starts another thread to join it: two threads
started per request, even for an async view whose only sync work is
``response.close()`` (about 40% of Django's own time per request on a small
async JSON view; bench/django_load.py).

``RequestThreads`` keeps the guarantee and drops the churn: it enters the
request's ``ThreadSensitiveContext`` itself, with an executor leased from a
pool of single-thread executors (asgiref's ``executor=`` argument, so
Django's own context inside finds an enclosing one and leaves it alone).
Each thread serves one request at a time, as before; between requests it is
reused, as a WSGI server's worker threads are (persistent database
connections, ``CONN_MAX_AGE``, then behave as under WSGI rather than being
left on a thread that ends).

Invariant: a thread goes back to the pool only when nothing the request
submitted to it is still queued or running (a request cancelled while its
sync code runs leaves that thread to finish alone and end: the next request
must never wait behind it). At most ``max_idle`` idle threads are kept, and
none idle longer than ``idle_timeout_s``: the pool follows the concurrency
the server sees. The most recently used thread is taken first, so under a
steady load the same threads serve and the ones a past peak left behind age
out. Why ``max_idle`` is large: a pool smaller than the requests in flight
ends threads as requests finish and starts new ones as the next arrive; at
64 connections a limit of 32 started a thread every few requests and cost a
fifth of the JSON view's throughput (docs/performance.md, session 12).

Needs asgiref 3.13 or newer (``ThreadSensitiveContext(executor=...)``, which
needs Python 3.11); with an older asgiref, ``get_asgi_application()`` is
Django's own, unchanged (asgiref's private executor table is not touched).

Imports Django and asgiref (Django's dependency); never the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from queue import SimpleQueue
from typing import Any

from asgiref.sync import ThreadSensitiveContext

from sluiceway.asgi.types import ASGIApp, Receive, Scope, Send

__all__ = ["RequestThreads", "get_asgi_application"]

# asgiref's executor= argument (3.13+): without it, nothing to wrap.
HAS_EXECUTOR = "executor" in inspect.signature(ThreadSensitiveContext).parameters


# One call for a request's thread: its future, the function and its arguments.
_AnyFuture = asyncio.Future[Any] | Future[Any]
_Call = tuple[_AnyFuture, Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class _RequestThread(Executor):
    """One thread that runs what it is given, in order; knows whether any of it is left.

    ``ThreadPoolExecutor(max_workers=1)`` does the same with two locks, a
    semaphore and a thread check per call; a request makes two calls (the
    ``request_started`` receivers, ``response.close()``). Each counter is
    written by one thread only (``submitted`` by the event loop's, ``finished``
    by the worker), so ``idle`` needs no lock; ``finished`` counts a call
    before its result is handed back, so the loop never sees a result from a
    thread that still looks busy.

    Called from a running event loop (asgiref's ``run_in_executor``, the only
    caller through ``ThreadSensitiveContext``), ``submit`` returns an asyncio
    Future of that loop, which ``asyncio.wrap_future`` passes through as is,
    and the worker hands the result back with ``call_soon_threadsafe``. A
    ``concurrent.futures.Future`` there would cost a condition variable, its
    callbacks and the chaining of one future to the other: about 20 µs of a
    request's 212 (bench/django_inprocess.py). Called with no loop running,
    it returns a ``concurrent.futures.Future``, as any executor does.

    The thread is a daemon: an idle one must not hold the process at exit,
    and the server's graceful shutdown has already waited for the requests.
    """

    def __init__(self) -> None:
        self.submitted = 0
        self.finished = 0
        self._closed = False
        self._calls: SimpleQueue[_Call | None] = SimpleQueue()
        self._thread = threading.Thread(target=self._work, name="sluiceway-django", daemon=True)
        self._thread.start()

    def submit(  # type: ignore[override]  # an asyncio Future from a loop: see the class
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> _AnyFuture:
        if self._closed:
            raise RuntimeError("cannot schedule new futures after shutdown")
        future: _AnyFuture
        try:
            future = asyncio.get_running_loop().create_future()
        except RuntimeError:  # no loop in this thread
            future = Future()
        self.submitted += 1
        self._calls.put((future, fn, args, kwargs))
        return future

    def _work(self) -> None:
        while (call := self._calls.get()) is not None:
            self._run(*call)
            del call  # nothing of a finished call is kept while the thread waits

    def _run(
        self,
        future: _AnyFuture,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        if isinstance(future, Future):
            running = future.set_running_or_notify_cancel()
        else:
            running = not future.cancelled()  # a read; the loop's thread settles it
        if not running:
            self.finished += 1
            return
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self.finished += 1
            _settle(future, _fail, exc)
        else:
            self.finished += 1
            _settle(future, _succeed, result)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more calls; the thread ends once those already given are done.

        ``cancel_futures`` is accepted for ``Executor``'s signature and
        ignored: a call already given runs (its request may still await it).
        """
        if not self._closed:
            self._closed = True
            self._calls.put(None)
        if wait:
            self._thread.join()

    @property
    def idle(self) -> bool:
        return self.finished == self.submitted


def _settle(
    future: _AnyFuture,
    settle: Callable[[Any, Any], None],
    value: Any,
) -> None:
    """Give ``value`` to ``future``: directly if it is a thread-safe one, else in its loop."""
    if isinstance(future, Future):
        settle(future, value)
        return
    loop = future.get_loop()
    # A loop closed meanwhile (the process is stopping) has nobody to tell.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(settle, future, value)


def _succeed(future: Any, result: Any) -> None:
    if not future.done():  # cancelled while the call ran: the result has no taker
        future.set_result(result)


def _fail(future: Any, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


class RequestThreads:
    """An ASGI wrapper of Django's handler: each request's sync work on a pooled thread.

    Args:
        app: Django's ASGI handler (or anything that enters its own
            ``ThreadSensitiveContext``).
        max_idle: idle threads kept for the next requests; more are ended.
        idle_timeout_s: an idle thread not used for this long is ended.
    """

    def __init__(self, app: ASGIApp, max_idle: int = 256, idle_timeout_s: float = 30.0) -> None:
        self.app = app
        self.max_idle = max_idle
        self.idle_timeout_s = idle_timeout_s
        # Idle threads with when each went idle (time.monotonic()), oldest
        # first: a request takes the newest, the oldest are ended first.
        self._idle: deque[tuple[_RequestThread, float]] = deque()
        # Threads started so far (Django's own handler: one per request, plus a joiner).
        self.threads_started = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._idle:
            executor = self._idle.pop()[0]
        else:
            executor = _RequestThread()
            self.threads_started += 1
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.app(scope, receive, send)
        finally:
            self._release(executor)

    def _release(self, executor: _RequestThread) -> None:
        now = time.monotonic()
        idle = self._idle
        # Threads idle too long end, oldest first (checked here, per request:
        # no timer; an idle server keeps its threads until the next request).
        while idle and now - idle[0][1] > self.idle_timeout_s:
            idle.popleft()[0].shutdown(wait=False)
        if executor.idle and len(idle) < self.max_idle:
            idle.append((executor, now))
        else:
            # Its thread finishes what the request left it, then ends; no
            # wait here (the loop must not block on a sync call).
            executor.shutdown(wait=False)

    @property
    def idle_threads(self) -> int:
        """Threads waiting for the next request (for tests and metrics)."""
        return len(self._idle)


def get_asgi_application() -> ASGIApp:
    """``django.core.asgi.get_asgi_application()``: a leaner handler, sync work on reused threads.

    On Django 5.0+ and Python 3.11+ the handler is ``sluiceway.django.handler.ASGIHandler``
    (Django's, with less asyncio machinery per request; that module says what differs);
    before, Django's own. Either is wrapped in ``RequestThreads`` when asgiref has
    ``executor=``.
    """
    import django
    from django.core.asgi import get_asgi_application as django_application

    if not HAS_EXECUTOR:
        return django_application()  # type: ignore[no-any-return]
    if django.VERSION < (5, 0) or sys.version_info < (3, 11):
        return RequestThreads(django_application())
    from sluiceway.django.handler import ASGIHandler

    django.setup(set_prefix=False)  # what Django's get_asgi_application() does first
    return RequestThreads(ASGIHandler())
