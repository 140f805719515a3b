"""The flusher: every sink's delivery, side by side.

Each sink has a ``SinkLane`` (``firmware_host.sinklane``): its own cursor in
the source, its own task, retry and backoff, so no sink waits for another.
The flusher owns the lanes and answers for all of them: on-demand flushes
(CLI ``flush``, all devices or one) and the final drain wait for every sink,
each under the same deadline, and say per sink what went out.

Triggers of each lane's own loop: a full batch for it, the flush interval,
and then on demand and the final drain.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from firmware_host._sync import Changes
from firmware_host.aggregator import Batch
from firmware_host.cancel import CancellationToken
from firmware_host.retry import SourceFaults, backoff
from firmware_host.sinklane import BatchSource, LaneResult, Moved, SinkLane, SinkStats
from firmware_host.sinks.base import Sink

__all__ = ["BatchSource", "FlushResult", "Flusher", "SinkStats"]


@dataclass
class FlushResult(Moved):
    """``flushed``: frames that left the buffer as accepted by every sink."""

    #: per sink, in the order of status's ``sinks``: name, frames written to
    #: it, and whether it took everything it was asked to (``done``)
    sinks: list[dict[str, object]] = field(default_factory=list)


class Flusher:
    def __init__(
        self,
        source: BatchSource,
        sinks: Sequence[Sink],
        *,
        interval: float,
        batch_size: int,
        max_batch: int | None = None,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        changes: Changes | None = None,
        on_all_closed: Callable[[], None] | None = None,
        abort: CancellationToken | None = None,
    ) -> None:
        self._source = source
        self.changes = changes or Changes()
        self.sinks = list(sinks)
        self.interval = interval
        self.batch_size = batch_size
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        #: faults of the source itself (take, ack on a full disk), shared by the lanes
        self.faults = SourceFaults(
            "spool" if source.read_gate is None else "buffer",
            self.changes,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
        )
        self.lanes = [
            SinkLane(
                sink,
                source,
                batch_size=batch_size,
                max_batch=max_batch,
                interval=interval,
                faults=self.faults,
                changes=self.changes,
                backoff_initial=backoff_initial,
                backoff_max=backoff_max,
                abort=abort,
                on_closed=self._lane_closed,
            )
            for sink in self.sinks
        ]
        self.flushes = 0
        #: one per-device flush at a time (it holds every sink's lock)
        self._device_flush = asyncio.Lock()
        #: called once, when the last open sink has closed
        self._on_all_closed = on_all_closed
        self._attached = False

    @property
    def source_error(self) -> str | None:
        """The last failure of the source itself, until an attempt succeeds."""
        return self.faults.error

    @property
    def source_failures(self) -> int:
        return self.faults.failures

    async def attach(self) -> None:
        """Give every sink its lane; before the first frame arrives, so each
        sink's counters start with the device's."""
        if not self._attached:
            self._attached = True
            for lane in self.lanes:
                await lane.attach()

    # -- periodic loops ---------------------------------------------------------

    async def run(self, token: CancellationToken) -> None:
        """Every lane's loop until ``token`` is cancelled (the runtime starts
        and supervises the lanes one by one instead: ``lanes[i].run``).

        With no sink at all (a library use; the CLI refuses such a config)
        every sink has accepted every frame: each interval flushes them."""
        await self.attach()
        if self.lanes:
            await asyncio.gather(*(lane.run(token) for lane in self.lanes))
            return
        while self.interval > 0 and await backoff(self.interval, None, token):
            await self.flush(token=token)
        await token.cancelled()

    # -- on demand and at the end -----------------------------------------------

    async def flush(
        self,
        device: str | None = None,
        *,
        deadline: float | None = None,
        token: CancellationToken | None = None,
        settle: Callable[[SinkLane], Awaitable[None]] | None = None,
    ) -> FlushResult:
        """Deliver every frame buffered when called (of ``device``, if given)
        to every sink. Frames arriving meanwhile wait for the next flush, so a
        flush under a steady stream still ends. ``settle(lane)`` is awaited
        before that lane's part (the drain: its own task's last write)."""
        await self.attach()
        result = FlushResult(sinks=[{"name": ln.stats.name, "sent": 0, "done": not ln.closed} for ln in self.lanes])
        try:
            if not self.lanes:
                await self._flush_device(device, result, deadline, token)
            elif device is None:
                upto = await self._source.mark()
                lanes = self.open_lanes()
                done = await asyncio.gather(*(self._deliver(ln, upto, deadline, token, settle) for ln in lanes))
                for lane, got in zip(lanes, done, strict=True):
                    self._merge(result, lane, got)
                    result.sinks[self.lanes.index(lane)]["done"] = not got.incomplete
            else:
                await self._flush_device(device, result, deadline, token)
        except Exception as exc:  # the source failed (take, mark): what is left stays buffered
            self.faults.failed(exc)
            result.incomplete = True
        self.flushes += 1
        return result

    async def _deliver(
        self,
        lane: SinkLane,
        upto: int,
        deadline: float | None,
        token: CancellationToken | None,
        settle: Callable[[SinkLane], Awaitable[None]] | None,
    ) -> LaneResult:
        """One lane's part of a flush; a source fault ends that part only, so
        the flush still waits for every other lane before it returns."""
        if settle is not None:
            await settle(lane)
        try:
            return await lane.deliver(upto, deadline=deadline, token=token)
        except Exception as exc:  # the source failed (take, trim): what is left stays for this sink
            self.faults.failed(exc)
            return LaneResult(incomplete=True)

    def _merge(self, result: FlushResult, lane: SinkLane, got: LaneResult) -> None:
        self._sent(result, lane, got.sent)
        result.add(got.devices)
        result.incomplete |= got.incomplete

    def _sent(self, result: FlushResult, lane: SinkLane, n: int) -> None:
        entry = result.sinks[self.lanes.index(lane)]
        entry["sent"] = int(str(entry["sent"])) + n

    async def _flush_device(
        self, device: str | None, result: FlushResult, deadline: float | None, token: CancellationToken | None
    ) -> None:
        """One device's frames, batch after batch, to every sink at once; a
        batch leaves when every sink has it.

        All or nothing: every open sink's lock is held from the first write to
        the last ack, so no sink's own delivery can send the same frames in
        between; a sink that is failing (``retrying``), or busy past the
        deadline, means nothing is sent to any sink (the frames wait for each
        sink's own delivery). A sink whose cursor was already past some of
        them sees those again (delivery is at least once)."""
        lanes = self.open_lanes()
        async with self._device_flush:  # two at once could each hold some locks and wait for the rest
            held = await asyncio.gather(*(lane.acquire(deadline) for lane in lanes))
            try:
                blocked = [ln for ln, ok in zip(lanes, held, strict=True) if not ok or ln.stats.state == "retrying"]
                for lane in blocked:
                    result.sinks[self.lanes.index(lane)]["done"] = False
                if blocked:
                    result.incomplete = True
                    return
                await self._device_batches(lanes, device, result, deadline, token)
            finally:
                for lane, ok in zip(lanes, held, strict=True):
                    if ok:
                        lane.lock.release()

    async def _device_batches(
        self,
        lanes: list[SinkLane],
        device: str | None,
        result: FlushResult,
        deadline: float | None,
        token: CancellationToken | None,
    ) -> None:
        upto = await self._source.mark()
        while True:
            batch = await self._source.take(self.batch_size, device, upto)
            if not batch.frames:
                return
            sent = await asyncio.gather(
                *(lane.send(batch, deadline=deadline, token=token) for lane in lanes), return_exceptions=True
            )
            failed = False
            for lane, n in zip(lanes, sent, strict=True):
                if isinstance(n, BaseException) or n is None:
                    result.sinks[self.lanes.index(lane)]["done"] = False
                    failed = True
                    if isinstance(n, Exception):
                        self.faults.failed(n)
                    elif isinstance(n, BaseException):
                        raise n  # a cancel
                else:
                    self._sent(result, lane, n)
            if failed:
                result.incomplete = True
                return
            counts = await self.faults.retry(self._acker(batch), (Exception,), deadline, token)
            if counts is None:
                result.incomplete = True
                return
            result.add(counts)

    def _acker(self, batch: Batch) -> Callable[[], Awaitable[dict[str, int]]]:
        return lambda: self._source.ack(batch)

    async def drain(self, deadline: float, settle: Callable[[SinkLane], Awaitable[None]] | None = None) -> FlushResult:
        """The final drain: everything buffered, until empty or ``deadline``;
        each sink's part starts once ``settle(lane)`` returns (its own task
        has finished its last write), never waiting for another sink's."""
        return await self.flush(deadline=deadline, settle=settle)

    def open_lanes(self) -> list[SinkLane]:
        return [lane for lane in self.lanes if not lane.closed]

    def _lane_closed(self) -> None:
        if not self.open_lanes() and self._on_all_closed is not None:
            self._on_all_closed()
