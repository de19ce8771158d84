"""Experiment state snapshots: ``experiment_state-<session>.json``, written atomically."""

from __future__ import annotations

import base64
import glob
import json
import os
import time
from typing import Any

import cloudpickle

from tune_async.trial import Trial
from tune_async.utils.util import atomic_write_text, json_dumps

STATE_PREFIX = "experiment_state-"


def state_path(experiment_dir: str, session_str: str) -> str:
    return os.path.join(experiment_dir, f"{STATE_PREFIX}{session_str}.json")


def newest_state_file(experiment_dir: str) -> str | None:
    """The newest ``experiment_state-*.json`` in ``experiment_dir`` (by name, as 1.x)."""
    pattern = os.path.join(glob.escape(experiment_dir), f"{STATE_PREFIX}*.json")
    files = sorted(glob.glob(pattern))
    return files[-1] if files else None


PICKLED_KEY = "__pickled__"


def _encode(value: Any) -> str:
    return base64.b64encode(cloudpickle.dumps(value)).decode("ascii")


def _decode(text: str) -> Any:
    return cloudpickle.loads(base64.b64decode(text))


def trial_state(trial: Trial) -> dict[str, Any]:
    """One trial's entry: readable fields for analysis, plus the exact record for resume."""
    state = trial.public_state()
    state["config"] = trial.config
    state["last_result"] = trial.last_result
    state[PICKLED_KEY] = _encode(trial)
    return state


class StateSerializer:
    """Builds the state file's JSON text, re-encoding only trials that changed.

    A snapshot is O(trials) text, but a finished or waiting trial is encoded once:
    writing the state after every finished trial stays cheap with many trials.
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[tuple, str]] = {}

    def entry(self, trial: Trial) -> str:
        key = (trial.status, trial.results_recorded, trial.num_failures, trial.logdir,
               id(trial.checkpoint), trial.custom_trial_name)
        cached = self._entries.get(trial.trial_id)
        if cached is not None and cached[0] == key:
            return cached[1]
        text = json_dumps(trial_state(trial))
        self._entries[trial.trial_id] = (key, text)
        return text

    def snapshot(self, trials: list[Trial], runner_data: dict[str, Any], start_time: float,
                 searcher_state: Any = None) -> str:
        """The whole file (built on the event loop: a consistent view).

        Trials and the searcher's state travel in the same file, so one atomic rename
        keeps them consistent with each other.
        """
        now = time.time()
        head = json_dumps({
            "runner_data": runner_data,
            "searcher_state": None if searcher_state is None else _encode(searcher_state),
            "stats": {"start_time": start_time, "timestamp": now},
            "timestamp": now,
        })
        entries = ",\n".join(self.entry(t) for t in trials)
        return head[:-1] + ', "checkpoints": [\n' + entries + "\n]}"


def load_state(path: str) -> dict[str, Any]:
    """Read a state file written by :func:`snapshot` (pickled parts decoded)."""
    with open(path) as f:
        state = json.load(f)
    if state.get("searcher_state"):
        state["searcher_state"] = _decode(state["searcher_state"])
    return state


def trials_from_state(state: dict[str, Any]) -> list[Trial]:
    """The exact Trial records saved in a state file, in their original order."""
    trials = []
    for entry in state.get("checkpoints", []):
        if isinstance(entry, dict) and PICKLED_KEY in entry:
            trials.append(_decode(entry[PICKLED_KEY]))
    return trials


def write_snapshot(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write_text(path, text)
