"""Issue 2: several devices with noise, corrupted CRCs and skipped seqs → the
sink holds exactly the valid frames, each once, in per-device seq order, and
the rejected and gaps counters are exact."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

import pytest

from firmware_host import encode_packet
from tests.chunking import random_chunks
from tests.conftest import read_jsonl, seqs_by_device

pytestmark = pytest.mark.timeout(60)


@dataclass
class Script:
    """A device's byte stream and what the host must make of it."""

    chunks: list[bytes] = field(default_factory=list)
    valid: list[tuple[int, bytes]] = field(default_factory=list)
    rejected: int = 0

    @property
    def gaps(self) -> int:
        seqs = [s for s, _ in self.valid]
        return sum(1 for a, b in itertools.pairwise(seqs) if b != (a + 1) % 2**32)


def make_script(rng: random.Random, frames: int) -> Script:
    script = Script()
    seq = rng.randrange(2**32)  # also exercises the wrap for some seeds
    for _ in range(frames):
        roll = rng.random()
        payload = rng.randbytes(rng.randrange(0, 80))
        if roll < 0.03:  # line noise: non-zero garbage ended by a delimiter = one reject
            script.chunks.append(bytes(rng.randrange(1, 256) for _ in range(rng.randrange(1, 40))) + b"\x00")
            script.rejected += 1
            continue
        if roll < 0.06:  # a skipped seq: the device lost a frame
            seq = (seq + rng.randrange(1, 5)) % 2**32
        packet = bytearray(encode_packet(rng.randrange(0xF0), seq, payload))
        if roll > 0.97:  # a corrupted frame: flip a non-delimiter byte to another non-zero value
            i = rng.randrange(len(packet) - 1)
            packet[i] = (packet[i] % 255) + 1 if packet[i] != 255 else 1
            script.rejected += 1
        else:
            script.valid.append((seq, payload))
        script.chunks.append(bytes(packet))
        seq = (seq + 1) % 2**32
    return script


@pytest.mark.parametrize("seed", [1, 2])
async def test_three_devices_noise_crc_gaps_exact(fh_ports, fh_runtime, fh_jsonl, seed):
    rng = random.Random(seed)
    names = ["imu0", "imu1", "imu2"]
    scripts = {n: make_script(rng, 4000) for n in names}
    assert all(s.rejected > 50 and s.gaps > 50 for s in scripts.values())  # the faults are really there
    ports = {n: fh_ports.new(n) for n in names}
    config = {
        "buffer": {"capacity": 100_000, "flush_interval": 0.05, "batch_size": 500},
        "devices": [{"name": n, "port": ports[n].path, "codec": "fh1"} for n in names],
        "sinks": [{"type": "jsonl", "path": str(fh_jsonl)}],
    }
    async with fh_runtime(config) as rt:
        for n in names:
            await rt.wait_state(n, "connected")
        # send the streams interleaved in random-sized chunks, as real links do
        pending = {n: random_chunks(b"".join(scripts[n].chunks), rng, 4095) for n in names}
        while any(pending.values()):
            n = rng.choice([n for n in names if pending[n]])
            await ports[n].write(pending[n].pop(0))
        for n in names:
            expected = scripts[n]
            await rt.runtime.wait_until(
                lambda s, n=n, e=expected: (
                    s["devices"][n]["frames"] == len(e.valid) and s["devices"][n]["rejected"] == e.rejected
                ),
                20,
            )
        summary = await rt.shutdown()

    status = summary.status
    records = read_jsonl(fh_jsonl)
    by_dev = seqs_by_device(records)
    for n in names:
        expected = scripts[n]
        d = status["devices"][n]
        assert d["frames"] == len(expected.valid)
        assert d["rejected"] == expected.rejected
        assert d["gaps"] == expected.gaps
        assert d["flushed"] == len(expected.valid) and d["dropped"] == 0 and d["buffered"] == 0
        assert by_dev[n] == [s for s, _ in expected.valid]  # exactly once, in order
    import base64

    got_payloads = [base64.b64decode(r["payload"]) for r in records if r["device"] == "imu0"]
    assert got_payloads == [p for _, p in scripts["imu0"].valid]
