"""Checkpoint holds: a checkpoint being copied somewhere is not deleted under the copy.

A checkpoint's lifecycle: written on the worker → registered → (synced to the driver
/ uploaded) → deletable. A plugin that copies a checkpoint takes a hold on it
(``context.hold_checkpoint(path)``) and releases it when the copy is done. Pruning
(``keep_checkpoints_num``) asks :meth:`CheckpointHolds.delete_or_defer`: a held
checkpoint's deletion waits for the last release.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import attrs

from tune_async.checkpoint import Checkpoint, checkpoint_dir_of

logger = logging.getLogger(__name__)

Release = Callable[[], None]


def hold_key(path: str) -> str:
    """Holds are per ``checkpoint_*`` directory, whichever path inside it was named."""
    return checkpoint_dir_of(path)


@attrs.define
class _Deferred:
    checkpoint: Checkpoint
    delete: Callable[[list[Checkpoint]], Any]  # the trial's manager.delete (blocking)


class CheckpointHolds:
    """Hold counts per checkpoint directory, and the deletions waiting for them.

    Args:
        spawn_delete: ``spawn_delete(delete, checkpoints)`` runs the blocking
            ``delete(checkpoints)`` off the event loop (a task of the experiment).
    """

    def __init__(self, spawn_delete: Callable[[Callable, list[Checkpoint]], None]) -> None:
        self._spawn_delete = spawn_delete
        self._counts: dict[str, int] = {}
        self._deferred: dict[str, _Deferred] = {}

    def hold(self, path: str) -> Release:
        """Keep the checkpoint at ``path`` until the returned ``release()`` is called
        (calling it again does nothing)."""
        key = hold_key(path)
        self._counts[key] = self._counts.get(key, 0) + 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            self._release(key)

        return release

    def is_held(self, path: str) -> bool:
        return self._counts.get(hold_key(path), 0) > 0

    @property
    def deferred(self) -> list[Checkpoint]:
        """Dropped checkpoints whose deletion waits for a release."""
        return [d.checkpoint for d in self._deferred.values()]

    def delete_or_defer(self, checkpoints: list[Checkpoint],
                        delete: Callable[[list[Checkpoint]], Any]) -> None:
        """Delete dropped ``checkpoints`` now (off the loop) or, if held, at the last release."""
        now = []
        for cp in checkpoints:
            if cp.dir is not None and self.is_held(cp.dir):
                self._deferred[hold_key(cp.dir)] = _Deferred(cp, delete)
            else:
                now.append(cp)
        if now:
            self._spawn_delete(delete, now)

    def keep(self, checkpoint: Checkpoint) -> None:
        """``checkpoint`` was registered again in the same place: a deletion deferred for
        the old one there must not remove the new files."""
        if checkpoint.dir is not None:
            self._deferred.pop(hold_key(checkpoint.dir), None)

    def _release(self, key: str) -> None:
        count = self._counts.get(key, 0) - 1
        if count > 0:
            self._counts[key] = count
            return
        self._counts.pop(key, None)
        waiting = self._deferred.pop(key, None)
        if waiting is not None:
            self._spawn_delete(waiting.delete, [waiting.checkpoint])
