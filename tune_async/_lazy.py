"""Package attributes imported on first use (PEP 562), in Ray's worker processes.

A trial's worker imports ``tune_async`` to unpickle the trainable and its session
(``tune.report``): with eager imports it paid for the driver's whole surface
(controller, analysis, pandas) in every new worker process, about half a second of
each actor's start-up. There, names resolve on first access; ``dir()`` and
``from ... import *`` see them all. A driver imports everything with the package, as
before: a first ``await tune.arun(...)`` must not import modules on a running loop.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable
from typing import Any


def in_ray_worker() -> bool:
    """Whether this process is a Ray worker (ray is imported there before any task)."""
    worker = sys.modules.get("ray._private.worker")
    if worker is None:
        return False
    mode = getattr(getattr(worker, "global_worker", None), "mode", None)
    return mode is not None and mode == getattr(worker, "WORKER_MODE", object())


def import_all(package: str, names: dict[str, str], submodules: Iterable[str] = (),
               also: Iterable[str] = ()) -> None:
    """Import what ``lazy_attributes`` would on first use, now (and the ``also`` modules)."""
    module = sys.modules[package]
    for sub in submodules:
        setattr(module, sub, importlib.import_module(f"{package}.{sub}"))
    for attr, module_name in names.items():
        setattr(module, attr, getattr(importlib.import_module(module_name), attr))
    for module_name in also:
        importlib.import_module(module_name)


def lazy_attributes(package: str, names: dict[str, str], submodules: Iterable[str] = ()
                    ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``names`` maps an attribute to the
    module that defines it; each of ``submodules`` is imported as an attribute."""
    subs = frozenset(submodules)

    def __getattr__(attr: str) -> Any:
        module_name = names.get(attr)
        if module_name is not None:
            value = getattr(importlib.import_module(module_name), attr)
        elif attr in subs:
            value = importlib.import_module(f"{package}.{attr}")
        else:
            raise AttributeError(f"module {package!r} has no attribute {attr!r}")
        module = importlib.import_module(package)
        setattr(module, attr, value)  # the next access is a plain attribute lookup
        return value

    def __dir__() -> list[str]:
        module = importlib.import_module(package)
        return sorted(set(vars(module)) | set(names) | subs)

    return __getattr__, __dir__
