"""The controller's inbox: the one queue every decision-relevant event goes through.

Unbounded and single-consumer. anyio's memory object stream did this job, but its
``receive`` builds an Event, a receiver record and a task-info object, and looks the
async backend up several times, per event: ~20 us, on the path of every result. This
costs ~2 us and keeps its order and fairness: the consumer yields to the loop before
each event (as the stream's checkpoint did), so posting tasks interleave as before.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import anyio

from tune_async.utils.util import yield_to_loop


class Inbox:
    def __init__(self) -> None:
        self._items: collections.deque[Any] = collections.deque()
        self._waiter: asyncio.Future | None = None
        self._closed = False

    def send_nowait(self, item: Any) -> None:
        """Queue ``item`` (on the loop's thread only: the waiter is the loop's future)."""
        if self._closed:
            raise anyio.ClosedResourceError
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def receive(self) -> Any:
        """The next item, in the order sent; waits while there is none."""
        # A checkpoint: cancellation lands here, others run (after the due timers when
        # the loop's turn is spent: the step that just ended may have used it up).
        await yield_to_loop()
        while not self._items:
            if self._closed:
                raise anyio.EndOfStream
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()

    def close(self) -> None:
        """No more items: senders get ClosedResourceError; what was queued is dropped."""
        self._closed = True
        self._items.clear()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
