"""Awaiting from compiled code without the deprecated three-argument ``throw()``.

mypyc compiles ``await x`` in the hot-path modules into a loop that, when an
exception is thrown into the compiled coroutine (a task's ``cancel()``, an
app's ``asyncio.timeout`` firing), passes it on to ``x`` as
``x.throw(type, value, traceback)``. Python 3.12 deprecated that signature for
coroutines and futures: it warns, and where warnings are errors (``-W error``,
pytest's ``filterwarnings = error``) the warning replaces the exception. An
app cancelled inside our server would then get a DeprecationWarning instead
of its CancelledError, and ``asyncio.timeout`` would never turn it into a
TimeoutError. (mypyc's runtime still does this in 2.4: ``CPy_YieldFromErrorHandle``.)

``await forward_throw(x)`` puts a ``ForwardThrow`` between the compiled
coroutine and ``x``. mypyc iterates it like any iterator; its ``throw`` takes
the three arguments and throws the exception into ``x`` with the one-argument
form. Only objects mypyc did not compile need it: an app's coroutine, a
Future, an interpreted coroutine. A compiled coroutine takes the three
arguments without a warning.

Before 3.12 the three arguments are not deprecated, and ``forward_throw``
returns ``x`` itself: the wrapper's extra iteration costs about 3 % of a small
request's instructions (3.7k of 124k under callgrind, bench/micro_http1.py),
for nothing there. It returns ``x`` itself as well when the hot path runs
uncompiled: the interpreter's own ``await`` throws with one argument.

``forward_throw`` also checks that ``x`` can be awaited at all, so an app
that is not async gets the interpreter's TypeError ("can't be used in 'await'
expression") rather than mypyc's ("object is not iterable").

Imports only the standard library.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Generator
from types import CoroutineType, GeneratorType
from typing import Any, Final, TypeVar, final

T = TypeVar("T")

# Compiled, this module's file is the extension; the hot path is compiled all or none (setup.py).
_NEEDED: Final = sys.version_info >= (3, 12) and not __file__.endswith(".py")


def forward_throw(awaitable: Awaitable[T]) -> Awaitable[T]:
    """What compiled code should await instead of ``awaitable`` (see the module docstring).

    Raises:
        TypeError: ``awaitable`` cannot be awaited (an app that is not async), in the
            interpreter's words; compiled, mypyc's own would say "object is not iterable".
    """
    kind: type = type(awaitable)
    # A coroutine first (nearly every app): one comparison. A @types.coroutine
    # generator has no __await__, but an await iterates it.
    if kind is not CoroutineType and kind is not GeneratorType and not hasattr(kind, "__await__"):
        raise TypeError(f"object {kind.__name__} can't be used in 'await' expression")
    if _NEEDED:
        return ForwardThrow(awaitable)
    return awaitable


@final
class ForwardThrow:
    """Await ``awaitable`` for compiled code; exceptions reach it through ``throw(exc)``."""

    __slots__ = ("_inner",)

    def __init__(self, awaitable: Awaitable[Any]) -> None:
        inner: Any = awaitable  # forward_throw checked that it can be awaited
        self._inner: Generator[Any, Any, Any] = (
            inner if type(inner) is GeneratorType else inner.__await__()
        )

    def __await__(self) -> Generator[Any, Any, Any]:
        # This object is its own iterator: send, throw and close are all ``await`` uses.
        return self

    def __iter__(self) -> ForwardThrow:
        return self

    def __next__(self) -> Any:
        # StopIteration, carrying the awaited result, ends the compiled await.
        return self._inner.send(None)

    def send(self, value: Any) -> Any:
        return self._inner.send(value)

    def throw(self, typ: Any, value: Any = None, traceback: Any = None) -> Any:
        exc = typ if value is None else value
        if traceback is not None and isinstance(exc, BaseException):
            exc = exc.with_traceback(traceback)
        return self._inner.throw(exc)

    def close(self) -> None:
        self._inner.close()
