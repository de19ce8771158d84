"""Callback base class and CallbackList dispatch."""

from __future__ import annotations

import time

import pytest

from tune_async.callback import HOOK_NAMES, Callback, CallbackList
from tune_async.trial import Trial


class Recorder(Callback):
    def __init__(self, log: list, name: str) -> None:
        self.log = log
        self.name = name

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.log.append((self.name, iteration, trial.trial_id, result["x"], info))


class StartOnly(Callback):
    def __init__(self) -> None:
        self.started = []

    def on_trial_start(self, iteration, trials, trial, **info):
        self.started.append(trial.trial_id)


class AsyncHooks(Callback):
    def __init__(self) -> None:
        self.events = []

    async def setup(self, **info):
        self.events.append(("setup", info))

    async def on_trial_complete(self, iteration, trials, trial, **info):
        self.events.append(("complete", trial.trial_id))

    async def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        self.events.append(("checkpoint", checkpoint))

    async def on_experiment_end(self, trials, **info):
        self.events.append(("end", len(trials)))


def make_trial() -> Trial:
    return Trial("train", config={"a": 1})


def test_base_callback_hooks_are_noops():
    cb = Callback()
    trial = make_trial()
    assert cb.setup() is None
    assert cb.on_trial_result(iteration=1, trials=[trial], trial=trial, result={}) is None
    assert cb.on_experiment_end(trials=[trial]) is None


async def test_dispatches_only_to_callbacks_that_override_the_hook():
    log: list = []
    start_only = StartOnly()
    callbacks = CallbackList([Recorder(log, "a"), start_only, Recorder(log, "b")])
    trial = make_trial()

    assert callbacks.implements("on_trial_result")
    assert callbacks.implements("on_trial_start")
    assert not callbacks.implements("on_trial_error")
    await callbacks.on_trial_result(iteration=3, trials=[trial], trial=trial, result={"x": 7})
    await callbacks.on_trial_start(iteration=4, trials=[trial], trial=trial)

    assert [entry[0] for entry in log] == ["a", "b"]  # call order kept
    assert log[0][1:4] == (3, trial.trial_id, 7)
    assert start_only.started == [trial.trial_id]


async def test_non_overriding_callback_is_never_called():
    class Boom(Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            pass

    cb = Boom()
    callbacks = CallbackList([cb])
    # An instance attribute does not count as an override: the class defines the hooks.
    cb.on_trial_result = lambda **kw: (_ for _ in ()).throw(AssertionError("called"))
    trial = make_trial()
    await callbacks.on_trial_result(iteration=1, trials=[trial], trial=trial, result={})


async def test_hooks_receive_keyword_arguments_and_info():
    seen = {}

    class KwOnly(Callback):
        def on_trial_result(self, *, iteration, trials, trial, result, **info):
            seen.update(iteration=iteration, result=result, info=info)

    trial = make_trial()
    await CallbackList([KwOnly()]).on_trial_result(
        iteration=2, trials=[trial], trial=trial, result={"x": 1}, extra="e"
    )
    assert seen == {"iteration": 2, "result": {"x": 1}, "info": {"extra": "e"}}


async def test_async_hooks_are_awaited():
    cb = AsyncHooks()
    callbacks = CallbackList([cb])
    trial = make_trial()
    await callbacks.setup(stop=None)
    await callbacks.on_trial_complete(iteration=1, trials=[trial], trial=trial)
    await callbacks.on_checkpoint(iteration=1, trials=[trial], trial=trial, checkpoint="ckpt")
    await callbacks.on_experiment_end(trials=[trial])
    assert cb.events == [
        ("setup", {"stop": None}),
        ("complete", trial.trial_id),
        ("checkpoint", "ckpt"),
        ("end", 1),
    ]


async def test_async_on_trial_result_is_awaited():
    got = []

    class AsyncResult(Callback):
        async def on_trial_result(self, iteration, trials, trial, result, **info):
            got.append(result["x"])

    trial = make_trial()
    await CallbackList([AsyncResult()]).on_trial_result(
        iteration=1, trials=[trial], trial=trial, result={"x": 5}
    )
    assert got == [5]


async def test_every_hook_dispatches():
    calls = []

    class All(Callback):
        pass

    for name in HOOK_NAMES:
        setattr(All, name, (lambda n: lambda self, **kw: calls.append(n))(name))
    callbacks = CallbackList([All()])
    trial = make_trial()
    common = dict(iteration=1, trials=[trial])
    await callbacks.setup()
    await callbacks.on_step_begin(**common)
    await callbacks.on_step_end(**common)
    await callbacks.on_trial_start(**common, trial=trial)
    await callbacks.on_trial_restore(**common, trial=trial)
    await callbacks.on_trial_save(**common, trial=trial)
    await callbacks.on_trial_result(**common, trial=trial, result={})
    await callbacks.on_trial_complete(**common, trial=trial)
    await callbacks.on_trial_error(**common, trial=trial)
    await callbacks.on_checkpoint(**common, trial=trial, checkpoint=None)
    await callbacks.on_experiment_end(trials=[trial])
    assert calls == list(HOOK_NAMES)


def test_rejects_non_callbacks():
    with pytest.raises(TypeError, match="callbacks must be instances"):
        CallbackList([object()])


def test_len_and_iter():
    cbs = [Callback(), StartOnly()]
    callbacks = CallbackList(cbs)
    assert len(callbacks) == 2
    assert list(callbacks) == cbs


async def test_sync_result_dispatch_is_cheap():
    class Cheap(Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            pass

    callbacks = CallbackList([Cheap() for _ in range(5)] + [StartOnly() for _ in range(5)])
    trial = make_trial()
    trials = [trial]
    result = {"x": 1}
    n = 5000
    start = time.perf_counter()
    for i in range(n):
        await callbacks.on_trial_result(iteration=i, trials=trials, trial=trial, result=result)
    per_callback = (time.perf_counter() - start) / n / 5
    assert per_callback < 10e-6  # ~1 µs measured; generous bound for slow CI
