"""Receivers woken in batches: one event-loop callback per burst of messages, not one per receiver.

A group message reaching a process with a thousand members wakes a thousand
``receive()`` calls. With one asyncio Future per receiver, each ``set_result``
schedules its task's wake-up through ``loop.call_soon``: on asyncio's own
loop that is three Python frames and a ``Handle`` (with its argument tuple)
per receiver, a quarter of a delivery's cost in a profile of the pub/sub
layer's fan-out, and more objects for the cyclic collector.

A ``Waiter`` is what such a receiver awaits instead. A task waits on it as on
any asyncio Future (asyncio's tasks accept every object that keeps the
Future protocol: ``_asyncio_future_blocking``, ``get_loop``,
``add_done_callback``, ``cancel``, ``result``). Resolved, it does not
schedule its task itself: it joins its loop's ``Waker``, which schedules
one callback for everything resolved until that callback runs, and there
wakes each task in its own context, in the order the waiters were resolved,
as the loop would have.

What differs from a Future, on purpose: one done-callback at most (a waiter
belongs to the one task that awaits it; a second is refused), no exception
results (a waiter carries a message or is cancelled), and a task's wake-up
that raises is reported to the loop's exception handler, as ``Handle`` does,
without stopping the others (``SystemExit`` and ``KeyboardInterrupt``
propagate, after the rest of the batch is scheduled again).

Invariant: a waiter is in ``Waker.due`` at most once, and only once it is
done (with a callback then; ``run`` skips one removed since); the waker has
a callback scheduled exactly when ``due`` is not empty.

Compiled with mypyc (setup.py's HOT_PATH). Imports only the standard library.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Generator
from typing import Any, Final, final

_PENDING: Final = 0
_DONE: Final = 1
_CANCELLED: Final = 2


@final
class Waker:
    """The waiters of one event loop resolved since its last batch, and the batch's callback."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.due: list[Waiter] = []

    def wake(self, waiter: Waiter) -> None:
        if not self.due:
            self.loop.call_soon(self.run)
        self.due.append(waiter)

    def run(self) -> None:
        """Wake every task whose waiter was resolved since the last run, in that order."""
        due, self.due = self.due, []
        for i, waiter in enumerate(due):
            callback, context = waiter.callback, waiter.context
            waiter.callback = waiter.context = None
            if callback is None or context is None:  # its callback was removed once resolved
                continue
            try:
                context.run(callback, waiter)
            except (SystemExit, KeyboardInterrupt):
                for rest in due[i + 1 :]:  # not lost: the next batch wakes them
                    self.wake(rest)
                raise
            except BaseException as exc:  # as asyncio's Handle: reported, the batch goes on
                self.loop.call_exception_handler(
                    {"message": "Exception in a receiver's wake-up", "exception": exc}
                )


@final
class Waiter:
    """What one ``receive()`` awaits: a Future its task can wait on, woken through a ``Waker``.

    The result is whatever ``set_result`` was given (the pub/sub layer: a
    message and its deadline).
    """

    def __init__(self, waker: Waker) -> None:
        self.waker = waker
        # Read and cleared by asyncio's Task: set while a task is to wait on this waiter.
        self._asyncio_future_blocking = False
        self.state = _PENDING
        self.value: Any = None
        self.cancel_message: Any = None
        self.callback: Callable[[Any], object] | None = None
        self.context: contextvars.Context | None = None

    def __repr__(self) -> str:
        state = ("pending", "done", "cancelled")[self.state]
        return f"<Waiter {state}>"

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self.waker.loop

    def done(self) -> bool:
        return self.state != _PENDING

    def cancelled(self) -> bool:
        return self.state == _CANCELLED

    def result(self) -> Any:
        if self.state == _DONE:
            return self.value
        if self.state == _CANCELLED:
            raise self._cancelled_error()
        raise asyncio.InvalidStateError("Result is not set.")

    def exception(self) -> BaseException | None:
        if self.state == _DONE:
            return None
        if self.state == _CANCELLED:
            raise self._cancelled_error()
        raise asyncio.InvalidStateError("Exception is not set.")

    def _cancelled_error(self) -> asyncio.CancelledError:
        if self.cancel_message is None:
            return asyncio.CancelledError()
        return asyncio.CancelledError(self.cancel_message)

    def add_done_callback(
        self, fn: Callable[[Any], object], *, context: contextvars.Context | None = None
    ) -> None:
        if context is None:
            context = contextvars.copy_context()
        if self.state != _PENDING:
            self.waker.loop.call_soon(fn, self, context=context)
            return
        if self.callback is not None:
            raise RuntimeError("a receiver's waiter is awaited by one task only")
        self.callback, self.context = fn, context

    def remove_done_callback(self, fn: Callable[[Any], object]) -> int:
        if self.callback is None or self.callback != fn:
            return 0
        self.callback = self.context = None
        return 1

    def set_result(self, value: Any) -> None:
        if self.state != _PENDING:
            raise asyncio.InvalidStateError("invalid state")
        self.value = value
        self.state = _DONE
        if self.callback is not None:
            self.waker.wake(self)

    def cancel(self, msg: Any = None) -> bool:
        if self.state != _PENDING:
            return False
        self.state = _CANCELLED
        self.cancel_message = msg
        if self.callback is not None:
            self.waker.wake(self)
        return True

    def __await__(self) -> Generator[Any, None, Any]:
        if self.state == _PENDING:
            self._asyncio_future_blocking = True
            yield self  # the task waits here until the waker calls back
        return self.result()
