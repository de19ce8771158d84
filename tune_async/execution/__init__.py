"""Executors: where trials run (Ray actors by default)."""

from tune_async._lazy import lazy_attributes
from tune_async.execution.base import BatchLimits, Executor, TrialFailure

# A trial's worker imports this package for its actor module only.
__getattr__, __dir__ = lazy_attributes(__name__, {
    "LocalExecutor": "tune_async.execution.local",
    "SimulatedExecutor": "tune_async.execution.simulated",
})

__all__ = ["BatchLimits", "Executor", "LocalExecutor", "SimulatedExecutor", "TrialFailure"]
