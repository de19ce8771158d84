"""The trial lifecycle as one explicit table.

``(status, event) -> (next status, effects)``. This module is pure: it never
awaits, never imports ray and never reads a clock. Verdicts of stoppers,
schedulers and the retry budget are turned into :class:`Event` values by the
controller before they reach :func:`apply`; nothing else assigns
``Trial.status``. An event that is not in the table raises
:class:`IllegalTransition` and changes nothing.
"""

from __future__ import annotations

import enum

from tune_async.error import TuneError
from tune_async.trial import Trial, TrialStatus


class Event(str, enum.Enum):
    START = "START"  # the controller admits the trial onto an executor slot
    CONTINUE = "CONTINUE"  # a result was recorded and the trial goes on
    SAVE = "SAVE"  # the scheduler keeps the trial's state in memory (a PBT donor), it goes on
    PAUSE = "PAUSE"  # the scheduler pauses the trial (state saved, resources released)
    # PBT's exploit: the trial continues from another trial's saved state with a new
    # config; it is released and waits to be launched again from that state.
    EXPLOIT = "EXPLOIT"
    UNPAUSE = "UNPAUSE"  # a paused trial may be started again
    STOP = "STOP"  # a stopper, the scheduler, a time budget or the user ends it
    COMPLETE = "COMPLETE"  # the trainable itself finished (done=True)
    FAIL = "FAIL"  # the trainable raised or its process died
    RETRY = "RETRY"  # a failed trial has retries left
    # Ctrl+C, a cancelled arun, or a driver that died: the trial goes back to the queue,
    # and ``resume`` continues it from its newest checkpoint.
    INTERRUPT = "INTERRUPT"


class Effect(str, enum.Enum):
    LAUNCH = "LAUNCH"  # set up the trainable on an actor, then fetch results
    FETCH = "FETCH"  # ask the actor for the next results
    SAVE_IN_MEMORY = "SAVE_IN_MEMORY"  # keep the trainable's state in memory (before what follows)
    ADOPT_DONOR = "ADOPT_DONOR"  # take the donor's saved state and the new config as restore point
    RELEASE = "RELEASE"  # stop the trainable, give its actor back to the pool
    RECORD_ERROR = "RECORD_ERROR"  # append the failure to error.txt


S, E, F = TrialStatus, Event, Effect

TABLE: dict[tuple[TrialStatus, Event], tuple[TrialStatus, tuple[Effect, ...]]] = {
    (S.PENDING, E.START): (S.RUNNING, (F.LAUNCH,)),
    (S.PENDING, E.STOP): (S.TERMINATED, ()),
    (S.RUNNING, E.CONTINUE): (S.RUNNING, (F.FETCH,)),
    (S.RUNNING, E.SAVE): (S.RUNNING, (F.SAVE_IN_MEMORY, F.FETCH)),
    (S.RUNNING, E.PAUSE): (S.PAUSED, (F.SAVE_IN_MEMORY, F.RELEASE)),
    (S.RUNNING, E.EXPLOIT): (S.PAUSED, (F.ADOPT_DONOR, F.RELEASE)),
    (S.RUNNING, E.STOP): (S.TERMINATED, (F.RELEASE,)),
    (S.RUNNING, E.COMPLETE): (S.TERMINATED, (F.RELEASE,)),
    (S.RUNNING, E.FAIL): (S.ERROR, (F.RECORD_ERROR, F.RELEASE)),
    (S.PAUSED, E.UNPAUSE): (S.PENDING, ()),
    (S.PAUSED, E.EXPLOIT): (S.PAUSED, (F.ADOPT_DONOR,)),  # synchronous PBT: a waiting trial
    (S.PAUSED, E.STOP): (S.TERMINATED, ()),
    (S.ERROR, E.RETRY): (S.PENDING, ()),
    (S.RUNNING, E.INTERRUPT): (S.PENDING, (F.RELEASE,)),
}


class IllegalTransition(TuneError):
    """An event arrived that the trial's current status does not allow."""

    def __init__(self, trial: Trial, event: Event) -> None:
        super().__init__(
            f"Trial {trial.trial_id}: event {event.value} is not allowed in status "
            f"{trial.status.value}"
        )
        self.status = trial.status
        self.event = event


def is_allowed(status: TrialStatus, event: Event) -> bool:
    return (status, event) in TABLE


def apply(trial: Trial, event: Event) -> tuple[Effect, ...]:
    """Move ``trial`` to its next status for ``event``; return the effects to run."""
    try:
        next_status, effects = TABLE[(trial.status, event)]
    except KeyError:
        raise IllegalTransition(trial, event) from None
    trial.status = next_status
    return effects


def mermaid_diagram() -> str:
    """The table as a Mermaid state diagram (for the docs; generated, never hand-drawn)."""
    lines = ["stateDiagram-v2"]
    for (status, event), (nxt, _) in TABLE.items():
        lines.append(f"    {status.value} --> {nxt.value}: {event.value}")
    return "\n".join(lines)
