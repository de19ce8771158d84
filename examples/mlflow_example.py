"""Track Tune trials in MLflow (ray.tune 1.x's mlflow_example.py).

First with MLflowLoggerCallback (the driver logs each trial as a run), then with
@mlflow_mixin (the training function logs to its trial's run itself).

Run: python examples/mlflow_example.py --tracking-uri http://127.0.0.1:5000
     python examples/mlflow_example.py --smoke-test   (a local sqlite store)
Needs: pip install "tune_async[mlflow]"
"""

import argparse
import os
import tempfile
import time

import mlflow

import tune_async as tune
from tune_async.integration.mlflow import MLflowLoggerCallback, mlflow_mixin


def evaluation_fn(step, width, height):
    return (0.1 + width * step / 100) ** (-1) + height * 0.1


def easy_objective(config):
    # Hyperparameters
    width, height = config["width"], config["height"]
    for step in range(config.get("steps", 100)):
        # Iterative training function - can be any arbitrary training procedure
        intermediate_score = evaluation_fn(step, width, height)
        # Feed the score back to Tune.
        tune.report(iterations=step, mean_loss=intermediate_score)
        time.sleep(0.1)


def tune_function(mlflow_tracking_uri, finish_fast=False):
    tune.run(
        easy_objective,
        name="mlflow",
        num_samples=2 if finish_fast else 5,
        callbacks=[MLflowLoggerCallback(tracking_uri=mlflow_tracking_uri,
                                        experiment_name="example", save_artifact=True)],
        config={
            "width": tune.randint(10, 100),
            "height": tune.randint(0, 100),
            "steps": 5 if finish_fast else 100,
        },
        verbose=1,
    )


@mlflow_mixin
def decorated_easy_objective(config):
    # Hyperparameters
    width, height = config["width"], config["height"]
    for step in range(config.get("steps", 100)):
        # Iterative training function - can be any arbitrary training procedure
        intermediate_score = evaluation_fn(step, width, height)
        # Log the metrics to mlflow
        mlflow.log_metrics(dict(mean_loss=intermediate_score), step=step)
        # Feed the score back to Tune.
        tune.report(iterations=step, mean_loss=intermediate_score)
        time.sleep(0.1)


def tune_decorated(mlflow_tracking_uri, finish_fast=False):
    # Set the experiment, or create a new one if does not exist yet.
    mlflow.set_tracking_uri(mlflow_tracking_uri)
    mlflow.set_experiment(experiment_name="mixin_example")
    tune.run(
        decorated_easy_objective,
        name="mlflow",
        verbose=1,
        num_samples=2 if finish_fast else 5,
        config={
            "width": tune.randint(10, 100),
            "height": tune.randint(0, 100),
            "steps": 5 if finish_fast else 100,
            "mlflow": {
                "experiment_name": "mixin_example",
                "tracking_uri": mlflow.get_tracking_uri(),
            },
        },
    )


def print_runs(experiment_name):
    experiment = mlflow.get_experiment_by_name(experiment_name)
    runs = mlflow.search_runs([experiment.experiment_id])
    print(f"MLflow experiment {experiment_name!r}: {len(runs)} runs")
    print(runs[["run_id", "status", "metrics.mean_loss"]])


def main(smoke_test=False, tracking_uri=None):
    if smoke_test or not tracking_uri:
        # 1.x used a ./mlruns file store here; MLflow 3 keeps that store read-mostly,
        # so a local sqlite database stands in.
        tracking_uri = "sqlite:///" + os.path.join(tempfile.mkdtemp(), "mlflow.db")
    mlflow.set_tracking_uri(tracking_uri)
    tune_function(tracking_uri, finish_fast=smoke_test)
    print_runs("example")
    tune_decorated(tracking_uri, finish_fast=smoke_test)
    print_runs("mixin_example")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke-test", action="store_true", help="Finish quickly for testing")
    parser.add_argument("--tracking-uri", type=str,
                        help="The tracking URI for the MLflow tracking server.")
    args, _ = parser.parse_known_args()
    main(args.smoke_test, args.tracking_uri)
