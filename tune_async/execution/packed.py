"""Large result batches cross from a trial's process to the driver as pickled chunks.

Ray deserializes what an actor call returns in its own thread, holding the GIL, and
its deserializer takes about 2.7 us per small result dict: a batch of 570 results
(8 trials x 2,000 results) held the GIL for 1.6 ms, five times what plain pickle
takes, and the event loop waited for the GIL at every wake-up meanwhile. So a batch
of ``PACK_FROM`` results or more is pickled in the trial's process, ``CHUNK`` results
to a chunk; Ray then moves bytes (0.06 ms for that batch) and the driver unpickles
the chunks on the loop, yielding between them when its turn is over.

Whatever plain pickle cannot take, or must not (Ray's object references and actor
handles: only Ray's serializer registers them with their owner), and a batch of big
values (over ``PACKED_AT_MOST`` pickled) travel as they always did: the plain list,
pickled by Ray.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import attrs

from tune_async.utils.util import Pacer

CHUNK = 64  # results per chunk: unpickling one takes ~30 us on the driver
PACK_FROM = 32  # smaller batches cost Ray little to deserialize
# Larger, the batch holds big values (arrays): Ray hands those over without a copy, and
# their deserialization is no cost worth moving.
PACKED_AT_MOST = 8 << 20  # bytes


@attrs.frozen
class PackedResults:
    """A batch of results as pickled chunks, in order (see the module's docstring)."""

    chunks: tuple[bytes, ...]


def pack_results(results: list) -> list | PackedResults:
    """``results`` (or a host's answers) as chunks when there are many and plain pickle
    takes them all."""
    if len(results) < PACK_FROM:
        return results
    chunks, size = [], 0
    try:
        for start in range(0, len(results), CHUNK):
            chunks.append(_pickled(results[start:start + CHUNK]))
            size += len(chunks[-1])
            if size > PACKED_AT_MOST:
                return results
    except Exception:  # noqa: BLE001 - not for plain pickle: Ray pickles the list
        return results
    return PackedResults(tuple(chunks))


async def unpack_results(batch: list | PackedResults) -> list:
    """The results of a batch, unpickled on the caller's loop a turn at a time."""
    if not isinstance(batch, PackedResults):
        return batch
    pacer = Pacer()
    results: list = []
    for chunk in batch.chunks:
        results.extend(pickle.loads(chunk))
        await pacer.now_and_then()
    return results


class _NeedsRay(Exception):
    """The batch holds an object only Ray's serializer may pickle."""


class _PlainPickler(pickle.Pickler):
    # Called for objects of other than the builtin types only (a dict or a float never
    # pays for it): a result holding an ObjectRef or an actor handle goes through Ray.
    def reducer_override(self, obj: Any) -> Any:
        module = type(obj).__module__  # ("ray" for ObjectRef, "ray.actor" for handles)
        if module == "ray" or module.startswith("ray."):
            raise _NeedsRay(type(obj).__qualname__)
        return NotImplemented


def _pickled(chunk: list[dict]) -> bytes:
    out = io.BytesIO()
    _PlainPickler(out, protocol=pickle.HIGHEST_PROTOCOL).dump(chunk)
    return out.getvalue()
