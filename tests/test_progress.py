"""Reporters, verbosity and per-result printing."""

from __future__ import annotations

import sys
import types

import pytest

from tune_async.progress import (
    CLIReporter,
    JupyterNotebookReporter,
    ProgressReporter,
    TrialProgressCallback,
    Verbosity,
    as_verbosity,
    detect_reporter,
    resources_requested_str,
)
from tune_async.trial import Trial, TrialStatus


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_trial(status="RUNNING", lr=0.1, last=None, **fields) -> Trial:
    trial = Trial(
        "train",
        config={"lr": lr, "net": {"width": 8}},
        evaluated_params={"lr": lr, "net/width": 8},
        local_dir="/tmp/exp",
        status=TrialStatus(status),
        **fields,
    )
    trial.last_result = last or {}
    return trial


def sample_trials() -> list[Trial]:
    return [
        make_trial("RUNNING", 0.1, {"mean_loss": 0.5, "training_iteration": 3, "score": 7.0,
                                    "node_ip": "10.0.0.1", "pid": 42}),
        make_trial("TERMINATED", 0.2, {"mean_loss": 0.2, "training_iteration": 10, "score": 9.0,
                                       "pid": 43}),
        make_trial("ERROR", 0.3, {"mean_loss": 0.9, "training_iteration": 1},
                   num_failures=2, error_file="/tmp/exp/t3/error.txt"),
    ]


# ---- verbosity -------------------------------------------------------------


def test_verbosity_validation():
    assert as_verbosity(2) is Verbosity.V2_TRIAL_NORM
    assert as_verbosity(Verbosity.V0_MINIMAL) == 0
    with pytest.raises(ValueError, match="between 0 and 3"):
        as_verbosity(4)
    with pytest.raises(TypeError, match="verbose"):
        as_verbosity("3")


# ---- reporter configuration -------------------------------------------------


def test_should_report_throttles_with_clock():
    clock = FakeClock()
    reporter = CLIReporter(max_report_frequency=5, clock=clock)
    assert reporter.should_report([]) is True  # first call reports
    clock.now += 4
    assert reporter.should_report([]) is False
    assert reporter.should_report([], done=True) is True  # done always reports
    clock.now += 1.5
    assert reporter.should_report([]) is True
    assert reporter.should_report([]) is False


def test_add_columns_and_duplicates():
    reporter = CLIReporter(metric_columns=["loss"], parameter_columns={"lr": "LR"})
    reporter.add_metric_column("acc")
    reporter.add_parameter_column("momentum", "mom")
    with pytest.raises(ValueError, match="already exists"):
        reporter.add_metric_column("loss")
    with pytest.raises(ValueError, match="already exists"):
        reporter.add_parameter_column("lr")
    with pytest.raises(ValueError, match="representation"):
        reporter.add_metric_column("other", "renamed")


def test_bad_constructor_arguments():
    with pytest.raises(TypeError, match="metric_columns"):
        CLIReporter(metric_columns="loss")
    with pytest.raises(ValueError, match="mode"):
        CLIReporter(mode="best")


def test_set_search_properties_refuses_to_override():
    reporter = CLIReporter(metric="loss")
    assert reporter.set_search_properties("acc", None) is False
    assert reporter.set_search_properties(None, "min") is True
    assert reporter.set_search_properties(None, "max") is False
    assert CLIReporter().set_search_properties("acc", "max") is True


def test_base_reporter_is_abstract():
    reporter = ProgressReporter()
    with pytest.raises(NotImplementedError):
        reporter.should_report([])
    assert reporter.set_search_properties("m", "max") is True


# ---- report output ------------------------------------------------------------


def report(reporter, trials, done=False, *sys_info, capsys):
    reporter.report(trials, done, *sys_info)
    return capsys.readouterr().out


def test_report_contents(capsys):
    reporter = CLIReporter(metric="mean_loss", mode="min", total_samples=10)
    out = report(reporter, sample_trials(), False, "Using FIFO scheduling algorithm.",
                 capsys=capsys)
    assert out.startswith("== Status ==\n")
    assert "Current time: " in out and "(running for 00:00:" in out
    assert "Memory usage on this node:" in out or "Unknown memory usage" in out
    assert "Using FIFO scheduling algorithm." in out
    assert "Resources requested: 1 CPUs, 0 GPUs" in out  # only the RUNNING trial
    assert "Current best trial: " in out and "with mean_loss=0.2 and parameters=" in out
    assert "Result logdir: /tmp/exp" in out
    assert "Number of trials: 3/10 (1 ERROR, 1 RUNNING, 1 TERMINATED)" in out
    header = next(line for line in out.splitlines() if "Trial name" in line)
    cells = [c.strip() for c in header.strip("|").split("|")]
    assert cells == ["Trial name", "status", "loc", "lr", "net/width", "loss", "iter", "score"]
    assert "10.0.0.1:42" in out and "pid=43" in out
    assert "Number of errored trials: 1" in out
    assert "# failures" in out and "/tmp/exp/t3/error.txt" in out
    rows = [line for line in out.splitlines() if line.startswith("| train_")]
    assert [row.split("|")[2].strip() for row in rows[:3]] == ["RUNNING", "TERMINATED", "ERROR"]


def test_best_trial_uses_id(capsys):
    trials = sample_trials()
    out = report(CLIReporter(metric="score", mode="max"), trials, capsys=capsys)
    assert f"Current best trial: {trials[1].trial_id} with score=9.0" in out


def test_no_best_trial_without_mode(capsys):
    out = report(CLIReporter(metric="score"), sample_trials(), capsys=capsys)
    assert "Current best trial" not in out


def test_explicit_metric_columns_disable_inference(capsys):
    reporter = CLIReporter(metric_columns={"score": "S"}, parameter_columns=["lr"])
    out = report(reporter, sample_trials(), capsys=capsys)
    header = next(line for line in out.splitlines() if "Trial name" in line)
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "Trial name", "status", "loc", "lr", "S"
    ]


def test_infer_limit(capsys):
    trial = make_trial(last={"m1": 1, "m2": 2, "m3": 3, "m4": 4, "flag": True, "s": "x"})
    out = report(CLIReporter(infer_limit=2), [trial], capsys=capsys)
    header = next(line for line in out.splitlines() if "Trial name" in line)
    assert "m1" in header and "m2" in header and "m3" not in header
    assert "flag" not in header and "| s " not in header


def test_infinite_samples(capsys):
    out = report(CLIReporter(total_samples=sys.maxsize), [make_trial()], capsys=capsys)
    assert "Number of trials: 1/infinite (1 RUNNING)" in out


def test_rows_truncated_fairly(capsys):
    trials = [make_trial("RUNNING") for _ in range(4)] + [
        make_trial("TERMINATED") for _ in range(26)
    ]
    out = report(CLIReporter(max_progress_rows=6), trials, capsys=capsys)
    rows = [line for line in out.splitlines() if line.startswith("| train_")]
    assert len(rows) == 6
    assert sum("RUNNING" in row for row in rows) == 3
    assert "... 24 more trials not shown (1 RUNNING, 23 TERMINATED)" in out


def test_final_report_shows_all_rows(capsys):
    trials = [make_trial("TERMINATED") for _ in range(30)]
    out = report(CLIReporter(max_progress_rows=5), trials, True, capsys=capsys)
    assert len([line for line in out.splitlines() if line.startswith("| train_")]) == 30
    assert "more trials not shown" not in out


def test_error_rows_truncated(capsys):
    trials = [make_trial("ERROR", error_file=f"/e{i}") for i in range(5)]
    out = report(CLIReporter(max_error_rows=2), trials, capsys=capsys)
    assert "Table truncated to 2 rows (3 overflow)" in out


def test_sort_by_metric(capsys):
    trials = [
        make_trial("TERMINATED", last={"score": s}) for s in (1.0, 3.0, 2.0)
    ]
    out = report(CLIReporter(metric="score", mode="max", sort_by_metric=True), trials,
                 capsys=capsys)
    rows = [line for line in out.splitlines() if line.startswith("| train_")]
    assert [float(row.split("|")[-2]) for row in rows] == [3.0, 2.0, 1.0]


@pytest.mark.parametrize(
    ("verbose", "done", "table"),
    [(3, False, True), (2, False, False), (2, True, True), (1, True, False)],
)
def test_table_depends_on_verbosity(capsys, verbose, done, table):
    reporter = CLIReporter()
    reporter.set_verbosity(verbose)
    out = report(reporter, sample_trials(), done, capsys=capsys)
    assert "Number of trials: 3" in out
    assert ("| loc " in out) is table


def test_print_intermediate_tables_forces_table(capsys):
    reporter = CLIReporter(print_intermediate_tables=True)
    reporter.set_verbosity(1)
    assert "Trial name" in report(reporter, sample_trials(), capsys=capsys)


def test_verbose_zero_reports_nothing(capsys):
    reporter = CLIReporter()
    reporter.set_verbosity(0)
    assert report(reporter, sample_trials(), True, capsys=capsys) == ""


def test_resources_requested_with_totals():
    trials = sample_trials()
    assert resources_requested_str(trials, {"CPU": 8, "GPU": 0}) == (
        "Resources requested: 1/8 CPUs, 0/0 GPUs"
    )


def test_sys_info_resources_line_not_duplicated(capsys):
    out = report(CLIReporter(), sample_trials(), False, "Resources requested: 1/4 CPUs",
                 capsys=capsys)
    assert out.count("Resources requested") == 1


# ---- notebook ----------------------------------------------------------------


@pytest.fixture
def fake_ipython(monkeypatch):
    calls = []
    display = types.ModuleType("IPython.display")
    display.HTML = lambda text: ("HTML", text)
    display.display = lambda obj: calls.append(obj)
    display.clear_output = lambda wait=False: calls.append(("clear", wait))
    ipython = types.ModuleType("IPython")
    ipython.display = display

    class ZMQInteractiveShell:
        pass

    ipython.get_ipython = lambda: ZMQInteractiveShell()
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "IPython.display", display)
    return calls


def test_notebook_reporter_renders_html(fake_ipython):
    reporter = JupyterNotebookReporter(overwrite=True)
    reporter.report(sample_trials(), False)
    assert fake_ipython[0] == ("clear", True)
    kind, html = fake_ipython[1]
    assert kind == "HTML" and "== Status ==<br>" in html and "<table>" in html


def test_notebook_reporter_without_overwrite_keeps_output(fake_ipython):
    JupyterNotebookReporter(overwrite=False).report(sample_trials(), False)
    assert [c for c in fake_ipython if c[0] == "clear"] == []


def test_detect_reporter_in_notebook(fake_ipython):
    reporter = detect_reporter(1)
    assert isinstance(reporter, JupyterNotebookReporter) and reporter._overwrite is True
    assert detect_reporter(2)._overwrite is False


def test_detect_reporter_in_terminal(monkeypatch):
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    reporter = detect_reporter(2, metric_columns=["loss"])
    assert type(reporter) is CLIReporter


# ---- TrialProgressCallback --------------------------------------------------------


def call_result(cb, trial, result):
    cb.on_trial_result(iteration=1, trials=[trial], trial=trial, result=result)


def test_brief_line_at_verbose_2(capsys):
    cb = TrialProgressCallback(verbosity=2, clock=FakeClock())
    trial = make_trial()
    call_result(cb, trial, {"loss": 0.5, "training_iteration": 1, "config": {"lr": 0.1}})
    out = capsys.readouterr().out
    assert out == f"Trial {trial} reported loss=0.5 with parameters={trial.config}.\n"


def test_brief_line_with_metric(capsys):
    cb = TrialProgressCallback(metric="loss", verbosity=2, clock=FakeClock())
    trial = make_trial()
    call_result(cb, trial, {"loss": 0.123456, "done": True})
    out = capsys.readouterr().out
    assert out == (
        f"Trial {trial} reported loss=0.12 with parameters={trial.config}. This trial completed.\n"
    )


def test_result_printing_throttled_per_trial(capsys):
    clock = FakeClock()
    cb = TrialProgressCallback(verbosity=2, clock=clock)
    a, b = make_trial(), make_trial()
    call_result(cb, a, {"x": 1})
    call_result(cb, a, {"x": 2})  # within 5 s: skipped
    call_result(cb, b, {"x": 3})  # other trial: printed
    clock.now += 5.1
    call_result(cb, a, {"x": 4})
    call_result(cb, a, {"x": 5, "done": True})  # done: always printed
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" reported ")[1].split(" ")[0] for line in lines] == [
        "x=1", "x=3", "x=4", "x=5"
    ]


def test_full_result_at_verbose_3(capsys):
    cb = TrialProgressCallback(verbosity=3, clock=FakeClock())
    trial = make_trial()
    call_result(cb, trial, {"loss": 0.5, "config": {"lr": 1}, "info": {"a": 1}, "none": None})
    out = capsys.readouterr().out
    assert out == f"Result for {trial}:\n  info:\n    a: 1\n  loss: 0.5\n"


def test_error_and_completion_messages(capsys):
    cb = TrialProgressCallback(verbosity=2, clock=FakeClock())
    trial = make_trial(error_file="/tmp/err.txt", last={"x": 1})
    cb.on_trial_error(iteration=1, trials=[trial], trial=trial)
    assert capsys.readouterr().out == (
        f"The trial {trial} errored with parameters={trial.config}. Error file: /tmp/err.txt\n"
    )
    other = make_trial(last={"x": 2})
    call_result(cb, other, other.last_result)  # printed already, not marked done
    capsys.readouterr()
    cb.on_trial_complete(iteration=1, trials=[other], trial=other)
    cb.on_trial_complete(iteration=1, trials=[other], trial=other)  # only once
    assert capsys.readouterr().out == f"Trial {other} completed. Last result: x=2\n"


def test_done_result_is_the_completion_message(capsys):
    cb = TrialProgressCallback(verbosity=2, clock=FakeClock())
    trial = make_trial(last={"x": 2, "done": True})
    call_result(cb, trial, trial.last_result)
    cb.on_trial_complete(iteration=1, trials=[trial], trial=trial)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.endswith("This trial completed.\n")


def test_completion_prints_unseen_last_result(capsys):
    clock = FakeClock()
    cb = TrialProgressCallback(verbosity=2, clock=clock)
    trial = make_trial()
    call_result(cb, trial, {"x": 1})
    trial.last_result = {"x": 2}  # throttled away earlier
    call_result(cb, trial, {"x": 2})
    capsys.readouterr()
    cb.on_trial_complete(iteration=1, trials=[trial], trial=trial)
    assert "reported x=2" in capsys.readouterr().out


@pytest.mark.parametrize("verbose", [0, 1])
def test_progress_callback_silent_below_2(capsys, verbose):
    cb = TrialProgressCallback(verbosity=verbose, clock=FakeClock())
    trial = make_trial(last={"x": 1, "done": True}, error_file="/e")
    call_result(cb, trial, {"x": 1, "done": True})
    cb.on_trial_error(iteration=1, trials=[trial], trial=trial)
    cb.on_trial_complete(iteration=1, trials=[trial], trial=trial)
    assert capsys.readouterr().out == ""
