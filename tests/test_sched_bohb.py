"""HyperBandForBOHB (with any searcher, and with TuneBOHB when its libraries are installed)."""

from __future__ import annotations

import pickle
import warnings

import pytest

import tune_async as tune
from tests.sched_sim import Quadratic, Sim, make_views
from tests.scripted_executor import ScriptedExecutor
from tune_async.schedulers import Decision, HyperBandForBOHB
from tune_async.suggest import Searcher
from tune_async.testing.conformance import FakeRunner, TrialSchedulerConformance
from tune_async.trial import TrialStatus


class TestHyperBandForBOHBConformance(TrialSchedulerConformance):
    def make_scheduler(self):
        return HyperBandForBOHB(max_t=4, reduction_factor=2)


class TestHyperBandForBOHBManyConformance(TrialSchedulerConformance):
    num_trials = 9

    def make_scheduler(self):
        return HyperBandForBOHB(max_t=4, reduction_factor=2)


class PauseLog(Searcher):
    """Records on_pause/on_unpause, as TuneBOHB would use them."""

    def __init__(self):
        super().__init__()
        self.events = []

    def on_pause(self, trial_id):
        self.events.append(("pause", trial_id))

    def on_unpause(self, trial_id):
        self.events.append(("unpause", trial_id))


class Holder:
    """What ``trial_runner.search_alg`` is under tune.run: a SearchGenerator with .searcher."""

    def __init__(self, searcher):
        self.searcher = searcher


def curve(config, iteration):
    return (config["x"] - 0.3) ** 2 + 1.0 / iteration


def bohb(**kwargs):
    return HyperBandForBOHB(metric="loss", mode="min", **kwargs)


def sim_with_log(scheduler, xs, capacity=None):
    sim = Sim(scheduler, make_views([{"x": x} for x in xs]), curve, capacity=capacity)
    log = PauseLog()
    sim.runner.search_alg = Holder(log)
    sim.add_all()
    return sim, log


def test_fills_the_largest_bracket_first():
    scheduler = bohb(max_t=9)
    views = make_views([{"x": 0}] * 10)
    runner = FakeRunner(views)
    for view in views:
        scheduler.on_trial_add(runner, view)
    (band,) = scheduler._hyperbands
    assert [b.milestones for b in band] == [[1, 3, 9], [3, 9]]
    assert [len(b.all_trials) for b in band] == [9, 1]


def test_paused_trials_tell_the_searcher_and_results_carry_the_budget():
    scheduler = bohb(max_t=9)
    xs = [i / 8 for i in range(9)]  # one full s=2 bracket (9 trials, milestones 1, 3, 9)
    sim, log = sim_with_log(scheduler, xs, capacity=3)
    budgets = []
    original = scheduler.on_trial_result

    def on_trial_result(runner, trial, result):
        decision = original(runner, trial, result)
        budgets.append(result["hyperband_info"].get("budget"))
        return decision

    scheduler.on_trial_result = on_trial_result
    sim.run()
    assert set(budgets) == {None, 1, 3, 9}
    paused = [t for kind, t in log.events if kind == "pause"]
    unpaused = [t for kind, t in log.events if kind == "unpause"]
    assert len(paused) == 8 + 2  # all but the last at milestone 1, then at 3
    assert set(unpaused) <= set(paused)
    best = min(sim.views, key=lambda v: abs(v.config["x"] - 0.3)).trial_id
    assert sim.iters[best] == 9
    assert sim.total == 9 * 1 + 3 * 2 + 1 * 6
    assert all(v.status is TrialStatus.TERMINATED for v in sim.views)


def test_an_unfilled_bracket_is_halved_when_nothing_runs():
    # Five trials in a bracket made for nine: they all pause at milestone 1; with nothing
    # running, choose_trial_to_run halves the bracket (9 -> 3 keep going).
    scheduler = bohb(max_t=9)
    sim, log = sim_with_log(scheduler, [0.0, 0.3, 0.5, 0.9, 1.0], capacity=5)
    sim.start_chosen()
    for view in sim.views:
        sim.step(view)
    assert [a for _, _, a in sim.decisions] == ["PAUSE"] * 5
    chosen = scheduler.choose_trial_to_run(sim.runner)
    assert chosen is not None
    survivors = {v.config["x"] for v in sim.views
                 if scheduler._trial_info[v.trial_id].continue_trial(v.trial_id)
                 and v.trial_id in scheduler._trial_info[v.trial_id].live}
    assert survivors == {0.0, 0.3, 0.5}
    assert ("unpause", chosen.trial_id) in log.events
    sim.run()
    # The two losers were ended through the next decision's stop_trials.
    assert sorted(sim.iters.values()) == [1, 1, 3, 3, 9]
    assert len(sim.stopped_waiting) >= 2


def test_works_without_pause_hooks_and_with_one_slot():
    scheduler = bohb(max_t=9)
    sim = Sim(scheduler, make_views([{"x": i / 16} for i in range(17)]), curve, capacity=1)
    sim.runner.search_alg = Holder(object())  # a searcher without on_pause/on_unpause
    sim.add_all()
    sim.run()
    assert all(v.status is TrialStatus.TERMINATED for v in sim.views)


def test_coroutine_pause_hook_is_a_clear_error():
    class AsyncPause(Searcher):
        async def on_pause(self, trial_id):
            pass

    scheduler = bohb(max_t=9)
    sim = Sim(scheduler, make_views([{"x": 0.1}, {"x": 0.2}]), curve)
    sim.runner.search_alg = Holder(AsyncPause())
    sim.add_all()
    sim.start_chosen()
    with pytest.raises(TypeError, match="on_pause"):
        sim.step(sim.views[0])


def test_state_round_trip_continues_the_schedule():
    xs = [i / 16 for i in range(17)]
    full, _ = sim_with_log(bohb(max_t=9), xs, capacity=2)
    full.run()

    scheduler = bohb(max_t=9)
    sim, _ = sim_with_log(scheduler, xs, capacity=2)
    for _ in range(10):
        sim.start_chosen()
        for view in [v for v in sim.views if v.status is TrialStatus.RUNNING]:
            sim.step(view)
    state = pickle.loads(pickle.dumps(scheduler.get_state()))
    resumed = bohb(max_t=9)
    resumed.set_state(state, sim.runner)
    sim.scheduler = resumed
    sim.run()
    assert sim.iters == full.iters


def test_stop_trials_come_with_the_next_decision():
    scheduler = bohb(max_t=3)  # s=1 bracket first: 3 trials, milestones 1 and 3
    sim, _ = sim_with_log(scheduler, [0.9, 0.3, 0.5], capacity=3)
    sim.start_chosen()
    first = scheduler.on_trial_result(sim.runner, sim.views[0], {"training_iteration": 1,
                                                                 "loss": 5.0})
    sim.apply(sim.views[0], first)
    second = scheduler.on_trial_result(sim.runner, sim.views[1], {"training_iteration": 1,
                                                                  "loss": 1.0})
    sim.apply(sim.views[1], second)
    third = scheduler.on_trial_result(sim.runner, sim.views[2], {"training_iteration": 1,
                                                                 "loss": 2.0})
    # 3 -> 1 survivor (the paused x=0.3); x=0.9 (paused) ends with this decision.
    assert (first, second) == ("PAUSE", "PAUSE")
    assert third == Decision(action="STOP", stop_trials=("t000",))


# ---- through tune.run -------------------------------------------------------------------
@pytest.mark.parametrize("slots", [1, 3])
def test_tune_run_with_the_default_searcher(results_dir, slots):
    grid = [i / 16 for i in range(17)]
    analysis = tune.run(Quadratic, config={"x": tune.grid_search(grid)},
                        scheduler=HyperBandForBOHB(max_t=9), metric="loss", mode="min",
                        trial_executor=ScriptedExecutor(slots=slots), verbose=0,
                        local_dir=results_dir)
    its = {t.config["x"]: t.last_result["training_iteration"] for t in analysis.trials}
    assert all(t.status == "TERMINATED" for t in analysis.trials)
    assert its[min(grid, key=lambda x: abs(x - 0.3))] == 9
    assert sum(its.values()) < 17 * 9 / 2


# ---- TuneBOHB -----------------------------------------------------------------------------
def tune_bohb():
    pytest.importorskip("ConfigSpace")
    pytest.importorskip("hpbandster")
    from tune_async.suggest.bohb import TuneBOHB

    return TuneBOHB


@pytest.fixture(autouse=False)
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels/pandas deprecation chatter
        yield


def test_tune_bohb_arguments():
    TuneBOHB = tune_bohb()
    with pytest.raises(ValueError, match="mode"):
        TuneBOHB(mode="average")
    with pytest.raises(ValueError, match="max_concurrent"):
        TuneBOHB(max_concurrent=0)
    with pytest.raises(TypeError, match="bohb_config"):
        TuneBOHB(bohb_config=[1])
    with pytest.raises(RuntimeError, match="search space"):
        TuneBOHB(metric="loss", mode="min").suggest("t0")
    with pytest.raises(RuntimeError, match="metric"):
        TuneBOHB(space={"x": tune.uniform(0, 1)}).suggest("t0")


def test_tune_bohb_converts_tune_domains():
    TuneBOHB = tune_bohb()
    space = TuneBOHB.convert_search_space({
        "lr": tune.loguniform(1e-4, 1e-1), "x": tune.uniform(0, 1), "n": tune.randint(1, 5),
        "c": tune.choice(["a", "b"]), "nested": {"y": tune.randn(0, 1)}})
    names = sorted(space.keys())
    assert names == ["c", "lr", "n", "nested/y", "x"]
    assert space["n"].upper == 4 and space["lr"].log
    with pytest.raises(ValueError, match="Grid search"):
        TuneBOHB.convert_search_space({"x": tune.grid_search([1, 2])})
    with pytest.raises(ValueError, match="does not support"):
        TuneBOHB.convert_search_space({"x": tune.sample_from(lambda _: 1)})


def test_tune_bohb_suggests_in_range_and_limits_concurrency(quiet):
    TuneBOHB = tune_bohb()
    searcher = TuneBOHB(space={"x": tune.quniform(0, 1, 0.25), "c": tune.choice([None, [1]]),
                               "nested": {"n": tune.randint(1, 3)}},
                        max_concurrent=2, metric="loss", mode="min", seed=3,
                        points_to_evaluate=[{"x": 0.5, "c": [1], "nested": {"n": 2}}])
    first = searcher.suggest("a")
    assert first == {"x": 0.5, "c": [1], "nested": {"n": 2}}
    second = searcher.suggest("b")
    assert second["x"] in (0.0, 0.25, 0.5, 0.75, 1.0) and second["c"] in (None, [1])
    assert second["nested"]["n"] in (1, 2) and type(second["nested"]["n"]) is int
    assert searcher.suggest("c") is None  # two running
    searcher.on_pause("a")
    assert searcher.suggest("c") is not None  # a paused trial does not count
    searcher.on_unpause("a")
    assert searcher.suggest("d") is None  # a, b, c run
    searcher.on_trial_complete("b")
    searcher.on_trial_complete("c")
    assert searcher.suggest("d") is not None


def test_tune_bohb_learns_from_budgets_and_saves(quiet, tmp_path):
    TuneBOHB = tune_bohb()
    searcher = TuneBOHB(space={"x": tune.uniform(0, 1)}, metric="loss", mode="max", seed=0,
                        bohb_config={"min_points_in_model": 3})
    for i in range(12):
        config = searcher.suggest(f"t{i}")
        searcher.on_trial_result(f"t{i}", {"loss": config["x"],
                                           "hyperband_info": {"budget": 3}})
        searcher.on_trial_complete(f"t{i}")
    assert len(searcher.bohber.configs[3]) == 12
    assert 3 in searcher.bohber.kde_models  # a model was fitted at that budget
    path = str(tmp_path / "bohb.pkl")
    searcher.save(path)
    restored = TuneBOHB(space={"x": tune.uniform(0, 1)}, metric="loss", mode="max")
    restored.restore(path)
    assert len(restored.bohber.configs[3]) == 12


def run_bohb(results_dir):
    TuneBOHB = tune_bohb()
    searcher = TuneBOHB(max_concurrent=4, seed=1)
    scheduler = HyperBandForBOHB(max_t=9)
    analysis = tune.run(Quadratic, config={"x": tune.uniform(0, 1)}, num_samples=26,
                        scheduler=scheduler, search_alg=searcher, metric="loss", mode="min",
                        trial_executor=ScriptedExecutor(slots=3), verbose=0,
                        local_dir=results_dir)
    return analysis, scheduler, searcher


def test_tune_run_bohb_end_to_end(results_dir, quiet):
    analysis, _, searcher = run_bohb(results_dir)
    assert len(analysis.trials) == 26
    assert all(t.status == "TERMINATED" for t in analysis.trials)
    assert max(t.last_result["training_iteration"] for t in analysis.trials) == 9
    # The searcher saw results at each budget of the brackets, and every pause was undone.
    assert set(searcher.bohber.configs) >= {1, 3, 9}
    assert not searcher.running and not searcher.paused
    assert abs(analysis.best_config["x"] - 0.3) < 0.25


def test_tune_run_bohb_fills_brackets_before_halving(results_dir, quiet):
    analysis, scheduler, _ = run_bohb(results_dir)
    first = scheduler._hyperbands[0][0]
    assert len(first.all_trials) == first.n0 == 9
    its = sorted(t.last_result["training_iteration"] for t in analysis.trials)
    # Band 0: 9 -> 3 -> 1 (s=2), 5 -> 2 (s=1), 3 (s=0); band 1: 9 trials in s=2.
    assert its == [1] * 12 + [3] * 7 + [9] * 7


def test_tune_bohb_without_its_libraries_names_the_extra(monkeypatch):
    import sys

    from tune_async.suggest.bohb import TuneBOHB  # importing needs neither library

    monkeypatch.setitem(sys.modules, "hpbandster", None)
    monkeypatch.setitem(sys.modules, "hpbandster.optimizers.config_generators.bohb", None)
    with pytest.raises(ImportError, match=r"tune_async\[bohb\]"):
        TuneBOHB()
