"""What the controller decided, published as frozen records to any number of subscribers.

Events are emitted after the result pipeline, in the order the controller decided
them. Each subscriber has a bounded buffer: a slow consumer never slows trials, and
what it misses is never silent (an :class:`EventsDropped` record says how many
events it lost, before the next one it gets). A subscriber that asks for
back-pressure (``overflow="block"``) loses nothing instead: while its buffer is
full the controller takes no new event (see :meth:`EventHub.wait_for_room`), so
the experiment runs at that subscriber's pace.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from typing import Any

import anyio
import attrs

OVERFLOW_DROP = "drop"
OVERFLOW_BLOCK = "block"


@attrs.frozen
class TrialAdded:
    trial_id: str
    config: dict


@attrs.frozen
class TrialStarted:
    trial_id: str


@attrs.frozen
class TrialResult:
    trial_id: str
    result: dict


@attrs.frozen
class TrialCheckpointed:
    trial_id: str
    path: str


@attrs.frozen
class TrialPaused:
    trial_id: str


@attrs.frozen
class TrialCompleted:
    """The trial ended without error (it finished, or a stopper/scheduler/user stopped it)."""

    trial_id: str
    last_result: dict


@attrs.frozen
class TrialErrored:
    """The trial failed for good (its retries are used up)."""

    trial_id: str
    error: str


@attrs.frozen
class ExperimentEnded:
    interrupted: bool


@attrs.frozen
class EventsDropped:
    """This subscriber's buffer was full: ``count`` events were not delivered to it."""

    count: int


@attrs.define
class _Gap:
    count: int


class Subscription:
    """One subscriber's bounded view of the stream (an async iterator of events).

    It ends after :class:`ExperimentEnded`. ``overflow`` says what a full buffer
    does: ``"drop"`` keeps the trials going and marks the gap with
    :class:`EventsDropped`; ``"block"`` holds the controller until this subscriber
    has read (nothing is lost; the buffer may briefly exceed its size by what one
    controller step publishes). Leave a blocking subscription with :meth:`close`
    (or ``async with``) when you stop reading; one nobody references is closed too.
    """

    def __init__(self, hub: EventHub, buffer: int, overflow: str = OVERFLOW_DROP) -> None:
        if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 1:
            raise ValueError(f"buffer must be an int >= 1, got {buffer!r}")
        if overflow not in (OVERFLOW_DROP, OVERFLOW_BLOCK):
            raise ValueError(f"overflow must be {OVERFLOW_DROP!r} or {OVERFLOW_BLOCK!r}, "
                             f"got {overflow!r}")
        self._hub = hub
        self._buffer: deque = deque()
        self._capacity = buffer
        self.blocking = overflow == OVERFLOW_BLOCK
        self._wake = anyio.Event()
        self._ended = False

    @property
    def full(self) -> bool:
        """A blocking subscriber that has not read enough for the controller to go on."""
        return self.blocking and not self._ended and len(self._buffer) >= self._capacity

    def _deliver(self, event: Any) -> None:
        buffer = self._buffer
        if isinstance(event, ExperimentEnded):
            self._ended = True
            buffer.append(event)  # the end is always delivered, last
        elif len(buffer) < self._capacity or self.blocking:
            buffer.append(event)
        elif buffer and isinstance(buffer[-1], _Gap):
            buffer[-1].count += 1
        else:  # a gap marker where the lost events were: the order stays honest
            buffer.append(_Gap(1))
        self._wake.set()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Any:
        while True:
            if self._buffer:
                event = self._buffer.popleft()
                if self.blocking:
                    self._hub._room_made()
                return EventsDropped(event.count) if isinstance(event, _Gap) else event
            if self._ended:
                self.close()
                raise StopAsyncIteration
            await self._wake.wait()
            self._wake = anyio.Event()

    def close(self) -> None:
        """Stop receiving (events published from now on are not kept for it); a blocking
        subscriber no longer holds the experiment."""
        self._hub.unsubscribe(self)

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        self.close()


class EventHub:
    """The subscribers of one experiment's events.

    It holds them weakly: a subscription nobody references any more (an ``async for``
    left with ``break``) stops receiving, and never holds the controller back.
    """

    def __init__(self) -> None:
        self._subscriptions: list[weakref.ref[Subscription]] = []
        self.ended: ExperimentEnded | None = None
        self._room: asyncio.Event | None = None  # what wait_for_room awaits
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unblocked = False

    def __bool__(self) -> bool:
        """True when somebody listens (the controller builds events only then)."""
        return bool(self._subscriptions)

    def subscribe(self, buffer: int = 10_000, overflow: str = OVERFLOW_DROP) -> Subscription:
        subscription = Subscription(self, buffer, overflow)
        if self.ended is not None:
            subscription._deliver(self.ended)
        else:
            self._subscriptions.append(weakref.ref(subscription, self._forget))
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        for ref in self._subscriptions:
            if ref() is subscription:
                self._subscriptions.remove(ref)
                self._room_made()
                return

    def publish(self, event: Any) -> None:
        """Deliver ``event`` to every subscriber now (never waits: see wait_for_room)."""
        if isinstance(event, ExperimentEnded):
            self.ended = event
        for subscription in self._live():
            subscription._deliver(event)

    # ---- back-pressure (subscribers with overflow="block") -----------------------------
    def full(self) -> bool:
        """Whether a blocking subscriber's buffer is full (the controller should wait)."""
        return not self._unblocked and any(s.full for s in self._live())

    async def wait_for_room(self) -> None:
        """While a blocking subscriber is full: wait until one reads, closes or is dropped
        (or :meth:`wake` is called). The caller checks :meth:`full` again."""
        if not self.full():
            return
        self._loop = asyncio.get_running_loop()
        self._room = room = asyncio.Event()
        await room.wait()

    def wake(self) -> None:
        """Make wait_for_room look again (the caller has a reason not to wait)."""
        self._room_made()

    def unblock(self) -> None:
        """The experiment is ending: back-pressure ends for good (nothing is dropped;
        blocking subscribers' buffers may grow by the last events)."""
        self._unblocked = True
        self._room_made()

    def _live(self) -> list[Subscription]:
        return [s for s in (ref() for ref in list(self._subscriptions)) if s is not None]

    def _room_made(self) -> None:
        if self._room is not None:
            self._room.set()

    def _forget(self, ref: weakref.ref) -> None:
        """A subscription was garbage collected (this may run in any thread)."""
        if ref in self._subscriptions:
            self._subscriptions.remove(ref)
        room, loop = self._room, self._loop
        if room is not None and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(room.set)
