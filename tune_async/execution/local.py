"""An in-process executor: trainables run in the driver's process, without Ray.

Each trial's trainable lives in this process and its calls run in worker threads,
one call at a time per trainable (as a Ray actor runs its methods), so the event
loop stays free while a step trains. An async trainable's code (``async def``
functions and generators, ``async def step``...) runs as tasks on the driver's own
event loop instead, and its batches are awaited right there (no thread waits for
them), so many I/O-bound trials share the loop; its blocking calls (setup, save,
cleanup) still go through a worker thread, which only waits for the loop when they
are coroutines. For API-bound tuning, debugging and fast tests.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import os
import threading
import traceback
from typing import Any

import anyio
import attrs

from tune_async.error import TuneError
from tune_async.execution.actor import arun_batch, restore_into, run_batch
from tune_async.execution.base import BatchLimits, TrialFailure, launch_key
from tune_async.execution.ray_executor import FETCH_WINDOW_S, request_of
from tune_async.trainable.aio import LoopHost, hosted_by
from tune_async.trial import Trial

_EPS = 1e-9
LATE_STOP_WAIT_S = 10.0  # how long shutdown waits for steps still running after their stop


@attrs.define(eq=False)
class _Run:
    """A trainable in this process and the lock that serialises calls to it."""

    trainable: Any
    cls: type
    host: LoopHost | None = None  # the driver's loop, where its coroutines run
    reusable: bool = False  # started with ``reuse``: kept warm for the next trial
    lock: threading.Lock = attrs.field(factory=threading.Lock)
    # Its code runs on the driver's loop: a call's thread only waits for it there.
    on_loop: bool = attrs.field(default=attrs.Factory(lambda run: runs_on_loop(run.cls),
                                                      takes_self=True))

    def call(self, fn: Any, *args: Any) -> Any:
        with self.lock, hosted_by(self.host):
            return fn(*args)


class LocalExecutor:
    """Runs trials in the driver's process (see :class:`~tune_async.execution.Executor`).

    Capacity: the trials' ``resources_per_trial`` CPUs against ``os.cpu_count()``
    (or ``cpus``); with ``max_concurrent``, that many trials at once whatever CPUs
    they ask for (API-bound trials barely use this process's CPUs). There are no
    GPUs unless ``gpus`` says so. A trainable that changes the working
    directory or other process-global state affects every trial here.

    Async trainables run as tasks on the driver's own event loop (the application's,
    under ``arun``): they must not block it. Blocking work in an ``async def``
    trainable (a long computation, a synchronous client) stalls the experiment and
    the whole application; move it to a thread (``await asyncio.to_thread(...)``)
    and report with ``await tune.areport(...)`` (a plain ``tune.report`` there is
    refused: waiting for the driver would block the loop). Stopping a trial cancels
    its task, so its ``finally`` blocks run.
    """

    connects_ray = False

    def __init__(self, max_concurrent: int | None = None, cpus: float | None = None,
                 gpus: float = 0) -> None:
        if max_concurrent is not None and max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1, got {max_concurrent}")
        self.max_concurrent = max_concurrent
        self._total = {"CPU": float(cpus if cpus is not None else os.cpu_count() or 1),
                       "GPU": float(gpus)}
        self._used: dict[str, float] = {}
        self._reserved: dict[Any, dict[str, float]] = {}  # launch key -> its request
        self._runs: dict[Any, _Run] = {}  # launch key -> its trainable
        self._idle: list[_Run] = []  # kept for reuse (start_trial's ``reuse``)
        self._late_stops: list[threading.Thread] = []
        self._host: LoopHost | None = None  # the driver's loop, lent to async trainables
        # A call into an async trainable holds a thread that only waits for the loop:
        # the trials' own limits bound those, not the CPU count.
        self._waiting = anyio.CapacityLimiter(math.inf)
        # Steps hold a thread each: more trials than anyio's default 40 threads may run.
        most = max_concurrent or int(self._total["CPU"])
        self._limiter = anyio.CapacityLimiter(max(40, 2 * most))

    # ---- capacity -----------------------------------------------------------
    async def setup(self) -> None:
        self._host = None  # a run of its own (tune.run makes a new loop each time)
        self._loop_host()

    def check_feasible(self, trial: Trial) -> None:
        _refuse_log_to_file(trial)
        request = self._request(trial)
        short = {k: v for k, v in request.items() if v > self._total.get(k, 0.0) + _EPS}
        if short:
            asked = ", ".join(f"{v:g} {k}" for k, v in sorted(short.items()))
            have = ", ".join(f"{self._total.get(k, 0.0):g} {k}" for k in sorted(short))
            raise TuneError(f"Insufficient resources to launch trial {trial} in this process: "
                            f"it requested {asked}, but there are only {have}.")

    def has_resources_for_trial(self, trial: Trial) -> bool:
        if self.max_concurrent is not None and len(self._reserved) >= self.max_concurrent:
            return False
        return all(self._used.get(k, 0.0) + v <= self._total.get(k, 0.0) + _EPS
                   for k, v in self._request(trial).items())

    def reserve(self, trial: Trial) -> None:
        request = self._reserved[launch_key(trial)] = self._request(trial)
        for k, v in request.items():
            self._used[k] = self._used.get(k, 0.0) + v

    def resource_summary(self) -> str:
        cpu = f"{self._used.get('CPU', 0):g}/{self._total['CPU']:g} CPUs"
        gpu = f"{self._used.get('GPU', 0):g}/{self._total['GPU']:g} GPUs"
        return f"Resources requested: {cpu}, {gpu} (in process)"

    # ---- trial lifecycle ----------------------------------------------------
    async def start_trial(self, trial: Trial, trainable_cls: type, reuse: bool,
                          checkpoint: Any = None) -> None:
        from tune_async.trainable.trainable import TrialInfo

        try:
            _refuse_log_to_file(trial)  # also with queue_trials (no check_feasible)
        except TuneError as exc:
            raise TrialFailure(traceback=f"TuneError: {exc}", exception=exc) from None
        info = TrialInfo(trial_id=trial.trial_id, trial_name=trial.trial_name,
                         logdir=trial.logdir or "")
        run = self._take_idle(trainable_cls) if reuse else None
        try:
            if run is None or not await self._in_thread(run, _reset_in_dir, run.trainable,
                                                        dict(trial.config), info):
                if run is not None:
                    await self._in_thread(run, run.trainable.stop)
                run = await self._construct(trainable_cls, dict(trial.config), info)
            run.reusable = reuse
            # Filed before the restore: a restore that fails still leaves a run to stop.
            self._runs[launch_key(trial)] = run
            await self._in_thread(run, restore_into, run.trainable, checkpoint)
        except TrialFailure:
            raise
        except Exception as exc:  # noqa: BLE001 - the trainable's setup or restore raised
            raise _failure(exc) from None

    async def fetch_results(self, trial: Trial, limits: BatchLimits) -> list[dict]:
        run = self._runs[launch_key(trial)]
        try:
            if run.on_loop:
                return await self._fetch_on_loop(run, limits)
            # Cancelled (the trial is released mid-step), the step finishes unobserved.
            return await anyio.to_thread.run_sync(
                run.call, run_batch, run.trainable, limits, FETCH_WINDOW_S,
                abandon_on_cancel=True, limiter=self._limiter)
        except Exception as exc:  # noqa: BLE001 - the trainable raised
            raise _failure(exc) from None

    async def _fetch_on_loop(self, run: _Run, limits: BatchLimits) -> list[dict]:
        """An async trial's batch, awaited here (cancelled with the fetch: a step or the
        function's wait for credit gets CancelledError where it awaits)."""
        try:
            with hosted_by(run.host):
                return await arun_batch(run.trainable, limits, FETCH_WINDOW_S,
                                        lambda: self._in_thread(run, run.trainable.save))
        except asyncio.CancelledError as exc:
            if _being_cancelled():
                raise  # the fetch itself is cancelled (the trial is being released)
            raise _failure(exc) from None  # the trainable's own CancelledError: it failed

    async def save(self, trial: Trial) -> str:
        run = self._runs[launch_key(trial)]
        return await self._guarded(run, run.trainable.save)

    async def save_to_memory(self, trial: Trial) -> Any:
        run = self._runs[launch_key(trial)]
        return await self._guarded(run, run.trainable.save_to_object)

    async def export_model(self, trial: Trial, export_formats: list[str]) -> dict:
        """The trainable's ``export_model(export_formats)`` into the trial dir."""
        run = self._runs[launch_key(trial)]
        return await self._guarded(run, lambda: run.trainable.export_model(list(export_formats)))

    async def stop_trial(self, trial: Trial, in_flight: bool = False,
                         failed: bool = False) -> None:
        request = self._reserved.pop(launch_key(trial), {})  # also a launch never started
        for k, v in request.items():
            self._used[k] = self._used.get(k, 0.0) - v
        run = self._runs.pop(launch_key(trial), None)
        if run is None:
            return
        if in_flight:
            # An async step or function is cancelled now (its finally runs); a thread
            # cannot be killed: the stop follows the running step, off the loop.
            _quiet_cancel(run)
            late = threading.Thread(target=_quiet_stop, args=(run,), daemon=True)
            late.start()
            self._late_stops.append(late)
        elif run.reusable and not failed:
            # Kept warm, but this trial is over: its function ends now (an async one is
            # cancelled, its finally runs), not at the next trial's reset.
            await anyio.to_thread.run_sync(_quiet_end_function, run,
                                           limiter=self._limiter_for(run))
            self._idle.append(run)  # stopped when another class needs it or at shutdown
        else:
            await anyio.to_thread.run_sync(_quiet_stop, run, limiter=self._limiter_for(run))

    async def shutdown(self) -> None:
        idle, self._idle = self._idle, []
        for run in idle:
            await anyio.to_thread.run_sync(_quiet_stop, run, limiter=self._limiter_for(run))
        late, self._late_stops = self._late_stops, []
        with anyio.move_on_after(LATE_STOP_WAIT_S):
            for thread in late:
                await anyio.to_thread.run_sync(thread.join, abandon_on_cancel=True)
        host, self._host = self._host, None
        if host is not None:  # no task of a trainable outlives the executor
            await host.aclose()
        self._runs.clear()
        self._reserved.clear()
        self._used.clear()

    # ---- helpers ------------------------------------------------------------------
    def _request(self, trial: Trial) -> dict[str, float]:
        """What the trial takes here: CPUs count only when max_concurrent does not cap;
        memory is not accounted in process (custom resources stay: none exist here)."""
        request = request_of(trial)
        for key in ("memory", "object_store_memory") + (("CPU",) if self.max_concurrent else ()):
            request.pop(key, None)
        return request

    async def _construct(self, cls: type, config: dict, info: Any) -> _Run:
        """A new trainable (its ``setup`` in a thread); stopped if the launch was cancelled."""
        made: list[_Run] = []
        host = self._loop_host()

        def construct() -> None:
            _make_dir(info)
            with hosted_by(host):
                made.append(_Run(trainable=cls(config=config, trial_info=info), cls=cls,
                                 host=host))

        try:
            await anyio.to_thread.run_sync(
                construct, limiter=self._waiting if runs_on_loop(cls) else self._limiter)
        except BaseException:
            if made:  # nobody will receive it: let it clean up off the loop
                threading.Thread(target=_quiet_stop, args=(made[0],), daemon=True).start()
            raise
        return made[0]

    def _take_idle(self, cls: type) -> _Run | None:
        for i, run in enumerate(self._idle):
            if run.cls is cls:
                return self._idle.pop(i)
        return None

    async def _in_thread(self, run: _Run, fn: Any, *args: Any) -> Any:
        return await anyio.to_thread.run_sync(run.call, fn, *args,
                                              limiter=self._limiter_for(run))

    def _limiter_for(self, run: _Run) -> anyio.CapacityLimiter:
        return self._waiting if run.on_loop else self._limiter

    def _loop_host(self) -> LoopHost:
        """The driver's loop (the one this executor is used on), lent to async trainables."""
        if self._host is None:
            self._host = LoopHost()
        return self._host

    async def _guarded(self, run: _Run, fn: Any) -> Any:
        try:
            return await self._in_thread(run, fn)
        except Exception as exc:  # noqa: BLE001 - the trainable's save raised
            raise _failure(exc) from None


def _refuse_log_to_file(trial: Trial) -> None:
    """Trials here share the driver's process, so its stdout/stderr are everyone's."""
    if getattr(trial, "log_to_file", False):
        raise TuneError(
            "log_to_file needs each trial in a process of its own (the Ray executor): "
            "LocalExecutor runs trials inside the driver's process, where redirecting "
            "stdout/stderr would capture the driver and every other trial too. Drop "
            "log_to_file or use the default executor.")


_ASYNC_METHODS = ("setup", "step", "save_checkpoint", "load_checkpoint", "reset_config",
                  "cleanup")


def runs_on_loop(cls: type) -> bool:
    """Whether ``cls`` is an async trainable: an async function's, or one with ``async def``
    methods (their coroutines run on the driver's loop here)."""
    from tune_async.trainable.function_trainable import AsyncFunctionTrainable

    if issubclass(cls, AsyncFunctionTrainable):
        return True
    return any(inspect.iscoroutinefunction(getattr(cls, name, None)) for name in _ASYNC_METHODS)


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _quiet_cancel(run: _Run) -> None:
    """``trainable.cancel()`` (thread-safe, beside the running step): an async one stops now."""
    try:
        run.trainable.cancel()
    except Exception:  # noqa: BLE001 - the stop that follows still ends the trial
        traceback.print_exc()


def _quiet_end_function(run: _Run) -> None:
    """A function trainable's ``stop_function()``: its trial ended, the instance stays."""
    if hasattr(run.trainable, "stop_function"):
        try:
            run.call(run.trainable.stop_function)
        except Exception:  # noqa: BLE001 - the next reset or the final stop cleans up
            traceback.print_exc()


def _quiet_stop(run: _Run) -> None:
    """``trainable.stop()`` (its cleanup): a failing cleanup must not fail the experiment."""
    try:
        run.call(run.trainable.stop)
    except Exception:  # noqa: BLE001
        traceback.print_exc()


def _failure(exc: BaseException) -> TrialFailure:
    return TrialFailure(traceback="".join(traceback.format_exception(exc)), exception=exc)


def _make_dir(info: Any) -> None:
    """The trial's directory, made in the thread that sets the trainable up (the loop
    does no file I/O per trial)."""
    if info.logdir:
        os.makedirs(info.logdir, exist_ok=True)


def _reset_in_dir(trainable: Any, config: dict, info: Any) -> bool:
    _make_dir(info)
    return trainable.reset(config, info)
