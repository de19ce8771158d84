"""A disk that cannot keep up, and how far the state on disk lags behind finished trials."""

from __future__ import annotations

import time

import tune_async as tune
from tune_async.state import ExperimentPersistence


def write_slowly(monkeypatch, per_write: float = 0.0, per_job: float = 0.0) -> None:
    """The state writer's thread takes ``per_write`` seconds per write plus ``per_job``
    per job queued in it (a slow disk)."""
    write = ExperimentPersistence._write

    def slow_write(self, jobs):
        time.sleep(per_write + per_job * len(jobs))
        write(self, jobs)

    monkeypatch.setattr(ExperimentPersistence, "_write", slow_write)


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
