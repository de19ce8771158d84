"""Keep the heap that exists before a run out of Python's full garbage collections.

A full (generation-2) collection scans every tracked object: after importing ray,
pandas and a searcher library that is ~150,000 objects and 60-100 ms, during which
the event loop (and every thread) stops. Those objects live as long as the process,
so while an experiment runs they are frozen (``gc.freeze``): collections scan only
what the run itself allocates. They are unfrozen when the last running experiment
ends, so cyclic garbage made of them is collected again afterwards. An application
that froze its heap itself (e.g. before forking workers) is left alone.
``TUNE_GC_FREEZE=0`` turns this off.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

_running = 0  # experiments running in this process with the heap frozen by us


@contextlib.contextmanager
def frozen_heap(enabled: bool = True) -> Iterator[None]:
    global _running
    if not enabled or (_running == 0 and gc.get_freeze_count()):
        yield  # off, or the application manages frozen objects itself
        return
    if _running == 0:
        gc.freeze()
    _running += 1
    try:
        yield
    finally:
        _running -= 1
        if _running == 0:
            gc.unfreeze()
