"""Keep long-lived objects out of Python's full garbage collections while a run lasts.

A full (generation-2) collection scans every tracked object and stops the event loop
(and every thread) meanwhile: after importing ray, pandas and a searcher library that
is ~150,000 objects and 60-100 ms; a run of 10,000 trials adds ~14 objects per trial,
and its full collections grew to 110-150 ms (0.6-1 us per object here).

So while an experiment runs:

- the heap that exists before it is frozen (``gc.freeze``), and an empty collection
  right after resets the collector's count of long-lived objects, which would
  otherwise put the first full collection off until a quarter of the old heap's size
  had been allocated anew (a 25 ms stall, measured);
- full collections come more often (``FULL_COLLECTION_THRESHOLD``), each smaller;
- after a full collection that took ``REFREEZE_AFTER_S`` or longer, its survivors are
  frozen too. They are live at that moment (the collection has just freed every
  unreachable cycle), so only what dies in a cycle later waits for the end of the run;
  and a run whose heap stops growing keeps its full collections under that time and
  freezes nothing more.

Everything is unfrozen when the last running experiment ends, so cyclic garbage made of
it is collected again afterwards. An application that froze its heap itself (e.g.
before forking workers) is left alone. ``TUNE_GC_FREEZE=0`` turns this off.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Iterator
from typing import Any

# A full collection this long (it scanned ~5,000 objects or more) has its survivors
# frozen: the next one scans only what is allocated after it.
REFREEZE_AFTER_S = 0.003

# Full collections after every second generation-1 one (Python's default: every
# eleventh): each then scans a fifth as much. With the refreeze, a 10,000-trial run's
# longest full collection took 4.4 ms, against 28-35 ms at the default and 150 ms
# without refreezing; the total time in collections fell too (75 ms against 100).
FULL_COLLECTION_THRESHOLD = 1

_running = 0  # experiments running in this process with the heap frozen by us
_full_began: float | None = None  # (collections never overlap: they hold the GIL)
_threshold_before: tuple[int, ...] | None = None


@contextlib.contextmanager
def frozen_heap(enabled: bool = True) -> Iterator[None]:
    global _running
    if not enabled or (_running == 0 and gc.get_freeze_count()):
        yield  # off, or the application manages frozen objects itself
        return
    if _running == 0:
        gc.freeze()
        gc.collect()  # scans nothing (all frozen): resets the long-lived count
        gc.callbacks.append(_refreeze_after_long_collection)
        _set_full_collection_threshold()
    _running += 1
    try:
        yield
    finally:
        _running -= 1
        if _running == 0:
            with contextlib.suppress(ValueError):
                gc.callbacks.remove(_refreeze_after_long_collection)
            _restore_full_collection_threshold()
            gc.unfreeze()


def _set_full_collection_threshold() -> None:
    global _threshold_before
    _threshold_before = gc.get_threshold()
    gc.set_threshold(*_threshold_before[:2], FULL_COLLECTION_THRESHOLD)


def _restore_full_collection_threshold() -> None:
    """Python's thresholds as they were, unless the application set its own meanwhile."""
    global _threshold_before
    before, _threshold_before = _threshold_before, None
    if before is not None and gc.get_threshold() == (*before[:2], FULL_COLLECTION_THRESHOLD):
        gc.set_threshold(*before)


def _refreeze_after_long_collection(phase: str, info: dict[str, Any]) -> None:
    global _full_began
    if info["generation"] != 2:
        return
    if phase == "start":
        _full_began = time.perf_counter()
        return
    began, _full_began = _full_began, None
    if began is not None and time.perf_counter() - began >= REFREEZE_AFTER_S:
        gc.freeze()
