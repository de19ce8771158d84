"""Quickstart: the ray.tune 1.x docs' first example, with ``import tune_async as tune``.

Run: python examples/quickstart.py
"""

import asyncio

import tune_async as tune


def objective(step, alpha, beta):
    return (0.1 + alpha * step / 100) ** (-1) + beta * 0.1


def training_function(config):
    alpha, beta = config["alpha"], config["beta"]
    for step in range(10):
        tune.report(mean_loss=objective(step, alpha, beta))


def main():
    # 1. The 1.x script, unchanged.
    analysis = tune.run(
        training_function,
        config={
            "alpha": tune.grid_search([0.001, 0.01, 0.1]),
            "beta": tune.choice([1, 2, 3]),
        },
        metric="mean_loss",
        mode="min",
        verbose=1,
    )
    print("Best config:", analysis.best_config)
    print("Best logdir:", analysis.best_logdir)
    df = analysis.results_df
    print(df[["mean_loss", "training_iteration"]])

    # 2. The same experiment awaited inside a running event loop, which stays responsive.
    async def service():
        ticks = 0

        async def heartbeat():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.05)
                ticks += 1

        beat = asyncio.create_task(heartbeat())
        result = await tune.arun(
            training_function,
            config={"alpha": tune.uniform(0.001, 0.1), "beta": tune.randint(1, 4)},
            num_samples=4,
            metric="mean_loss",
            mode="min",
            verbose=0,
        )
        beat.cancel()
        return result, ticks

    analysis, ticks = asyncio.run(service())
    print(f"arun: best config {analysis.best_config}; the loop ticked {ticks} times meanwhile")


if __name__ == "__main__":
    main()
