"""Scheduler details a 1.x (1.3) script notices: constructor signatures, metric/mode rules."""

from __future__ import annotations

import inspect

import pytest

import tune_async as tune
from tests.sched_sim import make_views
from tune_async import transitions
from tune_async.schedulers import MedianStoppingRule, PopulationBasedTraining
from tune_async.testing.conformance import FakeRunner
from tune_async.transitions import Event
from tune_async.trial import unwrap


def _started(scheduler, count):
    views = make_views([{"x": i} for i in range(count)])
    runner = FakeRunner(views)
    for view in views:
        scheduler.on_trial_add(runner, view)
        transitions.apply(unwrap(view), Event.START)
    return views, runner


# ---- MedianStoppingRule: a metric without a mode is minimized once tune.run set up -------
# 1.x's MedianStoppingRule.set_search_properties sets its comparison (`min` unless the mode
# is "max") even when no mode was given, so `on_trial_add` only needs a metric.
def test_median_metric_without_mode_minimizes_after_set_search_properties():
    rule = MedianStoppingRule(time_attr="training_iteration", metric="loss",
                              grace_period=1, min_samples_required=1)
    assert rule.set_search_properties(None, None)
    views, runner = _started(rule, 2)  # no ValueError
    good, bad = views
    assert rule.on_trial_result(runner, good, {"training_iteration": 1, "loss": 1.0}) == \
        "CONTINUE"
    # loss 5 > the other trial's running mean 1: worse when minimizing -> STOP
    assert rule.on_trial_result(runner, bad, {"training_iteration": 1, "loss": 5.0}) == "STOP"


def test_median_metric_only_runs_through_tune_run(tmp_path):
    def trainable(config):
        for i in range(1, 4):
            tune.report(loss=config["x"] * i)

    analysis = tune.run(
        trainable, config={"x": tune.grid_search([1, 2])},
        scheduler=MedianStoppingRule(metric="loss", time_attr="training_iteration",
                                     grace_period=1, min_samples_required=1),
        trial_executor=tune.LocalExecutor(), local_dir=str(tmp_path), verbose=0)
    assert len(analysis.trials) == 2


def test_median_without_any_metric_still_raises():
    rule = MedianStoppingRule()
    rule.set_search_properties(None, None)
    with pytest.raises(ValueError, match="metric"):
        _started(rule, 1)


def test_median_metric_only_driven_directly_still_raises():
    # 1.x: without set_search_properties the comparison was never chosen.
    with pytest.raises(ValueError, match="mode"):
        _started(MedianStoppingRule(metric="loss"), 1)


# ---- constructor positional order (1.3) ---------------------------------------------------
def test_pbt_positional_arguments_follow_1x():
    # 1.3: (time_attr, reward_attr, metric, mode, perturbation_interval,
    #       hyperparam_mutations, quantile_fraction, resample_probability, ...)
    pbt = PopulationBasedTraining("training_iteration", None, "loss", "min", 2,
                                  {"x": [1, 2, 3]}, 0.5, 0.1)
    assert pbt._hyperparam_mutations == {"x": [1, 2, 3]}
    assert pbt._quantile_fraction == 0.5 and pbt._resample_probability == 0.1
    assert pbt._burn_in_period == 0.0
    names = list(inspect.signature(PopulationBasedTraining).parameters)
    assert names[:12] == [
        "time_attr", "reward_attr", "metric", "mode", "perturbation_interval",
        "hyperparam_mutations", "quantile_fraction", "resample_probability",
        "custom_explore_fn", "log_config", "require_attrs", "synch"]
    # still accepted by keyword
    assert PopulationBasedTraining(hyperparam_mutations={"x": [1]},
                                   burn_in_period=3)._burn_in_period == 3


def test_pb2_positional_arguments_follow_1x():
    pytest.importorskip("sklearn")
    from tune_async.schedulers.pb2 import PB2

    # 1.x PB2 has no reward_attr: (time_attr, metric, mode, perturbation_interval,
    # hyperparam_bounds, quantile_fraction, log_config, require_attrs, synch)
    pb2 = PB2("training_iteration", "loss", "min", 5, {"lr": [0.001, 0.1]})
    assert (pb2.metric, pb2._mode, pb2._perturbation_interval) == ("loss", "min", 5)
    assert pb2._hyperparam_bounds == {"lr": (0.001, 0.1)}
    assert "reward_attr" not in inspect.signature(PB2).parameters
    with pytest.raises(TypeError):
        PB2(reward_attr="acc", hyperparam_bounds={"lr": [0.001, 0.1]})


@pytest.mark.parametrize("make", [
    lambda s: s.ASHAScheduler(grace_period=0),
    lambda s: s.ASHAScheduler(max_t=5, grace_period=10),
    lambda s: s.AsyncHyperBandScheduler(reduction_factor=1),
    lambda s: s.ASHAScheduler(brackets=0),
    lambda s: s.HyperBandScheduler(max_t=0),
    lambda s: s.ASHAScheduler(mode="x"),
    lambda s: s.MedianStoppingRule(mode="x"),
    lambda s: s.PopulationBasedTraining(mode="x", hyperparam_mutations={"a": [1]}),
])
def test_scheduler_arguments_1x_asserts_are_assertion_and_value_errors(make):
    # 1.x checks these with assert: 1.x tests catch AssertionError; ours say ValueError.
    import tune_async.schedulers as schedulers

    with pytest.raises(AssertionError):
        make(schedulers)
    with pytest.raises(ValueError):
        make(schedulers)
