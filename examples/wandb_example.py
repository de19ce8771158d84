"""Track Tune trials in Weights & Biases (ray.tune 1.x's wandb_example.py).

Three ways: WandbLoggerCallback (the driver logs each trial), @wandb_mixin on a
function, and WandbTrainableMixin on a Trainable class (both log themselves).

Run: python examples/wandb_example.py --api-key-file ~/.wandb_api_key
     python examples/wandb_example.py --smoke-test   (W&B offline mode, a temp dir)
Needs: pip install "tune_async[wandb]"
"""

import argparse
import os
import tempfile

import numpy as np
import wandb

import tune_async as tune
from tune_async import Trainable
from tune_async.integration.wandb import (
    WandbLoggerCallback,
    WandbTrainableMixin,
    wandb_mixin,
)

MEANS = [1, 2, 3, 4, 5]
STEPS = 30


def train_function(config, checkpoint_dir=None):
    for _ in range(STEPS):
        loss = config["mean"] + config["sd"] * np.random.randn()
        tune.report(loss=loss)


def tune_function(api_key_file):
    """Example for using a WandbLoggerCallback with the function API"""
    analysis = tune.run(
        train_function,
        metric="loss",
        mode="min",
        config={"mean": tune.grid_search(MEANS), "sd": tune.uniform(0.2, 0.8)},
        callbacks=[WandbLoggerCallback(api_key_file=api_key_file, project="Wandb_example")],
        verbose=1,
    )
    return analysis.best_config


@wandb_mixin
def decorated_train_function(config, checkpoint_dir=None):
    for _ in range(STEPS):
        loss = config["mean"] + config["sd"] * np.random.randn()
        tune.report(loss=loss)
        wandb.log(dict(loss=loss))


def tune_decorated(api_key_file):
    """Example for using the @wandb_mixin decorator with the function API"""
    analysis = tune.run(
        decorated_train_function,
        metric="loss",
        mode="min",
        config={
            "mean": tune.grid_search(MEANS),
            "sd": tune.uniform(0.2, 0.8),
            "wandb": {"api_key_file": api_key_file, "project": "Wandb_example"},
        },
        verbose=1,
    )
    return analysis.best_config


class WandbTrainable(WandbTrainableMixin, Trainable):
    def step(self):
        for _ in range(STEPS):
            loss = self.config["mean"] + self.config["sd"] * np.random.randn()
            self.wandb.log({"loss": loss})
        return {"loss": loss, "done": True}


def tune_trainable(api_key_file):
    """Example for using a WandTrainableMixin with the class API"""
    analysis = tune.run(
        WandbTrainable,
        metric="loss",
        mode="min",
        config={
            "mean": tune.grid_search(MEANS),
            "sd": tune.uniform(0.2, 0.8),
            "wandb": {"api_key_file": api_key_file, "project": "Wandb_example"},
        },
        verbose=1,
    )
    return analysis.best_config


def main(smoke_test=False, api_key_file=None):
    global MEANS, STEPS
    if smoke_test:
        # Offline: runs are written under WANDB_DIR, to upload later with `wandb sync`.
        # Set before Ray starts, so the trials' processes inherit it.
        os.environ["WANDB_MODE"] = "offline"
        os.environ.setdefault("WANDB_DIR", tempfile.mkdtemp())
        os.environ.setdefault("WANDB_SILENT", "true")
        MEANS, STEPS = [1, 2], 5
    for name, run in [("callback", tune_function), ("mixin", tune_decorated),
                      ("trainable mixin", tune_trainable)]:
        print(f"Best config ({name}): {run(api_key_file)}")
    if smoke_test:
        print("W&B offline runs in", os.path.join(os.environ["WANDB_DIR"], "wandb"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke-test", action="store_true",
                        help="Finish quickly, with W&B in offline mode")
    parser.add_argument("--api-key-file", type=str, default=None,
                        help="File holding the W&B API key (else WANDB_API_KEY or `wandb login`)")
    args, _ = parser.parse_known_args()
    main(args.smoke_test, args.api_key_file)
