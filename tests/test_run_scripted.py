"""tune.run through the public API on the in-process scripted executor (no Ray)."""

from __future__ import annotations

import json
import os
import threading

import pytest

import tune_async as tune
from tests.scripted_executor import ScriptedExecutor
from tune_async.stopper import Stopper


def quadratic(config):
    for i in range(100):
        tune.report(mean_loss=(config["lr"] - 0.3) ** 2 + 1 / (i + 1))


def result_lines(trial):
    with open(os.path.join(trial.logdir, "result.json")) as f:
        return [json.loads(line) for line in f if line.strip()]


def run(fn, executor=None, **kwargs):
    kwargs.setdefault("verbose", 0)
    return tune.run(fn, trial_executor=executor or ScriptedExecutor(), **kwargs)


def test_dict_stop_records_exactly_that_many_results(results_dir):
    analysis = run(quadratic, config={"lr": 0.1}, num_samples=3,
                   stop={"training_iteration": 10}, local_dir=results_dir)
    assert len(analysis.trials) == 3
    for trial in analysis.trials:
        lines = result_lines(trial)
        assert [r["training_iteration"] for r in lines] == list(range(1, 11))
        assert lines[-1]["done"] is True
        assert trial.status == "TERMINATED"


def test_concurrency_never_exceeds_executor_slots(results_dir):
    executor = ScriptedExecutor(slots=2)
    run(quadratic, executor, config={"lr": 0.5}, num_samples=10,
        stop={"training_iteration": 3}, local_dir=results_dir)
    assert executor.max_used == 2
    assert len(executor.started) == 10


def test_grid_times_num_samples(results_dir):
    config = {"a": tune.grid_search([1, 2, 3]), "b": tune.grid_search(["x", "y"]),
              "lr": tune.uniform(0, 1)}
    analysis = run(quadratic, config=config, num_samples=2, stop={"training_iteration": 1},
                   local_dir=results_dir)
    pairs = sorted((t.config["a"], t.config["b"]) for t in analysis.trials)
    assert len(pairs) == 12
    assert pairs == sorted([(a, b) for a in (1, 2, 3) for b in ("x", "y")] * 2)


def test_best_config_and_logdir(results_dir):
    config = {"lr": tune.grid_search([0.1, 0.3, 0.9])}
    analysis = run(quadratic, config=config, stop={"training_iteration": 5},
                   metric="mean_loss", mode="min", local_dir=results_dir)
    assert analysis.best_config == {"lr": 0.3}
    assert analysis.best_logdir == analysis.best_trial.logdir
    assert os.path.isdir(analysis.best_logdir)
    assert analysis.results_df.shape[0] == 3


def test_files_of_a_trial(results_dir):
    analysis = run(quadratic, config={"lr": 0.2}, stop={"training_iteration": 2},
                   local_dir=results_dir, name="files")
    trial = analysis.trials[0]
    assert os.path.dirname(trial.logdir) == os.path.join(results_dir, "files")
    names = set(os.listdir(trial.logdir))
    assert {"params.json", "params.pkl", "result.json", "progress.csv"} <= names
    with open(os.path.join(trial.logdir, "params.json")) as f:
        assert json.load(f) == {"lr": 0.2}
    states = [n for n in os.listdir(os.path.join(results_dir, "files"))
              if n.startswith("experiment_state-")]
    assert len(states) == 1
    auto = result_lines(trial)[0]
    for key in ("training_iteration", "time_this_iter_s", "time_total_s", "timestamp", "date",
                "trial_id", "experiment_id", "done", "config", "hostname", "node_ip", "pid",
                "time_since_restore", "iterations_since_restore"):
        assert key in auto, key


def test_default_experiment_dir_is_trainable_and_date(results_dir):
    analysis = run(quadratic, config={"lr": 0.2}, stop={"training_iteration": 1})
    exp_dir = os.path.dirname(analysis.trials[0].logdir)
    assert os.path.dirname(exp_dir) == results_dir
    assert os.path.basename(exp_dir).startswith("quadratic_20")


def test_retries_until_success(results_dir, tmp_path):
    marker = tmp_path / "failures"

    def flaky(config):
        count = int(marker.read_text()) if marker.exists() else 0
        if count < 2:
            marker.write_text(str(count + 1))
            raise RuntimeError("transient")
        tune.report(ok=1)

    analysis = run(flaky, max_failures=3, local_dir=results_dir)
    trial = analysis.trials[0]
    assert trial.status == "TERMINATED"
    assert trial.num_failures == 2
    with open(os.path.join(trial.logdir, "error.txt")) as f:
        text = f.read()
    assert text.count("Failure # ") == 2 and "RuntimeError: transient" in text


def failing(config):
    tune.report(x=1)
    raise ValueError(f"bad trial {config['i']}")


def test_failed_trial_raises_tune_error_naming_it(results_dir):
    with pytest.raises(tune.TuneError, match="Trials did not complete") as info:
        run(failing, config={"i": 1}, local_dir=results_dir)
    assert "failing_" in str(info.value)


def test_failed_trial_without_raise(results_dir):
    analysis = run(failing, config={"i": tune.grid_search([1, 2])}, local_dir=results_dir,
                   raise_on_failed_trial=False)
    assert [t.status for t in analysis.trials] == ["ERROR", "ERROR"]
    for trial in analysis.trials:
        with open(trial.error_file) as f:
            assert "ValueError: bad trial" in f.read()


def test_fail_fast_raise_reraises_original(results_dir):
    with pytest.raises(ValueError, match="bad trial 7"):
        run(failing, config={"i": 7}, local_dir=results_dir, fail_fast="raise")


def test_fail_fast_stops_the_others(results_dir):
    def mixed(config):
        if config["i"] == 0:
            raise RuntimeError("first one fails")
        for _ in range(10_000):
            tune.report(x=1)

    executor = ScriptedExecutor(slots=2)
    analysis = run(mixed, executor, config={"i": tune.grid_search([0, 1, 2, 3])},
                   fail_fast=True, raise_on_failed_trial=False, local_dir=results_dir)
    statuses = {t.config["i"]: t.status for t in analysis.trials}
    assert statuses[0] == "ERROR"
    assert all(statuses[i] == "TERMINATED" for i in (1, 2, 3))
    unfinished = [t for t in analysis.trials[1:] if t.last_result.get("training_iteration", 0)
                  >= 10_000]
    assert not unfinished


def test_callable_stop(results_dir):
    analysis = run(quadratic, config={"lr": 0.1},
                   stop=lambda trial_id, result: result["training_iteration"] >= 4,
                   local_dir=results_dir)
    assert len(result_lines(analysis.trials[0])) == 4


class StopAllAfter(Stopper):
    def __init__(self, n):
        self.n = n
        self.seen = 0

    def __call__(self, trial_id, result):
        self.seen += 1
        return False

    def stop_all(self):
        return self.seen >= self.n


def test_stopper_stop_all_ends_experiment(results_dir):
    analysis = run(quadratic, config={"lr": 0.1}, num_samples=4, stop=StopAllAfter(5),
                   local_dir=results_dir)
    assert all(t.status == "TERMINATED" for t in analysis.trials)
    assert sum(t.results_recorded for t in analysis.trials) < 4 * 100


def test_time_budget_stops_everything(results_dir):
    def forever(config):
        import time

        while True:
            time.sleep(0.01)
            tune.report(x=1)

    analysis = run(forever, num_samples=3, time_budget_s=0.6, local_dir=results_dir)
    assert [t.status for t in analysis.trials] == ["TERMINATED"] * 3


def test_return_dict_is_final_result(results_dir):
    def returns(config):
        tune.report(score=1)
        return {"score": 2}

    trial = run(returns, local_dir=results_dir).trials[0]
    lines = result_lines(trial)
    assert [r["score"] for r in lines] == [1, 2]
    assert lines[-1]["done"] is True


def test_function_without_reports_completes_with_one_result(results_dir):
    def silent(config):
        pass

    trial = run(silent, local_dir=results_dir).trials[0]
    assert trial.status == "TERMINATED"
    lines = result_lines(trial)
    assert len(lines) == 1 and lines[0]["done"] is True


def test_report_forms(results_dir):
    def forms(config):
        tune.report(a=1)
        tune.report({"b": 2})
        tune.report(3)

    lines = result_lines(run(forms, local_dir=results_dir).trials[0])
    assert lines[0]["a"] == 1 and lines[1]["b"] == 2 and lines[2]["_metric"] == 3


class Counter(tune.Trainable):
    def setup(self, config):
        self.value = config["start"]

    def step(self):
        self.value += 1
        return {"value": self.value, "done": self.value >= 5}


def test_class_trainable_done_ends_trial(results_dir):
    trial = run(Counter, config={"start": 2}, local_dir=results_dir).trials[0]
    assert [r["value"] for r in result_lines(trial)] == [3, 4, 5]
    assert trial.status == "TERMINATED"


def test_missing_metric_fails_trial(results_dir):
    analysis = run(quadratic, config={"lr": 0.1}, metric="accuracy", mode="max",
                   stop={"training_iteration": 2}, local_dir=results_dir,
                   raise_on_failed_trial=False)
    trial = analysis.trials[0]
    assert trial.status == "ERROR"
    assert "did not include the specified metric" in trial.error_msg


def test_trial_name_and_dirname_creators(results_dir):
    analysis = run(quadratic, config={"lr": 0.1}, stop={"training_iteration": 1},
                   trial_name_creator=lambda t: f"custom_{t.trial_id}",
                   trial_dirname_creator=lambda t: f"dir_{t.trial_id}",
                   local_dir=results_dir)
    trial = analysis.trials[0]
    assert str(trial) == f"custom_{trial.trial_id}"
    assert os.path.basename(trial.logdir) == f"dir_{trial.trial_id}"


@pytest.mark.parametrize("bad", ["a/b", "..", ""])
def test_dirname_creator_must_not_return_a_path(results_dir, bad):
    executor = ScriptedExecutor()
    with pytest.raises(ValueError, match="trial_dirname_creator"):
        run(quadratic, executor, trial_dirname_creator=lambda t: bad, local_dir=results_dir)
    assert executor.started == []


def test_verbose_zero_prints_nothing(results_dir, capsys):
    run(quadratic, config={"lr": 0.1}, stop={"training_iteration": 3}, local_dir=results_dir)
    assert capsys.readouterr().out == ""


def test_verbose_one_prints_status(results_dir, capsys):
    run(quadratic, config={"lr": 0.1}, stop={"training_iteration": 3}, local_dir=results_dir,
        verbose=1)
    out = capsys.readouterr().out
    assert "== Status ==" in out and "TERMINATED" in out


def test_callbacks_see_hooks_in_order_and_async_hooks_are_awaited(results_dir):
    events = []

    class Recorder(tune.Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            events.append(("start", trial.trial_id))

        async def on_trial_result(self, iteration, trials, trial, result, **info):
            events.append(("result", result["training_iteration"]))

        def on_trial_complete(self, iteration, trials, trial, **info):
            events.append(("complete", trial.trial_id))

        def on_experiment_end(self, trials, **info):
            events.append(("end", len(trials)))

    analysis = run(quadratic, config={"lr": 0.1}, stop={"training_iteration": 3},
                   callbacks=[Recorder()], local_dir=results_dir)
    tid = analysis.trials[0].trial_id
    assert events == [("start", tid), ("result", 1), ("result", 2), ("result", 3),
                      ("complete", tid), ("end", 1)]


def test_run_from_a_non_main_thread(results_dir):
    box = {}

    def target():
        box["analysis"] = run(quadratic, config={"lr": 0.1}, stop={"training_iteration": 2},
                              local_dir=results_dir)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(60)
    assert box["analysis"].trials[0].status == "TERMINATED"


async def test_run_called_inside_a_running_loop(results_dir):
    # Jupyter: the cell's thread already runs an event loop.
    analysis = run(quadratic, config={"lr": 0.1}, stop={"training_iteration": 2},
                   local_dir=results_dir)
    assert analysis.trials[0].status == "TERMINATED"


async def test_arun_keeps_the_loop_responsive(results_dir):
    import asyncio

    ticks = 0
    stop = asyncio.Event()

    async def heartbeat():
        nonlocal ticks
        while not stop.is_set():
            await asyncio.sleep(0.005)
            ticks += 1

    def slow(config):
        import time

        for _ in range(20):
            time.sleep(0.01)
            tune.report(x=1)

    beat = asyncio.create_task(heartbeat())
    analysis = await tune.arun(slow, num_samples=2, verbose=0, local_dir=results_dir,
                               trial_executor=ScriptedExecutor())
    stop.set()
    await beat
    assert analysis.trials[0].status == "TERMINATED"
    assert ticks >= 10


async def test_cancelling_arun_stops_trials_and_saves_state(results_dir):
    import asyncio

    def forever(config):
        import time

        while True:
            time.sleep(0.01)
            tune.report(x=1)

    executor = ScriptedExecutor(slots=2)
    task = asyncio.create_task(tune.arun(forever, num_samples=3, verbose=0, name="cancelled",
                                         local_dir=results_dir, trial_executor=executor))
    while sum(1 for _ in executor.started) < 2:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert executor.used == 0 and executor.shut_down
    exp_dir = os.path.join(results_dir, "cancelled")
    state_file = [n for n in os.listdir(exp_dir) if n.startswith("experiment_state-")][0]
    with open(os.path.join(exp_dir, state_file)) as f:
        state = json.load(f)
    # Interrupted, not finished: every trial is queued again for resume=True.
    assert [t["status"] for t in state["checkpoints"]] == ["PENDING"] * 3
    recorded = sorted(t["results_recorded"] for t in state["checkpoints"])
    assert recorded[0] == 0 and recorded[1] > 0 and recorded[2] > 0


class AsyncStopper(Stopper):
    """A stopper whose hooks are coroutines (DESIGN: plugins may be async)."""

    def __init__(self):
        self.calls = 0

    async def __call__(self, trial_id, result):
        self.calls += 1
        return result["training_iteration"] >= 3

    async def stop_all(self):
        return False


def test_async_stopper_hooks_are_awaited(results_dir):
    stopper = AsyncStopper()
    analysis = run(quadratic, config={"lr": 0.1}, num_samples=2, stop=stopper,
                   local_dir=results_dir)
    assert [len(result_lines(t)) for t in analysis.trials] == [3, 3]
    assert stopper.calls == 6


def test_ctrl_c_before_the_loop_starts_still_stops_cleanly(results_dir):
    from tune_async.api import _prepare_run

    job = _prepare_run(run_or_experiment=quadratic, config={"lr": 0.1}, verbose=0,
                       local_dir=results_dir, trial_executor=ScriptedExecutor())
    job.controller.request_stop()  # as if Ctrl+C came while Ray was starting
    import asyncio

    analysis = asyncio.run(job.execute())
    assert [t.status for t in analysis.trials] in ([], ["PENDING"])


def test_plugins_get_read_only_views_of_trials(results_dir):
    seen = {}

    class Meddler(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            seen["config"] = trial.config
            seen["in_trials"] = trial in trials
            try:
                trial.status = "TERMINATED"
            except AttributeError as exc:
                seen["error"] = str(exc)

    analysis = run(quadratic, config={"lr": 0.1}, stop={"training_iteration": 2},
                   callbacks=[Meddler()], local_dir=results_dir)
    assert seen["config"] == {"lr": 0.1} and seen["in_trials"]
    assert "read-only" in seen["error"]
    assert analysis.trials[0].status == "TERMINATED"
    assert len(result_lines(analysis.trials[0])) == 2
