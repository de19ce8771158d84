"""TuneServer and TuneClient (issue #10): a real server over HTTP during a running experiment."""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import time

import aiohttp
import anyio
import pytest

import tune_async as tune
from tests.scripted_executor import ScriptedExecutor
from tune_async.error import TuneError
from tune_async.web_server import TuneClient, TuneClientError


def steps(config):
    """Deterministic: the same config always reports the same losses."""
    count = config.get("steps", 2 if config["x"] < 1 else 40)
    for i in range(count):
        time.sleep(config.get("pause", 0.1))
        tune.report(loss=config["x"] * 10 - i, i=i)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def until_serving(exp, port: int, token: str | None = None) -> TuneClient:
    """A client once the server answers (it starts when the controller takes commands)."""
    client = TuneClient("127.0.0.1", port, token=token)
    with anyio.fail_after(60):
        while True:
            try:
                await client.aget_all_trials()
                return client
            except aiohttp.ClientConnectionError:
                assert not exp.done, "the experiment ended before its server answered"
                await anyio.sleep(0.05)


@contextlib.asynccontextmanager
async def serving(tmp_path, config, token=None, **kwargs):
    """A running experiment with its server; yields (handle, client, port)."""
    port = free_port()
    kwargs.setdefault("verbose", 0)
    async with tune.start(steps, config=config, local_dir=str(tmp_path), server_port=port,
                          **kwargs) as exp:
        yield exp, await until_serving(exp, port, token), port


async def until(predicate):
    with anyio.fail_after(60):
        while not predicate():
            await anyio.sleep(0.02)


def statuses(exp):
    return {t.trial_id: t.status.value for t in exp.trials}


async def request(method, url, token=None, **kwargs):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession(headers=headers) as session, \
            session.request(method, url, **kwargs) as response:
        return response.status, await response.text(), response.headers


# ---- steering a running experiment on Ray ---------------------------------------------
@pytest.mark.ray
async def test_add_a_trial_over_http_and_see_it_run(tmp_path):
    async with serving(tmp_path, {"x": 1.0, "steps": 40}) as (exp, client, _):
        name = (await client.aget_all_trials())["trials"][0]["trainable_name"]
        spec = {"run": name, "config": {"x": 2.0, "steps": 50, "pause": 0.01},
                "stop": {"training_iteration": 3}, "resources_per_trial": {"cpu": 1}}
        # The 1.x client is synchronous: from a worker thread, not on the loop.
        answer = await anyio.to_thread.run_sync(client.add_trial, "steps", spec)
        (info,) = answer["trials"]
        assert info["config"] == {"x": 2.0, "steps": 50, "pause": 0.01}  # unpickled
        listed = await anyio.to_thread.run_sync(client.get_all_trials)
        assert {t["id"] for t in listed["trials"]} == {t.trial_id for t in exp.trials}
        assert len(listed["trials"]) == 2
        analysis = await exp.wait()
    added = next(t for t in analysis.trials if t.trial_id == info["id"])
    assert added.status == "TERMINATED"
    assert added.last_result["training_iteration"] == 3
    assert added.config["x"] == 2.0
    frame = analysis.trial_dataframes[added.logdir]
    assert list(frame["loss"]) == [20.0, 19.0, 18.0]


@pytest.mark.ray
async def test_stop_a_trial_over_http(tmp_path):
    async with serving(tmp_path, {"x": 1.0, "steps": 300, "pause": 0.05}) as (exp, client, port):
        (trial,) = exp.trials
        await until(lambda: trial.last_result.get("training_iteration", 0) >= 2)
        answer = await client.astop_trial(trial.trial_id)
        assert answer["trial"]["status"] == "TERMINATED"
        assert answer["trial"]["result"]["training_iteration"] >= 2
        with pytest.raises(TuneClientError) as again:
            await client.astop_trial(trial.trial_id)
        assert again.value.status == 409 and "already finished" in again.value.message
        analysis = await exp.wait()
    (stopped,) = analysis.trials
    assert stopped.status == "TERMINATED"
    assert stopped.last_result["training_iteration"] < 300


@pytest.mark.ray
async def test_wrong_or_missing_token_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNE_SERVER_TOKEN", "s3cret")
    async with serving(tmp_path, {"x": 1.0, "steps": 30}, token="s3cret") as (exp, client, port):
        base = f"http://127.0.0.1:{port}"
        for path in ("/trials", "/", "/events", f"/trials/{exp.trials[0].trial_id}"):
            status, body, headers = await request("GET", base + path)
            assert status == 401 and "token" in json.loads(body)["error"]
            assert headers["WWW-Authenticate"].startswith("Bearer")
            status, _, _ = await request("GET", base + path, token="wrong")
            assert status == 401
        status, _, _ = await request("PUT", f"{base}/trials/{exp.trials[0].trial_id}",
                                     token="wrong")
        assert status == 401
        assert exp.trials[0].status.value == "RUNNING"  # the refused stop changed nothing
        status, _, _ = await request("GET", base + "/trials", token="s3cret")
        assert status == 200
        status, body, _ = await request("GET", base + "/?token=s3cret")  # the page's form
        assert status == 200 and "EventSource" in body
        with pytest.raises(TuneClientError) as refused:
            await TuneClient("127.0.0.1", port, token="wrong").aget_all_trials()
        assert refused.value.status == 401
        assert (await client.aget_all_trials())["trials"][0]["status"] == "RUNNING"
        await client.astop_experiment()
        await exp.wait()


def bad_requests(base: str, finished_id: str, token: str) -> list:
    """(method, path, kwargs, expected status): every kind of bad request we refuse."""
    auth = {"headers": {"Authorization": f"Bearer {token}"}}
    json_auth = {"headers": {**auth["headers"], "Content-Type": "application/json"}}
    return [
        ("GET", "/trials/no_such_trial", auth, 404),
        ("PUT", "/trials/no_such_trial", auth, 404),
        ("PUT", f"/trials/{finished_id}", auth, 409),
        ("POST", "/trials", {**json_auth, "data": b"{not json"}, 400),
        ("POST", "/trials", {**auth, "data": b'{"name": "x", "spec": {}}'}, 415),
        ("POST", "/trials", {**auth, "json": [1, 2]}, 400),
        ("POST", "/trials", {**json_auth, "data": b"[" * 100_000}, 400),
        ("GET", "/trials", {"headers": {**auth["headers"], "Host": "evil.example"}}, 403),
        ("POST", "/trials", {**auth, "json": {"name": "x", "spec": {"config": {}, "bogus": 1}}},
         400),
        ("POST", "/trials", {**auth, "json": {"name": "x", "spec": {"run": "another"}}}, 400),
        ("POST", "/trials", {**auth, "json": {"name": "x", "spec": {"config": {
            "x": {"eval": "__import__('os').getpid()"}}}}}, 400),
        ("POST", "/trials", {**auth, "json": {"name": "x", "spec": {"config": {"x": 1},
                                                                      "stop": 5}}}, 400),
        ("POST", "/trials", {**auth, "json": {"name": "x", "spec": {"num_samples": 0}}}, 400),
        ("GET", "/trials?format=xml", auth, 400),
        ("DELETE", "/trials/x", auth, 405),
        ("GET", "/no/such/path", auth, 404),
        ("GET", "/trials", {"headers": {"Authorization": "Bearer wrong"}}, 401),
        ("PUT", f"/trials/{finished_id}", {}, 401),
    ]


async def burst(base: str, finished_id: str, token: str, count: int) -> None:
    kinds = bad_requests(base, finished_id, token)
    answers: list = []

    async def send(session, method, path, kwargs, expected):
        async with session.request(method, base + path, **kwargs) as response:
            answers.append((method, path, expected, response.status,
                            json.loads(await response.text())))

    async with aiohttp.ClientSession() as session:
        for start in range(0, count, 25):
            async with anyio.create_task_group() as tg:
                for kind in itertools.islice(itertools.cycle(kinds), start, start + 25):
                    tg.start_soon(send, session, *kind)
    assert len(answers) == count
    for method, path, expected, status, body in answers:
        assert status == expected, (method, path, body)
        assert isinstance(body["error"], str) and body["error"]


def recorded(analysis) -> dict:
    """Per config: the status and every recorded (iteration, loss, i)."""
    rows = {}
    for trial in analysis.trials:
        frame = analysis.trial_dataframes[trial.logdir]
        rows[trial.config["x"]] = (trial.status, [
            tuple(r) for r in frame[["training_iteration", "loss", "i"]].itertuples(index=False)])
    return rows


@pytest.mark.ray
async def test_a_burst_of_bad_requests_changes_no_result(tmp_path, monkeypatch):
    config = {"x": tune.grid_search([0.5, 1.0, 2.0])}
    quiet = recorded(await tune.arun(steps, config=config, local_dir=str(tmp_path / "quiet"),
                                     verbose=0))
    monkeypatch.setenv("TUNE_SERVER_TOKEN", "tok")
    async with serving(tmp_path / "loud", config, token="tok") as (exp, client, port):
        short = next(t for t in exp.trials if t.config["x"] == 0.5)
        await until(lambda: short.status.value == "TERMINATED")
        started = time.monotonic()
        await burst(f"http://127.0.0.1:{port}", short.trial_id, "tok", 1000)
        print(f"1000 bad requests answered in {time.monotonic() - started:.1f} s")
        assert "RUNNING" in statuses(exp).values()  # the burst hit a running experiment
        loud = recorded(await exp.wait())
    assert loud == quiet
    assert [len(rows) for _, rows in loud.values()] == [2, 40, 40]


@pytest.mark.ray
async def test_the_event_stream_sends_each_result(tmp_path):
    async with serving(tmp_path, {"x": tune.grid_search([1.0, 2.0]), "steps": 5,
                                  "pause": 0.2}) as (exp, client, port):
        seen = []
        async with client.events() as stream:
            async for event in stream:
                seen.append(event)
        await exp.wait()
    snapshot, *events = seen
    assert {t["id"] for t in snapshot["trials"]} == {t.trial_id for t in exp.trials}
    assert isinstance(events[-1], tune.ExperimentEnded)
    for trial in exp.trials:
        results = [e.result for e in events
                   if isinstance(e, tune.TrialResult) and e.trial_id == trial.trial_id]
        shown = {t["id"]: t["result"] for t in snapshot["trials"]}[trial.trial_id]
        # Every result after the snapshot, in order (one may repeat what it showed).
        iterations = [r["training_iteration"] for r in results]
        assert iterations == list(range(iterations[0], 6))
        assert iterations[0] <= (shown["training_iteration"] + 1 if shown else 1)
        assert all(r["loss"] == trial.config["x"] * 10 - r["i"] for r in results)
        assert any(isinstance(e, tune.TrialCompleted) and e.trial_id == trial.trial_id
                   for e in events)


# ---- the HTTP surface, on an in-process executor (no Ray: instant) ----------------------
def scripted(tmp_path, config, **kwargs):
    return serving(tmp_path, config, trial_executor=ScriptedExecutor(slots=8), **kwargs)


async def test_grid_spec_adds_one_trial_per_variant(tmp_path):
    async with scripted(tmp_path, {"x": 1.0, "steps": 100, "pause": 0.02}) as (exp, _, port):
        body = {"name": "more", "spec": {"config": {"x": tune.grid_search([3.0, 4.0]),
                                                    "steps": 2, "pause": 0.0},
                                         "num_samples": 2}}
        status, text, headers = await request("POST", f"http://127.0.0.1:{port}/trials",
                                              json=body)
        assert status == 201
        infos = json.loads(text)["trials"]
        assert len(infos) == 4 and headers["Location"] == f"/trials/{infos[0]['id']}"
        status, text, _ = await request(
            "GET", f"http://127.0.0.1:{port}/trials/{infos[0]['id']}?format=json")
        assert json.loads(text)["trial"]["config"] == {"x": 3.0, "steps": 2, "pause": 0.0}
        await until(lambda: sum(s == "TERMINATED" for s in statuses(exp).values()) == 4)
        await exp.stop()
    added = sorted(t.config["x"] for t in exp.trials if t.trial_id != exp.trials[0].trial_id)
    assert added == [3.0, 3.0, 4.0, 4.0]


async def test_put_trials_stops_every_unfinished_trial(tmp_path):
    async with scripted(tmp_path, {"x": tune.grid_search([1.0, 2.0]), "steps": 1000,
                                   "pause": 0.01}) as (exp, _, port):
        status, text, _ = await request("PUT", f"http://127.0.0.1:{port}/trials?format=json")
        assert status == 200
        assert {t["id"] for t in json.loads(text)["trials"]} == {t.trial_id for t in exp.trials}
        analysis = await exp.wait()
    assert [t.status for t in analysis.trials] == ["TERMINATED", "TERMINATED"]
    assert all(t.last_result.get("training_iteration", 0) < 1000 for t in analysis.trials)


async def test_a_bad_format_adds_nothing(tmp_path):
    async with scripted(tmp_path, {"x": 1.0, "steps": 1000, "pause": 0.01}) as (exp, client, port):
        status, _, _ = await request("POST", f"http://127.0.0.1:{port}/trials?format=xml",
                                     json={"name": "x", "spec": {"config": {"x": 2.0}}})
        assert status == 400 and len(exp.trials) == 1
        await client.astop_experiment()
        await exp.wait()


async def test_unknown_trial_is_a_404_with_a_message(tmp_path):
    async with scripted(tmp_path, {"x": 1.0, "steps": 100, "pause": 0.02}) as (exp, client, _):
        with pytest.raises(TuneClientError) as missing:
            await anyio.to_thread.run_sync(client.get_trial, "nope")
        assert missing.value.status == 404 and "nope" in missing.value.message
        await client.astop_experiment()
        await exp.wait()


async def test_stop_experiment_ends_the_run(tmp_path):
    async with scripted(tmp_path, {"x": tune.grid_search([1.0, 2.0]), "steps": 1000,
                                   "pause": 0.01}) as (exp, client, _):
        await anyio.to_thread.run_sync(client.stop_experiment)
        analysis = await exp.wait()
    assert {t.status for t in analysis.trials} == {"TERMINATED"}
    assert all(t.last_result.get("training_iteration", 0) < 1000 for t in analysis.trials)


async def test_the_server_closes_when_the_run_ends_or_is_cancelled(tmp_path):
    async with scripted(tmp_path, {"x": 1.0, "steps": 20, "pause": 0.05}) as (exp, _, port):
        await exp.wait()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    # Leaving the block mid-run cancels the run: the server goes with it.
    async with scripted(tmp_path, {"x": 1.0, "steps": 1000, "pause": 0.01}) as (exp, client,
                                                                               port):
        async with client.events() as stream:
            async for event in stream:
                if isinstance(event, tune.TrialResult):
                    break
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


async def test_a_stream_client_that_never_reads_or_leaves_delays_nothing(tmp_path):
    async with scripted(tmp_path, {"x": tune.grid_search([1.0, 2.0]), "steps": 200,
                                   "pause": 0.001}) as (exp, _, port):
        request_line = f"GET /events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
        stalled = await anyio.connect_tcp("127.0.0.1", port)  # never reads a byte
        await stalled.send(request_line)
        gone = await anyio.connect_tcp("127.0.0.1", port)  # leaves at once
        await gone.send(request_line)
        await gone.aclose()
        with anyio.fail_after(60):
            analysis = await exp.wait()
        await stalled.aclose()
    assert [t.last_result["training_iteration"] for t in analysis.trials] == [200, 200]


async def test_a_port_in_use_fails_clearly(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(TuneError, match=f"could not listen on 127.0.0.1:{port}"):
            await tune.arun(steps, config={"x": 1.0, "steps": 1000, "pause": 0.01},
                            server_port=port, local_dir=str(tmp_path), verbose=0,
                            trial_executor=ScriptedExecutor())


def test_with_server_means_the_default_port(tmp_path):
    from tune_async.api import _prepare_run

    with pytest.warns(DeprecationWarning, match="server_port"):
        job = _prepare_run(run_or_experiment=steps, config={"x": 1.0}, with_server=True,
                           local_dir=str(tmp_path), verbose=0, trial_executor=ScriptedExecutor())
    assert job.server_port == 4321


def test_host_and_token_come_from_the_environment(monkeypatch):
    from tune_async.web_server import ServerOptions

    assert ServerOptions.from_env(None) == ServerOptions(port=4321, host="127.0.0.1")
    monkeypatch.setenv("TUNE_SERVER_HOST", "0.0.0.0")
    monkeypatch.setenv("TUNE_SERVER_TOKEN", "t")
    assert ServerOptions.from_env(8000) == ServerOptions(port=8000, host="0.0.0.0", token="t")


def odd_values(config):
    import numpy as np

    for i in range(1000):
        time.sleep(0.01)
        tune.report(loss=float("nan") if i == 0 else np.float32(i), best=np.inf,
                    arr=np.arange(3), i=np.int64(i))


async def test_numpy_and_nan_results_are_valid_json(tmp_path):
    port = free_port()
    async with tune.start(odd_values, config={"x": 1}, local_dir=str(tmp_path), verbose=0,
                          server_port=port, trial_executor=ScriptedExecutor()) as exp:
        client = await until_serving(exp, port)
        async with client.events() as stream:
            async for event in stream:  # the stream's JSON parses (no NaN, no numpy)
                if isinstance(event, tune.TrialResult) and event.result["i"] >= 1:
                    assert event.result["loss"] == event.result["i"]
                    assert event.result["best"] is None
                    assert event.result["arr"] == [0, 1, 2]
                    break
        status, text, _ = await request("GET", f"http://127.0.0.1:{port}/trials?format=json")
        (info,) = json.loads(text)["trials"]  # strict JSON: no NaN or Infinity tokens
        assert info["result"]["best"] is None and isinstance(info["result"]["i"], int)
        pickled = await client.aget_trial(info["id"])  # 1.x's form keeps the values as they are
        assert pickled["trial"]["result"]["best"] == float("inf")
        await client.astop_experiment()
        await exp.wait()


async def test_the_snapshot_can_carry_each_trials_earlier_results(tmp_path):
    async with scripted(tmp_path, {"x": 2.0, "steps": 1000, "pause": 0.01}) as (exp, client, _):
        (trial,) = exp.trials
        await until(lambda: trial.last_result.get("training_iteration", 0) >= 5)

        async def history():
            async with client.events(history=True) as stream:
                snapshot = await anext(aiter(stream))
            return snapshot["history"][trial.trial_id]

        with anyio.fail_after(30):  # progress.csv is flushed every few seconds
            while len(rows := await history()) < 5:
                await anyio.sleep(0.2)
        assert [row["training_iteration"] for row in rows] == list(range(1, len(rows) + 1))
        assert all(row["loss"] == 20 - row["i"] for row in rows)
        assert not any(key.startswith("config/") for key in rows[0])
        await client.astop_experiment()
        await exp.wait()


def test_a_long_history_is_thinned_to_the_budget(tmp_path, monkeypatch):
    from tune_async import web_server

    rows = ["training_iteration,loss,config/x,date"]
    rows += [f"{i},{100 - i},1.0,2026-01-01" for i in range(1, 1001)]
    (tmp_path / "progress.csv").write_text("\n".join(rows) + "\n1001,-")  # a half-written row
    monkeypatch.setattr(web_server, "MAX_HISTORY_POINTS", 100)
    (history,) = web_server._read_histories({"t": str(tmp_path)}).values()
    iterations = [row["training_iteration"] for row in history]
    assert len(history) <= 101 and iterations[0] == 1 and iterations[-1] == 1000
    assert history[0] == {"training_iteration": 1.0, "loss": 99.0}


async def test_only_loopback_host_names_reach_a_loopback_server(tmp_path):
    async with scripted(tmp_path, {"x": 1.0, "steps": 1000, "pause": 0.01}) as (exp, client, port):
        url = f"http://127.0.0.1:{port}/trials"
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "localhost"):
            assert (await request("GET", url, headers={"Host": host}))[0] == 200
        for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.evil.example:{port}"):
            status, body, _ = await request("GET", url, headers={"Host": host})
            assert status == 403 and "loopback" in json.loads(body)["error"]
        await client.astop_experiment()
        await exp.wait()


def test_host_header_names():
    from tune_async.web_server import _host_name

    assert _host_name("[::1]:80") == "::1"
    assert _host_name("localhost:4321") == "localhost"
    assert _host_name("127.0.0.1") == "127.0.0.1"


def fails(config):
    time.sleep(0.2)
    raise ValueError("boom")


async def test_the_runs_own_error_comes_through_unwrapped(tmp_path):
    port = free_port()
    with pytest.raises(ValueError, match="boom"):
        await tune.arun(fails, config={"x": 1}, fail_fast="raise", server_port=port,
                        local_dir=str(tmp_path), verbose=0, trial_executor=ScriptedExecutor())
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


async def test_the_client_reads_a_snapshot_bigger_than_aiohttps_line_limit(tmp_path):
    # 60 trials whose configs hold 20 KB each: the snapshot line is over 1 MB.
    config = {"x": tune.grid_search([float(i) for i in range(60)]), "blob": "b" * 20_000,
              "steps": 1000, "pause": 0.01}
    async with scripted(tmp_path, config) as (exp, client, _):
        async with client.events() as stream:
            snapshot = await anext(aiter(stream))
        assert len(snapshot["trials"]) == 60
        assert {t["config"]["blob"] for t in snapshot["trials"]} == {"b" * 20_000}
        await client.astop_experiment()
        await exp.wait()


async def test_the_sync_run_serves_too(tmp_path):
    """tune.run (its own event loop, here in a worker thread) serves the same way."""
    port = free_port()
    analyses = []

    def run():
        analyses.append(tune.run(steps, config={"x": 1.0, "steps": 1000, "pause": 0.01},
                                 server_port=port, local_dir=str(tmp_path), verbose=0,
                                 trial_executor=ScriptedExecutor()))

    async with anyio.create_task_group() as tg:
        tg.start_soon(anyio.to_thread.run_sync, run)
        client = TuneClient("localhost", port)
        with anyio.fail_after(60):
            while True:
                try:
                    trials = (await client.aget_all_trials())["trials"]
                    break
                except aiohttp.ClientConnectionError:
                    await anyio.sleep(0.05)
        assert [t["config"] for t in trials] == [{"x": 1.0, "steps": 1000, "pause": 0.01}]
        await client.astop_experiment()
    (analysis,) = analyses
    assert analysis.trials[0].status == "TERMINATED"
    assert analysis.trials[0].last_result.get("training_iteration", 0) < 1000
