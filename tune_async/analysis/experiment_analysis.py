"""Read an experiment back from disk: ``Analysis`` and ``ExperimentAnalysis`` (1.x API).

``Analysis`` reads a directory of trial dirs (``progress.csv``/``result.json``,
``params.json``). ``ExperimentAnalysis`` adds the experiment state file
(``experiment_state-*.json``) and the Trial records, which the ``best_*``
helpers and ``get_best_trial(scope=...)`` need.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
from numbers import Number
from typing import Any

import pandas as pd

from tune_async.checkpoint import (
    Checkpoint,
    CheckpointManager,
    find_checkpoints_on_disk,
    lookup_metric,
)
from tune_async.error import TuneError
from tune_async.result import (
    CONFIG,
    DEFAULT_METRIC,
    EXPERIMENT_TAG,
    EXPR_ERROR_FILE,
    EXPR_PARAM_FILE,
    EXPR_PROGRESS_FILE,
    EXPR_RESULT_FILE,
    TRAINING_ITERATION,
    TRIAL_ID,
)
from tune_async.state import journal_path, newest_state_file, replay_journal
from tune_async.trial import Trial, TrialStatus
from tune_async.utils.util import flatten_dict, unflatten_dict

logger = logging.getLogger(__name__)

CONFIG_PREFIX = "config/"
SCOPES = ("all", "last", "avg", "last-5-avg", "last-10-avg")
_MODES = ("min", "max")


# ---- reading trial files ----------------------------------------------------


def _read_complete_lines(path: str) -> str | None:
    """The file's text without a torn (unterminated) last line; None if unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return None
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    return text


def read_results(logdir: str) -> list[dict]:
    """All results in ``logdir/result.json`` (one JSON object per line); bad lines skipped."""
    text = _read_complete_lines(os.path.join(logdir, EXPR_RESULT_FILE))
    results = []
    for line in (text or "").splitlines():
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            logger.warning(
                "Skipping an unreadable line in %s", os.path.join(logdir, EXPR_RESULT_FILE)
            )
            continue
        if isinstance(value, dict):
            results.append(value)
    return results


def read_progress(logdir: str) -> pd.DataFrame | None:
    """``logdir/progress.csv`` as a DataFrame, else one built from ``result.json``; None if neither."""
    text = _read_complete_lines(os.path.join(logdir, EXPR_PROGRESS_FILE))
    if text and text.strip():
        try:
            return pd.read_csv(io.StringIO(text))
        except (ValueError, pd.errors.ParserError) as exc:
            logger.warning("Could not parse %s: %s", os.path.join(logdir, EXPR_PROGRESS_FILE), exc)
    results = read_results(logdir)
    if not results:
        return None
    rows = [flatten_dict({k: v for k, v in r.items() if k != CONFIG}) for r in results]
    return pd.DataFrame(rows)


def _read_params(logdir: str) -> dict | None:
    try:
        with open(os.path.join(logdir, EXPR_PARAM_FILE), encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def _is_trial_dir(files: list[str]) -> bool:
    return EXPR_PROGRESS_FILE in files or EXPR_RESULT_FILE in files


def _walk_trial_dirs(experiment_dir: str) -> list[str]:
    return sorted(path for path, _, files in os.walk(experiment_dir) if _is_trial_dir(files))


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, Number) and not isinstance(value, bool) and math.isfinite(value)


# ---- Analysis ---------------------------------------------------------------


class Analysis:
    """Analyse the trial directories of an experiment directory.

    Args:
        experiment_dir (str): the experiment directory; trial dirs are found by
            walking it for ``progress.csv``/``result.json``.
        default_metric (str): metric used when a method gets none. If only
            ``default_mode`` is given, the anonymous ``"_metric"``.
        default_mode (str): "min" or "max", used when a method gets none.

    Raises:
        ValueError: ``experiment_dir`` is not a directory, or a bad ``default_mode``.
        TuneError: no trial directory was found.
    """

    def __init__(
        self,
        experiment_dir: str,
        default_metric: str | None = None,
        default_mode: str | None = None,
    ):
        experiment_dir = os.path.abspath(os.path.expanduser(os.fspath(experiment_dir)))
        if not os.path.isdir(experiment_dir):
            raise ValueError(f"{experiment_dir} is not a valid directory.")
        self._experiment_dir = experiment_dir
        self._set_defaults(default_metric, default_mode)
        self._trial_dataframes: dict[str, pd.DataFrame] | None = None
        self._paths = _walk_trial_dirs(experiment_dir)
        if not self._paths:
            raise TuneError(f"No trials found in {experiment_dir}.")

    def _set_defaults(self, metric: str | None, mode: str | None) -> None:
        if mode is not None and mode not in _MODES:
            raise ValueError(f"`default_mode` has to be None or one of [min, max], got {mode!r}")
        if metric is None and mode is not None:
            metric = DEFAULT_METRIC  # only a mode: the anonymous metric, as in tune.run
        self.default_metric = metric
        self.default_mode = mode

    # -- trial directories and their files --
    def _trial_paths(self) -> list[str]:
        return list(self._paths)

    def _configs_by_path(self) -> dict[str, dict]:
        configs = {}
        for path in self._trial_paths():
            config = _read_params(path)
            if config is None:
                results = read_results(path)
                config = results[-1].get(CONFIG) if results else None
            if isinstance(config, dict):
                configs[path] = config
        return configs

    @property
    def trial_dataframes(self) -> dict[str, pd.DataFrame]:
        """Trial logdir -> DataFrame of its ``progress.csv`` (read on first use, then cached)."""
        if self._trial_dataframes is None:
            self.fetch_trial_dataframes()
        return self._trial_dataframes

    def fetch_trial_dataframes(self) -> dict[str, pd.DataFrame]:
        """(Re)read every trial's ``progress.csv``; returns logdir -> DataFrame."""
        frames = {}
        for path in self._trial_paths():
            df = read_progress(path)
            if df is not None:
                frames[path] = df
        self._trial_dataframes = frames
        return frames

    def get_all_configs(self, prefix: bool = False) -> dict[str, dict]:
        """Trial logdir -> config.

        Args:
            prefix (bool): if True, every top-level key is written ``config/<key>``.
        """
        configs = self._configs_by_path()
        if prefix:
            return {p: {CONFIG_PREFIX + k: v for k, v in c.items()} for p, c in configs.items()}
        return {p: dict(c) for p, c in configs.items()}

    def dataframe(self, metric: str | None = None, mode: str | None = None) -> pd.DataFrame:
        """One row per trial, with ``config/<key>`` columns and ``logdir``.

        As in 1.x only the config's top-level keys become columns: a nested dict
        stays whole (``config/opt`` holds ``{"lr": 1}``), as ``get_all_configs(prefix=True)``.

        Args:
            metric (str): with ``mode``, the column that picks each trial's row.
            mode (str): "min"/"max": take each trial's best row by ``metric``;
                None (default): take each trial's last row. The defaults are
                deliberately not used: a best row is not a last row.

        Raises:
            ValueError: a bad ``mode``, a ``mode`` without ``metric``, or a
                ``metric`` that no trial reported.
        """
        if mode is not None and mode not in _MODES:
            raise ValueError(f"If set, `mode` has to be one of [min, max], got {mode!r}")
        if mode and not metric:
            raise ValueError(
                "If a `mode` is passed to `Analysis.dataframe()`, you'll also have to pass a "
                "`metric`!"
            )
        if mode:
            self._check_metric_reported(metric)
        rows = self._retrieve_rows(metric, mode)
        configs = self.get_all_configs(prefix=True)
        for path, row in rows.items():
            row.update(configs.get(path, {}))
            row["logdir"] = path
        return pd.DataFrame(list(rows.values()))

    def _check_metric_reported(self, metric: str) -> None:
        frames = self.trial_dataframes
        if frames and not any(metric in df.columns for df in frames.values()):
            columns = sorted({c for df in frames.values() for c in df.columns})
            raise ValueError(
                f"The metric {metric!r} is not in any trial's results; reported columns: {columns}"
            )

    def _retrieve_rows(self, metric: str | None, mode: str | None) -> dict[str, dict]:
        rows = {}
        for path, df in self.trial_dataframes.items():
            if df.empty:
                continue
            if mode is None:
                rows[path] = df.iloc[-1].to_dict()
                continue
            if metric not in df.columns:
                continue
            values = pd.to_numeric(df[metric], errors="coerce").dropna()
            if values.empty:
                logger.warning("Non-numerical value(s) encountered for %s in %s", metric, path)
                continue
            idx = values.idxmax() if mode == "max" else values.idxmin()
            rows[path] = df.loc[idx].to_dict()
        return rows

    def get_best_config(self, metric: str | None = None, mode: str | None = None) -> dict | None:
        """The config of the trial with the best ``metric`` value ever reported (any row)."""
        path = self.get_best_logdir(metric, mode)
        return None if path is None else self._configs_by_path().get(path)

    def get_best_logdir(self, metric: str | None = None, mode: str | None = None) -> str | None:
        """The logdir of the trial with the best ``metric`` value ever reported (any row)."""
        metric = self._validate_metric(metric)
        mode = self._validate_mode(mode)
        rows = self._retrieve_rows(metric, mode)
        if not rows:
            logger.warning(
                "Could not find the best trial in %s for metric %r (no numeric values).",
                self._experiment_dir,
                metric,
            )
            return None
        pick = max if mode == "max" else min
        return pick(rows, key=lambda p: rows[p][metric])

    # -- checkpoints --
    def get_trial_checkpoints_paths(
        self, trial: Trial | str, metric: str | None = None
    ) -> list[tuple[str, Any]]:
        """The persistent checkpoints of a trial with their ``metric`` values.

        Args:
            trial (Trial | str): a Trial (its checkpoint manager's kept checkpoints;
                with none, its logdir's checkpoint directories) or a trial logdir (its
                checkpoint directories joined with ``progress.csv`` on
                ``training_iteration``).
            metric (str): the result key to report (nested keys "a/b"). Default:
                ``default_metric``, else ``"training_iteration"``.

        Returns:
            list of ``(checkpoint path, metric value)``, ordered by iteration; the
            value is None when that result lacks ``metric``.

        Raises:
            ValueError: ``trial`` is neither a Trial nor a directory.
        """
        metric = metric or self.default_metric or TRAINING_ITERATION
        if isinstance(trial, Trial):
            manager = trial.extra.get("checkpoint_manager")
            if isinstance(manager, CheckpointManager) and manager.checkpoints:
                kept = sorted(manager.checkpoints, key=lambda c: c.iteration)
                return [(c.path, _metric_of(c, metric)) for c in kept]
            logdir = trial.logdir
        elif isinstance(trial, (str, os.PathLike)) and os.path.isdir(trial):
            logdir = os.fspath(trial)
        else:
            raise ValueError(f"`trial` must be a Trial or a trial directory (str), got {trial!r}.")
        return self._checkpoints_from_disk(logdir, metric)

    def _checkpoints_from_disk(self, logdir: str | None, metric: str) -> list[tuple[str, Any]]:
        if not logdir or not os.path.isdir(logdir):
            return []
        checkpoints = find_checkpoints_on_disk(logdir, with_results=False)
        if not checkpoints:
            return []
        frames = self._trial_dataframes or {}
        df = frames.get(logdir)
        if df is None:
            df = read_progress(logdir)
        values = _column_by_iteration(df, metric)
        return [(c.path, values.get(c.iteration)) for c in checkpoints]

    def get_best_checkpoint(
        self, trial: Trial | str, metric: str | None = None, mode: str | None = None
    ) -> str | None:
        """The path of the trial's checkpoint with the best ``metric`` value.

        Args:
            trial (Trial | str): as in :meth:`get_trial_checkpoints_paths`.
            metric (str): default ``default_metric``, else ``"training_iteration"``.
            mode (str): "min" or "max". Default ``default_mode``.

        Returns:
            The checkpoint path, or None (with an error logged) if the trial has no
            checkpoint with a numeric ``metric`` value.

        Raises:
            ValueError: no ``mode`` and no ``default_mode``, or a bad ``mode``.
        """
        metric = metric or self.default_metric or TRAINING_ITERATION
        mode = self._validate_mode(mode)
        paths = self.get_trial_checkpoints_paths(trial, metric)
        scored = [(path, value) for path, value in paths if _is_comparable(value)]
        if not scored:
            if paths:
                logger.error("No checkpoint of trial %s has a numeric value for %r.", trial, metric)
            else:
                logger.error("No checkpoints have been found for trial %s.", trial)
            return None
        pick = max if mode == "max" else min
        return pick(scored, key=lambda item: item[1])[0]

    # -- metric/mode defaults --
    def _validate_metric(self, metric: str | None) -> str:
        if not metric and not self.default_metric:
            raise ValueError(
                "No `metric` has been passed and `default_metric` has not been set. "
                "Please specify the `metric` parameter."
            )
        return metric or self.default_metric

    def _validate_mode(self, mode: str | None) -> str:
        if not mode and not self.default_mode:
            raise ValueError(
                "No `mode` has been passed and `default_mode` has not been set. "
                "Please specify the `mode` parameter."
            )
        if mode and mode not in _MODES:
            raise ValueError(f"If set, `mode` has to be one of [min, max], got {mode!r}")
        return mode or self.default_mode


# ---- ExperimentAnalysis -------------------------------------------------------


class ExperimentAnalysis(Analysis):
    """Analyse one experiment: its trials, their results and the best of them.

    ``tune.run`` returns one of these; it can also be built from disk.

    Args:
        experiment_checkpoint_path (str): an ``experiment_state-*.json`` file,
            or the experiment directory (then its newest state file by name;
            with none, the trial directories found in it). An fsspec URL
            (``"s3://bucket/exp/name"``, an ``upload_dir/<name>``) is downloaded
            to a temporary directory first (removed when the interpreter exits).
        trials (list[Trial]): the Trial records (``tune.run`` passes its live
            ones). Default: built from the state file, or from the trial dirs.
        default_metric (str): metric used when a method gets none. Default: the
            one passed as ``tune.run(metric=...)`` (from the state file).
        default_mode (str): "min"/"max" used when a method gets none. Default:
            as ``default_metric``.

    Raises:
        ValueError: the path does not exist, or a bad ``default_mode``.
        TuneError: an unreadable state file, or no trials at all.

    .. code-block:: python

        analysis = ExperimentAnalysis("~/ray_results/my_exp")
        best = analysis.get_best_trial("loss", "min", scope="all")
    """

    def __init__(
        self,
        experiment_checkpoint_path: str,
        trials: list[Trial] | None = None,
        default_metric: str | None = None,
        default_mode: str | None = None,
    ):
        path = os.fspath(experiment_checkpoint_path)
        if "://" in path:
            from tune_async.sync.analysis import local_copy

            path = local_copy(path)
        path = os.path.abspath(os.path.expanduser(path))
        if not os.path.exists(path):
            raise ValueError(f"{path} is not a valid file or directory.")
        if os.path.isdir(path):
            experiment_dir, state_file = path, newest_state_file(path)
        else:
            experiment_dir, state_file = os.path.dirname(path), path
        self._experiment_dir = experiment_dir
        self._state_file = state_file
        self._loaded_state: dict | None = None
        if trials is not None:  # handed over by the run: the file is read only if asked
            self.trials = list(trials)
        elif state_file:
            self.trials = [_trial_from_state(cp, experiment_dir)
                           for cp in self._experiment_state.get("checkpoints", [])]
        else:
            self.trials = _trials_from_dirs(experiment_dir)
        if default_metric is None and default_mode is None and trials is None:
            # (a run hands over its trials with its own metric/mode: nothing to read)
            runner = self._experiment_state.get("runner_data") or {}
            default_metric, default_mode = runner.get("metric"), runner.get("mode")
        self._set_defaults(default_metric, default_mode)
        self._trial_dataframes = None

    def _trial_paths(self) -> list[str]:
        seen: dict[str, None] = {}
        for trial in self.trials:
            if trial.logdir and os.path.isdir(trial.logdir):
                seen.setdefault(trial.logdir, None)
        return list(seen)

    def _configs_by_path(self) -> dict[str, dict]:
        return {t.logdir: t.config for t in self.trials if t.logdir}

    # -- best trial --
    def get_best_trial(
        self,
        metric: str | None = None,
        mode: str | None = None,
        scope: str = "last",
        filter_nan_and_inf: bool = True,
    ) -> Trial | None:
        """The best trial of the experiment, or None (with a warning) if no trial reported ``metric``.

        Args:
            metric (str): the key to compare (nested keys "a/b"). Default: ``default_metric``.
            mode (str): "min" or "max". Default: ``default_mode``.
            scope (str): which value of each trial to compare: "last" (default),
                "avg", "last-5-avg", "last-10-avg" (the average of all/the last
                5/10 values), or "all" (the best value ever, i.e. max/min by ``mode``).
            filter_nan_and_inf (bool): skip trials whose value is NaN or infinite. Default True.

        Raises:
            ValueError: a bad ``scope`` or ``mode``, or no ``metric``/``mode`` and no default.
        """
        metric = self._validate_metric(metric)
        mode = self._validate_mode(mode)
        if scope not in SCOPES:
            raise ValueError(
                f"ExperimentAnalysis: attempting to get best trial for metric {metric} for "
                f"scope {scope} not in {list(SCOPES)}. If you didn't pass a `metric` parameter "
                "to `tune.run()`, you have to pass one when fetching the best trial."
            )
        stat = mode if scope == "all" else scope
        best_trial, best_score = None, None
        for trial in self.trials:
            score = (trial.metric_analysis.get(metric) or {}).get(stat)
            if not isinstance(score, Number) or isinstance(score, bool):
                continue
            if filter_nan_and_inf and not math.isfinite(score):
                continue
            if best_trial is None or _better(score, best_score, mode):
                best_trial, best_score = trial, score
        if best_trial is None:
            logger.warning(
                "Could not find best trial. Did you pass the correct `metric` parameter (got %r)?",
                metric,
            )
        return best_trial

    def get_best_config(
        self,
        metric: str | None = None,
        mode: str | None = None,
        scope: str = "last",
        filter_nan_and_inf: bool = True,
    ) -> dict | None:
        """The config of :meth:`get_best_trial` (same arguments), or None."""
        trial = self.get_best_trial(metric, mode, scope, filter_nan_and_inf)
        return trial.config if trial is not None else None

    def get_best_logdir(
        self,
        metric: str | None = None,
        mode: str | None = None,
        scope: str = "last",
        filter_nan_and_inf: bool = True,
    ) -> str | None:
        """The logdir of :meth:`get_best_trial` (same arguments), or None."""
        trial = self.get_best_trial(metric, mode, scope, filter_nan_and_inf)
        return trial.logdir if trial is not None else None

    # -- best_* with the default metric/mode --
    def _default_best_trial(self, what: str) -> Trial | None:
        if not self.default_metric or not self.default_mode:
            raise ValueError(
                f"To fetch the `{what}`, pass a `metric` and `mode` parameter to `tune.run()`. "
                "Alternatively, use the `get_best_trial(metric, mode)` method (or "
                "`get_best_config`/`get_best_logdir`) to set the metric and mode explicitly."
            )
        return self.get_best_trial(self.default_metric, self.default_mode)

    @property
    def best_trial(self) -> Trial | None:
        """The best trial by the default metric/mode (last result); None if none reported it."""
        return self._default_best_trial("best_trial")

    @property
    def best_config(self) -> dict | None:
        """The config of :attr:`best_trial`."""
        trial = self._default_best_trial("best_config")
        return trial.config if trial is not None else None

    @property
    def best_logdir(self) -> str | None:
        """The logdir of :attr:`best_trial`."""
        trial = self._default_best_trial("best_logdir")
        return trial.logdir if trial is not None else None

    @property
    def best_dataframe(self) -> pd.DataFrame | None:
        """The progress DataFrame of :attr:`best_trial` (None if it has none)."""
        trial = self._default_best_trial("best_dataframe")
        if trial is None or not trial.logdir:
            return None
        return self.trial_dataframes.get(trial.logdir)

    @property
    def best_result(self) -> dict | None:
        """The last result of :attr:`best_trial`."""
        trial = self._default_best_trial("best_result")
        return trial.last_result if trial is not None else None

    @property
    def best_result_df(self) -> pd.DataFrame | None:
        """The last result of :attr:`best_trial` as a one-row DataFrame (keys joined with ".")."""
        trial = self._default_best_trial("best_result_df")
        if trial is None:
            return None
        return _results_frame([trial])

    @property
    def best_checkpoint(self) -> str | None:
        """The best checkpoint path of :attr:`best_trial` by the default metric/mode (or None)."""
        trial = self._default_best_trial("best_checkpoint")
        if trial is None:
            return None
        return self.get_best_checkpoint(trial, self.default_metric, self.default_mode)

    # -- all trials --
    @property
    def results(self) -> dict[str, dict]:
        """Trial id -> last result, for every trial."""
        return {trial.trial_id: trial.last_result for trial in self.trials}

    @property
    def results_df(self) -> pd.DataFrame:
        """Every trial's last result, one row per trial (keys joined with "."), indexed by trial_id."""
        return _results_frame(self.trials)

    @property
    def _experiment_state(self) -> dict:
        if self._loaded_state is None:
            self._loaded_state = _load_state(self._state_file) if self._state_file else {}
        return self._loaded_state

    def stats(self) -> dict | None:
        """The experiment's stats from the state file (``start_time``, ``timestamp``)."""
        return self._experiment_state.get("stats")

    def runner_data(self) -> dict | None:
        """The controller's data from the state file (``name``, ``metric``, ``mode``, ...)."""
        return self._experiment_state.get("runner_data")


def _better(score: float, best: float, mode: str) -> bool:
    # Unfiltered NaN never wins over a number (1.x kept whichever trial came first).
    if math.isnan(best):
        return not math.isnan(score)
    return score > best if mode == "max" else score < best


def _metric_of(checkpoint: Checkpoint, metric: str) -> Any:
    try:
        return lookup_metric(checkpoint.result, metric)
    except KeyError:
        return None


def _is_comparable(value: Any) -> bool:
    # A number that is not NaN (NaN never wins, nor loses, a comparison).
    return isinstance(value, Number) and not isinstance(value, bool) and value == value


def _column_by_iteration(df: pd.DataFrame | None, metric: str) -> dict[int, Any]:
    """``training_iteration`` -> value of ``metric`` in a progress DataFrame (last row wins)."""
    if df is None or TRAINING_ITERATION not in df.columns or metric not in df.columns:
        return {}
    values = {}
    for iteration, value in zip(df[TRAINING_ITERATION], df[metric], strict=True):
        try:
            key = int(iteration)
        except (TypeError, ValueError):
            continue
        values[key] = value.item() if hasattr(value, "item") else value
    return values


def _results_frame(trials: list[Trial]) -> pd.DataFrame:
    records = []
    for trial in trials:
        record = flatten_dict(trial.last_result or {}, delimiter=".")
        record.setdefault(TRIAL_ID, trial.trial_id)
        records.append(record)
    if not records:
        return pd.DataFrame(index=pd.Index([], name=TRIAL_ID))
    return pd.DataFrame.from_records(records, index=TRIAL_ID)


# ---- building trials from disk ------------------------------------------------


def _load_state(state_file: str) -> dict:
    try:
        with open(state_file, encoding="utf-8") as f:
            state = json.load(f)
    except (OSError, ValueError) as exc:
        raise TuneError(f"Experiment state invalid: cannot read {state_file}: {exc}") from exc
    if not isinstance(state, dict) or "checkpoints" not in state:
        raise TuneError(f"Experiment state invalid; no checkpoints found in {state_file}.")
    checkpoints = state["checkpoints"]
    if not isinstance(checkpoints, list):
        raise TuneError(f"Experiment state invalid: `checkpoints` is not a list in {state_file}.")
    # 1.x wrote each trial as a JSON string inside the JSON document.
    state["checkpoints"] = [json.loads(cp) if isinstance(cp, str) else cp for cp in checkpoints]
    replay_journal(state, journal_path(state_file))  # changes since the snapshot (a crash)
    return state


def _relocate(logdir: str | None, experiment_dir: str) -> str | None:
    """The trial dir inside ``experiment_dir`` if the experiment was moved since it ran."""
    if not logdir or os.path.isdir(logdir):
        return logdir
    moved = os.path.join(experiment_dir, os.path.basename(os.path.normpath(logdir)))
    return moved if os.path.isdir(moved) else logdir


def _trial_from_state(state: dict, experiment_dir: str) -> Trial:
    if not isinstance(state, dict) or not state.get("trial_id"):
        raise TuneError(f"Experiment state invalid: a trial entry has no trial_id: {state!r}")
    try:
        status = TrialStatus(state.get("status") or "PENDING")
    except ValueError:
        raise TuneError(
            f"Experiment state invalid: trial {state['trial_id']} has unknown status "
            f"{state.get('status')!r}"
        ) from None
    logdir = _relocate(state.get("logdir"), experiment_dir)
    moved = logdir != state.get("logdir")
    trial = Trial(
        trainable_name=state.get("trainable_name") or "",
        config=state.get("config") or {},
        trial_id=str(state["trial_id"]),
        experiment_tag=state.get("experiment_tag") or "",
        evaluated_params=state.get("evaluated_params") or {},
        local_dir=experiment_dir if moved else (state.get("local_dir") or experiment_dir),
        logdir=logdir,
        status=status,
        last_result=state.get("last_result") or {},
        results_recorded=state.get("results_recorded") or 0,
        num_failures=state.get("num_failures") or 0,
        error_file=state.get("error_file"),
        error_msg=state.get("error_msg"),
        start_time=state.get("start_time"),
        last_update_time=state.get("last_update_time") or 0.0,
        metric_analysis=state.get("metric_analysis") or {},
    )
    name = state.get("trial_name")
    if name and name != trial.default_name():
        trial.custom_trial_name = name
    _fill_from_logdir(trial, state)
    moved_from = state.get("logdir") if moved else None
    manager = _checkpoint_manager_from_state(state, moved_from, logdir)
    if manager is not None:
        trial.extra["checkpoint_manager"] = manager
    return trial


def _checkpoint_manager_from_state(
    state: dict, moved_from: str | None, logdir: str | None
) -> CheckpointManager | None:
    """The trial's CheckpointManager from its ``checkpoints`` entry, if it has one."""
    entries = state.get("checkpoints")
    if not isinstance(entries, (list, dict)):
        return None
    try:
        manager = CheckpointManager.from_json(
            entries,
            keep_checkpoints_num=state.get("keep_checkpoints_num"),
            checkpoint_score_attr=state.get("checkpoint_score_attr"),
        )
    except (TypeError, ValueError) as exc:
        raise TuneError(
            f"Experiment state invalid: trial {state.get('trial_id')} has bad checkpoints: {exc}"
        ) from exc
    if moved_from and logdir:
        for checkpoint in manager.checkpoints:
            checkpoint.path = _rebase(checkpoint.path, moved_from, logdir)
            checkpoint.dir = _rebase(checkpoint.dir, moved_from, logdir)
    return manager


def _rebase(path: str | None, old_root: str, new_root: str) -> str | None:
    """``path`` moved from under ``old_root`` to under ``new_root`` (unchanged if outside)."""
    if not path:
        return path
    try:
        rel = os.path.relpath(path, old_root)
    except ValueError:
        return path
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        return path
    return os.path.normpath(os.path.join(new_root, rel))


def _fill_from_logdir(trial: Trial, state: dict) -> None:
    """Recover what an older or partial state entry lacks from the trial's own files."""
    need_results = not state.get("metric_analysis") or not state.get("last_result")
    if not trial.logdir or not (need_results or "config" not in state):
        return
    if "config" not in state:
        trial.config = _read_params(trial.logdir) or trial.config
    if need_results:
        results = read_results(trial.logdir)
        if results and not trial.last_result:
            trial.last_result = results[-1]
        if results and not trial.metric_analysis:
            for result in results:
                trial.update_metric_analysis(result)


def _trials_from_dirs(experiment_dir: str) -> list[Trial]:
    paths = _walk_trial_dirs(experiment_dir)
    if not paths:
        raise TuneError(f"No trials found in {experiment_dir}.")
    return [_trial_from_dir(path, experiment_dir) for path in paths]


def _trial_from_dir(logdir: str, experiment_dir: str) -> Trial:
    results = read_results(logdir)
    if not results:
        df = read_progress(logdir)
        rows = [] if df is None else df.to_dict("records")
        results = [unflatten_dict(row) for row in rows]
    last = results[-1] if results else {}
    config = _read_params(logdir)
    if config is None:
        config = last.get(CONFIG) if isinstance(last.get(CONFIG), dict) else {}
    dirname = os.path.basename(logdir)
    trial_id = str(last.get(TRIAL_ID) or dirname)
    # Without a state file the outcome is unknown: an error.txt means it failed.
    failed = os.path.exists(os.path.join(logdir, EXPR_ERROR_FILE))
    trial = Trial(
        trainable_name=_guess_trainable_name(dirname, trial_id),
        config=config,
        trial_id=trial_id,
        experiment_tag=str(last.get(EXPERIMENT_TAG) or ""),
        local_dir=experiment_dir,
        logdir=logdir,
        status=TrialStatus.ERROR if failed else TrialStatus.TERMINATED,
        last_result=last,
        results_recorded=len(results),
        error_file=os.path.join(logdir, EXPR_ERROR_FILE) if failed else None,
    )
    for result in results:
        trial.update_metric_analysis(result)
    return trial


def _guess_trainable_name(dirname: str, trial_id: str) -> str:
    # Default trial dirnames start with "<trainable>_<trial_id>_".
    marker = f"_{trial_id}"
    return dirname.split(marker, 1)[0] if marker in dirname else ""
