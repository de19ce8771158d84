"""The trial actor: a long-lived Ray worker that hosts one trainable at a time.

The actor process is pooled by the executor and hosts trial after trial
(``reuse``: the same Trainable instance via ``reset_config``; otherwise a fresh
instance in the warm process). Results travel in batches: one round trip
carries every result the trainable produced within a short window.
"""

from __future__ import annotations

import os
import socket
from typing import Any


class TrialActor:
    def __init__(self, driver_sys_path: list[str] | None = None) -> None:
        # The trainable may live in a module only the driver's sys.path reaches (a
        # script's folder, a test directory): make the same folders importable here.
        import sys

        for entry in driver_sys_path or []:
            if entry and entry not in sys.path and os.path.isdir(entry):
                sys.path.append(entry)
        self._classes: dict[str, type] = {}
        self._trainable: Any = None

    def info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "hostname": socket.gethostname()}

    def setup(
        self,
        class_ref: list,
        config: dict,
        trial_info: Any,
        reuse: bool,
        checkpoint: Any = None,
    ) -> None:
        cls = self._load_class(class_ref[0])
        logdir = trial_info.logdir
        if logdir:
            os.makedirs(logdir, exist_ok=True)
            os.chdir(logdir)
        current = self._trainable
        if reuse and type(current) is cls and current.reset(config, trial_info):
            pass
        else:
            self._discard_trainable()
            self._trainable = cls(config=config, trial_info=trial_info)
        if checkpoint is not None:
            self._trainable.restore_from_object(checkpoint)

    def train_batch(self, max_results: int, window_s: float) -> list[dict]:
        return self._trainable.train_batch(max_results, window_s)

    def save_to_object(self) -> Any:
        return self._trainable.save_to_object()

    def stop(self, keep_for_reuse: bool) -> None:
        """End the trial; keep the instance only when the next trial may reuse it."""
        trainable = self._trainable
        if trainable is None:
            return
        if not keep_for_reuse:
            self._discard_trainable()

    def _discard_trainable(self) -> None:
        trainable, self._trainable = self._trainable, None
        if trainable is not None:
            trainable.stop()

    def _load_class(self, ref: Any) -> type:
        import ray

        key = ref.hex()
        cls = self._classes.get(key)
        if cls is None:
            cls = ray.get(ref)
            self._classes[key] = cls
        return cls
