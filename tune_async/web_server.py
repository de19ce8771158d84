"""TuneServer and TuneClient: watch and steer a running experiment over HTTP.

``tune.run(..., server_port=4321)`` serves, on the experiment's own event loop
(aiohttp, no thread), the ray.tune 1.x endpoints plus a live event stream and page:

=====================  ==============================================================
``GET /``              the live page: trials table and a metric plot (``?metric=loss``)
``GET /trials``        ``{"trials": [info, ...]}``
``GET /trials/<id>``   ``{"trial": info}`` (404 for an unknown id)
``PUT /trials/<id>``   stop the trial; ``{"trial": info}`` once it is TERMINATED
``PUT /trials``        stop every unfinished trial; ``{"trials": [info, ...]}``
``POST /trials``       ``{"name": str, "spec": {...}}`` adds trials; 201 ``{"trials": [...]}``
``PUT /stop_experiment``  stop every trial and end the experiment
``GET /events``        server-sent events: a ``snapshot``, then the controller's events
=====================  ==============================================================

``info`` is 1.x's ``{"id", "trainable_name", "config", "status", "result"}`` with
``config`` and ``result`` cloudpickled and hex-encoded (what 1.x's TuneClient reads);
``?format=json`` gives them as plain JSON instead (curl, browsers).

Safe by default: the server binds 127.0.0.1 (``TUNE_SERVER_HOST`` chooses another
interface) and, when ``TUNE_SERVER_TOKEN`` is set, every request must carry it
(``Authorization: Bearer <token>``, or ``?token=<token>`` for the page); others get
401. A bad request gets a 4xx with ``{"error": message}`` and never reaches a trial.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hmac
import importlib.resources
import itertools
import json
import logging
import math
import os
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterable
from typing import Any

import anyio
import anyio.to_thread
import attrs
import cloudpickle
from aiohttp import web

from tune_async import events as ev
from tune_async.controller import AddTrialCommand, StopAll, StopTrialCommand
from tune_async.error import TuneError
from tune_async.trial import TrialView
from tune_async.utils.util import Pacer

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

logger = logging.getLogger(__name__)

DEFAULT_PORT = 4321
HOST_ENV = "TUNE_SERVER_HOST"
TOKEN_ENV = "TUNE_SERVER_TOKEN"
DEFAULT_HOST = "127.0.0.1"

# A POST may add at most this many trials (a grid times num_samples).
MAX_NEW_TRIALS = 1000
# Undelivered events kept per stream client; beyond that it gets an EventsDropped.
STREAM_BUFFER = 10_000
# A comment line this often keeps idle streams alive through proxies and finds
# clients that left.
KEEPALIVE_S = 15.0
# When the server closes, open streams get this long to send their last events.
STREAM_GRACE_S = 1.0
# The page's history (GET /events?history=1) sends at most about this many results in all.
MAX_HISTORY_POINTS = 50_000

_SPEC_KEYS = ("run", "config", "stop", "resources_per_trial", "resources", "num_samples")
_BODY_KEYS = ("name", "spec")


class TuneClientError(TuneError):
    """The TuneServer refused a request (``status`` is the HTTP status)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


@attrs.frozen
class ServerOptions:
    """Where the server listens and what it asks of clients."""

    port: int
    host: str = DEFAULT_HOST
    token: str | None = None

    @classmethod
    def from_env(cls, port: int | None) -> ServerOptions:
        """``port`` (1.x: a falsy port means 4321), host and token from the environment."""
        return cls(port=port or DEFAULT_PORT, host=os.environ.get(HOST_ENV) or DEFAULT_HOST,
                   token=os.environ.get(TOKEN_ENV) or None)


_SERVER = web.AppKey("tune_server", object)


# ---- the server ----------------------------------------------------------------------
class TuneServer:
    """An HTTP server on the running event loop, serving one experiment's controller.

    ``tune.run(server_port=...)`` starts and stops it; to run one yourself::

        async with TuneServer(controller, port=4321, token="s3cret"):
            ...

    ``host`` and ``token`` default to ``TUNE_SERVER_HOST`` (else 127.0.0.1) and
    ``TUNE_SERVER_TOKEN`` (else none). Adding and stopping trials are commands to the
    controller, decided between two events like everything else.
    """

    DEFAULT_PORT = DEFAULT_PORT

    def __init__(self, controller: Any, port: int | None = None, host: str | None = None,
                 token: str | None = None) -> None:
        defaults = ServerOptions.from_env(port)
        self.options = ServerOptions(port=defaults.port, host=host or defaults.host,
                                     token=token if token is not None else defaults.token)
        self._controller = controller
        self._runner: web.AppRunner | None = None
        self._streams: dict[anyio.CancelScope, anyio.Event] = {}

    @property
    def url(self) -> str:
        host = self.options.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.options.port}/"

    async def start(self) -> None:
        """Listen (raises TuneError naming the address when it cannot)."""
        runner = web.AppRunner(self._app(), access_log=None,  # the log would show tokens
                               shutdown_timeout=STREAM_GRACE_S + 1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.options.host, self.options.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise TuneError(f"TuneServer could not listen on {self.options.host}:"
                            f"{self.options.port}: {exc}") from exc
        self._runner = runner
        logger.info("TuneServer listening on %s", self.url)

    async def close(self) -> None:
        """Stop listening, end open streams and close every connection (awaited)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> TuneServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        with anyio.CancelScope(shield=True):
            await self.close()

    async def serve_while_running(self) -> None:
        """Serve from when the controller takes commands until cancelled."""
        await self._controller.accepting.wait()
        if self._controller.events.ended is not None:
            return  # it ended before it started: nothing to serve
        try:
            await self.start()
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await self.close()

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[_json_errors, _local_names_only, _require_token])
        app[_SERVER] = self
        app.on_shutdown.append(self._end_streams)
        app.router.add_get("/", self._page)
        app.router.add_get("/trials", self._list_trials)
        app.router.add_post("/trials", self._add_trials)
        app.router.add_put("/trials", self._stop_trials)
        app.router.add_get("/trials/{trial_id}", self._get_trial)
        app.router.add_put("/trials/{trial_id}", self._stop_trial)
        app.router.add_put("/stop_experiment", self._stop_experiment)
        app.router.add_get("/events", self._events)
        return app

    # ---- reading ----------------------------------------------------------------------
    async def _page(self, request: web.Request) -> web.Response:
        page = importlib.resources.files("tune_async") / "web" / "index.html"
        text = await anyio.to_thread.run_sync(page.read_text, "utf-8")
        return web.Response(text=text, content_type="text/html",
                            headers={"Cache-Control": "no-store"})

    async def _list_trials(self, request: web.Request) -> web.Response:
        encode = _info_encoder(request)
        infos = await _encode_each(list(self._controller.trial_views), encode)
        return await _json_response({"trials": infos})

    async def _get_trial(self, request: web.Request) -> web.Response:
        trial = self._trial_or_404(request.match_info["trial_id"])
        return await _json_response({"trial": _info_encoder(request)(trial)})

    def _trial_or_404(self, trial_id: str) -> TrialView:
        trial = self._controller.trial_by_id.get(trial_id)
        if trial is None:
            raise _http_error(web.HTTPNotFound, f"No trial with id {trial_id!r} in this "
                                                "experiment")
        return TrialView(trial)

    # ---- steering ---------------------------------------------------------------------
    async def _stop_trial(self, request: web.Request) -> web.Response:
        encode = _info_encoder(request)
        trial = self._trial_or_404(request.match_info["trial_id"])
        if trial.status.is_finished:
            raise _http_error(web.HTTPConflict, f"Trial {trial.trial_id} has already "
                                                f"finished ({trial.status.value})")
        # (A ValueError now: it finished while the command waited its turn.)
        await self._command(StopTrialCommand(trial.trial_id, _future()), web.HTTPConflict)
        return await _json_response({"trial": encode(trial)})

    async def _stop_trials(self, request: web.Request) -> web.Response:
        """1.x's PUT /trials: stop every trial that has not finished."""
        encode = _info_encoder(request)
        unfinished = [t for t in self._controller.trial_views if not t.status.is_finished]
        for trial in unfinished:
            with contextlib.suppress(web.HTTPConflict):  # it finished meanwhile
                await self._command(StopTrialCommand(trial.trial_id, _future()),
                                    web.HTTPConflict)
        infos = await _encode_each(unfinished, encode)
        return await _json_response({"trials": infos})

    async def _add_trials(self, request: web.Request) -> web.Response:
        encode = _info_encoder(request)
        body = await _json_body(request)
        spec = _trial_spec(body, self._controller.s.experiments[0].run_identifier)
        configs = _expand_configs(spec.get("config", {}), spec.get("num_samples", 1))
        resources = spec.get("resources_per_trial", spec.get("resources"))
        added = []
        for config in configs:
            trial_id = await self._command(
                AddTrialCommand(config, spec.get("stop"), resources, _future()))
            added.append(TrialView(self._controller.trial_by_id[trial_id]))
        infos = await _encode_each(added, encode)
        location = f"/trials/{added[0].trial_id}" if added else "/trials/"
        return await _json_response({"trials": infos}, status=201,
                                    headers={"Location": location})

    async def _stop_experiment(self, request: web.Request) -> web.Response:
        if self._controller.events.ended is not None:
            raise _http_error(web.HTTPConflict, "The experiment has ended")
        self._controller._post(StopAll("stopped through the TuneServer"))
        return await _json_response({})

    async def _command(self, command: Any,
                       refused: type[web.HTTPException] = web.HTTPBadRequest) -> Any:
        """Hand a command to the controller; its refusal becomes a 4xx."""
        try:
            return await self._controller.submit(command)
        except (ValueError, TypeError) as exc:  # a bad config, stop or resources
            raise _http_error(refused, str(exc)) from None
        except TuneError as exc:  # the experiment is stopping or has ended
            raise _http_error(web.HTTPConflict, str(exc)) from None

    # ---- the event stream ---------------------------------------------------------------
    async def _events(self, request: web.Request) -> web.StreamResponse:
        """A snapshot of the trials, then every event the controller publishes.

        The subscription starts before the snapshot is built, so nothing is missed; an
        event may repeat what the snapshot already shows (apply them idempotently).
        ``?history=1`` adds each trial's earlier results (numeric columns of its
        progress.csv, as far as it was flushed; thinned out for long runs) to the snapshot.
        """
        subscription = self._controller.events.subscribe(STREAM_BUFFER)
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        })
        scope, done = anyio.CancelScope(), anyio.Event()
        self._streams[scope] = done
        try:
            with scope:
                snapshot = await self._snapshot(request.query.get("history") == "1")
                await response.prepare(request)
                # (trials, then their fields and each history row: encoded in pieces)
                data = await _dumps_in_pieces(snapshot, depth=3)
                await response.write(f"event: snapshot\ndata: {data}\n\n".encode())
                await _forward(subscription, response)
        except ConnectionError:
            pass  # the client left
        finally:
            subscription.close()
            del self._streams[scope]
            done.set()
        return response

    async def _snapshot(self, with_history: bool) -> dict:
        views = list(self._controller.trial_views)
        experiment = self._controller.s
        snapshot = {"name": experiment.experiments[0].name,
                    "trials": await _encode_each(views, _plain_info),
                    "metric": experiment.metric, "mode": experiment.mode,
                    "ended": self._controller.events.ended is not None}
        if with_history:  # files: read in a worker thread
            logdirs = {view.trial_id: view.logdir for view in views}
            snapshot["history"] = await anyio.to_thread.run_sync(_read_histories, logdirs)
        return snapshot

    async def _end_streams(self, app: web.Application) -> None:
        """Closing: streams that are ending send their last events, the rest are cut."""
        with anyio.move_on_after(STREAM_GRACE_S):
            for done in list(self._streams.values()):
                await done.wait()
        for scope in list(self._streams):
            scope.cancel()


async def serve_during(controller: Any, port: int | None) -> list:
    """Run the controller with a TuneServer beside it, in a task group the run owns.

    The server starts once the controller takes commands and is closed (sockets and
    all) when the run ends, fails or is cancelled.
    """
    server = TuneServer(controller, port)
    error: BaseException | None = None
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve_while_running)
            try:
                trials = await controller.run()
            except Exception as exc:  # the run's own error: re-raised as is, below
                error = exc
            finally:
                tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:  # the server could not start
        error = group.exceptions[0] if len(group.exceptions) == 1 else group
    if error is not None:
        raise error  # (outside the handler: its traceback and cause stay the run's own)
    return trials


async def _forward(subscription: Any, response: web.StreamResponse) -> None:
    events = aiter(subscription)
    while True:
        event = None
        with anyio.move_on_after(KEEPALIVE_S):
            event = await anext(events, StopAsyncIteration)
        if event is None:
            await response.write(b": keepalive\n\n")
        elif event is StopAsyncIteration:
            return
        else:
            await response.write(_sse(type(event).__name__, _event_data(event)))


def _sse(kind: str, data: Any) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


def _read_histories(logdirs: dict[str, str | None]) -> dict[str, list[dict]]:
    """Each trial's recorded results from its progress.csv (in a worker thread)."""
    per_trial = max(10, MAX_HISTORY_POINTS // max(1, len(logdirs)))
    histories = {}
    for trial_id, logdir in logdirs.items():
        rows = _progress_rows(os.path.join(logdir, "progress.csv")) if logdir else []
        stride = math.ceil(len(rows) / per_trial) if rows else 1
        histories[trial_id] = rows[::stride] + ([rows[-1]] if (len(rows) - 1) % stride else [])
    return histories


def _progress_rows(path: str) -> list[dict]:
    """The numeric, non-config columns of each complete row (the file may be mid-write)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            complete = (row for row in csv.DictReader(f) if None not in row.values())
            return [row for row in map(_numeric_row, complete) if "training_iteration" in row]
    except (OSError, csv.Error):
        return []


def _numeric_row(row: dict) -> dict:
    numbers = {}
    for key, text in row.items():
        if key is None or key.startswith("config/") or not text:
            continue
        with contextlib.suppress(ValueError, TypeError):
            value = float(text)
            if math.isfinite(value):
                numbers[key] = value
    return numbers


def _event_data(event: Any) -> dict:
    return _plain(attrs.asdict(event, recurse=False))


# ---- trial info -------------------------------------------------------------------------
def _pickled_info(trial: Any) -> dict:
    """1.x's trial info: config and last result cloudpickled, hex-encoded."""
    return {
        "id": trial.trial_id,
        "trainable_name": trial.trainable_name,
        "config": cloudpickle.dumps(trial.config).hex(),
        "status": trial.status.value,
        "result": cloudpickle.dumps(dict(trial.last_result or {}) or None).hex(),
    }


def _plain_info(trial: Any) -> dict:
    """The same fields as plain JSON (for the page and for clients that are not Python)."""
    return {
        "id": trial.trial_id,
        "trainable_name": trial.trainable_name,
        "config": _plain(trial.config),
        "status": trial.status.value,
        "result": _plain(dict(trial.last_result or {})) or None,
    }


def _info_encoder(request: web.Request) -> Any:
    form = request.query.get("format", "pickle")
    if form not in ("pickle", "json"):
        raise _http_error(web.HTTPBadRequest, f"format must be 'pickle' or 'json', got {form!r}")
    return _plain_info if form == "json" else _pickled_info


async def _encode_each(trials: list, encode: Any) -> list:
    """``encode`` each trial, yielding to the loop now and then (many trials)."""
    infos = []
    pause = Pacer()  # a large response is built in pieces
    for trial in trials:
        infos.append(encode(trial))
        await pause.now_and_then()
    return infos


async def _dumps_in_pieces(value: Any, depth: int) -> str:
    """``json.dumps(value)``, the containers of the first ``depth`` levels taken apart.

    One json.dumps of a big body holds the loop (and, in a worker thread, the GIL) for
    its whole length; encoded item by item, the loop gets a turn every few ms.
    """
    parts: list[str] = []
    pause = Pacer()  # a large response is built in pieces

    async def encode(item: Any, levels: int) -> None:
        if levels == 0 or not isinstance(item, (dict, list)) or not item:
            parts.append(json.dumps(item))
            await pause.now_and_then()
            return
        pairs = item.items() if isinstance(item, dict) else enumerate(item)
        parts.append("{" if isinstance(item, dict) else "[")
        for index, (key, element) in enumerate(pairs):
            parts.append("," if index else "")
            if isinstance(item, dict):
                parts.append(json.dumps(str(key)) + ":")
            await encode(element, levels - 1)
        parts.append("}" if isinstance(item, dict) else "]")

    await encode(value, depth)
    return "".join(parts)


def _plain(value: Any) -> Any:
    """A JSON-safe copy: numpy values become Python ones, NaN and infinities null."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    tolist = getattr(value, "tolist", None)  # numpy scalars and arrays
    if callable(tolist):
        with contextlib.suppress(Exception):
            return _plain(tolist())
    return str(value)


# ---- requests -------------------------------------------------------------------------
async def _json_body(request: web.Request) -> dict:
    # Only JSON: a web page elsewhere can make a browser POST text/plain here without
    # asking first (CORS preflight), never application/json.
    if request.content_type != "application/json":
        raise _http_error(web.HTTPUnsupportedMediaType, "The body must be JSON, sent with "
                                                        "Content-Type: application/json")
    text = await request.text()
    try:
        body = json.loads(text)
    except (ValueError, RecursionError) as exc:  # (RecursionError: nested absurdly deep)
        raise _http_error(web.HTTPBadRequest, f"The body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _http_error(web.HTTPBadRequest, "The body must be a JSON object "
                                              '{"name": ..., "spec": {...}}')
    return body


def _trial_spec(body: dict, run_identifier: str) -> dict:
    """The ``spec`` of a POST /trials body, checked key by key."""
    _no_unknown_keys(body, _BODY_KEYS, "The body")
    spec = body.get("spec")
    if not isinstance(spec, dict):
        raise _http_error(web.HTTPBadRequest, 'The body needs "spec": a JSON object with '
                                              f"any of {list(_SPEC_KEYS)}")
    _no_unknown_keys(spec, _SPEC_KEYS, "spec")
    if "resources" in spec and "resources_per_trial" in spec:
        raise _http_error(web.HTTPBadRequest, 'spec takes "resources_per_trial" or its alias '
                                              '"resources", not both')
    if "run" in spec and spec["run"] != run_identifier:
        raise _http_error(web.HTTPBadRequest, f"This experiment runs {run_identifier!r}; the "
                                              f"server adds trials of it only, got "
                                              f"run={spec['run']!r}")
    if not isinstance(spec.get("config", {}), dict):
        raise _http_error(web.HTTPBadRequest, "spec.config must be a JSON object")
    if _holds_eval(spec.get("config", {})):
        raise _http_error(web.HTTPBadRequest, 'spec.config cannot hold the {"eval": ...} form '
                                              "over HTTP (it would run code in the driver)")
    samples = spec.get("num_samples", 1)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise _http_error(web.HTTPBadRequest, f"spec.num_samples must be an int >= 1, got "
                                              f"{samples!r}")
    return spec


def _no_unknown_keys(mapping: dict, known: tuple, what: str) -> None:
    unknown = sorted(set(mapping) - set(known))
    if unknown:
        raise _http_error(web.HTTPBadRequest, f"{what} has unknown keys {unknown}; it takes "
                                              f"{list(known)}")


def _holds_eval(value: Any) -> bool:
    if isinstance(value, dict):
        return "eval" in value or any(_holds_eval(v) for v in value.values())
    if isinstance(value, list):
        return any(_holds_eval(v) for v in value)
    return False


def _expand_configs(config: dict, num_samples: int) -> list[dict]:
    """One config per trial to add: grid_search values expanded, repeated num_samples."""
    from tune_async.search.variant_generator import generate_variants, has_unresolved_values

    try:
        if not has_unresolved_values(config):
            variants: Iterable = itertools.repeat(config, num_samples)
        else:
            variants = (resolved["config"] for _ in range(num_samples)
                        for _, resolved in generate_variants({"config": config}))
        configs = list(itertools.islice(variants, MAX_NEW_TRIALS + 1))
    except (ValueError, TypeError, KeyError) as exc:
        raise _http_error(web.HTTPBadRequest, f"spec.config cannot be expanded: {exc}") from None
    if len(configs) > MAX_NEW_TRIALS:
        raise _http_error(web.HTTPBadRequest, f"spec asks for more than {MAX_NEW_TRIALS} trials "
                                              "in one request")
    return configs


def _future() -> asyncio.Future:
    return asyncio.get_running_loop().create_future()


# ---- responses and middlewares ---------------------------------------------------------
def _http_error(kind: type[web.HTTPException], message: str, **kwargs: Any) -> web.HTTPException:
    return kind(text=json.dumps({"error": message}), content_type="application/json", **kwargs)


async def _json_response(body: dict, status: int = 200,
                         headers: dict | None = None) -> web.Response:
    text = await _dumps_in_pieces(body, depth=2)  # {"trials": [info, ...]}: info by info
    return web.Response(text=text, status=status, content_type="application/json",
                        headers=headers)


@web.middleware
async def _require_token(request: web.Request, handler: Any) -> web.StreamResponse:
    token = request.app[_SERVER].options.token
    if token and not _carries_token(request, token):
        raise _http_error(web.HTTPUnauthorized, "This TuneServer needs its token: "
                                                "'Authorization: Bearer <token>' or ?token=",
                          headers={"WWW-Authenticate": 'Bearer realm="tune"'})
    return await handler(request)


_LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})


@web.middleware
async def _local_names_only(request: web.Request, handler: Any) -> web.StreamResponse:
    """On a loopback address, requests must name a loopback host: a web page whose own
    domain was made to resolve to 127.0.0.1 (DNS rebinding) cannot read the server."""
    host = request.app[_SERVER].options.host
    if host in _LOOPBACK_NAMES and _host_name(request.host) not in _LOOPBACK_NAMES:
        raise _http_error(web.HTTPForbidden, f"Host {request.host!r} is not this machine's "
                                             "loopback name (use 127.0.0.1 or localhost)")
    return await handler(request)


def _host_name(host_header: str) -> str:
    """``"[::1]:4321"`` -> ``"::1"``, ``"localhost:4321"`` -> ``"localhost"``."""
    if host_header.startswith("["):
        return host_header[1:].partition("]")[0]
    return host_header.rpartition(":")[0] if host_header.count(":") == 1 else host_header


def _carries_token(request: web.Request, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    given = header[7:] if header.startswith("Bearer ") else request.query.get("token", "")
    return hmac.compare_digest(given.encode(), token.encode())


@web.middleware
async def _json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every error answer is ``{"error": message}``; a bug in a handler is a 500, logged."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow",)}
        return web.json_response({"error": exc.reason}, status=exc.status, headers=headers)
    except Exception:
        logger.exception("TuneServer: %s %s failed", request.method, request.path)
        return web.json_response({"error": "internal server error (see the driver's log)"},
                                 status=500)


# ---- the client -------------------------------------------------------------------------
class TuneClient:
    """Talks to a running experiment's TuneServer (ray.tune 1.x's ``TuneClient``).

    Args:
        tune_address: The server's host (e.g. ``"localhost"``).
        port_forward: Its port (e.g. ``4321``).
        token: The server's token, if it has one (default: ``TUNE_SERVER_TOKEN``).
        timeout: Seconds to wait for an answer.

    The sync methods use urllib; each has an ``a``-prefixed coroutine twin (aiohttp).
    ``config`` and ``result`` come back unpickled, as in 1.x: only talk to servers
    you trust. A refused request raises :class:`TuneClientError` (with ``status``).
    """

    def __init__(self, tune_address: str, port_forward: int, token: str | None = None,
                 timeout: float = 30.0) -> None:
        self._tune_address = tune_address
        self._port_forward = port_forward
        self._path = f"http://{tune_address}:{port_forward}"
        self._token = token if token is not None else os.environ.get(TOKEN_ENV) or None
        self._timeout = timeout

    @property
    def server_address(self) -> str:
        return self._tune_address

    @property
    def server_port(self) -> int:
        return self._port_forward

    # ---- sync (1.x) ---------------------------------------------------------------------
    def get_all_trials(self, timeout: float | None = None) -> dict:
        """``{"trials": [info, ...]}`` with each info's config and result unpickled."""
        return self._request("GET", "/trials", timeout=timeout)

    def get_trial(self, trial_id: str, timeout: float | None = None) -> dict:
        """``{"trial": info}`` for one trial."""
        return self._request("GET", f"/trials/{trial_id}", timeout=timeout)

    def add_trial(self, name: str, specification: dict) -> dict:
        """Add trials from a spec (``config``, ``stop``, ``resources_per_trial``,
        ``num_samples``); ``{"trials": [info, ...]}`` of the new ones."""
        return self._request("POST", "/trials", {"name": name, "spec": specification})

    def stop_trial(self, trial_id: str) -> dict:
        """Stop a trial; ``{"trial": info}`` once it is TERMINATED."""
        return self._request("PUT", f"/trials/{trial_id}")

    def stop_experiment(self) -> dict:
        """Stop every trial and end the experiment."""
        return self._request("PUT", "/stop_experiment")

    # ---- async ---------------------------------------------------------------------------
    # (Each waits up to the client's ``timeout``; wrap a call in anyio.fail_after for less.)
    async def aget_all_trials(self) -> dict:
        return await self._arequest("GET", "/trials")

    async def aget_trial(self, trial_id: str) -> dict:
        return await self._arequest("GET", f"/trials/{trial_id}")

    async def aadd_trial(self, name: str, specification: dict) -> dict:
        return await self._arequest("POST", "/trials", {"name": name, "spec": specification})

    async def astop_trial(self, trial_id: str) -> dict:
        return await self._arequest("PUT", f"/trials/{trial_id}")

    async def astop_experiment(self) -> dict:
        return await self._arequest("PUT", "/stop_experiment")

    @contextlib.asynccontextmanager
    async def events(self, history: bool = False) -> AsyncIterator[AsyncIterator[Any]]:
        """The server's event stream: ``async with client.events() as stream:
        async for event in stream`` gives a ``{"trials": [...]}`` snapshot dict first,
        then event records (``tune.TrialResult``...), ending after ``ExperimentEnded``.
        ``history=True``: the snapshot's ``"history"`` has each trial's earlier results."""
        import aiohttp

        url = self._path + "/events" + ("?history=1" if history else "")
        async with aiohttp.ClientSession(headers=self._headers(),
                                         timeout=aiohttp.ClientTimeout(sock_connect=30)) \
                as session, session.get(url) as response:
            await _raise_for_status_async(response)
            yield _read_events(response)

    # ---- internals -----------------------------------------------------------------------
    def _headers(self) -> dict:
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    def _request(self, method: str, path: str, payload: Any = None,
                 timeout: float | None = None) -> dict:
        data = None if payload is None else json.dumps(payload).encode()
        headers = {**self._headers(), "Content-Type": "application/json"}
        request = urllib.request.Request(self._path + path, data=data, method=method,
                                         headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout or self._timeout) as response:
                return _unpickled(json.loads(response.read()))
        except urllib.error.HTTPError as exc:
            with exc:
                raise TuneClientError(exc.code, _error_message(exc.read())) from None

    async def _arequest(self, method: str, path: str, payload: Any = None) -> dict:
        import aiohttp

        async with aiohttp.ClientSession(headers=self._headers()) as session, \
                session.request(method, self._path + path, json=payload,
                                timeout=aiohttp.ClientTimeout(total=self._timeout)) \
                as response:
            await _raise_for_status_async(response)
            return _unpickled(await response.json())


def _unpickled(body: dict) -> dict:
    for info in body.get("trials", []) + ([body["trial"]] if "trial" in body else []):
        for key in ("config", "result"):
            if isinstance(info.get(key), str):
                info[key] = cloudpickle.loads(bytes.fromhex(info[key]))
    return body


def _error_message(raw: bytes) -> str:
    try:
        return json.loads(raw)["error"]
    except (ValueError, KeyError, TypeError):
        return raw.decode(errors="replace")


async def _raise_for_status_async(response: Any) -> None:
    if response.status >= 400:
        raise TuneClientError(response.status, _error_message(await response.read()))


async def _read_events(response: Any) -> AsyncIterator[Any]:
    """Server-sent events as records: the snapshot (a dict), then tune_async events."""
    kind, data = None, []
    async for raw in _lines(response.content):
        line = raw.decode().rstrip("\r")
        if line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line and kind is not None:
            event = _event_record(kind, json.loads("\n".join(data)))
            kind, data = None, []
            yield event
            if isinstance(event, ev.ExperimentEnded):
                return


async def _lines(content: Any) -> AsyncIterator[bytes]:
    """The stream's lines, however long (aiohttp's own line reader stops at 512 KiB, and
    a snapshot of many trials is one line)."""
    pending = bytearray()
    async for chunk in content.iter_any():
        start = 0
        while (end := chunk.find(b"\n", start)) != -1:
            pending += chunk[start:end]
            yield bytes(pending)
            pending.clear()
            start = end + 1
        pending += chunk[start:]


def _event_record(kind: str, fields: dict) -> Any:
    cls = getattr(ev, kind, None)
    if kind == "snapshot" or cls is None or not attrs.has(cls):
        return fields
    return cls(**fields)
