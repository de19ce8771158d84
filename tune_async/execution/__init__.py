"""Executors: where trials run (Ray actors by default)."""

from tune_async.execution.base import BatchLimits, Executor, TrialFailure
from tune_async.execution.local import LocalExecutor

__all__ = ["BatchLimits", "Executor", "LocalExecutor", "TrialFailure"]
