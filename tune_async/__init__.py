"""tune_async: Ray Tune 1.x's execution API, asyncio-native.

``import tune_async as tune`` runs ray.tune 1.x scripts unchanged; inside a
running event loop, ``await tune.arun(...)`` does the same without blocking it.
"""

# 1.x scripts reach submodules as attributes (``tune.sample.Float``, ``tune.session.report``).
from tune_async import (  # noqa: F401 - attributes for 1.x code, not names of __all__
    checkpoint_manager,
    function_runner,
    logger,
    progress_reporter,
    sample,
    schedulers,
    session,
    stopper,
    suggest,
    syncer,
    trial,
    tune,
    utils,
)
from tune_async.analysis import Analysis, ExperimentAnalysis
from tune_async.api import arun, arun_experiments, run, run_experiments
from tune_async.callback import Callback
from tune_async.durable_trainable import DurableTrainable, durable
from tune_async.error import TuneError
from tune_async.events import (
    EventsDropped,
    ExperimentEnded,
    TrialAdded,
    TrialCheckpointed,
    TrialCompleted,
    TrialErrored,
    TrialPaused,
    TrialResult,
    TrialStarted,
)
from tune_async.execution.local import LocalExecutor
from tune_async.execution.simulated import SimulatedExecutor
from tune_async.experiment import Experiment
from tune_async.handle import ExperimentHandle, astream, start
from tune_async.progress import CLIReporter, JupyterNotebookReporter, ProgressReporter
from tune_async.registry import register_env, register_trainable
from tune_async.schedulers import create_scheduler
from tune_async.search.sample import (
    choice,
    function,
    grid_search,
    lograndint,
    loguniform,
    qlograndint,
    qloguniform,
    qrandint,
    qrandn,
    quniform,
    randint,
    randn,
    sample_from,
    uniform,
)
from tune_async.stopper import EarlyStopping, Stopper
from tune_async.suggest import create_searcher
from tune_async.sync import SyncConfig
from tune_async.trainable import (
    Trainable,
    areport,
    checkpoint_dir,
    get_trial_dir,
    get_trial_id,
    get_trial_name,
    is_session_enabled,
    report,
    with_parameters,
)
from tune_async.trainable.session import make_checkpoint_dir, save_checkpoint
from tune_async.utils.placement_groups import PlacementGroupFactory

__version__ = "0.1.0"

__all__ = [
    "Analysis",
    "CLIReporter",
    "Callback",
    "DurableTrainable",
    "EarlyStopping",
    "EventsDropped",
    "ExperimentEnded",
    "ExperimentHandle",
    "Experiment",
    "ExperimentAnalysis",
    "JupyterNotebookReporter",
    "LocalExecutor",
    "PlacementGroupFactory",
    "ProgressReporter",
    "SimulatedExecutor",
    "Stopper",
    "SyncConfig",
    "Trainable",
    "TrialAdded",
    "TrialCheckpointed",
    "TrialCompleted",
    "TrialErrored",
    "TrialPaused",
    "TrialResult",
    "TrialStarted",
    "TuneError",
    "areport",
    "arun",
    "arun_experiments",
    "astream",
    "checkpoint_dir",
    "choice",
    "create_scheduler",
    "create_searcher",
    "durable",
    "function",
    "get_trial_dir",
    "get_trial_id",
    "get_trial_name",
    "grid_search",
    "is_session_enabled",
    "lograndint",
    "loguniform",
    "qlograndint",
    "qloguniform",
    "qrandint",
    "qrandn",
    "quniform",
    "randint",
    "randn",
    "make_checkpoint_dir",
    "register_env",
    "register_trainable",
    "report",
    "run",
    "run_experiments",
    "sample_from",
    "save_checkpoint",
    "start",
    "uniform",
    "with_parameters",
]
