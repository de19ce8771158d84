"""1.x module path ``ray.tune.session``: the function API's session calls."""

from tune_async.trainable.session import (
    areport,
    checkpoint_dir,
    get_trial_dir,
    get_trial_id,
    get_trial_name,
    is_session_enabled,
    make_checkpoint_dir,
    report,
    save_checkpoint,
)

__all__ = [
    "areport",
    "checkpoint_dir",
    "get_trial_dir",
    "get_trial_id",
    "get_trial_name",
    "is_session_enabled",
    "make_checkpoint_dir",
    "report",
    "save_checkpoint",
]
