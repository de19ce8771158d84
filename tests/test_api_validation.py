"""tune.run's argument rules (issue #2): bad input fails before any trial starts.

Everything goes through the public ``tune.run`` / ``tune.arun`` on the
in-process ScriptedExecutor (no Ray).
"""

from __future__ import annotations

import datetime
import inspect
import os
import sys
import threading
import warnings

import pytest

import tune_async as tune
from tests.scripted_executor import ScriptedExecutor
from tune_async.progress import Verbosity
from tune_async.schedulers import FIFOScheduler, TrialScheduler


def trainable(config):
    for i in range(3):
        tune.report(loss=1.0 / (i + 1))


def trial_dirs(results_dir):
    """Every directory two levels below local_dir: ``<local_dir>/<exp>/<trial>``."""
    found = []
    for exp in os.listdir(results_dir):
        exp_dir = os.path.join(results_dir, exp)
        if os.path.isdir(exp_dir):
            found += [n for n in os.listdir(exp_dir) if os.path.isdir(os.path.join(exp_dir, n))]
    return found


def rejected(results_dir, exc_type, match, run_or_experiment=trainable, **kwargs):
    """Assert ``tune.run`` raises ``exc_type`` matching ``match`` and started nothing."""
    executor = ScriptedExecutor()
    kwargs.setdefault("verbose", 0)
    kwargs.setdefault("local_dir", results_dir)
    kwargs.setdefault("name", "exp")
    with pytest.raises(exc_type, match=match) as info:
        tune.run(run_or_experiment, trial_executor=executor, **kwargs)
    assert executor.started == []
    assert trial_dirs(results_dir) == []
    return info.value


def runs(results_dir, run_or_experiment=trainable, **kwargs):
    executor = ScriptedExecutor()
    kwargs.setdefault("verbose", 0)
    kwargs.setdefault("local_dir", results_dir)
    analysis = tune.run(run_or_experiment, trial_executor=executor, **kwargs)
    assert len(executor.started) >= 1
    assert all(t.status == "TERMINATED" for t in analysis.trials)
    return analysis


# ---- metric / mode -----------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["minimum", "MAX", "", 1])
def test_mode_must_be_min_or_max(results_dir, mode):
    rejected(results_dir, ValueError, "mode", metric="loss", mode=mode)


class OwnMetricScheduler(FIFOScheduler):
    """A scheduler built with its own metric/mode (as ASHA(metric=..., mode=...) would be)."""

    def __init__(self, metric=None, mode=None):
        self._metric = metric
        self._mode = mode


class MinimalScheduler(TrialScheduler):
    """Only the base class' set_search_properties: the 1.x semantics."""

    def __init__(self, metric):
        self._metric = metric
        self._mode = "min"

    def choose_trial_to_run(self, trial_runner):
        return FIFOScheduler.choose_trial_to_run(self, trial_runner)


@pytest.mark.parametrize(
    "kwargs",
    [{"metric": "loss"}, {"mode": "min"}, {"metric": "loss", "mode": "min"}],
)
@pytest.mark.parametrize("make", [OwnMetricScheduler, MinimalScheduler])
def test_metric_or_mode_given_to_run_and_scheduler(results_dir, kwargs, make):
    scheduler = make(metric="loss", mode="min") if make is OwnMetricScheduler else make("loss")
    rejected(results_dir, ValueError, "scheduler", scheduler=scheduler, **kwargs)


def test_scheduler_with_own_metric_alone_runs(results_dir):
    analysis = runs(results_dir, scheduler=MinimalScheduler("loss"))
    assert len(analysis.trials) == 1


@pytest.mark.parametrize("verbose", [0, 1])
def test_metric_given_to_run_and_reporter(results_dir, verbose, capsys):
    reporter = tune.CLIReporter(metric="loss", mode="min")
    rejected(results_dir, ValueError, "reporter", progress_reporter=reporter,
             metric="loss", mode="min", verbose=verbose)


def test_mode_given_to_run_and_reporter(results_dir):
    reporter = tune.CLIReporter(metric="loss", mode="min")
    rejected(results_dir, ValueError, "reporter", progress_reporter=reporter, mode="max")


def test_reporter_with_own_metric_alone_runs(results_dir, capsys):
    runs(results_dir, progress_reporter=tune.CLIReporter(metric="loss", mode="min"), verbose=1)
    assert "loss" in capsys.readouterr().out


# ---- fail_fast ---------------------------------------------------------------------------
@pytest.mark.parametrize("fail_fast", [True, "raise", "RAISE"])
def test_fail_fast_needs_zero_max_failures(results_dir, fail_fast):
    rejected(results_dir, ValueError, "max_failures must be 0 if fail_fast=True",
             fail_fast=fail_fast, max_failures=2)


@pytest.mark.parametrize("fail_fast", ["bogus", 1.5, None])
def test_fail_fast_must_be_bool_or_raise(results_dir, fail_fast):
    rejected(results_dir, ValueError, "fail_fast", fail_fast=fail_fast)


# ---- stop --------------------------------------------------------------------------------
class StopAllNotAStopper:
    def __call__(self, trial_id, result):
        return False

    def stop_all(self):
        return False


@pytest.mark.parametrize(
    "stop, match",
    [
        ("training_iteration", "stop criteria"),
        ({"training_iteration": "10"}, "training_iteration"),
        ({"info": {"steps": None}}, "info/steps"),
        (StopAllNotAStopper(), "Stopper"),
        ([tune.Stopper(), "x"], "Stopper"),
        (lambda result: True, "trial_id, result"),
        (42, "stop criteria"),
    ],
)
def test_invalid_stop(results_dir, stop, match):
    rejected(results_dir, ValueError, match, stop=stop)


# ---- resources ---------------------------------------------------------------------------
def test_unknown_resources_key_is_tune_error_and_value_error(results_dir):
    err = rejected(results_dir, tune.TuneError, "resources_per_trial",
                   resources_per_trial={"cpus": 1})
    assert isinstance(err, ValueError)
    assert "cpus" in str(err)


@pytest.mark.parametrize(
    "resources, key",
    [({"cpu": -1}, "cpu"), ({"gpu": -0.5}, "gpu"), ({"custom_resources": {"tpu": -1}}, "tpu"),
     ({"cpu": "1"}, "cpu")],
)
def test_negative_or_non_numeric_resources(results_dir, resources, key):
    err = rejected(results_dir, ValueError, "resources_per_trial", resources_per_trial=resources)
    assert key in str(err)


def test_resources_of_wrong_type(results_dir):
    rejected(results_dir, ValueError, "resources_per_trial", resources_per_trial=2)


# ---- trainable ---------------------------------------------------------------------------
def test_unpicklable_trainable_says_how_to_fix_it(results_dir):
    lock = threading.Lock()

    def locked(config):
        with lock:
            tune.report(x=1)

    err = rejected(results_dir, TypeError, "could not be pickled", locked)
    message = str(err)
    assert "'lock'" in message
    assert "To fix this" in message
    assert "with_parameters" in message


@pytest.mark.parametrize("run_or_experiment", [42, None, 3.5, [1, 2]])
def test_improper_run(results_dir, run_or_experiment):
    rejected(results_dir, tune.TuneError, "Improper 'run'", run_or_experiment)


def test_unknown_registered_name(results_dir):
    rejected(results_dir, tune.TuneError, "Unknown trainable: no_such_trainable_xyz",
             "no_such_trainable_xyz")


def test_trainable_class_not_subclassing_trainable(results_dir):
    class NotATrainable:
        pass

    rejected(results_dir, (TypeError, tune.TuneError), "Trainable", NotATrainable)


# ---- numbers, callables ------------------------------------------------------------------
@pytest.mark.parametrize("num_samples", [0, "3", -2, 2.5, True])
def test_bad_num_samples(results_dir, num_samples):
    rejected(results_dir, ValueError, "num_samples", num_samples=num_samples)


@pytest.mark.parametrize("budget", [-1, float("nan"), "10"])
def test_bad_time_budget(results_dir, budget):
    rejected(results_dir, ValueError, "time_budget_s", time_budget_s=budget)


@pytest.mark.parametrize("budget", [0, datetime.timedelta(0)])
def test_a_zero_time_budget_is_no_budget(results_dir, budget):
    runs(results_dir, time_budget_s=budget)  # 1.x: `if time_budget_s:`


@pytest.mark.parametrize("verbose", [7, -1, "3", 2.0])
def test_bad_verbose(results_dir, verbose):
    rejected(results_dir, ValueError, "verbose", verbose=verbose)


def test_verbosity_enum_is_accepted(results_dir, capsys):
    runs(results_dir, verbose=Verbosity.V0_MINIMAL)
    assert capsys.readouterr().out == ""


def test_verbose_false_is_silent_as_in_1x(results_dir, capsys):
    runs(results_dir, verbose=False)  # 1.x scripts (pbt_example) pass a bool
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("param", ["trial_name_creator", "trial_dirname_creator"])
def test_non_callable_name_creators(results_dir, param):
    rejected(results_dir, ValueError, param, **{param: "my_trial"})


@pytest.mark.parametrize("max_failures", [-2, "1", 1.5])
def test_bad_max_failures(results_dir, max_failures):
    rejected(results_dir, ValueError, "max_failures", max_failures=max_failures)


def test_config_must_be_a_dict(results_dir):
    rejected(results_dir, ValueError, "config", config=[1, 2])


@pytest.mark.parametrize(
    "param, value",
    [("callbacks", "cb"), ("callbacks", [object()]), ("scheduler", object()),
     ("search_alg", object()), ("progress_reporter", object()), ("trial_executor", object())],
)
def test_plugins_of_wrong_type(results_dir, param, value):
    rejected(results_dir, TypeError, param, **{param: value})


def test_unknown_keyword_names_it(results_dir):
    rejected(results_dir, TypeError, "no_such_param", no_such_param=1)


@pytest.mark.parametrize("resume", [True, "LOCAL", "PROMPT", "ERRORED_ONLY"])
def test_resume_without_saved_state(results_dir, resume):
    rejected(results_dir, ValueError, "Called resume when no checkpoint exists", resume=resume)


def checkpointable(config, checkpoint_dir=None):
    tune.report(x=1)


@pytest.mark.parametrize("param", ["checkpoint_freq", "checkpoint_at_end"])
def test_checkpoint_policy_with_checkpointable_function(results_dir, param):
    # 1.x: a function that checkpoints itself cannot take checkpoint_freq/at_end.
    rejected(results_dir, ValueError, param, checkpointable, **{param: 1})


def test_sync_config_with_upload_dir_runs(results_dir, tmp_path):
    runs(results_dir, sync_config=tune.SyncConfig(upload_dir=f"file://{tmp_path}/up"))
    assert os.listdir(tmp_path / "up")  # the experiment went there


def test_resume_remote_needs_an_upload_dir(results_dir):
    rejected(results_dir, ValueError, "resume from remote without remote directory",
             resume="REMOTE")


def test_upload_dir_without_its_fsspec_package_names_the_extra(results_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "gcsfs", None)  # as if not installed
    rejected(results_dir, ImportError, r"tune_async\[gs\]",
             sync_config=tune.SyncConfig(upload_dir="gs://bucket/x"))


def test_sync_config_without_upload_runs(results_dir):
    runs(results_dir, sync_config=tune.SyncConfig())


@pytest.mark.parametrize(
    "param, value",
    [("resume", "bogus"), ("server_port", -1), ("server_port", "4321"),
     ("export_formats", "model"), ("log_to_file", 5), ("sync_config", {"upload_dir": "x"}),
     ("checkpoint_freq", -1), ("checkpoint_freq", 1.5), ("keep_checkpoints_num", 0),
     ("checkpoint_score_attr", 3), ("restore", 7)],
)
def test_later_parameters_are_validated(results_dir, param, value):
    rejected(results_dir, ValueError, param, **{param: value})


# ---- deprecated parameters ---------------------------------------------------------------
def test_with_server_warns_naming_server_port(results_dir):
    # (A bad mode stops the run after the warning: no server starts on port 4321.)
    with pytest.warns(DeprecationWarning, match="server_port") as record:
        rejected(results_dir, ValueError, "mode", with_server=True, mode="bogus")
    assert record[0].filename == __file__  # points at the caller's line


async def test_arun_deprecation_points_at_the_caller(results_dir):
    with pytest.warns(DeprecationWarning, match="server_port") as record:
        with pytest.raises(ValueError, match="mode"):
            await tune.arun(trainable, with_server=True, mode="bogus",
                            trial_executor=ScriptedExecutor(), verbose=0, local_dir=results_dir)
    assert record[0].filename == __file__


def test_upload_dir_warns_naming_sync_config(results_dir, tmp_path):
    with pytest.warns(DeprecationWarning, match="SyncConfig"):
        runs(results_dir, upload_dir=f"file://{tmp_path}/up")
    assert os.listdir(tmp_path / "up")


def test_sync_to_driver_false_warns_and_runs(results_dir):
    with pytest.warns(DeprecationWarning, match="SyncConfig"):
        runs(results_dir, sync_to_driver=False)


def test_sync_on_checkpoint_warns_and_runs(results_dir):
    with pytest.warns(DeprecationWarning, match="sync_on_checkpoint"):
        runs(results_dir, sync_on_checkpoint=False)


def test_legacy_sync_kwargs_with_sync_config_rejected(results_dir):
    # (a false one beside it is ignored, as 1.x did: tests/test_run_1x_details.py)
    rejected(results_dir, ValueError, "sync_config", sync_to_driver=True,
             sync_config=tune.SyncConfig())


@pytest.mark.parametrize(
    "param, value, replacement",
    [("ray_auto_init", True, "ray.init"), ("ray_auto_init", False, "TUNE_DISABLE_AUTO_INIT"),
     ("global_checkpoint_period", 10, "TUNE_GLOBAL_CHECKPOINT_S")],
)
def test_removed_parameters_say_what_to_use(results_dir, param, value, replacement):
    err = rejected(results_dir, ValueError, param, **{param: value})
    assert replacement in str(err)


def test_run_errored_only_is_ignored_with_a_warning_naming_resume(results_dir):
    # 1.x accepted it and used it for nothing: a fresh run just runs.
    with pytest.warns(DeprecationWarning, match='resume="ERRORED_ONLY"'):
        runs(results_dir, run_errored_only=True)


def test_run_errored_only_false_warns_and_runs(results_dir):
    with pytest.warns(DeprecationWarning, match="run_errored_only"):
        runs(results_dir, run_errored_only=False)


# ---- every 1.x parameter name is accepted ------------------------------------------------
# The ray.tune 1.3 signature (reference §1.1) with its defaults; trial_executor is
# replaced by the scripted one and verbose/local_dir by quiet, temporary values.
DEFAULTS_1X = {
    "name": None, "metric": None, "mode": None, "stop": None, "time_budget_s": None,
    "config": None, "resources_per_trial": None, "num_samples": 1, "local_dir": None,
    "search_alg": None, "scheduler": None, "keep_checkpoints_num": None,
    "checkpoint_score_attr": None, "checkpoint_freq": 0, "checkpoint_at_end": False,
    "verbose": Verbosity.V3_TRIAL_DETAILS, "progress_reporter": None, "log_to_file": False,
    "trial_name_creator": None, "trial_dirname_creator": None, "sync_config": None,
    "export_formats": None, "max_failures": 0, "fail_fast": False, "restore": None,
    "server_port": None, "resume": False, "queue_trials": False, "reuse_actors": False,
    "raise_on_failed_trial": True, "callbacks": None, "loggers": None,
    "ray_auto_init": None, "run_errored_only": None, "global_checkpoint_period": None,
    "with_server": None, "upload_dir": None, "sync_to_cloud": None, "sync_to_driver": None,
    "sync_on_checkpoint": None, "_remote": None,
}


def test_arun_signature_has_every_1x_parameter():
    params = inspect.signature(tune.arun).parameters
    assert list(params)[0] == "run_or_experiment"
    missing = sorted((set(DEFAULTS_1X) | {"trial_executor"}) - set(params))
    assert missing == []


def test_run_shows_the_same_signature_as_arun():
    assert list(inspect.signature(tune.run).parameters) == list(
        inspect.signature(tune.arun).parameters)


def test_run_accepts_every_1x_parameter_at_its_default(results_dir, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        runs(results_dir, **dict(DEFAULTS_1X, config={"a": 1}))
    out = capsys.readouterr().out
    assert "TERMINATED" in out  # verbose=3 default prints the status table


async def test_arun_accepts_every_1x_parameter_at_its_default(results_dir, capsys):
    executor = ScriptedExecutor()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        analysis = await tune.arun(trainable, trial_executor=executor,
                                   **dict(DEFAULTS_1X, verbose=0))
    assert [t.status for t in analysis.trials] == ["TERMINATED"]
    assert len(executor.started) == 1


@pytest.mark.parametrize("param", sorted(DEFAULTS_1X))
def test_each_1x_parameter_accepted_alone(results_dir, param):
    kwargs = {param: DEFAULTS_1X[param]}
    if param == "verbose":
        kwargs[param] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        runs(results_dir, **kwargs)


async def test_arun_rejects_like_run(results_dir):
    executor = ScriptedExecutor()
    with pytest.raises(ValueError, match="mode"):
        await tune.arun(trainable, mode="best", trial_executor=executor, verbose=0)
    assert executor.started == []
