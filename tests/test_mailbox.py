"""The aggregator's inbox: bounded, FIFO, senders wait in arrival order."""

from __future__ import annotations

import asyncio

import pytest

from firmware_host import CancellationToken, Frame
from firmware_host._sync import Mailbox
from firmware_host.aggregator import Aggregator

pytestmark = pytest.mark.timeout(10)


async def settle() -> None:
    """Let every ready task run until none is (a few loop iterations)."""
    for _ in range(10):
        await asyncio.sleep(0)


async def test_put_nowait_until_full_then_take_all_in_order() -> None:
    box: Mailbox[int] = Mailbox(3)
    assert [box.put_nowait(i) for i in range(4)] == [True, True, True, False]
    assert box.full() and len(box) == 3
    assert box.take_all() == [0, 1, 2]
    assert box.empty() and box.take_all() == []


async def test_wait_returns_once_something_is_queued() -> None:
    box: Mailbox[str] = Mailbox(2)
    waiter = asyncio.ensure_future(box.wait())
    await settle()
    assert not waiter.done()
    box.put_nowait("x")
    await asyncio.wait_for(waiter, 1)
    await asyncio.wait_for(box.wait(), 1)  # something is queued: at once


async def test_waiting_senders_go_in_arrival_order_and_first() -> None:
    box: Mailbox[str] = Mailbox(1)
    assert box.put_nowait("a")
    puts = [asyncio.ensure_future(box.put(x)) for x in "bcd"]
    await settle()
    assert not any(p.done() for p in puts)
    assert box.take_all() == ["a"]
    assert not box.put_nowait("late")  # senders already waiting go first
    got = []
    while len(got) < 3:
        await asyncio.wait_for(box.wait(), 1)
        got += box.take_all()
    assert got == ["b", "c", "d"]
    await asyncio.gather(*puts)
    assert box.put_nowait("late")


async def test_a_cancelled_sender_leaves_the_line_and_passes_its_turn() -> None:
    box: Mailbox[str] = Mailbox(1)
    box.put_nowait("a")
    first = asyncio.ensure_future(box.put("b"))
    second = asyncio.ensure_future(box.put("c"))
    await settle()
    box.take_all()  # wakes the first sender ...
    first.cancel()  # ... which is cancelled before it runs
    await settle()
    assert first.cancelled()
    await asyncio.wait_for(second, 1)
    assert box.take_all() == ["c"]
    # a sender cancelled while waiting behind another is simply removed
    box.put_nowait("d")
    head = asyncio.ensure_future(box.put("e"))
    behind = asyncio.ensure_future(box.put("f"))
    await settle()
    behind.cancel()
    await settle()
    assert box.take_all() == ["d"]
    await asyncio.wait_for(head, 1)
    assert box.take_all() == ["e"] and box.put_nowait("g")


def test_maxsize_of_zero_or_less_is_unbounded() -> None:
    """As with asyncio.Queue, which the aggregator's inbox_size used to size."""
    for maxsize in (0, -1):
        box: Mailbox[int] = Mailbox(maxsize)
        assert all(box.put_nowait(i) for i in range(5000)) and not box.full()
    assert Aggregator(capacity=10, inbox_size=0).handle.offer_nowait("d", [Frame("d", 0, 0, 0.0, b"")])


async def test_taking_all_lets_in_as_many_waiting_senders_as_there_is_room_for() -> None:
    """After a full inbox is taken, the waiting senders refill it in one go
    (oldest first), not one per wakeup of the reader."""
    box: Mailbox[int] = Mailbox(3)
    for i in range(3):
        box.put_nowait(i)
    puts = [asyncio.ensure_future(box.put(i)) for i in range(3, 10)]
    await settle()
    got = box.take_all()
    await settle()
    assert [p.done() for p in puts] == [True] * 3 + [False] * 4
    got += box.take_all()
    await settle()
    got += box.take_all()
    await settle()
    got += box.take_all()
    assert got == list(range(10))
    await asyncio.wait_for(asyncio.gather(*puts), 1)


async def test_an_aggregator_with_a_tiny_inbox_serves_every_offer_in_order() -> None:
    """Readers outrunning the actor wait for room; nothing is lost or reordered."""
    agg = Aggregator(capacity=10_000, batch_size=10_000, inbox_size=2)
    token = CancellationToken()
    task = asyncio.ensure_future(agg.run(token))
    h = agg.handle

    async def reader(device: str) -> None:
        for i in range(50):
            batch = [Frame(device, i * 3 + k, 0, 0.0, b"p") for k in range(3)]
            if not h.offer_nowait(device, batch):
                await h.offer(device, batch)

    await asyncio.wait_for(asyncio.gather(*(reader(d) for d in "abcd")), 5)
    batch = await h.take(10_000)
    assert len(batch.frames) == 600
    for device in "abcd":
        assert [f.seq for f in batch.frames if f.device == device] == list(range(150))
    snap = await h.snapshot()
    for name, a in snap.accounts.items():
        assert a.frames == a.flushed + a.dropped + a.buffered == 150, name
    token.cancel()
    await asyncio.wait_for(task, 5)
