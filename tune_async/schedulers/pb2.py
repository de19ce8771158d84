"""Population Based Bandits (PB2) (mirrors ``ray.tune.schedulers.pb2``, 1.x).

PBT whose explore step is a GP bandit: a time-varying Gaussian process learns how
much each hyperparameter setting improves the reward per unit of time, and the
next config maximises an upper confidence bound within ``hyperparam_bounds``.
The GP fit runs in a worker thread (the hooks are coroutines), so results keep
flowing while it runs.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import anyio
import numpy as np

from tune_async.error import TuneError
from tune_async.schedulers.pbt import PopulationBasedTraining, _ExploitPlan, _Member, _Plan
from tune_async.schedulers.trial_scheduler import Decision

logger = logging.getLogger(__name__)

EXTRA_HINT = "pip install 'tune_async[pb2]'"
MAX_ROWS = 5000  # the GP uses the newest 1000 changes; older rows only feed those diffs


def _require_gp_library() -> None:
    try:
        import scipy  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"PB2 needs scikit-learn (and scipy) for its Gaussian process: {EXTRA_HINT} "
            f"(the 'pb2' extra). Missing: {exc.name}"
        ) from exc


def _sample_bounds(config: dict, key: str, bound: Any) -> None:
    value = random.uniform(bound[0], bound[1])
    config[key] = int(value) if all(isinstance(b, int) for b in bound) else value


class PB2(PopulationBasedTraining):
    """Population Based Bandits (PB2): https://arxiv.org/abs/2002.02518.

    Like :class:`PopulationBasedTraining`, poorly performing trials periodically
    clone the state of top performers; their hyperparameters are then chosen by
    GP-bandit optimisation (time-varying GP-UCB) instead of random perturbation.
    The GP predicts the improvement over the next period. Configs and exploits are
    logged as by PBT (``pbt_global.txt``, ``pbt_policy_<trial_id>.txt``).

    Args:
        time_attr: The result attribute measuring progress (increasing).
        metric: The result attribute to optimise.
        mode: ``"min"`` or ``"max"``.
        perturbation_interval: Trials are considered for perturbation every this
            many units of ``time_attr``.
        hyperparam_bounds: ``{key: [min, max]}``: the continuous range of each
            hyperparameter (ints stay ints). Keys missing from a trial's config are
            sampled uniformly from their range.
        quantile_fraction: The top fraction donates to the bottom fraction (0..0.5).
        log_config: Write the policy files.
        require_attrs: Raise if a result lacks ``time_attr`` or ``metric``.
        synch: Synchronous mode (see :class:`PopulationBasedTraining`).

    Needs scikit-learn: ``pip install 'tune_async[pb2]'``.
    """

    def __init__(
        self,
        time_attr: str = "time_total_s",
        metric: str | None = None,
        mode: str | None = None,
        perturbation_interval: float = 60.0,
        hyperparam_bounds: dict | None = None,
        quantile_fraction: float = 0.25,
        log_config: bool = True,
        require_attrs: bool = True,
        synch: bool = False,
    ) -> None:
        _require_gp_library()
        hyperparam_bounds = hyperparam_bounds or {}
        for key, value in hyperparam_bounds.items():
            if not isinstance(value, (list, tuple)) or len(value) != 2:
                raise ValueError(
                    f"hyperparam_bounds[{key!r}] must be a list or tuple of size 2 "
                    f"([min, max]), but got {value!r} instead"
                )
            if not value[0] < value[1]:
                raise ValueError(
                    f"hyperparam_bounds[{key!r}] must be [min, max] with min < max, got {value!r}"
                )
        if not hyperparam_bounds:
            raise TuneError("`hyperparam_bounds` must be specified to use PB2 scheduler.")
        super().__init__(
            time_attr=time_attr, metric=metric, mode=mode,
            perturbation_interval=perturbation_interval, hyperparam_mutations=None,
            quantile_fraction=quantile_fraction, resample_probability=0.0,
            custom_explore_fn=None, log_config=log_config, require_attrs=require_attrs,
            synch=synch,
        )
        self._hyperparam_bounds = {k: tuple(v) for k, v in hyperparam_bounds.items()}
        self._keys = list(self._hyperparam_bounds)
        self._rows: list[tuple] = []  # (trial_id, time, values, score) per perturbation
        self.last_exploration_time = 0.0
        # Configs chosen since the data last advanced in time (this round's batch).
        self.current: np.ndarray | None = None
        self._rng = np.random.default_rng(np.random.randint(2**31))  # np.random.seed applies

    def _check_explore_spec(self, mutations: dict, custom_explore_fn: Any) -> None:
        pass  # PB2 explores within hyperparam_bounds (checked above)

    def _mutation_keys(self) -> dict:
        return self._hyperparam_bounds

    def on_trial_add(self, trial_runner: Any, trial: Any) -> None:
        super().on_trial_add(trial_runner, trial)
        self._fill_missing(trial, self._hyperparam_bounds, _sample_bounds)

    def _save_trial_state(self, member: _Member, time: float, result: dict,
                          trial: Any) -> float:
        score = super()._save_trial_state(member, time, result, trial)
        values = tuple(float(trial.config[k]) for k in self._keys)
        self._rows.append((trial.trial_id, float(time), values, float(score)))
        if len(self._rows) > MAX_ROWS:
            del self._rows[: len(self._rows) - MAX_ROWS]
        return score

    # ---- hooks: coroutines, so the GP fit runs in a worker thread --------------------
    async def on_trial_result(self, trial_runner: Any, trial: Any, result: dict) -> Any:
        plan = self._plan_result(trial_runner, trial, result)
        if isinstance(plan, _Plan):
            await self._explore_off_loop(plan)
        return self._conclude(trial_runner, plan)

    async def on_trial_complete(self, trial_runner: Any, trial: Any, result: dict) -> Any:
        return await self._finish_plan_off_loop(trial_runner, self._ended(trial_runner, trial))

    async def on_trial_error(self, trial_runner: Any, trial: Any) -> Any:
        return await self._finish_plan_off_loop(trial_runner, self._ended(trial_runner, trial))

    async def on_trial_remove(self, trial_runner: Any, trial: Any) -> Any:
        return await self._finish_plan_off_loop(trial_runner, self._ended(trial_runner, trial))

    async def _finish_plan_off_loop(self, trial_runner: Any,
                                    plan: _Plan | None) -> Decision | None:
        """The exploits of waiting trials (a sync round the trial's end completed)."""
        if plan is not None:
            await self._explore_off_loop(plan)
        return self._side_only(self._conclude(trial_runner, plan))

    async def _explore_off_loop(self, plan: _Plan) -> None:
        if not plan.exploits:
            return
        max_time = max((r[1] for r in self._rows), default=0.0)
        if max_time > self.last_exploration_time:
            self.current = None  # a new round: earlier choices no longer compete
        jobs = [(e.target, e.donor, dict(self._members[e.donor].saved.config))
                for e in plan.exploits]
        rows, current = list(self._rows), self.current
        seed = int(self._rng.integers(2**31))
        # Hooks never interleave, so nothing changes the population meanwhile.
        results = await anyio.to_thread.run_sync(
            self._select_all, rows, current, jobs, seed
        )
        for exploit, (config, entry, new_current) in zip(plan.exploits, results, strict=True):
            exploit.config = config
            if entry is not None:
                self._rows.append(entry)
            self.current = new_current
        self.last_exploration_time = max(max_time, self.last_exploration_time)

    def _select_all(self, rows: list[tuple], current: Any, jobs: list[tuple],
                    seed: int) -> list[tuple]:
        """Choose each job's config in turn (runs in a worker thread, on copies)."""
        from tune_async.schedulers import pb2_utils

        rng = np.random.default_rng(seed)
        out = []
        for target, donor, config in jobs:
            new_config, entry = pb2_utils.explore(rows, self._keys, self._hyperparam_bounds,
                                                  current, donor, target, config, rng)
            if entry is not None:
                rows = [*rows, entry]
            new = np.array([[float(new_config[k]) for k in self._keys]])
            current = new if current is None else np.vstack([current, new])
            out.append((new_config, entry, current))
        return out

    def _get_new_config(self, exploit: _ExploitPlan) -> dict:
        # Only reached through PBT's plain hooks; PB2's are coroutines (see above).
        raise TuneError("PB2 chooses configs in its coroutine hooks")

    # ---- state -----------------------------------------------------------------------
    def get_state(self) -> dict:
        state = super().get_state()
        state["pb2"] = {"rows": list(self._rows), "current": self.current,
                        "last_exploration_time": self.last_exploration_time}
        return state

    def set_state(self, state: dict, trial_runner: Any) -> None:
        super().set_state(state, trial_runner)
        pb2 = state.get("pb2") or {}
        self._rows = list(pb2.get("rows", []))
        self.current = pb2.get("current")
        self.last_exploration_time = pb2.get("last_exploration_time", 0.0)

    def debug_string(self) -> str:
        return (f"PB2: {self._num_checkpoints} checkpoints, "
                f"{self._num_perturbations} perturbs")
