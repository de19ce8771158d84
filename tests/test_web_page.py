"""The live page at ``/`` in a real headless Chromium, during a running experiment.

Chromium is driven through its DevTools protocol over a websocket (aiohttp's client, no
extra driver). The screenshot is kept in ``tests/artifacts/`` (gitignored).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import pathlib
import shutil
import tempfile
import time

import aiohttp
import anyio
import pytest

import tune_async as tune
from tests.test_web_server import free_port, until_serving

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = pathlib.Path(__file__).parent / "artifacts"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (.ci/run installs it: apt-get install "
                             "chromium)")


def slow_steps(config):
    for i in range(60):
        time.sleep(0.15)
        tune.report(loss=config["x"] * 10 - i * config["x"], i=i)


class Page:
    """One browser tab, spoken to in DevTools protocol calls."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)

    async def call(self, method: str, **params) -> dict:
        call_id = next(self._ids)
        await self._ws.send_json({"id": call_id, "method": method, "params": params})
        while True:  # events of domains we did not enable never come; skip stray ones
            message = await self._ws.receive_json()
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    async def evaluate(self, expression: str):
        answer = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in answer:
            raise RuntimeError(answer["exceptionDetails"])
        return answer["result"].get("value")

    async def until(self, expression: str):
        """Evaluate until the page says something truthy (within a minute); that value."""
        with anyio.fail_after(60):
            while not (value := await self.evaluate(expression)):
                await anyio.sleep(0.1)
        return value


@contextlib.asynccontextmanager
async def chromium(profile: pathlib.Path):
    """A headless Chromium; yields a Page on a blank tab. Stopped (and awaited) on exit."""
    profile.mkdir(parents=True, exist_ok=True)
    # Its profile lock (a socket dir) goes to TMPDIR and would outlive it there; a
    # socket path has at most 107 bytes, so a short directory of our own, removed below.
    lock_dir = tempfile.TemporaryDirectory(prefix="tune-chromium-")
    log = open(profile / "chromium.log", "wb")  # closed below, after chromium exits
    process = await anyio.open_process(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-dev-shm-usage", "--window-size=1100,900", "--remote-debugging-port=0",
         f"--user-data-dir={profile}", "about:blank"],
        stdout=log, stderr=log, env={**os.environ, "TMPDIR": lock_dir.name})
    try:
        port = await _devtools_port(profile / "DevToolsActivePort", process)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
                targets = await response.json(content_type=None)
            url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
            async with session.ws_connect(url, max_msg_size=0) as ws:
                yield Page(ws)
    finally:
        with anyio.CancelScope(shield=True):
            process.terminate()
            with anyio.move_on_after(10):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
            await process.aclose()
            log.close()
            lock_dir.cleanup()


async def _devtools_port(path: pathlib.Path, process) -> int:
    """Chromium writes its DevTools port into the profile once it listens."""
    with anyio.fail_after(60):
        while not path.exists() or not path.read_text().strip():
            assert process.returncode is None, "chromium exited: see chromium.log"
            await anyio.sleep(0.05)
    return int(path.read_text().split()[0])


# Each table row, with the number of points of the trial's line in the plot.
ROWS = """[...document.querySelectorAll('#trials tbody tr')].map(tr => ({
  id: tr.dataset.trialId,
  status: tr.querySelector('.status').textContent,
  iter: Number(tr.querySelector('.iter').textContent || 0),
  value: tr.querySelector('.value').textContent,
  points: Number(document.querySelector(
    `#plot polyline[data-trial-id="${tr.dataset.trialId}"]`)?.dataset.points || 0),
}))"""


@pytest.mark.ray
async def test_the_live_page_shows_trials_and_new_results(tmp_path):
    port = free_port()
    async with tune.start(slow_steps, config={"x": tune.grid_search([1.0, 2.0, 3.0])},
                          metric="loss", mode="min", local_dir=str(tmp_path), verbose=0,
                          server_port=port) as exp:
        await until_serving(exp, port)
        # Opened once the first trial's early results are on disk: the plot starts with
        # them (the page asks for each trial's history), not only with what comes next.
        first = exp.trials[0]
        await until(lambda: len(progress_rows(first)) >= 3)
        async with chromium(tmp_path / "profile") as page:
            await page.call("Page.navigate", url=f"http://127.0.0.1:{port}/")
            await page.until("document.getElementById('state')?.textContent === 'live'")
            ids = sorted(t.trial_id for t in exp.trials)
            rows = await page.until(f"(r => r.length === 3 && r)({ROWS})")
            assert sorted(r["id"] for r in rows) == ids
            assert {r["status"] for r in rows} <= {"PENDING", "RUNNING"}
            line = await page.evaluate(
                f"(l => l && {{first: l.dataset.first, points: Number(l.dataset.points)}})("
                f"document.querySelector('#plot polyline[data-trial-id=\"{first.trial_id}\"]'))")
            assert line["first"] == "1" and line["points"] >= 3
            # New results arrive without a reload: a running trial's iteration grows and
            # its line in the plot gets a point for each. (The early points come from
            # progress.csv as far as it was flushed, so the line may skip a few.)
            running = await page.until(
                f"(r => r.find(t => t.status === 'RUNNING' && t.iter >= 2))({ROWS})")
            later = await page.until(
                f"(r => r.find(t => t.id === {json.dumps(running['id'])} && "
                f"t.iter >= {running['iter'] + 3}))({ROWS})")
            assert await page.evaluate("document.getElementById('metric').value") == "loss"
            trial = next(t for t in exp.trials if t.trial_id == running["id"])
            assert later["iter"] <= trial.last_result["training_iteration"]
            assert later["points"] - running["points"] == later["iter"] - running["iter"]
            expected = trial.config["x"] * 10 - (later["iter"] - 1) * trial.config["x"]
            assert float(later["value"]) == pytest.approx(expected)
            await save_screenshot(page, "live_page.png")
            await exp.stop()
            await page.until(
                "document.getElementById('state')?.textContent === 'experiment ended'")
            rows = await page.evaluate(ROWS)
            assert {r["id"]: r["status"] for r in rows} == {
                t.trial_id: t.status.value for t in exp.trials}


def progress_rows(trial) -> list[str]:
    path = pathlib.Path(trial.logdir or "", "progress.csv")
    return path.read_text().splitlines()[1:] if trial.logdir and path.exists() else []


async def until(predicate):
    with anyio.fail_after(60):
        while not predicate():
            await anyio.sleep(0.1)


async def save_screenshot(page: Page, name: str) -> None:
    shot = await page.call("Page.captureScreenshot", format="png")
    data = base64.b64decode(shot["data"])
    assert data.startswith(b"\x89PNG") and len(data) > 10_000
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    path.write_bytes(data)
    print(f"screenshot of the live page: {os.path.relpath(path)}")


async def test_a_large_experiment_shows_the_running_trials_first(tmp_path):
    from tests.scripted_executor import ScriptedExecutor

    port = free_port()
    async with tune.start(slow_steps, config={"x": tune.uniform(1, 2)}, num_samples=320,
                          local_dir=str(tmp_path), verbose=0, server_port=port,
                          trial_executor=ScriptedExecutor(slots=4)) as exp:
        await until_serving(exp, port)
        await until(lambda: len(exp.trials) == 320)
        async with chromium(tmp_path / "profile") as page:
            await page.call("Page.navigate", url=f"http://127.0.0.1:{port}/")
            rows = await page.until(
                f"(r => r.length && r[0].status === 'RUNNING' && r)({ROWS})")
            assert len(rows) == 300
            statuses = [r["status"] for r in rows]
            assert statuses[:4] == ["RUNNING"] * 4 and set(statuses[4:]) == {"PENDING"}
            assert "Showing 300 of 320 trials" in await page.evaluate(
                "document.getElementById('notes').textContent")
        await exp.stop()
