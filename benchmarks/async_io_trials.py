"""Many concurrent I/O-bound async trials on Ray: shared hosts versus an actor per trial.

    python benchmarks/async_io_trials.py                      # issue 11's 1,000 trials, shared hosts
    python benchmarks/async_io_trials.py --local-dir /dev/shm/aio   # the same, files on tmpfs
    python benchmarks/async_io_trials.py --mode actor --trials 100 --cpu 0.1

Each trial awaits ``asyncio.sleep(--sleep)`` (a stand-in for a network call) and
reports, ``--results`` times. ``--mode shared`` packs ``--per-worker`` trials into
each host actor (``tune.run(trials_per_worker=...)``, one event loop per host);
``--mode actor`` is the one-trial-per-actor path (every trial a process of its own,
as many at once as ``--cpu`` lets fit). Ray is started before the clock starts.
Prints wall time, results/s, the number of trial processes, the driver loop's
heartbeat lateness (bench.py's 5 ms heartbeat; also with nothing running, for the
machine's own share) and the machine's load average.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time

import ray
from bench import IDLE_HEARTBEAT_S, _beside_heartbeat

import tune_async as tune


async def io_trial(config: dict) -> None:
    for step in range(config["results"]):
        await asyncio.sleep(config["sleep"])
        await tune.areport(step=step)


async def run_once(args: argparse.Namespace, local_dir: str) -> dict:
    per_worker = args.per_worker if args.mode == "shared" else 1
    cpu = args.cpu if args.cpu else min(1.0, 2.0 / args.trials)  # by default all fit at once

    def work():
        return tune.arun(io_trial, config={"results": args.results, "sleep": args.sleep},
                         num_samples=args.trials, resources_per_trial={"cpu": cpu},
                         trials_per_worker=per_worker, local_dir=local_dir, verbose=0)

    # The same heartbeat with nothing running: what the machine's load alone costs it.
    _, _, idle = await _beside_heartbeat(lambda: asyncio.sleep(IDLE_HEARTBEAT_S))
    load_before = os.getloadavg()
    analysis, wall, lateness = await _beside_heartbeat(work)
    results = sum(t.last_result.get("training_iteration", 0) for t in analysis.trials)
    return {
        "mode": args.mode, "trials": args.trials, "results_per_trial": args.results,
        "sleep_s": args.sleep, "cpu_per_trial": cpu, "trials_per_worker": per_worker,
        "wall_s": round(wall, 2), "results": results,
        "results_per_s": round(results / wall, 1),
        "trial_processes": len({t.last_result.get("pid") for t in analysis.trials}),
        "finished": sum(t.status == "TERMINATED" for t in analysis.trials),
        "heartbeat_ms": _rounded(lateness),
        "idle_heartbeat_ms": _rounded(idle),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }


def _rounded(stats: dict) -> dict:
    return {k: round(v, 1) if isinstance(v, float) else v for k, v in stats.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["shared", "actor"], default="shared")
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--results", type=int, default=10)
    parser.add_argument("--sleep", type=float, default=0.1)  # issue 11: 0.1 s ten times
    parser.add_argument("--per-worker", type=int, default=500)
    parser.add_argument("--cpu", type=float, default=None,
                        help="CPU per trial (default: 2 / trials, so that all fit at once)")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the Ray instance")
    parser.add_argument("--local-dir", default=None)
    args = parser.parse_args()
    began = time.perf_counter()
    ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False,
             configure_logging=False, log_to_driver=False)
    ray_start = time.perf_counter() - began
    with tempfile.TemporaryDirectory() as tmp:
        figures = asyncio.run(run_once(args, args.local_dir or tmp))
    figures["ray_start_s"] = round(ray_start, 2)
    print(json.dumps(figures), flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
