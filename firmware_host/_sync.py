"""Small synchronisation primitives the pipeline is built on.

- ``Changes``: a cheap "something changed" pulse that observers await.
- ``Mailbox``: the aggregator's bounded inbox, many senders, one reader.
- ``ReadClock``: the tick that wakes every coalescing tty reader together.
- ``ReadGate``: where readers wait while the flusher catches up (backpressure).

Each is here because the obvious asyncio tool costs too much on the hot path
or polls; the why of each is in the comment above it.
"""

from __future__ import annotations

import asyncio
import collections
import sys
from typing import Generic, TypeVar

__all__ = ["READ_GATE_MAX_WAIT", "Changes", "Mailbox", "ReadClock", "ReadGate"]

#: the longest a reader waits at a closed ReadGate before reading anyway
READ_GATE_MAX_WAIT = 0.05

T = TypeVar("T")

# Changes: a cheap "something changed" signal that observers can await.
#
# The aggregator pokes it after every buffer change and readers after every
# read or state change; live views and tests await it instead of polling.
# With no observer, a poke is one attribute check.


class Changes:
    __slots__ = ("_fut",)

    def __init__(self) -> None:
        self._fut: asyncio.Future[None] | None = None

    def notify(self) -> None:
        fut = self._fut
        if fut is not None:
            self._fut = None
            if not fut.done():
                fut.set_result(None)

    def waiter(self) -> asyncio.Future[None]:
        """A future completed by the next ``notify``; take it *before* checking
        the condition, so a change in between is not missed."""
        if self._fut is None:
            self._fut = asyncio.get_running_loop().create_future()
        return self._fut


# Mailbox: the aggregator's bounded inbox, many senders and one reader.
#
# Why not ``asyncio.Queue``: every read of every port sends one message, and a
# queue's ``put_nowait`` and ``get`` each run four or five Python-level calls
# (``full``, ``qsize``, ``_put``, ``_wakeup_next``, the ``join`` bookkeeping),
# which the actor never needs. Here a send is a length check and an append, and
# the actor takes everything queued in one call (``take_all``), so a tick that
# wakes 48 readers costs the actor one wakeup and no call per message.


class Mailbox(Generic[T]):
    """FIFO of at most ``maxsize`` items (0 or less: unbounded, as with
    ``asyncio.Queue``); senders wait while it is full."""

    __slots__ = ("_arrived", "_items", "_limit", "_putters", "maxsize")

    def __init__(self, maxsize: int = 0) -> None:
        self.maxsize = maxsize
        self._limit = maxsize if maxsize > 0 else sys.maxsize
        self._items: collections.deque[T] = collections.deque()
        #: poked on every arrival; the reader awaits it when the box is empty
        self._arrived = Changes()
        #: senders waiting for room, oldest first; a woken one (its future
        #: done) holds a place until it has run
        self._putters: collections.deque[asyncio.Future[None]] = collections.deque()

    def __len__(self) -> int:
        return len(self._items)

    def full(self) -> bool:
        return len(self._items) >= self._limit

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, item: T) -> bool:
        """Queue ``item`` and return True; False (nothing queued) when full,
        or when senders are already waiting for room (they go first)."""
        items = self._items
        if len(items) >= self._limit or self._putters:
            return False
        items.append(item)
        self._arrived.notify()
        return True

    async def put(self, item: T) -> None:
        """Queue ``item``, waiting for room first if need be (in arrival order)."""
        if self.put_nowait(item):
            return
        fut = asyncio.get_running_loop().create_future()
        putters = self._putters
        putters.append(fut)
        try:
            await fut  # woken only with a place held for us (_wake_putters)
        except BaseException:
            try:
                putters.remove(fut)
            except ValueError:
                pass
            self._wake_putters()  # a place we held goes to the next in line
            raise
        putters.remove(fut)  # at or near the head: woken in arrival order
        self._items.append(item)
        self._arrived.notify()

    def _wake_putters(self) -> None:
        """Wake as many waiting senders, oldest first, as there is room for."""
        room = self._limit - len(self._items)
        for fut in self._putters:
            if room <= 0:
                break
            if not fut.done():
                fut.set_result(None)
            room -= 1  # woken and not run yet: its place is taken

    def take_all(self) -> list[T]:
        """Everything queued, oldest first (possibly nothing)."""
        items = self._items
        if not items:
            return []
        taken = list(items)
        items.clear()
        if self._putters:
            self._wake_putters()
        return taken

    async def wait(self) -> None:
        """Return once something is queued (at once if something is)."""
        if not self._items:
            await self._arrived.waiter()


# ReadClock: one shared tick that wakes every coalescing tty reader together.
#
# Each busy port used to sleep ``READ_COALESCE`` on a timer of its own, so 48
# ports meant 48 timers, 48 loop iterations and 48 aggregator wakeups per
# period, spread over time. On one clock the readers wake in the same loop
# iteration, read, offer, and the aggregator takes all their messages in one
# step. The clock runs only while someone waits: silent ports wait for
# readiness instead, so an idle runtime schedules no timer at all.
#
# The serial backend (transport/serial.py) owns its clock, with the period
# from ``[serial] read_coalesce``; a period of 0 means "do not coalesce".


class ReadClock:
    """Hands out futures completed at the next tick (at most ``period`` away)."""

    __slots__ = ("_loop", "_timer", "_waiters", "period")

    def __init__(self, period: float) -> None:
        self.period = period
        self._waiters: list[asyncio.Future[None]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Serve ``loop`` from now on (a port calls this once, as it opens).

        A clock outlives an event loop when its backend is reused by a later
        ``asyncio.run``: the timer and waiters left by the old loop would
        never fire there, so they are dropped (one event loop at a time).
        """
        if loop is not self._loop:
            self._loop = loop
            self._timer = None
            self._waiters = []

    def tick(self) -> asyncio.Future[None]:
        """A future of the waiter's own: cancelling it (a reader stopping)
        leaves the other waiters alone."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._waiters.append(fut)
        if self._timer is None:
            self._timer = loop.call_later(self.period, self._fire)
        return fut

    def _fire(self) -> None:
        self._timer = None
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def scheduled(self) -> bool:
        """A tick is due (someone waits for it)."""
        return self._timer is not None


class ReadGate:
    """Readers pass it before every read; the flusher closes it while it works
    through a backlog of full batches.

    A runtime that is short of CPU then spends it delivering the frames it
    already holds instead of reading more only to drop them; the unread bytes
    wait in the kernel's tty buffer. The gate reopens by itself
    ``READ_GATE_MAX_WAIT`` after it closed, so under sustained overload (a slow
    or failing sink) reading goes on and drop-oldest applies as before.
    """

    __slots__ = ("_fut", "_timer")

    def __init__(self) -> None:
        self._fut: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    @property
    def closed(self) -> bool:
        return self._fut is not None

    def close(self, max_wait: float = READ_GATE_MAX_WAIT) -> None:
        if self._fut is None:
            loop = asyncio.get_running_loop()
            self._fut = loop.create_future()
            self._timer = loop.call_later(max_wait, self.open)

    def open(self) -> None:
        fut, self._fut = self._fut, None
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def wait(self) -> None:
        """Return when the gate is open (at once if it is)."""
        fut = self._fut
        if fut is not None:
            await asyncio.shield(fut)  # a cancelled reader must not cancel the gate for all


async def wait_set(event: asyncio.Event, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``event``; False when it did not come."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True
