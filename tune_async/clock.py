"""Time for the controller: a real clock, and a fake one so tests take no time."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Protocol

import anyio


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds."""

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""


class RealClock:
    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


class FakeClock:
    """Time moves only when a test calls :meth:`advance` (or autojump lets it).

    Whoever moves it on its own (the simulated executor, once the loop idles) waits
    while the clock is *held*: the controller holds it while it waits for work off the
    loop that belongs to the present moment (its state writer catching up), so that
    the loop idling meanwhile does not let virtual time run ahead of its decisions.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._waiters: list[tuple[float, anyio.Event]] = []
        self._holds = 0
        self._released: anyio.Event | None = None

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        event = anyio.Event()
        self._waiters.append((self._now + max(0.0, seconds), event))
        await event.wait()

    def advance(self, seconds: float) -> None:
        self._now += seconds
        due = [w for w in self._waiters if w[0] <= self._now]
        self._waiters = [w for w in self._waiters if w[0] > self._now]
        for _, event in due:
            event.set()

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Keep time still (for whoever advances it on its own) until the block ends."""
        self._holds += 1
        try:
            yield
        finally:
            self._holds -= 1
            if not self._holds and self._released is not None:
                self._released.set()
                self._released = None

    @property
    def held(self) -> bool:
        return self._holds > 0

    async def wait_released(self) -> None:
        """Wait until no one holds the clock."""
        while self._holds:
            if self._released is None:
                self._released = anyio.Event()
            await self._released.wait()
