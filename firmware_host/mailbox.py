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
from typing import Generic, TypeVar

__all__ = ["Mailbox"]

T = TypeVar("T")


class Mailbox(Generic[T]):
    """FIFO of at most ``maxsize`` items; senders wait while it is full."""

    __slots__ = ("maxsize", "_items", "_getter", "_putters")

    def __init__(self, maxsize: int) -> None:
        if maxsize <= 0:
            raise ValueError("maxsize must be > 0")
        self.maxsize = maxsize
        self._items: collections.deque[T] = collections.deque()
        self._getter: asyncio.Future[None] | None = None
        #: senders waiting for room, oldest first
        self._putters: collections.deque[asyncio.Future[None]] = collections.deque()

    def __len__(self) -> int:
        return len(self._items)

    def full(self) -> bool:
        return len(self._items) >= self.maxsize

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, item: T) -> bool:
        """Queue ``item`` and return True; False (nothing queued) when full,
        or when senders are already waiting for room (they go first)."""
        items = self._items
        if len(items) >= self.maxsize or self._putters:
            return False
        items.append(item)
        getter = self._getter
        if getter is not None:
            self._getter = None
            if not getter.done():
                getter.set_result(None)
        return True

    async def put(self, item: T) -> None:
        """Queue ``item``, waiting for room first if need be (in arrival order)."""
        if self.put_nowait(item):
            return
        fut = asyncio.get_running_loop().create_future()
        putters = self._putters
        putters.append(fut)
        try:
            while True:
                await fut
                if len(self._items) < self.maxsize:
                    break
                # woken, yet full again (a put_nowait cannot overtake us, but
                # be safe): wait at the head of the line for the next room
                fut = asyncio.get_running_loop().create_future()
                putters[0] = fut
        except BaseException:
            if putters and putters[0] is fut:
                putters.popleft()
                self._wake_putters()  # pass our turn on
            else:
                try:
                    putters.remove(fut)
                except ValueError:
                    pass
            raise
        putters.popleft()
        self._items.append(item)
        getter = self._getter
        if getter is not None:
            self._getter = None
            if not getter.done():
                getter.set_result(None)
        self._wake_putters()

    def _wake_putters(self) -> None:
        """Wake the first waiting sender if there is room for it."""
        putters = self._putters
        if putters and len(self._items) < self.maxsize:
            fut = putters[0]
            if not fut.done():
                fut.set_result(None)

    def take_all(self) -> list[T]:
        """Everything queued, oldest first (possibly nothing)."""
        items = self._items
        if not items:
            return []
        taken = list(items)
        items.clear()
        self._wake_putters()
        return taken

    async def wait(self) -> None:
        """Return once something is queued (at once if something is)."""
        if self._items:
            return
        getter = self._getter
        if getter is None or getter.done():
            getter = self._getter = asyncio.get_running_loop().create_future()
        await getter
