"""Shared conformance tests for plugins: one base class per plugin kind.

Each class holds pytest test methods that check the documented contract of one
plugin kind through public interfaces only, the way the controller drives it.
The classes are not collected by themselves (their names do not start with
``Test``); subclass one in a test module, name the subclass ``Test...`` and
override its ``make_*`` factory::

    class TestMySearcher(SearcherConformance):
        def make_searcher(self):
            return MySearcher(seed=0)

Knobs (class attributes such as ``metric``, ``num_samples``) and helper methods
(``search_space``, ``make_result``, ``make_trial``) may be overridden too.
Async tests need pytest-asyncio; every hook is called through
:func:`tune_async._hooks.call_hook`, so coroutine hooks are exercised as well.
"""

from __future__ import annotations

import inspect
import os
import uuid
from collections import deque
from typing import Any

import cloudpickle
import pytest

from tune_async import transitions
from tune_async._hooks import call_hook, overrides
from tune_async.callback import HOOK_NAMES, Callback, CallbackList
from tune_async.checkpoint import Checkpoint
from tune_async.experiment import Experiment
from tune_async.result import (
    CONFIG,
    DATE,
    DONE,
    EXPERIMENT_ID,
    EXPERIMENT_TAG,
    HOSTNAME,
    NODE_IP,
    PID,
    TIME_THIS_ITER_S,
    TIME_TOTAL_S,
    TIMESTAMP,
    TRAINING_ITERATION,
    TRIAL_ID,
)
from tune_async.schedulers.trial_scheduler import Decision, Exploit
from tune_async.search.sample import Domain, choice, loguniform, randint, uniform
from tune_async.stopper import Stopper
from tune_async.suggest.search import TrialSuggestion
from tune_async.suggest.search_generator import SearchGenerator
from tune_async.suggest.suggestion import Searcher
from tune_async.transitions import Event
from tune_async.trial import Trial, TrialStatus, TrialView, unwrap

__all__ = [
    "CallbackConformance",
    "FakeRunner",
    "SearchAlgorithmConformance",
    "SearcherConformance",
    "StopperConformance",
    "TrialSchedulerConformance",
]

DECISIONS = ("CONTINUE", "PAUSE", "STOP")
WAITING = (TrialStatus.PENDING, TrialStatus.PAUSED)
EXTRA_KWARG = "conformance_unknown_kwarg"  # a keyword a future controller might pass


def _conformance_trainable(config: dict) -> None:
    """The tiny function trainable of the experiments handed to search algorithms."""


def _unresolved_paths(value: Any, path: tuple = ()) -> list[tuple]:
    """Paths in a config still holding a Domain, a grid search or an ``{"eval": ...}``."""
    if isinstance(value, Domain):
        return [path]
    if _is_grid_or_eval(value):
        return [path]
    if isinstance(value, dict):
        found: list[tuple] = []
        for key, item in value.items():
            found += _unresolved_paths(item, path + (key,))
        return found
    if isinstance(value, (list, tuple)):
        found = []
        for index, item in enumerate(value):
            found += _unresolved_paths(item, path + (index,))
        return found
    return []


def _is_grid_or_eval(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in ("grid_search", "eval")


def _leaves(space: dict, path: tuple = ()) -> list[tuple[tuple, Any]]:
    """``(path, spec)`` for every leaf of a search space (Domains, grids and constants)."""
    out: list[tuple[tuple, Any]] = []
    for key, value in space.items():
        if isinstance(value, dict) and not _is_grid_or_eval(value):
            out += _leaves(value, path + (key,))
        else:
            out.append((path + (key,), value))
    return out


def _lookup(config: dict, path: tuple) -> Any:
    for key in path:
        assert isinstance(config, dict) and key in config, (
            f"suggested config {config!r} lacks the search-space key {'/'.join(map(str, path))}"
        )
        config = config[key]
    return config


def _checked_bool(value: Any, what: str) -> bool:
    assert isinstance(value, bool), f"{what} must return a bool, got {value!r} ({type(value)})"
    return value


def _not_awaitable(value: Any, what: str) -> Any:
    # The controller calls these directly (not through call_hook): they must be sync.
    assert not inspect.isawaitable(value), f"{what} must not return an awaitable"
    return value


# ---------------------------------------------------------------------------
# Search algorithms
# ---------------------------------------------------------------------------


class SearchAlgorithmConformance:
    """Contract checks for a :class:`~tune_async.suggest.SearchAlgorithm`.

    Override :meth:`make_search_alg`. The algorithm is driven like the
    controller does: ``set_search_properties(metric, mode, search_space())``,
    ``add_configurations([experiment])`` with a real Experiment of
    ``num_samples`` samples, then ``next_trial()`` until ``is_finished()``,
    keeping up to ``max_live_trials`` trials live, reporting
    ``results_per_trial`` results each and completing the oldest when needed
    (every third completion is an error: ``on_trial_complete(id, None, True)``).
    """

    metric = "loss"
    mode = "min"
    num_samples = 4
    max_live_trials = 3
    results_per_trial = 2

    def make_search_alg(self) -> Any:
        """A fresh search algorithm (override)."""
        raise NotImplementedError

    def search_space(self) -> dict:
        """The experiment's ``config``; return ``{}`` for algorithms with their own space."""
        return {
            "x": uniform(0.0, 1.0),
            "n": randint(0, 10),
            "opt": choice(["a", "b", "c"]),
            "nested": {"lr": loguniform(1e-4, 1e-1)},
            "const": 3,
        }

    def expected_trials(self) -> int:
        """How many suggestions the space yields (override for grid searches)."""
        return self.num_samples

    def make_result(self, trial_id: str, config: dict, iteration: int, done: bool) -> dict:
        """A result as the controller hands it to the algorithm."""
        return {
            TRAINING_ITERATION: iteration,
            TIME_THIS_ITER_S: 0.01,
            TIME_TOTAL_S: 0.01 * iteration,
            TRIAL_ID: trial_id,
            DONE: done,
            CONFIG: config,
            self.metric: 1.0 / iteration + (sum(map(ord, trial_id)) % 7) / 10.0,
        }

    # ---- helpers -----------------------------------------------------------------
    def _experiment(self, local_dir: Any) -> Experiment:
        return Experiment(
            "conformance",
            _conformance_trainable,
            config=self.search_space(),
            num_samples=self.num_samples,
            local_dir=str(local_dir),
        )

    async def _prepared(self, local_dir: Any) -> tuple[Any, Experiment]:
        alg = self.make_search_alg()
        experiment = self._experiment(local_dir)
        await call_hook(alg.set_search_properties, self.metric, self.mode, self.search_space())
        await call_hook(alg.add_configurations, [experiment])
        return alg, experiment

    async def _next(self, alg: Any) -> TrialSuggestion | None:
        suggestion = await call_hook(alg.next_trial)
        assert suggestion is None or isinstance(suggestion, TrialSuggestion), (
            f"next_trial must return a TrialSuggestion or None, got {suggestion!r}"
        )
        return suggestion

    async def _report(self, alg: Any, trial_id: str, config: dict) -> None:
        for iteration in range(1, self.results_per_trial + 1):
            result = self.make_result(trial_id, config, iteration, done=False)
            await call_hook(alg.on_trial_result, trial_id, result)

    async def _complete(self, alg: Any, live: deque, counter: list) -> None:
        trial_id, config = live.popleft()
        counter[0] += 1
        if counter[0] % 3 == 0:  # the controller's call for a trial that errored for good
            await call_hook(alg.on_trial_complete, trial_id, None, True)
            return
        result = self.make_result(trial_id, config, self.results_per_trial + 1, done=True)
        await call_hook(alg.on_trial_complete, trial_id, result)

    async def _drive(
        self, alg: Any, limit: int | None = None, live: deque | None = None
    ) -> tuple[list[TrialSuggestion], deque]:
        """Suggest until finished (or ``limit`` suggestions); return them and the live trials."""
        suggestions: list[TrialSuggestion] = []
        live = deque(live or ())
        counter = [0]
        budget = 10 * (self.expected_trials() + len(live)) + 20
        for _ in range(budget):
            if limit is not None and len(suggestions) >= limit:
                return suggestions, live
            suggestion = await self._next(alg)
            if suggestion is None:
                if await call_hook(alg.is_finished):
                    while live:  # trials still running after the search ended
                        await self._complete(alg, live, counter)
                    return suggestions, live
                assert live, (
                    "next_trial returned None while no trial is live and is_finished() is "
                    "False: the controller would wait forever"
                )
                await self._complete(alg, live, counter)
                continue
            suggestions.append(suggestion)
            trial_id = suggestion.trial_id or uuid.uuid4().hex[:8]  # as the controller does
            await self._report(alg, trial_id, suggestion.config)
            live.append((trial_id, suggestion.config))
            if len(live) > self.max_live_trials:
                await self._complete(alg, live, counter)
        pytest.fail(f"the search algorithm did not finish within {budget} next_trial() calls")

    # ---- tests ---------------------------------------------------------------------
    @pytest.mark.asyncio
    async def test_set_search_properties_returns_bool(self) -> None:
        alg = self.make_search_alg()
        accepted = await call_hook(
            alg.set_search_properties, self.metric, self.mode, self.search_space()
        )
        _checked_bool(accepted, "set_search_properties")

    @pytest.mark.asyncio
    async def test_total_samples_after_add_configurations(self, tmp_path: Any) -> None:
        alg, _ = await self._prepared(tmp_path)
        total = alg.total_samples
        expected = self.expected_trials()
        assert isinstance(total, int) and total in (0, expected), (
            f"total_samples must be {expected} (the trials it will suggest) or 0 (unknown), "
            f"got {total!r}"
        )

    @pytest.mark.asyncio
    async def test_suggests_exactly_num_samples_then_finishes(self, tmp_path: Any) -> None:
        alg, _ = await self._prepared(tmp_path)
        suggestions, live = await self._drive(alg)
        assert len(suggestions) == self.expected_trials()
        assert not live
        assert await call_hook(alg.is_finished) is True
        for _ in range(3):
            assert await self._next(alg) is None, "next_trial must return None once finished"

    @pytest.mark.asyncio
    async def test_suggestions_are_well_formed(self, tmp_path: Any) -> None:
        alg, experiment = await self._prepared(tmp_path)
        suggestions, _ = await self._drive(alg)
        for suggestion in suggestions:
            assert suggestion.experiment.name == experiment.name
            assert suggestion.experiment.spec["run"] == experiment.spec["run"]
            assert isinstance(suggestion.config, dict)
            assert isinstance(suggestion.experiment_tag, str)
            assert isinstance(suggestion.evaluated_params, dict)
            assert all(isinstance(k, str) for k in suggestion.evaluated_params)
            assert suggestion.trial_id is None or isinstance(suggestion.trial_id, str)

    @pytest.mark.asyncio
    async def test_trial_ids_are_unique(self, tmp_path: Any) -> None:
        alg, _ = await self._prepared(tmp_path)
        suggestions, _ = await self._drive(alg)
        ids = [s.trial_id for s in suggestions if s.trial_id is not None]
        assert len(ids) == len(set(ids)), f"duplicate trial ids: {ids}"

    @pytest.mark.asyncio
    async def test_configs_are_resolved(self, tmp_path: Any) -> None:
        alg, _ = await self._prepared(tmp_path)
        suggestions, _ = await self._drive(alg)
        space = self.search_space()
        for suggestion in suggestions:
            unresolved = _unresolved_paths(suggestion.config)
            assert not unresolved, f"unresolved values at {unresolved} in {suggestion.config!r}"
            for path, spec in _leaves(space):
                value = _lookup(suggestion.config, path)
                if isinstance(spec, Domain):
                    assert spec.is_valid(value), f"{path}: {value!r} is outside {spec!r}"
                elif not _unresolved_paths(spec):
                    assert value == spec, f"{path}: constant {spec!r} became {value!r}"

    @pytest.mark.asyncio
    async def test_set_finished_stops_suggestions(self, tmp_path: Any) -> None:
        alg, _ = await self._prepared(tmp_path)
        await call_hook(alg.set_finished)
        assert await call_hook(alg.is_finished) is True
        assert await self._next(alg) is None

    @pytest.mark.asyncio
    @pytest.mark.parametrize("split", ["start", "middle"])
    async def test_state_round_trip_continues(self, tmp_path: Any, split: str) -> None:
        alg, _ = await self._prepared(tmp_path)
        limit = 0 if split == "start" else max(1, self.expected_trials() // 2)
        first, live = await self._drive(alg, limit=limit)
        try:
            state = _not_awaitable(alg.get_state(), "get_state")
        except NotImplementedError:
            pytest.skip("the search algorithm keeps no state (get_state not implemented)")
        assert isinstance(state, dict), f"get_state must return a dict, got {state!r}"
        blob = cloudpickle.dumps(state)
        # Resume as tune.run does: set_search_properties, then set_state (no add_configurations).
        restored = self.make_search_alg()
        await call_hook(
            restored.set_search_properties, self.metric, self.mode, self.search_space()
        )
        _not_awaitable(restored.set_state(cloudpickle.loads(blob)), "set_state")
        rest, _ = await self._drive(restored, live=live)
        assert len(first) + len(rest) == self.expected_trials()
        first_ids = {s.trial_id for s in first if s.trial_id}
        repeated = first_ids & {s.trial_id for s in rest if s.trial_id}
        assert not repeated, f"trial ids repeated after set_state: {sorted(repeated)}"
        assert await call_hook(restored.is_finished) is True


class SearcherConformance(SearchAlgorithmConformance):
    """Contract checks for a :class:`~tune_async.suggest.Searcher` (run by SearchGenerator).

    Override :meth:`make_searcher`; everything in
    :class:`SearchAlgorithmConformance` then runs on ``SearchGenerator(searcher)``.
    """

    def make_searcher(self) -> Searcher:
        """A fresh searcher (override)."""
        raise NotImplementedError

    def make_search_alg(self) -> SearchGenerator:
        return SearchGenerator(self.make_searcher())

    def test_is_a_searcher(self) -> None:
        assert isinstance(self.make_searcher(), Searcher)

    def test_implements_on_trial_complete(self) -> None:
        assert overrides(self.make_searcher(), Searcher, "on_trial_complete"), (
            "a Searcher must implement on_trial_complete (required, as in 1.x)"
        )

    @pytest.mark.asyncio
    async def test_accepted_metric_is_kept(self) -> None:
        searcher = self.make_searcher()
        accepted = await call_hook(
            searcher.set_search_properties, self.metric, self.mode, self.search_space()
        )
        if accepted:  # tune.run raises if an accepting searcher reports another metric
            assert searcher.metric == self.metric


# ---------------------------------------------------------------------------
# Trial schedulers
# ---------------------------------------------------------------------------


def _checked_decision(value: Any) -> Decision:
    if isinstance(value, Decision):
        return value
    if isinstance(value, Exploit):
        return Decision(exploit=value)
    assert value in DECISIONS, (
        f"on_trial_result returned {value!r}, not one of {DECISIONS} or a Decision")
    return Decision(action=value)


def _holds_trials(value: Any, depth: int = 0) -> bool:
    if isinstance(value, (Trial, TrialView)):
        return True
    if depth > 6:
        return False
    if isinstance(value, dict):
        items = list(value.keys()) + list(value.values())
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
    elif hasattr(value, "__dict__"):
        items = list(vars(value).values())
    else:
        return False
    return any(_holds_trials(item, depth + 1) for item in items)


class FakeRunner:
    """A tiny runner view: ``get_trials()``, ``get_trial(id)``, ``has_resources_for_trial``.

    Args:
        trials: The trial views, in creation order.
        capacity: How many trials may run at once (None: unlimited).
        blocked: Trial ids that never fit.
    """

    def __init__(
        self, trials: list[TrialView], capacity: int | None = None, blocked: Any = ()
    ) -> None:
        self.trials = list(trials)
        self.capacity = capacity
        self.blocked = set(blocked)
        self.search_alg: Any = None

    def waiting_trials(self) -> Any:
        """PENDING trials in creation order, then PAUSED ones."""
        for status in WAITING:
            yield from (t for t in self.trials if t.status is status)

    def get_trials(self) -> list[TrialView]:
        return list(self.trials)

    def get_trial(self, trial_id: str) -> TrialView | None:
        return next((t for t in self.trials if t.trial_id == trial_id), None)

    def has_resources_for_trial(self, trial: Any) -> bool:
        if unwrap(trial).trial_id in self.blocked:
            return False
        if self.capacity is None:
            return True
        running = sum(t.status is TrialStatus.RUNNING for t in self.trials)
        return running < self.capacity


_PATHS = {
    TrialStatus.PENDING: (),
    TrialStatus.RUNNING: (Event.START,),
    TrialStatus.PAUSED: (Event.START, Event.PAUSE),
    TrialStatus.TERMINATED: (Event.START, Event.COMPLETE),
    TrialStatus.ERROR: (Event.START, Event.FAIL),
}


class TrialSchedulerConformance:
    """Contract checks for a :class:`~tune_async.schedulers.TrialScheduler`.

    Override :meth:`make_scheduler`. Trials are :class:`~tune_async.trial.Trial`
    records handed over as read-only ``TrialView`` s (as the controller does),
    moved only through the transition table; the runner is a :class:`FakeRunner`.
    """

    metric = "loss"
    mode = "min"
    num_trials = 4
    max_iterations = 6
    capacity = 2

    def make_scheduler(self) -> Any:
        """A fresh scheduler (override)."""
        raise NotImplementedError

    def make_trial(self, index: int) -> Trial:
        return Trial(
            trainable_name="conformance",
            config={"index": index},
            trial_id=f"conf_{index:05d}",
            experiment_tag=str(index),
        )

    def make_result(self, trial: Any, iteration: int, metrics: set[str]) -> dict:
        index = trial.config.get("index", 0)
        value = (index + 1) / iteration
        result = {
            TRAINING_ITERATION: iteration,
            TIME_THIS_ITER_S: 1.0,
            TIME_TOTAL_S: float(iteration),
            TRIAL_ID: trial.trial_id,
            DONE: False,
        }
        result.update({name: value for name in metrics})
        return result

    # ---- helpers -----------------------------------------------------------------
    async def _prepared(self) -> tuple[Any, set[str]]:
        scheduler = self.make_scheduler()
        await call_hook(scheduler.set_search_properties, self.metric, self.mode)
        metrics = {self.metric}
        own = getattr(scheduler, "metric", None)
        if isinstance(own, str):
            metrics.add(own)
        return scheduler, metrics

    async def _added(self, scheduler: Any, count: int) -> tuple[list[TrialView], FakeRunner]:
        views = [TrialView(self.make_trial(i)) for i in range(count)]
        runner = FakeRunner(views, capacity=self.capacity)
        for view in views:
            await call_hook(scheduler.on_trial_add, runner, view)
        return views, runner

    async def _choose(self, scheduler: Any, runner: FakeRunner) -> Any:
        chosen = await call_hook(scheduler.choose_trial_to_run, runner)
        if chosen is None:
            return None
        again = await call_hook(scheduler.choose_trial_to_run, runner)
        assert again is not None and unwrap(again) is unwrap(chosen), (
            f"choose_trial_to_run is not idempotent: {chosen} then {again}"
        )
        trial = unwrap(chosen)
        assert any(unwrap(t) is trial for t in runner.trials), f"{chosen} is not a runner trial"
        assert trial.status in WAITING, f"chose {chosen} in status {trial.status}"
        assert runner.has_resources_for_trial(chosen), f"chose {chosen}, which does not fit"
        return chosen

    async def _start_chosen(self, scheduler: Any, runner: FakeRunner) -> None:
        for _ in range(len(runner.trials) + 1):
            chosen = await self._choose(scheduler, runner)
            if chosen is None:
                return
            trial = unwrap(chosen)
            if trial.status is TrialStatus.PAUSED:
                transitions.apply(trial, Event.UNPAUSE)
            transitions.apply(trial, Event.START)
        pytest.fail("choose_trial_to_run kept choosing trials beyond the runner's capacity")

    async def _in_statuses(self, scheduler: Any) -> tuple[dict, FakeRunner]:
        statuses = list(_PATHS) + [TrialStatus.PENDING]
        views, runner = await self._added(scheduler, len(statuses))
        runner.capacity = None
        by_status: dict[TrialStatus, list[TrialView]] = {}
        for view, status in zip(views, statuses, strict=True):
            for event in _PATHS[status]:
                transitions.apply(unwrap(view), event)
            if status is TrialStatus.TERMINATED:
                result = dict(self.make_result(view, 1, {self.metric}), done=True)
                await call_hook(scheduler.on_trial_complete, runner, view, result)
            elif status is TrialStatus.ERROR:
                await call_hook(scheduler.on_trial_error, runner, view)
            by_status.setdefault(status, []).append(view)
        return by_status, runner

    # ---- tests ---------------------------------------------------------------------
    @pytest.mark.asyncio
    async def test_set_search_properties_none_is_accepted(self) -> None:
        scheduler = self.make_scheduler()
        # tune.run passes (None, None) when the user gave no metric/mode.
        accepted = await call_hook(scheduler.set_search_properties, None, None)
        assert _checked_bool(accepted, "set_search_properties(None, None)") is True

    @pytest.mark.asyncio
    async def test_set_search_properties_refuses_when_it_has_its_own(self) -> None:
        scheduler = self.make_scheduler()
        accepted = await call_hook(scheduler.set_search_properties, self.metric, self.mode)
        if _checked_bool(accepted, "set_search_properties") and hasattr(scheduler, "metric"):
            assert scheduler.metric == self.metric
        other = "conformance_other_metric"
        again = await call_hook(scheduler.set_search_properties, other, "max")
        assert _checked_bool(again, "set_search_properties") is False, (
            "a scheduler that already has a metric/mode must refuse new ones (return False)"
        )

    @pytest.mark.asyncio
    async def test_lifecycle_decisions_and_completion(self) -> None:
        scheduler, metrics = await self._prepared()
        views, runner = await self._added(scheduler, self.num_trials)
        iterations = {v.trial_id: 0 for v in views}
        failing = views[1].trial_id if len(views) > 1 else None
        for _ in range(self.num_trials * self.max_iterations * 4):
            await self._start_chosen(scheduler, runner)
            running = [v for v in views if v.status is TrialStatus.RUNNING]
            if not running:
                waiting = [v for v in views if v.status in WAITING]
                assert not waiting, f"nothing runs but {waiting} wait and none was chosen"
                break
            for view in running:
                await self._advance(scheduler, runner, view, iterations, failing, metrics)
        else:
            pytest.fail("the trials did not finish")
        assert all(v.status.is_finished for v in views)
        assert await call_hook(scheduler.choose_trial_to_run, runner) is None

    async def _advance(
        self, scheduler: Any, runner: FakeRunner, view: TrialView, iterations: dict,
        failing: str | None, metrics: set[str],
    ) -> None:
        trial = unwrap(view)
        iterations[view.trial_id] += 1
        iteration = iterations[view.trial_id]
        if view.trial_id == failing and iteration == 2:
            transitions.apply(trial, Event.FAIL)
            await call_hook(scheduler.on_trial_error, runner, view)
            return
        result = self.make_result(view, iteration, metrics)
        self._check_hint(scheduler, runner, view)
        if iteration >= self.max_iterations:
            result[DONE] = True
            trial.last_result = result
            transitions.apply(trial, Event.COMPLETE)
            await call_hook(scheduler.on_trial_complete, runner, view, result)
            return
        trial.last_result = result
        decision = _checked_decision(
            await call_hook(scheduler.on_trial_result, runner, view, result))
        for trial_id in decision.stop_trials:
            other = runner.get_trial(trial_id)
            assert other is not None, f"Decision.stop_trials names an unknown trial {trial_id!r}"
            if other.status in WAITING:
                transitions.apply(unwrap(other), Event.STOP)
                await call_hook(scheduler.on_trial_remove, runner, other)
        for trial_id, exploit in decision.exploit_waiting:
            other = runner.get_trial(trial_id)
            assert other is not None and other.status is TrialStatus.PAUSED, (
                f"Decision.exploit_waiting names {trial_id!r}, which is not a paused trial")
            assert runner.get_trial(exploit.donor) is not None, (
                f"Exploit names an unknown donor {exploit.donor!r}")
            unwrap(other).config = dict(exploit.config)
            transitions.apply(unwrap(other), Event.EXPLOIT)
        if decision.exploit is not None:
            donor = runner.get_trial(decision.exploit.donor)
            assert donor is not None, f"Exploit names an unknown donor {decision.exploit.donor!r}"
            assert isinstance(decision.exploit.config, dict), "Exploit.config must be a dict"
            trial.config = dict(decision.exploit.config)
            transitions.apply(trial, Event.EXPLOIT)
        elif decision.action == "PAUSE":
            transitions.apply(trial, Event.PAUSE)
        elif decision.action == "STOP":
            transitions.apply(trial, Event.STOP)

    @staticmethod
    def _check_hint(scheduler: Any, runner: FakeRunner, view: TrialView) -> None:
        """``results_before_decision`` must be None or a positive int."""
        hint = getattr(scheduler, "results_before_decision", None)
        allowed = hint(runner, view) if hint is not None else 1
        assert allowed is None or (isinstance(allowed, int) and allowed >= 1), (
            f"results_before_decision returned {allowed!r}: expected None or an int >= 1")

    @pytest.mark.asyncio
    async def test_state_round_trip_continues(self) -> None:
        """get_state() is picklable and names trials by id; set_state continues the schedule."""
        scheduler, metrics = await self._prepared()
        views, runner = await self._added(scheduler, self.num_trials)
        iterations = {v.trial_id: 0 for v in views}
        for _ in range(2):
            await self._start_chosen(scheduler, runner)
            for view in [v for v in views if v.status is TrialStatus.RUNNING]:
                await self._advance(scheduler, runner, view, iterations, None, metrics)
        state = scheduler.get_state() if hasattr(scheduler, "get_state") else None
        if state is None:
            return  # nothing to keep: resume re-adds the trials through on_trial_add
        assert not _holds_trials(state), "get_state() must name trials by id, not hold them"
        restored, _ = await self._prepared()
        restored.set_state(cloudpickle.loads(cloudpickle.dumps(state)), runner)
        for _ in range(self.num_trials * self.max_iterations * 4):
            await self._start_chosen(restored, runner)
            running = [v for v in views if v.status is TrialStatus.RUNNING]
            if not running:
                break
            for view in running:
                await self._advance(restored, runner, view, iterations, None, metrics)
        assert all(v.status.is_finished for v in views), (
            f"after set_state the schedule did not finish: {[v.status for v in views]}")

    @pytest.mark.asyncio
    async def test_choose_only_waiting_trials_that_fit(self) -> None:
        scheduler, _ = await self._prepared()
        by_status, runner = await self._in_statuses(scheduler)
        chosen = await self._choose(scheduler, runner)
        assert chosen is not None, "a waiting trial fits, yet none was chosen"
        pending_ids = {v.trial_id for v in by_status[TrialStatus.PENDING]}
        paused_ids = {v.trial_id for v in by_status[TrialStatus.PAUSED]}
        for blocked in (pending_ids, paused_ids, pending_ids | paused_ids):
            runner.blocked = blocked
            chosen = await self._choose(scheduler, runner)  # checks status and fit
            if blocked == pending_ids | paused_ids:
                assert chosen is None, f"chose {chosen} although no waiting trial fits"

    @pytest.mark.asyncio
    async def test_nothing_waiting_chooses_none(self) -> None:
        scheduler, _ = await self._prepared()
        by_status, runner = await self._in_statuses(scheduler)
        for view in by_status[TrialStatus.PENDING] + by_status[TrialStatus.PAUSED]:
            transitions.apply(unwrap(view), Event.STOP)
            await call_hook(scheduler.on_trial_remove, runner, view)
        assert await call_hook(scheduler.choose_trial_to_run, runner) is None

    @pytest.mark.asyncio
    async def test_removed_trial_is_not_chosen(self) -> None:
        scheduler, _ = await self._prepared()
        views, runner = await self._added(scheduler, 2)
        transitions.apply(unwrap(views[0]), Event.STOP)
        await call_hook(scheduler.on_trial_remove, runner, views[0])
        chosen = await self._choose(scheduler, runner)
        assert chosen is not None and unwrap(chosen) is unwrap(views[1])

    @pytest.mark.asyncio
    async def test_debug_string_is_str(self) -> None:
        scheduler, metrics = await self._prepared()
        assert isinstance(scheduler.debug_string(), str)
        views, runner = await self._added(scheduler, 2)
        await self._start_chosen(scheduler, runner)
        for view in views:
            if view.status is TrialStatus.RUNNING:
                result = self.make_result(view, 1, metrics)
                await call_hook(scheduler.on_trial_result, runner, view, result)
        assert isinstance(scheduler.debug_string(), str)


# ---------------------------------------------------------------------------
# Stoppers
# ---------------------------------------------------------------------------


class StopperConformance:
    """Contract checks for a :class:`~tune_async.stopper.Stopper`. Override :meth:`make_stopper`."""

    metric = "loss"
    num_trials = 3
    num_results = 8

    def make_stopper(self) -> Stopper:
        """A fresh stopper (override)."""
        raise NotImplementedError

    def make_result(self, trial_id: str, iteration: int) -> dict:
        index = int(trial_id.rsplit("_", 1)[-1])
        return {
            TRAINING_ITERATION: iteration,
            TIME_THIS_ITER_S: 1.0,
            TIME_TOTAL_S: float(iteration),
            TRIAL_ID: trial_id,
            DONE: False,
            self.metric: 1.0 + (index + 1) / iteration**2,
        }

    def _trial_ids(self) -> list[str]:
        return [f"conf_{i}" for i in range(self.num_trials)]

    async def _feed(self, stopper: Stopper, iterations: range) -> list[bool]:
        decisions = []
        for iteration in iterations:
            for trial_id in self._trial_ids():
                result = self.make_result(trial_id, iteration)
                decision = await call_hook(stopper, trial_id, result)
                decisions.append(_checked_bool(decision, "Stopper.__call__"))
        return decisions

    def test_is_a_stopper(self) -> None:
        assert isinstance(self.make_stopper(), Stopper)

    @pytest.mark.asyncio
    async def test_call_returns_bool(self) -> None:
        await self._feed(self.make_stopper(), range(1, self.num_results + 1))

    @pytest.mark.asyncio
    async def test_stop_all_returns_bool(self) -> None:
        stopper = self.make_stopper()
        _checked_bool(await call_hook(stopper.stop_all), "Stopper.stop_all")
        for iteration in range(1, self.num_results + 1):
            await self._feed(stopper, range(iteration, iteration + 1))
            _checked_bool(await call_hook(stopper.stop_all), "Stopper.stop_all")

    @pytest.mark.asyncio
    async def test_pickles_with_cloudpickle(self) -> None:
        fresh = cloudpickle.loads(cloudpickle.dumps(self.make_stopper()))
        await self._feed(fresh, range(1, 3))
        stopper = self.make_stopper()
        half = self.num_results // 2
        await self._feed(stopper, range(1, half + 1))
        copy = cloudpickle.loads(cloudpickle.dumps(stopper))
        later = range(half + 1, self.num_results + 1)
        assert await self._feed(copy, later) == await self._feed(stopper, later), (
            "an unpickled stopper decides differently from the original"
        )
        _checked_bool(await call_hook(copy.stop_all), "Stopper.stop_all")


# ---------------------------------------------------------------------------
# Callbacks
# ---------------------------------------------------------------------------


class CallbackConformance:
    """Contract checks for a :class:`~tune_async.Callback`. Override :meth:`make_callback`.

    Hooks are dispatched through :class:`~tune_async.callback.CallbackList` with
    the controller's keyword arguments and an unknown extra keyword (callbacks
    must take ``**info``); trials are read-only views with a log directory
    under pytest's ``tmp_path``.
    """

    metric = "loss"

    def make_callback(self) -> Callback:
        """A fresh callback (override)."""
        raise NotImplementedError

    def make_trial(self, local_dir: Any, index: int) -> Trial:
        return Trial(
            trainable_name="conformance",
            config={"index": index, "x": 0.5},
            trial_id=f"conf_{index:05d}",
            experiment_tag=f"{index}_x=0.5",
            evaluated_params={"x": 0.5},
            local_dir=str(local_dir),
            experiment_name="conformance",
        )

    def make_result(self, trial: Any, iteration: int, done: bool = False) -> dict:
        return {
            self.metric: 1.0 / iteration,
            TRAINING_ITERATION: iteration,
            TIME_THIS_ITER_S: 0.5,
            TIME_TOTAL_S: 0.5 * iteration,
            TIMESTAMP: 1_700_000_000 + iteration,
            TRIAL_ID: trial.trial_id,
            EXPERIMENT_ID: "conformance",
            EXPERIMENT_TAG: trial.experiment_tag,
            DATE: "2024-01-01_00-00-00",
            HOSTNAME: "localhost",
            NODE_IP: "127.0.0.1",
            PID: os.getpid(),
            DONE: done,
            CONFIG: dict(trial.config),
        }

    # ---- helpers -----------------------------------------------------------------
    def _trials(self, local_dir: Any, count: int) -> tuple[list[Trial], list[TrialView]]:
        trials = [self.make_trial(local_dir, i) for i in range(count)]
        return trials, [TrialView(t) for t in trials]

    async def _start(self, callbacks: CallbackList, trial: Trial, views: list, **extra: Any) -> None:
        if trial.logdir is None:
            trial.init_logdir(trial.default_dirname())
        transitions.apply(trial, Event.START)
        view = next(v for v in views if unwrap(v) is trial)
        await callbacks.on_trial_start(iteration=1, trials=views, trial=view, **extra)

    async def _result(
        self, callbacks: CallbackList, trial: Trial, views: list, iteration: int,
        done: bool = False, **extra: Any,
    ) -> dict:
        result = self.make_result(trial, iteration, done)
        trial.last_result = result
        trial.results_recorded += 1
        trial.update_metric_analysis(result)
        view = next(v for v in views if unwrap(v) is trial)
        await callbacks.on_trial_result(
            iteration=iteration + 1, trials=views, trial=view, result=dict(result), **extra
        )
        return result

    def _checkpoint(self, trial: Trial, result: dict) -> Checkpoint:
        path = os.path.join(trial.logdir, f"checkpoint_{result[TRAINING_ITERATION]:06d}")
        os.makedirs(path, exist_ok=True)
        return Checkpoint.from_path(path, result)

    # ---- tests ---------------------------------------------------------------------
    def test_is_a_callback(self) -> None:
        callback = self.make_callback()
        assert isinstance(callback, Callback)
        assert len(CallbackList([callback])) == 1

    @pytest.mark.asyncio
    async def test_full_lifecycle_with_unknown_kwarg(self, tmp_path: Any) -> None:
        callbacks = CallbackList([self.make_callback()])
        extra = {EXTRA_KWARG: "forward-compat"}
        (done, failing), views = self._trials(tmp_path, 2)
        await callbacks.setup(**extra)
        await callbacks.on_step_begin(iteration=1, trials=views, **extra)
        for trial in (done, failing):
            await self._start(callbacks, trial, views, **extra)
        for iteration in (1, 2):
            for trial in (done, failing):
                await self._result(callbacks, trial, views, iteration, **extra)
        checkpoint = self._checkpoint(done, done.last_result)
        done.checkpoint = checkpoint
        await callbacks.on_checkpoint(iteration=4, trials=views, trial=views[0],
                                      checkpoint=checkpoint, **extra)
        await callbacks.on_trial_save(iteration=4, trials=views, trial=views[0], **extra)
        # The failing trial errors, is retried (restart and restore), then fails for good.
        transitions.apply(failing, Event.FAIL)
        transitions.apply(failing, Event.RETRY)
        failing.checkpoint = self._checkpoint(failing, failing.last_result)
        await self._start(callbacks, failing, views, **extra)
        await callbacks.on_trial_restore(iteration=5, trials=views, trial=views[1], **extra)
        await self._result(callbacks, done, views, 3, done=True, **extra)
        transitions.apply(done, Event.COMPLETE)
        await callbacks.on_trial_complete(iteration=6, trials=views, trial=views[0], **extra)
        await self._result(callbacks, failing, views, 3, **extra)
        transitions.apply(failing, Event.FAIL)
        await callbacks.on_trial_error(iteration=7, trials=views, trial=views[1], **extra)
        await callbacks.on_step_end(iteration=7, trials=views, **extra)
        await callbacks.on_experiment_end(trials=views, **extra)

    @pytest.mark.asyncio
    @pytest.mark.parametrize("hook", HOOK_NAMES)
    async def test_each_hook_takes_unknown_kwarg(self, tmp_path: Any, hook: str) -> None:
        callbacks = CallbackList([self.make_callback()])
        (trial,), views = self._trials(tmp_path, 1)
        await callbacks.setup()
        await self._start(callbacks, trial, views)
        result = await self._result(callbacks, trial, views, 1)
        kwargs: dict[str, Any] = {"iteration": 3, "trials": views, "trial": views[0]}
        if hook in ("setup", "on_experiment_end"):
            kwargs = {} if hook == "setup" else {"trials": views}
        elif hook in ("on_step_begin", "on_step_end"):
            del kwargs["trial"]
        elif hook == "on_trial_result":
            kwargs["result"] = dict(self.make_result(trial, 2))
        elif hook == "on_checkpoint":
            kwargs["checkpoint"] = self._checkpoint(trial, result)
        elif hook == "on_trial_complete":
            transitions.apply(trial, Event.COMPLETE)
        elif hook == "on_trial_error":
            transitions.apply(trial, Event.FAIL)
        await getattr(callbacks, hook)(**kwargs, **{EXTRA_KWARG: "forward-compat"})
        if hook != "on_experiment_end":
            await callbacks.on_experiment_end(trials=views)
