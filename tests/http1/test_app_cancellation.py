"""An app's own cancellations (its timeouts) reach it as asyncio delivers them.

The hot path is compiled with mypyc, whose ``await`` passes an exception thrown
into a compiled coroutine on with the three-argument ``throw()``. Python 3.12
deprecated that form; where warnings are errors the warning replaced the app's
CancelledError, so an app's timeout became a 500 (src/sluiceway/forward_throw.py).
Before 3.12 nothing warns: the tests with warnings as errors pass there either way.
"""

from __future__ import annotations

import asyncio
import sys
import warnings
from collections.abc import Coroutine, Generator
from typing import Any

import pytest

from tests.support import exchange, raw_connection, serve

GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"


def cancel_current_task_after(seconds: float) -> asyncio.TimerHandle:
    # What asyncio.timeout does (and 3.10 has no asyncio.timeout): cancel the running task.
    task = asyncio.current_task()
    assert task is not None
    return asyncio.get_running_loop().call_later(seconds, task.cancel)


async def answer(send: Any, body: bytes) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def sleep_then_answer(scope: Any, receive: Any, send: Any) -> None:
    timer = cancel_current_task_after(0.05)
    try:
        await asyncio.sleep(30)
        outcome = b"not cancelled"
    except asyncio.CancelledError:
        outcome = b"cancelled"
    except BaseException as exc:  # what the app got instead: the test shows it
        outcome = repr(exc).encode()
    finally:
        timer.cancel()
    await answer(send, outcome)


class RecordingThrow:
    """An app's awaitable that records how the server throws into it."""

    def __init__(self, coro: Coroutine[Any, Any, None], calls: list[int]) -> None:
        self._coro = coro
        self._calls = calls

    def __await__(self) -> Generator[Any, Any, None]:
        return self  # type: ignore[return-value]

    def __iter__(self) -> RecordingThrow:
        return self

    def __next__(self) -> Any:
        return self._coro.send(None)

    def send(self, value: Any) -> Any:
        return self._coro.send(value)

    def throw(self, *args: Any) -> Any:
        self._calls.append(len(args))
        exc = args[1] if len(args) > 1 and args[1] is not None else args[0]
        return self._coro.throw(exc)

    def close(self) -> None:
        self._coro.close()


@pytest.mark.skipif(
    sys.version_info < (3, 12), reason="before 3.12 the three-argument form is passed on as is"
)
async def test_a_cancelled_app_is_thrown_into_with_one_argument() -> None:
    calls: list[int] = []

    def app(scope: Any, receive: Any, send: Any) -> RecordingThrow:
        return RecordingThrow(sleep_then_answer(scope, receive, send), calls)

    async with serve(app) as srv:
        response = await exchange(srv.port, GET)
    assert response.body == b"cancelled"
    assert calls == [1]


async def test_an_app_cancelled_in_its_own_code_with_warnings_as_errors() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        async with serve(sleep_then_answer) as srv:
            response = await exchange(srv.port, GET)
    assert (response.status, response.body) == (200, b"cancelled")


async def test_an_app_cancelled_waiting_for_its_body_with_warnings_as_errors() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        first = await receive()
        timer = cancel_current_task_after(0.05)
        try:
            await receive()  # the rest of the body never comes
            outcome = b"not cancelled"
        except asyncio.CancelledError:
            outcome = b"cancelled after " + first["body"]
        except BaseException as exc:
            outcome = repr(exc).encode()
        finally:
            timer.cancel()
        await answer(send, outcome)

    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        async with serve(app) as srv, raw_connection(srv.port) as conn:
            await conn.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
            response = await conn.read_response()
    assert (response.status, response.body) == (200, b"cancelled after abc")


async def test_an_app_cancelled_waiting_to_send_with_warnings_as_errors() -> None:
    outcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        chunk = b"x" * (1 << 20)
        timer = cancel_current_task_after(0.2)
        try:
            for _ in range(256):  # far more than the socket buffers hold: send must wait
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            outcome.set_result("never blocked")
        except asyncio.CancelledError:
            outcome.set_result("cancelled")
        except BaseException as exc:
            outcome.set_result(repr(exc))
        finally:
            timer.cancel()

    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        async with serve(app) as srv, raw_connection(srv.port) as conn:
            await conn.send(GET)  # and never read the answer
            assert await asyncio.wait_for(outcome, 10) == "cancelled"
