"""A ``tail`` client that stops reading while 48 emulated boards stream (on
ptys, through the real control socket): nothing else slows, and the client
is told what it missed when it reads again (issue 21)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware_host.config import config_from_dict
from firmware_host.config.boards import load_boards
from firmware_host.emulation.fleet import Fleet
from firmware_host.testing import assert_accounting
from tests.conftest import read_jsonl

pytestmark = pytest.mark.timeout(90)

DEVICES = 48
#: frames per second each board sends: 2,400 a second in all, light enough for
#: a loaded two-core machine, enough to fill a stalled client's socket in a second
RATE = 50.0
#: what the stalled client's subscription holds
STALLED_LIMIT = 200


@pytest.fixture
def sockdir() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="fhtf")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def increasing(records: list[dict[str, Any]]) -> bool:
    last: dict[str, int] = {}
    for r in records:
        if r["seq"] <= last.get(r["device"], -1):
            return False
        last[r["device"]] = r["seq"]
    return True


def told_and_more(lines: list[dict[str, Any]]) -> bool:
    """A loss was said, and 50 frames came after it."""
    at = next((i for i, x in enumerate(lines) if "lost" in x), None)
    return at is not None and sum("device" in x for x in lines[at + 1 :]) >= 50


class LiveTail:
    """A tail client that reads all the time, in a task."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.records: list[dict[str, Any]] = []
        self.others: list[dict[str, Any]] = []  # lost and end lines

    async def run(self) -> None:
        while line := await self.reader.readline():
            obj = json.loads(line)
            (self.records if "device" in obj else self.others).append(obj)


async def test_a_tail_that_stops_reading_slows_nothing_and_is_told_what_it_missed(
    tmp_path: Path, sockdir: str, fh_runtime
):
    fleet = Fleet([(load_boards()["env-sensor"], DEVICES)], tmp_path / "ports", rate=RATE, seed=21)
    await fleet.start()
    sink = tmp_path / "frames.jsonl"
    cfg = config_from_dict(
        {"buffer": {"flush_interval": 0.05}, "sinks": [{"type": "jsonl", "path": str(sink)}]}, source="<test>"
    )
    cfg = dataclasses.replace(cfg, devices=fleet.device_configs())
    path = os.path.join(sockdir, "ctl.sock")
    loop = asyncio.get_running_loop()
    try:
        async with fh_runtime(cfg, control_path=path) as rt:
            await rt.wait_until(lambda s: all(d["frames"] > 0 for d in s["devices"].values()), 20)
            # a client that reads everything, and one that will stop reading
            reader, writer = await asyncio.open_unix_connection(path, limit=1 << 20)
            writer.write(b'{"cmd": "tail", "limit": 100000}\n')
            assert json.loads(await reader.readline())["ok"]
            live = LiveTail(reader, writer)
            live_task = asyncio.ensure_future(live.run())
            stalled = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            stalled.setblocking(False)
            await loop.sock_connect(stalled, path)
            await loop.sock_sendall(stalled, b'{"cmd": "tail", "limit": %d}\n' % STALLED_LIMIT)
            buf = b""
            while b"\n" not in buf:  # the reply: it is subscribed
                buf += await asyncio.wait_for(loop.sock_recv(stalled, 4096), 10)
            (sub,) = [s for s in rt.aggregator.tap.subscribers if s.limit == STALLED_LIMIT]

            # it does not read: its socket fills, then its subscription sheds (a
            # pipeline that waited for the client would never get to shedding)
            await rt.wait_until(lambda s: sub.lost > 5 * STALLED_LIMIT, 30)
            before = await rt.status()

            # it reads again: what its socket held, then the loss, then the newest
            lines: list[dict[str, Any]] = []
            while not told_and_more(lines):
                assert len(lines) < 50_000, "no loss was ever said"
                *whole, buf = buf.split(b"\n")
                lines += [json.loads(x) for x in whole]
                if not told_and_more(lines):
                    buf += await asyncio.wait_for(loop.sock_recv(stalled, 1 << 16), 10)
            stalled.close()

            await fleet.stop_sending()
            expected = {d.name: d.expected()["frames"] for d in fleet.devices}
            after = await rt.wait_until(lambda s: all(s["devices"][n]["flushed"] == e for n, e in expected.items()), 20)
    finally:
        await fleet.stop()
    await asyncio.wait_for(live_task, 10)  # the stream ended at the runtime's stop

    # the stalled client: the reply, frames in order, a loss, the newest frames in order
    assert lines[0] == {"ok": True, "tail": {"devices": None, "limit": STALLED_LIMIT}}
    at = next(i for i, x in enumerate(lines) if "lost" in x)
    missed = lines[at]["lost"]
    before_loss, after_loss = lines[1:at], [x for x in lines[at + 1 :] if "device" in x]
    assert missed > 0 and before_loss and after_loss
    assert increasing(before_loss + after_loss)

    # nothing else slowed: the host read every frame sent, the sink has them
    # all, nothing dropped, and the reading client lost nothing
    assert not any(d.inexact for d in fleet.devices)
    # no board ever had to skip frames it was due to send (the loop they share
    # with the runtime never stalled past their lag limit)
    assert sum(d.overrun for d in fleet.devices) == 0
    for name, n in expected.items():
        d = after["devices"][name]
        assert (d["frames"], d["flushed"], d["dropped"]) == (n, n, 0), (name, d)
    assert before["buffer"]["dropped"] == 0
    in_sink = read_jsonl(sink)
    assert len(in_sink) == sum(expected.values())
    assert live.others == [{"end": "stopped"}]
    assert increasing(live.records)
    first = {}
    for r in live.records:
        first.setdefault(r["device"], r["seq"])
    assert len(live.records) == sum(1 for r in in_sink if r["seq"] >= first.get(r["device"], 1 << 62))
    assert rt.summary is not None
    assert_accounting(rt.summary.status)
    with contextlib.suppress(OSError):
        writer.close()
