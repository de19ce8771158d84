"""PB2: the GP-bandit explore of PBT, fitted off the event loop."""

from __future__ import annotations

import inspect
import random
import sys
import threading

import anyio
import numpy as np
import pytest

pytest.importorskip("sklearn")

import tune_async as tune  # noqa: E402
from tests.scripted_executor import ScriptedExecutor  # noqa: E402
from tests.test_sched_pbt import (  # noqa: E402
    HALF,
    Phased,
    T,
    apply,
    apply_waiting,
    check_exploits_continue_from_the_donor,
    check_synch_exploits_continue_straight,
    relaunch,
    results_of,
)
from tune_async import transitions  # noqa: E402
from tune_async.error import TuneError  # noqa: E402
from tune_async.schedulers import Decision, pb2_utils  # noqa: E402
from tune_async.schedulers.pb2 import PB2  # noqa: E402
from tune_async.testing.conformance import FakeRunner, TrialSchedulerConformance  # noqa: E402
from tune_async.transitions import Event  # noqa: E402
from tune_async.trial import Trial, TrialStatus, TrialView, unwrap  # noqa: E402

BOUNDS = {"lr": [0.0, 1.0]}


@pytest.fixture(autouse=True)
def _seeded():
    random.seed(0)
    np.random.seed(0)


def make_pb2(**kwargs):
    kwargs.setdefault("time_attr", "training_iteration")
    kwargs.setdefault("metric", "score")
    kwargs.setdefault("mode", "max")
    kwargs.setdefault("perturbation_interval", 2)
    kwargs.setdefault("hyperparam_bounds", BOUNDS)
    return PB2(**kwargs)


def population(scheduler, n, configs=None):
    trials = [Trial(trainable_name="t", config=dict(configs[i]) if configs else {"lr": i / n},
                    trial_id=f"t{i}", experiment_tag=str(i)) for i in range(n)]
    views = [TrialView(t) for t in trials]
    runner = FakeRunner(views)
    for view in views:
        scheduler.on_trial_add(runner, view)
        transitions.apply(unwrap(view), Event.START)
    return views, runner


async def report(scheduler, runner, view, iteration, score):
    result = {"training_iteration": iteration, "score": score, "trial_id": view.trial_id}
    decision = await scheduler.on_trial_result(runner, view, result)
    unwrap(view).last_result = result
    return decision


# ---------------------------------------------------------------------------
# Construction


def test_defaults_follow_1x():
    pb2 = PB2(hyperparam_bounds=BOUNDS)
    assert pb2._time_attr == "time_total_s" and pb2._perturbation_interval == 60.0
    assert pb2._quantile_fraction == 0.25 and pb2._log_config and pb2._require_attrs
    assert not pb2._synch and pb2._resample_probability == 0


@pytest.mark.parametrize("bounds", [{"lr": [0.1]}, {"lr": 0.5}, {"lr": [1, 2, 3]},
                                    {"lr": [1.0, 0.5]}])
def test_bounds_must_be_min_max_pairs(bounds):
    with pytest.raises(ValueError, match="hyperparam_bounds"):
        PB2(hyperparam_bounds=bounds)


@pytest.mark.parametrize("bounds", [None, {}])
def test_bounds_are_required(bounds):
    with pytest.raises(TuneError, match="hyperparam_bounds"):
        PB2(hyperparam_bounds=bounds)


def test_missing_library_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    with pytest.raises(ImportError, match=r"tune_async\[pb2\]"):
        PB2(hyperparam_bounds=BOUNDS)


def test_missing_keys_are_sampled_within_bounds():
    pb2 = make_pb2(hyperparam_bounds={"lr": [0.1, 0.2], "n": (4, 8)})
    views, _ = population(pb2, 3, configs=[{}, {}, {"lr": 5}])
    for view in views[:2]:
        assert 0.1 <= view.config["lr"] <= 0.2 and view.evaluated_params["lr"] == view.config["lr"]
        assert isinstance(view.config["n"], int) and 4 <= view.config["n"] <= 8
    assert views[2].config["lr"] == 5


# ---------------------------------------------------------------------------
# The GP bandit


def test_kernel_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    X = rng.uniform(size=(6, 3))
    kernel = pb2_utils.TimeVaryingSquaredExp(lengthscale=0.4, epsilon=0.2)
    K, grad = kernel(X, eval_gradient=True)
    assert np.allclose(np.diag(K), 1.0) and np.allclose(K, K.T)
    for i, theta in enumerate(kernel.theta):
        step = 1e-6
        shifted = kernel.clone_with_theta(np.where(np.arange(len(kernel.theta)) == i,
                                                   theta + step, kernel.theta))
        numeric = (shifted(X) - K) / step
        assert np.allclose(grad[:, :, i], numeric, atol=1e-4)


def test_select_config_prefers_the_improving_region():
    # Reward change per time is high for lr near 0.8 and low elsewhere.
    rng = np.random.default_rng(0)
    rows = []
    for t in range(1, 9):
        for lr in np.linspace(0, 1, 6):
            rows.append((f"t{lr:.1f}", float(t), (float(lr),), float(t * (1 - abs(lr - 0.8)))))
    new, entry = pb2_utils.explore(rows, ["lr"], {"lr": (0.0, 1.0)}, None, "t0.8", "t0.0",
                                   {"lr": 0.8, "other": 1}, rng)
    assert 0.0 <= new["lr"] <= 1.0 and new["other"] == 1
    assert abs(new["lr"] - 0.8) < 0.3
    assert entry[0] == "t0.0" and entry[1] == 8.0 and entry[2] == (new["lr"],)


def test_no_data_on_the_donor_keeps_its_config():
    new, entry = pb2_utils.explore([("a", 1.0, (0.5,), 1.0)], ["lr"], {"lr": (0, 1)}, None,
                                   "a", "b", {"lr": 0.5}, np.random.default_rng(0))
    assert new == {"lr": 0.5} and entry is None


# ---------------------------------------------------------------------------
# Decisions


def test_hooks_are_coroutines():
    pb2 = make_pb2()
    for name in ("on_trial_result", "on_trial_complete", "on_trial_error", "on_trial_remove"):
        assert inspect.iscoroutinefunction(getattr(pb2, name))


async def _two_rounds(pb2, views, runner):
    decisions = []
    for iteration in (2, 4, 6):
        for view in views:
            score = 1 + float(view.config["lr"])  # the lowest lr is the lower quantile
            decision = await report(pb2, runner, view, iteration, score)
            decisions.append(decision)
            apply(view, decision)
            if view.status is TrialStatus.PAUSED:
                transitions.apply(unwrap(view), Event.UNPAUSE)
                transitions.apply(unwrap(view), Event.START)
    return decisions


@pytest.mark.asyncio
async def test_lower_trial_exploits_with_a_config_within_bounds():
    pb2 = make_pb2()
    views, runner = population(pb2, 4)
    decisions = await _two_rounds(pb2, views, runner)
    exploits = [d.exploit for d in decisions if isinstance(d, Decision) and d.exploit]
    assert exploits
    for exploit in exploits:
        assert 0.0 <= exploit.config["lr"] <= 1.0
        assert exploit.experiment_tag.split("@perturbed[")[1].startswith("lr=")
    assert any(isinstance(d, Decision) and d.save for d in decisions)


@pytest.mark.asyncio
async def test_gp_fit_runs_off_the_event_loop(monkeypatch):
    pb2 = make_pb2()
    views, runner = population(pb2, 4)
    loop_thread = threading.get_ident()
    fit_threads = []
    loop_ran = threading.Event()
    real = pb2_utils.select_config

    def select_config(*args, **kwargs):
        fit_threads.append(threading.get_ident())
        # Only returns once the loop served something else meanwhile.
        assert loop_ran.wait(10), "the event loop did not run while the GP was fitted"
        return real(*args, **kwargs)

    monkeypatch.setattr(pb2_utils, "select_config", select_config)

    done = anyio.Event()

    async def heartbeat():
        while not done.is_set():
            if fit_threads:
                loop_ran.set()
            await anyio.sleep(0.001)

    async with anyio.create_task_group() as tg:
        tg.start_soon(heartbeat)
        try:
            await _two_rounds(pb2, views, runner)
        finally:
            loop_ran.set()
            done.set()
    assert fit_threads and loop_thread not in fit_threads


@pytest.mark.asyncio
async def test_synch_round_exploits_the_waiting_trials():
    pb2 = make_pb2(synch=True)
    views, runner = population(pb2, 4)
    for view, score in zip(views[:3], [0, 1, 3], strict=True):
        decision = await report(pb2, runner, view, 2, score)
        assert decision == "PAUSE"
        apply(view, decision)
    last = await report(pb2, runner, views[3], 2, 2)  # t2 (paused) is the best
    ((target, exploit),) = last.exploit_waiting
    assert last.action == "PAUSE" and last.exploit is None
    assert target == "t0" and exploit.donor == "t2" and 0.0 <= exploit.config["lr"] <= 1.0
    apply(views[3], last, runner)
    assert views[0].config == exploit.config
    assert pb2.choose_trial_to_run(runner) is views[0]
    relaunch(views[0])
    assert pb2.results_before_decision(runner, views[0]) == 2  # straight to 4


@pytest.mark.asyncio
async def test_synch_exploit_whose_donor_decided_goes_out_with_that_decision():
    pb2 = make_pb2(synch=True)
    views, runner = population(pb2, 2)
    apply(views[0], await report(pb2, runner, views[0], 2, 0))
    last = await report(pb2, runner, views[1], 2, 5)  # t1 decides, and is the donor
    ((target, exploit),) = last.exploit_waiting
    assert last == Decision(action="PAUSE", save=True, exploit_waiting=((target, exploit),))
    assert target == "t0" and exploit.donor == "t1" and 0.0 <= exploit.config["lr"] <= 1.0
    apply(views[1], last, runner)
    assert views[0].config == exploit.config
    assert pb2.choose_trial_to_run(runner) is views[0]
    relaunch(views[0])
    assert pb2.results_before_decision(runner, views[0]) == 2  # straight to 4
    relaunch(views[1])
    assert await report(pb2, runner, views[1], 3, 5) == "CONTINUE"  # nothing left over


@pytest.mark.asyncio
async def test_synch_round_completed_by_a_trial_end_is_returned():
    for end in ("complete", "error", "remove"):
        pb2 = make_pb2(synch=True)
        views, runner = population(pb2, 3)
        for view, score in zip(views[:2], [0, 5], strict=True):
            apply(view, await report(pb2, runner, view, 2, score))
        if end == "complete":
            transitions.apply(unwrap(views[2]), Event.COMPLETE)
            ended = await pb2.on_trial_complete(runner, views[2], {"training_iteration": 1})
        elif end == "error":
            transitions.apply(unwrap(views[2]), Event.FAIL)
            ended = await pb2.on_trial_error(runner, views[2])
        else:
            transitions.apply(unwrap(views[2]), Event.PAUSE)
            transitions.apply(unwrap(views[2]), Event.STOP)
            ended = await pb2.on_trial_remove(runner, views[2])
        ((target, exploit),) = ended.exploit_waiting
        assert ended == Decision(exploit_waiting=((target, exploit),))
        assert target == "t0" and exploit.donor == "t1"
        assert 0.0 <= exploit.config["lr"] <= 1.0
        apply_waiting(runner, ended)
        assert views[0].config == exploit.config


# ---------------------------------------------------------------------------
# Conformance


class TestPB2Conformance(TrialSchedulerConformance):
    def make_scheduler(self):
        return PB2(time_attr="training_iteration", perturbation_interval=2,
                   hyperparam_bounds={"index": [0, 3]})


class TestPB2SynchConformance(TrialSchedulerConformance):
    def make_scheduler(self):
        return PB2(time_attr="training_iteration", perturbation_interval=2,
                   hyperparam_bounds={"index": [0, 3]}, synch=True)


# ---------------------------------------------------------------------------
# End to end


def test_pb2_end_to_end(tmp_path):
    scheduler = PB2(time_attr="training_iteration", metric="value", mode="max",
                    perturbation_interval=2, hyperparam_bounds=BOUNDS)
    executor = ScriptedExecutor(4)
    analysis = tune.run(Phased, config={"lr": tune.grid_search([0.0, 0.25, 0.5, 0.75, 1.0])},
                        num_samples=2, scheduler=scheduler, stop={"training_iteration": T},
                        trial_executor=executor, local_dir=str(tmp_path), name="pb2",
                        verbose=0)
    assert all(t.status == TrialStatus.TERMINATED for t in analysis.trials)
    check_exploits_continue_from_the_donor(analysis, str(tmp_path / "pb2"),
                                           valid=lambda lr: 0.0 <= lr <= 1.0)
    for trial in analysis.trials:
        assert all(0.0 <= r["config"]["lr"] <= 1.0 for r in results_of(trial))
    best = max(results_of(t)[-1]["value"] for t in analysis.trials)
    assert best > HALF + 1  # every fixed lr ends at HALF


@pytest.mark.parametrize("slots, reuse", [(1, False), (4, True), (10, False)])
def test_pb2_synch_end_to_end(tmp_path, caplog, slots, reuse):
    import logging

    scheduler = PB2(time_attr="training_iteration", metric="value", mode="max",
                    perturbation_interval=2, hyperparam_bounds=BOUNDS, synch=True)
    executor = ScriptedExecutor(slots)
    with caplog.at_level(logging.WARNING, logger="tune_async.controller"):
        analysis = tune.run(Phased, config={"lr": tune.grid_search([0.0, 0.25, 0.5, 0.75, 1.0])},
                            num_samples=2, scheduler=scheduler, stop={"training_iteration": T},
                            trial_executor=executor, reuse_actors=reuse, local_dir=str(tmp_path),
                            name="pb2", verbose=0)
    assert "Skipping the exploit" not in caplog.text
    assert "results_before_decision" not in caplog.text
    assert all(t.status == TrialStatus.TERMINATED for t in analysis.trials)
    assert executor.max_used == slots
    lines = check_synch_exploits_continue_straight(analysis, str(tmp_path / "pb2"),
                                                   valid=lambda lr: 0.0 <= lr <= 1.0)
    assert scheduler._num_perturbations == len(lines)
