"""Trial directories are named on the loop and made off it (tune_async.trial_dirs).

Through ``tune.run``/``tune.arun`` with the in-process executor: every trial gets a
directory of its own holding the 1.x files, names stay unique (suffixed as 1.x does)
against directories already on disk, a user callback can write into the directory as
the trial starts, and with only the built-in callbacks the loop makes no directory
after the first few trials.
"""

from __future__ import annotations

import json
import os
import threading

import pytest

import tune_async as tune
from tune_async.trial import Trial
from tune_async.trial_dirs import TrialDirs


def step_twice(config):
    for step in range(2):
        tune.report(step=step, i=config["i"])


def params_of(logdir):
    with open(os.path.join(logdir, "params.json")) as f:
        return json.load(f)


class WritesAtStart(tune.Callback):
    def on_trial_start(self, iteration, trials, trial, **info):
        with open(os.path.join(trial.logdir, "started.txt"), "w") as f:
            f.write(trial.trial_id)


def test_a_user_callback_writes_into_the_trial_dir_as_the_trial_starts(tmp_path):
    analysis = tune.run(step_twice, config={"i": tune.grid_search([0, 1, 2])}, verbose=0,
                        local_dir=str(tmp_path), callbacks=[WritesAtStart()],
                        trial_executor=tune.LocalExecutor())
    for trial in analysis.trials:
        with open(os.path.join(trial.logdir, "started.txt")) as f:
            assert f.read() == trial.trial_id
        assert {"params.json", "result.json", "progress.csv"} <= set(os.listdir(trial.logdir))


def test_same_dirnames_get_suffixes_and_never_reuse_a_directory_on_disk(tmp_path):
    experiment = tmp_path / "exp"
    (experiment / "same").mkdir(parents=True)  # a directory of an earlier run
    (experiment / "same" / "earlier.txt").write_text("keep")
    analysis = tune.run(step_twice, name="exp", config={"i": tune.grid_search(list(range(6)))},
                        verbose=0, local_dir=str(tmp_path), trial_executor=tune.LocalExecutor(),
                        trial_dirname_creator=lambda trial: "same")
    dirs = [t.logdir for t in analysis.trials]
    assert len(set(dirs)) == 6
    assert all(os.path.basename(d).startswith("same_") for d in dirs)
    assert [params_of(t.logdir)["i"] for t in analysis.trials] == [t.config["i"]
                                                                   for t in analysis.trials]
    assert os.listdir(experiment / "same") == ["earlier.txt"]


@pytest.mark.asyncio
async def test_with_the_built_in_callbacks_the_loop_makes_no_trial_directory(tmp_path,
                                                                           monkeypatch):
    loop_thread = threading.get_ident()
    experiment = str(tmp_path / "exp")
    made_on_loop = []
    real_mkdir, real_makedirs = os.mkdir, os.makedirs

    def record(path):
        if os.path.dirname(os.path.abspath(path)) == experiment and (
                threading.get_ident() == loop_thread):
            made_on_loop.append(path)

    def mkdir(path, *args, **kwargs):
        record(path)
        return real_mkdir(path, *args, **kwargs)

    def makedirs(path, *args, **kwargs):
        record(path)
        return real_makedirs(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "makedirs", makedirs)
    analysis = await tune.arun(step_twice, name="exp", config={"i": tune.grid_search(
        list(range(8)))}, verbose=0, local_dir=str(tmp_path), resources_per_trial={"cpu": 1},
        trial_executor=tune.LocalExecutor(max_concurrent=1))
    assert len({t.logdir for t in analysis.trials}) == 8
    for trial in analysis.trials:
        assert params_of(trial.logdir)["i"] == trial.config["i"]
        assert {"result.json", "progress.csv", "params.pkl"} <= set(os.listdir(trial.logdir))
    # The run made the experiment directory: no listing to wait for, none on the loop.
    assert made_on_loop == []


def test_names_known_from_the_listing_are_skipped_and_dirs_made_by_the_writer(tmp_path):
    listings, wakes = [], []
    dirs = TrialDirs(on_loop=False, list_in_background=lambda parent, done: listings.append(done),
                     wake_writer=lambda: wakes.append(1))
    first = Trial("f", local_dir=str(tmp_path), custom_dirname="a")
    dirs.assign(first)  # parent not listed yet: made at once
    assert os.path.isdir(first.logdir) and os.path.basename(first.logdir) == "a"
    os.mkdir(tmp_path / "b")
    listings.pop()(["a", "b"])  # the listing arrives
    second = Trial("f", local_dir=str(tmp_path), custom_dirname="b")
    third = Trial("f", local_dir=str(tmp_path), custom_dirname="c")
    dirs.assign(second)
    dirs.assign(third)
    assert os.path.basename(second.logdir).startswith("b_")
    assert os.path.basename(third.logdir) == "c"
    assert not os.path.exists(second.logdir) and not os.path.exists(third.logdir)
    assert len(wakes) == 2
    dirs.make_pending()  # the writer's thread
    assert os.path.isdir(second.logdir) and os.path.isdir(third.logdir)
    with pytest.raises(ValueError, match="plain directory name"):
        dirs.assign(Trial("f", local_dir=str(tmp_path), custom_dirname="x/y"))


def test_a_directory_known_empty_is_never_listed_and_its_first_trial_queued(tmp_path):
    listings, wakes = [], []
    dirs = TrialDirs(on_loop=False, list_in_background=lambda parent, done: listings.append(done),
                     wake_writer=lambda: wakes.append(1), empty=[str(tmp_path)])
    first = Trial("f", local_dir=str(tmp_path), custom_dirname="a")
    second = Trial("f", local_dir=str(tmp_path), custom_dirname="a")
    dirs.assign(first)
    dirs.assign(second)
    assert listings == [] and len(wakes) == 2
    assert not os.path.exists(first.logdir)  # the writer's thread makes it
    assert os.path.basename(first.logdir) == "a" and os.path.basename(second.logdir) != "a"
    dirs.make_pending()
    assert os.path.isdir(first.logdir) and os.path.isdir(second.logdir)


def test_each_make_pending_makes_the_directories_queued_when_it_began(tmp_path, monkeypatch):
    import tune_async.trial_dirs as trial_dirs_module

    listings = []
    dirs = TrialDirs(on_loop=False, list_in_background=lambda parent, done: listings.append(done),
                     wake_writer=lambda: None)
    dirs.assign(Trial("f", local_dir=str(tmp_path), custom_dirname="first"))
    listings.pop()(["first"])
    queued = [Trial("f", local_dir=str(tmp_path), custom_dirname=f"q{i}") for i in range(3)]
    for trial in queued:
        dirs.assign(trial)
    late = Trial("f", local_dir=str(tmp_path), custom_dirname="late")
    real_make_dir = trial_dirs_module._make_dir

    def make_dir_while_trials_keep_starting(path):
        real_make_dir(path)
        if late.logdir is None:  # a trial starts while the writer makes directories
            dirs.assign(late)

    monkeypatch.setattr(trial_dirs_module, "_make_dir", make_dir_while_trials_keep_starting)
    dirs.make_pending()
    assert all(os.path.isdir(t.logdir) for t in queued)
    assert not os.path.exists(late.logdir)  # next time: the writer goes on to its state
    dirs.make_pending()
    assert os.path.isdir(late.logdir)
