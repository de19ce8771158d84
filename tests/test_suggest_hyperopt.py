"""HyperOptSearch (suggest/hyperopt.py) through tune.run, the conformance suite and resume."""

from __future__ import annotations

import pytest

hyperopt = pytest.importorskip("hyperopt")

import tune_async as tune  # noqa: E402
from tests.suggest_helpers import (  # noqa: E402
    DOMAIN_SPACE,
    check_beats_random,
    check_domain_values,
    interrupt_and_resume,
    report_uniform,
    run,
)
from tune_async.suggest.hyperopt import HyperOptSearch  # noqa: E402
from tune_async.testing import SearcherConformance  # noqa: E402


class TestHyperOptConformance(SearcherConformance):
    def make_searcher(self):
        return HyperOptSearch(random_state_seed=0, n_initial_points=2)


class TestHyperOptOwnSpaceConformance(SearcherConformance):
    def search_space(self):
        return {}

    def make_searcher(self):
        space = {"x": hyperopt.hp.uniform("x", 0, 1), "c": hyperopt.hp.choice("c", [1, 2])}
        return HyperOptSearch(space, metric="loss", mode="min", random_state_seed=0)


def test_finds_the_optimum_and_beats_random_search(results_dir):
    check_beats_random(lambda seed: HyperOptSearch(random_state_seed=seed, n_initial_points=10),
                       budget=40, tolerance=0.5, results_dir=results_dir)


def test_every_domain_converts_and_constants_are_merged(results_dir):
    config = dict(DOMAIN_SPACE, randn=tune.randn(0.0, 1.0), qrandn=tune.qrandn(0.0, 1.0, 0.25))
    analysis = run(HyperOptSearch(random_state_seed=1, n_initial_points=4), 12, config=config,
                   trainable=report_uniform, local_dir=results_dir)
    for trial in analysis.trials:
        check_domain_values(trial.config)


def test_conditional_space_in_a_choice(results_dir):
    config = {"uniform": tune.uniform(0, 1),
              "model": tune.choice([{"kind": "a", "lr": tune.loguniform(1e-3, 1)},
                                    {"kind": "b", "depth": tune.randint(1, 4)}, "none"])}
    analysis = run(HyperOptSearch(random_state_seed=0), 15, config=config,
                   trainable=report_uniform, local_dir=results_dir)
    kinds = set()
    for trial in analysis.trials:
        model = trial.config["model"]
        if model == "none":
            kinds.add("none")
        elif model["kind"] == "a":
            kinds.add("a")
            assert set(model) == {"kind", "lr"} and 1e-3 <= model["lr"] <= 1
        else:
            kinds.add("b")
            assert set(model) == {"kind", "depth"} and model["depth"] in (1, 2, 3)
    assert kinds == {"a", "b", "none"}


@pytest.mark.parametrize("value, what", [(tune.grid_search([1, 2]), "grid_search"),
                                          (tune.sample_from(lambda _: 1), "sample_from")])
def test_grid_search_and_sample_from_name_the_key(value, what, results_dir):
    with pytest.raises(ValueError, match=f"{what}.*'deep/k'"):
        run(HyperOptSearch(), 2, config={"x": tune.uniform(0, 1), "deep": {"k": value}},
            local_dir=results_dir)


def test_a_space_in_both_places_is_an_error(results_dir):
    with pytest.raises(ValueError, match="already instantiated with a search space"):
        run(HyperOptSearch({"x": tune.uniform(-5, 5)}, metric="loss", mode="min"), 2,
            local_dir=results_dir)


def test_own_space_takes_metric_mode_from_tune_run_and_merges_run_constants(results_dir):
    searcher = HyperOptSearch({"x": tune.uniform(-5, 5), "y": tune.uniform(-5, 5)},
                              random_state_seed=0)
    analysis = run(searcher, 4, config={"const": 5}, local_dir=results_dir)
    assert searcher.metric == "loss" and searcher.mode == "min"
    assert [t.config["const"] for t in analysis.trials] == [5] * 4


def test_points_to_evaluate_run_first_and_evaluated_rewards_are_told(results_dir):
    searcher = HyperOptSearch(metric="loss", mode="min", random_state_seed=0,
                              points_to_evaluate=[{"x": 1.0, "y": -2.0}, {"x": 0.0, "y": 0.0}])
    analysis = run(searcher, 4, local_dir=results_dir, metric=None, mode=None)
    configs = [(t.config["x"], t.config["y"]) for t in analysis.trials]
    assert configs[:2] == [(1.0, -2.0), (0.0, 0.0)]

    told = HyperOptSearch({"x": tune.uniform(-5, 5), "y": tune.choice(["p", "q"])},
                          metric="loss", mode="max", points_to_evaluate=[{"x": 1.0, "y": "q"}],
                          evaluated_rewards=[3.0])
    assert told._trials.losses() == [-3.0]
    assert told.suggest("t")["y"] in ("p", "q")  # the told point is not suggested again
    assert len(told._trials.trials) == 2


def test_a_point_with_an_unknown_category_is_a_clear_error():
    with pytest.raises(ValueError, match="outside the domain"):
        HyperOptSearch({"y": tune.choice(["p", "q"])}, metric="loss", mode="min",
                       points_to_evaluate=[{"y": 1}])


def test_errored_and_nan_trials_are_left_out_of_the_model():
    searcher = HyperOptSearch({"x": tune.uniform(0, 1)}, metric="loss", mode="min",
                              random_state_seed=0, n_initial_points=1)
    for i, result in enumerate([{"loss": 1.0}, {"loss": float("nan")}, None]):
        searcher.suggest(str(i))
        searcher.on_trial_complete(str(i), result, error=result is None)
    assert searcher._trials.losses() == [1.0, None]
    assert 0 <= searcher.suggest("next")["x"] <= 1


def test_save_and_restore_continue_the_search(tmp_path):
    searcher = HyperOptSearch({"x": tune.uniform(0, 1)}, metric="loss", mode="min",
                              random_state_seed=3, n_initial_points=2)
    for i in range(3):
        config = searcher.suggest(str(i))
        searcher.on_trial_complete(str(i), {"loss": config["x"]})
    searcher.save_to_dir(str(tmp_path), "s")
    restored = HyperOptSearch({"x": tune.uniform(0, 1)}, metric="loss", mode="min")
    restored.restore_from_dir(str(tmp_path))
    assert len(restored._trials.trials) == 3
    assert restored.suggest("3") == searcher.suggest("3")


async def test_resume_continues_the_search(results_dir):
    made = []

    def make():
        made.append(HyperOptSearch(random_state_seed=0, n_initial_points=4))
        return made[-1]

    await interrupt_and_resume(make, results_dir)
    assert len(made[-1]._trials.trials) == 12  # one HyperOpt Trials object for the whole run
