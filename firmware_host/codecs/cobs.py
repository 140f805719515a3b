"""Consistent Overhead Byte Stuffing (Cheshire & Baker, 1999).

COBS rewrites a packet so that it contains no 0x00 byte; 0x00 can then
delimit packets on the wire. These functions encode and decode one packet
(without the delimiter). They work block by block (slicing, patching a
copy), so the cost in Python is per zero in the packet, never per byte.
"""

from __future__ import annotations

import os
from collections.abc import Callable

__all__ = [
    "CobsDecodeError",
    "CompiledDecodeError",
    "compiled_decode",
    "decode",
    "decode_unchecked",
    "encode",
    "max_encoded_len",
]

_ZERO = b"\x00"
# A block holds at most 254 data bytes; its code byte 0xFF means "254 bytes,
# no implied zero after them".
_MAX_RUN = 254


class CobsDecodeError(ValueError):
    """The input is not a valid COBS encoding."""


#: COBS decoding in compiled code when the optional ``corncobs`` package is
#: installed (the ``[cobs]`` extra, where it has wheels): the fh1 hot path
#: then decodes every non-empty packet with it. Same verdicts as
#: ``decode_unchecked`` for non-empty input (tests/test_crc_cobs.py checks
#: that). ``FIRMWARE_HOST_PURE=1`` (any value but ``0``) turns it off.
compiled_decode: Callable[[bytes], bytes] | None = None
CompiledDecodeError: type[Exception] = CobsDecodeError
if os.environ.get("FIRMWARE_HOST_PURE", "0") in ("", "0"):
    try:
        from corncobs import DecodeError as CompiledDecodeError  # type: ignore[no-redef]
        from corncobs import decode as compiled_decode  # type: ignore[no-redef]
    except ImportError:
        pass


def max_encoded_len(n: int) -> int:
    """Upper bound of the encoded length of any ``n``-byte packet.

    The minimal encoding needs ``n + max(1, ceil(n / 254))`` bytes; some
    encoders add a trailing 0x01 block when ``n`` is a non-zero multiple of 254,
    so the bound allows that one extra byte: ``n + n // 254 + 1``.
    """
    return n + n // _MAX_RUN + 1


def encode(data: bytes | bytearray | memoryview) -> bytes:
    """COBS-encode ``data`` (minimal encoding; the result holds no 0x00)."""
    data = bytes(data)
    out = bytearray()
    segments = data.split(_ZERO)
    last = len(segments) - 1
    for index, seg in enumerate(segments):
        length = len(seg)
        pos = 0
        # Full 254-byte blocks carry no implied zero.
        while length - pos >= _MAX_RUN:
            out.append(0xFF)
            out += seg[pos : pos + _MAX_RUN]
            pos += _MAX_RUN
        rest = length - pos
        # Minimal form: a final segment that ended exactly on a full block needs
        # no extra empty block (the decoder stops at the end of input).
        if rest == 0 and pos and index == last:
            continue
        out.append(rest + 1)
        out += seg[pos:]
    return bytes(out)


def decode_unchecked(data: bytes) -> bytes:
    """Decode ``data`` known to hold no 0x00 (it was split on 0x00).

    Raises CobsDecodeError if ``data`` is empty or a block runs past the end.
    """
    n = len(data)
    if not n:
        raise CobsDecodeError("empty input (the shortest encoding is 0x01)")
    j = data[0]
    if j == n:  # one block: the common short packet with no zero in it
        return data[1:]
    if j == 0xFF:
        return _decode_blocks(data)
    # The decoded packet is the input minus its first code byte, with every
    # later code byte turned into the 0x00 it stands for. Walking the codes
    # and patching a copy costs far less per zero than slicing and joining.
    out = bytearray(data)
    while j < n:
        code = data[j]
        if code == 0xFF:  # a full block implies no zero: needs the general path
            return _decode_blocks(data)
        out[j] = 0
        j += code
    if j != n:
        raise CobsDecodeError(f"last block runs {j - n} bytes past the end")
    del out[0]
    return bytes(out)


def _decode_blocks(data: bytes) -> bytes:
    """General decoder: slice out each block, join with the implied zeros."""
    n = len(data)
    parts: list[bytes] = []
    append = parts.append
    i = 0
    while True:
        code = data[i]
        j = i + code
        if j > n:
            raise CobsDecodeError(f"block at offset {i} claims {code - 1} bytes, {n - i - 1} left")
        append(data[i + 1 : j])
        if j == n:
            break
        if code != 0xFF:
            append(_ZERO)
        i = j
    return b"".join(parts)


def decode(data: bytes | bytearray | memoryview) -> bytes:
    """Decode one COBS packet (without its 0x00 delimiter).

    Accepts the minimal encoding and the variant with a trailing 0x01 block.
    Raises CobsDecodeError on a 0x00 byte, an empty input or a truncated block.
    """
    data = bytes(data)
    if _ZERO in data:
        raise CobsDecodeError(f"0x00 at offset {data.index(_ZERO)} inside a packet")
    return decode_unchecked(data)
