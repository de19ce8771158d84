"""Search-space primitives: Domains, samplers and the ``tune.uniform``-style functions.

Behaviour follows ray.tune 1.x ``sample.py``: the same bounds rules, quantisation
and errors. Sampling draws from the **global** numpy random state unless a
``random_state`` is passed, so ``np.random.seed(0)`` before ``tune.run`` makes a
1.x script's random search reproducible, exactly as in 1.x::

    np.random.seed(1234)
    tune.run(train, config={"lr": tune.loguniform(1e-4, 1e-1)}, num_samples=8)

``BasicVariantGenerator(seed=...)`` seeds a private generator instead and leaves
the global state alone. ``random_state`` may be ``None`` (global state), an
``int`` seed, a ``numpy.random.Generator`` or a ``numpy.random.RandomState``.

All Domain and Sampler classes are module-level plain classes, so they pickle
(a :class:`Function` pickles when its function does, e.g. with cloudpickle).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from copy import copy
from inspect import signature
from numbers import Real
from typing import Any, Union

import numpy as np

from tune_async.error import TuneValueError

logger = logging.getLogger(__name__)

RandomState = Union[None, int, np.random.Generator, np.random.RandomState]

__all__ = [
    "Domain",
    "Float",
    "Integer",
    "Categorical",
    "Function",
    "Sampler",
    "BaseSampler",
    "Uniform",
    "LogUniform",
    "Normal",
    "Grid",
    "Quantized",
    "uniform",
    "quniform",
    "loguniform",
    "qloguniform",
    "randn",
    "qrandn",
    "randint",
    "qrandint",
    "lograndint",
    "qlograndint",
    "choice",
    "sample_from",
    "grid_search",
    "function",
]


# ---------------------------------------------------------------------------
# Random state plumbing


def _rng(random_state: RandomState) -> Any:
    """The object to draw from: the global numpy state, a Generator or a RandomState."""
    if random_state is None:
        # The np.random module functions use the global RandomState, which is
        # what np.random.seed() seeds (1.x behaviour).
        return np.random
    if isinstance(random_state, (np.random.Generator, np.random.RandomState)):
        return random_state
    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        return np.random.default_rng(int(random_state))
    raise TypeError(
        "random_state must be None, an int seed, a numpy.random.Generator or a "
        f"numpy.random.RandomState, got {type(random_state).__name__}"
    )


def _integers(rng: Any, low: int, high: int, size: int) -> np.ndarray:
    # Generator spells it ``integers``; RandomState and the np.random module ``randint``.
    if isinstance(rng, np.random.Generator):
        return rng.integers(low, high, size=size)
    return rng.randint(low, high, size=size)


def _one_or_list(domain: Domain, items: Any) -> Any:
    """1.x convention: a single draw returns a scalar (cast), several a list."""
    values = [domain.cast(item) for item in items]
    return values[0] if len(values) == 1 else values


# ---------------------------------------------------------------------------
# Samplers: plain data (base, mean, q...) read by searcher integrations; the
# Domain does the drawing, so one sampler class serves every domain type.


class Sampler:
    """Base of all samplers: ``sample(domain, spec=None, size=1, random_state=None)``."""

    def sample(
        self,
        domain: Domain,
        spec: Any = None,
        size: int = 1,
        random_state: RandomState = None,
    ) -> Any:
        raise NotImplementedError


class BaseSampler(Sampler):
    def __repr__(self) -> str:
        return "Base"


class Uniform(BaseSampler):
    """Uniform over the domain (bounds for numbers, categories for Categorical)."""

    def sample(self, domain, spec=None, size=1, random_state=None):
        return _one_or_list(domain, domain._draw_uniform(_rng(random_state), size))

    def __repr__(self) -> str:
        return "Uniform"


class LogUniform(BaseSampler):
    """Uniform in log space with logarithm ``base``."""

    def __init__(self, base: float = 10):
        self.base = base
        if not self.base > 0:
            raise ValueError(f"LogUniform base must be greater than 0, got {base!r}")

    def sample(self, domain, spec=None, size=1, random_state=None):
        return _one_or_list(domain, domain._draw_log(_rng(random_state), self.base, size))

    def __repr__(self) -> str:
        return f"LogUniform(base={self.base})"


class Normal(BaseSampler):
    """Normal distribution with ``mean`` and standard deviation ``sd``."""

    def __init__(self, mean: float = 0.0, sd: float = 1.0):
        self.mean = mean
        self.sd = sd
        if not self.sd > 0:
            raise ValueError(f"Normal sd (standard deviation) must be greater than 0, got {sd!r}")

    def sample(self, domain, spec=None, size=1, random_state=None):
        draws = _rng(random_state).normal(self.mean, self.sd, size=size)
        return _one_or_list(domain, draws)

    def __repr__(self) -> str:
        return f"Normal(mean={self.mean}, sd={self.sd})"


class Grid(Sampler):
    """Marks a Categorical as a grid dimension; the variant generator expands it."""

    def sample(self, domain, spec=None, size=1, random_state=None):
        raise RuntimeError("Do not call `sample()` on a Grid sampler: grid values are expanded.")

    def __repr__(self) -> str:
        return "Grid"


class Quantized(Sampler):
    """Rounds another sampler's values to an integer multiple of ``q``."""

    def __init__(self, sampler: Sampler, q: float):
        if not isinstance(sampler, Sampler):
            raise TypeError(f"Quantized() expects a sampler instance, got {sampler!r}")
        _check_number("q", q)
        if not q > 0:
            raise ValueError(f"Quantization factor q must be greater than 0, got {q!r}")
        self.sampler = sampler
        self.q = q

    def get_sampler(self) -> Sampler:
        return self.sampler

    def sample(self, domain, spec=None, size=1, random_state=None):
        values = self.sampler.sample(domain, spec, size, random_state)
        draws = values if isinstance(values, list) else [values]
        quantized = np.round(np.divide(draws, self.q)) * self.q
        return _one_or_list(domain, quantized)

    def __repr__(self) -> str:
        return f"Quantized(q={self.q}, {self.sampler!r})"


class CallSampler(BaseSampler):
    """Calls a :class:`Function` domain's function, with ``spec`` if it takes one."""

    def sample(self, domain, spec=None, size=1, random_state=None):
        specs = spec if isinstance(spec, list) else [spec] * size
        if domain.pass_spec:
            items = [domain.func(specs[i]) for i in range(size)]
        else:
            items = [domain.func() for _ in range(size)]
        return items[0] if len(items) == 1 else items

    def __repr__(self) -> str:
        return "CallSampler"


# ---------------------------------------------------------------------------
# Domains


def _check_number(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (Real, np.number)):
        raise TypeError(f"{name} must be a number, got {value!r}")


class Domain:
    """A parameter's search space: what values are valid and how to sample them.

    ``sample(spec=None, size=1, random_state=None)`` draws with the domain's
    sampler (its default sampler if none was set).
    """

    sampler: Sampler | None = None
    default_sampler_cls: type[Sampler] | None = None

    def cast(self, value: Any) -> Any:
        return value

    def set_sampler(self, sampler: Sampler, allow_override: bool = False) -> None:
        if self.sampler and not allow_override:
            raise ValueError(
                "You can only choose one sampler for parameter domains. "
                f"Existing sampler for parameter {self.__class__.__name__}: "
                f"{self.sampler}. Tried to add {sampler}"
            )
        self.sampler = sampler

    def get_sampler(self) -> Sampler:
        sampler = self.sampler
        if not sampler:
            sampler = self.default_sampler_cls()
        return sampler

    def sample(self, spec: Any = None, size: int = 1, random_state: RandomState = None) -> Any:
        return self.get_sampler().sample(self, spec=spec, size=size, random_state=random_state)

    def is_grid(self) -> bool:
        return isinstance(self.sampler, Grid)

    def is_function(self) -> bool:
        return False

    def is_valid(self, value: Any) -> bool:
        raise NotImplementedError

    @property
    def domain_str(self) -> str:
        return "(unknown)"

    def _draw_uniform(self, rng: Any, size: int) -> Any:
        raise ValueError(f"{type(self).__name__} does not support uniform sampling")

    def _draw_log(self, rng: Any, base: float, size: int) -> Any:
        raise ValueError(f"{type(self).__name__} does not support log-uniform sampling")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.domain_str} {self.get_sampler()!r}>"


class _Bounded(Domain):
    """A numeric domain between ``lower`` and ``upper`` (Float and Integer share this)."""

    lower: Any
    upper: Any

    def is_valid(self, value: Any) -> bool:
        return self.lower <= value <= self.upper

    @property
    def domain_str(self) -> str:
        return f"({self.lower}, {self.upper})"

    def _with(self, sampler: Sampler) -> Any:
        new = copy(self)
        new.set_sampler(sampler)
        return new

    def _check_order(self, note: str = "") -> None:
        # numpy would fail, or silently draw from a swapped range, only at the first
        # sample: refuse the definition instead (an open side, None, is not checked).
        lower, upper = self.lower, self.upper
        if lower == float("-inf") or upper == float("inf") or lower < upper:
            return
        raise ValueError(
            f"{type(self).__name__} domain: `lower` must be below `upper` (lower < upper"
            f"{note}), got lower={lower!r}, upper={upper!r}"
        )

    def _log_uniform_draw(self, rng: Any, base: float, size: int) -> Any:
        logmin = np.log(self.lower) / np.log(base)
        logmax = np.log(self.upper) / np.log(base)
        return base ** rng.uniform(logmin, logmax, size=size)


class Float(_Bounded):
    """Real numbers in ``[lower, upper]``; ``None`` means unbounded on that side."""

    default_sampler_cls = Uniform

    def __init__(self, lower: float | None, upper: float | None):
        if lower is not None:
            _check_number("lower", lower)
        if upper is not None:
            _check_number("upper", upper)
        self.lower = lower if lower is not None else float("-inf")
        self.upper = upper if upper is not None else float("inf")
        self._check_order()

    def cast(self, value: Any) -> float:
        return float(value)

    def uniform(self) -> Float:
        if not self.lower > float("-inf"):
            raise ValueError(
                "Uniform requires a lower bound. Make sure to set the `lower` parameter of `Float()`."
            )
        if not self.upper < float("inf"):
            raise ValueError(
                "Uniform requires a upper bound. Make sure to set the `upper` parameter of `Float()`."
            )
        return self._with(Uniform())

    def loguniform(self, base: float = 10) -> Float:
        _check_log_bounds(self.lower, self.upper)
        return self._with(LogUniform(base))

    def normal(self, mean: float = 0.0, sd: float = 1.0) -> Float:
        return self._with(Normal(mean, sd))

    def quantized(self, q: float) -> Float:
        _check_number("q", q)
        if not q > 0:
            raise ValueError(f"Quantization factor q must be greater than 0, got {q!r}")
        for name, bound in (("lower", self.lower), ("upper", self.upper)):
            if math.isfinite(bound) and not np.isclose(bound / q, round(bound / q)):
                raise ValueError(
                    f"Your {name} variable bound {bound} is not divisible by "
                    f"quantization factor {q}."
                )
        new = copy(self)
        new.set_sampler(Quantized(new.get_sampler(), q), allow_override=True)
        return new

    def _draw_uniform(self, rng, size):
        if not (math.isfinite(self.lower) and math.isfinite(self.upper)):
            raise ValueError("Uniform sampling needs finite lower and upper bounds")
        return rng.uniform(self.lower, self.upper, size=size)

    def _draw_log(self, rng, base, size):
        return self._log_uniform_draw(rng, base, size)


class Integer(_Bounded):
    """Integers from ``lower`` (inclusive) to ``upper`` (exclusive)."""

    default_sampler_cls = Uniform

    def __init__(self, lower: int, upper: int):
        _check_number("lower", lower)
        _check_number("upper", upper)
        self.lower = lower
        self.upper = upper
        self._check_order(", upper is exclusive")

    def cast(self, value: Any) -> int:
        return int(value)

    def uniform(self) -> Integer:
        return self._with(Uniform())

    def loguniform(self, base: float = 10) -> Integer:
        _check_log_bounds(self.lower, self.upper)
        return self._with(LogUniform(base))

    def quantized(self, q: int) -> Integer:
        # 1.x: no divisibility check for integers; rounding makes ``upper`` reachable.
        new = copy(self)
        new.set_sampler(Quantized(new.get_sampler(), q), allow_override=True)
        return new

    def _draw_uniform(self, rng, size):
        return _integers(rng, self.lower, self.upper, size)

    def _draw_log(self, rng, base, size):
        return np.round(self._log_uniform_draw(rng, base, size)).astype(int)


class Categorical(Domain):
    """One of a list of ``categories`` (any objects; returned as they are)."""

    default_sampler_cls = Uniform

    def __init__(self, categories: Sequence):
        if isinstance(categories, (str, bytes)) or not hasattr(categories, "__iter__"):
            raise TypeError(f"categories must be a list of values, got {categories!r}")
        self.categories = list(categories)

    def uniform(self) -> Categorical:
        if not self.categories:
            raise ValueError("choice requires a non-empty list of categories")
        return self._with(Uniform())

    def grid(self) -> Categorical:
        return self._with(Grid())

    def __len__(self) -> int:
        return len(self.categories)

    def __getitem__(self, item: int) -> Any:
        return self.categories[item]

    def is_valid(self, value: Any) -> bool:
        return value in self.categories

    @property
    def domain_str(self) -> str:
        return f"{self.categories}"

    def _with(self, sampler: Sampler) -> Categorical:
        new = copy(self)
        new.set_sampler(sampler)
        return new

    def _draw_uniform(self, rng, size):
        # Draw an index, not np.random.choice(categories): keeps the values'
        # types (1.3's choice coerced mixed lists through numpy).
        indices = _integers(rng, 0, len(self.categories), size)
        return [self.categories[int(i)] for i in indices]


class Function(Domain):
    """A value computed by ``func(spec)`` or ``func()`` (see :func:`sample_from`)."""

    default_sampler_cls = CallSampler

    def __init__(self, func: Callable):
        if not callable(func):
            raise TypeError(f"sample_from expects a callable, got {func!r}")
        self.func = func
        self.pass_spec = _takes_one_argument(func)

    def is_function(self) -> bool:
        return True

    def is_valid(self, value: Any) -> bool:
        return True

    @property
    def domain_str(self) -> str:
        return f"{self.func}"


def _takes_one_argument(func: Callable) -> bool:
    try:
        sig = signature(func)
    except (TypeError, ValueError):  # builtins without a signature: call with spec
        return True
    try:
        sig.bind({})
        return True
    except TypeError:
        pass
    try:
        sig.bind()
        return False
    except TypeError as exc:
        raise ValueError(
            "The function passed to a `Function` parameter must be callable "
            "with either 0 or 1 parameters."
        ) from exc


def _check_log_bounds(lower: float, upper: float) -> None:
    if not lower > 0:
        raise ValueError(
            "LogUniform requires a lower bound (`lower`) greater than 0. "
            f"Got: {lower}. Did you pass a variable that has "
            "been log-transformed? If so, pass the non-transformed value "
            "instead."
        )
    if not 0 < upper < float("inf"):
        raise ValueError(
            "LogUniform requires an upper bound (`upper`) greater than 0. "
            f"Got: {upper}. Did you pass a variable that has "
            "been log-transformed? If so, pass the non-transformed value "
            "instead."
        )


# ---------------------------------------------------------------------------
# Public functions (``tune.uniform`` and friends)


def sample_from(func: Callable) -> Function:
    """Specify that tune should sample configuration values from this function.

    Arguments:
        func: A callable taking no argument or one argument ``spec``. ``spec``
            gives attribute access to the other resolved values, e.g.
            ``tune.sample_from(lambda spec: spec.config.a * 2)``.
    """
    return Function(func)


def uniform(lower: float, upper: float) -> Float:
    """Sample a float value uniformly between ``lower`` and ``upper``.

    Sampling from ``tune.uniform(1, 10)`` is equivalent to sampling from
    ``np.random.uniform(1, 10)``.
    """
    return Float(lower, upper).uniform()


def quniform(lower: float, upper: float, q: float) -> Float:
    """Sample a quantized float value uniformly between ``lower`` and ``upper``.

    The value is rounded to an integer increment of ``q``; quantization makes the
    upper bound inclusive. ``lower`` and ``upper`` must be divisible by ``q``.
    """
    return Float(lower, upper).uniform().quantized(q)


def loguniform(lower: float, upper: float, base: float = 10) -> Float:
    """Sugar for sampling in different orders of magnitude.

    Arguments:
        lower: Lower boundary of the output interval (e.g. 1e-4); must be > 0.
        upper: Upper boundary of the output interval (e.g. 1e-2).
        base: Base of the log. Defaults to 10.
    """
    return Float(lower, upper).loguniform(base)


def qloguniform(lower: float, upper: float, q: float, base: float = 10) -> Float:
    """Sugar for sampling in different orders of magnitude, quantized to ``q``.

    Quantization makes the upper bound inclusive; the bounds must be divisible by ``q``.

    Arguments:
        lower: Lower boundary of the output interval (e.g. 1e-4); must be > 0.
        upper: Upper boundary of the output interval (e.g. 1e-2).
        q: Quantization number; the result is rounded to an integer increment of it.
        base: Base of the log. Defaults to 10.
    """
    return Float(lower, upper).loguniform(base).quantized(q)


def choice(categories: Sequence) -> Categorical:
    """Sample a categorical value.

    Sampling from ``tune.choice([1, 2])`` is equivalent to sampling from
    ``random.choice([1, 2])``.
    """
    return Categorical(categories).uniform()


def randint(lower: int, upper: int) -> Integer:
    """Sample an integer value uniformly between ``lower`` and ``upper``.

    ``lower`` is inclusive, ``upper`` is exclusive.
    """
    return Integer(lower, upper).uniform()


def lograndint(lower: int, upper: int, base: float = 10) -> Integer:
    """Sample an integer value log-uniformly between ``lower`` and ``upper``, with ``base``.

    ``lower`` is inclusive, ``upper`` is exclusive (rounding can reach it, as in 1.x).
    """
    return Integer(lower, upper).loguniform(base)


def qrandint(lower: int, upper: int, q: int = 1) -> Integer:
    """Sample an integer value uniformly between ``lower`` and ``upper``.

    ``lower`` is inclusive, ``upper`` is also inclusive (!). The value is rounded
    to an integer increment of ``q``; quantization makes the upper bound inclusive.
    """
    return Integer(lower, upper).uniform().quantized(q)


def qlograndint(lower: int, upper: int, q: int, base: float = 10) -> Integer:
    """Sample an integer value log-uniformly between ``lower`` and ``upper``, with ``base``.

    ``lower`` is inclusive, ``upper`` is also inclusive (!). The value is rounded
    to an integer increment of ``q``.
    """
    return Integer(lower, upper).loguniform(base).quantized(q)


def randn(mean: float = 0.0, sd: float = 1.0) -> Float:
    """Sample a float value normally with ``mean`` and ``sd``.

    Arguments:
        mean: Mean of the normal distribution. Defaults to 0.
        sd: Standard deviation of the normal distribution. Defaults to 1.
    """
    return Float(None, None).normal(mean, sd)


def qrandn(mean: float, sd: float, q: float) -> Float:
    """Sample a float value normally with ``mean`` and ``sd``, rounded to a multiple of ``q``.

    Arguments:
        mean: Mean of the normal distribution.
        sd: Standard deviation of the normal distribution.
        q: Quantization number; the result is rounded to an integer increment of it.
    """
    return Float(None, None).normal(mean, sd).quantized(q)


def grid_search(values: list) -> dict:
    """Convenience method for specifying grid search over a value.

    Every trial configuration is generated for each value (the full Cartesian
    product with the other grid-search variables, repeated ``num_samples`` times).

    Arguments:
        values: A list of values to iterate over.

    Raises:
        TuneError: if ``values`` is not a list, or is empty (also a ValueError).
    """
    if not isinstance(values, list):
        raise TuneValueError(f"Grid search expected list of values, got: {values!r}")
    if not values:
        raise TuneValueError("grid_search: `values` must be a non-empty list, got []")
    return {"grid_search": values}


def function(func: Callable) -> Callable:
    """Deprecated: wrapping with ``tune.function()`` is no longer needed; returns ``func``."""
    logger.warning("DeprecationWarning: wrapping %s with tune.function() is no longer needed", func)
    return func
