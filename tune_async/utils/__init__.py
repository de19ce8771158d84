"""Utilities (mirrors ``ray.tune.utils``)."""

from tune_async.utils.util import (
    date_str,
    deep_update,
    detect_checkpoint_function,
    detect_config_single,
    detect_reporter,
    diagnose_serialization,
    find_free_port,
    flatten_dict,
    force_on_current_node,
    get_pinned_object,
    merge_dicts,
    pin_in_object_store,
    unflatten_dict,
    unflattened_lookup,
    validate_save_restore,
    warn_if_slow,
)

__all__ = [
    "date_str",
    "deep_update",
    "detect_checkpoint_function",
    "detect_config_single",
    "detect_reporter",
    "diagnose_serialization",
    "find_free_port",
    "flatten_dict",
    "force_on_current_node",
    "get_pinned_object",
    "merge_dicts",
    "pin_in_object_store",
    "unflatten_dict",
    "unflattened_lookup",
    "validate_save_restore",
    "warn_if_slow",
]
