"""Changes: a cheap "something changed" signal that observers can await.

The aggregator pokes it after every buffer change and readers after every
read or state change; live views and tests await it instead of polling.
With no observer, a poke is one attribute check.
"""

from __future__ import annotations

import asyncio


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
