"""What the ``tune-async`` command line does (1.x ``ray.tune.commands``).

``list_trials`` and ``list_experiments`` read experiments back through
:class:`~tune_async.analysis.ExperimentAnalysis` into a DataFrame, then filter,
sort, select columns and print it as a table, CSV or JSON (or save it to a file,
as 1.x's ``--output <file>`` did). ``remove`` deletes an experiment or trial
directory after asking; ``add_note`` opens ``$EDITOR`` on a note file (1.x).
Errors a user can fix raise :class:`CommandError`; the script prints them.
"""

from __future__ import annotations

import json
import math
import operator
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TextIO

import pandas as pd
from pandas.api.types import is_bool_dtype, is_numeric_dtype
from tabulate import tabulate

from tune_async.analysis import ExperimentAnalysis
from tune_async.error import TuneError
from tune_async.result import (
    AUTO_RESULT_KEYS,
    EXPR_PARAM_FILE,
    EXPR_PROGRESS_FILE,
    EXPR_RESULT_FILE,
    TIME_TOTAL_S,
    TIMESTAMP,
    TRAINING_ITERATION,
)
from tune_async.state import newest_state_file
from tune_async.trial import TrialStatus
from tune_async.utils.util import flatten_dict

CONFIG_PREFIX = "config/"
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
OUTPUT_FORMATS = ("table", "csv", "json")
# 1.x wrote ``--output <file>`` by its extension.
_FILE_WRITERS = {".csv": "csv", ".json": "json", ".p": "pickle", ".pkl": "pickle",
                 ".pickle": "pickle"}
OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "<=": operator.le, ">=": operator.ge, "==": operator.eq, "!=": operator.ne,
    "<": operator.lt, ">": operator.gt,
}
_FILTER = re.compile(r"^\s*(\S+?)\s*(<=|>=|==|!=|<|>)\s*(.+?)\s*$")
# Trial columns shown by default, in this order; then config/*, then the last metrics.
_INFO_FIRST = ("trial_id", "status")
_INFO_LAST = (TRAINING_ITERATION, TIME_TOTAL_S, "last_update")
_STATUSES = tuple(s.value for s in TrialStatus)


class CommandError(Exception):
    """A problem with the command's arguments or data, shown to the user as ``Error: ...``."""


# ---- ls: the trials of one experiment -------------------------------------------------------


def list_trials(
    experiment_path: str,
    sort: Sequence[str] | None = None,
    output: str | None = None,
    filter_op: str | Sequence[str] | None = None,
    info_keys: Sequence[str] | None = None,
    limit: int | None = None,
    desc: bool = False,
    out: TextIO | None = None,
) -> pd.DataFrame:
    """Lists the trials of an experiment: status, config and last metrics.

    Args:
        experiment_path (str): the experiment directory (``local_dir/name``) or
            one of its ``experiment_state-*.json`` files.
        sort (list): columns to sort by.
        output (str): "table" (default), "csv" or "json" to print in that format;
            any other value is a file to save the rows to (``.csv``, ``.json``,
            ``.pkl``), after printing the table (1.x).
        filter_op (str | list): ``"<column> <operator> <value>"`` (operators
            ``< <= == != >= >``), e.g. ``"loss < 0.5"``; several must all hold.
        info_keys (list): the columns to show (default: trial_id, status, the
            config, training_iteration, time_total_s, the last metrics, last_update).
        limit (int): show at most this many rows.
        desc (bool): sort descending.

    Returns:
        The DataFrame shown.
    """
    frame = trials_frame(experiment_path)
    defaults = _default_trial_columns(frame)
    return _show(frame, defaults, sort, output, filter_op, info_keys, limit, desc, out)


def trials_frame(experiment_path: str) -> pd.DataFrame:
    """Every trial of the experiment as one row: its record, config and last result."""
    path = os.path.abspath(os.path.expanduser(experiment_path))
    analysis = _analysis_of(path)
    base = path if os.path.isdir(path) else os.path.dirname(path)
    rows = [_trial_row(trial, base) for trial in analysis.trials]
    if not rows:
        raise CommandError(f"No trial data found in {experiment_path}!")
    return pd.DataFrame(rows)


def _analysis_of(path: str) -> ExperimentAnalysis:
    if not os.path.exists(path):
        raise CommandError(f"{path} does not exist.")
    try:
        return ExperimentAnalysis(path)
    except (TuneError, ValueError) as exc:
        raise CommandError(f"No trial data found in {path}: {exc}") from None


def _trial_row(trial: Any, base: str) -> dict[str, Any]:
    result = trial.last_result or {}
    row: dict[str, Any] = {
        "trial_id": trial.trial_id,
        "status": str(getattr(trial.status, "value", trial.status)),
        "trainable_name": trial.trainable_name,
        "experiment_tag": trial.experiment_tag,
    }
    row.update({CONFIG_PREFIX + k: v for k, v in flatten_dict(trial.config or {}).items()})
    metrics = {k: v for k, v in result.items() if k != "config"}
    row.update(flatten_dict(metrics))
    row["last_update"] = _format_time(result.get(TIMESTAMP))
    row["num_failures"] = trial.num_failures
    row["logdir"] = os.path.relpath(trial.logdir, base) if trial.logdir else None
    return {k: _scalar(v) for k, v in row.items()}


def _default_trial_columns(frame: pd.DataFrame) -> list[str]:
    config = [c for c in frame.columns if c.startswith(CONFIG_PREFIX)]
    metrics = [c for c in frame.columns if _is_user_metric(c)]
    return [*_INFO_FIRST, *config, *_INFO_LAST[:2], *metrics, _INFO_LAST[2]]


def _is_user_metric(column: str) -> bool:
    top = column.split("/", 1)[0]
    known = set(AUTO_RESULT_KEYS) | {"status", "trainable_name", "experiment_tag",
                                     "last_update", "num_failures", "logdir"}
    return top not in known and not column.startswith(CONFIG_PREFIX)


# ---- lsx: the experiments of a project directory ---------------------------------------------


def list_experiments(
    project_path: str,
    sort: Sequence[str] | None = None,
    output: str | None = None,
    filter_op: str | Sequence[str] | None = None,
    info_keys: Sequence[str] | None = None,
    limit: int | None = None,
    desc: bool = False,
    out: TextIO | None = None,
) -> pd.DataFrame:
    """Lists the experiments in a project directory (``local_dir``), one row each.

    Columns: name, total_trials, one count per trial status, last_updated (the
    newest result's time). Arguments as :func:`list_trials`.
    """
    frame = experiments_frame(project_path)
    defaults = ["name", "total_trials",
                *[s for s in _STATUSES if s in frame.columns], "last_updated"]
    return _show(frame, defaults, sort, output, filter_op, info_keys, limit, desc, out)


def experiments_frame(project_path: str) -> pd.DataFrame:
    base = os.path.abspath(os.path.expanduser(project_path))
    if not os.path.isdir(base):
        raise CommandError(f"{project_path} is not a directory.")
    rows = [row for name in sorted(os.listdir(base))
            if (row := _experiment_row(os.path.join(base, name))) is not None]
    if not rows:
        raise CommandError(f"No experiments found in {project_path}!")
    return pd.DataFrame(rows)


def _experiment_row(path: str) -> dict[str, Any] | None:
    if not os.path.isdir(path) or not _is_experiment_dir(path):
        return None
    try:
        trials = ExperimentAnalysis(path).trials
    except (TuneError, ValueError):
        return None
    counts = {status: 0 for status in _STATUSES}
    for trial in trials:
        counts[str(getattr(trial.status, "value", trial.status))] += 1
    stamps = [t.last_result.get(TIMESTAMP) for t in trials if t.last_result]
    stamps = [s for s in stamps if isinstance(s, (int, float))]
    newest = max(stamps) if stamps else _newest_mtime(path)
    return {"name": os.path.basename(path), "total_trials": len(trials), **counts,
            "last_updated": _format_time(newest)}


def _is_experiment_dir(path: str) -> bool:
    if newest_state_file(path):
        return True
    return any(_is_trial_dir(os.path.join(path, name)) for name in os.listdir(path))


def _is_trial_dir(path: str) -> bool:
    return os.path.isdir(path) and any(
        os.path.exists(os.path.join(path, f))
        for f in (EXPR_RESULT_FILE, EXPR_PROGRESS_FILE, EXPR_PARAM_FILE))


def _newest_mtime(path: str) -> float:
    state = newest_state_file(path)
    return os.path.getmtime(state or path)


# ---- filtering, sorting, printing ------------------------------------------------------------


def _show(frame: pd.DataFrame, defaults: list[str], sort: Sequence[str] | None,
          output: str | None, filter_op: str | Sequence[str] | None,
          info_keys: Sequence[str] | None, limit: int | None, desc: bool,
          out: TextIO | None) -> pd.DataFrame:
    out = out or sys.stdout
    fmt, path = _output_target(output)
    for expression in _as_list(filter_op):
        frame = apply_filter(frame, expression)
    if sort:
        _require_columns(frame, sort, "sort")
        frame = frame.sort_values(by=list(sort), ascending=not desc, kind="stable")
    columns = list(info_keys) if info_keys else [c for c in defaults if c in frame.columns]
    _require_columns(frame, columns, "columns")
    frame = frame[columns].reset_index(drop=True)
    if limit is not None:
        frame = frame.head(limit)
    if fmt == "csv":
        frame.to_csv(out, index=False)
    elif fmt == "json":
        out.write(to_json(frame) + "\n")
    else:
        print_table(frame, out, drop_empty=not info_keys)
    if path is not None:
        _save(frame, path)
        out.write(f"Output saved at {path}\n")
    return frame


def _output_target(output: str | None) -> tuple[str, str | None]:
    """(format to print, file to save to): a format name, or a file path as 1.x."""
    if not output or output in OUTPUT_FORMATS:
        return output or "table", None
    if os.path.splitext(output)[1].lower() not in _FILE_WRITERS:
        raise CommandError(
            f"Unsupported output: {output!r}. Use one of {', '.join(OUTPUT_FORMATS)}, or a "
            f"file ending in {', '.join(sorted(_FILE_WRITERS))}.")
    return "table", output


def _save(frame: pd.DataFrame, path: str) -> None:
    kind = _FILE_WRITERS[os.path.splitext(path)[1].lower()]
    if kind == "csv":
        frame.to_csv(path, index=False)
    elif kind == "json":
        with open(path, "w", encoding="utf-8") as f:
            f.write(to_json(frame) + "\n")
    else:
        frame.to_pickle(path)


def apply_filter(frame: pd.DataFrame, expression: str) -> pd.DataFrame:
    """Rows where ``"<column> <operator> <value>"`` holds (rows lacking the column drop out)."""
    match = _FILTER.match(expression or "")
    if not match:
        raise CommandError(
            f"Bad filter {expression!r}: expected \"<column> <operator> <value>\" with one of "
            f"the operators {' '.join(sorted(OPERATORS))}, e.g. \"loss < 0.5\".")
    column, op, raw = match.groups()
    _require_columns(frame, [column], "filter")
    series = frame[column]
    value = _typed_value(series, raw, column)
    present = series.notna()
    keep = present & OPERATORS[op](series.where(present), value).fillna(False).astype(bool)
    return frame[keep]


def _typed_value(series: pd.Series, raw: str, column: str) -> Any:
    text = raw.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]
    if is_bool_dtype(series.dtype):
        if text.lower() not in ("true", "false"):
            raise CommandError(f"Column {column!r} holds booleans; compare it with True/False.")
        return text.lower() == "true"
    if is_numeric_dtype(series.dtype):
        try:
            return float(text)
        except ValueError:
            raise CommandError(f"Column {column!r} is numeric; {raw!r} is not a number.") from None
    return text


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise CommandError(
            f"Unknown {what} column(s) {missing}. Available columns: {list(frame.columns)}")


def print_table(frame: pd.DataFrame, out: TextIO, drop_empty: bool = True) -> None:
    """A psql-style table; empty columns dropped, and only what fits a terminal's width."""
    print_format_output(frame, out=out, drop_empty=drop_empty)


def print_format_output(
    dataframe: pd.DataFrame, out: TextIO | None = None, drop_empty: bool = True
) -> tuple[str, list[str], list[str]]:
    """Prints the DataFrame as a table that fits the terminal (1.x).

    Returns:
        (the table printed, columns dropped for the terminal's width, empty columns
        dropped). Nothing is dropped for width when printing to a pipe or a file.
    """
    out = out or sys.stdout
    empty = [c for c in dataframe.columns if dataframe[c].isna().all()] if drop_empty else []
    shown = dataframe.drop(columns=empty)
    dropped: list[str] = []
    width = _terminal_width(out)
    while width is not None and len(shown.columns) > 1 and _table_width(shown) > width:
        dropped.insert(0, shown.columns[-1])
        shown = shown.drop(columns=[shown.columns[-1]])
    table = tabulate(_display(shown), headers="keys", tablefmt="psql", showindex=False)
    out.write(table + "\n")
    if dropped:
        out.write(f"Dropped columns: {dropped}\n"
                  "Please increase your terminal size to view remaining columns.\n")
    if empty:
        out.write(f"Empty columns: {empty}\n")
    return table, dropped, empty


def _display(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.astype(object).where(frame.notna(), "")


def _table_width(frame: pd.DataFrame) -> int:
    text = tabulate(_display(frame), headers="keys", tablefmt="psql", showindex=False)
    return len(text.split("\n", 1)[0])


def _terminal_width(out: TextIO) -> int | None:
    """The terminal's width when printing to one; None (no limit) for a pipe or file."""
    try:
        if not out.isatty():
            return None
    except (AttributeError, ValueError):
        return None
    return shutil.get_terminal_size().columns


def to_json(frame: pd.DataFrame) -> str:
    """Rows as a JSON list of objects (missing values as null)."""
    records = [{k: _json_value(v) for k, v in row.items()}
               for row in frame.to_dict(orient="records")]
    return json.dumps(records, indent=2, default=str)


def _json_value(value: Any) -> Any:
    value = _scalar(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    return value


def _scalar(value: Any) -> Any:
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        try:
            return value.item()
        except (ValueError, AttributeError):
            return value
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, default=str)  # one cell, whatever the structure
    return value


def _format_time(stamp: Any) -> str | None:
    if not isinstance(stamp, (int, float)) or isinstance(stamp, bool) or not math.isfinite(stamp):
        return None
    return datetime.fromtimestamp(stamp).strftime(TIMESTAMP_FORMAT)


def _as_list(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


# ---- rm and add-note -------------------------------------------------------------------------


def describe_removal(path: str) -> str:
    """What ``path`` is (an experiment or a trial directory), or CommandError if neither.

    Only directories Tune wrote are removed, so a typo never deletes an unrelated folder.
    """
    full = os.path.abspath(os.path.expanduser(path))
    if not os.path.isdir(full):
        raise CommandError(f"{path} is not a directory.")
    if _is_trial_dir(full):
        return f"trial directory {full}"
    if _is_experiment_dir(full):
        trials = sum(_is_trial_dir(os.path.join(full, n)) for n in os.listdir(full))
        return f"experiment {full} ({trials} trial{'s' if trials != 1 else ''})"
    raise CommandError(
        f"{path} is neither an experiment directory (with an experiment_state-*.json or trial "
        f"directories) nor a trial directory (with {EXPR_RESULT_FILE} or {EXPR_PARAM_FILE}); "
        "not removing it.")


def remove(path: str, confirm: Callable[[str], bool]) -> bool:
    """Delete an experiment or trial directory if ``confirm(description)`` agrees."""
    what = describe_removal(path)
    if not confirm(what):
        return False
    shutil.rmtree(os.path.abspath(os.path.expanduser(path)))
    return True


def add_note(path: str, filename: str = "note.txt", out: TextIO | None = None) -> str:
    """Opens ``$EDITOR`` (default vim) on a note file in ``path`` (1.x ``tune add-note``)."""
    out = out or sys.stdout
    directory = os.path.expanduser(path)
    if not os.path.isdir(directory):
        raise CommandError(f"{path} is not a valid directory.")
    note = os.path.join(directory, filename)
    existed = os.path.isfile(note)
    editor = os.environ.get("EDITOR", "vim")
    try:
        subprocess.call([*editor.split(), note])
    except OSError as exc:
        raise CommandError(f"Editing note failed: {exc}") from None
    out.write(f"Note {'updated' if existed else 'created'} at: {note}\n")
    return note
