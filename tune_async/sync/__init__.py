"""Syncing configuration (mirrors ``ray.tune.SyncConfig``)."""

from tune_async.sync.config import SyncConfig

__all__ = ["SyncConfig"]
