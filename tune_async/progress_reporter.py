"""1.x module path ``ray.tune.progress_reporter``: the progress reporters."""

from tune_async.progress import (
    CLIReporter,
    JupyterNotebookReporter,
    ProgressReporter,
    TrialProgressCallback,
    TuneReporterBase,
    best_trial_str,
    detect_reporter,
    memory_debug_str,
    trial_errors_str,
    trial_progress_str,
)

__all__ = [
    "CLIReporter",
    "JupyterNotebookReporter",
    "ProgressReporter",
    "TrialProgressCallback",
    "TuneReporterBase",
    "best_trial_str",
    "detect_reporter",
    "memory_debug_str",
    "trial_errors_str",
    "trial_progress_str",
]
