"""The simulated executor: surrogate curves on a virtual clock, through tune.run."""

from __future__ import annotations

import json
import os
import time

import tune_async as tune
from tests.disk_lag import LagOnDisk, write_slowly
from tune_async.clock import FakeClock
from tune_async.schedulers import ASHAScheduler, FIFOScheduler
from tune_async.testing import ExecutorConformance


class TestSimulatedExecutorConformance(ExecutorConformance):
    """``surrogate=None``: the suite's own trainables run on the virtual clock (their
    steps in threads, so a step that blocks in real time does not block the loop)."""

    trials_at_once = 2

    def make_executor(self) -> tune.SimulatedExecutor:
        return tune.SimulatedExecutor(slots=self.trials_at_once)


def curve(config, iteration):
    """A loss that falls with the iteration; config ``i`` (or ``start``, ``rate``) shapes
    it. Steps take ``secs`` virtual seconds."""
    i = config.get("i")
    start = config["start"] if i is None else 1.0 + (i * 7 % 10) / 10
    rate = config["rate"] if i is None else 0.2 + (i * 3 % 10) / 20
    return {"loss": start / iteration ** rate}, config.get("secs", 1.0)


def curve_function(config):
    """The same curve as a real function trainable."""
    for iteration in range(1, 1000):
        tune.report(**curve(config, iteration)[0])


def result_lines(trial):
    with open(os.path.join(trial.logdir, "result.json")) as f:
        return [json.loads(line) for line in f if line.strip()]


def asha(max_t=27):
    return ASHAScheduler(max_t=max_t, grace_period=1, reduction_factor=3)


def iterations_by_config(analysis):
    return {t.config["i"]: t.last_result["training_iteration"] for t in analysis.trials}


def test_asha_decides_as_on_a_real_executor(results_dir):
    grid = {"i": tune.grid_search(list(range(24)))}
    simulated = tune.SimulatedExecutor(curve, slots=1)
    sim = tune.run(simulated.trainable, config=grid, scheduler=asha(), metric="loss",
                   mode="min", trial_executor=simulated, local_dir=results_dir, verbose=0)
    real = tune.run(curve_function, config=grid, scheduler=asha(), metric="loss", mode="min",
                    trial_executor=tune.LocalExecutor(max_concurrent=1),
                    local_dir=results_dir, verbose=0)
    assert iterations_by_config(sim) == iterations_by_config(real)
    stops = set(iterations_by_config(sim).values())
    assert {1, 3, 27} <= stops <= {1, 3, 9, 27}, "ASHA cut trials at its rungs"
    assert sim.best_config == real.best_config


def test_results_follow_virtual_time_across_trials(results_dir):
    clock = FakeClock()
    seen = []

    class Record(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            seen.append((result["time_total_s"], clock.now(), trial.config["secs"]))

    executor = tune.SimulatedExecutor(curve, clock, slots=2)
    analysis = tune.run(executor.trainable, config={"start": 1.0, "rate": 1.0,
                                                    "secs": tune.grid_search([1.0, 3.0])},
                        stop={"training_iteration": 6}, trial_executor=executor,
                        callbacks=[Record()], local_dir=results_dir, verbose=0)
    totals = [total for total, _, _ in seen]
    assert totals == sorted(totals), "results reach the driver in virtual-time order"
    assert all(now >= total for total, now, _ in seen), "no result before its finish time"
    # By virtual time 6 the fast trial made six steps and the slow one two; then only
    # the slow one runs.
    assert sorted(secs for _, _, secs in seen[:8]) == [1] * 6 + [3] * 2
    assert [secs for _, _, secs in seen[8:]] == [3] * 4
    assert clock.now() == 18.0
    for trial in analysis.trials:
        lines = result_lines(trial)
        secs = trial.config["secs"]
        assert [r["time_this_iter_s"] for r in lines] == [secs] * 6
        assert [r["time_total_s"] for r in lines] == [secs * i for i in range(1, 7)]


def test_time_budget_follows_the_virtual_clock(results_dir):
    executor = tune.SimulatedExecutor(curve, slots=2)
    began = time.monotonic()
    analysis = tune.run(executor.trainable, config={"start": 1.0, "rate": 1.0, "secs": 10.0},
                        num_samples=2, time_budget_s=95, trial_executor=executor,
                        local_dir=results_dir, verbose=0)
    assert time.monotonic() - began < 10, "virtual seconds take no real time"
    assert 95 <= executor.clock.now() < 110
    for trial in analysis.trials:
        assert trial.status == "TERMINATED"
        assert 80 <= trial.last_result["time_total_s"] <= 100


def test_batch_limits_are_exact_and_checkpoints_restore(results_dir):
    executor = tune.SimulatedExecutor(curve, slots=3)
    analysis = tune.run(executor.trainable, config={"start": 2.0, "rate": 1.0},
                        num_samples=3, stop={"training_iteration": 5}, checkpoint_freq=2,
                        trial_executor=executor, local_dir=results_dir, verbose=0)
    assert executor.steps == 15, "no step ran past the stop criteria"
    for trial in analysis.trials:
        assert [r["training_iteration"] for r in result_lines(trial)] == [1, 2, 3, 4, 5]
    paths = analysis.get_trial_checkpoints_paths(analysis.trials[0], "training_iteration")
    assert [it for _, it in paths] == [2, 4]
    again = tune.SimulatedExecutor(curve)
    restored = tune.run(again.trainable, config={"start": 2.0, "rate": 1.0},
                        stop={"training_iteration": 6}, restore=max(paths, key=lambda p: p[1])[0],
                        trial_executor=again, local_dir=results_dir, verbose=0)
    lines = result_lines(restored.trials[0])
    assert [(r["training_iteration"], r["time_total_s"]) for r in lines] == [(5, 5.0), (6, 6.0)]


def test_asha_against_fifo_over_many_trials(results_dir):
    def noisy_curve(config, iteration):
        return {"loss": config["a"] + 1.0 / iteration}, 1.0 + config["a"]

    runs = {}
    for name, scheduler in (("asha", asha(max_t=9)), ("fifo", FIFOScheduler())):
        executor = tune.SimulatedExecutor(noisy_curve, slots=8)
        began = time.monotonic()
        analysis = tune.run(executor.trainable, config={"a": tune.uniform(0, 1)}, num_samples=100,
                            scheduler=scheduler, metric="loss", mode="min",
                            stop={"training_iteration": 9}, trial_executor=executor,
                            local_dir=results_dir, verbose=0)
        runs[name] = (analysis, executor.steps, executor.clock.now(), time.monotonic() - began)
    (asha_run, asha_steps, asha_virtual, _), (fifo_run, fifo_steps, fifo_virtual, _) = (
        runs["asha"], runs["fifo"])
    assert fifo_steps == 100 * 9
    assert asha_steps < fifo_steps / 2, "ASHA stops most trials early"
    assert asha_virtual < fifo_virtual / 2
    assert asha_run.best_config["a"] < 0.1 and fifo_run.best_config["a"] < 0.1
    assert len(asha_run.trials) == len(fifo_run.trials) == 100


def test_pbt_pauses_and_exploits_on_the_virtual_clock(results_dir):
    from tune_async.schedulers import PopulationBasedTraining

    def lr_curve(config, iteration):
        return {"score": config["lr"] * iteration}, 1.0

    pbt = PopulationBasedTraining(time_attr="training_iteration", metric="score", mode="max",
                                  perturbation_interval=2, synch=True,
                                  hyperparam_mutations={"lr": [0.1, 0.2, 0.5, 1.0]})
    executor = tune.SimulatedExecutor(lr_curve, slots=2)  # 4 trials: some wait paused
    analysis = tune.run(executor.trainable, config={"lr": tune.grid_search([0.1, 0.2, 0.5, 1.0])},
                        stop={"training_iteration": 6}, scheduler=pbt, trial_executor=executor,
                        local_dir=results_dir, verbose=0)
    assert {t.status for t in analysis.trials} == {"TERMINATED"}
    for trial in analysis.trials:
        last = trial.last_result
        # Restored from a pause or a donor, a trial keeps its iteration and virtual time.
        assert (last["training_iteration"], last["time_total_s"]) == (6, 6.0)
    assert executor.clock.now() >= 12.0, "two slots for four trials: at least two rounds"


def _asha_grid_run(results_dir):
    executor = tune.SimulatedExecutor(curve, slots=4)
    analysis = tune.run(executor.trainable, config={"i": tune.grid_search(list(range(40)))},
                        scheduler=asha(), metric="loss", mode="min",
                        trial_executor=executor, local_dir=results_dir, verbose=0)
    finals = {t.config["i"]: (t.last_result["training_iteration"], t.last_result["time_total_s"],
                              t.start_time) for t in analysis.trials}
    return finals, executor.clock.now()


def test_a_writer_that_falls_behind_holds_virtual_time_not_the_decisions(
        results_dir, monkeypatch):
    """The consumer waits for a writer that fell behind (back-pressure) with the virtual
    clock held: the simulation makes the same decisions at the same virtual times."""
    from tune_async.state import ExperimentPersistence

    unhurried = _asha_grid_run(results_dir)
    write_slowly(monkeypatch, per_write=0.02)
    monkeypatch.setattr(ExperimentPersistence, "MAX_BACKLOG", 2)
    held_back = _asha_grid_run(results_dir)
    assert held_back == unhurried


def test_finished_trials_reach_the_disk_while_a_simulation_runs(results_dir, monkeypatch):
    """A simulation's loop never idles, and a slow disk lags: the records of finished
    trials still reach the disk as the run goes, at most the back-pressure bound behind
    (not all at the end, held in memory until then)."""
    from tune_async.state import ExperimentPersistence

    write_slowly(monkeypatch, per_write=0.01)
    monkeypatch.setattr(ExperimentPersistence, "MAX_BACKLOG", 10)
    lag_on_disk = LagOnDisk(every=25)

    executor = tune.SimulatedExecutor(curve, slots=8)
    analysis = tune.run(executor.trainable, config={"i": tune.grid_search(list(range(200)))},
                        stop={"training_iteration": 2}, trial_executor=executor,
                        callbacks=[lag_on_disk], local_dir=results_dir, verbose=0)
    assert len(analysis.trials) == 200
    lags = lag_on_disk.lags
    assert len(lags) == 8
    # A step queues a few jobs (a trial's journal lines: added, finished): at most ~13
    # queued and a batch as large in the writer's hands, ~25 jobs. Unbounded, the lag
    # grew with the run (179 trials by the 200th).
    assert max(lags) <= 40, lags
