"""Executors: where trials run (Ray actors by default)."""

from tune_async.execution.base import BatchLimits, Executor, TrialFailure

__all__ = ["BatchLimits", "Executor", "TrialFailure"]
