"""A driver the Ctrl+C test interrupts: trials that never end by themselves."""

from __future__ import annotations

import sys
import time

import tune_async as tune


def forever(config):
    while True:
        time.sleep(0.02)
        tune.report(x=config["x"])


if __name__ == "__main__":
    analysis = tune.run(forever, name="interrupted", local_dir=sys.argv[1], verbose=0,
                        config={"x": tune.grid_search([1, 2, 3])})
    print("FINISHED", [t.status.value for t in analysis.trials],
          [t.results_recorded for t in analysis.trials], flush=True)
