"""The flusher: moves batches from the aggregator to every sink.

Triggers: a full batch, the flush interval, an on-demand request (CLI
``flush``) and the final drain. One delivery runs at a time (a lock), so a
CLI flush racing the periodic one can neither lose nor duplicate a frame.
A failing sink is retried with capped backoff; meanwhile its batch stays in
the buffer, still subject to drop-oldest, and each retry sends only what
survived.

Every write has a deadline (the sink's ``timeout``, and the drain's): a
write that does not finish in time is cancelled and counts as a failure. The
``abort`` token (a second signal) abandons a write in progress at once; the
periodic loop's own token only stops it from starting new work, so a write
under way when the shutdown begins is finished, not abandoned and sent again
(the runtime bounds how long it waits for that by the grace). A sink that
raises ``SinkClosed`` is left out from then on; a fault of the source
itself (a spool on a full disk) is retried with backoff and shown in
``source_error``, never the end of the task.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from firmware_host._sync import Changes, ReadGate
from firmware_host.aggregator import Batch
from firmware_host.cancel import CancellationToken
from firmware_host.sinks.base import Sink, SinkClosed

log = logging.getLogger("firmware_host.flusher")

T = TypeVar("T")


class BatchSource(Protocol):
    """Where the flusher takes batches from: the aggregator's handle (memory),
    or the disk spool. A batch stays in its source until ``ack``."""

    #: set while at least one full batch is waiting
    batch_ready: asyncio.Event

    @property
    def read_gate(self) -> ReadGate | None:
        """The readers' gate, closed while the flusher works through a
        backlog; None for a source that no reader feeds directly."""
        ...

    async def take(self, limit: int, device: str | None = None, upto: int | None = None) -> Batch:
        """The oldest ``limit`` frames (of ``device``; with id <= ``upto``), left in place."""
        ...

    async def trim(self, batch: Batch) -> Batch:
        """What is still there of ``batch`` (drop-oldest may have taken some)."""
        ...

    async def ack(self, batch: Batch) -> dict[str, int]:
        """Every sink accepted ``batch``: remove it; per-device counts."""
        ...

    async def mark(self) -> int:
        """The id of the newest frame (the edge of an on-demand flush)."""
        ...


@dataclass
class SinkStats:
    name: str
    batches: int = 0
    frames: int = 0
    failures: int = 0
    last_error: str | None = None
    #: ok, retrying (its last write failed) or closed (``SinkClosed``)
    state: str = "ok"


@dataclass
class FlushResult:
    flushed: int = 0
    devices: dict[str, int] = field(default_factory=dict)
    #: True when the deadline or a cancel stopped the flush before it finished
    incomplete: bool = False

    def add(self, counts: dict[str, int]) -> None:
        for name, n in counts.items():
            self.devices[name] = self.devices.get(name, 0) + n
            self.flushed += n


class Flusher:
    def __init__(
        self,
        source: BatchSource,
        sinks: Sequence[Sink],
        *,
        interval: float,
        batch_size: int,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        changes: Changes | None = None,
        on_all_closed: Callable[[], None] | None = None,
        abort: CancellationToken | None = None,
    ) -> None:
        self._agg = source
        self.changes = changes or Changes()
        self.sinks = list(sinks)
        self.interval = interval
        self.batch_size = batch_size
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stats = {id(s): SinkStats(s.name) for s in self.sinks}
        self._lock = asyncio.Lock()
        self.flushes = 0
        #: the sinks that raised SinkClosed: never written to again
        self._closed: set[int] = set()
        #: called once, when the last open sink has closed
        self._on_all_closed = on_all_closed
        #: cancelled to give up at once, even on a write in progress
        self._abort = abort
        #: the last failure of the source itself (take, trim, ack), until one succeeds
        self.source_error: str | None = None
        self.source_failures = 0

    # -- periodic loop --------------------------------------------------------

    async def run(self, token: CancellationToken) -> None:
        """Flush on batch-full and on the interval until ``token`` is cancelled.

        The final drain is separate (``drain``), so the runtime decides when
        the readers have stopped before the last frames go out.
        """
        if self.interval <= 0:
            # flush_interval = 0 means on demand and at shutdown only (the config contract),
            # so not on batch-full either
            await token.cancelled()
            return
        ready = self._agg.batch_ready
        stop = asyncio.ensure_future(token.cancelled())
        next_tick = time.monotonic() + self.interval
        try:
            while not token.is_cancelled:
                ready_wait = asyncio.ensure_future(ready.wait())
                wait_for = max(0.0, next_tick - time.monotonic())
                await asyncio.wait({ready_wait, stop}, timeout=wait_for, return_when=asyncio.FIRST_COMPLETED)
                ready_wait.cancel()
                if token.is_cancelled:
                    break
                try:
                    if time.monotonic() >= next_tick:
                        next_tick = time.monotonic() + self.interval
                        await self.flush(token=token)
                    elif ready.is_set():
                        await self._flush_full_batches(token)
                except Exception as exc:  # a source fault (disk full): retried, never the end of the task
                    self._source_failed(exc)
                    await self._backoff(self.backoff_max, None, token)
        finally:
            stop.cancel()

    async def _flush_full_batches(self, token: CancellationToken) -> None:
        agg = self._agg
        gate = agg.read_gate
        async with self._lock:
            try:
                while agg.batch_ready.is_set() and not token.is_cancelled:
                    batch = await agg.take(self.batch_size)
                    if len(batch.frames) < self.batch_size:
                        break
                    await self._deliver(batch, token=token)
                    if gate is not None and agg.batch_ready.is_set():
                        # still a full batch behind after a delivery: hold the
                        # readers (briefly) until the backlog is delivered
                        gate.close()
            finally:
                if gate is not None:
                    gate.open()

    # -- on demand and at the end -----------------------------------------------

    async def flush(
        self, device: str | None = None, *, deadline: float | None = None, token: CancellationToken | None = None
    ) -> FlushResult:
        """Deliver every frame buffered when called (of ``device``, if given).

        Frames arriving meanwhile wait for the next flush, so a flush under a
        steady stream still ends.
        """
        result = FlushResult()
        if not await self._acquire(deadline):
            result.incomplete = True
            return result
        gate = self._agg.read_gate
        try:
            upto = await self._agg.mark()
            while True:
                batch = await self._agg.take(self.batch_size, device, upto)
                if not batch.frames:
                    break
                counts = await self._deliver(batch, deadline=deadline, token=token)
                if counts is None:
                    result.incomplete = True
                    break
                result.add(counts)
                if gate is not None and self._agg.batch_ready.is_set():
                    gate.close()  # behind by a full batch: readers wait (see ReadGate)
        except Exception as exc:  # the source failed (take, mark): what is left stays buffered
            self._source_failed(exc)
            result.incomplete = True
        finally:
            if gate is not None:
                gate.open()
            self._lock.release()
        self.flushes += 1
        return result

    async def _acquire(self, deadline: float | None) -> bool:
        """Take the delivery lock, giving up at ``deadline`` (a flush stuck
        retrying a dead sink must not hang a CLI request for ever)."""
        if deadline is None:
            await self._lock.acquire()
            return True
        try:
            await asyncio.wait_for(self._lock.acquire(), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            return False
        return True

    async def drain(self, deadline: float) -> FlushResult:
        """The final drain: everything buffered, until empty or ``deadline``."""
        return await self.flush(deadline=deadline)

    async def _deliver(
        self, batch: Batch, *, deadline: float | None = None, token: CancellationToken | None = None
    ) -> dict[str, int] | None:
        """Send ``batch`` to every open sink, retrying failures; ack it.

        Returns the per-device flushed counts, or None when the deadline or
        token stopped the retries (the frames stay buffered).
        """
        pending = self.open_sinks()
        delay = self.backoff_initial
        while True:
            failed: list[Sink] = []
            for sink in pending:
                accepted = await self._write(sink, batch, deadline)
                if accepted is None:
                    return None
                if not accepted:
                    failed.append(sink)
            if not failed:
                break
            pending = [s for s in failed if id(s) not in self._closed]
            if not await self._backoff(delay, deadline, token):
                return None
            delay = min(delay * 2, self.backoff_max)
            batch = await self._agg.trim(batch)
            if not batch.frames:
                # all of it was evicted meanwhile (counted dropped): nothing to retry
                return {}
        return await self._ack(batch, deadline, token)

    def open_sinks(self) -> list[Sink]:
        return [s for s in self.sinks if id(s) not in self._closed]

    async def _write(self, sink: Sink, batch: Batch, deadline: float | None) -> bool | None:
        """One write under its deadline: True accepted, False failed (counted,
        to retry; a closed sink counts as accepted), None when the drain's
        deadline or the abort token stopped it (not the sink's fault)."""
        abort = self._abort
        stats = self.stats[id(sink)]
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
            return self._failed(stats, f"timed out after {limit:g}s")
        exc = work.exception()
        if isinstance(exc, SinkClosed):
            self._close(sink, stats, exc)
            return True
        if exc is not None:  # any sink bug is a failed delivery, not a crash
            return self._failed(stats, f"{type(exc).__name__}: {exc}")
        stats.batches += 1
        stats.frames += len(batch.frames)
        if stats.state == "retrying":
            stats.state = "ok"
            self.changes.notify()
        return True

    def _failed(self, stats: SinkStats, error: str) -> bool:
        stats.failures += 1
        stats.last_error = error
        stats.state = "retrying"
        if stats.failures == 1 or stats.failures % 100 == 0:
            log.warning("sink %s failed (%d so far): %s", stats.name, stats.failures, error)
        self.changes.notify()
        return False

    def _close(self, sink: Sink, stats: SinkStats, exc: SinkClosed) -> None:
        self._closed.add(id(sink))
        stats.state = "closed"
        stats.last_error = f"closed: {exc}"
        log.info("sink %s closed: %s", stats.name, exc)
        self.changes.notify()
        if not self.open_sinks() and self._on_all_closed is not None:
            self._on_all_closed()

    async def _ack(
        self, batch: Batch, deadline: float | None, token: CancellationToken | None
    ) -> dict[str, int] | None:
        """Remove the accepted ``batch`` from the source, retrying a source
        fault (a spool's delete on a full disk) with backoff: the sinks have
        it, so only the ack is repeated, never the writes."""
        return await self._retry_source(lambda: self._agg.ack(batch), (Exception,), deadline, token)

    async def _retry_source(
        self,
        attempt: Callable[[], Awaitable[T]],
        faults: tuple[type[Exception], ...],
        deadline: float | None,
        token: CancellationToken | None,
        what: str | None = None,
    ) -> T | None:
        """``attempt()`` until it succeeds: a fault of the source (one of
        ``faults``) is counted, shown in ``source_error`` and retried with
        backoff. None when the deadline or ``token`` stopped the retries."""
        delay = self.backoff_initial
        while True:
            try:
                result = await attempt()
            except faults as exc:
                self._source_failed(exc, what)
            else:
                if self.source_error is not None:
                    self.source_error = None
                    self.changes.notify()
                return result
            if not await self._backoff(delay, deadline, token):
                return None
            delay = min(delay * 2, self.backoff_max)

    def _source_failed(self, exc: BaseException, what: str | None = None) -> None:
        self.source_failures += 1
        self.source_error = f"{type(exc).__name__}: {exc}"
        if self.source_failures == 1 or self.source_failures % 100 == 0:
            name = what or self._agg_name()
            log.error("%s failed (%d so far): %s", name, self.source_failures, self.source_error)
        self.changes.notify()

    def _agg_name(self) -> str:
        return "spool" if self._agg.read_gate is None else "buffer"

    async def _backoff(self, delay: float, deadline: float | None, token: CancellationToken | None) -> bool:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            delay = min(delay, left)
        if token is None:
            await asyncio.sleep(delay)
            return True
        return await token.run_until_cancelled(asyncio.sleep(delay, True)) is True

    def sink_status(self) -> list[dict[str, object]]:
        return [vars(s).copy() for s in self.stats.values()]


def _retrieve(task: asyncio.Future[None]) -> None:
    """An abandoned write's outcome: nobody awaits it, so read it here (no
    "exception was never retrieved" at exit)."""
    if not task.cancelled():
        task.exception()
