"""The NMEA fast path (``values.nmea_fast``) against pynmeagps, field for field.

The oracle is pynmeagps itself, through the decoder's library-only path
(``NmeaDecoder(parse, fast=False)``): for every sentence of every capture in
``tests/data``, of the emulated receiver, and of edge and fuzzed sentences,
the decoder with the fast path gives the same fields (keys, order, types and
values) and the same ``undecoded`` count as without it.
"""

from __future__ import annotations

import functools
import os
import random
import struct
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_host import Frame
from firmware_host.codecs.nmea import NmeaCodec, nmea_checksum
from firmware_host.compiled import turned_off
from firmware_host.emulation.generators import GnssGenerator
from firmware_host.values.nmea import NmeaDecoder, library_tables, pynmeagps_parser
from firmware_host.values.nmea_fast import (
    FAST_TYPES,
    MAX_REPEATS,
    SHAPES,
    SPECS,
    TALKERS,
    NmeaFastPath,
    Shape,
    compiled_available,
    shape_of,
)

pynmeagps = pytest.importorskip("pynmeagps")

pytestmark = pytest.mark.timeout(120)

DATA = Path(__file__).resolve().parent / "data"
# the NMEA captures (the binary u-blox ones under gpsd/ubx/ hold no sentences)
CAPTURES = sorted((DATA / "gpsd").glob("*.log"))


def sentence(body: str) -> str:
    return f"${body}*{nmea_checksum(body.encode('latin-1')):02X}"


def library_decoder() -> NmeaDecoder:
    parse = pynmeagps_parser()
    assert parse is not None
    return NmeaDecoder(parse, fast=False)


def fast_path(compiled: bool = True) -> NmeaFastPath:
    """The fast path as the decoder builds it: the seven and the library's flat types."""
    return NmeaFastPath(compiled, *library_tables())


#: the fast path's types and talkers, from the installed library
TYPES, ALL_TALKERS = fast_path().types, fast_path().talkers


def fast_decoder(compiled: bool = True) -> NmeaDecoder:
    parse = pynmeagps_parser()
    assert parse is not None
    return NmeaDecoder(parse, compiled=compiled)


def exact(fields: dict[str, Any] | None) -> list[tuple[str, str, str]] | None:
    """Keys in order, each value's type and repr: 1 == 1.0 and nan != nan do not blur it."""
    if fields is None:
        return None
    return [(k, type(v).__name__, repr(v)) for k, v in fields.items()]


def outcome(decoder: NmeaDecoder, text: str) -> tuple[list[tuple[str, str, str]] | None, int]:
    """One sentence through ``decoder``: its fields, and whether it counted undecoded."""
    frame = Frame("gps", 0, None, 0.0, None, text)
    before = decoder.undecoded
    decoder.decode([frame])
    return exact(frame.fields), decoder.undecoded - before


@functools.cache
def decoders() -> tuple[NmeaDecoder, NmeaDecoder, NmeaDecoder, NmeaFastPath]:
    """The library alone, the decoder, the decoder without C, and a fast path:
    made once (2 ms each) and shared, as a device's are over its sentences;
    ``outcome`` counts each sentence's undecoded by difference."""
    return library_decoder(), fast_decoder(), fast_decoder(compiled=False), fast_path()


class Taken(NamedTuple):
    python: int  # sentences the Python fast path decoded itself
    compiled: int  # of those, the ones its C plain cases decoded (0 where not built)


def assert_same(texts: list[str]) -> Taken:
    """Each sentence decodes the same every way: the library alone, the decoder
    with the fast path (its C plain cases first where built) and with the Python
    fast path only; and the C answer, where it gives one, is the Python path's."""
    lib, fast, python, path = decoders()
    taken = compiled = 0
    for text in texts:
        expected = outcome(lib, text)
        assert outcome(fast, text) == expected, text
        assert outcome(python, text) == expected, text
        mine = path.fields(text)
        if mine is not None:
            taken += 1
            assert expected[0] == exact(mine), text
        plain = path.plain(text) if path.plain is not None else None
        if plain is not None:
            compiled += 1
            assert exact(plain) == exact(mine), text
    return Taken(taken, compiled)


def common(text: str) -> bool:
    """A sentence of the seven types with a talker the fast path takes."""
    return text[:1] == "$" and text[3:6] in FAST_TYPES and text[1:3] in TALKERS and text[6:7] in (",", "*")


def known(text: str) -> bool:
    """A sentence of a type and talker the fast path takes (the seven's and the library's)."""
    head = text[1:].split(",", 1)[0].split("*", 1)[0]
    return text[:1] == "$" and head[:2] in ALL_TALKERS and head[2:] in TYPES


@functools.cache
def known_sentences() -> list[str]:
    """Every sentence of the captures that the fast path takes (read once for the suite)."""
    return [t for path in CAPTURES for t in capture(path) if known(t)]


def capture(path: Path) -> list[str]:
    lines = path.read_bytes().splitlines(keepends=True)
    data = b"".join(line for line in lines if not line.startswith(b"#"))
    return [f.text for f in NmeaCodec("gps").feed(data, 0.0) if f.text is not None]


# -- the fast path's tables are the library's ---------------------------------------------------


def test_the_specs_are_the_installed_pynmeagps_payload_definitions():
    from pynmeagps.nmeatypes_get import NMEA_PAYLOADS_GET

    for msg, spec in SPECS.items():
        expanded: list[tuple[str, str]] = []
        for name, kind in NMEA_PAYLOADS_GET[msg].items():
            if isinstance(kind, tuple):  # a group: (repeats, {name: kind})
                repeats, group = kind
                expanded += [(f"{n}_{i:02d}", k) for i in range(1, repeats + 1) for n, k in group.items()]
            else:
                expanded.append((name, kind))
        assert tuple(expanded) == spec, msg
    gsv = NMEA_PAYLOADS_GET["GSV"]
    assert list(gsv) == ["numMsg", "msgNum", "numSV", "group_sv_grp", "signalID"]
    assert gsv["group_sv_grp"] == ("None", {"svid": "IN", "elv": "IN", "az": "IN", "cno": "IN"})
    assert {"GGA", "RMC", "GLL", "VTG", "GSA", "GSV", "ZDA"} == FAST_TYPES
    # and the library's definitions read the generic way give the seven's shapes
    for msg, shape in SHAPES.items():
        assert shape_of(NMEA_PAYLOADS_GET[msg]) == shape, msg


def test_shape_of_reads_flat_fixed_and_open_groups_and_refuses_the_rest():
    flat = shape_of({"a": "IN", "b": "DE"})
    assert flat == Shape((("a", "IN"), ("b", "DE")))
    assert flat.spec(1) == (("a", "IN"),) and flat.most == 2
    fixed = shape_of({"a": "IN", "sv_grp": (2, {"id": "IN"}), "z": "HX"})
    assert fixed == Shape((("a", "IN"), ("id_01", "IN"), ("id_02", "IN"), ("z", "HX")))
    open_ = shape_of({"n": "IN", "x_grp": ("None", {"k": "CH", "v": "DE"}), "end": "HX"})
    assert open_ is not None and open_.most == 1 + 2 * MAX_REPEATS + 1
    assert open_.spec(0) == ()
    assert open_.spec(2) == (("n", "IN"), ("end", "HX"))  # no whole group: the next field is the tail's
    assert open_.spec(4) == (("n", "IN"), ("k_01", "CH"), ("v_01", "DE"), ("end", "HX"))
    assert open_.spec(6) == (("n", "IN"), ("k_01", "CH"), ("v_01", "DE"), ("k_02", "CH"), ("v_02", "DE"), ("end", "HX"))
    assert shape_of({"n": "IN", "x_grp": ("n", {"k": "CH"})}) is None  # counted by a field
    assert shape_of({"x_grp": ("None", {"k": "CH"}), "y_grp": ("None", {"k2": "CH"})}) is None
    assert shape_of({"x_grp": ("None", {"k": ("None", {"j": "CH"})})}) is None  # nested
    assert shape_of({"x": ("None", {"k": "CH"})}) is None  # a group pynmeagps would not take for one
    assert shape_of({"x_grp": "CH"}) is None
    assert shape_of({"a": "Y1"}) is None
    assert shape_of({"x_grp": ("None", {})}) is None


def test_lat_and_lon_are_read_here_only_as_positions():
    """pynmeagps re-signs whatever is named lat or lon by the hemisphere fields
    after it; here only positions are signed, so a type with a lat of another
    kind stays the library's."""
    from firmware_host.values.nmea_fast import readable

    assert readable((("lat", "LA"), ("NS", "LAD"), ("lon", "LN"), ("EW", "LND")))
    assert not readable((("lat", "DE"), ("NS", "LAD")))
    assert not readable((("lon", "IN"),))
    assert not readable((("msg", "ST"),))  # would clash with the "msg" key
    assert not readable((("when", "DTL"),))  # a kind not read here
    assert not readable((("a", "ST"), ("a", "ST")))


def test_the_talkers_are_pynmeagps_talkers_and_none_reads_as_proprietary():
    from pynmeagps.nmeatypes_core import NMEA_TALKERS

    assert set(NMEA_TALKERS) >= TALKERS
    assert not any(t.startswith("P") for t in TALKERS)  # pynmeagps splits "P..." as talker "P"


# -- every sentence we have ------------------------------------------------------------------------


@pytest.mark.parametrize("path", CAPTURES, ids=[p.name for p in CAPTURES])
def test_every_sentence_of_every_capture_decodes_as_pynmeagps_does(path):
    texts = capture(path)
    taken = assert_same(texts)
    # the fast path really decoded the captures' sentences of its types, not the library behind it
    assert taken.python == sum(map(known, texts)), path.name
    # and where C is built, it decoded every one of them (real receivers send only plain numbers)
    if compiled_available():
        assert taken.compiled == taken.python, path.name


def test_the_captures_hold_all_seven_types():
    seen = {t[3:6] for path in CAPTURES for t in capture(path) if common(t)}
    assert seen == FAST_TYPES


def test_the_emulated_receiver_decodes_as_pynmeagps_does():
    gen = GnssGenerator(5.0, random.Random(7), 1_700_000_000.0)
    texts = [str(item) for k in range(300) for item in gen.tick(k)]
    assert assert_same(texts).python == len(texts)


# -- edges ---------------------------------------------------------------------------------------

EDGES = [
    # empty and missing fields, truncated sentences
    "GPGGA,,,,,,,,,,,,,,",
    "GPGGA",
    "GPGGA,",
    "GPGGA,092750.000,5321.6802",
    "GPGGA,092750.000,5321.6802,S",
    "GPGGA,092750.000,5321.6802,S,00630.3372",
    "GPGGA,092750.000,5321.6802,S,00630.3372,W",
    "GPGGA,092750.000,5321.6802,S,00630.3372,W,1,8,1.03,61.7,M,55.2,M,,,extra,fields",
    "GNRMC,,V,,,,,,,,,,N",
    "GNRMC,171926.00,A,4404.14063,N,12118.85478,E,0.117,,180315,,,A,V",
    "GPGLL,,,,,,V,N",
    "GPVTG,,,,,,,,,N",
    "GNGSA,A,1,,,,,,,,,,,,,99.99,99.99,99.99,1",
    "GNGSA,A,3,01,02",
    "GPGSV,1,1,00",
    "GPGSV,1,1,00,",
    "GPGSV,1,1,01,05,,,",
    "GPGSV,1,1,01,05,,,,1",
    "GPGSV,1,1,01,05,,,,1,extra",
    "GPGSV,3,1,11,01,02,003,04,05,06,007,08,09,10,011,12,13,14,015,16,17,18,019,20,1",
    "GPGSV,1",
    "GPGSV,1,1,36," + ",".join(f"{i:02d},10,100,30" for i in range(1, 10)) + ",1",  # 9 groups: the library's
    "GPZDA,,,,,,",
    "GPZDA,171926.00,18,03,2015",
    # odd talkers: known to pynmeagps or not
    "GLGGA,092750.000,5321.6802,N,00630.3372,E,1,8,1.03,61.7,M,55.2,M,,",
    "BDGSA,A,3,01,,,,,,,,,,,,1.0,1.0,1.0",
    "GBGSV,1,1,01,05,10,100,30",
    "GAGLL,5321.6802,N,00630.3372,E,092750.000,A,A",
    "XXGGA,092750.000,5321.6802,N,00630.3372,E,1,8,1.03,61.7,M,55.2,M,,",
    "gpGGA,092750.000,5321.6802,N,00630.3372,E,1,8,1.03,61.7,M,55.2,M,,",
    "PGGGA,092750.000",
    "GPGGAX,092750.000",
    "GPGG,092750.000",
    # the library's flat types: positions named otherwise stay unsigned, hemispheres alone stay text
    "GPRMB,A,0.66,L,003,004,4917.24,S,12309.57,W,001.3,052.5,000.5,V",
    "GPBEC,220516,5130.02,S,00046.34,W,213.8,T,218.0,M,0004.6,N,EGLM",
    "GPDTM,W84,,0.0,S,0.0,W,0.0,W84",
    "SDHDG,238.5,1.5,W,2.3,E",
    "IIHDG,,,,,",
    "GPTLL,01,4916.45,S,12311.12,W,TARGET,225444.00,T,",
    "GPFMI,092750.000,-53.21,-6.30,61.7,0.1,0.2,0.3,0.4,8,1,2,0F",
    "GPGNS,092750.00,5321.6802,S,00630.3372,W,AAN,08,1.03,61.7,55.2,,,S",
    "GPGST,092750.00,1.0,2.0,3.0,4.0,5.0,6.0,7.0",
    "GPTHS,123.4,A",
    "WIMWV,214.8,R,0.1,K,A",
    "GNTHS2,123.4,A,1.5",
    # hemispheres: lowercase, blank, nonsense, and a position without its hemisphere
    "GPGGA,092750.000,5321.6802,s,00630.3372,w,1,8,1.03,61.7,M,55.2,M,,",
    "GPGGA,092750.000,5321.6802,,00630.3372,,1,8,1.03,61.7,M,55.2,M,,",
    "GPGLL,5321.6802,X,00630.3372,Q,092750.000,A,A",
    "GPGLL,5321.6802,S",
    "GPGLL,5321.6802,SS,00630.3372,W ,092750.000,A,A",
    "GPGLL,5321.6802",
    # zeros, negatives, odd positions
    "GPGGA,000000.00,0000.0000,S,00000.0000,W,0,0,0.0,0.0,M,0.0,M,0,0",
    "GPGGA,092750.000,5321.6802,N,00630.3372,E,1,8,1.03,-61.7,M,-55.2,M,,",
    "GPGGA,092750.000,-5321.6802,N,-00630.3372,E,1,8,1.03,61.7,M,55.2,M,,",
    "GPGGA,092750.000,0000-5.00,S,00-0.5000,W,1,8,1.03,61.7,M,55.2,M,,",
    "GPGGA,092750.000,5321,N,630.3372,E,1,8,1.03,61.7,M,55.2,M,,",
    "GPGGA,092750.000,53.216802,N,0.6303372,E,1,8,1.03,61.7,M,55.2,M,,",
    "GPGGA,092750.000,5321.6802.1,N,00630.33x2,E,1,8,1.03,61.7,M,55.2,M,,",
    "GPGGA,092750.000,9000.0000,N,18000.0000,E,1,8,1.03,61.7,M,55.2,M,,",
    "GPGGA,092750.000,4916.4500000,N,12311.1200000,W,1,8,1.03,61.7,M,55.2,M,,",
    # numbers Python parses oddly and pynmeagps with it
    "GPGGA,092750.000,5321.6802,N,00630.3372,E,+1,08,nan,inf,M,1e3,M,1_0, 7",
    "GPGGA,092750.000,5321.6802,N,00630.3372,E,1.0,8,1.03,61.7,M,55.2,M,,",
    "GPGGA,092750.000,5321.6802,N,00630.3372,E,1,8,1,03,61.7,M,55.2,M,,",
    "GPGGA,092750.000,5321.6802,N,00630.3372,E,x,8,1.03,61.7,M,55.2,M,,",
    "GPVTG,1.2.3,T,,M,0,N,0,K,A",
    "GPGSV,1,1,01,05,-3,360,99",
    # times
    *(
        f"GPZDA,{t},18,03,2015,00,00"
        for t in ("235959", "235959.99", "000000.000", "120000.5", "120000.000001", "120000.1234567", "240000",
                  "236000", "235960", "235961", "92750", "92750.0", "0927", "09275a.00", "092750.", ".0",
                  "092750,00", " 92750", "092750.00 ", "0x2750", "09:750.00", "0927:0")
    ),
    # dates
    *(
        f"GNRMC,171926.00,A,4404.14063,N,12118.85478,E,0.117,,{d},,,A"
        for d in ("010100", "311299", "290200", "290201", "290296", "010168", "010169", "000000", "320115",
                  "011315", "18315", "1803150", "1 0315", "0a0315", "1:0315", "01:315", "0103:5", "310415", "")
    ),
]  # fmt: skip


def test_edge_sentences_decode_as_pynmeagps_does():
    texts = [sentence(body) for body in EDGES]
    # shapes the codec would not pass, in case other frames reach the decoder
    texts += [
        "$GPGGA,092750.000,5321.6802,N*00*47",
        "$$GPGGA,092750.000,5321.6802,N,00630.3372,E,1,8,1.03,61.7,M,55.2,M,,*00",
        "$GPGGA,092750.000,5321.6802,N,00630.3372,E,1,8,1.03,61.7,M,55.2,M,,*4",
        "$GPGGA,092750.000,5321.6802,N,00630.3372,E,1,8,1.03,61.7,\u00e9,55.2,M,,*00",
        "!GPGGA,092750.000,5321.6802,N,00630.3372,E,1,8,1.03,61.7,M,55.2,M,,*00",
        "$GPGGA*00",
        "$GP*00",
        "",
    ]
    taken = assert_same(texts)
    assert taken.python > len(EDGES) // 2  # most of them are the fast path's own
    if compiled_available():
        assert taken.compiled > len(EDGES) // 3  # and many of those plain enough for C


def test_the_fast_path_itself_takes_short_long_and_older_shapes():
    """Not only equal: these do not fall back to the library (which would be equal, and slow)."""
    path = NmeaFastPath()
    for body in (
        "GPGGA",  # no fields
        "GPGGA,092750.000,5321.6802",  # cut short
        "GPGGA,092750.000,5321.6802,S,00630.3372,W,1,8,1.03,61.7,M,55.2,M,,,extra,fields",
        "GPRMC,171926.00,A,4404.14063,N,12118.85478,E,0.117,,180315,,",  # NMEA 2.2: no posMode
        "GPGSA,A,3,01,,,,,,,,,,,,1.0,1.0,1.0",  # before 4.10: no systemId
        "GPGSV,3,1,11,01,02,003,04,05,06,007,08,09,10,011,12,13,14,015,16",  # no signalID
        "GPGSV,1,1,01,05,,,,1,extra",  # a partial group and more
    ):
        assert path.fields(sentence(body)) is not None, body


# -- fuzzed: every field of every type given plausible and odd text ---------------------------------

CELLS = st.one_of(
    st.sampled_from(["", "0", "00", "1", "-1", "12", "1.5", "-0.0", "nan", "x", "A", "N", "S", "E", "W", "s"]),
    st.from_regex(r"[0-9]{4,6}\.[0-9]{1,7}", fullmatch=True),  # positions and times
    st.from_regex(r"[0-9]{6}(\.[0-9]{1,3})?", fullmatch=True),  # times and dates
    st.text(alphabet="0123456789.-+ eENSWAV", max_size=9),
)


@settings(max_examples=600, deadline=None)  # 3000 cost the suite 20 s; the captures and edge cases carry the rest
@given(
    talker=st.sampled_from(["GP", "GN", "GL", "GA", "BD", "GB", "XX"]),
    msg=st.sampled_from(sorted(TYPES)),
    cells=st.lists(CELLS, max_size=24),
)
def test_fuzzed_sentences_decode_as_pynmeagps_does(talker, msg, cells):
    assert_same([sentence(",".join([talker + msg, *cells]))])


@settings(max_examples=500, deadline=None)
@given(data=st.data())
def test_a_real_sentence_with_one_field_replaced_decodes_as_pynmeagps_does(data):
    text = data.draw(st.sampled_from(known_sentences()))
    cells = text[1:-3].split(",")
    i = data.draw(st.integers(1, len(cells) - 1))
    cells[i] = data.draw(CELLS)
    cut = data.draw(st.integers(1, len(cells)))
    assert_same([sentence(",".join(cells[:cut]))])


# -- the C plain cases (values/_nmea_c.c), where built ------------------------------------------------


def c_module() -> Any:
    """The C module; in CI (``CI`` set) it must have been built, elsewhere its tests skip and say why."""
    if not compiled_available():
        if turned_off():
            pytest.skip("FIRMWARE_HOST_PURE is set: the compiled parts are turned off")
        if os.environ.get("CI"):
            pytest.fail("values/_nmea_c.c was not built at install: CI installs gcc and the Python headers")
        pytest.skip("values/_nmea_c.c not built (no C compiler or Python headers at install): the Python path decodes")
    from firmware_host.values import _nmea_c

    return _nmea_c


def test_the_decoder_takes_the_c_plain_cases_where_built(mocker):
    """The decoder asks C first, and the Python fast path only where C gives None:
    the first sentence of each head (which the Python path learns, and teaches C)."""
    c_module()
    assert fast_path().plain is not None
    spy = mocker.spy(NmeaFastPath, "fields")
    decoder = fast_decoder()  # after the spy: the decoder holds the bound method
    texts = [t for path in CAPTURES for t in capture(path) if known(t)]
    heads = {t[1:].split(",", 1)[0] for t in texts}
    assert len(heads) > 20  # the instruments' captures add many types to the seven
    frames = [Frame("gps", 0, None, 0.0, None, t) for t in texts]
    decoder.decode(frames)
    assert all(f.fields is not None for f in frames)
    assert spy.call_count == len(heads)
    decoder.decode([Frame("gps", 0, None, 0.0, None, t) for t in texts])
    assert spy.call_count == len(heads)
    odd = Frame("gps", 0, None, 0.0, None, sentence("GPGGA,092750.000,5321.6802,N,00630.3372,E,+1,8,1.03,61.7,M,,M,,"))
    decoder.decode([odd])  # "+1" is not plain: C leaves it to the Python path
    assert spy.call_count == len(heads) + 1
    assert odd.fields is not None
    assert odd.fields["quality"] == 1


TIES = [k / 2**11 for k in range(1, 64, 2)] + [k / 2**20 for k in (1, 3, 1025)]


@settings(max_examples=800, deadline=None)  # 4.6 million cases ran in review; here the suite's share
@given(
    x=st.one_of(
        st.floats(min_value=0, max_value=1e6, allow_nan=False),
        st.floats(min_value=0, max_value=1e-6),
        st.sampled_from(TIES),
        st.builds(lambda d, m: d + m / 60, st.integers(0, 180), st.decimals(0, 60, places=7).map(float)),
    )
)
def test_c_rounding_is_round_to_10_places(x):
    """C rounds a position's degrees itself (no dtoa): bit for bit round(x, 10),
    exact ties to even included (1/2048 is one)."""
    assert struct.pack("<d", c_module().round10(x)) == struct.pack("<d", round(x, 10))


def test_c_rounding_takes_ties_to_even():
    # the cases that would catch half-up: 1/2048 * 1e10 ends in exactly .5
    assert [c_module().round10(x) for x in TIES] == [round(x, 10) for x in TIES]
    assert round(1 / 2048, 10) == 0.0004882812  # even: ...812.5 -> 812


NUMBERS = st.one_of(
    st.from_regex(r"-?[0-9]{1,20}(\.[0-9]{0,24})?", fullmatch=True),
    st.from_regex(r"[0-9]{4,5}\.[0-9]{1,12}", fullmatch=True),
)


@settings(max_examples=300, deadline=None)
@given(a=NUMBERS, b=NUMBERS, c=NUMBERS, hemisphere=st.sampled_from(["N", "S", "E", "W", ""]))
def test_c_reads_plain_numbers_as_python_does(a, b, c, hemisphere):
    """Digits C reads itself (Clinger's fast path) or hands to CPython's strtod
    (past 15 digits): the same doubles and ints as float() and int()."""
    c_module()
    body = f"GPGGA,092750.000,{a},{hemisphere},{b},{hemisphere},{c},{c},{a},{b},M,{c},M,,"
    text = sentence(body)
    path = NmeaFastPath()
    assert path.plain is not None
    mine = path.plain(text)
    assert exact(mine) == exact(path.fields(text)) or mine is None
    if mine is not None:
        assert exact(mine) == outcome(library_decoder(), text)[0]


def test_c_refuses_what_is_not_a_table_of_specs():
    parser = c_module().Parser()
    with pytest.raises(TypeError):
        parser.add("GPGGA", "GP", "GGA")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        parser.add("GPGGA", "GP", "GGA", 0, ((),))  # type: ignore[arg-type]
    with pytest.raises(ValueError):  # a signed position needs a later field as its hemisphere
        parser.add("GPGGA", "GP", "GGA", False, ((), (("lat", 4, -1),)))
    with pytest.raises(ValueError):
        parser.add("GPGGA", "GP", "GGA", False, ((), (), (("lat", 4, 0), ("NS", 0, -1))))
    with pytest.raises(ValueError):  # an op that is not one
        parser.add("GPGGA", "GP", "GGA", False, ((), (("lat", 8, -1),)))
    with pytest.raises(TypeError):  # 2 fields for 1 cell
        parser.add("GPGGA", "GP", "GGA", False, ((), (("lat", 0, -1), ("NS", 0, -1))))
    with pytest.raises(TypeError):
        parser.fields(b"$GPGGA*00")  # type: ignore[arg-type]
    assert parser.fields("$GPGGA,0100.00,S*00") is None  # not added: the Python path's
    parser.add("GPGGA", "GP", "GGA", False, ((), (("lat", 3, -1),), (("lat", 4, 1), ("NS", 0, -1))))
    assert parser.fields("$GPGGA,0100.00*00") == {"msg": "GGA", "talker": "GP", "lat": 1.0}
    assert parser.fields("$GPGGA,0100.00,S*00") == {"msg": "GGA", "talker": "GP", "lat": -1.0, "NS": "S"}
    assert parser.fields("$GPGGA,0100.00,S,extra*00") == {"msg": "GGA", "talker": "GP", "lat": -1.0, "NS": "S"}


def test_a_type_longer_than_c_takes_stays_with_the_python_path():
    """C takes at most 46 payload fields; a (future) type that may have more is
    decoded by the Python path, with or without C built."""
    wide = Shape((), tuple((f"f{i}", "DE") for i in range(6)))  # 6 x MAX_REPEATS = 48 fields
    text = sentence("GPXDR,1,2,3,4,5,6")
    for compiled in (True, False):
        path = NmeaFastPath(compiled, {"XDR": wide}, ["GP"])
        assert path.fields(text) == {"msg": "XDR", "talker": "GP", **{f"f{i}_01": float(i + 1) for i in range(6)}}
        if path.plain is not None:
            assert path.plain(text) is None


def test_every_talker_of_a_type_shares_its_specs():
    """A head is learnt per talker, its tables per type: a device that sends
    one type from many talkers holds one copy of them."""
    path = fast_path()
    for talker in ("GP", "GN", "GL", "GA"):
        assert path.fields(sentence(f"{talker}GGA,092750.000,5321.6802,N,00630.3372,E,1,8,1.03,61.7,M,55.2,M,,"))
    heads = path._heads  # the tables themselves: what the memory is
    assert len({id(heads[t + "GGA"][2]) for t in ("GP", "GN", "GL", "GA")}) == 1
    assert len(path._cspecs) == (1 if path.plain is not None else 0)


def test_a_runtime_without_the_c_part_says_so_once(monkeypatch, caplog):
    """NMEA decoding without the C part built is logged once per runtime (its
    ``reported`` set), naming what to install; not when it is there, nor when
    FIRMWARE_HOST_PURE turned it off on purpose."""
    import logging

    from firmware_host.values import decoder

    caplog.set_level(logging.INFO, logger="firmware_host.values")
    monkeypatch.setattr(decoder, "compiled_available", lambda: False)
    monkeypatch.delenv("FIRMWARE_HOST_PURE", raising=False)
    reported: set[str] = set()
    assert decoder.decoder_for("nmea", None, reported=reported) is not None
    assert decoder.decoder_for("ubx", None, reported=reported) is not None
    said = [r.getMessage() for r in caplog.records if "decoded in Python" in r.getMessage()]
    assert len(said) == 1 and "python3-dev" in said[0]
    caplog.clear()
    monkeypatch.setenv("FIRMWARE_HOST_PURE", "1")
    assert decoder.decoder_for("nmea", None, reported=set()) is not None
    monkeypatch.delenv("FIRMWARE_HOST_PURE")
    monkeypatch.setattr(decoder, "compiled_available", lambda: True)
    assert decoder.decoder_for("nmea", None, reported=set()) is not None
    assert not [r for r in caplog.records if "decoded in Python" in r.getMessage()]
