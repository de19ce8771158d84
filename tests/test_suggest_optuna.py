"""OptunaSearch (suggest/optuna.py) through tune.run, the conformance suite and resume."""

from __future__ import annotations

import pytest

optuna = pytest.importorskip("optuna")

import tune_async as tune  # noqa: E402
from tests.suggest_helpers import (  # noqa: E402
    DOMAIN_SPACE,
    check_beats_random,
    check_domain_values,
    interrupt_and_resume,
    report_uniform,
    run,
)
from tune_async.suggest.optuna import OptunaSearch  # noqa: E402
from tune_async.testing import SearcherConformance  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)


class TestOptunaConformance(SearcherConformance):
    def make_searcher(self):
        return OptunaSearch(seed=0)


class TestOptunaOwnSpaceConformance(SearcherConformance):
    def search_space(self):
        return {}

    def make_searcher(self):
        return OptunaSearch({"x": tune.uniform(0, 1), "c": tune.choice([[1], {"a": 2}])},
                            metric="loss", mode="min", seed=0)


def test_finds_the_optimum_and_beats_random_search(results_dir):
    check_beats_random(lambda seed: OptunaSearch(seed=seed), budget=40, tolerance=0.5,
                       results_dir=results_dir)


def test_every_domain_converts_and_constants_are_merged(results_dir):
    analysis = run(OptunaSearch(seed=1), 12, config=dict(DOMAIN_SPACE),
                   trainable=report_uniform, local_dir=results_dir)
    for trial in analysis.trials:
        check_domain_values(trial.config)


@pytest.mark.parametrize("domain", [tune.randn(0, 1), tune.qrandn(0, 1, 0.25)])
def test_a_normal_distribution_is_a_clear_error(domain):
    with pytest.raises(ValueError, match="'a/n'.*normal"):
        OptunaSearch({"a": {"n": domain}}, metric="loss", mode="min")


@pytest.mark.parametrize("value, what", [(tune.grid_search([1, 2]), "grid_search"),
                                          (tune.sample_from(lambda _: 1), "sample_from")])
def test_grid_search_and_sample_from_name_the_key(value, what, results_dir):
    with pytest.raises(ValueError, match=f"{what}.*'deep/k'"):
        run(OptunaSearch(), 2, config={"x": tune.uniform(0, 1), "deep": {"k": value}},
            local_dir=results_dir)


def test_a_space_in_both_places_is_an_error(results_dir):
    with pytest.raises(ValueError, match="already instantiated with a search space"):
        run(OptunaSearch({"x": tune.uniform(-5, 5)}, metric="loss", mode="min"), 2,
            local_dir=results_dir)


def test_own_space_takes_metric_mode_from_tune_run_and_merges_run_constants(results_dir):
    searcher = OptunaSearch({"x": tune.uniform(-5, 5), "y": tune.uniform(-5, 5)}, seed=0)
    analysis = run(searcher, 4, config={"const": 5}, local_dir=results_dir)
    assert searcher.metric == "loss" and searcher.mode == "min"
    assert [t.config["const"] for t in analysis.trials] == [5] * 4


def test_no_metric_or_mode_anywhere_is_a_clear_error(results_dir):
    with pytest.raises(ValueError, match="mode"):
        run(OptunaSearch(), 2, metric=None, mode=None, local_dir=results_dir)


def test_points_to_evaluate_run_first_and_evaluated_rewards_are_not_rerun(results_dir):
    searcher = OptunaSearch(metric="loss", mode="min", seed=0,
                            points_to_evaluate=[{"x": 1.0, "y": -2.0}, {"x": 0.0, "y": 0.0}])
    analysis = run(searcher, 4, local_dir=results_dir, metric=None, mode=None)
    configs = [(t.config["x"], t.config["y"]) for t in analysis.trials]
    assert configs[:2] == [(1.0, -2.0), (0.0, 0.0)]

    told = OptunaSearch({"x": tune.uniform(-5, 5), "y": tune.uniform(-5, 5)}, metric="loss",
                        mode="min", points_to_evaluate=[{"x": 1.0, "y": -2.0}],
                        evaluated_rewards=[0.0])
    assert len(told._study.trials) == 1 and told._study.best_value == 0.0


def test_evaluated_rewards_must_match_points():
    with pytest.raises(ValueError, match="same length"):
        OptunaSearch(points_to_evaluate=[{"x": 1}], evaluated_rewards=[1, 2])


def test_optuna_distributions_and_define_by_run_spaces(results_dir):
    space = {"x": optuna.distributions.FloatDistribution(-5, 5),
             "y": optuna.distributions.FloatDistribution(-5, 5)}
    analysis = run(OptunaSearch(space, metric="loss", mode="min", seed=0), 3, config={},
                   local_dir=results_dir)
    assert len(analysis.trials) == 3

    def define(trial):
        trial.suggest_float("x", -5, 5)
        trial.suggest_float("y", -5, 5)
        return {"extra": 1}

    analysis = run(OptunaSearch(define, metric="loss", mode="min", seed=0), 3, config={},
                   local_dir=results_dir)
    assert [t.config["extra"] for t in analysis.trials] == [1, 1, 1]


def test_save_and_restore_continue_the_study(tmp_path):
    searcher = OptunaSearch({"x": tune.uniform(0, 1)}, metric="loss", mode="min", seed=3)
    for i in range(3):
        config = searcher.suggest(str(i))
        searcher.on_trial_complete(str(i), {"loss": config["x"]})
    searcher.save_to_dir(str(tmp_path), "s")
    restored = OptunaSearch({"x": tune.uniform(0, 1)}, metric="loss", mode="min", seed=3)
    restored.restore_from_dir(str(tmp_path))
    assert len(restored._study.trials) == 3
    assert restored.suggest("3") == searcher.suggest("3")


def test_multi_objective():
    searcher = OptunaSearch({"x": tune.uniform(0, 1)}, metric=["a", "b"], mode=["min", "max"],
                            seed=0)
    for i in range(4):
        config = searcher.suggest(str(i))
        searcher.on_trial_complete(str(i), {"a": config["x"], "b": config["x"]})
    assert len(searcher._study.best_trials) >= 1


async def test_resume_continues_the_study(results_dir):
    made = []

    def make():
        made.append(OptunaSearch(seed=0))
        return made[-1]

    await interrupt_and_resume(make, results_dir)
    # The resumed searcher's study holds the first run's trials and the new ones: one
    # study, 12 trials. (A trial that finished after the last snapshot of the searcher's
    # state stays RUNNING in the study: the controller does not replay it to the searcher.)
    study = made[-1]._study
    assert len(study.trials) == 12
    assert sum(t.state.name == "COMPLETE" for t in study.trials) >= 10
