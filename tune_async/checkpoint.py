"""Checkpoint records, the per-trial CheckpointManager (keep the best N) and result truncation.

A persistent checkpoint lives in ``<trial logdir>/checkpoint_<iteration:06d>/``: the
directory holds ``.is_checkpoint``, the user's files and ``<path>.tune_metadata``, where
``path`` is what ``save_checkpoint`` returned (a file or directory inside it, the pickled
dict ``checkpoint``, or for function trainables the directory itself). A memory checkpoint
is the bytes of ``Trainable.save_to_object``; it is never written to the state file.

``truncate_trial_results`` cuts a trial's ``result.json``/``progress.csv`` back to a
checkpoint's iteration so that a restarted trial never duplicates or tears a result line.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import pickle
import shutil
from collections.abc import Callable
from numbers import Number
from typing import Any

import attrs

from tune_async.result import EXPR_PROGRESS_FILE, EXPR_RESULT_FILE, TRAINING_ITERATION
from tune_async.utils.util import atomic_write_bytes, flatten_dict, json_dumps

logger = logging.getLogger(__name__)

PERSISTENT = "persistent"
MEMORY = "memory"
_STORAGES = (PERSISTENT, MEMORY)

METADATA_SUFFIX = ".tune_metadata"
CHECKPOINT_MARKER = ".is_checkpoint"
CHECKPOINT_DIR_PREFIX = "checkpoint_"
# ``Trainable.restore_from_object`` unpacks into ``checkpoint_tmp*``: not a checkpoint.
_TEMP_DIR_PREFIX = "checkpoint_tmp"
_MIN_PREFIX = "min-"


# ---- the Checkpoint record ----------------------------------------------------------------


def _json_safe(result: Any) -> dict:
    """A JSON-able copy of ``result`` (numpy scalars -> numbers, the rest ``repr``)."""
    if result is None:
        return {}
    if not isinstance(result, dict):
        raise TypeError(f"Checkpoint `result` must be a dict, got {type(result).__name__}.")
    return json.loads(json_dumps(result))


def checkpoint_dir_of(path: str) -> str:
    """The ``checkpoint_*`` directory holding checkpoint ``path`` (the path itself if it is one).

    Falls back to the directory of ``path`` (or ``path`` itself if it is a directory)
    when no enclosing ``checkpoint_*`` directory is found.
    """
    path = os.path.abspath(path)
    probe = path
    while True:
        name = os.path.basename(probe)
        if name.startswith(CHECKPOINT_DIR_PREFIX) or os.path.exists(
            os.path.join(probe, CHECKPOINT_MARKER)
        ):
            return probe
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    return path if os.path.isdir(path) else os.path.dirname(path)


def _check_storage(_instance: Any, _attribute: Any, value: str) -> None:
    if value not in _STORAGES:
        raise ValueError(f"Checkpoint `storage` must be one of {list(_STORAGES)}, got {value!r}.")


@attrs.define(eq=False)
class Checkpoint:
    """One checkpoint of a trial.

    Attributes:
        path (str): the checkpoint path as ``Trainable.save`` returned it (what
            ``restore`` takes). None for memory checkpoints.
        dir (str): the ``checkpoint_<n>`` directory holding ``path`` (derived from
            ``path`` when not given). None for memory checkpoints.
        iteration (int): the trial's ``training_iteration`` when it was saved.
        result (dict): the trial's result at that point (a JSON-safe copy is kept,
            with ``training_iteration`` filled from ``iteration`` when absent; scores
            are looked up in its flattened form, nested keys ``"a/b"``).
        storage (str): ``"persistent"`` (on disk, default) or ``"memory"``.
        value: the checkpoint itself, as in 1.x: ``path`` for a persistent checkpoint
            (what ``tune.run(restore=...)`` takes), the bytes of ``save_to_object``
            for a memory one (the only kind that takes ``value=`` when built).
    """

    path: str | None = None
    dir: str | None = None
    iteration: int | None = 0
    result: dict = attrs.field(factory=dict, converter=_json_safe)
    storage: str = attrs.field(default=PERSISTENT, validator=_check_storage)
    _value: bytes | None = attrs.field(default=None, alias="value")

    def __attrs_post_init__(self) -> None:
        if self.storage == PERSISTENT:
            if not self.path:
                raise ValueError("A persistent Checkpoint needs a `path`.")
            self.path = os.fspath(self.path)
            if self.dir is None:
                self.dir = checkpoint_dir_of(self.path)
        if self.iteration is None:
            self.iteration = int(self.result.get(TRAINING_ITERATION) or 0)
        # The default score attribute must rank a checkpoint saved with a partial result.
        self.result.setdefault(TRAINING_ITERATION, self.iteration)

    @classmethod
    def from_path(
        cls, path: str, result: dict | None = None, iteration: int | None = None
    ) -> Checkpoint:
        """A persistent checkpoint for ``path`` (what ``Trainable.save`` returned).

        Args:
            path (str): the checkpoint path; its ``checkpoint_*`` directory becomes ``dir``.
            result (dict): the trial's result when it was saved. Default ``{}``.
            iteration (int): default: ``result["training_iteration"]``, else the
                iteration in the checkpoint's metadata (when readable here), else 0.
        """
        result = result or {}
        if iteration is None:
            iteration = _iteration_of(result.get(TRAINING_ITERATION))
        if iteration is None:
            entry = read_checkpoint_metadata(checkpoint_dir_of(path))
            iteration = int(entry[1]["iteration"]) if entry is not None else 0
        return cls(path=path, iteration=iteration, result=result)

    @classmethod
    def memory(cls, value: bytes, iteration: int = 0, result: dict | None = None) -> Checkpoint:
        """A memory checkpoint holding ``value`` (the bytes of ``save_to_object``)."""
        return cls(iteration=iteration, result=result or {}, storage=MEMORY, value=value)

    @property
    def value(self) -> Any:
        # Derived from ``path`` for persistent checkpoints, so a moved path (analysis
        # rebasing a relocated experiment) is never out of step with it.
        return self.path if self.storage == PERSISTENT else self._value

    @property
    def is_memory(self) -> bool:
        return self.storage == MEMORY

    def to_json(self) -> dict:
        """A JSON-able dict for the experiment state file (persistent checkpoints only).

        Raises:
            ValueError: this is a memory checkpoint (those are not persisted).
        """
        if self.storage != PERSISTENT:
            raise ValueError(
                "Memory checkpoints are not persisted; only persistent ones have JSON."
            )
        return {
            "path": self.path,
            "dir": self.dir,
            "iteration": self.iteration,
            "result": self.result,
            "storage": PERSISTENT,
        }

    @classmethod
    def from_json(cls, data: dict) -> Checkpoint:
        """The Checkpoint :meth:`to_json` described."""
        if not isinstance(data, dict) or not data.get("path"):
            raise ValueError(f"Checkpoint.from_json expects a dict with a `path`, got {data!r}.")
        return cls(
            path=data["path"],
            dir=data.get("dir"),
            iteration=int(data.get("iteration") or 0),
            result=data.get("result") or {},
            storage=PERSISTENT,
        )

    def __repr__(self) -> str:
        where = self.path if self.storage == PERSISTENT else f"<{len(self._value or b'')} bytes>"
        return f"Checkpoint({self.storage}, iteration={self.iteration}, {where})"


def delete_checkpoint(checkpoint: Checkpoint) -> None:
    """The default ``delete_fn``: remove the checkpoint's ``checkpoint_*`` directory.

    Errors are ignored. A directory that is not a checkpoint directory (not named
    ``checkpoint_*`` and without ``.is_checkpoint``, e.g. a user's ``restore=`` folder)
    is never removed: a warning is logged instead.
    """
    target = checkpoint.dir
    if not target or not os.path.isdir(target):
        return
    is_checkpoint_dir = os.path.basename(os.path.normpath(target)).startswith(
        CHECKPOINT_DIR_PREFIX
    ) or os.path.exists(os.path.join(target, CHECKPOINT_MARKER))
    if not is_checkpoint_dir:
        logger.warning("Not deleting %s: it is not a checkpoint directory.", target)
        return
    shutil.rmtree(target, ignore_errors=True)


# ---- CheckpointManager ----------------------------------------------------------------------


def lookup_metric(result: dict, key: str) -> Any:
    """``result[key]`` with nested keys written ``"a/b"``; raises KeyError if absent."""
    if key in result:
        return result[key]
    flat = flatten_dict(result)
    return flat[key]


def _is_number(value: Any) -> bool:
    return isinstance(value, Number) and not isinstance(value, bool)


def _check_keep(_instance: Any, _attribute: Any, value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(
            f"`keep_checkpoints_num` must be a positive int or None (keep all), got {value!r}."
        )


def _default_score_attr(value: str | None) -> str:
    return TRAINING_ITERATION if value is None else value


def _check_score_attr(_instance: Any, _attribute: Any, value: str) -> None:
    if not isinstance(value, str) or not value or value == _MIN_PREFIX:
        raise ValueError(
            f"`checkpoint_score_attr` must be a result key (optionally 'min-' prefixed), "
            f"got {value!r}."
        )


@attrs.define(eq=False)
class CheckpointManager:
    """Keeps a trial's checkpoints: the best ``keep_checkpoints_num`` by a score, plus the newest.

    Args:
        keep_checkpoints_num (int): how many checkpoints to keep on disk; None
            (default) keeps all. The newest checkpoint is never deleted until a newer
            one arrives, so ``keep_checkpoints_num + 1`` may exist briefly.
        checkpoint_score_attr (str): the result key that ranks checkpoints (nested
            keys ``"a/b"``), higher is better; a ``"min-"`` prefix ranks lower as
            better. Default ``"training_iteration"``. A checkpoint whose result lacks
            the key (or holds a non-number) is logged as an error and not ranked: it
            is kept while it is the newest, then deleted (kept for good when
            ``keep_checkpoints_num`` is None). Ties keep the older checkpoint.
        delete_fn (callable): ``delete_fn(checkpoint)`` removes a checkpoint that is no
            longer kept. Default: remove ``checkpoint.dir`` (errors ignored). Must be a
            module-level function for the manager to be picklable.

    Raises:
        ValueError: ``keep_checkpoints_num`` <= 0 or a bad ``checkpoint_score_attr``.
    """

    keep_checkpoints_num: int | None = attrs.field(default=None, validator=_check_keep)
    checkpoint_score_attr: str = attrs.field(
        default=TRAINING_ITERATION, converter=_default_score_attr, validator=_check_score_attr
    )
    delete_fn: Callable[[Checkpoint], Any] | None = None
    # Kept persistent checkpoints in registration order; the newest is the last one.
    _checkpoints: list[Checkpoint] = attrs.field(factory=list, init=False)
    _newest_memory: Checkpoint | None = attrs.field(default=None, init=False)

    # -- scoring --
    @property
    def score_key(self) -> str:
        """The result key that ranks checkpoints (without the ``min-`` prefix)."""
        attr = self.checkpoint_score_attr
        return attr[len(_MIN_PREFIX) :] if attr.startswith(_MIN_PREFIX) else attr

    @property
    def score_descending(self) -> bool:
        """True when lower scores are better (``min-`` prefix)."""
        return self.checkpoint_score_attr.startswith(_MIN_PREFIX)

    def score(self, checkpoint: Checkpoint) -> float | None:
        """The checkpoint's rank value (higher is better), or None if it cannot be ranked."""
        try:
            value = lookup_metric(checkpoint.result, self.score_key)
        except KeyError:
            return None
        if not _is_number(value):
            return None
        value = float(value)
        if math.isnan(value):
            return -math.inf  # NaN ranks below every number, whatever the direction
        return -value if self.score_descending else value

    # -- registering --
    def on_checkpoint(self, checkpoint: Checkpoint, delete: bool = True) -> list[Checkpoint]:
        """Register a new checkpoint; returns the checkpoints dropped because of it.

        A persistent checkpoint becomes the newest; the best ``keep_checkpoints_num``
        (and the newest) are kept, the others deleted through ``delete_fn`` (or left
        to the caller with ``delete=False``: :meth:`delete` them later, e.g. off the
        event loop). A memory checkpoint only replaces :attr:`newest_memory_checkpoint`.
        """
        if not isinstance(checkpoint, Checkpoint):
            raise TypeError(f"on_checkpoint expects a Checkpoint, got {type(checkpoint).__name__}.")
        if checkpoint.storage == MEMORY:
            self._newest_memory = checkpoint
            return []
        # Saved again into the same place (e.g. re-run after a restore): the files on disk
        # are the new checkpoint's now, so the old record goes without deleting anything.
        self._checkpoints = [c for c in self._checkpoints if not _same_place(c, checkpoint)]
        self._checkpoints.append(checkpoint)
        if self.score(checkpoint) is None:
            logger.error(
                "Result dict has no key: %s. checkpoint_score_attr must be set to a key of "
                "the result dict (holding a number); checkpoint %s is not ranked.",
                self.score_key,
                checkpoint.path,
            )
        dropped = self._drop_unkept()
        if delete:
            self.delete(dropped)
        return dropped

    def delete(self, checkpoints: list[Checkpoint]) -> None:
        """Remove dropped checkpoints from disk through ``delete_fn`` (blocking I/O)."""
        remove = self.delete_fn or delete_checkpoint
        for cp in checkpoints:
            remove(cp)

    def _best_ranked(self) -> list[Checkpoint]:
        """The best ``keep_checkpoints_num`` ranked checkpoints, worst first."""
        ranked = []
        for order, cp in enumerate(self._checkpoints):
            score = self.score(cp)
            if score is not None:
                ranked.append(((score, -order), cp))  # ties: the older one is better
        ranked.sort(key=lambda item: item[0])
        if self.keep_checkpoints_num is not None:
            ranked = ranked[-self.keep_checkpoints_num :]
        return [cp for _, cp in ranked]

    def _drop_unkept(self) -> list[Checkpoint]:
        if self.keep_checkpoints_num is None:
            return []  # keeping all: ranked, unranked and the newest
        keep = set(map(id, self._best_ranked()))
        keep.add(id(self._checkpoints[-1]))  # the newest stays until a newer one arrives
        dropped = [c for c in self._checkpoints if id(c) not in keep]
        self._checkpoints = [c for c in self._checkpoints if id(c) in keep]
        return dropped

    # -- reading --
    @property
    def newest_checkpoint(self) -> Checkpoint | None:
        """The newest persistent checkpoint (None before the first)."""
        return self._checkpoints[-1] if self._checkpoints else None

    @property
    def newest_persistent_checkpoint(self) -> Checkpoint | None:
        """Alias of :attr:`newest_checkpoint` (the 1.x name)."""
        return self.newest_checkpoint

    @property
    def newest_memory_checkpoint(self) -> Checkpoint | None:
        """The newest memory checkpoint (None if there was none)."""
        return self._newest_memory

    @property
    def checkpoints(self) -> list[Checkpoint]:
        """Every kept persistent checkpoint, oldest registration first (newest last)."""
        return list(self._checkpoints)

    def best_checkpoints(self) -> list[Checkpoint]:
        """The kept ranked checkpoints sorted worst to best (as 1.x).

        Unranked checkpoints and a newest checkpoint outside the best
        ``keep_checkpoints_num`` are not included.
        """
        return self._best_ranked()

    # -- state file --
    def to_json(self) -> dict:
        """A JSON-able dict: settings and the kept persistent checkpoints (newest last)."""
        return {
            "keep_checkpoints_num": self.keep_checkpoints_num,
            "checkpoint_score_attr": self.checkpoint_score_attr,
            "checkpoints": [c.to_json() for c in self._checkpoints],
        }

    @classmethod
    def from_json(
        cls,
        data: dict | list,
        keep_checkpoints_num: int | None = None,
        checkpoint_score_attr: str | None = None,
        delete_fn: Callable[[Checkpoint], Any] | None = None,
    ) -> CheckpointManager:
        """Rebuild a manager from :meth:`to_json`'s dict or a list of ``Checkpoint.to_json()``.

        Nothing is deleted while rebuilding. ``keep_checkpoints_num`` and
        ``checkpoint_score_attr`` override the saved settings when given (a plain
        list has none: then None / ``"training_iteration"``).
        """
        if isinstance(data, list):
            data = {"checkpoints": data}
        if not isinstance(data, dict):
            raise TypeError(
                f"CheckpointManager.from_json expects a dict or a list, got {type(data).__name__}."
            )
        keep = keep_checkpoints_num
        if keep is None:
            keep = data.get("keep_checkpoints_num")
        manager = cls(
            keep_checkpoints_num=keep,
            checkpoint_score_attr=(
                checkpoint_score_attr or data.get("checkpoint_score_attr") or TRAINING_ITERATION
            ),
            delete_fn=delete_fn,
        )
        manager._checkpoints = [Checkpoint.from_json(c) for c in data.get("checkpoints") or []]
        return manager


def _same_place(a: Checkpoint, b: Checkpoint) -> bool:
    return a.path == b.path or (a.dir is not None and a.dir == b.dir)


# ---- checkpoints on disk ---------------------------------------------------------------------


def _is_checkpoint_dirname(name: str) -> bool:
    return name.startswith(CHECKPOINT_DIR_PREFIX) and not name.startswith(_TEMP_DIR_PREFIX)


def _metadata_files(directory: str) -> list[str]:
    found = []
    for root, _dirs, files in os.walk(directory):
        found.extend(os.path.join(root, f) for f in files if f.endswith(METADATA_SUFFIX))
    return sorted(found)


def read_checkpoint_metadata(checkpoint_dir: str) -> tuple[str, dict] | None:
    """(checkpoint path, metadata dict) of the checkpoint in ``checkpoint_dir``, or None.

    None (with a warning for the odd cases) when the directory holds no metadata, more
    than one metadata file, or an unreadable one.
    """
    found = _metadata_files(checkpoint_dir)
    if len(found) != 1:
        if found:
            logger.warning("Skipping %s: %d checkpoint metadata files.", checkpoint_dir, len(found))
        return None
    meta_file = found[0]
    try:
        with open(meta_file, "rb") as f:
            meta = pickle.load(f)
    except Exception as exc:  # a torn or foreign file: not a usable checkpoint
        logger.warning("Skipping %s: unreadable checkpoint metadata (%s).", meta_file, exc)
        return None
    if not isinstance(meta, dict) or "iteration" not in meta:
        return None
    path = meta_file[: -len(METADATA_SUFFIX)]
    if os.path.basename(meta_file) == METADATA_SUFFIX:  # metadata of the directory itself
        path = os.path.dirname(meta_file)
    return path, meta


def find_checkpoints_on_disk(logdir: str, with_results: bool = True) -> list[Checkpoint]:
    """The checkpoints in a trial directory, sorted by iteration.

    Scans the ``checkpoint_*`` directories of ``logdir`` that hold checkpoint metadata
    (``checkpoint_tmp*`` restore scratch directories are skipped).

    Args:
        logdir (str): the trial directory.
        with_results (bool): fill each checkpoint's ``result`` with the ``result.json``
            row of the same ``training_iteration`` (else ``{"training_iteration": n}``).
            Default True.
    """
    if not logdir or not os.path.isdir(logdir):
        return []
    found = []
    for name in sorted(os.listdir(logdir)):
        directory = os.path.join(logdir, name)
        if not _is_checkpoint_dirname(name) or not os.path.isdir(directory):
            continue
        entry = read_checkpoint_metadata(directory)
        if entry is None:
            continue
        path, meta = entry
        found.append((int(meta["iteration"]), name, path, directory))
    found.sort()
    rows = _results_by_iteration(logdir) if with_results and found else {}
    return [
        Checkpoint(
            path=path,
            dir=directory,
            iteration=iteration,
            result=rows.get(iteration) or {TRAINING_ITERATION: iteration},
        )
        for iteration, _, path, directory in found
    ]


def _results_by_iteration(logdir: str) -> dict[int, dict]:
    rows = {}
    for line in _complete_lines(os.path.join(logdir, EXPR_RESULT_FILE)):
        result = _parse_result_line(line)
        if result is not None:
            rows[_iteration_of(result[TRAINING_ITERATION])] = result
    return rows


# ---- truncating result files ---------------------------------------------------------------


def _read_text(path: str) -> str | None:
    # surrogateescape: a write torn inside a multi-byte character must not stop the reading
    try:
        with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _replace_contents(path: str, original: str, kept: str) -> None:
    """Make ``path`` hold ``kept``, crash-safely.

    When ``kept`` is a prefix of the file (the usual case: later rows and a torn tail
    go) the file is cut in place with one truncate, so a logger that still holds it open
    for appending keeps writing to the right file. Otherwise the rows are written to a
    temporary file that replaces it.
    """
    if kept == original:
        return
    data = kept.encode("utf-8", errors="surrogateescape")
    if original.startswith(kept):
        with open(path, "r+b") as f:
            f.truncate(len(data))
        return
    atomic_write_bytes(path, data)


def _lines_of(text: str | None) -> list[str]:
    """The newline-terminated lines of ``text`` (a torn last line is left out)."""
    if not text:
        return []
    lines = text.split("\n")  # only "\n" ends a line (a "\r" inside JSON text cannot occur)
    return [line + "\n" for line in lines[:-1]]


def _complete_lines(path: str) -> list[str]:
    """The newline-terminated lines of ``path`` (a torn last line is left out)."""
    return _lines_of(_read_text(path))


def _iteration_of(value: Any) -> int | None:
    """``training_iteration`` as an int (from a number or its CSV text), else None."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if not _is_number(value) or not math.isfinite(value) or value != int(value):
        return None
    return int(value)


def _parse_result_line(line: str) -> dict | None:
    try:
        result = json.loads(line)
    except ValueError:
        return None
    if not isinstance(result, dict) or _iteration_of(result.get(TRAINING_ITERATION)) is None:
        return None
    return result


def _truncate_result_json(path: str, max_iteration: int) -> int | None:
    text = _read_text(path)
    if text is None:
        return None
    kept = []
    for line in _lines_of(text):
        result = _parse_result_line(line)
        if result is not None and _iteration_of(result[TRAINING_ITERATION]) <= max_iteration:
            kept.append(line)
    _replace_contents(path, text, "".join(kept))
    return len(kept)


def _truncate_progress_csv(path: str, max_iteration: int) -> int | None:
    original = _read_text(path)
    if original is None:
        return None
    text = original[: original.rfind("\n") + 1]  # drop a torn last row
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error:
        rows = []
    if not rows:
        _replace_contents(path, original, "")
        return 0
    header, body = rows[0], rows[1:]
    column = header.index(TRAINING_ITERATION) if TRAINING_ITERATION in header else None
    kept = []
    for row in body:
        if column is None or len(row) != len(header):
            continue
        iteration = _iteration_of(row[column])
        if iteration is not None and iteration <= max_iteration:
            kept.append(row)
    out = io.StringIO(newline="")
    writer = csv.writer(out)  # the loggers' dialect (excel, "\r\n")
    writer.writerow(header)
    writer.writerows(kept)
    _replace_contents(path, original, out.getvalue())
    return len(kept)


def truncate_trial_results(logdir: str, max_iteration: int) -> int:
    """Cut a trial's ``result.json`` and ``progress.csv`` back to ``max_iteration``.

    Keeps only complete rows whose ``training_iteration`` is <= ``max_iteration``:
    a torn last line, unreadable rows and rows without ``training_iteration`` are
    dropped. ``progress.csv`` keeps its header. A missing file is left missing.

    Crash-safe: when the kept rows are a prefix of the file (the usual case) the file
    is cut in place with one truncate, so a logger still holding it open in append
    mode goes on writing to it (flush its buffers first); otherwise the rows are
    written to a temporary file that atomically replaces it (then reopen any
    writer). Call it before a trial restarts from a checkpoint (resume, retry), with
    the checkpoint's iteration (0 when it starts over).

    Args:
        logdir (str): the trial directory.
        max_iteration (int): the last ``training_iteration`` to keep (>= 0).

    Returns:
        int: the number of rows kept in ``result.json`` (or in ``progress.csv``
        when there is no ``result.json``; 0 when there is neither).

    Raises:
        ValueError: ``logdir`` is not a directory or ``max_iteration`` is negative.
    """
    if not logdir or not os.path.isdir(logdir):
        raise ValueError(f"truncate_trial_results: `logdir` is not a directory: {logdir!r}")
    if isinstance(max_iteration, bool) or not isinstance(max_iteration, int) or max_iteration < 0:
        raise ValueError(
            f"truncate_trial_results: `max_iteration` must be an int >= 0, got {max_iteration!r}"
        )
    kept_json = _truncate_result_json(os.path.join(logdir, EXPR_RESULT_FILE), max_iteration)
    kept_csv = _truncate_progress_csv(os.path.join(logdir, EXPR_PROGRESS_FILE), max_iteration)
    if kept_json is not None:
        return kept_json
    return kept_csv or 0


__all__ = [
    "MEMORY",
    "PERSISTENT",
    "Checkpoint",
    "CheckpointManager",
    "checkpoint_dir_of",
    "delete_checkpoint",
    "find_checkpoints_on_disk",
    "lookup_metric",
    "read_checkpoint_metadata",
    "truncate_trial_results",
]
