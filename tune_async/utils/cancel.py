"""Cancelling a run from asyncio without cutting its cleanup short.

anyio's shielded scopes hold back anyio's own cancellation, not asyncio's
``Task.cancel()``: a native cancel that lands while a run is already cleaning up
(a second Ctrl+C, a timeout around ``arun``, leaving a ``tune.start`` block just
after ``ExperimentEnded``) is thrown into the shielded cleanup, and the workers it
was about to release stay alive. So a run executes in a task of its own, and a
native cancel of its caller reaches it as a cancel of an anyio scope, which the
shields respect; the caller waits for the cleanup, then raises ``CancelledError``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

logger = logging.getLogger(__name__)

T = TypeVar("T")


async def run_with_orderly_cancel(fn: Callable[[], Awaitable[T]]) -> T:
    """``await fn()``; if the caller is cancelled, cancel ``fn`` the anyio way, wait for it
    to finish (further cancels included), then re-raise ``CancelledError``."""
    scope = anyio.CancelScope()

    async def scoped() -> T:
        with scope:
            return await fn()
        raise asyncio.CancelledError  # reached only when the scope was cancelled

    task = asyncio.get_running_loop().create_task(scoped())
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.done():
            scope.cancel()
            await until_done(task)
        _log_error_of_cancelled(task)
        raise


async def until_done(task: asyncio.Task) -> None:
    """Wait for ``task`` to end, whatever cancels the waiter meanwhile."""
    while not task.done():
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError:
            continue  # cancelled again: the run's cleanup still ends first (it is bounded)


def _log_error_of_cancelled(task: asyncio.Task) -> None:
    if task.cancelled():
        return
    error = task.exception()  # retrieved either way: asyncio would log it otherwise
    if error is not None and not isinstance(error, asyncio.CancelledError):
        logger.warning("The cancelled run ended with an error: %r", error)
