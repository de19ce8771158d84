"""tune_async.integration.lightgbm through tune.run on Ray: 1.x metric names, restorable checkpoints."""

from __future__ import annotations

import os

import pytest

import tune_async as tune

lgb = pytest.importorskip("lightgbm", reason="needs the lightgbm extra")
sklearn_datasets = pytest.importorskip("sklearn.datasets", reason="needs scikit-learn")

from tune_async.integration.lightgbm import (  # noqa: E402 - after the importorskip
    TuneReportCallback,
    TuneReportCheckpointCallback,
    eval_results,
)

pytestmark = pytest.mark.ray

ROUNDS = 6
PARAMS = {"objective": "binary", "metric": ["binary_logloss", "binary_error"], "verbose": -1,
          "num_threads": 1, "num_leaves": 7, "deterministic": True}


def make_data():
    x, y = sklearn_datasets.make_classification(n_samples=300, n_features=8, random_state=1)
    return (x[:200], y[:200]), (x[200:], y[200:])


def train_with_callback(config, data=None):
    (x_train, y_train), (x_test, y_test) = data
    train_set = lgb.Dataset(x_train, label=y_train)
    test_set = lgb.Dataset(x_test, label=y_test, reference=train_set)
    if config["callback"] == "report":
        callback = TuneReportCallback()
    else:
        callback = TuneReportCheckpointCallback(
            {"loss": "eval-binary_logloss", "error": "eval-binary_error"}, frequency=2)
    params = {k: v for k, v in config.items() if k != "callback"}
    lgb.train(params, train_set, ROUNDS, valid_sets=[test_set], valid_names=["eval"],
              callbacks=[callback])


def expected_last_logloss(data):
    (x_train, y_train), (x_test, y_test) = data
    train_set = lgb.Dataset(x_train, label=y_train)
    record: dict = {}
    lgb.train(PARAMS, train_set, ROUNDS,
              valid_sets=[lgb.Dataset(x_test, label=y_test, reference=train_set)],
              valid_names=["eval"], callbacks=[lgb.record_evaluation(record)])
    return record["eval"]["binary_logloss"][-1]


def test_callbacks_report_metrics_and_checkpoint_boosters(results_dir):
    data = make_data()
    analysis = tune.run(
        tune.with_parameters(train_with_callback, data=data),
        config={**PARAMS, "callback": tune.grid_search(["report", "checkpoint"])},
        local_dir=results_dir, verbose=0,
    )
    by_kind = {t.config["callback"]: t for t in analysis.trials}
    want = expected_last_logloss(data)

    report = by_kind["report"].last_result
    assert report["training_iteration"] == ROUNDS
    assert report["eval-binary_logloss"] == pytest.approx(want)
    assert 0.0 <= report["eval-binary_error"] <= 1.0

    mapped = by_kind["checkpoint"].last_result
    assert mapped["loss"] == pytest.approx(want)
    assert "eval-binary_logloss" not in mapped

    # Checkpoints at iterations 0, 2, 4 (frequency=2), each paired with its own result.
    history = analysis.trial_dataframes[by_kind["checkpoint"].logdir]["loss"].tolist()
    paths = analysis.get_trial_checkpoints_paths(by_kind["checkpoint"], "loss")
    assert [value for _, value in paths] == pytest.approx([history[0], history[2], history[4]])
    booster = lgb.Booster(model_file=os.path.join(paths[-1][0], "checkpoint"))
    assert booster.current_iteration() == 5
    (_, _), (x_test, y_test) = data
    assert booster.predict(x_test).shape == (len(x_test),)


def test_eval_results_from_train_and_cv_entries():
    entries = [("eval", "binary_logloss", 0.5, False), ("train", "auc", 0.9, True)]
    assert eval_results(entries) == {"eval": {"binary_logloss": 0.5}, "train": {"auc": 0.9}}
    # lightgbm.cv adds the standard deviation: "-mean" and "-stdv" names, as in 1.x.
    cv_entries = [("cv_agg", "l2", 0.25, False, 0.01)]
    assert eval_results(cv_entries) == {"cv_agg": {"l2-mean": 0.25, "l2-stdv": 0.01}}
