"""Real u-blox captures (gpsd's regression logs) through a pty and the ``ubx`` codec.

Two oracles apart from our code: pyubx2's own ``UBXReader`` splits the same
bytes (how many UBX, NMEA and RTCM3 messages, and which), and gpsd's expected
output for the same logs (``*.log.chk``: its TPV reports) gives the positions
the receiver reported. ``ublox-f9p-rtcm.log`` is a ZED-F9P's UBX interleaved
with RTCM3; ``ublox-neo-m8n.log`` a NEO-M8N's NAV-PVT stream, south and east.
"""

from __future__ import annotations

import collections
import io
import json
from pathlib import Path
from typing import Any

import pytest

from firmware_host.codecs.ubx import RTCM3_TYPE, UBX_TYPE
from firmware_host.testing import assert_accounting

pyubx2 = pytest.importorskip("pyubx2")

pytestmark = pytest.mark.timeout(30)

DATA = Path(__file__).parent / "data" / "gpsd" / "ubx"


def capture(name: str) -> bytes:
    """The receiver's bytes: the log's leading ``#`` comment lines dropped
    (only leading ones: binary data may hold a ``#`` after a newline)."""
    data = (DATA / name).read_bytes()
    while data.startswith(b"#"):
        data = data[data.index(b"\n") + 1 :]
    return data


def pyubx2_split(data: bytes) -> tuple[collections.Counter[str], int]:
    """What pyubx2 finds in ``data``: message identities (RTCM3 as ``RTCM-n``),
    and the runs of bytes outside every message it found (a capture that
    starts mid-packet, a stray newline), which is what a codec must count as
    rejected; a last run that starts like a packet is one cut short, still
    waiting for its bytes, not rejected."""
    found: collections.Counter[str] = collections.Counter()
    reader = pyubx2.UBXReader(io.BytesIO(data), protfilter=pyubx2.UBX_PROTOCOL | pyubx2.NMEA_PROTOCOL | 4)
    junk = pos = 0
    for raw, parsed in reader:
        start = data.index(raw, pos)
        junk += start > pos
        pos = start + len(raw)
        if raw[:1] == b"\xd3":
            found[f"RTCM-{parsed.identity}"] += 1
        elif raw[:1] == b"$":
            found[parsed.msgID] += 1
        else:
            found[parsed.identity] += 1
    rest = data[pos:]
    junk += bool(rest) and not rest.startswith((b"\xb5\x62", b"\xd3", b"$"))
    return found, junk


def gpsd_positions(name: str) -> list[tuple[float, float]]:
    return [
        (report["lat"], report["lon"])
        for report in map(json.loads, (line for line in (DATA / name).read_text().splitlines() if line[:1] == "{"))
        if report.get("class") == "TPV" and "lat" in report
    ]


@pytest.mark.parametrize(
    ("name", "fixes", "rejected"),
    # f9p: a stray newline after the last packet; m8n: the capture starts mid-packet
    # (and ends with one cut short, which waits rather than counts)
    [("ublox-f9p-rtcm.log", 1, 1), ("ublox-neo-m8n.log", 22, 1)],
)
async def test_a_real_ublox_capture_splits_as_pyubx2_does_and_gives_gpsds_positions(
    name: str, fixes: int, rejected: int, fh_board: Any, fh_runtime: Any, tmp_path: Path
) -> None:
    data = capture(name)
    expected, junk = pyubx2_split(data)
    assert junk == rejected  # the oracle agrees with reading the bytes by eye
    total = sum(expected.values())
    gps = fh_board("gnss-ubx")
    out = tmp_path / "out.jsonl"
    cfg = {
        "buffer": {"flush_interval": 0.02},
        "devices": [gps.config("gps")],
        "sinks": [{"type": "jsonl", "path": str(out)}],
    }
    async with fh_runtime(cfg) as rt:
        await rt.wait_state("gps", "connected")
        await gps.write(data)
        status = await rt.wait_flushed("gps", total)
        device = status["devices"]["gps"]
        assert (device["frames"], device["rejected"], device["undecoded"]) == (total, junk, 0)
        assert_accounting(status)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert collections.Counter(r["fields"]["msg"] for r in records) == expected
    kinds = {r["type"] for r in records}
    assert UBX_TYPE in kinds and (RTCM3_TYPE in kinds) == any(k.startswith("RTCM-") for k in expected)
    # every position gpsd reported is one the receiver sent in a NAV-PVT (1e-7 degrees)
    pvts = [(r["fields"]["lat"], r["fields"]["lon"]) for r in records if r["fields"]["msg"] == "NAV-PVT"]
    positions = gpsd_positions(f"{name}.chk")
    assert len(positions) == fixes
    for lat, lon in positions:
        assert any(abs(lat - a) < 1.5e-7 and abs(lon - b) < 1.5e-7 for a, b in pvts), (lat, lon)
