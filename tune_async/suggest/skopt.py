"""scikit-optimize searcher: ray.tune 1.x ``suggest.skopt.SkOptSearch``.

Needs the optional ``scikit-optimize`` package (``pip install 'tune_async[skopt]'``); it
is imported when a SkOptSearch is made.
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
from tune_async.utils.util import unflatten_dict

logger = logging.getLogger(__name__)

_PLAIN = (str, int, float, bool)


def _skopt() -> Any:
    return import_optional("skopt", searcher="SkOptSearch", extra="skopt",
                           package="scikit-optimize")


class SkOptSearch(LibrarySearcher):
    """Uses scikit-optimize's ``Optimizer`` (a Gaussian process by default) to suggest
    configurations.

    Args:
        optimizer: A ``skopt.Optimizer`` instance (then ``space`` is the list of its
            parameter names, in the order of its dimensions). None: one is made from
            the space with skopt's defaults.
        space: A dict of tune Domains (converted), a dict of skopt dimensions or
            dimension specs (``(low, high)``, a list of categories), or, with an
            ``optimizer``, a list of parameter names. None: take the ``config`` passed
            to ``tune.run``.
        metric: The training result objective value attribute. If None but a mode was
            passed, the anonymous metric ``_metric`` is used.
        mode: One of {min, max}.
        points_to_evaluate: Initial configurations (dicts) to run first.
        evaluated_rewards: The results of ``points_to_evaluate`` if they were already
            evaluated: they are told to the optimizer instead of being run.
        max_concurrent: Deprecated: use a ConcurrencyLimiter (still honoured).
        use_early_stopped_trials: Deprecated.

    Tune's domains become skopt dimensions: floats -> ``Real`` (log-uniform prior for
    loguniform), integers -> ``Integer`` (bounds inclusive), choice -> ``Categorical``;
    quantized domains are modelled unquantized and rounded to ``q`` when suggested;
    randn/qrandn have no skopt dimension (a ValueError naming the key).

    Example::

        config = {"width": tune.uniform(0, 20), "height": tune.uniform(-100, 100)}
        tune.run(my_func, config=config, search_alg=SkOptSearch(metric="loss", mode="min"))
    """

    _library = "scikit-optimize"

    def __init__(
        self,
        optimizer: Any = None,
        space: list | dict | None = None,
        metric: str | None = None,
        mode: str | None = None,
        points_to_evaluate: list[dict] | None = None,
        evaluated_rewards: list | None = None,
        max_concurrent: int | None = None,
        use_early_stopped_trials: bool | None = None,
    ):
        sko = _skopt()
        super().__init__(metric=metric, mode=mode, points_to_evaluate=points_to_evaluate,
                         evaluated_rewards=evaluated_rewards, max_concurrent=max_concurrent,
                         use_early_stopped_trials=use_early_stopped_trials)
        self.max_concurrent = max_concurrent
        if optimizer is not None and not isinstance(optimizer, sko.Optimizer):
            raise TypeError(f"SkOptSearch: `optimizer` must be a skopt.Optimizer, got "
                            f"{optimizer!r}")
        if optimizer is not None and not isinstance(space, (list, tuple)):
            raise ValueError("You passed an optimizer instance to SkOpt. Your `space` "
                             "parameter should be a list of parameter names.")
        if optimizer is not None and len(space) != len(optimizer.space.dimensions):
            raise ValueError(f"SkOptSearch: `space` names {len(space)} parameters, the "
                             f"optimizer has {len(optimizer.space.dimensions)} dimensions")
        self._skopt_opt = optimizer
        self._names: list[str] = []
        self._by_index: dict[str, tuple] = {}  # name -> categories sampled by index
        self._initial: list[list] = []
        self._pending: list[tuple[list, float]] = []  # results not told yet
        if optimizer is not None:
            self._init_space(list(space))
        else:
            self._init_space(space)

    def _parse(self, spec: dict) -> SearchSpace:
        return parse_space(spec, "SkOptSearch", "scikit-optimize")

    # ---- set-up ------------------------------------------------------------------------
    def _setup(self) -> None:
        sko = _skopt()
        if isinstance(self._space, SearchSpace):
            self._names = self._space.names
            dimensions = [self._dimension(sko, p) for p in self._space.params]
        elif isinstance(self._space, dict):
            self._names = list(self._space)
            dimensions = list(self._space.values())
        else:
            self._names = list(self._space)
            dimensions = None
        if self._skopt_opt is None:
            self._skopt_opt = sko.Optimizer(dimensions)
        points = [self._skopt_point(p) for p in self._points_to_evaluate]
        if points and self._evaluated_rewards:
            self._skopt_opt.tell(points, [self._sign() * float(r)
                                          for r in self._evaluated_rewards])
        else:
            self._initial = points
        self._points_to_evaluate = []
        self._evaluated_rewards = None

    def _dimension(self, sko: Any, param: Param) -> Any:
        space = sko.space
        if param.kind == "choice":
            if all(isinstance(c, _PLAIN) for c in param.categories) and len(
                    {type(c) for c in param.categories}) == 1:
                return space.Categorical(list(param.categories), name=param.name)
            self._by_index[param.name] = param.categories
            return space.Categorical(list(range(len(param.categories))), name=param.name)
        if param.dist == "normal":
            raise unsupported(param, "SkOptSearch", "scikit-optimize",
                              "it has no normal prior; use tune.uniform with bounds")
        prior = "log-uniform" if param.log else "uniform"
        if param.kind == "float":
            return space.Real(param.low, param.high, prior=prior, base=param.base,
                              name=param.name)
        return space.Integer(int(param.low), int(param.high), prior=prior, base=param.base,
                             name=param.name)

    def _skopt_point(self, point: dict | list) -> list:
        if isinstance(point, (list, tuple)):  # 1.x: a list of values, in order
            point = dict(zip(self._names, point, strict=True))
        if isinstance(self._space, SearchSpace):
            flat = self._space.flat_point(point, "SkOptSearch", complete=True)
            params = self._space.by_name()
            return [params[n].category_index(flat[n]) if n in self._by_index else flat[n]
                    for n in self._names]
        missing = [n for n in self._names if n not in point]
        if missing:
            raise ValueError(f"SkOptSearch: a point of points_to_evaluate lacks {missing}")
        return [point[n] for n in self._names]

    # ---- suggestions -------------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict | None:
        self._check_ready()
        if self.max_concurrent and len(self._live) >= self.max_concurrent:
            return None
        self._tell_pending()
        values = self._initial.pop(0) if self._initial else self._skopt_opt.ask()
        self._live[trial_id] = list(values)
        flat = dict(zip(self._names, values, strict=True))
        if not isinstance(self._space, SearchSpace):
            return unflatten_dict({k: _native(v) for k, v in flat.items()})
        for name, categories in self._by_index.items():
            flat[name] = categories[int(flat[name])]
        return self._space.to_config(flat)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        """Tell skopt the metric (negated for mode="max": skopt minimizes); NaN, inf or a
        missing metric is not told."""
        values = self._live.pop(trial_id, None)
        loss = self._objective(result)
        if values is not None and loss is not None and not error:
            self._pending.append((values, loss))

    def _tell_pending(self) -> None:
        """Results are told at the next suggestion, all at once: one model fit for a
        batch of completions (the fit is what costs)."""
        if self._pending:
            points, losses = zip(*self._pending, strict=True)
            self._pending = []
            self._skopt_opt.tell(list(points), list(losses))


def _native(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
