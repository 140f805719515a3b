"""The aggregator actor: one task owns the shared, bounded frame buffer.

Everything else talks to it through ``AggregatorHandle``, which puts messages
on a bounded inbox (a ``Mailbox``); requests that need an answer carry a
future (the oneshot pattern). Readers send one message per read, never one per
frame, and the actor takes all queued messages at each wakeup.

Buffer bookkeeping: the buffer is a deque of chunks in arrival order, one per
offer (one read of one device), each with its device and byte count, so the
globally oldest frame is always first in the leftmost chunk. Offers, evictions
and acks cost per chunk, not per frame: a read's frames are counted once as
they arrive, and whole chunks leave with their counts. Frames leave only from
the left (drop-oldest, or a global flush ack), except for a per-device flush,
which rebuilds that device's chunks. ``_head`` is the global id of the oldest
buffered frame; a global batch is therefore just an id range, and an ack after
some of its frames were evicted counts only the survivors as flushed (the
evicted ones already count as dropped), which keeps
``frames == flushed + dropped + buffered`` exact. Frames count against the
device that offered them.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from firmware_host._sync import Changes, Mailbox, ReadGate
from firmware_host.cancel import CancellationToken
from firmware_host.errors import AggregatorStopped
from firmware_host.frames import Frame

log = logging.getLogger("firmware_host.aggregator")

INBOX_SIZE = 1024


@dataclass(slots=True)
class DeviceAccount:
    """Per-device accounting owned by the actor."""

    frames: int = 0
    flushed: int = 0
    dropped: int = 0
    buffered: int = 0


@dataclass(slots=True)
class Batch:
    """Frames handed to the flusher; they stay buffered until ``ack``."""

    frames: list[Frame]
    first_id: int
    device: str | None = None


@dataclass
class BufferSnapshot:
    capacity: int
    max_bytes: int
    depth: int
    bytes: int
    dropped: int
    accounts: dict[str, DeviceAccount]
    #: device → receive time of its oldest buffered frame (only when asked for)
    oldest_ts: dict[str, float] = field(default_factory=dict)


def _sizes(frames: Iterable[Frame]) -> int:
    """Sum of ``Frame.size`` over ``frames``.

    A plain loop: the interpreter's specialised slot read and ``len`` cost
    about a quarter of ``sum(map(len, map(attrgetter("payload"), frames)))``,
    whose generic attribute lookups made this a tenth of a frame's whole cost.
    """
    total = 0
    try:
        for frame in frames:
            total += len(frame.payload)  # type: ignore[arg-type]  # None: a text frame, below
    except TypeError:  # a text frame (payload None) among them
        return sum(frame.size for frame in frames)
    return total


#: ``_Chunk.bytes`` of a chunk whose size is not counted yet (see ``_count_bytes``)
_UNCOUNTED = -1


class _Chunk:
    """The frames of one offer; ``frames[start:]`` are still buffered, oldest
    first, and ``bytes`` is their size (or ``_UNCOUNTED``). The slots before
    ``start`` hold None (their frames are freed) until the list is compacted,
    so removing frames costs per frame removed, not per chunk."""

    __slots__ = ("bytes", "device", "frames", "start")

    def __init__(self, frames: list[Frame], device: str, size: int) -> None:
        self.frames = frames
        self.start = 0
        self.device = device
        self.bytes = size

    def __len__(self) -> int:
        return len(self.frames) - self.start

    def live(self) -> list[Frame]:
        return self.frames[self.start :]


# -- messages -----------------------------------------------------------------------
# What the handle sends the actor, one type per kind, dispatched by type. A
# request carries the future its answer goes to (the oneshot pattern).


class Offer(NamedTuple):
    """One read's worth of frames from one device (no answer)."""

    device: str
    frames: Sequence[Frame]


class Take(NamedTuple):
    limit: int
    device: str | None
    upto: int | None
    reply: asyncio.Future[Batch]


class Trim(NamedTuple):
    batch: Batch
    reply: asyncio.Future[Batch]


class Ack(NamedTuple):
    batch: Batch
    reply: asyncio.Future[dict[str, int]]


class Pop(NamedTuple):
    batch: Batch
    reply: asyncio.Future[list[Frame]]


class Mark(NamedTuple):
    reply: asyncio.Future[int]


class Register(NamedTuple):
    device: str
    reply: asyncio.Future[None]


class Snapshot(NamedTuple):
    oldest: bool
    reply: asyncio.Future[BufferSnapshot]


class Stop(NamedTuple):
    """Sent when the actor's token is cancelled: what was queued before it is served."""


# Offer(device, frames) runs the Python-level __new__ namedtuple generates;
# readers build one per read, and tuple.__new__ makes the same Offer in C
_new_offer = tuple.__new__

Request = Take | Trim | Ack | Pop | Mark | Register | Snapshot
Message = Offer | Request | Stop
_STOP = Stop()


class Aggregator:
    """The actor. Create it, start ``run()`` as a task, use ``handle``."""

    def __init__(
        self,
        capacity: int,
        max_bytes: int = 0,
        batch_size: int = 1000,
        inbox_size: int = INBOX_SIZE,
        changes: Changes | None = None,
    ) -> None:
        if capacity <= 0 or batch_size <= 0 or max_bytes < 0:
            raise ValueError("capacity and batch_size must be > 0, max_bytes >= 0")
        self.capacity = capacity
        self._max_bytes = max_bytes
        self.batch_size = batch_size
        self._chunks: collections.deque[_Chunk] = collections.deque()
        self._depth = 0  # frames buffered, over all chunks
        self._head = 0  # global id of the oldest buffered frame
        self._bytes = 0
        self._dropped = 0
        self._accounts: dict[str, DeviceAccount] = {}
        self._inbox: Mailbox[Message] = Mailbox(inbox_size)
        #: messages taken but not served when a fault ended ``run``; the next
        #: ``run`` (a supervisor's restart) serves them first, in order
        self._backlog: list[Message] = []
        #: set while at least one full batch is buffered; the flusher awaits it
        self.batch_ready = asyncio.Event()
        self.handle = AggregatorHandle(self._inbox, self.batch_ready)
        self.changes = changes or Changes()

    @property
    def max_bytes(self) -> int:
        """The byte bound (0: none). Fixed at construction: without a bound,
        chunk sizes are counted only when a snapshot asks (``_count_bytes``),
        which a bound set later would not know about."""
        return self._max_bytes

    # -- the actor loop ----------------------------------------------------

    async def run(self, token: CancellationToken) -> None:
        """Serve messages until ``token`` is cancelled and the inbox is empty.

        The stop arrives as a message so that everything sent before the
        cancel is still served in order.
        """
        inbox = self._inbox
        notify = self.changes.notify
        offer = self._offer
        stopper = asyncio.ensure_future(self._stop_when(token))
        try:
            while True:
                if self._backlog:
                    msgs, self._backlog = self._backlog, []
                else:
                    await inbox.wait()
                    msgs = inbox.take_all()
                changed = False
                try:
                    for msg in msgs:
                        # offers are nearly every message: checked first, by identity
                        if type(msg) is Offer:
                            offer(msg.device, msg.frames)
                            changed = True
                        elif isinstance(msg, Stop):
                            self.handle.stopped = True
                            self._refuse(msgs[msgs.index(msg) + 1 :])
                            self._refuse(inbox.take_all())
                            if changed:
                                notify()
                            return
                        elif not isinstance(msg, Offer):  # (a subclass of Offer is still an offer)
                            changed |= self._serve(msg)
                        else:
                            offer(msg.device, msg.frames)
                            changed = True
                except Exception:
                    # a bug, not a bad request (_serve answers those): keep what
                    # was not served, mend the counters, and let the supervisor
                    # log it and restart this loop
                    self._recover(msgs, msg)
                    notify()
                    raise
                # one poke per wakeup, and only for a change: an observer
                # that asks for a snapshot must not wake itself
                if changed:
                    notify()
        finally:
            stopper.cancel()

    def _recover(self, msgs: list[Message], failed: Message) -> None:
        """After a fault while serving ``failed``: what came after it waits in
        the backlog; an offer's counters are rebuilt from the buffer itself."""
        at = next((i for i, m in enumerate(msgs) if m is failed), len(msgs) - 1)
        self._backlog = msgs[at + 1 :]
        if isinstance(failed, Offer):
            log.error(
                "an offer of %d frames from %s failed; counters rebuilt from the buffer",
                len(failed.frames),
                failed.device,
            )
            self._rebuild_counts()
        elif not isinstance(failed, Stop) and not failed.reply.done():
            failed.reply.set_exception(RuntimeError("the aggregator failed serving this request"))

    def _rebuild_counts(self) -> None:
        """The chunks are the truth: depth, bytes and each device's ``buffered``
        follow them, and frames counted but no longer buffered, nor flushed or
        dropped, count as dropped, so the accounting law holds again."""
        live: dict[str, int] = {}
        for chunk in self._chunks:
            live[chunk.device] = live.get(chunk.device, 0) + len(chunk)
            chunk.bytes = _UNCOUNTED
        self._depth = sum(live.values())
        self._bytes = 0
        self._count_bytes()
        for name, acct in self._accounts.items():
            acct.buffered = live.get(name, 0)
            missing = acct.frames - acct.flushed - acct.dropped - acct.buffered
            if missing > 0:
                acct.dropped += missing
                self._dropped += missing
            elif missing < 0:  # buffered but never counted: count them now
                acct.frames -= missing
        self._update_ready()

    @staticmethod
    def _refuse(msgs: Iterable[Message]) -> None:
        """Whatever was queued behind the stop gets an answer: an error."""
        for msg in msgs:
            if isinstance(msg, (Offer, Stop)):
                continue
            if not msg.reply.done():
                msg.reply.set_exception(AggregatorStopped("the aggregator has stopped"))

    async def _stop_when(self, token: CancellationToken) -> None:
        await token.cancelled()
        await self._inbox.put(_STOP)

    def _serve(self, msg: Request) -> bool:
        """Answer one request; True if it changed the buffer."""
        reply: asyncio.Future[Any] = msg.reply
        # the asker gave up (timeout, cancel): nothing to answer, except that
        # an ack must still land (the sinks have the frames)
        if reply.done() and not isinstance(msg, Ack):
            return False
        changed = False
        try:
            result: object
            match msg:
                case Take(limit, device, upto):
                    result = self._take(limit, device, upto)
                case Ack(batch):
                    result = self._ack(batch)
                    changed = True
                case Trim(batch):
                    result = self._trim(batch)
                case Pop(batch):
                    # trim and ack in one message: nothing can be evicted in between
                    result = self._trim(batch).frames
                    self._ack(batch)
                    changed = True
                case Snapshot(oldest):
                    result = self._snapshot(oldest)
                case Mark():
                    result = self._head + self._depth - 1
                case Register(device):
                    self._accounts.setdefault(device, DeviceAccount())
                    result = None
        except Exception as exc:  # a bad request must never kill the actor
            if not reply.done():
                reply.set_exception(exc)
            return changed
        if not reply.done():
            reply.set_result(result)
        return changed

    # -- buffer operations (actor task only) ---------------------------------

    def _offer(self, device: str, frames: Sequence[Frame]) -> None:
        acct = self._accounts.get(device)
        if acct is None:
            acct = self._accounts[device] = DeviceAccount()
        n = len(frames)
        acct.frames += n
        capacity = self.capacity
        if n > capacity:
            # the batch alone overflows: its own oldest frames never enter
            skip = n - capacity
            acct.dropped += skip
            self._dropped += skip
            frames = frames[skip:]
            n = capacity
        if n:
            max_bytes = self._max_bytes
            # Without a byte bound the size is only reported, so it is counted
            # when a snapshot asks (each chunk once): at 60k frames/s summing
            # payload sizes here was 3% of the runtime's instructions.
            if max_bytes:
                size = _sizes(frames)
                self._bytes += size
            else:
                size = _UNCOUNTED
            # a copy of our own: the sender may reuse its list
            self._chunks.append(_Chunk(list(frames), device, size))
            acct.buffered += n
            self._depth += n
            excess = self._depth - capacity
            if excess > 0:
                self._evict(excess)
            if max_bytes and self._bytes > max_bytes:
                self._evict_bytes(max_bytes)
        self._update_ready()

    def _update_ready(self) -> None:
        # derived from the depth after every change: a byte-bound eviction can
        # take the buffer below a batch, and a stale "ready" would spin the flusher
        if self._depth >= self.batch_size:
            self.batch_ready.set()
        else:
            self.batch_ready.clear()

    def _remove_oldest(self, count: int) -> dict[str, int]:
        """Take the ``count`` oldest frames out of the buffer; per-device counts.

        Whole chunks go with their counts; in a chunk cut in two, the removed
        slots are cleared (so those frames are freed now) and the list is
        compacted once more than half of it is cleared.
        """
        chunks = self._chunks
        counts: dict[str, int] = {}
        left, freed = count, 0
        while left:
            chunk = chunks[0]
            k = len(chunk)
            if k <= left:
                chunks.popleft()
                if chunk.bytes != _UNCOUNTED:
                    freed += chunk.bytes
            else:
                k = left
                frames, start = chunk.frames, chunk.start
                end = start + k
                if chunk.bytes != _UNCOUNTED:
                    size = _sizes(frames[start:end])
                    chunk.bytes -= size
                    freed += size
                frames[start:end] = itertools.repeat(None, k)  # type: ignore[arg-type]  # cleared slots
                if end * 2 > len(frames):
                    del frames[:end]
                    end = 0
                chunk.start = end
            counts[chunk.device] = counts.get(chunk.device, 0) + k
            left -= k
        self._head += count
        self._depth -= count
        self._bytes -= freed
        return counts

    def _evict(self, count: int) -> None:
        accounts = self._accounts
        for name, k in self._remove_oldest(count).items():
            acct = accounts[name]
            acct.dropped += k
            acct.buffered -= k
        self._dropped += count

    def _evict_bytes(self, max_bytes: int) -> None:
        """Drop the oldest frames until the buffer holds at most ``max_bytes``."""
        self._count_bytes()  # (under a byte bound every chunk is counted as it comes)
        over, count = self._bytes - max_bytes, 0
        for chunk in self._chunks:
            if over <= chunk.bytes:
                frames = chunk.frames  # the chunk that crosses the bound
                for i in range(chunk.start, len(frames)):  # (islice would walk the cleared slots)
                    count += 1
                    over -= frames[i].size
                    if over <= 0:
                        break
                break
            over -= chunk.bytes
            count += len(chunk)
        self._evict(count)

    def _frame_at(self, index: int) -> Frame | None:
        """The buffered frame ``index`` places from the oldest (None: past the end)."""
        for chunk in self._chunks:
            k = len(chunk)
            if index < k:
                return chunk.frames[chunk.start + index]
            index -= k
        return None

    def _take(self, limit: int, device: str | None, upto: int | None) -> Batch:
        head = self._head
        last = self._depth if upto is None else max(0, min(self._depth, upto - head + 1))
        picked: list[Frame] = []
        seen = 0
        for chunk in self._chunks:
            want = min(limit - len(picked), last - seen)
            if want <= 0:
                break
            k = len(chunk)
            if device is None or chunk.device == device:
                start = chunk.start
                picked += chunk.frames[start : start + min(k, want)]
            seen += k
        return Batch(picked, head, device)

    def _trim(self, batch: Batch) -> Batch:
        """The part of ``batch`` still buffered (for a retry after a sink failed)."""
        if batch.device is None:
            gone = self._head - batch.first_id
            return Batch(batch.frames[gone:], batch.first_id + gone) if gone > 0 else batch
        live = {id(f) for c in self._chunks if c.device == batch.device for f in c.live()}
        return Batch([f for f in batch.frames if id(f) in live], batch.first_id, batch.device)

    def _ack(self, batch: Batch) -> dict[str, int]:
        """Every sink accepted ``batch``: remove what is still buffered of it."""
        if batch.device is None:
            # ids below _head were evicted meanwhile (counted as dropped); the
            # rest are the oldest n, unless a per-device ack moved frames since
            # the take (the flusher's lock rules that out): then go by identity
            n = batch.first_id + len(batch.frames) - self._head
            if n <= 0:
                counts: dict[str, int] = {}
            elif self._frame_at(n - 1) is batch.frames[-1]:
                counts = self._remove_oldest(n)
            else:
                counts = self._remove_frames(batch)
        else:
            counts = self._remove_frames(batch)
        accounts = self._accounts
        for name, k in counts.items():
            acct = accounts[name]
            acct.flushed += k
            acct.buffered -= k
        self._update_ready()
        return counts

    def _remove_frames(self, batch: Batch) -> dict[str, int]:
        """Take the frames of ``batch`` out wherever they are (those of its
        device only, for a per-device batch); per-device counts."""
        ids = {id(f) for f in batch.frames}
        device = batch.device
        counts: dict[str, int] = {}
        removed = freed = 0
        kept: collections.deque[_Chunk] = collections.deque()
        for chunk in self._chunks:
            if device is None or chunk.device == device:
                live = chunk.live()
                rest = [f for f in live if id(f) not in ids]
                gone = len(live) - len(rest)
                if gone:
                    if chunk.bytes == _UNCOUNTED:
                        size = _UNCOUNTED
                    else:
                        size = _sizes(rest)
                        freed += chunk.bytes - size
                    counts[chunk.device] = counts.get(chunk.device, 0) + gone
                    removed += gone
                    if not rest:
                        continue
                    chunk.frames, chunk.start, chunk.bytes = rest, 0, size
            kept.append(chunk)
        self._chunks = kept
        self._depth -= removed
        self._bytes -= freed
        return counts

    def _count_bytes(self) -> None:
        """Count the chunks not counted yet. They are always the newest ones
        (chunks arrive on the right, leave from the left, and keep their
        order), so this walks only what arrived since the last count."""
        counted = 0
        for chunk in reversed(self._chunks):
            if chunk.bytes != _UNCOUNTED:
                break
            chunk.bytes = _sizes(chunk.frames[chunk.start :])
            counted += chunk.bytes
        self._bytes += counted

    def _snapshot(self, oldest: bool) -> BufferSnapshot:
        self._count_bytes()
        accounts = {
            name: DeviceAccount(a.frames, a.flushed, a.dropped, a.buffered) for name, a in self._accounts.items()
        }
        snap = BufferSnapshot(self.capacity, self._max_bytes, self._depth, self._bytes, self._dropped, accounts)
        if oldest:
            missing = {name for name, a in self._accounts.items() if a.buffered}
            for chunk in self._chunks:
                if not missing:
                    break
                if chunk.device in missing:
                    snap.oldest_ts[chunk.device] = chunk.frames[chunk.start].ts
                    missing.discard(chunk.device)
        return snap


class AggregatorHandle:
    """How everything outside the actor talks to it: each method sends one
    typed message; requests wait for the actor's answer.

    Readers use ``offer_nowait`` for every read and fall back to ``offer``
    only when the inbox is full; a subclass that wants to see every read
    overrides both.
    """

    def __init__(self, inbox: Mailbox[Message], batch_ready: asyncio.Event) -> None:
        self._inbox = inbox
        #: set while at least one full batch is buffered; the flusher awaits it
        self.batch_ready = batch_ready
        #: set by the actor when it stops; later requests fail at once
        self.stopped = False
        self._read_gate = ReadGate()

    @property
    def read_gate(self) -> ReadGate:
        """Readers wait here while the flusher works through a backlog."""
        return self._read_gate

    async def offer(self, device: str, frames: Sequence[Frame]) -> None:
        """Hand one read's worth of frames to the buffer (waits if the inbox is full)."""
        await self._inbox.put(Offer(device, frames))

    def offer_nowait(self, device: str, frames: Sequence[Frame]) -> bool:
        """``offer`` without a coroutine: True if queued, False if the inbox
        is full (then nothing was sent; ``await offer(...)`` waits for room).
        The readers' path: one call per read."""
        return self._inbox.put_nowait(_new_offer(Offer, (device, frames)))

    def _reply(self) -> asyncio.Future[Any]:
        if self.stopped:
            raise AggregatorStopped("the aggregator has stopped")
        return asyncio.get_running_loop().create_future()

    async def _send(self, msg: Request) -> None:
        """Queue ``msg`` at once if the inbox has room (no suspension, so the
        request cannot be overtaken by later offers), else wait for room."""
        inbox = self._inbox
        if not inbox.put_nowait(msg):
            await inbox.put(msg)

    async def take(self, limit: int, device: str | None = None, upto: int | None = None) -> Batch:
        """The oldest ``limit`` frames (of ``device``; with id ≤ ``upto``), left in place."""
        reply: asyncio.Future[Batch] = self._reply()
        await self._send(Take(limit, device, upto, reply))
        return await reply

    async def trim(self, batch: Batch) -> Batch:
        """What is still buffered of ``batch`` (for a retry after a sink failed)."""
        reply: asyncio.Future[Batch] = self._reply()
        await self._send(Trim(batch, reply))
        return await reply

    async def ack(self, batch: Batch) -> dict[str, int]:
        """Remove ``batch`` from the buffer as flushed; returns per-device counts.

        Shielded: once the flusher delivered a batch, the ack must land even
        if the flusher is being cancelled, or the frames would be sent twice.
        """
        reply: asyncio.Future[dict[str, int]] = asyncio.get_running_loop().create_future()
        # the put itself must survive a cancel; once queued, the actor serves
        # it even if we are cancelled while waiting for the answer
        await asyncio.shield(self._send(Ack(batch, reply)))
        return await asyncio.shield(reply)

    async def pop(self, batch: Batch) -> list[Frame]:
        """Remove what is still buffered of ``batch`` (counted as flushed to
        the next stage) and return exactly those frames. Shielded like ``ack``."""
        reply: asyncio.Future[list[Frame]] = self._reply()
        await asyncio.shield(self._send(Pop(batch, reply)))
        return await asyncio.shield(reply)

    async def mark(self) -> int:
        """The id of the newest buffered frame (the edge of an on-demand flush)."""
        reply: asyncio.Future[int] = self._reply()
        await self._send(Mark(reply))
        return await reply

    async def register(self, device: str) -> None:
        """Make ``device`` known with zero counters (so status lists it at once)."""
        reply: asyncio.Future[None] = self._reply()
        await self._send(Register(device, reply))
        await reply

    async def snapshot(self, oldest: bool = False) -> BufferSnapshot:
        reply: asyncio.Future[BufferSnapshot] = self._reply()
        await self._send(Snapshot(oldest, reply))
        return await reply


def oldest_age(snapshot: BufferSnapshot, now: float | None = None) -> dict[str, float]:
    now = time.time() if now is None else now
    return {name: max(0.0, now - ts) for name, ts in snapshot.oldest_ts.items()}
