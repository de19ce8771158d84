"""Stoppers: decide when a trial, or the whole experiment, should stop (``ray.tune.stopper``).

Besides the 1.x stopper classes this module holds the two helpers the
controller uses for ``tune.run(stop=...)``: :func:`make_stopper` turns the
argument into ``(dict criteria, Stopper | None)`` once, and
:func:`dict_criteria_met` checks dict criteria against each (flattened) result.
"""

from __future__ import annotations

import datetime
import inspect
import logging
import math
import time
import warnings
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Iterator
from numbers import Number
from typing import Any

import numpy as np

from tune_async.error import TuneError, TuneValueError
from tune_async.utils.util import flatten_dict

logger = logging.getLogger(__name__)

_MODES = ("min", "max")


class Stopper:
    """Base class for stoppers.

    Subclass it and implement ``__call__(trial_id, result)`` (True stops that
    trial) and ``stop_all()`` (True stops every trial and ends the search).
    Either may also be a coroutine function: the controller awaits it.

    .. code-block:: python

        class TimeStopper(tune.Stopper):
            def __init__(self):
                self._start = time.time()
                self._deadline = 300

            def __call__(self, trial_id, result):
                return False

            def stop_all(self):
                return time.time() - self._start > self._deadline
    """

    def __call__(self, trial_id: str, result: dict) -> bool:
        """Return True if the trial ``trial_id`` should stop after ``result``."""
        raise NotImplementedError

    def stop_all(self) -> bool:
        """Return True if the whole experiment should stop (checked every controller step)."""
        raise NotImplementedError


class NoopStopper(Stopper):
    """Never stops anything (the default)."""

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return False


class CombinedStopper(Stopper):
    """Stop when any of the given stoppers says so (OR on both methods).

    The children are asked in order and the first True ends the round (1.x): a
    child after it is not called with that result, nor asked ``stop_all()``.

    Args:
        *stoppers (Stopper): the stoppers to combine. Async children are
            supported: the combined hook then returns an awaitable.
    """

    def __init__(self, *stoppers: Stopper):
        for i, stopper in enumerate(stoppers):
            if not isinstance(stopper, Stopper):
                raise TypeError(
                    f"CombinedStopper: every argument must be a Stopper instance, got "
                    f"{type(stopper).__name__} at position {i}"
                )
        self._stoppers = stoppers

    def __call__(self, trial_id: str, result: dict) -> Any:
        # Stops asking at the first True, as 1.x's ``any(<generator>)``: the children
        # after it do not see this result.
        return _any_of(s(trial_id, result) for s in self._stoppers)

    def stop_all(self) -> Any:
        return _any_of(s.stop_all() for s in self._stoppers)


def _any_of(values: Iterator) -> Any:
    """``any(values)`` over a lazy iterator; from its first awaitable on, an awaitable."""
    for value in values:
        if inspect.isawaitable(value):
            return _any_of_awaited(value, values)
        if value:
            return True
    return False


async def _any_of_awaited(first: Awaitable, rest: Iterator) -> bool:
    if await first:
        return True
    for value in rest:
        if inspect.isawaitable(value):
            value = await value
        if value:
            return True
    return False


class FunctionStopper(Stopper):
    """Wrap a function ``fn(trial_id, result) -> bool`` as a trial stopper.

    Args:
        function (Callable[[str, dict], bool]): returns True to stop the trial.
            ``stop_all()`` is always False.
    """

    def __init__(self, function: Callable[[str, dict], bool]):
        if not callable(function):
            raise TypeError(
                f"FunctionStopper: `function` must be callable, got {type(function).__name__}"
            )
        self._fn = function

    def __call__(self, trial_id: str, result: dict) -> bool:
        return self._fn(trial_id, result)

    def stop_all(self) -> bool:
        return False

    @classmethod
    def is_valid_function(cls, fn: Any) -> bool:
        """True if ``fn`` is a plain callable (not a Stopper).

        Raises:
            ValueError: ``fn`` has a ``stop_all`` attribute but does not subclass
                Stopper (it would silently never stop the experiment).
        """
        is_function = callable(fn) and not isinstance(fn, Stopper)
        if is_function and hasattr(fn, "stop_all"):
            raise ValueError(
                "Stop object must be a tune_async.Stopper subclass to be detected correctly "
                f"(got {type(fn).__name__}, which has `stop_all` but is not a Stopper)."
            )
        return is_function


class MaximumIterationStopper(Stopper):
    """Stop a trial after it reported ``max_iter`` results.

    Args:
        max_iter (int): number of results after which a trial stops.
    """

    def __init__(self, max_iter: int):
        if isinstance(max_iter, bool) or not isinstance(max_iter, Number):
            raise ValueError(
                f"MaximumIterationStopper: `max_iter` must be a number, got {max_iter!r}"
            )
        self._max_iter = max_iter
        self._iter: defaultdict[str, int] = defaultdict(int)

    def __call__(self, trial_id: str, result: dict) -> bool:
        self._iter[trial_id] += 1
        return self._iter[trial_id] >= self._max_iter

    def stop_all(self) -> bool:
        return False


class ExperimentPlateauStopper(Stopper):
    """Stop the whole experiment when the top results have plateaued.

    Keeps the ``top`` best values of ``metric`` across all trials; once there
    are ``top`` of them and their standard deviation is ``<= std`` for more than
    ``patience`` consecutive results, every trial is stopped.

    Args:
        metric (str): the metric to watch.
        std (float): the plateau threshold on the standard deviation. Default 0.001.
        top (int): how many best values to consider (an int > 1). Default 10.
        mode (str): "min" or "max": which values are best. Default "min".
        patience (int): consecutive plateaued results tolerated before stopping
            (an int >= 0). Default 0.
    """

    def __init__(
        self,
        metric: str,
        std: float = 0.001,
        top: int = 10,
        mode: str = "min",
        patience: int = 0,
    ):
        if mode not in _MODES:
            raise ValueError(
                f"The mode parameter can only be either min or max (got mode={mode!r})."
            )
        if isinstance(top, bool) or not isinstance(top, int) or top <= 1:
            raise ValueError(
                "Top results to consider must be a positive integer greater than one "
                f"(got top={top!r})."
            )
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(
                f"Patience must be a non-negative integer (got patience={patience!r})."
            )
        if not isinstance(std, float) or not std > 0:
            raise ValueError(
                f"The standard deviation must be a strictly positive float number (got std={std!r})."
            )
        self._metric = metric
        self._std = std
        self._top = top
        self._mode = mode
        self._patience = patience
        self._iterations = 0
        self._top_values: list = []

    def __call__(self, trial_id: str, result: dict) -> bool:
        self._top_values.append(result[self._metric])
        self._top_values.sort()
        if self._mode == "min":
            del self._top_values[self._top :]
        else:
            del self._top_values[: -self._top]
        # Count consecutive plateaued results; any non-plateau resets the count.
        self._iterations = self._iterations + 1 if self.has_plateaued() else 0
        return self.stop_all()

    def has_plateaued(self) -> bool:
        return len(self._top_values) == self._top and bool(np.std(self._top_values) <= self._std)

    def stop_all(self) -> bool:
        return self.has_plateaued() and self._iterations >= self._patience


class EarlyStopping(ExperimentPlateauStopper):
    """Deprecated alias of :class:`ExperimentPlateauStopper`."""

    def __init__(self, *args: Any, **kwargs: Any):
        warnings.warn(
            "The `EarlyStopping` stopper has been renamed to `ExperimentPlateauStopper`. "
            "The old name will be removed in a future version.",
            DeprecationWarning,
            stacklevel=2,
        )
        super().__init__(*args, **kwargs)


class TrialPlateauStopper(Stopper):
    """Stop a trial whose metric has plateaued.

    After ``grace_period`` results, and once ``num_results`` values are in the
    window, the trial stops if the standard deviation of the window is below
    ``std`` (and, with ``metric_threshold``, the latest value is at or past it).

    Args:
        metric (str): the metric to watch.
        std (float): the plateau threshold on the standard deviation. Default 0.01.
        num_results (int): the window size. Default 4.
        grace_period (int): minimum number of results before stopping. Default 4.
        metric_threshold (float | None): if set, only stop once the metric is
            below ("min") or above ("max") this value. Default None.
        mode (str | None): "min" or "max"; required with ``metric_threshold``.
    """

    def __init__(
        self,
        metric: str,
        std: float = 0.01,
        num_results: int = 4,
        grace_period: int = 4,
        metric_threshold: float | None = None,
        mode: str | None = None,
    ):
        if metric_threshold is not None and mode not in _MODES:
            raise ValueError(
                "When specifying a `metric_threshold`, the `mode` argument has to be one of "
                f"[min, max]. Got: {mode}"
            )
        if mode is not None and mode not in _MODES:
            raise ValueError(
                f"TrialPlateauStopper: `mode` must be None, 'min' or 'max', got {mode!r}"
            )
        if isinstance(num_results, bool) or not isinstance(num_results, int) or num_results < 1:
            raise ValueError(
                f"TrialPlateauStopper: `num_results` must be a positive int, got {num_results!r}"
            )
        self._metric = metric
        self._std = std
        self._num_results = num_results
        self._grace_period = grace_period
        self._metric_threshold = metric_threshold
        self._mode = mode
        self._iter: defaultdict[str, int] = defaultdict(int)
        self._windows: dict[str, deque] = {}

    def __call__(self, trial_id: str, result: dict) -> bool:
        value = result.get(self._metric)
        window = self._windows.get(trial_id)
        if window is None:
            window = self._windows[trial_id] = deque(maxlen=self._num_results)
        window.append(value)
        self._iter[trial_id] += 1
        if self._iter[trial_id] < self._grace_period or len(window) < self._num_results:
            return False
        if self._metric_threshold is not None and not self._past_threshold(value):
            return False
        try:
            current_std = float(np.std(np.asarray(window, dtype=float)))
        except (TypeError, ValueError):
            # A missing or non-numeric value in the window: no plateau.
            return False
        return current_std < self._std

    def _past_threshold(self, value: Any) -> bool:
        if not isinstance(value, Number):
            return False
        if self._mode == "min":
            return value <= self._metric_threshold
        return value >= self._metric_threshold

    def stop_all(self) -> bool:
        return False


class TimeoutStopper(Stopper):
    """Stop the whole experiment after ``timeout``.

    The clock starts at the first ``stop_all()`` call (the controller's first
    step), so setup time is not counted; that first call returns False.

    Args:
        timeout (int | float | datetime.timedelta): the budget (seconds if a number).
        clock (Callable[[], float]): monotonic clock in seconds. Default
            ``time.monotonic``; tests pass a fake one.
    """

    def __init__(
        self,
        timeout: float | datetime.timedelta,
        clock: Callable[[], float] = time.monotonic,
    ):
        if isinstance(timeout, datetime.timedelta):
            seconds = timeout.total_seconds()
        elif isinstance(timeout, Number) and not isinstance(timeout, bool):
            seconds = float(timeout)
        else:
            raise ValueError(
                "`timeout` parameter has to be either a number or a `datetime.timedelta` "
                f"object. Found: {type(timeout)}"
            )
        if math.isnan(seconds) or seconds < 0:
            raise ValueError(f"`timeout` must be a non-negative duration, got {timeout!r}")
        if not callable(clock):
            raise TypeError(f"TimeoutStopper: `clock` must be callable, got {clock!r}")
        self._timeout_seconds = seconds
        self._clock = clock
        self._start: float | None = None

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        now = self._clock()
        if self._start is None:
            self._start = now
            return False
        if now - self._start >= self._timeout_seconds:
            logger.info(
                "Reached timeout of %s seconds. Stopping all trials.", self._timeout_seconds
            )
            return True
        return False


# ---- tune.run(stop=...) ----------------------------------------------------


def make_stopper(stop: Any) -> tuple[dict, Stopper | None]:
    """Turn ``tune.run``'s ``stop`` argument into ``(dict criteria, stopper)``.

    Args:
        stop: None; a dict ``{result key: threshold}`` (nested dicts are
            flattened to ``"a/b"`` keys); a :class:`Stopper`; a list of
            Stoppers (combined with OR); or a function ``(trial_id, result) -> bool``.

    Returns:
        ``(criteria, stopper)``: ``criteria`` for :func:`dict_criteria_met`
        (``{}`` if none), ``stopper`` or None.

    Raises:
        ValueError: anything else, a dict with a non-numeric threshold, a list
            holding a non-Stopper, or a callable with ``stop_all`` that is not a Stopper.
        TuneError: a function that cannot take ``(trial_id, result)`` (also a ValueError).
    """
    if stop is None:
        return {}, None
    if isinstance(stop, dict):
        return _validate_criteria(stop), None
    if isinstance(stop, Stopper):
        return {}, stop
    if isinstance(stop, (list, tuple)):
        bad = [type(s).__name__ for s in stop if not isinstance(s, Stopper)]
        if bad:
            raise ValueError(
                "If you pass a list as the `stop` argument to `tune.run()`, each element must "
                f"be an instance of `tune.stopper.Stopper`. Got {bad}."
            )
        if not stop:
            return {}, None
        return {}, stop[0] if len(stop) == 1 else CombinedStopper(*stop)
    if callable(stop):
        if FunctionStopper.is_valid_function(stop):
            _check_stop_signature(stop)
            return {}, FunctionStopper(stop)
    raise ValueError(
        f"Invalid stop criteria: {stop!r}. Must be a dict, a callable (trial_id, result) -> "
        "bool, a Stopper or a list of Stoppers."
    )


def _validate_criteria(stop: dict) -> dict:
    criteria = flatten_dict(stop)
    for key, value in criteria.items():
        if not isinstance(key, str):
            raise ValueError(f"Invalid stop criteria: keys must be strings, got {key!r}")
        if not isinstance(value, Number):
            raise ValueError(
                f"Invalid stop criteria: the threshold for {key!r} must be a number, got {value!r}"
            )
    return criteria


def _check_stop_signature(fn: Callable) -> None:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins without a signature: trust them
        return
    try:
        signature.bind("trial_id", {})
    except TypeError:
        # TuneError as in 1.x (where the first result failed the trial), raised up front.
        raise TuneValueError(
            f"Invalid stop criteria (`stop`): the function {fn!r} must accept two arguments "
            f"(trial_id, result), its signature is {signature}"
        ) from None


def dict_criteria_met(criteria: dict, flat_result: dict) -> bool:
    """True if any ``flat_result[key] >= threshold`` for the dict stop criteria.

    ``flat_result`` is the result flattened with "/" (nested keys as "a/b").
    A result with ``done=True`` stopping the trial is the caller's check, made
    before this one (a bare ``{"done": True}`` result need not hold the keys).

    Raises:
        TuneError: a criteria key is missing from the result.
    """
    for key, threshold in criteria.items():
        try:
            value = flat_result[key]
        except KeyError:
            raise TuneError(
                f"Stopping criteria {key} not provided in result {flat_result}."
            ) from None
        try:
            if value >= threshold:
                return True
        except TypeError:
            raise TuneError(
                f"Stopping criteria {key}: cannot compare the result value {value!r} "
                f"with the threshold {threshold!r}."
            ) from None
    return False
