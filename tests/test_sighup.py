"""SIGHUP reopens the sinks' files (logrotate's convention) and never stops
the run: a real `firmware-host run`, its jsonl file renamed away, then
SIGHUP; later frames are at the path, none lost, the run goes on."""

from __future__ import annotations

import asyncio
import json
import signal

import pytest

from firmware_host import encode_packet
from firmware_host.testing import assert_accounting
from tests.conftest import cli_popen, read_jsonl
from tests.test_shutdown import wait_status

pytestmark = pytest.mark.timeout(60)


def packets(seqs: range) -> bytes:
    return b"".join(encode_packet(0, s, b"p") for s in seqs)


async def test_sighup_after_a_rotation_reopens_the_path(fh_ports, short_tmp, tmp_path):
    port = fh_ports.new()
    sock, sink, summary = str(short_tmp / "c.sock"), tmp_path / "out.jsonl", tmp_path / "summary.json"
    cfg = tmp_path / "run.toml"
    cfg.write_text(
        f"[buffer]\nflush_interval = 0.05\n[shutdown]\ngrace = 2\n"
        f'[[devices]]\nname = "d"\nport = "{port.path}"\ncodec = "fh1"\n'
        f'[[sinks]]\ntype = "jsonl"\npath = "{sink}"\n'
    )
    proc = cli_popen("run", "-c", str(cfg), "--control", sock, "--summary", str(summary), "-q", cwd=tmp_path)
    try:
        await wait_status(sock, lambda s: s["devices"]["d"]["state"] == "connected")
        proc.send_signal(signal.SIGHUP)  # with nothing to rotate yet: harmless
        await port.write(packets(range(100)))
        await wait_status(sock, lambda s: s["devices"]["d"]["flushed"] == 100)
        sink.rename(tmp_path / "out.jsonl.1")  # what logrotate does, then it sends SIGHUP
        proc.send_signal(signal.SIGHUP)
        await port.write(packets(range(100, 200)))
        status = await wait_status(sock, lambda s: s["devices"]["d"]["flushed"] == 200)
        assert proc.poll() is None  # still running
        assert status["sinks"][0]["failures"] == 0
        proc.send_signal(signal.SIGTERM)
        _out, err = await asyncio.to_thread(proc.communicate, timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert [r["seq"] for r in read_jsonl(tmp_path / "out.jsonl.1")] == list(range(100))
    assert [r["seq"] for r in read_jsonl(sink)] == list(range(100, 200))
    final = json.loads(summary.read_text())
    assert_accounting(final)
    assert final["devices"]["d"]["flushed"] == 200 and final["devices"]["d"]["lost"] == 0
