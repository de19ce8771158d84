"""SkOptSearch (suggest/skopt.py) through tune.run and the conformance suite."""

from __future__ import annotations

import pytest

skopt = pytest.importorskip("skopt")

import tune_async as tune  # noqa: E402
from tests.suggest_helpers import (  # noqa: E402
    DOMAIN_SPACE,
    check_beats_random,
    check_domain_values,
    one_blas_thread,
    report_uniform,
    run,
)
from tune_async.suggest.skopt import SkOptSearch  # noqa: E402
from tune_async.testing import SearcherConformance  # noqa: E402


@pytest.fixture(autouse=True)
def _fast_fits():
    with one_blas_thread():
        yield


def quick_optimizer(seed, dimensions, n_initial_points=6):
    """skopt's GP with one restart and sampled acquisition: the same model, cheaper."""
    from skopt.space import Space
    from skopt.utils import cook_estimator

    gp = cook_estimator("GP", space=Space(dimensions), random_state=seed,
                        n_restarts_optimizer=0)
    return skopt.Optimizer(dimensions, base_estimator=gp, n_initial_points=n_initial_points,
                           acq_optimizer="sampling", random_state=seed)


class TestSkOptConformance(SearcherConformance):
    def make_searcher(self):
        return SkOptSearch()


class TestSkOptInstanceConformance(SearcherConformance):
    def search_space(self):
        return {}

    def make_searcher(self):
        dims = [skopt.space.Real(0, 1), skopt.space.Categorical(["a", "b"])]
        return SkOptSearch(quick_optimizer(0, dims), ["x", "c"], metric="loss", mode="min")


def test_finds_the_optimum_and_beats_random_search(results_dir):
    dims = [skopt.space.Real(-5, 5), skopt.space.Real(-5, 5)]
    check_beats_random(lambda seed: SkOptSearch(quick_optimizer(seed, dims), ["x", "y"]),
                       budget=26, tolerance=0.05, seeds=(0, 1), config={},
                       results_dir=results_dir)


def test_every_domain_converts_and_constants_are_merged(results_dir):
    analysis = run(SkOptSearch(), 8, config=dict(DOMAIN_SPACE), trainable=report_uniform,
                   local_dir=results_dir)
    for trial in analysis.trials:
        check_domain_values(trial.config)


def test_conversion_of_a_space_given_to_the_searcher():
    searcher = SkOptSearch(space={"a": tune.loguniform(1e-3, 1), "n": tune.randint(0, 5),
                                  "c": tune.choice(["x", [1]])}, metric="loss", mode="min")
    dims = dict(zip(searcher._names, searcher._skopt_opt.space.dimensions, strict=True))
    assert dims["a"].prior == "log-uniform" and (dims["a"].low, dims["a"].high) == (1e-3, 1)
    assert (dims["n"].low, dims["n"].high) == (0, 4)  # randint's upper bound is exclusive
    assert list(dims["c"].categories) == [0, 1]  # mixed categories: sampled by index
    assert searcher.suggest("t")["c"] in ("x", [1])


@pytest.mark.parametrize("domain", [tune.randn(0, 1), tune.qrandn(0, 1, 0.25)])
def test_a_normal_distribution_is_a_clear_error(domain):
    with pytest.raises(ValueError, match="'n'.*normal"):
        SkOptSearch(space={"n": domain}, metric="loss", mode="min")


@pytest.mark.parametrize("value, what", [(tune.grid_search([1, 2]), "grid_search"),
                                          (tune.sample_from(lambda _: 1), "sample_from")])
def test_grid_search_and_sample_from_name_the_key(value, what, results_dir):
    with pytest.raises(ValueError, match=f"{what}.*'deep/k'"):
        run(SkOptSearch(), 2, config={"x": tune.uniform(0, 1), "deep": {"k": value}},
            local_dir=results_dir)


def test_a_space_in_both_places_is_an_error(results_dir):
    with pytest.raises(ValueError, match="already instantiated with a search space"):
        run(SkOptSearch(space={"x": tune.uniform(-5, 5)}, metric="loss", mode="min"), 2,
            local_dir=results_dir)


def test_points_to_evaluate_run_first_and_evaluated_rewards_are_told(results_dir):
    searcher = SkOptSearch(metric="loss", mode="min",
                           points_to_evaluate=[{"x": 1.0, "y": -2.0}, {"x": 0.0, "y": 0.0}])
    analysis = run(searcher, 3, local_dir=results_dir, metric=None, mode=None)
    configs = [(t.config["x"], t.config["y"]) for t in analysis.trials]
    assert configs[:2] == [(1.0, -2.0), (0.0, 0.0)]

    told = SkOptSearch(space={"x": tune.uniform(-5, 5)}, metric="loss", mode="max",
                       points_to_evaluate=[{"x": 1.0}], evaluated_rewards=[3.0])
    assert told._skopt_opt.yi == [-3.0]


def test_save_and_restore_continue_the_search(tmp_path):
    dims = [skopt.space.Real(0, 1)]
    searcher = SkOptSearch(quick_optimizer(0, dims, 2), ["x"], metric="loss", mode="min")
    for i in range(3):
        config = searcher.suggest(str(i))
        searcher.on_trial_complete(str(i), {"loss": config["x"]})
    searcher.save_to_dir(str(tmp_path), "s")
    restored = SkOptSearch(quick_optimizer(0, dims, 2), ["x"], metric="loss", mode="min")
    restored.restore_from_dir(str(tmp_path))
    assert restored.suggest("3") == searcher.suggest("3")
    assert len(restored._skopt_opt.yi) == 3
