"""``nmea``: NMEA 0183 sentences.

A valid line starts with ``$`` or ``!``, ends with ``*HH`` where ``HH`` (hex,
either case) is the XOR of the characters between the start character and
``*``, is pure ASCII and at most ``max_line`` characters (default 1024, the
terminator not counted). Lines end with ``\\n`` or ``\\r\\n``. Anything else
that is not empty counts one ``rejected``; oversize lines are bounded and
counted once, as in ``lines``. ``Frame.text`` is the whole sentence,
start character and checksum included.
"""

from __future__ import annotations

from typing import ClassVar

from firmware_host.codecs.lines import _CR, _LineFramedCodec
from firmware_host.frames import Frame

__all__ = ["DEFAULT_MAX_LINE", "NmeaCodec", "nmea_checksum"]

DEFAULT_MAX_LINE = 1024

_START = (0x24, 0x21)  # '$', '!'
_STAR = 0x2A
_HEX = "0123456789abcdefABCDEF"
# Every accepted two-digit checksum -> value; a dict lookup both validates and
# parses (int(x, 16) would also accept " F", "+F" or "_").
_HEX2: dict[bytes, int] = {(a + b).encode(): int(a + b, 16) for a in _HEX for b in _HEX}


def nmea_checksum(body: bytes) -> int:
    """XOR of all bytes of ``body`` (the characters between ``$``/``!`` and ``*``).

    Folds one big integer in halves: O(log n) big-int operations instead of a
    Python step per character.
    """
    x = int.from_bytes(body, "little")
    n = len(body)
    while n > 1:
        half = (n + 1) >> 1
        shift = half << 3
        x = (x >> shift) ^ (x & ((1 << shift) - 1))
        n = half
    return x


class NmeaCodec(_LineFramedCodec):
    """Incremental NMEA 0183 decoder; host-assigned seq from 0."""

    name: ClassVar[str] = "nmea"
    text: ClassVar[bool] = True
    default_max_line: ClassVar[int] = DEFAULT_MAX_LINE

    def _take(self, lines: list[bytes], ts: float, frames: list[Frame]) -> None:
        max_line = self.max_line
        device = self.device
        seq = self.seq
        rejected = 0
        append = frames.append
        hex2 = _HEX2
        for line in lines:
            if line.endswith(_CR):
                line = line[:-1]
            n = len(line)
            if not n:
                continue
            if n > max_line or n < 4 or line[0] not in _START or line[-3] != _STAR or not line.isascii():
                rejected += 1
                continue
            expected = hex2.get(line[-2:])
            if expected is None or nmea_checksum(line[1:-3]) != expected:
                rejected += 1
                continue
            append(Frame(device, seq, None, ts, None, line.decode("ascii")))
            seq += 1
        self.seq = seq
        self.rejected += rejected

    def encode(self, frame_type: int | None, seq: int, body: bytes | str) -> bytes:
        """``$body*HH\\r\\n``; ``frame_type`` and ``seq`` are ignored (host seq).

        ``body`` is the sentence between the start character and ``*``, e.g.
        ``"GPGGA,..."``. If it already starts with ``$`` or ``!`` that start
        character is kept (``"!AIVDM,..."``). The checksum is always computed
        here, so ``body`` must not contain ``*``, ``\\r`` or ``\\n``; it must be
        ASCII and the sentence must fit ``max_line``. Replay raw captures by
        writing their bytes, not through this method.
        """
        if isinstance(body, str):
            try:
                body = body.encode("ascii")
            except UnicodeEncodeError:
                raise ValueError("an NMEA sentence must be ASCII") from None
        body = bytes(body)
        if not body.isascii():
            raise ValueError("an NMEA sentence must be ASCII")
        if body[:1] in (b"$", b"!"):
            start, body = body[:1], body[1:]
        else:
            start = b"$"
        if b"*" in body or b"\r" in body or b"\n" in body:
            raise ValueError("an NMEA body must not contain '*', '\\r' or '\\n' (the checksum is added here)")
        sentence = b"%s%s*%02X" % (start, body, nmea_checksum(body))
        if len(sentence) > self.max_line:
            raise ValueError(f"sentence of {len(sentence)} chars exceeds max_line {self.max_line}")
        return sentence + b"\r\n"
