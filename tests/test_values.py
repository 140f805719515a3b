"""Payload schemas: values decoded from frames (``Frame.fields``), counted when they do not fit.

The oracles are written apart from the decoder: payloads are packed here by
hand (``struct`` formats spelled out per test, or literal bytes), and the
expected fields are the values that went in.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_host import Frame
from firmware_host.config.boards import board_from_dict
from firmware_host.errors import BoardError
from firmware_host.testing import assert_accounting
from firmware_host.values.decoder import PayloadDecoder
from firmware_host.values.encode import fields_text
from firmware_host.values.layout import CsvLayout, FieldSpec, FrameLayout, PayloadSchema
from firmware_host_plugins.sqlite import SqliteSink

pytestmark = pytest.mark.timeout(30)


def frame(payload: bytes, type: int = 1) -> Frame:
    return Frame("d", 0, type, 0.0, payload)


def decoded(schema: PayloadSchema, *frames: Frame) -> tuple[list[Any], int]:
    decoder = PayloadDecoder(schema)
    decoder.decode(list(frames))
    return [f.fields for f in frames], decoder.undecoded


def one(fields: tuple[FieldSpec, ...], byte_order: str = "little", type: int = 1) -> PayloadSchema:
    return PayloadSchema(frames=(FrameLayout(type, fields, byte_order),), byte_order=byte_order)


# -- binary layouts ----------------------------------------------------------------------------


def test_every_scalar_type_little_and_big_endian():
    specs = tuple(
        FieldSpec(name, kind)
        for name, kind in [
            ("a", "u8"), ("b", "u16"), ("c", "u32"), ("d", "u64"),
            ("e", "i8"), ("f", "i16"), ("g", "i32"), ("h", "i64"),
            ("i", "f32"), ("j", "f64"), ("k", "bool"),
        ]
    )  # fmt: skip
    values = (0xFE, 0xBEEF, 0xDEADBEEF, 2**64 - 2, -5, -30000, -(2**31), -(2**63), 1.5, -2.25, True)
    # little-endian by hand: each field's bytes, lowest first
    little = (
        b"\xfe" + b"\xef\xbe" + b"\xef\xbe\xad\xde" + b"\xfe" + b"\xff" * 7
        + b"\xfb" + (2**16 - 30000).to_bytes(2, "little") + b"\x00\x00\x00\x80" + b"\x00" * 7 + b"\x80"
        + b"\x00\x00\xc0\x3f" + b"\x00" * 6 + b"\x02\xc0" + b"\x01"
    )  # fmt: skip
    expected = dict(zip("abcdefghijk", values, strict=True))
    assert decoded(one(specs), frame(little)) == ([expected], 0)
    big = struct.pack(">BHIQbhiqfd?", *values)
    assert decoded(one(specs, "big"), frame(big)) == ([expected], 0)


def test_arrays_scale_offset_bytes_and_text():
    specs = (
        FieldSpec("accel", "i16", count=3, scale=0.5),
        FieldSpec("temp", "u8", offset=-40.0),
        FieldSpec("mac", "bytes", size=6),
        FieldSpec("fw", "str", size=8),
        FieldSpec("names", "str", size=2, count=2),
        FieldSpec("volts", "u16", scale=0.001, offset=1.0),
    )
    payload = (
        struct.pack("<3h", -2, 4, 7) + bytes([65]) + bytes.fromhex("0a1b2c3d4e5f") + b"v1.2\0\0\0\0" + b"ab" + b"c\0"
        + struct.pack("<H", 2500)
    )  # fmt: skip
    [fields], bad = decoded(one(specs), frame(payload))
    assert bad == 0
    assert fields == {
        "accel": [-1.0, 2.0, 3.5],
        "temp": 25.0,
        "mac": "0a1b2c3d4e5f",
        "fw": "v1.2",
        "names": ["ab", "c"],
        "volts": pytest.approx(3.5),
    }


def test_a_payload_of_the_wrong_size_keeps_its_bytes_and_counts_undecoded():
    schema = one((FieldSpec("t", "f32"), FieldSpec("h", "f32")))
    good, short, long_ = frame(struct.pack("<2f", 1.0, 2.0)), frame(b"\0" * 7), frame(b"\0" * 9)
    other = frame(b"\1\2\3", type=9)  # no layout for type 9: bytes only, and no fault
    fields, bad = decoded(schema, good, short, long_, other)
    assert fields == [{"t": 1.0, "h": 2.0}, None, None, None]
    assert bad == 2
    assert short.payload == b"\0" * 7  # the bytes stay


# -- csv ---------------------------------------------------------------------------------------


CSV = PayloadSchema(
    csv=CsvLayout(
        (FieldSpec("ts_ms", "u32"), FieldSpec("adc", "u16", scale=0.5), FieldSpec("ok", "bool"), FieldSpec("t", "f32"))
    )
)


def text(line: str) -> Frame:
    return Frame("d", 0, None, 0.0, None, line)


def test_csv_rows_header_and_bad_rows():
    rows = [text("ts_ms,adc,ok,t"), text("10,4,1,21.5"), text("20,6,false,-3e2\r"), text("30,1,1"), text("x,1,1,1")]
    fields, bad = decoded(CSV, *rows)
    assert fields == [
        None,  # the header: no fields, not a fault
        {"ts_ms": 10, "adc": 2.0, "ok": True, "t": 21.5},
        {"ts_ms": 20, "adc": 3.0, "ok": False, "t": -300.0},
        None,  # three cells of four
        None,  # not a number
    ]
    assert bad == 2


# -- the board file ----------------------------------------------------------------------------


def board(schema: dict[str, Any], codec: str = "fh1", **emulator: Any) -> dict[str, Any]:
    return {
        "name": "b",
        "codec": codec,
        "emulator": {"rate": 1.0, "payload": "random", **emulator},
        "schema": schema,
    }


FIELDS = [{"name": "t", "type": "f32"}]
F0 = "schema.frames[0].fields[0]"
C0 = "schema.csv.fields[0]"


def cell(**spec: Any) -> dict[str, Any]:
    return {"csv": {"fields": [{"name": "t", "type": "u8", **spec}]}}


def field(**spec: Any) -> dict[str, Any]:
    """A one-layout schema whose field is ``{name = "t", type = "u8", **spec}``;
    with no ``spec``, two fields of that name."""
    fields = [{"name": "t", "type": "u8", **spec}] if spec else [{"name": "t", "type": "u8"}] * 2
    return {"frames": [{"type": 1, "fields": fields}]}


def test_a_board_schema_is_read_into_layouts():
    b = board_from_dict(
        board({"byte_order": "big", "frames": [{"type": 2, "name": "env", "fields": FIELDS}]}, payload_size=4)
    )
    assert b.schema is not None and b.schema.layout(2) == FrameLayout(2, (FieldSpec("t", "f32"),), "big", "env")
    assert b.to_dict()["schema"]["frames"][0]["fields"] == FIELDS


@pytest.mark.parametrize(
    ("schema", "codec", "key", "words"),
    [
        ({}, "fh1", "schema", "expected [[schema.frames]]"),
        ({"frames": [{"fields": FIELDS}]}, "fh1", "schema.frames[0].type", "required"),
        ({"frames": [{"type": 256, "fields": FIELDS}]}, "fh1", "schema.frames[0].type", "got 256"),
        ({"frames": [{"type": 1, "fields": FIELDS}] * 2}, "fh1", "schema.frames[1].type", "two layouts"),
        ({"frames": [{"type": 1, "fields": []}]}, "fh1", "schema.frames[0].fields", "expected a list"),
        (field(type="f16"), "fh1", f"{F0}.type", "expected one of"),
        (field(type="str"), "fh1", f"{F0}.size", "required"),
        (field(size=2), "fh1", f"{F0}.size", "only bytes and str"),
        (field(type="bool", scale=2), "fh1", f"{F0}.scale", "apply to numbers"),
        (field(), "fh1", "schema.frames[0].fields[1].name", "two fields"),
        (field(count=0), "fh1", f"{F0}.count", "got 0"),
        (field(count=2000), "fh1", "schema.frames[0].fields", "more than the board's max_payload"),
        ({"frames": [{"type": 1, "fields": FIELDS}]}, "lines", "schema.frames", "need a binary codec"),
        ({"csv": {"fields": FIELDS}}, "fh1", "schema.csv", "needs the lines codec"),
        ({"csv": {"delimiter": "ab", "fields": FIELDS}}, "lines", "schema.csv.delimiter", "one character"),
        (cell(type="bytes"), "lines", f"{C0}.type", "expected one of"),
        (cell(count=2), "lines", f"{C0}.count", "one value"),
        ({"byte_order": "middle", "frames": []}, "fh1", "schema.byte_order", "little, big"),
    ],
)  # fmt: skip
def test_a_bad_schema_is_one_line_naming_the_key(schema, codec, key, words):
    with pytest.raises(BoardError) as info:
        board_from_dict(board(schema, codec), source="my.toml")
    assert info.value.key == key and words in str(info.value), str(info.value)
    assert "\n" not in str(info.value)


def test_the_emulator_must_send_what_its_schema_decodes():
    with pytest.raises(BoardError, match="is 4 bytes") as info:
        board_from_dict(board({"frames": [{"type": 0, "fields": FIELDS}]}, payload_size=8))
    assert info.value.key == "emulator.payload_size"


def test_a_board_may_turn_decoding_off_and_a_device_back_on():
    from firmware_host.config import config_from_dict

    quiet = board_from_dict({**board({"frames": [{"type": 0, "fields": FIELDS}]}, payload_size=4), "decode": False})
    assert quiet.decode is False and quiet.to_dict()["decode"] is False
    boards = {"b": quiet}
    devices = [
        {"name": "plain", "port": "/dev/null", "board": "b"},  # the board's say
        {"name": "wants", "port": "/dev/null", "board": "b", "decode": True},  # the device's own wins
        {"name": "other", "port": "/dev/null", "board": "b", "codec": "lines"},  # not the board's codec
    ]
    cfg = config_from_dict({"devices": devices}, boards=boards)
    got = {d.name: (d.decode, d.schema is not None) for d in cfg.devices}
    assert got == {"plain": (False, False), "wants": (True, True), "other": (True, False)}
    plain = board({"frames": [{"type": 0, "fields": FIELDS}]}, payload_size=4)
    assert board_from_dict(plain).decode is True  # the default
    with pytest.raises(BoardError, match="expected true or false") as info:
        board_from_dict({**plain, "decode": "no"})
    assert info.value.key == "decode"


# -- through the runtime, on ptys --------------------------------------------------------------


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_env_sensor_values_reach_jsonl_and_a_wrong_size_counts_undecoded(fh_board, fh_runtime, tmp_path):
    board = fh_board("env-sensor")
    out, db = tmp_path / "out.jsonl", tmp_path / "out.db"
    values = [(21.5, 40.25, 1013.0), (-3.75, 99.5, 870.5)]
    cfg = {
        "buffer": {"flush_interval": 0.02},
        "devices": [board.config("env")],
        "sinks": [{"type": "jsonl", "path": str(out)}],
    }
    async with fh_runtime(cfg, sinks=[SqliteSink(path=str(db))]) as rt:
        await rt.wait_state("env", "connected")
        for v in values:
            await board.send_frames(1, payload=struct.pack("<3f", *v))
        await board.send_frames(1, payload=b"\x01\x02\x03\x04\x05")  # five bytes: no layout fits
        status = await rt.wait_until(lambda s: s["devices"]["env"]["flushed"] == 3, 10)
        assert status["devices"]["env"]["undecoded"] == 1
        assert_accounting(status)
    recs = records(out)
    assert [r.get("fields") for r in recs] == [
        {"temperature": 21.5, "humidity": 40.25, "pressure": 1013.0},
        {"temperature": -3.75, "humidity": 99.5, "pressure": 870.5},
        None,
    ]
    assert recs[2]["payload"] == "AQIDBAU="  # the bytes stay
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT seq, json_extract(fields, '$.pressure') FROM frames ORDER BY seq").fetchall()
    assert rows == [(0, 1013.0), (1, 870.5), (2, None)]


async def test_csv_uart_rows_get_fields_and_decode_false_keeps_text_only(fh_board, fh_runtime, tmp_path):
    a, b = fh_board("csv-uart"), fh_board("csv-uart")
    out = tmp_path / "out.jsonl"
    cfg = {
        "buffer": {"flush_interval": 0.02},
        "devices": [a.config("a"), b.config("b", decode=False)],
        "sinks": [{"type": "jsonl", "path": str(out)}],
    }
    async with fh_runtime(cfg) as rt:
        await rt.wait_state("a", "connected")
        await rt.wait_state("b", "connected")
        lines = ["ts_ms,adc0,adc1,temp_c", "20,2051,17,26.89", "40,oops,17,26.9"]
        await a.send_lines(lines)
        await b.send_lines(lines)
        status = await rt.wait_until(lambda s: s["devices"]["a"]["flushed"] + s["devices"]["b"]["flushed"] == 6, 10)
        assert (status["devices"]["a"]["undecoded"], status["devices"]["b"]["undecoded"]) == (1, 0)
    by_device: dict[str, list[Any]] = {}
    for r in records(out):
        by_device.setdefault(r["device"], []).append(r.get("fields"))
    assert by_device["a"] == [None, {"ts_ms": 20, "adc0": 2051, "adc1": 17, "temp_c": 26.89}, None]
    assert by_device["b"] == [None, None, None]


def test_a_float_that_is_not_finite_is_written_as_null():
    from firmware_host import encode_records

    f = Frame("d", 1, 2, 5.0, b"x", fields={"t": math.nan, "v": [1.0, math.inf], "ok": 2})
    rec = json.loads(encode_records([f]))
    assert rec["fields"] == {"t": None, "v": [1.0, None], "ok": 2}


def test_an_old_sqlite_database_gains_the_fields_column(tmp_path):
    import asyncio

    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:  # the table as the sink made it before values existed
        conn.execute(
            "CREATE TABLE frames (device TEXT NOT NULL, seq INTEGER NOT NULL, ts REAL NOT NULL, type INTEGER,"
            " payload BLOB, text TEXT, PRIMARY KEY (device, seq, ts))"
        )
        conn.execute("INSERT INTO frames VALUES ('d', 0, 1.0, 2, x'00', NULL)")

    async def write() -> None:
        sink = SqliteSink(path=str(db))
        await sink.open()
        await sink.write([Frame("d", 1, 2, 2.0, b"\1", fields={"t": 1.5})])
        await sink.close()

    asyncio.run(write())
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT seq, fields FROM frames ORDER BY seq").fetchall() == [
            (0, None),
            (1, fields_text({"t": 1.5})),
        ]


# -- the emulator generates from the schema ----------------------------------------------------

MY_BOARD = """
name = "my-probe"
codec = "fh1"
max_payload = 64
[emulator]
rate = 200
payload = "schema"
frame_type = 0x21
[schema]
byte_order = "big"
[[schema.frames]]
type = 0x21
fields = [
  { name = "t", type = "f32" },
  { name = "counts", type = "i16", count = 2 },
  { name = "raw", type = "u32", scale = 0.5 },
  { name = "ok", type = "bool" },
  { name = "tag", type = "str", size = 6 },
  { name = "id", type = "bytes", size = 2 },
]
"""

MY_CSV = """
name = "my-rows"
codec = "lines"
[emulator]
rate = 50
payload = "schema"
[schema.csv]
delimiter = ";"
fields = [{ name = "n", type = "i32" }, { name = "v", type = "f64" }, { name = "on", type = "bool" }]
"""


def test_generated_payloads_decode_through_their_own_schema():
    import random

    from firmware_host.config.boards import board_from_dict as load
    from firmware_host.emulation.generators import make_generator

    tomllib = pytest.importorskip("tomllib")
    for text, nframes in ((MY_BOARD, 50), (MY_CSV, 50)):
        b = load(tomllib.loads(text))
        assert b.schema is not None
        gen = make_generator(b.emulator, b.codec, rate=b.emulator.rate, rng=random.Random(1), schema=b.schema)
        items = [item for k in range(nframes) for item in gen.tick(k)]
        frames = [
            Frame("d", i, None, 0.0, None, item) if isinstance(item, str) else frame(item, 0x21)
            for i, item in enumerate(items)
        ]
        fields, bad = decoded(b.schema, *frames)
        assert bad == 0
        values = [f for f in fields if f is not None]
        assert len(values) == nframes  # the csv header alone has none
        if b.codec == "fh1":
            assert all(-101 < v["t"] < 101 and len(v["counts"]) == 2 and isinstance(v["ok"], bool) for v in values)
            assert all(len(v["id"]) == 4 and len(v["tag"]) <= 6 for v in values)
        else:
            assert all(isinstance(v["n"], int) and isinstance(v["on"], bool) for v in values)
        assert len({repr(v) for v in values}) > nframes // 2  # the values move, like a sensor's


def test_payload_schema_needs_a_layout_to_generate():
    with pytest.raises(BoardError, match=r"needs a \[\[schema.frames\]\] layout of frame type 0x05") as info:
        board_from_dict(board({"frames": [{"type": 1, "fields": FIELDS}]}, payload="schema", frame_type=5))
    assert info.value.key == "emulator.payload"
    with pytest.raises(BoardError, match=r"needs a \[schema.csv\]"):
        board_from_dict({"name": "b", "codec": "lines", "emulator": {"rate": 1, "payload": "schema"}})


def test_run_emulate_a_board_of_your_own_writes_its_fields(tmp_path):
    from tests.conftest import cli

    boards = tmp_path / "boards"
    boards.mkdir()
    (boards / "my-probe.toml").write_text(MY_BOARD)
    result = cli(
        "run", "--emulate", "my-probe:2", "--boards-dir", str(boards), "--duration", "1", "-q",
        "--control", str(tmp_path / "c.sock"), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    recs = records(tmp_path / "frames.jsonl")
    assert len(recs) > 50 and {r["device"] for r in recs} == {"my-probe-0", "my-probe-1"}
    assert all(set(r["fields"]) == {"t", "counts", "raw", "ok", "tag", "id"} for r in recs)


async def test_fields_survive_the_disk_spool(fh_board, fh_runtime, tmp_path):
    board, out = fh_board("env-sensor"), tmp_path / "out.jsonl"
    cfg = {
        "buffer": {"flush_interval": 0.02, "spool": str(tmp_path / "spool.db"), "spool_interval": 0.02},
        "devices": [board.config("env")],
        "sinks": [{"type": "jsonl", "path": str(out)}],
    }
    async with fh_runtime(cfg) as rt:
        await rt.wait_state("env", "connected")
        await board.send_frames(1, payload=struct.pack("<3f", 1.5, 2.5, 1000.0))
        await rt.wait_until(lambda s: s["sinks"][0]["delivered"] == 1, 10)
    assert records(out)[0]["fields"] == {"temperature": 1.5, "humidity": 2.5, "pressure": 1000.0}


def test_an_old_spool_file_gains_the_fields_column(tmp_path):
    from firmware_host.spool import connect

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:  # the spool's table before decoded values existed
        conn.execute(
            "CREATE TABLE frames (id INTEGER PRIMARY KEY AUTOINCREMENT, device TEXT NOT NULL, seq INTEGER NOT NULL,"
            " type INTEGER, ts REAL NOT NULL, payload BLOB, text TEXT, size INTEGER NOT NULL)"
        )
        conn.execute("INSERT INTO frames (device, seq, type, ts, payload, size) VALUES ('d', 0, 2, 1.0, x'00', 65)")
    db = connect(str(path))
    try:
        assert db.execute("SELECT device, seq, fields FROM frames").fetchall() == [("d", 0, None)]
    finally:
        db.close()


async def test_a_spooled_rows_bytes_count_its_fields(tmp_path):
    from firmware_host.spool import ROW_OVERHEAD, Spool

    spool = Spool(str(tmp_path / "s.db"), max_bytes=1 << 20)
    await spool.open()
    try:
        await spool.write([Frame("d", 0, 2, 1.0, b"abcd", fields={"t": 1.5})])
        text = fields_text({"t": 1.5})  # the JSON the row holds
        assert spool.bytes == 4 + ROW_OVERHEAD + len(text)
        with sqlite3.connect(tmp_path / "s.db") as conn:
            assert conn.execute("SELECT size, fields FROM frames").fetchall() == [(4 + ROW_OVERHEAD + len(text), text)]
    finally:
        await spool.close()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=12), json_values, max_size=6))
def test_the_fields_encoder_writes_what_json_dumps_writes(fields):
    """The writers of firmware_host.values.encode against the library call
    they replace, on any JSON tree: unicode, escapes, nesting, big ints, and
    NaN or infinity written as null. The standard one writes json.dumps's very
    text; the C part (built in CI) its compact text, byte for byte; orjson's
    (the [fast] extra) the same values, compact."""
    from firmware_host.values.encode import FieldsEncoder, _finite

    expected = json.dumps(_finite(fields), ensure_ascii=False, allow_nan=False)
    standard = FieldsEncoder(fast=False, compiled=False)
    assert not standard.uses_orjson and not standard.uses_compiled
    assert standard.text(fields) == expected
    assert standard.json(fields) == expected.encode("utf-8")
    compiled = FieldsEncoder()
    if compiled.uses_compiled:
        compact = json.dumps(_finite(fields), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        assert compiled.text(fields) == compact
    else:
        assert not os.environ.get("CI"), "the C fields writer was not built (a C compiler and python3-dev)"
    fast = FieldsEncoder(compiled=False)
    assert fast.uses_orjson  # orjson is a test dependency: this path is always tested
    assert fast.text(fields) == fast.json(fields).decode("utf-8")
    written = json.loads(fast.json(fields))
    assert written == json.loads(expected)
    assert json.dumps(written) == json.dumps(json.loads(expected))  # same types too: 1 stays int, 1.0 float


def test_orjson_writes_what_json_refuses_no_differently():
    """orjson alone would write a datetime, a dataclass or an IntEnum its own
    way; the fields writer falls back so what json refuses is refused and what
    it writes (an IntEnum as its int, an int past 64 bits) is written."""
    import dataclasses
    import datetime
    import enum

    from firmware_host.values.encode import FieldsEncoder

    class Level(enum.IntEnum):
        HIGH = 3

    @dataclasses.dataclass
    class Point:
        x: int

    fast = FieldsEncoder()
    assert json.loads(fast.json({"level": Level.HIGH, "big": 1 << 70})) == {"level": 3, "big": 1 << 70}
    for value in (datetime.datetime(2026, 1, 1), Point(1), object()):
        with pytest.raises(TypeError):
            fast.json({"v": value})
        with pytest.raises(TypeError):
            FieldsEncoder(fast=False).json({"v": value})
    assert fast.json({"t": math.nan, "u": [math.inf]}) == b'{"t":null,"u":[null]}'


def test_the_fields_encoder_without_the_c_accelerator(monkeypatch):
    import sys

    from firmware_host.values import encode

    monkeypatch.setitem(sys.modules, "_json", None)  # import _json now raises ImportError
    pure = encode._make_encoder()
    fields = {"t": 21.5, "name": "é\n", "v": [1, True, None]}
    standard = encode.FieldsEncoder(fast=False, compiled=False)
    assert pure(fields) == json.dumps(fields, ensure_ascii=False) == standard.text(fields)
    with pytest.raises(ValueError):
        pure({"t": math.nan})  # refused like the C one, so fields_text writes null


def test_a_plain_layout_keeps_any_field_name_as_text_never_as_code():
    # the plain layout's builder is a compiled dict display: names must stay literals
    names = ("x'\"{}", "__import__('os').system('false')", "values[0]", "é")
    schema = one(tuple(FieldSpec(n, "u8") for n in names))
    (fields,), bad = decoded(schema, frame(bytes([1, 2, 3, 4])))
    assert fields == dict(zip(names, [1, 2, 3, 4], strict=True)) and bad == 0
    assert list(fields) == list(names)  # in the layout's order


_FIELD = st.builds(
    lambda type_, scale: FieldSpec("f", type_, scale=scale),
    st.sampled_from(["u8", "i16", "f32", "u32"]),
    st.none() | st.just(0.5),
)


class _SubFrame(Frame):
    """A plugin's own frame class: has a __dict__ beside Frame's slots."""


def _args(f: Frame) -> tuple[Any, ...]:
    return (f.device, f.seq, f.type, f.ts, f.payload, f.text)


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(st.integers(0, 20), st.lists(_FIELD, min_size=1, max_size=3), min_size=1, max_size=12),
    st.lists(st.tuples(st.integers(0, 24), st.binary(max_size=12)), max_size=30),
    st.booleans(),
)
def test_the_generated_decode_loop_decodes_as_the_looked_up_one(layouts, sent, with_csv):
    """Up to 8 layouts decode through a loop generated with their types and
    sizes written in; more through a dict lookup per frame. Both give every
    frame the same fields and count the same undecoded, whatever the types
    and sizes sent: a type with no layout keeps its bytes and is no fault."""
    from firmware_host.values import decoder as values_decoder

    schema = PayloadSchema(
        frames=tuple(
            FrameLayout(
                t, tuple(FieldSpec(f"{spec.name}{i}", spec.type, scale=spec.scale) for i, spec in enumerate(specs))
            )
            for t, specs in layouts.items()
        ),
        csv=CSV.csv if with_csv else None,
    )
    binary = {layout.type: values_decoder.LayoutValues(layout) for layout in schema.frames}
    csv = values_decoder._Csv(schema.csv) if schema.csv is not None else None
    loops = {
        "generated": values_decoder._generated(binary, csv),
        "looked up": values_decoder._looked_up(binary, csv),
    }
    marked = values_decoder._marked(binary)  # in C, for a schema without csv (None: not built)
    if marked is not None and csv is None:
        loops["marked"] = marked
    results = {}
    for name, loop in loops.items():
        frames = [frame(payload, type=t) for t, payload in sent] + [text("1,2,1,3.5"), text("bad")]
        if name == "marked":  # a frame of another class takes the generic attribute path
            frames[len(frames) // 2 :] = [_SubFrame(*_args(f)) for f in frames[len(frames) // 2 :]]
        bad = loop(frames)
        results[name] = ([f.fields for f in frames], bad)
    assert results["generated"] == results["looked up"]
    if "marked" in results:
        assert results["marked"] == results["generated"]
    fields, bad = results["generated"]
    expected_bad = sum(1 for t, payload in sent if t in binary and len(payload) != binary[t].size)
    assert bad == expected_bad + (1 if with_csv else 0)
    for (t, payload), got in zip(sent, fields, strict=False):
        assert (got is not None) == (t in binary and len(payload) == binary[t].size)
    assert (fields[-2] is not None) == with_csv
    # and the decoder picks by the count
    decoder = PayloadDecoder(schema)
    frames = [frame(payload, type=t) for t, payload in sent]
    decoder.decode(frames)
    assert [f.fields for f in frames] == fields[: len(sent)]
    assert decoder.undecoded == expected_bad


async def test_devices_add_may_turn_decoding_off_for_a_device_at_run_time(fh_board, fh_runtime, tmp_path, short_tmp):
    """`devices add --no-decode` is `[[devices]] decode = false` at run time:
    the added board's frames keep their bytes only; a value that is not a
    boolean is the config loader's one line."""
    on, off = fh_board("env-sensor"), fh_board("env-sensor")
    out = tmp_path / "out.jsonl"
    cfg = {
        "buffer": {"flush_interval": 0.02},
        "devices": [on.config("on")],
        "sinks": [{"type": "jsonl", "path": str(out)}],
    }
    async with fh_runtime(cfg, control_path=str(short_tmp / "c.sock")) as rt:
        server = rt.runtime._control
        assert server is not None
        add = {"cmd": "devices.add", "name": "off", "port": off.path, "board": "env-sensor"}
        reply, _, _ = await server.handle_line(json.dumps({**add, "decode": "no"}).encode() + b"\n")
        assert not reply["ok"] and reply["error"] == 'devices add: decode: expected true or false, got "no"'
        reply, _, _ = await server.handle_line(json.dumps({**add, "decode": False}).encode() + b"\n")
        assert reply["ok"] and reply["device"]["decode"] is False
        await rt.wait_state("on", "connected")
        await rt.wait_state("off", "connected")
        await on.send_frames(1, payload=struct.pack("<3f", 1.5, 2.5, 3.5))
        await off.send_frames(1, payload=struct.pack("<3f", 1.5, 2.5, 3.5))
        status = await rt.wait_until(lambda s: all(s["devices"][d]["flushed"] == 1 for d in ("on", "off")), 10)
        assert status["devices"]["off"]["undecoded"] == 0
    fields = {r["device"]: r.get("fields") for r in records(out)}
    assert fields == {"on": {"temperature": 1.5, "humidity": 2.5, "pressure": 3.5}, "off": None}


async def decodes_my_probe(board, entry, fh_runtime, out) -> None:
    """A my-probe frame through a runtime with ``entry``: its fields in the jsonl."""
    cfg = {"buffer": {"flush_interval": 0.02}, "devices": [entry], "sinks": [{"type": "jsonl", "path": str(out)}]}
    async with fh_runtime(cfg) as rt:
        await rt.wait_state("p", "connected")
        await board.send_frames(1, payload=struct.pack(">fhhI?6s2s", 1.5, -2, 3, 41, True, b"ab", b"\x01\x02"))
        await rt.wait_until(lambda s: s["devices"]["p"]["flushed"] == 1, 10)
    assert [r.get("fields") for r in records(out)] == [
        {"t": 1.5, "counts": [-2, 3], "raw": 20.5, "ok": True, "tag": "ab", "id": "0102"}
    ]


async def test_a_board_of_your_own_on_the_boards_path_decodes_in_the_test_kit(
    fh_board, fh_runtime, tmp_path, monkeypatch
):
    """What docs/testing.md tells a user testing their own schema: the board
    file in a directory on $FIRMWARE_HOST_BOARDS, named to fh_board."""
    boards = tmp_path / "boards"
    boards.mkdir()
    (boards / "my-probe.toml").write_text(MY_BOARD)
    monkeypatch.setenv("FIRMWARE_HOST_BOARDS", str(boards))
    board = fh_board("my-probe")
    await decodes_my_probe(board, board.config("p"), fh_runtime, tmp_path / "out.jsonl")


async def test_a_board_file_given_by_path_decodes_in_the_test_kit(fh_board, fh_runtime, tmp_path, monkeypatch):
    """fh_board("path/to/board.toml"): its [[devices]] entry names the file,
    which `board` takes as well as a name, so the runtime decodes with the
    file's schema (it carried bytes only)."""
    path = tmp_path / "my-probe.toml"
    path.write_text(MY_BOARD)
    monkeypatch.chdir(tmp_path)
    board = fh_board("my-probe.toml")  # relative, and the test moves on: its config still names the file
    monkeypatch.chdir("/")
    entry = board.config("p")
    assert entry["board"] == str(path)
    await decodes_my_probe(board, entry, fh_runtime, tmp_path / "out.jsonl")


def test_a_board_file_in_the_config_is_read_and_its_faults_are_one_line(tmp_path, monkeypatch):
    """`board = "x.toml"` in a config: the file's board (relative to the config
    file's folder, or to the working directory for a config from no file); a
    missing or broken file is one config error naming the key."""
    from firmware_host.config.schema import config_from_dict, load_config
    from firmware_host.errors import ConfigError

    (tmp_path / "my-probe.toml").write_text(MY_BOARD)
    monkeypatch.chdir(tmp_path)
    cfg = config_from_dict({"devices": [{"name": "p", "port": "/dev/null", "board": "my-probe.toml"}]})
    (device,) = cfg.devices
    assert device.board == str(tmp_path / "my-probe.toml") and device.schema is not None and device.codec == "fh1"
    # in a config file, a relative path is the file's neighbour, wherever the run starts
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "mine.toml").write_text(MY_BOARD)
    conf = tmp_path / "conf" / "fh.toml"
    conf.write_text('[[devices]]\nname = "p"\nport = "/dev/null"\nboard = "mine.toml"\n')
    monkeypatch.chdir("/")
    (device,) = load_config(conf).devices
    assert device.board == str(tmp_path / "conf" / "mine.toml") and device.schema is not None
    for text, expected in (("gone.toml", "No such file|not found|no such"), ("bad.toml", "bad.toml")):
        if text == "bad.toml":
            (tmp_path / "bad.toml").write_text('name = "bad"\ncodec = 7\n')
        with pytest.raises(ConfigError, match=expected) as caught:
            config_from_dict({"devices": [{"name": "p", "port": "/dev/null", "board": text}]})
        assert "devices[0].board" in str(caught.value) and "\n" not in str(caught.value)
