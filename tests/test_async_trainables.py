"""Async trainables (issue 11): ``async def`` functions, async generators, ``async def step``.

Each trainable appends every step it executes to a log file (as in test_exact_steps.py)
and writes a marker file in its ``finally`` block (``except CancelledError`` logs
``cancelled``). The tests check results, the exact steps executed, checkpoint/restore
and that a stop reaches the trainable as a cancellation, on the in-process
ScriptedExecutor and (``ray``) through real Ray actors.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

import anyio
import pytest

import tune_async as tune
from tests.scripted_executor import ScriptedExecutor
from tune_async.execution.base import launch_key
from tune_async.schedulers import FIFOScheduler
from tune_async.trainable import AsyncFunctionTrainable, wrap_function

STOP_AT = 8


# ---- trainables that log every step ------------------------------------------------------


def log_line(config, text):
    with open(config["log"], "a") as f:
        f.write(f"{text}\n")


async def log_step(config, i):
    await asyncio.sleep(0)
    log_line(config, i)
    if i == config.get("hang_at"):
        await asyncio.Event().wait()  # only a cancellation ends this


def start_of(checkpoint_dir):
    if not checkpoint_dir:
        return 0
    with open(os.path.join(checkpoint_dir, "it")) as f:
        return int(f.read())


def write_checkpoint(i):
    with tune.checkpoint_dir(step=i) as d:
        with open(os.path.join(d, "it"), "w") as f:
            f.write(str(i))


async def areport_fn(config, checkpoint_dir=None):
    try:
        for i in range(start_of(checkpoint_dir) + 1, 1000):
            await log_step(config, i)
            if i % config.get("ckpt_every", 10**9) == 0:
                write_checkpoint(i)
            await tune.areport(value=i)
    except asyncio.CancelledError:
        log_line(config, "cancelled")
        raise
    finally:
        open(config["log"] + ".finally", "w").close()


async def report_fn(config, checkpoint_dir=None):
    """An async function reporting with the plain (blocking) tune.report."""
    try:
        for i in range(start_of(checkpoint_dir) + 1, 1000):
            await log_step(config, i)
            if i % config.get("ckpt_every", 10**9) == 0:
                write_checkpoint(i)
            tune.report(value=i)
    except asyncio.CancelledError:
        log_line(config, "cancelled")
        raise
    finally:
        open(config["log"] + ".finally", "w").close()


async def generator_fn(config, checkpoint_dir=None):
    try:
        for i in range(start_of(checkpoint_dir) + 1, 1000):
            await log_step(config, i)
            if i % config.get("ckpt_every", 10**9) == 0:
                write_checkpoint(i)
            yield {"value": i}
    except asyncio.CancelledError:
        log_line(config, "cancelled")
        raise
    finally:
        open(config["log"] + ".finally", "w").close()


class AsyncSteps(tune.Trainable):
    async def setup(self, config):
        await asyncio.sleep(0)
        self.log = config["log"]

    async def step(self):
        i = self.iteration + 1
        try:
            await log_step(self.config, i)
        except asyncio.CancelledError:
            log_line(self.config, "cancelled")
            raise
        finally:
            if i == self.config.get("hang_at"):
                open(self.log + ".finally", "w").close()
        return {"value": i}

    async def save_checkpoint(self, checkpoint_dir):
        await asyncio.sleep(0)
        path = os.path.join(checkpoint_dir, "it")
        with open(path, "w") as f:
            f.write(str(self.iteration))
        return path

    async def load_checkpoint(self, path):
        await asyncio.sleep(0)
        with open(path) as f:
            self.loaded = int(f.read())

    async def cleanup(self):
        await asyncio.sleep(0)
        open(self.log + ".finally", "w").close()


KINDS = {"areport": areport_fn, "report": report_fn, "generator": generator_fn,
         "class": AsyncSteps}
FUNCTIONS = ["areport", "report", "generator"]


class ValueStopper(tune.Stopper):
    def __call__(self, trial_id, result):
        return result["value"] >= STOP_AT

    def stop_all(self):
        return False


def value_reached(trial_id, result):
    return result["value"] >= STOP_AT


STOPS = {
    "iteration": lambda: {"training_iteration": STOP_AT},
    "metric": lambda: {"value": STOP_AT},
    "function": lambda: value_reached,
    "stopper": lambda: ValueStopper(),
}


class StopsAtThree(FIFOScheduler):
    def on_trial_result(self, trial_runner, trial, result):
        return self.STOP if result["value"] >= 3 else self.CONTINUE


def executed(log):
    with open(log) as f:
        return [int(line) if line.strip().isdigit() else line.strip() for line in f
                if line.strip()]


def run(kind, log, local_dir, on_ray=False, config=None, **kwargs):
    return tune.run(KINDS[kind], config={"log": log, **(config or {})}, local_dir=local_dir,
                    verbose=0, trial_executor=None if on_ray else ScriptedExecutor(), **kwargs)


def checkpoint_args(kind, every):
    """Class trainables checkpoint by checkpoint_freq, functions by themselves."""
    if kind == "class":
        return {"checkpoint_freq": every}, {}
    return {}, {"ckpt_every": every}


# ---- what they are ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", FUNCTIONS)
def test_async_functions_are_wrapped_as_async_trainables(kind):
    assert issubclass(wrap_function(KINDS[kind]), AsyncFunctionTrainable)
    assert tune.areport is tune.trainable.areport


def test_with_parameters_keeps_an_async_function_async(tmp_path, results_dir):
    async def fn(config, data=None):
        await tune.areport(value=len(data))

    wrapped = tune.with_parameters(fn, data=[1, 2, 3])
    assert issubclass(wrap_function(wrapped), AsyncFunctionTrainable)
    analysis = tune.run(wrapped, local_dir=results_dir, verbose=0,
                        trial_executor=ScriptedExecutor())
    assert analysis.trials[0].last_result["value"] == 3


# ---- results and exact steps ------------------------------------------------------------------


@pytest.mark.parametrize("stop", sorted(STOPS))
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_runs_exactly_to_its_stop(kind, stop, tmp_path, results_dir):
    log = str(tmp_path / "steps.log")
    analysis = run(kind, log, results_dir, stop=STOPS[stop]())
    trial = analysis.trials[0]
    assert trial.status == "TERMINATED"
    assert trial.last_result["value"] == STOP_AT
    assert trial.last_result["training_iteration"] == STOP_AT
    # No step past the stop; the function was cancelled at its last report.
    steps = executed(log)
    assert [s for s in steps if s != "cancelled"] == list(range(1, STOP_AT + 1))
    assert os.path.exists(log + ".finally")
    if kind != "class":
        assert steps[-1] == "cancelled"


@pytest.mark.parametrize("kind", FUNCTIONS)
def test_a_function_that_returns_ends_the_trial(kind, tmp_path, results_dir):
    async def short(config):
        await tune.areport(value=1)
        tune.report(value=2)
        return {"value": 3}

    async def short_gen(config):
        for i in (1, 2, 3):
            yield {"value": i}

    fn = short_gen if kind == "generator" else short
    analysis = tune.run(fn, local_dir=results_dir, verbose=0, trial_executor=ScriptedExecutor())
    trial = analysis.trials[0]
    assert trial.status == "TERMINATED"
    assert trial.last_result["value"] == 3


def test_an_async_function_error_fails_the_trial(results_dir):
    async def fails(config):
        await tune.areport(value=1)
        raise ValueError("planned")

    analysis = tune.run(fails, local_dir=results_dir, verbose=0, raise_on_failed_trial=False,
                        trial_executor=ScriptedExecutor())
    trial = analysis.trials[0]
    assert trial.status == "ERROR"
    assert "planned" in (trial.error_msg or open(trial.error_file).read())


# ---- a STOP decision is a cancellation ----------------------------------------------------


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_stop_decision_runs_finally_blocks(kind, tmp_path, results_dir):
    log = str(tmp_path / "steps.log")
    analysis = run(kind, log, results_dir, scheduler=StopsAtThree())
    assert analysis.trials[0].last_result["value"] == 3
    steps = executed(log)
    assert [s for s in steps if s != "cancelled"] == [1, 2, 3]
    assert os.path.exists(log + ".finally")
    if kind != "class":  # a class trainable is stopped between steps: cleanup() runs
        assert steps[-1] == "cancelled"


# ---- a cancelled arun ---------------------------------------------------------------------


class CancellingExecutor(ScriptedExecutor):
    """Stops an in-flight trial as the Ray executor should: cancel, then stop."""

    async def stop_trial(self, trial, in_flight=False, failed=False):
        trainable = self.instances.get(launch_key(trial))
        if in_flight and trainable is not None:
            trainable.cancel()  # what TrialActor.cancel does in an actor
        await super().stop_trial(trial, in_flight=in_flight, failed=failed)


async def wait_for(path, timeout_s=30):
    with anyio.fail_after(timeout_s):
        while not os.path.exists(path):
            await anyio.sleep(0.01)


@pytest.mark.parametrize("kind", sorted(KINDS))
async def test_a_cancelled_arun_cancels_the_trainable(kind, tmp_path, results_dir):
    log = str(tmp_path / "steps.log")
    executor = CancellingExecutor()

    async def first_run():
        await tune.arun(KINDS[kind], config={"log": log, "hang_at": 3}, local_dir=results_dir,
                        verbose=0, trial_executor=executor)

    async with anyio.create_task_group() as tg:
        tg.start_soon(first_run)
        with anyio.fail_after(30):
            while not (os.path.exists(log) and 3 in executed(log)):
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    await wait_for(log + ".finally")
    assert executed(log) == [1, 2, 3, "cancelled"]


# ---- checkpoints and restore ----------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_restore_runs_exactly_the_remaining_steps(kind, tmp_path, results_dir):
    run_args, config = checkpoint_args(kind, 1)
    first = run(kind, str(tmp_path / "first.log"), results_dir, config=config,
                stop={"training_iteration": 5}, name="first", **run_args)
    trial = first.trials[0]
    assert trial.checkpoint is not None and trial.last_result["training_iteration"] == 5
    log = str(tmp_path / "steps.log")
    analysis = run(kind, log, results_dir, stop={"value": STOP_AT}, restore=trial.checkpoint.path,
                   name="restored")
    assert [s for s in executed(log) if s != "cancelled"] == [6, 7, 8]
    assert analysis.trials[0].last_result["training_iteration"] == STOP_AT


@pytest.mark.parametrize("kind", ["areport", "class"])
def test_retry_from_a_checkpoint(kind, tmp_path, results_dir):
    """A failure at step 5 retries from the checkpoint at 4: steps 5..8, none more."""

    async def failing_fn(config, checkpoint_dir=None):
        for i in range(start_of(checkpoint_dir) + 1, 1000):
            await log_step(config, i)
            if i == 5 and not os.path.exists(config["log"] + ".failed"):
                open(config["log"] + ".failed", "w").close()
                raise RuntimeError("planned failure at step 5")
            if i % 2 == 0:
                write_checkpoint(i)
            await tune.areport(value=i)

    class FailingSteps(AsyncSteps):
        async def step(self):
            result = await super().step()
            if result["value"] == 5 and not os.path.exists(self.log + ".failed"):
                open(self.log + ".failed", "w").close()
                raise RuntimeError("planned failure at step 5")
            return result

    log = str(tmp_path / "steps.log")
    trainable = FailingSteps if kind == "class" else failing_fn
    run_args = {"checkpoint_freq": 2} if kind == "class" else {}
    analysis = tune.run(trainable, config={"log": log}, stop={"training_iteration": STOP_AT},
                        max_failures=1, local_dir=results_dir, verbose=0,
                        trial_executor=ScriptedExecutor(), **run_args)
    assert executed(log) == [1, 2, 3, 4, 5, 5, 6, 7, 8]
    assert analysis.trials[0].status == "TERMINATED"


# ---- on Ray -------------------------------------------------------------------------------------


@pytest.mark.ray
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_runs_exactly_to_its_stop_on_ray(kind, tmp_path, results_dir):
    log = str(tmp_path / "steps.log")
    analysis = run(kind, log, results_dir, on_ray=True, stop={"value": STOP_AT})
    trial = analysis.trials[0]
    assert trial.last_result["training_iteration"] == STOP_AT
    assert [s for s in executed(log) if s != "cancelled"] == list(range(1, STOP_AT + 1))
    assert os.path.exists(log + ".finally")


@pytest.mark.ray
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_stop_decision_runs_finally_blocks_on_ray(kind, tmp_path, results_dir):
    log = str(tmp_path / "steps.log")
    analysis = run(kind, log, results_dir, on_ray=True, scheduler=StopsAtThree())
    assert analysis.trials[0].last_result["value"] == 3
    steps = executed(log)
    assert [s for s in steps if s != "cancelled"] == [1, 2, 3]
    assert os.path.exists(log + ".finally")
    if kind != "class":
        assert steps[-1] == "cancelled"


@pytest.mark.ray
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_restore_runs_exactly_the_remaining_steps_on_ray(kind, tmp_path, results_dir):
    run_args, config = checkpoint_args(kind, 1)
    first = run(kind, str(tmp_path / "first.log"), results_dir, on_ray=True, config=config,
                stop={"training_iteration": 5}, name="first", **run_args)
    trial = first.trials[0]
    assert trial.checkpoint is not None
    log = str(tmp_path / "steps.log")
    analysis = run(kind, log, results_dir, on_ray=True, stop={"value": STOP_AT},
                   restore=trial.checkpoint.path, name="restored")
    assert [s for s in executed(log) if s != "cancelled"] == [6, 7, 8]
    assert analysis.trials[0].last_result["training_iteration"] == STOP_AT


# ---- pause and resume, actor reuse ----------------------------------------------------------


class PausesAtThreeOnce(FIFOScheduler):
    """Pauses each trial once at value 3: its state is saved, it is released, relaunched."""

    def __init__(self):
        super().__init__()
        self.paused = set()

    def on_trial_result(self, trial_runner, trial, result):
        if result["value"] == 3 and trial.trial_id not in self.paused:
            self.paused.add(trial.trial_id)
            return self.PAUSE
        return self.CONTINUE


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_pause_and_resume_continue_from_the_saved_state(kind, tmp_path, results_dir):
    run_args, config = checkpoint_args(kind, 1)
    log = str(tmp_path / "steps.log")
    analysis = run(kind, log, results_dir, config=config, stop={"value": 6},
                   scheduler=PausesAtThreeOnce(), **run_args)
    assert analysis.trials[0].last_result["training_iteration"] == 6
    assert [s for s in executed(log) if s != "cancelled"] == [1, 2, 3, 4, 5, 6]


@pytest.mark.ray
@pytest.mark.parametrize("kind", ["areport", "class"])
def test_reused_actors_run_async_trials_one_after_another_on_ray(kind, tmp_path, results_dir):
    logs = [str(tmp_path / f"{i}.log") for i in range(3)]
    analysis = tune.run(KINDS[kind], config={"log": tune.grid_search(logs)},
                        stop={"value": 3}, reuse_actors=True, local_dir=results_dir,
                        verbose=0, resources_per_trial={"cpu": 2})
    assert [t.last_result["value"] for t in analysis.trials] == [3, 3, 3]
    for log in logs:
        assert [s for s in executed(log) if s != "cancelled"] == [1, 2, 3]
    # Each trial's function is cancelled when its trial ends, also on a kept actor. (A
    # class trainable kept for reuse gets cleanup() only when the actor is discarded.)
    for log in logs if kind != "class" else logs[:-1]:
        assert os.path.exists(log + ".finally")


# ---- TrialActor.cancel in a Ray actor (what the Ray executor needs for a cancelled arun) ---


@pytest.mark.ray
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_trial_actor_cancel_reaches_a_running_trainable(kind, tmp_path, ray_session):
    ray = ray_session
    from tune_async.execution.actor import TrialActor
    from tune_async.execution.base import BatchLimits
    from tune_async.trainable.trainable import TrialInfo

    log = str(tmp_path / "steps.log")
    cls = KINDS[kind] if kind == "class" else wrap_function(KINDS[kind])
    # A second thread into the actor, beside the one running the batch.
    actor = ray.remote(concurrency_groups={"control": 1})(TrialActor).remote(list(sys.path))
    try:
        info = TrialInfo(trial_id="t", trial_name="t", logdir=str(tmp_path / "trial"))
        ray.get(actor.setup.remote([ray.put(cls)], {"log": log, "hang_at": 3}, info, False))
        first = ray.get(actor.train_batch.remote(BatchLimits(max_results=2), 0.05))
        assert [r["value"] for r in first] == [1, 2]
        in_flight = actor.train_batch.remote(BatchLimits(max_results=5), 0.05)
        deadline = 30
        while not (os.path.exists(log) and 3 in executed(log)) and deadline > 0:
            time.sleep(0.01)
            deadline -= 0.01
        ray.get(actor.cancel.options(concurrency_group="control").remote(), timeout=30)
        try:
            assert ray.get(in_flight, timeout=30) == []
        except ray.exceptions.RayTaskError:
            assert kind == "class"  # the cancelled step raised CancelledError
        ray.get(actor.stop.remote(False), timeout=30)
        assert executed(log) == [1, 2, 3, "cancelled"]
        assert os.path.exists(log + ".finally")
    finally:
        ray.kill(actor)


# ---- odds and ends ----------------------------------------------------------------------------


def test_with_parameters_keeps_an_async_setup_async(results_dir):
    class WithData(tune.Trainable):
        async def setup(self, config, data=None):
            await asyncio.sleep(0)
            self.data = data

        async def step(self):
            return {"value": len(self.data), "done": True}

    analysis = tune.run(tune.with_parameters(WithData, data=[1, 2]), local_dir=results_dir,
                        verbose=0, trial_executor=ScriptedExecutor())
    assert analysis.trials[0].last_result["value"] == 2


def test_session_calls_work_in_tasks_and_threads_the_function_starts(results_dir):
    async def fn(config):
        async def child():
            return tune.get_trial_id()

        loop = asyncio.get_running_loop()
        in_task = await asyncio.create_task(child())
        in_thread = await loop.run_in_executor(None, tune.get_trial_id)
        await tune.areport(same=in_task == in_thread == tune.get_trial_id() != None)  # noqa: E711

    analysis = tune.run(fn, local_dir=results_dir, verbose=0, trial_executor=ScriptedExecutor())
    assert analysis.trials[0].last_result["same"] is True


async def test_areport_outside_tune_warns_and_does_nothing():
    from tune_async.trainable import session

    session._warned.discard("areport")
    with pytest.warns(UserWarning, match="areport"):
        await tune.areport(value=1)


@pytest.mark.ray
@pytest.mark.parametrize("kind", ["areport", "class"])
async def test_a_cancelled_arun_cancels_the_trainable_on_ray(kind, tmp_path, results_dir):
    log = str(tmp_path / "steps.log")

    async def first_run():
        await tune.arun(KINDS[kind], config={"log": log, "hang_at": 3}, local_dir=results_dir,
                        verbose=0)

    async with anyio.create_task_group() as tg:
        tg.start_soon(first_run)
        with anyio.fail_after(60):
            while not (os.path.exists(log) and 3 in executed(log)):
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    await wait_for(log + ".finally")
    assert executed(log) == [1, 2, 3, "cancelled"]
