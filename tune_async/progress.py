"""Progress reporting: verbosity levels, status tables (CLI / notebook), per-result printing.

Verbosity is passed explicitly (``set_verbosity`` on a reporter, the
``verbosity`` argument of :class:`TrialProgressCallback`); there is no
process-wide level, so one ``run(verbose=0)`` cannot silence the next run
(1.x's leak).
"""

from __future__ import annotations

import datetime
import enum
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from numbers import Number
from typing import TYPE_CHECKING, Any

from tabulate import tabulate

from tune_async.callback import Callback
from tune_async.result import (
    AUTO_RESULT_KEYS,
    DONE,
    EPISODE_REWARD_MEAN,
    EXPR_ERROR_FILE,
    MEAN_ACCURACY,
    MEAN_LOSS,
    NODE_IP,
    PID,
    TIME_TOTAL_S,
    TIMESTEPS_TOTAL,
    TRAINING_ITERATION,
)
from tune_async.trainable.trainable import get_node_ip
from tune_async.utils.util import json_dumps

if TYPE_CHECKING:
    from tune_async.trial import Trial


class Verbosity(enum.IntEnum):
    """How much ``tune.run`` prints (``verbose=``).

    0 = silent, 1 = experiment status only, 2 = status and one brief line per
    result, 3 = status and the full result of every reported step.
    """

    V0_MINIMAL = 0
    V1_EXPERIMENT = 1
    V2_TRIAL_NORM = 2
    V3_TRIAL_DETAILS = 3


def as_verbosity(verbose: int | Verbosity) -> Verbosity:
    """Validate ``verbose`` (an int 0-3 or a :class:`Verbosity`) and return the enum."""
    if isinstance(verbose, bool) or not isinstance(verbose, int):
        raise TypeError(f"verbose must be an int 0-3 or a Verbosity, got {verbose!r}")
    try:
        return Verbosity(verbose)
    except ValueError:
        raise ValueError(f"verbose must be between 0 and 3, got {verbose!r}") from None


# Per-trial result printing is throttled to once per trial per this many seconds.
DEBUG_PRINT_INTERVAL = 5.0
STATE_TABLE_ORDER = ("RUNNING", "PAUSED", "PENDING", "TERMINATED", "ERROR")
_GIB = 1024**3


# ---------------------------------------------------------------------------
# Reporters
# ---------------------------------------------------------------------------


class ProgressReporter:
    """Abstract class for experiment progress reporting.

    ``should_report`` is called regularly to check whether to report now; if
    it returns True, ``report`` is called with the current trials. Both may be
    plain methods or ``async def``.
    """

    _verbosity: Verbosity = Verbosity.V3_TRIAL_DETAILS

    def should_report(self, trials: list[Trial], done: bool = False) -> bool:
        """Returns whether or not progress should be reported.

        Args:
            trials: Trials to report on.
            done: Whether this is the last progress report attempt.
        """
        raise NotImplementedError

    def report(self, trials: list[Trial], done: bool, *sys_info: str) -> None:
        """Reports progress across trials.

        Args:
            trials: Trials to report on.
            done: Whether this is the last progress report attempt.
            sys_info: System info lines (scheduler / executor summaries).
        """
        raise NotImplementedError

    def set_search_properties(self, metric: str | None, mode: str | None) -> bool:
        """Set the experiment's metric and mode; False if the reporter already had its own."""
        return True

    def set_total_samples(self, total_samples: int) -> None:
        """Set the total number of samples the experiment will run (``sys.maxsize``: infinite)."""

    def set_verbosity(self, verbose: int | Verbosity) -> None:
        """Set the run's verbosity (called by ``tune.run`` with its ``verbose`` argument)."""
        self._verbosity = as_verbosity(verbose)


class TuneReporterBase(ProgressReporter):
    """Abstract base class for the default Tune reporters.

    Args:
        metric_columns: Names of metrics to include in the progress table: a
            list of names, or a dict mapping names to column headers. Defaults
            to the 1.x columns (acc, loss, iter, total time (s), ts, reward)
            plus up to ``infer_limit`` numeric user metrics found in results.
        parameter_columns: Names of config parameters to include (list, or
            dict name -> header). Defaults to all evaluated parameters.
        total_samples: Total number of trials (``sys.maxsize`` prints "infinite").
        max_progress_rows: Maximum number of rows in the trial table (default 20).
            The final report shows all rows.
        max_error_rows: Maximum number of rows in the error table (default 20).
        max_report_frequency: Report at most once every this many seconds (default 5).
        infer_limit: Maximum number of user metrics to infer (default 3).
        print_intermediate_tables: Print the trial table in every report, not
            only the last one. ``None`` (default) means True at verbosity 3.
        metric: Metric used for "Current best trial" (and ``sort_by_metric``).
        mode: One of ``"min"``/``"max"``.
        sort_by_metric: Sort terminated trials by ``metric`` (best first).
        clock: Monotonic clock used for throttling and elapsed time (for tests).
    """

    DEFAULT_COLUMNS: dict[str, str] = {
        MEAN_ACCURACY: "acc",
        MEAN_LOSS: "loss",
        TRAINING_ITERATION: "iter",
        TIME_TOTAL_S: "total time (s)",
        TIMESTEPS_TOTAL: "ts",
        EPISODE_REWARD_MEAN: "reward",
    }

    def __init__(
        self,
        metric_columns: list[str] | dict[str, str] | None = None,
        parameter_columns: list[str] | dict[str, str] | None = None,
        total_samples: int | None = None,
        max_progress_rows: int = 20,
        max_error_rows: int = 20,
        max_report_frequency: float = 5,
        infer_limit: int = 3,
        print_intermediate_tables: bool | None = None,
        metric: str | None = None,
        mode: str | None = None,
        sort_by_metric: bool = False,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _check_columns("metric_columns", metric_columns)
        _check_columns("parameter_columns", parameter_columns)
        if mode is not None and mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self._metrics_override = metric_columns is not None
        self._metric_columns: list[str] | dict[str, str] = _copy_columns(
            metric_columns if metric_columns is not None else self.DEFAULT_COLUMNS
        )
        self._inferred_metrics: dict[str, str] = {}
        self._parameter_columns: list[str] | dict[str, str] = _copy_columns(
            parameter_columns or []
        )
        self._total_samples = total_samples
        self._max_progress_rows = max_progress_rows
        self._max_error_rows = max_error_rows
        self._max_report_frequency = max_report_frequency
        self._infer_limit = infer_limit
        self._print_intermediate_tables = print_intermediate_tables
        self._metric = metric
        self._mode = mode
        self._sort_by_metric = sort_by_metric
        self._clock = clock
        self._start_time = clock()
        self._last_report_time = -math.inf

    # ---- configuration ----------------------------------------------------
    def set_search_properties(self, metric: str | None, mode: str | None) -> bool:
        if (self._metric and metric) or (self._mode and mode):
            return False
        if metric:
            self._metric = metric
        if mode:
            self._mode = mode
        return True

    def set_total_samples(self, total_samples: int) -> None:
        self._total_samples = total_samples

    def add_metric_column(self, metric: str, representation: str | None = None) -> None:
        """Adds a metric to the existing columns.

        Args:
            metric: Metric to add (a result key; nested keys as ``a/b``).
            representation: Column header (only for dict columns; defaults to ``metric``).
        """
        self._metrics_override = True
        self._metric_columns = _add_column(self._metric_columns, metric, representation)

    def add_parameter_column(self, parameter: str, representation: str | None = None) -> None:
        """Adds a config parameter to the existing columns.

        Args:
            parameter: Parameter to add (nested keys as ``a/b``).
            representation: Column header (only for dict columns; defaults to ``parameter``).
        """
        self._parameter_columns = _add_column(self._parameter_columns, parameter, representation)

    # ---- reporting ----------------------------------------------------------
    def should_report(self, trials: list[Trial], done: bool = False) -> bool:
        now = self._clock()
        if now - self._last_report_time > self._max_report_frequency:
            self._last_report_time = now
            return True
        return done

    def _metric_columns_now(self, trials: list[Trial]) -> list[str] | dict[str, str]:
        if self._metrics_override:
            return self._metric_columns
        self._infer_user_metrics(trials)
        return {**self._metric_columns, **self._inferred_metrics}

    def _infer_user_metrics(self, trials: list[Trial]) -> None:
        limit = self._infer_limit
        for trial in trials:
            if len(self._inferred_metrics) >= limit:
                return
            for key, value in (trial.last_result or {}).items():
                if len(self._inferred_metrics) >= limit:
                    return
                if (
                    key not in self.DEFAULT_COLUMNS
                    and key not in AUTO_RESULT_KEYS
                    and _is_number(value)
                ):
                    self._inferred_metrics[key] = key

    def _best_metric(self) -> str | None:
        if self._metric:
            return self._metric
        # With only mode set, a single inferred metric is unambiguous.
        if len(self._inferred_metrics) == 1:
            return next(iter(self._inferred_metrics))
        return None

    def _progress_str(
        self, trials: list[Trial], done: bool, *sys_info: str, fmt: str = "psql",
        delim: str = "\n",
    ) -> str:
        metric_columns = self._metric_columns_now(trials)
        messages = [
            "== Status ==",
            time_passed_str(self._clock() - self._start_time),
            memory_debug_str(),
            *sys_info,
        ]
        if not any(str(line).startswith("Resources requested") for line in sys_info):
            messages.append(resources_requested_str(trials))
        metric = self._best_metric()
        best = best_trial(trials, metric, self._mode)
        if best is not None:
            messages.append(best_trial_str(best, metric, self._parameter_columns))
        if self._verbosity >= Verbosity.V1_EXPERIMENT:
            tables = self._print_intermediate_tables
            if tables is None:
                tables = self._verbosity >= Verbosity.V3_TRIAL_DETAILS
            messages.append(
                trial_progress_str(
                    trials,
                    metric_columns=metric_columns,
                    parameter_columns=self._parameter_columns,
                    total_samples=self._total_samples,
                    force_table=tables or (done and self._verbosity >= Verbosity.V2_TRIAL_NORM),
                    fmt=fmt,
                    max_rows=None if done else self._max_progress_rows,
                    metric=metric,
                    mode=self._mode,
                    sort_by_metric=self._sort_by_metric,
                )
            )
            messages.append(
                trial_errors_str(trials, fmt=fmt, max_rows=None if done else self._max_error_rows)
            )
        return delim.join(m for m in messages if m) + delim


class CLIReporter(TuneReporterBase):
    """Command-line reporter: prints the status and trial table to stdout.

    Takes the arguments of :class:`TuneReporterBase` (``metric_columns``,
    ``parameter_columns``, ``total_samples``, ``max_progress_rows=20``,
    ``max_error_rows=20``, ``max_report_frequency=5``, ``infer_limit=3``,
    ``print_intermediate_tables=None``, ``metric``, ``mode``,
    ``sort_by_metric=False``).
    """

    def report(self, trials: list[Trial], done: bool, *sys_info: str) -> None:
        if self._verbosity == Verbosity.V0_MINIMAL:
            return
        print(self._progress_str(trials, done, *sys_info))


class JupyterNotebookReporter(TuneReporterBase):
    """Jupyter notebook reporter: renders the status as HTML.

    Args:
        overwrite: Clear the cell output before each report (so only the
            latest table is shown). Set False to also see per-result prints.
        Other arguments: as :class:`TuneReporterBase`.
    """

    def __init__(self, overwrite: bool, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._overwrite = overwrite

    def report(self, trials: list[Trial], done: bool, *sys_info: str) -> None:
        if self._verbosity == Verbosity.V0_MINIMAL:
            return
        try:
            from IPython.display import HTML, clear_output, display
        except ImportError:  # not in a notebook after all: plain text still informs
            print(self._progress_str(trials, done, *sys_info))
            return
        if self._overwrite:
            clear_output(wait=True)
        display(HTML(self._progress_str(trials, done, *sys_info, fmt="html", delim="<br>")))


def _in_notebook() -> bool:
    """True inside a Jupyter kernel (an IPython shell that is not the terminal one)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:
        return False
    return shell is not None and "Terminal" not in type(shell).__name__


def detect_reporter(verbose: int | Verbosity = Verbosity.V3_TRIAL_DETAILS, **kwargs: Any):
    """The default reporter: a JupyterNotebookReporter in a notebook, else a CLIReporter.

    In a notebook, ``overwrite`` defaults to True below verbosity 2 (so the
    per-result prints are not wiped). The reporter gets ``verbose`` set.
    """
    verbosity = as_verbosity(verbose)
    reporter: TuneReporterBase
    if _in_notebook():
        kwargs.setdefault("overwrite", verbosity < Verbosity.V2_TRIAL_NORM)
        reporter = JupyterNotebookReporter(**kwargs)
    else:
        reporter = CLIReporter(**kwargs)
    reporter.set_verbosity(verbosity)
    return reporter


# ---------------------------------------------------------------------------
# Status pieces (public so the controller and tests can use them directly)
# ---------------------------------------------------------------------------


def time_passed_str(elapsed_s: float, now: float | None = None) -> str:
    """``Current time: <date> (running for HH:MM:SS.ss)``."""
    current = datetime.datetime.fromtimestamp(time.time() if now is None else now)
    elapsed_s = max(elapsed_s, 0.0)
    days, rest = divmod(elapsed_s, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    running = f"{days:.0f} days, " if days > 0 else ""
    running += f"{hours:02.0f}:{minutes:02.0f}:{seconds:05.2f}"
    return f"Current time: {current:%Y-%m-%d %H:%M:%S} (running for {running})"


def _memory_info() -> tuple[float, float] | None:
    """(total, available) bytes of this node, or None if unknown."""
    try:
        import psutil

        vm = psutil.virtual_memory()
        return float(vm.total), float(vm.available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: line.split()[1] for line in f if ":" in line}
        return float(info["MemTotal"]) * 1024, float(info["MemAvailable"]) * 1024
    except (OSError, KeyError, IndexError, ValueError):
        return None


def memory_debug_str() -> str:
    """``Memory usage on this node: used/total GiB`` (with a warning under 10 % free)."""
    info = _memory_info()
    if info is None:
        return "Unknown memory usage. Please run `pip install psutil` to resolve."
    total, available = info
    text = f"Memory usage on this node: {(total - available) / _GIB:.1f}/{total / _GIB:.1f} GiB"
    if total and available / total < 0.1:
        text += (
            ": ***LOW MEMORY*** less than 10% of the memory on this node is available for use. "
            "This can cause unexpected crashes. Consider reducing the memory used by your "
            "application or reducing the Ray object store size by setting `object_store_memory` "
            "when calling `ray.init`."
        )
    return text


def _trial_request(trial: Trial) -> dict[str, float]:
    resources = trial.resources
    if hasattr(resources, "required_resources"):
        return resources.required_resources()
    if hasattr(resources, "as_ray_dict"):
        return resources.as_ray_dict()
    return {}


def resources_requested_str(
    trials: list[Trial], available: Mapping[str, float] | None = None
) -> str:
    """``Resources requested: 4/8 CPUs, 0/0 GPUs`` for the RUNNING trials.

    Args:
        trials: All trials; only RUNNING ones count.
        available: Cluster totals by Ray resource name (``{"CPU": 8, "GPU": 0}``);
            without it only the requested amounts are shown.
    """
    used: dict[str, float] = {"CPU": 0.0, "GPU": 0.0}
    for trial in trials:
        if str(trial.status) == "RUNNING":
            for name, amount in _trial_request(trial).items():
                used[name] = used.get(name, 0.0) + amount
    parts = []
    for name, amount in used.items():
        label = {"CPU": "CPUs", "GPU": "GPUs"}.get(name, name)
        if available is not None and name in available:
            parts.append(f"{amount:g}/{available[name]:g} {label}")
        elif name in ("CPU", "GPU") or amount:
            parts.append(f"{amount:g} {label}")
    return "Resources requested: " + ", ".join(parts)


def _is_number(value: Any) -> bool:
    return isinstance(value, Number) and not isinstance(value, bool) and not isinstance(
        value, complex
    )


def _lookup(path: str, mapping: Mapping | None) -> Any:
    """``mapping[path]``, or a nested lookup of ``a/b`` paths; None if missing."""
    if not mapping:
        return None
    if path in mapping:
        return mapping[path]
    node: Any = mapping
    for part in path.split("/"):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def best_trial(trials: list[Trial], metric: str | None, mode: str | None) -> Trial | None:
    """The trial whose last result is best for ``metric``/``mode`` (None without both)."""
    if not metric or mode not in ("min", "max"):
        return None
    sign = 1.0 if mode == "max" else -1.0
    best, best_value = None, -math.inf
    for trial in trials:
        value = _lookup(metric, trial.last_result)
        if not _is_number(value) or math.isnan(value):
            continue
        if best is None or value * sign > best_value:
            best, best_value = trial, value * sign
    return best


def best_trial_str(
    trial: Trial, metric: str, parameter_columns: list[str] | dict[str, str] | None = None
) -> str:
    """``Current best trial: <id> with <metric>=<value> and parameters=<params>``."""
    value = _lookup(metric, trial.last_result)
    keys = list(parameter_columns) if parameter_columns else list(trial.config)
    params = {key: _lookup(key, trial.config) for key in keys}
    return f"Current best trial: {trial.trial_id} with {metric}={value} and parameters={params}"


_LOOPBACK = "127.0.0.1"  # what the in-process executor's trials report


def _trial_location(trial: Trial, local_ip: str) -> str:
    """The ``loc`` cell, as 1.x's ``Location``: ``pid=N`` for a trial on the driver's
    node, ``host:pid`` on another node, empty before the trial reported anything."""
    result = trial.last_result or {}
    node_ip, pid = result.get(NODE_IP), result.get(PID)
    if not pid:
        return ""
    # (The in-process executor's trials say 127.0.0.1 even when Ray runs here too.)
    if node_ip in (None, "", _LOOPBACK, local_ip):
        return f"pid={pid}"
    return f"{node_ip}:{pid}"


def _group_by_state(trials: list[Trial]) -> dict[str, list[Trial]]:
    groups: dict[str, list[Trial]] = {}
    for trial in trials:
        groups.setdefault(str(trial.status), []).append(trial)
    return groups


def _state_order(groups: Mapping[str, list[Trial]]) -> list[str]:
    known = [s for s in STATE_TABLE_ORDER if s in groups]
    return known + sorted(s for s in groups if s not in STATE_TABLE_ORDER)


def _fair_share(groups: Mapping[str, list[Trial]], max_rows: int) -> dict[str, int]:
    """Rows per state: one at a time round-robin, so every state stays visible."""
    shares = dict.fromkeys(groups, 0)
    left = max_rows
    while left > 0:
        grew = False
        for state in _state_order(groups):
            if left > 0 and shares[state] < len(groups[state]):
                shares[state] += 1
                left -= 1
                grew = True
        if not grew:
            break
    return shares


def _sort_terminated(trials: list[Trial], metric: str | None, mode: str | None) -> list[Trial]:
    if not metric or mode not in ("min", "max"):
        return trials
    sign = -1.0 if mode == "max" else 1.0

    def key(trial: Trial) -> tuple[int, float]:
        value = _lookup(metric, trial.last_result)
        return (0, sign * value) if _is_number(value) else (1, 0.0)

    return sorted(trials, key=key)


def trial_progress_str(
    trials: list[Trial],
    metric_columns: list[str] | dict[str, str],
    parameter_columns: list[str] | dict[str, str] | None = None,
    total_samples: int | None = None,
    force_table: bool = False,
    fmt: str = "psql",
    max_rows: int | None = None,
    metric: str | None = None,
    mode: str | None = None,
    sort_by_metric: bool = False,
) -> str:
    """"Result logdir", "Number of trials" and (if ``force_table``) the trial table."""
    if not trials:
        return ""
    delim = "<br>" if fmt == "html" else "\n"
    groups = _group_by_state(trials)
    messages = [f"Result logdir: {d}" for d in sorted({t.local_dir for t in trials if t.local_dir})]
    counts = ", ".join(f"{len(groups[s])} {s}" for s in sorted(groups))
    total = ""
    if total_samples:
        total = "/infinite" if total_samples >= sys.maxsize else f"/{total_samples}"
    messages.append(f"Number of trials: {len(trials)}{total} ({counts})")
    if force_table:
        messages += trial_progress_table(
            trials, metric_columns, parameter_columns, fmt, max_rows, metric, mode, sort_by_metric
        )
    return delim.join(messages)


def trial_progress_table(
    trials: list[Trial],
    metric_columns: list[str] | dict[str, str],
    parameter_columns: list[str] | dict[str, str] | None = None,
    fmt: str = "psql",
    max_rows: int | None = None,
    metric: str | None = None,
    mode: str | None = None,
    sort_by_metric: bool = False,
) -> list[str]:
    """The trial table (``Trial name | status | loc | params | metrics``) and overflow line."""
    groups = _group_by_state(trials)
    if sort_by_metric and "TERMINATED" in groups:
        groups["TERMINATED"] = _sort_terminated(groups["TERMINATED"], metric, mode)
    order = _state_order(groups)
    overflow_line = ""
    if max_rows is not None and len(trials) > max_rows:
        shares = _fair_share(groups, max_rows)
        hidden = {s: len(groups[s]) - shares[s] for s in order}
        shown = [t for s in order for t in groups[s][: shares[s]]]
        detail = ", ".join(f"{n} {s}" for s, n in hidden.items() if n > 0)
        overflow_line = f"... {len(trials) - len(shown)} more trials not shown ({detail})"
    else:
        shown = [t for s in order for t in groups[s]]

    metric_keys = [
        k for k in metric_columns if any(_lookup(k, t.last_result) is not None for t in shown)
    ]
    if parameter_columns:
        param_keys = list(parameter_columns)
    else:
        param_keys = sorted(set().union(*(t.evaluated_params or {} for t in shown)))
    headers = (
        ["Trial name", "status", "loc"]
        + [_header(parameter_columns, k) for k in param_keys]
        + [_header(metric_columns, k) for k in metric_keys]
    )
    local_ip = get_node_ip()  # (Ray's IP while Ray runs here, as trainables report it)
    rows = [
        [str(t), str(t.status), _trial_location(t, local_ip)]
        + [_lookup(k, t.config) for k in param_keys]
        + [_lookup(k, t.last_result) for k in metric_keys]
        for t in shown
    ]
    messages = [tabulate(rows, headers=headers, tablefmt=fmt, showindex=False)]
    if overflow_line:
        messages.append(overflow_line)
    return messages


def _header(columns: list[str] | dict[str, str] | None, key: str) -> str:
    return columns[key] if isinstance(columns, Mapping) else key


def trial_errors_str(trials: list[Trial], fmt: str = "psql", max_rows: int | None = None) -> str:
    """"Number of errored trials" and the table ``Trial name | # failures | error file``."""
    failed = [t for t in trials if t.error_file]
    if not failed:
        return ""
    messages = [f"Number of errored trials: {len(failed)}"]
    if max_rows is not None and len(failed) > max_rows:
        messages.append(
            f"Table truncated to {max_rows} rows ({len(failed) - max_rows} overflow)"
        )
        failed = failed[:max_rows]
    rows = [[str(t), t.num_failures, t.error_file] for t in failed]
    messages.append(
        tabulate(rows, headers=["Trial name", "# failures", "error file"], tablefmt=fmt,
                 showindex=False)
    )
    delim = "<br>" if fmt == "html" else "\n"
    return delim.join(messages)


def _check_columns(name: str, columns: Any) -> None:
    if columns is None or isinstance(columns, Mapping):
        return
    if isinstance(columns, (list, tuple)) and all(isinstance(c, str) for c in columns):
        return
    raise TypeError(f"{name} must be a list of str or a dict of str -> str, got {columns!r}")


def _copy_columns(columns: list[str] | Mapping[str, str]) -> list[str] | dict[str, str]:
    return dict(columns) if isinstance(columns, Mapping) else list(columns)


def _add_column(
    columns: list[str] | dict[str, str], key: str, representation: str | None
) -> list[str] | dict[str, str]:
    if key in columns:
        raise ValueError(f"Column {key} already exists.")
    if isinstance(columns, dict):
        columns[key] = representation or key
    else:
        if representation is not None and representation != key:
            raise ValueError(
                "`representation` cannot differ from the column name if this reporter was "
                "initialized with a list of columns."
            )
        columns.append(key)
    return columns


# ---------------------------------------------------------------------------
# Per-result printing
# ---------------------------------------------------------------------------

_HIDDEN_IN_PRINT = ("config", "hist_stats")


def pretty_print(result: dict) -> str:
    """The result as YAML, as 1.x printed it (``yaml.safe_dump``, block style: sorted
    keys, ``true``/``false``, lists as ``- item`` lines, ending in a newline), with
    ``config``, ``hist_stats`` and None values dropped and values made JSON-safe."""
    shown = {k: v for k, v in result.items() if k not in _HIDDEN_IN_PRINT and v is not None}
    safe = json.loads(json_dumps(shown))
    try:
        import yaml
    except ImportError:  # (Ray depends on PyYAML) indented ``key: value`` lines instead
        return "\n".join(_pretty_lines(safe, 0)) + "\n"
    return yaml.safe_dump(safe, default_flow_style=False)


def _pretty_lines(value: dict, indent: int) -> list[str]:
    lines = []
    pad = "  " * indent
    for key in sorted(value, key=str):
        item = value[key]
        if isinstance(item, dict) and item:
            lines.append(f"{pad}{key}:")
            lines += _pretty_lines(item, indent + 1)
        else:
            lines.append(f"{pad}{key}: {item}")
    return lines


def _brief_result_str(result: dict) -> str:
    """User metrics only, as ``k=v,k2=v2`` (the automatic fields dropped)."""
    hidden = set(AUTO_RESULT_KEYS) | set(_HIDDEN_IN_PRINT)
    return ",".join(f"{k}={v}" for k, v in result.items() if k not in hidden)


class TrialProgressCallback(Callback):
    """Prints results as they arrive (the default per-result printing of ``tune.run``).

    At verbosity 2 one brief line per result, at 3 the full result; nothing
    below 2. Throttled to one print per trial every 5 s, but a final result
    (``done``), an error and a completion are always printed.

    Args:
        metric: If set, the brief line shows only this metric.
        verbosity: The run's verbosity (default 3).
        clock: Monotonic clock used for the throttle (for tests).
    """

    _trial_dir_later_ok = True  # never needs a trial directory at once (trial_dirs)

    def __init__(
        self,
        metric: str | None = None,
        verbosity: int | Verbosity = Verbosity.V3_TRIAL_DETAILS,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._metric = metric
        self._verbosity = as_verbosity(verbosity)
        self._clock = clock
        self._last_print: dict[str, float] = {}
        self._last_result_str: dict[str, str] = {}
        self._completed: set[str] = set()

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any
    ) -> None:
        if self._verbosity >= Verbosity.V2_TRIAL_NORM:
            self.log_result(trial, result, error=False)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        if self._verbosity >= Verbosity.V2_TRIAL_NORM:
            self.log_result(trial, trial.last_result or {}, error=True)

    def on_trial_complete(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        if self._verbosity < Verbosity.V2_TRIAL_NORM or trial.trial_id in self._completed:
            return
        self._completed.add(trial.trial_id)
        brief = _brief_result_str(trial.last_result or {})
        if brief != self._last_result_str.get(trial.trial_id):
            self._print(trial, trial.last_result or {}, done=True, error=False)
        else:
            print(f"Trial {trial} completed. Last result: {brief}")

    def log_result(self, trial: Trial, result: dict, error: bool = False) -> None:
        """Print ``result`` unless this trial printed less than 5 s ago (done/error: always)."""
        done = result.get(DONE) is True
        if done:
            self._completed.add(trial.trial_id)
        now = self._clock()
        last = self._last_print.get(trial.trial_id)
        if done or error or last is None or now - last > DEBUG_PRINT_INTERVAL:
            self._print(trial, result, done=done, error=error)
            self._last_print[trial.trial_id] = now

    def _print(self, trial: Trial, result: dict, done: bool, error: bool) -> None:
        brief = _brief_result_str(result)
        self._last_result_str[trial.trial_id] = brief
        if self._verbosity >= Verbosity.V3_TRIAL_DETAILS:
            print(f"Result for {trial}:")
            print("  " + pretty_print(result).rstrip("\n").replace("\n", "\n  "))
            return
        if error:
            error_file = trial.error_file or os.path.join(trial.logdir or "", EXPR_ERROR_FILE)
            print(
                f"The trial {trial} errored with parameters={trial.config}. "
                f"Error file: {error_file}"
            )
            return
        info = " This trial completed." if done else ""
        if self._metric:
            value = _lookup(self._metric, result)
            shown = f"{value:.2f}" if _is_number(value) else str(value)
            print(
                f"Trial {trial} reported {self._metric}={shown} "
                f"with parameters={trial.config}.{info}"
            )
        else:
            print(f"Trial {trial} reported {brief} with parameters={trial.config}.{info}")
