"""Trial hosts: many async trials on one Ray actor's event loop (``trials_per_worker``).

An I/O-bound async trainable spends its time awaiting; a process per trial would
make 1,000 such trials 1,000 processes. With ``tune.run(..., trials_per_worker=N)``
the Ray executor packs up to N async trials (``async def`` functions, async
generators, classes with ``async def step``) into one *host*: an async Ray actor
whose methods Ray runs concurrently on the actor's event loop. Every trial's state
is kept under its launch key, so each trial still gets its own batches, its own
cancellation and its own failure. Sync trainables keep one trial per actor.

Accounting: each trial reserves its own request in the resource ledger (e.g.
``{"cpu": 0.002}``); a host asks Ray for one trial's request, so what Ray holds
never exceeds what the ledger counts and no granted trial waits on Ray.

What a shared process cannot give each trial: its own working directory (the
trial's directory is ``tune.get_trial_dir()``), its own stdout/stderr file
(``log_to_file`` is refused with ``trials_per_worker > 1``) and isolation from a
trial that kills the process (all its trials then fail, and are retried as
``max_failures`` allows). A plain ``tune.report`` would block the shared loop: an
async trial there reports with ``await tune.areport(...)`` or yields results.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import itertools
import logging
import os
import sys
import traceback
from typing import Any

import anyio
import attrs

from tune_async.execution.actor import driver_paths, restore_into
from tune_async.execution.base import TrialFailure, launch_key
from tune_async.execution.packed import pack_results, unpack_results
from tune_async.resources import Resources
from tune_async.result import (
    CHECKPOINT_PATH,
    RESULT_DUPLICATE,
    SHOULD_CHECKPOINT,
    TRAINING_ITERATION,
)
from tune_async.sync.node import localize_checkpoint, node_root, to_driver_path, to_node_path
from tune_async.trainable.aio import LoopHost, hosted_by
from tune_async.trainable.trainable import _being_cancelled, is_async_trainable

logger = logging.getLogger(__name__)

# Blocking trainable calls (construction, save, restore, cleanup) run in these threads,
# never on the shared loop; async methods among them still run on the loop (the thread
# only waits): an async setup awaiting I/O holds one of these threads meanwhile.
HOST_THREADS = 64
STOP_WAIT_S = 10.0  # how long a stop waits for the trial's setup to finish first
# Fetches made within this long of each other go to a host in one poll call.
POLL_COALESCE_S = 0.005
# A poll that has a finished batch waits this long for more before it answers (a Ray call
# costs the driver more than a few ms of latency costs a trial).
POLL_LINGER_S = 0.005


def shares_host(trials_per_worker: int, trainable_cls: type, resources: Any) -> bool:
    """Whether a trial runs in a shared host: async steps, CPU only, N > 1."""
    return (trials_per_worker > 1 and is_async_trainable(trainable_cls)
            and isinstance(resources, Resources) and resources.gpu_total() == 0)


# ---- the host actor (runs in the Ray worker) ----------------------------------------------


@attrs.define(eq=False)
class _Slot:
    """One trial's state in a host."""

    trainable: Any = None
    cancelled: bool = False
    ready: asyncio.Event = attrs.field(factory=asyncio.Event)  # its setup has finished


class TrialHost:
    """The Ray actor hosting many async trials on its event loop (see the module doc)."""

    def __init__(self, driver_sys_path: list[str] | None = None,
                 driver_node_id: str | None = None) -> None:
        for entry in driver_sys_path or []:
            if entry and entry not in sys.path and os.path.isdir(entry):
                sys.path.append(entry)
        self._driver_node_id = driver_node_id
        self._node_root = node_root()
        self._classes: dict[str, type] = {}
        self._slots: dict[Any, _Slot] = {}
        self._warm: dict[type, list[Any]] = {}  # instances kept for reuse_actors, per class
        self._batches: dict[int, asyncio.Future] = {}  # a poll's request number -> its batch
        self._some_done = asyncio.Event()  # a batch finished since the last look
        self._parking: set[asyncio.Future] = set()  # stops putting an instance in _warm
        self._stopping: set[asyncio.Task] = set()  # stops sent with a poll, still running
        self._threads = concurrent.futures.ThreadPoolExecutor(HOST_THREADS, "tune-host")
        self._loop_host: LoopHost | None = None  # this actor's loop, lent to its trials

    async def info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "trials": len(self._slots)}

    async def node_id(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()

    async def setup(self, key: Any, class_ref: list, config: dict, trial_info: Any,
                    reuse: bool, checkpoint: Any = None, log_to_file: Any = False) -> None:
        slot = self._slots.setdefault(key, _Slot())
        try:
            if log_to_file:
                raise ValueError("log_to_file cannot redirect one trial's output in a process "
                                 "shared by several trials (trials_per_worker > 1).")
            cls = await self._load_class(class_ref[0])
            if self._node_root:
                trial_info = attrs.evolve(trial_info, logdir=to_node_path(trial_info.logdir))
            if trial_info.logdir:
                await self._in_thread(os.makedirs, trial_info.logdir, exist_ok=True)
            warm = await self._take_warm(cls) if reuse else None
            slot.trainable = await self._in_thread(_make_trainable, cls, config, trial_info,
                                                   warm)
            if checkpoint is not None:
                await self._in_thread(self._restore, slot.trainable, checkpoint)
        finally:
            slot.ready.set()

    async def train_batch(self, key: Any, limits: Any, window_s: float) -> list[dict]:
        slot = self._slots.get(key)
        if slot is None or slot.cancelled:
            return []  # stopped before this batch began
        try:
            with hosted_by(self._host()):
                batch = await self._run_batch(slot.trainable, limits, window_s)
            return self._driver_paths(batch)
        except asyncio.CancelledError:
            if slot.cancelled and not _being_cancelled():
                return []  # the trial was cancelled (cancel()): nobody awaits this batch
            raise

    async def poll(self, requests: list[tuple], stops: list[tuple] = ()) -> list[tuple]:
        """Start the requested stops and batches; return every finished batch (at least
        one, unless none is running): one round trip carries the calls of many trials.

        ``stops``: ``(key, keep_for_reuse)`` of trials that ended (their cleanup runs
        here, in the background). ``requests``: ``(number, key, setup or None, limits,
        window_s)``; returns ``(number, "ok", results)`` or ``(number, "error",
        (exception, traceback))``.
        """
        for key, keep_for_reuse in stops:  # first: a setup below may reuse the instance
            task = asyncio.ensure_future(self._stop_logged(key, keep_for_reuse))
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)
        for number, key, setup, limits, window_s in requests:
            batch = asyncio.ensure_future(self._batch_outcome(key, setup, limits, window_s))
            batch.add_done_callback(lambda _batch: self._some_done.set())
            self._batches[number] = batch
        while self._batches:
            if any(batch.done() for batch in self._batches.values()):
                await asyncio.sleep(POLL_LINGER_S)  # let the batches finishing now join in
                done = [number for number, batch in self._batches.items() if batch.done()]
                # Packed twice over: each large batch, and an answer of many small ones.
                return pack_results([(number, *_outcome_of(self._batches.pop(number)))
                                     for number in done])
            self._some_done.clear()
            await self._some_done.wait()
        return []

    async def _batch_outcome(self, key: Any, setup: tuple | None, limits: Any,
                             window_s: float) -> tuple[str, Any]:
        try:
            if setup is not None:
                return "ok", await self.setup_and_train(key, setup, limits, window_s)
            return "ok", await self.train_batch(key, limits, window_s)
        except Exception as exc:  # noqa: BLE001 - the trial's own failure, sent to the driver
            return "error", (_picklable(exc), traceback.format_exc())

    async def setup_and_train(self, key: Any, setup: tuple, limits: Any,
                              window_s: float) -> list[dict]:
        """A trial's setup and its first batch in one call (one round trip less)."""
        await self.setup(key, *setup)
        return await self.train_batch(key, limits, window_s)

    async def save(self, key: Any) -> str:
        trainable = self._slots[key].trainable
        return to_driver_path(await self._in_thread(trainable.save), self._node_root)

    async def save_to_object(self, key: Any) -> Any:
        return await self._in_thread(self._slots[key].trainable.save_to_object)

    async def export_model(self, key: Any, export_formats: list[str]) -> dict:
        return await self._in_thread(self._slots[key].trainable.export_model, export_formats)

    async def cancel(self, key: Any) -> None:
        """Cancel this trial's running batch only: its task gets ``CancelledError``."""
        slot = self._slots.get(key)
        if slot is not None:
            slot.cancelled = True
            if slot.trainable is not None:
                slot.trainable.cancel()

    async def stop(self, key: Any, keep_for_reuse: bool) -> None:
        """End the trial (its ``finally`` blocks and ``cleanup()`` run); the others go on."""
        slot = self._slots.pop(key, None)
        if slot is None:
            return
        parked = None
        if keep_for_reuse:  # registered before any await: a setup sent after it waits
            parked = asyncio.get_running_loop().create_future()
            self._parking.add(parked)
        try:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(slot.ready.wait(), STOP_WAIT_S)
            trainable, slot.trainable = slot.trainable, None
            if trainable is None:
                return
            if keep_for_reuse:
                if hasattr(trainable, "stop_function"):
                    await self._in_thread(trainable.stop_function)
                self._warm.setdefault(type(trainable), []).append(trainable)
            else:
                await self._in_thread(trainable.stop)
        finally:
            if parked is not None:
                self._parking.discard(parked)
                parked.set_result(None)

    async def _stop_logged(self, key: Any, keep_for_reuse: bool) -> None:
        """A stop sent with a poll: nobody awaits it, so a failing cleanup is logged."""
        try:
            await self.stop(key, keep_for_reuse)
        except Exception as exc:  # noqa: BLE001 - the trial has ended either way
            logger.warning("The cleanup of trial %s failed: %s", key, exc)

    async def close(self) -> None:
        """Stop every trial and kept instance (their cleanup runs) before the host goes."""
        if self._stopping:  # stops already under way finish first
            await asyncio.gather(*self._stopping, return_exceptions=True)
        trainables = [s.trainable for s in self._slots.values() if s.trainable is not None]
        trainables += [t for kept in self._warm.values() for t in kept]
        self._slots.clear()
        self._warm.clear()
        for batch in self._batches.values():
            batch.cancel()
        self._batches.clear()
        results = await asyncio.gather(*(self._in_thread(t.stop) for t in trainables),
                                       return_exceptions=True)
        for error in results:
            if isinstance(error, Exception):
                logger.warning("A trial's cleanup failed at shutdown: %s", error)

    # -- helpers ------------------------------------------------------------------------
    def _host(self) -> LoopHost:
        """This actor's loop as a LoopHost: trainables made here run their coroutines on it."""
        if self._loop_host is None:
            self._loop_host = LoopHost()
        return self._loop_host

    async def _in_thread(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """A blocking trainable call in a worker thread (its coroutines still run here)."""
        call = functools.partial(_hosted_call, self._host(), fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._threads, call)

    async def _run_batch(self, trainable: Any, limits: Any, window_s: float) -> list[dict]:
        """``actor.run_batch`` on the loop: the batch rules, checkpoints taken right here."""
        max_results, freq = limits.max_results, limits.checkpoint_freq
        if freq > 0:
            max_results = min(max_results, freq - trainable.iteration % freq)
        results = await trainable.atrain_batch(max_results, window_s, limits.stop)
        if not results:
            return results
        last = results[-1]
        wants = last.get(SHOULD_CHECKPOINT) or (
            freq > 0 and last.get(TRAINING_ITERATION, 0) % freq == 0)
        if wants and not last.get(RESULT_DUPLICATE) and CHECKPOINT_PATH not in last:
            last[CHECKPOINT_PATH] = await self._in_thread(trainable.save)
        return results

    def _restore(self, trainable: Any, checkpoint: tuple) -> None:
        if checkpoint[0] == "path":
            if getattr(trainable, "restores_from_upload_dir", False):  # durable: fetches it
                checkpoint = ("path", to_node_path(checkpoint[1]))
            else:
                checkpoint = ("path", localize_checkpoint(checkpoint[1], self._driver_node_id))
        restore_into(trainable, checkpoint)

    def _driver_paths(self, results: list[dict]) -> list[dict]:
        return driver_paths(results, self._node_root)

    async def _take_warm(self, cls: type) -> Any:
        if self._parking:  # the previous trial's stop (sent before this setup) finishes first
            await asyncio.wait(list(self._parking), timeout=STOP_WAIT_S)
        kept = self._warm.get(cls)
        return kept.pop() if kept else None

    async def _load_class(self, ref: Any) -> type:
        key = ref.hex()
        cls = self._classes.get(key)
        if cls is None:
            cls = self._classes[key] = await ref
        return cls


def _outcome_of(batch: asyncio.Future) -> tuple[str, Any]:
    if batch.cancelled():
        return "ok", []
    kind, payload = batch.result()
    return kind, (pack_results(payload) if kind == "ok" else payload)


def _picklable(exc: Exception) -> Exception:
    """The exception itself when it can travel to the driver, else its text in one that can."""
    import ray.cloudpickle

    try:
        ray.cloudpickle.dumps(exc)
        return exc
    except Exception:  # noqa: BLE001 - any pickling failure
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _hosted_call(host: LoopHost, fn: Any, *args: Any, **kwargs: Any) -> Any:
    with hosted_by(host):
        return fn(*args, **kwargs)


def _make_trainable(cls: type, config: dict, trial_info: Any, warm: Any) -> Any:
    """A warm instance reset for this trial (``reuse_actors``), else a new one."""
    if warm is not None:
        if warm.reset(config, trial_info):
            return warm
        warm.stop()
    return cls(config=config, trial_info=trial_info)


# ---- the driver's side -------------------------------------------------------------------


@attrs.define(eq=False)
class _Host:
    """A host actor as the driver sees it (``actor``/``placement_group``/``request``: what
    the executor's kill and eviction helpers read of any worker)."""

    key: tuple
    request: dict[str, float]
    actor: Any = None  # None while it is being created
    placement_group: Any = None
    trials: set = attrs.field(factory=set)  # launch keys placed here
    created: anyio.Event = attrs.field(factory=anyio.Event)
    error: BaseException | None = None
    dead: bool = False
    node_id: str | None = None
    node_ref: Any = None  # the ObjectRef of its node id, asked as it was created
    node_lookup: anyio.Lock = attrs.field(factory=anyio.Lock)  # one lookup, not one per trial
    # Fetches and stops go out together in polls: requests not sent yet, the futures of
    # those unanswered, and stops not sent yet ((key, keep_for_reuse)).
    queue: list = attrs.field(factory=list)
    stops: list = attrs.field(factory=list)
    waiting: dict = attrs.field(factory=dict)  # request number -> its fetch's future
    polls: int = 0  # poll calls in flight
    flush_due: bool = False

    @property
    def idle(self) -> bool:
        """No trial left in it and no stop still to send (evicting it would lose that
        trial's cleanup)."""
        return not self.trials and not self.stops and self.actor is not None and not self.dead


class HostPool:
    """The executor's hosts: places trials in hosts with room, creating hosts as needed.

    ``capacity``: most trials per host. ``new_actor(trial)``: an awaitable creating a
    host actor for the trial's resources (the executor makes room for it first) and
    returning it with the ObjectRef of its ``node_id()``.
    """

    def __init__(self, capacity: int, new_actor: Any) -> None:
        self.capacity = capacity
        self._new_actor = new_actor
        self._numbers = itertools.count()
        self._poll_tasks: set[asyncio.Task] = set()
        self._hosts: list[_Host] = []
        self._running: dict[Any, _Host] = {}
        self._pending_setup: dict[Any, tuple] = {}  # sent with the trial's first call
        self._closed = False

    def __contains__(self, key: Any) -> bool:
        return key in self._running

    def hosts(self) -> list[_Host]:
        return list(self._hosts)

    # -- placing trials -----------------------------------------------------------------
    async def start_trial(self, trial: Any, setup: tuple) -> str:
        """Place the trial (registered before any await: a cancelled start leaks nothing);
        the setup travels with its first fetch. Returns the host's node id."""
        key = launch_key(trial)
        host = self._host_with_room(trial.resources.key())
        creating = host is None
        if creating:
            host = self._add_host(trial)
        host.trials.add(key)
        self._running[key] = host
        if creating:
            await self._create(host, trial)
        else:
            await host.created.wait()  # trials placed while it is made wait for it
        if host.error is not None or host.actor is None:
            raise TrialFailure(traceback=f"Could not create a trial host: {host.error}",
                               exception=host.error)
        self._pending_setup[key] = setup
        return await self._node_of(host)

    def _host_with_room(self, pool_key: tuple) -> _Host | None:
        for host in self._hosts:
            if (host.key == pool_key and not host.dead and host.error is None
                    and len(host.trials) < self.capacity):
                return host
        return None

    def _add_host(self, trial: Any) -> _Host:
        from tune_async.execution.ray_executor import request_of

        host = _Host(key=trial.resources.key(), request=request_of(trial))
        self._hosts.append(host)
        return host

    async def _create(self, host: _Host, trial: Any) -> None:
        try:
            host.actor, host.node_ref = await self._new_actor(trial)
        except BaseException as exc:
            host.error = exc
            if host in self._hosts:
                self._hosts.remove(host)
            raise
        finally:
            host.created.set()

    async def _node_of(self, host: _Host) -> str:
        # The trials placed on a new host all ask at once (500 with trials_per_worker=500):
        # one awaits the answer, the others wait for it (each await of a Ray ObjectRef is
        # a callback from Ray's thread, taking the GIL).
        async with host.node_lookup:
            if host.node_id is None:
                try:
                    host.node_id = await host.node_ref
                except BaseException as exc:
                    raise self._failure(host, exc) from None
        return host.node_id

    # -- per-trial calls ----------------------------------------------------------------
    async def fetch_results(self, trial: Any, limits: Any, window_s: float) -> list[dict]:
        """The trial's next batch. Fetches of a host's trials travel together in ``poll``
        calls (a Ray call costs the driver ~0.5 ms: one per batch would bound 1,000 trials
        by the driver's CPU), each returning whichever batches have finished."""
        key = launch_key(trial)
        host = self._running[key]
        number = next(self._numbers)
        setup = self._pending_setup.pop(key, None)
        future = asyncio.get_running_loop().create_future()
        host.waiting[number] = future
        host.queue.append((number, key, setup, limits, window_s))
        self._flush_soon(host)
        try:
            kind, payload = await future
        except BaseException:
            self._withdraw(host, number, key, setup)
            raise
        if kind == "error":
            exc, text = payload
            raise TrialFailure(traceback=text, exception=exc)
        try:
            return await unpack_results(payload)
        except Exception as exc:  # noqa: BLE001 - e.g. a result's class the driver lacks
            raise TrialFailure(traceback=traceback.format_exc(), exception=exc) from None

    def _withdraw(self, host: _Host, number: int, key: Any, setup: tuple | None) -> None:
        """A cancelled fetch: unsent, it never goes (its setup is pending again); sent, its
        answer is dropped."""
        host.waiting.pop(number, None)
        unsent = [r for r in host.queue if r[0] == number]
        if unsent:
            host.queue.remove(unsent[0])
            if setup is not None:
                self._pending_setup[key] = setup

    def _flush_soon(self, host: _Host) -> None:
        if not host.flush_due:
            host.flush_due = True
            asyncio.get_running_loop().call_later(POLL_COALESCE_S, self._flush, host)

    def _flush(self, host: _Host) -> None:
        host.flush_due = False
        if self._closed:
            return  # shut down: the hosts' close() stops what is left
        requests, host.queue = host.queue, []
        stops, host.stops = host.stops, []
        if requests or stops:
            self._start_poll(host, requests, stops)

    def _start_poll(self, host: _Host, requests: list[tuple], stops: list[tuple] = ()) -> None:
        task = asyncio.get_running_loop().create_task(self._poll(host, requests, stops))
        self._poll_tasks.add(task)
        task.add_done_callback(self._poll_tasks.discard)

    async def _poll(self, host: _Host, requests: list[tuple], stops: list[tuple] = ()) -> None:
        host.polls += 1
        try:
            outcomes = await unpack_results(await host.actor.poll.remote(requests, list(stops)))
        except Exception as exc:  # noqa: BLE001 - the host failed: so do its fetches
            failure = self._failure(host, exc)
            waiting, host.waiting = host.waiting, {}
            for future in waiting.values():
                if not future.done():
                    future.set_exception(failure)
            return
        finally:
            host.polls -= 1
        for number, kind, payload in outcomes:
            future = host.waiting.pop(number, None)
            if future is not None and not future.done():
                future.set_result((kind, payload))
        unsent = {r[0] for r in host.queue}
        if host.polls == 0 and any(n not in unsent for n in host.waiting):
            self._start_poll(host, [])  # batches still running there: ask again

    async def call(self, trial: Any, method: str, *args: Any) -> Any:
        """``save`` / ``save_to_object`` / ``export_model`` of the trial (set up first)."""
        key = launch_key(trial)
        host = self._running[key]
        try:
            setup = self._pending_setup.pop(key, None)
            if setup is not None:
                await host.actor.setup.remote(key, *setup)
            return await getattr(host.actor, method).remote(key, *args)
        except BaseException as exc:
            raise self._failure(host, exc) from None

    async def stop_trial(self, trial: Any, in_flight: bool, failed: bool, reuse: bool,
                         grace_s: float) -> list[_Host]:
        """End the trial in its host; returns hosts to kill (dead, with no trial left)."""
        key = launch_key(trial)
        host = self._running.pop(key, None)
        if host is None:
            return []
        host.trials.discard(key)
        never_set_up = self._pending_setup.pop(key, None) is not None
        if host.actor is not None and not host.dead and not never_set_up:
            if in_flight and not failed:
                await self._cancel_and_stop(host, key, grace_s)
            else:  # with the next poll (one Ray call less per trial)
                host.stops.append((key, reuse and not failed))
                self._flush_soon(host)
        if host.dead and not host.trials:
            self._hosts.remove(host)
            return [host]
        return []

    async def _cancel_and_stop(self, host: _Host, key: Any, grace_s: float) -> None:
        """Cancel the trial's running batch, then stop it (its finally blocks run), bounded;
        the host and its other trials go on either way."""
        with anyio.move_on_after(grace_s):
            try:
                await host.actor.cancel.remote(key)
                await host.actor.stop.remote(key, False)
            except Exception as exc:  # noqa: BLE001 - a dead host is noticed by its trials
                logger.debug("Stopping a cancelled trial in its host failed: %s", exc)

    def _failure(self, host: _Host, exc: BaseException) -> BaseException:
        from tune_async.execution.ray_executor import _as_failure

        failure = _as_failure(exc)
        if isinstance(failure, TrialFailure) and failure.crashed:
            host.dead = True  # no new trial goes there; its trials fail on their own
        return failure

    # -- idle hosts (evictable, like idle workers) ----------------------------------------
    def idle_resources(self) -> dict[str, float]:
        held: dict[str, float] = {}
        for host in self._hosts:
            if host.idle:
                for k, v in host.request.items():
                    held[k] = held.get(k, 0.0) + v
        return held

    def has_idle(self) -> bool:
        return any(host.idle for host in self._hosts)

    def give_up_idle(self) -> _Host:
        host = next(h for h in self._hosts if h.idle)
        self._hosts.remove(host)
        return host

    # -- the end ------------------------------------------------------------------------
    async def shutdown(self, timeout_s: float = 10.0) -> list[_Host]:
        """Have every host stop its trials (stops under way finish first; their cleanup
        runs); returns the hosts, for the executor to kill."""
        self._closed = True
        for task in list(self._poll_tasks):
            task.cancel()
        hosts = list(self._hosts)
        self._hosts.clear()
        self._running.clear()
        self._pending_setup.clear()
        with anyio.move_on_after(timeout_s):
            for host in hosts:
                if host.actor is None or host.dead:
                    continue
                with contextlib.suppress(Exception):
                    await host.actor.close.remote()
        return [host for host in hosts if host.actor is not None]
