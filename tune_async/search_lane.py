"""The searcher lane: the search algorithm's hooks, one at a time, in order, off the loop.

A model-based searcher's ``suggest`` (a TPE or GP step) or its model update in
``on_trial_complete`` takes tens to hundreds of milliseconds once many trials have
reported. Called by the consumer, it would hold up every running trial's results.
So the controller never calls the search algorithm itself: it *enqueues* calls here.
One task the controller owns runs them in order in one dedicated thread (searchers
are not thread-safe, and some keep thread-local state), awaits the ones that return
awaitables (async searchers) on the loop, and posts suggestions back as events; the
consumer admits a trial when its config is ready and serves results meanwhile.

BasicVariantGenerator (and any search algorithm with ``suggests_on_loop = True``)
is cheap per call: its calls run on the loop, in the same order, without a thread.
"""

from __future__ import annotations

import inspect
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
import attrs

from tune_async.utils.util import after_due_timers_if_spent

logger = logging.getLogger(__name__)


@attrs.frozen
class Suggested:
    """What one suggestion request produced (posted to the controller's event stream)."""

    suggestions: list
    finished: bool  # the search algorithm has nothing more to suggest, ever


def _inherited_no_ops(search_alg: Any) -> frozenset[str]:
    """The notification hooks ``search_alg`` inherits from SearchAlgorithm's no-ops."""
    from tune_async._hooks import overrides
    from tune_async.suggest.search import SearchAlgorithm

    if not isinstance(search_alg, SearchAlgorithm):
        return frozenset()
    return frozenset(n for n in ("on_trial_result", "on_trial_complete")  # empty bodies
                     if not overrides(search_alg, SearchAlgorithm, n))


@attrs.frozen
class LaneIdle:
    """Everything queued has run (the end of an experiment waits for the searcher)."""


@attrs.define
class _Call:
    name: str
    fn: Callable[..., Any]
    args: tuple
    done: Callable[[Any], None] | None = None  # receives the hook's value

    def invoke(self) -> Any:
        return self.fn(*self.args)


# A count, not a time: a simulation's decisions must not depend on the machine's speed.
ON_LOOP_SUGGESTIONS = 50


class SearcherLane:
    """Runs ``search_alg``'s hooks in order; replies through ``post`` or callbacks."""

    def __init__(self, search_alg: Any, post: Callable[[Any], None]) -> None:
        self.search_alg = search_alg
        self._post = post
        self._calls: deque[_Call] = deque()
        self._wake = anyio.Event()
        self._on_loop = bool(getattr(search_alg, "suggests_on_loop", False))
        self._no_ops = _inherited_no_ops(search_alg)
        self._pool: ThreadPoolExecutor | None = None
        self.requesting = False  # a suggestion request is queued or running
        # After an empty answer (e.g. a ConcurrencyLimiter at its limit) the searcher is
        # asked again only once something it hears about happened, or on the next tick.
        self._answer_may_change = True
        self._news = 0  # notifications so far: one after a request began may change its answer
        self._news_at_request = 0
        self.state: Any = None  # the newest captured get_state() (for snapshots)
        self.capturing = False
        self.report_idle = False  # post LaneIdle once everything queued has run
        # Suggestions made but not yet taken by the controller (posted, not processed): the
        # searcher counts them as made, so a run cut short must still keep them as trials.
        self.undelivered: list = []
        # (call, value) pairs the lane's thread finished, taken by the loop (a deque: the
        # thread appends, the loop pops). A cancelled lane leaves them for the cleanup.
        self._completed: deque = deque()

    # ---- enqueueing (from the consumer; never blocks) -----------------------------------
    def notify(self, name: str, *args: Any) -> None:
        """Queue a notification (on_trial_result, on_trial_complete, on_pause, set_finished)."""
        hook = getattr(self.search_alg, name, None)
        if hook is None or name in self._no_ops:
            return  # e.g. BasicVariantGenerator's on_trial_result: no lane work per result
        self._answer_may_change = True
        self._news += 1
        self._enqueue(_Call(name, hook, args))

    def request_suggestions(self, limit: int) -> None:
        """Ask for up to ``limit`` suggestions, unless a request is out or nothing changed.

        On the loop, one call makes at most ``ON_LOOP_SUGGESTIONS`` (the controller asks
        again once it has admitted them): a run's first request is for up to 1,000, and
        a variant takes ~40 us to make, which held the loop 30-50 ms at start-up."""
        if self.requesting or not self._answer_may_change or limit <= 0:
            return
        if self._on_loop:
            limit = min(limit, ON_LOOP_SUGGESTIONS)
        self.requesting = True
        self._news_at_request = self._news
        self._enqueue(_Call("_suggest", self._suggest, (limit,)))

    def tick(self) -> None:
        """Time passed: a searcher that said "nothing now" may say otherwise."""
        self._answer_may_change = True

    def capture_state(self) -> None:
        """Queue a get_state() call; its value becomes :attr:`state` (used by snapshots)."""
        if self.capturing or not callable(getattr(self.search_alg, "get_state", None)):
            return
        self.capturing = True
        self._enqueue(_Call("get_state", self._get_state, (), self._captured))

    @property
    def idle(self) -> bool:
        """Nothing queued or running: no suggestion and no reply will arrive."""
        return not self._calls and not self._busy

    @property
    def quiet(self) -> bool:
        """Idle, and the last answer was "nothing now" with nothing new to make it change."""
        return self.idle and not self._answer_may_change

    # ---- running (the controller's task group owns this task) ---------------------------
    _busy = False

    async def run(self) -> None:
        while True:
            if not self._calls:
                await self._wake.wait()
                self._wake = anyio.Event()
                continue
            self._busy = True
            try:
                if self._on_loop:  # woken by a step that may have spent the loop's turn
                    await after_due_timers_if_spent()
                await self._run_queued()
            finally:
                self._busy = False
            if self.report_idle and not self._calls:
                self.report_idle = False
                self._post(LaneIdle())

    def close(self) -> None:
        """Let the lane's thread end once its current call returns (never cut off)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

    async def wait_idle_thread(self) -> None:
        """Wait for a call still running in the lane's thread (cleanup, off the loop)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await anyio.to_thread.run_sync(pool.shutdown, True)

    @property
    def works_in_thread(self) -> bool:
        """The search algorithm's calls run in the lane's thread (not on the loop)."""
        return not self._on_loop

    # ---- internals ----------------------------------------------------------------------
    def _enqueue(self, call: _Call) -> None:
        self._calls.append(call)
        self._wake.set()

    async def _run_queued(self) -> None:
        """Run what is queued: in one thread hop, up to the first call that returns an
        awaitable, which is then awaited on the loop before the rest run (order kept).
        Replies are delivered on the loop."""
        batch = list(self._calls)
        self._calls.clear()
        while batch:
            if self._on_loop:
                ran, awaiting = self._run_until_awaitable(batch)
            else:
                ran, awaiting = await self._in_lane_thread(self._run_until_awaitable, batch)
            self._finish_completed()
            del batch[:ran]
            if awaiting is not None:
                self._finish(batch.pop(0), await awaiting)

    def _run_until_awaitable(self, batch: list[_Call]) -> tuple[int, Any]:
        for index, call in enumerate(batch):
            value = call.invoke()
            if inspect.isawaitable(value):
                return index, value
            self._completed.append((call, value))
        return len(batch), None

    def _finish_completed(self) -> None:
        while self._completed:
            self._finish(*self._completed.popleft())

    def take_completed(self) -> None:
        """After a cancel (the lane's thread is idle): keep what it finished unseen;
        suggestions join :attr:`undelivered` instead of being posted."""
        post, self._post = self._post, lambda event: None
        try:
            self._finish_completed()
        finally:
            self._post = post

    def _finish(self, call: _Call, value: Any) -> None:
        if call.name == "_suggest":
            self.requesting = False
            suggestions, finished = value
            if not suggestions and not finished and self._news == self._news_at_request:
                self._answer_may_change = False  # nothing it heard of since could change it
            self.undelivered.extend(suggestions)
            self._post(Suggested(suggestions, finished))
        elif call.done is not None:
            call.done(value)

    def _suggest(self, limit: int) -> Any:
        """Up to ``limit`` suggestions; an async search algorithm's come one at a time."""
        suggestions: list = []
        while len(suggestions) < limit:
            suggestion = self.search_alg.next_trial()
            if inspect.isawaitable(suggestion):
                return self._finish_async(suggestions, suggestion, limit)
            if suggestion is None:
                return suggestions, bool(self._is_finished_now())
            suggestions.append(suggestion)
        return suggestions, False

    async def _finish_async(self, suggestions: list, pending: Any, limit: int) -> Any:
        suggestion = await pending
        if suggestion is not None:
            suggestions.append(suggestion)
            return suggestions, False
        finished = self.search_alg.is_finished()
        if inspect.isawaitable(finished):
            finished = await finished
        return suggestions, bool(finished)

    def _is_finished_now(self) -> Any:
        finished = self.search_alg.is_finished()
        if inspect.isawaitable(finished):  # pragma: no cover - an async is_finished only
            finished.close()
            return False
        return finished

    def _get_state(self) -> Any:
        try:
            return self.search_alg.get_state()
        except NotImplementedError:
            return None

    def _captured(self, state: Any) -> None:
        self.state = state
        self.capturing = False

    async def _in_lane_thread(self, fn: Callable, *args: Any) -> Any:
        import asyncio

        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="tune-searcher")
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
