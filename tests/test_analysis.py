from __future__ import annotations

import json
import math
import os

import pandas as pd
import pytest

from tune_async.analysis import Analysis, ExperimentAnalysis
from tune_async.error import TuneError
from tune_async.trial import Trial, TrialStatus
from tune_async.utils.util import flatten_dict

# ---- building experiment directories by hand ---------------------------------


def metric_stats(values: list[float]) -> dict:
    return {
        "max": max(values),
        "min": min(values),
        "avg": sum(values) / len(values),
        "last": values[-1],
        "last-5-avg": sum(values[-5:]) / len(values[-5:]),
        "last-10-avg": sum(values[-10:]) / len(values[-10:]),
    }


def write_trial_dir(
    exp_dir,
    trial_id: str,
    config: dict,
    results: list[dict],
    *,
    progress: bool = True,
    result_json: bool = True,
    params: bool = True,
) -> str:
    """A trial directory as the loggers write it; returns its path."""
    logdir = os.path.join(str(exp_dir), f"train_{trial_id}_00000_2021-01-01_00-00-00")
    os.makedirs(logdir)
    full = [
        {**r, "trial_id": trial_id, "training_iteration": i + 1, "config": config}
        for i, r in enumerate(results)
    ]
    if params:
        with open(os.path.join(logdir, "params.json"), "w") as f:
            json.dump(config, f, indent=2, sort_keys=True)
    if result_json:
        with open(os.path.join(logdir, "result.json"), "w") as f:
            for r in full:
                f.write(json.dumps(r) + "\n")
    if progress:
        rows = [flatten_dict({k: v for k, v in r.items() if k != "config"}) for r in full]
        pd.DataFrame(rows).to_csv(os.path.join(logdir, "progress.csv"), index=False)
    return logdir


def trial_state(
    trial_id: str, logdir: str | None, config: dict, results: list[dict], **extra
) -> dict:
    """One ``checkpoints`` entry of the experiment state file."""
    flat = [flatten_dict(r) for r in results]
    metrics = {k for r in flat for k, v in r.items() if isinstance(v, (int, float))}
    analysis = {k: metric_stats([r[k] for r in flat if k in r]) for k in metrics}
    last = dict(results[-1], trial_id=trial_id, config=config) if results else {}
    state = {
        "trial_id": trial_id,
        "trainable_name": "train",
        "trial_name": f"train_{trial_id}",
        "experiment_tag": "0",
        "status": "TERMINATED",
        "logdir": logdir,
        "local_dir": os.path.dirname(logdir) if logdir else "",
        "num_failures": 0,
        "error_file": None,
        "error_msg": None,
        "results_recorded": len(results),
        "start_time": 1.0,
        "last_update_time": 2.0,
        "evaluated_params": config,
        "metric_analysis": analysis,
        "config": config,
        "last_result": last,
    }
    state.update(extra)
    return state


def write_state(
    exp_dir,
    checkpoints: list[dict],
    name="experiment_state-2021-01-01_00-00-00.json",
    metric=None,
    mode=None,
) -> str:
    path = os.path.join(str(exp_dir), name)
    state = {
        "checkpoints": checkpoints,
        "runner_data": {
            "name": "exp",
            "local_dir": str(exp_dir),
            "metric": metric,
            "mode": mode,
            "session_str": "2021-01-01_00-00-00",
        },
        "stats": {"start_time": 1.0, "timestamp": 2.0},
        "timestamp": 2.0,
    }
    with open(path, "w") as f:
        json.dump(state, f)
    return path


LOSSES = {"t1": [3.0, 2.0, 1.0], "t2": [0.5, 2.5, 2.0], "t3": [4.0, 3.0, 1.5]}
CONFIGS = {
    "t1": {"lr": 0.1, "model": {"depth": 1}},
    "t2": {"lr": 0.2, "model": {"depth": 2}},
    "t3": {"lr": 0.3, "model": {"depth": 3}},
}


@pytest.fixture
def experiment(tmp_path):
    """Three finished trials with a state file. Best last loss: t1; best ever: t2."""
    exp_dir = tmp_path / "exp"
    exp_dir.mkdir()
    states = []
    for tid, losses in LOSSES.items():
        results = [{"loss": v, "info": {"acc": 1 - v / 10}} for v in losses]
        logdir = write_trial_dir(exp_dir, tid, CONFIGS[tid], results)
        states.append(trial_state(tid, logdir, CONFIGS[tid], results))
    write_state(exp_dir, states, metric="loss", mode="min")
    return exp_dir


def logdir_of(analysis: ExperimentAnalysis, trial_id: str) -> str:
    return next(t.logdir for t in analysis.trials if t.trial_id == trial_id)


# ---- construction --------------------------------------------------------------


def test_from_state_file_builds_trials(experiment):
    state_file = next(experiment.glob("experiment_state-*.json"))
    analysis = ExperimentAnalysis(str(state_file))
    assert [t.trial_id for t in analysis.trials] == ["t1", "t2", "t3"]
    trial = analysis.trials[0]
    assert isinstance(trial, Trial)
    assert trial.status == TrialStatus.TERMINATED
    assert trial.config == CONFIGS["t1"]
    assert trial.trial_name == "train_t1"
    assert trial.last_result["loss"] == 1.0
    assert trial.metric_analysis["loss"]["min"] == 1.0


def test_from_directory_uses_newest_state_file(experiment):
    # An older snapshot (earlier name) holding only one trial must be ignored.
    older = trial_state("t1", logdir_of(ExperimentAnalysis(str(experiment)), "t1"), {}, [])
    write_state(experiment, [older], name="experiment_state-2020-01-01_00-00-00.json")
    analysis = ExperimentAnalysis(str(experiment))
    assert len(analysis.trials) == 3


def test_missing_path_is_value_error(tmp_path):
    with pytest.raises(ValueError, match="not a valid"):
        ExperimentAnalysis(str(tmp_path / "nope"))


def test_empty_directory_is_tune_error(tmp_path):
    with pytest.raises(TuneError, match="No trials found"):
        ExperimentAnalysis(str(tmp_path))


def test_state_file_without_checkpoints_is_tune_error(tmp_path):
    path = tmp_path / "experiment_state-x.json"
    path.write_text(json.dumps({"runner_data": {}}))
    with pytest.raises(TuneError, match="no checkpoints"):
        ExperimentAnalysis(str(path))


def test_unreadable_state_file_is_tune_error(tmp_path):
    path = tmp_path / "experiment_state-x.json"
    path.write_text("{not json")
    with pytest.raises(TuneError, match="invalid"):
        ExperimentAnalysis(str(path))


def test_unknown_status_is_tune_error(tmp_path):
    write_state(tmp_path, [trial_state("t1", None, {}, [], status="SLEEPING")])
    with pytest.raises(TuneError, match="SLEEPING"):
        ExperimentAnalysis(str(tmp_path))


def test_bad_default_mode(experiment):
    with pytest.raises(ValueError, match="default_mode"):
        ExperimentAnalysis(str(experiment), default_mode="avg")


def test_only_default_mode_uses_anonymous_metric(experiment):
    analysis = ExperimentAnalysis(str(experiment), default_mode="max")
    assert analysis.default_metric == "_metric"
    assert analysis.default_mode == "max"


def test_defaults_come_from_runner_data(experiment):
    analysis = ExperimentAnalysis(str(experiment))
    assert (analysis.default_metric, analysis.default_mode) == ("loss", "min")


def test_explicit_defaults_win_over_runner_data(experiment):
    analysis = ExperimentAnalysis(str(experiment), default_metric="info/acc", default_mode="max")
    assert (analysis.default_metric, analysis.default_mode) == ("info/acc", "max")


def test_string_encoded_checkpoints_are_accepted(tmp_path):
    logdir = write_trial_dir(tmp_path, "t1", {"a": 1}, [{"loss": 1.0}])
    entry = trial_state("t1", logdir, {"a": 1}, [{"loss": 1.0}])
    write_state(tmp_path, [json.dumps(entry)])
    assert ExperimentAnalysis(str(tmp_path)).trials[0].trial_id == "t1"


def test_live_trials_are_used_as_given(tmp_path):
    logdir = write_trial_dir(tmp_path, "live", {"a": 1}, [{"loss": 1.0}])
    trial = Trial("train", config={"a": 1}, trial_id="live", logdir=logdir)
    trial.update_metric_analysis({"loss": 1.0})
    analysis = ExperimentAnalysis(str(tmp_path), trials=[trial])  # no state file yet
    assert analysis.trials == [trial]
    assert analysis.get_best_trial("loss", "min") is trial
    assert analysis.stats() is None


def test_moved_experiment_relocates_logdirs(tmp_path):
    exp_dir = tmp_path / "moved"
    exp_dir.mkdir()
    logdir = write_trial_dir(exp_dir, "t1", {"a": 1}, [{"loss": 1.0}])
    stale = os.path.join("/nonexistent/old_place", os.path.basename(logdir))
    write_state(exp_dir, [trial_state("t1", stale, {"a": 1}, [{"loss": 1.0}])])
    analysis = ExperimentAnalysis(str(exp_dir))
    assert analysis.trials[0].logdir == logdir
    assert list(analysis.trial_dataframes) == [logdir]


def test_state_without_metric_analysis_is_rebuilt_from_result_json(tmp_path):
    results = [{"loss": 4.0}, {"loss": 2.0}]
    logdir = write_trial_dir(tmp_path, "t1", {"a": 1}, results)
    entry = trial_state("t1", logdir, {"a": 1}, results)
    del entry["metric_analysis"], entry["last_result"], entry["config"]
    write_state(tmp_path, [entry])
    trial = ExperimentAnalysis(str(tmp_path)).trials[0]
    assert trial.metric_analysis["loss"]["avg"] == 3.0
    assert trial.last_result["loss"] == 2.0
    assert trial.config == {"a": 1}


# ---- no state file: walking the directory ------------------------------------------


def test_without_state_file_trials_come_from_trial_dirs(tmp_path):
    write_trial_dir(tmp_path, "a", {"x": 1}, [{"loss": 2.0}, {"loss": 1.0}])
    bad = write_trial_dir(tmp_path, "b", {"x": 2}, [{"loss": 0.5}])
    (tmp_path / os.path.basename(bad) / "error.txt").write_text("Failure # 1")
    analysis = ExperimentAnalysis(str(tmp_path))
    trials = {t.trial_id: t for t in analysis.trials}
    assert set(trials) == {"a", "b"}
    assert trials["a"].status == TrialStatus.TERMINATED
    assert trials["b"].status == TrialStatus.ERROR
    assert trials["a"].trainable_name == "train"
    assert trials["a"].config == {"x": 1}
    assert trials["a"].metric_analysis["loss"]["min"] == 1.0
    assert analysis.get_best_trial("loss", "min").trial_id == "b"
    assert analysis.stats() is None and analysis.runner_data() is None


def test_trial_dir_with_only_progress_csv(tmp_path):
    write_trial_dir(tmp_path, "a", {"x": 1}, [{"loss": 2.0, "m": {"n": 1}}], result_json=False)
    trial = ExperimentAnalysis(str(tmp_path)).trials[0]
    assert trial.last_result["m"] == {"n": 1}
    assert trial.metric_analysis["loss"]["last"] == 2.0
    assert trial.config == {"x": 1}


def test_torn_last_line_of_result_json_is_skipped(tmp_path):
    logdir = write_trial_dir(
        tmp_path, "a", {"x": 1}, [{"loss": 2.0}, {"loss": 1.0}], progress=False
    )
    with open(os.path.join(logdir, "result.json"), "a") as f:
        f.write('{"loss": 0.0, "trial_')
    analysis = ExperimentAnalysis(str(tmp_path))
    trial = analysis.trials[0]
    assert trial.results_recorded == 2
    assert trial.last_result["loss"] == 1.0
    assert list(analysis.trial_dataframes[logdir]["loss"]) == [2.0, 1.0]


def test_torn_last_line_of_progress_csv_is_skipped(experiment):
    analysis = ExperimentAnalysis(str(experiment))
    logdir = logdir_of(analysis, "t1")
    with open(os.path.join(logdir, "progress.csv"), "a") as f:
        f.write("9.0,0.")
    assert list(analysis.trial_dataframes[logdir]["loss"]) == LOSSES["t1"]


# ---- get_best_trial and scopes ---------------------------------------------------------

SCOPED = {
    # trial: (max, min, avg, last, last-5-avg, last-10-avg)
    "s1": (9.0, 0.1, 5.0, 4.0, 6.0, 7.0),
    "s2": (8.0, 1.0, 2.0, 3.0, 1.0, 6.0),
    "s3": (20.0, 2.0, 3.0, 1.0, 2.0, 0.5),
}


@pytest.fixture
def scoped(tmp_path):
    keys = ("max", "min", "avg", "last", "last-5-avg", "last-10-avg")
    entries = []
    for tid, values in SCOPED.items():
        entry = trial_state(tid, None, {"id": tid}, [])
        entry["metric_analysis"] = {"loss": dict(zip(keys, values, strict=True))}
        entries.append(entry)
    write_state(tmp_path, entries)
    return ExperimentAnalysis(str(tmp_path))


@pytest.mark.parametrize(
    "mode, scope, expected",
    [
        ("min", "all", "s1"),
        ("min", "last", "s3"),
        ("min", "avg", "s2"),
        ("min", "last-5-avg", "s2"),
        ("min", "last-10-avg", "s3"),
        ("max", "all", "s3"),
        ("max", "last", "s1"),
        ("max", "avg", "s1"),
        ("max", "last-10-avg", "s1"),
    ],
)
def test_get_best_trial_scopes(scoped, mode, scope, expected):
    assert scoped.get_best_trial("loss", mode, scope=scope).trial_id == expected


def test_get_best_trial_default_scope_is_last(scoped):
    assert scoped.get_best_trial("loss", "min").trial_id == "s3"


def test_get_best_config_and_logdir_follow_scope(experiment):
    analysis = ExperimentAnalysis(str(experiment))
    assert analysis.get_best_config("loss", "min") == CONFIGS["t1"]
    assert analysis.get_best_config("loss", "min", scope="all") == CONFIGS["t2"]
    assert analysis.get_best_logdir("loss", "min", scope="all") == logdir_of(analysis, "t2")


def test_get_best_trial_nested_metric(experiment):
    analysis = ExperimentAnalysis(str(experiment))
    assert analysis.get_best_trial("info/acc", "max").trial_id == "t1"


def test_get_best_trial_uses_defaults(experiment):
    analysis = ExperimentAnalysis(str(experiment))
    assert analysis.get_best_trial().trial_id == "t1"


def test_get_best_trial_unknown_metric_is_none(experiment, caplog):
    analysis = ExperimentAnalysis(str(experiment))
    assert analysis.get_best_trial("nope", "min") is None
    assert "Could not find best trial" in caplog.text
    assert analysis.get_best_config("nope", "min") is None
    assert analysis.get_best_logdir("nope", "min") is None


@pytest.fixture
def with_nan(tmp_path):
    entries = []
    for tid, last in (("nan", math.nan), ("neg_inf", -math.inf), ("inf", math.inf), ("ok", 1.0)):
        entry = trial_state(tid, None, {}, [])
        entry["metric_analysis"] = {"loss": metric_stats([last])}
        entries.append(entry)
    write_state(tmp_path, entries)
    return ExperimentAnalysis(str(tmp_path))


def test_nan_and_inf_are_filtered_by_default(with_nan):
    assert with_nan.get_best_trial("loss", "min").trial_id == "ok"
    assert with_nan.get_best_trial("loss", "max").trial_id == "ok"


def test_nan_and_inf_kept_when_not_filtered(with_nan):
    assert with_nan.get_best_trial("loss", "min", filter_nan_and_inf=False).trial_id == "neg_inf"
    assert with_nan.get_best_trial("loss", "max", filter_nan_and_inf=False).trial_id == "inf"


def test_get_best_trial_errors(tmp_path):
    write_state(tmp_path, [trial_state("t1", None, {}, [])])
    analysis = ExperimentAnalysis(str(tmp_path))
    with pytest.raises(ValueError, match="scope"):
        analysis.get_best_trial("loss", "min", scope="first")
    with pytest.raises(ValueError, match="mode"):
        analysis.get_best_trial("loss", "avg")
    with pytest.raises(ValueError, match="No `metric`"):
        analysis.get_best_trial(mode="min")
    with pytest.raises(ValueError, match="No `mode`"):
        analysis.get_best_trial("loss")


# ---- best_* properties -------------------------------------------------------------------


def test_best_properties(experiment):
    analysis = ExperimentAnalysis(str(experiment))
    best_logdir = logdir_of(analysis, "t1")
    assert analysis.best_trial.trial_id == "t1"
    assert analysis.best_config == CONFIGS["t1"]
    assert analysis.best_logdir == best_logdir
    assert analysis.best_result["loss"] == 1.0
    assert list(analysis.best_dataframe["loss"]) == LOSSES["t1"]
    df = analysis.best_result_df
    assert list(df.index) == ["t1"]
    assert df.loc["t1", "config.model.depth"] == 1
    assert df.loc["t1", "info.acc"] == pytest.approx(0.9)


@pytest.mark.parametrize(
    "prop",
    ["best_trial", "best_config", "best_logdir", "best_result", "best_dataframe", "best_result_df"],
)
def test_best_properties_need_defaults(tmp_path, prop):
    write_state(tmp_path, [trial_state("t1", None, {}, [{"loss": 1.0}])])
    analysis = ExperimentAnalysis(str(tmp_path))
    with pytest.raises(ValueError, match=f"To fetch the `{prop}`"):
        getattr(analysis, prop)


def test_best_properties_none_when_metric_never_reported(experiment):
    analysis = ExperimentAnalysis(str(experiment), default_metric="nope", default_mode="min")
    assert analysis.best_trial is None
    assert analysis.best_config is None
    assert analysis.best_result is None
    assert analysis.best_dataframe is None
    assert analysis.best_result_df is None


# ---- results and dataframes ----------------------------------------------------------------


def test_results(experiment):
    results = ExperimentAnalysis(str(experiment)).results
    assert set(results) == {"t1", "t2", "t3"}
    assert results["t2"]["loss"] == 2.0


def test_results_df(experiment):
    df = ExperimentAnalysis(str(experiment)).results_df
    assert df.index.name == "trial_id"
    assert sorted(df.index) == ["t1", "t2", "t3"]
    assert df.loc["t3", "loss"] == 1.5
    assert df.loc["t2", "config.lr"] == 0.2
    assert df.loc["t2", "config.model.depth"] == 2


def test_results_df_includes_trials_without_results(tmp_path):
    write_state(
        tmp_path,
        [
            trial_state("t1", None, {}, [{"loss": 1.0}]),
            trial_state("pending", None, {}, [], status="PENDING"),
        ],
    )
    df = ExperimentAnalysis(str(tmp_path)).results_df
    assert sorted(df.index) == ["pending", "t1"]
    assert math.isnan(df.loc["pending", "loss"])


def test_dataframe_last_rows_with_config_and_logdir(experiment):
    analysis = ExperimentAnalysis(str(experiment))
    df = analysis.dataframe().set_index("trial_id")
    assert df.loc["t2", "loss"] == 2.0
    assert df.loc["t2", "training_iteration"] == 3
    assert df.loc["t2", "config/lr"] == 0.2
    assert df.loc["t2", "config/model"] == {"depth": 2}  # 1.x: top-level keys only
    assert "config/model/depth" not in df.columns
    assert df.loc["t2", "info/acc"] == pytest.approx(0.8)
    assert df.loc["t2", "logdir"] == logdir_of(analysis, "t2")


def test_dataframe_best_rows(experiment):
    df = ExperimentAnalysis(str(experiment)).dataframe("loss", "max").set_index("trial_id")
    assert df.loc["t1", "loss"] == 3.0
    assert df.loc["t2", "loss"] == 2.5
    assert df.loc["t2", "training_iteration"] == 2


def test_dataframe_ignores_default_metric_and_mode(experiment):
    # default metric/mode are loss/min, but without arguments you get last rows
    df = ExperimentAnalysis(str(experiment)).dataframe().set_index("trial_id")
    assert df.loc["t2", "loss"] == 2.0


def test_dataframe_errors(experiment):
    analysis = ExperimentAnalysis(str(experiment))
    with pytest.raises(ValueError, match="also have to pass a `metric`"):
        analysis.dataframe(mode="min")
    with pytest.raises(ValueError, match="mode"):
        analysis.dataframe("loss", "best")
    with pytest.raises(ValueError, match="'nope' is not in any trial"):
        analysis.dataframe("nope", "min")


def test_dataframe_skips_trials_with_only_nan(tmp_path):
    keep = write_trial_dir(tmp_path, "a", {}, [{"loss": 1.0}])
    write_trial_dir(tmp_path, "b", {}, [{"loss": math.nan}])
    df = Analysis(str(tmp_path)).dataframe("loss", "min")
    assert list(df["logdir"]) == [keep]


def test_trial_dataframes_are_lazy_and_cached(experiment):
    analysis = ExperimentAnalysis(str(experiment))
    logdir = logdir_of(analysis, "t1")
    progress = os.path.join(logdir, "progress.csv")
    # Written after construction: seen, because nothing was read yet.
    with open(progress, "a") as f:
        f.write("0.25,0.975,t1,4\n")
    assert list(analysis.trial_dataframes[logdir]["loss"]) == LOSSES["t1"] + [0.25]
    with open(progress, "a") as f:
        f.write("0.125,0.9875,t1,5\n")
    assert len(analysis.trial_dataframes[logdir]) == 4  # cached
    assert len(analysis.fetch_trial_dataframes()[logdir]) == 5  # refreshed
    assert len(analysis.trial_dataframes[logdir]) == 5


def test_trial_dataframes_keys_and_columns(experiment):
    analysis = ExperimentAnalysis(str(experiment))
    frames = analysis.trial_dataframes
    assert set(frames) == {t.logdir for t in analysis.trials}
    df = frames[logdir_of(analysis, "t3")]
    assert list(df["loss"]) == LOSSES["t3"]
    assert "config" not in df.columns and "info/acc" in df.columns


def test_trial_dataframes_from_result_json_when_no_progress_csv(tmp_path):
    logdir = write_trial_dir(
        tmp_path, "a", {"x": 1}, [{"loss": 2.0, "m": {"n": 3}}], progress=False
    )
    df = ExperimentAnalysis(str(tmp_path)).trial_dataframes[logdir]
    assert df.loc[0, "m/n"] == 3
    assert "config" not in df.columns


def test_get_all_configs(experiment):
    analysis = ExperimentAnalysis(str(experiment))
    logdir = logdir_of(analysis, "t1")
    assert analysis.get_all_configs()[logdir] == CONFIGS["t1"]
    prefixed = analysis.get_all_configs(prefix=True)[logdir]
    assert prefixed == {"config/lr": 0.1, "config/model": {"depth": 1}}
    # prefix=True does not leak into later calls
    assert analysis.get_all_configs()[logdir] == CONFIGS["t1"]


def test_stats_and_runner_data(experiment):
    analysis = ExperimentAnalysis(str(experiment))
    assert analysis.stats() == {"start_time": 1.0, "timestamp": 2.0}
    assert analysis.runner_data()["name"] == "exp"


# ---- Analysis (directory only) ------------------------------------------------------------


def test_analysis_reads_trial_dirs(experiment):
    analysis = Analysis(str(experiment), default_metric="loss", default_mode="min")
    assert len(analysis.trial_dataframes) == 3
    # Analysis picks the best row ever: t2 reached 0.5 at its first step.
    assert analysis.get_best_config() == CONFIGS["t2"]
    assert os.path.basename(analysis.get_best_logdir("loss", "max")).startswith("train_t3")
    assert len(analysis.get_all_configs()) == 3


def test_analysis_errors(tmp_path):
    with pytest.raises(ValueError, match="not a valid directory"):
        Analysis(str(tmp_path / "nope"))
    with pytest.raises(TuneError, match="No trials found"):
        Analysis(str(tmp_path))
    write_trial_dir(tmp_path, "a", {}, [{"loss": 1.0}])
    with pytest.raises(ValueError, match="No `metric`"):
        Analysis(str(tmp_path)).get_best_config()


def test_experiment_analysis_is_an_analysis(experiment):
    assert isinstance(ExperimentAnalysis(str(experiment)), Analysis)


def test_unfiltered_nan_is_best_only_when_all_are_nan(tmp_path):
    entry = trial_state("only_nan", None, {}, [])
    entry["metric_analysis"] = {"loss": metric_stats([math.nan])}
    write_state(tmp_path, [entry])
    analysis = ExperimentAnalysis(str(tmp_path))
    assert analysis.get_best_trial("loss", "min", filter_nan_and_inf=False).trial_id == "only_nan"
    assert analysis.get_best_trial("loss", "min") is None


# ---- checkpoints -------------------------------------------------------------------------


def add_checkpoint(logdir: str, iteration: int, *, dir_path: bool = False) -> str:
    """A checkpoint directory as ``Trainable.save`` (or ``tune.checkpoint_dir``) leaves it."""
    import pickle

    ckpt_dir = os.path.join(logdir, f"checkpoint_{iteration:06d}")
    os.makedirs(ckpt_dir)
    open(os.path.join(ckpt_dir, ".is_checkpoint"), "a").close()
    path = ckpt_dir if dir_path else os.path.join(ckpt_dir, "checkpoint")
    if not dir_path:
        with open(path, "wb") as f:
            pickle.dump({"it": iteration}, f)
    meta = os.path.join(path, ".tune_metadata") if dir_path else path + ".tune_metadata"
    with open(meta, "wb") as f:
        pickle.dump({"iteration": iteration, "time_total": 1.0}, f)
    return path


def test_checkpoints_paths_from_live_trial_manager(tmp_path):
    from tune_async.checkpoint import Checkpoint, CheckpointManager

    logdir = write_trial_dir(tmp_path, "live", {}, [{"loss": 3.0}, {"loss": 1.0}, {"loss": 2.0}])
    manager = CheckpointManager(keep_checkpoints_num=2, checkpoint_score_attr="min-loss")
    for i, loss in enumerate([3.0, 1.0, 2.0], start=1):
        path = add_checkpoint(logdir, i)
        result = {"training_iteration": i, "loss": loss, "info": {"acc": i / 10}}
        manager.on_checkpoint(Checkpoint(path=path, iteration=i, result=result))
    trial = Trial("train", trial_id="live", logdir=logdir)
    trial.extra["checkpoint_manager"] = manager
    analysis = ExperimentAnalysis(str(tmp_path), trials=[trial], default_metric="loss")
    paths = analysis.get_trial_checkpoints_paths(trial)
    ckpt = os.path.join(logdir, "checkpoint_{:06d}", "checkpoint").format
    assert paths == [(ckpt(2), 1.0), (ckpt(3), 2.0)]  # 1 was deleted: worst of three
    assert analysis.get_trial_checkpoints_paths(trial, "info/acc") == [
        (ckpt(2), 0.2),
        (ckpt(3), 0.3),
    ]
    assert analysis.get_trial_checkpoints_paths(trial, "missing") == [
        (ckpt(2), None),
        (ckpt(3), None),
    ]
    assert analysis.get_best_checkpoint(trial, mode="min") == ckpt(2)
    assert analysis.get_best_checkpoint(trial, "training_iteration", "max") == ckpt(3)


def test_checkpoints_paths_from_logdir_join_progress(experiment):
    analysis = ExperimentAnalysis(str(experiment))
    logdir = logdir_of(analysis, "t2")  # losses 0.5, 2.5, 2.0
    paths = [add_checkpoint(logdir, i) for i in (1, 2, 3)]
    assert analysis.get_trial_checkpoints_paths(logdir) == list(
        zip(paths, [0.5, 2.5, 2.0], strict=True)
    )
    assert analysis.get_trial_checkpoints_paths(logdir, "training_iteration") == list(
        zip(paths, [1, 2, 3], strict=True)
    )
    assert analysis.get_trial_checkpoints_paths(logdir, "info/acc")[0][1] == pytest.approx(0.95)
    assert analysis.get_best_checkpoint(logdir) == paths[0]  # default metric/mode: loss, min
    assert analysis.get_best_checkpoint(logdir, mode="max") == paths[1]


def test_checkpoints_paths_of_trial_without_manager_come_from_disk(experiment):
    analysis = ExperimentAnalysis(str(experiment))
    trial = next(t for t in analysis.trials if t.trial_id == "t1")
    assert "checkpoint_manager" not in trial.extra
    path = add_checkpoint(trial.logdir, 2, dir_path=True)  # a function trainable's dir
    assert analysis.get_trial_checkpoints_paths(trial) == [(path, 2.0)]


def test_checkpoints_from_state_file(experiment):
    from tune_async.checkpoint import Checkpoint, CheckpointManager

    state_file = next(experiment.glob("experiment_state-*.json"))
    state = json.loads(state_file.read_text())
    for entry in state["checkpoints"]:
        losses = LOSSES[entry["trial_id"]]
        entry["checkpoints"] = [
            Checkpoint(
                path=add_checkpoint(entry["logdir"], i),
                iteration=i,
                result={"training_iteration": i, "loss": losses[i - 1]},
            ).to_json()
            for i in (1, 3)
        ]
    state_file.write_text(json.dumps(state))
    analysis = ExperimentAnalysis(str(experiment))
    t1 = next(t for t in analysis.trials if t.trial_id == "t1")
    manager = t1.extra["checkpoint_manager"]
    assert isinstance(manager, CheckpointManager)
    assert [c.iteration for c in manager.checkpoints] == [1, 3]
    best = os.path.join(t1.logdir, "checkpoint_000003", "checkpoint")
    assert analysis.get_trial_checkpoints_paths(t1)[-1] == (best, 1.0)
    assert analysis.best_checkpoint == best  # best trial t1 (loss min), its best checkpoint


def test_checkpoints_follow_a_moved_experiment(tmp_path):
    from tune_async.checkpoint import Checkpoint

    exp_dir = tmp_path / "moved"
    exp_dir.mkdir()
    logdir = write_trial_dir(exp_dir, "t1", {"a": 1}, [{"loss": 1.0}])
    path = add_checkpoint(logdir, 1)
    old_logdir = os.path.join("/nonexistent/old_place", os.path.basename(logdir))
    old_path = os.path.join(old_logdir, "checkpoint_000001", "checkpoint")
    entry = trial_state("t1", old_logdir, {"a": 1}, [{"loss": 1.0}])
    entry["checkpoints"] = [Checkpoint(path=old_path, iteration=1).to_json()]
    write_state(exp_dir, [entry])
    analysis = ExperimentAnalysis(str(exp_dir))
    trial = analysis.trials[0]
    assert analysis.get_trial_checkpoints_paths(trial) == [(path, 1)]
    assert trial.extra["checkpoint_manager"].newest_checkpoint.dir == os.path.dirname(path)


def test_get_best_checkpoint_none_when_no_checkpoints(experiment, caplog):
    analysis = ExperimentAnalysis(str(experiment))
    trial = analysis.trials[0]
    with caplog.at_level("ERROR"):
        assert analysis.get_best_checkpoint(trial) is None
    assert "No checkpoints" in caplog.text
    assert analysis.get_trial_checkpoints_paths(trial) == []
    assert analysis.best_checkpoint is None


def test_get_best_checkpoint_none_when_metric_not_numeric(experiment, caplog):
    analysis = ExperimentAnalysis(str(experiment))
    logdir = logdir_of(analysis, "t1")
    add_checkpoint(logdir, 1)
    with caplog.at_level("ERROR"):
        assert analysis.get_best_checkpoint(logdir, "nope", "max") is None
    assert "nope" in caplog.text


def test_checkpoint_methods_errors(experiment, tmp_path):
    analysis = ExperimentAnalysis(str(experiment))
    with pytest.raises(ValueError, match="`trial`"):
        analysis.get_trial_checkpoints_paths(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="`trial`"):
        analysis.get_trial_checkpoints_paths(42)
    no_defaults = ExperimentAnalysis(str(experiment), default_metric="loss")
    no_defaults.default_mode = None
    with pytest.raises(ValueError, match="mode"):
        no_defaults.get_best_checkpoint(logdir_of(analysis, "t1"))
    write_state(tmp_path, [trial_state("t1", None, {}, [{"loss": 1.0}])])
    with pytest.raises(ValueError, match="To fetch the `best_checkpoint`"):
        _ = ExperimentAnalysis(str(tmp_path)).best_checkpoint


def test_analysis_base_class_checkpoints(experiment):
    analysis = Analysis(str(experiment), default_metric="loss", default_mode="min")
    logdir = ExperimentAnalysis(str(experiment)).get_best_logdir()
    paths = [add_checkpoint(logdir, i) for i in (1, 2)]
    assert analysis.get_trial_checkpoints_paths(logdir) == [(paths[0], 3.0), (paths[1], 2.0)]
    assert analysis.get_best_checkpoint(logdir) == paths[1]


def test_empty_manager_falls_back_to_disk(experiment):
    from tune_async.checkpoint import CheckpointManager

    analysis = ExperimentAnalysis(str(experiment))
    trial = next(t for t in analysis.trials if t.trial_id == "t3")  # losses 4.0, 3.0, 1.5
    trial.extra["checkpoint_manager"] = CheckpointManager()
    path = add_checkpoint(trial.logdir, 3)
    assert analysis.get_trial_checkpoints_paths(trial) == [(path, 1.5)]
