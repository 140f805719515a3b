"""Spool faults never kill a task: a spool on a real full filesystem (a
small tmpfs) keeps the runtime up, shows the fault in status, and delivers
everything once space returns; a failing delete of delivered rows ("database
or disk is full") is retried, not the end of the flusher."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence

import pytest

from firmware_host import FakeOpener, FakePort, Frame, Sink
from firmware_host.spool import Spool
from firmware_host.testing import assert_accounting
from tests.conftest import fill
from tests.test_spool import Collect, config, packets

pytestmark = pytest.mark.timeout(60)


async def test_a_full_disk_under_the_spool_delays_delivery_and_loses_nothing(fh_runtime, tiny_fs):
    sink = Collect()
    port = FakePort()
    cfg = config(str(tiny_fs / "s.db"), capacity=100_000)
    async with fh_runtime(cfg, opener=FakeOpener({"fake://d": [port]}), sinks=[sink]) as rt:
        port.feed(packets(range(100)))
        await rt.wait_until(lambda s: s["devices"]["d"]["flushed"] == 100, 10)
        filler = fill(tiny_fs)
        for start in range(100, 3100, 100):  # far more than any room sqlite kept for itself
            port.feed(packets(range(start, start + 100)))
        status = await rt.wait_until(lambda s: s["spool"]["last_error"] is not None, 10)
        assert "full" in status["spool"]["last_error"], status["spool"]
        assert_accounting(status)
        assert all(not t.done() for t in (*rt.runtime._lane_tasks, rt.runtime._spooler_task))
        filler.unlink()  # space returns: delivery resumes by itself
        status = await rt.wait_until(lambda s: s["devices"]["d"]["flushed"] == 3100, 30)
        assert status["spool"]["last_error"] is None
    assert sink.frames == [("d", s) for s in range(3100)]


class Gate(Sink):
    """Holds each write until the test opens the gate."""

    name = "gate"

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.released = asyncio.Event()
        self.frames: list[int] = []

    async def write(self, frames: Sequence[Frame]) -> None:
        self.entered.set()
        await self.released.wait()
        self.frames.extend(f.seq for f in frames)


async def test_a_failing_delete_of_delivered_rows_is_retried(fh_runtime, tmp_path, mocker):
    """The fault of the issue: the sinks accepted a batch, deleting its rows
    fails with "database or disk is full". Injected at the spool's thread
    boundary (whether a real full disk fails the delete depends on the room
    sqlite's WAL kept). The flusher retries the delete with backoff (the
    sinks are not written again), status shows it, and shutdown is orderly."""
    sink = Gate()
    port = FakePort([packets(range(100))])
    real_ack = Spool._ack
    failures = {"left": 3}

    def flaky_ack(self: Spool, batch: object) -> object:
        if failures["left"] > 0:
            failures["left"] -= 1
            raise sqlite3.OperationalError("database or disk is full")
        return real_ack(self, batch)

    mocker.patch.object(Spool, "_ack", flaky_ack)
    async with fh_runtime(config(str(tmp_path / "s.db")), opener=FakeOpener({"fake://d": [port]}), sinks=[sink]) as rt:
        await asyncio.wait_for(sink.entered.wait(), 10)
        sink.released.set()
        status = await rt.wait_until(lambda s: s["spool"]["last_error"] is not None, 10)
        assert status["spool"]["last_error"] == "OperationalError: database or disk is full"
        status = await rt.wait_until(lambda s: s["devices"]["d"]["flushed"] == 100, 10)
        assert status["spool"]["last_error"] is None and status["spool"]["depth"] == 0
        summary = await rt.shutdown()
    assert failures["left"] == 0
    assert sink.frames == list(range(100))  # written once: only the delete was retried
    assert summary.lost == 0 and summary.drained


async def test_shutdown_on_a_full_disk_is_orderly_with_a_summary(fh_runtime, tiny_fs):
    """The disk fills and stays full: stop ends within the grace, with a
    summary, no traceback; what did not reach the disk is reported lost."""
    sink = Collect()
    port = FakePort()
    cfg = config(str(tiny_fs / "s.db"), capacity=100_000)
    async with fh_runtime(cfg, opener=FakeOpener({"fake://d": [port]}), sinks=[sink]) as rt:
        port.feed(packets(range(100)))
        await rt.wait_until(lambda s: s["devices"]["d"]["flushed"] == 100, 10)
        fill(tiny_fs)
        for start in range(100, 3100, 100):
            port.feed(packets(range(start, start + 100)))
        await rt.wait_until(lambda s: s["spool"]["last_error"] is not None, 10)
        await rt.wait_frames("d", 3100)
        loop = asyncio.get_running_loop()
        started = loop.time()
        summary = await rt.shutdown()
        assert loop.time() - started < 0.5 + 1.0
    assert_accounting(summary.status)
    d = summary.status["devices"]["d"]
    assert d["frames"] == 3100 and d["lost"] > 0 and not summary.drained
