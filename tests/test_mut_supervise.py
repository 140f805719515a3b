"""supervise.py on a virtual clock: exact restart times (capped exponential
backoff), the healthy stretch that resets the streak, giving up, the states
status shows, and the log (tests written from mutation testing,
docs/testing-internals.md).

Expected times are worked out by hand from the module's rules: after the k-th
failure in a row the task restarts ``min(initial * 2**(k-1), max)`` later; a
run of at least ``healthy_after`` seconds starts a new streak; the
``max_failures``-th failure in a row gives the task up. The module reads
``time.monotonic``; the tests point it at the virtual loop's clock.
"""

from __future__ import annotations

import asyncio
import logging
import types
from collections.abc import Callable

import pytest

from firmware_host import supervise
from firmware_host._sync import Changes
from firmware_host.cancel import CancellationToken
from firmware_host.supervise import Supervisor, TaskHealth
from tests.virtual_time import run_virtual, virtual_loop

pytestmark = pytest.mark.timeout(10)


@pytest.fixture(autouse=True)
def loop_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """``time.monotonic`` in supervise.py is the running loop's (virtual) clock."""
    monkeypatch.setattr(supervise, "time", types.SimpleNamespace(monotonic=lambda: asyncio.get_running_loop().time()))


class Task:
    """A supervised run: the ``i``-th call (from 1) lasts ``durations.get(i, 0)``
    seconds, then fails unless ``i`` is in ``ok``; records when each started,
    the token it got and the task's state then."""

    def __init__(self, sup: Supervisor, ok: set[int] | None = None, durations: dict[int, float] | None = None):
        self.sup = sup
        self.ok = ok or set()
        self.durations = durations or {}
        self.starts: list[float] = []
        self.states: list[str] = []
        self.tokens: list[CancellationToken] = []

    async def __call__(self, token: CancellationToken) -> None:
        self.starts.append(virtual_loop().time())
        self.states.append(self.sup.tasks["t"].state)
        self.tokens.append(token)
        i = len(self.starts)
        await asyncio.sleep(self.durations.get(i, 0.0))
        if i not in self.ok:
            raise RuntimeError(f"boom {i}")


def supervised(
    make: Callable[[Supervisor], Task], gave_up: list[tuple[str, str, float]] | None = None, **kw: float
) -> tuple[Supervisor, Task]:
    """Run one task ``t`` under a Supervisor until its supervision ends."""
    given: list[tuple[str, str, float]] = [] if gave_up is None else gave_up

    async def main() -> tuple[Supervisor, Task]:
        sup = Supervisor(lambda name, error: given.append((name, error, virtual_loop().time())), **kw)  # type: ignore[arg-type]
        task = make(sup)
        await sup.start("t", task, CancellationToken())
        return sup, task

    return run_virtual(main())


def test_a_task_starts_running_with_no_restarts() -> None:
    async def main() -> None:
        sup = Supervisor(lambda name, error: None)
        started = asyncio.Event()

        async def run(token: CancellationToken) -> None:
            started.set()
            await token.cancelled()

        token = CancellationToken()
        task = sup.start("t", run, token)
        assert task.get_name() == "t"
        await started.wait()
        assert sup.tasks["t"] == TaskHealth("running", 0, None)
        assert sup.report() == {"t": {"state": "running", "restarts": 0, "last_error": None}}
        token.cancel()
        await task
        assert sup.tasks["t"].state == "stopped"

    run_virtual(main())


def test_report_is_a_copy() -> None:
    sup = Supervisor(lambda name, error: None)
    sup.tasks["t"] = TaskHealth()
    report = sup.report()
    report["t"]["state"] = "failed"
    assert sup.tasks["t"].state == "running"


def test_restarts_back_off_exponentially_from_the_defaults() -> None:
    # defaults: 0.1 s doubling; three failures, then the fourth run returns
    sup, task = supervised(lambda s: Task(s, ok={4}))
    assert task.starts == pytest.approx([0.0, 0.1, 0.3, 0.7], abs=1e-9)
    assert sup.tasks["t"] == TaskHealth("stopped", 3, "RuntimeError: boom 3")


def test_restarts_are_capped_and_the_task_given_up_after_ten_in_a_row() -> None:
    gave_up: list[tuple[str, str, float]] = []
    sup, task = supervised(lambda s: Task(s), gave_up, backoff_initial=1.0, backoff_max=3.0)
    # waits 1, 2, then 3 capped: the 10th failure (the default limit) gives it up
    assert task.starts == [0.0, 1.0, 3.0, 6.0, 9.0, 12.0, 15.0, 18.0, 21.0, 24.0]
    assert gave_up == [("t", "RuntimeError: boom 10", 24.0)]
    assert sup.tasks["t"] == TaskHealth("failed", 10, "RuntimeError: boom 10")


def test_the_default_cap_is_five_seconds() -> None:
    sup, task = supervised(lambda s: Task(s, ok={8}), backoff_initial=1.0)
    assert task.starts == [0.0, 1.0, 3.0, 7.0, 12.0, 17.0, 22.0, 27.0]
    assert sup.tasks["t"].restarts == 7


def test_the_states_while_restarting() -> None:
    seen: list[tuple[str, float]] = []

    async def main() -> None:
        changes = Changes()
        sup = Supervisor(lambda name, error: None, changes=changes, backoff_initial=1.0, max_failures=2)
        task = Task(sup)
        job = sup.start("t", task, CancellationToken())
        while not job.done():
            waiter = changes.waiter()
            await asyncio.wait({waiter, job}, return_when=asyncio.FIRST_COMPLETED)
            if waiter.done():
                seen.append((sup.tasks["t"].state, virtual_loop().time()))
        assert task.states == ["running", "running"]  # a restarted run is running again

    run_virtual(main())
    assert seen == [("restarting", 0.0), ("failed", 1.0)]


def test_a_healthy_stretch_resets_the_streak_and_the_backoff(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="firmware_host.supervise")
    gave_up: list[tuple[str, str, float]] = []
    # runs 1, 2 fail at once (waits 1, 2); run 3 lasts exactly 10 s (the default
    # healthy stretch) from 3 to 13: a new streak, so the waits are 1, 2 again and
    # the limit of 3 is reached only at run 5's failure
    sup, task = supervised(
        lambda s: Task(s, durations={3: 10.0}), gave_up, backoff_initial=1.0, backoff_max=8.0, max_failures=3
    )
    assert task.starts == [0.0, 1.0, 3.0, 14.0, 16.0]
    assert gave_up == [("t", "RuntimeError: boom 5", 16.0)]
    assert sup.tasks["t"].restarts == 5
    assert [(r.levelname, r.getMessage(), r.exc_info is not None) for r in caplog.records] == [
        ("ERROR", "task t failed; restarting it", True),
        ("ERROR", "task t failed again (2 in a row): RuntimeError: boom 2", False),
        ("ERROR", "task t failed; restarting it", True),  # a new streak: the traceback again
        ("ERROR", "task t failed again (2 in a row): RuntimeError: boom 4", False),
        ("ERROR", "task t failed again (3 in a row): RuntimeError: boom 5", False),
    ]
    assert caplog.records[0].exc_info is not None and str(caplog.records[0].exc_info[1]) == "boom 1"


def test_a_shorter_stretch_does_not_reset_the_streak() -> None:
    gave_up: list[tuple[str, str, float]] = []
    sup, task = supervised(
        lambda s: Task(s, durations={2: 9.5}),
        gave_up,
        backoff_initial=1.0,
        backoff_max=8.0,
        max_failures=3,
    )
    # waits 1, then 2 after run 2 (1 + 9.5 = 10.5 -> 12.5); the third failure in a row gives it up
    assert task.starts == [0.0, 1.0, 12.5]
    assert gave_up == [("t", "RuntimeError: boom 3", 12.5)]
    assert sup.tasks["t"].state == "failed"


def test_its_own_healthy_after() -> None:
    sup, task = supervised(
        lambda s: Task(s, ok={4}, durations={2: 2.0}), backoff_initial=1.0, backoff_max=8.0, healthy_after=2.0
    )
    # run 2 (1 to 3) is healthy: the wait after it is 1 again, then 2
    assert task.starts == [0.0, 1.0, 4.0, 6.0]
    assert sup.tasks["t"].restarts == 3


def test_a_task_that_fails_as_the_shutdown_begins_restarts_at_once_with_its_token() -> None:
    async def main() -> tuple[Task, TaskHealth]:
        sup = Supervisor(lambda name, error: None, backoff_initial=5.0)
        task = Task(sup, ok={2})
        token = CancellationToken()
        virtual_loop().call_later(1.0, token.cancel)
        await sup.start("t", task, token)
        assert all(t is token for t in task.tokens)
        return task, sup.tasks["t"]

    task, health = run_virtual(main())
    assert task.starts == [0.0, 1.0]  # not at 5: the shutdown does not wait out the backoff
    assert health == TaskHealth("stopped", 1, "RuntimeError: boom 1")
