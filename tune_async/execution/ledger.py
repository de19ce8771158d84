"""Several experiments on one Ray instance: who may take the cluster's resources.

Each RayExecutor of this process is a tenant of one :class:`ResourceLedger`.
Every tenant sees every reservation, so experiments running side by side (two
``arun`` calls in one loop, or in two threads) never ask Ray for more than the
cluster has, and they share it fairly:

- a tenant may take free resources unless another tenant that is waiting holds
  a smaller (or equal) dominant share: the poorer waiter goes first, so an
  experiment that frees a slot cannot take it straight back while another waits;
- idle workers (kept warm for reuse) are anybody's to evict when a tenant needs
  room;
- when a tenant frees resources, the tenants waiting are woken (their controller
  fills again), on their own event loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

_EPS = 1e-9


class ResourceLedger:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._tenants: list[Any] = []  # executors, in joining order
        self._wanting: dict[int, int] = {}  # id(tenant) -> when it was first refused
        self._refusals = 0
        self._wakeups: dict[int, Callable[[], None]] = {}
        self._still_waiting: dict[int, Callable[[], bool]] = {}

    # ---- membership ------------------------------------------------------------------
    def join(self, tenant: Any) -> None:
        with self._lock:
            if tenant not in self._tenants:
                self._tenants.append(tenant)

    def leave(self, tenant: Any) -> None:
        with self._lock:
            if tenant in self._tenants:
                self._tenants.remove(tenant)
            self._wanting.pop(id(tenant), None)
            self._wakeups.pop(id(tenant), None)
            self._still_waiting.pop(id(tenant), None)
        self.wake_waiting()

    def set_wakeup(self, tenant: Any, wake: Callable[[], None],
                   still_waiting: Callable[[], bool]) -> None:
        """``wake()`` is called (it must be thread-safe) when room frees up;
        ``still_waiting()`` says whether the tenant has trials waiting at all (a tenant
        that stopped waiting never holds others back)."""
        with self._lock:
            self._wakeups[id(tenant)] = wake
            self._still_waiting[id(tenant)] = still_waiting

    # ---- deciding ------------------------------------------------------------------
    def grants(self, tenant: Any, request: dict[str, float], total: dict[str, float]) -> bool:
        """Whether ``tenant`` may reserve ``request`` now (and remember it waits if not).

        A tenant keeps its place in the queue until it actually reserves, so asking twice
        (the controller checks, then its scheduler checks) never loses it its turn.
        """
        with self._lock:
            used = self._used_by_all()
            fits = all(used.get(k, 0.0) + v <= total.get(k, 0.0) + _EPS
                       for k, v in request.items())
            if fits and not self._poorer_waiter(tenant, total):
                return True
            if id(tenant) not in self._wanting:
                self._refusals += 1
                self._wanting[id(tenant)] = self._refusals
            return False

    def reserved(self, tenant: Any) -> None:
        """``tenant`` took what it was granted: it waits no more."""
        with self._lock:
            was_waiting = self._wanting.pop(id(tenant), None) is not None
        if was_waiting:
            self.wake_waiting(tenant)  # those it went before may fit beside it now

    def others_hold_or_wait(self, tenant: Any) -> bool:
        """Whether a refusal may end without this tenant doing anything (others free room)."""
        with self._lock:
            return any(t is not tenant and (_any_positive(t.reserved_resources())
                                            or id(t) in self._wanting)
                       for t in self._tenants)

    def take_idle_from_others(self, tenant: Any, needed: Callable[[], bool]) -> list:
        """Idle workers of other tenants, taken over (to be killed by ``tenant``) while
        ``needed()`` says the cluster is still too full."""
        taken = []
        with self._lock:
            for other in self._tenants:
                if other is tenant:
                    continue
                while needed() and other.has_idle_workers():
                    taken.append(other.give_up_idle_worker())
        return taken

    def idle_held_by_others(self, tenant: Any) -> dict[str, float]:
        return self._sum_of_others(tenant, "idle_resources")

    def used_by_others(self, tenant: Any) -> dict[str, float]:
        return self._sum_of_others(tenant, "reserved_resources")

    def _sum_of_others(self, tenant: Any, what: str) -> dict[str, float]:
        with self._lock:
            total: dict[str, float] = {}
            for other in self._tenants:
                if other is not tenant:
                    _add(total, getattr(other, what)())
            return total

    def freed(self, tenant: Any) -> None:
        """``tenant`` released resources: if it waits too, it goes to the back of the line
        (it cannot take straight back what it freed while others wait)."""
        with self._lock:
            if id(tenant) in self._wanting:
                self._refusals += 1
                self._wanting[id(tenant)] = self._refusals
        self.wake_waiting(tenant)

    def wake_waiting(self, freed_by: Any = None) -> None:
        """Room was freed: wake every other tenant that is waiting for some."""
        with self._lock:
            wakes = [self._wakeups[key] for key in self._wanting
                     if key in self._wakeups and key != id(freed_by)]
        for wake in wakes:
            wake()

    # ---- internals -----------------------------------------------------------------
    def _used_by_all(self) -> dict[str, float]:
        used: dict[str, float] = {}
        for tenant in self._tenants:
            _add(used, tenant.reserved_resources())
        return used

    def _poorer_waiter(self, tenant: Any, total: dict[str, float]) -> bool:
        """Another waiting tenant goes first: its share is smaller, or equal and it has
        waited longer."""
        mine = _dominant_share(tenant.reserved_resources(), total)
        my_turn = self._wanting.get(id(tenant))
        for other in self._tenants:
            turn = self._wanting.get(id(other))
            if other is tenant or turn is None:
                continue
            if not self._still_waiting.get(id(other), lambda: True)():
                del self._wanting[id(other)]  # its waiting trials are gone
                continue
            share = _dominant_share(other.reserved_resources(), total)
            if share < mine - _EPS or (abs(share - mine) <= _EPS
                                       and (my_turn is None or turn < my_turn)):
                return True
        return False


def _dominant_share(used: dict[str, float], total: dict[str, float]) -> float:
    return max((v / total[k] for k, v in used.items() if total.get(k)), default=0.0)


def _add(into: dict[str, float], more: dict[str, float]) -> None:
    for k, v in more.items():
        into[k] = into.get(k, 0.0) + v


def _any_positive(resources: dict[str, float]) -> bool:
    return any(v > _EPS for v in resources.values())


LEDGER = ResourceLedger()  # one per process: every experiment on this Ray instance
