"""FLAML searchers: ray.tune 1.x ``suggest.flaml.BlendSearch`` and ``CFO``.

Needs the optional ``flaml`` package (BlendSearch also needs ``optuna``:
``pip install 'tune_async[flaml]'``); it is imported when a searcher is made. In 1.x
these names were FLAML's own classes; here each wraps one, with tune_async's search
space Domains converted to FLAML's.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from tune_async.suggest._space import (
    LibrarySearcher,
    Param,
    SearchSpace,
    import_optional,
    parse_space,
    unsupported,
)

logger = logging.getLogger(__name__)

_PLAIN = (str, int, float, bool)
_RETRIES = 50


def _flaml(searcher: str) -> Any:
    return import_optional("flaml", searcher=searcher, extra="flaml", package="flaml")


class _FlamlSearcher(LibrarySearcher):
    _library = "FLAML"
    _flaml_name = ""

    def __init__(self, metric: str | None = None, mode: str | None = None,
                 space: dict | None = None, points_to_evaluate: list[dict] | None = None,
                 evaluated_rewards: list | None = None, **kwargs: Any):
        _flaml(type(self).__name__)
        super().__init__(metric=metric, mode=mode, points_to_evaluate=points_to_evaluate,
                         evaluated_rewards=evaluated_rewards)
        self._kwargs = kwargs
        self._searcher: Any = None
        self._by_index: dict[str, tuple] = {}
        self._init_space(space)

    def _parse(self, spec: dict) -> SearchSpace:
        return parse_space(spec, type(self).__name__, "FLAML")

    def _setup(self) -> None:
        flaml = _flaml(type(self).__name__)
        if not isinstance(self._space, SearchSpace):
            raise TypeError(f"{type(self).__name__}: `space` must be a dict of tune Domains, "
                            f"got {self._space!r}")
        from flaml import tune as flaml_tune

        # FLAML refuses "/" in names (it flattens nested spaces with it).
        space = {_key(p.name): self._domain(flaml_tune, p) for p in self._space.params}
        points = [self._flaml_point(p) for p in self._points_to_evaluate] or None
        kwargs = dict(self._kwargs)
        for key in ("low_cost_partial_config",):
            if kwargs.get(key):
                kwargs[key] = self._flaml_point(kwargs[key], complete=False)
        self._searcher = getattr(flaml, self._flaml_name)(
            metric=self._metric, mode=self._mode, space=space, points_to_evaluate=points,
            evaluated_rewards=self._evaluated_rewards, **kwargs)
        self._points_to_evaluate = []
        self._evaluated_rewards = None

    def _domain(self, ft: Any, param: Param) -> Any:
        if param.kind == "choice":
            if all(isinstance(c, _PLAIN) for c in param.categories):
                return ft.choice(list(param.categories))
            self._by_index[param.name] = param.categories
            return ft.choice(list(range(len(param.categories))))
        if param.dist == "normal":
            raise unsupported(param, type(self).__name__, "FLAML",
                              "its local search needs bounded domains")
        q, base = param.q, param.base
        if param.kind == "float":
            if param.log:
                return (ft.qloguniform(param.low, param.high, q, base) if q
                        else ft.loguniform(param.low, param.high, base))
            return ft.quniform(param.low, param.high, q) if q else ft.uniform(param.low,
                                                                               param.high)
        low, high = int(param.low), int(param.high)
        if param.log:
            return (ft.qlograndint(low, high, q, base) if q
                    else ft.lograndint(low, high + 1, base))
        return ft.qrandint(low, high, q) if q else ft.randint(low, high + 1)

    def _flaml_point(self, point: dict, complete: bool = True) -> dict:
        flat = self._space.flat_point(point, type(self).__name__, complete=complete)
        params = self._space.by_name()
        return {_key(n): params[n].category_index(v) if n in self._by_index else v
                for n, v in flat.items()}

    def suggest(self, trial_id: str) -> dict | str | None:
        self._check_ready()
        # FLAML returns None for a proposal it skips (a duplicate, outside its region) and
        # expects to be asked again, as 1.x's loop did; with nothing running nothing else
        # would ask, so ask again here (a few times).
        for _ in range(1 if self._live else _RETRIES):
            suggested = self._searcher.suggest(trial_id)
            if suggested is not None:
                break
        if suggested is None or isinstance(suggested, str):
            return suggested  # None (not now) or Searcher.FINISHED (same string)
        self._live[trial_id] = suggested
        values = {name.replace("|", "/"): value for name, value in suggested.items()}
        for name, categories in self._by_index.items():
            if name in values:
                values[name] = categories[int(values[name])]
        return self._space.to_config(values)

    def _for_flaml(self, trial_id: str, result: dict | None) -> dict | None:
        if result is None:
            return None
        result = dict(result)
        result["config"] = copy.deepcopy(self._live.get(trial_id, result.get("config")))
        return result

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if self._searcher is not None and trial_id in self._live:
            self._searcher.on_trial_result(trial_id, self._for_flaml(trial_id, result))

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        if self._searcher is None or trial_id not in self._live:
            return
        self._searcher.on_trial_complete(trial_id, self._for_flaml(trial_id, result), error)
        self._live.pop(trial_id, None)


def _key(name: str) -> str:
    return name.replace("/", "|")


class BlendSearch(_FlamlSearcher):
    """FLAML's BlendSearch: a global search (Optuna's TPE) blended with local CFO searches.

    Args:
        metric: The training result objective value attribute.
        mode: One of {min, max}.
        space: A dict of tune Domains. None: take the ``config`` passed to ``tune.run``.
        points_to_evaluate: Initial configurations (dicts) to run first.
        evaluated_rewards: Their results, if already evaluated.
        **kwargs: FLAML's other BlendSearch arguments (``low_cost_partial_config``,
            ``cat_hp_cost``, ``time_budget_s``, ``num_samples``, ``seed``, ...).

    Tune's domains become FLAML's; randn/qrandn cannot be expressed (a ValueError
    naming the key).
    """

    _flaml_name = "BlendSearch"


class CFO(_FlamlSearcher):
    """FLAML's CFO: cost-frugal local search (FLOW2) with random restarts.

    Args: as :class:`BlendSearch`.
    """

    _flaml_name = "CFO"
