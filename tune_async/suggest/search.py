"""The low-level search algorithm interface the controller drives.

The controller calls exactly these methods. The per-trial hooks may be
coroutines in a user subclass (the controller goes through
``tune_async._hooks.call_hook``)::

    next_trial() -> TrialSuggestion | None
    on_trial_result(trial_id, result)
    on_trial_complete(trial_id, result=None, error=False)
    is_finished() -> bool;  set_finished()

Set-up and persistence run before the event loop or inside a state snapshot, so
they must be plain methods (``tune.run`` rejects coroutine versions with a
TypeError)::

    set_search_properties(metric, mode, config) -> bool
    add_configurations(experiments) -> None
    total_samples (property)
    get_state() -> dict;  set_state(state)
"""

from __future__ import annotations

import glob
import os
from typing import Any

import attrs
import cloudpickle

from tune_async.utils.util import atomic_write_bytes


@attrs.define
class TrialSuggestion:
    """What a search algorithm hands the controller to create one trial.

    Attributes:
        experiment: The experiment object given to ``add_configurations``.
        config: The fully resolved trial config.
        experiment_tag: ``"{counter}_{k=v,...}"``, part of the trial's dirname.
        evaluated_params: Flat ``{"a/b": value}`` of the sampled or grid values
            (the progress table's parameter columns).
        trial_id: The trial id to use; ``None`` lets the controller pick one.
    """

    experiment: Any
    config: dict
    experiment_tag: str
    evaluated_params: dict
    trial_id: str | None = None


class SearchAlgorithm:
    """Interface of search algorithms that generate trials (ray.tune 1.x ``SearchAlgorithm``).

    Most users implement a :class:`~tune_async.suggest.Searcher` instead, which
    is wrapped in a :class:`~tune_async.suggest.SearchGenerator`.
    """

    _finished = False
    _metric = None
    CKPT_FILE_TMPL = "search-alg-state-{}.pkl"

    @property
    def metric(self) -> str | None:
        """The training result objective value attribute."""
        return self._metric

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict) -> bool:
        """Pass search properties (``tune.run``'s metric, mode and config) to the algorithm.

        Returns:
            True if the algorithm accepted them (the base accepts and ignores them).
        """
        return True

    @property
    def total_samples(self) -> int:
        """The total number of trials this algorithm will generate (0 if unknown)."""
        return 0

    def add_configurations(self, experiments: list) -> None:
        """Track the given experiments (objects with ``.name`` and ``.spec``)."""
        raise NotImplementedError

    def next_trial(self) -> TrialSuggestion | None:
        """The next trial to create, or ``None`` if there is nothing to start right now."""
        raise NotImplementedError

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Called on each intermediate result of a trial."""

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        """Called when a trial terminates or errors (after its retries)."""

    def is_finished(self) -> bool:
        """True once the algorithm will generate no more trials."""
        return self._finished

    def set_finished(self) -> None:
        """Mark the search as finished (e.g. the time budget ran out)."""
        self._finished = True

    def get_state(self) -> dict:
        """A picklable snapshot of the search progress, for resuming."""
        return {"finished": self._finished}

    def set_state(self, state: dict) -> None:
        """Restore a snapshot taken by :meth:`get_state`."""
        self._finished = state.get("finished", False)

    # 1.x checkpoint-directory API, built on get_state/set_state.

    def has_checkpoint(self, dirpath: str) -> bool:
        return bool(glob.glob(os.path.join(dirpath, self.CKPT_FILE_TMPL.format("*"))))

    def save_to_dir(self, dirpath: str, session_str: str = "default") -> None:
        """Write :meth:`get_state` to ``dirpath`` (atomically; one file per session)."""
        data = cloudpickle.dumps(self.get_state())
        atomic_write_bytes(os.path.join(dirpath, self.CKPT_FILE_TMPL.format(session_str)), data)

    def restore_from_dir(self, dirpath: str) -> None:
        """Restore from the newest state file written by :meth:`save_to_dir`."""
        paths = glob.glob(os.path.join(dirpath, self.CKPT_FILE_TMPL.format("*")))
        if not paths:
            raise RuntimeError(f"{type(self).__name__} unable to find checkpoint in {dirpath}")
        with open(max(paths), "rb") as f:
            self.set_state(cloudpickle.loads(f.read()))
