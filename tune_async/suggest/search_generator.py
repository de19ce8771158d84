"""SearchGenerator: adapts a Searcher (suggest one config at a time) into a SearchAlgorithm."""

from __future__ import annotations

import copy
import glob
import os
import sys
import tempfile
import uuid
from typing import Any

import cloudpickle

from tune_async.search.variant_generator import (
    format_vars,
    generate_variants,
    has_unresolved_values,
)
from tune_async.suggest.repeater import warn_num_samples
from tune_async.suggest.search import SearchAlgorithm, TrialSuggestion
from tune_async.suggest.suggestion import (
    Searcher,
    _forward_trial_complete,
    _is_finished,
    _set_search_properties,
    _then,
)
from tune_async.utils.util import atomic_write_bytes, flatten_dict

UNRESOLVED_CONFIG_MESSAGE = (
    "You passed a `config` parameter to `tune.run()` with "
    "unresolved parameters, but the search algorithm was already "
    "instantiated with a search space. Make sure that `config` "
    "does not contain any more parameter definitions - include "
    "them in the search algorithm's search space if necessary."
)


class SearchGenerator(SearchAlgorithm):
    """Generates trials to be passed to the controller from a :class:`Searcher`.

    ``tune.run(search_alg=searcher)`` wraps a Searcher in this class. It stops
    after ``num_samples`` suggestions that returned a config, or when the
    searcher returns ``Searcher.FINISHED``. It supports one experiment.

    Arguments:
        searcher: The Searcher to ask for configs (its hooks may be coroutines).
    """

    CKPT_FILE_TMPL = "search_gen_state-{}.json"

    def __init__(self, searcher: Searcher):
        if not isinstance(searcher, Searcher):
            raise TypeError(
                f"searcher must be an instance of a Searcher subclass, got {type(searcher).__name__}"
            )
        self.searcher = searcher
        self._experiment: Any = None
        self._counter = 0
        self._total_samples = 0
        self._finished = False
        # Trial ids follow from the state (prefix + counter): a searcher restored from an
        # older snapshot suggests the journaled trials under their own ids again.
        self._uuid_prefix = uuid.uuid4().hex[:3]  # ids stay 8 hex digits, as 1.x's

    @property
    def metric(self) -> Any:
        return self.searcher.metric

    @property
    def total_samples(self) -> int:
        return self._total_samples

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict) -> Any:
        """Hand ``tune.run``'s metric, mode and config (with its Domains) to the searcher.

        Raises:
            ValueError: the searcher refused (it has its own search space) and
                ``config`` still holds unresolved values.
        """
        accepted = _set_search_properties(self.searcher, metric, mode, config)
        return _then(accepted, lambda ok: _check_refusal(ok, config))

    def add_configurations(self, experiments: list) -> None:
        if not isinstance(experiments, (list, tuple)):
            experiments = [experiments]
        if self._experiment is not None or len(experiments) != 1:
            raise ValueError(
                "SearchAlgorithms can only support 1 experiment at a time: a Searcher "
                "(SearchGenerator) takes exactly one experiment."
            )
        self._experiment = experiments[0]
        num_samples = self._experiment.spec.get("num_samples", 1)
        self._total_samples = sys.maxsize if num_samples == -1 else num_samples
        warn_num_samples(self.searcher, self._total_samples)

    def next_trial(self) -> Any:
        """A TrialSuggestion, None, or an awaitable of one if the searcher is async."""
        if self.is_finished():
            return None
        trial_id = f"{self._uuid_prefix}{self._counter:05x}"
        suggestion = self.searcher.suggest(trial_id)
        return _then(suggestion, lambda config: self._create_suggestion(trial_id, config))

    def _create_suggestion(self, trial_id: str, suggested: Any) -> TrialSuggestion | None:
        if _is_finished(suggested):
            self._finished = True
            return None
        if suggested is None:
            return None
        if not isinstance(suggested, dict):
            raise TypeError(
                f"{type(self.searcher).__name__}.suggest must return a dict, None or "
                f"Searcher.FINISHED, got {suggested!r}"
            )
        base = copy.deepcopy(self._experiment.spec.get("config") or {})
        config = _deep_merge(base, copy.deepcopy(suggested))
        if has_unresolved_values(config):
            # Values the searcher did not fill (e.g. sample_from that reads a
            # suggested value) are resolved the way BasicVariantGenerator would.
            _, resolved = next(generate_variants({"config": config}))
            config = resolved["config"]
        self._counter += 1
        return TrialSuggestion(
            experiment=self._experiment,
            config=config,
            experiment_tag=f"{self._counter}_{format_vars(_nested_paths(config))}",
            evaluated_params=flatten_dict(suggested),
            trial_id=trial_id,
        )

    def on_trial_result(self, trial_id: str, result: dict) -> Any:
        return self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> Any:
        return _forward_trial_complete(self.searcher, trial_id, result, error)

    def is_finished(self) -> bool:
        return self._counter >= self._total_samples or self._finished

    # -- state -------------------------------------------------------------

    def get_state(self) -> dict:
        """Counters, the experiment, each wrapper's state and the base searcher's state.

        The base searcher's state comes from ``get_state()``, else from
        ``save()`` (kept as bytes); ``None`` if it implements neither.
        """
        state = self._own_state()
        base = self._base_searcher()
        state["searcher"] = _capture_searcher_state(base)
        return state

    def set_state(self, state: dict) -> None:
        self._restore_own_state(state)
        _restore_searcher_state(self._base_searcher(), state.get("searcher"))

    def save_to_dir(self, dirpath: str, session_str: str = "default") -> None:
        """1.x layout: ``search_gen_state-<session>.json`` plus the searcher's own file."""
        data = cloudpickle.dumps(self._own_state())
        atomic_write_bytes(os.path.join(dirpath, self.CKPT_FILE_TMPL.format(session_str)), data)
        self._base_searcher().save_to_dir(dirpath, session_str)

    def restore_from_dir(self, dirpath: str) -> None:
        paths = glob.glob(os.path.join(dirpath, self.CKPT_FILE_TMPL.format("*")))
        if not paths:
            raise RuntimeError(f"SearchGenerator unable to find checkpoint in {dirpath}")
        with open(max(paths), "rb") as f:
            self._restore_own_state(cloudpickle.loads(f.read()))
        self._base_searcher().restore_from_dir(dirpath)

    def _own_state(self) -> dict:
        state: dict = {
            "experiment": self._experiment,
            "counter": self._counter,
            "uuid_prefix": self._uuid_prefix,
            "total_samples": self._total_samples,
            "finished": self._finished,
        }
        for wrapper in self._wrappers():
            try:
                state.setdefault("name:" + type(wrapper).__name__, wrapper.get_state())
            except NotImplementedError:  # a user wrapper without state
                pass
        return state

    def _restore_own_state(self, state: dict) -> None:
        self._experiment = state["experiment"]
        self._counter = state["counter"]
        self._uuid_prefix = state.get("uuid_prefix", self._uuid_prefix)
        self._total_samples = state["total_samples"]
        self._finished = state["finished"]
        for wrapper in self._wrappers():
            key = "name:" + type(wrapper).__name__
            if key in state:
                wrapper.set_state(state[key])

    def _wrappers(self) -> list:
        chain = []
        searcher = self.searcher
        while hasattr(searcher, "searcher"):
            chain.append(searcher)
            searcher = searcher.searcher
        return chain

    def _base_searcher(self) -> Searcher:
        searcher = self.searcher
        while hasattr(searcher, "searcher"):
            searcher = searcher.searcher
        return searcher


def _check_refusal(accepted: Any, config: dict) -> bool:
    if not accepted and config and has_unresolved_values(config):
        raise ValueError(UNRESOLVED_CONFIG_MESSAGE)
    return bool(accepted)


def _deep_merge(base: dict, update: dict) -> dict:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value
    return base


def _nested_paths(config: dict, prefix: tuple = ()) -> dict:
    """``{"a": {"b": 1}}`` -> ``{("a", "b"): 1}`` (every leaf, for the experiment tag)."""
    out: dict = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_nested_paths(value, prefix + (key,)))
        else:
            out[prefix + (key,)] = value
    return out


def _capture_searcher_state(searcher: Searcher) -> dict | None:
    try:
        return {"state": searcher.get_state()}
    except NotImplementedError:
        pass
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "searcher.pkl")
        try:
            searcher.save(path)
        except NotImplementedError:
            return None
        if not os.path.exists(path):
            return None
        with open(path, "rb") as f:
            return {"saved": f.read()}


def _restore_searcher_state(searcher: Searcher, captured: dict | None) -> None:
    if not captured:
        return
    if "state" in captured:
        searcher.set_state(captured["state"])
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "searcher.pkl")
        with open(path, "wb") as f:
            f.write(captured["saved"])
        searcher.restore(path)
