"""Search algorithms: the SearchAlgorithm/Searcher interfaces and the built-in wrappers."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from tune_async.search.sample import grid_search
from tune_async.suggest.basic_variant import BasicVariantGenerator
from tune_async.suggest.repeater import Repeater
from tune_async.suggest.search import SearchAlgorithm, TrialSuggestion
from tune_async.suggest.search_generator import SearchGenerator
from tune_async.suggest.suggestion import ConcurrencyLimiter, Searcher

__all__ = [
    "BasicVariantGenerator",
    "ConcurrencyLimiter",
    "Repeater",
    "SearchAlgorithm",
    "SearchGenerator",
    "Searcher",
    "TrialSuggestion",
    "create_searcher",
    "grid_search",
]

# create_searcher's names, as 1.x spells them -> (module, class), imported when asked for.
_SEARCHERS = {
    "variant_generator": ("basic_variant", "BasicVariantGenerator"),
    "random": ("basic_variant", "BasicVariantGenerator"),
    "ax": ("ax", "AxSearch"),
    "dragonfly": ("dragonfly", "DragonflySearch"),
    "skopt": ("skopt", "SkOptSearch"),
    "hyperopt": ("hyperopt", "HyperOptSearch"),
    "bayesopt": ("bayesopt", "BayesOptSearch"),
    "bohb": ("bohb", "TuneBOHB"),
    "nevergrad": ("nevergrad", "NevergradSearch"),
    "optuna": ("optuna", "OptunaSearch"),
    "zoopt": ("zoopt", "ZOOptSearch"),
    "hebo": ("hebo", "HEBOSearch"),
    "blendsearch": ("flaml", "BlendSearch"),
    "cfo": ("flaml", "CFO"),
}


def create_searcher(search_alg: str, **kwargs: Any) -> Any:
    """Instantiate a search algorithm by its 1.x name (``"hyperopt"``, ``"optuna"``, ...).

    Keyword arguments the searcher's constructor does not accept are dropped, as in 1.x.

    Raises:
        ValueError: an unknown name.
        ImportError: the searcher's library is missing, or the searcher is not available.
    """
    if search_alg not in _SEARCHERS:
        raise ValueError(
            f"The `search_alg` argument must be one of {sorted(_SEARCHERS)}. Got: {search_alg}"
        )
    module, name = _SEARCHERS[search_alg]
    cls = getattr(importlib.import_module(f"tune_async.suggest.{module}"), name)
    parameters = inspect.signature(cls).parameters.values()
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        names = {p.name for p in parameters}
        kwargs = {k: v for k, v in kwargs.items() if k in names}
    return cls(**kwargs)
