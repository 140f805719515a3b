"""A board's ``[schema]`` table, read and checked into a ``PayloadSchema``.

Binary codecs take ``[[schema.frames]]`` (one layout per frame type); the
``lines`` codec takes ``[schema.csv]``. Every mistake is one line naming the
key, like the rest of a board file.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

from firmware_host.config._check import Checker, describe
from firmware_host.values.decoder import struct_format
from firmware_host.values.layout import (
    BYTE_ORDERS,
    FIELD_TYPES,
    FLOAT_TYPES,
    INTEGER_TYPES,
    SIZED_TYPES,
    CsvLayout,
    FieldSpec,
    FrameLayout,
    PayloadSchema,
)

_SCHEMA_KEYS = frozenset({"byte_order", "frames", "csv"})
_FRAME_KEYS = frozenset({"type", "name", "fields"})
_CSV_KEYS = frozenset({"delimiter", "fields"})
_FIELD_KEYS = frozenset({"name", "type", "count", "size", "scale", "offset", "unit"})
#: the longest array one field may be (a payload is at most 1 MiB anyway)
MAX_FIELD_COUNT = 65536
MAX_FIELD_SIZE = 65536
MAX_FIELDS = 256
#: codecs whose frames are lines of text (csv); the others carry payload bytes
TEXT_CODECS = frozenset({"nmea", "lines"})


def parse_schema(check: Checker, value: object, codec: str, max_payload: int | None) -> PayloadSchema:
    """``[schema]`` of a board whose codec is ``codec``; a binary layout must
    fit in ``max_payload`` bytes (None: no limit known)."""
    table = check.table(value, "schema", "a table ([schema])")
    check.keys(table, _SCHEMA_KEYS, "[schema]")
    byte_order = check.one_of(table.get("byte_order", "little"), "schema.byte_order", tuple(BYTE_ORDERS))
    text = codec in TEXT_CODECS
    frames: list[FrameLayout] = []
    if "frames" in table:
        if text:
            check.fail("schema.frames", f"binary layouts need a binary codec; {codec!r} frames are text (use csv)")
        items = table["frames"]
        if not isinstance(items, list) or not items:
            check.fail("schema.frames", f"expected [[schema.frames]] tables, got {describe(items)}")
        seen: set[int] = set()
        for i, item in enumerate(items):
            layout = _frame_layout(check, item, f"schema.frames[{i}]", byte_order, max_payload)
            if layout.type in seen:
                check.fail(f"schema.frames[{i}].type", f"frame type {layout.type:#04x} has two layouts")
            seen.add(layout.type)
            frames.append(layout)
    csv = None
    if "csv" in table:
        if codec != "lines":
            check.fail("schema.csv", f"a csv schema needs the lines codec, not {codec!r}")
        csv = _csv_layout(check, table["csv"], "schema.csv")
    if not frames and csv is None:
        check.fail("schema", "expected [[schema.frames]] (binary codecs) or [schema.csv] (the lines codec)")
    return PayloadSchema(frames=tuple(frames), csv=csv, byte_order=byte_order)


def _frame_layout(check: Checker, value: object, where: str, byte_order: str, max_payload: int | None) -> FrameLayout:
    item = check.table(value, where, "a table ([[schema.frames]])")
    check.keys(item, _FRAME_KEYS, f"[[{where}]]")
    if "type" not in item:
        check.fail(f"{where}.type", "required key is missing (the frame type, 0 to 255)")
    frame_type = check.integer(item["type"], f"{where}.type", ge=0, le=0xFF)
    name = check.name(item["name"], f"{where}.name", "frame") if "name" in item else ""
    fields = _fields(check, item.get("fields"), f"{where}.fields", binary=True)
    layout = FrameLayout(type=frame_type, fields=fields, byte_order=byte_order, name=name)
    size = layout_size(layout)
    if max_payload is not None and size > max_payload:
        check.fail(f"{where}.fields", f"the layout is {size} bytes, more than the board's max_payload ({max_payload})")
    return layout


def _csv_layout(check: Checker, value: object, where: str) -> CsvLayout:
    table = check.table(value, where, "a table ([schema.csv])")
    check.keys(table, _CSV_KEYS, f"[{where}]")
    delimiter = table.get("delimiter", ",")
    if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in "\r\n" or delimiter.isalnum():
        check.fail(
            f"{where}.delimiter",
            f"expected one character that is not a letter, digit or newline, got {describe(delimiter)}",
        )
    return CsvLayout(fields=_fields(check, table.get("fields"), f"{where}.fields", binary=False), delimiter=delimiter)


def _fields(check: Checker, value: object, where: str, *, binary: bool) -> tuple[FieldSpec, ...]:
    if not isinstance(value, list) or not value or len(value) > MAX_FIELDS:
        check.fail(
            where,
            f'expected a list of 1 to {MAX_FIELDS} tables like {{name = "t", type = "f32"}}, got {describe(value)}',
        )
    specs: list[FieldSpec] = []
    names: set[str] = set()
    for i, item in enumerate(value):
        spec = _field(check, item, f"{where}[{i}]", binary)
        if spec.name in names:
            check.fail(f"{where}[{i}].name", f"two fields are named {spec.name!r}")
        names.add(spec.name)
        specs.append(spec)
    return tuple(specs)


def _field(check: Checker, value: object, where: str, binary: bool) -> FieldSpec:
    item: Mapping[str, Any] = check.table(value, where, 'a field table like {name = "t", type = "f32"}')
    check.keys(item, _FIELD_KEYS, where)
    for key in ("name", "type"):
        if key not in item:
            check.fail(f"{where}.{key}", "required key is missing")
    name = check.name(item["name"], f"{where}.name", "field")
    types = FIELD_TYPES if binary else tuple(t for t in FIELD_TYPES if t != "bytes")
    kind = check.one_of(item["type"], f"{where}.type", types)
    count = 1
    if "count" in item:
        if not binary:
            check.fail(f"{where}.count", "a csv cell holds one value (no count)")
        count = check.integer(item["count"], f"{where}.count", ge=1, le=MAX_FIELD_COUNT)
    size = 0
    if kind in SIZED_TYPES and binary:
        if "size" not in item:
            check.fail(f"{where}.size", f"required for {kind} fields (their length in bytes)")
        size = check.integer(item["size"], f"{where}.size", ge=1, le=MAX_FIELD_SIZE)
    elif "size" in item:
        check.fail(f"{where}.size", f"only bytes and str fields of a binary layout have a size, not {kind}")
    numeric = kind in INTEGER_TYPES or kind in FLOAT_TYPES
    scale = offset = None
    if "scale" in item or "offset" in item:
        if not numeric:
            check.fail(f"{where}.scale", f"scale and offset apply to numbers, not {kind}")
        if "scale" in item:
            scale = check.number(item["scale"], f"{where}.scale")
        if "offset" in item:
            offset = check.number(item["offset"], f"{where}.offset")
    unit = None
    if "unit" in item:
        unit = check.string(item["unit"], f"{where}.unit", "a unit (a non-empty string)")
    return FieldSpec(name=name, type=kind, count=count, size=size, scale=scale, offset=offset, unit=unit)


def layout_size(layout: FrameLayout) -> int:
    """The payload bytes ``layout`` decodes."""
    return struct.calcsize(struct_format(layout))
