"""Large result batches travel as pickled chunks (tune_async.execution.packed)."""

from __future__ import annotations

import asyncio
import math

import pytest

from tune_async.execution.packed import (
    CHUNK,
    PACK_FROM,
    PACKED_AT_MOST,
    PackedResults,
    pack_results,
    unpack_results,
)


def _results(n: int, **extra) -> list[dict]:
    return [{"training_iteration": i, "loss": 1.0 / i, "config": {"lr": 0.1}, **extra}
            for i in range(1, n + 1)]


def test_a_small_batch_travels_as_it_is():
    batch = _results(PACK_FROM - 1)
    assert pack_results(batch) is batch


async def test_a_large_batch_comes_back_equal_and_in_order():
    batch = _results(CHUNK * 3 + 5)
    packed = pack_results(batch)
    assert isinstance(packed, PackedResults)
    assert len(packed.chunks) == math.ceil(len(batch) / CHUNK)
    assert await unpack_results(packed) == batch
    assert await unpack_results(batch) is batch  # a plain list is already unpacked


def test_what_plain_pickle_cannot_take_travels_as_a_list():
    batch = _results(PACK_FROM, fn=lambda: None)  # Ray's cloudpickle takes lambdas
    assert pack_results(batch) is batch


def test_a_batch_of_big_values_travels_as_a_list():
    import numpy as np

    def with_histograms(floats: int) -> list[dict]:
        return [dict(r, histogram=np.zeros(floats)) for r in _results(PACK_FROM)]

    batch = with_histograms(PACKED_AT_MOST // PACK_FROM // 8 + 1)  # float64s: over the bound
    assert pack_results(batch) is batch
    assert isinstance(pack_results(with_histograms(1000)), PackedResults)


@pytest.mark.ray
def test_object_references_and_actor_handles_travel_through_ray():
    import ray

    @ray.remote
    class Idle:
        pass

    for held in (ray.put(1), Idle.remote()):
        batch = _results(PACK_FROM, held=[held])
        assert pack_results(batch) is batch


async def test_unpacking_gives_the_loop_its_turns():
    # 20,000 results take several ms to unpickle: other tasks run in between.
    packed = pack_results(_results(20_000))
    turns = 0

    async def beside():
        nonlocal turns
        while True:
            await asyncio.sleep(0)
            turns += 1

    other = asyncio.create_task(beside())
    await asyncio.sleep(0)
    turns = 0
    try:
        results = await unpack_results(packed)
    finally:
        other.cancel()
    assert [r["training_iteration"] for r in results] == list(range(1, 20_001))
    assert turns >= 2
