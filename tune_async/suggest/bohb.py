"""BOHB (Bayesian Optimization HyperBand) searcher: ray.tune 1.x ``suggest.bohb.TuneBOHB``.

Needs the optional ``ConfigSpace`` and ``hpbandster`` packages
(``pip install 'tune_async[bohb]'``); they are imported when a TuneBOHB is made.
Use it with :class:`~tune_async.schedulers.HyperBandForBOHB`, whose results carry
the budget (``result["hyperband_info"]["budget"]``) each observation was made at.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import pickle
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from tune_async.result import DEFAULT_METRIC
from tune_async.search.sample import (
    Categorical,
    Domain,
    Float,
    Integer,
    LogUniform,
    Normal,
    Quantized,
    Uniform,
)
from tune_async.search.variant_generator import parse_spec_vars
from tune_async.suggest.suggestion import Searcher
from tune_async.utils.util import flatten_dict, unflatten_dict

logger = logging.getLogger(__name__)

_MISSING = (
    "TuneBOHB needs the ConfigSpace and hpbandster packages: "
    "pip install 'tune_async[bohb]' (or: pip install ConfigSpace hpbandster)"
)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """hpbandster (unmaintained since 2018) trips deprecation and numeric warnings in
    ConfigSpace, pandas and statsmodels on every call: not the user's concern."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _import_bohb() -> tuple[Any, Any]:
    try:
        import ConfigSpace
        from hpbandster.optimizers.config_generators.bohb import BOHB
    except ImportError as exc:
        raise ImportError(f"{_MISSING} ({exc})") from exc
    return ConfigSpace, BOHB


class _BOHBJobWrapper:
    """What hpbandster's ``new_result`` reads of a finished job."""

    def __init__(self, loss: float, budget: float, config: dict):
        self.result = {"loss": loss}
        self.kwargs = {"budget": budget, "config": config.copy()}
        self.exception = None


class TuneBOHB(Searcher):
    """BOHB suggestion component: a model over the configurations seen per budget.

    Requires ConfigSpace and hpbandster. Use it together with the
    :class:`~tune_async.schedulers.HyperBandForBOHB` scheduler.

    Args:
        space: A ``ConfigSpace.ConfigurationSpace``, or a dict of tune search-space
            Domains (``tune.uniform`` ...), converted automatically. None: take the
            ``config`` passed to ``tune.run``.
        bohb_config: Keyword arguments for hpbandster's BOHB config generator
            (``min_points_in_model``, ``top_n_percent``, ``num_samples``,
            ``random_fraction``, ``bandwidth_factor``, ``min_bandwidth``).
        max_concurrent: Number of maximum concurrent trials (paused trials do not
            count). Defaults to 10.
        metric: The training result objective value attribute. If None but a mode
            was passed, ``"_metric"`` is used.
        mode: One of {min, max}.
        points_to_evaluate: Initial configurations (dicts) to run first.
        seed: Seed for the configuration space's sampling.

    Example::

        config = {"width": tune.uniform(0, 20), "activation": tune.choice(["relu", "tanh"])}
        algo = TuneBOHB(max_concurrent=4, metric="mean_loss", mode="min")
        bohb = HyperBandForBOHB(time_attr="training_iteration", max_t=100)
        tune.run(MyTrainableClass, config=config, scheduler=bohb, search_alg=algo)
    """

    def __init__(
        self,
        space: Any = None,
        bohb_config: dict | None = None,
        max_concurrent: int = 10,
        metric: str | None = None,
        mode: str | None = None,
        points_to_evaluate: list[dict] | None = None,
        seed: int | None = None,
    ):
        _import_bohb()
        if mode is not None and mode not in ("min", "max"):
            raise ValueError(f"`mode` must be 'min' or 'max', got {mode!r}")
        if isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int) \
                or max_concurrent <= 0:
            raise ValueError(f"`max_concurrent` must be a positive int, got {max_concurrent!r}")
        if bohb_config is not None and not isinstance(bohb_config, dict):
            raise TypeError(f"`bohb_config` must be a dict, got {bohb_config!r}")
        if points_to_evaluate is not None and not isinstance(points_to_evaluate, list):
            raise TypeError(f"`points_to_evaluate` must be a list of dicts, got "
                            f"{points_to_evaluate!r}")
        super().__init__(metric=metric, mode=mode)
        self._max_concurrent = max_concurrent
        self._bohb_config = dict(bohb_config or {})
        self._points_to_evaluate = [flatten_dict(p) for p in points_to_evaluate or []]
        self._seed = seed
        self._categories: dict[str, list] = {}  # converted choice() -> its categories
        self._quantize: dict[str, tuple[float, bool]] = {}  # name -> (q, integer)
        self.trial_to_params: dict[str, dict] = {}
        # HyperBandForBOHB calls on_pause/on_unpause from the scheduler while suggest may
        # run in the searcher's own thread: the concurrency count is kept under a lock.
        self._lock = threading.RLock()
        self.running: set[str] = set()
        self.paused: set[str] = set()
        self.bohber: Any = None
        self._metric_op = 1.0
        self._warned_no_info = False
        if isinstance(space, dict) and space:
            _, domain_vars, grid_vars = parse_spec_vars(space)
            if domain_vars or grid_vars:
                space = self._convert(space)
        self._space = space or None
        if self._space is not None:
            self._setup_bohb()

    # ---- set-up ----------------------------------------------------------------------
    def _setup_bohb(self) -> None:
        _, BOHB = _import_bohb()
        if self._metric is None and self._mode:
            self._metric = DEFAULT_METRIC
        self._metric_op = -1.0 if self._mode == "max" else 1.0  # hpbandster minimizes
        if self._seed is not None:
            self._space.seed(self._seed)
        with _quiet():
            self.bohber = BOHB(self._space, **self._bohb_config)

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict) -> bool:
        if self._space is not None:
            return False
        self._space = self._convert(config)
        if metric:
            self._metric = metric
        if mode:
            self._mode = mode
        self._setup_bohb()
        return True

    def _convert(self, spec: dict) -> Any:
        space, self._categories, self._quantize = convert_search_space(spec, with_maps=True)
        return space

    # ---- suggestions -----------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict | None:
        if self._space is None:
            raise RuntimeError(
                "Trying to sample a configuration from TuneBOHB, but no search space has "
                "been defined. Either pass the `space` argument when instantiating the "
                "search algorithm, or pass a `config` to `tune.run()`."
            )
        if not self._metric or not self._mode:
            raise RuntimeError(
                f"Trying to sample a configuration from TuneBOHB, but the `metric` "
                f"({self._metric}) or `mode` ({self._mode}) parameters have not been set. "
                f"Either pass these arguments when instantiating the search algorithm, or "
                f"pass them to `tune.run()`."
            )
        with self._lock:
            if len(self.running) >= self._max_concurrent:
                return None
            self.running.add(trial_id)
        try:
            raw = self._next_raw()
        except BaseException:
            with self._lock:
                self.running.discard(trial_id)
            raise
        self.trial_to_params[trial_id] = copy.deepcopy(raw)
        return unflatten_dict(self._to_config(raw))

    def _next_raw(self) -> dict:
        if self._points_to_evaluate:
            return self._raw_point(self._points_to_evaluate.pop(0))
        with _quiet():
            raw, _info = self.bohber.get_config(None)  # the budget is unused there
        return {k: _native(v) for k, v in raw.items()}

    def _to_config(self, raw: dict) -> dict:
        """ConfigSpace values -> the trial's values (categories, quantization)."""
        config = {}
        for name, value in raw.items():
            if name in self._categories:
                value = self._categories[name][int(value)]
            elif name in self._quantize:
                q, integer = self._quantize[name]
                value = round(value / q) * q
                value = int(value) if integer else value
            config[name] = value
        return config

    def _raw_point(self, point: dict) -> dict:
        """A user's point -> ConfigSpace values (a category becomes its index)."""
        raw = {}
        for name, value in point.items():
            categories = self._categories.get(name)
            if categories is not None:
                if value not in categories:
                    raise ValueError(f"points_to_evaluate: {name}={value!r} is not one of "
                                     f"{categories}")
                value = categories.index(value)
            raw[name] = value
        return raw

    # ---- observations ----------------------------------------------------------------
    def on_trial_result(self, trial_id: str, result: dict) -> None:
        with self._lock:
            if trial_id not in self.paused:
                self.running.add(trial_id)
        info = result.get("hyperband_info")
        if info is None:
            if not self._warned_no_info:
                self._warned_no_info = True
                logger.warning("BOHB Info not detected in result. Are you using "
                               "HyperBandForBOHB as a scheduler?")
        elif "budget" in info and trial_id in self.trial_to_params:
            value = result.get(self._metric)
            if isinstance(value, (int, float)) and not math.isnan(value):
                with _quiet():
                    self.bohber.new_result(self.to_wrapper(trial_id, result))

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        self.trial_to_params.pop(trial_id, None)
        with self._lock:
            self.paused.discard(trial_id)
            self.running.discard(trial_id)

    def to_wrapper(self, trial_id: str, result: dict) -> _BOHBJobWrapper:
        return _BOHBJobWrapper(self._metric_op * result[self._metric],
                               result["hyperband_info"]["budget"],
                               self.trial_to_params[trial_id])

    def on_pause(self, trial_id: str) -> None:
        with self._lock:
            self.paused.add(trial_id)
            self.running.discard(trial_id)

    def on_unpause(self, trial_id: str) -> None:
        with self._lock:
            self.paused.discard(trial_id)
            self.running.add(trial_id)

    # ---- state -----------------------------------------------------------------------
    def get_state(self) -> dict:
        with self._lock:
            state = {k: v for k, v in self.__dict__.items() if k != "_lock"}
            state["running"], state["paused"] = set(self.running), set(self.paused)
        return state

    def set_state(self, state: dict) -> None:
        with self._lock:
            self.__dict__.update({k: v for k, v in state.items() if k != "_lock"})

    def __getstate__(self) -> dict:
        return self.get_state()

    def __setstate__(self, state: dict) -> None:
        self._lock = threading.RLock()
        self.__dict__.update(state)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))

    @staticmethod
    def convert_search_space(spec: dict) -> Any:
        """A dict of tune Domains -> a ``ConfigSpace.ConfigurationSpace``."""
        return convert_search_space(spec)


def convert_search_space(spec: dict, with_maps: bool = False) -> Any:
    """Convert tune Domains to a ConfigurationSpace (names are the '/'-joined paths).

    ``choice`` becomes a categorical over the category *indices* (any values, types
    kept); quantized domains are sampled unquantized and rounded when suggested
    (ConfigSpace 1.x has no quantization). With ``with_maps`` also returns those maps.
    """
    ConfigSpace, _ = _import_bohb()
    _, domain_vars, grid_vars = parse_spec_vars(spec)
    if grid_vars:
        raise ValueError("Grid search parameters cannot be automatically converted to a "
                         "TuneBOHB search space.")
    space = ConfigSpace.ConfigurationSpace()
    categories: dict[str, list] = {}
    quantize: dict[str, tuple[float, bool]] = {}
    for path, domain in domain_vars:
        name = "/".join(str(p) for p in path)
        space.add(_hyperparameter(ConfigSpace, name, domain, categories, quantize))
    return (space, categories, quantize) if with_maps else space


def _hyperparameter(CS: Any, name: str, domain: Domain, categories: dict,
                    quantize: dict) -> Any:
    sampler = domain.get_sampler()
    if isinstance(sampler, Quantized):
        quantize[name] = (sampler.q, isinstance(domain, Integer))
        sampler = sampler.get_sampler()
    if isinstance(domain, Float) and isinstance(sampler, (Uniform, LogUniform)):
        return CS.UniformFloatHyperparameter(name, lower=domain.lower, upper=domain.upper,
                                             log=isinstance(sampler, LogUniform))
    if isinstance(domain, Float) and isinstance(sampler, Normal):
        # ConfigSpace 1.x needs bounds: ten standard deviations leave it untruncated.
        return CS.NormalFloatHyperparameter(name, mu=sampler.mean, sigma=sampler.sd,
                                            lower=sampler.mean - 10 * sampler.sd,
                                            upper=sampler.mean + 10 * sampler.sd)
    if isinstance(domain, Integer) and isinstance(sampler, (Uniform, LogUniform)):
        # tune's upper bound is exclusive, ConfigSpace's inclusive.
        return CS.UniformIntegerHyperparameter(name, lower=domain.lower,
                                               upper=domain.upper - 1,
                                               log=isinstance(sampler, LogUniform))
    if isinstance(domain, Categorical) and isinstance(sampler, Uniform):
        categories[name] = list(domain.categories)
        return CS.CategoricalHyperparameter(name, choices=list(range(len(domain.categories))))
    raise ValueError(
        f"TuneBOHB does not support parameters of type `{type(domain).__name__}` with "
        f"samplers of type `{type(sampler).__name__}` (parameter {name!r})"
    )


def _native(value: Any) -> Any:
    """numpy scalars -> Python values (configs are written to JSON and compared)."""
    return value.item() if isinstance(value, np.generic) else value
