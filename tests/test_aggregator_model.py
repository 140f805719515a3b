"""The aggregator against a reference model: a plain list of frames.

The actor keeps its buffer in chunks (one per offer) so that offers, evictions
and acks cost per read, not per frame. The model here keeps one frame per
list slot with its id, the obvious way, and one cursor per lane (per sink).
Hypothesis drives both with the same random offers, takes (from the oldest
frame or for a lane, global and per device, with and without a mark), acks,
trims and pops, lanes that are added and closed (sinks that leave), and lanes
whose batches are acked late or never (sinks that fail, retry and recover
independently), interleaved with batches in flight. Every answer must agree,
and every counter at the steps where the test looks (a snapshot) and at the
end: not after every step, because a snapshot also counts the byte sizes the
actor leaves uncounted without a byte bound, and those paths must be
exercised too.

The runtime never has every kind of request in flight at once; the model does
not rely on that, so any order of requests must leave the books consistent
and the actor alive.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_host import CancellationToken, Frame
from firmware_host.aggregator import Aggregator, Batch

pytestmark = pytest.mark.timeout(90)

DEVICES = ("a", "b", "c")


def size_of(frame: Frame) -> int:
    if frame.payload is not None:
        return len(frame.payload)
    return len(frame.text or "")


@dataclass
class ModelLane:
    cursor: int
    delivered: dict[str, int] = field(default_factory=dict)
    missed: dict[str, int] = field(default_factory=dict)
    closed: bool = False

    def count(self, column: dict[str, int], device: str, k: int = 1) -> None:
        column[device] = column.get(device, 0) + k


@dataclass
class Slot:
    fid: int
    device: str
    frame: Frame


@dataclass
class Model:
    capacity: int
    max_bytes: int
    slots: list[Slot] = field(default_factory=list)
    next_id: int = 0
    dropped: int = 0
    accounts: dict[str, list[int]] = field(default_factory=dict)  # frames, flushed, dropped, buffered
    lanes: list[ModelLane] = field(default_factory=list)

    def acct(self, device: str) -> list[int]:
        return self.accounts.setdefault(device, [0, 0, 0, 0])

    def head(self) -> int:
        return self.slots[0].fid if self.slots else self.next_id

    def open_lanes(self) -> list[ModelLane]:
        return [lane for lane in self.lanes if not lane.closed]

    def _leave(self, slot: Slot, column: int, lanes_column: str | None) -> None:
        """One frame leaves: flushed (1) or dropped (2); for each open lane
        that had not accepted it, delivered or missed."""
        self.slots.remove(slot)
        self.acct(slot.device)[column] += 1
        self.acct(slot.device)[3] -= 1
        if lanes_column is not None:
            for lane in self.open_lanes():
                if slot.fid >= lane.cursor:
                    lane.count(getattr(lane, lanes_column), slot.device)

    def offer(self, device: str, frames: list[Frame]) -> None:
        acct = self.acct(device)
        acct[0] += len(frames)
        skip = max(0, len(frames) - self.capacity)
        acct[2] += skip
        self.dropped += skip
        for lane in self.lanes:
            lane.count(lane.missed, device, len(frames) if lane.closed else skip)
        for f in frames[skip:]:
            self.slots.append(Slot(self.next_id, device, f))
            self.next_id += 1
            acct[3] += 1
        while len(self.slots) > self.capacity or (
            self.max_bytes and sum(size_of(s.frame) for s in self.slots) > self.max_bytes
        ):
            self.dropped += 1
            self._leave(self.slots[0], 2, "missed")

    def window(self, device: str | None, upto: int | None, lane: int | None) -> list[Slot]:
        start = 0 if lane is None else self.lanes[lane].cursor
        return [
            s
            for s in self.slots
            if s.fid >= start and (upto is None or s.fid <= upto) and (device is None or s.device == device)
        ]

    def take(self, limit: int, device: str | None, upto: int | None, lane: int | None) -> list[Slot]:
        return self.window(device, upto, lane)[:limit]

    def trim(self, batch: Batch) -> list[Frame]:
        """What is still buffered of the batch and not yet accepted by its lane."""
        live = {id(s.frame) for s in self.window(batch.device, None, batch.lane)}
        return [f for f in batch.frames if id(f) in live]

    def release(self) -> dict[str, int]:
        cursors = [lane.cursor for lane in self.open_lanes()]
        counts: dict[str, int] = {}
        if not cursors:
            return counts
        for s in [s for s in self.slots if s.fid < min(cursors)]:
            counts[s.device] = counts.get(s.device, 0) + 1
            self._leave(s, 1, None)
        return counts

    def ack(self, batch: Batch) -> dict[str, int]:
        counts: dict[str, int] = {}
        if batch.lane is None:
            # every sink accepted it: what is left of it goes, flushed
            for s in [s for s in self.slots if s.fid <= batch.last_id]:
                if batch.device is None or s.device == batch.device:
                    counts[s.device] = counts.get(s.device, 0) + 1
                    self._leave(s, 1, "delivered")
            return counts
        lane = self.lanes[batch.lane]
        if lane.closed or batch.device is not None:
            return counts
        for s in self.slots:
            if lane.cursor <= s.fid <= batch.last_id:
                lane.count(lane.delivered, s.device)
        lane.cursor = max(lane.cursor, batch.last_id + 1)
        return self.release()

    def add_lane(self) -> int:
        lane = ModelLane(self.head())
        for d, (_, flushed, dropped, _) in self.accounts.items():
            if flushed + dropped:
                lane.missed[d] = flushed + dropped
        self.lanes.append(lane)
        return len(self.lanes) - 1

    def close_lane(self, index: int) -> None:
        lane = self.lanes[index]
        if lane.closed:
            return
        for s in self.window(None, None, index):
            lane.count(lane.missed, s.device)
        lane.closed = True
        lane.cursor = self.next_id
        self.release()

    def lane_pending(self, index: int) -> dict[str, int]:
        lane = self.lanes[index]
        counts: dict[str, int] = {}
        if not lane.closed:
            for s in self.window(None, None, index):
                counts[s.device] = counts.get(s.device, 0) + 1
        return counts


offers = st.tuples(
    st.just("offer"),
    st.sampled_from(DEVICES),
    st.lists(st.one_of(st.integers(0, 12), st.none()), min_size=0, max_size=10),
)
takes = st.tuples(
    st.just("take"),
    st.integers(0, 30),
    st.one_of(st.none(), st.sampled_from(DEVICES)),
    st.one_of(st.none(), st.integers(0, 12)),  # how far below the newest id the mark is
    st.one_of(st.none(), st.integers(0, 3)),  # the lane (mod the lanes there are)
)
settles = st.tuples(st.sampled_from(["ack", "ack", "trim", "pop"]), st.integers(0, 3))
lane_ops = st.tuples(st.sampled_from(["add_lane", "close_lane"]), st.integers(0, 3))
#: (operation, look: take a snapshot and check every counter after it)
operations = st.lists(
    st.tuples(st.one_of(offers, offers, takes, takes, settles, lane_ops), st.booleans()), min_size=10, max_size=60
)


def ids(frames: list[Frame]) -> list[int]:
    return [id(f) for f in frames]


async def drive(capacity: int, max_bytes: int, ops: list[tuple], batch_size: int = 8, lanes: int = 0) -> None:
    agg = Aggregator(capacity, max_bytes, batch_size=batch_size)
    token = CancellationToken()
    task = asyncio.ensure_future(agg.run(token))
    h, model = agg.handle, Model(capacity, max_bytes)
    for _ in range(lanes):
        assert await h.add_lane("sink") == model.add_lane()
    in_flight: list[Batch] = []
    offered: list[Frame] = []
    seq = 0
    try:
        for step, (op, look) in enumerate(ops):
            kind = op[0]
            # the sender may reuse its list once the offer is served
            offered.clear()
            if kind == "offer":
                _, device, sizes = op
                batch = []
                for size in sizes:  # None: a text frame of 3 characters
                    seq += 1
                    batch.append(
                        Frame(device, seq, None, float(seq), text="txt")
                        if size is None
                        else Frame(device, seq, 0, float(seq), payload=bytes(size))
                    )
                await h.offer(device, batch)
                model.offer(device, list(batch))
                offered = batch
            elif kind == "take":
                _, limit, device, below, lane = op
                lane = None if lane is None or not model.lanes else lane % len(model.lanes)
                mark = None if below is None else model.next_id - 1 - below
                got = await h.take(limit, device, mark, lane)
                want = model.take(limit, device, mark, lane)
                assert ids(got.frames) == [id(s.frame) for s in want]
                if want:
                    assert (got.first_id, got.last_id) == (want[0].fid, want[-1].fid)
                else:
                    assert got.last_id < got.first_id
                assert got.lane == lane and got.device == device
                in_flight.append(got)
            elif kind == "add_lane":
                assert await h.add_lane("late") == model.add_lane()
            elif kind == "close_lane":
                if model.lanes:
                    index = op[1] % len(model.lanes)
                    await h.close_lane(index)
                    model.close_lane(index)
            elif in_flight:
                batch = in_flight.pop(op[1] % len(in_flight))
                if kind == "trim":
                    trimmed = await h.trim(batch)
                    assert ids(trimmed.frames) == ids(model.trim(batch))
                elif kind == "ack":
                    assert await h.ack(batch) == model.ack(batch)
                else:
                    popped = await h.pop(batch)
                    expected = model.trim(batch)
                    model.ack(batch)
                    assert ids(popped) == ids(expected)
            assert await h.mark() == model.next_id - 1
            assert agg.batch_ready.is_set() == (len(model.slots) >= batch_size)
            for i, lane in enumerate(model.lanes):
                waiting = sum(model.lane_pending(i).values())
                # a lane's full batch is capped at capacity: a full buffer is always one
                full = min(batch_size, capacity)
                assert h.lane_ready(i).is_set() == (not lane.closed and waiting >= full), i
            if not (look or step == len(ops) - 1):
                continue
            snap = await h.snapshot(oldest=True, lanes=True)
            assert snap.depth == len(model.slots)
            assert snap.bytes == sum(size_of(s.frame) for s in model.slots)
            assert snap.dropped == model.dropped
            assert {d: [a.frames, a.flushed, a.dropped, a.buffered] for d, a in snap.accounts.items()} == model.accounts
            for d, a in snap.accounts.items():
                assert a.frames == a.flushed + a.dropped + a.buffered, d  # the accounting law
            oldest: dict[str, float] = {}
            for s in model.slots:
                oldest.setdefault(s.device, s.frame.ts)
            assert snap.oldest_ts == oldest
            assert len(snap.lanes) == len(model.lanes)
            for i, (view, lane) in enumerate(zip(snap.lanes, model.lanes, strict=True)):
                assert view.closed == lane.closed
                pending = model.lane_pending(i)
                for d, a in snap.accounts.items():
                    got = view.devices[d]
                    want = (lane.delivered.get(d, 0), lane.missed.get(d, 0), pending.get(d, 0))
                    assert (got.delivered, got.missed, got.pending) == want, (i, d)
                    assert a.frames == got.delivered + got.missed + got.pending, (i, d)  # the per-sink law
    finally:
        token.cancel()
        await task


@settings(max_examples=300, deadline=None)
@given(
    capacity=st.integers(1, 30),
    max_bytes=st.sampled_from([0, 0, 8, 15, 60]),
    ops=operations,
    batch_size=st.sampled_from([1, 8, 1000]),
    lanes=st.sampled_from([0, 1, 2, 3]),
)
def test_the_aggregator_agrees_with_a_plain_list_model(
    capacity: int, max_bytes: int, ops: list[tuple], batch_size: int, lanes: int
) -> None:
    asyncio.run(drive(capacity, max_bytes, ops, batch_size, lanes))
