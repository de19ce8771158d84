"""1.x module path ``ray.tune.utils.trainable`` (``with_parameters`` lives here in 1.3)."""

from tune_async.trainable.with_parameters import with_parameters

__all__ = ["with_parameters"]
