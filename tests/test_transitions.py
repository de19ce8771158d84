"""The transition table, walked over every (status, event) pair."""

from __future__ import annotations

import itertools

import pytest

from tune_async import transitions
from tune_async.transitions import TABLE, Effect, Event, IllegalTransition
from tune_async.trial import Trial, TrialStatus

ALL_PAIRS = list(itertools.product(TrialStatus, Event))


@pytest.mark.parametrize(("status", "event"), ALL_PAIRS)
def test_every_pair_is_applied_or_refused_without_change(status, event):
    trial = Trial("t", status=status)
    if (status, event) in TABLE:
        effects = transitions.apply(trial, event)
        assert trial.status is TABLE[(status, event)][0]
        assert effects == TABLE[(status, event)][1]
    else:
        with pytest.raises(IllegalTransition) as info:
            transitions.apply(trial, event)
        assert trial.status is status
        assert status.value in str(info.value) and event.value in str(info.value)


def test_finished_statuses_accept_only_retry_of_errors():
    allowed = {(s, e) for (s, e) in TABLE if s.is_finished}
    assert allowed == {(TrialStatus.ERROR, Event.RETRY)}


def test_lifecycle_path_of_a_retried_trial():
    trial = Trial("t")
    path = [Event.START, Event.CONTINUE, Event.FAIL, Event.RETRY, Event.START, Event.COMPLETE]
    seen = []
    for event in path:
        transitions.apply(trial, event)
        seen.append(trial.status.value)
    assert seen == ["RUNNING", "RUNNING", "ERROR", "PENDING", "RUNNING", "TERMINATED"]


def test_failure_records_error_before_release():
    assert TABLE[(TrialStatus.RUNNING, Event.FAIL)][1] == (Effect.RECORD_ERROR, Effect.RELEASE)


def test_pause_saves_before_release():
    assert TABLE[(TrialStatus.RUNNING, Event.PAUSE)][1] == (Effect.SAVE_IN_MEMORY, Effect.RELEASE)


def test_diagram_lists_every_transition():
    diagram = transitions.mermaid_diagram()
    assert diagram.count("-->") == len(TABLE)
