"""Ax searcher: ray.tune 1.x ``suggest.ax.AxSearch``.

Needs the optional ``ax-platform`` package (``pip install 'tune_async[ax]'``), which
brings torch and BoTorch; it is imported when an AxSearch is made. Built on Ax's
Service API (``ax.service.ax_client.AxClient``, the class 1.x's ``ax_client`` argument
takes), tested with ax-platform 1.3 on the CPU build of torch. Ax 1.x marks AxClient as
deprecated (to be removed in Ax 1.4, hence the extra's upper bound); the deprecation
warning is silenced where this module makes the client.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

from tune_async.suggest._space import (
    LibrarySearcher,
    Param,
    SearchSpace,
    has_domains,
    import_optional,
    parse_space,
    unsupported,
)
from tune_async.utils.util import flatten_dict, unflatten_dict

logger = logging.getLogger(__name__)

# Ax parameter values are plain: a choice of other values is sampled by index.
_VALUE_TYPES = {bool: "bool", str: "str", int: "int", float: "float"}


def _ax_client_module() -> Any:
    return import_optional("ax.service.ax_client", searcher="AxSearch", extra="ax",
                           package="ax-platform")


def _no_suggestion_errors() -> tuple:
    """Ax's 'not now' exceptions: too many trials pending, or data needed first."""
    from ax.exceptions.core import DataRequiredError
    from ax.exceptions.generation_strategy import MaxParallelismReachedException

    return (MaxParallelismReachedException, DataRequiredError)


def _has_experiment(client: Any) -> bool:
    return getattr(client, "_experiment", None) is not None


class AxSearch(LibrarySearcher):
    """Uses `Ax <https://ax.dev/>`_ (Bayesian optimization with BoTorch) to optimize
    hyperparameters.

    Args:
        space: A dict of tune Domains (converted), or a list of Ax parameter dicts
            (``{"name": ..., "type": "range" | "choice" | "fixed", "bounds": [lo, hi],
            "values": [...], "value": ...}``; ``"a/b"`` names become nested keys).
            None: take the ``config`` passed to ``tune.run``.
        metric: The training result objective value attribute. If None but a mode was
            passed, the anonymous metric ``_metric`` is used.
        mode: One of {min, max}.
        points_to_evaluate: Initial configurations (dicts) to run first (attached to
            the Ax experiment as trials).
        parameter_constraints: Ax parameter constraints, e.g. ``["x3 >= x4"]``.
        outcome_constraints: Ax outcome constraints, e.g. ``["m1 <= 3.0"]``; every
            metric they name must be in the trial's last result.
        ax_client: An ``AxClient``. If it already holds an experiment, do not pass
            ``space``, ``parameter_constraints`` or ``outcome_constraints``; metric and
            mode are read from its objective.
        **ax_kwargs: Passed to ``AxClient(...)`` when AxSearch makes the client (e.g.
            ``random_seed``, ``generation_strategy``,
            ``enforce_sequential_optimization``). ``verbose_logging`` defaults to False
            here. The deprecated ``max_concurrent`` and ``use_early_stopped_trials``
            are taken out and honoured as by the other searchers.

    Tune's domains become Ax parameters: uniform/loguniform -> float ``range``
    (``log_scale``), randint/lograndint -> int ``range`` (bounds inclusive), choice ->
    unordered ``choice``, a one-value domain -> ``fixed``. Quantized domains are modelled
    unquantized and rounded to ``q`` when suggested; randn/qrandn have no Ax parameter (a
    ValueError naming the key). Constants of the config are merged into each suggestion.

    Example::

        config = {"x1": tune.uniform(0, 1), "x2": tune.uniform(0, 1)}
        tune.run(easy_objective, config=config,
                 search_alg=AxSearch(metric="score", mode="max"))
    """

    _library = "Ax"

    def __init__(
        self,
        space: dict | list[dict] | None = None,
        metric: str | None = None,
        mode: str | None = None,
        points_to_evaluate: list[dict] | None = None,
        parameter_constraints: list | None = None,
        outcome_constraints: list | None = None,
        ax_client: Any = None,
        **ax_kwargs: Any,
    ):
        axc = _ax_client_module()
        max_concurrent = ax_kwargs.pop("max_concurrent", None)
        use_early_stopped_trials = ax_kwargs.pop("use_early_stopped_trials", None)
        if isinstance(mode, list) or isinstance(metric, list):
            raise ValueError("AxSearch optimizes a single objective: `metric` and `mode` "
                             "must be a str each (use outcome_constraints for others)")
        super().__init__(metric=metric, mode=mode, points_to_evaluate=points_to_evaluate,
                         max_concurrent=max_concurrent,
                         use_early_stopped_trials=use_early_stopped_trials)
        self.max_concurrent = max_concurrent
        if ax_client is not None and not isinstance(ax_client, axc.AxClient):
            raise TypeError(f"AxSearch: `ax_client` must be an ax AxClient, got {ax_client!r}")
        if space is not None and not isinstance(space, (dict, list, tuple)):
            raise TypeError("AxSearch: `space` must be a dict of tune Domains or a list of "
                            f"Ax parameter dicts, got {space!r}")
        if isinstance(space, dict) and space and not has_domains(space):
            raise TypeError("AxSearch: `space` is a dict without tune Domains: pass tune "
                            "Domains (tune.uniform, ...) or a list of Ax parameter dicts")
        if isinstance(space, (list, tuple)):
            space = self._checked_ax_parameters(space) or None
        self._ax = ax_client
        self._ax_kwargs = dict(ax_kwargs)
        self._parameter_constraints = list(parameter_constraints or [])
        self._outcome_constraints = list(outcome_constraints or [])
        self._names: list[str] = []
        self._by_index: dict[str, tuple] = {}  # name -> categories sampled by index
        self._initial: list[dict] = []
        if ax_client is not None and _has_experiment(ax_client):
            if space or parameter_constraints or outcome_constraints:
                raise ValueError(
                    "If you create the Ax experiment yourself, do not pass values for "
                    "these parameters to `AxSearch`: ['space', 'parameter_constraints', "
                    "'outcome_constraints']."
                )
            self._adopt_experiment(metric, mode)
            self._init_space(list(ax_client.experiment.parameters))
        else:
            self._init_space(space)

    @staticmethod
    def _checked_ax_parameters(space: list | tuple) -> list[dict]:
        if not all(isinstance(p, dict) and "name" in p and "type" in p for p in space):
            raise TypeError("AxSearch: a list `space` must hold Ax parameter dicts with a "
                            f"'name' and a 'type', got {space!r}")
        return [dict(p) for p in space]

    def _adopt_experiment(self, metric: str | None, mode: str | None) -> None:
        """metric/mode of an AxClient's own experiment (a conflicting one is an error)."""
        objective = self._ax.experiment.optimization_config.objective
        if not objective.is_single_objective:
            raise ValueError("AxSearch supports single-objective Ax experiments only")
        exp_metric = objective.metric_names[0]
        exp_mode = "min" if objective.minimize else "max"
        if metric is not None and metric != exp_metric:
            raise ValueError(f"AxSearch: metric={metric!r}, but the Ax experiment of "
                             f"`ax_client` optimizes {exp_metric!r}")
        if mode is not None and mode != exp_mode:
            raise ValueError(f"AxSearch: mode={mode!r}, but the Ax experiment of "
                             f"`ax_client` has mode {exp_mode!r}")
        self._metric, self._mode = exp_metric, exp_mode

    def _parse(self, spec: dict) -> SearchSpace:
        return parse_space(spec, "AxSearch", "Ax")

    # ---- set-up ------------------------------------------------------------------------
    def _setup(self) -> None:
        axc = _ax_client_module()
        if self._ax is None:
            kwargs = {"verbose_logging": False, **self._ax_kwargs}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                self._ax = axc.AxClient(**kwargs)
        if not _has_experiment(self._ax):
            if isinstance(self._space, SearchSpace):
                parameters = [self._ax_parameter(p) for p in self._space.params]
            else:
                parameters = list(self._space)
            self._ax.create_experiment(
                parameters=parameters,
                objectives={self._metric: axc.ObjectiveProperties(
                    minimize=self._mode != "max")},
                parameter_constraints=self._parameter_constraints or None,
                outcome_constraints=self._outcome_constraints or None,
            )
        elif self._metric not in self._ax.objective_names:
            raise ValueError(f"AxSearch: metric {self._metric!r} is not the objective "
                             f"{self._ax.objective_names} of the Ax experiment")
        self._names = list(self._ax.experiment.parameters)
        self._initial = [self._ax_point(p) for p in self._points_to_evaluate]
        self._points_to_evaluate = []
        if getattr(self._ax, "_enforce_sequential_optimization", False):
            logger.debug("AxSearch: Ax enforces sequential optimization: it suggests nothing "
                         "while too many trials await data (use a ConcurrencyLimiter).")

    def _ax_parameter(self, param: Param) -> dict:
        name = param.name
        if param.kind == "choice":
            categories = list(param.categories)
            types = {type(c) for c in categories}
            if len(types) == 1 and next(iter(types)) in _VALUE_TYPES:
                values, value_type = categories, _VALUE_TYPES[next(iter(types))]
            else:  # mixed or non-plain categories: Ax samples the index
                self._by_index[name] = param.categories
                values, value_type = list(range(len(categories))), "int"
            if len(values) == 1:
                return {"name": name, "type": "fixed", "value": values[0],
                        "value_type": value_type}
            # Unordered, as tune.choice is (Ax orders a two-value choice itself, and
            # requires numeric ordered values sorted: the order of the values is moot).
            return {"name": name, "type": "choice", "values": values,
                    "value_type": value_type, "is_ordered": False,
                    "sort_values": value_type != "str"}
        if param.dist == "normal":
            raise unsupported(param, "AxSearch", "Ax",
                              "it has no normal distribution; use tune.uniform with bounds")
        value_type = "float" if param.kind == "float" else "int"
        low, high = param.low, param.high
        if value_type == "int":
            low, high = int(low), int(high)
        if low == high:
            return {"name": name, "type": "fixed", "value": low, "value_type": value_type}
        return {"name": name, "type": "range", "bounds": [low, high],
                "value_type": value_type, "log_scale": param.log}

    def _ax_point(self, point: dict) -> dict:
        """A user's point -> Ax's parameterization (a category sampled by index -> its index)."""
        if not isinstance(self._space, SearchSpace):
            flat = flatten_dict(point)
            missing = [n for n in self._names if n not in flat]
            if missing:
                raise ValueError(f"AxSearch: a point of points_to_evaluate lacks {missing}")
            return flat
        flat = self._space.flat_point(point, "AxSearch", complete=True)
        params = self._space.by_name()
        return {n: params[n].category_index(v) if n in self._by_index else v
                for n, v in flat.items()}

    # ---- suggestions -------------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict | None:
        self._check_ready()
        if self.max_concurrent and len(self._live) >= self.max_concurrent:
            return None
        if self._initial:
            parameters, index = self._ax.attach_trial(self._initial[0])
            self._initial.pop(0)
        else:
            try:
                parameters, index = self._ax.get_next_trial()
            except _no_suggestion_errors() as exc:
                logger.debug("AxSearch: no suggestion now: %s", exc)
                return None
        self._live[trial_id] = index
        if not isinstance(self._space, SearchSpace):
            return unflatten_dict({k: _native(v) for k, v in parameters.items()})
        values = dict(parameters)
        for name, categories in self._by_index.items():
            values[name] = categories[int(values[name])]
        return self._space.to_config(values)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        """Tell Ax the trial's metric (and the metrics of the outcome constraints). An
        errored trial is logged as failed; one without a finite metric is abandoned."""
        index = self._live.pop(trial_id, None)
        if index is None:
            return
        if error:
            self._ax.log_trial_failure(index)
            return
        names = [self._metric, *self._constraint_metrics()]
        values = {n: _finite(result.get(n)) if result else None for n in names}
        missing = [n for n, v in values.items() if v is None]
        if missing:
            logger.warning("AxSearch: trial %s reported no finite %s: not told to Ax",
                           trial_id, missing)
            self._ax.abandon_trial(index, reason=f"no finite value of {missing}")
            return
        self._ax.complete_trial(trial_index=index,
                                raw_data={n: (v, None) for n, v in values.items()})

    def _constraint_metrics(self) -> list[str]:
        config = self._ax.experiment.optimization_config
        names: list[str] = []
        for constraint in config.outcome_constraints:
            names.extend(n for n in constraint.metric_names if n not in names)
        return [n for n in names if n != self._metric]

    @staticmethod
    def convert_search_space(spec: dict) -> list[dict]:
        """A dict of tune Domains -> a list of Ax parameter dicts (``"a/b"`` names;
        constants as ``fixed`` parameters, as in 1.x). Quantization is not expressible in
        Ax and is dropped here (AxSearch given the tune space itself rounds to ``q``)."""
        searcher = AxSearch.__new__(AxSearch)
        searcher._by_index = {}
        space = parse_space(spec, "AxSearch", "Ax")
        by_index_error = ValueError(
            "AxSearch.convert_search_space: tune.choice (config key {!r}) has categories of "
            "mixed or non-plain types, which an Ax choice cannot hold: pass the tune space "
            "to AxSearch itself instead.")
        parameters = []
        for path, value in sorted(flatten_dict(space.template).items()):
            if value is None or isinstance(value, dict):
                continue
            if type(value) not in _VALUE_TYPES:
                raise ValueError(f"AxSearch.convert_search_space: the constant {path!r} = "
                                 f"{value!r} cannot be an Ax fixed parameter")
            parameters.append({"name": path, "type": "fixed", "value": value})
        for param in space.params:
            parameters.append(searcher._ax_parameter(param))
            if param.name in searcher._by_index:
                raise ValueError(str(by_index_error).format(param.name))
        return parameters


def _finite(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _native(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
