"""One writer thread per sink: blocking I/O off the loop, one call at a time.

A thread cannot be cancelled. When the flusher gives up on a write (its
``timeout``, the drain's deadline, a second signal) the call goes on in the
thread; the sink must not start a second one beside it, or two writes would
interleave their lines in the file. So a call while the last one still runs
is refused at once with ``WriterBusy`` (a failed write, retried with backoff
like any other), and the retry runs once the stuck call has returned.

The thread is a daemon: a write blocked for ever (a pipe nobody reads, a
hung NFS server) must not keep the process alive after the runtime has
given up on it. What runs here must therefore not hold a lock the
interpreter takes at exit (write to raw file descriptors, not to
``sys.stdout``'s buffered object).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Job = tuple["concurrent.futures.Future[Any]", Callable[..., Any], tuple[Any, ...]]


class WriterBusy(Exception):
    """The sink's previous call, abandoned by a deadline, is still running."""


class WriterThread:
    """Runs one call at a time in a daemon thread of its own (started lazily)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._last: concurrent.futures.Future[Any] | None = None

    @property
    def busy(self) -> bool:
        """True while a call (possibly one the caller gave up on) is running."""
        return self._last is not None and not self._last.done()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self.busy:
            raise WriterBusy(f"{self.name}: the previous write has not returned yet")
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
            self._thread.start()
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._last = fut
        self._jobs.put((fut, fn, args))
        return await asyncio.wrap_future(fut)

    def stop(self) -> None:
        """Let the thread end after its current call (never waits for it)."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread = None

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fut, fn, args = job
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to the awaiting coroutine
                fut.set_exception(exc)
            else:
                fut.set_result(result)
