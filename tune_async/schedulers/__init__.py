"""Trial schedulers (mirrors ``ray.tune.schedulers``).

The schedulers beyond FIFO are imported on first use, so ``import tune_async``
stays light (PB2's model, BOHB's searcher are optional extras).
"""

from __future__ import annotations

import importlib
from typing import Any

from tune_async.schedulers.trial_scheduler import (
    Decision,
    Exploit,
    FIFOScheduler,
    TrialScheduler,
)

_LAZY = {
    "MedianStoppingRule": "median_stopping_rule",
    "AsyncHyperBandScheduler": "async_hyperband",
    "ASHAScheduler": "async_hyperband",
    "HyperBandScheduler": "hyperband",
    "HyperBandForBOHB": "hb_bohb",
    "PopulationBasedTraining": "pbt",
    "PopulationBasedTrainingReplay": "pbt",
    "PB2": "pb2",
}

# create_scheduler's names, as 1.x spells them.
_BY_NAME = {
    "fifo": "FIFOScheduler",
    "async_hyperband": "AsyncHyperBandScheduler",
    "asynchyperband": "AsyncHyperBandScheduler",
    "median_stopping_rule": "MedianStoppingRule",
    "medianstopping": "MedianStoppingRule",
    "hyperband": "HyperBandScheduler",
    "hb_bohb": "HyperBandForBOHB",
    "pbt": "PopulationBasedTraining",
    "pbt_replay": "PopulationBasedTrainingReplay",
    "pb2": "PB2",
}

__all__ = ["Decision", "Exploit", "FIFOScheduler", "TrialScheduler", "create_scheduler",
           *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tune_async.schedulers' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"tune_async.schedulers.{module}"), name)
    globals()[name] = value
    return value


def create_scheduler(scheduler: str, **kwargs: Any) -> TrialScheduler:
    """Instantiate a scheduler by its 1.x name (``"fifo"``, ``"async_hyperband"``, ...)."""
    cls_name = _BY_NAME.get(scheduler)
    if cls_name is None:
        raise ValueError(
            f"The `scheduler` argument must be one of {sorted(_BY_NAME)}. Got: {scheduler}"
        )
    cls = FIFOScheduler if cls_name == "FIFOScheduler" else __getattr__(cls_name)
    return cls(**kwargs)
