"""Checkpoint holds: pruning waits for the last release, and never removes the
checkpoint a retry or a resume restores from."""

from __future__ import annotations

import os

import tune_async as tune
from tests.scripted_executor import ScriptedExecutor
from tests.test_checkpointing_run import Counter, checkpoint_iterations, read_lines
from tune_async.checkpoint import Checkpoint
from tune_async.sync.holds import CheckpointHolds


def _holds():
    deleted: list[str] = []

    def spawn_delete(delete, checkpoints):
        delete(checkpoints)

    holds = CheckpointHolds(spawn_delete)
    return holds, deleted, lambda cps: deleted.extend(os.path.basename(c.dir) for c in cps)


def _checkpoint(tmp_path, n):
    path = tmp_path / f"checkpoint_{n:06d}"
    path.mkdir()
    (path / "state").write_text(str(n))
    return Checkpoint.from_path(str(path / "state"), {"training_iteration": n})


def test_a_held_checkpoint_is_deleted_at_the_last_release(tmp_path):
    holds, deleted, delete = _holds()
    one, two = _checkpoint(tmp_path, 1), _checkpoint(tmp_path, 2)
    first = holds.hold(one.path)  # any path inside the checkpoint directory
    second = holds.hold(one.dir)
    holds.delete_or_defer([one, two], delete)
    assert deleted == ["checkpoint_000002"]  # not held: deleted at once
    assert holds.deferred == [one]
    first()
    first()  # a second call of the same release does nothing
    assert deleted == ["checkpoint_000002"] and holds.is_held(one.dir)
    second()
    assert deleted == ["checkpoint_000002", "checkpoint_000001"]
    assert holds.deferred == [] and not holds.is_held(one.dir)


def test_a_checkpoint_saved_again_in_the_same_place_is_not_deleted_at_release(tmp_path):
    holds, deleted, delete = _holds()
    one = _checkpoint(tmp_path, 1)
    release = holds.hold(one.dir)
    holds.delete_or_defer([one], delete)
    holds.keep(Checkpoint.from_path(one.path, {"training_iteration": 1}))  # re-saved there
    release()
    assert deleted == []


class HoldUntilEnd(tune.Callback):
    """Holds every checkpoint until the trial completes; records what was on disk then."""

    def __init__(self):
        self.releases = []
        self.on_disk_before_release = None

    def setup(self, context=None, **info):
        self.context = context

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        self.releases.append(self.context.hold_checkpoint(checkpoint.path))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.on_disk_before_release = checkpoint_iterations(trial.logdir)
        for release in self.releases:
            release()


def test_pruning_waits_for_holds_and_deletes_after_release(results_dir):
    holder = HoldUntilEnd()
    analysis = tune.run(Counter, checkpoint_freq=1, keep_checkpoints_num=1,
                        stop={"training_iteration": 4}, callbacks=[holder],
                        trial_executor=ScriptedExecutor(), local_dir=results_dir, verbose=0)
    trial = analysis.trials[0]
    assert holder.on_disk_before_release == [1, 2, 3, 4]  # pruned, but held: still there
    assert checkpoint_iterations(trial.logdir) == [4]  # released: the pruned ones went


def test_without_holds_pruning_deletes_at_once(results_dir):
    analysis = tune.run(Counter, checkpoint_freq=1, keep_checkpoints_num=1,
                        stop={"training_iteration": 4}, trial_executor=ScriptedExecutor(),
                        local_dir=results_dir, verbose=0)
    assert checkpoint_iterations(analysis.trials[0].logdir) == [4]


def test_the_newest_checkpoint_survives_a_worse_score_and_a_retry_restores_it(
        results_dir, tmp_path):
    # Loss grows: by "min-loss" the first checkpoint is the best, the newest the worst.
    # The newest is what a retry restores from, so pruning keeps it beside the best.
    log, marker = tmp_path / "loads.log", tmp_path / "failed"
    config = {"losses": [1, 2, 3, 4, 5, 6], "fail_at": 5, "marker": str(marker),
              "log": str(log)}
    analysis = tune.run(Counter, config=config, checkpoint_freq=1, keep_checkpoints_num=1,
                        checkpoint_score_attr="min-loss", max_failures=1,
                        stop={"training_iteration": 6}, trial_executor=ScriptedExecutor(),
                        local_dir=results_dir, verbose=0)
    trial = analysis.trials[0]
    assert trial.status == "TERMINATED" and trial.num_failures == 1
    assert read_lines(log) == ["path 4"]  # the newest before the failure, not the best (1)
    assert checkpoint_iterations(trial.logdir) == [1, 6]  # the best and the newest


def test_a_checkpoint_is_deleted_only_once_the_state_on_disk_names_a_newer_one(
        results_dir, monkeypatch):
    # A crash at any moment resumes from the state on disk (snapshot + journal): the
    # checkpoint it names must still exist, so pruning waits for the journal line.
    import tune_async.checkpoint as checkpoint_module
    from tune_async.state import load_state, newest_state_file, trials_from_state

    named_when_deleted = []
    delete = checkpoint_module.delete_checkpoint

    def state_as_a_crash_would_leave_it(experiment_dir):
        # The writer may replace the snapshot (and empty the journal) while this thread
        # reads the two files: a read across that moment is no state a crash leaves.
        while True:
            path = newest_state_file(experiment_dir)
            before = os.stat(path).st_ino
            state = load_state(path)
            if os.stat(path).st_ino == before:
                return state

    def checking_delete(checkpoint):
        experiment_dir = os.path.dirname(os.path.dirname(checkpoint.dir))
        (trial,) = trials_from_state(state_as_a_crash_would_leave_it(experiment_dir))
        on_disk = trial.checkpoint.dir if trial.checkpoint is not None else None
        named_when_deleted.append(on_disk == checkpoint.dir)
        delete(checkpoint)

    monkeypatch.setattr(checkpoint_module, "delete_checkpoint", checking_delete)
    analysis = tune.run(Counter, checkpoint_freq=1, keep_checkpoints_num=1,
                        stop={"training_iteration": 6}, trial_executor=ScriptedExecutor(),
                        local_dir=results_dir, verbose=0)
    assert checkpoint_iterations(analysis.trials[0].logdir) == [6]
    assert len(named_when_deleted) == 5 and not any(named_when_deleted)
