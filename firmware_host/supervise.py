"""Supervision of the runtime's long-running tasks (the actor, the flusher, the spooler).

A task that raises is logged with its traceback once per streak of failures,
shown in status (``tasks``: state, restarts, last_error) and restarted with
capped exponential backoff: a bug that hits one batch must not end delivery
for the rest of the run, silently. A task that keeps failing (``max_failures``
in a row, none of them after a healthy stretch) cannot continue: the
supervisor stops restarting it and says so through ``on_give_up``; the runtime
then shuts down in order and the process exits 1.

A task's own cancellation token is passed to every restart, so a task that
failed while the shutdown began restarts once more and finishes its part of
the shutdown (the actor serves its stop message, a flusher returns).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from firmware_host._sync import Changes
from firmware_host.cancel import CancellationToken

__all__ = ["Supervisor", "TaskHealth"]

log = logging.getLogger("firmware_host.supervise")

#: failures in a row after which a task is given up
MAX_FAILURES = 10
#: a run at least this long resets the streak (and the backoff)
HEALTHY_AFTER = 10.0


@dataclass
class TaskHealth:
    """What status shows of one supervised task."""

    state: str = "running"  # running | restarting | failed | stopped
    restarts: int = 0
    last_error: str | None = None


class Supervisor:
    """Starts tasks and restarts the ones that fail; ``tasks`` is their health."""

    def __init__(
        self,
        on_give_up: Callable[[str, str], None],
        *,
        changes: Changes | None = None,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        max_failures: int = MAX_FAILURES,
        healthy_after: float = HEALTHY_AFTER,
    ) -> None:
        self.tasks: dict[str, TaskHealth] = {}
        self._on_give_up = on_give_up
        self._changes = changes or Changes()
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._max_failures = max_failures
        self._healthy_after = healthy_after

    def start(
        self, name: str, run: Callable[[CancellationToken], Awaitable[None]], token: CancellationToken
    ) -> asyncio.Task[None]:
        """``run(token)`` as a supervised task named ``name``."""
        health = self.tasks[name] = TaskHealth()
        return asyncio.create_task(self._supervise(name, health, run, token), name=name)

    def report(self) -> dict[str, dict[str, object]]:
        return {name: vars(h).copy() for name, h in self.tasks.items()}

    async def _supervise(
        self,
        name: str,
        health: TaskHealth,
        run: Callable[[CancellationToken], Awaitable[None]],
        token: CancellationToken,
    ) -> None:
        delay, streak = self._backoff_initial, 0
        while True:
            started = time.monotonic()
            try:
                await run(token)
            except Exception as exc:
                if time.monotonic() - started >= self._healthy_after:
                    delay, streak = self._backoff_initial, 0
                streak += 1
                health.restarts += 1
                health.last_error = f"{type(exc).__name__}: {exc}"
                if streak == 1:  # the traceback once per streak; then one line per restart
                    log.exception("task %s failed; restarting it", name)
                else:
                    log.error("task %s failed again (%d in a row): %s", name, streak, health.last_error)
                if streak >= self._max_failures:
                    health.state = "failed"
                    self._changes.notify()
                    self._on_give_up(name, health.last_error)
                    return
                health.state = "restarting"
                self._changes.notify()
                # never skipped: a task that failed as its token was cancelled
                # restarts once more to finish its part of the shutdown
                await token.run_until_cancelled(asyncio.sleep(delay))
                delay = min(delay * 2, self._backoff_max)
                health.state = "running"
            else:
                health.state = "stopped"
                return
