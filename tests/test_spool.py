"""Issue 8: the bounded disk spool. Frames wait on disk until every sink
accepted them, survive a restart (and kill -9) and go out first; a full spool
drops its oldest frames and counts them."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
from collections.abc import Sequence

import pytest

from firmware_host import FakeOpener, FakePort, Frame, Sink, encode_packet
from firmware_host.testing import assert_accounting
from tests.conftest import cli, cli_popen, kill_jsonl_path, read_jsonl

pytestmark = pytest.mark.timeout(60)


class Collect(Sink):
    name = "collect"

    def __init__(self, down: bool = False) -> None:
        self.down = down
        self.frames: list[tuple[str, int]] = []

    async def write(self, frames: Sequence[Frame]) -> None:
        if self.down:
            raise ConnectionError("down")
        self.frames.extend((f.device, f.seq) for f in frames)


def packets(seqs: range) -> bytes:
    return b"".join(encode_packet(0, s, bytes(16)) for s in seqs)


def config(spool: str, **buffer: object) -> dict:
    return {
        "buffer": {"spool": spool, "flush_interval": 0.02, "batch_size": 100, **buffer},
        "shutdown": {"grace": 0.5},
        "devices": [{"name": "d", "port": "fake://d", "codec": "fh1"}],
    }


async def test_frames_pass_through_the_spool(fh_runtime, tmp_path):
    sink = Collect()
    port = FakePort([packets(range(1000))])
    async with fh_runtime(config(str(tmp_path / "s.db")), opener=FakeOpener({"fake://d": [port]}), sinks=[sink]) as rt:
        status = await rt.wait_until(lambda s: s["devices"]["d"]["flushed"] == 1000, 20)
        assert status["spool"]["depth"] == 0 and status["devices"]["d"]["spooled"] == 0
    assert sink.frames == [("d", s) for s in range(1000)]


async def test_spool_outlives_memory_and_a_restart(fh_runtime, tmp_path):
    """A sink outage longer than memory lasts: frames pile up on disk, not
    dropped; after a restart they are recovered and delivered first."""
    path = str(tmp_path / "s.db")
    down = Collect(down=True)
    port = FakePort()
    # commits every 10 ms (not 0.1 s): the test waits for each of its 20 writes to commit
    cfg = config(path, capacity=100, spool_interval=0.01)
    async with fh_runtime(cfg, opener=FakeOpener({"fake://d": [port]}), sinks=[down]) as rt:
        for start in range(0, 2000, 100):  # paced like a device: each read reaches the disk
            port.feed(packets(range(start, start + 100)))
            await rt.wait_counter("d", "spooled", start + 100)
        status = await rt.status()
        assert status["devices"]["d"]["dropped"] == 0  # memory holds 100; the disk took the rest
        summary = await rt.shutdown()
    d = summary.status["devices"]["d"]
    assert (d["frames"], d["flushed"], d["buffered"], d["spooled"], d["lost"]) == (2000, 0, 2000, 2000, 0)

    up = Collect()
    port2 = FakePort([packets(range(2000, 2100))])
    async with fh_runtime(config(path), opener=FakeOpener({"fake://d": [port2]}), sinks=[up]) as rt:
        status = await rt.wait_until(lambda s: s["devices"]["d"]["flushed"] == 2100, 20)
        assert status["devices"]["d"]["recovered"] == 2000
        assert status["devices"]["d"]["frames"] == 2100  # recovered frames count in this run's law
    assert up.frames == [("d", s) for s in range(2100)]  # the spooled ones first, in order


async def test_full_spool_drops_oldest_and_counts(fh_runtime, tmp_path):
    path = str(tmp_path / "s.db")
    port = FakePort()
    # each row costs 16 payload bytes + 64 overhead = 80: 8000 bytes hold 100 frames
    async with fh_runtime(
        # commits every 10 ms (not 0.1 s): the test waits for each of its 20 writes to commit
        config(path, capacity=50, spool_max_bytes=8000, spool_interval=0.01),
        opener=FakeOpener({"fake://d": [port]}),
        sinks=[Collect(down=True)],
    ) as rt:
        for start in range(0, 1000, 50):  # paced: each read moves on to the disk
            port.feed(packets(range(start, start + 50)))
            n = start + 50
            await rt.wait_until(lambda s, n=n: s["devices"]["d"]["spooled"] + s["spool"]["dropped"] == n, 10)
            # after every write, the file holds the newest frames that fit, no fewer
            assert seqs_on_disk(path) == list(range(max(0, n - 100), n))
        # paced, memory never dropped (or the wait above could not end); each write
        # evicts exactly the excess, in whole 80-byte rows: 100 stay, 900 go
        status = await rt.status()
        assert status["spool"]["depth"] == 100 and status["spool"]["dropped"] == 900
        assert status["spool"]["bytes"] == 8000
        assert_accounting(status)
        summary = await rt.shutdown()
    d = summary.status["devices"]["d"]
    assert (d["dropped"], d["flushed"], d["spooled"]) == (900, 0, 100)
    # the file itself: the evicted rows are gone, not only counted
    assert seqs_on_disk(path) == list(range(900, 1000))  # the newest survive
    assert seqs_on_disk(path, "SUM(size)") == [8000]


def seqs_on_disk(path: str, what: str = "seq") -> list[int]:
    """``what`` of every row in the spool file, oldest first, read by a connection
    of the test's own (the oracle: not the spool's counters)."""
    db = sqlite3.connect(path)
    try:
        return [v for (v,) in db.execute(f"SELECT {what} FROM frames ORDER BY id")]
    finally:
        db.close()


async def test_kill_9_under_load_then_restart_delivers_every_committed_frame(fh_ports, short_tmp, tmp_path):
    port = fh_ports.new()
    spool, sink = tmp_path / "spool.db", tmp_path / "out.jsonl"
    sock = str(short_tmp / "c.sock")
    cfg = tmp_path / "run.toml"
    # two sinks: the real one is written under load when the kill lands; the
    # second (every write fails: see kill_jsonl_path) keeps each batch on the
    # disk, so the spool certainly holds frames at the kill, whatever the timing
    dead = tmp_path / "dead.jsonl"
    cfg.write_text(
        f'[buffer]\nspool = "{spool}"\nflush_interval = 0.05\nbatch_size = 200\n'
        f'[[devices]]\nname = "imu0"\nport = "{port.path}"\ncodec = "fh1"\n'
        f'[[sinks]]\ntype = "jsonl"\npath = "{sink}"\n'
        f'[[sinks]]\ntype = "jsonl"\npath = "{dead}"\n'
    )
    proc = cli_popen("run", "-c", str(cfg), "--control", sock, "-q", cwd=tmp_path)
    from tests.test_shutdown import wait_status

    try:
        await wait_status(sock, lambda s: s["devices"]["imu0"]["state"] == "connected")
        kill_jsonl_path(dead)
        for start in range(0, 20_000, 500):  # keep it busy: frames are moving through both stages
            await port.write(packets(range(start, start + 500)))
        await wait_status(sock, lambda s: s["devices"]["imu0"]["frames"] >= 10_000)
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        await asyncio.to_thread(proc.communicate, None, 10)  # reaps it and closes its pipes
    # what was committed at the moment of the kill (WAL included)
    committed = {s for (s,) in sqlite3.connect(spool).execute("SELECT seq FROM frames")}
    before = {r["seq"] for r in read_jsonl_tolerant(sink)}
    assert len(committed) >= 10_000 and before  # frames on the disk, and delivery under way
    print(f"at kill: {len(committed)} frames committed in the spool, {len(before)} already in the sink")

    summary_path = tmp_path / "summary.json"
    empty = tmp_path / "restart.toml"
    empty.write_text(
        f'[buffer]\nspool = "{spool}"\nflush_interval = 0.05\n[[sinks]]\ntype = "jsonl"\npath = "{sink}"\n'
    )
    result = await asyncio.to_thread(
        cli,
        "run",
        "-c",
        str(empty),
        "--allow-empty",  # a restart that only drains the spool
        "--duration",
        "1",
        "--control",
        sock,
        "--summary",
        str(summary_path),
        "-q",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    after = [r["seq"] for r in read_jsonl(sink)]  # the restart repaired any torn last line
    assert committed <= set(after)  # every committed frame reached the sink
    assert before <= set(after)
    final = json.loads(summary_path.read_text())
    assert_accounting(final)
    d = final["devices"]["imu0"]
    assert d["recovered"] == len(committed) == d["flushed"] and d["spooled"] == 0
    assert sorted(set(after)) == sorted(committed | before)  # nothing invented either


def read_jsonl_tolerant(path: os.PathLike[str]) -> list[dict]:
    """The sink file as left by kill -9: the last line may be torn."""
    if not os.path.exists(path):
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return out


async def test_spool_cli_stats_export_and_busy(fh_runtime, tmp_path):
    path = str(tmp_path / "s.db")
    port = FakePort([packets(range(300))])
    async with fh_runtime(config(path), opener=FakeOpener({"fake://d": [port]}), sinks=[Collect(down=True)]) as rt:
        await rt.wait_until(lambda s: s["devices"]["d"]["spooled"] == 300, 20)
        busy = await asyncio.to_thread(cli, "spool", "stats", path)
        assert busy.returncode == 2 and "in use" in busy.stderr and "Traceback" not in busy.stderr
    stats = cli("spool", "stats", path, "--json")
    assert stats.returncode == 0, stats.stderr
    data = json.loads(stats.stdout)
    assert data["frames"] == 300 and data["devices"]["d"]["frames"] == 300
    out = tmp_path / "export.jsonl"
    exported = cli("spool", "export", path, "-o", str(out))
    assert exported.returncode == 0 and "exported 300 frames" in exported.stderr
    assert [r["seq"] for r in read_jsonl(out)] == list(range(300))
    assert json.loads(cli("spool", "stats", path, "--json").stdout)["frames"] == 300  # export leaves it
    missing = cli("spool", "stats", str(tmp_path / "nope.db"))
    assert missing.returncode == 2 and "no such spool" in missing.stderr


def test_spool_config_errors(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[buffer]\nspool_sync = "sometimes"\n')
    result = cli("run", "-c", str(cfg), "--duration", "0", "--control", str(tmp_path / "s"))
    assert result.returncode == 2 and "buffer.spool_sync" in result.stderr
    notdb = tmp_path / "not.db"
    notdb.write_bytes(b"this is not sqlite" * 100)
    cfg.write_text(f'[buffer]\nspool = "{notdb}"\n[[sinks]]\ntype = "jsonl"\npath = "{tmp_path / "o.jsonl"}"\n')
    result = cli("run", "-c", str(cfg), "--allow-empty", "--duration", "0", "--control", str(tmp_path / "s"))
    assert result.returncode == 1 and "not a usable spool" in result.stderr
    assert "Traceback" not in result.stderr
