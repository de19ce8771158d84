"""Result loggers (mirrors ``ray.tune.logger``)."""

from __future__ import annotations

from tune_async.logger.defaults import create_default_callbacks
from tune_async.logger.logger import (
    DEFAULT_LOGGERS,
    CSVLogger,
    CSVLoggerCallback,
    JsonLogger,
    JsonLoggerCallback,
    LegacyLoggerCallback,
    Logger,
    LoggerCallback,
    NoopLogger,
    TBXLogger,
    TBXLoggerCallback,
    UnifiedLogger,
    write_params,
)
from tune_async.progress import pretty_print  # 1.x path: ray.tune.logger.pretty_print

__all__ = [
    "DEFAULT_LOGGERS",
    "CSVLogger",
    "CSVLoggerCallback",
    "JsonLogger",
    "JsonLoggerCallback",
    "LegacyLoggerCallback",
    "Logger",
    "LoggerCallback",
    "NoopLogger",
    "TBXLogger",
    "TBXLoggerCallback",
    "UnifiedLogger",
    "create_default_callbacks",
    "pretty_print",
    "write_params",
]
