"""Weights & Biases tracking for Tune experiments (``ray.tune.integration.wandb``).

Two ways, as in 1.x:

* :class:`WandbLoggerCallback`: the driver logs every trial as a W&B run
  (config, numeric results as history), each trial's run written by a thread
  of its own. Pass it in ``tune.run(callbacks=[...])``.
* :func:`wandb_mixin`: decorates a training function (or Trainable class) so it
  runs inside a W&B run of its own and can call ``wandb.log`` itself.
  Configured by ``config["wandb"]``.

Set ``WANDB_MODE=offline`` to write runs locally (``WANDB_DIR``) and sync them
later with ``wandb sync``. Needs ``pip install "tune_async[wandb]"``.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterator
from numbers import Number
from typing import Any

import anyio

from tune_async.integration._common import require
from tune_async.logger import LoggerCallback
from tune_async.trainable import session
from tune_async.trainable.trainable import Trainable
from tune_async.utils.util import flatten_dict

wandb = require("wandb", "wandb")

logger = logging.getLogger(__name__)

__all__ = ["WandbLoggerCallback", "WandbTrainableMixin", "wandb_mixin"]

WANDB_ENV_VAR = "WANDB_API_KEY"
_WANDB_QUEUE_END = None

# Result keys never logged as history (1.x's choice), and those that go to the run's
# config instead (they describe the trial, not its progress).
_exclude_results = ["done", "should_checkpoint"]
_config_results = [
    "trial_id", "experiment_tag", "node_ip", "experiment_id", "hostname", "pid", "date",
]


def _is_allowed_type(value: Any) -> bool:
    """Numbers and W&B media objects (``wandb.Image``, ``wandb.Video``...) are logged."""
    return isinstance(value, (Number, wandb.sdk.data_types.base_types.wb_value.WBValue))


def _matches(key: str, prefixes: list[str]) -> bool:
    return any(key == item or key.startswith(item + "/") for item in prefixes)


def split_result(result: dict, exclude: list[str], to_config: list[str]) -> tuple[dict, dict]:
    """A result as ``(history values, config updates)`` for W&B.

    Nested keys are joined with "/". Keys in ``to_config`` (and their nested
    keys) update the run's config; keys in ``exclude`` and values that are not
    numbers or W&B media are dropped.
    """
    log, config_update = {}, {}
    for key, value in flatten_dict(result, delimiter="/").items():
        if _matches(key, to_config):
            config_update[key] = value
        elif _matches(key, exclude) or not _is_allowed_type(value):
            continue
        else:
            log[key] = value
    config_update.pop("callbacks", None)
    return log, config_update


def _run_config(config: dict) -> dict:
    """A trial's config as a W&B run config (without the integration's own settings)."""
    return {k: v for k, v in config.items() if k not in ("callbacks", "wandb")}


def _is_offline(mode: str | None = None) -> bool:
    return (mode or os.environ.get("WANDB_MODE", "")).lower() in ("offline", "dryrun", "disabled")


def _has_netrc_login() -> bool:
    netrc = os.path.expanduser(os.environ.get("NETRC", "~/.netrc"))
    try:
        with open(netrc) as f:
            return "api.wandb.ai" in f.read()
    except OSError:
        return False


def _set_api_key(api_key_file: str | None = None, api_key: str | None = None,
                 mode: str | None = None) -> None:
    """Set the W&B API key from the arguments; without one, check that W&B has one.

    Offline runs need no key. Fails early, before any trial starts, instead of in
    each trial's W&B thread.
    """
    if api_key_file:
        if api_key:
            raise ValueError("Both WandB `api_key_file` and `api_key` set.")
        with open(os.path.expanduser(api_key_file)) as f:
            api_key = f.readline().strip()
    if api_key:
        os.environ[WANDB_ENV_VAR] = api_key
    elif not (os.environ.get(WANDB_ENV_VAR) or _is_offline(mode) or _has_netrc_login()):
        raise ValueError(
            "No WandB API key found. Either set the WANDB_API_KEY environment variable, "
            "pass `api_key` or `api_key_file` to the `WandbLoggerCallback` class as "
            "arguments, or run `wandb login` from the command line (or set WANDB_MODE=offline)"
        )


def _init_run(**init_kwargs: Any) -> Any:
    # create_new: several trials' runs may be open in one process at once (the driver's
    # callback). Such a run is not W&B's global one: log through the returned run.
    return wandb.init(**{"resume": "allow", "reinit": "create_new", **init_kwargs})


def _init_global_run(**init_kwargs: Any) -> Any:
    # The mixin's run is the process's global run, so the training code's wandb.log
    # reaches it (one trial per process at a time, as on Ray's actors).
    return wandb.init(**{"resume": "allow", "reinit": "finish_previous", **init_kwargs})


class _TrialLogThread(threading.Thread):
    """Owns one trial's W&B run: starts it, logs the queued results in order, finishes it.

    W&B's calls block (they talk to its service process and write files), so they
    run here instead of on the event loop; the loop only puts results on the queue.
    """

    def __init__(self, init_kwargs: dict, exclude: list[str], to_config: list[str]) -> None:
        super().__init__(name=f"tune-wandb-{init_kwargs.get('id')}", daemon=True)
        self.queue: queue.Queue = queue.Queue()
        self._init_kwargs = init_kwargs
        self._exclude = exclude
        self._to_config = to_config

    def run(self) -> None:
        try:
            run = _init_run(**self._init_kwargs)
        except Exception:  # noqa: BLE001 - logged; the trial itself goes on
            logger.exception("wandb.init failed for trial %s", self._init_kwargs.get("id"))
            self._discard_queue()
            return
        try:
            for result in self._results():
                log, config_update = split_result(result, self._exclude, self._to_config)
                if config_update:
                    run.config.update(config_update, allow_val_change=True)
                run.log(log)
        except Exception:  # noqa: BLE001 - logged; the trial itself goes on
            logger.exception("Logging to W&B failed for trial %s", self._init_kwargs.get("id"))
            self._discard_queue()
        finally:
            run.finish()

    def _results(self) -> Iterator[dict]:
        while (result := self.queue.get()) is not _WANDB_QUEUE_END:
            yield result

    def _discard_queue(self) -> None:
        for _ in self._results():
            pass


class WandbLoggerCallback(LoggerCallback):
    """Weights & Biases (https://wandb.ai/) logger: one W&B run per trial.

    The trial's config becomes the run's config; each result's numbers (and W&B
    media objects) are logged as the run's history, nested keys joined with "/".
    ``trial_id``, ``experiment_tag``, ``node_ip``, ``experiment_id``,
    ``hostname``, ``pid`` and ``date`` update the run's config instead, and
    ``done`` and ``should_checkpoint`` are not logged. Each trial's run is
    written by a thread of its own (1.x used a process), so W&B never blocks the
    event loop; the experiment's end waits until every run has finished.

    Args:
        project: Name of the W&B project. Mandatory.
        group: Name of the W&B group. Default: the trainable's name.
        api_key_file: Path to a file containing the W&B API key.
        api_key: The W&B API key (instead of ``api_key_file``).
        excludes: Result keys (or key prefixes) not to log.
        log_config: If True, the ``config`` entry of each result is logged too
            (useful when the config changes, e.g. with PBT). Default False.
        **kwargs: Passed on to ``wandb.init`` (e.g. ``entity``, ``tags``, ``mode``).

    Example::

        tune.run(train_fn, config={...},
                 callbacks=[WandbLoggerCallback(project="Optimization_Project",
                                                api_key_file="/path/to/file",
                                                log_config=True)])
    """

    def __init__(
        self,
        project: str,
        group: str | None = None,
        api_key_file: str | None = None,
        api_key: str | None = None,
        excludes: list[str] | None = None,
        log_config: bool = False,
        **kwargs: Any,
    ) -> None:
        if not project:
            raise ValueError("WandbLoggerCallback needs a `project` name.")
        self.project = project
        self.group = group
        self.api_key_path = api_key_file
        self.api_key = api_key
        self.excludes = list(excludes or [])
        self.log_config = log_config
        self.kwargs = kwargs
        self._trial_threads: dict[str, _TrialLogThread] = {}
        self._ended: list[_TrialLogThread] = []

    def setup(self, **info: Any) -> None:
        _set_api_key(self.api_key_path, self.api_key, self.kwargs.get("mode"))

    def log_trial_start(self, trial: Any) -> None:
        thread = self._trial_threads.get(trial.trial_id)
        if thread is not None and thread.is_alive():  # restarted: keep its run
            return
        exclude = _exclude_results + self.excludes + ([] if self.log_config else ["config"])
        init_kwargs = {
            "id": trial.trial_id,
            "name": str(trial),
            "group": self.group or trial.trainable_name,
            "project": self.project,
            "config": _run_config(trial.config),
            # The driver's console (Tune's progress table) is no trial's output.
            "settings": wandb.Settings(console="off"),
            **self.kwargs,
        }
        thread = self._trial_threads[trial.trial_id] = _TrialLogThread(
            init_kwargs, exclude, list(_config_results))
        thread.start()

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        if trial.trial_id not in self._trial_threads:
            self.log_trial_start(trial)
        self._trial_threads[trial.trial_id].queue.put(result)

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        thread = self._trial_threads.pop(trial.trial_id, None)
        if thread is not None:
            thread.queue.put(_WANDB_QUEUE_END)
            self._ended.append(thread)  # joined at the experiment's end, off the loop

    async def on_experiment_end(self, trials: list, **info: Any) -> None:
        for thread in list(self._trial_threads.values()):  # trials that did not end
            thread.queue.put(_WANDB_QUEUE_END)
            self._ended.append(thread)
        self._trial_threads.clear()
        ended, self._ended = self._ended, []
        for thread in ended:
            await anyio.to_thread.run_sync(thread.join)


# -- the mixin -------------------------------------------------------------------------------

_NO_CONFIG = (
    "Wandb mixin specified but no configuration has been passed. Make sure to include a "
    "`wandb` key in your `config` dict containing at least a `project` specification."
)


def _mixin_init_kwargs(config: dict, trial_id: str, trial_name: str) -> dict:
    """``wandb.init`` arguments from ``config["wandb"]`` (its API key settings applied)."""
    wandb_config = config.get("wandb")
    if not isinstance(wandb_config, dict):
        raise ValueError(_NO_CONFIG)
    init_kwargs = dict(wandb_config)
    api_key_file = init_kwargs.pop("api_key_file", None)
    api_key = init_kwargs.pop("api_key", None)
    if not init_kwargs.get("project"):
        raise ValueError(_NO_CONFIG)
    _set_api_key(api_key_file, api_key, init_kwargs.get("mode"))
    init_kwargs.setdefault("id", trial_id)
    init_kwargs.setdefault("name", trial_name)
    init_kwargs.setdefault("config", _run_config(config))
    return init_kwargs


def _wrap_function(func: Callable[..., Any]) -> Callable[..., Any]:
    # functools.wraps keeps the signature Tune inspects (config / checkpoint_dir).
    def start(config: dict) -> Any:
        trial = session.get_session()  # None when called outside Tune
        return _init_global_run(**_mixin_init_kwargs(
            config, trial.trial_id if trial else "default",
            trial.trial_name if trial else "default"))

    if inspect.iscoroutinefunction(func):
        @functools.wraps(func)
        async def run_async(config: dict, *args: Any, **kwargs: Any) -> Any:
            with start(config):
                return await func(config, *args, **kwargs)
        return run_async
    if inspect.isgeneratorfunction(func):
        @functools.wraps(func)
        def run_generator(config: dict, *args: Any, **kwargs: Any) -> Any:
            with start(config):
                return (yield from func(config, *args, **kwargs))
        return run_generator

    @functools.wraps(func)
    def run(config: dict, *args: Any, **kwargs: Any) -> Any:
        with start(config):  # the run finishes (failed, if it raises) when the call ends
            return func(config, *args, **kwargs)
    return run


class WandbTrainableMixin:
    """Mixin for a Trainable class: each trial logs into its own W&B run, ``self.wandb``.

    Use as ``class MyTrainable(WandbTrainableMixin, tune.Trainable)`` (or decorate
    the class with :func:`wandb_mixin`); configured by ``config["wandb"]`` as
    :func:`wandb_mixin` describes. The run starts before ``setup`` and finishes
    when the trainable stops.
    """

    def __init__(self, config: dict | None = None, *args: Any, **kwargs: Any) -> None:
        if not isinstance(self, Trainable):
            raise ValueError(
                "The Wandb mixin can only be used with Trainables: "
                "class MyTrainable(WandbTrainableMixin, tune.Trainable)."
            )
        trial_info = kwargs.get("trial_info")
        trial_id = getattr(trial_info, "trial_id", None) or "default"
        trial_name = getattr(trial_info, "trial_name", None) or "default"
        self.wandb = _init_global_run(**_mixin_init_kwargs(config or {}, trial_id, trial_name))
        super().__init__(config, *args, **kwargs)

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            self.wandb.finish()


def wandb_mixin(func: Callable[..., Any]) -> Any:
    """Run a training function (or Trainable class) inside a W&B run per trial.

    Inside a function, ``wandb.log({...})`` logs to the trial's run (id: the
    trial id, name: the trial name); a Trainable class gets it as ``self.wandb``.
    Configure it with ``config["wandb"]``: ``project`` (mandatory), optionally
    ``api_key_file`` or ``api_key``, and any other ``wandb.init`` argument
    (``group``, ``entity``, ``mode``...). The run's config is the trial's config
    without the ``wandb`` entry. The run is W&B's global run of the trial's process
    (so ``wandb.log`` works): run such trials one per process, as Ray's actors do,
    not several at once in one process (``trial_executor="local"``).

    Example::

        @wandb_mixin
        def train_fn(config):
            for i in range(10):
                loss = ...
                wandb.log({"loss": loss})
                tune.report(loss=loss)

        tune.run(train_fn, config={"wandb": {"project": "my_project"}})
    """
    if isinstance(func, type):
        if not issubclass(func, Trainable):
            raise TypeError(f"wandb_mixin decorates a function or a Trainable class, got {func!r}")
        return type(func.__name__, (WandbTrainableMixin, func), {"__module__": func.__module__})
    if not callable(func):
        raise TypeError(f"wandb_mixin decorates a function or a Trainable class, got {func!r}")
    return _wrap_function(func)
