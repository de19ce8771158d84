"""The waiting queue: trials that may be chosen to run next.

PENDING trials in queue order, then PAUSED ones, plus how many of them ask for
each distinct resource request (so a full cluster costs O(distinct requests) to
check, not O(trials)). A trial whose release (its stop, and the save before it)
has not finished is *held*: it has its waiting status but cannot be chosen until
the release is done, so a late call to its old worker never meets its next launch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from tune_async.trial import Trial, TrialStatus

_WAITING = (TrialStatus.PENDING, TrialStatus.PAUSED)


class WaitingQueue:
    def __init__(self) -> None:
        self.pending: dict[str, Trial] = {}
        self.paused: dict[str, Trial] = {}
        self._held: dict[str, Trial] = {}
        self._releasing: set[str] = set()
        self._requests: dict[tuple, tuple[int, Trial]] = {}

    # ---- status changes ----------------------------------------------------------
    def on_status_change(self, trial: Trial, before: TrialStatus) -> None:
        """Follow ``trial.status`` (called after every transition)."""
        if before in _WAITING and trial.status is not before:
            self._remove(trial, before)
        if trial.status in _WAITING and trial.status is not before:
            self._add(trial)

    def add(self, trial: Trial) -> None:
        """A new (or resumed) trial joins the end of the queue."""
        self._add(trial)

    def requeue_at_end(self, trial: Trial) -> None:
        """Move a PENDING trial behind the others (a retried trial, as 1.x)."""
        if self.pending.pop(trial.trial_id, None) is not None:
            self.pending[trial.trial_id] = trial

    # ---- releases ------------------------------------------------------------------
    def releasing(self, trial: Trial) -> None:
        """The trial's worker is being released: hold it until :meth:`released`."""
        self._releasing.add(trial.trial_id)

    def released(self, trial: Trial) -> None:
        self._releasing.discard(trial.trial_id)
        held = self._held.pop(trial.trial_id, None)
        if held is not None and held.status in _WAITING:
            self._add(held)

    @property
    def any_releasing(self) -> bool:
        return bool(self._releasing)

    # ---- reading -------------------------------------------------------------------
    def __iter__(self) -> Iterator[Trial]:
        """Choosable trials: PENDING in queue order, then PAUSED (lazy)."""
        for index in (self.pending, self.paused):
            yield from list(index.values())

    def __bool__(self) -> bool:
        return bool(self.pending or self.paused or self._held)

    def first(self) -> Trial | None:
        return next(iter(self), None) or next(iter(self._held.values()), None)

    def some_fit(self, fits: Callable[[Trial], bool]) -> bool:
        """Whether any choosable trial fits (one check per distinct resource request)."""
        return any(fits(example) for _, example in self._requests.values())

    def is_held(self, trial: Trial) -> bool:
        """Waiting by status, but its release has not finished: not choosable yet."""
        return trial.trial_id in self._held

    # ---- internals -----------------------------------------------------------------
    def _add(self, trial: Trial) -> None:
        tid = trial.trial_id
        if tid in self._releasing:
            self._held[tid] = trial
            return
        index = self.pending if trial.status is TrialStatus.PENDING else self.paused
        if tid not in index:
            index[tid] = trial
            self._count(trial, +1)

    def _remove(self, trial: Trial, status: TrialStatus) -> None:
        tid = trial.trial_id
        if self._held.pop(tid, None) is not None:
            return
        index = self.pending if status is TrialStatus.PENDING else self.paused
        if index.pop(tid, None) is not None:
            self._count(trial, -1)

    def _count(self, trial: Trial, change: int) -> None:
        key = trial.resources.key()
        count = self._requests.get(key, (0, trial))[0] + change
        if count:
            self._requests[key] = (count, trial)
        else:
            self._requests.pop(key, None)
