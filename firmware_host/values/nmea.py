"""NMEA 0183 sentences into ``Frame.fields``, by pynmeagps (the ``[gnss]`` extra).

Every sentence type pynmeagps knows gets its fields as pynmeagps names them,
plus ``msg`` (``"GGA"``) and ``talker`` (``"GN"``). Positions are pynmeagps's
``lat``/``lon``: signed decimal degrees, south and west negative. Values are
made JSON-ready here: times and dates become ISO strings, an empty field
becomes None. A sentence pynmeagps cannot parse (an unknown type, a malformed
field it refuses) keeps its text, gets no fields and counts ``undecoded``.

Every standard type pynmeagps defines flat, with fixed groups or one open
group (GGA, GSV, HDG, XDR…) takes a fast path (``values.nmea_fast``, its
plain cases in C where built) that gives the same fields as pynmeagps without
its per-sentence object; whatever it does not decode goes to pynmeagps.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from typing import Any

from firmware_host.frames import Frame
from firmware_host.values.nmea_fast import NmeaFastPath, Shape, shape_of

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


def library_tables() -> tuple[dict[str, Shape], frozenset[str]]:
    """From the installed pynmeagps: the shapes of its standard sentence types
    that the fast path reads (``shape_of``), and its talkers; empty without
    the library."""
    try:
        from pynmeagps import nmeatypes_core as core
        from pynmeagps.nmeatypes_get import NMEA_PAYLOADS_GET
    except ImportError:
        return {}, frozenset()
    shapes: dict[str, Shape] = {}
    for msg, definition in NMEA_PAYLOADS_GET.items():
        if msg not in core.NMEA_MSGIDS or msg in core.NMEA_PREFIX_PROP:
            continue  # proprietary, or keyed by its first field: the library's
        shape = shape_of(definition)
        if shape is not None:
            shapes[msg] = shape
    return shapes, frozenset(core.NMEA_TALKERS)


def library_refusal() -> Callable[[str], bool] | None:
    """pynmeagps's first check, as its ``NMEAMessage`` makes it (with VALMSGID):
    a sentence whose talker or type it does not know (AIS ``!AIVDM``, an
    unknown ``$GPGLC``) is refused whatever follows, so it is counted
    ``undecoded`` without the library's exception (about 50 µs). It only says
    True where pynmeagps refuses too; None without the library."""
    try:
        from pynmeagps import nmeatypes_core as core
    except ImportError:
        return None
    talkers = frozenset(core.NMEA_TALKERS)
    types = frozenset(core.NMEA_MSGIDS) | frozenset(core.NMEA_MSGIDS_PROP) | frozenset(core.NMEA_PREFIX_PROP)

    def refused(text: str) -> bool:
        # pynmeagps's get_parts, on the bytes parse_sentence gives it
        content, star, _ = text.encode("ascii", "replace").decode("ascii").strip("$\r\n").partition("*")
        if not star:
            return False  # badly formed: the library refuses it itself
        head = content.split(",", 1)[0]
        split = 1 if head[:1] == "P" else 2
        return head[:split] not in talkers or head[split:] not in types

    return refused


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
    """One device's NMEA decoder (a ``FieldDecoder``). ``parse`` is pynmeagps's
    (``pynmeagps_parser``): the fast path and the refusal by head give what
    that parser gives, and would not be right for another."""

    __slots__ = ("_fast", "_parse", "_plain", "_refused", "undecoded")

    def __init__(self, parse: Parse, fast: bool = True, compiled: bool = True) -> None:
        self._parse = parse
        path = NmeaFastPath(compiled, *library_tables()) if fast else None
        #: the fast path for the common sentences (None: the library for all)
        self._fast = path.fields if path is not None else None
        #: its plain cases in C (None: not built, or not wanted)
        self._plain = path.plain if path is not None else None
        #: what the library refuses by its head alone (with the fast path only: the
        #: library-only decoder is what the tests hold the rest to)
        self._refused = library_refusal() if fast else None
        #: sentences pynmeagps could not parse
        self.undecoded = 0

    def decode(self, frames: Sequence[Frame]) -> None:
        parse, fast, plain, refused = self._parse, self._fast, self._plain, self._refused
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
            if refused is not None and refused(text):
                bad += 1
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
