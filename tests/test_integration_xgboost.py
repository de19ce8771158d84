"""tune_async.integration.xgboost through tune.run on Ray: 1.x metric names, restorable checkpoints."""

from __future__ import annotations

import os

import numpy as np
import pytest

import tune_async as tune

xgb = pytest.importorskip("xgboost", reason="needs the xgboost extra")
sklearn_datasets = pytest.importorskip("sklearn.datasets", reason="needs scikit-learn")

from tune_async.integration.xgboost import (  # noqa: E402 - after the importorskip
    TuneCallback,
    TuneReportCallback,
    TuneReportCheckpointCallback,
    latest_eval_values,
)

pytestmark = pytest.mark.ray

ROUNDS = 7
PARAMS = {"objective": "binary:logistic", "eval_metric": ["logloss", "error"], "nthread": 1}


def make_data():
    x, y = sklearn_datasets.make_classification(n_samples=300, n_features=8, random_state=0)
    return (x[:200], y[:200]), (x[200:], y[200:])


def train_with_callback(config, data=None):
    (x_train, y_train), (x_test, y_test) = data
    dtrain, dtest = xgb.DMatrix(x_train, label=y_train), xgb.DMatrix(x_test, label=y_test)
    if config["callback"] == "report":
        callback = TuneReportCallback()  # all metrics, under XGBoost's names
    else:
        callback = TuneReportCheckpointCallback({"loss": "eval-logloss"}, frequency=3)
    params = {k: v for k, v in config.items() if k != "callback"}
    xgb.train(params, dtrain, ROUNDS, evals=[(dtest, "eval")], verbose_eval=False,
              callbacks=[callback])


def expected_logloss(max_depth, data):
    """The last eval-logloss of the same training outside Tune."""
    (x_train, y_train), (x_test, y_test) = data
    evals_result: dict = {}
    xgb.train({**PARAMS, "max_depth": max_depth}, xgb.DMatrix(x_train, label=y_train), ROUNDS,
              evals=[(xgb.DMatrix(x_test, label=y_test), "eval")], evals_result=evals_result,
              verbose_eval=False)
    return evals_result["eval"]["logloss"][-1]


def test_callbacks_report_metrics_and_checkpoint_boosters(results_dir):
    data = make_data()
    analysis = tune.run(
        tune.with_parameters(train_with_callback, data=data),
        config={**PARAMS, "max_depth": 3, "callback": tune.grid_search(["report", "checkpoint"])},
        local_dir=results_dir, verbose=0,
    )
    by_kind = {t.config["callback"]: t for t in analysis.trials}
    want = expected_logloss(3, data)

    # Without a mapping: every metric under its 1.x name "<evals name>-<metric>", each round.
    report = by_kind["report"].last_result
    assert report["training_iteration"] == ROUNDS
    assert report["eval-logloss"] == pytest.approx(want)
    assert 0.0 <= report["eval-error"] <= 1.0

    # With a mapping: only the Tune names.
    mapped = by_kind["checkpoint"].last_result
    assert mapped["loss"] == pytest.approx(want)
    assert "eval-logloss" not in mapped and "eval-error" not in mapped
    history = analysis.trial_dataframes[by_kind["checkpoint"].logdir]["loss"].tolist()
    assert len(history) == ROUNDS and history[-1] == pytest.approx(want)

    # Checkpoints at iterations 0, 3, 6 (frequency=3), each paired with its own result.
    paths = analysis.get_trial_checkpoints_paths(by_kind["checkpoint"], "loss")
    assert [value for _, value in paths] == pytest.approx([history[0], history[3], history[6]])
    last_path, last_loss = paths[-1]
    booster = xgb.Booster(model_file=os.path.join(last_path, "checkpoint"))
    assert booster.num_boosted_rounds() == 7  # saved after round index 6
    (_, _), (x_test, y_test) = data
    p = booster.predict(xgb.DMatrix(x_test))
    logloss = -np.mean(y_test * np.log(p) + (1 - y_test) * np.log(1 - p))
    assert logloss == pytest.approx(last_loss, rel=1e-4)
    assert analysis.get_trial_checkpoints_paths(by_kind["report"]) == []


def test_metric_selection_without_training():
    evals_log = {"eval": {"logloss": [0.6, 0.5], "error": [0.3, 0.2]}, "train": {"logloss": [0.4]}}
    assert latest_eval_values(evals_log) == {
        "eval-logloss": 0.5, "eval-error": 0.2, "train-logloss": 0.4,
    }
    # xgb.cv logs (mean, std) pairs; the old callback API passed (name, value) pairs.
    assert latest_eval_values({"test": {"auc": [(0.8, 0.1)]}}) == {"test-auc": 0.8}
    assert latest_eval_values([("eval-logloss", 0.5)]) == {"eval-logloss": 0.5}
    with pytest.raises(KeyError, match="eval-auc.*logged metrics"):
        TuneReportCallback("eval-auc")._get_report_dict(evals_log)
    assert isinstance(TuneReportCallback(), TuneCallback)
    assert isinstance(TuneReportCheckpointCallback(), xgb.callback.TrainingCallback)
