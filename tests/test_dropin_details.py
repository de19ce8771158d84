"""The remaining 1.x details (issue #12): trailing function checkpoints, the public
members of ``Trial`` and ``ExperimentAnalysis`` 1.x scripts read, ``tune.utils``
helpers (``diagnose_serialization``...) and the logger names records appear under.
"""

from __future__ import annotations

import json
import os

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


def _results(trial):
    with open(os.path.join(trial.logdir, "result.json")) as f:
        return [json.loads(line) for line in f if line.strip()]
