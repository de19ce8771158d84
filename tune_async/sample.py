"""1.x module path ``ray.tune.sample``: the search-space primitives."""

from tune_async.search.sample import *  # noqa: F403
from tune_async.search.sample import __all__  # noqa: F401
