"""The spool is written at ingest: with ``[buffer] spool``, frames reach the
disk within ``spool_interval`` of being decoded, whatever ``flush_interval``
is (0 included), so kill -9 loses at most that window."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from subprocess import CompletedProcess

import pytest

from firmware_host import FakeOpener, FakePort
from firmware_host.testing import assert_accounting
from tests.conftest import cli, cli_popen, read_jsonl
from tests.test_shutdown import wait_status
from tests.test_spool import Collect, packets
from tests.test_spool import config as spool_config

pytestmark = pytest.mark.timeout(60)


def config(spool: str, **buffer: object) -> dict:
    """tests/test_spool.py's config with ``flush_interval = 0``: on demand only."""
    return spool_config(spool, **{"flush_interval": 0, **buffer})


@pytest.mark.timeout(20)
async def test_spool_depth_grows_without_any_flush(fh_runtime, tmp_path):
    """flush_interval = 0: no flush runs, yet every decoded frame reaches the disk."""
    path = str(tmp_path / "s.db")
    sink = Collect()
    port = FakePort()
    async with fh_runtime(config(path), opener=FakeOpener({"fake://d": [port]}), sinks=[sink]) as rt:
        for start, end in ((0, 30), (30, 80), (80, 250)):  # less than a batch, then past one
            port.feed(packets(range(start, end)))
        status = await rt.wait_until(lambda s: s["spool"]["depth"] == 250, 10)
        assert status["devices"]["d"]["spooled"] == 250 and status["devices"]["d"]["buffered"] == 250
        assert rt.runtime.flusher.flushes == 0 and sink.frames == []  # stage 2 waited, as flush_interval says
        on_disk = sqlite3.connect(path).execute("SELECT seq FROM frames ORDER BY id").fetchall()
        assert [s for (s,) in on_disk] == list(range(250))  # committed (another connection sees it), in order
        assert_accounting(status)


@pytest.mark.timeout(20)
async def test_an_idle_spooler_does_not_wake(fh_runtime, tmp_path):
    """No frames, no work: the spooler awaits a change instead of waking every
    spool_interval (a polling loop would look about 25 times here)."""
    port = FakePort()
    async with fh_runtime(
        config(str(tmp_path / "s.db"), spool_interval=0.02), opener=FakeOpener({"fake://d": [port]}), sinks=[Collect()]
    ) as rt:
        port.feed(packets(range(10)))
        await rt.wait_until(lambda s: s["spool"]["depth"] == 10, 10)
        spooler = rt.runtime.spooler
        await asyncio.sleep(0.1)  # the look after the last commit (due 0.02 s later) finds nothing: idle
        looks = spooler.flushes
        await asyncio.sleep(0.5)  # measuring that nothing happens: there is no event to await
        assert spooler.flushes - looks <= 1  # at most the look after the last commit, if it ran late
        port.feed(packets(range(10, 20)))  # and a change wakes it at once
        await rt.wait_until(lambda s: s["spool"]["depth"] == 20, 10)


@pytest.mark.timeout(20)
async def test_a_busy_spooler_commits_once_per_interval(fh_runtime, tmp_path):
    """After a quiet spell the first frames go to disk at once; what follows
    within spool_interval waits for the next commit (one transaction per
    interval under a stream, not one per read), and is on disk soon after."""
    port = FakePort()
    async with fh_runtime(
        config(str(tmp_path / "s.db"), spool_interval=2), opener=FakeOpener({"fake://d": [port]}), sinks=[Collect()]
    ) as rt:
        port.feed(packets(range(10)))
        await rt.wait_until(lambda s: s["spool"]["depth"] == 10, 1.5)  # at once, not one interval later
        fed = time.monotonic()
        port.feed(packets(range(10, 20)))
        await rt.wait_until(lambda s: s["spool"]["depth"] == 20, 10)
        waited = time.monotonic() - fed
        assert 1.2 <= waited < 6, waited  # the next look is due 2 s after the last one began


#: (a bad [buffer] spool_interval, what its error says)
BAD_INTERVALS = [
    ("0", "expected a finite number > 0, got 0"),
    ("-1", "> 0"),
    ("inf", "finite"),
    ('"fast"', 'got "fast"'),
    ("61", "at most 60 (seconds), got 61"),
]


@pytest.fixture(scope="module")
def bad_interval_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Future[CompletedProcess[str]]]]:
    """``run`` with each bad value, each in its own directory, all started at once:
    they are independent, so the module waits for the slowest, not for their sum."""

    def run(value: str) -> CompletedProcess[str]:
        work = tmp_path_factory.mktemp("interval")
        cfg = work / "c.toml"
        cfg.write_text(f"[buffer]\nspool_interval = {value}\n")
        return cli("run", "-c", str(cfg), "--duration", "0", "--control", str(work / "s"))

    with ThreadPoolExecutor(len(BAD_INTERVALS)) as pool:
        yield {value: pool.submit(run, value) for value, _ in BAD_INTERVALS}


@pytest.mark.parametrize(("value", "fragment"), BAD_INTERVALS)
def test_spool_interval_config_errors(bad_interval_runs, value, fragment):
    result = bad_interval_runs[value].result(timeout=60)
    assert result.returncode == 2, result.stderr
    assert "buffer.spool_interval" in result.stderr and fragment in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.timeout(90)
async def test_kill_9_with_flush_interval_0_loses_nothing_older_than_the_window(fh_ports, short_tmp, tmp_path):
    """A real process, a real pty, real files: frames decoded more than
    spool_interval before a kill -9 are on the disk, and the restart delivers
    every one of them."""
    port = fh_ports.new()
    spool, sink = tmp_path / "spool.db", tmp_path / "out.jsonl"
    sock = str(short_tmp / "c.sock")
    cfg = tmp_path / "run.toml"
    cfg.write_text(
        f'[buffer]\nspool = "{spool}"\nflush_interval = 0\nspool_interval = 0.1\nbatch_size = 200\n'
        f'[[devices]]\nname = "imu0"\nport = "{port.path}"\ncodec = "fh1"\n'
        f'[[sinks]]\ntype = "jsonl"\npath = "{sink}"\n'
    )
    proc = cli_popen("run", "-c", str(cfg), "--control", sock, "-q", cwd=tmp_path)
    total = 5000
    try:
        await wait_status(sock, lambda s: s["devices"]["imu0"]["state"] == "connected")
        for start in range(0, total, 250):
            await port.write(packets(range(start, start + 250)))
        await wait_status(sock, lambda s: s["devices"]["imu0"]["frames"] == total)
        # the window passes: the spool's depth catches up, nobody flushed
        status = await wait_status(sock, lambda s: s["spool"]["depth"] == total, timeout=10)
        assert status["devices"]["imu0"]["flushed"] == 0
        late = range(total, total + 100)  # decoded inside the window (or not yet): may be lost, never invented
        await port.write(packets(late))
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        await asyncio.to_thread(proc.communicate, None, 10)  # reaps it and closes its pipes
    assert proc.returncode == -signal.SIGKILL
    assert not sink.exists() or sink.stat().st_size == 0  # flush_interval = 0: nothing was delivered before

    summary_path = tmp_path / "summary.json"
    restart = tmp_path / "restart.toml"
    restart.write_text(f'[buffer]\nspool = "{spool}"\nflush_interval = 0\n[[sinks]]\ntype = "jsonl"\npath = "{sink}"\n')
    result = await asyncio.to_thread(
        cli,
        "run",
        "-c",
        str(restart),
        "--allow-empty",  # a restart that only drains the spool
        "--duration",
        "0.5",
        "--control",
        sock,
        "--summary",
        str(summary_path),
        "-q",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    delivered = [r["seq"] for r in read_jsonl(sink)]
    assert delivered[:total] == list(range(total))  # every frame older than the window, in order
    assert set(delivered) <= set(range(total + len(late)))  # nothing invented
    assert len(delivered) == len(set(delivered))  # nothing twice
    final = json.loads(summary_path.read_text())
    assert_accounting(final)
    d = final["devices"]["imu0"]
    assert d["recovered"] == len(delivered) == d["flushed"] and d["spooled"] == 0 and d["lost"] == 0
