"""Bad input fails early and clearly (issue #6, section 5).

Each mistake raises ValueError or TypeError naming the argument, before any
trial starts and with nothing written under ``local_dir``. Runs go through the
public ``tune.run`` on the in-process ScriptedExecutor (no Ray).
"""

from __future__ import annotations

import math
import os

import pytest

import tune_async as tune
from tests.scripted_executor import ScriptedExecutor
from tune_async.error import TuneError
from tune_async.schedulers import FIFOScheduler, TrialScheduler
from tune_async.search.sample import Float, Integer
from tune_async.suggest import BasicVariantGenerator, Searcher
from tune_async.trial import Trial


def trainable(config):
    for i in range(3):
        tune.report(loss=1.0 / (i + 1))


def checkpointing(config, checkpoint_dir=None):
    tune.report(loss=1.0)


def assert_refused(tmp_path, exc_type, match, run_or_experiment=trainable, **kwargs):
    """``tune.run`` raises before starting a trial, and leaves ``local_dir`` empty."""
    executor = ScriptedExecutor()
    local_dir = tmp_path / "results"
    with pytest.raises(exc_type, match=match) as info:
        tune.run(run_or_experiment, trial_executor=executor, local_dir=str(local_dir),
                 name="exp", verbose=0, **kwargs)
    assert executor.started == []
    assert not local_dir.exists() or os.listdir(local_dir) == []
    return info.value


# ---- search-space domains: refused when defined ----------------------------------------------
ORDER = "`lower` must be below `upper`"
LOG_LOWER = r"lower bound \(`lower`\) greater than 0"


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: tune.uniform(1, 0), ORDER),
        (lambda: tune.uniform(1, 1), ORDER),
        (lambda: tune.uniform(math.nan, 1), ORDER),
        (lambda: tune.quniform(1, 0, 0.5), ORDER),
        (lambda: tune.loguniform(1, 0.1), ORDER),
        (lambda: tune.loguniform(0, 1), LOG_LOWER),
        (lambda: tune.loguniform(-2, -1), LOG_LOWER),
        (lambda: tune.qloguniform(1, 0.1, 0.1), ORDER),
        (lambda: tune.qloguniform(0, 1, 0.1), LOG_LOWER),
        (lambda: tune.randint(3, 3), ORDER),
        (lambda: tune.randint(5, 1), ORDER),
        (lambda: tune.qrandint(5, 1), ORDER),
        (lambda: tune.qrandint(4, 4, 2), ORDER),
        (lambda: tune.lograndint(10, 1), ORDER),
        (lambda: tune.lograndint(0, 10), LOG_LOWER),
        (lambda: tune.qlograndint(10, 1, 1), ORDER),
        (lambda: tune.qlograndint(0, 10, 1), LOG_LOWER),
        (lambda: Float(2.0, 1.0), ORDER),
        (lambda: Integer(2, 1), ORDER),
    ],
)
def test_bounded_domain_with_bad_bounds_raises_at_definition(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_open_sided_and_normal_domains_stay_valid():
    assert Float(None, 1.0).upper == 1.0
    assert Float(0.0, None).lower == 0.0
    assert isinstance(tune.randn(0, 1).sample(), float)


def test_empty_grid_search_raises_at_definition():
    with pytest.raises(ValueError, match="`values` must be a non-empty list") as info:
        tune.grid_search([])
    assert isinstance(info.value, TuneError)  # 1.x's type for a bad grid_search


def test_empty_grid_in_dict_form_is_refused_by_run(tmp_path):
    assert_refused(tmp_path, ValueError, "'opt/lr'.*non-empty",
                   config={"opt": {"lr": {"grid_search": []}}})


# ---- tune.run arguments -----------------------------------------------------------------------
def test_restore_path_that_does_not_exist(tmp_path):
    missing = str(tmp_path / "nowhere" / "checkpoint_000003")
    assert_refused(tmp_path, ValueError, "restore.*does not exist", restore=missing)


def test_restore_path_that_exists_is_accepted_until_start(tmp_path):
    # Only existence is checked up front; the path is handed to the trial as given.
    exp = tune.Experiment("exp", trainable, restore=str(tmp_path), local_dir=str(tmp_path))
    assert exp.spec["restore"] == str(tmp_path)


class QuietScheduler(TrialScheduler):
    """A user's own scheduler subclass."""


class QuietSearcher(Searcher):
    def suggest(self, trial_id):
        return {}

    def on_trial_complete(self, trial_id, result=None, error=False):
        pass


@pytest.mark.parametrize("scheduler", [FIFOScheduler(), QuietScheduler()],
                         ids=["FIFOScheduler", "subclass"])
def test_scheduler_passed_as_search_alg(tmp_path, scheduler):
    assert_refused(tmp_path, TypeError, "search_alg.*pass it as scheduler=", search_alg=scheduler)


@pytest.mark.parametrize("searcher", [QuietSearcher(), BasicVariantGenerator()],
                         ids=["Searcher", "BasicVariantGenerator"])
def test_searcher_passed_as_scheduler(tmp_path, searcher):
    assert_refused(tmp_path, TypeError, "scheduler.*pass it as search_alg=", scheduler=searcher)


@pytest.mark.parametrize("stop", [lambda result: False, lambda: False,
                                  lambda trial_id, result, extra: False])
def test_stop_function_with_the_wrong_signature_is_a_tune_error(tmp_path, stop):
    error = assert_refused(tmp_path, TuneError, "`stop`.*two arguments", stop=stop)
    assert isinstance(error, ValueError)


def test_stop_function_with_defaults_beyond_two_arguments_is_fine(tmp_path):
    analysis = tune.run(trainable, trial_executor=ScriptedExecutor(), verbose=0,
                        local_dir=str(tmp_path), stop=lambda trial_id, result, x=1: False)
    assert [t.status for t in analysis.trials] == [Trial.TERMINATED]


# ---- checkpoint_freq / checkpoint_at_end with function trainables -----------------------------
@pytest.mark.parametrize("param", ["checkpoint_freq", "checkpoint_at_end"])
def test_checkpointable_function_refuses_checkpoint_options(tmp_path, param):
    assert_refused(tmp_path, ValueError,
                   f"'{param}' cannot be used with a checkpointable function",
                   checkpointing, **{param: 2 if param == "checkpoint_freq" else True})


@pytest.mark.parametrize("kwargs", [{"checkpoint_freq": 2}, {"checkpoint_at_end": True},
                                    {"checkpoint_freq": 1, "checkpoint_at_end": True}])
def test_plain_function_accepts_checkpoint_options(tmp_path, kwargs):
    analysis = tune.run(trainable, trial_executor=ScriptedExecutor(), verbose=0,
                        local_dir=str(tmp_path), **kwargs)
    (trial,) = analysis.trials
    assert trial.status == "TERMINATED"
    assert trial.last_result["training_iteration"] == 3
