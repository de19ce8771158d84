"""Behaviour only a separate driver process shows: Ctrl+C, an unreachable Ray."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def driver_env(**extra):
    path = os.pathsep.join([os.path.dirname(HERE), os.environ.get("PYTHONPATH", "")])
    return dict(os.environ, PYTHONPATH=path, **extra)


@pytest.mark.ray
def test_ctrl_c_stops_gracefully_and_keeps_what_was_recorded(results_dir, ray_session):
    address = ray_session.get_runtime_context().gcs_address
    proc = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "sigint_driver.py"), results_dir],
        env=driver_env(RAY_ADDRESS=address), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )
    exp_dir = os.path.join(results_dir, "interrupted")
    deadline = time.time() + 60
    while time.time() < deadline:  # until two trials have recorded results
        dirs = [d for d in os.listdir(exp_dir)] if os.path.isdir(exp_dir) else []
        results = [os.path.join(exp_dir, d, "result.json") for d in dirs
                   if d.startswith("forever_")]
        if sum(1 for r in results if os.path.exists(r) and os.path.getsize(r) > 0) >= 2:
            break
        time.sleep(0.05)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    line = next(ln for ln in out.splitlines() if ln.startswith("FINISHED"))
    assert "ERROR" not in line
    state_file = sorted(n for n in os.listdir(exp_dir) if n.startswith("experiment_state-"))[-1]
    with open(os.path.join(exp_dir, state_file)) as f:
        state = json.load(f)
    assert state["runner_data"]["interrupted"] is True
    recorded = {t["trial_id"]: t["results_recorded"] for t in state["checkpoints"]}
    for entry in state["checkpoints"]:
        if entry["logdir"] and os.path.exists(os.path.join(entry["logdir"], "result.json")):
            with open(os.path.join(entry["logdir"], "result.json")) as f:
                assert sum(1 for _ in f) == recorded[entry["trial_id"]]
    assert sum(1 for n in recorded.values() if n > 0) >= 2


def test_unreachable_ray_is_a_clear_error_not_a_hang(tmp_path):
    script = (
        "import tune_async as tune\n"
        "try:\n"
        f"    tune.run(lambda c: tune.report(x=1), verbose=0, local_dir={str(tmp_path)!r})\n"
        "except tune.TuneError as e:\n"
        "    print('TUNE_ERROR', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], env=driver_env(RAY_ADDRESS="127.0.0.1:1"),
                         capture_output=True, text=True, timeout=120)
    assert "TUNE_ERROR Ray is unreachable at RAY_ADDRESS='127.0.0.1:1'" in out.stdout, out.stderr
