"""Keras callbacks that report to Tune and checkpoint (``ray.tune.integration.keras``).

Pass them to ``model.fit(..., callbacks=[...])`` in a function trainable. They
build on ``keras.callbacks.Callback`` (Keras 3, on any backend: TensorFlow, JAX
or PyTorch), or on ``tensorflow.keras`` where only TensorFlow is installed.

Needs ``pip install "tune_async[keras]"`` and a Keras backend.
"""

from __future__ import annotations

import importlib.util
import os
from collections import Counter
from typing import Any

from tune_async.integration._common import (
    Metrics,
    is_due,
    normalize_metrics,
    require,
    select_metrics,
)
from tune_async.trainable import session

if importlib.util.find_spec("keras") is None and importlib.util.find_spec("tensorflow"):
    _callbacks = require("tensorflow.keras.callbacks", "keras")
else:
    _callbacks = require("keras.callbacks", "keras")

__all__ = ["TuneCallback", "TuneReportCallback", "TuneReportCheckpointCallback"]

# When a callback can act; "batch_*" are the training batches (Keras' old names for them).
ALLOWED_TRIGGERS = (
    "batch_begin", "batch_end", "epoch_begin", "epoch_end",
    "train_batch_begin", "train_batch_end", "test_batch_begin", "test_batch_end",
    "predict_batch_begin", "predict_batch_end", "train_begin", "train_end",
    "test_begin", "test_end", "predict_begin", "predict_end",
)


def as_trigger_list(on: str | list[str]) -> list[str]:
    """``on`` as a list of trigger names, each checked against :data:`ALLOWED_TRIGGERS`."""
    triggers = list(on) if isinstance(on, (list, tuple)) else [on]
    if any(when not in ALLOWED_TRIGGERS for when in triggers):
        raise ValueError(
            f"Invalid trigger time selected: {triggers}. Must be one of {list(ALLOWED_TRIGGERS)}"
        )
    return triggers


def checkpoint_file_name(filename: str) -> str:
    """Keras 3 saves whole models only as ``.keras`` (or legacy ``.h5``) files: 1.x's
    default name ``"checkpoint"`` becomes ``"checkpoint.keras"``."""
    return filename if filename.endswith((".keras", ".h5")) else f"{filename}.keras"


class TuneCallback(_callbacks.Callback):
    """Base class for Tune's Keras callbacks: calls ``_handle(logs, when)`` at the triggers.

    Args:
        on: When to act: one of :data:`ALLOWED_TRIGGERS` or a list of them.
            Default ``"epoch_end"``.
    """

    def __init__(self, on: str | list[str] = "epoch_end") -> None:
        super().__init__()
        self._on = as_trigger_list(on)

    def _handle(self, logs: dict, when: str) -> None:
        raise NotImplementedError

    def _trigger(self, logs: dict | None, *whens: str) -> None:
        for when in whens:
            if when in self._on:
                self._handle(dict(logs or {}), when)

    def on_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self._trigger(logs, "batch_begin")

    def on_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._trigger(logs, "batch_end")

    # Keras calls the train_batch hooks, whose default forwards to the batch ones;
    # both names fire here since these overrides replace that default.
    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self._trigger(logs, "train_batch_begin", "batch_begin")

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._trigger(logs, "train_batch_end", "batch_end")

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._trigger(logs, "epoch_begin")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._trigger(logs, "epoch_end")

    def on_test_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self._trigger(logs, "test_batch_begin")

    def on_test_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._trigger(logs, "test_batch_end")

    def on_predict_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self._trigger(logs, "predict_batch_begin")

    def on_predict_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._trigger(logs, "predict_batch_end")

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._trigger(logs, "train_begin")

    def on_train_end(self, logs: dict | None = None) -> None:
        self._trigger(logs, "train_end")

    def on_test_begin(self, logs: dict | None = None) -> None:
        self._trigger(logs, "test_begin")

    def on_test_end(self, logs: dict | None = None) -> None:
        self._trigger(logs, "test_end")

    def on_predict_begin(self, logs: dict | None = None) -> None:
        self._trigger(logs, "predict_begin")

    def on_predict_end(self, logs: dict | None = None) -> None:
        self._trigger(logs, "predict_end")


class TuneReportCallback(TuneCallback):
    """Keras to Tune reporting callback: reports the Keras logs at the trigger.

    Args:
        metrics: Metrics to report to Tune. A str or list: each is a Keras log key
            (e.g. ``"val_loss"``), reported under the same name. A dict: each key
            is the name reported to Tune, its value the Keras log key. None
            (default): report all of them.
        on: When to report (see :data:`ALLOWED_TRIGGERS`). Default ``"epoch_end"``.

    Example::

        model.fit(x, y, validation_data=(x_val, y_val), epochs=10, verbose=0,
                  callbacks=[TuneReportCallback({"mean_accuracy": "accuracy"})])
    """

    def __init__(self, metrics: Metrics = None, on: str | list[str] = "epoch_end") -> None:
        super().__init__(on)
        self._metrics = normalize_metrics(metrics)

    def _handle(self, logs: dict, when: str | None = None) -> None:
        session.report(**select_metrics(logs, self._metrics))


class _TuneCheckpointCallback(TuneCallback):
    """Saves the model into a Tune checkpoint every ``frequency`` triggers."""

    def __init__(self, filename: str = "checkpoint", frequency: int | list[int] = 1,
                 on: str | list[str] = "epoch_end") -> None:
        if isinstance(frequency, list) and (not isinstance(on, list) or len(frequency) != len(on)):
            raise ValueError(
                "If you pass a list for checkpoint frequencies, the `on` parameter has to be "
                "a list with the same length."
            )
        super().__init__(on)
        self._filename = checkpoint_file_name(filename)
        self._frequency = frequency
        self._counter: Counter = Counter()
        self._cp_count = 0  # checkpoint steps only grow, whichever trigger saved

    def _frequency_of(self, when: str) -> int:
        if isinstance(self._frequency, list):
            return self._frequency[self._on.index(when)]
        return self._frequency

    def _handle(self, logs: dict, when: str) -> None:
        self._counter[when] += 1
        if is_due(self._counter[when], self._frequency_of(when)):
            with session.checkpoint_dir(step=self._cp_count) as checkpoint_dir:
                self.model.save(os.path.join(checkpoint_dir, self._filename), overwrite=True)
            self._cp_count += 1


class TuneReportCheckpointCallback(TuneCallback):
    """Keras report and checkpoint callback.

    Saves the whole model as ``<checkpoint dir>/<filename>.keras`` every
    ``frequency`` triggers, then reports the metrics, so each checkpoint belongs
    to the result reported with it. Restore with ``keras.models.load_model(path)``.

    Args:
        metrics: As for :class:`TuneReportCallback`.
        filename: Model file name in the checkpoint directory; ``.keras`` is added
            when it has no ``.keras``/``.h5`` suffix (Keras 3 needs one). Default
            ``"checkpoint"``.
        frequency: Checkpoint every this many triggers; a list gives one per
            trigger of ``on`` (which must then be a list of the same length).
            Default 1.
        on: When to act (see :data:`ALLOWED_TRIGGERS`). Default ``"epoch_end"``.
    """

    def __init__(self, metrics: Metrics = None, filename: str = "checkpoint",
                 frequency: int | list[int] = 1, on: str | list[str] = "epoch_end") -> None:
        super().__init__(on)
        self._checkpoint = _TuneCheckpointCallback(filename, frequency, on)
        self._report = TuneReportCallback(metrics, on)

    def _handle(self, logs: dict, when: str) -> None:
        self._checkpoint._handle(logs, when)
        self._report._handle(logs, when)

    def set_model(self, model: Any) -> None:
        # Keras gives the model to this callback only: the inner ones need it too.
        super().set_model(model)
        self._checkpoint.set_model(model)
        self._report.set_model(model)
