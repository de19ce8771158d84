"""HyperBand for BOHB (ray.tune 1.x ``HyperBandForBOHB``)."""

from __future__ import annotations

import inspect
import logging
from typing import Any

from tune_async.schedulers.hyperband import HyperBandScheduler, _Bracket
from tune_async.schedulers.trial_scheduler import PAUSE
from tune_async.trial import TrialStatus

logger = logging.getLogger(__name__)


class HyperBandForBOHB(HyperBandScheduler):
    """Extends the HyperBand early stopping algorithm for BOHB.

    Key changes from :class:`HyperBandScheduler`:

    - Brackets are filled largest first.
    - A trial at a milestone pauses unless its bracket is full and every other trial
      of it is paused already; the searcher is told (``on_pause``/``on_unpause``,
      which :class:`~tune_async.suggest.bohb.TuneBOHB` uses to limit its concurrency).
    - Each result carries ``result["hyperband_info"]``; at a milestone its
      ``"budget"`` is the milestone, which TuneBOHB learns from.
    - When no trial runs, ``choose_trial_to_run`` halves the paused brackets.

    Works with any searcher; those with ``on_pause``/``on_unpause`` hooks (plain
    methods) are told. Arguments are those of :class:`HyperBandScheduler`.
    """

    def _next_s(self, cur_band: list) -> int:
        return self._s_max_1 - len(cur_band) - 1

    def on_trial_result(self, trial_runner: Any, trial: Any, result: dict) -> Any:
        result["hyperband_info"] = {}
        return super().on_trial_result(trial_runner, trial, result)

    def _reached_milestone(self, bracket: _Bracket, result: dict) -> None:
        result["hyperband_info"]["budget"] = bracket.cumul_r

    def _on_milestone(self, trial_runner: Any, bracket: _Bracket, trial: Any,
                      result: dict) -> str:
        others_busy = any(
            self._status(t) is not TrialStatus.PAUSED for t in bracket.live if t != trial.trial_id
        )
        if not bracket.filled() or others_busy:
            action = PAUSE
        else:
            action = self._process_bracket(trial_runner, bracket, trial.trial_id)
        if action == PAUSE:
            _tell_searcher(trial_runner, "on_pause", trial.trial_id)
        return action

    def _unpause_trial(self, trial_runner: Any, trial_id: str) -> None:
        if self._status(trial_id) is TrialStatus.PAUSED:
            _tell_searcher(trial_runner, "on_unpause", trial_id)

    def _status(self, trial_id: str) -> TrialStatus | None:
        view = self._views.get(trial_id)
        return None if view is None else view.status

    def choose_trial_to_run(self, trial_runner: Any) -> Any:
        """The first runnable trial, brackets in order; when nothing runs, halve the
        brackets holding paused trials and choose from them."""
        brackets = [b for band in self._hyperbands for b in band if b is not None]
        for bracket in brackets:
            chosen = self._runnable_in(bracket, trial_runner)
            if chosen is not None:
                return chosen
        if _suggestions_pending(trial_runner):
            return None  # new trials may still fill the brackets: halve only once none come
        if any(t.status is TrialStatus.RUNNING for t in trial_runner.get_trials()):
            return None
        for bracket in brackets:
            if any(self._status(t) is TrialStatus.PAUSED for t in bracket.live):
                self._process_bracket(trial_runner, bracket, None)
                chosen = self._runnable_in(bracket, trial_runner)
                if chosen is not None:
                    return chosen
        return None


def _suggestions_pending(trial_runner: Any) -> bool:
    """Whether the runner is still waiting for the searcher's suggestions.

    1.x asked the searcher synchronously before choosing, so "nothing runs" meant "no
    trial will come now". A runner whose searcher answers asynchronously says so with
    ``suggestions_pending`` (a bool or a method); without it, none are assumed.
    """
    pending = getattr(trial_runner, "suggestions_pending", False)
    return bool(pending() if callable(pending) else pending)


def _tell_searcher(trial_runner: Any, hook: str, trial_id: str) -> None:
    """Call the searcher's ``on_pause``/``on_unpause`` if it has one (1.x's TuneBOHB does)."""
    searcher = getattr(trial_runner, "search_alg", None)
    searcher = getattr(searcher, "searcher", searcher)  # a SearchGenerator wraps a Searcher
    method = getattr(searcher, hook, None)
    if method is None:
        return
    value = method(trial_id)
    if inspect.isawaitable(value):
        close = getattr(value, "close", None)
        if close is not None:
            close()
        raise TypeError(
            f"HyperBandForBOHB calls {type(searcher).__name__}.{hook} from its plain hooks: "
            f"it must be a plain method, not a coroutine"
        )
