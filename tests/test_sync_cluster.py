"""Node → driver syncing on a real multi-node Ray cluster on this machine.

The cluster (a head without CPUs, two worker nodes ``a`` and ``b``) runs in its own
driver process (tests/cluster_driver.py: the suite's session Ray instance stays
untouched); every scenario runs there once and the tests read its report and the
files on disk. Worker nodes keep trial directories under their own roots, so a file
is in the driver's trial directory only if a sync brought it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import anyio
import pytest

import tune_async as tune
from tests.scripted_executor import ScriptedExecutor
from tune_async.checkpoint import Checkpoint
from tune_async.sync.node import pack_changes, to_driver_path, to_node_path, unpack
from tune_async.sync.transit import CheckpointTransits

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKPOINTS_1_TO_6 = ["checkpoint_000002", "checkpoint_000004", "checkpoint_000006"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    work = str(tmp_path_factory.mktemp("cluster"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(HERE), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, os.path.join(HERE, "cluster_driver.py"), work],
                          env=env, capture_output=True, text=True, timeout=900)
    report_path = os.path.join(work, "report.json")
    if done.returncode != 0 or not os.path.exists(report_path):
        raise AssertionError(f"cluster driver failed ({done.returncode}):\n"
                             f"{done.stdout[-3000:]}\n{done.stderr[-6000:]}")
    with open(report_path) as f:
        report = json.load(f)
    report["work"] = work
    return report


def artifact_steps(directory):
    path = os.path.join(directory, "artifact.txt")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [int(line) for line in f if line.strip()]


def checkpoints_in(directory):
    return sorted(n for n in os.listdir(directory) if n.startswith("checkpoint_")
                  and os.path.exists(os.path.join(directory, n, "state.json")))


def on_node(cluster, trial):
    """The trial's directory as its node keeps it (under the node's root)."""
    return to_node_path(trial["logdir"], cluster["roots"][trial["node"]])


def assert_all_arrived(cluster, trial):
    assert trial["status"] == "TERMINATED"
    assert trial["node"] in cluster["roots"]  # a worker node, not the driver's
    assert artifact_steps(trial["logdir"]) == list(range(1, 7))
    assert checkpoints_in(trial["logdir"]) == CHECKPOINTS_1_TO_6
    assert checkpoints_in(on_node(cluster, trial)) == CHECKPOINTS_1_TO_6  # written there


def test_trials_on_worker_nodes_have_their_files_on_the_driver_at_the_end(cluster):
    run = cluster["long_period"]
    assert {t["node"] for t in run["trials"]} == set(cluster["nodes"].values())
    for trial in run["trials"]:
        assert_all_arrived(cluster, trial)
    # node_sync_period=300 and no sync on checkpoint: nothing came during the run.
    assert len(run["seen"]) == 12
    assert not any(s["artifact"] or s["checkpoints"] for s in run["seen"])


def test_a_short_node_sync_period_brings_files_during_the_run(cluster):
    run = cluster["short_period"]
    (trial,) = run["trials"]
    assert trial["status"] == "TERMINATED"
    # The trainable waited at step 3 until its artifact was on the driver: it arrived.
    with open(os.path.join(cluster["work"], "short_period.ledger")) as f:
        waits = [json.loads(line) for line in f if "arrived_during_run" in line]
    assert waits == [{"arrived_during_run": True}]
    during = [s["step"] for s in run["seen"] if s["artifact"]]
    assert during and min(during) <= 4, run["seen"]  # before the trial ended
    assert artifact_steps(trial["logdir"]) == list(range(1, 6))


def test_sync_on_checkpoint_puts_each_checkpoint_on_the_driver_before_the_next_step(cluster):
    run = cluster["on_checkpoint"]
    (trial,) = run["trials"]
    assert_all_arrived(cluster, trial)
    for seen in run["seen"]:
        taken_before = [f"checkpoint_{i:06d}" for i in range(2, seen["step"], 2)]
        assert seen["checkpoints"] == taken_before, seen


def test_pruned_checkpoints_are_deleted_on_the_node_too(cluster):
    (trial,) = cluster["pruned"]["trials"]
    assert trial["status"] == "TERMINATED"
    kept = ["checkpoint_000004", "checkpoint_000005"]  # keep_checkpoints_num=2
    assert checkpoints_in(trial["logdir"]) == kept
    assert checkpoints_in(on_node(cluster, trial)) == kept


@pytest.mark.parametrize("name", ["function", "template"])
def test_a_function_or_a_command_template_replaces_the_ray_transfer(cluster, name):
    run = cluster[name]
    (trial,) = run["trials"]
    assert_all_arrived(cluster, trial)
    assert not any(s["artifact"] for s in run["seen"])  # at the end only (period 300)


def test_sync_to_driver_false_brings_nothing(cluster):
    (trial,) = cluster["disabled"]["trials"]
    assert trial["status"] == "TERMINATED"
    assert artifact_steps(trial["logdir"]) == []
    assert checkpoints_in(trial["logdir"]) == []
    assert artifact_steps(on_node(cluster, trial)) == list(range(1, 7))  # it stayed there


def test_a_lost_node_costs_only_the_steps_after_the_last_synced_checkpoint(cluster):
    run = cluster["node_loss"]
    removal = run["removal"]
    (trial,) = run["trials"]
    # One failure of the trial (max_failures=1), not of the experiment: it finished.
    assert trial["status"] == "TERMINATED" and trial["num_failures"] == 1
    assert trial["iteration"] == 12
    lost_node = removal["node"]
    assert trial["node"] != lost_node and trial["node"] in cluster["roots"]

    with open(os.path.join(cluster["work"], "node_loss.ledger")) as f:
        executed = [json.loads(line) for line in f]
    first = [e["step"] for e in executed if e["node"] == lost_node]
    second = [e["step"] for e in executed if e["node"] == trial["node"]]
    assert first == list(range(1, len(first) + 1))
    restart = second[0] - 1
    assert second == list(range(restart + 1, 13))
    # It restarted from a checkpoint on the driver at least as new as the newest one
    # there when the node was removed, and not from one the driver never saw.
    synced = [int(n.split("_")[1]) for n in removal["checkpoints_on_driver"]]
    seen_from_lost = max(s["step"] for s in run["seen"] if s["node"] == lost_node)
    assert restart % 2 == 0 and max(synced) <= restart <= seen_from_lost
    re_executed = sorted(set(first) & set(second))
    assert re_executed == list(range(restart + 1, max(first) + 1))
    # The driver's records hold each iteration once, and every checkpoint.
    with open(os.path.join(trial["logdir"], "result.json")) as f:
        iterations = [json.loads(line)["training_iteration"] for line in f]
    assert iterations == list(range(1, 13))
    assert checkpoints_in(trial["logdir"]) == [f"checkpoint_{i:06d}" for i in range(2, 13, 2)]


# ---- the pieces, without a cluster ------------------------------------------------------
def test_node_paths_map_the_driver_path_under_the_node_root():
    assert to_node_path("/exp/trial", "") == "/exp/trial"
    assert to_node_path("/exp/trial", "/node") == "/node/exp/trial"
    assert to_driver_path("/node/exp/trial/checkpoint_000001/x", "/node") == (
        "/exp/trial/checkpoint_000001/x")
    assert to_driver_path("/elsewhere/c", "/node") == "/elsewhere/c"


def test_pack_changes_sends_only_files_changed_since_the_last_pull(tmp_path):
    source, target = tmp_path / "node", tmp_path / "driver"
    (source / "checkpoint_000001").mkdir(parents=True)
    (source / "checkpoint_000001" / "state").write_text("1")
    (source / "artifact.txt").write_text("a")
    data, seen = pack_changes(str(source), {})
    assert sorted(seen) == ["artifact.txt", os.path.join("checkpoint_000001", "state")]
    unpack(data, str(target))
    assert (target / "checkpoint_000001" / "state").read_text() == "1"
    assert pack_changes(str(source), seen) == (b"", {})  # nothing changed
    (source / "artifact.txt").write_text("ab")
    data, changed = pack_changes(str(source), seen)
    assert list(changed) == ["artifact.txt"]
    unpack(data, str(target))
    assert (target / "artifact.txt").read_text() == "ab"


def test_a_checkpoint_in_transit_is_restorable_only_once_it_arrived():
    transits = CheckpointTransits()
    first = Checkpoint.from_path("/t/checkpoint_000002/", iteration=2)
    second = Checkpoint.from_path("/t/checkpoint_000004/", iteration=4)

    async def scenario():
        transit = transits.begin("t", first)
        assert not transits.restorable("t", first)
        transit.settle(True)
        await transits.settled("t")
        assert transits.restorable("t", first) and transits.newest_arrived("t") is first
        lost = transits.begin("t", second)
        with anyio.move_on_after(0.05) as waited:
            await transits.settled("t")  # the trial's next step waits for it
        assert waited.cancelled_caught
        lost.settle(False)
        await transits.settled("t")
        assert not transits.restorable("t", second)
        assert transits.newest_arrived("t") is first

    anyio.run(scenario)


# ---- the controller's side of transits (in-process executor, no Ray) ----------------------
class Courier(tune.Callback):
    """Plays a syncer: each checkpoint is in transit until a background task settles it
    (``delay_s`` later); the iterations in ``lose`` never arrive."""

    def __init__(self, lose=(), delay_s=0.0):
        self.lose, self.delay_s = set(lose), delay_s
        self.settled_at: dict[int, float] = {}

    def setup(self, context=None, **info):
        self.context = context

    def on_checkpoint(self, trial, checkpoint, **info):
        transit = self.context.checkpoint_in_transit(trial.trial_id, checkpoint)
        self.context.start_soon(self._deliver, transit, checkpoint.iteration)

    async def _deliver(self, transit, iteration):
        await anyio.sleep(self.delay_s)
        self.settled_at[iteration] = time.monotonic()
        transit.settle(iteration not in self.lose)


def test_a_failed_trial_restarts_from_its_newest_checkpoint_that_arrived(results_dir, tmp_path):
    from tests.test_checkpointing_run import Counter, read_lines, result_lines

    log = tmp_path / "loads.log"
    config = {"fail_at": 5, "marker": str(tmp_path / "failed"), "log": str(log)}
    analysis = tune.run(Counter, trial_executor=ScriptedExecutor(), config=config,
                        checkpoint_freq=2, max_failures=1, stop={"training_iteration": 7},
                        callbacks=[Courier(lose={4})], local_dir=results_dir, verbose=0)
    trial = analysis.trials[0]
    assert trial.status == "TERMINATED" and trial.num_failures == 1
    assert read_lines(log) == ["path 2"]  # checkpoint 4 never reached the driver
    assert [r["training_iteration"] for r in result_lines(trial.logdir)] == list(range(1, 8))
    assert [r["count"] for r in result_lines(trial.logdir)] == list(range(1, 8))


def test_a_trial_takes_no_step_while_its_checkpoint_is_in_transit(results_dir):
    steps: list[tuple[int, float]] = []

    def train(config, checkpoint_dir=None):
        for i in range(1, 5):
            steps.append((i, time.monotonic()))
            if i == 2:
                with tune.checkpoint_dir(step=i) as d:
                    open(os.path.join(d, "state"), "w").close()
            tune.report(i=i)

    courier = Courier(delay_s=0.5)
    analysis = tune.run(train, trial_executor=ScriptedExecutor(), callbacks=[courier],
                        local_dir=results_dir, verbose=0)
    assert analysis.trials[0].status == "TERMINATED"
    assert [i for i, _ in steps] == [1, 2, 3, 4]
    started_3 = dict(steps)[3]
    assert started_3 >= courier.settled_at[2]  # step 3 waited for checkpoint 2
