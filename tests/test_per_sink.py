"""Per-sink delivery: each sink consumes the buffer at its own pace.

A stuck, failing or closed sink never delays another: the live sink gets
every frame, the stuck one counts what drop-oldest took before it had it as
``missed``, and for every sink and device ``frames == delivered + missed +
pending`` (the fixture's ``assert_accounting`` checks it at exit, as it does
the device law). Boards are emulated on real ptys; the jsonl sink writes a
real file.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from firmware_host import Frame, Sink, SinkClosed
from firmware_host.testing import assert_accounting

pytestmark = pytest.mark.timeout(30)

FAST = {"backoff_initial": 0.01, "backoff_max": 0.05}


class StuckSink(Sink):
    """A write that never returns until ``release`` (a hung broker, a reader
    that stopped reading); afterwards every write is accepted."""

    name = "stuck"

    def __init__(self) -> None:
        self.released = asyncio.Event()
        self.attempts = 0
        self.seqs: list[int] = []

    async def write(self, frames: Sequence[Frame]) -> None:
        self.attempts += 1
        await self.released.wait()
        self.seqs.extend(f.seq for f in frames)


class LeavingSink(Sink):
    """Takes ``keep`` frames, then its reader is gone (EPIPE): ``SinkClosed``."""

    name = "leaving"

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.seqs: list[int] = []

    async def write(self, frames: Sequence[Frame]) -> None:
        if len(self.seqs) >= self.keep:
            raise SinkClosed("the reader has gone")
        self.seqs.extend(f.seq for f in frames)


def sink_named(status: dict[str, Any], name: str) -> dict[str, Any]:
    [sink] = [s for s in status["sinks"] if s["name"] == name]
    return sink


def jsonl_seqs(path: Path) -> list[int]:
    return [json.loads(line)["seq"] for line in path.read_text().splitlines()]


def config(board: Any, out: Path, **buffer: Any) -> dict[str, Any]:
    return {
        "buffer": {"flush_interval": 0.02, "batch_size": 50, **buffer},
        "shutdown": {"grace": 0.5},
        "devices": [board.config("b", **FAST)],
        "sinks": [{"type": "jsonl", "path": str(out)}],
    }


async def test_a_stuck_sink_beside_a_live_one(fh_board, fh_runtime, tmp_path: Path):
    board, out, stuck = fh_board("fh1"), tmp_path / "out.jsonl", StuckSink()
    stuck.timeout = 0.2
    async with fh_runtime(config(board, out), sinks=[stuck]) as rt:
        await rt.wait_state("b", "connected")
        await board.send_frames(300)
        status = await rt.wait_until(lambda s: sink_named(s, "jsonl")["delivered"] == 300, 15)
        assert jsonl_seqs(out) == list(range(300))  # every frame, in order, while the other hangs
        status = await rt.wait_until(lambda s: sink_named(s, "stuck")["failures"] >= 2, 15)
        hung = sink_named(status, "stuck")
        assert hung["state"] == "retrying" and hung["last_error"] == "timed out after 0.2s"
        assert (hung["delivered"], hung["missed"], hung["pending"]) == (0, 0, 300)
        device = status["devices"]["b"]
        assert (device["flushed"], device["buffered"]) == (0, 300)  # not every sink has them
        assert_accounting(status)
        summary = await rt.shutdown()
    # the drain gave up on the stuck sink at the grace: what it never had is its loss
    final = summary.status
    assert sink_named(final, "stuck")["lost"] == 300 and sink_named(final, "jsonl")["lost"] == 0
    assert final["devices"]["b"]["lost"] == 300
    assert jsonl_seqs(out) == list(range(300))  # nothing sent twice to the live sink


async def test_drop_oldest_counts_missed_for_the_sink_that_lags(fh_board, fh_runtime, tmp_path: Path):
    board, out, stuck = fh_board("fh1"), tmp_path / "out.jsonl", StuckSink()
    stuck.timeout = 0.1
    async with fh_runtime(config(board, out, capacity=100), sinks=[stuck]) as rt:
        await rt.wait_state("b", "connected")
        for n in range(50, 501, 50):  # in steps the live sink keeps up with
            await board.send_frames(50)
            await rt.wait_until(lambda s, n=n: sink_named(s, "jsonl")["delivered"] == n, 15)
        status = await rt.status()
        live, hung, device = sink_named(status, "jsonl"), sink_named(status, "stuck"), status["devices"]["b"]
        assert (live["delivered"], live["missed"], live["pending"]) == (500, 0, 0)
        assert (hung["delivered"], hung["missed"], hung["pending"]) == (0, 400, 100)  # memory stays bounded
        assert (device["flushed"], device["dropped"], device["buffered"]) == (0, 400, 100)
        stuck.released.set()  # the sink comes back: it gets what survived, in order
        status = await rt.wait_until(lambda s: sink_named(s, "stuck")["delivered"] == 100, 15)
        assert stuck.seqs[-100:] == list(range(400, 500))
        assert sink_named(status, "stuck")["state"] == "ok"
        assert (status["devices"]["b"]["flushed"], status["devices"]["b"]["buffered"]) == (100, 0)
        assert_accounting(status)
    assert jsonl_seqs(out) == list(range(500))


async def test_a_sink_that_leaves_stops_holding_the_buffer(fh_board, fh_runtime, tmp_path: Path):
    board, out, leaving = fh_board("fh1"), tmp_path / "out.jsonl", LeavingSink(keep=50)
    async with fh_runtime(config(board, out), sinks=[leaving]) as rt:
        await rt.wait_state("b", "connected")
        await board.send_frames(200)
        status = await rt.wait_until(
            lambda s: sink_named(s, "jsonl")["delivered"] == 200 and sink_named(s, "leaving")["state"] == "closed",
            15,
        )
        gone = sink_named(status, "leaving")
        assert gone["delivered"] == 50 and gone["missed"] == 150 and gone["pending"] == 0
        # the closed sink no longer counts: what the live one has is flushed
        status = await rt.wait_until(lambda s: s["devices"]["b"]["flushed"] == 200, 15)
        assert_accounting(status)
        await board.send_frames(20)  # frames after it left: missed by it, delivered by the other
        status = await rt.wait_until(lambda s: s["devices"]["b"]["flushed"] == 220, 15)
        assert sink_named(status, "leaving")["missed"] == 170
    assert leaving.seqs == list(range(50)) and jsonl_seqs(out) == list(range(220))


async def test_flush_waits_for_every_sink_and_says_what_each_took(fh_board, fh_runtime, tmp_path: Path):
    board, out, stuck = fh_board("fh1"), tmp_path / "out.jsonl", StuckSink()
    stuck.timeout = 5
    async with fh_runtime(config(board, out, flush_interval=0), sinks=[stuck]) as rt:
        await rt.wait_state("b", "connected")
        await board.send_frames(30)
        await rt.wait_frames("b", 30)
        result = await rt.flush(timeout=0.5)  # the stuck sink holds it until the timeout
        assert result.incomplete and result.flushed == 0
        assert result.sinks == [
            {"name": "stuck", "sent": 0, "done": False},
            {"name": "jsonl", "sent": 30, "done": True},
        ]
        stuck.released.set()
        await asyncio.wait_for(rt.wait_until(lambda s: sink_named(s, "stuck")["state"] == "ok", 10), 10)
        result = await rt.flush(timeout=5)
        assert not result.incomplete and result.flushed == 30 and result.devices == {"b": 30}
        assert result.sinks[1] == {"name": "jsonl", "sent": 0, "done": True}  # it had them already
    assert jsonl_seqs(out) == list(range(30)) and sorted(set(stuck.seqs)) == list(range(30))


async def test_per_sink_delivery_from_the_spool(fh_board, fh_runtime, tmp_path: Path):
    board, out, stuck = fh_board("fh1"), tmp_path / "out.jsonl", StuckSink()
    stuck.timeout = 0.1
    cfg = config(board, out, spool=str(tmp_path / "spool.db"), spool_interval=0.02)
    async with fh_runtime(cfg, sinks=[stuck]) as rt:
        await rt.wait_state("b", "connected")
        await board.send_frames(200)
        status = await rt.wait_until(lambda s: sink_named(s, "jsonl")["delivered"] == 200, 15)
        assert jsonl_seqs(out) == list(range(200))
        assert sink_named(status, "stuck")["pending"] == 200
        assert status["spool"]["depth"] == 200  # a row goes when every sink has it
        assert_accounting(status)
        stuck.released.set()
        status = await rt.wait_until(lambda s: s["spool"]["depth"] == 0, 15)
        assert sink_named(status, "stuck")["delivered"] == 200
        assert status["devices"]["b"]["flushed"] == 200
        assert_accounting(status)


class RecordingSink(Sink):
    """Records each write's seqs; prefers ``batch_size`` frames per write."""

    name = "recording"

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.writes: list[list[int]] = []

    async def write(self, frames: Sequence[Frame]) -> None:
        self.writes.append([f.seq for f in frames])


@pytest.mark.parametrize("spooled", [False, True], ids=["memory", "spool"])
async def test_each_sink_writes_at_its_own_batch_size(fh_board, fh_runtime, tmp_path: Path, spooled: bool):
    # the buffer's batch is 1000 and its interval a minute: only a sink's own batch
    # size (the sink's preference, or [[sinks]] batch_size) makes it write before shutdown
    board, out, rec = fh_board("fh1"), tmp_path / "out.jsonl", RecordingSink(3)
    spool = {"spool": str(tmp_path / "spool.db"), "spool_interval": 0.02} if spooled else {}
    cfg = config(board, out, flush_interval=60, batch_size=1000, **spool)
    cfg["sinks"][0]["batch_size"] = 2
    async with fh_runtime(cfg, sinks=[rec]) as rt:
        await rt.wait_state("b", "connected")
        await board.send_frames(7)
        status = await rt.wait_until(
            lambda s: sink_named(s, "recording")["delivered"] == 6 and sink_named(s, "jsonl")["delivered"] == 6, 15
        )
        assert rec.writes == [[0, 1, 2], [3, 4, 5]]
        assert jsonl_seqs(out) == list(range(6))
        assert sink_named(status, "recording")["pending"] == 1 and sink_named(status, "jsonl")["pending"] == 1
        await rt.shutdown()
    assert rec.writes[2:] == [[6]]  # the rest at the drain
    assert jsonl_seqs(out) == list(range(7))


async def test_a_sink_batch_larger_than_the_buffer_writes_a_full_buffer(fh_board, fh_runtime, tmp_path: Path):
    # 500 frames can never wait in a buffer of 10: a full buffer is that sink's full batch
    # (without the cap its lane would be ready for ever with never a batch to take)
    board, out, rec = fh_board("fh1"), tmp_path / "out.jsonl", RecordingSink(500)
    async with fh_runtime(config(board, out, flush_interval=60, batch_size=5, capacity=10), sinks=[rec]) as rt:
        await rt.wait_state("b", "connected")
        await board.send_frames(10)
        await rt.wait_until(lambda s: sink_named(s, "recording")["delivered"] == 10, 15)
        assert rec.writes == [list(range(10))]
