"""The class API: :class:`Trainable` (ray.tune 1.x semantics) and :class:`TrialInfo`."""

from __future__ import annotations

import asyncio
import copy
import functools
import importlib.metadata
import inspect
import io
import logging
import os
import pickle
import shutil
import socket
import sys
import tarfile
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable
from typing import Any

import attrs

from tune_async.result import (
    CONFIG,
    DATE,
    DONE,
    EPISODES_THIS_ITER,
    EPISODES_TOTAL,
    EXPERIMENT_ID,
    HOSTNAME,
    ITERATIONS_SINCE_RESTORE,
    MEAN_LOSS,
    NEG_MEAN_LOSS,
    NODE_IP,
    PID,
    TIME_SINCE_RESTORE,
    TIME_THIS_ITER_S,
    TIME_TOTAL_S,
    TIMESTAMP,
    TIMESTEPS_SINCE_RESTORE,
    TIMESTEPS_THIS_ITER,
    TIMESTEPS_TOTAL,
    TRAINING_ITERATION,
    default_results_dir,
)
from tune_async.trainable.aio import EventLoopThread, HostedLoop, loop_runner
from tune_async.trainable.batching import ends_batch
from tune_async.utils.util import date_str

logger = logging.getLogger(__name__)

SETUP_TIME_THRESHOLD_S = 10
METADATA_SUFFIX = ".tune_metadata"
CHECKPOINT_PICKLE = "checkpoint"


@functools.cache
def _ray_version() -> str | None:
    """The installed Ray's version (1.x records it in checkpoint metadata), without
    importing Ray."""
    try:
        return importlib.metadata.version("ray")
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.cache
def _hostname() -> str:
    # Once per process: a trainable is made per trial (a system call each, otherwise).
    return socket.gethostname()


@attrs.define
class TrialInfo:
    """What a trainable knows about the trial it runs (``"default"`` outside Tune).

    Attributes:
        trial_id: The trial's id.
        trial_name: The trial's name (``str(trial)``).
        logdir: The trial directory; None lets the trainable make a temporary one.
        experiment_tag: The trial's experiment tag.
    """

    trial_id: str = "default"
    trial_name: str = "default"
    logdir: str | None = None
    experiment_tag: str = ""


def _overrides(obj: object, name: str) -> bool:
    """Whether ``obj``'s class overrides the legacy 1.x hook ``name`` (such as ``_setup``):
    the base class defines each one as a default, so ``super()._setup(config)`` works."""
    return getattr(type(obj), name, None) is not getattr(Trainable, name)


def _warn_legacy(old: str, new: str) -> None:
    warnings.warn(
        f"Trainable.{old} is deprecated; override Trainable.{new} instead.",
        DeprecationWarning,
        stacklevel=3,
    )


def get_node_ip() -> str:
    """This node's IP as Ray sees it if Ray runs in this process, else ``127.0.0.1``."""
    ray = sys.modules.get("ray")
    if ray is not None:
        try:
            if ray.is_initialized():
                return ray.util.get_node_ip_address()
        except Exception:  # a half-initialised Ray must not break results
            pass
    return "127.0.0.1"


class Trainable:
    """Abstract class for trainable models, functions, etc. (the 1.x class API).

    Override ``setup(config)``, ``step()`` (returns a dict of metrics) and, to support
    checkpointing, ``save_checkpoint(checkpoint_dir)`` and ``load_checkpoint(checkpoint)``.
    Optionally ``cleanup()``, ``reset_config(new_config)`` (for ``reuse_actors``) and the
    classmethod ``default_resource_request(config)``.

    Tune calls :meth:`train` (or :meth:`train_batch`) repeatedly; each call runs one
    ``step()`` and fills in the automatic result fields (``training_iteration``,
    ``time_this_iter_s``, ``time_total_s``, ``done``...).

    Args:
        config: Hyperparameters and other configs given to ``setup``. Default ``{}``.
        logger_creator: Optional ``fn(config) -> Logger``; the logger's ``logdir`` becomes
            the trainable's logdir and it receives every result (1.x compatibility).
            Outside Tune without one, results go to ``result.json``/``progress.csv`` in
            the logdir (1.x's default ``UnifiedLogger``).
        trial_info: The trial this trainable runs for; None outside Tune.
    """

    def __init__(
        self,
        config: dict | None = None,
        logger_creator: Callable[[dict], Any] | None = None,
        trial_info: TrialInfo | None = None,
    ) -> None:
        self.config = config if config is not None else {}
        self._trial_info = trial_info or TrialInfo()
        self._result_logger = logger_creator(self.config) if logger_creator else None
        self._logdir = getattr(self._result_logger, "logdir", None) or self._trial_info.logdir
        # Made outside Tune with no logger: its results go to result.json/progress.csv in
        # its logdir (1.x's default UnifiedLogger), made with the first result.
        self._default_logger = trial_info is None and logger_creator is None
        self._reset_counters()
        self._hostname = _hostname()
        self._pid = os.getpid()
        self._node_ip: str | None = None
        self._pending_error: BaseException | None = None
        self._aio: EventLoopThread | HostedLoop | None = None
        start = time.time()
        self._resolve(self.setup(copy.deepcopy(self.config)))
        setup_time = time.time() - start
        if setup_time > SETUP_TIME_THRESHOLD_S:
            logger.info(
                "Trainable.setup took %.3f seconds. If your trainable is slow to initialize, "
                "consider setting reuse_actors=True to reduce actor creation overheads.",
                setup_time,
            )

    def _reset_counters(self) -> None:
        self._experiment_id = uuid.uuid4().hex
        self._iteration = 0
        self._time_total = 0.0
        self._timesteps_total: float | None = None
        self._episodes_total: float | None = None
        self._time_since_restore = 0.0
        self._timesteps_since_restore = 0
        self._iterations_since_restore = 0
        self._restored = False

    # -- async methods ---------------------------------------------------------------------

    def _resolve(self, value: Any) -> Any:
        """What a (possibly ``async def``) method returned, awaited on the trainable's loop.

        ``setup``, ``step``, ``save_checkpoint``, ``load_checkpoint``, ``reset_config``
        and ``cleanup`` may be coroutines: they run on an event loop in a thread of its
        own (one per trainable), while Tune's calls keep their synchronous interface.
        """
        if not inspect.isawaitable(value):
            return value
        return self._runner().run(value)

    def _runner(self) -> EventLoopThread | HostedLoop:
        if self._aio is None:
            self._aio = loop_runner(f"tune-async-{self.trial_name}")
        return self._aio

    async def _aresolve(self, value: Any) -> Any:
        """``_resolve`` for a caller on the trainable's hosted loop (never blocks it)."""
        if not inspect.isawaitable(value):
            return value
        return await self._runner().arun(value)

    def cancel(self) -> None:
        """Cancel a running step (thread-safe; called while a batch may be running).

        An ``async def step`` gets ``asyncio.CancelledError`` where it awaits; a plain
        step cannot be interrupted and finishes. Tune calls :meth:`stop` afterwards.
        """
        if self._aio is not None:
            self._aio.cancel_running()

    # -- methods for subclasses -----------------------------------------------------------

    def setup(self, config: dict) -> None:
        """Subclasses set up the model/state here (gets a copy of ``config``)."""
        if _overrides(self, "_setup"):
            _warn_legacy("_setup", "setup")
            self._setup(config)

    def step(self) -> dict:
        """Subclasses run one logical iteration and return a dict of metrics."""
        if _overrides(self, "_train"):
            _warn_legacy("_train", "step")
            return self._train()
        raise NotImplementedError(f"{type(self).__name__} must implement step().")

    def save_checkpoint(self, checkpoint_dir: str) -> str | dict:
        """Subclasses save state into ``checkpoint_dir``; return a path inside it or a dict."""
        if _overrides(self, "_save"):
            _warn_legacy("_save", "save_checkpoint")
            return self._save(checkpoint_dir)
        raise NotImplementedError(f"{type(self).__name__} does not implement save_checkpoint().")

    def load_checkpoint(self, checkpoint: str | dict) -> None:
        """Subclasses restore state from what ``save_checkpoint`` returned."""
        if _overrides(self, "_restore"):
            _warn_legacy("_restore", "load_checkpoint")
            self._restore(checkpoint)
            return
        raise NotImplementedError(f"{type(self).__name__} does not implement load_checkpoint().")

    def cleanup(self) -> None:
        """Subclasses release resources here; called by :meth:`stop`."""
        if _overrides(self, "_stop"):
            _warn_legacy("_stop", "cleanup")
            self._stop()

    def reset_config(self, new_config: dict) -> bool:
        """Subclasses may apply ``new_config`` in place and return True (actor reuse)."""
        return False

    def log_result(self, result: dict) -> None:
        """Called with every result; by default forwards it to the ``logger_creator`` logger."""
        if _overrides(self, "_log_result"):
            _warn_legacy("_log_result", "log_result")
        self._log_result(result)

    # -- legacy 1.x hooks (deprecated): defaults, so ``super()._setup(config)`` etc. work ---

    def _setup(self, config: dict) -> None:
        """Deprecated: override :meth:`setup`."""

    def _train(self) -> dict:
        """Deprecated: override :meth:`step`."""
        raise NotImplementedError

    def _save(self, tmp_checkpoint_dir: str) -> str | dict:
        """Deprecated: override :meth:`save_checkpoint`."""
        raise NotImplementedError

    def _restore(self, checkpoint: str | dict) -> None:
        """Deprecated: override :meth:`load_checkpoint`."""
        raise NotImplementedError

    def _stop(self) -> None:
        """Deprecated: override :meth:`cleanup`."""

    def _log_result(self, result: dict) -> None:
        """Deprecated: override :meth:`log_result`; forwards to the ``logger_creator`` logger
        (outside Tune, with none, to 1.x's default ``UnifiedLogger`` in the logdir)."""
        if self._result_logger is None and self._default_logger:
            from tune_async.logger import UnifiedLogger

            self._result_logger = UnifiedLogger(self.config, self.logdir)
        if self._result_logger is not None:
            self._result_logger.on_result(result)

    @classmethod
    def default_resource_request(cls, config: dict) -> Any:
        """Resources (or a PlacementGroupFactory) this trainable needs; None = defaults."""
        return None

    @classmethod
    def resource_help(cls, config: dict) -> str:
        """A help string about the resources this trainable uses."""
        return ""

    def _export_model(self, export_formats: list[str], export_dir: str) -> dict:
        """Subclasses export the model; return ``{format: path}``."""
        return {}

    # -- properties ----------------------------------------------------------------------

    @property
    def logdir(self) -> str:
        """Directory of the trainable's results (made on first use outside Tune)."""
        if self._logdir is None:
            base = default_results_dir()
            os.makedirs(base, exist_ok=True)
            prefix = f"{type(self).__name__}_{date_str()}"
            self._logdir = tempfile.mkdtemp(prefix=prefix, dir=base)
        return self._logdir

    @property
    def trial_name(self) -> str:
        """The trial's name (``"default"`` outside Tune)."""
        return self._trial_info.trial_name

    @property
    def trial_id(self) -> str:
        """The trial's id (``"default"`` outside Tune)."""
        return self._trial_info.trial_id

    @property
    def iteration(self) -> int:
        """Number of results so far (``training_iteration`` of the last result)."""
        return self._iteration

    @property
    def training_iteration(self) -> int:
        """Alias of :attr:`iteration`."""
        return self._iteration

    def get_config(self) -> dict:
        """The config this trainable runs with."""
        return self.config

    def get_current_ip(self) -> str:
        """This node's IP address."""
        if self._node_ip is None:
            self._node_ip = get_node_ip()
        return self._node_ip

    # -- methods Tune calls ---------------------------------------------------------------

    def train(self) -> dict:
        """Run one ``step()`` and return its result with the automatic fields filled in."""
        start = time.time()
        result = self._resolve(self.step())
        if not isinstance(result, dict):
            raise TypeError(
                f"{type(self).__name__}.step() must return a dict of metrics, "
                f"got {type(result).__name__}."
            )
        return self._process_result(dict(result), time.time() - start)

    def train_batch(self, max_results: int, window_s: float,
                    stop: dict | None = None) -> list[dict]:
        """Run :meth:`train` repeatedly and return the results.

        Returns after ``max_results`` results, at a result with ``done`` or
        ``should_checkpoint``, at the first result meeting the ``stop`` criteria, or
        once ``window_s`` seconds have passed since the call began; always with at
        least one result. If a step raises after some results, those are returned and
        the error is raised by the next call.

        Args:
            max_results: Most results to return (>= 1).
            window_s: Time after which no further step is started.
            stop: Dict stop criteria (``tune.run(stop={...})``): no step runs after
                a result that meets them, so the trainable never trains past its stop.
        """
        if max_results < 1:
            raise ValueError(f"train_batch: max_results must be >= 1, got {max_results}.")
        self._raise_pending_error()
        deadline = time.monotonic() + window_s
        results = [self.train()]
        while not ends_batch(results[-1], stop) and len(results) < max_results:
            if time.monotonic() >= deadline:
                break
            try:
                results.append(self.train())
            except BaseException as exc:
                self._pending_error = exc
                break
        return results

    def train_buffered(self, buffer_time_s: float, max_buffer_length: int = 1000) -> list[dict]:
        """1.x's name for :meth:`train_batch`: results of :meth:`train` calls until
        ``buffer_time_s`` passed (at least one), ``max_buffer_length`` of them, a done
        result or a checkpoint."""
        return self.train_batch(max_buffer_length, buffer_time_s)

    def delete_checkpoint(self, checkpoint_path: str) -> None:
        """Delete the checkpoint directory holding ``checkpoint_path`` (1.x). Tune prunes
        checkpoints from the driver, without calling this."""
        from tune_async.utils.trainable import TrainableUtil

        try:
            checkpoint_dir = TrainableUtil.find_checkpoint_dir(checkpoint_path)
        except FileNotFoundError:
            logger.warning("Checkpoint path not found during deletion: %s", checkpoint_path)
        else:
            shutil.rmtree(checkpoint_dir)

    async def atrain(self) -> dict:
        """:meth:`train` on a trial host's shared loop (``async def step``)."""
        start = time.time()
        result = await self._aresolve(self.step())
        if not isinstance(result, dict):
            raise TypeError(
                f"{type(self).__name__}.step() must return a dict of metrics, "
                f"got {type(result).__name__}."
            )
        return self._process_result(dict(result), time.time() - start)

    async def atrain_batch(self, max_results: int, window_s: float,
                           stop: dict | None = None) -> list[dict]:
        """:meth:`train_batch` on a trial host's shared loop: the same batch rules."""
        if max_results < 1:
            raise ValueError(f"train_batch: max_results must be >= 1, got {max_results}.")
        self._raise_pending_error()
        deadline = time.monotonic() + window_s
        results = [await self.atrain()]
        while not ends_batch(results[-1], stop) and len(results) < max_results:
            if time.monotonic() >= deadline:
                break
            try:
                results.append(await self.atrain())
            except asyncio.CancelledError:
                if _being_cancelled():  # the host call itself is cancelled: let it through
                    raise
                self._pending_error = asyncio.CancelledError()
                break
            except Exception as exc:
                self._pending_error = exc
                break
        return results

    def _raise_pending_error(self) -> None:
        if self._pending_error is not None:
            exc, self._pending_error = self._pending_error, None
            raise exc

    def _process_result(self, result: dict, measured_time: float) -> dict:
        """Count the result and fill in the automatic fields (1.x ``Trainable.train``)."""
        self._iteration += 1
        self._iterations_since_restore += 1
        time_this_iter = result.get(TIME_THIS_ITER_S)
        if time_this_iter is None:
            time_this_iter = measured_time
        self._time_total += time_this_iter
        self._time_since_restore += time_this_iter
        result.setdefault(DONE, False)
        steps = result.get(TIMESTEPS_THIS_ITER)
        if steps is not None:
            self._timesteps_total = (self._timesteps_total or 0) + steps
            self._timesteps_since_restore += steps
        episodes = result.get(EPISODES_THIS_ITER)
        if episodes is not None:
            self._episodes_total = (self._episodes_total or 0) + episodes
        # Always present, None until the trainable reports increments (1.x); a total the
        # trainable reports itself wins.
        result.setdefault(TIMESTEPS_TOTAL, self._timesteps_total)
        result.setdefault(EPISODES_TOTAL, self._episodes_total)
        # A value the trainable reports itself wins (1.x); no neg_mean_loss for a zero loss.
        result.setdefault(TRAINING_ITERATION, self._iteration)
        if result.get(MEAN_LOSS):
            result.setdefault(NEG_MEAN_LOSS, -result[MEAN_LOSS])
        now = time.time()
        result[EXPERIMENT_ID] = self._experiment_id
        result[DATE] = date_str(now)  # (formatted once a second, not per result)
        result[TIMESTAMP] = int(now)
        result[TIME_THIS_ITER_S] = time_this_iter
        result[TIME_TOTAL_S] = self._time_total
        result[PID] = self._pid
        result[HOSTNAME] = self._hostname
        result[NODE_IP] = self.get_current_ip()
        result[CONFIG] = self.config
        result[TIME_SINCE_RESTORE] = self._time_since_restore
        result[TIMESTEPS_SINCE_RESTORE] = self._timesteps_since_restore
        result[ITERATIONS_SINCE_RESTORE] = self._iterations_since_restore
        self.log_result(result)
        return result

    def reset(self, new_config: dict, trial_info: TrialInfo | None = None) -> bool:
        """Reuse this trainable for a new trial; True if ``reset_config`` accepted it.

        On success the counters, the experiment id and the trial info (logdir) are reset.
        """
        old_config, old_info = self.config, self._trial_info
        self.config = new_config
        self._trial_info = trial_info or TrialInfo()
        if not self._resolve(self.reset_config(new_config)):
            self.config, self._trial_info = old_config, old_info
            return False
        self._logdir = self._trial_info.logdir
        self._pending_error = None
        self._reset_counters()
        return True

    def stop(self) -> None:
        """Release resources: calls ``cleanup()`` and closes the logger."""
        try:
            self._resolve(self.cleanup())
        finally:
            if self._aio is not None:
                self._aio.close()
            if self._result_logger is not None and hasattr(self._result_logger, "close"):
                self._result_logger.close()

    # -- checkpoints ----------------------------------------------------------------------

    def save(self, checkpoint_dir: str | None = None) -> str:
        """Save a checkpoint into ``<checkpoint_dir or logdir>/checkpoint_<iteration>``.

        Returns the checkpoint path (what ``save_checkpoint`` returned, or the pickle of
        its dict); :meth:`restore` takes it.
        """
        return self._save_to(checkpoint_dir or self.logdir)[1]

    def _save_to(self, parent: str) -> tuple[str, str]:
        """Save; return (checkpoint directory, checkpoint path)."""
        ckpt_dir = os.path.join(parent, f"checkpoint_{self._iteration:06d}")
        os.makedirs(ckpt_dir, exist_ok=True)
        open(os.path.join(ckpt_dir, ".is_checkpoint"), "a").close()
        checkpoint = self._resolve(self.save_checkpoint(ckpt_dir))
        saved_as_dict = isinstance(checkpoint, dict)
        if saved_as_dict:
            path = os.path.join(ckpt_dir, CHECKPOINT_PICKLE)
            with open(path, "wb") as f:
                pickle.dump(checkpoint, f)
        elif isinstance(checkpoint, (str, os.PathLike)):
            path = os.path.abspath(os.fspath(checkpoint))
            if os.path.commonpath([path, os.path.abspath(ckpt_dir)]) != os.path.abspath(ckpt_dir):
                raise ValueError(
                    "The returned checkpoint path must be within the given checkpoint dir "
                    f"{ckpt_dir}; save_checkpoint returned {path}."
                )
        else:
            raise ValueError(
                "save_checkpoint must return a path inside the checkpoint dir or a dict, "
                f"got {type(checkpoint).__name__}."
            )
        self._write_metadata(path, saved_as_dict)
        return ckpt_dir, path

    def _metadata(self, saved_as_dict: bool) -> dict:
        return {
            "iteration": self._iteration,
            "time_total": self._time_total,
            "timesteps_total": self._timesteps_total,
            "episodes_total": self._episodes_total,
            "saved_as_dict": saved_as_dict,
            "experiment_id": self._experiment_id,
            "ray_version": _ray_version(),
        }

    def _write_metadata(self, path: str, saved_as_dict: bool, **overrides: Any) -> None:
        with open(_metadata_path(path), "wb") as f:
            pickle.dump({**self._metadata(saved_as_dict), **overrides}, f)

    def _read_metadata(self, path: str) -> dict:
        meta_path = _metadata_path(path)
        if not os.path.exists(meta_path):
            found = _find_metadata(path) if os.path.isdir(path) else None
            if found is None:
                raise ValueError(f"No checkpoint metadata found for {path}.")
            meta_path = found
        with open(meta_path, "rb") as f:
            return pickle.load(f)

    def _apply_metadata(self, meta: dict) -> None:
        # Kept across save/restore (1.x); checkpoints written before it was saved lack it.
        self._experiment_id = meta.get("experiment_id", self._experiment_id)
        self._iteration = meta["iteration"]
        self._time_total = meta["time_total"]
        self._timesteps_total = meta["timesteps_total"]
        self._episodes_total = meta["episodes_total"]
        self._time_since_restore = 0.0
        self._timesteps_since_restore = 0
        self._iterations_since_restore = 0
        self._restored = True

    def restore(self, checkpoint_path: str) -> None:
        """Restore from a path :meth:`save` returned; the counters continue from it."""
        meta = self._read_metadata(checkpoint_path)
        if os.path.isdir(checkpoint_path) and not os.path.exists(_metadata_path(checkpoint_path)):
            checkpoint_path = _find_metadata(checkpoint_path)[: -len(METADATA_SUFFIX)]
        if meta.get("saved_as_dict"):
            with open(checkpoint_path, "rb") as f:
                state = pickle.load(f)
            state["tune_checkpoint_path"] = checkpoint_path
            self._resolve(self.load_checkpoint(state))
        else:
            self._resolve(self.load_checkpoint(checkpoint_path))
        self._apply_metadata(meta)

    def save_to_object(self) -> bytes:
        """Save a checkpoint and return it as bytes (an in-memory checkpoint)."""
        tmp = tempfile.mkdtemp(prefix="tune_save_")
        try:
            ckpt_dir, path = self._save_to(tmp)
            return _pack(ckpt_dir, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def restore_from_object(self, obj: bytes) -> None:
        """Restore from bytes :meth:`save_to_object` returned.

        They are unpacked into a ``checkpoint_tmp*`` directory in the logdir, removed
        once restored (as in 1.x).
        """
        target = tempfile.mkdtemp(prefix="checkpoint_tmp", dir=self.logdir)
        try:
            self.restore(_unpack(obj, target))
        finally:
            shutil.rmtree(target, ignore_errors=True)

    def export_model(self, export_formats: str | list[str], export_dir: str | None = None) -> dict:
        """Export the model with ``_export_model``; returns ``{format: path}``."""
        formats = [export_formats] if isinstance(export_formats, str) else list(export_formats)
        return self._export_model(formats, export_dir or self.logdir)


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def is_async_trainable(cls: type) -> bool:
    """Whether ``cls``'s steps are coroutines (an ``async def step`` or an async function):
    such trials can share one process's event loop (``trials_per_worker``)."""
    if getattr(cls, "_tune_async_steps", False):
        return True
    return isinstance(cls, type) and issubclass(cls, Trainable) and inspect.iscoroutinefunction(
        getattr(cls, "step", None))


def exports_models(cls: type) -> bool:
    """Whether trials of ``cls`` export anything for ``export_formats`` (1.x: a trainable
    without its own ``_export_model``, e.g. any function trainable, exports nothing)."""
    if getattr(cls, "_export_model", None) is not Trainable._export_model:
        return True
    _warn_nothing_exported(getattr(cls, "__name__", repr(cls)))
    return False


@functools.cache
def _warn_nothing_exported(name: str) -> None:
    logger.warning(
        "export_formats has no effect for %s: it does not implement _export_model(export_formats,"
        " export_dir) (function trainables never do), so its trials export nothing.", name)


def _metadata_path(path: str) -> str:
    if os.path.isdir(path):
        return os.path.join(path, METADATA_SUFFIX)
    return path + METADATA_SUFFIX


def _find_metadata(directory: str) -> str | None:
    found = []
    for root, _dirs, files in os.walk(directory):
        found.extend(os.path.join(root, f) for f in files if f.endswith(METADATA_SUFFIX))
    if len(found) > 1:
        raise ValueError(f"Found {len(found)} checkpoint metadata files in {directory}; expected 1.")
    return found[0] if found else None


def _pack(ckpt_dir: str, path: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(ckpt_dir, arcname=".")
    rel = os.path.relpath(path, ckpt_dir)
    return pickle.dumps({"relpath": rel, "tar": buf.getvalue()})


def _unpack(obj: bytes, target: str) -> str:
    data = pickle.loads(obj)
    with tarfile.open(fileobj=io.BytesIO(data["tar"]), mode="r") as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(target, filter="data")
        else:  # pragma: no cover - Pythons without extraction filters
            tar.extractall(target)
    return os.path.normpath(os.path.join(target, data["relpath"]))
