"""NMEA sentences into fields, fast: the same fields pynmeagps gives.

pynmeagps builds an object per sentence (tens of µs each); this reads the
same text into the same dict that ``message_fields`` makes of pynmeagps's
object: the same keys in the same order, the same values of the same types.
Each rule below copies what pynmeagps 1.1 does (``NMEAMessage.str2val``,
``dmm2ddd``, ``time2utc``, ``date2utc``, and its signing of ``lat`` and
``lon`` by the hemisphere fields after them), and ``tests/test_nmea_fast.py``
holds the two equal on every sentence of the captures in ``tests/data`` and
on edge and fuzzed sentences of every type.

What it reads: the seven common types (GGA, RMC, GLL, VTG, GSA, GSV, ZDA),
whose payload definitions are written out below (a test holds them equal to
the library's), and every other type whose definition pynmeagps gives flat,
with groups of a fixed count, or with one open group (``shape_of``), in the
kinds read here (``readable``): its owner passes those in from the installed
library (``nmea.library_tables``).

It only answers where it is sure: a sentence of another type or talker, an
odd shape (a second ``*``, a non-ASCII character, a huge GSV) or a number
that does not parse gives None, and the caller asks pynmeagps, which then
decodes it or refuses it as it always did. So a malformed sentence is
counted ``undecoded`` exactly when pynmeagps would refuse it.

It is used only beside pynmeagps (the ``[gnss]`` extra): without the library
no NMEA sentence is decoded, so whether a sentence gets fields never depends
on its type being one read here.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from firmware_host.compiled import turned_off

if TYPE_CHECKING:
    from firmware_host.values import _nmea_c


def _load_compiled() -> tuple[type[_nmea_c.Parser], int] | None:
    """The plain cases in C (``_nmea_c.c``) and the most payload fields they
    take, built at install where a C compiler and the Python headers are found
    (setup.py); without it the Python below decodes the same sentences into the
    same fields. ``FIRMWARE_HOST_PURE=1`` turns it off, as it does the compiled COBS."""
    if turned_off():
        return None
    try:
        from firmware_host.values._nmea_c import MAX_PAYLOAD, Parser
    except ImportError:
        return None
    return Parser, MAX_PAYLOAD


_COMPILED = _load_compiled()

__all__ = [
    "FAST_TYPES",
    "KINDS",
    "MAX_REPEATS",
    "SHAPES",
    "SPECS",
    "TALKERS",
    "NmeaFastPath",
    "Shape",
    "compiled_available",
    "readable",
    "shape_of",
]

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


#: pynmeagps 1.1's payload definitions (``NMEA_PAYLOADS_GET``) of six of the
#: seven types; a test holds them equal to the installed library's. GSA's 12
#: satellites are written out as pynmeagps names them (``svid_01``); GSV's
#: repeated groups are its ``Shape`` (below).
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
#: GSV's (and any open group's) repeats decoded here: receivers send at most four; more go to pynmeagps
MAX_REPEATS = 8


@dataclass(frozen=True, slots=True)
class Shape:
    """A sentence type's fields by payload length, as pynmeagps reads them: the
    ``head`` fields, then a ``group`` repeated as often as whole copies of it
    follow (pynmeagps's ``"None"`` repeats, as in GSV), then the ``tail``; a
    sentence cut short has the fields it holds. A flat type is its head alone,
    and takes longer sentences too (the extra fields ignored, as pynmeagps
    does); a type with a group leaves more than ``MAX_REPEATS`` to the library."""

    head: Spec
    group: Spec = ()
    tail: Spec = ()

    @property
    def most(self) -> int:
        """The most payload fields read here."""
        return len(self.head) + len(self.group) * MAX_REPEATS + len(self.tail)

    def spec(self, cells: int) -> Spec:
        """The fields of a payload of ``cells`` fields (``cells <= most``)."""
        if not self.group:
            return self.head[:cells]
        repeats = max(0, cells - len(self.head)) // len(self.group)  # pynmeagps's int(rest / len(group))
        body = tuple((f"{name}_{i:02d}", kind) for i in range(1, repeats + 1) for name, kind in self.group)
        return (self.head + body + self.tail)[:cells]


_GSV = Shape(
    (("numMsg", "IN"), ("msgNum", "IN"), ("numSV", "IN")),
    (("svid", "IN"), ("elv", "IN"), ("az", "IN"), ("cno", "IN")),
    (("signalID", "HX"),),
)
#: the seven types' shapes
SHAPES: dict[str, Shape] = {msg: Shape(spec) for msg, spec in SPECS.items()} | {"GSV": _GSV}
FAST_TYPES = frozenset(SHAPES)

_TEXT_KINDS = frozenset({"CH", "ST", "HX", "LAD", "LND"})
#: every kind read here: pynmeagps's ``str2val`` for each (its DTL, DM, QS, Y1, Z2 are not)
KINDS = _TEXT_KINDS | {"IN", "DE", "TM", "DT", "LA", "LN"}
_FUNCTIONS = {"TM": "_time", "DT": "_date", "LA": "_degrees", "LN": "_degrees"}
#: pynmeagps signs only the fields named lat and lon, by the hemisphere fields of these
#: kinds that follow them ("S" and "W" negative)
_HEMISPHERES = {"lat": ("LA", "LAD", "S"), "lon": ("LN", "LND", "W")}


def readable(spec: Spec) -> bool:
    """Whether sentences of ``spec`` (a flat pynmeagps payload definition, as
    (name, kind) pairs) are read here as pynmeagps reads them: only the kinds
    above, no name that ``message_fields`` would drop or clash with, and lat
    and lon (the names pynmeagps signs) only as positions."""
    names = [name for name, _ in spec]
    kinds = dict(spec)
    return (
        all(kind in KINDS for _, kind in spec)
        and len(set(names)) == len(names)
        and not any(name[:1] == "_" or name in ("msg", "talker") for name in names)
        and all(kinds.get(name, kind) == kind for name, (kind, _, _) in _HEMISPHERES.items())
    )


def shape_of(definition: Mapping[str, object]) -> Shape | None:
    """The shape of a pynmeagps payload definition (name -> kind, a group
    ``"…_grp"`` -> (repeats, {name: kind})), or None where it is not read here:
    a group counted by a field or nested, a second open group, a kind or name
    ``readable`` refuses. A group of a fixed count is written out (GSA's 12
    ``svid_01``…), an open one (``"None"``) becomes the shape's group."""
    head: list[tuple[str, str]] = []
    tail: list[tuple[str, str]] = []
    group: Spec = ()
    for name, kind in definition.items():
        grouped = name[-4:] == "_grp"  # how pynmeagps tells a group
        if isinstance(kind, str) and not grouped:
            (tail if group else head).append((name, kind))
            continue
        if not grouped or not isinstance(kind, tuple) or len(kind) != 2 or not isinstance(kind[1], Mapping):
            return None
        repeats, fields = kind
        members = tuple(fields.items())
        if not members or not all(isinstance(k, str) and isinstance(v, str) for k, v in members):
            return None
        if repeats == "None" and not group:
            group = members
        elif type(repeats) is int and not group:
            head += [(f"{n}_{i:02d}", k) for i in range(1, repeats + 1) for n, k in members]
        else:
            return None
    shape = Shape(tuple(head), group, tuple(tail))
    return shape if readable(shape.spec(shape.most)) else None


def _hemisphere(spec: Spec, i: int) -> tuple[int, str] | None:
    """The field that signs field ``i`` and the letter that makes it negative, or
    None. pynmeagps re-signs ``lat`` at each hemisphere field read after it
    (``lon`` likewise), so the last one in ``spec`` decides."""
    name, kind = spec[i]
    rule = _HEMISPHERES.get(name)
    if rule is None or rule[0] != kind:
        return None
    last = max((j for j in range(i + 1, len(spec)) if spec[j][1] == rule[1]), default=None)
    return None if last is None else (last, rule[2])


def _expression(spec: Spec, i: int) -> str:
    """Python source of field ``i``'s value, read from ``c[i + 1]``."""
    kind = spec[i][1]
    cell = f"c[{i + 1}]"
    if kind in _TEXT_KINDS:
        return f"{cell} or None"
    if kind == "IN":
        return f"int({cell}) if {cell} else None"
    if kind == "DE":
        return f"float({cell}) if {cell} else None"
    signed = _hemisphere(spec, i)
    if signed is not None:
        return f"_signed({cell}, c[{signed[0] + 1}], {signed[1]!r})"
    return f"{_FUNCTIONS[kind]}({cell})"


#: what ``_nmea_c`` does with a field (its ``enum``): text, int, float, a position
#: unsigned, signed by a later field being "S" or "W", a time, a date
_OP_TEXT, _OP_INT, _OP_FLOAT, _OP_DEG, _OP_DEG_S, _OP_DEG_W, _OP_TIME, _OP_DATE = range(8)
#: a spec for ``_nmea_c``: (key, op, the signing field or -1) per field
CSpec = tuple[tuple[str, int, int], ...]


def _op(spec: Spec, i: int) -> tuple[str, int, int]:
    """Field ``i`` for ``_nmea_c``: ``_expression``'s choice, as numbers."""
    name, kind = spec[i]
    if kind in _TEXT_KINDS:
        return name, _OP_TEXT, -1
    if kind == "IN":
        return name, _OP_INT, -1
    if kind == "DE":
        return name, _OP_FLOAT, -1
    signed = _hemisphere(spec, i)
    if signed is not None:
        return name, _OP_DEG_S if signed[1] == "S" else _OP_DEG_W, signed[0]
    return name, {"TM": _OP_TIME, "DT": _OP_DATE, "LA": _OP_DEG, "LN": _OP_DEG}[kind], -1


def compiled_available() -> bool:
    """Whether the C plain cases are in use: built at install, not turned off."""
    return _COMPILED is not None


def _compile(msg: str, spec: Spec) -> Build:
    """One function building ``spec``'s fields as a single dict display: no
    loop, no call per text or number field (measured against a loop over
    converters: GGA 6.1 -> 4.3 µs, VTG 2.0 -> 1.4 µs). Its source is made only
    of the specs' names (as ``repr``) and this module's converters, never of a
    sentence's text."""
    items = "".join(f"{name!r}: {_expression(spec, i)}, " for i, (name, _) in enumerate(spec))
    source = f"def build(talker, c):\n    return {{'msg': {msg!r}, 'talker': talker, {items}}}\n"
    scope: dict[str, Any] = {"_time": _time, "_date": _date, "_degrees": _degrees, "_signed": _signed}
    exec(compile(source, f"<nmea_fast {msg} {len(spec)}>", "exec"), scope)
    return cast(Build, scope["build"])


class NmeaFastPath:
    """One decoder's fast path: the seven types of ``SHAPES`` (with the talkers
    of ``TALKERS``), and the more ``shapes`` and ``talkers`` its owner gives it
    (``nmea.library_tables``: every type of pynmeagps's that ``shape_of`` reads,
    every talker it knows). A head ("GPGGA") is learnt the first time it comes,
    and each (type, field count) gets its builder then (about 0.3 ms): so
    importing costs nothing, and a device holds only what it sends."""

    __slots__ = ("_builders", "_c_most", "_cspecs", "_heads", "_parser", "_shapes", "_talkers", "plain")

    def __init__(
        self, compiled: bool = True, shapes: Mapping[str, Shape] | None = None, talkers: Iterable[str] = ()
    ) -> None:
        #: per type its shape; the seven's own over a library's
        self._shapes: dict[str, Shape] = {
            msg: shape for msg, shape in (shapes or {}).items() if readable(shape.spec(shape.most))
        }
        self._shapes |= SHAPES
        #: a "P…" head is proprietary to pynmeagps (talker "P"), never one of these
        self._talkers = frozenset(t for t in (*TALKERS, *talkers) if len(t) == 2 and t[0] != "P")
        #: per type, its builders by payload length (None: not compiled yet)
        self._builders: dict[str, list[Build | None]] = {}
        #: per type, its specs for C (one per type: every talker's head shares them)
        self._cspecs: dict[str, tuple[CSpec, ...]] = {}
        #: "GPGGA" -> ("GP", "GGA", GGA's builders, GGA's shape), for the heads seen so far
        self._heads: dict[str, tuple[str, str, list[Build | None], Shape]] = {}
        #: the plain sentences in C (None: not built, or not wanted); it learns each head with this
        self._parser = _COMPILED[0]() if compiled and _COMPILED is not None else None
        #: the most payload fields C takes: a type that may have more stays with the Python path
        self._c_most = _COMPILED[1] if _COMPILED is not None else 0
        #: its fields, or None where ``fields`` below must decide
        self.plain: Callable[[str], Fields | None] | None = self._parser.fields if self._parser else None

    @property
    def types(self) -> frozenset[str]:
        """The sentence types decoded here."""
        return frozenset(self._shapes)

    @property
    def talkers(self) -> frozenset[str]:
        """The talkers decoded here."""
        return self._talkers

    def _learn(self, head: str) -> tuple[str, str, list[Build | None], Shape] | None:
        """``head``'s entry when its talker and type are decoded here (and C's with it)."""
        talker, msg = head[:2], head[2:]
        shape = self._shapes.get(msg)
        if shape is None or talker not in self._talkers:
            return None
        builders = self._builders.get(msg)
        if builders is None:
            builders = self._builders[msg] = [None] * (shape.most + 1)
        known = self._heads[head] = (talker, msg, builders, shape)
        if self._parser is not None and shape.most <= self._c_most:
            cspecs = self._cspecs.get(msg)
            if cspecs is None:
                specs = (shape.spec(n) for n in range(shape.most + 1))
                cspecs = self._cspecs[msg] = tuple(tuple(_op(spec, i) for i in range(len(spec))) for spec in specs)
            self._parser.add(head, talker, msg, bool(shape.group), cspecs)
        return known

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
            known = self._learn(cells[0])
            if known is None:
                return None
        talker, msg, builders, shape = known
        payload = len(cells) - 1
        if payload >= len(builders):
            if shape.group:
                return None  # more repeats than built for: the library's
            payload = len(builders) - 1  # extra fields: ignored, as pynmeagps does
        build = builders[payload]
        if build is None:
            build = builders[payload] = _compile(msg, shape.spec(payload))
        try:
            return build(talker, cells)
        except ValueError:  # a number pynmeagps would refuse: let it
            return None
