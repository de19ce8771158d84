"""1.x details of the status table, the per-result printing and the result files."""

from __future__ import annotations

import collections
import csv
import glob
import json
import os
import pathlib

import tune_async as tune
from tune_async.logger import CSVLoggerCallback, JsonLoggerCallback, pretty_print
from tune_async.progress import CLIReporter, TrialProgressCallback, trial_progress_table
from tune_async.trial import Trial, TrialStatus


def make_trial(status: str = "RUNNING", last: dict | None = None, **fields) -> Trial:
    trial = Trial("train", config={"lr": 0.1}, evaluated_params={"lr": 0.1},
                  local_dir="/tmp/exp", status=TrialStatus(status), **fields)
    trial.last_result = last or {}
    return trial


def loc_cells(trials: list[Trial]) -> list[str]:
    table = trial_progress_table(trials, metric_columns=["score"])[0]
    rows = [line for line in table.splitlines() if line.startswith("| train_")]
    return [row.split("|")[3].strip() for row in rows]


def read_csv(path: str) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


# ---- the status table's ``loc`` column ------------------------------------------------


def test_loc_is_pid_on_this_node_host_pid_elsewhere_and_empty_before_a_result():
    # 1.x: str(Location(node_ip, pid)) is "pid=N" on the driver's node, "ip:pid" on
    # another, "" without a pid (a pending trial). Before: "127.0.0.1:N" and "None".
    trials = [
        make_trial("RUNNING", {"score": 1, "node_ip": "127.0.0.1", "pid": 11}),
        make_trial("RUNNING", {"score": 2, "node_ip": "10.9.8.7", "pid": 12}),
        make_trial("PENDING"),
    ]
    assert loc_cells(trials) == ["pid=11", "10.9.8.7:12", ""]


def test_loc_in_a_local_run_is_pid(tmp_path, capsys):
    def train(config):
        tune.report(score=config["a"])

    tune.run(train, config={"a": tune.grid_search([1, 2])}, verbose=3,
             trial_executor=tune.LocalExecutor(), local_dir=str(tmp_path),
             progress_reporter=CLIReporter(max_report_frequency=0))
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| train_")]
    assert rows and all(f"pid={os.getpid()}" in row for row in rows)
    assert "127.0.0.1:" not in out


# ---- per-result printing: 1.x's pretty_print is YAML ------------------------------------


def test_pretty_print_is_yaml_block_style():
    text = pretty_print({"done": False, "ok": True, "hist": [1, 2], "name": "x", "none": None,
                         "config": {"lr": 1}, "hist_stats": {"a": [1]}, "info": {}})
    assert text == "done: false\nhist:\n- 1\n- 2\ninfo: {}\nname: x\nok: true\n"


def test_verbose_3_result_print_uses_yaml_values(capsys):
    cb = TrialProgressCallback(verbosity=3)
    trial = make_trial()
    cb.on_trial_result(iteration=1, trials=[trial], trial=trial,
                       result={"loss": 0.5, "done": True, "flags": [True]})
    assert capsys.readouterr().out == (
        f"Result for {trial}:\n  done: true\n  flags:\n  - true\n  loss: 0.5\n"
    )


# ---- progress.csv: 1.x's flatten_dict ------------------------------------------------------


def test_csv_flattens_dict_subclasses_drops_empty_dicts_and_puts_nested_columns_last(
    tmp_path,
):
    trial = Trial("train", config={}, logdir=str(tmp_path))
    cb = CSVLoggerCallback()
    cb.log_trial_start(trial)
    cb.log_trial_result(1, trial, {
        "a": 1,
        "info": collections.OrderedDict(x=2, deep={"y": 3}),
        "empty": {},
        "counts": collections.defaultdict(int, {"k": 4}),
        "b": 5,
        "config": {"lr": 1},
    })
    cb.log_trial_end(trial)
    rows = read_csv(os.path.join(trial.logdir, "progress.csv"))
    assert rows == [["a", "b", "info/x", "counts/k", "info/deep/y"], ["1", "5", "2", "4", "3"]]


def test_csv_plain_results_keep_their_order(tmp_path):
    trial = Trial("train", config={}, logdir=str(tmp_path))
    cb = CSVLoggerCallback()
    cb.log_trial_result(1, trial, {"b": 1.5, "a": [1, 2], "c": None, "d": "s"})
    cb.log_trial_end(trial)
    assert read_csv(os.path.join(trial.logdir, "progress.csv")) == [
        ["b", "a", "c", "d"], ["1.5", "[1, 2]", "", "s"]
    ]


# ---- params.json / result.json: values JSON cannot encode are str(), as 1.x ----------------


def test_unencodable_values_are_written_as_str(tmp_path):
    data = pathlib.Path("/data/set")
    trial = Trial("train", config={"data": data, "n": 1}, logdir=str(tmp_path))
    cb = JsonLoggerCallback()
    cb.log_trial_start(trial)
    cb.log_trial_result(1, trial, {"path": data, "config": trial.config})
    cb.log_trial_end(trial)
    with open(os.path.join(trial.logdir, "params.json")) as f:
        assert json.load(f) == {"data": "/data/set", "n": 1}
    with open(os.path.join(trial.logdir, "result.json")) as f:
        line = json.loads(f.readline())
    assert line["path"] == "/data/set" and line["config"]["data"] == "/data/set"


def test_run_writes_1x_files(tmp_path):
    def train(config):
        tune.report(score=1, info={"x": 1, "e": {}}, flag=True)

    tune.run(train, config={"data": pathlib.Path("/data/set")}, verbose=0,
             trial_executor=tune.LocalExecutor(), local_dir=str(tmp_path))
    (trial_dir,) = glob.glob(str(tmp_path / "*" / "train_*"))
    header = read_csv(os.path.join(trial_dir, "progress.csv"))[0]
    assert header[0] == "score" and header[-1] == "info/x" and "info/e" not in header
    with open(os.path.join(trial_dir, "params.json")) as f:
        assert json.load(f) == {"data": "/data/set"}
