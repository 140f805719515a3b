"""One device of a fleet: what it plays on its board (its generator's items,
with faults), and the exact account of what reached the wire.

:class:`FleetPlayer` is the :class:`~firmware_host.emulation.stream.Player`
a fleet device's stream plays; it writes through the device's
:class:`~firmware_host.emulation.board.EmulatedBoard` and counts into its
:class:`EmulatedDevice` only what was fully written, so the host's counters
can be held to it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from dataclasses import dataclass, field

from firmware_host.codecs.fh1 import TYPE_COMMAND_ACK, Fh1Codec
from firmware_host.config.boards import Board
from firmware_host.emulation.acks import AckPolicy, Answerer
from firmware_host.emulation.board import EmulatedBoard
from firmware_host.emulation.generators import Generator, make_generator
from firmware_host.emulation.hostwatch import HostWatch
from firmware_host.emulation.virtualport import VirtualPort
from firmware_host.emulation.wire import WIRE_CODECS, Body, FaultWire

__all__ = ["NOISE_MAX", "NOISE_MIN", "DeviceAcks", "EmulatedDevice", "FaultOptions", "FleetPlayer", "unplayable"]

log = logging.getLogger("firmware_host.emulator")

#: a noise event is this many bytes, the delimiter included (1 to 16 bytes of garbage)
NOISE_MIN, NOISE_MAX = 2, 17
_SEQ_MASK = 0xFFFFFFFF


def unplayable(board: Board) -> ValueError:
    """The one-line error for a board whose codec the fleet cannot play."""
    return ValueError(
        f"board {board.name!r}: the emulator speaks {', '.join(sorted(WIRE_CODECS))}, not {board.codec!r}"
    )


@dataclass(frozen=True)
class FaultOptions:
    """Faults to inject, all off by default. Probabilities are per frame."""

    noise: float = 0.0  # insert random garbage bytes (terminated, so only the garbage is lost)
    corrupt: float = 0.0  # damage a frame so the host must reject it
    skip: float = 0.0  # skip a seq (fh1: the host counts a gap; text: the frame is not sent)
    burst: int = 0  # send this many frames at once, then pause as many periods (0/1: off)
    unplug_every: float = 0.0  # seconds between unplug/replug cycles (0: never)
    unplug_for: float = 0.5  # seconds unplugged

    def __post_init__(self) -> None:
        for name in ("noise", "corrupt", "skip"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability from 0 to 1, got {value!r}")
        if self.burst < 0:
            raise ValueError(f"burst must be >= 0, got {self.burst!r}")
        if self.unplug_every < 0 or not math.isfinite(self.unplug_every):
            raise ValueError(f"unplug_every must be >= 0 seconds, got {self.unplug_every!r}")
        if self.unplug_for <= 0 or not math.isfinite(self.unplug_for):
            raise ValueError(f"unplug_for must be > 0 seconds, got {self.unplug_for!r}")


@dataclass(eq=False)
class EmulatedDevice:
    """One emulated board of a fleet and what it has put on the wire so far."""

    name: str
    path: str  # the stable symlink the host opens
    board: Board
    emulator: EmulatedBoard  # the board on its pty: wire, writes, cable
    host: HostWatch  # the host opening the port, downlink
    seq: int = 0  # next fh1 seq (counts on across faults; wraps on the wire)
    sent: int = 0  # valid frames fully written to a plugged port the host had open
    corrupted: int = 0  # damaged frames written (each one host `rejected`)
    invalid: int = 0  # replayed capture lines the codec rejects as they are
    skipped: int = 0  # skip events
    noise_events: int = 0
    noise_bytes: int = 0
    noise_frames: int = 0  # frames the host decodes out of noise (only `lines` accepts garbage)
    noise_rejected: int = 0  # host `rejected` caused by noise
    lost_unplugged: int = 0  # frames produced while unplugged or before the host reopened
    overrun: int = 0  # frames dropped because the device fell behind (host not reading)
    gaps: int = 0  # seq discontinuities the host will count (fh1 only)
    inexact: bool = False  # True if something made the counts above unreliable
    commands: int = 0  # fh1 commands the host sent (answered by DeviceAcks)
    acks: int = 0  # acks fully written (each also counts in `sent`)
    acks_dropped: int = 0  # commands left unanswered on purpose (AckPolicy)
    _last_seq: int | None = field(default=None, repr=False)

    @property
    def port(self) -> VirtualPort:
        return self.emulator.port

    @property
    def unplugs(self) -> int:
        return self.emulator.unplugs

    @property
    def bytes_written(self) -> int:
        return self.emulator.bytes_written

    @property
    def host_opens(self) -> int:
        return self.host.opens

    @property
    def downlink_bytes(self) -> int:
        """Bytes the host wrote to the device."""
        return self.host.downlink_bytes

    def expected(self) -> dict[str, int]:
        """What the host's counters for this device should read once it has read everything."""
        return {
            "frames": self.sent + self.noise_frames,
            "rejected": self.corrupted + self.invalid + self.noise_rejected,
            "gaps": self.gaps,
        }

    def counters(self) -> dict[str, int | bool]:
        keys = (
            "sent",
            "corrupted",
            "invalid",
            "skipped",
            "noise_events",
            "noise_bytes",
            "noise_frames",
            "noise_rejected",
            "lost_unplugged",
            "overrun",
            "gaps",
            "unplugs",
            "host_opens",
            "bytes_written",
            "downlink_bytes",
            "commands",
            "acks",
            "acks_dropped",
            "inexact",
        )
        return {k: getattr(self, k) for k in keys}


class FleetPlayer:
    """What one fleet device plays on its board: its generator's items, with its
    faults, and the exact account of what reached the wire."""

    def __init__(
        self, dev: EmulatedDevice, faults: FaultOptions, seed: object, rate: float, base_time: float | None
    ) -> None:
        self.dev = dev
        self.faults = faults
        wire = dev.emulator.wire
        if not isinstance(wire, FaultWire):  # a built-in codec's: Fleet() checked the names
            raise unplayable(dev.board)
        self.wire = wire
        seeded = seed is not None
        self.payload_rng = random.Random(f"{seed}:{dev.name}:payload") if seeded else random.Random()
        self.fault_rng = random.Random(f"{seed}:{dev.name}:faults") if seeded else random.Random()
        self.gen: Generator = make_generator(
            dev.board.emulator,
            dev.board.codec,
            rate=rate,
            rng=self.payload_rng,
            base_time=base_time,
            schema=dev.board.schema,
        )
        self._effects: dict[str, tuple[int, int]] = {}  # replayed line -> host effect

    def lose(self, k: int, end: int, *, overrun: bool) -> None:
        """Ticks k..end-1 happen with nobody to hear them: seqs advance, nothing is written."""
        dev = self.dev
        n = sum(len(self.gen.tick(i)) for i in range(k, end))
        if not (self.wire.text or self.wire.host_seq):
            dev.seq = (dev.seq + n) & _SEQ_MASK
        if overrun:
            dev.overrun += n
        else:
            dev.lost_unplugged += n

    def unplugged(self, drained: bool) -> None:
        if not drained:
            log.debug("%s: host did not read everything before the unplug", self.dev.name)
            self.dev.inexact = True

    async def send(self, k: int, end: int) -> None:
        dev, wire, faults, rng = self.dev, self.wire, self.faults, self.fault_rng
        fh1 = not (wire.text or wire.host_seq)  # the device numbers its frames
        chunks: list[bytes] = []
        # (end offset, kind, seq, host frames, host rejected) per piece, to count
        # only what was fully written
        pieces: list[tuple[int, str, int, int, int]] = []
        offset = 0

        def add(data: bytes, kind: str, seq: int = 0, frames: int = 0, rejected: int = 0) -> None:
            nonlocal offset
            chunks.append(data)
            offset += len(data)
            pieces.append((offset, kind, seq, frames, rejected))

        last = dev._last_seq
        for tick in range(k, end):
            for item in self.gen.tick(tick):
                if faults.noise and rng.random() < faults.noise:
                    noise = wire.noise(rng, rng.randint(NOISE_MIN, NOISE_MAX))
                    if noise is not None:
                        add(noise.data, "noise", 0, noise.frames, noise.rejected)
                if faults.skip and rng.random() < faults.skip:
                    if not fh1:
                        dev.skipped += 1  # a text device just misses a sample
                        continue
                    if last is not None:  # before any frame the host could not tell
                        dev.skipped += 1
                        dev.seq = (dev.seq + 1) & _SEQ_MASK
                seq = dev.seq
                if fh1:
                    dev.seq = (seq + 1) & _SEQ_MASK
                effect = (1, 0) if self.gen.trusted else self._effect(item)
                if effect != (1, 0):  # a replayed line the host will not take as one frame
                    add(wire.frame(item, seq), "invalid", seq, *effect)
                elif faults.corrupt and rng.random() < faults.corrupt:
                    add(wire.corrupt(item, seq, rng), "corrupt", seq, 0, 1)
                else:
                    add(wire.frame(item, seq), "frame", seq, 1, 0)
                    last = seq
        written = await dev.emulator.write(b"".join(chunks))
        start = 0
        for end_off, kind, seq, frames, rejected in pieces:
            if end_off > written:
                if start < written:
                    dev.inexact = True  # a piece cut in half: the host sees a partial frame
                if kind == "frame":
                    dev.lost_unplugged += 1
            elif kind == "frame":
                dev.sent += 1
                if fh1:
                    if dev._last_seq is not None and seq != (dev._last_seq + 1) & _SEQ_MASK:
                        dev.gaps += 1
                    dev._last_seq = seq
            elif kind == "corrupt":
                dev.corrupted += 1
            elif kind == "invalid":
                dev.sent += frames
                dev.invalid += rejected
            else:
                dev.noise_events += 1
                dev.noise_bytes += end_off - start
                dev.noise_frames += frames
                dev.noise_rejected += rejected
            start = end_off

    def _effect(self, item: Body) -> tuple[int, int]:
        key = item if isinstance(item, str) else item.hex()
        got = self._effects.get(key)
        if got is None:
            got = self._effects[key] = self.wire.effect(self.wire.frame(item, 0))
        return got


class DeviceAcks:
    """A fleet device answering the host's fh1 commands (emulation.acks): the
    device's HostWatch hands over the downlink, acks go out through its board
    with the device's own seq, counted in its account like any frame."""

    def __init__(self, dev: EmulatedDevice, policy: AckPolicy, seed: object) -> None:
        self.dev = dev
        codec = dev.emulator.codec
        max_payload = codec.max_payload if isinstance(codec, Fh1Codec) else None
        self.answerer = Answerer(policy, f"{seed}:{dev.name}", max_payload=max_payload, keep=False)
        self._decoder = dev.emulator.wire.decoder("downlink")
        self._due: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    def downlink(self, data: bytes) -> None:
        """What the host wrote (HostWatch's hook): each command's ack is due after the delay."""
        answerer, dev = self.answerer, self.dev
        now = asyncio.get_running_loop().time()
        for frame in self._decoder.feed(data, time.time()):
            reply = answerer.answer(frame)
            dev.commands, dev.acks_dropped = answerer.commands, answerer.dropped
            if reply is not None:
                self._due.put_nowait((now + answerer.policy.delay, reply))

    async def run(self) -> None:
        """Write each ack when it is due (delays are equal, so in order)."""
        loop = asyncio.get_running_loop()
        dev = self.dev
        while True:
            due, reply = await self._due.get()
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            seq = dev.seq
            dev.seq = (seq + 1) & _SEQ_MASK
            data = dev.emulator.wire.encode(reply, seq, TYPE_COMMAND_ACK)
            written = await dev.emulator.write(data)
            if written < len(data):  # unplugged meanwhile: the host never gets it
                dev.lost_unplugged += 1
                dev.inexact = dev.inexact or written > 0
                continue
            dev.sent += 1
            dev.acks += 1
            if dev._last_seq is not None and seq != (dev._last_seq + 1) & _SEQ_MASK:
                dev.gaps += 1
            dev._last_seq = seq
