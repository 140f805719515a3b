"""Live taps (firmware_host.tap): bounded per subscriber, lossy for the slow
one and counted, filtered by device, closed when the runtime stops, and free
for the pipeline when nobody subscribes."""

from __future__ import annotations

import asyncio

import pytest

from firmware_host.aggregator import Aggregator
from firmware_host.cancel import CancellationToken
from firmware_host.frames import Frame
from firmware_host.tap import MAX_LIMIT, FrameTap

pytestmark = pytest.mark.timeout(20)

FAST = {"backoff_initial": 0.02, "backoff_max": 0.05}


def frames(device: str, seqs: range) -> list[Frame]:
    return [Frame(device, s, 0, 0.0, b"x") for s in seqs]


def seqs(got: list[Frame]) -> list[int]:
    return [f.seq for f in got]


async def test_a_subscription_gets_every_read_in_order_and_of_its_devices_only():
    tap = FrameTap()
    everything = tap.subscribe()
    only_a = tap.subscribe(["a"])
    tap.publish("a", frames("a", range(3)))
    tap.publish("b", frames("b", range(2)))
    tap.publish("a", frames("a", range(3, 5)))
    got, lost = everything.take()
    assert [(f.device, f.seq) for f in got] == [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1), ("a", 3), ("a", 4)]
    assert lost == 0
    got, lost = only_a.take()
    assert (seqs(got), lost) == ([0, 1, 2, 3, 4], 0)
    assert everything.take() == ([], 0)  # taken once


async def test_the_publisher_may_reuse_its_list():
    tap = FrameTap()
    sub = tap.subscribe()
    batch = frames("a", range(2))
    tap.publish("a", batch)
    batch.clear()  # what a reader does with its read buffer
    assert seqs(sub.take()[0]) == [0, 1]


async def test_a_slow_subscriber_keeps_the_newest_and_is_told_what_it_lost():
    tap = FrameTap()
    sub = tap.subscribe(limit=5)
    tap.publish("a", frames("a", range(3)))
    tap.publish("a", frames("a", range(3, 7)))  # 7 held > 5: the two oldest go, part of a read
    tap.publish("a", frames("a", range(7, 8)))  # and one more
    got, lost = sub.take()
    assert (seqs(got), lost) == ([3, 4, 5, 6, 7], 3)
    tap.publish("a", frames("a", range(8, 20)))  # one read larger than the limit
    got, lost = sub.take()
    assert (seqs(got), lost) == ([15, 16, 17, 18, 19], 7)
    assert sub.lost == 10  # over its life
    tap.publish("a", frames("a", range(20, 21)))
    got, lost = sub.take()
    assert (seqs(got), lost) == ([20], 0)  # the loss was reported once


async def test_limits_are_checked():
    tap = FrameTap()
    for bad in (0, -1, MAX_LIMIT + 1):
        with pytest.raises(ValueError, match="holds 1 to"):
            tap.subscribe(limit=bad)
    assert tap.subscribers == []


async def test_wait_wakes_on_frames_times_out_without_and_close_ends_it():
    tap = FrameTap()
    sub = tap.subscribe()
    assert await sub.wait(0.01) is False
    waiter = asyncio.ensure_future(sub.wait(10))
    await asyncio.sleep(0)
    assert not waiter.done()
    tap.publish("a", frames("a", range(1)))
    assert await waiter is True
    sub.take()
    waiter = asyncio.ensure_future(sub.wait(10))
    await asyncio.sleep(0)
    sub.close()
    assert await waiter is True and sub.closed
    assert tap.subscribers == []
    tap.publish("a", frames("a", range(1)))
    assert sub.take() == ([], 0)  # closed: nothing more arrives


async def test_the_aggregator_publishes_offers_only_while_subscribed_and_closes_at_stop():
    published: list[tuple[str, int]] = []

    class SpyTap(FrameTap):
        __slots__ = ()

        def publish(self, device, fs):
            published.append((device, len(fs)))
            super().publish(device, fs)

    agg = Aggregator(capacity=100)
    agg.tap = SpyTap()  # before run(): the actor binds its tap once
    token = CancellationToken()
    task = asyncio.ensure_future(agg.run(token))
    await agg.handle.offer("a", frames("a", range(2)))
    await agg.handle.snapshot()  # served after the offer
    assert published == []  # nobody subscribed: not even a call
    async with agg.tap.subscribe(["a"]) as sub:
        await agg.handle.offer("a", frames("a", range(2, 5)))
        await agg.handle.offer("b", frames("b", range(1)))
        assert await sub.wait(5)
        await agg.handle.snapshot()
        assert published == [("a", 3), ("b", 1)]
        assert seqs(sub.take()[0]) == [2, 3, 4]
        token.cancel()
        await asyncio.wait_for(task, 5)
        assert sub.closed  # the runtime stopped: the subscriber wakes to the end
    snap = agg.snapshot_now()
    assert snap.accounts["a"].frames == 5  # publishing took nothing from the buffer's accounting


async def test_a_runtime_subscription_sees_an_emulated_board_and_a_stalled_one_costs_nothing(fh_board, fh_runtime):
    board = fh_board("fh1")
    async with fh_runtime({"devices": [board.config("b", **FAST)], "buffer": {"flush_interval": 0.02}}) as rt:
        await rt.wait_state("b", "connected")
        live = rt.subscribe(["b"])
        stalled = rt.subscribe(limit=3)  # never read
        await board.send_frames(40, type=3, payload=b"xyz")
        await rt.wait_flushed("b", 40)  # the pipeline does not wait for the stalled subscriber
        got: list[Frame] = []
        while len(got) < 40:
            assert await live.wait(5)
            got.extend(live.take()[0])
        assert seqs(got) == list(range(40)) and {f.type for f in got} == {3}
        held, lost = stalled.take()
        assert len(held) == 3 and lost == 37 and seqs(held) == [37, 38, 39]
        live.close()
    assert stalled.closed


async def test_a_subscription_after_the_stop_is_closed_at_once():
    tap = FrameTap()
    tap.close_all()
    late = tap.subscribe()
    assert late.closed and tap.subscribers == []
    assert await late.wait(10) is True  # wakes at once: nothing will come
    assert late.take() == ([], 0)


async def test_a_subscription_starts_open_and_its_limit_bounds_are_inclusive():
    tap = FrameTap()
    assert tap.closed is False
    for limit in (1, MAX_LIMIT):  # both ends are allowed
        sub = tap.subscribe(limit=limit)
        assert (sub.limit, sub.closed) == (limit, False)
        sub.close()
    one = tap.subscribe(limit=1)
    tap.publish("a", frames("a", range(3)))
    got, lost = one.take()
    assert (seqs(got), lost) == ([2], 2)  # a limit of one keeps the newest
