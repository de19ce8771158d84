"""1.x module path ``ray.tune.function_runner``: wrapping training functions."""

from tune_async.trainable.function_trainable import FunctionTrainable, wrap_function
from tune_async.trainable.with_parameters import with_parameters

# 1.x's name for the Trainable that runs a function.
FunctionRunner = FunctionTrainable

__all__ = ["FunctionRunner", "with_parameters", "wrap_function"]
