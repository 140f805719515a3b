"""CRC-16/CCITT-FALSE, the checksum of the ``fh1`` framing.

Parameters: poly 0x1021, init 0xFFFF, no input/output reflection, no final
xor. Check value: ``crc16(b"123456789") == 0x29B1``.

``binascii.crc_hqx`` is exactly this table-driven CRC (XMODEM's algorithm with
a caller-chosen init) implemented in C, so the hot path never loops in Python.
The tests cross-check it against a bitwise pure-Python reference.
"""

from __future__ import annotations

from binascii import crc_hqx

__all__ = ["CRC16_CHECK", "CRC16_INIT", "crc16"]

CRC16_INIT = 0xFFFF
#: CRC of ASCII ``123456789`` (the catalogue's check value)
CRC16_CHECK = 0x29B1


def crc16(data: bytes | bytearray | memoryview, crc: int = CRC16_INIT) -> int:
    """CRC-16/CCITT-FALSE of ``data``.

    Pass a previous result as ``crc`` to continue over data fed in pieces:
    ``crc16(b, crc16(a)) == crc16(a + b)``.
    """
    return crc_hqx(data, crc)
