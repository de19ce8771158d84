"""Details of the 1.x class/function Trainable API: in-memory restores leave no
``checkpoint_tmp*`` behind, user-reported ``training_iteration``/``neg_mean_loss`` win,
``experiment_id`` survives a restore, the legacy hooks exist on the base class,
``checkpoint_dir`` outside a session, and the "Function checkpointing is disabled" warning.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import pickle
import warnings

import pytest

import tune_async as tune
from tune_async.registry import _to_trainable_cls
from tune_async.schedulers import PopulationBasedTraining
from tune_async.trainable import function_trainable, session
from tune_async.trainable.function_trainable import wrap_function
from tune_async.trainable.trainable import Trainable, TrialInfo

FUNCTION_LOGGER = "tune_async.trainable.function_trainable"
DISABLED = "Function checkpointing is disabled"


def trial(tmp_path, name):
    """A trial's info with its directory made (as Tune makes it)."""
    (tmp_path / name).mkdir()
    return TrialInfo(trial_id=name, trial_name=f"t_{name}", logdir=str(tmp_path / name))


@pytest.fixture
def info(tmp_path):
    return trial(tmp_path, "trial")


def temp_dirs(logdir):
    return glob.glob(os.path.join(logdir, "checkpoint_tmp*"))


class Counter(Trainable):
    def setup(self, config):
        self.value = 0

    def step(self):
        self.value += 1
        return {"value": self.value, **self.config.get("extra", {})}

    def save_checkpoint(self, checkpoint_dir):
        path = os.path.join(checkpoint_dir, "value")
        with open(path, "w") as f:
            f.write(str(self.value))
        return path

    def load_checkpoint(self, path):
        with open(path) as f:
            self.value = int(f.read())


def counting_fn(config, checkpoint_dir=None):
    start = 0
    if checkpoint_dir:
        with open(os.path.join(checkpoint_dir, "value")) as f:
            start = int(f.read())
    for i in range(start + 1, 1000):
        with tune.checkpoint_dir(step=i) as d:
            with open(os.path.join(d, "value"), "w") as f:
                f.write(str(i))
        tune.report(value=i, **config.get("extra", {}))


# -- 1. restore_from_object removes its checkpoint_tmp* directory --------------------------


def test_class_restore_from_object_removes_its_temp_dir(info, tmp_path):
    source = Counter(trial_info=trial(tmp_path, "source"))
    source.train()
    source.train()
    blob = source.save_to_object()
    t = Counter(trial_info=info)
    t.restore_from_object(blob)
    assert temp_dirs(t.logdir) == []
    assert (t.value, t.train()["training_iteration"]) == (2, 3)
    source.stop()
    t.stop()


def test_class_restore_from_object_removes_its_temp_dir_on_failure(info, tmp_path):
    class Failing(Counter):
        def load_checkpoint(self, path):
            raise RuntimeError("cannot load")

    source = Counter(trial_info=trial(tmp_path, "source"))
    source.train()
    t = Failing(trial_info=info)
    with pytest.raises(RuntimeError, match="cannot load"):
        t.restore_from_object(source.save_to_object())
    assert temp_dirs(t.logdir) == []


def counting_blob(tmp_path, steps):
    """The counting function's class, and its state after ``steps`` results as bytes."""
    cls = wrap_function(counting_fn)
    source = cls(trial_info=trial(tmp_path, "source"))
    for _ in range(steps):
        source.train()
    blob = source.save_to_object()
    source.stop()
    return cls, blob


def test_function_restore_from_object_removes_its_temp_dir_at_stop(info, tmp_path):
    cls, blob = counting_blob(tmp_path, 2)
    t = cls(trial_info=info)
    t.restore_from_object(blob)
    assert t.train()["value"] == 3  # the function read the unpacked checkpoint
    assert len(temp_dirs(t.logdir)) == 1  # still there while the function runs
    t.restore_from_object(blob)  # the next restore replaces it
    assert t.train()["value"] == 3 and len(temp_dirs(t.logdir)) == 1
    t.stop()
    assert temp_dirs(t.logdir) == []


def test_function_reset_removes_the_temp_dir(info, tmp_path):
    cls, blob = counting_blob(tmp_path, 1)
    t = cls(trial_info=info)
    t.restore_from_object(blob)
    t.train()
    assert t.reset({}, trial(tmp_path, "t2"))
    assert temp_dirs(info.logdir) == []
    t.stop()


def test_function_save_of_the_restored_checkpoint_keeps_it(info, tmp_path):
    """A save before the function reports a new checkpoint returns the unpacked one: it
    becomes the trial's checkpoint and is kept (as in 1.x)."""
    cls, blob = counting_blob(tmp_path, 1)
    t = cls(trial_info=info)
    t.restore_from_object(blob)
    path = t.save()
    t.stop()
    assert os.path.exists(os.path.join(path, "value"))
    fresh = cls(trial_info=trial(tmp_path, "fresh"))
    fresh.restore(path)
    assert fresh.train()["value"] == 2
    fresh.stop()


class PBTCounter(Counter):
    def step(self):
        return {**super().step(), "score": self.value * self.config["lr"]}


def pbt_fn(config, checkpoint_dir=None):
    start = 0
    if checkpoint_dir:
        with open(os.path.join(checkpoint_dir, "value")) as f:
            start = int(f.read())
    for i in range(start + 1, 1000):
        if i % 2 == 0:
            with tune.checkpoint_dir(step=i) as d:
                with open(os.path.join(d, "value"), "w") as f:
                    f.write(str(i))
        tune.report(score=i * config["lr"])


@pytest.mark.parametrize("trainable", [PBTCounter, pbt_fn], ids=["class", "function"])
def test_pbt_leaves_no_temp_dirs(trainable, tmp_path):
    pbt = PopulationBasedTraining(time_attr="training_iteration", perturbation_interval=2,
                                  hyperparam_mutations={"lr": [0.1, 1.0, 2.0]})
    analysis = tune.run(trainable, config={"lr": tune.grid_search([0.1, 1.0, 2.0])},
                        scheduler=pbt, metric="score", mode="max",
                        stop={"training_iteration": 8}, trial_executor=tune.LocalExecutor(),
                        local_dir=str(tmp_path), verbose=0)
    assert pbt._num_perturbations >= 1
    assert all(t.last_result["training_iteration"] == 8 for t in analysis.trials)
    assert glob.glob(os.path.join(str(tmp_path), "*", "*", "checkpoint_tmp*")) == []


# -- 2. training_iteration and neg_mean_loss ------------------------------------------------


def test_class_keeps_a_reported_training_iteration_and_neg_mean_loss(info):
    t = Counter({"extra": {"training_iteration": 101, "mean_loss": 2.0,
                           "neg_mean_loss": 7.0}}, trial_info=info)
    result = t.train()
    assert (result["training_iteration"], t.iteration) == (101, 1)
    assert result["neg_mean_loss"] == 7.0


@pytest.mark.parametrize(("loss", "expected"), [(0.0, None), (0, None), (None, None),
                                                (2.5, -2.5)])
def test_neg_mean_loss_only_for_a_nonzero_mean_loss(info, loss, expected):
    t = Counter({"extra": {"mean_loss": loss}}, trial_info=info)
    assert t.train().get("neg_mean_loss") == expected


def test_function_keeps_a_reported_training_iteration(info):
    def fn(config):
        for i in range(1, 5):
            tune.report(training_iteration=10 * i)

    t = wrap_function(fn)({}, trial_info=info)
    results = t.train_batch(10, 10.0, stop={"training_iteration": 20})
    # The batch ends at the result whose own training_iteration meets the stop.
    assert [r["training_iteration"] for r in results] == [10, 20]
    assert t.iteration == 2
    t.stop()


def test_class_batch_stops_at_a_reported_training_iteration(info):
    class Own(Counter):
        def step(self):
            return {**super().step(), "training_iteration": 100 + self.value}

    t = Own(trial_info=info)
    results = t.train_batch(10, 10.0, stop={"training_iteration": 102})
    assert [r["training_iteration"] for r in results] == [101, 102]


def own_iteration_fn(config):
    for i in range(1, 100):
        with open(config["log"], "a") as f:
            f.write(f"{i}\n")
        tune.report(training_iteration=10 * i)


@pytest.mark.ray
def test_stop_by_a_reported_training_iteration_on_ray(tmp_path):
    log = str(tmp_path / "steps.log")
    analysis = tune.run(own_iteration_fn, config={"log": log}, stop={"training_iteration": 30},
                        local_dir=str(tmp_path), verbose=0)
    assert analysis.trials[0].last_result["training_iteration"] == 30
    with open(log) as f:
        assert [int(line) for line in f] == [1, 2, 3]  # not one step past the stop


# -- 3. experiment_id survives a restore -----------------------------------------------------


def test_experiment_id_is_saved_and_restored(info, tmp_path):
    t = Counter(trial_info=info)
    experiment_id = t.train()["experiment_id"]
    path = t.save()
    with open(path + ".tune_metadata", "rb") as f:
        meta = pickle.load(f)
    assert meta["experiment_id"] == experiment_id and "ray_version" in meta
    fresh = Counter(trial_info=trial(tmp_path, "fresh"))
    fresh.restore(path)
    assert fresh.train()["experiment_id"] == experiment_id
    other = Counter(trial_info=trial(tmp_path, "other"))
    other.restore_from_object(t.save_to_object())
    assert other.train()["experiment_id"] == experiment_id


def test_function_experiment_id_is_restored(info, tmp_path):
    cls = wrap_function(counting_fn)
    t = cls(trial_info=info)
    experiment_id = t.train()["experiment_id"]
    path = t.save()
    t.stop()
    fresh = cls(trial_info=trial(tmp_path, "fresh"))
    fresh.restore(path)
    result = fresh.train()
    assert (result["experiment_id"], result["value"]) == (experiment_id, 2)
    fresh.stop()


def test_checkpoint_without_experiment_id_still_restores(info, tmp_path):
    t = Counter(trial_info=info)
    t.train()
    path = t.save()
    with open(path + ".tune_metadata", "rb") as f:
        meta = pickle.load(f)
    del meta["experiment_id"], meta["ray_version"]  # written before they were saved
    with open(path + ".tune_metadata", "wb") as f:
        pickle.dump(meta, f)
    fresh = Counter(trial_info=trial(tmp_path, "fresh"))
    own_id = fresh._experiment_id
    fresh.restore(path)
    result = fresh.train()
    assert (result["experiment_id"], result["training_iteration"]) == (own_id, 2)


# -- 4. the legacy hooks exist on the base class ---------------------------------------------


class RecordingLogger:
    def __init__(self, logdir):
        self.logdir = logdir
        self.results = []

    def on_result(self, result):
        self.results.append(result)


def test_super_calls_of_the_legacy_hooks_work(tmp_path):
    class Legacy(Trainable):
        def _setup(self, config):
            super()._setup(config)
            self.x = config["x"]

        def _train(self):
            return {"x": self.x}

        def _log_result(self, result):
            super()._log_result(result)  # forwards to the logger_creator logger

        def _stop(self):
            super()._stop()
            self.stopped = True

    logger = RecordingLogger(str(tmp_path))
    with pytest.warns(DeprecationWarning):
        t = Legacy({"x": 3}, logger_creator=lambda config: logger)
    with pytest.warns(DeprecationWarning):
        assert t.train()["x"] == 3
    assert [r["x"] for r in logger.results] == [3]
    with pytest.warns(DeprecationWarning):
        t.stop()
    assert t.stopped


def test_base_legacy_hooks_defaults(info, tmp_path):
    t = Counter(trial_info=info)
    assert t._setup({}) is None and t._stop() is None
    for hook, args in (("_train", ()), ("_save", (str(tmp_path),)), ("_restore", ("x",))):
        with pytest.raises(NotImplementedError):
            getattr(t, hook)(*args)


def test_no_deprecation_warning_without_legacy_overrides(tmp_path):
    logger = RecordingLogger(str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        t = Counter(logger_creator=lambda config: logger)
        t.train()
        t.load_checkpoint(t.save())
        t.stop()
    assert len(logger.results) == 1  # the new-style path still forwards results


def test_a_legacy_step_override_is_still_detected(info):
    class OldStep(Trainable):
        def _train(self):
            return {"old": True}

    with pytest.warns(DeprecationWarning, match="_train"):
        assert OldStep(trial_info=info).train()["old"]
    with pytest.raises(NotImplementedError):
        Trainable(trial_info=info).train()


# -- 5. checkpoint_dir outside a session -------------------------------------------------------


def test_checkpoint_dir_outside_a_session_yields_the_working_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(session, "_warned", set())
    with pytest.warns(UserWarning, match="Session not detected"):
        with tune.checkpoint_dir(step=1) as d:
            with open(os.path.join(d, "model.txt"), "w") as f:
                f.write("x")
    assert d == os.path.abspath("./") == str(tmp_path)
    assert (tmp_path / "model.txt").read_text() == "x"  # kept after the block


# -- 6. "Function checkpointing is disabled" ------------------------------------------------


def disabled_warnings(caplog):
    return [r for r in caplog.records
            if r.name == FUNCTION_LOGGER and r.getMessage().startswith(DISABLED)]


def test_a_plain_function_given_to_run_warns_once_per_process(caplog, monkeypatch,
                                                               results_dir):
    def plain(config):
        tune.report(x=1)

    monkeypatch.setattr(function_trainable, "_checkpointing_warned", False)
    caplog.set_level(logging.WARNING, logger=FUNCTION_LOGGER)
    for _ in range(2):
        tune.run(plain, local_dir=results_dir, verbose=0, trial_executor=tune.LocalExecutor())
    wrap_function(plain)
    records = disabled_warnings(caplog)
    assert len(records) == 1 and records[0].levelno == logging.WARNING
    assert records[0].getMessage() == (
        "Function checkpointing is disabled. This may result in unexpected behavior when "
        "using checkpointing features or certain schedulers. To enable, set the train "
        "function arguments to be `func(config, checkpoint_dir=None)`.")


def test_no_checkpointing_warning_for_checkpointable_async_generators_or_classes(caplog,
                                                                               monkeypatch):
    def checkpointable(config, checkpoint_dir=None):
        tune.report(x=1)

    async def agen(config):
        yield {"x": 1}

    monkeypatch.setattr(function_trainable, "_checkpointing_warned", False)
    caplog.set_level(logging.WARNING, logger=FUNCTION_LOGGER)
    wrap_function(checkpointable)
    wrap_function(agen)
    wrap_function(lambda config: None, warn=False)
    _to_trainable_cls("counter", Counter)
    assert disabled_warnings(caplog) == []


# -- 7. a plain function's "null" checkpoint: restored, the function and its counters restart --


def fails_once_at_3(config):
    flag = config["flag"]
    for step in range(1, 5):
        if step == 3 and not os.path.exists(flag):
            open(flag, "w").close()
            raise RuntimeError("once")
        tune.report(step=step)


def test_a_retry_from_a_null_checkpoint_restarts_the_iterations(results_dir, tmp_path):
    analysis = tune.run(fails_once_at_3, config={"flag": str(tmp_path / "failed")},
                        checkpoint_freq=1, max_failures=1, local_dir=results_dir, verbose=0,
                        trial_executor=tune.LocalExecutor())
    [trial] = analysis.trials
    assert trial.status == "TERMINATED"
    rows = analysis.trial_dataframes[trial.logdir][["step", "training_iteration"]]
    # the function started over, and training_iteration says so (1.x)
    assert rows.values.tolist() == [[1, 1], [2, 2], [1, 1], [2, 2], [3, 3], [4, 4]]


# -- 8. made outside Tune, a trainable logs its results as 1.x's default logger did ---------


class Steps(Trainable):
    def step(self):
        return {"loss": 1.0 / (self.iteration + 1)}


def test_a_trainable_made_outside_tune_writes_its_result_files(monkeypatch, tmp_path):
    monkeypatch.setenv("TUNE_RESULT_DIR", str(tmp_path))
    t = Steps(config={"lr": 0.1})
    t.train()
    t.train()
    t.stop()
    assert os.path.dirname(t.logdir) == str(tmp_path)
    with open(os.path.join(t.logdir, "result.json")) as f:
        rows = [json.loads(line) for line in f]
    assert [r["training_iteration"] for r in rows] == [1, 2]
    assert rows[0]["config"] == {"lr": 0.1}
    assert os.path.exists(os.path.join(t.logdir, "progress.csv"))


def test_a_trainable_run_by_tune_leaves_result_files_to_the_driver(results_dir):
    analysis = tune.run(Steps, stop={"training_iteration": 2}, local_dir=results_dir,
                        verbose=0, trial_executor=tune.LocalExecutor())
    with open(os.path.join(analysis.trials[0].logdir, "result.json")) as f:
        assert len(f.readlines()) == 2  # written once, by the driver


def test_train_buffered_and_delete_checkpoint(info, caplog):
    t = Counter(config={}, trial_info=info)
    results = t.train_buffered(buffer_time_s=10.0, max_buffer_length=3)
    assert [r["training_iteration"] for r in results] == [1, 2, 3]
    path = t.save()  # <logdir>/checkpoint_000003/value
    assert os.listdir(info.logdir) == ["checkpoint_000003"]
    t.delete_checkpoint(path)
    assert os.listdir(info.logdir) == []
    t.delete_checkpoint(path)  # gone: a warning, as 1.x
    assert "Checkpoint path not found during deletion" in caplog.text
    t.stop()
