"""DurableTrainable and tune.durable for real: checkpoints uploaded by the trainable itself
(file://, memory://, a local S3 server), restored from there when the local copy is gone,
pruned there too; refused without an upload_dir."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time

import anyio
import fsspec
import pytest

import tune_async as tune
from tests.s3_server import bucket_files, s3  # noqa: F401 - the fixture
from tune_async.durable_trainable import NO_UPLOAD_DIR

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def remote_files(url: str) -> dict[str, int]:
    """``{relative path: size}`` under an fsspec URL (s3:// through the test server)."""
    if url.startswith("s3://"):
        return bucket_files(url)
    fs, root = fsspec.core.url_to_fs(url)
    root = root.rstrip("/")
    if not fs.exists(root):
        return {}
    return {p[len(root) + 1:]: info["size"] for p, info in fs.find(root, detail=True).items()}


def checkpoint_dirs(files: dict[str, int]) -> set[str]:
    return {rel.split("/")[0] for rel in files if rel.startswith("checkpoint_")}


def lose_local_checkpoints(logdir: str) -> None:
    """What a node that lost its disk leaves: no checkpoint directories."""
    for name in os.listdir(logdir):
        if name.startswith("checkpoint_"):
            # (ignore_errors: the driver may be pruning an old one at this moment)
            shutil.rmtree(os.path.join(logdir, name), ignore_errors=True)


def first_time(marks: str, name: str) -> bool:
    """True once per ``name`` (a file in ``marks`` remembers it across retries)."""
    path = os.path.join(marks, name)
    if os.path.exists(path):
        return False
    open(path, "w").close()
    return True


class Counter(tune.DurableTrainable):
    """Counts; the count lives in its checkpoints. At ``fail_at`` (first time only) it
    loses its local checkpoints and fails."""

    def setup(self, config):
        os.environ.update(config.get("env", {}))  # the S3 server's settings, in the actor
        self.value = 0
        self.restored_from = None

    def step(self):
        self.value += 1
        if self.iteration + 1 == self.config.get("fail_at") and first_time(
                self.config["marks"], self.trial_id):
            lose_local_checkpoints(self.logdir)
            raise RuntimeError("the node lost its disk")
        return {"value": self.value, "restored_from": self.restored_from}

    def reset_config(self, new_config):
        self.value, self.restored_from = 0, None
        return True

    def save_checkpoint(self, checkpoint_dir):
        with open(os.path.join(checkpoint_dir, "value"), "w") as f:
            f.write(str(self.value))
        return checkpoint_dir

    def load_checkpoint(self, checkpoint):
        with open(os.path.join(checkpoint, "value")) as f:
            self.value = int(f.read())
        self.restored_from = os.path.basename(os.path.normpath(checkpoint))


def counting(config, checkpoint_dir=None):
    """The function form of Counter (tune.durable(counting))."""
    value, restored_from = 0, None
    if checkpoint_dir:
        with open(os.path.join(checkpoint_dir, "value")) as f:
            value = int(f.read())
        restored_from = os.path.basename(os.path.normpath(checkpoint_dir))
    while value < config["steps"]:
        time.sleep(config.get("sleep", 0))
        value += 1
        if value == config.get("fail_at") and first_time(config["marks"], "fail"):
            lose_local_checkpoints(tune.get_trial_dir())
            raise RuntimeError("the node lost its disk")
        with tune.checkpoint_dir(step=value) as d:
            with open(os.path.join(d, "value"), "w") as f:
                f.write(str(value))
        tune.report(value=value, restored_from=restored_from)


async def async_counting(config, checkpoint_dir=None):
    """counting as an async function (it runs on a loop shared with other trials)."""
    value, restored_from = 0, None
    if checkpoint_dir:
        with open(os.path.join(checkpoint_dir, "value")) as f:
            value = int(f.read())
        restored_from = os.path.basename(os.path.normpath(checkpoint_dir))
    while value < config["steps"]:
        await asyncio.sleep(0.01)
        value += 1
        if value == config["fail_at"] and first_time(config["marks"], f"fail-{config['i']}"):
            lose_local_checkpoints(tune.get_trial_dir())
            raise RuntimeError("the node lost its disk")
        with tune.checkpoint_dir(step=value) as d:
            with open(os.path.join(d, "value"), "w") as f:
                f.write(str(value))
        await tune.areport(value=value, restored_from=restored_from)


class SeesRemote(tune.Callback):
    """Notes what upload_dir holds of each checkpoint when the driver registers it."""

    def __init__(self, upload_dir: str) -> None:
        self.upload_dir = upload_dir
        self.seen: dict[str, dict[str, int]] = {}  # checkpoint name -> files
        self.by_trial: dict[tuple[str, str], dict[str, int]] = {}  # (trial dir, name) -> files

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        name, trial_dir = os.path.basename(checkpoint.dir), os.path.basename(trial.logdir)
        files = remote_files(f"{self.upload_dir}/exp/{trial_dir}/{name}")
        self.seen[name] = self.by_trial[trial_dir, name] = files


def only_at_end(upload_dir: str) -> tune.SyncConfig:
    """The driver's own upload of the experiment only at the end: what upload_dir holds
    during the run is the trainable's doing."""
    return tune.SyncConfig(upload_dir=upload_dir, sync_on_checkpoint=False,
                           cloud_sync_period=3600)


# ---- class trainables on Ray ------------------------------------------------------------------
@pytest.mark.ray
def test_checkpoints_are_uploaded_as_taken_and_pruned_ones_deleted_there(results_dir, tmp_path):
    upload_dir = f"file://{tmp_path / 'store'}"
    sees = SeesRemote(upload_dir)
    analysis = tune.run(Counter, name="exp", local_dir=results_dir, verbose=0,
                        stop={"training_iteration": 4}, checkpoint_freq=1,
                        keep_checkpoints_num=1, callbacks=[sees],
                        sync_config=only_at_end(upload_dir))
    [trial] = analysis.trials
    assert trial.status == "TERMINATED"
    # Each checkpoint was in upload_dir when the driver first heard of it.
    assert sorted(sees.seen) == [f"checkpoint_00000{i}" for i in range(1, 5)]
    for files in sees.seen.values():
        assert {"value", ".is_checkpoint", ".tune_metadata"} <= set(files)
    remote_trial = remote_files(f"{upload_dir}/exp/{os.path.basename(trial.logdir)}")
    # The pruned ones were deleted there (the driver's final upload never had them).
    assert checkpoint_dirs(remote_trial) == {"checkpoint_000004"}
    assert checkpoint_dirs(dict.fromkeys(os.listdir(trial.logdir))) == {"checkpoint_000004"}


@pytest.mark.ray
def test_a_trial_that_lost_its_local_checkpoints_restores_from_upload_dir(results_dir,
                                                                          tmp_path):
    upload_dir = f"file://{tmp_path / 'store'}"
    analysis = tune.run(Counter, name="exp", local_dir=results_dir, verbose=0,
                        config={"fail_at": 3, "marks": str(tmp_path)},
                        stop={"training_iteration": 5}, checkpoint_freq=1, max_failures=1,
                        sync_config=only_at_end(upload_dir))
    [trial] = analysis.trials
    assert trial.status == "TERMINATED" and trial.num_failures == 1
    # Restored from checkpoint_000002 (downloaded again), counting on from its state.
    assert trial.last_result["value"] == 5
    assert trial.last_result["restored_from"] == "checkpoint_000002"
    assert os.path.exists(os.path.join(trial.logdir, "checkpoint_000002", "value"))


@pytest.mark.ray
def test_a_reused_trainable_uploads_each_trial_to_its_own_directory(results_dir, tmp_path):
    upload_dir = f"file://{tmp_path / 'store'}"
    sees = SeesRemote(upload_dir)
    analysis = tune.run(Counter, name="exp", local_dir=results_dir, verbose=0, num_samples=4,
                        stop={"training_iteration": 2}, checkpoint_at_end=True,
                        reuse_actors=True, callbacks=[sees], sync_config=only_at_end(upload_dir))
    assert len({t.last_result["pid"] for t in analysis.trials}) < 4  # reused
    assert sorted(sees.by_trial) == sorted((os.path.basename(t.logdir), "checkpoint_000002")
                                           for t in analysis.trials)
    assert all(files["value"] == 1 for files in sees.by_trial.values())  # "2", per trial


@pytest.mark.ray
def test_async_durable_trials_sharing_a_worker_upload_and_restore(results_dir, tmp_path):
    upload_dir = f"file://{tmp_path / 'store'}"
    sees = SeesRemote(upload_dir)
    analysis = tune.run(tune.durable(async_counting), name="exp", local_dir=results_dir,
                        verbose=0, config={"i": tune.grid_search([0, 1]), "steps": 4,
                                           "fail_at": 3, "marks": str(tmp_path)},
                        max_failures=1, trials_per_worker=2, resources_per_trial={"cpu": 0.5},
                        callbacks=[sees], sync_config=only_at_end(upload_dir))
    assert len({t.last_result["pid"] for t in analysis.trials}) == 1  # one shared worker
    for trial in analysis.trials:
        assert trial.status == "TERMINATED" and trial.num_failures == 1
        assert trial.last_result["value"] == 4
        assert trial.last_result["restored_from"] == "checkpoint_000002"
        trial_dir = os.path.basename(trial.logdir)
        assert {name for t, name in sees.by_trial if t == trial_dir} == {
            "checkpoint_000001", "checkpoint_000002", "checkpoint_000003", "checkpoint_000004"}
        assert all(files.get("value") == 1 for (t, _), files in sees.by_trial.items()
                   if t == trial_dir)


@pytest.mark.ray
def test_with_the_default_sync_config_the_driver_upload_and_pruning_agree(results_dir,
                                                                          tmp_path, caplog):
    """The driver mirrors the experiment too (sync_on_checkpoint): a checkpoint both put
    in upload_dir and pruned is deleted once, without failed syncs."""
    upload_dir = f"file://{tmp_path / 'store'}"
    caplog.set_level(logging.WARNING)
    analysis = tune.run(Counter, name="exp", local_dir=results_dir, verbose=0,
                        stop={"training_iteration": 4}, checkpoint_freq=1,
                        keep_checkpoints_num=2, sync_config=tune.SyncConfig(
                            upload_dir=upload_dir, cloud_sync_period=0))
    [trial] = analysis.trials
    remote = remote_files(f"{upload_dir}/exp")
    local = remote_files(f"file://{results_dir}/exp")
    assert remote == local  # the whole experiment, the kept checkpoints only
    assert checkpoint_dirs(remote_files(f"{upload_dir}/exp/{os.path.basename(trial.logdir)}")
                           ) == {"checkpoint_000003", "checkpoint_000004"}
    assert not [r.getMessage() for r in caplog.records if r.name.startswith("tune_async")]


# ---- tune.durable(function) in process, memory:// ---------------------------------------------
def test_durable_function_uploads_and_restores_from_memory_store(results_dir, tmp_path):
    upload_dir = f"memory://durable/{tmp_path.name}"
    sees = SeesRemote(upload_dir)
    analysis = tune.run(tune.durable(counting), name="exp", local_dir=results_dir, verbose=0,
                        config={"steps": 5, "fail_at": 4, "marks": str(tmp_path)},
                        max_failures=1, keep_checkpoints_num=2, callbacks=[sees],
                        trial_executor="local", sync_config=only_at_end(upload_dir))
    [trial] = analysis.trials
    assert trial.status == "TERMINATED" and trial.num_failures == 1
    assert trial.last_result["value"] == 5
    assert trial.last_result["restored_from"] == "checkpoint_000003"
    assert set(sees.seen) == {f"checkpoint_00000{i}" for i in range(1, 6)}
    assert all("value" in files for files in sees.seen.values())
    remote_trial = remote_files(f"{upload_dir}/exp/{os.path.basename(trial.logdir)}")
    assert checkpoint_dirs(remote_trial) == {"checkpoint_000004", "checkpoint_000005"}


def test_durable_keeps_the_function_name_and_refuses_non_trainables():
    trainable = tune.durable(counting)
    assert issubclass(trainable, tune.DurableTrainable) and trainable.__name__ == "counting"
    assert tune.durable(Counter) is Counter  # durable already
    assert tune.durable(lambda config: None)._name == "lambda"  # the plain one's name (1.x)
    tune.register_trainable("registered_counting", counting)
    assert tune.durable("registered_counting")._name == "registered_counting"
    with pytest.raises(ValueError, match="does not inherit from `Trainable`"):
        tune.durable(dict)
    with pytest.raises(ValueError, match="sync_function"):
        tune.durable(counting, sync_function="cp -r only-a-source {source}")
    from tune_async import durable_trainable

    assert durable_trainable.DurableTrainable is tune.DurableTrainable


async def test_resume_after_the_local_checkpoints_are_gone_restores_from_upload_dir(
        results_dir, tmp_path):
    upload_dir = f"file://{tmp_path / 'store'}"
    two_taken = anyio.Event()

    class AfterTwo(tune.Callback):
        def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
            if checkpoint.iteration >= 2:
                two_taken.set()

    run = functools.partial(
        tune.arun, tune.durable(counting), name="exp", local_dir=results_dir, verbose=0,
        config={"steps": 40, "sleep": 0.05}, trial_executor="local",
        sync_config=only_at_end(upload_dir))
    async with anyio.create_task_group() as tg:
        tg.start_soon(functools.partial(run, callbacks=[AfterTwo()]))
        await two_taken.wait()
        tg.cancel_scope.cancel()  # interrupted: resume=True continues it
    [logdir] = [e.path for e in os.scandir(os.path.join(results_dir, "exp")) if e.is_dir()]
    lose_local_checkpoints(logdir)

    analysis = await run(resume=True)
    [trial] = analysis.trials
    assert trial.status == "TERMINATED" and trial.last_result["value"] == 40
    restored_from = trial.last_result["restored_from"]
    assert restored_from is not None and restored_from >= "checkpoint_000002"
    assert os.path.isdir(os.path.join(logdir, restored_from))  # downloaded again


def test_a_sync_function_moves_the_checkpoints(results_dir, tmp_path):
    store = tmp_path / "store"
    trainable = tune.durable(Counter, sync_function="mkdir -p {target} && cp -r {source}/. {target}")
    analysis = tune.run(trainable, name="exp", local_dir=results_dir, verbose=0,
                        config={"fail_at": 3, "marks": str(tmp_path)},
                        stop={"training_iteration": 4}, checkpoint_freq=1, max_failures=1,
                        keep_checkpoints_num=1, trial_executor="local",
                        sync_config=only_at_end(str(store)))
    [trial] = analysis.trials
    assert trial.last_result["value"] == 4
    assert trial.last_result["restored_from"] == "checkpoint_000002"  # copied back by cp
    remote_trial = store / "exp" / os.path.basename(trial.logdir)
    # Pruned ones deleted (through fsspec: a command only copies).
    assert checkpoint_dirs(dict.fromkeys(os.listdir(remote_trial))) == {"checkpoint_000004"}


# ---- no upload_dir --------------------------------------------------------------------------------
@pytest.mark.parametrize("trainable", [Counter, tune.durable(counting)])
def test_a_durable_trainable_without_upload_dir_is_refused_before_any_trial(results_dir,
                                                                            trainable):
    with pytest.raises(ValueError) as caught:
        tune.run(trainable, name="exp", local_dir=results_dir, verbose=0,
                 config={"steps": 1}, trial_executor="local")
    assert str(caught.value) == NO_UPLOAD_DIR
    assert not os.path.exists(os.path.join(results_dir, "exp"))  # nothing started


def test_an_experiment_upload_dir_is_enough(results_dir, tmp_path):
    upload_dir = f"file://{tmp_path / 'store'}"
    experiment = tune.Experiment("exp", tune.durable(counting), config={"steps": 2},
                                 local_dir=results_dir, upload_dir=upload_dir)
    analysis = tune.run(experiment, verbose=0, trial_executor="local")
    [trial] = analysis.trials
    remote = remote_files(f"{upload_dir}/exp/{os.path.basename(trial.logdir)}")
    assert checkpoint_dirs(remote) == {"checkpoint_000001", "checkpoint_000002"}


# ---- the class on its own -------------------------------------------------------------------------
def test_save_restore_and_delete_through_remote_storage(results_dir, tmp_path):
    remote = f"memory://durable-unit/{tmp_path.name}/trial"
    first = Counter(config={}, remote_checkpoint_dir=remote)
    first.train()
    first.train()
    path = first.save()
    assert checkpoint_dirs(remote_files(remote)) == {"checkpoint_000002"}
    lose_local_checkpoints(first.logdir)

    second = Counter(config={}, remote_checkpoint_dir=remote,
                     trial_info=tune.trainable.TrialInfo(logdir=first.logdir))
    second.restore(path)
    assert second.value == 2 and second.iteration == 2
    second.delete_checkpoint(path)
    assert remote_files(remote) == {} and not os.path.exists(path)
    with pytest.raises(FileNotFoundError, match="neither here nor in remote storage"):
        Counter(config={}, remote_checkpoint_dir=remote,
                trial_info=tune.trainable.TrialInfo(logdir=first.logdir)).restore(path)
    with pytest.raises(ValueError, match="must be `self.logdir`, or a sub-directory"):
        first.save(str(tmp_path))
    assert Counter(remote, {}).remote_checkpoint_dir == remote  # 1.x's positional form
    with pytest.raises(FileNotFoundError, match="no checkpoint of this experiment's trials"):
        first.restore("/nowhere/checkpoint_000001/value")


# ---- a local S3 server -----------------------------------------------------------------------------
@pytest.mark.ray
def test_s3_checkpoints_uploaded_as_taken_and_restored_after_loss(results_dir, tmp_path,
                                                                  s3):  # noqa: F811
    upload_dir = f"s3://{s3}/durable"
    env = {k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                      "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL_S3",
                                      "AWS_MAX_ATTEMPTS")}
    sees = SeesRemote(upload_dir)
    analysis = tune.run(Counter, name="exp", local_dir=results_dir, verbose=0,
                        config={"env": env, "fail_at": 3, "marks": str(tmp_path)},
                        stop={"training_iteration": 4}, checkpoint_freq=1, max_failures=1,
                        keep_checkpoints_num=2, callbacks=[sees],
                        sync_config=only_at_end(upload_dir))
    [trial] = analysis.trials
    assert trial.status == "TERMINATED" and trial.num_failures == 1
    assert trial.last_result["value"] == 4
    assert trial.last_result["restored_from"] == "checkpoint_000002"
    assert all("value" in sees.seen[f"checkpoint_00000{i}"] for i in range(1, 5))
    in_bucket = bucket_files(f"{upload_dir}/exp/{os.path.basename(trial.logdir)}")
    assert checkpoint_dirs(in_bucket) == {"checkpoint_000003", "checkpoint_000004"}


# ---- a node lost on a real multi-node cluster -------------------------------------------------
def _ledger_state(config, checkpoint_dir):
    import ray

    step = 0
    if checkpoint_dir:
        with open(os.path.join(checkpoint_dir, "value")) as f:
            step = int(f.read())
    return step, ray.get_runtime_context().get_node_id()


def _ledger_step(config, step, node):
    """Notes the step and its node in a ledger outside the trial directory; checkpoints
    every 2 steps."""
    with open(config["ledger"], "a") as f:
        f.write(json.dumps({"step": step, "node": node}) + "\n")
    if step % 2 == 0:
        with tune.checkpoint_dir(step=step) as d:
            with open(os.path.join(d, "value"), "w") as f:
                f.write(str(step))


def ledgered(config, checkpoint_dir=None):
    step, node = _ledger_state(config, checkpoint_dir)
    while step < config["steps"]:
        time.sleep(config["sleep"])
        step += 1
        _ledger_step(config, step, node)
        tune.report(step=step)


async def async_ledgered(config, checkpoint_dir=None):
    """ledgered on a worker's shared event loop (trials_per_worker)."""
    step, node = _ledger_state(config, checkpoint_dir)
    while step < config["steps"]:
        await asyncio.sleep(config["sleep"])
        step += 1
        _ledger_step(config, step, node)
        await tune.areport(step=step)


def _cluster_scenario(work: str) -> None:
    """Run by the tests below in a process of its own: a head without CPUs and three
    worker nodes, each keeping trial directories under its own root (as separate
    machines). In each run, the trial's node is removed after its checkpoint at step 4;
    sync_to_driver=False."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False,
        "_system_config": {"health_check_period_ms": 1000, "health_check_failure_threshold": 3,
                           "health_check_initial_delay_ms": 0}})
    nodes = [cluster.add_node(num_cpus=1, env_vars={
        "TUNE_ASYNC_NODE_ROOT": os.path.join(work, f"node_{x}")}) for x in "abc"]
    ray.init(address=cluster.address, include_dashboard=False, configure_logging=False)

    def run(name, trainable, **kwargs):
        removed: dict = {}

        class RemoveItsNode(tune.Callback):
            def on_trial_result(self, iteration, trials, trial, result, **info):
                if result["step"] == 5 and not removed:
                    removed["node"] = trial.extra["node_id"]
                    node = next(n for n in nodes if n.node_id == removed["node"])
                    threading.Thread(target=cluster.remove_node, args=(node,),
                                     daemon=True).start()

        analysis = tune.run(
            tune.durable(trainable), name=name, local_dir=os.path.join(work, "results"),
            verbose=0, max_failures=1, callbacks=[RemoveItsNode()],
            raise_on_failed_trial=False,
            config={"steps": 10, "sleep": 0.4, "ledger": os.path.join(work, f"{name}.ledger")},
            sync_config=tune.SyncConfig(upload_dir=f"file://{work}/store",
                                        sync_to_driver=False), **kwargs)
        [trial] = analysis.trials
        return {"status": trial.status, "num_failures": trial.num_failures,
                "logdir": trial.logdir, "removed": removed.get("node"),
                "last_step": trial.last_result.get("step")}

    report = {}
    try:
        report["function"] = run("function", ledgered)
        report["async"] = run("async", async_ledgered, trials_per_worker=2,
                              resources_per_trial={"cpu": 0.5})
    finally:
        ray.shutdown()
        cluster.shutdown()
        with open(os.path.join(work, "report.json"), "w") as f:
            json.dump(report, f)


@pytest.fixture(scope="module")
def cluster_runs(tmp_path_factory):
    work = str(tmp_path_factory.mktemp("durable_cluster"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-m", "tests.test_durable", work], cwd=root,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-6000:]
    with open(os.path.join(work, "report.json")) as f:
        return work, json.load(f)


@pytest.mark.parametrize("name", ["function", "async"])
def test_a_trial_whose_node_is_lost_restores_on_another_from_upload_dir(cluster_runs, name):
    work, reports = cluster_runs
    report = reports[name]
    assert report["status"] == "TERMINATED" and report["num_failures"] == 1
    assert report["last_step"] == 10
    with open(os.path.join(work, f"{name}.ledger")) as f:
        ledger = [json.loads(line) for line in f]
    lost = [e["step"] for e in ledger if e["node"] == report["removed"]]
    after = [e["step"] for e in ledger if e["node"] != report["removed"]]
    assert lost[:5] == [1, 2, 3, 4, 5]
    assert after == list(range(5, 11))  # on another node, from checkpoint_000004
    # That checkpoint never was on the driver nor on the new node: it came from upload_dir.
    assert not [n for n in os.listdir(report["logdir"]) if n.startswith("checkpoint_")]
    remote = remote_files(f"file://{work}/store/{name}/{os.path.basename(report['logdir'])}")
    assert {"checkpoint_000004", "checkpoint_000010"} <= checkpoint_dirs(remote)


if __name__ == "__main__":
    _cluster_scenario(sys.argv[1])
