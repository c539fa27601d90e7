"""``Local``: asgiref's context- and thread-safe local storage, for ``sluiceway.sync``.

A ``Local()`` is a namespace (like ``threading.local``) whose attributes are
local to the current asyncio task when there is one, and to the thread
otherwise, and which follows work across the thread bridges:

* in async code a value is seen by what the frame awaits, by tasks it starts
  (they copy the context) and by ``sync_to_async`` calls it makes;
* in a sync thread it is thread-local, and also seen by the coroutine an
  ``async_to_sync`` call runs from that thread;
* values set on the far side of a bridge come back with the call (the
  bridges apply the callee's context changes to the caller).

``Local(thread_critical=True)`` never crosses a bridge: it is exactly
``threading.local`` in a thread with no running loop, and a context variable
private to the thread in one with a loop. It is for objects that must stay on
the thread that made them (a database connection).

Invariants:

* Storage is a ``ContextVar`` holding a dict that is copied on every write,
  never mutated: a ``Context`` is entered by one thread at a time, so reads and
  writes need no lock (asgiref takes one per access).
* On interpreters whose new threads start in a copy of their creator's context
  (``sys.flags.thread_inherit_context``, the default of free-threaded 3.14),
  the dict is tagged with the thread that owns it, and a thread sees only its
  own: data merely inherited by a plain ``threading.Thread`` stays hidden. The
  bridges re-home the storage when they move work on purpose (``rehome``).
  Elsewhere new threads start empty, and the tag is neither set nor checked.

Imports only the standard library.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import threading
from typing import Any, final

__all__ = ["Local"]

# New threads inherit their creator's context (3.14, free-threaded default).
THREADS_INHERIT_CONTEXT = bool(getattr(sys.flags, "thread_inherit_context", 0))

_set = object.__setattr__


class _Storage:
    """A Local's data, tagged with its owner thread where threads inherit contexts."""

    __slots__ = ("data", "thread_id")

    def __init__(self, data: dict[str, Any], thread_id: int) -> None:
        self.data = data
        self.thread_id = thread_id


_EMPTY = _Storage({}, 0)


def rehome(ctx: contextvars.Context) -> None:
    """In the current context: make every Local storage of ``ctx`` this thread's.

    Called by the bridges, only where threads inherit contexts, at the points
    where they move a context to another thread on purpose.
    """
    ident = threading.get_ident()
    for var, value in ctx.items():
        if type(value) is _Storage and value.thread_id != ident:
            var.set(_Storage(value.data, ident))


@final
class Local:
    """Attributes local to the current task (or thread), carried across the bridges.

    Args:
        thread_critical: keep the data on the thread that set it, never
            carried to another thread by ``sync_to_async``/``async_to_sync``.
    """

    __slots__ = ("_critical", "_thread_critical", "_var")

    def __init__(self, thread_critical: bool = False) -> None:
        _set(self, "_thread_critical", thread_critical)
        _set(self, "_var", contextvars.ContextVar("sluiceway.local", default=_EMPTY))
        _set(self, "_critical", threading.local())

    # -- storage -------------------------------------------------------------------------

    def _read(self) -> dict[str, Any]:
        if self._thread_critical:
            return self._critical_dict()
        storage: _Storage = self._var.get()
        if THREADS_INHERIT_CONTEXT and storage.thread_id != threading.get_ident():
            return {}  # inherited by an unrelated thread, not moved here by a bridge
        return storage.data

    def _write(self, data: dict[str, Any]) -> None:
        if self._thread_critical:
            self._critical_var().set(_Storage(data, 0))
        else:
            self._var.set(_Storage(data, threading.get_ident() if THREADS_INHERIT_CONTEXT else 0))

    def _critical_var(self) -> contextvars.ContextVar[_Storage]:
        # One context variable per thread: in async code, task-local but never
        # seen by another thread (a bridge copies the context, not this thread's
        # variable). In a sync thread, one fixed dict: plain threading.local.
        critical = self._critical
        var: contextvars.ContextVar[_Storage] | None = getattr(critical, "var", None)
        if var is None:
            var = contextvars.ContextVar("sluiceway.local.critical", default=_EMPTY)
            critical.var = var
        return var

    def _critical_dict(self) -> dict[str, Any]:
        if asyncio._get_running_loop() is None:
            critical = self._critical
            data: dict[str, Any] | None = getattr(critical, "data", None)
            if data is None:
                data = critical.data = {}
            return data
        return self._critical_var().get().data

    # -- attribute protocol --------------------------------------------------------------

    def __getattr__(self, key: str) -> Any:
        try:
            return self._read()[key]
        except KeyError:
            raise AttributeError(f"{self!r} object has no attribute {key!r}") from None

    def __setattr__(self, key: str, value: Any) -> None:
        if key in Local.__slots__:
            raise AttributeError(f"cannot set {key!r} on Local")
        if self._thread_critical and asyncio._get_running_loop() is None:
            self._critical_dict()[key] = value  # a plain thread-local: mutate in place
            return
        data = dict(self._read())
        data[key] = value
        self._write(data)

    def __delattr__(self, key: str) -> None:
        current = self._read()
        if key not in current:
            raise AttributeError(f"{self!r} object has no attribute {key!r}")
        if self._thread_critical and asyncio._get_running_loop() is None:
            del current[key]
            return
        data = dict(current)
        del data[key]
        self._write(data)
