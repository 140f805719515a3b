"""How an emulated board's bytes look on the wire: frames, damaged frames, noise.

One :class:`Wire` per emulated board, the one place that makes its bytes, for
the fleet (``run --emulate``, ``emulate``) and the test kit alike. Every codec,
a plugin's too, gets the generic part: frames through the codec's own
``encode``, and noise (garbage ended by the codec's delimiter) probed against
a fresh codec so that it never decodes by accident. The built-in codecs add
what the fleet's generators and faults need (:class:`FaultWire`): fitting a
generator's items to the codec, and damaging a frame so that the host rejects
exactly it. :func:`make_wire` picks the class by the codec it builds.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import ClassVar, NamedTuple

from firmware_host.codecs import Codec, CodecFactory, Fh1Codec, LinesCodec, NmeaCodec, UbxCodec, make_codec
from firmware_host.codecs.cobs import decode as cobs_decode
from firmware_host.codecs.cobs import encode as cobs_encode
from firmware_host.codecs.ubx import RTCM3_TYPE, UBX_TYPE, ubx_packet

__all__ = ["WIRE_CODECS", "Body", "FaultWire", "Noise", "Wire", "make_wire"]

#: one frame's content: a binary payload, or one line of text (a generator's
#: NMEA item is a whole sentence, ``$`` and ``*HH`` included)
Body = bytes | str

#: the codecs the fleet can play (generators, faults): those with a FaultWire
WIRE_CODECS = frozenset({"fh1", "nmea", "lines", "ubx"})
#: a noise run is re-rolled at most this often if it happens to decode
NOISE_TRIES = 16


class Noise(NamedTuple):
    """Garbage for the wire, and what the host makes of it."""

    data: bytes
    frames: int  # frames the host decodes out of it (only a codec that takes any text: `lines`)
    rejected: int  # the host's `rejected` it causes


class Wire:
    """The bytes of one board's codec: frames through ``codec.encode``, and noise."""

    #: True when any garbage line is a valid frame (``lines``): noise then decodes, by design
    accepts_garbage: ClassVar[bool] = False
    #: True when a binary codec's seqs are the host's (``ubx``), as a text codec's always are
    host_seq: ClassVar[bool] = False

    def __init__(self, codec: Codec, fresh: Callable[[str], Codec], frame_type: int = 0) -> None:
        #: encodes the frames (its options bound what may be sent)
        self.codec = codec
        self._fresh = fresh
        #: the type of binary frames when a caller names none
        self.frame_type = frame_type
        self.text = codec.text
        self.delimiter = b"\n" if self.text else b"\x00"
        # garbage never holds the delimiter: one noise run is one bad frame, and the next frame decodes cleanly
        self._alphabet = bytes(b for b in range(1, 256) if b != self.delimiter[0])

    def decoder(self, device: str = "scratch") -> Codec:
        """A fresh codec of this wire: the host's view of the bytes (downlink, probes)."""
        return self._fresh(device)

    def encode(self, body: Body, seq: int, frame_type: int | None = None) -> bytes:
        """One healthy frame; binary frames default to the board's type, text ones carry none."""
        if frame_type is None and not self.text:
            frame_type = self.frame_type
        return self.codec.encode(frame_type, seq, body)

    def sample(self, seq: int, size: int = 0) -> Body:
        """A countable default body: ``"frame <seq>"``, or ``size`` bytes (4 if 0) repeating seq."""
        if self.text:
            return f"frame {seq}"
        size = size or 4
        pattern = (seq & 0xFFFFFFFF).to_bytes(4, "little")
        return (pattern * (size // 4 + 1))[:size]

    def effect(self, data: bytes) -> tuple[int, int]:
        """(frames, rejected) a fresh host codec gets from ``data`` (aligned, terminated)."""
        probe = self.decoder()
        return len(probe.feed(data, 0.0)), probe.rejected

    def noise(self, rng: random.Random, size: int) -> Noise | None:
        """``size`` bytes of garbage, the last one the delimiter, that decode to no
        frame (``lines`` takes any text, so there they are a garbage line). None
        when no such garbage turned up in :data:`NOISE_TRIES` rolls."""
        for _ in range(NOISE_TRIES):
            body = bytes(rng.choice(self._alphabet) for _ in range(max(size - 1, 0)))
            data = body + self.delimiter
            frames, rejected = self.effect(data)
            if frames == 0 or self.accepts_garbage:
                return Noise(data, frames, rejected)
        return None


class FaultWire(Wire, ABC):
    """A built-in codec's wire: plays generator items and damages frames."""

    @abstractmethod
    def frame(self, item: Body, seq: int) -> bytes:
        """The wire bytes of a generator's item, fitted to the codec (cut, hexed, wrapped)."""

    @abstractmethod
    def corrupt(self, item: Body, seq: int, rng: random.Random) -> bytes:
        """The item's frame, damaged so that the host rejects exactly it (one ``rejected``)."""


class Fh1Wire(FaultWire):
    def __init__(self, codec: Fh1Codec, fresh: Callable[[str], Codec], frame_type: int = 0) -> None:
        super().__init__(codec, fresh, frame_type)
        self.max_payload = codec.max_payload

    def _payload(self, item: Body) -> bytes:
        data = item if isinstance(item, bytes) else item.encode("utf-8", "surrogateescape")
        return data[: self.max_payload]

    def frame(self, item: Body, seq: int) -> bytes:
        return self.encode(self._payload(item), seq)

    def corrupt(self, item: Body, seq: int, rng: random.Random) -> bytes:
        # flip one bit inside the packet: the COBS framing stays intact and the
        # CRC, which catches every 1-bit error, fails
        packet = bytearray(cobs_decode(self.frame(item, seq)[:-1]))
        packet[rng.randrange(len(packet))] ^= 1 << rng.randrange(8)
        return cobs_encode(packet) + b"\x00"


class NmeaWire(FaultWire):
    def __init__(self, codec: NmeaCodec, fresh: Callable[[str], Codec], frame_type: int = 0) -> None:
        super().__init__(codec, fresh, frame_type)
        self.max_line = codec.max_line

    def sample(self, seq: int, size: int = 0) -> Body:
        return f"FHTST,{seq}"

    def _sentence(self, item: Body) -> bytes:
        if isinstance(item, str) and item[:1] in ("$", "!"):
            # a whole sentence (a generator's, a capture's): sent as it is, checksum and all
            return item.encode("utf-8", "surrogateescape")
        # not NMEA already: carry it in a proprietary sentence
        text = item.hex() if isinstance(item, bytes) else item
        body = "".join(c if c.isascii() and c.isprintable() and c not in "*$!" else "?" for c in text)
        return self.encode(f"PFHTX,{body}"[: self.max_line - 6], 0).rstrip(b"\r\n")

    def frame(self, item: Body, seq: int) -> bytes:
        return self._sentence(item) + b"\r\n"

    def corrupt(self, item: Body, seq: int, rng: random.Random) -> bytes:
        line = bytearray(self._sentence(item))
        star = line.rfind(b"*")
        if star > 1:  # flip a bit of a body character: the XOR checksum no longer matches
            i = rng.randrange(1, star)
            for bit in rng.sample(range(5), 5):
                c = line[i] ^ (1 << bit)
                if 0x20 <= c < 0x7F and c not in b"*$!":
                    line[i] = c
                    return bytes(line) + b"\r\n"
        return b"$" + bytes(line[1:]).replace(b"*", b"") + b"*ZZ\r\n"  # an unparseable checksum


class LinesWire(FaultWire):
    accepts_garbage = True

    def __init__(self, codec: LinesCodec, fresh: Callable[[str], Codec], frame_type: int = 0) -> None:
        super().__init__(codec, fresh, frame_type)
        self.max_line = codec.max_line

    def _line(self, item: Body) -> bytes:
        if isinstance(item, bytes):
            item = item.hex()
        line = item.replace("\n", " ").encode("utf-8", "surrogateescape")
        return line[: self.max_line]

    def frame(self, item: Body, seq: int) -> bytes:
        return self.encode(self._line(item), seq)

    def corrupt(self, item: Body, seq: int, rng: random.Random) -> bytes:
        # `lines` has no checksum: the only thing it rejects is a line run past
        # max_line, as when a terminator is lost and garbage follows
        unit = bytes(self._line(item) or b"#")
        return (unit * (self.max_line // len(unit) + 2))[: self.max_line + 2] + b"\n"


class UbxWire(FaultWire):
    """A u-blox stream: a generator's whole UBX and RTCM3 packets and NMEA
    sentences go out as they are; anything else rides in a UBX packet."""

    host_seq = True
    #: the class of packets that carry other bytes (0x7F: no u-blox class uses it)
    CARRIER_CLASS = 0x7F

    def __init__(self, codec: UbxCodec, fresh: Callable[[str], Codec], frame_type: int = 0) -> None:
        super().__init__(codec, fresh, frame_type)
        # noise holds no sync byte either: a stray run, one rejected, never a packet's start
        self._alphabet = bytes(b for b in self._alphabet if b not in (UBX_TYPE, RTCM3_TYPE, 0x24))

    def sample(self, seq: int, size: int = 0) -> Body:
        body = super().sample(seq, size)
        return ubx_packet(self.CARRIER_CLASS, 0, body if isinstance(body, bytes) else body.encode())

    def encode(self, body: Body, seq: int, frame_type: int | None = None) -> bytes:
        if isinstance(body, bytes) and frame_type is None and self.effect(body) == (1, 0):
            return body  # a whole packet already
        return super().encode(body, seq, frame_type)

    def frame(self, item: Body, seq: int) -> bytes:
        if isinstance(item, str):
            return self.codec.encode(None, seq, item if item[:1] != "$" else item.rsplit("*", 1)[0])
        if self.effect(item) == (1, 0):
            return item
        return ubx_packet(self.CARRIER_CLASS, 0, item[:0xFFFF])

    def corrupt(self, item: Body, seq: int, rng: random.Random) -> bytes:
        # flip one bit after the header (payload or checksum): the length stays,
        # the checksum fails, and the packet costs exactly one rejected
        packet = bytearray(self.frame(item, seq))
        if packet[:1] == b"$":
            star = packet.rfind(b"*")
            i = rng.randrange(1, star)
            for bit in rng.sample(range(5), 5):
                c = packet[i] ^ (1 << bit)
                if 0x20 <= c < 0x7F and c not in b"*$":
                    packet[i] = c
                    return bytes(packet)
            packet[star + 1 : star + 3] = b"ZZ"
            return bytes(packet)
        head = 6 if packet[0] == UBX_TYPE else 3
        packet[rng.randrange(head, len(packet))] ^= 1 << rng.randrange(8)
        return bytes(packet)


def make_wire(
    codec: str,
    options: Mapping[str, int] | None = None,
    *,
    frame_type: int = 0,
    registry: Mapping[str, CodecFactory] | None = None,
) -> Wire:
    """The wire of codec ``codec`` (a built-in, or a plugin's from ``registry``).

    The class follows the codec built, not its name: a built-in codec gets its
    :class:`FaultWire`, any other codec the generic :class:`Wire`. Raises
    ValueError for an unknown codec or a bad option (one line).
    """
    opts = dict(options or {})

    def fresh(device: str) -> Codec:
        return make_codec(codec, device, opts, registry)

    encoder = fresh("emulated")
    if isinstance(encoder, Fh1Codec):
        return Fh1Wire(encoder, fresh, frame_type)
    if isinstance(encoder, NmeaCodec):
        return NmeaWire(encoder, fresh, frame_type)
    if isinstance(encoder, LinesCodec):
        return LinesWire(encoder, fresh, frame_type)
    if isinstance(encoder, UbxCodec):
        return UbxWire(encoder, fresh, frame_type)
    return Wire(encoder, fresh, frame_type)
