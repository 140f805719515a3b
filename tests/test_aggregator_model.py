"""The aggregator against a reference model: a plain list of frames.

The actor keeps its buffer in chunks (one per offer) so that offers, evictions
and acks cost per read, not per frame. The model here keeps one frame per
list slot, the obvious way. Hypothesis drives both with the same random
offers, takes (global and per device, with and without a mark), acks, trims
and pops, interleaved with batches in flight. Every answer must agree, and
every counter at the steps where the test looks (a snapshot) and at the end:
not after every step, because a snapshot also counts the byte sizes the actor
leaves uncounted without a byte bound, and those paths must be exercised too.

The runtime's flusher never has a global and a per-device batch in flight at
once (one delivery lock); the model does not rely on that, so any order of
requests must leave the books consistent and the actor alive.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_host import CancellationToken, Frame
from firmware_host.aggregator import Aggregator, Batch

pytestmark = pytest.mark.timeout(60)

DEVICES = ("a", "b", "c")


def size_of(frame: Frame) -> int:
    if frame.payload is not None:
        return len(frame.payload)
    return len(frame.text or "")


@dataclass
class Model:
    capacity: int
    max_bytes: int
    frames: list[Frame] = field(default_factory=list)
    device_of: dict[int, str] = field(default_factory=dict)  # id(frame) -> offering device
    head: int = 0
    dropped: int = 0
    accounts: dict[str, list[int]] = field(default_factory=dict)  # frames, flushed, dropped, buffered

    def acct(self, device: str) -> list[int]:
        return self.accounts.setdefault(device, [0, 0, 0, 0])

    def _remove_first(self, n: int, column: int) -> dict[str, int]:
        counts: dict[str, int] = {}
        for f in self.frames[:n]:
            d = self.device_of[id(f)]
            counts[d] = counts.get(d, 0) + 1
        del self.frames[:n]
        self.head += n
        for d, k in counts.items():
            self.acct(d)[column] += k
            self.acct(d)[3] -= k
        return counts

    def offer(self, device: str, frames: list[Frame]) -> None:
        acct = self.acct(device)
        acct[0] += len(frames)
        if len(frames) > self.capacity:
            skip = len(frames) - self.capacity
            acct[2] += skip
            self.dropped += skip
            frames = frames[skip:]
        for f in frames:
            self.device_of[id(f)] = device
        acct[3] += len(frames)
        self.frames += frames
        while len(self.frames) > self.capacity or (self.max_bytes and sum(map(size_of, self.frames)) > self.max_bytes):
            self.dropped += 1
            self._remove_first(1, 2)

    def take(self, limit: int, device: str | None, upto: int | None) -> list[Frame]:
        last = len(self.frames) if upto is None else max(0, upto - self.head + 1)
        window = self.frames[:last]
        if device is not None:
            window = [f for f in window if self.device_of[id(f)] == device]
        return window[:limit]

    def trim(self, batch: Batch) -> list[Frame]:
        if batch.device is None:
            gone = self.head - batch.first_id
            return batch.frames[gone:] if gone > 0 else batch.frames
        live = {id(f) for f in self.frames}
        return [f for f in batch.frames if id(f) in live]

    def ack(self, batch: Batch) -> dict[str, int]:
        """Remove exactly the batch's frames still buffered. A global batch
        whose survivors are the oldest frames leaves by position (``head``
        moves on); otherwise (a per-device batch, or a global one whose ids a
        per-device ack shifted since the take) by identity, ``head`` unmoved."""
        ids = {id(f) for f in batch.frames}
        survivors = [
            f for f in self.frames if id(f) in ids and (batch.device is None or self.device_of[id(f)] == batch.device)
        ]
        n = batch.first_id + len(batch.frames) - self.head
        if batch.device is None and n <= 0:
            return {}
        prefix = [id(f) for f in self.frames[:n]] == [id(f) for f in survivors]
        if batch.device is None and len(survivors) == n and prefix:
            return self._remove_first(n, 1)
        counts: dict[str, int] = {}
        for f in survivors:
            d = self.device_of[id(f)]
            counts[d] = counts.get(d, 0) + 1
            self.acct(d)[1] += 1
            self.acct(d)[3] -= 1
        gone = {id(f) for f in survivors}
        self.frames = [f for f in self.frames if id(f) not in gone]
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
    st.one_of(st.none(), st.integers(-3, 30)),
)
settles = st.tuples(st.sampled_from(["ack", "trim", "pop"]), st.integers(0, 3))
#: (operation, look: take a snapshot and check every counter after it)
operations = st.lists(st.tuples(st.one_of(offers, offers, takes, settles), st.booleans()), min_size=10, max_size=50)


async def drive(capacity: int, max_bytes: int, ops: list[tuple], batch_size: int = 8) -> None:
    agg = Aggregator(capacity, max_bytes, batch_size=batch_size)
    token = CancellationToken()
    task = asyncio.ensure_future(agg.run(token))
    h, model = agg.handle, Model(capacity, max_bytes)
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
                _, limit, device, upto = op
                mark = None if upto is None else model.head + upto
                got = await h.take(limit, device, mark)
                assert [id(f) for f in got.frames] == [id(f) for f in model.take(limit, device, mark)]
                in_flight.append(got)
            elif in_flight:
                batch = in_flight.pop(op[1] % len(in_flight))
                if kind == "trim":
                    trimmed = await h.trim(batch)
                    assert [id(f) for f in trimmed.frames] == [id(f) for f in model.trim(batch)]
                elif kind == "ack":
                    assert await h.ack(batch) == model.ack(batch)
                else:
                    popped = await h.pop(batch)
                    expected = model.trim(batch)
                    model.ack(batch)
                    assert [id(f) for f in popped] == [id(f) for f in expected]
            assert await h.mark() == model.head + len(model.frames) - 1
            assert agg.batch_ready.is_set() == (len(model.frames) >= batch_size)
            if not (look or step == len(ops) - 1):
                continue
            snap = await h.snapshot(oldest=True)
            assert snap.depth == len(model.frames)
            assert snap.bytes == sum(map(size_of, model.frames))
            assert snap.dropped == model.dropped
            assert {d: [a.frames, a.flushed, a.dropped, a.buffered] for d, a in snap.accounts.items()} == model.accounts
            for d, a in snap.accounts.items():
                assert a.frames == a.flushed + a.dropped + a.buffered, d  # the accounting law
            oldest = {}
            for f in model.frames:
                oldest.setdefault(model.device_of[id(f)], f.ts)
            assert snap.oldest_ts == oldest
    finally:
        token.cancel()
        await task


@settings(max_examples=300, deadline=None)
@given(
    capacity=st.integers(1, 30),
    max_bytes=st.sampled_from([0, 0, 8, 15, 60]),
    ops=operations,
    batch_size=st.sampled_from([1, 8, 1000]),
)
def test_the_aggregator_agrees_with_a_plain_list_model(
    capacity: int, max_bytes: int, ops: list[tuple], batch_size: int
) -> None:
    asyncio.run(drive(capacity, max_bytes, ops, batch_size))
