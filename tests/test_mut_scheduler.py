"""The plugin scheduler on a virtual clock: exact run times, backoff, missed-tick
policies, timeouts, stop and shutdown (tests written from mutation testing,
docs/testing-internals.md).

Every expected time below is worked out by hand from the scheduler's documented
rules (firmware_host/plugins/scheduler.py's docstring), never by calling the code:
ticks at ``T_n = n * interval`` from a task started at loop time 0; after ``k``
failures in a row the task sits out ``min(2**(k-1) - 1 intervals, 60 s)`` counted
from the end of the failed run, then runs at the next tick.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import time
from collections import deque
from typing import Any

import pytest

from firmware_host.plugins.scheduler import PeriodicTask, finish_tasks, jitter_ms, percentile
from tests.virtual_time import run_virtual, virtual_loop

pytestmark = pytest.mark.timeout(10)


def run_task(task: PeriodicTask, until: int, calls: list[float]) -> None:
    """Run ``task`` from loop time 0; it is stopped as its ``until``-th run ends
    (its fn appends to ``calls``)."""
    inner = task.fn

    async def fn() -> None:
        try:
            await inner()
        finally:
            if len(calls) >= until:
                task.stop()

    task.fn = fn

    async def main() -> None:
        await task.start()

    run_virtual(main())


def recorder(calls: list[float], *, duration: float = 0.0, fail: bool = False) -> Any:
    async def fn() -> None:
        calls.append(virtual_loop().time())
        if duration:
            await asyncio.sleep(duration)
        if fail:
            raise OSError("device busy")

    return fn


def test_first_run_is_one_interval_after_start_and_runs_follow_the_grid() -> None:
    calls: list[float] = []
    task = PeriodicTask("p", "t", 2.0, recorder(calls, duration=0.5))
    run_task(task, 4, calls)
    assert calls == [2.0, 4.0, 6.0, 8.0]
    assert task.stats.runs == 4 and task.stats.failures == 0 and task.stats.missed == 0
    assert list(task.lateness) == [0.0, 0.0, 0.0, 0.0]
    assert task.stats.last_duration == pytest.approx(0.5)


def test_failing_task_backs_off_exponentially_up_to_the_cap() -> None:
    calls: list[float] = []
    # interval 1 s, each run takes 0.5 s and fails: the pause after failure k is
    # 2**(k-1) - 1 s (0, 1, 3, 7, 15, 31, then 63 capped to 60), from the run's end
    # (T + 0.5), so the next run is the first tick after T + 0.5 + pause
    task = PeriodicTask("p", "t", 1.0, recorder(calls, duration=0.5, fail=True))
    run_task(task, 9, calls)
    assert calls == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 125.0, 186.0]
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert gaps[:6] == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]  # doubling, every ratio
    # the ticks sat out: every grid point strictly between two runs
    assert task.stats.backed_off == sum(g - 1 for g in gaps)
    assert task.stats.failures == 9 and task.stats.streak == 9
    assert task.stats.last_error == "OSError: device busy"


def test_a_clean_run_ends_the_streak() -> None:
    calls: list[float] = []
    fail = {"on": True}

    async def fn() -> None:
        calls.append(virtual_loop().time())
        await asyncio.sleep(0.5)
        if fail["on"] and len(calls) <= 3:
            raise OSError("busy")

    task = PeriodicTask("p", "t", 1.0, fn)
    run_task(task, 7, calls)
    # three failures (runs at 1, 2, 4), then clean runs back on every tick
    assert calls == [1.0, 2.0, 4.0, 8.0, 9.0, 10.0, 11.0]
    assert task.stats.streak == 0 and task.stats.failures == 3


def test_overrun_is_cancelled_counted_and_backs_off() -> None:
    calls: list[float] = []
    cancelled: list[float] = []

    async def fn() -> None:
        calls.append(virtual_loop().time())
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(virtual_loop().time())
            raise

    task = PeriodicTask("p", "t", 4.0, fn, timeout=1.5)
    run_task(task, 3, calls)
    assert calls == [4.0, 8.0, 16.0]  # second overrun: pause 1 interval from 9.5
    assert cancelled[:2] == [5.5, 9.5]
    assert task.stats.overruns == 3 and task.stats.failures == 0
    assert task.stats.last_error == "run exceeded its timeout of 1.5 s"
    assert task.stats.last_duration == pytest.approx(1.5)


def test_skip_policy_drops_missed_ticks_and_keeps_the_grid() -> None:
    calls: list[float] = []

    async def fn() -> None:
        calls.append(virtual_loop().time())
        if len(calls) == 2:
            virtual_loop().block(3.5)  # from 2.0 to 5.5: ticks 3, 4, 5 come due meanwhile

    task = PeriodicTask("p", "t", 1.0, fn, missed="skip")
    run_task(task, 5, calls)
    # at 5.5 the tick due at 3 runs at once; the 2 further ticks (4, 5) are missed
    assert calls == [1.0, 2.0, 5.5, 6.0, 7.0]
    assert task.stats.missed == 2
    assert list(task.lateness) == [0.0, 0.0, 0.0, 0.0]  # the late run is not jitter


def test_delay_policy_rebases_the_grid_on_the_late_run() -> None:
    calls: list[float] = []

    async def fn() -> None:
        calls.append(virtual_loop().time())
        if len(calls) == 2:
            virtual_loop().block(3.5)

    task = PeriodicTask("p", "t", 1.0, fn, missed="delay")
    run_task(task, 5, calls)
    assert calls == [1.0, 2.0, 5.5, 6.5, 7.5]
    assert task.stats.missed == 2


def test_burst_policy_runs_every_missed_tick_then_the_original_grid() -> None:
    calls: list[float] = []

    async def fn() -> None:
        calls.append(virtual_loop().time())
        if len(calls) == 2:
            virtual_loop().block(3.5)

    task = PeriodicTask("p", "t", 1.0, fn, missed="burst")
    run_task(task, 7, calls)
    # ticks 3, 4, 5 run back to back at 5.5, then 6 and 7 on the grid
    assert calls == [1.0, 2.0, 5.5, 5.5, 5.5, 6.0, 7.0]
    assert task.stats.missed == 0


def test_burst_policy_stops_catching_up_after_the_burst_limit() -> None:
    calls: list[float] = []

    async def fn() -> None:
        calls.append(virtual_loop().time())
        if len(calls) == 1:
            virtual_loop().block(150.5)  # from 1.0 to 151.5: ticks 2..151 come due

    task = PeriodicTask("p", "t", 1.0, fn, missed="burst")
    run_task(task, 104, calls)
    # 100 catch-up runs in a row (ticks 2..101) at 151.5; the 101st in a row (tick 102)
    # still runs, and the 49 further ticks due by then (103..151) are missed; then tick 152
    assert calls[1:102] == [151.5] * 101
    assert calls[102:] == [152.0, 153.0]
    assert task.stats.missed == 49


def test_stop_wakes_a_sleeping_task_at_once() -> None:
    async def main() -> float:
        task = PeriodicTask("p", "t", 1000.0, recorder([]))
        loop_task = task.start()
        await asyncio.sleep(1.0)
        task.stop()
        await loop_task
        return virtual_loop().time()

    assert run_virtual(main()) == 1.0  # not 1000: stop() woke it


def test_stop_before_the_first_sleep_takes_no_run() -> None:
    calls: list[float] = []

    async def main() -> None:
        task = PeriodicTask("p", "t", 1.0, recorder(calls))
        loop_task = task.start()
        task.stop()
        await loop_task
        assert task.stats.runs == 0 and not task.running

    run_virtual(main())
    assert calls == []


def test_cancel_takes_the_run_in_progress_down() -> None:
    seen: list[str] = []

    async def fn() -> None:
        try:
            await asyncio.sleep(100)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def main() -> None:
        task = PeriodicTask("p", "t", 1.0, fn)
        loop_task = task.start()
        await asyncio.sleep(1.5)
        assert task.running
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loop_task
        assert virtual_loop().time() == 1.5

    run_virtual(main())
    assert seen == ["cancelled"]


def test_a_plugin_cancelling_its_own_run_is_neither_failure_nor_overrun() -> None:
    calls: list[float] = []

    async def fn() -> None:
        calls.append(virtual_loop().time())
        raise asyncio.CancelledError

    task = PeriodicTask("p", "t", 1.0, fn)
    run_task(task, 3, calls)
    assert calls == [1.0, 2.0, 3.0]
    assert task.stats.failures == 0 and task.stats.overruns == 0 and task.stats.streak == 0


def test_a_sync_function_is_a_failure_naming_the_task() -> None:
    def fn() -> None:
        pass

    async def main() -> PeriodicTask:
        task = PeriodicTask("p", "t", 1.0, fn)  # type: ignore[arg-type]
        loop_task = task.start()
        await asyncio.sleep(1.5)
        task.stop()
        await loop_task
        return task

    task = run_virtual(main())
    assert task.stats.failures == 1
    assert task.stats.last_error == "TypeError: task 't' must be async (it returned NoneType)"


def test_notify_is_called_after_every_run() -> None:
    calls: list[float] = []
    notified: list[int] = []
    task = PeriodicTask("p", "t", 1.0, recorder(calls))
    task.notify = lambda: notified.append(task.stats.runs)
    run_task(task, 3, calls)
    assert notified[:3] == [1, 2, 3]


def test_failure_logs_the_traceback_once_per_streak(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    calls: list[float] = []
    task = PeriodicTask("plug", "job", 1.0, recorder(calls, fail=True), log=logging.getLogger("mut.sched"))
    run_task(task, 3, calls)
    records = [r for r in caplog.records if r.name == "mut.sched"]
    assert records[0].levelno == logging.ERROR and records[0].exc_info is not None
    assert records[0].getMessage() == "plugin plug: task job failed"
    assert records[1].levelno == logging.WARNING and records[1].exc_info is None
    assert records[1].getMessage() == "plugin plug: task job failed again (2 in a row): OSError: device busy"


def test_default_logger_is_named_after_the_plugin() -> None:
    assert PeriodicTask("plug", "t", 1.0, recorder([])).log.name == "firmware_host.plugins.plug"


def test_report_has_every_field() -> None:
    calls: list[float] = []
    task = PeriodicTask("p", "t", 2, recorder(calls, duration=0.25), missed="delay", timeout=1)
    run_task(task, 2, calls)
    report = task.report()
    assert isinstance(report["last_run"], float)
    del report["last_run"]  # wall clock
    assert report == {
        "name": "t",
        "interval": 2.0,
        "missed_policy": "delay",
        "timeout": 1.0,
        "last_duration": 0.25,
        "runs": 2,
        "failures": 0,
        "overruns": 0,
        "missed": 0,
        "backed_off": 0,
        "last_error": None,
        "running": False,
        "jitter_ms": {"p50": 0.0, "p99": 0.0, "max": 0.0, "samples": 2},
    }
    fresh = PeriodicTask("p", "t", 1.0, recorder([])).report()
    assert fresh["last_run"] is None and fresh["last_duration"] is None and fresh["jitter_ms"] is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"interval": 0}, "interval must be a finite number of seconds > 0, got 0"),
        ({"interval": -1.0}, "interval must be a finite number of seconds > 0, got -1.0"),
        ({"interval": float("inf")}, "interval must be a finite number of seconds > 0, got inf"),
        ({"interval": True}, "interval must be a finite number of seconds > 0, got True"),
        ({"interval": "1"}, "interval must be a finite number of seconds > 0, got '1'"),
        ({"missed": "later"}, "missed must be one of skip, delay, burst, got 'later'"),
        ({"timeout": 0}, "timeout must be None or a number of seconds > 0, got 0"),
        ({"timeout": float("nan")}, "timeout must be None or a number of seconds > 0, got nan"),
        ({"timeout": "1"}, "timeout must be None or a number of seconds > 0, got '1'"),
    ],
)
def test_bad_arguments_are_one_clear_error(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"interval": 1.0, **kwargs}
    interval = args.pop("interval")
    with pytest.raises(ValueError) as err:
        PeriodicTask("p", "t", interval, recorder([]), **args)
    assert str(err.value) == message


def test_a_non_callable_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"^task 't': 5 is not callable$"):
        PeriodicTask("p", "t", 1.0, 5)  # type: ignore[arg-type]


def test_small_valid_arguments_are_accepted() -> None:
    task = PeriodicTask("p", "t", 1, recorder([]), timeout=0.001)
    assert task.interval == 1.0 and isinstance(task.interval, float)
    assert task.timeout == 0.001


def test_percentile_is_nearest_rank() -> None:
    xs = [float(i) for i in range(1, 11)]  # 1..10
    assert percentile(xs, 50) == 5.0
    assert percentile(xs, 99) == 10.0
    assert percentile(xs, 10) == 1.0
    assert percentile(xs, 11) == 2.0
    assert percentile(xs, 0) == 1.0
    assert percentile([3.0], 50) == 3.0


def test_jitter_ms_of_samples() -> None:
    assert jitter_ms(deque()) is None
    samples = deque([0.004, 0.001, 0.0021234, 0.003])
    assert jitter_ms(samples) == {"p50": 2.123, "p99": 4.0, "max": 4.0, "samples": 4}


def test_finish_tasks_waits_cancels_and_abandons(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)

    async def quick() -> None:
        await asyncio.sleep(0.5)

    async def slow() -> None:
        await asyncio.sleep(100)

    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(100)
            except asyncio.CancelledError:
                pass  # ignores cancellation until released

    async def crash() -> None:
        raise OSError("boom")

    async def main() -> tuple[float, list[bool]]:
        loop = virtual_loop()
        log = logging.getLogger("mut.finish")
        tasks = [PeriodicTask("p", n, 1.0, fn, log=log) for n, fn in (("q", quick), ("s", slow), ("x", stubborn))]
        for t in tasks:
            t.start()
        await asyncio.sleep(1.25)  # every task is in its first run
        for t in tasks:
            t.stop()
        await finish_tasks(tasks, deadline=loop.time() + 2.0, cancel_wait=3.0)
        ended = loop.time()
        loops = [t.task for t in tasks]
        assert loops[0] is not None and loops[1] is not None and loops[2] is not None
        state = [loops[0].done() and not loops[0].cancelled(), loops[1].cancelled(), loops[2].done()]
        release.set()  # let the stubborn one end, so the loop can close
        tasks[2].cancel()
        await asyncio.wait({loops[2]})
        return ended, state

    ended, (quick_ended, slow_cancelled, stubborn_done) = run_virtual(main())
    assert ended == 1.25 + 2.0 + 3.0  # the grace deadline, then the cancel wait
    assert quick_ended and slow_cancelled and not stubborn_done
    msgs = [r.getMessage() for r in caplog.records if r.name == "mut.finish"]
    assert "plugin p: task s still running at the grace deadline; cancelled" in msgs
    assert "plugin p: task x still running at the grace deadline; cancelled" in msgs
    assert "plugin p: task x ignores cancellation; abandoned" in msgs
    assert "plugin p: task q still running at the grace deadline; cancelled" not in msgs
    assert not any("task s ignores" in m for m in msgs)


def test_finish_tasks_returns_at_once_when_all_ended(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> float:
        assert virtual_loop().time() == 0.0
        await finish_tasks([], deadline=100.0)
        task = PeriodicTask("p", "t", 1.0, recorder([]))
        task.start()
        task.stop()
        await finish_tasks([task], deadline=100.0)
        return virtual_loop().time()

    assert run_virtual(main()) == 0.0


def test_burst_limit_counts_from_the_first_late_tick_and_again_after_a_limit() -> None:
    calls: list[float] = []

    async def fn() -> None:
        calls.append(virtual_loop().time())
        if len(calls) == 101:
            virtual_loop().block(150.0)  # the limit's run blocks again: a second burst

    async def main() -> PeriodicTask:
        task = PeriodicTask("p", "t", 1.0, fn, missed="burst")
        inner = task.fn

        async def stop_after() -> None:
            await inner()
            if len(calls) >= 204:
                task.stop()

        task.fn = stop_after
        # the loop is blocked from 0.25 to 150.5, before the first tick
        virtual_loop().call_later(0.25, virtual_loop().block, 150.25)
        await task.start()
        return task

    task = run_virtual(main())
    # woken at 150.5 with ticks 1..150 due: the run for tick 1 and 100 catch-up runs
    # (ticks 2..101) at once; ticks 102..150 are missed; the next run is tick 151 -- but
    # the 101st run blocked until 300.5, so the same again: ticks 151..251 run at 300.5,
    # 252..300 are missed, then tick 301 on the grid
    assert calls[:101] == [150.5] * 101
    assert calls[101:202] == [300.5] * 101
    assert calls[202:] == [301.0, 302.0]
    assert task.stats.missed == 49 + 49


def test_missed_ticks_add_up_over_two_late_wakes() -> None:
    for policy, expected in (("skip", [1.0, 4.5, 5.0, 8.5, 9.0]), ("delay", [1.0, 4.5, 5.5, 9.0, 10.0])):
        calls: list[float] = []

        async def fn(calls: list[float] = calls) -> None:
            calls.append(virtual_loop().time())
            if len(calls) in (1, 3):
                virtual_loop().block(3.5)  # 2 further ticks come due each time

        task = PeriodicTask("p", "t", 1.0, fn, missed=policy)
        run_task(task, 5, calls)
        assert calls == expected, policy
        assert task.stats.missed == 4, policy


def test_one_failure_is_no_backoff_even_after_a_long_run() -> None:
    calls: list[float] = []

    async def fn() -> None:
        calls.append(virtual_loop().time())
        if len(calls) == 1:
            await asyncio.sleep(2.5)  # past the next two ticks
            raise OSError("once")

    task = PeriodicTask("p", "t", 1.0, fn)
    run_task(task, 3, calls)
    # one failure sits nothing out: the late tick runs at once (tick 2 at 3.5, tick 3 missed)
    assert calls == [1.0, 3.5, 4.0]
    assert task.stats.backed_off == 0 and task.stats.missed == 1


def test_lateness_keeps_the_last_1024_samples() -> None:
    calls: list[float] = []
    task = PeriodicTask("p", "t", 1.0, recorder(calls))
    run_task(task, 1100, calls)
    assert len(task.lateness) == 1024
    assert task.report()["jitter_ms"]["samples"] == 1024


def test_the_loop_task_is_named_after_the_plugin_and_task() -> None:
    async def main() -> str:
        task = PeriodicTask("plug", "job", 1.0, recorder([]))
        assert task.task is None
        task.cancel()  # before start: nothing to cancel, no error
        loop_task = task.start()
        assert task.task is loop_task
        task.stop()
        await loop_task
        return loop_task.get_name()

    assert run_virtual(main()) == "plugin:plug:job"


def test_an_overrun_is_logged_and_counted_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    calls: list[float] = []

    async def fn() -> None:
        calls.append(virtual_loop().time())
        await asyncio.sleep(10)

    task = PeriodicTask("plug", "job", 4.0, fn, timeout=1.5, log=logging.getLogger("mut.over"))
    run_task(task, 1, calls)
    assert task.stats.overruns == 1
    assert [r.getMessage() for r in caplog.records if r.name == "mut.over"] == [
        "plugin plug: task job ran past its timeout of 1.5 s; cancelled (overruns: 1)"
    ]


def test_an_error_raised_while_cancelling_an_overrun_is_retrieved() -> None:
    unretrieved: list[dict[str, object]] = []

    async def fn() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise ValueError("late error while cancelling") from None

    async def main() -> PeriodicTask:
        loop = virtual_loop()
        loop.set_exception_handler(lambda _loop, context: unretrieved.append(context))
        task = PeriodicTask("p", "t", 1.0, fn, timeout=0.5)
        loop_task = task.start()
        await asyncio.sleep(1.75)
        task.stop()
        await loop_task
        gc.collect()
        await asyncio.sleep(0)
        return task

    task = run_virtual(main())
    gc.collect()
    assert task.stats.overruns == 1 and task.stats.failures == 0
    assert unretrieved == []


def test_a_sync_function_error_names_what_it_returned() -> None:
    def fn() -> int:
        return 5

    async def main() -> PeriodicTask:
        task = PeriodicTask("p", "t", 1.0, fn)  # type: ignore[arg-type]
        loop_task = task.start()
        await asyncio.sleep(1.5)
        task.stop()
        await loop_task
        return task

    assert run_virtual(main()).stats.last_error == "TypeError: task 't' must be async (it returned int)"


def test_report_rounds_times(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time", lambda: 1234.56789)
    calls: list[float] = []
    task = PeriodicTask("p", "t", 1.0, recorder(calls, duration=0.123456789))
    run_task(task, 1, calls)
    report = task.report()
    assert report["last_run"] == 1234.568
    assert report["last_duration"] == 0.123457


def test_jitter_ms_rounds_to_microseconds_and_uses_rank_99() -> None:
    samples = deque([i / 1000 + 0.00000042 for i in range(1, 201)])  # 1.00042 .. 200.00042 ms
    assert jitter_ms(samples) == {"p50": 100.0, "p99": 198.0, "max": 200.0, "samples": 200}
    odd = deque([0.00123456, 0.00234567])
    assert jitter_ms(odd) == {"p50": 1.235, "p99": 2.346, "max": 2.346, "samples": 2}


def test_percentile_rank_is_q_percent_of_the_count() -> None:
    xs = [float(i) for i in range(1, 201)]
    assert percentile(xs, 99) == 198.0  # rank ceil(0.99 * 200) = 198
    assert percentile(xs, 50) == 100.0


def test_finish_tasks_waits_one_second_after_cancelling_by_default(caplog: pytest.LogCaptureFixture) -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(100)
            except asyncio.CancelledError:
                pass

    async def main() -> float:
        loop = virtual_loop()
        task = PeriodicTask("p", "x", 1.0, stubborn)
        loop_task = task.start()
        await asyncio.sleep(1.5)
        task.stop()
        await finish_tasks([task], deadline=loop.time() + 2.0)
        ended = loop.time()
        release.set()
        task.cancel()
        await asyncio.wait({loop_task})
        return ended

    assert run_virtual(main()) == 1.5 + 2.0 + 1.0


def test_finish_tasks_past_its_deadline_cancels_at_once() -> None:
    async def slow() -> None:
        await asyncio.sleep(100)

    async def main() -> tuple[float, bool]:
        loop = virtual_loop()
        task = PeriodicTask("p", "s", 1.0, slow)
        loop_task = task.start()
        await asyncio.sleep(1.5)
        task.stop()
        await finish_tasks([task], deadline=loop.time() - 5.0)
        return loop.time(), loop_task.cancelled()

    assert run_virtual(main()) == (1.5, True)


def test_finish_tasks_logs_a_crashed_task_loop_once_with_its_error(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    log = logging.getLogger("mut.crash")

    def broken_notify() -> None:
        raise RuntimeError("observer bug")

    async def main() -> None:
        crashing = PeriodicTask("plug", "bad", 1.0, recorder([]), log=log)
        crashing.notify = broken_notify  # raises out of the task's own loop after its first run
        clean = PeriodicTask("plug", "good", 1.0, recorder([]), log=log)
        crashing.start()
        clean.start()
        await asyncio.sleep(1.5)
        clean.stop()
        await finish_tasks([crashing, clean], deadline=virtual_loop().time() + 1.0)

    run_virtual(main())
    records = [r for r in caplog.records if r.name == "mut.crash"]
    assert [r.getMessage() for r in records] == ["plugin plug: task bad crashed"]
    assert records[0].levelno == logging.ERROR
    assert records[0].exc_info is not None and str(records[0].exc_info[1]) == "observer bug"
