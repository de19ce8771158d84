"""1.x details of the analysis surface: dataframe config columns, ``trial.metric_analysis``'s
shape and types (and its private count across pickling/resume), CombinedStopper short-circuit."""

from __future__ import annotations

import base64
import glob
import json
import os
import pickle
import zlib

import numpy as np
import pytest

import tune_async as tune
from tests.scripted_executor import ScriptedExecutor
from tune_async._hooks import call_hook
from tune_async.analysis import Analysis, ExperimentAnalysis
from tune_async.state import load_state, trial_state, trials_from_state
from tune_async.stopper import CombinedStopper, MaximumIterationStopper, NoopStopper, Stopper
from tune_async.trial import Trial

STATS = {"max", "min", "avg", "last", "last-5-avg", "last-10-avg"}


def report_losses(config):
    for loss in config["losses"]:
        tune.report(loss=loss)


def run(trainable, **kwargs):
    kwargs.setdefault("verbose", 0)
    kwargs.setdefault("trial_executor", ScriptedExecutor(slots=2))
    return tune.run(trainable, **kwargs)


def state_file(results_dir, name):
    return sorted(glob.glob(os.path.join(results_dir, name, "experiment_state-*.json")))[-1]


# ---- dataframe(): top-level config keys only ----------------------------------------------


@pytest.fixture
def nested(results_dir):
    config = {"opt": {"lr": 1, "betas": [0.9, 0.99]}, "layers": 2, "losses": [3, 2]}
    analysis = run(report_losses, config=config, name="nested", local_dir=results_dir)
    return analysis, os.path.join(results_dir, "nested")


def test_dataframe_has_one_column_per_top_level_config_key(nested):
    analysis, exp_dir = nested
    for source in (analysis, ExperimentAnalysis(exp_dir), Analysis(exp_dir)):
        for df in (source.dataframe(), source.dataframe("loss", "min")):
            config_columns = sorted(c for c in df.columns if c.startswith("config/"))
            assert config_columns == ["config/layers", "config/losses", "config/opt"]
            assert df["config/opt"].iloc[0] == {"lr": 1, "betas": [0.9, 0.99]}
            assert df["config/layers"].iloc[0] == 2
        [prefixed] = source.get_all_configs(prefix=True).values()
        row = source.dataframe().iloc[0]
        assert {k: row[k] for k in prefixed} == prefixed


def test_results_df_and_trial_dataframes_keep_their_1x_shapes(nested):
    analysis, _ = nested
    # results_df flattens the whole last result with "." (config included), as 1.x.
    assert analysis.results_df["config.opt.lr"].iloc[0] == 1
    assert "config/opt" not in analysis.results_df.columns
    # progress.csv (trial_dataframes) has no config columns at all.
    [df] = analysis.trial_dataframes.values()
    assert not [c for c in df.columns if c.startswith("config")]


# ---- trial.metric_analysis ---------------------------------------------------------------


def test_metric_analysis_has_1x_keys_and_keeps_reported_types(results_dir):
    analysis = run(report_losses, config={"losses": [5, 4, 3, 2, 1]}, name="ints",
                   local_dir=results_dir)
    [trial] = analysis.trials
    loss = trial.metric_analysis["loss"]
    assert loss == {"max": 5, "min": 1, "avg": 3.0, "last": 1,
                    "last-5-avg": 3.0, "last-10-avg": 3.0}
    assert [type(loss[k]) for k in ("max", "min", "last")] == [int, int, int]
    assert type(loss["avg"]) is float
    assert all(set(stats) == STATS for stats in trial.metric_analysis.values())
    # The same trial read back from disk has the same stats.
    [loaded] = ExperimentAnalysis(os.path.join(results_dir, "ints")).trials
    assert loaded.metric_analysis == trial.metric_analysis
    with open(state_file(results_dir, "ints")) as f:
        [entry] = json.load(f)["checkpoints"]
    assert entry["metric_analysis"]["loss"] == loss


def test_metric_analysis_of_numpy_and_nested_values():
    trial = Trial("t")
    for value in (np.int32(2**30), np.int32(2**30), np.int32(2**30)):
        trial.update_metric_analysis({"big": value, "info": {"n": np.int64(4)}, "f": 0.5})
    big = trial.metric_analysis["big"]
    assert big["max"] == 2**30 and type(big["max"]) is int
    assert big["avg"] == 2**30  # the total of int32s does not overflow
    assert trial.metric_analysis["info/n"]["last"] == 4
    assert set(trial.metric_analysis["f"]) == STATS


def _varied_results(rng, n):
    """Results whose values change type, go missing, turn NaN and nest (seeded)."""
    def number():
        return rng.choice([rng.randint(-5, 5), rng.random(), float("nan"), float("inf"),
                           None, True, np.float32(rng.random()), np.int64(3), "x"])

    results = []
    for i in range(n):
        result = {"training_iteration": i + 1, "loss": rng.random(), "config": {"lr": 0.1}}
        if rng.random() < 0.2:
            result["config"] = {"lr": rng.choice([0.1, 0.2]), "nested": {"k": i}}
        if rng.random() < 0.7:
            result["odd"] = number()
        if rng.random() < 0.3:
            result["info"] = {"a": number(), "b": {"c": rng.randint(0, 3)}}
        results.append(result)
    return results


def _same(a, b):
    return a == b or (a != a and b != b)  # NaN equals NaN here


@pytest.mark.parametrize("seed", range(6))
def test_batched_metric_analysis_equals_one_result_at_a_time(seed):
    # The driver folds a trial's results into its statistics in batches; what anyone
    # reads must be what folding them one at a time gives (values, types, key order).
    import random

    rng = random.Random(seed)
    uniform = [{"training_iteration": i, "loss": rng.random(), "config": {"lr": 0.1}}
               for i in range(1, 80)]
    for results in (_varied_results(rng, 120), uniform):
        batched, single = Trial("t"), Trial("t")
        for result in results:
            batched.update_metric_analysis(result)
            single.update_metric_analysis(result)
            single.metric_analysis  # noqa: B018 - a read folds what is queued
        assert list(batched.metric_analysis) == list(single.metric_analysis)
        for key, stats in single.metric_analysis.items():
            for name, value in stats.items():
                got = batched.metric_analysis[key][name]
                assert _same(got, value) and type(got) is type(value), (key, name)
        assert pickle.loads(pickle.dumps(batched)).metric_analysis.keys() == \
            single.metric_analysis.keys()


def updated(trial, values):
    for value in values:
        trial.update_metric_analysis({"loss": value})
    return trial


def test_running_average_survives_pickling():
    trial = pickle.loads(pickle.dumps(updated(Trial("t"), [1, 2, 3])))
    updated(trial, [6])
    assert trial.metric_analysis["loss"]["avg"] == 3.0
    assert trial.metric_analysis["loss"]["last-5-avg"] == 3.0
    assert "_count" not in trial.metric_analysis["loss"]


# A Trial pickled before the count left the public stats: loss and training_iteration
# reported 1, 2, 3, each with {"max": 3.0, ..., "_count": 3} and 3-value windows.
OLD_RECORD = (
    "eNqFVFtPFDEUXlxYdwFhRTTxH+ADBB58MSoomo0h2Rj0lTSl052pdtqxFy4PJvrgA8l5kvo//QmedoaZJcY4L9Pz9Z"
    "yv37m035Z+/VzspQ/GzitOqL1UbMcZQWWApY/pfx2efA9fwxasOUOFoqeSE0VLHmBhFmDAtJqJHB3gjjThaMHCMMUT"
    "kQUYapnt4rcXYI1fVNyIkitHHM0D9AKM+RmVnjqekYoaWtpIM5KaYXgmTCjuwUDqPC6nMDLcam8YtwE259TOwaPjdt2q"
    "7rPKoyzo5/Hfg0HJS20u4/KBPv3EmSPWacNJh4/4BaZKWB3QWE34am11zo9r4B9UY+YRKkknEjN81PD/veVPYQPBqhIq"
    "J8wIhxXTKsaslvSCzKiQHv0j8/0mvC52asgU1hoQK9Yg63NlT1CsqXXUeRuKHqykHn+o7esAd9+/nb55N52EH+E4wIqk"
    "1kWBXrooYlwvLUJMm4xnqSLKl7eULXNjtCEzIaOAUW2VNkdjGU822H+RtI0Tva8ynIAam/R6N/OIRcTUGKGKyksrbGrm"
    "otS2XvWxHmFyMGzc+6VQYbL/+8akZznu3pAtxoPmvAeEaa9cOOrDctzafrp9OyAlvr23exv2sJGuQGxObA11dXO2iuct"
    "d/GiVVG8bCOL/c7h4KhfvOp2Xnf0HobkXKhMn6cci2cnYatla91aJl4c/sfBwzqhZyg05xZHk2JDrmAV25SmtKKuiD1h"
    "BWefKy2wIDgvnUVmhn+pR63DqCNcZUiz+ZnzinQ7luAcIMHDOWfL4jnUObzKh1hUnROn68G4Sg+CxmGYaVNSZ8MJvjjp"
    "YqR7sPMHeUyetg=="
)


def test_a_trial_pickled_by_an_older_version_loads_and_keeps_its_count():
    trial = pickle.loads(zlib.decompress(base64.b64decode(OLD_RECORD)))
    assert trial.metric_analysis["loss"] == {"max": 3.0, "min": 1.0, "avg": 2.0, "last": 3.0,
                                             "last-5-avg": 2.0, "last-10-avg": 2.0}
    updated(trial, [6])
    assert trial.metric_analysis["loss"]["avg"] == 3.0  # (1 + 2 + 3 + 6) / 4
    assert trial.metric_analysis["loss"]["max"] == 6
    # Its state entry (what resume and analysis read) has no "_count" either.
    [restored] = trials_from_state({"checkpoints": [json.loads(json.dumps(trial_state(trial)))]})
    assert restored.metric_analysis == trial.metric_analysis


def test_resume_reads_back_the_same_metric_analysis(results_dir):
    kwargs = dict(config={"losses": tune.grid_search([[1, 2], [4, 3, 8]])}, name="again",
                  local_dir=results_dir)
    first = {t.trial_id: t.metric_analysis for t in run(report_losses, **kwargs).trials}
    restored = trials_from_state(load_state(state_file(results_dir, "again")))
    assert {t.trial_id: t.metric_analysis for t in restored} == first
    resumed = run(report_losses, resume=True, **kwargs)
    assert {t.trial_id: t.metric_analysis for t in resumed.trials} == first
    assert first and all("_count" not in s for m in first.values() for s in m.values())


# ---- CombinedStopper ---------------------------------------------------------------------


class Recorder(Stopper):
    def __init__(self, answer=False):
        self.answer = answer
        self.seen: list = []
        self.stop_all_calls = 0

    def __call__(self, trial_id, result):
        self.seen.append(result.get("training_iteration"))
        return self.answer

    def stop_all(self):
        self.stop_all_calls += 1
        return self.answer


class AsyncAnswer(Stopper):
    def __init__(self, answer):
        self.answer = answer

    async def __call__(self, trial_id, result):
        return self.answer

    async def stop_all(self):
        return self.answer


def test_combined_stopper_stops_at_the_first_true_child_in_a_run(results_dir):
    recorder = Recorder()
    run(report_losses, config={"losses": list(range(10))}, local_dir=results_dir,
        stop=CombinedStopper(MaximumIterationStopper(3), recorder))
    assert recorder.seen == [1, 2]  # 1.x: the third result stopped at the first child


def test_combined_stop_all_stops_at_the_first_true_child():
    later = Recorder()
    assert CombinedStopper(Recorder(answer=True), later).stop_all() is True
    assert later.stop_all_calls == 0
    assert CombinedStopper(Recorder(), later).stop_all() is False
    assert later.stop_all_calls == 1


async def test_combined_stopper_short_circuits_async_children():
    later = Recorder()
    # A sync True before an async child: a plain True, the async child never called.
    assert CombinedStopper(Recorder(answer=True), AsyncAnswer(True), later)("t", {}) is True
    combined = CombinedStopper(NoopStopper(), AsyncAnswer(False), Recorder(answer=True), later)
    assert await call_hook(combined, "t", {"training_iteration": 1}) is True
    assert await call_hook(CombinedStopper(AsyncAnswer(True), later).stop_all) is True
    assert later.seen == [] and later.stop_all_calls == 0
    assert await call_hook(CombinedStopper(AsyncAnswer(False), later), "t", {}) is False
    assert later.seen == [None]
