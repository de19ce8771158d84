"""The controller's periodic work runs on an injectable clock: time budgets without waiting."""

from __future__ import annotations

import anyio
import anyio.lowlevel

import tune_async as tune
from tests.scripted_executor import ScriptedExecutor
from tune_async.clock import FakeClock


def forever(config):
    import time

    while True:
        time.sleep(0.001)
        tune.report(x=1)


async def test_time_budget_follows_the_controller_clock(results_dir):
    clock = FakeClock()
    recorded = []

    class Counting(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            recorded.append(result)

    async with anyio.create_task_group() as tg:
        box = {}

        async def run():
            box["analysis"] = await tune.arun(
                forever, num_samples=2, time_budget_s=3600, verbose=0, local_dir=results_dir,
                trial_executor=ScriptedExecutor(), callbacks=[Counting()], _clock=clock)

        tg.start_soon(run)
        while len(recorded) < 10:
            await anyio.sleep(0.01)
        assert "analysis" not in box  # an hour of budget has not passed on the fake clock
        for _ in range(7300):  # ticks every 0.5 s of fake time
            clock.advance(0.5)
            await anyio.lowlevel.checkpoint()
            if "analysis" in box:
                break
        await anyio.lowlevel.checkpoint()
    assert {t.status for t in box["analysis"].trials} == {"TERMINATED"}
    assert clock.now() >= 3600
