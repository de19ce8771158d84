"""Population Based Training and its replay (mirrors ``ray.tune.schedulers.pbt``, 1.x).

PBT decides with values: at a trial's perturbation point an upper-quantile trial
returns ``Decision(save=True)`` (its state is kept in memory as a donor) and a
lower-quantile trial returns ``Decision(exploit=Exploit(donor, config, tag))``
(it continues from the donor's saved state with an explored config). The
controller carries both out; the scheduler never touches a trial.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import random
import shutil
from collections.abc import Callable
from numbers import Number
from typing import Any

import attrs

from tune_async.error import AssertedValueError
from tune_async.result import TRAINING_ITERATION
from tune_async.schedulers.trial_scheduler import (
    CONTINUE,
    PAUSE,
    Decision,
    Exploit,
    FIFOScheduler,
    first_that_fits,
)
from tune_async.search.sample import Domain, Function
from tune_async.search.variant_generator import format_vars
from tune_async.trial import TrialStatus
from tune_async.utils.util import SafeFallbackEncoder

logger = logging.getLogger(__name__)

_WAITING = (TrialStatus.PENDING, TrialStatus.PAUSED)
_FINISHED = (TrialStatus.TERMINATED, TrialStatus.ERROR)


# ---------------------------------------------------------------------------
# Explore (module functions with 1.x's names, so user code importing them works)


def explore(config: dict, mutations: dict, resample_probability: float,
            custom_explore_fn: Callable | None) -> dict:
    """Return a copy of ``config`` perturbed as ``mutations`` specify.

    Args:
        config: The hyperparameters to start from (the donor's).
        mutations: ``hyperparam_mutations`` (see :class:`PopulationBasedTraining`).
        resample_probability: Chance of resampling a value from its spec instead of
            perturbing it (×1.2 / ×0.8, or the adjacent list element).
        custom_explore_fn: Applied last, as ``f(config) -> config``.
    """
    new_config = copy.deepcopy(config)
    for key, spec in mutations.items():
        if isinstance(spec, dict):
            new_config[key] = explore(config[key], spec, resample_probability, None)
        elif isinstance(spec, (list, tuple)):
            new_config[key] = _explore_list(config.get(key), list(spec), resample_probability)
        else:
            new_config[key] = _explore_continuous(config.get(key), spec, resample_probability)
    if custom_explore_fn:
        new_config = custom_explore_fn(new_config)
        if new_config is None:
            raise ValueError("custom_explore_fn must return the new config, got None")
    return new_config


def _explore_list(value: Any, choices: list, resample_probability: float) -> Any:
    if random.random() < resample_probability or value not in choices:
        return random.choice(choices)
    index = choices.index(value)
    if random.random() > 0.5:
        return choices[max(0, index - 1)]
    return choices[min(len(choices) - 1, index + 1)]


def _explore_continuous(value: Any, spec: Any, resample_probability: float) -> Any:
    # 1.x multiplies every Domain's value (tune.choice too); a value that cannot be
    # multiplied (a string from tune.choice, a missing key) is resampled instead.
    numeric = isinstance(value, Number) and not isinstance(value, bool)
    if not numeric or random.random() < resample_probability:
        new = _sample(spec)
    elif random.random() > 0.5:
        new = value * 1.2
    else:
        new = value * 0.8
    if type(value) is int:
        new = int(new)
    return new


def _sample(spec: Any) -> Any:
    return spec.sample(None) if isinstance(spec, Domain) else spec()


def make_experiment_tag(orig_tag: str, config: dict, mutations: dict) -> str:
    """The trial's tag after an exploit: ``<orig>@perturbed[<mutated values>]``."""
    resolved = {("config", key): config[key] for key in mutations if key in config}
    return f"{orig_tag}@perturbed[{format_vars(resolved)}]"


def fill_config(config: dict, attr: str, search_space: Any) -> None:
    """Set ``config[attr]`` by sampling ``search_space`` (a mutation spec)."""
    if isinstance(search_space, Domain):
        config[attr] = search_space.sample(None)
    elif callable(search_space):
        config[attr] = search_space()
    elif isinstance(search_space, (list, tuple)):
        config[attr] = random.choice(list(search_space))
    elif isinstance(search_space, dict):
        config[attr] = {}
        for key, value in search_space.items():
            fill_config(config[attr], key, value)


def _check_mutations(mutations: dict, path: str = "") -> None:
    for key, value in mutations.items():
        where = f"hyperparam_mutations[{path}{key!r}]"
        if isinstance(value, Function):
            raise ValueError(
                f"{where}: arbitrary tune.sample_from objects are not supported as "
                f"`hyperparam_mutations` values. Use the built-in primitives like "
                f"tune.uniform, tune.loguniform, a list or a callable instead."
            )
        if isinstance(value, dict):
            _check_mutations(value, f"{path}{key!r}][")
        elif isinstance(value, (list, tuple)):
            if not value:
                raise ValueError(f"{where}: a list of values must not be empty")
        elif not (isinstance(value, Domain) or callable(value)):
            raise TypeError(
                f"{where}: `hyperparam_mutations` values must be a list, a tuple, a dict, "
                f"a tune search space object or a callable, got {value!r}"
            )


# ---------------------------------------------------------------------------
# Per-trial state


@attrs.frozen
class _Saved:
    """What a donor's saved state holds: the config, iteration and time it was saved at."""

    config: dict
    iteration: int
    time: float


@attrs.define
class _Member:
    """PBT's record of one trial (1.x's PBTTrialState)."""

    orig_tag: str
    local_dir: str = ""
    last_score: float | None = None
    last_perturbation_time: float = 0.0
    last_train_time: float = 0.0  # time_attr at its last perturbation check (1.x)
    time: float = 0.0  # the newest time_attr seen: progress, for time-multiplexing
    saved: _Saved | None = None  # set while it is an upper-quantile donor
    finished: bool = False


_MEMBER_FIELDS = frozenset(field.name for field in attrs.fields(_Member))


@attrs.define
class _ExploitPlan:
    target: str
    donor: str
    target_iteration: int
    config: dict | None = None  # set from _get_new_config (PB2's runs off the loop)


@attrs.define
class _Plan:
    """What one hook call decided, before the explored configs are known."""

    trial_id: str | None
    action: str = CONTINUE
    save: bool = False
    exploits: list[_ExploitPlan] = attrs.field(factory=list)


class PopulationBasedTraining(FIFOScheduler):
    """Population Based Training (PBT): https://arxiv.org/abs/1711.09846.

    PBT trains a population of trials in parallel. Periodically, poorly performing
    trials clone the state of top performers and perturb their hyperparameters.
    Every added trial is part of the population; if more trials exist than the
    cluster fits, they are time-multiplexed so the population progresses evenly.

    In ``<local_dir>/<experiment>/``, every exploit is logged to ``pbt_global.txt``
    and each trial's schedule to ``pbt_policy_<trial_id>.txt`` (JSON lines:
    ``[target tag, donor tag, target iteration, donor iteration, old config,
    new config]``); :class:`PopulationBasedTrainingReplay` replays one.

    Args:
        time_attr: The result attribute measuring progress (must increase
            monotonically), e.g. ``training_iteration``.
        reward_attr: Deprecated: use ``metric`` and ``mode="max"``.
        metric: The result attribute to optimise.
        mode: ``"min"`` or ``"max"``.
        perturbation_interval: Trials are considered for perturbation every
            this many units of ``time_attr`` (each one saves state, so not too often).
        hyperparam_mutations: ``{key: spec}``; a spec is a list (discrete values,
            perturbed to an adjacent one), a tune search space object or a callable
            (continuous: ×1.2 or ×0.8, or resampled), or a dict of such specs for a
            nested config. Keys missing from a trial's config are sampled from it.
        quantile_fraction: The top fraction donates to the bottom fraction (0..0.5).
        resample_probability: The chance of resampling a value from its spec.
        custom_explore_fn: ``f(config) -> config``, applied after the mutations.
            One of ``hyperparam_mutations`` and ``custom_explore_fn`` is required.
        log_config: Write the policy files above.
        require_attrs: Raise if a result lacks ``time_attr`` or ``metric``
            (else a warning and the result is ignored).
        synch: Synchronous PBT: every trial waits (PAUSED) at each perturbation
            point until all have reached it, then all are perturbed at once.
        burn_in_period: No perturbation before this much ``time_attr`` has passed.
            (Not a 1.3 argument: it comes last, so 1.x's positional order, with
            ``hyperparam_mutations`` sixth, is kept.)
    """

    def __init__(
        self,
        time_attr: str = "time_total_s",
        reward_attr: str | None = None,
        metric: str | None = None,
        mode: str | None = None,
        perturbation_interval: float = 60.0,
        hyperparam_mutations: dict | None = None,
        quantile_fraction: float = 0.25,
        resample_probability: float = 0.25,
        custom_explore_fn: Callable | None = None,
        log_config: bool = True,
        require_attrs: bool = True,
        synch: bool = False,
        burn_in_period: float = 0.0,
    ) -> None:
        hyperparam_mutations = hyperparam_mutations or {}
        if not isinstance(hyperparam_mutations, dict):
            raise TypeError(f"hyperparam_mutations must be a dict, got {hyperparam_mutations!r}")
        _check_mutations(hyperparam_mutations)
        self._check_explore_spec(hyperparam_mutations, custom_explore_fn)
        if custom_explore_fn is not None and not callable(custom_explore_fn):
            raise TypeError(f"custom_explore_fn must be callable, got {custom_explore_fn!r}")
        if not 0 <= quantile_fraction <= 0.5:
            raise ValueError(
                f"quantile_fraction must be between 0 and 0.5, got {quantile_fraction!r}"
            )
        if not perturbation_interval > 0:
            raise ValueError(
                f"perturbation_interval must be a positive number, got {perturbation_interval!r}"
            )
        if not 0 <= resample_probability <= 1:
            raise ValueError(
                f"resample_probability must be between 0 and 1, got {resample_probability!r}"
            )
        if mode not in (None, "min", "max"):
            raise AssertedValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if reward_attr is not None:
            mode, metric = "max", reward_attr
            logger.warning("`reward_attr` is deprecated and will be removed in a future "
                           "version of Tune. Setting `metric=%s` and `mode=max`.", reward_attr)
        self._metric = metric
        self._mode = mode
        if self._mode and not self._metric:
            self.set_search_properties(None, None)  # mode only: the default metric
        self._time_attr = time_attr
        self._perturbation_interval = perturbation_interval
        self._burn_in_period = burn_in_period
        self._hyperparam_mutations = hyperparam_mutations
        self._quantile_fraction = quantile_fraction
        self._resample_probability = resample_probability
        self._custom_explore_fn = custom_explore_fn
        self._log_config = log_config
        self._require_attrs = require_attrs
        self._synch = synch
        self._next_perturbation_sync = perturbation_interval
        self._members: dict[str, _Member] = {}
        self._num_checkpoints = 0
        self._num_perturbations = 0
        self._warned: set[str] = set()

    def _check_explore_spec(self, mutations: dict, custom_explore_fn: Any) -> None:
        # 1.x meant to raise this but its check never ran (it sat inside the loop).
        if not mutations and not custom_explore_fn:
            raise ValueError("You must specify at least one of `hyperparam_mutations` or "
                             "`custom_explore_fn` to use PBT.")

    @property
    def _metric_op(self) -> float:
        return 1.0 if self._mode == "max" else -1.0

    # ---- population ----------------------------------------------------------------
    def on_trial_add(self, trial_runner: Any, trial: Any) -> None:
        self._check_no_searcher(trial_runner)
        self._check_metric_and_mode()
        if trial.trial_id not in self._members:
            self._members[trial.trial_id] = _Member(
                orig_tag=trial.experiment_tag, local_dir=trial.local_dir or ""
            )
        self._fill_missing(trial, self._hyperparam_mutations, fill_config)

    def _check_no_searcher(self, trial_runner: Any) -> None:
        from tune_async.suggest.search_generator import SearchGenerator

        search_alg = getattr(trial_runner, "search_alg", None)
        if isinstance(search_alg, SearchGenerator):
            raise ValueError(
                f"Search algorithms cannot be used with {type(self).__name__} schedulers. "
                f"Please remove {search_alg}."
            )

    @staticmethod
    def _fill_missing(trial: Any, specs: dict, fill: Callable) -> None:
        """Sample the keys a trial's config lacks from their specs, as 1.x does.

        This is the one place a scheduler writes into a trial: the config dict is
        completed in place before the trial first starts, so the trainable sees
        every mutated key from its first step, as in 1.x.
        """
        for key, spec in specs.items():
            if key not in trial.config:
                fill(trial.config, key, spec)
                trial.evaluated_params[key] = trial.config[key]

    def _member(self, trial: Any) -> _Member:
        member = self._members.get(trial.trial_id)
        if member is None:  # a trial this scheduler was not told about (resume)
            member = _Member(orig_tag=trial.experiment_tag.split("@perturbed")[0],
                             local_dir=getattr(trial, "local_dir", "") or "")
            self._members[trial.trial_id] = member
        return member

    def on_trial_complete(self, trial_runner: Any, trial: Any, result: dict) -> Any:
        return self._finish_plan(trial_runner, self._ended(trial_runner, trial))

    def on_trial_error(self, trial_runner: Any, trial: Any) -> Any:
        return self._finish_plan(trial_runner, self._ended(trial_runner, trial))

    def on_trial_remove(self, trial_runner: Any, trial: Any) -> Any:
        return self._finish_plan(trial_runner, self._ended(trial_runner, trial))

    def _ended(self, trial_runner: Any, trial: Any) -> _Plan | None:
        member = self._member(trial)
        member.finished = True
        if self._synch and self._all_synced(trial_runner, exclude=trial.trial_id):
            # The last trial the others waited for is gone: perturb the waiting ones.
            return self._sync_round(trial_runner, None, None)
        return None

    # ---- decisions -----------------------------------------------------------------
    def on_trial_result(self, trial_runner: Any, trial: Any, result: dict) -> Any:
        plan = self._plan_result(trial_runner, trial, result)
        if isinstance(plan, _Plan):
            for exploit in plan.exploits:
                exploit.config = self._get_new_config(exploit)
        return self._conclude(trial_runner, plan)

    def _finish_plan(self, trial_runner: Any, plan: _Plan | None) -> Decision | None:
        """on_trial_complete / _error / _remove: the exploits of waiting trials (a sync
        round the trial's end completed), as a Decision the controller applies."""
        if plan is not None:
            for exploit in plan.exploits:
                exploit.config = self._get_new_config(exploit)
        return self._side_only(self._conclude(trial_runner, plan))

    @staticmethod
    def _side_only(decision: Any) -> Decision | None:
        """From on_trial_complete / _error / _remove only ``exploit_waiting`` counts."""
        if isinstance(decision, Decision) and decision.exploit_waiting:
            return Decision(exploit_waiting=decision.exploit_waiting)
        return None

    def _plan_result(self, trial_runner: Any, trial: Any, result: dict) -> Any:
        if not self._has_attrs(result):
            return CONTINUE
        member = self._member(trial)
        time = result[self._time_attr]
        if time < member.last_perturbation_time:
            # It went back to an older state (a retry or a resume from its checkpoint):
            # count its next interval from the last point on the grid below it.
            grid = self._perturbation_interval
            member.last_perturbation_time = grid * math.floor(time / grid)
        member.time = time
        if time < self._burn_in_period:
            return CONTINUE
        if time - member.last_perturbation_time < self._perturbation_interval:
            return CONTINUE  # not yet at a perturbation point
        self._save_trial_state(member, time, result, trial)
        if self._synch:
            if not self._all_synced(trial_runner, exclude=trial.trial_id):
                return PAUSE  # wait (paused) until every trial reached this point
            return self._sync_round(trial_runner, trial, result)
        member.last_perturbation_time = time
        lower, upper = self._quantiles()
        plan = _Plan(trial.trial_id)
        self._perturb(trial, result, lower, upper, plan)
        if self._others_waiting(trial_runner, trial.trial_id):
            plan.action = PAUSE  # yield the resources to the waiting trials
        return plan

    def _has_attrs(self, result: dict) -> bool:
        for name, what in ((self._time_attr, "time_attr"), (self._metric, "metric")):
            if name in result:
                continue
            msg = (f"Cannot find {what} {name!r} in trial result {result}. Make sure that "
                   f"this attribute is returned in the results of your Trainable.")
            if self._require_attrs:
                raise RuntimeError(msg + " If this error is expected, you can change this "
                                   "to a warning message by setting PBT(require_attrs=False)")
            if what not in self._warned:
                self._warned.add(what)
                logger.warning(msg)
            return False
        return True

    def _save_trial_state(self, member: _Member, time: float, result: dict,
                          trial: Any) -> float:
        """Record the trial's score at a perturbation point (1.x's hook for PB2)."""
        score = self._metric_op * result[self._metric]
        member.last_score = score
        member.last_train_time = time
        return score

    def _quantiles(self) -> tuple[list[str], list[str]]:
        """Trial ids in the lower and upper quantile of the unfinished, scored trials."""
        scored = [(m.last_score, tid) for tid, m in self._members.items()
                  if m.last_score is not None and not m.finished
                  and not math.isnan(m.last_score)]
        scored.sort(key=lambda pair: pair[0])
        ids = [tid for _, tid in scored]
        if len(ids) <= 1:
            return [], []
        size = min(int(math.ceil(len(ids) * self._quantile_fraction)), len(ids) // 2)
        if size == 0:  # quantile_fraction=0: no exploitation (1.x's [-0:] took them all)
            return [], []
        return ids[:size], ids[-size:]

    def _perturb(self, trial: Any, result: dict | None, lower: list[str], upper: list[str],
                 plan: _Plan, in_memory: bool = True) -> None:
        """Save if ``trial`` is in the upper quantile, plan an exploit if in the lower."""
        member = self._member(trial)
        if trial.trial_id in upper and in_memory:
            last = result if result is not None else (trial.last_result or {})
            member.saved = _Saved(config=copy.deepcopy(dict(trial.config)),
                                  iteration=last.get(TRAINING_ITERATION, 0),
                                  time=member.last_train_time)
            self._num_checkpoints += 1
            plan.save = plan.save or trial.trial_id == plan.trial_id
        else:
            member.saved = None  # not a top trial: not a donor
        if trial.trial_id in lower:
            if not in_memory:
                logger.info("[pbt]: trial %s waits without a state in memory (resumed). "
                            "Skip its exploit", trial.trial_id)
                return
            donor = random.choice(upper)
            if self._members[donor].saved is None:
                logger.info("[pbt]: no saved state for trial %s. Skip exploit for trial %s",
                            donor, trial.trial_id)
                return
            last = result if result is not None else (trial.last_result or {})
            plan.exploits.append(_ExploitPlan(trial.trial_id, donor,
                                              last.get(TRAINING_ITERATION, 0)))

    def _others_waiting(self, trial_runner: Any, trial_id: str) -> bool:
        return any(t.status in _WAITING and t.trial_id != trial_id
                   for t in trial_runner.get_trials())

    # ---- synchronous mode ----------------------------------------------------------
    def _all_synced(self, trial_runner: Any, exclude: str) -> bool:
        for t in trial_runner.get_trials():
            if t.trial_id == exclude or t.status in _FINISHED:
                continue
            if self._member(t).finished:
                continue
            if self._member(t).last_train_time < self._next_perturbation_sync:
                return False
        return True

    def _sync_round(self, trial_runner: Any, trial: Any, result: dict | None) -> _Plan:
        """Every unfinished trial reached the sync point: perturb them all."""
        # Completed by a result: that trial waits too; by a trial's end: no own action.
        plan = _Plan(trial.trial_id, action=PAUSE) if trial is not None else _Plan(None)
        lower, upper = self._quantiles()
        ranked = set(lower) | set(upper)
        live = [t for t in trial_runner.get_trials()
                if t.status not in _FINISHED and not self._member(t).finished]
        by_id = {t.trial_id: t for t in live}
        middle = [t.trial_id for t in live if t.trial_id not in ranked]
        # Upper first, so the donors' states are recorded before anyone clones them.
        time = (result[self._time_attr] if result is not None
                else max((self._member(t).last_train_time for t in live), default=0.0))
        for tid in upper + middle + lower:
            view = by_id.get(tid) or trial_runner.get_trial(tid)
            if view is None:
                continue
            self._member(view).last_perturbation_time = time
            own = result if trial is not None and tid == trial.trial_id else None
            # A waiting trial's state is in memory if it paused here; one restored by a
            # resume (PENDING) has none: it neither donates nor can be exploited waiting.
            in_memory = own is not None or view.status is TrialStatus.PAUSED
            self._perturb(view, own, lower, upper, plan, in_memory)
        times = [self._member(t).last_train_time for t in live]
        self._next_perturbation_sync = max(
            self._next_perturbation_sync + self._perturbation_interval, max(times, default=0.0)
        )
        return plan

    # ---- exploit ---------------------------------------------------------------------
    def _get_new_config(self, exploit: _ExploitPlan) -> dict:
        """The explored config for ``exploit`` (PB2 overrides this)."""
        saved = self._members[exploit.donor].saved
        return explore(saved.config, self._hyperparam_mutations,
                       self._resample_probability, self._custom_explore_fn)

    def _conclude(self, trial_runner: Any, plan: Any) -> Any:
        """A hook's answer: the plain action ``plan`` is, or the decision it concludes
        (its planned exploits logged and counted).

        Exploits of other trials (synch: the whole population is perturbed at once, the
        others wait PAUSED) go out as ``exploit_waiting``: each continues from its
        donor's saved state with the new config when it is launched again. The
        controller applies them after the deciding trial's own transition, so when
        that trial is the donor, its target clones the state it saves at this round.
        """
        if not isinstance(plan, _Plan):
            return plan
        own: Exploit | None = None
        waiting: list[tuple[str, Exploit]] = []
        for exploit in plan.exploits:
            value = self._apply_exploit(exploit)
            if value is None:
                continue
            if exploit.target == plan.trial_id:
                own = value
            else:
                waiting.append((exploit.target, value))
        if own is not None or plan.save or waiting:
            # (With its own exploit, the action is moot: the trial waits to be relaunched.)
            return Decision(action=plan.action if own is None else CONTINUE,
                            save=plan.save and own is None, exploit=own,
                            exploit_waiting=tuple(waiting))
        return plan.action

    def _apply_exploit(self, exploit: _ExploitPlan) -> Exploit | None:
        target = self._members[exploit.target]
        donor = self._members[exploit.donor]
        saved = donor.saved
        if saved is None:
            return None
        new_config = exploit.config
        logger.info("[exploit] transferring weights from trial %s (score %s) -> %s (score %s)",
                    exploit.donor, donor.last_score, exploit.target, target.last_score)
        if self._log_config:
            self._log_config_on_step(target, donor, exploit, saved, new_config)
        tag = make_experiment_tag(target.orig_tag, new_config, self._mutation_keys())
        self._num_perturbations += 1
        # It continues from the donor's state: its clock is the donor's.
        target.last_perturbation_time = saved.time
        target.last_train_time = saved.time
        target.time = saved.time
        return Exploit(donor=exploit.donor, config=new_config, experiment_tag=tag)

    def _mutation_keys(self) -> dict:
        return self._hyperparam_mutations

    def _log_config_on_step(self, target: _Member, donor: _Member, exploit: _ExploitPlan,
                            saved: _Saved, new_config: dict) -> None:
        """Append ``[target tag, donor tag, target iteration, donor iteration, old config,
        new config]`` to pbt_global.txt, and give the target the donor's policy file plus
        this line. The donor's iteration and config are those of its saved state (what
        the target continues from), so a replay changes configs at the right step.
        """
        local_dir = target.local_dir or donor.local_dir
        if not local_dir:
            return  # no experiment directory (trials built by hand)
        policy = [target.orig_tag, donor.orig_tag, exploit.target_iteration,
                  saved.iteration, saved.config, new_config]
        line = json.dumps(policy, cls=SafeFallbackEncoder) + "\n"
        os.makedirs(local_dir, exist_ok=True)
        with open(os.path.join(local_dir, "pbt_global.txt"), "a") as f:
            f.write(line)
        target_path = os.path.join(local_dir, f"pbt_policy_{exploit.target}.txt")
        donor_path = os.path.join(donor.local_dir or local_dir,
                                  f"pbt_policy_{exploit.donor}.txt")
        if os.path.exists(donor_path):
            shutil.copyfile(donor_path, target_path)
        with open(target_path, "a") as f:
            f.write(line)

    # ---- scheduling ------------------------------------------------------------------
    def choose_trial_to_run(self, trial_runner: Any) -> Any:
        """The waiting trial (that fits) with the least ``time_attr`` progress.

        This balances the population's progress when not every trial fits at once.
        In synch mode, trials already at the sync point wait for the others.
        """
        candidates = [t for t in self._waiting(trial_runner) if self._may_run(t)]
        candidates.sort(key=lambda t: self._member(t).time)
        return first_that_fits(trial_runner, candidates)

    @staticmethod
    def _waiting(trial_runner: Any) -> list:
        waiting = getattr(trial_runner, "waiting_trials", None)
        if waiting is not None:
            return [t for t in waiting() if t.status in _WAITING]
        return [t for t in trial_runner.get_trials() if t.status in _WAITING]

    def _may_run(self, trial: Any) -> bool:
        member = self._member(trial)
        if member.finished:
            return False
        return not self._synch or member.last_train_time < self._next_perturbation_sync

    def results_before_decision(self, trial_runner: Any, trial: Any) -> int | None:
        """Iterations to the trial's next perturbation point (``training_iteration``)."""
        if self._time_attr != TRAINING_ITERATION:
            return 1
        member = self._members.get(trial.trial_id)
        if member is None:
            return 1
        last = (trial.last_result or {}).get(self._time_attr, 0)
        if last != member.time:
            return 1  # relaunched from another state (an exploit, a resume): look first
        target = max(member.last_perturbation_time + self._perturbation_interval,
                     self._burn_in_period)
        return max(1, int(math.ceil(target - member.time)))

    def debug_string(self) -> str:
        return (f"PopulationBasedTraining: {self._num_checkpoints} checkpoints, "
                f"{self._num_perturbations} perturbs")

    def reset_stats(self) -> None:
        self._num_perturbations = 0
        self._num_checkpoints = 0

    def last_scores(self, trials: list) -> list[float]:
        return [m.last_score for t in trials
                if (m := self._member(t)).last_score is not None and not m.finished]

    # ---- state -----------------------------------------------------------------------
    def get_state(self) -> dict:
        return {
            "members": {tid: attrs.asdict(m, recurse=False) for tid, m in self._members.items()},
            "next_perturbation_sync": self._next_perturbation_sync,
            "num_checkpoints": self._num_checkpoints,
            "num_perturbations": self._num_perturbations,
        }

    def set_state(self, state: dict, trial_runner: Any) -> None:
        members = {}
        for tid, fields in state["members"].items():
            # (Fields this version no longer keeps, from an older experiment state, go.)
            member = _Member(**{k: v for k, v in fields.items() if k in _MEMBER_FIELDS})
            # Saved states live in the driver's memory and do not survive a restart: no
            # trial is a donor until it saves again.
            member.saved = None
            members[tid] = member
        self._members = members
        self._next_perturbation_sync = state["next_perturbation_sync"]
        self._num_checkpoints = state["num_checkpoints"]
        self._num_perturbations = state["num_perturbations"]


# ---------------------------------------------------------------------------
# Replay


class PopulationBasedTrainingReplay(FIFOScheduler):
    """Replays the config schedule of one trial of a PBT run.

    PBT returns a schedule of configurations rather than one. This scheduler
    trains a single trial, starting from the schedule's initial config and
    switching configs at the logged ``training_iteration`` changepoints (the
    trial continues from its own state with the new config). The PBT run needs
    ``log_config=True`` (the default).

    Args:
        policy_file: The PBT policy file, usually
            ``~/ray_results/<experiment>/pbt_policy_<trial_id>.txt``.

    .. code-block:: python

        replay = PopulationBasedTrainingReplay(
            "~/ray_results/pbt_test/pbt_policy_XXXXX_00001.txt")
        tune.run(MyTrainable, scheduler=replay, stop={"training_iteration": 100})
    """

    def __init__(self, policy_file: str) -> None:
        policy_file = os.path.expanduser(policy_file)
        if not os.path.exists(policy_file):
            raise ValueError(f"Policy file not found: {policy_file}")
        self.policy_file = policy_file
        initial_config, self._policy = self._load_policy(policy_file)
        self.experiment_tag = f"replay_{os.path.basename(policy_file)}"
        self.config = initial_config
        self.current_config = initial_config
        self._trial_id: str | None = None
        self._current_step = 0
        self._num_perturbations = 0
        self._next = 0  # index of the next changepoint

    @staticmethod
    def _load_policy(policy_file: str) -> tuple[dict | None, list[tuple[int, dict]]]:
        rows = []
        with open(policy_file) as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    raise ValueError(f"Could not read PBT policy file: {policy_file}.") from None
                if not isinstance(row, list) or len(row) != 6:
                    raise ValueError(f"Could not read PBT policy file: {policy_file} (a line "
                                     f"is not a list of 6 items: {line.strip()[:200]})")
                rows.append(row)
        # From the end backwards: the chain of exploits that led to this trial (a line
        # whose target is not the next line's donor was overwritten by a later clone).
        policy = []
        last_new_tag = None
        initial = None
        for old_tag, new_tag, _old_step, new_step, old_conf, new_conf in reversed(rows):
            if last_new_tag is not None and old_tag != last_new_tag:
                break
            last_new_tag = new_tag
            initial = old_conf
            policy.append((new_step, new_conf))
        return initial, list(reversed(policy))

    def on_trial_add(self, trial_runner: Any, trial: Any) -> None:
        if self._trial_id is not None and self._trial_id != trial.trial_id:
            raise ValueError(
                "More than one trial added to PBT replay run. This means the same schedule "
                "will be trained multiple times. Do you want to set `num_samples=1`?"
            )
        self._trial_id = trial.trial_id
        if trial.config and self._policy:
            logger.warning("Trial was initialized with a config, which was overwritten. "
                           "Did you start the PBT replay with a `config` parameter?")
        elif trial.config and not self._policy:
            self.config = copy.deepcopy(dict(trial.config))  # only the initial policy
        elif not trial.config and not self._policy:
            raise ValueError(
                "No replay policy found and trial initialized without a valid config. "
                "Either pass a `config` argument to `tune.run()` or consider not using PBT "
                "replay for this run."
            )
        # Like 1.x, the trial starts from the schedule's initial config: the config
        # dict is set in place before the trial first runs.
        if trial.config != self.config:
            trial.config.clear()
            trial.config.update(copy.deepcopy(self.config))

    def on_trial_result(self, trial_runner: Any, trial: Any, result: dict) -> Any:
        if TRAINING_ITERATION not in result or self._next >= len(self._policy):
            return CONTINUE
        step = result[TRAINING_ITERATION]
        self._current_step = step
        change_at, new_config = self._policy[self._next]
        if step < change_at:
            return CONTINUE
        logger.info("Population Based Training replay is now at step %s. Configuration "
                    "will be changed to %s.", step, new_config)
        tag = make_experiment_tag(self.experiment_tag, new_config, new_config)
        self.current_config = new_config
        self._num_perturbations += 1
        self._next += 1
        # Save this trial's state and continue from it with the new config.
        return Decision(save=True, exploit=Exploit(donor=trial.trial_id,
                                                   config=copy.deepcopy(new_config),
                                                   experiment_tag=tag))

    def results_before_decision(self, trial_runner: Any, trial: Any) -> int | None:
        if self._next >= len(self._policy):
            return None  # no change left: nothing to decide
        change_at = self._policy[self._next][0]
        return max(1, int(change_at) - int(self._current_step))

    def debug_string(self) -> str:
        return (f"PopulationBasedTraining replay: Step {self._current_step}, "
                f"perturb {self._num_perturbations}")

    def get_state(self) -> dict:
        return {"trial_id": self._trial_id, "next": self._next,
                "current_step": self._current_step,
                "num_perturbations": self._num_perturbations,
                "current_config": self.current_config}

    def set_state(self, state: dict, trial_runner: Any) -> None:
        self._trial_id = state["trial_id"]
        self._next = state["next"]
        self._current_step = state["current_step"]
        self._num_perturbations = state["num_perturbations"]
        self.current_config = state["current_config"]
