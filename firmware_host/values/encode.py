"""Decoded fields as JSON text: how sinks and the spool write ``Frame.fields``."""

from __future__ import annotations

import json
import math
from typing import Any


def fields_json(fields: dict[str, Any]) -> bytes:
    """A frame's decoded fields as JSON. A float that is not finite (a sensor's
    NaN) is written as null: JSON has no NaN."""
    try:
        return json.dumps(fields, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except ValueError:
        return json.dumps(_finite(fields), ensure_ascii=False, allow_nan=False).encode("utf-8")


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
