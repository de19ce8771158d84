"""Trial schedulers (mirrors ``ray.tune.schedulers``)."""

from tune_async.schedulers.trial_scheduler import FIFOScheduler, TrialScheduler

__all__ = ["FIFOScheduler", "TrialScheduler"]
