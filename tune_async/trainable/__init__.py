"""Trainables: the class API, the function API (session) and ``with_parameters``."""

from __future__ import annotations

from tune_async.trainable.function_trainable import (
    AsyncFunctionTrainable,
    FunctionTrainable,
    wrap_function,
)
from tune_async.trainable.session import (
    areport,
    checkpoint_dir,
    get_trial_dir,
    get_trial_id,
    get_trial_name,
    is_session_enabled,
    report,
)
from tune_async.trainable.trainable import Trainable, TrialInfo
from tune_async.trainable.with_parameters import with_parameters

__all__ = [
    "AsyncFunctionTrainable",
    "FunctionTrainable",
    "Trainable",
    "TrialInfo",
    "areport",
    "checkpoint_dir",
    "get_trial_dir",
    "get_trial_id",
    "get_trial_name",
    "is_session_enabled",
    "report",
    "with_parameters",
    "wrap_function",
]
