"""1.x module path ``ray.tune.syncer`` (only ``SyncConfig`` so far)."""

from tune_async.sync import SyncConfig

__all__ = ["SyncConfig"]
