"""Back-pressure for event subscribers that ask for it (``overflow="block"``, issue #11).

A blocking subscriber gets every event, in order, and the experiment goes at its pace;
a dropping one beside it still gets gap markers; one that stops reading (break, close,
``async with``) lets the experiment go on; commands and cancellation are never held up.
"""

from __future__ import annotations

import asyncio

import anyio
import pytest

import tune_async as tune
from tests.scripted_executor import ScriptedExecutor

STEPS = 20
TRIALS = 3


def counter(config):
    for i in range(config.get("steps", STEPS)):
        tune.report(loss=config["x"] * 10 - i, i=i)


def never(trial_id, result):
    """A callable stop: one result per fetch, so a controller step publishes one result."""
    return False


def run_kwargs(tmp_path, name="exp", **extra):
    kwargs = dict(config={"x": tune.grid_search([0.1, 0.2, 5.0])}, local_dir=str(tmp_path),
                  name=name, verbose=0, stop=never, trial_executor=ScriptedExecutor(slots=3))
    kwargs.update(extra)
    return kwargs


def results_of(analysis):
    return {t.config["x"]: [t.last_result["i"], t.last_result["training_iteration"]]
            for t in analysis.trials}


def processed_results(exp):
    return sum((t.last_result or {}).get("training_iteration", 0) for t in exp.trials)


async def test_a_blocking_subscriber_gets_every_event_in_order_at_its_pace(tmp_path):
    buffer = 4
    received, lead = [], []
    async with tune.start(counter, **run_kwargs(tmp_path)) as exp:
        slow = exp.events(buffer=buffer, overflow="block")
        dropping = exp.events(buffer=buffer)  # read only once the run is over
        async for event in slow:
            received.append(event)
            # How far the controller got past what this subscriber has read.
            read = sum(isinstance(e, tune.TrialResult) for e in received)
            lead.append(processed_results(exp) - read)
            await anyio.sleep(0.002)
        analysis = await exp.wait()
        gapped = [e async for e in dropping]

    assert not any(isinstance(e, tune.EventsDropped) for e in received)
    assert isinstance(received[-1], tune.ExperimentEnded) and not received[-1].interrupted
    for trial in analysis.trials:
        mine = [e for e in received if getattr(e, "trial_id", None) == trial.trial_id]
        assert [type(e).__name__ for e in mine] == (
            ["TrialAdded", "TrialStarted"] + ["TrialResult"] * STEPS + ["TrialCompleted"])
        assert [e.result["i"] for e in mine if isinstance(e, tune.TrialResult)] == list(
            range(STEPS))
    assert len(received) == 1 + TRIALS * (STEPS + 3)
    # The experiment waited for the reader: it never ran more than a buffer ahead.
    assert max(lead) <= buffer + 2, lead
    # ... and a subscriber that asked to drop still lost events, visibly.
    dropped = [e for e in gapped if isinstance(e, tune.EventsDropped)]
    assert len(dropped) == 1 and dropped[0].count > 0
    assert len(gapped) == buffer + 2 and isinstance(gapped[-1], tune.ExperimentEnded)

    unobserved = await tune.arun(counter, **run_kwargs(tmp_path, name="unobserved"))
    assert results_of(analysis) == results_of(unobserved) == {
        x: [STEPS - 1, STEPS] for x in (0.1, 0.2, 5.0)}


async def test_astream_can_block_too(tmp_path):
    events = [e async for e in tune.astream(counter, buffer=1, overflow="block",
                                            **run_kwargs(tmp_path))]
    assert len(events) == 1 + TRIALS * (STEPS + 3)
    assert not any(isinstance(e, tune.EventsDropped) for e in events)


@pytest.mark.parametrize("how", ["break", "close", "async with"])
async def test_a_blocking_subscriber_that_stops_reading_releases_the_experiment(tmp_path, how):
    async with tune.start(counter, **run_kwargs(tmp_path)) as exp:
        if how == "break":
            async for event in exp.events(buffer=1, overflow="block"):
                if isinstance(event, tune.TrialResult):
                    break  # nothing references the subscription any more
        elif how == "close":
            held = exp.events(buffer=1, overflow="block")
            async for event in held:
                if isinstance(event, tune.TrialResult):
                    break
            held.close()
        else:
            async with exp.events(buffer=1, overflow="block") as events:
                async for event in events:
                    if isinstance(event, tune.TrialResult):
                        break
        with anyio.fail_after(30):
            analysis = await exp.wait()
    assert results_of(analysis) == {x: [STEPS - 1, STEPS] for x in (0.1, 0.2, 5.0)}


async def test_commands_go_through_while_the_subscriber_is_full(tmp_path):
    """The canonical loop: steering from the body of a blocking subscription."""
    stopped = []
    with anyio.fail_after(60):
        async with tune.start(counter, **run_kwargs(tmp_path)) as exp:
            async with exp.events(buffer=1, overflow="block") as events:
                async for event in events:
                    if isinstance(event, tune.TrialResult) and event.result["i"] == 2:
                        stopped.append(event.trial_id)
                        await exp.stop_trial(event.trial_id)
                        added = await exp.add_trial({"x": 1.0, "steps": 3})
                        if len(stopped) == 2:
                            analysis = await exp.stop()
                            break
    by_id = {t.trial_id: t for t in analysis.trials}
    for trial_id in stopped:
        assert by_id[trial_id].last_result["i"] < STEPS - 1
    assert added in by_id
    assert all(t.status == "TERMINATED" for t in analysis.trials)


async def test_cancelling_while_held_by_a_full_subscriber_ends_cleanly(tmp_path):
    before = asyncio.all_tasks()
    async with tune.start(counter, **run_kwargs(tmp_path)) as exp:
        held = exp.events(buffer=2, overflow="block")
        controller = exp._controller
        with anyio.fail_after(30):  # the controller now waits for this reader
            while not controller.events.full():
                await anyio.sleep(0.01)
        await anyio.sleep(0.1)
        stalled_at = processed_results(exp)
        assert not exp.done and stalled_at < TRIALS * STEPS
    # Leaving the block cancelled the experiment while it waited; cleanup ran.
    assert exp.done and processed_results(exp) == stalled_at
    received = [e async for e in held]
    assert isinstance(received[-1], tune.ExperimentEnded)
    assert len(received) > 2, "what it had not read was kept, not dropped"
    assert not any(t.status.value == "TERMINATED" for t in exp.trials)  # cut short, resumable
    assert not any(isinstance(e, tune.EventsDropped) for e in received)
    assert not {t for t in asyncio.all_tasks() - before if t is not asyncio.current_task()}


def test_overflow_must_be_drop_or_block(tmp_path):
    from tune_async.events import EventHub

    with pytest.raises(ValueError, match="overflow"):
        EventHub().subscribe(10, overflow="wait")
    with pytest.raises(ValueError, match="buffer"):
        EventHub().subscribe(0, overflow="block")
