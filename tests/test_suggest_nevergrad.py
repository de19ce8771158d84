"""NevergradSearch (suggest/nevergrad.py) through tune.run and the conformance suite."""

from __future__ import annotations

import pytest

ng = pytest.importorskip("nevergrad")

import tune_async as tune  # noqa: E402
from tests.suggest_helpers import (  # noqa: E402
    DOMAIN_SPACE,
    check_beats_random,
    check_domain_values,
    report_uniform,
    run,
)
from tune_async.suggest.nevergrad import NevergradSearch  # noqa: E402
from tune_async.testing import SearcherConformance  # noqa: E402


class TestNevergradConformance(SearcherConformance):
    def make_searcher(self):
        return NevergradSearch(ng.optimizers.OnePlusOne, seed=0)


class TestNevergradInstanceConformance(SearcherConformance):
    def search_space(self):
        return {}

    def make_searcher(self):
        space = ng.p.Dict(x=ng.p.Scalar(lower=0, upper=1), c=ng.p.Choice(["a", "b"]))
        return NevergradSearch(ng.optimizers.OnePlusOne(parametrization=space), metric="loss",
                               mode="min")


def test_finds_the_optimum_and_beats_random_search(results_dir):
    check_beats_random(lambda seed: NevergradSearch(ng.optimizers.OnePlusOne, seed=seed),
                       budget=40, tolerance=0.5, results_dir=results_dir)


def test_every_domain_converts_and_constants_are_merged(results_dir):
    config = dict(DOMAIN_SPACE, randn=tune.randn(0.0, 1.0), qrandn=tune.qrandn(0.0, 1.0, 0.25),
                  choice=tune.choice(["a", "b", 3]))
    analysis = run(NevergradSearch(ng.optimizers.OnePlusOne, seed=1), 12, config=config,
                   trainable=report_uniform, local_dir=results_dir)
    for trial in analysis.trials:
        check_domain_values(trial.config)


def test_an_optimizer_is_required():
    with pytest.raises(ValueError, match="Optimizer"):
        NevergradSearch(None, {"x": tune.uniform(0, 1)}, metric="loss", mode="min")


@pytest.mark.parametrize("value, what", [(tune.grid_search([1, 2]), "grid_search"),
                                          (tune.sample_from(lambda _: 1), "sample_from")])
def test_grid_search_and_sample_from_name_the_key(value, what, results_dir):
    with pytest.raises(ValueError, match=f"{what}.*'deep/k'"):
        run(NevergradSearch(ng.optimizers.OnePlusOne), 2,
            config={"x": tune.uniform(0, 1), "deep": {"k": value}}, local_dir=results_dir)


def test_a_space_in_both_places_is_an_error(results_dir):
    with pytest.raises(ValueError, match="already instantiated with a search space"):
        run(NevergradSearch(ng.optimizers.OnePlusOne, {"x": tune.uniform(-5, 5)},
                            metric="loss", mode="min"), 2, local_dir=results_dir)


def test_points_to_evaluate_run_first(results_dir):
    searcher = NevergradSearch(ng.optimizers.OnePlusOne, metric="loss", mode="min", seed=0,
                               points_to_evaluate=[{"x": 1.0, "y": -2.0}, {"x": 0.0, "y": 0.0}])
    analysis = run(searcher, 4, local_dir=results_dir, metric=None, mode=None)
    configs = [(t.config["x"], t.config["y"]) for t in analysis.trials]
    assert configs[:2] == [(1.0, -2.0), (0.0, 0.0)]


def test_save_and_restore_continue_the_search(tmp_path):
    def make():
        return NevergradSearch(ng.optimizers.OnePlusOne, {"x": tune.uniform(0, 1)},
                               metric="loss", mode="max", seed=3)

    searcher = make()
    for i in range(3):
        config = searcher.suggest(str(i))
        searcher.on_trial_complete(str(i), {"loss": config["x"]})
    searcher.save_to_dir(str(tmp_path), "s")
    restored = make()
    restored.restore_from_dir(str(tmp_path))
    assert restored._nevergrad_opt.num_tell == 3
    assert restored.suggest("3") == searcher.suggest("3")
