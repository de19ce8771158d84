"""Optuna searcher: ray.tune 1.x ``suggest.optuna.OptunaSearch``.

Needs the optional ``optuna`` package (``pip install 'tune_async[optuna]'``); it is
imported when an OptunaSearch is made.
"""

from __future__ import annotations

import functools
import logging
import time
import warnings
from collections.abc import Callable
from typing import Any

from tune_async.result import TRAINING_ITERATION
from tune_async.suggest._space import (
    LibrarySearcher,
    Param,
    SearchSpace,
    import_optional,
    unsupported,
)
from tune_async.utils.util import flatten_dict, unflatten_dict

logger = logging.getLogger(__name__)

# Warn if a define-by-run function takes longer than this (it should only define a space).
DEFINE_BY_RUN_WARN_THRESHOLD_S = 1

_PLAIN = (str, int, float, bool, type(None))


def _optuna() -> Any:
    return import_optional("optuna", searcher="OptunaSearch", extra="optuna", package="optuna")


class _OptunaTrialSuggestCaptor:
    """Wraps an ``optuna.Trial`` and records what its ``suggest_*`` methods return."""

    def __init__(self, ot_trial: Any) -> None:
        self.ot_trial = ot_trial
        self.captured_values: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        item = getattr(self.ot_trial, name)
        if name.startswith("suggest_") and callable(item):

            @functools.wraps(item)
            def capture(*args: Any, **kwargs: Any) -> Any:
                value = item(*args, **kwargs)
                self.captured_values[kwargs.get("name", args[0] if args else None)] = value
                return value

            return capture
        return item


class OptunaSearch(LibrarySearcher):
    """A wrapper around Optuna to provide trial suggestions.

    `Optuna <https://optuna.org/>`_ is a hyperparameter optimization library with
    define-by-run search spaces. Any Optuna sampler can be passed. Multi-objective
    optimization is supported (``metric`` and ``mode`` lists).

    Args:
        space: The search space: a dict of tune Domains (``tune.uniform`` ...,
            converted), a dict of ``optuna.distributions`` keyed by parameter name,
            or a define-by-run function taking an ``optuna.Trial`` (it calls
            ``trial.suggest_*`` and returns None or a dict of constants). None: take
            the ``config`` passed to ``tune.run``.
        metric: The training result objective value attribute (a list for
            multi-objective optimization). If None but a mode was passed, the
            anonymous metric ``_metric`` is used.
        mode: One of {min, max} (a list for multi-objective optimization).
        points_to_evaluate: Initial configurations (dicts) to run first.
        sampler: An ``optuna.samplers.BaseSampler`` instance. Defaults to
            ``TPESampler`` (which handles multi-objective studies too).
        seed: Seed for the default sampler (ignored, with a warning, when a sampler
            is passed: seed that one yourself).
        evaluated_rewards: The results of ``points_to_evaluate`` if they were already
            evaluated: they are added to the study instead of being run. Not with a
            define-by-run space.

    Tune's domains become Optuna distributions: uniform/loguniform -> float
    (``log=True``), quniform -> float with ``step``, randint/lograndint/qrandint ->
    int (``log``/``step``), choice -> categorical. qloguniform and qlograndint are
    sampled on the log scale and rounded to ``q``; randn/qrandn have no Optuna
    distribution (a ValueError naming the key).

    Example::

        config = {"a": tune.uniform(6, 8), "b": tune.loguniform(1e-4, 1e-2)}
        optuna_search = OptunaSearch(metric="loss", mode="min")
        tune.run(trainable, config=config, search_alg=optuna_search)
    """

    _library = "Optuna"

    def __init__(
        self,
        space: dict | Callable | None = None,
        metric: str | list | None = None,
        mode: str | list | None = None,
        points_to_evaluate: list[dict] | None = None,
        sampler: Any = None,
        seed: int | None = None,
        evaluated_rewards: list | None = None,
    ):
        ot = _optuna()
        super().__init__(metric=metric, mode=mode, points_to_evaluate=points_to_evaluate,
                         evaluated_rewards=evaluated_rewards)
        if sampler is not None and not isinstance(sampler, ot.samplers.BaseSampler):
            raise TypeError("OptunaSearch: `sampler` must be an instance of "
                            f"optuna.samplers.BaseSampler, got {sampler!r}")
        if sampler is not None and seed is not None:
            logger.warning("You passed an initialized sampler to `OptunaSearch`. The `seed` "
                           "parameter has to be passed to the sampler directly and will be "
                           "ignored.")
        if space is not None and not (isinstance(space, dict) or callable(space)):
            raise TypeError("OptunaSearch: `space` must be a dict (tune Domains or optuna "
                            f"distributions) or a define-by-run function, got {space!r}")
        if callable(space) and evaluated_rewards:
            raise TypeError(
                "OptunaSearch: a define-by-run function passed as `space` cannot be used "
                "with `evaluated_rewards`: pass a dict of tune Domains or optuna "
                "distributions instead."
            )
        self._sampler = sampler
        self._seed = seed
        self._study: Any = None
        self._distributions: dict[str, Any] = {}
        self._by_index: dict[str, tuple] = {}  # name -> categories sampled by index
        if isinstance(space, dict) and space and all(
            isinstance(v, ot.distributions.BaseDistribution) for v in flatten_dict(space).values()
        ):
            space = flatten_dict(space)  # nested dicts of distributions: "a/b" names
        self._init_space(space)

    # ---- set-up ------------------------------------------------------------------------
    def _setup(self) -> None:
        ot = _optuna()
        if isinstance(self._space, SearchSpace):
            self._distributions = {p.name: self._distribution(ot, p) for p in self._space.params}
        elif isinstance(self._space, dict):
            self._distributions = dict(self._space)
        multi = isinstance(self._mode, list)
        sampler = self._sampler or ot.samplers.TPESampler(seed=self._seed)
        if multi:
            directions = {"directions": ["minimize" if m == "min" else "maximize"
                                         for m in self._mode]}
        else:
            directions = {"direction": "minimize" if self._mode == "min" else "maximize"}
        self._study = ot.create_study(storage=ot.storages.InMemoryStorage(), sampler=sampler,
                                      pruner=ot.pruners.NopPruner(), study_name="optuna",
                                      **directions)
        rewards = self._evaluated_rewards
        for index, point in enumerate(self._points_to_evaluate):
            params = self._optuna_params(point, complete=bool(rewards))
            if rewards:
                self._add_trial(params, rewards[index])
            else:
                self._study.enqueue_trial(params)
        self._points_to_evaluate = []
        self._evaluated_rewards = None

    def _distribution(self, ot: Any, param: Param) -> Any:
        dist = ot.distributions
        if param.kind == "choice":
            if all(isinstance(c, _PLAIN) for c in param.categories):
                return dist.CategoricalDistribution(list(param.categories))
            # Optuna stores only plain values: sample the index, map it back.
            self._by_index[param.name] = param.categories
            return dist.CategoricalDistribution(list(range(len(param.categories))))
        if param.dist == "normal":
            raise unsupported(param, "OptunaSearch", "Optuna",
                              "it has no normal distribution; use tune.uniform with bounds")
        if param.kind == "float":
            if param.log:
                return dist.FloatDistribution(param.low, param.high, log=True)
            return dist.FloatDistribution(param.low, param.high, step=param.q)
        if param.log:  # qlograndint: Optuna has no step on a log scale; rounded to q
            return dist.IntDistribution(int(param.low), int(param.high), log=True)
        return dist.IntDistribution(int(param.low), int(param.high), step=int(param.q or 1))

    def _optuna_params(self, point: dict, complete: bool) -> dict:
        """A user's point -> Optuna's params (a category sampled by index -> its index)."""
        if not isinstance(self._space, SearchSpace):
            return flatten_dict(point)
        flat = self._space.flat_point(point, "OptunaSearch", complete=complete)
        params = {}
        for name, value in flat.items():
            param = self._space.by_name()[name]
            params[name] = (param.category_index(value) if name in self._by_index else value)
        return params

    # ---- suggestions -------------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict | None:
        self._check_ready()
        if trial_id not in self._live:
            if callable(self._space):
                self._live[trial_id] = self._study.ask()
            else:
                self._live[trial_id] = self._study.ask(fixed_distributions=self._distributions)
        ot_trial = self._live[trial_id]
        if callable(self._space):
            return unflatten_dict(self._define_by_run(ot_trial))
        params = dict(ot_trial.params)
        if not isinstance(self._space, SearchSpace):
            return unflatten_dict(params)
        for name, categories in self._by_index.items():
            params[name] = categories[int(params[name])]
        return self._space.to_config(params)

    def _define_by_run(self, ot_trial: Any) -> dict:
        captor = _OptunaTrialSuggestCaptor(ot_trial)
        start = time.monotonic()
        returned = self._space(captor)
        took = time.monotonic() - start
        if took > DEFINE_BY_RUN_WARN_THRESHOLD_S:
            warnings.warn(
                f"Define-by-run function passed in the `space` argument took {took:.2f} "
                "seconds to run. Ensure that actual computation, training takes place inside "
                "Tune's train functions or Trainables passed to `tune.run`.",
                stacklevel=2,
            )
        if returned is not None:
            if not isinstance(returned, dict):
                raise TypeError("The return value of the define-by-run function passed in "
                                "the `space` argument should be either None or a `dict` with "
                                f"`str` keys. Got {type(returned)}.")
            if not all(isinstance(k, str) for k in returned):
                raise TypeError("At least one of the keys in the dict returned by the "
                                "define-by-run function passed in the `space` argument was "
                                "not a `str`.")
            return {**captor.captured_values, **returned}
        return captor.captured_values

    # ---- observations ------------------------------------------------------------------
    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if isinstance(self._metric, list):
            return  # Optuna has no intermediate values for multi-objective studies
        ot_trial = self._live.get(trial_id)
        value = result.get(self._metric)
        step = result.get(TRAINING_ITERATION)
        if ot_trial is None or not isinstance(value, (int, float)) or step is None:
            return
        try:
            ot_trial.report(float(value), int(step))
        except (NotImplementedError, ValueError) as exc:  # e.g. a step reported twice
            logger.debug("OptunaSearch: intermediate value not reported: %s", exc)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        ot_trial = self._live.pop(trial_id, None)
        if ot_trial is None:
            return
        from optuna.trial import TrialState

        value: Any = None
        if result:
            if isinstance(self._metric, list):
                value = [result.get(m) for m in self._metric]
                if any(v is None for v in value):
                    value = None
            else:
                value = result.get(self._metric)
        state = TrialState.COMPLETE
        if value is None:
            state = TrialState.FAIL if error else TrialState.PRUNED
        try:
            self._study.tell(ot_trial, value, state=state)
        except (ValueError, RuntimeError) as exc:  # e.g. NaN reported
            logger.warning("OptunaSearch: %s", exc)

    def add_evaluated_point(self, parameters: dict, value: float | list, error: bool = False,
                            pruned: bool = False,
                            intermediate_values: list | None = None) -> None:
        """Add a point that was evaluated elsewhere to the study (1.x API)."""
        self._check_ready()
        if callable(self._space):
            raise TypeError(
                "Define-by-run function passed in `space` argument is not yet supported when "
                "using `evaluated_rewards`. Please provide an `OptunaDistribution` dict or "
                "pass a Ray Tune search space to `tune.run()`."
            )
        self._add_trial(self._optuna_params(parameters, complete=True), value, error, pruned,
                        intermediate_values)

    def _add_trial(self, params: dict, value: Any, error: bool = False, pruned: bool = False,
                   intermediate_values: list | None = None) -> None:
        from optuna.trial import TrialState, create_trial

        state = TrialState.FAIL if error else TrialState.PRUNED if pruned else TrialState.COMPLETE
        values: dict = {}
        if state == TrialState.COMPLETE:
            values = ({"values": list(value)} if isinstance(value, (list, tuple))
                      else {"value": value})
        trial = create_trial(
            state=state, params=params,
            distributions={k: self._distributions[k] for k in params},
            intermediate_values=dict(enumerate(intermediate_values or [])) or None,
            **values,
        )
        self._study.add_trial(trial)

    @staticmethod
    def convert_search_space(spec: dict) -> dict:
        """A dict of tune Domains -> a dict of Optuna distributions ("a/b" names)."""
        searcher = OptunaSearch.__new__(OptunaSearch)
        searcher._by_index = {}
        from tune_async.suggest._space import parse_space

        space = parse_space(spec, "OptunaSearch", "Optuna")
        ot = _optuna()
        return {p.name: searcher._distribution(ot, p) for p in space.params}
