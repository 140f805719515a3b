"""Decoded fields as JSON text: how sinks and the spool write ``Frame.fields``.

``json.dumps`` with arguments builds a ``JSONEncoder`` and a C encoder on
every call, which was most of the 3.6 µs it took for an env-sensor frame's
three floats. The C encoder is made once here with the same settings and
called directly: the same text, about 3x faster (a property test holds it
against ``json.dumps``). Where the interpreter has no C encoder,
``JSONEncoder`` does it.
"""

from __future__ import annotations

import json
import json.encoder
import math
from collections.abc import Callable
from typing import Any

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


#: stateless, made once: the compiled encoder, like a ``struct.Struct``
_encode = _make_encoder()


def fields_text(fields: dict[str, Any]) -> str:
    """A frame's decoded fields as JSON text. A float that is not finite (a
    sensor's NaN) is written as null: JSON has no NaN."""
    try:
        return _encode(fields)
    except ValueError:
        return _encode(_finite(fields))


def fields_json(fields: dict[str, Any]) -> bytes:
    """``fields_text`` as UTF-8 bytes."""
    return fields_text(fields).encode("utf-8")


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
