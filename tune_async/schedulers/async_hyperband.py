"""Asynchronous successive halving (ray.tune 1.x ``AsyncHyperBandScheduler``/``ASHAScheduler``)."""

from __future__ import annotations

import bisect
import logging
import math
from numbers import Real
from typing import Any

import numpy as np

from tune_async.error import AssertedValueError
from tune_async.result import TRAINING_ITERATION
from tune_async.schedulers.trial_scheduler import FIFOScheduler, TrialScheduler

logger = logging.getLogger(__name__)


# ---- argument helpers shared by the metric-based schedulers -----------------------------
def metric_and_mode(reward_attr: str | None, metric: str | None,
                    mode: str | None) -> tuple[str | None, str | None]:
    """1.x's handling of ``reward_attr`` (deprecated: metric=reward_attr, mode="max")."""
    if mode is not None and mode not in ("min", "max"):
        raise AssertedValueError(f"`mode` must be 'min' or 'max', got {mode!r}")
    if reward_attr is not None:
        logger.warning(
            "`reward_attr` is deprecated and will be removed in a future version of Tune. "
            "Setting `metric=%s` and `mode=max`.", reward_attr)
        return reward_attr, "max"
    return metric, mode


def check_number(name: str, value: Any, *, positive: bool = False,
                 at_least: float | None = None, above: float | None = None) -> None:
    """Raise TypeError/ValueError naming ``name`` when ``value`` is not a fitting number."""
    if isinstance(value, bool) or not isinstance(value, Real) or math.isnan(value):
        raise TypeError(f"`{name}` must be a number, got {value!r}")
    if positive and not value > 0:
        raise AssertedValueError(f"`{name}` must be positive, got {value!r}")
    if at_least is not None and value < at_least:
        raise AssertedValueError(f"`{name}` must be >= {at_least}, got {value!r}")
    if above is not None and not value > above:
        raise AssertedValueError(f"`{name}` must be > {above}, got {value!r}")


def metric_op(mode: str | None) -> float:
    """+1 when larger is better, -1 when smaller is: every comparison is 'larger wins'."""
    return -1.0 if mode == "min" else 1.0


class AsyncHyperBandScheduler(FIFOScheduler):
    """Implements the Async Successive Halving (ASHA).

    This should provide similar theoretical performance as HyperBand but avoids
    the straggler issues that HyperBand faces. With several brackets, each new
    trial joins a bracket at random, with a softmax over the brackets' rung counts.

    See https://openreview.net/forum?id=S1Y7OOlRZ

    Args:
        time_attr: A training result attr to use for comparing time. It may be
            something non-temporal such as ``training_iteration``; it must increase
            monotonically.
        reward_attr: Deprecated: use ``metric`` (sets ``metric=reward_attr`` and
            ``mode="max"``).
        metric: The training result objective value attribute. If None but a mode
            was passed, ``"_metric"`` is used.
        mode: One of {min, max}: whether the metric is minimized or maximized.
        max_t: Max time units per trial. Trials are stopped after ``max_t`` time
            units (determined by ``time_attr``) have passed.
        grace_period: Only stop trials at least this old in time. The units are those
            of ``time_attr``.
        reduction_factor: Sets the halving rate and amount (a unit-less scalar > 1).
        brackets: Number of brackets. Each bracket has a different halving rate,
            specified by the reduction factor.
    """

    def __init__(
        self,
        time_attr: str = TRAINING_ITERATION,
        reward_attr: str | None = None,
        metric: str | None = None,
        mode: str | None = None,
        max_t: float = 100,
        grace_period: float = 1,
        reduction_factor: float = 4,
        brackets: int = 1,
    ):
        check_number("max_t", max_t, positive=True)
        check_number("grace_period", grace_period, positive=True)
        if grace_period > max_t:
            raise AssertedValueError(f"`grace_period` must be <= `max_t`, got grace_period="
                             f"{grace_period!r} and max_t={max_t!r}")
        check_number("reduction_factor", reduction_factor, above=1)
        if isinstance(brackets, bool) or not isinstance(brackets, int):
            raise TypeError(f"`brackets` must be an int, got {brackets!r}")
        if brackets <= 0:
            raise AssertedValueError(f"`brackets` must be positive, got {brackets!r}")
        self._metric, self._mode = metric_and_mode(reward_attr, metric, mode)
        self._time_attr = time_attr
        self._max_t = max_t
        self._reduction_factor = reduction_factor
        self._brackets = [_Bracket(grace_period, max_t, reduction_factor, s)
                          for s in range(brackets)]
        self._trial_info: dict[str, int] = {}  # trial id -> bracket index
        self._bracket_cdf = _bracket_cdf(self._brackets)
        self._num_stopped = 0

    def on_trial_add(self, trial_runner: Any, trial: Any) -> None:
        self._check_metric_and_mode()
        # 1.x draws np.random.choice(brackets, p=softmax(rung counts)): one uniform from
        # the global RandomState, looked up in the cumulative probabilities. The same
        # draw and lookup here, without building the arrays for every trial.
        index = bisect.bisect_right(self._bracket_cdf, np.random.random_sample())
        self._trial_info[trial.trial_id] = min(index, len(self._brackets) - 1)

    def on_trial_result(self, trial_runner: Any, trial: Any, result: dict) -> str:
        if self._time_attr not in result or self._metric not in result:
            return TrialScheduler.CONTINUE
        if result[self._time_attr] >= self._max_t:
            action = TrialScheduler.STOP
        else:
            bracket = self._bracket_of(trial)
            if bracket is None:
                return TrialScheduler.CONTINUE
            action = bracket.on_result(trial.trial_id, result[self._time_attr],
                                       metric_op(self._mode) * result[self._metric])
        if action == TrialScheduler.STOP:
            self._num_stopped += 1
        return action

    def on_trial_complete(self, trial_runner: Any, trial: Any, result: dict) -> None:
        bracket = self._bracket_of(trial)
        if bracket is None or self._time_attr not in result or self._metric not in result:
            return
        bracket.on_result(trial.trial_id, result[self._time_attr],
                          metric_op(self._mode) * result[self._metric])
        del self._trial_info[trial.trial_id]

    def on_trial_remove(self, trial_runner: Any, trial: Any) -> None:
        self._trial_info.pop(trial.trial_id, None)

    def _bracket_of(self, trial: Any) -> _Bracket | None:
        index = self._trial_info.get(trial.trial_id)
        return None if index is None else self._brackets[index]

    def results_before_decision(self, trial_runner: Any, trial: Any) -> int | None:
        # Only training_iteration advances by exactly one per result; anything else may
        # jump past a rung, so each result is looked at.
        if self._time_attr != TRAINING_ITERATION:
            return 1
        bracket = self._bracket_of(trial)
        now = (trial.last_result or {}).get(TRAINING_ITERATION, 0)
        if bracket is None or not isinstance(now, Real):
            return 1
        nxt = bracket.next_decision(trial.trial_id, now)
        nxt = min(nxt, math.ceil(self._max_t))
        return max(1, int(nxt - now))

    def debug_string(self) -> str:
        out = f"Using AsyncHyperBand: num_stopped={self._num_stopped}"
        return out + "\n" + "\n".join(b.debug_str() for b in self._brackets)

    def get_state(self) -> dict:
        return {
            "trial_info": dict(self._trial_info),
            "rungs": [[dict(recorded) for _, recorded in b.rungs] for b in self._brackets],
            "num_stopped": self._num_stopped,
        }

    def set_state(self, state: dict, trial_runner: Any) -> None:
        self._trial_info = dict(state["trial_info"])
        for bracket, rungs in zip(self._brackets, state["rungs"], strict=True):
            for (_, recorded), saved in zip(bracket.rungs, rungs, strict=True):
                recorded.clear()
                recorded.update(saved)
            bracket.sort_scores()
        self._num_stopped = state["num_stopped"]


ASHAScheduler = AsyncHyperBandScheduler  # the 1.x alias


def _bracket_cdf(brackets: list[_Bracket]) -> list[float]:
    """Cumulative bracket probabilities, exactly as 1.x's np.random.choice computes them."""
    sizes = np.array([len(b.rungs) for b in brackets], dtype=float)
    probs = np.exp(sizes - sizes.max())
    probs = probs / probs.sum()
    cdf = probs.cumsum()
    return (cdf / cdf[-1]).tolist()


class _Bracket:
    """The rungs of one bracket, highest milestone first, each {trial id: score}.

    Scores are ``metric_op * value``: larger is better.
    """

    def __init__(self, min_t: float, max_t: float, reduction_factor: float, s: int):
        self.rf = reduction_factor
        count = int(np.log(max_t / min_t) / np.log(reduction_factor) - s + 1 + 1e-9)
        self.rungs: list[tuple[float, dict[str, float]]] = [
            (min_t * reduction_factor ** (k + s), {}) for k in reversed(range(count))
        ]
        # Each rung's non-NaN scores, kept sorted: a cutoff costs O(log n), not a
        # percentile over the whole rung per decision (10,000 trials: O(n^2) otherwise).
        self._sorted: dict[float, list[float]] = {m: [] for m, _ in self.rungs}

    def sort_scores(self) -> None:
        for milestone, recorded in self.rungs:
            self._sorted[milestone] = sorted(v for v in map(float, recorded.values())
                                             if not math.isnan(v))

    def cutoff(self, milestone: float) -> float | None:
        """The (1 - 1/rf) percentile of the rung's scores, NaN ignored (numpy's linear
        interpolation, as ``np.nanpercentile``)."""
        values = self._sorted[milestone]
        if not values:
            return None
        position = (1 - 1 / self.rf) * (len(values) - 1)
        low = math.floor(position)
        high = min(low + 1, len(values) - 1)
        return values[low] + (values[high] - values[low]) * (position - low)

    def on_result(self, trial_id: str, cur_iter: float, cur_rew: Any) -> str:
        action = TrialScheduler.CONTINUE
        for milestone, recorded in self.rungs:
            if cur_iter < milestone or trial_id in recorded:
                continue
            cutoff = self.cutoff(milestone)
            if cur_rew is None:
                logger.warning("Reward attribute is None! Consider reporting using a "
                               "different field.")
                break
            if cutoff is not None and cur_rew < cutoff:  # NaN never compares below
                action = TrialScheduler.STOP
            recorded[trial_id] = cur_rew
            score = float(cur_rew)
            if not math.isnan(score):
                bisect.insort(self._sorted[milestone], score)
            break
        return action

    def next_decision(self, trial_id: str, now: float) -> float:
        """The iteration at which this trial's next rung decision falls."""
        due = [m for m, recorded in self.rungs if trial_id not in recorded]
        if any(m <= now for m in due):
            return now + 1  # a rung it passed without being recorded: decide next result
        later = [m for m in due if m > now]
        return math.ceil(min(later)) if later else math.inf

    def debug_str(self) -> str:
        iters = " | ".join(f"Iter {milestone:.3f}: {self.cutoff(milestone)}"
                           for milestone, _ in self.rungs)
        return "Bracket: " + iters
