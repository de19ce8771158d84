"""Search spaces, stopping and analysis through the public ``tune.run`` (issue #2).

Runs on the in-process ScriptedExecutor (no Ray); every assertion is on what a
user sees: params.json, result.json, trial statuses, ExperimentAnalysis.
"""

from __future__ import annotations

import datetime
import glob
import json
import math
import os
import time

import numpy as np
import pytest

import tune_async as tune
from tests.scripted_executor import ScriptedExecutor
from tune_async.stopper import (
    CombinedStopper,
    ExperimentPlateauStopper,
    MaximumIterationStopper,
    TimeoutStopper,
    TrialPlateauStopper,
)


def run(fn, executor=None, **kwargs):
    kwargs.setdefault("verbose", 0)
    return tune.run(fn, trial_executor=executor or ScriptedExecutor(slots=4), **kwargs)


def params_of(trial):
    with open(os.path.join(trial.logdir, "params.json")) as f:
        return json.load(f)


def result_lines(trial):
    with open(os.path.join(trial.logdir, "result.json")) as f:
        return [json.loads(line) for line in f if line.strip()]


def one_result(config):
    tune.report(x=1)


def is_multiple(value, q):
    return math.isclose(round(value / q) * q, value, abs_tol=1e-9)


# ---- sampling ----------------------------------------------------------------------------
ALL_DOMAINS = {
    "uniform": tune.uniform(-2.0, 3.0),
    "quniform": tune.quniform(0.0, 10.0, 0.5),
    "loguniform": tune.loguniform(1e-4, 1e-1),
    "qloguniform": tune.qloguniform(1e-4, 1e-1, 5e-5),
    "randn": tune.randn(10.0, 0.1),
    "qrandn": tune.qrandn(0.0, 1.0, 0.25),
    "randint": tune.randint(-3, 4),
    "qrandint": tune.qrandint(0, 20, 5),
    "lograndint": tune.lograndint(1, 1000),
    "qlograndint": tune.qlograndint(2, 1000, 2),
    "choice": tune.choice(["a", "b", 3]),
    "sample_from": tune.sample_from(lambda spec: spec.config.randint * 10),
    "fixed": "constant",
}


def test_every_sampling_function_within_bounds_in_params_json(results_dir):
    analysis = run(one_result, config=ALL_DOMAINS, num_samples=30, local_dir=results_dir)
    assert len(analysis.trials) == 30
    for trial in analysis.trials:
        p = params_of(trial)
        assert p == trial.config
        assert -2.0 <= p["uniform"] < 3.0
        assert 0.0 <= p["quniform"] <= 10.0 and is_multiple(p["quniform"], 0.5)
        assert 1e-4 <= p["loguniform"] <= 1e-1
        assert 1e-4 <= p["qloguniform"] <= 1e-1 and is_multiple(p["qloguniform"], 5e-5)
        assert isinstance(p["randn"], float) and 9.0 < p["randn"] < 11.0
        assert is_multiple(p["qrandn"], 0.25)
        assert isinstance(p["randint"], int) and -3 <= p["randint"] < 4
        assert isinstance(p["qrandint"], int) and 0 <= p["qrandint"] <= 20
        assert p["qrandint"] % 5 == 0
        assert isinstance(p["lograndint"], int) and 1 <= p["lograndint"] <= 1000
        assert isinstance(p["qlograndint"], int) and 2 <= p["qlograndint"] <= 1000
        assert p["qlograndint"] % 2 == 0
        assert p["choice"] in ("a", "b", 3)
        assert p["sample_from"] == p["randint"] * 10
        assert p["fixed"] == "constant"
    # 30 samples actually vary (not one config repeated).
    assert len({params_of(t)["uniform"] for t in analysis.trials}) == 30
    assert {params_of(t)["choice"] for t in analysis.trials} == {"a", "b", 3}


def test_sample_from_depends_on_other_keys_and_nested_dicts(results_dir):
    config = {
        "a": tune.randint(1, 100),
        "b": tune.sample_from(lambda spec: spec.config.a * 2),
        "nested": {
            "c": tune.sample_from(lambda spec: spec.config.b + 1),
            "deeper": {"d": tune.sample_from(lambda spec: spec.config.nested.c * 10),
                       "e": tune.uniform(0, 1)},
        },
        "g": tune.grid_search([1, 2]),
        "h": tune.sample_from(lambda spec: spec.config.g * 100),
        "no_arg": tune.sample_from(lambda: "plain"),
    }
    analysis = run(one_result, config=config, num_samples=3, local_dir=results_dir)
    assert len(analysis.trials) == 6
    for trial in analysis.trials:
        p = params_of(trial)
        assert p["b"] == p["a"] * 2
        assert p["nested"]["c"] == p["b"] + 1
        assert p["nested"]["deeper"]["d"] == p["nested"]["c"] * 10
        assert 0 <= p["nested"]["deeper"]["e"] < 1
        assert p["h"] == p["g"] * 100
        assert p["no_arg"] == "plain"


def test_np_random_seed_reproduces_configs(results_dir):
    config = {
        "lr": tune.loguniform(1e-5, 1e-1),
        "units": tune.choice([16, 32, 64, 128]),
        "layers": tune.randint(1, 10),
        "grid": tune.grid_search(["x", "y"]),
        "noise": tune.sample_from(lambda spec: float(np.random.normal())),
    }

    def configs(name):
        np.random.seed(1234)
        analysis = run(one_result, config=config, num_samples=4, local_dir=results_dir,
                       name=name)
        return [params_of(t) for t in analysis.trials]

    first, second = configs("first"), configs("second")
    assert len(first) == 8
    assert first == second
    np.random.seed(99)
    third = [params_of(t) for t in run(one_result, config=config, num_samples=4,
                                        local_dir=results_dir, name="third").trials]
    assert third != first


def test_grid_search_cross_product_repeated_num_samples(results_dir):
    config = {"a": tune.grid_search([1, 2, 3]), "b": tune.grid_search(["x", "y"]),
              "r": tune.uniform(0, 1)}
    analysis = run(one_result, config=config, num_samples=2, local_dir=results_dir)
    pairs = sorted((params_of(t)["a"], params_of(t)["b"]) for t in analysis.trials)
    assert pairs == sorted([(a, b) for a in (1, 2, 3) for b in ("x", "y")] * 2)
    # Random domains are re-sampled for every grid point and every repeat.
    assert len({params_of(t)["r"] for t in analysis.trials}) == 12
    assert len(os.listdir(os.path.dirname(analysis.trials[0].logdir))) >= 12


# ---- stopping ----------------------------------------------------------------------------
def endless(config):
    i = 0
    while True:
        i += 1
        tune.report(loss=1.0, info={"steps": i * 10})
        time.sleep(0.002)


def test_unlimited_samples_end_with_time_budget(results_dir):
    start = time.monotonic()
    analysis = run(endless, num_samples=-1, time_budget_s=0.5, local_dir=results_dir)
    elapsed = time.monotonic() - start
    assert elapsed < 5
    assert len(analysis.trials) >= 2
    assert {t.status for t in analysis.trials} == {"TERMINATED"}
    assert any(os.path.exists(os.path.join(t.logdir, "result.json"))
               for t in analysis.trials if t.logdir)


@pytest.mark.parametrize("stop", [{"info/steps": 30}, {"info": {"steps": 30}}])
def test_stop_on_nested_key(results_dir, stop):
    analysis = run(endless, stop=stop, num_samples=2, local_dir=results_dir)
    for trial in analysis.trials:
        lines = result_lines(trial)
        assert [r["info"]["steps"] for r in lines] == [10, 20, 30]
        assert lines[-1]["done"] is True
        assert trial.status == "TERMINATED"


def test_stop_callable(results_dir):
    analysis = run(endless, stop=lambda trial_id, result: result["training_iteration"] >= 4,
                   local_dir=results_dir)
    assert len(result_lines(analysis.trials[0])) == 4


def test_maximum_iteration_stopper(results_dir):
    analysis = run(endless, stop=MaximumIterationStopper(max_iter=5), num_samples=3,
                   local_dir=results_dir)
    for trial in analysis.trials:
        assert len(result_lines(trial)) == 5
        assert trial.status == "TERMINATED"


def plateau_then_flat(config):
    for i in range(50):
        tune.report(loss=10.0 - i if i < 3 else 5.0)


def test_trial_plateau_stopper(results_dir):
    stopper = TrialPlateauStopper(metric="loss", std=0.01, num_results=4, grace_period=4)
    analysis = run(plateau_then_flat, stop=stopper, local_dir=results_dir)
    lines = result_lines(analysis.trials[0])
    # Losses 10, 9, 8, then 5.0 from the 4th result: the window of 4 is flat at the 7th.
    assert len(lines) == 7
    assert analysis.trials[0].status == "TERMINATED"


@pytest.mark.parametrize("max_iter, expected", [(3, 3), (20, 7)])
def test_combined_stopper_first_one_wins(results_dir, max_iter, expected):
    stopper = CombinedStopper(
        MaximumIterationStopper(max_iter),
        TrialPlateauStopper(metric="loss", std=0.01, num_results=4, grace_period=4),
    )
    analysis = run(plateau_then_flat, stop=stopper, local_dir=results_dir)
    assert len(result_lines(analysis.trials[0])) == expected


def test_list_of_stoppers_combined(results_dir):
    stop = [MaximumIterationStopper(6), TrialPlateauStopper(metric="loss")]
    analysis = run(plateau_then_flat, stop=stop, local_dir=results_dir)
    assert len(result_lines(analysis.trials[0])) == 6


def test_experiment_plateau_stopper_ends_everything(results_dir):
    stopper = ExperimentPlateauStopper(metric="loss", top=3, std=0.001, mode="min")
    analysis = run(endless, stop=stopper, num_samples=4, local_dir=results_dir)
    assert {t.status for t in analysis.trials} == {"TERMINATED"}
    assert max(len(result_lines(t)) for t in analysis.trials if t.logdir) < 50


def test_timeout_stopper_through_run(results_dir):
    start = time.monotonic()
    analysis = run(endless, stop=TimeoutStopper(0.3), num_samples=2, local_dir=results_dir)
    assert time.monotonic() - start < 5
    assert {t.status for t in analysis.trials} == {"TERMINATED"}


# ---- analysis ----------------------------------------------------------------------------
# Per-trial "score" sequences chosen so each scope picks a different winner (mode max):
# all -> A (10 once); last -> C (2.5); avg -> B (2.0); last-5-avg -> D (2.4).
SEQUENCES = {
    "A": [10, 0, 0, 0, 0, 0, 0],
    "B": [2, 2, 2, 2, 2, 2, 2],
    "C": [0, 0, 0, 0, 0, 0, 2.5],
    "D": [0, 0, 3, 3, 3, 3, 0],
}


def scripted_scores(config):
    for value in SEQUENCES[config["name"]]:
        tune.report(score=value)


@pytest.fixture
def scored_run(results_dir):
    return run(scripted_scores, config={"name": tune.grid_search(sorted(SEQUENCES))},
               metric="score", mode="max", local_dir=results_dir, name="scored")


@pytest.mark.parametrize(
    "scope, winner",
    [("all", "A"), ("last", "C"), ("avg", "B"), ("last-5-avg", "D"), ("last-10-avg", "B")],
)
def test_best_trial_scopes(scored_run, scope, winner):
    assert scored_run.get_best_config(scope=scope) == {"name": winner}
    assert scored_run.get_best_trial("score", "max", scope=scope).config["name"] == winner


def test_best_trial_scope_all_with_min(scored_run):
    # Min over all values: B never goes below 2, all others reach 0 (first of them wins).
    assert scored_run.get_best_config("score", "min", scope="all")["name"] != "B"
    assert scored_run.get_best_config("score", "min", scope="last") == {"name": "A"}


def test_bad_scope_rejected(scored_run):
    with pytest.raises(ValueError, match="scope"):
        scored_run.get_best_trial(scope="first")


def test_analysis_from_dir_and_state_file_agree(scored_run):
    exp_dir = os.path.dirname(scored_run.best_logdir)
    states = glob.glob(os.path.join(exp_dir, "experiment_state-*.json"))
    assert len(states) == 1
    from_dir = tune.ExperimentAnalysis(exp_dir)
    from_state = tune.ExperimentAnalysis(states[0])
    for analysis in (from_dir, from_state):
        assert analysis.best_config == scored_run.best_config == {"name": "C"}
        assert analysis.best_logdir == scored_run.best_logdir
        for scope, winner in (("all", "A"), ("avg", "B"), ("last-5-avg", "D")):
            assert analysis.get_best_config(scope=scope) == {"name": winner}
        assert sorted(c["name"] for c in analysis.get_all_configs().values()) == [
            "A", "B", "C", "D"]
        assert analysis.results_df.shape[0] == 4


def test_analysis_without_metric_needs_one(results_dir):
    analysis = run(scripted_scores, config={"name": tune.grid_search(["A", "B"])},
                   local_dir=results_dir)
    with pytest.raises(ValueError, match="metric"):
        _ = analysis.best_config
    assert analysis.get_best_config("score", "max", scope="all") == {"name": "A"}


# ---- forms of run_or_experiment and time budget --------------------------------------------
def test_time_budget_as_timedelta(results_dir):
    start = time.monotonic()
    analysis = run(endless, num_samples=2, time_budget_s=datetime.timedelta(seconds=0.3),
                   local_dir=results_dir)
    assert time.monotonic() - start < 5
    assert {t.status for t in analysis.trials} == {"TERMINATED"}


def test_registered_lambda_runs_by_name(results_dir):
    tune.register_trainable("doubler_by_name", lambda config: tune.report(v=config["v"] * 2))
    analysis = run("doubler_by_name", config={"v": tune.grid_search([1, 2, 3])},
                   local_dir=results_dir)
    assert sorted(result_lines(t)[-1]["v"] for t in analysis.trials) == [2, 4, 6]
    # A string trainable without name= gets an undated experiment directory.
    exp_dir = os.path.dirname(analysis.trials[0].logdir)
    assert exp_dir == os.path.join(results_dir, "doubler_by_name")


def test_list_of_experiments(results_dir):
    experiments = [
        tune.Experiment("first", one_result, config={"i": tune.grid_search([1, 2])},
                        local_dir=results_dir),
        tune.Experiment("second", one_result, num_samples=3, local_dir=results_dir),
    ]
    analysis = run(experiments)
    parents = sorted(os.path.basename(os.path.dirname(t.logdir)) for t in analysis.trials)
    assert parents == ["first", "first", "second", "second", "second"]
    assert {t.status for t in analysis.trials} == {"TERMINATED"}
