"""The default callback list of ``tune.run`` (1.x's ``create_default_callbacks`` rules)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from typing import Any

from tune_async.callback import Callback
from tune_async.logger.logger import (
    DEFAULT_LOGGERS,
    CSVLogger,
    CSVLoggerCallback,
    JsonLogger,
    JsonLoggerCallback,
    LegacyLoggerCallback,
    Logger,
    LoggerCallback,
    TBXLogger,
    TBXLoggerCallback,
    UnifiedLogger,
)
from tune_async.progress import TrialProgressCallback, Verbosity, as_verbosity


def _split_loggers(loggers: Iterable[Any]) -> tuple[list[LoggerCallback], list[type[Logger]]]:
    if isinstance(loggers, (str, bytes, dict)) or not isinstance(loggers, Iterable):
        raise ValueError(
            f"Invalid value passed to loggers argument of tune.run(): {loggers!r}; expected a "
            f"list of Logger subclasses or LoggerCallback instances"
        )
    callbacks: list[LoggerCallback] = []
    classes: list[type[Logger]] = []
    for item in loggers:
        if isinstance(item, LoggerCallback):
            callbacks.append(item)
        elif isinstance(item, type) and issubclass(item, Logger):
            classes.append(item)
        else:
            raise ValueError(
                f"Invalid value passed to loggers argument of tune.run(): {item!r}; expected "
                f"a Logger subclass or a LoggerCallback instance"
            )
    return callbacks, classes


def _expand(classes: Iterable[type[Logger]]) -> list[type[Logger]]:
    # A legacy UnifiedLogger writes the default files itself: adding the default
    # callbacks too would write every result.json line twice.
    out: list[type[Logger]] = []
    for cls in classes:
        out += list(DEFAULT_LOGGERS) if issubclass(cls, UnifiedLogger) else [cls]
    return out


def _has_logger(callbacks: list[Callback], callback_type: type, logger_class: type) -> bool:
    for cb in callbacks:
        if isinstance(cb, callback_type):
            return True
        if isinstance(cb, LegacyLoggerCallback) and any(
            issubclass(cls, logger_class) for cls in _expand(cb.logger_classes)
        ):
            return True
    return False


def create_default_callbacks(
    callbacks: Iterable[Callback] | None,
    loggers: Iterable[Any] | None = None,
    metric: str | None = None,
    verbose: int | Verbosity = Verbosity.V3_TRIAL_DETAILS,
    disable_auto_loggers: bool = False,
) -> list[Callback]:
    """The callbacks ``tune.run`` uses: the user's, then the defaults that are missing.

    Args:
        callbacks: The user's callbacks (not modified; a new list is returned).
        loggers: ``tune.run(loggers=...)``: Logger subclasses (run through one
            LegacyLoggerCallback) and/or LoggerCallback instances (appended).
        metric: The experiment metric (the per-result line shows it).
        verbose: The run's verbosity; a TrialProgressCallback is added at 2 and 3
            unless one is already present.
        disable_auto_loggers: True when ``TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1``
            (read by the caller): no JSON/CSV logger callbacks are added.

    Raises:
        ValueError: if ``loggers`` holds anything other than Logger subclasses
            or LoggerCallback instances.
    """
    result: list[Callback] = list(callbacks or [])
    verbosity = as_verbosity(verbose)
    if loggers:
        logger_callbacks, logger_classes = _split_loggers(loggers)
        result += logger_callbacks
        if logger_classes:
            result.append(LegacyLoggerCallback(logger_classes))
    if verbosity >= Verbosity.V2_TRIAL_NORM and not any(
        isinstance(cb, TrialProgressCallback) for cb in result
    ):
        result.append(TrialProgressCallback(metric=metric, verbosity=verbosity))
    if not disable_auto_loggers:
        if not _has_logger(result, CSVLoggerCallback, CSVLogger):
            result.append(CSVLoggerCallback())
        if not _has_logger(result, JsonLoggerCallback, JsonLogger):
            result.append(JsonLoggerCallback())
        # 1.x adds TensorBoard files by default but fails without tensorboardX; here
        # they are written when tensorboardX is installed (extra "tbx"), skipped if not.
        if _tensorboardx_installed() and not _has_logger(result, TBXLoggerCallback, TBXLogger):
            result.append(TBXLoggerCallback())
    return result


def _tensorboardx_installed() -> bool:
    return _TBX_INSTALLED


# Looked up once, when tune_async is imported: the search walks sys.path on disk and
# must not run on the event loop at each arun.
_TBX_INSTALLED = importlib.util.find_spec("tensorboardX") is not None
