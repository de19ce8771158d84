"""Checkpoints in transit: taken on a worker node, not yet where a restore can read them.

A syncer that copies a new checkpoint to the driver (``sync_on_checkpoint``) opens
a transit for it (``context.checkpoint_in_transit(trial_id, checkpoint)``) and
settles it when the copy is done or failed. Meanwhile:

- the trial takes no further step (the controller awaits :meth:`settled` before its
  next fetch), so a trial never runs ahead of a checkpoint that a restore would need;
  other trials go on;
- the checkpoint does not count as restorable; a failed trial is restored from the
  newest checkpoint that arrived (:meth:`restorable`, :meth:`newest_arrived`).
"""

from __future__ import annotations

from typing import Any

import anyio
import attrs


@attrs.define(eq=False)
class Transit:
    trial_id: str
    checkpoint: Any
    done: anyio.Event = attrs.field(factory=anyio.Event)
    arrived: bool = False
    _registry: Any = None

    def settle(self, arrived: bool) -> None:
        """The copy is done (``arrived``) or failed; only the first call counts."""
        if self.done.is_set():
            return
        self.arrived = arrived
        self._registry._settle(self)
        self.done.set()


class CheckpointTransits:
    """Per trial: the transits still open, the checkpoints lost and the newest arrived."""

    def __init__(self) -> None:
        self._open: dict[str, list[Transit]] = {}
        self._lost: dict[str, set[str]] = {}  # trial id -> checkpoint dirs that never arrived
        self._arrived: dict[str, Any] = {}  # trial id -> newest checkpoint that arrived

    def begin(self, trial_id: str, checkpoint: Any) -> Transit:
        transit = Transit(trial_id, checkpoint, registry=self)
        self._open.setdefault(trial_id, []).append(transit)
        self._lost.get(trial_id, set()).discard(checkpoint.dir)  # taken again in that place
        return transit

    async def settled(self, trial_id: str) -> None:
        """Until every transit of the trial opened so far is settled."""
        for transit in list(self._open.get(trial_id, ())):
            await transit.done.wait()

    def restorable(self, trial_id: str, checkpoint: Any) -> bool:
        """False while ``checkpoint`` is in transit or when it never arrived."""
        if checkpoint is None or checkpoint.dir is None:
            return True
        if checkpoint.dir in self._lost.get(trial_id, ()):
            return False
        return not any(t.checkpoint.dir == checkpoint.dir for t in self._open.get(trial_id, ()))

    def newest_arrived(self, trial_id: str) -> Any:
        return self._arrived.get(trial_id)

    def _settle(self, transit: Transit) -> None:
        trial_id, checkpoint = transit.trial_id, transit.checkpoint
        open_ = self._open.get(trial_id, [])
        if transit in open_:
            open_.remove(transit)
        if not open_:
            self._open.pop(trial_id, None)
        if not transit.arrived:
            self._lost.setdefault(trial_id, set()).add(checkpoint.dir)
            return
        newest = self._arrived.get(trial_id)
        if newest is None or (checkpoint.iteration or 0) >= (newest.iteration or 0):
            self._arrived[trial_id] = checkpoint
