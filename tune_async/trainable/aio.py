"""An event loop in a thread of its own, for async trainables.

Async trainables (``async def`` functions, async generators, ``async def step``)
run on an asyncio loop inside the trial's process. The loop lives in a daemon
thread beside the actor's thread, so the actor keeps its synchronous interface
(``train_batch`` blocks until the batch is ready) while the trainable awaits.
Each trainable instance gets its own loop (in a Ray actor: one loop per actor).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import inspect
import threading
import weakref
from collections.abc import Coroutine, Iterator
from typing import Any


class EventLoopThread:
    """An asyncio loop running in a daemon thread, started on first use.

    Args:
        name: Name of the loop's thread.
    """

    def __init__(self, name: str = "tune-async-loop") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._running: set[concurrent.futures.Future] = set()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop (started now if it is not running)."""
        with self._lock:
            if self._loop is None or self._loop.is_closed() or not self._thread.is_alive():
                loop = asyncio.new_event_loop()
                ready = threading.Event()
                thread = threading.Thread(target=self._serve, args=(loop, ready),
                                          name=self._name, daemon=True)
                thread.start()
                ready.wait()
                self._loop, self._thread = loop, thread
            return self._loop

    @staticmethod
    def _serve(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
        finally:
            loop.close()

    def in_loop_thread(self) -> bool:
        """Whether the caller runs in the loop's own thread."""
        return self._thread is not None and threading.current_thread() is self._thread

    def submit(self, coro: Coroutine) -> concurrent.futures.Future:
        """Schedule ``coro`` as a task on the loop; returns its (thread-safe) future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, awaitable: Any) -> Any:
        """Run ``awaitable`` on the loop and block the calling thread until it is done.

        :meth:`cancel_running` cancels it (it then raises ``CancelledError``).
        """
        return _block_on(self, awaitable, "EventLoopThread.run called from the loop's own thread.")

    def resolve(self, value: Any) -> Any:
        """``value`` itself, or what it evaluates to on the loop when it is awaitable."""
        return self.run(value) if inspect.isawaitable(value) else value

    def cancel_running(self) -> None:
        """Cancel whatever :meth:`run` calls are waiting for (thread-safe)."""
        for future in list(self._running):
            future.cancel()

    def close(self, timeout_s: float = 5.0) -> None:
        """Cancel the loop's remaining tasks and stop it (the thread then ends)."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or loop.is_closed() or thread is None:
            return
        if thread is threading.current_thread():
            loop.call_soon(loop.stop)
            return

        async def _shutdown() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=timeout_s) if tasks else None
            await loop.shutdown_asyncgens()

        try:
            asyncio.run_coroutine_threadsafe(_shutdown(), loop).result(timeout_s + 1)
        except Exception:  # noqa: BLE001 - a stuck task must not keep the trial from ending
            pass
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout_s)


class LoopHost:
    """The application's own running loop, lent to async trainables (the in-process executor).

    Tune's calls into a trainable keep their synchronous interface and run in worker
    threads; the coroutines they meet (``async def step``, an async function's task)
    run as tasks on this loop, and the calling thread waits for them. The host owns
    every task it started: :meth:`aclose` cancels and awaits those still running.
    Built on the loop's own thread.
    """

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.thread_id = threading.get_ident()
        self.tasks: set[asyncio.Task] = set()
        _hosted_loops.add(self.loop)

    def runner(self) -> HostedLoop:
        """A trainable's view of this loop (its ``close`` ends only that trainable's tasks)."""
        return HostedLoop(self)

    def in_loop_thread(self) -> bool:
        return threading.get_ident() == self.thread_id

    async def aclose(self, timeout_s: float = 5.0) -> None:
        """Cancel the tasks still running here and wait (bounded) until they have ended."""
        tasks = [task for task in self.tasks if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)


class HostedLoop:
    """:class:`EventLoopThread`'s interface over a :class:`LoopHost`: one per trainable."""

    def __init__(self, host: LoopHost) -> None:
        self._host = host
        self._futures: set[concurrent.futures.Future] = set()  # submitted, not finished
        self._task_of: dict[concurrent.futures.Future, asyncio.Task] = {}
        self._running: set[concurrent.futures.Future] = set()  # what run() waits for

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._host.loop

    def in_loop_thread(self) -> bool:
        return self._host.in_loop_thread()

    def submit(self, coro: Coroutine) -> concurrent.futures.Future:
        """Start ``coro`` as a task on the host's loop (from any thread); its future."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._futures.add(future)
        future.add_done_callback(self._futures.discard)
        if self.in_loop_thread():
            self._start(coro, future)
        else:
            try:
                self.loop.call_soon_threadsafe(self._start, coro, future)
            except RuntimeError:  # the application's loop has closed
                coro.close()
                future.cancel()
        return future

    def _start(self, coro: Coroutine, future: concurrent.futures.Future) -> None:
        if not future.set_running_or_notify_cancel():  # cancelled before it started
            coro.close()
            return
        task = self.loop.create_task(coro)
        self._task_of[future] = task
        self._host.tasks.add(task)
        task.add_done_callback(lambda done: self._finished(done, future))

    def _finished(self, task: asyncio.Task, future: concurrent.futures.Future) -> None:
        self._host.tasks.discard(task)
        self._task_of.pop(future, None)
        if task.cancelled():
            future.set_exception(asyncio.CancelledError())
        elif task.exception() is not None:
            future.set_exception(task.exception())
        else:
            future.set_result(task.result())

    def run(self, awaitable: Any) -> Any:
        """Run ``awaitable`` on the host's loop; block the calling (worker) thread until done."""
        return _block_on(self, awaitable, "Waiting for a coroutine on the application's own "
                         "event loop from that loop's thread would stall it.")

    async def arun(self, awaitable: Any) -> Any:
        """:meth:`run` for a caller on the host's loop itself (a Ray trial host's batch):
        awaits the task; :meth:`cancel_running` cancels it as it cancels ``run``'s."""
        future = self.submit(_as_coroutine(awaitable))
        self._running.add(future)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            self._cancel([future])  # the caller was cancelled: so is the step
            raise
        finally:
            self._running.discard(future)

    def resolve(self, value: Any) -> Any:
        return self.run(value) if inspect.isawaitable(value) else value

    def cancel_running(self) -> None:
        """Cancel whatever :meth:`run` calls are waiting for (thread-safe)."""
        self._cancel(list(self._running))

    def close(self, timeout_s: float = 5.0) -> None:
        """Cancel this trainable's tasks; off the loop's thread, wait (bounded) for them."""
        futures = list(self._futures)
        self._cancel(futures)
        if not self.in_loop_thread():
            concurrent.futures.wait(futures, timeout_s)

    def _cancel(self, futures: list[concurrent.futures.Future]) -> None:
        started = [future for future in futures if not future.cancel()]
        if not started:
            return
        if self.in_loop_thread():
            self._cancel_tasks(started)
        else:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nothing runs
                self.loop.call_soon_threadsafe(self._cancel_tasks, started)

    def _cancel_tasks(self, futures: list[concurrent.futures.Future]) -> None:
        for future in futures:
            task = self._task_of.get(future)
            if task is not None:
                task.cancel()



def _block_on(runner: Any, awaitable: Any, in_loop_message: str) -> Any:
    """``runner.run``: submit ``awaitable`` and block this (worker) thread for its result;
    ``runner.cancel_running`` cancels it (``CancelledError`` here)."""
    if runner.in_loop_thread():
        raise RuntimeError(in_loop_message)
    future = runner.submit(_as_coroutine(awaitable))
    runner._running.add(future)
    try:
        return future.result()
    except concurrent.futures.CancelledError:
        raise asyncio.CancelledError() from None
    finally:
        runner._running.discard(future)

_hosted_loops: weakref.WeakSet = weakref.WeakSet()
_host: contextvars.ContextVar[LoopHost | None] = contextvars.ContextVar(
    "tune_async_loop_host", default=None)


@contextlib.contextmanager
def hosted_by(host: LoopHost | None) -> Iterator[None]:
    """Within: async trainables made or driven by this thread run on ``host``'s loop."""
    token = _host.set(host)
    try:
        yield
    finally:
        _host.reset(token)


def loop_runner(name: str) -> EventLoopThread | HostedLoop:
    """Where a trainable's coroutines run: a host's loop when one is lent (in-process),
    otherwise a loop in a thread of the trainable's own."""
    host = _host.get()
    return host.runner() if host is not None else EventLoopThread(name=name)


def blocks_hosted_loop(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether waiting in this thread would block ``loop``, an application's lent loop."""
    if loop not in _hosted_loops:
        return False
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


async def _as_coroutine(awaitable: Any) -> Any:
    return await awaitable


def is_async_callable(fn: Any) -> bool:
    """Whether calling ``fn`` gives a coroutine or an async generator."""
    if getattr(fn, "_tune_async_trainable", False):
        return True
    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - callable objects with async __call__
    if call is not None and not inspect.isfunction(fn) and not isinstance(fn, type):
        return inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call)
    return False
