"""What the controller decided, published as frozen records to any number of subscribers.

Events are emitted after the result pipeline, in the order the controller decided
them. Each subscriber has a bounded buffer: a slow consumer never slows trials, and
what it misses is never silent (an :class:`EventsDropped` record says how many
events it lost, before the next one it gets).
"""

from __future__ import annotations

from collections import deque
from typing import Any

import anyio
import attrs


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

    It ends after :class:`ExperimentEnded`.
    """

    def __init__(self, hub: EventHub, buffer: int) -> None:
        if buffer < 1:
            raise ValueError(f"buffer must be >= 1, got {buffer!r}")
        self._hub = hub
        self._buffer: deque = deque()
        self._capacity = buffer
        self._wake = anyio.Event()
        self._ended = False

    def _deliver(self, event: Any) -> None:
        buffer = self._buffer
        if isinstance(event, ExperimentEnded):
            self._ended = True
            buffer.append(event)  # the end is always delivered, last
        elif len(buffer) < self._capacity:
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
                return EventsDropped(event.count) if isinstance(event, _Gap) else event
            if self._ended:
                self.close()
                raise StopAsyncIteration
            await self._wake.wait()
            self._wake = anyio.Event()

    def close(self) -> None:
        """Stop receiving (events published from now on are not kept for it)."""
        self._hub.unsubscribe(self)


class EventHub:
    def __init__(self) -> None:
        self._subscriptions: list[Subscription] = []
        self.ended: ExperimentEnded | None = None

    def __bool__(self) -> bool:
        """True when somebody listens (the controller builds events only then)."""
        return bool(self._subscriptions)

    def subscribe(self, buffer: int = 10_000) -> Subscription:
        subscription = Subscription(self, buffer)
        if self.ended is not None:
            subscription._deliver(self.ended)
        else:
            self._subscriptions.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)

    def publish(self, event: Any) -> None:
        if isinstance(event, ExperimentEnded):
            self.ended = event
        for subscription in list(self._subscriptions):
            subscription._deliver(event)
