"""HyperOpt (TPE) searcher: ray.tune 1.x ``suggest.hyperopt.HyperOptSearch``.

Needs the optional ``hyperopt`` package (``pip install 'tune_async[hyperopt]'``); it is
imported when a HyperOptSearch is made.
"""

from __future__ import annotations

import copy
import logging
from functools import partial
from typing import Any

import numpy as np

from tune_async.search.sample import Categorical, Domain
from tune_async.suggest._space import (
    LibrarySearcher,
    Param,
    SearchSpace,
    holds_domain,
    import_optional,
    key_name,
    parse_space,
    to_param,
)

logger = logging.getLogger(__name__)


def _hyperopt() -> Any:
    return import_optional("hyperopt", searcher="HyperOptSearch", extra="hyperopt",
                           package="hyperopt")


class HyperOptSearch(LibrarySearcher):
    """A wrapper around HyperOpt to provide trial suggestions (Tree-structured Parzen
    Estimators).

    Args:
        space: The search space: a dict of tune Domains (converted; a ``tune.choice``
            may hold dicts or lists with Domains of their own: a conditional space), or
            a HyperOpt space (``hp.*`` expressions). None: take the ``config`` passed to
            ``tune.run``.
        metric: The training result objective value attribute. If None but a mode was
            passed, the anonymous metric ``_metric`` is used.
        mode: One of {min, max}.
        points_to_evaluate: Initial configurations (dicts; a category given by its
            value) to run first.
        n_initial_points: The number of random evaluations before TPE takes over
            (HyperOpt's ``n_startup_jobs``). Defaults to 20.
        random_state_seed: Seed for reproducible results. Defaults to None.
        gamma: TPE's quantile for telling good points from bad ones. Defaults to 0.25.
        evaluated_rewards: The results of ``points_to_evaluate`` if they were already
            evaluated: they are told to HyperOpt instead of being run.
        max_concurrent: Deprecated: use a ConcurrencyLimiter (still honoured).
        use_early_stopped_trials: Deprecated.

    Example::

        config = {"width": tune.uniform(0, 20), "height": tune.uniform(-100, 100),
                  "activation": tune.choice(["relu", "tanh"])}
        hyperopt_search = HyperOptSearch(metric="mean_loss", mode="min")
        tune.run(trainable, config=config, search_alg=hyperopt_search)
    """

    _library = "HyperOpt"

    def __init__(
        self,
        space: dict | None = None,
        metric: str | None = None,
        mode: str | None = None,
        points_to_evaluate: list[dict] | None = None,
        n_initial_points: int = 20,
        random_state_seed: int | None = None,
        gamma: float = 0.25,
        max_concurrent: int | None = None,
        use_early_stopped_trials: bool | None = None,
        evaluated_rewards: list | None = None,
    ):
        _hyperopt()
        super().__init__(metric=metric, mode=mode, points_to_evaluate=points_to_evaluate,
                         evaluated_rewards=evaluated_rewards, max_concurrent=max_concurrent,
                         use_early_stopped_trials=use_early_stopped_trials)
        if space is not None and not isinstance(space, dict):
            raise TypeError(f"HyperOptSearch: `space` must be a dict, got {space!r}")
        self.max_concurrent = max_concurrent
        self._n_initial_points = n_initial_points
        self._gamma = gamma
        self.rstate = np.random.RandomState(random_state_seed)
        self._tune_spec: Any = None  # the tune space, when it was given as Domains
        self._expr: Any = None  # the HyperOpt space
        self._domain: Any = None
        self._trials: Any = None
        self._queued: list[int] = []  # tids of points_to_evaluate not suggested yet
        self._init_space(space)

    def _parse(self, spec: dict) -> SearchSpace:
        space = parse_space(spec, "HyperOptSearch", "HyperOpt", nested_choices=True)
        self._tune_spec = spec
        return space

    # ---- set-up ------------------------------------------------------------------------
    def _setup(self) -> None:
        hpo = _hyperopt()
        from hyperopt.fmin import generate_trials_to_calculate

        if isinstance(self._space, SearchSpace):
            self._expr = _to_hyperopt(hpo, self._tune_spec, ())
        else:
            self._expr = self._space
        self._domain = hpo.Domain(lambda spc: spc, self._expr)
        points = [self._hyperopt_point(p) for p in self._points_to_evaluate]
        if points:
            self._trials = generate_trials_to_calculate(points)
            self._trials.refresh()
            for trial in self._trials.trials:  # labels a point leaves inactive: empty
                for label in self._domain.params:
                    trial["misc"]["idxs"].setdefault(label, [])
                    trial["misc"]["vals"].setdefault(label, [])
            self._trials.refresh()
            rewards = self._evaluated_rewards or []
            now = hpo.utils.coarse_utcnow()
            for trial, reward in zip(self._trials.trials[:len(rewards)], rewards, strict=True):
                trial["state"] = hpo.base.JOB_STATE_DONE
                trial["result"] = {"loss": self._sign() * float(reward), "status": "ok"}
                trial["book_time"] = trial["refresh_time"] = now
            self._queued = [t["tid"] for t in self._trials.trials[len(rewards):]]
            self._trials.refresh()
        else:
            self._trials = hpo.Trials()
        self._points_to_evaluate = []
        self._evaluated_rewards = None

    def _hyperopt_point(self, point: dict) -> dict:
        """A user's point -> HyperOpt's assignment (a category -> its index)."""
        if isinstance(self._space, SearchSpace):
            flat = self._space.flat_point(point, "HyperOptSearch", complete=True)
            params = self._space.by_name()
            vals = {}
            for name, value in flat.items():
                param = params[name]
                if param.kind == "choice":
                    index = param.category_index(value)
                    if holds_domain(param.categories[index]):
                        raise ValueError(
                            f"HyperOptSearch: points_to_evaluate picks a category of "
                            f"{name!r} that holds its own Domains: not supported")
                    value = index
                vals[name] = value
            return vals
        return _indices_for_choices(self._expr, point)

    # ---- suggestions -------------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict | None:
        self._check_ready()
        hpo = _hyperopt()
        if self.max_concurrent and len(self._live) >= self.max_concurrent:
            return None
        if self._queued:
            tid = self._queued.pop(0)
            new_trial = next(t for t in self._trials.trials if t["tid"] == tid)
        else:
            new_ids = self._trials.new_trial_ids(1)
            self._trials.refresh()
            algo = partial(hpo.tpe.suggest, n_startup_jobs=self._n_initial_points,
                           gamma=self._gamma)
            new_trials = algo(new_ids, self._domain, self._trials,
                              int(self.rstate.randint(2**31 - 1)))
            self._trials.insert_trial_docs(new_trials)
            self._trials.refresh()
            new_trial = new_trials[0]
        self._live[trial_id] = new_trial["tid"]
        vals = hpo.base.spec_from_misc(new_trial["misc"])
        if isinstance(self._space, SearchSpace):
            return _resolve(self._tune_spec, (), vals)
        return _native_tree(hpo.space_eval(self._expr, vals))

    # ---- observations ------------------------------------------------------------------
    def _trial(self, trial_id: str) -> dict | None:
        tid = self._live.get(trial_id)
        if tid is None:
            return None
        return next((t for t in self._trials.trials if t["tid"] == tid), None)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        ho_trial = self._trial(trial_id)
        if ho_trial is not None:
            now = _hyperopt().utils.coarse_utcnow()
            ho_trial["book_time"] = ho_trial.get("book_time") or now
            ho_trial["refresh_time"] = now

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        """Tell HyperOpt the trial's metric (negated for mode="max": HyperOpt minimizes)."""
        hpo = _hyperopt()
        ho_trial = self._trial(trial_id)
        self._live.pop(trial_id, None)
        if ho_trial is None:
            return
        ho_trial["refresh_time"] = hpo.utils.coarse_utcnow()
        loss = self._objective(result)
        if error or not result:
            ho_trial["state"] = hpo.base.JOB_STATE_ERROR
            ho_trial["misc"]["error"] = ("TuneError", "Tune Error")
        else:
            ho_trial["state"] = hpo.base.JOB_STATE_DONE
            # A missing or NaN metric: a failed evaluation, which TPE leaves out.
            ho_trial["result"] = ({"loss": loss, "status": "ok"} if loss is not None
                                  else {"status": "fail"})
        self._trials.refresh()

    @staticmethod
    def convert_search_space(spec: dict, prefix: str = "") -> dict:
        """A dict of tune Domains -> a HyperOpt space (labels are the "a/b" paths)."""
        parse_space(spec, "HyperOptSearch", "HyperOpt", nested_choices=True)
        return _to_hyperopt(_hyperopt(), spec, tuple(prefix.split("/")) if prefix else ())


# ---- tune space <-> HyperOpt ------------------------------------------------------------------
def _to_hyperopt(hpo: Any, value: Any, path: tuple) -> Any:
    """The tune spec with each Domain replaced by a HyperOpt expression labelled by its path.

    A choice samples the category's index; a category holding Domains gets its own
    expressions (labels ``<key>/<index>/...``), so it is a conditional space.
    """
    if isinstance(value, Domain):
        param = to_param(path, value, "HyperOptSearch", "HyperOpt", nested_choices=True)
        return _hp_expression(hpo, param)
    if isinstance(value, dict):
        return {k: _to_hyperopt(hpo, v, path + (k,)) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_hyperopt(hpo, v, path + (i,)) for i, v in enumerate(value)]
    return value


def _hp_expression(hpo: Any, param: Param) -> Any:
    hp, scope = hpo.hp, hpo.pyll.scope
    label = param.name
    if param.kind == "choice":
        options = [_to_hyperopt(hpo, c, param.path + (i,)) if holds_domain(c) else i
                   for i, c in enumerate(param.categories)]
        return hp.choice(label, options)
    if param.dist == "normal":
        expr = (hp.qnormal(label, param.mean, param.sd, param.q) if param.q is not None
                else hp.normal(label, param.mean, param.sd))
        return scope.int(expr) if param.kind == "int" else expr
    if param.kind == "float":
        if param.log:
            low, high = np.log(param.low), np.log(param.high)
            return (hp.qloguniform(label, low, high, param.q) if param.q is not None
                    else hp.loguniform(label, low, high))
        return (hp.quniform(label, param.low, param.high, param.q) if param.q is not None
                else hp.uniform(label, param.low, param.high))
    q = param.q or 1
    if param.log:  # round(x / q) * q stays within the inclusive bounds
        high = param.high + 0.5 * q - 1e-9 if param.q is None else param.high
        return scope.int(hp.qloguniform(label, np.log(param.low), np.log(high), q))
    if param.q is None:
        return hp.uniformint(label, param.low, param.high)
    return scope.int(hp.quniform(label, param.low, param.high, q))


def _resolve(value: Any, path: tuple, vals: dict) -> Any:
    """The config for HyperOpt's assignment ``vals`` (label -> value)."""
    if isinstance(value, Categorical) and not value.is_grid():
        index = int(vals[key_name(path)])
        category = value.categories[index]
        if holds_domain(category):
            return _resolve(category, path + (index,), vals)
        return copy.deepcopy(category)
    if isinstance(value, Domain):
        param = to_param(path, value, "HyperOptSearch", "HyperOpt", nested_choices=True)
        return param.fix(vals[key_name(path)])
    if isinstance(value, dict):
        return {k: _resolve(v, path + (k,), vals) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, path + (i,), vals) for i, v in enumerate(value)]
    return copy.deepcopy(value)


def _indices_for_choices(expr: Any, point: dict) -> dict:
    """For a user's HyperOpt space: ``hp.choice`` values given directly -> their index."""
    from hyperopt import pyll

    options: dict[str, list] = {}
    for node in pyll.dfs(pyll.as_apply(expr)):
        if node.name == "switch" and node.pos_args and node.pos_args[0].name == "hyperopt_param":
            label = node.pos_args[0].pos_args[0].obj
            options[label] = [a.obj if a.name == "literal" else a for a in node.pos_args[1:]]
    vals = dict(point)
    for label, value in point.items():
        if label in options:
            literals = options[label]
            if value not in literals:
                raise ValueError(
                    f"Did not find category with value `{value}` in hyperopt parameter "
                    f"`{label}`. Please make sure the specified category is valid (give the "
                    f"value itself, not its index).")
            vals[label] = literals.index(value)
    return vals


def _native_tree(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _native_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_native_tree(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
