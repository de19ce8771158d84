"""The controller's per-trial tasks (launch, fetch, release): plain asyncio tasks with
one owner in the controller's task group.

A trial runs several short tasks (one per fetch), so their cost counts: anyio's
``start_soon`` builds a task handle, a cancel scope and an event per task (~25 us),
an asyncio task ~5 us. What the task group gave them is kept by :meth:`TrialTasks.own`,
a member of the group for its whole life: the first error a task raises fails the
group (as a task of its own would), and when the group ends or is cancelled every task
is cancelled and awaited before it exits (nothing outlives ``arun``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import anyio


class TrialTasks:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task] = set()
        self._error: BaseException | None = None
        self._wake: asyncio.Future | None = None
        self._closed = False

    def spawn(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> asyncio.Task:
        """Run ``fn(*args)`` now, as a task that :meth:`own` answers for."""
        if self._closed:
            raise RuntimeError("trial tasks are only started while the experiment runs")
        task = asyncio.get_running_loop().create_task(fn(*args))
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return  # stopped on purpose (the trial was stopped, or everything ends)
        error = task.exception()
        if error is not None and self._error is None:
            self._error = error
            if self._wake is not None and not self._wake.done():
                self._wake.set_result(None)

    async def own(self) -> None:
        """Run in the task group: raise the first error of a task; when cancelled (the
        experiment ends), cancel every task and wait for them."""
        try:
            while self._error is None:
                self._wake = asyncio.get_running_loop().create_future()
                await self._wake
            raise self._error
        finally:
            with anyio.CancelScope(shield=True):
                await self.close()

    async def close(self) -> None:
        """Start no more tasks; cancel those still running and wait for them (also where
        :meth:`own` never got to run)."""
        self._closed = True
        while self._tasks:  # a task may start another as it ends
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
