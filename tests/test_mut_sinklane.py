"""sinklane.py on a virtual clock, against the real aggregator: when a lane's
own loop delivers (a full batch at once, the rest on the interval), what a
delivery takes (up to the mark, full batches only), the retry with capped
exponential backoff and what drop-oldest left, each write's deadline (the
sink's timeout, the drain's deadline, the abort token), the read gate, a
source fault, and a sink that closes (tests written from mutation testing,
docs/testing-internals.md).

Expected times are worked out by hand from the documented rules: after the
k-th failed write in a row the lane waits ``min(initial * 2**(k-1), max)``;
a write may take ``min(sink.timeout, what is left to the deadline)``. The
modules read ``time.monotonic``; the tests point it at the virtual loop's clock.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import types
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from firmware_host import retry, sinklane
from firmware_host._sync import Changes, ReadGate
from firmware_host.aggregator import Aggregator, Batch
from firmware_host.cancel import CancellationToken
from firmware_host.frames import Frame
from firmware_host.retry import SourceFaults
from firmware_host.sinklane import BatchSource, LaneResult, Moved, SinkLane
from firmware_host.sinks.base import Sink, SinkClosed
from tests.virtual_time import run_virtual, virtual_loop

pytestmark = pytest.mark.timeout(10)


@pytest.fixture(autouse=True)
def loop_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """``time.monotonic`` in sinklane.py and retry.py is the running loop's (virtual) clock."""
    clock = types.SimpleNamespace(monotonic=lambda: asyncio.get_running_loop().time())
    monkeypatch.setattr(sinklane, "time", clock)
    monkeypatch.setattr(retry, "time", clock)


def now() -> float:
    return virtual_loop().time()


async def at(t: float) -> None:
    await asyncio.sleep(t - now())


def frames(seqs: range, device: str = "d") -> list[Frame]:
    return [Frame(device, s, 0, float(s), payload=b"p") for s in seqs]


#: what one write does: None accept at once, a float take that long then accept,
#: an exception raise it, "hang" never return
Step = None | float | BaseException | str


class ScriptSink(Sink):
    """Follows ``script`` call by call (then accepts at once); records each
    call's start time and seqs, and the seqs of the writes it accepted."""

    name = "rec"

    def __init__(self, script: Sequence[Step] = (), timeout: float = 100.0) -> None:
        self.script = list(script)
        self.timeout = timeout
        self.calls: list[tuple[float, list[int]]] = []
        self.accepted: list[int] = []
        self.gate_seen: list[bool] = []
        self.gate: ReadGate | None = None
        self.during: Callable[[], object] | None = None

    async def write(self, batch: Sequence[Frame]) -> None:
        self.calls.append((now(), [f.seq for f in batch]))
        if self.gate is not None:
            self.gate_seen.append(self.gate.closed)
        if self.during is not None:
            self.during()
        step = self.script.pop(0) if self.script else None
        if isinstance(step, BaseException):
            raise step
        if step == "hang":
            await asyncio.Event().wait()
        elif isinstance(step, float):
            await asyncio.sleep(step)
        self.accepted.extend(f.seq for f in batch)

    def times(self) -> list[float]:
        return [t for t, _ in self.calls]


class Rig:
    """A running aggregator and one lane for ``sink``."""

    def __init__(self, agg: Aggregator, lane: SinkLane, token: CancellationToken, task: asyncio.Future[None]):
        self.agg, self.lane, self.token, self.task = agg, lane, token, task
        self.handle = agg.handle

    async def offer(self, seqs: range) -> None:
        self.handle.offer_nowait("d", frames(seqs))
        await self.handle.mark()  # served in order: the offer is in

    async def stop(self) -> None:
        self.token.cancel()
        await self.task


async def rig(
    sink: Sink,
    *,
    capacity: int = 1000,
    batch_size: int = 10,
    interval: float = 0.0,
    source: Callable[[Aggregator], BatchSource] | None = None,
    **kw: Any,
) -> Rig:
    agg = Aggregator(capacity, batch_size=batch_size)
    token = CancellationToken()
    task = asyncio.ensure_future(agg.run(token))
    src = agg.handle if source is None else source(agg)
    changes = kw.pop("changes", None) or Changes()
    faults = kw.pop("faults", None) or SourceFaults("buffer", changes)
    lane = SinkLane(sink, src, batch_size=batch_size, interval=interval, faults=faults, changes=changes, **kw)
    await lane.attach()
    return Rig(agg, lane, token, task)


def lanes(agg: Aggregator) -> list[tuple[str, bool, dict[str, tuple[int, int, int]]]]:
    snap = agg.snapshot_now(lanes=True)
    return [
        (v.name, v.closed, {d: (a.delivered, a.missed, a.pending) for d, a in v.devices.items()}) for v in snap.lanes
    ]


# -- Moved ------------------------------------------------------------------------


def test_moved_adds_up_per_device_and_in_total() -> None:
    moved = Moved()
    moved.add({"a": 2, "b": 3})
    moved.add({"a": 4})
    assert (moved.flushed, moved.devices, moved.incomplete) == (9, {"a": 6, "b": 3}, False)
    assert LaneResult().sent == 0


def test_a_lane_has_no_number_until_attached() -> None:
    async def main() -> None:
        agg = Aggregator(10, batch_size=10)
        lane = SinkLane(
            ScriptSink(), agg.handle, batch_size=10, interval=1, faults=SourceFaults("b", Changes()), changes=Changes()
        )
        assert (lane.lane, lane.closed) == (-1, False)

    run_virtual(main())


# -- the lane's own loop -------------------------------------------------------------


def test_a_full_batch_goes_at_once_and_the_rest_on_the_interval() -> None:
    sink = ScriptSink()

    async def main() -> None:
        r = await rig(sink, interval=2.0)
        stop = CancellationToken()
        run = asyncio.ensure_future(r.lane.run(stop))
        await at(0.5)
        await r.offer(range(25))  # two full batches now, 5 wait for the tick at 2
        await at(2.5)
        await r.offer(range(25, 28))  # then the tick at 4
        await at(5.0)
        stop.cancel()
        await run
        assert now() == 5.0
        await r.stop()

    run_virtual(main())
    assert sink.calls == [
        (0.5, list(range(10))),
        (0.5, list(range(10, 20))),
        (2.0, list(range(20, 25))),
        (4.0, [25, 26, 27]),
    ]


def test_a_short_interval_ticks() -> None:
    sink = ScriptSink()

    async def main() -> None:
        r = await rig(sink, interval=0.5)
        stop = CancellationToken()
        run = asyncio.ensure_future(r.lane.run(stop))
        await at(0.1)
        await r.offer(range(3))
        await at(1.2)
        stop.cancel()
        await run
        await r.stop()

    run_virtual(main())
    assert sink.calls == [(0.5, [0, 1, 2])]


def test_interval_zero_delivers_nothing_by_itself() -> None:
    sink = ScriptSink()

    async def main() -> None:
        r = await rig(sink, interval=0.0)
        stop = CancellationToken()
        run = asyncio.ensure_future(r.lane.run(stop))
        await r.offer(range(30))
        virtual_loop().call_later(3.0, stop.cancel)
        await run
        assert now() == 3.0
        await r.stop()

    run_virtual(main())
    assert sink.calls == []


def test_the_loop_ends_when_its_sink_closes() -> None:
    sink = ScriptSink([SinkClosed("reader gone")])
    closed: list[float] = []

    async def main() -> None:
        r = await rig(sink, interval=1.0, on_closed=lambda: closed.append(now()))
        await r.offer(range(5))
        await r.lane.run(CancellationToken())  # returns without a cancel
        assert now() == 1.0 and closed == [1.0]
        assert (r.lane.stats.state, r.lane.stats.last_error) == ("closed", "closed: reader gone")
        assert lanes(r.agg) == [("rec", True, {"d": (0, 5, 0)})]  # what it never had counts missed
        await r.stop()

    run_virtual(main())


class FaultySource:
    """The aggregator's handle, with faults injected: the first ``take_faults``
    takes and ``ack_faults`` acks raise; ``close_lane`` raises if ``close_fails``;
    ``gate`` False hides the read gate (a spool)."""

    def __init__(self, agg: Aggregator, take_faults: int = 0, ack_faults: int = 0, gate: bool = True) -> None:
        self.inner = agg.handle
        self.take_faults, self.ack_faults, self.gate = take_faults, ack_faults, gate
        self.close_fails = False
        self.names: list[str] = []
        self.acks: list[float] = []

    @property
    def read_gate(self) -> ReadGate | None:
        return self.inner.read_gate if self.gate else None

    async def add_lane(self, name: str, batch_size: int | None = None) -> int:
        self.names.append(name)
        return await self.inner.add_lane(name)

    def lane_ready(self, lane: int) -> asyncio.Event:
        return self.inner.lane_ready(lane)

    async def close_lane(self, lane: int) -> None:
        if self.close_fails:
            raise OSError("source stopped")
        await self.inner.close_lane(lane)

    async def take(
        self, limit: int, device: str | None = None, upto: int | None = None, lane: int | None = None
    ) -> Batch:
        if self.take_faults > 0:
            self.take_faults -= 1
            raise OSError("disk I/O error")
        return await self.inner.take(limit, device, upto, lane)

    async def trim(self, batch: Batch) -> Batch:
        return await self.inner.trim(batch)

    async def ack(self, batch: Batch) -> dict[str, int]:
        self.acks.append(now())
        if self.ack_faults > 0:
            self.ack_faults -= 1
            raise OSError("disk full")
        return await self.inner.ack(batch)

    async def mark(self) -> int:
        return await self.inner.mark()


def test_a_source_fault_in_the_loop_is_counted_and_retried_after_the_longest_backoff() -> None:
    sink = ScriptSink()
    sources: list[FaultySource] = []

    def make(agg: Aggregator) -> FaultySource:
        sources.append(FaultySource(agg, take_faults=1))
        return sources[0]

    async def main() -> None:
        r = await rig(sink, interval=1.0, source=make, backoff_max=3.0)
        assert sources[0].names == ["rec"] and r.lane.lane == 0
        stop = CancellationToken()
        run = asyncio.ensure_future(r.lane.run(stop))
        await r.offer(range(2))
        await at(3.9)
        assert r.lane.faults.failures == 1 and r.lane.faults.error == "OSError: disk I/O error"
        await at(4.5)
        # the tick at 1 failed (take); 3 s later (at 4) the overdue tick delivers (and the ack clears the error)
        assert r.lane.faults.failures == 1 and r.lane.faults.error is None
        stop.cancel()
        await run
        await r.stop()

    run_virtual(main())
    assert sink.calls == [(4.0, [0, 1])]


def test_a_source_fault_backoff_ends_with_the_shutdown() -> None:
    sink = ScriptSink()

    async def main() -> None:
        r = await rig(sink, interval=1.0, source=lambda agg: FaultySource(agg, take_faults=1), backoff_max=30.0)
        stop = CancellationToken()
        virtual_loop().call_later(2.0, stop.cancel)
        await r.offer(range(2))
        await r.lane.run(stop)
        assert now() == 2.0  # not 31: the backoff waits on the token
        await r.stop()

    run_virtual(main())
    assert sink.calls == []


def stops_on_cancel(sink: ScriptSink, seqs: range, **kw: Any) -> None:
    """The lane's loop, its sink failing for ever, stops within 0.5 s of its
    token's cancel at 2.5 (the token reaches the retries)."""

    async def main() -> None:
        r = await rig(sink, backoff_initial=1.0, backoff_max=1.0, **kw)
        stop = CancellationToken()
        run = asyncio.ensure_future(r.lane.run(stop))
        await r.offer(seqs)
        virtual_loop().call_later(2.5 - now(), stop.cancel)
        await at(2.5)
        done, _ = await asyncio.wait({run}, timeout=0.5)
        assert run in done and now() == 2.5
        await r.stop()

    run_virtual(main())


def test_a_cancel_ends_the_retries_of_a_timed_delivery() -> None:
    sink = ScriptSink([ConnectionError("down")] * 100)
    stops_on_cancel(sink, range(3), interval=1.0)
    assert sink.times() == [1.0, 2.0]


def test_a_cancel_ends_the_retries_of_a_full_batch() -> None:
    sink = ScriptSink([ConnectionError("down")] * 100)
    stops_on_cancel(sink, range(10), interval=100.0)
    assert sink.times() == [0.0, 1.0, 2.0]


# -- a delivery -------------------------------------------------------------------------


def test_a_cancel_ends_a_deliverys_write_retries() -> None:
    sink = ScriptSink([ConnectionError("down")] * 100)

    async def main() -> None:
        r = await rig(sink, backoff_initial=1.0)
        await r.offer(range(5))
        token = CancellationToken()
        virtual_loop().call_later(1.5, token.cancel)
        result = await r.lane.deliver(deadline=100.0, token=token)
        assert result.incomplete and result.sent == 0 and now() == 1.5
        await r.stop()

    run_virtual(main())
    assert sink.times() == [0.0, 1.0]


def test_a_cancel_ends_a_deliverys_ack_retries() -> None:
    sink = ScriptSink()

    async def main() -> None:
        faults = SourceFaults("spool", Changes(), backoff_initial=1.0)
        r = await rig(sink, source=lambda agg: FaultySource(agg, ack_faults=10**6), faults=faults)
        await r.offer(range(5))
        token = CancellationToken()
        virtual_loop().call_later(2.5, token.cancel)
        result = await r.lane.deliver(deadline=100.0, token=token)
        assert (result.incomplete, result.sent, result.flushed, now()) == (True, 5, 0, 2.5)
        await r.stop()

    run_virtual(main())


def test_deliver_up_to_an_id_in_batches() -> None:
    sink = ScriptSink()

    async def main() -> LaneResult:
        r = await rig(sink, batch_size=3)
        await r.offer(range(10))
        result = await r.lane.deliver(4)
        assert not r.lane.lock.locked()
        assert (r.lane.stats.batches, r.lane.stats.written) == (2, 5)
        await r.stop()
        return result

    result = run_virtual(main())
    assert [seqs for _, seqs in sink.calls] == [[0, 1, 2], [3, 4]]
    assert (result.sent, result.flushed, result.devices, result.incomplete) == (5, 5, {"d": 5}, False)


def test_deliver_takes_what_was_there_when_it_began() -> None:
    sink = ScriptSink([1.0, 1.0])

    async def main() -> LaneResult:
        r = await rig(sink, batch_size=10)
        await r.offer(range(15))
        sink.during = lambda: r.handle.offer_nowait("d", frames(range(15, 25))) if len(sink.calls) == 1 else None
        result = await r.lane.deliver()
        await r.stop()
        return result

    result = run_virtual(main())
    assert sink.calls == [(0.0, list(range(10))), (1.0, list(range(10, 15)))]
    assert (result.sent, result.flushed) == (15, 15)


def test_deliver_full_only_leaves_a_partial_batch() -> None:
    sink = ScriptSink()

    async def main() -> LaneResult:
        r = await rig(sink, batch_size=10)
        await r.offer(range(25))
        result = await r.lane.deliver(full_only=True)
        await r.stop()
        return result

    result = run_virtual(main())
    assert [seqs for _, seqs in sink.calls] == [list(range(10)), list(range(10, 20))]
    assert result.sent == 20


def test_deliver_full_only_with_an_upto_stops_at_it() -> None:
    sink = ScriptSink()

    async def main() -> LaneResult:
        r = await rig(sink, batch_size=10)
        await r.offer(range(25))
        result = await r.lane.deliver(14, full_only=True)
        await r.stop()
        return result

    result = run_virtual(main())
    assert [seqs for _, seqs in sink.calls] == [list(range(10))]  # 10..14 is not a full batch
    assert result.sent == 10


def test_deliver_full_only_stops_once_its_token_is_cancelled() -> None:
    sink = ScriptSink()

    async def main() -> None:
        r = await rig(sink, batch_size=10)
        await r.offer(range(25))
        token = CancellationToken()
        token.cancel()
        result = await r.lane.deliver(full_only=True, token=token)
        assert result.sent == 0 and not result.incomplete and not r.lane.lock.locked()
        await r.stop()

    run_virtual(main())
    assert sink.calls == []


def test_deliver_with_nothing_waiting_writes_nothing() -> None:
    sink = ScriptSink()

    async def main() -> LaneResult:
        r = await rig(sink)
        result = await r.lane.deliver()
        await r.stop()
        return result

    result = run_virtual(main())
    assert sink.calls == [] and (result.sent, result.flushed, result.incomplete) == (0, 0, False)


def test_deliver_gives_up_on_a_busy_lock_at_the_deadline() -> None:
    sink = ScriptSink()

    async def main() -> None:
        r = await rig(sink)
        await r.offer(range(5))
        await r.lane.lock.acquire()
        result = await r.lane.deliver(deadline=2.0)
        assert result.incomplete and result.sent == 0 and now() == 2.0
        r.lane.lock.release()
        await r.stop()

    run_virtual(main())
    assert sink.calls == []


def test_the_read_gate_is_held_while_a_backlog_is_delivered_and_opened_after() -> None:
    sink = ScriptSink()

    async def main() -> None:
        r = await rig(sink, batch_size=10)
        sink.gate = r.handle.read_gate
        await r.offer(range(30))
        await r.lane.deliver()
        assert not r.handle.read_gate.closed
        await r.stop()

    run_virtual(main())
    # after the first batch a full one still waited: the readers were held
    assert sink.gate_seen == [False, True, True]


def test_no_gate_is_closed_while_keeping_up() -> None:
    sink = ScriptSink()

    async def main() -> None:
        r = await rig(sink, batch_size=10)
        sink.gate = r.handle.read_gate
        await r.offer(range(15))
        await r.lane.deliver()
        await r.stop()

    run_virtual(main())
    assert sink.gate_seen == [False, False]


def test_a_source_without_a_gate() -> None:
    sink = ScriptSink()

    async def main() -> LaneResult:
        r = await rig(sink, batch_size=10, source=lambda agg: FaultySource(agg, gate=False))
        await r.offer(range(30))
        result = await r.lane.deliver()
        await r.stop()
        return result

    assert run_virtual(main()).sent == 30


def test_a_source_fault_in_a_delivery_releases_the_lock_and_the_gate() -> None:
    sink = ScriptSink()

    async def main() -> None:
        r = await rig(sink, batch_size=10, source=lambda agg: FaultySource(agg, take_faults=1))
        r.handle.read_gate.close()
        await r.offer(range(5))
        with pytest.raises(OSError, match="disk I/O error"):
            await r.lane.deliver()
        assert not r.lane.lock.locked() and not r.handle.read_gate.closed
        await r.stop()

    run_virtual(main())


def test_an_ack_fault_is_retried_without_writing_again() -> None:
    sink = ScriptSink()
    sources: list[FaultySource] = []

    def make(agg: Aggregator) -> FaultySource:
        sources.append(FaultySource(agg, ack_faults=2))
        return sources[0]

    async def main() -> LaneResult:
        r = await rig(sink, source=make, faults=SourceFaults("spool", Changes(), backoff_initial=1.0))
        await r.offer(range(5))
        result = await r.lane.deliver()
        assert r.lane.faults.failures == 2 and r.lane.faults.error is None
        await r.stop()
        return result

    result = run_virtual(main())
    assert sources[0].acks == [0.0, 1.0, 3.0] and len(sink.calls) == 1
    assert (result.sent, result.flushed) == (5, 5)


def test_an_ack_that_never_lands_by_the_deadline_leaves_the_delivery_incomplete() -> None:
    sink = ScriptSink()

    async def main() -> LaneResult:
        faults = SourceFaults("spool", Changes(), backoff_initial=1.0)
        r = await rig(sink, source=lambda agg: FaultySource(agg, ack_faults=10**6), faults=faults)
        await r.offer(range(20))
        result = await r.lane.deliver(deadline=2.5)
        await r.stop()
        return result

    result = run_virtual(main())
    assert len(sink.calls) == 1  # the second batch is not tried
    assert (result.sent, result.flushed, result.incomplete) == (10, 0, True)


# -- retries --------------------------------------------------------------------------------


def test_failed_writes_back_off_exponentially_from_the_defaults_up_to_the_cap(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="firmware_host.flusher")
    sink = ScriptSink([ConnectionError("down")] * 8)

    async def main() -> None:
        r = await rig(sink)
        await r.offer(range(5))
        result = await r.lane.deliver()
        assert result.sent == 5 and not result.incomplete
        stats = r.lane.stats
        assert (stats.failures, stats.last_error, stats.state) == (8, "ConnectionError: down", "ok")
        assert (stats.batches, stats.written) == (1, 5)
        await r.stop()

    run_virtual(main())
    # waits .1 .2 .4 .8 1.6 3.2, then 5 (capped) twice
    assert sink.times() == pytest.approx([0, 0.1, 0.3, 0.7, 1.5, 3.1, 6.3, 11.3, 16.3], abs=1e-9)
    assert [r.getMessage() for r in caplog.records] == ["sink rec failed (1 so far): ConnectionError: down"]


def test_its_own_backoff() -> None:
    sink = ScriptSink([ConnectionError("down")] * 4)

    async def main() -> None:
        r = await rig(sink, backoff_initial=1.0, backoff_max=3.0)
        await r.offer(range(5))
        await r.lane.deliver()
        await r.stop()

    run_virtual(main())
    assert sink.times() == [0.0, 1.0, 3.0, 6.0, 9.0]


def test_failures_are_logged_on_the_first_and_every_hundredth(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="firmware_host.flusher")
    sink = ScriptSink([ValueError(f"bad {i}") for i in range(1, 201)])

    async def main() -> None:
        r = await rig(sink, backoff_initial=0.001, backoff_max=0.001)
        await r.offer(range(5))
        await r.lane.deliver()
        assert r.lane.stats.failures == 200
        await r.stop()

    run_virtual(main())
    assert [r.getMessage() for r in caplog.records] == [
        "sink rec failed (1 so far): ValueError: bad 1",
        "sink rec failed (100 so far): ValueError: bad 100",
        "sink rec failed (200 so far): ValueError: bad 200",
    ]


def test_a_failure_and_the_recovery_are_notified() -> None:
    sink = ScriptSink([ConnectionError("down")])
    seen: list[tuple[str, float]] = []

    async def main() -> None:
        changes = Changes()
        r = await rig(sink, changes=changes, backoff_initial=1.0)
        await r.offer(range(5))
        job = asyncio.ensure_future(r.lane.deliver())
        while not job.done():
            waiter = changes.waiter()
            both: set[asyncio.Future[Any]] = {waiter, job}
            await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
            if waiter.done():
                seen.append((r.lane.stats.state, now()))
        await r.stop()

    run_virtual(main())
    assert seen == [("retrying", 0.0), ("ok", 1.0)]


def test_a_retry_sends_only_what_drop_oldest_left() -> None:
    sink = ScriptSink([ConnectionError("down")])

    async def main() -> LaneResult:
        r = await rig(sink, capacity=10, batch_size=10)
        await r.offer(range(10))
        # during the backoff 4 more arrive: the oldest 4 are dropped before the retry
        sink.during = lambda: r.handle.offer_nowait("d", frames(range(10, 14)))
        result = await r.lane.deliver(9)
        await r.stop()
        return result

    result = run_virtual(main())
    assert sink.calls == [(0.0, list(range(10))), (pytest.approx(0.1), list(range(4, 10)))]
    assert result.sent == 6


def test_a_batch_dropped_whole_during_the_backoff_is_not_retried() -> None:
    sink = ScriptSink([ConnectionError("down")])

    async def main() -> LaneResult:
        r = await rig(sink, capacity=10, batch_size=10)
        await r.offer(range(10))
        sink.during = lambda: r.handle.offer_nowait("d", frames(range(10, 20)))
        result = await r.lane.deliver(9)
        assert lanes(r.agg) == [("rec", False, {"d": (0, 10, 10)})]
        await r.stop()
        return result

    result = run_virtual(main())
    assert len(sink.calls) == 1 and (result.sent, result.incomplete) == (0, False)


# -- each write's deadline -----------------------------------------------------------------


def test_a_hung_write_times_out_at_the_sinks_timeout_and_is_retried() -> None:
    sink = ScriptSink(["hang", "hang"], timeout=2.0)

    async def main() -> None:
        r = await rig(sink, backoff_initial=1.0)
        await r.offer(range(5))
        # 0-2 times out; wait 1; at 3 exactly the timeout is left to the deadline
        # (5): the sink's own timeout again, so a failure; then no time is left
        result = await r.lane.deliver(deadline=5.0)
        assert result.incomplete and now() == 5.0
        assert (r.lane.stats.failures, r.lane.stats.last_error) == (2, "timed out after 2s")
        await r.stop()

    run_virtual(main())
    assert sink.times() == [0.0, 3.0]


def test_a_write_is_cut_by_the_deadline_without_counting_a_failure() -> None:
    sink = ScriptSink([0.5])

    async def main() -> None:
        r = await rig(sink, backoff_initial=1.0)
        await r.offer(range(5))
        result = await r.lane.deliver(deadline=0.3)
        assert result.incomplete and now() == 0.3
        stats = r.lane.stats
        assert (stats.failures, stats.last_error, stats.state) == (0, None, "ok")
        await r.stop()

    run_virtual(main())
    assert sink.accepted == []


def test_the_deadline_cuts_the_write_under_way_when_it_comes() -> None:
    sink = ScriptSink([1.0, 1.0])

    async def main() -> LaneResult:
        r = await rig(sink, batch_size=5)
        await r.offer(range(10))
        # the first write (0 to 1) fits; the second may take only the 0.5 s left
        result = await r.lane.deliver(deadline=1.5)
        assert now() == 1.5 and r.lane.stats.failures == 0
        await r.stop()
        return result

    result = run_virtual(main())
    assert sink.times() == [0.0, 1.0] and sink.accepted == [0, 1, 2, 3, 4]
    assert (result.sent, result.flushed, result.incomplete) == (5, 5, True)


def test_the_abort_token_abandons_a_write_at_once() -> None:
    sink = ScriptSink(["hang"], timeout=10.0)

    async def main() -> None:
        abort = CancellationToken()
        r = await rig(sink, abort=abort)
        await r.offer(range(5))
        virtual_loop().call_later(1.0, abort.cancel)
        result = await r.lane.deliver()
        assert result.incomplete and now() == 1.0 and r.lane.stats.failures == 0
        await r.stop()

    run_virtual(main())


def test_a_timeout_with_an_abort_token_not_cancelled_is_a_failure() -> None:
    sink = ScriptSink(["hang"], timeout=1.0)

    async def main() -> None:
        r = await rig(sink, abort=CancellationToken(), backoff_initial=1.0)
        await r.offer(range(5))
        result = await r.lane.deliver()
        assert not result.incomplete and now() == 2.0 and r.lane.stats.failures == 1
        await r.stop()

    run_virtual(main())
    assert sink.times() == [0.0, 2.0]


def test_an_abandoned_writes_error_is_retrieved() -> None:
    """A write that fails as it is abandoned: its exception is read, so the
    loop never reports "exception was never retrieved"."""

    class RaisesOnCancel(Sink):
        name = "r"
        timeout = 1.0

        async def write(self, batch: Sequence[Frame]) -> None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                raise RuntimeError("broke while cancelled") from None

    reported: list[dict[str, Any]] = []

    async def main() -> None:
        virtual_loop().set_exception_handler(lambda loop, ctx: reported.append(ctx))
        r = await rig(RaisesOnCancel(), backoff_initial=1.0)
        await r.offer(range(5))
        result = await r.lane.deliver(deadline=1.5)
        assert result.incomplete and r.lane.stats.failures == 1
        await asyncio.sleep(0.1)
        gc.collect()
        await r.stop()

    run_virtual(main())
    gc.collect()
    assert reported == []


def test_a_cancelled_abandoned_write_is_fine_too() -> None:
    reported: list[dict[str, Any]] = []

    async def main() -> None:
        virtual_loop().set_exception_handler(lambda loop, ctx: reported.append(ctx))
        r = await rig(ScriptSink(["hang"], timeout=1.0), backoff_initial=1.0)
        await r.offer(range(5))
        await r.lane.deliver(deadline=1.5)
        await asyncio.sleep(0.1)
        await r.stop()

    run_virtual(main())
    assert reported == []


# -- a sink that closes ------------------------------------------------------------------------


def test_a_sink_that_closes_is_never_written_again(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="firmware_host.flusher")
    sink = ScriptSink([SinkClosed("reader gone")])
    closed: list[float] = []
    seen: list[str] = []

    async def main() -> None:
        changes = Changes()
        r = await rig(sink, changes=changes, on_closed=lambda: closed.append(now()))
        await r.offer(range(15))
        waiter = changes.waiter()
        waiter.add_done_callback(lambda _: seen.append(r.lane.stats.state))
        result = await r.lane.deliver()
        assert (result.sent, result.flushed, result.incomplete) == (0, 0, False)
        assert r.lane.closed and seen == ["closed"]
        assert lanes(r.agg) == [("rec", True, {"d": (0, 15, 0)})]
        again = await r.lane.deliver()
        assert again == LaneResult()
        batch = Batch(frames(range(3)), 0, None, 2)
        assert await r.lane.send(batch) == 0 and now() == 0.0  # at once: no retry
        await r.lane.close(SinkClosed("twice"))
        assert r.lane.stats.last_error == "closed: reader gone"
        await r.stop()

    run_virtual(main())
    assert len(sink.calls) == 1 and closed == [0.0]
    assert [r.getMessage() for r in caplog.records] == ["sink rec closed: reader gone"]


def test_a_lane_that_cannot_close_still_closes_its_sink(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="firmware_host.flusher")
    sink = ScriptSink([SinkClosed("reader gone")])
    closed: list[float] = []
    sources: list[FaultySource] = []

    def make(agg: Aggregator) -> FaultySource:
        sources.append(FaultySource(agg))
        return sources[0]

    async def main() -> None:
        r = await rig(sink, source=make, on_closed=lambda: closed.append(now()))
        sources[0].close_fails = True
        await r.offer(range(5))
        await r.lane.deliver()
        assert r.lane.closed and r.lane.stats.state == "closed"
        await r.stop()

    run_virtual(main())
    assert closed == [0.0]
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "sink rec closed: reader gone"),
        ("WARNING", "sink rec: its lane did not close: source stopped"),
    ]


def test_a_closed_lane_writes_nothing() -> None:
    sink = ScriptSink()

    async def main() -> None:
        r = await rig(sink)
        await r.lane.close(SinkClosed("gone"))
        await r.offer(range(5))
        assert await r.lane.send(Batch(frames(range(5)), 0, None, 4)) == 0 and now() == 0.0
        await r.stop()

    run_virtual(main())
    assert sink.calls == []
