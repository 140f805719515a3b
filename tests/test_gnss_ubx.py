"""The ``ubx`` codec (a u-blox stream of UBX, NMEA and RTCM3) and its values.

Oracles apart from the codec: pyubx2 and pyrtcm build the packets
(``UBXMessage.serialize``, ``RTCMMessage.serialize``) and pyubx2's
``UBXReader`` splits the same streams; checksums are checked against
published check values; positions are the numbers that went in.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from firmware_host import Frame
from firmware_host.codecs import UbxCodec, make_codec
from firmware_host.codecs.nmea import nmea_checksum
from firmware_host.codecs.ubx import RTCM3_TYPE, UBX_TYPE, crc24q, rtcm3_frame, ubx_checksum, ubx_packet
from firmware_host.errors import CodecOptionError
from firmware_host.testing import assert_accounting
from firmware_host.values import ubx as values_ubx
from firmware_host.values.decoder import decoder_for
from firmware_host.values.ubx import UbxDecoder

pyubx2 = pytest.importorskip("pyubx2")
pyrtcm = pytest.importorskip("pyrtcm")

pytestmark = pytest.mark.timeout(30)

GGA = b"$GNGGA,171926.00,4404.14063,N,12118.85478,W,1,12,0.91,1147.2,M,-21.3,M,,*44\r\n"
RMC = b"$GNRMC,171926.00,A,4404.14063,N,12118.85478,W,0.117,,180315,,,A*76\r\n"


def pvt(lat: float = 44.0690105, lon: float = -121.3142463) -> bytes:
    return pyubx2.UBXMessage(
        "NAV", "NAV-PVT", 0, iTOW=1000, year=2025, month=1, day=1, hour=12, lat=lat, lon=lon, fixType=3, numSV=12
    ).serialize()


def posllh(lat: float = -33.8688, lon: float = 151.2093) -> bytes:
    return pyubx2.UBXMessage("NAV", "NAV-POSLLH", 0, iTOW=2000, lat=lat, lon=lon, height=58000).serialize()


def rtcm(number: int = 1005, size: int = 19) -> bytes:
    message = ((number << 4) & 0xFFF0).to_bytes(2, "big") + bytes(size - 2)
    return pyrtcm.RTCMMessage(payload=message).serialize()


def split(codec: UbxCodec, data: bytes, step: int = 0) -> list[Frame]:
    frames: list[Frame] = []
    if step <= 0:
        return codec.feed(data, 0.0)
    for k in range(0, len(data), step):
        frames.extend(codec.feed(data[k : k + step], 0.0))
        assert len(codec._pending) <= codec.pending_limit
    return frames


def wire(frame: Frame) -> bytes:
    return frame.payload if frame.payload is not None else frame.text.encode() + b"\r\n"


def pyubx2_split(data: bytes) -> list[bytes]:
    reader = pyubx2.UBXReader(io.BytesIO(data), protfilter=7, quitonerror=0, parsing=0)
    return [raw for raw, _ in reader]


# -- checksums and packets ---------------------------------------------------------------------


def test_checksums_are_the_published_ones():
    assert crc24q(b"123456789") == 0xCDE703  # CRC-24Q's check value
    packet = pvt()
    assert ubx_checksum(packet[2:-2]) == packet[-2:]  # pyubx2's own checksum
    assert ubx_packet(packet[2], packet[3], packet[6:-2]) == packet
    assert rtcm3_frame(rtcm()[3:-3]) == rtcm()
    codec = UbxCodec()
    assert codec.encode(UBX_TYPE, 0, packet[2:4] + packet[6:-2]) == packet
    assert codec.encode(RTCM3_TYPE, 0, rtcm()[3:-3]) == rtcm()
    assert codec.encode(None, 0, GGA[1:-5].decode()) == GGA
    with pytest.raises(ValueError):
        codec.encode(0x01, 0, b"\x01\x02")


@pytest.mark.parametrize("step", [0, 1, 7, 64])
def test_a_mixed_stream_splits_as_pyubx2_splits_it(step):
    stream = pvt() + GGA + rtcm() + posllh() + RMC + rtcm(1077, 120) + pvt(-1.5, -2.5)
    codec = UbxCodec("gps")
    frames = split(codec, stream, step)
    assert [wire(f) for f in frames] == pyubx2_split(stream)
    assert [(f.type, f.seq) for f in frames] == [(0xB5, 0), (None, 1), (0xD3, 2), (0xB5, 3), (None, 4), (0xD3, 5),
                                                 (0xB5, 6)]  # fmt: skip
    assert frames[1].text == GGA[:-2].decode() and codec.rejected == 0 and codec._pending == b""


def test_damage_counts_one_rejected_each_and_decoding_resumes():
    bad_ubx = bytearray(pvt())
    bad_ubx[20] ^= 0x01  # a payload bit: the checksum fails
    bad_rtcm = bytearray(rtcm())
    bad_rtcm[8] ^= 0x80
    bad_nmea = GGA.replace(b"*44", b"*45")
    huge = b"\xb5\x62\x01\x07\xff\xff"  # 65535 bytes: over max_payload
    stream = (
        pvt() + bytes(bad_ubx) + GGA + bad_nmea + rtcm() + bytes(bad_rtcm) + huge + posllh()
        + b"stray bytes\r\n" + RMC + b"$GNGGA,17192" + pvt()  # a sentence cut by a binary packet
    )  # fmt: skip
    for step in (0, 1, 5):
        codec = UbxCodec("gps")
        frames = split(codec, stream, step)
        assert [wire(f) for f in frames] == [pvt(), GGA, rtcm(), posllh(), RMC, pvt()]
        assert codec.rejected == 6, step  # bad ubx, nmea, rtcm, huge, the stray run, the cut sentence


def test_stray_bytes_right_after_a_damaged_packet_count_on_their_own():
    bad = bytearray(pvt())
    bad[30] ^= 0x10
    codec = UbxCodec()
    frames = codec.feed(bytes(bad) + b"stray" + posllh() + bytes(bad) + posllh(), 0.0)
    assert [wire(f) for f in frames] == [posllh(), posllh()]
    assert codec.rejected == 3  # the damaged packet, the stray run after it, the damaged packet
    # a false '$' inside a damaged frame, cut short, says nothing about the stray byte after the frame
    bad = bytearray(rtcm3_frame(b"$\x00"))
    bad[4] ^= 0x01
    codec = UbxCodec()
    assert codec.feed(bytes(bad) + b"\x00" + posllh(), 0.0)[0].payload == posllh()
    assert codec.rejected == 2


def test_a_good_packet_inside_a_damaged_ones_claimed_length_is_found():
    head = b"\xb5\x62\x01\x07\x40\x00"  # claims 64 bytes; what follows is another packet
    stream = head + posllh() + bytes(64)
    codec = UbxCodec()
    frames = codec.feed(stream, 0.0)
    assert [wire(f) for f in frames] == [posllh()]
    assert codec.rejected >= 1


def test_pending_is_bounded_and_reset_counts_a_partial_packet():
    codec = UbxCodec(max_payload=64)
    assert codec.pending_limit == 1029  # the longest RTCM3 frame (over the longest sentence)
    assert codec.feed(posllh()[:20], 0.0) == [] and codec.rejected == 0
    codec.reset()
    assert codec.rejected == 1 and codec._pending == b""
    assert codec.feed(b"$" + b"A" * 5000, 0.0) == [] and len(codec._pending) <= codec.pending_limit
    assert codec.rejected == 2
    assert [wire(f) for f in codec.feed(b"\n" + GGA, 0.0)] == [GGA]
    assert codec.feed(pvt(), 0.0) == [] and codec.rejected == 3  # 92 bytes: over max_payload 64


def test_options_are_checked():
    assert make_codec("ubx", "g", {"max_payload": 100}).max_payload == 100  # type: ignore[attr-defined]
    for bad in (0, 70000, True):
        with pytest.raises(CodecOptionError):
            make_codec("ubx", "g", {"max_payload": bad})


# -- values --------------------------------------------------------------------------------------


def decoded(*packets: bytes) -> tuple[list[Any], int]:
    decoder = decoder_for("ubx", None)
    assert isinstance(decoder, UbxDecoder)
    frames = UbxCodec("gps").feed(b"".join(packets), 0.0)
    assert len(frames) == len(packets)
    decoder.decode(frames)
    return [f.fields for f in frames], decoder.undecoded


def test_ubx_rtcm_and_nmea_values():
    (p, llh, r, r2, g), undecoded = decoded(pvt(), posllh(), rtcm(1005), rtcm(1230, 8), GGA)
    assert undecoded == 0
    assert (p["msg"], p["lat"], p["lon"], p["fixType"], p["numSV"], p["year"]) == (
        "NAV-PVT", pytest.approx(44.0690105, abs=1e-7), pytest.approx(-121.3142463, abs=1e-7), 3, 12, 2025)  # fmt: skip
    assert (llh["msg"], llh["height"]) == ("NAV-POSLLH", 58000)
    assert (llh["lat"], llh["lon"]) == (pytest.approx(-33.8688, abs=1e-7), pytest.approx(151.2093, abs=1e-7))
    assert r == {"msg": "RTCM-1005", "number": 1005, "length": 19}
    assert r2 == {"msg": "RTCM-1230", "number": 1230, "length": 8}
    assert (g["msg"], g["talker"], g["lat"]) == ("GGA", "GN", pytest.approx(44 + 4.14063 / 60, abs=1e-9))
    json.dumps([p, llh, r, g], allow_nan=False)


def test_what_does_not_decode_counts_undecoded():
    unknown = ubx_packet(0x99, 0x99, b"\x01\x02")  # a class pyubx2 does not know
    empty_rtcm = rtcm3_frame(b"\x3e")  # no room for a 12-bit message number
    body = b"PFHTX,hello"  # a sentence pynmeagps does not know
    proprietary = b"$" + body + b"*%02X\r\n" % nmea_checksum(body)
    fields, undecoded = decoded(unknown, empty_rtcm, proprietary, pvt())
    assert fields[:3] == [None, None, None] and fields[3]["msg"] == "NAV-PVT" and undecoded == 3


def test_the_ubx_frame_types_agree_between_codec_and_values():
    assert (values_ubx.UBX_TYPE, values_ubx.RTCM3_TYPE) == (UBX_TYPE, RTCM3_TYPE)


def test_without_the_extra_there_is_no_ubx_decoder(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyubx2", None)
    reported: set[str] = set()
    assert decoder_for("ubx", None, reported=reported) is None and reported == {"ubx"}
    assert decoder_for("ubx", None, decode=False) is None


# -- through the runtime, on a pty ------------------------------------------------------------------


async def test_a_mixed_stream_through_a_pty(fh_ports, fh_runtime, tmp_path):
    port, raw_port = fh_ports.new("gps"), fh_ports.new("raw")
    out = tmp_path / "out.jsonl"
    cfg = {
        "buffer": {"flush_interval": 0.02},
        "devices": [
            {"name": "gps", "port": port.path, "codec": "ubx"},
            {"name": "raw", "port": raw_port.path, "codec": "ubx", "decode": False},
        ],
        "sinks": [{"type": "jsonl", "path": str(out)}],
    }
    epoch = pvt() + GGA + rtcm() + b"\x00noise" + posllh() + RMC
    async with fh_runtime(cfg) as rt:
        await rt.wait_state("gps", "connected")
        await rt.wait_state("raw", "connected")
        for _ in range(3):
            await port.write(epoch)
            await raw_port.write(epoch)
        status = await rt.wait_until(lambda s: sum(d["flushed"] for d in s["devices"].values()) == 30, 10)
        assert {n: (d["rejected"], d["undecoded"]) for n, d in status["devices"].items()} == {
            "gps": (3, 0),
            "raw": (3, 0),
        }
        assert_accounting(status)
    recs = [json.loads(line) for line in Path(out).read_text().splitlines()]
    mine = [r for r in recs if r["device"] == "gps"]
    assert [r["fields"]["msg"] for r in mine] == ["NAV-PVT", "GGA", "RTCM-1005", "NAV-POSLLH", "RMC"] * 3
    assert [r["type"] for r in mine[:5]] == [0xB5, None, 0xD3, 0xB5, None]
    assert all("fields" not in r or r["fields"] is None for r in recs if r["device"] == "raw")
