"""``fh1``: the default binary framing for firmware.

Wire: ``COBS(packet) + b"\\x00"``. Packet::

    0      version (0x01)
    1      type (0x00-0xEF application, 0xF0-0xFF runtime)
    2..5   seq, uint32 little-endian, wraps
    6..n-3 payload, 0..max_payload bytes
    n-2..  CRC-16/CCITT-FALSE over bytes 0..n-3, little-endian

Decoding works on whole reads: split on 0x00, decode each complete packet,
keep the unterminated tail for the next read. The tail is bounded by the
largest legal encoded packet; past that it is dropped (one ``rejected``) and
input is skipped up to the next 0x00, so memory never grows with the input.
"""

from __future__ import annotations

import functools
import struct
import sys
from array import array
from binascii import crc_hqx
from collections.abc import Callable, Mapping
from typing import ClassVar

from firmware_host.codecs import cobs as _cobs
from firmware_host.codecs.base import DelimitedCodec
from firmware_host.codecs.cobs import CobsDecodeError, _decode_blocks, max_encoded_len
from firmware_host.codecs.cobs import encode as cobs_encode
from firmware_host.errors import CodecOptionError
from firmware_host.frames import Frame

__all__ = [
    "CRC_LEN",
    "DEFAULT_MAX_PAYLOAD",
    "FH1_VERSION",
    "HEADER_LEN",
    "MAX_PAYLOAD_LIMIT",
    "TYPE_COMMAND",
    "TYPE_COMMAND_ACK",
    "TYPE_HEARTBEAT",
    "TYPE_LOG",
    "Fh1Codec",
    "encode_packet",
]

FH1_VERSION = 0x01
HEADER_LEN = 6  # version, type, seq
CRC_LEN = 2
DEFAULT_MAX_PAYLOAD = 1024
# Sanity ceiling for the option: the pending buffer is sized from it.
MAX_PAYLOAD_LIMIT = 1 << 20

# Reserved types (design: "Reserved types").
TYPE_COMMAND = 0xF0  # host -> device command
TYPE_COMMAND_ACK = 0xF1  # device -> host ack, payload starts with the acked seq
TYPE_HEARTBEAT = 0xF2
TYPE_LOG = 0xF3  # UTF-8 log text

_HEADER = struct.Struct("<BBI")
_MIN_PACKET = HEADER_LEN + CRC_LEN
_CRC = struct.Struct("<H")
_SEQ_MASK = 0xFFFFFFFF
_ZERO = b"\x00"


def _residue_table() -> array[int]:
    """``_RESIDUE[s]``: what CRC-16/CCITT-FALSE over a whole packet, its own
    little-endian CRC ``s`` included, comes to when that CRC is right.

    Why: checking the CRC over the whole packet needs no copy of all but its
    last two bytes. Without a final XOR the CRC is linear over GF(2) in its
    initial value and its input together, so for a stored CRC ``s`` the
    right residue ``crc_hqx(s as 2 bytes LE, s)`` is linear in ``s``: the
    XOR of one value per byte of ``s``, so 512 CRCs make the whole table (128
    KiB). And it is a check, not a hash: for fixed last two bytes, the
    residue is a bijection of the CRC over the rest (the state update by two
    bytes is invertible), so it matches only when that CRC equals ``s``.
    """
    order = sys.byteorder  # an array's items are in the machine's byte order
    # the 256 residues of a zero high byte, as one 4096-bit integer
    low = int.from_bytes(array("H", [crc_hqx(bytes((b, 0)), b) for b in range(256)]).tobytes(), order)
    spread = int.from_bytes(array("H", [1] * 256).tobytes(), order)  # times h: h in every 16-bit lane
    table = array("H")
    for b in range(256):  # s = b << 8 | low byte: 256 residues XORed with b's, lane by lane
        high = crc_hqx(bytes((0, b)), b << 8)
        table.frombytes((low ^ high * spread).to_bytes(512, order))
    return table


_RESIDUE = _residue_table()


@functools.lru_cache(maxsize=1024)
def _splitter(length: int) -> Callable[[bytes], tuple[int, int, int, bytes, int]]:
    """``unpack`` of a packet of ``length`` bytes: version, type, seq, payload
    and stored CRC in one C call (instead of an unpack, a slice and two
    index operations). Packets of one device mostly share one length; the
    cache (1,024 lengths, at most about 390 KiB) covers nearly every length
    of the default ``max_payload``, so varied lengths do not build a Struct
    per packet."""
    return struct.Struct(f"<BBI{length - _MIN_PACKET}sH").unpack


def encode_packet(frame_type: int, seq: int, payload: bytes | bytearray | memoryview | str = b"") -> bytes:
    """Wire bytes of one fh1 packet: ``COBS(packet) + b"\\x00"``.

    ``seq`` is taken mod 2**32 so emulators can count without wrapping by hand.
    A ``str`` payload is UTF-8 encoded (handy for TYPE_LOG). No payload limit
    is enforced here, so fault injectors can build oversize packets;
    :meth:`Fh1Codec.encode` enforces its ``max_payload``.
    """
    if not 0 <= frame_type <= 0xFF:
        raise ValueError(f"fh1 type must be 0..255, got {frame_type}")
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    packet = _HEADER.pack(FH1_VERSION, frame_type, seq & _SEQ_MASK) + bytes(payload)
    return cobs_encode(packet + _CRC.pack(crc_hqx(packet, 0xFFFF))) + _ZERO


class Fh1Codec(DelimitedCodec):
    """Incremental decoder/encoder for ``fh1``.

    Counters: ``rejected`` (bad COBS, length, version, CRC, oversize run,
    partial packet dropped by :meth:`reset`) and ``gaps`` (one per seq
    discontinuity; the very first frame never counts one).
    """

    name: ClassVar[str] = "fh1"
    text: ClassVar[bool] = False
    options: ClassVar[Mapping[str, type] | None] = {"max_payload": int}

    def __init__(self, device: str = "", *, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        if (
            not isinstance(max_payload, int)
            or isinstance(max_payload, bool)
            or not 0 < max_payload <= MAX_PAYLOAD_LIMIT
        ):
            raise CodecOptionError(
                f"codec 'fh1' option 'max_payload' must be an int in 1..{MAX_PAYLOAD_LIMIT}, got {max_payload!r}"
            )
        self.max_payload = max_payload
        self._max_packet = HEADER_LEN + max_payload + CRC_LEN
        # the pending tail is bounded by the largest legal encoded packet (without its 0x00)
        super().__init__(device, max_encoded_len(self._max_packet))
        self._last_seq: int | None = None

    def feed(self, data: bytes, ts: float) -> list[Frame]:
        frames: list[Frame] = []
        if not data:
            return frames
        start = self._start(data, _ZERO)
        if start < 0:
            return frames
        end = data.find(_ZERO, start)
        if end < 0:
            self._hold(data, start)
            return frames
        # The first packet completes whatever the previous read left pending.
        first = self._pending + data[start:end] if self._pending else data[start:end]
        self._pending = b""
        parts = data[end + 1 :].split(_ZERO)
        tail = parts.pop()
        if first:
            parts.insert(0, first)
        if parts:
            self._packets(parts, ts, frames)
        if tail:
            self._hold(tail, 0)
        return frames

    def _packets(self, encs: list[bytes], ts: float, frames: list[Frame]) -> None:
        """Decode complete encoded packets (split on 0x00; empty ones are skipped).

        One loop with everything in locals: per packet this is the hot path of
        the whole runtime. COBS is undone in compiled code when corncobs is
        installed, else by patching a copy at each code byte (cost per zero in
        the packet, not per byte); CRC is binascii's C code.
        """
        append = frames.append
        limit = self.pending_limit
        max_packet = self._max_packet
        device = self.device
        splitter, split_length = _splitter, _MIN_PACKET
        split = splitter(split_length)
        crc, residue = crc_hqx, _RESIDUE
        # Frames are made as Frame.__init__ would make them, without the call
        # through type() and __init__ (a fifth of the cost of a whole frame's
        # decode; tests/test_codec_fh1.py checks this sets every field).
        new, cls = object.__new__, Frame
        min_packet, version, wrap = _MIN_PACKET, FH1_VERSION, _SEQ_MASK + 1
        # the seq that continues the last one, unmasked (2**32 after the top):
        # one compare and one add per frame; the wrap is sorted out only on a mismatch
        last = self._last_seq
        expect = None if last is None else last + 1
        fast, fast_error = _cobs.compiled_decode, _cobs.CompiledDecodeError
        rejected = gaps = 0
        try:
            for enc in encs:
                n = len(enc)
                if not n:
                    continue  # empty packet: firmware resynchronising, not an error
                # Checked on the encoded length so the verdict is the same whether
                # the run arrived whole or was cut off by _hold.
                if n > limit:
                    rejected += 1
                    continue
                if fast is not None:  # compiled COBS (cobs.compiled_decode)
                    try:
                        packet = fast(enc)
                    except fast_error:
                        rejected += 1
                        continue
                elif (j := enc[0]) == n:  # one block: no zero in the packet
                    packet = enc[1:]
                else:
                    # the packet is the input minus its first code byte, with
                    # every later code byte turned into the 0x00 it stands for
                    out = bytearray(enc)
                    code = j  # the block that ends at j; a full one (0xFF) implies no zero
                    while j < n and code != 0xFF:
                        code = enc[j]
                        out[j] = 0
                        j += code
                    if j < n:  # a full 254-byte block implies no zero: general decoder
                        try:
                            packet = _decode_blocks(enc)
                        except CobsDecodeError:
                            rejected += 1
                            continue
                    elif j != n:  # the last block runs past the end
                        rejected += 1
                        continue
                    else:
                        del out[0]
                        packet = bytes(out)
                m = len(packet)
                if m < min_packet or m > max_packet:
                    rejected += 1
                    continue
                if m != split_length:
                    split, split_length = splitter(m), m
                ver, frame_type, seq, payload, stored = split(packet)
                # the CRC over the whole packet, its own CRC included, against
                # the residue that CRC implies (see _residue_table)
                if crc(packet, 0xFFFF) != residue[stored]:
                    rejected += 1
                    continue
                if ver != version:
                    rejected += 1
                    continue
                if seq != expect and expect is not None and (seq or expect != wrap):
                    gaps += 1  # not the first frame, and not 2**32 - 1 followed by 0
                expect = seq + 1
                frame = new(cls)
                frame.device = device
                frame.seq = seq
                frame.type = frame_type
                frame.ts = ts
                frame.payload = payload
                frame.text = None
                frame._fields = None  # the slot: the property's setter costs a call a frame
                frame.values = None
                append(frame)
        finally:
            self._last_seq = None if expect is None else expect - 1
            self.rejected += rejected
            self.gaps += gaps

    def reset(self) -> None:
        if self._pending:
            self.rejected += 1
        self._pending = b""
        # A new connection starts clean; an oversize run was already counted.
        self._skipping = False

    def encode(self, frame_type: int | None, seq: int, body: bytes | str) -> bytes:
        """Wire bytes for one packet; ``body`` is the payload (str: UTF-8)."""
        if frame_type is None:
            raise ValueError("fh1 frames need an integer type")
        if isinstance(body, str):
            body = body.encode("utf-8")
        if len(body) > self.max_payload:
            raise ValueError(f"fh1 payload of {len(body)} bytes exceeds max_payload {self.max_payload}")
        return encode_packet(frame_type, seq, body)
