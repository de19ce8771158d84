"""The in-process executor: the executor contract, and tune.run end to end without Ray."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

import tune_async as tune
from tune_async.error import TuneError
from tune_async.resources import Resources
from tune_async.schedulers import FIFOScheduler, PopulationBasedTraining
from tune_async.testing import ExecutorConformance
from tune_async.trial import Trial


class TestLocalExecutorConformance(ExecutorConformance):
    trials_at_once = 2

    def make_executor(self) -> tune.LocalExecutor:
        return tune.LocalExecutor(cpus=self.trials_at_once)


class TestLocalExecutorAsyncConformance(TestLocalExecutorConformance):
    """The async twins of the suite's trainables: tasks on the test's own loop."""

    async_trainables = True


class Counter(tune.Trainable):
    """Adds ``inc`` each step; its state survives checkpoints, pauses and exploits."""

    def setup(self, config):
        self.total = 0

    def step(self):
        self.total += self.config["inc"]
        return {"total": self.total, "score": self.total}

    def save_checkpoint(self, checkpoint_dir):
        return {"total": self.total}

    def load_checkpoint(self, checkpoint):
        self.total = checkpoint["total"]


class PauseAt(FIFOScheduler):
    """Pauses every trial once at iteration ``at``; FIFO runs it again later."""

    def __init__(self, at):
        self.at = at
        self.paused = []

    def on_trial_result(self, trial_runner, trial, result):
        if result["training_iteration"] == self.at and trial.trial_id not in self.paused:
            self.paused.append(trial.trial_id)
            return self.PAUSE
        return self.CONTINUE


def result_lines(trial):
    with open(os.path.join(trial.logdir, "result.json")) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_function_trainable_runs_in_process_with_files_and_analysis(results_dir):
    threads = set()

    def fn(config):
        for i in range(4):
            threads.add(threading.get_ident())
            tune.report(loss=(config["x"] - 2) ** 2 + 1 / (i + 1), pid=os.getpid())

    analysis = tune.run(fn, config={"x": tune.grid_search([1, 2, 3])}, trial_executor="local",
                        metric="loss", mode="min", local_dir=results_dir, verbose=0)
    assert analysis.best_config == {"x": 2}
    for trial in analysis.trials:
        assert trial.status == "TERMINATED"
        lines = result_lines(trial)
        assert [r["training_iteration"] for r in lines] == [1, 2, 3, 4]
        assert {r["pid"] for r in lines} == {os.getpid()}, "the trainable ran in this process"
        assert {"params.json", "progress.csv", "result.json"} <= set(os.listdir(trial.logdir))
    assert threading.get_ident() not in threads, "steps run in worker threads, not the loop"
    assert analysis.results_df.shape[0] == 3


def test_class_trainable_checkpoints_and_restore(results_dir):
    analysis = tune.run(Counter, config={"inc": 3}, stop={"training_iteration": 4},
                        checkpoint_freq=2, local_dir=results_dir, verbose=0,
                        trial_executor=tune.LocalExecutor())
    [trial] = analysis.trials
    assert [r["total"] for r in result_lines(trial)] == [3, 6, 9, 12]
    paths = analysis.get_trial_checkpoints_paths(trial, "training_iteration")
    assert [it for _, it in paths] == [2, 4]
    checkpoint = max(paths, key=lambda p: p[1])[0]
    assert os.path.exists(checkpoint)
    again = tune.run(Counter, config={"inc": 3}, stop={"training_iteration": 6},
                     restore=checkpoint, local_dir=results_dir, verbose=0,
                     trial_executor="local")
    [restored] = again.trials
    assert [(r["training_iteration"], r["total"]) for r in result_lines(restored)] == [
        (5, 15), (6, 18)]


def test_pause_and_resume_keep_the_trainable_state(results_dir):
    scheduler = PauseAt(2)
    analysis = tune.run(Counter, config={"inc": tune.grid_search([1, 10, 100])},
                        stop={"training_iteration": 4}, scheduler=scheduler,
                        trial_executor=tune.LocalExecutor(max_concurrent=2),
                        local_dir=results_dir, verbose=0)
    assert len(scheduler.paused) == 3
    for trial in analysis.trials:
        inc = trial.config["inc"]
        assert trial.status == "TERMINATED"
        assert [r["total"] for r in result_lines(trial)] == [inc, 2 * inc, 3 * inc, 4 * inc]


def test_pbt_exploits_in_process(results_dir):
    pbt = PopulationBasedTraining(time_attr="training_iteration", metric="score", mode="max",
                                  perturbation_interval=2, synch=True,
                                  hyperparam_mutations={"inc": [1, 2, 3, 100]})
    analysis = tune.run(Counter, config={"inc": tune.grid_search([1, 100])},
                        stop={"training_iteration": 6}, scheduler=pbt,
                        trial_executor=tune.LocalExecutor(max_concurrent=2),
                        local_dir=results_dir, verbose=0)
    assert {t.status for t in analysis.trials} == {"TERMINATED"}
    low = next(t for t in analysis.trials if t.experiment_tag.startswith("0_"))
    lines = result_lines(low)
    assert lines[-1]["training_iteration"] == 6
    # Exploited (synch: at step 2 both trials are in), the weak trial went on from the
    # strong one's state (total 200 at step 2).
    assert lines[-1]["total"] > 200


def test_capacity_from_cpus_and_max_concurrent(tmp_path):
    def trial(cpu):
        return Trial("t", config={}, local_dir=str(tmp_path), resources=Resources(cpu=cpu))

    executor = tune.LocalExecutor(cpus=4)
    executor.reserve(trial(3))
    assert executor.has_resources_for_trial(trial(1))
    assert not executor.has_resources_for_trial(trial(2))
    # max_concurrent caps the number of trials instead of their CPUs.
    limited = tune.LocalExecutor(max_concurrent=3, cpus=1)
    for _ in range(3):
        assert limited.has_resources_for_trial(trial(1))
        limited.reserve(trial(1))
    assert not limited.has_resources_for_trial(trial(1))
    limited.check_feasible(trial(8))
    with pytest.raises(TuneError, match="1 GPU"):
        executor.check_feasible(Trial("t", config={}, resources=Resources(cpu=1, gpu=1)))
    assert tune.LocalExecutor().resource_summary().endswith(
        f"0/{os.cpu_count()} CPUs, 0/0 GPUs (in process)")


_LIVE = {"running": 0, "peak": 0}
_LIVE_LOCK = threading.Lock()  # module level: the trainable pickles by reference


def _overlapping(config):
    with _LIVE_LOCK:
        _LIVE["running"] += 1
        _LIVE["peak"] = max(_LIVE["peak"], _LIVE["running"])
    try:
        for _ in range(20):
            time.sleep(0.002)
            tune.report(x=1)
    finally:
        with _LIVE_LOCK:
            _LIVE["running"] -= 1


def test_concurrent_trials_never_exceed_max_concurrent(results_dir):
    _LIVE.update(running=0, peak=0)
    analysis = tune.run(_overlapping, num_samples=6,
                        trial_executor=tune.LocalExecutor(max_concurrent=3, cpus=1),
                        local_dir=results_dir, verbose=0)
    assert {t.status for t in analysis.trials} == {"TERMINATED"}
    assert len(analysis.trials) == 6
    assert _LIVE["peak"] == 3, "trials run side by side, up to max_concurrent"


_GATE = {"entered": threading.Event(), "open": threading.Event(), "cleaned": []}


class Gate(tune.Trainable):
    """Its step waits (in real time, briefly) for the gate to open; cleanup is recorded."""

    def step(self):
        _GATE["entered"].set()
        _GATE["open"].wait(5)
        return {}

    def cleanup(self):
        _GATE["cleaned"].append(self.trial_id)


async def test_in_flight_stop_does_not_wait_and_shutdown_waits_for_the_step(tmp_path):
    import anyio

    from tune_async.execution.base import BatchLimits

    _GATE.update(entered=threading.Event(), open=threading.Event(), cleaned=[])
    trial = Trial("t", config={}, local_dir=str(tmp_path))
    trial.init_logdir(trial.trial_id)
    executor = tune.LocalExecutor(cpus=1)
    await executor.setup()
    executor.reserve(trial)
    await executor.start_trial(trial, Gate, reuse=False)
    async with anyio.create_task_group() as tg:
        tg.start_soon(executor.fetch_results, trial, BatchLimits())
        while not _GATE["entered"].is_set():
            await anyio.sleep(0.001)
        tg.cancel_scope.cancel()
    began = time.monotonic()
    await executor.stop_trial(trial, in_flight=True)
    assert time.monotonic() - began < 0.5, "stop_trial returned while the step still runs"
    assert executor.has_resources_for_trial(trial) and _GATE["cleaned"] == []
    _GATE["open"].set()
    await executor.shutdown()
    assert _GATE["cleaned"] == [trial.trial_id], "shutdown waited for the step, then cleanup"
