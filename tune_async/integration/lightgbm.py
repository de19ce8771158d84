"""LightGBM callbacks that report to Tune and checkpoint (``ray.tune.integration.lightgbm``).

Pass them to ``lightgbm.train(..., valid_sets=[test], valid_names=["eval"],
callbacks=[...])`` in a function trainable. Metric names are
``<valid name>-<metric>`` as in 1.x, e.g. ``"eval-binary_logloss"``
(``lightgbm.cv`` gives ``-mean`` and ``-stdv`` names).

Needs ``pip install "tune_async[lightgbm]"``.
"""

from __future__ import annotations

import os
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

require("lightgbm", "lightgbm")

__all__ = ["TuneCallback", "TuneReportCallback", "TuneReportCheckpointCallback"]


def eval_results(evaluation_result_list: list) -> dict:
    """``{data name: {metric: value}}`` from LightGBM's ``env.evaluation_result_list``.

    Entries are ``(data, metric, value, higher_is_better)``; ``lightgbm.cv`` adds
    the standard deviation as a fifth element, and names the value ``-mean``.
    """
    results: dict = {}
    for entry in evaluation_result_list:
        data_name, metric_name, value = entry[:3]
        by_metric = results.setdefault(data_name, {})
        if len(entry) > 4:
            by_metric[f"{metric_name}-mean"] = value
            by_metric[f"{metric_name}-stdv"] = entry[4]
        else:
            by_metric[metric_name] = value
    return results


class TuneCallback:
    """Base class for Tune's LightGBM callbacks (LightGBM calls it after each iteration)."""

    # LightGBM runs callbacks by their ``order``; 20 puts these after its own loggers.
    order = 20

    def __call__(self, env: Any) -> None:
        raise NotImplementedError


class TuneReportCallback(TuneCallback):
    """LightGBM to Tune reporting callback: reports the evaluation metrics each iteration.

    Args:
        metrics: Metrics to report to Tune. A str or list: each is a LightGBM metric
            key (e.g. ``"eval-binary_logloss"``), reported under the same name. A
            dict: each key is the name reported to Tune, its value the LightGBM
            metric key. None (default): report all of them.

    Example::

        lgb.train(config, train_set, valid_sets=[test_set], valid_names=["eval"],
                  callbacks=[TuneReportCallback({"loss": "eval-binary_logloss"})])
    """

    def __init__(self, metrics: Metrics = None) -> None:
        self._metrics = normalize_metrics(metrics)

    def _get_report_dict(self, env: Any) -> dict:
        values = flatten_dict(eval_results(env.evaluation_result_list), delimiter="-")
        return select_metrics(values, self._metrics)

    def __call__(self, env: Any) -> None:
        session.report(**self._get_report_dict(env))


class _TuneCheckpointCallback(TuneCallback):
    """Saves the booster into a Tune checkpoint every ``frequency`` iterations."""

    def __init__(self, filename: str = "checkpoint", frequency: int = 5) -> None:
        self._filename = filename
        self._frequency = frequency

    def __call__(self, env: Any) -> None:
        if is_due(env.iteration, self._frequency):
            with session.checkpoint_dir(step=env.iteration) as checkpoint_dir:
                env.model.save_model(os.path.join(checkpoint_dir, self._filename))


class TuneReportCheckpointCallback(TuneCallback):
    """LightGBM report and checkpoint callback.

    Saves the booster as ``<checkpoint dir>/<filename>`` every ``frequency``
    iterations (the first one included), then reports the metrics, so each
    checkpoint belongs to the result of the same iteration. Restore with
    ``lightgbm.Booster(model_file=path)``.

    Args:
        metrics: As for :class:`TuneReportCallback`.
        filename: Name of the model file inside the checkpoint directory.
            Default ``"checkpoint"``.
        frequency: Checkpoint every this many iterations. Default 5.
    """

    def __init__(
        self, metrics: Metrics = None, filename: str = "checkpoint", frequency: int = 5
    ) -> None:
        self._checkpoint = _TuneCheckpointCallback(filename, frequency)
        self._report = TuneReportCallback(metrics)

    def __call__(self, env: Any) -> None:
        self._checkpoint(env)
        self._report(env)
