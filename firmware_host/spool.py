"""The disk spool: a bounded SQLite buffer between memory and the sinks.

With ``[buffer] spool = "path.sqlite"`` the pipeline has two stages:

    aggregator (memory) ──Spooler──► Spool (disk) ──Flusher──► sinks

Stage 1 (``Spooler``) moves batches out of memory into the spool, one SQLite
transaction per batch, within ``spool_interval`` of their decoding whatever
``flush_interval`` is (so kill -9 loses at most that window). Stage 2 is the
ordinary ``Flusher``: the spool offers the same ``BatchSource`` interface
(``take / trim / ack / mark / batch_ready``) as the aggregator, so a frame
leaves the spool only when every sink accepted it.
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
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from firmware_host._sync import Changes
from firmware_host.aggregator import AggregatorHandle, Batch
from firmware_host.cancel import CancellationToken
from firmware_host.errors import SpoolBusy, SpoolError
from firmware_host.flusher import Flusher
from firmware_host.frames import Frame

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
    size INTEGER NOT NULL
)
"""
_SELECT = "SELECT id, device, seq, type, ts, payload, text FROM frames"
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
    in_transit: int = 0  # taken out of memory, not yet committed to disk


@dataclass
class SpoolBatch(Batch):
    ids: list[int] = field(default_factory=list)


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
        self.batch_ready = asyncio.Event()
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="spool")
        self._db: sqlite3.Connection | None = None
        self._lock_fd: int | None = None

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
        if self.depth >= self.batch_size:
            self.batch_ready.set()
        else:
            self.batch_ready.clear()
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

    def begin_transit(self, frames: Sequence[Frame]) -> None:
        for f in frames:
            self.account(f.device).in_transit += 1

    async def write(self, frames: Sequence[Frame]) -> None:
        """Commit ``frames`` (already counted in transit) in one transaction."""
        evicted = await self._run(self._write, frames)
        for f in frames:
            acct = self.account(f.device)
            acct.in_transit -= 1
            acct.pending += 1
        for device, n in evicted:
            acct = self.account(device)
            acct.dropped += n
            acct.pending -= n
        self._update_ready()

    def _write(self, frames: Sequence[Frame]) -> list[tuple[str, int]]:
        db = self._db
        assert db is not None, "spool is not open"
        rows = [(f.device, f.seq, f.type, f.ts, f.payload, f.text, f.size + ROW_OVERHEAD) for f in frames]
        with db:  # one transaction: all of the batch or none of it
            db.executemany(
                "INSERT INTO frames (device, seq, type, ts, payload, text, size) VALUES (?, ?, ?, ?, ?, ?, ?)", rows
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
            db.execute("DELETE FROM frames WHERE id <= ?", (cutoff,))
        self.bytes -= freed
        self.evictions += 1
        if self.evictions == 1 or self.evictions % 100 == 0:  # a full spool evicts per batch: log sparsely
            log.warning(
                "spool full (%d bytes): dropping the oldest frames (%d evictions so far)",
                self.max_bytes,
                self.evictions,
            )
        return [(device, n) for device, n in counts]

    # -- stage 2: the aggregator-like source interface for the Flusher ------------------

    async def take(self, limit: int, device: str | None = None, upto: int | None = None) -> SpoolBatch:
        return await self._run(self._take, limit, device, upto)

    def _take(self, limit: int, device: str | None, upto: int | None) -> SpoolBatch:
        db = self._db
        assert db is not None
        where: list[str] = []
        args: list[object] = []
        if device is not None:
            where.append("device = ?")
            args.append(device)
        if upto is not None:
            where.append("id <= ?")
            args.append(upto)
        sql = _SELECT + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id LIMIT ?"
        rows = db.execute(sql, (*args, limit)).fetchall()
        return _batch(rows, device)

    async def trim(self, batch: Batch) -> SpoolBatch:
        return await self._run(self._trim, batch)

    def _trim(self, batch: Batch) -> SpoolBatch:
        assert isinstance(batch, SpoolBatch)
        live = self._existing(batch.ids)
        keep = [(i, f) for i, f in zip(batch.ids, batch.frames) if i in live]
        return SpoolBatch([f for _, f in keep], keep[0][0] if keep else 0, batch.device, [i for i, _ in keep])

    def _existing(self, ids: Sequence[int]) -> dict[int, tuple[str, int]]:
        if not ids:
            return {}
        db = self._db
        assert db is not None
        wanted = set(ids)
        rows = db.execute("SELECT id, device, size FROM frames WHERE id BETWEEN ? AND ?", (min(ids), max(ids)))
        return {i: (d, s) for i, d, s in rows if i in wanted}

    async def ack(self, batch: Batch) -> dict[str, int]:
        # shielded: once the sinks accepted a batch, its delete must land
        counts = await asyncio.shield(self._run(self._ack, batch))
        for device, n in counts.items():
            acct = self.account(device)
            acct.delivered += n
            acct.pending -= n
        self._update_ready()
        return counts

    def _ack(self, batch: Batch) -> dict[str, int]:
        assert isinstance(batch, SpoolBatch)
        db = self._db
        assert db is not None
        live = self._existing(batch.ids)
        with db:
            db.executemany("DELETE FROM frames WHERE id = ?", ((i,) for i in live))
        counts: dict[str, int] = {}
        for device, size in live.values():
            counts[device] = counts.get(device, 0) + 1
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


def _batch(rows: Iterable[tuple[Any, ...]], device: str | None) -> SpoolBatch:
    ids, frames = [], []
    for row_id, dev, seq, ftype, ts, payload, text in rows:
        ids.append(row_id)
        frames.append(Frame(dev, seq, ftype, ts, payload, text))
    return SpoolBatch(frames, ids[0] if ids else 0, device, ids)


class Spooler(Flusher):
    """Stage 1: the Flusher's locking and delivery, writing to the spool.

    It runs on its own clock, not the flusher's: what memory holds is
    committed at most ``interval`` (``[buffer] spool_interval``) after it was
    decoded, whatever ``flush_interval`` is (0 included), and at once when a
    full batch is waiting; a kill -9 loses at most that window. An idle
    runtime costs nothing: with nothing buffered the spooler awaits the
    ``Changes`` pulse (the aggregator pokes it when an offer lands), no timer.

    A batch is popped out of memory in one actor message (so nothing can be
    evicted between choosing and removing it), counted in transit, then
    committed; a failed commit (disk full, I/O error) is retried with backoff
    while new frames wait in memory under drop-oldest.
    """

    def __init__(
        self,
        aggregator: AggregatorHandle,
        spool: Spool,
        *,
        interval: float,
        batch_size: int,
        changes: Changes | None = None,
    ) -> None:
        super().__init__(aggregator, [], interval=interval, batch_size=batch_size, changes=changes)
        #: the memory stage, typed as itself: the spooler also pops from it
        self._memory = aggregator
        self.spool = spool

    async def run(self, token: CancellationToken) -> None:
        """Commit memory to the spool until ``token`` is cancelled.

        Idle (the last look found nothing): wait for a change, then look at
        once, so a frame after a quiet spell goes to disk without delay.
        Busy: look again one ``interval`` after the last look began, so a
        steady stream costs one transaction per interval, plus one per full
        batch. The final drain is separate (``drain``), as for the Flusher.
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
                        await self._flush_full_batches(token)
                    elif due is not None and time.monotonic() >= due:
                        began = time.monotonic()
                        result = await self.flush(token=token)
                        due = began + self.interval if result.flushed or result.incomplete else None
                except Exception as exc:  # a source fault: retried, never the end of the task
                    self._source_failed(exc)
                    await self._backoff(self.backoff_max, None, token)
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

    async def _deliver(
        self, batch: Batch, *, deadline: float | None = None, token: CancellationToken | None = None
    ) -> dict[str, int] | None:
        frames = await self._memory.pop(batch)
        counts: dict[str, int] = {}
        for f in frames:
            counts[f.device] = counts.get(f.device, 0) + 1
        if not frames:
            return counts
        self.spool.begin_transit(frames)

        async def commit() -> bool:
            await self.spool.write(frames)
            return True

        # a failed commit (disk full, I/O error) is retried like any source fault;
        # if the drain gives up, these stay "in transit", reported lost
        done = await self._retry_source(commit, (sqlite3.Error, OSError), deadline, token, "spool write")
        return None if done is None else counts


# -- the spool file outside a runtime (CLI: spool stats / export) -------------------------


def connect(path: str, sync: str = "normal") -> sqlite3.Connection:
    try:
        db = sqlite3.connect(path)  # `with db:` = one transaction
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={_SYNC[sync]}")
        db.execute(_SCHEMA)
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
