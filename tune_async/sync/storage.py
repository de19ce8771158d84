"""Where experiment files go: one small interface over fsspec, commands and functions.

``get_storage(spec)`` turns what a user passed (``SyncConfig.upload_dir`` or
``sync_to_cloud``) into a :class:`Storage`:

- an fsspec URL (``file://``, ``memory://`` always; ``s3://`` with s3fs and
  ``gs://`` with gcsfs, the ``s3`` / ``gs`` extras) → :class:`FsspecStorage`;
- a command template with ``{source}`` and ``{target}`` → :class:`CommandStorage`;
- a function ``fn(source, target)`` → :class:`FunctionStorage`.

Every method blocks (network, disk, subprocesses): callers run them in a worker
thread (``PluginContext.run_sync``), never on the event loop.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shlex
import subprocess
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol, runtime_checkable

import attrs

logger = logging.getLogger(__name__)

# The extra that installs each protocol's fsspec package.
_EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gs", "gcs": "gs"}
_BATCH = 32  # files per transfer call: the manifest advances after each batch


class SyncError(RuntimeError):
    """A sync command or function failed (the message says which and why)."""


@runtime_checkable
class Storage(Protocol):
    """Blocking transfers between a local directory and a remote URL."""

    def upload_dir(self, local_dir: str, remote_url: str) -> None:
        """Mirror ``local_dir`` to ``remote_url`` (changed files only where possible)."""

    def download_dir(self, remote_url: str, local_dir: str) -> None:
        """Copy everything under ``remote_url`` into ``local_dir``."""

    def exists(self, remote_url: str) -> bool:
        """True if something is stored under ``remote_url``."""

    def delete(self, remote_url: str) -> None:
        """Remove everything under ``remote_url`` (missing: no error)."""


def get_storage(spec: str | Callable[[str, str], Any], **storage_options: Any) -> Storage:
    """The storage for an fsspec URL, a command template or a function(source, target).

    Args:
        spec: ``"s3://bucket/path"`` (any fsspec URL; only its protocol matters here),
            ``"aws s3 sync {source} {target}"`` (a command template), or a callable
            ``fn(source, target)``.
        storage_options: passed to the fsspec filesystem (e.g. ``client_kwargs`` for
            s3fs); fsspec's own config (``fsspec.config.conf``, ``FSSPEC_*`` env vars)
            applies too.

    Raises:
        ImportError: the URL's fsspec package is missing (names the extra to install).
        ValueError: ``spec`` is none of the above.
    """
    if callable(spec):
        return FunctionStorage(spec)
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"get_storage expects a URL, a command template or a function, "
                         f"got {spec!r}")
    if "{source}" in spec or "{target}" in spec:
        if "{source}" not in spec or "{target}" not in spec:
            raise ValueError(f"A sync command template needs both {{source}} and {{target}}, "
                             f"got {spec!r}")
        return CommandStorage(spec)
    check_backend(spec)  # fail now on a missing package, not mid-run
    return FsspecStorage(storage_options)


def check_backend(url: str) -> None:
    """Raise now if ``url``'s fsspec backend is unknown or not installed.

    Cheap on purpose (no import: s3fs pulls in botocore, ~1 s): ``tune.arun`` builds the
    run on the event loop; the backend is imported at the first upload, in a thread.
    """
    from fsspec.core import split_protocol
    from fsspec.registry import known_implementations, registry

    protocol = split_protocol(url)[0] or "file"
    if protocol in registry:
        return  # imported already
    implementation = known_implementations.get(protocol)
    if implementation is None:
        raise ValueError(f"Unknown storage protocol {protocol}:// in {url!r} "
                         "(not an fsspec protocol)")
    module = implementation["class"].split(".", 1)[0]
    if importlib.util.find_spec(module) is None:
        raise _missing_backend(url, protocol, implementation.get("err", module))


def _missing_backend(url: str, protocol: str, detail: Any) -> ImportError:
    extra = _EXTRAS.get(protocol)
    hint = (f"pip install 'tune_async[{extra}]'" if extra
            else f"install the fsspec package for {protocol}://")
    return ImportError(f"Syncing to {url!r} needs an fsspec backend for {protocol}://: "
                       f"{hint} ({detail})")


def filesystem_for(url: str, storage_options: dict | None = None) -> tuple[Any, str]:
    """``(filesystem, path)`` for ``url``; a missing package raises ImportError naming its extra."""
    import fsspec.core

    try:
        return fsspec.core.url_to_fs(url, **(storage_options or {}))
    except ImportError as exc:
        protocol = url.split("://", 1)[0] if "://" in url else "file"
        raise _missing_backend(url, protocol, exc) from exc


# ---- the incremental manifest ------------------------------------------------------------
FileStat = tuple[int, int]  # (size, mtime_ns)


def local_files(local_dir: str) -> Iterator[tuple[str, FileStat]]:
    """``(relative path, (size, mtime_ns))`` for every file under ``local_dir``."""
    for root, _dirs, files in os.walk(local_dir):
        for name in files:
            path = os.path.join(root, name)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue  # deleted while we walked (a pruned checkpoint)
            yield os.path.relpath(path, local_dir), (st.st_size, st.st_mtime_ns)


@attrs.define
class Manifest:
    """What was last uploaded from one directory to one URL: file → (size, mtime_ns)."""

    uploaded: dict[str, FileStat] = attrs.field(factory=dict)

    def changes(self, current: dict[str, FileStat]) -> tuple[list[str], list[str]]:
        """(files to upload, files uploaded before and gone locally now)."""
        changed = [rel for rel, stat in current.items() if self.uploaded.get(rel) != stat]
        gone = [rel for rel in self.uploaded if rel not in current]
        return sorted(changed), sorted(gone)


# ---- fsspec ---------------------------------------------------------------------------
class FsspecStorage:
    """Any fsspec filesystem; uploads send only files whose size or mtime changed.

    The manifest of each (directory, URL) pair lives in this object, so one storage
    kept for an experiment's lifetime makes periodic syncs cost what changed. Files
    uploaded before and deleted locally since (pruned checkpoints) are deleted
    remotely too; files this storage never uploaded are never touched.
    """

    def __init__(self, storage_options: dict | None = None) -> None:
        self.storage_options = dict(storage_options or {})
        self._manifests: dict[tuple[str, str], Manifest] = {}
        self._lock = threading.Lock()  # manifests are read and written from worker threads

    def _fs(self, url: str) -> tuple[Any, str]:
        return filesystem_for(url, self.storage_options)

    def upload_dir(self, local_dir: str, remote_url: str) -> None:
        if not os.path.isdir(local_dir):  # never mirror a missing directory as "all gone"
            raise FileNotFoundError(f"Cannot upload {local_dir!r}: no such directory")
        fs, root = self._fs(remote_url)
        key = (os.path.abspath(local_dir), remote_url)
        with self._lock:
            manifest = self._manifests.setdefault(key, Manifest())
        current = dict(local_files(local_dir))
        changed, gone = manifest.changes(current)
        for start in range(0, len(changed), _BATCH):
            batch = [rel for rel in changed[start:start + _BATCH]
                     if os.path.exists(os.path.join(local_dir, rel))]  # vanished: skipped
            _put_files(fs, local_dir, root, batch)
            with self._lock:  # a retry after a failure sends only what is left
                manifest.uploaded.update({rel: current[rel] for rel in batch})
        if gone:
            _remove_files(fs, [_join(root, rel) for rel in gone])
            with self._lock:
                for rel in gone:
                    manifest.uploaded.pop(rel, None)

    def download_dir(self, remote_url: str, local_dir: str) -> None:
        fs, root = self._fs(remote_url)
        remote = [p for p in fs.find(root) if p.rstrip("/") != root.rstrip("/")]
        rels = [_relative(root, p) for p in remote]
        for rel in rels:
            os.makedirs(os.path.dirname(os.path.join(local_dir, rel)), exist_ok=True)
        if remote:
            fs.get(remote, [os.path.join(local_dir, rel) for rel in rels])
        self._record_downloaded(local_dir, remote_url, rels)

    def _record_downloaded(self, local_dir: str, remote_url: str, rels: list[str]) -> None:
        """What came down is what the remote holds: a later upload need not send it."""
        stats = {}
        for rel in rels:
            st = os.stat(os.path.join(local_dir, rel))
            stats[rel] = (st.st_size, st.st_mtime_ns)
        with self._lock:
            manifest = self._manifests.setdefault((os.path.abspath(local_dir), remote_url),
                                                  Manifest())
            manifest.uploaded.update(stats)

    def pending(self, local_dir: str, remote_url: str) -> list[str]:
        """Files of ``local_dir`` changed or new since the last upload to ``remote_url``."""
        with self._lock:
            manifest = self._manifests.get((os.path.abspath(local_dir), remote_url), Manifest())
            uploaded = dict(manifest.uploaded)
        return Manifest(uploaded).changes(dict(local_files(local_dir)))[0]

    def exists(self, remote_url: str) -> bool:
        fs, root = self._fs(remote_url)
        return bool(fs.exists(root))

    def delete(self, remote_url: str) -> None:
        fs, root = self._fs(remote_url)
        if fs.exists(root):
            fs.rm(root, recursive=True)
        with self._lock:
            for key in [k for k in self._manifests if k[1] == remote_url]:
                del self._manifests[key]


def _join(root: str, rel: str) -> str:
    return root.rstrip("/") + "/" + rel.replace(os.sep, "/")


def _relative(root: str, path: str) -> str:
    prefix = root.rstrip("/") + "/"
    rel = path[len(prefix):] if path.startswith(prefix) else os.path.basename(path)
    return rel.replace("/", os.sep)


def _remove_files(fs: Any, paths: list[str]) -> None:
    """Remove remote files; one gone already is fine (a durable trainable deletes the
    checkpoints it pruned itself, and local stores raise for a missing file)."""
    try:
        fs.rm(paths)
    except FileNotFoundError:
        for path in paths:
            try:
                fs.rm_file(path)
            except FileNotFoundError:
                pass


def _put_files(fs: Any, local_dir: str, root: str, rels: list[str]) -> None:
    if not rels:
        return
    targets = [_join(root, rel) for rel in rels]
    for parent in sorted({t.rsplit("/", 1)[0] for t in targets}):
        fs.makedirs(parent, exist_ok=True)  # a no-op on object stores, needed on file://
    fs.put([os.path.join(local_dir, rel) for rel in rels], targets)


# ---- commands and functions ----------------------------------------------------------------
def _fallback_fs(url: str) -> tuple[Any, str] | None:
    """fsspec for ``exists``/``delete`` when a command or function does the transfers."""
    try:
        return filesystem_for(url)
    except (ImportError, ValueError):
        return None


class _DelegatedChecks:
    """``exists`` and ``delete`` through fsspec when the URL's package is there.

    A command or a function only knows how to copy; when fsspec cannot reach the URL,
    ``exists`` answers True (the download then says whether anything was there) and
    ``delete`` raises.
    """

    def exists(self, remote_url: str) -> bool:
        found = _fallback_fs(remote_url)
        return True if found is None else bool(found[0].exists(found[1]))

    def delete(self, remote_url: str) -> None:
        found = _fallback_fs(remote_url)
        if found is None:
            raise SyncError(f"Cannot delete {remote_url!r}: no fsspec backend for it")
        fs, root = found
        if fs.exists(root):
            fs.rm(root, recursive=True)


@attrs.define
class CommandStorage(_DelegatedChecks):
    """A shell command template with ``{source}`` and ``{target}`` (e.g. ``aws s3 sync``).

    Uploads run it with source=the local directory, target=the URL; downloads with
    the two swapped. A non-zero exit raises :class:`SyncError` with the command and
    its stderr.
    """

    template: str

    def command(self, source: str, target: str) -> str:
        return self.template.format(source=shlex.quote(source), target=shlex.quote(target))

    def _run(self, source: str, target: str) -> None:
        cmd = self.command(source, target)
        done = subprocess.run(cmd, shell=True, capture_output=True, text=True)
        if done.returncode != 0:
            raise SyncError(f"Sync command failed (exit {done.returncode}): {cmd}\n"
                            f"{done.stderr.strip()}")

    def upload_dir(self, local_dir: str, remote_url: str) -> None:
        self._run(local_dir, remote_url)

    def download_dir(self, remote_url: str, local_dir: str) -> None:
        os.makedirs(local_dir, exist_ok=True)
        self._run(remote_url, local_dir)


@attrs.define
class FunctionStorage(_DelegatedChecks):
    """A function ``fn(source, target)``: uploads call it with (local dir, URL),
    downloads with (URL, local dir). Its exceptions propagate."""

    fn: Callable[[str, str], Any]

    def upload_dir(self, local_dir: str, remote_url: str) -> None:
        self.fn(local_dir, remote_url)

    def download_dir(self, remote_url: str, local_dir: str) -> None:
        os.makedirs(local_dir, exist_ok=True)
        self.fn(remote_url, local_dir)


# ---- uploads in a worker process --------------------------------------------------------------
class ProcessStorage:
    """An :class:`FsspecStorage` that works in a worker process of its own.

    Uploading to a network store costs CPU in Python (the client's request signing,
    checksums, HTTP; botocore parses its JSON service models when first used): in a
    thread of the driver that holds the GIL the event loop needs (measured: a 5 ms
    heartbeat's p99 lateness 129 ms during a 200 MB upload from a thread, 61 ms from a
    process, 13 ms idle). The process starts at the first call (spawned, so nothing of
    the driver's state is forked) and keeps the manifests; :meth:`close` ends it.
    Errors come back as :class:`SyncError` naming the original exception.
    """

    def __init__(self, storage_options: dict | None = None) -> None:
        self.storage_options = dict(storage_options or {})
        self._pool: Any = None
        self._lock = threading.Lock()

    def _call(self, method: str, *args: Any) -> Any:
        with self._lock:
            if self._pool is None:
                import concurrent.futures
                import multiprocessing

                self._pool = concurrent.futures.ProcessPoolExecutor(
                    1, mp_context=multiprocessing.get_context("spawn"))
            pool = self._pool
        return pool.submit(_call_in_worker, self.storage_options, method, args).result()

    def upload_dir(self, local_dir: str, remote_url: str) -> None:
        self._call("upload_dir", local_dir, remote_url)

    def download_dir(self, remote_url: str, local_dir: str) -> None:
        self._call("download_dir", remote_url, local_dir)

    def exists(self, remote_url: str) -> bool:
        return self._call("exists", remote_url)

    def delete(self, remote_url: str) -> None:
        self._call("delete", remote_url)

    def pending(self, local_dir: str, remote_url: str) -> list[str]:
        return self._call("pending", local_dir, remote_url)

    def close(self, kill: bool = False) -> None:
        """End the worker process (blocking; the next call starts a new one).

        ``kill``: do not wait for a transfer in flight (it is given up on).
        """
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is None:
            return
        if kill:  # (the executor has no public way to stop a running call)
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)


_worker_storages: dict[str, FsspecStorage] = {}  # in the worker process: manifests live here


def _call_in_worker(storage_options: dict, method: str, args: tuple) -> Any:
    key = repr(sorted(storage_options.items()))
    storage = _worker_storages.setdefault(key, FsspecStorage(storage_options))
    try:
        return getattr(storage, method)(*args)
    except Exception as exc:  # noqa: BLE001 - re-raised as one picklable type
        # (botocore's exceptions do not survive pickling back to the driver)
        raise SyncError(f"{type(exc).__name__}: {exc}") from None


def in_worker_process(storage: Storage, url: str) -> Storage:
    """``storage``, moved to a worker process when it talks to a network store.

    ``memory://`` (per process by nature) and local files stay in this process.
    """
    from fsspec.core import split_protocol

    protocol = split_protocol(url)[0] or "file"
    if not isinstance(storage, FsspecStorage) or protocol in ("memory", "file", "local"):
        return storage
    return ProcessStorage(storage.storage_options)

