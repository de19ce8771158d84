"""Both executors pass the executor conformance suite of tune_async.testing."""

from __future__ import annotations

import asyncio
import importlib

import pytest

from tests.scripted_executor import ScriptedExecutor
from tune_async.execution.actor import InObjectStore
from tune_async.execution.base import BatchLimits, TrialFailure, launch_key
from tune_async.execution.packed import PACK_FROM, PackedResults, unpack_results
from tune_async.execution.ray_executor import RayExecutor
from tune_async.testing import ExecutorConformance
from tune_async.testing.executor_conformance import _count, _fetch_until
from tune_async.trainable.trainable import Trainable


class TestScriptedExecutor(ExecutorConformance):
    trials_at_once = 2

    def make_executor(self) -> ScriptedExecutor:
        return ScriptedExecutor(slots=self.trials_at_once)


@pytest.mark.ray
class TestRayExecutor(ExecutorConformance):
    trials_at_once = 2  # the session's Ray instance has 2 CPUs (tests/conftest.py)

    def make_executor(self) -> RayExecutor:
        return RayExecutor()

    async def test_a_state_kept_in_memory_stays_in_the_object_store(self, executor, tmp_path):
        # PBT restores a kept state at every perturbation: sent from the driver's loop as
        # bytes, a 1 MB state cost the loop 1.5 ms each time; the reference costs nothing.
        import ray

        trial = await self.started(executor, self.make_trial(tmp_path))
        await _fetch_until(executor, trial, BatchLimits(max_results=2), _count(2))
        saved = await executor.save_to_memory(trial)
        await executor.stop_trial(trial)
        assert isinstance(saved, InObjectStore)
        assert isinstance(ray.get(saved.ref), bytes)  # the trainable's save_to_object
        restored = await self.started(executor, self.make_trial(tmp_path),
                                      checkpoint=("object", saved))
        [result] = await executor.fetch_results(restored, BatchLimits())
        assert (result["training_iteration"], result["total"]) == (3, 1 + 2 + 3)

    async def test_a_large_batch_leaves_the_actor_packed(self, executor, tmp_path):
        # Ray's deserializer, in Ray's thread under the GIL, took 1.6 ms for 570 results.
        trial = await self.started(executor, self.make_trial(tmp_path))
        actor = executor._running[launch_key(trial)].actor
        first = await executor.fetch_results(trial, BatchLimits(max_results=1))  # set up
        sent = await actor.train_batch.remote(BatchLimits(max_results=PACK_FROM * 3), 60.0)
        assert isinstance(sent, PackedResults) and len(sent.chunks) > 1
        results = first + await unpack_results(sent)
        assert [r["training_iteration"] for r in results] == list(range(1, PACK_FROM * 3 + 2))
        few = await actor.train_batch.remote(BatchLimits(max_results=PACK_FROM - 1), 60.0)
        assert type(few) is list and len(few) == PACK_FROM - 1

    async def test_results_holding_object_refs_arrive_usable(self, executor, tmp_path):
        # Only Ray's serializer registers a reference with its owner: such a batch is not
        # packed, and every reference in it still resolves on the driver.
        import ray

        trial = await self.started(executor, self.make_trial(tmp_path), RefReporter)
        batches = await _fetch_until(executor, trial, BatchLimits(max_results=PACK_FROM * 2),
                                     _count(PACK_FROM * 2))
        results = [r for batch in batches for r in batch]
        assert max(len(batch) for batch in batches) >= PACK_FROM
        assert await asyncio.gather(*(r["ref"] for r in results[:PACK_FROM * 2])) == [
            [n] * 3 for n in range(1, PACK_FROM * 2 + 1)]
        assert ray.get(results[0]["ref"]) == [1, 1, 1]

    async def test_a_batch_the_driver_cannot_unpickle_fails_its_trial(self, executor,
                                                                      tmp_path):
        # As Ray's own deserialization error did: the trial fails, the driver goes on.
        trial = await self.started(executor, self.make_trial(tmp_path), DriverCannotLoad)
        with pytest.raises(TrialFailure, match="no_such_module_on_the_driver"):
            await executor.fetch_results(trial, BatchLimits(max_results=PACK_FROM * 2))


class _OnlyInWorker:
    """Unpickles by importing a module the driver does not have."""

    def __reduce__(self):
        return importlib.import_module, ("no_such_module_on_the_driver",)


class DriverCannotLoad(Trainable):
    def step(self) -> dict:
        return {"thing": _OnlyInWorker()}


class RefReporter(Trainable):
    """Reports an object it put into Ray's object store with every result."""

    def step(self) -> dict:
        import ray

        return {"ref": ray.put([self.iteration + 1] * 3)}


@pytest.mark.ray
class TestRayExecutorSharedHosts(ExecutorConformance):
    """Async trials packed into shared host actors (trials_per_worker > 1)."""

    trials_at_once = 2
    async_trainables = True

    def make_executor(self) -> RayExecutor:
        return RayExecutor(trials_per_worker=4)
