"""BayesOpt searcher: ray.tune 1.x ``suggest.bayesopt.BayesOptSearch``.

Needs the optional ``bayesian-optimization`` package (``pip install
'tune_async[bayesopt]'``; versions 1.4 and 2.x/3.x both work); it is imported when a
BayesOptSearch is made.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from typing import Any

from tune_async.suggest._space import (
    LibrarySearcher,
    SearchSpace,
    import_optional,
    parse_space,
    unsupported,
)
from tune_async.suggest.suggestion import Searcher
from tune_async.utils.util import flatten_dict, unflatten_dict

logger = logging.getLogger(__name__)


def _bayes_opt() -> Any:
    return import_optional("bayes_opt", searcher="BayesOptSearch", extra="bayesopt",
                           package="bayesian-optimization")


def _dict_hash(config: dict, precision: int) -> str:
    flat = {k: f"{v:.{precision}f}" if isinstance(v, float) else v
            for k, v in flatten_dict(config).items()}
    return json.dumps(flat, sort_keys=True, default=str)


class BayesOptSearch(LibrarySearcher):
    """Uses fmfn/BayesianOptimization (a Gaussian process) to suggest configurations.

    The search space is continuous: tune's ``uniform``/``quniform`` map to their
    interval; ``loguniform``/``qloguniform`` are searched in log space; integer domains
    are searched on a real interval and rounded. ``choice`` and ``randn`` cannot be
    expressed (a ValueError naming the key). NaN and infinite results are left out.

    Args:
        space: A dict of tune Domains (converted), or of ``(low, high)`` bounds. None:
            take the ``config`` passed to ``tune.run``.
        metric: The training result objective value attribute. If None but a mode was
            passed, the anonymous metric ``_metric`` is used.
        mode: One of {min, max}.
        points_to_evaluate: Initial configurations (dicts) to run first.
        utility_kwargs: The acquisition function: ``kind`` ("ucb", "ei" or "poi"),
            ``kappa`` (2.576) and ``xi`` (0.0).
        random_state: Seed of the optimizer. Defaults to 42.
        random_search_steps: Number of initial random points; their results are
            registered together once they all finished. Defaults to 10.
        verbose: BayesOpt's verbosity. Defaults to 0.
        patience: Stop (Searcher.FINISHED) once one configuration was suggested more
            than this many times. Defaults to 5. (A repeat of a point whose trial is still
            running is not counted: the suggestion waits for a result instead, so with
            several trials at a time the search runs them one by one once it models.)
        skip_duplicate: Skip a configuration suggested before. Defaults to True.
        analysis: An ExperimentAnalysis of an earlier run to learn from.
        max_concurrent: Deprecated: use a ConcurrencyLimiter (still honoured).
        use_early_stopped_trials: Deprecated.

    Example::

        config = {"width": tune.uniform(0, 20), "height": tune.uniform(-100, 100)}
        bayesopt = BayesOptSearch(metric="mean_loss", mode="min")
        tune.run(my_func, config=config, search_alg=bayesopt)
    """

    _library = "BayesOpt"

    def __init__(
        self,
        space: dict | None = None,
        metric: str | None = None,
        mode: str | None = None,
        points_to_evaluate: list[dict] | None = None,
        utility_kwargs: dict | None = None,
        random_state: int = 42,
        random_search_steps: int = 10,
        verbose: int = 0,
        patience: int = 5,
        skip_duplicate: bool = True,
        analysis: Any = None,
        max_concurrent: int | None = None,
        use_early_stopped_trials: bool | None = None,
    ):
        _bayes_opt()
        if patience <= 0:
            raise ValueError("patience must be set to a value greater than 0!")
        super().__init__(metric=metric, mode=mode, points_to_evaluate=points_to_evaluate,
                         max_concurrent=max_concurrent,
                         use_early_stopped_trials=use_early_stopped_trials)
        self.max_concurrent = max_concurrent
        self._patience = patience
        self._skip_duplicate = skip_duplicate
        self.repeat_float_precision = 5
        self._config_counter: dict[str, int] = defaultdict(int)
        self._live_hashes: dict[str, str] = {}  # trial id -> its config's hash
        self._registered = 0  # results the model has learnt
        self._waiting_at: int | None = None  # _registered when a suggestion had to wait
        self._utility_kwargs = {"kind": "ucb", "kappa": 2.576, "xi": 0.0,
                                **(utility_kwargs or {})}
        if self._utility_kwargs["kind"] not in ("ucb", "ei", "poi"):
            raise ValueError(f"BayesOptSearch: utility_kwargs kind must be 'ucb', 'ei' or "
                             f"'poi', got {self._utility_kwargs['kind']!r}")
        self._random_state = random_state
        self.random_search_trials = random_search_steps
        self._total_random_search_trials = 0
        self._random_done = 0  # random-phase trials finished (with a result or not)
        self._buffered_trial_results: list[tuple[dict, dict]] = []
        self._verbose = verbose
        self._analysis = analysis
        self.optimizer: Any = None
        self._utility: Any = None
        self._init_space(space)

    def _parse(self, spec: dict) -> SearchSpace:
        space = parse_space(spec, "BayesOptSearch", "BayesOpt")
        for param in space.params:
            if param.kind == "choice" or param.dist == "normal":
                raise unsupported(param, "BayesOptSearch", "BayesOpt",
                                  "its space is continuous and bounded")
        return space

    # ---- set-up ------------------------------------------------------------------------
    def _setup(self) -> None:
        byo = _bayes_opt()
        if isinstance(self._space, SearchSpace):
            bounds = {p.name: p.interval() for p in self._space.params}
        else:
            bounds = {k: tuple(v) for k, v in flatten_dict(self._space).items()}
        kwargs: dict = {"f": None, "pbounds": bounds, "verbose": self._verbose,
                        "random_state": self._random_state, "allow_duplicate_points": True}
        kind, kappa, xi = (self._utility_kwargs[k] for k in ("kind", "kappa", "xi"))
        if hasattr(byo, "UtilityFunction"):  # bayesian-optimization < 2
            self._utility = byo.UtilityFunction(kind=kind, kappa=kappa, xi=xi)
        else:
            acquisition = byo.acquisition
            kwargs["acquisition_function"] = {
                "ucb": lambda: acquisition.UpperConfidenceBound(kappa=kappa),
                "ei": lambda: acquisition.ExpectedImprovement(xi=xi),
                "poi": lambda: acquisition.ProbabilityOfImprovement(xi=xi),
            }[kind]()
        self.optimizer = byo.BayesianOptimization(**kwargs)
        self._points_to_evaluate = [self._to_bounds(p) for p in self._points_to_evaluate]
        if self._analysis is not None:
            self.register_analysis(self._analysis)
            self._analysis = None

    def _to_bounds(self, point: dict) -> dict:
        """A config (or a point) -> the optimizer's coordinates."""
        if not isinstance(self._space, SearchSpace):
            return flatten_dict(point)
        flat = self._space.flat_point(point, "BayesOptSearch", complete=True)
        return {p.name: p.to_interval(flat[p.name]) for p in self._space.params}

    def _to_config(self, coords: dict) -> dict:
        if not isinstance(self._space, SearchSpace):
            return unflatten_dict({k: float(v) for k, v in coords.items()})
        return self._space.to_config(
            {p.name: p.from_interval(float(coords[p.name])) for p in self._space.params},
            fix=False)

    # ---- suggestions -------------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict | str | None:
        self._check_ready()
        if self.max_concurrent and len(self._live) >= self.max_concurrent:
            return None
        in_random_phase = self._random_done < self.random_search_trials
        if in_random_phase and self._total_random_search_trials >= self.random_search_trials:
            return None  # wait for the random points to finish before modelling
        if (self._live and self._waiting_at == self._registered
                and not self._points_to_evaluate):
            return None  # nothing new was learnt: the model would suggest the same point
        # 1.x asked a searcher that skipped a duplicate again and again, until patience
        # ran out; here that loop is inside (None only means: wait for a running trial).
        for _ in range(self._patience + 1):
            if self._points_to_evaluate:
                coords = self._points_to_evaluate[0]
            elif self._utility is not None:
                coords = self.optimizer.suggest(self._utility)
            else:
                coords = self.optimizer.suggest()
            coords = {k: float(v) for k, v in coords.items()}
            config = self._to_config(coords)
            config_hash = _dict_hash(config, self.repeat_float_precision)
            if config_hash in self._live_hashes.values():
                # The model has learnt nothing since it suggested this point for a trial
                # still running: wait for a result (not a repeat that counts for patience).
                self._waiting_at = self._registered
                return None
            if self._points_to_evaluate:
                self._points_to_evaluate.pop(0)
            already_seen = config_hash in self._config_counter
            self._config_counter[config_hash] += 1
            if max(self._config_counter.values()) > self._patience:
                return Searcher.FINISHED
            if not (already_seen and self._skip_duplicate):
                break
            logger.info("Skipping duplicated config: %s.", config)
        else:
            return None
        if in_random_phase:
            self._total_random_search_trials += 1
        self._live[trial_id] = coords
        self._live_hashes[trial_id] = config_hash
        return config

    def register_analysis(self, analysis: Any) -> None:
        """Register the results of an earlier experiment with the optimizer."""
        for trial in analysis.trials:
            result = trial.last_result
            if result and self._metric in result:
                self._register(self._to_bounds(_space_part(trial.config, self._space)),
                               result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        coords = self._live.pop(trial_id, None)
        self._live_hashes.pop(trial_id, None)
        if coords is None:
            return
        usable = result is not None and not error
        if self._random_done >= self.random_search_trials:
            if usable:
                self._register(coords, result)
            return
        # The random phase: results are registered together once all of it finished
        # (an errored trial counts as finished, so the search never waits for it).
        self._random_done += 1
        if usable:
            self._buffered_trial_results.append((coords, result))
        if self._random_done == self.random_search_trials:
            for buffered, buffered_result in self._buffered_trial_results:
                self._register(buffered, buffered_result)

    def _register(self, coords: dict, result: dict) -> None:
        loss = self._objective(result)
        if loss is not None:  # BayesOpt maximizes: register the negated loss
            self.optimizer.register(params=coords, target=-loss)
            self._registered += 1


def _space_part(config: dict, space: Any) -> dict:
    """The searched keys of a config (constants left out)."""
    if isinstance(space, SearchSpace):
        flat = flatten_dict(config)
        return {n: flat[n] for n in space.names if n in flat}
    return {k: v for k, v in flatten_dict(config).items() if k in flatten_dict(space)}
