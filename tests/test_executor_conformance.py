"""Both executors pass the executor conformance suite of tune_async.testing."""

from __future__ import annotations

import pytest

from tests.scripted_executor import ScriptedExecutor
from tune_async.execution.actor import InObjectStore
from tune_async.execution.base import BatchLimits
from tune_async.execution.ray_executor import RayExecutor
from tune_async.testing import ExecutorConformance
from tune_async.testing.executor_conformance import _count, _fetch_until


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


@pytest.mark.ray
class TestRayExecutorSharedHosts(ExecutorConformance):
    """Async trials packed into shared host actors (trials_per_worker > 1)."""

    trials_at_once = 2
    async_trainables = True

    def make_executor(self) -> RayExecutor:
        return RayExecutor(trials_per_worker=4)
