"""``SyncConfig``: where and how experiment files are synced (1.x fields and defaults)."""

from __future__ import annotations

from typing import Any

import attrs

CLOUD_PREFIXES = ("s3://", "gs://", "hdfs://")


def _check_upload_dir(_inst: Any, _attr: Any, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not value:
        raise ValueError(f"SyncConfig.upload_dir must be a URI string, got {value!r}")


def _check_period(_inst: Any, attr: Any, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"SyncConfig.{attr.name} must be a number of seconds >= 0, got {value!r}")


def _check_template_or_fn(_inst: Any, attr: Any, value: Any) -> None:
    if value is None or isinstance(value, bool) or callable(value):
        return
    if isinstance(value, str):
        if "{source}" not in value or "{target}" not in value:
            raise ValueError(
                f"SyncConfig.{attr.name} template must contain {{source}} and {{target}}, "
                f"got {value!r}"
            )
        return
    raise ValueError(
        f"SyncConfig.{attr.name} must be a function, a command template, a bool or None, "
        f"got {value!r}"
    )


@attrs.define
class SyncConfig:
    """Configuration for syncing trial and experiment files.

    Args:
        upload_dir: Cloud URI (``s3://``, ``gs://``, ``hdfs://`` ...) to upload
            the experiment directory to. Default None (no upload).
        sync_to_cloud: A function ``(source, target)`` or a command template with
            ``{source}`` and ``{target}`` used for uploads.
        sync_to_driver: Function, template or bool for worker → driver syncing;
            False disables it.
        sync_on_checkpoint: Sync a trial's checkpoint to the driver when it is
            taken. Default True.
        node_sync_period: Seconds between worker → driver syncs. Default 300.
        cloud_sync_period: Seconds between cloud uploads. Default 300.
    """

    upload_dir: str | None = attrs.field(default=None, validator=_check_upload_dir)
    sync_to_cloud: Any = attrs.field(default=None, validator=_check_template_or_fn)
    sync_to_driver: Any = attrs.field(default=None, validator=_check_template_or_fn)
    sync_on_checkpoint: bool = True
    node_sync_period: float = attrs.field(default=300, validator=_check_period)
    cloud_sync_period: float = attrs.field(default=300, validator=_check_period)
