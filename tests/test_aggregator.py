"""The aggregator actor on its own: drop-oldest, byte bound, acks after
evictions, per-device takes — the accounting law after every step."""

from __future__ import annotations

import asyncio

import pytest

from firmware_host import CancellationToken, Frame
from firmware_host.aggregator import Aggregator

pytestmark = pytest.mark.timeout(10)


def frames(device: str, seqs: range, size: int = 4) -> list[Frame]:
    return [Frame(device, s, 0, float(s), payload=bytes(size)) for s in seqs]


async def law(agg: Aggregator) -> None:
    snap = await agg.handle.snapshot()
    for name, a in snap.accounts.items():
        assert a.frames == a.flushed + a.dropped + a.buffered, name
    assert snap.depth == sum(a.buffered for a in snap.accounts.values())


async def start(**kw):
    agg = Aggregator(**kw)
    token = CancellationToken()
    task = asyncio.ensure_future(agg.run(token))
    return agg, token, task


async def test_drop_oldest_is_global_and_counted_per_device():
    agg, token, task = await start(capacity=10, batch_size=100)
    h = agg.handle
    await h.offer("a", frames("a", range(8)))
    await h.offer("b", frames("b", range(8)))
    snap = await h.snapshot()
    assert snap.depth == 10 and snap.accounts["a"].dropped == 6 and snap.accounts["b"].dropped == 0
    await law(agg)
    token.cancel()
    await task


async def test_ack_after_eviction_counts_only_survivors():
    agg, token, task = await start(capacity=10, batch_size=100)
    h = agg.handle
    await h.offer("a", frames("a", range(10)))
    batch = await h.take(6)  # in flight: seqs 0..5
    await h.offer("a", frames("a", range(10, 14)))  # evicts 0..3 while in flight
    trimmed = await h.trim(batch)
    assert [f.seq for f in trimmed.frames] == [4, 5]
    counts = await h.ack(batch)
    assert counts == {"a": 2}
    snap = await h.snapshot()
    a = snap.accounts["a"]
    assert (a.frames, a.flushed, a.dropped, a.buffered) == (14, 2, 4, 8)
    await law(agg)
    token.cancel()
    await task


async def test_per_device_take_and_ack_and_mark():
    agg, token, task = await start(capacity=100, batch_size=100)
    h = agg.handle
    await h.offer("a", frames("a", range(5)))
    await h.offer("b", frames("b", range(5)))
    mark = await h.mark()
    await h.offer("b", frames("b", range(5, 8)))
    batch = await h.take(100, "b", mark)
    assert [f.seq for f in batch.frames] == list(range(5))  # not the ones after the mark
    assert await h.ack(batch) == {"b": 5}
    snap = await h.snapshot(oldest=True)
    assert snap.accounts["a"].buffered == 5 and snap.accounts["b"].buffered == 3
    assert snap.oldest_ts == {"a": 0.0, "b": 5.0}
    await law(agg)
    token.cancel()
    await task


async def test_byte_bound():
    agg, token, task = await start(capacity=1000, max_bytes=100, batch_size=1000)
    h = agg.handle
    await h.offer("a", frames("a", range(30), size=10))
    snap = await h.snapshot()
    assert snap.depth == 10 and snap.bytes == 100 and snap.dropped == 20
    await law(agg)
    token.cancel()
    await task


async def test_batch_ready_event():
    agg, token, task = await start(capacity=1000, batch_size=10)
    h = agg.handle
    await h.offer("a", frames("a", range(9)))
    await h.snapshot()
    assert not agg.batch_ready.is_set()
    await h.offer("a", frames("a", range(9, 10)))
    await h.snapshot()
    assert agg.batch_ready.is_set()
    await h.ack(await h.take(10))
    assert not agg.batch_ready.is_set()
    token.cancel()
    await task


async def test_messages_sent_before_stop_are_served():
    agg, token, task = await start(capacity=1000, batch_size=1000)
    h = agg.handle
    for i in range(50):
        await h.offer("a", frames("a", range(i * 10, i * 10 + 10)))
    snap_future = asyncio.ensure_future(h.snapshot())
    await asyncio.sleep(0)
    token.cancel()
    await task
    assert (await snap_future).accounts["a"].frames == 500


async def test_bad_request_does_not_kill_the_actor():
    """A request whose handling raises gets the error as its answer; the actor lives on."""
    from firmware_host.aggregator import Take

    agg, token, task = await start(capacity=10, batch_size=10)
    await agg.handle.offer("a", frames("a", range(3)))
    fut = asyncio.get_running_loop().create_future()
    await agg._inbox.put(Take("bogus", None, None, fut))  # type: ignore[arg-type]  # a limit that is no int
    with pytest.raises(TypeError):
        await fut
    assert (await agg.handle.snapshot()).depth == 3
    token.cancel()
    await task


async def test_byte_eviction_below_a_batch_clears_ready():
    """A stale batch_ready after a byte-bound eviction spun the flusher at 100% CPU."""
    agg, token, task = await start(capacity=1000, max_bytes=40, batch_size=5)
    h = agg.handle
    await h.offer("a", frames("a", range(5), size=4))  # 20 bytes, a full batch
    await h.snapshot()
    assert agg.batch_ready.is_set()
    await h.offer("a", frames("a", range(5, 6), size=30))  # evicts down to 3 frames (38 bytes)
    snap = await h.snapshot()
    assert snap.depth < 5 and not agg.batch_ready.is_set()
    await law(agg)
    token.cancel()
    await task


async def test_requests_after_stop_fail_instead_of_hanging():
    from firmware_host.aggregator import AggregatorStopped

    agg, token, task = await start(capacity=10, batch_size=10)
    token.cancel()
    await task
    with pytest.raises(AggregatorStopped):
        await asyncio.wait_for(agg.handle.snapshot(), 1)


@pytest.mark.parametrize("max_bytes", [0, 10_000])
async def test_reported_bytes_follow_offers_evictions_and_acks(max_bytes):
    """The reported bytes follow every way frames enter and leave the buffer,
    with and without a byte bound."""
    agg, token, task = await start(capacity=10, max_bytes=max_bytes, batch_size=100)
    h = agg.handle
    await h.offer("a", frames("a", range(6), size=3))
    await h.offer("b", [Frame("b", 0, None, 0.0, text="hello")])  # a text frame counts its characters
    assert (await h.snapshot()).bytes == 6 * 3 + 5
    await h.offer("a", frames("a", range(6, 11), size=7))  # evicts two 3-byte frames
    assert (await h.snapshot()).bytes == 4 * 3 + 5 + 5 * 7
    await h.ack(await h.take(5))  # four 3-byte frames and the text frame
    assert (await h.snapshot()).bytes == 5 * 7
    await h.pop(await h.take(2, device="a"))
    snap = await h.snapshot()
    assert snap.bytes == 3 * 7 and snap.depth == 3
    await law(agg)
    token.cancel()
    await task


@pytest.mark.parametrize("middle", [False, True])
async def test_a_global_ack_after_a_per_device_ack_removes_only_its_own_frames(middle):
    """The flusher's lock keeps per-device and global batches apart; without
    it, a per-device ack shifts the ids of a global batch in flight, and the
    global ack must still remove only that batch's frames (not newer ones)."""
    agg, token, task = await start(capacity=100, batch_size=100)
    h = agg.handle
    await h.offer("a", frames("a", range(1)))
    await h.offer("b", frames("b", range(1)))
    await h.offer("a", frames("a", range(1, 2)))
    batch = await h.take(3)  # a0, b0, a1
    device = "b" if middle else "a"
    await h.ack(await h.take(1, device))  # b0 (inside the batch) or a0 (its first frame)
    await h.offer("c", frames("c", range(1)))  # c0: never taken
    counts = await h.ack(batch)
    assert counts == ({"a": 2} if middle else {"a": 1, "b": 1})
    snap = await h.snapshot()
    assert snap.depth == 1 and snap.accounts["c"].buffered == 1 and snap.accounts["c"].flushed == 0
    await law(agg)
    token.cancel()
    await task


def test_max_bytes_is_fixed_at_construction():
    """Sizes are counted lazily without a bound; a bound set later would not know that."""
    agg = Aggregator(capacity=10, max_bytes=0)
    assert agg.max_bytes == 0
    with pytest.raises(AttributeError):
        agg.max_bytes = 60  # type: ignore[misc]


async def test_reader_offers_nowait_and_awaits_offer_only_when_the_inbox_is_full():
    """The reader's side of the typed seam: every read goes through offer_nowait;
    offer (which may wait for room) is used exactly when offer_nowait refused."""
    from firmware_host import FakeOpener, FakePort, Fh1Codec, encode_packet
    from firmware_host._sync import ReadGate
    from firmware_host.cancel import CancellationToken
    from firmware_host.uplink import UplinkReader, fixed_url

    class Inlet:
        def __init__(self) -> None:
            self.read_gate = ReadGate()
            self.nowait: list[int] = []
            self.awaited: list[int] = []
            self.all_in = asyncio.Event()

        def offer_nowait(self, device, frames):
            self.nowait.append(frames[0].seq)
            return frames[0].seq % 2 == 0  # refuse odd reads: "the inbox is full"

        async def offer(self, device, frames):
            self.awaited.append(frames[0].seq)
            if frames[0].seq == 5:
                self.all_in.set()

    inlet = Inlet()
    port = FakePort([encode_packet(0, seq, b"x") for seq in range(6)])
    reader = UplinkReader("d", fixed_url("fake://"), 115200, Fh1Codec("d"), inlet, FakeOpener({"fake://": [port]}))
    token = CancellationToken()
    task = asyncio.create_task(reader.run(token))
    await asyncio.wait_for(inlet.all_in.wait(), 5)
    token.cancel()
    await task
    assert inlet.nowait == [0, 1, 2, 3, 4, 5]
    assert inlet.awaited == [1, 3, 5]


async def test_each_lane_is_ready_at_its_own_batch_size_capped_at_capacity():
    agg, token, task = await start(capacity=10, batch_size=4)
    h = agg.handle
    default, small, large = await h.add_lane("default"), await h.add_lane("small", 2), await h.add_lane("large", 500)

    async def ready() -> list[bool]:
        await h.mark()  # a request answered after the offers before it were handled
        return [h.lane_ready(n).is_set() for n in (default, small, large)]

    await h.offer("a", frames("a", range(1)))
    assert await ready() == [False, False, False]
    await h.offer("a", frames("a", range(1, 2)))
    assert await ready() == [False, True, False]  # 2 waiting: the small lane's batch
    await h.offer("a", frames("a", range(2, 4)))
    assert await ready() == [True, True, False]  # 4: the buffer's batch_size
    await h.offer("a", frames("a", range(4, 9)))
    assert await ready() == [True, True, False]
    # 500 can never wait in a buffer of 10: a full buffer is the large lane's full batch
    await h.offer("a", frames("a", range(9, 10)))
    assert await ready() == [True, True, True]
    batch = await h.take(10, lane=large)
    await h.ack(batch)
    assert await ready() == [True, True, False]
    await law(agg)
    token.cancel()
    await task
