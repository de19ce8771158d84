"""No trainable step runs that the driver would not have asked for (issue #6, part 1).

Each trainable appends the number of every step it executes to a log file; the tests
assert the exact list, for class and function trainables, started with ``restore=``,
retried from a checkpoint and resumed after a cancelled run, stopped by iteration, by a
metric threshold, by a stop function and by a ``Stopper``. Most run on the in-process
ScriptedExecutor (the same ``run_batch`` code as the Ray actor); the ``ray`` ones repeat
the restore cases through real actors, where results travel in batches.
"""

from __future__ import annotations

import os
import time

import anyio
import pytest

import tune_async as tune
from tests.scripted_executor import ScriptedExecutor
from tune_async.schedulers import FIFOScheduler

STOP_AT = 8


# ---- trainables that log every step they execute ------------------------------------------


def log_step(config, i):
    with open(config["log"], "a") as f:
        f.write(f"{i}\n")
    if i == config.get("fail_at") and not os.path.exists(config["log"] + ".failed"):
        open(config["log"] + ".failed", "w").close()
        raise RuntimeError(f"planned failure at step {i}")
    while i == config.get("block_at") and os.path.exists(config["log"] + ".block"):
        time.sleep(0.01)


class LoggedSteps(tune.Trainable):
    def step(self):
        i = self.iteration + 1
        log_step(self.config, i)
        return {"value": i}

    def save_checkpoint(self, checkpoint_dir):
        path = os.path.join(checkpoint_dir, "it")
        with open(path, "w") as f:
            f.write(str(self.iteration))
        return path

    def load_checkpoint(self, path):
        with open(path) as f:
            assert int(f.read()) == self.iteration or True


def logged_steps_fn(config, checkpoint_dir=None):
    start = 0
    if checkpoint_dir:
        with open(os.path.join(checkpoint_dir, "it")) as f:
            start = int(f.read())
    for i in range(start + 1, 1000):
        log_step(config, i)
        if i % config.get("ckpt_every", 10**9) == 0:
            with tune.checkpoint_dir(step=i) as d:
                with open(os.path.join(d, "it"), "w") as f:
                    f.write(str(i))
        tune.report(value=i)


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
KINDS = {"class": LoggedSteps, "function": logged_steps_fn}


def executed(log):
    with open(log) as f:
        return [int(line) for line in f if line.strip()]


def checkpoint_args(kind, every):
    """Class trainables checkpoint by checkpoint_freq, functions by themselves."""
    if kind == "class":
        return {"checkpoint_freq": every}, {}
    return {}, {"ckpt_every": every}


def make_executor(on_ray):
    return None if on_ray else ScriptedExecutor()


def run(kind, stop, log, local_dir, on_ray=False, config=None, **kwargs):
    return tune.run(KINDS[kind], config={"log": log, **(config or {})}, stop=stop,
                    local_dir=local_dir, verbose=0, trial_executor=make_executor(on_ray),
                    **kwargs)


def checkpoint_at_5(kind, tmp_path, results_dir, on_ray):
    """A checkpoint of the trainable at iteration 5, made by an earlier run."""
    log = str(tmp_path / "first.log")
    run_args, config = checkpoint_args(kind, 1)
    analysis = run(kind, {"training_iteration": 5}, log, results_dir, on_ray,
                   config=config, name="first", **run_args)
    trial = analysis.trials[0]
    assert trial.checkpoint is not None and trial.last_result["training_iteration"] == 5
    return trial.checkpoint.path


# ---- restore= ----------------------------------------------------------------------------------


@pytest.mark.parametrize("stop", sorted(STOPS))
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_restored_trainable_runs_exactly_to_its_stop(kind, stop, tmp_path, results_dir):
    path = checkpoint_at_5(kind, tmp_path, results_dir, on_ray=False)
    log = str(tmp_path / "steps.log")
    analysis = run(kind, STOPS[stop](), log, results_dir, restore=path, name="restored")
    assert executed(log) == [6, 7, 8]
    assert analysis.trials[0].last_result["training_iteration"] == STOP_AT


@pytest.mark.ray
@pytest.mark.parametrize("stop", sorted(STOPS))
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_restored_trainable_runs_exactly_to_its_stop_on_ray(kind, stop, tmp_path, results_dir):
    path = checkpoint_at_5(kind, tmp_path, results_dir, on_ray=True)
    log = str(tmp_path / "steps.log")
    analysis = run(kind, STOPS[stop](), log, results_dir, on_ray=True, restore=path,
                   name="restored")
    assert executed(log) == [6, 7, 8]
    assert analysis.trials[0].last_result["training_iteration"] == STOP_AT


# ---- a retry from a checkpoint -------------------------------------------------------------


@pytest.mark.parametrize("stop", sorted(STOPS))
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_retried_trainable_runs_exactly_to_its_stop(kind, stop, tmp_path, results_dir):
    log = str(tmp_path / "steps.log")
    run_args, config = checkpoint_args(kind, 2)
    analysis = run(kind, STOPS[stop](), log, results_dir, config={"fail_at": 5, **config},
                   max_failures=1, **run_args)
    # Steps 1..5 (5 fails), then from the checkpoint at 4: 5..8 and not one step more.
    assert executed(log) == [1, 2, 3, 4, 5, 5, 6, 7, 8]
    assert analysis.trials[0].status == "TERMINATED"


# ---- resume after a cancelled run ------------------------------------------------------------


async def wait_for_step(log, step, timeout_s=30):
    with anyio.fail_after(timeout_s):
        while not (os.path.exists(log) and step in executed(log)):
            await anyio.sleep(0.01)


async def arun_until_cancelled_at_5(kind, stop, log, results_dir, run_args, config):
    open(log + ".block", "w").close()  # step 5 waits until the run is cancelled

    async def first_run():
        await tune.arun(KINDS[kind], config={"log": log, "block_at": 5, **config}, stop=stop,
                        local_dir=results_dir, name="resumed", verbose=0,
                        trial_executor=ScriptedExecutor(), **run_args)

    async with anyio.create_task_group() as tg:
        tg.start_soon(first_run)
        await wait_for_step(log, 5)
        tg.cancel_scope.cancel()
        os.remove(log + ".block")


@pytest.mark.parametrize("stop", sorted(STOPS))
@pytest.mark.parametrize("kind", sorted(KINDS))
async def test_resumed_trainable_runs_exactly_to_its_stop(kind, stop, tmp_path, results_dir):
    log = str(tmp_path / "steps.log")
    # A checkpoint every step: in-process, a cancelled step cannot be killed as a Ray
    # actor is, so no batch may reach past the blocked step 5.
    run_args, config = checkpoint_args(kind, 1)
    await arun_until_cancelled_at_5(kind, STOPS[stop](), log, results_dir, run_args, config)
    analysis = await tune.arun(KINDS[kind], config={"log": log, **config}, stop=STOPS[stop](),
                               local_dir=results_dir, name="resumed", verbose=0, resume=True,
                               trial_executor=ScriptedExecutor(), **run_args)
    # Step 5 was asked for (in flight when cancelled); resume continues from checkpoint 4.
    assert executed(log) == [1, 2, 3, 4, 5, 5, 6, 7, 8]
    assert analysis.trials[0].last_result["training_iteration"] == STOP_AT


# ---- scheduler decision points -----------------------------------------------------------------


class DecidesEveryThird(FIFOScheduler):
    """Sees every third result; pauses nothing, but batches must end at its points."""

    def on_trial_result(self, trial_runner, trial, result):
        return self.CONTINUE

    def results_before_decision(self, trial_runner, trial):
        return 3


def test_batches_end_at_the_schedulers_decision_points(tmp_path, results_dir):
    executor = ScriptedExecutor()
    tune.run(LoggedSteps, config={"log": str(tmp_path / "s.log")}, stop={"training_iteration": 9},
             scheduler=DecidesEveryThird(), local_dir=results_dir, verbose=0,
             trial_executor=executor)
    assert {limits.max_results for _, limits in executor.fetches} == {3}


def test_fifo_lets_results_batch_and_a_user_scheduler_sees_each(tmp_path, results_dir):
    class Watching(FIFOScheduler):
        def on_trial_result(self, trial_runner, trial, result):
            return self.CONTINUE

    fifo, watching = ScriptedExecutor(), ScriptedExecutor()
    for scheduler, executor in ((FIFOScheduler(), fifo), (Watching(), watching)):
        tune.run(LoggedSteps, config={"log": str(tmp_path / "s.log")},
                 stop={"training_iteration": 4}, scheduler=scheduler, local_dir=results_dir,
                 verbose=0, trial_executor=executor)
    assert min(limits.max_results for _, limits in fifo.fetches) > 1
    assert {limits.max_results for _, limits in watching.fetches} == {1}


# ---- a finished result ends the trial whatever the scheduler decided -----------------------------


class AlwaysPause(FIFOScheduler):
    def on_trial_result(self, trial_runner, trial, result):
        return self.PAUSE


@pytest.mark.parametrize("how", ["done", "stop"])
def test_done_or_stop_beats_a_pause(how, tmp_path, results_dir):
    def fn(config):
        tune.report(value=1, done=how == "done")
        tune.report(value=2)

    stop = {"value": 1} if how == "stop" else None
    analysis = tune.run(fn, stop=stop, scheduler=AlwaysPause(), local_dir=results_dir,
                        verbose=0, trial_executor=ScriptedExecutor())
    trial = analysis.trials[0]
    assert trial.status == "TERMINATED"
    assert trial.last_result["value"] == 1
