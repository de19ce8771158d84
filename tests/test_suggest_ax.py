"""AxSearch (suggest/ax.py) through tune.run, the conformance suite and resume.

Ax's BoTorch steps fit a GP and optimize an acquisition function each: the tests use a
short Sobol phase, a cheap acquisition optimization and one torch thread to stay fast.
"""

from __future__ import annotations

import sys
import warnings

import pytest

pytest.importorskip("ax")
torch = pytest.importorskip("torch")

import tune_async as tune  # noqa: E402
from tests.suggest_helpers import (  # noqa: E402
    DOMAIN_SPACE,
    best_loss,
    check_domain_values,
    interrupt_and_resume,
    one_blas_thread,
    report_uniform,
    run,
)
from tune_async.suggest import ConcurrencyLimiter  # noqa: E402
from tune_async.suggest.ax import AxSearch  # noqa: E402
from tune_async.testing import SearcherConformance  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from ax.adapter.registry import Generators  # noqa: E402
    from ax.generation_strategy.generation_strategy import (  # noqa: E402
        GenerationStep,
        GenerationStrategy,
    )
    from ax.service.ax_client import AxClient, ObjectiveProperties  # noqa: E402

# Ax and its pandas calls warn about their own deprecations (AxClient, pandas 4).
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]


@pytest.fixture(autouse=True)
def _fast_fits():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with one_blas_thread():
            yield
    finally:
        torch.set_num_threads(threads)


def quick_strategy(sobol_trials: int = 4) -> GenerationStrategy:
    """Sobol for a few trials, then BoTorch with a cheap acquisition optimization."""
    return GenerationStrategy(nodes=[
        GenerationStep(generator=Generators.SOBOL, num_trials=sobol_trials),
        GenerationStep(generator=Generators.BOTORCH_MODULAR, num_trials=-1,
                       generator_gen_kwargs={"model_gen_options": {"optimizer_kwargs": {
                           "num_restarts": 2, "raw_samples": 128}}}),
    ])


def sobol_only() -> GenerationStrategy:
    """Quasi-random only: for the tests that check plumbing, not the model."""
    return GenerationStrategy(nodes=[GenerationStep(generator=Generators.SOBOL,
                                                    num_trials=-1)])


class TestAxConformance(SearcherConformance):
    def make_searcher(self):
        return AxSearch(random_seed=0, generation_strategy=sobol_only())


class TestAxOwnSpaceConformance(SearcherConformance):
    def search_space(self):
        return {}

    def make_searcher(self):
        return AxSearch({"x": tune.uniform(0, 1), "c": tune.choice([[1], {"a": 2}])},
                        metric="loss", mode="min", random_seed=0,
                        generation_strategy=sobol_only())


def test_finds_the_optimum_of_a_quadratic(results_dir):
    """12 trials (4 Sobol, then BoTorch), two at a time: near the optimum at (1, -2)."""
    searcher = AxSearch(random_seed=0, generation_strategy=quick_strategy())
    analysis = run(ConcurrencyLimiter(searcher, max_concurrent=2, batch=True), 12,
                   local_dir=results_dir)
    assert len(analysis.trials) == 12
    assert best_loss(analysis) < 0.5, [t.last_result["loss"] for t in analysis.trials]
    nodes = {t.generator_runs[0]._generation_node_name
             for t in searcher._ax.experiment.trials.values()}
    assert any("BoTorch" in (n or "") for n in nodes), nodes


def test_every_domain_converts_and_constants_are_merged(results_dir):
    analysis = run(AxSearch(random_seed=1, generation_strategy=sobol_only()), 8,
                   config=dict(DOMAIN_SPACE), trainable=report_uniform, local_dir=results_dir)
    for trial in analysis.trials:
        check_domain_values(trial.config)


def test_conversion_of_a_space_given_to_the_searcher():
    searcher = AxSearch({"a": tune.loguniform(1e-3, 1), "n": tune.randint(0, 5),
                         "q": tune.quniform(0, 1, 0.25), "c": tune.choice(["x", [1]]),
                         "s": tune.choice(["u", "v", "w"]), "one": tune.randint(3, 4),
                         "deep": {"k": tune.uniform(2, 3)}},
                        metric="loss", mode="max", random_seed=0,
                        generation_strategy=sobol_only())
    params = searcher._ax.experiment.parameters
    assert params["a"].log_scale and (params["a"].lower, params["a"].upper) == (1e-3, 1)
    assert (params["n"].lower, params["n"].upper) == (0, 4)  # randint's upper bound excluded
    assert params["c"].values == [0, 1]  # mixed categories: sampled by index
    assert params["s"].values == ["u", "v", "w"] and not params["s"].is_ordered
    assert params["one"].value == 3  # a one-value domain is fixed
    assert "deep/k" in params
    objective = searcher._ax.experiment.optimization_config.objective
    assert objective.metric_names == ["loss"] and not objective.minimize
    for i in range(4):
        config = searcher.suggest(str(i))
        assert config["c"] in ("x", [1]) and config["one"] == 3
        assert config["q"] in (0.0, 0.25, 0.5, 0.75, 1.0)
        assert 2 <= config["deep"]["k"] <= 3


def test_convert_search_space_gives_ax_parameters():
    params = AxSearch.convert_search_space({"a": {"b": tune.uniform(0, 1)}, "k": "const",
                                            "c": tune.choice([1, 2])})
    by_name = {p["name"]: p for p in params}
    assert by_name["a/b"]["type"] == "range" and by_name["a/b"]["bounds"] == [0, 1]
    assert by_name["k"] == {"name": "k", "type": "fixed", "value": "const"}
    assert by_name["c"]["values"] == [1, 2]


def test_an_ax_parameter_list_and_constraints(results_dir):
    space = [{"name": "x", "type": "range", "bounds": [-5.0, 5.0]},
             {"name": "y", "type": "range", "bounds": [-5.0, 5.0]},
             {"name": "n/fixed", "type": "fixed", "value": 7}]
    searcher = AxSearch(space, metric="loss", mode="min", parameter_constraints=["x + y <= 1"],
                        random_seed=0, generation_strategy=sobol_only())
    analysis = run(searcher, 4, config={"const": 5}, local_dir=results_dir)
    for trial in analysis.trials:
        assert trial.config["x"] + trial.config["y"] <= 1 + 1e-9
        assert trial.config["n"] == {"fixed": 7} and trial.config["const"] == 5


def test_outcome_constraint_metrics_are_told(results_dir):
    def both(config):
        tune.report(loss=config["x"] ** 2, cost=config["x"])

    searcher = AxSearch({"x": tune.uniform(0, 1)}, metric="loss", mode="min",
                        outcome_constraints=["cost <= 0.5"], random_seed=0,
                        generation_strategy=sobol_only())
    run(searcher, 3, config={}, trainable=both, local_dir=results_dir)
    data = searcher._ax.experiment.fetch_data().df
    assert set(data["metric_name"]) == {"loss", "cost"} and len(data) == 6


def test_an_existing_ax_experiment_gives_space_metric_and_mode(results_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        client = AxClient(random_seed=0, verbose_logging=False,
                          generation_strategy=sobol_only())
    client.create_experiment(parameters=[{"name": "x", "type": "range", "bounds": [0.0, 1.0]}],
                             objectives={"score": ObjectiveProperties(minimize=False)})
    searcher = AxSearch(ax_client=client)
    assert (searcher.metric, searcher.mode) == ("score", "max")
    with pytest.raises(ValueError, match="do not pass values"):
        AxSearch(space=[{"name": "x", "type": "range", "bounds": [0.0, 1.0]}], ax_client=client)
    with pytest.raises(ValueError, match="'loss'.*'score'"):
        AxSearch(ax_client=client, metric="loss")

    def score(config):
        tune.report(score=config["x"])

    analysis = run(searcher, 3, config={}, trainable=score, metric="score", mode="max",
                   local_dir=results_dir)
    assert len(analysis.trials) == 3 and len(client.experiment.trials) == 3


@pytest.mark.parametrize("domain", [tune.randn(0, 1), tune.qrandn(0, 1, 0.25)])
def test_a_normal_distribution_is_a_clear_error(domain):
    with pytest.raises(ValueError, match="'a/n'.*normal"):
        AxSearch({"a": {"n": domain}}, metric="loss", mode="min")


@pytest.mark.parametrize("value, what", [(tune.grid_search([1, 2]), "grid_search"),
                                          (tune.sample_from(lambda _: 1), "sample_from")])
def test_grid_search_and_sample_from_name_the_key(value, what, results_dir):
    with pytest.raises(ValueError, match=f"{what}.*'deep/k'"):
        run(AxSearch(), 2, config={"x": tune.uniform(0, 1), "deep": {"k": value}},
            local_dir=results_dir)


def test_a_space_in_both_places_is_an_error(results_dir):
    with pytest.raises(ValueError, match="already instantiated with a search space"):
        run(AxSearch({"x": tune.uniform(-5, 5)}, metric="loss", mode="min"), 2,
            local_dir=results_dir)


def test_own_space_takes_metric_mode_from_tune_run(results_dir):
    searcher = AxSearch({"x": tune.uniform(-5, 5), "y": tune.uniform(-5, 5)}, random_seed=0,
                        generation_strategy=sobol_only())
    analysis = run(searcher, 3, config={"const": 5}, local_dir=results_dir)
    assert searcher.metric == "loss" and searcher.mode == "min"
    objective = searcher._ax.experiment.optimization_config.objective
    assert objective.metric_names == ["loss"] and objective.minimize
    assert [t.config["const"] for t in analysis.trials] == [5] * 3


def test_no_metric_or_mode_anywhere_is_a_clear_error(results_dir):
    with pytest.raises(ValueError, match="mode"):
        run(AxSearch(), 2, metric=None, mode=None, local_dir=results_dir)


def test_points_to_evaluate_run_first(results_dir):
    searcher = AxSearch(metric="loss", mode="min", random_seed=0,
                        generation_strategy=sobol_only(),
                        points_to_evaluate=[{"x": 1.0, "y": -2.0}, {"x": 0.0, "y": 0.0}])
    analysis = run(searcher, 3, local_dir=results_dir, metric=None, mode=None)
    configs = [(t.config["x"], t.config["y"]) for t in analysis.trials]
    assert configs[:2] == [(1.0, -2.0), (0.0, 0.0)]
    assert len(searcher._ax.experiment.trials) == 3


def test_failed_and_metricless_trials_are_not_told_as_data():
    searcher = AxSearch({"x": tune.uniform(0, 1)}, metric="loss", mode="min", random_seed=0,
                        generation_strategy=sobol_only())
    for i in range(3):
        searcher.suggest(str(i))
    searcher.on_trial_complete("0", {"loss": 1.0})
    searcher.on_trial_complete("1", None, error=True)
    searcher.on_trial_complete("2", {"loss": float("nan")})
    statuses = [t.status.name for t in searcher._ax.experiment.trials.values()]
    assert statuses == ["COMPLETED", "FAILED", "ABANDONED"]


def test_save_and_restore_continue_the_search(tmp_path):
    def make():
        return AxSearch({"x": tune.uniform(0, 1)}, metric="loss", mode="min", random_seed=0,
                        generation_strategy=sobol_only())

    searcher = make()
    for i in range(3):
        config = searcher.suggest(str(i))
        searcher.on_trial_complete(str(i), {"loss": config["x"]})
    searcher.save_to_dir(str(tmp_path), "s")
    restored = make()
    restored.restore_from_dir(str(tmp_path))
    assert len(restored._ax.experiment.trials) == 3
    assert restored.suggest("3") == searcher.suggest("3")


async def test_resume_continues_the_search(results_dir):
    made = []

    def make():
        made.append(AxSearch(random_seed=0, generation_strategy=sobol_only()))
        return made[-1]

    await interrupt_and_resume(make, results_dir)
    # One Ax experiment across both runs: the first run's trials and the new ones.
    assert len(made[-1]._ax.experiment.trials) >= 12


def test_a_missing_library_is_an_import_error_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ax.service.ax_client", None)  # the import now fails
    with pytest.raises(ImportError, match=r"pip install 'tune_async\[ax\]'.*ax-platform"):
        AxSearch()
