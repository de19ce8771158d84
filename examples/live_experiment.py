"""Watch and steer a running experiment from async code (tune.start / events / commands).

Run: python examples/live_experiment.py
"""

import asyncio
import time

import tune_async as tune


def trainable(config):
    for i in range(30):
        time.sleep(0.01)
        tune.report(loss=(config["lr"] - 0.3) ** 2 + 1 / (i + 1))


async def main():
    space = {"lr": tune.grid_search([0.1, 0.3, 0.9])}
    async with tune.start(trainable, config=space, metric="loss", mode="min",
                          verbose=0) as exp:
        extra = None
        async for event in exp.events():
            if isinstance(event, tune.TrialResult):
                result = event.result
                # Stop a trial that is clearly bad; add one more near the best guess.
                if result["training_iteration"] == 5 and result["loss"] > 0.3:
                    print(f"stopping {event.trial_id} (loss {result['loss']:.3f})")
                    await exp.stop_trial(event.trial_id)
                    if extra is None:
                        extra = await exp.add_trial({"lr": tune.uniform(0.25, 0.35)})
                        print(f"added {extra}")
            elif isinstance(event, tune.TrialCompleted):
                print(f"{event.trial_id} done at iteration "
                      f"{event.last_result.get('training_iteration')}")
        analysis = await exp.analysis()
    print("best config:", analysis.best_config)


if __name__ == "__main__":
    asyncio.run(main())
