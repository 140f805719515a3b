"""Mailbox: the aggregator's bounded inbox, many senders and one reader.

Why not ``asyncio.Queue``: every read of every port sends one message, and a
queue's ``put_nowait`` and ``get`` each run four or five Python-level calls
(``full``, ``qsize``, ``_put``, ``_wakeup_next``, the ``join`` bookkeeping),
which the actor never needs. Here a send is a length check and an append, and
the actor takes everything queued in one call (``take_all``), so a tick that
wakes 48 readers costs the actor one wakeup and no call per message.
"""

from __future__ import annotations

import asyncio
import collections
import sys
from typing import Generic, TypeVar

from .watch import Changes

__all__ = ["Mailbox"]

T = TypeVar("T")


class Mailbox(Generic[T]):
    """FIFO of at most ``maxsize`` items (0 or less: unbounded, as with
    ``asyncio.Queue``); senders wait while it is full."""

    __slots__ = ("maxsize", "_limit", "_items", "_arrived", "_putters")

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
