"""What a board says its payloads hold: named fields of fixed-size types.

A binary frame type's payload is a packed sequence of fields (``FrameLayout``)
in one byte order; a text device's lines are delimiter-separated fields
(``CsvLayout``). These are plain descriptions, validated where they are read
(``firmware_host.config.payloads``) and compiled by ``decoder``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

#: field type → its ``struct`` code (packed, no alignment: ``<`` or ``>``)
SCALAR_CODES: dict[str, str] = {
    "u8": "B",
    "u16": "H",
    "u32": "I",
    "u64": "Q",
    "i8": "b",
    "i16": "h",
    "i32": "i",
    "i64": "q",
    "f32": "f",
    "f64": "d",
    "bool": "?",
}
#: types of a fixed ``size`` in bytes: raw bytes (JSON: hex), UTF-8 text (NULs at the end dropped)
SIZED_TYPES: tuple[str, ...] = ("bytes", "str")
FIELD_TYPES: tuple[str, ...] = (*SCALAR_CODES, *SIZED_TYPES)
INTEGER_TYPES = frozenset({"u8", "u16", "u32", "u64", "i8", "i16", "i32", "i64"})
FLOAT_TYPES = frozenset({"f32", "f64"})
BYTE_ORDERS: dict[str, str] = {"little": "<", "big": ">"}


@dataclass(frozen=True)
class FieldSpec:
    """One named field. ``count`` > 1 makes it a fixed-length array (a list);
    ``scale`` and ``offset`` turn a raw number into ``raw * scale + offset``."""

    name: str
    type: str
    count: int = 1
    #: bytes and str only: the length in bytes
    size: int = 0
    scale: float | None = None
    offset: float | None = None
    unit: str | None = None

    @property
    def is_array(self) -> bool:
        return self.count != 1

    @property
    def element_size(self) -> int:
        """Bytes of one element: ``size`` for bytes and str, else the scalar's (packed)."""
        return self.size if self.type in SIZED_TYPES else struct.calcsize("<" + SCALAR_CODES[self.type])

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.count != 1:
            out["count"] = self.count
        if self.size:
            out["size"] = self.size
        if self.scale is not None:
            out["scale"] = self.scale
        if self.offset is not None:
            out["offset"] = self.offset
        if self.unit is not None:
            out["unit"] = self.unit
        return out


@dataclass(frozen=True)
class FrameLayout:
    """The payload of one binary frame type."""

    type: int
    fields: tuple[FieldSpec, ...]
    byte_order: str = "little"
    #: what the frame is (documentation, the C header's struct name)
    name: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "name": self.name,
            "byte_order": self.byte_order,
            "fields": [f.to_dict() for f in self.fields],
        }


@dataclass(frozen=True)
class CsvLayout:
    """A line of delimiter-separated values. A line that is the header (the
    field names joined by the delimiter) gets no fields and is not counted."""

    fields: tuple[FieldSpec, ...]
    delimiter: str = ","

    def to_dict(self) -> dict[str, Any]:
        return {"delimiter": self.delimiter, "fields": [f.to_dict() for f in self.fields]}


@dataclass(frozen=True)
class PayloadSchema:
    """A board's payload schema: binary layouts by frame type, or a csv layout."""

    frames: tuple[FrameLayout, ...] = ()
    csv: CsvLayout | None = None
    #: the board's byte order for its layouts
    byte_order: str = "little"
    _by_type: dict[int, FrameLayout] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_type.update((layout.type, layout) for layout in self.frames)

    def layout(self, frame_type: int) -> FrameLayout | None:
        return self._by_type.get(frame_type)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.frames:
            out["byte_order"] = self.byte_order
            out["frames"] = [f.to_dict() for f in self.frames]
        if self.csv is not None:
            out["csv"] = self.csv.to_dict()
        return out
