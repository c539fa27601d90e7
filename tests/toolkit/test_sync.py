"""sync_to_async / async_to_sync: where calls run, what flows, what fails how."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import sqlite3
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor

import pytest

from sluiceway.sync import ThreadSensitiveContext, async_to_sync, sync_to_async

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


def thread_id() -> int:
    return threading.get_ident()


def current_thread() -> threading.Thread:
    # Unlike an ident, which a new thread may reuse once this one has exited.
    return threading.current_thread()


def run_in_plain_thread(fn, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    """Run ``fn`` in a fresh thread with no event loop; return or re-raise."""
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "plain thread hung"
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]


async def test_return_value_and_arguments_pass_through() -> None:
    def add(a: int, b: int = 0) -> int:
        return a + b

    assert await sync_to_async(add)(2, b=3) == 5
    assert await sync_to_async(add, thread_sensitive=False)(4) == 4


async def test_exception_passes_through_with_its_traceback() -> None:
    def explode() -> None:
        raise KeyError("boom")

    with pytest.raises(KeyError) as info:
        await sync_to_async(explode)()
    frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
    assert "explode" in frames


async def test_thread_sensitive_calls_share_one_thread_off_the_loop() -> None:
    loop_thread = thread_id()
    seen = {await sync_to_async(thread_id)() for _ in range(5)}
    assert len(seen) == 1
    assert loop_thread not in seen


async def test_thread_sensitive_context_gets_its_own_thread() -> None:
    outside = await sync_to_async(thread_id)()
    async with ThreadSensitiveContext():
        first = await sync_to_async(current_thread)()
        second = await sync_to_async(current_thread)()
    assert first is second
    assert first.ident != outside
    async with ThreadSensitiveContext():
        other = await sync_to_async(current_thread)()
    assert other is not first


async def test_call_in_an_ended_thread_sensitive_context_is_an_error() -> None:
    async with ThreadSensitiveContext():
        await sync_to_async(thread_id)()
        inside = contextvars.copy_context()
    # A task started inside the block but calling after it ended.
    late = inside.run(asyncio.ensure_future, sync_to_async(thread_id)())
    with pytest.raises(RuntimeError, match="ThreadSensitiveContext"):
        await asyncio.wait_for(late, 5)


async def test_unsensitive_calls_use_the_given_executor() -> None:
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mine") as pool:
        name = await sync_to_async(
            lambda: threading.current_thread().name, thread_sensitive=False, executor=pool
        )()
    assert name.startswith("mine")


async def test_contextvars_flow_into_and_back_from_the_thread() -> None:
    def read_and_set() -> str:
        before = request_id.get()
        request_id.set("set-in-thread")
        return before

    request_id.set("from-loop")
    assert await sync_to_async(read_and_set)() == "from-loop"
    assert request_id.get() == "set-in-thread"
    request_id.set("again")
    assert await sync_to_async(read_and_set, thread_sensitive=False)() == "again"
    assert request_id.get() == "set-in-thread"


async def test_context_changes_flow_back_even_when_the_call_raises() -> None:
    def set_then_fail() -> None:
        request_id.set("failed-call")
        raise ValueError("no")

    with pytest.raises(ValueError):
        await sync_to_async(set_then_fail)()
    assert request_id.get() == "failed-call"


async def test_cancellation_returns_at_once_and_logs_a_late_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = threading.Event()
    finished = threading.Event()

    def slow_then_fail() -> None:
        release.wait(10)
        finished.set()
        raise RuntimeError("late failure")

    task = asyncio.ensure_future(sync_to_async(slow_then_fail)())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert not finished.is_set()  # control came back while the thread still ran
    with caplog.at_level(logging.ERROR, logger="sluiceway.sync"):
        release.set()
        # The next thread-sensitive call queues behind the abandoned one.
        await asyncio.wait_for(sync_to_async(lambda: None)(), 5)
        await asyncio.sleep(0)
    assert finished.is_set()
    assert any("late failure" in (r.exc_text or "") or r.exc_info for r in caplog.records)
    assert any("cancelled" in r.getMessage() for r in caplog.records)


async def test_async_to_sync_inside_sync_to_async_uses_the_outer_loop() -> None:
    outer = asyncio.get_running_loop()

    async def which_loop() -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def bridge() -> asyncio.AbstractEventLoop:
        return async_to_sync(which_loop)()

    assert await sync_to_async(bridge)() is outer
    assert await sync_to_async(bridge, thread_sensitive=False)() is outer


async def test_nested_thread_sensitive_call_returns_to_the_sync_thread() -> None:
    async def inner() -> int:
        return await sync_to_async(thread_id)()

    def outer_sync() -> tuple[int, int]:
        return thread_id(), async_to_sync(inner)()

    me, nested = await sync_to_async(outer_sync, thread_sensitive=False)()
    assert me == nested


async def test_async_to_sync_from_a_running_loop_is_a_clear_error() -> None:
    async def noop() -> None:
        return None

    with pytest.raises(RuntimeError, match="running"):
        async_to_sync(noop)()


def test_async_to_sync_from_a_plain_thread_keeps_one_loop() -> None:
    lock_holder: list[asyncio.Lock] = []

    async def use_loop_bound_object() -> asyncio.AbstractEventLoop:
        # An asyncio.Lock binds to the first loop that contends on it; a Redis
        # pool behaves the same way. A new loop per call would break it.
        if not lock_holder:
            lock_holder.append(asyncio.Lock())
        async with lock_holder[0]:
            await asyncio.sleep(0)
        return asyncio.get_running_loop()

    call = async_to_sync(use_loop_bound_object)
    loops = {call() for _ in range(3)}
    loops.add(run_in_plain_thread(call))
    assert len(loops) == 1
    (loop,) = loops
    assert loop.is_running() and not loop.is_closed()


def test_async_to_sync_serves_thread_sensitive_calls_in_the_caller_thread() -> None:
    def scenario() -> tuple[int, int, int]:
        async def inner() -> tuple[int, int]:
            a = await sync_to_async(thread_id)()
            b = await sync_to_async(thread_id)()
            return a, b

        a, b = async_to_sync(inner)()
        return thread_id(), a, b

    me, a, b = run_in_plain_thread(scenario)
    assert me == a == b


def test_async_to_sync_passes_values_errors_and_context() -> None:
    async def double(x: int) -> int:
        assert request_id.get() == "caller"
        request_id.set("coroutine")
        return x * 2

    async def fail() -> None:
        raise LookupError("missing")

    def scenario() -> str:
        request_id.set("caller")
        assert async_to_sync(double)(21) == 42
        with pytest.raises(LookupError):
            async_to_sync(fail)()
        return request_id.get()

    assert run_in_plain_thread(scenario) == "coroutine"


def test_decorator_forms_and_methods() -> None:
    class Repo:
        def __init__(self) -> None:
            self.items = [1, 2]

        @sync_to_async
        def count(self) -> int:
            return len(self.items)

        @async_to_sync
        async def total(self) -> int:
            return sum(self.items) + await self.count()

    @sync_to_async(thread_sensitive=False)
    def ping() -> str:
        return "pong"

    async def both() -> tuple[int, str]:
        return await Repo().count(), await ping()

    assert asyncio.run(both()) == (2, "pong")
    assert run_in_plain_thread(lambda: Repo().total()) == 5


def test_loop_inside_the_sensitive_thread_is_refused_not_deadlocked() -> None:
    def start_own_loop() -> None:
        asyncio.run(sync_to_async(thread_id)())

    async def scenario() -> None:
        await sync_to_async(start_own_loop)()

    with pytest.raises(RuntimeError, match="wait for itself"):
        asyncio.run(asyncio.wait_for(scenario(), 10))


def test_bad_arguments_are_type_errors() -> None:
    async def coro() -> None:
        return None

    with pytest.raises(TypeError, match="coroutine function"):
        sync_to_async(coro)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="executor"):
        sync_to_async(thread_id, executor=ThreadPoolExecutor(1))
    with pytest.raises(TypeError):
        async_to_sync(42)  # type: ignore[arg-type]


# -- issue 16, items 11, 12 and 14 ----------------------------------------------------------


def test_wrappers_nest_and_keep_their_own_attributes() -> None:
    async def outer() -> str:
        return "outer"

    def inner() -> int:
        return thread_id()

    class WithFunc:
        """A callable object that happens to have a ``func`` attribute."""

        def __init__(self) -> None:
            self.func = lambda: "the attribute"

        def __call__(self) -> str:
            return "the call"

    async def on_the_loop() -> tuple[str, str]:
        # The outer wrapper once took the inner one's ``func`` (``outer``) for its
        # own and ran it in the thread: an un-awaited coroutine came back.
        nested = await asyncio.wait_for(sync_to_async(async_to_sync(outer))(), 5)
        return nested, await asyncio.wait_for(sync_to_async(WithFunc())(), 5)

    assert asyncio.run(on_the_loop()) == ("outer", "the call")

    def from_a_plain_thread() -> tuple[int, int]:
        # The outer wrapper once awaited the plain function ``inner``: TypeError.
        return thread_id(), async_to_sync(sync_to_async(inner))()

    me, ran_in = run_in_plain_thread(from_a_plain_thread)
    assert ran_in == me  # thread-sensitive: served by the blocked caller thread

    wrapped = sync_to_async(async_to_sync(outer))
    assert (wrapped.__name__, wrapped.__wrapped__.__wrapped__) == ("outer", outer)  # type: ignore[attr-defined]


def test_an_object_with_an_async_call_is_refused() -> None:
    class AsyncCall:
        async def __call__(self) -> None:
            return None

    async def coro(x: int) -> None:
        return None

    for refused in (AsyncCall(), functools.partial(coro, 1), sync_to_async(thread_id)):
        with pytest.raises(TypeError, match="__call__ is async"):
            sync_to_async(refused)  # type: ignore[arg-type]
    # Calling the class builds an instance, a sync call: accepted.
    made = asyncio.run(sync_to_async(AsyncCall)())
    assert isinstance(made, AsyncCall)


async def test_nested_thread_sensitive_contexts_share_the_outer_thread() -> None:
    def open_db() -> sqlite3.Connection:
        # check_same_thread: sqlite refuses a connection used from another thread,
        # as a transaction opened on one thread is invisible from another.
        db = sqlite3.connect(":memory:")
        db.execute("CREATE TABLE t (x)")
        db.execute("INSERT INTO t VALUES (1)")  # opens a transaction
        return db

    def count(db: sqlite3.Connection) -> int:
        return int(db.execute("SELECT count(*) FROM t").fetchone()[0])

    async with ThreadSensitiveContext():
        outer = await sync_to_async(current_thread)()
        db = await sync_to_async(open_db)()
        async with ThreadSensitiveContext():
            assert await sync_to_async(current_thread)() is outer
            assert await sync_to_async(count)(db) == 1
        # The inner block's end did not stop the outer block's thread.
        assert await sync_to_async(current_thread)() is outer
        await sync_to_async(db.close)()
        inside = contextvars.copy_context()

    async def outlived() -> threading.Thread:
        # A task that outlived its outer block opens a block of its own: that
        # one is outermost now and gets a fresh thread.
        async with ThreadSensitiveContext():
            return await sync_to_async(current_thread)()

    late = await asyncio.wait_for(inside.run(asyncio.ensure_future, outlived()), 5)
    assert late is not outer


# -- asgiref's whole sync API (issue 19) ------------------------------------------------


def test_sync_to_async_wrappers_are_coroutine_functions_to_every_check() -> None:
    import inspect

    import asgiref.sync

    from sluiceway.sync import iscoroutinefunction

    def plain(x: int, y: int = 1) -> int:
        return x + y

    class Holder:
        @sync_to_async
        def method(self) -> Holder:
            return self

    wrapped = sync_to_async(plain)
    for check in (inspect.iscoroutinefunction, asyncio.iscoroutinefunction):
        assert check(wrapped)
        assert check(Holder().method)
        assert not check(async_to_sync(wrapped))
    # Django's own check (asgiref's), and ours.
    assert asgiref.sync.iscoroutinefunction(wrapped)
    assert iscoroutinefunction(wrapped) and not iscoroutinefunction(plain)
    # The signature is still the wrapped function's.
    assert str(inspect.signature(wrapped)) == "(x: 'int', y: 'int' = 1) -> 'int'"


def test_markcoroutinefunction_marks_and_sync_to_async_refuses_the_marked() -> None:
    from sluiceway.sync import iscoroutinefunction, markcoroutinefunction

    def returns_a_coroutine() -> object:
        return asyncio.sleep(0)

    marked = markcoroutinefunction(returns_a_coroutine)
    assert marked is returns_a_coroutine
    assert iscoroutinefunction(marked)
    with pytest.raises(TypeError, match="coroutine"):
        sync_to_async(marked)


async def test_context_argument_runs_in_that_context_and_applies_nothing_back() -> None:
    own = contextvars.copy_context()
    own.run(request_id.set, "own")

    def swap() -> str:
        seen = request_id.get()
        request_id.set("changed")
        return seen

    request_id.set("caller")
    assert await sync_to_async(swap, context=own)() == "own"
    assert own[request_id] == "changed"  # the change stays in the given context
    assert request_id.get() == "caller"  # and does not reach the caller
    assert await sync_to_async(context=own, thread_sensitive=False)(swap)() == "changed"


async def test_force_new_loop_skips_the_outer_loop_and_closes_its_own() -> None:
    outer = asyncio.get_running_loop()
    seen: list[asyncio.AbstractEventLoop] = []

    async def which_loop() -> int:
        seen.append(asyncio.get_running_loop())
        # A thread-sensitive call from the new loop still returns to the caller thread.
        return await sync_to_async(thread_id)()

    def bridge() -> tuple[int, int]:
        return thread_id(), async_to_sync(which_loop, force_new_loop=True)()

    me, served_in = await sync_to_async(bridge)()
    assert me == served_in
    assert seen[0] is not outer and seen[0].is_closed()

    @async_to_sync(force_new_loop=True)
    async def decorated() -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    first, second = run_in_plain_thread(lambda: (decorated(), decorated()))
    assert first is not second and first.is_closed()


def test_async_single_thread_context_keeps_one_loop_and_thread_then_closes_it() -> None:
    from sluiceway.sync import AsyncSingleThreadContext

    async def where() -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
        return asyncio.get_running_loop(), current_thread()

    def scenario() -> list[tuple[asyncio.AbstractEventLoop, threading.Thread]]:
        places = []
        with AsyncSingleThreadContext():
            places.append(async_to_sync(where)())
            with AsyncSingleThreadContext():  # re-entrant: the outer block's loop
                places.append(async_to_sync(where, force_new_loop=True)())
            places.append(async_to_sync(where)())
        places.append(async_to_sync(where)())  # outside: the background loop again
        return places

    places = run_in_plain_thread(scenario)
    assert len({id(loop) for loop, _ in places[:3]}) == 1
    assert len({thread for _, thread in places[:3]}) == 1
    assert places[0][0].is_closed()  # closed when the outermost block ended
    assert places[3][0] is not places[0][0] and not places[3][0].is_closed()


async def test_thread_sensitive_context_with_an_executor() -> None:
    pool = ThreadPoolExecutor(max_workers=1)
    pool_thread = pool.submit(current_thread).result()
    context = ThreadSensitiveContext(executor=pool)
    try:
        async with ThreadSensitiveContext():  # the executor wins even when nested
            async with context:
                assert await sync_to_async(current_thread)() is pool_thread
            assert await sync_to_async(current_thread)() is not pool_thread
        with pytest.raises(RuntimeError, match="entered again"):
            async with context:
                pass
        # A task that outlived the block is refused, not sent elsewhere.
        late = ThreadSensitiveContext(executor=pool)
        async with late:
            leftover = contextvars.copy_context()
        with pytest.raises(RuntimeError, match="ended"):
            await leftover.run(asyncio.ensure_future, sync_to_async(current_thread)())
        assert pool.submit(current_thread).result() is pool_thread  # not shut down
    finally:
        pool.shutdown()


def test_executor_context_beats_the_async_to_sync_thread() -> None:
    pool = ThreadPoolExecutor(max_workers=1)
    pool_thread = pool.submit(current_thread).result()

    async def inner() -> tuple[threading.Thread, threading.Thread]:
        async with ThreadSensitiveContext(executor=pool):
            in_block = await sync_to_async(current_thread)()
        return in_block, await sync_to_async(current_thread)()

    def scenario() -> tuple[threading.Thread, threading.Thread, threading.Thread]:
        return current_thread(), *async_to_sync(inner)()

    try:
        me, in_block, after = run_in_plain_thread(scenario)
        assert in_block is pool_thread
        assert after is me  # the caller thread serves calls again after the block
    finally:
        pool.shutdown()


# -- Local ------------------------------------------------------------------------------


async def test_local_is_task_local_and_follows_sync_to_async_both_ways() -> None:
    from sluiceway.sync import Local

    local = Local()
    local.value = "caller"

    async def other_task() -> str:
        local.value = "other"
        return local.value

    assert await asyncio.create_task(other_task()) == "other"
    assert local.value == "caller"  # the task wrote its own copy

    def in_thread() -> str:
        seen = local.value
        local.value = "thread"
        return seen

    assert await sync_to_async(in_thread)() == "caller"
    assert local.value == "thread"
    del local.value
    with pytest.raises(AttributeError):
        local.value  # noqa: B018
    with pytest.raises(AttributeError):
        del local.value


def test_local_is_thread_local_in_sync_code_and_shared_with_async_to_sync() -> None:
    from sluiceway.sync import Local

    local = Local()

    async def read_and_write() -> str:
        seen = local.value
        local.value = "coroutine"
        return seen

    def scenario() -> tuple[str, str]:
        local.value = "sync"
        return async_to_sync(read_and_write)(), local.value

    assert run_in_plain_thread(scenario) == ("sync", "coroutine")
    assert not hasattr(local, "value")  # set only in that other thread
    local.value = "main"
    assert run_in_plain_thread(lambda: getattr(local, "value", None)) is None


async def test_thread_critical_local_never_crosses_a_bridge() -> None:
    from sluiceway.sync import Local

    local = Local(thread_critical=True)
    local.conn = "loop-thread connection"

    def in_thread() -> str | None:
        seen = getattr(local, "conn", None)
        local.conn = "worker connection"
        return seen

    assert await sync_to_async(in_thread)() is None
    assert await sync_to_async(in_thread)() == "worker connection"  # same thread, kept
    assert local.conn == "loop-thread connection"

    async def child() -> str:
        local.conn = "child task"
        return local.conn

    assert await asyncio.create_task(child()) == "child task"
    assert local.conn == "loop-thread connection"  # context-local within the loop thread


def test_local_hides_data_a_thread_merely_inherited(monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulates Python 3.14's thread_inherit_context: a new thread that starts in
    # a copy of its creator's context must not see the creator's Local data,
    # while a bridge that moves the context on purpose still carries it.
    import sluiceway.local
    import sluiceway.sync_workers
    from sluiceway.sync import Local

    monkeypatch.setattr(sluiceway.local, "THREADS_INHERIT_CONTEXT", True)
    monkeypatch.setattr(sluiceway.sync_workers, "THREADS_INHERIT_CONTEXT", True)
    local = Local()

    def scenario() -> tuple[object, object, object]:
        local.value = "owner"
        inherited = contextvars.copy_context()
        seen: list[object] = []
        thread = threading.Thread(
            target=inherited.run, args=(lambda: seen.append(getattr(local, "value", None)),)
        )
        thread.start()
        thread.join(10)

        async def through_bridge() -> object:
            return await sync_to_async(lambda: getattr(local, "value", None))()

        return seen[0], async_to_sync(through_bridge)(), local.value

    assert run_in_plain_thread(scenario) == (None, "owner", "owner")


# -- asgiref interoperation (Django's own bridges are asgiref's) -------------------------


async def test_calls_inside_asgiref_thread_sensitive_context_meet_asgirefs_thread() -> None:
    import asgiref.sync

    async with asgiref.sync.ThreadSensitiveContext():
        theirs = await asgiref.sync.sync_to_async(current_thread)()
        ours = await sync_to_async(current_thread)()
    assert ours is theirs
    assert await sync_to_async(current_thread)() is not theirs


def test_calls_under_asgiref_async_to_sync_return_to_the_calling_thread() -> None:
    # A Django TestCase runs `async def` tests this way; the test database
    # transaction lives in the calling thread.
    import asgiref.sync

    async def test_body() -> tuple[threading.Thread, threading.Thread]:
        direct = await sync_to_async(current_thread)()
        # A task started in an empty context (as a communicator starts an app)
        # is found through the loop asgiref registered.
        empty = contextvars.Context()
        task = empty.run(asyncio.ensure_future, sync_to_async(current_thread)())
        return direct, await task

    def scenario() -> tuple[threading.Thread, threading.Thread, threading.Thread]:
        return current_thread(), *asgiref.sync.async_to_sync(test_body)()

    me, direct, from_empty_context = run_in_plain_thread(scenario)
    assert direct is me and from_empty_context is me
