"""Callback base class (the ``ray.tune.Callback`` 1.x hooks) and the dispatcher.

Every hook gets keyword arguments only, plus ``**info`` for forward
compatibility. A hook may be a plain method or an ``async def``; the
controller awaits coroutine hooks and calls plain ones. The base class's
bodies are no-ops, so a subclass implements only what it needs and
:class:`CallbackList` never calls a hook a callback did not override.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import anyio

from tune_async._hooks import call_hook, overrides

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from tune_async.trial import Trial

HOOK_NAMES = (
    "setup",
    "on_step_begin",
    "on_step_end",
    "on_trial_start",
    "on_trial_restore",
    "on_trial_save",
    "on_trial_result",
    "on_trial_complete",
    "on_trial_error",
    "on_checkpoint",
    "on_experiment_end",
)


class Callback:
    """Tune base callback that can be extended and passed to ``tune.run(callbacks=[...])``.

    Override the hooks you need, as plain methods or as ``async def``. All
    arguments are passed by keyword. ``iteration`` is the controller's step
    counter (not a trial's training iteration); ``trials`` is the list of all
    trials of the experiment; ``trial`` is the trial the event is about.

    Example::

        class MyCallback(Callback):
            def on_trial_result(self, iteration, trials, trial, result, **info):
                print(f"Got result: {result['metric']}")
    """

    def setup(self, **info: Any) -> Any:
        """Called once at the very beginning of the experiment, before any trial starts."""

    def on_step_begin(self, iteration: int, trials: list[Trial], **info: Any) -> Any:
        """Called at the start of each controller step (before it processes an event).

        Arguments:
            iteration: Number of controller steps so far.
            trials: All trials of the experiment.
            **info: Kwargs dict for forward compatibility.
        """

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> Any:
        """Called at the end of each controller step; ``iteration`` was already incremented."""

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> Any:
        """Called after starting a trial instance.

        Arguments:
            iteration: Number of controller steps so far.
            trials: All trials of the experiment.
            trial: The trial that just started.
            **info: Kwargs dict for forward compatibility.
        """

    def on_trial_restore(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> Any:
        """Called after restoring a trial instance from a checkpoint."""

    def on_trial_save(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> Any:
        """Called after receiving a checkpoint from a trial (after :meth:`on_checkpoint`)."""

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any
    ) -> Any:
        """Called after receiving a result from a trial.

        Called after the stopper, scheduler and searcher have seen the result.

        Arguments:
            iteration: Number of controller steps so far.
            trials: All trials of the experiment.
            trial: The trial that reported the result.
            result: A copy of the result (mutating it does not affect Tune).
            **info: Kwargs dict for forward compatibility.
        """

    def on_trial_complete(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> Any:
        """Called after a trial instance completed (terminated without error)."""

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> Any:
        """Called after a trial errored and has no retries left (``max_failures``)."""

    def on_checkpoint(
        self, iteration: int, trials: list[Trial], trial: Trial, checkpoint: Any, **info: Any
    ) -> Any:
        """Called after a trial saved a persistent checkpoint (before :meth:`on_trial_save`).

        Arguments:
            checkpoint: The checkpoint that was saved.
        """

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> Any:
        """Called once after the experiment finished (or was stopped), before ``run`` returns.

        Arguments:
            trials: All trials of the experiment.
            **info: Kwargs dict for forward compatibility.
        """


class CallbackList:
    """Dispatches each hook to the callbacks that override it, in order.

    The per-hook lists are computed once, so a hook nobody implements costs a
    loop over an empty tuple. Sync hooks are called directly; only a returned
    awaitable is awaited.

    Args:
        callbacks: The callbacks, in call order.
    """

    def __init__(self, callbacks: Iterable[Callback] | None = None) -> None:
        self._callbacks: list[Callback] = list(callbacks or ())
        for cb in self._callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(
                    f"callbacks must be instances of tune_async.Callback, got {cb!r} "
                    f"of type {type(cb).__name__}"
                )
        self._hooks: dict[str, tuple[Any, ...]] = {
            name: tuple(getattr(cb, name) for cb in self._callbacks if overrides(cb, Callback, name))
            for name in HOOK_NAMES
        }
        # Bound once: the hot path reads a local attribute, not a dict.
        self._on_trial_result = self._hooks["on_trial_result"]

    def __len__(self) -> int:
        return len(self._callbacks)

    def __iter__(self) -> Iterator[Callback]:
        return iter(self._callbacks)

    def implements(self, hook: str) -> bool:
        """True if any callback overrides ``hook`` (lets callers skip building arguments)."""
        return bool(self._hooks[hook])

    async def _dispatch(self, name: str, kwargs: dict[str, Any]) -> None:
        for hook in self._hooks[name]:
            value = hook(**kwargs)
            if value is not None and inspect.isawaitable(value):
                await value

    async def setup(self, **info: Any) -> None:
        """``setup(**info)``; ``context`` (a PluginContext) only reaches hooks that take it,
        so a 1.x-style ``setup(self)`` keeps working."""
        from tune_async.plugin_context import accepts_context

        plain = {k: v for k, v in info.items() if k != "context"}
        for hook in self._hooks["setup"]:
            await call_hook(hook, **(info if accepts_context(hook) else plain))

    async def dispatch_bounded(self, name: str, timeout_s: float, **kwargs: Any) -> None:
        """Call hook ``name`` of each callback, giving up on one after ``timeout_s``.

        Used while cleaning up (e.g. a cancelled ``arun``): a hanging hook must not
        hang the experiment's end. Each one that is given up on is logged by name.
        """
        for hook in self._hooks[name]:
            with anyio.move_on_after(timeout_s) as scope:
                await call_hook(hook, **kwargs)
            if scope.cancelled_caught:
                logger.warning(
                    "Callback hook %s.%s did not finish within %.1f s; giving up on it.",
                    type(getattr(hook, "__self__", hook)).__name__, name, timeout_s,
                )

    async def on_step_begin(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        await self._dispatch("on_step_begin", dict(iteration=iteration, trials=trials, **info))

    async def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        await self._dispatch("on_step_end", dict(iteration=iteration, trials=trials, **info))

    async def on_trial_start(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        await self._dispatch(
            "on_trial_start", dict(iteration=iteration, trials=trials, trial=trial, **info)
        )

    async def on_trial_restore(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        await self._dispatch(
            "on_trial_restore", dict(iteration=iteration, trials=trials, trial=trial, **info)
        )

    async def on_trial_save(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        await self._dispatch(
            "on_trial_save", dict(iteration=iteration, trials=trials, trial=trial, **info)
        )

    async def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any
    ) -> None:
        # The hot path: no kwargs dict building, no isawaitable for sync hooks returning None.
        for hook in self._on_trial_result:
            value = hook(iteration=iteration, trials=trials, trial=trial, result=result, **info)
            if value is not None and inspect.isawaitable(value):
                await value

    async def on_trial_complete(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        await self._dispatch(
            "on_trial_complete", dict(iteration=iteration, trials=trials, trial=trial, **info)
        )

    async def on_trial_error(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        await self._dispatch(
            "on_trial_error", dict(iteration=iteration, trials=trials, trial=trial, **info)
        )

    async def on_checkpoint(
        self, iteration: int, trials: list[Trial], trial: Trial, checkpoint: Any, **info: Any
    ) -> None:
        await self._dispatch(
            "on_checkpoint",
            dict(iteration=iteration, trials=trials, trial=trial, checkpoint=checkpoint, **info),
        )

    async def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        await self._dispatch("on_experiment_end", dict(trials=trials, **info))
