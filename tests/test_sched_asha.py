"""AsyncHyperBandScheduler / ASHAScheduler: rungs, cutoffs, batching hints, state, tune.run."""

from __future__ import annotations

import logging
import math
import random

import numpy as np
import pytest

import tune_async as tune
from tests.sched_sim import Quadratic, Sim, make_views
from tests.scripted_executor import ScriptedExecutor
from tune_async.schedulers import ASHAScheduler, AsyncHyperBandScheduler
from tune_async.testing.conformance import FakeRunner, TrialSchedulerConformance
from tune_async.trial import TrialStatus


class TestASHAConformance(TrialSchedulerConformance):
    def make_scheduler(self):
        return AsyncHyperBandScheduler(max_t=5, grace_period=1, reduction_factor=2)


class TestASHABracketsConformance(TrialSchedulerConformance):
    num_trials = 8

    def make_scheduler(self):
        return ASHAScheduler(max_t=8, grace_period=1, reduction_factor=2, brackets=3)


def curve(config, iteration):
    return (config["x"] - 0.3) ** 2 + 1.0 / iteration


def configs(count=16, seed=0):
    xs = [i / (count - 1) for i in range(count)]
    random.Random(seed).shuffle(xs)
    return [{"x": x} for x in xs]


def prepared(**kwargs):
    scheduler = AsyncHyperBandScheduler(metric="loss", mode="min", **kwargs)
    return scheduler


def added(scheduler, count):
    views = make_views([{"x": i} for i in range(count)])
    runner = FakeRunner(views)
    for view in views:
        scheduler.on_trial_add(runner, view)
    return views, runner


def result(it, loss):
    return {"training_iteration": it, "loss": loss}


# ---- constructor ------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, name", [
    ({"max_t": 0}, "max_t"),
    ({"grace_period": 0}, "grace_period"),
    ({"grace_period": 200}, "grace_period"),
    ({"reduction_factor": 1}, "reduction_factor"),
    ({"brackets": 0}, "brackets"),
    ({"mode": "best"}, "mode"),
])
def test_constructor_rejects_bad_values(kwargs, name):
    with pytest.raises(ValueError, match=name):
        AsyncHyperBandScheduler(**kwargs)


@pytest.mark.parametrize("kwargs, name", [
    ({"max_t": "100"}, "max_t"),
    ({"brackets": 1.5}, "brackets"),
    ({"reduction_factor": None}, "reduction_factor"),
])
def test_constructor_rejects_wrong_types(kwargs, name):
    with pytest.raises(TypeError, match=name):
        AsyncHyperBandScheduler(**kwargs)


def test_asha_is_the_1x_alias():
    assert ASHAScheduler is AsyncHyperBandScheduler


def test_reward_attr_is_deprecated_for_metric_max(caplog):
    with caplog.at_level(logging.WARNING):
        scheduler = AsyncHyperBandScheduler(reward_attr="acc")
    assert scheduler.metric == "acc" and scheduler._mode == "max"
    assert "reward_attr" in caplog.text


def test_without_metric_or_mode_on_trial_add_raises():
    with pytest.raises(ValueError, match="metric"):
        added(AsyncHyperBandScheduler(), 1)


# ---- rungs and decisions ----------------------------------------------------------------
def test_rungs_per_bracket():
    scheduler = AsyncHyperBandScheduler(brackets=3)  # max_t=100, grace=1, rf=4
    assert [[m for m, _ in b.rungs] for b in scheduler._brackets] == [
        [64, 16, 4, 1], [64, 16, 4], [64, 16]]


def test_first_result_at_a_rung_is_compared_with_the_rung_quantile():
    scheduler = prepared(grace_period=1, reduction_factor=2, max_t=100)
    views, runner = added(scheduler, 5)
    # Rung 1 records 4, 3, 2 (losses); the cutoff is their median (1 - 1/2 quantile).
    for view, loss in zip(views[:3], [4.0, 3.0, 2.0], strict=True):
        assert scheduler.on_trial_result(runner, view, result(1, loss)) == "CONTINUE"
    # -3.5 (a loss of 3.5) is below the median of -4, -3, -2: stopped.
    assert scheduler.on_trial_result(runner, views[3], result(1, 3.5)) == "STOP"
    assert scheduler.on_trial_result(runner, views[4], result(1, 2.5)) == "CONTINUE"
    # Later results before the next rung (2) are not compared again.
    assert scheduler.on_trial_result(runner, views[0], result(1, 99.0)) == "CONTINUE"
    assert "Using AsyncHyperBand: num_stopped=1" in scheduler.debug_string()
    assert "Bracket: Iter 64.000: None | " in scheduler.debug_string()


def test_max_mode_keeps_the_upper_quantile():
    scheduler = AsyncHyperBandScheduler(metric="acc", mode="max", reduction_factor=4)
    views, runner = added(scheduler, 5)
    for view, acc in zip(views[:4], [0.1, 0.2, 0.3, 0.4], strict=True):
        scheduler.on_trial_result(runner, view, {"training_iteration": 1, "acc": acc})
    # 75th percentile of 0.1..0.4 is 0.325
    assert scheduler.on_trial_result(runner, views[4],
                                     {"training_iteration": 1, "acc": 0.32}) == "STOP"


def test_nan_values_are_ignored_in_the_cutoff():
    scheduler = prepared(reduction_factor=2)
    views, runner = added(scheduler, 4)
    scheduler.on_trial_result(runner, views[0], result(1, float("nan")))
    scheduler.on_trial_result(runner, views[1], result(1, 1.0))
    assert scheduler.on_trial_result(runner, views[2], result(1, 2.0)) == "STOP"
    assert scheduler.on_trial_result(runner, views[3], result(1, float("nan"))) == "CONTINUE"


def test_max_t_stops_and_missing_keys_continue():
    scheduler = prepared(max_t=10)
    views, runner = added(scheduler, 1)
    assert scheduler.on_trial_result(runner, views[0], {"training_iteration": 3}) == "CONTINUE"
    assert scheduler.on_trial_result(runner, views[0], {"loss": 3.0}) == "CONTINUE"
    assert scheduler.on_trial_result(runner, views[0], result(10, 5.0)) == "STOP"


def test_never_pauses():
    scheduler = prepared(max_t=27, reduction_factor=3)
    sim = Sim(scheduler, make_views(configs(16)), curve, capacity=3)
    sim.add_all()
    sim.run()
    assert {a for _, _, a in sim.decisions} <= {"CONTINUE", "STOP"}


def test_results_before_decision_reaches_the_next_rung():
    scheduler = prepared(max_t=20, grace_period=1, reduction_factor=3)  # rungs 1, 3, 9
    views, runner = added(scheduler, 1)
    view = views[0]
    trial = view._trial

    def hint_after(iteration):
        if iteration:
            trial.last_result = result(iteration, 1.0)
            scheduler.on_trial_result(runner, view, trial.last_result)
        return scheduler.results_before_decision(runner, view)

    assert hint_after(0) == 1
    assert hint_after(1) == 2
    assert hint_after(3) == 6
    assert hint_after(9) == 11  # to max_t
    other = AsyncHyperBandScheduler(metric="loss", mode="min", time_attr="time_total_s")
    added(other, 1)
    assert other.results_before_decision(runner, view) == 1


# ---- the schedule -----------------------------------------------------------------------
@pytest.mark.parametrize("capacity", [None, 2])
def test_fewer_iterations_than_fifo_and_best_reaches_max_t(capacity):
    scheduler = prepared(max_t=27, grace_period=1, reduction_factor=3)
    sim = Sim(scheduler, make_views(configs(16)), curve, capacity=capacity)
    sim.add_all()
    sim.run()
    best = min(sim.views, key=lambda v: abs(v.config["x"] - 0.3)).trial_id
    assert sim.iters[best] == 27
    assert sim.total < 0.4 * 16 * 27
    assert all(v.status is TrialStatus.TERMINATED for v in sim.views)


def test_state_round_trip_continues_the_schedule():
    def fresh():
        return prepared(max_t=27, reduction_factor=3)

    np.random.seed(0)
    full = Sim(fresh(), make_views(configs(16)), curve, capacity=4)
    full.add_all()
    full.run()

    np.random.seed(0)
    scheduler = fresh()
    sim = Sim(scheduler, make_views(configs(16)), curve, capacity=4)
    sim.add_all()
    sim.advance(6)
    sim.resume_with(fresh())
    sim.run()
    assert sim.iters == full.iters
    assert sim.scheduler.debug_string() == full.scheduler.debug_string()


# ---- through tune.run -------------------------------------------------------------------
GRID = [i / 15 for i in range(16)]


def iterations(analysis):
    return {t.config["x"]: t.last_result["training_iteration"] for t in analysis.trials}


def test_tune_run_asha_against_fifo(results_dir):
    common = dict(config={"x": tune.grid_search(GRID)}, metric="loss", mode="min",
                  stop={"training_iteration": 27}, verbose=0, local_dir=results_dir)
    asha = tune.run(Quadratic, scheduler=ASHAScheduler(max_t=27, reduction_factor=3),
                    trial_executor=ScriptedExecutor(slots=2), **common)
    fifo = tune.run(Quadratic, trial_executor=ScriptedExecutor(slots=2), **common)
    asha_iters, fifo_iters = iterations(asha), iterations(fifo)
    assert sum(fifo_iters.values()) == 16 * 27
    # Under half of FIFO's work. (The grid's first trials each beat the ones before, so
    # they pass every rung; how many depends on how the two slots interleave: 6 or 7.)
    assert sum(asha_iters.values()) < 0.5 * 16 * 27
    assert asha_iters[min(GRID, key=lambda x: abs(x - 0.3))] == 27
    assert asha.best_config["x"] == min(GRID, key=lambda x: abs(x - 0.3))
    assert all(t.status == "TERMINATED" for t in asha.trials)
    # Each trial ended at a rung (1, 3, 9) or at max_t.
    assert set(asha_iters.values()) <= {1, 3, 9, 27}


def test_tune_run_fetches_whole_rungs_in_one_batch(results_dir):
    executor = ScriptedExecutor(slots=1)
    tune.run(Quadratic, config={"x": 0.3}, metric="loss", mode="min", verbose=0,
             scheduler=ASHAScheduler(max_t=27, reduction_factor=3),
             trial_executor=executor, local_dir=results_dir)
    sizes = [limits.max_results for _, limits in executor.fetches]
    assert sizes[:4] == [1, 2, 6, 18]  # to rungs 1, 3, 9, then max_t


def test_tune_run_missing_metric_names_it(results_dir, monkeypatch):
    def no_metric(config):
        tune.report(other=1.0)

    with pytest.raises(tune.TuneError):
        tune.run(no_metric, metric="loss", mode="min", scheduler=ASHAScheduler(),
                 trial_executor=ScriptedExecutor(slots=1), verbose=0, local_dir=results_dir)
    monkeypatch.setenv("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    analysis = tune.run(no_metric, metric="loss", mode="min", scheduler=ASHAScheduler(),
                        trial_executor=ScriptedExecutor(slots=1), verbose=0,
                        local_dir=results_dir)
    assert analysis.trials[0].status == "TERMINATED"


@pytest.mark.ray
@pytest.mark.parametrize("reuse_actors", [False, True])
def test_asha_on_ray(results_dir, reuse_actors):
    analysis = tune.run(Quadratic, config={"x": tune.grid_search([0.0, 0.3, 0.6, 0.9])},
                        scheduler=ASHAScheduler(max_t=9, reduction_factor=3),
                        metric="loss", mode="min", reuse_actors=reuse_actors, verbose=0,
                        local_dir=results_dir)
    its = iterations(analysis)
    assert its[0.3] == 9
    assert all(t.status == "TERMINATED" for t in analysis.trials)
    assert sum(its.values()) < 4 * 9
    assert not math.isnan(analysis.best_result["loss"])


def test_cutoff_equals_numpys_nanpercentile():
    import random

    import numpy as np

    from tune_async.schedulers.async_hyperband import _Bracket

    rng = random.Random(3)
    for rf in (2, 3, 4):
        bracket = _Bracket(min_t=1, max_t=100, reduction_factor=rf, s=0)
        milestone = bracket.rungs[-1][0]
        scores = []
        for i in range(60):
            score = float("nan") if i % 7 == 0 else rng.uniform(-5, 5)
            bracket.on_result(f"t{i}", milestone, score)
            scores.append(score)
            expected = (None if all(np.isnan(scores)) else
                        float(np.nanpercentile(scores, (1 - 1 / rf) * 100)))
            got = bracket.cutoff(milestone)
            assert (got is None) == (expected is None)
            if got is not None:
                assert abs(got - expected) < 1e-12
