"""register_trainable, resolve_trainable and the picklability check."""

from __future__ import annotations

import functools
import threading

import pytest

import tune_async as tune
from tune_async.error import TuneError
from tune_async.registry import (
    check_picklable,
    get_trainable_cls,
    has_trainable,
    register_trainable,
    resolve_trainable,
)
from tune_async.trainable.function_trainable import FunctionTrainable
from tune_async.trainable.trainable import Trainable


class MyTrainable(Trainable):
    def step(self):
        return {}


def my_function(config):
    pass


def test_register_function_wraps_it():
    register_trainable("reg_fn", my_function)
    cls = get_trainable_cls("reg_fn")
    assert has_trainable("reg_fn") and issubclass(cls, FunctionTrainable)


def test_register_class_and_lambda():
    register_trainable("reg_cls", MyTrainable)
    register_trainable("reg_lambda", lambda config: None)
    assert get_trainable_cls("reg_cls") is MyTrainable
    assert issubclass(get_trainable_cls("reg_lambda"), FunctionTrainable)


@pytest.mark.parametrize("bad", [dict, 42, "not callable"])
def test_register_rejects_non_trainables(bad):
    with pytest.raises(TypeError):
        register_trainable("bad", bad)


def test_unknown_trainable_is_tune_error():
    with pytest.raises(TuneError, match="Unknown trainable: nope_never_registered"):
        get_trainable_cls("nope_never_registered")
    assert not has_trainable("nope_never_registered")


def test_resolve_string_class_and_function():
    register_trainable("by_name", MyTrainable)
    assert resolve_trainable("by_name") == ("by_name", MyTrainable)
    assert resolve_trainable(MyTrainable) == ("MyTrainable", MyTrainable)
    name, cls = resolve_trainable(my_function)
    assert name == "my_function" and issubclass(cls, FunctionTrainable)
    assert get_trainable_cls("my_function") is cls


def test_resolve_names_unnamed_callables():
    assert resolve_trainable(lambda config: None)[0] == "lambda"
    assert resolve_trainable(functools.partial(my_function))[0] == "DEFAULT"

    def named(config):
        pass

    named._name = "custom"
    assert resolve_trainable(named)[0] == "custom"


def test_resolve_rejects_other_objects():
    with pytest.raises(TuneError, match="Improper 'run' - not string nor trainable."):
        resolve_trainable(42)


def test_check_picklable_accepts_plain_function():
    check_picklable(resolve_trainable(my_function)[1], "my_function")


def test_check_picklable_explains_what_failed():
    guard = threading.Lock()

    def uses_lock(config):
        with guard:
            pass

    _name, cls = resolve_trainable(uses_lock)
    with pytest.raises(TypeError) as excinfo:
        check_picklable(cls, "uses_lock")
    message = str(excinfo.value)
    assert "'uses_lock'" in message and "'guard' (lock)" in message
    assert "tune.with_parameters" in message


def test_register_env_and_lookup():
    from tune_async.registry import get_env_creator

    tune.register_env("corridor", lambda env_config: ("corridor", env_config))
    assert get_env_creator("corridor")({"n": 3}) == ("corridor", {"n": 3})
    with pytest.raises(tune.TuneError, match="Unknown env"):
        get_env_creator("nowhere")
    with pytest.raises(TypeError, match="env_creator"):
        tune.register_env("bad", 3)


def test_removed_checkpoint_helpers_raise_naming_the_replacement():
    for removed in (tune.make_checkpoint_dir, tune.save_checkpoint):
        with pytest.raises(DeprecationWarning, match="checkpoint_dir"):
            removed(1)
