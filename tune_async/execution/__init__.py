"""Executors: where trials run (Ray actors by default)."""

from tune_async.execution.base import BatchLimits, Executor, TrialFailure
from tune_async.execution.local import LocalExecutor
from tune_async.execution.simulated import SimulatedExecutor

__all__ = ["BatchLimits", "Executor", "LocalExecutor", "SimulatedExecutor", "TrialFailure"]
