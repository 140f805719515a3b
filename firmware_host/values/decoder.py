"""Decoding payloads into ``Frame.fields``, per device, counted.

Each binary layout is compiled once (``LayoutValues``): a ``struct.Struct``
and a builder of its dict (a plain layout's a dict display, any other field by
field), and, where the C part is built, a writer of its JSON straight from the
payload. Each decoder is one loop over a read's frames with its layouts' types
and sizes written in, which gives a frame of its layout's size that layout's
values (``Frame.values``): the dict is made when something reads
``Frame.fields``, and a sink writing JSON need never make it. A payload whose
size is not its layout's, or a csv line that does not parse, keeps its bytes
or text, gets no fields and counts as ``undecoded``: a device's mistake is
counted, never raised. The count is taken in the loop, so it does not wait for
a reader.
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Callable, Sequence
from typing import Any

from firmware_host.compiled import turned_off
from firmware_host.frames import Frame, Values
from firmware_host.values.encode import CompiledField, compiled_layout, compiled_mark, fields_json
from firmware_host.values.layout import (
    BYTE_ORDERS,
    FLOAT_TYPES,
    INTEGER_TYPES,
    SCALAR_CODES,
    CsvLayout,
    FieldSpec,
    FrameLayout,
    PayloadSchema,
)
from firmware_host.values.nmea import NmeaDecoder, pynmeagps_parser
from firmware_host.values.nmea_fast import compiled_available
from firmware_host.values.ubx import UbxDecoder, ubx_decoder

log = logging.getLogger("firmware_host.values")

Fields = dict[str, Any]
#: unpacked values → the frame's fields
Builder = Callable[[tuple[Any, ...]], Fields]


def struct_format(layout: FrameLayout) -> str:
    """The ``struct`` format of ``layout`` (packed, in its byte order)."""
    parts = [BYTE_ORDERS[layout.byte_order]]
    for spec in layout.fields:
        if spec.type in SCALAR_CODES:
            parts.append(f"{spec.count}{SCALAR_CODES[spec.type]}" if spec.count != 1 else SCALAR_CODES[spec.type])
        else:  # bytes, str: one value of `size` bytes per element
            parts.append(f"{spec.size}s" * spec.count)
    return "".join(parts)


def _convert(spec: FieldSpec) -> Callable[[Any], Any] | None:
    """The per-element conversion of ``spec``'s raw value, or None (as unpacked)."""
    if spec.type == "str":
        return lambda raw: raw.rstrip(b"\0").decode("utf-8", "replace")
    if spec.type == "bytes":
        return lambda raw: raw.hex()
    if spec.scale is not None or spec.offset is not None:
        scale = 1.0 if spec.scale is None else spec.scale
        offset = 0.0 if spec.offset is None else spec.offset
        return lambda raw: raw * scale + offset
    return None


def _plain_builder(names: Sequence[str]) -> Builder:
    """``{names[0]: values[0], ...}`` as a dict display compiled once per
    layout (as ``namedtuple`` compiles its class): 0.13 µs a frame against
    0.48 for ``dict(zip(names, values))``. The names are written with
    ``repr``, so any string is a literal, never code."""
    body = ", ".join(f"{name!r}: values[{i}]" for i, name in enumerate(names))
    build: Builder = eval(f"lambda values: {{{body}}}", {"__builtins__": {}})
    return build


def _builder(layout: FrameLayout) -> Builder:
    specs = layout.fields
    if all(spec.count == 1 and _convert(spec) is None for spec in specs):
        return _plain_builder([spec.name for spec in specs])
    plan = []
    start = 0
    for spec in specs:
        plan.append((spec.name, start, spec.count, spec.is_array, _convert(spec)))
        start += spec.count

    def build(values: tuple[Any, ...]) -> Fields:
        fields: Fields = {}
        for name, i, count, is_array, convert in plan:
            if is_array:
                items = values[i : i + count]
                fields[name] = list(items) if convert is None else [convert(v) for v in items]
            else:
                fields[name] = values[i] if convert is None else convert(values[i])
        return fields

    return build


def _compiled_fields(layout: FrameLayout) -> list[CompiledField] | None:
    """``layout`` as the C part's ``Layout`` takes it; None for a name JSON
    cannot write as UTF-8 (a lone surrogate: then ``fields_json`` decides)."""
    out: list[CompiledField] = []
    for spec in layout.fields:
        try:
            key = json.dumps(spec.name, ensure_ascii=False).encode("utf-8") + b":"
        except UnicodeEncodeError:
            return None
        out.append((key, spec.type, spec.count, spec.is_array, spec.element_size, spec.scale, spec.offset))
    return out


class LayoutValues:
    """One binary layout's ``Values``: a payload's fields as the dict, made
    when first read, and as JSON text, from the dict. Both are None for a
    payload of another size (a processor's changed bytes). ``for_frames`` is
    what the decoder gives its frames (``Frame.values``): the C part's
    ``Layout``, which writes the JSON straight from the payload, where it is
    built and takes the layout (``compiled_layout``), else this."""

    __slots__ = ("fields", "for_frames", "json", "json_into", "size")

    def __init__(self, layout: FrameLayout) -> None:
        packed = struct.Struct(struct_format(layout))
        unpack = packed.unpack
        size = self.size = packed.size
        build = _builder(layout)

        def fields(payload: bytes) -> Fields | None:
            return build(unpack(payload)) if len(payload) == size else None

        def from_dict(payload: bytes) -> bytes | None:
            made = fields(payload)
            return None if made is None else fields_json(made)

        specs = _compiled_fields(layout)
        in_c = None if specs is None else compiled_layout(layout.byte_order == "big", specs, fields)
        #: the payload's fields as a dict (``Frame.fields``)
        self.fields: Callable[[bytes], Fields | None] = fields
        #: the payload's fields as ``fields_json`` writes them
        self.json: Callable[[bytes], bytes | None] = from_dict if in_c is None else in_c.json
        #: a jsonl record with the payload's fields added as its last member
        self.json_into: Callable[[bytes, bytes], bytes] = _adding(self.json) if in_c is None else in_c.json_into
        #: what the decoder gives its frames: one object whose methods a sink calls
        #: directly (a C method call is cheaper than a call through a slot)
        self.for_frames: Values = self if in_c is None else in_c

    @property
    def writes_from_payload(self) -> bool:
        """Whether the JSON is written in C without the dict."""
        return self.for_frames is not self


def _adding(json: Callable[[bytes], bytes | None]) -> Callable[[bytes, bytes], bytes]:
    """``Values.json_into`` from ``json``: as the C part's ``Layout.json_into``."""

    def json_into(record: bytes, payload: bytes) -> bytes:
        if not record.endswith(b"}\n") or len(record) < 3:
            raise ValueError("the record must end with '}' and a newline")
        written = json(payload)
        if written is None:
            return record
        member = b'"fields": ' if record[-3:-2] == b"{" else b', "fields": '  # "{}": its only member
        return record[:-2] + member + written + b"}\n"

    return json_into


def _csv_value(spec: FieldSpec) -> Callable[[str], Any]:
    if spec.type in INTEGER_TYPES:
        convert: Callable[[str], Any] = _csv_int(spec.type)
    elif spec.type in FLOAT_TYPES:
        convert = float
    elif spec.type == "bool":
        convert = _csv_bool
    else:  # str (bytes are refused for csv where the schema is read)
        return str
    if spec.scale is not None or spec.offset is not None:
        scale = 1.0 if spec.scale is None else spec.scale
        offset = 0.0 if spec.offset is None else spec.offset
        raw = convert
        return lambda text: raw(text) * scale + offset
    return convert


def _csv_int(kind: str) -> Callable[[str], int]:
    """``int`` within ``kind``'s range: a u8 cell of 300 or -1 does not fit,
    as a binary u8 could not hold it."""
    bits = int(kind[1:])
    lo, hi = (0, (1 << bits) - 1) if kind[0] == "u" else (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)

    def convert(text: str) -> int:
        value = int(text)
        if not lo <= value <= hi:
            raise ValueError(f"{value} is out of range for {kind}")
        return value

    return convert


def _csv_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


class _Csv:
    __slots__ = ("converters", "delimiter", "header", "names")

    def __init__(self, layout: CsvLayout) -> None:
        self.delimiter = layout.delimiter
        self.names = tuple(spec.name for spec in layout.fields)
        self.converters = tuple(_csv_value(spec) for spec in layout.fields)
        self.header = self.delimiter.join(self.names)

    def fields(self, text: str) -> Fields | None:
        """The line's fields; None for the header line. Raises ValueError, or
        OverflowError (an integer cell too large to scale as a float)."""
        line = text.strip()
        if line == self.header:
            return None
        cells = line.split(self.delimiter)
        if len(cells) != len(self.names):
            raise ValueError("wrong number of cells")
        return {name: convert(cell) for name, convert, cell in zip(self.names, self.converters, cells, strict=True)}


#: a schema with more binary layouts than this decodes through a dict lookup
#: per frame instead of a generated chain of type tests
_INLINE_LAYOUTS_MAX = 8


#: one generated loop per decoder: the frames' type tests and sizes written
#: in, so a frame costs no lookup and no call: a payload of its layout's size
#: gets the layout's values (``Frame.values``), read when asked for. Its
#: source holds only ints and names, never a frame's bytes.
_LOOP = """
def decode(frames):
    bad = 0
    for frame in frames:
        payload = frame.payload
        if payload is None:
{text}
            continue
        t = frame.type
{types}
    return bad
"""
_CSV_PART = """            text = frame.text
            if text is not None:
                try:
                    frame.fields = csv_fields(text)
                except (ValueError, OverflowError):  # the device's line, not our fault
                    bad += 1"""
_TYPE_PART = """        {keyword} t == {type}:
            if len(payload) == {size}:
                frame.values = for_frames_{n}
                frame._fields = None
            else:
                bad += 1"""


def _generated(binary: dict[int, LayoutValues], csv: _Csv | None) -> DecodeLoop:
    scope: dict[str, Any] = {"__builtins__": {"len": len, "ValueError": ValueError, "OverflowError": OverflowError}}
    parts = []
    for n, (frame_type, values) in enumerate(binary.items()):
        scope[f"for_frames_{n}"] = values.for_frames
        keyword = "if" if n == 0 else "elif"
        parts.append(_TYPE_PART.format(keyword=keyword, type=int(frame_type), size=int(values.size), n=n))
    if csv is not None:
        scope["csv_fields"] = csv.fields
    source = _LOOP.format(
        text=_CSV_PART if csv is not None else "            pass", types="\n".join(parts) or "        pass"
    )
    exec(compile(source, "<payload decoder>", "exec"), scope)
    loop: DecodeLoop = scope["decode"]
    return loop


def _looked_up(binary: dict[int, LayoutValues], csv: _Csv | None) -> DecodeLoop:
    """The loop for many layouts: one dict lookup per frame."""

    def decode(frames: Sequence[Frame]) -> int:
        bad = 0
        for frame in frames:
            payload = frame.payload
            if payload is not None:
                values = binary.get(frame.type)  # type: ignore[arg-type]  # None: no layout
                if values is None:
                    continue  # a type the schema does not describe: bytes only, not a fault
                if len(payload) != values.size:
                    bad += 1
                    continue
                frame.values = values.for_frames
                frame._fields = None  # the fields come from the layout now
            elif csv is not None and frame.text is not None:
                try:
                    frame.fields = csv.fields(frame.text)
                except (ValueError, OverflowError):  # the device's line, not our fault
                    bad += 1
        return bad

    return decode


def _marked(binary: dict[int, LayoutValues]) -> DecodeLoop | None:
    """The loop of a schema of binary layouts only, in C (``compiled_mark``):
    the generated loop's work without its bytecode, 690 -> about 250
    instructions a frame. None where the C part is not built."""
    if compiled_mark is None:
        return None
    mark = compiled_mark
    table = {frame_type: (values.size, values.for_frames) for frame_type, values in binary.items()}

    def decode(frames: Sequence[Frame]) -> int:
        return mark(frames, table)

    return decode


#: decodes a batch of frames in place, returning how many did not fit
DecodeLoop = Callable[[Sequence[Frame]], int]


class PayloadDecoder:
    """One device's decoder: sets ``Frame.fields`` on the frames its schema
    describes and counts those it cannot decode (``undecoded``). A frame of a
    type the schema does not describe keeps its bytes and is not counted."""

    def __init__(self, schema: PayloadSchema) -> None:
        self.schema = schema
        #: frames of a declared type (or csv lines) that did not fit their schema
        self.undecoded = 0
        layouts = {layout.type: layout for layout in schema.frames}
        binary = {frame_type: LayoutValues(layout) for frame_type, layout in layouts.items()}
        csv = _Csv(schema.csv) if schema.csv is not None else None
        marked = _marked(binary) if csv is None else None
        if marked is not None:
            self._loop = marked
        elif len(binary) <= _INLINE_LAYOUTS_MAX:
            self._loop = _generated(binary, csv)
        else:
            self._loop = _looked_up(binary, csv)

    def decode(self, frames: Sequence[Frame]) -> None:
        bad = self._loop(frames)
        if bad:
            self.undecoded += bad


def _first(reported: set[str] | None, what: str) -> bool:
    """Whether ``what`` is said now: always without a ``reported`` set, else
    the first time (its owner, the runtime, keeps the set)."""
    if reported is None:
        return True
    if what in reported:
        return False
    reported.add(what)
    return True


#: the extra each codec's value decoder needs (``pip install 'firmware-host[gnss]'``)
CODEC_EXTRAS: dict[str, str] = {"nmea": "gnss", "ubx": "gnss"}


def decoder_for(
    codec: str,
    schema: PayloadSchema | None,
    decode: bool = True,
    *,
    reported: set[str] | None = None,
) -> PayloadDecoder | NmeaDecoder | UbxDecoder | None:
    """The decoder of a device with ``codec`` and its board's ``schema``; None
    when its frames stay bytes and text (``decode = false``, or nothing to
    decode them with). A board's schema wins; else ``nmea`` and ``ubx``
    devices decode by what their protocol says, with the ``[gnss]`` extra.
    Without it, a warning is logged once per caller: ``reported`` is the set
    of codecs its owner (the runtime) has already warned about."""
    if not decode:
        return None
    if schema is not None:
        return PayloadDecoder(schema)
    if codec not in CODEC_EXTRAS:
        return None
    decoder: NmeaDecoder | UbxDecoder | None = None
    if codec == "nmea":
        parse = pynmeagps_parser()
        decoder = NmeaDecoder(parse) if parse is not None else None
    else:
        decoder = ubx_decoder()
    if decoder is not None and not compiled_available() and not turned_off() and _first(reported, "nmea-c"):
        # an operator who wonders why a Pi spends more on NMEA than expected learns why, once
        log.info(
            "NMEA values are decoded in Python: the C part was not built at install "
            "(install a C compiler and the Python headers, e.g. apt-get install gcc python3-dev, then reinstall)"
        )
    if decoder is None and _first(reported, codec):
        log.warning(
            "%s frames flow as bytes and text only: their values are not decoded without the [%s] extra "
            "(pip install 'firmware-host[%s]')",
            codec,
            CODEC_EXTRAS[codec],
            CODEC_EXTRAS[codec],
        )
    return decoder
