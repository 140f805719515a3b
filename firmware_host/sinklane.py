"""One sink's delivery: its lane of the shared buffer, at its own pace.

Each sink has a lane (a cursor) in its source (the aggregator, or the spool)
and a task of its own (``run``): it takes the frames its sink has not
accepted yet, writes them under the sink's ``timeout``, and on success moves
its cursor on (``ack``); a frame leaves the source once every sink's cursor
has passed it. A failing, slow or stuck sink retries with its own backoff and
delays no other sink: the others' lanes move on, and drop-oldest counts what
it evicts before this sink had it as this sink's ``missed``.

Every write has a deadline. The ``abort`` token (a second signal) abandons a
write in progress at once; the loop's own token only stops it from starting
new work, so a write under way when the shutdown begins is finished, not
abandoned and sent again (the runtime bounds that wait by the grace). A sink
that raises ``SinkClosed`` is never written to again: its lane closes (what it
has pending counts missed) and no longer holds frames in the buffer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from firmware_host._sync import Changes, ReadGate
from firmware_host.aggregator import Batch
from firmware_host.cancel import CancellationToken
from firmware_host.retry import SourceFaults, acquire, backoff
from firmware_host.sinks.base import Sink, SinkClosed

log = logging.getLogger("firmware_host.flusher")


class BatchSource(Protocol):
    """Where sinks take batches from: the aggregator's handle (memory), or
    the disk spool. A frame stays in its source until every lane has it."""

    @property
    def read_gate(self) -> ReadGate | None:
        """The readers' gate, closed while a sink works through a backlog;
        None for a source that no reader feeds directly."""
        ...

    async def add_lane(self, name: str, batch_size: int | None = None) -> int:
        """A lane (a cursor) for one sink, ready from ``batch_size`` waiting
        frames (None: the source's own batch size); returns its number."""
        ...

    def lane_ready(self, lane: int) -> asyncio.Event:
        """Set while at least a full batch waits for ``lane``."""
        ...

    async def close_lane(self, lane: int) -> None:
        """``lane``'s sink is gone for good."""
        ...

    async def take(
        self, limit: int, device: str | None = None, upto: int | None = None, lane: int | None = None
    ) -> Batch:
        """The oldest ``limit`` frames (of ``device``; with id <= ``upto``) not yet
        accepted by ``lane`` (no lane: from the oldest), left in place."""
        ...

    async def trim(self, batch: Batch) -> Batch:
        """What is still waiting of ``batch`` (drop-oldest may have taken some)."""
        ...

    async def ack(self, batch: Batch) -> dict[str, int]:
        """``batch.lane``'s sink accepted ``batch`` (no lane: every sink did);
        per-device counts of the frames that left as flushed."""
        ...

    async def mark(self) -> int:
        """The id of the newest frame (the edge of an on-demand flush)."""
        ...


@dataclass
class SinkStats:
    name: str
    batches: int = 0
    #: frames written and confirmed by the sink (a frame sent again counts again)
    written: int = 0
    failures: int = 0
    last_error: str | None = None
    #: ok, retrying (its last write failed) or closed (``SinkClosed``)
    state: str = "ok"


@dataclass
class Moved:
    """Frames that left a stage (per device), and whether the pass finished."""

    flushed: int = 0
    devices: dict[str, int] = field(default_factory=dict)
    #: True when the deadline or a cancel stopped it before it finished
    incomplete: bool = False

    def add(self, counts: dict[str, int]) -> None:
        for name, n in counts.items():
            self.devices[name] = self.devices.get(name, 0) + n
            self.flushed += n


@dataclass
class LaneResult(Moved):
    """What one sink did during a flush: ``sent`` frames written to it; the
    frames that left the source as flushed when its acks landed."""

    sent: int = 0


class SinkLane:
    """One sink, its lane in ``source``, its retry and its delivery task."""

    def __init__(
        self,
        sink: Sink,
        source: BatchSource,
        *,
        batch_size: int,
        interval: float,
        faults: SourceFaults,
        max_batch: int | None = None,
        changes: Changes,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        abort: CancellationToken | None = None,
        on_closed: Callable[[], None] | None = None,
    ) -> None:
        self.sink = sink
        self.source = source
        #: the sink's own (``[[sinks]] batch_size``) or the buffer's, at most
        #: ``max_batch`` (the buffer's capacity: the source caps its lane alike)
        own = sink.batch_size or batch_size
        self.batch_size = own if max_batch is None else min(own, max_batch)
        self.interval = interval
        self.faults = faults
        self.changes = changes
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stats = SinkStats(sink.name)
        #: one delivery at a time to this sink (its loop, a flush, the drain)
        self.lock = asyncio.Lock()
        self.lane = -1
        self.closed = False
        self._abort = abort
        self._on_closed = on_closed

    async def attach(self) -> None:
        self.lane = await self.source.add_lane(self.sink.name, self.batch_size)

    # -- the sink's own loop --------------------------------------------------------------

    async def run(self, token: CancellationToken) -> None:
        """Deliver on a full batch and on the interval until ``token`` is
        cancelled (``flush_interval = 0``: on demand and at shutdown only)."""
        if self.interval <= 0:
            await token.cancelled()
            return
        ready = self.source.lane_ready(self.lane)
        stop = asyncio.ensure_future(token.cancelled())
        next_tick = time.monotonic() + self.interval
        try:
            while not token.is_cancelled and not self.closed:
                ready_wait = asyncio.ensure_future(ready.wait())
                wait_for = max(0.0, next_tick - time.monotonic())
                await asyncio.wait({ready_wait, stop}, timeout=wait_for, return_when=asyncio.FIRST_COMPLETED)
                ready_wait.cancel()
                if token.is_cancelled:
                    break
                try:
                    if time.monotonic() >= next_tick:
                        next_tick = time.monotonic() + self.interval
                        await self.deliver(token=token)
                    elif ready.is_set():
                        await self.deliver(token=token, full_only=True)
                except Exception as exc:  # a source fault (disk full): retried, never the end of the task
                    self.faults.failed(exc)
                    await backoff(self.backoff_max, None, token)
        finally:
            stop.cancel()

    # -- delivering ---------------------------------------------------------------------

    async def deliver(
        self,
        upto: int | None = None,
        *,
        deadline: float | None = None,
        token: CancellationToken | None = None,
        full_only: bool = False,
    ) -> LaneResult:
        """Deliver what waits for this sink (up to id ``upto``), batch after
        batch, until none is left (``full_only``: no full batch is left), the
        deadline passes or ``token`` is cancelled."""
        result = LaneResult()
        if self.closed:
            return result
        if not await self.acquire(deadline):
            result.incomplete = True
            return result
        gate = self.source.read_gate
        ready = self.source.lane_ready(self.lane)
        try:
            if upto is None and not full_only:
                upto = await self.source.mark()
            while not self.closed:
                if full_only and (not ready.is_set() or (token is not None and token.is_cancelled)):
                    break
                batch = await self.source.take(self.batch_size, None, upto, self.lane)
                if not batch.frames or (full_only and len(batch.frames) < self.batch_size):
                    break
                sent = await self.send(batch, deadline=deadline, token=token)
                if sent is None:
                    result.incomplete = True
                    break
                result.sent += sent
                counts = await self._ack(batch, deadline, token)
                if counts is None:
                    result.incomplete = True
                    break
                result.add(counts)
                if gate is not None and ready.is_set():
                    # still a full batch behind while keeping up: hold the
                    # readers (briefly, see ReadGate) until it is delivered
                    gate.close()
        finally:
            if gate is not None:
                gate.open()
            self.lock.release()
        return result

    async def acquire(self, deadline: float | None) -> bool:
        """Take the sink's lock, giving up at ``deadline``."""
        return await acquire(self.lock, deadline)

    async def send(
        self, batch: Batch, *, deadline: float | None = None, token: CancellationToken | None = None
    ) -> int | None:
        """Write ``batch`` until the sink accepts it, retrying failures with
        backoff (each retry sends only what drop-oldest left of it). Returns
        the frames written, or None when the deadline or ``token`` stopped
        the retries (the frames stay in the source). The caller holds the lock."""
        delay = self.backoff_initial
        while True:
            accepted = await self._write(batch, deadline)
            if accepted is None:
                return None
            if accepted:
                return 0 if self.closed else len(batch.frames)  # (a sink that left wrote nothing)
            if not await backoff(delay, deadline, token):
                return None
            delay = min(delay * 2, self.backoff_max)
            batch = await self.source.trim(batch)
            if not batch.frames:
                # all of it was evicted meanwhile (counted missed): nothing to retry
                return 0

    async def _ack(
        self, batch: Batch, deadline: float | None, token: CancellationToken | None
    ) -> dict[str, int] | None:
        """Move the cursor past the accepted ``batch``, retrying a source
        fault (a spool's delete on a full disk): the sink has it, so only the
        ack is repeated, never the write."""
        return await self.faults.retry(lambda: self.source.ack(batch), (Exception,), deadline, token)

    async def _write(self, batch: Batch, deadline: float | None) -> bool | None:
        """One write under its deadline: True accepted, False failed (counted,
        to retry; a closed sink counts as accepted), None when the drain's
        deadline or the abort token stopped it (not the sink's fault)."""
        abort, sink, stats = self._abort, self.sink, self.stats
        if self.closed:
            return True
        limit, by_deadline = sink.timeout, False
        if deadline is not None:
            left = deadline - time.monotonic()
            if left < limit:
                limit, by_deadline = max(0.0, left), True
        # a task of its own, so a deadline or the abort token can abandon it
        # without waiting (a coroutine cannot be interrupted otherwise)
        work = asyncio.ensure_future(sink.write(batch.frames))
        stop = asyncio.ensure_future(abort.cancelled()) if abort is not None else None
        try:
            await asyncio.wait(
                (work,) if stop is None else (work, stop), timeout=limit, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            if stop is not None:
                stop.cancel()
            if not work.done():
                work.cancel()
                work.add_done_callback(_retrieve)
        if not work.done() or work.cancelled():
            if by_deadline or (abort is not None and abort.is_cancelled):
                return None
            return self._failed(f"timed out after {limit:g}s")
        exc = work.exception()
        if isinstance(exc, SinkClosed):
            await self.close(exc)
            return True
        if exc is not None:  # any sink bug is a failed delivery, not a crash
            return self._failed(f"{type(exc).__name__}: {exc}")
        stats.batches += 1
        stats.written += len(batch.frames)
        if stats.state == "retrying":
            stats.state = "ok"
            self.changes.notify()
        return True

    def _failed(self, error: str) -> bool:
        stats = self.stats
        stats.failures += 1
        stats.last_error = error
        stats.state = "retrying"
        if stats.failures == 1 or stats.failures % 100 == 0:
            log.warning("sink %s failed (%d so far): %s", stats.name, stats.failures, error)
        self.changes.notify()
        return False

    async def close(self, exc: SinkClosed) -> None:
        """The sink is gone for good (``SinkClosed``): never written to again."""
        if self.closed:
            return
        self.closed = True
        self.stats.state = "closed"
        self.stats.last_error = f"closed: {exc}"
        log.info("sink %s closed: %s", self.stats.name, exc)
        try:
            # shielded: the lane must close even if this delivery is being cancelled
            await asyncio.shield(self.source.close_lane(self.lane))
        except Exception as err:  # (the source stopped): its frames stay counted pending
            log.warning("sink %s: its lane did not close: %s", self.stats.name, err)
        self.changes.notify()
        if self._on_closed is not None:
            self._on_closed()


def _retrieve(task: asyncio.Future[None]) -> None:
    """An abandoned write's outcome: nobody awaits it, so read it here (no
    "exception was never retrieved" at exit)."""
    if not task.cancelled():
        task.exception()
