"""Experiment state snapshots: ``experiment_state-<session>.json``, written atomically."""

from __future__ import annotations

import base64
import functools
import glob
import json
import math
import os
import pickle
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from typing import Any

import anyio
import attrs
import cloudpickle

from tune_async.trial import Trial
from tune_async.utils.util import LOOP_TURN_S, Pacer, atomic_write_text, json_dumps

STATE_PREFIX = "experiment_state-"


def state_path(experiment_dir: str, session_str: str) -> str:
    return os.path.join(experiment_dir, f"{STATE_PREFIX}{session_str}.json")


def newest_state_file(experiment_dir: str) -> str | None:
    """The newest ``experiment_state-*.json`` in ``experiment_dir`` (by name, as 1.x)."""
    pattern = os.path.join(glob.escape(experiment_dir), f"{STATE_PREFIX}*.json")
    files = sorted(glob.glob(pattern))
    return files[-1] if files else None


PICKLED_KEY = "__pickled__"


def _encode(value: Any) -> str:
    return base64.b64encode(_pickled(value)).decode("ascii")


def _pickled(value: Any) -> bytes:
    """cloudpickle's bytes, made by the C pickler where that gives the same thing: it
    takes half the time (a trial is pickled twice in its life), and differs from
    cloudpickle only for what is pickled by value there: anything of ``__main__`` or
    of a module registered for it, and what pickle cannot reach by name (it fails)."""
    if not cloudpickle.list_registry_pickle_by_value():
        try:
            data = pickle.dumps(value, protocol=cloudpickle.DEFAULT_PROTOCOL)
        except Exception:  # noqa: BLE001 - a lambda, a local class...: cloudpickle's job
            pass
        else:
            if b"__main__" not in data:
                return data
    return cloudpickle.dumps(value)


def _decode(text: str) -> Any:
    return cloudpickle.loads(base64.b64decode(text))


def trial_state(trial: Trial) -> dict[str, Any]:
    """One trial's entry: readable fields for analysis, plus the exact record for resume."""
    state = trial.public_state()
    state["config"] = trial.config
    state["last_result"] = trial.last_result
    state[PICKLED_KEY] = _encode(trial)
    return state


class StateSerializer:
    """Builds the state file's JSON text, re-encoding only trials that changed.

    A snapshot is O(trials) text, but a finished or waiting trial is encoded once:
    writing the state after every finished trial stays cheap with many trials.
    """

    def __init__(self) -> None:
        # A finished trial's text is kept compressed: with many trials it is most of what
        # the driver holds per trial. The writer thread compresses the texts of the
        # trials that finished since its last write together, as one chunk (zlib
        # releases the GIL on every call, and each release is a handoff with the loop's
        # thread: one per chunk, not one per trial), and inflates a chunk once per write.
        self._entries: dict[str, tuple[tuple, str | _Packed]] = {}
        self._to_compress: list[tuple[str, tuple]] = []
        self._lock = threading.Lock()  # the loop replaces entries the writer compresses

    def entry(self, trial: Trial) -> str:
        """The trial's entry as JSON text."""
        return inflate(self.stored_entry(trial))

    def stored_entry(self, trial: Trial) -> str | _Packed:
        """The entry as kept: text, or a place in a compressed chunk for a finished trial."""
        key = (trial.status, trial.results_recorded, trial.num_failures, trial.logdir,
               id(trial.checkpoint), trial.custom_trial_name)
        cached = self._entries.get(trial.trial_id)
        if cached is not None and cached[0] == key:
            return cached[1]
        stored = (key, json_dumps(trial_state(trial)))
        with self._lock:
            self._entries[trial.trial_id] = stored
        if trial.status.is_finished:
            self._to_compress.append((trial.trial_id, stored))
        return stored[1]

    def compress_finished(self) -> None:
        """Compress the texts of trials that finished since the last call (any thread)."""
        batch, self._to_compress = self._to_compress, []
        if not batch:
            return
        # Entries are single-line JSON (newlines inside strings are escaped): one chunk.
        chunk = _Chunk(zlib.compress("\n".join(stored[1] for _, stored in batch)
                                     .encode("utf-8"), 1))
        for index, (trial_id, stored) in enumerate(batch):
            packed = (stored[0], _Packed(chunk, index))
            with self._lock:
                if self._entries.get(trial_id) is stored:  # not re-encoded meanwhile
                    self._entries[trial_id] = packed

    def head(self, runner_data: dict[str, Any], start_time: float, searcher_state: Any = None,
             seq: int = 0, scheduler_state: Any = None) -> str:
        """The file's head (a JSON object); the trial entries are spliced in after it.

        Trials and the searcher's and scheduler's states travel in the same file, so
        one atomic rename keeps them consistent with each other.
        """
        now = time.time()
        return json_dumps({
            "seq": seq,
            "runner_data": runner_data,
            "searcher_state": None if searcher_state is None else _encode(searcher_state),
            "scheduler_state": None if scheduler_state is None else _encode(scheduler_state),
            "stats": {"start_time": start_time, "timestamp": now},
            "timestamp": now,
        })


JOURNAL_PREFIX = "experiment_journal-"


def _snapshot_parts(job: _Snapshot) -> Iterable[str]:
    """The snapshot file's text in parts: a large experiment's is never joined in memory
    (a few inflated chunks at a time: trials that finished together mostly sit together,
    a long-running one between them is the odd one out)."""
    yield job.head[:-1] + ', "checkpoints": [\n'
    texts_of = functools.lru_cache(maxsize=_INFLATED_CHUNKS)(_Chunk.texts)
    for i, entry in enumerate(job.entries):
        text = entry if isinstance(entry, str) else texts_of(entry.chunk)[entry.index]
        yield (",\n" if i else "") + text
    yield "\n]}"


_INFLATED_CHUNKS = 8


class _Chunk:
    """The entry texts of trials that finished together, compressed together."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def texts(self) -> list[str]:
        return zlib.decompress(self.data).decode("utf-8").split("\n")


@attrs.frozen
class _Packed:
    chunk: _Chunk
    index: int


def inflate(entry: str | _Packed) -> str:
    return entry if isinstance(entry, str) else entry.chunk.texts()[entry.index]


def journal_path(state_file: str) -> str:
    """The write-ahead journal of a state file's session (``experiment_journal-<s>.jsonl``)."""
    directory, name = os.path.split(state_file)
    session = name[len(STATE_PREFIX):-len(".json")]
    return os.path.join(directory, f"{JOURNAL_PREFIX}{session}.jsonl")


class Journal:
    """Write-ahead log between snapshots: one line per trial change that must survive.

    A finished trial or a new checkpoint is appended here at once (O(1)), instead of
    rewriting the whole state file (O(trials)); each snapshot starts a new journal.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._file: Any = None

    def append(self, lines: list[tuple[int, str]]) -> None:
        """Append ``(seq, entry text)`` lines, in order, in one write (each system call
        off the loop is a GIL handoff with the loop's thread)."""
        if not lines:
            return
        if self._file is None:
            self._file = open(self.path, "a")  # noqa: SIM115 - kept open between appends
        self._file.write("".join(f'{{"seq": {seq}, "entry": {text}}}\n' for seq, text in lines))
        self._file.flush()

    def reset(self) -> None:
        """Forget what the latest snapshot already holds."""
        self.close()
        with open(self.path, "w"):
            pass

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def load_state(path: str) -> dict[str, Any]:
    """Read a state file and replay its journal (pickled parts decoded)."""
    with open(path) as f:
        state = json.load(f)
    replay_journal(state, journal_path(path))
    for key in ("searcher_state", "scheduler_state"):
        if state.get(key):
            state[key] = _decode(state[key])
    return state


def replay_journal(state: dict[str, Any], path: str) -> None:
    """Apply journal entries newer than the snapshot; a torn last line is skipped."""
    if not os.path.exists(path):
        return
    entries = state.setdefault("checkpoints", [])
    index = {e.get("trial_id"): i for i, e in enumerate(entries) if isinstance(e, dict)}
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("seq", 0) <= state.get("seq", 0):
                continue
            entry = record["entry"]
            if entry["trial_id"] in index:
                entries[index[entry["trial_id"]]] = entry
            else:
                index[entry["trial_id"]] = len(entries)
                entries.append(entry)


def trials_from_state(state: dict[str, Any]) -> list[Trial]:
    """The exact Trial records saved in a state file, in their original order."""
    trials = []
    for entry in state.get("checkpoints", []):
        if isinstance(entry, dict) and PICKLED_KEY in entry:
            trials.append(_decode(entry[PICKLED_KEY]))
    return trials


def write_snapshot(path: str, text: str | Iterable[str]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write_text(path, text)


# ---- the experiment's persistence, written off the event loop ---------------------------


@attrs.frozen
class _Snapshot:
    head: str
    entries: list  # entry texts (or places in compressed chunks), joined off the loop
    seq: int


@attrs.frozen
class _JournalLine:
    seq: int
    entry: str


class ExperimentPersistence:
    """Snapshots and the write-ahead journal of one experiment session.

    The controller says what changed (:meth:`mark_dirty`, :meth:`must_survive`); the
    texts are built on the loop from a consistent view, and one writer task writes
    them, in order, in a worker thread: the loop never waits for the disk, and a
    journal line is never written before the snapshot it builds on.

    Args:
        experiment_dir: Where ``experiment_state-<session>.json`` goes.
        session_str: The session's timestamp (the file name's suffix).
        now: The controller's clock (debouncing).
        before_write: Called on the loop before a text is handed to the writer
            (flushes the loggers: the files must hold what the state says was recorded).
        flush_files: Called in the writer's thread before each write, and for
            :meth:`flush_files_soon`: flushes result files off the loop.
    """

    MIN_PERIOD_S = 2.0  # snapshots at most this often while running
    # Encoding yields to the loop this often: a trial whose entry changed costs ~0.1 ms
    # (JSON and pickle), so 1,000 running trials took one 50-100 ms stretch in chunks.
    YIELD_AFTER_S = LOOP_TURN_S
    COALESCE_S = 0.02  # the writer gathers jobs this long before one write (a crash loses no more)
    # Jobs queued for the writer beyond which the consumer waits until the writer takes
    # them. Under a virtual clock the loop never idles, so the writer's thread gets the
    # GIL back only every switch interval, between two system calls: unbounded,
    # everything was written at the end, held in memory (and traversed by every full
    # collection) until then. In real time the loop idles and a lagging writer is a slow
    # disk, whose kernel time overlaps the loop's work: a bound of 500 cost a
    # 10,000-trial Ray run about a tenth of its wall time in waits. So the bound there is
    # higher, out of reach of a first step's burst (~530 jobs) and of a disk that keeps
    # up; it only caps the memory a disk that does not keep up would hold (each lagging
    # job ~30 KB with what it keeps alive: with file creation 4 ms slower, 10,000 trials
    # peaked at 431 MiB unbounded, 319 with this bound, 301 with 500, in about the
    # same wall time).
    MAX_BACKLOG = 500
    MAX_BACKLOG_REAL_TIME = 1000

    def __init__(self, experiment_dir: str, session_str: str, now: Callable[[], float],
                 before_write: Callable[[], None],
                 flush_files: Callable[[], None] = lambda: None,
                 virtual_clock: bool = False) -> None:
        self.state_file = state_path(experiment_dir, session_str)
        self._journal = Journal(journal_path(self.state_file))
        self._serializer = StateSerializer()
        self._now = now
        self._before_write = before_write
        self._flush_files = flush_files
        self._seq = 0
        self._in_snapshot: set[str] = set()
        self._to_persist: dict[str, Trial] = {}
        self._dirty = True
        self._written_at = -math.inf
        self._cost = 0.0
        self._jobs: list[_Snapshot | _JournalLine | None] = []  # None: only flush files
        self._wakeup: anyio.Event | None = None
        self._write_lock: anyio.Lock | None = None
        self._taken: anyio.Event | None = None  # set when the writer takes the queue
        self._max_backlog = self.MAX_BACKLOG if virtual_clock else self.MAX_BACKLOG_REAL_TIME

    # ---- what changed ----------------------------------------------------------------
    def mark_dirty(self) -> None:
        self._dirty = True

    def must_survive(self, trial: Trial) -> None:
        """Make ``trial``'s record durable at the end of this step (journaled)."""
        self._to_persist[trial.trial_id] = trial

    def snapshot_due(self) -> bool:
        period = max(self.MIN_PERIOD_S, 20 * self._cost)
        return self._dirty and self._now() - self._written_at >= period

    # ---- building texts (on the loop) ---------------------------------------------------
    async def snapshot(self, trials: list[Trial], runner_data: dict, start_time: float,
                       searcher_state: Any = None, scheduler_state: Any = None,
                       pacer: Pacer | None = None) -> None:
        """Queue a snapshot of every trial and the searcher's and scheduler's states.

        Built in chunks with a yield between them: only the controller's consumer
        changes trials, and it is the one waiting here, so the view stays consistent.
        ``pacer``: the caller's, when this is part of a longer piece of work on the loop.
        """
        began = time.perf_counter()
        self._before_write()
        self._seq += 1
        head = self._serializer.head(runner_data, start_time, searcher_state, self._seq,
                                     scheduler_state)
        entries = []
        stored_entry, pacer = self._serializer.stored_entry, pacer or Pacer(self.YIELD_AFTER_S)
        for trial in trials:
            entries.append(stored_entry(trial))
            await pacer.now_and_then()
        self._in_snapshot = {t.trial_id for t in trials}
        self._to_persist.clear()
        self._dirty = False
        self._written_at = self._now()
        self._cost = time.perf_counter() - began
        self._submit(_Snapshot(head, entries, self._seq))

    async def journal_survivors(self, pacer: Pacer | None = None) -> None:
        """Journal the trials that must survive a crash (new ones too: O(1) each).

        With a yield once a chunk has taken a while: the first step of a run admits up
        to 1,000 new trials (``max_pending_trials``), 20-40 ms of encoding. Those not
        journaled when a cancel lands in a yield stay queued for the cleanup's call.
        ``pacer``: the caller's (the consumer's step), so that the step's own work
        before this counts towards the loop's turn: with a pacer of its own, a step
        that admitted trials for 1 ms went on journaling for another."""
        if not self._to_persist:
            return
        trials = list(self._to_persist.values())
        self._to_persist = {}
        self._before_write()
        journaled = 0
        pacer = pacer or Pacer(self.YIELD_AFTER_S)
        try:
            for trial in trials:
                self._seq += 1
                self._submit(_JournalLine(self._seq, self._serializer.entry(trial)))
                journaled += 1
                await pacer.now_and_then()
        finally:
            for trial in trials[journaled:]:
                self._to_persist.setdefault(trial.trial_id, trial)

    def flush_files_soon(self) -> None:
        """Have the writer flush the result files (nothing else to write)."""
        self._submit(None)

    @property
    def backlogged(self) -> bool:
        return len(self._jobs) > self._max_backlog

    async def wait_for_writer(self) -> None:
        """Wait until the writer has taken the queue (back-pressure, see MAX_BACKLOG).

        Not until it is written: the writer writes it while the consumer goes on."""
        while self.backlogged:
            if self._taken is None:
                self._taken = anyio.Event()
            await self._taken.wait()

    # ---- writing (in a worker thread, in order) ------------------------------------------
    def _submit(self, job: _Snapshot | _JournalLine | None) -> None:
        self._jobs.append(job)
        if self._wakeup is not None:
            self._wakeup.set()

    async def writer(self) -> None:
        """The writer task: runs for the whole experiment, in the controller's task group."""
        while True:
            self._wakeup = anyio.Event()
            if not self._jobs:
                await self._wakeup.wait()
            # What the next steps queue meanwhile goes in the same thread hop: one per
            # window, not one per finished trial (each hop costs the loop ~0.1-0.3 ms).
            if self._taken is None:  # (the consumer waiting for it: no need to gather)
                await anyio.sleep(self.COALESCE_S)
            await self.flush()

    async def flush(self, final: bool = False) -> None:
        """Write everything queued so far (``final``: at the end, files flushed always)."""
        if self._write_lock is None:
            self._write_lock = anyio.Lock()
        async with self._write_lock:
            jobs, self._jobs = self._jobs, []
            if self._taken is not None:
                self._taken.set()
                self._taken = None
            if jobs or final:
                # Shielded: once taken from the queue, the jobs must reach the disk even
                # if the writer task is cancelled right now (the experiment ending).
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self._write, jobs)

    def _write(self, jobs: list[_Snapshot | _JournalLine | None]) -> None:
        self._flush_files()  # before the state: files hold what it says was recorded
        lines: list[tuple[int, str]] = []  # journal lines, written together
        for job in jobs:
            if job is None:
                continue
            if isinstance(job, _Snapshot):
                self._journal.append(lines)  # (they reach the disk before the snapshot)
                lines = []
                began = time.perf_counter()
                write_snapshot(self.state_file, _snapshot_parts(job))
                self._journal.reset()
                self._cost = max(self._cost, time.perf_counter() - began)
            else:
                lines.append((job.seq, job.entry))
        self._journal.append(lines)
        self._serializer.compress_finished()

    def close(self) -> None:
        self._journal.close()
