"""Conformance suite for executors: the :class:`~tune_async.execution.Executor` contract.

The tests drive an executor the way the controller does, through real
:class:`~tune_async.trial.Trial` records and the small trainables below (they log
every step they execute to a file, so a test can tell exactly what ran). Subclass
:class:`ExecutorConformance` in a test module as ``Test...`` and override
:meth:`~ExecutorConformance.make_executor`::

    class TestMyExecutor(ExecutorConformance):
        trials_at_once = 4  # how many 1-CPU trials fit at once

        def make_executor(self):
            return MyExecutor(slots=4)

Set ``async_trainables = True`` to run every test with the ``async`` twins of those
trainables (``async def step``, an ``async def`` function awaiting ``tune.areport``),
e.g. for an executor that hosts async trials differently (``trials_per_worker``).

Every test runs under a deadline (``timeout_s``), so an executor that hangs fails
the test instead of the session. Needs pytest and pytest-asyncio (or anyio's plugin).
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from tune_async.error import TuneError
from tune_async.execution.base import BatchLimits, TrialFailure
from tune_async.resources import Resources
from tune_async.result import (
    CHECKPOINT_PATH,
    CONFIG,
    DATE,
    DONE,
    EXPERIMENT_ID,
    HOSTNAME,
    PID,
    TIME_THIS_ITER_S,
    TIME_TOTAL_S,
    TIMESTAMP,
    TRAINING_ITERATION,
)
from tune_async.trainable.function_trainable import wrap_function
from tune_async.trainable.session import areport, report
from tune_async.trainable.trainable import Trainable
from tune_async.trial import Trial

__all__ = [
    "BlockingTrainable",
    "CountingFunction",
    "CountingTrainable",
    "ExecutorConformance",
    "FailingSetupTrainable",
]

STEP_FAILURE = "conformance: the trainable raised at step"
SETUP_FAILURE = "conformance: the trainable's setup raised"
AUTOMATIC_FIELDS = (TRAINING_ITERATION, TIME_THIS_ITER_S, TIME_TOTAL_S, TIMESTAMP, DATE,
                    DONE, CONFIG, EXPERIMENT_ID, PID, HOSTNAME)
HOLD_S = 30.0  # how long BlockingTrainable's step waits at most (outlives any deadline)


# ---- trainables (module level: a remote worker imports them by name) ----------------------


def _log_step(config: dict, n: int) -> None:
    """Append step ``n`` to the config's log file: the record of what actually ran."""
    if config.get("log"):
        with open(config["log"], "a") as f:
            f.write(f"{n}\n")


def _counting_result(config: dict, n: int, total: int) -> dict:
    _log_step(config, n)
    if config.get("fail_at") == n:
        raise ValueError(f"{STEP_FAILURE} {n}")
    return {"value": n, "total": total, DONE: config.get("done_at") == n}


class CountingTrainable(Trainable):
    """Step ``n`` reports ``value=n`` and ``total`` (the sum so far, kept by checkpoints).

    Config keys: ``log`` (file every executed step number is appended to),
    ``fail_at`` (step that raises), ``done_at`` (step whose result is ``done``).
    """

    def setup(self, config: dict) -> None:
        self.total = 0

    def step(self) -> dict:
        n = self.iteration + 1
        self.total += n
        return _counting_result(self.config, n, self.total)

    def save_checkpoint(self, checkpoint_dir: str) -> dict:
        return {"total": self.total}

    def load_checkpoint(self, checkpoint: dict) -> None:
        self.total = checkpoint["total"]

    def reset_config(self, new_config: dict) -> bool:
        self.total = 0
        return True


def counting_function(config: dict) -> dict | None:
    """The function-API twin of :class:`CountingTrainable`; returns at ``return_at``."""
    total = 0
    for n in range(1, 10_000):
        total += n
        if config.get("return_at") == n:
            _log_step(config, n)
            return {"returned": n}
        report(**_counting_result(config, n, total))
    return None


CountingFunction = wrap_function(counting_function, warn=False)


class FailingSetupTrainable(Trainable):
    """A trainable whose ``setup`` raises."""

    def setup(self, config: dict) -> None:
        raise RuntimeError(SETUP_FAILURE)

    def step(self) -> dict:  # pragma: no cover - never set up
        return {}


class BlockingTrainable(Trainable):
    """Its step touches ``config["started"]``, then waits for ``config["release"]`` to exist."""

    def step(self) -> dict:
        open(self.config["started"], "w").close()
        deadline = time.monotonic() + HOLD_S
        while not os.path.exists(self.config["release"]) and time.monotonic() < deadline:
            time.sleep(0.01)
        return {}


class AsyncCountingTrainable(CountingTrainable):
    """:class:`CountingTrainable` with an ``async def step``."""

    async def step(self) -> dict:
        await asyncio.sleep(0)
        return CountingTrainable.step(self)


async def async_counting_function(config: dict) -> dict | None:
    """:func:`counting_function` as an ``async def`` reporting with ``tune.areport``."""
    total = 0
    for n in range(1, 10_000):
        total += n
        if config.get("return_at") == n:
            _log_step(config, n)
            return {"returned": n}
        await areport(**_counting_result(config, n, total))
    return None


AsyncCountingFunction = wrap_function(async_counting_function, warn=False)


class AsyncFailingSetupTrainable(FailingSetupTrainable):
    """:class:`FailingSetupTrainable` with an ``async def step``."""

    async def step(self) -> dict:  # pragma: no cover - never set up
        return {}


class AsyncBlockingTrainable(Trainable):
    """:class:`BlockingTrainable` whose step awaits (a stop cancels it there)."""

    async def step(self) -> dict:
        open(self.config["started"], "w").close()
        deadline = time.monotonic() + HOLD_S
        while not os.path.exists(self.config["release"]) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return {}


TRAINABLES = {"class": CountingTrainable, "function": CountingFunction}
ASYNC_TWINS = {CountingTrainable: AsyncCountingTrainable, CountingFunction: AsyncCountingFunction,
               FailingSetupTrainable: AsyncFailingSetupTrainable,
               BlockingTrainable: AsyncBlockingTrainable}


# ---- helpers --------------------------------------------------------------------------


def _bounded(test: Callable) -> Callable:
    """Fail a test that takes longer than ``self.timeout_s`` rather than hang the run."""

    @functools.wraps(test)
    async def wrapper(self: ExecutorConformance, *args: Any, **kwargs: Any) -> None:
        with anyio.fail_after(self.timeout_s):
            await test(self, *args, **kwargs)

    return wrapper


def _executed(log: str) -> list[int]:
    """The step numbers the trainable executed, in order."""
    if not os.path.exists(log):
        return []
    with open(log) as f:
        return [int(line) for line in f if line.strip()]


async def _wait_for_file(path: str) -> None:
    while not os.path.exists(path):
        await anyio.sleep(0.01)


async def _fetch_until(executor: Any, trial: Trial, limits: BatchLimits,
                       done: Callable[[list[dict]], bool]) -> list[list[dict]]:
    """Fetch batches (checking each against the contract) until ``done(all results)``."""
    batches: list[list[dict]] = []
    while not batches or not done([r for b in batches for r in b]):
        batch = await executor.fetch_results(trial, limits)
        assert isinstance(batch, list) and 1 <= len(batch) <= limits.max_results, (
            f"fetch_results must return 1..{limits.max_results} results, got {batch!r}"
        )
        batches.append(batch)
    return batches


def _count(n: int) -> Callable[[list[dict]], bool]:
    return lambda results: len(results) >= n


# ---- the suite --------------------------------------------------------------------------


class ExecutorConformance:
    """Contract checks for an executor (see :class:`~tune_async.execution.base.Executor`).

    Override :meth:`make_executor` (a fresh, not yet set up executor per call) and set
    ``trials_at_once``: how many trials of 1 CPU fit on it at once. Each test sets the
    executor up, runs real trials on it and shuts it down, even when the test fails.
    """

    trials_at_once = 2
    timeout_s = 60.0
    async_trainables = False  # run the tests with the async twins of the trainables

    def trainable_for(self, cls: type) -> type:
        """The trainable a test runs for ``cls`` (its async twin with ``async_trainables``)."""
        return ASYNC_TWINS.get(cls, cls) if self.async_trainables else cls

    def make_executor(self) -> Any:
        """A fresh executor (override)."""
        raise NotImplementedError

    @pytest.fixture
    async def executor(self) -> Any:
        executor = self.make_executor()
        await executor.setup()
        try:
            yield executor
        finally:
            with anyio.CancelScope(shield=True), anyio.fail_after(self.timeout_s):
                await executor.shutdown()

    def make_trial(self, tmp_path: Any, config: dict | None = None,
                   resources: Resources | None = None) -> Trial:
        """A trial with its own logdir under ``tmp_path``; ``log`` in its config names a file."""
        trial = Trial("conformance", config=dict(config or {}), local_dir=str(tmp_path),
                      resources=resources or Resources(cpu=1))
        trial.init_logdir(trial.trial_id)
        trial.config.setdefault("log", os.path.join(trial.logdir, "steps.log"))
        return trial

    async def started(self, executor: Any, trial: Trial, trainable_cls: type = CountingTrainable,
                      reuse: bool = False, checkpoint: Any = None) -> Trial:
        """Reserve and start ``trial`` as the controller does."""
        assert executor.has_resources_for_trial(trial), (
            f"has_resources_for_trial is False for {trial} although there should be room "
            f"({executor.resource_summary()})"
        )
        executor.reserve(trial)
        await executor.start_trial(trial, self.trainable_for(trainable_cls), reuse, checkpoint)
        return trial

    # ---- setup / shutdown -------------------------------------------------------------
    @_bounded
    async def test_shutdown_after_trials_releases_everything(self, tmp_path: Any) -> None:
        executor = self.make_executor()
        await executor.setup()
        try:
            finished = await self.started(executor, self.make_trial(tmp_path))
            await executor.fetch_results(finished, BatchLimits())
            await executor.stop_trial(finished)
            running = await self.started(executor, self.make_trial(tmp_path))
            await executor.fetch_results(running, BatchLimits())
        finally:
            await executor.shutdown()
        await executor.shutdown()  # a second call (cleanup after an error) is harmless
        # Whatever the first executor held is free again: a new one fills up and runs.
        again = self.make_executor()
        await again.setup()
        try:
            trials = [self.make_trial(tmp_path) for _ in range(self.trials_at_once)]
            for trial in trials:
                await self.started(again, trial)
            for trial in trials:
                [result] = await again.fetch_results(trial, BatchLimits())
                assert result[TRAINING_ITERATION] == 1
        finally:
            await again.shutdown()

    # ---- capacity -----------------------------------------------------------------------
    @_bounded
    async def test_check_feasible(self, executor: Any, tmp_path: Any) -> None:
        executor.check_feasible(self.make_trial(tmp_path))  # a normal request passes
        huge = self.make_trial(tmp_path, resources=Resources(cpu=10_000))
        with pytest.raises(TuneError) as info:
            executor.check_feasible(huge)
        assert "10000" in str(info.value), (
            f"check_feasible's error should name the request (10000 CPUs): {info.value}"
        )

    @_bounded
    async def test_reserve_fills_up_and_stop_gives_back(self, executor: Any,
                                                        tmp_path: Any) -> None:
        trials = [self.make_trial(tmp_path) for _ in range(self.trials_at_once)]
        for trial in trials:
            assert executor.has_resources_for_trial(trial)
            executor.reserve(trial)
        extra = self.make_trial(tmp_path)
        assert not executor.has_resources_for_trial(extra), (
            f"{self.trials_at_once} trials are reserved, yet another one fits "
            f"({executor.resource_summary()})"
        )
        # stop_trial releases a reservation whatever start_trial reached (a launch
        # cancelled before it began is released so too).
        await executor.stop_trial(trials[0], in_flight=True)
        assert executor.has_resources_for_trial(extra)

    @_bounded
    async def test_running_trials_fill_up_and_stop_gives_back(self, executor: Any,
                                                              tmp_path: Any) -> None:
        trials = [await self.started(executor, self.make_trial(tmp_path))
                  for _ in range(self.trials_at_once)]
        extra = self.make_trial(tmp_path)
        assert not executor.has_resources_for_trial(extra)
        await executor.fetch_results(trials[0], BatchLimits())
        await executor.stop_trial(trials[0])
        assert executor.has_resources_for_trial(extra)
        await self.started(executor, extra)
        [result] = await executor.fetch_results(extra, BatchLimits())
        assert result[TRAINING_ITERATION] == 1

    # ---- results ------------------------------------------------------------------------
    @pytest.mark.parametrize("kind", TRAINABLES)
    @_bounded
    async def test_results_in_order_with_automatic_fields(self, executor: Any, tmp_path: Any,
                                                          kind: str) -> None:
        trial = await self.started(executor, self.make_trial(tmp_path, {"tag": kind}),
                                   TRAINABLES[kind])
        limits = BatchLimits(max_results=3)
        results: list[dict] = []
        while len(results) < 7:
            allowed = len(results) + limits.max_results
            results += (await _fetch_until(executor, trial, limits, _count(1)))[0]
            assert max(_executed(trial.config["log"])) <= allowed, (
                "the trainable ran more steps than the fetch allowed (max_results)"
            )
        for result in results:
            missing = [k for k in AUTOMATIC_FIELDS if k not in result]
            assert not missing, f"result lacks the automatic fields {missing}: {result}"
            assert result[CONFIG]["tag"] == kind
            assert result[DONE] is False
        assert [r[TRAINING_ITERATION] for r in results] == list(range(1, len(results) + 1))
        assert [r["value"] for r in results] == list(range(1, len(results) + 1))
        times = [r[TIME_TOTAL_S] for r in results]
        assert times == sorted(times), "time_total_s must not decrease"

    @pytest.mark.parametrize("kind", TRAINABLES)
    @_bounded
    async def test_large_batches_arrive_whole_and_in_order(self, executor: Any, tmp_path: Any,
                                                           kind: str) -> None:
        # Hundreds of results per fetch (FIFO, no stop in sight): an executor may carry
        # them any way it likes (the Ray one packs them), they arrive as a list, in order.
        trial = await self.started(executor, self.make_trial(tmp_path), TRAINABLES[kind])
        batches = await _fetch_until(executor, trial, BatchLimits(max_results=300), _count(600))
        results = [r for batch in batches for r in batch]
        assert all(type(r) is dict for r in results)
        assert [r[TRAINING_ITERATION] for r in results] == list(range(1, len(results) + 1))
        assert [r["total"] for r in results] == [n * (n + 1) // 2
                                                 for n in range(1, len(results) + 1)]
        assert _executed(trial.config["log"]) == list(range(1, len(results) + 1))

    @pytest.mark.parametrize("kind", TRAINABLES)
    @_bounded
    async def test_batch_ends_at_stop_criteria(self, executor: Any, tmp_path: Any,
                                               kind: str) -> None:
        trial = await self.started(executor, self.make_trial(tmp_path), TRAINABLES[kind])
        # A metric threshold, then (the trial going on) an iteration count.
        for stop, at in (({"value": 3}, 3), ({TRAINING_ITERATION: 5}, 5)):
            limits = BatchLimits(max_results=100, stop=stop)
            batches = await _fetch_until(executor, trial, limits,
                                         lambda rs, at=at: rs[-1][TRAINING_ITERATION] >= at)
            assert batches[-1][-1][TRAINING_ITERATION] == at, (
                f"the batch must end at the first result meeting stop={stop}, got "
                f"{[r[TRAINING_ITERATION] for r in batches[-1]]}"
            )
            await anyio.sleep(0.2)  # a trainable running ahead would log more by now
            assert _executed(trial.config["log"]) == list(range(1, at + 1)), (
                f"the trainable ran steps past the one meeting stop={stop}"
            )

    @_bounded
    async def test_batch_ends_at_done(self, executor: Any, tmp_path: Any) -> None:
        trial = await self.started(executor, self.make_trial(tmp_path, {"done_at": 2}))
        batches = await _fetch_until(executor, trial, BatchLimits(max_results=100),
                                     lambda rs: rs[-1][DONE])
        assert [r[TRAINING_ITERATION] for r in batches[-1]][-1] == 2
        await anyio.sleep(0.2)
        assert _executed(trial.config["log"]) == [1, 2]

    @_bounded
    async def test_function_return_ends_the_trial(self, executor: Any, tmp_path: Any) -> None:
        trial = await self.started(executor, self.make_trial(tmp_path, {"return_at": 3}),
                                   CountingFunction)
        batches = await _fetch_until(executor, trial, BatchLimits(max_results=100),
                                     lambda rs: rs[-1][DONE])
        results = [r for b in batches for r in b]
        assert [r[DONE] for r in results] == [False, False, True]
        assert results[-1]["returned"] == 3
        assert [r[TRAINING_ITERATION] for r in results] == [1, 2, 3]

    # ---- checkpoints --------------------------------------------------------------------
    @_bounded
    async def test_checkpoint_freq(self, executor: Any, tmp_path: Any) -> None:
        trial = await self.started(executor, self.make_trial(tmp_path))
        limits = BatchLimits(max_results=100, checkpoint_freq=2)
        batches = await _fetch_until(executor, trial, limits, _count(6))
        for batch in batches:
            for i, result in enumerate(batch):
                wanted = result[TRAINING_ITERATION] % 2 == 0
                assert (CHECKPOINT_PATH in result) == wanted, (
                    f"with checkpoint_freq=2, only even iterations carry a checkpoint path: "
                    f"iteration {result[TRAINING_ITERATION]}"
                )
                if wanted:
                    assert os.path.exists(result[CHECKPOINT_PATH])
                    assert i == len(batch) - 1, "a checkpointed result must end its batch"

    @_bounded
    async def test_save_and_restore_from_path(self, executor: Any, tmp_path: Any) -> None:
        first = await self.started(executor, self.make_trial(tmp_path))
        await _fetch_until(executor, first, BatchLimits(max_results=3), _count(3))
        path = await executor.save(first)
        assert isinstance(path, str) and os.path.exists(path), f"save() returned {path!r}"
        await executor.stop_trial(first)
        second = await self.started(executor, self.make_trial(tmp_path),
                                    checkpoint=("path", path))
        [result] = await executor.fetch_results(second, BatchLimits())
        assert result[TRAINING_ITERATION] == 4, "the iteration continues from the checkpoint"
        assert result["total"] == 1 + 2 + 3 + 4, "the trainable's state comes from the checkpoint"

    @_bounded
    async def test_save_to_memory_and_restore(self, executor: Any, tmp_path: Any) -> None:
        trial = await self.started(executor, self.make_trial(tmp_path))
        await _fetch_until(executor, trial, BatchLimits(max_results=2), _count(2))
        saved = await executor.save_to_memory(trial)
        await executor.stop_trial(trial)
        if saved is None:
            pytest.skip("this executor keeps no in-memory checkpoints (save_to_memory is None)")
        await self.started(executor, trial, checkpoint=("object", saved))
        [result] = await executor.fetch_results(trial, BatchLimits())
        assert (result[TRAINING_ITERATION], result["total"]) == (3, 1 + 2 + 3)

    # ---- failures -----------------------------------------------------------------------
    @pytest.mark.parametrize("kind", TRAINABLES)
    @_bounded
    async def test_trainable_error_is_a_trial_failure(self, executor: Any, tmp_path: Any,
                                                      kind: str) -> None:
        trial = await self.started(executor, self.make_trial(tmp_path, {"fail_at": 2}),
                                   TRAINABLES[kind])
        results: list[dict] = []
        with pytest.raises(TrialFailure) as info:
            for _ in range(10):
                results += await executor.fetch_results(trial, BatchLimits(max_results=5))
        assert f"{STEP_FAILURE} 2" in info.value.traceback, (
            f"the failure's traceback must carry the original error: {info.value.traceback!r}"
        )
        assert [r[TRAINING_ITERATION] for r in results] == [1]
        await executor.stop_trial(trial, failed=True)
        assert executor.has_resources_for_trial(self.make_trial(tmp_path))

    @_bounded
    async def test_setup_error_is_a_trial_failure(self, executor: Any, tmp_path: Any) -> None:
        broken = self.make_trial(tmp_path)
        executor.reserve(broken)
        with pytest.raises(TrialFailure) as info:
            # Either call may report it: an executor may send the setup with the first fetch.
            await executor.start_trial(broken, self.trainable_for(FailingSetupTrainable), False)
            await executor.fetch_results(broken, BatchLimits())
        assert SETUP_FAILURE in info.value.traceback
        await executor.stop_trial(broken, failed=True)
        # Its slot is free again: as many trials as ever fit, and they run.
        trials = [await self.started(executor, self.make_trial(tmp_path))
                  for _ in range(self.trials_at_once)]
        for trial in trials:
            [result] = await executor.fetch_results(trial, BatchLimits())
            assert result[TRAINING_ITERATION] == 1

    # ---- stopping -----------------------------------------------------------------------
    @_bounded
    async def test_stop_in_flight_releases(self, executor: Any, tmp_path: Any) -> None:
        started, release = str(tmp_path / "started"), str(tmp_path / "release")
        busy = await self.started(executor, self.make_trial(
            tmp_path, {"started": started, "release": release}), BlockingTrainable)
        scope = anyio.CancelScope()

        async def fetch() -> None:
            with scope:
                await executor.fetch_results(busy, BatchLimits())

        async with anyio.create_task_group() as tg:
            try:
                tg.start_soon(fetch)
                await _wait_for_file(started)
                scope.cancel()  # as the controller does before releasing a running trial
                begun = time.monotonic()
                with anyio.fail_after(10):
                    await executor.stop_trial(busy, in_flight=True)
                assert time.monotonic() - begun < 10, "stop_trial waited for the busy step"
                # Room for as many new trials as fit, while the old step may still run.
                fresh = [await self.started(executor, self.make_trial(tmp_path))
                         for _ in range(self.trials_at_once)]
                for trial in fresh:
                    [result] = await executor.fetch_results(trial, BatchLimits())
                    assert result[TRAINING_ITERATION] == 1
            finally:
                open(release, "w").close()  # an in-process step can only end by itself

    @pytest.mark.parametrize("kind", TRAINABLES)
    @_bounded
    async def test_next_trials_start_fresh(self, executor: Any, tmp_path: Any,
                                           kind: str) -> None:
        # Warm workers (or instances, with reuse=True) hold nothing of an earlier trial.
        for round_, reuse in enumerate((False, True, True, False)):
            trials = [await self.started(executor, self.make_trial(tmp_path, {"round": round_}),
                                         TRAINABLES[kind], reuse)
                      for _ in range(self.trials_at_once)]
            for trial in trials:
                batches = await _fetch_until(executor, trial, BatchLimits(max_results=2),
                                             _count(2))
                results = [r for b in batches for r in b]
                assert [r[TRAINING_ITERATION] for r in results] == [1, 2]
                assert [r["total"] for r in results] == [1, 3], "counters start afresh"
                assert {r[CONFIG]["round"] for r in results} == {round_}
            for trial in trials:
                await executor.stop_trial(trial)
