"""CancellationToken, modelled on tokio-util's.

A tree of tokens drives shutdown: cancelling a parent cancels every child,
never the reverse. Waiting on a token is an awaited event, never a poll.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")


async def reap(task: asyncio.Future[Any]) -> None:
    """Await ``task`` once it has been cancelled: its own CancelledError is the
    expected end and is swallowed, but a cancel of the caller while it waits
    is passed on. Swallowing that one too kept a cancelled drain delivering
    (with its retries) until the grace ran out, past a second signal."""
    current = asyncio.current_task()
    # counted from here, as asyncio.timeout does: a cancel its caller swallowed
    # before (never uncancelled) must not read as one made during this wait
    before = current.cancelling() if current is not None else 0
    try:
        await task
    except asyncio.CancelledError:
        if current is not None and current.cancelling() > before:
            raise


class CancellationToken:
    """A one-way, hierarchical cancellation signal."""

    __slots__ = ("__weakref__", "_cancelled", "_children", "_waiters")

    def __init__(self) -> None:
        self._cancelled = False
        self._waiters: list[asyncio.Future[None]] = []
        # weak: a finished task's child token must not be kept alive by its parent
        self._children: weakref.WeakSet[CancellationToken] = weakref.WeakSet()

    @property
    def is_cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        """Cancel this token and all its descendants (idempotent)."""
        if self._cancelled:
            return
        self._cancelled = True
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
        for child in list(self._children):
            child.cancel()

    def child_token(self) -> CancellationToken:
        """A token cancelled with this one; cancelling it leaves this one alone."""
        child = CancellationToken()
        if self._cancelled:
            child._cancelled = True
        else:
            self._children.add(child)
        return child

    async def cancelled(self) -> None:
        """Return once the token is cancelled (at once if it already is)."""
        if self._cancelled:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        finally:
            # a waiter cancelled from outside (its future cancelled with it)
            # must not accumulate in the list
            if not self._cancelled:
                try:
                    self._waiters.remove(fut)
                except ValueError:
                    pass

    async def run_until_cancelled(self, aw: Awaitable[T]) -> T | None:
        """Await ``aw``; if the token is cancelled first, cancel it and return None."""
        if self._cancelled:
            if asyncio.iscoroutine(aw):
                aw.close()  # never started: close it so no "never awaited" warning
            return None
        work = asyncio.ensure_future(aw)
        stop = asyncio.ensure_future(self.cancelled())
        try:
            await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if work.done():
            return work.result()
        work.cancel()
        await reap(work)
        return None

    def drop_guard(self) -> DropGuard:
        """A context manager that cancels this token on exit unless disarmed."""
        return DropGuard(self)

    def __repr__(self) -> str:
        return f"<CancellationToken cancelled={self._cancelled}>"


class DropGuard:
    """Cancels its token when the ``with`` block exits, unless ``disarm()``ed."""

    __slots__ = ("_token",)

    def __init__(self, token: CancellationToken) -> None:
        self._token: CancellationToken | None = token

    def disarm(self) -> CancellationToken:
        token, self._token = self._token, None
        assert token is not None, "guard already disarmed"
        return token

    def __enter__(self) -> DropGuard:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            self._token.cancel()

    async def __aenter__(self) -> DropGuard:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.__exit__()
