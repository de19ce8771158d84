"""Result loggers: the ``LoggerCallback`` family and the legacy per-trial ``Logger`` classes.

Files (same layout as ray.tune 1.x, all inside ``trial.logdir``):

- ``params.json`` / ``params.pkl``: the trial's config (JSON sorted and
  indented; cloudpickle), written when the trial starts.
- ``result.json``: one JSON line per result (``config`` included).
- ``progress.csv``: the result flattened with ``/``, ``config`` dropped;
  the columns are fixed by the first row ever written (an existing file's
  header is reused, so a restarted trial appends rows under the same header).
- ``events.out.tfevents.*``: TensorBoard scalars under ``ray/tune/<key>``.

Files are opened once per trial and kept open; writes are buffered and
flushed at most about once per second, and when the trial or the experiment
ends. A restarted trial (same logdir) appends to its files.
"""

from __future__ import annotations

import collections
import csv
import functools
import io
import logging
import math
import operator
import os
import threading
import time
from collections.abc import Callable, Iterable
from numbers import Number
from typing import TYPE_CHECKING, Any

import cloudpickle
import orjson

from tune_async.callback import Callback
from tune_async.result import (
    EXPR_PARAM_FILE,
    EXPR_PARAM_PICKLE_FILE,
    EXPR_PROGRESS_FILE,
    EXPR_RESULT_FILE,
    TIMESTEPS_TOTAL,
    TRAINING_ITERATION,
)
from tune_async.utils.util import (
    flatten_dict,
    in_made_dir,
    json_dumps,
    json_line,
    write_all,
    write_file,
)

if TYPE_CHECKING:
    from tune_async.trial import Trial

logger = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 1.0
_TBX_HINT = (
    "TensorBoard logging requires tensorboardX: `pip install tensorboardX`, "
    "or leave TBXLoggerCallback out of `callbacks`."
)


# ---------------------------------------------------------------------------
# Per-trial file writers, shared by the callbacks and the legacy loggers.
# ---------------------------------------------------------------------------


def _ensure_dir(logdir: str) -> None:
    # A stat where the directory exists (the usual case): cheaper than a failing mkdir.
    if not os.path.isdir(logdir):
        os.makedirs(logdir, exist_ok=True)


_SCALARS = (str, int, float, bool, type(None))


def params_text(config: dict) -> str:
    """``params.json``'s text: ``json.dumps(config, indent=2, sort_keys=True)``.

    Indented output is made by json's pure-Python encoder (~25 us for a few keys, once
    per trial start); the usual flat config of plain values is laid out here around
    the C encoder's values instead (~2 us), to the same text."""
    if type(config) is dict and all(type(key) is str and type(value) in _SCALARS
                                    for key, value in config.items()):
        if not config:
            return "{}"
        lines = (f"  {json_dumps(key)}: {json_dumps(config[key])}" for key in sorted(config))
        return "{\n" + ",\n".join(lines) + "\n}"
    return json_dumps(config, indent=2, sort_keys=True)


def write_params(logdir: str, config: dict) -> None:
    """Write ``params.json`` (sorted, indented, JSON-safe) and ``params.pkl`` into ``logdir``
    (made if missing)."""
    text = params_text(config)
    try:
        data: bytes | None = cloudpickle.dumps(config)
    except Exception as exc:  # an unpicklable config must not fail the trial
        logger.warning("Could not pickle the config of %s: %s", logdir, exc)
        data = None
    # In place, as 1.x writes them: once per trial start, before anything reads them.
    in_made_dir(logdir, write_file, os.path.join(logdir, EXPR_PARAM_FILE),
                text.encode("utf-8"))
    if data is not None:
        write_file(os.path.join(logdir, EXPR_PARAM_PICKLE_FILE), data)


_APPEND_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)


def _create_or_append(path: str) -> tuple[int, bool]:
    """A descriptor appending to ``path`` (its directory made if missing), and whether
    this call created the file: one system call for a new file (the usual case; a
    Python file object costs five more), two for an existing one."""
    try:
        return in_made_dir(os.path.dirname(path), os.open, path,
                           _APPEND_FLAGS | os.O_EXCL, 0o666), True
    except FileExistsError:
        return os.open(path, _APPEND_FLAGS, 0o666), False


class _AppendOnlyFile:
    """A file appended to from one thread and flushed from any thread.

    ``write`` only queues the bytes (no lock, no I/O: the event loop never waits on
    the disk); ``flush`` writes what is queued, in order, under a lock so that a flush
    from the controller's writer thread and a close on the loop never interleave.
    """

    def __init__(self, path: str, deferred: bool = False,
                 prelude: Callable[[], None] | None = None) -> None:
        self._path = path
        self._prelude = prelude  # run once before the first write (e.g. params files)
        self._fd: int | None = None  # None: not opened yet; _CLOSED: closed
        self.created = False  # the file did not exist before it was opened here
        self._chunks: collections.deque[bytes] = collections.deque()
        self._lock = threading.Lock()
        if not deferred:  # created now, as 1.x's loggers do; else by the first flush
            self._open()

    def write(self, data: bytes) -> None:
        self._chunks.append(data)

    def flush(self) -> None:
        with self._lock:
            self._open()
            self._drain()

    def close(self) -> None:
        with self._lock:
            self._open()
            self._drain()
            if self._fd != _CLOSED:
                fd, self._fd = self._fd, _CLOSED
                os.close(fd)

    def ensure_open(self) -> None:
        with self._lock:
            self._open()

    def _open(self) -> None:
        if self._fd is None:
            prelude, self._prelude = self._prelude, None
            if prelude is not None:
                prelude()
            self._fd, self.created = _create_or_append(self._path)

    def _drain(self) -> None:
        if not self._chunks:
            return
        if self._fd == _CLOSED:
            raise ValueError(f"{self._path} is closed")
        parts = []
        while self._chunks:
            parts.append(self._chunks.popleft())
        write_all(self._fd, b"".join(parts))


_CLOSED = -1


class _JsonWriter:
    """Appends one JSON line per result to ``result.json`` (I/O at ``flush``)."""

    def __init__(self, logdir: str, deferred: bool = False,
                 prelude: Callable[[], None] | None = None) -> None:
        if not deferred:
            _ensure_dir(logdir)
        self._file = _AppendOnlyFile(os.path.join(logdir, EXPR_RESULT_FILE), deferred, prelude)

    def write(self, result: dict) -> None:
        self._file.write(json_line(result))

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _existing_header(path: str) -> list[str] | None:
    """The column names of an existing non-empty CSV file, else None."""
    try:
        with open(path, newline="") as f:
            first = f.readline()
    except FileNotFoundError:
        return None
    if not first.strip():
        return None
    return next(csv.reader([first]))


def _plain_types() -> frozenset[type]:
    types = {int, float, str, bool, type(None), list}
    try:
        import numpy as np

        types |= {np.float64, np.float32, np.int64, np.int32, np.bool_, np.ndarray}
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    return frozenset(types)


_PLAIN_TYPES = _plain_types()  # result values that are never dicts (no isinstance needed)


def _progress_row(result: dict) -> dict:
    row = {k: v for k, v in result.items() if k != "config"}
    # C-speed scan: this runs once per result; only a value of another type (a dict,
    # a dict subclass, ...) pays for the isinstance checks.
    if not _PLAIN_TYPES.issuperset(map(type, row.values())) and any(
        isinstance(v, dict) for v in row.values()
    ):
        row = _flatten_like_1x(row)
    return row


def _flatten_like_1x(row: dict) -> dict:
    """1.x's ``flatten_dict`` as ``progress.csv`` shows it: a nested dict (of any dict
    type) becomes ``a/b`` keys placed after the keys of its level, one level at a time
    (``{"a": {"x": 1}, "b": 2}`` -> ``b, a/x``); an empty one leaves no column."""
    while True:
        nested = [key for key, value in row.items() if isinstance(value, dict)]
        if not nested:
            return row
        added = {}
        for key in nested:
            for subkey, value in row.pop(key).items():
                added[f"{key}/{subkey}"] = value
        row.update(added)


class _CsvWriter:
    """Appends flattened results to ``progress.csv``; columns fixed by the first row.

    Deferred: an existing file's header (a restarted trial) is looked for by the first
    flush, off the loop. Rows reported before that are formatted as they come under
    the columns a new file would get (the first row's keys); the flush writes those
    lines, or, if the file already had another header, formats the rows again under it.
    """

    def __init__(self, logdir: str, deferred: bool = False) -> None:
        if not deferred:
            _ensure_dir(logdir)
        self._path = os.path.join(logdir, EXPR_PROGRESS_FILE)
        self._file = _AppendOnlyFile(self._path, deferred)
        self._fields = None if deferred else self._header_before_open()
        self._early_rows: list[dict] | None = [] if deferred else None  # None: header known
        # Deferred: the first row's keys, and the header and rows formatted under them.
        self._guess: list[str] | None = None
        self._early_lines: list[bytes] = []
        self._header_lock = threading.Lock()
        self._pick: Callable[[dict], tuple] | None = None  # the columns' values, once known
        self._line = io.StringIO()
        self._writer = csv.writer(self._line)

    def write(self, result: dict) -> None:
        if self._pick is not None:
            # The usual row: every column a plain top-level value of the result (no
            # nested dict to flatten), taken in one C call rather than dict by dict.
            try:
                values = self._pick(result)
            except KeyError:  # a column missing from this result: the general path
                pass
            else:
                kinds = set(map(type, values))
                if kinds <= _PLAIN_TYPES:
                    self._file.write(self._line_of(values, kinds))
                    return
        row = _progress_row(result)
        if self._early_rows is not None:
            with self._header_lock:
                if self._early_rows is not None:  # (the writer's thread may just have read it)
                    self._early_rows.append(row)
                    self._early_lines.append(self._guessed_line(row))
                    return
        self._write_row(self._writer, self._line, row)

    def _line_of(self, values: list | tuple, kinds: set[type] | None = None,
                 writer: Any = None, line: io.StringIO | None = None) -> bytes:
        if (kinds or set(map(type, values))) <= _JSON_SCALARS:
            fast = _csv_line_via_json(values)
            if fast is not None:
                return fast
        return _csv_line(writer or self._writer, line or self._line, values)

    def _guessed_line(self, row: dict) -> bytes:
        if self._guess is None:
            self._guess = list(row)
            self._early_lines.append(_csv_line(self._writer, self._line, self._guess))
        return self._line_of([row.get(k, "") for k in self._guess])

    def _write_row(self, writer: Any, line: io.StringIO, row: dict) -> None:
        if self._fields is None:  # the first row's keys are the columns
            self._fields = list(row)
            self._file.write(_csv_line(writer, line, self._fields))
        self._file.write(self._line_of([row.get(k, "") for k in self._fields],
                                       writer=writer, line=line))
        if self._pick is None and self._early_rows is None and len(self._fields) > 1:
            self._pick = operator.itemgetter(*self._fields)  # (one field would not give a tuple)

    def _settle_header(self) -> None:
        """(Deferred, first flush, writer's thread) Take the existing file's header, if
        any, and write the rows that waited for it, in order."""
        if self._early_rows is None:
            return
        self._file.ensure_open()
        fields = self._header_before_open()  # outside the lock: the loop may wait on it
        with self._header_lock:
            if self._early_rows is None:
                return  # settled meanwhile by a close on another thread
            if self._guess is not None and fields in (None, self._guess):
                # The lines formatted on the loop stand (a header only for a new file).
                self._fields = self._guess
                for data in self._early_lines[0 if fields is None else 1:]:
                    self._file.write(data)
            else:  # no rows yet, or a restarted trial's file with other columns
                self._fields = fields
                line = io.StringIO()  # (the loop's formatter is the loop's own)
                writer = csv.writer(line)
                for row in self._early_rows:
                    self._write_row(writer, line, row)
            self._early_rows = None
            self._early_lines = []

    def _header_before_open(self) -> list[str] | None:
        """The header of the file as it was before it was opened here (a restarted
        trial's; a file this writer created has none to read)."""
        return None if self._file.created else _existing_header(self._path)

    def flush(self) -> None:
        self._settle_header()
        self._file.flush()

    def close(self) -> None:
        self._settle_header()
        self._file.close()


_JSON_SCALARS = frozenset({str, int, float, bool, type(None)})


def _csv_line_via_json(values: tuple) -> bytes | None:
    """The CSV line of str/int/float/bool/None values, made from orjson's JSON array of
    them (several times faster than the csv module, most of whose time goes to float
    formatting); None when that would differ from the csv module's line.

    It differs in no cell when no string needed a JSON escape (no backslash: no quote,
    control character or line break, which CSV would quote), none holds a comma (one
    comma per separator), and no float was NaN or infinite (JSON null, as None is: as
    many nulls as Nones). Floats take their shortest round-trip form either way;
    between 1e-5 and 1e-4 it reads ``0.00001`` rather than ``1e-05``.
    """
    try:
        text = orjson.dumps(values)
    except TypeError:  # an int beyond 64 bits
        return None
    if (b"\\" in text or text.count(b",") != len(values) - 1
            or text.count(b"null") != values.count(None)):
        return None
    # Each token sits between commas: a replacement pass takes every other one of a
    # run of equal tokens, the second the rest. Strings are still quoted here, so a
    # string "null" is not a null token.
    row = b"," + text[1:-1] + b","
    for token, cell in _JSON_TOKEN_CELLS:
        if token in row:
            row = row.replace(token, cell).replace(token, cell)
    return row[1:-1].replace(b'"', b"") + b"\r\n"


_JSON_TOKEN_CELLS = ((b",null,", b",,"), (b",false,", b",False,"), (b",true,", b",True,"))


def _csv_line(writer: Any, line: io.StringIO, values: list) -> bytes:
    """One CSV line as bytes (``line`` is the writer's buffer, emptied again)."""
    writer.writerow(values)
    text = line.getvalue()
    line.seek(0)
    line.truncate()
    return text.encode("utf-8")


def _import_tbx() -> Any:
    try:
        from tensorboardX import SummaryWriter
    except ImportError as exc:
        raise ImportError(_TBX_HINT) from exc
    return SummaryWriter


_HPARAM_TYPES = (str, bool, int, float, type(None))


def _is_scalar(value: Any) -> bool:
    return isinstance(value, Number) and not isinstance(value, (bool, complex))


class _TbxWriter:
    """Writes numeric result values as TensorBoard scalars; hparams when closed."""

    def __init__(self, logdir: str, params: dict | None = None) -> None:
        summary_writer = _import_tbx()
        _ensure_dir(logdir)
        self._writer = summary_writer(logdir, flush_secs=30)
        self._params = params or {}
        self._last_scalars: dict[str, float] = {}

    def write(self, result: dict) -> None:
        step = result.get(TIMESTEPS_TOTAL) or result.get(TRAINING_ITERATION) or 0
        values = {k: v for k, v in result.items() if k not in ("config", "pbt_config")}
        scalars = {}
        for key, value in flatten_dict(values, delimiter="/").items():
            tag = f"ray/tune/{key}"
            if _is_scalar(value):
                scalars[tag] = value
                self._writer.add_scalar(tag, value, global_step=step)
            elif isinstance(value, list | tuple) and value and all(map(_is_scalar, value)):
                self._try_histogram(tag, value, step)
        self._last_scalars = scalars

    def _try_histogram(self, tag: str, value: Any, step: int) -> None:
        try:
            self._writer.add_histogram(tag, value, global_step=step)
        except Exception:  # a histogram is a nicety; never fail the trial for it
            logger.debug("Could not log %s as a histogram", tag, exc_info=True)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._log_hparams()
        self._writer.close()

    def _log_hparams(self) -> None:
        params = {
            k: v for k, v in flatten_dict(self._params).items() if isinstance(v, _HPARAM_TYPES)
        }
        if not params or not self._last_scalars:
            return
        try:
            from tensorboardX.summary import hparams

            for summary in hparams(hparam_dict=params, metric_dict=self._last_scalars):
                self._writer.file_writer.add_summary(summary)
        except Exception:
            logger.debug("Could not log hparams", exc_info=True)


# ---------------------------------------------------------------------------
# LoggerCallback and the built-in logger callbacks.
# ---------------------------------------------------------------------------


class LoggerCallback(Callback):
    """Base class for experiment-level logger callbacks.

    Maps the callback hooks to ``log_trial_*`` methods; override those. They
    may be plain methods or ``async def``.
    """

    def log_trial_start(self, trial: Trial) -> Any:
        """Handle logging when a trial starts (or restarts after a failure)."""

    def log_trial_restore(self, trial: Trial) -> Any:
        """Handle logging when a trial restores from a checkpoint."""

    def log_trial_save(self, trial: Trial) -> Any:
        """Handle logging when a trial saves a checkpoint."""

    def log_trial_result(self, iteration: int, trial: Trial, result: dict) -> Any:
        """Handle logging when a trial reports a result."""

    def log_trial_end(self, trial: Trial, failed: bool = False) -> Any:
        """Handle logging when a trial ends (``failed=True`` when it errored)."""

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> Any:
        return self.log_trial_start(trial)

    def on_trial_restore(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> Any:
        return self.log_trial_restore(trial)

    def on_trial_save(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> Any:
        return self.log_trial_save(trial)

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any
    ) -> Any:
        return self.log_trial_result(iteration, trial, result)

    def on_trial_complete(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> Any:
        return self.log_trial_end(trial, failed=False)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> Any:
        return self.log_trial_end(trial, failed=True)


class _FileLoggerCallback(LoggerCallback):
    """Keeps one open writer per trial; flushes dirty writers at most once per interval."""

    _trial_dir_later_ok = True  # makes the directory itself where it writes (trial_dirs)

    def __init__(
        self,
        *,
        flush_interval_s: float = FLUSH_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._writers: dict[str, Any] = {}
        self._dirty: set[Any] = set()
        self._clock = clock
        self._flush_interval_s = flush_interval_s
        self._next_flush = clock() + flush_interval_s
        # With defer_flushing: files are created, flushed and closed by the caller's
        # worker thread; writers of ended trials wait here for it.
        self._deferred = False
        self._closing: collections.deque[Any] = collections.deque()

    def _open(self, trial: Trial) -> Any:
        raise NotImplementedError

    def _start(self, trial: Trial) -> Any:
        self._close(trial, now=True)  # a restart appends to the same files: in order
        if not trial.logdir:  # no directory yet: nothing to log into
            return None
        writer = self._writers[trial.trial_id] = self._open(trial)
        return writer

    def _close(self, trial: Trial, now: bool = False) -> None:
        writer = self._writers.pop(trial.trial_id, None)
        if writer is not None:
            self._dirty.discard(writer)
            if self._deferred and not now:
                self._closing.append(writer)
            else:
                writer.close()

    def log_trial_start(self, trial: Trial) -> None:
        self._start(trial)

    def log_trial_result(self, iteration: int, trial: Trial, result: dict) -> None:
        writer = self._writers.get(trial.trial_id) or self._start(trial)
        if writer is None:
            return
        writer.write(result)
        self._dirty.add(writer)
        now = self._clock()
        if now >= self._next_flush:
            self.flush()
            self._next_flush = now + self._flush_interval_s

    def log_trial_end(self, trial: Trial, failed: bool = False) -> None:
        self._close(trial)

    def flush(self) -> None:
        """Flush every writer that has unflushed results."""
        for writer in self._dirty:
            writer.flush()
        self._dirty.clear()

    def defer_flushing(self) -> _DeferredFlush:
        """Stop flushing on the caller's thread; return a flush for a worker thread.

        The controller uses it so the disk I/O of result files never runs on the
        event loop: it calls the returned object from its writer thread (before
        every state write, and periodically). It flushes every open writer; one
        closed meanwhile on the loop (its trial ended) was flushed by its close.
        """
        self._flush_interval_s = self._next_flush = math.inf
        self._deferred = True
        return _DeferredFlush(self)

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        self._dirty.clear()
        for writer in self._writers.values():
            if self._deferred:
                self._closing.append(writer)
            else:
                writer.close()
        self._writers.clear()


class _DeferredFlush:
    """A file logger's flush for the controller's writer thread (``defer_flushing``).

    Calling it flushes what is open and closes what ended. :meth:`prepare` splits that
    in two: it takes the writers open now, the flush it returns writes only those. The
    controller takes them before it makes the trial directories queued so far, so
    that every file it writes has its directory made first (a trial started in
    between waits for the next round, rather than have its directory made twice).
    """

    def __init__(self, logger: _FileLoggerCallback) -> None:
        self._logger = logger

    def __call__(self) -> None:
        self.prepare()()

    def prepare(self) -> Callable[[], None]:
        closing = self._logger._closing
        # Ended trials' writers (their last results, then close): those queued so far
        # only, so that trials ending faster than this closes them never keep the
        # writer's thread from the state and journal it writes next.
        ended = len(closing)
        open_now = list(self._logger._writers.values())

        def flush() -> None:
            for _ in range(ended):
                closing.popleft().close()
            for writer in open_now:
                try:
                    writer.flush()
                except ValueError:  # closed on the loop meanwhile (its close flushed it)
                    pass

        return flush


class JsonLoggerCallback(_FileLoggerCallback):
    """Logs trial params to ``params.json``/``params.pkl`` and results to ``result.json``.

    Args:
        flush_interval_s: Flush buffered results at most this often (default 1 s);
            files are always flushed when the trial or the experiment ends.
        clock: Monotonic clock used for the flush interval (for tests).
    """

    def _open(self, trial: Trial) -> _JsonWriter:
        if self._deferred:  # the params files are written with the first flush, off the loop
            params = functools.partial(write_params, trial.logdir, trial.config)
            return _JsonWriter(trial.logdir, deferred=True, prelude=params)
        write_params(trial.logdir, trial.config)
        return _JsonWriter(trial.logdir)


class CSVLoggerCallback(_FileLoggerCallback):
    """Logs results to ``progress.csv`` (flattened with ``/``, ``config`` dropped).

    The columns are fixed by the first result; keys that appear later are not
    written. Appending to an existing file keeps its header.

    Args:
        flush_interval_s: Flush buffered rows at most this often (default 1 s).
        clock: Monotonic clock used for the flush interval (for tests).
    """

    def _open(self, trial: Trial) -> _CsvWriter:
        return _CsvWriter(trial.logdir, deferred=self._deferred)


class TBXLoggerCallback(_FileLoggerCallback):
    """Logs results to TensorBoard event files via tensorboardX.

    Numeric values become scalars under ``ray/tune/<key>`` at step
    ``timesteps_total`` (or ``training_iteration``); lists of numbers become
    histograms; the trial's hyperparameters are written as hparams when it ends.

    Raises:
        ImportError: if tensorboardX is not installed (with an install hint).
    """

    def __init__(self, **kwargs: Any) -> None:
        _import_tbx()
        super().__init__(**kwargs)

    def _open(self, trial: Trial) -> _TbxWriter:
        return _TbxWriter(trial.logdir, trial.evaluated_params or trial.config)


# ---------------------------------------------------------------------------
# Legacy per-trial Logger classes (``loggers=[...]`` in 1.x) and their adapter.
# ---------------------------------------------------------------------------


class Logger:
    """Legacy per-trial logging interface (one instance per trial).

    Args:
        config: The trial's config.
        logdir: Directory for all logger output.
        trial: The trial being logged (optional).
    """

    def __init__(self, config: dict, logdir: str, trial: Trial | None = None) -> None:
        self.config = config
        self.logdir = logdir
        self.trial = trial
        self._init()

    def _init(self) -> None:
        pass

    def on_result(self, result: dict) -> None:
        """Given a result, appends it to the existing log."""
        raise NotImplementedError

    def update_config(self, config: dict) -> None:
        """Updates the config for the logger."""

    def close(self) -> None:
        """Releases all resources used by this logger."""

    def flush(self) -> None:
        """Flushes all disk writes to storage."""


class NoopLogger(Logger):
    """A logger that does nothing."""

    def on_result(self, result: dict) -> None:
        pass


class _WriterLogger(Logger):
    """A legacy logger backed by one per-trial writer, flushed about once per second."""

    def _make_writer(self) -> Any:
        raise NotImplementedError

    def _init(self) -> None:
        self._writer = self._make_writer()
        self._next_flush = time.monotonic() + FLUSH_INTERVAL_S

    def on_result(self, result: dict) -> None:
        self._writer.write(result)
        now = time.monotonic()
        if now >= self._next_flush:
            self._writer.flush()
            self._next_flush = now + FLUSH_INTERVAL_S

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class JsonLogger(_WriterLogger):
    """Logs the config to ``params.json``/``params.pkl`` and results to ``result.json``."""

    def _make_writer(self) -> _JsonWriter:
        self.update_config(self.config)
        return _JsonWriter(self.logdir)

    def update_config(self, config: dict) -> None:
        self.config = config
        write_params(self.logdir, config)


class CSVLogger(_WriterLogger):
    """Logs results to ``progress.csv`` (flattened, ``config`` dropped)."""

    def _make_writer(self) -> _CsvWriter:
        return _CsvWriter(self.logdir)


class TBXLogger(_WriterLogger):
    """Logs results to TensorBoard via tensorboardX (raises ImportError without it)."""

    def _make_writer(self) -> _TbxWriter:
        params = self.trial.evaluated_params if self.trial is not None else self.config
        return _TbxWriter(self.logdir, params)


DEFAULT_LOGGERS: tuple[type[Logger], ...] = (JsonLogger, CSVLogger)
"""The legacy loggers UnifiedLogger uses by default (TBX is opt-in, unlike 1.x)."""


class UnifiedLogger(Logger):
    """Forwards to several legacy loggers at once.

    Args:
        config: The trial's config.
        logdir: Directory for all logger output.
        trial: The trial being logged (optional).
        loggers: Logger classes to use (default ``DEFAULT_LOGGERS``).
    """

    def __init__(
        self,
        config: dict,
        logdir: str,
        trial: Trial | None = None,
        loggers: Iterable[type[Logger]] | None = None,
    ) -> None:
        self._logger_classes = tuple(DEFAULT_LOGGERS if loggers is None else loggers)
        super().__init__(config, logdir, trial)

    def _init(self) -> None:
        self._loggers = [cls(self.config, self.logdir, self.trial) for cls in self._logger_classes]

    def on_result(self, result: dict) -> None:
        for log in self._loggers:
            log.on_result(result)

    def update_config(self, config: dict) -> None:
        for log in self._loggers:
            log.update_config(config)

    def close(self) -> None:
        for log in self._loggers:
            log.close()

    def flush(self) -> None:
        for log in self._loggers:
            log.flush()


class LegacyLoggerCallback(LoggerCallback):
    """Runs legacy ``Logger`` classes as a logger callback (one set of loggers per trial).

    Args:
        logger_classes: Logger subclasses to instantiate for each trial.
    """

    def __init__(self, logger_classes: Iterable[type[Logger]]) -> None:
        self.logger_classes = list(logger_classes)
        for cls in self.logger_classes:
            if not (isinstance(cls, type) and issubclass(cls, Logger)):
                raise TypeError(f"logger_classes must be Logger subclasses, got {cls!r}")
        self._trial_loggers: dict[str, list[Logger]] = {}

    def _loggers_for(self, trial: Trial) -> list[Logger]:
        loggers = self._trial_loggers.get(trial.trial_id)
        if loggers is None:
            loggers = [cls(trial.config, trial.logdir, trial) for cls in self.logger_classes]
            self._trial_loggers[trial.trial_id] = loggers
        return loggers

    def log_trial_start(self, trial: Trial) -> None:
        if trial.trial_id in self._trial_loggers:
            for log in self._trial_loggers[trial.trial_id]:
                log.update_config(trial.config)
        elif trial.logdir:
            self._loggers_for(trial)

    def log_trial_result(self, iteration: int, trial: Trial, result: dict) -> None:
        if not trial.logdir:
            return
        for log in self._loggers_for(trial):
            log.on_result(result)

    def log_trial_end(self, trial: Trial, failed: bool = False) -> None:
        for log in self._trial_loggers.pop(trial.trial_id, ()):
            log.close()

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        for loggers in self._trial_loggers.values():
            for log in loggers:
                log.close()
        self._trial_loggers.clear()
