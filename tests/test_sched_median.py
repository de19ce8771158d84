"""MedianStoppingRule: the median rule after the grace period, yielding, state, tune.run."""

from __future__ import annotations

import logging
import random
import statistics

import pytest

import tune_async as tune
from tests.sched_sim import Quadratic, Sim, make_views
from tests.scripted_executor import ScriptedExecutor
from tune_async import transitions
from tune_async.schedulers import MedianStoppingRule
from tune_async.testing.conformance import FakeRunner, TrialSchedulerConformance
from tune_async.transitions import Event
from tune_async.trial import unwrap


class TestMedianConformance(TrialSchedulerConformance):
    def make_scheduler(self):
        return MedianStoppingRule(time_attr="training_iteration", grace_period=2,
                                  min_samples_required=1)


class TestMedianSoftStopConformance(TrialSchedulerConformance):
    def make_scheduler(self):
        return MedianStoppingRule(time_attr="training_iteration", grace_period=2,
                                  min_samples_required=1, hard_stop=False)


def rule(**kwargs):
    kwargs.setdefault("time_attr", "training_iteration")
    kwargs.setdefault("grace_period", 3)
    kwargs.setdefault("min_samples_required", 3)
    return MedianStoppingRule(metric="loss", mode="min", **kwargs)


def added(scheduler, count, start=True):
    views = make_views([{"x": i} for i in range(count)])
    runner = FakeRunner(views)
    for view in views:
        scheduler.on_trial_add(runner, view)
        if start:
            transitions.apply(unwrap(view), Event.START)
    return views, runner


def feed(scheduler, runner, view, losses, start=1):
    """Report ``losses`` at iterations start, start+1, ...; return the decisions."""
    return [scheduler.on_trial_result(runner, view, {"training_iteration": it, "loss": loss})
            for it, loss in enumerate(losses, start)]


# ---- constructor ------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, name", [
    ({"grace_period": -1}, "grace_period"),
    ({"min_samples_required": 0}, "min_samples_required"),
    ({"min_time_slice": -1}, "min_time_slice"),
    ({"mode": "median"}, "mode"),
])
def test_constructor_rejects_bad_values(kwargs, name):
    with pytest.raises(ValueError, match=name):
        MedianStoppingRule(**kwargs)


def test_constructor_rejects_non_numbers():
    with pytest.raises(TypeError, match="grace_period"):
        MedianStoppingRule(grace_period="60")


def test_defaults_are_1x():
    scheduler = MedianStoppingRule()
    assert (scheduler._time_attr, scheduler._grace_period, scheduler._min_samples_required,
            scheduler._min_time_slice, scheduler._hard_stop) == ("time_total_s", 60.0, 3, 0, True)


def test_reward_attr_is_deprecated_for_metric_max(caplog):
    with caplog.at_level(logging.WARNING):
        scheduler = MedianStoppingRule(reward_attr="acc")
    assert scheduler.metric == "acc" and scheduler._mode == "max"
    assert "reward_attr" in caplog.text


def test_without_metric_or_mode_on_trial_add_raises():
    with pytest.raises(ValueError, match="metric"):
        added(MedianStoppingRule(), 1)


# ---- the rule ---------------------------------------------------------------------------
def test_stops_a_trial_strictly_worse_than_the_median_of_running_means():
    scheduler = rule(grace_period=3)
    views, runner = added(scheduler, 5)
    # Three peers to iteration 4: running means over [3, 4] are 2, 2.5, 3 (median 2.5);
    # what they reported before the grace period (100) does not count.
    for view, b in zip(views[:3], [1, 2, 3], strict=True):
        feed(scheduler, runner, view, [100, 100, 3, b])
    # At iteration 3 the median is 3; at 4 it is 2.5: its best so far (2.6, reported at
    # iteration 3) is worse than that: stopped at iteration 4.
    assert feed(scheduler, runner, views[3], [9, 9, 2.6, 2.7]) == ["CONTINUE"] * 3 + ["STOP"]
    # Equal to the median is not strictly worse.
    assert feed(scheduler, runner, views[4], [9, 9, 2.5, 2.5]) == ["CONTINUE"] * 4
    assert scheduler.debug_string() == "Using MedianStoppingRule: num_stopped=1."


def test_never_stops_before_the_grace_period():
    scheduler = rule(grace_period=5)
    views, runner = added(scheduler, 4)
    for view in views[:3]:
        feed(scheduler, runner, view, [1.0] * 8)
    decisions = feed(scheduler, runner, views[3], [50.0] * 8)
    assert decisions[:4] == ["CONTINUE"] * 4 and decisions[4] == "STOP"


def test_compares_the_best_value_so_far_not_the_last():
    scheduler = rule(grace_period=1)
    views, runner = added(scheduler, 4)
    for view in views[:3]:
        feed(scheduler, runner, view, [2.0, 2.0, 2.0])
    # 1.0 at iteration 1 stays its best: never worse than the median of 2.0.
    assert feed(scheduler, runner, views[3], [1.0, 5.0, 5.0]) == ["CONTINUE"] * 3


def test_max_mode():
    scheduler = MedianStoppingRule(metric="acc", mode="max", time_attr="training_iteration",
                                   grace_period=1, min_samples_required=2)
    views, runner = added(scheduler, 3)
    for view, acc in zip(views[:2], [0.5, 0.7], strict=True):
        scheduler.on_trial_result(runner, view, {"training_iteration": 1, "acc": acc})
    assert scheduler.on_trial_result(
        runner, views[2], {"training_iteration": 1, "acc": 0.59}) == "STOP"


def test_hard_stop_false_pauses_once_then_runs_fifo():
    scheduler = rule(grace_period=1, hard_stop=False)
    views, runner = added(scheduler, 4)
    for view in views[:3]:
        feed(scheduler, runner, view, [1.0] * 3)
    assert feed(scheduler, runner, views[3], [9.0])[0] == "PAUSE"
    assert feed(scheduler, runner, views[3], [9.0, 9.0], start=2) == ["CONTINUE"] * 2
    assert scheduler.results_before_decision(runner, views[3]) is None


def test_too_few_samples_yields_to_waiting_trials():
    scheduler = rule(grace_period=1, min_time_slice=2)
    views, runner = added(scheduler, 2, start=False)
    transitions.apply(unwrap(views[0]), Event.START)  # the other one waits (PENDING)
    # Iteration 1: nobody to compare with, another trial waits: yield.
    assert feed(scheduler, runner, views[0], [1.0]) == ["PAUSE"]
    # Until min_time_slice (2 more iterations) has passed since, it keeps running.
    assert feed(scheduler, runner, views[0], [1.0, 1.0, 1.0], start=2) == [
        "CONTINUE", "CONTINUE", "PAUSE"]
    transitions.apply(unwrap(views[1]), Event.START)  # nobody waits any more
    assert feed(scheduler, runner, views[0], [1.0], start=5) == ["CONTINUE"]


def test_missing_keys_continue():
    scheduler = rule(grace_period=0, min_samples_required=1)
    views, runner = added(scheduler, 2)
    feed(scheduler, runner, views[0], [1.0])
    assert scheduler.on_trial_result(runner, views[1], {"training_iteration": 1}) == "CONTINUE"
    assert scheduler.on_trial_result(runner, views[1], {"loss": 9.0}) == "CONTINUE"


def test_results_before_decision_runs_to_the_grace_period():
    scheduler = rule(grace_period=5)
    views, runner = added(scheduler, 1)
    assert scheduler.results_before_decision(runner, views[0]) == 5
    unwrap(views[0]).last_result = {"training_iteration": 3}
    assert scheduler.results_before_decision(runner, views[0]) == 2
    unwrap(views[0]).last_result = {"training_iteration": 7}
    assert scheduler.results_before_decision(runner, views[0]) == 1
    timed = MedianStoppingRule(metric="loss", mode="min")  # time_total_s: can't see ahead
    timed.on_trial_add(runner, views[0])
    assert timed.results_before_decision(runner, views[0]) == 1


# ---- a whole schedule, checked against the rule's definition ----------------------------
def curve(config, iteration):
    return (config["x"] - 0.3) ** 2 + 1.0 / iteration


def configs(count=10, seed=1):
    xs = [i / (count - 1) for i in range(count)]
    random.Random(seed).shuffle(xs)
    return [{"x": x} for x in xs]


def recording(scheduler, log):
    original = scheduler.on_trial_result

    def on_trial_result(runner, trial, result):
        log.append((trial.trial_id, result["training_iteration"], result["loss"]))
        decision = original(runner, trial, result)
        log[-1] += (decision,)
        return decision

    scheduler.on_trial_result = on_trial_result
    return scheduler


def expected(log, index, grace, min_samples):
    """The rule's verdict on ``log[index]``, recomputed from the results seen before it."""
    trial_id, t, _, _ = log[index]
    seen = log[: index + 1]
    if t < grace:
        return "CONTINUE"
    last = {}
    for tid, it, _, _ in seen:
        last[tid] = it
    others = [tid for tid, it in last.items() if tid != trial_id and it >= t]
    if len(others) < min_samples:
        return "CONTINUE"  # nobody waits in this run (unlimited capacity)
    means = [statistics.mean(v for tid, it, v, _ in seen if tid == o and grace <= it <= t)
             for o in others]
    best = min(v for tid, _, v, _ in seen if tid == trial_id)
    return "STOP" if best > statistics.median(means) else "CONTINUE"


@pytest.mark.parametrize("seed", range(4))
def test_every_decision_follows_the_rule_and_none_before_grace(seed):
    log = []
    scheduler = recording(rule(grace_period=4, min_samples_required=3), log)
    sim = Sim(scheduler, make_views(configs()), curve, max_iter=15, shuffle_seed=seed)
    sim.add_all()
    sim.run()
    for index, entry in enumerate(log):
        assert entry[3] == expected(log, index, 4, 3), entry
    stopped = [tid for tid, it, _, d in log if d == "STOP"]
    assert stopped and all(sim.iters[tid] >= 4 for tid in stopped)
    best = min(sim.views, key=lambda v: abs(v.config["x"] - 0.3)).trial_id
    assert sim.iters[best] == 15
    assert sim.total < 10 * 15


def test_state_round_trip_continues_the_schedule():
    full = Sim(rule(grace_period=4), make_views(configs()), curve, capacity=4, max_iter=15)
    full.add_all()
    full.run()

    scheduler = rule(grace_period=4)
    sim = Sim(scheduler, make_views(configs()), curve, capacity=4, max_iter=15)
    sim.add_all()
    sim.advance(7)
    sim.resume_with(rule(grace_period=4))
    sim.run()
    assert sim.iters == full.iters
    assert sim.scheduler.debug_string() == full.scheduler.debug_string()


# ---- through tune.run -------------------------------------------------------------------
GRID = [i / 9 for i in range(10)]


@pytest.mark.parametrize("slots", [2, 10])
def test_tune_run_stops_below_median_trials_after_grace(results_dir, slots):
    scheduler = MedianStoppingRule(time_attr="training_iteration", grace_period=5)
    analysis = tune.run(Quadratic, config={"x": tune.grid_search(GRID)}, metric="loss",
                        mode="min", scheduler=scheduler, stop={"training_iteration": 20},
                        trial_executor=ScriptedExecutor(slots=slots), verbose=0,
                        local_dir=results_dir)
    its = {t.config["x"]: t.last_result["training_iteration"] for t in analysis.trials}
    stopped = {x: it for x, it in its.items() if it < 20}
    assert stopped, its
    assert min(stopped.values()) >= 5  # never before the grace period
    assert its[min(GRID, key=lambda x: abs(x - 0.3))] == 20
    assert sum(its.values()) < 10 * 20
    assert all(t.status == "TERMINATED" for t in analysis.trials)
    # The two best trials are never below the median.
    ranked = sorted(GRID, key=lambda x: abs(x - 0.3))
    assert not set(stopped) & set(ranked[:2])
