"""The disk spool: a bounded SQLite buffer between memory and the sinks.

With ``[buffer] spool = "path.sqlite"`` the pipeline has two stages:

    aggregator (memory) ──Spooler──► Spool (disk) ──Flusher──► sinks

Stage 1 (``Spooler``) moves batches out of memory into the spool, one SQLite
transaction per batch, within ``spool_interval`` of their decoding whatever
``flush_interval`` is (so kill -9 loses at most that window). Stage 2 is the
ordinary ``Flusher``: the spool offers the same ``BatchSource`` interface as
the aggregator, one lane (a cursor over row ids) per sink, so each sink
reads the spool at its own pace and a row leaves only when every sink
accepted it (or when the full spool evicts it: ``missed`` for the sinks that
did not have it yet).
Frames committed to the spool survive a crash (kill -9, power loss with
``spool_sync = "full"``); on the next start they are the oldest rows and go
out first, counted per device as ``recovered``. A full spool (more than
``spool_max_bytes``) drops its oldest rows and counts them as ``dropped``:
Telegraf's disk buffer grows without bound, ours does not.

All SQLite work runs on one dedicated thread (sqlite3 connections belong to
the thread that made them, and the event loop must never wait on disk). The
per-device counters change only on the event loop, from what the thread
returns; the byte total only on the thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import fcntl
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from firmware_host._sync import Changes
from firmware_host.aggregator import AggregatorHandle, Batch, LaneAccount, LaneView
from firmware_host.cancel import CancellationToken
from firmware_host.errors import SpoolBusy, SpoolError
from firmware_host.frames import Frame
from firmware_host.retry import SourceFaults, acquire, backoff
from firmware_host.sinklane import Moved
from firmware_host.values.encode import fields_text

log = logging.getLogger("firmware_host.spool")

T = TypeVar("T")

#: what a row costs beyond its payload, for the byte bound (ids, seq, ts, index)
ROW_OVERHEAD = 64
_SCHEMA = """
CREATE TABLE IF NOT EXISTS frames (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: delivery order survives restarts
    device TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type INTEGER,
    ts REAL NOT NULL,
    payload BLOB,
    text TEXT,
    size INTEGER NOT NULL,
    fields TEXT  -- the decoded values as JSON (NULL: none)
)
"""
_SELECT = "SELECT id, device, seq, type, ts, payload, text, fields FROM frames"
#: spool_sync → PRAGMA synchronous. NORMAL in WAL mode survives a process crash
#: (kill -9); only FULL also survives power loss, at an fsync per batch.
_SYNC = {"off": "OFF", "normal": "NORMAL", "full": "FULL"}


@dataclass(slots=True)
class SpoolAccount:
    """Per-device counters of the spool stage."""

    recovered: int = 0  # rows found at open (from an earlier run)
    delivered: int = 0  # rows every sink accepted
    dropped: int = 0  # rows evicted because the spool was full
    pending: int = 0  # rows in the spool now
    received: int = 0  # rows committed from memory in this run

    def transit(self, popped: int) -> int:
        """Frames on their way from memory to the disk (taken out of memory, not
        yet committed), given how many memory has handed over (its ``flushed``,
        from one snapshot). Derived, not counted as the spooler goes, so status
        never sees a frame in neither stage nor in both."""
        return popped - self.received


@dataclass
class SpoolBatch(Batch):
    ids: list[int] = field(default_factory=list)


@dataclass(eq=False)
class _SpoolLane:
    """One sink's cursor over the spool's row ids and its counters, always
    changed under ``Spool._lanes_lock`` (status reads them from the loop): on
    the spool's thread for acks and evictions (the cursor is the thread's
    alone), on the loop for rows just committed."""

    name: str
    ready: asyncio.Event
    cursor: int = 0
    delivered: dict[str, int] = field(default_factory=dict)
    missed: dict[str, int] = field(default_factory=dict)
    pending: dict[str, int] = field(default_factory=dict)
    closed: bool = False
    #: how many pending rows make a full batch for this lane's sink
    batch_size: int = 1000


def _add(into: dict[str, int], device: str, n: int) -> None:
    into[device] = into.get(device, 0) + n


class Spool:
    """The spool file, its counters, and the stage-2 source interface."""

    name = "spool"

    def __init__(
        self, path: str, *, max_bytes: int, sync: str = "normal", batch_size: int = 1000, changes: Changes | None = None
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.sync = sync
        self.batch_size = batch_size
        self.changes = changes or Changes()
        self.accounts: dict[str, SpoolAccount] = {}
        self.bytes = 0
        self.evictions = 0
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="spool")
        self._db: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._lanes: list[_SpoolLane] = []
        self._lanes_lock = threading.Lock()

    @property
    def read_gate(self) -> None:
        """No reader feeds the spool directly (the spooler does): nothing to hold back."""
        return None

    # -- plumbing ---------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def account(self, device: str) -> SpoolAccount:
        acct = self.accounts.get(device)
        if acct is None:
            acct = self.accounts[device] = SpoolAccount()
        return acct

    @property
    def depth(self) -> int:
        return sum(a.pending for a in self.accounts.values())

    def _update_ready(self) -> None:
        with self._lanes_lock:
            for lane in self._lanes:
                if not lane.closed and sum(lane.pending.values()) >= lane.batch_size:
                    lane.ready.set()
                else:
                    lane.ready.clear()
        self.changes.notify()

    # -- open / close -----------------------------------------------------------------

    async def open(self) -> None:
        await self._run(self._open)
        self._update_ready()
        recovered = self.depth
        if recovered:
            log.info("spool %s: %d frames from an earlier run go out first", self.path, recovered)

    def _open(self) -> None:
        self._lock_fd = lock_spool(self.path)
        try:
            self._db = connect(self.path, self.sync)
            for device, count, size in self._db.execute(
                "SELECT device, COUNT(*), SUM(size) FROM frames GROUP BY device"
            ):
                acct = self.account(device)
                acct.recovered = acct.pending = count
                self.bytes += size
        except BaseException:
            self._close()
            raise

    async def close(self) -> None:
        await self._run(self._close)
        self._executor.shutdown(wait=False)

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    # -- stage 1: commit frames taken out of memory ---------------------------------------

    async def write(self, frames: Sequence[Frame]) -> None:
        """Commit ``frames`` (taken out of memory) in one transaction."""
        evicted = await self._run(self._write, frames)
        per_device: dict[str, int] = {}
        for f in frames:
            acct = self.account(f.device)
            acct.received += 1
            acct.pending += 1
            _add(per_device, f.device, 1)
        # the sinks' lanes count the new rows here, on the loop, in the same step
        # as ``received`` (so they leave transit), so a status between the two
        # never counts them twice (the thread's own changes to a lane are balanced)
        with self._lanes_lock:
            for lane in self._lanes:
                for device, n in per_device.items():
                    _add(lane.missed if lane.closed else lane.pending, device, n)
        for device, n in evicted:
            acct = self.account(device)
            acct.dropped += n
            acct.pending -= n
        self._update_ready()

    def _write(self, frames: Sequence[Frame]) -> list[tuple[str, int]]:
        db = self._db
        assert db is not None, "spool is not open"
        rows = []
        for f in frames:
            fields = None if f.fields is None else fields_text(f.fields)
            size = f.size + ROW_OVERHEAD + (0 if fields is None else len(fields))
            rows.append((f.device, f.seq, f.type, f.ts, f.payload, f.text, size, fields))
        with db:  # one transaction: all of the batch or none of it
            db.executemany(
                "INSERT INTO frames (device, seq, type, ts, payload, text, size, fields)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        self.bytes += sum(r[6] for r in rows)
        if self.bytes <= self.max_bytes:
            return []
        try:
            return self._evict()
        except (sqlite3.Error, OSError) as exc:
            # the batch is committed: failing now would make the spooler write
            # it a second time. The spool stays over its bound until the next
            # write evicts (a full disk is the usual cause; deleting needs room)
            log.error("spool over its bound, eviction failed (retried at the next write): %s", exc)
            return []

    def _evict(self) -> list[tuple[str, int]]:
        """Delete the oldest rows until the spool is within its byte bound."""
        db = self._db
        assert db is not None
        excess = self.bytes - self.max_bytes
        cutoff, freed = None, 0
        for row_id, size in db.execute("SELECT id, size FROM frames ORDER BY id"):
            cutoff, freed = row_id, freed + size
            if freed >= excess:
                break
        if cutoff is None:
            return []
        with db:
            counts = db.execute(
                "SELECT device, COUNT(*) FROM frames WHERE id <= ? GROUP BY device", (cutoff,)
            ).fetchall()
            missed = [
                db.execute(
                    "SELECT device, COUNT(*) FROM frames WHERE id <= ? AND id >= ? GROUP BY device",
                    (cutoff, lane.cursor),
                ).fetchall()
                for lane in self._lanes
            ]
            db.execute("DELETE FROM frames WHERE id <= ?", (cutoff,))
        with self._lanes_lock:  # rows a sink had not read yet: missed by it
            for lane, rows in zip(self._lanes, missed, strict=True):
                if not lane.closed:
                    for device, n in rows:
                        _add(lane.missed, device, n)
                        _add(lane.pending, device, -n)
        self.bytes -= freed
        self.evictions += 1
        if self.evictions == 1 or self.evictions % 100 == 0:  # a full spool evicts per batch: log sparsely
            log.warning(
                "spool full (%d bytes): dropping the oldest frames (%d evictions so far)",
                self.max_bytes,
                self.evictions,
            )
        return [(device, n) for device, n in counts]

    # -- stage 2: the aggregator-like source interface for the sinks' lanes ------------

    async def add_lane(self, name: str, batch_size: int | None = None) -> int:
        lane = await self._run(self._add_lane, name, batch_size or self.batch_size)
        self._update_ready()  # rows from an earlier run may make a full batch already
        return lane

    def _add_lane(self, name: str, batch_size: int) -> int:
        """A sink's lane starts at the oldest row; rows that left before it
        existed never reached its sink (counted missed)."""
        db = self._db
        assert db is not None
        lane = _SpoolLane(name, asyncio.Event(), batch_size=batch_size)
        for device, n in db.execute("SELECT device, COUNT(*) FROM frames GROUP BY device"):
            lane.pending[device] = n
        for device, acct in list(self.accounts.items()):
            if acct.delivered or acct.dropped:
                lane.missed[device] = acct.delivered + acct.dropped
        with self._lanes_lock:
            self._lanes.append(lane)
        return len(self._lanes) - 1

    def lane_ready(self, lane: int) -> asyncio.Event:
        return self._lanes[lane].ready

    async def close_lane(self, lane: int) -> None:
        # shielded with its counting: a cancel must not leave rows deleted but counted
        await asyncio.shield(self._counted(self._close_lane, lane))

    async def _counted(self, fn: Callable[..., dict[str, int]], *args: Any) -> dict[str, int]:
        """``fn`` on the spool's thread, then its released rows counted on the loop."""
        counts = await self._run(fn, *args)
        self._released(counts)
        return counts

    def _close_lane(self, index: int) -> dict[str, int]:
        lane = self._lanes[index]
        with self._lanes_lock:
            if lane.closed:
                return {}
            for device, n in lane.pending.items():
                _add(lane.missed, device, n)
            lane.pending.clear()
            lane.closed = True
        try:
            return self._release()
        except (sqlite3.Error, OSError) as exc:  # the rows go with the next release
            log.error("spool: rows no other sink needs stay for now: %s", exc)
            return {}

    def lane_views(self) -> list[LaneView]:
        """Each lane's counters per device (delivered, missed, pending in the spool)."""
        with self._lanes_lock:
            return [
                LaneView(
                    lane.name,
                    lane.closed,
                    {
                        d: LaneAccount(lane.delivered.get(d, 0), lane.missed.get(d, 0), lane.pending.get(d, 0))
                        for d in {*lane.delivered, *lane.missed, *lane.pending}
                    },
                )
                for lane in self._lanes
            ]

    async def take(
        self, limit: int, device: str | None = None, upto: int | None = None, lane: int | None = None
    ) -> SpoolBatch:
        return await self._run(self._take, limit, device, upto, lane)

    def _take(self, limit: int, device: str | None, upto: int | None, lane: int | None) -> SpoolBatch:
        db = self._db
        assert db is not None
        where: list[str] = []
        args: list[object] = []
        if lane is not None:
            where.append("id >= ?")
            args.append(self._lanes[lane].cursor)
        if device is not None:
            where.append("device = ?")
            args.append(device)
        if upto is not None:
            where.append("id <= ?")
            args.append(upto)
        sql = _SELECT + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id LIMIT ?"
        rows = db.execute(sql, (*args, limit)).fetchall()
        return _batch(rows, device, lane)

    async def trim(self, batch: Batch) -> SpoolBatch:
        return await self._run(self._trim, batch)

    def _trim(self, batch: Batch) -> SpoolBatch:
        assert isinstance(batch, SpoolBatch)
        live = self._existing(batch.ids)
        floor = -1 if batch.lane is None else self._lanes[batch.lane].cursor
        keep = [(i, f) for i, f in zip(batch.ids, batch.frames, strict=True) if i in live and i >= floor]
        ids = [i for i, _ in keep]
        first = ids[0] if ids else batch.first_id
        return SpoolBatch([f for _, f in keep], first, batch.device, ids[-1] if ids else first - 1, batch.lane, ids=ids)

    def _existing(self, ids: Sequence[int]) -> dict[int, tuple[str, int]]:
        if not ids:
            return {}
        db = self._db
        assert db is not None
        wanted = set(ids)
        rows = db.execute("SELECT id, device, size FROM frames WHERE id BETWEEN ? AND ?", (min(ids), max(ids)))
        return {i: (d, s) for i, d, s in rows if i in wanted}

    async def ack(self, batch: Batch) -> dict[str, int]:
        # shielded, counting included: once a sink accepted a batch, its cursor
        # (and delete) must land, and the counters must follow the rows
        return await asyncio.shield(self._counted(self._ack, batch))

    def _released(self, counts: dict[str, int]) -> None:
        for device, n in counts.items():
            acct = self.account(device)
            acct.delivered += n
            acct.pending -= n
        self._update_ready()

    def _ack(self, batch: Batch) -> dict[str, int]:
        assert isinstance(batch, SpoolBatch)
        if batch.lane is not None:
            return self._lane_ack(batch)
        db = self._db
        assert db is not None
        live = self._existing(batch.ids)
        with db:
            db.executemany("DELETE FROM frames WHERE id = ?", ((i,) for i in live))
        counts: dict[str, int] = {}
        for device, size in live.values():
            counts[device] = counts.get(device, 0) + 1
            self.bytes -= size
        with self._lanes_lock:  # every sink has them now: delivered to those that had not
            for lane in self._lanes:
                if not lane.closed:
                    for i, (device, _) in live.items():
                        if i >= lane.cursor:
                            _add(lane.delivered, device, 1)
                            _add(lane.pending, device, -1)
        return counts

    def _lane_ack(self, batch: SpoolBatch) -> dict[str, int]:
        assert batch.lane is not None
        lane = self._lanes[batch.lane]
        if lane.closed or batch.device is not None:
            return {}
        if batch.last_id < lane.cursor:  # (a retry after the delete failed: delete again)
            return self._release()
        db = self._db
        assert db is not None
        rows = db.execute(
            "SELECT device, COUNT(*) FROM frames WHERE id >= ? AND id <= ? GROUP BY device",
            (lane.cursor, batch.last_id),
        ).fetchall()
        with self._lanes_lock:
            for device, n in rows:
                _add(lane.delivered, device, n)
                _add(lane.pending, device, -n)
            lane.cursor = batch.last_id + 1
        return self._release()

    def _release(self) -> dict[str, int]:
        """Delete the rows every open lane has passed (flushed)."""
        cursors = [lane.cursor for lane in self._lanes if not lane.closed]
        if not cursors:
            return {}
        db = self._db
        assert db is not None
        upto = min(cursors)
        with db:
            rows = db.execute(
                "SELECT device, COUNT(*), SUM(size) FROM frames WHERE id < ? GROUP BY device", (upto,)
            ).fetchall()
            if rows:
                db.execute("DELETE FROM frames WHERE id < ?", (upto,))
        counts: dict[str, int] = {}
        for device, n, size in rows:
            counts[device] = n
            self.bytes -= size
        return counts

    async def mark(self) -> int:
        return await self._run(self._mark)

    def _mark(self) -> int:
        db = self._db
        assert db is not None
        (top,) = db.execute("SELECT COALESCE(MAX(id), 0) FROM frames").fetchone()
        return int(top)

    def summary(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "depth": self.depth,
            "bytes": self.bytes,
            "max_bytes": self.max_bytes,
            "dropped": sum(a.dropped for a in self.accounts.values()),
            "recovered": sum(a.recovered for a in self.accounts.values()),
        }


def _batch(rows: Iterable[tuple[Any, ...]], device: str | None, lane: int | None = None) -> SpoolBatch:
    ids, frames = [], []
    for row_id, dev, seq, ftype, ts, payload, text, fields in rows:
        ids.append(row_id)
        frames.append(Frame(dev, seq, ftype, ts, payload, text, None if fields is None else json.loads(fields)))
    first = ids[0] if ids else 0
    return SpoolBatch(frames, first, device, ids[-1] if ids else first - 1, lane, ids=ids)


#: what a spooler pass committed to the spool
SpoolResult = Moved


class Spooler:
    """Stage 1: moves what memory holds into the spool, the only consumer of
    the memory buffer (no lanes there: the sinks' lanes are in the spool).

    It runs on its own clock, not the sinks': what memory holds is committed
    at most ``interval`` (``[buffer] spool_interval``) after it was decoded,
    whatever ``flush_interval`` is (0 included), and at once when a full
    batch is waiting; a kill -9 loses at most that window. An idle runtime
    costs nothing: with nothing buffered the spooler awaits the ``Changes``
    pulse (the aggregator pokes it when an offer lands), no timer.

    A batch is popped out of memory in one actor message (so nothing can be
    evicted between choosing and removing it), then committed; a failed
    commit (disk full, I/O error) is retried with backoff while new frames
    wait in memory under drop-oldest. One pass runs at a
    time (a lock), so an on-demand flush racing the loop neither loses nor
    duplicates a frame.
    """

    def __init__(
        self,
        aggregator: AggregatorHandle,
        spool: Spool,
        *,
        interval: float,
        batch_size: int,
        changes: Changes | None = None,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
    ) -> None:
        self._memory = aggregator
        self.spool = spool
        self.interval = interval
        self.batch_size = batch_size
        self.changes = changes or Changes()
        self.backoff_max = backoff_max
        self.faults = SourceFaults(
            "spool write", self.changes, backoff_initial=backoff_initial, backoff_max=backoff_max
        )
        self._lock = asyncio.Lock()
        #: passes made (the loop's looks, on-demand flushes, the drain)
        self.flushes = 0

    @property
    def source_error(self) -> str | None:
        return self.faults.error

    async def run(self, token: CancellationToken) -> None:
        """Commit memory to the spool until ``token`` is cancelled.

        Idle (the last look found nothing): wait for a change, then look at
        once, so a frame after a quiet spell goes to disk without delay.
        Busy: look again one ``interval`` after the last look began, so a
        steady stream costs one transaction per interval, plus one per full
        batch. The final drain is separate (``drain``).
        """
        ready = self._memory.batch_ready
        stop = asyncio.ensure_future(token.cancelled())
        due: float | None = 0.0  # when the next look is due; None: idle until a change
        try:
            while not token.is_cancelled:
                # taken before looking, so a change during the look is not missed
                changed = self.changes.waiter()
                try:
                    if ready.is_set():
                        await self.flush(token=token, full_only=True)
                    elif due is not None and time.monotonic() >= due:
                        began = time.monotonic()
                        result = await self.flush(token=token)
                        due = began + self.interval if result.flushed or result.incomplete else None
                except Exception as exc:  # a source fault: retried, never the end of the task
                    self.faults.failed(exc)
                    await backoff(self.backoff_max, None, token)
                    continue
                ready_wait = asyncio.ensure_future(ready.wait())
                # the shared pulse is awaited, never cancelled (other observers hold it)
                waits: set[asyncio.Future[Any]] = {ready_wait, stop}
                timeout = None
                if due is None:
                    waits.add(changed)
                else:
                    timeout = max(0.0, due - time.monotonic())
                await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                ready_wait.cancel()
                if due is None and changed.done():
                    due = time.monotonic()  # something changed (perhaps an offer): look now
        finally:
            stop.cancel()

    async def flush(
        self,
        device: str | None = None,
        *,
        deadline: float | None = None,
        token: CancellationToken | None = None,
        full_only: bool = False,
    ) -> SpoolResult:
        """Commit what memory holds now (of ``device``; ``full_only``: whole
        batches only) to the spool."""
        result = SpoolResult()
        if not await acquire(self._lock, deadline):
            result.incomplete = True
            return result
        memory = self._memory
        gate = memory.read_gate
        try:
            upto = await memory.mark()
            while not (full_only and (not memory.batch_ready.is_set() or (token and token.is_cancelled))):
                batch = await memory.take(self.batch_size, device, upto)
                if not batch.frames or (full_only and len(batch.frames) < self.batch_size):
                    break
                counts = await self._commit(batch, deadline, token)
                if counts is None:
                    result.incomplete = True
                    break
                result.add(counts)
                if memory.batch_ready.is_set():
                    gate.close()  # behind by a full batch: readers wait (see ReadGate)
        except Exception as exc:  # the memory stage failed (take, mark): what is left stays buffered
            self.faults.failed(exc)
            result.incomplete = True
        finally:
            gate.open()
            self._lock.release()
        self.flushes += 1
        return result

    async def drain(self, deadline: float) -> SpoolResult:
        return await self.flush(deadline=deadline)

    async def _commit(
        self, batch: Batch, deadline: float | None, token: CancellationToken | None
    ) -> dict[str, int] | None:
        frames = await self._memory.pop(batch)
        counts: dict[str, int] = {}
        for f in frames:
            counts[f.device] = counts.get(f.device, 0) + 1
        if not frames:
            return counts

        async def commit() -> bool:
            await self.spool.write(frames)
            return True

        # a failed commit (disk full, I/O error) is retried like any source fault;
        # if the drain gives up, these stay "in transit", reported lost
        done = await self.faults.retry(commit, (sqlite3.Error, OSError), deadline, token)
        return None if done is None else counts


# -- the spool file outside a runtime (CLI: spool stats / export) -------------------------


def connect(path: str, sync: str = "normal") -> sqlite3.Connection:
    try:
        db = sqlite3.connect(path)  # `with db:` = one transaction
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={_SYNC[sync]}")
        db.execute(_SCHEMA)
        # a spool written before decoded values existed gains their column (its rows: none)
        if "fields" not in {row[1] for row in db.execute("PRAGMA table_info(frames)")}:
            db.execute("ALTER TABLE frames ADD COLUMN fields TEXT")
        db.execute(_SELECT + " LIMIT 0")  # an old or foreign table fails here, not mid-run
    except sqlite3.DatabaseError as exc:
        raise SpoolError(f"{path}: not a usable spool ({exc})") from None
    return db


def lock_spool(path: str) -> int:
    """Hold ``PATH.lock`` for as long as the spool is open (one user at a time)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise SpoolBusy(
                f"{path} is in use by a running runtime (stop it first, or use `firmware-host status`)"
            ) from None
        raise
    return fd


def spool_stats(path: str) -> dict[str, Any]:
    """Counts per device and the byte total of a spool no runtime is using."""
    if not os.path.exists(path):
        raise SpoolError(f"{path}: no such spool")
    fd = lock_spool(path)
    try:
        db = connect(path)
        try:
            devices = {
                d: {"frames": n, "bytes": b, "oldest_ts": lo, "newest_ts": hi}
                for d, n, b, lo, hi in db.execute(
                    "SELECT device, COUNT(*), SUM(size), MIN(ts), MAX(ts) FROM frames GROUP BY device"
                )
            }
        finally:
            db.close()
    finally:
        os.close(fd)
    return {
        "path": path,
        "frames": sum(d["frames"] for d in devices.values()),
        "bytes": sum(d["bytes"] for d in devices.values()),
        "file_bytes": os.path.getsize(path),
        "devices": devices,
        "at": time.time(),
    }


def spool_export(path: str, out: Any, device: str | None = None, chunk: int = 5000) -> int:
    """Write the spooled frames as jsonl records (oldest first) to the binary
    stream ``out``; the spool is left as it is. Returns the frame count."""
    from firmware_host.sinks.jsonl import encode_records

    if not os.path.exists(path):
        raise SpoolError(f"{path}: no such spool")
    fd = lock_spool(path)
    count = 0
    try:
        db = connect(path)
        try:
            last = 0
            while True:
                sql = _SELECT + " WHERE id > ?" + (" AND device = ?" if device else "") + " ORDER BY id LIMIT ?"
                args = (last, device, chunk) if device else (last, chunk)
                rows = db.execute(sql, args).fetchall()
                if not rows:
                    break
                batch = _batch(rows, device)
                out.write(encode_records(batch.frames))
                count += len(rows)
                last = batch.ids[-1]
        finally:
            db.close()
    finally:
        os.close(fd)
    return count
