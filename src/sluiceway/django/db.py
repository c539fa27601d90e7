"""``database_sync_to_async``: ``sync_to_async`` that keeps Django's connections fresh.

Django closes a request's database connections when the request ends (the
``request_finished`` signal) if they are broken or older than
``CONN_MAX_AGE``. Code run from a consumer is no request, so, as Channels
does, each call closes such connections before and after it runs, in the
thread that owns them.

Decision: a connection inside an atomic block is left alone. Closing it would
end the transaction from under its owner: a ``TestCase``'s transaction, when
the call is routed to the test's thread (see ``sluiceway.sync``), or a
caller's ``transaction.atomic()``. Channels closes it anyway, which is why its
communicators need ``TransactionTestCase`` for database work; here Django's
``TestCase`` works.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, ParamSpec, TypeVar, overload

from django.db import connections

from sluiceway.sync import SyncToAsync

__all__ = [
    "DatabaseSyncToAsync",
    "aclose_old_connections",
    "close_old_connections",
    "database_sync_to_async",
]

P = ParamSpec("P")
R = TypeVar("R")


def close_old_connections() -> None:
    """Close this thread's unusable or expired connections, none in a transaction."""
    for conn in connections.all(initialized_only=True):
        if not conn.in_atomic_block:
            conn.close_if_unusable_or_obsolete()


async def aclose_old_connections() -> None:
    """``close_old_connections`` in the thread-sensitive thread, whose connections they are."""
    await SyncToAsync(close_old_connections)()


class DatabaseSyncToAsync(SyncToAsync[P, R]):
    """``SyncToAsync`` whose call is wrapped in ``close_old_connections``."""

    def __init__(
        self,
        func: Callable[P, R],
        thread_sensitive: bool = True,
        executor: Executor | None = None,
    ) -> None:
        super().__init__(func, thread_sensitive=thread_sensitive, executor=executor)
        self.target = _FreshConnections(func)


class _FreshConnections:
    __slots__ = ("func",)

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func

    def __repr__(self) -> str:
        return repr(self.func)  # what a log line about the call should name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        close_old_connections()
        try:
            return self.func(*args, **kwargs)
        finally:
            close_old_connections()


@overload
def database_sync_to_async(
    func: Callable[P, R], *, thread_sensitive: bool = True, executor: Executor | None = None
) -> DatabaseSyncToAsync[P, R]: ...


@overload
def database_sync_to_async(
    func: None = None, *, thread_sensitive: bool = True, executor: Executor | None = None
) -> Callable[[Callable[P, R]], DatabaseSyncToAsync[P, R]]: ...


def database_sync_to_async(
    func: Callable[P, R] | None = None,
    *,
    thread_sensitive: bool = True,
    executor: Executor | None = None,
) -> DatabaseSyncToAsync[P, R] | Callable[[Callable[P, R]], DatabaseSyncToAsync[P, R]]:
    """``sync_to_async`` for ORM code: stale connections are closed around each call.

    Usable as ``database_sync_to_async(f)``, ``@database_sync_to_async`` or
    with arguments, like ``sync_to_async``.
    """
    if func is None:

        def decorate(f: Callable[P, R]) -> DatabaseSyncToAsync[P, R]:
            return DatabaseSyncToAsync(f, thread_sensitive=thread_sensitive, executor=executor)

        return decorate
    return DatabaseSyncToAsync(func, thread_sensitive=thread_sensitive, executor=executor)
