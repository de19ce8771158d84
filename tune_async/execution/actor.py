"""The trial actor: a long-lived Ray worker that hosts one trainable at a time.

The actor process is pooled by the executor and hosts trial after trial
(``reuse``: the same Trainable instance via ``reset_config``; otherwise a fresh
instance in the warm process). Results travel in batches: one round trip
carries every result the trainable produced within a short window.
"""

from __future__ import annotations

import contextlib
import os
import socket
from typing import Any

import attrs

from tune_async.execution.log_to_file import OutputCapture, log_file_paths
from tune_async.execution.packed import PackedResults, pack_results
from tune_async.result import (
    CHECKPOINT_PATH,
    RESULT_DUPLICATE,
    SHOULD_CHECKPOINT,
    TRAINING_ITERATION,
)
from tune_async.sync.node import localize_checkpoint, node_root, to_driver_path, to_node_path


class UncleanWorker(Exception):
    """The previous trial's stop (its cleanup) failed here: this worker takes no new trial.

    The executor sends a trial's setup right behind the previous trial's stop, without
    waiting for the stop's reply; a setup refused this way is sent to a fresh worker.
    """


class TrialActor:
    def __init__(self, driver_sys_path: list[str] | None = None,
                 driver_node_id: str | None = None) -> None:
        # The trainable may live in a module only the driver's sys.path reaches (a
        # script's folder, a test directory): make the same folders importable here.
        import sys

        for entry in driver_sys_path or []:
            if entry and entry not in sys.path and os.path.isdir(entry):
                sys.path.append(entry)
        self._classes: dict[str, type] = {}
        # Where the driver's node is (a checkpoint taken elsewhere is pulled from it), and
        # this node's root for trial directories (see tune_async.sync.node).
        self._driver_node_id = driver_node_id
        self._node_root = node_root()
        self._trainable: Any = None
        self._output: OutputCapture | None = None  # the running trial's log_to_file
        self._unclean: str | None = None  # why a trial's stop failed here (see UncleanWorker)

    def info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "hostname": socket.gethostname()}

    def node_id(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()

    def setup(
        self,
        class_ref: list,
        config: dict,
        trial_info: Any,
        reuse: bool,
        checkpoint: Any = None,
        log_to_file: Any = False,
        previous_stop: bool | None = None,
    ) -> None:
        """Set the trial up; ``previous_stop``: the previous trial's stop, carried by this
        call (its ``keep_for_reuse``), which runs first (its failure: UncleanWorker)."""
        if previous_stop is not None:
            with contextlib.suppress(Exception):  # recorded in _unclean, raised just below
                self.stop(previous_stop)
        if self._unclean is not None:
            raise UncleanWorker(self._unclean)
        cls = self._load_class(class_ref[0])
        if self._node_root:  # this node keeps the trial's directory under its own root
            trial_info = attrs.evolve(trial_info, logdir=to_node_path(trial_info.logdir))
        logdir = trial_info.logdir
        if logdir:
            os.makedirs(logdir, exist_ok=True)
            os.chdir(logdir)
        self._capture_output(log_to_file, logdir)
        current = self._trainable
        if reuse and type(current) is cls and current.reset(config, trial_info):
            pass
        else:
            self._discard_trainable()
            self._trainable = cls(config=config, trial_info=trial_info)
        if checkpoint is not None and checkpoint[0] == "path":
            checkpoint = ("path", self._local_checkpoint(checkpoint[1]))
        restore_into(self._trainable, checkpoint)

    def _local_checkpoint(self, path: str) -> str:
        """Where this node reads checkpoint ``path``: pulled from the driver's node when
        missing, unless the trainable fetches it from upload_dir itself (durable)."""
        if getattr(self._trainable, "restores_from_upload_dir", False):
            return to_node_path(path)
        return localize_checkpoint(path, self._driver_node_id)

    def train_batch(self, limits: Any, window_s: float) -> list[dict] | PackedResults:
        try:
            return self._sendable(run_batch(self._trainable, limits, window_s))
        finally:
            self._flush_output()

    def setup_and_train(self, setup: tuple, limits: Any, window_s: float,
                        previous_stop: bool | None = None) -> list[dict] | PackedResults:
        """A trial's setup and its first batch in one call (one round trip per trial less),
        after the previous trial's stop when it carries it."""
        try:
            self.setup(*setup, previous_stop=previous_stop)
            return self._sendable(run_batch(self._trainable, limits, window_s))
        finally:
            self._flush_output()

    def save(self) -> str:
        """A persistent checkpoint of the current state; returns its path."""
        return to_driver_path(self._trainable.save(), self._node_root)

    def _sendable(self, results: list[dict]) -> list[dict] | PackedResults:
        """The batch as the driver gets it: its paths, packed when large."""
        return pack_results(driver_paths(results, self._node_root))

    def save_to_object(self) -> Any:
        return self._trainable.save_to_object()

    def export_model(self, export_formats: list[str]) -> dict:
        """Export the trial's model into its directory (at its end, as 1.x)."""
        try:
            return self._trainable.export_model(export_formats)
        finally:
            self._flush_output()

    def cancel(self) -> None:
        """Cancel what the trainable runs now (thread-safe, beside a running batch).

        An async trainable gets ``asyncio.CancelledError`` where it awaits, so its
        ``finally`` blocks run; a batch waiting for it returns what it has. An executor
        that stops a trial with a fetch in flight calls this first (it needs a second
        thread into the actor, e.g. a Ray concurrency group), then ``stop``.
        """
        trainable = self._trainable
        if trainable is not None and hasattr(trainable, "cancel"):
            trainable.cancel()

    def stop(self, keep_for_reuse: bool) -> None:
        """End the trial; keep the instance only when the next trial may reuse it."""
        trainable = self._trainable
        try:
            if trainable is None:
                return
            if not keep_for_reuse:
                self._discard_trainable()
            elif hasattr(trainable, "stop_function"):
                # Kept warm, but this trial is over: its function ends now (an async one is
                # cancelled and its finally blocks run), not at the next trial's reset.
                trainable.stop_function()
        except BaseException as exc:
            self._unclean = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self._end_output()  # after cleanup(): its prints belong to this trial

    def _capture_output(self, log_to_file: Any, logdir: str | None) -> None:
        """Send this trial's fds 1/2 to its log files (ending any earlier trial's capture)."""
        self._end_output()
        paths = log_file_paths(log_to_file, logdir or os.getcwd())
        if any(paths):
            self._output = OutputCapture.start(*paths)

    def _flush_output(self) -> None:
        if self._output is not None:
            self._output.flush()

    def _end_output(self) -> None:
        output, self._output = self._output, None
        if output is not None:
            output.end()

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


@attrs.frozen
class InObjectStore:
    """A trial's state saved in memory and left in Ray's object store.

    The driver holds (and so owns) the reference; a restore sends the reference rather
    than the state's bytes: sent as an argument from the driver's loop, a 1 MB state cost
    1.5 ms of the loop's time per restore (PBT restores at every perturbation).
    """

    ref: Any


def restore_into(trainable: Any, checkpoint: tuple[str, Any] | None) -> None:
    """Restore from ``("path", checkpoint path)`` or ``("object", in-memory checkpoint)``."""
    if checkpoint is None:
        return
    kind, value = checkpoint
    if kind == "path":
        trainable.restore(value)
        return
    if isinstance(value, InObjectStore):
        import ray

        value = ray.get(value.ref)
    trainable.restore_from_object(value)


def driver_paths(results: list[dict], node_root: str | None) -> list[dict]:
    """Checkpoint paths as the driver names them (they differ under a node root)."""
    if node_root:
        for result in results:
            if result.get(CHECKPOINT_PATH):
                result[CHECKPOINT_PATH] = to_driver_path(result[CHECKPOINT_PATH], node_root)
    return results


def run_batch(trainable: Any, limits: Any, window_s: float) -> list:
    """Results of up to ``limits.max_results`` steps; checkpoints are taken right here.

    A result asking for a checkpoint (``should_checkpoint``, or every
    ``checkpoint_freq`` iterations for class trainables) ends the batch and is saved
    before any further step, so the checkpoint pairs with exactly that result. A
    result meeting the dict stop criteria ends the batch too (see ``ends_batch``).
    """
    results = trainable.train_batch(_batch_size(trainable, limits), window_s, limits.stop)
    if _wants_checkpoint(results, limits):
        results[-1][CHECKPOINT_PATH] = trainable.save()
    return results


async def arun_batch(trainable: Any, limits: Any, window_s: float, save: Any) -> list:
    """:func:`run_batch` awaited on the trainable's (shared) loop: its ``atrain_batch``;
    ``save`` is an async callable taking the checkpoint (off the loop: saving blocks)."""
    results = await trainable.atrain_batch(_batch_size(trainable, limits), window_s,
                                           limits.stop)
    if _wants_checkpoint(results, limits):
        results[-1][CHECKPOINT_PATH] = await save()
    return results


def _batch_size(trainable: Any, limits: Any) -> int:
    """The most results before the next decision or the next ``checkpoint_freq`` save."""
    max_results, freq = limits.max_results, limits.checkpoint_freq
    if freq > 0:
        max_results = min(max_results, freq - trainable.iteration % freq)
    return max_results


def _wants_checkpoint(results: list, limits: Any) -> bool:
    """Whether the batch's last result is to be paired with a checkpoint taken now."""
    if not results:  # cancelled while waiting (see TrialActor.cancel): nothing to save
        return False
    last, freq = results[-1], limits.checkpoint_freq
    wants = last.get(SHOULD_CHECKPOINT) or (
        freq > 0 and last.get(TRAINING_ITERATION, 0) % freq == 0
    )
    return bool(wants) and not last.get(RESULT_DUPLICATE) and CHECKPOINT_PATH not in last
