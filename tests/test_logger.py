"""Logger callbacks, legacy loggers and the default callback list."""

from __future__ import annotations

import csv
import glob
import json
import math
import os
import pickle
import sys

import pytest

from tune_async.callback import Callback, CallbackList
from tune_async.logger import (
    DEFAULT_LOGGERS,
    CSVLogger,
    CSVLoggerCallback,
    JsonLogger,
    JsonLoggerCallback,
    LegacyLoggerCallback,
    Logger,
    LoggerCallback,
    NoopLogger,
    TBXLoggerCallback,
    UnifiedLogger,
    create_default_callbacks,
)
from tune_async.progress import TrialProgressCallback
from tune_async.trial import Trial


class FakeClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def trial(tmp_path):
    logdir = tmp_path / "trial_0"
    logdir.mkdir()
    return Trial("train", config={"lr": 0.1, "nested": {"b": 2}, "obj": object}, logdir=str(logdir))


def result(i: int, **extra) -> dict:
    return {"training_iteration": i, "loss": 1.0 / i, "config": {"lr": 0.1}, **extra}


def read_lines(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


def read_csv(path: str) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


# ---- JsonLoggerCallback ----------------------------------------------------


def test_json_logger_writes_params_on_start(trial):
    cb = JsonLoggerCallback()
    cb.log_trial_start(trial)
    with open(os.path.join(trial.logdir, "params.json")) as f:
        text = f.read()
    assert json.loads(text) == {"lr": 0.1, "nested": {"b": 2}, "obj": repr(object)}
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True)
    with open(os.path.join(trial.logdir, "params.pkl"), "rb") as f:
        assert pickle.load(f) == trial.config
    cb.log_trial_end(trial)


@pytest.mark.parametrize("config", [
    {},
    {"lr": 0.1},
    {"b": 1, "a": 'x/y\n"\u00e9', "c": None, "d": True, "e": float("nan"),
     "f": float("-inf"), "g": -0.0, "h": 10**30},
])
def test_a_flat_config_s_params_json_is_json_s_own_indented_text(tmp_path, config):
    """params.json of a flat config of plain values is laid out without json's slow
    indenting encoder: the text is byte for byte what it would write."""
    from tune_async.logger.logger import write_params

    write_params(str(tmp_path), config)
    text = (tmp_path / "params.json").read_text()
    assert text == json.dumps(config, indent=2, sort_keys=True)


def test_json_logger_appends_one_line_per_result(trial):
    cb = JsonLoggerCallback()
    cb.log_trial_start(trial)
    for i in (1, 2, 3):
        cb.log_trial_result(i, trial, result(i))
    cb.log_trial_end(trial)
    lines = read_lines(os.path.join(trial.logdir, "result.json"))
    assert [line["training_iteration"] for line in lines] == [1, 2, 3]
    assert lines[0]["config"] == {"lr": 0.1}  # result.json keeps the config


def test_json_logger_lines_read_back_as_1x_wrote_them(trial):
    # Plain results take a fast encoder; NaN/Infinity (which it would write as null),
    # numpy values, enums and other objects must still read back as 1.x's did.
    import enum

    import numpy as np

    class Color(enum.Enum):
        RED = 1

    results = [
        result(1, text='x,y"\n\u00e9\u2028', none=None, flag=True, big=2**70,
               nested={"a": [1, 2.5, {"b": -0.0}], "t": (1, 2)}),
        result(2, loss=float("nan"), up=float("inf"), down=[float("-inf")]),
        result(3, np_float=np.float64(1.5), np_int=np.int32(7), arr=np.arange(3),
               color=Color.RED, path=os.path.join("a", "b")),
    ]
    cb = JsonLoggerCallback()
    cb.log_trial_start(trial)
    for i, res in enumerate(results, 1):
        cb.log_trial_result(i, trial, res)
    cb.log_trial_end(trial)
    first, second, third = read_lines(os.path.join(trial.logdir, "result.json"))
    assert first == json.loads(json.dumps(results[0]))
    assert math.isnan(second["loss"])
    assert second["up"] == math.inf and second["down"] == [-math.inf]
    assert (third["np_float"], third["np_int"], third["arr"]) == (1.5, 7, [0, 1, 2])
    assert third["color"] == "Color.RED" and third["path"] == os.path.join("a", "b")


def test_json_logger_result_without_start_opens_files(trial):
    cb = JsonLoggerCallback()
    cb.log_trial_result(1, trial, result(1))
    cb.log_trial_end(trial)
    assert os.path.exists(os.path.join(trial.logdir, "params.json"))
    assert len(read_lines(os.path.join(trial.logdir, "result.json"))) == 1


def test_json_logger_restarted_trial_appends(trial):
    cb = JsonLoggerCallback()
    cb.log_trial_start(trial)
    cb.log_trial_result(1, trial, result(1))
    cb.log_trial_end(trial, failed=True)
    cb.log_trial_start(trial)  # retry after a failure: same logdir
    cb.log_trial_result(1, trial, result(1))
    cb.log_trial_result(2, trial, result(2))
    cb.log_trial_end(trial)
    lines = read_lines(os.path.join(trial.logdir, "result.json"))
    assert [line["training_iteration"] for line in lines] == [1, 1, 2]


def test_logger_skips_trial_without_logdir():
    cb = JsonLoggerCallback()
    trial = Trial("train")
    cb.log_trial_start(trial)
    cb.log_trial_result(1, trial, result(1))
    cb.log_trial_end(trial)  # nothing to write, nothing raised


def test_flush_at_most_once_per_interval(trial):
    clock = FakeClock()
    cb = JsonLoggerCallback(clock=clock)
    path = os.path.join(trial.logdir, "result.json")
    cb.log_trial_start(trial)
    cb.log_trial_result(1, trial, result(1))
    clock.now += 0.5
    cb.log_trial_result(2, trial, result(2))
    assert os.path.getsize(path) == 0  # still buffered
    clock.now += 0.6  # 1.1 s since the callback started
    cb.log_trial_result(3, trial, result(3))
    assert len(read_lines(path)) == 3  # flushed
    cb.log_trial_result(4, trial, result(4))
    assert len(read_lines(path)) == 3  # next flush not due yet
    cb.log_trial_end(trial)
    assert len(read_lines(path)) == 4  # trial end flushes and closes


def test_flush_covers_every_dirty_trial(tmp_path):
    clock = FakeClock()
    cb = CSVLoggerCallback(clock=clock)
    a = Trial("train", logdir=str(tmp_path / "a"))
    b = Trial("train", logdir=str(tmp_path / "b"))
    cb.log_trial_result(1, a, result(1))
    clock.now += 2
    cb.log_trial_result(1, b, result(1))
    assert len(read_csv(os.path.join(a.logdir, "progress.csv"))) == 2
    assert len(read_csv(os.path.join(b.logdir, "progress.csv"))) == 2
    cb.log_trial_end(a)
    cb.log_trial_end(b)


async def test_experiment_end_flushes_and_closes(trial):
    clock = FakeClock()
    cb = JsonLoggerCallback(clock=clock)
    callbacks = CallbackList([cb])
    await callbacks.on_trial_start(iteration=0, trials=[trial], trial=trial)
    await callbacks.on_trial_result(iteration=1, trials=[trial], trial=trial, result=result(1))
    await callbacks.on_experiment_end(trials=[trial])
    assert len(read_lines(os.path.join(trial.logdir, "result.json"))) == 1


# ---- CSVLoggerCallback -----------------------------------------------------


def test_csv_columns_fixed_by_first_result(trial):
    cb = CSVLoggerCallback()
    cb.log_trial_start(trial)
    cb.log_trial_result(1, trial, {"a": 1, "nested": {"x": 2}, "config": {"lr": 1}})
    cb.log_trial_result(2, trial, {"a": 3, "nested": {"x": 4}, "late": 5})
    cb.log_trial_result(3, trial, {"a": 6})
    cb.log_trial_end(trial)
    rows = read_csv(os.path.join(trial.logdir, "progress.csv"))
    assert rows == [["a", "nested/x"], ["1", "2"], ["3", "4"], ["6", ""]]


def test_csv_rows_of_plain_results_follow_the_first_rows_columns(trial):
    # Plain rows take a faster path once the columns are known; each kind of row
    # after the first must still come out as the general path writes it.
    cb = CSVLoggerCallback()
    cb.log_trial_start(trial)
    cb.log_trial_result(1, trial, {"a": 1, "b": 0.5, "s": "x,y", "config": {"lr": 1}})
    cb.log_trial_result(2, trial, {"b": 1e-05, "a": None, "s": 'q"', "extra": 9})
    cb.log_trial_result(3, trial, {"a": [1, 2], "b": True, "s": {"deep": 1}})
    cb.log_trial_result(4, trial, {"a": 2})
    cb.log_trial_result(5, trial, {"a": 3, "b": float("nan"), "s": "z"})
    cb.log_trial_end(trial)
    rows = read_csv(os.path.join(trial.logdir, "progress.csv"))
    assert rows == [["a", "b", "s"], ["1", "0.5", "x,y"], ["", "1e-05", 'q"'],
                    ["[1, 2]", "True", ""], ["2", "", ""], ["3", "nan", "z"]]


@pytest.mark.parametrize("seed", range(4))
def test_csv_fast_line_reads_back_as_the_csv_modules(seed):
    # Plain rows are made from a JSON array; read back, each cell must be the csv
    # module's (a float's text may differ in layout, never in value), or the row
    # must be left to the csv module.
    import io
    import random

    from tune_async.logger.logger import _csv_line_via_json

    rng = random.Random(seed)
    pieces = ["a", "", " b ", "null", "true", "x,y", 'q"', "l\nb", "cr\r", "tab\t", "back\\",
              "\u00e9\u2028", "1e5"]
    scalars = [lambda: rng.choice(pieces), lambda: rng.randint(-10**12, 10**12),
               lambda: rng.choice([2**70, -(2**63)]), lambda: rng.uniform(-1e6, 1e6),
               lambda: rng.choice([1e-05, 5e-324, 1e16, 1e22, -0.0, 0.1, 123.0]),
               lambda: rng.choice([float("nan"), float("inf"), -float("inf")]),
               lambda: rng.choice([None, True, False])]
    fast_rows = 0
    for _ in range(400):
        values = tuple(rng.choice(scalars)() for _ in range(rng.randint(2, 8)))
        out = io.StringIO()
        csv.writer(out).writerow(values)
        expected = next(csv.reader([out.getvalue()]))
        line = _csv_line_via_json(values)
        if line is None:
            continue
        fast_rows += 1
        assert line.endswith(b"\r\n")
        got = next(csv.reader([line.decode("utf-8")]))
        assert len(got) == len(expected), values
        for value, cell, want in zip(values, got, expected, strict=True):
            if type(value) is float:
                assert float(cell) == float(want), values
            else:
                assert cell == want, values
    assert fast_rows > 50  # the fast path is taken for most plain rows


def test_csv_append_writes_no_second_header(trial):
    for _ in range(2):
        cb = CSVLoggerCallback()
        cb.log_trial_start(trial)
        cb.log_trial_result(1, trial, {"b": 1, "a": 2})
        cb.log_trial_end(trial)
    cb = CSVLoggerCallback()
    cb.log_trial_result(1, trial, {"a": 3, "new": 4, "b": 5})  # existing header wins
    cb.log_trial_end(trial)
    rows = read_csv(os.path.join(trial.logdir, "progress.csv"))
    assert rows == [["b", "a"], ["1", "2"], ["1", "2"], ["5", "3"]]


def test_csv_deferred_reads_the_existing_header_off_the_loop_and_keeps_row_order(
        trial, monkeypatch):
    import builtins
    import threading

    cb = CSVLoggerCallback()
    cb.log_trial_start(trial)
    cb.log_trial_result(1, trial, {"b": 1, "a": 2})
    cb.log_trial_end(trial)

    def flush_in_a_thread():
        worker = threading.Thread(target=flush_files, name="writer")
        worker.start()
        worker.join()

    opened = []
    real_open = builtins.open

    def recording_open(path, *args, **kwargs):
        opened.append((os.path.basename(str(path)), threading.current_thread().name))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", recording_open)
    cb = CSVLoggerCallback()
    flush_files = cb.defer_flushing()  # as the controller does: I/O in its writer thread
    cb.log_trial_start(trial)  # a restart: the file and its header exist
    cb.log_trial_result(1, trial, {"a": 3, "new": 4, "b": 5})  # before the header is read
    assert opened == []  # nothing read on the caller's thread
    flush_in_a_thread()
    cb.log_trial_result(2, trial, {"b": 7, "a": 6})  # after: formatted right away
    cb.log_trial_end(trial)
    flush_in_a_thread()
    monkeypatch.undo()
    assert opened == [("progress.csv", "writer")]
    rows = read_csv(os.path.join(trial.logdir, "progress.csv"))
    assert rows == [["b", "a"], ["1", "2"], ["5", "3"], ["7", "6"]]


def test_csv_deferred_rows_keep_their_order_for_a_new_file_and_a_same_header_restart(trial):
    # Rows reported before the first flush are formatted under the first row's keys:
    # a new file gets them with that header; a restarted trial whose file has the
    # same header gets them without a second header.
    import threading

    def flushed(cb, flush_files, results):
        cb.log_trial_start(trial)
        for i, result in enumerate(results, 1):
            cb.log_trial_result(i, trial, result)
        worker = threading.Thread(target=flush_files)
        worker.start()
        worker.join()
        cb.log_trial_result(len(results) + 1, trial, {"a": 9, "b": 9.5})  # after the flush
        cb.log_trial_end(trial)
        worker = threading.Thread(target=flush_files)
        worker.start()
        worker.join()

    path = os.path.join(trial.logdir, "progress.csv")
    cb = CSVLoggerCallback()
    flushed(cb, cb.defer_flushing(), [{"a": 1, "b": 0.5, "config": {}}, {"b": 0.25},
                                      {"a": 2, "b": "x,y", "extra": 1}])
    assert read_csv(path) == [["a", "b"], ["1", "0.5"], ["", "0.25"], ["2", "x,y"],
                              ["9", "9.5"]]
    cb = CSVLoggerCallback()
    flushed(cb, cb.defer_flushing(), [{"a": 3, "b": 4}])
    assert read_csv(path)[5:] == [["3", "4"], ["9", "9.5"]]


async def test_logger_callback_maps_hooks():
    calls = []

    class Recording(LoggerCallback):
        def log_trial_start(self, trial):
            calls.append("start")

        def log_trial_restore(self, trial):
            calls.append("restore")

        def log_trial_save(self, trial):
            calls.append("save")

        async def log_trial_result(self, iteration, trial, result):
            calls.append(("result", iteration, result["x"]))

        def log_trial_end(self, trial, failed=False):
            calls.append(("end", failed))

    t = Trial("train")
    callbacks = CallbackList([Recording()])
    common = dict(iteration=4, trials=[t], trial=t)
    await callbacks.on_trial_start(**common)
    await callbacks.on_trial_restore(**common)
    await callbacks.on_trial_save(**common)
    await callbacks.on_trial_result(**common, result={"x": 9})
    await callbacks.on_trial_complete(**common)
    await callbacks.on_trial_error(**common)
    assert calls == [
        "start", "restore", "save", ("result", 4, 9), ("end", False), ("end", True)
    ]


# ---- TBXLoggerCallback -----------------------------------------------------


def test_tbx_logger_writes_event_file(trial):
    pytest.importorskip("tensorboardX")
    cb = TBXLoggerCallback()
    cb.log_trial_start(trial)
    cb.log_trial_result(1, trial, result(1, hist=[1.0, 2.0], name="text", flag=True))
    cb.log_trial_end(trial)
    assert glob.glob(os.path.join(trial.logdir, "events.out.tfevents.*"))


def test_tbx_logger_without_tensorboardx_raises_with_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    with pytest.raises(ImportError, match="pip install tensorboardX"):
        TBXLoggerCallback()


# ---- legacy loggers --------------------------------------------------------


def test_legacy_callback_runs_json_and_csv_loggers(trial):
    cb = LegacyLoggerCallback([JsonLogger, CSVLogger])
    cb.log_trial_start(trial)
    cb.log_trial_result(1, trial, result(1))
    cb.log_trial_result(2, trial, result(2))
    cb.log_trial_end(trial)
    with open(os.path.join(trial.logdir, "params.json")) as f:
        assert json.load(f)["lr"] == 0.1
    assert len(read_lines(os.path.join(trial.logdir, "result.json"))) == 2
    rows = read_csv(os.path.join(trial.logdir, "progress.csv"))
    assert rows[0] == ["training_iteration", "loss"] and len(rows) == 3


def test_legacy_callback_drives_custom_logger(trial):
    events = []

    class MyLogger(Logger):
        def _init(self):
            events.append(("init", self.config["lr"], self.logdir))

        def on_result(self, result):
            events.append(("result", result["training_iteration"]))

        def update_config(self, config):
            events.append(("update", config["lr"]))

        def close(self):
            events.append("close")

    cb = LegacyLoggerCallback([MyLogger])
    cb.log_trial_start(trial)
    cb.log_trial_result(1, trial, result(1))
    cb.log_trial_start(trial)  # same trial again: update_config, no new logger
    cb.log_trial_end(trial)
    assert events == [
        ("init", 0.1, trial.logdir), ("result", 1), ("update", 0.1), "close"
    ]


def test_legacy_callback_rejects_non_logger():
    with pytest.raises(TypeError, match="Logger subclasses"):
        LegacyLoggerCallback([JsonLoggerCallback])


def test_unified_logger_defaults(trial):
    assert DEFAULT_LOGGERS == (JsonLogger, CSVLogger)
    log = UnifiedLogger(trial.config, trial.logdir)
    log.on_result(result(1))
    log.flush()
    log.close()
    assert len(read_lines(os.path.join(trial.logdir, "result.json"))) == 1
    assert len(read_csv(os.path.join(trial.logdir, "progress.csv"))) == 2


def test_noop_logger_writes_nothing(tmp_path):
    log = NoopLogger({}, str(tmp_path))
    log.on_result({"a": 1})
    log.close()
    assert os.listdir(tmp_path) == []


# ---- create_default_callbacks -----------------------------------------------


def types_of(callbacks):
    return [type(cb) for cb in callbacks]


@pytest.fixture(autouse=True)
def no_tensorboardx(monkeypatch):
    # The default set depends on whether tensorboardX is installed: pin it per test.
    import tune_async.logger.defaults as defaults

    monkeypatch.setattr(defaults, "_tensorboardx_installed", lambda: False)
    return defaults


def test_tbx_logger_added_by_default_when_tensorboardx_is_installed(no_tensorboardx,
                                                                     monkeypatch):
    pytest.importorskip("tensorboardX")
    monkeypatch.setattr(no_tensorboardx, "_tensorboardx_installed", lambda: True)
    cbs = create_default_callbacks(None, metric="loss", verbose=1)
    assert types_of(cbs) == [CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback]


def test_default_callbacks_added():
    cbs = create_default_callbacks(None, metric="loss", verbose=3)
    assert types_of(cbs) == [TrialProgressCallback, CSVLoggerCallback, JsonLoggerCallback]
    assert not any(isinstance(cb, TBXLoggerCallback) for cb in cbs)


def test_default_callbacks_keep_user_list_unchanged():
    user = [Callback()]
    cbs = create_default_callbacks(user, verbose=1)
    assert user == [user[0]]
    assert cbs[0] is user[0]
    assert types_of(cbs[1:]) == [CSVLoggerCallback, JsonLoggerCallback]  # no printer at 1


def test_existing_logger_not_duplicated():
    mine = JsonLoggerCallback()
    cbs = create_default_callbacks([mine], loggers=[CSVLogger], verbose=0)
    assert [cb for cb in cbs if isinstance(cb, JsonLoggerCallback)] == [mine]
    assert not any(isinstance(cb, CSVLoggerCallback) for cb in cbs)
    (legacy,) = [cb for cb in cbs if isinstance(cb, LegacyLoggerCallback)]
    assert legacy.logger_classes == [CSVLogger]


def test_unified_legacy_logger_counts_as_json_and_csv():
    cbs = create_default_callbacks([], loggers=[UnifiedLogger], verbose=0)
    assert types_of(cbs) == [LegacyLoggerCallback]


def test_logger_callback_instances_are_appended():
    mine = CSVLoggerCallback()
    cbs = create_default_callbacks([], loggers=[mine], verbose=0)
    assert cbs[0] is mine and types_of(cbs) == [CSVLoggerCallback, JsonLoggerCallback]


def test_auto_loggers_disabled():
    cbs = create_default_callbacks([], verbose=2, disable_auto_loggers=True)
    assert types_of(cbs) == [TrialProgressCallback]


def test_progress_callback_not_duplicated():
    mine = TrialProgressCallback(verbosity=2)
    cbs = create_default_callbacks([mine], verbose=3, disable_auto_loggers=True)
    assert cbs == [mine]


@pytest.mark.parametrize("bad", [[object()], [JsonLoggerCallback], "JsonLogger", [1]])
def test_invalid_loggers_rejected(bad):
    with pytest.raises(ValueError, match="Invalid value passed to loggers"):
        create_default_callbacks([], loggers=bad)
