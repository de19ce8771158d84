"""Test helpers for plugin authors: shared conformance suites (needs pytest, pytest-asyncio).

Writing a plugin? Get the contract checks for free
---------------------------------------------------
1. In your test module, import the base class for your plugin kind from
   ``tune_async.testing``: ``SearchAlgorithmConformance``, ``SearcherConformance``,
   ``TrialSchedulerConformance``, ``StopperConformance`` or ``CallbackConformance``
   (``ExecutorConformance`` for a ``trial_executor``).
2. Subclass it as ``class TestMyThing(...)`` (the bases are not collected themselves).
3. Override its factory: ``make_search_alg``, ``make_searcher``, ``make_scheduler``,
   ``make_stopper``, ``make_callback`` or ``make_executor``, returning a fresh plugin on
   each call (an executor also sets ``trials_at_once``: how many 1-CPU trials fit).
4. Adjust knobs if needed: ``metric``/``mode``, ``num_samples``, ``search_space()``
   (return ``{}`` for a searcher with its own space), ``make_result(...)``.
5. Run pytest: each test method drives your plugin the way the controller does,
   with sync or ``async def`` hooks, and names the broken rule when one fails.
6. Add your plugin-specific tests as extra methods on the same subclass.
"""

from __future__ import annotations

import pytest

# Plain ``assert`` in the suites should explain itself like one in a test module.
pytest.register_assert_rewrite(
    "tune_async.testing.conformance", "tune_async.testing.executor_conformance"
)

from tune_async.testing.conformance import (  # noqa: E402
    CallbackConformance,
    FakeRunner,
    SearchAlgorithmConformance,
    SearcherConformance,
    StopperConformance,
    TrialSchedulerConformance,
)
from tune_async.testing.executor_conformance import ExecutorConformance  # noqa: E402

__all__ = [
    "CallbackConformance",
    "ExecutorConformance",
    "FakeRunner",
    "SearchAlgorithmConformance",
    "SearcherConformance",
    "StopperConformance",
    "TrialSchedulerConformance",
]
