"""Checking a plugin's or sink's options table against a small spec."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

#: ``{key: (type, default)}``; a default of ``...`` makes the key required
OptionSpec = Mapping[str, tuple[type, Any]]


def check_options(
    options: Mapping[str, object], spec: OptionSpec, error: Callable[[str, str], Exception]
) -> dict[str, Any]:
    """Defaults filled in; unknown keys, missing required keys and wrong types
    raise ``error(key, message)``. A bool is not an int; an int is accepted
    where a float is expected (TOML writes ``5`` for five seconds)."""
    unknown = sorted(set(options) - set(spec))
    if unknown:
        raise error(unknown[0], f"unknown option (known: {', '.join(sorted(spec)) or 'none'})")
    out: dict[str, Any] = {}
    for key, (kind, default) in spec.items():
        if key not in options:
            if default is ...:
                raise error(key, "required option is missing")
            out[key] = default
            continue
        value = options[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind in (int, float) and isinstance(value, bool)):
            raise error(key, f"expected {kind.__name__}, got {value!r}")
        out[key] = value
    return out
