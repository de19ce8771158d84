"""export_formats: a finished trial exports its model into its directory (1.x)."""

from __future__ import annotations

import json
import logging
import os

import pytest

import tune_async as tune
from tune_async.error import TuneError
from tune_async.schedulers import FIFOScheduler, TrialScheduler

SUPPORTED = ("json", "txt")


class Counter(tune.Trainable):
    def setup(self, config):
        self.count = 0

    def step(self):
        self.count += 1
        return {"count": self.count}

    def _export_model(self, export_formats, export_dir):
        exported = {}
        for fmt in export_formats:
            if fmt not in SUPPORTED:
                raise ValueError(f"Unsupported export format: {fmt!r}")
            path = os.path.join(export_dir, f"model.{fmt}")
            with open(path, "w", encoding="utf-8") as f:
                f.write(json.dumps({"count": self.count}) if fmt == "json" else str(self.count))
            exported[fmt] = path
        return exported


class StopAtTwo(FIFOScheduler):
    def on_trial_result(self, trial_runner, trial, result):
        return TrialScheduler.STOP if result["training_iteration"] >= 2 else TrialScheduler.CONTINUE


def exported(trial, fmt):
    path = os.path.join(trial.logdir, f"model.{fmt}")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return f.read()


@pytest.mark.ray
def test_the_model_is_exported_into_the_trial_dir_when_it_finishes(results_dir):
    analysis = tune.run(Counter, config={"x": tune.grid_search([1, 2])},
                        stop={"training_iteration": 3}, export_formats=["json", "txt"],
                        local_dir=results_dir, verbose=0)
    for trial in analysis.trials:
        assert trial.status == "TERMINATED"
        # Exported once, at the end: the state after the last step.
        assert json.loads(exported(trial, "json")) == {"count": 3}
        assert exported(trial, "txt") == "3"


@pytest.mark.ray
@pytest.mark.parametrize("how", ["scheduler", "stop function"])
def test_a_stop_decided_on_the_driver_exports_too(results_dir, how):
    kwargs = ({"scheduler": StopAtTwo()} if how == "scheduler"
              else {"stop": lambda trial_id, result: result["training_iteration"] >= 2})
    analysis = tune.run(Counter, export_formats=["txt"], local_dir=results_dir, verbose=0,
                        **kwargs)
    trial = analysis.trials[0]
    assert trial.status == "TERMINATED" and trial.last_result["training_iteration"] == 2
    assert exported(trial, "txt") == "2"


@pytest.mark.ray
def test_an_unsupported_format_is_the_trials_error(results_dir):
    with pytest.raises(TuneError, match="Trials did not complete"):
        tune.run(Counter, stop={"training_iteration": 2}, export_formats=["onnx"],
                 local_dir=results_dir, name="bad_format", verbose=0)
    analysis = tune.ExperimentAnalysis(os.path.join(results_dir, "bad_format"))
    trial = analysis.trials[0]
    assert trial.status == "ERROR"
    with open(os.path.join(trial.logdir, "error.txt"), encoding="utf-8") as f:
        error = f.read()
    assert "Unsupported export format: 'onnx'" in error and "_export_model" in error
    assert exported(trial, "txt") is None


def test_the_in_process_executor_exports_too(results_dir):
    analysis = tune.run(Counter, stop={"training_iteration": 4}, export_formats=["json"],
                        trial_executor="local", local_dir=results_dir, verbose=0)
    assert json.loads(exported(analysis.trials[0], "json")) == {"count": 4}


def test_a_function_trainable_exports_nothing_and_says_so(results_dir, caplog):
    def train(config):
        tune.report(loss=1.0)

    with caplog.at_level(logging.WARNING, logger="tune_async"):
        analysis = tune.run(train, export_formats=["json"], trial_executor="local",
                            local_dir=results_dir, verbose=0)
    assert analysis.trials[0].status == "TERMINATED"  # 1.x: not an error either
    assert "export_formats has no effect" in caplog.text
    assert "model.json" not in os.listdir(analysis.trials[0].logdir)


def test_export_formats_must_be_a_list_of_names(results_dir):
    with pytest.raises(ValueError, match="export_formats must be a list of format names"):
        tune.run(Counter, export_formats="json", local_dir=results_dir, verbose=0)
    with pytest.raises(ValueError, match="export_formats must be a list of format names"):
        tune.run(Counter, export_formats=[1], local_dir=results_dir, verbose=0)
