"""The median stopping rule (ray.tune 1.x ``MedianStoppingRule``)."""

from __future__ import annotations

import logging
import math
import statistics
from bisect import bisect_left, bisect_right
from numbers import Real
from typing import Any

from tune_async.result import TIME_TOTAL_S, TRAINING_ITERATION
from tune_async.schedulers.async_hyperband import check_number, metric_and_mode, metric_op
from tune_async.schedulers.trial_scheduler import FIFOScheduler, TrialScheduler
from tune_async.trial import TrialStatus

logger = logging.getLogger(__name__)

_WAITING = (TrialStatus.PENDING, TrialStatus.PAUSED)


class _History:
    """One trial's (time, score) results, with prefix sums for running means.

    Scores are ``metric_op * value`` (larger is better); NaN scores are left out of
    the sums and the best.
    """

    __slots__ = ("times", "sums", "counts", "scores", "best", "monotonic", "last")

    def __init__(self) -> None:
        self.times: list[float] = []
        self.sums: list[float] = [0.0]  # sums[i]: total of the first i non-NaN scores
        self.counts: list[int] = [0]
        self.scores: list[float] = []
        self.best = -math.inf
        self.monotonic = True
        self.last = -math.inf  # the newest result's time

    def add(self, time: float, score: float) -> None:
        if self.times and time < self.times[-1]:
            self.monotonic = False  # restarted from an earlier point: scan from now on
        nan = math.isnan(score)
        self.times.append(time)
        self.scores.append(score)
        self.sums.append(self.sums[-1] + (0.0 if nan else score))
        self.counts.append(self.counts[-1] + (0 if nan else 1))
        if not nan and score > self.best:
            self.best = score
        self.last = time

    def running_mean(self, start: float, end: float) -> float | None:
        """Mean score of the results with ``start <= time <= end`` (None: none)."""
        if not self.monotonic:
            window = [s for t, s in zip(self.times, self.scores, strict=True)
                      if start <= t <= end and not math.isnan(s)]
            return sum(window) / len(window) if window else None
        lo, hi = bisect_left(self.times, start), bisect_right(self.times, end)
        count = self.counts[hi] - self.counts[lo]
        return (self.sums[hi] - self.sums[lo]) / count if count > 0 else None

    def to_state(self) -> list:
        return [list(self.times), list(self.scores)]

    @classmethod
    def from_state(cls, state: list) -> _History:
        history = cls()
        for time, score in zip(*state, strict=True):
            history.add(time, score)
        return history


class MedianStoppingRule(FIFOScheduler):
    """Implements the median stopping rule as described in the Vizier paper:

    https://research.google.com/pubs/pub46180.html

    Args:
        time_attr: The training result attr to use for comparing time. It may be
            something non-temporal such as ``training_iteration``; it must increase
            monotonically.
        reward_attr: Deprecated: use ``metric`` (sets ``metric=reward_attr`` and
            ``mode="max"``).
        metric: The training result objective value attribute. If None but a mode
            was passed, ``"_metric"`` is used.
        mode: One of {min, max}: whether the metric is minimized or maximized. As in
            1.x, once ``tune.run`` passed its metric/mode, a metric without a mode is
            minimized.
        grace_period: Only stop trials at least this old in time. The mean is only
            computed from this time onwards. The units are those of ``time_attr``.
        min_samples_required: Minimum number of trials to compute the median over.
        min_time_slice: Each trial runs at least this long before yielding (if it is
            not stopped). Trials ONLY yield if there are not enough samples to
            evaluate the current result AND other trials are waiting to run.
        hard_stop: If False, pauses trials instead of stopping them. When all other
            trials are complete, paused trials are resumed and run FIFO.
    """

    def __init__(
        self,
        time_attr: str = TIME_TOTAL_S,
        reward_attr: str | None = None,
        metric: str | None = None,
        mode: str | None = None,
        grace_period: float = 60.0,
        min_samples_required: int = 3,
        min_time_slice: float = 0,
        hard_stop: bool = True,
    ):
        check_number("grace_period", grace_period, at_least=0)
        check_number("min_samples_required", min_samples_required, at_least=1)
        check_number("min_time_slice", min_time_slice, at_least=0)
        self._metric, self._mode = metric_and_mode(reward_attr, metric, mode)
        self._time_attr = time_attr
        self._grace_period = grace_period
        self._min_samples_required = min_samples_required
        self._min_time_slice = min_time_slice
        self._hard_stop = hard_stop
        self._results: dict[str, _History] = {}
        self._stopped_trials: set[str] = set()
        self._last_pause: dict[str, float] = {}
        self._properties_set = False  # tune.run passed its metric/mode (1.x: mode -> min)

    def set_search_properties(self, metric: str | None, mode: str | None) -> bool:
        if not super().set_search_properties(metric, mode):
            return False
        # 1.x's MedianStoppingRule picks its comparison here even without a mode (min),
        # so a metric alone (from the constructor or tune.run) is enough from now on.
        self._properties_set = True
        return True

    def on_trial_add(self, trial_runner: Any, trial: Any) -> None:
        if not (self._properties_set and self._metric):
            self._check_metric_and_mode()

    def on_trial_result(self, trial_runner: Any, trial: Any, result: dict) -> str:
        """Stop a trial whose best value by time t is strictly worse than the median of
        the other trials' running means up to t (from the grace period on)."""
        if self._time_attr not in result or self._metric not in result:
            return TrialScheduler.CONTINUE
        trial_id = trial.trial_id
        if trial_id in self._stopped_trials:
            return TrialScheduler.CONTINUE  # paused once (hard_stop=False): FIFO from now on
        time = result[self._time_attr]
        self._history(trial_id).add(time, self._score(result))
        if time < self._grace_period:
            return TrialScheduler.CONTINUE
        mine = self._results[trial_id]
        others = [h for h in self._results.values() if h.last >= time and h is not mine]
        if len(others) < self._min_samples_required:
            return self._on_insufficient_samples(trial_runner, trial, time)
        return self._compare_with_median(trial_id, mine, others, time)

    def _compare_with_median(self, trial_id: str, mine: _History, others: list[_History],
                             time: float) -> str:
        grace = self._grace_period
        means = [m for m in (h.running_mean(grace, time) for h in others) if m is not None]
        best = mine.best
        if not means or best == -math.inf:
            return TrialScheduler.CONTINUE  # nothing comparable (no values in the window)
        median = statistics.median(means)
        logger.debug("Trial %s best res=%s vs median res=%s at t=%s", trial_id, best,
                     median, time)
        if best < median:
            logger.debug("MedianStoppingRule: early stopping %s", trial_id)
            self._stopped_trials.add(trial_id)
            return TrialScheduler.STOP if self._hard_stop else TrialScheduler.PAUSE
        return TrialScheduler.CONTINUE

    def _on_insufficient_samples(self, trial_runner: Any, trial: Any, time: float) -> str:
        last = self._last_pause.get(trial.trial_id, -math.inf)
        if time - last > self._min_time_slice and _others_wait(trial_runner, trial):
            self._last_pause[trial.trial_id] = time
            return TrialScheduler.PAUSE  # yield the resources to the waiting trials
        return TrialScheduler.CONTINUE

    def on_trial_complete(self, trial_runner: Any, trial: Any, result: dict) -> None:
        if self._time_attr in result and self._metric in result:
            self._history(trial.trial_id).add(result[self._time_attr], self._score(result))

    def _history(self, trial_id: str) -> _History:
        history = self._results.get(trial_id)
        if history is None:
            history = self._results[trial_id] = _History()
        return history

    def _score(self, result: dict) -> float:
        value = result[self._metric]
        if isinstance(value, bool) or not isinstance(value, Real):
            return math.nan
        # No mode (tune.run gave none): 1.x compares with `min`.
        return metric_op(self._mode or "min") * float(value)

    def results_before_decision(self, trial_runner: Any, trial: Any) -> int | None:
        if trial.trial_id in self._stopped_trials:
            return None  # FIFO from now on
        if self._time_attr != TRAINING_ITERATION:
            return 1
        now = (trial.last_result or {}).get(TRAINING_ITERATION, 0)
        if not isinstance(now, Real):
            return 1
        # Every result before the grace period continues; the one reaching it decides.
        return max(1, math.ceil(self._grace_period) - int(now))

    def debug_string(self) -> str:
        return f"Using MedianStoppingRule: num_stopped={len(self._stopped_trials)}."

    def get_state(self) -> dict:
        return {
            "results": {tid: h.to_state() for tid, h in self._results.items()},
            "stopped": sorted(self._stopped_trials),
            "last_pause": dict(self._last_pause),
        }

    def set_state(self, state: dict, trial_runner: Any) -> None:
        self._results = {tid: _History.from_state(h) for tid, h in state["results"].items()}
        self._stopped_trials = set(state["stopped"])
        self._last_pause = dict(state["last_pause"])


def _others_wait(trial_runner: Any, trial: Any) -> bool:
    """Whether another trial is PENDING or PAUSED (and could use the resources)."""
    waiting = getattr(trial_runner, "waiting_trials", None)
    candidates = waiting() if waiting is not None else trial_runner.get_trials()
    return any(t.trial_id != trial.trial_id and t.status in _WAITING for t in candidates)
