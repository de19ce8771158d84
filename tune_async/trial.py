"""The Trial record and its status enum.

Only ``transitions.apply`` assigns ``Trial.status``; everything else reads it.
"""

from __future__ import annotations

import collections
import enum
import functools
import operator
import os
import platform
import uuid
import weakref
from numbers import Integral, Number
from typing import Any

import attrs

from tune_async.resources import Resources
from tune_async.utils.placement_groups import PlacementGroupFactory
from tune_async.utils.util import flatten_dict


class TrialStatus(str, enum.Enum):
    """A trial's status. The values are 1.x's strings, so ``trial.status == "RUNNING"`` works."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    TERMINATED = "TERMINATED"
    ERROR = "ERROR"

    def __str__(self) -> str:
        return self.value

    @property
    def is_finished(self) -> bool:
        return self in (TrialStatus.TERMINATED, TrialStatus.ERROR)


LAST_N = (5, 10)
_WINDOW_NAMES = {k: f"last-{k}-avg" for k in LAST_N}
_WINDOW = max(LAST_N)
_NOT_NUMBERS = frozenset({bool, str, type(None), list, tuple})  # skipped without an ABC check
_INT_FLOAT = frozenset({int, float})
_DICT = frozenset({dict})
_FOLD_AFTER = 32  # queued results per trial before they are folded into the statistics
# The numeric items of each trial's latest config, flattened once per distinct config.
_CONFIG_NUMBERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _numbers(flat: dict, prefix: str) -> list[tuple[str, int | float]]:
    return [(prefix + k, _plain(v)) for k, v in flat.items()
            if not isinstance(v, bool) and isinstance(v, Number)]


def _plain(value: Number) -> int | float:
    """A Python int or float: an integer stays an integer (as 1.x kept values as
    reported), and a numpy int32's sum cannot overflow, nor a float32's lose digits."""
    kind = type(value)
    if kind is int or kind is float:
        return value
    return int(value) if isinstance(value, Integral) else float(value)


@attrs.define(eq=False)
class _Track:
    """A metric's running state behind its public stats (private, so not in them)."""

    count: int  # values so far: ``avg`` is ``total / count``
    total: int | float
    values: list  # the last max(LAST_N) values, for the last-N averages


def _config_numbers(trial: Trial, config: dict) -> list[tuple[str, int | float]]:
    cached = _CONFIG_NUMBERS.get(trial)
    if cached is not None and (cached[0] is config or cached[0] == config):
        return cached[1]
    items = _numbers(flatten_dict(config), "config/")
    _CONFIG_NUMBERS[trial] = (config, items)
    return items


def check_dirname(dirname: str) -> None:
    if any(sep in dirname for sep in (os.sep, "/")) or dirname in ("", ".", ".."):
        raise ValueError(
            f"trial_dirname_creator must return a plain directory name (no '/' and not "
            f"'.' or '..'), got {dirname!r}"
        )


def _new_trial_id() -> str:
    return uuid.uuid1().hex[:8]


@attrs.frozen
class Location:
    """Where a trial's latest result came from (1.x ``trial.location``)."""

    hostname: str | None = None  # the node's IP, as 1.x filled it from the result
    pid: int | None = None

    def __str__(self) -> str:
        if not self.pid:
            return ""
        if self.hostname == platform.node():
            return f"pid={self.pid}"
        return f"{self.hostname}:{self.pid}"


@attrs.define(eq=False)
class Trial:
    """One run of a trainable with one config (mirrors ``ray.tune.trial.Trial``'s fields).

    Attributes 1.x user code reads: ``trial_id``, ``trainable_name``, ``config``,
    ``evaluated_params``, ``experiment_tag``, ``local_dir``, ``logdir``,
    ``status``, ``last_result``, ``num_failures``, ``error_file``, ``error_msg``,
    ``metric_analysis``, ``metric_n_steps``, ``resources``,
    ``placement_group_factory``, ``checkpoint`` (the newest persistent
    :class:`~tune_async.checkpoint.Checkpoint`, ``.value`` its path; None when
    there is none), ``node_ip``, ``location``, ``start_time``, ``last_update_time``;
    methods ``has_checkpoint()``, ``should_stop(result)``, ``should_checkpoint()``,
    ``should_recover()``, ``is_finished()``, ``get_trainable_cls()``.
    """

    # 1.x spells statuses as class constants: ``trial.status == Trial.TERMINATED``.
    PENDING = TrialStatus.PENDING
    RUNNING = TrialStatus.RUNNING
    PAUSED = TrialStatus.PAUSED
    TERMINATED = TrialStatus.TERMINATED
    ERROR = TrialStatus.ERROR
    n_steps = list(LAST_N)  # the windows of the last-N averages (1.x attribute)

    trainable_name: str
    config: dict = attrs.field(factory=dict)
    trial_id: str = attrs.field(factory=_new_trial_id)
    experiment_tag: str = ""
    evaluated_params: dict = attrs.field(factory=dict)
    local_dir: str = ""  # the experiment directory
    logdir: str | None = None
    resources: Resources | PlacementGroupFactory = attrs.field(factory=Resources)
    stopping_criterion: dict = attrs.field(factory=dict)
    max_failures: int = 0
    custom_trial_name: str | None = None
    custom_dirname: str | None = None
    experiment_name: str = ""
    status: TrialStatus = TrialStatus.PENDING
    last_result: dict = attrs.field(factory=dict)
    results_recorded: int = 0
    num_failures: int = 0
    error_file: str | None = None
    error_msg: str | None = None
    start_time: float | None = None
    last_update_time: float = 0.0
    # Read through the ``metric_analysis`` property: avg and the last-N averages are
    # computed when someone reads them, not on every result (the per-result path stays short).
    _metric_analysis: dict = attrs.field(factory=dict, alias="metric_analysis")
    # {metric: _Track}; 1.x's ``metric_n_steps`` is a view of their values.
    _tracks: dict = attrs.field(factory=dict, init=False)
    _averages_stale: bool = attrs.field(default=False, init=False)
    # Results recorded but not yet in the statistics: folded a batch at a time, a
    # metric at a time (C-speed max/min/sum over a column), and before any read.
    _unfolded: list = attrs.field(factory=list, init=False)
    restore_path: str | None = None
    checkpoint: Any = None  # the newest persistent Checkpoint (restore point on retry/resume)
    checkpoint_freq: int = 0
    checkpoint_at_end: bool = False
    keep_checkpoints_num: int | None = None
    checkpoint_score_attr: str = "training_iteration"
    log_to_file: Any = False  # the experiment's log_to_file (True, a name, or a pair)
    export_formats: list = attrs.field(factory=list)  # exported when the trial finishes
    extra: dict = attrs.field(factory=dict)  # room for later issues (checkpoint manager, ...)

    # Pickled as attrs pickles a slotted class ({field: value}), so the records in
    # state files load across versions; older ones get their tracks rebuilt.
    def __getstate__(self) -> dict[str, Any]:
        self._fold()
        return {f.name: getattr(self, f.name) for f in attrs.fields(Trial)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for f in attrs.fields(Trial):
            if f.name in state:
                object.__setattr__(self, f.name, state[f.name])
        if "_unfolded" not in state:  # pickled before results were folded in batches
            self._unfolded = []
        if "_tracks" not in state:
            self._tracks = _tracks_of_old_record(self._metric_analysis,
                                                 state.get("_windows") or {})

    # ---- names -------------------------------------------------------------
    @property
    def trial_name(self) -> str:
        return self.custom_trial_name or self.default_name()

    def default_name(self) -> str:
        env = self.config.get("env") if isinstance(self.config, dict) else None
        if env:
            name = f"{self.trainable_name}_{env}_{self.trial_id}"
        else:
            name = f"{self.trainable_name}_{self.trial_id}"
        return name.replace("/", "_")

    def __str__(self) -> str:
        return self.trial_name

    def __repr__(self) -> str:
        return self.trial_name

    @property
    def placement_group_factory(self) -> PlacementGroupFactory | None:
        return self.resources if isinstance(self.resources, PlacementGroupFactory) else None

    def is_finished(self) -> bool:
        return self.status.is_finished

    # ---- 1.x read-only members (computed when read: nothing on the per-result path) -------
    @classmethod
    def generate_id(cls) -> str:
        return _new_trial_id()

    @property
    def uses_placement_groups(self) -> bool:
        return self.placement_group_factory is not None

    @property
    def node_ip(self) -> str | None:
        """The IP of the node the latest result came from (None before any result)."""
        return self.last_result.get("node_ip")

    @property
    def location(self) -> Location:
        return Location(self.last_result.get("node_ip"), self.last_result.get("pid"))

    @property
    def metric_n_steps(self) -> dict:
        """``{metric: {"5": deque, "10": deque}}``: the values behind the last-N averages.

        Kept while the trial runs; a finished trial drops them (its averages stay in
        ``metric_analysis``), which bounds the driver's memory in large experiments.
        """
        self._fold()
        return {key: {str(n): collections.deque(track.values[-n:], maxlen=n) for n in LAST_N}
                for key, track in self._tracks.items()}

    def has_checkpoint(self) -> bool:
        """Whether the trial has a checkpoint to restore from (its own or ``restore``)."""
        return self.checkpoint is not None or bool(self.restore_path)

    def should_recover(self) -> bool:
        """Whether a failure now would be retried (``max_failures``; -1 retries forever)."""
        return self.num_failures < self.max_failures or self.max_failures < 0

    def should_stop(self, result: dict) -> bool:
        """Whether ``result`` ends the trial: ``done``, or a dict stop criterion reached.

        Raises:
            TuneError: a criterion's key is missing from the (flattened) result.
        """
        from tune_async.stopper import dict_criteria_met

        if result.get("done"):
            return True
        return bool(self.stopping_criterion) and dict_criteria_met(
            self.stopping_criterion, flatten_dict(result))

    def should_checkpoint(self) -> bool:
        """Whether the latest result is due a checkpoint (``checkpoint_freq``/``_at_end``)."""
        result = self.last_result
        if result.get("done") and self.checkpoint_at_end:
            return True
        return bool(self.checkpoint_freq) and (
            result.get("training_iteration", 0) % self.checkpoint_freq == 0)

    def get_trainable_cls(self) -> Any:
        """The trainable class registered under ``trainable_name``."""
        from tune_async.registry import get_trainable_cls

        return get_trainable_cls(self.trainable_name)

    @property
    def checkpoint_manager(self) -> Any:
        """The trial's CheckpointManager (made on first use; kept in ``extra``)."""
        manager = self.extra.get("checkpoint_manager")
        if manager is None:
            from tune_async.checkpoint import CheckpointManager

            manager = CheckpointManager(
                keep_checkpoints_num=self.keep_checkpoints_num,
                checkpoint_score_attr=self.checkpoint_score_attr,
            )
            self.extra["checkpoint_manager"] = manager
        return manager

    @property
    def metric_analysis(self) -> dict:
        """``{metric: {"max", "min", "avg", "last", "last-5-avg", "last-10-avg"}}``."""
        self._fold()
        if self._averages_stale:
            for key, track in self._tracks.items():
                stats = self._metric_analysis[key]
                stats["avg"] = track.total / track.count
                for k in LAST_N:
                    last = track.values[-k:]
                    stats[_WINDOW_NAMES[k]] = sum(last) / len(last)
            self._averages_stale = False
        return self._metric_analysis

    def reset_metric_analysis(self) -> None:
        self._metric_analysis = {}
        self._tracks = {}
        self._unfolded = []
        self._averages_stale = False

    # ---- per-metric statistics (used by ExperimentAnalysis scopes) ---------
    def update_metric_analysis(self, result: dict) -> None:
        """Keep max/min/avg/last/last-5-avg/last-10-avg for every numeric metric.

        Keys are the flattened result's (``a/b`` for nested values, ``config/...``
        included, as 1.x); max/min/last keep the values as reported (an int stays an
        int). This runs once per result, so the result is only queued here: every
        read of the statistics (and every ``_FOLD_AFTER`` results) folds the queue in.
        """
        unfolded = self._unfolded
        unfolded.append(result)
        if len(unfolded) >= _FOLD_AFTER:
            self._fold()

    def _fold(self) -> None:
        """Fold the queued results into the statistics, as if one at a time.

        The first result goes value by value (so new metrics are added in the order
        a result lists them); when the others have the same keys, each metric's
        values are folded together as a column.
        """
        batch = self._unfolded
        if not batch:
            return
        self._unfolded = []
        self._averages_stale = True
        first = batch[0]
        self._fold_result(first)
        rest = batch[1:]
        if not rest:
            return
        keys = tuple(first)
        columns = None
        if len(keys) > 1 and set(map(len, rest)) == {len(keys)}:
            try:  # the same keys in every result: transposed to columns in C
                columns = zip(*map(operator.itemgetter(*keys), rest), strict=True)
            except KeyError:
                pass
        if columns is None:
            for result in rest:
                self._fold_result(result)
            return
        for key, column in zip(keys, columns, strict=True):
            self._fold_column(key, column)

    def _fold_result(self, result: dict) -> None:
        update = self._update_metric
        for key, value in result.items():
            kind = type(value)
            if kind is float or kind is int:
                update(key, (value,))
            elif kind is dict:
                for name, number in self._nested_numbers(key, value):
                    update(name, (number,))
            elif kind not in _NOT_NUMBERS and isinstance(value, Number):
                update(key, (_plain(value),))

    def _fold_column(self, key: str, values: tuple) -> None:
        kinds = set(map(type, values))
        if kinds <= _INT_FLOAT:
            self._update_metric(key, values)
        elif kinds <= _NOT_NUMBERS:
            return
        elif kinds == _DICT:
            columns: dict[str, list] = {}
            for value in values:
                for name, number in self._nested_numbers(key, value):
                    columns.setdefault(name, []).append(number)
            for name, column in columns.items():
                self._update_metric(name, column)
        else:
            for value in values:
                self._fold_result({key: value})

    def _nested_numbers(self, key: str, value: dict) -> list[tuple[str, int | float]]:
        return (_config_numbers(self, value) if key == "config"
                else _numbers(flatten_dict(value), f"{key}/"))

    def _update_metric(self, key: str, values: list | tuple) -> None:
        """Fold ``values`` (ints and floats, in order) into ``key``'s statistics."""
        track = self._tracks.get(key)
        if track is None:
            stats = self._metric_analysis.get(key)
            if stats is None:  # a new metric: its first value starts it
                first = values[0]
                self._metric_analysis[key] = {"max": first, "min": first, "avg": first,
                                              "last": first}
                self._tracks[key] = _Track(1, first, [first])
                values = values[1:]
                if not values:
                    return
            else:  # stats read back from a file: go on as if from one value
                self._tracks[key] = _Track(1, stats["avg"], [stats["last"]])
            track = self._tracks[key]
        stats = self._metric_analysis[key]
        # Builtin max/min keep the first of equal values and skip a NaN after the
        # first (a NaN first stays), as 1.x's max(old, new) per value did.
        stats["max"] = max(stats["max"], *values)
        stats["min"] = min(stats["min"], *values)
        stats["last"] = values[-1]
        track.count += len(values)
        # Added in order, as one at a time would (sum() compensates float error from
        # Python 3.12 on, which would change avg's last digits); avg and the last-N
        # averages are computed when read.
        track.total = functools.reduce(operator.add, values, track.total)
        window = track.values
        window += values[-_WINDOW:]
        if len(window) > _WINDOW:
            del window[:-_WINDOW]

    def compact(self) -> None:
        """A finished trial gets no more results: settle its statistics, drop the windows."""
        self.metric_analysis  # noqa: B018 - settles the averages
        self._tracks = {}

    # ---- paths -------------------------------------------------------------
    def init_logdir(self, dirname: str) -> str:
        """Create the trial directory under the experiment directory (suffix if taken)."""
        check_dirname(dirname)
        path = os.path.join(self.local_dir, dirname)
        while True:  # one mkdir where the name is free (the usual case)
            try:
                os.mkdir(path)
                break
            except FileExistsError:
                path = os.path.join(self.local_dir, f"{dirname}_{uuid.uuid4().hex[:4]}")
            except FileNotFoundError:
                os.makedirs(self.local_dir, exist_ok=True)
        self.logdir = path
        return path

    def default_dirname(self, max_len: int = 130) -> str:
        from tune_async.utils.util import date_str

        base = f"{self.trial_name}_{self.experiment_tag}"[:max_len]
        return f"{base}_{date_str()}".replace("/", "_")

    def _persistent_checkpoints(self) -> list:
        manager = self.extra.get("checkpoint_manager")
        return manager.to_json()["checkpoints"] if manager is not None else []

    def public_state(self) -> dict[str, Any]:
        """JSON-able summary written to the experiment state file."""
        return {
            "trial_id": self.trial_id,
            "trainable_name": self.trainable_name,
            "trial_name": self.trial_name,
            "experiment_tag": self.experiment_tag,
            "status": self.status.value,
            "logdir": self.logdir,
            "local_dir": self.local_dir,
            "num_failures": self.num_failures,
            "error_file": self.error_file,
            "error_msg": self.error_msg,
            "results_recorded": self.results_recorded,
            "start_time": self.start_time,
            "last_update_time": self.last_update_time,
            "evaluated_params": self.evaluated_params,
            "checkpoints": self._persistent_checkpoints(),
            "metric_analysis": self.metric_analysis,
        }


def _tracks_of_old_record(stats_by_key: dict, windows: dict) -> dict[str, _Track]:
    """Tracks for a Trial pickled before ``_tracks``: its counts were "_count" in the stats."""
    tracks = {}
    for key, stats in stats_by_key.items():
        count = stats.pop("_count", 1)
        if key in windows:  # not yet compacted: results may follow
            tracks[key] = _Track(count, stats["avg"] * count, list(windows[key]))
    return tracks


class TrialView:
    """What plugins see of a trial: every attribute readable, none assignable.

    Callbacks, schedulers, reporters and name creators get views, so only the
    controller (through the transition table) changes a trial.
    """

    __slots__ = ("_trial",)

    def __init__(self, trial: Trial) -> None:
        object.__setattr__(self, "_trial", trial)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trial, name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(
            f"Trial {self._trial} is read-only for plugins (tried to set {name!r})"
        )

    def __str__(self) -> str:
        return str(self._trial)

    def __repr__(self) -> str:
        return repr(self._trial)

    def __eq__(self, other: object) -> bool:
        return unwrap(other) is self._trial

    def __hash__(self) -> int:
        return id(self._trial)


def unwrap(trial: Any) -> Any:
    """The Trial behind a view (or the object itself)."""
    return object.__getattribute__(trial, "_trial") if isinstance(trial, TrialView) else trial
