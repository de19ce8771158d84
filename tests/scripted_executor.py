"""An in-process executor for tests: real Trainables, no Ray, a fixed number of slots."""

from __future__ import annotations

import threading
from typing import Any

import anyio

from tune_async.execution.actor import restore_into, run_batch
from tune_async.execution.base import BatchLimits, TrialFailure, launch_key
from tune_async.trial import Trial


class ScriptedExecutor:
    """Runs trainables in this process; ``slots`` trials fit at once (1 CPU each)."""

    def __init__(self, slots: int = 2, reuse_actors: bool = False) -> None:
        self.slots = slots
        self.reuse_actors = reuse_actors
        self.reserved: set = set()  # launch keys holding a slot, started or not
        self.max_used = 0
        self.instances: dict[str, Any] = {}
        self.started: list[str] = []
        self.restored_from: list[Any] = []
        self._locks: dict[int, threading.Lock] = {}
        self.stopped: list[tuple[str, bool]] = []
        self.fetches: list[tuple[str, BatchLimits]] = []
        self.shut_down = False
        # Stops of trainables whose step was still running (a thread cannot be killed).
        self._late_stops: list[threading.Thread] = []

    @property
    def used(self) -> int:
        return len(self.reserved)

    async def setup(self) -> None:
        pass

    def check_feasible(self, trial: Trial) -> None:
        from tune_async.error import TuneError

        cpus = trial.resources.cpu_total()
        if cpus > self.slots:
            raise TuneError(f"Insufficient cluster resources to launch trial {trial}: it "
                            f"requested {cpus:g} CPUs, but there are only {self.slots} slots")

    def has_resources_for_trial(self, trial: Trial) -> bool:
        return self.used + 1 <= self.slots

    def reserve(self, trial: Trial) -> None:
        self.reserved.add(launch_key(trial))
        self.max_used = max(self.max_used, self.used)

    async def start_trial(self, trial: Trial, trainable_cls: type, reuse: bool,
                          checkpoint: Any = None) -> None:
        from tune_async.trainable.trainable import TrialInfo

        info = TrialInfo(trial_id=trial.trial_id, trial_name=trial.trial_name,
                         logdir=trial.logdir)
        try:
            trainable = trainable_cls(config=trial.config, trial_info=info)
            self.instances[launch_key(trial)] = trainable
            restore_into(trainable, checkpoint)
        except Exception as exc:  # noqa: BLE001
            raise TrialFailure(traceback=repr(exc), exception=exc) from None
        self.started.append(trial.trial_id)
        self.restored_from.append(checkpoint)

    async def fetch_results(self, trial: Trial, limits: BatchLimits) -> list[dict]:
        trainable = self.instances[launch_key(trial)]
        self.fetches.append((trial.trial_id, limits))
        try:
            # Cancelled (the trial is released mid-fetch), the step finishes unobserved.
            return await anyio.to_thread.run_sync(
                self._serially, trainable, run_batch, trainable, limits, 0.05,
                abandon_on_cancel=True,
            )
        except Exception as exc:  # noqa: BLE001
            import traceback

            raise TrialFailure(traceback="".join(traceback.format_exception(exc)),
                               exception=exc) from None

    async def save(self, trial: Trial) -> str:
        return await anyio.to_thread.run_sync(self.instances[launch_key(trial)].save)

    async def save_to_memory(self, trial: Trial) -> Any:
        trainable = self.instances[launch_key(trial)]
        return await anyio.to_thread.run_sync(self._serially, trainable, trainable.save_to_object)

    async def stop_trial(self, trial: Trial, in_flight: bool = False,
                         failed: bool = False) -> None:
        self.reserved.discard(launch_key(trial))  # also a launch that never got going
        trainable = self.instances.pop(launch_key(trial), None)
        if trainable is None:
            return
        self.stopped.append((trial.trial_id, in_flight))
        if in_flight:
            # Its step may still run: the slot is free now, the stop follows that step.
            late = threading.Thread(target=self._serially, args=(trainable, trainable.stop),
                                    daemon=True)
            late.start()
            self._late_stops.append(late)
        else:
            await anyio.to_thread.run_sync(self._serially, trainable, trainable.stop)

    def _serially(self, trainable: Any, fn: Any, *args: Any) -> Any:
        """One call at a time per trainable, as a Ray actor runs its methods."""
        lock = self._locks.setdefault(id(trainable), threading.Lock())
        with lock:
            return fn(*args)

    def resource_summary(self) -> str:
        return f"Resources requested: {self.used}/{self.slots} CPUs"

    async def shutdown(self) -> None:
        self.shut_down = True
        for late in self._late_stops:
            await anyio.to_thread.run_sync(late.join, 10.0)
        self._late_stops.clear()
