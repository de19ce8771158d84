"""1.x module path ``ray.tune.suggest.variant_generator``."""

from tune_async.search.variant_generator import *  # noqa: F403
from tune_async.search.variant_generator import __all__  # noqa: F401
