"""Suggestions never stall results (issue #8): the searcher's calls run in order, off the loop.

A slow searcher (a TPE or GP step) runs in the lane's own thread while the event
loop keeps serving the running trials' results; an async searcher's coroutines are
awaited without holding up the consumer; a run cut short keeps the suggestions the
searcher already made.
"""

from __future__ import annotations

import threading
import time

import anyio
import anyio.lowlevel

import tune_async as tune
from tests.scripted_executor import ScriptedExecutor
from tune_async.suggest import ConcurrencyLimiter, Searcher

SLOW_S = 0.3


class SlowSearcher(Searcher):
    """Each suggestion after the first two takes SLOW_S (a model step); records threads."""

    def __init__(self):
        super().__init__(metric="score", mode="max")
        self.count = 0
        self.threads: set[str] = set()
        self.completed: list[str] = []

    def suggest(self, trial_id):
        self.threads.add(threading.current_thread().name)
        self.count += 1
        if self.count > 6:
            return Searcher.FINISHED
        if self.count > 2:
            time.sleep(SLOW_S)
        return {"x": self.count}

    def on_trial_complete(self, trial_id, result=None, error=False):
        self.threads.add(threading.current_thread().name)
        self.completed.append(trial_id)


def reporter(config):
    for i in range(20):
        time.sleep(0.01)
        tune.report(score=config["x"] * i)


async def heartbeat(lateness: list, stop: anyio.Event, period=0.005):
    while not stop.is_set():
        began = time.perf_counter()
        await anyio.sleep(period)
        lateness.append(time.perf_counter() - began - period)


async def test_a_slow_searcher_runs_off_the_loop_and_results_keep_flowing(tmp_path):
    searcher = SlowSearcher()
    lateness: list[float] = []
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(heartbeat, lateness, stop)
        analysis = await tune.arun(reporter, search_alg=ConcurrencyLimiter(searcher, 2),
                                   num_samples=6, local_dir=str(tmp_path), verbose=0,
                                   trial_executor=ScriptedExecutor(slots=2))
        stop.set()
    assert len(analysis.trials) == 6
    assert all(t.last_result["training_iteration"] == 20 for t in analysis.trials)
    # Every searcher call ran in the lane's one thread, none on the loop's.
    assert searcher.threads == {"tune-searcher_0"}
    assert sorted(searcher.completed) == sorted(t.trial_id for t in analysis.trials)
    # Four 0.3 s suggestions happened during the run; the loop never waited for one.
    assert max(lateness) < SLOW_S / 2, f"the loop stalled {max(lateness) * 1000:.0f} ms"


class StatefulSearcher(SlowSearcher):
    """Records the thread of each get_state() call (its pickling grows with the trials)."""

    def __init__(self):
        super().__init__()
        self.state_reads: list[tuple[str, int]] = []

    def get_state(self):
        self.state_reads.append((threading.current_thread().name, len(self.completed)))
        return {"count": self.count}

    def set_state(self, state):
        self.count = state["count"]


async def test_the_final_searcher_state_is_read_off_the_loop(tmp_path):
    # At the end a 200-trial Optuna study's get_state() took 2.4 ms of the loop.
    searcher = StatefulSearcher()
    analysis = await tune.arun(reporter, search_alg=searcher, num_samples=3,
                               local_dir=str(tmp_path), verbose=0,
                               trial_executor=ScriptedExecutor(slots=2))
    assert len(analysis.trials) == 3
    thread, completed = searcher.state_reads[-1]
    assert completed == 3  # read after the last trial completed...
    assert thread != threading.main_thread().name  # ...and not on the loop's thread


class AsyncSearcher(Searcher):
    """suggest() awaits a remote service (here: a sleep on the loop)."""

    def __init__(self, n):
        super().__init__(metric="score", mode="max")
        self.n = n
        self.made = 0
        self.results: list[float] = []

    async def suggest(self, trial_id):
        if self.made >= self.n:
            return None
        await anyio.sleep(0.05)
        self.made += 1
        return {"x": self.made}

    async def on_trial_complete(self, trial_id, result=None, error=False):
        await anyio.lowlevel.checkpoint()
        self.results.append(result["score"])


async def test_an_async_searcher_drives_an_experiment(tmp_path):
    searcher = AsyncSearcher(4)
    analysis = await tune.arun(reporter, search_alg=searcher, num_samples=4,
                               local_dir=str(tmp_path), verbose=0,
                               trial_executor=ScriptedExecutor(slots=2))
    assert sorted(t.config["x"] for t in analysis.trials) == [1, 2, 3, 4]
    assert sorted(searcher.results) == [19 * x for x in (1, 2, 3, 4)]


async def test_a_cancelled_run_keeps_the_suggestions_already_made(tmp_path):
    from tune_async.state import load_state, newest_state_file

    kwargs = dict(num_samples=6, name="exp", local_dir=str(tmp_path), verbose=0)
    with anyio.move_on_after(0.5):
        await tune.arun(reporter, trial_executor=ScriptedExecutor(slots=2),
                        search_alg=ConcurrencyLimiter(SlowSearcher(), 2), **kwargs)
    state = load_state(newest_state_file(str(tmp_path / "exp")))
    ids = [t["trial_id"] for t in state["checkpoints"]]
    made = state["searcher_state"]["counter"] if isinstance(state["searcher_state"],
                                                            dict) else None
    assert ids and (made is None or made == len(ids))
    resumed = await tune.arun(reporter, trial_executor=ScriptedExecutor(slots=2), resume=True,
                              search_alg=ConcurrencyLimiter(SlowSearcher(), 2), **kwargs)
    assert len(resumed.trials) == 6
    assert len({t.trial_id for t in resumed.trials}) == 6


class _Limited:
    """A search algorithm that suggests only while fewer than one trial is live."""

    def __init__(self):
        self.live = 0
        self.calls: list[str] = []

    def next_trial(self):
        self.calls.append("next_trial")
        if self.live:
            return None
        self.live += 1
        return object()

    def is_finished(self):
        return False

    def on_trial_complete(self, trial_id, result=None, error=False):
        self.calls.append("on_trial_complete")
        self.live -= 1


async def test_news_during_a_request_lets_the_searcher_be_asked_again():
    from tune_async.search_lane import SearcherLane, Suggested

    alg = _Limited()
    alg.live = 1
    posted: list = []
    lane = SearcherLane(alg, posted.append)
    lane.request_suggestions(1)
    lane.notify("on_trial_complete", "t1")  # arrives while the request is out
    async with anyio.create_task_group() as tg:
        tg.start_soon(lane.run)
        with anyio.fail_after(5):
            while not posted:
                await anyio.lowlevel.checkpoint()
        assert posted == [Suggested([], False)]
        assert not lane.quiet  # it heard news after the request: ask again
        lane.request_suggestions(1)
        with anyio.fail_after(5):
            while len(posted) < 2:
                await anyio.lowlevel.checkpoint()
        tg.cancel_scope.cancel()
    assert len(posted[1].suggestions) == 1
    assert alg.calls == ["next_trial", "on_trial_complete", "next_trial"]


async def test_variants_made_on_the_loop_come_in_chunks_with_the_loop_running_between(
        tmp_path, monkeypatch):
    import collections

    from tune_async import search_lane
    from tune_async.suggest import BasicVariantGenerator

    beats = 0
    seen = []
    real_next_trial = BasicVariantGenerator.next_trial

    def next_trial(self):
        seen.append(beats)
        return real_next_trial(self)

    monkeypatch.setattr(BasicVariantGenerator, "next_trial", next_trial)

    async def beat():
        nonlocal beats
        while True:
            beats += 1
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(beat)
        analysis = await tune.arun(lambda config: tune.report(x=config["x"]),
                                   config={"x": tune.uniform(0, 1)}, num_samples=300,
                                   local_dir=str(tmp_path), verbose=0,
                                   trial_executor=ScriptedExecutor(slots=1))
        tg.cancel_scope.cancel()
    assert len(analysis.trials) == 300
    # The first request was for all 300 (up to 1,000 wait at once): made 50 at a time,
    # each chunk (and the last call, which says the search is over) at its own beat.
    assert max(collections.Counter(seen).values()) <= search_lane.ON_LOOP_SUGGESTIONS + 1
