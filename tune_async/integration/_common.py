"""What the integrations share: lazy imports of their library, and metric selection."""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from types import ModuleType
from typing import Any, Union

Metrics = Union[str, list, dict, None]


def require(module: str, extra: str, *, purpose: str = "") -> ModuleType:
    """Import ``module``, or raise an ImportError that names the extra to install.

    Args:
        module: The library's import name, e.g. ``"xgboost"``.
        extra: The tune_async extra that installs it, e.g. ``"xgboost"``.
        purpose: What needs it, for the message (defaults to the module).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        what = purpose or f"tune_async.integration.{extra}"
        raise ImportError(
            f"{what} needs the {module!r} package, which is not installed. "
            f'Install it with: pip install "tune_async[{extra}]"'
        ) from exc


def normalize_metrics(metrics: Metrics) -> list | dict | None:
    """The 1.x ``metrics`` argument as None, a list of names or a ``{tune: lib}`` dict."""
    if metrics is None or isinstance(metrics, (list, dict)):
        return metrics or None
    if isinstance(metrics, str):
        return [metrics]
    if isinstance(metrics, tuple):
        return list(metrics)
    raise TypeError(
        f"metrics must be a str, a list of str or a dict {{tune_name: library_name}}, "
        f"got {type(metrics).__name__}."
    )


def select_metrics(values: Mapping[str, Any], metrics: list | dict | None) -> dict:
    """The dict to report to Tune: all ``values``, or the selected ones renamed.

    With a list each name is reported as it is; with a dict each key is the name
    reported to Tune and its value the library's name for the metric (1.x semantics).
    A name the library did not log raises a KeyError listing the names it did log,
    since a silently missing metric would leave the scheduler without its score.
    """
    if not metrics:
        return dict(values)
    pairs = metrics.items() if isinstance(metrics, dict) else ((m, m) for m in metrics)
    report = {}
    for tune_name, source_name in pairs:
        if source_name not in values:
            raise KeyError(
                f"Metric {source_name!r} was not logged by the training library; "
                f"logged metrics: {sorted(values)}"
            )
        report[tune_name] = values[source_name]
    return report


def is_due(count: int, frequency: int) -> bool:
    """Whether the ``count``-th event gets a checkpoint, at one every ``frequency`` events."""
    return frequency > 0 and count % frequency == 0


class OrderedWorker:
    """One background thread that runs blocking calls (HTTP, file writes) in submission order.

    Driver-side callbacks hand their blocking work here so the event loop never
    waits on it; :meth:`drain` lets an ``async`` hook wait for everything submitted
    so far without blocking the loop. A call that raises is logged and counted, and
    the ones after it still run: a tracking server's hiccup must not end the run.

    Args:
        name: Thread name prefix (shows in stack dumps).
        log: Logger for the failures.
    """

    def __init__(self, name: str, log: logging.Logger) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._log = log
        self.failures = 0

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
        return self._pool.submit(self._guarded, fn, args, kwargs)

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` after what was submitted before, and return its result (or raise)."""
        return await asyncio.wrap_future(self._pool.submit(fn, *args, **kwargs))

    async def drain(self) -> None:
        """Wait until every call submitted so far has run."""
        await asyncio.wrap_future(self._pool.submit(lambda: None))

    async def close(self) -> None:
        """Run what is queued, then end the thread."""
        await self.drain()
        self._pool.shutdown(wait=False)

    def _guarded(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception:  # noqa: BLE001 - logged; the experiment goes on
            self.failures += 1
            self._log.exception("%s failed", getattr(fn, "__qualname__", fn))
            return None
