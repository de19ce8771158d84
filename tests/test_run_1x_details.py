"""tune.run details 1.x scripts rely on, found by auditing every argument against 1.x:
mode without metric, lists of trainables, positional arguments, what runs on instead of
raising, and when the stopper is asked."""

from __future__ import annotations

import logging
import os

import pytest

import tune_async as tune
from tune_async.suggest import Searcher


def two_metrics(config):
    for i in range(3):
        tune.report(loss=3 - i, acc=i)


def quick(**kwargs):
    """tune.run in this process (no Ray): these are driver-side rules."""
    kwargs.setdefault("verbose", 0)
    return tune.run(kwargs.pop("run", two_metrics), trial_executor=tune.LocalExecutor(),
                    **kwargs)


def test_mode_alone_requires_no_metric_in_results(results_dir):
    # 1.x names the metric "_metric" then and never checks results for it.
    analysis = quick(local_dir=results_dir, mode="max")
    assert [t.status for t in analysis.trials] == ["TERMINATED"]
    assert analysis.default_mode == "max"


def test_a_list_of_trainables_runs_each_as_an_experiment(results_dir):
    def other(config):
        tune.report(loss=0)

    analysis = quick(run=[two_metrics, tune.Experiment("given", other, local_dir=results_dir)],
                     local_dir=results_dir)
    assert sorted(t.trainable_name for t in analysis.trials) == ["other", "two_metrics"]
    assert all(t.status == "TERMINATED" for t in analysis.trials)
    assert "given" in os.listdir(results_dir)


def test_arguments_may_be_given_by_position_in_1x_order(results_dir):
    # run(run_or_experiment, name, metric, mode, stop, ...)
    analysis = tune.run(two_metrics, "by_position", "loss", "min", {"training_iteration": 2},
                        local_dir=results_dir, verbose=0, trial_executor=tune.LocalExecutor())
    assert os.path.isdir(os.path.join(results_dir, "by_position"))
    assert (analysis.default_metric, analysis.default_mode) == ("loss", "min")
    assert analysis.trials[0].last_result["training_iteration"] == 2


def fails(config):
    raise RuntimeError("no")


def test_failed_trials_are_logged_when_not_raised(results_dir, caplog):
    with caplog.at_level(logging.ERROR, logger="tune_async"):
        analysis = quick(run=fails, local_dir=results_dir, raise_on_failed_trial=False)
    assert [t.status for t in analysis.trials] == ["ERROR"]
    assert "Trials did not complete: [fails_" in caplog.text


class OwnMetricSearcher(Searcher):
    def __init__(self):
        super().__init__(metric="loss", mode="min")
        self.seen = []

    def suggest(self, trial_id):
        return None if len(self.seen) >= 2 else self.seen.append(trial_id) or {"a": 1}

    def on_trial_complete(self, trial_id, result=None, error=False):
        pass


def test_a_searcher_keeps_its_own_metric_beside_runs(results_dir, caplog):
    # 1.x runs on: the searcher optimises "loss", the analysis defaults to "acc".
    analysis = quick(local_dir=results_dir, search_alg=OwnMetricSearcher(), metric="acc",
                     mode="max", num_samples=2)
    assert len(analysis.trials) == 2 and analysis.default_metric == "acc"
    assert "optimises its own metric 'loss'" in caplog.text


def test_a_false_legacy_sync_argument_beside_sync_config_is_ignored(results_dir):
    with pytest.warns(DeprecationWarning, match="sync_to_driver"):
        analysis = quick(local_dir=results_dir, sync_config=tune.SyncConfig(),
                         sync_to_driver=False)
    assert analysis.trials[0].status == "TERMINATED"


def test_a_true_legacy_sync_argument_beside_sync_config_is_refused(results_dir):
    with pytest.raises(ValueError, match="cannot be combined with sync_config"):
        quick(local_dir=results_dir, sync_config=tune.SyncConfig(), upload_dir="file:///tmp/x")


# ---- the stopper sees every result, a done one too -------------------------------------------


class Recorder(tune.Stopper):
    def __init__(self):
        self.seen = []

    def __call__(self, trial_id, result):
        self.seen.append((result["training_iteration"], bool(result.get("done"))))
        return False

    def stop_all(self):
        return False


class DoneAtThree(tune.Trainable):
    def step(self):
        return {"loss": 1, "done": self.iteration + 1 == 3}


def test_the_stopper_sees_a_result_marked_done(results_dir):
    recorder = Recorder()
    quick(run=DoneAtThree, local_dir=results_dir, stop=recorder)
    assert recorder.seen == [(1, False), (2, False), (3, True)]


def test_the_stopper_sees_a_functions_final_result_again_as_done(results_dir):
    # 1.x's function runner ends with the last result repeated, done=True.
    recorder = Recorder()
    quick(local_dir=results_dir, stop=recorder)
    assert recorder.seen == [(1, False), (2, False), (3, False), (3, True)]

