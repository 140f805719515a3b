"""A C header from a board's binary layouts: one definition for both ends.

Per ``FrameLayout``: a packed struct of its fields (raw values: scale and
offset are the host's, given in a comment), ``<BOARD>_<NAME>_TYPE``,
``_PAYLOAD_SIZE`` and ``_ENCODED_MAX``, and an encode function on
``tools/c/fh1_encoder.h`` that writes each field byte by byte in the layout's
byte order, so the wire never depends on the MCU's endianness or on how its
compiler lays out the struct. Pure: layouts in, text out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import PurePath

from firmware_host.errors import BoardError
from firmware_host.values.layout import SCALAR_CODES, FieldSpec, FrameLayout

#: field type → its C type in the struct (bool: one byte; str/bytes: char/uint8_t arrays)
C_TYPES: dict[str, str] = {
    "u8": "uint8_t",
    "u16": "uint16_t",
    "u32": "uint32_t",
    "u64": "uint64_t",
    "i8": "int8_t",
    "i16": "int16_t",
    "i32": "int32_t",
    "i64": "int64_t",
    "f32": "float",
    "f64": "double",
    "bool": "uint8_t",
    "str": "char",
    "bytes": "uint8_t",
}
#: field type → (fh1_encoder.h writer without its le/be suffix, the cast its argument needs)
_WRITERS: dict[str, tuple[str, str]] = {
    "u8": ("fh1_write_u8", ""),
    "i8": ("fh1_write_u8", "(uint8_t)"),
    "u16": ("fh1_write_u16", ""),
    "i16": ("fh1_write_u16", "(uint16_t)"),
    "u32": ("fh1_write_u32", ""),
    "i32": ("fh1_write_u32", "(uint32_t)"),
    "u64": ("fh1_write_u64", ""),
    "i64": ("fh1_write_u64", "(uint64_t)"),
    "f32": ("fh1_write_f32", ""),
    "f64": ("fh1_write_f64", ""),
}
_ORDER_SUFFIX = {"little": "le", "big": "be"}

# Keywords of C (C89 to C23) and C++ (the header is extern "C" for C++ too).
_KEYWORDS = frozenset(
    word
    for line in (
        "auto break case char const continue default do double else enum extern float for goto if inline int",
        "long register restrict return short signed sizeof static struct switch typedef union unsigned void",
        "volatile while _Alignas _Alignof _Atomic _BitInt _Bool _Complex _Decimal128 _Decimal32 _Decimal64",
        "_Generic _Imaginary _Noreturn _Static_assert _Thread_local alignas alignof bool constexpr false",
        "nullptr static_assert thread_local true typeof typeof_unqual",
        "and and_eq asm bitand bitor catch char8_t char16_t char32_t class compl concept consteval constinit",
        "co_await co_return co_yield const_cast decltype delete dynamic_cast explicit export friend mutable",
        "namespace new noexcept not not_eq operator or or_eq private protected public reinterpret_cast",
        "requires static_cast template this throw try typeid typename using virtual wchar_t xor xor_eq",
    )
    for word in line.split()
)
# Object-like macros of the headers it includes (stddef, stdint, float, string,
# fh1_encoder): a member named like one would be replaced by the preprocessor.
_MACRO_LIKE = re.compile(r"NULL|DECIMAL_DIG|(FH1|FLT|DBL|LDBL)_\w*|\w+_(MAX|MIN)")


def identifier(name: str, prefix: str) -> str:
    """``name`` as a C identifier: '-', '.' (anything else not allowed) → '_';
    ``prefix`` first if it starts with a digit."""
    ident = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return prefix + ident if ident[:1].isdigit() else ident


def member_name(name: str, macros: frozenset[str] = frozenset()) -> str:
    """A field's struct member: its name as an identifier, with a ``_``
    suffix if that is a C/C++ keyword or a macro in scope (``macros``)."""
    ident = identifier(name, "f_")
    if ident in _KEYWORDS or ident in macros or _MACRO_LIKE.fullmatch(ident):
        ident += "_"
    return ident


def c_header(board: str, frames: Sequence[FrameLayout], *, source: str | None = None) -> str:
    """The header for ``board``'s binary ``frames`` (at least one); raises
    ``BoardError`` (naming ``source`` and the key) when two names map to one C name."""
    if not frames:
        raise BoardError("no binary layouts ([[schema.frames]]) to generate a C header from", source=source)
    prefix = identifier(board, "board_").lower()
    bases: dict[str, int] = {}  # struct name → index in frames
    for i, layout in enumerate(frames):
        base = f"{prefix}_{identifier(layout.name, '') or f'frame_{layout.type:02x}'}".lower()
        if base in bases:
            other = frames[bases[base]]
            raise BoardError(
                f"frame types {other.type:#04x} and {layout.type:#04x} both map to the C name {base}",
                source=source,
                key=f"schema.frames[{i}].name",
            )
        bases[base] = i
    guard = f"{prefix.upper()}_FH1_SCHEMA_H"
    macros = frozenset(
        {guard} | {f"{b.upper()}_{suffix}" for b in bases for suffix in ("TYPE", "PAYLOAD_SIZE", "ENCODED_MAX")}
    )
    origin = f" from {_comment(PurePath(source).name)}" if source else ""
    out = [
        "/*",
        f" * {board}: payload structs and fh1 encoders, generated by",
        f" * `firmware-host boards header {board}`{origin}. Do not edit; regenerate.",
        " *",
        " * Each struct holds a frame type's raw values (the host applies scale and",
        " * offset); its encode function writes the fields one by one in the",
        " * layout's byte order, so the wire does not depend on this MCU's",
        " * endianness or on the struct's layout. Needs fh1_encoder.h (tools/c/).",
        " */",
        f"#ifndef {guard}",
        f"#define {guard}",
        "",
        "#include <stddef.h>",
        "#include <stdint.h>",
        "",
        '#include "fh1_encoder.h"',
        "",
    ]
    kinds = {spec.type for layout in frames for spec in layout.fields}
    if "f32" in kinds:
        out += ["#if FLT_MANT_DIG != 24", f'#error "{board}: f32 fields need an IEEE-754 binary32 float"', "#endif"]
    if "f64" in kinds:
        out += [
            "#if DBL_MANT_DIG != 53",
            f'#error "{board}: f64 fields need a 64-bit IEEE-754 double (avr-gcc: -mdouble=64)"',
            "#endif",
        ]
    out += ["", "#ifdef __cplusplus", 'extern "C" {', "#endif", ""]
    for base, i in bases.items():
        out += _layout(base, frames[i], f"schema.frames[{i}]", macros, source)
    out += ["#ifdef __cplusplus", "}", "#endif", "", f"#endif /* {guard} */", ""]
    return "\n".join(out)


def _layout(base: str, layout: FrameLayout, where: str, macros: frozenset[str], source: str | None) -> list[str]:
    members: dict[str, int] = {}  # member name → index in fields
    for j, spec in enumerate(layout.fields):
        member = member_name(spec.name, macros)
        if member in members:
            other = layout.fields[members[member]].name
            raise BoardError(
                f"fields {other!r} and {spec.name!r} both map to the C name {member}",
                source=source,
                key=f"{where}.fields[{j}].name",
            )
        members[member] = j
    size = sum(_field_size(spec) for spec in layout.fields)
    macro = base.upper()
    title = f' "{_comment(layout.name)}"' if layout.name else ""
    lines = [
        f"/* Frame type {layout.type:#04x}{title}: {size} bytes, {layout.byte_order}-endian. */",
        f"#define {macro}_TYPE {layout.type:#04x}u",
        f"#define {macro}_PAYLOAD_SIZE {size}u",
        f"#define {macro}_ENCODED_MAX FH1_ENCODED_MAX({macro}_PAYLOAD_SIZE)",
        "",
        "#pragma pack(push, 1)",
        f"struct {base} {{",
    ]
    for member, spec in zip(members, layout.fields, strict=True):
        lines.append(f"    {_declaration(member, spec)}; /* {_describe(spec, member)} */")
    lines += ["};", "#pragma pack(pop)", ""]
    lines += [
        f"/* Encodes *v as one fh1 frame of type {macro}_TYPE into out (cap bytes;",
        f" * {macro}_ENCODED_MAX always fits). Returns the bytes to send, 0 if cap was too small. */",
        f"static inline size_t {base}_encode(const struct {base} *v, uint32_t seq, uint8_t *out, size_t cap)",
        "{",
        "    fh1_encoder_t e;",
    ]
    if any(spec.is_array and spec.type in SCALAR_CODES for spec in layout.fields):
        lines.append("    size_t i;")
    lines.append(f"    fh1_begin(&e, out, cap, (uint8_t){macro}_TYPE, seq);")
    suffix = _ORDER_SUFFIX[layout.byte_order]
    for member, spec in zip(members, layout.fields, strict=True):
        lines += _write(member, spec, suffix)
    lines += ["    return fh1_end(&e);", "}", ""]
    return lines


def _field_size(spec: FieldSpec) -> int:
    return spec.count * spec.element_size


def _declaration(member: str, spec: FieldSpec) -> str:
    dims = f"[{spec.count}]" if spec.is_array else ""
    if spec.type in ("str", "bytes"):
        dims += f"[{spec.size}]"
    return f"{C_TYPES[spec.type]} {member}{dims}"


def _write(member: str, spec: FieldSpec, suffix: str) -> list[str]:
    if spec.type in ("str", "bytes"):  # bytes as they are: no byte order
        return [f"    fh1_write(&e, v->{member}, {_field_size(spec)}u);"]
    if spec.type == "bool":
        call = "fh1_write_u8(&e, (uint8_t)({value} != 0u));"
    else:
        writer, cast = _WRITERS[spec.type]
        call = f"{writer}{'' if spec.type in ('u8', 'i8') else suffix}(&e, {cast}{{value}});"
    if not spec.is_array:
        return ["    " + call.format(value=f"v->{member}")]
    return [
        f"    for (i = 0; i < {spec.count}u; i++) {{",
        "        " + call.format(value=f"v->{member}[i]"),
        "    }",
    ]


def _describe(spec: FieldSpec, member: str) -> str:
    kind = spec.type
    if spec.type in ("str", "bytes"):
        kind += f", {spec.size} bytes" + (" each" if spec.is_array else "")
    if spec.type == "str":
        kind += ", UTF-8, NUL-padded"
    if spec.type == "bool":
        kind += " (0 or 1)"
    parts = [kind]
    if member != spec.name:
        parts.insert(0, f'"{_comment(spec.name)}"')
    if spec.unit is not None:
        parts.append(f"unit {_comment(spec.unit)}")
    if spec.scale is not None or spec.offset is not None:
        scale = 1.0 if spec.scale is None else spec.scale
        offset = 0.0 if spec.offset is None else spec.offset
        parts.append(f"scale {scale!r}; offset {offset!r} (value = raw * scale + offset)")
    return "; ".join(parts)


def _comment(text: str) -> str:
    """``text`` safe inside a /* */ comment on one line: no comment delimiters
    (-Wcomment), no trigraphs, no control characters."""
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    return text.replace("/*", "/ *").replace("*/", "* /").replace("??", "? ?")
