"""Search wrapper details a 1.x script notices (ray.tune 1.x suggest/repeater.py, suggestion.py)."""

from __future__ import annotations

import pytest

import tune_async as tune
from tune_async.suggest import ConcurrencyLimiter, Repeater, Searcher


class KeyedSearcher(Searcher):
    """Looks trials up by id in every hook, as model-based 1.x searchers do."""

    def __init__(self):
        super().__init__(metric="score", mode="max")
        self.n = 0
        self.live: dict[str, dict] = {}
        self.results: list[str] = []
        self.paused: list[str] = []
        self.completed: list[tuple[str, dict | None]] = []

    def suggest(self, trial_id):
        self.n += 1
        self.live[trial_id] = {"x": self.n}
        return {"x": self.n}

    def on_trial_result(self, trial_id, result):
        self.live[trial_id]  # KeyError for an id this searcher never suggested
        self.results.append(trial_id)

    def on_pause(self, trial_id):
        self.paused.append(trial_id)

    def on_unpause(self, trial_id):
        self.paused.append(trial_id)

    def on_trial_complete(self, trial_id, result=None, error=False):
        self.live.pop(trial_id)
        self.completed.append((trial_id, result))


def two_reports(config):
    for step in range(2):
        tune.report(score=config["x"] * 10 + config["__trial_index__"] + step)


def test_repeater_does_not_pass_intermediate_results_to_the_searcher(tmp_path):
    # 1.x Repeater has no on_trial_result: the searcher hears only each group's mean.
    searcher = KeyedSearcher()
    analysis = tune.run(two_reports, search_alg=Repeater(searcher, repeat=2), num_samples=4,
                        trial_executor=tune.LocalExecutor(), local_dir=str(tmp_path),
                        verbose=0)
    assert len(analysis.trials) == 4
    assert all(t.status == "TERMINATED" for t in analysis.trials)
    assert searcher.results == []
    assert sorted(result["score"] for _, result in searcher.completed) == [11.5, 21.5]
    assert searcher.live == {}


def test_repeater_does_not_forward_pause_notifications():
    searcher = KeyedSearcher()
    repeater = Repeater(searcher, repeat=2)
    repeater.suggest("a")
    repeater.suggest("b")
    repeater.on_trial_result("b", {"score": 1})
    repeater.on_pause("b")
    repeater.on_unpause("a")
    assert searcher.results == [] and searcher.paused == []


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2"])
def test_concurrency_limiter_bad_max_concurrent_is_an_assertion_error(bad):
    # 1.x: ``assert type(max_concurrent) is int and max_concurrent > 0``.
    with pytest.raises(AssertionError):
        ConcurrencyLimiter(KeyedSearcher(), max_concurrent=bad)
    with pytest.raises(ValueError):  # and still a ValueError
        ConcurrencyLimiter(KeyedSearcher(), max_concurrent=bad)


def test_concurrency_limiter_duplicate_trial_id_is_an_assertion_error():
    limiter = ConcurrencyLimiter(KeyedSearcher(), max_concurrent=2)
    limiter.suggest("t1")
    with pytest.raises(AssertionError, match="must be unique"):
        limiter.suggest("t1")
