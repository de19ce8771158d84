"""SyncConfig(upload_dir=...) for real: the experiment mirrored to memory://, file://, a
command, a function and a local S3 server; resume="REMOTE"; a store that goes away."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time

import anyio
import fsspec
import pytest

import tune_async as tune
from tests import s3_server
from tests.s3_server import bucket_files, local_files, s3  # noqa: F401 - the fixture
from tune_async.state import newest_state_file
from tune_async.sync import upload_experiment

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    monkeypatch.setenv("TUNE_SYNC_TRIES", "2")
    monkeypatch.setenv("TUNE_SYNC_BACKOFF_S", "0.05")


def checkpointing(config, checkpoint_dir=None):
    """Reports ``steps`` results with a checkpoint at each (continuing from one when
    restored); notes each start in the ``runs`` directory."""
    if config.get("runs"):
        with open(os.path.join(config["runs"], f"x{config['x']}"), "a") as f:
            f.write("run\n")
    start = 0
    if checkpoint_dir:
        with open(os.path.join(checkpoint_dir, "step")) as f:
            start = int(f.read()) + 1
    for i in range(start, config.get("steps", 3)):
        time.sleep(config.get("sleep", 0.0))
        with tune.checkpoint_dir(step=i) as d:
            with open(os.path.join(d, "state.bin"), "wb") as f:
                f.write(os.urandom(config.get("size", 1024)))
            with open(os.path.join(d, "step"), "w") as f:
                f.write(str(i))
        tune.report(score=i)


def run_local(local_dir, sync_config, **kwargs):
    kwargs.setdefault("config", {"x": tune.grid_search([1, 2])})
    return tune.run(checkpointing, name="exp", local_dir=local_dir, verbose=0,
                    trial_executor=kwargs.pop("trial_executor", "local"),
                    sync_config=sync_config, **kwargs)


def fsspec_files(url):
    fs, root = fsspec.core.url_to_fs(url)
    root = root.rstrip("/")
    return {p[len(root) + 1:]: info["size"] for p, info in fs.find(root, detail=True).items()}


def state_text(directory):
    with open(newest_state_file(directory)) as f:
        return f.read()


def test_memory_upload_dir_mirrors_the_whole_experiment(results_dir, tmp_path):
    url = f"memory://bucket/{tmp_path.name}"
    analysis = run_local(results_dir, tune.SyncConfig(upload_dir=url))
    assert [t.status for t in analysis.trials] == ["TERMINATED"] * 2
    local = os.path.join(results_dir, "exp")
    remote = fsspec_files(url + "/exp")
    assert remote == local_files(local)
    assert any(name.startswith("experiment_state-") for name in remote)
    checkpoints = {os.path.dirname(n) for n in remote if n.endswith(os.sep + "state.bin")}
    assert len(checkpoints) == 6
    # The final snapshot (written after on_experiment_end) is what was uploaded.
    fs = fsspec.filesystem("memory")
    state_name = os.path.basename(newest_state_file(local))
    assert fs.cat(f"/bucket/{tmp_path.name}/exp/{state_name}").decode() == state_text(local)


def test_deprecated_upload_dir_argument_works_with_a_warning(results_dir, tmp_path):
    target = tmp_path / "remote"
    with pytest.warns(DeprecationWarning, match="upload_dir"):
        tune.run(checkpointing, name="exp", local_dir=results_dir, verbose=0,
                 trial_executor="local", upload_dir=f"file://{target}")
    assert local_files(str(target / "exp")) == local_files(os.path.join(results_dir, "exp"))


def test_command_template_syncer(results_dir, tmp_path):
    target = tmp_path / "remote"
    run_local(results_dir, tune.SyncConfig(
        upload_dir=str(target), sync_to_cloud="mkdir -p {target} && cp -r {source}/. {target}"))
    assert local_files(str(target / "exp")) == local_files(os.path.join(results_dir, "exp"))


class SlowCopy:
    """A function syncer: copies the tree slowly, notes overlaps and missing files."""

    def __init__(self, delay=0.1):
        self.delay = delay
        self.calls = 0
        self.active = 0
        self.max_active = 0
        self.lock = threading.Lock()

    def __call__(self, source, target):
        with self.lock:
            self.calls += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            time.sleep(self.delay)  # meanwhile newer checkpoints prune older ones
            shutil.copytree(source, target, dirs_exist_ok=True)
        finally:
            with self.lock:
                self.active -= 1


def test_function_syncer_runs_one_at_a_time_coalesced_and_holds_checkpoints(
        results_dir, tmp_path, caplog):
    copy = SlowCopy()
    target = tmp_path / "remote"
    analysis = run_local(results_dir, tune.SyncConfig(upload_dir=str(target),
                                                      sync_to_cloud=copy),
                         config={"x": tune.grid_search([1, 2]), "steps": 8},
                         keep_checkpoints_num=1)
    assert [t.status for t in analysis.trials] == ["TERMINATED"] * 2
    assert copy.max_active == 1  # one sync of the directory at a time
    assert 2 <= copy.calls < 16  # 16 checkpoints' requests coalesced (plus the final one)
    # Held while uploading, so copytree never met a half-deleted checkpoint (it would
    # have raised, and the run would warn); once released, the pruned ones are gone.
    assert "failed" not in caplog.text
    for trial in analysis.trials:
        assert sorted(d for d in os.listdir(trial.logdir) if d.startswith("checkpoint_")) == [
            "checkpoint_000007"]
    local = os.path.join(results_dir, "exp")
    assert state_text(str(target / "exp")) == state_text(local)


def test_periodic_sync_runs_during_the_run(results_dir, tmp_path):
    copy = SlowCopy(delay=0.0)
    run_local(results_dir, tune.SyncConfig(upload_dir=str(tmp_path / "remote"),
                                           sync_to_cloud=copy, sync_on_checkpoint=False,
                                           cloud_sync_period=1),
              config={"x": 1, "steps": 5, "sleep": 0.5})
    assert copy.calls >= 3  # ~2.5 s: two periodic syncs and the final one


def test_failing_uploads_are_retried_reported_and_completed_later(results_dir, tmp_path,
                                                                  caplog):
    attempts = []

    def flaky(source, target):
        attempts.append(time.monotonic())
        raise OSError("store unreachable")

    caplog.set_level(logging.WARNING, logger="tune_async.sync.cloud")
    target = tmp_path / "remote"
    analysis = run_local(results_dir, tune.SyncConfig(upload_dir=str(target),
                                                      sync_to_cloud=flaky))
    assert [t.status for t in analysis.trials] == ["TERMINATED"] * 2  # finished locally
    assert len(attempts) >= 2 and len(attempts) % 2 == 0  # each sync tried twice
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and all(str(target / "exp") in w and "OSError: store unreachable" in w
                            for w in warnings)
    local = os.path.join(results_dir, "exp")
    assert os.path.isdir(local) and newest_state_file(local)  # nothing local was lost
    upload_experiment(local, f"file://{target}")  # a later sync completes it
    assert local_files(str(target / "exp")) == local_files(local)


def test_resume_remote_without_upload_dir_is_an_error(results_dir):
    with pytest.raises(ValueError, match="resume from remote without remote directory"):
        tune.run(checkpointing, name="exp", local_dir=results_dir, resume="REMOTE",
                 trial_executor="local", verbose=0)


def test_resume_remote_with_nothing_stored_is_an_error(results_dir, tmp_path):
    with pytest.raises(ValueError, match="nothing is stored at"):
        tune.run(checkpointing, name="exp", local_dir=results_dir, resume="REMOTE",
                 trial_executor="local", verbose=0,
                 sync_config=tune.SyncConfig(upload_dir=f"file://{tmp_path}/none"))


def test_analysis_reads_an_experiment_from_a_url(results_dir, tmp_path):
    url = f"memory://bucket/{tmp_path.name}"
    run_local(results_dir, tune.SyncConfig(upload_dir=url))
    shutil.rmtree(os.path.join(results_dir, "exp"))
    analysis = tune.ExperimentAnalysis(f"{url}/exp")
    assert sorted(t.config["x"] for t in analysis.trials) == [1, 2]
    assert analysis.get_best_config("score", "max")["x"] in (1, 2)
    best = analysis.get_best_checkpoint(analysis.get_best_logdir("score", "max"), "score", "max")
    assert best is not None and os.path.exists(best)


# ---- a real S3-compatible server, the real Ray executor -----------------------------------


async def _interrupted_run(local_dir, sync_config, runs_dir):
    """Runs three trials on Ray; cancels the run once the quick one finished."""
    finished = anyio.Event()

    class OnFirstComplete(tune.Callback):
        def on_trial_complete(self, iteration, trials, trial, **info):
            finished.set()

    async def run():
        await tune.arun(checkpointing, name="exp", local_dir=local_dir, verbose=0,
                        sync_config=sync_config, callbacks=[OnFirstComplete()],
                        config={"x": tune.grid_search([0, 1, 2]), "runs": runs_dir,
                                "steps": tune.sample_from(
                                    lambda spec: 1 if spec.config.x == 0 else 15),
                                "sleep": 0.2},
                        resources_per_trial={"cpu": 1})

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await finished.wait()
        await anyio.sleep(0.5)  # the others have checkpoints by now
        tg.cancel_scope.cancel()


def _runs(runs_dir, x):
    path = os.path.join(runs_dir, f"x{x}")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return len(f.readlines())


@pytest.mark.ray
async def test_s3_upload_then_resume_remote_after_the_local_copy_is_gone(
        results_dir, tmp_path, s3):  # noqa: F811 - the fixture
    upload_dir = f"s3://{s3}/exp"
    sync_config = tune.SyncConfig(upload_dir=upload_dir)
    runs_dir = str(tmp_path / "runs")
    os.makedirs(runs_dir)
    await _interrupted_run(results_dir, sync_config, runs_dir)
    local = os.path.join(results_dir, "exp")
    assert bucket_files(f"{upload_dir}/exp") == local_files(local)  # every file arrived
    shutil.rmtree(local)

    analysis = await tune.arun(checkpointing, name="exp", local_dir=results_dir, verbose=0,
                               sync_config=sync_config, resume="REMOTE",
                               resources_per_trial={"cpu": 1})
    assert sorted(t.status for t in analysis.trials) == ["TERMINATED"] * 3
    assert _runs(runs_dir, 0) == 1  # finished before: not run again
    assert _runs(runs_dir, 1) == 2 and _runs(runs_dir, 2) == 2  # interrupted: continued
    for trial in analysis.trials:
        assert trial.last_result["training_iteration"] == (1 if trial.config["x"] == 0 else 15)
    assert bucket_files(f"{upload_dir}/exp") == local_files(local)
    from_bucket = await anyio.to_thread.run_sync(tune.ExperimentAnalysis, f"{upload_dir}/exp")
    assert sorted(t.status for t in from_bucket.trials) == ["TERMINATED"] * 3


@pytest.mark.ray
def test_s3_server_gone_mid_run_then_a_later_sync_completes(results_dir, s3, caplog):  # noqa: F811
    upload_dir = f"s3://{s3}/exp"

    class StopServer(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            if result["training_iteration"] == 2:
                s3_server.stop()

    caplog.set_level(logging.WARNING, logger="tune_async.sync.cloud")
    analysis = tune.run(checkpointing, name="exp", local_dir=results_dir, verbose=0,
                        config={"x": 1, "steps": 4}, callbacks=[StopServer()],
                        sync_config=tune.SyncConfig(upload_dir=upload_dir))
    assert [t.status for t in analysis.trials] == ["TERMINATED"]  # finished locally
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings, "the failed uploads were not reported"
    assert all(f"{upload_dir}/exp" in w and "not uploaded yet" in w for w in warnings)
    assert any("Could not connect" in w for w in warnings)
    s3_server.start()  # back with what it held
    local = os.path.join(results_dir, "exp")
    assert bucket_files(f"{upload_dir}/exp") != local_files(local)
    upload_experiment(local, upload_dir)
    assert bucket_files(f"{upload_dir}/exp") == local_files(local)


def test_a_virtual_clock_does_not_speed_up_periodic_syncs(results_dir, tmp_path):
    from tests.test_simulated_executor import curve

    copy = SlowCopy(delay=0.0)
    simulated = tune.SimulatedExecutor(curve, slots=2)
    began = time.monotonic()
    analysis = tune.run(simulated.trainable, config={"i": tune.grid_search(list(range(6))),
                                                     "secs": 600.0},
                        stop={"training_iteration": 20}, trial_executor=simulated,
                        local_dir=results_dir, verbose=0,
                        sync_config=tune.SyncConfig(upload_dir=str(tmp_path / "remote"),
                                                    sync_to_cloud=copy,
                                                    cloud_sync_period=1))
    real_s = time.monotonic() - began
    assert [t.status for t in analysis.trials] == ["TERMINATED"] * 6  # 20 virtual hours
    assert copy.calls <= real_s + 2  # periods of real time, plus the final sync


def test_the_final_sync_is_bounded(results_dir, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TUNE_SYNC_END_TIMEOUT_S", "0.5")
    release = threading.Event()
    calls = []

    def hangs_at_the_end(source, target):
        calls.append(source)
        release.wait(10)  # a store that stopped answering

    caplog.set_level(logging.WARNING, logger="tune_async.sync.cloud")
    began = time.monotonic()
    try:
        run_local(results_dir, tune.SyncConfig(upload_dir=str(tmp_path / "remote"),
                                               sync_to_cloud=hangs_at_the_end,
                                               sync_on_checkpoint=False),
                  config={"x": 1, "steps": 1})
    finally:
        release.set()
    assert time.monotonic() - began < 8
    assert "final cloud sync" in caplog.text and "did not finish within 0.5 s" in caplog.text


def test_an_experiments_own_upload_dir_is_used(results_dir, tmp_path):
    experiment = tune.Experiment("exp", checkpointing, local_dir=results_dir,
                                 upload_dir=f"file://{tmp_path}/remote",
                                 config={"x": tune.grid_search([1, 2])})
    tune.run_experiments(experiment, trial_executor="local", verbose=0)
    assert local_files(str(tmp_path / "remote" / "exp")) == local_files(
        os.path.join(results_dir, "exp"))
