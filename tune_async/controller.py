"""The controller: one event loop that runs an experiment.

Effects (launch a trial, fetch its results, release it, periodic ticks) run as
tasks in one task group and only *post events* to one memory stream. A single
consumer takes events one at a time, consults the transition table, awaits
plugin hooks and schedules the next effects; so plugin hooks never interleave.
Cleanup runs in ``finally`` under a shielded cancel scope, which is what makes
cancelling ``arun`` safe.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import attrs

from tune_async import transitions
from tune_async._hooks import call_hook
from tune_async.clock import Clock, RealClock
from tune_async.error import TuneError
from tune_async.execution.base import BatchLimits, Executor, TrialFailure
from tune_async.result import (
    AUTO_RESULT_KEYS,
    CHECKPOINT_PATH,
    DONE,
    RESULT_DUPLICATE,
)
from tune_async.state import (
    Journal,
    StateSerializer,
    journal_path,
    state_path,
    write_snapshot,
)
from tune_async.transitions import Effect, Event
from tune_async.trial import Trial, TrialStatus, TrialView, unwrap
from tune_async.utils.util import flatten_dict

if sys.version_info < (3, 11):  # pragma: no cover - the backport anyio depends on
    from exceptiongroup import BaseExceptionGroup

logger = logging.getLogger(__name__)

MAX_BATCH = 1000  # results one fetch may carry
TICK_S = 0.5  # period of the progress / state / budget tick
STATE_MIN_PERIOD_S = 2.0  # experiment state written at most this often while running
_AUTO_KEYS = frozenset(AUTO_RESULT_KEYS) | {"timesteps_since_restore", "neg_mean_loss",
                                            "episodes_total", "timesteps_total"}


# ---- events posted by effect tasks ------------------------------------------------
@attrs.frozen
class ResultsArrived:
    trial: Trial
    results: list


@attrs.frozen
class TrialFailed:
    trial: Trial
    failure: TrialFailure


@attrs.frozen
class Released:
    trial: Trial


@attrs.frozen
class Tick:
    pass


@attrs.frozen
class StopAll:
    reason: str


class _ResultRejected(Exception):
    """A result failed validation (missing metric/stop key) or the stopper raised."""

    def __init__(self, exc: BaseException) -> None:
        import traceback

        super().__init__(str(exc))
        self.failure = TrialFailure(traceback="".join(traceback.format_exception(exc)),
                                    exception=exc)


class RunnerView:
    """What schedulers see of the runner (1.x ``trial_runner``): read-only."""

    def __init__(self, controller: Controller) -> None:
        self._c = controller

    def get_trials(self) -> list[TrialView]:
        return self._c.trial_views

    def get_trial(self, trial_id: str) -> TrialView | None:
        return self._c._views.get(trial_id)

    def waiting_trials(self) -> Iterator[TrialView]:
        """PENDING trials in queue order, then PAUSED ones (lazy: callers may stop early)."""
        views = self._c._views
        for index in (self._c.pending, self._c.paused):
            for trial_id in list(index):
                yield views[trial_id]

    def has_resources_for_trial(self, trial: Trial | TrialView) -> bool:
        return self._c.executor.has_resources_for_trial(unwrap(trial))

    @property
    def search_alg(self) -> Any:
        return self._c.search_alg


@attrs.define
class ControllerSettings:
    """Everything ``run`` decided, handed to the controller in one record."""

    experiments: list
    search_alg: Any
    scheduler: Any
    executor: Executor
    callbacks: Any  # CallbackList
    experiment_dir: str
    session_str: str
    reporter: Any = None
    stopper: Any = None
    time_budget_s: float | None = None
    fail_fast: bool | str = False
    metric: str | None = None
    mode: str | None = None
    reuse_actors: bool = False
    queue_trials: bool = False
    max_pending_trials: int = 1000
    strict_metrics: tuple[str, ...] = ()
    resume_state: dict | None = None  # a loaded experiment state to continue from
    resume_errored_only: bool = False
    clock: Clock = attrs.field(factory=RealClock)


class Controller:
    def __init__(self, settings: ControllerSettings) -> None:
        self.s = settings
        self.executor = settings.executor
        self.search_alg = settings.search_alg
        self.scheduler = settings.scheduler
        self.callbacks = settings.callbacks
        self.clock = settings.clock
        self.trials: list[Trial] = []
        self.trial_by_id: dict[str, Trial] = {}
        self.trial_views: list[TrialView] = []  # what plugins see, in the same order
        self._views: dict[str, TrialView] = {}
        self.pending: dict[str, Trial] = {}
        self.paused: dict[str, Trial] = {}
        self.running: dict[str, Trial] = {}
        self.view = RunnerView(self)
        self.iteration = 0
        self.interrupted = False
        self.raise_error: BaseException | None = None
        self._trainables: dict[str, type] = {}
        self._in_flight: dict[str, anyio.CancelScope] = {}
        self._releasing: set[str] = set()
        self._memory_checkpoints: dict[str, Any] = {}
        self._search_done = False
        self._stopping = False
        self._send: Any = None
        self._tg: Any = None
        self._state_dirty = True
        self._state_written_at = -math.inf
        self._state_write_cost = 0.0
        self._start_time = 0.0
        self._deadline: float | None = None
        self._stopper_all = getattr(settings.stopper, "stop_all", None)
        self._state_file = state_path(settings.experiment_dir, settings.session_str)
        self._serializer = StateSerializer()
        self._journal = Journal(journal_path(self._state_file))
        self._seq = 0  # orders snapshots and journal lines
        self._in_snapshot: set[str] = set()  # trials the latest snapshot holds
        self._to_persist: dict[str, Trial] = {}
        self._waiting_requests: dict[tuple, tuple[int, Trial]] = {}

    # ---- public ----------------------------------------------------------------
    def request_stop(self) -> None:
        """Stop gracefully (Ctrl+C): running trials are interrupted (resumable), state saved."""
        self.interrupted = True
        if self._send is not None:
            self._send.send_nowait(StopAll("interrupted"))

    async def run(self) -> list[Trial]:
        import time

        self._start_time = time.time()
        if self.s.time_budget_s is not None:
            self._deadline = self.clock.now() + self.s.time_budget_s
        await self.executor.setup()
        await call_hook(self.callbacks.setup)
        if self.s.resume_state is not None:
            self._restore(self.s.resume_state)
        self.write_state()  # this session's journal needs a snapshot to build on
        send, receive = anyio.create_memory_object_stream[Any](math.inf)
        self._send = send
        if self.interrupted:  # Ctrl+C arrived while Ray was starting
            send.send_nowait(StopAll("interrupted"))
        try:
            try:
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    tg.start_soon(self._ticker)
                    await self._fill()
                    while not self._is_finished():
                        event = await receive.receive()
                        await self._step(event)
                    tg.cancel_scope.cancel()
            except BaseExceptionGroup as group:
                raise _first_error(group) from None
        finally:
            with anyio.CancelScope(shield=True):
                await self._cleanup()
        if self.raise_error is not None:
            raise self.raise_error
        return self.trials

    # ---- the consumer --------------------------------------------------------------
    async def _step(self, event: Any) -> None:
        self.iteration += 1
        await self.callbacks.on_step_begin(iteration=self.iteration, trials=self.trial_views)
        if isinstance(event, ResultsArrived):
            await self._on_results(event.trial, event.results)
        elif isinstance(event, TrialFailed):
            await self._on_failure(event.trial, event.failure)
        elif isinstance(event, Released):
            self._releasing.discard(event.trial.trial_id)
        elif isinstance(event, Tick):
            await self._on_tick()
        elif isinstance(event, StopAll):
            await self._stop_all(event.reason)
        if (not self._stopping and self._stopper_all is not None
                and await call_hook(self._stopper_all)):
            await self._stop_all("stopper")
        await self._fill()
        await self.callbacks.on_step_end(iteration=self.iteration, trials=self.trial_views)
        if self._to_persist:
            self._persist()

    def _is_finished(self) -> bool:
        if self.running or self._releasing:
            return False
        if self._stopping:
            return True
        if not self._search_done:
            return False
        return not self.pending and not self.paused

    # ---- admitting and starting trials ------------------------------------------------
    async def _fill(self) -> None:
        if self._stopping:
            return
        await self._admit_new_trials()
        while self._some_waiting_trial_fits():
            chosen = await call_hook(self.scheduler.choose_trial_to_run, self.view)
            if chosen is None:
                break
            await self._start(unwrap(chosen))
        self._check_stalled()

    async def _admit_new_trials(self) -> None:
        while not self._search_done and len(self.pending) < self.s.max_pending_trials:
            suggestion = await call_hook(self.search_alg.next_trial)
            if suggestion is None:
                if await call_hook(self.search_alg.is_finished):
                    self._search_done = True
                break
            await self._add_trial(self._trial_from(suggestion))

    def _trial_from(self, suggestion: Any) -> Trial:
        exp = suggestion.experiment
        trial = Trial(
            trainable_name=exp.run_identifier,
            config=suggestion.config,
            experiment_tag=suggestion.experiment_tag,
            evaluated_params=dict(suggestion.evaluated_params),
            local_dir=exp.checkpoint_dir,
            resources=exp.resources,
            stopping_criterion=dict(exp.stop_criteria),
            max_failures=exp.max_failures,
            experiment_name=exp.name,
        )
        if suggestion.trial_id:
            trial.trial_id = suggestion.trial_id
        if exp.spec.get("restore"):
            trial.restore_path = exp.spec["restore"]
        trial.checkpoint_freq = exp.spec["checkpoint_freq"]
        trial.checkpoint_at_end = exp.spec["checkpoint_at_end"]
        trial.keep_checkpoints_num = exp.spec["keep_checkpoints_num"]
        trial.checkpoint_score_attr = exp.spec["checkpoint_score_attr"]
        if exp.trial_name_creator is not None:
            trial.custom_trial_name = _checked_name(exp.trial_name_creator(TrialView(trial)),
                                                    "trial_name_creator")
        creator = exp.trial_dirname_creator
        if creator is not None:
            trial.custom_dirname = _checked_dirname(creator(TrialView(trial)))
        self._trainables[trial.trial_id] = exp.trainable_cls
        return trial

    async def _add_trial(self, trial: Trial) -> None:
        if not self.s.queue_trials:
            self.executor.check_feasible(trial)
        self._register(trial)
        self.pending[trial.trial_id] = trial
        self._count_waiting(trial, +1)
        self._state_dirty = True
        await call_hook(self.scheduler.on_trial_add, self.view, self._v(trial))

    def _register(self, trial: Trial) -> None:
        self.trials.append(trial)
        self.trial_by_id[trial.trial_id] = trial
        view = TrialView(trial)
        self._views[trial.trial_id] = view
        self.trial_views.append(view)

    def _v(self, trial: Trial) -> TrialView:
        return self._views[trial.trial_id]

    async def _start(self, trial: Trial) -> None:
        if trial.status is TrialStatus.PAUSED:
            self._transition(trial, Event.UNPAUSE)
        if not self.executor.has_resources_for_trial(trial):
            raise TuneError(
                f"The scheduler chose trial {trial} to run, but there are no resources for it"
            )
        if trial.logdir is None:
            trial.init_logdir(trial.custom_dirname or trial.default_dirname())
        self.executor.reserve(trial)
        if trial.start_time is None:
            trial.start_time = self.clock.now()
        self._transition(trial, Event.START)
        await self.callbacks.on_trial_start(iteration=self.iteration, trials=self.trial_views,
                                            trial=self._v(trial))
        if trial.checkpoint is not None or trial.restore_path:
            await self.callbacks.on_trial_restore(iteration=self.iteration, trials=self.trial_views,
                                                  trial=self._v(trial))

    def _check_stalled(self) -> None:
        """Nothing runs, nothing can start and nothing will arrive: fail clearly, don't hang."""
        if self.running or self._releasing or self._stopping:
            return
        waiting = list(self.pending.values()) + list(self.paused.values())
        if waiting and not self.s.queue_trials:
            trial = waiting[0]
            raise TuneError(
                f"Insufficient cluster resources to launch trial {trial}: nothing is running "
                f"and it does not fit ({self.executor.resource_summary()})."
            )
        if not waiting and not self._search_done:
            raise TuneError(
                "The search algorithm suggested no trial while none is running: it would "
                "wait forever. Check the searcher's suggest() (it returns None without "
                "ever finishing)."
            )

    # ---- transitions and effects ----------------------------------------------------
    def _transition(self, trial: Trial, event: Event, **options: Any) -> None:
        before = trial.status
        effects = transitions.apply(trial, event)
        self._index(trial, before)
        if before is not trial.status:
            self._state_dirty = True
        for effect in effects:
            self._run_effect(effect, trial, **options)

    def _index(self, trial: Trial, before: TrialStatus) -> None:
        """Keep the status indexes (pending/paused/running) in step with trial.status."""
        tid = trial.trial_id
        for status, index in ((TrialStatus.PENDING, self.pending),
                              (TrialStatus.PAUSED, self.paused),
                              (TrialStatus.RUNNING, self.running)):
            if before is status and trial.status is not status:
                index.pop(tid, None)
            elif trial.status is status and before is not status:
                index[tid] = trial
        waiting = (TrialStatus.PENDING, TrialStatus.PAUSED)
        change = (trial.status in waiting) - (before in waiting)
        if change:
            self._count_waiting(trial, change)

    def _count_waiting(self, trial: Trial, change: int) -> None:
        """How many waiting trials ask for each distinct resource request."""
        key = trial.resources.key()
        count = self._waiting_requests.get(key, (0, trial))[0] + change
        if count:
            self._waiting_requests[key] = (count, trial)
        else:
            self._waiting_requests.pop(key, None)

    def _some_waiting_trial_fits(self) -> bool:
        """Cheap pre-check so a full cluster costs O(distinct requests), not O(trials)."""
        fits = self.executor.has_resources_for_trial
        return any(fits(example) for _, example in self._waiting_requests.values())

    def _run_effect(self, effect: Effect, trial: Trial, **options: Any) -> None:
        if effect is Effect.LAUNCH:
            self._spawn_trial_task(trial, self._launch)
        elif effect is Effect.FETCH:
            self._spawn_trial_task(trial, self._fetch)
        elif effect is Effect.RELEASE:
            scope = self._in_flight.pop(trial.trial_id, None)
            if scope is not None:
                scope.cancel()
            self._releasing.add(trial.trial_id)
            self._tg.start_soon(self._release, trial, scope is not None,
                                options.get("failed", False))
        elif effect is Effect.RECORD_ERROR:
            _write_error_file(trial, options["failure"])
        elif effect is Effect.SAVE_IN_MEMORY:
            pass  # the RELEASE task saves before stopping (see _release)

    def _spawn_trial_task(self, trial: Trial, fn: Callable) -> None:
        scope = anyio.CancelScope()
        self._in_flight[trial.trial_id] = scope
        self._tg.start_soon(fn, trial, scope)

    async def _launch(self, trial: Trial, scope: anyio.CancelScope) -> None:
        with scope:
            try:
                await self.executor.start_trial(
                    trial, self._trainables[trial.trial_id], self.s.reuse_actors,
                    self._restore_point(trial),
                )
            except TrialFailure as failure:
                self._post(TrialFailed(trial, failure))
                return
            await self._fetch_and_post(trial)

    async def _fetch(self, trial: Trial, scope: anyio.CancelScope) -> None:
        with scope:
            await self._fetch_and_post(trial)

    async def _fetch_and_post(self, trial: Trial) -> None:
        try:
            results = await self.executor.fetch_results(trial, self._limits(trial))
        except TrialFailure as failure:
            self._post(TrialFailed(trial, failure))
        else:
            self._post(ResultsArrived(trial, results))

    def _restore_point(self, trial: Trial) -> tuple[str, Any] | None:
        """Where a (re)starting trial continues from: paused state, checkpoint, restore=."""
        memory = self._memory_checkpoints.pop(trial.trial_id, None)
        if memory is not None:
            return ("object", memory)
        if trial.checkpoint is not None:
            return ("path", trial.checkpoint.path)
        if trial.restore_path:
            return ("path", trial.restore_path)
        return None

    async def _release(self, trial: Trial, in_flight: bool, failed: bool) -> None:
        try:
            if trial.status is TrialStatus.PAUSED and not in_flight:
                try:
                    self._memory_checkpoints[trial.trial_id] = await self.executor.save_to_memory(
                        trial
                    )
                except TrialFailure:
                    logger.warning("Could not save paused trial %s; it will restart", trial)
            await _stop_on(self.executor, trial, in_flight, failed)
        finally:
            self._post(Released(trial))

    def _post(self, event: Any) -> None:
        self._send.send_nowait(event)

    def _limits(self, trial: Trial) -> BatchLimits:
        """How far the trial may run before the driver looks at its results.

        The dict stop criteria travel with the fetch and end the batch beside the
        trainable. Whatever the driver cannot see ahead of (a Stopper or stop
        function, a scheduler that does not say when it decides next) gets one
        result per fetch, so no step runs that 1.x would not have asked for.
        """
        return BatchLimits(max_results=self._max_results(trial),
                           checkpoint_freq=trial.checkpoint_freq,
                           stop=trial.stopping_criterion)

    def _max_results(self, trial: Trial) -> int:
        if self.s.stopper is not None:
            return 1
        horizon = getattr(self.scheduler, "results_before_decision", None)
        if horizon is None:
            return 1
        allowed = horizon(self.view, self._v(trial))
        if allowed is None:
            return MAX_BATCH
        return max(1, min(MAX_BATCH, int(allowed)))

    # ---- the result pipeline -------------------------------------------------------------
    async def _on_results(self, trial: Trial, results: list) -> None:
        if trial.status is not TrialStatus.RUNNING:
            return  # the trial was stopped while these were in flight
        self._in_flight.pop(trial.trial_id, None)
        self._state_dirty = True
        for result in results:
            try:
                event = await self._process_result(trial, result)
            except _ResultRejected as rejected:
                await self._on_failure(trial, rejected.failure)
                return
            if event is not Event.CONTINUE:
                self._transition(trial, event)
                if event is Event.PAUSE:
                    await self._notify_paused(trial)
                return
        self._transition(trial, Event.CONTINUE)

    async def _process_result(self, trial: Trial, result: dict) -> Event:
        if result.get(RESULT_DUPLICATE):
            result = dict(trial.last_result, done=True)
            trial.last_result = result
            await self._notify_complete(trial, result, record=False)
            return Event.COMPLETE
        checkpoint_path = result.pop(CHECKPOINT_PATH, None)
        result["trial_id"] = trial.trial_id
        result["experiment_tag"] = trial.experiment_tag
        done = bool(result.get(DONE))
        try:
            self._check_metrics(result)
            stop = done or await self._should_stop(trial, result)
        except Exception as exc:  # noqa: BLE001 - a bad result or stopper fails the trial
            raise _ResultRejected(exc) from exc
        if stop:
            result[DONE] = True
        self._record(trial, result)
        if stop:
            if checkpoint_path is None and trial.checkpoint_at_end:
                checkpoint_path = await self._save_now(trial)
            await self._notify_complete(trial, result, record=True,
                                        checkpoint_path=checkpoint_path)
            return Event.COMPLETE if done else Event.STOP
        decision = await call_hook(self.scheduler.on_trial_result, self.view, self._v(trial), result)
        await call_hook(self.search_alg.on_trial_result, trial.trial_id, result)
        await self.callbacks.on_trial_result(iteration=self.iteration, trials=self.trial_views,
                                             trial=self._v(trial), result=result)
        if checkpoint_path is not None:
            await self._register_checkpoint(trial, checkpoint_path, result)
        if decision == "STOP":
            await call_hook(self.search_alg.on_trial_complete, trial.trial_id, result)
            await self.callbacks.on_trial_complete(iteration=self.iteration, trials=self.trial_views,
                                                   trial=self._v(trial))
            return Event.STOP
        if decision == "PAUSE":
            return Event.PAUSE
        return Event.CONTINUE

    async def _should_stop(self, trial: Trial, result: dict) -> bool:
        from tune_async.stopper import dict_criteria_met

        criteria = trial.stopping_criterion
        if criteria:
            flat = result if not any("/" in k for k in criteria) else flatten_dict(result)
            if dict_criteria_met(criteria, flat):
                return True
        stopper = self.s.stopper
        return stopper is not None and bool(await call_hook(stopper, trial.trial_id, result))

    def _check_metrics(self, result: dict) -> None:
        if not self.s.strict_metrics:
            return
        if not any(k not in _AUTO_KEYS for k in result):
            return  # nothing but automatic fields (e.g. a bare final result)
        missing = [m for m in self.s.strict_metrics if m not in result
                   and (("/" not in m) or m not in flatten_dict(result))]
        if missing:
            raise ValueError(
                f"Trial returned a result which did not include the specified metric(s) "
                f"{missing} that tune.run() expects. Make sure your calls to tune.report() "
                f"include the metric, or set TUNE_DISABLE_STRICT_METRIC_CHECKING=1. "
                f"Result keys: {sorted(result)}"
            )

    def _record(self, trial: Trial, result: dict) -> None:
        trial.last_result = result
        trial.results_recorded += 1
        trial.last_update_time = self.clock.now()
        trial.update_metric_analysis(result)

    async def _notify_complete(self, trial: Trial, result: dict, record: bool,
                               checkpoint_path: str | None = None) -> None:
        await call_hook(self.scheduler.on_trial_complete, self.view, self._v(trial), result)
        await call_hook(self.search_alg.on_trial_complete, trial.trial_id, result)
        if record:
            await self.callbacks.on_trial_result(iteration=self.iteration, trials=self.trial_views,
                                                 trial=self._v(trial), result=result)
        if checkpoint_path is not None:
            await self._register_checkpoint(trial, checkpoint_path, result)
        await self.callbacks.on_trial_complete(iteration=self.iteration, trials=self.trial_views,
                                               trial=self._v(trial))
        self._must_survive(trial)  # a finished trial must never run again after a crash

    # ---- checkpoints ------------------------------------------------------------------------
    async def _save_now(self, trial: Trial) -> str | None:
        try:
            return await self.executor.save(trial)
        except TrialFailure as failure:
            logger.warning("Checkpoint at end of trial %s failed: %s", trial, failure)
            return None

    async def _register_checkpoint(self, trial: Trial, path: str, result: dict) -> None:
        from tune_async.checkpoint import Checkpoint

        checkpoint = Checkpoint.from_path(path, result)
        trial.checkpoint_manager.on_checkpoint(checkpoint)
        trial.checkpoint = trial.checkpoint_manager.newest_checkpoint
        await self.callbacks.on_checkpoint(iteration=self.iteration, trials=self.trial_views,
                                           trial=self._v(trial), checkpoint=checkpoint)
        await self.callbacks.on_trial_save(iteration=self.iteration, trials=self.trial_views,
                                           trial=self._v(trial))
        self._must_survive(trial)  # a crash now must resume from this checkpoint

    async def _notify_paused(self, trial: Trial) -> None:
        on_pause = getattr(self.search_alg, "on_pause", None)
        if on_pause is not None:
            await call_hook(on_pause, trial.trial_id)

    # ---- failures ---------------------------------------------------------------------
    async def _on_failure(self, trial: Trial, failure: TrialFailure) -> None:
        if trial.status is not TrialStatus.RUNNING:
            return
        self._in_flight.pop(trial.trial_id, None)
        trial.num_failures += 1
        self._transition(trial, Event.FAIL, failure=failure, failed=True)
        if self.s.fail_fast == "raise":
            self.raise_error = failure.exception or TuneError(failure.traceback)
            await self._stop_all("fail_fast")
            return
        if trial.max_failures < 0 or trial.num_failures <= trial.max_failures:
            logger.info("Trial %s failed (%d); retrying", trial, trial.num_failures)
            self._rewind_to_checkpoint(trial)
            self._transition(trial, Event.RETRY)
            self.pending.pop(trial.trial_id, None)
            self.pending[trial.trial_id] = trial  # re-queued at the end, as 1.x
            return
        await call_hook(self.scheduler.on_trial_error, self.view, self._v(trial))
        await call_hook(self.search_alg.on_trial_complete, trial.trial_id, None, True)
        await self.callbacks.on_trial_error(iteration=self.iteration, trials=self.trial_views,
                                            trial=self._v(trial))
        if self.s.fail_fast:
            await self._stop_all("fail_fast")

    def _rewind_to_checkpoint(self, trial: Trial) -> None:
        """Drop what was recorded after the restore point, so no result is logged twice."""
        from tune_async.checkpoint import truncate_trial_results

        checkpoint = trial.checkpoint
        iteration = checkpoint.iteration if checkpoint is not None else 0
        self._flush_loggers()
        if trial.logdir and os.path.isdir(trial.logdir):
            truncate_trial_results(trial.logdir, iteration)
        trial.last_result = dict(checkpoint.result) if checkpoint is not None else {}
        trial.results_recorded = iteration
        trial.reset_metric_analysis()
        if checkpoint is not None:
            trial.update_metric_analysis(trial.last_result)

    def _flush_loggers(self) -> None:
        for callback in self.callbacks:
            flush = getattr(callback, "flush", None)
            if callable(flush):
                flush()

    # ---- stopping everything ---------------------------------------------------------
    async def _stop_all(self, reason: str) -> None:
        if self._stopping:
            return
        self._stopping = True
        logger.info("Stopping all trials (%s)", reason)
        if reason == "interrupted":
            self._interrupt_running()
            return
        await call_hook(self.search_alg.set_finished)
        self._search_done = True
        for trial in list(self.trials):
            if trial.status in (TrialStatus.RUNNING, TrialStatus.PENDING, TrialStatus.PAUSED):
                was_running = trial.status is TrialStatus.RUNNING
                self._transition(trial, Event.STOP)
                if was_running:
                    await self.callbacks.on_trial_complete(
                        iteration=self.iteration, trials=self.trial_views, trial=self._v(trial))
                else:
                    await call_hook(self.scheduler.on_trial_remove, self.view, self._v(trial))

    def _interrupt_running(self) -> None:
        """Ctrl+C / cancellation: running trials go back to the queue, resumable later."""
        for trial in list(self.running.values()):
            self._transition(trial, Event.INTERRUPT)

    # ---- periodic work ------------------------------------------------------------------
    async def _ticker(self) -> None:
        while True:
            await self.clock.sleep(TICK_S)
            self._post(Tick())

    async def _on_tick(self) -> None:
        if self._deadline is not None and self.clock.now() >= self._deadline:
            await self._stop_all("time budget")
        self._report_progress(done=False)
        self._maybe_write_state()

    def _report_progress(self, done: bool) -> None:
        reporter = self.s.reporter
        if reporter is None:
            return
        if done or reporter.should_report(self.trial_views, done=done):
            sys_info = [self.executor.resource_summary()]
            debug = self.scheduler.debug_string()
            if debug:
                sys_info.insert(0, debug)
            reporter.report(self.trial_views, done, *sys_info)

    def _maybe_write_state(self, force: bool = False) -> None:
        if not force:
            if not self._state_dirty:
                return
            period = max(STATE_MIN_PERIOD_S, 20 * self._state_write_cost)
            if self.clock.now() - self._state_written_at < period:
                return
        self.write_state()

    def write_state(self) -> None:
        import time

        began = time.perf_counter()
        runner_data = {
            "name": os.path.basename(self.s.experiment_dir),
            "local_dir": os.path.dirname(self.s.experiment_dir),
            "metric": self.s.metric,
            "mode": self.s.mode,
            "session_str": self.s.session_str,
            "iteration": self.iteration,
            "interrupted": self.interrupted,
        }
        self._flush_loggers()  # the files must hold what the state says was recorded
        self._seq += 1
        text = self._serializer.snapshot(self.trials, runner_data, self._start_time,
                                         searcher_state=self._searcher_state(), seq=self._seq)
        write_snapshot(self._state_file, text)
        self._journal.reset()
        self._in_snapshot = set(self.trial_by_id)
        self._state_dirty = False
        self._state_written_at = self.clock.now()
        self._state_write_cost = time.perf_counter() - began

    def _must_survive(self, trial: Trial) -> None:
        """Make this trial's record durable at the end of this step (after its transition)."""
        self._to_persist[trial.trial_id] = trial

    def _persist(self) -> None:
        """Journal the trials that must survive a crash; snapshot if one is not in it yet."""
        to_persist, self._to_persist = self._to_persist, {}
        if any(t not in self._in_snapshot for t in to_persist):
            self.write_state()  # a new trial: the searcher state must travel with it
            return
        self._flush_loggers()  # the files must hold what the journal says was recorded
        for trial in to_persist.values():
            self._seq += 1
            self._journal.append(self._seq, self._serializer.entry(trial))

    def _searcher_state(self) -> Any:
        get_state = getattr(self.search_alg, "get_state", None)
        if get_state is None:
            return None
        try:
            return get_state()
        except NotImplementedError:
            return None

    # ---- resume -----------------------------------------------------------------------------
    def _restore(self, state: dict) -> None:
        """Continue a saved experiment: finished trials stay, the rest start again."""
        from tune_async.state import trials_from_state

        trials = trials_from_state(state)
        by_name = {e.run_identifier: e for e in self.s.experiments}
        for trial in trials:
            exp = by_name.get(trial.trainable_name) or self.s.experiments[0]
            if self.s.resume_errored_only and trial.status is TrialStatus.ERROR:
                trial = _fresh_copy(trial)
            elif trial.status is TrialStatus.RUNNING:
                transitions.apply(trial, Event.INTERRUPT)
            elif trial.status is TrialStatus.PAUSED:
                transitions.apply(trial, Event.UNPAUSE)
            if trial.status is TrialStatus.PENDING and trial.logdir:
                self._rewind_to_checkpoint(trial)
            self._trainables[trial.trial_id] = exp.trainable_cls
            self._register(trial)
            if trial.status is TrialStatus.PENDING:
                self.pending[trial.trial_id] = trial
                self._count_waiting(trial, +1)
        searcher_state = state.get("searcher_state")
        if searcher_state is not None and hasattr(self.search_alg, "set_state"):
            self.search_alg.set_state(searcher_state)
        self._state_dirty = True

    @property
    def state_file(self) -> str:
        return self._state_file

    # ---- cleanup ---------------------------------------------------------------------------
    async def _cleanup(self) -> None:
        """Release every worker, say goodbye to plugins and save the final state."""
        for trial in list(self.running.values()):
            scope = self._in_flight.pop(trial.trial_id, None)
            if scope is not None:
                scope.cancel()
            transitions.apply(trial, Event.INTERRUPT)  # resumable; released right here
            self._index(trial, TrialStatus.RUNNING)
            await _stop_on(self.executor, trial, in_flight=True, failed=False)
        try:
            self._report_progress(done=True)
            await self.callbacks.on_experiment_end(trials=self.trial_views)
        finally:
            try:
                self.write_state()
                self._journal.close()
            finally:
                await self.executor.shutdown()


def _first_error(group: BaseExceptionGroup) -> BaseException:
    """The exception to surface from a task group: the first that is not a cancellation."""
    cancelled = anyio.get_cancelled_exc_class()
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            exc = _first_error(exc)
        if not isinstance(exc, cancelled):
            return exc
    return group.exceptions[0]


async def _stop_on(executor: Executor, trial: Trial, in_flight: bool, failed: bool) -> None:
    await executor.stop_trial(trial, in_flight=in_flight, failed=failed)


def _write_error_file(trial: Trial, failure: TrialFailure) -> None:
    from tune_async.result import EXPR_ERROR_FILE

    trial.error_msg = failure.traceback
    if not trial.logdir:
        return
    path = os.path.join(trial.logdir, EXPR_ERROR_FILE)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    with open(path, "a") as f:
        f.write(f"Failure # {trial.num_failures} (occurred at {stamp})\n")
        f.write(failure.traceback.rstrip() + "\n\n")
    trial.error_file = path


def _fresh_copy(trial: Trial) -> Trial:
    """ERRORED_ONLY: a new trial (new id, new directory) with the errored one's config."""
    return Trial(
        trainable_name=trial.trainable_name,
        config=trial.config,
        experiment_tag=trial.experiment_tag,
        evaluated_params=trial.evaluated_params,
        local_dir=trial.local_dir,
        resources=trial.resources,
        stopping_criterion=trial.stopping_criterion,
        max_failures=trial.max_failures,
        experiment_name=trial.experiment_name,
        restore_path=trial.restore_path,
        checkpoint_freq=trial.checkpoint_freq,
        checkpoint_at_end=trial.checkpoint_at_end,
        keep_checkpoints_num=trial.keep_checkpoints_num,
        checkpoint_score_attr=trial.checkpoint_score_attr,
    )


def _checked_name(name: Any, arg: str) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"{arg} must return a non-empty str, got {name!r}")
    return name.replace("/", "_")


def _checked_dirname(name: Any) -> str:
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or os.sep in name:
        raise ValueError(
            f"trial_dirname_creator must return a plain directory name (a non-empty str with "
            f"no '/' and not '.' or '..'), got {name!r}"
        )
    return name
