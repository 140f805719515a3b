"""The common NMEA sentences (GGA, RMC, GLL, VTG, GSA, GSV, ZDA) into fields, fast.

pynmeagps builds an object per sentence (tens of µs each); this reads the
same text into the same dict that ``message_fields`` makes of pynmeagps's
object: the same keys in the same order, the same values of the same types.
Each rule below copies what pynmeagps 1.1 does (``NMEAMessage.str2val``,
``dmm2ddd``, ``time2utc``, ``date2utc``), and ``tests/test_nmea_fast.py``
holds the two equal on every sentence of the captures in ``tests/data``.

It only answers where it is sure: a sentence of another type or talker, an
odd shape (a second ``*``, a non-ASCII character, a huge GSV) or a number
that does not parse gives None, and the caller asks pynmeagps, which then
decodes it or refuses it as it always did. So a malformed common sentence
is counted ``undecoded`` exactly when pynmeagps would refuse it.

It is used only beside pynmeagps (the ``[gnss]`` extra): without the library
no NMEA sentence is decoded, so whether a sentence gets fields never depends
on its type being one of these seven.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from firmware_host.values import _nmea_c


def _load_compiled() -> type[_nmea_c.Parser] | None:
    """The plain cases in C (``_nmea_c.c``), built at install where a C compiler
    and the Python headers are found (setup.py); without it the Python below
    decodes the same sentences into the same fields. ``FIRMWARE_HOST_PURE=1``
    turns it off, as it does the compiled COBS."""
    if os.environ.get("FIRMWARE_HOST_PURE", "0") not in ("", "0"):
        return None
    try:
        from firmware_host.values._nmea_c import Parser
    except ImportError:
        return None
    return Parser


_COMPILED = _load_compiled()

__all__ = ["FAST_TYPES", "SPECS", "TALKERS", "NmeaFastPath", "compiled_available", "gsv_spec"]

Fields = dict[str, Any]
Spec = tuple[tuple[str, str], ...]
#: (talker, the sentence split at commas) -> its fields; raises ValueError
#: where pynmeagps would refuse a number
Build = Callable[[str, list[str]], Fields]

#: the talkers decoded here, all in pynmeagps's ``NMEA_TALKERS`` (a test checks);
#: any other goes to pynmeagps, which knows the rest or refuses it
TALKERS = frozenset({"GP", "GN", "GL", "GA", "GB", "BD", "GQ", "GI", "II", "IN"})


def _degrees(cell: str) -> float | None:
    """LA, LN without its hemisphere field: (d)ddmm.mmm as degrees, pynmeagps's
    ``dmm2ddd`` step for step (its rounding to 10 places included); None
    where it gives "" (it never refuses a position)."""
    dp = cell.find(".")
    if dp < 4:
        return None
    try:
        return round(abs(float(cell[0 : dp - 2])) + float(cell[dp - 2 :]) / 60, 10)
    except ValueError:
        return None


def _signed(cell: str, hemisphere: str, negative: str) -> float | None:
    """LA, LN with its NS or EW: pynmeagps sets -abs for "S" or "W" (exactly;
    "s" is north), abs for anything else."""
    degrees = _degrees(cell)
    if degrees is None:
        return None
    return -abs(degrees) if hemisphere == negative else abs(degrees)


def _time_strptime(cell: str) -> str | None:
    """pynmeagps's ``time2utc`` itself (strptime), as ISO text; for the odd forms."""
    if len(cell) == 6:
        cell += ".00"
    try:
        return datetime.datetime.strptime(cell, "%H%M%S.%f").time().isoformat()
    except ValueError:
        return None


def _time(cell: str) -> str | None:
    """TM: hhmmss[.f…] as ``time.isoformat()``. The plain form is cut up here;
    anything else (one-digit hours, a leap second, seven decimals) goes
    through strptime as pynmeagps does, whose result it then is."""
    n = len(cell)
    if not n:
        return None
    if n == 6 or (8 <= n <= 13 and cell[6] == "."):
        hh, mm, ss, frac = cell[0:2], cell[2:4], cell[4:6], cell[7:]
        if (hh + mm + ss + frac).isdigit() and hh < "24" and mm < "60" and ss < "60":
            if not frac.strip("0"):  # no microseconds: isoformat leaves them out
                return f"{hh}:{mm}:{ss}"
            return f"{hh}:{mm}:{ss}.{frac.ljust(6, '0')}"
    return _time_strptime(cell)


def _date_strptime(cell: str) -> str | None:
    """pynmeagps's ``date2utc`` itself (ddmmyy by strptime), as ISO text."""
    try:
        return datetime.datetime.strptime(cell, "%d%m%y").date().isoformat()
    except ValueError:
        return None


# the last day of each month, as text ("29" for February: the 29th is checked apart)
_LAST_DAY = {"01": "31", "02": "29", "03": "31", "04": "30", "05": "31", "06": "30",
             "07": "31", "08": "31", "09": "30", "10": "31", "11": "30", "12": "31"}  # fmt: skip


def _date(cell: str) -> str | None:
    """DT: ddmmyy as ``date.isoformat()``, years 69–99 in the 1900s as %y reads
    them. Compared as text (cheaper than building a date); anything but six
    digits of a real date goes through strptime."""
    if not cell:
        return None
    if len(cell) == 6 and cell.isdigit():
        dd, mm, yy = cell[0:2], cell[2:4], cell[4:6]
        last = _LAST_DAY.get(mm)
        if last is not None and "01" <= dd <= last:
            year = int(yy)
            year += 2000 if year <= 68 else 1900
            # 29 February only in a leap year (2000 is one; 1900 is before %y's 1969)
            if dd != "29" or mm != "02" or year % 4 == 0:
                return f"{year}-{mm}-{dd}"
    return _date_strptime(cell)


#: pynmeagps 1.1's payload definitions (``NMEA_PAYLOADS_GET``) of the seven
#: types; a test holds them equal to the installed library's. GSA's 12
#: satellites and GSV's repeated groups are written out as pynmeagps names
#: them (``svid_01``), GSV's per length (below).
SPECS: dict[str, tuple[tuple[str, str], ...]] = {
    "GGA": (
        ("time", "TM"), ("lat", "LA"), ("NS", "LAD"), ("lon", "LN"), ("EW", "LND"), ("quality", "IN"),
        ("numSV", "IN"), ("HDOP", "DE"), ("alt", "DE"), ("altUnit", "CH"), ("sep", "DE"), ("sepUnit", "CH"),
        ("diffAge", "DE"), ("diffStation", "IN"),
    ),
    "RMC": (
        ("time", "TM"), ("status", "CH"), ("lat", "LA"), ("NS", "LAD"), ("lon", "LN"), ("EW", "LND"),
        ("spd", "DE"), ("cog", "DE"), ("date", "DT"), ("mv", "DE"), ("mvEW", "ST"), ("posMode", "CH"),
        ("navStatus", "CH"),
    ),
    "GLL": (
        ("lat", "LA"), ("NS", "LAD"), ("lon", "LN"), ("EW", "LND"), ("time", "TM"), ("status", "ST"),
        ("posMode", "ST"),
    ),
    "VTG": (
        ("cogt", "DE"), ("cogtUnit", "CH"), ("cogm", "DE"), ("cogmUnit", "CH"), ("sogn", "DE"),
        ("sognUnit", "CH"), ("sogk", "DE"), ("sogkUnit", "CH"), ("posMode", "CH"),
    ),
    "GSA": (
        ("opMode", "CH"), ("navMode", "IN"), *((f"svid_{i:02d}", "IN") for i in range(1, 13)),
        ("PDOP", "DE"), ("HDOP", "DE"), ("VDOP", "DE"), ("systemId", "HX"),
    ),
    "ZDA": (("time", "TM"), ("day", "IN"), ("month", "IN"), ("year", "IN"), ("ltzh", "ST"), ("ltzn", "ST")),
}  # fmt: skip
_GSV_HEAD: Spec = (("numMsg", "IN"), ("msgNum", "IN"), ("numSV", "IN"))
_GSV_GROUP: Spec = (("svid", "IN"), ("elv", "IN"), ("az", "IN"), ("cno", "IN"))
#: GSV's groups of four decoded here (receivers send at most four); more go to pynmeagps
_GSV_MAX_GROUPS = 8
#: the most fields a sentence of each type is cut into here (more are ignored, as in pynmeagps)
_MAX_CELLS = {msg: len(spec) for msg, spec in SPECS.items()} | {"GSV": 3 + 4 * _GSV_MAX_GROUPS + 1}
FAST_TYPES = frozenset(_MAX_CELLS)

_TEXT_KINDS = frozenset({"CH", "ST", "HX", "LAD", "LND"})
_FUNCTIONS = {"TM": "_time", "DT": "_date", "LA": "_degrees", "LN": "_degrees"}
_HEMISPHERES = {"lat": ("NS", "S"), "lon": ("EW", "W")}


def gsv_spec(cells: int) -> Spec:
    """GSV's fields for a payload of ``cells`` fields, as pynmeagps reads it: as
    many whole groups of four as follow the three heads, then signalID from the
    next field if there is one, anything after that ignored."""
    groups = max(0, cells - 3) // 4
    body = tuple((f"{name}_{i:02d}", kind) for i in range(1, groups + 1) for name, kind in _GSV_GROUP)
    return (_GSV_HEAD + body + (("signalID", "HX"),))[:cells]


def _expression(spec: Spec, i: int) -> str:
    """Python source of field ``i``'s value, read from ``c[i + 1]``."""
    name, kind = spec[i]
    cell = f"c[{i + 1}]"
    if kind in _TEXT_KINDS:
        return f"{cell} or None"
    if kind == "IN":
        return f"int({cell}) if {cell} else None"
    if kind == "DE":
        return f"float({cell}) if {cell} else None"
    if name in _HEMISPHERES and i + 1 < len(spec) and spec[i + 1][0] == _HEMISPHERES[name][0]:
        return f"_signed({cell}, c[{i + 2}], {_HEMISPHERES[name][1]!r})"
    return f"{_FUNCTIONS[kind]}({cell})"


#: what ``_nmea_c`` does with a field (its ``enum``): text, int, float, a position
#: unsigned, signed by the next cell being "S" or "W", a time, a date
_OP_TEXT, _OP_INT, _OP_FLOAT, _OP_DEG, _OP_DEG_S, _OP_DEG_W, _OP_TIME, _OP_DATE = range(8)


def _op(spec: Spec, i: int) -> int:
    """Field ``i``'s op for ``_nmea_c``: ``_expression``'s choice, as a number."""
    name, kind = spec[i]
    if kind in _TEXT_KINDS:
        return _OP_TEXT
    if kind == "IN":
        return _OP_INT
    if kind == "DE":
        return _OP_FLOAT
    if name in _HEMISPHERES and i + 1 < len(spec) and spec[i + 1][0] == _HEMISPHERES[name][0]:
        return _OP_DEG_S if _HEMISPHERES[name][1] == "S" else _OP_DEG_W
    return {"TM": _OP_TIME, "DT": _OP_DATE, "LA": _OP_DEG, "LN": _OP_DEG}[kind]


def compiled_available() -> bool:
    """Whether the C plain cases are in use: built at install, not turned off."""
    return _COMPILED is not None


def _compiled() -> Callable[[str], Fields | None] | None:
    """The C parser's ``fields`` over the same specs, or None when it was not built."""
    if _COMPILED is None:
        return None
    specs: dict[str, tuple[tuple[tuple[str, int], ...], ...]] = {}
    for msg, most in _MAX_CELLS.items():
        shapes = (gsv_spec(n) if msg == "GSV" else SPECS[msg][:n] for n in range(most + 1))
        specs[msg] = tuple(tuple((name, _op(spec, i)) for i, (name, _) in enumerate(spec)) for spec in shapes)
    heads = {talker + msg: (talker, msg, msg == "GSV", specs[msg]) for talker in TALKERS for msg in specs}
    return _COMPILED(heads).fields


def _compile(msg: str, spec: Spec) -> Build:
    """One function building ``spec``'s fields as a single dict display: no
    loop, no call per text or number field (measured against a loop over
    converters: GGA 6.1 -> 4.3 µs, VTG 2.0 -> 1.4 µs). Its source is made only of ``SPECS``'s names (as
    ``repr``) and this module's converters, never of a sentence's text."""
    items = "".join(f"{name!r}: {_expression(spec, i)}, " for i, (name, _) in enumerate(spec))
    source = f"def build(talker, c):\n    return {{'msg': {msg!r}, 'talker': talker, {items}}}\n"
    scope: dict[str, Any] = {"_time": _time, "_date": _date, "_degrees": _degrees, "_signed": _signed}
    exec(compile(source, f"<nmea_fast {msg} {len(spec)}>", "exec"), scope)
    return cast(Build, scope["build"])


class NmeaFastPath:
    """One decoder's fast path. Each (type, field count) gets its builder the
    first time a sentence of that shape comes (about 0.3 ms), so importing
    costs nothing and a device compiles only the few shapes it sends."""

    __slots__ = ("_heads", "plain")

    def __init__(self, compiled: bool = True) -> None:
        #: the plain sentences in C (None: not built, or not wanted): its fields, or
        #: None where ``fields`` below must decide
        self.plain = _compiled() if compiled else None
        #: per type, its builders by payload length (None: not compiled yet)
        builders: dict[str, list[Build | None]] = {msg: [None] * (n + 1) for msg, n in _MAX_CELLS.items()}
        #: "GPGGA" -> ("GP", "GGA", GGA's builders): one lookup checks talker and type
        self._heads = {talker + msg: (talker, msg, builders[msg]) for talker in TALKERS for msg in builders}

    def fields(self, text: str) -> Fields | None:
        """``text``'s fields as pynmeagps and ``message_fields`` give them, or
        None when this does not decode it (the caller asks pynmeagps)."""
        star = len(text) - 3
        # "$TTMMM,...*HH" with one "*", ASCII (pynmeagps reads the text after
        # encode("ascii", "replace"); its strip("$") also eats a second "$",
        # which then is no talker here)
        if star < 6 or text[0] != "$" or text.find("*") != star or not text.isascii():
            return None
        cells = text[1:star].split(",")
        known = self._heads.get(cells[0])
        if known is None:
            return None
        talker, msg, builders = known
        payload = len(cells) - 1
        if payload >= len(builders):
            if msg == "GSV":
                return None  # more satellites than built for: the library's
            payload = len(builders) - 1  # extra fields: ignored, as pynmeagps does
        build = builders[payload]
        if build is None:
            spec = gsv_spec(payload) if msg == "GSV" else SPECS[msg][:payload]
            build = builders[payload] = _compile(msg, spec)
        try:
            return build(talker, cells)
        except ValueError:  # a number pynmeagps would refuse: let it
            return None
