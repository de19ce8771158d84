"""Experiment state snapshots: ``experiment_state-<session>.json``, written atomically."""

from __future__ import annotations

import glob
import os
import time
from typing import Any

from tune_async.trial import Trial
from tune_async.utils.util import atomic_write_text, json_dumps

STATE_PREFIX = "experiment_state-"


def state_path(experiment_dir: str, session_str: str) -> str:
    return os.path.join(experiment_dir, f"{STATE_PREFIX}{session_str}.json")


def newest_state_file(experiment_dir: str) -> str | None:
    """The newest ``experiment_state-*.json`` in ``experiment_dir`` (by name, as 1.x)."""
    files = sorted(glob.glob(os.path.join(experiment_dir, f"{STATE_PREFIX}*.json")))
    return files[-1] if files else None


def trial_state(trial: Trial) -> dict[str, Any]:
    state = trial.public_state()
    state["config"] = trial.config
    state["last_result"] = trial.last_result
    return state


def snapshot(trials: list[Trial], runner_data: dict[str, Any], start_time: float) -> str:
    """The state file's JSON text (built on the event loop: a consistent view)."""
    return json_dumps(
        {
            "checkpoints": [trial_state(t) for t in trials],
            "runner_data": runner_data,
            "stats": {"start_time": start_time, "timestamp": time.time()},
            "timestamp": time.time(),
        }
    )


def write_snapshot(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write_text(path, text)
