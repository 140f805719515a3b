"""Issue 2: capacity 100, flushing disabled, 1000 frames → the newest 100
remain, 900 are counted dropped, and the final drain delivers seqs 900..999."""

from __future__ import annotations

import pytest

from firmware_host import encode_packet
from tests.conftest import read_jsonl

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("chunk", [1000, 7])  # one huge read, and many small ones
async def test_capacity_100_keeps_newest(fh_ports, fh_runtime, fh_jsonl, chunk):
    port = fh_ports.new()
    config = {
        "buffer": {"capacity": 100, "flush_interval": 0},
        "devices": [{"name": "dev", "port": port.path, "codec": "fh1"}],
        "sinks": [{"type": "jsonl", "path": str(fh_jsonl)}],
    }
    async with fh_runtime(config) as rt:
        await rt.wait_state("dev", "connected")
        frames = [encode_packet(1, seq, seq.to_bytes(4, "little")) for seq in range(1000)]
        for i in range(0, 1000, chunk):
            await port.write(b"".join(frames[i : i + chunk]))
        await rt.wait_frames("dev", 1000)
        buffers = await rt.buffers()
        assert buffers["depth"] == 100 and buffers["dropped"] == 900
        assert buffers["devices"]["dev"]["depth"] == 100 and buffers["devices"]["dev"]["dropped"] == 900
        assert not fh_jsonl.exists() or fh_jsonl.read_text() == ""  # flush disabled: nothing went out yet
        summary = await rt.shutdown()
    assert [r["seq"] for r in read_jsonl(fh_jsonl)] == list(range(900, 1000))
    d = summary.status["devices"]["dev"]
    assert (d["frames"], d["flushed"], d["dropped"], d["buffered"], d["lost"]) == (1000, 100, 900, 0, 0)


async def test_byte_bound_drops_oldest(fh_ports, fh_runtime, fh_jsonl):
    port = fh_ports.new()
    config = {
        "buffer": {"capacity": 10_000, "max_bytes": 1000, "flush_interval": 0},
        "devices": [{"name": "dev", "port": port.path, "codec": "fh1"}],
        "sinks": [{"type": "jsonl", "path": str(fh_jsonl)}],
    }
    async with fh_runtime(config) as rt:
        await rt.wait_state("dev", "connected")
        await port.write(b"".join(encode_packet(0, seq, bytes(100)) for seq in range(50)))
        await rt.wait_frames("dev", 50)
        buffers = await rt.buffers()
        assert buffers["depth"] == 10 and buffers["bytes"] == 1000 and buffers["dropped"] == 40
    assert [r["seq"] for r in read_jsonl(fh_jsonl)] == list(range(40, 50))
