"""Decoded fields written as JSON by the C part (values/_json_c.c) and a
binary layout's values read when first asked for (``Frame.values``).

The C part is held to the Python it stands in for: its floats to ``repr``
(Schubfach's shortest digits against David Gay's), its dicts to ``json.dumps``
(compact) byte for byte, and a layout's payload written without the dict to
the dict the decoder makes of the same payload, written. In CI (``CI`` set)
these fail rather than skip when it was not built.
"""

from __future__ import annotations

import json
import math
import os
import random
import struct
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_host import Frame
from firmware_host.sinks.jsonl import encode_records
from firmware_host.values.decoder import LayoutValues, PayloadDecoder
from firmware_host.values.encode import FieldsEncoder, compiled_available, fields_json
from firmware_host.values.layout import SCALAR_CODES, FieldSpec, FrameLayout, PayloadSchema

try:
    from firmware_host.values import _json_c
except ImportError:  # no C compiler at install: the Python path is all there is
    _json_c = None  # type: ignore[assignment]

if _json_c is None and os.environ.get("CI"):
    pytest.fail("the C fields writer (_json_c) was not built: CI installs gcc and python3-dev", pytrace=False)
needs_c = pytest.mark.skipif(_json_c is None, reason="the C fields writer was not built (no C compiler at install)")


def compact(fields: Any) -> bytes:
    """What the fields writers write: json.dumps compact, NaN and infinities null."""
    from firmware_host.values.encode import _finite

    return json.dumps(_finite(fields), ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


# -- floats --------------------------------------------------------------------------------------


def _edges() -> list[float]:
    out = [0.0, 1.0, 0.1, 0.3, 1e-5, 1e-4, 1e15, 1e16, 1e17, 1e21, 1e22, 1e23, 5e-324, 2.2250738585072014e-308]
    out += [1.7976931348623157e308, 9007199254740993.0, 123456.789, 22.91079330444336, 2.0**53, 2.0**63]
    for e in range(-1074, 1024, 7):  # powers of two and their neighbours: where the spacing of doubles changes
        x = 2.0**e
        out += [x, math.nextafter(x, 0.0), math.nextafter(x, math.inf)]
    for k in range(-325, 309, 3):  # powers of ten, where repr switches between fixed and exponent
        for m in (1, 9, 123456789):
            x = float(f"{m}e{k}")
            if math.isfinite(x):
                out.append(x)
    # integers below 2**53 take their own path; scaled readings have short digits
    out += [float(i) for i in (2, 10, 100, 120, 9999, 10**15, 2**52 + 1, 2**53 - 1)]
    out += [i / 100 for i in range(-3000, 3000, 7)] + [i * 0.1 for i in range(-300, 300)]
    return [y for x in out for y in (x, -x)]


@needs_c
def test_subnormal_floats_are_written_as_repr_writes_them():
    """Subnormals give the shortest digits any length (a normal double's are 16 or 17 before trimming)."""
    rng = random.Random(21)
    subnormals = [struct.unpack("<d", rng.getrandbits(52).to_bytes(8, "little"))[0] for _ in range(20_000)]
    subnormals += [struct.unpack("<d", k.to_bytes(8, "little"))[0] for k in range(1, 2000)]
    assert [x for x in subnormals if x and _json_c.float_repr(x) != repr(x)] == []


@needs_c
def test_floats_are_written_as_repr_writes_them():
    """Every edge and 200,000 random bit patterns (doubles, and f32 read as
    doubles, as a sensor's are): the text is repr's, character for character;
    a NaN or an infinity is None (the writers' null)."""
    rng = random.Random(20)
    doubles = [struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0] for _ in range(100_000)]
    singles = [struct.unpack("<f", rng.getrandbits(32).to_bytes(4, "little"))[0] for _ in range(100_000)]
    wrong = []
    for x in (*_edges(), *doubles, *singles):
        expected = repr(x) if math.isfinite(x) else None
        if _json_c.float_repr(x) != expected:
            wrong.append(x)
    assert wrong == []
    assert _json_c.float_repr(math.nan) is None and _json_c.float_repr(-math.inf) is None
    assert _json_c.float_repr(-0.0) == "-0.0"


@needs_c
@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False) | st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_any_float_is_written_as_repr(x: float) -> None:
    assert _json_c.float_repr(x) == repr(x)


# -- the writer of a fields dict -----------------------------------------------------------------

_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=6)
    | st.sampled_from(["\ud800", "a\x00b", "\x1f\x7f\u2028"])  # a lone surrogate; controls
)
_tree = st.recursive(
    _leaf,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=6) | st.sampled_from(["\ud800"]), inner, max_size=4)
    ),
    max_leaves=14,
)


@needs_c
@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.text(max_size=8), _tree, max_size=6))
def test_the_c_writer_writes_what_json_dumps_writes(fields: dict[str, Any]) -> None:
    """Byte for byte json.dumps's compact text, whatever the tree: what it
    hands to the fallback (a lone surrogate) meets the same end as before."""
    writer = FieldsEncoder()
    assert writer.uses_compiled
    python = FieldsEncoder(compiled=False)
    try:
        expected = compact(fields)
    except UnicodeEncodeError:  # a lone surrogate: neither writes it
        with pytest.raises(UnicodeEncodeError):
            python.json(fields)
        with pytest.raises(UnicodeEncodeError):
            writer.json(fields)
        return
    assert writer.json(fields) == expected


@needs_c
def test_the_c_writer_hands_what_it_does_not_know_to_the_fallback():
    """A subclass, a key that is not a str, nesting past MAX_DEPTH: the whole
    goes to the Python writer, which writes or refuses as json does."""
    import enum

    class Level(enum.IntEnum):
        HIGH = 3

    seen: list[Any] = []

    def fallback(fields: dict[str, Any]) -> bytes:
        seen.append(fields)
        return b"fallback"

    writer = _json_c.Writer(fallback)
    deep: Any = 1
    for _ in range(_json_c.MAX_DEPTH):
        deep = [deep]
    # MAX_DEPTH containers, the fields dict counted, are written; one more is handed over
    for odd in ({"l": Level.HIGH}, {1: 2}, {"d": deep}, {"x": object()}, {"s": type("S", (str,), {})("a")}):
        assert writer(odd) == b"fallback"
    assert len(seen) == 5
    assert writer({"d": deep[0]}) == compact({"d": deep[0]})
    # written as json writes them (the standard writer's text: orjson refuses an int key)
    assert json.loads(FieldsEncoder().json({"l": Level.HIGH, 1: 2.5})) == {"l": 3, "1": 2.5}
    with pytest.raises(TypeError):
        FieldsEncoder().json({"x": object()})
    with pytest.raises(TypeError):
        writer()  # type: ignore[call-arg]


# -- a layout's payload written without the dict -------------------------------------------------

_NUMERIC = [t for t in SCALAR_CODES if t != "bool"]
_number = st.none() | st.floats(-1e6, 1e6) | st.integers(-(2**40), 2**40) | st.sampled_from([0.1, -0.0, 1e-9, 3])


@st.composite
def _spec(draw: st.DrawFn, i: int) -> FieldSpec:
    kind = draw(st.sampled_from([*SCALAR_CODES, "bytes", "str"]))
    count = draw(st.sampled_from([1, 1, 2, 5]))
    size = draw(st.integers(1, 6)) if kind in ("bytes", "str") else 0
    scale = offset = None
    if kind in _NUMERIC and draw(st.booleans()):
        scale, offset = draw(_number), draw(_number)
    return FieldSpec(f'f{i}é"', kind, count=count, size=size, scale=scale, offset=offset)


@st.composite
def _layout(draw: st.DrawFn) -> FrameLayout:
    n = draw(st.integers(1, 5))
    return FrameLayout(1, tuple(draw(_spec(i)) for i in range(n)), draw(st.sampled_from(["little", "big"])))


@settings(max_examples=400, deadline=None)
@given(_layout(), st.data())
def test_a_layout_writes_the_json_of_the_dict_it_makes(layout: FrameLayout, data: st.DataObject) -> None:
    """Every type, arrays, both byte orders, int and float scales and offsets,
    any bytes (NaN floats, odd bools): the JSON written from the payload is
    what the fields writer writes of the dict made from it. A payload of
    another size gives neither."""
    values = LayoutValues(layout)
    payload = data.draw(st.binary(min_size=values.size, max_size=values.size))
    fields = values.fields(payload)
    assert fields is not None
    assert values.json(payload) == fields_json(fields) == compact(fields)
    assert values.fields(payload + b"x") is None and values.json(payload + b"x") is None
    # what frames get (the C Layout where it took the layout) says the same
    frames_get = values.for_frames
    assert frames_get.json(payload) == values.json(payload) and frames_get.fields(payload) == fields
    record = b'{"device": "d", "seq": 1}\n'
    with_fields = b'{"device": "d", "seq": 1, "fields": ' + compact(fields) + b"}\n"
    assert values.json_into(record, payload) == frames_get.json_into(record, payload) == with_fields
    assert json.loads(with_fields)["fields"] == json.loads(compact(fields))
    assert frames_get.json_into(record, payload[:-1]) == record  # another size: the record as it was
    for values_ in (values, frames_get):
        with pytest.raises(ValueError):
            values_.json_into(b'{"seq": 1}', payload)  # not a record and its newline
    plain = all(spec.type != "str" for spec in layout.fields) and not any(
        isinstance(spec.scale, int) and isinstance(spec.offset, int) for spec in layout.fields
    )
    if _json_c is not None and plain:
        # the C part took it unless an int scale meets a 64-bit integer or is 2**31 or more
        wide_int_scale = any(
            isinstance(spec.scale, int) and (spec.type in ("u64", "i64") or abs(spec.scale) >= 2**31)
            for spec in layout.fields
            if spec.type not in ("f32", "f64")
        )
        assert values.writes_from_payload != wide_int_scale


@needs_c
def test_scaled_integers_round_as_python_rounds_them():
    """``raw * scale + offset`` in doubles, two roundings (never one fused
    multiply-add), and an int scale multiplied exactly before its one
    rounding: at the values where a shortcut would differ."""
    cases = [
        (FieldSpec("v", "u32", scale=0.1, offset=0.2), struct.pack("<I", 3)),
        (FieldSpec("v", "i32", scale=3, offset=0.5), struct.pack("<i", -(2**31))),
        (FieldSpec("v", "u64", scale=0.1), struct.pack("<Q", 2**64 - 1)),
        (FieldSpec("v", "i64", offset=1), struct.pack("<q", 2**62 + 1)),
        (FieldSpec("v", "f32", scale=7), struct.pack("<f", 1.1)),
        (FieldSpec("v", "f64", scale=-0.0), struct.pack("<d", 5.0)),
        (FieldSpec("v", "f64", scale=0.5), struct.pack("<d", math.nan)),
        (FieldSpec("v", "u16", scale=1e308, offset=1e308), struct.pack("<H", 65535)),
        # 3 * 0.1 rounded, then - 0.30000000000000004: 0.0; fused into one rounding: -2.8e-17
        (FieldSpec("v", "u32", scale=0.1, offset=-0.30000000000000004), struct.pack("<I", 3)),
    ]
    for spec, payload in cases:
        values = LayoutValues(FrameLayout(1, (spec,)))
        assert values.writes_from_payload, spec
        assert values.json(payload) == compact(values.fields(payload)), spec
    assert LayoutValues(FrameLayout(1, (cases[-1][0],))).json(cases[-1][1]) == b'{"v":0.0}'
    # an int scale with an int offset makes ints: the dict's writer writes those
    values = LayoutValues(FrameLayout(1, (FieldSpec("v", "u8", scale=2, offset=1),)))
    assert not values.writes_from_payload and values.json(b"\x05") == b'{"v":11}'
    # a scale of a type C does not do arithmetic for (a bool, numpy's floats): Python's way
    for odd in (True, type("F", (float,), {})(0.5)):
        values = LayoutValues(FrameLayout(1, (FieldSpec("v", "u8", scale=odd),)))
        assert not values.writes_from_payload and values.json(b"\x05") == compact({"v": 5 * odd + 0.0})


# -- Frame.values: read when first asked for ------------------------------------------------------

ENV = PayloadSchema(
    frames=(FrameLayout(0, (FieldSpec("t", "f32"), FieldSpec("h", "f32"), FieldSpec("p", "f32"))),),
)
PAYLOAD = struct.pack("<fff", 22.91, 43.76, 1006.84)


def _decoded(*payloads: bytes) -> list[Frame]:
    frames = [Frame("env", i, 0, 1.0, p) for i, p in enumerate(payloads)]
    PayloadDecoder(ENV).decode(frames)
    return frames


def test_a_frame_s_fields_are_made_on_the_first_read_and_kept():
    (f,) = _decoded(PAYLOAD)
    assert f.values is not None and f._fields is None  # nothing made yet
    fields = f.fields
    assert fields == dict(zip("thp", struct.unpack("<fff", PAYLOAD), strict=True))
    assert f.fields is fields  # kept: one dict, which a processor may change in place
    assert "fields={'t': 22.90999984741211" in repr(f)


def test_the_sink_writes_a_frame_s_own_fields_however_they_were_changed():
    """Not read: written from the payload. Read and changed in place, or set
    by a processor: what the frame holds is written. A payload a processor
    cut to another size: its bytes, no fields (never a crash)."""
    untouched, in_place, replaced, cut, cleared = _decoded(PAYLOAD, PAYLOAD, PAYLOAD, PAYLOAD, PAYLOAD)
    fields = in_place.fields
    assert fields is not None
    fields["t"] = 99.5
    replaced.fields = {"celsius": 1.5}
    assert replaced.values is None
    cut.payload = PAYLOAD[:8]
    cleared.fields = None
    lines = [json.loads(line) for line in encode_records([untouched, in_place, replaced, cut, cleared]).splitlines()]
    assert lines[0]["fields"] == dict(zip("thp", struct.unpack("<fff", PAYLOAD), strict=True))
    assert lines[1]["fields"]["t"] == 99.5
    assert lines[2]["fields"] == {"celsius": 1.5}
    assert "fields" not in lines[3] and cut.fields is None
    assert "fields" not in lines[4]


def test_a_line_is_the_same_whether_its_fields_were_read_or_not():
    """The text written from the payload and from the dict are one text, so
    a tail or a processor reading the fields changes no byte of the file."""
    read, unread = _decoded(PAYLOAD, PAYLOAD)
    read.seq = unread.seq
    assert read.fields is not None
    assert encode_records([read]) == encode_records([unread])
    assert b'"fields": {"t":22.90999984741211,"h":43.7599983215332,"p":1006.8400268554688}' in encode_records([read])


def test_without_the_c_part_the_same_bytes_are_written():
    """FIRMWARE_HOST_PURE=1 (what an install without a C compiler runs): the
    layout's JSON comes from the dict, the dict's from orjson, and a jsonl
    line is the same bytes (for these numbers: orjson spells those below
    1e-4 its own way, 0.00001 where repr writes 1e-05)."""
    script = (
        "import struct, sys, json; sys.path.insert(0, 'tests');"
        "from test_fields_json import _decoded, PAYLOAD;"
        "from firmware_host.sinks.jsonl import encode_records;"
        "from firmware_host.values.encode import compiled_available;"
        "(f,) = _decoded(PAYLOAD); sys.stdout.buffer.write(encode_records([f]));"
        "assert not compiled_available() and not f.values.writes_from_payload"
    )
    env = {**os.environ, "FIRMWARE_HOST_PURE": "1"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=60, check=True).stdout
    (f,) = _decoded(PAYLOAD)
    assert out == encode_records([f])
    assert compiled_available() == (_json_c is not None)


@needs_c
def test_the_c_decode_loop_survives_frames_that_change_the_batch():
    """A frame class of a plugin's own whose attributes run Python code: the
    C loop reads them the generic way, and one that empties the batch or the
    schema's table under it ends the loop, never reads freed memory."""
    from firmware_host.values.encode import compiled_mark

    assert compiled_mark is not None
    values = LayoutValues(ENV.frames[0])
    table = {0: (values.size, values)}
    frames: list[Frame] = []

    class Meddling(Frame):
        @property  # type: ignore[override]
        def payload(self) -> bytes:
            frames.clear()
            table.clear()
            return PAYLOAD

        @payload.setter
        def payload(self, value: bytes | None) -> None:
            pass

    frames += [Meddling("m", i, 0, 1.0, PAYLOAD) for i in range(5)]
    assert compiled_mark(frames, table) == 0
    assert frames == [] and table == {}
    # frames of Frame itself after one of a class of its own: each read its own way
    plain = _decoded(PAYLOAD)[0]
    plain.values = None
    odd = type("Odd", (Frame,), {})("o", 1, 0, 1.0, PAYLOAD)
    table = {0: (values.size, values)}
    assert compiled_mark([odd, plain, odd], table) == 0
    assert odd.values is values and plain.values is values


def test_payloads_that_are_not_bytes_are_read_as_struct_reads_them():
    """A plugin's codec or processor may give a bytearray or a memoryview:
    decoded, written and read as bytes would be, by C and by Python alike."""
    expected = encode_records(_decoded(PAYLOAD))
    for kind in (bytearray, memoryview):
        frames = [Frame("env", 0, 0, 1.0, kind(PAYLOAD))]  # type: ignore[arg-type]
        PayloadDecoder(ENV).decode(frames)
        assert frames[0].values is not None
        assert json.loads(encode_records(frames))["fields"] == json.loads(expected)["fields"]
        assert frames[0].fields == _decoded(PAYLOAD)[0].fields


def test_decoding_replaces_fields_a_codec_gave_and_a_record_of_no_members_gets_them_alone():
    (f,) = [Frame("env", 0, 0, 1.0, PAYLOAD, fields={"codec": 1})]
    PayloadDecoder(ENV).decode([f])
    assert f.fields is not None and "codec" not in f.fields and set(f.fields) == {"t", "h", "p"}
    values = LayoutValues(ENV.frames[0])
    for v in (values, values.for_frames):
        assert json.loads(v.json_into(b"{}\n", PAYLOAD)) == {"fields": f.fields}


def test_a_decoded_frame_pickles_and_copies_with_its_fields():
    import copy
    import pickle

    (f,) = _decoded(PAYLOAD)
    for other in (pickle.loads(pickle.dumps(f)), copy.deepcopy(f), copy.copy(f)):
        assert other is not f and other.values is None
        assert (other.device, other.seq, other.payload, other.fields) == (f.device, f.seq, f.payload, f.fields)


@needs_c
def test_the_c_decode_loop_reads_slots_only_of_frame_classes():
    """A class that borrows Frame's slot descriptors without being a Frame:
    its objects are not read at Frame's offsets (that would read and write
    past them); the generic way refuses them as Python does."""
    from firmware_host.values.encode import compiled_mark

    assert compiled_mark is not None

    class Borrowing:
        __slots__ = ()
        payload = Frame.payload
        type = Frame.type
        values = Frame.values

    with pytest.raises(TypeError):
        compiled_mark([Borrowing() for _ in range(100)], {0: (12, object())})
    # an unhashable type is one no layout describes, as in the Python loops
    odd = Frame("o", 0, [0], 1.0, PAYLOAD)  # type: ignore[arg-type]
    assert compiled_mark([odd], {0: (12, object())}) == 0 and odd.values is None
