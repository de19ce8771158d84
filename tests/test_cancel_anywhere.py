"""Cancelling ``arun`` at any moment leaks nothing and loses nothing (issue #6, part 3).

After each cancellation Ray's own state shows no live trial actor and no placement group
left, and ``resume=True`` finishes every trial with each result recorded exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import subprocess
import sys
import time

import anyio
import pytest

import tune_async as tune
from tune_async.utils.placement_groups import PlacementGroupFactory

pytestmark = pytest.mark.ray

STEPS = 4
TRIALS = 2
# From right after the call to the end of the run: before Ray is asked for anything,
# while workers are acquired and placement groups created, mid-results, near the end.
DELAYS_S = [0, 0.0005, 0.002, 0.005, 0.01, 0.02, 0.04, 0.07, 0.1, 0.15, 0.2, 0.3, 0.4,
            0.55, 0.7, 0.9, 1.1, 1.4, 1.8, 2.4]


def stepper(config, checkpoint_dir=None):
    start = 0
    if checkpoint_dir:
        with open(os.path.join(checkpoint_dir, "step")) as f:
            start = int(f.read())
    for step in range(start + 1, STEPS + 1):
        time.sleep(0.05)
        if step % 2 == 0:
            with tune.checkpoint_dir(step=step) as d:
                with open(os.path.join(d, "step"), "w") as f:
                    f.write(str(step))
        tune.report(step=step)


def live_trial_actors():
    import ray

    return [a for a in ray._private.state.actors().values()
            if a["State"] != "DEAD" and a["ActorClassName"] == "TrialActor"]


def live_placement_groups():
    import ray

    return [pg for pg in ray.util.placement_group_table().values() if pg["state"] != "REMOVED"]


def cpus_in_use():
    import ray

    return ray.cluster_resources()["CPU"] - ray.available_resources().get("CPU", 0.0)


async def wait_until_released(timeout_s=10.0):
    """Ray marks a killed actor DEAD, and frees what it held, a moment after ray.kill."""
    with anyio.move_on_after(timeout_s):
        while live_trial_actors() or live_placement_groups() or cpus_in_use():
            await anyio.sleep(0.02)
    left = live_trial_actors(), live_placement_groups()
    if left == ([], []):
        assert cpus_in_use() == 0, "Ray still counts CPUs in use, with no actor or group left"
    return left


def run_args(results_dir, name, **extra):
    return dict(config={"x": tune.grid_search(list(range(TRIALS)))}, name=name,
                local_dir=results_dir, verbose=0,
                resources_per_trial=PlacementGroupFactory([{"CPU": 1}]), **extra)


def recorded_steps(trial):
    with open(os.path.join(trial.logdir, "result.json")) as f:
        return [json.loads(line)["step"] for line in f]


async def cancel_after(delay_s, trainable=stepper, **kwargs):
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: tune.arun(trainable, **kwargs))
        await anyio.sleep(delay_s)
        tg.cancel_scope.cancel()


async def test_cancel_at_any_moment_leaks_nothing_and_resume_finishes(results_dir):
    for i, delay in enumerate(DELAYS_S):
        name = f"cancelled_{i}"
        await cancel_after(delay, **run_args(results_dir, name))
        actors, groups = await wait_until_released()
        assert (actors, groups) == ([], []), f"left behind after a cancel at {delay} s"
        if not os.path.isdir(os.path.join(results_dir, name)):
            continue  # cancelled before anything was saved: nothing to resume
        analysis = await tune.arun(stepper, resume=True, **run_args(results_dir, name))
        assert [t.status for t in analysis.trials] == ["TERMINATED"] * TRIALS
        for trial in analysis.trials:
            assert recorded_steps(trial) == list(range(1, STEPS + 1)), f"cancel at {delay} s"
    assert await wait_until_released() == ([], [])


@contextlib.asynccontextmanager
async def one_cpu_held_outside_tune():
    """Half the CPUs are held by an actor of the test's own: a 2-CPU group cannot be
    placed until it is released (by leaving the block, or by calling what it yields)."""
    import ray

    @ray.remote(num_cpus=1)
    class Blocker:
        def ready(self):
            return True

    blocker = Blocker.remote()
    with anyio.fail_after(60):  # (a CPU left held by an earlier test would show here)
        await blocker.ready.remote()
    try:
        yield functools.partial(ray.kill, blocker)
    finally:
        ray.kill(blocker)


async def test_cancel_during_a_placement_group_wait_removes_the_group(results_dir):
    async with one_cpu_held_outside_tune():
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: tune.arun(
                stepper, name="pg_wait", local_dir=results_dir, verbose=0,
                resources_per_trial=PlacementGroupFactory([{"CPU": 2}])))
            with anyio.fail_after(30):
                while not live_placement_groups():
                    await anyio.sleep(0.02)
            await anyio.sleep(0.2)
            assert [pg["state"] for pg in live_placement_groups()] == ["PENDING"]
            tg.cancel_scope.cancel()
    assert await wait_until_released() == ([], [])


async def test_a_group_ray_cannot_place_is_reported_then_runs_once_placed(
        results_dir, monkeypatch, caplog):
    # Tune counted room for the group; Ray cannot place it (the test's actor holds a CPU
    # Tune does not know of): the wait is named in the log, and the trial runs after.
    monkeypatch.setenv("TUNE_WARN_INSUFFICENT_RESOURCE_THRESHOLD_S", "0.3")
    async with one_cpu_held_outside_tune() as release:
        async with anyio.create_task_group() as tg:
            async def run():
                tg.analysis = await tune.arun(
                    stepper, name="pg_unplaced", local_dir=results_dir, verbose=0,
                    resources_per_trial=PlacementGroupFactory([{"CPU": 2}]))
            tg.start_soon(run)
            with anyio.fail_after(30):
                while "has waited" not in caplog.text:
                    await anyio.sleep(0.05)
            release()
    assert "(2 CPU) has waited 0.3 s" in caplog.text
    assert "Ray reports 1 CPU available of 2 CPU" in caplog.text
    [trial] = tg.analysis.trials
    assert trial.status == "TERMINATED" and recorded_steps(trial) == list(range(1, STEPS + 1))


class OneStepSlowCleanup(tune.Trainable):
    """Trial x=0 takes one CPU, x=1 both: the second's launch evicts the first's idle
    worker, and waits for its cleanup before killing it."""

    @classmethod
    def default_resource_request(cls, config):
        return PlacementGroupFactory([{"CPU": 1 + config["x"]}])

    def step(self):
        return {"done": True}

    def cleanup(self):
        time.sleep(5)


class Completions(tune.Callback):
    def __init__(self):
        self.first = anyio.Event()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.first.set()


async def test_cancel_while_an_evicted_worker_cleans_up_kills_it(results_dir):
    completions = Completions()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: tune.arun(
            OneStepSlowCleanup, config={"x": tune.grid_search([0, 1])}, name="evicting",
            local_dir=results_dir, verbose=0, callbacks=[completions]))
        with anyio.fail_after(60):
            await completions.first.wait()
        await anyio.sleep(1.0)  # the second trial's launch now waits for that cleanup
        tg.cancel_scope.cancel()
    assert await wait_until_released() == ([], [])


class SlowSteps(tune.Trainable):
    def step(self):
        time.sleep(3)  # not interruptible: a stop waits for it (up to the grace period)
        return {"x": 1}


async def test_cancel_while_a_stopped_trial_is_released_kills_its_worker(results_dir):
    # The time budget stops the trial mid-step; its release waits for that step (up to
    # the grace period), and the run is cancelled meanwhile.
    await cancel_after(2.0, **dict(run_args(results_dir, "releasing"), time_budget_s=1.0),
                       trainable=SlowSteps)
    assert await wait_until_released() == ([], [])


class HangingCallback(tune.Callback):
    async def on_experiment_end(self, trials, **info):
        await anyio.sleep_forever()


async def test_cleanup_gives_up_on_a_hanging_hook_and_names_it(results_dir, monkeypatch,
                                                               caplog):
    monkeypatch.setenv("TUNE_CLEANUP_HOOK_TIMEOUT_S", "0.3")
    began = time.monotonic()
    await cancel_after(0.5, callbacks=[HangingCallback()], **run_args(results_dir, "hang"))
    assert time.monotonic() - began < 20
    assert "HangingCallback.on_experiment_end did not finish" in caplog.text
    assert await wait_until_released() == ([], [])


class SlowEndCallback(tune.Callback):
    """Its end hook takes a while, so a second cancel can land during the cleanup."""

    def __init__(self):
        self.ending = asyncio.Event()
        self.finished = False

    async def on_experiment_end(self, trials, **info):
        self.ending.set()
        await asyncio.sleep(0.5)
        self.finished = True


async def test_a_second_native_cancel_during_cleanup_cuts_nothing_short(results_dir):
    # asyncio's own Task.cancel (a timeout, a second Ctrl+C) passes anyio's shields: it
    # must not stop the cleanup halfway, with workers still alive.
    hook = SlowEndCallback()
    task = asyncio.ensure_future(tune.arun(stepper, callbacks=[hook],
                                           **run_args(results_dir, "twice")))
    await asyncio.sleep(0.5)
    task.cancel()
    with anyio.fail_after(30):
        await hook.ending.wait()
    task.cancel()  # again, while it cleans up
    with pytest.raises(asyncio.CancelledError):
        await task
    assert hook.finished
    assert await wait_until_released() == ([], [])
    analysis = await tune.arun(stepper, resume=True, **run_args(results_dir, "twice"))
    assert [t.status for t in analysis.trials] == ["TERMINATED"] * TRIALS
    for trial in analysis.trials:
        assert recorded_steps(trial) == list(range(1, STEPS + 1))


CANCEL_DURING_RAY_START = """
import asyncio, os, sys
import tune_async as tune

def trainable(config):
    tune.report(x=1)

async def main():
    task = asyncio.ensure_future(tune.arun(trainable, local_dir=sys.argv[1], name="early",
                                           verbose=0))
    await asyncio.sleep(0.3)  # ray.init takes seconds: this lands while it runs
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        print("CANCELLED")
    import ray
    alive = [a for a in ray._private.state.actors().values() if a["State"] != "DEAD"]
    print("ALIVE", len(alive))

asyncio.run(main())
"""


def test_cancel_during_ray_start_up(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, "-c", CANCEL_DURING_RAY_START, str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "CANCELLED" in proc.stdout
    assert "ALIVE 0" in proc.stdout
