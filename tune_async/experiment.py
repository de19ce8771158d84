"""Experiment specs (mirrors ``ray.tune.Experiment``)."""

from __future__ import annotations

import datetime
import inspect
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from tune_async.error import TuneError, TuneValueError
from tune_async.resources import Resources
from tune_async.result import default_results_dir
from tune_async.utils.placement_groups import PlacementGroupFactory
from tune_async.utils.util import date_str

logger = logging.getLogger(__name__)

_JSON_KEYS = {
    "run", "stop", "time_budget_s", "config", "resources_per_trial", "num_samples",
    "local_dir", "upload_dir", "trial_name_creator", "trial_dirname_creator", "loggers",
    "log_to_file", "sync_to_driver", "checkpoint_freq", "checkpoint_at_end",
    "sync_on_checkpoint", "keep_checkpoints_num", "checkpoint_score_attr", "export_formats",
    "max_failures", "restore", "env",
}


class Experiment:
    """Tracks the specification of one experiment (ray.tune 1.x ``Experiment``).

    Args:
        name: Name of the experiment (its directory under ``local_dir``).
        run: The trainable: a function, a ``tune.Trainable`` subclass or a
            registered name.
        stop: Stopping criteria: a dict ``{result key: value}`` (stop when
            ``result[key] >= value``), a callable ``(trial_id, result) -> bool``,
            a ``tune.Stopper`` or a list of Stoppers.
        time_budget_s: Global time budget (seconds or ``timedelta``).
        config: The search space (a dict of values, Domains, grid_search...).
        resources_per_trial: A dict (``cpu``, ``gpu``, ``memory``, ...; default
            1 CPU, 0 GPU) or a ``PlacementGroupFactory``.
        num_samples: Samples drawn from the space (grids repeat); -1: unlimited.
        local_dir: Results root (default ``~/ray_results`` or ``TUNE_RESULT_DIR``).
        trial_name_creator: ``Callable[[Trial], str]`` for trial names.
        trial_dirname_creator: ``Callable[[Trial], str]`` for trial directory
            names (a plain name: no path separators).
        max_failures: Retries per failed trial (-1: forever).
        The checkpoint, sync and logging arguments are validated here and
        carried in ``spec``.
    """

    def __init__(
        self,
        name: str,
        run: Any,
        stop: Any = None,
        time_budget_s: float | datetime.timedelta | None = None,
        config: dict | None = None,
        resources_per_trial: dict | PlacementGroupFactory | None = None,
        num_samples: int = 1,
        local_dir: str | None = None,
        upload_dir: str | None = None,
        trial_name_creator: Callable | None = None,
        trial_dirname_creator: Callable | None = None,
        loggers: Sequence | None = None,
        log_to_file: bool | str | tuple = False,
        sync_to_driver: Any = None,
        checkpoint_freq: int = 0,
        checkpoint_at_end: bool = False,
        sync_on_checkpoint: bool = True,
        keep_checkpoints_num: int | None = None,
        checkpoint_score_attr: str | None = None,
        export_formats: Sequence | None = None,
        max_failures: int = 0,
        restore: str | None = None,
    ) -> None:
        from tune_async.registry import check_picklable, resolve_trainable
        from tune_async.stopper import make_stopper

        if loggers is not None:
            raise ValueError(
                "Passing loggers to Experiment is not supported; pass loggers= to tune.run() "
                "instead (or use callbacks)."
            )
        config = {} if config is None else config
        if not isinstance(config, dict):
            raise ValueError(f"config must be a dict, got {type(config).__name__}")
        self._run_identifier, self.trainable_cls = resolve_trainable(run)
        check_picklable(self.trainable_cls, self._run_identifier)
        self.stop_criteria, self.stopper = make_stopper(stop)
        self.time_budget_s = _validate_time_budget(time_budget_s)
        self._resources_spec = resources_per_trial
        # A trainable's default_resource_request sees each trial's own config, as in 1.x's
        # Trial (the experiment's, with its grid and samples unresolved, would not do).
        self._asks_trainable = _asks_for_resources(self.trainable_cls)
        self.resources = _parse_resources(
            resources_per_trial, None if self._asks_trainable else self.trainable_cls, config)
        self.num_samples = _validate_num_samples(num_samples)
        validate_checkpoint_params(
            checkpoint_freq, keep_checkpoints_num, checkpoint_score_attr, restore
        )
        _validate_checkpoint_policy(self.trainable_cls, checkpoint_freq, checkpoint_at_end)
        if not isinstance(max_failures, int) or isinstance(max_failures, bool) or max_failures < -1:
            raise ValueError(f"max_failures must be an int >= -1, got {max_failures!r}")
        _validate_log_to_file(log_to_file)
        _validate_callable("trial_name_creator", trial_name_creator)
        _validate_callable("trial_dirname_creator", trial_dirname_creator)
        self.name = name or self._run_identifier
        self.dir_name = _dir_name(name, run, self._run_identifier)
        self._local_dir = os.path.abspath(os.path.expanduser(local_dir or default_results_dir()))
        self.trial_name_creator = trial_name_creator
        self.trial_dirname_creator = trial_dirname_creator
        self.max_failures = max_failures
        self.spec: dict[str, Any] = {
            "run": self._run_identifier,
            "stop": self.stop_criteria,
            "config": config,
            "resources_per_trial": resources_per_trial,
            "num_samples": self.num_samples,
            "local_dir": self._local_dir,
            "upload_dir": upload_dir,
            "trial_name_creator": trial_name_creator,
            "trial_dirname_creator": trial_dirname_creator,
            "log_to_file": log_to_file,
            "sync_to_driver": sync_to_driver,
            "checkpoint_freq": checkpoint_freq,
            "checkpoint_at_end": checkpoint_at_end,
            "sync_on_checkpoint": sync_on_checkpoint,
            "keep_checkpoints_num": keep_checkpoints_num,
            "checkpoint_score_attr": checkpoint_score_attr or "training_iteration",
            "export_formats": list(export_formats or []),
            "max_failures": max_failures,
            "restore": os.path.abspath(os.path.expanduser(restore)) if restore else None,
        }

    @classmethod
    def from_json(cls, name: str, spec: dict) -> Experiment:
        """Build from a 1.x JSON/dict spec (``run`` key required)."""
        if not isinstance(spec, dict):
            raise TuneValueError(f"Experiment spec for {name!r} must be a dict, got {spec!r}")
        if "run" not in spec:
            raise TuneValueError("No trainable specified!")
        spec = dict(spec)
        unknown = sorted(set(spec) - _JSON_KEYS)
        if unknown:
            raise TuneValueError(f"Improper argument from JSON: {unknown} in experiment {name!r}")
        if "env" in spec:
            spec["config"] = dict(spec.get("config") or {}, env=spec.pop("env"))
        try:
            return cls(name, **spec)
        except TypeError as exc:
            raise TuneValueError(f"Improper argument from JSON: {exc}") from exc

    def resources_for(self, config: dict) -> Resources | PlacementGroupFactory:
        """The resources of a trial with this (resolved) config."""
        if not self._asks_trainable:
            return self.resources
        return _parse_resources(self._resources_spec, self.trainable_cls, config)

    @property
    def local_dir(self) -> str:
        return self._local_dir

    @property
    def checkpoint_dir(self) -> str:
        return os.path.join(self._local_dir, self.dir_name)

    @property
    def run_identifier(self) -> str:
        return self._run_identifier

    @property
    def remote_checkpoint_dir(self) -> str | None:
        upload = self.spec.get("upload_dir")
        return os.path.join(upload, self.dir_name) if upload else None


def convert_to_experiment_list(experiments: Any) -> list[Experiment]:
    """An Experiment, a list of them, or a ``{name: spec}`` dict -> list of Experiments."""
    if experiments is None:
        return []
    if isinstance(experiments, Experiment):
        return [experiments]
    if isinstance(experiments, dict):
        return [Experiment.from_json(name, spec) for name, spec in experiments.items()]
    if isinstance(experiments, (list, tuple)):
        if all(isinstance(e, Experiment) for e in experiments):
            return list(experiments)
    raise TuneValueError(
        "Invalid argument type for experiments: expected an Experiment, a list of "
        f"Experiments or a dict of specs, got {type(experiments).__name__}"
    )


def _dir_name(name: str | None, run: Any, identifier: str) -> str:
    if name:
        return name
    if isinstance(run, str) or os.environ.get("TUNE_DISABLE_DATED_SUBDIR") == "1":
        return identifier
    return f"{identifier}_{date_str()}"


def _validate_time_budget(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(
            f"time_budget_s must be a number of seconds >= 0 or a datetime.timedelta, "
            f"got {value!r}"
        )
    return float(value) or None  # 0: no budget, as 1.x's `if time_budget_s:`


def _validate_checkpoint_policy(trainable_cls: type, freq: int, at_end: bool) -> None:
    """1.x rule: only a function that checkpoints itself (``checkpoint_dir``) refuses these.

    A plain ``f(config)`` accepts them; its checkpoints are "null": restored, the function
    and its counters start over (1.x).
    """
    if not _is_checkpointable_function(trainable_cls):
        return
    if at_end:
        raise ValueError(
            "'checkpoint_at_end' cannot be used with a checkpointable function. You can "
            "specify and register checkpoints within your trainable function (`with "
            "tune.checkpoint_dir(step=...) as d:`)."
        )
    if freq:
        raise ValueError(
            "'checkpoint_freq' cannot be used with a checkpointable function. You can "
            "specify checkpoints within your trainable function (`with "
            "tune.checkpoint_dir(step=...) as d:`)."
        )


def _is_checkpointable_function(trainable_cls: type) -> bool:
    from tune_async.trainable.function_trainable import _MODE_CHECKPOINT, FunctionTrainable

    return (
        issubclass(trainable_cls, FunctionTrainable)
        and trainable_cls._call_mode == _MODE_CHECKPOINT
    )


def _validate_num_samples(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or (value < 1 and value != -1):
        raise ValueError(f"num_samples must be a positive int or -1 (unlimited), got {value!r}")
    return sys.maxsize if value == -1 else value


def validate_checkpoint_params(
    checkpoint_freq: Any, keep_checkpoints_num: Any, checkpoint_score_attr: Any, restore: Any
) -> None:
    """Type/range checks of the checkpoint arguments (ValueError naming the argument)."""
    _validate_nonneg_int("checkpoint_freq", checkpoint_freq)
    if keep_checkpoints_num is not None:
        _validate_positive_int("keep_checkpoints_num", keep_checkpoints_num)
    if checkpoint_score_attr is not None and not isinstance(checkpoint_score_attr, str):
        raise ValueError(
            f"checkpoint_score_attr must be a result key (str), got {checkpoint_score_attr!r}"
        )
    if restore is not None and not isinstance(restore, (str, os.PathLike)):
        raise ValueError(f"restore must be a checkpoint path, got {restore!r}")
    if restore and not os.path.exists(os.path.expanduser(restore)):
        # Else the trial would start, fail to restore and leave result files behind.
        raise ValueError(f"restore: the checkpoint path {os.fspath(restore)!r} does not exist")


def _validate_nonneg_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")


def _validate_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int or None, got {value!r}")


def _validate_callable(name: str, value: Any) -> None:
    if value is not None and not callable(value):
        raise ValueError(f"{name} must be a callable taking a Trial, got {value!r}")


def _validate_log_to_file(value: Any) -> None:
    if value is True or value is False or isinstance(value, str):
        return
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return
    raise ValueError(
        f"log_to_file must be a bool, a file name, or a (stdout, stderr) pair, got {value!r}"
    )


def _asks_for_resources(trainable_cls: type) -> bool:
    """Whether the trainable defines its own ``default_resource_request``."""
    from tune_async.trainable.trainable import Trainable

    default = getattr(trainable_cls, "default_resource_request", None)
    return inspect.ismethod(default) and (
        getattr(default, "__func__", None) is not Trainable.default_resource_request.__func__)


def _parse_resources(
    spec: Any, trainable_cls: type | None, config: dict
) -> Resources | PlacementGroupFactory:
    default = getattr(trainable_cls, "default_resource_request", None)
    default_request = None
    if default is not None and inspect.ismethod(default):
        default_request = default(config)
    if default_request is not None:
        if spec is not None:
            raise ValueError(
                f"Resources for {trainable_cls} have been automatically set to "
                f"{default_request} by its `default_resource_request()` method. Please clear "
                "the `resources_per_trial` option."
            )
        spec = default_request
    if isinstance(spec, (PlacementGroupFactory, Resources)):
        return spec
    try:
        return Resources.from_dict(spec)
    except TuneError:
        raise
