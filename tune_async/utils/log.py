"""1.x module path ``ray.tune.utils.log``."""

from tune_async.progress import Verbosity

__all__ = ["Verbosity"]
