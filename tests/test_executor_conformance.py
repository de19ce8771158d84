"""Both executors pass the executor conformance suite of tune_async.testing."""

from __future__ import annotations

import pytest

from tests.scripted_executor import ScriptedExecutor
from tune_async.execution.ray_executor import RayExecutor
from tune_async.testing import ExecutorConformance


class TestScriptedExecutor(ExecutorConformance):
    trials_at_once = 2

    def make_executor(self) -> ScriptedExecutor:
        return ScriptedExecutor(slots=self.trials_at_once)


@pytest.mark.ray
class TestRayExecutor(ExecutorConformance):
    trials_at_once = 2  # the session's Ray instance has 2 CPUs (tests/conftest.py)

    def make_executor(self) -> RayExecutor:
        return RayExecutor()


@pytest.mark.ray
class TestRayExecutorSharedHosts(ExecutorConformance):
    """Async trials packed into shared host actors (trials_per_worker > 1)."""

    trials_at_once = 2
    async_trainables = True

    def make_executor(self) -> RayExecutor:
        return RayExecutor(trials_per_worker=4)
