"""Names of the automatic result fields (mirrors ``ray.tune.result``)."""

from __future__ import annotations

import os

TRAINING_ITERATION = "training_iteration"
TIME_THIS_ITER_S = "time_this_iter_s"
TIME_TOTAL_S = "time_total_s"
TIMESTEPS_TOTAL = "timesteps_total"
TIMESTEPS_THIS_ITER = "timesteps_this_iter"
EPISODES_TOTAL = "episodes_total"
EPISODES_THIS_ITER = "episodes_this_iter"
DONE = "done"
TRIAL_ID = "trial_id"
EXPERIMENT_TAG = "experiment_tag"
EXPERIMENT_ID = "experiment_id"
NODE_IP = "node_ip"
HOSTNAME = "hostname"
PID = "pid"
DATE = "date"
TIMESTAMP = "timestamp"
CONFIG = "config"
TIME_SINCE_RESTORE = "time_since_restore"
TIMESTEPS_SINCE_RESTORE = "timesteps_since_restore"
ITERATIONS_SINCE_RESTORE = "iterations_since_restore"
MEAN_LOSS = "mean_loss"
NEG_MEAN_LOSS = "neg_mean_loss"
MEAN_ACCURACY = "mean_accuracy"
EPISODE_REWARD_MEAN = "episode_reward_mean"
SHOULD_CHECKPOINT = "should_checkpoint"
# A function trainable that returned without reporting ``done``: ends the trial,
# is not recorded as a result of its own.
RESULT_DUPLICATE = "__duplicate__"
# Set by the worker on a result a persistent checkpoint was taken at (never logged).
CHECKPOINT_PATH = "__checkpoint_path__"
DEFAULT_METRIC = "_metric"

AUTO_RESULT_KEYS = (
    TRAINING_ITERATION,
    TIME_TOTAL_S,
    EPISODES_TOTAL,
    TIMESTEPS_TOTAL,
    NODE_IP,
    HOSTNAME,
    PID,
    TIME_THIS_ITER_S,
    TIMESTAMP,
    EXPERIMENT_ID,
    DATE,
    TIME_SINCE_RESTORE,
    ITERATIONS_SINCE_RESTORE,
    TIMESTEPS_SINCE_RESTORE,
    CONFIG,
    TRIAL_ID,
    EXPERIMENT_TAG,
    DONE,
    "warmup_time",
)

EXPR_PARAM_FILE = "params.json"
EXPR_PARAM_PICKLE_FILE = "params.pkl"
EXPR_PROGRESS_FILE = "progress.csv"
EXPR_RESULT_FILE = "result.json"
EXPR_ERROR_FILE = "error.txt"


def default_results_dir() -> str:
    """``~/ray_results`` unless ``TUNE_RESULT_DIR`` (or ``TEST_TMPDIR``) says otherwise."""
    return os.path.expanduser(
        os.environ.get("TUNE_RESULT_DIR")
        or (os.path.join(os.environ["TEST_TMPDIR"], "ray_results")
            if os.environ.get("TEST_TMPDIR") else "~/ray_results")
    )
