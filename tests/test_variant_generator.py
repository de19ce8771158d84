"""Variant generation: grid expansion, resampling, sample_from dependencies, formatting."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tune_async import search as tune
from tune_async.error import TuneError
from tune_async.search.variant_generator import (
    RecursiveDependencyError,
    count_spec_samples,
    count_variants,
    flatten_resolved_vars,
    format_vars,
    generate_variants,
    get_preset_variants,
    has_unresolved_values,
)


def configs(config, **kwargs):
    return [spec["config"] for _, spec in generate_variants({"config": config}, **kwargs)]


def test_constant_config_yields_one_variant():
    assert list(generate_variants({"config": {"a": 1}})) == [({}, {"config": {"a": 1}})]


def test_grid_cross_product_first_sorted_var_fastest():
    out = configs({"b": tune.grid_search([1, 2]), "a": tune.grid_search(["x", "y", "z"])})
    assert [(c["a"], c["b"]) for c in out] == [
        ("x", 1),
        ("y", 1),
        ("z", 1),
        ("x", 2),
        ("y", 2),
        ("z", 2),
    ]


def test_random_values_resampled_per_grid_point():
    np.random.seed(0)
    out = configs({"g": tune.grid_search(list(range(5))), "u": tune.uniform(0, 1)})
    assert len({c["u"] for c in out}) == 5


def test_nested_dicts_and_lists():
    out = configs({"net": {"layers": [tune.grid_search([1, 2]), 3]}, "opt": {"lr": 0.1}})
    assert out == [
        {"net": {"layers": [1, 3]}, "opt": {"lr": 0.1}},
        {"net": {"layers": [2, 3]}, "opt": {"lr": 0.1}},
    ]


def test_sample_from_reads_another_sampled_key_in_any_order():
    # "a_double" sorts and appears before "b", which it depends on.
    config = {
        "a_double": tune.sample_from(lambda spec: spec.config.b * 2),
        "b": tune.uniform(1, 2),
        "c": tune.sample_from(lambda spec: spec.config.a_double + 1),
    }
    for c in configs(config):
        assert c["a_double"] == 2 * c["b"]
        assert c["c"] == c["a_double"] + 1


def test_sample_from_reads_grid_value_and_nested_dicts():
    config = {
        "model": {"width": tune.grid_search([8, 16])},
        "batch": tune.sample_from(lambda spec: spec.config.model.width * 4),
        "item": tune.sample_from(lambda spec: spec["config"]["model"]["width"]),
    }
    out = configs(config)
    assert [(c["batch"], c["item"]) for c in out] == [(32, 8), (64, 16)]


def test_sample_from_zero_arg():
    assert configs({"x": tune.sample_from(lambda: 7)}) == [{"x": 7}]


def test_sample_from_may_return_a_grid_search():
    out = configs({"x": tune.sample_from(lambda: tune.grid_search([1, 2, 3]))})
    assert [c["x"] for c in out] == [1, 2, 3]


def test_circular_dependency_raises():
    config = {
        "a": tune.sample_from(lambda spec: spec.config.b),
        "b": tune.sample_from(lambda spec: spec.config.a),
    }
    with pytest.raises(RecursiveDependencyError):
        configs(config)


def test_failing_function_is_a_value_error():
    with pytest.raises(ValueError, match="Failed to evaluate expression"):
        configs({"a": tune.sample_from(lambda spec: spec.config.missing)})


def test_eval_json_form():
    out = configs({"a": 3, "b": {"eval": "spec.config.a + 1"}})
    assert out == [{"a": 3, "b": 4}]


def test_grid_search_dict_with_non_list_is_tune_error():
    with pytest.raises(TuneError, match="expected list"):
        configs({"a": {"grid_search": 5}})


def test_empty_grid_is_an_error_naming_the_key():
    # 1.x made zero trials and said nothing; an empty grid is always a mistake.
    with pytest.raises(ValueError, match="'a/b'.*non-empty"):
        configs({"a": {"b": {"grid_search": []}}})


def test_resolved_vars_paths():
    np.random.seed(1)
    resolved, spec = next(
        generate_variants({"config": {"a": tune.grid_search([1]), "b": {"c": tune.randint(0, 5)}}})
    )
    assert resolved == {("config", "a"): 1, ("config", "b", "c"): spec["config"]["b"]["c"]}


def test_format_vars():
    resolved = {
        ("config", "lr"): 0.0123456789,
        ("config", "opt", "name"): "adam/w",
        ("config", "layers", 0): 4,
    }
    assert format_vars(resolved) == "layers_0=4,lr=0.012346,name=adam_w"


def test_format_vars_skips_run_and_env():
    assert format_vars({("run",): "x", ("env",): "e", ("config", "a"): 1}) == "a=1"


def test_flatten_resolved_vars():
    flat = flatten_resolved_vars({("config", "a", "b"): 1, ("config", "l", 0): 2})
    assert flat == {"a/b": 1, "l/0": 2}


def test_counts_grid_times_samples():
    spec = {
        "config": {"a": tune.grid_search([1, 2, 3]), "b": tune.grid_search([0, 1])},
        "num_samples": 2,
    }
    assert count_spec_samples(spec, 2) == 12
    assert count_variants(spec) == 12


def test_count_variants_with_presets():
    spec = {
        "config": {"a": tune.grid_search([1, 2, 3]), "b": tune.uniform(0, 1)},
        "num_samples": 3,
    }
    # the first preset fixes "a" (1 variant); the second leaves the grid (3)
    assert count_variants(spec, [{"a": 1}, {"b": 0.5}]) == 1 + 3 + 3


def test_has_unresolved_values():
    assert has_unresolved_values({"a": {"b": tune.uniform(0, 1)}})
    assert has_unresolved_values({"a": tune.grid_search([1])})
    assert has_unresolved_values({"a": {"eval": "1"}})
    assert not has_unresolved_values({"a": 1, "b": {"c": [1, 2]}})


def test_preset_variants_merge_and_report_values():
    spec = {"config": {"a": tune.uniform(0, 1), "b": {"c": tune.choice([1, 2]), "d": 5}}}
    out = list(get_preset_variants(spec, {"a": 0.25, "b": {"c": 2}}))
    assert len(out) == 1
    resolved, variant = out[0]
    assert variant["config"] == {"a": 0.25, "b": {"c": 2, "d": 5}}
    assert resolved == {("config", "a"): 0.25, ("config", "b", "c"): 2}


def test_preset_unknown_key_is_value_error():
    with pytest.raises(ValueError, match="does not correspond to a valid key"):
        list(get_preset_variants({"config": {"a": 1}}, {"zzz": 1}))


def test_preset_outside_domain_warns(caplog):
    list(get_preset_variants({"config": {"a": tune.uniform(0, 1)}}, {"a": 5}))
    assert "not within valid values" in caplog.text


def test_generation_is_lazy():
    huge = {f"k{i}": tune.grid_search(list(range(100))) for i in range(6)}  # 1e12 variants
    first = list(itertools.islice(generate_variants({"config": huge}), 3))
    assert [v["config"]["k0"] for _, v in first] == [0, 1, 2]


def test_random_state_reproducible():
    config = {"a": tune.uniform(0, 1), "g": tune.grid_search([1, 2])}
    assert configs(config, random_state=np.random.default_rng(3)) == configs(
        config, random_state=np.random.default_rng(3)
    )


def test_variants_do_not_share_mutable_values():
    shared = [1, 2]
    out = configs(
        {
            "g": tune.grid_search([shared, [3]]),
            "c": tune.choice([shared]),
            "k": {"nested": shared},
        }
    )
    out[0]["g"].append(99)
    out[0]["c"].append(99)
    out[0]["k"]["nested"].append(99)
    assert shared == [1, 2]
    assert out[1]["c"] == [1, 2] and out[1]["k"]["nested"] == [1, 2]
