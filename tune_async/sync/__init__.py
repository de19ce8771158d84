"""Syncing: ``SyncConfig`` (mirrors ``ray.tune.SyncConfig``), storage, cloud uploads.

``upload_experiment`` / ``download_experiment`` do by hand what a run with
``SyncConfig(upload_dir=...)`` does (e.g. complete an upload a store that was away
could not take).
"""

from tune_async.sync.cloud import CloudSyncer, download_experiment, upload_experiment
from tune_async.sync.config import SyncConfig
from tune_async.sync.storage import Storage, SyncError, get_storage

__all__ = [
    "CloudSyncer",
    "Storage",
    "SyncConfig",
    "SyncError",
    "download_experiment",
    "get_storage",
    "upload_experiment",
]
