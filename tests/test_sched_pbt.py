"""PopulationBasedTraining and PopulationBasedTrainingReplay.

Decisions are checked by calling the hooks directly (FakeRunner, trials moved through
the transition table); the behaviour end to end through tune.run on the scripted
executor (a Trainable whose state is a running value) and once on real Ray.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time

import numpy as np
import pytest

import tune_async as tune
from tests.scripted_executor import ScriptedExecutor
from tune_async import transitions
from tune_async.schedulers import Decision, Exploit
from tune_async.schedulers.pbt import (
    PopulationBasedTraining,
    PopulationBasedTrainingReplay,
    explore,
    make_experiment_tag,
)
from tune_async.suggest.search_generator import SearchGenerator
from tune_async.suggest.suggestion import Searcher
from tune_async.testing.conformance import FakeRunner, TrialSchedulerConformance
from tune_async.transitions import Event
from tune_async.trial import Trial, TrialStatus, TrialView, unwrap

LRS = [0.0, 0.25, 0.5, 0.75, 1.0]
HALF = 10  # the best learning rate flips here
T = 2 * HALF


@pytest.fixture(autouse=True)
def _seeded():
    random.seed(0)
    np.random.seed(0)


# ---------------------------------------------------------------------------
# Helpers for hook-level tests


def make_pbt(**kwargs):
    kwargs.setdefault("time_attr", "training_iteration")
    kwargs.setdefault("metric", "score")
    kwargs.setdefault("mode", "max")
    kwargs.setdefault("perturbation_interval", 2)
    kwargs.setdefault("hyperparam_mutations", {"lr": LRS})
    return PopulationBasedTraining(**kwargs)


def population(scheduler, n, local_dir="", capacity=None, start=True, configs=None):
    trials = [Trial(trainable_name="t", config=dict(configs[i]) if configs else {"lr": 0.5},
                    trial_id=f"t{i}", experiment_tag=f"{i}_lr=0.5", local_dir=local_dir)
              for i in range(n)]
    views = [TrialView(t) for t in trials]
    runner = FakeRunner(views, capacity=capacity)
    for view in views:
        scheduler.on_trial_add(runner, view)
        if start:
            transitions.apply(unwrap(view), Event.START)
    return views, runner


def report(scheduler, runner, view, iteration, score):
    result = {"training_iteration": iteration, "time_total_s": float(iteration),
              "score": score, "trial_id": view.trial_id}
    decision = scheduler.on_trial_result(runner, view, result)
    unwrap(view).last_result = result
    return decision


def apply(view, decision, runner=None):
    """Move the trial (and after it, with ``runner``, the waiting trials it names) as the
    controller would for ``decision``."""
    trial = unwrap(view)
    if isinstance(decision, Decision) and decision.exploit is not None:
        trial.config = dict(decision.exploit.config)
        trial.experiment_tag = decision.exploit.experiment_tag
        transitions.apply(trial, Event.EXPLOIT)
    elif decision == "PAUSE" or getattr(decision, "action", None) == "PAUSE":
        transitions.apply(trial, Event.PAUSE)
    if runner is not None and isinstance(decision, Decision):
        apply_waiting(runner, decision)


def apply_waiting(runner, decision):
    """``Decision.exploit_waiting``: each paused trial takes its new config (and tag)."""
    for trial_id, exploit in getattr(decision, "exploit_waiting", ()):
        trial = unwrap(runner.get_trial(trial_id))
        assert trial.status is TrialStatus.PAUSED
        trial.config = dict(exploit.config)
        trial.experiment_tag = exploit.experiment_tag
        transitions.apply(trial, Event.EXPLOIT)


def relaunch(view):
    transitions.apply(unwrap(view), Event.UNPAUSE)
    transitions.apply(unwrap(view), Event.START)


def round_of(scheduler, runner, views, iteration, scores):
    return [report(scheduler, runner, v, iteration, s) for v, s in zip(views, scores, strict=True)]


# ---------------------------------------------------------------------------
# Construction and validation


def test_defaults_follow_1x():
    pbt = PopulationBasedTraining(hyperparam_mutations={"lr": [1, 2]})
    assert pbt._time_attr == "time_total_s"
    assert pbt._perturbation_interval == 60.0
    assert pbt._burn_in_period == 0.0
    assert pbt._quantile_fraction == 0.25
    assert pbt._resample_probability == 0.25
    assert pbt._log_config and pbt._require_attrs and not pbt._synch
    assert pbt.metric is None


@pytest.mark.parametrize("kwargs, error, match", [
    ({"quantile_fraction": 0.6}, ValueError, "quantile_fraction"),
    ({"quantile_fraction": -0.1}, ValueError, "quantile_fraction"),
    ({"perturbation_interval": 0}, ValueError, "perturbation_interval"),
    ({"hyperparam_mutations": {"lr": 3}}, TypeError, "hyperparam_mutations"),
    ({"hyperparam_mutations": {"opt": {"lr": "x"}}}, TypeError, "hyperparam_mutations"),
    ({"hyperparam_mutations": {"lr": tune.sample_from(lambda: 1)}}, ValueError, "sample_from"),
    ({"hyperparam_mutations": {}}, ValueError, "at least one of"),
    ({"mode": "maximum"}, ValueError, "mode"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        make_pbt(**kwargs)


def test_accepted_mutation_specs():
    make_pbt(hyperparam_mutations={
        "a": [1, 2], "b": (1, 2), "c": tune.uniform(0, 1), "d": lambda: 1,
        "e": {"f": tune.loguniform(1e-3, 1), "g": ["x", "y"]},
    })
    make_pbt(hyperparam_mutations=None, custom_explore_fn=lambda c: c)


def test_reward_attr_means_max_of_that_metric():
    pbt = make_pbt(metric=None, mode=None, reward_attr="acc")
    assert (pbt._metric, pbt._mode) == ("acc", "max")


def test_needs_metric_and_mode_when_a_trial_is_added():
    pbt = make_pbt(metric=None, mode=None)
    with pytest.raises(ValueError, match="metric"):
        population(pbt, 1)


class _AnySearcher(Searcher):
    def suggest(self, trial_id):
        return {}

    def on_trial_complete(self, trial_id, result=None, error=False):
        pass


def test_searcher_based_search_is_refused():
    pbt = make_pbt()
    view = TrialView(Trial(trainable_name="t", config={"lr": 0.5}))
    runner = FakeRunner([view])
    runner.search_alg = SearchGenerator(_AnySearcher())
    with pytest.raises(ValueError, match="Search algorithms cannot be used"):
        pbt.on_trial_add(runner, view)


def test_missing_mutation_keys_are_sampled_when_the_trial_is_added():
    pbt = make_pbt(hyperparam_mutations={"lr": LRS, "opt": {"mom": tune.uniform(0.5, 0.9)}})
    (view,), _ = population(pbt, 1, start=False, configs=[{"other": 1}])
    assert view.config["lr"] in LRS and 0.5 <= view.config["opt"]["mom"] <= 0.9
    assert view.config["other"] == 1
    assert view.evaluated_params["lr"] == view.config["lr"]


# ---------------------------------------------------------------------------
# Explore


def test_explore_perturbs_continuous_values_by_0_8_or_1_2():
    seen = set()
    for _ in range(50):
        new = explore({"lr": 1.0, "n": 10}, {"lr": tune.uniform(0, 5), "n": lambda: 3}, 0.0, None)
        seen.add((new["lr"], new["n"]))
    assert seen == {(1.2, 12), (0.8, 8), (1.2, 8), (0.8, 12)}  # ints truncated


def test_explore_moves_to_an_adjacent_list_element():
    values = {explore({"lr": 0.5}, {"lr": LRS}, 0.0, None)["lr"] for _ in range(50)}
    assert values == {0.25, 0.75}
    edge = {explore({"lr": 0.0}, {"lr": LRS}, 0.0, None)["lr"] for _ in range(50)}
    assert edge == {0.0, 0.25}


def test_explore_resamples_and_keeps_other_keys():
    for _ in range(20):
        new = explore({"lr": 0.5, "x": "keep", "o": {"m": 0.7}},
                      {"lr": tune.uniform(10, 20), "o": {"m": [0.1, 0.2]}}, 1.0, None)
        assert 10 <= new["lr"] <= 20 and new["o"]["m"] in (0.1, 0.2) and new["x"] == "keep"


def test_explore_applies_custom_fn_last():
    new = explore({"lr": 1.0}, {"lr": [1.0, 2.0]}, 0.0,
                  lambda c: dict(c, lr=c["lr"] * 100, extra=True))
    assert new["lr"] in (100.0, 200.0) and new["extra"] is True


def test_explore_resamples_a_choice_value_that_cannot_be_multiplied():
    new = explore({"act": "relu"}, {"act": tune.choice(["relu", "tanh"])}, 0.0, None)
    assert new["act"] in ("relu", "tanh")


def test_experiment_tag_like_1x():
    assert make_experiment_tag("3_lr=0.1", {"lr": 0.123456, "b": 2}, {"lr": []}) == (
        "3_lr=0.1@perturbed[lr=0.12346]")


# ---------------------------------------------------------------------------
# Decisions


def test_nothing_happens_between_perturbation_points():
    pbt = make_pbt()
    views, runner = population(pbt, 4)
    assert round_of(pbt, runner, views, 1, [0, 1, 2, 3]) == ["CONTINUE"] * 4


def test_upper_trial_saves_and_lower_trial_exploits_it():
    pbt = make_pbt()
    views, runner = population(pbt, 4)
    # Iteration 2: each newcomer is the best so far, so it keeps its state; t0 came alone.
    assert round_of(pbt, runner, views, 2, [0, 1, 2, 3]) == ["CONTINUE"] + [
        Decision(save=True)] * 3
    # Iteration 4, best first: t3 is the upper quantile and keeps its state.
    assert report(pbt, runner, views[3], 4, 3) == Decision(save=True)
    assert report(pbt, runner, views[2], 4, 2) == "CONTINUE"
    assert report(pbt, runner, views[1], 4, 1) == "CONTINUE"
    decision = report(pbt, runner, views[0], 4, 0)
    assert isinstance(decision, Decision) and decision.exploit is not None
    exploit = decision.exploit
    assert exploit.donor == "t3"
    assert exploit.config["lr"] in LRS
    assert exploit.experiment_tag == f"0_lr=0.5@perturbed[lr={exploit.config['lr']}]"
    assert pbt.debug_string() == "PopulationBasedTraining: 4 checkpoints, 1 perturbs"


def test_exploited_trial_takes_the_donor_clock():
    pbt = make_pbt(perturbation_interval=4)
    views, runner = population(pbt, 2)
    round_of(pbt, runner, views, 4, [0, 1])
    assert report(pbt, runner, views[1], 8, 5) == Decision(save=True)  # donor at 8
    # t0 was slower (iteration 6 at time 12 would not matter): it clones t1's state at 8.
    decision = report(pbt, runner, views[0], 8, 0)
    assert decision.exploit.donor == "t1"
    apply(views[0], decision)
    assert pbt.results_before_decision(runner, views[0]) == 4  # next point: 8 + 4


def test_pause_when_other_trials_wait():
    pbt = make_pbt()
    views, runner = population(pbt, 3)
    transitions.apply(unwrap(views[2]), Event.PAUSE)
    assert report(pbt, runner, views[0], 2, 1) == "PAUSE"
    assert report(pbt, runner, views[1], 1, 1) == "CONTINUE"  # not at its point yet


def test_lower_trial_exploit_is_the_pause_when_others_wait():
    pbt = make_pbt()
    views, runner = population(pbt, 3)
    round_of(pbt, runner, views[:2], 2, [0, 5])
    assert report(pbt, runner, views[1], 4, 5) == Decision(save=True)
    transitions.apply(unwrap(views[2]), Event.PAUSE)
    assert report(pbt, runner, views[1], 6, 6) == Decision(action="PAUSE", save=True)
    decision = report(pbt, runner, views[0], 4, 0)
    assert decision.exploit is not None and decision.exploit.donor == "t1"


def test_quantile_fraction_zero_never_exploits():
    pbt = make_pbt(quantile_fraction=0)
    views, runner = population(pbt, 4)
    for iteration in (2, 4, 6):
        assert round_of(pbt, runner, views, iteration, [0, 1, 2, 3]) == ["CONTINUE"] * 4


def test_burn_in_period_delays_the_first_perturbation():
    pbt = make_pbt(burn_in_period=5)
    views, runner = population(pbt, 2)
    assert pbt.results_before_decision(runner, views[0]) == 5
    for iteration in range(1, 5):
        assert round_of(pbt, runner, views, iteration, [0, 1]) == ["CONTINUE"] * 2
    round_of(pbt, runner, views, 5, [0, 1])
    assert pbt._members["t0"].last_perturbation_time == 5
    assert pbt.results_before_decision(runner, views[0]) == 2


def test_results_before_decision():
    pbt = make_pbt(perturbation_interval=3)
    views, runner = population(pbt, 2)
    assert pbt.results_before_decision(runner, views[0]) == 3
    report(pbt, runner, views[0], 1, 0)
    assert pbt.results_before_decision(runner, views[0]) == 2
    report(pbt, runner, views[0], 3, 0)
    assert pbt.results_before_decision(runner, views[0]) == 3
    timed = make_pbt(time_attr="time_total_s")
    (view,), runner = population(timed, 1)
    assert timed.results_before_decision(runner, view) == 1  # cannot see ahead in seconds


def test_required_attributes():
    pbt = make_pbt()
    (view,), runner = population(pbt, 1)
    with pytest.raises(RuntimeError, match="Cannot find metric 'score'"):
        pbt.on_trial_result(runner, view, {"training_iteration": 2})
    lenient = make_pbt(require_attrs=False)
    (view,), runner = population(lenient, 1)
    assert lenient.on_trial_result(runner, view, {"training_iteration": 2}) == "CONTINUE"


def test_choose_the_waiting_trial_with_least_progress_that_fits():
    pbt = make_pbt()
    views, runner = population(pbt, 3, capacity=3)
    round_of(pbt, runner, views, 1, [0, 0, 0])
    report(pbt, runner, views[0], 2, 0)
    report(pbt, runner, views[1], 5, 0)
    report(pbt, runner, views[2], 3, 0)
    for view in views:
        transitions.apply(unwrap(view), Event.PAUSE)
    assert pbt.choose_trial_to_run(runner) is views[0]
    runner.blocked = {"t0"}
    assert pbt.choose_trial_to_run(runner) is views[2]
    runner.blocked = {"t0", "t1", "t2"}
    assert pbt.choose_trial_to_run(runner) is None


def test_state_round_trip_keeps_the_schedule():
    pbt = make_pbt()
    views, runner = population(pbt, 2)
    round_of(pbt, runner, views, 2, [0, 1])
    round_of(pbt, runner, views, 3, [0, 1])
    restored = make_pbt()
    restored.set_state(pbt.get_state(), runner)
    assert restored._members["t0"].last_perturbation_time == 2
    assert restored.results_before_decision(runner, views[0]) == 1
    assert report(restored, runner, views[1], 4, 1) == Decision(save=True)
    # Saved states were in memory: after a restart nobody is a donor until saved again.
    again = make_pbt()
    again.set_state(pbt.get_state(), runner)
    assert all(m.saved is None for m in again._members.values())


# ---------------------------------------------------------------------------
# Synchronous mode


def test_synch_pauses_until_all_reached_the_point_then_perturbs_all(tmp_path):
    pbt = make_pbt(synch=True, perturbation_interval=2)
    views, runner = population(pbt, 4, local_dir=str(tmp_path))
    round_of(pbt, runner, views, 1, [0, 1, 2, 3])
    for view, score in zip(views[:3], [0, 1, 3], strict=True):
        decision = report(pbt, runner, view, 2, score)
        assert decision == "PAUSE"
        apply(view, decision)
    assert pbt.choose_trial_to_run(runner) is None  # they wait for t3
    last = report(pbt, runner, views[3], 2, 2)  # the sync round: t2 is the best
    # t3 (a middle trial) pauses; the lowest, t0, waits paused: it is exploited now.
    ((target, exploit),) = last.exploit_waiting
    assert last.action == "PAUSE" and not last.save and last.exploit is None
    assert target == "t0" and exploit.donor == "t2"
    assert exploit.config["lr"] in LRS
    assert exploit.experiment_tag == f"0_lr=0.5@perturbed[lr={exploit.config['lr']}]"
    apply(views[3], last, runner)
    assert views[0].status is TrialStatus.PAUSED and views[0].config == exploit.config
    assert pbt._members["t2"].saved is not None  # the donor (its PAUSE kept its state)
    # The exploited trial's clock is the donor's saved time: from 2 it runs straight to
    # its next point, 4 (no extra look), and anyone may run next (no donor is held).
    member = pbt._members["t0"]
    assert member.time == member.last_perturbation_time == member.last_train_time == 2
    assert pbt._next_perturbation_sync == 4
    assert pbt.choose_trial_to_run(runner) is views[0]
    relaunch(views[0])
    assert pbt.results_before_decision(runner, views[0]) == 2
    assert pbt.choose_trial_to_run(runner) is views[1]
    # Policy files: [target, donor, target iteration, donor iteration, old, new config].
    line = [views[0].experiment_tag.split("@")[0], "2_lr=0.5", 2, 2, {"lr": 0.5},
            exploit.config]
    assert read_lines(tmp_path / "pbt_global.txt") == [line]
    assert read_lines(tmp_path / "pbt_policy_t0.txt") == [line]
    # Its next result (iteration 3, from t2's state at 2) is a plain one: nothing pending.
    assert report(pbt, runner, views[0], 3, 9) == "CONTINUE"
    assert pbt.debug_string() == "PopulationBasedTraining: 1 checkpoints, 1 perturbs"


def test_synch_round_decided_by_its_donor_exploits_the_target_with_that_decision():
    pbt = make_pbt(synch=True, perturbation_interval=2)
    views, runner = population(pbt, 4)
    for view, score in zip(views[:3], [0, 1, 2], strict=True):
        apply(view, report(pbt, runner, view, 2, score))
    # t3 completes the round as the best: it saves its state at 2 and t0 clones it with
    # this very decision (the controller applies exploit_waiting after t3's own PAUSE,
    # so t0 finds t3's state at 2).
    last = report(pbt, runner, views[3], 2, 3)
    ((target, exploit),) = last.exploit_waiting
    assert last == Decision(action="PAUSE", save=True, exploit_waiting=((target, exploit),))
    assert target == "t0" and exploit.donor == "t3"
    apply(views[3], last, runner)
    assert views[0].status is TrialStatus.PAUSED and views[0].config == exploit.config
    member = pbt._members["t0"]
    assert member.time == member.last_perturbation_time == member.last_train_time == 2
    # Nobody waits for anything: t0 runs first, straight to its next point, as does t1.
    assert pbt.choose_trial_to_run(runner) is views[0]
    relaunch(views[0])
    assert pbt.results_before_decision(runner, views[0]) == 2
    assert pbt.choose_trial_to_run(runner) is views[1]
    relaunch(views[1])
    assert pbt.results_before_decision(runner, views[1]) == 2
    assert report(pbt, runner, views[1], 3, 1) == "CONTINUE"  # nothing left to deliver
    assert report(pbt, runner, views[1], 4, 1) == "PAUSE"


def test_synch_exploit_of_the_deciding_donor_does_not_wait_for_its_end():
    pbt = make_pbt(synch=True, perturbation_interval=2)
    views, runner = population(pbt, 2)
    apply(views[0], report(pbt, runner, views[0], 2, 0))
    last = report(pbt, runner, views[1], 2, 5)  # t1 decides, and is the donor
    assert [(t, e.donor) for t, e in last.exploit_waiting] == [("t0", "t1")]
    assert last.action == "PAUSE" and last.save and last.exploit is None
    apply(views[1], last, runner)
    assert pbt.choose_trial_to_run(runner) is views[0]
    relaunch(views[1])
    transitions.apply(unwrap(views[1]), Event.COMPLETE)
    # Its end has nothing left to deliver.
    assert pbt.on_trial_complete(runner, views[1], {"training_iteration": 3}) is None
    assert pbt.choose_trial_to_run(runner) is views[0]


def test_synch_round_runs_when_the_straggler_finishes():
    pbt = make_pbt(synch=True)
    views, runner = population(pbt, 3)
    for view, score in zip(views[:2], [0, 5], strict=True):
        apply(view, report(pbt, runner, view, 2, score))
    transitions.apply(unwrap(views[2]), Event.COMPLETE)
    ended = pbt.on_trial_complete(runner, views[2], {"training_iteration": 1})
    # The round its end completed: t0 (paused) clones t1 (paused, so saved) right away.
    ((target, exploit),) = ended.exploit_waiting
    assert ended == Decision(exploit_waiting=((target, exploit),))
    assert target == "t0" and exploit.donor == "t1"
    apply_waiting(runner, ended)
    assert pbt._next_perturbation_sync == 4
    assert pbt.choose_trial_to_run(runner) is views[0]
    assert pbt._members["t0"].time == 2


def test_synch_round_completed_by_a_removed_or_failed_trial():
    for end in ("remove", "error"):
        pbt = make_pbt(synch=True)
        views, runner = population(pbt, 3)
        for view, score in zip(views[:2], [0, 5], strict=True):
            apply(view, report(pbt, runner, view, 2, score))
        if end == "remove":
            transitions.apply(unwrap(views[2]), Event.PAUSE)
            transitions.apply(unwrap(views[2]), Event.STOP)
            ended = pbt.on_trial_remove(runner, views[2])
        else:
            transitions.apply(unwrap(views[2]), Event.FAIL)
            ended = pbt.on_trial_error(runner, views[2])
        assert [(t, e.donor) for t, e in ended.exploit_waiting] == [("t0", "t1")]
    # No round: nothing to return.
    pbt = make_pbt(synch=True)
    views, runner = population(pbt, 3)
    transitions.apply(unwrap(views[2]), Event.COMPLETE)
    assert pbt.on_trial_complete(runner, views[2], {"training_iteration": 1}) is None


# ---------------------------------------------------------------------------
# Conformance


class TestPBTConformance(TrialSchedulerConformance):
    def make_scheduler(self):
        return PopulationBasedTraining(time_attr="training_iteration", perturbation_interval=2,
                                       hyperparam_mutations={"index": [0, 1, 2, 3]})


class TestPBTSynchConformance(TrialSchedulerConformance):
    def make_scheduler(self):
        return PopulationBasedTraining(time_attr="training_iteration", perturbation_interval=2,
                                       hyperparam_mutations={"index": [0, 1, 2, 3]},
                                       synch=True)


# ---------------------------------------------------------------------------
# End to end


class Phased(tune.Trainable):
    """The value grows by lr for HALF steps, then by 1 - lr: every fixed lr ends at HALF.

    A schedule (high lr, then low) does better, which is what PBT can find.
    """

    def setup(self, config):
        self.value = 0.0

    def step(self):
        lr = self.config["lr"]
        self.value += lr if self.iteration < HALF else 1.0 - lr
        log = self.config.get("log")
        if log:
            with open(log, "a") as f:
                f.write(json.dumps({"trial": self.trial_id, "it": self.iteration + 1}) + "\n")
        return {"value": self.value}

    def save_checkpoint(self, checkpoint_dir):
        return {"value": self.value}

    def load_checkpoint(self, checkpoint):
        self.value = checkpoint["value"]

    def reset_config(self, new_config):
        return True


def gain(lr, iteration):
    return lr if iteration <= HALF else 1.0 - lr


def results_of(trial):
    with open(os.path.join(trial.logdir, "result.json")) as f:
        return [json.loads(line) for line in f]


def read_lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def run_pbt(tmp_path, slots=3, reuse=False, name="pbt", executor=None, **kwargs):
    log = kwargs.pop("log", None)
    kwargs.setdefault("time_attr", "training_iteration")
    kwargs.setdefault("perturbation_interval", 2)
    kwargs.setdefault("hyperparam_mutations", {"lr": LRS})
    scheduler = PopulationBasedTraining(metric="value", mode="max", **kwargs)
    config = {"lr": tune.grid_search(LRS)}
    if log:
        config["log"] = log
    analysis = tune.run(Phased, config=config, num_samples=2, scheduler=scheduler,
                        stop={"training_iteration": T},
                        trial_executor=executor or ScriptedExecutor(slots),
                        reuse_actors=reuse, local_dir=str(tmp_path), name=name, verbose=0)
    return analysis, scheduler, os.path.join(str(tmp_path), name)


def check_exploits_continue_from_the_donor(analysis, exp_dir, interval=2,
                                           valid=lambda lr: lr in LRS, skip=0, grid=True):
    by_tag = {t.experiment_tag.split("@perturbed")[0]: t for t in analysis.trials}
    lines = read_lines(os.path.join(exp_dir, "pbt_global.txt"))
    assert lines[skip:], "no exploit happened"
    for target_tag, donor_tag, target_it, donor_it, old, new in lines[skip:]:
        if grid:  # (a resumed trial may be past its point when first seen again)
            assert target_it % interval == 0 and donor_it % interval == 0
        assert valid(new["lr"]) and valid(old["lr"])
        donor_values = {r["value"] for r in results_of(by_tag[donor_tag])
                        if r["training_iteration"] == donor_it}
        target = results_of(by_tag[target_tag])
        # The target's next result continues the donor's state with the new config.
        continued = [r for r in target if r["training_iteration"] == donor_it + 1
                     and r["config"]["lr"] == new["lr"]
                     and any(r["value"] == pytest.approx(v + gain(new["lr"], donor_it + 1))
                             for v in donor_values)]
        assert continued, (target_tag, donor_tag, donor_it)
    return lines


@pytest.mark.parametrize("slots, reuse", [(1, False), (3, False), (3, True), (10, True)])
def test_pbt_end_to_end(tmp_path, caplog, slots, reuse):
    executor = ScriptedExecutor(slots)
    with caplog.at_level(logging.WARNING, logger="tune_async.controller"):
        analysis, scheduler, exp_dir = run_pbt(tmp_path, reuse=reuse, executor=executor)
    # Batches end at each perturbation point: no decision ever landed mid-batch.
    assert "results_before_decision" not in caplog.text
    assert any(limits.max_results > 1 for _, limits in executor.fetches)
    assert all(t.status == TrialStatus.TERMINATED for t in analysis.trials)
    assert executor.max_used == min(slots, 10)
    # Paused and exploited trials were launched again, from a state kept in memory.
    relaunched = [c for c in executor.restored_from if c is not None]
    assert relaunched and all(c[0] == "object" for c in relaunched)
    assert len(executor.started) == 10 + len(relaunched)
    lines = check_exploits_continue_from_the_donor(analysis, exp_dir)
    assert scheduler._num_perturbations == len(lines)
    for trial in analysis.trials:
        results = results_of(trial)
        assert results[-1]["training_iteration"] == T
        assert all(r["config"]["lr"] in LRS for r in results)
    # Every fixed lr ends at exactly HALF; the population found a better schedule.
    best = max(results_of(t)[-1]["value"] for t in analysis.trials)
    assert best > HALF + 1


def test_fifo_baseline_of_the_same_problem_ends_at_half(tmp_path):
    analysis = tune.run(Phased, config={"lr": tune.grid_search(LRS)},
                        stop={"training_iteration": T}, trial_executor=ScriptedExecutor(5),
                        local_dir=str(tmp_path), verbose=0)
    finals = [results_of(t)[-1]["value"] for t in analysis.trials]
    assert finals == pytest.approx([HALF] * len(LRS))


def test_policy_files_format(tmp_path):
    analysis, _, exp_dir = run_pbt(tmp_path)
    lines = read_lines(os.path.join(exp_dir, "pbt_global.txt"))
    with open(os.path.join(exp_dir, "pbt_global.txt")) as f:
        first = f.readline()
    assert first.startswith('["') and first.endswith("}]\n") and '", "' in first  # json.dumps
    tags = {t.experiment_tag.split("@perturbed")[0] for t in analysis.trials}
    for line in lines:
        assert len(line) == 6
        assert line[0] in tags and line[1] in tags and line[0] != line[1]
        assert isinstance(line[2], int) and isinstance(line[3], int)
        assert set(line[4]) == set(line[5]) == {"lr"}
    policies = [n for n in os.listdir(exp_dir) if n.startswith("pbt_policy_")]
    exploited = {t.trial_id for t in analysis.trials if "@perturbed" in t.experiment_tag}
    assert {n[len("pbt_policy_"):-len(".txt")] for n in policies} == exploited
    for trial in analysis.trials:
        if trial.trial_id in exploited:
            policy = read_lines(os.path.join(exp_dir, f"pbt_policy_{trial.trial_id}.txt"))
            own = [ln for ln in lines if ln[0] == trial.experiment_tag.split("@perturbed")[0]]
            assert policy[-1] == own[-1]  # its newest exploit closes its policy file


def test_log_config_false_writes_no_files(tmp_path):
    _, scheduler, exp_dir = run_pbt(tmp_path, log_config=False)
    assert scheduler._num_perturbations > 0
    assert not [n for n in os.listdir(exp_dir) if n.startswith("pbt_")]


class ExploitCountingPBT(PopulationBasedTraining):
    """Counts the synch exploits: of the trial deciding the round (own), of waiting
    trials with that decision (waiting), and among those, the ones whose donor is the
    deciding trial (by_donor)."""

    own = waiting = by_donor = 0

    def _conclude(self, trial_runner, plan):
        decision = super()._conclude(trial_runner, plan)
        exploits = getattr(decision, "exploit_waiting", ())
        self.waiting += len(exploits)
        deciding = getattr(plan, "trial_id", None)
        self.by_donor += sum(deciding is not None and e.donor == deciding for _, e in exploits)
        self.own += getattr(decision, "exploit", None) is not None
        return decision


def check_synch_exploits_continue_straight(analysis, exp_dir, valid=lambda lr: lr in LRS):
    """Every trial's result.json counts 1, 2, ..., T (no extra step), and an exploited
    trial's result after the sync point continues the donor's value there, with the
    new config."""
    for trial in analysis.trials:
        assert [r["training_iteration"] for r in results_of(trial)] == list(range(1, T + 1))
    by_tag = {t.experiment_tag.split("@perturbed")[0]: t for t in analysis.trials}
    lines = read_lines(os.path.join(exp_dir, "pbt_global.txt"))
    assert lines, "no exploit happened"
    for target_tag, donor_tag, target_it, donor_it, old, new in lines:
        # The exploited trial's clock is the donor's saved time: the same sync point.
        assert target_it == donor_it and donor_it % 2 == 0 and 2 <= donor_it < T
        assert valid(new["lr"]) and valid(old["lr"])
        donor = results_of(by_tag[donor_tag])[donor_it - 1]
        assert old["lr"] == donor["config"]["lr"]
        after = results_of(by_tag[target_tag])[donor_it]  # the next result
        assert after["training_iteration"] == donor_it + 1
        assert after["config"]["lr"] == new["lr"]
        assert after["value"] == pytest.approx(donor["value"] + gain(new["lr"], donor_it + 1))
    return lines


@pytest.mark.parametrize("slots, reuse", [(1, False), (1, True), (3, False), (3, True),
                                          (10, False), (10, True)])
def test_synch_end_to_end(tmp_path, caplog, slots, reuse):
    log = str(tmp_path / "steps.jsonl")
    executor = ScriptedExecutor(slots)
    scheduler = ExploitCountingPBT(time_attr="training_iteration", metric="value", mode="max",
                                 perturbation_interval=2, hyperparam_mutations={"lr": LRS},
                                 synch=True)
    with caplog.at_level(logging.WARNING, logger="tune_async.controller"):
        analysis = tune.run(Phased, config={"lr": tune.grid_search(LRS), "log": log},
                            num_samples=2, scheduler=scheduler,
                            stop={"training_iteration": T}, trial_executor=executor,
                            reuse_actors=reuse, local_dir=str(tmp_path), name="synch",
                            verbose=0)
    exp_dir = str(tmp_path / "synch")
    assert "results_before_decision" not in caplog.text
    assert "Skipping the exploit" not in caplog.text  # every donor's state was there
    assert all(t.status == TrialStatus.TERMINATED for t in analysis.trials)
    assert executor.max_used == slots
    lines = check_synch_exploits_continue_straight(analysis, exp_dir)
    assert scheduler._num_perturbations == len(lines)
    # Each exploit was applied once, with the round's decision, its donor being the
    # trial deciding the round or not (with one slot the order is fixed and both happen).
    assert scheduler.own + scheduler.waiting == len(lines)
    assert scheduler.waiting and (scheduler.by_donor or slots > 1)
    assert scheduler.by_donor < scheduler.waiting or slots > 1
    steps = read_lines(log)
    assert len(steps) == len(analysis.trials) * T  # each step ran once
    for point in range(2, T, 2):  # nobody passes a sync point before all reached it
        reached = [min(i for i, s in enumerate(steps) if s["trial"] == t.trial_id
                       and s["it"] == point) for t in analysis.trials]
        beyond = [i for i, s in enumerate(steps) if s["it"] == point + 2]
        assert max(reached) < min(beyond)
    best = max(results_of(t)[-1]["value"] for t in analysis.trials)
    assert best > HALF + 1


class BestArrivesLast(Phased):
    """lr=1.0 (the best until HALF) reports iteration 2 only after the others did."""

    gate: dict = {}

    def step(self):
        gate = BestArrivesLast.gate
        if self.iteration == 1 and self.config["lr"] == 1.0:
            with gate["cond"]:
                assert gate["cond"].wait_for(lambda: gate["at_2"] >= 3, timeout=30)
            time.sleep(0.2)  # their results reach the driver first
        result = super().step()
        if self.iteration == 1 and self.config["lr"] != 1.0:
            with gate["cond"]:
                gate["at_2"] += 1
                gate["cond"].notify_all()
        return result


@pytest.mark.parametrize("reuse", [False, True])
def test_synch_exploit_of_the_round_deciding_donor(tmp_path, caplog, reuse):
    BestArrivesLast.gate = {"cond": threading.Condition(), "at_2": 0}
    scheduler = ExploitCountingPBT(time_attr="training_iteration", metric="value", mode="max",
                                 perturbation_interval=2, hyperparam_mutations={"lr": LRS},
                                 synch=True)
    with caplog.at_level(logging.WARNING, logger="tune_async.controller"):
        analysis = tune.run(BestArrivesLast, config={"lr": tune.grid_search([0.0, 0.25, 0.5,
                                                                             1.0])},
                            scheduler=scheduler, stop={"training_iteration": T},
                            trial_executor=ScriptedExecutor(4), reuse_actors=reuse,
                            local_dir=str(tmp_path), name="last", verbose=0)
    assert "Skipping the exploit" not in caplog.text
    lines = check_synch_exploits_continue_straight(analysis, str(tmp_path / "last"))
    # The round at 2 was decided by lr=1.0, its only donor: lr=0.0 cloned it with that
    # very decision, from its state saved at 2 (not an older one), with no extra step.
    assert lines[0][:4] == ["0_lr=0.0", "3_lr=1.0", 2, 2]
    assert scheduler.by_donor >= 1
    (target,) = [t for t in analysis.trials if t.experiment_tag.startswith("0_")]
    assert results_of(target)[2]["value"] == pytest.approx(2.0 + lines[0][5]["lr"])


def test_state_survives_in_the_experiment_state(tmp_path):
    from tune_async.state import load_state, newest_state_file

    _, scheduler, exp_dir = run_pbt(tmp_path)
    state = load_state(newest_state_file(exp_dir))["scheduler_state"]
    assert set(state["members"]) == set(scheduler._members)
    assert state["num_perturbations"] == scheduler._num_perturbations


# ---------------------------------------------------------------------------
# Replay


@pytest.mark.parametrize("synch", [False, True])
def test_replay_reproduces_a_logged_schedule(tmp_path, synch):
    analysis, _, exp_dir = run_pbt(tmp_path / "pbt", synch=synch)
    exploited = [t for t in analysis.trials if "@perturbed" in t.experiment_tag]
    trial = max(exploited, key=lambda t: results_of(t)[-1]["value"])
    policy_file = os.path.join(exp_dir, f"pbt_policy_{trial.trial_id}.txt")
    replay = PopulationBasedTrainingReplay(policy_file)
    schedule = replay._policy
    assert schedule
    replayed = tune.run(Phased, scheduler=replay, stop={"training_iteration": T},
                        trial_executor=ScriptedExecutor(1), local_dir=str(tmp_path / "replay"),
                        verbose=0)
    (rt,) = replayed.trials
    results = results_of(rt)
    # Configs per iteration: the initial one, then each logged one after its changepoint.
    expected = {}
    config = replay.config["lr"]
    changes = dict((step, conf["lr"]) for step, conf in schedule)
    for it in range(1, T + 1):
        expected[it] = config
        if it in changes:
            config = changes[it]
    seen = {}
    for r in results:
        seen[r["training_iteration"]] = r["config"]["lr"]
    assert seen == expected
    # The same schedule on a deterministic trainable ends where the PBT trial ended.
    assert results[-1]["value"] == pytest.approx(results_of(trial)[-1]["value"])
    assert results[-1]["training_iteration"] == T
    assert rt.experiment_tag.startswith(f"replay_pbt_policy_{trial.trial_id}.txt@perturbed[")


def write_policy(path, rows):
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return str(path)


def test_replay_chain_and_decisions(tmp_path):
    rows = [
        ["b", "c", 2, 2, {"lr": 1.0}, {"lr": 0.75}],   # not in the chain (overwritten)
        ["f", "g", 2, 2, {"lr": 0.5}, {"lr": 0.25}],   # f's history, copied into e's file
        ["e", "f", 4, 4, {"lr": 0.25}, {"lr": 0.0}],   # e's history, copied into a's file
        ["a", "e", 6, 6, {"lr": 0.0}, {"lr": 0.5}],
    ]
    replay = PopulationBasedTrainingReplay(write_policy(tmp_path / "p.txt", rows))
    assert replay.config == {"lr": 0.5}
    assert replay._policy == [(2, {"lr": 0.25}), (4, {"lr": 0.0}), (6, {"lr": 0.5})]
    view = TrialView(Trial(trainable_name="t", config={"lr": 9}, trial_id="r0"))
    runner = FakeRunner([view])
    replay.on_trial_add(runner, view)
    assert view.config == {"lr": 0.5}
    assert replay.results_before_decision(runner, view) == 2
    assert replay.on_trial_result(runner, view, {"training_iteration": 1}) == "CONTINUE"
    decision = replay.on_trial_result(runner, view, {"training_iteration": 2})
    assert decision.save and decision.exploit == Exploit(
        donor="r0", config={"lr": 0.25}, experiment_tag="replay_p.txt@perturbed[lr=0.25]")
    assert replay.results_before_decision(runner, view) == 2
    other = TrialView(Trial(trainable_name="t", config={}, trial_id="r1"))
    with pytest.raises(ValueError, match="More than one trial"):
        replay.on_trial_add(runner, other)


def test_replay_bad_files(tmp_path):
    with pytest.raises(ValueError, match="Policy file not found"):
        PopulationBasedTrainingReplay(str(tmp_path / "missing.txt"))
    bad = tmp_path / "bad.txt"
    bad.write_text("not json\n")
    with pytest.raises(ValueError, match="Could not read PBT policy file"):
        PopulationBasedTrainingReplay(str(bad))
    empty = PopulationBasedTrainingReplay(write_policy(tmp_path / "empty.txt", []))
    view = TrialView(Trial(trainable_name="t", config={}, trial_id="r0"))
    with pytest.raises(ValueError, match="No replay policy found"):
        empty.on_trial_add(FakeRunner([view]), view)


def test_create_scheduler_names():
    from tune_async.schedulers import create_scheduler

    assert isinstance(create_scheduler("pbt", hyperparam_mutations={"lr": LRS}),
                      PopulationBasedTraining)


# ---------------------------------------------------------------------------
# Real Ray


@pytest.mark.ray
def test_pbt_on_ray_with_reused_actors(tmp_path):
    scheduler = PopulationBasedTraining(time_attr="training_iteration", metric="value",
                                        mode="max", perturbation_interval=2,
                                        hyperparam_mutations={"lr": LRS})
    analysis = tune.run(Phased, config={"lr": tune.grid_search([0.0, 0.5, 1.0, 1.0])},
                        scheduler=scheduler, stop={"training_iteration": 6}, reuse_actors=True,
                        resources_per_trial={"cpu": 1}, local_dir=str(tmp_path), name="ray",
                        verbose=0)
    assert all(t.status == TrialStatus.TERMINATED for t in analysis.trials)
    assert scheduler._num_perturbations >= 1
    check_exploits_continue_from_the_donor(analysis, os.path.join(str(tmp_path), "ray"))


class CancelAfter(tune.Callback):
    def __init__(self, results):
        import asyncio

        self.left = results
        self.ready = asyncio.Event()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.left -= 1
        if self.left <= 0:
            self.ready.set()


class RecordingPBT(PopulationBasedTraining):
    def set_state(self, state, trial_runner):
        self.restored = {tid: m["last_perturbation_time"] for tid, m in state["members"].items()}
        super().set_state(state, trial_runner)


@pytest.mark.parametrize("synch", [False, True])
async def test_resume_continues_the_schedule(tmp_path, caplog, synch):
    import asyncio

    def kwargs(scheduler, **extra):
        return dict(config={"lr": tune.grid_search(LRS)}, num_samples=2, scheduler=scheduler,
                    stop={"training_iteration": T}, trial_executor=ScriptedExecutor(3),
                    checkpoint_freq=2, local_dir=str(tmp_path), name="resumed", verbose=0,
                    **extra)

    def pbt():
        return RecordingPBT(time_attr="training_iteration", metric="value", mode="max",
                            perturbation_interval=2, hyperparam_mutations={"lr": LRS},
                            synch=synch)

    point = CancelAfter(50 if synch else 120)  # (synch: mid-run, trials wait at a point)
    first = pbt()
    task = asyncio.create_task(tune.arun(Phased, **kwargs(first, callbacks=[point])))
    waiter = asyncio.create_task(point.ready.wait())
    done, _ = await asyncio.wait({task, waiter}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    assert waiter in done
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert first._num_perturbations > 0
    # An exploit decided just before the cancel may not have run (the donor's state was
    # in memory): check those decided after the resume.
    before = len(read_lines(str(tmp_path / "resumed" / "pbt_global.txt")))
    second = pbt()
    with caplog.at_level(logging.WARNING, logger="tune_async.controller"):
        analysis = await tune.arun(Phased, resume=True, **kwargs(second))
    assert "results_before_decision" not in caplog.text
    # No exploit was decided that could not be carried out (synch: a trial waiting
    # since the resume has no state in memory, so it neither donates nor is exploited).
    assert "Skipping the exploit" not in caplog.text and "no saved state" not in caplog.text
    # The population came back through set_state, not as new trials.
    assert second.restored and set(second.restored) == {t.trial_id for t in analysis.trials}
    assert second._num_perturbations >= first._num_perturbations > 0
    assert all(t.status == TrialStatus.TERMINATED for t in analysis.trials)
    for trial in analysis.trials:
        assert results_of(trial)[-1]["training_iteration"] == T
    check_exploits_continue_from_the_donor(analysis, str(tmp_path / "resumed"), skip=before,
                                           grid=False)
    assert max(results_of(t)[-1]["value"] for t in analysis.trials) > HALF + 1
