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
import inspect
import threading
from collections.abc import Coroutine
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
        if self.in_loop_thread():
            raise RuntimeError("EventLoopThread.run called from the loop's own thread.")
        future = self.submit(_as_coroutine(awaitable))
        self._running.add(future)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise asyncio.CancelledError() from None
        finally:
            self._running.discard(future)

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
