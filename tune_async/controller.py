"""The controller: one event loop that runs an experiment.

Effects (launch a trial, fetch its results, release it, periodic ticks) run as
tasks in one task group and only *post events* to one memory stream. A single
consumer takes events one at a time, consults the transition table, awaits
plugin hooks and schedules the next effects; so plugin hooks never interleave.
Cleanup runs in ``finally`` under a shielded cancel scope, which is what makes
cancelling ``arun`` safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import anyio.to_thread
import attrs

try:  # loaded with tune_async, not by the first arun on the event loop (imports block)
    import anyio._backends._asyncio  # noqa: F401
except ImportError:  # pragma: no cover - a future anyio layout
    pass

from tune_async import events as ev
from tune_async import transitions
from tune_async._hooks import call_hook
from tune_async.clock import Clock, RealClock
from tune_async.error import TuneError
from tune_async.execution.base import BatchLimits, Executor, Launch, TrialFailure
from tune_async.inbox import Inbox
from tune_async.plugin_context import PluginContext
from tune_async.result import (
    AUTO_RESULT_KEYS,
    CHECKPOINT_PATH,
    DONE,
    RESULT_DUPLICATE,
)
from tune_async.schedulers.trial_scheduler import Decision, Exploit
from tune_async.search_lane import LaneIdle, SearcherLane, Suggested
from tune_async.state import ExperimentPersistence
from tune_async.transitions import Effect, Event
from tune_async.trial import Trial, TrialStatus, TrialView, unwrap
from tune_async.trial_dirs import TrialDirs, list_names, may_use_trial_dirs_on_loop
from tune_async.trial_tasks import TrialTasks
from tune_async.utils.util import Pacer, after_due_timers_if_spent, flatten_dict
from tune_async.waiting import WaitingQueue

if sys.version_info < (3, 11):  # pragma: no cover - the backport anyio depends on
    from exceptiongroup import BaseExceptionGroup

logger = logging.getLogger(__name__)

MAX_BATCH = 1000  # results one fetch may carry
TICK_S = 0.5  # period of the progress / state / budget tick
CAPACITY_REFRESH_S = 10.0
# A scheduler may run nothing while trials wait (HyperBand filling a bracket); this long
# with nothing running and nothing chosen is a scheduler that would wait forever.
SCHEDULER_IDLE_LIMIT_S = 60.0  # how often the executor re-reads the cluster's capacity
_AUTO_KEYS = frozenset(AUTO_RESULT_KEYS) | {"timesteps_since_restore", "neg_mean_loss",
                                            "episodes_total", "timesteps_total"}


# ---- commands from outside (the experiment handle, the TuneServer) ------------------
@attrs.frozen(eq=False)  # identity: each command is its own (kept in a set until decided)
class StopTrialCommand:
    trial_id: str
    reply: Any  # an asyncio.Future: None, or the error


@attrs.frozen(eq=False)
class AddTrialCommand:
    config: dict
    stop: dict | None
    resources: Any
    reply: Any  # an asyncio.Future: the new trial's id, or the error


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


class CapacityFreed:
    """Another experiment on this Ray instance freed resources: try to fill again."""


@attrs.frozen
class StopAll:
    reason: str




@attrs.define(eq=False)
class _SavedState:
    """A trial's state kept in memory (a PAUSE, or a PBT donor): ready once saved."""

    ready: anyio.Event = attrs.field(factory=anyio.Event)
    value: Any = None  # None after ``ready``: the save failed or was cut short


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
        """PENDING trials in queue order, then PAUSED ones (lazy: callers may stop early).

        A trial whose release has not finished is not among them yet.
        """
        views = self._c._views
        for trial in self._c.queue:
            yield views[trial.trial_id]

    def has_resources_for_trial(self, trial: Trial | TrialView) -> bool:
        return self._c.executor.has_resources_for_trial(unwrap(trial))

    @property
    def search_alg(self) -> Any:
        return self._c.search_alg

    @property
    def suggestions_pending(self) -> bool:
        """Suggestions are on their way (asked for, not yet arrived): more trials will
        join soon, so a scheduler filling a bracket should wait for them."""
        lane = self._c.lane
        return lane.requesting or not lane.idle


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
    resume_path: str | None = None  # ... or the state file to load (off the loop)
    resume_errored_only: bool = False
    clock: Clock = attrs.field(factory=RealClock)
    cleanup_hook_timeout_s: float = 10.0  # a plugin hook may hang cleanup this long at most
    # Directories this run made just before it started: no trial directory in them yet.
    new_dirs: tuple[str, ...] = ()


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
        self.queue = WaitingQueue()
        self.running: dict[str, Trial] = {}
        self.view = RunnerView(self)
        self.lane = SearcherLane(settings.search_alg, self._post)
        self.events = ev.EventHub()  # what was decided, for subscribers (built only for them)
        self._accepting = False  # commands are taken while the consumer runs
        self.accepting = anyio.Event()  # set when it starts taking commands
        self._pending_commands: set = set()
        self._user_trials = 0
        self.iteration = 0
        self.interrupted = False
        self.raise_error: BaseException | None = None
        self._trainables: dict[str, type] = {}
        self._in_flight: dict[str, asyncio.Task] = {}  # a trial's launch or fetch task
        self._trial_tasks = TrialTasks()
        self._launches: dict[str, Launch] = {}  # a running trial's current run
        self._launch_numbers = itertools.count(1)
        # States kept in memory: each trial's newest (a donor for exploits), and what a
        # paused or exploited trial's next launch restores from.
        self._saved: dict[str, _SavedState] = {}
        self._restore_from: dict[str, _SavedState] = {}
        self._keeps_donors = False  # an exploit may need a finished trial's state
        self._warned_mid_batch = False
        self._idle_since: float | None = None  # since when the scheduler chose to run nothing
        self._search_done = False
        self._stopping = False
        self._send: Inbox | None = None
        self._tg: Any = None
        self.plugin_context: PluginContext | None = None
        self._unjournaled: list[Callable[[], None]] = []  # holds on pruned checkpoints
        self._awaiting_journal: set[Callable[[], None]] = set()  # ... handed to a flush
        self._start_time = 0.0
        self._deadline: float | None = None
        self._pacer = Pacer()  # the consumer's turn on the loop
        # Called once, when the first results arrive (the run has started up).
        self.on_first_results: Callable[[], Any] | None = None
        self._stopper_all = getattr(settings.stopper, "stop_all", None)
        implements = getattr(self.callbacks, "implements", lambda hook: True)
        self._observes_steps = (implements("on_step_begin"), implements("on_step_end"))
        # Result files are flushed by the persistence writer's thread, never on the loop.
        self._file_flushers = [cb.defer_flushing() for cb in self.callbacks
                               if callable(getattr(cb, "defer_flushing", None))]
        # Snapshots are paced on real time whatever the experiment's clock: they bound disk
        # work and what a crash loses, and a virtual clock would make them O(trials) each
        # simulated second.
        self.persistence = ExperimentPersistence(
            settings.experiment_dir, settings.session_str, time.monotonic, self._flush_loggers,
            flush_files=self._flush_files, virtual_clock=hasattr(self.clock, "hold"),
        )
        self.trial_dirs = TrialDirs(on_loop=may_use_trial_dirs_on_loop(self.callbacks),
                                    list_in_background=self._list_in_background,
                                    wake_writer=self.persistence.flush_files_soon,
                                    empty=settings.new_dirs)

    # ---- public ----------------------------------------------------------------
    def request_stop(self) -> None:
        """Stop gracefully (Ctrl+C): running trials are interrupted (resumable), state saved."""
        self.interrupted = True
        self.events.unblock()  # a subscriber's back-pressure must not hold up the stop
        if self._send is not None:
            self._send.send_nowait(StopAll("interrupted"))

    async def submit(self, command: Any) -> Any:
        """Hand a command (stop or add a trial) to the consumer; its reply when decided.

        Commands enter the same event stream as results and are decided by the same
        table, between two events.
        """
        if not self._accepting:
            raise TuneError("The experiment is not running: it takes no commands")
        self._pending_commands.add(command)
        self._post(command)
        self.events.wake()  # decided even while a subscriber holds the stream back
        return await command.reply

    async def run(self) -> list[Trial]:
        """Run the experiment; plugins' background tasks (the context's) live around it."""
        failure: Exception | None = None
        async with anyio.create_task_group() as plugin_tg:
            self.plugin_context = PluginContext(plugin_tg, self.s.experiment_dir)
            try:
                trials = await self._run()
            except Exception as exc:  # noqa: BLE001 - re-raised below, not as a group
                failure = exc
            finally:
                # After the final snapshot (_run's cleanup): a final upload sends it too.
                with anyio.CancelScope(shield=True):
                    await self.plugin_context.close()
                plugin_tg.cancel_scope.cancel()  # after on_experiment_end: the final sync is done
        if failure is not None:
            raise failure
        return trials

    async def _run(self) -> list[Trial]:
        self._start_time = time.time()
        if self.s.time_budget_s is not None:
            self._deadline = self.clock.now() + self.s.time_budget_s
        inbox = self._send = Inbox()
        try:
            try:
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    await self._set_up()
                    await self._consume(inbox)
                    tg.cancel_scope.cancel()
            except BaseExceptionGroup as group:
                raise _first_error(group) from None
            finally:
                inbox.close()
        except anyio.get_cancelled_exc_class():
            self.interrupted = True  # a cancelled arun is an interrupt: resumable, said so
            raise
        finally:
            # Setup is inside too: a failure or a cancel at any moment still releases
            # every worker and saves the state.
            with anyio.CancelScope(shield=True):
                # The group's end closed them, unless it was cancelled before owning them.
                await self._trial_tasks.close()
                await self._cleanup()
        if self.raise_error is not None:
            raise self.raise_error
        return self.trials

    async def _set_up(self) -> None:
        self._tg.start_soon(self._trial_tasks.own)
        await self.executor.setup()
        if callable(getattr(self.executor, "set_wakeup", None)):
            self.executor.set_wakeup(self._wake_threadsafe(),
                                     lambda: self.queue.first() is not None)
        await self.callbacks.setup(context=self.plugin_context)
        state = await self._resume_state()
        if state is not None:
            if state.get("searcher_state") is None:
                self.search_alg.add_configurations(self.s.experiments)
            await self._restore(state)
        reporter = self.s.reporter
        if reporter is not None and hasattr(reporter, "set_total_samples"):
            reporter.set_total_samples(self.search_alg.total_samples)
        self.lane.state = self._searcher_state_now()
        await self._snapshot()  # this session's journal needs a snapshot to build on
        self._tg.start_soon(self.lane.run)
        self._tg.start_soon(self.persistence.writer)
        self._tg.start_soon(self._ticker)
        if self._deadline is not None:
            self._tg.start_soon(self._budget_timer)
        if getattr(self.executor, "refresh_capacity", None) is not None:
            self._tg.start_soon(self._capacity_refresher)
        if self.interrupted:  # Ctrl+C arrived while Ray was starting
            self._post(StopAll("interrupted"))

    async def _resume_state(self) -> dict | None:
        if self.s.resume_state is not None:
            return self.s.resume_state
        if self.s.resume_path is None:
            return None
        from tune_async.state import load_state

        return await anyio.to_thread.run_sync(load_state, self.s.resume_path)

    async def _consume(self, inbox: Inbox) -> None:
        self._accepting = True
        self.accepting.set()
        self._pacer.restart()
        await self._fill()
        await self.persistence.journal_survivors(self._pacer)
        while not self._is_finished():
            await self._wait_for_blocking_subscribers()
            event = await inbox.receive()
            self._pacer.restart()
            await self._step(event)

    async def _wait_for_blocking_subscribers(self) -> None:
        """Back-pressure, for subscribers that asked for it (``overflow="block"``): while
        one's buffer is full, take no new event. Results wait in the stream (nothing is
        lost) and their trials are not fetched again meanwhile. A command that someone
        awaits still goes through: its caller may be that very subscriber."""
        while self.events.full() and not self._pending_commands:
            await self.events.wait_for_room()

    # ---- the consumer --------------------------------------------------------------
    async def _step(self, event: Any) -> None:
        if isinstance(event, ResultsArrived):
            await self._on_results(event.trial, event.results)  # one step per result
        elif isinstance(event, Suggested):
            await self._on_suggested(event)
        elif isinstance(event, (LaneIdle, CapacityFreed)):
            pass  # only wakes the consumer: it may be finished, or trials may fit now
        else:
            await self._begin_step()
            await self._handle(event)
            await self._end_step()
        if (not self._stopping and self._stopper_all is not None
                and await call_hook(self._stopper_all)):
            await self._stop_all("stopper")
        await self._fill()
        await self.persistence.journal_survivors(self._pacer)
        if self.persistence.backlogged:
            await self._wait_for_writer()
        if self._unjournaled:
            releases, self._unjournaled = self._unjournaled, []
            self._awaiting_journal.update(releases)
            self.plugin_context.start_soon(self._release_once_written, releases,
                                           name="prune after the journal")

    async def _wait_for_writer(self) -> None:
        """The state writer fell far behind: wait until it takes its queue; a virtual
        clock held meanwhile (time must not move while the consumer waits)."""
        hold = getattr(self.clock, "hold", contextlib.nullcontext)
        with hold():
            await self.persistence.wait_for_writer()

    async def _handle(self, event: Any) -> None:
        if isinstance(event, TrialFailed):
            await self._on_failure(event.trial, event.failure)
        elif isinstance(event, Released):
            self.queue.released(event.trial)
        elif isinstance(event, Tick):
            await self._on_tick()
        elif isinstance(event, StopAll):
            await self._stop_all(event.reason)
        elif isinstance(event, (StopTrialCommand, AddTrialCommand)):
            await self._on_command(event)

    async def _begin_step(self) -> None:
        """1.x's runner step: one per processed result, failure, release or tick."""
        self.iteration += 1
        if self._observes_steps[0]:  # per result: skip the dispatch when nobody listens
            await self.callbacks.on_step_begin(iteration=self.iteration, trials=self.trial_views)

    async def _end_step(self) -> None:
        if self._observes_steps[1]:
            await self.callbacks.on_step_end(iteration=self.iteration, trials=self.trial_views)

    def _is_finished(self) -> bool:
        if self.running or self.queue.any_releasing:
            return False
        if not self._stopping and (not self._search_done or self.queue):
            return False
        if not self.lane.idle:  # the searcher still has to hear of the last results
            self.lane.report_idle = True
            return False
        return True

    # ---- admitting and starting trials ------------------------------------------------
    async def _fill(self) -> None:
        if self._stopping:
            return
        self._admit_new_trials()
        while self.queue.some_fit(self.executor.has_resources_for_trial):
            chosen = await call_hook(self.scheduler.choose_trial_to_run, self.view)
            if chosen is None:
                break
            trial = unwrap(chosen)
            if self.queue.is_held(trial):
                break  # still being released: it can run once that finished
            await self._start(trial)
            await self._pacer.now_and_then()
        self._check_stalled()

    def _admit_new_trials(self) -> None:
        """Ask the searcher lane for suggestions; trials are added when they arrive."""
        if not self._search_done:
            self.lane.request_suggestions(self.s.max_pending_trials - len(self.queue.pending))

    async def _on_suggested(self, event: Suggested) -> None:
        del self.lane.undelivered[:len(event.suggestions)]
        if self._ended_search():
            return
        await self._admit(event.suggestions)
        if event.finished:
            self._search_done = True

    async def _admit(self, suggestions: list) -> None:
        for suggestion in suggestions:
            if suggestion.trial_id in self.trial_by_id:
                # Resumed: the searcher's state (saved with the periodic snapshot) is older
                # than the journaled trials, so it suggests them again; the restored trial
                # stands for its suggestion.
                continue
            await self._add_trial(self._trial_from(suggestion))
            await self._pacer.now_and_then()

    def _ended_search(self) -> bool:
        """Stopped for good (a stopper, a budget, fail_fast): no new trials. An interrupted
        or cancelled run keeps them, so that resume runs them."""
        return self._stopping and not self.interrupted

    def _trial_from(self, suggestion: Any) -> Trial:
        exp = suggestion.experiment
        ids = {"trial_id": suggestion.trial_id} if suggestion.trial_id else {}
        trial = Trial(  # (a given id spares the time-based uuid the default costs)
            trainable_name=exp.run_identifier,
            config=suggestion.config,
            **ids,
            experiment_tag=suggestion.experiment_tag,
            evaluated_params=dict(suggestion.evaluated_params),
            local_dir=exp.checkpoint_dir,
            resources=exp.resources_for(suggestion.config),
            stopping_criterion=dict(exp.stop_criteria),
            max_failures=exp.max_failures,
            experiment_name=exp.name,
        )
        if exp.spec.get("restore"):
            trial.restore_path = exp.spec["restore"]
        trial.checkpoint_freq = exp.spec["checkpoint_freq"]
        trial.checkpoint_at_end = exp.spec["checkpoint_at_end"]
        trial.keep_checkpoints_num = exp.spec["keep_checkpoints_num"]
        trial.checkpoint_score_attr = exp.spec["checkpoint_score_attr"]
        trial.log_to_file = exp.spec["log_to_file"]
        trial.export_formats = list(exp.spec["export_formats"])
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
        self.queue.add(trial)
        self.persistence.mark_dirty()
        self.persistence.must_survive(trial)  # journaled: no snapshot per new trial
        await call_hook(self.scheduler.on_trial_add, self.view, self._v(trial))
        if self.events:
            self.events.publish(ev.TrialAdded(trial.trial_id, dict(trial.config)))

    def _register(self, trial: Trial) -> None:
        if trial.trial_id in self.trial_by_id:
            raise TuneError(f"Two trials with the id {trial.trial_id!r}: trial ids must be unique")
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
            self.trial_dirs.assign(trial)
        launch = self._launches[trial.trial_id] = Launch(trial, next(self._launch_numbers))
        self.executor.reserve(launch)
        if trial.start_time is None:
            trial.start_time = self.clock.now()
        self._transition(trial, Event.START)
        await self.callbacks.on_trial_start(iteration=self.iteration, trials=self.trial_views,
                                            trial=self._v(trial))
        if self.events:
            self.events.publish(ev.TrialStarted(trial.trial_id))
        if trial.checkpoint is not None or trial.restore_path:
            await self.callbacks.on_trial_restore(iteration=self.iteration, trials=self.trial_views,
                                                  trial=self._v(trial))

    def _list_in_background(self, parent: str, done: Callable[[list[str]], None]) -> None:
        async def list_then_call() -> None:
            done(await anyio.to_thread.run_sync(list_names, parent))

        self._tg.start_soon(list_then_call)

    def _check_stalled(self) -> None:
        """Nothing runs, nothing can start and nothing will arrive: fail clearly, don't hang."""
        if self.running or self.queue.any_releasing or self._stopping:
            self._idle_since = None
            return
        waiting = self.queue.first()
        if waiting is not None and self.queue.some_fit(self.executor.has_resources_for_trial):
            # The scheduler chose none of the trials that fit: a deliberate "not now"
            # (HyperBand waiting for its bracket). It is asked again after every event
            # (ticks included); only a wait that never ends is an error.
            now = self.clock.now()
            if self._idle_since is None:
                self._idle_since = now
            elif now - self._idle_since >= SCHEDULER_IDLE_LIMIT_S:
                raise TuneError(
                    f"The scheduler {type(self.scheduler).__name__} chose no trial to run for "
                    f"{now - self._idle_since:.0f} s while nothing ran and trials that fit "
                    f"waited (e.g. {waiting}). Check its choose_trial_to_run()."
                )
            return
        waits_for_others = getattr(self.executor, "waits_for_others", None)
        if waiting is not None and waits_for_others is not None and waits_for_others():
            return  # experiments beside this one hold the room; they wake it when they free it
        if waiting is not None and not self.s.queue_trials:
            raise TuneError(
                f"Insufficient cluster resources to launch trial {waiting}: nothing is running "
                f"and it does not fit ({self.executor.resource_summary()})."
            )
        if waiting is None and not self._search_done and self.lane.quiet:
            raise TuneError(
                "The search algorithm suggested no trial while none is running: it would "
                "wait forever. Check the searcher's suggest() (it returns None without "
                "ever finishing)."
            )

    # ---- transitions and effects ----------------------------------------------------
    def _transition(self, trial: Trial, event: Event, **options: Any) -> None:
        before = trial.status
        effects = transitions.apply(trial, event)
        if Effect.RELEASE in effects:
            self.queue.releasing(trial)  # before it may join the queue: held until released
        self._index(trial, before)
        if before is not trial.status:
            self.persistence.mark_dirty()
        self._run_effects(trial, effects, **options)

    def _index(self, trial: Trial, before: TrialStatus) -> None:
        """Keep the running index and the waiting queue in step with trial.status."""
        if before is TrialStatus.RUNNING and trial.status is not TrialStatus.RUNNING:
            self.running.pop(trial.trial_id, None)
        elif trial.status is TrialStatus.RUNNING:
            self.running[trial.trial_id] = trial
        self.queue.on_status_change(trial, before)
        if trial.status.is_finished:
            self._restore_from.pop(trial.trial_id, None)
            if not self._keeps_donors:
                self._saved.pop(trial.trial_id, None)
            trial.compact()  # no more results: keep only what analysis reads (memory)

    def _run_effects(self, trial: Trial, effects: tuple[Effect, ...], **options: Any) -> None:
        """Do a transition's effects: bookkeeping now, the executor calls as one task, in order.

        The chain runs in one task so that a save lands before the fetch or the release
        that follows it (the trainable's state is that of the result decided on).
        """
        chain = []
        for effect in effects:
            if effect is Effect.RECORD_ERROR:
                _write_error_file(trial, options["failure"])
            elif effect is Effect.ADOPT_DONOR:
                self._adopt_donor(trial, options["exploit"], options["donor_state"])
            else:
                chain.append(effect)
        if not chain:
            return
        launch = self._launches.get(trial.trial_id)
        if Effect.RELEASE in chain:
            self._launches.pop(trial.trial_id, None)  # this run ends; a late call finds nothing
        if Effect.LAUNCH in chain:
            self._spawn_trial_task(trial, self._launch, launch)
        elif Effect.RELEASE in chain:
            in_flight = self._in_flight.pop(trial.trial_id, None)
            if in_flight is not None:
                in_flight.cancel()
            saving = self._new_saved_state(trial) if Effect.SAVE_IN_MEMORY in chain else None
            self._trial_tasks.spawn(self._release, trial, launch, saving, in_flight is not None,
                                    options.get("failed", False))
        else:  # FETCH, after a save when asked
            saving = self._new_saved_state(trial) if Effect.SAVE_IN_MEMORY in chain else None
            self._spawn_trial_task(trial, self._fetch, launch, saving)

    def _new_saved_state(self, trial: Trial) -> _SavedState:
        """Registered now, filled by the effect task: a decision later in this step sees it."""
        saved = self._saved[trial.trial_id] = _SavedState()
        if trial.status is TrialStatus.PAUSED:
            self._restore_from[trial.trial_id] = saved
        return saved

    def _adopt_donor(self, trial: Trial, exploit: Any, donor_state: _SavedState) -> None:
        """PBT's exploit: the next launch restores the donor's state, with the new config."""
        self._restore_from[trial.trial_id] = donor_state
        self._adopt_config(trial, exploit)

    def _adopt_config(self, trial: Trial, exploit: Any) -> None:
        trial.config = dict(exploit.config)
        if exploit.experiment_tag is not None:
            trial.experiment_tag = exploit.experiment_tag
        self.persistence.must_survive(trial)  # the new config must survive a crash

    def _spawn_trial_task(self, trial: Trial, fn: Callable, *args: Any) -> None:
        # Cancelled (the trial stopped while it fetched): the task just ends.
        self._in_flight[trial.trial_id] = self._trial_tasks.spawn(fn, *args)

    async def _launch(self, launch: Launch) -> None:
        trial = launch.trial
        # Launches are queued by the step that started them, whose turn may be spent:
        # they must not all run before the timers that came due meanwhile.
        await after_due_timers_if_spent()
        try:
            await self.executor.start_trial(
                launch, self._trainables[trial.trial_id], self.s.reuse_actors,
                await self._restore_point(trial),
            )
        except TrialFailure as failure:
            self._post(TrialFailed(trial, failure))
            return
        await self._fetch_and_post(launch)

    async def _fetch(self, launch: Launch, saving: _SavedState | None) -> None:
        if saving is not None:
            await self._save_into(launch, saving)
        await self._fetch_and_post(launch)

    async def _fetch_and_post(self, launch: Launch) -> None:
        trial = launch.trial
        if self.plugin_context is not None:  # its last checkpoint is on the driver first
            await self.plugin_context.transits.settled(trial.trial_id)
        try:
            results = await self.executor.fetch_results(launch, self._limits(trial))
        except TrialFailure as failure:
            self._post(TrialFailed(trial, failure))
        else:
            self._post(ResultsArrived(trial, results))

    async def _save_into(self, launch: Launch, saving: _SavedState) -> None:
        try:
            saving.value = await self.executor.save_to_memory(launch)
        except TrialFailure as failure:
            logger.warning("Could not keep the state of trial %s in memory: %s",
                           launch.trial, failure)
        finally:
            saving.ready.set()  # also when cancelled: whoever waits restores otherwise

    async def _restore_point(self, trial: Trial) -> tuple[str, Any] | None:
        """Where a (re)starting trial continues from: a state kept in memory (its own from
        a PAUSE, or a donor's after an exploit), its checkpoint, or ``restore=``."""
        saved = self._restore_from.pop(trial.trial_id, None)
        if saved is not None:
            await saved.ready.wait()
            if saved.value is not None:
                return ("object", saved.value)
            logger.warning("Trial %s restarts from its last checkpoint: the state it was to "
                           "continue from could not be saved", trial)
        if trial.checkpoint is not None:
            return ("path", trial.checkpoint.path)
        if trial.restore_path:
            return ("path", trial.restore_path)
        return None

    async def _release(self, trial: Trial, launch: Launch | None, saving: _SavedState | None,
                       in_flight: bool, failed: bool) -> None:
        try:
            if saving is not None:
                if in_flight:
                    saving.ready.set()  # a step was cut short: there is no state to keep
                else:
                    await self._save_into(launch, saving)
            if launch is not None:
                await self.executor.stop_trial(launch, in_flight=in_flight, failed=failed)
        finally:
            self._post(Released(trial))

    def _wake_threadsafe(self) -> Callable[[], None]:
        """A wake-up the executor may call from any thread (other experiments free room);
        wake-ups that arrive while one is pending coalesce into it."""
        loop = asyncio.get_running_loop()
        pending = False

        def post() -> None:
            nonlocal pending
            pending = False
            if self._send is not None:
                with contextlib.suppress(anyio.ClosedResourceError):  # the run just ended
                    self._post(CapacityFreed())

        def wake() -> None:
            nonlocal pending
            if not pending:
                pending = True
                with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits
                    loop.call_soon_threadsafe(post)
        return wake

    def _post(self, event: Any) -> None:
        if isinstance(event, StopAll):  # the stop is decided whatever subscribers read
            self.events.unblock()
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
        if self.on_first_results is not None:
            started, self.on_first_results = self.on_first_results, None
            started()
        if trial.status is not TrialStatus.RUNNING:
            return  # the trial was stopped while these were in flight
        self._in_flight.pop(trial.trial_id, None)
        self.persistence.mark_dirty()
        # A PAUSE, SAVE or EXPLOIT decided before the batch's last result lands after it:
        # the trainable's state is that of the last result, so that is what gets recorded.
        deferred: tuple[Event, Decision] | None = None
        # Exploits of paused trials land after this trial's own transition: when this
        # trial is their donor, they must clone the state it is saving now.
        exploits: list[tuple[str, Exploit]] = []
        last = len(results) - 1
        for index, result in enumerate(results):
            await self._begin_step()
            try:
                event, decision = await self._process_result(trial, result,
                                                             ask_scheduler=deferred is None)
            except _ResultRejected as rejected:
                await self._on_failure(trial, rejected.failure)
                await self._end_step()
                return
            if decision.stop_trials:
                await self._stop_waiting(decision.stop_trials)
            exploits.extend(decision.exploit_waiting)
            if event in (Event.COMPLETE, Event.STOP):
                self._transition(trial, event)
                self._exploit_all_waiting(exploits)
                await self._end_step()
                return
            if event is not Event.CONTINUE:
                deferred = (event, decision)
                if index < last:
                    self._warn_mid_batch(trial, event, index + 1, len(results))
            await self._end_step()
            await self._pacer.now_and_then()
        event, decision = deferred or (Event.CONTINUE, _CONTINUE)
        await self._apply_decision(trial, event, decision)
        self._exploit_all_waiting(exploits)

    async def _apply_decision(self, trial: Trial, event: Event, decision: Decision) -> None:
        """Turn the scheduler's verdict on the batch's last result into the table's event."""
        if decision.save or decision.exploit is not None:
            self._keeps_donors = True
        if event is Event.EXPLOIT:
            exploit = decision.exploit
            if exploit.donor == trial.trial_id:  # a replayed schedule: its own state, new config
                self._transition(trial, Event.PAUSE)
                self._adopt_config(trial, exploit)
                return
            donor_state = self._saved.get(exploit.donor)
            if donor_state is None:
                logger.warning("Trial %s: no saved state of trial %s to exploit; it continues "
                               "unchanged", trial, exploit.donor)
                event = Event.PAUSE if decision.action == "PAUSE" else Event.CONTINUE
            else:
                self._transition(trial, Event.EXPLOIT, exploit=exploit, donor_state=donor_state)
                return
        self._transition(trial, event)
        if event is Event.PAUSE:
            await self._notify_paused(trial)

    def _warn_mid_batch(self, trial: Trial, event: Event, index: int, size: int) -> None:
        if self._warned_mid_batch:
            return
        self._warned_mid_batch = True
        logger.warning(
            "%s decided %s at result %d of a batch of %d for trial %s, although its "
            "results_before_decision() allowed the whole batch: the decision takes effect "
            "after the batch's last result (the trainable's state is that of that result).",
            type(self.scheduler).__name__, event.value, index, size, trial)

    async def _stop_waiting(self, trial_ids: tuple[str, ...]) -> None:
        """End waiting trials a scheduler's decision names (HyperBand's halving)."""
        for trial_id in trial_ids:
            trial = self.trial_by_id.get(trial_id)
            if trial is None or trial.status not in (TrialStatus.PENDING, TrialStatus.PAUSED):
                continue  # already running (it stops at its own next result) or finished
            self._transition(trial, Event.STOP)
            removed = await call_hook(self.scheduler.on_trial_remove, self.view, self._v(trial))
            self.lane.notify("on_trial_complete", trial_id, None)
            await self.callbacks.on_trial_complete(iteration=self.iteration,
                                                   trials=self.trial_views, trial=self._v(trial))
            self._completed(trial)
            await self._side_decision(removed)

    async def _side_decision(self, value: Any) -> None:
        """What a Decision says about other, waiting trials (on_trial_complete / _error /
        _remove may return one too: a halving or a sync round another trial's end
        completed)."""
        if not isinstance(value, Decision):
            return
        if value.stop_trials:
            await self._stop_waiting(value.stop_trials)
        self._exploit_all_waiting(value.exploit_waiting)

    def _exploit_all_waiting(self, exploits: Any) -> None:
        for trial_id, exploit in exploits:
            self._exploit_waiting(trial_id, exploit)

    def _exploit_waiting(self, trial_id: str, exploit: Exploit) -> None:
        trial = self.trial_by_id.get(trial_id)
        donor_state = self._saved.get(exploit.donor)
        if trial is None or trial.status is not TrialStatus.PAUSED or donor_state is None:
            logger.warning("Skipping the exploit of trial %s from %s: it is not paused or the "
                           "donor has no saved state", trial_id, exploit.donor)
            return
        self._keeps_donors = True
        self._transition(trial, Event.EXPLOIT, exploit=exploit, donor_state=donor_state)

    async def _process_result(self, trial: Trial, result: dict,
                              ask_scheduler: bool = True) -> tuple[Event, Decision]:
        if result.get(RESULT_DUPLICATE):
            # A checkpoint written after the last report rides on this end marker.
            checkpoint_path = result.get(CHECKPOINT_PATH)
            result = dict(trial.last_result, done=True)
            trial.last_result = result
            try:
                await self._ask_stopper(trial, result)  # 1.x's stopper sees this one too
            except Exception as exc:  # noqa: BLE001 - a failing stopper fails the trial
                raise _ResultRejected(exc) from exc
            await self._export_at_end(trial)
            await self._notify_complete(trial, result, record=False,
                                        checkpoint_path=checkpoint_path)
            return Event.COMPLETE, _CONTINUE
        checkpoint_path = result.pop(CHECKPOINT_PATH, None)
        result["trial_id"] = trial.trial_id
        result["experiment_tag"] = trial.experiment_tag
        done = bool(result.get(DONE))
        try:
            self._check_metrics(result)
            stop = await self._should_stop(trial, result) or done
        except Exception as exc:  # noqa: BLE001 - a bad result or stopper fails the trial
            raise _ResultRejected(exc) from exc
        if stop:
            result[DONE] = True
        self._record(trial, result)
        if stop:
            if checkpoint_path is None and trial.checkpoint_at_end:
                checkpoint_path = await self._save_now(trial)
            await self._export_at_end(trial)
            await self._notify_complete(trial, result, record=True,
                                        checkpoint_path=checkpoint_path)
            return (Event.COMPLETE if done else Event.STOP), _CONTINUE
        decision = _CONTINUE
        if ask_scheduler:
            decision = _as_decision(await call_hook(self.scheduler.on_trial_result, self.view,
                                                    self._v(trial), result), self.scheduler)
        self.lane.notify("on_trial_result", trial.trial_id, result)
        await self.callbacks.on_trial_result(iteration=self.iteration, trials=self.trial_views,
                                             trial=self._v(trial), result=result)
        if self.events:
            self.events.publish(ev.TrialResult(trial.trial_id, dict(result)))
        if checkpoint_path is not None:
            await self._register_checkpoint(trial, checkpoint_path, result)
        event = _event_of(decision)
        if event is Event.STOP:
            await self._export_at_end(trial)
            self.lane.notify("on_trial_complete", trial.trial_id, result)
            await self.callbacks.on_trial_complete(iteration=self.iteration, trials=self.trial_views,
                                                   trial=self._v(trial))
            self._completed(trial)
        return event, decision

    async def _export_at_end(self, trial: Trial) -> None:
        """A trial that is stopped (done, a stop condition, the scheduler) exports its model
        in ``export_formats`` into its directory, as 1.x; a failing export fails the trial."""
        from tune_async.trainable.trainable import exports_models

        formats = getattr(trial, "export_formats", None)  # (a trial saved before them)
        if not formats or not exports_models(self._trainables[trial.trial_id]):
            return
        export = getattr(self.executor, "export_model", None)
        if export is None:
            raise _ResultRejected(TuneError(
                f"export_formats: the executor {type(self.executor).__name__} has no "
                "export_model(trial, export_formats)"))
        try:
            await export(self._launches[trial.trial_id], formats)
        except TrialFailure as failure:
            rejected = _ResultRejected(failure)
            rejected.failure = failure  # the trainable's own traceback, for error.txt
            raise rejected from None

    async def _should_stop(self, trial: Trial, result: dict) -> bool:
        """1.x's order: the stopper sees every result (a done one too), then the criteria."""
        from tune_async.stopper import dict_criteria_met

        if await self._ask_stopper(trial, result):
            return True
        criteria = trial.stopping_criterion
        if criteria:
            flat = result if not any("/" in k for k in criteria) else flatten_dict(result)
            return dict_criteria_met(criteria, flat)
        return False

    async def _ask_stopper(self, trial: Trial, result: dict) -> bool:
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
        await self._side_decision(await call_hook(self.scheduler.on_trial_complete, self.view,
                                                  self._v(trial), result))
        self.lane.notify("on_trial_complete", trial.trial_id, result)
        if record:
            await self.callbacks.on_trial_result(iteration=self.iteration, trials=self.trial_views,
                                                 trial=self._v(trial), result=result)
            if self.events:
                self.events.publish(ev.TrialResult(trial.trial_id, dict(result)))
        if checkpoint_path is not None:
            await self._register_checkpoint(trial, checkpoint_path, result)
        await self.callbacks.on_trial_complete(iteration=self.iteration, trials=self.trial_views,
                                               trial=self._v(trial))
        self._completed(trial)

    # ---- checkpoints ------------------------------------------------------------------------
    async def _save_now(self, trial: Trial) -> str | None:
        try:
            return await self.executor.save(self._launches[trial.trial_id])
        except TrialFailure as failure:
            logger.warning("Checkpoint at end of trial %s failed: %s", trial, failure)
            return None

    async def _register_checkpoint(self, trial: Trial, path: str, result: dict) -> None:
        from tune_async.checkpoint import Checkpoint

        checkpoint = Checkpoint.from_path(path, result)
        manager = trial.checkpoint_manager
        holds = self.plugin_context.holds
        holds.keep(checkpoint)  # saved again in a pruned one's place: keep the new files
        dropped = manager.on_checkpoint(checkpoint, delete=False)
        if dropped:  # deleted off the loop; a checkpoint being copied, at its last release
            # Held until this step's journal line (naming the new one) is on disk: a crash
            # before it resumes from a dropped one.
            self._unjournaled += [holds.hold(cp.dir) for cp in dropped if cp.dir]
            holds.delete_or_defer(dropped, manager.delete)
        trial.checkpoint = trial.checkpoint_manager.newest_checkpoint
        await self.callbacks.on_checkpoint(iteration=self.iteration, trials=self.trial_views,
                                           trial=self._v(trial), checkpoint=checkpoint)
        await self.callbacks.on_trial_save(iteration=self.iteration, trials=self.trial_views,
                                           trial=self._v(trial))
        if self.events:
            self.events.publish(ev.TrialCheckpointed(trial.trial_id, path))
        self.persistence.must_survive(trial)  # a crash now must resume from this checkpoint

    async def _release_once_written(self, releases: list[Callable[[], None]]) -> None:
        await self.persistence.flush()  # everything queued so far, this step's journal too
        self._release_written(releases)  # (not when cancelled: a leftover dir is safe, a gap not)

    def _release_written(self, releases: list[Callable[[], None]]) -> None:
        for release in releases:  # (a hold's release is idempotent)
            self._awaiting_journal.discard(release)
            release()

    async def _notify_paused(self, trial: Trial) -> None:
        self.lane.notify("on_pause", trial.trial_id)
        if self.events:
            self.events.publish(ev.TrialPaused(trial.trial_id))

    # ---- commands --------------------------------------------------------------------------
    async def _on_command(self, command: Any) -> None:
        self._pending_commands.discard(command)
        if command.reply.done():
            return  # the caller gave up waiting
        try:
            if isinstance(command, StopTrialCommand):
                value = await self._stop_by_user(command.trial_id)
            else:
                value = await self._add_by_user(command)
        except (TuneError, ValueError, TypeError) as exc:
            command.reply.set_exception(exc)
        else:
            command.reply.set_result(value)

    async def _stop_by_user(self, trial_id: str) -> None:
        trial = self.trial_by_id.get(trial_id)
        if trial is None:
            raise ValueError(f"No trial with id {trial_id!r} in this experiment")
        if trial.status.is_finished:
            raise ValueError(f"Trial {trial_id} has already finished ({trial.status.value})")
        if trial.status is not TrialStatus.RUNNING:
            await self._stop_waiting((trial_id,))
            return
        result = dict(trial.last_result, done=True) if trial.last_result else {}
        await self._side_decision(await call_hook(self.scheduler.on_trial_complete, self.view,
                                                  self._v(trial), result))
        self.lane.notify("on_trial_complete", trial_id, result or None)
        self._transition(trial, Event.STOP)
        await self.callbacks.on_trial_complete(iteration=self.iteration, trials=self.trial_views,
                                               trial=self._v(trial))
        self._completed(trial)

    async def _add_by_user(self, command: AddTrialCommand) -> str:
        """A trial of the (first) experiment with the given config, stop and resources."""
        from tune_async.search.variant_generator import generate_variants, has_unresolved_values
        from tune_async.suggest.search import TrialSuggestion

        if self._stopping:
            raise TuneError("The experiment is stopping: it takes no new trials")
        if not isinstance(command.config, dict):
            raise TypeError(f"config must be a dict, got {type(command.config).__name__}")
        experiment = self.s.experiments[0]
        config = dict(command.config)
        if has_unresolved_values(config):
            _, resolved = next(generate_variants({"config": config}))
            config = resolved["config"]
        self._user_trials += 1
        trial = self._trial_from(TrialSuggestion(
            experiment=experiment, config=config, experiment_tag=f"user_{self._user_trials}",
            evaluated_params={}, trial_id=None))
        if command.stop is not None:
            if not isinstance(command.stop, dict):
                raise TypeError(f"stop must be a dict of criteria, got {command.stop!r}")
            trial.stopping_criterion = dict(command.stop)
        if command.resources is not None:
            from tune_async.experiment import _parse_resources

            trial.resources = _parse_resources(command.resources, experiment.trainable_cls,
                                               config)
        await self._add_trial(trial)
        return trial.trial_id

    def _fail_pending_commands(self) -> None:
        for command in self._pending_commands:
            if not command.reply.done():
                command.reply.set_exception(
                    TuneError("The experiment ended before the command was decided"))
        self._pending_commands.clear()

    def _completed(self, trial: Trial) -> None:
        """A trial finished for good: journaled (a crash before the next snapshot must
        not run it again) and published."""
        self.persistence.must_survive(trial)
        if self.events:
            self.events.publish(ev.TrialCompleted(trial.trial_id, dict(trial.last_result or {})))

    # ---- failures ---------------------------------------------------------------------
    async def _on_failure(self, trial: Trial, failure: TrialFailure) -> None:
        if trial.status is not TrialStatus.RUNNING:
            return
        self._in_flight.pop(trial.trial_id, None)
        trial.num_failures += 1
        # 1.x's record (ray.tune.trial_runner), which users filter: one per failure.
        logger.error("Trial %s: Error processing event.\n%s", trial, failure.traceback.rstrip())
        self._transition(trial, Event.FAIL, failure=failure, failed=True)
        if self.s.fail_fast == "raise":
            self.raise_error = failure.exception or TuneError(failure.traceback)
            await self._stop_all("fail_fast")
            return
        if trial.max_failures < 0 or trial.num_failures <= trial.max_failures:
            logger.info("Trial %s failed (%d); retrying", trial, trial.num_failures)
            self._fall_back_to_arrived_checkpoint(trial)
            await self._rewind_to_checkpoint(trial)
            self._transition(trial, Event.RETRY)
            self.queue.requeue_at_end(trial)  # as 1.x (held until its release finished)
            return
        self.persistence.must_survive(trial)  # errored for good: resume does not retry it
        await self._side_decision(
            await call_hook(self.scheduler.on_trial_error, self.view, self._v(trial)))
        self.lane.notify("on_trial_complete", trial.trial_id, None, True)
        await self.callbacks.on_trial_error(iteration=self.iteration, trials=self.trial_views,
                                            trial=self._v(trial))
        if self.events:
            self.events.publish(ev.TrialErrored(trial.trial_id, str(failure)))
        if self.s.fail_fast:
            await self._stop_all("fail_fast")

    def _fall_back_to_arrived_checkpoint(self, trial: Trial) -> None:
        """A checkpoint still on its way from another node (or lost with it) is not
        restored from: the newest one that reached the driver is."""
        transits = self.plugin_context.transits if self.plugin_context is not None else None
        if transits is None or transits.restorable(trial.trial_id, trial.checkpoint):
            return
        candidates = [c for c in trial.checkpoint_manager.checkpoints
                      if c.dir is not None and transits.restorable(trial.trial_id, c)]
        arrived = transits.newest_arrived(trial.trial_id)
        if arrived is not None and transits.restorable(trial.trial_id, arrived):
            candidates.append(arrived)
        trial.checkpoint = max(candidates, key=lambda c: c.iteration or 0, default=None)
        logger.warning("Trial %s restarts from %s: its newest checkpoint did not reach the "
                       "driver", trial, trial.checkpoint.path if trial.checkpoint else "scratch")

    async def _rewind_to_checkpoint(self, trial: Trial) -> None:
        """Drop what was recorded after the restore point, so no result is logged twice."""
        self._flush_loggers()
        await anyio.to_thread.run_sync(self._flush_and_truncate, [trial])
        self._forget_after_checkpoint(trial)

    def _flush_and_truncate(self, trials: list[Trial]) -> None:
        self._flush_files()  # the files hold everything written so far, then are cut
        _truncate_results(trials)

    def _forget_after_checkpoint(self, trial: Trial) -> None:
        checkpoint = trial.checkpoint
        iteration = checkpoint.iteration if checkpoint is not None else 0
        trial.last_result = dict(checkpoint.result) if checkpoint is not None else {}
        trial.results_recorded = iteration
        trial.reset_metric_analysis()
        if checkpoint is not None:
            trial.update_metric_analysis(trial.last_result)

    def _flush_loggers(self) -> None:
        """Flush the loggers that flush on the loop (user loggers, TensorBoard)."""
        for callback in self.callbacks:
            flush = getattr(callback, "flush", None)
            if callable(flush) and not callable(getattr(callback, "defer_flushing", None)):
                flush()

    def _flush_files(self) -> None:
        """Flush the result files of the built-in loggers (in a worker thread), in the
        trial directories made first: the files open now, whose directories are queued
        already (a trial's directory is queued before its files open)."""
        flushes = [flusher.prepare() for flusher in self._file_flushers]
        self.trial_dirs.make_pending()
        for flush in flushes:
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
        self.lane.notify("set_finished")
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
                self._completed(trial)

    def _interrupt_running(self) -> None:
        """Ctrl+C / cancellation: running trials go back to the queue, resumable later."""
        for trial in list(self.running.values()):
            self._transition(trial, Event.INTERRUPT)

    # ---- periodic work ------------------------------------------------------------------
    async def _ticker(self) -> None:
        # Progress, the state and the result files concern the real world: real seconds,
        # also under a simulator's virtual clock (whose 0.5 s can pass hundreds of times
        # in a real second, each tick a progress check and a wakeup of the state writer).
        while True:
            await anyio.sleep(TICK_S)
            self._post(Tick())

    async def _budget_timer(self) -> None:
        """``time_budget_s`` is on the controller's clock (virtual in a simulation)."""
        await self.clock.sleep(self._deadline - self.clock.now())
        self._post(Tick())  # the tick stops everything once the deadline has passed

    async def _on_tick(self) -> None:
        self.lane.tick()
        if self._deadline is not None and self.clock.now() >= self._deadline:
            await self._stop_all("time budget")
        self._report_progress(done=False)
        if self.persistence.snapshot_due():
            await self._snapshot()
        else:
            self.persistence.flush_files_soon()  # result files reach the disk every tick

    async def _capacity_refresher(self) -> None:
        """The cluster may grow or shrink: re-read its capacity now and then (off the loop)."""
        while True:
            await self.clock.sleep(CAPACITY_REFRESH_S)
            await self.executor.refresh_capacity()

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

    async def _snapshot(self) -> None:
        """Queue a snapshot of the whole experiment (written off the loop, in order)."""
        runner_data = {
            "name": os.path.basename(self.s.experiment_dir),
            "local_dir": os.path.dirname(self.s.experiment_dir),
            "metric": self.s.metric,
            "mode": self.s.mode,
            "session_str": self.s.session_str,
            "iteration": self.iteration,
            "interrupted": self.interrupted,
        }
        await self.persistence.snapshot(self.trials, runner_data, self._start_time,
                                        self._searcher_state(), self._scheduler_state(),
                                        self._pacer)

    def _scheduler_state(self) -> Any:
        get_state = getattr(self.scheduler, "get_state", None)
        return get_state() if get_state is not None else None

    def _searcher_state(self) -> Any:
        """The searcher's state for a snapshot: the lane's newest capture (a capture runs
        between the searcher's calls, in its thread), refreshed for the next snapshot."""
        self.lane.capture_state()
        return self.lane.state

    async def _final_searcher_state(self) -> Any:
        """The searcher's state once the lane is idle: pickled in a thread when the
        searcher works in one (a 200-trial Optuna study took 2.4 ms of the loop)."""
        if not self.lane.works_in_thread:
            return self._searcher_state_now()
        return await anyio.to_thread.run_sync(self._searcher_state_now)

    def _searcher_state_now(self) -> Any:
        """Read directly: only while the lane runs nothing (set-up, the end of cleanup)."""
        get_state = getattr(self.search_alg, "get_state", None)
        if get_state is None:
            return None
        try:
            return get_state()
        except NotImplementedError:
            return None

    # ---- resume -----------------------------------------------------------------------------
    async def _restore(self, state: dict) -> None:
        """Continue a saved experiment: finished trials stay, the rest start again."""
        from tune_async.state import trials_from_state

        trials = trials_from_state(state)
        by_name = {e.run_identifier: e for e in self.s.experiments}
        rewound = []
        for trial in trials:
            exp = by_name.get(trial.trainable_name) or self.s.experiments[0]
            if self.s.resume_errored_only and trial.status is TrialStatus.ERROR:
                trial = _fresh_copy(trial)
            elif trial.status is TrialStatus.RUNNING:
                transitions.apply(trial, Event.INTERRUPT)
            elif trial.status is TrialStatus.PAUSED:
                transitions.apply(trial, Event.UNPAUSE)
            if trial.status is TrialStatus.PENDING and trial.logdir:
                rewound.append(trial)
                self._forget_after_checkpoint(trial)
            self._trainables[trial.trial_id] = exp.trainable_cls
            self._register(trial)
            if trial.status is TrialStatus.PENDING:
                self.queue.add(trial)
        await anyio.to_thread.run_sync(self._flush_and_truncate, rewound)
        searcher_state = state.get("searcher_state")
        if searcher_state is not None and hasattr(self.search_alg, "set_state"):
            self.search_alg.set_state(searcher_state)
        await self._restore_schedule(state.get("scheduler_state"))
        self.persistence.mark_dirty()

    async def _restore_schedule(self, scheduler_state: Any) -> None:
        """Continue the saved schedule; a scheduler without one is told of every trial."""
        set_state = getattr(self.scheduler, "set_state", None)
        if scheduler_state is not None and set_state is not None:
            set_state(scheduler_state, self.view)
            return
        for trial in self.trials:
            await call_hook(self.scheduler.on_trial_add, self.view, self._v(trial))

    @property
    def state_file(self) -> str:
        return self.persistence.state_file

    # ---- cleanup ---------------------------------------------------------------------------
    async def _cleanup(self) -> None:
        """Release every worker, say goodbye to plugins and save the final state.

        Runs shielded; a plugin hook that hangs is given up on after
        ``cleanup_hook_timeout_s`` (named in the log), so cancelling always ends.
        """
        timeout = self.s.cleanup_hook_timeout_s
        try:
            await self._release_running()
            self._report_progress(done=True)
            await self.callbacks.dispatch_bounded("on_experiment_end", timeout,
                                                  trials=self.trial_views)
        finally:
            try:
                settled = await self._settle_searcher(timeout)
                await self._keep_undelivered_suggestions()
                if settled:
                    self.lane.state = await self._final_searcher_state()
                await self.persistence.journal_survivors()  # a step cut short by a cancel
                await self._snapshot()
                await self.persistence.flush(final=True)  # also closes ended trials' files
                # Everything is journaled now: pruned checkpoints go before the end hooks
                # (a final upload must not copy them).
                self._awaiting_journal.update(self._unjournaled)
                self._release_written(list(self._awaiting_journal))
                self.persistence.close()
                self._accepting = False
                self.accepting.set()  # (also when it never started: nobody waits forever)
                self._fail_pending_commands()
                self.events.publish(ev.ExperimentEnded(self.interrupted))
            finally:
                await self.executor.shutdown()

    async def _keep_undelivered_suggestions(self) -> None:
        """Suggestions the run ended before taking become PENDING trials (resumable): the
        searcher's state already counts them as made."""
        self.lane.take_completed()  # what its thread finished after the lane was cancelled
        undelivered, self.lane.undelivered = self.lane.undelivered, []
        if self._ended_search():
            return
        try:
            await self._admit(undelivered)
        except Exception:  # noqa: BLE001 - cleanup goes on; the searcher may suggest again
            logger.exception("Could not keep the last suggestions as trials")

    async def _settle_searcher(self, limit_s: float) -> bool:
        """Wait (bounded) for a searcher call still running in the lane's thread; True when
        none is left, so the final state can be read directly."""
        with anyio.move_on_after(limit_s) as scope:
            await self.lane.wait_idle_thread()
        if scope.cancelled_caught:
            logger.warning("The searcher was still busy %.0f s after the end; its state in the "
                           "experiment state is the last one captured", limit_s)
            return False
        return True

    async def _release_running(self) -> None:
        for trial in list(self.running.values()):
            in_flight = self._in_flight.pop(trial.trial_id, None)
            if in_flight is not None:
                in_flight.cancel()
            transitions.apply(trial, Event.INTERRUPT)  # resumable; released right here
            self._index(trial, TrialStatus.RUNNING)
            launch = self._launches.pop(trial.trial_id, None) or trial
            await self.executor.stop_trial(launch, in_flight=True, failed=False)


_CONTINUE = Decision()


def _as_decision(value: Any, scheduler: Any) -> Decision:
    """A scheduler's return value as a Decision (the 1.x strings, or a Decision)."""
    if isinstance(value, Decision):
        return value
    if value in (None, "CONTINUE"):
        return _CONTINUE
    if value in ("PAUSE", "STOP"):
        return Decision(action=value)
    if isinstance(value, Exploit):
        return Decision(exploit=value)
    raise TuneError(
        f"{type(scheduler).__name__}.on_trial_result returned {value!r}: expected "
        f"TrialScheduler.CONTINUE, PAUSE, STOP or a tune_async.schedulers.Decision"
    )


def _event_of(decision: Decision) -> Event:
    if decision.exploit is not None:
        return Event.EXPLOIT
    if decision.action == "STOP":
        return Event.STOP
    if decision.action == "PAUSE":
        return Event.PAUSE
    return Event.SAVE if decision.save else Event.CONTINUE


def _first_error(group: BaseExceptionGroup) -> BaseException:
    """The exception to surface from a task group: the first that is not a cancellation."""
    cancelled = anyio.get_cancelled_exc_class()
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            exc = _first_error(exc)
        if not isinstance(exc, cancelled):
            return exc
    return group.exceptions[0]


def _truncate_results(trials: list[Trial]) -> None:
    """Cut the trials' result files back to their restore points (in a worker thread)."""
    from tune_async.checkpoint import truncate_trial_results

    for trial in trials:
        if trial.logdir and os.path.isdir(trial.logdir):
            checkpoint = trial.checkpoint
            truncate_trial_results(trial.logdir, checkpoint.iteration if checkpoint else 0)


def _write_error_file(trial: Trial, failure: TrialFailure) -> None:
    from tune_async.result import EXPR_ERROR_FILE

    trial.error_msg = failure.traceback
    if not trial.logdir:
        return
    path = os.path.join(trial.logdir, EXPR_ERROR_FILE)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    os.makedirs(trial.logdir, exist_ok=True)  # a trial failing at once: maybe not made yet
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
        log_to_file=getattr(trial, "log_to_file", False),
        export_formats=list(getattr(trial, "export_formats", [])),
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
