"""XGBoost callbacks that report to Tune and checkpoint (``ray.tune.integration.xgboost``).

Pass them to ``xgboost.train(..., evals=[(dtest, "eval")], callbacks=[...])`` in a
function trainable. Metric names are ``<evals name>-<metric>`` as in 1.x, e.g.
``"eval-logloss"``; each iteration reports the latest value of each.

Needs ``pip install "tune_async[xgboost]"``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from tune_async.integration._common import (
    Metrics,
    is_due,
    normalize_metrics,
    require,
    select_metrics,
)
from tune_async.trainable import session
from tune_async.utils.util import flatten_dict

xgb = require("xgboost", "xgboost")

__all__ = ["TuneCallback", "TuneReportCallback", "TuneReportCheckpointCallback"]


def latest_eval_values(evals_log: Any) -> dict:
    """``{"eval-logloss": value, ...}`` from what XGBoost hands a callback.

    ``evals_log`` is ``{data name: {metric: [value per iteration]}}`` (xgboost >= 1.3;
    ``xgb.cv`` logs ``(mean, std)`` pairs, of which the mean is taken) or, from
    older xgboost, a list of ``(name, value)`` pairs.
    """
    if not isinstance(evals_log, Mapping):
        return dict(evals_log)
    values = {}
    for name, history in flatten_dict(dict(evals_log), delimiter="-").items():
        latest = history[-1] if isinstance(history, (list, tuple)) and history else history
        values[name] = latest[0] if isinstance(latest, tuple) else latest
    return values


class TuneCallback(xgb.callback.TrainingCallback):
    """Base class for Tune's XGBoost callbacks."""

    def __call__(self, env: Any) -> Any:
        """Old-style (xgboost < 1.3) callback call, forwarded to :meth:`after_iteration`."""
        return self.after_iteration(env.model, env.iteration, env.evaluation_result_list)

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        raise NotImplementedError


class TuneReportCallback(TuneCallback):
    """XGBoost to Tune reporting callback: reports the evaluation metrics each iteration.

    Args:
        metrics: Metrics to report to Tune. A str or list: each is an XGBoost metric
            key (e.g. ``"eval-logloss"``), reported under the same name. A dict: each
            key is the name reported to Tune, its value the XGBoost metric key.
            None (default): report all of them.

    Example::

        config = {"objective": "binary:logistic", "eval_metric": ["logloss", "error"]}
        xgb.train(config, dtrain, evals=[(dtest, "eval")], verbose_eval=False,
                  callbacks=[TuneReportCallback({"loss": "eval-logloss"})])
    """

    def __init__(self, metrics: Metrics = None) -> None:
        super().__init__()
        self._metrics = normalize_metrics(metrics)

    def _get_report_dict(self, evals_log: Any) -> dict:
        return select_metrics(latest_eval_values(evals_log), self._metrics)

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        session.report(**self._get_report_dict(evals_log))
        return False  # never asks XGBoost to stop: stopping is Tune's decision


class _TuneCheckpointCallback(TuneCallback):
    """Saves the booster into a Tune checkpoint every ``frequency`` iterations."""

    def __init__(self, filename: str = "checkpoint", frequency: int = 5) -> None:
        super().__init__()
        self._filename = filename
        self._frequency = frequency

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        if is_due(epoch, self._frequency):
            with session.checkpoint_dir(step=epoch) as checkpoint_dir:
                model.save_model(os.path.join(checkpoint_dir, self._filename))
        return False


class TuneReportCheckpointCallback(TuneCallback):
    """XGBoost report and checkpoint callback.

    Saves the booster as ``<checkpoint dir>/<filename>`` every ``frequency``
    iterations (the first one included), then reports the metrics, so each
    checkpoint belongs to the result of the same iteration. Restore with
    ``xgb.Booster(model_file=path)`` or ``xgb.train(..., xgb_model=path)``.

    Args:
        metrics: As for :class:`TuneReportCallback`.
        filename: Name of the model file inside the checkpoint directory.
            Default ``"checkpoint"``.
        frequency: Checkpoint every this many iterations. Default 5.
    """

    def __init__(
        self, metrics: Metrics = None, filename: str = "checkpoint", frequency: int = 5
    ) -> None:
        super().__init__()
        self._checkpoint = _TuneCheckpointCallback(filename, frequency)
        self._report = TuneReportCallback(metrics)

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        self._checkpoint.after_iteration(model, epoch, evals_log)
        self._report.after_iteration(model, epoch, evals_log)
        return False
