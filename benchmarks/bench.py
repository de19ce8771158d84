"""Time tune_async against ray.tune on the same machine, in one run.

Each (workload, framework, repeat) runs in a fresh child process (this same
file with ``--child``) so Ray instances never collide and every framework pays
``ray.init`` the same way. The child calls ``ray.init(num_cpus=2)`` itself and
times it apart from the experiment. tune_async runs ``await tune.arun(...)``
beside a 5 ms heartbeat task that records how late the event loop wakes it.

Usage::

    python benchmarks/bench.py [--framework tune_async ray ray_reuse]
                               [--workload many_short throughput many_trials_10k searcher_2000
                                           asha_100 pbt_8x50 optuna_200 hyperopt_200]
                               [--repeat N] [--timeout S] [--loggers json-csv|default]
                               [--api arun|run] [--gc-freeze] [--merge] [--out PATH]

Writes ``benchmarks/results.json`` (every sample, per-cell medians, machine
info) and prints a Markdown table. ray.tune's cells are "n/a" when it is not
importable.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import functools
import gc
import importlib
import json
import math
import os
import platform
import random
import resource
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS_PATH = HERE / "results.json"
# ray: ray.tune at its defaults (reuse_actors=False); ray_reuse: its fastest setting.
FRAMEWORKS = ("tune_async", "ray", "ray_reuse")
NUM_CPUS = 2
HEARTBEAT_S = 0.005
IDLE_HEARTBEAT_S = 0.5
MARKER = "BENCH_RESULT "


@attrs.frozen
class Workload:
    """``num_samples`` trials each reporting ``num_results`` times.

    ``searcher``: configs come from a custom Searcher (behind a ConcurrencyLimiter)
    instead of the variant generator. ``scheduler``: ``"asha"`` or ``"pbt"`` runs
    that scheduler (see ``scheduler_kwargs``); ``num_results`` is then the most a
    trial reports (ASHA's ``max_t``, PBT's stop iteration) and the trials' configs
    are a fixed, seeded grid. ``library``: ``"optuna"`` or ``"hyperopt"`` runs that
    library's seeded model-based searcher (behind a ConcurrencyLimiter) on a 2-D
    quadratic. ``timeout_s``: default kill time per run.
    """

    name: str
    title: str
    num_samples: int
    num_results: int
    searcher: bool = False
    scheduler: str | None = None
    library: str | None = None
    timeout_s: float = 600

    @property
    def total_results(self) -> int:
        """The results every trial would report unscheduled (FIFO: exactly these)."""
        return self.num_samples * self.num_results


WORKLOADS = {
    w.name: w
    for w in (
        Workload("many_short", "100 x 10", 100, 10),
        Workload("throughput", "8 x 2,000", 8, 2000),
        Workload("many_trials_10k", "10,000 x 1", 10_000, 1),
        Workload("searcher_2000", "2,000 x 1, Searcher", 2000, 1, searcher=True),
        Workload("asha_100", "100 trials, ASHA, max_t 100", 100, 100, scheduler="asha"),
        Workload("pbt_8x50", "8 x 50, PBT, 1 MB checkpoints", 8, 50, scheduler="pbt"),
        Workload("optuna_200", "200 x 1, OptunaSearch TPE", 200, 1, library="optuna"),
        Workload("hyperopt_200", "200 x 1, HyperOptSearch TPE", 200, 1, library="hyperopt"),
    )
}

# ASHA (issue 7): rungs at 1, 4, 16, 64 iterations, the quarter with the lowest loss
# goes on at each; trials that pass them all stop at max_t.
ASHA = {"max_t": 100, "grace_period": 1, "reduction_factor": 4}
ASHA_X_OPT = 0.3
# PBT (issue 7): every 5 iterations the bottom quarter clones the top quarter's
# checkpoint and perturbs its lr; each checkpoint holds 1 MiB of "weights".
PBT_INTERVAL = 5
PBT_LR_RANGE = (1e-4, 1e-1)
CHECKPOINT_BYTES = 2**20
# The same configs for both frameworks: drawn here, given as a grid.
CONFIG_SEED = 7
# PBT's explore step and ASHA's ties use the driver's random / numpy generators.
DRIVER_SEED = 0
# Searcher workloads (issue 8): loss = (x - 1.5)**2 + (y + 0.5)**2 over [-5, 5]^2,
# minimum 0 at (1.5, -0.5); the searchers are seeded with SEARCH_SEED.
QUADRATIC_OPT = {"x": 1.5, "y": -0.5}
QUADRATIC_RANGE = (-5.0, 5.0)
SEARCH_SEED = 0


# ---------------------------------------------------------------- trainables
# Built by factories so the child's __main__ closures are pickled by value to
# the trial workers. Both do exactly the same thing; only the report call's
# spelling differs (ray.tune 2.x's ``tune.report`` takes a dict, no kwargs).

def tune_async_trainable(num_results: int) -> Callable[[dict], None]:
    def trainable(config: dict) -> None:
        import tune_async as tune

        for i in range(num_results):
            tune.report(score=i + config["x"])

    return trainable


def ray_trainable(num_results: int) -> Callable[[dict], None]:
    def trainable(config: dict) -> None:
        from ray import tune

        for i in range(num_results):
            tune.report({"score": i + config["x"]})

    return trainable


def asha_trainable(report: Callable[[dict], None], max_t: int) -> Callable[[dict], None]:
    """A loss curve that depends on the config: ``(x - 0.3)**2 + 1/iteration``.

    ``report`` is the framework's report call taking a dict (built by the caller).
    """
    def trainable(config: dict) -> None:
        offset = (config["x"] - ASHA_X_OPT) ** 2
        for i in range(1, max_t + 1):
            report({"loss": offset + 1 / i})

    return trainable


def tune_async_report(metrics: dict) -> None:
    import tune_async as tune

    tune.report(**metrics)


def ray_report(metrics: dict) -> None:
    from ray import tune

    tune.report(metrics)


def tune_async_asha_trainable(max_t: int) -> Callable[[dict], None]:
    return asha_trainable(tune_async_report, max_t)


def ray_asha_trainable(max_t: int) -> Callable[[dict], None]:
    return asha_trainable(ray_report, max_t)


def quadratic_trainable(report: Callable[[dict], None]) -> Callable[[dict], None]:
    """One result: ``loss = (x - 1.5)**2 + (y + 0.5)**2`` (the searcher workloads)."""
    def trainable(config: dict) -> None:
        report({"loss": sum((config[k] - v) ** 2 for k, v in QUADRATIC_OPT.items())})

    return trainable


def pbt_trainable(base: type, return_path: bool) -> type:
    """A class Trainable whose progress per step depends on ``lr``, with 1 MiB checkpoints.

    Each step adds ``exp(-(log10(lr) - best)**2)`` to ``score`` (at most 1), where the
    best ``log10(lr)`` falls from -1 to -3 over the 50 iterations: a fixed lr cannot
    keep up, PBT's schedule can. The state (score, 1 MiB of bytes standing in for
    weights) goes through ``save_checkpoint`` / ``load_checkpoint``; ``reset_config``
    takes a new lr in place (actor reuse, PBT's exploit). ``return_path``: tune_async
    (1.x) takes the checkpoint file's path; ray.tune 2.x gets ``None`` and is given
    the directory back.
    """

    class PBTTrainable(base):  # type: ignore[misc, valid-type]
        def setup(self, config: dict) -> None:
            import numpy as np

            self.lr = config["lr"]
            self.score = 0.0
            self.weights = np.random.default_rng(0).bytes(CHECKPOINT_BYTES)

        def step(self) -> dict:
            best = -1 - 2 * self.iteration / 50
            self.score += math.exp(-((math.log10(self.lr) - best) ** 2))
            return {"score": self.score, "lr": self.lr}

        def save_checkpoint(self, checkpoint_dir: str) -> str | None:
            path = os.path.join(checkpoint_dir, "model.bin")
            with open(path, "wb") as f:
                f.write(struct.pack("<d", self.score))
                f.write(self.weights)
            return path if return_path else None

        def load_checkpoint(self, checkpoint: str) -> None:
            path = checkpoint if checkpoint.endswith(".bin") else os.path.join(
                checkpoint, "model.bin")
            with open(path, "rb") as f:
                (self.score,) = struct.unpack("<d", f.read(8))
                self.weights = f.read()
            assert len(self.weights) == CHECKPOINT_BYTES, len(self.weights)

        def reset_config(self, new_config: dict) -> bool:
            self.lr = new_config["lr"]
            self.config = new_config
            return True

    return PBTTrainable


def trainable_for(wl: Workload, framework: str) -> Any:
    """The workload's trainable, spelled for ``framework`` (tune_async or ray)."""
    if wl.scheduler == "asha":
        make = tune_async_asha_trainable if framework == "tune_async" else ray_asha_trainable
        return make(wl.num_results)
    if wl.library:
        return quadratic_trainable(
            tune_async_report if framework == "tune_async" else ray_report)
    if wl.scheduler == "pbt":
        if framework == "tune_async":
            import tune_async as tune

            return pbt_trainable(tune.Trainable, return_path=True)
        from ray import tune as ray_tune

        return pbt_trainable(ray_tune.Trainable, return_path=False)
    make = tune_async_trainable if framework == "tune_async" else ray_trainable
    return make(wl.num_results)


def seeded_configs(wl: Workload) -> list[float]:
    """The trials' ``x`` (ASHA: uniform(0, 1)) or ``lr`` (PBT: log-uniform), seeded."""
    rng = random.Random(CONFIG_SEED)
    if wl.scheduler == "asha":
        return [rng.random() for _ in range(wl.num_samples)]
    low, high = (math.log(v) for v in PBT_LR_RANGE)
    return [math.exp(rng.uniform(low, high)) for _ in range(wl.num_samples)]


def scheduler_kwargs(wl: Workload, tune: Any, schedulers: Any) -> dict[str, Any]:
    """``tune.run`` arguments for a scheduler workload (same in both frameworks)."""
    values = tune.grid_search(seeded_configs(wl))
    if wl.scheduler == "asha":
        scheduler = schedulers.ASHAScheduler(
            time_attr="training_iteration", metric="loss", mode="min", **ASHA)
        return {"scheduler": scheduler, "config": {"x": values}, "num_samples": 1}
    scheduler = schedulers.PopulationBasedTraining(
        time_attr="training_iteration", metric="score", mode="max",
        perturbation_interval=PBT_INTERVAL,
        hyperparam_mutations={"lr": tune.loguniform(*PBT_LR_RANGE)})
    return {"scheduler": scheduler, "config": {"lr": values}, "num_samples": 1,
            "stop": {"training_iteration": wl.num_results}}


def random_searcher(base: type) -> Any:
    """A minimal user-written Searcher: random ``x``, remembers the best score.

    The subclass API (``suggest`` / ``on_trial_complete``) is the same in
    tune_async and ray.tune, so one body serves both ``base`` classes.
    """

    class RandomSearcher(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__(metric="score", mode="max")
            self.rng = random.Random(0)
            self.best: float | None = None

        def suggest(self, trial_id: str) -> dict:
            return {"x": self.rng.random()}

        def on_trial_complete(self, trial_id: str, result: dict | None = None,
                              error: bool = False) -> None:
            if result and (self.best is None or result["score"] > self.best):
                self.best = result["score"]

    return RandomSearcher()


# Seconds each call of a searcher workload's ``suggest`` took (the child's driver).
SUGGEST_TIMES: list[float] = []


def _time_suggest(cls: type) -> None:
    """Record how long ``cls.suggest`` takes (a TPE step), in SUGGEST_TIMES.

    Patched on the class in the child only, so the searcher instance (pickled into
    the experiment state by both frameworks) is unchanged.
    """
    inner = cls.suggest

    @functools.wraps(inner)
    def suggest(self: Any, trial_id: str) -> Any:
        t0 = time.perf_counter()
        try:
            return inner(self, trial_id)
        finally:
            SUGGEST_TIMES.append(time.perf_counter() - t0)

    cls.suggest = suggest  # type: ignore[method-assign]


def library_searcher(wl: Workload, suggest: Any) -> Any:
    """The seeded OptunaSearch (TPE) or HyperOptSearch of ``suggest``'s framework.

    ``suggest`` is ``tune_async.suggest`` or ``ray.tune.search``: both hold the
    integrations at ``<module>.optuna.OptunaSearch`` / ``<module>.hyperopt.HyperOptSearch``
    with the same arguments. The space comes from ``tune.run``'s ``config``.
    """
    module = importlib.import_module(f"{suggest.__name__}.{wl.library}")
    if wl.library == "optuna":
        # Both default to optuna.samplers.TPESampler(seed=seed).
        searcher = module.OptunaSearch(metric="loss", mode="min", seed=SEARCH_SEED)
    else:
        # Both: hyperopt's tpe.suggest after n_initial_points=20 random points.
        searcher = module.HyperOptSearch(metric="loss", mode="min",
                                         random_state_seed=SEARCH_SEED)
    _time_suggest(type(searcher))
    return searcher


def suggest_stats() -> dict[str, Any]:
    """How long the searcher's ``suggest`` calls took: count, p50 / max ms, total s."""
    if not SUGGEST_TIMES:
        return {"n": 0}
    ms = sorted(t * 1000 for t in SUGGEST_TIMES)
    return {"n": len(ms), "p50_ms": ms[(len(ms) - 1) // 2], "max_ms": ms[-1],
            "total_s": sum(SUGGEST_TIMES)}


def experiment_kwargs(wl: Workload, suggest: Any, sample: Any,
                      logger: Any, loggers: str, schedulers: Any) -> dict[str, Any]:
    """``tune.run`` arguments shared by both frameworks (given their modules)."""
    kwargs: dict[str, Any] = {"num_samples": wl.num_samples, "verbose": 0}
    if wl.scheduler:
        kwargs.update(scheduler_kwargs(wl, sample, schedulers))
    elif wl.searcher:
        # Limited to the CPU slots, as a user would run a model-based searcher.
        searcher = random_searcher(suggest.Searcher)
        kwargs["search_alg"] = suggest.ConcurrencyLimiter(searcher, max_concurrent=NUM_CPUS)
    elif wl.library:
        # The same limit as searcher_2000: each framework's own ConcurrencyLimiter.
        kwargs["search_alg"] = suggest.ConcurrencyLimiter(library_searcher(wl, suggest),
                                                          max_concurrent=NUM_CPUS)
        kwargs["config"] = {k: sample.uniform(*QUADRATIC_RANGE) for k in QUADRATIC_OPT}
    else:
        kwargs["config"] = {"x": sample.uniform(0, 1)}
    if loggers == "json-csv":
        # Pinned: with tensorboardX installed both would add TensorBoard files.
        kwargs["callbacks"] = [logger.JsonLoggerCallback(), logger.CSVLoggerCallback()]
    return kwargs


# ----------------------------------------------------------------- heartbeat

Wakeup = tuple[float, float]  # (perf_counter at wake-up, seconds late)
SLOW_WAKEUP_MS = 10  # issue 6's target for the worst case


async def _heartbeat(wakeups: list[Wakeup], stop: asyncio.Event) -> None:
    """Sleep 5 ms in a loop; record when each wake-up came and how late it was."""
    while not stop.is_set():
        expected = time.perf_counter() + HEARTBEAT_S
        await asyncio.sleep(HEARTBEAT_S)
        now = time.perf_counter()
        wakeups.append((now, now - expected))


async def _beside_heartbeat(work: Callable[[], Awaitable[Any]]) -> tuple[Any, float, dict]:
    """Await ``work()`` with the heartbeat running; return (result, seconds, lateness stats)."""
    wakeups: list[Wakeup] = []
    stop = asyncio.Event()
    beat = asyncio.create_task(_heartbeat(wakeups, stop))
    await asyncio.sleep(0)  # the heartbeat is asleep before work starts
    t0 = time.perf_counter()
    try:
        result = await work()
    finally:
        elapsed = time.perf_counter() - t0
        stop.set()
        # Not cancelled: its last wake-up still counts, so a stall just before
        # work() returned is recorded too.
        await beat
    return result, elapsed, lateness_stats(wakeups, t0)


def lateness_stats(wakeups: list[Wakeup], t0: float) -> dict[str, Any]:
    """p50 / p99 / max in ms (nearest rank); when the worst stall ended; how many > 10 ms."""
    if not wakeups:
        return {"n": 0}
    ms = sorted(late * 1000 for _, late in wakeups)
    worst_at, worst_late = max(wakeups, key=lambda w: w[1])
    return {"n": len(ms), "p50_ms": _rank(ms, 0.5), "p99_ms": _rank(ms, 0.99), "max_ms": ms[-1],
            # Seconds after work() started: tells start-up, steady state and the end apart.
            "max_at_s": worst_at - t0,
            # How much of the worst stall was a garbage collection (in any thread: it
            # holds the GIL), from the driver's gc.callbacks.
            "max_gc_ms": _gc_overlap_ms(worst_at - worst_late, worst_at),
            f"over_{SLOW_WAKEUP_MS}ms": sum(m > SLOW_WAKEUP_MS for m in ms),
            # Every beat (ms, in order): the repeats' beats are pooled in the summary.
            "beats_ms": [round(late * 1000, 3) for _, late in wakeups]}


def _rank(ascending: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile of a sorted list."""
    return ascending[max(0, math.ceil(q * len(ascending)) - 1)]


# ------------------------------------------------------- garbage collections

# (perf_counter at start, at end, generation) of the driver's collections while
# the experiment runs: a full (generation 2) one holds the GIL for tens of ms.
GC_SPANS: list[tuple[float, float, int]] = []
_gc_started: dict[int, float] = {}


def _gc_probe(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _gc_started[threading.get_ident()] = time.perf_counter()
    else:
        t0 = _gc_started.pop(threading.get_ident(), None)
        if t0 is not None:
            GC_SPANS.append((t0, time.perf_counter(), info["generation"]))


def _gc_overlap_ms(start: float, end: float) -> float:
    return sum(max(0.0, min(b, end) - max(a, start)) for a, b, _ in GC_SPANS) * 1000


def gc_stats() -> dict[str, Any]:
    """The driver's collections during the run: count per generation; full ones' ms."""
    full = [(b - a) * 1000 for a, b, gen in GC_SPANS if gen == 2]
    return {"collections": [sum(g == gen for *_, g in GC_SPANS) for gen in range(3)],
            "gen2_max_ms": max(full, default=0.0), "gen2_total_ms": sum(full)}


# --------------------------------------------------------------------- child

def _peak_rss_mib() -> float:
    # Linux reports ru_maxrss in KiB (macOS in bytes).
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def _run_tune_async(wl: Workload, storage: str, args: argparse.Namespace) -> dict[str, Any]:
    import tune_async as tune
    from tune_async import logger, schedulers, suggest

    kwargs = experiment_kwargs(wl, suggest, tune, logger, args.loggers, schedulers)
    trainable = trainable_for(wl, "tune_async")
    if args.api == "run":
        t0 = time.perf_counter()
        analysis = tune.run(trainable, local_dir=storage, **kwargs)
        return {"analysis": analysis, "run_s": time.perf_counter() - t0}

    async def measure() -> dict[str, Any]:
        # The idle floor: what the loop and timer granularity cost with nothing running.
        _, _, idle = await _beside_heartbeat(lambda: asyncio.sleep(IDLE_HEARTBEAT_S))
        analysis, run_s, busy = await _beside_heartbeat(
            lambda: tune.arun(trainable, local_dir=storage, **kwargs))
        return {"analysis": analysis, "run_s": run_s, "lateness": busy, "lateness_idle": idle}

    return asyncio.run(measure())


def _run_ray(wl: Workload, storage: str, args: argparse.Namespace) -> dict[str, Any]:
    from ray import tune
    from ray.tune import logger, schedulers, search

    kwargs = experiment_kwargs(wl, search, tune, logger, args.loggers, schedulers)
    trainable = trainable_for(wl, "ray")
    t0 = time.perf_counter()
    analysis = tune.run(trainable, storage_path=storage,
                        reuse_actors=args.child == "ray_reuse", **kwargs)
    return {"analysis": analysis, "run_s": time.perf_counter() - t0}


def _scan_files(storage: str) -> tuple[int, int, set[str]]:
    """(result.json lines, pbt_global.txt lines, file names) under ``storage``."""
    json_lines = exploit_lines = 0
    files: set[str] = set()
    for path in Path(storage).rglob("*"):
        if path.is_file():
            files.add("events.out.tfevents" if path.name.startswith("events.out") else path.name)
            if path.name == "result.json":
                json_lines += sum(1 for _ in path.open())
            elif path.name == "pbt_global.txt":
                exploit_lines += sum(1 for _ in path.open())
    return json_lines, exploit_lines, files


def _outcome(wl: Workload, trials: list, iters: list, exploits: int) -> dict[str, Any]:
    """A scheduler workload's figures: what it ran and how good its best trial is."""
    if wl.scheduler == "asha":
        losses = [t.last_result.get("loss", math.inf) for t in trials]
        stopped_at: dict[str, int] = {}
        for i in sorted(i or 0 for i in iters):
            stopped_at[str(i)] = stopped_at.get(str(i), 0) + 1
        return {"iterations": sum(i or 0 for i in iters), "best": min(losses, default=math.inf),
                "reached_max_t": sum(i == ASHA["max_t"] for i in iters),
                # How many trials ended at each iteration (ASHA's rungs: 1, 4, 16, 64).
                "stopped_at": stopped_at}
    scores = [t.last_result.get("score", -math.inf) for t in trials]
    return {"iterations": sum(i or 0 for i in iters), "best": max(scores, default=-math.inf),
            "exploits": exploits}


def _check(analysis: Any, wl: Workload, storage: str) -> dict[str, Any]:
    """Did every trial finish with all its results reported and logged?

    With a scheduler, "all" is what the scheduler let it run: ASHA stops trials
    early (each result is still logged once, so result.json holds the sum of the
    trials' last ``training_iteration``); PBT's exploits move a trial's iteration
    to its donor's, so only the last iteration (the stop) is checked.
    """
    trials = analysis.trials
    statuses = sorted({str(t.status) for t in trials})
    iters = [t.last_result.get("training_iteration") for t in trials]
    json_lines, exploits, files = _scan_files(storage)
    ok = len(trials) == wl.num_samples and statuses == ["TERMINATED"]
    out: dict[str, Any] = {}
    if wl.scheduler == "asha":
        out = _outcome(wl, trials, iters, exploits)
        ok = (ok and all(1 <= (i or 0) <= wl.num_results for i in iters)
              and out["reached_max_t"] >= 1 and json_lines == out["iterations"])
    elif wl.scheduler == "pbt":
        out = _outcome(wl, trials, iters, exploits)
        ok = ok and all(i == wl.num_results for i in iters) and json_lines >= wl.num_results
    else:
        ok = ok and all(i == wl.num_results for i in iters) and json_lines == wl.total_results
    if wl.library:
        # The best value found, and where (the optimum: loss 0 at QUADRATIC_OPT).
        best = min(trials, key=lambda t: t.last_result.get("loss", math.inf))
        out = {"best": best.last_result.get("loss", math.inf),
               "best_config": {k: best.config.get(k) for k in QUADRATIC_OPT}}
    return {
        "ok": ok,
        "trials": len(trials),
        "statuses": statuses,
        "result_json_lines": json_lines,
        **out,
        "files": sorted(files),
    }


def child_main(args: argparse.Namespace) -> None:
    """Run one measurement and print it as a ``BENCH_RESULT {json}`` line."""
    wl = WORKLOADS[args.workload[0]]
    if args.loggers == "json-csv":
        os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    import ray

    if wl.scheduler:
        # PBT's explore and perturbation choices use the driver's generators.
        import numpy as np

        random.seed(DRIVER_SEED)
        np.random.seed(DRIVER_SEED)
    t0 = time.perf_counter()
    ray.init(num_cpus=NUM_CPUS)
    init_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    importlib.import_module("tune_async" if args.child == "tune_async" else "ray.tune")
    import_s = time.perf_counter() - t0
    runner = _run_tune_async if args.child == "tune_async" else _run_ray
    if wl.library:
        # Imported before the searcher is made (never in run_s), and so before the freeze.
        importlib.import_module(wl.library)
    if args.gc_freeze:
        gc.freeze()
    gc.callbacks.append(_gc_probe)
    try:
        measured = runner(wl, args.storage, args)
    finally:
        gc.callbacks.remove(_gc_probe)
    measured["gc"] = gc_stats()
    peak_rss = _peak_rss_mib()
    check = _check(measured.pop("analysis"), wl, args.storage)
    ray.shutdown()
    run_s = measured["run_s"]
    if wl.library:
        measured["suggest"] = suggest_stats()
    # A scheduler decides how many results there are: count those logged.
    results = check["result_json_lines"] if wl.scheduler else wl.total_results
    out = {
        "framework": args.child,
        "workload": wl.name,
        "init_s": init_s,
        "import_s": import_s,
        **measured,
        "results": results,
        "results_per_s": results / run_s,
        "ms_per_trial": run_s * 1000 / wl.num_samples,
        "peak_rss_mib": peak_rss,
        **check,
    }
    print(MARKER + json.dumps(out), flush=True)


# -------------------------------------------------------------------- parent

def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # Ray workers inherit the driver's environment: they must import tune_async too.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def _progress(storage: str) -> dict[str, int]:
    """How far a killed child got: trial dirs started, and those with results."""
    files = list(Path(storage).rglob("result.json"))
    return {"trials_started": len(files),
            "trials_with_results": sum(1 for f in files if f.stat().st_size > 0)}


def _timed_out(base: dict[str, Any], timeout: float, storage: str) -> dict[str, Any]:
    progress = _progress(storage)
    return {**base, **progress, "timed_out": True,
            "error": f"timeout after {timeout:g} s: {progress['trials_with_results']} "
                     f"trials had results ({progress['trials_started']} started)"}


# Runs' directories, deleted when every run is done, not between runs. On ext4 without a
# journal (this project's VM), a new inode skips every inode of its group freed in the
# last 60-300 s, one buffer lookup each: right after deleting a 10,000-trial tree, each
# file a run created cost ~1 ms of kernel time, against ~10 us a few minutes later.
_STORAGE_TO_DELETE: list[str] = []


def _delete_storage() -> None:
    while _STORAGE_TO_DELETE:
        shutil.rmtree(_STORAGE_TO_DELETE.pop(), ignore_errors=True)


def run_child(framework: str, wl: Workload, args: argparse.Namespace) -> dict[str, Any]:
    """One fresh-process measurement; a failure is returned as ``{"error": ...}``."""
    storage = tempfile.mkdtemp(prefix=f"bench_{framework}_{wl.name}_")
    _STORAGE_TO_DELETE.append(storage)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", framework,
           "--workload", wl.name, "--storage", storage, "--loggers", args.loggers,
           "--api", args.api, *(["--gc-freeze"] if args.gc_freeze else [])]
    timeout = args.timeout or wl.timeout_s
    base = {"framework": framework, "workload": wl.name, "timeout_s": timeout,
            "loggers": args.loggers, "api": args.api if framework == "tune_async" else None,
            "gc_freeze": args.gc_freeze,
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            # The machine may be shared: the load says how noisy this sample is.
            "loadavg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            # Per sample: with --merge, cells may come from different commits.
            "git": git_revision()}
    t0 = time.perf_counter()
    # A session of its own: on timeout the whole tree (driver + its Ray) is killed.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_child_env(), cwd=tempfile.gettempdir(),
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return _timed_out(base, timeout, storage)
    for line in reversed(out.splitlines()):
        if line.startswith(MARKER):
            return {**base, **json.loads(line[len(MARKER):]),
                    "process_s": time.perf_counter() - t0}
    tail = "\n".join((err or out).splitlines()[-25:])
    return {**base, "error": f"exit code {proc.returncode}\n{tail}"}


def probe_ray() -> str | None:
    """ray's version when ``ray.tune`` imports in a fresh interpreter, else None."""
    proc = subprocess.run([sys.executable, "-c", "import ray, ray.tune; print(ray.__version__)"],
                          capture_output=True, text=True, env=_child_env())
    return proc.stdout.strip() if proc.returncode == 0 else None


def git_revision() -> dict[str, Any] | None:
    """The commit measured, and whether tune_async/ had uncommitted edits."""
    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"),
                "tune_async_dirty": bool(git("status", "--porcelain", "--", "tune_async"))}
    except (OSError, subprocess.CalledProcessError):
        return None  # not a git checkout (e.g. an sdist)


def machine_info(ray_version: str | None) -> dict[str, Any]:
    cpu_model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    mem_gib = None
    if hasattr(os, "sysconf"):
        mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": nproc,
        "cpu": cpu_model,
        "mem_gib": mem_gib,
        # Other work on the machine makes every figure noisier.
        "loadavg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "ray_version": ray_version,
        "ray_init_num_cpus": NUM_CPUS,
        "git": git_revision(),
    }


# ------------------------------------------------------------------- summary

def _summary_lateness(good: list[dict[str, Any]]) -> dict[str, Any] | None:
    """p50 / p99 / max over the beats of all repeats, pooled; the worst of each repeat.

    One short run has fewer than 100 beats (``many_short``: about 60), and the
    nearest-rank p99 of fewer than 100 is their maximum: pooling the repeats' beats
    gives the 99th percentile its meaning. Samples measured before the beats were kept
    give the medians of their repeats' figures instead.
    """
    stats = [s["lateness"] for s in good if s.get("lateness", {}).get("n")]
    if not stats:
        return None
    if not all("beats_ms" in st for st in stats):
        return {k: statistics.median(st[k] for st in stats)
                for k in ("p50_ms", "p99_ms", "max_ms")}
    beats = sorted(b for st in stats for b in st["beats_ms"])
    return {"n": len(beats), "p50_ms": _rank(beats, 0.5), "p99_ms": _rank(beats, 0.99),
            "max_ms": beats[-1], "max_ms_each": [st["max_ms"] for st in stats]}


def summarize(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the successful repeats; else why none succeeded."""
    good = [s for s in samples if "error" not in s]
    if not good:
        last = samples[-1]
        return {"error": last["error"].splitlines()[0], "timed_out": bool(last.get("timed_out")),
                "timeout_s": last.get("timeout_s"),
                "trials_with_results": last.get("trials_with_results")}
    keys = ("run_s", "results_per_s", "ms_per_trial", "init_s", "import_s", "peak_rss_mib")
    summary: dict[str, Any] = {k: statistics.median(s[k] for s in good) for k in keys}
    # Scheduler workloads: what ran and the best trial (medians of the repeats).
    for k in ("results", "iterations", "reached_max_t", "exploits", "best"):
        if all(k in s for s in good):
            summary[k] = statistics.median(s[k] for s in good)
    summary["lateness"] = _summary_lateness(good)
    # Searcher workloads: how long the searcher's suggest (a TPE step) took.
    suggests = [s["suggest"] for s in good if s.get("suggest", {}).get("n")]
    if suggests:
        summary["suggest"] = {k: statistics.median(st[k] for st in suggests)
                              for k in ("n", "p50_ms", "max_ms", "total_s")}
    summary["repeats"] = len(good)
    summary["all_ok"] = all(s["ok"] for s in good)
    return summary


def summarize_all(samples: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{workload: {framework: summary}} in the canonical order."""
    summary: dict[str, dict[str, Any]] = {}
    for wl_name in WORKLOADS:
        for fw in FRAMEWORKS:
            cell = [s for s in samples if s["workload"] == wl_name and s["framework"] == fw]
            if cell:
                summary.setdefault(wl_name, {})[fw] = summarize(cell)
    return summary


def _ratio(cell: dict[str, Any], base: dict[str, Any] | None) -> str:
    """This cell's wall time over tune_async's (a lower bound when it timed out)."""
    if not base or "run_s" not in base:
        return ""
    if "run_s" in cell:
        return f"{cell['run_s'] / base['run_s']:.1f}x"
    return f"> {cell['timeout_s'] / base['run_s']:.0f}x" if cell.get("timed_out") else ""


def _lateness_cell(cell: dict[str, Any]) -> str:
    lat = cell.get("lateness")
    if not lat:
        return "n/a"
    return f"{lat['p50_ms']:.2f} / {lat['p99_ms']:.2f} / {lat['max_ms']:.1f}"


def _failed_cells(cell: dict[str, Any], wl_name: str) -> tuple[str, str, str, str]:
    """wall, results/s, ms/trial, RSS for a run that never finished.

    For a timeout, the "~" rates are those seen until the kill (ray.init included).
    """
    done = cell.get("trials_with_results")
    if not cell["timed_out"] or not done:
        return ("timeout" if cell["timed_out"] else "failed"), "", "", ""
    wl, timeout = WORKLOADS[wl_name], cell["timeout_s"]
    return (f"timeout after {timeout:g} s ({done:,} of {wl.num_samples:,} trials reported)",
            f"~{done * wl.num_results / timeout:,.1f}", f"~{timeout * 1000 / done:,.0f}", "")


def table_rows(summary: dict[str, dict[str, Any]]) -> list[tuple[str, ...]]:
    rows = []
    for wl_name, per_fw in summary.items():
        if WORKLOADS[wl_name].scheduler or WORKLOADS[wl_name].library:
            continue  # in scheduler_rows / searcher_rows
        base = per_fw.get("tune_async")
        for fw, cell in per_fw.items():
            label = f"{wl_name} ({WORKLOADS[wl_name].title})"
            if "error" in cell:
                rows.append((label, fw, *_failed_cells(cell, wl_name), _ratio(cell, base), "n/a"))
                continue
            rows.append((
                label, fw, f"{cell['run_s']:.2f}", f"{cell['results_per_s']:,.0f}",
                f"{cell['ms_per_trial']:.2f}", f"{cell['peak_rss_mib']:.0f}",
                _ratio(cell, base), _lateness_cell(cell),
            ))
    return rows


def _best_cell(wl: Workload, cell: dict[str, Any]) -> str:
    if "best" not in cell:
        return ""
    if wl.scheduler == "asha":
        return f"loss {cell['best']:.6f}"
    return f"score {cell['best']:.2f}"


def scheduler_rows(summary: dict[str, dict[str, Any]]) -> list[tuple[str, ...]]:
    """The scheduler workloads: wall time, what the scheduler ran, the best trial."""
    rows = []
    for wl_name, per_fw in summary.items():
        wl = WORKLOADS[wl_name]
        if not wl.scheduler:
            continue
        base = per_fw.get("tune_async")
        label = f"{wl_name} ({wl.title})"
        for fw, cell in per_fw.items():
            if "error" in cell:
                wall = _failed_cells(cell, wl_name)[0]
                rows.append((label, fw, wall, _ratio(cell, base), "", "", "", "", "", "n/a"))
                continue
            exploits = f"{cell['exploits']:g}" if "exploits" in cell else "n/a"
            rows.append((
                label, fw, f"{cell['run_s']:.2f}", _ratio(cell, base),
                f"{cell.get('results', 0):,.0f}", f"{cell['results_per_s']:,.0f}",
                _best_cell(wl, cell), exploits, f"{cell['peak_rss_mib']:.0f}",
                _lateness_cell(cell),
            ))
    return rows


def searcher_rows(summary: dict[str, dict[str, Any]]) -> list[tuple[str, ...]]:
    """The searcher workloads: wall time, the best loss found, the TPE step, the loop."""
    rows = []
    for wl_name, per_fw in summary.items():
        wl = WORKLOADS[wl_name]
        if not wl.library:
            continue
        base = per_fw.get("tune_async")
        label = f"{wl_name} ({wl.title})"
        for fw, cell in per_fw.items():
            if "error" in cell:
                wall = _failed_cells(cell, wl_name)[0]
                rows.append((label, fw, wall, _ratio(cell, base), "", "", "", "", "n/a"))
                continue
            sug = cell.get("suggest")
            rows.append((
                label, fw, f"{cell['run_s']:.2f}", _ratio(cell, base),
                f"{cell['ms_per_trial']:.1f}", f"{cell['best']:.3g}" if "best" in cell else "",
                f"{sug['p50_ms']:.1f} / {sug['max_ms']:.1f}" if sug else "",
                f"{cell['peak_rss_mib']:.0f}", _lateness_cell(cell),
            ))
    return rows


def _print_markdown(header: tuple[str, ...], body: list[tuple[str, ...]]) -> None:
    rows = [header, *body]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for n, row in enumerate(rows):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if n == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def print_table(summary: dict[str, dict[str, Any]]) -> None:
    body = table_rows(summary)
    if body:
        _print_markdown(("workload", "framework", "wall s", "results/s", "ms/trial",
                         "driver peak RSS MiB", "wall / tune_async",
                         "loop lateness p50/p99/max ms"), body)
    sched = scheduler_rows(summary)
    if sched:
        if body:
            print()
        _print_markdown(("workload", "framework", "wall s", "wall / tune_async",
                         "results (iterations run)", "results/s", "best final",
                         "exploits", "driver peak RSS MiB", "loop lateness p50/p99/max ms"),
                        sched)
    search = searcher_rows(summary)
    if search:
        if body or sched:
            print()
        _print_markdown(("workload", "framework", "wall s", "wall / tune_async", "ms/trial",
                         "best loss", "suggest p50/max ms", "driver peak RSS MiB",
                         "loop lateness p50/p99/max ms"), search)


# ---------------------------------------------------------------------- main

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--framework", nargs="+", choices=FRAMEWORKS, default=list(FRAMEWORKS),
                        help="frameworks to run (default: all)")
    parser.add_argument("--workload", nargs="+", choices=list(WORKLOADS),
                        default=list(WORKLOADS), help="workloads to run (default: all)")
    parser.add_argument("--repeat", type=int, default=1, help="fresh runs per cell (median)")
    parser.add_argument("--timeout", type=float,
                        help="seconds before a run is killed and reported as a timeout "
                             "(default: per workload, 600)")
    parser.add_argument("--loggers", choices=("json-csv", "default"), default="json-csv",
                        help="json-csv: both frameworks write exactly result.json + "
                             "progress.csv (default); default: each its own defaults")
    parser.add_argument("--api", choices=("arun", "run"), default="arun",
                        help="tune_async: time `await tune.arun` beside the heartbeat "
                             "(default) or the sync `tune.run` (no lateness figures)")
    parser.add_argument("--gc-freeze", action="store_true",
                        help="the child calls gc.freeze() just before the run (after "
                             "ray.init and the imports), so full collections skip the "
                             "start-up objects")
    parser.add_argument("--merge", action="store_true",
                        help="keep the --out file's samples for cells not run this time")
    parser.add_argument("--out", type=Path, default=RESULTS_PATH, help="results JSON path")
    parser.add_argument("--child", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    parser.add_argument("--storage", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat must be >= 1, got {args.repeat}")
    if args.timeout is not None and args.timeout <= 0:
        parser.error(f"--timeout must be > 0 seconds, got {args.timeout}")
    return args


def _status(result: dict[str, Any]) -> str:
    if "error" in result:
        return f"FAILED: {result['error']}"
    lat = result.get("lateness") or {}
    late = (f", lateness max {lat['max_ms']:.1f} ms at {lat['max_at_s']:.2f} s"
            f" ({lat.get('max_gc_ms', 0):.0f} ms of it GC)" if lat.get("n") else "")
    sched = "".join(f", {k} {result[k]:.4g}" for k in ("results", "best", "exploits")
                    if k in result and "best" in result)
    sug = result.get("suggest") or {}
    if sug.get("n"):
        sched += (f", {sug['n']} suggests p50 {sug['p50_ms']:.1f} ms "
                  f"max {sug['max_ms']:.1f} ms")
    return (f"run {result['run_s']:.2f} s, init {result['init_s']:.2f} s, "
            f"peak RSS {result['peak_rss_mib']:.0f} MiB{sched}{late}, ok={result['ok']}")


def run_all(args: argparse.Namespace, ray_version: str | None) -> list[dict[str, Any]]:
    samples = []
    for wl_name in args.workload:
        for fw in args.framework:
            if fw != "tune_async" and ray_version is None:
                print(f"[{wl_name}] {fw}: ray.tune not importable, skipped", flush=True)
                continue
            for rep in range(args.repeat):
                result = {**run_child(fw, WORKLOADS[wl_name], args), "repeat": rep}
                print(f"[{wl_name}] {fw} #{rep}: {_status(result)}", flush=True)
                samples.append(result)
    return samples


def _failed(sample: dict[str, Any]) -> bool:
    """ray.tune timing out is a finding; tune_async timing out, or any error, is a failure."""
    if sample.get("timed_out"):
        return sample["framework"] == "tune_async"
    return "error" in sample or not sample.get("ok")


def merge_previous(path: Path, samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The previous file's samples for cells not re-run, then this run's."""
    if not path.exists():
        return samples
    ran = {(s["workload"], s["framework"]) for s in samples}
    old = json.loads(path.read_text()).get("samples", [])
    return [s for s in old if (s["workload"], s["framework"]) not in ran] + samples


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        args.storage = args.storage or tempfile.mkdtemp(prefix="bench_child_")
        child_main(args)
        return 0
    ray_version = probe_ray()
    machine = machine_info(ray_version)
    try:
        new = run_all(args, ray_version)
    finally:
        _delete_storage()
    samples = merge_previous(args.out, new) if args.merge else new
    summary = summarize_all(samples)
    print()
    print_table(summary)
    report = {"machine": machine,
              "settings": {"heartbeat_ms": HEARTBEAT_S * 1000,
                           "workloads": {n: attrs.asdict(w) for n, w in WORKLOADS.items()}},
              "summary": summary, "samples": samples}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 1 if any(map(_failed, new)) else 0


if __name__ == "__main__":
    sys.exit(main())
