"""Plugins' background work: tasks the experiment owns (started, cancelled, awaited)."""

from __future__ import annotations

import logging
import time

import anyio
import pytest

import tune_async as tune


def slow_trainable(config):
    for i in range(config.get("steps", 3)):
        time.sleep(config.get("sleep", 0.0))
        tune.report(score=i)


class Ticker(tune.Callback):
    """Counts in a background task; records whether it was cancelled at the end."""

    def __init__(self) -> None:
        self.ticks = 0
        self.cancelled = False
        self.running_at_end: int | None = None
        self.context = None

    def setup(self, context=None, **info):
        self.context = context
        context.start_soon(self._tick, name="ticker")

    async def _tick(self) -> None:
        try:
            while True:
                self.ticks += 1
                await anyio.sleep(0.01)
        except anyio.get_cancelled_exc_class():
            self.cancelled = True
            raise

    def on_experiment_end(self, trials, **info):
        self.running_at_end = self.context.running


def test_background_task_runs_during_the_run_and_is_cancelled_after_it(results_dir):
    ticker = Ticker()
    analysis = tune.run(slow_trainable, config={"sleep": 0.05}, callbacks=[ticker],
                        trial_executor="local", local_dir=results_dir, verbose=0)
    assert [t.status for t in analysis.trials] == ["TERMINATED"]
    assert ticker.ticks >= 3  # it ran beside the trial
    assert ticker.running_at_end == 1  # still alive for on_experiment_end ...
    assert ticker.cancelled  # ... and cancelled once the experiment ended


class FinalSync(tune.Callback):
    """Starts slow work at each result; waits for it at the end (a syncer's pattern)."""

    def __init__(self) -> None:
        self.finished = 0

    def setup(self, context=None, **info):
        self.context = context

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.context.start_soon(self._upload)

    async def _upload(self) -> None:
        await self.context.run_sync(time.sleep, 0.05)
        self.finished += 1

    async def on_experiment_end(self, trials, **info):
        with anyio.move_on_after(5):
            await self.context.wait_idle()


def test_on_experiment_end_can_wait_for_work_in_flight(results_dir):
    final = FinalSync()
    tune.run(slow_trainable, callbacks=[final], trial_executor="local",
             local_dir=results_dir, verbose=0)
    assert final.finished == 3


class Failing(tune.Callback):
    def setup(self, context=None, **info):
        context.start_soon(self._boom, name="uploader")

    async def _boom(self) -> None:
        raise OSError("bucket gone")


def test_a_failing_background_task_is_logged_and_the_run_goes_on(results_dir, caplog):
    caplog.set_level(logging.ERROR, logger="tune_async.plugin_context")
    analysis = tune.run(slow_trainable, callbacks=[Failing()], trial_executor="local",
                        local_dir=results_dir, verbose=0)
    assert analysis.trials[0].status == "TERMINATED"
    assert any("uploader" in r.getMessage() and "bucket gone" in r.exc_text
               for r in caplog.records if r.exc_text)


class OldStyleSetup(tune.Callback):
    def __init__(self) -> None:
        self.called = False

    def setup(self):  # a 1.x-era signature: no **info
        self.called = True


def test_a_setup_without_info_still_works(results_dir):
    callback = OldStyleSetup()
    tune.run(slow_trainable, callbacks=[callback], trial_executor="local",
             local_dir=results_dir, verbose=0)
    assert callback.called


@pytest.mark.asyncio
async def test_cancelling_arun_cancels_the_background_tasks(results_dir):
    ticker = Ticker()
    with anyio.move_on_after(0.5):
        await tune.arun(slow_trainable, config={"steps": 1000, "sleep": 0.01},
                        callbacks=[ticker], trial_executor="local", local_dir=results_dir,
                        verbose=0)
    assert ticker.ticks > 0
    assert ticker.cancelled
