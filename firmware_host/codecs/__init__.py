"""Codecs: turn a device's byte stream into frames (and frames into bytes).

Built in: ``fh1`` (binary, COBS + CRC-16), ``nmea`` (NMEA 0183),
``lines`` (newline-delimited text) and ``ubx`` (a u-blox receiver's UBX,
NMEA and RTCM3). Plugins add codecs through a registry of
factories; :func:`make_codec` builds any of them with validated options.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from firmware_host.codecs.base import Codec, CodecFactory
from firmware_host.codecs.fh1 import Fh1Codec, encode_packet
from firmware_host.codecs.lines import LinesCodec
from firmware_host.codecs.nmea import NmeaCodec
from firmware_host.codecs.ubx import UbxCodec
from firmware_host.config._check import check_options, describe, expected_kind, is_number
from firmware_host.errors import CodecOptionError

__all__ = [
    "BUILTIN_CODECS",
    "Codec",
    "CodecFactory",
    "CodecOptionError",
    "Fh1Codec",
    "LinesCodec",
    "NmeaCodec",
    "UbxCodec",
    "encode_packet",
    "make_codec",
]

#: name -> factory for the first-party codecs
BUILTIN_CODECS: dict[str, CodecFactory] = {
    Fh1Codec.name: Fh1Codec,
    NmeaCodec.name: NmeaCodec,
    LinesCodec.name: LinesCodec,
    UbxCodec.name: UbxCodec,
}


def make_codec(
    name: str,
    device: str,
    options: Mapping[str, Any] | None = None,
    registry: Mapping[str, CodecFactory] | None = None,
) -> Codec:
    """Build codec ``name`` for ``device`` with validated ``options``.

    ``registry`` (e.g. built-ins plus plugin codecs) is searched first, then
    :data:`BUILTIN_CODECS`. A Codec class that declares the options it accepts
    (``options = {"max_payload": int}``) has them checked here; a factory that
    declares nothing (a function, or ``options = None``) gets them unchecked
    (as the config loader passes them), and a TypeError it raises for them
    becomes CodecOptionError.
    Raises ValueError for an unknown name and CodecOptionError (a ValueError)
    for a bad option, both with a message fit for a config error.
    """
    factory: CodecFactory | None = None
    if registry is not None:
        factory = registry.get(name)
    if factory is None:
        factory = BUILTIN_CODECS.get(name)
    if factory is None:
        known = sorted({*BUILTIN_CODECS, *(registry or {})})
        raise ValueError(f"unknown codec {name!r} (known: {', '.join(known)})")
    opts = dict(options or {})
    # a Codec class says which options it takes; a factory function is opaque
    allowed = factory.options if isinstance(factory, type) and issubclass(factory, Codec) else None
    if allowed is not None:
        _check_declared(name, opts, allowed)
    try:
        codec = factory(device, **opts)
    except TypeError as exc:
        if allowed is None and opts:  # e.g. "unexpected keyword argument"
            raise CodecOptionError(f"codec {name!r} rejected options {', '.join(sorted(opts))}: {exc}") from exc
        raise
    if not isinstance(codec, Codec):
        raise TypeError(f"codec factory {name!r} returned {type(codec).__name__}, not a Codec")
    return codec


def _check_declared(name: str, options: Mapping[str, object], allowed: Mapping[str, type]) -> None:
    """Check ``options`` against the types a codec declares: the shared option
    check (unknown keys, types), and then > 0, since a codec option is a size."""

    def error(key: str, message: str) -> CodecOptionError:
        return CodecOptionError(f"codec {name!r}: option {key!r}: {message}")

    # None as the default: an option not given is left to the factory's own default
    checked = check_options(options, {key: (kind, None) for key, kind in allowed.items()}, error)
    for key in options:
        value = checked[key]
        if is_number(value) and not value > 0:
            raise error(key, f"expected {expected_kind(allowed[key])} > 0, got {describe(value)}")
