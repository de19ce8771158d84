"""Checkpoints and fault tolerance through the public API (issue #3).

Most tests run on the in-process ScriptedExecutor; the few marked ``ray`` need a real
worker process (SIGKILL of a trial's worker, checkpoints taken inside a Ray actor).
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

import tune_async as tune
from tests.scripted_executor import ScriptedExecutor

# ---- helpers ------------------------------------------------------------------------------


def run(trainable, executor=None, **kwargs):
    kwargs.setdefault("verbose", 0)
    return tune.run(trainable, trial_executor=executor or ScriptedExecutor(), **kwargs)


def result_lines(logdir):
    with open(os.path.join(logdir, "result.json")) as f:
        return [json.loads(line) for line in f if line.strip()]


def iterations(logdir):
    return [r["training_iteration"] for r in result_lines(logdir)]


def checkpoint_iterations(logdir):
    """The iterations of the ``checkpoint_<n>`` directories on disk."""
    found = []
    for name in os.listdir(logdir):
        suffix = name[len("checkpoint_"):]
        if name.startswith("checkpoint_") and suffix.isdigit():
            found.append(int(suffix))
    return sorted(found)


def append_line(path, text):
    with open(path, "a") as f:
        f.write(text + "\n")


def read_lines(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def failure_blocks(logdir):
    with open(os.path.join(logdir, "error.txt")) as f:
        return f.read().count("Failure # ")


class Counter(tune.Trainable):
    """Counts its steps. Config keys (all optional):

    losses: ``loss`` reported at each iteration; ckpt_at: iterations that return
    ``should_checkpoint``; done_at: iteration that returns ``done``; fail_at + marker:
    raise once at that iteration (the marker file records that it happened);
    as_dict: save_checkpoint returns a dict; log: file where load_checkpoint notes
    what it received.
    """

    def setup(self, config):
        self.count = 0

    def step(self):
        self.count += 1
        config = self.config
        if config.get("fail_at") == self.count and not os.path.exists(config["marker"]):
            open(config["marker"], "w").close()
            raise RuntimeError(f"planned failure at {self.count}")
        result = {"count": self.count}
        if config.get("losses"):
            result["loss"] = config["losses"][self.count - 1]
        if self.count in config.get("ckpt_at", ()):
            result["should_checkpoint"] = True
        if config.get("done_at") == self.count:
            result["done"] = True
        if config.get("fixed_time"):  # makes time_total_s and timesteps_total exact
            result.update(time_this_iter_s=1.0, timesteps_this_iter=10)
        return result

    def save_checkpoint(self, checkpoint_dir):
        if self.config.get("as_dict"):
            return {"count": self.count}
        path = os.path.join(checkpoint_dir, "state.json")
        with open(path, "w") as f:
            json.dump({"count": self.count}, f)
        return path

    def load_checkpoint(self, checkpoint):
        if isinstance(checkpoint, dict):
            kind, self.count = "dict", checkpoint["count"]
        else:
            with open(checkpoint) as f:
                kind, self.count = "path", json.load(f)["count"]
        if self.config.get("log"):
            append_line(self.config["log"], f"{kind} {self.count}")


# ---- class API: save / load ----------------------------------------------------------------


@pytest.mark.parametrize("as_dict", [False, True], ids=["path", "dict"])
def test_retry_loads_what_save_checkpoint_returned(results_dir, tmp_path, as_dict):
    log, marker = tmp_path / "loads.log", tmp_path / "failed"
    config = {"as_dict": as_dict, "fail_at": 5, "marker": str(marker), "log": str(log)}
    analysis = run(Counter, config=config, checkpoint_freq=2, max_failures=1,
                   stop={"training_iteration": 7}, local_dir=results_dir)
    trial = analysis.trials[0]
    assert trial.status == "TERMINATED" and trial.num_failures == 1
    # Restarted from the newest checkpoint (iteration 4), in the form it was saved.
    assert read_lines(log) == [f"{'dict' if as_dict else 'path'} 4"]
    lines = result_lines(trial.logdir)
    assert [r["training_iteration"] for r in lines] == list(range(1, 8))
    assert [r["count"] for r in lines] == list(range(1, 8))
    paths = analysis.get_trial_checkpoints_paths(trial, "training_iteration")
    assert [value for _, value in paths] == [2, 4, 6]


def test_dict_checkpoint_is_pickled_inside_the_checkpoint_dir(results_dir):
    analysis = run(Counter, config={"as_dict": True}, checkpoint_freq=2,
                   stop={"training_iteration": 2}, local_dir=results_dir)
    ckpt_dir = os.path.join(analysis.trials[0].logdir, "checkpoint_000002")
    assert os.path.isdir(ckpt_dir)
    assert "checkpoint" in os.listdir(ckpt_dir)


def test_counters_continue_after_a_retry(results_dir, tmp_path):
    config = {"fixed_time": True, "fail_at": 6, "marker": str(tmp_path / "failed")}
    analysis = run(Counter, config=config, checkpoint_freq=4, max_failures=1,
                   stop={"training_iteration": 8}, local_dir=results_dir)
    trial = analysis.trials[0]
    lines = result_lines(trial.logdir)
    assert [r["time_total_s"] for r in lines] == [float(n) for n in range(1, 9)]
    assert [r["timesteps_total"] for r in lines] == [10 * n for n in range(1, 9)]
    # The restart is visible in the *_since_restore counters only.
    assert [r["iterations_since_restore"] for r in lines] == [1, 2, 3, 4, 1, 2, 3, 4]
    assert trial.last_result["training_iteration"] == 8
    assert trial.metric_analysis["count"]["max"] == 8
    assert trial.metric_analysis["count"]["last"] == 8


def test_retry_without_a_checkpoint_starts_over_without_duplicates(results_dir, tmp_path):
    log = tmp_path / "loads.log"
    config = {"fail_at": 3, "marker": str(tmp_path / "failed"), "log": str(log)}
    analysis = run(Counter, config=config, max_failures=1, stop={"training_iteration": 5},
                   local_dir=results_dir)
    trial = analysis.trials[0]
    assert trial.status == "TERMINATED" and trial.num_failures == 1
    assert read_lines(log) == []  # nothing to load
    lines = result_lines(trial.logdir)
    assert [r["training_iteration"] for r in lines] == [1, 2, 3, 4, 5]
    assert [r["count"] for r in lines] == [1, 2, 3, 4, 5]


def test_checkpoint_freq_and_at_end_on_the_same_iteration(results_dir):
    analysis = run(Counter, checkpoint_freq=5, checkpoint_at_end=True,
                   stop={"training_iteration": 10}, local_dir=results_dir)
    trial = analysis.trials[0]
    assert checkpoint_iterations(trial.logdir) == [5, 10]
    paths = analysis.get_trial_checkpoints_paths(trial, "training_iteration")
    assert [value for _, value in paths] == [5, 10]


# ---- class API: when checkpoints are taken ----------------------------------------------------


@pytest.mark.parametrize(
    "at_end, expected", [(False, [3, 6, 9]), (True, [3, 6, 9, 10])], ids=["freq", "freq+end"]
)
def test_checkpoint_freq_saves_every_n_iterations(results_dir, at_end, expected):
    analysis = run(Counter, checkpoint_freq=3, checkpoint_at_end=at_end,
                   stop={"training_iteration": 10}, local_dir=results_dir)
    logdir = analysis.trials[0].logdir
    assert checkpoint_iterations(logdir) == expected
    for n in expected:  # each one holds the state of exactly that iteration
        with open(os.path.join(logdir, f"checkpoint_{n:06d}", "state.json")) as f:
            assert json.load(f) == {"count": n}
    assert iterations(logdir) == list(range(1, 11))


def test_checkpoint_freq_zero_disables_checkpoints(results_dir):
    analysis = run(Counter, checkpoint_freq=0, stop={"training_iteration": 5},
                   local_dir=results_dir)
    assert checkpoint_iterations(analysis.trials[0].logdir) == []


def test_checkpoint_at_end_when_a_dict_stop_ends_the_trial(results_dir):
    analysis = run(Counter, checkpoint_at_end=True, stop={"training_iteration": 5},
                   local_dir=results_dir)
    logdir = analysis.trials[0].logdir
    assert checkpoint_iterations(logdir) == [5]
    assert iterations(logdir) == [1, 2, 3, 4, 5]


def test_checkpoint_at_end_when_the_trainable_returns_done(results_dir):
    analysis = run(Counter, config={"done_at": 4}, checkpoint_at_end=True,
                   local_dir=results_dir)
    logdir = analysis.trials[0].logdir
    assert checkpoint_iterations(logdir) == [4]
    with open(os.path.join(logdir, "checkpoint_000004", "state.json")) as f:
        assert json.load(f) == {"count": 4}


def test_should_checkpoint_in_a_result_saves_a_checkpoint(results_dir):
    analysis = run(Counter, config={"ckpt_at": [3]}, stop={"training_iteration": 5},
                   local_dir=results_dir)
    logdir = analysis.trials[0].logdir
    assert checkpoint_iterations(logdir) == [3]
    with open(os.path.join(logdir, "checkpoint_000003", "state.json")) as f:
        assert json.load(f) == {"count": 3}


def test_keep_checkpoints_num_keeps_the_latest_by_default(results_dir):
    analysis = run(Counter, checkpoint_freq=1, keep_checkpoints_num=2,
                   stop={"training_iteration": 6}, local_dir=results_dir)
    assert checkpoint_iterations(analysis.trials[0].logdir) == [5, 6]


def test_keep_checkpoints_num_min_prefix_keeps_the_lowest_losses(results_dir):
    losses = [5.0, 1.0, 4.0, 6.0, 3.0, 2.0]  # best two: iterations 2 and 6
    analysis = run(Counter, config={"losses": losses}, checkpoint_freq=1,
                   keep_checkpoints_num=2, checkpoint_score_attr="min-loss",
                   stop={"training_iteration": 6}, local_dir=results_dir)
    trial = analysis.trials[0]
    assert checkpoint_iterations(trial.logdir) == [2, 6]
    paths = analysis.get_trial_checkpoints_paths(trial, "loss")
    assert [value for _, value in paths] == [1.0, 2.0]
    assert all(os.path.exists(path) for path, _ in paths)


def test_keep_checkpoints_num_max_score_attr(results_dir):
    losses = [5.0, 1.0, 4.0, 6.0, 3.0, 7.0]  # highest two: iterations 4 and 6
    analysis = run(Counter, config={"losses": losses}, checkpoint_freq=1,
                   keep_checkpoints_num=2, checkpoint_score_attr="loss",
                   stop={"training_iteration": 6}, local_dir=results_dir)
    assert checkpoint_iterations(analysis.trials[0].logdir) == [4, 6]


# ---- function API ----------------------------------------------------------------------------


def counting_fn(config, checkpoint_dir=None):
    """Reports ``step`` 1..steps; checkpoints every ``every`` steps; may fail once."""
    start = 0
    if checkpoint_dir:
        with open(os.path.join(checkpoint_dir, "state.json")) as f:
            start = json.load(f)["step"]
    append_line(config["log"], f"call {checkpoint_dir or '-'}")
    for step in range(start + 1, config["steps"] + 1):
        if step == config.get("fail_at") and not os.path.exists(config["marker"]):
            open(config["marker"], "w").close()
            raise RuntimeError(f"planned failure at {step}")
        if step % config["every"] == 0:
            with tune.checkpoint_dir(step=step) as d:
                with open(os.path.join(d, "state.json"), "w") as f:
                    json.dump({"step": step}, f)
        tune.report(step=step)


def test_function_checkpoint_dir_writes_a_checkpoint(results_dir, tmp_path):
    config = {"log": str(tmp_path / "calls.log"), "steps": 5, "every": 2}
    analysis = run(counting_fn, config=config, local_dir=results_dir)
    logdir = analysis.trials[0].logdir
    assert checkpoint_iterations(logdir) == [2, 4]
    for n in (2, 4):
        with open(os.path.join(logdir, f"checkpoint_{n:06d}", "state.json")) as f:
            assert json.load(f) == {"step": n}
    assert iterations(logdir) == [1, 2, 3, 4, 5]


def test_function_retry_gets_the_latest_checkpoint_dir(results_dir, tmp_path):
    log = tmp_path / "calls.log"
    # Fails at step 6, after step 5 was recorded: step 5 must not be logged twice.
    config = {"log": str(log), "steps": 8, "every": 2, "fail_at": 6,
              "marker": str(tmp_path / "failed")}
    analysis = run(counting_fn, config=config, max_failures=1, local_dir=results_dir)
    trial = analysis.trials[0]
    assert trial.status == "TERMINATED" and trial.num_failures == 1
    calls = read_lines(log)
    assert calls == ["call -", f"call {os.path.join(trial.logdir, 'checkpoint_000004')}"]
    lines = result_lines(trial.logdir)
    assert [r["training_iteration"] for r in lines] == list(range(1, 9))
    assert [r["step"] for r in lines] == list(range(1, 9))


def timed_fn(config, checkpoint_dir=None):
    """Like counting_fn, with exact times and timesteps."""
    start = 0
    if checkpoint_dir:
        with open(os.path.join(checkpoint_dir, "state.json")) as f:
            start = json.load(f)["step"]
    for step in range(start + 1, 7):
        if step == 5 and not os.path.exists(config["marker"]):
            open(config["marker"], "w").close()
            raise RuntimeError("planned failure")
        if step % 2 == 0:
            with tune.checkpoint_dir(step=step) as d:
                with open(os.path.join(d, "state.json"), "w") as f:
                    json.dump({"step": step}, f)
        tune.report(step=step, time_this_iter_s=1.0, timesteps_this_iter=10)


def test_function_counters_continue_after_a_retry(results_dir, tmp_path):
    analysis = run(timed_fn, config={"marker": str(tmp_path / "failed")}, max_failures=1,
                   local_dir=results_dir)
    lines = result_lines(analysis.trials[0].logdir)
    assert [r["training_iteration"] for r in lines] == [1, 2, 3, 4, 5, 6]
    assert [r["time_total_s"] for r in lines] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert [r["timesteps_total"] for r in lines] == [10, 20, 30, 40, 50, 60]


def test_function_keep_checkpoints_num_deletes_old_dirs(results_dir, tmp_path):
    config = {"log": str(tmp_path / "calls.log"), "steps": 6, "every": 1}
    analysis = run(counting_fn, config=config, keep_checkpoints_num=2, local_dir=results_dir)
    trial = analysis.trials[0]
    assert checkpoint_iterations(trial.logdir) == [5, 6]
    paths = analysis.get_trial_checkpoints_paths(trial, "step")
    assert paths == [(os.path.join(trial.logdir, "checkpoint_000005"), 5),
                     (os.path.join(trial.logdir, "checkpoint_000006"), 6)]


@pytest.mark.parametrize("kwargs", [{"checkpoint_freq": 2}, {"checkpoint_at_end": True}])
def test_function_with_class_checkpoint_options_is_a_value_error(results_dir, tmp_path, kwargs):
    executor = ScriptedExecutor()
    with pytest.raises(ValueError, match="function"):
        run(counting_fn, executor, config={"log": str(tmp_path / "x"), "steps": 1, "every": 1},
            local_dir=results_dir, **kwargs)
    assert executor.started == []
    assert not os.path.exists(tmp_path / "x")


# ---- restore= ----------------------------------------------------------------------------------


def test_restore_starts_one_trial_from_a_class_checkpoint(results_dir, tmp_path):
    first = run(Counter, checkpoint_at_end=True, stop={"training_iteration": 4},
                local_dir=results_dir, name="first")
    path = first.get_best_checkpoint(first.trials[0], "training_iteration", "max")
    assert path is not None and "checkpoint_000004" in path

    log = tmp_path / "loads.log"
    second = run(Counter, config={"log": str(log)}, restore=path,
                 stop={"training_iteration": 7}, local_dir=results_dir, name="second")
    assert len(second.trials) == 1
    lines = result_lines(second.trials[0].logdir)
    assert [r["training_iteration"] for r in lines] == [5, 6, 7]
    assert [r["count"] for r in lines] == [5, 6, 7]
    assert read_lines(log) == ["path 4"]


def test_restore_from_a_dict_checkpoint(results_dir, tmp_path):
    first = run(Counter, config={"as_dict": True}, checkpoint_at_end=True,
                stop={"training_iteration": 3}, local_dir=results_dir, name="first")
    path = first.get_best_checkpoint(first.trials[0], "training_iteration", "max")
    log = tmp_path / "loads.log"
    second = run(Counter, config={"as_dict": True, "log": str(log)}, restore=path,
                 stop={"training_iteration": 5}, local_dir=results_dir, name="second")
    assert read_lines(log) == ["dict 3"]
    assert iterations(second.trials[0].logdir) == [4, 5]


def test_restore_starts_a_function_from_its_checkpoint_dir(results_dir, tmp_path):
    log = tmp_path / "calls.log"
    config = {"log": str(log), "steps": 4, "every": 2}
    first = run(counting_fn, config=config, local_dir=results_dir, name="first")
    ckpt = os.path.join(first.trials[0].logdir, "checkpoint_000004")

    config = {"log": str(log), "steps": 6, "every": 2}
    second = run(counting_fn, config=config, restore=ckpt, local_dir=results_dir,
                 name="second")
    assert len(second.trials) == 1
    assert read_lines(log)[-1] == f"call {ckpt}"
    lines = result_lines(second.trials[0].logdir)
    assert [r["training_iteration"] for r in lines] == [5, 6]
    assert [r["step"] for r in lines] == [5, 6]


# ---- analysis --------------------------------------------------------------------------------


def test_analysis_checkpoint_paths_and_best_checkpoint(results_dir):
    losses = [4.0, 2.0, 3.0, 5.0]
    analysis = run(Counter, config={"losses": losses}, checkpoint_freq=1,
                   stop={"training_iteration": 4}, metric="loss", mode="min",
                   local_dir=results_dir, name="exp")
    trial = analysis.trials[0]
    expected = [(os.path.join(trial.logdir, f"checkpoint_{n:06d}", "state.json"), loss)
                for n, loss in enumerate(losses, start=1)]
    assert analysis.get_trial_checkpoints_paths(trial, "loss") == expected
    best_min = expected[1][0]
    assert analysis.get_best_checkpoint(trial, "loss", "min") == best_min
    assert analysis.get_best_checkpoint(trial, "loss", "max") == expected[3][0]
    assert analysis.best_checkpoint == best_min

    # The same answers from the experiment directory after the run.
    loaded = tune.ExperimentAnalysis(os.path.join(results_dir, "exp"),
                                     default_metric="loss", default_mode="min")
    [loaded_trial] = loaded.trials
    assert loaded.get_trial_checkpoints_paths(loaded_trial, "loss") == expected
    assert loaded.get_trial_checkpoints_paths(loaded_trial.logdir, "loss") == expected
    assert loaded.get_best_checkpoint(loaded_trial, "loss", "min") == best_min
    assert loaded.best_checkpoint == best_min


def test_analysis_lists_only_kept_checkpoints(results_dir):
    analysis = run(Counter, checkpoint_freq=1, keep_checkpoints_num=2,
                   stop={"training_iteration": 5}, local_dir=results_dir, name="kept")
    loaded = tune.ExperimentAnalysis(os.path.join(results_dir, "kept"))
    for source in (analysis, loaded):
        trial = source.trials[0]
        paths = source.get_trial_checkpoints_paths(trial, "training_iteration")
        assert [value for _, value in paths] == [4, 5]


# ---- callbacks ---------------------------------------------------------------------------------


class Recorder(tune.Callback):
    def __init__(self):
        self.events = []

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        self.events.append(("checkpoint", trial.trial_id, checkpoint.iteration))

    def on_trial_save(self, iteration, trials, trial, **info):
        self.events.append(("save", trial.trial_id))

    def on_trial_restore(self, iteration, trials, trial, **info):
        self.events.append(("restore", trial.trial_id))


def test_checkpoint_save_and_restore_callbacks(results_dir, tmp_path):
    recorder = Recorder()
    config = {"fail_at": tune.grid_search([3, None]), "marker": str(tmp_path / "failed")}
    analysis = run(Counter, ScriptedExecutor(slots=1), config=config, checkpoint_freq=2,
                   max_failures=1, stop={"training_iteration": 4}, callbacks=[recorder],
                   local_dir=results_dir)
    failing = next(t for t in analysis.trials if t.config["fail_at"] == 3)
    steady = next(t for t in analysis.trials if t.config["fail_at"] is None)
    ev = recorder.events

    def of(trial, kind):
        return [e for e in ev if e[0] == kind and e[1] == trial.trial_id]

    assert of(steady, "checkpoint") == [("checkpoint", steady.trial_id, 2),
                                        ("checkpoint", steady.trial_id, 4)]
    assert of(steady, "save") == [("save", steady.trial_id)] * 2
    assert of(steady, "restore") == []
    # The failing trial checkpoints at 2, fails at 3, is restored from 2, checkpoints at 4.
    assert of(failing, "checkpoint") == [("checkpoint", failing.trial_id, 2),
                                         ("checkpoint", failing.trial_id, 4)]
    assert of(failing, "save") == [("save", failing.trial_id)] * 2
    assert of(failing, "restore") == [("restore", failing.trial_id)]
    # on_checkpoint comes before its on_trial_save.
    for trial in (failing, steady):
        kinds = [e[0] for e in ev if e[1] == trial.trial_id and e[0] != "restore"]
        assert kinds == ["checkpoint", "save", "checkpoint", "save"]


def test_on_trial_restore_fires_for_restore_argument(results_dir):
    first = run(Counter, checkpoint_at_end=True, stop={"training_iteration": 2},
                local_dir=results_dir, name="first")
    path = first.get_best_checkpoint(first.trials[0], "training_iteration", "max")
    recorder = Recorder()
    second = run(Counter, restore=path, stop={"training_iteration": 3}, callbacks=[recorder],
                 local_dir=results_dir, name="second")
    assert recorder.events == [("restore", second.trials[0].trial_id)]


# ---- max_failures ------------------------------------------------------------------------------


def flaky(config):
    """Fails the first ``fail_times`` calls, then reports once."""
    runs = read_lines(config["log"])
    append_line(config["log"], "run")
    if len(runs) < config["fail_times"]:
        raise RuntimeError(f"transient failure {len(runs) + 1}")
    tune.report(ok=1)


def test_max_failures_minus_one_retries_forever(results_dir, tmp_path):
    log = tmp_path / "runs.log"
    analysis = run(flaky, config={"log": str(log), "fail_times": 3}, max_failures=-1,
                   local_dir=results_dir)
    trial = analysis.trials[0]
    assert trial.status == "TERMINATED"
    assert trial.num_failures == 3
    assert len(read_lines(log)) == 4
    assert failure_blocks(trial.logdir) == 3
    with open(os.path.join(trial.logdir, "error.txt")) as f:
        text = f.read()
    for n in (1, 2, 3):
        assert f"Failure # {n} " in text and f"transient failure {n}" in text
    assert iterations(trial.logdir) == [1]


def test_max_failures_zero_never_retries(results_dir, tmp_path):
    log = tmp_path / "runs.log"
    analysis = run(flaky, config={"log": str(log), "fail_times": 1}, max_failures=0,
                   local_dir=results_dir, raise_on_failed_trial=False)
    trial = analysis.trials[0]
    assert trial.status == "ERROR"
    assert trial.num_failures == 1
    assert len(read_lines(log)) == 1
    assert failure_blocks(trial.logdir) == 1


def test_max_failures_budget_exhausted_keeps_every_error(results_dir, tmp_path):
    log = tmp_path / "runs.log"
    analysis = run(flaky, config={"log": str(log), "fail_times": 5}, max_failures=2,
                   local_dir=results_dir, raise_on_failed_trial=False)
    trial = analysis.trials[0]
    assert trial.status == "ERROR"
    assert trial.num_failures == 3
    assert len(read_lines(log)) == 3
    assert failure_blocks(trial.logdir) == 3
    loaded = tune.ExperimentAnalysis(os.path.dirname(trial.logdir))
    assert loaded.trials[0].num_failures == 3
    assert loaded.trials[0].status == "ERROR"


# ---- a real Ray worker ------------------------------------------------------------------------


def killed_once(config, checkpoint_dir=None):
    """Checkpoints every 2 steps; SIGKILLs its own worker at step 5 on the first attempt."""
    start = 0
    if checkpoint_dir:
        with open(os.path.join(checkpoint_dir, "state.json")) as f:
            start = json.load(f)["step"]
    append_line(config["log"], f"call {checkpoint_dir or '-'}")
    for step in range(start + 1, 8):
        if config["kill"] and step == 5 and not os.path.exists(config["marker"]):
            open(config["marker"], "w").close()
            # The function runs ahead of the driver: give the results paired with the
            # checkpoints time to reach it, else the retry starts from an older one.
            time.sleep(0.1)
            os.kill(os.getpid(), signal.SIGKILL)
        if step % 2 == 0:
            with tune.checkpoint_dir(step=step) as d:
                with open(os.path.join(d, "state.json"), "w") as f:
                    json.dump({"step": step}, f)
        tune.report(step=step)


@pytest.mark.ray
def test_sigkilled_worker_is_retried_from_its_checkpoint(results_dir, tmp_path):
    config = {"kill": tune.grid_search([True, False]), "marker": str(tmp_path / "killed"),
              "log": str(tmp_path / "calls.log")}
    analysis = tune.run(killed_once, config=config, max_failures=1, verbose=0,
                        local_dir=results_dir)
    assert os.path.exists(tmp_path / "killed")
    statuses = {t.config["kill"]: (t.status, t.num_failures) for t in analysis.trials}
    assert statuses == {True: ("TERMINATED", 1), False: ("TERMINATED", 0)}
    killed = next(t for t in analysis.trials if t.config["kill"])
    # Normally from checkpoint 4; from 2 if result 4 was still on its way at the kill.
    restarts = [line for line in read_lines(tmp_path / "calls.log") if line != "call -"]
    assert restarts in [[f"call {os.path.join(killed.logdir, f'checkpoint_{n:06d}')}"]
                        for n in (2, 4)]
    for trial in analysis.trials:
        lines = result_lines(trial.logdir)
        assert [r["training_iteration"] for r in lines] == list(range(1, 8))
        assert [r["step"] for r in lines] == list(range(1, 8))
    assert failure_blocks(killed.logdir) == 1


@pytest.mark.ray
def test_class_checkpoints_and_retry_on_ray(results_dir, tmp_path):
    losses = [5.0, 1.0, 4.0, 6.0, 3.0, 2.0, 7.0, 8.0]
    config = {"losses": losses, "fail_at": 7, "marker": str(tmp_path / "failed"),
              "log": str(tmp_path / "loads.log")}
    analysis = tune.run(Counter, config=config, checkpoint_freq=2, keep_checkpoints_num=2,
                        checkpoint_score_attr="min-loss", max_failures=1,
                        stop={"training_iteration": 8}, verbose=0, local_dir=results_dir)
    trial = analysis.trials[0]
    assert trial.status == "TERMINATED" and trial.num_failures == 1
    # Checkpoints at 2 (loss 1), 4 (6), 6 (2), 8 (8): the best two plus the newest.
    assert read_lines(tmp_path / "loads.log") == ["path 6"]
    lines = result_lines(trial.logdir)
    assert [r["training_iteration"] for r in lines] == list(range(1, 9))
    assert [r["count"] for r in lines] == list(range(1, 9))
    assert checkpoint_iterations(trial.logdir) == [2, 6, 8]
