"""log_to_file: a trial's prints, and its subprocesses' output, land in its own files."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

import tune_async as tune
from tune_async.error import TuneError

pytestmark = pytest.mark.ray


def _shout(tag: str) -> None:
    print(f"out-{tag}", flush=True)
    print(f"err-{tag}", file=sys.stderr, flush=True)
    # A child process writes straight to the inherited fds 1 and 2.
    subprocess.run(["sh", "-c", f"echo sub-out-{tag}; echo sub-err-{tag} >&2"], check=True)


def noisy_function(config):
    _shout(f"T{config['x']}")
    for step in range(2):
        print(f"step-T{config['x']}-{step}")  # not flushed: the trial's end flushes it
        tune.report(loss=step, pid=os.getpid())


class NoisyClass(tune.Trainable):
    def setup(self, config):
        self.x = config["x"]
        print(f"setup-T{self.x}")

    def step(self):
        _shout(f"T{self.x}")
        return {"loss": 1.0, "pid": os.getpid()}

    def reset_config(self, new_config):
        self.x = new_config["x"]
        print(f"reset-T{self.x}")
        return True

    def cleanup(self):
        print(f"cleanup-T{self.x}")


def read(trial, name):
    with open(os.path.join(trial.logdir, name), encoding="utf-8") as f:
        return f.read()


def trials_in(text: str) -> set:
    """The trials (their x) whose output is in ``text``: every line names its x as T<x>."""
    return {int(x) for x in re.findall(r"T(\d+)", text)}


XS = [1, 2, 3]


@pytest.mark.parametrize("reuse_actors", [False, True])
def test_function_trainable_stdout_and_stderr_files(results_dir, reuse_actors):
    analysis = tune.run(noisy_function, config={"x": tune.grid_search(XS)}, log_to_file=True,
                        reuse_actors=reuse_actors, local_dir=results_dir, verbose=0)
    for trial in analysis.trials:
        x = trial.config["x"]
        out, err = read(trial, "stdout"), read(trial, "stderr")
        for line in (f"out-T{x}", f"sub-out-T{x}", f"step-T{x}-0", f"step-T{x}-1"):
            assert f"{line}\n" in out, (line, out)
        assert f"err-T{x}\n" in err and f"sub-err-T{x}\n" in err, err
        assert "out-" not in err and "err-" not in out
        # Nothing of another trial's, although trials shared worker processes.
        assert trials_in(out) == {x} and trials_in(err) == {x}


def test_class_trainable_one_file_with_reused_actors(results_dir):
    analysis = tune.run(NoisyClass, config={"x": tune.grid_search(XS)}, stop={"training_iteration": 2},
                        log_to_file="output.log", reuse_actors=True, local_dir=results_dir,
                        verbose=0)
    pids = [trial.last_result["pid"] for trial in analysis.trials]
    assert len(set(pids)) < len(pids)  # some trial ran in an actor another one had used
    for trial in analysis.trials:
        x = trial.config["x"]
        text = read(trial, "output.log")
        # Both streams, of the trial and of its subprocesses, once per step.
        assert text.count(f"\nout-T{x}\n") + text.startswith(f"out-T{x}\n") == 2, text
        assert text.count(f"sub-out-T{x}\n") == 2 and text.count(f"sub-err-T{x}\n") == 2
        assert text.count(f"\nerr-T{x}\n") == 2
        # A new instance's setup or a reused one's reset_config: this trial's start.
        assert f"setup-T{x}\n" in text or f"reset-T{x}\n" in text
        assert trials_in(text) == {x}, text
        assert not os.path.exists(os.path.join(trial.logdir, "stdout"))


def test_a_stdout_stderr_pair_of_names(results_dir):
    analysis = tune.run(NoisyClass, config={"x": tune.grid_search([7, 8])},
                        stop={"training_iteration": 1}, log_to_file=("my.out", "my.err"),
                        local_dir=results_dir, verbose=0)
    for trial in analysis.trials:
        x = trial.config["x"]
        out, err = read(trial, "my.out"), read(trial, "my.err")
        assert f"setup-T{x}\n" in out and f"out-T{x}\n" in out and f"sub-out-T{x}\n" in out
        assert f"cleanup-T{x}\n" in out  # the trial's end: its cleanup() is still its own
        assert f"err-T{x}\n" in err and f"sub-err-T{x}\n" in err
        assert "err-" not in out and "setup" not in err
        assert trials_in(out) == {x} and trials_in(err) == {x}


def test_without_log_to_file_no_files_are_written(results_dir):
    analysis = tune.run(NoisyClass, config={"x": 5}, stop={"training_iteration": 1},
                        local_dir=results_dir, verbose=0)
    files = os.listdir(analysis.trials[0].logdir)
    assert "stdout" not in files and "stderr" not in files


def test_local_executor_refuses_log_to_file_before_any_trial_runs(results_dir):
    ran = []

    def trainable(config):
        ran.append(1)
        tune.report(loss=1)

    with pytest.raises(TuneError, match="log_to_file needs each trial in a process"):
        tune.run(trainable, log_to_file=True, trial_executor="local", local_dir=results_dir,
                 verbose=0)
    assert ran == []


def fails_once(config):
    marker = os.path.join(config["dir"], "failed_once")
    print(f"attempt-T{config['x']}")  # not flushed by the trainable: the failure must not lose it
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError("first attempt fails")
    tune.report(loss=1.0)


def test_a_retried_trial_appends_to_its_files(results_dir, tmp_path):
    analysis = tune.run(fails_once, config={"x": 4, "dir": str(tmp_path)}, log_to_file=True,
                        max_failures=1, local_dir=results_dir, verbose=0)
    trial = analysis.trials[0]
    assert trial.status == "TERMINATED" and trial.num_failures == 1
    assert read(trial, "stdout").count("attempt-T4\n") == 2


def leaves_a_subprocess_behind(config):
    x = config["x"]
    if x == 1:  # still writing after its trial has ended (and the next trial has started)
        subprocess.Popen(["sh", "-c", "sleep 3; echo late-T1"])
    else:
        time.sleep(5)
    print(f"done-T{x}")
    tune.report(loss=1.0, pid=os.getpid())


def test_a_subprocess_outliving_its_trial_writes_into_that_trials_file(results_dir):
    # One trial at a time (2 CPUs each): the second runs in the first one's worker process.
    analysis = tune.run(leaves_a_subprocess_behind, config={"x": tune.grid_search([1, 2])},
                        resources_per_trial={"cpu": 2}, log_to_file=True,
                        local_dir=results_dir, verbose=0)
    first, second = sorted(analysis.trials, key=lambda t: t.config["x"])
    assert first.last_result["pid"] == second.last_result["pid"]
    assert read(first, "stdout") == "done-T1\nlate-T1\n"
    assert read(second, "stdout") == "done-T2\n"
