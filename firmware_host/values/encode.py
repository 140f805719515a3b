"""Decoded fields as JSON: how sinks and the spool write ``Frame.fields``.

Writing the fields is most of what decoding costs: an env-sensor frame's
three floats took 3.6 µs with ``json.dumps``, nearly all of it CPython's float
repr and the encoder ``json.dumps`` builds per call. With orjson installed
(the ``[fast]`` extra) the fields are written by orjson: the same numbers,
shortest round-trip floats, in about a tenth of the time, but compact (no
spaces after ``:`` and ``,``) and with small or large exponents spelled out
where Python writes ``1e-05``. Without it the C encoder of the standard
library is made once here with ``json.dumps``'s settings and called directly:
the text ``json.dumps`` writes, about 3x faster than calling it. Either way a
float that is not finite (a sensor's NaN) is written as ``null``: JSON has no
NaN. Tests hold both against ``json.dumps``.

Where the C part was built at install (``_json_c.c``, beside the NMEA one), it
writes them first: ``json.dumps``'s text, compact, floats spelled as Python's
repr spells them (from Schubfach's shortest digits), with no Python frame and no
keyword parsing per call; what it does not know exactly (a subclass, a key
that is not a string, a lone surrogate) it hands whole to the writer above.
The same C part writes a binary layout's payload as this same text without
making the dict (``compiled_layout``): what a decoded frame's ``Frame.values``
is.
"""

from __future__ import annotations

import json
import json.encoder
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from firmware_host.compiled import turned_off
from firmware_host.frames import Values

if TYPE_CHECKING:
    from firmware_host.values import _json_c

#: (separators, ensure_ascii=False, allow_nan=False): the text json.dumps would give
_KEY_SEPARATOR = ": "
_ITEM_SEPARATOR = ", "


def _make_encoder() -> Callable[[Any], str]:
    try:
        from _json import make_encoder  # what json.encoder itself uses
    except ImportError:  # an interpreter built without _json
        return json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode
    # no circular-reference markers: fields are trees the decoders build
    iterencode = make_encoder(
        None, _not_json, json.encoder.encode_basestring, None, _KEY_SEPARATOR, _ITEM_SEPARATOR, False, False, False
    )

    def encode(value: Any) -> str:
        return "".join(iterencode(value, 0))

    return encode


def _not_json(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")  # as json says it


def _standard_json(encode: Callable[[Any], str]) -> Callable[[dict[str, Any]], bytes]:
    """``encode``'s text of the fields as UTF-8, non-finite floats as null."""

    def fields_json(fields: dict[str, Any]) -> bytes:
        try:
            return encode(fields).encode("utf-8")
        except ValueError:
            return encode(_finite(fields)).encode("utf-8")

    return fields_json


def _orjson_json(standard: Callable[[dict[str, Any]], bytes]) -> Callable[[dict[str, Any]], bytes] | None:
    """orjson's ``dumps`` held to what ``json`` accepts, or None without orjson.

    orjson would also write dataclasses, datetimes and subclasses of str, int,
    dict and list its own way; passed through to ``_not_json`` they raise, and
    ``standard`` writes what ``json.dumps`` writes (subclasses as their base)
    or refuses the same way. Integers beyond 64 bits raise too and take the
    same way out. One Python frame per call: this is the per-frame path."""
    try:
        import orjson
    except ImportError:
        return None
    dumps = orjson.dumps
    options = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_SUBCLASS

    def fields_json(fields: dict[str, Any]) -> bytes:
        try:
            return dumps(fields, default=_not_json, option=options)  # NaN and infinities: null already
        except TypeError:  # orjson.JSONEncodeError
            return standard(fields)

    return fields_json


def _load_compiled() -> (
    tuple[type[_json_c.Writer], type[_json_c.Layout], Callable[[Sequence[Any], dict[int, tuple[int, Any]]], int]] | None
):
    """The C part (``_json_c.c``), built at install where a C compiler and the
    Python headers are found (setup.py); None without it, or when
    ``FIRMWARE_HOST_PURE`` turns the compiled parts off."""
    if turned_off():
        return None
    try:
        from firmware_host.values._json_c import Layout, Writer, mark
    except ImportError:
        return None
    return Writer, Layout, mark


_COMPILED = _load_compiled()
#: the decode loop of a schema of binary layouts in C (``_json_c.mark``), or None
compiled_mark: Callable[[Sequence[Any], dict[int, tuple[int, Any]]], int] | None = (
    None if _COMPILED is None else _COMPILED[2]
)


def compiled_available() -> bool:
    """Whether the C fields writer is in use: built at install, not turned off."""
    return _COMPILED is not None


class FieldsEncoder:
    """The fields' JSON writer, made once: the C part's when it was built (and
    ``compiled``), handing what it does not know to orjson's when that is
    installed (and ``fast``), else to the standard library's C encoder.
    ``json`` is a plain function attribute, not a method, so a sink can hold
    it and call it."""

    __slots__ = ("json", "uses_compiled", "uses_orjson")

    def __init__(self, fast: bool = True, compiled: bool = True) -> None:
        standard = _standard_json(_make_encoder())
        orjson_json = _orjson_json(standard) if fast else None
        self.uses_orjson = orjson_json is not None
        python = standard if orjson_json is None else orjson_json
        self.uses_compiled = compiled and _COMPILED is not None
        #: the fields as UTF-8 JSON; a float that is not finite is ``null``
        self.json: Callable[[dict[str, Any]], bytes] = (
            _COMPILED[0](python) if compiled and _COMPILED is not None else python
        )

    def text(self, fields: dict[str, Any]) -> str:
        """``json`` as text."""
        return self.json(fields).decode("utf-8")


#: stateless, made once: the compiled encoder, like a ``struct.Struct``
_ENCODER = FieldsEncoder()

#: a frame's decoded fields as UTF-8 JSON text; a float that is not finite
#: (a sensor's NaN) is written as null: JSON has no NaN
fields_json = _ENCODER.json


def fields_text(fields: dict[str, Any]) -> str:
    """``fields_json`` as text."""
    return _ENCODER.text(fields)


#: a field as the C part's ``Layout`` takes it: its key as JSON with the colon
#: (b'"t":'), type, count, whether an array, bytes an element, scale, offset
CompiledField = tuple[bytes, str, int, bool, int, "float | None", "float | None"]


def compiled_layout(
    big: bool, fields: list[CompiledField], build: Callable[[bytes], dict[str, Any] | None]
) -> Values | None:
    """The C part's ``Values`` of one binary layout: ``json`` writes a payload
    as the text ``fields_json`` writes of the dict ``build`` makes of it, and
    ``fields`` calls ``build``. None where the C part is not built or does not
    write this layout (a ``str`` field, an int ``scale`` with an int
    ``offset``...): the caller then writes the dict."""
    if _COMPILED is None:
        return None
    try:
        values: Values = _COMPILED[1](big, fields, build)
    except (ValueError, OverflowError):
        return None
    return values


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):  # json writes a tuple as an array too
        return [_finite(v) for v in value]
    return value
