"""A callback that measures how far the state on disk lags behind finished trials."""

from __future__ import annotations

import tune_async as tune


class LagOnDisk(tune.Callback):
    """Every ``every`` finished trials, appends to ``lags`` how many of them the state
    file on disk does not show as TERMINATED yet (what a crash would lose)."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.finished = 0
        self.lags: list[int] = []

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.finished += 1
        if self.finished % self.every == 0:
            try:
                on_disk = tune.ExperimentAnalysis(trial.local_dir).trials
            except tune.TuneError:  # no state written yet
                on_disk = []
            self.lags.append(self.finished - sum(t.status == "TERMINATED" for t in on_disk))
