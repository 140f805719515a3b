"""Issue 2: unplug (close the pty master) and replug behind the same path:
the reader reconnects by itself and frames after the replug arrive."""

from __future__ import annotations

import pytest

from firmware_host import encode_packet
from tests.conftest import read_jsonl

pytestmark = pytest.mark.timeout(30)


async def test_unplug_replug_same_path(fh_ports, fh_runtime, fh_jsonl):
    port = fh_ports.new("gnss0")
    config = {
        "buffer": {"flush_interval": 0.1},
        "devices": [{"name": "d", "port": port.path, "codec": "fh1", "backoff_initial": 0.05, "backoff_max": 0.2}],
        "sinks": [{"type": "jsonl", "path": str(fh_jsonl)}],
    }
    async with fh_runtime(config) as rt:
        await rt.wait_state("d", "connected")
        await port.write(b"".join(encode_packet(0, s, b"before") for s in range(100)))
        await rt.wait_frames("d", 100)
        for cycle in range(1, 4):
            port.unplug()
            await rt.wait_until(lambda s: s["devices"]["d"]["state"] != "connected", 5)
            port.replug()
            await rt.wait_counter("d", "reconnects", cycle)
            await rt.wait_state("d", "connected")
            base = 100 * cycle
            await port.write(b"".join(encode_packet(0, base + s, b"after") for s in range(100)))
            await rt.wait_frames("d", base + 100)
        summary = await rt.shutdown()
    d = summary.status["devices"]["d"]
    assert d["reconnects"] == 3 and d["frames"] == 400 and d["rejected"] == 0 and d["gaps"] == 0
    assert [r["seq"] for r in read_jsonl(fh_jsonl)] == list(range(400))


async def test_missing_port_backs_off_then_connects(fh_ports, fh_runtime, tmp_path):
    """A device that is absent at start is retried until it appears."""
    link = tmp_path / "late"
    config = {
        "devices": [{"name": "late", "port": str(link), "codec": "lines", "backoff_initial": 0.05, "backoff_max": 0.1}]
    }
    async with fh_runtime(config) as rt:
        await rt.wait_until(lambda s: s["devices"]["late"]["state"] == "backoff", 5)
        port = fh_ports.new()
        link.symlink_to(port.slave_name)
        await rt.wait_state("late", "connected")
        await port.write(b"hello\n")
        await rt.wait_frames("late", 1)
        status = await rt.status()
        assert status["devices"]["late"]["reconnects"] == 0  # the first connect is not a reconnect
