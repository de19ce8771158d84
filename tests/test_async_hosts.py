"""Many async trials share one Ray actor's event loop (``trials_per_worker``, issue #11).

Through the public API on the session's Ray instance: trials are packed into few host
actors and run there at the same time, yet each keeps the semantics of a trial of its
own: exact steps, its own stop, its own failure, its own checkpoints, and cancelling
``arun`` leaves no host behind.
"""

from __future__ import annotations

import asyncio
import os
import time

import anyio
import pytest

import tune_async as tune

pytestmark = pytest.mark.ray

PER_WORKER = 10


def run_args(tmp_path, **extra):
    args = dict(local_dir=str(tmp_path), verbose=0, trials_per_worker=PER_WORKER,
                resources_per_trial={"cpu": 0.02})
    args.update(extra)
    return args


def marker(directory, name):
    return os.path.join(str(directory), name)


def live_hosts():
    import ray

    return [a for a in ray._private.state.actors().values()
            if a["State"] != "DEAD" and a["ActorClassName"] in ("TrialHost", "TrialActor")]


async def io_trainable(config):
    """Awaits (network I/O stand-in) and reports when it started and reported."""
    started = time.time()
    for step in range(1, config.get("steps", 100) + 1):
        with open(marker(config["dir"], f"steps-{config['i']}"), "a") as f:
            f.write(f"{step}\n")
        if config.get("fail_at") == step:
            raise ValueError(f"trial {config['i']} fails at {step}")
        await asyncio.sleep(config.get("sleep", 0.01))
        await tune.areport(step=step, started=started, at=time.time())


def executed_steps(directory, i):
    with open(marker(directory, f"steps-{i}")) as f:
        return [int(line) for line in f]


def peak_overlap(intervals):
    """The most intervals open at one instant."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    peak = current = 0
    for _, delta in edges:
        current += delta
        peak = max(peak, current)
    return peak


def test_fifty_trials_run_together_in_few_actors(tmp_path):
    analysis = tune.run(io_trainable, num_samples=50, stop={"training_iteration": 4},
                        config={"i": tune.sample_from(lambda _: os.urandom(4).hex()),
                                "dir": str(tmp_path), "sleep": 0.3},
                        **run_args(tmp_path))
    assert all(t.status == "TERMINATED" for t in analysis.trials)
    df = analysis.dataframe()
    pids = set(df["pid"])
    assert len(pids) <= 50 // PER_WORKER, f"50 trials ran in {len(pids)} processes"
    # Each trial ran from its first await to its last result: they overlapped.
    spans = [(t.last_result["started"], t.last_result["at"]) for t in analysis.trials]
    assert peak_overlap(spans) >= 2 * PER_WORKER, "trials of several hosts ran at once"
    by_pid = {}
    for t in analysis.trials:
        by_pid.setdefault(t.last_result["pid"], []).append(
            (t.last_result["started"], t.last_result["at"]))
    assert max(peak_overlap(s) for s in by_pid.values()) >= PER_WORKER // 2, (
        "trials of one host ran at the same time on its loop")


def test_trials_starting_together_put_their_class_into_the_object_store_once(
        tmp_path, monkeypatch):
    """Fifty trials start at once: the first puts the trainable class, the others wait
    for it (each put serializes the class holding the GIL: a thousand of them held the
    driver's loop back for tens of milliseconds at a time)."""
    import ray

    puts = []
    real_put = ray.put

    def counting_put(value, *args, **kwargs):
        puts.append(value)
        return real_put(value, *args, **kwargs)

    monkeypatch.setattr(ray, "put", counting_put)
    analysis = tune.run(io_trainable, num_samples=50, stop={"training_iteration": 2},
                        config={"i": tune.sample_from(lambda _: os.urandom(4).hex()),
                                "dir": str(tmp_path)},
                        **run_args(tmp_path))
    assert all(t.status == "TERMINATED" for t in analysis.trials)
    assert len([v for v in puts if isinstance(v, type)]) == 1, puts


def test_exact_steps_with_a_dict_stop(tmp_path):
    analysis = tune.run(io_trainable, num_samples=12, stop={"training_iteration": 3},
                        config={"i": tune.grid_search(list(range(2))), "dir": str(tmp_path)},
                        **run_args(tmp_path))
    for trial in analysis.trials:
        assert trial.last_result["training_iteration"] == 3
    time.sleep(0.2)  # a trainable running ahead would have logged its step 4 by now
    for i in range(2):
        # 12 samples of 2 grid points: 12 trials per value of i share its step file.
        steps = executed_steps(tmp_path, i)
        assert sorted(steps) == sorted([1, 2, 3] * 12), "no step past the stop ran"


async def cancellable(config):
    """Step 2 of trial 0 waits long (to be stopped mid-await); finally leaves a mark."""
    try:
        for step in range(1, 4):
            await asyncio.sleep(60 if (config["i"] == 0 and step == 2) else 0.05)
            await tune.areport(step=step)
    finally:
        open(marker(config["dir"], f"finally-{config['i']}"), "w").close()


async def test_stopping_one_trial_mid_await_cancels_only_it(tmp_path):
    ids = {}
    async with tune.start(cancellable, config={"i": tune.grid_search(list(range(6))),
                                               "dir": str(tmp_path)},
                          **run_args(tmp_path)) as exp:
        async for event in exp.events():
            if isinstance(event, tune.TrialResult):
                ids[event.result["config"]["i"]] = event.trial_id
                if event.result["config"]["i"] == 0 and event.result["training_iteration"] == 1:
                    await anyio.sleep(0.3)  # it now awaits its long step 2
                    await exp.stop_trial(event.trial_id)
        analysis = await exp.wait()
    results = {t.config["i"]: t.last_result["training_iteration"] for t in analysis.trials}
    assert results == {0: 1, 1: 3, 2: 3, 3: 3, 4: 3, 5: 3}
    assert {t.status for t in analysis.trials} == {"TERMINATED"}
    for i in range(6):
        assert os.path.exists(marker(tmp_path, f"finally-{i}")), f"trial {i}'s finally ran"
    assert len({t.last_result["pid"] for t in analysis.trials}) == 1, "all in one host"


def test_one_failing_trial_fails_only_itself(tmp_path):
    analysis = tune.run(
        io_trainable, stop={"training_iteration": 4}, raise_on_failed_trial=False,
        config={"i": tune.grid_search(list(range(6))), "dir": str(tmp_path),
                "fail_at": tune.sample_from(lambda spec: 2 if spec.config.i == 3 else None)},
        **run_args(tmp_path))
    by_i = {t.config["i"]: t for t in analysis.trials}
    assert by_i[3].status == "ERROR"
    with open(os.path.join(by_i[3].logdir, "error.txt")) as f:
        assert "trial 3 fails at 2" in f.read()
    for i in (0, 1, 2, 4, 5):
        assert by_i[i].status == "TERMINATED"
        assert by_i[i].last_result["training_iteration"] == 4
    assert len({t.last_result["pid"] for t in analysis.trials if t.last_result}) == 1


class AsyncCounter(tune.Trainable):
    """An async class trainable whose state (``total``) lives in its checkpoints."""

    async def setup(self, config):
        self.total = 0

    async def step(self):
        await asyncio.sleep(0.01)
        self.total += self.iteration + 1
        flag = marker(self.config["dir"], f"failed-{self.config['i']}")
        if self.iteration + 1 == 3 and not os.path.exists(flag):
            open(flag, "w").close()
            raise RuntimeError("fails once at step 3")
        return {"total": self.total, "pid": os.getpid()}

    async def save_checkpoint(self, checkpoint_dir):
        await asyncio.sleep(0)
        return {"total": self.total}

    async def load_checkpoint(self, checkpoint):
        self.total = checkpoint["total"]


def test_checkpoint_and_restore_of_an_async_class_in_a_shared_host(tmp_path):
    analysis = tune.run(AsyncCounter, stop={"training_iteration": 5}, checkpoint_freq=2,
                        max_failures=1,
                        config={"i": tune.grid_search(list(range(4))), "dir": str(tmp_path)},
                        **run_args(tmp_path))
    for trial in analysis.trials:
        assert trial.status == "TERMINATED"
        # Failed at step 3, restored from the step-2 checkpoint (total 1+2), went on to 5.
        assert trial.last_result["training_iteration"] == 5
        assert trial.last_result["total"] == 1 + 2 + 3 + 4 + 5
        assert trial.num_failures == 1
    assert len({t.last_result["pid"] for t in analysis.trials}) == 1


async def endless(config):
    open(marker(config["dir"], f"started-{config['i']}"), "w").close()
    try:
        while True:
            await asyncio.sleep(0.5)
            await tune.areport(score=1)
    finally:
        open(marker(config["dir"], f"finally-{config['i']}"), "w").close()


async def test_cancelled_arun_releases_every_host_and_runs_finally(tmp_path):
    def count(prefix):
        return len([n for n in os.listdir(tmp_path) if n.startswith(prefix)])

    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: tune.arun(
            endless, config={"i": tune.grid_search(list(range(30))), "dir": str(tmp_path)},
            **run_args(tmp_path)))
        with anyio.fail_after(60):
            while count("started-") < 30:
                await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    assert count("finally-") == 30, "every trial's finally ran before arun returned"
    with anyio.move_on_after(10):
        while live_hosts():
            await anyio.sleep(0.05)
    assert live_hosts() == []


async def reports_plainly(config):
    await asyncio.sleep(0)
    tune.report(score=1)


def test_plain_report_in_a_shared_host_fails_clearly(tmp_path):
    analysis = tune.run(reports_plainly, raise_on_failed_trial=False, **run_args(tmp_path))
    [trial] = analysis.trials
    assert trial.status == "ERROR"
    with open(os.path.join(trial.logdir, "error.txt")) as f:
        assert "tune.areport" in f.read()


def sync_trainable(config):
    time.sleep(0.3)
    tune.report(pid=os.getpid())


def test_sync_trials_keep_an_actor_each(tmp_path):
    analysis = tune.run(sync_trainable, num_samples=4, **run_args(
        tmp_path, resources_per_trial={"cpu": 0.25}))
    assert len({t.last_result["pid"] for t in analysis.trials}) == 4


def test_log_to_file_with_shared_hosts_is_refused_before_the_run(tmp_path):
    with pytest.raises(ValueError, match="trials_per_worker"):
        tune.run(io_trainable, log_to_file=True, **run_args(tmp_path))
    with pytest.raises(ValueError, match="trials_per_worker"):
        tune.run(io_trainable, **run_args(tmp_path, trials_per_worker=0))


async def kills_its_process(config):
    for step in range(1, 4):
        await asyncio.sleep(0.2)
        flag = marker(config["dir"], "killed")
        if config["i"] == 0 and step == 2 and not os.path.exists(flag):
            open(flag, "w").close()
            os._exit(1)
        await tune.areport(step=step)


def test_a_trial_killing_its_host_fails_the_hosts_trials_which_retry(tmp_path):
    analysis = tune.run(kills_its_process, max_failures=1, stop={"training_iteration": 3},
                        config={"i": tune.grid_search(list(range(4))), "dir": str(tmp_path)},
                        **run_args(tmp_path))
    assert {t.status for t in analysis.trials} == {"TERMINATED"}
    assert all(t.last_result["training_iteration"] == 3 for t in analysis.trials)
    # All four shared the host that died: each failed once and ran again elsewhere.
    assert [t.num_failures for t in analysis.trials] == [1, 1, 1, 1]
    assert live_hosts() == []


class Reusable(tune.Trainable):
    """Counts its instances and resets in files; its counter must start afresh each trial."""

    def setup(self, config):
        self.count = 0
        open(marker(config["dir"], f"instance-{id(self)}"), "w").close()

    async def step(self):
        await asyncio.sleep(0.05)
        self.count += 1
        return {"count": self.count}

    def reset_config(self, new_config):
        self.count = 0
        open(marker(new_config["dir"], f"reset-{new_config['i']}"), "w").close()
        return True


def test_reuse_actors_reuses_instances_within_a_host(tmp_path):
    analysis = tune.run(Reusable, stop={"training_iteration": 2}, reuse_actors=True,
                        config={"i": tune.grid_search(list(range(6))), "dir": str(tmp_path)},
                        **run_args(tmp_path, resources_per_trial={"cpu": 1}))
    assert all(t.last_result["count"] == 2 for t in analysis.trials), "counters start afresh"
    made = [n for n in os.listdir(tmp_path) if n.startswith("instance-")]
    resets = [n for n in os.listdir(tmp_path) if n.startswith("reset-")]
    assert (len(made), len(resets)) == (2, 4), "two trials at a time: two instances"
    assert len({t.last_result["pid"] for t in analysis.trials}) == 1


class Cleaned(tune.Trainable):
    """Writes a marker in cleanup(); trial 0 runs long and counts the others' markers."""

    def setup(self, config):
        self.i, self.dir = config["i"], config["dir"]

    async def step(self):
        await asyncio.sleep(0.05)
        cleaned = [n for n in os.listdir(self.dir) if n.startswith("cleanup-")]
        return {"cleaned_before": len(cleaned), "done": self.i > 0 and self.iteration >= 1}

    def cleanup(self):
        open(marker(self.dir, f"cleanup-{self.i}"), "w").close()
        if self.i == 3:
            raise RuntimeError("cleanup fails")


def test_a_finished_trials_cleanup_runs_in_its_host_while_the_others_go_on(tmp_path):
    # Trials 1-3 end after two steps, trial 0 watches for 40: their stops travel with the
    # host's polls and run there before the end of the run, even one whose cleanup raises.
    analysis = tune.run(Cleaned, stop={"training_iteration": 40},
                        config={"i": tune.grid_search([0, 1, 2, 3]), "dir": str(tmp_path)},
                        **run_args(tmp_path))
    by_i = {t.config["i"]: t for t in analysis.trials}
    assert [by_i[i].status for i in range(4)] == ["TERMINATED"] * 4
    assert len({t.last_result["pid"] for t in analysis.trials}) == 1, "one host"
    assert by_i[0].last_result["cleaned_before"] == 3, "the others' cleanup ran meanwhile"
    assert sorted(os.listdir(tmp_path)).count("cleanup-0") == 1, "and its own at its end"
