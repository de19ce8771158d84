"""Search-space primitives: bounds, quantisation, errors, seeding, pickling."""

from __future__ import annotations

import logging
import pickle

import cloudpickle
import numpy as np
import pytest

from tune_async.error import TuneError
from tune_async.search import sample as s

N = 2000


def draws(domain, n=N, random_state=None):
    return domain.sample(size=n, random_state=random_state)


def test_uniform_within_bounds_and_float():
    values = draws(s.uniform(-2.0, 3.0))
    assert all(isinstance(v, float) for v in values)
    assert -2.0 <= min(values) and max(values) < 3.0


def test_uniform_single_sample_is_scalar():
    assert isinstance(s.uniform(0, 1).sample(), float)


def test_quniform_values_are_multiples_of_q_and_upper_inclusive():
    values = draws(s.quniform(0, 1, 0.25))
    assert set(np.round(values, 9)) == {0.0, 0.25, 0.5, 0.75, 1.0}


def test_quniform_bounds_must_be_divisible_by_q():
    with pytest.raises(ValueError, match="not divisible by quantization factor"):
        s.quniform(0.1, 1, 0.25)
    with pytest.raises(ValueError, match="upper variable bound"):
        s.quniform(0, 1.1, 0.25)


def test_loguniform_bounds_and_spread():
    values = draws(s.loguniform(1e-4, 1e-1))
    assert 1e-4 <= min(values) and max(values) <= 1e-1
    # log-uniform: about a third of draws per decade
    assert 0.2 < np.mean(np.array(values) < 1e-3) < 0.45


@pytest.mark.parametrize("lower,upper", [(0, 1), (-1, 1), (1e-3, float("inf"))])
def test_loguniform_rejects_non_positive_or_infinite_bounds(lower, upper):
    with pytest.raises(ValueError, match="LogUniform requires a"):
        s.loguniform(lower, upper)


def test_qloguniform_quantised():
    values = draws(s.qloguniform(1, 100, 1))
    assert all(float(v).is_integer() and 1 <= v <= 100 for v in values)


def test_randint_upper_exclusive():
    values = draws(s.randint(0, 3))
    assert set(values) == {0, 1, 2}
    assert all(type(v) is int for v in values)


def test_randint_rejects_empty_range():
    with pytest.raises(ValueError, match="lower < upper"):
        s.randint(3, 3)


def test_qrandint_upper_inclusive_and_multiple_of_q():
    values = draws(s.qrandint(0, 10, 5))
    assert set(values) == {0, 5, 10}
    assert all(type(v) is int for v in values)


def test_lograndint_ints_in_range():
    values = draws(s.lograndint(1, 1000))
    assert all(type(v) is int and 1 <= v <= 1000 for v in values)


def test_qlograndint_multiple_of_q():
    values = draws(s.qlograndint(10, 1000, 10))
    assert all(v % 10 == 0 and 10 <= v <= 1000 for v in values)


def test_randn_mean_and_sd():
    values = np.array(draws(s.randn(5.0, 2.0), n=5000, random_state=0))
    assert abs(values.mean() - 5.0) < 0.15
    assert abs(values.std() - 2.0) < 0.15


def test_qrandn_quantised():
    values = draws(s.qrandn(0, 1, 0.5))
    assert all((v / 0.5).is_integer() for v in values)


def test_randn_rejects_non_positive_sd():
    with pytest.raises(ValueError, match="sd"):
        s.randn(0, 0)


def test_choice_keeps_value_types():
    categories = [1, "a", None, [1, 2], {"k": 1}]
    values = draws(s.choice(categories))
    assert all(v in categories for v in values)
    assert any(v == [1, 2] for v in values) and any(v is None for v in values)
    assert 1 in values and all(type(v) is not np.int64 for v in values)


def test_choice_rejects_empty_and_non_lists():
    with pytest.raises(ValueError, match="non-empty"):
        s.choice([])
    with pytest.raises(TypeError, match="categories"):
        s.choice(3)


def test_bad_bound_types_are_type_errors():
    with pytest.raises(TypeError, match="lower"):
        s.uniform("a", 1)


def test_quantization_factor_must_be_positive():
    with pytest.raises(ValueError, match="q must be greater than 0"):
        s.qrandint(0, 10, 0)


def test_only_one_sampler_per_domain():
    with pytest.raises(ValueError, match="only choose one sampler"):
        s.uniform(0, 1).normal()


def test_sample_from_zero_or_one_argument():
    assert s.sample_from(lambda: 3).sample() == 3
    assert s.sample_from(lambda spec: spec["x"]).sample(spec={"x": 4}) == 4


def test_sample_from_rejects_two_required_arguments():
    with pytest.raises(ValueError, match="0 or 1 parameters"):
        s.sample_from(lambda a, b: a)


def test_grid_search_returns_dict_and_rejects_non_lists():
    assert s.grid_search([1, 2]) == {"grid_search": [1, 2]}
    with pytest.raises(TuneError, match="expected list"):
        s.grid_search((1, 2))


def test_function_is_a_deprecated_no_op(caplog):
    def f(spec):
        return 1

    with caplog.at_level(logging.WARNING):
        assert s.function(f) is f
    assert "no longer needed" in caplog.text


def test_global_numpy_seed_makes_sampling_reproducible():
    domain = s.uniform(0, 1)
    np.random.seed(123)
    first = draws(domain, n=5)
    np.random.seed(123)
    assert draws(domain, n=5) == first


@pytest.mark.parametrize(
    "make_state",
    [lambda: 7, lambda: np.random.default_rng(7), lambda: np.random.RandomState(7)],
)
def test_explicit_random_state_is_reproducible(make_state):
    domains = [s.uniform(0, 1), s.randint(0, 100), s.choice(list("abcdef")), s.randn()]
    first = [draws(d, n=5, random_state=make_state()) for d in domains]
    again = [draws(d, n=5, random_state=make_state()) for d in domains]
    assert first == again


def test_bad_random_state_type():
    with pytest.raises(TypeError, match="random_state"):
        s.uniform(0, 1).sample(random_state="seed")


@pytest.mark.parametrize(
    "domain",
    [
        s.uniform(0, 1),
        s.quniform(0, 1, 0.5),
        s.loguniform(1e-3, 1),
        s.randn(),
        s.qrandint(0, 10, 2),
        s.lograndint(1, 10),
        s.choice([1, 2]),
    ],
)
def test_domains_pickle(domain):
    clone = pickle.loads(pickle.dumps(domain))
    assert type(clone.get_sampler()) is type(domain.get_sampler())
    assert clone.sample(random_state=1) == domain.sample(random_state=1)


def test_function_domain_pickles_with_cloudpickle():
    clone = cloudpickle.loads(cloudpickle.dumps(s.sample_from(lambda: 5)))
    assert clone.sample() == 5


def test_sampler_attributes_for_searcher_integrations():
    q = s.qloguniform(1, 100, 1, base=2)
    assert isinstance(q.get_sampler(), s.Quantized) and q.get_sampler().q == 1
    assert isinstance(q.get_sampler().get_sampler(), s.LogUniform)
    assert q.get_sampler().get_sampler().base == 2
    n = s.randn(1.0, 3.0).get_sampler()
    assert (n.mean, n.sd) == (1.0, 3.0)
    assert s.choice([1, 2]).categories == [1, 2]
    assert s.Categorical([1, 2]).grid().is_grid()


def test_is_valid():
    assert s.uniform(0, 1).is_valid(0.5) and not s.uniform(0, 1).is_valid(2)
    assert s.choice(["a"]).is_valid("a") and not s.choice(["a"]).is_valid("b")
