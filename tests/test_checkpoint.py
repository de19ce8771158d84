"""Checkpoint records, CheckpointManager (keep N by score), disk scan and result truncation."""

from __future__ import annotations

import csv
import json
import logging
import os
import pickle

import pytest

from tune_async.checkpoint import (
    Checkpoint,
    CheckpointManager,
    checkpoint_dir_of,
    find_checkpoints_on_disk,
    truncate_trial_results,
)
from tune_async.trainable.trainable import Trainable, TrialInfo

# ---- helpers -------------------------------------------------------------------------------


def make_checkpoint(logdir, iteration: int, **result) -> Checkpoint:
    """A real ``checkpoint_<n>/`` directory holding a file checkpoint and its metadata."""
    ckpt_dir = os.path.join(str(logdir), f"checkpoint_{iteration:06d}")
    os.makedirs(ckpt_dir, exist_ok=True)
    open(os.path.join(ckpt_dir, ".is_checkpoint"), "a").close()
    path = os.path.join(ckpt_dir, "model.bin")
    with open(path, "w") as f:
        f.write(str(iteration))
    with open(path + ".tune_metadata", "wb") as f:
        pickle.dump({"iteration": iteration, "time_total": float(iteration)}, f)
    return Checkpoint(
        path=path, iteration=iteration, result={"training_iteration": iteration, **result}
    )


def existing(logdir) -> list[int]:
    """Iterations of the checkpoint directories still on disk."""
    names = sorted(n for n in os.listdir(str(logdir)) if n.startswith("checkpoint_"))
    return [int(n.split("_")[-1]) for n in names]


def iterations(checkpoints) -> list[int]:
    return [c.iteration for c in checkpoints]


# ---- Checkpoint -----------------------------------------------------------------------------


def test_checkpoint_dir_is_derived_from_path(tmp_path):
    cp = make_checkpoint(tmp_path, 3)
    assert cp.dir == str(tmp_path / "checkpoint_000003")
    assert cp.storage == "persistent"
    nested = tmp_path / "checkpoint_000004" / "sub"
    nested.mkdir(parents=True)
    assert checkpoint_dir_of(str(nested / "w.pt")) == str(tmp_path / "checkpoint_000004")
    # A function trainable's checkpoint path is the directory itself.
    assert checkpoint_dir_of(str(tmp_path / "checkpoint_000004")) == str(
        tmp_path / "checkpoint_000004"
    )


def test_checkpoint_json_round_trip(tmp_path):
    import numpy as np

    cp = make_checkpoint(tmp_path, 2, loss=np.float32(0.5), info={"acc": np.int64(3)})
    data = cp.to_json()
    json.dumps(data)  # JSON-able: numpy scalars became numbers
    back = Checkpoint.from_json(json.loads(json.dumps(data)))
    assert (back.path, back.dir, back.iteration) == (cp.path, cp.dir, 2)
    assert back.result == {"training_iteration": 2, "loss": 0.5, "info": {"acc": 3}}


def test_memory_checkpoint_is_not_persisted():
    cp = Checkpoint.memory(b"abc", iteration=4, result={"training_iteration": 4})
    assert cp.storage == "memory" and cp.value == b"abc" and cp.path is None
    with pytest.raises(ValueError, match="not persisted"):
        cp.to_json()


def test_checkpoint_bad_input():
    with pytest.raises(ValueError, match="storage"):
        Checkpoint(path="/x/checkpoint_000001", storage="disk")
    with pytest.raises(ValueError, match="path"):
        Checkpoint(iteration=1)
    with pytest.raises(TypeError, match="result"):
        Checkpoint(path="/x/checkpoint_000001", result=[1])
    with pytest.raises(ValueError, match="path"):
        Checkpoint.from_json({"iteration": 1})


# ---- CheckpointManager: ranking and deletion ------------------------------------------------


def test_keep_all_by_default_deletes_nothing(tmp_path):
    manager = CheckpointManager()
    for i in range(1, 6):
        assert manager.on_checkpoint(make_checkpoint(tmp_path, i)) == []
    assert existing(tmp_path) == [1, 2, 3, 4, 5]
    assert iterations(manager.best_checkpoints()) == [1, 2, 3, 4, 5]
    assert manager.newest_checkpoint.iteration == 5


def test_keep_n_by_training_iteration_keeps_latest(tmp_path):
    manager = CheckpointManager(keep_checkpoints_num=2)
    for i in range(1, 5):
        manager.on_checkpoint(make_checkpoint(tmp_path, i))
    assert existing(tmp_path) == [3, 4]
    assert iterations(manager.checkpoints) == [3, 4]


def test_higher_score_is_better_without_prefix(tmp_path):
    manager = CheckpointManager(keep_checkpoints_num=2, checkpoint_score_attr="acc")
    for i, acc in enumerate([0.5, 0.9, 0.1, 0.7, 0.2], start=1):
        manager.on_checkpoint(make_checkpoint(tmp_path, i, acc=acc))
    # best two: 2 (0.9), 4 (0.7); 5 is kept only as the newest
    assert existing(tmp_path) == [2, 4, 5]
    assert iterations(manager.best_checkpoints()) == [4, 2]  # worst -> best
    assert manager.newest_checkpoint.iteration == 5


def test_min_prefix_ranks_lower_as_better(tmp_path):
    manager = CheckpointManager(keep_checkpoints_num=2, checkpoint_score_attr="min-loss")
    for i, loss in enumerate([3.0, 1.0, 4.0, 0.5, 2.0, 9.0], start=1):
        manager.on_checkpoint(make_checkpoint(tmp_path, i, loss=loss))
    assert existing(tmp_path) == [2, 4, 6]
    assert iterations(manager.best_checkpoints()) == [2, 4]
    assert manager.score_key == "loss" and manager.score_descending


def test_nested_score_attr(tmp_path):
    manager = CheckpointManager(keep_checkpoints_num=1, checkpoint_score_attr="min-val/loss")
    for i, loss in enumerate([2.0, 1.0, 3.0], start=1):
        manager.on_checkpoint(make_checkpoint(tmp_path, i, val={"loss": loss}))
    assert iterations(manager.best_checkpoints()) == [2]
    assert existing(tmp_path) == [2, 3]


def test_newest_is_never_deleted_until_a_newer_arrives(tmp_path):
    manager = CheckpointManager(keep_checkpoints_num=1, checkpoint_score_attr="acc")
    manager.on_checkpoint(make_checkpoint(tmp_path, 1, acc=0.9))
    deleted = manager.on_checkpoint(make_checkpoint(tmp_path, 2, acc=0.1))
    assert deleted == [] and existing(tmp_path) == [1, 2]  # N + 1 briefly
    deleted = manager.on_checkpoint(make_checkpoint(tmp_path, 3, acc=0.2))
    assert iterations(deleted) == [2]
    assert existing(tmp_path) == [1, 3]


def test_missing_score_logs_error_and_is_not_ranked(tmp_path, caplog):
    manager = CheckpointManager(keep_checkpoints_num=2, checkpoint_score_attr="acc")
    manager.on_checkpoint(make_checkpoint(tmp_path, 1, acc=0.5))
    with caplog.at_level(logging.ERROR, logger="tune_async.checkpoint"):
        manager.on_checkpoint(make_checkpoint(tmp_path, 2))  # no "acc"
    assert "acc" in caplog.text
    assert manager.newest_checkpoint.iteration == 2  # kept while newest
    assert iterations(manager.best_checkpoints()) == [1]
    assert existing(tmp_path) == [1, 2]
    manager.on_checkpoint(make_checkpoint(tmp_path, 3, acc=0.1))
    assert existing(tmp_path) == [1, 3]  # the unranked one goes once superseded


def test_missing_score_kept_for_good_when_keeping_all(tmp_path):
    manager = CheckpointManager(checkpoint_score_attr="acc")
    manager.on_checkpoint(make_checkpoint(tmp_path, 1))
    manager.on_checkpoint(make_checkpoint(tmp_path, 2, acc=0.3))
    assert existing(tmp_path) == [1, 2]
    assert iterations(manager.checkpoints) == [1, 2]


def test_memory_checkpoint_replaces_newest_memory_only(tmp_path):
    manager = CheckpointManager(keep_checkpoints_num=1)
    manager.on_checkpoint(make_checkpoint(tmp_path, 1))
    assert manager.on_checkpoint(Checkpoint.memory(b"a", 2)) == []
    manager.on_checkpoint(Checkpoint.memory(b"b", 3))
    assert manager.newest_memory_checkpoint.value == b"b"
    assert manager.newest_checkpoint.iteration == 1
    assert existing(tmp_path) == [1]


def test_resaving_into_the_same_dir_does_not_delete_it(tmp_path):
    manager = CheckpointManager(keep_checkpoints_num=1)
    manager.on_checkpoint(make_checkpoint(tmp_path, 1))
    manager.on_checkpoint(make_checkpoint(tmp_path, 2))
    # After a restore from 1 the trial saves checkpoint_000002 again.
    assert manager.on_checkpoint(make_checkpoint(tmp_path, 2)) == []
    assert existing(tmp_path) == [2]
    assert iterations(manager.checkpoints) == [2]


def test_custom_delete_fn_receives_checkpoints(tmp_path):
    deleted = []
    manager = CheckpointManager(keep_checkpoints_num=1, delete_fn=deleted.append)
    for i in range(1, 4):
        manager.on_checkpoint(make_checkpoint(tmp_path, i))
    assert iterations(deleted) == [1, 2]
    assert existing(tmp_path) == [1, 2, 3]  # the custom fn did not remove anything


def test_ties_keep_the_older_checkpoint(tmp_path):
    manager = CheckpointManager(keep_checkpoints_num=1, checkpoint_score_attr="acc")
    for i in range(1, 4):
        manager.on_checkpoint(make_checkpoint(tmp_path, i, acc=0.5))
    assert iterations(manager.best_checkpoints()) == [1]
    assert existing(tmp_path) == [1, 3]


def test_nan_score_ranks_last(tmp_path):
    manager = CheckpointManager(keep_checkpoints_num=1, checkpoint_score_attr="min-loss")
    manager.on_checkpoint(make_checkpoint(tmp_path, 1, loss=float("nan")))
    manager.on_checkpoint(make_checkpoint(tmp_path, 2, loss=5.0))
    manager.on_checkpoint(make_checkpoint(tmp_path, 3, loss=7.0))
    assert iterations(manager.best_checkpoints()) == [2]
    assert existing(tmp_path) == [2, 3]


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_keep_checkpoints_num_must_be_positive(bad):
    with pytest.raises(ValueError, match="keep_checkpoints_num"):
        CheckpointManager(keep_checkpoints_num=bad)


@pytest.mark.parametrize("bad", ["", "min-", 3])
def test_bad_score_attr(bad):
    with pytest.raises(ValueError, match="checkpoint_score_attr"):
        CheckpointManager(checkpoint_score_attr=bad)


def test_score_attr_none_means_training_iteration():
    assert CheckpointManager(checkpoint_score_attr=None).checkpoint_score_attr == (
        "training_iteration"
    )


def test_on_checkpoint_rejects_non_checkpoints():
    with pytest.raises(TypeError, match="Checkpoint"):
        CheckpointManager().on_checkpoint("/some/path")


# ---- CheckpointManager: state file and pickling ---------------------------------------------


def test_manager_json_round_trip(tmp_path):
    manager = CheckpointManager(keep_checkpoints_num=2, checkpoint_score_attr="min-loss")
    for i, loss in enumerate([3.0, 1.0, 2.0, 5.0], start=1):
        manager.on_checkpoint(make_checkpoint(tmp_path, i, loss=loss))
    manager.on_checkpoint(Checkpoint.memory(b"x", 5))
    data = json.loads(json.dumps(manager.to_json()))
    back = CheckpointManager.from_json(data)
    assert back.keep_checkpoints_num == 2 and back.checkpoint_score_attr == "min-loss"
    assert iterations(back.checkpoints) == [2, 3, 4]  # memory checkpoint left out
    assert back.newest_checkpoint.iteration == 4
    assert back.newest_memory_checkpoint is None
    assert iterations(back.best_checkpoints()) == [3, 2]
    assert existing(tmp_path) == [2, 3, 4]  # rebuilding deleted nothing
    # It goes on ranking: the old newest (4, worst) goes once 5 arrives.
    back.on_checkpoint(make_checkpoint(tmp_path, 5, loss=0.1))
    assert existing(tmp_path) == [2, 5]


def test_manager_from_plain_list(tmp_path):
    entries = [make_checkpoint(tmp_path, i).to_json() for i in (1, 2)]
    manager = CheckpointManager.from_json(entries, keep_checkpoints_num=1)
    assert manager.keep_checkpoints_num == 1
    assert manager.checkpoint_score_attr == "training_iteration"
    assert manager.newest_checkpoint.iteration == 2
    with pytest.raises(TypeError, match="from_json"):
        CheckpointManager.from_json("nope")


def test_manager_is_picklable(tmp_path):
    manager = CheckpointManager(keep_checkpoints_num=1)
    manager.on_checkpoint(make_checkpoint(tmp_path, 1))
    manager.on_checkpoint(make_checkpoint(tmp_path, 2))
    back = pickle.loads(pickle.dumps(manager))
    assert iterations(back.checkpoints) == [2]
    back.on_checkpoint(make_checkpoint(tmp_path, 3))
    assert existing(tmp_path) == [3]


# ---- checkpoints on disk --------------------------------------------------------------------


class Counter(Trainable):
    def setup(self, config):
        self.value = 0

    def step(self):
        self.value += 1
        return {"value": self.value}

    def save_checkpoint(self, checkpoint_dir):
        return {"value": self.value}

    def load_checkpoint(self, checkpoint):
        self.value = checkpoint["value"]


def test_find_checkpoints_on_disk_reads_trainable_checkpoints(tmp_path):
    info = TrialInfo(trial_id="t1", trial_name="Counter_t1", logdir=str(tmp_path))
    trainable = Counter(trial_info=info)
    paths = {}
    with open(tmp_path / "result.json", "w") as f:
        for _ in range(3):
            result = trainable.train()
            f.write(json.dumps({"training_iteration": result["training_iteration"], "v": 1}))
            f.write("\n")
            paths[result["training_iteration"]] = trainable.save()
    # Not checkpoints: a directory without metadata and a restore scratch dir.
    (tmp_path / "checkpoint_000009").mkdir()
    (tmp_path / "checkpoint_tmp123").mkdir()
    make_checkpoint(tmp_path / "checkpoint_tmp123", 7)
    found = find_checkpoints_on_disk(str(tmp_path))
    assert iterations(found) == [1, 2, 3]
    assert [c.path for c in found] == [paths[1], paths[2], paths[3]]
    assert found[0].dir == str(tmp_path / "checkpoint_000001")
    assert found[1].result == {"training_iteration": 2, "v": 1}
    # What the scan found restores.
    fresh = Counter(trial_info=info)
    fresh.restore(found[1].path)
    assert fresh.train()["training_iteration"] == 3


def test_find_checkpoints_on_disk_function_dirs(tmp_path):
    ckpt = tmp_path / "checkpoint_000010"
    ckpt.mkdir()
    with open(ckpt / ".tune_metadata", "wb") as f:
        pickle.dump({"iteration": 4}, f)
    found = find_checkpoints_on_disk(str(tmp_path), with_results=False)
    assert [(c.path, c.dir, c.iteration) for c in found] == [(str(ckpt), str(ckpt), 4)]
    assert found[0].result == {"training_iteration": 4}
    assert find_checkpoints_on_disk(str(tmp_path / "missing")) == []


# ---- truncating result files ----------------------------------------------------------------


def write_results(logdir, n: int, torn: bool = False) -> None:
    rows = [{"training_iteration": i, "loss": 1.0 / i, "note": "a,b"} for i in range(1, n + 1)]
    with open(os.path.join(str(logdir), "result.json"), "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
        if torn:
            f.write('{"training_iteration": 99, "lo')
    with open(os.path.join(str(logdir), "progress.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["training_iteration", "loss", "note"])
        for row in rows:
            writer.writerow([row["training_iteration"], row["loss"], row["note"]])
        if torn:
            f.write("99,0.1")


def read_json_iterations(logdir) -> list[int]:
    with open(os.path.join(str(logdir), "result.json")) as f:
        return [json.loads(line)["training_iteration"] for line in f]


def read_csv_rows(logdir) -> list[list[str]]:
    with open(os.path.join(str(logdir), "progress.csv"), newline="") as f:
        return list(csv.reader(f))


def test_truncate_cuts_to_max_iteration(tmp_path):
    write_results(tmp_path, 5)
    assert truncate_trial_results(str(tmp_path), 3) == 3
    assert read_json_iterations(tmp_path) == [1, 2, 3]
    rows = read_csv_rows(tmp_path)
    assert rows[0] == ["training_iteration", "loss", "note"]
    assert [r[0] for r in rows[1:]] == ["1", "2", "3"]
    assert rows[1][2] == "a,b"  # quoted fields survive


def test_truncate_drops_torn_last_line(tmp_path):
    write_results(tmp_path, 3, torn=True)
    assert truncate_trial_results(str(tmp_path), 100) == 3
    assert read_json_iterations(tmp_path) == [1, 2, 3]
    assert [r[0] for r in read_csv_rows(tmp_path)[1:]] == ["1", "2", "3"]
    with open(tmp_path / "result.json") as f:
        assert f.read().endswith("\n")


def test_truncate_drops_rows_without_iteration(tmp_path):
    with open(tmp_path / "result.json", "w") as f:
        f.write('{"training_iteration": 1}\n{"loss": 2}\nnot json\n{"training_iteration": 2}\n')
    assert truncate_trial_results(str(tmp_path), 5) == 2
    assert read_json_iterations(tmp_path) == [1, 2]
    assert not (tmp_path / "progress.csv").exists()  # a missing file stays missing


def test_truncate_to_zero_keeps_header(tmp_path):
    write_results(tmp_path, 2)
    assert truncate_trial_results(str(tmp_path), 0) == 0
    assert (tmp_path / "result.json").read_text() == ""
    assert read_csv_rows(tmp_path) == [["training_iteration", "loss", "note"]]


def test_truncate_is_atomic_and_idempotent(tmp_path):
    write_results(tmp_path, 4, torn=True)
    truncate_trial_results(str(tmp_path), 2)
    first = ((tmp_path / "result.json").read_bytes(), (tmp_path / "progress.csv").read_bytes())
    assert truncate_trial_results(str(tmp_path), 2) == 2
    second = ((tmp_path / "result.json").read_bytes(), (tmp_path / "progress.csv").read_bytes())
    assert first == second
    assert sorted(os.listdir(tmp_path)) == ["progress.csv", "result.json"]  # no temp files


def test_truncate_only_progress_csv(tmp_path):
    write_results(tmp_path, 3)
    os.remove(tmp_path / "result.json")
    assert truncate_trial_results(str(tmp_path), 1) == 1
    assert not (tmp_path / "result.json").exists()


def test_truncate_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="logdir"):
        truncate_trial_results(str(tmp_path / "missing"), 1)
    with pytest.raises(ValueError, match="max_iteration"):
        truncate_trial_results(str(tmp_path), -1)
    with pytest.raises(ValueError, match="max_iteration"):
        truncate_trial_results(str(tmp_path), 1.5)


def test_checkpoint_from_path(tmp_path):
    made = make_checkpoint(tmp_path, 6)
    cp = Checkpoint.from_path(made.path, {"training_iteration": 6, "loss": 1.0})
    assert (cp.path, cp.dir, cp.iteration) == (made.path, made.dir, 6)
    assert cp.result["loss"] == 1.0
    # Without a result the iteration comes from the checkpoint's metadata.
    assert Checkpoint.from_path(made.path).iteration == 6
    assert Checkpoint.from_path(made.path).result == {"training_iteration": 6}
    assert Checkpoint.from_path(made.path, iteration=2).iteration == 2


def test_truncate_in_place_keeps_open_appenders_working(tmp_path):
    # A logger that still holds result.json open in append mode writes after the cut.
    write_results(tmp_path, 4, torn=True)
    with open(tmp_path / "result.json", "a") as appender:
        truncate_trial_results(str(tmp_path), 2)
        appender.write(json.dumps({"training_iteration": 3}) + "\n")
    assert read_json_iterations(tmp_path) == [1, 2, 3]


def test_truncate_drops_a_line_torn_inside_a_multibyte_character(tmp_path):
    line = json.dumps({"training_iteration": 1, "name": "é"}, ensure_ascii=False) + "\n"
    torn = json.dumps({"training_iteration": 2, "name": "é"}, ensure_ascii=False).encode()
    (tmp_path / "result.json").write_bytes(line.encode() + torn[: torn.index("é".encode()) + 1])
    assert truncate_trial_results(str(tmp_path), 5) == 1
    assert (tmp_path / "result.json").read_bytes() == line.encode()


def test_truncate_rewrites_when_a_middle_row_goes(tmp_path):
    with open(tmp_path / "result.json", "w") as f:
        f.write('{"training_iteration": 1}\n{"training_iteration": 7}\n{"training_iteration": 2}\n')
    assert truncate_trial_results(str(tmp_path), 2) == 2
    assert read_json_iterations(tmp_path) == [1, 2]
    assert sorted(os.listdir(tmp_path)) == ["result.json"]


def test_default_delete_never_removes_a_non_checkpoint_dir(tmp_path, caplog):
    user_dir = tmp_path / "my_models"
    user_dir.mkdir()
    (user_dir / "model.pt").write_text("precious")
    manager = CheckpointManager(keep_checkpoints_num=1)
    manager.on_checkpoint(Checkpoint(path=str(user_dir / "model.pt"), iteration=1))
    assert manager.newest_checkpoint.dir == str(user_dir)
    with caplog.at_level(logging.WARNING, logger="tune_async.checkpoint"):
        manager.on_checkpoint(make_checkpoint(tmp_path, 2))
    assert (user_dir / "model.pt").read_text() == "precious"
    assert "not a checkpoint directory" in caplog.text
