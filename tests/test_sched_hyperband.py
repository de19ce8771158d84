"""HyperBandScheduler: geometry, synchronous halving, stop_trials, state, tune.run."""

from __future__ import annotations

import logging
import random

import pytest

import tune_async as tune
from tests.sched_sim import Quadratic, Sim, make_views
from tests.scripted_executor import ScriptedExecutor
from tune_async.schedulers import Decision, FIFOScheduler, HyperBandScheduler
from tune_async.testing.conformance import FakeRunner, TrialSchedulerConformance
from tune_async.trial import TrialStatus


class TestHyperBandConformance(TrialSchedulerConformance):
    def make_scheduler(self):
        return HyperBandScheduler(max_t=4, reduction_factor=2)


def curve(config, iteration):
    """Loss falls with training; the trial with x closest to 0.3 is always best."""
    return (config["x"] - 0.3) ** 2 + 1.0 / iteration


def configs(count=17, seed=0):
    xs = [i / (count - 1) for i in range(count)]
    random.Random(seed).shuffle(xs)
    return [{"x": x} for x in xs]


def simulate(scheduler, count=17, capacity=None, max_iter=10_000):
    sim = Sim(scheduler, make_views(configs(count)), curve, capacity=capacity,
              max_iter=max_iter)
    sim.add_all()
    sim.run()
    return sim


def best_id(sim):
    return min(sim.views, key=lambda v: abs(v.config["x"] - 0.3)).trial_id


# ---- constructor ------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, name", [
    ({"max_t": 0}, "max_t"),
    ({"max_t": -3}, "max_t"),
    ({"reduction_factor": 1}, "reduction_factor"),
    ({"mode": "avg"}, "mode"),
])
def test_constructor_rejects_bad_values(kwargs, name):
    with pytest.raises(ValueError, match=name):
        HyperBandScheduler(**kwargs)


def test_constructor_rejects_non_numbers():
    with pytest.raises(TypeError, match="max_t"):
        HyperBandScheduler(max_t="81")


def test_reward_attr_is_deprecated_for_metric_max(caplog):
    with caplog.at_level(logging.WARNING):
        scheduler = HyperBandScheduler(reward_attr="acc")
    assert scheduler.metric == "acc" and scheduler._mode == "max"
    assert "reward_attr" in caplog.text


def test_without_metric_or_mode_on_trial_add_raises():
    scheduler = HyperBandScheduler()
    (view,) = make_views([{"x": 0}])
    with pytest.raises(ValueError, match="metric"):
        scheduler.on_trial_add(FakeRunner([view]), view)


def test_tune_run_metric_and_mode_are_taken():
    scheduler = HyperBandScheduler()
    assert scheduler.set_search_properties("loss", "min") is True
    assert scheduler.metric == "loss"
    assert scheduler.set_search_properties("other", "max") is False


# ---- geometry ---------------------------------------------------------------------------
def test_default_brackets_follow_1x_sizes_and_paper_milestones():
    scheduler = HyperBandScheduler(metric="loss", mode="min")  # max_t=81, eta=3
    views = make_views([{"x": 0}] * (5 + 8 + 15 + 34 + 81))
    runner = FakeRunner(views)
    for view in views:
        scheduler.on_trial_add(runner, view)
    (band,) = scheduler._hyperbands
    assert [b.n0 for b in band] == [5, 8, 15, 34, 81]
    assert [b.milestones for b in band] == [
        [81], [27, 81], [9, 27, 81], [3, 9, 27, 81], [1, 3, 9, 27, 81]]
    # The next trial opens a second band.
    (extra,) = make_views([{"x": 1}])
    runner.trials.append(extra)
    scheduler.on_trial_add(runner, extra)
    assert len(scheduler._hyperbands) == 2
    text = scheduler.debug_string()
    assert text.startswith("Using HyperBand: num_stopped=0 total_brackets=6")
    assert "Round #0:" in text and "Round #1:" in text
    assert "Bracket(Max Size (n)=81, Milestone (r)=1, completed=0.0%): {PENDING: 81} " in text


def test_brackets_with_no_budget_are_skipped():
    # max_t=2, eta=3: s_max+1 = 2 but r0(s=1) = int(2/3) = 0: only the s=0 bracket exists.
    scheduler = HyperBandScheduler(metric="loss", mode="min", max_t=2)
    views = make_views([{"x": 0}] * 4)
    runner = FakeRunner(views)
    for view in views:
        scheduler.on_trial_add(runner, view)
    sizes = [[None if b is None else b.n0 for b in band] for band in scheduler._hyperbands]
    assert sizes == [[2, None], [2]]


# ---- the schedule -----------------------------------------------------------------------
@pytest.mark.parametrize("capacity", [None, 1, 3])
def test_far_fewer_iterations_than_fifo_and_best_reaches_max_t(capacity):
    sim = simulate(HyperBandScheduler(metric="loss", mode="min", max_t=9), capacity=capacity)
    fifo = simulate(FIFOScheduler(), capacity=capacity, max_iter=9)
    assert fifo.total == 17 * 9
    # Brackets s=0 (3 trials x 9), s=1 (5 x 3, then 2 more to 9), s=2 (9 x 1, 3 to 3, 1 to 9)
    assert sim.total == 27 + (15 + 2 * 6) + (9 + 3 * 2 + 1 * 6) == 75
    assert sim.iters[best_id(sim)] == 9
    assert sorted(set(sim.iters.values())) == [1, 3, 9]  # every trial ended at a milestone
    assert all(v.status is TrialStatus.TERMINATED for v in sim.views)


def test_trials_pause_at_milestone_until_the_bracket_is_done():
    # Nine trials in the s=2 bracket only (max_t=9: the s=0 and s=1 brackets take the
    # first 8; give those 8 a huge loss so they never matter).
    scheduler = HyperBandScheduler(metric="loss", mode="min", max_t=9)
    cfgs = [{"x": 100.0}] * 8 + [{"x": i / 8} for i in range(9)]
    sim = Sim(scheduler, make_views(cfgs), curve, capacity=1)
    sim.add_all()
    sim.run()
    s2 = [v.trial_id for v in sim.views[8:]]
    first_round = [(t, a) for t, it, a in sim.decisions if t in s2 and it == 1]
    assert [a for _, a in first_round[:-1]] == ["PAUSE"] * 8
    # The last to reach iteration 1 decided the halving: three continue, six end.
    stopped_at_1 = [t for t in s2 if sim.iters[t] == 1]
    assert len(stopped_at_1) == 6
    assert {sim.views[8 + i].config["x"] for i in range(9)
            if sim.iters[s2[i]] > 1} == {0.25, 0.375, 0.125}
    paused_then_stopped = set(sim.stopped_waiting) & set(s2)
    assert paused_then_stopped >= set(stopped_at_1) - {first_round[-1][0]}
    assert max(sim.iters[t] for t in s2) == 9


def test_halving_returns_stop_trials_for_paused_losers():
    scheduler = HyperBandScheduler(metric="loss", mode="min", max_t=3)
    # max_t=3, eta=3: brackets s=0 (n0=2, r=3) and s=1 (n0=3, milestones 1, 3).
    views = make_views([{"x": 9.0}, {"x": 9.0}, {"x": 0.9}, {"x": 0.3}, {"x": 0.5}])
    sim = Sim(scheduler, views, curve)
    sim.add_all()
    sim.start_chosen()
    for view in views[2:]:
        sim.iters[view.trial_id] = 1
    results = {v.trial_id: sim.result(v) for v in views[2:]}
    assert scheduler.on_trial_result(sim.runner, views[2], results["t002"]) == "PAUSE"
    sim.apply(views[2], "PAUSE")
    assert scheduler.on_trial_result(sim.runner, views[3], results["t003"]) == "PAUSE"
    sim.apply(views[3], "PAUSE")
    decision = scheduler.on_trial_result(sim.runner, views[4], results["t004"])
    # n: 3 -> 1; the best (x=0.3, paused) goes on, the worst paused one ends, the
    # reporting one (x=0.5) is bad too.
    assert decision == Decision(action="STOP", stop_trials=("t002",))
    sim.apply(views[4], decision)
    assert [v.status for v in views[2:]] == [TrialStatus.TERMINATED, TrialStatus.PAUSED,
                                             TrialStatus.TERMINATED]
    assert scheduler.choose_trial_to_run(sim.runner).trial_id == "t003"  # the survivor
    assert scheduler.debug_string().startswith("Using HyperBand: num_stopped=2")


def test_missing_metric_or_time_attr_continues():
    scheduler = HyperBandScheduler(metric="loss", mode="min", max_t=3)
    views = make_views([{"x": 0}])
    runner = FakeRunner(views)
    scheduler.on_trial_add(runner, views[0])
    assert scheduler.on_trial_result(runner, views[0], {"training_iteration": 5}) == "CONTINUE"
    assert scheduler.on_trial_result(runner, views[0], {"loss": 1.0}) == "CONTINUE"


def test_completed_trial_lets_its_bracket_halve():
    # A trial that ends early (its own stop condition) must not hold its bracket back.
    sim = simulate(HyperBandScheduler(metric="loss", mode="min", max_t=9), capacity=2,
                   max_iter=2)
    assert all(v.status is TrialStatus.TERMINATED for v in sim.views)
    assert max(sim.iters.values()) == 2


def test_erroring_trials_do_not_stall_the_bracket():
    scheduler = HyperBandScheduler(metric="loss", mode="min", max_t=9)
    sim = Sim(scheduler, make_views(configs(17)), curve, capacity=2)
    sim.add_all()
    failing = {v.trial_id for v in sim.views[::4]}
    original = sim.step

    def step(view):
        if view.trial_id in failing and sim.iters[view.trial_id] == 0:
            from tune_async import transitions
            from tune_async.transitions import Event
            from tune_async.trial import unwrap

            sim.iters[view.trial_id] = 0
            transitions.apply(unwrap(view), Event.FAIL)
            scheduler.on_trial_error(sim.runner, view)
            return
        original(view)

    sim.step = step
    sim.run()
    assert all(v.status.is_finished for v in sim.views)


def test_stop_last_trials_false_lets_the_survivors_run_on():
    scheduler = HyperBandScheduler(metric="loss", mode="min", max_t=9, stop_last_trials=False)
    sim = simulate(scheduler, max_iter=20)
    assert max(sim.iters.values()) == 20  # survivors are ended by their own limit
    assert sim.iters[best_id(sim)] == 20


def test_results_before_decision_is_the_distance_to_the_next_milestone():
    scheduler = HyperBandScheduler(metric="loss", mode="min", max_t=9)
    views = make_views(configs(17))
    sim = Sim(scheduler, views, curve)
    sim.add_all()
    sim.start_chosen()
    # The first three trials are in the s=0 bracket (milestone 9), the next five in s=1 (3).
    assert scheduler.results_before_decision(sim.runner, views[0]) == 9
    assert scheduler.results_before_decision(sim.runner, views[3]) == 3
    assert scheduler.results_before_decision(sim.runner, views[16]) == 1
    sim.step(views[0])
    assert scheduler.results_before_decision(sim.runner, views[0]) == 8
    other = HyperBandScheduler(metric="loss", mode="min", time_attr="time_total_s")
    other.on_trial_add(sim.runner, views[0])
    assert other.results_before_decision(sim.runner, views[0]) == 1


# ---- state ------------------------------------------------------------------------------
def test_state_round_trip_continues_the_schedule():
    full = simulate(HyperBandScheduler(metric="loss", mode="min", max_t=9), capacity=2)

    scheduler = HyperBandScheduler(metric="loss", mode="min", max_t=9)
    sim = Sim(scheduler, make_views(configs(17)), curve, capacity=2)
    sim.add_all()
    sim.advance(12)  # part way: some trials paused, some halved
    assert any(v.status is TrialStatus.PAUSED for v in sim.views)
    state = sim.resume_with(HyperBandScheduler(metric="loss", mode="min", max_t=9))
    assert "t000" in state["trial_info"]
    sim.run()
    assert sim.iters == full.iters
    assert sim.scheduler.debug_string() == full.scheduler.debug_string()


# ---- through tune.run -------------------------------------------------------------------
GRID = [i / 16 for i in range(17)]
BEST = min(GRID, key=lambda x: abs(x - 0.3))


def run_kwargs(results_dir, **extra):
    return dict(config={"x": tune.grid_search(GRID)}, metric="loss", mode="min",
                stop={"training_iteration": 9}, verbose=0, local_dir=results_dir, **extra)


def iterations(analysis):
    return {t.config["x"]: t.last_result["training_iteration"] for t in analysis.trials}


@pytest.mark.parametrize("slots", [1, 4])
def test_tune_run_hyperband_against_fifo(results_dir, slots):
    scheduler = HyperBandScheduler(max_t=9)
    analysis = tune.run(Quadratic, scheduler=scheduler,
                        trial_executor=ScriptedExecutor(slots=slots), **run_kwargs(results_dir))
    fifo = tune.run(Quadratic, trial_executor=ScriptedExecutor(slots=slots),
                    **run_kwargs(results_dir))
    its = iterations(analysis)
    assert sum(iterations(fifo).values()) == 17 * 9
    assert sum(its.values()) == 75
    assert its[BEST] == 9 and analysis.best_config == {"x": BEST}
    assert all(t.status == "TERMINATED" for t in analysis.trials)
    for trial in analysis.trials:  # paused trials went on from their state: no step twice
        steps = [r["i"] for r in result_lines(trial)]
        assert steps == list(range(1, len(steps) + 1))
    assert "Using HyperBand: num_stopped=11 total_brackets=3" in scheduler.debug_string()


def result_lines(trial):
    import json
    import os

    with open(os.path.join(trial.logdir, "result.json")) as f:
        return [json.loads(line) for line in f]


def test_tune_run_fetches_up_to_the_next_milestone(results_dir):
    executor = ScriptedExecutor(slots=1)
    tune.run(Quadratic, scheduler=HyperBandScheduler(max_t=9), trial_executor=executor,
             **run_kwargs(results_dir))
    assert max(limits.max_results for _, limits in executor.fetches) == 9
    assert {limits.max_results for _, limits in executor.fetches} <= {1, 2, 3, 6, 8, 9}


class RecordingHyperBand(HyperBandScheduler):
    restored = False
    added = 0

    def on_trial_add(self, trial_runner, trial):
        self.added += 1
        super().on_trial_add(trial_runner, trial)

    def set_state(self, state, trial_runner):
        self.restored = True
        super().set_state(state, trial_runner)


@pytest.mark.asyncio
async def test_resume_continues_the_schedule(results_dir):
    import anyio

    stopped_after = 20

    class CancelAfter(tune.Callback):
        def __init__(self, scope):
            self.scope, self.seen = scope, 0

        def on_trial_result(self, **info):
            self.seen += 1
            if self.seen == stopped_after:
                self.scope.cancel()

    first = HyperBandScheduler(max_t=9)
    with anyio.CancelScope() as scope:
        await tune.arun(Quadratic, scheduler=first, name="hb", callbacks=[CancelAfter(scope)],
                        checkpoint_freq=1, trial_executor=ScriptedExecutor(slots=2),
                        **run_kwargs(results_dir))
    assert scope.cancelled_caught
    second = RecordingHyperBand(max_t=9)
    analysis = await tune.arun(Quadratic, scheduler=second, name="hb", resume=True,
                               checkpoint_freq=1, trial_executor=ScriptedExecutor(slots=2),
                               **run_kwargs(results_dir))
    # The schedule came from the saved state: no trial was re-added to a new bracket.
    assert second.restored and second.added == 0
    assert all(t.status == "TERMINATED" for t in analysis.trials)
    its = iterations(analysis)
    assert sum(its.values()) == 75 and its[BEST] == 9
    assert "total_brackets=3" in second.debug_string()
