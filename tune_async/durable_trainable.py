"""``DurableTrainable`` and ``tune.durable``: trainables that keep their checkpoints in
``upload_dir`` themselves (mirrors ``ray.tune.durable_trainable``).

A durable trainable uploads each checkpoint it takes to
``<upload_dir>/<experiment>/<trial dirname>/checkpoint_<n>`` before Tune sees it, from
its own process (the trial actor: blocking there is fine, as in 1.x), and downloads a
checkpoint missing on its node before restoring from it. So a trial restores on any
node, also one that never held its files, and with ``sync_to_driver=False`` no
checkpoint needs to pass through the driver. Checkpoints that ``keep_checkpoints_num``
prunes are deleted from ``upload_dir`` too (by the driver, :class:`DurablePruner`).

``tune.run`` tells the trainable where ``upload_dir`` is (:func:`bind_to_run`); a
durable trainable without one is refused before any trial starts (1.x's error).
"""

from __future__ import annotations

import inspect
import logging
import os
import shutil
from collections.abc import Callable
from typing import Any

from tune_async.callback import Callback
from tune_async.checkpoint import checkpoint_dir_of
from tune_async.result import CHECKPOINT_PATH
from tune_async.trainable.trainable import Trainable

logger = logging.getLogger(__name__)

# 1.x's message (ray/tune/experiment.py, _raise_on_durable), kept word for word.
NO_UPLOAD_DIR = ("EXPERIMENTAL: DurableTrainable will automatically sync results to the "
                 "provided upload_dir. `upload_dir` must be provided.")


def join_url(base: str, *parts: str) -> str:
    """``base/part/...`` with '/' separators (a URL or a path)."""
    pieces = [base.rstrip("/")] + [p.replace(os.sep, "/").strip("/") for p in parts]
    return "/".join(p for p in pieces if p)


def trial_remote_dir(upload_dir: str, logdir: str) -> str:
    """``<upload_dir>/<experiment dirname>/<trial dirname>`` for a trial directory."""
    logdir = os.path.normpath(logdir)
    return join_url(upload_dir, os.path.basename(os.path.dirname(logdir)),
                    os.path.basename(logdir))


class DurableTrainable(Trainable):
    """A trainable whose checkpoints are kept in remote storage (``upload_dir``).

    Implement it like a :class:`~tune_async.Trainable` (``setup``, ``step``,
    ``save_checkpoint``, ``load_checkpoint``...). Each checkpoint is uploaded to
    :attr:`remote_checkpoint_dir` when it is taken (``save`` returns once it is
    stored: it is then committed), and :meth:`restore` downloads a checkpoint missing
    locally first. Run it with ``sync_config=tune.SyncConfig(upload_dir=...)``; the
    storage is ``upload_dir``'s fsspec filesystem, or ``SyncConfig.sync_to_cloud``, or
    the ``sync_function`` given to :func:`durable`.

    Args:
        remote_checkpoint_dir: Where this trial's checkpoints go (1.x's constructor
            argument). Default: ``<upload_dir>/<experiment>/<trial dirname>`` of the run.
        Other arguments: those of :class:`~tune_async.Trainable`.
    """

    # Set per run by tune.run (bind_to_run): the run's upload_dir and transfer.
    _upload_dir: str | None = None
    _run_sync_to_cloud: Any = None
    # durable(trainable, sync_function=...): a command template or fn(source, target).
    _sync_function: Any = None

    def __init__(self, *args: Any, remote_checkpoint_dir: str | None = None,
                 **kwargs: Any) -> None:
        if args and isinstance(args[0], str):  # 1.x: DurableTrainable(remote_dir, config, ...)
            remote_checkpoint_dir, args = args[0], args[1:]
        self._remote_dir_given = remote_checkpoint_dir
        self._storage: Any = None
        super().__init__(*args, **kwargs)

    # -- where ---------------------------------------------------------------------------
    @property
    def remote_checkpoint_dir(self) -> str | None:
        """This trial's directory in remote storage (None: nowhere to upload)."""
        if self._remote_dir_given:
            return self._remote_dir_given
        if not self._upload_dir:
            return None
        return trial_remote_dir(self._upload_dir, self.logdir)

    @property
    def restores_from_upload_dir(self) -> bool:
        """True when a checkpoint missing locally comes from remote storage."""
        return self.remote_checkpoint_dir is not None

    @property
    def storage(self) -> Any:
        """The :class:`~tune_async.sync.Storage` checkpoints travel through (made at the
        first transfer, in the trainable's process)."""
        if self._storage is None:
            from tune_async.sync.storage import get_storage

            spec = self._sync_function or self._run_sync_to_cloud or self.remote_checkpoint_dir
            self._storage = get_storage(spec)
        return self._storage

    def _remote_path(self, local_dir: str, own_only: bool = False) -> str | None:
        """Where ``local_dir`` (a checkpoint directory) is kept remotely: under this
        trial's remote dir, or beside it for another trial's of the same experiment (a
        PBT exploit restores from one)."""
        remote = self.remote_checkpoint_dir
        if remote is None:
            _warn_not_durable(type(self).__name__)
            return None
        local_dir, logdir = os.path.abspath(local_dir), os.path.abspath(self.logdir)
        rel = os.path.relpath(local_dir, logdir)
        if rel != os.curdir and not rel.startswith(os.pardir):
            return join_url(remote, rel)
        rel = os.path.relpath(local_dir, os.path.dirname(logdir))
        if own_only or rel.startswith(os.pardir) or os.sep not in rel:
            raise ValueError("`checkpoint_dir` must be `self.logdir`, or a sub-directory "
                             f"(durable checkpoints are stored relative to it); got {local_dir}")
        return join_url(remote.rstrip("/").rsplit("/", 1)[0], rel)

    # -- transfers -------------------------------------------------------------------------
    def upload_checkpoint(self, checkpoint_path: str) -> str | None:
        """Upload the checkpoint directory holding ``checkpoint_path``; returns its URL
        (None when there is no remote dir)."""
        local_dir = checkpoint_dir_of(checkpoint_path)
        remote = self._remote_path(local_dir)
        if remote is not None:
            self.storage.upload_dir(local_dir, remote)
        return remote

    def download_checkpoint(self, checkpoint_path: str) -> None:
        """Fetch the checkpoint's directory from remote storage when it is not here."""
        if os.path.exists(checkpoint_path):
            return
        local_dir = _checkpoint_dir_for_missing(checkpoint_path)
        try:
            remote = self._remote_path(local_dir)
        except ValueError:
            raise FileNotFoundError(
                f"Checkpoint {checkpoint_path} is not here, and it is no checkpoint of this "
                "experiment's trials, so upload_dir does not hold it either") from None
        if remote is None:
            return
        if not self.storage.exists(remote):
            raise FileNotFoundError(
                f"Checkpoint {checkpoint_path} is neither here nor in remote storage "
                f"({remote})")
        self.storage.download_dir(remote, local_dir)

    # -- what Tune calls -------------------------------------------------------------------
    def save(self, checkpoint_dir: str | None = None) -> str:
        """Save a checkpoint (see :meth:`Trainable.save`) and upload it; ``checkpoint_dir``
        must be ``logdir`` or inside it."""
        if checkpoint_dir is not None and self.remote_checkpoint_dir is not None:
            self._remote_path(os.path.join(checkpoint_dir, "checkpoint"), own_only=True)
        path = super().save(checkpoint_dir)
        self.upload_checkpoint(path)
        return path

    def train_batch(self, max_results: int, window_s: float,
                    stop: dict | None = None) -> list[dict]:
        """:meth:`Trainable.train_batch`, uploading the checkpoints its results carry (a
        function trainable's ``tune.checkpoint_dir``) before Tune sees them."""
        results = super().train_batch(max_results, window_s, stop)
        for result in results:
            path = result.get(CHECKPOINT_PATH)
            if path:
                self.upload_checkpoint(path)
        return results

    async def atrain_batch(self, max_results: int, window_s: float,
                           stop: dict | None = None) -> list[dict]:
        """The same for a trial on a shared event loop: uploads run in a worker thread,
        so the loop's other trials go on meanwhile."""
        import asyncio

        results = await super().atrain_batch(max_results, window_s, stop)  # type: ignore[misc]
        for result in results:
            path = result.get(CHECKPOINT_PATH)
            if path:
                await asyncio.to_thread(self.upload_checkpoint, path)
        return results

    def restore(self, checkpoint_path: str) -> None:
        """Restore from ``checkpoint_path``, downloading it first if it is not here."""
        self.download_checkpoint(checkpoint_path)
        super().restore(checkpoint_path)

    def delete_checkpoint(self, checkpoint_path: str) -> None:
        """Delete the checkpoint's directory here and in remote storage."""
        local_dir = checkpoint_dir_of(checkpoint_path)
        remote = self._remote_path(local_dir)
        if remote is not None:
            self.storage.delete(remote)
        shutil.rmtree(local_dir, ignore_errors=True)


def _checkpoint_dir_for_missing(path: str) -> str:
    """The ``checkpoint_*`` directory of a path that does not exist (yet)."""
    probe = os.path.abspath(path)
    while probe != os.path.dirname(probe):
        if os.path.basename(probe).startswith("checkpoint_"):
            return probe
        probe = os.path.dirname(probe)
    return os.path.dirname(os.path.abspath(path))


_warned: set[str] = set()


def _warn_not_durable(name: str) -> None:
    if name not in _warned:
        _warned.add(name)
        logger.warning("%s has no remote_checkpoint_dir (no upload_dir): its checkpoints "
                       "stay local only.", name)


# ---- tune.durable --------------------------------------------------------------------------
def durable(trainable: str | type | Callable, sync_function: Any = None) -> type:
    """Convert a trainable (class, function or registered name) into a durable one.

    Its checkpoints are uploaded to ``upload_dir`` as they are taken and fetched from
    there to restore (see :class:`DurableTrainable`). Run it with
    ``sync_config=tune.SyncConfig(upload_dir=...)``::

        tune.run(tune.durable(train_fn), config=..., sync_config=tune.SyncConfig(
            upload_dir="s3://bucket/experiments"))

    Args:
        trainable: A Trainable subclass, a function, or a registered trainable's name.
        sync_function: How checkpoints travel: a command template with ``{source}``
            and ``{target}`` or a function ``fn(source, target)``. Default: the run's
            ``SyncConfig.sync_to_cloud``, else ``upload_dir``'s fsspec filesystem.

    Returns:
        A :class:`DurableTrainable` subclass running ``trainable``.

    Raises:
        ValueError: ``trainable`` is a class that does not inherit from Trainable.
    """
    from tune_async.registry import _name_of, get_trainable_cls
    from tune_async.trainable.function_trainable import wrap_function

    if isinstance(trainable, str):
        registered, cls = trainable, get_trainable_cls(trainable)
    else:  # registered under the name the plain trainable would have had (1.x)
        registered, cls = _name_of(trainable), trainable
    if not inspect.isclass(cls):
        cls = wrap_function(cls)
    elif not issubclass(cls, Trainable):
        raise ValueError(
            "You can only use `durable()` with valid trainables. The class you passed does "
            f"not inherit from `Trainable`. Please make sure it does. Got: {cls!r}")
    if issubclass(cls, DurableTrainable) and sync_function is None:
        return cls
    name = cls.__name__ if cls.__name__.isidentifier() else "DurableTrainable"
    namespace = {"_name": registered, "__module__": cls.__module__, "__qualname__": name}
    if sync_function is not None:
        _check_sync_function(sync_function)
        namespace["_sync_function"] = sync_function
    bases = (cls,) if issubclass(cls, DurableTrainable) else (DurableTrainable, cls)
    return type(name, bases, namespace)


def _check_sync_function(sync_function: Any) -> None:
    if callable(sync_function):
        return
    if isinstance(sync_function, str) and "{source}" in sync_function and (
            "{target}" in sync_function):
        return
    raise ValueError("durable(sync_function=...) must be a function (source, target) or a "
                     f"command template with {{source}} and {{target}}, got {sync_function!r}")


# ---- what tune.run does with durable trainables -------------------------------------------
def is_durable(trainable_cls: Any) -> bool:
    return inspect.isclass(trainable_cls) and issubclass(trainable_cls, DurableTrainable)


def bind_to_run(trainable_cls: type, upload_dir: str, sync_to_cloud: Any = None) -> type:
    """The durable class as this run runs it: it knows the run's ``upload_dir`` (and
    ``SyncConfig.sync_to_cloud``). A subclass made per run, so runs with different
    upload dirs never share settings; it is what the executors construct."""
    base = getattr(trainable_cls, "_unbound", trainable_cls)
    namespace = {"_upload_dir": upload_dir, "_run_sync_to_cloud": sync_to_cloud,
                 "_unbound": base, "__module__": base.__module__,
                 "__qualname__": base.__qualname__}
    return type(base.__name__, (base,), namespace)


def prepare_durable_experiments(experiments: list, sync_config: Any) -> DurablePruner | None:
    """Check durable trainables have an ``upload_dir`` and bind them to it.

    Returns the plugin that deletes their pruned checkpoints remotely (None when no
    experiment runs a durable trainable).

    Raises:
        ValueError: a durable trainable and no ``upload_dir`` (1.x's message).
    """
    specs: dict[str, tuple[str, Any]] = {}
    for exp in experiments:
        if not is_durable(exp.trainable_cls):
            continue
        # The same precedence as the experiment's own upload (tune_async.api._cloud_syncer).
        upload_dir = getattr(sync_config, "upload_dir", None) or exp.spec.get("upload_dir")
        if not upload_dir:
            raise ValueError(NO_UPLOAD_DIR)
        sync_to_cloud = getattr(sync_config, "sync_to_cloud", None)
        cls = exp.trainable_cls = bind_to_run(exp.trainable_cls, upload_dir, sync_to_cloud)
        specs[exp.run_identifier] = (upload_dir, cls._sync_function or sync_to_cloud or upload_dir)
    return DurablePruner(specs) if specs else None


class DurablePruner(Callback):
    """Deletes from ``upload_dir`` the durable checkpoints ``keep_checkpoints_num`` pruned.

    1.x deleted them through the trial's actor; here the driver does it (in a worker
    thread), so it also happens after the actor is gone.

    Args:
        specs: ``{trainable name: (upload_dir, storage spec)}`` of the durable trainables.
    """

    _trial_dir_later_ok = True  # never needs a trial directory at once (trial_dirs)

    def __init__(self, specs: dict[str, tuple[str, Any]]) -> None:
        import anyio

        self.specs = specs
        self.context: Any = None
        self._storages: dict[tuple, Any] = {}  # by (upload_dir, spec)
        self._known: dict[str, set[str]] = {}  # trial id -> its checkpoint dirs on record
        self._pending = 0
        self._idle = anyio.Event()
        self._idle.set()
        self.failures: list[str] = []  # deletions that failed (also logged)

    def setup(self, context: Any = None, **info: Any) -> None:
        self.context = context
        if context is not None:
            context.at_end(self._close, name="durable checkpoints (close storage)")

    def on_trial_start(self, trial: Any, **info: Any) -> None:
        if trial.trainable_name in self.specs:  # a resumed trial's checkpoints count too
            self._known_of(trial).update(c.dir for c in trial.checkpoint_manager.checkpoints
                                         if c.dir is not None)

    def on_checkpoint(self, trial: Any, checkpoint: Any, **info: Any) -> None:
        if trial.trainable_name not in self.specs or not trial.logdir:
            return
        if getattr(checkpoint, "dir", None) is None:
            return  # in memory: never uploaded
        known = self._known_of(trial)
        known.add(checkpoint.dir)
        kept = {c.dir for c in trial.checkpoint_manager.checkpoints}
        pruned = sorted(known - kept)
        if pruned and self.context is not None:
            known.difference_update(pruned)
            self._begin()
            upload_dir, spec = self.specs[trial.trainable_name]
            remote_trial = trial_remote_dir(upload_dir, trial.logdir)
            urls = [join_url(remote_trial, os.path.relpath(d, trial.logdir)) for d in pruned]
            self.context.start_soon(self._delete, self._storage(upload_dir, spec), urls,
                                    name=f"delete pruned durable checkpoints of {trial}")

    def _known_of(self, trial: Any) -> set[str]:
        return self._known.setdefault(trial.trial_id, set())

    def _begin(self) -> None:
        import anyio

        self._pending += 1
        if self._pending == 1:
            self._idle = anyio.Event()

    async def _delete(self, storage: Any, urls: list[str]) -> None:
        try:
            for url in urls:
                try:
                    await self.context.run_sync(storage.delete, url)
                except Exception as exc:  # noqa: BLE001 - a store away: reported, run goes on
                    message = f"Could not delete pruned checkpoint {url}: {exc}"
                    logger.warning(message)
                    self.failures.append(message)
        finally:
            self._pending -= 1
            if self._pending == 0:
                self._idle.set()

    def _storage(self, upload_dir: str, spec: Any) -> Any:
        from tune_async.sync.storage import get_storage, in_worker_process

        key = (upload_dir, spec if isinstance(spec, str) else id(spec))
        if key not in self._storages:
            storage = get_storage(spec)
            # A network store's client works in a process of its own (as the cloud
            # syncer's): its CPU work would hold the GIL the event loop needs.
            self._storages[key] = (in_worker_process(storage, upload_dir)
                                   if spec == upload_dir else storage)
        return self._storages[key]

    async def _close(self) -> None:
        import anyio

        with anyio.move_on_after(60):  # deletions in flight finish first
            await self._idle.wait()
        for storage in self._storages.values():
            close = getattr(storage, "close", None)
            if close is not None:
                await anyio.to_thread.run_sync(close)
