"""End to end on a real local Ray instance (one per test session), through the public API."""

from __future__ import annotations

import asyncio
import json
import os
import time

import numpy as np
import pytest

import tune_async as tune

pytestmark = pytest.mark.ray


def result_lines(trial):
    with open(os.path.join(trial.logdir, "result.json")) as f:
        return [json.loads(line) for line in f if line.strip()]


def timed(config):
    for _ in range(3):
        start = time.time()
        time.sleep(0.1)
        tune.report(start=start, end=time.time())


def max_overlap(analysis):
    spans = []
    for trial in analysis.trials:
        lines = result_lines(trial)
        spans.append((lines[0]["start"], lines[-1]["end"]))
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    live = peak = 0
    for _, step in edges:
        live += step
        peak = max(peak, live)
    return peak


def test_trials_run_in_parallel_up_to_the_cpus(results_dir):
    analysis = tune.run(timed, num_samples=4, verbose=0, local_dir=results_dir)
    assert [t.status for t in analysis.trials] == ["TERMINATED"] * 4
    assert max_overlap(analysis) == 2  # 2 CPUs, 1 CPU per trial
    pids = {result_lines(t)[0]["pid"] for t in analysis.trials}
    assert os.getpid() not in pids  # trials ran in actors, not in the driver


def test_resources_per_trial_limit_concurrency(results_dir):
    analysis = tune.run(timed, num_samples=2, verbose=0, local_dir=results_dir,
                        resources_per_trial={"cpu": 2})
    assert max_overlap(analysis) == 1


def test_placement_group_factory_resources(results_dir):
    pgf = tune.PlacementGroupFactory([{"CPU": 1}, {"CPU": 1}])
    analysis = tune.run(timed, num_samples=2, verbose=0, local_dir=results_dir,
                        resources_per_trial=pgf)
    assert [t.status for t in analysis.trials] == ["TERMINATED"] * 2
    assert max_overlap(analysis) == 1


def test_infeasible_request_fails_before_any_trial(results_dir):
    with pytest.raises(tune.TuneError, match="Insufficient cluster resources.*3 CPU"):
        tune.run(timed, verbose=0, local_dir=results_dir, name="infeasible",
                 resources_per_trial={"cpu": 3})
    exp_dir = os.path.join(results_dir, "infeasible")
    assert not [n for n in os.listdir(exp_dir) if os.path.isdir(os.path.join(exp_dir, n))]


def test_queue_trials_lets_an_infeasible_trial_wait(results_dir):
    analysis = tune.run(timed, verbose=0, local_dir=results_dir, queue_trials=True,
                        resources_per_trial={"cpu": 3}, time_budget_s=1)
    assert analysis.trials[0].status == "TERMINATED"
    assert analysis.trials[0].results_recorded == 0


class Resettable(tune.Trainable):
    def setup(self, config):
        self.resets = 0
        self.x = config["x"]

    def step(self):
        return {"x": self.x, "resets": self.resets, "pid": os.getpid(), "done": True}

    def reset_config(self, new_config):
        self.resets += 1
        self.x = new_config["x"]
        return True


def test_reuse_actors_resets_the_same_instance(results_dir):
    analysis = tune.run(Resettable, config={"x": tune.grid_search(list(range(6)))},
                        reuse_actors=True, verbose=0, local_dir=results_dir)
    lines = [result_lines(t)[0] for t in analysis.trials]
    assert sorted(r["x"] for r in lines) == list(range(6))
    assert max(r["resets"] for r in lines) >= 2  # an instance served several trials
    assert len({r["pid"] for r in lines}) <= 2


def test_without_reuse_each_trial_gets_a_fresh_instance(results_dir):
    analysis = tune.run(Resettable, config={"x": tune.grid_search(list(range(4)))},
                        verbose=0, local_dir=results_dir)
    assert {result_lines(t)[0]["resets"] for t in analysis.trials} == {0}


def test_with_parameters_keeps_data_out_of_config(results_dir):
    data = np.arange(200_000)

    def train(config, data=None):
        tune.report(total=int(data.sum()) + config["k"])

    analysis = tune.run(tune.with_parameters(train, data=data), config={"k": 1}, verbose=0,
                        local_dir=results_dir)
    trial = analysis.trials[0]
    assert result_lines(trial)[0]["total"] == int(data.sum()) + 1
    with open(os.path.join(trial.logdir, "params.json")) as f:
        assert json.load(f) == {"k": 1}


def crashing(config):
    tune.report(x=1)
    if config["crash"]:
        os._exit(1)
    tune.report(x=2)


def test_a_dying_worker_is_a_trial_failure(results_dir):
    analysis = tune.run(crashing, config={"crash": tune.grid_search([True, False])},
                        verbose=0, local_dir=results_dir, raise_on_failed_trial=False)
    statuses = {t.config["crash"]: t.status for t in analysis.trials}
    assert statuses == {True: "ERROR", False: "TERMINATED"}
    crashed = next(t for t in analysis.trials if t.config["crash"])
    with open(crashed.error_file) as f:
        assert "died" in f.read()


def test_fail_fast_raise_reraises_the_trainable_exception(results_dir):
    def bad(config):
        raise KeyError("missing-thing")

    with pytest.raises(KeyError, match="missing-thing"):
        tune.run(bad, verbose=0, local_dir=results_dir, fail_fast="raise")


def test_registered_name_and_lambda(results_dir):
    tune.register_trainable("lam", lambda config: tune.report(v=config["v"] * 2))
    analysis = tune.run("lam", config={"v": 21}, verbose=0, local_dir=results_dir)
    assert result_lines(analysis.trials[0])[0]["v"] == 42
    assert os.path.basename(os.path.dirname(analysis.trials[0].logdir)) == "lam"


def test_experiment_objects_and_run_experiments(results_dir):
    exp = tune.Experiment("exp_a", timed, num_samples=2, local_dir=results_dir)
    trials = tune.run_experiments(exp, verbose=0)
    assert len(trials) == 2 and all(t.status == "TERMINATED" for t in trials)
    trials = tune.run_experiments(
        {"exp_b": {"run": timed, "num_samples": 1, "local_dir": results_dir}}, verbose=0)
    assert os.path.dirname(trials[0].logdir) == os.path.join(results_dir, "exp_b")


async def test_arun_with_heartbeat_and_cancellation_releases_actors(results_dir):
    import ray

    ticks = 0

    async def heartbeat():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    def forever(config):
        while True:
            time.sleep(0.01)
            tune.report(x=1)

    beat = asyncio.create_task(heartbeat())
    task = asyncio.create_task(tune.arun(forever, num_samples=3, verbose=0, name="arun_cancel",
                                         local_dir=results_dir))
    state_dir = os.path.join(results_dir, "arun_cancel")
    for _ in range(600):
        await asyncio.sleep(0.05)
        trial_dirs = [n for n in os.listdir(state_dir) if n.startswith("forever_")] \
            if os.path.isdir(state_dir) else []
        if len(trial_dirs) >= 2:
            break
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    beat.cancel()
    assert ticks > 20
    for _ in range(600):  # Ray reports freed resources late on a loaded 2-core machine
        if ray.available_resources().get("CPU", 0) == 2:
            break
        await asyncio.sleep(0.05)
    assert ray.available_resources().get("CPU", 0) == 2
    state_file = [n for n in os.listdir(state_dir) if n.startswith("experiment_state-")][0]
    with open(os.path.join(state_dir, state_file)) as f:
        statuses = sorted(t["status"] for t in json.load(f)["checkpoints"])
    assert statuses == ["PENDING", "PENDING", "PENDING"]  # interrupted: resumable
