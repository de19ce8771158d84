"""Experiment handles and event streams (issue #11): watch and steer a running experiment."""

from __future__ import annotations

import time

import anyio
import pytest

import tune_async as tune
from tests.scripted_executor import ScriptedExecutor
from tune_async.error import TuneError
from tune_async.trial import TrialStatus


def counter(config):
    for i in range(config.get("steps", 5)):
        time.sleep(config.get("pause", 0.002))
        tune.report(loss=config["x"] * 10 - i, i=i)


def run_kwargs(tmp_path, **extra):
    kwargs = dict(config={"x": tune.grid_search([0.1, 0.2, 5.0])}, local_dir=str(tmp_path),
                  verbose=0, trial_executor=ScriptedExecutor(slots=3))
    kwargs.update(extra)
    return kwargs


async def test_events_follow_the_pipeline_in_order(tmp_path):
    seen = []
    async with tune.start(counter, **run_kwargs(tmp_path)) as exp:
        async for event in exp.events():
            seen.append(event)
        analysis = await exp.analysis()
    assert isinstance(seen[-1], tune.ExperimentEnded) and not seen[-1].interrupted
    ids = {t.trial_id for t in analysis.trials}
    for trial_id in ids:
        mine = [e for e in seen if getattr(e, "trial_id", None) == trial_id]
        kinds = [type(e).__name__ for e in mine]
        assert kinds == ["TrialAdded", "TrialStarted"] + ["TrialResult"] * 5 + ["TrialCompleted"]
        assert [e.result["i"] for e in mine if isinstance(e, tune.TrialResult)] == list(range(5))
    assert len(seen) == 1 + 8 * len(ids)


async def test_stop_a_trial_from_the_stream(tmp_path):
    stopped = []
    kwargs = run_kwargs(tmp_path, config={"x": tune.grid_search([0.1, 5.0]), "steps": 50,
                                          "pause": 0.01})
    async with tune.start(counter, **kwargs) as exp:
        async for event in exp.events():
            if isinstance(event, tune.TrialResult) and event.result["loss"] > 10 \
                    and event.trial_id not in stopped:
                stopped.append(event.trial_id)
                await exp.stop_trial(event.trial_id)
        analysis = await exp.analysis()
    (bad,) = stopped
    trial = next(t for t in analysis.trials if t.trial_id == bad)
    assert trial.status == "TERMINATED"
    assert trial.last_result["training_iteration"] < 50
    good = next(t for t in analysis.trials if t.trial_id != bad)
    assert good.last_result["training_iteration"] == 50


async def test_add_a_trial_and_see_it_run(tmp_path):
    async with tune.start(counter, **run_kwargs(tmp_path, config={"x": 0.3, "pause": 0.01})) \
            as exp:
        events = exp.events()
        new_id = await exp.add_trial({"x": tune.uniform(1, 2), "steps": 2, "pause": 0.0},
                                     stop={"training_iteration": 1})
        assert any(t.trial_id == new_id for t in exp.trials)
        async for event in events:
            if isinstance(event, tune.TrialCompleted) and event.trial_id == new_id:
                assert event.last_result["training_iteration"] == 1
        analysis = await exp.wait()
    added = next(t for t in analysis.trials if t.trial_id == new_id)
    assert 1 <= added.config["x"] <= 2 and added.status == "TERMINATED"


async def test_bad_commands_get_clear_errors_and_change_nothing(tmp_path):
    async with tune.start(counter, **run_kwargs(tmp_path, config={"x": 0.1, "steps": 20,
                                                                    "pause": 0.01})) as exp:
        with pytest.raises(ValueError, match="No trial with id 'nope'"):
            await exp.stop_trial("nope")
        with pytest.raises(TypeError, match="config must be a dict"):
            await exp.add_trial(["not", "a", "dict"])
        analysis = await exp.wait()
        with pytest.raises(TuneError, match="has ended"):
            await exp.stop_trial(analysis.trials[0].trial_id)
    assert [t.last_result["training_iteration"] for t in analysis.trials] == [20]


async def test_dataframe_mid_run_and_stop(tmp_path):
    async with tune.start(counter, **run_kwargs(tmp_path, config={"x": tune.grid_search([1, 2]),
                                                                    "steps": 200,
                                                                    "pause": 0.005})) as exp:
        async for event in exp.events():
            if isinstance(event, tune.TrialResult) and event.result["i"] >= 3:
                break
        frame = exp.dataframe()
        assert set(frame["status"]) <= {"RUNNING", "PENDING"} and len(frame) == 2
        analysis = await exp.stop()
    assert all(t.status == "TERMINATED" for t in analysis.trials)
    assert all(t.last_result.get("training_iteration", 0) < 200 for t in analysis.trials)


async def test_a_slow_subscriber_loses_events_visibly_and_never_slows_trials(tmp_path):
    async with tune.start(counter, **run_kwargs(tmp_path, config={"x": 0.1, "steps": 30,
                                                                    "pause": 0.0})) as exp:
        events = exp.events(buffer=5)
        await exp.wait()  # never read while it ran
        received = [e async for e in events]
    dropped = [e for e in received if isinstance(e, tune.EventsDropped)]
    assert len(dropped) == 1 and dropped[0].count > 0
    assert isinstance(received[-1], tune.ExperimentEnded)
    assert len(received) == 5 + 1 + 1  # the buffer, the gap, the end
    assert dropped[0].count + 5 == 1 + 1 + 30 + 1  # added, started, results, completed


async def test_an_error_in_the_body_propagates_after_cleanup(tmp_path):
    class Boom(Exception):
        pass

    kwargs = run_kwargs(tmp_path, config={"x": 0.1, "steps": 500, "pause": 0.01}, name="exp")
    with pytest.raises(Boom):
        async with tune.start(counter, **kwargs) as exp:
            async for event in exp.events():
                if isinstance(event, tune.TrialResult):
                    raise Boom()
    assert exp.done
    # Left the block mid-run: the trial was interrupted (resumable), not lost.
    analysis = await tune.arun(counter, resume=True, **kwargs)
    assert [t.last_result["training_iteration"] for t in analysis.trials] == [500]


async def test_astream_yields_until_the_end(tmp_path):
    kinds = [type(e).__name__ async for e in tune.astream(counter, **run_kwargs(tmp_path))]
    assert kinds[-1] == "ExperimentEnded" and kinds.count("TrialCompleted") == 3


@pytest.mark.ray
async def test_leaving_the_block_releases_every_actor(tmp_path):
    import ray

    def live_actors():
        return [a for a in ray._private.state.actors().values()
                if a["State"] != "DEAD" and a["ActorClassName"] == "TrialActor"]

    kwargs = dict(config={"x": tune.grid_search([0.1, 0.2]), "steps": 1000, "pause": 0.01},
                  local_dir=str(tmp_path), verbose=0)
    async with tune.start(counter, **kwargs) as exp:
        async for event in exp.events():
            if isinstance(event, tune.TrialResult):
                break
        assert any(t.status is TrialStatus.RUNNING for t in exp.trials)
    with anyio.move_on_after(30):
        while live_actors():
            await anyio.sleep(0.05)
    assert live_actors() == []



@pytest.mark.ray
async def test_leaving_after_the_last_event_releases_every_actor_and_keeps_the_analysis(
        tmp_path):
    import ray

    def live_actors():
        return [a for a in ray._private.state.actors().values()
                if a["State"] != "DEAD" and a["ActorClassName"] == "TrialActor"]

    # The block is left right after ExperimentEnded, while the run still releases its
    # workers: that cleanup finishes (it was cut short once, and the next run waited
    # forever for CPUs), and the analysis is still there after the block.
    for run in range(2):
        kwargs = dict(config={"x": tune.grid_search([0.1, 0.2])}, local_dir=str(tmp_path),
                      name=f"to_the_end_{run}", verbose=0)
        with anyio.fail_after(60):
            async with tune.start(counter, **kwargs) as exp:
                kinds = [type(event).__name__ async for event in exp.events()]
        assert kinds[-1] == "ExperimentEnded" and kinds.count("TrialCompleted") == 2
        analysis = await exp.analysis()
        assert [t.status for t in analysis.trials] == ["TERMINATED"] * 2
        with anyio.move_on_after(30):
            while live_actors():
                await anyio.sleep(0.05)
        assert live_actors() == []


async def test_a_cancelled_run_ends_with_an_interrupted_event(tmp_path):
    async with tune.start(counter, **run_kwargs(tmp_path, config={
            "x": 0.1, "steps": 10_000, "pause": 0.01})) as exp:
        events = exp.events()
        async for event in events:
            if isinstance(event, tune.TrialResult):
                break
        exp._task.cancel()  # what cancelling the task that awaits arun does
        with anyio.fail_after(30):
            rest = [e async for e in events]
    assert isinstance(rest[-1], tune.ExperimentEnded) and rest[-1].interrupted


class _StopsTheFirst(tune.schedulers.FIFOScheduler):
    """Stops the trial with x == 0.1 at its first result (a scheduler's STOP)."""

    def on_trial_result(self, trial_runner, trial, result):
        return self.STOP if trial.config["x"] == 0.1 else self.CONTINUE


async def test_a_trial_a_scheduler_or_an_error_ends_is_on_disk_before_the_next_snapshot(
        tmp_path, monkeypatch):
    """A trial ended by the scheduler or by its last failure is journaled right away: a
    crash before the next snapshot must not run it again on resume."""
    from tune_async.state import ExperimentPersistence

    monkeypatch.setattr(ExperimentPersistence, "MIN_PERIOD_S", 1000.0)  # no snapshot mid-run

    def trainable(config):
        if config["x"] == 0.2:
            raise RuntimeError("boom")
        counter(config)

    kwargs = run_kwargs(tmp_path, config={"x": tune.grid_search([0.1, 0.2, 5.0]),
                                          "steps": 100_000, "pause": 0.01},
                        scheduler=_StopsTheFirst(), raise_on_failed_trial=False)

    def status_on_disk(experiment_dir, trial_id):
        try:
            trials = tune.ExperimentAnalysis(experiment_dir).trials
        except tune.TuneError:  # the writer has not written the first state yet
            return None
        for trial in trials:
            if trial.trial_id == trial_id:
                return trial.status
        return None

    on_disk = {}  # x -> its status on disk after it ended, the long trial still running
    with anyio.fail_after(120):  # (the long trial runs until the two are seen)
        async with tune.start(trainable, **kwargs) as exp:
            async for event in exp.events():
                if not isinstance(event, (tune.TrialCompleted, tune.TrialErrored)):
                    continue
                ended = next(t for t in exp.trials if t.trial_id == event.trial_id)
                if ended.config["x"] == 5.0:
                    continue
                status = None
                with anyio.move_on_after(10):  # the writer's next round (every ~20 ms)
                    while status not in ("TERMINATED", "ERROR"):
                        await anyio.sleep(0.02)
                        status = status_on_disk(ended.local_dir, ended.trial_id)
                long_trial = next(t for t in exp.trials if t.config["x"] == 5.0)
                assert long_trial.status == "RUNNING", "seen before the run's last snapshot"
                on_disk[ended.config["x"]] = status
                if len(on_disk) == 2:
                    await exp.stop()
            analysis = await exp.analysis()
    by_x = {t.config["x"]: t.status for t in analysis.trials}
    assert by_x == {0.1: "TERMINATED", 0.2: "ERROR", 5.0: "TERMINATED"}
    assert on_disk == {0.1: "TERMINATED", 0.2: "ERROR"}
