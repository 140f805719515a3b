"""flusher.py on a virtual clock, against the real aggregator: an on-demand
flush to every sink and what it reports per sink, the per-device flush that
holds every sink's lock (all or nothing, and every lock released whatever
happens), the drain's settle, source faults, the flusher's own backoff, the
no-sink flusher's interval, and the last sink closing (tests written from
mutation testing, docs/testing-internals.md).

Expected values are worked out by hand from the documented rules, never by
calling the code under test. The modules read ``time.monotonic``; the tests
point it at the virtual loop's clock.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Sequence
from typing import Any

import pytest

from firmware_host import retry, sinklane
from firmware_host._sync import Changes
from firmware_host.aggregator import Aggregator
from firmware_host.cancel import CancellationToken
from firmware_host.flusher import Flusher, FlushResult
from firmware_host.sinklane import BatchSource, SinkLane
from firmware_host.sinks.base import SinkClosed
from tests.test_mut_sinklane import FaultySource, ScriptSink, Step, at, frames, now
from tests.virtual_time import run_virtual, virtual_loop

pytestmark = pytest.mark.timeout(10)


@pytest.fixture(autouse=True)
def loop_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """``time.monotonic`` in sinklane.py and retry.py is the running loop's (virtual) clock."""
    clock = types.SimpleNamespace(monotonic=lambda: asyncio.get_running_loop().time())
    monkeypatch.setattr(sinklane, "time", clock)
    monkeypatch.setattr(retry, "time", clock)


def sink(name: str, script: Sequence[Step] = (), timeout: float = 100.0) -> ScriptSink:
    s = ScriptSink(script, timeout)
    s.name = name
    return s


class Rig:
    def __init__(self, agg: Aggregator, flusher: Flusher, token: CancellationToken, task: asyncio.Future[None]):
        self.agg, self.flusher, self.token, self.task = agg, flusher, token, task

    async def offer(self, seqs: range, device: str = "d") -> None:
        self.agg.handle.offer_nowait(device, frames(seqs, device))
        await self.agg.handle.mark()

    async def stop(self) -> None:
        self.token.cancel()
        await self.task

    def depth(self) -> dict[str, int]:
        return {d: a.buffered for d, a in self.agg.snapshot_now().accounts.items()}


async def rig(
    sinks: Sequence[ScriptSink], *, batch_size: int = 10, interval: float = 0.0, source: Any = None, **kw: Any
) -> Rig:
    agg = Aggregator(1000, batch_size=batch_size)
    token = CancellationToken()
    task = asyncio.ensure_future(agg.run(token))
    src: BatchSource = agg.handle if source is None else source(agg)
    flusher = Flusher(src, sinks, interval=interval, batch_size=batch_size, **kw)
    await flusher.attach()
    return Rig(agg, flusher, token, task)


def entries(result: FlushResult) -> list[tuple[object, object, object]]:
    return [(e["name"], e["sent"], e["done"]) for e in result.sinks]


# -- set-up -------------------------------------------------------------------------


def test_the_source_faults_are_named_after_the_source() -> None:
    async def main() -> None:
        r = await rig([sink("a")])
        assert r.flusher.faults.what == "buffer" and r.flusher.flushes == 0
        assert r.flusher.source_error is None and r.flusher.source_failures == 0
        other = Flusher(FaultySource(r.agg, gate=False), [], interval=0, batch_size=10)
        assert other.faults.what == "spool"
        await r.stop()

    run_virtual(main())


def test_attach_gives_each_sink_one_lane_once() -> None:
    async def main() -> None:
        r = await rig([sink("a"), sink("b")])
        await r.flusher.attach()
        await r.flusher.flush()
        assert [lane.lane for lane in r.flusher.lanes] == [0, 1]
        assert [v.name for v in r.agg.snapshot_now(lanes=True).lanes] == ["a", "b"]
        await r.stop()

    run_virtual(main())


def test_a_flush_attaches_the_lanes_first() -> None:
    a = sink("a")

    async def main() -> None:
        agg = Aggregator(1000, batch_size=10)
        token = CancellationToken()
        task = asyncio.ensure_future(agg.run(token))
        flusher = Flusher(agg.handle, [a], interval=0, batch_size=10)
        result = await flusher.flush()
        assert [v.name for v in agg.snapshot_now(lanes=True).lanes] == ["a"] and result.flushed == 0
        token.cancel()
        await task

    run_virtual(main())


def test_the_lanes_get_the_flushers_settings() -> None:
    abort = CancellationToken()

    async def main() -> None:
        changes = Changes()
        r = await rig([sink("a")], batch_size=7, interval=3.0, backoff_initial=0.5, backoff_max=2.0, changes=changes)
        lane = r.flusher.lanes[0]
        assert (lane.batch_size, lane.interval, lane.backoff_initial, lane.backoff_max) == (7, 3.0, 0.5, 2.0)
        assert lane.faults is r.flusher.faults and lane.changes is changes is r.flusher.changes
        assert (r.flusher.faults.backoff_initial, r.flusher.faults.backoff_max) == (0.5, 2.0)
        other = Flusher(r.agg.handle, [sink("b")], interval=1, batch_size=1, abort=abort)
        assert other.lanes[0]._abort is abort
        assert (other.backoff_initial, other.backoff_max) == (0.1, 5.0)
        assert (other.faults.backoff_initial, other.faults.backoff_max) == (0.1, 5.0)
        await r.stop()

    run_virtual(main())


# -- flushing everything ------------------------------------------------------------------


def test_a_flush_delivers_everything_to_every_sink_and_reports_each() -> None:
    a, b = sink("a"), sink("b")

    async def main() -> FlushResult:
        r = await rig([a, b])
        await r.offer(range(25))
        result = await r.flusher.flush()
        assert r.depth() == {"d": 0} and r.flusher.flushes == 1
        await r.stop()
        return result

    result = run_virtual(main())
    assert a.accepted == b.accepted == list(range(25))
    assert (result.flushed, result.devices, result.incomplete) == (25, {"d": 25}, False)
    assert entries(result) == [("a", 25, True), ("b", 25, True)]


def test_a_flush_sends_each_sink_only_what_it_lacks() -> None:
    a, b = sink("a"), sink("b")

    async def main() -> FlushResult:
        r = await rig([a, b])
        await r.offer(range(25))
        await r.flusher.lanes[0].deliver(9)  # a has 0..9 already (nothing leaves: b lacks them)
        result = await r.flusher.flush()
        await r.stop()
        return result

    result = run_virtual(main())
    assert a.accepted == b.accepted == list(range(25))
    assert entries(result) == [("a", 15, True), ("b", 25, True)]
    assert (result.flushed, result.devices) == (25, {"d": 25})


def test_a_flush_takes_only_what_was_there_when_it_began() -> None:
    a = sink("a", [1.0])

    async def main() -> FlushResult:
        r = await rig([a])
        await r.offer(range(5))
        a.during = lambda: r.agg.handle.offer_nowait("d", frames(range(5, 8)))
        result = await r.flusher.flush()
        assert r.depth() == {"d": 3}
        await r.stop()
        return result

    result = run_virtual(main())
    assert a.accepted == [0, 1, 2, 3, 4] and result.flushed == 5


def test_a_failing_sink_does_not_hold_up_the_other_and_is_reported() -> None:
    a, b = sink("a", [ConnectionError("down")] * 100), sink("b")

    async def main() -> FlushResult:
        r = await rig([a, b], backoff_initial=1.0, backoff_max=1.0)
        await r.offer(range(25))
        result = await r.flusher.flush(deadline=2.5)
        assert now() == 2.5 and r.depth() == {"d": 25}  # not every sink has them
        await r.stop()
        return result

    result = run_virtual(main())
    # a's last write starts as the deadline comes and is abandoned at once
    assert b.accepted == list(range(25)) and a.times() == [0.0, 1.0, 2.0, 2.5]
    assert entries(result) == [("a", 0, False), ("b", 25, True)]
    assert (result.flushed, result.incomplete) == (0, True)


def test_a_source_fault_in_one_lane_is_counted_and_that_sink_reported_not_done() -> None:
    a, b = sink("a"), sink("b")

    async def main() -> FlushResult:
        r = await rig([a, b], source=lambda agg: FaultySource(agg, take_faults=1))
        await r.offer(range(5))
        result = await r.flusher.flush()
        # (the error shown is cleared by the other lane's ack)
        assert (r.flusher.source_failures, r.flusher.source_error) == (1, None)
        await r.stop()
        return result

    result = run_virtual(main())
    # the first lane's take fails; the second delivers
    assert a.accepted == [] and b.accepted == [0, 1, 2, 3, 4]
    assert entries(result) == [("a", 0, False), ("b", 5, True)] and result.incomplete


def test_a_source_fault_before_any_lane_ends_the_flush_as_incomplete() -> None:
    a = sink("a")

    class MarkFails(FaultySource):
        async def mark(self) -> int:
            raise OSError("mark failed")

    async def main() -> FlushResult:
        r = await rig([a], source=lambda agg: MarkFails(agg))
        await r.offer(range(5))
        result = await r.flusher.flush()
        assert (r.flusher.source_failures, r.flusher.source_error, r.flusher.flushes) == (1, "OSError: mark failed", 1)
        await r.stop()
        return result

    result = run_virtual(main())
    assert result.incomplete and a.calls == [] and entries(result) == [("a", 0, True)]


def test_a_closed_sink_is_left_out_and_reported_not_done() -> None:
    a, b = sink("a", [SinkClosed("gone")]), sink("b")

    async def main() -> tuple[FlushResult, FlushResult]:
        r = await rig([a, b])
        await r.offer(range(5))
        first = await r.flusher.flush()
        await r.offer(range(5, 8))
        second = await r.flusher.flush()
        await r.stop()
        return first, second

    first, second = run_virtual(main())
    assert len(a.calls) == 1 and b.accepted == list(range(8))
    assert entries(first) == [("a", 0, True), ("b", 5, True)] and first.flushed == 5
    assert entries(second) == [("a", 0, False), ("b", 3, True)] and second.flushed == 3


def test_the_drain_settles_each_lane_before_its_part_never_waiting_for_the_others() -> None:
    a, b = sink("a"), sink("b")
    settled: list[tuple[str, float]] = []

    async def settle(lane: SinkLane) -> None:
        settled.append((lane.sink.name, now()))
        if lane.sink.name == "a":
            await asyncio.sleep(1.0)

    async def main() -> FlushResult:
        r = await rig([a, b])
        await r.offer(range(5))
        result = await r.flusher.drain(10.0, settle)
        await r.stop()
        return result

    result = run_virtual(main())
    assert settled == [("a", 0.0), ("b", 0.0)]
    assert a.times() == [1.0] and b.times() == [0.0]
    assert result.flushed == 5 and not result.incomplete


def test_the_drain_gives_up_at_its_deadline() -> None:
    a = sink("a", ["hang"])

    async def main() -> FlushResult:
        r = await rig([a])
        await r.offer(range(5))
        result = await r.flusher.drain(3.0)
        assert now() == 3.0
        await r.stop()
        return result

    result = run_virtual(main())
    assert result.incomplete and entries(result) == [("a", 0, False)]


# -- one device -----------------------------------------------------------------------


def test_a_device_flush_sends_that_device_to_every_sink_batch_by_batch() -> None:
    a, b = sink("a"), sink("b")

    async def main() -> FlushResult:
        r = await rig([a, b])
        await r.offer(range(5), "x")
        await r.offer(range(25), "d")
        result = await r.flusher.flush("d")
        assert r.depth() == {"x": 5, "d": 0}
        assert not any(lane.lock.locked() for lane in r.flusher.lanes)
        await r.stop()
        return result

    result = run_virtual(main())
    assert [seqs for _, seqs in a.calls] == [list(range(10)), list(range(10, 20)), list(range(20, 25))]
    assert b.accepted == list(range(25))
    assert (result.flushed, result.devices, result.incomplete) == (25, {"d": 25}, False)
    assert entries(result) == [("a", 25, True), ("b", 25, True)]


def test_a_device_flush_takes_only_what_was_there_when_it_began() -> None:
    a = sink("a", [1.0])

    async def main() -> FlushResult:
        r = await rig([a])
        await r.offer(range(5))
        a.during = lambda: r.agg.handle.offer_nowait("d", frames(range(5, 8)))
        result = await r.flusher.flush("d")
        assert r.depth() == {"d": 3}
        await r.stop()
        return result

    assert run_virtual(main()).flushed == 5


def test_a_device_flush_with_a_sink_retrying_sends_to_nobody() -> None:
    a, b = sink("a", [ConnectionError("down")] * 2), sink("b")

    async def main() -> FlushResult:
        r = await rig([a, b], backoff_initial=1.0)
        await r.offer(range(5))
        await r.flusher.lanes[0].deliver(deadline=0.5)  # a fails: retrying
        assert r.flusher.lanes[0].stats.state == "retrying"
        result = await r.flusher.flush("d")
        assert not any(lane.lock.locked() for lane in r.flusher.lanes)
        await r.stop()
        return result

    result = run_virtual(main())
    assert len(a.calls) == 2 and b.calls == []
    assert entries(result) == [("a", 0, False), ("b", 0, True)]
    assert (result.flushed, result.incomplete) == (0, True)


def test_a_device_flush_gives_up_on_a_busy_sink_at_the_deadline_and_releases_the_others() -> None:
    a, b = sink("a"), sink("b")

    async def main() -> FlushResult:
        r = await rig([a, b])
        await r.offer(range(5))
        await r.flusher.lanes[0].lock.acquire()  # a's own delivery is busy
        result = await r.flusher.flush("d", deadline=2.0)
        assert now() == 2.0
        assert r.flusher.lanes[0].lock.locked() and not r.flusher.lanes[1].lock.locked()
        r.flusher.lanes[0].lock.release()
        await r.stop()
        return result

    result = run_virtual(main())
    assert a.calls == b.calls == []
    assert entries(result) == [("a", 0, False), ("b", 0, True)] and result.incomplete


def test_a_device_flush_with_a_sink_failing_past_the_deadline_acks_nothing() -> None:
    a, b = sink("a", [ConnectionError("down")] * 100), sink("b")

    async def main() -> FlushResult:
        r = await rig([a, b], backoff_initial=1.0, backoff_max=1.0)
        await r.offer(range(15))
        result = await r.flusher.flush("d", deadline=2.5)
        assert now() == 2.5 and r.depth() == {"d": 15}
        assert not any(lane.lock.locked() for lane in r.flusher.lanes)
        await r.stop()
        return result

    result = run_virtual(main())
    assert a.times() == [0.0, 1.0, 2.0, 2.5] and b.accepted == list(range(10))  # the first batch only
    assert entries(result) == [("a", 0, False), ("b", 10, True)]
    assert (result.flushed, result.incomplete) == (0, True)


def test_a_source_fault_while_sending_a_device_batch_is_counted() -> None:
    a = sink("a", [ConnectionError("down")])

    class TrimFails(FaultySource):
        async def trim(self, batch: Any) -> Any:
            raise OSError("trim failed")

    async def main() -> FlushResult:
        r = await rig([a], source=lambda agg: TrimFails(agg), backoff_initial=1.0)
        await r.offer(range(5))
        result = await r.flusher.flush("d")
        assert (r.flusher.source_failures, r.flusher.source_error) == (1, "OSError: trim failed")
        assert not r.flusher.lanes[0].lock.locked()
        await r.stop()
        return result

    result = run_virtual(main())
    assert entries(result) == [("a", 0, False)] and result.incomplete and result.flushed == 0


def test_a_device_flush_retries_its_ack_with_the_flushers_backoff() -> None:
    a = sink("a")
    sources: list[FaultySource] = []

    def make(agg: Aggregator) -> FaultySource:
        sources.append(FaultySource(agg, ack_faults=2))
        return sources[0]

    async def main() -> FlushResult:
        r = await rig([a], source=make, backoff_initial=1.0)
        await r.offer(range(5))
        result = await r.flusher.flush("d")
        assert (r.flusher.source_failures, r.flusher.source_error) == (2, None)
        await r.stop()
        return result

    result = run_virtual(main())
    assert sources[0].acks == [0.0, 1.0, 3.0] and len(a.calls) == 1
    assert (result.flushed, result.devices, result.incomplete) == (5, {"d": 5}, False)


def test_a_device_flush_whose_ack_never_lands_is_incomplete() -> None:
    a = sink("a")

    async def main() -> FlushResult:
        r = await rig([a], source=lambda agg: FaultySource(agg, ack_faults=10**6), backoff_initial=1.0)
        await r.offer(range(25))
        result = await r.flusher.flush("d", deadline=2.5)
        assert now() == 2.5
        await r.stop()
        return result

    result = run_virtual(main())
    assert a.accepted == list(range(10))  # the next batch waits for the ack
    assert (result.flushed, result.incomplete) == (0, True) and entries(result) == [("a", 10, True)]


def test_two_device_flushes_at_once_each_finish() -> None:
    a, b = sink("a", [0.5, 0.5]), sink("b", [0.5, 0.5])

    async def main() -> list[FlushResult]:
        r = await rig([a, b])
        await r.offer(range(5), "x")
        await r.offer(range(5), "y")
        results = await asyncio.gather(r.flusher.flush("x", deadline=5.0), r.flusher.flush("y", deadline=5.0))
        assert now() == 1.0
        await r.stop()
        return list(results)

    rx, ry = run_virtual(main())
    assert (rx.devices, ry.devices, rx.incomplete, ry.incomplete) == ({"x": 5}, {"y": 5}, False, False)


# -- no sink at all ------------------------------------------------------------------------


def test_with_no_sink_every_interval_flushes_everything() -> None:
    async def main() -> None:
        r = await rig([], interval=2.0)
        stop = CancellationToken()
        run = asyncio.ensure_future(r.flusher.run(stop))
        await r.offer(range(5))
        await at(1.5)
        assert r.depth() == {"d": 5}
        await at(2.5)
        assert r.depth() == {"d": 0} and r.flusher.flushes == 1
        await r.offer(range(5, 8))
        await at(5.0)
        stop.cancel()
        await run
        assert r.flusher.flushes == 2 and now() == 5.0
        await r.stop()

    run_virtual(main())


def test_with_no_sink_and_no_interval_only_on_demand() -> None:
    async def main() -> None:
        r = await rig([], interval=0.0)
        stop = CancellationToken()
        virtual_loop().call_later(3.0, stop.cancel)
        await r.offer(range(5))
        await r.flusher.run(stop)
        assert now() == 3.0 and r.depth() == {"d": 5} and r.flusher.flushes == 0
        result = await r.flusher.flush("d")
        assert (result.flushed, result.devices, result.sinks) == (5, {"d": 5}, [])
        await r.offer(range(5, 8))
        assert (await r.flusher.flush()).flushed == 3
        await r.stop()

    run_virtual(main())


def test_run_runs_every_lane() -> None:
    a, b = sink("a"), sink("b")

    async def main() -> None:
        r = await rig([a, b], interval=1.0)
        stop = CancellationToken()
        virtual_loop().call_later(1.5, stop.cancel)
        await r.offer(range(3))
        await r.flusher.run(stop)
        assert now() == 1.5 and r.depth() == {"d": 0}
        await r.stop()

    run_virtual(main())
    assert a.times() == b.times() == [1.0]


# -- the last sink closing --------------------------------------------------------------------


def test_the_runtime_is_told_once_the_last_open_sink_has_closed() -> None:
    a, b = sink("a", [SinkClosed("gone")]), sink("b", [0.5, SinkClosed("gone too")])
    told: list[float] = []

    async def main() -> None:
        r = await rig([a, b], on_all_closed=lambda: told.append(now()))
        await r.offer(range(5))
        await r.flusher.flush()
        assert told == [] and [ln.sink.name for ln in r.flusher.open_lanes()] == ["b"]
        await r.offer(range(5, 8))
        await r.flusher.flush()
        assert r.flusher.open_lanes() == []
        await r.stop()

    run_virtual(main())
    assert told == [0.5]


def test_no_one_to_tell() -> None:
    async def main() -> None:
        r = await rig([sink("a", [SinkClosed("gone")])])
        await r.offer(range(5))
        await r.flusher.flush()
        assert r.flusher.open_lanes() == []
        await r.stop()

    run_virtual(main())


# -- what reaches the lanes: the flush's edge, its deadline, its token ---------------------


def test_a_lane_settled_late_still_stops_at_the_flushs_edge() -> None:
    a, b = sink("a"), sink("b")

    async def settle(lane: SinkLane) -> None:
        if lane.sink.name == "a":
            await asyncio.sleep(1.0)

    async def main() -> FlushResult:
        r = await rig([a, b])
        await r.offer(range(5))
        virtual_loop().call_later(0.5, lambda: r.agg.handle.offer_nowait("d", frames(range(5, 8))))
        result = await r.flusher.drain(10.0, settle)
        assert r.depth() == {"d": 3}
        await r.stop()
        return result

    result = run_virtual(main())
    assert a.accepted == b.accepted == [0, 1, 2, 3, 4] and result.flushed == 5


def test_a_source_fault_of_the_only_lane_stays_shown() -> None:
    async def main() -> FlushResult:
        r = await rig([sink("a")], source=lambda agg: FaultySource(agg, take_faults=1))
        await r.offer(range(5))
        result = await r.flusher.flush()
        assert (r.flusher.source_failures, r.flusher.source_error) == (1, "OSError: disk I/O error")
        await r.stop()
        return result

    assert entries(run_virtual(main())) == [("a", 0, False)]


@pytest.mark.parametrize("device", [None, "d"])
def test_a_cancel_ends_a_flushs_write_retries(device: str | None) -> None:
    a = sink("a", [ConnectionError("down")] * 100)

    async def main() -> FlushResult:
        r = await rig([a], backoff_initial=1.0)
        await r.offer(range(5))
        token = CancellationToken()
        virtual_loop().call_later(1.5, token.cancel)
        result = await r.flusher.flush(device, deadline=100.0, token=token)
        assert now() == 1.5 and not r.flusher.lanes[0].lock.locked()
        await r.stop()
        return result

    result = run_virtual(main())
    assert a.times() == [0.0, 1.0] and result.incomplete and entries(result) == [("a", 0, False)]


@pytest.mark.parametrize("sinks", [1, 0])
def test_a_cancel_ends_a_device_flushs_ack_retries(sinks: int) -> None:
    async def main() -> FlushResult:
        r = await rig([sink("a")][:sinks], source=lambda agg: FaultySource(agg, ack_faults=10**6), backoff_initial=1.0)
        await r.offer(range(5))
        token = CancellationToken()
        virtual_loop().call_later(2.5, token.cancel)
        result = await r.flusher.flush("d", deadline=100.0, token=token)
        assert now() == 2.5
        await r.stop()
        return result

    result = run_virtual(main())
    assert (result.flushed, result.incomplete) == (0, True)


def test_with_no_sink_a_flush_gives_up_on_its_ack_at_the_deadline() -> None:
    async def main() -> FlushResult:
        r = await rig([], source=lambda agg: FaultySource(agg, ack_faults=10**6), backoff_initial=1.0)
        await r.offer(range(5))
        result = await r.flusher.flush(deadline=2.5)
        assert now() == 2.5 and r.depth() == {"d": 5}
        await r.stop()
        return result

    result = run_virtual(main())
    assert (result.flushed, result.incomplete) == (0, True)


def test_with_no_sink_a_device_flush_takes_only_that_device() -> None:
    async def main() -> FlushResult:
        r = await rig([])
        await r.offer(range(5), "x")
        await r.offer(range(3), "d")
        result = await r.flusher.flush("d")
        assert r.depth() == {"x": 5, "d": 0}
        await r.stop()
        return result

    result = run_virtual(main())
    assert (result.flushed, result.devices) == (3, {"d": 3})


def test_with_no_sink_a_short_interval_flushes() -> None:
    async def main() -> None:
        r = await rig([], interval=0.5)
        stop = CancellationToken()
        run = asyncio.ensure_future(r.flusher.run(stop))
        await r.offer(range(5))
        await at(0.7)
        assert r.depth() == {"d": 0} and r.flusher.flushes == 1
        stop.cancel()
        await run
        await r.stop()

    run_virtual(main())


def test_with_no_sink_the_interval_flush_stops_retrying_on_cancel() -> None:
    async def main() -> None:
        r = await rig([], interval=1.0, source=lambda agg: FaultySource(agg, ack_faults=10**6), backoff_initial=1.0)
        stop = CancellationToken()
        run = asyncio.ensure_future(r.flusher.run(stop))
        await r.offer(range(5))
        virtual_loop().call_later(2.5, stop.cancel)
        await at(2.5)
        done, _ = await asyncio.wait({run}, timeout=0.5)
        assert run in done and now() == 2.5
        await r.stop()

    run_virtual(main())
