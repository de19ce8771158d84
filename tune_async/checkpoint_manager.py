"""1.x module path ``ray.tune.checkpoint_manager``."""

from tune_async.checkpoint import Checkpoint, CheckpointManager

__all__ = ["Checkpoint", "CheckpointManager"]
