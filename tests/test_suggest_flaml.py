"""BlendSearch and CFO (suggest/flaml.py) through tune.run and the conformance suite."""

from __future__ import annotations

import pytest

pytest.importorskip("flaml")
pytest.importorskip("optuna")  # BlendSearch's global search

import tune_async as tune  # noqa: E402
from tests.suggest_helpers import (  # noqa: E402
    DOMAIN_SPACE,
    check_beats_random,
    check_domain_values,
    report_uniform,
    run,
)
from tune_async.suggest.flaml import CFO, BlendSearch  # noqa: E402
from tune_async.testing import SearcherConformance  # noqa: E402


class TestCFOConformance(SearcherConformance):
    def make_searcher(self):
        return CFO(seed=0)


class TestBlendSearchConformance(SearcherConformance):
    def make_searcher(self):
        return BlendSearch(seed=0)


@pytest.mark.parametrize("cls", [CFO, BlendSearch])
def test_finds_the_optimum_and_beats_random_search(cls, results_dir):
    # Not in batches: FLAML may wait for a running trial's result before it proposes
    # again, which a batch (holding results back until both finished) would never give.
    # One trial at a time instead, so a seeded run is reproducible.
    check_beats_random(lambda seed: cls(seed=seed), budget=40, tolerance=1.0, batch=False,
                       results_dir=results_dir)


@pytest.mark.parametrize("cls", [CFO, BlendSearch])
def test_every_domain_converts_and_constants_are_merged(cls, results_dir):
    analysis = run(cls(seed=1), 12, config=dict(DOMAIN_SPACE), trainable=report_uniform,
                   local_dir=results_dir)
    for trial in analysis.trials:
        check_domain_values(trial.config)


def test_a_normal_distribution_is_a_clear_error():
    with pytest.raises(ValueError, match="tune.randn \\(config key 'n'\\)"):
        CFO(space={"n": tune.randn(0, 1)}, metric="loss", mode="min")


@pytest.mark.parametrize("value, what", [(tune.grid_search([1, 2]), "grid_search"),
                                          (tune.sample_from(lambda _: 1), "sample_from")])
def test_grid_search_and_sample_from_name_the_key(value, what, results_dir):
    with pytest.raises(ValueError, match=f"{what}.*'deep/k'"):
        run(CFO(), 2, config={"x": tune.uniform(0, 1), "deep": {"k": value}},
            local_dir=results_dir)


def test_a_space_in_both_places_is_an_error(results_dir):
    with pytest.raises(ValueError, match="already instantiated with a search space"):
        run(CFO(space={"x": tune.uniform(-5, 5)}, metric="loss", mode="min"), 2,
            local_dir=results_dir)


def test_points_to_evaluate_and_low_cost_config(results_dir):
    searcher = CFO(metric="loss", mode="min", points_to_evaluate=[{"x": 1.0, "y": -2.0}],
                   low_cost_partial_config={"x": 0.0})
    analysis = run(searcher, 3, local_dir=results_dir, metric=None, mode=None)
    assert (analysis.trials[0].config["x"], analysis.trials[0].config["y"]) == (1.0, -2.0)


def test_save_and_restore_continue_the_search(tmp_path):
    def make():
        return CFO(space={"x": tune.uniform(0, 1), "n": {"c": tune.choice([[1], "b"])}},
                   metric="loss", mode="min", seed=3)

    searcher = make()
    for i in range(3):
        config = searcher.suggest(str(i))
        searcher.on_trial_complete(str(i), {"loss": config["x"], "config": config})
    searcher.save_to_dir(str(tmp_path), "s")
    restored = make()
    restored.restore_from_dir(str(tmp_path))
    assert restored.suggest("3") == searcher.suggest("3")
