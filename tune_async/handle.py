"""Experiment handles and event streams: an experiment you can watch and steer while it runs.

::

    async with tune.start(trainable, config=space, num_samples=50, scheduler=asha) as exp:
        async for event in exp.events():
            if isinstance(event, tune.TrialResult) and event.result["loss"] > 10:
                await exp.stop_trial(event.trial_id)
        analysis = await exp.analysis()

Commands (stop or add a trial) enter the controller's own event stream and are
decided by the transition table, like every other decision.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from tune_async.controller import AddTrialCommand, StopAll, StopTrialCommand
from tune_async.error import TuneError
from tune_async.events import Subscription
from tune_async.trial import TrialView
from tune_async.utils.cancel import until_done


class ExperimentHandle:
    """A running experiment (from :func:`start`)."""

    def __init__(self, job: Any) -> None:
        self._job = job
        self._controller = job.controller
        self._task: asyncio.Task | None = None

    # ---- watching --------------------------------------------------------------------
    def events(self, buffer: int = 10_000, overflow: str = "drop") -> Subscription:
        """An async iterator of the events decided from now on, ending with ExperimentEnded.

        ``buffer``: how many undelivered events it keeps for a slow consumer.
        ``overflow``: what happens when they are that many. ``"drop"`` (default): it
        gets an ``EventsDropped(count)`` where the lost ones were, and trials never
        wait. ``"block"``: back-pressure, nothing is lost; the controller takes no new
        result until this consumer has read, so the experiment runs at its pace (its
        commands, ``stop_trial``/``add_trial``/``stop``, still go through). Close it
        (``close()``, ``async with``, or drop it, as ``break`` does) when you stop reading.
        Subscribe before your first ``await`` after :func:`start` to see every event.
        """
        return self._controller.events.subscribe(buffer, overflow)

    @property
    def trials(self) -> list[TrialView]:
        """A snapshot of the trials (read-only views), in creation order."""
        return list(self._controller.trial_views)

    def dataframe(self) -> Any:
        """The trials' last results as a pandas DataFrame (one row per trial), mid-run."""
        import pandas as pd

        from tune_async.utils.util import flatten_dict

        rows = []
        for trial in self._controller.trial_views:
            row = flatten_dict(dict(trial.last_result or {}), delimiter="/")
            row.setdefault("trial_id", trial.trial_id)
            row["status"] = trial.status.value
            row["logdir"] = trial.logdir
            rows.append(row)
        return pd.DataFrame(rows)

    @property
    def done(self) -> bool:
        return self._task is not None and self._task.done()

    # ---- steering --------------------------------------------------------------------
    async def stop_trial(self, trial_id: str) -> None:
        """Stop a trial (RUNNING, PENDING or PAUSED): it ends TERMINATED."""
        await self._command(StopTrialCommand(trial_id, self._future()))

    async def add_trial(self, config: dict, stop: dict | None = None,
                        resources: Any = None) -> str:
        """Add a trial of this experiment's trainable with ``config`` (domains are sampled);
        ``stop`` and ``resources`` override the experiment's. Returns its trial id."""
        return await self._command(AddTrialCommand(config, stop, resources, self._future()))

    async def stop(self) -> Any:
        """End the experiment: running trials are stopped (TERMINATED), nothing new starts.
        Returns the analysis."""
        if not self.done:
            self._controller._post(StopAll("stopped by the user"))
        return await self.wait()

    async def wait(self) -> Any:
        """Wait for the experiment to end; its ExperimentAnalysis (or its error)."""
        assert self._task is not None
        return await asyncio.shield(self._task)

    async def analysis(self) -> Any:
        """The ExperimentAnalysis once the experiment ended (waits for it)."""
        return await self.wait()

    # ---- internals ---------------------------------------------------------------------
    @staticmethod
    def _future() -> asyncio.Future:
        return asyncio.get_running_loop().create_future()

    async def _command(self, command: Any) -> Any:
        if self.done:
            raise TuneError("The experiment has ended: it takes no commands")
        await self._until_accepting()
        return await self._controller.submit(command)

    async def _until_accepting(self) -> None:
        """Commands given right after start() wait for the controller to be set up."""
        await self._controller.accepting.wait()

    def _start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._job.execute())

    async def _close(self) -> None:
        """Leaving the block: stop the experiment (running trials are interrupted and
        their actors released, as with a cancelled arun) and wait for its cleanup. One
        that already ended (ExperimentEnded was published) finishes its cleanup and
        its analysis uncancelled, so ``await exp.analysis()`` works after the block."""
        task = self._task
        if task is None:
            return
        if not task.done() and self._controller.events.ended is None:
            task.cancel()
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError:  # the caller was cancelled: stop, clean up, go on
            task.cancel()
            await until_done(task)
            raise
        finally:
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: an error the body did not ask for is not logged


@contextlib.asynccontextmanager
async def start(run_or_experiment: Any, **kwargs: Any) -> AsyncIterator[ExperimentHandle]:
    """Start an experiment in the background; ``async with`` gives its handle.

    Takes every argument of :func:`tune_async.run`. Leaving the block stops the
    experiment and releases every actor (an experiment that already ended is left as
    is); an exception in the body propagates after that cleanup.
    """
    from tune_async.api import _prepare_run

    handle = ExperimentHandle(_prepare_run(run_or_experiment=run_or_experiment, **kwargs))
    handle._start()
    try:
        yield handle
    finally:
        await handle._close()


async def astream(run_or_experiment: Any, buffer: int = 10_000, overflow: str = "drop",
                  **kwargs: Any) -> AsyncIterator[Any]:
    """The experiment's events as an async iterator (``start`` without the block).

    ``buffer`` and ``overflow`` as in :meth:`ExperimentHandle.events` (``"block"``:
    every event, at the pace of this loop). Ends after ``ExperimentEnded``; then
    raises the experiment's error, if any. Breaking out of the loop stops the experiment.
    """
    async with start(run_or_experiment, **kwargs) as experiment:
        async for event in experiment.events(buffer, overflow):
            yield event
        await experiment.wait()
