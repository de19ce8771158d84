"""Issue #6's controller rules: 1.x runner steps, releases before relaunch, the trial's
working directory, and persistence that stays O(1) per trial for searcher-driven runs."""

from __future__ import annotations

import os
import time

import anyio
import pytest

import tune_async as tune
import tune_async.state as state_module
from tests.scripted_executor import ScriptedExecutor
from tune_async.suggest import Searcher

# ---- 1.x runner steps -------------------------------------------------------------------------


def twenty_results(config):
    for i in range(20):
        tune.report(i=i)


class StepRecorder(tune.Callback):
    def __init__(self):
        self.events = []

    def on_step_begin(self, iteration, trials, **info):
        self.events.append(("begin", iteration))

    def on_step_end(self, iteration, trials, **info):
        self.events.append(("end", iteration))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.events.append(("result", iteration))


def test_step_callbacks_run_once_per_processed_result(results_dir):
    recorder = StepRecorder()
    tune.run(twenty_results, local_dir=results_dir, verbose=0, callbacks=[recorder],
             trial_executor=ScriptedExecutor())
    results = [i for kind, i in recorder.events if kind == "result"]
    assert len(results) == 20 and len(set(results)) == 20  # one step each, batched or not
    for iteration in results:  # each result inside its own begin/end pair
        at = recorder.events.index(("result", iteration))
        assert recorder.events[at - 1] == ("begin", iteration)
        assert recorder.events[at + 1] == ("end", iteration)


# ---- a trial being released is not waiting ----------------------------------------------------


class SlowToStop(ScriptedExecutor):
    """Releases take a while, as Ray's do: calls are logged in the order they happen."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = []

    async def start_trial(self, trial, trainable_cls, reuse, checkpoint=None):
        self.calls.append(("start", trial.trial_id))
        await super().start_trial(trial, trainable_cls, reuse, checkpoint)

    async def stop_trial(self, trial, in_flight=False, failed=False):
        self.calls.append(("stop-begin", trial.trial_id))
        await anyio.sleep(0.2)
        await super().stop_trial(trial, in_flight=in_flight, failed=failed)
        self.calls.append(("stop-end", trial.trial_id))


def fails_once(config):
    marker = config["marker"]
    for i in range(4):
        if i == 2 and not os.path.exists(marker):
            open(marker, "w").close()
            raise RuntimeError("first attempt fails")
        tune.report(i=i)


def test_a_retried_trial_starts_again_only_after_its_release_finished(results_dir, tmp_path):
    executor = SlowToStop(slots=2)  # resources free at once: only the release holds it back
    analysis = tune.run(fails_once, config={"marker": str(tmp_path / "failed")}, max_failures=1,
                        local_dir=results_dir, verbose=0, trial_executor=executor)
    assert analysis.trials[0].status == "TERMINATED"
    kinds = [kind for kind, _ in executor.calls]
    assert kinds == ["start", "stop-begin", "stop-end", "start", "stop-begin", "stop-end"]


# ---- the working directory ----------------------------------------------------------------------


def writes_relative_file(config):
    with open("made_here.txt", "w") as f:
        f.write(os.getcwd())
    tune.report(done=True)


class WritesRelativeFile(tune.Trainable):
    def step(self):
        with open("made_here.txt", "w") as f:
            f.write(os.getcwd())
        return {"done": True}


@pytest.mark.ray
@pytest.mark.parametrize("trainable", [writes_relative_file, WritesRelativeFile])
def test_the_trainable_runs_in_its_trial_directory(trainable, results_dir):
    analysis = tune.run(trainable, num_samples=2, local_dir=results_dir, verbose=0)
    for trial in analysis.trials:
        with open(os.path.join(trial.logdir, "made_here.txt")) as f:
            assert os.path.samefile(f.read(), trial.logdir)


# ---- persistence of searcher-driven runs ----------------------------------------------------------


class CountingSearcher(Searcher):
    """Suggests x = 0, 1, 2, ...; its state is how many it suggested."""

    def __init__(self):
        super().__init__(metric="x", mode="max")
        self.suggested = 0
        self.completed = []

    def suggest(self, trial_id):
        self.suggested += 1
        return {"x": self.suggested - 1}

    def on_trial_complete(self, trial_id, result=None, error=False):
        self.completed.append(trial_id)

    def get_state(self):
        return {"suggested": self.suggested}

    def set_state(self, state):
        self.suggested = state["suggested"]


def finished_on_record(results_dir):
    """Trials the state on disk (snapshot + journal) records as TERMINATED."""
    from tune_async.state import load_state, newest_state_file

    state = load_state(newest_state_file(os.path.join(results_dir, "lagging")))
    return {t["trial_id"] for t in state["checkpoints"] if t["status"] == "TERMINATED"}


def report_x(config):
    time.sleep(config.get("pause", 0))
    tune.report(x=config["x"])


def test_a_searcher_driven_run_journals_trials_and_snapshots_periodically(results_dir,
                                                                         monkeypatch):
    snapshots = []
    real_write = state_module.write_snapshot

    def counting_write(path, text):
        snapshots.append(path)
        real_write(path, text)

    monkeypatch.setattr(state_module, "write_snapshot", counting_write)
    analysis = tune.run(report_x, search_alg=CountingSearcher(), num_samples=400,
                        local_dir=results_dir, verbose=0, trial_executor=ScriptedExecutor())
    assert len(analysis.trials) == 400
    assert len(snapshots) < 20  # periodic, not one per new or finished trial


async def test_resume_from_a_snapshot_older_than_the_journal_runs_each_trial_once(
        results_dir, monkeypatch):
    """A crash leaves the searcher's state (periodic) behind the journaled trials."""
    searcher_kwargs = dict(num_samples=6, name="lagging", local_dir=results_dir, verbose=0,
                           config={"pause": 0.05})
    finished = []

    class Finished(tune.Callback):
        def on_trial_complete(self, iteration, trials, trial, **info):
            finished.append(trial.trial_id)

    real_snapshot = state_module.ExperimentPersistence.snapshot
    taken = []

    async def first_snapshot_only(self, *args, **kwargs):
        if not taken:  # like a driver killed before any later snapshot: journal only
            taken.append(True)
            await real_snapshot(self, *args, **kwargs)

    monkeypatch.setattr(state_module.ExperimentPersistence, "snapshot", first_snapshot_only)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: tune.arun(report_x, search_alg=CountingSearcher(),
                                        callbacks=[Finished()],
                                        trial_executor=ScriptedExecutor(slots=1),
                                        **searcher_kwargs))
        with anyio.fail_after(30):
            while len(finished) < 3:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    monkeypatch.undo()
    recorded_finished = finished_on_record(results_dir)
    assert recorded_finished  # the journal alone says which trials finished

    searcher = CountingSearcher()
    analysis = await tune.arun(report_x, search_alg=searcher, resume=True,
                               trial_executor=ScriptedExecutor(slots=1), **searcher_kwargs)
    assert len(analysis.trials) == 6
    assert len({t.trial_id for t in analysis.trials}) == 6
    assert {t.status for t in analysis.trials} == {"TERMINATED"}
    assert sorted(t.config["x"] for t in analysis.trials) == list(range(6))
    assert not recorded_finished & set(searcher.completed)  # finished on record: never rerun
    assert not set(finished[:3]) & set(searcher.completed)  # nor one that reported its end


def test_the_heap_is_frozen_during_a_run_and_unfrozen_after(tmp_path, monkeypatch):
    import gc

    from tests.scripted_executor import ScriptedExecutor

    seen = []

    def trainable(config):
        seen.append(gc.get_freeze_count())
        tune.report(x=1)

    tune.run(trainable, trial_executor=ScriptedExecutor(), local_dir=str(tmp_path), verbose=0)
    assert seen and seen[0] > 0  # imports and everything before the run: out of full GCs
    assert gc.get_freeze_count() == 0
    monkeypatch.setenv("TUNE_GC_FREEZE", "0")
    seen.clear()
    tune.run(trainable, trial_executor=ScriptedExecutor(), local_dir=str(tmp_path), verbose=0)
    assert seen == [0]


class _Node:
    """An object that can be part of a reference cycle and be watched by a weakref."""


def test_a_runs_full_collections_free_cycles_and_freeze_what_survives_until_it_ends(
        monkeypatch):
    import gc
    import weakref

    from tune_async.utils import heap

    monkeypatch.setattr(heap, "REFREEZE_AFTER_S", 0.0)  # every full collection refreezes
    thresholds = gc.get_threshold()
    with heap.frozen_heap():
        assert gc.get_threshold() == (*thresholds[:2], heap.FULL_COLLECTION_THRESHOLD)
        dead = _Node()
        dead.me = dead
        dead_ref = weakref.ref(dead)
        alive = _Node()
        alive.me = alive
        alive_ref = weakref.ref(alive)
        del dead
        gc.collect()
        assert dead_ref() is None  # unreachable at the collection: freed, not frozen
        # The survivors are frozen: out of every generation a collection scans. (Not
        # the freeze count: frozen objects that other threads free meanwhile lower it.)
        assert not any(o is alive for o in gc.get_objects())
        del alive
        gc.collect()
        assert alive_ref() is not None  # frozen while alive: waits for the run's end
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == thresholds
    gc.collect()
    assert alive_ref() is None


def test_thresholds_an_application_sets_during_a_run_are_kept():
    import gc

    from tune_async.utils import heap

    thresholds = gc.get_threshold()
    try:
        with heap.frozen_heap():
            gc.set_threshold(1000, 20, 30)
        assert gc.get_threshold() == (1000, 20, 30)
        assert gc.get_freeze_count() == 0
    finally:
        gc.set_threshold(*thresholds)


def test_an_application_that_froze_its_heap_is_left_alone():
    import gc

    from tune_async.utils import heap

    thresholds = gc.get_threshold()
    gc.freeze()
    try:
        with heap.frozen_heap():
            assert gc.get_threshold() == thresholds
            made_during_the_run = _Node()
            gc.collect()
            # Not frozen by us (it is still in a generation), and the application's
            # frozen heap stays frozen after the run.
            assert any(o is made_during_the_run for o in gc.get_objects())
        assert gc.get_freeze_count() > 0
        assert heap._refreeze_after_long_collection not in gc.callbacks
    finally:
        gc.unfreeze()


class SwitchIntervalSearcher(Searcher):
    """Records the interpreter's switch interval when it is asked (in the lane's thread)."""

    def __init__(self):
        super().__init__(metric="x", mode="max")
        self.seen = []
        self.left = 2

    def suggest(self, trial_id):
        import sys

        self.seen.append(sys.getswitchinterval())
        if self.left == 0:
            return Searcher.FINISHED
        self.left -= 1
        return {"n": self.left}

    def on_trial_complete(self, trial_id, result=None, error=False):
        pass


def test_a_searcher_driven_run_gets_the_gil_back_within_1_ms(tmp_path, monkeypatch):
    import sys

    in_trials = []

    def trainable(config):
        in_trials.append(sys.getswitchinterval())
        tune.report(x=1)

    before = sys.getswitchinterval()
    assert before > 0.001  # the interpreter's default (5 ms) in the test process
    searcher = SwitchIntervalSearcher()
    tune.run(trainable, search_alg=searcher, num_samples=2, trial_executor=ScriptedExecutor(),
             local_dir=str(tmp_path), verbose=0)
    # With a searcher working in a thread, the loop waits at most 1 ms for the GIL from
    # any thread, for the whole run; a run without one keeps the interpreter's own.
    assert searcher.seen and set(searcher.seen) == {0.001}
    assert in_trials == [0.001, 0.001]
    assert sys.getswitchinterval() == before
    in_trials.clear()

    class AtResults(tune.Callback):
        seen: list = []

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.seen.append(sys.getswitchinterval())

    tune.run(trainable, num_samples=2, trial_executor=ScriptedExecutor(),
             local_dir=str(tmp_path), verbose=0, callbacks=[AtResults()])
    # A run without one takes 1 ms only while it starts up (Ray creates the first
    # actors in threads), until its first results arrive.
    assert in_trials[0] == 0.001
    assert AtResults.seen and set(AtResults.seen) == {before}
    assert sys.getswitchinterval() == before
    monkeypatch.setenv("TUNE_SWITCH_INTERVAL_S", "0")  # left alone
    searcher = SwitchIntervalSearcher()
    tune.run(trainable, search_alg=searcher, num_samples=2, trial_executor=ScriptedExecutor(),
             local_dir=str(tmp_path), verbose=0)
    assert set(searcher.seen) == {before}
    monkeypatch.setenv("TUNE_SWITCH_INTERVAL_S", "soon")
    with pytest.raises(ValueError, match="TUNE_SWITCH_INTERVAL_S must be a number, got 'soon'"):
        tune.run(trainable, trial_executor=ScriptedExecutor(), local_dir=str(tmp_path),
                 name="never", verbose=0)
    assert not os.path.exists(os.path.join(tmp_path, "never"))  # before anything started


def test_the_analysis_is_read_back_under_the_short_switch_interval(tmp_path, monkeypatch):
    # Reading the state file back is Python work in a thread beside the loop, after the
    # trials: it held the GIL from the loop for up to the interpreter's 5 ms at a time.
    import sys

    from tune_async.analysis import ExperimentAnalysis

    seen = []
    init = ExperimentAnalysis.__init__

    def recording_init(self, *args, **kwargs):
        seen.append(sys.getswitchinterval())
        init(self, *args, **kwargs)

    monkeypatch.setattr(ExperimentAnalysis, "__init__", recording_init)
    before = sys.getswitchinterval()
    analysis = tune.run(lambda config: tune.report(x=1), num_samples=2, verbose=0,
                        trial_executor=ScriptedExecutor(), local_dir=str(tmp_path))
    assert len(analysis.trials) == 2
    assert seen == [0.001]
    assert sys.getswitchinterval() == before


def test_the_start_up_switch_interval_ends_after_its_cap_without_results(tmp_path, monkeypatch):
    import asyncio
    import sys

    import tune_async.api

    monkeypatch.setattr(tune_async.api, "STARTUP_SWITCH_S", 0.2)
    seen = []

    async def slow_first_step(config):
        seen.append(sys.getswitchinterval())
        await asyncio.sleep(0.6)  # no result yet when the cap passes
        seen.append(sys.getswitchinterval())
        await tune.areport(x=1)

    before = sys.getswitchinterval()
    tune.run(slow_first_step, trial_executor=tune.LocalExecutor(), local_dir=str(tmp_path),
             verbose=0)
    assert seen == [0.001, before]
    assert sys.getswitchinterval() == before


def test_the_switch_interval_comes_back_after_the_last_overlapping_run():
    import sys

    from tune_async.utils.gil import short_switch_interval

    before = sys.getswitchinterval()
    with short_switch_interval(0.001):
        with short_switch_interval(0.001):  # another experiment, meanwhile
            assert sys.getswitchinterval() == 0.001
        assert sys.getswitchinterval() == 0.001  # the first one still runs
    assert sys.getswitchinterval() == before
    with short_switch_interval(0.001):
        with short_switch_interval(0):  # a run without a threaded searcher takes no part
            pass
        assert sys.getswitchinterval() == 0.001
    with short_switch_interval(0):
        with short_switch_interval(0.001):
            pass
        assert sys.getswitchinterval() == before  # nor does it hold the short one longer
    with short_switch_interval(0.001):
        sys.setswitchinterval(0.002)  # the application's own choice meanwhile: kept
    assert sys.getswitchinterval() == 0.002
    sys.setswitchinterval(before)


class SliceRecorder(tune.Callback):
    """At each result, on the loop's thread: its CPU slice, and that of a thread and of a
    process started from it."""

    def __init__(self):
        self.loop, self.thread, self.process = [], [], []

    def on_trial_result(self, iteration, trials, trial, result, **info):
        import subprocess
        import sys
        import threading

        from tune_async.utils.cpu_slice import current_slice_ns

        self.loop.append(current_slice_ns())
        thread = threading.Thread(target=lambda: self.thread.append(current_slice_ns()))
        thread.start()
        thread.join()
        if not self.process:
            code = "from tune_async.utils.cpu_slice import current_slice_ns as s; print(s())"
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 check=True).stdout.strip()
            self.process.append(None if out == "None" else int(out))


def _run_recording_slices(tmp_path, name):
    recorder = SliceRecorder()
    tune.run(lambda config: tune.report(x=1), num_samples=2, trial_executor=ScriptedExecutor(),
             local_dir=str(tmp_path), name=name, verbose=0, callbacks=[recorder])
    return recorder


def test_the_loops_thread_asks_for_a_short_cpu_slice_while_a_run_goes_on(tmp_path, monkeypatch):
    from tune_async.utils.cpu_slice import current_slice_ns

    before = current_slice_ns()
    recorder = _run_recording_slices(tmp_path, "default")
    if before is None:  # not Linux, or a kernel that keeps no slice per thread (< 6.12)
        assert recorder.loop == [None, None]
        return
    assert before > 100_000  # the kernel's default here
    assert recorder.loop == [100_000, 100_000]
    # Threads and processes started meanwhile (Ray's, anyio's, the writer) keep the default.
    assert recorder.thread == [before, before]
    assert recorder.process == [before]
    assert current_slice_ns() == before  # given back
    monkeypatch.setenv("TUNE_LOOP_SLICE_S", "0.0005")
    assert _run_recording_slices(tmp_path, "longer").loop == [500_000, 500_000]
    monkeypatch.setenv("TUNE_LOOP_SLICE_S", "0")  # left alone
    assert _run_recording_slices(tmp_path, "alone").loop == [before, before]
    assert current_slice_ns() == before
    monkeypatch.setenv("TUNE_LOOP_SLICE_S", "soon")
    with pytest.raises(ValueError, match="TUNE_LOOP_SLICE_S must be a number, got 'soon'"):
        tune.run(lambda config: tune.report(x=1), trial_executor=ScriptedExecutor(),
                 local_dir=str(tmp_path), name="never", verbose=0)
    assert not os.path.exists(os.path.join(tmp_path, "never"))  # before anything started


def test_the_cpu_slice_comes_back_after_the_last_overlapping_run():
    from tune_async.utils import cpu_slice
    from tune_async.utils.cpu_slice import current_slice_ns, short_cpu_slice

    before = current_slice_ns()
    if before is None:  # not Linux, or a kernel that keeps no slice per thread (< 6.12)
        with short_cpu_slice(0.0001):
            assert current_slice_ns() is None
        return
    with short_cpu_slice(0.0001):
        with short_cpu_slice(0.0001):  # another experiment on the same loop, meanwhile
            assert current_slice_ns() == 100_000
        assert current_slice_ns() == 100_000  # the first one still runs
    assert current_slice_ns() == before
    with short_cpu_slice(0):  # a run that takes no part
        with short_cpu_slice(0.0002):
            assert current_slice_ns() == 200_000
    assert current_slice_ns() == before
    with short_cpu_slice(1.0):  # never made longer
        assert current_slice_ns() == before
    with short_cpu_slice(0.0001):
        mine = cpu_slice._get()
        mine.sched_runtime = 300_000
        assert cpu_slice._set(mine)  # the application's own choice meanwhile: kept
    assert current_slice_ns() == 300_000
    mine.sched_runtime, mine.sched_flags = before, 0
    assert cpu_slice._set(mine)
    assert current_slice_ns() == before


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def test_a_pacer_yield_lets_a_timer_that_came_due_meanwhile_run_first():
    # A piece of work that yields with sleep(0) is queued before a timer that fell due
    # during the piece: a heartbeat then waited for the next piece too.
    import asyncio

    from tune_async.utils.util import Pacer

    order: list[str] = []
    asyncio.get_running_loop().call_later(0.001, order.append, "timer")
    pacer = Pacer(every_s=0.0)
    _busy(0.005)  # the work, past the timer's time
    await pacer.now_and_then()
    order.append("next piece")
    assert order == ["timer", "next piece"]


async def test_paced_tasks_share_the_loops_turn():
    # Each task counted its own 1 ms, and asyncio runs every queued task before the
    # timers that came due: two pieces queued together held a heartbeat for both.
    import asyncio

    from tune_async.utils.util import Pacer

    order: list[str] = []

    async def piece(name: str) -> None:
        pacer = Pacer(every_s=0.001)
        for step in range(3):
            _busy(0.0006)
            order.append(f"{name}{step}")
            await pacer.now_and_then()

    asyncio.get_running_loop().call_later(0.0005, order.append, "timer")
    await asyncio.gather(piece("a"), piece("b"))
    # "a" spends the turn in two steps; "b", queued behind it, yields after its first.
    assert order[:4] == ["a0", "a1", "b0", "timer"]
    assert sorted(order) == ["a0", "a1", "a2", "b0", "b1", "b2", "timer"]


async def test_work_queued_behind_a_spent_turn_waits_for_the_due_timers():
    import asyncio

    from tune_async.utils.util import Pacer, after_due_timers_if_spent

    order: list[str] = []

    async def queued_work() -> None:
        await after_due_timers_if_spent()
        order.append("work")

    async def fresh_turn_work() -> None:
        await asyncio.sleep(0.002)  # the loop has had its turn: no wait now
        task = asyncio.ensure_future(asyncio.sleep(0))  # would run if this yielded
        await after_due_timers_if_spent()
        order.append(f"fresh, other task done: {task.done()}")
        await task

    Pacer()  # paced work opens the loop's turn...
    asyncio.get_running_loop().call_later(0.0005, order.append, "timer")
    _busy(0.0015)  # ...and spends it, past the timer's time
    await asyncio.gather(queued_work(), fresh_turn_work())
    assert order == ["timer", "work", "fresh, other task done: False"]


# ---- arun's preparation, in pieces ---------------------------------------------------------


@pytest.fixture
def every_stage_a_turn(monkeypatch):
    """arun's preparation yields after each stage (its turn is otherwise 1 ms); returns
    the list where the experiments' building records itself."""
    import functools

    import tune_async.api as api
    from tune_async.utils.util import Pacer

    events: list[str] = []
    build = api._experiments_of

    def experiments_of(a):
        events.append("experiments")
        return build(a)

    monkeypatch.setattr(api, "_experiments_of", experiments_of)
    monkeypatch.setattr(api, "Pacer", functools.partial(Pacer, every_s=0.0))
    return events


async def test_arun_prepares_in_pieces_with_the_loop_running_between(results_dir,
                                                                    every_stage_a_turn):
    # Binding ~70 arguments, checking and wrapping each experiment's trainable and making
    # the controller: ~2 ms of Python at a process's first run, in one piece before.
    events = every_stage_a_turn

    async def other_task():
        events.append("other task")

    async with anyio.create_task_group() as tg:
        tg.start_soon(other_task)
        analysis = await tune.arun(twenty_results, local_dir=results_dir, verbose=0,
                                   trial_executor=ScriptedExecutor())
    assert events[:2] == ["other task", "experiments"]
    assert [t.status for t in analysis.trials] == ["TERMINATED"]


async def test_a_cancel_while_arun_prepares_leaves_nothing_on_disk(results_dir,
                                                                  every_stage_a_turn):
    import asyncio

    events = every_stage_a_turn
    task = asyncio.ensure_future(tune.arun(twenty_results, name="prepared", verbose=0,
                                           local_dir=results_dir,
                                           trial_executor=ScriptedExecutor()))
    while "experiments" not in events:
        await asyncio.sleep(0)
    task.cancel()  # at the yield after the experiments were built
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not os.path.exists(os.path.join(results_dir, "prepared"))
