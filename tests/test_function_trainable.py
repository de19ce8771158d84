"""The function API: credits, endings, errors, stop/reset, session functions."""

from __future__ import annotations

import os
import threading
import time
import traceback

import pytest

from tune_async.result import RESULT_DUPLICATE
from tune_async.trainable import session
from tune_async.trainable.function_trainable import wrap_function
from tune_async.trainable.session import CHECKPOINT_PATH
from tune_async.trainable.trainable import TrialInfo


@pytest.fixture
def info(tmp_path):
    return TrialInfo(trial_id="t1", trial_name="f_t1", logdir=str(tmp_path))


@pytest.fixture
def make(info):
    """Build a function trainable and stop it at the end of the test."""
    made = []

    def _make(fn, config=None, trial_info=None):
        trainable = wrap_function(fn)(config or {}, trial_info=trial_info or info)
        made.append(trainable)
        return trainable

    yield _make
    for trainable in made:
        trainable.stop()


def _wait_until(predicate, timeout=1.0):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.002)


# -- report forms --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "expected"),
    [
        ((), {"loss": 1.0}, {"loss": 1.0}),
        (({"loss": 2.0},), {}, {"loss": 2.0}),
        ((3.0,), {}, {"_metric": 3.0}),
        ((4.0,), {"acc": 0.5}, {"_metric": 4.0, "acc": 0.5}),
    ],
)
def test_report_forms(make, args, kwargs, expected):
    def fn(config):
        session.report(*args, **kwargs)

    result = make(fn).train()
    assert {k: result[k] for k in expected} == expected
    assert result["training_iteration"] == 1 and result["done"] is False


def test_report_outside_session_warns_once(monkeypatch):
    monkeypatch.setattr(session, "_warned", set())
    with pytest.warns(UserWarning, match="Session not detected"):
        session.report(loss=1.0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        session.report(loss=1.0)  # the second call is silent


def test_auto_fields_and_time_between_reports(make):
    def fn(config):
        for i in range(2):
            time.sleep(0.02)
            session.report(i=i, timesteps_this_iter=10)

    results = make(fn, {"lr": 0.1}).train_batch(2, 10.0)
    assert [r["training_iteration"] for r in results] == [1, 2]
    assert all(r["time_this_iter_s"] >= 0.02 for r in results)
    assert results[1]["time_total_s"] == pytest.approx(
        results[0]["time_this_iter_s"] + results[1]["time_this_iter_s"]
    )
    assert results[1]["timesteps_total"] == 20 and results[0]["config"] == {"lr": 0.1}


# -- credits -------------------------------------------------------------------------------


def test_function_never_runs_ahead_of_granted_credits(make):
    steps = []

    def fn(config):
        for i in range(100):
            steps.append(i)
            session.report(i=i)

    t = make(fn)
    assert [r["i"] for r in t.train_batch(3, 10.0)] == [0, 1, 2]
    time.sleep(0.05)  # give a runaway thread time to show itself
    assert len(steps) == 3
    assert t.train()["i"] == 3
    time.sleep(0.02)
    assert len(steps) == 4


def test_train_batch_returns_after_window(make):
    def fn(config):
        for i in range(1000):
            time.sleep(0.02)
            session.report(i=i)

    results = make(fn).train_batch(1000, 0.05)
    assert 1 <= len(results) <= 5


def test_report_with_done_ends_batch(make):
    def fn(config):
        session.report(i=0)
        session.report(i=1, done=True)
        session.report(i=2)

    results = make(fn).train_batch(10, 10.0)
    assert [r["i"] for r in results] == [0, 1] and results[-1]["done"] is True


# -- endings -------------------------------------------------------------------------------


def test_returned_dict_is_final_done_result(make):
    def fn(config):
        session.report(loss=2.0)
        return {"loss": 1.0}

    results = make(fn).train_batch(10, 10.0)
    assert [(r["loss"], r["done"]) for r in results] == [(2.0, False), (1.0, True)]
    assert results[-1]["training_iteration"] == 2


def test_returned_number_becomes_metric(make):
    result = make(lambda config: 0.25).train()
    assert result["_metric"] == 0.25 and result["done"] is True


def test_return_after_reports_gives_duplicate_marker(make):
    def fn(config):
        session.report(loss=1.0)

    t = make(fn)
    results = t.train_batch(10, 10.0)
    assert results[-1] == {"done": True, RESULT_DUPLICATE: True}
    assert t.iteration == 1


def test_no_report_no_return_gives_one_done_result(make):
    results = make(lambda config: None).train_batch(10, 10.0)
    assert len(results) == 1
    assert results[0]["done"] is True and results[0]["training_iteration"] == 1
    assert RESULT_DUPLICATE not in results[0]


def test_generator_function_yields_results(make):
    def fn(config):
        yield {"a": 1}
        yield 2.0

    results = make(fn).train_batch(10, 10.0)
    assert results[0]["a"] == 1 and results[1]["_metric"] == 2.0
    assert results[-1][RESULT_DUPLICATE] is True


# -- errors --------------------------------------------------------------------------------


def test_exception_keeps_type_and_traceback(make):
    def failing_trainable(config):
        raise KeyError("missing")

    with pytest.raises(KeyError, match="missing") as excinfo:
        make(failing_trainable).train()
    text = "".join(traceback.format_exception(excinfo.value))
    assert "failing_trainable" in text


def test_exception_after_reports_is_raised_next_call(make):
    def fn(config):
        session.report(i=0)
        raise RuntimeError("late")

    t = make(fn)
    assert [r["i"] for r in t.train_batch(10, 10.0)] == [0]
    with pytest.raises(RuntimeError, match="late"):
        t.train_batch(10, 10.0)


# -- stop / reset --------------------------------------------------------------------------


def test_stop_unblocks_blocked_report(make):
    reached_end = []

    def fn(config):
        try:
            for i in range(100):
                session.report(i=i)
        except Exception:  # user code catching Exception must not swallow the stop
            reached_end.append("caught")
        reached_end.append("after")

    t = make(fn)
    t.train()
    thread = t._thread
    start = time.monotonic()
    t.stop()
    assert time.monotonic() - start < 1.0
    assert not thread.is_alive() and reached_end == []
    assert not session.is_session_enabled()


def test_reset_restarts_function_with_new_config(make, tmp_path):
    def fn(config):
        for i in range(100):
            session.report(x=config["x"], i=i, trial=session.get_trial_id())

    t = make(fn, {"x": 1})
    t.train_batch(3, 10.0)
    old_thread = t._thread
    new_info = TrialInfo("t2", "f_t2", str(tmp_path / "t2"))
    assert t.reset({"x": 2}, new_info) is True
    result = t.train()
    assert not old_thread.is_alive()
    assert (result["x"], result["i"], result["training_iteration"]) == (2, 0, 1)
    assert result["trial"] == "t2" and result["config"] == {"x": 2}


# -- session functions and checkpoints -----------------------------------------------------


def test_session_functions_inside_trial(make, info):
    seen = {}

    def fn(config):
        seen["dir"] = session.get_trial_dir()
        seen["name"] = session.get_trial_name()
        seen["id"] = session.get_trial_id()
        seen["enabled"] = session.is_session_enabled()
        session.report(ok=1)

    make(fn).train()
    assert seen == {"dir": info.logdir, "name": "f_t1", "id": "t1", "enabled": True}


def test_checkpoint_dir_pairs_with_next_report_and_restores(make, info, tmp_path):
    received = []

    def fn(config, checkpoint_dir=None):
        received.append(checkpoint_dir)
        start = 0
        if checkpoint_dir:
            with open(os.path.join(checkpoint_dir, "step")) as f:
                start = int(f.read()) + 1
        for step in range(start, 100):
            with session.checkpoint_dir(step=step) as d:
                with open(os.path.join(d, "step"), "w") as f:
                    f.write(str(step))
            session.report(step=step)

    t = make(fn)
    results = t.train_batch(10, 10.0)
    assert len(results) == 1  # a checkpoint ends the batch
    expected_dir = os.path.join(info.logdir, "checkpoint_000000")
    assert results[0]["should_checkpoint"] is True
    assert results[0][CHECKPOINT_PATH] == expected_dir
    assert os.path.exists(os.path.join(expected_dir, ".is_checkpoint"))
    t.train()
    path = t.save()
    assert path == os.path.join(info.logdir, "checkpoint_000001")

    fresh = make(fn, trial_info=TrialInfo("t1", "f_t1", str(tmp_path / "restored")))
    fresh.restore(path)
    result = fresh.train()
    assert received[-1] == path
    assert (result["step"], result["training_iteration"]) == (2, 3)


def test_checkpoint_dir_requires_step():
    with pytest.raises(ValueError, match="step"):
        with session.checkpoint_dir(step=None):
            pass


def test_checkpoint_dir_outside_session_yields_a_dir(monkeypatch):
    monkeypatch.setattr(session, "_warned", set())
    with pytest.warns(UserWarning, match="Session not detected"):
        with session.checkpoint_dir(step=1) as d:
            assert os.path.isdir(d)


def test_save_without_checkpoint_gives_null_checkpoint(make, info):
    calls = []

    def fn(config, checkpoint_dir=None):
        calls.append(checkpoint_dir)
        for i in range(10):
            session.report(i=i)

    t = make(fn)
    t.train_batch(2, 10.0)
    blob = t.save_to_object()
    fresh = make(fn)
    fresh.restore_from_object(blob)
    result = fresh.train()
    assert calls[-1] is None  # nothing to restore, so the function starts afresh
    # and so do the counters (1.x): the iteration says how far the function got
    assert (result["i"], result["training_iteration"]) == (0, 1)


def test_save_with_path_is_rejected(make):
    t = make(lambda config: None)
    with pytest.raises(ValueError, match="function API"):
        t.save("/tmp/somewhere")


# -- signatures ----------------------------------------------------------------------------


def test_legacy_reporter_signature(make):
    def fn(config, reporter):
        reporter(mean_accuracy=0.5)

    assert make(fn).train()["mean_accuracy"] == 0.5


@pytest.mark.parametrize(
    "fn_src",
    ["def my_train(config, other):\n    pass", "def my_train():\n    pass"],
)
def test_bad_signature_names_function(fn_src):
    namespace: dict = {}
    exec(fn_src, namespace)
    with pytest.raises(ValueError, match="my_train"):
        wrap_function(namespace["my_train"])


def test_function_thread_is_daemon(make):
    t = make(lambda config: session.report(a=1))
    t.train()
    assert t._thread.daemon and t._thread is not threading.current_thread()


# -- with_parameters (real Ray) ------------------------------------------------------------


@pytest.mark.ray
def test_with_parameters_function_in_ray_task(tmp_path, monkeypatch):
    import importlib

    import cloudpickle
    import numpy as np
    import ray

    # the package's `with_parameters` attribute is the function, so fetch the module
    wp = importlib.import_module("tune_async.trainable.with_parameters")

    def train_with_data(config, checkpoint_dir=None, data=None):
        return {"total": config["k"] * int(data.sum()), "ckpt": checkpoint_dir}

    data = np.arange(1_000_000)
    monkeypatch.setattr(wp, "_ray_ready", lambda: False)  # as if before ray.init
    wrapped = wp.with_parameters(train_with_data, data=data)
    monkeypatch.undo()
    assert len(cloudpickle.dumps(wrapped)) < 50_000  # only ObjectRefs travel

    def run(trainable, logdir):
        from tune_async.trainable.function_trainable import wrap_function as wrap
        from tune_async.trainable.trainable import TrialInfo as Info

        t = wrap(trainable)({"k": 2}, trial_info=Info(logdir=logdir))
        try:
            return t.train_batch(10, 10.0)
        finally:
            t.stop()

    results = ray.get(ray.remote(run).remote(wrapped, str(tmp_path)))
    assert results[0]["total"] == 2 * int(data.sum())
    assert results[-1]["done"] is True and results[-1]["ckpt"] is None


@pytest.mark.ray
def test_with_parameters_class_and_bad_input(tmp_path):
    import ray

    from tune_async.trainable.trainable import Trainable
    from tune_async.trainable.with_parameters import with_parameters

    class Model(Trainable):
        def setup(self, config, data=None):
            self.data = data

        def step(self):
            return {"n": len(self.data), "done": True}

    wrapped = with_parameters(Model, data=list(range(1000)))
    assert wrapped.__name__ == "Model"

    def run(cls, logdir):
        from tune_async.trainable.trainable import TrialInfo as Info

        return cls({}, trial_info=Info(logdir=logdir)).train()

    assert ray.get(ray.remote(run).remote(wrapped, str(tmp_path)))["n"] == 1000
    with pytest.raises(ValueError):
        with_parameters(dict, data=1)
    with pytest.raises(ValueError):
        with_parameters(42, data=1)


def test_restored_function_that_has_nothing_left_records_no_new_result(make):
    """A driver killed after a trial's last checkpoint: the restored run ends at once."""
    from tune_async import checkpoint_dir as checkpoint_dir_ctx
    from tune_async import report

    def train(config, checkpoint_dir=None):
        start = 0
        if checkpoint_dir:
            with open(os.path.join(checkpoint_dir, "step")) as f:
                start = int(f.read())
        for step in range(start + 1, 3):
            with checkpoint_dir_ctx(step) as d:
                with open(os.path.join(d, "step"), "w") as f:
                    f.write(str(step))
            report(step=step)

    first = make(train)
    results = first.train_batch(10, 1.0)
    while not results[-1].get("done"):
        results += first.train_batch(10, 1.0)
    last_checkpoint = [r for r in results if r.get(CHECKPOINT_PATH)][-1][CHECKPOINT_PATH]
    assert [r.get("step") for r in results if not r.get(RESULT_DUPLICATE)] == [1, 2]

    second = make(train)
    second.restore(last_checkpoint)
    end = second.train_batch(10, 1.0)
    assert end == [{"done": True, RESULT_DUPLICATE: True}]


def _hog(stop_at):
    while time.time() < stop_at:
        pass


def test_a_function_ending_as_the_liveness_wait_expires_is_not_reported_dead(make):
    """Hundreds of functions end at every moment relative to the wait, under CPU load."""
    import multiprocessing
    import random
    import threading

    wait_s = 0.005
    stop_at = time.time() + 60
    hog_process = multiprocessing.get_context("spawn").Process(target=_hog, args=(stop_at,))
    hog_process.start()
    hog_thread = threading.Thread(target=_hog, args=(time.time() + 60,), daemon=True)
    hog_thread.start()
    rng = random.Random(6)
    try:
        for i in range(300):
            delay = rng.uniform(0, 3 * wait_s)

            def ends_after(config):
                time.sleep(config["delay"])
                return {"score": 1}

            trainable = make(ends_after, {"delay": delay})
            trainable._liveness_wait_s = wait_s
            results = trainable.train_batch(10, 10.0)
            assert results[-1]["done"] is True, f"run {i}"
    finally:
        hog_process.terminate()
        hog_process.join()
