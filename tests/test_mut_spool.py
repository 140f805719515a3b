"""The disk spool on its own, on real files (tests written from mutation testing,
docs/testing-internals.md): what each write, eviction, take, trim, ack and release
leaves in the file, and what the counters say about it.

The oracle is the file itself, read by a connection of the test's own (``on_disk``),
never the spool's counters; expected rows and sizes are worked out by hand (every
frame here has a 16-byte payload, so a row costs 16 + 64 = 80 bytes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import firmware_host.spool as spool_module
from firmware_host._sync import Changes, ReadGate
from firmware_host.aggregator import Aggregator, LaneAccount
from firmware_host.cancel import CancellationToken
from firmware_host.errors import SpoolBusy, SpoolError
from firmware_host.frames import Frame
from firmware_host.spool import Spool, SpoolAccount, SpoolBatch, Spooler, connect, lock_spool, spool_export, spool_stats
from firmware_host.testing import assert_accounting
from firmware_host.transport.fake import FakeOpener, FakePort
from tests.test_spool import Collect, packets
from tests.virtual_time import run_virtual

pytestmark = pytest.mark.timeout(20)

ROW = 80  # a row's cost: 16 payload bytes + 64 overhead (the documented ROW_OVERHEAD)


def frames(device: str, seqs: range, size: int = 16) -> list[Frame]:
    return [Frame(device, s, 1, 1000.0 + s, bytes(size)) for s in seqs]


def on_disk(path: Path) -> list[tuple[int, str, int, int]]:
    """(id, device, seq, size) of every row in the file, oldest first: the oracle."""
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT id, device, seq, size FROM frames ORDER BY id").fetchall()
    finally:
        db.close()


def ids(path: Path) -> list[int]:
    return [r[0] for r in on_disk(path)]


@contextlib.asynccontextmanager
async def opened(path: Path, max_bytes: int = 10**9, **kwargs: Any) -> AsyncIterator[Spool]:
    spool = Spool(str(path), max_bytes=max_bytes, **kwargs)
    await spool.open()
    try:
        yield spool
    finally:
        await spool.close()


def lane(spool: Spool, index: int) -> tuple[str, bool, dict[str, LaneAccount]]:
    view = spool.lane_views()[index]
    return view.name, view.closed, view.devices


def acct(spool: Spool, device: str) -> tuple[int, int, int, int, int]:
    """(received, pending, delivered, dropped, recovered)"""
    a = spool.accounts[device]
    return a.received, a.pending, a.delivered, a.dropped, a.recovered


# -- writing and the byte bound ---------------------------------------------------------


async def test_write_commits_each_row_with_its_size(tmp_path, mocker):
    path = tmp_path / "s.db"
    async with opened(path) as spool:
        await spool.write(frames("a", range(3)))
        text = [Frame("b", 7, None, 5.0, None, "hello"), Frame("b", 8, None, 6.0)]
        await spool.write(text)
        assert on_disk(path) == [
            (1, "a", 0, ROW),
            (2, "a", 1, ROW),
            (3, "a", 2, ROW),
            (4, "b", 7, 5 + 64),  # a text frame costs its text
            (5, "b", 8, 64),  # an empty frame only the overhead
        ]
        assert spool.bytes == 3 * ROW + 69 + 64
        assert acct(spool, "a") == (3, 3, 0, 0, 0) and acct(spool, "b") == (2, 2, 0, 0, 0)
        assert spool.depth == 5 and spool.evictions == 0
        assert spool.summary() == {
            "path": str(path),
            "depth": 5,
            "bytes": 3 * ROW + 69 + 64,
            "max_bytes": 10**9,
            "dropped": 0,
            "recovered": 0,
        }
        assert spool.read_gate is None  # nothing feeds the spool but the spooler
    connect_spy = mocker.spy(spool_module, "connect")
    async with opened(tmp_path / "full.db", sync="full"):
        connect_spy.assert_called_once_with(str(tmp_path / "full.db"), "full")
    with pytest.raises(AssertionError, match=r"^spool is not open"):
        await Spool(str(tmp_path / "never.db"), max_bytes=1).write(frames("d", range(1)))


async def test_a_spool_exactly_full_keeps_everything_and_one_row_more_evicts_the_oldest(tmp_path):
    path = tmp_path / "s.db"
    async with opened(path, max_bytes=10 * ROW) as spool:
        await spool.write(frames("d", range(10)))  # exactly the bound: nothing goes
        assert ids(path) == list(range(1, 11)) and spool.evictions == 0
        await spool.write(frames("d", range(10, 11)))
        assert ids(path) == list(range(2, 12))  # only the oldest row left the file
        assert spool.bytes == 10 * ROW == sum(r[3] for r in on_disk(path))
        assert acct(spool, "d") == (11, 10, 0, 1, 0) and spool.evictions == 1
        assert spool.summary()["dropped"] == 1


async def test_eviction_deletes_the_excess_not_more(tmp_path):
    """The excess is 164 bytes (one row of a 100-byte payload): two 80-byte rows
    free 160 (not enough), three free 240 — exactly three go, oldest first."""
    path = tmp_path / "s.db"
    async with opened(path, max_bytes=10 * ROW) as spool:
        await spool.write(frames("a", range(5)) + frames("b", range(5)))
        await spool.write([Frame("b", 99, 1, 0.0, bytes(100))])
        assert ids(path) == list(range(4, 12))
        assert spool.bytes == 10 * ROW + 164 - 3 * ROW == sum(r[3] for r in on_disk(path))
        assert acct(spool, "a") == (5, 2, 0, 3, 0) and acct(spool, "b") == (6, 6, 0, 0, 0)
        # two rows over the bound: exactly two go (freed == excess stops it)
        await spool.write(frames("c", range(2)))
        assert ids(path) == list(range(6, 14))
        assert acct(spool, "a") == (5, 0, 0, 5, 0) and spool.evictions == 2


async def test_eviction_counts_missed_only_for_the_lanes_that_had_not_read_the_rows(tmp_path):
    path = tmp_path / "s.db"
    async with opened(path, max_bytes=10 * ROW) as spool:
        assert await spool.add_lane("fast") == 0
        assert await spool.add_lane("slow") == 1
        assert await spool.add_lane("gone") == 2
        await spool.close_lane(2)
        await spool.write(frames("d", range(6)))
        batch = await spool.take(4, lane=0)
        assert batch.ids == [1, 2, 3, 4]
        assert await spool.ack(batch) == {}  # "slow" still needs them: nothing leaves
        assert ids(path) == list(range(1, 7))
        await spool.write(frames("d", range(6, 15)))  # 15 rows: the oldest 5 go
        assert ids(path) == list(range(6, 16))
        assert lane(spool, 0) == ("fast", False, {"d": LaneAccount(4, 1, 10)})  # it had 1..4; 5 it missed
        assert lane(spool, 1) == ("slow", False, {"d": LaneAccount(0, 5, 10)})
        assert lane(spool, 2) == ("gone", True, {"d": LaneAccount(0, 15, 0)})  # closed: all missed, once
        assert acct(spool, "d") == (15, 10, 0, 5, 0)


async def test_evictions_are_logged_sparsely(tmp_path, caplog):
    caplog.set_level(logging.WARNING, "firmware_host.spool")
    async with opened(tmp_path / "s.db", max_bytes=ROW) as spool:
        for seq in range(101):  # the first write fits; each later one evicts once
            await spool.write(frames("d", range(seq, seq + 1)))
        assert spool.evictions == 100
    warnings = [r.getMessage() for r in caplog.records if r.name == "firmware_host.spool"]
    assert warnings == [
        f"spool full ({ROW} bytes): dropping the oldest frames (1 evictions so far)",
        f"spool full ({ROW} bytes): dropping the oldest frames (100 evictions so far)",
    ]


@pytest.mark.parametrize("fault", [sqlite3.OperationalError("database or disk is full"), OSError(28, "No space")])
async def test_a_failed_eviction_keeps_the_batch_and_the_next_write_evicts(tmp_path, mocker, caplog, fault):
    """The batch is committed before the eviction: a failing delete must not fail
    the write (the spooler would commit the batch a second time)."""
    path = tmp_path / "s.db"
    real = Spool._evict
    calls = {"n": 0}

    def evict_once_failing(self: Spool) -> list[tuple[str, int]]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise fault
        return real(self)

    mocker.patch.object(Spool, "_evict", evict_once_failing)
    async with opened(path, max_bytes=10 * ROW) as spool:
        await spool.write(frames("d", range(12)))
        assert ids(path) == list(range(1, 13))  # over the bound, for now
        assert acct(spool, "d") == (12, 12, 0, 0, 0) and spool.bytes == 12 * ROW
        assert f"spool over its bound, eviction failed (retried at the next write): {fault}" in [
            r.getMessage() for r in caplog.records
        ]
        await spool.write(frames("d", range(12, 13)))
        assert ids(path) == list(range(4, 14))
        assert acct(spool, "d") == (13, 10, 0, 3, 0) and spool.bytes == 10 * ROW


# -- open, close, the lock ----------------------------------------------------------------


async def test_rows_of_an_earlier_run_are_recovered(tmp_path, caplog):
    caplog.set_level(logging.INFO, "firmware_host.spool")
    path = tmp_path / "s.db"
    async with opened(path) as first:
        await first.write(frames("a", range(3)) + frames("b", range(2)))
    async with opened(path, batch_size=5) as spool:
        assert acct(spool, "a") == (0, 3, 0, 0, 3) and acct(spool, "b") == (0, 2, 0, 0, 2)
        assert spool.bytes == 5 * ROW and spool.depth == 5
        assert spool.summary()["recovered"] == 5
        assert await spool.add_lane("s") == 0
        assert spool.lane_ready(0).is_set()  # a full batch from the last run waits already
        assert lane(spool, 0)[2] == {"a": LaneAccount(0, 0, 3), "b": LaneAccount(0, 0, 2)}
    assert f"spool {path}: 5 frames from an earlier run go out first" in [r.getMessage() for r in caplog.records]


async def test_one_user_at_a_time(tmp_path):
    path = tmp_path / "sub" / "dir" / "s.db"  # the directory is made
    async with opened(path):
        refused = Spool(str(path), max_bytes=1)
        with pytest.raises(SpoolBusy, match="in use by a running runtime"):
            await refused.open()
        await refused.close()  # a refused spool closes cleanly (nothing of it was opened)
    async with opened(path):  # closing released the lock
        pass


async def test_a_foreign_file_is_refused_and_the_lock_released(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not sqlite at all" * 100)
    refused = Spool(str(junk), max_bytes=1)
    with pytest.raises(SpoolError, match="not a usable spool"):
        await refused.open()
    await refused.close()  # and it closes cleanly after
    os.close(lock_spool(str(junk)))  # not left locked by the failed open
    other = tmp_path / "other.db"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE frames (id INTEGER PRIMARY KEY, stuff TEXT)")
    db.commit()
    db.close()
    with pytest.raises(SpoolError, match="not a usable spool"):
        connect(str(other))


@pytest.mark.parametrize(("sync", "level"), [("off", 0), ("normal", 1), ("full", 2)])
def test_connect_sets_wal_and_the_sync_level(tmp_path, sync, level):
    db = connect(str(tmp_path / "s.db"), sync)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("PRAGMA synchronous").fetchone() == (level,)
    finally:
        db.close()


def test_lock_spool_refuses_a_held_lock_and_reraises_other_errors(tmp_path):
    path = str(tmp_path / "s.db")
    fd = lock_spool(path)
    try:
        assert os.stat(path + ".lock").st_mode & 0o777 == 0o600  # the owner's alone
        with pytest.raises(SpoolBusy):
            lock_spool(path)
    finally:
        os.close(fd)
    (tmp_path / "d.db.lock").mkdir()  # the lock file cannot be opened: not "busy"
    with pytest.raises(IsADirectoryError):
        lock_spool(str(tmp_path / "d.db"))


async def test_all_sqlite_work_runs_on_one_spool_thread(tmp_path):
    """sqlite3 refuses a connection used from another thread: concurrent requests
    must queue on the one thread that opened it, named for the spool, which
    ends when the spool closes."""
    before = set(threading.enumerate())
    async with opened(tmp_path / "s.db") as spool:
        await spool.write(frames("d", range(20)))
        batches = await asyncio.gather(*(spool.take(1 + i % 5) for i in range(20)))
        assert all(b.ids == list(range(1, 2 + i % 5)) for i, b in enumerate(batches))
        new = [t for t in threading.enumerate() if t not in before]
        assert [t.name for t in new] == ["spool_0"]
    await asyncio.to_thread(new[0].join, 5)
    assert not new[0].is_alive()


async def test_the_default_changes_is_notified(tmp_path):
    async with opened(tmp_path / "a.db") as spool:
        await spool.add_lane("s")
        await spool.write(frames("d", range(999)))  # its own Changes: no error
        assert not spool.lane_ready(0).is_set()
        await spool.write(frames("d", range(999, 1000)))
        assert spool.lane_ready(0).is_set()  # a batch is 1000 frames unless told otherwise
    changes = Changes()
    async with opened(tmp_path / "b.db", changes=changes) as spool:
        waiter = changes.waiter()
        await spool.write(frames("d", range(1)))
        assert waiter.done()


# -- lanes: take, trim, ack, release --------------------------------------------------------


async def test_take_by_limit_device_upto_and_lane(tmp_path):
    async with opened(tmp_path / "s.db") as spool:
        assert await spool.mark() == 0
        await spool.add_lane("s")
        await spool.write([f for pair in zip(frames("a", range(4)), frames("b", range(4))) for f in pair])
        assert await spool.mark() == 8
        b = await spool.take(3)
        assert (b.ids, [(f.device, f.seq) for f in b.frames]) == ([1, 2, 3], [("a", 0), ("b", 0), ("a", 1)])
        assert (b.first_id, b.last_id, b.device, b.lane) == (1, 3, None, None)
        f = b.frames[0]
        assert (f.type, f.ts, f.payload, f.text) == (1, 1000.0, bytes(16), None)
        await spool.write([Frame("t", 3, None, 9.5, None, "$GPGGA")])
        (t,) = (await spool.take(1, device="t")).frames
        assert (t.device, t.seq, t.type, t.ts, t.payload, t.text) == ("t", 3, None, 9.5, None, "$GPGGA")
        b = await spool.take(10, device="b")
        assert (b.ids, b.first_id, b.last_id, b.device) == ([2, 4, 6, 8], 2, 8, "b")
        b = await spool.take(10, upto=5)
        assert b.ids == [1, 2, 3, 4, 5]
        b = await spool.take(10, device="a", upto=5)
        assert b.ids == [1, 3, 5]
        await spool.ack(await spool.take(3, lane=0))
        b = await spool.take(2, lane=0)
        assert (b.ids, b.lane) == ([4, 5], 0)
        empty = await spool.take(10, device="c")
        assert (empty.ids, empty.frames, empty.first_id, empty.last_id) == ([], [], 0, -1)


async def test_trim_keeps_what_is_still_there_and_not_yet_past_the_lane(tmp_path):
    path = tmp_path / "s.db"
    async with opened(path, max_bytes=6 * ROW) as spool:
        await spool.add_lane("s")
        await spool.add_lane("other")  # holds the rows in the file while lane 0 moves on
        await spool.write(frames("d", range(4)))
        batch = await spool.take(3, lane=0)  # 1, 2, 3
        await spool.write(frames("d", range(4, 7)))  # 7 rows: row 1 is evicted
        t = await spool.trim(batch)
        assert isinstance(t, SpoolBatch)
        assert (t.ids, [f.seq for f in t.frames], t.first_id, t.last_id, t.lane) == ([2, 3], [1, 2], 2, 3, 0)
        again = await spool.take(2, lane=0)  # 2, 3, accepted by the sink this time
        await spool.ack(again)
        gone = await spool.trim(batch)  # all of it is behind the lane's cursor now
        assert (gone.ids, gone.frames, gone.first_id, gone.last_id) == ([], [], 1, 0)
        assert ids(path)[:2] == [2, 3]  # though still in the file, for the other lane
        fresh = await spool.take(3, lane=0)  # 4, 5, 6: the first one is at the cursor
        t = await spool.trim(fresh)
        assert (t.ids, t.first_id, t.last_id) == ([4, 5, 6], 4, 6)
        # no lane: whatever is still in the file
        t = await spool.trim(SpoolBatch(frames("d", range(2, 5)), 3, "d", last_id=5, ids=[3, 4, 5]))
        assert (t.ids, [f.seq for f in t.frames], t.first_id, t.last_id, t.lane) == ([3, 4, 5], [2, 3, 4], 3, 5, None)
        assert t.device == "d"


async def test_a_device_flush_deletes_only_that_devices_rows(tmp_path):
    """An ack with no lane (one device flushed to every sink at once): exactly the
    batch's rows go, the other device's rows between them stay; each lane counts
    delivered what it had not read yet."""
    path = tmp_path / "s.db"
    async with opened(path) as spool:
        await spool.add_lane("x")
        await spool.add_lane("y")
        await spool.write([f for pair in zip(frames("a", range(4)), frames("b", range(4))) for f in pair])
        # lane x has read up to row 3 already (rows stay: y has not)
        assert await spool.ack(await spool.take(3, lane=0)) == {}
        batch = await spool.take(10, device="b")  # rows 2, 4, 6, 8
        assert await spool.ack(batch) == {"b": 4}
        assert [(i, d) for i, d, _, _ in on_disk(path)] == [(1, "a"), (3, "a"), (5, "a"), (7, "a")]
        assert spool.bytes == 4 * ROW
        assert acct(spool, "b") == (4, 0, 4, 0, 0) and acct(spool, "a") == (4, 4, 0, 0, 0)
        # x had row 2 (counted when it acked), 4, 6, 8 are new to it
        assert lane(spool, 0)[2] == {"a": LaneAccount(2, 0, 2), "b": LaneAccount(4, 0, 0)}
        assert lane(spool, 1)[2] == {"a": LaneAccount(0, 0, 4), "b": LaneAccount(4, 0, 0)}
        assert await spool.ack(batch) == {}  # again: nothing left of it


async def test_a_lane_ack_moves_its_cursor_and_rows_leave_once_every_lane_passed(tmp_path):
    path = tmp_path / "s.db"
    async with opened(path, batch_size=2) as spool:
        await spool.add_lane("x")
        await spool.add_lane("y")
        await spool.write(frames("d", range(5)))
        assert spool.lane_ready(0).is_set() and spool.lane_ready(1).is_set()
        assert await spool.ack(await spool.take(4, lane=0)) == {}  # y still needs 1..4
        assert ids(path) == [1, 2, 3, 4, 5]
        assert not spool.lane_ready(0).is_set() and spool.lane_ready(1).is_set()  # x: one row left
        assert await spool.ack(await spool.take(2, lane=1)) == {"d": 2}  # rows both passed: 1, 2
        assert ids(path) == [3, 4, 5] and spool.bytes == 3 * ROW
        # single-row batches, each one row past the cursor
        for expect in ([3], [4]):
            one = await spool.take(1, lane=1)
            assert one.ids == expect
            assert await spool.ack(one) == {"d": 1}
        assert ids(path) == [5]
        assert lane(spool, 0)[2] == {"d": LaneAccount(4, 0, 1)}
        assert lane(spool, 1)[2] == {"d": LaneAccount(4, 0, 1)}
        assert acct(spool, "d") == (5, 1, 4, 0, 0)
        # a lane's batch of one device is not this lane's progress (a device flush's)
        assert await spool.ack(await spool.take(5, device="d", lane=0)) == {}
        assert ids(path) == [5] and lane(spool, 0)[2] == {"d": LaneAccount(4, 0, 1)}


async def test_a_failed_release_is_retried_by_acking_the_batch_again(tmp_path, mocker):
    """The sink accepted the batch; deleting the rows failed. The cursor has
    moved (the sink is not written again); acking the same batch deletes them."""
    path = tmp_path / "s.db"
    real = Spool._release
    calls = {"n": 0}

    def release_once_failing(self: Spool) -> dict[str, int]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise sqlite3.OperationalError("database or disk is full")
        return real(self)

    async with opened(path) as spool:
        await spool.add_lane("s")
        await spool.write(frames("d", range(3)))
        batch = await spool.take(10, lane=0)
        mocker.patch.object(Spool, "_release", release_once_failing)
        with pytest.raises(sqlite3.OperationalError):
            await spool.ack(batch)
        assert ids(path) == [1, 2, 3] and lane(spool, 0)[2] == {"d": LaneAccount(3, 0, 0)}
        assert await spool.ack(batch) == {"d": 3}
        assert ids(path) == [] and spool.bytes == 0
        assert acct(spool, "d") == (3, 0, 3, 0, 0) and lane(spool, 0)[2] == {"d": LaneAccount(3, 0, 0)}


async def test_closing_a_lane_counts_its_pending_missed_and_releases_rows(tmp_path):
    path = tmp_path / "s.db"
    async with opened(path, batch_size=1) as spool:
        await spool.add_lane("x")
        await spool.add_lane("y")
        await spool.write(frames("d", range(4)))
        await spool.ack(await spool.take(3, lane=0))
        assert ids(path) == [1, 2, 3, 4]
        await spool.close_lane(1)  # y's 4 pending: missed; x has passed 1..3, so they leave
        assert ids(path) == [4]
        assert lane(spool, 1) == ("y", True, {"d": LaneAccount(0, 4, 0)})
        assert not spool.lane_ready(1).is_set() and spool.lane_ready(0).is_set()
        assert acct(spool, "d") == (4, 1, 3, 0, 0)
        await spool.close_lane(1)  # twice: nothing more
        assert lane(spool, 1) == ("y", True, {"d": LaneAccount(0, 4, 0)}) and acct(spool, "d") == (4, 1, 3, 0, 0)
        await spool.write(frames("d", range(4, 5)))  # a closed lane misses what comes later
        assert lane(spool, 1)[2] == {"d": LaneAccount(0, 5, 0)}
        await spool.close_lane(0)  # the last lane: no sink reads on, the rows stay for the next run
        assert ids(path) == [4, 5] and acct(spool, "d") == (5, 2, 3, 0, 0)


async def test_a_close_whose_release_fails_leaves_the_rows_for_the_next_release(tmp_path, mocker, caplog):
    path = tmp_path / "s.db"
    async with opened(path) as spool:
        for name in "xyz":
            await spool.add_lane(name)
        await spool.write(frames("d", range(2)))
        await spool.ack(await spool.take(2, lane=0))
        await spool.ack(await spool.take(2, lane=1))
        failing = mocker.patch.object(Spool, "_release", side_effect=OSError(28, "No space left on device"))
        await spool.close_lane(2)
        mocker.stop(failing)
        assert "spool: rows no other sink needs stay for now: [Errno 28] No space left on device" in [
            r.getMessage() for r in caplog.records
        ]
        assert ids(path) == [1, 2] and lane(spool, 2)[1]
        await spool.write(frames("d", range(2, 3)))
        assert await spool.ack(await spool.take(1, lane=0)) == {"d": 2}  # the next release takes them
        assert ids(path) == [3]


async def test_a_lane_added_later_counts_what_left_before_as_missed(tmp_path):
    path = tmp_path / "s.db"
    async with opened(path, max_bytes=3 * ROW) as spool:
        await spool.add_lane("x")
        await spool.write(frames("e", range(1)))
        await spool.ack(await spool.take(1, lane=0))  # e: delivered only
        await spool.write(frames("a", range(4)) + frames("b", range(1)))  # 2 rows of a evicted
        await spool.ack(await spool.take(1, lane=0))  # a's row 3 delivered and gone
        await spool.write(frames("c", range(3)))  # a's last row and b's evicted: b dropped only
        assert await spool.add_lane("late") == 1
        assert lane(spool, 1)[2] == {
            "a": LaneAccount(0, 4, 0),
            "b": LaneAccount(0, 1, 0),
            "c": LaneAccount(0, 0, 3),
            "e": LaneAccount(0, 1, 0),
        }
        assert acct(spool, "a") == (4, 0, 1, 3, 0) and acct(spool, "b") == (1, 0, 0, 1, 0)


def test_transit_is_what_memory_handed_over_less_what_was_committed():
    assert SpoolAccount(received=3).transit(10) == 7


# -- the spool file outside a runtime --------------------------------------------------------


async def test_stats_and_export_of_a_spool_not_in_use(tmp_path):
    path = tmp_path / "s.db"
    async with opened(path) as spool:
        await spool.write(frames("a", range(3)) + frames("b", range(2)))
        with pytest.raises(SpoolBusy):
            spool_stats(str(path))
    began = time.time()
    stats = spool_stats(str(path))
    assert began <= stats["at"] <= time.time()
    assert stats["frames"] == 5 and stats["bytes"] == 5 * ROW
    assert stats["devices"] == {
        "a": {"frames": 3, "bytes": 3 * ROW, "oldest_ts": 1000.0, "newest_ts": 1002.0},
        "b": {"frames": 2, "bytes": 2 * ROW, "oldest_ts": 1000.0, "newest_ts": 1001.0},
    }
    assert stats["file_bytes"] == os.path.getsize(path) and stats["path"] == str(path)

    class Out:
        def __init__(self) -> None:
            self.chunks: list[bytes] = []

        def write(self, data: bytes) -> None:
            self.chunks.append(data)

    import json

    out = Out()
    assert spool_export(str(path), out, chunk=2) == 5
    assert len(out.chunks) == 3  # 2 + 2 + 1
    records = [json.loads(line) for chunk in out.chunks for line in chunk.splitlines()]
    assert [(r["device"], r["seq"]) for r in records] == [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1)]
    out = Out()
    assert spool_export(str(path), out, device="b", chunk=1) == 2
    assert [json.loads(c)["seq"] for c in out.chunks] == [0, 1]
    assert ids(path) == [1, 2, 3, 4, 5]  # left as it was
    async with opened(path) as spool:  # 5001 frames: the default chunk is 5000
        await spool.write(frames("c", range(4996)))
    out = Out()
    assert spool_export(str(path), out) == 5001
    assert [chunk.count(b"\n") for chunk in out.chunks] == [5000, 1]
    for fn in (spool_stats, lambda p: spool_export(p, Out())):
        with pytest.raises(SpoolError, match="no such spool"):
            fn(str(tmp_path / "nope.db"))
    assert not (tmp_path / "nope.db").exists()


# -- the spooler: memory → spool ----------------------------------------------------------


@contextlib.asynccontextmanager
async def memory(batch_size: int, changes: Changes | None = None) -> AsyncIterator[Aggregator]:
    agg = Aggregator(10_000, batch_size=batch_size, changes=changes)
    token = CancellationToken()
    task = asyncio.ensure_future(agg.run(token))
    try:
        yield agg
    finally:
        token.cancel()
        await task


class FailingSpool(Spool):
    """A spool whose commits fail ``failures`` times (then work), noting whether
    the readers' gate was closed during each commit."""

    def __init__(self, path: str, failures: int = 0, fault: Exception | None = None, **kwargs: Any) -> None:
        super().__init__(path, max_bytes=10**9, **kwargs)
        self.failures = failures
        self.fault = fault or sqlite3.OperationalError("disk I/O error")
        self.gate: ReadGate | None = None
        self.gate_closed: list[bool] = []

    async def write(self, frames: Sequence[Frame]) -> None:
        if self.gate is not None:
            self.gate_closed.append(self.gate.closed)
        await super().write(frames)

    def _write(self, frames: Sequence[Frame]) -> list[tuple[str, int]]:
        if self.failures:
            self.failures -= 1
            raise self.fault
        return super()._write(frames)


async def buffered(agg: Aggregator) -> dict[str, tuple[int, int]]:
    """(buffered, flushed) per device, as memory counts them."""
    snap = await agg.handle.snapshot()
    return {d: (a.buffered, a.flushed) for d, a in snap.accounts.items()}


async def test_a_flush_moves_what_memory_holds_batch_by_batch(tmp_path):
    path = tmp_path / "s.db"
    async with memory(3) as agg, opened(path) as spool:
        await agg.handle.offer("a", frames("a", range(5)))
        await agg.handle.offer("b", frames("b", range(2)))
        spooler = Spooler(agg.handle, spool, interval=1, batch_size=3)
        result = await spooler.flush()
        assert (result.flushed, result.devices, result.incomplete) == (7, {"a": 5, "b": 2}, False)
        assert [(d, s) for _, d, s, _ in on_disk(path)] == [("a", i) for i in range(5)] + [("b", 0), ("b", 1)]
        assert await buffered(agg) == {"a": (0, 5), "b": (0, 2)}
        assert spooler.flushes == 1 and spooler.source_error is None
        assert not agg.handle.read_gate.closed


async def test_a_flush_of_one_device_leaves_the_others_in_memory(tmp_path):
    path = tmp_path / "s.db"
    async with memory(100) as agg, opened(path) as spool:
        await agg.handle.offer("a", frames("a", range(3)))
        await agg.handle.offer("b", frames("b", range(2)))
        result = await Spooler(agg.handle, spool, interval=1, batch_size=100).flush("b")
        assert (result.flushed, result.devices) == (2, {"b": 2})
        assert [(d, s) for _, d, s, _ in on_disk(path)] == [("b", 0), ("b", 1)]
        assert await buffered(agg) == {"a": (3, 0), "b": (0, 2)}


async def test_full_only_moves_whole_batches_and_closes_the_gate_while_behind(tmp_path):
    path = tmp_path / "s.db"
    async with memory(3) as agg:
        spool = FailingSpool(str(path))
        await spool.open()
        try:
            spool.gate = agg.handle.read_gate
            await agg.handle.offer("d", frames("d", range(7)))
            spooler = Spooler(agg.handle, spool, interval=1, batch_size=3)
            result = await spooler.flush(full_only=True)
            assert result.flushed == 6 and ids(path) == list(range(1, 7))
            assert spool.gate_closed == [False, True]  # behind by a full batch after the first
            assert not agg.handle.read_gate.closed  # and open again after
            assert await buffered(agg) == {"d": (1, 6)}
            token = CancellationToken()
            await agg.handle.offer("d", frames("d", range(7, 10)))
            token.cancel()
            assert (await spooler.flush(full_only=True, token=token)).flushed == 0  # cancelled: no more
            assert (await spooler.flush(full_only=True)).flushed == 3
            assert (await spooler.flush(full_only=True)).flushed == 0  # one left: not a batch
        finally:
            await spool.close()


@pytest.mark.parametrize("fault", [sqlite3.OperationalError("disk I/O error"), OSError(28, "No space left")])
async def test_a_failed_commit_is_retried_and_commits_each_frame_once(tmp_path, caplog, fault):
    path = tmp_path / "s.db"
    async with memory(100) as agg:
        spool = FailingSpool(str(path), failures=2, fault=fault)
        await spool.open()
        try:
            await agg.handle.offer("d", frames("d", range(5)))
            spooler = Spooler(agg.handle, spool, interval=1, batch_size=100, backoff_initial=0.01)
            result = await spooler.flush()
            assert (result.flushed, result.incomplete) == (5, False)
            assert [s for _, _, s, _ in on_disk(path)] == [0, 1, 2, 3, 4]
            assert spooler.faults.failures == 2 and spooler.source_error is None
            assert "spool write failed" in caplog.text
        finally:
            await spool.close()


async def test_a_commit_failing_past_the_deadline_leaves_the_batch_in_transit(tmp_path):
    path = tmp_path / "s.db"
    async with memory(100) as agg:
        spool = FailingSpool(str(path), failures=1000)
        await spool.open()
        try:
            await agg.handle.offer("d", frames("d", range(4)))
            spooler = Spooler(agg.handle, spool, interval=1, batch_size=100, backoff_initial=0.01)
            result = await spooler.drain(time.monotonic() + 0.1)
            assert (result.flushed, result.incomplete) == (0, True)
            assert spooler.source_error == "OperationalError: disk I/O error"
            assert ids(path) == []
            assert await buffered(agg) == {"d": (0, 4)}  # out of memory ...
            assert spool.account("d").transit(4) == 4  # ... not on disk: in transit
        finally:
            await spool.close()


async def test_a_second_flush_gives_up_at_its_deadline_while_one_holds_the_lock(tmp_path):
    async with memory(100) as agg:
        spool = FailingSpool(str(tmp_path / "s.db"), failures=1000)
        await spool.open()
        try:
            await agg.handle.offer("d", frames("d", range(2)))
            spooler = Spooler(agg.handle, spool, interval=1, batch_size=100, backoff_initial=0.01)
            token = CancellationToken()
            stuck = asyncio.ensure_future(spooler.flush(token=token))
            while spooler.faults.failures == 0:
                await spooler.changes.waiter()
            second = await spooler.flush(deadline=time.monotonic() + 0.05)
            assert (second.flushed, second.incomplete) == (0, True)
            assert spooler.flushes == 0  # no pass was made
            token.cancel()
            assert (await stuck).incomplete and spooler.flushes == 1
        finally:
            await spool.close()


async def test_a_failing_memory_stage_is_a_fault_not_the_end(tmp_path):
    async with opened(tmp_path / "s.db") as spool:
        async with memory(100) as agg:
            spooler = Spooler(agg.handle, spool, interval=1, batch_size=100)
        # the actor has stopped: mark and take fail
        result = await spooler.flush()
        assert result.incomplete and spooler.flushes == 1
        assert spooler.source_error is not None and spooler.source_error.startswith("AggregatorStopped")
        assert (await spooler.flush()).incomplete and spooler.flushes == 2  # the lock was released


async def test_the_spooler_loop_commits_on_an_offer_and_on_a_full_batch(tmp_path):
    """Idle, an offer is committed at once; busy (the next look an interval away,
    60 s here), a full batch is committed at once anyway."""
    changes = Changes()
    async with memory(3, changes) as agg, opened(tmp_path / "s.db", changes=changes) as spool:
        spooler = Spooler(agg.handle, spool, interval=60, batch_size=3, changes=changes)
        token = CancellationToken()
        task = asyncio.ensure_future(spooler.run(token))
        try:

            async def depth(n: int) -> None:
                while spool.depth < n:
                    await asyncio.wait_for(changes.waiter(), 5)

            await depth(0)
            await agg.handle.offer("d", frames("d", range(1)))
            await depth(1)  # idle → at once
            await agg.handle.offer("d", frames("d", range(1, 4)))
            await depth(4)  # a full batch, though the next look is a minute away
            assert not task.done()
        finally:
            token.cancel()
            await asyncio.wait_for(task, 5)


# -- through a runtime --------------------------------------------------------------------


async def test_flushing_one_device_through_a_spool(fh_runtime, tmp_path):
    """flush_interval = 0: only on demand. A flush of device a sends a's frames
    (memory → disk → every sink) and deletes exactly a's rows; b's wait on disk."""
    path = tmp_path / "s.db"
    sinks = [Collect(), Collect()]
    ports = {"a": FakePort([packets(range(30))]), "b": FakePort([packets(range(20))])}
    cfg = {
        "buffer": {"spool": str(path), "flush_interval": 0, "batch_size": 8},
        "shutdown": {"grace": 0.5},
        "devices": [{"name": n, "port": f"fake://{n}", "codec": "fh1"} for n in ports],
    }
    opener = FakeOpener({f"fake://{n}": [p] for n, p in ports.items()})
    async with fh_runtime(cfg, opener=opener, sinks=sinks) as rt:
        await rt.wait_until(lambda s: s["spool"]["depth"] == 50, 10)
        result = await rt.runtime.flush("a", timeout=10)
        assert (result.flushed, result.devices, result.incomplete) == (30, {"a": 30}, False)
        for sink in sinks:
            assert sink.frames == [("a", s) for s in range(30)]
        assert sorted((d, s) for _, d, s, _ in on_disk(path)) == [("b", s) for s in range(20)]
        status = await rt.status()
        assert status["devices"]["a"]["flushed"] == 30 and status["devices"]["b"]["flushed"] == 0
        assert status["spool"]["depth"] == 20 and status["spool"]["bytes"] == 20 * ROW
        assert_accounting(status)


class TimedFailingSpool(FailingSpool):
    """Notes the loop's time of every commit attempt."""

    def __init__(self, path: str, failures: int) -> None:
        super().__init__(path, failures=failures)
        self.attempts: list[float] = []

    async def write(self, frames: Sequence[Frame]) -> None:
        self.attempts.append(round(asyncio.get_running_loop().time(), 6))
        await super().write(frames)


@pytest.mark.parametrize(
    ("backoff", "expected"),
    [
        # the defaults: 0.1 s, doubling, at most 5 s
        ({}, [0, 0.1, 0.3, 0.7, 1.5, 3.1, 6.3, 11.3, 16.3]),
        ({"backoff_initial": 0.5, "backoff_max": 1.5}, [0, 0.5, 1.5, 3.0, 4.5, 6.0, 7.5, 9.0, 10.5]),
    ],
)
def test_failed_commits_are_retried_on_the_backoff_schedule(tmp_path, backoff, expected):
    """Exact attempt times on a virtual clock (tests/virtual_time.py): eight
    failures, then the ninth attempt commits."""

    async def main() -> list[float]:
        async with memory(100) as agg:
            spool = TimedFailingSpool(str(tmp_path / "s.db"), failures=8)
            await spool.open()
            try:
                await agg.handle.offer("d", frames("d", range(3)))
                start = asyncio.get_running_loop().time()
                result = await Spooler(agg.handle, spool, interval=1, batch_size=100, **backoff).flush()
                assert result.flushed == 3 and ids(tmp_path / "s.db") == [1, 2, 3]
                return [round(t - start, 6) for t in spool.attempts]
            finally:
                await spool.close()

    assert run_virtual(main()) == pytest.approx(expected)


# -- the spooler's own loop, on a virtual clock ------------------------------------------


class MemorySpool(Spool):
    """A spool that notes its commits (loop time, seqs) instead of writing a file:
    no SQLite thread, so the spooler's loop runs wholly on the virtual clock.
    ``hold`` (while set to an unset Event) keeps a commit waiting; ``failing``
    makes every commit fail."""

    def __init__(self) -> None:
        super().__init__(":memory:", max_bytes=10**9)  # never opened: no file, no thread
        self.commits: list[tuple[float, list[int]]] = []
        self.hold: asyncio.Event | None = None
        self.failing = False
        self.entered = asyncio.Event()

    async def write(self, frames: Sequence[Frame]) -> None:
        self.entered.set()
        if self.hold is not None:
            await self.hold.wait()
        if self.failing:
            raise sqlite3.OperationalError("disk I/O error")
        self.commits.append((round(asyncio.get_running_loop().time(), 6), [f.seq for f in frames]))
        for f in frames:
            self.account(f.device).received += 1


@pytest.fixture
def loop_clock(mocker):
    """The spooler's ``time.monotonic`` is the (virtual) loop's clock."""
    clock = SimpleNamespace(monotonic=lambda: asyncio.get_running_loop().time(), time=time.time)
    mocker.patch("firmware_host.spool.time", clock)


def spooler_run(
    spool: MemorySpool, script: Any, *, batch_size: int = 100, seed: int = 0, shared: bool = True, **kwargs: Any
) -> tuple[Spooler, float]:
    """Start ``Spooler.run`` on a virtual clock over a memory holding ``seed``
    frames, run ``script(agg, spooler, token)``, then cancel; returns the spooler
    and the loop time at which ``run`` returned. ``shared=False``: the spooler
    does not see memory's changes (only its full batches)."""

    async def main() -> tuple[Spooler, float]:
        changes = Changes()
        async with memory(batch_size, changes) as agg:
            own = changes if shared else Changes()
            spooler = Spooler(agg.handle, spool, batch_size=batch_size, changes=own, **kwargs)
            if seed:
                await agg.handle.offer("d", frames("d", range(seed)))
            token = CancellationToken()
            task = asyncio.ensure_future(spooler.run(token))
            await script(agg, spooler, token)
            token.cancel()
            await asyncio.wait_for(task, 30)
            return spooler, asyncio.get_running_loop().time()

    return run_virtual(main())


async def offer_at(agg: Aggregator, t: float, seqs: range) -> None:
    await asyncio.sleep(t - asyncio.get_running_loop().time())
    await agg.handle.offer("d", frames("d", seqs))


def test_the_spooler_looks_at_once_when_idle_and_once_per_interval_when_busy(loop_clock):
    """What memory holds at the start goes at once; then idle until an offer,
    which goes at once; an offer while busy waits for the look one interval
    after the last one began (unless it makes a full batch); a look that finds
    nothing makes it idle again."""
    spool = MemorySpool()

    async def script(agg: Aggregator, spooler: Spooler, token: CancellationToken) -> None:
        await offer_at(agg, 3.0, range(2, 3))
        await offer_at(agg, 3.2, range(3, 4))
        await offer_at(agg, 10.0, range(4, 5))
        await asyncio.sleep(1)

    spooler, _ = spooler_run(spool, script, interval=0.5, seed=2)
    assert spool.commits == [(0.0, [0, 1]), (3.0, [2]), (3.5, [3]), (10.0, [4])]
    # looks: 0, 0.5 (nothing: idle), 3.0, 3.5, 4.0 (nothing), 10.0, 10.5 (nothing)
    assert spooler.flushes == 7

    # busy, a full batch goes at once, and what is left of it at the next look
    spool = MemorySpool()

    async def busy(agg: Aggregator, spooler: Spooler, token: CancellationToken) -> None:
        await offer_at(agg, 1.0, range(1, 4))  # a full batch and one more; the next look is due at 10
        await asyncio.sleep(15)

    spooler_run(spool, busy, interval=10, batch_size=2, seed=1)
    assert spool.commits == [(0.0, [0]), (1.0, [1, 2]), (10.0, [3])]


def test_a_full_batch_goes_at_once_and_a_cancel_stops_after_the_batch_under_way(loop_clock):
    """Three full batches wait; the first commit is held while the token is
    cancelled: that batch is committed, the rest stay in memory for the drain."""
    spool = MemorySpool()
    spool.hold = asyncio.Event()
    left: dict[str, tuple[int, int]] = {}

    async def script(agg: Aggregator, spooler: Spooler, token: CancellationToken) -> None:
        await asyncio.sleep(1)  # the first commit is waiting on the hold
        token.cancel()
        assert spool.hold is not None
        spool.hold.set()
        await asyncio.sleep(1)
        left.update(await buffered(agg))

    spooler_run(spool, script, interval=100, batch_size=2, seed=7)
    assert spool.commits == [(1.0, [0, 1])]
    assert left == {"d": (5, 2)}


def test_a_commit_retrying_for_ever_ends_with_the_token(loop_clock):
    spool = MemorySpool()
    spool.failing = True

    async def script(agg: Aggregator, spooler: Spooler, token: CancellationToken) -> None:
        await asyncio.sleep(1.05)

    spooler, ended = spooler_run(spool, script, interval=100, seed=3, backoff_initial=0.1)
    assert ended == pytest.approx(1.05) and spool.commits == []
    assert spooler.faults.failures == 4  # at 0, 0.1, 0.3 and 0.7; the cancel cut the wait for 1.5


def test_a_fault_of_a_whole_pass_is_counted_and_the_loop_goes_on(loop_clock, mocker, caplog):
    """flush() catches what its sources raise; should a pass raise all the same,
    the loop counts it and looks again after backoff_max, never ends."""
    real = Spooler.flush
    calls = {"n": 0}

    async def flaky(self: Spooler, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return await real(self, *args, **kwargs)

    mocker.patch.object(Spooler, "flush", flaky)
    spool = MemorySpool()

    async def script(agg: Aggregator, spooler: Spooler, token: CancellationToken) -> None:
        await asyncio.sleep(4)

    spooler, _ = spooler_run(spool, script, interval=100, seed=2, backoff_max=3)
    assert spool.commits == [(3.0, [0, 1])]
    assert spooler.faults.failures == 1
    assert "spool write failed (1 so far): RuntimeError: boom" in caplog.text

    # idle, woken by a full batch (not by a change), the pass commits it and
    # then raises: after the backoff the loop waits again, it does not look
    calls["n"] = 0

    async def commits_then_fails(self: Spooler, *args: Any, **kwargs: Any) -> Any:
        result = await real(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("boom")
        return result

    mocker.patch.object(Spooler, "flush", commits_then_fails)
    spool = MemorySpool()

    async def full_batch(agg: Aggregator, spooler: Spooler, token: CancellationToken) -> None:
        await offer_at(agg, 1.0, range(2))
        await asyncio.sleep(10)

    spooler, _ = spooler_run(spool, full_batch, interval=100, batch_size=2, shared=False, backoff_max=3)
    assert spool.commits == [(1.0, [0, 1])]
    assert spooler.faults.failures == 1 and calls["n"] == 2


def test_a_cancel_during_the_backoff_after_a_fault_ends_the_loop_at_once(loop_clock, mocker):
    async def broken(self: Spooler, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    mocker.patch.object(Spooler, "flush", broken)

    async def script(agg: Aggregator, spooler: Spooler, token: CancellationToken) -> None:
        await asyncio.sleep(1)

    _, ended = spooler_run(MemorySpool(), script, interval=100, backoff_max=3)
    assert ended == 1.0


async def test_a_flush_takes_only_what_memory_held_when_it_began():
    """Frames offered while a flush is under way wait for the next one, so a
    flush under a steady stream ends."""
    spool = MemorySpool()
    spool.hold = asyncio.Event()
    async with memory(2) as agg:
        await agg.handle.offer("d", frames("d", range(3)))
        spooler = Spooler(agg.handle, spool, interval=1, batch_size=2)
        flush = asyncio.ensure_future(spooler.flush())
        await asyncio.wait_for(spool.entered.wait(), 5)
        await agg.handle.offer("d", frames("d", range(3, 5)))
        spool.hold.set()
        result = await asyncio.wait_for(flush, 5)
        assert (result.flushed, [seqs for _, seqs in spool.commits]) == (3, [[0, 1], [2]])
        assert await buffered(agg) == {"d": (2, 3)}
