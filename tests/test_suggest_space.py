"""The shared plumbing of the searcher integrations (suggest/_space.py), the lazily
imported optional libraries, and the integrations that are not available."""

from __future__ import annotations

import importlib
import sys

import pytest

import tune_async as tune
from tune_async.suggest._space import parse_space

SEARCHERS = [
    ("optuna", "OptunaSearch", "optuna", {}),
    ("hyperopt", "HyperOptSearch", "hyperopt", {}),
    ("skopt", "SkOptSearch", "skopt", {}),
    ("nevergrad", "NevergradSearch", "nevergrad", {}),
    ("bayesopt", "BayesOptSearch", "bayes_opt", {}),
    ("zoopt", "ZOOptSearch", "zoopt", {"budget": 10}),
    ("flaml", "BlendSearch", "flaml", {}),
    ("flaml", "CFO", "flaml", {}),
    ("ax", "AxSearch", "ax", {}),
]


@pytest.mark.parametrize("module, name, library, kwargs", SEARCHERS)
def test_a_missing_library_is_an_import_error_naming_the_extra(module, name, library, kwargs,
                                                              monkeypatch):
    cls = getattr(importlib.import_module(f"tune_async.suggest.{module}"), name)
    monkeypatch.setitem(sys.modules, library, None)  # "import library" now fails
    with pytest.raises(ImportError, match=rf"pip install 'tune_async\[{module}\]'"):
        cls(**kwargs)


@pytest.mark.parametrize("module, name, why", [("hebo", "HEBOSearch", "numpy<1.25"),
                                               ("dragonfly", "DragonflySearch", "np.int")])
def test_unavailable_integrations_say_why(module, name, why):
    mod = importlib.import_module(f"tune_async.suggest.{module}")
    with pytest.raises(ImportError, match=why):
        getattr(mod, name)
    with pytest.raises(ImportError, match=why):
        exec(f"from tune_async.suggest.{module} import {name}", {})


def test_params_spell_out_the_1x_meaning_of_each_domain():
    space = parse_space({
        "a": tune.randint(0, 10), "b": tune.qrandint(0, 10, 5), "c": tune.lograndint(1, 100),
        "d": tune.qloguniform(1e-4, 1e-1, 5e-5), "e": tune.randn(1.0, 2.0),
        "f": {"g": tune.choice([1, "x"])}, "h": [tune.uniform(0, 1), 7], "const": "k",
    }, "S", "Lib")
    p = space.by_name()
    assert (p["a"].low, p["a"].high, p["a"].q) == (0, 9, None)  # upper bound exclusive
    assert (p["b"].low, p["b"].high, p["b"].q) == (0, 10, 5)  # quantized: inclusive
    assert (p["c"].low, p["c"].high, p["c"].log) == (1, 99, True)
    assert (p["d"].kind, p["d"].log, p["d"].q) == ("float", True, 5e-5)
    assert (p["e"].dist, p["e"].mean, p["e"].sd) == ("normal", 1.0, 2.0)
    assert p["f/g"].categories == (1, "x")
    assert p["h/0"].path == ("h", 0)
    config = space.to_config({"a": 3.6, "b": 7.4, "c": 150, "d": 0.000123, "e": 0.3,
                              "f/g": "x", "h/0": 0.5})
    assert config == {"a": 4, "b": 5, "c": 99, "d": 0.0001, "e": 0.3, "f": {"g": "x"},
                      "h": [0.5, 7], "const": "k"}
    assert type(config["a"]) is int


@pytest.mark.parametrize("value, what", [(tune.grid_search([1, 2]), "grid_search"),
                                          (tune.sample_from(lambda _: 1), "sample_from"),
                                          ({"eval": "1 + 1"}, "sample_from")])
def test_grid_search_and_functions_are_errors_naming_the_key(value, what):
    with pytest.raises(ValueError, match=f"MySearch: (tune.)?{what}.*'a/b'"):
        parse_space({"a": {"b": value}}, "MySearch", "Lib")


def test_points_are_checked_against_the_space():
    space = parse_space({"x": tune.uniform(0, 1), "n": {"c": tune.choice(["a", "b"])}},
                        "S", "Lib")
    assert space.flat_point({"x": 0.5, "n": {"c": "a"}}, "S") == {"x": 0.5, "n/c": "a"}
    assert space.flat_point({"x": 0.5, "n/c": "b"}, "S") == {"x": 0.5, "n/c": "b"}
    with pytest.raises(ValueError, match="not in the search space: \\['y'\\]"):
        space.flat_point({"x": 0.5, "n/c": "a", "y": 1}, "S")
    with pytest.raises(ValueError, match="lacks the keys \\['n/c'\\]"):
        space.flat_point({"x": 0.5}, "S")
    with pytest.raises(ValueError, match="outside the domain"):
        space.flat_point({"x": 2.0, "n/c": "a"}, "S")


def test_create_searcher_by_1x_name():
    from tune_async.suggest import BasicVariantGenerator, create_searcher

    assert isinstance(create_searcher("random"), BasicVariantGenerator)
    with pytest.raises(ValueError, match="must be one of"):
        create_searcher("nope")
    with pytest.raises(ImportError, match="numpy<1.25"):
        create_searcher("hebo")
    pytest.importorskip("optuna")
    searcher = create_searcher("optuna", metric="loss", mode="min", not_an_argument=1)
    assert searcher.metric == "loss"
