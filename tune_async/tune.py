"""1.x module path ``ray.tune.tune``: the entry points (plus their awaitable forms)."""

from tune_async.api import arun, arun_experiments, run, run_experiments

__all__ = ["arun", "arun_experiments", "run", "run_experiments"]
