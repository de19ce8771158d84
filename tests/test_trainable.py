"""The class API: automatic result fields, train_batch limits, reuse, checkpoints."""

from __future__ import annotations

import os
import time

import pytest

from tune_async.result import RESULT_DUPLICATE
from tune_async.trainable.trainable import Trainable, TrialInfo


class Counter(Trainable):
    def setup(self, config):
        self.value = config.get("start", 0)
        self.cleaned = False

    def step(self):
        self.value += 1
        return {"mean_loss": float(self.value), "value": self.value}

    def save_checkpoint(self, checkpoint_dir):
        return {"value": self.value}

    def load_checkpoint(self, checkpoint):
        self.value = checkpoint["value"]

    def cleanup(self):
        self.cleaned = True


class Scripted(Trainable):
    """Returns the results listed in config["results"], one per step."""

    def setup(self, config):
        self.script = list(config["results"])

    def step(self):
        item = self.script.pop(0)
        if isinstance(item, BaseException):
            raise item
        return dict(item)


@pytest.fixture
def info(tmp_path):
    return TrialInfo(trial_id="abc_00001", trial_name="Counter_abc_00001", logdir=str(tmp_path))


def test_train_fills_automatic_fields(info):
    t = Counter({"start": 10}, trial_info=info)
    result = t.train()
    assert result["value"] == 11
    assert result["done"] is False
    assert result["training_iteration"] == 1
    assert result["neg_mean_loss"] == -11.0
    assert result["config"] == {"start": 10}
    assert result["pid"] == os.getpid()
    assert isinstance(result["hostname"], str) and isinstance(result["node_ip"], str)
    assert isinstance(result["timestamp"], int) and len(result["date"]) == 19
    assert result["time_this_iter_s"] >= 0
    assert result["iterations_since_restore"] == 1
    assert result["timesteps_total"] is None and result["episodes_total"] is None  # 1.x


def test_counters_accumulate_across_results(info):
    t = Scripted(
        {"results": [{"time_this_iter_s": 2.0, "timesteps_this_iter": 5}] * 3},
        trial_info=info,
    )
    results = [t.train() for _ in range(3)]
    assert [r["training_iteration"] for r in results] == [1, 2, 3]
    assert [r["time_total_s"] for r in results] == [2.0, 4.0, 6.0]
    assert [r["timesteps_total"] for r in results] == [5, 10, 15]
    assert results[-1]["timesteps_since_restore"] == 15
    assert len({r["experiment_id"] for r in results}) == 1
    assert t.iteration == t.training_iteration == 3


def test_step_must_return_dict(info):
    class Bad(Trainable):
        def step(self):
            return 1.0

    with pytest.raises(TypeError, match="step\\(\\) must return a dict"):
        Bad(trial_info=info).train()


def test_trial_info_defaults_outside_tune():
    t = Counter({"start": 0})
    assert (t.trial_name, t.trial_id) == ("default", "default")
    assert t.get_config() == {"start": 0}


def test_trial_info_properties(info, tmp_path):
    t = Counter(trial_info=info)
    assert (t.trial_id, t.trial_name, t.logdir) == (info.trial_id, info.trial_name, str(tmp_path))


def test_train_batch_stops_at_max_results(info):
    results = Counter(trial_info=info).train_batch(4, 10.0)
    assert [r["training_iteration"] for r in results] == [1, 2, 3, 4]


@pytest.mark.parametrize("flag", ["done", "should_checkpoint", RESULT_DUPLICATE])
def test_train_batch_stops_at_flag(info, flag):
    t = Scripted({"results": [{}, {flag: True}, {}, {}]}, trial_info=info)
    results = t.train_batch(10, 10.0)
    assert len(results) == 2 and results[-1][flag] is True


def test_train_batch_stops_after_window(info):
    class Slow(Trainable):
        def step(self):
            time.sleep(0.02)
            return {}

    results = Slow(trial_info=info).train_batch(1000, 0.05)
    assert 1 <= len(results) <= 5


def test_train_batch_always_returns_one_result(info):
    assert len(Counter(trial_info=info).train_batch(5, 0.0)) == 1


def test_train_batch_returns_results_before_raising(info):
    t = Scripted({"results": [{}, {}, KeyError("boom")]}, trial_info=info)
    assert len(t.train_batch(10, 10.0)) == 2
    with pytest.raises(KeyError, match="boom"):
        t.train_batch(10, 10.0)


def test_legacy_hooks_still_work(info):
    class Old(Trainable):
        def _setup(self, config):
            self.x = config["x"]

        def _train(self):
            return {"x": self.x}

    with pytest.warns(DeprecationWarning):
        t = Old({"x": 3}, trial_info=info)
    with pytest.warns(DeprecationWarning):
        assert t.train()["x"] == 3


def test_reset_refused_by_default(info):
    t = Counter({"start": 0}, trial_info=info)
    t.train()
    assert t.reset({"start": 5}, TrialInfo(trial_id="other")) is False
    assert t.config == {"start": 0} and t.trial_id == info.trial_id and t.iteration == 1


def test_reset_accepted_resets_counters(info, tmp_path):
    class Reusable(Counter):
        def reset_config(self, new_config):
            self.value = new_config["start"]
            return True

    t = Reusable({"start": 0}, trial_info=info)
    first = t.train()
    new_dir = tmp_path / "second"
    assert t.reset({"start": 100}, TrialInfo("t2", "Reusable_t2", str(new_dir))) is True
    second = t.train()
    assert second["training_iteration"] == 1 and second["value"] == 101
    assert second["experiment_id"] != first["experiment_id"]
    assert (t.trial_id, t.logdir, second["config"]) == ("t2", str(new_dir), {"start": 100})


def test_stop_calls_cleanup(info):
    t = Counter(trial_info=info)
    t.stop()
    assert t.cleaned


def test_default_resource_request_is_none():
    assert Counter.default_resource_request({}) is None


def test_save_and_restore_dict_checkpoint(info, tmp_path):
    t = Counter({"start": 0}, trial_info=info)
    t.train_batch(3, 10.0)
    path = t.save()
    assert os.path.dirname(path) == os.path.join(str(tmp_path), "checkpoint_000003")
    fresh = Counter({"start": 1000}, trial_info=info)
    fresh.restore(path)
    result = fresh.train()
    assert result["value"] == 4 and result["training_iteration"] == 4
    assert result["iterations_since_restore"] == 1


def test_save_and_restore_path_checkpoint(info, tmp_path):
    class FileCkpt(Counter):
        def save_checkpoint(self, checkpoint_dir):
            path = os.path.join(checkpoint_dir, "state.txt")
            with open(path, "w") as f:
                f.write(str(self.value))
            return path

        def load_checkpoint(self, checkpoint):
            with open(checkpoint) as f:
                self.value = int(f.read())

    t = FileCkpt({"start": 0}, trial_info=info)
    t.train()
    path = t.save(str(tmp_path / "elsewhere"))
    fresh = FileCkpt({"start": 50}, trial_info=info)
    fresh.restore(os.path.dirname(path))  # the checkpoint directory works too
    assert fresh.train()["value"] == 2


def test_save_rejects_path_outside_checkpoint_dir(info, tmp_path):
    class Outside(Counter):
        def save_checkpoint(self, checkpoint_dir):
            return str(tmp_path)

    with pytest.raises(ValueError, match="within the given checkpoint dir"):
        Outside(trial_info=info).save()


def test_save_to_object_round_trip(info):
    t = Counter({"start": 0}, trial_info=info)
    t.train_batch(2, 10.0)
    blob = t.save_to_object()
    fresh = Counter({"start": 0}, trial_info=info)
    fresh.restore_from_object(blob)
    assert (fresh.value, fresh.iteration) == (2, 2)
