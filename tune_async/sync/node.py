"""Node → driver syncing: trial directories of trials on other nodes come to the driver.

A trial that runs on another node of a Ray cluster writes its directory
(checkpoints, the files its trainable writes, log files) on that node. The
:class:`NodeSyncer` plugin brings those files to the driver's trial directory
every ``node_sync_period`` seconds and when the trial ends, through Ray itself:
a zero-CPU task pinned to the trial's node packs the files that changed since
the last pull (tar bytes), and the driver unpacks them in a worker thread. No
ssh or rsync set-up is needed. ``SyncConfig(sync_to_driver=...)`` may replace
the transfer with a command template (``{source}``, ``{target}``) or a function
``(source, target)``; ``False`` disables it.

With ``sync_on_checkpoint=True`` a checkpoint taken on another node is pulled
at once: the trial takes its next step only when the checkpoint is on the
driver, and only a checkpoint on the driver counts as restorable, so a failed
trial is restored on any node (the actor pulls it from the driver, see
:func:`localize_checkpoint`). Other trials go on meanwhile.

Where a node keeps trial directories: on separate machines, at the same
absolute path as on the driver (as 1.x). A node started with the environment
variable ``TUNE_ASYNC_NODE_ROOT`` (``Cluster.add_node(env_vars=...)``, or
``ray start`` with it set) keeps them under that root instead:
``<root>/<driver path>``. That makes a multi-node cluster on one machine honest
(a worker node does not write into the driver's directory) and lets a node put
trial directories on its own local disk.
"""

from __future__ import annotations

import io
import logging
import os
import shlex
import subprocess
import tarfile
import time
from typing import Any

import anyio
import attrs

from tune_async.callback import Callback

logger = logging.getLogger(__name__)

NODE_ROOT_ENV = "TUNE_ASYNC_NODE_ROOT"
# The experiment's end waits this long at most for the final pulls.
FINAL_SYNC_TIMEOUT_S = 120.0
# node_sync_period=0 (1.x: at every result) pulls continuously, but not more often than this.
MIN_PERIOD_S = 0.5

Manifest = dict[str, tuple[int, int]]  # relative path -> (size, mtime_ns)


# ---- paths on a node ----------------------------------------------------------------
def node_root() -> str:
    """This process's node root ('' keeps the driver's absolute paths)."""
    return os.environ.get(NODE_ROOT_ENV, "")


def to_node_path(path: str, root: str | None = None) -> str:
    """Where the driver's ``path`` lives on this node."""
    root = node_root() if root is None else root
    if not root or not path:
        return path
    return os.path.join(root, os.path.abspath(path).lstrip(os.sep))


def to_driver_path(path: str, root: str | None = None) -> str:
    """The driver's name for this node's ``path`` (the inverse of :func:`to_node_path`)."""
    root = node_root() if root is None else root
    if not root or not path:
        return path
    root = os.path.abspath(root)
    path = os.path.abspath(path)
    if os.path.commonpath([root, path]) != root:
        return path  # outside the node root (an absolute checkpoint_dir): unchanged
    return os.sep + os.path.relpath(path, root).lstrip(os.sep)


# ---- packing and unpacking ----------------------------------------------------------
def pack_changes(directory: str, seen: Manifest) -> tuple[bytes, Manifest]:
    """A tar of the files under ``directory`` (this node's view of the driver path) whose
    size or mtime differ from ``seen``, and their manifest entries."""
    local = to_node_path(directory)
    changed: Manifest = {}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for rel, full, stamp in _walk_files(local):
            if seen.get(rel) == stamp:
                continue
            try:
                tar.add(full, arcname=rel, recursive=False)
            except OSError:  # deleted while walking (a pruned checkpoint): next time
                continue
            changed[rel] = stamp
    return (buffer.getvalue() if changed else b""), changed


def _walk_files(root: str):
    for base, _dirs, files in os.walk(root):
        for name in files:
            full = os.path.join(base, name)
            try:
                st = os.stat(full)
            except OSError:
                continue
            yield os.path.relpath(full, root), full, (st.st_size, st.st_mtime_ns)


def unpack(data: bytes, target: str) -> None:
    """Extract a tar made by :func:`pack_changes` into ``target`` (overwriting)."""
    if not data:
        return
    os.makedirs(target, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        tar.extractall(target, filter="data")


def _pack_task() -> Any:
    """The packing function as a zero-CPU Ray task (made once per process)."""
    global _PACK_REMOTE
    if _PACK_REMOTE is None:
        import ray

        _PACK_REMOTE = ray.remote(num_cpus=0, max_retries=0)(pack_changes)
    return _PACK_REMOTE


_PACK_REMOTE: Any = None
_ROOT_REMOTE: Any = None


def _on_node(node_id: str) -> dict[str, Any]:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)}


def pull_ref(node_id: str, directory: str, seen: Manifest) -> Any:
    """Start packing ``directory``'s changes on node ``node_id``; the ObjectRef of
    ``(tar bytes, manifest)`` (blocking Ray call: run it off the event loop)."""
    return _pack_task().options(**_on_node(node_id)).remote(directory, seen)


def node_root_ref(node_id: str) -> Any:
    """The ObjectRef of node ``node_id``'s root (for a user's syncer, which names the
    node's own path)."""
    global _ROOT_REMOTE
    if _ROOT_REMOTE is None:
        import ray

        _ROOT_REMOTE = ray.remote(num_cpus=0, max_retries=0)(node_root)
    return _ROOT_REMOTE.options(**_on_node(node_id)).remote()


def delete_on_node(directories: list[str]) -> None:
    """Remove pruned checkpoint directories (driver paths) from this node's disk."""
    import shutil

    for directory in directories:
        shutil.rmtree(to_node_path(directory), ignore_errors=True)


def delete_ref(node_id: str, directories: list[str]) -> Any:
    """Start :func:`delete_on_node` on node ``node_id`` (blocking Ray call: off the loop)."""
    global _DELETE_REMOTE
    if _DELETE_REMOTE is None:
        import ray

        _DELETE_REMOTE = ray.remote(num_cpus=0, max_retries=0)(delete_on_node)
    return _DELETE_REMOTE.options(**_on_node(node_id)).remote(directories)


_DELETE_REMOTE: Any = None


def localize_checkpoint(path: str, driver_node_id: str | None) -> str:
    """This node's copy of the driver's checkpoint ``path``, pulled from the driver's node
    first when it is not here (a trial restored on another node than its checkpoint's).

    Runs in the trial actor. Without a node root the paths are the same on every node
    of one machine; on separate machines a missing path is pulled the same way.
    """
    import ray

    from tune_async.checkpoint import checkpoint_dir_of

    local = to_node_path(path)
    if os.path.exists(local) or driver_node_id is None:
        return local
    if ray.get_runtime_context().get_node_id() == driver_node_id:
        return local
    directory = checkpoint_dir_of(path)
    data, _ = ray.get(pull_ref(driver_node_id, directory, {}))
    if not data:
        raise FileNotFoundError(
            f"Checkpoint {path} is neither on this node nor on the driver: it was taken on "
            "another node and never synced (sync_on_checkpoint=False?)")
    unpack(data, to_node_path(directory))
    return local


def current_node_id() -> str | None:
    import ray

    if not ray.is_initialized():
        return None
    return ray.get_runtime_context().get_node_id()


# ---- user-given syncers ----------------------------------------------------------------
def run_custom_syncer(syncer: Any, source: str, target: str) -> None:
    """``sync_to_driver`` as a function ``(source, target)`` or a command template."""
    os.makedirs(target, exist_ok=True)
    if callable(syncer):
        syncer(source, target)
        return
    command = syncer.format(source=shlex.quote(source), target=shlex.quote(target))
    done = subprocess.run(command, shell=True, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"Sync command failed ({done.returncode}): {command}\n"
                           f"{done.stderr.strip()}")


# ---- the plugin ------------------------------------------------------------------------
@attrs.define(eq=False)
class _TrialSync:
    """What the driver knows of one trial's files on other nodes."""

    trial: Any  # the TrialView
    lock: anyio.Lock = attrs.field(factory=anyio.Lock)  # one pull of a directory at a time
    last_pull: float = 0.0
    seen: dict[str, Manifest] = attrs.field(factory=dict)  # node id -> files pulled from it
    live: bool = True
    # Checkpoint directories taken on other nodes: dir -> node id (pruned there too).
    on_nodes: dict[str, str] = attrs.field(factory=dict)
    # The hold on its newest checkpoint that reached the driver (pruning keeps it).
    release_restorable: Any = None

    def keep_restorable(self, release: Any) -> None:
        self.drop_restorable()
        self.release_restorable = release

    def drop_restorable(self) -> None:
        release, self.release_restorable = self.release_restorable, None
        if release is not None:
            release()


class NodeSyncer(Callback):
    """Brings trial directories from other nodes to the driver (see the module doc).

    Args:
        sync_config: The run's ``SyncConfig`` (``sync_to_driver``,
            ``sync_on_checkpoint``, ``node_sync_period``).
    """

    _trial_dir_later_ok = True  # never needs a trial directory at once (trial_dirs)

    def __init__(self, sync_config: Any) -> None:
        self.syncer = sync_config.sync_to_driver
        self.sync_on_checkpoint = bool(sync_config.sync_on_checkpoint)
        self.period = float(sync_config.node_sync_period)
        self.context: Any = None
        self.driver_node: str | None = None
        self._trials: dict[str, _TrialSync] = {}
        self._pending = 0
        self._roots: dict[str, str] = {}  # node id -> its root (custom syncers only)
        self._idle = anyio.Event()
        self._idle.set()
        self.failures: list[str] = []  # what could not be pulled (also logged)

    @property
    def enabled(self) -> bool:
        return self.syncer is not False and self.driver_node is not None

    # ---- hooks --------------------------------------------------------------------
    def setup(self, context: Any = None, **info: Any) -> None:
        self.context = context
        self.driver_node = current_node_id()  # None off Ray (local executors): nothing to do
        if self.enabled and context is not None and self.period < float("inf"):
            context.start_soon(self._pull_periodically, name="node sync")

    def on_trial_start(self, trial: Any, **info: Any) -> None:
        entry = self._trials.get(trial.trial_id)
        if entry is None:
            self._trials[trial.trial_id] = _TrialSync(trial)
        else:
            entry.live = True

    def on_checkpoint(self, trial: Any, checkpoint: Any, **info: Any) -> None:
        if not (self.enabled and self._is_remote(trial)):
            return
        if getattr(checkpoint, "dir", None) is None:
            return  # a memory checkpoint: nothing on disk
        entry = self._entry(trial)
        entry.on_nodes[checkpoint.dir] = trial.extra["node_id"]
        if self.sync_on_checkpoint:
            transit = _begin_transit(self.context, trial.trial_id, checkpoint)
            self._start(self._pull_checkpoint, trial, checkpoint, transit)
        pruned = self._pruned_on_nodes(trial, entry)
        if pruned:
            self._start(self._delete_on_nodes, trial, pruned)

    def on_trial_complete(self, trial: Any, **info: Any) -> None:
        self._final_pull(trial)

    def on_trial_error(self, trial: Any, **info: Any) -> None:
        self._final_pull(trial)

    async def on_experiment_end(self, **info: Any) -> None:
        for entry in self._trials.values():  # interrupted trials (Ctrl+C): their files too
            if entry.live:
                self._final_pull(entry.trial)
        with anyio.move_on_after(FINAL_SYNC_TIMEOUT_S):
            await self._idle.wait()
        if self._pending:
            logger.warning("%d pulls from worker nodes did not finish within %.0f s; their "
                           "files stay on those nodes", self._pending, FINAL_SYNC_TIMEOUT_S)

    # ---- when to pull ---------------------------------------------------------------------
    def _final_pull(self, trial: Any) -> None:
        entry = self._trials.get(trial.trial_id)
        if entry is not None:
            entry.live = False
        if self.enabled and self._is_remote(trial):
            self._start(self._pull_last_time, trial)
        elif entry is not None:
            entry.drop_restorable()

    async def _pull_periodically(self) -> None:
        period = max(self.period, MIN_PERIOD_S)
        while True:
            await anyio.sleep(period)
            now = time.monotonic()
            for entry in list(self._trials.values()):
                if (entry.live and not entry.lock.locked() and self._is_remote(entry.trial)
                        and now - entry.last_pull >= period):
                    self._start(self._pull_trial, entry.trial)

    def _is_remote(self, trial: Any) -> bool:
        node = trial.extra.get("node_id")
        return node is not None and node != self.driver_node

    def _start(self, fn: Any, *args: Any) -> None:
        self._pending += 1
        self._idle = anyio.Event() if self._pending == 1 else self._idle
        self.context.start_soon(self._counted, fn, args, name=f"node sync {args[0]}")

    async def _counted(self, fn: Any, args: tuple) -> None:
        try:
            await fn(*args)
        finally:
            self._pending -= 1
            if self._pending == 0:
                self._idle.set()

    def _pruned_on_nodes(self, trial: Any, entry: _TrialSync) -> dict[str, list[str]]:
        """Checkpoints that keep_checkpoints_num dropped, by the node that still has them
        (1.x deleted a pruned checkpoint where it was taken, too)."""
        kept = {c.dir for c in trial.checkpoint_manager.checkpoints}
        pruned: dict[str, list[str]] = {}
        for directory in [d for d in entry.on_nodes if d not in kept]:
            pruned.setdefault(entry.on_nodes.pop(directory), []).append(directory)
        return pruned

    async def _delete_on_nodes(self, trial: Any, pruned: dict[str, list[str]]) -> None:
        entry = self._entry(trial)
        async with entry.lock:  # after a pull in flight, which may still be reading them
            for node, directories in pruned.items():
                seen = entry.seen.get(node, {})
                for rel in [r for r in seen
                            if any(_under(os.path.join(trial.logdir, r), d) for d in directories)]:
                    del seen[rel]
                try:
                    await (await self.context.run_sync(delete_ref, node, directories))
                except Exception as exc:  # noqa: BLE001 - a lost node took them already
                    logger.debug("Could not delete %s on node %s: %s", directories, node, exc)

    # ---- pulling ---------------------------------------------------------------------------
    def _entry(self, trial: Any) -> _TrialSync:
        entry = self._trials.get(trial.trial_id)
        if entry is None:
            entry = self._trials[trial.trial_id] = _TrialSync(trial, live=False)
        return entry

    async def _pull_trial(self, trial: Any) -> bool:
        """Pull the trial's directory from its node; False (logged) when that failed."""
        entry = self._entry(trial)
        async with entry.lock:  # queued behind a pull in progress: it sees what came later
            node, logdir = trial.extra.get("node_id"), trial.logdir
            try:
                await self._transfer(entry, node, trial.node_ip, logdir)
            except Exception as exc:  # noqa: BLE001 - a lost node: reported, the run goes on
                message = f"Could not sync trial {trial} from node {node}: {exc}"
                logger.warning(message)
                self.failures.append(message)
                return False
            entry.last_pull = time.monotonic()
            return True

    async def _pull_last_time(self, trial: Any) -> None:
        try:
            await self._pull_trial(trial)
        finally:  # the trial is over: no restore needs its checkpoints any more
            self._entry(trial).drop_restorable()

    async def _pull_checkpoint(self, trial: Any, checkpoint: Any, transit: Any) -> None:
        """The checkpoint's directory to the driver; then it counts as restorable (and
        stays held against pruning until a newer one arrived)."""
        release = _hold(self.context, checkpoint.path)
        ok = False
        try:
            ok = await self._pull_trial(trial) and await self.context.run_sync(
                os.path.isdir, checkpoint.dir)
        finally:
            transit.settle(ok)
            if ok and self._entry(trial).live:
                self._entry(trial).keep_restorable(release)
            else:
                release()

    async def _transfer(self, entry: _TrialSync, node: str, node_ip: str | None,
                        logdir: str) -> None:
        if self.syncer is None or self.syncer is True:
            seen = entry.seen.setdefault(node, {})
            ref = await self.context.run_sync(pull_ref, node, logdir, dict(seen))
            data, changed = await ref
            await self.context.run_sync(unpack, data, logdir)
            seen.update(changed)
        else:
            root = self._roots.get(node)
            if root is None:
                root = self._roots[node] = await (
                    await self.context.run_sync(node_root_ref, node))
            source = f"{node_ip or ''}:{to_node_path(logdir, root).rstrip(os.sep)}{os.sep}"
            await self.context.run_sync(run_custom_syncer, self.syncer, source,
                                        logdir.rstrip(os.sep) + os.sep)


def _under(path: str, directory: str) -> bool:
    return os.path.commonpath([os.path.abspath(path), os.path.abspath(directory)]) == (
        os.path.abspath(directory))


# ---- checkpoint transits (the controller's side lives on the plugin context) ---------------
class _NoTransit:
    def settle(self, ok: bool) -> None:
        pass


def _hold(context: Any, path: str) -> Any:
    hold = getattr(context, "hold_checkpoint", None)
    return hold(path) if hold is not None else (lambda: None)


def _begin_transit(context: Any, trial_id: str, checkpoint: Any) -> Any:
    begin = getattr(context, "checkpoint_in_transit", None)
    return begin(trial_id, checkpoint) if begin is not None else _NoTransit()
