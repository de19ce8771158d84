"""The ray.tune 1.x surface that scripts rely on (issue #6, section 6).

One table lists every 1.x module path and name tune_async supports; the other
tests check the 1.x behaviours behind a few of them: ``Trial`` status
constants, ``trial.checkpoint.value``, ``timesteps_total``/``episodes_total``
in every result, pinned objects and ``validate_save_restore``.
"""

from __future__ import annotations

import csv
import importlib
import json
import logging
import os

import pytest

import tune_async as tune
from tests.scripted_executor import ScriptedExecutor
from tune_async.checkpoint import Checkpoint
from tune_async.trial import Trial, TrialStatus

# ray.tune 1.x module path -> the names 1.x code imports from it (``ray.tune`` -> ``tune_async``).
SUPPORTED = {
    "": [
        "run", "run_experiments", "Experiment", "with_parameters", "SyncConfig", "Trainable",
        "Callback", "TuneError", "grid_search", "register_env", "register_trainable",
        "Stopper", "EarlyStopping", "function", "sample_from", "uniform", "quniform",
        "choice", "randint", "lograndint", "qrandint", "qlograndint", "randn", "qrandn",
        "loguniform", "qloguniform", "ExperimentAnalysis", "Analysis", "CLIReporter",
        "JupyterNotebookReporter", "ProgressReporter", "report", "get_trial_dir",
        "get_trial_name", "get_trial_id", "make_checkpoint_dir", "save_checkpoint",
        "is_session_enabled", "checkpoint_dir", "PlacementGroupFactory",
    ],
    "analysis": ["ExperimentAnalysis", "Analysis"],
    "analysis.experiment_analysis": ["ExperimentAnalysis", "Analysis"],
    "callback": ["Callback"],
    "checkpoint_manager": ["Checkpoint", "CheckpointManager"],
    "error": ["TuneError", "AbortTrialExecution"],
    "experiment": ["Experiment", "convert_to_experiment_list"],
    "function_runner": ["FunctionRunner", "wrap_function", "with_parameters"],
    "logger": [
        "Logger", "NoopLogger", "JsonLogger", "CSVLogger", "TBXLogger", "UnifiedLogger",
        "LoggerCallback", "LegacyLoggerCallback", "JsonLoggerCallback", "CSVLoggerCallback",
        "TBXLoggerCallback", "DEFAULT_LOGGERS", "pretty_print",
    ],
    "progress_reporter": [
        "ProgressReporter", "TuneReporterBase", "CLIReporter", "JupyterNotebookReporter",
        "TrialProgressCallback", "detect_reporter", "trial_progress_str", "trial_errors_str",
        "memory_debug_str", "best_trial_str",
    ],
    "registry": ["register_trainable", "register_env", "get_trainable_cls"],
    "resources": ["Resources"],
    "result": [
        "TRAINING_ITERATION", "TIME_THIS_ITER_S", "TIME_TOTAL_S", "TIMESTEPS_TOTAL",
        "TIMESTEPS_THIS_ITER", "EPISODES_TOTAL", "EPISODES_THIS_ITER", "DONE", "TRIAL_ID",
        "EXPERIMENT_TAG", "NODE_IP", "HOSTNAME", "PID", "DEFAULT_METRIC", "MEAN_LOSS",
        "MEAN_ACCURACY", "EPISODE_REWARD_MEAN", "SHOULD_CHECKPOINT", "EXPR_PARAM_FILE",
        "EXPR_PARAM_PICKLE_FILE", "EXPR_PROGRESS_FILE", "EXPR_RESULT_FILE",
    ],
    "sample": [
        "Domain", "Float", "Integer", "Categorical", "Function", "Sampler", "BaseSampler",
        "Uniform", "LogUniform", "Normal", "Grid", "Quantized", "sample_from", "uniform",
        "quniform", "loguniform", "qloguniform", "randn", "qrandn", "randint", "qrandint",
        "lograndint", "qlograndint", "choice", "grid_search", "function",
    ],
    "schedulers": ["TrialScheduler", "FIFOScheduler"],
    "schedulers.trial_scheduler": ["TrialScheduler", "FIFOScheduler"],
    "session": [
        "report", "get_trial_dir", "get_trial_name", "get_trial_id", "checkpoint_dir",
        "is_session_enabled", "make_checkpoint_dir", "save_checkpoint",
    ],
    "stopper": [
        "Stopper", "CombinedStopper", "FunctionStopper", "NoopStopper",
        "MaximumIterationStopper", "ExperimentPlateauStopper", "EarlyStopping",
        "TrialPlateauStopper", "TimeoutStopper",
    ],
    "suggest": [
        "SearchAlgorithm", "Searcher", "BasicVariantGenerator", "SearchGenerator",
        "ConcurrencyLimiter", "Repeater", "grid_search",
    ],
    "suggest.basic_variant": ["BasicVariantGenerator"],
    "suggest.repeater": ["Repeater"],
    "suggest.search": ["SearchAlgorithm"],
    "suggest.search_generator": ["SearchGenerator"],
    "suggest.suggestion": ["Searcher", "ConcurrencyLimiter"],
    "suggest.variant_generator": [
        "generate_variants", "grid_search", "format_vars", "count_variants",
        "flatten_resolved_vars", "has_unresolved_values", "RecursiveDependencyError",
    ],
    "syncer": ["SyncConfig"],
    "trainable": ["Trainable"],
    "trial": ["Trial"],
    "tune": ["run", "run_experiments"],
    "utils": [
        "deep_update", "date_str", "find_free_port", "flatten_dict", "force_on_current_node",
        "get_pinned_object", "merge_dicts", "pin_in_object_store", "unflattened_lookup",
        "validate_save_restore", "warn_if_slow", "detect_checkpoint_function",
        "detect_reporter", "detect_config_single",
    ],
    "utils.log": ["Verbosity"],
    "utils.placement_groups": ["PlacementGroupFactory"],
    "utils.trainable": ["with_parameters"],
    "utils.util": [
        "deep_update", "date_str", "flatten_dict", "unflatten_dict", "get_pinned_object",
        "merge_dicts", "pin_in_object_store", "unflattened_lookup", "validate_save_restore",
        "warn_if_slow",
    ],
}


@pytest.mark.parametrize("path", sorted(SUPPORTED))
def test_1x_module_path_imports_with_its_names(path):
    module = importlib.import_module("tune_async" + (f".{path}" if path else ""))
    missing = [name for name in SUPPORTED[path] if not hasattr(module, name)]
    assert missing == [], f"ray.tune.{path} names missing from tune_async.{path}"


@pytest.mark.parametrize("path", sorted(p for p in SUPPORTED if p))
def test_1x_module_is_an_attribute_after_import_tune(path):
    # 1.x: `from ray import tune; tune.sample.Float` works without importing the submodule.
    node = tune
    for piece in path.split("."):
        node = getattr(node, piece)
    assert node is importlib.import_module(f"tune_async.{path}")


def test_reexports_are_the_same_objects():
    assert tune.session.report is tune.report
    assert tune.suggest.grid_search is tune.grid_search
    assert tune.suggest.variant_generator.grid_search is tune.grid_search
    assert tune.function_runner.with_parameters is tune.with_parameters
    assert tune.progress_reporter.CLIReporter is tune.CLIReporter
    assert tune.tune.run is tune.run
    assert tune.sample.Float(0.0, 1.0).uniform().sample() <= 1.0


# ---- Trial status constants -------------------------------------------------------------------
def test_trial_status_constants_equal_the_statuses():
    for status in TrialStatus:
        assert getattr(Trial, status.value) == status == status.value


def three_steps(config):
    for i in range(3):
        tune.report(loss=float(i))


class StatusSpy(tune.Callback):
    """Records what plugins see: the constants work on the TrialViews they get."""

    def __init__(self):
        self.seen = []

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.seen.append(trial.status == trial.RUNNING == Trial.RUNNING)


def test_status_constants_on_trials_and_views(tmp_path):
    spy = StatusSpy()
    analysis = tune.run(three_steps, trial_executor=ScriptedExecutor(), verbose=0,
                        local_dir=str(tmp_path), callbacks=[spy])
    assert [t.status == Trial.TERMINATED for t in analysis.trials] == [True]
    assert spy.seen == [True] * 3


# ---- trial.checkpoint.value -------------------------------------------------------------------
def test_checkpoint_value_is_the_path_or_the_bytes():
    on_disk = Checkpoint(path="/r/exp/trial/checkpoint_000003/model.pt", iteration=3)
    assert on_disk.value == "/r/exp/trial/checkpoint_000003/model.pt"
    on_disk.path = "/moved/trial/checkpoint_000003/model.pt"  # e.g. a relocated experiment
    assert on_disk.value == on_disk.path
    assert Checkpoint.memory(b"state", iteration=2).value == b"state"


class Counter(tune.Trainable):
    def setup(self, config):
        self.count = 0

    def step(self):
        self.count += 1
        return {"count": self.count}

    def save_checkpoint(self, checkpoint_dir):
        path = os.path.join(checkpoint_dir, "count.json")
        with open(path, "w") as f:
            json.dump(self.count, f)
        return path

    def load_checkpoint(self, checkpoint):
        with open(checkpoint) as f:
            self.count = json.load(f)


def test_checkpoint_value_restores_a_new_run(tmp_path):
    # The 1.x idiom: tune.run(..., restore=analysis.trials[0].checkpoint.value)
    first = tune.run(Counter, trial_executor=ScriptedExecutor(), verbose=0, name="first",
                     local_dir=str(tmp_path), stop={"training_iteration": 3},
                     checkpoint_at_end=True)
    value = first.trials[0].checkpoint.value
    assert isinstance(value, str) and os.path.isfile(value)
    second = tune.run(Counter, trial_executor=ScriptedExecutor(), verbose=0, name="second",
                      local_dir=str(tmp_path), stop={"training_iteration": 5}, restore=value)
    assert second.trials[0].last_result["count"] == 5


# ---- timesteps_total / episodes_total ---------------------------------------------------------
def with_timesteps(config):
    for _ in range(3):
        tune.report(loss=1.0, timesteps_this_iter=10, episodes_this_iter=2)


def read_result_json(trial):
    with open(os.path.join(trial.logdir, "result.json")) as f:
        return [json.loads(line) for line in f]


def read_progress_csv(trial):
    with open(os.path.join(trial.logdir, "progress.csv"), newline="") as f:
        return list(csv.DictReader(f))


def test_totals_are_none_when_never_reported_and_files_still_work(tmp_path):
    analysis = tune.run(three_steps, trial_executor=ScriptedExecutor(), verbose=0,
                        local_dir=str(tmp_path), metric="loss", mode="min")
    (trial,) = analysis.trials
    assert trial.last_result["timesteps_total"] is None
    assert trial.last_result["episodes_total"] is None
    lines = read_result_json(trial)
    assert [(r["timesteps_total"], r["episodes_total"]) for r in lines] == [(None, None)] * 3
    rows = read_progress_csv(trial)
    assert [(r["timesteps_total"], r["episodes_total"]) for r in rows] == [("", "")] * 3
    frame = analysis.dataframe()
    assert frame["timesteps_total"].isna().all()
    assert analysis.get_best_trial().trial_id == trial.trial_id
    assert "timesteps_total" not in trial.metric_analysis  # None is not a metric value


def test_totals_accumulate_when_reported(tmp_path):
    analysis = tune.run(with_timesteps, trial_executor=ScriptedExecutor(), verbose=0,
                        local_dir=str(tmp_path))
    lines = read_result_json(analysis.trials[0])
    assert [r["timesteps_total"] for r in lines] == [10, 20, 30]
    assert [r["episodes_total"] for r in lines] == [2, 4, 6]


def test_a_total_the_trainable_reports_wins(tmp_path):
    def own_total(config):
        tune.report(timesteps_total=7, episodes_total=1)

    analysis = tune.run(own_total, trial_executor=ScriptedExecutor(), verbose=0,
                        local_dir=str(tmp_path))
    result = analysis.trials[0].last_result
    assert (result["timesteps_total"], result["episodes_total"]) == (7, 1)


def test_class_trainable_results_carry_the_totals():
    counter = Counter()
    try:
        result = counter.train()
        assert result["timesteps_total"] is None and result["episodes_total"] is None
    finally:
        counter.stop()


# ---- tune.utils helpers -----------------------------------------------------------------------
def test_merge_dicts_and_deep_update():
    base = {"a": 1, "b": {"c": 2, "d": 3}}
    assert tune.utils.merge_dicts(base, {"b": {"c": 5}, "e": 6}) == {
        "a": 1, "b": {"c": 5, "d": 3}, "e": 6}
    assert base == {"a": 1, "b": {"c": 2, "d": 3}}  # merge_dicts copies
    with pytest.raises(ValueError, match="Unknown config parameter `x`"):
        tune.utils.deep_update({"a": 1}, {"x": 2})
    updated = tune.utils.deep_update({"m": {"type": "A", "k": 1}}, {"m": {"type": "B"}},
                                     override_all_if_type_changes=["m"])
    assert updated == {"m": {"type": "B"}}


def test_unflattened_lookup():
    data = {"a": [{"b": 3}], "x/y": 1}
    assert tune.utils.unflattened_lookup("a/0/b", data) == 3
    assert tune.utils.unflattened_lookup("x/y", data) == 1
    assert tune.utils.unflattened_lookup("a/1/b", data, default=None) is None
    with pytest.raises(KeyError):
        tune.utils.unflattened_lookup("a/0/c", data)


def test_signature_detection():
    def with_checkpoint(config, checkpoint_dir=None):
        pass

    def legacy(config, reporter):
        pass

    assert tune.utils.detect_checkpoint_function(with_checkpoint)
    assert not tune.utils.detect_checkpoint_function(three_steps)
    with pytest.raises(ValueError, match="checkpoint_dir"):
        tune.utils.detect_checkpoint_function(three_steps, abort=True)
    assert tune.utils.detect_reporter(legacy) and not tune.utils.detect_reporter(three_steps)
    assert tune.utils.detect_config_single(three_steps)


def test_warn_if_slow(caplog):
    with caplog.at_level(logging.WARNING), tune.utils.warn_if_slow("fast", threshold=60):
        pass
    assert "fast" not in caplog.text
    with caplog.at_level(logging.WARNING), tune.utils.warn_if_slow("slow", threshold=1e-9):
        sum(range(1000))
    assert "`slow` operation took" in caplog.text


def test_get_pinned_object_refuses_other_strings():
    with pytest.raises(ValueError, match="pinned_id"):
        tune.utils.get_pinned_object("not-an-id")


# ---- on Ray: pinned objects and validate_save_restore ----------------------------------------
@pytest.mark.ray
def test_pinned_object_reaches_the_trials(results_dir):
    pinned = tune.utils.pin_in_object_store({"weights": [1.0, 2.0, 3.0]})
    assert isinstance(pinned, str)
    assert tune.utils.get_pinned_object(pinned) == {"weights": [1.0, 2.0, 3.0]}

    def train(config):
        data = tune.utils.get_pinned_object(config["data"])
        tune.report(total=sum(data["weights"]), pid=os.getpid())

    analysis = tune.run(train, config={"data": pinned}, verbose=0, local_dir=results_dir)
    result = analysis.trials[0].last_result
    assert result["total"] == 6.0 and result["pid"] != os.getpid()  # read in the actor


@pytest.mark.ray
@pytest.mark.parametrize("use_object_store", [False, True])
def test_validate_save_restore(ray_session, use_object_store):
    assert tune.utils.validate_save_restore(Counter, use_object_store=use_object_store)
    assert tune.utils.util.validate_save_restore is tune.utils.validate_save_restore


def test_validate_save_restore_refuses_a_non_trainable():
    with pytest.raises(TypeError, match="trainable_cls"):
        tune.utils.validate_save_restore(dict)


@pytest.mark.ray
def test_force_on_current_node(ray_session):
    ray = ray_session

    @ray.remote
    def node_of_task():
        return ray.get_runtime_context().get_node_id()

    here = ray.get_runtime_context().get_node_id()
    assert ray.get(tune.utils.force_on_current_node(node_of_task).remote()) == here


def test_find_free_port():
    port = tune.utils.find_free_port()
    assert isinstance(port, int) and 0 < port < 65536
