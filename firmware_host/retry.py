"""Retrying a batch source's faults (a spool on a full disk) with backoff, and
waiting for a lock or a backoff under a deadline.

Shared by the sink lanes and the spooler: a fault of the source itself is
counted, shown in status until an attempt succeeds, logged sparsely, and
retried with capped exponential backoff; it never ends a task.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from firmware_host._sync import Changes
from firmware_host.cancel import CancellationToken

log = logging.getLogger("firmware_host.retry")

T = TypeVar("T")


async def acquire(lock: asyncio.Lock, deadline: float | None) -> bool:
    """Take ``lock``, giving up at ``deadline`` (False): a delivery stuck
    retrying a dead sink must not hang a CLI flush or the drain for ever."""
    if deadline is None:
        await lock.acquire()
        return True
    try:
        await asyncio.wait_for(lock.acquire(), max(0.0, deadline - time.monotonic()))
    except TimeoutError:
        return False
    return True


async def backoff(delay: float, deadline: float | None, token: CancellationToken | None) -> bool:
    """Sleep ``delay`` (cut to the deadline); False when the deadline has
    passed or ``token`` was cancelled (stop retrying)."""
    if deadline is not None:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        delay = min(delay, left)
    if token is None:
        await asyncio.sleep(delay)
        return True
    return await token.run_until_cancelled(asyncio.sleep(delay, True)) is True


class SourceFaults:
    """The last fault of one source (``error``, until an attempt succeeds)
    and how many there were."""

    def __init__(self, what: str, changes: Changes, *, backoff_initial: float = 0.1, backoff_max: float = 5.0) -> None:
        self.what = what
        self.changes = changes
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.error: str | None = None
        self.failures = 0

    def failed(self, exc: BaseException, what: str | None = None) -> None:
        self.failures += 1
        self.error = f"{type(exc).__name__}: {exc}"
        if self.failures == 1 or self.failures % 100 == 0:
            log.error("%s failed (%d so far): %s", what or self.what, self.failures, self.error)
        self.changes.notify()

    def cleared(self) -> None:
        if self.error is not None:
            self.error = None
            self.changes.notify()

    async def retry(
        self,
        attempt: Callable[[], Awaitable[T]],
        faults: tuple[type[Exception], ...],
        deadline: float | None,
        token: CancellationToken | None,
        what: str | None = None,
    ) -> T | None:
        """``attempt()`` until it succeeds; a fault (one of ``faults``) is
        counted and retried with backoff. None when the deadline or ``token``
        stopped the retries."""
        delay = self.backoff_initial
        while True:
            try:
                result = await attempt()
            except faults as exc:
                self.failed(exc, what)
            else:
                self.cleared()
                return result
            if not await backoff(delay, deadline, token):
                return None
            delay = min(delay * 2, self.backoff_max)
