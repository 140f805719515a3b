"""NMEA 0183 sentences into ``Frame.fields``, by pynmeagps (the ``[gnss]`` extra).

Every sentence type pynmeagps knows gets its fields as pynmeagps names them,
plus ``msg`` (``"GGA"``) and ``talker`` (``"GN"``). Positions are pynmeagps's
``lat``/``lon``: signed decimal degrees, south and west negative. Values are
made JSON-ready here: times and dates become ISO strings, an empty field
becomes None. A sentence pynmeagps cannot parse (an unknown type, a malformed
field it refuses) keeps its text, gets no fields and counts ``undecoded``.

The common sentences (GGA, RMC, GLL, VTG, GSA, GSV, ZDA) take a fast path
(``values.nmea_fast``) that gives the same fields as pynmeagps without its
per-sentence object; whatever it does not decode goes to pynmeagps.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from typing import Any

from firmware_host.frames import Frame
from firmware_host.values.nmea_fast import NmeaFastPath

Fields = dict[str, Any]
#: sentence bytes -> a pynmeagps NMEAMessage (raises on what it cannot parse)
Parse = Callable[[bytes], Any]

_TEMPORAL = (datetime.datetime, datetime.date, datetime.time)


def json_value(value: object) -> object:
    """``value`` as JSON can hold it: ISO text for times, None for an empty field."""
    kind = type(value)
    if kind is float or kind is int:  # the common case first: one type check
        return value
    if kind is str:
        return value or None
    if isinstance(value, _TEMPORAL):
        return value.isoformat()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)  # a type a newer pynmeagps may return: text rather than a failing sink


def message_fields(msg: Any) -> Fields:
    """A parsed message's public attributes, JSON-ready, with ``msg`` and ``talker``."""
    fields: Fields = {"msg": msg.msgID, "talker": msg.talker}
    for name, value in vars(msg).items():
        if name[0] != "_":
            fields[name] = json_value(value)
    return fields


def pynmeagps_parser() -> Parse | None:
    """pynmeagps's parser, or None when the extra is not installed."""
    try:
        from pynmeagps import VALMSGID, NMEAReader
    except ImportError:
        return None
    parse = NMEAReader.parse

    def parse_sentence(sentence: bytes) -> Any:
        # the codec has checked the checksum; an unknown sentence type raises
        return parse(sentence, validate=VALMSGID)

    return parse_sentence


class NmeaDecoder:
    """One device's NMEA decoder (a ``FieldDecoder``)."""

    __slots__ = ("_fast", "_parse", "_plain", "undecoded")

    def __init__(self, parse: Parse, fast: bool = True, compiled: bool = True) -> None:
        self._parse = parse
        path = NmeaFastPath(compiled) if fast else None
        #: the fast path for the common sentences (None: the library for all)
        self._fast = path.fields if path is not None else None
        #: its plain cases in C (None: not built, or not wanted)
        self._plain = path.plain if path is not None else None
        #: sentences pynmeagps could not parse
        self.undecoded = 0

    def decode(self, frames: Sequence[Frame]) -> None:
        parse, fast, plain = self._parse, self._fast, self._plain
        bad = 0
        for frame in frames:
            text = frame.text
            if text is None:
                continue
            if plain is not None:
                fields = plain(text)
                if fields is not None:
                    frame.fields = fields
                    continue
            if fast is not None:
                fields = fast(text)
                if fields is not None:
                    frame.fields = fields
                    continue
            try:
                msg = parse(text.encode("ascii", "replace"))
                if msg is None:
                    raise ValueError("no message")
                frame.fields = message_fields(msg)
            except Exception:  # whatever a third-party parser raises on a device's text is that text's fault
                bad += 1
        if bad:
            self.undecoded += bad
