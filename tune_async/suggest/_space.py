"""Shared plumbing of the model-based searcher integrations (``suggest/optuna.py`` ...).

* :func:`import_optional`: import an optional library lazily; a missing one is an
  ImportError naming the pip extra to install.
* :func:`parse_space`: walk a tune search space (nested dicts and lists) into
  :class:`Param` records, one per Domain, with their 1.x meaning spelled out
  (inclusive bounds, quantization, log base, normal mean/sd, categories), and a
  template holding the constants. ``grid_search`` and ``sample_from`` cannot be
  modelled: they are a clear ``ValueError`` naming the key.
* :meth:`SearchSpace.to_config`: turn the library's flat values back into a
  nested config (quantized, cast, clipped; constants merged in).
* :class:`LibrarySearcher`: the 1.x lifecycle every integration shares (a space
  from the constructor or from ``tune.run(config=...)``, metric/mode, points to
  evaluate, the checks at suggest time, state as one detached pickle).
"""

from __future__ import annotations

import copy
import importlib
import math
import pickle
from collections.abc import Callable, Iterable
from typing import Any

import attrs
import cloudpickle
import numpy as np

from tune_async.result import DEFAULT_METRIC
from tune_async.search.sample import (
    Categorical,
    Domain,
    Float,
    Function,
    Integer,
    LogUniform,
    Normal,
    Quantized,
    Uniform,
)
from tune_async.search.variant_generator import parse_spec_vars
from tune_async.suggest.suggestion import Searcher

UNDEFINED_SEARCH_SPACE = (
    "Trying to sample a configuration from {cls}, but no search space has been defined. "
    "Either pass the `{space}` argument when instantiating the search algorithm, or pass "
    "a `config` to `tune.run()`."
)
UNDEFINED_METRIC_MODE = (
    "Trying to sample a configuration from {cls}, but the `metric` ({metric}) or `mode` "
    "({mode}) parameters have not been set. Either pass these arguments when instantiating "
    "the search algorithm, or pass them to `tune.run()`."
)


# ---- optional libraries ------------------------------------------------------------------
def import_optional(module: str, *, searcher: str, extra: str, package: str) -> Any:
    """Import ``module``; if it is missing, an ImportError naming the pip extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{searcher} needs the optional `{package}` package: "
            f"pip install 'tune_async[{extra}]' (or: pip install {package}). ({exc})"
        ) from exc


def unavailable(name: str, reason: str) -> Callable[[str], Any]:
    """A module ``__getattr__`` for an integration that cannot work here: importing
    ``name`` raises an ImportError that says why (the module itself imports)."""

    def __getattr__(attr: str) -> Any:
        if attr == name:
            raise ImportError(f"{name} is not available in tune_async: {reason}")
        raise AttributeError(attr)

    return __getattr__


# ---- the search space ----------------------------------------------------------------------
@attrs.frozen
class Param:
    """One Domain of a search space, in plain terms.

    ``kind`` is ``"float"``, ``"int"`` or ``"choice"``; ``dist`` is ``"uniform"``,
    ``"loguniform"`` or ``"normal"``. ``low``/``high`` are *inclusive* bounds of
    the values the domain yields (for integers: ``randint(0, 10)`` -> 0..9,
    ``qrandint(0, 10, 5)`` -> 0..10), ``None`` for a normal distribution.
    """

    path: tuple
    name: str
    domain: Domain
    kind: str
    dist: str
    low: float | None = None
    high: float | None = None
    q: float | None = None
    base: float = 10.0
    mean: float = 0.0
    sd: float = 1.0
    categories: tuple = ()

    @property
    def log(self) -> bool:
        return self.dist == "loguniform"

    def describe(self) -> str:
        """How a user wrote it, e.g. ``tune.qloguniform``."""
        if self.kind == "choice":
            return "tune.choice"
        name = {
            ("float", "uniform"): "uniform", ("float", "loguniform"): "loguniform",
            ("float", "normal"): "randn", ("int", "uniform"): "randint",
            ("int", "loguniform"): "lograndint", ("int", "normal"): "randn",
        }[(self.kind, self.dist)]
        return f"tune.{'q' if self.q is not None else ''}{name}"

    def fix(self, value: Any) -> Any:
        """A library's value -> the value tune's domain would yield (quantized, cast,
        clipped to the bounds, a plain Python value)."""
        if self.kind == "choice":
            return _native(value)
        value = float(_native(value))
        if self.q is not None:
            value = round(value / self.q) * self.q
            if float(self.q).is_integer() and self.kind == "float":
                value = float(round(value))
            else:
                value = _trim_float(value, self.q)
        if self.low is not None:
            value = max(self.low, value)
        if self.high is not None:
            value = min(self.high, value)
        if self.kind == "int":
            return int(round(value))
        return float(value)

    # A continuous stand-in, for libraries that model real intervals only (BayesOpt, ...):
    # log domains are searched in log space, integers on [low - 0.5, high + 0.5].
    def interval(self) -> tuple[float, float]:
        if self.kind == "choice" or self.dist == "normal":
            raise ValueError(f"{self.describe()} has no bounded interval")
        low, high = float(self.low), float(self.high)
        if self.kind == "int":
            low, high = low - 0.49, high + 0.49
            if self.log:
                low = max(low, float(self.low) * 0.51)
        if self.log:
            return math.log(low), math.log(high)
        return low, high

    def from_interval(self, x: float) -> Any:
        return self.fix(math.exp(x) if self.log else x)

    def to_interval(self, value: Any) -> float:
        return math.log(value) if self.log else float(value)

    def contains(self, value: Any) -> bool:
        if self.kind == "choice":
            return any(_same(value, c) for c in self.categories)
        if not isinstance(value, (int, float, np.number)) or isinstance(value, bool):
            return False
        if self.low is not None and value < self.low - 1e-12:
            return False
        return not (self.high is not None and value > self.high + 1e-12)

    def category_index(self, value: Any) -> int:
        for index, category in enumerate(self.categories):
            if _same(value, category):
                return index
        raise ValueError(f"{value!r} is not one of the categories {list(self.categories)} "
                         f"of config key {self.name!r}")


@attrs.define
class SearchSpace:
    """A parsed tune search space: its Params and the template holding the constants."""

    params: list[Param]
    template: Any  # the spec with every Domain replaced by None

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def by_name(self) -> dict[str, Param]:
        return {p.name: p for p in self.params}

    def to_config(self, values: dict[str, Any], fix: bool = True) -> dict:
        """Flat ``{name: value}`` -> the nested config, constants included."""
        config = copy.deepcopy(self.template)
        for param in self.params:
            if param.name in values:
                value = values[param.name]
                assign(config, param.path, param.fix(value) if fix else _native(value))
        return config

    def flat_point(self, point: dict, searcher: str, complete: bool = True) -> dict:
        """A user's point (nested, or flat with ``a/b`` keys) -> ``{name: value}``.

        Unknown keys are a ValueError; so are missing ones when ``complete``. Values are
        checked against their domain (a category must be one of its categories).
        """
        if not isinstance(point, dict):
            raise TypeError(f"{searcher}: points_to_evaluate must be a list of dicts, got "
                            f"an item {point!r}")
        names = self.by_name()
        flat = _flatten_point(point, names)
        unknown = sorted(set(flat) - set(names))
        if unknown:
            raise ValueError(f"{searcher}: points_to_evaluate has keys that are not in the "
                             f"search space: {unknown} (search space keys: {sorted(names)})")
        missing = [n for n in names if n not in flat]
        if complete and missing:
            raise ValueError(f"{searcher}: a point of points_to_evaluate lacks the keys "
                             f"{missing}: give a value for every key of the search space")
        for name, value in flat.items():
            if not names[name].contains(value):
                raise ValueError(f"{searcher}: points_to_evaluate: {name}={value!r} is outside "
                                 f"the domain {names[name].domain!r}")
        return flat


def parse_space(spec: dict, searcher: str, library: str,
                nested_choices: bool = False) -> SearchSpace:
    """Walk a tune search space into a :class:`SearchSpace`.

    Raises:
        ValueError: a ``grid_search``, ``sample_from``/``eval`` value, or (unless
            ``nested_choices``) a ``choice`` whose categories hold Domains, naming its key.
    """
    if not isinstance(spec, dict):
        raise TypeError(f"{searcher}: the search space must be a dict, got {spec!r}")
    _, domain_vars, grid_vars = parse_spec_vars(spec)
    for path, _ in grid_vars:
        raise ValueError(
            f"{searcher}: grid_search (config key {key_name(path)!r}) cannot be converted to "
            f"a {library} search space: a model-based searcher picks values itself. Use "
            f"tune.choice([...]) for it, or BasicVariantGenerator for a grid."
        )
    params = []
    template = copy.deepcopy(_without_domains(spec))
    for path, domain in sorted(domain_vars, key=lambda item: key_name(item[0])):
        params.append(to_param(path, domain, searcher, library, nested_choices))
    return SearchSpace(params=params, template=template)


def has_domains(spec: Any) -> bool:
    """True if ``spec`` is a dict holding tune Domains or grid searches (a tune space)."""
    if not isinstance(spec, dict) or not spec:
        return False
    _, domain_vars, grid_vars = parse_spec_vars(spec)
    return bool(domain_vars or grid_vars)


def key_name(path: tuple) -> str:
    return "/".join(str(p) for p in path)


def to_param(path: tuple, domain: Domain, searcher: str, library: str,
             nested_choices: bool = False) -> Param:
    """One Domain at ``path`` -> a :class:`Param` (ValueError for sample_from, naming it)."""
    name = key_name(path)
    if isinstance(domain, Function) or domain.is_function():
        raise ValueError(
            f"{searcher}: tune.sample_from (config key {name!r}) cannot be converted to a "
            f"{library} search space: the searcher cannot model a value computed by a "
            f"function. Use a tune Domain (tune.uniform, tune.choice, ...) instead."
        )
    sampler = domain.get_sampler()
    q = None
    if isinstance(sampler, Quantized):
        q = sampler.q
        sampler = sampler.get_sampler()
    if isinstance(domain, Categorical) and isinstance(sampler, Uniform):
        if not nested_choices and any(holds_domain(c) for c in domain.categories):
            raise ValueError(
                f"{searcher}: tune.choice (config key {name!r}) has categories that hold "
                f"search-space Domains; {library} cannot express a conditional space "
                f"(HyperOptSearch can)."
            )
        return Param(path, name, domain, "choice", "uniform", categories=tuple(domain.categories))
    if isinstance(domain, (Float, Integer)):
        kind = "float" if isinstance(domain, Float) else "int"
        if isinstance(sampler, Normal):
            return Param(path, name, domain, kind, "normal", q=q, mean=sampler.mean,
                         sd=sampler.sd)
        if isinstance(sampler, (Uniform, LogUniform)):
            dist = "loguniform" if isinstance(sampler, LogUniform) else "uniform"
            base = sampler.base if isinstance(sampler, LogUniform) else 10.0
            low, high = domain.lower, domain.upper
            if kind == "int" and q is None:
                high = high - 1  # randint/lograndint: the upper bound is exclusive
            if kind == "int" and high < low:
                raise ValueError(f"{searcher}: config key {name!r}: the integer domain "
                                 f"{domain!r} holds no value")
            return Param(path, name, domain, kind, dist, low=low, high=high, q=q, base=base)
    raise ValueError(
        f"{searcher}: {library} does not support parameters of type `{type(domain).__name__}` "
        f"with samplers of type `{type(sampler).__name__}` (config key {name!r})"
    )


def unsupported(param: Param, searcher: str, library: str, why: str = "") -> ValueError:
    """The error for a Domain a library cannot express, naming the key."""
    return ValueError(
        f"{searcher}: {param.describe()} (config key {param.name!r}) cannot be expressed in "
        f"a {library} search space{': ' + why if why else ''}."
    )


def holds_domain(value: Any) -> bool:
    """True if ``value`` is a Domain or a dict/list holding one."""
    if isinstance(value, Domain):
        return True
    if isinstance(value, dict):
        return any(holds_domain(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(holds_domain(v) for v in value)
    return False


def _without_domains(spec: Any) -> Any:
    if isinstance(spec, Domain):
        return None
    if isinstance(spec, dict):
        if len(spec) == 1 and ("grid_search" in spec or "eval" in spec):
            return None
        return {k: _without_domains(v) for k, v in spec.items()}
    if isinstance(spec, list):
        return [_without_domains(v) for v in spec]
    return spec


def assign(config: Any, path: tuple, value: Any) -> None:
    """Set ``config[path[0]][path[1]]... = value`` (dicts are made where missing)."""
    for key in path[:-1]:
        if isinstance(config, dict):
            config = config.setdefault(key, {})
        else:
            config = config[key]
    config[path[-1]] = value


def _flatten_point(point: dict, names: dict, prefix: str = "") -> dict:
    flat: dict = {}
    for key, value in point.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and name not in names:
            flat.update(_flatten_point(value, names, name + "/"))
        else:
            flat[name] = value
    return flat


def _native(value: Any) -> Any:
    """numpy scalars -> Python values (configs are written to JSON and compared)."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def _trim_float(value: float, q: float) -> float:
    """``0.30000000000000004`` -> ``0.3`` for a multiple of ``q = 0.1``."""
    decimals = max(0, -math.floor(math.log10(abs(q)))) + 6 if q else 12
    return round(value, decimals)


def _same(a: Any, b: Any) -> bool:
    """Equal values of the same type (numbers of any type, but never a bool for a number)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float, np.number)) and isinstance(b, (int, float, np.number)):
        return bool(a == b)
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:  # noqa: BLE001 (arrays and other odd categories)
        return a is b


# ---- the common searcher lifecycle --------------------------------------------------------
class LibrarySearcher(Searcher):
    """Base of the library integrations: the 1.x rules they all follow.

    Subclasses set ``_library`` and ``_space_arg``, call :meth:`_init_space` last in
    ``__init__``, implement ``_setup()`` (build the optimizer from ``self._space``: a
    :class:`SearchSpace`, or the library's own space), and ``suggest`` (starting with
    :meth:`_check_ready`) and ``on_trial_complete``. Everything in ``__dict__`` is saved
    and restored as one detached pickle.
    """

    _library = "the library"
    _space_arg = "space"

    def __init__(self, metric: Any = None, mode: Any = None,
                 points_to_evaluate: list[dict] | None = None,
                 evaluated_rewards: list | None = None, **kwargs: Any) -> None:
        if mode is not None and isinstance(mode, str) and mode not in ("min", "max"):
            raise ValueError(f"`mode` must be 'min' or 'max', got {mode!r}")
        super().__init__(metric=metric, mode=mode, **kwargs)
        if points_to_evaluate is not None and not isinstance(points_to_evaluate, (list, tuple)):
            raise TypeError(f"{type(self).__name__}: `points_to_evaluate` must be a list of "
                            f"dicts, got {points_to_evaluate!r}")
        if evaluated_rewards is not None:
            if not isinstance(evaluated_rewards, (list, tuple)):
                raise TypeError(f"{type(self).__name__}: `evaluated_rewards` must be a list, "
                                f"got {evaluated_rewards!r}")
            if len(evaluated_rewards) != len(points_to_evaluate or []):
                raise ValueError(
                    f"{type(self).__name__}: `evaluated_rewards` ({len(evaluated_rewards)}) "
                    f"must have the same length as `points_to_evaluate` "
                    f"({len(points_to_evaluate or [])})"
                )
        self._points_to_evaluate = copy.deepcopy(list(points_to_evaluate or []))
        self._evaluated_rewards = list(evaluated_rewards) if evaluated_rewards else None
        self._space: Any = None
        self._built = False
        self._live: dict[str, Any] = {}

    # ---- set-up ----------------------------------------------------------------------
    def _init_space(self, space: Any) -> None:
        """Called by subclasses at the end of ``__init__`` with the ``space`` argument."""
        if isinstance(space, dict) and space and has_domains(space):
            space = self._parse(space)
        if space is not None and not (isinstance(space, dict) and not space):
            self._space = space
            self._build_if_possible()

    def _parse(self, spec: dict) -> SearchSpace:
        return parse_space(spec, type(self).__name__, self._library)

    def _build_if_possible(self) -> None:
        """Build the optimizer once the space and the mode are known (so a mode that
        ``tune.run`` supplies later still counts)."""
        if self._built or self._space is None or not self._mode:
            return
        if self._metric is None:
            if isinstance(self._mode, list):
                raise ValueError(f"{type(self).__name__}: if `mode` is a list "
                                 "(multi-objective), `metric` must be given too")
            self._metric = DEFAULT_METRIC  # only a mode: the anonymous metric, as in 1.x
        self._setup()
        self._built = True

    def _setup(self) -> None:
        """Build the library's optimizer from ``self._space`` (and the mode)."""
        raise NotImplementedError

    def set_search_properties(self, metric: Any, mode: Any, config: dict) -> bool:
        """Take ``tune.run``'s metric, mode and config, unless this searcher has its own
        space: then only a metric/mode it lacks is taken, and False is returned (tune.run
        then refuses a config that still holds Domains)."""
        if self._space is not None:
            if metric and not self._metric:
                self._metric = metric
            if mode and not self._mode:
                self._mode = mode
            self._require_mode()
            self._build_if_possible()
            return False
        if not has_domains(config):
            raise ValueError(
                f"{type(self).__name__} has no search space: pass `{self._space_arg}=` to it, "
                f"or tune Domains (tune.uniform, tune.choice, ...) in tune.run(config=...)."
            )
        self._space = self._parse(config)
        if metric:
            self._metric = metric
        if mode:
            self._mode = mode
        self._require_mode()
        self._build_if_possible()
        return True

    def _require_mode(self) -> None:
        """tune.run gave its metric/mode and there is still no mode: fail before any trial."""
        if not self._mode:
            raise ValueError(
                f"{type(self).__name__} needs a `mode` ('min' or 'max') and a `metric`: pass "
                f"them to the searcher or to tune.run(metric=..., mode=...)."
            )

    def _check_ready(self) -> None:
        """The 1.x checks at suggest time: a space, a metric and a mode."""
        if self._space is None:
            raise RuntimeError(UNDEFINED_SEARCH_SPACE.format(cls=type(self).__name__,
                                                             space=self._space_arg))
        if not self._metric and self._mode:
            self._build_if_possible()
        if not self._metric or not self._mode:
            raise RuntimeError(UNDEFINED_METRIC_MODE.format(
                cls=type(self).__name__, metric=self._metric, mode=self._mode))
        self._build_if_possible()

    def _sign(self) -> float:
        """Multiply the metric by this to minimise it."""
        return -1.0 if self._mode == "max" else 1.0

    def _objective(self, result: dict | None) -> float | None:
        """The metric of a result, to minimise; None if missing, NaN or infinite."""
        if not result or self._metric not in result:
            return None
        try:
            value = float(result[self._metric])
        except (TypeError, ValueError):
            return None
        if not math.isfinite(value):
            return None
        return self._sign() * value

    # ---- state -----------------------------------------------------------------------
    def _state_dict(self) -> dict:
        return dict(self.__dict__)

    def get_state(self) -> dict:
        """Everything this searcher knows, pickled at once (a detached copy, safe to
        write while the searcher goes on)."""
        return {"pickled": cloudpickle.dumps(self._state_dict())}

    def set_state(self, state: dict) -> None:
        self.__dict__.update(pickle.loads(state["pickled"]))

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            f.write(cloudpickle.dumps(self.get_state()))

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.loads(f.read()))


def finite(values: Iterable[Any]) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)
