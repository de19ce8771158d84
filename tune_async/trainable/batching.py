"""Where a batch of results ends: no step runs that the driver would not have asked for."""

from __future__ import annotations

from tune_async.result import DONE, RESULT_DUPLICATE, SHOULD_CHECKPOINT
from tune_async.stopper import dict_criteria_met
from tune_async.utils.util import flatten_dict


def ends_batch(result: dict, stop: dict | None = None) -> bool:
    """Whether no further step may run after ``result`` in the same batch.

    The trial ends (``done``), a checkpoint must pair with this result, or the dict
    stop criteria are met. A result the criteria cannot be checked against (a key is
    missing) also ends the batch: the driver rejects it, so nothing may run past it.
    """
    if result.get(DONE) or result.get(SHOULD_CHECKPOINT) or result.get(RESULT_DUPLICATE):
        return True
    if not stop:
        return False
    flat = flatten_dict(result) if any("/" in k for k in stop) else result
    try:
        return dict_criteria_met(stop, flat)
    except Exception:  # noqa: BLE001 - an uncheckable result ends the batch
        return True
