"""A u-blox stream's values (the ``ubx`` codec's frames) into ``Frame.fields``.

UBX packets are parsed by pyubx2, whose names the fields keep, with ``msg``
its identity (``"NAV-PVT"``; one it does not know is undecoded); pyubx2 scales positions, so ``lat``/``lon`` are
decimal degrees. RTCM3 frames get their message number (``"msg":
"RTCM-1005"``, ``number``, ``length``: read here from the frame's first 12
bits, no parser needed). NMEA sentences go to ``values.nmea``. A packet
pyubx2 refuses, or an RTCM3 frame too short to hold a number, counts
``undecoded``. Needs the ``[gnss]`` extra (pyubx2 and pynmeagps).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from firmware_host.frames import Frame
from firmware_host.values.nmea import Fields, NmeaDecoder, json_value, pynmeagps_parser

# The ubx codec's frame types: the sync byte a frame starts with (they are
# firmware_host.codecs.ubx's UBX_TYPE and RTCM3_TYPE; values sits below codecs).
UBX_TYPE = 0xB5
RTCM3_TYPE = 0xD3

#: a whole UBX packet -> a pyubx2 UBXMessage (raises on what it cannot parse)
ParseUbx = Callable[[bytes], Any]


def ubx_fields(msg: Any) -> Fields:
    """A parsed UBX message's public attributes, JSON-ready (bytes as hex), with ``msg``."""
    fields: Fields = {"msg": msg.identity}
    for name, value in vars(msg).items():
        if name[0] != "_":
            fields[name] = value.hex() if isinstance(value, bytes) else json_value(value)
    return fields


def rtcm3_fields(packet: bytes) -> Fields | None:
    """``msg``, ``number`` and ``length`` of a whole RTCM3 frame; None if it
    has no room for a message number (a payload under 2 bytes)."""
    if len(packet) < 3 + 2 + 3:
        return None
    number = (packet[3] << 4) | (packet[4] >> 4)
    return {"msg": f"RTCM-{number}", "number": number, "length": len(packet) - 6}


def pyubx2_parser() -> ParseUbx | None:
    """pyubx2's parser, or None when the extra is not installed."""
    try:
        from pyubx2 import VALCKSUM, UBXReader
    except ImportError:
        return None
    parse = UBXReader.parse

    def parse_packet(packet: bytes) -> Any:
        return parse(packet, validate=VALCKSUM)

    return parse_packet


class UbxDecoder:
    """One u-blox device's decoder (a ``FieldDecoder``): UBX, RTCM3 and NMEA frames."""

    __slots__ = ("_nmea", "_parse", "undecoded")

    def __init__(self, parse: ParseUbx, nmea: NmeaDecoder) -> None:
        self._parse = parse
        self._nmea = nmea
        #: packets and sentences that did not decode
        self.undecoded = 0

    def decode(self, frames: Sequence[Frame]) -> None:
        parse = self._parse
        bad = 0
        texts: list[Frame] = []
        for frame in frames:
            payload = frame.payload
            if payload is None:
                if frame.text is not None:
                    texts.append(frame)
                continue
            if frame.type == UBX_TYPE:
                try:
                    msg = parse(payload)
                    if msg is None or msg.identity.startswith("UNKNOWN"):
                        raise ValueError("a message pyubx2 does not know")
                    frame.fields = ubx_fields(msg)
                except Exception:  # whatever a third-party parser raises on a device's bytes is their fault
                    bad += 1
            elif frame.type == RTCM3_TYPE:
                fields = rtcm3_fields(payload)
                if fields is None:
                    bad += 1
                else:
                    frame.fields = fields
        if texts:
            nmea = self._nmea
            nmea.decode(texts)
            bad += nmea.undecoded
            nmea.undecoded = 0
        if bad:
            self.undecoded += bad


def ubx_decoder() -> UbxDecoder | None:
    """A new UbxDecoder, or None when pyubx2 or pynmeagps is not installed."""
    parse, nmea = pyubx2_parser(), pynmeagps_parser()
    if parse is None or nmea is None:
        return None
    return UbxDecoder(parse, NmeaDecoder(nmea))
