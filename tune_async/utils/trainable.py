"""1.x module path ``ray.tune.utils.trainable``: ``with_parameters`` and ``TrainableUtil``."""

from __future__ import annotations

import os
import shutil
from typing import Any

from tune_async.trainable.with_parameters import with_parameters

__all__ = ["TrainableUtil", "with_parameters"]

_MARKER = ".is_checkpoint"


class TrainableUtil:
    """1.x's checkpoint-directory helpers, on the same layout tune_async writes.

    ``checkpoint_<index>`` directories hold a ``.is_checkpoint`` marker; the bytes of
    :meth:`checkpoint_to_object` are what ``Trainable.save_to_object`` returns and
    ``Trainable.restore_from_object`` takes.
    """

    @staticmethod
    def make_checkpoint_dir(checkpoint_dir: str, index: Any, override: bool = False) -> str:
        """Create ``checkpoint_dir/checkpoint_<index>`` (an int index is zero-padded to 6).

        Args:
            checkpoint_dir: The directory to create it in (usually a trial directory).
            index: The checkpoint's index (an iteration, or a string such as "default");
                None names it plain ``checkpoint``.
            override: Remove the directory first if it exists.

        Returns:
            The path of the checkpoint directory (marked with ``.is_checkpoint``).
        """
        suffix = "checkpoint"
        if index is not None:
            suffix += f"_{index:06d}" if isinstance(index, int) else f"_{index}"
        path = os.path.join(checkpoint_dir, suffix)
        if override and os.path.exists(path):
            shutil.rmtree(path)
        os.makedirs(path, exist_ok=True)
        open(os.path.join(path, _MARKER), "a").close()
        return path

    @staticmethod
    def find_checkpoint_dir(checkpoint_path: str) -> str:
        """The checkpoint directory holding ``checkpoint_path`` (the nearest directory,
        the path itself included, with a ``.is_checkpoint`` marker).

        Raises:
            FileNotFoundError: ``checkpoint_path`` does not exist or no enclosing
                directory is a checkpoint directory.
        """
        if not os.path.exists(checkpoint_path):
            raise FileNotFoundError(f"Path does not exist: {checkpoint_path}")
        probe = os.path.abspath(checkpoint_path)
        if not os.path.isdir(probe):
            probe = os.path.dirname(probe)
        while not os.path.exists(os.path.join(probe, _MARKER)):
            parent = os.path.dirname(probe)
            if parent == probe:
                raise FileNotFoundError(f"Checkpoint directory not found for {checkpoint_path}")
            probe = parent
        return probe

    @staticmethod
    def find_rel_checkpoint_dir(logdir: str, checkpoint_path: str) -> str:
        """The checkpoint directory of ``checkpoint_path``, relative to ``logdir``."""
        directory = TrainableUtil.find_checkpoint_dir(checkpoint_path)
        return os.path.relpath(directory, logdir)

    @staticmethod
    def checkpoint_to_object(checkpoint_path: str) -> bytes:
        """The checkpoint at ``checkpoint_path`` (with its directory) as bytes, the form
        ``Trainable.restore_from_object`` takes (an in-memory checkpoint)."""
        from tune_async.trainable.trainable import _pack

        return _pack(TrainableUtil.find_checkpoint_dir(checkpoint_path), checkpoint_path)

    pickle_checkpoint = checkpoint_to_object  # 1.x's older name for the same bytes

    @staticmethod
    def create_from_pickle(obj: bytes, tmpdir: str) -> str:
        """Write the checkpoint ``obj`` holds into ``tmpdir``; returns its checkpoint path."""
        from tune_async.trainable.trainable import _unpack

        return _unpack(obj, tmpdir)

    @staticmethod
    def get_checkpoints_paths(logdir: str) -> Any:
        """A DataFrame of the checkpoints in trial directory ``logdir``: columns
        ``training_iteration`` and ``chkpt_path``, by iteration."""
        import pandas as pd

        from tune_async.checkpoint import find_checkpoints_on_disk

        rows = [(c.iteration, c.path) for c in find_checkpoints_on_disk(logdir, False)]
        return pd.DataFrame(rows, columns=["training_iteration", "chkpt_path"])
