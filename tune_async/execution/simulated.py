"""A simulated executor on a virtual clock: the real controller, schedulers and
searchers against a surrogate ``(config, iteration) -> (result, seconds)``.

Each running trial's next step finishes at a virtual time (when it began plus the
surrogate's seconds); a dispatcher pops the earliest finish across trials, moves
the clock there and hands that result to the controller. It pops only once the
event loop is idle, i.e. once the controller has reacted to the previous result
(stopped, paused or re-fetched trials, launched new ones) at that virtual time.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import threading
import traceback
from collections.abc import Callable
from typing import Any

import anyio
import attrs

from tune_async.clock import FakeClock
from tune_async.error import TuneError
from tune_async.execution.base import BatchLimits, TrialFailure, launch_key
from tune_async.result import (
    CHECKPOINT_PATH,
    RESULT_DUPLICATE,
    SHOULD_CHECKPOINT,
    TIME_THIS_ITER_S,
    TRAINING_ITERATION,
)
from tune_async.trainable.batching import ends_batch
from tune_async.trainable.trainable import Trainable
from tune_async.trial import Trial

Surrogate = Callable[[dict, int], "tuple[dict, float]"]
# Most loop turns the dispatcher waits for the loop to go idle (a busy loop that never
# idles, e.g. someone polling with sleep(0), must not stall the simulation).
MAX_SETTLE_YIELDS = 200
LATE_STOP_WAIT_S = 10.0  # how long shutdown waits for steps still running after their stop


class SurrogateTrainable(Trainable):
    """A Trainable whose step is ``surrogate(config, iteration)``; the seconds it
    returns become ``time_this_iter_s`` (so ``time_total_s`` is virtual too)."""

    surrogate: Surrogate

    def step(self) -> dict:
        result, seconds = type(self).surrogate(self.config, self.iteration + 1)
        return {**result, TIME_THIS_ITER_S: float(seconds)}

    def save_checkpoint(self, checkpoint_dir: str) -> dict:
        return {}  # the iteration and times travel in the checkpoint's metadata

    def load_checkpoint(self, checkpoint: dict) -> None:
        pass

    def reset_config(self, new_config: dict) -> bool:
        return True


def surrogate_trainable(surrogate: Surrogate) -> type[SurrogateTrainable]:
    name = getattr(surrogate, "__name__", "surrogate")
    return type(name, (SurrogateTrainable,), {"surrogate": staticmethod(surrogate)})


@attrs.define(eq=False)
class _Fetch:
    """One fetch_results call: the batch it collects and when it is handed back."""

    limits: BatchLimits
    began: float  # virtual time of the call
    results: list[dict] = attrs.field(factory=list)
    failure: TrialFailure | None = None
    ready: asyncio.Event = attrs.field(factory=asyncio.Event)


@attrs.define(eq=False)
class _Run:
    trainable: Any
    pending: _Fetch | None = None
    error: TrialFailure | None = None  # a step failed after results: the next fetch raises
    lock: threading.Lock = attrs.field(factory=threading.Lock)  # one call at a time


def _train(run: _Run) -> tuple[dict | None, TrialFailure | None]:
    try:
        with run.lock:
            return run.trainable.train(), None
    except Exception as exc:  # noqa: BLE001 - the trainable raised
        return None, _failure(exc)


def _stop(run: _Run) -> None:
    try:
        with run.lock:
            run.trainable.stop()
    except Exception:  # noqa: BLE001 - a failing cleanup must not fail the experiment
        traceback.print_exc()


class SimulatedExecutor:
    """Runs trials as surrogate curves on a virtual clock (see module doc).

    ``surrogate(config, iteration) -> (result dict, seconds)`` gives each step's
    metrics and its virtual duration; ``slots`` trials run at once. A fetch returns
    the results of at most ``window_s`` virtual seconds, and none past a step of
    another trial that finishes first (as a real executor's fetch window). Run it with
    ``tune.run(executor.trainable, ..., trial_executor=executor)``: the controller
    picks up ``executor.clock`` (a :class:`~tune_async.clock.FakeClock`), so
    ``time_budget_s`` and the periodic work follow virtual time. With
    ``surrogate=None`` it runs the controller's own trainables (steps in worker
    threads), each step taking the virtual time it reports (``time_this_iter_s``)
    or the real time it took.

    Fidelity: a trial the controller launches after work off the loop (a searcher
    suggesting in a thread) starts when the loop next idles, possibly after the
    clock has moved on.
    """

    connects_ray = False

    def __init__(self, surrogate: Surrogate | None = None, clock: FakeClock | None = None,
                 slots: int = 1, window_s: float = 0.05) -> None:
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self.clock = clock if clock is not None else FakeClock()
        self.slots = slots
        self.window_s = window_s
        self.trainable = surrogate_trainable(surrogate) if surrogate is not None else None
        self.steps = 0  # simulated steps so far
        self._reserved: set = set()
        self._runs: dict[Any, _Run] = {}
        # (finish time, order, run, fetch, result or None, failure or None)
        self._events: list[tuple] = []
        self._order = itertools.count()
        self._wake = asyncio.Event()
        self._dispatcher: asyncio.Task | None = None
        self._computing: set[_Run] = set()  # steps running in threads (surrogate=None)
        self._tasks: set[asyncio.Task] = set()
        self._late_stops: list[threading.Thread] = []

    # ---- capacity -----------------------------------------------------------
    async def setup(self) -> None:
        pass

    def check_feasible(self, trial: Trial) -> None:
        cpus = trial.resources.cpu_total()
        if cpus > self.slots:
            raise TuneError(f"Insufficient resources to launch trial {trial}: it requested "
                            f"{cpus:g} CPUs, but the simulation has {self.slots} slots")

    def has_resources_for_trial(self, trial: Trial) -> bool:
        return len(self._reserved) < self.slots

    def reserve(self, trial: Trial) -> None:
        self._reserved.add(launch_key(trial))

    def resource_summary(self) -> str:
        return f"Resources requested: {len(self._reserved)}/{self.slots} simulated slots"

    # ---- trial lifecycle ----------------------------------------------------
    async def start_trial(self, trial: Trial, trainable_cls: type, reuse: bool,
                          checkpoint: Any = None) -> None:
        from tune_async.execution.actor import restore_into
        from tune_async.trainable.trainable import TrialInfo

        info = TrialInfo(trial_id=trial.trial_id, trial_name=trial.trial_name,
                         logdir=trial.logdir or "")
        cls = self.trainable or trainable_cls
        try:
            trainable = cls(config=dict(trial.config), trial_info=info)
            self._runs[launch_key(trial)] = _Run(trainable)
            restore_into(trainable, checkpoint)
        except Exception as exc:  # noqa: BLE001 - the trainable's setup or restore raised
            raise _failure(exc) from None

    async def fetch_results(self, trial: Trial, limits: BatchLimits) -> list[dict]:
        run = self._runs[launch_key(trial)]
        if run.error is not None:
            error, run.error = run.error, None
            raise error
        fetch = run.pending = _Fetch(limits, self.clock.now())
        self._begin_step(run, fetch)
        self._ensure_dispatcher()
        try:
            await fetch.ready.wait()
        finally:
            if run.pending is fetch:
                run.pending = None  # cancelled: the step in flight is dropped
        if fetch.failure is not None:
            raise fetch.failure
        return fetch.results

    async def save(self, trial: Trial) -> str:
        return self._guarded(self._runs[launch_key(trial)].trainable.save)

    async def save_to_memory(self, trial: Trial) -> Any:
        return self._guarded(self._runs[launch_key(trial)].trainable.save_to_object)

    async def stop_trial(self, trial: Trial, in_flight: bool = False,
                         failed: bool = False) -> None:
        self._reserved.discard(launch_key(trial))
        run = self._runs.pop(launch_key(trial), None)
        if run is None:
            return
        run.pending = None  # its queued step, if any, never finishes
        if run in self._computing:  # a thread cannot be killed: stop after its step
            late = threading.Thread(target=_stop, args=(run,), daemon=True)
            late.start()
            self._late_stops.append(late)
        else:
            _stop(run)

    async def shutdown(self) -> None:
        tasks = [t for t in (self._dispatcher, *self._tasks) if t is not None]
        self._dispatcher = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for run in self._runs.values():
            _stop(run)
        late, self._late_stops = self._late_stops, []
        with anyio.move_on_after(LATE_STOP_WAIT_S):
            for thread in late:
                await anyio.to_thread.run_sync(thread.join, abandon_on_cancel=True)
        self._runs.clear()
        self._reserved.clear()
        self._events.clear()

    # ---- the simulation -----------------------------------------------------------
    def _begin_step(self, run: _Run, fetch: _Fetch) -> None:
        """Run the step now (virtual time), due when its seconds have passed."""
        self.steps += 1
        began = self.clock.now()
        if self.trainable is not None:  # a surrogate: quick, computed right here
            self._due(run, fetch, began, *_train(run))
            return
        # A real trainable's step may block: it runs in a thread, and the dispatcher
        # waits for it before the clock moves past ``began``.
        self._computing.add(run)
        task = asyncio.get_running_loop().create_task(self._train_off_loop(run, fetch, began))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _train_off_loop(self, run: _Run, fetch: _Fetch, began: float) -> None:
        try:
            outcome = await anyio.to_thread.run_sync(_train, run, abandon_on_cancel=True)
        finally:
            self._computing.discard(run)
            self._wake.set()
        self._due(run, fetch, began, *outcome)

    def _due(self, run: _Run, fetch: _Fetch, began: float, result: dict | None,
             failure: TrialFailure | None) -> None:
        seconds = max(0.0, float(result.get(TIME_THIS_ITER_S) or 0.0)) if result else 0.0
        heapq.heappush(self._events, (began + seconds, next(self._order),
                                      run, fetch, result, failure))
        self._wake.set()

    def _step_running(self) -> bool:
        """A step still computing in a thread for a fetch that waits (it may finish first)."""
        return any(run.pending is not None for run in self._computing)

    def _ensure_dispatcher(self) -> None:
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch())

    async def _dispatch(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._events:
                    await _loop_idle()
                    if self.clock.held:  # the controller waits off the loop, in the present
                        await self.clock.wait_released()
                        continue
                    if self._step_running():
                        break  # its thread's end wakes us
                    event = self._pop_live()
                    if event is None:
                        break
                    self._finish_step(*event)
        except Exception as exc:  # a bug here must fail the waiting fetches, not hang them
            for run in list(self._runs.values()):
                if run.pending is not None:
                    self._fail(run, run.pending, _failure(exc))
            raise

    def _pop_live(self) -> tuple | None:
        """The earliest step whose fetch still waits, the clock moved to its finish."""
        self._drop_stale()
        if not self._events:
            return None
        due, _, run, fetch, result, failure = heapq.heappop(self._events)
        if due > self.clock.now():
            self.clock.advance(due - self.clock.now())
        return run, fetch, result, failure

    def _drop_stale(self) -> None:
        events = self._events
        while events and events[0][2].pending is not events[0][3]:
            heapq.heappop(events)

    def _finish_step(self, run: _Run, fetch: _Fetch, result: dict | None,
                     failure: TrialFailure | None) -> None:
        if run.pending is not fetch:
            return  # stopped or cancelled while the clock moved
        if failure is not None:
            self._fail(run, fetch, failure)
            return
        fetch.results.append(result)
        try:
            ends = self._ends_batch(run, fetch, result)
        except Exception as exc:  # noqa: BLE001 - the checkpoint's save raised
            self._fail(run, fetch, _failure(exc))
            return
        self._drop_stale()
        # Another trial's step may finish before this one's next, or the window is over
        # (a time budget must see results as they come): hand this batch back.
        if ends or self._events or self.clock.now() - fetch.began >= self.window_s:
            self._release(run, fetch)
        else:
            self._begin_step(run, fetch)

    def _ends_batch(self, run: _Run, fetch: _Fetch, result: dict) -> bool:
        """A result due a checkpoint gets it here (it ends the batch), as run_batch does."""
        limits = fetch.limits
        freq = limits.checkpoint_freq
        wants = result.get(SHOULD_CHECKPOINT) or (
            freq > 0 and result.get(TRAINING_ITERATION, 0) % freq == 0)
        if wants and not result.get(RESULT_DUPLICATE) and CHECKPOINT_PATH not in result:
            result[CHECKPOINT_PATH] = run.trainable.save()
            return True
        return (len(fetch.results) >= limits.max_results
                or ends_batch(result, limits.stop))

    def _fail(self, run: _Run, fetch: _Fetch, failure: TrialFailure) -> None:
        if fetch.results:
            run.error = failure  # the results so far go back; the next fetch raises
        else:
            fetch.failure = failure
        self._release(run, fetch)

    @staticmethod
    def _release(run: _Run, fetch: _Fetch) -> None:
        run.pending = None
        fetch.ready.set()

    @staticmethod
    def _guarded(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - the trainable's save raised
            raise _failure(exc) from None


async def _loop_idle() -> None:
    """Yield until no other callback is ready to run: everyone else waits on something."""
    loop = asyncio.get_running_loop()
    ready = getattr(loop, "_ready", None)  # asyncio's run queue (private, but stable)
    for _ in range(MAX_SETTLE_YIELDS if ready is not None else 3):
        await asyncio.sleep(0)
        if ready is not None and not ready:
            return


def _failure(exc: BaseException) -> TrialFailure:
    return TrialFailure(traceback="".join(traceback.format_exception(exc)), exception=exc)
