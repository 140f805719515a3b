"""Per-sink delivery where requests race: an on-demand flush against a sink's
own delivery, a sink that hangs during a per-device flush, a source fault in
one lane, a cancelled spool ack, and the per-sink law read while frames
stream through a spool. Each was a defect found in review; each test failed
before its fix."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from firmware_host import CancellationToken, FakeOpener, FakePort, Frame, Runtime, Sink, config_from_dict, encode_packet
from firmware_host.aggregator import Aggregator
from firmware_host.flusher import Flusher
from firmware_host.spool import Spool
from firmware_host.testing import assert_accounting

pytestmark = pytest.mark.timeout(30)


def frames(device: str, seqs: range) -> list[Frame]:
    return [Frame(device, s, 0, float(s), payload=b"p") for s in seqs]


class ListSink(Sink):
    name = "list"

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.seqs: list[int] = []

    async def write(self, batch: Sequence[Frame]) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        self.seqs.extend(f.seq for f in batch)


class HangSink(Sink):
    name = "hang"
    timeout = 0.1

    async def write(self, batch: Sequence[Frame]) -> None:
        await asyncio.Event().wait()


async def actor(capacity: int = 1000, batch_size: int = 1000) -> tuple[Aggregator, CancellationToken, Any]:
    agg = Aggregator(capacity, batch_size=batch_size)
    token = CancellationToken()
    return agg, token, asyncio.ensure_future(agg.run(token))


async def test_a_per_device_flush_racing_the_sinks_own_delivery_sends_nothing_twice():
    agg, token, task = await actor(batch_size=4)
    sink = ListSink(delay=0.05)
    flusher = Flusher(agg.handle, [sink], interval=10, batch_size=4)
    await flusher.attach()
    stop = CancellationToken()
    lane_task = asyncio.ensure_future(flusher.lanes[0].run(stop))
    agg.handle.offer_nowait("d", frames("d", range(3)))
    flush = asyncio.ensure_future(flusher.flush("d", deadline=time.monotonic() + 5))
    await asyncio.sleep(0.01)  # the flush is writing; a full batch for the lane arrives
    agg.handle.offer_nowait("d", frames("d", range(3, 8)))
    result = await flush
    await asyncio.wait_for(_until(lambda: len(sink.seqs) >= 7), 5)  # the lane's own full batch
    await flusher.flush(deadline=time.monotonic() + 5)  # and the rest
    stop.cancel()
    await lane_task
    token.cancel()
    await task
    assert result.flushed == 3 and not result.incomplete
    assert sorted(sink.seqs) == list(range(8))  # each frame once


async def _until(predicate: Any) -> None:
    while not predicate():
        await asyncio.sleep(0.01)


async def test_a_per_device_flush_with_a_failing_sink_sends_to_nobody():
    agg, token, task = await actor()
    live, stuck = ListSink(), HangSink()
    flusher = Flusher(agg.handle, [live, stuck], interval=0, batch_size=10, backoff_initial=0.01, backoff_max=0.02)
    await flusher.attach()
    agg.handle.offer_nowait("d", frames("d", range(5)))
    first = await flusher.flush("d", deadline=time.monotonic() + 0.3)  # the stuck sink starts failing here
    assert first.incomplete and first.sinks[1]["done"] is False
    for _ in range(3):  # now known to fail: nothing goes to anyone, no copy piles up at the live sink
        again = await flusher.flush("d", deadline=time.monotonic() + 0.3)
        assert again.incomplete and [s["sent"] for s in again.sinks] == [0, 0]
    await flusher.flush(deadline=time.monotonic() + 0.3)
    token.cancel()
    await task
    # the first attempt's copy, then the live sink's own delivery: at most one extra
    assert live.seqs == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]


async def test_a_source_fault_in_one_lane_does_not_end_the_flush_before_the_others(mocker):
    agg, token, task = await actor()
    handle = agg.handle
    real_take = type(handle).take

    async def take(self: Any, limit: int, device: Any = None, upto: Any = None, lane: Any = None) -> Any:
        if lane == 1:
            raise OSError("disk I/O error")
        return await real_take(self, limit, device, upto, lane)

    mocker.patch.object(type(handle), "take", take)
    slow, other = ListSink(delay=0.2), ListSink()
    flusher = Flusher(handle, [slow, other], interval=0, batch_size=10)
    await flusher.attach()
    handle.offer_nowait("d", frames("d", range(30)))
    result = await flusher.flush(deadline=time.monotonic() + 5)
    busy = flusher.lanes[0].lock.locked()
    token.cancel()
    await task
    assert not busy and slow.seqs == list(range(30))  # the slow lane finished before flush returned
    assert result.incomplete and result.sinks[1]["done"] is False
    assert flusher.source_failures >= 1  # (shown until a later ack succeeds)


async def test_a_cancelled_spool_ack_still_counts_the_rows_it_deleted(tmp_path: Path):
    spool = Spool(str(tmp_path / "s.db"), max_bytes=10**7, batch_size=10)
    await spool.open()
    lane = await spool.add_lane("a")
    rows = frames("d", range(5))
    await spool.write(rows)
    batch = await spool.take(5, lane=lane)
    ack = asyncio.ensure_future(spool.ack(batch))
    await asyncio.sleep(0)
    ack.cancel()
    await spool.mark()  # the thread has run the ack by now
    acct = spool.account("d")
    await asyncio.wait_for(_until(lambda: acct.pending == 0), 5)  # and the loop its counting, despite the cancel
    left = sqlite3.connect(str(tmp_path / "s.db")).execute("SELECT COUNT(*) FROM frames").fetchone()[0]
    await spool.close()
    assert left == 0
    assert (acct.pending, acct.delivered) == (0, 5)


def packets(seqs: range) -> bytes:
    return b"".join(encode_packet(0, s, b"p") for s in seqs)


async def test_the_per_sink_law_holds_in_every_status_while_frames_stream_through_a_spool(tmp_path: Path):
    cfg = config_from_dict(
        {
            "buffer": {
                "flush_interval": 0.01,
                "batch_size": 20,
                "spool": str(tmp_path / "s.db"),
                "spool_interval": 0.01,
            },
            "shutdown": {"grace": 5},
            "devices": [{"name": "a", "port": "fake://a", "codec": "fh1"}],
        }
    )
    chunks = [packets(range(i, i + 20)) for i in range(0, 4000, 20)]
    rt = Runtime(cfg, opener=FakeOpener({"fake://a": [FakePort(chunks)]}), sinks=[ListSink()])
    await rt.start()
    bad: list[str] = []
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            status = await rt.status()
            for sink in status["sinks"]:  # the per-sink law (the device law has a window of its own)
                d, c = status["devices"]["a"], sink["devices"].get("a")
                if c and d["frames"] != c["delivered"] + c["missed"] + c["pending"]:
                    bad.append(f"{d['frames']} != {c}")
            if status["devices"]["a"]["frames"] >= 4000 and status["devices"]["a"]["buffered"] == 0:
                break
            await asyncio.sleep(0)
    finally:
        summary = await rt.shutdown()
    assert not bad, bad[:3]
    assert_accounting(summary.status)
