"""``log_to_file``: a trial's stdout/stderr copied into files in its directory.

The copy is made at the file-descriptor level, so the output of subprocesses the
trainable starts (they inherit fds 1 and 2) lands in the files too, not only
Python's ``print``. While a trial runs, fd 1 (and 2) of the trial's process point
at a pipe; a thread copies what arrives into the trial's file *and* to where the
fd pointed before (the worker's log, which Ray forwards to the driver's console):
1.x teed the streams the same way (``Tee`` on ``sys.stdout``). When the trial
ends the fds are restored, so a reused process writes the next trial's output
into that trial's files; a subprocess that outlives its trial keeps writing into
its own trial's file (the copying thread runs until it closes its end).
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any, BinaryIO

import attrs

# How long ending a trial waits for its output to be copied (subprocesses that still
# hold the pipe are not waited for beyond this).
DRAIN_TIMEOUT_S = 2.0
_CHUNK = 65536


def log_file_names(log_to_file: Any) -> tuple[str | None, str | None]:
    """(stdout file, stderr file) from ``log_to_file`` (1.x): True, a name, or a pair."""
    if log_to_file is True:
        return "stdout", "stderr"
    if isinstance(log_to_file, str):
        return log_to_file, log_to_file
    if isinstance(log_to_file, (list, tuple)) and len(log_to_file) == 2:
        return log_to_file[0] or None, log_to_file[1] or None
    return None, None


def log_file_paths(log_to_file: Any, logdir: str) -> tuple[str | None, str | None]:
    """The files' paths: relative names are in the trial directory (absolute ones stay)."""
    return tuple(  # type: ignore[return-value]
        os.path.expanduser(os.path.join(logdir, name)) if name else None
        for name in log_file_names(log_to_file)
    )


@attrs.define(eq=False)
class _Redirect:
    """Fds pointed at one pipe whose reader copies into a file and the first fd's old target."""

    saved: dict[int, int]  # fd -> a handle on its original target, restored at the end
    copier: threading.Thread

    def end(self) -> None:
        for fd, saved in self.saved.items():
            os.dup2(saved, fd)  # drops our write end of the pipe
            os.close(saved)
        self.copier.join(DRAIN_TIMEOUT_S)


@attrs.define(eq=False)
class OutputCapture:
    """A trial's stdout/stderr redirection, from :meth:`start` to :meth:`end`."""

    redirects: list[_Redirect] = attrs.field(factory=list)

    @classmethod
    def start(cls, stdout_path: str | None, stderr_path: str | None) -> OutputCapture:
        _flush_python_streams()
        # Streams sharing a file share one pipe, so the file keeps the order they were
        # written in (two pipes would interleave them at random).
        fds_by_path: dict[str, list[int]] = {}
        for fd, path in ((1, stdout_path), (2, stderr_path)):
            if path:
                fds_by_path.setdefault(path, []).append(fd)
        return cls([_redirect(fds, path) for path, fds in fds_by_path.items()])

    def flush(self) -> None:
        """Push what Python buffered into the pipes (before the process may be killed)."""
        if self.redirects:
            _flush_python_streams()

    def end(self) -> None:
        _flush_python_streams()
        redirects, self.redirects = self.redirects, []
        for redirect in redirects:
            redirect.end()


def _open_log(path: str) -> BinaryIO:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    # Appending, as 1.x: a retried or resumed trial adds to its earlier output.
    return open(path, "ab", buffering=0)  # noqa: SIM115 - the copier closes it


def _redirect(fds: list[int], path: str) -> _Redirect:
    log = _open_log(path)
    console = os.dup(fds[0])  # the copier's own handle: it may outlive the redirect
    read_end, write_end = os.pipe()
    copier = threading.Thread(target=_copy, args=(read_end, log, console),
                              name=f"log_to_file-{path}", daemon=True)
    copier.start()
    saved = {}
    for fd in fds:
        saved[fd] = os.dup(fd)
        os.dup2(write_end, fd)  # inheritable: subprocesses write into the pipe too
    os.close(write_end)
    return _Redirect(saved=saved, copier=copier)


def _copy(read_end: int, log: BinaryIO, console: int) -> None:
    """Copy the pipe into the file and the original target until every writer closed it."""
    try:
        while chunk := os.read(read_end, _CHUNK):
            log.write(chunk)
            _write_all(console, chunk)
    finally:
        os.close(read_end)
        os.close(console)
        log.close()


def _write_all(fd: int, data: bytes) -> None:
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:
        pass  # the console went away; the file still has everything


def _flush_python_streams() -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
