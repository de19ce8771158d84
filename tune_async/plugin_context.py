"""What a plugin gets for background work: tasks the experiment owns.

A syncer uploading files, a model being fitted, a stream being served: plugins
that need work beside the result pipeline never start threads or tasks of their
own. They get a :class:`PluginContext` (callbacks: ``setup(context=...)``) whose
tasks live in a task group the controller opens around the whole run:

- they start with the experiment and are cancelled and awaited at its end, after
  ``on_experiment_end`` (so a final sync there can still wait for one in flight);
- cancelling ``arun`` cancels them too;
- a task that fails is logged (named) and never ends the experiment.

Two more services for plugins that copy files (syncers):

- ``hold_checkpoint(path)`` keeps a checkpoint from being pruned while it is being
  copied (its deletion waits for the last ``release()``);
- ``at_end(fn)`` runs ``await fn()`` once the experiment's final state is on disk
  (after the final snapshot, which ``on_experiment_end`` runs before), before the
  context's tasks are cancelled: where a final upload belongs.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.to_thread

from tune_async.sync.holds import CheckpointHolds, Release
from tune_async.sync.transit import CheckpointTransits, Transit

logger = logging.getLogger(__name__)


class PluginContext:
    """Background tasks owned by the running experiment.

    Args:
        task_group: The controller's plugin task group.
        experiment_dir: The experiment's local directory.
    """

    def __init__(self, task_group: Any, experiment_dir: str) -> None:
        self._tg = task_group
        self.experiment_dir = experiment_dir
        self._running = 0
        self._idle = anyio.Event()
        self._idle.set()
        self._end_hooks: list[tuple[str, Callable[[], Awaitable[Any]]]] = []
        self.holds = CheckpointHolds(self._spawn_delete)
        self._deleting = 0
        self._deleted = anyio.Event()  # set when no deletion runs
        self._deleted.set()
        self.transits = CheckpointTransits()

    def hold_checkpoint(self, path: str) -> Release:
        """Keep the checkpoint at ``path`` (its ``checkpoint_*`` directory) from being
        deleted by pruning until ``release()`` is called; a deletion asked for meanwhile
        happens at the last release."""
        return self.holds.hold(path)

    def checkpoint_in_transit(self, trial_id: str, checkpoint: Any) -> Transit:
        """``checkpoint`` is being copied to where a restore reads it (the driver): until
        ``settle(True)`` the trial takes no next step and the checkpoint is not restored
        from; ``settle(False)``: it never arrived (see ``tune_async.sync.transit``)."""
        return self.transits.begin(trial_id, checkpoint)

    def at_end(self, fn: Callable[[], Awaitable[Any]], name: str | None = None) -> None:
        """Run ``await fn()`` after the final experiment state is written (errors logged).

        ``fn`` bounds its own time (the run waits for it, also when cancelled).
        """
        self._end_hooks.append((name or getattr(fn, "__qualname__", repr(fn)), fn))

    async def close(self) -> None:
        """The end hooks, in registration order (the controller calls this, shielded)."""
        hooks, self._end_hooks = self._end_hooks, []
        await self._deleted.wait()  # pruned at the end: gone before a final upload copies it
        for label, fn in hooks:
            try:
                await fn()
            except Exception:  # noqa: BLE001 - one plugin's end never stops another's
                logger.exception("End hook %s failed", label)
        # Holds released by those hooks (a final upload) started deletions: let them finish
        # before the tasks are cancelled, or pruned checkpoints would stay on disk.
        await self._deleted.wait()

    def _spawn_delete(self, delete: Callable[[list], Any], checkpoints: list) -> None:
        self._deleting += 1
        self._deleted = anyio.Event() if self._deleting == 1 else self._deleted
        self.start_soon(self._delete, delete, checkpoints, name="delete pruned checkpoints")

    async def _delete(self, delete: Callable[[list], Any], checkpoints: list) -> None:
        try:
            with anyio.CancelScope(shield=True):  # an rmtree once asked for is not dropped
                await self.run_sync(delete, checkpoints)
        finally:
            self._deleting -= 1
            if self._deleting == 0:
                self._deleted.set()

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any,
                   name: str | None = None) -> None:
        """Run ``await fn(*args)`` as a task the experiment owns (errors are logged)."""
        label = name or getattr(fn, "__qualname__", repr(fn))
        self._running += 1
        if self._running == 1:
            self._idle = anyio.Event()
        self._tg.start_soon(self._guarded, fn, args, label, name=label)

    async def run_sync(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` in a worker thread (blocking work never runs on the loop)."""
        return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))

    @property
    def running(self) -> int:
        """How many tasks started here have not finished yet."""
        return self._running

    async def wait_idle(self) -> None:
        """Until no task started here is running (bound it with ``anyio.move_on_after``)."""
        await self._idle.wait()

    async def _guarded(self, fn: Callable[..., Awaitable[Any]], args: tuple, label: str) -> None:
        try:
            await fn(*args)
        except Exception:  # noqa: BLE001 - a plugin's background failure never ends the run
            logger.exception("Background task %s failed", label)
        finally:
            self._running -= 1
            if self._running == 0:
                self._idle.set()


def accepts_context(hook: Callable[..., Any]) -> bool:
    """True if ``hook`` can take ``context=`` (a named parameter or ``**info``)."""
    try:
        params = inspect.signature(hook).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is p.VAR_KEYWORD or p.name == "context" for p in params)
