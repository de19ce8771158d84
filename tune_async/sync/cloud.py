"""The experiment directory mirrored to ``upload_dir/<name>/`` (``SyncConfig.upload_dir``).

:class:`CloudSyncer` is a plugin (a ``tune.Callback``) whose uploads are tasks of
the experiment's :class:`~tune_async.plugin_context.PluginContext`:

- every ``cloud_sync_period`` seconds of real time (a virtual clock never makes it
  spin), at each checkpoint when ``sync_on_checkpoint`` (the checkpoint is held
  until that upload ends, so pruning never deletes it mid-upload), and once at the
  end, after the final experiment state is written (``context.at_end``), within
  ``TUNE_SYNC_END_TIMEOUT_S`` (60 s);
- the uploads run in worker threads; one at a time per directory: requests that
  arrive while one runs become one follow-up;
- a failing upload is retried with exponential backoff (``TUNE_SYNC_TRIES`` tries,
  from ``TUNE_SYNC_BACKOFF_S``) and then reported as a warning naming the URL, the
  error and what is not uploaded yet; nothing local is ever deleted for it, and the
  next sync sends what is missing.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from typing import Any

import anyio

from tune_async.callback import Callback
from tune_async.sync.storage import Storage, get_storage, in_worker_process
from tune_async.utils.util import env_number

logger = logging.getLogger(__name__)

MIN_PERIOD_S = 1.0  # cloud_sync_period=0: as often as this, not a busy loop


def remote_experiment_url(upload_dir: str, experiment_dir: str) -> str:
    """``upload_dir/<experiment name>``."""
    name = os.path.basename(os.path.normpath(experiment_dir))
    return upload_dir.rstrip("/") + "/" + name


def storage_for(sync_config: Any, upload_dir: str) -> Storage:
    """The storage a SyncConfig asks for: ``sync_to_cloud`` if given, else ``upload_dir``'s
    fsspec filesystem (working in a process of its own for a network store)."""
    if sync_config.sync_to_cloud:
        return get_storage(sync_config.sync_to_cloud)
    return in_worker_process(get_storage(upload_dir), upload_dir)


def not_uploaded(storage: Storage, local_dir: str, remote_url: str) -> list[str] | None:
    """Files of ``local_dir`` the last uploads did not send (None when unknowable:
    a command or function storage keeps no manifest)."""
    pending = getattr(storage, "pending", None)
    return pending(local_dir, remote_url) if pending is not None else None


class CloudSyncer(Callback):
    """Mirrors the experiment directory to ``remote_url`` (see the module docstring).

    Args:
        experiment_dir: The local experiment directory.
        remote_url: Where it goes (``upload_dir/<name>``).
        storage: How (:func:`~tune_async.sync.storage.get_storage`).
        period_s: Seconds between periodic syncs (``cloud_sync_period``).
        sync_on_checkpoint: Also sync at each checkpoint.
    """

    _trial_dir_later_ok = True  # never needs a trial directory at once (trial_dirs)

    def __init__(self, experiment_dir: str, remote_url: str, storage: Storage,
                 period_s: float = 300.0, sync_on_checkpoint: bool = True) -> None:
        self.local_dir = experiment_dir
        self.remote_url = remote_url
        self.storage = storage
        self.period_s = max(float(period_s), MIN_PERIOD_S)
        self.sync_on_checkpoint = sync_on_checkpoint
        self.tries = max(1, int(env_number("TUNE_SYNC_TRIES", 3)))
        self.backoff_s = env_number("TUNE_SYNC_BACKOFF_S", 1.0)
        self.end_timeout_s = env_number("TUNE_SYNC_END_TIMEOUT_S", 60.0)
        self.context: Any = None
        self.syncs_done = 0  # uploads that succeeded (tests, benchmarks)
        self.last_error: BaseException | None = None
        self.final_sync_s: float | None = None  # how long the final sync took
        self._running = False
        self._requested = False
        self._on_done: list[Callable[[], None]] = []  # run when the next sync ends
        self._next_done = anyio.Event()
        self._idle = anyio.Event()  # set while no sync runs
        self._idle.set()
        self._finished = False  # the final sync began

    @classmethod
    def from_config(cls, sync_config: Any, experiment_dir: str,
                    upload_dir: str) -> CloudSyncer:
        return cls(experiment_dir, remote_experiment_url(upload_dir, experiment_dir),
                   storage_for(sync_config, upload_dir), sync_config.cloud_sync_period,
                   sync_config.sync_on_checkpoint)

    # ---- plugin hooks ----------------------------------------------------------------
    def setup(self, context: Any = None, **info: Any) -> None:
        self.context = context
        context.start_soon(self._periodic, name="cloud sync (periodic)")
        context.at_end(self._final_sync, name="cloud sync (final)")

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any,
                      **info: Any) -> None:
        if not self.sync_on_checkpoint or getattr(checkpoint, "dir", None) is None:
            return
        self.request(on_done=self.context.hold_checkpoint(checkpoint.dir))

    # ---- requests, coalesced ----------------------------------------------------------
    def request(self, on_done: Callable[[], None] | None = None) -> anyio.Event:
        """Ask for a sync; returns an event set when a sync started after now has ended.

        While one runs, requests wait for a single follow-up sync.
        """
        if on_done is not None:
            self._on_done.append(on_done)
        if self._finished:  # after the final sync: nothing more goes up
            for release in self._take_on_done():
                release()
            done = anyio.Event()
            done.set()
            return done
        self._requested = True
        done = self._next_done
        if not self._running:
            self._begin()
            self.context.start_soon(self._drain, name="cloud sync")
        return done

    async def sync_now(self) -> bool:
        """Sync and wait for it; True if that sync succeeded."""
        await self.request().wait()
        return self.last_error is None

    def _begin(self) -> None:
        self._running = True
        self._idle = anyio.Event()

    def _end(self) -> None:
        self._running = False
        self._idle.set()

    async def _drain(self) -> None:
        try:
            while self._requested:
                self._requested = False
                await self._sync_once()
        finally:
            self._end()

    def _take_on_done(self) -> list[Callable[[], None]]:
        on_done, self._on_done = self._on_done, []
        return on_done

    async def _sync_once(self, final: bool = False) -> None:
        on_done = self._take_on_done()
        done, self._next_done = self._next_done, anyio.Event()
        try:
            await self._upload_with_retries(final)
        finally:
            for release in on_done:
                release()
            done.set()

    async def _upload_with_retries(self, final: bool = False) -> None:
        upload = functools.partial(self.storage.upload_dir, self.local_dir, self.remote_url)
        for attempt in range(self.tries):
            try:
                # The final upload is bounded: past its time the thread is left behind
                # (a worker process is killed then). Others finish before their task ends,
                # so two uploads of the directory never overlap.
                await anyio.to_thread.run_sync(upload, abandon_on_cancel=final)
            except Exception as exc:  # noqa: BLE001 - any storage error: retried, reported
                self.last_error = exc
                if attempt + 1 < self.tries:
                    await anyio.sleep(self.backoff_s * 2 ** attempt)
            else:
                if self.last_error is not None:
                    logger.info("Cloud sync of %s to %s succeeded again; what was missing "
                                "is uploaded.", self.local_dir, self.remote_url)
                self.last_error = None
                self.syncs_done += 1
                return
        await self._warn_failed()

    async def _warn_failed(self) -> None:
        missing = await self.context.run_sync(not_uploaded, self.storage, self.local_dir,
                                              self.remote_url)
        what = "" if missing is None else (
            f"; {len(missing)} file(s) not uploaded yet"
            + (f" (e.g. {', '.join(missing[:3])})" if missing else ""))
        logger.warning(
            "Cloud sync of %s to %s failed after %d tries: %s%s. The local files are "
            "kept; the next sync uploads what is missing.",
            self.local_dir, self.remote_url, self.tries, _describe(self.last_error), what)

    # ---- periodic and final -------------------------------------------------------------
    async def _periodic(self) -> None:
        while True:
            await anyio.sleep(self.period_s)
            self.request()

    async def _final_sync(self) -> None:
        # Inline, not a task: when the run was cancelled, the context's tasks are too.
        began = anyio.current_time()
        self._finished = True
        with anyio.move_on_after(self.end_timeout_s) as scope:
            while self._running:  # one sync of the directory at a time
                await self._idle.wait()
            self._begin()
            try:
                await self._sync_once(final=True)
            finally:
                self._end()
        self.final_sync_s = anyio.current_time() - began
        await self.close_storage(kill=scope.cancelled_caught)
        if scope.cancelled_caught:
            logger.warning(
                "The final cloud sync of %s to %s did not finish within %g s "
                "(TUNE_SYNC_END_TIMEOUT_S); the local files are kept, a later sync "
                "(tune_async.sync.upload_experiment or a resumed run) completes it.",
                self.local_dir, self.remote_url, self.end_timeout_s)

    async def close_storage(self, kill: bool = False) -> None:
        """End the storage's worker process, if it has one (off the loop); ``kill``:
        without waiting for an upload still in flight."""
        close = getattr(self.storage, "close", None)
        if close is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(functools.partial(close, kill=kill))


def _describe(exc: BaseException | None) -> str:
    return "unknown error" if exc is None else f"{type(exc).__name__}: {exc}"


# ---- the same operations from plain code ----------------------------------------------------
def upload_experiment(experiment_dir: str, upload_dir: str, sync_to_cloud: Any = None) -> str:
    """Upload (blocking) a local experiment directory to ``upload_dir/<name>``; returns
    that URL. Completes what a run could not upload (a store that was away)."""
    url = remote_experiment_url(upload_dir, experiment_dir)
    get_storage(sync_to_cloud or upload_dir).upload_dir(experiment_dir, url)
    return url


def download_experiment(upload_dir: str, experiment_dir: str, sync_to_cloud: Any = None,
                        storage: Storage | None = None) -> str:
    """Download (blocking) ``upload_dir/<name>`` into ``experiment_dir`` (its name is
    ``experiment_dir``'s); returns the URL. Raises ValueError if nothing is there."""
    url = remote_experiment_url(upload_dir, experiment_dir)
    storage = storage or get_storage(sync_to_cloud or upload_dir)
    if not storage.exists(url):
        raise ValueError(f"Called resume from remote, but nothing is stored at {url}.")
    storage.download_dir(url, experiment_dir)  # an fsspec storage notes what came down
    return url
