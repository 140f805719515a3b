"""ReadClock: one shared tick that wakes every coalescing tty reader together.

Each busy port used to sleep ``READ_COALESCE`` on a timer of its own, so 48
ports meant 48 timers, 48 loop iterations and 48 aggregator wakeups per
period, spread over time. On one clock the readers wake in the same loop
iteration, read, offer, and the aggregator takes all their messages in one
step. The clock runs only while someone waits: silent ports wait for
readiness instead, so an idle runtime schedules no timer at all.
"""

from __future__ import annotations

import asyncio
import weakref

__all__ = ["ReadClock", "read_clock"]


class ReadClock:
    """Hands out futures completed at the next tick (at most ``period`` away)."""

    # No reference to the loop: the clock is the value of a weak-keyed map
    # from its loop, and a strong one would keep every closed loop alive.
    __slots__ = ("period", "_waiters", "_timer")

    def __init__(self, period: float) -> None:
        self.period = period
        self._waiters: list[asyncio.Future[None]] = []
        self._timer: asyncio.TimerHandle | None = None

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


_clocks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ReadClock] = weakref.WeakKeyDictionary()


def read_clock(default: float) -> ReadClock:
    """The running loop's clock (one per loop: tests run many loops), made
    with period ``default`` on first use. The runtime sets its ``period`` from
    ``[serial] read_coalesce``; a period of 0 means "do not coalesce"."""
    loop = asyncio.get_running_loop()
    clock = _clocks.get(loop)
    if clock is None:
        clock = _clocks[loop] = ReadClock(default)
    return clock
