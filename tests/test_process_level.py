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


def test_a_driver_imports_the_whole_api_with_the_package():
    """A first ``await tune.arun(...)`` must not import modules on the running loop, nor
    in a thread beside it (ray's import there stalled the loop 48-60 ms)."""
    code = ("import sys, tune_async as tune; "
            "print(all(m in sys.modules for m in ('tune_async.api', 'tune_async.controller', "
            "'tune_async.execution.ray_executor', 'tune_async.analysis', "
            "'tune_async.utils.heap', 'tune_async.utils.gil', 'ray')), "
            "'run' in vars(tune), 'schedulers' in vars(tune)); "
            # The actor classes too (ray.remote inspects every method: ~1.6 ms of Python
            # that a run's start-up did beside the loop), without connecting to Ray.
            "import ray; from tune_async.execution import ray_executor as r; "
            "print(r._actor_classes.cache_info().currsize, ray.is_initialized())")
    out = subprocess.run([sys.executable, "-c", code], env=driver_env(), capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["True", "True", "True", "1", "False"]


@pytest.mark.ray
def test_a_trial_worker_imports_only_what_the_trainable_uses(ray_session):
    """A new worker process unpickling ``tune.report`` does not load the driver's surface
    (controller, analysis, pandas): each new actor used to pay ~0.6 s for it."""

    @ray_session.remote(num_cpus=0, runtime_env={"env_vars": {"FRESH_WORKER": "lazy-import"}})
    def in_new_worker():
        import sys

        import tune_async as tune

        names = (tune.report, tune.Trainable, tune.uniform)  # resolved on first use
        return ([callable(n) for n in names],
                sorted(m for m in ("tune_async.controller", "tune_async.analysis", "pandas")
                       if m in sys.modules),
                "report" in dir(tune))

    assert ray_session.get(in_new_worker.remote()) == ([True, True, True], [], True)


@pytest.mark.ray
def test_a_first_run_imports_nothing_and_starts_few_threads_on_the_loop(tmp_path, ray_session):
    """... and makes none of Ray's synchronous calls on the loop's thread."""
    # A service that started Ray first, then awaits its first run: an import holds the
    # GIL (Ray's first serialized object imported pydantic, 20-28 ms), and a thread's
    # start blocks the loop until the new thread runs (one per trial starting, before).
    address = ray_session.get_runtime_context().gcs_address
    out = subprocess.run(
        [sys.executable, os.path.join(HERE, "quiet_loop_driver.py"), str(tmp_path)],
        env=driver_env(RAY_ADDRESS=address), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("OUTCOME "))
    outcome = json.loads(line[len("OUTCOME "):])
    assert outcome["imported"] == [], outcome["first_import"]
    # The actor-creation thread, a worker thread or two for file and Ray calls, and the
    # executor's last kill; not one per trial (8 start together here).
    assert len(outcome["threads_started"]) <= 4, outcome["threads_started"]
    # Ray's synchronous calls (ray.init, making the actor classes, reading the capacity,
    # kills) go to threads: the loop's thread makes none of them.
    assert outcome["ray_calls_on_loop"] == [], outcome["ray_calls_on_loop"][0]
    # The class is exported once, while the executor starts up, not by the first
    # creation among the first trials' starts (11 ms of Python, then).
    events = outcome["ray_events"]
    assert events[0] == "export TrialActor in tune_async_actor_creation_0", events
    assert events.count("create") == 8 and sum(e.startswith("export") for e in events) == 1
    # Without Ray's disassembly of every method (only a label for a warning).
    assert not any(e.startswith("disassemble") for e in events), events


def test_a_forked_child_gets_its_own_actor_creation_thread(tmp_path):
    # The parent's thread does not exist in a forked child: an executor copied with it
    # would queue the child's actor creations forever.
    script = (
        "import os\n"
        "from tune_async.execution import ray_executor as r\n"
        "parent = r._actor_creation_thread()\n"
        "assert parent.submit(lambda: 1).result(timeout=10) == 1\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    child = r._actor_creation_thread()\n"
        "    ok = child is not parent and child.submit(lambda: 2).result(timeout=10) == 2\n"
        "    os._exit(0 if ok else 3)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "print('CHILD', os.waitstatus_to_exitcode(status))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], env=driver_env(), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "CHILD 0" in out.stdout


@pytest.mark.ray
def test_a_driver_runs_again_after_reconnecting_to_ray(tmp_path, ray_session):
    # The actor classes are made once per process; a later Ray session (a new job) must
    # get them exported again.
    script = (
        "import os, sys, ray\n"
        "import tune_async as tune\n"
        "def trainable(config):\n"
        "    tune.report(loss=config['x'])\n"
        "counts = []\n"
        "for attempt in range(2):\n"
        "    ray.init(address=os.environ['RAY_ADDRESS'], configure_logging=False)\n"
        "    analysis = tune.run(trainable, config={'x': tune.grid_search([1, 2])}, verbose=0,\n"
        "                        local_dir=sys.argv[1], resources_per_trial={'cpu': 0.25})\n"
        "    counts.append(sorted(t.last_result['loss'] for t in analysis.trials))\n"
        "    ray.shutdown()\n"
        "print('RESULTS', counts)\n"
    )
    address = ray_session.get_runtime_context().gcs_address
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)],
                         env=driver_env(RAY_ADDRESS=address), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "RESULTS [[1, 2], [1, 2]]" in out.stdout


def test_exporting_ahead_is_only_an_optimisation(caplog):
    # Another Ray version's internals: nothing raised, Ray exports on the first creation.
    import logging

    from tune_async.execution import ray_executor

    with caplog.at_level(logging.DEBUG, logger=ray_executor.__name__):
        ray_executor._export_to_job(object())  # no __ray_metadata__
    assert "Ray exports the actor class on its first creation" in caplog.text
