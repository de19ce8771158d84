"""ConcurrencyLimiter and Repeater through tune.run (issue #8): measured, not just unit-tested."""

from __future__ import annotations

import json
import os
import time

import tune_async as tune
from tests.scripted_executor import ScriptedExecutor
from tune_async.suggest import ConcurrencyLimiter, Repeater, Searcher


class Counting(Searcher):
    """Suggests x = 1, 2, ...; records what it was told, and when."""

    def __init__(self):
        super().__init__(metric="score", mode="max")
        self.n = 0
        self.completed: list[tuple[str, float]] = []
        self.suggested_at: list[float] = []

    def suggest(self, trial_id):
        self.n += 1
        self.suggested_at.append(time.monotonic())
        return {"x": self.n}

    def on_trial_complete(self, trial_id, result=None, error=False):
        self.completed.append((trial_id, result["score"]))


def timed(config):
    start = time.monotonic()
    time.sleep(0.02 * (1 + config["x"] % 3))
    tune.report(score=config["x"] + config.get("__trial_index__", 0), start=start,
                end=time.monotonic())


def spans(analysis):
    return [(t.last_result["start"], t.last_result["end"]) for t in analysis.trials]


def max_overlap(intervals):
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    live = peak = 0
    for _, change in points:
        live += change
        peak = max(peak, live)
    return peak


def test_concurrency_limiter_never_runs_more_than_max_concurrent(tmp_path):
    searcher = Counting()
    analysis = tune.run(timed, search_alg=ConcurrencyLimiter(searcher, max_concurrent=2),
                        num_samples=8, local_dir=str(tmp_path), verbose=0,
                        trial_executor=ScriptedExecutor(slots=4))
    assert len(analysis.trials) == 8
    assert max_overlap(spans(analysis)) <= 2
    assert max_overlap(spans(analysis)) == 2  # and it does use both


def test_concurrency_limiter_batch_waits_for_the_whole_batch(tmp_path):
    searcher = Counting()
    analysis = tune.run(timed, search_alg=ConcurrencyLimiter(searcher, max_concurrent=3,
                                                             batch=True),
                        num_samples=9, local_dir=str(tmp_path), verbose=0,
                        trial_executor=ScriptedExecutor(slots=4))
    ends = sorted(end for _, end in spans(analysis))
    # Suggestions come in batches of 3; a batch is suggested after the previous one ended.
    batches = [searcher.suggested_at[i:i + 3] for i in (0, 3, 6)]
    for index in (1, 2):
        assert min(batches[index]) >= ends[3 * index - 1] - 1e-6
    assert len(searcher.completed) == 9


def test_repeater_tells_the_searcher_the_mean_once_per_group(tmp_path):
    searcher = Counting()
    analysis = tune.run(timed, search_alg=Repeater(searcher, repeat=3), num_samples=6,
                        local_dir=str(tmp_path), verbose=0,
                        trial_executor=ScriptedExecutor(slots=2))
    assert len(analysis.trials) == 6
    assert len(searcher.completed) == 2  # once per group of three repeats
    by_x: dict[int, list[float]] = {}
    for trial in analysis.trials:
        by_x.setdefault(trial.config["x"], []).append(trial.last_result["score"])
    assert sorted(len(v) for v in by_x.values()) == [3, 3]
    means = sorted(sum(v) / 3 for v in by_x.values())
    assert sorted(score for _, score in searcher.completed) == means
    for trial in analysis.trials:
        with open(os.path.join(trial.logdir, "params.json")) as f:
            assert "__trial_index__" in json.load(f)
