"""A tiny deterministic cluster for scheduler tests: trials move through the
transition table, the scheduler's hooks are called as the controller calls them."""

from __future__ import annotations

import pickle
import random
from collections.abc import Callable
from typing import Any

import tune_async as tune
from tune_async import transitions
from tune_async.schedulers import Decision
from tune_async.testing.conformance import FakeRunner
from tune_async.transitions import Event
from tune_async.trial import Trial, TrialStatus, TrialView, unwrap

WAITING = (TrialStatus.PENDING, TrialStatus.PAUSED)


def make_views(configs: list[dict]) -> list[TrialView]:
    return [TrialView(Trial(trainable_name="sim", config=dict(c), trial_id=f"t{i:03d}",
                            experiment_tag=str(i)))
            for i, c in enumerate(configs)]


class Quadratic(tune.Trainable):
    """loss = (x - 0.3)^2 + 1/i: the best trial is known from its config; checkpointable,
    so trials can be paused and resumed."""

    def setup(self, config):
        self.x = config["x"]
        self.i = 0

    def step(self):
        self.i += 1
        return {"loss": (self.x - 0.3) ** 2 + 1.0 / self.i, "i": self.i}

    def save_checkpoint(self, checkpoint_dir):
        return {"i": self.i}

    def load_checkpoint(self, checkpoint):
        self.i = checkpoint["i"]


class Sim:
    """Drives ``scheduler`` over ``views``: at most ``capacity`` run; each running trial
    produces one result per round; ``curve(config, iteration)`` is its loss."""

    def __init__(self, scheduler: Any, views: list[TrialView], curve: Callable,
                 capacity: int | None = None, max_iter: int = 10_000,
                 metric: str = "loss", time_attr: str = "training_iteration",
                 shuffle_seed: int | None = None) -> None:
        self.scheduler = scheduler
        self.views = views
        self.curve = curve
        self.runner = FakeRunner(views, capacity=capacity)
        self.max_iter = max_iter
        self.metric = metric
        self.time_attr = time_attr
        self.iters = {v.trial_id: 0 for v in views}
        self.decisions: list[tuple[str, int, str]] = []  # (trial id, iteration, action)
        self.stopped_waiting: list[str] = []
        self.starts = 0
        # Trials report in a random order each round (asynchrony), if seeded.
        self.rng = random.Random(shuffle_seed) if shuffle_seed is not None else None

    def add_all(self) -> None:
        for view in self.views:
            self.scheduler.on_trial_add(self.runner, view)

    def start_chosen(self) -> None:
        while True:
            chosen = self.scheduler.choose_trial_to_run(self.runner)
            if chosen is None:
                return
            again = self.scheduler.choose_trial_to_run(self.runner)
            assert unwrap(again) is unwrap(chosen), "choose_trial_to_run is not idempotent"
            trial = unwrap(chosen)
            assert trial.status in WAITING and self.runner.has_resources_for_trial(chosen)
            if trial.status is TrialStatus.PAUSED:
                transitions.apply(trial, Event.UNPAUSE)
            transitions.apply(trial, Event.START)
            self.starts += 1

    def result(self, view: TrialView) -> dict:
        it = self.iters[view.trial_id]
        return {"training_iteration": it, "time_total_s": float(it), "done": False,
                "trial_id": view.trial_id, self.metric: self.curve(view.config, it)}

    def step(self, view: TrialView) -> None:
        trial = unwrap(view)
        self.iters[view.trial_id] += 1
        result = self.result(view)
        trial.last_result = result
        if self.iters[view.trial_id] >= self.max_iter:
            result["done"] = True
            transitions.apply(trial, Event.COMPLETE)
            self.scheduler.on_trial_complete(self.runner, view, result)
            return
        decision = self.scheduler.on_trial_result(self.runner, view, result)
        self.apply(view, decision)

    def apply(self, view: TrialView, decision: Any) -> None:
        action, stops = decision, ()
        if isinstance(decision, Decision):
            action, stops = decision.action, decision.stop_trials
        self.decisions.append((view.trial_id, self.iters[view.trial_id], action))
        for trial_id in stops:
            other = self.runner.get_trial(trial_id)
            assert other.status in WAITING, f"stop_trials named {other} ({other.status})"
            transitions.apply(unwrap(other), Event.STOP)
            self.stopped_waiting.append(trial_id)
            self.scheduler.on_trial_remove(self.runner, other)
        if action == "PAUSE":
            transitions.apply(unwrap(view), Event.PAUSE)
        elif action == "STOP":
            transitions.apply(unwrap(view), Event.STOP)

    def advance(self, rounds: int) -> None:
        """Part of a run: ``rounds`` rounds of starting what is chosen and stepping it."""
        for _ in range(rounds):
            self.start_chosen()
            for view in [v for v in self.views if v.status is TrialStatus.RUNNING]:
                self.step(view)

    def resume_with(self, scheduler: Any) -> Any:
        """Hand the schedule, pickled as the experiment state keeps it, to ``scheduler``
        (as resume does) and drive that one from here on; returns the state."""
        state = pickle.loads(pickle.dumps(self.scheduler.get_state()))
        scheduler.set_state(state, self.runner)
        self.scheduler = scheduler
        return state

    def run(self, rounds: int = 100_000) -> None:
        for _ in range(rounds):
            self.start_chosen()
            running = [v for v in self.views if v.status is TrialStatus.RUNNING]
            if not running:
                waiting = [v for v in self.views if v.status in WAITING]
                assert not waiting, f"stalled: {waiting} wait, none chosen"
                return
            if self.rng is not None:
                self.rng.shuffle(running)
            for view in running:
                if view.status is TrialStatus.RUNNING:
                    self.step(view)
        raise AssertionError("the simulation did not finish")

    @property
    def total(self) -> int:
        return sum(self.iters.values())
