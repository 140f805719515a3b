"""Commands to a device and the wait for its ack (``Runtime.request``).

A command is an fh1 frame (type ``TYPE_COMMAND`` unless told otherwise)
carrying a seq the host picks, one counter per device. The device answers
with a ``TYPE_COMMAND_ACK`` frame whose payload starts with that seq (uint32
little-endian, as in the fh1 header) and goes on with its reply bytes, if
any. The ack is an uplink frame like any other: it is counted, buffered and
delivered to the sinks; the requester only watches for it through a tap
subscription (firmware_host.tap), opened *before* the command is written so
that a fast ack cannot slip past.

A lost command or ack is sent again with the same seq (a device can tell a
repeat by it), up to ``retries`` times, after a backoff that doubles; an ack
to any of the copies ends the request, also one that arrives late, during a
backoff.
"""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import Iterable
from typing import Protocol

from firmware_host.codecs import Codec
from firmware_host.codecs.fh1 import TYPE_COMMAND, TYPE_COMMAND_ACK, Fh1Codec
from firmware_host.errors import NotConnected, RequestTimeout, RequestUnsupported, ShuttingDown
from firmware_host.frames import Frame
from firmware_host.tap import Subscription

__all__ = [
    "ACK_SEQ",
    "DEFAULT_BACKOFF",
    "DEFAULT_RETRIES",
    "DEFAULT_TIMEOUT",
    "MAX_BACKOFF",
    "MAX_RETRIES",
    "MAX_TIMEOUT",
    "Requester",
    "ack_reply",
    "acked_seq",
]

DEFAULT_TIMEOUT = 1.0
DEFAULT_RETRIES = 2
DEFAULT_BACKOFF = 0.1
#: bounds on one request: at most (MAX_RETRIES + 1) x (MAX_TIMEOUT + MAX_BACKOFF) seconds in all
MAX_TIMEOUT = 60.0
MAX_RETRIES = 10
MAX_BACKOFF = 5.0
#: the acked seq at the start of an ack's payload
ACK_SEQ = struct.Struct("<I")
#: frames one request's subscription holds between two looks (only references)
_WATCH_LIMIT = 10_000
_SEQ_MASK = 0xFFFFFFFF


def acked_seq(frame: Frame) -> int | None:
    """The command seq an ack frame answers; None for any other frame."""
    payload = frame.payload
    if frame.type != TYPE_COMMAND_ACK or payload is None or len(payload) < ACK_SEQ.size:
        return None
    return int(ACK_SEQ.unpack_from(payload)[0])


def ack_reply(frame: Frame) -> bytes:
    """The reply bytes of an ack: its payload after the acked seq."""
    return (frame.payload or b"")[ACK_SEQ.size :]


class Downlink(Protocol):
    """What a requester needs of the runtime (``Runtime`` is one)."""

    def send(self, device: str, frame_type: int | None, body: bytes | str, seq: int = 0) -> bool: ...

    def subscribe(self, devices: Iterable[str] | None = None, limit: int = ...) -> Subscription: ...


def check_request_args(frame_type: int, timeout: float, retries: int, backoff: float) -> None:
    """ValueError (one line) for an argument out of its bounds."""
    if isinstance(frame_type, bool) or not isinstance(frame_type, int) or not 0 <= frame_type <= 0xFF:
        raise ValueError(f"a command's type must be an int in 0..255, got {frame_type!r}")
    if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and 0 < timeout <= MAX_TIMEOUT):
        raise ValueError(f"timeout must be a number of seconds in (0, {MAX_TIMEOUT:g}], got {timeout!r}")
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= MAX_RETRIES:
        raise ValueError(f"retries must be an int in 0..{MAX_RETRIES}, got {retries!r}")
    if not (isinstance(backoff, (int, float)) and math.isfinite(backoff) and 0 <= backoff <= MAX_BACKOFF):
        raise ValueError(f"backoff must be a number of seconds in [0, {MAX_BACKOFF:g}], got {backoff!r}")


class Requester:
    """Sends commands and awaits their acks; owns each device's command seq."""

    def __init__(self, downlink: Downlink) -> None:
        self.downlink = downlink
        #: the next command seq per device name (kept across a remove and re-add)
        self._next_seq: dict[str, int] = {}

    def next_seq(self, device: str) -> int:
        seq = self._next_seq.get(device, 0)
        self._next_seq[device] = (seq + 1) & _SEQ_MASK
        return seq

    async def request(
        self,
        device: str,
        codec: Codec,
        frame_type: int = TYPE_COMMAND,
        body: bytes | str = b"",
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        backoff: float = DEFAULT_BACKOFF,
    ) -> Frame:
        """Send a command to ``device`` (whose codec is ``codec``) and return
        its ack frame (see the module doc).

        RequestUnsupported: not an fh1 device;
        ValueError: an argument out of bounds or a body the codec refuses;
        NotConnected: no attempt could be written; RequestTimeout: no ack;
        ShuttingDown: the runtime stopped meanwhile.
        """
        check_request_args(frame_type, timeout, retries, backoff)
        if not isinstance(codec, Fh1Codec):
            raise RequestUnsupported(
                f"device {device!r} speaks {codec.name or type(codec).__name__}: "
                "a request needs fh1 (typed frames and acks); use send"
            )
        data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        codec.encode(frame_type, 0, data)  # a body the codec refuses is a ValueError before anything is sent
        seq = self.next_seq(device)
        loop = asyncio.get_running_loop()
        started = loop.time()
        written = 0
        sub = self.downlink.subscribe([device], _WATCH_LIMIT)  # before the first write: a fast ack is seen
        try:
            for attempt in range(retries + 1):
                found = None
                try:
                    sent = self.downlink.send(device, frame_type, data, seq)
                except KeyError:  # removed meanwhile (by hand, or a template's board moved): not a bad argument
                    raise NotConnected(f"device {device!r} was removed during the request") from None
                if sent:
                    written += 1
                    found = await _watch(sub, seq, loop.time() + timeout)
                # (an attempt that could not be written waits only the backoff:
                # a device that is not connected is reported without the timeouts)
                if found is None and attempt < retries:
                    # still listening: a late ack to an earlier copy ends the wait
                    pause = min(backoff * 2**attempt, MAX_BACKOFF)
                    found = await _watch(sub, seq, loop.time() + pause)
                if found is not None:
                    return found
        finally:
            sub.close()
        took = loop.time() - started
        if not written:
            raise NotConnected(f"device {device!r} is not connected: the command could not be written")
        raise RequestTimeout(
            f"no ack from {device!r} for command seq {seq} "
            f"({written} of {retries + 1} attempts written, {took:.2f}s, timeout {timeout:g}s each)"
        )


async def _watch(sub: Subscription, seq: int, deadline: float) -> Frame | None:
    """The ack to ``seq`` among the frames ``sub`` gets until ``deadline``; None if none came."""
    loop = asyncio.get_running_loop()
    while True:
        frames, _lost = sub.take()
        for frame in frames:
            if acked_seq(frame) == seq:
                return frame
        if sub.closed:
            raise ShuttingDown("the runtime is shutting down")
        left = deadline - loop.time()
        if left <= 0 or not await sub.wait(left):
            return None
