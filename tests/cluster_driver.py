"""A driver on a three-node Ray cluster on this machine (head + two worker nodes).

Usage: python cluster_driver.py <work_dir>
It runs every scenario of tests/test_sync_cluster.py on one cluster (starting one
is the slow part) and writes what it saw to ``<work_dir>/report.json``; the tests
read that and the files on disk.

The head (the driver's node) has no CPU, so trials run on the worker nodes only.
Each worker node keeps trial directories under its own root
(``TUNE_ASYNC_NODE_ROOT=<work_dir>/node_<x>``): a file reaches the driver's trial
directory only through the sync, as between separate machines.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

import tune_async as tune

NODES = ("a", "b")


def train(config, checkpoint_dir=None):
    """Logs every step it executes (to a ledger outside the trial directories, which a
    lost node takes with it), writes an artifact, checkpoints every ``every`` steps."""
    import ray

    start = 0
    if checkpoint_dir:
        with open(os.path.join(checkpoint_dir, "state.json")) as f:
            start = json.load(f)["step"]
    node = ray.get_runtime_context().get_node_id()
    for step in range(start + 1, config["steps"] + 1):
        time.sleep(config["sleep"])
        with open(os.path.join(tune.get_trial_dir(), "artifact.txt"), "a") as f:
            f.write(f"{step}\n")
        with open(config["ledger"], "a") as f:
            f.write(json.dumps({"trial": tune.get_trial_id(), "step": step, "node": node}) + "\n")
        if step == config.get("wait_for_driver_at"):
            wait_for_driver_copy(config["ledger"])
        if step % config["every"] == 0:
            with tune.checkpoint_dir(step=step) as d:
                with open(os.path.join(d, "state.json"), "w") as f:
                    json.dump({"step": step}, f)
        tune.report(step=step)


def wait_for_driver_copy(ledger, timeout_s=90):
    """Until the driver's copy of this trial's artifact exists (the driver's directory is
    on this machine too): a periodic pull must bring it while the trial still runs."""
    from tune_async.sync.node import to_driver_path

    driver_copy = os.path.join(to_driver_path(tune.get_trial_dir()), "artifact.txt")
    deadline = time.monotonic() + timeout_s
    while not os.path.exists(driver_copy) and time.monotonic() < deadline:
        time.sleep(0.1)
    with open(ledger, "a") as f:
        f.write(json.dumps({"arrived_during_run": os.path.exists(driver_copy)}) + "\n")


class Probe(tune.Callback):
    """What the driver's disk holds at each result: the artifact, the checkpoints."""

    def __init__(self, on_result=None) -> None:
        self.seen: list[dict] = []
        self.on_result = on_result

    def on_trial_result(self, trial, result, **info):
        logdir = trial.logdir
        checkpoints = sorted(n for n in os.listdir(logdir) if n.startswith("checkpoint_"))
        self.seen.append({
            "trial": trial.trial_id, "step": result["step"], "node": trial.extra.get("node_id"),
            "artifact": os.path.exists(os.path.join(logdir, "artifact.txt")),
            "checkpoints": checkpoints,
        })
        if self.on_result is not None:
            self.on_result(trial, result)


def run(work, name, probe, steps=6, sleep=0.2, every=2, num=1, pin=None,
        wait_for_driver_at=None, **kwargs):
    resources = {"cpu": 1}
    if pin:
        resources["custom_resources"] = {pin: 1}
    analysis = tune.run(
        train, name=name, local_dir=os.path.join(work, "results"), verbose=0,
        config={"steps": steps, "sleep": sleep, "every": every,
                "wait_for_driver_at": wait_for_driver_at, "n": tune.grid_search(
            list(range(num))), "ledger": os.path.join(work, f"{name}.ledger")},
        resources_per_trial=resources, callbacks=[probe], raise_on_failed_trial=False,
        **kwargs)
    return {
        "trials": [{"trial_id": t.trial_id, "logdir": t.logdir, "status": t.status,
                    "num_failures": t.num_failures, "node": t.extra.get("node_id"),
                    "iteration": t.last_result.get("training_iteration")}
                   for t in analysis.trials],
        "seen": probe.seen,
    }


def copy_from_node(source, target):
    """A ``sync_to_driver`` function: ``source`` is ``<node ip>:<path on that node>/``."""
    import shutil

    shutil.copytree(source.split(":", 1)[1], target, dirs_exist_ok=True)


def scenarios(work, cluster, worker_nodes):
    report = {}
    long = tune.SyncConfig(node_sync_period=300, sync_on_checkpoint=False)
    report["long_period"] = run(work, "long_period", Probe(), num=2, sync_config=long)
    report["short_period"] = run(work, "short_period", Probe(), steps=5, pin="a", every=100,
                                 wait_for_driver_at=3,
                                 sync_config=tune.SyncConfig(node_sync_period=0.3))
    report["on_checkpoint"] = run(work, "on_checkpoint", Probe(), pin="b")
    report["pruned"] = run(work, "pruned", Probe(), steps=5, every=1, pin="b",
                           keep_checkpoints_num=2)
    report["function"] = run(work, "function", Probe(), pin="a", sync_config=tune.SyncConfig(
        sync_to_driver=copy_from_node, sync_on_checkpoint=False))
    template = (f"{sys.executable} -c \"import sys, shutil; shutil.copytree("
                "sys.argv[1].split(':', 1)[1], sys.argv[2], dirs_exist_ok=True)\" "
                "{source} {target}")
    report["template"] = run(work, "template", Probe(), pin="b", sync_config=tune.SyncConfig(
        sync_to_driver=template, sync_on_checkpoint=False))
    report["disabled"] = run(work, "disabled", Probe(), pin="a",
                             sync_config=tune.SyncConfig(sync_to_driver=False))
    report["node_loss"] = node_loss(work, cluster, worker_nodes)
    return report


def node_loss(work, cluster, worker_nodes):
    """One trial; the node it runs on is removed after its checkpoint at step 4 was seen
    on the driver; it must finish on the other node from its newest synced checkpoint."""
    removal: dict = {}

    def remove_its_node(trial, result):
        if result["step"] != 5 or removal:
            return
        node_id = trial.extra["node_id"]
        on_driver = sorted(n for n in os.listdir(trial.logdir) if n.startswith("checkpoint_"))
        removal.update(node=node_id, step=result["step"], checkpoints_on_driver=on_driver)
        node = next(n for n in worker_nodes if n.node_id == node_id)
        # Removing a node blocks for a while: not on the driver's event loop.
        threading.Thread(target=cluster.remove_node, args=(node,), daemon=True).start()

    out = run(work, "node_loss", Probe(remove_its_node), steps=12, sleep=0.4, every=2,
              max_failures=1)
    out["removal"] = removal
    return out


def main():
    import ray
    from ray.cluster_utils import Cluster

    work = sys.argv[1]
    started = time.time()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False,
        "_system_config": {"health_check_period_ms": 1000, "health_check_failure_threshold": 3,
                           "health_check_initial_delay_ms": 0},
    })
    worker_nodes = [
        cluster.add_node(num_cpus=1, resources={x: 1},
                         env_vars={"TUNE_ASYNC_NODE_ROOT": os.path.join(work, f"node_{x}")})
        for x in NODES
    ]
    ray.init(address=cluster.address, include_dashboard=False, configure_logging=False)
    report = {
        "driver_node": ray.get_runtime_context().get_node_id(),
        "nodes": {x: n.node_id for x, n in zip(NODES, worker_nodes, strict=True)},
        "roots": {n.node_id: os.path.join(work, f"node_{x}")
                  for x, n in zip(NODES, worker_nodes, strict=True)},
        "cluster_start_s": time.time() - started,
    }
    try:
        report.update(scenarios(work, cluster, worker_nodes))
    finally:
        report["total_s"] = time.time() - started
        with open(os.path.join(work, "report.json"), "w") as f:
            json.dump(report, f, indent=1)
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main()
