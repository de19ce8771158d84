"""ray.tune 1.x ``suggest.dragonfly.DragonflySearch``: not available in tune_async.

dragonfly-opt 0.1.7 (2022, unmaintained) ships only a source distribution whose build
needs numpy at build time and a Fortran compiler, and its code uses ``np.int``/``np.bool``,
removed in numpy 1.24 (dragonfly/dragonfly#96, open). ``from tune_async.suggest.dragonfly
import DragonflySearch`` raises an ImportError saying so; the module itself imports.
"""

from __future__ import annotations

from tune_async.suggest._space import unavailable

__getattr__ = unavailable(
    "DragonflySearch",
    "dragonfly-opt 0.1.7, its newest release (2022, unmaintained), does not build on "
    "today's Python/numpy and uses np.int/np.bool, removed in numpy 1.24. Use "
    "OptunaSearch, HyperOptSearch or BayesOptSearch instead.",
)
