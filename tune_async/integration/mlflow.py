"""MLflow tracking for Tune experiments (``ray.tune.integration.mlflow``).

Two ways, as in 1.x:

* :class:`MLflowLoggerCallback`: the driver logs every trial as an MLflow run
  (config as params, numeric results as metrics, optionally the trial directory
  as artifacts). Pass it in ``tune.run(callbacks=[...])``.
* :func:`mlflow_mixin`: decorates a training function (or Trainable class) so
  it runs inside an MLflow run of its own, and the code can call
  ``mlflow.log_metric`` / ``mlflow.log_artifact`` itself. Configured by
  ``config["mlflow"]``.

Needs ``pip install "tune_async[mlflow]"``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from tune_async.integration._common import OrderedWorker, require
from tune_async.logger import LoggerCallback
from tune_async.result import TIMESTEPS_TOTAL, TRAINING_ITERATION
from tune_async.trainable import session
from tune_async.trainable.trainable import Trainable
from tune_async.utils.util import flatten_dict

mlflow = require("mlflow", "mlflow")
from mlflow.entities import Metric, Param, RunStatus  # noqa: E402 - after the lazy import check
from mlflow.tracking import MlflowClient  # noqa: E402

logger = logging.getLogger(__name__)

__all__ = ["MLflowLoggerCallback", "MLFlowLoggerCallback", "MLflowTrainableMixin", "mlflow_mixin"]

_BATCH_LIMIT = 1000  # MLflow's most metrics (or params) per log_batch request


def params_of(config: dict) -> dict[str, str]:
    """A trial's config as MLflow params: nested keys joined with "/", values as strings."""
    return {key: str(value) for key, value in flatten_dict(config, delimiter="/").items()}


def metrics_of(result: dict) -> dict[str, float]:
    """The numeric entries of a result (nested keys joined with "/"), as MLflow metrics.

    The config is left out (it is logged as params), and so is anything that does not
    convert to a float (strings, lists), as 1.x did.
    """
    metrics = {}
    flat = flatten_dict({k: v for k, v in result.items() if k != "config"}, delimiter="/")
    for key, value in flat.items():
        try:
            metrics[key] = float(value)
        except (TypeError, ValueError):
            continue
    return metrics


def step_of(result: dict) -> int:
    """The MLflow step of a result: ``timesteps_total`` if reported, else the iteration."""
    return int(result.get(TIMESTEPS_TOTAL) or result.get(TRAINING_ITERATION) or 0)


def _chunks(items: list, size: int = _BATCH_LIMIT) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class MLflowLoggerCallback(LoggerCallback):
    """MLflow logger: logs Tune results and configs to MLflow, one MLflow run per trial.

    The config of each trial is logged as params, each result's numeric values as
    metrics (step: ``timesteps_total`` or ``training_iteration``), and the run ends
    FINISHED or FAILED with the trial. MLflow's calls (HTTP to a tracking server,
    or file writes) run in a background thread in order, never on the event loop;
    the experiment's end waits until they are all done.

    Args:
        tracking_uri: The tracking URI for where to manage experiments and runs, a
            local directory or a server (``http://host:port``). With Tune on
            several nodes, use a remote server. Default: MLflow's default
            (``MLFLOW_TRACKING_URI`` or ``./mlruns``).
        registry_uri: The registry URI passed to MLflow's client. Default None.
        experiment_name: The experiment to log into; created if it does not exist.
            Default: the ``MLFLOW_EXPERIMENT_NAME`` environment variable, else
            the existing experiment ``MLFLOW_EXPERIMENT_ID`` names.
        tags: Tags set on every run (each run also gets ``trial_name``).
        save_artifact: If True, the trial's directory (params, result files,
            checkpoints) is uploaded as the run's artifacts, complete, once the
            experiment's final state is written (1.x: at the trial's end, when
            result files could still miss their last lines). Default False.

    Example::

        tune.run(train_fn, config={...}, callbacks=[MLflowLoggerCallback(
            tracking_uri="http://127.0.0.1:5000", experiment_name="exp",
            save_artifact=True)])
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        registry_uri: str | None = None,
        experiment_name: str | None = None,
        tags: dict | None = None,
        save_artifact: bool = False,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.registry_uri = registry_uri
        self.experiment_name = experiment_name
        self.tags = dict(tags or {})
        self.should_save_artifact = save_artifact
        self.experiment_id: str | None = None
        self.client: Any = None
        self._trial_runs: dict[str, str] = {}  # trial_id -> MLflow run id (set in the worker)
        self._worker: OrderedWorker | None = None
        self._context: Any = None
        self._artifacts_at_end: list[tuple[str, str]] = []  # (trial_id, trial dir)

    # -- hooks (on the event loop: they only queue work) --------------------------------------

    async def setup(self, context: Any = None, **info: Any) -> None:
        self._context = context
        self._worker = OrderedWorker("tune-mlflow", logger)
        # Awaited: a missing experiment is an error before any trial starts.
        await self._worker.call(self._connect)

    def log_trial_start(self, trial: Any) -> None:
        self._submit(self._start_run, trial.trial_id, str(trial), dict(trial.config))

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        timestamp_ms = int(time.time() * 1000)
        self._submit(self._log_metrics, trial.trial_id, metrics_of(result), step_of(result),
                     timestamp_ms)

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        artifacts_dir = trial.logdir if self.should_save_artifact else None
        if artifacts_dir and self._context is not None:
            # The trial's result files are complete once the run's final flush closed
            # them (after on_experiment_end): its artifacts go up then.
            self._artifacts_at_end.append((trial.trial_id, artifacts_dir))
            artifacts_dir = None
        self._submit(self._end_run, trial.trial_id, artifacts_dir, failed)

    async def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self._worker is not None:
            await self._worker.close()
            self._worker = None
        if self._artifacts_at_end:
            pending, self._artifacts_at_end = self._artifacts_at_end, []
            context = self._context
            context.at_end(lambda: context.run_sync(self._log_artifacts, pending),
                           name="MLflowLoggerCallback artifacts")

    # -- MLflow calls (in the worker thread, in order) ----------------------------------------

    def _submit(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._worker is None:  # used outside tune.run: no setup happened
            raise RuntimeError("MLflowLoggerCallback is used before its setup() ran.")
        self._worker.submit(fn, *args)

    def _connect(self) -> None:
        self.client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)
        self.experiment_id = self._experiment_id(self.client)

    def _experiment_id(self, client: Any) -> str:
        name = self.experiment_name or os.environ.get("MLFLOW_EXPERIMENT_NAME")
        if name:
            experiment = client.get_experiment_by_name(name)
            return experiment.experiment_id if experiment else client.create_experiment(name)
        experiment_id = os.environ.get("MLFLOW_EXPERIMENT_ID")
        if experiment_id and _experiment_exists(client, experiment_id):
            return experiment_id
        raise ValueError(
            "No experiment_name passed, MLFLOW_EXPERIMENT_NAME env var is not set, and "
            "MLFLOW_EXPERIMENT_ID either is not set or does not exist. Please set one of "
            "these to use the MLflowLoggerCallback."
        )

    def _start_run(self, trial_id: str, trial_name: str, config: dict) -> None:
        if trial_id in self._trial_runs:  # a restarted trial goes on in the same run
            return
        tags = {**self.tags, "trial_name": trial_name}
        run = self.client.create_run(experiment_id=self.experiment_id, tags=tags,
                                     run_name=trial_name)
        run_id = self._trial_runs[trial_id] = run.info.run_id
        params = [Param(key, value) for key, value in params_of(config).items()]
        for chunk in _chunks(params):
            self.client.log_batch(run_id, params=chunk)

    def _log_metrics(self, trial_id: str, metrics: dict, step: int, timestamp_ms: int) -> None:
        entries = [Metric(key, value, timestamp_ms, step) for key, value in metrics.items()]
        for chunk in _chunks(entries):
            self.client.log_batch(self._trial_runs[trial_id], metrics=chunk)

    def _log_artifacts(self, pending: list[tuple[str, str]]) -> None:
        for trial_id, artifacts_dir in pending:
            try:
                if os.path.isdir(artifacts_dir):
                    self.client.log_artifacts(self._trial_runs[trial_id], local_dir=artifacts_dir)
            except Exception:  # noqa: BLE001 - one trial's upload never stops the others'
                logger.exception("Could not upload %s as MLflow artifacts", artifacts_dir)

    def _end_run(self, trial_id: str, artifacts_dir: str | None, failed: bool) -> None:
        run_id = self._trial_runs[trial_id]
        try:
            if artifacts_dir and os.path.isdir(artifacts_dir):
                self.client.log_artifacts(run_id, local_dir=artifacts_dir)
        finally:
            status = RunStatus.to_string(RunStatus.FAILED if failed else RunStatus.FINISHED)
            self.client.set_terminated(run_id=run_id, status=status)


MLFlowLoggerCallback = MLflowLoggerCallback  # the name 1.x used before 1.2


def _experiment_exists(client: Any, experiment_id: str) -> bool:
    try:
        return client.get_experiment(experiment_id) is not None
    except mlflow.exceptions.MlflowException:
        return False


# -- the mixin -------------------------------------------------------------------------------

_NO_CONFIG = (
    "MLflow mixin specified but no configuration has been passed. Make sure to include a "
    "`mlflow` key in your `config` dict containing at least a `tracking_uri` and either "
    "`experiment_name` or `experiment_id` specification."
)


def _resolve_experiment(client: Any, mlflow_config: dict) -> str:
    """The id of the existing experiment ``config["mlflow"]`` names (id wins over name)."""
    experiment_id = mlflow_config.get("experiment_id") or os.environ.get("MLFLOW_EXPERIMENT_ID")
    if experiment_id:
        if not _experiment_exists(client, experiment_id):
            raise ValueError(
                f"No MLflow experiment with id {experiment_id!r} exists at "
                f"{client.tracking_uri}; create it first, or pass an existing one."
            )
        return experiment_id
    name = mlflow_config.get("experiment_name") or os.environ.get("MLFLOW_EXPERIMENT_NAME")
    if not name:
        raise ValueError(_NO_CONFIG)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        # Trials would race to create it: it has to exist before tune.run (as in 1.x).
        raise ValueError(
            f"No MLflow experiment named {name!r} exists at {client.tracking_uri}. "
            f"Create it before tune.run, e.g. mlflow.create_experiment({name!r})."
        )
    return experiment.experiment_id


def _mlflow_config(config: dict) -> dict:
    mlflow_config = config.get("mlflow")
    if not isinstance(mlflow_config, dict):
        raise ValueError(_NO_CONFIG)
    return mlflow_config


def _start_trial_run(config: dict, trial_name: str, trial_id: str) -> str:
    """Point MLflow at ``config["mlflow"]`` and start this trial's run; its run id."""
    mlflow_config = _mlflow_config(config)
    if mlflow_config.get("token"):
        os.environ["MLFLOW_TRACKING_TOKEN"] = mlflow_config["token"]
    tracking_uri = mlflow_config.get("tracking_uri")
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    experiment_id = _resolve_experiment(MlflowClient(), mlflow_config)
    run_name = f"{trial_name}_{trial_id}".replace("/", "_")
    return mlflow.start_run(experiment_id=experiment_id, run_name=run_name).info.run_id


@contextlib.contextmanager
def _trial_run(config: dict) -> Iterator[None]:
    """This function trial's MLflow run, active in the thread that runs the function."""
    trial = session.get_session()  # None when called outside Tune (a plain function call)
    _start_trial_run(config, trial.trial_name if trial else "default",
                     trial.trial_id if trial else "default")
    status = "FAILED"
    try:
        yield
        status = "FINISHED"
    finally:
        mlflow.end_run(status=status)


def _wrap_function(func: Callable[..., Any]) -> Callable[..., Any]:
    # functools.wraps keeps the signature Tune inspects (config / checkpoint_dir), and the
    # run is started inside the call: MLflow's active run belongs to the calling thread.
    if inspect.iscoroutinefunction(func):
        @functools.wraps(func)
        async def run_async(config: dict, *args: Any, **kwargs: Any) -> Any:
            with _trial_run(config):
                return await func(config, *args, **kwargs)
        return run_async
    if inspect.isgeneratorfunction(func):
        @functools.wraps(func)
        def run_generator(config: dict, *args: Any, **kwargs: Any) -> Any:
            with _trial_run(config):
                return (yield from func(config, *args, **kwargs))
        return run_generator

    @functools.wraps(func)
    def run(config: dict, *args: Any, **kwargs: Any) -> Any:
        with _trial_run(config):
            return func(config, *args, **kwargs)
    return run


class MLflowTrainableMixin:
    """Mixin for a Trainable class: each trial runs inside its own MLflow run.

    Use as ``class MyTrainable(MLflowTrainableMixin, tune.Trainable)`` (or
    decorate the class with :func:`mlflow_mixin`); configured by
    ``config["mlflow"]`` as :func:`mlflow_mixin` describes. The run starts after
    ``setup`` and is the active run in ``step``, ``save_checkpoint`` and
    ``load_checkpoint``, so they can call ``mlflow.log_metric`` directly; it
    ends when the trainable stops.
    """

    def __init__(self, config: dict | None = None, *args: Any, **kwargs: Any) -> None:
        if not isinstance(self, Trainable):
            raise ValueError(
                "The MLflow mixin can only be used with Trainables: "
                "class MyTrainable(MLflowTrainableMixin, tune.Trainable)."
            )
        _mlflow_config(config or {})  # a missing config fails before setup runs
        super().__init__(config, *args, **kwargs)
        self._mlflow = mlflow
        self._mlflow_run_id = _start_trial_run(self.config, self.trial_name, self.trial_id)

    def _activate_mlflow_run(self) -> None:
        # Tune may call step from another thread than __init__; MLflow's active run is
        # per thread, so resume the trial's run there.
        active = mlflow.active_run()
        if active is None or active.info.run_id != self._mlflow_run_id:
            if active is not None:
                mlflow.end_run()
            mlflow.start_run(run_id=self._mlflow_run_id)

    def step(self) -> dict:
        self._activate_mlflow_run()
        return super().step()

    def save_checkpoint(self, checkpoint_dir: str) -> Any:
        self._activate_mlflow_run()
        return super().save_checkpoint(checkpoint_dir)

    def load_checkpoint(self, checkpoint: Any) -> None:
        self._activate_mlflow_run()
        return super().load_checkpoint(checkpoint)

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            active = mlflow.active_run()
            if active is not None and active.info.run_id == self._mlflow_run_id:
                mlflow.end_run()
            else:
                MlflowClient().set_terminated(self._mlflow_run_id)


def mlflow_mixin(func: Callable[..., Any]) -> Any:
    """Run a training function (or Trainable class) inside an MLflow run per trial.

    Inside it, ``mlflow.log_metric(...)``, ``mlflow.log_params(...)`` and
    ``mlflow.log_artifact(...)`` log to the trial's run (named
    ``<trial name>_<trial id>``), which ends FINISHED when the function returns
    and FAILED when it raises. Configure it with ``config["mlflow"]``:

    * ``tracking_uri`` (str): where MLflow tracks (a server for multi-node Tune).
    * ``experiment_id`` (str): an existing experiment; or
    * ``experiment_name`` (str): an existing experiment's name (create it before
      ``tune.run``, e.g. with ``mlflow.create_experiment``).
    * ``token`` (str, optional): sets ``MLFLOW_TRACKING_TOKEN`` for HTTP auth.

    Example::

        @mlflow_mixin
        def train_fn(config):
            for i in range(10):
                loss = ...
                mlflow.log_metric("loss", loss)
                tune.report(loss=loss)

        tune.run(train_fn, config={"mlflow": {"tracking_uri": uri,
                                              "experiment_name": "exp"}})
    """
    if isinstance(func, type):
        if not issubclass(func, Trainable):
            raise TypeError(f"mlflow_mixin decorates a function or a Trainable class, got {func!r}")
        return type(func.__name__, (MLflowTrainableMixin, func), {"__module__": func.__module__})
    if not callable(func):
        raise TypeError(f"mlflow_mixin decorates a function or a Trainable class, got {func!r}")
    return _wrap_function(func)
