"""Nevergrad searcher: ray.tune 1.x ``suggest.nevergrad.NevergradSearch``.

Needs the optional ``nevergrad`` package (``pip install 'tune_async[nevergrad]'``); it is
imported when a NevergradSearch is made.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from typing import Any

from tune_async.suggest._space import (
    LibrarySearcher,
    Param,
    SearchSpace,
    import_optional,
    parse_space,
)
from tune_async.utils.util import unflatten_dict

logger = logging.getLogger(__name__)


def _nevergrad() -> Any:
    return import_optional("nevergrad", searcher="NevergradSearch", extra="nevergrad",
                           package="nevergrad")


class NevergradSearch(LibrarySearcher):
    """Uses a `Nevergrad <https://github.com/facebookresearch/nevergrad>`_ optimizer to
    suggest configurations.

    Args:
        optimizer: A Nevergrad optimizer class or configured optimizer (e.g.
            ``ng.optimizers.OnePlusOne``), made for the space; or an optimizer instance
            (then ``space`` is None or the list of its parameter names).
        space: A dict of tune Domains (converted) or a Nevergrad parametrization. None:
            take the ``config`` passed to ``tune.run``.
        metric: The training result objective value attribute. If None but a mode was
            passed, the anonymous metric ``_metric`` is used.
        mode: One of {min, max}.
        points_to_evaluate: Initial configurations (dicts) to run first.
        max_concurrent: Deprecated: use a ConcurrencyLimiter (still honoured).
        seed: (tune_async) Seed for the parametrization's random state, when the
            optimizer is made here. Default None.

    Tune's domains become parameters: floats -> ``Scalar`` (``Log`` for loguniform),
    integers -> ``Scalar``/``Log`` with integer casting, randn -> an unbounded ``Scalar``
    starting at the mean with the standard deviation as its step, choice -> ``Choice``;
    quantized values are rounded to ``q`` when suggested.

    Example::

        import nevergrad as ng
        config = {"width": tune.uniform(0, 20), "height": tune.uniform(-100, 100)}
        ng_search = NevergradSearch(optimizer=ng.optimizers.OnePlusOne, metric="loss",
                                    mode="min")
        tune.run(my_trainable, config=config, search_alg=ng_search)
    """

    _library = "Nevergrad"

    def __init__(
        self,
        optimizer: Any = None,
        space: Any = None,
        metric: str | None = None,
        mode: str | None = None,
        points_to_evaluate: list[dict] | None = None,
        max_concurrent: int | None = None,
        *,
        seed: int | None = None,
        **kwargs: Any,
    ):
        ng = _nevergrad()
        if points_to_evaluate is not None and not isinstance(points_to_evaluate, Sequence):
            raise ValueError("Invalid object type passed for `points_to_evaluate`: "
                             f"{type(points_to_evaluate)}. Please pass a list of points "
                             "(dictionaries) instead.")
        super().__init__(metric=metric, mode=mode, points_to_evaluate=points_to_evaluate,
                         max_concurrent=max_concurrent, **kwargs)
        self.max_concurrent = max_concurrent
        self._seed = seed
        self._opt_factory: Any = None
        self._nevergrad_opt: Any = None
        self._parameters: list[str] | None = None
        if isinstance(optimizer, ng.optimizers.base.Optimizer):
            if space is not None and not isinstance(space, list):
                raise ValueError("If you pass a configured optimizer to Nevergrad, either "
                                 "pass a list of parameter names or None as the `space` "
                                 "parameter.")
            self._nevergrad_opt = optimizer
            self._parameters = space
            space = optimizer.parametrization
        elif (inspect.isclass(optimizer) and issubclass(optimizer, ng.optimizers.base.Optimizer)
              ) or isinstance(optimizer, ng.optimizers.base.ConfiguredOptimizer):
            self._opt_factory = optimizer
        else:
            raise ValueError("The `optimizer` argument passed to NevergradSearch must be "
                             "either an `Optimizer` or a `ConfiguredOptimizer`, got "
                             f"{optimizer!r}.")
        self._init_space(space)

    def _parse(self, spec: dict) -> SearchSpace:
        return parse_space(spec, "NevergradSearch", "Nevergrad")

    # ---- set-up ------------------------------------------------------------------------
    def _setup(self) -> None:
        ng = _nevergrad()
        if self._nevergrad_opt is None:
            if isinstance(self._space, SearchSpace):
                parametrization = ng.p.Dict(**{p.name: self._parameter(ng, p)
                                               for p in self._space.params})
            else:
                parametrization = self._space
            if self._seed is not None:
                parametrization.random_state.seed(self._seed)
            self._nevergrad_opt = self._opt_factory(parametrization)
        if self._parameters is not None and \
                self._nevergrad_opt.dimension != len(self._parameters):
            raise ValueError("len(parameters_names) must match optimizer dimension for "
                             "non-instrumented optimizers")
        # Nevergrad asks for suggested points last-in first-out: suggest them reversed.
        for point in reversed(self._points_to_evaluate):
            self._nevergrad_opt.suggest(self._nevergrad_point(point))
        self._points_to_evaluate = []

    def _parameter(self, ng: Any, param: Param) -> Any:
        if param.kind == "choice":
            return ng.p.Choice(list(range(len(param.categories))))
        if param.dist == "normal":
            return ng.p.Scalar(init=param.mean).set_mutation(sigma=param.sd)
        if param.log:
            scalar = ng.p.Log(lower=param.low, upper=param.high)
        else:
            scalar = ng.p.Scalar(lower=param.low, upper=param.high)
        return scalar.set_integer_casting() if param.kind == "int" else scalar

    def _nevergrad_point(self, point: dict) -> Any:
        if not isinstance(self._space, SearchSpace):
            if self._parameters:
                return [point[n] for n in self._parameters]
            return point
        flat = self._space.flat_point(point, "NevergradSearch", complete=True)
        params = self._space.by_name()
        return {n: params[n].category_index(v) if params[n].kind == "choice" else v
                for n, v in flat.items()}

    # ---- suggestions -------------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict | None:
        self._check_ready()
        if self.max_concurrent and len(self._live) >= self.max_concurrent:
            return None
        candidate = self._nevergrad_opt.ask()
        self._live[trial_id] = candidate
        if isinstance(self._space, SearchSpace):
            flat = dict(candidate.value)
            for param in self._space.params:
                if param.kind == "choice":
                    flat[param.name] = param.categories[int(flat[param.name])]
            return self._space.to_config(flat)
        if candidate.kwargs:
            return unflatten_dict(dict(candidate.kwargs))
        if self._parameters:
            return unflatten_dict(dict(zip(self._parameters, candidate.args[0], strict=True)))
        return unflatten_dict(dict(candidate.value))

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        """Tell Nevergrad the metric (negated for mode="max": Nevergrad minimizes)."""
        candidate = self._live.pop(trial_id, None)
        loss = self._objective(result)
        if candidate is not None and loss is not None and not error:
            self._nevergrad_opt.tell(candidate, loss)
