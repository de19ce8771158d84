"""README's "1.x names and where they live" and log-record tables, made from the package.

Each row is a Ray Tune 1.x public module path with the names 1.x code imports from it
(1.3's ``__all__`` where the module had one, else its public classes and functions:
facts about 1.x, kept here as data), the tune_async module that holds them, and what
the package holds *now*: a name counts only if importing it works (modules of optional
integrations are read, not imported, so the table never depends on which extras are
installed). Regenerate after a change::

    python -m tune_async._names_table           # rewrite the tables in README.md
    python -m tune_async._names_table --check   # exit 1 if README.md is out of date
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import os
import sys
from collections.abc import Iterable

import attrs

NAMES_START, NAMES_END = "<!-- names-table:start -->", "<!-- names-table:end -->"
LOGGERS_START, LOGGERS_END = "<!-- logger-names:start -->", "<!-- logger-names:end -->"
REGENERATE = "python -m tune_async._names_table"


@attrs.frozen
class Module1x:
    """One 1.x module path: its public names, where they live here, what it needs."""

    path: str  # "ray.tune.suggest.optuna"
    names: tuple[str, ...]
    ours: str | None = None  # default: the same path under tune_async
    extra: str | None = None  # the optional extra (and library) it needs: read, not imported
    replaced_by: str | None = None  # a 1.x internal we do differently: why, and where

    @property
    def target(self) -> str:
        return self.ours or "tune_async" + self.path[len("ray.tune"):]


def _m(path: str, names: str, **kwargs: str) -> Module1x:
    return Module1x(path, tuple(names.split()), **kwargs)


_SAMPLE = ("Domain Float Integer Categorical Function Sampler BaseSampler Uniform LogUniform "
           "Normal Grid Quantized sample_from uniform quniform loguniform qloguniform randn "
           "qrandn randint qrandint lograndint qlograndint choice grid_search function")
_SESSION = ("report get_trial_dir get_trial_name get_trial_id checkpoint_dir is_session_enabled "
            "make_checkpoint_dir save_checkpoint")
_UTILS = ("deep_update date_str find_free_port flatten_dict get_pinned_object merge_dicts "
          "pin_in_object_store unflattened_lookup UtilMonitor validate_save_restore "
          "warn_if_slow diagnose_serialization detect_checkpoint_function detect_reporter "
          "detect_config_single wait_for_gpu")
_REPORT_CALLBACKS = "TuneReportCallback TuneReportCheckpointCallback"

MODULES_1X: tuple[Module1x, ...] = (
    _m("ray.tune",
       "run run_experiments Experiment with_parameters SyncConfig Trainable DurableTrainable "
       "durable Callback TuneError grid_search register_env register_trainable Stopper "
       "EarlyStopping function sample_from uniform quniform choice randint lograndint "
       "qrandint qlograndint randn qrandn loguniform qloguniform ExperimentAnalysis Analysis "
       "CLIReporter JupyterNotebookReporter ProgressReporter report get_trial_dir "
       "get_trial_name get_trial_id make_checkpoint_dir save_checkpoint is_session_enabled "
       "checkpoint_dir create_searcher create_scheduler PlacementGroupFactory"),
    _m("ray.tune.tune", "run run_experiments"),
    _m("ray.tune.experiment", "Experiment convert_to_experiment_list"),
    _m("ray.tune.registry", "register_trainable register_env get_trainable_cls"),
    _m("ray.tune.trainable", "Trainable"),
    _m("ray.tune.function_runner", "FunctionRunner wrap_function with_parameters"),
    _m("ray.tune.durable_trainable", "DurableTrainable durable"),
    _m("ray.tune.session", _SESSION),
    _m("ray.tune.trial", "Trial Location ExportFormat"),
    _m("ray.tune.checkpoint_manager", "Checkpoint CheckpointManager"),
    _m("ray.tune.resources", "Resources"),
    _m("ray.tune.result",
       "TRAINING_ITERATION TIME_THIS_ITER_S TIME_TOTAL_S TIMESTEPS_TOTAL TIMESTEPS_THIS_ITER "
       "EPISODES_TOTAL EPISODES_THIS_ITER DONE TRIAL_ID EXPERIMENT_TAG NODE_IP HOSTNAME PID "
       "DEFAULT_METRIC MEAN_LOSS MEAN_ACCURACY EPISODE_REWARD_MEAN SHOULD_CHECKPOINT "
       "EXPR_PARAM_FILE EXPR_PARAM_PICKLE_FILE EXPR_PROGRESS_FILE EXPR_RESULT_FILE"),
    _m("ray.tune.error", "TuneError AbortTrialExecution"),
    _m("ray.tune.sample", _SAMPLE),
    _m("ray.tune.stopper",
       "Stopper CombinedStopper FunctionStopper NoopStopper MaximumIterationStopper "
       "ExperimentPlateauStopper EarlyStopping TrialPlateauStopper TimeoutStopper"),
    _m("ray.tune.callback", "Callback"),
    _m("ray.tune.logger",
       "Logger NoopLogger JsonLogger CSVLogger TBXLogger UnifiedLogger LoggerCallback "
       "LegacyLoggerCallback JsonLoggerCallback CSVLoggerCallback TBXLoggerCallback "
       "DEFAULT_LOGGERS pretty_print"),
    _m("ray.tune.progress_reporter",
       "ProgressReporter TuneReporterBase CLIReporter JupyterNotebookReporter "
       "TrialProgressCallback detect_reporter trial_progress_str trial_errors_str "
       "memory_debug_str best_trial_str"),
    _m("ray.tune.syncer",
       "SyncConfig Syncer CloudSyncer NodeSyncer SyncerCallback get_cloud_syncer "
       "get_node_syncer"),
    _m("ray.tune.analysis", "ExperimentAnalysis Analysis"),
    _m("ray.tune.analysis.experiment_analysis", "ExperimentAnalysis Analysis"),
    _m("ray.tune.web_server", "TuneClient TuneServer"),
    _m("ray.tune.commands", "list_trials list_experiments add_note print_format_output"),
    _m("ray.tune.scripts", "cli"),
    _m("ray.tune.trial_runner", "TrialRunner",
       replaced_by="`tune_async.controller` (internal: plugins get read-only views of "
                   "trials and of the runner)"),
    _m("ray.tune.trial_executor", "TrialExecutor",
       replaced_by="the `Executor` protocol (`tune_async.execution.base`)"),
    _m("ray.tune.ray_trial_executor", "RayTrialExecutor",
       replaced_by="`tune_async.execution.ray_executor.RayExecutor`"),
    _m("ray.tune.schedulers",
       "TrialScheduler HyperBandScheduler AsyncHyperBandScheduler ASHAScheduler "
       "MedianStoppingRule FIFOScheduler PopulationBasedTraining "
       "PopulationBasedTrainingReplay HyperBandForBOHB create_scheduler"),
    _m("ray.tune.schedulers.trial_scheduler", "TrialScheduler FIFOScheduler"),
    _m("ray.tune.schedulers.async_hyperband", "AsyncHyperBandScheduler ASHAScheduler"),
    _m("ray.tune.schedulers.hyperband", "HyperBandScheduler"),
    _m("ray.tune.schedulers.hb_bohb", "HyperBandForBOHB"),
    _m("ray.tune.schedulers.median_stopping_rule", "MedianStoppingRule"),
    _m("ray.tune.schedulers.pbt", "PopulationBasedTraining PopulationBasedTrainingReplay"),
    _m("ray.tune.schedulers.pb2", "PB2", extra="pb2"),
    _m("ray.tune.suggest",
       "SearchAlgorithm Searcher BasicVariantGenerator SearchGenerator grid_search Repeater "
       "ConcurrencyLimiter create_searcher"),
    _m("ray.tune.suggest.search", "SearchAlgorithm"),
    _m("ray.tune.suggest.suggestion", "Searcher ConcurrencyLimiter"),
    _m("ray.tune.suggest.basic_variant", "BasicVariantGenerator"),
    _m("ray.tune.suggest.search_generator", "SearchGenerator"),
    _m("ray.tune.suggest.repeater", "Repeater"),
    _m("ray.tune.suggest.variant_generator",
       "generate_variants grid_search format_vars count_variants flatten_resolved_vars "
       "has_unresolved_values RecursiveDependencyError"),
    _m("ray.tune.suggest.ax", "AxSearch", extra="ax"),
    _m("ray.tune.suggest.bayesopt", "BayesOptSearch", extra="bayesopt"),
    _m("ray.tune.suggest.bohb", "TuneBOHB", extra="bohb"),
    _m("ray.tune.suggest.dragonfly", "DragonflySearch", extra="dragonfly"),
    _m("ray.tune.suggest.flaml", "BlendSearch CFO", extra="flaml"),
    _m("ray.tune.suggest.hebo", "HEBOSearch", extra="hebo"),
    _m("ray.tune.suggest.hyperopt", "HyperOptSearch", extra="hyperopt"),
    _m("ray.tune.suggest.nevergrad", "NevergradSearch", extra="nevergrad"),
    _m("ray.tune.suggest.optuna", "OptunaSearch", extra="optuna"),
    _m("ray.tune.suggest.sigopt", "SigOptSearch", extra="sigopt"),
    _m("ray.tune.suggest.skopt", "SkOptSearch", extra="skopt"),
    _m("ray.tune.suggest.zoopt", "ZOOptSearch", extra="zoopt"),
    _m("ray.tune.integration.keras", _REPORT_CALLBACKS, extra="keras"),
    _m("ray.tune.integration.pytorch_lightning", _REPORT_CALLBACKS, extra="pytorch_lightning"),
    _m("ray.tune.integration.xgboost", _REPORT_CALLBACKS, extra="xgboost"),
    _m("ray.tune.integration.lightgbm", _REPORT_CALLBACKS, extra="lightgbm"),
    _m("ray.tune.integration.mlflow",
       "MLflowLoggerCallback MLflowLogger mlflow_mixin MLflowTrainableMixin", extra="mlflow"),
    _m("ray.tune.integration.wandb",
       "WandbLoggerCallback WandbLogger wandb_mixin WandbTrainableMixin", extra="wandb"),
    _m("ray.tune.integration.torch",
       "DistributedTrainableCreator distributed_checkpoint_dir is_distributed_trainable",
       extra="torch"),
    _m("ray.tune.integration.horovod", "DistributedTrainableCreator", extra="horovod"),
    _m("ray.tune.integration.tensorflow", "DistributedTrainableCreator", extra="tensorflow"),
    _m("ray.tune.integration.docker", "DockerSyncer"),
    _m("ray.tune.integration.kubernetes", "NamespacedKubernetesSyncer KubernetesSyncer"),
    _m("ray.tune.utils", _UTILS + " force_on_current_node"),
    _m("ray.tune.utils.util", _UTILS + " unflatten_dict force_on_current_node"),
    _m("ray.tune.utils.placement_groups", "PlacementGroupFactory"),
    _m("ray.tune.utils.trainable", "TrainableUtil with_parameters"),
    _m("ray.tune.utils.log", "Verbosity set_verbosity has_verbosity"),
)

# The 1.x loggers users filter (``logging.getLogger("ray.tune.trial_runner")``...) and the
# logger of ours that logs the same events. Every module here logs under its own
# ``__name__``, so a logger's name is its module's path; ``tune_async`` is the parent of all.
LOGGERS_1X: tuple[tuple[str, str, str], ...] = (
    ("ray.tune", "tune_async", "everything below"),
    ("ray.tune.tune", "tune_async.api", "`tune.run` arguments that have no effect"),
    ("ray.tune.trial_runner", "tune_async.controller",
     "trial errors (`Trial <name>: Error processing event.`), retries, end-of-trial "
     "checkpoint failures, stop-all"),
    ("ray.tune.ray_trial_executor", "tune_async.execution.ray_executor",
     "trial workers (a cleanup that failed)"),
    ("ray.tune.trainable", "tune_async.trainable.trainable",
     "in the trial's process: a slow `setup`, nothing to export"),
    ("ray.tune.function_runner", "tune_async.trainable.function_trainable",
     "function trainables (a thread that does not stop)"),
    ("ray.tune.checkpoint_manager", "tune_async.checkpoint",
     "checkpoint scores (`Result dict has no key: ...`), deletion"),
    ("ray.tune.syncer", "tune_async.sync.cloud",
     "syncing the experiment to `upload_dir` (a failed or unfinished sync)"),
    ("ray.tune.syncer", "tune_async.sync.node", "trial files pulled from worker nodes"),
    ("ray.tune.logger", "tune_async.logger.logger", "result files, TensorBoard"),
    ("ray.tune.analysis.experiment_analysis", "tune_async.analysis.experiment_analysis",
     "reading experiments, best checkpoints"),
    ("ray.tune.registry", "tune_async.registry", "trainable names"),
    ("ray.tune.stopper", "tune_async.stopper", "stoppers"),
    ("ray.tune.callback", "tune_async.callback", "callbacks"),
    ("ray.tune.web_server", "tune_async.web_server", "the TuneServer"),
    ("ray.tune.sample", "tune_async.search.sample", "search spaces"),
    ("ray.tune.suggest.variant_generator", "tune_async.search.variant_generator",
     "grid and random variants"),
    ("ray.tune.suggest.suggestion", "tune_async.suggest.suggestion", "searchers"),
    ("ray.tune.suggest.<name>", "tune_async.suggest.<name>",
     "each searcher integration (optuna, hyperopt, ...)"),
    ("ray.tune.schedulers.<name>", "tune_async.schedulers.<name>",
     "each scheduler (pbt, async_hyperband, ...)"),
    ("ray.tune.utils.util", "tune_async.utils.util", "`warn_if_slow` and other helpers"),
)


# ---- what the package holds ---------------------------------------------------------------


def available_names(module: Module1x) -> set[str] | None:
    """The 1.x names ``module``'s tune_async equivalent holds; None if it does not exist."""
    if module.extra is not None:
        return _names_in_source(module.target)
    try:
        imported = importlib.import_module(module.target)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module.target.startswith(exc.name):
            return None  # the module itself is missing (not a library it imports)
        raise
    return {name for name in module.names if hasattr(imported, name)}


def _names_in_source(dotted: str) -> set[str] | None:
    """Top-level names a module defines, read from its source (never executed)."""
    tree = _parse(dotted)
    return None if tree is None else set(_defined(tree.body))


def declared_unavailable(module: Module1x) -> set[str]:
    """Names an integration module declares it cannot provide (its library no longer
    installs): ``__getattr__ = unavailable("Name", reason)``, see ``suggest._space``."""
    tree = _parse(module.target) if module.extra is not None else None
    found = set()
    for node in tree.body if tree is not None else []:
        value = node.value if isinstance(node, ast.Assign) else None
        if (isinstance(value, ast.Call) and getattr(value.func, "id", None) == "unavailable"
                and value.args and isinstance(value.args[0], ast.Constant)):
            found.add(value.args[0].value)
    return found


def _parse(dotted: str) -> ast.Module | None:
    try:
        spec = importlib.util.find_spec(dotted)
    except ModuleNotFoundError:
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    with open(spec.origin, encoding="utf-8") as f:
        return ast.parse(f.read(), spec.origin)


def _defined(body: Iterable[ast.stmt]) -> Iterable[str]:
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node.name
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                yield (alias.asname or alias.name).split(".")[0]
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            yield from (t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.If, ast.Try)):  # guarded imports and definitions
            yield from _defined(node.body)
            for handler in getattr(node, "handlers", []):
                yield from _defined(handler.body)
            yield from _defined(node.orelse)


def status(module: Module1x, available: set[str] | None) -> str:
    if module.replaced_by is not None:
        return f"replaced by {module.replaced_by}"
    unavailable = declared_unavailable(module)
    if available is None:
        text = "not yet"
    else:
        missing = [name for name in module.names if name not in available]
        later = [name for name in missing if name not in unavailable]
        text = "✓" if not missing else "; ".join(part for part in (
            _listed("not yet", later), _listed("unavailable (its library no longer "
                                              "installs; the module says why)",
                                              [n for n in missing if n in unavailable]))
            if part)
    if module.extra is not None and available and not unavailable:
        text += f" (extra `tune_async[{module.extra}]`)"
    return text


def _listed(label: str, names: list[str]) -> str:
    return f"{label}: " + ", ".join(f"`{n}`" for n in names) if names else ""


# ---- the markdown -------------------------------------------------------------------------


def names_table() -> str:
    rows = ["| ray.tune 1.x | tune_async | names | here |", "|---|---|---|---|"]
    for module in MODULES_1X:
        ours = "—" if module.replaced_by else f"`{module.target}`"
        names = ", ".join(f"`{name}`" for name in module.names)
        rows.append(f"| `{module.path}` | {ours} | {names} | "
                    f"{status(module, None if module.replaced_by else available_names(module))} |")
    return "\n".join(rows)


def loggers_table() -> str:
    rows = ["| 1.x logger | tune_async logger | records about |", "|---|---|---|"]
    for theirs, ours, about in LOGGERS_1X:
        rows.append(f"| `{theirs}` | `{ours}` | {about} |")
    return "\n".join(rows)


def check_logger_names() -> list[str]:
    """The documented loggers that are not their module's logger (should be none)."""
    wrong = []
    for _, ours, _about in LOGGERS_1X:
        if "<" in ours or ours == "tune_async":
            continue
        logger = getattr(importlib.import_module(ours), "logger", None)
        if getattr(logger, "name", None) != ours:
            wrong.append(ours)
    return wrong


def render(readme: str) -> str:
    """``readme`` with both tables replaced by what the package holds now."""
    readme = _between(readme, NAMES_START, NAMES_END, names_table())
    return _between(readme, LOGGERS_START, LOGGERS_END, loggers_table())


def _between(text: str, start: str, end: str, content: str) -> str:
    head, found, rest = text.partition(start)
    if not found or end not in rest:
        raise ValueError(f"README.md lacks the markers {start} ... {end}")
    _old, _, tail = rest.partition(end)
    return f"{head}{start}\n{content}\n{end}{tail}"


def readme_path() -> str:
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=REGENERATE, description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if README.md's tables differ from the package")
    parser.add_argument("--readme", default=readme_path())
    args = parser.parse_args(argv)
    with open(args.readme, encoding="utf-8") as f:
        current = f.read()
    fresh = render(current)
    if args.check:
        if fresh != current:
            print(f"{args.readme} is out of date; run: {REGENERATE}", file=sys.stderr)
            return 1
        return 0
    if fresh != current:
        with open(args.readme, "w", encoding="utf-8") as f:
            f.write(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
