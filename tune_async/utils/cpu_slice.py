"""Ask the kernel to give the event loop's thread a core sooner while a run goes on.

On two cores beside Ray (its raylet, the trial processes, the driver's own threads), a
5 ms heartbeat's late beats were mostly the loop's thread waiting for a core, not
running: idle until its timer, then 4-6 ms on the run queue (its own
``/proc/self/task/<tid>/schedstat``) for 0.1 ms of work. Linux's scheduler (EEVDF,
6.6 and later) lets a thread ask for a shorter time slice (``sched_setattr``'s
``sched_runtime``, honoured for ordinary threads since 6.12, no privilege needed): a
thread with a shorter slice is picked sooner when it wakes and may preempt the running
one, and its share of the CPU stays the same. So a run's loop thread asks for
``TUNE_LOOP_SLICE_S`` (default 100 us, the kernel's least; 0 leaves the thread alone)
while the run goes on, with the flag that keeps threads and processes started from it
(Ray's, anyio's, the writer) on the kernel's default. The thread gets its previous
slice back when the last run on it ends, unless somebody set another one meanwhile.
Elsewhere (another OS, an older kernel, a thread under a real-time or idle policy)
nothing changes.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import platform
import sys
import threading
from collections.abc import Iterator

import attrs

logger = logging.getLogger(__name__)

_SCHED_OTHER = 0
_RESET_ON_FORK = 0x01  # SCHED_FLAG_RESET_ON_FORK: children start with the default slice
_SYSCALLS = {"x86_64": (314, 315), "aarch64": (274, 275)}  # sched_setattr, sched_getattr


class _SchedAttr(ctypes.Structure):
    """The kernel's ``struct sched_attr`` (include/uapi/linux/sched/types.h)."""

    _fields_ = [
        ("size", ctypes.c_uint32), ("sched_policy", ctypes.c_uint32),
        ("sched_flags", ctypes.c_uint64), ("sched_nice", ctypes.c_int32),
        ("sched_priority", ctypes.c_uint32), ("sched_runtime", ctypes.c_uint64),
        ("sched_deadline", ctypes.c_uint64), ("sched_period", ctypes.c_uint64),
        ("sched_util_min", ctypes.c_uint32), ("sched_util_max", ctypes.c_uint32),
    ]


@attrs.define
class _Held:
    """A thread under our slice: how many runs on it, what to give back, what we set."""

    runs: int
    saved: _SchedAttr | None = None  # None: we changed nothing on this thread
    ours: int = 0


_held: dict[int, _Held] = {}  # by native thread id


@contextlib.contextmanager
def short_cpu_slice(seconds: float) -> Iterator[None]:
    """The calling thread's slice at most ``seconds`` while inside (0: no part)."""
    if seconds <= 0:
        yield
        return
    tid = threading.get_native_id()
    held = _held.get(tid)
    if held is None:
        held = _held[tid] = _Held(runs=0)
        held.saved, held.ours = _shorten(int(seconds * 1e9))
    held.runs += 1
    try:
        yield
    finally:
        held.runs -= 1
        if held.runs == 0:
            del _held[tid]
            if held.saved is not None:
                _give_back(held.saved, held.ours)


def current_slice_ns() -> int | None:
    """The calling thread's slice as the kernel reports it (None: not reported here)."""
    return _slice_of(_get())


def _slice_of(attr: _SchedAttr | None) -> int | None:
    """``attr``'s slice, if it is one we may shorten (an ordinary thread's). A zero
    slice: a kernel that keeps none per thread (before 6.12), where it is ignored."""
    if attr is None or attr.sched_policy != _SCHED_OTHER or attr.sched_runtime == 0:
        return None
    return int(attr.sched_runtime)


def _shorten(ns: int) -> tuple[_SchedAttr | None, int]:
    """Set the slice to ``ns`` if it is longer; what it was and what the kernel made it."""
    before = _get()
    current = _slice_of(before)
    if before is None or current is None or current <= ns:
        return None, 0
    saved = _SchedAttr.from_buffer_copy(before)
    wanted = _SchedAttr.from_buffer_copy(before)
    wanted.sched_runtime = ns
    wanted.sched_flags = _RESET_ON_FORK
    if not _set(wanted):
        return None, 0
    now = _get()
    return saved, int(now.sched_runtime) if now is not None else ns


def _give_back(saved: _SchedAttr, ours: int) -> None:
    now = _get()
    if now is None or now.sched_runtime != ours or now.sched_policy != saved.sched_policy:
        return  # somebody chose another slice meanwhile: theirs stays
    restored = _SchedAttr.from_buffer_copy(saved)
    restored.sched_nice = now.sched_nice  # (a nice value set meanwhile stays too)
    restored.sched_flags = saved.sched_flags & _RESET_ON_FORK
    _set(restored)


def _syscalls() -> tuple[int, int] | None:
    if not sys.platform.startswith("linux") or _libc() is None:
        return None
    return _SYSCALLS.get(platform.machine())


def _get() -> _SchedAttr | None:
    numbers = _syscalls()
    if numbers is None:
        return None
    attr = _SchedAttr()
    if _libc().syscall(numbers[1], 0, ctypes.byref(attr), ctypes.sizeof(attr), 0) != 0:
        return None
    return attr


def _set(attr: _SchedAttr) -> bool:
    numbers = _syscalls()
    if numbers is None:
        return False
    attr.size = ctypes.sizeof(attr)
    if _libc().syscall(numbers[0], 0, ctypes.byref(attr), 0) != 0:
        logger.debug("sched_setattr refused (errno %d)", ctypes.get_errno())
        return False
    return True


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:  # no C library to call through: nothing changes
        return None
