"""Search algorithms: BasicVariantGenerator, SearchGenerator, ConcurrencyLimiter, Repeater."""

from __future__ import annotations

import math
import pickle
import re
import sys

import attrs
import cloudpickle
import numpy as np
import pytest

from tune_async import search as tune
from tune_async._hooks import call_hook
from tune_async.suggest import (
    BasicVariantGenerator,
    ConcurrencyLimiter,
    Repeater,
    SearchAlgorithm,
    Searcher,
    SearchGenerator,
    TrialSuggestion,
)


@attrs.define
class Exp:
    name: str
    spec: dict


def exp(config, num_samples=1, name="exp"):
    return Exp(name, {"config": config, "num_samples": num_samples})


def drain(alg, limit=10_000):
    out = []
    while len(out) < limit:
        suggestion = alg.next_trial()
        if suggestion is None:
            break
        out.append(suggestion)
    return out


GRID = {
    "a": tune.grid_search([1, 2, 3]),
    "b": tune.grid_search(["x", "y"]),
    "u": tune.uniform(0, 1),
}


# -- BasicVariantGenerator -----------------------------------------------------


def test_grid_3x2_with_two_samples_gives_12_configs():
    gen = BasicVariantGenerator()
    gen.add_configurations([exp(GRID, num_samples=2)])
    assert gen.total_samples == 12
    out = drain(gen)
    assert len(out) == 12 and gen.is_finished()
    pairs = [(s.config["a"], s.config["b"]) for s in out]
    assert pairs[:6] == pairs[6:]
    assert len(set(pairs)) == 6
    assert len({s.config["u"] for s in out}) == 12  # resampled everywhere


def test_trial_ids_tags_and_evaluated_params():
    gen = BasicVariantGenerator()
    gen.add_configurations([exp({"a": tune.grid_search([1, 2]), "c": 5})])
    first, second = drain(gen)
    assert isinstance(first, TrialSuggestion)
    assert re.fullmatch(r"[0-9a-f]{5}_00000", first.trial_id)
    assert second.trial_id == first.trial_id[:6] + "00001"
    assert (first.experiment_tag, second.experiment_tag) == ("0_a=1", "1_a=2")
    assert first.evaluated_params == {"a": 1}
    assert first.config == {"a": 1, "c": 5}


def test_constant_config_tag_is_counter_only():
    gen = BasicVariantGenerator()
    gen.add_configurations([exp({"c": 5}, num_samples=2)])
    assert [s.experiment_tag for s in drain(gen)] == ["0", "1"]


def test_multiple_experiments_in_order_with_one_counter():
    gen = BasicVariantGenerator()
    e1, e2 = exp({"a": tune.grid_search([1, 2])}, name="one"), exp({"b": 1}, 2, name="two")
    gen.add_configurations([e1, e2])
    out = drain(gen)
    assert [s.experiment.name for s in out] == ["one", "one", "two", "two"]
    assert [s.experiment_tag.split("_")[0] for s in out] == ["0", "1", "2", "3"]
    assert gen.total_samples == 4


def test_points_to_evaluate_replace_samples():
    gen = BasicVariantGenerator(points_to_evaluate=[{"lr": 0.5}, {"lr": 0.25}])
    gen.add_configurations([exp({"lr": tune.uniform(0, 1), "k": 1}, num_samples=3)])
    out = drain(gen)
    assert len(out) == 3 == gen.total_samples
    assert [s.config["lr"] for s in out[:2]] == [0.5, 0.25]
    assert out[0].experiment_tag == "0_lr=0.5"
    assert out[0].evaluated_params == {"lr": 0.5}


def test_points_to_evaluate_unknown_key_is_value_error():
    gen = BasicVariantGenerator(points_to_evaluate=[{"nope": 1}])
    with pytest.raises(ValueError, match="does not correspond"):
        gen.add_configurations([exp({"lr": tune.uniform(0, 1)})])


def test_points_to_evaluate_must_be_list_of_dicts():
    with pytest.raises(TypeError, match="points_to_evaluate"):
        BasicVariantGenerator(points_to_evaluate={"a": 1})


def test_max_concurrent_limits_live_trials():
    gen = BasicVariantGenerator(max_concurrent=2)
    gen.add_configurations([exp({"x": 1}, num_samples=3)])
    first, second = gen.next_trial(), gen.next_trial()
    assert gen.next_trial() is None and not gen.is_finished()
    gen.on_trial_complete(first.trial_id, {})
    third = gen.next_trial()
    assert third is not None
    gen.on_trial_complete(second.trial_id)
    gen.on_trial_complete(third.trial_id)
    assert gen.next_trial() is None and gen.is_finished()


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_max_concurrent_validation(bad):
    with pytest.raises(ValueError, match="max_concurrent"):
        BasicVariantGenerator(max_concurrent=bad)


def test_seed_makes_variants_reproducible():
    def run(seed):
        gen = BasicVariantGenerator(seed=seed)
        gen.add_configurations([exp({"u": tune.uniform(0, 1), "c": tune.choice([1, 2, 3])}, 5)])
        return [s.config for s in drain(gen)]

    assert run(11) == run(11)
    assert run(11) != run(12)


def test_global_numpy_seed_makes_variants_reproducible():
    def run():
        np.random.seed(5)
        gen = BasicVariantGenerator()
        gen.add_configurations([exp({"u": tune.uniform(0, 1)}, 4)])
        return [s.config["u"] for s in drain(gen)]

    assert run() == run()


def test_infinite_num_samples_is_lazy():
    gen = BasicVariantGenerator()
    gen.add_configurations([exp({"g": tune.grid_search([1, 2])}, num_samples=sys.maxsize)])
    assert gen.total_samples == 2 * sys.maxsize
    assert len(drain(gen, limit=50)) == 50 and not gen.is_finished()


def test_empty_grid_is_refused_when_added():
    gen = BasicVariantGenerator()
    with pytest.raises(ValueError, match="'g'.*non-empty"):
        gen.add_configurations([exp({"g": {"grid_search": []}}, num_samples=sys.maxsize)])


def test_set_finished_stops_generation():
    gen = BasicVariantGenerator()
    gen.add_configurations([exp({}, 5)])
    gen.next_trial()
    gen.set_finished()
    assert gen.next_trial() is None and gen.is_finished()


def test_state_resume_continues_where_it_stopped():
    experiment = exp(GRID, num_samples=2)
    gen = BasicVariantGenerator(seed=3)
    gen.add_configurations([experiment])
    before = drain(gen, limit=7)
    state = pickle.loads(cloudpickle.dumps(gen.get_state()))
    rest = drain(gen)

    resumed = BasicVariantGenerator(seed=99)
    resumed.set_state(state)  # rebuilds from the experiments kept in the state
    rest_again = drain(resumed)
    assert [s.trial_id for s in rest_again] == [s.trial_id for s in rest]
    assert [s.config for s in rest_again] == [s.config for s in rest]
    assert len(before) + len(rest_again) == 12


def test_state_applies_when_configurations_are_added_after():
    experiment = exp({"g": tune.grid_search(list(range(5)))}, 1)
    gen = BasicVariantGenerator()
    gen.add_configurations([experiment])
    drain(gen, limit=2)
    state = gen.get_state()
    state["experiments"] = []
    resumed = BasicVariantGenerator()
    resumed.set_state(state)
    resumed.add_configurations([experiment])
    assert [s.config["g"] for s in drain(resumed)] == [2, 3, 4]


def test_save_and_restore_dir(tmp_path):
    gen = BasicVariantGenerator()
    gen.add_configurations([exp({"g": tune.grid_search([1, 2, 3])})])
    gen.next_trial()
    gen.save_to_dir(str(tmp_path), session_str="s1")
    assert gen.has_checkpoint(str(tmp_path))
    assert (tmp_path / "basic-variant-state-s1.json").exists()
    resumed = BasicVariantGenerator()
    resumed.restore_from_dir(str(tmp_path))
    assert [s.config["g"] for s in drain(resumed)] == [2, 3]


# -- Toy searchers -------------------------------------------------------------


class CountingSearcher(Searcher):
    """Suggests {"i": n}; records completions."""

    def __init__(self, finish_after=None, **kwargs):
        super().__init__(**kwargs)
        self.n = 0
        self.finish_after = finish_after
        self.completed = []
        self.results = []
        self.config = None

    def set_search_properties(self, metric, mode, config):
        self._metric, self._mode, self.config = metric, mode, config
        return True

    def suggest(self, trial_id):
        if self.finish_after is not None and self.n >= self.finish_after:
            return Searcher.FINISHED
        self.n += 1
        return {"i": self.n}

    def on_trial_result(self, trial_id, result):
        self.results.append((trial_id, result))

    def on_trial_complete(self, trial_id, result=None, error=False):
        self.completed.append((trial_id, result, error))

    def get_state(self):
        return {"n": self.n}

    def set_state(self, state):
        self.n = state["n"]


class AsyncSearcher(CountingSearcher):
    async def suggest(self, trial_id):
        return super().suggest(trial_id)

    async def on_trial_complete(self, trial_id, result=None, error=False):
        super().on_trial_complete(trial_id, result, error)


class MinimalSearcher(Searcher):
    """Implements only suggest (no on_trial_complete, no state)."""

    def suggest(self, trial_id):
        return {"x": 1}


# -- Searcher / SearchGenerator ----------------------------------------------------


def test_searcher_base_contract():
    searcher = Searcher(metric="loss", mode="min")
    assert (searcher.metric, searcher.mode) == ("loss", "min")
    assert searcher.set_search_properties("m", "max", {}) is False
    with pytest.raises(NotImplementedError):
        searcher.on_trial_complete("t")
    with pytest.raises(NotImplementedError):
        searcher.suggest("t")
    assert Searcher.FINISHED == "FINISHED"


def test_searcher_mode_validation():
    with pytest.raises(ValueError, match="'min' or 'max'"):
        Searcher(metric="loss", mode="minimize")
    with pytest.raises(DeprecationWarning):
        Searcher(use_early_stopped_trials=False)


def test_search_generator_stops_at_num_samples():
    searcher = CountingSearcher()
    gen = SearchGenerator(searcher)
    gen.add_configurations([exp({"const": 1}, num_samples=3)])
    out = drain(gen)
    assert [s.config for s in out] == [{"const": 1, "i": n} for n in (1, 2, 3)]
    assert [s.experiment_tag for s in out] == ["1_const=1,i=1", "2_const=1,i=2", "3_const=1,i=3"]
    assert all(re.fullmatch(r"[0-9a-f]{8}", s.trial_id) for s in out)
    assert out[0].evaluated_params == {"i": 1}
    assert gen.is_finished() and gen.total_samples == 3


def test_search_generator_stops_on_finished():
    gen = SearchGenerator(CountingSearcher(finish_after=2))
    gen.add_configurations([exp({}, num_samples=10)])
    assert len(drain(gen)) == 2 and gen.is_finished()


def test_search_generator_forwards_results_and_completion():
    searcher = CountingSearcher()
    gen = SearchGenerator(searcher)
    gen.add_configurations([exp({}, 1)])
    trial = gen.next_trial()
    gen.on_trial_result(trial.trial_id, {"loss": 1})
    gen.on_trial_complete(trial.trial_id, {"loss": 0.5})
    assert searcher.results == [(trial.trial_id, {"loss": 1})]
    assert searcher.completed == [(trial.trial_id, {"loss": 0.5}, False)]


def test_search_generator_tolerates_searcher_without_on_trial_complete():
    gen = SearchGenerator(MinimalSearcher())
    gen.add_configurations([exp({}, 1)])
    trial = gen.next_trial()
    gen.on_trial_complete(trial.trial_id, {"loss": 1})  # no NotImplementedError


def test_search_generator_hands_config_to_searcher():
    searcher = CountingSearcher()
    gen = SearchGenerator(searcher)
    space = {"lr": tune.uniform(0, 1)}
    assert gen.set_search_properties("loss", "min", space) is True
    assert searcher.config is space and gen.metric == "loss"


def test_refusing_searcher_with_unresolved_config_is_value_error():
    gen = SearchGenerator(MinimalSearcher())
    with pytest.raises(ValueError, match="unresolved parameters"):
        gen.set_search_properties("loss", "min", {"lr": tune.uniform(0, 1)})
    assert gen.set_search_properties("loss", "min", {"lr": 0.1}) is False


def test_search_generator_one_experiment_only():
    gen = SearchGenerator(MinimalSearcher())
    gen.add_configurations([exp({})])
    with pytest.raises(ValueError, match="1 experiment"):
        gen.add_configurations([exp({})])


def test_search_generator_rejects_non_searcher():
    with pytest.raises(TypeError, match="Searcher"):
        SearchGenerator(object())


def test_search_generator_resolves_leftover_sample_from():
    gen = SearchGenerator(CountingSearcher())
    gen.add_configurations([exp({"double": tune.sample_from(lambda spec: spec.config.i * 2)})])
    assert gen.next_trial().config == {"double": 2, "i": 1}


async def test_async_searcher_through_call_hook():
    searcher = AsyncSearcher()
    gen = SearchGenerator(ConcurrencyLimiter(searcher, max_concurrent=1))
    gen.add_configurations([exp({}, 2)])
    first = await call_hook(gen.next_trial)
    assert first.config == {"i": 1}
    assert await call_hook(gen.next_trial) is None  # limited
    await call_hook(gen.on_trial_complete, first.trial_id, {"loss": 1})
    assert searcher.completed == [(first.trial_id, {"loss": 1}, False)]
    second = await call_hook(gen.next_trial)
    assert second.config == {"i": 2} and gen.is_finished()


def test_search_generator_state_round_trip():
    searcher = CountingSearcher()
    gen = SearchGenerator(ConcurrencyLimiter(searcher, max_concurrent=5))
    gen.add_configurations([exp({}, 4)])
    drain(gen, limit=2)
    state = pickle.loads(cloudpickle.dumps(gen.get_state()))

    fresh = CountingSearcher()
    limiter = ConcurrencyLimiter(fresh, max_concurrent=5)
    restored = SearchGenerator(limiter)
    restored.set_state(state)
    assert fresh.n == 2 and len(limiter.live_trials) == 2
    assert [s.config["i"] for s in drain(restored)] == [3, 4]  # num_samples=4, 2 were made
    assert restored.is_finished()


# -- ConcurrencyLimiter ----------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -1, 1.0, "2", True])
def test_concurrency_limiter_requires_positive_int(bad):
    with pytest.raises(ValueError, match="max_concurrent"):
        ConcurrencyLimiter(CountingSearcher(), max_concurrent=bad)


def test_concurrency_limiter_limits_and_releases():
    limiter = ConcurrencyLimiter(CountingSearcher(), max_concurrent=2)
    assert limiter.suggest("a") == {"i": 1}
    assert limiter.suggest("b") == {"i": 2}
    assert limiter.suggest("c") is None
    limiter.on_trial_complete("a", {"loss": 1})
    assert limiter.suggest("c") == {"i": 3}


def test_concurrency_limiter_does_not_count_finished():
    limiter = ConcurrencyLimiter(CountingSearcher(finish_after=0), max_concurrent=1)
    assert limiter.suggest("a") == Searcher.FINISHED
    assert limiter.live_trials == set()


def test_concurrency_limiter_rejects_duplicate_ids():
    limiter = ConcurrencyLimiter(CountingSearcher(), max_concurrent=2)
    limiter.suggest("a")
    with pytest.raises(ValueError, match="unique"):
        limiter.suggest("a")


def test_concurrency_limiter_batch_forwards_when_all_finished():
    searcher = CountingSearcher()
    limiter = ConcurrencyLimiter(searcher, max_concurrent=2, batch=True)
    limiter.suggest("a"), limiter.suggest("b")
    limiter.on_trial_complete("a", {"loss": 1})
    assert searcher.completed == [] and limiter.suggest("c") is None
    limiter.on_trial_complete("b", {"loss": 2})
    assert [c[0] for c in searcher.completed] == ["a", "b"]
    assert limiter.suggest("c") == {"i": 3}


def test_concurrency_limiter_delegates_properties():
    searcher = CountingSearcher(metric="loss", mode="min")
    limiter = ConcurrencyLimiter(searcher, max_concurrent=1)
    assert (limiter.metric, limiter.mode) == ("loss", "min")
    assert limiter.set_search_properties("acc", "max", {}) is True
    assert (limiter.metric, limiter.mode) == ("acc", "max")


# -- Repeater --------------------------------------------------------------------


def test_repeater_repeats_config_with_index():
    repeater = Repeater(CountingSearcher(metric="loss", mode="min"), repeat=3)
    configs = [repeater.suggest(f"t{i}") for i in range(6)]
    assert configs == [
        {"i": 1, "__trial_index__": 0},
        {"i": 1, "__trial_index__": 1},
        {"i": 1, "__trial_index__": 2},
        {"i": 2, "__trial_index__": 0},
        {"i": 2, "__trial_index__": 1},
        {"i": 2, "__trial_index__": 2},
    ]


def test_repeater_without_index():
    repeater = Repeater(CountingSearcher(), repeat=2, set_index=False)
    assert [repeater.suggest("a"), repeater.suggest("b")] == [{"i": 1}, {"i": 1}]


def test_repeater_reports_nanmean_once_per_group():
    searcher = CountingSearcher(metric="loss", mode="min")
    repeater = Repeater(searcher, repeat=3)
    for trial_id in ("a", "b", "c"):
        repeater.suggest(trial_id)
    repeater.on_trial_complete("a", {"loss": 1.0})
    repeater.on_trial_complete("b", {"other": 5})  # missing metric -> NaN
    assert searcher.completed == []
    repeater.on_trial_complete("c", {"loss": 3.0})
    assert searcher.completed == [("a", {"loss": 2.0}, False)]


def test_repeater_all_nan_group():
    searcher = CountingSearcher(metric="loss", mode="min")
    repeater = Repeater(searcher, repeat=1)
    repeater.suggest("a")
    repeater.on_trial_complete("a", None)
    assert math.isnan(searcher.completed[0][1]["loss"])


def test_repeater_passes_finished_through():
    repeater = Repeater(CountingSearcher(finish_after=0), repeat=2)
    assert repeater.suggest("a") == Searcher.FINISHED


def test_repeater_in_search_generator_warns_on_leftovers(caplog):
    gen = SearchGenerator(Repeater(CountingSearcher(metric="loss", mode="min"), repeat=2))
    gen.add_configurations([exp({}, num_samples=5)])
    assert "leftover trials" in caplog.text
    out = drain(gen)
    assert [s.config["i"] for s in out] == [1, 1, 2, 2, 3]


def test_search_algorithm_base_defaults():
    alg = SearchAlgorithm()
    assert alg.set_search_properties(None, None, {}) is True
    assert alg.total_samples == 0 and not alg.is_finished()
    alg.set_finished()
    assert alg.is_finished() and alg.get_state() == {"finished": True}


def test_num_samples_minus_one_means_infinite():
    gen = BasicVariantGenerator()
    gen.add_configurations([exp({"u": tune.uniform(0, 1)}, num_samples=-1)])
    assert gen.total_samples == sys.maxsize
    assert len(drain(gen, limit=20)) == 20
    search_gen = SearchGenerator(CountingSearcher())
    search_gen.add_configurations([exp({}, num_samples=-1)])
    assert search_gen.total_samples == sys.maxsize


def test_old_two_argument_set_search_properties_still_called():
    class OldSearcher(MinimalSearcher):
        def set_search_properties(self, metric, mode):
            self.got = (metric, mode)
            return True

    searcher = OldSearcher()
    assert SearchGenerator(searcher).set_search_properties("m", "min", {"a": 1}) is True
    assert searcher.got == ("m", "min")
