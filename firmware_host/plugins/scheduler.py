"""Periodic tasks for plugins: absolute-time grid, no overlap, timeouts,
failure backoff and missed-tick policies.

A task's ticks lie on a grid ``T_n = base + n * interval`` of ``loop.time()``
(the first run is at ``T_1``, one interval after the task starts). The loop
sleeps until the next due tick with ``loop.call_at`` — nothing polls. When
the scheduler gets control at ``now`` for a tick due at ``T_k`` it computes
``behind = floor((now - T_k) / interval)``: how many *further* ticks also
came due meanwhile (the loop was blocked, or the previous run was long).
``behind == 0`` is ordinary lateness (jitter): the tick runs. Otherwise the
tick still runs at once, and the policy decides what happens next:

``skip``   the ``behind`` missed ticks are dropped (counted in ``missed``);
           the next run is at the next grid point after now, ``T_{k+behind+1}``.
``delay``  the ``behind`` ticks are dropped (counted in ``missed``) and the
           grid is re-based on now: the next run is at ``now + interval``.
``burst``  every missed tick gets its own run, back to back, then the task
           continues on the original grid (at most ``BURST_LIMIT`` catch-up
           runs in a row; ticks beyond that are counted in ``missed``).

Runs of one task never overlap: the next run starts only after the current
one has ended. A run longer than its ``timeout`` is cancelled and counted in
``overruns``. An exception is logged and counted in ``failures``. Each
failure or overrun extends a streak; after ``k`` in a row the task sits out
``min(2**(k-1) - 1 intervals, 60 s)`` (ticks in that window are counted in
``backed_off``). A clean run ends the streak.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

MissedTick = str  # "skip" | "delay" | "burst"
MISSED_POLICIES: tuple[str, ...] = ("skip", "delay", "burst")
#: longest pause after consecutive failures
BACKOFF_MAX = 60.0
#: most catch-up runs in a row under "burst" (a loop blocked for an hour must not
#: turn into thousands of back-to-back runs)
BURST_LIMIT = 100
#: lateness samples kept for the jitter percentiles
JITTER_SAMPLES = 1024

TaskFn = Callable[[], Awaitable[Any]]


@dataclass
class TaskStats:
    runs: int = 0
    failures: int = 0
    overruns: int = 0
    missed: int = 0
    backed_off: int = 0
    streak: int = 0  # consecutive failures + overruns
    last_run: float | None = None  # time.time() at the start of the last run
    last_duration: float | None = None
    last_error: str | None = None


class PeriodicTask:
    """One plugin's periodic task (created by ``PluginContext.every``)."""

    def __init__(
        self,
        plugin: str,
        name: str,
        interval: float,
        fn: TaskFn,
        *,
        missed: MissedTick = "skip",
        timeout: float | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        if not (
            isinstance(interval, (int, float))
            and not isinstance(interval, bool)
            and math.isfinite(interval)
            and interval > 0
        ):
            raise ValueError(f"interval must be a finite number of seconds > 0, got {interval!r}")
        if missed not in MISSED_POLICIES:
            raise ValueError(f"missed must be one of {', '.join(MISSED_POLICIES)}, got {missed!r}")
        if timeout is not None and not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"timeout must be None or a number of seconds > 0, got {timeout!r}")
        if not callable(fn):
            raise TypeError(f"task {name!r}: {fn!r} is not callable")
        self.plugin = plugin
        self.name = name
        self.interval = float(interval)
        self.fn = fn
        self.missed_policy = missed
        self.timeout = None if timeout is None else float(timeout)
        self.log = log or logging.getLogger(f"firmware_host.plugins.{plugin}")
        self.stats = TaskStats()
        #: lateness (seconds) of runs started for an on-time tick
        self.lateness: deque[float] = deque(maxlen=JITTER_SAMPLES)
        self._stopping = False
        self._wake: asyncio.Future[None] | None = None
        self._next_due: float | None = None
        self._current: asyncio.Task[Any] | None = None
        self._current_started: float | None = None
        self._loop_task: asyncio.Task[None] | None = None
        #: called after every run (the runtime's change signal: ``wait_until`` sees task progress)
        self.notify: Callable[[], None] | None = None

    # -- control ------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        self._loop_task = asyncio.create_task(self._loop(), name=f"plugin:{self.plugin}:{self.name}")
        return self._loop_task

    def stop(self) -> None:
        """Take no new runs; a run in progress continues (see ``cancel``)."""
        self._stopping = True
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def cancel(self) -> None:
        """Hard stop: cancel the run in progress too."""
        self.stop()
        if self._loop_task is not None:
            self._loop_task.cancel()

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._loop_task

    @property
    def running(self) -> bool:
        return self._current is not None and not self._current.done()

    # -- the loop -------------------------------------------------------------------

    async def _sleep_until(self, when: float) -> bool:
        """Sleep until ``when`` (loop time); False when stopped meanwhile."""
        if self._stopping:
            return False
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._wake = fut
        handle = loop.call_at(when, _set_result, fut)
        try:
            await fut
        finally:
            handle.cancel()
            self._wake = None
        return not self._stopping

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        iv = self.interval
        base, k = loop.time(), 1
        burst_run = 0
        while True:
            due = base + k * iv
            self._next_due = due
            if not await self._sleep_until(due):
                return
            now = loop.time()
            behind = max(0, int((now - due) // iv))
            if behind == 0:
                self.lateness.append(max(0.0, now - due))
                burst_run = 0
                k += 1
            elif self.missed_policy == "skip":
                self.stats.missed += behind
                k += behind + 1
            elif self.missed_policy == "delay":
                self.stats.missed += behind
                base, k = now, 1
            else:  # burst: this run is for T_k; T_{k+1} is due already, so it runs right after
                burst_run += 1
                if burst_run > BURST_LIMIT:
                    self.stats.missed += behind
                    k += behind + 1
                    burst_run = 0
                else:
                    k += 1
            await self._run_once()
            if self.stats.streak > 1 and not self._stopping:
                # exponential backoff: sit out the ticks inside the pause window
                pause = min(BACKOFF_MAX, iv * (2 ** min(self.stats.streak - 1, 30) - 1))
                resume = loop.time() + pause
                next_due = base + k * iv
                if next_due < resume:
                    skipped = math.ceil((resume - next_due) / iv)
                    self.stats.backed_off += skipped
                    k += skipped

    async def _run_once(self) -> None:
        loop = asyncio.get_running_loop()
        stats = self.stats
        stats.runs += 1
        stats.last_run = time.time()
        started = self._current_started = loop.time()
        current = self._current = asyncio.ensure_future(self._call())
        try:
            done, _ = await asyncio.wait({current}, timeout=self.timeout)
        except asyncio.CancelledError:
            # hard stop at the shutdown deadline: take the run down with us
            current.cancel()
            await asyncio.wait({current})
            raise
        finally:
            stats.last_duration = loop.time() - started
        if not done:
            stats.overruns += 1
            stats.streak += 1
            stats.last_error = f"run exceeded its timeout of {self.timeout:g} s"
            self.log.warning(
                "plugin %s: task %s ran past its timeout of %g s; cancelled (overruns: %d)",
                self.plugin,
                self.name,
                self.timeout,
                stats.overruns,
            )
            current.cancel()
            # no overlap: the next run waits until this one has really ended
            await asyncio.wait({current})
            stats.last_duration = loop.time() - started
            if not current.cancelled() and current.exception() is not None:
                current.exception()  # retrieved: a late error while cancelling is not news
        elif current.cancelled():
            pass  # cancelled by the plugin itself; neither a failure nor an overrun
        elif current.exception() is not None:
            self._failed(current.exception())
        else:
            stats.streak = 0
        self._current = None
        if self.notify is not None:
            self.notify()

    async def _call(self) -> Any:
        result = self.fn()
        if not inspect.isawaitable(result):
            raise TypeError(f"task {self.name!r} must be async (it returned {type(result).__name__})")
        return await result

    def _failed(self, exc: BaseException | None) -> None:
        stats = self.stats
        stats.failures += 1
        stats.streak += 1
        stats.last_error = f"{type(exc).__name__}: {exc}"
        if stats.streak == 1:  # the traceback once per streak; a one-liner for repeats
            self.log.error("plugin %s: task %s failed", self.plugin, self.name, exc_info=exc)
        else:
            self.log.warning(
                "plugin %s: task %s failed again (%d in a row): %s",
                self.plugin,
                self.name,
                stats.streak,
                stats.last_error,
            )

    # -- reporting ------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        s = self.stats
        out: dict[str, Any] = {
            "name": self.name,
            "interval": self.interval,
            "missed_policy": self.missed_policy,
            "timeout": self.timeout,
            "last_run": None if s.last_run is None else round(s.last_run, 3),
            "last_duration": None if s.last_duration is None else round(s.last_duration, 6),
            "runs": s.runs,
            "failures": s.failures,
            "overruns": s.overruns,
            "missed": s.missed,
            "backed_off": s.backed_off,
            "last_error": s.last_error,
            "running": self.running,
            "jitter_ms": jitter_ms(self.lateness),
        }
        return out


async def finish_tasks(tasks: list[PeriodicTask], deadline: float, cancel_wait: float = 1.0) -> None:
    """Wait (until ``deadline``, loop time) for stopped tasks' runs in progress
    to end; cancel those still running then, and give up on any that ignore
    the cancel for ``cancel_wait`` s. Call ``stop()`` on the tasks first."""
    loop = asyncio.get_running_loop()
    loops = {t.task: t for t in tasks if t.task is not None}
    if not loops:
        return
    _, pending = await asyncio.wait(loops, timeout=max(0.0, deadline - loop.time()))
    for fut in pending:
        t = loops[fut]
        t.log.warning("plugin %s: task %s still running at the grace deadline; cancelled", t.plugin, t.name)
        t.cancel()
    if pending:
        _, stuck = await asyncio.wait(pending, timeout=cancel_wait)
        for fut in stuck:
            t = loops[fut]
            t.log.error("plugin %s: task %s ignores cancellation; abandoned", t.plugin, t.name)
    for fut, t in loops.items():
        if fut.done() and not fut.cancelled() and fut.exception() is not None:
            t.log.error("plugin %s: task %s crashed", t.plugin, t.name, exc_info=fut.exception())


def jitter_ms(samples: deque[float] | list[float]) -> dict[str, float] | None:
    """p50 / p99 / max of start lateness in milliseconds (None without samples)."""
    if not samples:
        return None
    xs = sorted(samples)
    return {
        "p50": round(percentile(xs, 50) * 1000, 3),
        "p99": round(percentile(xs, 99) * 1000, 3),
        "max": round(xs[-1] * 1000, 3),
        "samples": len(xs),
    }


def percentile(sorted_xs: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, math.ceil(q / 100 * len(sorted_xs)))
    return sorted_xs[min(rank, len(sorted_xs)) - 1]


def _set_result(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
