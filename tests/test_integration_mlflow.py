"""tune_async.integration.mlflow against a real MLflow tracking server started here.

Everything is checked through MLflow's own client: runs, their status, tags,
params, metric histories and artifacts.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

import tune_async as tune

mlflow = pytest.importorskip("mlflow", reason="needs the mlflow extra")

from mlflow.tracking import MlflowClient  # noqa: E402 - after the importorskip

from tune_async.integration.mlflow import (  # noqa: E402
    MLflowLoggerCallback,
    metrics_of,
    mlflow_mixin,
    params_of,
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, log_path: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    with open(log_path) as f:
        raise RuntimeError(f"the MLflow server did not come up:\n{f.read()[-3000:]}")


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory):
    """A local MLflow server (sqlite store, local artifact root) for this module's tests."""
    root = tmp_path_factory.mktemp("mlflow_server")
    port = _free_port()
    log_path = str(root / "server.log")
    # The job runner (background workers for MLflow's GenAI jobs) is not needed here.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server",
             "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
             "--default-artifact-root", str(root / "artifacts"),
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log_path)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its uvicorn worker
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def train_and_checkpoint(config):
    for i in range(1, 4):
        if config["x"] < 0 and i == 2:
            raise RuntimeError("this trial fails on purpose")
        if i == 2:
            with tune.checkpoint_dir(step=i) as checkpoint_dir:
                with open(os.path.join(checkpoint_dir, "model.txt"), "w") as f:
                    f.write(f"x={config['x']}")
        tune.report(loss=config["x"] * i, phase="train")


def runs_by_trial_name(client, experiment_name):
    experiment = client.get_experiment_by_name(experiment_name)
    runs = client.search_runs([experiment.experiment_id])
    return {run.data.tags.get("trial_name", run.info.run_name): run for run in runs}


@pytest.mark.ray
def test_logger_callback_logs_runs_params_metrics_and_artifacts(tracking_uri, results_dir):
    callback = MLflowLoggerCallback(tracking_uri=tracking_uri, experiment_name="callback-exp",
                                    tags={"team": "tune"}, save_artifact=True)
    analysis = tune.run(
        train_and_checkpoint,
        config={"x": tune.grid_search([1, 2, -1]), "nested": {"a": 7}},
        callbacks=[callback], local_dir=results_dir, verbose=0, raise_on_failed_trial=False,
    )
    client = MlflowClient(tracking_uri)
    runs = runs_by_trial_name(client, "callback-exp")
    assert set(runs) == {str(t) for t in analysis.trials}

    for trial in analysis.trials:
        run = runs[str(trial)]
        x = trial.config["x"]
        assert run.data.tags["team"] == "tune"
        assert run.data.params == {"x": str(x), "nested/a": "7"}
        history = client.get_metric_history(run.info.run_id, "loss")
        iterations = 1 if x < 0 else 3
        assert [(m.step, m.value) for m in history] == [
            (i, float(x * i)) for i in range(1, iterations + 1)]
        assert "phase" not in run.data.metrics  # not a number: not a metric
        assert run.data.metrics["training_iteration"] == iterations
        assert run.info.status == ("FAILED" if x < 0 else "FINISHED")

        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert "params.json" in artifacts
        # The result file went up complete (after the run's final flush closed it).
        with open(client.download_artifacts(run.info.run_id, "result.json")) as f:
            assert len(f.read().splitlines()) == iterations
        if x > 0:  # the trial directory's checkpoint went up with it
            checkpoint = next(a for a in artifacts if a.startswith("checkpoint_"))
            local = client.download_artifacts(run.info.run_id, f"{checkpoint}/model.txt")
            with open(local) as f:
                assert f.read() == f"x={x}"


@mlflow_mixin
def train_with_mixin(config):
    mlflow.log_param("lr", config["lr"])
    for step in range(1, 4):
        mlflow.log_metric("score", config["lr"] * step, step=step)
        tune.report(score=config["lr"] * step)
    mlflow.log_text(f"lr={config['lr']}", "notes/lr.txt")


@pytest.mark.ray
def test_mixin_runs_the_function_inside_a_run_per_trial(tracking_uri, results_dir):
    client = MlflowClient(tracking_uri)
    experiment_id = client.create_experiment("mixin-exp")
    analysis = tune.run(
        train_with_mixin,
        config={"lr": tune.grid_search([0.1, 0.2]),
                "mlflow": {"tracking_uri": tracking_uri, "experiment_name": "mixin-exp"}},
        local_dir=results_dir, verbose=0,
    )
    runs = client.search_runs([experiment_id])
    by_name = {run.info.run_name: run for run in runs}
    assert set(by_name) == {f"{t.trial_name}_{t.trial_id}" for t in analysis.trials}
    for trial in analysis.trials:
        run = by_name[f"{trial.trial_name}_{trial.trial_id}"]
        lr = trial.config["lr"]
        assert run.info.status == "FINISHED"
        assert run.data.params == {"lr": str(lr)}
        history = client.get_metric_history(run.info.run_id, "score")
        assert [m.step for m in history] == [1, 2, 3]
        assert history[-1].value == pytest.approx(lr * 3)
        assert trial.last_result["score"] == pytest.approx(lr * 3)
        notes = client.list_artifacts(run.info.run_id, "notes")
        assert [a.path for a in notes] == ["notes/lr.txt"]


@mlflow_mixin
class TrainableWithMixin(tune.Trainable):
    def setup(self, config):
        self.total = 0

    def step(self):
        self.total += 1
        mlflow.log_metric("total", self.total, step=self.total)
        return {"total": self.total}


@pytest.mark.ray
def test_mixin_on_a_trainable_class_logs_from_step(tracking_uri, results_dir):
    client = MlflowClient(tracking_uri)
    experiment_id = client.create_experiment("class-exp")
    analysis = tune.run(
        TrainableWithMixin, stop={"training_iteration": 3},
        config={"mlflow": {"tracking_uri": tracking_uri, "experiment_id": experiment_id}},
        local_dir=results_dir, verbose=0,
    )
    [trial] = analysis.trials
    [run] = client.search_runs([experiment_id])
    assert run.info.run_name == f"{trial.trial_name}_{trial.trial_id}"
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "total")
    assert [(m.step, m.value) for m in history] == [(1, 1.0), (2, 2.0), (3, 3.0)]


def test_mixin_and_callback_fail_early_without_an_experiment(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    with pytest.raises(ValueError, match="`mlflow` key in your `config`"):
        train_with_mixin({"lr": 0.1})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(ValueError, match="No MLflow experiment named 'missing'"):
        train_with_mixin({"lr": 0.1, "mlflow": {"tracking_uri": uri,
                                                "experiment_name": "missing"}})
    with pytest.raises(ValueError, match="No experiment_name passed"):
        asyncio.run(MLflowLoggerCallback(tracking_uri=uri).setup())


def test_params_and_metrics_conversion():
    assert params_of({"a": 1, "b": {"c": [1, 2]}}) == {"a": "1", "b/c": "[1, 2]"}
    result = {"loss": 1, "done": True, "info": {"lr": 0.5}, "config": {"x": 1}, "host": "h"}
    assert metrics_of(result) == {"loss": 1.0, "done": 1.0, "info/lr": 0.5}


def report_five(config):
    for i in range(5):
        tune.report(loss=float(i))


async def test_a_slow_tracking_server_never_stalls_the_event_loop(
        tracking_uri, results_dir, monkeypatch):
    real_log_batch = MlflowClient.log_batch

    def slow_log_batch(self, *args, **kwargs):
        time.sleep(0.3)  # a tracking server taking 300 ms per request
        return real_log_batch(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", slow_log_batch)
    lateness: list[float] = []

    async def heartbeat():
        while True:
            start = time.monotonic()
            await asyncio.sleep(0.02)
            lateness.append(time.monotonic() - start - 0.02)

    beat = asyncio.create_task(heartbeat())
    try:
        analysis = await tune.arun(
            report_five, config={"x": 1}, local_dir=results_dir, verbose=0,
            trial_executor="local",
            callbacks=[MLflowLoggerCallback(tracking_uri=tracking_uri,
                                            experiment_name="slow-exp")])
    finally:
        beat.cancel()
    # Six requests (params, five results) took >= 1.8 s, none of it on the loop...
    assert max(lateness) < 0.25
    # ...and the run's end waited for them: every result is in MLflow.
    client = MlflowClient(tracking_uri)
    [run] = client.search_runs([client.get_experiment_by_name("slow-exp").experiment_id])
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [m.value for m in history] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert run.info.status == "FINISHED"
    assert str(analysis.trials[0]) == run.data.tags["trial_name"]
