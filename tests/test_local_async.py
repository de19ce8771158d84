"""Async trainables under the in-process executor: tasks on the driver's own event loop.

The trainables of test_async_trainables.py (each logs every step it executes and marks
its ``finally``) run here with ``trial_executor="local"``: same exact steps, the same
cancellation on a stop, and their code runs on the loop of the test itself.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

import anyio
import pytest

import tune_async as tune
from tests.test_async_trainables import (
    KINDS,
    STOP_AT,
    STOPS,
    StopsAtThree,
    checkpoint_args,
    executed,
    wait_for,
)
from tune_async.schedulers import FIFOScheduler

ON_LOOP = sorted(set(KINDS) - {"report"})  # a plain tune.report is refused in-process


def run(kind, log, local_dir, config=None, **kwargs):
    return tune.run(KINDS[kind], config={"log": log, **(config or {})}, local_dir=local_dir,
                    verbose=0, trial_executor="local", **kwargs)


def other_tasks(before):
    return {task for task in asyncio.all_tasks() - before if task is not asyncio.current_task()}


# ---- where the code runs ------------------------------------------------------------------


async def test_async_trainables_run_on_the_drivers_loop(results_dir):
    seen = []  # ids: the trainable (and what it closes over) is pickled into the state

    async def fn(config):
        for i in range(3):
            seen.append((id(asyncio.get_running_loop()), threading.get_ident()))
            await tune.areport(value=i)

    class Steps(tune.Trainable):
        async def setup(self, config):
            seen.append((id(asyncio.get_running_loop()), threading.get_ident()))

        async def step(self):
            seen.append((id(asyncio.get_running_loop()), threading.get_ident()))
            return {"value": self.iteration}

    before = asyncio.all_tasks()
    for trainable in (fn, Steps):
        analysis = await tune.arun(trainable, num_samples=2, stop={"training_iteration": 3},
                                   trial_executor="local", local_dir=results_dir, verbose=0)
        assert [t.status for t in analysis.trials] == ["TERMINATED"] * 2
    assert len(seen) == 2 * 3 + 2 * (1 + 3)
    assert set(seen) == {(id(asyncio.get_running_loop()), threading.get_ident())}
    assert not other_tasks(before), "every trial task ended with the run"


async def test_200_concurrent_async_trials_share_the_loop(results_dir):
    """Each trial sleeps 5 x 0.1 s: one after another that is 100 s; together, well under."""
    running = 0
    most = 0

    async def sleeper(config):
        nonlocal running, most
        for i in range(5):
            running += 1
            most = max(most, running)
            try:
                await asyncio.sleep(0.1)
            finally:
                running -= 1
            await tune.areport(value=i)

    late = []

    async def heartbeat():
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.005)
            late.append(time.perf_counter() - before - 0.005)

    async with anyio.create_task_group() as tg:
        tg.start_soon(heartbeat)
        start = time.perf_counter()
        analysis = await tune.arun(sleeper, num_samples=200, verbose=0, local_dir=results_dir,
                                   trial_executor=tune.LocalExecutor(max_concurrent=200))
        elapsed = time.perf_counter() - start
        tg.cancel_scope.cancel()
    assert [t.last_result["training_iteration"] for t in analysis.trials] == [5] * 200
    assert most >= 100, f"only {most} trials awaited at once"
    assert elapsed < 20, f"200 concurrent trials took {elapsed:.1f} s"
    assert max(late) < 0.5, f"the loop stalled for {max(late):.2f} s"


def test_a_plain_report_in_an_async_trainable_is_refused_clearly(tmp_path, results_dir):
    log = str(tmp_path / "steps.log")
    analysis = run("report", log, results_dir, raise_on_failed_trial=False)
    trial = analysis.trials[0]
    assert trial.status == "ERROR"
    with open(trial.error_file) as f:
        assert "await tune.areport" in f.read()
    assert os.path.exists(log + ".finally")


# ---- exact steps, stops and failures -------------------------------------------------------


@pytest.mark.parametrize("stop", sorted(STOPS))
@pytest.mark.parametrize("kind", ON_LOOP)
def test_runs_exactly_to_its_stop(kind, stop, tmp_path, results_dir):
    log = str(tmp_path / "steps.log")
    analysis = run(kind, log, results_dir, stop=STOPS[stop]())
    trial = analysis.trials[0]
    assert trial.status == "TERMINATED"
    assert trial.last_result["training_iteration"] == STOP_AT
    steps = executed(log)
    assert [s for s in steps if s != "cancelled"] == list(range(1, STOP_AT + 1))
    assert os.path.exists(log + ".finally")
    if kind != "class":  # the function was cancelled where it waited, at its last report
        assert steps[-1] == "cancelled"


@pytest.mark.parametrize("kind", ON_LOOP)
def test_a_stop_decision_runs_finally_blocks(kind, tmp_path, results_dir):
    log = str(tmp_path / "steps.log")
    analysis = run(kind, log, results_dir, scheduler=StopsAtThree())
    assert analysis.trials[0].last_result["value"] == 3
    assert [s for s in executed(log) if s != "cancelled"] == [1, 2, 3]
    assert os.path.exists(log + ".finally")


async def test_stopping_a_trial_mid_await_cancels_it(tmp_path, results_dir):
    """A stop while the function awaits (a fetch in flight) reaches it as CancelledError."""
    log = str(tmp_path / "steps.log")
    async with tune.start(KINDS["areport"], config={"log": log, "hang_at": 2},
                          trial_executor="local", local_dir=results_dir, verbose=0) as exp:
        async for event in exp.events():
            if isinstance(event, tune.TrialResult):  # step 1 reported; step 2 hangs
                with anyio.fail_after(30):
                    while 2 not in executed(log):
                        await anyio.sleep(0.01)
                await exp.stop_trial(event.trial_id)
            if isinstance(event, tune.TrialCompleted):
                break
        analysis = await exp.wait()
    await wait_for(log + ".finally")
    assert executed(log) == [1, 2, "cancelled"]
    assert analysis.trials[0].status == "TERMINATED"


def test_a_failure_fails_only_that_trial(results_dir):
    async def maybe_fails(config):
        for i in range(3):
            await asyncio.sleep(0)
            if config["x"] == 1 and i == 1:
                raise ValueError("planned")
            await tune.areport(value=i)

    analysis = tune.run(maybe_fails, config={"x": tune.grid_search([0, 1, 2])},
                        trial_executor="local", local_dir=results_dir, verbose=0,
                        raise_on_failed_trial=False)
    by_x = {t.config["x"]: t for t in analysis.trials}
    assert by_x[1].status == "ERROR"
    with open(by_x[1].error_file) as f:
        assert "planned" in f.read()
    for x in (0, 2):
        assert by_x[x].status == "TERMINATED"
        assert by_x[x].last_result["training_iteration"] == 3


# ---- a cancelled arun ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ON_LOOP)
async def test_a_cancelled_arun_leaves_no_task_behind(kind, tmp_path, results_dir):
    logs = [str(tmp_path / f"steps{i}.log") for i in range(3)]
    before = asyncio.all_tasks()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: tune.arun(
            KINDS[kind], config={"log": tune.grid_search(logs), "hang_at": 3},
            trial_executor=tune.LocalExecutor(max_concurrent=3), local_dir=results_dir,
            verbose=0))
        with anyio.fail_after(30):
            while not all(os.path.exists(log) and 3 in executed(log) for log in logs):
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert not other_tasks(before), "arun left tasks on the loop"
    for log in logs:
        assert os.path.exists(log + ".finally")
        assert executed(log) == [1, 2, 3, "cancelled"]


# ---- checkpoints -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ON_LOOP)
def test_restore_runs_exactly_the_remaining_steps(kind, tmp_path, results_dir):
    run_args, config = checkpoint_args(kind, 1)
    first = run(kind, str(tmp_path / "first.log"), results_dir, config=config,
                stop={"training_iteration": 5}, name="first", **run_args)
    trial = first.trials[0]
    assert trial.checkpoint is not None and trial.last_result["training_iteration"] == 5
    log = str(tmp_path / "steps.log")
    analysis = run(kind, log, results_dir, stop={"value": STOP_AT},
                   restore=trial.checkpoint.path, name="restored")
    assert [s for s in executed(log) if s != "cancelled"] == [6, 7, 8]
    assert analysis.trials[0].last_result["training_iteration"] == STOP_AT


class PausesOnceAtThree(FIFOScheduler):
    def __init__(self):
        self.paused = set()

    def on_trial_result(self, trial_runner, trial, result):
        if result["training_iteration"] == 3 and trial.trial_id not in self.paused:
            self.paused.add(trial.trial_id)
            return self.PAUSE
        return self.CONTINUE


@pytest.mark.parametrize("kind", ON_LOOP)
def test_pause_saves_and_resumes_exactly(kind, tmp_path, results_dir):
    run_args, config = checkpoint_args(kind, 1)
    log = str(tmp_path / "steps.log")
    analysis = run(kind, log, results_dir, config=config, scheduler=PausesOnceAtThree(),
                   stop={"training_iteration": 6}, **run_args)
    trial = analysis.trials[0]
    assert trial.status == "TERMINATED"
    assert trial.last_result["training_iteration"] == 6
    assert [s for s in executed(log) if s != "cancelled"] == [1, 2, 3, 4, 5, 6]


def test_one_executor_serves_runs_on_different_loops(tmp_path, results_dir):
    """tune.run makes a loop per call: each run lends its own loop to its trials."""
    executor = tune.LocalExecutor()
    for name in ("one", "two"):
        log = str(tmp_path / f"{name}.log")
        analysis = tune.run(KINDS["areport"], config={"log": log}, name=name, verbose=0,
                            stop={"training_iteration": 3}, trial_executor=executor,
                            local_dir=results_dir)
        assert analysis.trials[0].last_result["training_iteration"] == 3
        assert [s for s in executed(log) if s != "cancelled"] == [1, 2, 3]


async def test_a_trial_kept_warm_for_reuse_ends_its_function_at_once(tmp_path, results_dir):
    """reuse_actors keeps the trainable, not the finished trial's task (its finally runs)."""
    done_log, hanging_log = str(tmp_path / "done.log"), str(tmp_path / "hanging.log")
    config = {"log": tune.grid_search([done_log, hanging_log]),
              "hang_at": tune.sample_from(lambda spec: 2 if "hanging" in spec.config.log
                                          else None)}
    async with tune.start(KINDS["areport"], config=config, stop={"training_iteration": 3},
                          reuse_actors=True, trial_executor=tune.LocalExecutor(max_concurrent=2),
                          local_dir=results_dir, verbose=0) as exp:
        await wait_for(done_log + ".finally")  # while the other trial still runs
        assert not os.path.exists(hanging_log + ".finally")
        assert executed(done_log) == [1, 2, 3, "cancelled"]
        analysis = await exp.stop()
    assert {t.status for t in analysis.trials} == {"TERMINATED"}
    assert os.path.exists(hanging_log + ".finally")


def test_a_trainables_own_cancelled_error_fails_only_it(results_dir):
    """Not a stop: a CancelledError the step raises itself is that trial's failure."""

    class GivesUp(tune.Trainable):
        async def step(self):
            await asyncio.sleep(0)
            if self.config["x"] == 1 and self.iteration == 1:
                raise asyncio.CancelledError()
            return {"value": self.iteration}

    analysis = tune.run(GivesUp, config={"x": tune.grid_search([0, 1])}, verbose=0,
                        stop={"training_iteration": 3}, trial_executor="local",
                        local_dir=results_dir, raise_on_failed_trial=False)
    by_x = {t.config["x"]: t for t in analysis.trials}
    assert by_x[1].status == "ERROR"
    assert by_x[0].status == "TERMINATED"
    assert by_x[0].last_result["training_iteration"] == 3
