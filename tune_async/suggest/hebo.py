"""ray.tune 1.x ``suggest.hebo.HEBOSearch``: not available in tune_async.

HEBO 0.3.6 (the newest on PyPI) requires ``numpy<1.25`` (and pins ``pymoo==0.6.0``,
needs torch): it cannot be installed beside numpy 2, which the rest of the stack
(pandas, scikit-learn, Ray) installs today. ``from tune_async.suggest.hebo import
HEBOSearch`` raises an ImportError saying so; the module itself imports.
"""

from __future__ import annotations

from tune_async.suggest._space import unavailable

__getattr__ = unavailable(
    "HEBOSearch",
    "HEBO 0.3.6, its newest release, requires numpy<1.25 and cannot be installed beside "
    "numpy 2 (which pandas, scikit-learn and Ray install today). Use OptunaSearch, "
    "HyperOptSearch or SkOptSearch instead.",
)
