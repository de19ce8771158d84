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
                 searcher_state: Any = None, seq: int = 0) -> str:
        """The whole file (built on the event loop: a consistent view).

        Trials and the searcher's state travel in the same file, so one atomic rename
        keeps them consistent with each other.
        """
        now = time.time()
        head = json_dumps({
            "seq": seq,
            "runner_data": runner_data,
            "searcher_state": None if searcher_state is None else _encode(searcher_state),
            "stats": {"start_time": start_time, "timestamp": now},
            "timestamp": now,
        })
        entries = ",\n".join(self.entry(t) for t in trials)
        return head[:-1] + ', "checkpoints": [\n' + entries + "\n]}"


JOURNAL_PREFIX = "experiment_journal-"


def journal_path(state_file: str) -> str:
    """The write-ahead journal of a state file's session (``experiment_journal-<s>.jsonl``)."""
    directory, name = os.path.split(state_file)
    session = name[len(STATE_PREFIX):-len(".json")]
    return os.path.join(directory, f"{JOURNAL_PREFIX}{session}.jsonl")


class Journal:
    """Write-ahead log between snapshots: one line per trial change that must survive.

    A finished trial or a new checkpoint is appended here at once (O(1)), instead of
    rewriting the whole state file (O(trials)); each snapshot starts a new journal.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._file: Any = None

    def append(self, seq: int, entry_text: str) -> None:
        if self._file is None:
            self._file = open(self.path, "a")  # noqa: SIM115 - kept open between appends
        self._file.write(f'{{"seq": {seq}, "entry": {entry_text}}}\n')
        self._file.flush()

    def reset(self) -> None:
        """Forget what the latest snapshot already holds."""
        self.close()
        with open(self.path, "w"):
            pass

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def load_state(path: str) -> dict[str, Any]:
    """Read a state file and replay its journal (pickled parts decoded)."""
    with open(path) as f:
        state = json.load(f)
    replay_journal(state, journal_path(path))
    if state.get("searcher_state"):
        state["searcher_state"] = _decode(state["searcher_state"])
    return state


def replay_journal(state: dict[str, Any], path: str) -> None:
    """Apply journal entries newer than the snapshot; a torn last line is skipped."""
    if not os.path.exists(path):
        return
    entries = state.setdefault("checkpoints", [])
    index = {e.get("trial_id"): i for i, e in enumerate(entries) if isinstance(e, dict)}
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("seq", 0) <= state.get("seq", 0):
                continue
            entry = record["entry"]
            if entry["trial_id"] in index:
                entries[index[entry["trial_id"]]] = entry
            else:
                index[entry["trial_id"]] = len(entries)
                entries.append(entry)


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
