"""The Searcher interface (ray.tune 1.x ``suggestion.py``) and ConcurrencyLimiter.

A Searcher's per-trial hooks (``suggest``, ``on_trial_result``,
``on_trial_complete``, ``on_pause``/``on_unpause``) may be plain methods (1.x)
or coroutines; ``set_search_properties``, ``get_state``/``set_state`` and
``save``/``restore`` must be plain. The wrappers here
(and SearchGenerator, Repeater) stay synchronous for synchronous searchers and
return an awaitable when the wrapped searcher returned one, so the controller's
``call_hook`` awaits exactly when needed.
"""

from __future__ import annotations

import copy
import glob
import inspect
import logging
import os
from collections.abc import Callable
from typing import Any

from tune_async._hooks import overrides
from tune_async.error import AssertedValueError

logger = logging.getLogger(__name__)

_warned: set[str] = set()


def _warn_once(key: str, message: str, *args: Any) -> None:
    if key not in _warned:
        _warned.add(key)
        logger.warning(message, *args)


def _then(value: Any, fn: Callable[[Any], Any]) -> Any:
    """``fn(value)``, or a coroutine doing it after awaiting ``value`` if it is awaitable."""
    if inspect.isawaitable(value):

        async def _await_then() -> Any:
            return fn(await value)

        return _await_then()
    return fn(value)


def _forward_trial_complete(
    searcher: Searcher, trial_id: str, result: dict | None, error: bool
) -> Any:
    """Call ``searcher.on_trial_complete`` unless it is the base's NotImplementedError stub."""
    if not overrides(searcher, Searcher, "on_trial_complete"):
        _warn_once(
            f"complete:{type(searcher).__name__}",
            "%s does not implement on_trial_complete; completed trials are not reported to it.",
            type(searcher).__name__,
        )
        return None
    return searcher.on_trial_complete(trial_id, result=result, error=error)


def _set_search_properties(
    searcher: Any, metric: str | None, mode: str | None, config: dict
) -> Any:
    """Call ``set_search_properties``, with ``config`` unless it only takes (metric, mode)."""
    method = searcher.set_search_properties
    try:
        signature = inspect.signature(method)
        signature.bind(metric, mode, config)
    except TypeError:
        return method(metric, mode)
    except ValueError:  # no signature available: assume the 1.x one
        pass
    return method(metric, mode, config)


class Searcher:
    """Abstract class for wrapping suggesting algorithms.

    Custom algorithms can extend this class easily by overriding the
    ``suggest`` method to provide generated parameters for the trials.
    Any subclass that implements ``__init__`` must also call the constructor
    of this class: ``super().__init__(**kwargs)``.

    To track suggestions and their corresponding evaluations, ``suggest``
    receives a ``trial_id``, which is passed again to ``on_trial_result`` and
    ``on_trial_complete``. Any hook may be a coroutine function.

    Arguments:
        metric: The training result objective value attribute. A list of
            metrics for multi-objective searchers.
        mode: One of {"min", "max"} (a list of "min"/"max"/"obs" with a list
            of metrics): whether to minimize or maximize the metric.
        max_concurrent: Deprecated, use ConcurrencyLimiter (logs a warning).
        use_early_stopped_trials: Deprecated; ``False`` raises DeprecationWarning.
    """

    FINISHED = "FINISHED"
    CKPT_FILE_TMPL = "searcher-state-{}.pkl"

    def __init__(
        self,
        metric: str | list | None = None,
        mode: str | list | None = None,
        max_concurrent: int | None = None,
        use_early_stopped_trials: bool | None = None,
    ):
        if use_early_stopped_trials is False:
            raise DeprecationWarning(
                "Early stopped trials are now always used. If this is a "
                "problem, file an issue: https://github.com/ray-project/ray."
            )
        if max_concurrent is not None:
            logger.warning(
                "DeprecationWarning: `max_concurrent` is deprecated for this "
                "search algorithm. Use tune.suggest.ConcurrencyLimiter() instead."
            )
        self._metric = metric
        self._mode = mode
        if mode and metric:
            _check_metric_mode(metric, mode)

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict) -> bool:
        """Pass search properties to the searcher (``tune.run``'s metric, mode, config).

        Returns:
            False (the default) if the searcher refuses them, e.g. because it
            was already given a search space; True if it set them.
        """
        return False

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Optional notification for a trial's intermediate result."""

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        """Notification for the completion of a trial (required, as in 1.x).

        Arguments:
            trial_id: A unique string ID for the trial.
            result: The last result of the trial (None if it errored early).
            error: True if the trial errored.
        """
        raise NotImplementedError

    def suggest(self, trial_id: str) -> dict | None | str:
        """Queries the algorithm to retrieve the next set of parameters.

        Returns:
            A config dict; ``None`` if nothing can be suggested right now (the
            call is retried later); or ``Searcher.FINISHED`` when done.
        """
        raise NotImplementedError

    def save(self, checkpoint_path: str) -> None:
        """Save the searcher's state to ``checkpoint_path`` (NotImplementedError: not saved)."""
        raise NotImplementedError

    def restore(self, checkpoint_path: str) -> None:
        """Restore state written by :meth:`save`."""
        raise NotImplementedError

    def get_state(self) -> dict:
        raise NotImplementedError

    def set_state(self, state: dict) -> None:
        raise NotImplementedError

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        """Save to ``checkpoint_dir/searcher-state-<session_str>.pkl`` (if ``save`` exists)."""
        tmp_path = os.path.join(checkpoint_dir, ".tmp_searcher_ckpt")
        try:
            self.save(tmp_path)
        except NotImplementedError:
            _warn_once("save_to_dir", "save not implemented for Searcher. Skipping save.")
            return
        if os.path.exists(tmp_path):
            final = os.path.join(checkpoint_dir, self.CKPT_FILE_TMPL.format(session_str))
            os.replace(tmp_path, final)

    def restore_from_dir(self, checkpoint_dir: str) -> None:
        """Restore from the newest ``searcher-state-*.pkl`` in ``checkpoint_dir``."""
        paths = glob.glob(os.path.join(checkpoint_dir, self.CKPT_FILE_TMPL.format("*")))
        if not paths:
            raise RuntimeError(f"Searcher unable to find checkpoint in {checkpoint_dir}")
        self.restore(max(paths))

    def on_pause(self, trial_id: str) -> None:
        """Notification for a trial being paused (used by BOHB)."""

    def on_unpause(self, trial_id: str) -> None:
        """Notification for a trial being unpaused (used by BOHB)."""

    @property
    def metric(self) -> Any:
        """The training result objective value attribute."""
        return self._metric

    @property
    def mode(self) -> Any:
        """Whether to minimize ("min") or maximize ("max") the metric."""
        return self._mode


def _check_metric_mode(metric: Any, mode: Any) -> None:
    if isinstance(mode, str):
        if not isinstance(metric, str):
            raise ValueError("metric and mode must be of the same type (str or list)")
        if mode not in ("min", "max"):
            raise ValueError(f"if `mode` is a str it must be 'min' or 'max', got {mode!r}")
    elif isinstance(mode, list):
        if not isinstance(metric, list) or len(metric) != len(mode):
            raise ValueError("metric and mode lists must have the same length")
        if not all(m in ("min", "max", "obs") for m in mode):
            raise ValueError(f"All of mode must be 'min' or 'max' or 'obs', got {mode!r}")
    else:
        raise ValueError(f"mode must be either a list or a string, got {mode!r}")


class _WrapperSearcher(Searcher):
    """Shared delegation of the wrappers (ConcurrencyLimiter, Repeater)."""

    searcher: Searcher

    @property
    def metric(self) -> Any:
        return self.searcher.metric

    @property
    def mode(self) -> Any:
        return self.searcher.mode

    def set_search_properties(self, metric, mode, config) -> Any:
        return _set_search_properties(self.searcher, metric, mode, config)

    def on_trial_result(self, trial_id: str, result: dict) -> Any:
        return self.searcher.on_trial_result(trial_id, result)

    def on_pause(self, trial_id: str) -> Any:
        return self.searcher.on_pause(trial_id)

    def on_unpause(self, trial_id: str) -> Any:
        return self.searcher.on_unpause(trial_id)

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)

    def get_state(self) -> dict:
        """This wrapper's own state (without the wrapped searcher)."""
        state = {k: v for k, v in self.__dict__.items() if k != "searcher"}
        return copy.deepcopy(state)

    def set_state(self, state: dict) -> None:
        self.__dict__.update(state)


class ConcurrencyLimiter(_WrapperSearcher):
    """A wrapper algorithm for limiting the number of concurrent trials.

    Arguments:
        searcher: Searcher object that the ConcurrencyLimiter will manage.
        max_concurrent: Maximum concurrent samples from the underlying
            searcher (a positive int).
        batch: Whether to wait for all concurrent samples to finish before
            updating the underlying searcher. Default False.

    Example::

        search_alg = HyperOptSearch(metric="accuracy")
        search_alg = ConcurrencyLimiter(search_alg, max_concurrent=2)
        tune.run(trainable, search_alg=search_alg)
    """

    def __init__(self, searcher: Searcher, max_concurrent: int, batch: bool = False):
        if isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int):
            raise AssertedValueError(
                f"max_concurrent must be a positive int, got {max_concurrent!r}"
            )
        if max_concurrent <= 0:
            raise AssertedValueError(
                f"max_concurrent must be a positive int, got {max_concurrent!r}"
            )
        self.searcher = searcher
        self.max_concurrent = max_concurrent
        self.batch = batch
        self.live_trials: set[str] = set()
        self.cached_results: dict[str, tuple[dict | None, bool]] = {}
        super().__init__()

    def suggest(self, trial_id: str) -> Any:
        if trial_id in self.live_trials:
            raise AssertedValueError(
                f"Trial ID {trial_id} must be unique: already found in set."
            )
        if len(self.live_trials) >= self.max_concurrent:
            logger.debug(
                "Not providing a suggestion for %s due to concurrency limit: %s/%s.",
                trial_id,
                len(self.live_trials),
                self.max_concurrent,
            )
            return None

        def record(suggestion: Any) -> Any:
            if suggestion is not None and not _is_finished(suggestion):
                self.live_trials.add(trial_id)
            return suggestion

        return _then(self.searcher.suggest(trial_id), record)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> Any:
        if trial_id not in self.live_trials:
            return None
        if not self.batch:
            self.live_trials.discard(trial_id)
            return _forward_trial_complete(self.searcher, trial_id, result, error)
        self.cached_results[trial_id] = (result, error)
        if len(self.cached_results) < self.max_concurrent:
            return None
        # The full batch completed: update the underlying searcher at once.
        batch, self.cached_results = self.cached_results, {}
        pending = []
        for done_id, (done_result, done_error) in batch.items():
            self.live_trials.discard(done_id)
            value = _forward_trial_complete(self.searcher, done_id, done_result, done_error)
            if inspect.isawaitable(value):
                pending.append(value)
        if pending:
            return _await_all(pending)
        return None


async def _await_all(awaitables: list) -> None:
    for awaitable in awaitables:
        await awaitable


def _is_finished(suggestion: Any) -> bool:
    return isinstance(suggestion, str) and suggestion == Searcher.FINISHED
