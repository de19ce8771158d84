"""Hand the GIL back to the event loop sooner during a searcher-driven run.

Threads that run Python code hold the GIL: a model-based searcher's step (TPE, GP) in
the searcher lane's thread, the state writer's encoding, Ray's own threads handing
over results. When the loop's thread wakes (a result, a timer), it asks for the GIL
back and gets it only after the interpreter's switch interval, 5 ms by default. A
heartbeat beside a 200-trial OptunaSearch run saw that as its p99 lateness: 4.2 to 5.5 ms,
against 2.4 to 4.0 ms with 1 ms for the whole run and no longer wall time (lowering
it only while the searcher's own calls ran did not help measurably: the other threads
count too). So a run whose search algorithm works in a thread runs with the interval
at most ``TUNE_SWITCH_INTERVAL_S`` (default 0.001; 0 leaves it alone); the previous one
comes back when the last such run in the process ends, unless somebody set another
one meanwhile. Runs without such a searcher keep the interpreter's interval: there
the state writer's thread switching five times as often cost the 8 x 2,000 throughput
run about a tenth of its speed, for no lower p99.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

_running = 0  # runs in this process under our interval
_saved: float | None = None  # the interval before the first of them (None: not ours)
_ours: float | None = None


@contextlib.contextmanager
def short_switch_interval(seconds: float) -> Iterator[None]:
    """At most ``seconds`` while inside (0: this run takes no part)."""
    global _running, _saved, _ours
    if seconds <= 0:
        yield
        return
    if _running == 0:
        _saved = _ours = None
        if 0 < seconds < sys.getswitchinterval():
            _saved = sys.getswitchinterval()
            sys.setswitchinterval(seconds)
            _ours = sys.getswitchinterval()
    _running += 1
    try:
        yield
    finally:
        _running -= 1
        if _running == 0 and _saved is not None and sys.getswitchinterval() == _ours:
            sys.setswitchinterval(_saved)
