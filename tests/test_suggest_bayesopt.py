"""BayesOptSearch (suggest/bayesopt.py) through tune.run and the conformance suite."""

from __future__ import annotations

import pytest

pytest.importorskip("bayes_opt")

import tune_async as tune  # noqa: E402
from tests.suggest_helpers import (  # noqa: E402
    check_beats_random,
    check_domain_values,
    one_blas_thread,
    report_uniform,
    run,
)
from tune_async.suggest.bayesopt import BayesOptSearch  # noqa: E402
from tune_async.testing import SearcherConformance  # noqa: E402

NUMERIC_SPACE = {
    "uniform": tune.uniform(-2.0, 3.0),
    "quniform": tune.quniform(0.0, 10.0, 0.5),
    "loguniform": tune.loguniform(1e-4, 1e-1),
    "qloguniform": tune.qloguniform(1e-4, 1e-1, 5e-5),
    "randint": tune.randint(-3, 4),
    "qrandint": tune.qrandint(0, 20, 5),
    "lograndint": tune.lograndint(1, 1000),
    "nested": {"lr": tune.uniform(0.1, 0.2), "const": "kept"},
    "fixed": "constant",
}


@pytest.fixture(autouse=True)
def _fast_fits():
    with one_blas_thread():
        yield


class TestBayesOptConformance(SearcherConformance):
    def search_space(self):
        return {"x": tune.uniform(0.0, 1.0), "n": tune.randint(0, 10),
                "nested": {"lr": tune.loguniform(1e-4, 1e-1)}, "const": 3}

    def make_searcher(self):
        return BayesOptSearch(random_state=0, random_search_steps=2)


def test_finds_the_optimum_and_beats_random_search(results_dir):
    # BayesOpt's suggestion is deterministic until a new result arrives: it runs one
    # trial at a time once it models, so it needs no batching to be reproducible.
    check_beats_random(
        lambda seed: BayesOptSearch(random_state=seed, random_search_steps=4,
                                    utility_kwargs={"kind": "ei", "xi": 0.0}),
        budget=14, tolerance=1.0, seeds=(0, 1, 2), batch=False, results_dir=results_dir)


def test_every_numeric_domain_converts_and_constants_are_merged(results_dir):
    analysis = run(BayesOptSearch(random_state=1, random_search_steps=6), 8,
                   config=dict(NUMERIC_SPACE), trainable=report_uniform, local_dir=results_dir)
    for trial in analysis.trials:
        check_domain_values(trial.config)


def test_log_domains_are_searched_in_log_space():
    searcher = BayesOptSearch({"lr": tune.loguniform(1e-4, 1e-1)}, metric="loss", mode="min")
    low, high = searcher.optimizer.space.bounds[0]
    assert (round(low, 6), round(high, 6)) == (round(-9.21034, 6), round(-2.302585, 6))


@pytest.mark.parametrize("domain, what", [(tune.choice([1, 2]), "choice"),
                                          (tune.randn(0, 1), "randn")])
def test_choice_and_randn_are_clear_errors(domain, what):
    with pytest.raises(ValueError, match=f"tune.{what} \\(config key 'a/b'\\)"):
        BayesOptSearch({"a": {"b": domain}}, metric="loss", mode="min")


def test_a_space_in_both_places_is_an_error(results_dir):
    with pytest.raises(ValueError, match="already instantiated with a search space"):
        run(BayesOptSearch({"x": tune.uniform(-5, 5)}, metric="loss", mode="min"), 2,
            local_dir=results_dir)


def test_bounds_as_tuples_and_points_to_evaluate(results_dir):
    searcher = BayesOptSearch({"x": (-5, 5), "y": (-5, 5)}, metric="loss", mode="min",
                              points_to_evaluate=[{"x": 1.0, "y": -2.0}])
    analysis = run(searcher, 3, config={}, local_dir=results_dir, metric=None, mode=None)
    assert (analysis.trials[0].config["x"], analysis.trials[0].config["y"]) == (1.0, -2.0)


def test_errored_trials_do_not_stall_the_random_phase():
    searcher = BayesOptSearch({"x": tune.uniform(0, 1)}, metric="loss", mode="min",
                              random_search_steps=2)
    searcher.suggest("a")
    searcher.suggest("b")
    assert searcher.suggest("c") is None  # waits for the random phase
    searcher.on_trial_complete("a", None, error=True)
    searcher.on_trial_complete("b", {"loss": 0.5})
    assert searcher.suggest("c") is not None


def test_save_and_restore_continue_the_search(tmp_path):
    def make():
        return BayesOptSearch({"x": tune.uniform(0, 1)}, metric="loss", mode="min",
                              random_search_steps=2, random_state=5)

    searcher = make()
    for i in range(3):
        config = searcher.suggest(str(i))
        searcher.on_trial_complete(str(i), {"loss": config["x"]})
    searcher.save_to_dir(str(tmp_path), "s")
    restored = make()
    restored.restore_from_dir(str(tmp_path))
    assert len(restored.optimizer.res) == 3
    assert restored.suggest("3") == searcher.suggest("3")


def test_repeated_suggestions_end_the_search_after_patience(results_dir):
    searcher = BayesOptSearch({"n": tune.randint(0, 2)}, metric="loss", mode="min",
                              random_search_steps=1, patience=2, random_state=0)
    analysis = run(searcher, 20, config={}, trainable=lambda c: tune.report(loss=c["n"]),
                   local_dir=results_dir)
    assert 1 <= len(analysis.trials) <= 2  # two values only: then FINISHED, not an error
