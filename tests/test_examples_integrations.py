"""The 1.x-derived examples run as scripts with --smoke-test (each in its own process,
starting its own local Ray), and leave what they promise behind."""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def run_example(name: str, tmp_path, **env: str) -> str:
    """Run ``examples/<name>.py --smoke-test``; its combined output (it must exit 0)."""
    full_env = {
        **os.environ,
        "TUNE_RESULT_DIR": str(tmp_path / "ray_results"),
        "RAY_ADDRESS": "local",  # a fresh Ray, never another test's cluster
        **env,
    }
    proc = subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, f"{name}.py"), "--smoke-test"],
        cwd=tmp_path, env=full_env, capture_output=True, text=True, timeout=600,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-5000:]
    return output


def needs(*modules: str):
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    return pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)} (an extra)")


@needs("xgboost", "sklearn")
def test_xgboost_example_restores_the_best_booster(tmp_path):
    out = run_example("xgboost_example", tmp_path)
    assert re.search(r"Best model total accuracy: [\d.]+", out)
    reported = re.search(r"Best checkpoint accuracy \(reported\): ([\d.]+)", out).group(1)
    restored = re.search(r"Restored model accuracy: ([\d.]+)", out).group(1)
    assert reported == restored  # the checkpoint holds the booster that reported it


@needs("lightgbm", "sklearn")
def test_lightgbm_example_reports_1x_metric_names(tmp_path):
    out = run_example("lightgbm_example", tmp_path)
    assert "Best hyperparameters found were:" in out
    trial_dirs = glob.glob(str(tmp_path / "ray_results" / "*" / "train_classifier_*"))
    assert len(trial_dirs) == 2
    last_results = []
    for trial_dir in trial_dirs:
        with open(os.path.join(trial_dir, "result.json")) as f:
            results = [json.loads(line) for line in f]
        assert {"binary_error", "binary_logloss"} <= set(results[0])  # the Tune names
        last_results.append(results[-1])
    # ASHA may stop one trial early; the one it lets finish makes its final report.
    assert any("mean_accuracy" in result for result in last_results)


@needs("mlflow")
def test_mlflow_example_logs_both_ways(tmp_path):
    out = run_example("mlflow_example", tmp_path)
    assert "MLflow experiment 'example': 2 runs" in out
    assert "MLflow experiment 'mixin_example': 2 runs" in out
    assert out.count("FINISHED") >= 4  # every run of both experiments ended cleanly


@needs("wandb")
def test_wandb_example_writes_offline_runs(tmp_path):
    wandb_dir = tmp_path / "wandb_runs"
    wandb_dir.mkdir()
    out = run_example("wandb_example", tmp_path, WANDB_DIR=str(wandb_dir))
    assert "Best config (trainable mixin):" in out
    runs = glob.glob(str(wandb_dir / "wandb" / "offline-run-*" / "run-*.wandb"))
    assert len(runs) == 6  # 2 trials each: the callback, the function mixin, the class mixin


def test_pbt_example(tmp_path):
    out = run_example("pbt_example", tmp_path)
    assert "Best hyperparameters found were:" in out
    trials = glob.glob(str(tmp_path / "ray_results" / "pbt_test" / "PBTBenchmarkExample_*"))
    assert len(trials) == 4


def test_async_hyperband_example(tmp_path):
    out = run_example("async_hyperband_example", tmp_path)
    assert "Number of trials: 20/20 (20 TERMINATED)" in out
    assert "Best hyperparameters found were:" in out
