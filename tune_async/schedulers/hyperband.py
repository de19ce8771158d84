"""Synchronous HyperBand (ray.tune 1.x ``HyperBandScheduler``).

Three levels, as in 1.x: a *band* (one HyperBand iteration) holds up to ``s_max+1``
*brackets*; a bracket holds up to ``n(s)`` trials that go through successive halving.
New trials fill the current bracket, then a new bracket, then a new band.

Trials pause at each milestone of their bracket until every live trial of the bracket
reached it; then the bracket halves: the bad trials end (a waiting one through
``Decision(stop_trials=...)``, the one reporting through STOP) and the good ones run on
to the next milestone (``choose_trial_to_run`` returns them).

Milestones are ``max_t * eta**(k - s)`` (integers; the last one is ``max_t``): the
paper's schedule. 1.x capped each one at ``max_t`` minus the previous one, so no
trial outside the first bracket ever reached ``max_t`` (ray-project/ray#11695, fixed
upstream in 2.7).
"""

from __future__ import annotations

import collections
import logging
import math
from numbers import Real
from typing import Any

import numpy as np

from tune_async.result import TRAINING_ITERATION
from tune_async.schedulers.async_hyperband import check_number, metric_and_mode, metric_op
from tune_async.schedulers.trial_scheduler import (
    CONTINUE,
    PAUSE,
    STOP,
    Decision,
    FIFOScheduler,
)
from tune_async.trial import TrialStatus

logger = logging.getLogger(__name__)

_WAITING = (TrialStatus.PENDING, TrialStatus.PAUSED)


class _Bracket:
    """One bracket's schedule and its live trials ``{trial id: (time, score) | None}``.

    Scores are ``metric_op * value`` (larger is better); None: no result yet.
    """

    def __init__(self, max_trials: int, milestones: list[float], eta: float,
                 stop_last_trials: bool = True) -> None:
        self.n = self.n0 = max_trials
        self.milestones = milestones
        self.level = 0  # index of the current milestone
        self.eta = eta
        self.stop_last_trials = stop_last_trials
        self.live: dict[str, tuple[float, float] | None] = {}
        self.all_trials: list[str] = []
        self.retired = 0  # trials stopped at the final milestone (they still fill it)
        self.completed_progress = 0.0
        self.total_work = self._total_work()

    @property
    def s(self) -> int:
        return len(self.milestones) - 1

    @property
    def halves(self) -> int:
        return self.s - self.level

    @property
    def cumul_r(self) -> float:
        return self.milestones[self.level]

    def _total_work(self) -> float:
        work, n, before = 0.0, self.n0, 0.0
        for milestone in self.milestones:
            work += n * (milestone - before)
            n, before = math.ceil(n / self.eta), milestone
        return work

    def add_trial(self, trial_id: str) -> None:
        self.live[trial_id] = None
        self.all_trials.append(trial_id)

    def filled(self) -> bool:
        return len(self.live) + self.retired >= self.n

    def time_of(self, trial_id: str) -> float:
        entry = self.live.get(trial_id)
        return 0 if entry is None else entry[0]

    def update(self, trial_id: str, time: float, score: float) -> None:
        delta = time - self.time_of(trial_id)
        if delta <= 0:
            logger.info("Restoring from a previous point in time. Previous=%s; Now=%s",
                        self.time_of(trial_id), time)
        self.completed_progress += delta
        self.live[trial_id] = (time, score)

    def continue_trial(self, trial_id: str) -> bool:
        if not self.stop_last_trials and self.halves == 0:
            return True
        return self.time_of(trial_id) < self.cumul_r

    def at_final_milestone(self, trial_id: str) -> bool:
        return self.stop_last_trials and self.halves == 0 and not self.continue_trial(trial_id)

    def cur_iter_done(self) -> bool:
        if not self.stop_last_trials and self.halves == 0:
            return False  # the last trials run on: nothing more to decide
        return all(self.time_of(t) >= self.cumul_r for t in self.live)

    def finished(self) -> bool:
        return self.stop_last_trials and self.halves == 0 and self.cur_iter_done()

    def successive_halving(self) -> tuple[list[str], list[str]]:
        """Move to the next milestone; return (good, bad) trial ids."""
        self.level += 1
        self.n = math.ceil(self.n / self.eta)
        ranked = sorted(self.live, key=self._score_key)
        return ranked[-self.n:], ranked[:-self.n]

    def _score_key(self, trial_id: str) -> float:
        entry = self.live[trial_id]
        score = -math.inf if entry is None else entry[1]
        return -math.inf if math.isnan(score) else score

    def cleanup_trial(self, trial_id: str) -> None:
        self.live.pop(trial_id, None)

    def completion_percentage(self) -> float:
        if self.finished():
            return 1.0
        return min(self.completed_progress / self.total_work, 1.0) if self.total_work else 1.0

    def to_state(self) -> dict:
        state = {k: v for k, v in vars(self).items() if k != "live"}
        state["live"] = {tid: None if e is None else list(e) for tid, e in self.live.items()}
        state["all_trials"] = list(self.all_trials)
        return state

    @classmethod
    def from_state(cls, state: dict, known: Any) -> _Bracket:
        bracket = cls.__new__(cls)
        bracket.__dict__.update(state)
        bracket.all_trials = list(state["all_trials"])
        bracket.live = {tid: None if e is None else tuple(e)
                        for tid, e in state["live"].items() if known(tid)}
        return bracket


class HyperBandScheduler(FIFOScheduler):
    """Implements the HyperBand early stopping algorithm.

    HyperBandScheduler early stops trials using the HyperBand optimization algorithm.
    It divides trials into brackets of varying sizes, and periodically early stops
    low-performing trials within each bracket.

    To use this implementation of HyperBand with Tune, all you need to do is specify
    the max length of time a trial can run ``max_t``, the time units ``time_attr``,
    the name of the reported objective value ``metric``, and whether ``metric`` is to
    be maximized or minimized (``mode``). Reasonable values for the other HyperBand
    parameters are derived from these.

    Note that Tune's stopping criteria are applied in conjunction with HyperBand's
    early stopping mechanisms.

    Args:
        time_attr: The training result attr to use for comparing time. It may be
            something non-temporal such as ``training_iteration``; it must increase
            monotonically.
        reward_attr: Deprecated: use ``metric`` (sets ``metric=reward_attr`` and
            ``mode="max"``).
        metric: The training result objective value attribute. If None but a mode
            was passed, ``"_metric"`` is used.
        mode: One of {min, max}: whether the metric is minimized or maximized.
        max_t: Max time units per trial. Trials are stopped after ``max_t`` time
            units (determined by ``time_attr``) have passed. Note that this differs
            from the semantics of ``max_t`` in the original HyperBand paper.
        reduction_factor: Same as ``eta``: how sharp the difference is between the
            brackets' space-time allocation ratios.
        stop_last_trials: Whether to terminate the trials after reaching ``max_t``.
            Defaults to True.
    """

    def __init__(
        self,
        time_attr: str = TRAINING_ITERATION,
        reward_attr: str | None = None,
        metric: str | None = None,
        mode: str | None = None,
        max_t: float = 81,
        reduction_factor: float = 3,
        stop_last_trials: bool = True,
    ):
        check_number("max_t", max_t, positive=True)
        check_number("reduction_factor", reduction_factor, above=1)
        self._metric, self._mode = metric_and_mode(reward_attr, metric, mode)
        self._time_attr = time_attr
        self._eta = reduction_factor
        self._max_t_attr = max_t
        self._s_max_1 = int(np.round(np.log(max_t) / np.log(reduction_factor))) + 1
        self._stop_last_trials = stop_last_trials
        self._hyperbands: list[list[_Bracket | None]] = [[]]
        self._trial_info: dict[str, _Bracket] = {}
        self._state: dict[str, Any] = {"bracket": None, "band_idx": 0}
        self._num_stopped = 0
        self._views: dict[str, Any] = {}  # live read-only views, for statuses and choosing
        self._to_stop: set[str] = set()  # waiting trials to end (sent with the next decision)
        self._stop_on_result: set[str] = set()  # running trials to STOP at their next result

    # ---- bracket geometry ------------------------------------------------------------
    def _get_n0(self, s: int) -> int:
        return int(math.ceil(self._s_max_1 / (s + 1) * self._eta ** s))

    def _get_r0(self, s: int) -> int:
        return int(self._max_t_attr * self._eta ** (-s))

    def _milestones(self, s: int) -> list[float]:
        return [int(self._max_t_attr * self._eta ** (k - s)) for k in range(s)] + [
            self._max_t_attr]

    def _create_bracket(self, s: int) -> _Bracket:
        return _Bracket(self._get_n0(s), self._milestones(s), self._eta,
                        self._stop_last_trials)

    def _next_s(self, cur_band: list) -> int:
        """Which bracket a band gets next: the smallest first (BOHB: the largest)."""
        return len(cur_band)

    # ---- hooks -----------------------------------------------------------------------
    def on_trial_add(self, trial_runner: Any, trial: Any) -> None:
        """Add to the current bracket; when it is full, to a new bracket of the current
        band; when the band is full, to a new band."""
        self._check_metric_and_mode()
        cur_bracket = self._state["bracket"]
        if cur_bracket is None or cur_bracket.filled():
            cur_bracket = self._open_bracket()
        cur_bracket.add_trial(trial.trial_id)
        self._trial_info[trial.trial_id] = cur_bracket
        self._views[trial.trial_id] = trial

    def _open_bracket(self) -> _Bracket:
        while True:
            cur_band = self._hyperbands[self._state["band_idx"]]
            if len(cur_band) == self._s_max_1:
                cur_band = []
                self._hyperbands.append(cur_band)
                self._state["band_idx"] += 1
            s = self._next_s(cur_band)
            if self._get_r0(s) == 0:
                logger.info("Bracket too small - Retrying...")
                cur_band.append(None)
                continue
            bracket = self._create_bracket(s)
            cur_band.append(bracket)
            self._state["bracket"] = bracket
            return bracket

    def on_trial_result(self, trial_runner: Any, trial: Any, result: dict) -> Any:
        """CONTINUE before a milestone; at one, PAUSE until the bracket's iteration is
        done, then halve (STOP if this trial is among the bad ones)."""
        return self._decision(trial_runner, self._action(trial_runner, trial, result))

    def _action(self, trial_runner: Any, trial: Any, result: dict) -> str:
        trial_id = trial.trial_id
        if trial_id in self._stop_on_result:
            self._stop_on_result.discard(trial_id)
            return STOP
        bracket = self._trial_info.get(trial_id)
        if bracket is None or trial_id not in bracket.live:
            return CONTINUE
        if self._time_attr not in result or self._metric not in result:
            return CONTINUE
        bracket.update(trial_id, result[self._time_attr], self._score(result))
        if bracket.continue_trial(trial_id):
            return CONTINUE
        self._reached_milestone(bracket, result)
        if bracket.at_final_milestone(trial_id):
            # Nothing is left to decide for it: end it now rather than pause it first.
            bracket.cleanup_trial(trial_id)
            bracket.retired += 1
            return STOP
        return self._on_milestone(trial_runner, bracket, trial, result)

    def _reached_milestone(self, bracket: _Bracket, result: dict) -> None:
        """A result at (or past) the bracket's milestone (BOHB records the budget)."""

    def _on_milestone(self, trial_runner: Any, bracket: _Bracket, trial: Any,
                      result: dict) -> str:
        action = self._process_bracket(trial_runner, bracket, trial.trial_id)
        logger.debug("%s for %s on %s=%s", action, trial, self._time_attr,
                     result.get(self._time_attr))
        return action

    def _score(self, result: dict) -> float:
        value = result[self._metric]
        if isinstance(value, bool) or not isinstance(value, Real):
            return math.nan
        return metric_op(self._mode) * float(value)

    def _process_bracket(self, trial_runner: Any, bracket: _Bracket,
                         current: str | None) -> str:
        """Halve the bracket while all its live trials reached its milestone.

        Returns the action for ``current`` (the trial reporting, if any): PAUSE while
        the bracket waits, CONTINUE if it is good and runs on, STOP if it is bad.
        """
        action = PAUSE
        while bracket.live and bracket.cur_iter_done():
            if bracket.finished():
                for trial_id in list(bracket.live):
                    bracket.cleanup_trial(trial_id)
                    bracket.retired += 1
                    action = STOP if trial_id == current else action
                    if trial_id != current:
                        self._end(trial_id)
                return action
            good, bad = bracket.successive_halving()
            self._num_stopped += len(bad)
            for trial_id in bad:
                bracket.cleanup_trial(trial_id)
                if trial_id == current:
                    action = STOP
                else:
                    self._end(trial_id)
            for trial_id in good:
                if not bracket.continue_trial(trial_id):
                    continue  # already past the next milestone too: the loop halves again
                if trial_id == current:
                    action = CONTINUE
                else:
                    self._unpause_trial(trial_runner, trial_id)
        return action

    def _unpause_trial(self, trial_runner: Any, trial_id: str) -> None:
        """A paused good trial may run again (choose_trial_to_run returns it)."""

    def _end(self, trial_id: str) -> None:
        """End a trial other than the reporting one, whatever it is doing."""
        view = self._views.get(trial_id)
        status = None if view is None else view.status
        if status is TrialStatus.RUNNING:
            self._stop_on_result.add(trial_id)
        elif status in _WAITING:
            self._to_stop.add(trial_id)

    def _decision(self, trial_runner: Any, action: str) -> Any:
        """The action, with the waiting trials to end when there are any."""
        if not self._to_stop:
            return action
        waiting = []
        for trial_id in sorted(self._to_stop):
            view = self._views.get(trial_id)
            if view is not None and view.status in _WAITING:
                waiting.append(trial_id)
            else:
                self._to_stop.discard(trial_id)  # ended (or running again) meanwhile
        if not waiting:
            return action
        return Decision(action=action, stop_trials=tuple(waiting))

    def on_trial_remove(self, trial_runner: Any, trial: Any) -> None:
        """The trial left its bracket; the rest of the bracket may now be halved."""
        trial_id = trial.trial_id
        self._to_stop.discard(trial_id)
        self._stop_on_result.discard(trial_id)
        bracket = self._trial_info.get(trial_id)
        if bracket is None or trial_id not in bracket.live:
            return
        bracket.cleanup_trial(trial_id)
        if not bracket.finished():
            self._process_bracket(trial_runner, bracket, None)

    def on_trial_complete(self, trial_runner: Any, trial: Any, result: dict) -> None:
        self.on_trial_remove(trial_runner, trial)

    def on_trial_error(self, trial_runner: Any, trial: Any) -> None:
        self.on_trial_remove(trial_runner, trial)

    # ---- choosing --------------------------------------------------------------------
    def choose_trial_to_run(self, trial_runner: Any) -> Any:
        """Fair scheduling: the least complete bracket's first runnable trial, band by
        band. None while every waiting trial waits for its bracket."""
        for band in self._hyperbands:
            brackets = sorted((b for b in band if b is not None),
                              key=lambda b: b.completion_percentage())
            for bracket in brackets:
                chosen = self._runnable_in(bracket, trial_runner)
                if chosen is not None:
                    return chosen
        return None

    def _runnable_in(self, bracket: _Bracket, trial_runner: Any) -> Any:
        # By status alone: a trial whose release is still finishing may be returned; the
        # controller then waits for that release (asking the runner costs O(trials)).
        for trial_id in bracket.live:
            if not bracket.continue_trial(trial_id):
                continue
            view = self._views.get(trial_id)
            if view is None or view.status not in _WAITING:
                continue
            if trial_runner.has_resources_for_trial(view):
                return view
        return None

    def results_before_decision(self, trial_runner: Any, trial: Any) -> int | None:
        trial_id = trial.trial_id
        bracket = self._trial_info.get(trial_id)
        if self._to_stop or trial_id in self._stop_on_result or bracket is None:
            return 1  # a decision is due (or the trial is not ours to batch)
        if self._time_attr != TRAINING_ITERATION:
            return 1
        if not bracket.stop_last_trials and bracket.halves == 0:
            return None  # it runs on: nothing more to decide
        now = (trial.last_result or {}).get(TRAINING_ITERATION, 0)
        if not isinstance(now, Real):
            return 1
        return max(1, math.ceil(bracket.cumul_r) - int(now))

    # ---- progress --------------------------------------------------------------------
    def debug_string(self) -> str:
        """One line per bracket, e.g.::

            Bracket(Max Size (n)=5, Milestone (r)=33, completed=14.6%): {PENDING: 2, ...}
        """
        total = sum(len(band) for band in self._hyperbands)
        out = f"Using HyperBand: num_stopped={self._num_stopped} total_brackets={total}"
        for i, band in enumerate(self._hyperbands):
            out += f"\nRound #{i}:"
            for bracket in band:
                if bracket is not None:
                    out += f"\n  {self._bracket_str(bracket)}"
        return out

    def _bracket_str(self, bracket: _Bracket) -> str:
        status = (f"Max Size (n)={bracket.n}, Milestone (r)={bracket.cumul_r}, "
                  f"completed={bracket.completion_percentage():.1%}")
        counts = collections.Counter(
            str(self._views[t].status) for t in bracket.all_trials if t in self._views)
        statuses = ", ".join(sorted(f"{k}: {v}" for k, v in counts.items()))
        return f"Bracket({status}): {{{statuses}}} "

    # ---- state -----------------------------------------------------------------------
    def get_state(self) -> dict:
        index = {}
        bands = []
        for b, band in enumerate(self._hyperbands):
            bands.append([None if br is None else br.to_state() for br in band])
            index.update({id(br): (b, i) for i, br in enumerate(band) if br is not None})
        current = self._state["bracket"]
        return {
            "bands": bands,
            "current": None if current is None else index[id(current)],
            "band_idx": self._state["band_idx"],
            "trial_info": {tid: index[id(br)] for tid, br in self._trial_info.items()},
            "num_stopped": self._num_stopped,
            "to_stop": sorted(self._to_stop),
            "stop_on_result": sorted(self._stop_on_result),
        }

    def set_state(self, state: dict, trial_runner: Any) -> None:
        views = {}
        for trial_id in state["trial_info"]:
            view = trial_runner.get_trial(trial_id)
            if view is not None:
                views[trial_id] = view
        self._views = views
        self._hyperbands = [
            [None if br is None else _Bracket.from_state(br, views.__contains__) for br in band]
            for band in state["bands"]
        ]
        current = state["current"]
        self._state = {
            "bracket": None if current is None else self._hyperbands[current[0]][current[1]],
            "band_idx": state["band_idx"],
        }
        self._trial_info = {tid: self._hyperbands[b][i]
                            for tid, (b, i) in state["trial_info"].items() if tid in views}
        self._num_stopped = state["num_stopped"]
        self._to_stop = set(state["to_stop"]) & set(views)
        self._stop_on_result = set(state["stop_on_result"]) & set(views)
