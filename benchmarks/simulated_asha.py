"""ASHA versus FIFO over many simulated trials (tune.SimulatedExecutor, virtual clock).

    python benchmarks/simulated_asha.py --trials 10000 --scheduler asha fifo

Prints one line per scheduler: wall seconds, simulated steps, virtual seconds and the
best config. Results go to a temporary directory (pass --local-dir to keep them; a
tmpfs such as /dev/shm keeps the file system out of the figure).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import tune_async as tune
from tune_async.schedulers import ASHAScheduler, FIFOScheduler

MAX_T = 20


def curve(config: dict, iteration: int) -> tuple[dict, float]:
    """Loss falls as 1/iteration towards ``a``; a step takes 1 + a virtual seconds."""
    return {"loss": config["a"] / iteration + 0.01 * iteration}, 1.0 + config["a"]


def run_one(name: str, trials: int, slots: int, local_dir: str) -> str:
    scheduler = (ASHAScheduler(max_t=MAX_T, grace_period=1, reduction_factor=3)
                 if name == "asha" else FIFOScheduler())
    executor = tune.SimulatedExecutor(curve, slots=slots)
    began = time.perf_counter()
    analysis = tune.run(executor.trainable, config={"a": tune.uniform(0, 1)},
                        num_samples=trials, scheduler=scheduler, metric="loss", mode="min",
                        stop={"training_iteration": MAX_T}, trial_executor=executor,
                        local_dir=local_dir, verbose=0)
    wall = time.perf_counter() - began
    return (f"{name}: {trials} trials, {slots} slots: {wall:.1f} s wall, {executor.steps} steps, "
            f"{executor.clock.now():.0f} virtual s, best a={analysis.best_config['a']:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--scheduler", nargs="+", default=["asha", "fifo"],
                        choices=["asha", "fifo"])
    parser.add_argument("--local-dir", default=None)
    args = parser.parse_args()
    # One directory for every run, deleted at the end: on ext4 without a journal, files
    # created within minutes of a mass deletion cost ~1 ms of kernel time each (see
    # bench.py's _STORAGE_TO_DELETE), which timed the second run's disk, not its work.
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.scheduler:
            print(run_one(name, args.trials, args.slots, args.local_dir or tmp), flush=True)


if __name__ == "__main__":
    main()
