"""Killing the driver (SIGKILL) at any moment loses no finished work: resume finishes it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import tune_async as tune
from tests.resume_driver import STEPS

pytestmark = pytest.mark.ray

HERE = os.path.dirname(os.path.abspath(__file__))
TRIALS = 6


def start_driver(local_dir, name, resume, address):
    env = dict(os.environ, RAY_ADDRESS=address,
               PYTHONPATH=os.pathsep.join([os.path.dirname(HERE), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen(
        [sys.executable, os.path.join(HERE, "resume_driver.py"), local_dir, name,
         "1" if resume else "0"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def wait_for_state(exp_dir, newer_than, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.isdir(exp_dir):
            for name in os.listdir(exp_dir):
                path = os.path.join(exp_dir, name)
                if name.startswith("experiment_state-") and os.path.getmtime(path) > newer_than:
                    return
        time.sleep(0.05)
    raise AssertionError("the driver never wrote its experiment state")


def terminated_in_state(exp_dir):
    from tune_async.state import newest_state_file

    with open(newest_state_file(exp_dir)) as f:
        state = json.load(f)
    return {t["trial_id"]: t["logdir"] for t in state["checkpoints"]
            if t["status"] == "TERMINATED"}


def steps_executed(logdir):
    path = os.path.join(logdir, "steps.log")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return sum(1 for line in f if line.strip())


def test_sigkilled_driver_resumes_without_losing_or_repeating_work(results_dir, ray_session):
    address = ray_session.get_runtime_context().gcs_address
    name = "crashy"
    exp_dir = os.path.join(results_dir, name)
    kills = [0.4, 1.3, 0.8]  # seconds after the driver first saved its state
    finished_before_kill: dict[str, int] = {}
    resume = False
    for delay in kills:
        started = time.time()
        proc = start_driver(results_dir, name, resume, address)
        wait_for_state(exp_dir, newer_than=started)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        proc.stdout.close()
        for trial_id, logdir in terminated_in_state(exp_dir).items():
            finished_before_kill.setdefault(trial_id, steps_executed(logdir))
        resume = True
    proc = start_driver(results_dir, name, True, address)
    out, _ = proc.communicate(timeout=240)
    proc.stdout.close()
    assert proc.returncode == 0, out
    assert "FINISHED" in out

    analysis = tune.ExperimentAnalysis(exp_dir)
    assert len(analysis.trials) == TRIALS
    assert {t.status for t in analysis.trials} == {"TERMINATED"}
    redone = 0
    for trial in analysis.trials:
        with open(os.path.join(trial.logdir, "result.json")) as f:
            lines = [json.loads(line) for line in f]  # a torn line would not parse
        assert [r["training_iteration"] for r in lines] == list(range(1, STEPS + 1))
        assert [r["step"] for r in lines] == list(range(1, STEPS + 1))
        executed = steps_executed(trial.logdir)
        redone += executed - STEPS
        if trial.trial_id in finished_before_kill:  # a finished trial never runs again
            assert executed == finished_before_kill[trial.trial_id]
    # Checkpoints every 3 steps: a crash costs at most the 2 steps since a checkpoint
    # (plus the step in flight) for each of the 2 trials running at that moment.
    print(f"iterations redone over {len(kills)} crashes: {redone}")
    assert redone <= len(kills) * 2 * 3
