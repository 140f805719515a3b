"""Issue 2: SIGTERM to a real `firmware-host run` holding 40k buffered frames
with flushing disabled: all 40k reach the sink and it exits 0. A second
signal exits at once and reports what was lost."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import pytest

from firmware_host import encode_packet
from firmware_host.testing import assert_accounting
from tests.conftest import cli_popen, kill_jsonl_path, read_jsonl

pytestmark = pytest.mark.timeout(90)


async def wait_status(sock: str, predicate, timeout: float = 30.0) -> dict:
    """Across processes there is no event to await: ask the control socket,
    with a bounded number of tries."""
    from firmware_host.control.client import request
    from firmware_host.errors import ControlError

    deadline = time.monotonic() + timeout
    last: dict | None = None
    while time.monotonic() < deadline:
        try:
            last = await request(sock, {"cmd": "status"}, timeout=5)
            if predicate(last):
                return last
        except ControlError:
            pass  # not listening yet
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition not reached; last status: {last}")


def write_config(path, port, sink, *, grace=30.0, sink_type="jsonl"):
    path.write_text(f"""
[buffer]
capacity = 50000
flush_interval = 0
batch_size = 1000

[shutdown]
grace = {grace}

[[devices]]
name = "imu0"
port = "{port}"
codec = "fh1"

[[sinks]]
type = "{sink_type}"
path = "{sink}"
""")


async def test_sigterm_drains_40k_buffered_frames(fh_ports, short_tmp, tmp_path):
    port = fh_ports.new()
    sock, sink, summary_path = str(short_tmp / "c.sock"), tmp_path / "out.jsonl", tmp_path / "summary.json"
    cfg = tmp_path / "run.toml"
    write_config(cfg, port.path, sink)
    proc = cli_popen("run", "-c", str(cfg), "--control", sock, "--summary", str(summary_path), "-q", cwd=tmp_path)
    try:
        await wait_status(sock, lambda s: s["devices"]["imu0"]["state"] == "connected")
        payload = bytes(range(64))
        for start in range(0, 40_000, 2000):
            await port.write(b"".join(encode_packet(0, s, payload) for s in range(start, start + 2000)))
        status = await wait_status(sock, lambda s: s["devices"]["imu0"]["frames"] == 40_000)
        assert status["devices"]["imu0"]["buffered"] == 40_000  # nothing flushed before the signal
        proc.send_signal(signal.SIGTERM)
        _out, err = await asyncio.to_thread(proc.communicate, timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert [r["seq"] for r in read_jsonl(sink)] == list(range(40_000))
    final = json.loads(summary_path.read_text())
    assert_accounting(final)
    d = final["devices"]["imu0"]
    assert (d["frames"], d["flushed"], d["buffered"], d["lost"]) == (40_000, 40_000, 0, 0)


async def test_second_signal_exits_at_once_reporting_lost(fh_ports, short_tmp, tmp_path):
    """A sink that never accepts (every write fails: see kill_jsonl_path) and
    a long grace: the first SIGTERM starts a drain that cannot finish, the
    second ends it at once and the buffered frames are reported lost."""
    port = fh_ports.new()
    sock, summary_path, sink = str(short_tmp / "c.sock"), tmp_path / "summary.json", tmp_path / "out.jsonl"
    cfg = tmp_path / "run.toml"
    write_config(cfg, port.path, sink, grace=60.0)
    proc = cli_popen("run", "-c", str(cfg), "--control", sock, "--summary", str(summary_path), "-q", cwd=tmp_path)
    try:
        await wait_status(sock, lambda s: s["devices"]["imu0"]["state"] == "connected")
        kill_jsonl_path(sink)
        await port.write(b"".join(encode_packet(0, s, b"x") for s in range(500)))
        await wait_status(sock, lambda s: s["devices"]["imu0"]["frames"] == 500)
        proc.send_signal(signal.SIGTERM)
        # the readers have stopped and the drain is retrying the dead sink
        await wait_status(sock, lambda s: s["devices"]["imu0"]["state"] == "closed" and s["sinks"][0]["failures"] > 0)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _out, err = await asyncio.to_thread(proc.communicate, timeout=30)
        assert time.monotonic() - started < 10  # not the 60 s grace
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1
    assert "500 frames lost" in err and "Traceback" not in err
    final = json.loads(summary_path.read_text())
    assert_accounting(final)
    assert final["devices"]["imu0"]["lost"] == 500


async def test_frames_the_tty_holds_at_stop_reach_the_sink(fh_ports, fh_runtime, fh_jsonl):
    """A reader waits up to one read window between reads of a busy port; what
    arrived in that window when the runtime stops is read as the port closes,
    decoded and drained, not dropped with the file descriptor."""
    from tests.test_transport import tty_holds_input

    vp = fh_ports.new("d")
    config = {
        "serial": {"read_coalesce": 0.5},
        "buffer": {"flush_interval": 0.05},
        "devices": [{"name": "d", "port": vp.path, "codec": "fh1"}],
        "sinks": [{"type": "jsonl", "path": str(fh_jsonl)}],
    }
    async with fh_runtime(config) as rt:
        await rt.wait_state("d", "connected")
        await vp.write(encode_packet(0, 0, b"read on readiness"))
        await rt.runtime.wait_until(lambda s: s["devices"]["d"]["frames"] == 1, 5)
        # the reader now waits for the tick (0.5 s): these stay in the tty
        await vp.write(b"".join(encode_packet(0, seq, b"late") for seq in range(1, 10)))
        await tty_holds_input(vp._slave)
        assert (await rt.runtime.status())["devices"]["d"]["frames"] == 1
        await rt.shutdown()
    assert [r["seq"] for r in read_jsonl(fh_jsonl)] == list(range(10))
