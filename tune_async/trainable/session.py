"""The function-API session: ``tune.report``, ``tune.checkpoint_dir`` and friends.

One :class:`TrialSession` exists per running function trainable. The function's
thread finds it through a thread-local; threads the user spawns from the function
fall back to the process-wide session (one trial per actor process).

The session is also the hand-off between the function's thread and the actor's
thread: results go into a deque, and **credits** granted by the actor bound how
far the function may run ahead of the driver.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from numbers import Number
from typing import Any

from tune_async.error import TuneError
from tune_async.result import (  # noqa: F401 - CHECKPOINT_PATH re-exported
    CHECKPOINT_PATH,
    DEFAULT_METRIC,
    SHOULD_CHECKPOINT,
    TIME_THIS_ITER_S,
)
from tune_async.trainable.aio import blocks_hosted_loop
from tune_async.trainable.batching import ends_batch

# Marker file written into every checkpoint directory (1.x layout).
CHECKPOINT_MARKER = ".is_checkpoint"

# Kinds of items the function thread hands to the actor thread.
ITEM_RESULT = "result"
ITEM_END = "end"
ITEM_ERROR = "error"


class StopTrial(BaseException):
    """Raised inside the function's thread to unwind it when the trial is stopped.

    A ``BaseException`` so that ``except Exception`` in user code does not swallow it.
    """


class TrialSession:
    """Shared state between a function trainable's thread and its actor.

    Args:
        trial_name: Name of the trial (``"default"`` outside Tune).
        trial_id: Id of the trial (``"default"`` outside Tune).
        logdir: The trial directory; checkpoint directories are made inside it.
    """

    def __init__(self, trial_name: str, trial_id: str, logdir: str) -> None:
        self.trial_name = trial_name
        self.trial_id = trial_id
        self.logdir = logdir
        self.cond = threading.Condition()
        self.items: collections.deque[tuple[str, Any]] = collections.deque()
        self.credits = 0
        self.stopping = False
        self.reported_any = False
        self._pending_checkpoint: str | None = None
        self._last_report_time = time.time()
        # Set by the trainable: fills a result's automatic fields in the reporting
        # thread, so the batch can end at the very result that meets ``stop``.
        self.process: Callable[[dict], dict] | None = None
        self.stop_criteria: dict | None = None  # the current batch's dict stop criteria

    # -- the function thread's side -------------------------------------------------

    def mark_started(self) -> None:
        """Start the clock for the first ``time_this_iter_s``."""
        self._last_report_time = time.time()

    def report(self, result: dict) -> None:
        """Hand ``result`` to the actor; block while the actor has granted no credit."""
        now = time.time()
        with self.cond:
            # Credits may have been revoked while the function was computing.
            self._wait_for_credit()
            self._hand_over(result, now)
            self._wait_for_credit()  # at a batch's end: the driver decides what comes next
        self._last_report_time = time.time()

    def _hand_over(self, result: dict, now: float) -> None:
        """Process and queue one result; spends a credit (``cond`` held)."""
        if TIME_THIS_ITER_S not in result:
            result[TIME_THIS_ITER_S] = now - self._last_report_time
        if self._pending_checkpoint is not None:
            result[SHOULD_CHECKPOINT] = True
            result[CHECKPOINT_PATH] = self._pending_checkpoint
            self._pending_checkpoint = None
        if self.process is not None:
            result = self.process(result)
        self.items.append((ITEM_RESULT, result))
        self.credits -= 1
        if ends_batch(result, self.stop_criteria):
            self.credits = 0  # block right here: the driver decides what comes next
        self.reported_any = True
        self.cond.notify_all()

    def finish(self, kind: str, payload: Any) -> None:
        """Hand over the function's end (return value or exception)."""
        with self.cond:
            self.items.append((kind, payload))
            self.cond.notify_all()

    def since_last_report(self) -> float:
        """Seconds the function has run since its last report returned."""
        return time.time() - self._last_report_time

    def make_checkpoint_dir(self, step: Any) -> str:
        suffix = f"{step:06d}" if isinstance(step, int) else str(step)
        path = os.path.join(self.logdir, f"checkpoint_{suffix}")
        os.makedirs(path, exist_ok=True)
        open(os.path.join(path, CHECKPOINT_MARKER), "a").close()
        return path

    def set_checkpoint(self, path: str) -> None:
        """Pair ``path`` with the next report (``should_checkpoint=True``)."""
        with self.cond:
            self._pending_checkpoint = os.path.abspath(path)

    def take_pending_checkpoint(self) -> str | None:
        """The checkpoint no report has carried yet (one written after the last report)."""
        with self.cond:
            path, self._pending_checkpoint = self._pending_checkpoint, None
        return path

    def _wait_for_credit(self) -> None:
        while self.credits <= 0 and not self.stopping:
            self.cond.wait()
        if self.stopping:
            raise StopTrial

    async def areport(self, result: dict) -> None:
        """``report`` for a caller on an event loop; here (a thread's session) it blocks."""
        self.report(result)

    # -- the actor thread's side ----------------------------------------------------

    def wake(self) -> None:
        """Tell the function that credits changed (call with ``cond`` held)."""
        self.cond.notify_all()

    def stop(self) -> None:
        """Make a blocked (or the next) ``report`` raise :class:`StopTrial`."""
        with self.cond:
            self.stopping = True
            self.cond.notify_all()


class AsyncTrialSession(TrialSession):
    """The session of an async function trainable: its task runs on an event loop.

    ``await areport(...)`` waits for credit without blocking the loop; a plain
    ``report(...)`` blocks the loop's thread while it waits (the trial's loop has
    nothing else to run meanwhile). A stop reaches the function as one
    ``asyncio.CancelledError``: raised by the report it waits in, or delivered to its
    task by ``task.cancel()`` wherever else it awaits, so its ``finally`` blocks run.
    """

    def __init__(self, trial_name: str, trial_id: str, logdir: str,
                 loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(trial_name, trial_id, logdir)
        self.loop = loop
        # Batches awaiting results on the loop (a Ray trial host's atrain_batch).
        self._item_waiters: list[asyncio.Future] = []
        self.task: asyncio.Task | None = None
        self._waiters: list[asyncio.Future] = []
        self._blocked_sync = False  # the task waits inside a plain report()
        self._cancel_delivered = False

    def _cancellation(self) -> asyncio.CancelledError:
        self._cancel_delivered = True
        return asyncio.CancelledError()

    def _hand_over(self, result: dict, now: float) -> None:
        super()._hand_over(result, now)
        self._wake_items()

    def finish(self, kind: str, payload: Any) -> None:
        with self.cond:
            super().finish(kind, payload)
            self._wake_items()

    def item_waiter(self) -> asyncio.Future:
        """A future set when results arrive or the trial stops (call with ``cond`` held)."""
        waiter = self.loop.create_future()
        self._item_waiters.append(waiter)
        return waiter

    def _wake_items(self) -> None:
        waiters, self._item_waiters = self._item_waiters, []
        for waiter in waiters:
            _release_on(self.loop, waiter)

    def _wait_for_credit(self) -> None:
        if blocks_hosted_loop(self.loop):
            raise TuneError(
                "tune.report in an async trainable run in-process (LocalExecutor) or in a "
                "shared trial host (trials_per_worker > 1) would block the event loop, which "
                "the trainable shares, until "
                "the driver asks for the next result: use `await tune.areport(...)` (or "
                "yield results from an async generator).")
        self._blocked_sync = True
        try:
            while self.credits <= 0 and not self.stopping:
                self.cond.wait()
        finally:
            self._blocked_sync = False
        if self.stopping:
            raise self._cancellation()

    async def _await_credit(self) -> None:
        """Wait (on the loop) until a credit is granted; called without ``cond`` held."""
        while True:
            with self.cond:
                if self.stopping:
                    raise self._cancellation()
                if self.credits > 0:
                    return
                waiter = self.loop.create_future()
                self._waiters.append(waiter)
            await waiter

    async def areport(self, result: dict) -> None:
        """Hand ``result`` to the actor; suspend (not block) while there is no credit."""
        now = time.time()
        while True:
            await self._await_credit()
            with self.cond:
                if self.credits > 0 and not self.stopping:
                    self._hand_over(result, now)
                    break
        await self._await_credit()
        self._last_report_time = time.time()

    def wake(self) -> None:
        self.cond.notify_all()
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            _release_on(self.loop, waiter)

    def stop(self) -> None:
        """Cancel the function: one ``CancelledError`` where it waits or awaits next."""
        with self.cond:
            self.stopping = True
            # Wakes a batch waiting for results, and a plain report the task waits in
            # (which then raises); a task elsewhere is cancelled on its loop.
            self.cond.notify_all()
            self._wake_items()
            if not self._blocked_sync and not self.loop.is_closed():
                self.loop.call_soon_threadsafe(self._cancel_task)

    def _cancel_task(self) -> None:
        with self.cond:
            if self._cancel_delivered or self.task is None or self.task.done():
                return
            self._cancel_delivered = True
        self.task.cancel()


def _release_on(loop: asyncio.AbstractEventLoop, waiter: asyncio.Future) -> None:
    """Release ``waiter`` now on its own loop's thread; from elsewhere, through the loop
    (``call_soon_threadsafe`` writes to the loop's self-pipe: ~80 us a call)."""
    try:
        here = asyncio.get_running_loop() is loop
    except RuntimeError:
        here = False
    if here:
        _release(waiter)
    else:
        loop.call_soon_threadsafe(_release, waiter)


def _release(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)


# -- the current session ----------------------------------------------------------------

_local = threading.local()
_process_session: TrialSession | None = None
# The session of an async trainable's task (and of the tasks it starts).
_task_session: contextvars.ContextVar[TrialSession | None] = contextvars.ContextVar(
    "tune_async_session", default=None)
_warned: set[str] = set()


def _set_session(session: TrialSession, *, thread_only: bool = False) -> None:
    """Make ``session`` current for this thread (and the process unless ``thread_only``)."""
    global _process_session
    _local.session = session
    if not thread_only:
        _process_session = session


def _clear_session(session: TrialSession) -> None:
    """Forget ``session`` as the process-wide session if it still is."""
    global _process_session
    if _process_session is session:
        _process_session = None
    if getattr(_local, "session", None) is session:
        _local.session = None


def get_session() -> TrialSession | None:
    """The session of the calling task, else the calling thread's, else the process's."""
    return _task_session.get() or getattr(_local, "session", None) or _process_session


def _warn_no_session(api: str) -> None:
    if api in _warned:
        return
    _warned.add(api)
    warnings.warn(
        f"Session not detected: `tune.{api}` does nothing outside a function trainable "
        "run by tune_async. Run this function with `tune.run` to enable it.",
        stacklevel=3,
    )


# -- public functions (tune.report etc.) ----------------------------------------------


def report(_metric: Any = None, **kwargs: Any) -> None:
    """Report a result to Tune from a function trainable.

    Both 1.x forms work: ``tune.report(loss=1.0)`` and ``tune.report({"loss": 1.0})``.

    Args:
        _metric: A dict of metrics (its items are reported), or a number reported
            under the key ``_metric``. Optional.
        **kwargs: Metrics to report. ``done=True`` ends the trial after this result.
    """
    session = get_session()
    if session is None:
        _warn_no_session("report")
        return
    session.report(_make_result(_metric, kwargs))


async def areport(_metric: Any = None, **kwargs: Any) -> None:
    """Report a result from an async function trainable: ``await tune.areport(loss=1.0)``.

    Takes the same arguments as :func:`report`. While the driver has not asked for
    another result, it suspends only the trainable's task (a plain ``tune.report``
    in an ``async def`` trainable blocks the trial's event loop instead). A stopped
    trial gets ``asyncio.CancelledError`` here. In a function run in a thread it
    behaves like ``tune.report``.
    """
    session = get_session()
    if session is None:
        _warn_no_session("areport")
        return
    await session.areport(_make_result(_metric, kwargs))


def _make_result(metric: Any, kwargs: dict) -> dict:
    if metric is None:
        return dict(kwargs)
    if isinstance(metric, dict):
        return {**metric, **kwargs}
    if isinstance(metric, Number):
        return {DEFAULT_METRIC: metric, **kwargs}
    raise TypeError(
        f"tune.report: the positional argument `_metric` must be a dict or a number, "
        f"got {type(metric).__name__}."
    )


@contextlib.contextmanager
def checkpoint_dir(step: Any) -> Iterator[str]:
    """Yield a directory to write a checkpoint into; it pairs with the next report.

    Use it *before* ``tune.report`` so the checkpoint belongs to that result::

        with tune.checkpoint_dir(step=epoch) as d:
            save(os.path.join(d, "model.pt"))
        tune.report(loss=loss)

    Args:
        step: Index of the checkpoint (usually the epoch); names the directory
            ``checkpoint_<step:06d>`` inside the trial directory. Required.

    Outside a session (the function called directly) it yields the working directory.
    """
    if step is None:
        raise ValueError("checkpoint_dir(step) requires a `step`, e.g. the epoch; got None.")
    session = get_session()
    if session is None:
        _warn_no_session("checkpoint_dir")
        yield os.path.abspath("./")  # 1.x: the files stay where a direct call can find them
        return
    path = session.make_checkpoint_dir(step)
    yield path
    session.set_checkpoint(path)


def get_trial_dir() -> str | None:
    """The trial's log directory (None outside Tune)."""
    session = get_session()
    if session is None:
        _warn_no_session("get_trial_dir")
        return None
    return session.logdir


def get_trial_name() -> str | None:
    """The trial's name (None outside Tune)."""
    session = get_session()
    if session is None:
        _warn_no_session("get_trial_name")
        return None
    return session.trial_name


def get_trial_id() -> str | None:
    """The trial's id (None outside Tune)."""
    session = get_session()
    if session is None:
        _warn_no_session("get_trial_id")
        return None
    return session.trial_id


def is_session_enabled() -> bool:
    """Whether the caller runs inside a function trainable run by Tune."""
    return get_session() is not None


def make_checkpoint_dir(step: Any = None) -> None:
    """Removed in 1.x: raises, naming the replacement (as 1.x does)."""
    raise DeprecationWarning(
        "tune.make_checkpoint_dir is deprecated; use `with tune.checkpoint_dir(step) as d:`."
    )


def save_checkpoint(checkpoint: Any) -> None:
    """Removed in 1.x: raises, naming the replacement (as 1.x does)."""
    raise DeprecationWarning(
        "tune.save_checkpoint is deprecated; use `with tune.checkpoint_dir(step) as d:`."
    )
