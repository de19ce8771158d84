"""The function API: run ``f(config[, checkpoint_dir])`` as a :class:`Trainable`.

The function runs in a daemon thread. Each ``tune.report`` hands a result to the
actor's thread through the :class:`~tune_async.trainable.session.TrialSession`.
Flow control is by credits: ``train_batch(max_results, ...)`` grants ``max_results``
credits, every report spends one, and a report that finds none left blocks until
the next ``train``/``train_batch`` call. Credits left when a batch returns are
revoked, so the function never runs more results ahead of the driver than it was
granted (and is paused, like in 1.x, while the driver handles a result).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import inspect
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from numbers import Number
from typing import Any

from tune_async.error import TuneError
from tune_async.result import (
    DEFAULT_METRIC,
    DONE,
    RESULT_DUPLICATE,
    SHOULD_CHECKPOINT,
    TIME_THIS_ITER_S,
)
from tune_async.trainable import session as _sess
from tune_async.trainable.aio import EventLoopThread, HostedLoop, is_async_callable, loop_runner
from tune_async.trainable.batching import ends_batch
from tune_async.trainable.session import (
    CHECKPOINT_MARKER,
    CHECKPOINT_PATH,
    ITEM_END,
    ITEM_ERROR,
    ITEM_RESULT,
    AsyncTrialSession,
    StopTrial,
    TrialSession,
)
from tune_async.trainable.trainable import Trainable, _metadata_path, _unpack
from tune_async.utils.util import _binds

logger = logging.getLogger(__name__)

NULL_MARKER = ".null_marker"
_MODE_CONFIG = "config"
_MODE_CHECKPOINT = "checkpoint_dir"
_MODE_REPORTER = "reporter"


class _LegacyReporter:
    """The ``reporter`` argument of legacy ``f(config, reporter)`` functions."""

    def __init__(self, session: TrialSession) -> None:
        self._session = session

    def __call__(self, _metric: Any = None, **kwargs: Any) -> None:
        self._session.report(_sess._make_result(_metric, kwargs))

    @property
    def logdir(self) -> str:
        return self._session.logdir

    @property
    def trial_name(self) -> str:
        return self._session.trial_name

    @property
    def trial_id(self) -> str:
        return self._session.trial_id


class FunctionTrainable(Trainable):
    """A :class:`Trainable` that runs a user function in a thread (see :func:`wrap_function`)."""

    _function: Callable[..., Any]
    _call_mode: str = _MODE_CONFIG
    # How long stop()/reset() wait for the function's thread to unwind.
    _stop_timeout_s: float = 5.0
    # How often a fetch waiting for the function checks that its thread is alive.
    _liveness_wait_s: float = 1.0

    def setup(self, config: dict) -> None:
        self._fn_config = config
        self._session: TrialSession | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._restore_dir: str | None = None
        self._last_checkpoint: str | None = None
        self._finished = False
        # Where restore_from_object unpacked the checkpoint the function reads.
        self._temp_checkpoint: str | None = None

    # -- the function's thread ------------------------------------------------------------

    def _start(self) -> None:
        session, thread = self._launch()
        # Published only once started: a concurrent stop() must never join an unstarted thread.
        self._session, self._thread = session, thread

    def _launch(self) -> tuple[TrialSession, Any]:
        """Start the function; returns its session and its thread (or a thread-like handle)."""
        session = TrialSession(self.trial_name, self.trial_id, self.logdir)
        session.process = self._process_function_result
        thread = threading.Thread(
            target=self._run,
            args=(session, self._fn_config, self._restore_dir),
            name=f"tune-function-{self.trial_name}",
            daemon=True,
        )
        _sess._set_session(session)
        thread.start()
        return session, thread

    def _run(self, session: TrialSession, config: dict, checkpoint: str | None) -> None:
        _sess._set_session(session, thread_only=True)
        session.mark_started()
        try:
            value = self._invoke(session, config, checkpoint)
        except StopTrial:
            return
        except SystemExit as exc:  # sys.exit(0) in the function is a normal end
            if exc.code not in (None, 0):
                session.finish(ITEM_ERROR, exc)
                return
            value = None
        except BaseException as exc:
            session.finish(ITEM_ERROR, exc)
            return
        session.finish(ITEM_END, (value, session.since_last_report()))

    def _call_function(self, session: TrialSession, config: dict,
                       checkpoint: str | None) -> Any:
        fn = type(self)._function
        if self._call_mode == _MODE_CHECKPOINT:
            return fn(config, checkpoint_dir=checkpoint)
        if self._call_mode == _MODE_REPORTER:
            return fn(config, _LegacyReporter(session))
        return fn(config)

    def _invoke(self, session: TrialSession, config: dict, checkpoint: str | None) -> Any:
        value = self._call_function(session, config, checkpoint)
        if inspect.isgenerator(value):  # 1.x: each yielded value is a report
            for item in value:
                session.report(_sess._make_result(item, {}))
            return None
        if inspect.iscoroutine(value) or inspect.isasyncgen(value):
            # An async callable wrap_function could not tell apart: run it on a loop of
            # its own in this thread (reports block this thread, as in a plain function).
            return asyncio.run(_drain(value, session))
        return value

    def _stop_thread(self) -> None:
        session, thread = self._session, self._thread
        self._session = self._thread = None
        if session is not None and thread is not None:
            self._end_thread(session, thread)
        # The function that read the unpacked in-memory checkpoint has ended.
        self._remove_temp_checkpoint()

    def _end_thread(self, session: TrialSession, thread: Any) -> None:
        session.stop()
        if thread is not threading.current_thread():
            thread.join(self._stop_timeout_s)
            if thread.is_alive():
                logger.warning(
                    "The function of trial %s did not stop within %.1f s; leaving its thread "
                    "behind (it ends at its next tune.report).",
                    self.trial_name,
                    self._stop_timeout_s,
                )
        _sess._clear_session(session)

    # -- the actor's side -----------------------------------------------------------------

    def step(self) -> dict:  # pragma: no cover - train/train_batch do not call step
        raise NotImplementedError("FunctionTrainable results come from train_batch().")

    def train(self) -> dict:
        """Let the function run to its next report and return that result."""
        results = self.train_batch(1, 0.0)
        if not results:
            raise TuneError(f"Trial {self.trial_name} was stopped while waiting for a result.")
        return results[0]

    def train_batch(self, max_results: int, window_s: float,
                    stop: dict | None = None) -> list[dict]:
        """Grant ``max_results`` credits and return the function's results.

        Returns after ``max_results`` results, at a result with ``done`` or
        ``should_checkpoint``, at the first result meeting the dict ``stop`` criteria
        (the function then waits inside that ``tune.report``), at the function's end, or
        once ``window_s`` seconds have passed (with at least one result). Raises the
        function's exception, with its original type and traceback.
        """
        self._ready_for_batch(max_results)
        return self._process_items(self._take(max_results, window_s, stop))

    def _ready_for_batch(self, max_results: int) -> None:
        """Check a batch may be asked for now; start the function at the first one."""
        if max_results < 1:
            raise ValueError(f"train_batch: max_results must be >= 1, got {max_results}.")
        self._raise_pending_error()
        if self._finished:
            raise TuneError(f"The function of trial {self.trial_name} has already finished.")
        if self._stopped:
            raise TuneError(f"Trial {self.trial_name} was stopped; its function does not restart.")
        if self._thread is None:
            self._start()

    def _take(self, max_results: int, window_s: float,
              stop: dict | None) -> list[tuple[str, Any]]:
        session, thread = self._session, self._thread
        assert session is not None and thread is not None
        deadline = time.monotonic() + window_s
        taken: list[tuple[str, Any]] = []
        with session.cond:
            _grant(session, max_results, stop)
            try:
                while True:
                    while not session.items:
                        if session.stopping:
                            return taken
                        if taken:
                            remaining = deadline - time.monotonic()
                            if remaining <= 0:
                                return taken
                            session.cond.wait(remaining)
                        elif (not session.cond.wait(self._liveness_wait_s) and not session.items
                              and not session.stopping and not thread.is_alive()):
                            # Checked after the wait: a function that ended just as the
                            # wait timed out has left its end item, it did not die.
                            raise TuneError(f"The function thread of {self.trial_name} died.")
                    kind, payload = session.items.popleft()
                    taken.append((kind, payload))
                    if (
                        kind != ITEM_RESULT
                        or len(taken) >= max_results
                        or ends_batch(payload, stop)
                        or time.monotonic() >= deadline
                    ):
                        return taken
            finally:
                session.credits = 0  # revoke: the function waits while the driver works

    def _process_items(self, taken: list[tuple[str, Any]]) -> list[dict]:
        out: list[dict] = []
        for kind, payload in taken:
            if kind == ITEM_RESULT:
                out.append(payload)  # processed in the function's thread (report)
                continue
            self._finished = True
            try:
                if kind == ITEM_ERROR:
                    raise payload
                end = self._end_result(*payload)
            except BaseException as exc:
                if not out:
                    raise
                self._pending_error = exc  # deliver the results first, raise next call
                break
            out.append(end)
        return out

    def _process_function_result(self, result: dict) -> dict:
        result = self._process_result(result, 0.0)
        path = result.get(CHECKPOINT_PATH)
        if path:
            self._last_checkpoint = path
            self._write_metadata(path, saved_as_dict=False)
        return result

    def _end_result(self, value: Any, elapsed: float) -> dict:
        if isinstance(value, dict):
            result = {TIME_THIS_ITER_S: elapsed, **value, DONE: True}
        elif isinstance(value, Number):
            result = {DEFAULT_METRIC: value, TIME_THIS_ITER_S: elapsed, DONE: True}
        elif value is not None:
            raise TypeError(
                f"The trainable function {type(self).__name__} returned a "
                f"{type(value).__name__}; expected a dict of metrics, a number or None."
            )
        else:
            session = self._session
            if (session is not None and session.reported_any) or self._restored:
                # Nothing new to record (a function restored at its last checkpoint may
                # return at once): the last recorded result becomes the final one.
                return self._with_trailing_checkpoint({DONE: True, RESULT_DUPLICATE: True})
            result = {TIME_THIS_ITER_S: elapsed, DONE: True}
        return self._process_function_result(self._with_trailing_checkpoint(result))

    def _with_trailing_checkpoint(self, result: dict) -> dict:
        """Pair a checkpoint written after the last report with the final result (1.x).

        The final result is the function's returned metrics, or the duplicate of the
        last report; either way the checkpoint becomes the trial's.
        """
        path = self._session.take_pending_checkpoint() if self._session is not None else None
        if path is None:
            return result
        result[SHOULD_CHECKPOINT] = True
        result[CHECKPOINT_PATH] = path
        if result.get(RESULT_DUPLICATE):  # not processed: record the checkpoint here
            self._last_checkpoint = path
            self._write_metadata(path, saved_as_dict=False)
        return result

    # -- lifecycle ------------------------------------------------------------------------

    def cancel(self) -> None:
        """Stop the function where it runs or waits (thread-safe; a batch may be running).

        A batch waiting for the function returns what it has. A function in a thread
        unwinds at its next ``tune.report``; an async one gets ``CancelledError``.
        """
        self._stopped = True
        session = self._session
        if session is not None:
            session.stop()

    def stop_function(self) -> None:
        """End the function (its trial is over) but keep the instance for ``reset``."""
        self._stop_thread()

    def stop(self) -> None:
        """End the function's thread (a blocked report raises) and call ``cleanup()``."""
        self._stopped = True  # a train_batch racing with stop must not start it again
        self._stop_thread()
        super().stop()

    def reset_config(self, new_config: dict) -> bool:
        """Stop the function; it starts again with ``new_config`` on the next call."""
        self._stop_thread()
        self._fn_config = copy.deepcopy(new_config)
        self._restore_dir = None
        self._last_checkpoint = None
        self._finished = False
        self._stopped = False
        return True

    # -- checkpoints ----------------------------------------------------------------------

    def save(self, checkpoint_dir: str | None = None) -> str:
        """Return the last checkpoint directory the function reported.

        With no checkpoint reported yet, a "null" checkpoint holding only the counters is
        made in the trial directory. The function decides where checkpoints go, so passing
        ``checkpoint_dir`` is an error (as in 1.x).
        """
        if checkpoint_dir is not None:
            raise ValueError("Checkpoint path should not be used with function API.")
        path = self._save_to(self.logdir)[1]
        if self._temp_checkpoint is not None and _within(path, self._temp_checkpoint):
            self._temp_checkpoint = None  # now a checkpoint of the trial: kept (as in 1.x)
        return path

    def _save_to(self, parent: str) -> tuple[str, str]:
        if self._last_checkpoint is not None:
            return self._last_checkpoint, self._last_checkpoint
        path = os.path.join(parent, f"checkpoint_null_{self._iteration:06d}")
        os.makedirs(path, exist_ok=True)
        for marker in (CHECKPOINT_MARKER, NULL_MARKER):
            open(os.path.join(path, marker), "a").close()
        # Restored, the function starts over, and so do the counters (1.x): its
        # training_iteration then says how far the function got.
        self._write_metadata(path, saved_as_dict=False, iteration=0, timesteps_total=0,
                             episodes_total=0)
        return path, path

    def load_checkpoint(self, checkpoint: str | dict) -> None:
        """Restart the function with ``checkpoint_dir`` set to ``checkpoint``."""
        if not isinstance(checkpoint, (str, os.PathLike)):
            raise ValueError("A function trainable restores from a checkpoint directory path.")
        path = os.fspath(checkpoint)
        if not os.path.isdir(path):
            path = os.path.dirname(path)
        self._stop_thread()
        self._finished = False
        is_null = os.path.exists(os.path.join(path, NULL_MARKER))
        self._restore_dir = None if is_null else path
        self._last_checkpoint = None if is_null else path

    def _read_metadata(self, path: str) -> dict:
        if not os.path.exists(_metadata_path(path)) and not os.path.isdir(path):
            path = os.path.dirname(path)
        return super()._read_metadata(path)

    def restore_from_object(self, obj: bytes) -> None:
        """Restore from bytes :meth:`save_to_object` returned.

        The function reads the unpacked ``checkpoint_tmp*`` directory while it runs, so
        it is removed when the function stops (stop, reset or the next restore).
        """
        target = tempfile.mkdtemp(prefix="checkpoint_tmp", dir=self.logdir)
        try:
            self.restore(_unpack(obj, target))  # stops the function, removing the last one
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
        self._temp_checkpoint = target

    def _remove_temp_checkpoint(self) -> None:
        target, self._temp_checkpoint = self._temp_checkpoint, None
        if target is not None:
            shutil.rmtree(target, ignore_errors=True)


def _within(path: str, directory: str) -> bool:
    directory = os.path.abspath(directory)
    return os.path.commonpath([os.path.abspath(path), directory]) == directory


async def _drain(value: Any, session: TrialSession) -> Any:
    """Await a coroutine's value, or report each item of an (async) generator."""
    if inspect.isgenerator(value):
        for item in value:
            session.report(_sess._make_result(item, {}))
        return None
    if inspect.isasyncgen(value):
        try:
            async for item in value:
                await session.areport(_sess._make_result(item, {}))
        except asyncio.CancelledError:
            await _cancel_generator(value)
            raise
        finally:
            await value.aclose()
        return None
    return await value if inspect.isawaitable(value) else value


async def _cancel_generator(gen: Any) -> None:
    """Raise ``CancelledError`` inside ``gen`` where it yielded, so its cleanup runs."""
    try:
        await gen.athrow(asyncio.CancelledError())
    except (asyncio.CancelledError, StopAsyncIteration):
        return


class _TaskHandle:
    """A thread-like view (``is_alive``, ``join``) of an async function's task."""

    def __init__(self, future: concurrent.futures.Future, runner: EventLoopThread) -> None:
        self._future = future
        self._runner = runner

    def is_alive(self) -> bool:
        return not self._future.done()

    def join(self, timeout: float | None = None) -> None:
        if not self._runner.in_loop_thread():
            concurrent.futures.wait([self._future], timeout)


class AsyncFunctionTrainable(FunctionTrainable):
    """Runs an ``async def`` function or an async generator as a task on an event loop.

    The loop runs in a thread of its own inside the trial's process (see
    :class:`~tune_async.trainable.aio.EventLoopThread`); the actor's side (credits,
    batches, checkpoints) is the one of :class:`FunctionTrainable`. The function
    reports with ``await tune.areport(...)`` (or ``tune.report(...)``, which blocks
    the trial's loop while the driver has not asked for more) or yields result
    dicts. Stopping the trial cancels its task: ``asyncio.CancelledError`` is raised
    where the function awaits, so its ``finally`` blocks run.
    """

    _tune_async_steps = True  # its trials may share a loop (trials_per_worker)

    def setup(self, config: dict) -> None:
        super().setup(config)
        # In-process (LocalExecutor): the driver's own loop.
        self._aio = loop_runner(f"tune-async-{self.trial_name}")

    def _launch(self) -> tuple[TrialSession, Any]:
        session = AsyncTrialSession(self.trial_name, self.trial_id, self.logdir, self._aio.loop)
        session.process = self._process_function_result
        if not isinstance(self._aio, HostedLoop):
            # For threads the function starts (run_in_executor). Not on a loop hosting
            # several trials: there a process-wide session would be some other trial's.
            _sess._set_session(session)
        future = self._aio.submit(self._run_task(session, self._fn_config, self._restore_dir))
        return session, _TaskHandle(future, self._aio)

    async def atrain_batch(self, max_results: int, window_s: float,
                           stop: dict | None = None) -> list[dict]:
        """:meth:`train_batch` on a trial host's shared loop: waits without blocking it."""
        self._ready_for_batch(max_results)
        return self._process_items(await self._atake(max_results, window_s, stop))

    async def _atake(self, max_results: int, window_s: float,
                     stop: dict | None) -> list[tuple[str, Any]]:
        """``_take`` for the shared loop: the same credits and batch ends, awaited."""
        session, task = self._session, self._thread
        assert isinstance(session, AsyncTrialSession) and task is not None
        deadline = time.monotonic() + window_s
        taken: list[tuple[str, Any]] = []
        with session.cond:
            _grant(session, max_results, stop)
        try:
            while True:
                with session.cond:
                    while session.items:
                        kind, payload = session.items.popleft()
                        taken.append((kind, payload))
                        if (kind != ITEM_RESULT or len(taken) >= max_results
                                or ends_batch(payload, stop) or time.monotonic() >= deadline):
                            return taken
                    if session.stopping:
                        return taken
                    if not taken and not task.is_alive():
                        raise TuneError(f"The function task of {self.trial_name} died.")
                    arrived = session.item_waiter()
                timeout = deadline - time.monotonic() if taken else self._liveness_wait_s
                if taken and timeout <= 0:
                    return taken
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(arrived, timeout)
        finally:
            with session.cond:
                session.credits = 0  # revoke: the function waits while the driver works

    async def _run_task(self, session: AsyncTrialSession, config: dict,
                        checkpoint: str | None) -> None:
        _sess._task_session.set(session)  # this task's context only
        with session.cond:
            if session.stopping:  # stopped before it started
                return
            session.task = asyncio.current_task()
        session.mark_started()
        try:
            value = await _drain(self._call_function(session, config, checkpoint), session)
        except asyncio.CancelledError as exc:
            if not session.stopping:  # not our cancellation: the function failed
                session.finish(ITEM_ERROR, exc)
            return
        except SystemExit as exc:
            if exc.code not in (None, 0):
                session.finish(ITEM_ERROR, exc)
                return
            value = None
        except BaseException as exc:
            session.finish(ITEM_ERROR, exc)
            return
        session.finish(ITEM_END, (value, session.since_last_report()))


def _call_mode(fn: Callable[..., Any]) -> str:
    """How to call ``fn``, as 1.x's wrap_function decides: plus ``checkpoint_dir`` if it
    takes that keyword, else plus a reporter if it takes ``reporter``, else config only;
    parameters with defaults may follow (``f(config, checkpoint_dir=None, epochs=10)``)."""
    try:
        inspect.signature(fn)
    except (TypeError, ValueError):  # builtins and the like: assume f(config)
        return _MODE_CONFIG
    if _binds(fn, {}, checkpoint_dir=None):
        return _MODE_CHECKPOINT
    if _binds(fn, {}, reporter=None):
        return _MODE_REPORTER
    if _binds(fn, {}):
        return _MODE_CONFIG
    name = getattr(fn, "__name__", repr(fn))
    raise ValueError(
        f"Unknown argument found in the Trainable function {name!r}. The function args "
        "must include a 'config' positional parameter. Any other args must be "
        f"'checkpoint_dir'. Found: {list(inspect.signature(fn).parameters)}"
    )


def accepts_checkpoint_dir(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` takes a ``checkpoint_dir`` argument."""
    return _call_mode(fn) == _MODE_CHECKPOINT


_checkpointing_warned = False


def wrap_function(fn: Callable[..., Any], warn: bool = True) -> type[Trainable]:
    """Turn a training function into a :class:`Trainable` class.

    Args:
        fn: ``f(config)``, ``f(config, checkpoint_dir=None)`` or the legacy
            ``f(config, reporter)``. It reports with ``tune.report``, and may return
            (or yield) a dict of metrics or a number (reported as ``_metric``).
            ``async def`` functions (reporting with ``await tune.areport``) and async
            generators run on an event loop (:class:`AsyncFunctionTrainable`).
        warn: Log 1.x's "Function checkpointing is disabled" warning for a plain
            ``f(config)``, once per process (as 1.x's ``wrap_function(train_func,
            warn=True)``).

    Returns:
        A :class:`FunctionTrainable` subclass running ``fn``.
    """
    if isinstance(fn, type) and issubclass(fn, Trainable):
        raise TypeError(f"wrap_function expects a function, got the Trainable class {fn!r}.")
    if not callable(fn):
        raise TypeError(f"wrap_function expects a callable, got {type(fn).__name__}.")
    mode = _call_mode(fn)
    global _checkpointing_warned
    if warn and mode == _MODE_CONFIG and not _is_async_generator(fn) and (
            not _checkpointing_warned):
        _checkpointing_warned = True  # once per process, as 1.x's log_once
        logger.warning(
            "Function checkpointing is disabled. This may result in unexpected behavior "
            "when using checkpointing features or certain schedulers. To enable, set the "
            "train function arguments to be `func(config, checkpoint_dir=None)`.")
    name = getattr(fn, "__name__", type(fn).__name__)
    base = AsyncFunctionTrainable if is_async_callable(fn) else FunctionTrainable
    bases = tuple(getattr(fn, "__mixins__", ())) + (base,)
    attrs = {"_function": staticmethod(fn), "_call_mode": mode, "__module__": __name__}
    return type(name if name.isidentifier() else "ImplicitFunc", bases, attrs)


def _is_async_generator(fn: Callable[..., Any]) -> bool:
    """Async generators are beyond 1.x, whose warning concerns plain functions."""
    return inspect.isasyncgenfunction(fn) or inspect.isasyncgenfunction(
        getattr(fn, "__call__", None))  # noqa: B004 - callable objects


def _grant(session: Any, max_results: int, stop: dict | None) -> None:
    """Let the function produce up to ``max_results`` more results (those already waiting
    count towards them) under the batch's ``stop`` criteria; held: ``session.cond``."""
    session.credits = max_results - len(session.items)
    session.stop_criteria = stop
    session.wake()
