"""The TrialScheduler interface (1.x hook names) and the FIFO scheduler."""

from __future__ import annotations

from typing import Any

import attrs

from tune_async.result import DEFAULT_METRIC
from tune_async.trial import Trial, TrialStatus

CONTINUE, PAUSE, STOP = "CONTINUE", "PAUSE", "STOP"


@attrs.frozen
class Exploit:
    """PBT's exploit: continue this trial from ``donor``'s saved state with ``config``.

    ``donor`` is the id of a trial whose state was kept in memory by an earlier
    ``Decision(save=True)`` (or a PAUSE). The trial is released and relaunched
    from that state (iteration counter included) with the new config and
    ``experiment_tag`` (None keeps its tag). With no saved state for the donor the
    controller skips the exploit (a warning) and the trial continues.
    """

    donor: str
    config: dict
    experiment_tag: str | None = None


@attrs.frozen
class Decision:
    """A scheduler's verdict on one result, when the 1.x strings are not enough.

    - ``action``: ``"CONTINUE"``, ``"PAUSE"`` or ``"STOP"`` for this trial.
    - ``save``: keep this trial's state at this result in memory before going on
      (a PBT donor's state that a later :class:`Exploit` continues from).
    - ``exploit``: continue this trial from another's saved state (``action`` is
      then ignored: the trial is released and waits to be relaunched, PAUSED).
    - ``stop_trials``: ids of *waiting* (PENDING/PAUSED) trials to end now
      (HyperBand's successive halving); running ones are stopped through their
      own next result.
    - ``exploit_waiting``: ``(trial id, Exploit)`` pairs for PAUSED trials
      (synchronous PBT perturbs the whole population at once): each continues from
      its donor's saved state with the new config when it is launched again. They
      are applied after this trial's own transition, so when this trial is their
      donor (it decided the round with ``save`` or a PAUSE) they clone the state it
      saves at this result.
    """

    action: str = CONTINUE
    save: bool = False
    exploit: Exploit | None = None
    stop_trials: tuple[str, ...] = ()
    exploit_waiting: tuple[tuple[str, Exploit], ...] = ()

    def __attrs_post_init__(self) -> None:
        if self.action not in (CONTINUE, PAUSE, STOP):
            raise ValueError(f"Decision.action must be CONTINUE, PAUSE or STOP, got "
                             f"{self.action!r}")


class TrialScheduler:
    """Decides, per result, whether a trial continues, pauses or stops.

    Hooks (plain methods or coroutines, except ``set_search_properties``,
    which runs while the run is set up and must be plain; ``trial_runner`` is a
    read-only view with ``get_trials()`` and ``has_resources_for_trial(trial)``):

    - ``set_search_properties(metric, mode) -> bool``: take ``tune.run``'s
      metric/mode; return False if the scheduler already has its own.
    - ``on_trial_add(trial_runner, trial)``: a trial was created.
    - ``on_trial_result(trial_runner, trial, result) -> CONTINUE | PAUSE | STOP``
      (the 1.x strings) or a :class:`Decision` (save this trial's state, exploit
      another's, stop waiting trials). Schedulers return values; they never
      change trials themselves. ``on_trial_complete``, ``on_trial_error`` and
      ``on_trial_remove`` may return a ``Decision`` too; only its ``stop_trials``
      counts there (a halving completed by another trial's end).
    - ``on_trial_complete(trial_runner, trial, result)``: the trial ended normally.
    - ``on_trial_error(trial_runner, trial)``: the trial failed for good.
    - ``on_trial_remove(trial_runner, trial)``: a PENDING/PAUSED trial was stopped.
    - ``choose_trial_to_run(trial_runner) -> Trial | None``: which waiting trial
      to start next (must be idempotent until the trial starts).
    - ``debug_string() -> str``: a line for the progress table.
    - ``results_before_decision(trial_runner, trial) -> int | None``: how many more
      results the trial may produce before this scheduler must see one (a plain
      method; ASHA's next rung, PBT's next perturbation). ``None``: no limit. The
      default, 1, lets a scheduler decide on every result, as 1.x did; a trial
      never runs a step past a decision point.
    - ``get_state() -> Any`` / ``set_state(state, trial_runner)``: the schedule
      (rungs, brackets, a PBT population...) as a picklable value, trials named by
      id; saved with the experiment state so ``resume=True`` continues the schedule.
      ``get_state`` returning None (the default) means "nothing to keep": on resume
      the scheduler is told of every unfinished trial again through ``on_trial_add``.
      ``set_state`` is called on resume after every trial was restored (plain
      method); ``trial_runner.get_trial(id)`` finds them.

    ``choose_trial_to_run`` returning None while trials wait is a deliberate "not
    now" (HyperBand waiting for a bracket): the controller asks again after the
    next event; only when nothing runs, nothing else can arrive and it still
    chooses nothing does the run fail, naming the scheduler.
    """

    CONTINUE = CONTINUE
    PAUSE = PAUSE
    STOP = STOP

    _metric: str | None = None
    _mode: str | None = None

    @property
    def metric(self) -> str | None:
        return self._metric

    def set_search_properties(self, metric: str | None, mode: str | None) -> bool:
        if self._metric and metric:
            return False
        if self._mode and mode:
            return False
        if metric:
            self._metric = metric
        if mode:
            self._mode = mode
        if self._mode and not self._metric:
            self._metric = DEFAULT_METRIC
        return True

    def on_trial_add(self, trial_runner: Any, trial: Trial) -> None:
        pass

    def on_trial_error(self, trial_runner: Any, trial: Trial) -> None:
        pass

    def on_trial_result(self, trial_runner: Any, trial: Trial, result: dict) -> str:
        return TrialScheduler.CONTINUE

    def on_trial_complete(self, trial_runner: Any, trial: Trial, result: dict) -> None:
        pass

    def on_trial_remove(self, trial_runner: Any, trial: Trial) -> None:
        pass

    def choose_trial_to_run(self, trial_runner: Any) -> Trial | None:
        raise NotImplementedError

    def debug_string(self) -> str:
        return ""

    def results_before_decision(self, trial_runner: Any, trial: Trial) -> int | None:
        return 1

    def get_state(self) -> Any:
        return None

    def set_state(self, state: Any, trial_runner: Any) -> None:
        pass

    def save(self, checkpoint_path: str) -> None:
        raise NotImplementedError

    def restore(self, checkpoint_path: str) -> None:
        raise NotImplementedError

    def _check_metric_and_mode(self, name: str | None = None) -> None:
        """Raise the 1.x error when a metric-based scheduler has no metric or mode.

        Called from ``on_trial_add`` (so before any trial starts): the metric and mode
        come from the constructor or from ``tune.run(metric=, mode=)``; both are needed.
        """
        name = name or type(self).__name__
        if not self._metric or not self._mode:
            raise ValueError(
                f"{name} was instantiated without a valid metric ({self._metric!r}) or "
                f"mode ({self._mode!r}) parameter. Either pass them to the scheduler "
                f"constructor or to tune.run() (metric=..., mode='min' or 'max')."
            )


def first_that_fits(trial_runner: Any, candidates: Any) -> Any:
    """The first waiting trial among ``candidates`` that fits now (None if none does).

    A resource request found not to fit is not asked about again, so a full cluster
    costs one check per distinct request, not one per waiting trial.
    """
    too_big: set = set()
    for trial in candidates:
        if trial.status not in (TrialStatus.PENDING, TrialStatus.PAUSED):
            continue
        key = id(trial.resources)
        if key in too_big:
            continue
        if trial_runner.has_resources_for_trial(trial):
            return trial
        too_big.add(key)
    return None


class FIFOScheduler(TrialScheduler):
    """Runs trials in the order they were created; never pauses or stops them."""

    def on_trial_result(self, trial_runner: Any, trial: Trial, result: dict) -> str:
        return TrialScheduler.CONTINUE

    def choose_trial_to_run(self, trial_runner: Any) -> Trial | None:
        waiting = getattr(trial_runner, "waiting_trials", None)
        candidates: Any
        if waiting is not None:  # pending (in creation order), then paused; lazy
            candidates = waiting()
        else:
            trials = trial_runner.get_trials()
            candidates = [t for t in trials if t.status == TrialStatus.PENDING]
            candidates += [t for t in trials if t.status == TrialStatus.PAUSED]
        return first_that_fits(trial_runner, candidates)

    def debug_string(self) -> str:
        return "Using FIFO scheduling algorithm."

    def results_before_decision(self, trial_runner: Any, trial: Trial) -> int | None:
        # FIFO never decides anything from a result; a subclass that does gets each one.
        if type(self).on_trial_result is FIFOScheduler.on_trial_result:
            return None
        return 1
