"""Experiment persistence (tune_async.state): what a snapshot holds once finished trials'
entries are kept compressed in chunks, where the writes happen, and what a state file
of objects only cloudpickle can carry needs to load elsewhere.
"""

from __future__ import annotations

import threading
import time

import anyio
import anyio.lowlevel
import pytest

from tests.disk_lag import LagOnDisk, write_slowly
from tune_async.state import ExperimentPersistence, load_state, trials_from_state
from tune_async.trial import Trial, TrialStatus


def make_trials(count):
    trials = []
    for i in range(count):
        trial = Trial("f", config={"i": i, "text": f"line\nbreak {i}"}, trial_id=f"t_{i:05d}")
        trial.last_result = {"loss": i / 10, "note": "a\nb"}
        trials.append(trial)
    return trials


def persistence(tmp_path, **kwargs):
    return ExperimentPersistence(str(tmp_path), "2026-12-03_00-00-00", time.monotonic,
                                 lambda: None, **kwargs)


@pytest.mark.asyncio
async def test_a_snapshot_lists_every_trial_in_order_after_finished_ones_are_compressed(
        tmp_path):
    trials = make_trials(60)
    store = persistence(tmp_path)
    # Trials finish in three waves, a long-running one between them (as under ASHA):
    # each wave's entries are compressed together by the write that follows it.
    for wave in (range(0, 20), range(20, 40), range(41, 60)):
        for i in wave:
            trials[i].status = TrialStatus.TERMINATED
        await store.snapshot(trials, {"name": "x"}, 0.0)
        await store.flush()
    trials[40].status = TrialStatus.TERMINATED  # the long-running one finishes last
    await store.snapshot(trials, {"name": "x"}, 0.0)
    await store.flush(final=True)

    state = load_state(store.state_file)
    restored = trials_from_state(state)
    assert [t.trial_id for t in restored] == [t.trial_id for t in trials]
    assert all(t.status == TrialStatus.TERMINATED for t in restored)
    assert [t.config for t in restored] == [t.config for t in trials]
    assert [e["last_result"]["note"] for e in state["checkpoints"]] == ["a\nb"] * 60


class FlushRecorder:
    def __init__(self):
        self.threads = []

    def __call__(self):
        self.threads.append(threading.get_ident())


@pytest.mark.asyncio
async def test_every_write_goes_to_a_thread(tmp_path):
    recorder = FlushRecorder()
    store = persistence(tmp_path, flush_files=recorder)
    for _ in range(3):
        store.flush_files_soon()
        await store.flush()
    assert threading.get_ident() not in recorder.threads
    assert len(recorder.threads) == 3


@pytest.mark.asyncio
async def test_journaling_many_trials_lets_the_loop_run_between_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(ExperimentPersistence, "YIELD_AFTER_S", 0.0)  # a chunk per entry
    store = persistence(tmp_path)
    await store.snapshot([], {"name": "x"}, 0.0)
    beats = 0
    seen = []
    real_entry = store._serializer.entry

    def entry(trial):
        seen.append(beats)
        return real_entry(trial)

    store._serializer.entry = entry

    async def beat():
        nonlocal beats
        while True:
            beats += 1
            await anyio.lowlevel.checkpoint()

    for trial in make_trials(20):
        store.must_survive(trial)
    async with anyio.create_task_group() as tg:
        tg.start_soon(beat)
        await anyio.lowlevel.checkpoint()
        await store.journal_survivors()
        tg.cancel_scope.cancel()
    assert len(seen) == 20
    assert len(set(seen)) == 20  # another task ran between each two entries


@pytest.mark.asyncio
async def test_journaling_continues_the_callers_turn_on_the_loop(tmp_path):
    # The consumer's step admits trials, then journals them: with a turn of its own the
    # journal held the loop for another full turn after the step had used up its own.
    from tune_async.utils.util import Pacer

    store = persistence(tmp_path)
    await store.snapshot([], {"name": "x"}, 0.0)
    for trial in make_trials(5):
        store.must_survive(trial)
    ran_between = []
    pacer = Pacer(every_s=0.001)
    time.sleep(0.002)  # the step's work so far: its turn is over

    async def other_task():
        ran_between.append(len(store._jobs))

    async with anyio.create_task_group() as tg:
        tg.start_soon(other_task)
        await store.journal_survivors(pacer)
    # It yielded after the first entry (the loop's next turn came before the other four).
    assert ran_between == [2]  # the snapshot and one journal line were queued


@pytest.mark.asyncio
async def test_trials_a_cancel_leaves_unjournaled_are_journaled_by_the_next_call(
        tmp_path, monkeypatch):
    monkeypatch.setattr(ExperimentPersistence, "YIELD_AFTER_S", 0.0)
    trials = make_trials(10)
    store = persistence(tmp_path)
    await store.snapshot([], {"name": "x"}, 0.0)  # the journal follows this state file
    for trial in trials:
        store.must_survive(trial)
    with anyio.CancelScope() as scope:
        scope.cancel()  # lands at the first yield, after the first entry
        await store.journal_survivors()
    await store.journal_survivors()  # the cleanup's call
    await store.flush(final=True)
    store.close()
    restored = trials_from_state(load_state(store.state_file))
    assert sorted(t.trial_id for t in restored) == [t.trial_id for t in trials]


WRITE_MAIN_TRIAL = """
import sys
from tune_async.state import trial_state
from tune_async.trial import Trial
from tune_async.utils.util import json_dumps

class Net:  # defined in __main__: only cloudpickle can carry it to another process
    depth = 3

trial = Trial("f", config={"model": Net, "act": lambda x: x * 2}, trial_id="m_00000")
with open(sys.argv[1], "w") as f:
    f.write(json_dumps({"checkpoints": [trial_state(trial)]}))
"""


def test_a_trial_holding_main_module_objects_loads_in_another_process(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "state.json"
    subprocess.run([sys.executable, "-c", WRITE_MAIN_TRIAL, str(path)], check=True)
    restored = trials_from_state(load_state(str(path)))
    assert restored[0].config["model"].depth == 3
    assert restored[0].config["act"](4) == 8


def test_in_real_time_a_writer_that_cannot_keep_up_holds_the_run_back_not_memory(
        results_dir, monkeypatch):
    """Past MAX_BACKLOG_REAL_TIME queued jobs the consumer waits for the writer to take
    them: what is not on disk yet (and held in memory meanwhile) stays bounded."""
    import tune_async as tune

    write_slowly(monkeypatch, per_job=0.001)
    monkeypatch.setattr(ExperimentPersistence, "MAX_BACKLOG_REAL_TIME", 10)
    lag_on_disk = LagOnDisk(every=20)

    def trainable(config):
        tune.report(loss=config["i"])

    analysis = tune.run(trainable, config={"i": tune.grid_search(list(range(300)))},
                        trial_executor=tune.LocalExecutor(max_concurrent=50),
                        callbacks=[lag_on_disk], local_dir=results_dir, verbose=0)
    assert len(analysis.trials) == 300
    lags = lag_on_disk.lags
    # At most ~11 jobs queued and a batch as large in the writer's hands; two journal
    # lines per trial (added, finished), and the state read back may miss the last write.
    assert max(lags) <= 40, lags
