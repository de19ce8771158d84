"""The remaining 1.x details (issue #12): trailing function checkpoints, the public
members of ``Trial`` and ``ExperimentAnalysis`` 1.x scripts read, ``tune.utils``
helpers (``diagnose_serialization``...) and the logger names records appear under.
"""

from __future__ import annotations

import json
import logging
import os
import sys

import pytest

import tune_async as tune
from tune_async.checkpoint import Checkpoint

# ---- 1. a checkpoint written after the last report ------------------------------------------


def read_state(checkpoint_dir):
    with open(os.path.join(checkpoint_dir, "state.json")) as f:
        return json.load(f)


def trailing_checkpoint(config, checkpoint_dir=None):
    """Reports three results, then saves its final state before returning (1.x pattern)."""
    if config.get("log"):
        with open(config["log"], "a") as f:
            f.write(f"{checkpoint_dir or '-'}\n")
    for i in range(3):
        tune.report(score=i)
    with tune.checkpoint_dir(step=3) as d:
        with open(os.path.join(d, "state.json"), "w") as f:
            json.dump({"step": 3, "x": config["x"]}, f)


def assert_trailing_checkpoint_kept(analysis):
    for trial in analysis.trials:
        assert trial.status == "TERMINATED"
        assert isinstance(trial.checkpoint, Checkpoint)
        assert trial.has_checkpoint()
        path = trial.checkpoint.value
        assert os.path.basename(path) == "checkpoint_000003"
        assert os.path.dirname(path) == trial.logdir
        assert read_state(path) == {"step": 3, "x": trial.config["x"]}
        assert trial.checkpoint.iteration == 3
        assert analysis.get_best_checkpoint(trial, "score", "max") == path
        assert analysis.get_trial_checkpoints_paths(trial, "score") == [(path, 2)]
        # recorded once: no extra result for the checkpoint
        with open(os.path.join(trial.logdir, "result.json")) as f:
            assert len(f.readlines()) == 3


@pytest.mark.ray
def test_trailing_checkpoint_is_the_trials_checkpoint_on_ray(results_dir):
    analysis = tune.run(trailing_checkpoint, config={"x": tune.grid_search([1, 2])},
                        local_dir=results_dir, verbose=0)
    assert_trailing_checkpoint_kept(analysis)


def test_trailing_checkpoint_kept_on_local_executor_and_after_resume(results_dir, tmp_path):
    log = str(tmp_path / "calls.log")
    kwargs = dict(config={"x": tune.grid_search([1, 2]), "log": log}, name="trailing",
                  local_dir=results_dir, verbose=0, trial_executor="local")
    analysis = tune.run(trailing_checkpoint, **kwargs)
    assert_trailing_checkpoint_kept(analysis)
    paths = {t.trial_id: t.checkpoint.value for t in analysis.trials}

    resumed = tune.run(trailing_checkpoint, resume=True, **kwargs)
    assert_trailing_checkpoint_kept(resumed)
    assert {t.trial_id: t.checkpoint.value for t in resumed.trials} == paths
    with open(log) as f:
        assert f.read().split() == ["-", "-"], "finished trials do not run again"

    from_disk = tune.ExperimentAnalysis(os.path.join(results_dir, "trailing"))
    for trial in from_disk.trials:
        assert from_disk.get_best_checkpoint(trial, "score", "max") == paths[trial.trial_id]


def test_trailing_checkpoint_pairs_with_a_returned_result(results_dir):
    def fn(config, checkpoint_dir=None):
        tune.report(score=1)
        with tune.checkpoint_dir(step=2) as d:
            open(os.path.join(d, "weights"), "w").close()
        return {"score": 5}

    [trial] = tune.run(fn, local_dir=results_dir, verbose=0, trial_executor="local").trials
    assert trial.last_result["score"] == 5
    assert trial.checkpoint.iteration == 2
    assert trial.checkpoint.result["score"] == 5
    assert os.path.exists(os.path.join(trial.checkpoint.value, "weights"))


def test_trailing_checkpoint_of_an_async_trainable(results_dir):
    async def fn(config, checkpoint_dir=None):
        for i in range(2):
            await tune.areport(score=i)
        with tune.checkpoint_dir(step=2) as d:
            with open(os.path.join(d, "state.json"), "w") as f:
                json.dump({"step": 2}, f)

    [trial] = tune.run(fn, local_dir=results_dir, verbose=0, trial_executor="local").trials
    assert trial.has_checkpoint() and read_state(trial.checkpoint.value) == {"step": 2}
    assert len(_results(trial)) == 2


def _results(trial):
    with open(os.path.join(trial.logdir, "result.json")) as f:
        return [json.loads(line) for line in f if line.strip()]


# ---- 2. the public members of Trial and ExperimentAnalysis -----------------------------------


class Doubler(tune.Trainable):
    def setup(self, config):
        self.x, self.i = config["x"], 0

    def step(self):
        self.i += 1
        if self.config.get("fail_at") == self.i:
            raise RuntimeError("boom")
        return {"score": self.x * self.i}

    def save_checkpoint(self, checkpoint_dir):
        return {"i": self.i}

    def load_checkpoint(self, checkpoint):
        self.i = checkpoint["i"]


class WindowsSeen(tune.Callback):
    """What a plugin reads of the per-metric windows while the trial runs."""

    def __init__(self):
        self.windows = []

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.windows.append(trial.metric_n_steps["score"])


@pytest.mark.ray
def test_trial_members_after_a_run_on_ray(results_dir):
    import ray

    seen = WindowsSeen()
    analysis = tune.run(Doubler, name="members", config={"x": tune.grid_search([1, 2])},
                        stop={"training_iteration": 6}, checkpoint_freq=2, max_failures=2,
                        resources_per_trial=tune.PlacementGroupFactory([{"CPU": 1}]),
                        callbacks=[seen], local_dir=results_dir, verbose=0)
    trial = next(t for t in analysis.trials if t.config["x"] == 2)

    assert trial.trainable_name == "Doubler"
    assert trial.evaluated_params == {"x": 2}
    assert trial.experiment_tag == "1_x=2"
    assert trial.local_dir == os.path.join(results_dir, "members")
    assert os.path.dirname(trial.logdir) == trial.local_dir and os.path.isdir(trial.logdir)
    assert str(trial) == repr(trial) == f"Doubler_{trial.trial_id}"
    assert trial.is_finished() and trial.status == tune.trial.Trial.TERMINATED
    assert trial.last_result["training_iteration"] == 6 and trial.last_result["score"] == 12
    stats = {k: v for k, v in trial.metric_analysis["score"].items() if not k.startswith("_")}
    assert stats == {"max": 12.0, "min": 2.0, "avg": 7.0, "last": 12.0,
                     "last-5-avg": 8.0, "last-10-avg": 7.0}
    # while running, plugins read 1.x's windows: {"5": deque(maxlen=5), "10": ...}
    last_window = seen.windows[-1]
    assert sorted(last_window) == ["10", "5"] and last_window["5"].maxlen == 5
    assert trial.n_steps == [5, 10]

    assert trial.has_checkpoint()
    assert trial.checkpoint.iteration == 6 and os.path.exists(trial.checkpoint.value)
    assert trial.should_checkpoint()  # iteration 6 is a multiple of checkpoint_freq=2
    assert trial.should_stop(trial.last_result)
    assert not trial.should_stop({"training_iteration": 3})
    with pytest.raises(tune.TuneError, match="training_iteration"):
        trial.should_stop({"score": 1})
    assert trial.num_failures == 0 and trial.error_file is None
    assert trial.should_recover()  # max_failures=2, no failure yet

    assert trial.node_ip == ray.util.get_node_ip_address()
    assert trial.location.hostname == trial.node_ip
    assert str(trial.location) == f"{trial.node_ip}:{trial.last_result['pid']}"
    assert trial.resources == tune.PlacementGroupFactory([{"CPU": 1}])
    assert trial.placement_group_factory == tune.PlacementGroupFactory([{"CPU": 1}])
    assert trial.uses_placement_groups
    assert trial.get_trainable_cls().__name__ == "Doubler"
    assert len(tune.trial.Trial.generate_id()) == 8


def test_trial_members_of_a_failed_trial(results_dir):
    analysis = tune.run(Doubler, config={"x": 1, "fail_at": 2}, stop={"training_iteration": 4},
                        local_dir=results_dir, verbose=0, trial_executor="local",
                        raise_on_failed_trial=False)
    [trial] = analysis.trials
    assert trial.status == "ERROR" and trial.num_failures == 1
    assert trial.error_file == os.path.join(trial.logdir, "error.txt")
    with open(trial.error_file) as f:
        assert "boom" in f.read()
    assert not trial.should_recover() and not trial.has_checkpoint()
    assert trial.checkpoint is None
    assert trial.placement_group_factory is None and not trial.uses_placement_groups
    assert trial.resources.cpu == 1 and trial.resources.gpu == 0
    assert trial.metric_n_steps == {}, "a finished trial drops its windows"


def test_analysis_members_after_a_run(results_dir):
    analysis = tune.run(Doubler, name="analysis", config={"x": tune.grid_search([1, 2])},
                        stop={"training_iteration": 4}, checkpoint_freq=2, metric="score",
                        mode="max", local_dir=results_dir, verbose=0, trial_executor="local")
    by_x = {t.config["x"]: t for t in analysis.trials}
    best = by_x[2]
    assert analysis.get_all_configs() == {t.logdir: t.config for t in analysis.trials}
    assert analysis.get_all_configs(prefix=True)[best.logdir] == {"config/x": 2}
    # the metric defaults to the run's (score), as in 1.x
    assert [s for _, s in analysis.get_trial_checkpoints_paths(best)] == [4, 8]
    assert [it for _, it in analysis.get_trial_checkpoints_paths(
        best, "training_iteration")] == [2, 4]
    assert analysis.get_best_checkpoint(best) == best.checkpoint.value
    assert analysis.get_best_logdir() == analysis.best_logdir == best.logdir
    frames = analysis.fetch_trial_dataframes()
    assert set(frames) == set(analysis.trial_dataframes) == {t.logdir for t in analysis.trials}
    assert list(frames[best.logdir]["score"]) == [2, 4, 6, 8]
    assert set(analysis.results) == {t.trial_id for t in analysis.trials}
    assert analysis.results[best.trial_id]["score"] == 8
    assert sorted(analysis.results_df["score"]) == [4, 8]
    assert list(analysis.best_result_df.index) == [best.trial_id]
    assert analysis.best_result_df["score"].iloc[0] == 8
    assert analysis.best_result["score"] == 8 and analysis.best_config == {"x": 2}
    assert analysis.best_trial is best
    assert set(analysis.stats()) >= {"start_time", "timestamp"}
    assert analysis.runner_data()["name"] == "analysis"
    assert analysis.dataframe(metric="score", mode="max")["score"].max() == 8


# ---- 3. tune.utils: diagnose_serialization, validate_save_restore, pinned objects -------------


@pytest.mark.ray
def test_diagnose_serialization_names_the_captured_lock(results_dir, capsys):
    import threading

    lock = threading.Lock()
    shared = {"scale": 2}

    def train(config):
        with lock:
            tune.report(score=config["x"] * shared["scale"])

    # what the user sees first: the trainable cannot reach its Ray actor
    with pytest.raises(Exception, match="lock"):
        tune.run(train, config={"x": 1}, local_dir=results_dir, verbose=0)

    assert tune.utils.diagnose_serialization(train) == {"lock"}
    out = capsys.readouterr().out
    assert f"Trying to serialize {train}..." in out
    assert "Serialization failed: cannot pickle '_thread.lock' object" in out
    assert "Detected 2 nonlocal variables. Checking serializability..." in out
    assert "[name='lock']... FAILED" in out and "[name='shared']... PASSED" in out
    assert "Variable(s) {'lock'} was found to be non-serializable." in out

    def fixed(config):
        own_lock = threading.Lock()  # created in the trial's process
        with own_lock:
            tune.report(score=config["x"] * shared["scale"])

    assert tune.utils.diagnose_serialization(fixed) is True
    assert "Serialization succeeded!" in capsys.readouterr().out
    [trial] = tune.run(fixed, config={"x": 3}, local_dir=results_dir, verbose=0).trials
    assert trial.last_result["score"] == 6
    assert tune.utils.util.diagnose_serialization is tune.utils.diagnose_serialization


def test_diagnose_serialization_of_a_trainable_class(capsys):
    import threading

    lock = threading.Lock()

    class Locked(tune.Trainable):
        def step(self):
            with lock:
                return {"done": True}

    assert tune.utils.diagnose_serialization(Locked) == {"lock"}
    assert "[name='lock']... FAILED" in capsys.readouterr().out


@pytest.mark.ray
def test_validate_save_restore_accepts_a_function_and_checks_progress():
    def counting(config, checkpoint_dir=None):
        start = 0
        if checkpoint_dir:
            with open(os.path.join(checkpoint_dir, "n")) as f:
                start = int(f.read())
        for n in range(start, start + 10):
            with tune.checkpoint_dir(step=n) as d:
                with open(os.path.join(d, "n"), "w") as f:
                    f.write(str(n + 1))
            tune.report(n=n)

    assert tune.utils.validate_save_restore(counting) is True
    assert tune.utils.validate_save_restore(counting, use_object_store=True) is True


class BrokenRestore(tune.Trainable):
    def step(self):
        return {"ok": 1}

    def save_checkpoint(self, checkpoint_dir):
        return {"state": 1}

    def load_checkpoint(self, checkpoint):
        raise RuntimeError("load_checkpoint is broken")


@pytest.mark.ray
def test_validate_save_restore_reports_a_broken_restore():
    with pytest.raises(Exception, match="load_checkpoint is broken"):
        tune.utils.validate_save_restore(BrokenRestore)


# ---- 4. log records under the documented logger names -----------------------------------------


class SaveFails(tune.Trainable):
    def step(self):
        return {"score": 1}

    def save_checkpoint(self, checkpoint_dir):
        raise OSError("disk full")

    def load_checkpoint(self, checkpoint):
        pass


def records(caplog, logger_name, level):
    return [r.getMessage() for r in caplog.records
            if r.name == logger_name and r.levelno == level]


def test_trial_error_is_logged_under_tune_async_controller(results_dir, caplog):
    caplog.set_level(logging.INFO, logger="tune_async")
    analysis = tune.run(Doubler, config={"x": 1, "fail_at": 2}, max_failures=1,
                        stop={"training_iteration": 3}, local_dir=results_dir, verbose=0,
                        trial_executor="local", raise_on_failed_trial=False)
    [trial] = analysis.trials
    errors = records(caplog, "tune_async.controller", logging.ERROR)
    assert len(errors) == 2, "one record per failure (the retry fails again)"
    assert errors[0].startswith(f"Trial {trial}: Error processing event.")
    assert "RuntimeError: boom" in errors[0]
    assert f"Trial {trial} failed (1); retrying" in records(
        caplog, "tune_async.controller", logging.INFO)


def test_checkpoint_failures_are_logged_under_their_modules(results_dir, caplog):
    caplog.set_level(logging.WARNING, logger="tune_async")
    tune.run(SaveFails, stop={"training_iteration": 2}, checkpoint_at_end=True,
             local_dir=results_dir, verbose=0, trial_executor="local")
    [warning] = records(caplog, "tune_async.controller", logging.WARNING)
    assert warning.startswith("Checkpoint at end of trial SaveFails_")
    assert "disk full" in warning

    caplog.clear()
    tune.run(Doubler, config={"x": 1}, stop={"training_iteration": 1}, checkpoint_freq=1,
             checkpoint_score_attr="accuracy", local_dir=results_dir, verbose=0,
             trial_executor="local")
    [error] = records(caplog, "tune_async.checkpoint", logging.ERROR)
    assert error.startswith("Result dict has no key: accuracy.")


def test_helper_and_searcher_warnings_under_their_modules(caplog):
    import time

    from tune_async.suggest import Searcher

    caplog.set_level(logging.WARNING, logger="tune_async")
    with tune.utils.warn_if_slow("slow_step", threshold=0.01):
        time.sleep(0.05)
    [slow] = records(caplog, "tune_async.utils.util", logging.WARNING)
    assert slow.startswith("The `slow_step` operation took")

    Searcher(metric="loss", mode="min", max_concurrent=2)
    [deprecated] = records(caplog, "tune_async.suggest.suggestion", logging.WARNING)
    assert "`max_concurrent` is deprecated" in deprecated


def test_trainable_util_on_a_runs_checkpoints(results_dir, tmp_path):
    from tune_async.trainable.trainable import TrialInfo
    from tune_async.utils.trainable import TrainableUtil

    analysis = tune.run(Doubler, config={"x": 3}, stop={"training_iteration": 4},
                        checkpoint_freq=2, local_dir=results_dir, verbose=0,
                        trial_executor="local")
    [trial] = analysis.trials
    frame = TrainableUtil.get_checkpoints_paths(trial.logdir)
    assert list(frame["training_iteration"]) == [2, 4]
    assert list(frame["chkpt_path"]) == [p for p, _ in analysis.get_trial_checkpoints_paths(
        trial, "training_iteration")]

    path = trial.checkpoint.value
    assert TrainableUtil.find_checkpoint_dir(path) == trial.checkpoint.dir
    assert TrainableUtil.find_rel_checkpoint_dir(trial.logdir, path) == "checkpoint_000004"
    with pytest.raises(FileNotFoundError):
        TrainableUtil.find_checkpoint_dir(trial.logdir)

    blob = TrainableUtil.checkpoint_to_object(path)
    copy_path = TrainableUtil.create_from_pickle(blob, str(tmp_path / "copy"))
    for restore in (lambda t: t.restore(copy_path), lambda t: t.restore_from_object(blob)):
        fresh = Doubler(config={"x": 3}, trial_info=TrialInfo(logdir=str(tmp_path)))
        restore(fresh)
        assert fresh.iteration == 4 and fresh.train()["score"] == 15

    made = TrainableUtil.make_checkpoint_dir(str(tmp_path), 7)
    assert made == str(tmp_path / "checkpoint_000007")
    assert os.path.exists(os.path.join(made, ".is_checkpoint"))
    assert TrainableUtil.make_checkpoint_dir(str(tmp_path), "default").endswith("checkpoint_default")
    open(os.path.join(made, "stale"), "w").close()
    TrainableUtil.make_checkpoint_dir(str(tmp_path), 7, override=True)
    assert os.listdir(made) == [".is_checkpoint"]
    assert tune.utils.trainable.TrainableUtil is TrainableUtil


def test_wait_for_gpu_needs_gputil_and_rejects_the_removed_argument(monkeypatch):
    monkeypatch.setitem(sys.modules, "GPUtil", None)  # not installed
    with pytest.raises(RuntimeError, match="GPUtil must be installed"):
        tune.utils.wait_for_gpu(0)
    with pytest.raises(ValueError, match="target_util"):
        tune.utils.wait_for_gpu(0, gpu_memory_limit=0.5)


class _Gpu:
    def __init__(self, index, uuid, utils):
        self.id, self.uuid, self._utils = index, uuid, utils

    @property
    def memoryUtil(self):  # noqa: N802 - GPUtil's name
        return self._utils.pop(0) if len(self._utils) > 1 else self._utils[0]


def test_wait_for_gpu_polls_until_the_memory_is_released(monkeypatch):
    """GPUtil's interface (getGPUs, id, uuid, memoryUtil) given by a module of our own:
    no GPU here. The utilisation drops over three checks."""
    import types

    gpus = [_Gpu(0, "GPU-aaa", [0.9]), _Gpu(1, "GPU-bbb", [0.8, 0.5, 0.0])]
    module = types.SimpleNamespace(getGPUs=lambda: gpus)
    monkeypatch.setitem(sys.modules, "GPUtil", module)
    sleeps = []
    monkeypatch.setattr(tune.utils.util.time, "sleep", sleeps.append)

    assert tune.utils.wait_for_gpu("1", target_util=0.01, delay_s=2) is True
    assert sleeps == [2, 2], "two waits before the third check found it free"
    assert tune.utils.wait_for_gpu("GPU-bbb") is True  # by UUID
    with pytest.raises(RuntimeError, match="GPU memory was not freed"):
        tune.utils.wait_for_gpu(0, retry=3, delay_s=1)
    with pytest.raises(ValueError, match="not found in set of available GPUs"):
        tune.utils.wait_for_gpu(7)
    with pytest.raises(ValueError, match="must be type str/int"):
        tune.utils.wait_for_gpu(1.5)


# ---- default_resource_request sees each trial's config (1.x's Trial asks per trial) ----------


class SizedByConfig(tune.Trainable):
    @classmethod
    def default_resource_request(cls, config):
        return tune.PlacementGroupFactory([{"CPU": config["cpus"]}])

    def step(self):
        import ray

        return {"cpus_granted": sum(ray.get_runtime_context().get_assigned_resources()
                                    .get(k, 0) for k in ("CPU",)), "done": True}


@pytest.mark.ray
def test_default_resource_request_is_asked_with_each_trials_config(results_dir):
    analysis = tune.run(SizedByConfig, config={"cpus": tune.grid_search([1, 2])},
                        local_dir=results_dir, verbose=0)
    assert [t.placement_group_factory.required_resources()["CPU"] for t in analysis.trials] \
        == [1, 2]
    assert [t.last_result["cpus_granted"] for t in analysis.trials] == [1, 2]


def test_default_resource_request_beside_resources_per_trial_fails_before_any_trial(
        results_dir):
    from tests.scripted_executor import ScriptedExecutor

    executor = ScriptedExecutor()
    with pytest.raises(ValueError, match="Please clear the `resources_per_trial` option"):
        tune.run(SizedByConfig, config={"cpus": tune.grid_search([1, 2])},
                 resources_per_trial={"cpu": 1}, local_dir=results_dir, verbose=0,
                 trial_executor=executor)
    assert executor.started == []


# ---- function signatures 1.x accepts: anything callable as f(config[, checkpoint_dir=]) -------


def with_defaults(config, epochs=3):
    for i in range(epochs):
        tune.report(i=i)


def checkpointing_with_defaults(config, checkpoint_dir=None, epochs=2):
    for i in range(epochs):
        tune.report(i=i, restored=checkpoint_dir is not None)


@pytest.mark.parametrize("fn, reported", [(with_defaults, 3), (checkpointing_with_defaults, 2)])
def test_function_trainables_may_take_parameters_with_defaults(fn, reported, results_dir):
    analysis = tune.run(fn, local_dir=results_dir, verbose=0,
                        trial_executor=tune.LocalExecutor())
    [trial] = analysis.trials
    assert trial.status == "TERMINATED" and trial.last_result["i"] == reported - 1


def test_a_function_needing_another_argument_is_refused_before_any_trial(results_dir):
    def needs_data(config, data):
        pass

    with pytest.raises(ValueError, match=r"Unknown argument.*Found: \['config', 'data'\]"):
        tune.run(needs_data, local_dir=results_dir, verbose=0,
                 trial_executor=tune.LocalExecutor())
    assert os.listdir(results_dir) == []
