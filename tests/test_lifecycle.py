"""Pause, exploit and stop on a sound lifecycle (issue #7, first part).

A trial is not waiting until its release finished; executor state is keyed by the
launch, so a late call never reaches a later run; saving before a release is a real
effect; a decision never lands mid-batch; PBT's exploit is a decision value; the
scheduler's state travels with the experiment state. Most tests run on an executor
that adds Ray-like latency to every call and records which launch each call was for.
"""

from __future__ import annotations

import json
import logging
import os
import random

import anyio
import pytest

import tune_async as tune
from tests.scripted_executor import ScriptedExecutor
from tune_async.error import TuneError
from tune_async.execution.base import launch_key
from tune_async.schedulers import Decision, Exploit, FIFOScheduler
from tune_async.state import load_state, newest_state_file
from tune_async.trial import TrialStatus


class Counter(tune.Trainable):
    """Adds config["inc"] per step; logs every executed step with its launch's value."""

    def setup(self, config):
        self.value = 0

    def step(self):
        self.value += self.config["inc"]
        with open(self.config["log"], "a") as f:
            f.write(json.dumps({"trial": self.trial_id, "it": self.iteration + 1,
                                "value": self.value}) + "\n")
        return {"value": self.value, "loss": -self.value}

    def save_checkpoint(self, checkpoint_dir):
        return {"value": self.value}

    def load_checkpoint(self, checkpoint):
        self.value = checkpoint["value"]

    def reset_config(self, new_config):
        self.value = 0  # a reused instance starts the next trial afresh
        return True


class LatencyExecutor(ScriptedExecutor):
    """ScriptedExecutor with Ray-like latency, recording which launch every call was for.

    Calls for a launch that was already stopped (a late call) are recorded as
    violations instead of acting on anything.
    """

    def __init__(self, slots: int = 2, seed: int = 0) -> None:
        super().__init__(slots=slots)
        self.rng = random.Random(seed)
        self.calls: list[tuple[str, object]] = []
        self.stopped_launches: set = set()
        self.violations: list[tuple[str, object]] = []

    async def _latency(self) -> None:
        await anyio.sleep(self.rng.uniform(0.0, 0.01))

    def _check(self, name: str, trial) -> None:
        key = launch_key(trial)
        self.calls.append((name, key))
        if key in self.stopped_launches:
            self.violations.append((name, key))

    async def start_trial(self, trial, trainable_cls, reuse, checkpoint=None):
        self._check("start", trial)
        await self._latency()
        await super().start_trial(trial, trainable_cls, reuse, checkpoint)

    async def fetch_results(self, trial, limits):
        self._check("fetch", trial)
        await self._latency()
        return await super().fetch_results(trial, limits)

    async def save_to_memory(self, trial):
        self._check("save_to_memory", trial)
        await self._latency()
        return await super().save_to_memory(trial)

    async def stop_trial(self, trial, in_flight=False, failed=False):
        self._check("stop", trial)
        await self._latency()  # the stop arrives late, as Ray's may
        await super().stop_trial(trial, in_flight, failed)
        self.stopped_launches.add(launch_key(trial))


class PauseAt(FIFOScheduler):
    """Pauses every trial once at iteration ``at`` (FIFO then runs the paused ones again)."""

    def __init__(self, at: int, horizon: int | None = 1) -> None:
        self.at = at
        self.horizon = horizon
        self.paused: list[str] = []

    def on_trial_result(self, trial_runner, trial, result):
        if result["training_iteration"] == self.at and trial.trial_id not in self.paused:
            self.paused.append(trial.trial_id)
            return self.PAUSE
        return self.CONTINUE

    def results_before_decision(self, trial_runner, trial):
        return self.horizon


def _run(tmp_path, scheduler, executor, num_samples=1, stop=6, inc=None, **kwargs):
    log = str(tmp_path / "steps.jsonl")
    config = {"inc": inc if inc is not None else tune.grid_search([1, 10, 100]), "log": log}
    analysis = tune.run(Counter, config=config, num_samples=num_samples,
                        stop={"training_iteration": stop}, scheduler=scheduler,
                        trial_executor=executor, local_dir=str(tmp_path), verbose=0, **kwargs)
    return analysis, log


def _results(trial) -> list[dict]:
    with open(os.path.join(trial.logdir, "result.json")) as f:
        return [json.loads(line) for line in f]


def _steps(log: str) -> list[dict]:
    with open(log) as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("slots", [1, 2])
def test_paused_trials_continue_from_their_saved_state(tmp_path, slots):
    executor = LatencyExecutor(slots=slots)
    scheduler = PauseAt(3)
    analysis, log = _run(tmp_path, scheduler, executor)
    assert sorted(scheduler.paused) == sorted(t.trial_id for t in analysis.trials)
    for trial in analysis.trials:
        results = _results(trial)
        assert [r["training_iteration"] for r in results] == [1, 2, 3, 4, 5, 6]
        inc = trial.config["inc"]
        assert [r["value"] for r in results] == [inc * i for i in range(1, 7)]
        assert trial.status is TrialStatus.TERMINATED
    # Each trial executed each step exactly once: no restart from scratch, no extra step.
    steps = _steps(log)
    assert len(steps) == 18
    assert executor.violations == []
    assert executor.reserved == set()


def test_pause_saves_before_release_and_each_run_is_its_own_launch(tmp_path):
    executor = LatencyExecutor(slots=1)
    analysis, _ = _run(tmp_path, PauseAt(2), executor)
    for trial in analysis.trials:
        keys = [key for name, key in executor.calls if key[0] == trial.trial_id]
        launches = sorted({key[1] for key in keys})
        assert len(launches) == 2  # the first run and the run after the pause
        first = [name for name, key in executor.calls if key == (trial.trial_id, launches[0])]
        # The state is kept before the release; nothing reaches the first run after it.
        assert first[-2:] == ["save_to_memory", "stop"]
        assert first.count("stop") == 1
    assert executor.violations == []


def test_restored_object_checkpoint_is_the_paused_state(tmp_path):
    executor = LatencyExecutor(slots=1)
    _run(tmp_path, PauseAt(4), executor, stop=5, inc=tune.grid_search([7]))
    restored = [c for c in executor.restored_from if c is not None]
    assert len(restored) == 1 and restored[0][0] == "object"


def test_pause_decided_mid_batch_lands_after_the_batch(tmp_path, caplog):
    # The scheduler allows unlimited batches but pauses at iteration 3: the pause takes
    # effect after the batch's last result, whose state is what gets saved.
    executor = LatencyExecutor(slots=1)
    scheduler = PauseAt(3, horizon=None)
    with caplog.at_level(logging.WARNING, logger="tune_async.controller"):
        analysis, log = _run(tmp_path, scheduler, executor, stop=8, inc=tune.grid_search([1]))
    (trial,) = analysis.trials
    results = _results(trial)
    assert [r["training_iteration"] for r in results] == list(range(1, 9))
    assert [r["value"] for r in results] == list(range(1, 9))
    assert [s["it"] for s in _steps(log)] == list(range(1, 9))


class SaveThenExploit(FIFOScheduler):
    """Trial "a" keeps its state at iteration 2; trial "b" exploits it at iteration 3."""

    def __init__(self) -> None:
        self.ids: dict[str, str] = {}

    def on_trial_add(self, trial_runner, trial):
        self.ids["a" if trial.config["inc"] == 100 else "b"] = trial.trial_id

    def on_trial_result(self, trial_runner, trial, result):
        it = result["training_iteration"]
        if trial.trial_id == self.ids["a"] and it == 2:
            return Decision(save=True)
        if trial.trial_id == self.ids["b"] and it == 3 and trial.config["inc"] == 1:
            donor = self.ids["a"]
            return Decision(exploit=Exploit(donor=donor, config=dict(trial.config, inc=5),
                                            experiment_tag="exploited"))
        return self.CONTINUE

    def results_before_decision(self, trial_runner, trial):
        return 1


@pytest.mark.parametrize("slots", [1, 2])
def test_exploit_continues_from_the_donor_state_with_the_new_config(tmp_path, slots):
    executor = LatencyExecutor(slots=slots)
    scheduler = SaveThenExploit()
    analysis, log = _run(tmp_path, scheduler, executor, stop=5,
                         inc=tune.grid_search([100, 1]))
    a = next(t for t in analysis.trials if t.trial_id == scheduler.ids["a"])
    b = next(t for t in analysis.trials if t.trial_id == scheduler.ids["b"])
    results = _results(b)
    # b ran 1, 2, 3 on its own, then continued from a's state at iteration 2 (value 200)
    # with inc=5: iterations 3, 4, 5 again, counted from the donor's.
    assert [r["training_iteration"] for r in results] == [1, 2, 3, 3, 4, 5]
    assert [r["value"] for r in results] == [1, 2, 3, 205, 210, 215]
    assert b.config["inc"] == 5 and b.experiment_tag == "exploited"
    assert a.status is b.status is TrialStatus.TERMINATED
    assert [r["value"] for r in _results(a)] == [100, 200, 300, 400, 500]
    assert executor.violations == []


class PauseThenStopOthers(FIFOScheduler):
    """Pauses every trial at iteration 1; the last to arrive ends the paused others."""

    def __init__(self) -> None:
        self.removed: list[str] = []

    def on_trial_result(self, trial_runner, trial, result):
        if result["training_iteration"] != 1:
            return self.CONTINUE
        paused = [t.trial_id for t in trial_runner.get_trials()
                  if t.status is TrialStatus.PAUSED]
        if len(paused) == 2:
            return Decision(stop_trials=tuple(paused))
        return self.PAUSE

    def on_trial_remove(self, trial_runner, trial):
        self.removed.append(trial.trial_id)


def test_decision_stops_waiting_trials(tmp_path):
    executor = LatencyExecutor(slots=1)
    scheduler = PauseThenStopOthers()
    analysis, _ = _run(tmp_path, scheduler, executor, stop=3)
    finished = {t.trial_id: len(_results(t)) for t in analysis.trials}
    assert sorted(finished.values()) == [1, 1, 3]
    assert len(scheduler.removed) == 2
    assert all(t.status is TrialStatus.TERMINATED for t in analysis.trials)
    assert executor.violations == []


class NotBefore(FIFOScheduler):
    """Runs nothing for its first moments (a schedule that waits for something)."""

    def __init__(self, wait_s: float) -> None:
        self.until = None
        self.wait_s = wait_s
        self.refused = 0

    def choose_trial_to_run(self, trial_runner):
        import time

        if self.until is None:
            self.until = time.monotonic() + self.wait_s
        if time.monotonic() < self.until:
            self.refused += 1
            return None
        return super().choose_trial_to_run(trial_runner)


def test_a_scheduler_waiting_deliberately_is_not_insufficient_resources(tmp_path):
    scheduler = NotBefore(0.6)
    analysis, _ = _run(tmp_path, scheduler, LatencyExecutor(slots=2), stop=2,
                       inc=tune.grid_search([1, 2, 3]))
    assert scheduler.refused >= 1  # asked again after it said "not now"
    assert all(t.status is TrialStatus.TERMINATED for t in analysis.trials)


def test_a_scheduler_that_never_chooses_fails_clearly(tmp_path, monkeypatch):
    import tune_async.controller as controller

    monkeypatch.setattr(controller, "SCHEDULER_IDLE_LIMIT_S", 0.7)
    with pytest.raises(TuneError, match="NotBefore chose no trial to run"):
        _run(tmp_path, NotBefore(3600), LatencyExecutor(slots=2), stop=2)


class CountingScheduler(FIFOScheduler):
    """Keeps a count of results as its state (to check it survives a resume)."""

    def __init__(self) -> None:
        self.seen = 0
        self.restored_from = None

    def on_trial_result(self, trial_runner, trial, result):
        self.seen += 1
        return self.CONTINUE

    def get_state(self):
        return {"seen": self.seen}

    def set_state(self, state, trial_runner):
        self.restored_from = dict(state)
        self.seen = state["seen"]


def test_scheduler_state_is_saved_and_restored_on_resume(tmp_path):
    first = CountingScheduler()
    analysis, _ = _run(tmp_path, first, LatencyExecutor(slots=2), stop=3,
                       name="exp", inc=tune.grid_search([1, 2]))
    state = load_state(newest_state_file(str(tmp_path / "exp")))
    assert state["scheduler_state"] == {"seen": 4}  # a stopping result is not shown to it
    second = CountingScheduler()
    _run(tmp_path, second, LatencyExecutor(slots=2), stop=3, name="exp", resume=True,
         inc=tune.grid_search([1, 2]))
    assert second.restored_from == {"seen": 4}


class AddsEveryTrial(FIFOScheduler):
    def __init__(self) -> None:
        self.added: list[str] = []

    def on_trial_add(self, trial_runner, trial):
        self.added.append(trial.trial_id)


def test_a_scheduler_without_state_is_told_of_every_trial_on_resume(tmp_path):
    analysis, _ = _run(tmp_path, FIFOScheduler(), LatencyExecutor(slots=2), stop=2,
                       name="exp", inc=tune.grid_search([1, 2]))
    again = AddsEveryTrial()
    _run(tmp_path, again, LatencyExecutor(slots=2), stop=2, name="exp", resume=True,
         inc=tune.grid_search([1, 2]))
    assert sorted(again.added) == sorted(t.trial_id for t in analysis.trials)


def test_bad_decision_value_is_a_clear_error(tmp_path):
    class Bad(FIFOScheduler):
        def on_trial_result(self, trial_runner, trial, result):
            return "SOMETIMES"

    with pytest.raises(TuneError, match="Bad.on_trial_result returned 'SOMETIMES'"):
        _run(tmp_path, Bad(), LatencyExecutor(slots=1), stop=2, inc=tune.grid_search([1]))


@pytest.mark.ray
@pytest.mark.parametrize("reuse", [False, True])
def test_pause_and_exploit_on_ray(tmp_path, reuse):
    # One trial at a time (2 of 2 CPUs): the donor's save comes before the exploit.
    scheduler = SaveThenExploit()
    analysis, log = _run(tmp_path, scheduler, None, stop=5, reuse_actors=reuse,
                         resources_per_trial={"cpu": 2}, inc=tune.grid_search([100, 1]))
    b = next(t for t in analysis.trials if t.trial_id == scheduler.ids["b"])
    assert [r["value"] for r in _results(b)] == [1, 2, 3, 205, 210, 215]


class CleansUp(Counter):
    def cleanup(self):
        with open(self.config["log"] + ".cleanup", "a") as f:
            f.write(f"{self.trial_id}\n")


@pytest.mark.ray
def test_the_last_reused_instance_is_cleaned_up_at_the_end(tmp_path):
    log = str(tmp_path / "steps.jsonl")
    tune.run(CleansUp, config={"inc": tune.grid_search([1, 2, 3]), "log": log},
             stop={"training_iteration": 2}, reuse_actors=True, resources_per_trial={"cpu": 2},
             local_dir=str(tmp_path), verbose=0)
    with open(log + ".cleanup") as f:
        cleaned = f.read().split()
    assert len(cleaned) >= 1  # the instance kept warm for reuse got its cleanup() at the end


class FailsItsFirstCleanup(Counter):
    def cleanup(self):
        with open(self.config["log"] + ".pids", "a") as f:
            f.write(f"{self.trial_id} {os.getpid()}\n")
        if self.config["inc"] == 1:
            raise RuntimeError("cleanup broke")


@pytest.mark.ray
def test_a_failed_cleanup_sends_the_next_trial_to_a_fresh_worker(tmp_path, caplog):
    """The next trial's setup goes out right behind the previous trial's stop (no wait for
    its reply); when that stop (cleanup) failed, the worker refuses the setup and the
    trial runs on a fresh worker: nothing counted as its failure, the cleanup's error
    logged."""
    log = str(tmp_path / "steps.jsonl")
    caplog.set_level(logging.WARNING)
    analysis = tune.run(FailsItsFirstCleanup, config={"inc": tune.grid_search([1, 2, 3]),
                                                      "log": log},
                        stop={"training_iteration": 2}, resources_per_trial={"cpu": 2},
                        local_dir=str(tmp_path), verbose=0)
    assert [(t.status, t.num_failures, t.last_result["value"]) for t in analysis.trials] == [
        ("TERMINATED", 0, 2), ("TERMINATED", 0, 4), ("TERMINATED", 0, 6)]
    with open(log + ".pids") as f:
        pids = dict(line.split() for line in f)
    first, second, third = (t.trial_id for t in analysis.trials)
    assert pids[second] != pids[first]  # the broken worker was replaced
    assert pids[third] == pids[second]  # a clean one is reused
    assert any("cleanup failed" in r.getMessage() and "cleanup broke" in r.getMessage()
               for r in caplog.records)


class MarksItsCleanup(Counter):
    def cleanup(self):
        with open(self.config["log"] + ".cleaned", "a") as f:
            f.write(f"{self.trial_id}\n")


@pytest.mark.ray
def test_an_evicted_idle_workers_last_cleanup_runs_before_it_is_killed(tmp_path):
    """A finished trial's stop waits a moment for the worker's next trial, to travel with
    its setup; when a trial of another size needs the room instead, the idle worker is
    evicted only after that stop (the trial's cleanup) has run."""
    log = str(tmp_path / "steps.jsonl")
    small = tune.Experiment("small", MarksItsCleanup, config={"inc": 1, "log": log},
                            stop={"training_iteration": 2}, resources_per_trial={"cpu": 1},
                            local_dir=str(tmp_path))
    large = tune.Experiment("large", MarksItsCleanup, config={"inc": 2, "log": log},
                            stop={"training_iteration": 2}, resources_per_trial={"cpu": 2},
                            local_dir=str(tmp_path))
    trials = tune.run_experiments([small, large], verbose=0)
    assert [(t.status, t.last_result["value"]) for t in trials] == [
        ("TERMINATED", 2), ("TERMINATED", 4)]
    with open(log + ".cleaned") as f:
        assert sorted(f.read().split()) == sorted(t.trial_id for t in trials)
