"""ZOOpt searcher: ray.tune 1.x ``suggest.zoopt.ZOOptSearch``.

Needs the optional ``zoopt`` package (``pip install 'tune_async[zoopt]'``); it is
imported when a ZOOptSearch is made.
"""

from __future__ import annotations

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
from tune_async.suggest.suggestion import Searcher
from tune_async.utils.util import unflatten_dict

logger = logging.getLogger(__name__)


def _zoopt() -> Any:
    return import_optional("zoopt", searcher="ZOOptSearch", extra="zoopt", package="zoopt")


class ZOOptSearch(LibrarySearcher):
    """Uses ZOOpt's (asynchronous) sequential RACOS to suggest configurations.

    Args:
        algo: "asracos" (default) or "sracos": both use ZOOpt's SRacosTune.
        budget: The number of samples (required, at least 3).
        dim_dict: A dict of tune Domains (converted), or of ZOOpt dimensions:
            ``(ValueType.CONTINUOUS, [low, high], precision)``,
            ``(ValueType.DISCRETE, [low, high], has_order)`` or
            ``(ValueType.GRID, [values])``. None: take the ``config`` passed to
            ``tune.run``.
        metric: The training result objective value attribute. If None but a mode was
            passed, the anonymous metric ``_metric`` is used.
        mode: One of {min, max}.
        points_to_evaluate: Initial configurations (dicts), ZOOpt's initial samples.
        parallel_num: How many suggestions may be evaluated at once. Defaults to 1.
        **kwargs: Passed on to ZOOpt's SRacosTune.

    Tune's domains become ZOOpt dimensions: uniform floats -> continuous (precision
    ``q`` when quantized), uniform integers -> discrete, choice -> a grid over the
    categories; loguniform domains are searched in log space. randn has no ZOOpt
    dimension (a ValueError naming the key). ZOOpt draws from numpy's global random
    state: seed it with ``np.random.seed`` for reproducible runs.

    Example::

        config = {"width": tune.uniform(0, 20), "height": tune.uniform(-100, 100)}
        zoopt_search = ZOOptSearch(algo="Asracos", budget=20, metric="mean_loss",
                                   mode="min")
        tune.run(my_objective, config=config, search_alg=zoopt_search, num_samples=20)
    """

    _library = "ZOOpt"
    _space_arg = "dim_dict"

    def __init__(
        self,
        algo: str = "asracos",
        budget: int | None = None,
        dim_dict: dict | None = None,
        metric: str | None = None,
        mode: str | None = None,
        points_to_evaluate: list[dict] | None = None,
        parallel_num: int = 1,
        **kwargs: Any,
    ):
        _zoopt()
        if budget is None:
            raise ValueError("ZOOptSearch: `budget` should not be None!")
        if budget < 3:  # ZOOpt itself calls sys.exit() for that
            raise ValueError(f"ZOOptSearch: `budget` must be at least 3, got {budget!r}")
        if str(algo).lower() not in ("sracos", "asracos"):
            raise ValueError(f"ZOOptSearch: `algo` must be 'asracos' or 'sracos', got {algo!r}")
        searcher_kwargs = {k: kwargs.pop(k) for k in ("max_concurrent",
                                                      "use_early_stopped_trials")
                           if k in kwargs}
        super().__init__(metric=metric, mode=mode, points_to_evaluate=points_to_evaluate,
                         **searcher_kwargs)
        self._algo = str(algo).lower()
        self._budget = budget
        self.parallel_num = parallel_num
        self.kwargs = kwargs
        self.optimizer: Any = None
        self._dim_keys: list[str] = []
        self.best_solution_list: list = []
        self._worst: float | None = None  # the worst result, for trials without one
        self._init_space(dim_dict)

    def _parse(self, spec: dict) -> SearchSpace:
        return parse_space(spec, "ZOOptSearch", "ZOOpt")

    # ---- set-up ------------------------------------------------------------------------
    def _setup(self) -> None:
        zoopt = _zoopt()
        from zoopt.algos.opt_algorithms.racos.sracos import SRacosTune

        if isinstance(self._space, SearchSpace):
            self._dim_keys = self._space.names
            dims = [self._dimension(zoopt.ValueType, p) for p in self._space.params]
        else:
            self._dim_keys = list(self._space)
            dims = list(self._space.values())
        init_samples = [zoopt.Solution(x=self._zoopt_point(p))
                        for p in self._points_to_evaluate] or None
        parameter = zoopt.Parameter(budget=self._budget, init_samples=init_samples)
        self.optimizer = SRacosTune(dimension=zoopt.Dimension2(dims), parameter=parameter,
                                    parallel_num=self.parallel_num, **self.kwargs)
        self._points_to_evaluate = []

    def _dimension(self, value_type: Any, param: Param) -> tuple:
        if param.kind == "choice":
            return (value_type.GRID, list(range(len(param.categories))))
        if param.dist == "normal":
            raise unsupported(param, "ZOOptSearch", "ZOOpt", "its dimensions are bounded")
        if param.kind == "int" and not param.log:
            return (value_type.DISCRETE, [int(param.low), int(param.high)], True)
        precision = param.q if param.q is not None and not param.log else 1e-12
        return (value_type.CONTINUOUS, list(param.interval()), precision)

    def _zoopt_point(self, point: dict) -> list:
        if not isinstance(self._space, SearchSpace):
            return [point[k] for k in self._dim_keys]
        flat = self._space.flat_point(point, "ZOOptSearch", complete=True)
        values = []
        for param in self._space.params:
            value = flat[param.name]
            if param.kind == "choice":
                value = param.category_index(value)
            elif param.kind == "float" or param.log:
                value = param.to_interval(value)
            values.append(value)
        return values

    # ---- suggestions -------------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict | str | None:
        self._check_ready()
        solution = self.optimizer.suggest()
        if solution is None and self._initial_phase_done():
            solution = self.optimizer.suggest()
        if isinstance(solution, str) and solution == "FINISHED":
            return Searcher.FINISHED
        if not solution:
            return None
        self._live[trial_id] = solution
        flat = dict(zip(self._dim_keys, solution.get_x(), strict=True))
        if not isinstance(self._space, SearchSpace):
            return unflatten_dict(flat)
        values = {}
        for param in self._space.params:
            x = flat[param.name]
            if param.kind == "choice":
                values[param.name] = param.categories[int(x)]
            elif param.kind == "float" or param.log:
                values[param.name] = param.from_interval(float(x))
            else:
                values[param.name] = param.fix(x)
        return self._space.to_config(values, fix=False)

    def _initial_phase_done(self) -> bool:
        """SRacosTune closes its initial phase at the suggestion after the last initial
        sample, and reopens it when that many results arrived; if they all arrived
        first (one trial at a time), it would wait forever: reopen it then."""
        opt = self.optimizer
        try:
            done = opt.semaphore == 0 and opt.complete_num >= opt._parameter.get_train_size()
        except AttributeError:  # another ZOOpt version: leave it alone
            return False
        if done:
            opt.semaphore = 1
        return done

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        """Tell ZOOpt the metric (negated for mode="max": ZOOpt minimizes). A trial
        without a usable result counts as the worst value seen, so ZOOpt never waits
        for it."""
        solution = self._live.pop(trial_id, None)
        if solution is None:
            return
        loss = None if error else self._objective(result)
        if loss is None:  # the worst value seen (infinity would break its classifier)
            loss = self._worst if self._worst is not None else 0.0
        else:
            self._worst = loss if self._worst is None else max(self._worst, loss)
        best = self.optimizer.complete(solution, loss)
        if best:
            self.best_solution_list.append(best)
