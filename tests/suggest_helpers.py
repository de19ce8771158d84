"""Shared checks for the searcher integrations (tests/test_suggest_<lib>.py).

Every searcher is driven through ``tune.run`` on the in-process ScriptedExecutor
(2 slots, no Ray) on a 2-D quadratic with its optimum at (1, -2):
``loss = (x - 1)**2 + (y + 2)**2`` over ``x, y in [-5, 5]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import tune_async as tune
from tests.scripted_executor import ScriptedExecutor
from tune_async.suggest import BasicVariantGenerator, ConcurrencyLimiter

OPTIMUM = (1.0, -2.0)
SPACE = {"x": tune.uniform(-5.0, 5.0), "y": tune.uniform(-5.0, 5.0)}


def quadratic(config: dict) -> None:
    tune.report(loss=(config["x"] - OPTIMUM[0]) ** 2 + (config["y"] - OPTIMUM[1]) ** 2)


def report_uniform(config: dict) -> None:
    tune.report(loss=config["uniform"])


def run(search_alg: Any, num_samples: int, config: dict | None = None,
        trainable: Callable = quadratic, **kwargs: Any) -> Any:
    kwargs.setdefault("verbose", 0)
    kwargs.setdefault("metric", "loss")
    kwargs.setdefault("mode", "min")
    return tune.run(trainable, config=dict(SPACE) if config is None else config,
                    search_alg=search_alg, num_samples=num_samples,
                    trial_executor=ScriptedExecutor(slots=2), **kwargs)


def best_loss(analysis: Any) -> float:
    return min(t.last_result["loss"] for t in analysis.trials)


def check_beats_random(make_searcher: Callable[[int], Any], budget: int, tolerance: float,
                       seeds: tuple = (0, 1, 2, 3, 4), results_dir: str | None = None,
                       config: dict | None = None, batch: bool = True) -> None:
    """Over ``seeds``: each searcher run of ``budget`` trials finds a loss below
    ``tolerance`` (the squared distance to the optimum), and their mean best loss
    beats random search's (BasicVariantGenerator, same budget, same seeds).

    Two trials run at a time, in batches (``ConcurrencyLimiter(batch=True)``): the
    searcher learns both results before it suggests again, so which of two concurrent
    trials finished first does not matter and a seeded run is reproducible. (With
    ``batch=False``, for a searcher that waits for each result, one trial runs at a time:
    reproducible too.)
    """
    found, random_found = [], []
    for seed in seeds:
        searcher = make_searcher(seed)
        if batch:
            searcher = ConcurrencyLimiter(searcher, max_concurrent=2, batch=True)
        else:
            searcher = ConcurrencyLimiter(searcher, max_concurrent=1)
        analysis = run(searcher, budget, config=config, local_dir=results_dir)
        assert len(analysis.trials) == budget
        found.append(best_loss(analysis))
        random_found.append(best_loss(run(BasicVariantGenerator(seed=seed), budget,
                                          local_dir=results_dir)))
    assert max(found) < tolerance, f"best losses {found} (tolerance {tolerance})"
    assert sum(found) / len(found) < sum(random_found) / len(random_found), (
        f"no better than random search: {found} vs random {random_found}"
    )


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Gaussian-process fits on a 2-core machine run ~3x faster with one BLAS thread
    (the default pool fights the trial threads)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def configs_of(analysis: Any) -> list[tuple]:
    return sorted((t.config["x"], t.config["y"]) for t in analysis.trials)


class Cancel(tune.Callback):
    """Sets ``ready`` once ``finished`` trials completed."""

    def __init__(self, finished: int):
        self.finished = finished
        self.completed: set[str] = set()
        self.ready = asyncio.Event()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.completed.add(trial.trial_id)
        if len(self.completed) >= self.finished:
            self.ready.set()


async def interrupt_and_resume(make_searcher: Callable[[], Any], results_dir: str,
                               num_samples: int = 12, name: str = "resumed") -> Any:
    """Run, cancel after a few trials finished, ``resume=True`` with a fresh searcher.

    Returns the analysis of the resumed run, checked: ``num_samples`` trials, all
    TERMINATED, no config twice, every trial of the first run kept with its config.
    """
    kwargs = dict(config=dict(SPACE), num_samples=num_samples, name=name,
                  local_dir=results_dir, verbose=0, metric="loss", mode="min")
    point = Cancel(finished=4)
    task = asyncio.create_task(tune.arun(quadratic, search_alg=make_searcher(),
                                         trial_executor=ScriptedExecutor(slots=2),
                                         callbacks=[point], **kwargs))
    waiter = asyncio.create_task(point.ready.wait())
    done, _ = await asyncio.wait({task, waiter}, timeout=30,
                                 return_when=asyncio.FIRST_COMPLETED)
    assert waiter in done, "the experiment never reached the cancel point"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    exp_dir = os.path.join(results_dir, name)
    before = _saved_trials(exp_dir)
    assert 4 <= len(before) < num_samples, "cancelled too late to test a resume"

    analysis = await tune.arun(quadratic, search_alg=make_searcher(), resume=True,
                               trial_executor=ScriptedExecutor(slots=2), **kwargs)
    trials = analysis.trials
    assert len(trials) == num_samples
    assert len({t.trial_id for t in trials}) == num_samples
    assert {t.status for t in trials} == {"TERMINATED"}
    configs = configs_of(analysis)
    assert len(set(configs)) == num_samples, f"a config was suggested twice: {configs}"
    by_id = {t.trial_id: t for t in trials}
    for trial_id, config in before.items():
        assert by_id[trial_id].config == config
    return analysis


def _saved_trials(exp_dir: str) -> dict:
    from tune_async.state import load_state

    [newest] = sorted(n for n in os.listdir(exp_dir) if n.startswith("experiment_state-"))[-1:]
    state = load_state(os.path.join(exp_dir, newest))
    return {t["trial_id"]: json.loads(json.dumps(t["config"])) for t in state["checkpoints"]}


DOMAIN_SPACE = {
    "uniform": tune.uniform(-2.0, 3.0),
    "quniform": tune.quniform(0.0, 10.0, 0.5),
    "loguniform": tune.loguniform(1e-4, 1e-1),
    "qloguniform": tune.qloguniform(1e-4, 1e-1, 5e-5),
    "randint": tune.randint(-3, 4),
    "qrandint": tune.qrandint(0, 20, 5),
    "lograndint": tune.lograndint(1, 1000),
    "qlograndint": tune.qlograndint(2, 1000, 2),
    "choice": tune.choice(["a", "b", 3]),
    "nested": {"lr": tune.uniform(0.1, 0.2), "const": "kept"},
    "fixed": "constant",
}


def check_domain_values(config: dict) -> None:
    """Every value of a config drawn from DOMAIN_SPACE (or a subset) is in its domain."""

    def multiple(value: float, q: float) -> bool:
        return abs(round(value / q) * q - value) < 1e-9

    checks = {
        "uniform": lambda v: isinstance(v, float) and -2.0 <= v <= 3.0,
        "quniform": lambda v: 0.0 <= v <= 10.0 and multiple(v, 0.5),
        "loguniform": lambda v: isinstance(v, float) and 1e-4 <= v <= 1e-1,
        "qloguniform": lambda v: 1e-4 <= v <= 1e-1 and multiple(v, 5e-5),
        "randint": lambda v: type(v) is int and -3 <= v < 4,
        "qrandint": lambda v: type(v) is int and 0 <= v <= 20 and v % 5 == 0,
        "lograndint": lambda v: type(v) is int and 1 <= v <= 1000,
        "qlograndint": lambda v: type(v) is int and 2 <= v <= 1000 and v % 2 == 0,
        "choice": lambda v: v in ("a", "b", 3),
        "randn": lambda v: isinstance(v, float),
        "qrandn": lambda v: multiple(v, 0.25),
    }
    for key, value in config.items():
        if key in checks:
            assert checks[key](value), f"{key}={value!r}"
    if "nested" in config:
        assert 0.1 <= config["nested"]["lr"] <= 0.2
        assert config["nested"]["const"] == "kept"
    if "fixed" in config:
        assert config["fixed"] == "constant"
