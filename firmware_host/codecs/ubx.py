"""``ubx``: a u-blox receiver's mixed stream of UBX, NMEA 0183 and RTCM3.

Framing, from the protocol specifications:

* **UBX**: ``B5 62``, class, id, a little-endian 16-bit payload length, the
  payload, and the 8-bit Fletcher checksum (CK_A, CK_B) over class..payload.
  A length over ``max_payload`` (default 4096) is impossible here.
* **NMEA**: ``$`` to ``*HH\\r\\n`` (or ``\\n``), printable ASCII, at most
  ``MAX_LINE`` characters, HH the XOR of the characters between.
* **RTCM3**: ``D3``, 6 reserved bits (zero) and a 10-bit length, the message,
  and CRC-24Q (poly 0x1864CFB, init 0) over header and message.

Frames: UBX as ``type`` 0xB5 and RTCM3 as ``type`` 0xD3 (their sync byte),
``payload`` the whole packet as the receiver sent it (sync to checksum), so
any UBX or RTCM tool reads it and the payloads written back in order are the
stream; NMEA as ``text`` (the sentence without its line end), ``type`` None.
Seqs are the host's, from 0.

Damage: a packet whose checksum fails, whose length is impossible, or a
sentence cut short (a byte outside printable ASCII, no end within
``MAX_LINE``) counts one ``rejected``, and decoding resumes at the next sync
byte after its start, so a good packet inside a bad one's claimed length is
still found. False sync bytes inside the damaged packet, and the stray bytes
right after one whose end is unknown, are not counted again; any other run of
stray bytes that starts no packet counts one. The pending tail holds at most one
incomplete packet: ``pending_limit`` bytes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from itertools import accumulate
from typing import ClassVar

from firmware_host.codecs.base import Codec, CodecOptionError
from firmware_host.codecs.nmea import _HEX2, nmea_checksum
from firmware_host.frames import Frame

__all__ = [
    "DEFAULT_MAX_PAYLOAD",
    "MAX_LINE",
    "RTCM3_TYPE",
    "UBX_TYPE",
    "UbxCodec",
    "crc24q",
    "rtcm3_frame",
    "ubx_checksum",
    "ubx_packet",
]

#: frame types: the sync byte each protocol's packets start with
UBX_TYPE = 0xB5
RTCM3_TYPE = 0xD3
DEFAULT_MAX_PAYLOAD = 4096
#: UBX's length field is 16 bits
MAX_UBX_PAYLOAD = 0xFFFF
#: the longest NMEA sentence taken, ``$`` to checksum (NMEA says 82; receivers exceed it)
MAX_LINE = 1024
#: RTCM3's length field is 10 bits
MAX_RTCM3_MESSAGE = 0x3FF

_SYNC = re.compile(b"[\xb5$\xd3]")
_UBX2 = 0x62
_DOLLAR = 0x24
_STAR = 0x2A
_NL = 0x0A
_CR = 0x0D


def ubx_checksum(body: bytes | bytearray | memoryview) -> bytes:
    """CK_A, CK_B: the 8-bit Fletcher checksum over ``body`` (class..payload).
    CK_A is the sum of the bytes and CK_B the sum of CK_A's running values,
    both mod 256 (sums in C, not a Python step per byte)."""
    return bytes((sum(body) & 0xFF, sum(accumulate(body)) & 0xFF))


def _crc24q_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        crc = i << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
        table.append(crc & 0xFFFFFF)
    return tuple(table)


_CRC24Q = _crc24q_table()


def crc24q(data: bytes | bytearray | memoryview) -> int:
    """CRC-24Q (RTCM3, Qualcomm): poly 0x1864CFB, init 0, no reflection, no xor out."""
    crc = 0
    table = _CRC24Q
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFF) ^ table[(crc >> 16) ^ byte]
    return crc


def ubx_packet(msg_class: int, msg_id: int, payload: bytes) -> bytes:
    """A whole UBX packet: sync, class, id, length, payload, checksum."""
    if not (0 <= msg_class <= 0xFF and 0 <= msg_id <= 0xFF):
        raise ValueError("UBX class and id are bytes")
    if len(payload) > MAX_UBX_PAYLOAD:
        raise ValueError(f"a UBX payload is at most {MAX_UBX_PAYLOAD} bytes, got {len(payload)}")
    body = bytes((msg_class, msg_id)) + len(payload).to_bytes(2, "little") + payload
    return b"\xb5\x62" + body + ubx_checksum(body)


def rtcm3_frame(message: bytes) -> bytes:
    """A whole RTCM3 frame around ``message`` (its first 12 bits are the message number)."""
    if len(message) > MAX_RTCM3_MESSAGE:
        raise ValueError(f"an RTCM3 message is at most {MAX_RTCM3_MESSAGE} bytes, got {len(message)}")
    head = bytes((RTCM3_TYPE, len(message) >> 8, len(message) & 0xFF)) + message
    return head + crc24q(head).to_bytes(3, "big")


class UbxCodec(Codec):
    """Incremental splitter of a u-blox stream; host-assigned seq from 0."""

    name: ClassVar[str] = "ubx"
    options: ClassVar[Mapping[str, type] | None] = {"max_payload": int}

    def __init__(self, device: str = "", *, max_payload: int | None = None) -> None:
        super().__init__(device)
        if max_payload is None:
            max_payload = DEFAULT_MAX_PAYLOAD
        if not isinstance(max_payload, int) or isinstance(max_payload, bool) or not 0 < max_payload <= MAX_UBX_PAYLOAD:
            raise CodecOptionError(
                f"codec 'ubx' option 'max_payload' must be an int in 1..{MAX_UBX_PAYLOAD}, got {max_payload!r}"
            )
        self.max_payload = max_payload
        #: the pending tail never exceeds this: the longest packet that may still complete
        self.pending_limit = max(8 + max_payload, 6 + MAX_RTCM3_MESSAGE, MAX_LINE + 2)
        self._pending = b""
        #: next host-assigned seq
        self.seq = 0
        # Stream offsets: of _pending[0], and the end of the last counted damaged
        # packet's claimed extent (failures starting before it are not counted again).
        self._base = 0
        self._shadow = 0
        # True while skipping a run of stray bytes already counted
        self._junk = False

    def feed(self, data: bytes, ts: float) -> list[Frame]:
        frames: list[Frame] = []
        if not data:
            return frames
        buf = self._pending + data if self._pending else data
        n = len(buf)
        base = self._base
        pos = 0
        search = _SYNC.search
        while pos < n:
            found = search(buf, pos)
            if found is None:
                self._stray(base + n)
                pos = n
                break
            start = found.start()
            if start > pos:
                self._stray(base + start)
            end = self._packet(buf, start, ts, frames)
            if end is None:  # incomplete: keep it for the next read
                pos = start
                break
            pos = end
        self._pending = buf[pos:]
        self._base = base + pos
        return frames

    def _stray(self, until: int) -> None:
        """Bytes up to stream offset ``until`` start no packet: one rejected
        per run, unless all of it lies inside a damaged packet."""
        if not self._junk and until > self._shadow:
            self.rejected += 1
            self._junk = True

    def _fail(self, at: int, claimed_end: int, open_ended: bool = False) -> None:
        """A damaged packet at ``at`` that claimed to run to ``claimed_end``;
        ``open_ended``: its true end is unknown (an impossible length, a cut
        sentence), so the stray bytes right after it are its own."""
        if at >= self._shadow:
            self.rejected += 1
            self._shadow = claimed_end
            self._junk = open_ended
        # else: a false sync byte inside a damaged packet, which says nothing about what follows

    def _packet(self, buf: bytes, i: int, ts: float, frames: list[Frame]) -> int | None:
        """Judge the candidate at ``buf[i]`` (a sync byte): where decoding goes
        on (past a frame, or ``i + 1`` after damage), or None when incomplete."""
        n = len(buf)
        base = self._base
        sync = buf[i]
        if sync == UBX_TYPE:
            if n - i < 6:
                return None if buf[i + 1 : i + 2] in (b"", b"\x62") else self._soft(i)
            if buf[i + 1] != _UBX2:
                return self._soft(i)
            length = buf[i + 4] | (buf[i + 5] << 8)
            if length > self.max_payload:
                self._fail(base + i, base + i + 6, open_ended=True)
                return i + 1
            end = i + 8 + length
            if end > n:
                return None
            if buf[end - 2 : end] != ubx_checksum(buf[i + 2 : end - 2]):
                self._fail(base + i, base + end)
                return i + 1
            self._emit(Frame(self.device, self.seq, UBX_TYPE, ts, buf[i:end]), base + end, frames)
            return end
        if sync == RTCM3_TYPE:
            if n - i < 3:
                return None if n - i < 2 or buf[i + 1] < 4 else self._soft(i)
            if buf[i + 1] >> 2:  # the reserved bits are zero in RTCM3
                return self._soft(i)
            end = i + 6 + (((buf[i + 1] & 0x03) << 8) | buf[i + 2])
            if end > n:
                return None
            if int.from_bytes(buf[end - 3 : end], "big") != crc24q(buf[i : end - 3]):
                self._fail(base + i, base + end)
                return i + 1
            self._emit(Frame(self.device, self.seq, RTCM3_TYPE, ts, buf[i:end]), base + end, frames)
            return end
        # '$': an NMEA sentence up to its line end
        nl = buf.find(b"\n", i, i + MAX_LINE + 2)
        line = buf[i : nl if nl >= 0 else min(n, i + MAX_LINE + 2)]
        if line.endswith(b"\r"):
            line = line[:-1]
        bad = _first_unprintable(line)
        if bad >= 0:  # cut short: a binary packet, or damage, before any line end
            self._fail(base + i, base + i + bad, open_ended=True)
            return i + 1
        if nl < 0:
            if n - i > MAX_LINE + 1:  # too long to be a sentence
                self._fail(base + i, base + i + MAX_LINE, open_ended=True)
                return i + 1
            return None
        expected = _HEX2.get(line[-2:])
        # over MAX_LINE only with a bare \n (the search window has room for a \r)
        if (
            not 4 <= len(line) <= MAX_LINE
            or line[-3] != _STAR
            or expected is None
            or nmea_checksum(line[1:-3]) != expected
        ):
            self._fail(base + i, base + nl + 1)
            return i + 1
        self._emit(Frame(self.device, self.seq, None, ts, None, line.decode("ascii")), base + nl + 1, frames)
        return nl + 1

    def _soft(self, i: int) -> int:
        """A sync byte that starts nothing (``B5`` not followed by ``62``, ``D3``
        with reserved bits set): a stray byte."""
        self._stray(self._base + i + 1)
        return i + 1

    def _emit(self, frame: Frame, end: int, frames: list[Frame]) -> None:
        frames.append(frame)
        self.seq += 1
        self._shadow = end
        self._junk = False

    def reset(self) -> None:
        if self._pending and self._base >= self._shadow:
            self.rejected += 1
        self._base += len(self._pending)
        self._pending = b""
        self._shadow = self._base
        self._junk = False

    def encode(self, frame_type: int | None, seq: int, body: bytes | str) -> bytes:
        """One packet for the wire; ``seq`` is ignored (host seq).

        ``str`` body: an NMEA sentence (``"GNGGA,..."``, checksum added);
        ``frame_type`` 0xB5: ``body`` is class, id and payload (UBX packet);
        ``frame_type`` 0xD3: ``body`` is the RTCM3 message.
        """
        if isinstance(body, str):
            return _nmea_sentence(body)
        if frame_type == UBX_TYPE:
            if len(body) < 2:
                raise ValueError("a UBX body is class, id and payload: at least 2 bytes")
            return ubx_packet(body[0], body[1], bytes(body[2:]))
        if frame_type == RTCM3_TYPE:
            return rtcm3_frame(bytes(body))
        raise ValueError(f"ubx frames are UBX (0xB5), RTCM3 (0xD3) or NMEA text, not type {frame_type!r}")


def _first_unprintable(line: bytes) -> int:
    """Index of the first byte outside printable ASCII (0x20-0x7E), or -1."""
    if line.isascii():
        stripped = line.translate(None, _PRINTABLE)
        if not stripped:
            return -1
        return line.index(stripped[0])
    for k, byte in enumerate(line):
        if not 0x20 <= byte <= 0x7E:
            return k
    return -1  # pragma: no cover - a non-ASCII line has a byte outside


_PRINTABLE = bytes(range(0x20, 0x7F))


def _nmea_sentence(body: str) -> bytes:
    data = body.encode("ascii")
    if data[:1] == b"$":
        data = data[1:]
    if not data or _first_unprintable(data) >= 0 or b"*" in data:
        raise ValueError("an NMEA body is printable ASCII without '*' (the checksum is added here)")
    sentence = b"$%s*%02X" % (data, nmea_checksum(data))
    if len(sentence) > MAX_LINE:
        raise ValueError(f"a sentence is at most {MAX_LINE} characters")
    return sentence + b"\r\n"
