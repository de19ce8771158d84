"""BasicVariantGenerator: grid search and random search (the default search algorithm)."""

from __future__ import annotations

import copy
import itertools
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np

from tune_async.search.variant_generator import (
    count_variants,
    flatten_resolved_vars,
    format_vars,
    generate_variants,
    get_preset_variants,
)
from tune_async.suggest.search import SearchAlgorithm, TrialSuggestion


class _ExperimentVariants:
    """Lazily yields one experiment's variants: presets first, then sample passes.

    Each pass (one preset, or one of ``num_samples``) expands the full grid.
    The counters are enough to resume: a pass in progress is regenerated and
    its first ``consumed_in_pass`` variants skipped (grid order is deterministic).
    """

    def __init__(self, experiment: Any, points: list[dict], random_state: Any):
        spec = experiment.spec
        self.experiment = experiment
        self.unresolved = {"config": spec.get("config") or {}}
        self.num_samples = _num_samples(spec)
        self.points = points
        self.random_state = random_state
        self.points_used = 0
        self.passes_started = 0
        self.consumed_in_pass = 0
        self.pass_is_point = False
        self._variants: Iterator | None = None

    def total(self) -> int:
        return count_variants({**self.unresolved, "num_samples": self.num_samples}, self.points)

    def __iter__(self) -> _ExperimentVariants:
        return self

    def __next__(self) -> tuple[dict, dict]:
        while True:
            if self._variants is not None:
                item = next(self._variants, None)
                if item is not None:
                    self.consumed_in_pass += 1
                    return item
                empty_sample_pass = self.consumed_in_pass == 0 and not self.pass_is_point
                self._variants = None
                if empty_sample_pass:
                    # An empty grid: every further pass is empty too (and
                    # num_samples may be "infinite"), so stop here.
                    self.num_samples = self.passes_started
                    raise StopIteration
            if not self._start_pass():
                raise StopIteration

    def _start_pass(self) -> bool:
        if self.points_used < len(self.points):
            self.points_used += 1
            self.pass_is_point = True
        elif self.passes_started < self.num_samples:
            self.pass_is_point = False
        else:
            return False
        self.passes_started += 1
        self.consumed_in_pass = 0
        self._variants = self._pass_variants()
        return True

    def _pass_variants(self) -> Iterator:
        if self.pass_is_point:
            point = self.points[self.points_used - 1]
            return get_preset_variants(self.unresolved, point, self.random_state)
        return generate_variants(self.unresolved, self.random_state)

    def progress(self) -> dict:
        return {
            "points_used": self.points_used,
            "passes_started": self.passes_started,
            "consumed_in_pass": self.consumed_in_pass,
            "pass_is_point": self.pass_is_point,
            "in_pass": self._variants is not None,
        }

    def fast_forward(self, progress: dict) -> None:
        self.points_used = progress["points_used"]
        self.passes_started = progress["passes_started"]
        self.pass_is_point = progress["pass_is_point"]
        self.consumed_in_pass = 0
        self._variants = None
        if progress["in_pass"]:
            self._variants = self._pass_variants()
            for _ in range(progress["consumed_in_pass"]):
                if next(self._variants, None) is None:
                    break
                self.consumed_in_pass += 1


class BasicVariantGenerator(SearchAlgorithm):
    """Uses Tune's variant generation for resolving variables.

    See also: ``tune_async.search.variant_generator``. Grid search variables are
    expanded into the full Cartesian product; the whole grid is repeated
    ``num_samples`` times, and random Domains are re-sampled for every variant.
    Variants are generated lazily, so huge grids cost no memory.

    Arguments:
        points_to_evaluate: Initial parameter suggestions to be run first: a
            list of dicts, each deep-merged into the experiment's ``config``.
            Each one replaces one of ``num_samples`` (keys still holding a grid
            search are expanded). A key that is not in ``config`` raises
            ``ValueError``.
        max_concurrent: Maximum number of trials of this generator running at
            the same time; 0 (default) means unlimited.
        seed: Seed for this generator's own numpy ``Generator`` (our addition).
            ``None`` (default) draws from numpy's global random state, so
            ``np.random.seed(...)`` makes runs reproducible as in 1.x.

    Trial ids are ``"<5 hex>_<counter:05d>"`` and experiment tags
    ``"<counter>_<k=v,...>"``, the counter running from 0 over the whole run.
    """

    CKPT_FILE_TMPL = "basic-variant-state-{}.json"

    # Each call is cheap and O(1): run on the event loop, no thread hop (see search_lane).
    suggests_on_loop = True

    def __init__(
        self,
        points_to_evaluate: list[dict] | None = None,
        max_concurrent: int = 0,
        seed: int | None = None,
    ):
        self._points_to_evaluate = _check_points(points_to_evaluate)
        if isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int):
            raise ValueError(f"max_concurrent must be an int >= 0, got {max_concurrent!r}")
        if max_concurrent < 0:
            raise ValueError(f"max_concurrent must be an int >= 0, got {max_concurrent!r}")
        self.max_concurrent = max_concurrent
        self._rng = np.random.default_rng(seed) if seed is not None else None
        self._uuid_prefix = uuid.uuid1().hex[:5] + "_"
        self._counter = 0
        self._finished = False
        self._live_trials: set[str] = set()
        self._iterators: list[_ExperimentVariants] = []
        self._chain: Iterator = iter(())
        self._total_samples = 0
        self._pending_progress: list[dict] = []

    @property
    def total_samples(self) -> int:
        return self._total_samples

    def add_configurations(self, experiments: list) -> None:
        """Queue the variants of each experiment (in order) after the ones already queued."""
        if not isinstance(experiments, (list, tuple)):
            experiments = [experiments]
        for experiment in experiments:
            points = copy.deepcopy(self._points_to_evaluate)
            iterator = _ExperimentVariants(experiment, points, self._rng)
            self._total_samples += iterator.total()
            index = len(self._iterators)
            if index < len(self._pending_progress):
                iterator.fast_forward(self._pending_progress[index])
            self._iterators.append(iterator)
            self._chain = itertools.chain(self._chain, _tagged(iterator))
            self._finished = False

    def next_trial(self) -> TrialSuggestion | None:
        if self._finished:
            return None
        if self.max_concurrent and len(self._live_trials) >= self.max_concurrent:
            return None
        try:
            experiment, resolved_vars, spec = next(self._chain)
        except StopIteration:
            self._finished = True
            return None
        return self._make_suggestion(experiment, resolved_vars, spec)

    def _make_suggestion(self, experiment: Any, resolved_vars: dict, spec: dict) -> TrialSuggestion:
        trial_id = f"{self._uuid_prefix}{self._counter:05d}"
        tag = str(self._counter)
        if resolved_vars:
            tag += "_" + format_vars(resolved_vars)
        self._counter += 1
        self._live_trials.add(trial_id)
        return TrialSuggestion(
            experiment=experiment,
            config=spec["config"],
            experiment_tag=tag,
            evaluated_params=flatten_resolved_vars(resolved_vars),
            trial_id=trial_id,
        )

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        self._live_trials.discard(trial_id)

    def get_state(self) -> dict:
        """Picklable progress: counters, live trials, per-experiment positions.

        ``"experiments"`` holds the experiment objects so :meth:`set_state` can
        rebuild the generator when ``add_configurations`` is not called again.
        """
        return {
            "finished": self._finished,
            "counter": self._counter,
            "uuid_prefix": self._uuid_prefix,
            "live_trials": sorted(self._live_trials),
            "points_to_evaluate": copy.deepcopy(self._points_to_evaluate),
            "experiments": [it.experiment for it in self._iterators],
            "progress": [it.progress() for it in self._iterators],
            "rng_state": self._rng.bit_generator.state if self._rng is not None else None,
        }

    def set_state(self, state: dict) -> None:
        """Restore :meth:`get_state`, before or after ``add_configurations``."""
        self._counter = state["counter"]
        self._uuid_prefix = state["uuid_prefix"]
        self._live_trials = set(state["live_trials"])
        self._points_to_evaluate = state["points_to_evaluate"]
        progress = list(state["progress"])
        if not self._iterators and state.get("experiments"):
            self._pending_progress = progress
            self.add_configurations(list(state["experiments"]))
        elif self._iterators:
            for iterator, position in zip(self._iterators, progress, strict=False):
                iterator.fast_forward(position)
        else:
            self._pending_progress = progress
        if self._rng is not None and state.get("rng_state") is not None:
            self._rng.bit_generator.state = state["rng_state"]
        self._finished = state["finished"]


def _num_samples(spec: dict) -> int:
    num_samples = spec.get("num_samples", 1)
    return sys.maxsize if num_samples == -1 else num_samples  # -1: "infinite", as in tune.run


def _tagged(iterator: _ExperimentVariants) -> Iterator[tuple[Any, dict, dict]]:
    for resolved_vars, spec in iterator:
        yield iterator.experiment, resolved_vars, spec


def _check_points(points: Any) -> list[dict]:
    if points is None:
        return []
    if not isinstance(points, (list, tuple)) or not all(isinstance(p, dict) for p in points):
        raise TypeError(f"points_to_evaluate must be a list of dicts, got {points!r}")
    return copy.deepcopy(list(points))
