"""Tune XGBoost with TuneReportCheckpointCallback (ray.tune 1.x's xgboost_example.py).

A binary classifier on synthetic data, ASHA stopping bad trials early, then the
best trial's booster loaded back from its checkpoint.

Run: python examples/xgboost_example.py [--smoke-test]
Needs: pip install "tune_async[xgboost]" scikit-learn
"""

import argparse
import os

import sklearn.datasets
import sklearn.metrics
import xgboost as xgb
from sklearn.model_selection import train_test_split

import tune_async as tune
from tune_async.integration.xgboost import TuneReportCheckpointCallback
from tune_async.schedulers import ASHAScheduler


def make_data():
    return sklearn.datasets.make_classification(
        n_samples=600, n_features=20, n_informative=8, random_state=0)


def train_classifier(config):
    data, labels = make_data()
    train_x, test_x, train_y, test_y = train_test_split(data, labels, test_size=0.25,
                                                        random_state=0)
    train_set = xgb.DMatrix(train_x, label=train_y)
    test_set = xgb.DMatrix(test_x, label=test_y)
    # Reports "eval-logloss" and "eval-error" each round; saves the booster every 5 rounds.
    xgb.train(config, train_set, evals=[(test_set, "eval")], verbose_eval=False,
              callbacks=[TuneReportCheckpointCallback(filename="model.xgb")])


def get_best_model_checkpoint(analysis):
    best_bst = xgb.Booster()
    best_bst.load_model(os.path.join(analysis.best_checkpoint, "model.xgb"))
    accuracy = 1.0 - analysis.best_result["eval-error"]
    print(f"Best model parameters: {analysis.best_config}")
    print(f"Best model total accuracy: {accuracy:.4f}")
    return best_bst


def main(smoke_test: bool = False):
    search_space = {
        # You can mix constants with search space objects.
        "objective": "binary:logistic",
        "eval_metric": ["logloss", "error"],
        "max_depth": tune.randint(1, 9),
        "min_child_weight": tune.choice([1, 2, 3]),
        "subsample": tune.uniform(0.5, 1.0),
        "eta": tune.loguniform(1e-4, 1e-1),
        "nthread": 1,
    }
    # This will enable aggressive early stopping of bad trials.
    scheduler = ASHAScheduler(max_t=10, grace_period=1, reduction_factor=2)  # 10 rounds
    analysis = tune.run(
        train_classifier,
        metric="eval-logloss",
        mode="min",
        resources_per_trial={"cpu": 1},
        config=search_space,
        num_samples=2 if smoke_test else 10,
        scheduler=scheduler,
        verbose=1,
    )
    best_bst = get_best_model_checkpoint(analysis)
    # The best checkpoint is the booster of an earlier round (one every 5 rounds): it
    # predicts as well as the result reported with it.
    paired = dict(analysis.get_trial_checkpoints_paths(analysis.best_trial, "eval-error"))
    print(f"Best checkpoint accuracy (reported): {1.0 - paired[analysis.best_checkpoint]:.4f}")
    data, labels = make_data()
    _, test_x, _, test_y = train_test_split(data, labels, test_size=0.25, random_state=0)
    predictions = best_bst.predict(xgb.DMatrix(test_x)) > 0.5
    print(f"Restored model accuracy: {sklearn.metrics.accuracy_score(test_y, predictions):.4f}")
    return analysis


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke-test", action="store_true", help="Finish quickly for testing")
    args, _ = parser.parse_known_args()
    main(args.smoke_test)
