"""The ``tune-async`` command line, run through the installed entry point and ``-m``.

The experiments are made with ``tune.run`` (in-process executor: the command line
reads what is on disk, whichever executor wrote it).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest

import tune_async as tune

TUNE_ASYNC = os.path.join(os.path.dirname(sys.executable), "tune-async")


def _train(config):
    for step in range(3):
        tune.report(loss=config["x"] / (step + 1), acc=step)


def _fails_above_one(config):
    if config["x"] > 1:
        raise ValueError("boom")
    tune.report(loss=1.0)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project dir with two experiments: 3 finished trials; 1 finished and 1 errored."""
    local_dir = str(tmp_path_factory.mktemp("project"))
    tune.run(_train, config={"x": tune.grid_search([0.2, 1.0, 3.0])}, local_dir=local_dir,
             name="sweep", trial_executor="local", verbose=0)
    tune.run(_fails_above_one, config={"x": tune.grid_search([1, 2])}, local_dir=local_dir,
             name="flaky", trial_executor="local", verbose=0, raise_on_failed_trial=False)
    os.makedirs(os.path.join(local_dir, "not_an_experiment"))
    return local_dir


def run_cli(*args: str, stdin: str = "", module: bool = False) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "tune_async"] if module else [TUNE_ASYNC]
    return subprocess.run([*command, *args], input=stdin, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "COLUMNS": "80"})


def ok(*args: str, **kwargs) -> str:
    proc = run_cli(*args, **kwargs)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def parse_table(text: str) -> list[dict[str, str]]:
    """The rows of a psql-style table (the lines between its borders)."""
    lines = [line for line in text.splitlines()
             if line.startswith("|") and not line.startswith("|-")]
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    header, body = cells[0], cells[1:]
    return [dict(zip(header, row, strict=True)) for row in body]


def test_ls_prints_status_config_and_last_metrics(project):
    out = ok("ls", os.path.join(project, "sweep"))
    rows = parse_table(out)
    assert list(rows[0]) == ["trial_id", "status", "config/x", "training_iteration",
                             "time_total_s", "loss", "acc", "last_update"]
    assert {row["status"] for row in rows} == {"TERMINATED"}
    # The last result of each trial: three steps, loss = x / 3.
    last = {float(row["config/x"]): (row["training_iteration"], float(row["loss"]))
            for row in rows}
    assert last == {0.2: ("3", pytest.approx(0.2 / 3, rel=1e-4)),
                    1.0: ("3", pytest.approx(1 / 3, rel=1e-4)), 3.0: ("3", 1.0)}


def test_ls_filter_sort_and_json_output(project):
    out = ok("ls", os.path.join(project, "sweep"), "--filter", "loss < 0.5",
             "--sort", "loss", "--desc", "--output", "json")
    rows = json.loads(out)
    assert [row["config/x"] for row in rows] == [1.0, 0.2]
    assert rows[0]["loss"] == pytest.approx(1.0 / 3)
    assert {row["status"] for row in rows} == {"TERMINATED"}


def test_ls_filter_on_strings_and_several_filters(project):
    out = ok("ls", os.path.join(project, "flaky"), "--filter", "status == ERROR", "-o", "json")
    assert [row["config/x"] for row in json.loads(out)] == [2]
    out = ok("ls", os.path.join(project, "sweep"), "--filter", "config/x>0.5",
             "--filter", "loss <= 0.5", "-o", "json")
    assert [row["config/x"] for row in json.loads(out)] == [1.0]


def test_ls_columns_limit_and_csv(project):
    out = ok("ls", os.path.join(project, "sweep"), "--columns", "config/x,loss",
             "--sort", "config/x", "--limit", "2", "-o", "csv")
    frame = pd.read_csv(io.StringIO(out))
    assert list(frame.columns) == ["config/x", "loss"]
    assert frame["config/x"].tolist() == [0.2, 1.0]
    assert frame["loss"].tolist() == pytest.approx([0.2 / 3, 1.0 / 3])


def test_ls_output_to_a_file_as_in_1x(project, tmp_path):
    target = tmp_path / "trials.csv"
    out = ok("ls", os.path.join(project, "sweep"), "-o", str(target))
    assert "TERMINATED" in out  # the table is printed too
    assert f"Output saved at {target}" in out
    assert sorted(pd.read_csv(target)["config/x"]) == [0.2, 1.0, 3.0]
    pickled = tmp_path / "trials.pkl"
    ok("ls", os.path.join(project, "sweep"), "-o", str(pickled), "--columns", "trial_id,loss")
    assert list(pd.read_pickle(pickled).columns) == ["trial_id", "loss"]


def test_ls_errors_are_clear(project, tmp_path):
    sweep = os.path.join(project, "sweep")
    proc = run_cli("ls", sweep, "--filter", "los < 1")
    assert proc.returncode == 1
    assert "Unknown filter column(s) ['los']" in proc.stderr and "'loss'" in proc.stderr
    proc = run_cli("ls", sweep, "--filter", "loss about 1")
    assert proc.returncode == 1 and "Bad filter" in proc.stderr
    proc = run_cli("ls", sweep, "--filter", "loss < small")
    assert proc.returncode == 1 and "is not a number" in proc.stderr
    proc = run_cli("ls", sweep, "-o", str(tmp_path / "out.xlsx"))
    assert proc.returncode == 1 and "Unsupported output" in proc.stderr
    proc = run_cli("ls", os.path.join(project, "not_an_experiment"))
    assert proc.returncode == 1 and "No trial data found" in proc.stderr
    proc = run_cli("ls", sweep, "--columns", "nope")
    assert proc.returncode == 1 and "Unknown columns column(s) ['nope']" in proc.stderr


def test_lsx_counts_trials_by_status(project):
    rows = json.loads(ok("lsx", project, "-o", "json"))
    by_name = {row["name"]: row for row in rows}
    assert set(by_name) == {"sweep", "flaky"}  # the empty folder is no experiment
    assert by_name["sweep"]["total_trials"] == 3 and by_name["sweep"]["TERMINATED"] == 3
    assert by_name["flaky"]["TERMINATED"] == 1 and by_name["flaky"]["ERROR"] == 1
    assert all(row["last_updated"] for row in rows)
    table = ok("list-experiments", project, "--sort", "total_trials", "--columns",
               "name,total_trials")
    lines = [line for line in table.splitlines() if line.startswith("| ") and "name" not in line]
    assert [line.split("|")[1].strip() for line in lines] == ["flaky", "sweep"]
    rows = json.loads(ok("lsx", project, "--filter", "ERROR > 0", "-o", "json"))
    assert [row["name"] for row in rows] == ["flaky"]


def test_python_dash_m_and_the_1x_long_name(project):
    rows = json.loads(ok("list-trials", os.path.join(project, "flaky"), "-o", "json",
                         module=True))
    assert sorted(row["status"] for row in rows) == ["ERROR", "TERMINATED"]


def test_rm_asks_first(project, tmp_path):
    copy = str(tmp_path / "sweep")
    shutil.copytree(os.path.join(project, "sweep"), copy)
    proc = run_cli("rm", copy, stdin="n\n")
    assert proc.returncode == 1
    assert "Delete experiment" in proc.stdout and "(3 trials)? [y/N]" in proc.stdout
    assert os.path.isdir(copy)
    proc = run_cli("rm", copy)  # no answer at all is no
    assert proc.returncode == 1 and os.path.isdir(copy)
    trial_dir = next(os.path.join(copy, d) for d in sorted(os.listdir(copy))
                     if os.path.isdir(os.path.join(copy, d)))
    assert "Delete trial directory" in ok("rm", trial_dir, stdin="y\n")
    assert not os.path.exists(trial_dir)
    ok("rm", copy, stdin="yes\n")
    assert not os.path.exists(copy)


def test_rm_yes_skips_the_prompt_and_unknown_dirs_are_refused(project, tmp_path):
    copy = str(tmp_path / "flaky")
    shutil.copytree(os.path.join(project, "flaky"), copy)
    out = ok("rm", "-y", copy)
    assert "[y/N]" not in out and not os.path.exists(copy)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    proc = run_cli("rm", "--yes", str(precious))
    assert proc.returncode == 1 and "not removing it" in proc.stderr
    assert (precious / "thesis.tex").exists()


def test_add_note_opens_the_editor(project, tmp_path):
    editor = tmp_path / "editor.sh"
    editor.write_text('#!/bin/sh\necho "lr too high" >> "$1"\n')
    editor.chmod(0o755)
    target = tmp_path / "notes"
    target.mkdir()
    proc = subprocess.run([TUNE_ASYNC, "add-note", str(target)], capture_output=True, text=True,
                          env={**os.environ, "EDITOR": str(editor)}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Note created at:" in proc.stdout
    assert (target / "note.txt").read_text() == "lr too high\n"


def test_the_1x_module_functions(project, capsys):
    from tune_async import commands, scripts

    frame = pd.DataFrame({"a": [1, 2], "empty": [None, None]})
    out = io.StringIO()
    table, dropped, empty = commands.print_format_output(frame, out=out)
    assert dropped == [] and empty == ["empty"]
    assert out.getvalue() == table + "\nEmpty columns: ['empty']\n"
    assert "| a |" in table.replace("   ", " ").replace("  ", " ")
    with pytest.raises(SystemExit) as exit_info:
        scripts.cli(["ls", os.path.join(project, "sweep"), "-o", "json"])
    assert exit_info.value.code == 0
    assert len(json.loads(capsys.readouterr().out)) == 3


def _waits_for_release(config):
    tune.report(loss=0.5)
    deadline = time.monotonic() + 120
    while not os.path.exists(config["release"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    tune.report(loss=0.25)


def test_ls_watches_a_running_experiment(tmp_path):
    release = tmp_path / "release"
    exp_dir = str(tmp_path / "live")
    runner = threading.Thread(target=tune.run, args=(_waits_for_release,), kwargs={
        "config": {"release": str(release)}, "local_dir": str(tmp_path), "name": "live",
        "trial_executor": "local", "verbose": 0})
    runner.start()
    try:
        deadline = time.monotonic() + 90
        while True:
            proc = run_cli("ls", exp_dir, "-o", "json")
            rows = json.loads(proc.stdout) if proc.returncode == 0 else []
            if rows and rows[0]["status"] == "RUNNING" and rows[0].get("loss") == 0.5:
                break
            assert time.monotonic() < deadline, (proc.stdout, proc.stderr)
            time.sleep(0.5)
    finally:
        release.touch()
        runner.join(120)
    rows = json.loads(ok("ls", exp_dir, "-o", "json"))
    assert rows[0]["status"] == "TERMINATED" and rows[0]["loss"] == 0.25


@pytest.mark.parametrize("desc", [["--desc"], ["--desc", "True"], ["--desc=true"],
                                  ["--desc", "False"], []])
def test_desc_as_a_flag_or_with_1x_value(project, desc):
    sweep = os.path.join(project, "sweep")
    # A bare --desc may come before the path: it never takes the path as its value.
    out = ok("ls", "--sort", "config/x", *desc, sweep, "--columns", "config/x", "-o", "csv")
    descending = desc in (["--desc"], ["--desc", "True"], ["--desc=true"])
    xs = pd.read_csv(io.StringIO(out))["config/x"].tolist()
    assert xs == ([3.0, 1.0, 0.2] if descending else [0.2, 1.0, 3.0])
