"""The one adapter between sync and async plugin hooks.

Plugins (schedulers, searchers, stoppers, callbacks, reporters) may implement
a hook as a plain method (the 1.x signature) or as a coroutine function; the
controller always goes through :func:`call_hook` and never cares which.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any


async def call_hook(hook: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``hook``; await its result if it returned an awaitable."""
    value = hook(*args, **kwargs)
    if inspect.isawaitable(value):
        value = await value
    return value


def overrides(obj: object, base: type, name: str) -> bool:
    """True if ``obj``'s class defines ``name`` differently from ``base`` (the no-op)."""
    mine = getattr(type(obj), name, None)
    return mine is not None and mine is not getattr(base, name, None)
