"""Utilities (mirrors ``ray.tune.utils``)."""

from tune_async.utils.util import flatten_dict, unflatten_dict

__all__ = ["flatten_dict", "unflatten_dict"]
