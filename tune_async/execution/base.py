"""The Executor protocol: the controller's only door to where trials run.

An executor starts a trial's trainable somewhere, hands back its results in
batches and releases it. The Ray executor is the default; tests use a scripted
in-process one. Pass any object implementing this protocol as
``tune.run(trial_executor=...)``.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import attrs

from tune_async.trial import Trial


@attrs.frozen
class TrialFailure(Exception):
    """Raised by :meth:`Executor.fetch_results` / ``start_trial`` when a trial fails.

    ``exception`` is the trainable's original exception when it could be
    recovered (``None`` when the process died), ``traceback`` the text written
    to error.txt, ``crashed`` True when the actor process died rather than raised.
    """

    traceback: str
    exception: BaseException | None = None
    crashed: bool = False

    def __str__(self) -> str:
        return self.traceback.strip().splitlines()[-1] if self.traceback.strip() else "failed"


@attrs.frozen
class BatchLimits:
    """How far a trial may run in one fetch before the driver looks at its results.

    ``max_results``: most results in the batch (the scheduler's next decision point;
    1 when the driver must see each result before the next step). ``checkpoint_freq``:
    a persistent checkpoint every N iterations (class trainables) ends the batch.
    ``stop``: the dict stop criteria, checked beside the trainable so that the batch
    ends at the first result meeting them and no further step runs.
    """

    max_results: int = 1
    checkpoint_freq: int = 0
    stop: dict = attrs.field(factory=dict)


class Launch:
    """One run of a trial: what the controller hands an executor for per-run calls.

    It reads like the trial (``trial_id``, ``config``, ``resources``, ``logdir``,
    ``trial_name``...) and adds ``key``, which names this run: a trial that is
    paused, exploited or retried is launched again under a new key. Executors
    keep their per-run state under :func:`launch_key`, so a late call for an
    earlier run (a stop that Ray delivers late) can never reach a later one.
    """

    __slots__ = ("trial", "number")

    def __init__(self, trial: Trial, number: int) -> None:
        self.trial = trial
        self.number = number

    @property
    def key(self) -> tuple[str, int]:
        return (self.trial.trial_id, self.number)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.trial, name)

    def __repr__(self) -> str:
        return f"Launch({self.trial}, {self.number})"


def launch_key(trial: Trial | Launch) -> Any:
    """The key an executor files a run's state under (a bare Trial: its id)."""
    return trial.key if isinstance(trial, Launch) else trial.trial_id


@runtime_checkable
class Executor(Protocol):
    """Contract every executor fulfils.

    - ``setup()`` is awaited once before any trial starts (connect, read capacity).
    - ``check_feasible(trial)`` raises ``TuneError`` naming the request and the
      capacity when no node could ever run the trial (not called with
      ``queue_trials=True``).
    - ``has_resources_for_trial(trial)`` says whether the trial fits *now*;
      ``reserve(trial)`` commits those resources synchronously, so the answer
      stays true for in-flight launches.
    - ``start_trial(trial, trainable_cls, reuse)`` sets the trainable up with
      ``trial.config`` (reusing a warm instance via ``reset_config`` when
      ``reuse``); raises :class:`TrialFailure` if setup fails (or lets the first
      ``fetch_results`` raise it, when the setup travels with that first fetch).
    - ``fetch_results(trial, limits)`` returns 1..``limits.max_results`` results
      in order (each a dict with the automatic fields), ending at the first result
      that is ``done``, asks for a checkpoint or meets ``limits.stop``: the
      trainable never runs a step past it (see :class:`BatchLimits`). A result a
      persistent checkpoint was taken at carries its path under
      ``result.CHECKPOINT_PATH``; raises :class:`TrialFailure` when the trainable
      raised or died.
    - ``save(trial)`` takes a persistent checkpoint now and returns its path.
    - ``stop_trial(trial, in_flight)`` stops the trainable and releases its
      resources (``in_flight``: a fetch was cancelled mid-call, so the worker
      may be busy and should be discarded rather than reused; ``failed``: the
      trainable raised or died, so its worker is not reused either).
    - ``save_to_memory(trial)`` returns an opaque in-memory checkpoint, used
      before a PAUSE releases the trial; ``start_trial(..., checkpoint=...)``
      restores from ``("object", value)`` or ``("path", checkpoint path)``.
    - Per-run calls (``reserve``, ``start_trial``, ``fetch_results``, ``save``,
      ``save_to_memory``, ``stop_trial``) get a :class:`Launch`; state kept for a
      run is keyed by :func:`launch_key`, never by the trial id alone.
    - ``resource_summary()`` describes used/total capacity for progress output.
    - ``shutdown()`` releases everything; awaited once, even on cancellation.
    """

    async def setup(self) -> None: ...

    def check_feasible(self, trial: Trial) -> None: ...

    def has_resources_for_trial(self, trial: Trial) -> bool: ...

    def reserve(self, trial: Trial) -> None: ...

    async def start_trial(
        self, trial: Trial, trainable_cls: type, reuse: bool, checkpoint: Any = None
    ) -> None: ...

    async def fetch_results(self, trial: Trial, limits: BatchLimits) -> list[dict]: ...

    async def save(self, trial: Trial) -> str: ...

    async def save_to_memory(self, trial: Trial) -> Any: ...

    async def stop_trial(
        self, trial: Trial, in_flight: bool = False, failed: bool = False
    ) -> None: ...

    def resource_summary(self) -> str: ...

    async def shutdown(self) -> None: ...
