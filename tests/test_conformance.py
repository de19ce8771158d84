"""Every built-in plugin passes the shared conformance suites of tune_async.testing."""

from __future__ import annotations

import gc
from typing import Any

import numpy as np
import pytest

from tune_async.logger import (
    CSVLogger,
    CSVLoggerCallback,
    JsonLogger,
    JsonLoggerCallback,
    LegacyLoggerCallback,
)
from tune_async.progress import TrialProgressCallback
from tune_async.schedulers import FIFOScheduler
from tune_async.search.sample import Domain
from tune_async.search.sample import uniform as tune_uniform
from tune_async.stopper import (
    CombinedStopper,
    ExperimentPlateauStopper,
    FunctionStopper,
    MaximumIterationStopper,
    NoopStopper,
    TimeoutStopper,
    TrialPlateauStopper,
)
from tune_async.suggest import BasicVariantGenerator, ConcurrencyLimiter, Repeater, Searcher
from tune_async.testing import (
    CallbackConformance,
    SearchAlgorithmConformance,
    SearcherConformance,
    StopperConformance,
    TrialSchedulerConformance,
)

# ---- search algorithms ---------------------------------------------------------------


class UniformSearcher(Searcher):
    """Samples every Domain of the search space uniformly (its own numpy Generator)."""

    def __init__(self, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._space: dict | None = None
        self._rng = np.random.default_rng(seed)
        self.completed: list[tuple[str, dict | None, bool]] = []

    def set_search_properties(self, metric, mode, config) -> bool:
        if self._space is not None:
            return False
        self._metric, self._mode, self._space = metric, mode, config
        return True

    def suggest(self, trial_id: str) -> dict:
        return _sample(self._space or {}, self._rng)

    def on_trial_complete(self, trial_id, result=None, error=False) -> None:
        self.completed.append((trial_id, result, error))

    def get_state(self) -> dict:
        return {"rng": self._rng.bit_generator.state, "completed": list(self.completed)}

    def set_state(self, state: dict) -> None:
        self._rng.bit_generator.state = state["rng"]
        self.completed = list(state["completed"])


class AsyncUniformSearcher(UniformSearcher):
    """The same with coroutine hooks (state methods stay sync: the controller calls them so)."""

    async def suggest(self, trial_id: str) -> dict:
        return super().suggest(trial_id)

    async def on_trial_result(self, trial_id, result) -> None:
        pass

    async def on_trial_complete(self, trial_id, result=None, error=False) -> None:
        super().on_trial_complete(trial_id, result, error)


def _sample(space: dict, rng: Any) -> dict:
    out: dict = {}
    for key, value in space.items():
        if isinstance(value, Domain):
            if not value.is_function():  # sample_from: SearchGenerator resolves it
                out[key] = value.sample(random_state=rng)
        elif isinstance(value, dict):
            nested = _sample(value, rng)
            if nested:
                out[key] = nested
    return out


class TestBasicVariantGenerator(SearchAlgorithmConformance):
    def make_search_alg(self):
        return BasicVariantGenerator()


class TestBasicVariantGeneratorSeeded(SearchAlgorithmConformance):
    def make_search_alg(self):
        return BasicVariantGenerator(seed=1234)


class TestBasicVariantGeneratorMaxConcurrent(SearchAlgorithmConformance):
    def make_search_alg(self):
        return BasicVariantGenerator(max_concurrent=2, seed=7)


class TestBasicVariantGeneratorPoints(SearchAlgorithmConformance):
    def make_search_alg(self):
        return BasicVariantGenerator(points_to_evaluate=[{"x": 0.25, "opt": "b"}], seed=3)


class TestSearchGeneratorUniform(SearcherConformance):
    def make_searcher(self):
        return UniformSearcher(seed=0)


class TestSearchGeneratorAsyncSearcher(SearcherConformance):
    def make_searcher(self):
        return AsyncUniformSearcher(seed=0)


class TestConcurrencyLimiter(SearcherConformance):
    def make_searcher(self):
        return ConcurrencyLimiter(UniformSearcher(seed=1), max_concurrent=2)


class TestConcurrencyLimiterBatch(SearcherConformance):
    def make_searcher(self):
        return ConcurrencyLimiter(AsyncUniformSearcher(seed=1), max_concurrent=2, batch=True)


class TestRepeater(SearcherConformance):
    num_samples = 6  # divisible by repeat

    def make_searcher(self):
        return Repeater(UniformSearcher(seed=2), repeat=3)


# ---- schedulers ------------------------------------------------------------------------


class TestFIFOScheduler(TrialSchedulerConformance):
    def make_scheduler(self):
        return FIFOScheduler()


# ---- stoppers ----------------------------------------------------------------------------


class TickingClock:
    """A fake monotonic clock: each reading is one second after the previous one."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


class TestMaximumIterationStopper(StopperConformance):
    def make_stopper(self):
        return MaximumIterationStopper(max_iter=3)


class TestTrialPlateauStopper(StopperConformance):
    def make_stopper(self):
        return TrialPlateauStopper(self.metric, std=0.05, num_results=3, grace_period=3)


class TestTrialPlateauStopperThreshold(StopperConformance):
    def make_stopper(self):
        return TrialPlateauStopper(self.metric, metric_threshold=1.1, mode="min")


class TestExperimentPlateauStopper(StopperConformance):
    def make_stopper(self):
        return ExperimentPlateauStopper(self.metric, std=0.05, top=3, patience=1)


class TestTimeoutStopper(StopperConformance):
    def make_stopper(self):
        return TimeoutStopper(5, clock=TickingClock())


class TestCombinedStopper(StopperConformance):
    def make_stopper(self):
        return CombinedStopper(
            MaximumIterationStopper(max_iter=5),
            TrialPlateauStopper(self.metric),
            TimeoutStopper(100, clock=TickingClock()),
        )


def _stop_late(trial_id: str, result: dict) -> bool:
    return result["training_iteration"] >= 6


class TestFunctionStopper(StopperConformance):
    def make_stopper(self):
        return FunctionStopper(_stop_late)


class TestNoopStopper(StopperConformance):
    def make_stopper(self):
        return NoopStopper()


# ---- callbacks ----------------------------------------------------------------------------


class TestJsonLoggerCallback(CallbackConformance):
    def make_callback(self):
        return JsonLoggerCallback()


class TestCSVLoggerCallback(CallbackConformance):
    def make_callback(self):
        return CSVLoggerCallback()


class TestTrialProgressCallback(CallbackConformance):
    def make_callback(self):
        return TrialProgressCallback(metric=self.metric)


class TestLegacyLoggerCallback(CallbackConformance):
    def make_callback(self):
        return LegacyLoggerCallback([JsonLogger, CSVLogger])


# ---- set-up hooks must be plain methods ------------------------------------------------
#
# set_search_properties (and a search algorithm's add_configurations/get_state/set_state)
# run while tune.run sets the experiment up, before the event loop: `async def` versions
# are refused at the API edge with a TypeError that says so.


def _report_loss(config):
    import tune_async as tune

    tune.report(loss=float(config.get("x", 0.0)))


def _run_scripted(tmp_path, **kwargs):
    import tune_async as tune
    from tests.scripted_executor import ScriptedExecutor

    analysis = tune.run(_report_loss, metric="loss", mode="min", num_samples=1, verbose=0,
                        local_dir=str(tmp_path), trial_executor=ScriptedExecutor(slots=1),
                        **kwargs)
    gc.collect()  # the dropped coroutine warns now, under this test's warning filter
    return analysis


class AsyncPropertiesSearcher(UniformSearcher):
    async def set_search_properties(self, metric, mode, config) -> bool:
        return super().set_search_properties(metric, mode, config)


class AsyncPropertiesFIFOScheduler(FIFOScheduler):
    async def set_search_properties(self, metric, mode) -> bool:
        return super().set_search_properties(metric, mode)


def test_async_searcher_set_search_properties_is_refused_clearly(tmp_path):
    with pytest.raises(TypeError, match="set_search_properties must be a plain method"):
        _run_scripted(tmp_path, search_alg=AsyncPropertiesSearcher(),
                      config={"x": tune_uniform(0.0, 1.0)})
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_async_scheduler_set_search_properties_is_refused_clearly(tmp_path):
    with pytest.raises(TypeError, match="scheduler: .*set_search_properties"):
        _run_scripted(tmp_path, scheduler=AsyncPropertiesFIFOScheduler())
