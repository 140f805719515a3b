"""The ``gnss-ubx`` board: a u-blox receiver's mixed stream, emulated.

The emulator's NAV-PVT, NMEA and RTCM3 (``payload = "ubx"``) must split
exactly, damaged packets and noise included, and carry one fix in every
protocol: NAV-PVT's position (pyubx2's scaling) is the NMEA sentences'
(pynmeagps's) to their resolution, and the RTCM 1005 decodes (pyrtcm) to a
reference station on the earth's surface."""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import random
from pathlib import Path
from typing import Any

import pytest

from firmware_host.codecs.ubx import UbxCodec
from firmware_host.config.boards import load_boards
from firmware_host.config.schema import config_from_dict
from firmware_host.emulation.fleet import Fleet, parse_emulate_spec
from firmware_host.emulation.generators import UbxGenerator
from firmware_host.emulation.wire import make_wire
from firmware_host.runtime import Runtime
from firmware_host.testing import assert_accounting
from firmware_host.values.decoder import decoder_for

pytest.importorskip("pyubx2")
pyrtcm = pytest.importorskip("pyrtcm")

pytestmark = pytest.mark.timeout(30)


def test_the_board():
    board = load_boards()["gnss-ubx"]
    assert (board.codec, board.vid, board.pid, board.emulator.payload) == ("ubx", 0x1546, 0x01A8, "ubx")


def test_the_wire_with_damage_and_noise_splits_exactly():
    """What the fleet writes for each item (frame, corrupt, noise) is what the host counts."""
    wire = make_wire("ubx")
    gen = UbxGenerator(5.0, random.Random(3), 1735732800.0)
    rng = random.Random(4)
    data, frames, rejected = b"", 0, 0
    for k in range(40):
        for item in gen.tick(k):
            roll = rng.random()
            if roll < 0.15:
                noise = wire.noise(rng, rng.randint(1, 16))
                assert noise is not None and noise.frames == 0
                data += noise.data
                rejected += noise.rejected
            if roll > 0.85:
                data += wire.corrupt(item, 0, rng)
                rejected += 1
            else:
                data += wire.frame(item, 0)
                frames += 1
    for step in (1, 13, 4096):
        codec = UbxCodec("g")
        got = [f for k in range(0, len(data), step) for f in codec.feed(data[k : k + step], 0.0)]
        assert (len(got), codec.rejected) == (frames, rejected)


def check_values(records: list[dict[str, Any]]) -> int:
    """Each epoch's NAV-PVT against its GGA; the RTCM 1005's station. Returns epochs checked."""
    pvt = None
    checked = 0
    for r in records:
        fields = r["fields"]
        if fields["msg"] == "NAV-PVT":
            pvt = fields
        elif fields["msg"] == "GGA" and pvt is not None:
            # NMEA carries minutes to 1e-5 (2e-7 degrees); UBX degrees to 1e-7
            assert math.isclose(fields["lat"], pvt["lat"], abs_tol=3e-7)
            assert math.isclose(fields["lon"], pvt["lon"], abs_tol=3e-7)
            assert fields["time"].startswith(f"{pvt['hour']:02d}:{pvt['min']:02d}:{pvt['second']:02d}")
            checked += 1
            pvt = None
        elif fields["msg"] == "RTCM-1005":
            station = pyrtcm.RTCMReader.parse(base64.b64decode(r["payload"]))
            assert station.identity == "1005"
            assert 6.35e6 < math.dist((0, 0, 0), (station.DF025, station.DF026, station.DF027)) < 6.40e6
    return checked


def test_generated_epochs_agree_across_protocols():
    gen = UbxGenerator(5.0, random.Random(5), 1735732800.0)
    wire = make_wire("ubx")
    data = b"".join(wire.frame(item, 0) for k in range(30) for item in gen.tick(k))
    frames = UbxCodec("g").feed(data, 0.0)
    decoder = decoder_for("ubx", None)
    assert decoder is not None
    decoder.decode(frames)
    assert decoder.undecoded == 0
    records = [{"fields": f.fields, "payload": base64.b64encode(f.payload or b"").decode()} for f in frames]
    assert check_values(records) == 30


async def test_an_emulated_receiver_through_the_runtime(tmp_path: Path) -> None:
    fleet = Fleet(parse_emulate_spec(["gnss-ubx"], load_boards()), tmp_path / "ports", rate=50, seed=7)
    await fleet.start()
    out = tmp_path / "out.jsonl"
    cfg = config_from_dict(
        {"buffer": {"flush_interval": 0.02}, "sinks": [{"type": "jsonl", "path": str(out)}]}, source="<test>"
    )
    rt = Runtime(dataclasses.replace(cfg, devices=fleet.device_configs()))
    await rt.start()
    name = fleet.devices[0].name
    try:
        status = await rt.wait_until(lambda s: s["devices"][name]["flushed"] >= 100, 15)
        assert status["devices"][name]["undecoded"] == 0
    finally:
        summary = await rt.shutdown()
        await fleet.stop()
    assert_accounting(summary.status)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert {"NAV-PVT", "RMC", "GGA", "GLL", "RTCM-1005"} <= {r["fields"]["msg"] for r in records}
    assert check_values(records) >= 4
