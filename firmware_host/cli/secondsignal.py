"""After a second signal ``run`` exits within a second, whatever is left.

The runtime gives the drain up at once (``Runtime.abort``), but what a sink
or a plugin leaves behind can still hold a process whose work is done:

- a thread that never returns: ``asyncio.run`` joins its default executor's
  threads (Python 3.11: without a timeout), and the interpreter joins every
  non-daemon thread at exit, ThreadPoolExecutor workers included;
- a task that swallows its cancel: ``asyncio.run`` awaits every task it
  cancels at the end;
- a loop that no longer runs (a sink blocking it), or any other wait.

``SecondSignal`` bounds all of it, from the second signal on: the loop's
teardown (``run_loop``) waits for leftover tasks only until ``TEARDOWN``
seconds after the signal and never joins the executor's threads; once the
summary and the lost line are out, a thread still alive ends the process
with ``os._exit`` instead of a join (``leave``); and a watchdog thread ends
it ``LIMIT`` seconds after the signal whatever it is doing (the last resort:
without a summary unless it was written by then). Before a second signal
nothing changes: the teardown is ``asyncio.run``'s.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
import types
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["LIMIT", "TEARDOWN", "SecondSignal", "run_loop"]

T = TypeVar("T")

#: seconds from a second signal to the exit, at the latest (the watchdog)
LIMIT = 1.0
#: seconds from a second signal that the loop's teardown may wait for leftover
#: tasks and that ``leave`` may wait for threads; the rest of ``LIMIT`` is for
#: the summary and the exit
TEARDOWN = 0.6
#: once the run is over without a second signal (``settle``): the same two
#: bounds, wider, since nothing asked for haste: room for the summary table
SETTLE_LIMIT = 5.0
SETTLE_TEARDOWN = 2.0
#: and the least ``leave`` then waits for threads, however long the summary took
SETTLE_JOIN = 1.0
#: seconds a flush of stdout / stderr may take before ``os._exit`` (a pipe nobody reads)
FLUSH_TIMEOUT = 0.1

EXIT_FAILURE = 1


class SecondSignal:
    """The deadline a second signal sets, and what enforces it."""

    def __init__(self, limit: float = LIMIT, teardown: float = TEARDOWN) -> None:
        self.limit = limit
        self.teardown = teardown
        #: monotonic time of the second signal (None: none yet)
        self.at: float | None = None
        #: the exit status the watchdog uses: 1 until ``leave`` knows better
        self.code = EXIT_FAILURE
        #: tasks that outlived the teardown (held: their "destroyed but
        #: pending" at exit would be noise after the line ``leave`` writes)
        self.tasks_left: list[asyncio.Task[Any]] = []
        self._watchdog: threading.Timer | None = None
        #: armed by ``settle`` (the run's end), not by a second signal
        self.settled = False
        #: what the watchdog's line says its limit was counted from
        self._since = "the second signal"
        #: threads alive before the run: the program's own (``run`` called
        #: in-process), never waited for nor a reason to leave
        self._before = frozenset(threading.enumerate())

    @property
    def received(self) -> bool:
        return self.at is not None

    def arm(self) -> None:
        """The second signal: from now on, the exit is bounded (idempotent)."""
        if self.at is not None:
            return
        self.at = time.monotonic()
        # a thread, not a loop timer: the loop may be what does not finish
        self._watchdog = threading.Timer(self.limit, self._expire)
        self._watchdog.name = "second-signal-watchdog"
        self._watchdog.daemon = True
        self._watchdog.start()

    def settle(self) -> None:
        """The run is over (drained, its grace spent, or failed): what a sink
        or a plugin left behind (a thread stuck in a write, a task deaf to its
        cancel) is bounded as after a second signal, with ``SETTLE_LIMIT`` and
        ``SETTLE_TEARDOWN``. Nothing changes if a second signal came first."""
        if self.at is not None:
            return
        self.limit, self.teardown = SETTLE_LIMIT, SETTLE_TEARDOWN
        self.settled = True
        self._since = "its end"
        self.arm()

    def left(self) -> float | None:
        """Seconds the teardown may still wait; None (no limit) before a second signal."""
        if self.at is None:
            return None
        return max(0.0, self.at + self.teardown - time.monotonic())

    def leave(self, code: int) -> None:
        """After a second signal (or ``settle``), with the summary and the lost line out:
        end the process now (``os._exit(code)``) if a thread would hold its
        exit, else return (the interpreter's exit runs as usual)."""
        if self.at is None:
            return
        self.code = code
        left = self.left() or 0.0
        # after a plain end, an idle executor worker gets a moment to see its shutdown
        deadline = time.monotonic() + max(left, SETTLE_JOIN if self.settled else FLUSH_TIMEOUT)
        others = [t for t in threading.enumerate() if not t.daemon and t not in self._before]
        for thread in others:  # (an idle executor worker ends at once: its executor was shut down)
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [f"thread {t.name}" for t in others if t.is_alive()]
        stuck += [f"task {_task_name(t)}" for t in self.tasks_left if not t.done()]
        if stuck:
            _say(f"firmware-host: exiting without waiting for {', '.join(sorted(stuck))}\n")
            _flush_bounded()
            os._exit(code)

    def _expire(self) -> None:
        _say(f"firmware-host: the run did not end within {self.limit:g}s of {self._since}: exiting now\n")
        _flush_bounded()
        os._exit(self.code)


def run_loop(
    main: Coroutine[Any, Any, T],
    new_loop: Callable[[], asyncio.AbstractEventLoop],
    second: SecondSignal,
    settle: bool = False,
) -> T:
    """``asyncio.run(main)`` on ``new_loop()``, whose teardown is bounded
    once ``second`` has been received (``SecondSignal``), or at once when
    ``main`` is done if ``settle``."""
    loop = new_loop()
    asyncio.set_event_loop(loop)  # as asyncio.run: the loop is this thread's while it runs
    try:
        return loop.run_until_complete(main)
    finally:
        if settle:
            second.settle()
        try:
            _teardown(loop, second)
        finally:
            asyncio.set_event_loop(None)
            loop.close()  # shuts the default executor down without waiting for its threads


def _teardown(loop: asyncio.AbstractEventLoop, second: SecondSignal) -> None:
    """What ``asyncio.run`` does at the end (cancel what is left, close the
    async generators, join the default executor), each wait bounded by
    ``second.left()`` once a second signal has come; the executor's threads
    are then not joined at all."""
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.wait(tasks, timeout=second.left()))
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            loop.call_exception_handler(
                {
                    "message": "unhandled exception during the run's teardown",
                    "exception": task.exception(),
                    "task": task,
                }
            )
    second.tasks_left = [t for t in tasks if not t.done()]
    closing = loop.run_until_complete(_bounded(loop.shutdown_asyncgens(), second.left()))
    if closing is not None:
        second.tasks_left.append(closing)
    if not second.received:
        loop.run_until_complete(loop.shutdown_default_executor())


async def _bounded(aw: Coroutine[Any, Any, None], timeout: float | None) -> asyncio.Task[None] | None:
    """Await ``aw`` for at most ``timeout`` seconds; the task, if left behind."""
    task = asyncio.ensure_future(aw)
    await asyncio.wait((task,), timeout=timeout)
    if task.done():
        return None
    task.cancel()  # not awaited: what ignores its cancel is left behind
    return task


def _task_name(task: asyncio.Task[Any]) -> str:
    coro = task.get_coro()
    return coro.__qualname__ if isinstance(coro, types.CoroutineType) else task.get_name()


def _say(text: str) -> None:
    """A line on stderr's descriptor: no lock of ``sys.stderr`` that a stuck thread may hold."""
    try:
        os.write(2, text.encode("utf-8", "replace"))
    except OSError:
        pass


def _flush_bounded() -> None:
    """Flush stdout and stderr from a daemon thread, given up after FLUSH_TIMEOUT."""
    done = threading.Event()

    def flush() -> None:
        for stream in (sys.stderr, sys.stdout):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        done.set()

    threading.Thread(target=flush, name="exit-flush", daemon=True).start()
    done.wait(FLUSH_TIMEOUT)
