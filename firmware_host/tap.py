"""Live taps on the frames the buffer accepts: what ``tail``, ``request`` and
the test kit's ``expect`` watch.

The aggregator publishes each offered read to every subscription (one
reference per read and subscriber, never a copy per frame), and nothing when
there is none: a tap costs the pipeline nothing until someone subscribes. A
subscription holds at most ``limit`` frames; a subscriber that falls behind
loses the oldest it holds, and the loss is counted and handed to it with the
next frames it takes. Nothing a subscriber does (or fails to do) can slow or
block the actor.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterable, Sequence
from types import TracebackType

from firmware_host._sync import wait_set
from firmware_host.frames import Frame

#: frames a subscription holds when its subscriber does not say
DEFAULT_LIMIT = 10_000
#: the most a subscriber may ask to hold (a bound on what one tap can cost)
MAX_LIMIT = 1_000_000


class Subscription:
    """One subscriber's bounded view of the frames offered from now on.

    Use it as an async context manager (or call ``close``) so the tap stops
    publishing to it.
    """

    __slots__ = ("_chunks", "_held", "_lost", "_ready", "_tap", "closed", "devices", "limit", "lost")

    def __init__(self, tap: FrameTap, devices: frozenset[str] | None, limit: int) -> None:
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"a subscription holds 1 to {MAX_LIMIT} frames, not {limit}")
        self._tap = tap
        #: the devices watched; None: all of them
        self.devices = devices
        self.limit = limit
        self._chunks: collections.deque[Sequence[Frame]] = collections.deque()
        self._held = 0
        #: frames lost since the subscriber last took some
        self._lost = 0
        #: frames lost over the subscription's life
        self.lost = 0
        self._ready = asyncio.Event()
        #: no more frames will come (closed by the subscriber, or the runtime stopped)
        self.closed = False

    def put(self, device: str, frames: Sequence[Frame]) -> None:
        """The actor's side: one offered read (a sequence nobody changes later)."""
        devices = self.devices
        if devices is not None and device not in devices:
            return
        self._chunks.append(frames)
        self._held += len(frames)
        excess = self._held - self.limit
        if excess > 0:
            self._shed(excess)
        self._ready.set()

    def _shed(self, excess: int) -> None:
        # drop the oldest held frames: a live view keeps what is newest
        chunks = self._chunks
        self._held -= excess
        self._lost += excess
        self.lost += excess
        while excess:
            first = chunks[0]
            if len(first) <= excess:
                chunks.popleft()
                excess -= len(first)
            else:
                chunks[0] = first[excess:]
                excess = 0

    def take(self) -> tuple[list[Frame], int]:
        """Every frame held, oldest first, and how many were lost before
        them since the last take; both empty when nothing came."""
        frames = [f for chunk in self._chunks for f in chunk]
        lost = self._lost
        self._chunks.clear()
        self._held = 0
        self._lost = 0
        self._ready.clear()
        return frames, lost

    async def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for frames (or a loss); False when none came."""
        if self._held or self._lost or self.closed:
            return True
        return await wait_set(self._ready, timeout)

    def close(self) -> None:
        """Stop receiving; a waiting subscriber wakes."""
        if not self.closed:
            self.closed = True
            self._tap.unsubscribe(self)
            self._ready.set()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class FrameTap:
    """The subscriptions of one aggregator. The actor calls ``publish`` for
    each offered read, only while ``subscribers`` is non-empty."""

    __slots__ = ("closed", "subscribers")

    def __init__(self) -> None:
        #: kept as the same list for the tap's life: the actor holds a reference to it
        self.subscribers: list[Subscription] = []
        #: the runtime stopped: no frame will come, a late subscriber gets a closed subscription
        self.closed = False

    def subscribe(self, devices: Iterable[str] | None = None, limit: int = DEFAULT_LIMIT) -> Subscription:
        """Frames offered from now on, of ``devices`` (None: all); closed at
        once when the runtime already stopped (else it would wait forever)."""
        sub = Subscription(self, None if devices is None else frozenset(devices), limit)
        if self.closed:  # one waiting for frames would wait its whole timeout for nothing
            sub.closed = True
            sub._ready.set()
        else:
            self.subscribers.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        try:
            self.subscribers.remove(sub)
        except ValueError:
            pass

    def publish(self, device: str, frames: Sequence[Frame]) -> None:
        # one copy shared by every subscriber: the reader may reuse its list
        frames = tuple(frames)
        for sub in self.subscribers:
            sub.put(device, frames)

    def close_all(self) -> None:
        """The runtime is stopping: every subscriber wakes to a closed subscription."""
        self.closed = True
        for sub in list(self.subscribers):
            sub.close()
