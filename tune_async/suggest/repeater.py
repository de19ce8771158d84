"""Repeater: evaluate each suggestion several times and report the mean score."""

from __future__ import annotations

import copy
import logging
import warnings
from typing import Any

import numpy as np

from tune_async.suggest.suggestion import (
    Searcher,
    _forward_trial_complete,
    _is_finished,
    _then,
    _WrapperSearcher,
)

logger = logging.getLogger(__name__)

TRIAL_INDEX = "__trial_index__"
"""Key of the repeat index (0..repeat-1) in each repeated trial's config."""


class _TrialGroup:
    """The trials sharing one suggestion; scores kept until all have reported."""

    def __init__(self, primary_trial_id: str, config: dict, max_trials: int = 1):
        if not isinstance(config, dict):
            raise TypeError(f"Searcher.suggest must return a dict, got {config!r}")
        self.primary_trial_id = primary_trial_id
        self.config = config
        self.max_trials = max_trials
        self._scores: dict[str, float | None] = {primary_trial_id: None}

    def add(self, trial_id: str) -> None:
        self._scores.setdefault(trial_id, None)

    def full(self) -> bool:
        return len(self._scores) >= self.max_trials

    def count(self) -> int:
        return len(self._scores)

    def report(self, trial_id: str, score: float) -> None:
        self._scores[trial_id] = score

    def finished_reporting(self) -> bool:
        return self.full() and None not in self._scores.values()

    def scores(self) -> list:
        return list(self._scores.values())


class Repeater(_WrapperSearcher):
    """A wrapper algorithm for repeating trials of the same parameters.

    Set ``tune.run(num_samples=...)`` to a multiple of ``repeat``: for example,
    ``num_samples=15`` gets 3 suggestions evaluated 5 times each. Leftover
    trials (``num_samples % repeat``) are ignored, with a warning. The wrapped
    searcher sees one trial per group (the first one's id) whose result is
    ``{metric: nanmean(scores)}``; a missing metric counts as NaN. As in 1.x,
    intermediate results (``on_trial_result``) and ``on_pause``/``on_unpause``
    are not passed on to the wrapped searcher.

    Arguments:
        searcher: Searcher object that the Repeater will optimize.
        repeat: Number of times to generate a trial with a repeated
            configuration. Defaults to 1.
        set_index: Sets a ``__trial_index__`` key (0..repeat-1) in each
            repeated trial's config. Defaults to True.
    """

    def __init__(self, searcher: Searcher, repeat: int = 1, set_index: bool = True):
        if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
            raise ValueError(f"repeat must be a positive int, got {repeat!r}")
        self.searcher = searcher
        self.repeat = repeat
        self._set_index = set_index
        self._groups: list[_TrialGroup] = []
        self._trial_id_to_group: dict[str, _TrialGroup] = {}
        self._current_group: _TrialGroup | None = None
        super().__init__()

    def suggest(self, trial_id: str) -> Any:
        if self._current_group is None or self._current_group.full():
            return _then(
                self.searcher.suggest(trial_id), lambda config: self._start_group(trial_id, config)
            )
        group = self._current_group
        index_in_group = group.count()
        group.add(trial_id)
        return self._config_for(trial_id, group, index_in_group)

    def _start_group(self, trial_id: str, config: Any) -> Any:
        if config is None or _is_finished(config):
            return config
        group = _TrialGroup(trial_id, copy.deepcopy(config), max_trials=self.repeat)
        self._groups.append(group)
        self._current_group = group
        return self._config_for(trial_id, group, 0)

    def _config_for(self, trial_id: str, group: _TrialGroup, index_in_group: int) -> dict:
        config = copy.deepcopy(group.config)
        if self._set_index:
            config[TRIAL_INDEX] = index_in_group
        self._trial_id_to_group[trial_id] = group
        return config

    # The wrapped searcher only knows each group's first trial id, and 1.x's Repeater
    # tells it nothing before the group's mean: intermediate results and pause /
    # unpause notifications are not forwarded (a searcher keyed by trial id would
    # otherwise see ids it never suggested).
    def on_trial_result(self, trial_id: str, result: dict) -> None:
        return None

    def on_pause(self, trial_id: str) -> None:
        return None

    def on_unpause(self, trial_id: str) -> None:
        return None

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> Any:
        group = self._trial_id_to_group.get(trial_id)
        if group is None:
            logger.error(
                "Trial %s not in group; cannot report score. Seen trials: %s",
                trial_id,
                list(self._trial_id_to_group),
            )
            return None
        metric = self.searcher.metric
        score = np.nan
        if result and metric in result and result[metric] is not None:
            score = result[metric]
        group.report(trial_id, score)
        if not group.finished_reporting():
            return None
        with warnings.catch_warnings():  # all-NaN groups: NaN, without a RuntimeWarning
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = float(np.nanmean(np.asarray(group.scores(), dtype=float)))
        return _forward_trial_complete(self.searcher, group.primary_trial_id, {metric: mean}, error)


def warn_num_samples(searcher: Any, num_samples: int) -> None:
    """Warn when ``num_samples`` is not a multiple of a Repeater's ``repeat``."""
    if isinstance(searcher, Repeater) and num_samples % searcher.repeat:
        logger.warning(
            "`num_samples` is now expected to be the total number of trials, "
            "including the repeat trials. For example, set num_samples=15 if "
            "you intend to obtain 3 search algorithm suggestions and repeat "
            "each suggestion 5 times. Any leftover trials "
            "(num_samples mod repeat) will be ignored."
        )
