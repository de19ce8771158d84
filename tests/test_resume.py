"""Experiment state and ``resume=`` through the public API (issue #3), no Ray.

Trainables append one line per call to a log file (``<trial_id> <checkpoint_dir or ->``),
so a test can tell which trials ran again and from where.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import os
import time

import anyio
import pytest

import tune_async as tune
from tests.scripted_executor import ScriptedExecutor
from tune_async.suggest import Searcher

STEPS = 8


# ---- helpers ------------------------------------------------------------------------------


def append_line(path, text):
    with open(path, "a") as f:
        f.write(text + "\n")


def calls(log):
    """``{trial_id: [checkpoint_dir or "-", ...]}`` from a trainable's call log."""
    out: dict[str, list[str]] = {}
    if os.path.exists(log):
        with open(log) as f:
            for line in f:
                trial_id, ckpt = line.split()
                out.setdefault(trial_id, []).append(ckpt)
    return out


def result_lines(logdir):
    with open(os.path.join(logdir, "result.json")) as f:
        return [json.loads(line) for line in f if line.strip()]


def state_files(exp_dir):
    return sorted(n for n in os.listdir(exp_dir) if n.startswith("experiment_state-"))


def load_newest_state(exp_dir):
    """What a resume would see: the newest snapshot with its journal replayed."""
    from tune_async.state import load_state

    return load_state(os.path.join(exp_dir, state_files(exp_dir)[-1]))


def snapshot_files(directory):
    """``{relative path: (mtime_ns, bytes)}`` of every file under ``directory``."""
    out = {}
    for root, _dirs, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, directory)] = (os.stat(path).st_mtime_ns, f.read())
    return out


def stepper(config, checkpoint_dir=None):
    """Reports ``step`` 1..STEPS (checkpoint every 2 steps); may fail once or pause."""
    start = 0
    if checkpoint_dir:
        with open(os.path.join(checkpoint_dir, "state.json")) as f:
            start = json.load(f)["step"]
    append_line(config["log"], f"{tune.get_trial_id()} {checkpoint_dir or '-'}")
    for step in range(start + 1, STEPS + 1):
        if config.get("fail") and step == 3 and not os.path.exists(config["marker"]):
            raise RuntimeError("fails until the marker exists")
        time.sleep(config.get("pause", 0))
        if step % 2 == 0:
            with tune.checkpoint_dir(step=step) as d:
                with open(os.path.join(d, "state.json"), "w") as f:
                    json.dump({"step": step}, f)
        tune.report(step=step, score=config.get("x", 0) * step)


async def arun(**kwargs):
    kwargs.setdefault("verbose", 0)
    kwargs.setdefault("trial_executor", ScriptedExecutor(slots=2))
    return await tune.arun(stepper, **kwargs)


class CancelPoint(tune.Callback):
    """Sets ``ready`` once ``finished`` trials completed and another one checkpointed."""

    def __init__(self, finished=2):
        self.finished = finished
        self.completed: set[str] = set()
        self.ready = asyncio.Event()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.completed.add(trial.trial_id)

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        if len(self.completed) >= self.finished and trial.trial_id not in self.completed:
            self.ready.set()


async def cancel_midway(**kwargs):
    """Start arun, cancel it once 2 trials finished and a running one checkpointed."""
    point = CancelPoint()
    task = asyncio.create_task(arun(callbacks=[point], **kwargs))
    waiter = asyncio.create_task(point.ready.wait())
    done, _ = await asyncio.wait({task, waiter}, timeout=20,
                                 return_when=asyncio.FIRST_COMPLETED)
    assert waiter in done, "the experiment never reached the cancel point"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return point


def check_complete_results(trial):
    lines = result_lines(trial.logdir)
    assert [r["training_iteration"] for r in lines] == list(range(1, STEPS + 1))
    assert [r["step"] for r in lines] == list(range(1, STEPS + 1))


# ---- the state file ---------------------------------------------------------------------------


def test_state_file_is_written_atomically_and_is_valid_json(results_dir, tmp_path, monkeypatch):
    exp_dir = os.path.join(results_dir, "atomic")
    renames = []
    real_replace = os.replace

    def recording_replace(src, dst, *args, **kwargs):
        src, dst = os.fspath(src), os.fspath(dst)
        if os.path.basename(dst).startswith("experiment_state-"):
            with open(src) as f:
                json.load(f)  # the full text is in place before the rename
            renames.append((src, dst))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", recording_replace)
    analysis = tune.run(stepper, config={"log": str(tmp_path / "calls.log"),
                                         "x": tune.grid_search([1, 2, 3])},
                        name="atomic", local_dir=results_dir, verbose=0,
                        trial_executor=ScriptedExecutor(slots=2))
    assert renames, "the state file was not written through a rename"
    for src, dst in renames:
        assert os.path.dirname(src) == exp_dir and src != dst
    [name] = state_files(exp_dir)
    assert {os.path.basename(dst) for _, dst in renames} == {name}
    # Nothing but the trial directories, the state file and its (now empty) journal.
    from tune_async.state import journal_path

    journal = journal_path(os.path.join(exp_dir, name))
    trial_dirs = {os.path.basename(t.logdir) for t in analysis.trials}
    assert set(os.listdir(exp_dir)) == trial_dirs | {name, os.path.basename(journal)}
    assert os.path.getsize(journal) == 0  # the final snapshot holds everything
    state = load_newest_state(exp_dir)
    assert sorted(t["trial_id"] for t in state["checkpoints"]) == sorted(
        t.trial_id for t in analysis.trials)
    assert {t["status"] for t in state["checkpoints"]} == {"TERMINATED"}


def test_state_on_disk_follows_finished_trials_and_checkpoints(results_dir, tmp_path):
    """A crash right after a trial finished or checkpointed must not lose that fact.

    The state is written off the loop, moments after the step that changed it: the async
    hooks below wait (without blocking the loop) until the files say so.
    """
    exp_dir = os.path.join(results_dir, "fresh")
    seen = []

    async def eventually(read, want, timeout_s=10):
        with anyio.move_on_after(timeout_s):
            while read() != want:
                await anyio.sleep(0.005)
        return read()

    def finished_others(trial):
        if not state_files(exp_dir):
            return None
        state = load_newest_state(exp_dir)["checkpoints"]
        return sorted(t["status"] for t in state
                      if t["trial_id"] != trial.trial_id and t["status"] != "PENDING")

    def checkpoints_of(trial):
        if not state_files(exp_dir):
            return None
        state = load_newest_state(exp_dir)["checkpoints"]
        mine = next((t for t in state if t["trial_id"] == trial.trial_id), None)
        return [c["iteration"] for c in mine["checkpoints"]] if mine else None

    class Inspector(tune.Callback):
        async def on_trial_start(self, iteration, trials, trial, **info):
            started = sum(t.status != "PENDING" for t in trials) - 1
            seen.append(await eventually(lambda: finished_others(trial),
                                         ["TERMINATED"] * started))

        async def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
            # Every earlier checkpoint of this trial is on record.
            want = list(range(2, checkpoint.iteration, 2))
            assert await eventually(lambda: checkpoints_of(trial), want) == want

    tune.run(stepper, config={"log": str(tmp_path / "calls.log"),
                              "x": tune.grid_search([1, 2, 3])},
             name="fresh", local_dir=results_dir, verbose=0, callbacks=[Inspector()],
             trial_executor=ScriptedExecutor(slots=1))
    assert seen == [[], ["TERMINATED"], ["TERMINATED", "TERMINATED"]]


# ---- resume=True -----------------------------------------------------------------------------


async def test_resume_after_cancelled_arun_finishes_the_experiment(results_dir, tmp_path,
                                                                   monkeypatch):
    # One pending trial at a time: the searcher must continue after resume, not the
    # state file alone.
    monkeypatch.setenv("TUNE_MAX_PENDING_TRIALS_PG", "1")
    log = str(tmp_path / "calls.log")
    # At the cancel: 2 finished, 2 running, 1 pending, and maybe one suggestion made but
    # not yet taken (kept as pending); a loaded machine lets one more trial finish
    # before the cancel lands. 8 leaves the searcher trials to make after the resume.
    samples = 8
    kwargs = dict(config={"x": tune.uniform(0, 1), "log": log, "pause": 0.005},
                  num_samples=samples, name="exp", local_dir=results_dir)
    point = await cancel_midway(**kwargs)
    exp_dir = os.path.join(results_dir, "exp")
    before = {t["trial_id"]: t for t in load_newest_state(exp_dir)["checkpoints"]}
    finished = {tid for tid, t in before.items() if t["status"] == "TERMINATED"}
    assert point.completed <= set(before)
    assert len(before) < samples  # the searcher had not made every trial yet
    finished_files = {tid: snapshot_files(before[tid]["logdir"]) for tid in point.completed}
    started_before = calls(log)

    analysis = await arun(resume=True, **kwargs)

    trials = analysis.trials
    assert len(trials) == samples
    assert len({t.trial_id for t in trials}) == samples
    assert {t.status for t in trials} == {"TERMINATED"}
    assert len({t.config["x"] for t in trials}) == samples
    for trial in trials:  # configs made before the cancel are kept
        if trial.trial_id in before:
            assert trial.config == before[trial.trial_id]["config"]
    runs = calls(log)
    for trial in trials:
        check_complete_results(trial)
        tid = trial.trial_id
        if tid in point.completed:  # finished: never run again, files untouched
            assert runs[tid] == started_before[tid] == ["-"]
            assert snapshot_files(trial.logdir) == finished_files[tid]
        elif tid in started_before:  # interrupted: restarted from a checkpoint
            assert len(runs[tid]) == 2
            if before[tid]["checkpoints"]:
                newest = before[tid]["checkpoints"][-1]["path"]
                assert runs[tid][1] == newest
        else:  # pending or not yet suggested: started once
            assert runs[tid] == ["-"]
    # The trials that were running at the cancel include one that had checkpointed.
    interrupted = [tid for tid in started_before if tid not in point.completed]
    assert any(runs[tid][1] != "-" for tid in interrupted)
    assert finished >= point.completed
    loaded = tune.ExperimentAnalysis(exp_dir)
    assert sorted(t.trial_id for t in loaded.trials) == sorted(t.trial_id for t in trials)
    assert {t.status for t in loaded.trials} == {"TERMINATED"}


async def test_resume_with_a_searcher_continues_its_suggestions(results_dir, tmp_path):
    class CountingSearcher(Searcher):
        def __init__(self):
            super().__init__(metric="score", mode="max")
            self.made = 0

        def suggest(self, trial_id):
            self.made += 1
            return {"x": self.made}

        def on_trial_complete(self, trial_id, result=None, error=False):
            pass

        def get_state(self):
            return {"made": self.made}

        def set_state(self, state):
            self.made = state["made"]

    log = str(tmp_path / "calls.log")
    kwargs = dict(config={"log": log, "pause": 0.005}, num_samples=6, name="searched",
                  local_dir=results_dir)
    await cancel_midway(search_alg=CountingSearcher(), **kwargs)
    analysis = await arun(resume=True, search_alg=CountingSearcher(), **kwargs)
    assert sorted(t.config["x"] for t in analysis.trials) == [1, 2, 3, 4, 5, 6]
    assert {t.status for t in analysis.trials} == {"TERMINATED"}
    for trial in analysis.trials:
        check_complete_results(trial)


async def test_resume_of_a_finished_experiment_runs_nothing(results_dir, tmp_path):
    log = str(tmp_path / "calls.log")
    kwargs = dict(config={"log": log, "x": tune.grid_search([1, 2])}, name="done",
                  local_dir=results_dir)
    first = await arun(**kwargs)
    second = await arun(resume=True, **kwargs)
    assert sorted(t.trial_id for t in second.trials) == sorted(t.trial_id for t in first.trials)
    assert {t.status for t in second.trials} == {"TERMINATED"}
    assert all(len(v) == 1 for v in calls(log).values()) and len(calls(log)) == 2


@pytest.mark.parametrize("resume", [True, "LOCAL"])
async def test_resume_continues_an_interrupted_trial_from_its_checkpoint(
    results_dir, tmp_path, resume
):
    log = str(tmp_path / "calls.log")
    kwargs = dict(config={"log": log, "x": tune.grid_search([1, 2, 3, 4]), "pause": 0.005},
                  name="one", local_dir=results_dir)
    point = await cancel_midway(**kwargs)
    before = load_newest_state(os.path.join(results_dir, "one"))["checkpoints"]
    # Each trial that had started and not finished restarts from its newest checkpoint
    # (from scratch when it had none); the others run once.
    expected = {}
    for t in before:
        if t["trial_id"] in point.completed:
            expected[t["trial_id"]] = ["-"]
        elif t["trial_id"] in calls(log):
            expected[t["trial_id"]] = ["-", t["checkpoints"][-1]["path"] if t["checkpoints"]
                                       else "-"]
        else:
            expected[t["trial_id"]] = ["-"]
    analysis = await arun(resume=resume, **kwargs)
    assert len(analysis.trials) == 4
    assert {t.status for t in analysis.trials} == {"TERMINATED"}
    for trial in analysis.trials:
        check_complete_results(trial)
    assert calls(log) == expected
    assert any(os.path.basename(runs[-1]).startswith("checkpoint_")
               for runs in expected.values())


def test_resume_after_ctrl_c_finishes_the_experiment(results_dir, tmp_path):
    """The first Ctrl+C stops tune.run gracefully; resume=True then finishes the rest."""
    import signal

    class CtrlC(CancelPoint):
        def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
            super().on_checkpoint(iteration, trials, trial, checkpoint, **info)
            if self.ready.is_set() and not getattr(self, "sent", False):
                self.sent = True
                os.kill(os.getpid(), signal.SIGINT)

    log = str(tmp_path / "calls.log")
    kwargs = dict(config={"log": log, "x": tune.grid_search([1, 2, 3, 4, 5]), "pause": 0.005},
                  name="ctrlc", local_dir=results_dir, verbose=0)
    point = CtrlC()
    tune.run(stepper, callbacks=[point], trial_executor=ScriptedExecutor(slots=2), **kwargs)
    assert getattr(point, "sent", False)
    started_before = calls(log)
    assert len(started_before) < 5  # the fifth trial had not started yet
    analysis = tune.run(stepper, resume=True, trial_executor=ScriptedExecutor(slots=2),
                        **kwargs)
    assert len(analysis.trials) == 5
    assert {t.status for t in analysis.trials} == {"TERMINATED"}
    runs = calls(log)
    for trial in analysis.trials:
        check_complete_results(trial)
        if trial.trial_id in point.completed:
            assert runs[trial.trial_id] == ["-"]


class Steps(tune.Trainable):
    """The class API counterpart of ``stepper``."""

    def setup(self, config):
        self.count = 0

    def step(self):
        time.sleep(self.config.get("pause", 0))
        self.count += 1
        return {"step": self.count, "done": self.count >= STEPS}

    def save_checkpoint(self, checkpoint_dir):
        return {"count": self.count}

    def load_checkpoint(self, checkpoint):
        self.count = checkpoint["count"]
        append_line(self.config["log"], f"{self.trial_id} {self.count}")


async def test_resume_class_trainable_keeps_its_checkpoint_policy(results_dir, tmp_path):
    log = str(tmp_path / "loads.log")
    kwargs = dict(config={"log": log, "x": tune.grid_search([1, 2, 3, 4]), "pause": 0.005},
                  name="classy", local_dir=results_dir, checkpoint_freq=2,
                  keep_checkpoints_num=1, verbose=0)
    point = CancelPoint()
    task = asyncio.create_task(tune.arun(Steps, callbacks=[point],
                                         trial_executor=ScriptedExecutor(slots=2), **kwargs))
    waiter = asyncio.create_task(point.ready.wait())
    done, _ = await asyncio.wait({task, waiter}, timeout=20,
                                 return_when=asyncio.FIRST_COMPLETED)
    assert waiter in done
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    restored = []

    class Restores(tune.Callback):
        def on_trial_restore(self, iteration, trials, trial, **info):
            restored.append(trial.trial_id)

    analysis = await tune.arun(Steps, resume=True, callbacks=[Restores()],
                               trial_executor=ScriptedExecutor(slots=2), **kwargs)
    assert {t.status for t in analysis.trials} == {"TERMINATED"}
    loads = calls(log)
    assert restored and sorted(restored) == sorted(loads)
    for trial in analysis.trials:
        check_complete_results(trial)
        # keep_checkpoints_num=1 still holds after the resume: only the newest is left.
        names = sorted(n for n in os.listdir(trial.logdir) if n.startswith("checkpoint_"))
        assert names == [f"checkpoint_{STEPS:06d}"]


async def test_resume_true_keeps_errored_trials_as_they_are(results_dir, tmp_path):
    log = str(tmp_path / "calls.log")
    kwargs = dict(config={"log": log, "marker": str(tmp_path / "fixed"),
                          "fail": tune.grid_search([False, True])},
                  name="kept_errors", local_dir=results_dir, raise_on_failed_trial=False)
    first = await arun(**kwargs)
    (tmp_path / "fixed").touch()
    second = await arun(resume=True, **kwargs)
    assert {t.trial_id: t.status for t in second.trials} == {
        t.trial_id: t.status for t in first.trials}
    assert all(len(runs) == 1 for runs in calls(log).values())
    with pytest.raises(tune.TuneError, match="Trials did not complete"):
        await arun(resume=True, **dict(kwargs, raise_on_failed_trial=True))


# ---- resume="ERRORED_ONLY" -------------------------------------------------------------------


async def test_errored_only_reruns_only_the_errored_trials(results_dir, tmp_path):
    log = str(tmp_path / "calls.log")
    marker = tmp_path / "fixed"
    kwargs = dict(config={"log": log, "marker": str(marker),
                          "fail": tune.grid_search([False, True, False])},
                  name="errors", local_dir=results_dir, raise_on_failed_trial=False)
    first = await arun(**kwargs)
    statuses = {t.trial_id: t.status for t in first.trials}
    assert sorted(statuses.values()) == ["ERROR", "TERMINATED", "TERMINATED"]
    errored = next(t for t in first.trials if t.status == "ERROR")
    exp_dir = os.path.join(results_dir, "errors")
    files_before = {t.trial_id: snapshot_files(t.logdir) for t in first.trials}

    marker.touch()
    second = await arun(resume="ERRORED_ONLY", **kwargs)

    assert len(second.trials) == 3
    assert {t.status for t in second.trials} == {"TERMINATED"}
    kept = {t.trial_id for t in first.trials if t.status == "TERMINATED"}
    new = [t for t in second.trials if t.trial_id not in statuses]
    assert {t.trial_id for t in second.trials} == kept | {new[0].trial_id}
    assert len(new) == 1
    rerun = new[0]
    assert rerun.config == errored.config
    assert rerun.logdir != errored.logdir and os.path.dirname(rerun.logdir) == exp_dir
    check_complete_results(rerun)
    runs = calls(log)
    assert runs[rerun.trial_id] == ["-"]  # from scratch, not from a checkpoint
    for tid in kept:
        assert runs[tid] == ["-"]
    # Every old trial's artifacts are untouched, the errored one's included.
    for trial in first.trials:
        assert snapshot_files(trial.logdir) == files_before[trial.trial_id]


# ---- resume="PROMPT" -----------------------------------------------------------------------


@pytest.mark.parametrize("answer, resumes", [("y", True), ("n", False)])
async def test_prompt_asks_on_stdin(results_dir, tmp_path, monkeypatch, answer, resumes):
    log = str(tmp_path / "calls.log")
    kwargs = dict(config={"log": log}, name="prompted", local_dir=results_dir)
    first = await arun(**kwargs)
    questions = []

    def fake_input(prompt=""):
        questions.append(prompt)
        return answer

    monkeypatch.setattr(builtins, "input", fake_input)
    second = await arun(resume="PROMPT", **kwargs)
    assert len(questions) == 1 and os.path.join(results_dir, "prompted") in questions[0]
    same = second.trials[0].trial_id == first.trials[0].trial_id
    assert same is resumes
    assert len(calls(log)) == (1 if resumes else 2)


# ---- bad or missing state --------------------------------------------------------------------


@pytest.mark.parametrize("resume", [True, "LOCAL", "PROMPT", "ERRORED_ONLY"])
def test_resume_without_state_is_a_value_error(results_dir, tmp_path, resume, monkeypatch):
    monkeypatch.setattr(builtins, "input", lambda prompt="": "y")
    executor = ScriptedExecutor()
    with pytest.raises(ValueError, match="resume"):
        tune.run(stepper, config={"log": str(tmp_path / "calls.log")}, name="nothing",
                 local_dir=results_dir, resume=resume, verbose=0, trial_executor=executor)
    assert executor.started == []


def test_resume_with_a_directory_but_no_state_is_a_value_error(results_dir, tmp_path):
    os.makedirs(os.path.join(results_dir, "stateless", "some_trial"))
    with pytest.raises(ValueError, match="resume"):
        tune.run(stepper, config={"log": str(tmp_path / "calls.log")}, name="stateless",
                 local_dir=results_dir, resume=True, verbose=0,
                 trial_executor=ScriptedExecutor())


def test_resume_remote_without_an_upload_dir_is_a_value_error(results_dir, tmp_path):
    with pytest.raises(ValueError, match="resume from remote without remote directory"):
        tune.run(stepper, config={"log": str(tmp_path / "calls.log")}, name="remote",
                 local_dir=results_dir, resume="REMOTE", verbose=0,
                 trial_executor=ScriptedExecutor())


def test_unknown_resume_value_is_a_value_error(results_dir, tmp_path):
    with pytest.raises(ValueError, match="resume"):
        tune.run(stepper, config={"log": str(tmp_path / "calls.log")}, name="bad",
                 local_dir=results_dir, resume="local", verbose=0,
                 trial_executor=ScriptedExecutor())


async def test_resume_false_with_an_existing_experiment_starts_fresh(results_dir, tmp_path):
    log = str(tmp_path / "calls.log")
    kwargs = dict(config={"log": log, "x": tune.grid_search([1, 2])}, name="again",
                  local_dir=results_dir)
    first = await arun(**kwargs)
    second = await arun(resume=False, **kwargs)
    first_ids = {t.trial_id for t in first.trials}
    second_ids = {t.trial_id for t in second.trials}
    assert len(second_ids) == 2 and not first_ids & second_ids
    assert {t.status for t in second.trials} == {"TERMINATED"}
    assert len(calls(log)) == 4
    for trial in second.trials:
        check_complete_results(trial)
    for trial in first.trials:  # the first run's directories are still there
        check_complete_results(trial)
    loaded = tune.ExperimentAnalysis(os.path.join(results_dir, "again"))
    assert {t.trial_id for t in loaded.trials} == second_ids


def test_finished_trials_are_journaled_not_each_rewriting_the_state(results_dir, monkeypatch):
    """Durability per finished trial costs one journal line, not a full O(trials) snapshot."""
    import tune_async.state as state_module
    from tune_async.state import Journal

    snapshots, journal_lines = [], []
    real_write, real_append = state_module.write_snapshot, Journal.append

    def counting_write(path, text):
        snapshots.append(path)
        real_write(path, text)

    def counting_append(self, lines):
        journal_lines.extend(seq for seq, _ in lines)
        real_append(self, lines)

    monkeypatch.setattr(state_module, "write_snapshot", counting_write)
    monkeypatch.setattr(Journal, "append", counting_append)

    def quick(config):
        tune.report(score=config["x"])

    analysis = tune.run(quick, config={"x": tune.uniform(0, 1)}, num_samples=200, verbose=0,
                        name="many", local_dir=results_dir,
                        trial_executor=ScriptedExecutor(slots=2))
    assert len(analysis.trials) == 200
    assert len(journal_lines) >= 190  # (nearly) every finished trial, at once
    assert len(snapshots) < 40  # periodic snapshots, not one per finished trial
