"""A driver script the crash tests start, SIGKILL and start again with resume.

Usage: python resume_driver.py <local_dir> <name> <resume: 0|1>
Each trial appends every step it executes to ``steps.log`` in its trial directory, so a
test can count the work redone after a crash.
"""

from __future__ import annotations

import json
import os
import sys
import time

import tune_async as tune

STEPS = 12


def train(config, checkpoint_dir=None):
    start = 0
    if checkpoint_dir:
        with open(os.path.join(checkpoint_dir, "state.json")) as f:
            start = json.load(f)["step"]
    log = open(os.path.join(tune.get_trial_dir(), "steps.log"), "a")
    for step in range(start + 1, STEPS + 1):
        time.sleep(0.05)
        log.write(f"{step}\n")
        log.flush()
        if step % 3 == 0:
            with tune.checkpoint_dir(step=step) as d:
                with open(os.path.join(d, "state.json"), "w") as f:
                    json.dump({"step": step}, f)
        tune.report(step=step, score=step * config["x"])


def main():
    local_dir, name, resume = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    analysis = tune.run(
        train,
        name=name,
        local_dir=local_dir,
        config={"x": tune.grid_search([1, 2, 3, 4, 5, 6])},
        resume=resume,
        verbose=0,
        metric="score",
        mode="max",
    )
    print("FINISHED", sorted(t.status for t in analysis.trials))


if __name__ == "__main__":
    main()
