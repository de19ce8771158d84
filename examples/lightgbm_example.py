"""Tune LightGBM with TuneReportCheckpointCallback (ray.tune 1.x's lightgbm_example.py).

A binary classifier on synthetic data: the callback reports the evaluation
metrics each round under Tune names, and the trial reports its final accuracy.

Run: python examples/lightgbm_example.py [--smoke-test]
Needs: pip install "tune_async[lightgbm]" scikit-learn
"""

import argparse

import lightgbm as lgb
import numpy as np
import sklearn.datasets
import sklearn.metrics
from sklearn.model_selection import train_test_split

import tune_async as tune
from tune_async.integration.lightgbm import TuneReportCheckpointCallback
from tune_async.schedulers import ASHAScheduler


def train_classifier(config):
    data, target = sklearn.datasets.make_classification(
        n_samples=600, n_features=20, n_informative=8, random_state=0)
    train_x, test_x, train_y, test_y = train_test_split(data, target, test_size=0.25)
    train_set = lgb.Dataset(train_x, label=train_y)
    test_set = lgb.Dataset(test_x, label=test_y)
    gbm = lgb.train(
        config, train_set, num_boost_round=config.get("num_boost_round", 100),
        valid_sets=[test_set], valid_names=["eval"],
        callbacks=[TuneReportCheckpointCallback({
            "binary_error": "eval-binary_error",
            "binary_logloss": "eval-binary_logloss",
        })])
    pred_labels = np.rint(gbm.predict(test_x))
    accuracy = sklearn.metrics.accuracy_score(test_y, pred_labels)
    # Every result carries the experiment's metric (tune.run(metric=...) checks it).
    tune.report(mean_accuracy=accuracy, binary_error=1.0 - accuracy, done=True)


def main(smoke_test: bool = False):
    config = {
        "objective": "binary",
        "metric": ["binary_error", "binary_logloss"],
        "verbose": -1,
        "num_threads": 1,
        "boosting_type": tune.grid_search(["gbdt", "dart"]),
        "num_leaves": tune.randint(10, 1000),
        "learning_rate": tune.loguniform(1e-8, 1e-1),
        "num_boost_round": 10 if smoke_test else 100,
    }
    analysis = tune.run(
        train_classifier,
        metric="binary_error",
        mode="min",
        config=config,
        num_samples=1 if smoke_test else 2,
        scheduler=ASHAScheduler(),
        verbose=1,
    )
    print("Best hyperparameters found were: ", analysis.best_config)
    return analysis


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke-test", action="store_true", help="Finish quickly for testing")
    args, _ = parser.parse_known_args()
    main(args.smoke_test)
