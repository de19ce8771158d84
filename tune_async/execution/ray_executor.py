"""The default executor: trials in pooled Ray actors, results in batches."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import hashlib
import logging
import os
from typing import Any

import anyio
import attrs

from tune_async.error import TuneError
from tune_async.execution.base import BatchLimits, TrialFailure, launch_key
from tune_async.execution.host import HostPool, shares_host
from tune_async.execution.ledger import LEDGER
from tune_async.execution.packed import unpack_results
from tune_async.resources import Resources
from tune_async.trial import Trial
from tune_async.utils.placement_groups import PlacementGroupFactory
from tune_async.utils.util import env_number

logger = logging.getLogger(__name__)

# A fetch returns whatever the trainable produced within this window (at least
# one result): long enough to batch fast reporters, short enough for live progress.
FETCH_WINDOW_S = 0.05
# A trial stopped mid-fetch is cancelled and stopped (its finally blocks and cleanup()
# run) within this long; then its worker is killed anyway.
CANCEL_GRACE_S = 2.0
# A finished trial's stop waits this long for the worker's next trial, whose setup then
# carries it (one Ray call per trial less; a searcher's next suggestion takes a few ms);
# else it is sent alone.
STOP_DEFER_S = 0.02
RETIRE_WAIT_S = 10.0  # how long an evicted worker's last cleanup may take before the kill
_EPS = 1e-9


def ensure_ray_initialized() -> None:
    """Connect to a running Ray (``RAY_ADDRESS`` / ``ray.init`` done by the user) or start one."""
    import ray

    if ray.is_initialized():
        _record_core_usage()
        return
    if os.environ.get("TUNE_DISABLE_AUTO_INIT") == "1":
        raise TuneError("Ray is not initialized and TUNE_DISABLE_AUTO_INIT=1: call ray.init() first")
    _check_reachable(os.environ.get("RAY_ADDRESS"))
    try:
        ray.init(include_dashboard=False, configure_logging=False, log_to_driver=True)
    except Exception as exc:  # noqa: BLE001 - any failure to reach Ray is a TuneError
        raise TuneError(f"Could not start or connect to Ray: {exc}") from exc
    from tune_async.trainable.with_parameters import flush_parameter_registry

    flush_parameter_registry()
    _record_core_usage()


def prepare_ray_driver() -> None:
    """Do at import what Ray does lazily in a driver's threads beside a running loop.

    Ray makes its serialization context on a process's first serialized object: it
    imports pydantic, starlette and pyarrow's json module for their serializers, ~80
    modules and a large extension module. In a run that happened in the threads creating
    the first actors and held the GIL for 20-28 ms. Made before ``ray.init``, it is
    carried over to the job when Ray connects.
    """
    with contextlib.suppress(Exception):  # a private API: a Ray without it just skips this
        from ray._private.worker import global_worker

        global_worker.get_serialization_context()
    # And what Ray's log thread imports when the first autoscaler event reaches the driver
    # (a trial waiting for resources: "cannot be scheduled right now"): 33 modules, click
    # among them, ~15 ms of imports beside the loop.
    with contextlib.suppress(Exception):
        import ray._private.event.event_logger  # noqa: F401
        import ray.autoscaler.v2.utils  # noqa: F401
    # The actor classes (``ray.remote`` inspects each method: ~1.6 ms of Python), and the
    # trial actor's pickled once (cloudpickle keeps what it learnt of each method's code:
    # the export to each Ray job then takes 0.7 ms, not 1.5). The executor's start-up did
    # both in the actor-creation thread beside the run's first steps.
    with contextlib.suppress(Exception):  # private API, as above
        from ray import cloudpickle

        cloudpickle.dumps(_actor_classes()[0].__ray_metadata__.modified_class)


def _record_core_usage() -> None:
    """Ray's once-per-process usage record (a GCS put), made here rather than on the
    first actor creation, where it runs beside the loop."""
    with contextlib.suppress(Exception):  # private API, as above
        from ray._common.usage import usage_lib

        usage_lib.record_library_usage("core")


def _check_reachable(address: str | None, timeout_s: float = 5.0) -> None:
    """Fail fast on a ``host:port`` Ray address nobody answers at (ray.init retries for minutes)."""
    import socket

    if not address or "://" in address or address == "auto" or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        return
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return
    except OSError as exc:
        raise TuneError(
            f"Ray is unreachable at RAY_ADDRESS={address!r} ({exc}). Start the cluster "
            "(`ray start --head`), fix the address, or unset RAY_ADDRESS to start a local Ray."
        ) from exc


def request_of(trial: Trial) -> dict[str, float]:
    """What the trial takes from the cluster, in Ray's resource names."""
    res = trial.resources
    if isinstance(res, PlacementGroupFactory):
        return res.required_resources()
    if isinstance(res, Resources):
        return res.as_ray_dict()
    raise TypeError(f"Unsupported resources for trial {trial}: {res!r}")


def pool_key(trial: Trial) -> tuple:
    return trial.resources.key()


@attrs.define
class _Worker:
    actor: Any
    key: tuple
    request: dict[str, float]
    placement_group: Any = None
    trainable_cls: type | None = None
    # The previous trial's stop, not sent yet (its keep_for_reuse): the next trial's
    # setup carries it, or it goes alone after STOP_DEFER_S (``stop_timer``).
    stop_due: bool | None = None
    stop_timer: Any = None
    # The ObjectRef of the previous trial's stop() call sent alone: the next trial's setup
    # is sent behind it without waiting, and the actor refuses it if that stop failed.
    stopping: Any = None
    # The next trial's setup arguments: sent with its first fetch, in one actor call.
    pending_setup: tuple | None = None
    node_id: str | None = None  # the Ray node it runs on (asked once)
    node_ref: Any = None  # the answer to that question, asked as the actor was created


class RayExecutor:
    """Runs each trial's trainable in a Ray actor (see :class:`~tune_async.execution.Executor`).

    Actors are pooled per resource request and reused between trials: with
    ``reuse_actors=True`` the Trainable instance itself is reused through
    ``reset_config``; otherwise each trial gets a fresh Trainable instance in a
    warm worker process. ``fresh_process_per_trial=True`` restores one process
    per trial (slower; for trainables that leak process-global state).
    ``trials_per_worker=N`` (N > 1) runs up to N async trials in one actor's event
    loop (see :mod:`tune_async.execution.host`); sync trials keep one actor each.
    """

    connects_ray = True

    def __init__(self, reuse_actors: bool = False, queue_trials: bool = False,
                 fresh_process_per_trial: bool = False, trials_per_worker: int = 1) -> None:
        self.reuse_actors = reuse_actors
        self.trials_per_worker = 1 if fresh_process_per_trial else trials_per_worker
        self._hosts = HostPool(self.trials_per_worker, self._new_host_actor)
        self.queue_trials = queue_trials
        self.fresh_process_per_trial = fresh_process_per_trial
        self._total: dict[str, float] = {}
        self._node_max: list[dict[str, float]] = []
        self._used: dict[str, float] = {}
        self._reserved: dict[Any, dict[str, float]] = {}  # launch key -> its reservation
        self._running: dict[Any, _Worker] = {}  # launch key -> its worker
        self._idle: list[_Worker] = []
        # Placement groups created but not yet ready (a launch awaits them): owned here
        # until a worker holds them, so a cancelled launch never leaks one.
        self._unready_groups: set[Any] = set()
        self._class_refs: dict[int, list] = {}
        self._class_put: anyio.Lock | None = None  # one put per class, however many start
        self._actor_cls: Any = None

    # ---- capacity -----------------------------------------------------------
    async def setup(self) -> None:
        # All of Ray's synchronous start-up in one trip to the actor-creation thread:
        # ray.init, the actor classes (``ray.remote`` inspects each method's signature:
        # 1.8 ms of Python on the loop) and the cluster's capacity. The thread starts
        # now, while little else wants the GIL (a thread's start blocks the loop until
        # the new thread runs; among the first actors' creations that took 2-4 ms). A
        # cancel during start-up waits for it rather than leave ray.init running on its
        # own after arun has returned.
        ready = await _in_thread_to_completion(
            functools.partial(_start_ray, with_hosts=self.trials_per_worker > 1),
            executor=_actor_creation_thread())
        self._actor_cls, self._host_cls, self._driver_node_id, (self._total, self._node_max) = ready
        self._driver_sys_path = _driver_sys_path()
        LEDGER.join(self)  # experiments beside this one see what it reserves

    async def refresh_capacity(self) -> None:
        """Re-read the cluster's capacity (Ray's synchronous API: in a worker thread)."""
        self._total, self._node_max = await anyio.to_thread.run_sync(_read_capacity)

    def check_feasible(self, trial: Trial) -> None:
        request = request_of(trial)
        if any(_fits(request, node) for node in self._node_max):
            return
        if isinstance(trial.resources, PlacementGroupFactory) and _fits(request, self._total):
            return  # bundles may spread over nodes
        have = ", ".join(f"{v:g} {k}" for k, v in sorted(self._total.items())
                         if k in ("CPU", "GPU") or k in request)
        raise TuneError(
            f"Insufficient cluster resources to launch trial: trial {trial} requested "
            f"{_describe(request)}, but the cluster has only {have}. Lower resources_per_trial, "
            f"add nodes, or pass queue_trials=True if the cluster autoscales."
        )

    def has_resources_for_trial(self, trial: Trial) -> bool:
        return LEDGER.grants(self, request_of(trial), self._total)

    def set_wakeup(self, wake: Any, still_waiting: Any) -> None:
        """``wake()`` when another experiment on this Ray instance frees resources."""
        LEDGER.set_wakeup(self, wake, still_waiting)

    def waits_for_others(self) -> bool:
        """A trial that does not fit now may fit once other experiments free resources."""
        return LEDGER.others_hold_or_wait(self)

    # What the ledger reads of each of its tenants.
    def reserved_resources(self) -> dict[str, float]:
        return self._used

    def idle_resources(self) -> dict[str, float]:
        held = self._hosts.idle_resources()
        for worker in self._idle:
            for k, v in worker.request.items():
                held[k] = held.get(k, 0.0) + v
        return held

    def has_idle_workers(self) -> bool:
        return bool(self._idle) or self._hosts.has_idle()

    def give_up_idle_worker(self) -> _Worker:
        """Another experiment needs the room: it takes this idle worker (and retires it:
        its last trial's stop goes first)."""
        if not self._idle:
            return self._hosts.give_up_idle()
        worker = self._idle.pop(0)
        # Maybe from another experiment's thread: Ray's calls are thread-safe, the loop's
        # timer is left alone (it finds nothing due).
        _send_due_stop(worker, cancel_timer=False)
        return worker

    def reserve(self, trial: Trial) -> None:
        request = self._reserved[launch_key(trial)] = request_of(trial)
        for k, v in request.items():
            self._used[k] = self._used.get(k, 0.0) + v
        LEDGER.reserved(self)

    def _unreserve(self, request: dict[str, float]) -> None:
        for k, v in request.items():
            self._used[k] = self._used.get(k, 0.0) - v
        if request:
            LEDGER.freed(self)

    def resource_summary(self) -> str:
        cpu = f"{self._used.get('CPU', 0):g}/{self._total.get('CPU', 0):g} CPUs"
        gpu = f"{self._used.get('GPU', 0):g}/{self._total.get('GPU', 0):g} GPUs"
        return f"Resources requested: {cpu}, {gpu}"

    # ---- trial lifecycle ----------------------------------------------------
    async def start_trial(self, trial: Trial, trainable_cls: type, reuse: bool,
                          checkpoint: Any = None) -> None:
        from tune_async.trainable.trainable import TrialInfo

        if shares_host(self.trials_per_worker, trainable_cls, trial.resources):
            await self._start_in_host(trial, trainable_cls, reuse, checkpoint)
            return
        worker = await self._acquire_worker(trial)
        # Where the trial runs, for syncing its directory from that node (tune_async.sync).
        trial.extra["node_id"] = await self._node_of(worker)
        info = TrialInfo(trial_id=trial.trial_id, trial_name=trial.trial_name,
                         logdir=trial.logdir or "")
        reuse_instance = reuse and worker.trainable_cls is trainable_cls
        class_ref = await self._class_ref(trainable_cls)
        # Not sent yet: the setup travels with the first fetch (one round trip, one actor
        # call less per trial); a setup that raises fails that fetch.
        worker.pending_setup = (class_ref, trial.config, info, reuse_instance, checkpoint,
                                getattr(trial, "log_to_file", False))
        worker.trainable_cls = trainable_cls

    async def _start_in_host(self, trial: Trial, trainable_cls: type, reuse: bool,
                             checkpoint: Any) -> None:
        from tune_async.trainable.trainable import TrialInfo

        info = TrialInfo(trial_id=trial.trial_id, trial_name=trial.trial_name,
                         logdir=trial.logdir or "")
        checkpoint = await _fetched(checkpoint)  # a host restores on its own event loop
        setup = (await self._class_ref(trainable_cls), trial.config, info, reuse, checkpoint,
                 getattr(trial, "log_to_file", False))
        trial.extra["node_id"] = await self._hosts.start_trial(trial, setup)

    async def _new_host_actor(self, trial: Trial) -> Any:
        """A host actor for the trial's resources (room made first, as for a worker)."""
        await _retire(self._make_room(request_of(trial)))
        options = {"max_restarts": 0, **_actor_options(trial.resources),
                   # Every hosted trial may have a fetch, a cancel and a stop in flight.
                   "max_concurrency": max(1000, 4 * self.trials_per_worker)}
        create = functools.partial(self._host_cls.options(**options).remote,
                                   self._driver_sys_path, self._driver_node_id)
        return await _create_actor(create, groups=[])

    async def fetch_results(self, trial: Trial, limits: BatchLimits) -> list[dict]:
        if launch_key(trial) in self._hosts:
            return await self._hosts.fetch_results(trial, limits, FETCH_WINDOW_S)
        worker = self._running[launch_key(trial)]
        try:
            setup, worker.pending_setup = worker.pending_setup, None
            if setup is not None:
                batch = await self._set_up(trial, worker, lambda w, stop: (
                    w.actor.setup_and_train.remote(setup, limits, FETCH_WINDOW_S, stop)))
            else:
                batch = await worker.actor.train_batch.remote(limits, FETCH_WINDOW_S)
            return await unpack_results(batch)
        except BaseException as exc:
            raise _as_failure(exc) from None

    async def _set_up(self, trial: Trial, worker: _Worker, send: Any) -> Any:
        """``send(worker, previous_stop)``: a call that sets the trial up, carrying the
        previous trial's stop when it is still due, else right behind it; if that stop
        failed, the worker refuses the setup and a fresh one gets it. Returns its value."""
        from tune_async.execution.actor import UncleanWorker

        previous_stop = _take_due_stop(worker)
        ref = send(worker, previous_stop)
        if previous_stop is None and not await self._stopped_cleanly(worker):
            with contextlib.suppress(Exception):
                await ref  # UncleanWorker: it ran behind the failed stop
        else:
            try:
                return await ref
            except UncleanWorker as exc:  # the stop it carried failed
                logger.warning("A trial's cleanup failed (%s); replacing its worker", exc)
        return await send(await self._replace_worker(trial, worker), None)

    async def _replace_worker(self, trial: Trial, old: _Worker) -> _Worker:
        """A fresh worker for the trial in place of ``old`` (killed)."""
        del self._running[launch_key(trial)]
        await _kill_off_loop([old])
        await _retire(self._make_room(request_of(trial)))
        worker = await self._new_worker(trial, old.key)
        worker.trainable_cls = old.trainable_cls
        self._running[launch_key(trial)] = worker
        trial.extra["node_id"] = await self._node_of(worker)
        return worker

    async def save(self, trial: Trial) -> str:
        if launch_key(trial) in self._hosts:
            return await self._hosts.call(trial, "save")
        worker = self._running[launch_key(trial)]
        try:
            worker = await self._send_pending_setup(trial, worker)
            return await worker.actor.save.remote()
        except BaseException as exc:
            raise _as_failure(exc) from None

    async def save_to_memory(self, trial: Trial) -> Any:
        """The state, saved; from a trial's own actor it stays in Ray's object store (a
        restore on an actor sends the reference, see ``InObjectStore``)."""
        if launch_key(trial) in self._hosts:
            return await self._hosts.call(trial, "save_to_object")
        worker = self._running[launch_key(trial)]
        try:
            worker = await self._send_pending_setup(trial, worker)
            ref = worker.actor.save_to_object.remote()
            await ref  # a failed save raises here, as before
        except BaseException as exc:
            raise _as_failure(exc) from None
        from tune_async.execution.actor import InObjectStore

        return InObjectStore(ref)

    @staticmethod
    async def _node_of(worker: _Worker) -> str:
        if worker.node_id is None:
            try:
                worker.node_id = await worker.node_ref
            except BaseException as exc:
                raise _as_failure(exc) from None
        return worker.node_id

    async def export_model(self, trial: Trial, export_formats: list[str]) -> dict:
        """The trainable's ``export_model(export_formats)`` into the trial dir."""
        if launch_key(trial) in self._hosts:
            return await self._hosts.call(trial, "export_model", list(export_formats))
        worker = self._running[launch_key(trial)]
        try:
            worker = await self._send_pending_setup(trial, worker)
            return await worker.actor.export_model.remote(list(export_formats))
        except BaseException as exc:
            raise _as_failure(exc) from None

    async def _send_pending_setup(self, trial: Trial, worker: _Worker) -> _Worker:
        """A call other than a fetch comes first: the trainable must be set up before it.
        Returns the worker the trial now runs on."""
        setup, worker.pending_setup = worker.pending_setup, None
        if setup is not None:
            await self._set_up(trial, worker,
                               lambda w, stop: w.actor.setup.remote(*setup, previous_stop=stop))
        return self._running[launch_key(trial)]

    async def stop_trial(self, trial: Trial, in_flight: bool = False,
                         failed: bool = False) -> None:
        # Released by trial, not by worker: a launch cancelled before it got a worker
        # still holds its reservation.
        self._unreserve(self._reserved.pop(launch_key(trial), {}))
        if launch_key(trial) in self._hosts:
            await _kill_off_loop(await self._hosts.stop_trial(
                trial, in_flight, failed, self.reuse_actors, CANCEL_GRACE_S))
            return
        worker = self._running.pop(launch_key(trial), None)
        if worker is None:
            return
        if worker.pending_setup is not None and not (in_flight or failed):
            # Never set up: this trial left nothing in it (the previous trial's stop,
            # still unchecked, is checked by the next setup).
            worker.pending_setup = None
            worker.trainable_cls = None
            self._idle.append(worker)
            return
        worker.pending_setup = None
        if in_flight or failed or self.fresh_process_per_trial:
            try:
                if in_flight and not failed:
                    await _cancel_and_stop(worker)
            finally:  # held by nobody now: killed even when the run is cancelled meanwhile
                await _retire([worker])  # a previous trial's stop still due runs first
        else:
            # The stop rides with the next trial's setup, or goes alone shortly (Ray runs
            # one caller's calls to an actor in order): the worker is idle from here on.
            worker.stop_due = self.reuse_actors
            worker.stop_timer = asyncio.get_running_loop().call_later(
                STOP_DEFER_S, _send_due_stop, worker)
            if not self.reuse_actors:
                worker.trainable_cls = None
            self._idle.append(worker)

    async def shutdown(self) -> None:
        try:
            await self._shut_down()
        finally:
            LEDGER.leave(self)  # its resources are free for the experiments beside it

    async def _shut_down(self) -> None:
        # Let the last trials' cleanup() finish before their workers go away; an instance
        # kept for reuse is stopped for good now, so its cleanup() runs too.
        alive = self._idle + list(self._running.values())
        for worker in alive:  # (a running trial never set up: its predecessor's is due)
            _send_due_stop(worker)
        with anyio.move_on_after(10):
            for worker in alive:
                if worker.stopping is not None:
                    with contextlib.suppress(Exception):
                        await worker.stopping
            for worker in self._idle:
                if self.reuse_actors and worker.trainable_cls is not None:
                    with contextlib.suppress(Exception):
                        await worker.actor.stop.remote(False)
        workers = list(self._running.values()) + self._idle + await self._hosts.shutdown()
        groups = list(self._unready_groups)
        self._running.clear()
        self._idle.clear()
        self._unready_groups.clear()
        self._used.clear()
        self._reserved.clear()
        await _kill_off_loop(workers, groups)

    # ---- workers --------------------------------------------------------------
    async def _acquire_worker(self, trial: Trial) -> _Worker:
        """A worker for the trial, registered as its own before any await (no leaks)."""
        key = pool_key(trial)
        for i, worker in enumerate(self._idle):
            if worker.key == key:  # its previous trial's stop is checked by the setup
                worker = self._idle.pop(i)
                self._running[launch_key(trial)] = worker
                return worker
        await _retire(self._make_room(request_of(trial)))
        worker = await self._new_worker(trial, key)
        self._running[launch_key(trial)] = worker
        return worker

    async def _stopped_cleanly(self, worker: _Worker) -> bool:
        """Whether the previous trial's stop (cleanup) finished without error."""
        stopping, worker.stopping = worker.stopping, None
        if stopping is None:
            return True
        try:
            await stopping
            return True
        except Exception as exc:  # noqa: BLE001 - a worker that failed to stop is replaced
            logger.warning("A trial's cleanup failed (%s); replacing its worker", exc)
            return False

    def _make_room(self, request: dict[str, float]) -> list[_Worker]:
        """Idle workers (of other sizes, or other experiments') to kill so the new one fits
        beside the running ones."""
        def too_full() -> bool:
            held = dict(self._used)  # includes the new trial's reservation
            for more in (self.idle_resources(), LEDGER.used_by_others(self),
                         LEDGER.idle_held_by_others(self)):
                for k, v in more.items():
                    held[k] = held.get(k, 0.0) + v
            return not all(v <= self._total.get(k, 0.0) + _EPS for k, v in held.items())

        evicted = []
        while self._idle and too_full():
            evicted.append(self._idle.pop(0))
        while self._hosts.has_idle() and too_full():
            evicted.append(self._hosts.give_up_idle())
        return evicted + LEDGER.take_idle_from_others(self, too_full)

    async def _new_worker(self, trial: Trial, key: tuple) -> _Worker:
        res = trial.resources
        options: dict[str, Any] = {"max_restarts": 0, "max_concurrency": 1}
        pg = None
        if isinstance(res, PlacementGroupFactory):
            from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

            pg = await self._ready_group(res)
            head = res.bundles[0]
            options.update(
                num_cpus=head.get("CPU", 0),
                num_gpus=head.get("GPU", 0),
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    pg, placement_group_bundle_index=0
                ),
            )
        else:
            options.update(_actor_options(res))
        # Creating an actor is a blocking call (the first one exports the class): off the
        # loop, and one created while the launch was cancelled is killed, not leaked.
        create = functools.partial(self._actor_cls.options(**options).remote,
                                   self._driver_sys_path, self._driver_node_id)
        groups = [pg] if pg is not None else []
        try:
            actor, node_ref = await _create_actor(create, groups)
        except Exception:  # Ray refused the actor: its group is nobody's either
            await _kill_off_loop([], groups)
            raise
        return _Worker(actor=actor, key=key, request=request_of(trial), placement_group=pg,
                       node_ref=node_ref)

    async def _ready_group(self, factory: PlacementGroupFactory) -> Any:
        """Create the trial's placement group and wait until it is placed.

        Until a worker holds it, the group is owned here: a launch cancelled while
        waiting removes it (and ``shutdown`` removes any left).
        """
        pg = factory()
        self._unready_groups.add(pg)
        try:
            await _placed(pg, factory)
        except BaseException:
            self._unready_groups.discard(pg)
            with anyio.CancelScope(shield=True):
                await _kill_off_loop([], [pg])
            raise
        self._unready_groups.discard(pg)
        return pg

    async def _class_ref(self, cls: type) -> list:
        """The trainable class in the object store, put once per class (off the loop)."""
        import ray

        ref = self._class_refs.get(id(cls))
        if ref is not None:
            return ref
        # Trials starting together (1,000 of them, on shared hosts) wait for the first
        # one's put: each put serializes the class in a thread holding the GIL, and a
        # thousand of them kept the loop from it for tens of milliseconds at a time.
        if self._class_put is None:
            self._class_put = anyio.Lock()
        async with self._class_put:
            ref = self._class_refs.get(id(cls))
            if ref is None:
                # ray.put (not cloudpickle bytes): ObjectRefs inside the trainable, e.g.
                # from with_parameters, must go through Ray's serializer to stay resolvable.
                ref = self._class_refs[id(cls)] = [await anyio.to_thread.run_sync(ray.put, cls)]
        return ref


async def _fetched(checkpoint: tuple[str, Any] | None) -> tuple[str, Any] | None:
    """An in-memory state left in the object store, fetched to the driver."""
    from tune_async.execution.actor import InObjectStore

    if checkpoint is not None and isinstance(checkpoint[1], InObjectStore):
        try:
            return (checkpoint[0], await checkpoint[1].ref)
        except BaseException as exc:
            raise _as_failure(exc) from None
    return checkpoint


async def _placed(pg: Any, factory: PlacementGroupFactory) -> None:
    """Wait until Ray places ``pg``, warning every threshold while it cannot: this
    experiment counted room for it, so the wait means something else holds resources (a
    driver beside it, an autoscaler still adding nodes, or resources Ray did not free)."""
    threshold = env_number("TUNE_WARN_INSUFFICENT_RESOURCE_THRESHOLD_S", 60.0) or None
    ready = pg.ready()
    waited = 0.0
    while True:
        with anyio.move_on_after(threshold):
            await ready
            return
        waited += threshold
        available, total = await anyio.to_thread.run_sync(_read_available)
        logger.warning(
            "A trial's placement group (%s) has waited %g s for Ray to place it, although "
            "this experiment counted room for it: Ray reports %s available of %s. Another "
            "driver or resources Ray has not freed may hold them (`ray status` shows them).",
            _describe(factory.required_resources()), waited, _describe(available),
            _describe(total))


def _read_available() -> tuple[dict[str, float], dict[str, float]]:
    """The cluster's available and total CPUs and GPUs (blocking Ray calls)."""
    import ray

    def cpus_gpus(resources: dict) -> dict[str, float]:
        return {k: float(v) for k, v in resources.items() if k in ("CPU", "GPU")}

    return cpus_gpus(ray.available_resources()), cpus_gpus(ray.cluster_resources())


async def _cancel_and_stop(worker: _Worker) -> None:
    """Cancel the running batch (an async trainable gets CancelledError), then stop the
    trial, so its finally blocks and cleanup() run; bounded by CANCEL_GRACE_S."""
    with anyio.move_on_after(CANCEL_GRACE_S):
        try:
            await worker.actor.cancel.options(concurrency_group="control").remote()
            await worker.actor.stop.remote(False)
        except Exception as exc:  # noqa: BLE001 - it is killed next either way
            logger.debug("Stopping a cancelled trial's worker failed: %s", exc)


_actor_creator: concurrent.futures.ThreadPoolExecutor | None = None


def _actor_creation_thread() -> concurrent.futures.ThreadPoolExecutor:
    """The one thread that creates this process's actors, one after another.

    Creating an actor runs Python under the GIL (the first of a class exports it:
    Ray disassembles and pickles the class), and Ray serializes creations on its own
    lock anyway. From the default executor, eight trials starting together took up
    to six threads, each queued for the GIL between the loop's turns: the loop waited
    about a switch interval per thread each time it wanted the GIL back.
    """
    global _actor_creator
    if _actor_creator is None:
        _actor_creator = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="tune_async_actor_creation")
    return _actor_creator


def _forget_actor_creator() -> None:
    # A forked child has no copy of the thread: its executor would queue work forever.
    global _actor_creator
    _actor_creator = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_actor_creator)


async def _create_actor(create: Any, groups: list[Any]) -> tuple[Any, Any]:
    """``create()`` an actor in the actor-creation thread and ask it which node it is on.

    Returns ``(actor, ObjectRef of its node id)``. The first call on a new actor's handle
    may block in Ray, so it is sent from that thread too (it was sent from a worker
    thread of its own per trial, and the loop waited for each new thread to start). An
    actor made while the caller was cancelled is killed with ``groups``, not leaked.
    """
    return await _in_thread_to_completion(
        functools.partial(_create_and_locate, create),
        discard=lambda made: _kill_now([made[0]], groups), executor=_actor_creation_thread())


def _create_and_locate(create: Any) -> tuple[Any, Any]:
    actor = create()
    try:
        return actor, actor.node_id.remote()
    except BaseException:
        _kill_now([actor], [])
        raise


async def _in_thread_to_completion(fn: Any, discard: Any = None,
                                   executor: concurrent.futures.Executor | None = None) -> Any:
    """Run ``fn`` in a worker thread (of ``executor``, default the loop's); a
    cancellation waits for it, then propagates.

    anyio's shield covers cancel scopes, but an asyncio application may cancel the
    task awaiting ``arun`` natively (``task.cancel()``): the thread is waited for too.
    ``discard(result)`` releases what ``fn`` made when nobody will receive it.
    """
    import asyncio

    future = asyncio.get_running_loop().run_in_executor(executor, fn)
    cancelled: BaseException | None = None
    while not future.done():
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError as exc:
            cancelled = exc  # keep waiting: the thread's work must not be orphaned
    result = future.result()  # fn's own exception propagates from here
    if cancelled is not None:
        if discard is not None:
            discard(result)
        raise cancelled
    return result


def _start_ray(with_hosts: bool = False) -> tuple[Any, Any, str,
                                                 tuple[dict[str, float], list[dict[str, float]]]]:
    """Connect Ray; return the actor classes, the driver's node and the capacity.

    The classes the run will use are exported to this Ray job now, while the loop
    only waits for this: otherwise the first actor's creation does it, in the middle
    of the run's busiest start (see :func:`_export_to_job`).
    """
    ensure_ray_initialized()
    import ray

    actor_cls, host_cls = _actor_classes()
    _export_to_job(actor_cls)
    if with_hosts:
        _export_to_job(host_cls)
    return actor_cls, host_cls, ray.get_runtime_context().get_node_id(), _read_capacity()


def _export_to_job(actor_cls: Any) -> None:
    """Export an actor class to the current Ray job ahead of its first creation.

    Ray does it on the first creation in each job: it pickles the class and
    disassembles every method (a duplicate-export check), 11 ms of Python for the trial
    actor, in the actor-creation thread while the loop admits and starts the first
    trials. Done here instead, fewer heartbeats were late at a run's start (6 rounds
    of 2: beats over 3 ms among the first three, 7 -> 5 on ``many_short``, 4 -> 2 on
    ``throughput``). Ray's internals: if they differ (another Ray version) or fail,
    Ray exports the class itself on the first creation, as before.

    The disassembly (Ray's ``compute_collision_identifier``, 10 of those 11 ms) only
    labels the export for a warning about a class exported many times; Ray stores the
    label and nothing reads it back. Ours is the class's qualified name.
    """
    import ray

    try:
        worker = ray._private.worker.global_worker
        meta = actor_cls.__ray_metadata__
        if meta.last_export_cluster_and_job == worker.current_cluster_and_job:
            return
        manager = worker.function_actor_manager
        manager.compute_collision_identifier = _named_collision_identifier
        try:
            manager.export_actor_class(
                meta.modified_class, meta.actor_creation_function_descriptor,
                meta.method_meta.methods.keys())
        finally:
            del manager.compute_collision_identifier  # Ray's own again
        meta.last_export_cluster_and_job = worker.current_cluster_and_job
    except Exception as exc:  # noqa: BLE001 - only ahead of time: Ray exports it anyway
        logger.debug("Ray exports the actor class on its first creation: %r", exc)


def _named_collision_identifier(cls: type) -> bytes:
    return hashlib.sha256(f"{cls.__module__}.{cls.__qualname__}".encode()).digest()


@functools.cache
def _actor_classes() -> tuple[Any, Any]:
    """The trial actor's and the host's Ray classes, made once per process.

    ``ray.remote`` inspects every method's signature (about 2 ms of Python). A class made
    once serves every later Ray session too: Ray exports it again to each new job.
    """
    import ray

    from tune_async.execution.actor import TrialActor
    from tune_async.execution.host import TrialHost

    # A second thread into each actor ("control") lets a stop cancel a running batch.
    return (ray.remote(concurrency_groups={"control": 1})(TrialActor),
            ray.remote(TrialHost))  # the host's async methods: Ray runs them concurrently


def _read_capacity() -> tuple[dict[str, float], list[dict[str, float]]]:
    """The cluster's total resources and each live node's (blocking Ray calls)."""
    import ray

    total = {k: float(v) for k, v in ray.cluster_resources().items()}
    nodes = [{k: float(v) for k, v in node["Resources"].items()}
             for node in ray.nodes() if node.get("Alive")]
    return total, nodes


def _send_due_stop(worker: _Worker, cancel_timer: bool = True) -> None:
    """Send the previous trial's stop now, if it is still due."""
    stop = _take_due_stop(worker, cancel_timer)
    if stop is not None:
        worker.stopping = worker.actor.stop.remote(stop)


def _take_due_stop(worker: _Worker, cancel_timer: bool = True) -> bool | None:
    """The previous trial's stop, if not sent yet (its timer cancelled, unless called off
    the executor's loop): the caller sends it."""
    stop, worker.stop_due = worker.stop_due, None
    if cancel_timer:
        timer, worker.stop_timer = worker.stop_timer, None
        if timer is not None:
            timer.cancel()
    return stop


async def _retire(workers: list[Any]) -> None:
    """Kill evicted idle workers (or hosts) once their last trial's stop has run (bounded):
    its cleanup must not be cut off. Nobody else holds them: a cancel while waiting still
    kills them."""
    try:
        with anyio.move_on_after(RETIRE_WAIT_S):
            for worker in workers:
                if isinstance(worker, _Worker):
                    _send_due_stop(worker)
                    if worker.stopping is not None:
                        with contextlib.suppress(Exception):
                            await worker.stopping
    finally:
        with anyio.CancelScope(shield=True):
            await _kill_off_loop(workers)


async def _kill_off_loop(workers: list[_Worker], groups: list[Any] = ()) -> None:
    """Kill actors and remove placement groups in a worker thread (blocking Ray calls)."""
    groups = list(groups) + [w.placement_group for w in workers if w.placement_group is not None]
    if workers or groups:
        # Whoever called this no longer holds these workers: a cancellation must not
        # stop the kill from happening (it would leak them), so it waits for it.
        await _in_thread_to_completion(
            functools.partial(_kill_now, [w.actor for w in workers], groups))


def _kill_now(actors: list[Any], groups: list[Any]) -> None:
    import ray

    for actor in actors:
        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already dead
            pass
    for pg in groups:
        try:
            ray.util.remove_placement_group(pg)
        except Exception:  # noqa: BLE001 - already removed
            pass


def _driver_sys_path() -> list[str]:
    import sys

    return [os.path.abspath(p) for p in sys.path]


def _actor_options(res: Resources) -> dict[str, Any]:
    options: dict[str, Any] = {"num_cpus": res.cpu_total(), "num_gpus": res.gpu_total()}
    mem = res.memory + res.extra_memory
    if mem:
        options["memory"] = mem
    custom = res.custom_total()
    if custom:
        options["resources"] = custom
    return options


def _fits(request: dict[str, float], capacity: dict[str, float]) -> bool:
    return all(capacity.get(k, 0.0) + _EPS >= v for k, v in request.items())


def _describe(request: dict[str, float]) -> str:
    return ", ".join(f"{v:g} {k}" for k, v in sorted(request.items())) or "nothing"


def _as_failure(exc: BaseException) -> BaseException:
    """Translate Ray's errors into a TrialFailure; let cancellation through untouched."""
    import ray.exceptions as rex

    if isinstance(exc, (anyio.get_cancelled_exc_class(), KeyboardInterrupt, SystemExit)):
        return exc
    if isinstance(exc, rex.RayTaskError):
        cause = getattr(exc, "cause", None)
        return TrialFailure(traceback=str(exc), exception=cause)
    if isinstance(exc, (rex.RayActorError, rex.WorkerCrashedError, rex.ObjectLostError)):
        return TrialFailure(
            traceback=f"The trial's worker process died: {exc}", exception=exc, crashed=True
        )
    if isinstance(exc, TrialFailure):
        return exc
    return TrialFailure(traceback=f"{type(exc).__name__}: {exc}", exception=exc)
