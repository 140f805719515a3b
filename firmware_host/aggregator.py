"""The aggregator actor: one task owns the shared, bounded frame buffer.

Everything else talks to it through ``AggregatorHandle``, which puts messages
on a bounded inbox (a ``Mailbox``); requests that need an answer carry a
future (the oneshot pattern). Readers send one message per read, never one per
frame, and the actor takes all queued messages at each wakeup.

Buffer bookkeeping: the buffer is a deque of chunks in arrival order, one per
offer (one read of one device), each with its device and byte count, so the
globally oldest frame is always first in the leftmost chunk. Offers, evictions
and acks cost per chunk, not per frame: a read's frames are counted once as
they arrive, and whole chunks leave with their counts.

Every frame gets a stable id as it enters (consecutive within a chunk, rising
in buffer order), so a batch is an id range whatever leaves meanwhile.

Sinks consume the buffer through lanes (``add_lane``), one per sink, each
with its own cursor: a lane's sink has accepted every buffered frame with an
id below it. Lanes move at their own pace; a frame leaves the buffer when it
is below every open lane's cursor (``flushed``), or when drop-oldest evicts
it (``dropped``; ``missed`` for each lane that had not accepted it yet). Per
lane and device: ``frames == delivered + missed + pending``. Without lanes
(the spooler's use) a batch is taken from the oldest frame and leaves with an
explicit ``ack`` on behalf of every consumer, as does a per-device flush.
Frames count against the device that offered them.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from firmware_host._sync import Changes, Mailbox, ReadGate
from firmware_host.cancel import CancellationToken
from firmware_host.errors import AggregatorStopped
from firmware_host.frames import Frame
from firmware_host.tap import FrameTap

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
    """Frames handed to the flusher; they stay buffered until ``ack``.

    ``first_id`` and ``last_id`` are the ids of its first and last frame
    (``last_id = first_id - 1`` when empty); ``lane`` is the lane it was taken
    for (None: from the oldest frame, on behalf of every lane)."""

    frames: list[Frame]
    first_id: int
    device: str | None = None
    last_id: int = -1
    lane: int | None = None


@dataclass(slots=True)
class LaneAccount:
    """One lane's (one sink's) counters for one device."""

    delivered: int = 0
    missed: int = 0
    pending: int = 0


@dataclass
class LaneView:
    """One lane in a snapshot: its counters per device."""

    name: str
    closed: bool
    devices: dict[str, LaneAccount]


@dataclass(slots=True, eq=False)
class _Lane:
    """A lane's state, owned by the actor."""

    name: str
    #: every buffered frame with an id below this is accepted by the lane's sink
    cursor: int
    #: set while at least a full batch waits for this lane
    ready: asyncio.Event
    #: frames at or above the cursor, over all devices
    pending: int = 0
    delivered: dict[str, int] = field(default_factory=dict)
    missed: dict[str, int] = field(default_factory=dict)
    closed: bool = False
    #: what ``ready`` is set to (read without a call)
    is_ready: bool = False
    #: how many pending frames make a full batch for this lane's sink
    batch_size: int = 1000


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
    #: the lanes, in the order they were added
    lanes: list[LaneView] = field(default_factory=list)


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
    so removing frames costs per frame removed, not per chunk. ``frames[i]``
    has the id ``base + i``: the oldest buffered frame's is ``base + start``,
    and ``base + len(frames)`` is one past the newest (written out where
    used: a property call per chunk was a visible cost)."""

    __slots__ = ("base", "bytes", "device", "frames", "start")

    def __init__(self, frames: list[Frame], device: str, size: int, base: int) -> None:
        self.frames = frames
        self.start = 0
        self.device = device
        self.bytes = size
        self.base = base

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
    lane: int | None = None


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


class AddLane(NamedTuple):
    name: str
    #: a full batch for this lane; None: the aggregator's ``batch_size``
    batch_size: int | None
    reply: asyncio.Future[int]


class CloseLane(NamedTuple):
    """The lane's sink is gone for good: what it has pending counts missed."""

    lane: int
    reply: asyncio.Future[None]


class Register(NamedTuple):
    device: str
    reply: asyncio.Future[None]


class Snapshot(NamedTuple):
    oldest: bool
    reply: asyncio.Future[BufferSnapshot]
    #: with each lane's counters per device (a walk of the buffer per lane)
    lanes: bool = False


class Stop(NamedTuple):
    """Sent when the actor's token is cancelled: what was queued before it is served."""


# Offer(device, frames) runs the Python-level __new__ namedtuple generates;
# readers build one per read, and tuple.__new__ makes the same Offer in C
_new_offer = tuple.__new__

Request = Take | Trim | Ack | Pop | Mark | Register | Snapshot | AddLane | CloseLane
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
        self._next_id = 0  # the id the next frame offered gets
        self._bytes = 0
        self._dropped = 0
        self._accounts: dict[str, DeviceAccount] = {}
        #: one per sink (``add_lane``); empty: batches leave by explicit ack only
        self._lanes: list[_Lane] = []
        self._inbox: Mailbox[Message] = Mailbox(inbox_size)
        #: messages taken but not served when a fault ended ``run``; the next
        #: ``run`` (a supervisor's restart) serves them first, in order
        self._backlog: list[Message] = []
        #: set while at least one full batch is buffered; the flusher awaits it
        self.batch_ready = asyncio.Event()
        self.handle = AggregatorHandle(self._inbox, self.batch_ready, self.lane_ready)
        self.changes = changes or Changes()
        #: live subscribers to every offered read (``tail``, ``request``); see firmware_host.tap
        self.tap = FrameTap()

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
        # the same list for the tap's life: an empty one costs one test per offer
        subscribers = self.tap.subscribers
        publish = self.tap.publish
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
                            if subscribers:
                                publish(msg.device, msg.frames)
                            changed = True
                        elif isinstance(msg, Stop):
                            self.handle.stopped = True
                            self.tap.close_all()
                            self._refuse(msgs[msgs.index(msg) + 1 :])
                            self._refuse(inbox.take_all())
                            if changed:
                                notify()
                            return
                        elif not isinstance(msg, Offer):  # (a subclass of Offer is still an offer)
                            changed |= self._serve(msg)
                        else:
                            offer(msg.device, msg.frames)
                            if subscribers:
                                publish(msg.device, msg.frames)
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
        for lane in self._lanes:  # the same for each lane: what is unaccounted is missed
            pending = self._lane_pending(lane)
            lane.pending = sum(pending.values())
            for name, acct in self._accounts.items():
                have = lane.delivered.get(name, 0) + lane.missed.get(name, 0) + pending.get(name, 0)
                if acct.frames > have:
                    lane.missed[name] = lane.missed.get(name, 0) + acct.frames - have
        self._update_ready()

    @staticmethod
    def _refuse(msgs: Iterable[Message]) -> None:
        """Whatever was queued behind the stop gets an answer: an error."""
        for msg in msgs:
            if isinstance(msg, (Offer, Stop)):
                continue
            if not msg.reply.done():
                msg.reply.set_exception(AggregatorStopped("the aggregator has stopped"))

    def abandon(self) -> None:
        """The actor task is gone for good (its supervisor gave it up): every
        request queued or sent from now on fails at once instead of waiting
        for an answer that will never come."""
        self.handle.stopped = True
        self.tap.close_all()
        backlog, self._backlog = self._backlog, []
        self._refuse(backlog)
        self._refuse(self._inbox.take_all())

    def snapshot_now(self, oldest: bool = False, lanes: bool = False) -> BufferSnapshot:
        """The snapshot read directly, for when the actor task no longer runs
        (``abandon``): nothing else touches the buffer then."""
        return self._snapshot(oldest, lanes)

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
                case Take(limit, device, upto, _, lane):
                    result = self._take(limit, device, upto, lane)
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
                case Snapshot(oldest, _, lanes):
                    result = self._snapshot(oldest, lanes)
                case Mark():
                    result = self._next_id - 1
                case AddLane(name, batch_size):
                    result = self._add_lane(name, batch_size)
                    changed = True
                case CloseLane(lane):
                    self._close_lane(lane)
                    self._update_ready()
                    result = None
                    changed = True
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
        skip = 0
        if n > capacity:
            # the batch alone overflows: its own oldest frames never enter
            skip = n - capacity
            acct.dropped += skip
            self._dropped += skip
            frames = frames[skip:]
            n = capacity
        lanes = self._lanes
        if lanes:  # one lane per sink: inline, this runs once per read
            for lane in lanes:
                if lane.closed or skip:
                    self._lane_missed_offer(lane, device, n, skip)
                else:
                    lane.pending += n
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
            self._chunks.append(_Chunk(list(frames), device, size, self._next_id))
            self._next_id += n
            acct.buffered += n
            self._depth += n
            excess = self._depth - capacity
            if excess > 0:
                self._evict(excess)
            if max_bytes and self._bytes > max_bytes:
                self._evict_bytes(max_bytes)
        self._update_ready()

    @staticmethod
    def _lane_missed_offer(lane: _Lane, device: str, n: int, skip: int) -> None:
        if lane.closed:  # its sink is gone: it will never have them
            lane.missed[device] = lane.missed.get(device, 0) + n + skip
        else:  # the offer alone overflowed: its oldest frames never entered
            lane.pending += n
            lane.missed[device] = lane.missed.get(device, 0) + skip

    def _update_ready(self) -> None:
        # derived from the depth after every change: a byte-bound eviction can
        # take the buffer below a batch, and a stale "ready" would spin the flusher
        batch_size = self.batch_size
        if self._depth >= batch_size:
            self.batch_ready.set()
        else:
            self.batch_ready.clear()
        for lane in self._lanes:
            # Event.set and clear are Python calls: only on a change
            if (lane.pending >= lane.batch_size and not lane.closed) != lane.is_ready:
                lane.is_ready = not lane.is_ready
                if lane.is_ready:
                    lane.ready.set()
                else:
                    lane.ready.clear()

    # -- lanes --------------------------------------------------------------------

    def _add_lane(self, name: str, batch_size: int | None = None) -> int:
        """A new lane starts at the oldest buffered frame; what left the buffer
        before it existed never reached its sink (counted missed)."""
        # never above capacity: a full buffer is always a full batch
        full = min(batch_size or self.batch_size, self.capacity)
        lane = _Lane(name, self._head(), asyncio.Event(), batch_size=full)
        for device, acct in self._accounts.items():
            if acct.flushed or acct.dropped:
                lane.missed[device] = acct.flushed + acct.dropped
        lane.pending = self._depth
        self._lanes.append(lane)
        self._update_ready()
        return len(self._lanes) - 1

    def lane_ready(self, lane: int) -> asyncio.Event:
        """Set while at least a full batch waits for ``lane``."""
        return self._lanes[lane].ready

    def _close_lane(self, index: int) -> None:
        lane = self._lanes[index]
        if lane.closed:
            return
        for device, k in self._lane_pending(lane).items():
            lane.missed[device] = lane.missed.get(device, 0) + k
        lane.closed, lane.pending, lane.cursor = True, 0, self._next_id
        self._release()

    def _lane_pending(self, lane: _Lane) -> dict[str, int]:
        """Per device, the buffered frames at or above ``lane``'s cursor."""
        counts: dict[str, int] = {}
        if lane.closed:
            return counts
        cursor = lane.cursor
        for chunk in self._chunks:
            end = chunk.base + len(chunk.frames)
            if end > cursor:
                k = end - max(chunk.base + chunk.start, cursor)
                counts[chunk.device] = counts.get(chunk.device, 0) + k
        return counts

    def _lanes_lose(self, device: str, first: int, end: int, delivered: bool) -> None:
        """Frames ``first``..``end - 1`` of ``device`` leave the buffer: each
        open lane that had not accepted them counts them delivered (every sink
        accepted them: a per-device or explicit ack) or missed (evicted)."""
        for lane in self._lanes:
            cursor = lane.cursor
            if lane.closed or cursor >= end:
                continue
            k = end - max(first, cursor)
            lane.pending -= k
            counts = lane.delivered if delivered else lane.missed
            counts[device] = counts.get(device, 0) + k

    def _release(self) -> dict[str, int]:
        """Remove the frames every open lane has accepted (counted flushed)."""
        open_lanes = [lane.cursor for lane in self._lanes if not lane.closed]
        if not open_lanes:
            return {}
        upto = min(open_lanes)
        count = 0
        for chunk in self._chunks:
            first = chunk.base + chunk.start
            if first >= upto:
                break
            count += min(len(chunk), upto - first)
        if not count:
            return {}
        return self._flushed(self._remove_oldest(count))

    def _flushed(self, counts: dict[str, int]) -> dict[str, int]:
        accounts = self._accounts
        for name, k in counts.items():
            acct = accounts[name]
            acct.flushed += k
            acct.buffered -= k
        return counts

    # -- removing frames ---------------------------------------------------------

    def _head(self) -> int:
        """The id of the oldest buffered frame (the next id when empty)."""
        chunks = self._chunks
        return (chunks[0].base + chunks[0].start) if chunks else self._next_id

    def _remove_oldest(self, count: int, lanes: bool | None = None) -> dict[str, int]:
        """Take the ``count`` oldest frames out of the buffer; per-device counts.

        ``lanes``: None when every lane has accepted them already; else they
        count for the lanes that had not as delivered (True) or missed (False).
        Whole chunks go with their counts; in a chunk cut in two, the removed
        slots are cleared (so those frames are freed now) and the list is
        compacted once more than half of it is cleared.
        """
        chunks = self._chunks
        counts: dict[str, int] = {}
        track = lanes is not None and bool(self._lanes)
        left, freed = count, 0
        while left:
            chunk = chunks[0]
            k = len(chunk)
            if track:
                first = chunk.base + chunk.start
                self._lanes_lose(chunk.device, first, first + min(k, left), bool(lanes))
            if k <= left:
                chunks.popleft()
                if chunk.bytes != _UNCOUNTED:
                    freed += chunk.bytes
            else:
                k = left
                freed += self._cut(chunk, k)
            counts[chunk.device] = counts.get(chunk.device, 0) + k
            left -= k
        self._depth -= count
        self._bytes -= freed
        return counts

    @staticmethod
    def _cut(chunk: _Chunk, k: int) -> int:
        """Remove the ``k`` oldest live frames of ``chunk``; the bytes freed."""
        frames, start = chunk.frames, chunk.start
        end = start + k
        freed = 0
        if chunk.bytes != _UNCOUNTED:
            freed = _sizes(frames[start:end])
            chunk.bytes -= freed
        frames[start:end] = itertools.repeat(None, k)  # type: ignore[arg-type]  # cleared slots
        if end * 2 > len(frames):
            del frames[:end]
            chunk.base += end
            end = 0
        chunk.start = end
        return freed

    def _evict(self, count: int) -> None:
        accounts = self._accounts
        for name, k in self._remove_oldest(count, lanes=False).items():
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

    # -- taking and acking -----------------------------------------------------------

    def _from(self, fid: int) -> Iterable[_Chunk]:
        """The chunks from the first one holding an id >= ``fid`` on. A lane far
        ahead of a stuck one starts near the newest end: found by bisection
        (chunks hold rising, disjoint id ranges), so its batches do not walk
        the whole buffer each time."""
        chunks = self._chunks
        if not chunks or fid <= chunks[0].base + chunks[0].start:
            return chunks
        lo, hi = 0, len(chunks)
        while lo < hi:
            mid = (lo + hi) // 2
            chunk = chunks[mid]
            if chunk.base + len(chunk.frames) <= fid:
                lo = mid + 1
            else:
                hi = mid
        return itertools.islice(chunks, lo, None)

    def _take(self, limit: int, device: str | None, upto: int | None, lane: int | None) -> Batch:
        """The oldest ``limit`` frames (of ``device``, with id <= ``upto``) at
        or above ``lane``'s cursor (from the oldest frame: no lane)."""
        start = self._head() if lane is None else self._lanes[lane].cursor
        stop = self._next_id if upto is None else min(self._next_id, upto + 1)
        picked: list[Frame] = []
        first_id = last_id = -1
        for chunk in self._from(start):
            want = limit - len(picked)
            if want <= 0:
                break
            base = chunk.base
            cfirst, cend = base + chunk.start, base + len(chunk.frames)
            if cfirst >= stop:
                break
            if cend <= start or (device is not None and chunk.device != device):
                continue
            lo = max(cfirst, start)
            hi = min(cend, stop, lo + want)
            picked += chunk.frames[lo - base : hi - base]
            if first_id < 0:
                first_id = lo
            last_id = hi - 1
        if first_id < 0:
            first_id = max(start, self._head())
            last_id = first_id - 1
        return Batch(picked, first_id, device, last_id, lane)

    def _trim(self, batch: Batch) -> Batch:
        """The part of ``batch`` still waiting for its lane (for a retry after
        a sink failed): what drop-oldest took meanwhile is gone."""
        if not batch.frames:
            return batch
        return self._take(len(batch.frames), batch.device, batch.last_id, batch.lane)

    def _ack(self, batch: Batch) -> dict[str, int]:
        """A lane's sink accepted ``batch`` (or, with no lane, every sink did);
        returns the per-device counts of frames that left as flushed."""
        if batch.lane is not None:
            counts = self._lane_ack(batch)
        elif batch.device is None:
            # everything up to the batch's edge that is still buffered
            upto, count = batch.last_id + 1, 0
            for chunk in self._chunks:
                first = chunk.base + chunk.start
                if first >= upto:
                    break
                count += min(len(chunk), upto - first)
            counts = self._flushed(self._remove_oldest(count, lanes=True)) if count else {}
        else:
            counts = self._flushed(self._remove_device(batch.device, batch.last_id))
        self._update_ready()
        return counts

    def _lane_ack(self, batch: Batch) -> dict[str, int]:
        assert batch.lane is not None
        lane = self._lanes[batch.lane]
        if lane.closed or batch.device is not None:
            # a closed lane's frames are counted missed; a per-lane batch of one
            # device cannot move the cursor (frames of others lie between)
            return {}
        cursor, upto = lane.cursor, batch.last_id + 1
        if upto <= cursor:
            return {}
        delivered = lane.delivered
        accepted = 0
        for chunk in self._from(cursor):
            base = chunk.base
            first, end = base + chunk.start, base + len(chunk.frames)
            if first >= upto:
                break
            if end <= cursor:
                continue
            k = min(end, upto) - max(first, cursor)
            delivered[chunk.device] = delivered.get(chunk.device, 0) + k
            accepted += k
        lane.pending -= accepted
        lane.cursor = upto
        if len(self._lanes) == 1 and cursor <= self._head():
            # the only sink, and it was at the oldest frame: what it accepted is
            # exactly what leaves (one walk fewer per batch)
            return self._flushed(self._remove_oldest(accepted)) if accepted else {}
        return self._release()

    def _remove_device(self, device: str, last_id: int) -> dict[str, int]:
        """Every buffered frame of ``device`` with id <= ``last_id`` leaves
        (a per-device flush, accepted by every sink): a prefix of each of
        its chunks, so ids stay as they are."""
        removed = freed = 0
        emptied = False
        for chunk in self._chunks:
            first = chunk.base + chunk.start
            if first > last_id:
                break
            if chunk.device != device:
                continue
            k = min(len(chunk), last_id + 1 - first)
            if self._lanes:
                self._lanes_lose(device, first, first + k, True)
            freed += self._cut(chunk, k)
            removed += k
            emptied |= not len(chunk)
        if emptied:
            self._chunks = collections.deque(c for c in self._chunks if len(c))
        self._depth -= removed
        self._bytes -= freed
        return {device: removed} if removed else {}

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

    def _snapshot(self, oldest: bool, lanes: bool = False) -> BufferSnapshot:
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
        for lane in self._lanes if lanes else ():
            pending = self._lane_pending(lane)
            devices = {
                name: LaneAccount(lane.delivered.get(name, 0), lane.missed.get(name, 0), pending.get(name, 0))
                for name in self._accounts
            }
            snap.lanes.append(LaneView(lane.name, lane.closed, devices))
        return snap


class AggregatorHandle:
    """How everything outside the actor talks to it: each method sends one
    typed message; requests wait for the actor's answer.

    Readers use ``offer_nowait`` for every read and fall back to ``offer``
    only when the inbox is full; a subclass that wants to see every read
    overrides both.
    """

    def __init__(
        self, inbox: Mailbox[Message], batch_ready: asyncio.Event, lane_ready: Callable[[int], asyncio.Event]
    ) -> None:
        self._inbox = inbox
        #: a lane's "full batch waiting" event (an Event, like ``batch_ready``)
        self._lane_ready = lane_ready
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
        if self.stopped:  # (an actor given up never makes room again)
            raise AggregatorStopped("the aggregator has stopped")
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

    async def take(
        self, limit: int, device: str | None = None, upto: int | None = None, lane: int | None = None
    ) -> Batch:
        """The oldest ``limit`` frames (of ``device``; with id ≤ ``upto``) not
        yet accepted by ``lane``'s sink (no lane: from the oldest), left in place."""
        reply: asyncio.Future[Batch] = self._reply()
        await self._send(Take(limit, device, upto, reply, lane))
        return await reply

    async def add_lane(self, name: str, batch_size: int | None = None) -> int:
        """A lane for one sink, whose ready event is set from ``batch_size``
        pending frames (None: the aggregator's); returns its number."""
        reply: asyncio.Future[int] = self._reply()
        await self._send(AddLane(name, batch_size, reply))
        return await reply

    def lane_ready(self, lane: int) -> asyncio.Event:
        """Set while at least a full batch waits for ``lane``."""
        return self._lane_ready(lane)

    async def close_lane(self, lane: int) -> None:
        """``lane``'s sink is gone for good: its pending frames count missed,
        and it no longer holds frames in the buffer."""
        reply: asyncio.Future[None] = self._reply()
        await self._send(CloseLane(lane, reply))
        await reply

    async def trim(self, batch: Batch) -> Batch:
        """What is still buffered of ``batch`` (for a retry after a sink failed)."""
        reply: asyncio.Future[Batch] = self._reply()
        await self._send(Trim(batch, reply))
        return await reply

    async def ack(self, batch: Batch) -> dict[str, int]:
        """``batch``'s lane accepted it (no lane: every sink did): move the
        lane's cursor past it; what every sink now has leaves the buffer as
        flushed. Returns those per-device counts.

        Shielded: once the flusher delivered a batch, the ack must land even
        if the flusher is being cancelled, or the frames would be sent twice.
        """
        reply: asyncio.Future[dict[str, int]] = self._reply()  # (fails at once once the actor stopped)
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

    async def snapshot(self, oldest: bool = False, lanes: bool = False) -> BufferSnapshot:
        reply: asyncio.Future[BufferSnapshot] = self._reply()
        await self._send(Snapshot(oldest, reply, lanes))
        return await reply


def oldest_age(snapshot: BufferSnapshot, now: float | None = None) -> dict[str, float]:
    now = time.time() if now is None else now
    return {name: max(0.0, now - ts) for name, ts in snapshot.oldest_ts.items()}
