"""PyTorch Lightning callbacks that report to Tune and checkpoint
(``ray.tune.integration.pytorch_lightning``).

Pass them to ``pl.Trainer(callbacks=[...])`` in a function trainable. They work
with Lightning 2 (``lightning.pytorch``, or the older ``pytorch_lightning``
package). Lightning 2 removed some hooks 1.x's callbacks could use: the
``init_start``/``init_end`` triggers are refused, ``epoch_*`` and ``batch_*``
are the training epochs and batches, ``keyboard_interrupt`` fires from
``on_exception``.

Needs ``pip install "tune_async[pytorch_lightning]"`` (torch first, a CPU build
on machines without a GPU).
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from tune_async.integration._common import Metrics, normalize_metrics, require, select_metrics
from tune_async.trainable import session

if importlib.util.find_spec("lightning") is not None:
    pl = require("lightning.pytorch", "pytorch_lightning")
else:
    pl = require("pytorch_lightning", "pytorch_lightning")

__all__ = ["TuneCallback", "TuneReportCallback", "TuneReportCheckpointCallback"]

ALLOWED_TRIGGERS = (
    "fit_start", "fit_end", "sanity_check_start", "sanity_check_end",
    "epoch_start", "epoch_end", "batch_start", "batch_end",
    "validation_batch_start", "validation_batch_end", "test_batch_start", "test_batch_end",
    "train_start", "train_end", "validation_start", "validation_end",
    "test_start", "test_end", "keyboard_interrupt",
)
_REMOVED_IN_LIGHTNING_2 = ("init_start", "init_end")


def as_trigger_list(on: str | list[str]) -> list[str]:
    """``on`` as a list of trigger names, each checked against :data:`ALLOWED_TRIGGERS`."""
    triggers = list(on) if isinstance(on, (list, tuple)) else [on]
    removed = [when for when in triggers if when in _REMOVED_IN_LIGHTNING_2]
    if removed:
        raise ValueError(
            f"Trigger(s) {removed} have no Lightning 2 hook (Trainer init hooks were removed); "
            f"use e.g. 'fit_start'. Must be one of {list(ALLOWED_TRIGGERS)}"
        )
    if any(when not in ALLOWED_TRIGGERS for when in triggers):
        raise ValueError(
            f"Invalid trigger time selected: {triggers}. Must be one of {list(ALLOWED_TRIGGERS)}"
        )
    return triggers


def metric_values(callback_metrics: dict) -> dict:
    """Lightning's ``trainer.callback_metrics`` (tensors) as plain numbers."""
    return {key: value.item() if hasattr(value, "item") else value
            for key, value in callback_metrics.items()}


class TuneCallback(pl.Callback):
    """Base class for Tune's Lightning callbacks: calls ``_handle(trainer, pl_module)``
    at the triggers.

    Args:
        on: When to act: one of :data:`ALLOWED_TRIGGERS` or a list of them.
            Default ``"validation_end"``.
    """

    def __init__(self, on: str | list[str] = "validation_end") -> None:
        super().__init__()
        self._on = as_trigger_list(on)

    def _handle(self, trainer: Any, pl_module: Any) -> None:
        raise NotImplementedError

    def _trigger(self, when: str, trainer: Any, pl_module: Any) -> None:
        if when in self._on:
            self._handle(trainer, pl_module)

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self._trigger("fit_start", trainer, pl_module)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self._trigger("fit_end", trainer, pl_module)

    def on_sanity_check_start(self, trainer: Any, pl_module: Any) -> None:
        self._trigger("sanity_check_start", trainer, pl_module)

    def on_sanity_check_end(self, trainer: Any, pl_module: Any) -> None:
        self._trigger("sanity_check_end", trainer, pl_module)

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._trigger("epoch_start", trainer, pl_module)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._trigger("epoch_end", trainer, pl_module)

    def on_train_batch_start(self, trainer: Any, pl_module: Any, *args: Any, **kwargs: Any) -> None:
        self._trigger("batch_start", trainer, pl_module)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, *args: Any, **kwargs: Any) -> None:
        self._trigger("batch_end", trainer, pl_module)

    def on_validation_batch_start(self, trainer: Any, pl_module: Any, *args: Any,
                                  **kwargs: Any) -> None:
        self._trigger("validation_batch_start", trainer, pl_module)

    def on_validation_batch_end(self, trainer: Any, pl_module: Any, *args: Any,
                                **kwargs: Any) -> None:
        self._trigger("validation_batch_end", trainer, pl_module)

    def on_test_batch_start(self, trainer: Any, pl_module: Any, *args: Any, **kwargs: Any) -> None:
        self._trigger("test_batch_start", trainer, pl_module)

    def on_test_batch_end(self, trainer: Any, pl_module: Any, *args: Any, **kwargs: Any) -> None:
        self._trigger("test_batch_end", trainer, pl_module)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._trigger("train_start", trainer, pl_module)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._trigger("train_end", trainer, pl_module)

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        self._trigger("validation_start", trainer, pl_module)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        self._trigger("validation_end", trainer, pl_module)

    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        self._trigger("test_start", trainer, pl_module)

    def on_test_end(self, trainer: Any, pl_module: Any) -> None:
        self._trigger("test_end", trainer, pl_module)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):
            self._trigger("keyboard_interrupt", trainer, pl_module)


class TuneReportCallback(TuneCallback):
    """PyTorch Lightning to Tune reporting callback: reports ``trainer.callback_metrics``
    (what the module logged with ``self.log``) at the trigger.

    Nothing is reported during Lightning's sanity check (its first validation
    steps before training).

    Args:
        metrics: Metrics to report to Tune. A str or list: each is a logged metric
            name (e.g. ``"val_loss"``), reported under the same name. A dict: each
            key is the name reported to Tune, its value the logged name. None
            (default): report all of them.
        on: When to report (see :data:`ALLOWED_TRIGGERS`). Default
            ``"validation_end"``.

    Example::

        trainer = pl.Trainer(max_epochs=10, callbacks=[
            TuneReportCallback({"loss": "val_loss", "mean_accuracy": "val_acc"})])
    """

    def __init__(self, metrics: Metrics = None, on: str | list[str] = "validation_end") -> None:
        super().__init__(on)
        self._metrics = normalize_metrics(metrics)

    def _get_report_dict(self, trainer: Any, pl_module: Any) -> dict | None:
        if trainer.sanity_checking:  # the pre-training validation is no result
            return None
        return select_metrics(metric_values(trainer.callback_metrics), self._metrics)

    def _handle(self, trainer: Any, pl_module: Any) -> None:
        report = self._get_report_dict(trainer, pl_module)
        if report is not None:
            session.report(**report)


class _TuneCheckpointCallback(TuneCallback):
    """Saves a Lightning checkpoint into a Tune checkpoint at each trigger."""

    def __init__(self, filename: str = "checkpoint", on: str | list[str] = "validation_end"):
        super().__init__(on)
        self._filename = filename

    def _handle(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return
        with session.checkpoint_dir(step=trainer.global_step) as checkpoint_dir:
            trainer.save_checkpoint(os.path.join(checkpoint_dir, self._filename))


class TuneReportCheckpointCallback(TuneCallback):
    """PyTorch Lightning report and checkpoint callback.

    Saves a Lightning checkpoint (``trainer.save_checkpoint``) as
    ``<checkpoint dir>/<filename>`` at each trigger, then reports the metrics, so
    each checkpoint belongs to the result reported with it. Restore with
    ``MyModule.load_from_checkpoint(path)`` or ``Trainer.fit(..., ckpt_path=path)``.

    Args:
        metrics: As for :class:`TuneReportCallback`.
        filename: Checkpoint file name in the checkpoint directory. Default
            ``"checkpoint"``.
        on: When to act (see :data:`ALLOWED_TRIGGERS`). Default ``"validation_end"``.
    """

    def __init__(self, metrics: Metrics = None, filename: str = "checkpoint",
                 on: str | list[str] = "validation_end") -> None:
        super().__init__(on)
        self._checkpoint = _TuneCheckpointCallback(filename, on)
        self._report = TuneReportCallback(metrics, on)

    def _handle(self, trainer: Any, pl_module: Any) -> None:
        self._checkpoint._handle(trainer, pl_module)
        self._report._handle(trainer, pl_module)
