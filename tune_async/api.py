"""``run`` / ``arun`` / ``run_experiments``: validate, build plugins, drive one Controller."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import inspect
import logging
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Generator, Sequence
from types import SimpleNamespace
from typing import Any

import anyio

from tune_async.clock import RealClock
from tune_async.controller import Controller, ControllerSettings
from tune_async.error import TuneError
from tune_async.experiment import Experiment, convert_to_experiment_list
from tune_async.result import DEFAULT_METRIC
from tune_async.utils.cancel import run_with_orderly_cancel
from tune_async.utils.cpu_slice import short_cpu_slice
from tune_async.utils.gil import short_switch_interval
from tune_async.utils.heap import frozen_heap
from tune_async.utils.util import Pacer, date_str, env_number

logger = logging.getLogger(__name__)

STARTUP_SWITCH_S = 5.0  # longest start-up phase under the short switch interval

_NOT_YET = "is not implemented yet in tune_async (it comes with a later release)"
_DEFAULT_SERVER_PORT = 4321


def _not_yet(param: str) -> NotImplementedError:
    return NotImplementedError(f"tune.run({param}=...) {_NOT_YET}; remove it to run now.")


async def arun(
    run_or_experiment: Any,
    name: str | None = None,
    metric: str | None = None,
    mode: str | None = None,
    stop: Any = None,
    time_budget_s: float | datetime.timedelta | None = None,
    config: dict | None = None,
    resources_per_trial: Any = None,
    num_samples: int = 1,
    local_dir: str | None = None,
    search_alg: Any = None,
    scheduler: Any = None,
    keep_checkpoints_num: int | None = None,
    checkpoint_score_attr: str | None = None,
    checkpoint_freq: int = 0,
    checkpoint_at_end: bool = False,
    verbose: int = 3,
    progress_reporter: Any = None,
    log_to_file: bool | str | tuple = False,
    trial_name_creator: Callable | None = None,
    trial_dirname_creator: Callable | None = None,
    sync_config: Any = None,
    export_formats: Sequence | None = None,
    max_failures: int = 0,
    fail_fast: bool | str = False,
    restore: str | None = None,
    server_port: int | None = None,
    resume: bool | str = False,
    queue_trials: bool = False,
    reuse_actors: bool = False,
    trial_executor: Any = None,
    raise_on_failed_trial: bool = True,
    callbacks: Sequence | None = None,
    loggers: Sequence | None = None,
    ray_auto_init: Any = None,
    run_errored_only: Any = None,
    global_checkpoint_period: Any = None,
    with_server: Any = None,
    upload_dir: str | None = None,
    sync_to_cloud: Any = None,
    sync_to_driver: Any = None,
    sync_on_checkpoint: Any = None,
    _remote: Any = None,
    trials_per_worker: int = 1,
    _clock: Any = None,
) -> Any:
    """Run an experiment; awaitable form of :func:`run`, same arguments and result.

    Never blocks the event loop. Cancelling the awaiting task stops every trial,
    releases its actor, saves what was recorded and re-raises ``CancelledError``.
    See :func:`run` for the arguments. ``_clock`` (not in 1.x) replaces the clock
    everything periodic reads (``tune_async.clock.FakeClock`` in tests, simulators).
    """
    job = await _prepare_run_on_loop(**{k: v for k, v in locals().items()})
    return await job.execute()


def run(run_or_experiment: Any, *args: Any, **kwargs: Any) -> Any:
    """Executes training (ray.tune 1.x ``tune.run``); returns an ``ExperimentAnalysis``.

    Args:
        run_or_experiment: A function ``f(config[, checkpoint_dir])``, a
            ``tune.Trainable`` subclass, a name registered with
            ``tune.register_trainable``, an ``Experiment`` or a list of them.
        name: Experiment name (its directory under ``local_dir``). Default:
            ``<trainable>_<date>``.
        metric, mode: The metric to optimise and ``"min"``/``"max"``; handed to
            the scheduler, searcher and reporter, and the analysis' defaults.
        stop: Dict ``{key: value}`` (stop at ``result[key] >= value``),
            callable ``(trial_id, result) -> bool``, ``Stopper`` or list of them.
        time_budget_s: Seconds (or ``timedelta``) after which all trials stop.
        config: The search space.
        resources_per_trial: Dict (``cpu``, ``gpu``, ``memory``, ...; default
            1 CPU) or ``PlacementGroupFactory``.
        num_samples: Samples of the space (a grid is repeated); -1: unlimited.
        local_dir: Results root (default ``~/ray_results`` or ``TUNE_RESULT_DIR``).
        search_alg: A ``Searcher`` or ``SearchAlgorithm`` (default
            ``BasicVariantGenerator``).
        scheduler: A ``TrialScheduler`` (default ``FIFOScheduler``).
        verbose: 0 silent, 1 status table, 2 + brief results, 3 + detailed
            results (default).
        progress_reporter: A ``ProgressReporter`` (default ``CLIReporter``, or
            ``JupyterNotebookReporter`` in notebooks).
        trial_name_creator, trial_dirname_creator: ``Callable[[Trial], str]``.
        max_failures: Retries per failed trial (-1: forever). Default 0.
        fail_fast: True stops all trials at the first error; ``"raise"``
            re-raises the trainable's exception.
        queue_trials: Let trials that no node can fit wait (autoscaling
            clusters) instead of raising ``TuneError``.
        reuse_actors: Reuse the Trainable instance between trials through
            ``reset_config`` (warm worker processes are always pooled).
        trials_per_worker: Not in 1.x. Up to this many *async* trials (``async
            def`` functions, async generators, ``async def step``) share one Ray
            actor's event loop; each still reserves ``resources_per_trial``, so pair
            it with a small CPU request, e.g. ``{"cpu": 0.002}`` with 500. Sync
            trainables keep one actor per trial. Default 1 (one trial per actor).
        trial_executor: Any object implementing ``tune_async.execution.Executor``
            (default: the Ray executor), or ``"local"`` for ``tune.LocalExecutor()``.
        raise_on_failed_trial: Raise ``TuneError`` if any trial ended in ERROR.
        callbacks: ``tune.Callback`` instances (hooks may be coroutines).
        loggers: Logger classes or ``LoggerCallback`` instances.
        checkpoint_freq: Checkpoint class trainables every N iterations (0: off).
        checkpoint_at_end: Checkpoint class trainables when they finish.
        keep_checkpoints_num: Keep only the best N checkpoints per trial.
        checkpoint_score_attr: Result key ranking checkpoints (``min-`` prefix:
            lower is better). Default ``training_iteration``.
        restore: A checkpoint path to start the trial from.
        resume: True / ``"LOCAL"`` / ``"PROMPT"`` / ``"ERRORED_ONLY"``: continue the
            experiment of the same ``name`` and ``local_dir``; ``"REMOTE"``: download
            it from ``upload_dir/<name>`` first, then continue.
        sync_config: ``tune.SyncConfig``. With ``upload_dir`` (any fsspec URL) the
            experiment directory is mirrored to ``upload_dir/<name>/`` every
            ``cloud_sync_period`` seconds, at each checkpoint (``sync_on_checkpoint``)
            and at the end; ``sync_to_cloud`` (a command template or a function)
            replaces fsspec.
        server_port: Start a TuneServer on this port (0: 4321) for the run: the
            1.x endpoints, an event stream and a live page (``tune_async.web_server``).
        export_formats: Formats the trainable's ``_export_model`` writes into the
            trial directory when the trial ends.
        log_to_file: ``True`` (trial_dir/stdout and stderr), a file name (both into
            it) or a ``(stdout, stderr)`` pair: the trial's output, subprocesses'
            included, also goes there.

    Works from a plain script, from a non-main thread and from a thread whose
    event loop is already running (Jupyter). The first Ctrl+C stops the
    experiment gracefully and returns what was recorded.
    """
    # 1.x's arguments in 1.x's order, by position too (tune.run(train, "name")).
    bound = _ARUN_SIGNATURE.bind(run_or_experiment, *args, **kwargs)
    job = _prepare_run(**bound.arguments)
    return _run_blocking(job)


# ``run`` takes exactly arun's arguments; show them to help() and IDEs. Made once: a
# signature of ~70 parameters takes ~0.3 ms to build.
_ARUN_SIGNATURE = inspect.signature(arun)
run.__signature__ = _ARUN_SIGNATURE  # type: ignore[attr-defined]


def run_experiments(
    experiments: Any,
    scheduler: Any = None,
    server_port: int | None = None,
    verbose: int = 3,
    progress_reporter: Any = None,
    resume: bool | str = False,
    queue_trials: bool = False,
    reuse_actors: bool = False,
    trial_executor: Any = None,
    raise_on_failed_trial: bool = True,
    concurrent: bool = True,
    callbacks: Sequence | None = None,
    _remote: Any = None,
) -> list:
    """Runs experiments given as a dict ``{name: spec}``, an Experiment or a list.

    Returns the list of trials (as ray.tune 1.x). ``concurrent=False`` runs
    the experiments one after another.
    """
    jobs = _experiment_jobs(**{k: v for k, v in locals().items()})
    trials: list = []
    for job in jobs:
        trials.extend(_run_blocking(job).trials)
    return trials


async def arun_experiments(experiments: Any, **kwargs: Any) -> list:
    """Awaitable form of :func:`run_experiments`."""
    jobs = _experiment_jobs(experiments=experiments, **kwargs)
    trials: list = []
    for job in jobs:
        trials.extend((await job.execute()).trials)
    return trials


def _experiment_jobs(experiments: Any, concurrent: bool = True, **kwargs: Any) -> list:
    exps = convert_to_experiment_list(experiments)
    if not exps:
        raise ValueError("experiments must name at least one experiment")
    groups = [exps] if concurrent else [[e] for e in exps]
    return [_prepare_run(run_or_experiment=group, **kwargs) for group in groups]


# ---- preparing a run ----------------------------------------------------------------
class _Job:
    """A validated run: everything is built, nothing has started."""

    def __init__(self, controller: Any, metric: str | None, mode: str | None,
                 raise_on_failed_trial: bool, gc_freeze: bool = True,
                 switch_interval_s: float = 0.0, server_port: int | None = None,
                 before_run: Callable[[], Any] | None = None, loop_slice_s: float = 0.0) -> None:
        self.before_run = before_run  # async work of the run before it starts (a download)
        self.controller = controller
        self.metric = metric
        self.mode = mode
        self.raise_on_failed_trial = raise_on_failed_trial
        self.gc_freeze = gc_freeze
        self.switch_interval_s = switch_interval_s
        self.loop_slice_s = loop_slice_s
        self.server_port = server_port

    async def execute(self) -> Any:
        """The run, to its analysis. A native ``Task.cancel`` of the caller (which anyio's
        shields cannot hold back) reaches it as an anyio cancel: its cleanup always
        finishes before ``CancelledError`` is raised."""
        return await run_with_orderly_cancel(self._execute)

    async def _execute(self) -> Any:
        # The loop's thread is picked sooner when it wakes (see utils.cpu_slice).
        with short_cpu_slice(self.loop_slice_s):
            return await self._execute_on_a_short_slice()

    async def _execute_on_a_short_slice(self) -> Any:
        from tune_async.analysis import ExperimentAnalysis

        if self.before_run is not None:
            await self.before_run()
        # No 100 ms full collections of the imports; with a searcher working in a thread,
        # the loop gets the GIL back from any thread within 1 ms. So does every run while
        # it starts up (until its first results, at most STARTUP_SWITCH_S): Ray creates
        # the first actors in threads that run Python (it disassembles the actor class
        # once per process), two of them at once took the GIL from the loop for 8-12 ms.
        switch_s = self.switch_interval_s if self.controller.lane.works_in_thread else 0.0
        with contextlib.ExitStack() as startup:
            startup.enter_context(short_switch_interval(self.switch_interval_s))
            self.controller.on_first_results = startup.close
            timer = asyncio.get_running_loop().call_later(STARTUP_SWITCH_S, startup.close)
            try:
                with frozen_heap(self.gc_freeze), short_switch_interval(switch_s):
                    trials = await self._run_controller()
            finally:
                timer.cancel()
        incomplete = [t for t in trials if t.status != "TERMINATED"]
        if incomplete:
            if self.raise_on_failed_trial and not self.controller.interrupted:
                raise TuneError("Trials did not complete", incomplete)
            logger.error("Trials did not complete: %s", incomplete)
        # It reads the state file back: off the loop, and under the short switch interval
        # (parsing a large state file is Python work that held the GIL from the loop for
        # up to the interpreter's 5 ms at a time, the worst beat of a 200-trial run).
        with short_switch_interval(self.switch_interval_s):
            return await anyio.to_thread.run_sync(functools.partial(
                ExperimentAnalysis, self.controller.state_file, trials=trials,
                default_metric=self.metric, default_mode=self.mode,
            ))

    async def _run_controller(self) -> list:
        """The controller's run, with a TuneServer beside it when server_port was given."""
        if self.server_port is None:
            return await self.controller.run()
        from tune_async.web_server import serve_during

        return await serve_during(self.controller, self.server_port)


def _run_arguments(kwargs: dict[str, Any]) -> SimpleNamespace:
    """``tune.run``'s arguments with defaults applied (unknown names: TypeError)."""
    bound = _ARUN_SIGNATURE.bind(**kwargs)
    bound.apply_defaults()
    return SimpleNamespace(**bound.arguments)


def _prepare_run(**kwargs: Any) -> _Job:
    """Validate every argument and build the run; nothing starts here."""
    stages = _preparing(kwargs)
    while (job := _next_stage(stages)) is None:
        pass
    return job


async def _prepare_run_on_loop(**kwargs: Any) -> _Job:
    """:func:`_prepare_run` in pieces, the loop's other tasks running between them: it
    takes ~2 ms of Python at a process's first run (the arguments' binding, each
    experiment's trainable checked and wrapped, the controller)."""
    stages, pacer = _preparing(kwargs), Pacer()
    while (job := _next_stage(stages)) is None:
        await pacer.now_and_then()
    return job


def _next_stage(stages: Generator[None, None, _Job]) -> _Job | None:
    """Run the next stage; the job once the last one has run, else None."""
    try:
        next(stages)
    except StopIteration as done:
        return done.value
    return None


def _preparing(kwargs: dict[str, Any]) -> Generator[None, None, _Job]:
    """The preparation, as stages (a ``yield`` between two of them)."""
    a = _run_arguments(kwargs)
    # Deprecated 1.x parameters first: they may feed the ones validated below.
    a.sync_config, a.server_port, a.resume = _map_deprecated(
        ray_auto_init=a.ray_auto_init, run_errored_only=a.run_errored_only,
        global_checkpoint_period=a.global_checkpoint_period, with_server=a.with_server,
        upload_dir=a.upload_dir, sync_to_cloud=a.sync_to_cloud, sync_to_driver=a.sync_to_driver,
        sync_on_checkpoint=a.sync_on_checkpoint, sync_config=a.sync_config,
        server_port=a.server_port, resume=a.resume,
    )
    _validate_mode(a.mode)
    fail_fast = _validate_fail_fast(a.fail_fast, a.max_failures)
    verbose = _validate_verbose(a.verbose)
    _validate_sync(a.resume, a.sync_config)
    _validate_server_port(a.server_port)
    _validate_export_formats(a.export_formats)
    _validate_log_to_file(a.log_to_file)
    _validate_trials_per_worker(a.trials_per_worker, a.log_to_file)
    cleanup_hook_timeout_s, switch_interval_s = _cleanup_hook_timeout(), _switch_interval()
    loop_slice_s = _loop_slice()
    if a._remote:
        raise _not_yet("_remote")
    yield
    experiments = _experiments_of(a)
    yield
    durable_pruner = _prepare_durable(experiments, a.sync_config)
    if fail_fast and any(e.max_failures != 0 for e in experiments):
        raise ValueError("max_failures must be 0 if fail_fast=True.")
    metric, mode = a.metric, a.mode
    search_alg = _build_search_alg(a.search_alg, metric, mode, experiments[0].spec["config"])
    scheduler = _build_scheduler(a.scheduler, metric, mode)
    executor = _build_executor(a.trial_executor, a.reuse_actors, a.queue_trials,
                               a.trials_per_worker)
    reporter = _build_reporter(a.progress_reporter, verbose, metric, mode)
    callback_list = _build_callbacks(a.callbacks, a.loggers, metric, verbose)
    callback_list = _with_node_syncer(callback_list, a.sync_config, executor)
    if durable_pruner is not None:
        callback_list = _plus(callback_list, durable_pruner)
    experiment_dir = experiments[0].checkpoint_dir
    cloud = _cloud_syncer(a.sync_config, experiments, experiment_dir)
    if cloud is not None:  # last: it uploads what the loggers and node syncs wrote
        callback_list = _plus(callback_list, cloud)
    from_cloud = a.resume == "REMOTE"
    if from_cloud and cloud is None:
        raise ValueError("Called resume from remote without remote directory. Set "
                         "sync_config=tune.SyncConfig(upload_dir=...) to the run's upload_dir.")
    resume_path = None if from_cloud else _resume_path(a.resume, experiment_dir)
    if resume_path is None and not from_cloud:  # resuming: the saved searcher state decides
        search_alg.add_configurations(experiments)
    # The last stage writes (the experiment's directory): a cancel at a yield before it
    # leaves nothing behind.
    yield
    # A directory made here holds no trial directory: the first trials' directories need
    # not be made on the loop while it is listed.
    new_dirs = () if os.path.isdir(experiment_dir) else (experiment_dir,)
    os.makedirs(experiment_dir, exist_ok=True)
    stoppers = [e.stopper for e in experiments if e.stopper is not None]
    settings = ControllerSettings(
        experiments=experiments,
        search_alg=search_alg,
        scheduler=scheduler,
        executor=executor,
        callbacks=callback_list,
        experiment_dir=experiment_dir,
        session_str=date_str(),
        reporter=reporter,
        stopper=stoppers[0] if stoppers else None,
        time_budget_s=experiments[0].time_budget_s,
        fail_fast=fail_fast,
        metric=metric,
        mode=mode,
        reuse_actors=a.reuse_actors,
        queue_trials=a.queue_trials,
        max_pending_trials=_max_pending(search_alg),
        strict_metrics=_strict_metrics(metric, scheduler, search_alg),
        resume_path=resume_path,
        resume_errored_only=a.resume == "ERRORED_ONLY",
        clock=a._clock or getattr(executor, "clock", None) or RealClock(),
        cleanup_hook_timeout_s=cleanup_hook_timeout_s,
        new_dirs=new_dirs,
    )
    return _Job(Controller(settings), metric, mode, a.raise_on_failed_trial,
                gc_freeze=os.environ.get("TUNE_GC_FREEZE", "1") != "0",
                switch_interval_s=switch_interval_s, loop_slice_s=loop_slice_s,
                server_port=a.server_port,
                before_run=functools.partial(_download_to_resume, settings, cloud)
                if from_cloud else None)


def _experiments_of(a: SimpleNamespace) -> list[Experiment]:
    """The Experiments to run: given directly, or built from tune.run's arguments."""
    run = a.run_or_experiment
    items = run if isinstance(run, list) and run else [run]
    # As 1.x: each item that is not an Experiment becomes one with tune.run's arguments.
    return [
        item if isinstance(item, Experiment) else Experiment(
            name=a.name, run=item, stop=a.stop, time_budget_s=a.time_budget_s,
            config=a.config, resources_per_trial=a.resources_per_trial,
            num_samples=a.num_samples, local_dir=a.local_dir,
            trial_name_creator=a.trial_name_creator,
            trial_dirname_creator=a.trial_dirname_creator, log_to_file=a.log_to_file,
            checkpoint_freq=a.checkpoint_freq, checkpoint_at_end=a.checkpoint_at_end,
            keep_checkpoints_num=a.keep_checkpoints_num,
            checkpoint_score_attr=a.checkpoint_score_attr, export_formats=a.export_formats,
            max_failures=a.max_failures, restore=a.restore,
        )
        for item in items
    ]


def _cleanup_hook_timeout() -> float:
    """``TUNE_CLEANUP_HOOK_TIMEOUT_S``: how long a plugin hook may hang cleanup (10 s)."""
    return env_number("TUNE_CLEANUP_HOOK_TIMEOUT_S", 10.0)


def _switch_interval() -> float:
    """``TUNE_SWITCH_INTERVAL_S``: the interpreter's switch interval (at most) during a
    run whose searcher works in a thread (0.001 s; 0 leaves it alone). See utils.gil."""
    return env_number("TUNE_SWITCH_INTERVAL_S", 0.001)


def _loop_slice() -> float:
    """``TUNE_LOOP_SLICE_S``: the CPU time slice the loop's thread asks the kernel for
    while a run goes on (0.0001 s; 0 leaves it alone). See utils.cpu_slice."""
    return env_number("TUNE_LOOP_SLICE_S", 0.0001)


def _resume_path(resume: Any, experiment_dir: str) -> str | None:
    """The state file to continue from, or None for a fresh start (1.x rules)."""
    from tune_async.state import newest_state_file

    if not resume:
        return None
    path = newest_state_file(experiment_dir) if os.path.isdir(experiment_dir) else None
    if path is None:
        raise ValueError(
            "Called resume when no checkpoint exists in local directory "
            f"({experiment_dir}). Pass the same name= and local_dir= as the run to resume."
        )
    if resume == "PROMPT":
        answer = input(f"Resume from local directory {experiment_dir}? [y/N]: ")
        if answer.strip().lower() not in ("y", "yes"):
            return None
    return path


def _map_deprecated(
    *, ray_auto_init: Any, run_errored_only: Any, global_checkpoint_period: Any,
    with_server: Any, upload_dir: Any, sync_to_cloud: Any, sync_to_driver: Any,
    sync_on_checkpoint: Any, sync_config: Any, server_port: Any, resume: Any,
) -> tuple[Any, Any, Any]:
    from tune_async.sync import SyncConfig

    if ray_auto_init is not None:
        raise ValueError(
            "ray_auto_init is deprecated and has no replacement argument: tune_async starts "
            "a local Ray by itself; call ray.init(...) before tune.run to choose the cluster, "
            "or set TUNE_DISABLE_AUTO_INIT=1 to forbid starting one."
        )
    if global_checkpoint_period is not None:
        raise ValueError(
            "global_checkpoint_period is deprecated and has no replacement argument: set the "
            "TUNE_GLOBAL_CHECKPOINT_S environment variable instead."
        )
    if run_errored_only is not None:  # accepted and unused, as in 1.x
        _deprecated("run_errored_only", 'resume="ERRORED_ONLY" (it is ignored)')
    if with_server is not None:
        _deprecated("with_server", "server_port")
        if with_server and server_port is None:
            server_port = _DEFAULT_SERVER_PORT
    legacy_sync = {
        "upload_dir": upload_dir, "sync_to_cloud": sync_to_cloud,
        "sync_to_driver": sync_to_driver, "sync_on_checkpoint": sync_on_checkpoint,
    }
    given = {k: v for k, v in legacy_sync.items() if v is not None}
    if given and sync_config is not None and not any(given.values()):
        for key in given:  # 1.x ignores false ones beside sync_config
            _deprecated(key, f"sync_config=tune.SyncConfig({key}=...) (it is ignored)")
        given = {}
    if given:
        if sync_config is not None:
            raise ValueError(
                f"{sorted(given)} cannot be combined with sync_config: put them into "
                "tune.SyncConfig(...) only."
            )
        for key in given:
            _deprecated(key, f"sync_config=tune.SyncConfig({key}=...)")
        sync_config = SyncConfig(**given)
    return sync_config, server_port, resume


def _deprecated(old: str, new: str) -> None:
    warnings.warn(
        f"tune.run({old}=...) is deprecated; use {new} instead.", DeprecationWarning,
        stacklevel=7,  # _map_deprecated, _preparing, _next_stage, _prepare_run*, run or arun
    )


def _validate_mode(mode: Any) -> None:
    if mode is not None and mode not in ("min", "max"):
        raise ValueError(f"mode must be one of ['min', 'max'] (or None), got {mode!r}")


def _validate_fail_fast(fail_fast: Any, max_failures: Any) -> bool | str:
    if isinstance(fail_fast, str):
        if fail_fast.upper() != "RAISE":
            raise ValueError(f"fail_fast must be one of {{bool, 'raise'}}, got {fail_fast!r}")
        fail_fast = "raise"
    elif not isinstance(fail_fast, bool):
        raise ValueError(f"fail_fast must be one of {{bool, 'raise'}}, got {fail_fast!r}")
    if fail_fast and max_failures != 0:
        raise ValueError("max_failures must be 0 if fail_fast=True.")
    return fail_fast


def _validate_verbose(verbose: Any) -> int:
    value = getattr(verbose, "value", verbose)
    if isinstance(value, bool):  # 1.x scripts pass verbose=False / True (0 / 1 to 1.x)
        return int(value)
    if not isinstance(value, int) or not 0 <= value <= 3:
        raise ValueError(f"verbose must be 0, 1, 2 or 3, got {verbose!r}")
    return value


def _validate_sync(resume: Any, sync_config: Any) -> None:
    from tune_async.sync import SyncConfig

    # The checkpoint arguments are validated by Experiment (validate_checkpoint_params).
    if resume not in (False, True, None, "LOCAL", "REMOTE", "PROMPT", "ERRORED_ONLY"):
        raise ValueError(
            "resume must be one of True, False, 'LOCAL', 'REMOTE', 'PROMPT', 'ERRORED_ONLY', "
            f"got {resume!r}"
        )
    if sync_config is not None and not isinstance(sync_config, SyncConfig):
        raise ValueError(f"sync_config must be a tune.SyncConfig, got {sync_config!r}")


def _prepare_durable(experiments: list, sync_config: Any) -> Any:
    """Durable trainables need an upload_dir (1.x's ValueError, before any trial starts);
    they get it, and a plugin that deletes their pruned checkpoints there."""
    from tune_async.durable_trainable import prepare_durable_experiments

    return prepare_durable_experiments(experiments, sync_config)


def _cloud_syncer(sync_config: Any, experiments: list, experiment_dir: str) -> Any:
    """The CloudSyncer for ``upload_dir`` (SyncConfig's, else the Experiment's), or None.

    Raises ImportError now (not mid-run) when the URL's fsspec package is missing.
    """
    from tune_async.sync.cloud import CloudSyncer
    from tune_async.sync.config import SyncConfig

    sync_config = sync_config if sync_config is not None else SyncConfig()
    upload_dir = sync_config.upload_dir or experiments[0].spec.get("upload_dir")
    if not upload_dir:
        if sync_config.sync_to_cloud:
            logger.warning("SyncConfig.sync_to_cloud is ignored without an upload_dir "
                           "(as in 1.x): nothing is uploaded.")
        return None
    return CloudSyncer.from_config(sync_config, experiment_dir, upload_dir)


async def _download_to_resume(settings: ControllerSettings, cloud: Any) -> None:
    """resume="REMOTE": the experiment comes down from the cloud (in a worker thread), then
    continues from its newest state as resume=True would."""
    from tune_async.state import newest_state_file

    def download() -> str | None:
        url = cloud.remote_url
        if not cloud.storage.exists(url):
            raise ValueError(f"Called resume from remote, but nothing is stored at {url}.")
        cloud.storage.download_dir(url, settings.experiment_dir)
        return newest_state_file(settings.experiment_dir)

    try:
        settings.resume_path = await anyio.to_thread.run_sync(download)
    except BaseException:
        await cloud.close_storage()  # the run will not start: nothing else ends it
        raise
    if settings.resume_path is None:
        await cloud.close_storage()
        raise ValueError(f"Called resume from remote, but {cloud.remote_url} holds no "
                         "experiment state (experiment_state-*.json).")


def _validate_server_port(port: Any) -> None:
    if port is not None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port < 65536:
            raise ValueError(f"server_port must be an int port number, got {port!r}")


def _validate_export_formats(formats: Any) -> None:
    if formats:
        if not isinstance(formats, (list, tuple)) or not all(isinstance(f, str) for f in formats):
            raise ValueError(f"export_formats must be a list of format names, got {formats!r}")


def _validate_log_to_file(log_to_file: Any) -> None:
    if log_to_file not in (False, None):
        if not (log_to_file is True or isinstance(log_to_file, str)
                or (isinstance(log_to_file, (list, tuple)) and len(log_to_file) == 2)):
            raise ValueError(
                "log_to_file must be a bool, a file name, or a (stdout, stderr) pair, got "
                f"{log_to_file!r}"
            )


def _build_search_alg(search_alg: Any, metric: Any, mode: Any, config: dict) -> Any:
    from tune_async.search.variant_generator import has_unresolved_values
    from tune_async.suggest import BasicVariantGenerator, SearchAlgorithm, Searcher, SearchGenerator

    _require_plain_setup_methods(search_alg, "search_alg",
                                 ("set_search_properties", "add_configurations",
                                  "get_state", "set_state"))
    if search_alg is None:
        search_alg = BasicVariantGenerator()
    elif isinstance(search_alg, Searcher):
        search_alg = SearchGenerator(search_alg)
    elif not isinstance(search_alg, SearchAlgorithm):
        hint = " (a trial scheduler: pass it as scheduler=)" if callable(
            getattr(search_alg, "choose_trial_to_run", None)) else ""
        raise TypeError(
            f"search_alg must be a tune Searcher or SearchAlgorithm, got "
            f"{type(search_alg)!r}{hint}"
        )
    if not search_alg.set_search_properties(metric, mode, config) and has_unresolved_values(
        config
    ):
        raise ValueError(
            "You passed a `config` parameter to `tune.run()` with unresolved parameters, but "
            "the search algorithm was already instantiated with a search space. Make sure "
            "that `config` does not contain any more parameter definitions - include them "
            "in the search algorithm's search space if necessary."
        )
    searcher_metric = getattr(search_alg, "metric", None)
    if searcher_metric and metric and searcher_metric != metric:
        # 1.x runs on silently: the searcher keeps its metric, the analysis takes run's.
        logger.warning("The search algorithm optimises its own metric %r; tune.run's "
                       "metric %r is only the analysis' default", searcher_metric, metric)
    return search_alg


def _require_plain_setup_methods(plugin: Any, arg: str, names: tuple[str, ...]) -> None:
    """Set-up/persistence hooks run outside the event loop: coroutines are refused clearly."""
    while plugin is not None:
        for name in names:
            if inspect.iscoroutinefunction(getattr(plugin, name, None)):
                raise TypeError(
                    f"{arg}: {type(plugin).__name__}.{name} must be a plain method, not "
                    "`async def`: it runs while the experiment is set up or saved. Only "
                    "per-trial hooks (suggest, on_trial_result, on_trial_complete, ...) "
                    "may be coroutines."
                )
        plugin = getattr(plugin, "searcher", None)  # wrappers: check what they wrap


def _build_scheduler(scheduler: Any, metric: Any, mode: Any) -> Any:
    from tune_async.schedulers import FIFOScheduler
    from tune_async.suggest import SearchAlgorithm, Searcher

    _require_plain_setup_methods(scheduler, "scheduler", ("set_search_properties",))
    if scheduler is None:
        scheduler = FIFOScheduler()
    for hook in ("on_trial_result", "choose_trial_to_run"):
        if not callable(getattr(scheduler, hook, None)):
            hint = " (a search algorithm: pass it as search_alg=)" if isinstance(
                scheduler, (Searcher, SearchAlgorithm)) else ""
            raise TypeError(
                f"scheduler must be a tune TrialScheduler, got {type(scheduler)!r}{hint}"
            )
    if not scheduler.set_search_properties(metric, mode):
        raise ValueError(
            "You passed a `metric` or `mode` argument to `tune.run()`, but the scheduler you "
            "are using was already instantiated with their own `metric` and `mode` "
            "parameters. Either remove the arguments from your scheduler or from your call "
            "to `tune.run()`"
        )
    return scheduler


def _validate_trials_per_worker(trials_per_worker: Any, log_to_file: Any) -> None:
    if (isinstance(trials_per_worker, bool) or not isinstance(trials_per_worker, int)
            or trials_per_worker < 1):
        raise ValueError(f"trials_per_worker must be an int >= 1, got {trials_per_worker!r}")
    if trials_per_worker > 1 and log_to_file not in (False, None):
        raise ValueError(
            "log_to_file redirects a process's stdout/stderr, which trials sharing a worker "
            "(trials_per_worker > 1) cannot each have: drop log_to_file or use "
            "trials_per_worker=1")


def _build_executor(trial_executor: Any, reuse_actors: bool, queue_trials: bool,
                    trials_per_worker: int = 1) -> Any:
    from tune_async.execution.base import Executor
    from tune_async.execution.ray_executor import RayExecutor

    if trial_executor is None:
        return RayExecutor(reuse_actors=reuse_actors, queue_trials=queue_trials,
                           trials_per_worker=trials_per_worker)
    if trial_executor == "local":
        from tune_async.execution.local import LocalExecutor

        return LocalExecutor()
    if not isinstance(trial_executor, Executor):
        raise TypeError(
            "trial_executor must implement tune_async.execution.Executor (setup, "
            "check_feasible, has_resources_for_trial, reserve, start_trial, fetch_results, "
            f"save_to_memory, stop_trial, resource_summary, shutdown), got {trial_executor!r}"
        )
    return trial_executor


def _build_reporter(progress_reporter: Any, verbose: int, metric: Any, mode: Any) -> Any:
    from tune_async.progress import ProgressReporter, detect_reporter

    if progress_reporter is None:
        if verbose == 0:
            return None
        progress_reporter = detect_reporter(verbose)
    elif not isinstance(progress_reporter, ProgressReporter) and not callable(
        getattr(progress_reporter, "report", None)
    ):
        raise TypeError(
            f"progress_reporter must be a tune ProgressReporter, got {progress_reporter!r}"
        )
    set_verbosity = getattr(progress_reporter, "set_verbosity", None)
    if set_verbosity is not None:
        set_verbosity(verbose)
    setter = getattr(progress_reporter, "set_search_properties", None)
    if setter is not None and not setter(metric, mode):
        raise ValueError(
            "You passed a `metric` or `mode` argument to `tune.run()`, but the reporter you "
            "are using was already instantiated with their own `metric` and `mode` "
            "parameters. Either remove the arguments from your reporter or from your call "
            "to `tune.run()`"
        )
    # Validated above even when silent (1.x checks the reporter at any verbosity).
    return progress_reporter if verbose else None


def _build_callbacks(callbacks: Any, loggers: Any, metric: Any, verbose: int) -> Any:
    from tune_async.callback import Callback, CallbackList
    from tune_async.logger import create_default_callbacks

    if callbacks is not None:
        if not isinstance(callbacks, (list, tuple)):
            raise TypeError(f"callbacks must be a list of tune.Callback, got {callbacks!r}")
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be tune.Callback instances, got {cb!r}")
    disable_loggers = os.environ.get("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS") == "1"
    full = create_default_callbacks(
        list(callbacks or []), loggers, metric, verbose, disable_auto_loggers=disable_loggers
    )
    return CallbackList(full)


def _with_node_syncer(callback_list: Any, sync_config: Any, executor: Any) -> Any:
    """Trials on other Ray nodes: their directories come to the driver (after the loggers,
    as 1.x's SyncerCallback; TUNE_DISABLE_AUTO_CALLBACK_SYNCER=1 leaves it out)."""
    from tune_async.sync import SyncConfig
    from tune_async.sync.node import NodeSyncer

    sync_config = sync_config if sync_config is not None else SyncConfig()
    if (sync_config.sync_to_driver is False or not getattr(executor, "connects_ray", False)
            or os.environ.get("TUNE_DISABLE_AUTO_CALLBACK_SYNCER") == "1"
            or any(isinstance(cb, NodeSyncer) for cb in callback_list)):
        return callback_list
    return _plus(callback_list, NodeSyncer(sync_config))


def _plus(callback_list: Any, callback: Any) -> Any:
    """The callbacks with one more at the end (a new list: hooks are bound once)."""
    from tune_async.callback import CallbackList

    return CallbackList([*callback_list, callback])


def _max_pending(search_alg: Any) -> int:
    from tune_async.suggest import BasicVariantGenerator

    env = os.environ.get("TUNE_MAX_PENDING_TRIALS_PG", "auto")
    if env != "auto":
        return max(1, int(env))
    if not isinstance(search_alg, BasicVariantGenerator):
        return 1
    # An unlimited search (num_samples=-1) keeps only a few trials waiting, so the
    # analysis does not fill with never-started trials when a budget ends it.
    return 8 if search_alg.total_samples >= sys.maxsize else 1000


def _strict_metrics(metric: Any, scheduler: Any, search_alg: Any) -> tuple[str, ...]:
    if os.environ.get("TUNE_DISABLE_STRICT_METRIC_CHECKING") == "1":
        return ()
    names: list[str] = []
    for value in (metric, getattr(scheduler, "metric", None), getattr(search_alg, "metric", None)):
        values = value if isinstance(value, (list, tuple)) else [value]
        # (1.x checks no anonymous "_metric": mode alone names no metric to require)
        names += [v for v in values
                  if isinstance(v, str) and v and v != DEFAULT_METRIC and v not in names]
    return tuple(names)


# ---- running to completion from synchronous code ----------------------------------------
def _run_blocking(job: _Job) -> Any:
    """Run ``job`` to completion from sync code: script, worker thread or Jupyter."""
    try:
        asyncio.get_running_loop()
        loop_running = True
    except RuntimeError:
        loop_running = False
    if loop_running:
        return _run_in_thread(job)
    in_main = threading.current_thread() is threading.main_thread()
    if in_main and getattr(job.controller.executor, "connects_ray", False):
        # Blocking is fine here (no loop yet), and Ray sets its signal handlers only
        # when initialised from the main thread.
        from tune_async.execution.ray_executor import ensure_ray_initialized

        ensure_ray_initialized()
    return asyncio.run(_execute_with_sigint(job, install=in_main))


async def _execute_with_sigint(job: _Job, install: bool) -> Any:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    presses = 0

    def on_sigint() -> None:
        nonlocal presses
        presses += 1
        if presses == 1:
            print("Stopping experiment after Ctrl+C (press again to force quit)...")
            job.controller.request_stop()
        elif task is not None:
            task.cancel()

    installed = False
    if install and os.environ.get("TUNE_DISABLE_SIGINT_HANDLER") != "1":
        try:
            loop.add_signal_handler(signal.SIGINT, on_sigint)
            installed = True
        except (NotImplementedError, RuntimeError, ValueError):
            installed = False
    try:
        return await job.execute()
    finally:
        if installed:
            loop.remove_signal_handler(signal.SIGINT)


def _run_in_thread(job: _Job) -> Any:
    """The caller's thread runs a loop (Jupyter): run ours in a helper thread and wait."""
    outcome: dict[str, Any] = {}
    loop_box: dict[str, asyncio.AbstractEventLoop] = {}

    async def main() -> Any:
        loop_box["loop"] = asyncio.get_running_loop()
        return await job.execute()

    def target() -> None:
        try:
            outcome["value"] = asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="tune_async-run", daemon=True)
    thread.start()
    while thread.is_alive():
        try:
            thread.join(timeout=0.2)
        except KeyboardInterrupt:
            loop = loop_box.get("loop")
            if loop is not None:
                loop.call_soon_threadsafe(job.controller.request_stop)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
