"""ray.tune 1.x ``suggest.ax.AxSearch``: not available in tune_async yet.

ax-platform 1.x installs on Python 3.11, but with torch and BoTorch (several GB with the
CUDA wheels PyPI serves) and a changed client API; the integration has not been built
and tested yet. ``from tune_async.suggest.ax import AxSearch`` raises an ImportError
saying so; the module itself imports.
"""

from __future__ import annotations

from tune_async.suggest._space import unavailable

__getattr__ = unavailable(
    "AxSearch",
    "the Ax integration is not implemented yet (ax-platform 1.x installs, with torch and "
    "BoTorch, but has not been wrapped and tested). Use OptunaSearch, HyperOptSearch or "
    "SkOptSearch instead.",
)
