from __future__ import annotations

import datetime

import pytest

from tune_async._hooks import call_hook
from tune_async.error import TuneError
from tune_async.stopper import (
    CombinedStopper,
    EarlyStopping,
    ExperimentPlateauStopper,
    FunctionStopper,
    MaximumIterationStopper,
    NoopStopper,
    Stopper,
    TimeoutStopper,
    TrialPlateauStopper,
    dict_criteria_met,
    make_stopper,
)


class FakeClock:
    def __init__(self, now: float = 0.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class StopAllAfter(Stopper):
    """Stops everything once it has been asked ``n`` times."""

    def __init__(self, n: int):
        self.calls = 0
        self.n = n

    def __call__(self, trial_id, result):
        self.calls += 1
        return False

    def stop_all(self):
        return self.calls >= self.n


# ---- base classes ----------------------------------------------------------


def test_base_stopper_methods_are_abstract():
    with pytest.raises(NotImplementedError):
        Stopper()("t", {})
    with pytest.raises(NotImplementedError):
        Stopper().stop_all()


def test_noop_stopper_never_stops():
    stopper = NoopStopper()
    assert stopper("t", {"loss": 0}) is False
    assert stopper.stop_all() is False


def test_function_stopper_calls_function_and_never_stops_all():
    stopper = FunctionStopper(lambda trial_id, result: result["it"] >= 3)
    assert [stopper("t", {"it": i}) for i in (1, 2, 3)] == [False, False, True]
    assert stopper.stop_all() is False


def test_function_stopper_rejects_non_callable():
    with pytest.raises(TypeError, match="function"):
        FunctionStopper(3)


def test_is_valid_function():
    assert FunctionStopper.is_valid_function(lambda t, r: False) is True
    assert FunctionStopper.is_valid_function(NoopStopper()) is False
    assert FunctionStopper.is_valid_function({"a": 1}) is False


def test_is_valid_function_rejects_stopper_lookalike():
    class LooksLikeStopper:
        def __call__(self, trial_id, result):
            return False

        def stop_all(self):
            return True

    with pytest.raises(ValueError, match="Stopper subclass"):
        FunctionStopper.is_valid_function(LooksLikeStopper())


def test_combined_stopper_is_or_over_both_methods():
    combined = CombinedStopper(StopAllAfter(3), MaximumIterationStopper(2))
    assert combined("t", {}) is False
    assert combined("t", {}) is True  # max_iter reached
    assert combined.stop_all() is False
    combined("t", {})
    assert combined.stop_all() is True


def test_combined_stopper_stops_asking_at_the_first_true():
    a, b = MaximumIterationStopper(1), StopAllAfter(10)
    assert CombinedStopper(a, b)("t", {}) is True
    assert b.calls == 0  # 1.x: any(<generator>) short-circuits after ``a`` stopped


def test_combined_stopper_rejects_non_stoppers():
    with pytest.raises(TypeError, match="position 1"):
        CombinedStopper(NoopStopper(), lambda t, r: True)


async def test_combined_stopper_awaits_async_children():
    class AsyncStopper(Stopper):
        async def __call__(self, trial_id, result):
            return result["x"] > 1

        async def stop_all(self):
            return True

    combined = CombinedStopper(NoopStopper(), AsyncStopper())
    assert await call_hook(combined, "t", {"x": 0}) is False
    assert await call_hook(combined, "t", {"x": 2}) is True
    assert await call_hook(combined.stop_all) is True


# ---- MaximumIterationStopper ----------------------------------------------


def test_maximum_iteration_stopper_counts_per_trial():
    stopper = MaximumIterationStopper(max_iter=3)
    assert [stopper("a", {}) for _ in range(3)] == [False, False, True]
    assert stopper("b", {}) is False
    assert stopper.stop_all() is False


def test_maximum_iteration_stopper_rejects_non_number():
    with pytest.raises(ValueError, match="max_iter"):
        MaximumIterationStopper("3")


# ---- ExperimentPlateauStopper ----------------------------------------------


def test_experiment_plateau_stops_when_top_values_converge():
    stopper = ExperimentPlateauStopper("loss", std=0.01, top=3, mode="min")
    assert stopper("a", {"loss": 5.0}) is False
    assert stopper("b", {"loss": 1.0}) is False
    assert stopper("a", {"loss": 1.001}) is False  # top 3 = 1.0, 1.001, 5.0
    assert stopper.stop_all() is False
    assert stopper("b", {"loss": 1.002}) is True  # top 3 = 1.0, 1.001, 1.002
    assert stopper.stop_all() is True


def test_experiment_plateau_max_mode_keeps_largest():
    stopper = ExperimentPlateauStopper("acc", std=0.01, top=2, mode="max")
    assert stopper("a", {"acc": 0.9}) is False
    assert stopper("a", {"acc": 0.1}) is False  # top 2 = 0.1, 0.9
    assert stopper("a", {"acc": 0.9}) is True  # top 2 = 0.9, 0.9


def test_experiment_plateau_patience_needs_consecutive_plateaus():
    stopper = ExperimentPlateauStopper("loss", std=0.01, top=2, patience=2)
    assert stopper("a", {"loss": 1.0}) is False
    assert stopper("a", {"loss": 1.0}) is False  # plateau 1
    assert stopper("a", {"loss": 1.0}) is True  # plateau 2 >= patience


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mode": "avg"}, "min or max"),
        ({"top": 1}, "greater than one"),
        ({"top": 2.5}, "greater than one"),
        ({"patience": -1}, "Patience"),
        ({"patience": 1.0}, "Patience"),
        ({"std": 0.0}, "standard deviation"),
        ({"std": 1}, "standard deviation"),
    ],
)
def test_experiment_plateau_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ExperimentPlateauStopper("loss", **kwargs)


def test_early_stopping_is_deprecated_alias():
    with pytest.warns(DeprecationWarning, match="ExperimentPlateauStopper"):
        stopper = EarlyStopping("loss", top=2)
    assert isinstance(stopper, ExperimentPlateauStopper)


# ---- TrialPlateauStopper ----------------------------------------------------


def test_trial_plateau_waits_for_grace_period_and_window():
    stopper = TrialPlateauStopper("loss", std=0.01, num_results=2, grace_period=3)
    assert stopper("a", {"loss": 1.0}) is False
    assert stopper("a", {"loss": 1.0}) is False  # window full but in grace period
    assert stopper("a", {"loss": 1.0}) is True
    assert stopper.stop_all() is False


def test_trial_plateau_is_per_trial():
    stopper = TrialPlateauStopper("loss", num_results=2, grace_period=2)
    stopper("a", {"loss": 1.0})
    assert stopper("b", {"loss": 1.0}) is False
    assert stopper("a", {"loss": 1.0}) is True


def test_trial_plateau_does_not_stop_while_improving():
    stopper = TrialPlateauStopper("loss", std=0.01, num_results=3, grace_period=3)
    assert [stopper("a", {"loss": v}) for v in (3.0, 2.0, 1.0, 0.5)] == [False] * 4


def test_trial_plateau_threshold_min():
    stopper = TrialPlateauStopper(
        "loss", num_results=2, grace_period=2, metric_threshold=0.5, mode="min"
    )
    assert stopper("a", {"loss": 1.0}) is False
    assert stopper("a", {"loss": 1.0}) is False  # plateaued but above the threshold
    stopper("b", {"loss": 0.2})
    assert stopper("b", {"loss": 0.2}) is True


def test_trial_plateau_threshold_max_and_zero_threshold():
    stopper = TrialPlateauStopper(
        "acc", num_results=2, grace_period=2, metric_threshold=0.0, mode="max"
    )
    stopper("a", {"acc": -1.0})
    assert stopper("a", {"acc": -1.0}) is False  # below 0.0: 1.x ignored a 0 threshold
    stopper("b", {"acc": 1.0})
    assert stopper("b", {"acc": 1.0}) is True


def test_trial_plateau_missing_metric_never_stops():
    stopper = TrialPlateauStopper("loss", num_results=2, grace_period=1)
    assert stopper("a", {}) is False
    assert stopper("a", {}) is False


def test_trial_plateau_threshold_needs_mode():
    with pytest.raises(ValueError, match="mode"):
        TrialPlateauStopper("loss", metric_threshold=1.0)
    with pytest.raises(ValueError, match="mode"):
        TrialPlateauStopper("loss", mode="avg")
    with pytest.raises(ValueError, match="num_results"):
        TrialPlateauStopper("loss", num_results=0)


# ---- TimeoutStopper ---------------------------------------------------------


def test_timeout_clock_starts_at_first_stop_all():
    clock = FakeClock(100.0)
    stopper = TimeoutStopper(10, clock=clock)
    clock.now = 500.0  # construction time does not count
    assert stopper.stop_all() is False
    clock.now = 509.9
    assert stopper.stop_all() is False
    clock.now = 510.0
    assert stopper.stop_all() is True
    assert stopper("t", {}) is False


def test_timeout_accepts_timedelta_and_zero_start_clock():
    clock = FakeClock(0.0)
    stopper = TimeoutStopper(datetime.timedelta(minutes=1), clock=clock)
    assert stopper.stop_all() is False
    clock.now = 59.0
    assert stopper.stop_all() is False
    clock.now = 60.0
    assert stopper.stop_all() is True


def test_timeout_zero_stops_at_second_check():
    stopper = TimeoutStopper(0, clock=FakeClock())
    assert stopper.stop_all() is False
    assert stopper.stop_all() is True


@pytest.mark.parametrize("timeout", ["10", None, True, -1, float("nan")])
def test_timeout_rejects_bad_values(timeout):
    with pytest.raises(ValueError, match="timeout"):
        TimeoutStopper(timeout)


# ---- make_stopper -----------------------------------------------------------


def test_make_stopper_none_and_empty():
    assert make_stopper(None) == ({}, None)
    assert make_stopper({}) == ({}, None)
    assert make_stopper([]) == ({}, None)


def test_make_stopper_dict_flattens_nested_keys():
    criteria, stopper = make_stopper({"training_iteration": 5, "a": {"b": 1.5}})
    assert criteria == {"training_iteration": 5, "a/b": 1.5}
    assert stopper is None


def test_make_stopper_dict_rejects_non_number_threshold():
    with pytest.raises(ValueError, match="Invalid stop criteria.*'loss'"):
        make_stopper({"loss": "low"})


def test_make_stopper_stopper_instance():
    stopper = MaximumIterationStopper(3)
    assert make_stopper(stopper) == ({}, stopper)


def test_make_stopper_list_combines():
    a, b = MaximumIterationStopper(1), StopAllAfter(1)
    criteria, stopper = make_stopper([b, a])  # ``b`` first: ``a`` stopping ends the round
    assert criteria == {}
    assert isinstance(stopper, CombinedStopper)
    assert stopper("t", {}) is True
    assert stopper.stop_all() is True


def test_make_stopper_list_rejects_non_stoppers():
    with pytest.raises(ValueError, match="each element must"):
        make_stopper([NoopStopper(), {"a": 1}])


def test_make_stopper_function():
    criteria, stopper = make_stopper(lambda trial_id, result: result["x"] > 2)
    assert criteria == {}
    assert isinstance(stopper, FunctionStopper)
    assert stopper("t", {"x": 3}) is True


def test_make_stopper_function_with_wrong_arity():
    with pytest.raises(ValueError, match="two arguments"):
        make_stopper(lambda result: True)


def test_make_stopper_rejects_stopper_lookalike():
    class Fake:
        def __call__(self, trial_id, result):
            return False

        def stop_all(self):
            return False

    with pytest.raises(ValueError, match="Stopper subclass"):
        make_stopper(Fake())


@pytest.mark.parametrize("stop", [3, "training_iteration", 1.5])
def test_make_stopper_rejects_other_types(stop):
    with pytest.raises(ValueError, match="Invalid stop criteria"):
        make_stopper(stop)


# ---- dict_criteria_met --------------------------------------------------------


def test_dict_criteria_met_uses_greater_or_equal():
    criteria = {"training_iteration": 3}
    assert dict_criteria_met(criteria, {"training_iteration": 2}) is False
    assert dict_criteria_met(criteria, {"training_iteration": 3}) is True


def test_dict_criteria_met_is_or_over_keys():
    criteria = {"a": 10, "b/c": 1}
    assert dict_criteria_met(criteria, {"a": 0, "b/c": 0}) is False
    assert dict_criteria_met(criteria, {"a": 0, "b/c": 1}) is True


def test_dict_criteria_met_empty_is_false():
    assert dict_criteria_met({}, {"a": 1}) is False


def test_dict_criteria_met_missing_key_raises():
    with pytest.raises(TuneError, match="Stopping criteria loss not provided in result"):
        dict_criteria_met({"loss": 1}, {"acc": 1})


def test_dict_criteria_met_uncomparable_value_raises():
    with pytest.raises(TuneError, match="cannot compare"):
        dict_criteria_met({"loss": 1}, {"loss": None})
