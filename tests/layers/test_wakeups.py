"""``Waiter`` and ``Waker`` (layers/wakeups.py) under real asyncio tasks, on both event loops."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import uvloop

from sluiceway.layers.wakeups import Waiter, Waker

LOOPS = ["asyncio", "uvloop"]


def run(kind: str, main: Callable[[], Awaitable[Any]]) -> Any:
    if kind == "uvloop":
        return uvloop.run(main())  # type: ignore[arg-type]
    return asyncio.run(main())  # type: ignore[arg-type]


async def waiting_tasks(waker: Waker, n: int) -> tuple[list[Waiter], list[asyncio.Task[Any]]]:
    waiters = [Waiter(waker) for _ in range(n)]

    async def wait(waiter: Waiter) -> Any:
        return await waiter

    tasks = [asyncio.ensure_future(wait(waiter)) for waiter in waiters]
    await asyncio.sleep(0)  # every task is now waiting on its waiter
    assert all(waiter.callback is not None for waiter in waiters)
    return waiters, tasks


@pytest.mark.parametrize("kind", LOOPS)
def test_a_burst_of_results_wakes_every_task_in_one_loop_callback_in_order(kind: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        waker = Waker(loop)
        waiters, tasks = await waiting_tasks(waker, 50)
        woken: list[int] = []
        for i, task in enumerate(tasks):
            task.add_done_callback(lambda _, i=i: woken.append(i))
        scheduled = 0
        call_soon = loop.call_soon

        def counting_call_soon(*args: Any, **kwargs: Any) -> Any:
            nonlocal scheduled
            if args and args[0] == waker.run:
                scheduled += 1
            return call_soon(*args, **kwargs)

        loop.call_soon = counting_call_soon  # type: ignore[method-assign]
        try:
            for i in reversed(range(50)):  # resolved last to first
                waiters[i].set_result(i)
        finally:
            loop.call_soon = call_soon  # type: ignore[method-assign]
        assert scheduled == 1
        assert await asyncio.gather(*tasks) == list(range(50))
        assert woken == list(reversed(range(50)))  # tasks finish in resolution order
        assert waker.due == []

    run(kind, main)


@pytest.mark.parametrize("kind", LOOPS)
def test_a_cancelled_task_raises_cancelled_error_with_its_message(kind: str) -> None:
    async def cancelled_args(awaited: Any) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        """What a task waiting on ``awaited`` sees, and its awaiter, when cancelled("bye")."""
        inner: list[tuple[Any, ...]] = []

        async def wait() -> Any:
            try:
                return await awaited
            except asyncio.CancelledError as exc:
                inner.append(exc.args)
                raise

        task = asyncio.ensure_future(wait())
        await asyncio.sleep(0)
        task.cancel("bye")
        with pytest.raises(asyncio.CancelledError) as raised:
            await task
        return inner[0], raised.value.args

    async def main() -> None:
        loop = asyncio.get_running_loop()
        waker = Waker(loop)
        waiters = [Waiter(waker), Waiter(waker)]
        seen = await cancelled_args(waiters[0])
        # Whatever this Python's asyncio passes on for a Future, a Waiter passes on too.
        assert seen == await cancelled_args(loop.create_future())
        assert seen[0] == ("bye",)
        assert waiters[0].cancelled() and waiters[0].done()
        with pytest.raises(asyncio.CancelledError):
            waiters[0].result()
        with pytest.raises(asyncio.CancelledError):
            waiters[0].exception()
        # A cancelled waiter refuses a result; the other is untouched.
        with pytest.raises(asyncio.InvalidStateError):
            waiters[0].set_result("late")
        assert not waiters[0].cancel()
        other = asyncio.ensure_future(asyncio.wait_for(waiters[1], 5))
        await asyncio.sleep(0)
        waiters[1].set_result("kept")
        assert await other == "kept"

    run(kind, main)


@pytest.mark.parametrize("kind", LOOPS)
def test_timeouts_around_a_waiter_cancel_it(kind: str) -> None:
    async def main() -> None:
        waiter = Waiter(Waker(asyncio.get_running_loop()))

        async def wait() -> Any:
            return await waiter

        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(wait(), 0.01)
        assert waiter.cancelled()

    run(kind, main)


def test_a_resolved_waiter_is_returned_without_waiting_and_keeps_one_callback() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        waiter = Waiter(Waker(loop))
        assert not waiter.done() and waiter.get_loop() is loop
        with pytest.raises(asyncio.InvalidStateError):
            waiter.result()
        with pytest.raises(asyncio.InvalidStateError):
            waiter.exception()
        calls: list[Any] = []
        waiter.add_done_callback(calls.append)
        with pytest.raises(RuntimeError, match="one task"):
            waiter.add_done_callback(calls.append)
        assert waiter.remove_done_callback(print) == 0
        assert waiter.remove_done_callback(calls.append) == 1
        waiter.set_result(7)
        assert waiter.exception() is None and await waiter == 7
        # A callback added once done is scheduled at once, as a Future's is.
        done = asyncio.Event()
        waiter.add_done_callback(lambda s: (calls.append(s.result()), done.set()))
        await done.wait()
        assert calls == [7]

    asyncio.run(main())


def test_a_failing_wake_up_is_reported_and_the_rest_of_the_batch_still_runs() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        reported: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _, context: reported.append(context))
        waker = Waker(loop)
        seen: list[str] = []
        var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="none")

        def failing(_: Waiter) -> None:
            raise ValueError("boom")

        for name, callback in (("a", lambda s: seen.append(var.get())), ("b", failing)):
            context = contextvars.copy_context()
            context.run(var.set, name)
            waiter = Waiter(waker)
            waiter.add_done_callback(callback, context=context)
            waiter.set_result(None)
        after = Waiter(waker)
        after.add_done_callback(lambda s: seen.append("after"))
        after.set_result(None)
        await asyncio.sleep(0)
        assert seen == ["a", "after"]  # each in its own context; the failure did not stop it
        assert [type(c["exception"]) for c in reported] == [ValueError]

    asyncio.run(main())


def test_system_exit_in_a_wake_up_propagates_and_the_rest_wake_next_time() -> None:
    loop = asyncio.new_event_loop()
    try:
        waker = Waker(loop)
        seen: list[str] = []

        def exiting(_: Waiter) -> None:
            raise SystemExit(3)

        for callback in (exiting, lambda s: seen.append("rest")):
            waiter = Waiter(waker)
            waiter.add_done_callback(callback)
            waiter.set_result(None)
        with pytest.raises(SystemExit):
            loop.run_until_complete(asyncio.sleep(0))
        assert seen == [] and len(waker.due) == 1  # scheduled again, not lost
        loop.run_until_complete(asyncio.sleep(0))
        assert seen == ["rest"]
    finally:
        loop.close()


def test_a_task_on_another_loop_cannot_wait_on_a_waiter() -> None:
    other = asyncio.new_event_loop()
    try:
        waiter = Waiter(Waker(other))

        async def wait() -> Any:
            return await waiter

        with pytest.raises(RuntimeError, match="different loop"):
            asyncio.run(wait())
    finally:
        other.close()


def test_a_callback_removed_after_its_waiter_was_resolved_is_not_called() -> None:
    async def main() -> None:
        waker = Waker(asyncio.get_running_loop())
        seen: list[str] = []
        first, second = Waiter(waker), Waiter(waker)
        first.add_done_callback(lambda w: seen.append("first"))
        second.add_done_callback(lambda w: seen.append("second"))
        first.set_result(1)
        second.set_result(2)
        assert first.remove_done_callback(first.callback) == 1  # type: ignore[arg-type]
        await asyncio.sleep(0)
        assert seen == ["second"] and waker.due == []

    asyncio.run(main())
