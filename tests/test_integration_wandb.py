"""tune_async.integration.wandb in W&B's offline mode: the run files it writes are read back.

An offline run is a directory ``offline-run-<time>-<run id>`` whose ``run-<id>.wandb``
file holds the run's records (its config, each history row, the exit) in W&B's
transaction log format: a 7-byte ``:W&B`` header, then LevelDB-log framed records.
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import struct
import time

import pytest

import tune_async as tune

wandb = pytest.importorskip("wandb", reason="needs the wandb extra")

from wandb.proto import wandb_internal_pb2  # noqa: E402 - after the importorskip

from tune_async.integration.wandb import (  # noqa: E402
    WandbLoggerCallback,
    split_result,
    wandb_mixin,
)

_BLOCK, _FRAME = 32 * 1024, 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _frames(data: bytes):
    assert data[:4] == b":W&B", "not a W&B transaction log"
    pos, parts = 7, []
    while pos + _FRAME <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _FRAME:  # a block's tail too short for a frame is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + _FRAME])
        payload = data[pos + _FRAME:pos + _FRAME + length]
        pos += _FRAME + length
        if kind == _FULL:
            yield payload
        elif kind == _FIRST:
            parts = [payload]
        elif kind == _MIDDLE:
            parts.append(payload)
        elif kind == _LAST:
            yield b"".join([*parts, payload])


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def _parse_run(data: bytes) -> dict:
    run = {"config": {}, "history": [], "exit_code": None}
    for payload in _frames(data):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.update(name=record.run.display_name, group=record.run.run_group,
                       project=record.run.project)
            run["config"].update({_key(u): json.loads(u.value_json) for u in record.run.config.update})
        elif kind == "config":
            run["config"].update({_key(u): json.loads(u.value_json) for u in record.config.update})
        elif kind == "history":
            run["history"].append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "exit":
            run["exit_code"] = record.exit.exit_code
    return run


def read_offline_run(wandb_dir: str, run_id: str, timeout_s: float = 30.0) -> dict:
    """The run's start record, config updates, history rows and exit code.

    W&B's service process writes the file behind ``run.finish()`` (seen: only the
    header right after it returned, all records a moment later), so this waits for
    the exit record.
    """
    [path] = glob.glob(os.path.join(wandb_dir, "wandb", f"offline-run-*-{run_id}",
                                    f"run-{run_id}.wandb"))
    deadline = time.monotonic() + timeout_s
    while True:
        with open(path, "rb") as f:
            run = _parse_run(f.read())
        if run["exit_code"] is not None or time.monotonic() > deadline:
            return run
        time.sleep(0.1)


@pytest.fixture(scope="module")
def offline_wandb(tmp_path_factory):
    """W&B offline, writing under one directory for the module: W&B reads these variables
    once per process, so every test here shares them (runs are told apart by trial id)."""
    wandb_dir = str(tmp_path_factory.mktemp("wandb"))
    settings = {"WANDB_MODE": "offline", "WANDB_DIR": wandb_dir, "WANDB_SILENT": "true"}
    saved = {name: os.environ.get(name) for name in [*settings, "WANDB_API_KEY"]}
    os.environ.update(settings)
    os.environ.pop("WANDB_API_KEY", None)
    yield wandb_dir
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def train_fn(config):
    for i in range(1, 4):
        tune.report(loss=config["x"] * i, label="text is not logged", info={"lr": 0.1 * i})


def test_logger_callback_writes_a_run_per_trial(offline_wandb, results_dir):
    analysis = tune.run(
        train_fn, config={"x": tune.grid_search([1, 2]), "nested": {"a": 3}},
        callbacks=[WandbLoggerCallback(project="tune-test", group="grp", excludes=["info"])],
        local_dir=results_dir, verbose=0, trial_executor="local",
    )
    for trial in analysis.trials:
        run = read_offline_run(offline_wandb, trial.trial_id)
        x = trial.config["x"]
        assert (run["name"], run["group"], run["project"]) == (str(trial), "grp", "tune-test")
        assert run["config"]["x"] == x and run["config"]["nested"] == {"a": 3}
        # Per-trial facts go to the config, not to the history.
        assert run["config"]["trial_id"] == trial.trial_id
        assert run["config"]["experiment_tag"] == trial.experiment_tag
        history = run["history"]
        assert [row["loss"] for row in history] == [x, 2 * x, 3 * x]
        assert [row["training_iteration"] for row in history] == [1, 2, 3]
        for row in history:
            assert not {"label", "done", "trial_id", "info/lr", "config/x"} & set(row)
        assert run["exit_code"] == 0


def test_logger_callback_log_config_logs_the_config_entries(offline_wandb, results_dir):
    analysis = tune.run(train_fn, config={"x": 5},
                        callbacks=[WandbLoggerCallback(project="p", log_config=True)],
                        local_dir=results_dir, verbose=0, trial_executor="local")
    [trial] = analysis.trials
    run = read_offline_run(offline_wandb, trial.trial_id)
    assert run["group"] == trial.trainable_name  # the default group
    assert [row["config/x"] for row in run["history"]] == [5, 5, 5]
    assert [row["info/lr"] for row in run["history"]] == pytest.approx([0.1, 0.2, 0.3])


@wandb_mixin
def train_with_mixin(config):
    for i in range(1, 3):
        wandb.log({"score": config["lr"] * i})
        tune.report(score=config["lr"] * i)


@pytest.mark.ray
def test_mixin_runs_the_function_inside_a_run_per_trial(tmp_path, results_dir):
    # The trial runs in a Ray actor: W&B's settings go through config["wandb"].
    wandb_config = {"project": "mixin", "mode": "offline", "dir": str(tmp_path)}
    analysis = tune.run(train_with_mixin,
                        config={"lr": tune.grid_search([0.5, 1.0]), "wandb": wandb_config},
                        local_dir=results_dir, verbose=0)
    for trial in analysis.trials:
        run = read_offline_run(str(tmp_path), trial.trial_id)
        assert run["name"] == trial.trial_name
        assert run["config"]["lr"] == trial.config["lr"] and "wandb" not in run["config"]
        assert [row["score"] for row in run["history"]] == [trial.config["lr"],
                                                            2 * trial.config["lr"]]
        assert run["exit_code"] == 0


@wandb_mixin
class TrainableWithMixin(tune.Trainable):
    def setup(self, config):
        self.steps = 0

    def step(self):
        self.steps += 1
        self.wandb.log({"steps": self.steps})
        return {"steps": self.steps}


@pytest.mark.ray
def test_mixin_on_a_trainable_class_logs_through_self_wandb(tmp_path, results_dir):
    config = {"wandb": {"project": "mixin", "mode": "offline", "dir": str(tmp_path)}}
    analysis = tune.run(TrainableWithMixin, config=config, stop={"training_iteration": 2},
                        local_dir=results_dir, verbose=0)
    [trial] = analysis.trials
    run = read_offline_run(str(tmp_path), trial.trial_id)
    assert [row["steps"] for row in run["history"]] == [1, 2]
    assert run["exit_code"] == 0


def test_missing_settings_fail_early(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    with pytest.raises(ValueError, match="No WandB API key found"):
        WandbLoggerCallback(project="p").setup()
    with pytest.raises(ValueError, match="`wandb` key in your `config`"):
        train_with_mixin({"lr": 1.0})
    key_file = tmp_path / "key"
    key_file.write_text("secret-key\n")
    WandbLoggerCallback(project="p", api_key_file=str(key_file)).setup()
    assert os.environ["WANDB_API_KEY"] == "secret-key"


def test_split_result_routes_keys():
    result = {"loss": 1.5, "done": False, "trial_id": "t1", "config": {"x": 1},
              "hist": [1, 2], "info": {"lr": 0.1}}
    log, config = split_result(result, ["done", "config"], ["trial_id"])
    assert log == {"loss": 1.5, "info/lr": 0.1}
    assert config == {"trial_id": "t1"}


async def test_slow_wandb_writes_never_stall_the_event_loop(offline_wandb, results_dir,
                                                            monkeypatch):
    real_log = wandb.sdk.wandb_run.Run.log

    def slow_log(self, *args, **kwargs):
        time.sleep(0.3)  # W&B taking 300 ms per row
        return real_log(self, *args, **kwargs)

    monkeypatch.setattr(wandb.sdk.wandb_run.Run, "log", slow_log)
    lateness: list[float] = []

    async def heartbeat():
        while True:
            start = time.monotonic()
            await asyncio.sleep(0.02)
            lateness.append(time.monotonic() - start - 0.02)

    beat = asyncio.create_task(heartbeat())
    try:
        analysis = await tune.arun(train_fn, config={"x": 7}, local_dir=results_dir, verbose=0,
                                   trial_executor="local",
                                   callbacks=[WandbLoggerCallback(project="slow")])
    finally:
        beat.cancel()
    assert max(lateness) < 0.25  # three rows took >= 0.9 s, none of it on the loop
    run = read_offline_run(offline_wandb, analysis.trials[0].trial_id)
    assert [row["loss"] for row in run["history"]] == [7, 14, 21]
