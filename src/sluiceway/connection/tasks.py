"""Starting app coroutines eagerly where Python supports it: the first step runs at once.

Most HTTP apps answer a request without ever waiting: ``send`` writes to the
transport and returns, so the app's coroutine finishes in its first step.
Python 3.12's eager tasks (``Task(..., eager_start=True)``) run that step in
the caller's stack and skip scheduling it through the loop; a task that
finishes there is never registered or scheduled, which saves a loop pass and
a sixth of the Python cost of a small request (bench/micro_http1.py on 3.12,
uncompiled: 11.6 -> 9.7 µs).

Everything an app can see stays as with a normally started Task: the task is
``asyncio.current_task()`` during the first step and goes on running the
coroutine if it suspends (sniffio and anyio depend on this), the coroutine
runs in its own copy of the context, and cancelling the task cancels it.

Python 3.10 and 3.11 get a plain ``create_task``. We measured two ways of
emulating eager start there and kept neither: an uninitialised C ``Task`` as
the current task during the first step is 14 % cheaper per request, but its
``get_coro()`` crashes the interpreter (anyio calls it) and a ``cancel()``
before initialisation is lost; asyncio's pure-Python ``Task`` is safe but
costs more than the C task it would save.

Call ``start_eagerly`` only from a loop callback (``data_received``), never
from inside a running task, so one app's first step never runs inside
another's stack.

Imports only the standard library.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any


def _start_eagerly(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]
) -> asyncio.Task[None] | None:
    task: asyncio.Task[None] = asyncio.Task(coro, loop=loop, eager_start=True)  # type: ignore[call-arg,unused-ignore]  # 3.12+
    if task.done():
        if not task.cancelled():  # cancelled in its first step: the wrapper has cleaned up
            task.result()  # re-raise what the coroutine raised; the wrapper lets none through
        return None
    return task


def _start_normally(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]
) -> asyncio.Task[None] | None:
    return loop.create_task(coro)


# start_eagerly(loop, coro) -> the Task if coro suspended, else None. coro should not
# raise (wrap it); if it does, the exception propagates to the caller.
start_eagerly = _start_eagerly if sys.version_info >= (3, 12) else _start_normally
