"""NMEA sentences decoded into ``Frame.fields`` (``values.nmea``, the ``[gnss]`` extra).

Oracles apart from pynmeagps: positions written out by hand here (degrees and
minutes → signed degrees), and gpsd's own expected output (``*.log.chk``, its
TPV ``lat``/``lon``) for the real captures it recorded.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import pytest

from firmware_host import Frame
from firmware_host.codecs.nmea import NmeaCodec, nmea_checksum
from firmware_host.testing import assert_accounting
from firmware_host.values.decoder import decoder_for
from firmware_host.values.nmea import NmeaDecoder

pytest.importorskip("pynmeagps")

pytestmark = pytest.mark.timeout(30)

DATA = Path(__file__).resolve().parent / "data" / "gpsd"


def sentence(body: str) -> str:
    return f"${body}*{nmea_checksum(body.encode()):02X}"


def decoded(*texts: str) -> tuple[list[Any], int]:
    decoder = decoder_for("nmea", None)
    assert isinstance(decoder, NmeaDecoder)
    frames = [Frame("gps", i, None, 0.0, None, t) for i, t in enumerate(texts)]
    decoder.decode(frames)
    return [f.fields for f in frames], decoder.undecoded


def capture(name: str) -> bytes:
    """A gpsd log as the receiver sent it: its ``#`` comment lines dropped."""
    lines = (DATA / name).read_bytes().splitlines(keepends=True)
    return b"".join(line for line in lines if not line.startswith(b"#"))


# which comma-separated field holds the latitude, per sentence type (NMEA 0183)
LAT_FIELD = {"GGA": 2, "GLL": 1, "RMC": 3, "GNS": 2}


def gpsd_fixes(chk: str) -> list[tuple[str, float, float]]:
    """gpsd's TPV positions, each with the last sentence before it that carried
    a position (the one gpsd took it from): (sentence, lat, lon)."""
    fixes = []
    last: str | None = None
    for line in chk.splitlines():
        if line.startswith("{"):
            report = json.loads(line)
            if report.get("class") == "TPV" and "lat" in report:
                assert last is not None, line
                fixes.append((last, report["lat"], report["lon"]))
        elif line.startswith("$"):
            cells = line.split("*")[0].split(",")
            index = LAT_FIELD.get(cells[0][3:])
            if index is not None and len(cells) > index and cells[index]:
                last = line
    return fixes


# -- decoding, no port ---------------------------------------------------------------------


def test_fields_as_pynmeagps_names_them_south_and_west_negative_times_iso_empty_null():
    gga = sentence("GPGGA,092750.000,5321.6802,S,00630.3372,W,1,8,1.03,61.7,M,55.2,M,,")
    rmc = sentence("GNRMC,171926.00,A,4404.14063,N,12118.85478,E,0.117,,180315,,,A")
    (g, r), undecoded = decoded(gga, rmc)
    assert undecoded == 0
    assert g["msg"] == "GGA" and g["talker"] == "GP"
    assert g["lat"] == pytest.approx(-(53 + 21.6802 / 60), abs=1e-9)
    assert g["lon"] == pytest.approx(-(6 + 30.3372 / 60), abs=1e-9)
    assert (g["time"], g["numSV"], g["HDOP"], g["alt"], g["diffAge"]) == ("09:27:50", 8, 1.03, 61.7, None)
    assert (r["msg"], r["talker"], r["date"], r["cog"]) == ("RMC", "GN", "2015-03-18", None)
    assert r["lat"] == pytest.approx(44 + 4.14063 / 60, abs=1e-9)
    assert r["lon"] == pytest.approx(121 + 18.85478 / 60, abs=1e-9)
    json.dumps([g, r], allow_nan=False)  # JSON as they are


def test_what_pynmeagps_cannot_parse_keeps_its_text_and_counts_undecoded():
    texts = (
        sentence("PFHTX,hello"),  # a proprietary type pynmeagps does not know
        "!AIVDM,1,1,,A,13aEOK?P00PD2wVMdLDRhgvL289?,0*26",  # AIS: not pynmeagps's
        "not nmea at all",
        "$\u00e9\u00e9*00",
        sentence("GPZDA,171926.00,18,03,2015,00,00"),
    )
    fields, undecoded = decoded(*texts)
    assert fields[:4] == [None] * 4 and undecoded == 4
    assert fields[4] == {"msg": "ZDA", "talker": "GP", "time": "17:19:26", "day": 18, "month": 3, "year": 2015,
                         "ltzh": "00", "ltzn": "00"}  # fmt: skip


def test_binary_frames_are_left_alone():
    fields, undecoded = decoded()
    decoder = decoder_for("nmea", None)
    assert decoder is not None
    frame = Frame("gps", 0, 1, 0.0, b"\x01")
    decoder.decode([frame])
    assert (frame.fields, decoder.undecoded, fields, undecoded) == (None, 0, [], 0)


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("*.log")))
def test_every_sentence_of_the_real_captures_is_json_ready(name):
    frames = NmeaCodec("gps").feed(capture(name), 0.0)
    decoder = decoder_for("nmea", None)
    assert decoder is not None
    decoder.decode(frames)
    good = [f.fields for f in frames if f.fields is not None]
    assert len(good) + decoder.undecoded == len(frames) and len(good) > len(frames) // 2
    json.dumps(good, allow_nan=False)
    assert all(isinstance(f["msg"], str) and len(f["msg"]) >= 3 for f in good)


@pytest.mark.parametrize(("name", "fixes"), [("neo-m8n.log", 23), ("nmea-rtk.log", 123)])
def test_positions_are_gpsds(name, fixes):
    """Every position gpsd reported for the log is the one decoded from the
    sentence it came from, to 1e-8 degrees (1 mm)."""
    expected = gpsd_fixes((DATA / f"{name}.chk").read_text())
    assert len(expected) == fixes
    frames = NmeaCodec("gps").feed(capture(name), 0.0)
    decoder = decoder_for("nmea", None)
    assert decoder is not None
    decoder.decode(frames)
    by_text = {f.text: f.fields for f in frames}
    for text, lat, lon in expected:
        fields = by_text[text]
        assert fields is not None, text
        assert (fields["lat"], fields["lon"]) == (pytest.approx(lat, abs=1e-8), pytest.approx(lon, abs=1e-8)), text


# -- through the runtime, on ptys ----------------------------------------------------------------


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_a_real_capture_through_a_pty_gives_gpsds_positions(fh_board, fh_runtime, tmp_path):
    gps, raw = fh_board("gnss-nmea"), fh_board("gnss-nmea")
    out = tmp_path / "out.jsonl"
    data = capture("neo-m8n.log")
    total = len(NmeaCodec("x").feed(data, 0.0))
    cfg = {
        "buffer": {"flush_interval": 0.02},
        "devices": [gps.config("gps"), raw.config("raw", decode=False)],
        "sinks": [{"type": "jsonl", "path": str(out)}],
    }
    async with fh_runtime(cfg) as rt:
        await rt.wait_state("gps", "connected")
        await rt.wait_state("raw", "connected")
        await gps.write(data)
        await raw.write(data)
        status = await rt.wait_until(lambda s: sum(d["flushed"] for d in s["devices"].values()) == 2 * total, 10)
        assert status["devices"]["gps"]["undecoded"] == status["devices"]["raw"]["undecoded"] == 0
        assert_accounting(status)
    recs = records(out)
    assert [r.get("fields") for r in recs if r["device"] == "raw"] == [None] * total
    mine = {r["text"]: r["fields"] for r in recs if r["device"] == "gps"}
    assert len([r for r in recs if r["device"] == "gps"]) == total and all(mine.values())
    expected = gpsd_fixes((DATA / "neo-m8n.log.chk").read_text())
    assert len(expected) == 23
    for text, lat, lon in expected:
        assert (mine[text]["lat"], mine[text]["lon"]) == (pytest.approx(lat, abs=1e-8), pytest.approx(lon, abs=1e-8))


async def test_without_pynmeagps_text_flows_and_one_warning_says_so(
    fh_board, fh_runtime, tmp_path, monkeypatch, caplog
):
    monkeypatch.setitem(sys.modules, "pynmeagps", None)  # `import pynmeagps` raises ImportError
    a, b = fh_board("gnss-nmea"), fh_board("gnss-nmea")
    out = tmp_path / "out.jsonl"
    cfg = {
        "buffer": {"flush_interval": 0.02},
        "devices": [a.config("a"), b.config("b")],
        "sinks": [{"type": "jsonl", "path": str(out)}],
    }
    lines = ["GNGGA,171926.00,4404.14063,N,12118.85478,W,1,12,0.91,1147.2,M,-21.3,M,,"]
    with caplog.at_level(logging.WARNING, logger="firmware_host.values"):
        async with fh_runtime(cfg) as rt:
            await rt.wait_state("a", "connected")
            await rt.wait_state("b", "connected")
            await a.send_lines(lines)
            await b.send_lines(lines)
            status = await rt.wait_until(lambda s: sum(d["flushed"] for d in s["devices"].values()) == 2, 10)
            assert_accounting(status)
    warnings = [r.getMessage() for r in caplog.records if r.name == "firmware_host.values"]
    assert len(warnings) == 1 and "[gnss]" in warnings[0] and "not decoded" in warnings[0]
    assert [(r["text"], r.get("fields")) for r in records(out)] == [(sentence(lines[0]), None)] * 2
