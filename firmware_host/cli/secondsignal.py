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
seconds after the signal and never joins the executor's threads; the final
table gets what is left of the second; once the summary and the lost line
are out, a thread the run started that is still alive ends the process with
``os._exit`` instead of a join (``leave``); and a watchdog thread ends it
``LIMIT`` seconds after the signal whatever it is doing (the last resort:
without a summary unless it was written by then). Before a second signal
the teardown is ``asyncio.run``'s, its waits (leftover tasks, async
generators, the executor's threads) bounded together by ``SETTLE_TEARDOWN``
seconds from its start, for a program that calls ``run_main`` too: what is
still running then is left, and named on stderr by ``leave``.

When the process is the CLI's, the end of any run is bounded too, more
widely: the teardown by ``SETTLE_TEARDOWN`` (``settle``), and the
interpreter's own exit (its atexit hooks, its joins of the threads the run
left) by a watchdog of ``EXIT_LIMIT`` seconds started by ``leave`` that exits
with the run's status, naming what still ran. A SIGINT or SIGTERM once the
run's own handlers are gone is a second signal (``late_signal``). A program
that calls ``run_main`` itself is never ended by any of it: no watchdog is
started for it, and threads that ran before the run are never waited for.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import sys
import threading
import time
import types
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["LIMIT", "TEARDOWN", "SecondSignal", "run_loop", "within"]

T = TypeVar("T")

#: seconds from a second signal to the exit, at the latest (the watchdog)
LIMIT = 1.0
#: seconds from a second signal that the loop's teardown may wait for leftover
#: tasks and that ``leave`` may wait for threads; the rest of ``LIMIT`` is for
#: the summary and the exit (also for a signal that comes once the run is over)
TEARDOWN = 0.6
#: once the run is over without a second signal (``settle``): the loop's
#: teardown, wider, since nothing asked for haste
SETTLE_TEARDOWN = 2.0
#: seconds the interpreter's own exit may take after ``leave`` (atexit hooks,
#: the joins of threads the run left) when this process is the CLI's
EXIT_LIMIT = 3.0
#: seconds a flush of stdout / stderr may take before ``os._exit`` (a pipe nobody reads)
FLUSH_TIMEOUT = 0.1
#: the margin kept for the lost line when the output is bounded by the limit
OUTPUT_MARGIN = 0.15

EXIT_FAILURE = 1


class SecondSignal:
    """The bounds a second signal (or the run's end, ``settle``) sets, and
    what enforces them. ``exiting``: the process ends when the run returns
    (the CLI); only then may a watchdog or ``leave`` end it with ``os._exit``."""

    def __init__(self, exiting: bool = True) -> None:
        self.exiting = exiting
        #: monotonic deadline of the loop's teardown set by a second signal or
        #: ``settle`` (None: neither came; the teardown's own bound still holds)
        self.teardown_by: float | None = None
        #: the teardown's own bound, SETTLE_TEARDOWN from its start (``begin_teardown``)
        self._teardown_own_by: float | None = None
        #: monotonic time of the second signal (None: none came)
        self.hurried_at: float | None = None
        #: the exit status a watchdog uses: 1 until ``leave`` knows better
        self.code = EXIT_FAILURE
        #: tasks that outlived the teardown (held: their "destroyed but
        #: pending" at exit would be noise after the line ``leave`` writes)
        self.tasks_left: list[asyncio.Task[Any]] = []
        self._watchdog: threading.Timer | None = None
        #: threads alive before the run: the program's own (``run`` called
        #: in-process), never waited for nor a reason to leave
        self._before = frozenset(threading.enumerate())

    @property
    def received(self) -> bool:
        """The teardown is bounded (a second signal, or the run's end)."""
        return self.teardown_by is not None

    def arm(self) -> None:
        """A second signal (or a signal once the run is over): from now on
        the exit takes at most ``LIMIT`` seconds (idempotent)."""
        if self.hurried_at is not None:
            return
        now = self.hurried_at = time.monotonic()
        self.teardown_by = min(self.teardown_by or math.inf, now + TEARDOWN)
        self._start_watchdog(LIMIT, f"the run did not end within {LIMIT:g}s of the second signal")

    def settle(self) -> None:
        """The run is over (drained, its grace spent, or failed): the loop's
        teardown (tasks deaf to their cancel, the executor's threads) is
        bounded by ``SETTLE_TEARDOWN``. The summary and the table are not:
        the interpreter's exit is, from ``leave`` on."""
        if self.teardown_by is None:
            self.teardown_by = time.monotonic() + SETTLE_TEARDOWN

    def left(self) -> float | None:
        """Seconds the teardown may still wait; None (no limit) before a second signal."""
        if self.teardown_by is None:
            return None
        return max(0.0, self.teardown_by - time.monotonic())

    def begin_teardown(self) -> None:
        """The loop's teardown starts: its waits together get at most
        ``SETTLE_TEARDOWN`` seconds from now, whatever else bounds them."""
        if self._teardown_own_by is None:
            self._teardown_own_by = time.monotonic() + SETTLE_TEARDOWN

    def task_wait(self) -> float:
        """Seconds the teardown may still wait for the run's leftover tasks,
        generators and executor threads: to the earlier of its own bound
        (``begin_teardown``) and ``teardown_by``. Bounded for a program that
        calls ``run_main`` too: a task deaf to its cancel or a thread stuck in
        a write must not keep the call from returning."""
        bounds = [by for by in (self.teardown_by, self._teardown_own_by) if by is not None]
        if not bounds:
            return SETTLE_TEARDOWN
        return max(0.0, min(bounds) - time.monotonic())

    def output_time(self, wanted: float) -> float:
        """How long the final table may take to print: ``wanted``, or after a
        second signal what is left of its limit, less a margin for the lost line."""
        if self.hurried_at is None:
            return wanted
        return min(wanted, max(0.0, self.hurried_at + LIMIT - time.monotonic() - OUTPUT_MARGIN))

    def leave(self, code: int) -> None:
        """The summary and the lost line are out. After a second signal, a
        thread the run started that would hold the exit ends the process now
        (``os._exit(code)``) when ``exiting``; an in-process caller keeps its
        process, told what still runs. Then, when ``exiting``, a watchdog
        bounds the interpreter's own exit (atexit hooks, joins of the threads
        the run left): what is left of the second signal's second, else
        ``EXIT_LIMIT`` (where a thread stuck after one signal is given up)."""
        self.code = code
        self.disarm()
        if self.hurried_at is not None:
            deadline = time.monotonic() + max(self.left() or 0.0, FLUSH_TIMEOUT)
            others = self._threads()
            for thread in others:  # (an idle executor worker ends at once: its executor was shut down)
                thread.join(max(0.0, deadline - time.monotonic()))
            stuck = [f"thread {t.name}" for t in others if t.is_alive()]
            stuck += self._tasks_still_left()
            if stuck and self.exiting:
                _say(f"firmware-host: exiting without waiting for {', '.join(sorted(stuck))}\n")
                _flush_bounded()
                os._exit(code)
            if stuck:
                _say(f"firmware-host: the run returns with {', '.join(sorted(stuck))} still running\n")
        else:
            # one signal or none: the teardown gave these up after SETTLE_TEARDOWN; say so, as a
            # task that failed is never silently gone
            left = sorted(self._tasks_still_left())
            if not self.exiting:
                # a program's own run_main: the threads the run started (the default executor's)
                # get what is left of the teardown's bound, at least a moment for an idle worker
                # to end; the CLI's exit watchdog names its own
                threads = self._threads()
                deadline = time.monotonic() + max(self.task_wait(), FLUSH_TIMEOUT)
                for thread in threads:
                    thread.join(max(0.0, deadline - time.monotonic()))
                left += sorted(f"thread {t.name}" for t in threads if t.is_alive())
            if left:
                _say(
                    f"firmware-host: the run's end gave up waiting for {', '.join(left)}"
                    f" (still running after {SETTLE_TEARDOWN:g}s)\n"
                )
        self._bound_exit()

    def _tasks_still_left(self) -> list[str]:
        """The tasks the teardown gave up that still run, each named once."""
        return list(dict.fromkeys(f"task {_task_name(t)}" for t in self.tasks_left if not t.done()))

    def failing(self) -> None:
        """The run is leaving by an exception (click's Abort, a bug): its exit
        is bounded like any (status 1); never for an in-process caller."""
        self._bound_exit()

    def _bound_exit(self) -> None:
        """The watchdog of the interpreter's own exit: what is left of the
        second signal's second, else ``EXIT_LIMIT``."""
        if self.hurried_at is None:
            self._start_watchdog(EXIT_LIMIT, f"the process did not exit within {EXIT_LIMIT:g}s of the run's end")
            return
        rest = max(FLUSH_TIMEOUT, self.hurried_at + LIMIT - time.monotonic())
        self._start_watchdog(rest, f"the process did not exit within {LIMIT:g}s of the second signal")

    def late_signal(self, signum: int, _frame: object) -> None:
        """A SIGINT or SIGTERM once the run's own handlers are gone (its drain
        over; the teardown, the summary or the exit under way): a second
        signal, which bounds what is left to one second."""
        if self.hurried_at is None:
            # an in-process caller's process stays: only the run's end is hurried
            now = "exiting now" if self.exiting else "ending the run now"
            _say(f"firmware-host: {signal.Signals(signum).name} again: {now}\n")
        self.arm()

    def disarm(self) -> None:
        """The watchdog stood down."""
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.cancel()

    def _threads(self) -> list[threading.Thread]:
        """The non-daemon threads the run started that are still alive."""
        return [t for t in threading.enumerate() if not t.daemon and t not in self._before and t.is_alive()]

    def _start_watchdog(self, limit: float, why: str) -> None:
        self.disarm()
        if not self.exiting:  # a program that called run_main owns its process
            return
        # a thread, not a loop timer: the loop may be what does not finish
        watchdog = threading.Timer(limit, self._expire, args=(why,))
        watchdog.name = "exit-watchdog"
        watchdog.daemon = True
        self._watchdog = watchdog
        watchdog.start()

    def _expire(self, why: str) -> None:
        left = sorted(t.name for t in self._threads())
        waiting = f" (still running: {', '.join(left)})" if left else ""
        _say(f"firmware-host: {why}: exiting now{waiting}\n")
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
    async generators), the waits bounded by ``second.task_wait()``. The
    default executor's threads are not joined here (``leave`` waits for an
    in-process run's within the bound; the CLI's exit has its watchdog)."""
    second.begin_teardown()
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.wait(tasks, timeout=second.task_wait()))
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
    closing = loop.run_until_complete(_bounded(loop.shutdown_asyncgens(), second.task_wait()))
    if closing is not None:
        second.tasks_left.append(closing)
    # the default executor is not joined here (loop.close shuts it down without waiting): a
    # join cannot be bounded once begun (Python 3.11's shutdown_default_executor joins again,
    # without a timeout, when cancelled). ``leave`` waits for its threads, within the bound


async def _bounded(aw: Coroutine[Any, Any, None], timeout: float) -> asyncio.Task[None] | None:
    """Await ``aw`` for at most ``timeout`` seconds; the task, if left behind."""
    task = asyncio.ensure_future(aw)
    await asyncio.wait((task,), timeout=timeout)
    if task.done():
        return None
    task.cancel()  # not awaited: what ignores its cancel is left behind
    return task


def _task_name(task: asyncio.Task[Any]) -> str:
    """The name its creator gave it, else its coroutine's (asyncio's own "Task-N" says nothing)."""
    name = task.get_name()
    coro = task.get_coro()
    if name.startswith("Task-") and isinstance(coro, types.CoroutineType):
        return coro.__qualname__
    return name


def within(timeout: float, work: Callable[[], None], name: str) -> bool:
    """Run ``work`` in a daemon thread; True if it ended within ``timeout``,
    else it is left running: a write blocked on a pipe nobody reads must not
    hold an exit (and a daemon thread holds no lock the exit needs)."""
    done = threading.Event()

    def run() -> None:
        try:
            work()
        finally:
            done.set()

    threading.Thread(target=run, name=name, daemon=True).start()
    return done.wait(timeout)


def _say(text: str) -> None:
    """A line on stderr's descriptor (no lock of ``sys.stderr`` that a stuck
    thread may hold), given up after FLUSH_TIMEOUT."""
    data = text.encode("utf-8", "replace")

    def write() -> None:
        try:
            os.write(2, data)
        except OSError:
            pass

    within(FLUSH_TIMEOUT, write, "exit-line")


def _flush_bounded() -> None:
    """Flush stdout and stderr, given up after FLUSH_TIMEOUT."""

    def flush() -> None:
        for stream in (sys.stderr, sys.stdout):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass

    within(FLUSH_TIMEOUT, flush, "exit-flush")
