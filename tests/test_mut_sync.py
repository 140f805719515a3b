"""The small primitives under the pipeline, held to what their docstrings promise
(tests written from mutation testing, docs/testing-internals.md): the read gate's
backpressure and its self-reopening deadline, the read clock's shared tick, the
change pulse, the mailbox's bounds, cancellation tokens and drop guards.

Times are exact: these run on a virtual clock (tests/virtual_time.py).
"""

from __future__ import annotations

import asyncio
import inspect

import pytest

from firmware_host._sync import READ_GATE_MAX_WAIT, Changes, Mailbox, ReadClock, ReadGate
from firmware_host.cancel import CancellationToken, DropGuard
from tests.virtual_time import run_virtual, virtual_loop

pytestmark = pytest.mark.timeout(10)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def passed_at(gate: ReadGate) -> float:
    await gate.wait()
    return virtual_loop().time()


# ----------------------------------------------------------------------- ReadGate


def test_read_gate_holds_readers_until_opened() -> None:
    async def main() -> None:
        gate = ReadGate()
        assert gate.closed is False
        assert await passed_at(gate) == 0.0  # open: no wait
        gate.close(10.0)
        assert gate.closed is True
        reader = asyncio.ensure_future(passed_at(gate))
        await asyncio.sleep(2.0)
        assert not reader.done()  # backpressure: the reader waits
        gate.open()
        assert gate.closed is False
        assert await reader == 2.0

    run_virtual(main())


def test_read_gate_reopens_by_itself_after_max_wait() -> None:
    async def main() -> None:
        assert READ_GATE_MAX_WAIT == 0.05  # the documented default
        gate = ReadGate()
        gate.close()
        assert await passed_at(gate) == 0.05
        assert gate.closed is False
        gate.close(0.25)
        assert await passed_at(gate) == pytest.approx(0.30)

    run_virtual(main())


def test_closing_a_closed_gate_keeps_its_first_deadline() -> None:
    async def main() -> None:
        gate = ReadGate()
        gate.close(1.0)
        await asyncio.sleep(0.5)
        gate.close(1.0)  # no new deadline
        assert await passed_at(gate) == 1.0

    run_virtual(main())


def test_opening_cancels_the_old_deadline() -> None:
    async def main() -> None:
        gate = ReadGate()
        gate.close(1.0)
        await asyncio.sleep(0.2)
        gate.open()
        await asyncio.sleep(0.1)
        gate.close(1.0)  # closed at 0.3: open at 1.3, not at the first close's 1.0
        assert await passed_at(gate) == pytest.approx(1.3)
        gate.open()  # opening an open gate is harmless
        assert gate.closed is False

    run_virtual(main())


def test_a_cancelled_reader_does_not_open_the_gate_for_the_others() -> None:
    async def main() -> None:
        gate = ReadGate()
        gate.close(5.0)
        quitter = asyncio.ensure_future(gate.wait())
        stayer = asyncio.ensure_future(passed_at(gate))
        await settle()
        quitter.cancel()
        await settle()
        assert gate.closed and not stayer.done()
        assert await stayer == 5.0

    run_virtual(main())


# ----------------------------------------------------------------------- ReadClock


def test_read_clock_wakes_every_waiter_on_one_tick() -> None:
    async def main() -> None:
        loop = virtual_loop()
        clock = ReadClock(0.5)
        clock.attach(loop)
        assert clock.period == 0.5
        assert clock.scheduled is False and clock.waiting == 0
        first = clock.tick()
        await asyncio.sleep(0.2)
        second = clock.tick()  # joins the tick already due at 0.5
        assert clock.waiting == 2 and clock.scheduled is True
        await second
        assert loop.time() == 0.5 and first.done()
        assert clock.waiting == 0 and clock.scheduled is False
        third = clock.tick()  # a new tick, a period from now
        await third
        assert loop.time() == 1.0

    run_virtual(main())


def test_a_cancelled_tick_waiter_leaves_the_others_alone() -> None:
    async def main() -> None:
        clock = ReadClock(0.5)
        clock.attach(virtual_loop())
        quitter, stayer = clock.tick(), clock.tick()
        quitter.cancel()
        await stayer
        assert virtual_loop().time() == 0.5

    run_virtual(main())


def test_attaching_another_loop_drops_the_old_loops_waiters() -> None:
    clock = ReadClock(0.5)

    async def leave_a_waiter() -> None:
        clock.attach(virtual_loop())
        clock.tick()
        assert clock.waiting == 1 and clock.scheduled

    run_virtual(leave_a_waiter())  # the loop closes with the tick still due

    async def next_loop() -> None:
        loop = virtual_loop()
        clock.attach(loop)
        assert clock.waiting == 0 and clock.scheduled is False
        fut = clock.tick()
        clock.attach(loop)  # the same loop again: nothing dropped
        assert clock.waiting == 1 and clock.scheduled
        await fut
        assert loop.time() == 0.5

    run_virtual(next_loop())


# ----------------------------------------------------------------------- Changes


def test_changes_pulse_wakes_the_waiters_taken_before_it() -> None:
    async def main() -> None:
        changes = Changes()
        changes.notify()  # nobody waits: nothing to do
        a = changes.waiter()
        b = changes.waiter()
        assert a is b and not a.done()
        changes.notify()
        assert a.done() and a.result() is None
        c = changes.waiter()
        assert c is not a and not c.done()  # the next pulse is a new future
        c.cancel()
        changes.notify()  # a cancelled waiter is dropped quietly
        assert changes.waiter() is not c

    run_virtual(main())


# ----------------------------------------------------------------------- Mailbox


def test_mailbox_bounds_and_flags() -> None:
    box: Mailbox[int] = Mailbox(2)
    assert box.maxsize == 2
    assert box.empty() is True and box.full() is False and len(box) == 0
    assert box.put_nowait(1) is True
    assert box.empty() is False and box.full() is False and len(box) == 1
    assert box.put_nowait(2) is True
    assert box.full() is True and len(box) == 2
    assert box.put_nowait(3) is False
    assert box.take_all() == [1, 2]
    assert box.take_all() == []
    assert box.empty() is True
    unbounded: Mailbox[int] = Mailbox(0)
    assert unbounded.maxsize == 0
    assert all(unbounded.put_nowait(i) for i in range(10_000))
    assert unbounded.full() is False


def test_mailbox_wait_and_put_wake_on_arrival_and_on_room() -> None:
    async def main() -> None:
        box: Mailbox[int] = Mailbox(1)
        waiting = asyncio.ensure_future(box.wait())
        await settle()
        assert not waiting.done()
        box.put_nowait(1)
        await settle()
        assert waiting.done()
        await box.wait()  # something queued: at once
        sender = asyncio.ensure_future(box.put(2))
        await settle()
        assert not sender.done() and box.put_nowait(9) is False  # a waiting sender goes first
        assert box.take_all() == [1]
        await sender
        assert box.take_all() == [2]
        # a sender woken for the one free place holds it: a later put_nowait is refused
        box.put_nowait(3)
        late = asyncio.ensure_future(box.put(4))
        await settle()
        box.take_all()
        assert box.put_nowait(5) is False
        await late
        assert box.take_all() == [4]

    run_virtual(main())


def test_mailbox_wakes_only_as_many_senders_as_there_is_room_for() -> None:
    async def main() -> None:
        box: Mailbox[int] = Mailbox(2)
        box.put_nowait(0)
        box.put_nowait(1)
        senders = [asyncio.ensure_future(box.put(i)) for i in (2, 3, 4)]
        await settle()
        assert box.take_all() == [0, 1]
        await settle()
        assert [s.done() for s in senders] == [True, True, False]
        assert len(box) == 2 and box.full()
        assert box.take_all() == [2, 3]
        await senders[2]
        assert box.take_all() == [4]

    run_virtual(main())


def test_a_woken_sender_cancelled_before_it_ran_passes_its_place_on() -> None:
    async def main() -> None:
        box: Mailbox[int] = Mailbox(1)
        box.put_nowait(0)
        first = asyncio.ensure_future(box.put(1))
        second = asyncio.ensure_future(box.put(2))
        await settle()
        box.take_all()  # wakes first (one place)
        first.cancel()  # ...which gives up before it runs
        await settle()
        assert first.cancelled()
        await second
        assert box.take_all() == [2]

    run_virtual(main())


# ----------------------------------------------------------------------- CancellationToken


def test_a_new_token_is_not_cancelled_and_says_so() -> None:
    token = CancellationToken()
    assert token.is_cancelled is False
    assert repr(token) == "<CancellationToken cancelled=False>"
    token.cancel()
    assert token.is_cancelled is True
    assert repr(token) == "<CancellationToken cancelled=True>"
    token.cancel()  # idempotent
    assert token.is_cancelled is True


def test_cancel_reaches_grandchildren_and_every_waiter() -> None:
    async def main() -> None:
        root = CancellationToken()
        child = root.child_token()
        grandchild = child.child_token()
        waiters = [asyncio.ensure_future(t.cancelled()) for t in (root, grandchild, grandchild)]
        await settle()
        assert not any(w.done() for w in waiters)
        root.cancel()
        await settle()
        assert all(w.done() and not w.cancelled() for w in waiters)
        assert child.is_cancelled and grandchild.is_cancelled
        late = root.child_token()
        assert late.is_cancelled
        late_child = late.child_token()
        assert late_child.is_cancelled

    run_virtual(main())


def test_an_outside_cancelled_waiter_is_removed_and_the_rest_still_wake() -> None:
    async def main() -> None:
        token = CancellationToken()
        quitter = asyncio.ensure_future(token.cancelled())
        stayer = asyncio.ensure_future(token.cancelled())
        await settle()
        quitter.cancel()
        await settle()
        token.cancel()
        await settle()
        assert quitter.cancelled() and stayer.done() and not stayer.cancelled()

    run_virtual(main())


def test_run_until_cancelled_on_a_cancelled_token_closes_the_unstarted_coroutine() -> None:
    async def work() -> str:
        return "ran"

    async def main() -> None:
        token = CancellationToken()
        token.cancel()
        coro = work()
        assert await token.run_until_cancelled(coro) is None
        assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
        fut = virtual_loop().create_future()  # not a coroutine: left alone
        assert await token.run_until_cancelled(fut) is None
        assert not fut.done()

    run_virtual(main())


def test_run_until_cancelled_returns_the_result_or_cancels_the_work_at_the_cancel() -> None:
    async def main() -> None:
        loop = virtual_loop()
        token = CancellationToken()
        assert await token.run_until_cancelled(asyncio.sleep(2.0, "done")) == "done"
        assert loop.time() == 2.0
        loop.call_later(1.0, token.cancel)
        assert await token.run_until_cancelled(asyncio.sleep(10.0, "late")) is None
        assert loop.time() == 3.0  # returned at the cancel, not when the work would have ended

    run_virtual(main())


def test_drop_guard_as_async_with() -> None:
    async def main() -> None:
        token = CancellationToken()
        async with token.drop_guard() as guard:
            assert isinstance(guard, DropGuard)
        assert token.is_cancelled
        token = CancellationToken()
        with pytest.raises(ValueError):
            async with token.drop_guard():
                raise ValueError("boom")
        assert token.is_cancelled
        token = CancellationToken()
        async with token.drop_guard() as guard:
            assert guard.disarm() is token
        assert not token.is_cancelled

    run_virtual(main())


def test_disarming_twice_is_a_bug_named_as_such() -> None:
    guard = CancellationToken().drop_guard()
    guard.disarm()
    # (pytest may append its assertion rewrite explanation after the message)
    with pytest.raises(AssertionError, match=r"^guard already disarmed"):
        guard.disarm()


def test_a_mailbox_is_unbounded_by_default() -> None:
    box: Mailbox[int] = Mailbox()
    assert box.maxsize == 0
    assert all(box.put_nowait(i) for i in range(1000)) and not box.full()
