"""Executors: where trials run (Ray actors by default)."""

from tune_async.execution.base import Executor, TrialFailure

__all__ = ["Executor", "TrialFailure"]
