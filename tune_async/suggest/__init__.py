"""Search algorithms: the SearchAlgorithm/Searcher interfaces and the built-in wrappers."""

from __future__ import annotations

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
    "grid_search",
]
