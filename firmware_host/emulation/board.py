"""One emulated board on a pty pair: what the fleet and the test kit both play.

An :class:`EmulatedBoard` is a :class:`~firmware_host.emulation.virtualport.VirtualPort`
plus the :class:`~firmware_host.emulation.wire.Wire` of a board (or of a bare
codec): it sends frames and lines encoded the way that board's firmware
would, injects noise, streams at the board's rate, is unplugged and replugged,
and decodes what the host writes back (downlink). Input stays exact and
countable: ``send_frames(10)`` writes exactly those 10 frames, in one write.
The fleet (``firmware_host.emulation.fleet``) builds each of its devices on
one, adding generators, faults and their accounting.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from firmware_host.codecs import Codec, CodecFactory, Fh1Codec
from firmware_host.codecs.fh1 import TYPE_COMMAND_ACK
from firmware_host.config.boards import Board, load_boards
from firmware_host.config.schema import DEFAULT_BAUDRATE
from firmware_host.emulation.acks import AckPolicy, Answerer
from firmware_host.emulation.stream import Stream
from firmware_host.emulation.virtualport import VirtualPort
from firmware_host.emulation.wire import Body, make_wire
from firmware_host.frames import Frame

__all__ = ["DEFAULT_RATE", "Answers", "BoardSpec", "EmulatedBoard", "PayloadSpec", "device_config"]

#: frames per second when streaming without a board profile
DEFAULT_RATE = 100.0
#: how often a drain looks at the tty again (the kernel has no event for "read")
_DRAIN_POLL = 0.005

PayloadSpec = Body | Callable[[int], Body] | None


@dataclass(frozen=True)
class BoardSpec:
    """What an emulated (or real) device speaks: a board's settings or a bare codec's."""

    codec: str
    codec_options: Mapping[str, int] = field(default_factory=dict)
    baudrate: int = DEFAULT_BAUDRATE
    board: Board | None = None
    rate: float = DEFAULT_RATE
    frame_type: int = 0
    payload_size: int = 0

    @property
    def name(self) -> str:
        return self.board.name if self.board is not None else self.codec

    @classmethod
    def from_board(cls, board: Board, codec_options: Mapping[str, int] | None = None) -> BoardSpec:
        """A board's settings; ``codec_options`` override the board's."""
        emu = board.emulator
        return cls(
            codec=board.codec,
            codec_options={**board.codec_options, **(codec_options or {})},
            baudrate=board.baudrate,
            board=board,
            rate=emu.rate,
            frame_type=emu.frame_type,
            payload_size=emu.payload_size,
        )


def device_config(name: str, path: str, spec: BoardSpec, **overrides: Any) -> dict[str, Any]:
    """A ``[[devices]]`` entry for the runtime config: port, codec, codec options, baudrate."""
    entry: dict[str, Any] = {
        "name": name,
        "port": path,
        "codec": spec.codec,
        "baudrate": spec.baudrate,
        **spec.codec_options,
    }
    board = spec.board
    # the board brings its payload schema along: by name where the runtime's config
    # knows it so, else by its file (a .toml path, which ``board`` also takes)
    if board is not None and board.schema is not None:
        if load_boards().get(board.name) == board:
            entry["board"] = board.name
        elif board.source.endswith(".toml") and os.path.isfile(board.source):
            entry["board"] = os.path.abspath(board.source)
    entry.update(overrides)
    return entry


class EmulatedBoard:
    """A board's firmware on a pty pair. The host opens :attr:`path`."""

    def __init__(
        self, port: VirtualPort, spec: BoardSpec, codecs: Mapping[str, CodecFactory] | None = None, seed: int = 0
    ) -> None:
        self.port = port
        self.spec = spec
        #: how this board's bytes look on the wire
        self.wire = make_wire(spec.codec, spec.codec_options, frame_type=spec.frame_type, registry=codecs)
        #: encodes uplink frames (its options bound what we may send)
        self.codec: Codec = self.wire.codec
        #: decodes downlink; a separate instance so its state is the host's stream only
        self._downlink: Codec = self.wire.decoder("downlink")
        #: next fh1 seq (text codecs number frames on the host; this counts them)
        self.seq = 0
        #: frames sent so far (send_frames, send_lines and streaming)
        self.sent = 0
        #: bytes written to the wire, by any method
        self.bytes_written = 0
        #: unplug() calls
        self.unplugs = 0
        self._rng = random.Random(seed)
        self._seed = seed
        # one writer at a time: a stream's frames and an ack must not interleave mid-frame
        self._writing = asyncio.Lock()

    @property
    def path(self) -> str:
        return self.port.path

    @property
    def text(self) -> bool:
        return self.wire.text

    def config(self, name: str = "dut", **overrides: Any) -> dict[str, Any]:
        """A ``[[devices]]`` entry for the runtime config that reads this board."""
        return device_config(name, self.path, self.spec, **overrides)

    # -- uplink ---------------------------------------------------------------

    def encode(self, body: Body | None = None, *, type: int | None = None, seq: int | None = None) -> bytes:
        """Wire bytes of one frame (default body and type: the board's), advancing ``seq``."""
        seq = self.seq if seq is None else seq
        if body is None:
            body = self.wire.sample(seq, self.spec.payload_size)
        data = self.wire.encode(body, seq, type)
        self.seq = seq + 1
        return data

    async def send_frames(
        self, n: int, *, type: int | None = None, payload: PayloadSpec = None, seq: int | None = None
    ) -> bytes:
        """Send ``n`` frames in one write; returns the bytes written.

        ``payload``: bytes/str for every frame, or ``fn(seq) -> bytes | str``;
        default: the board's ``payload_size`` bytes (fh1) or ``"frame <seq>"``.
        ``seq`` restarts the numbering there (a jump shows up as a gap).
        """
        if seq is not None:
            self.seq = seq
        parts = []
        for _ in range(n):
            body = payload(self.seq) if callable(payload) else payload
            parts.append(self.encode(body, type=type))
        data = b"".join(parts)
        await self.write(data)
        self.sent += n
        return data

    async def send_lines(self, lines: list[str] | tuple[str, ...]) -> bytes:
        """Send text lines through the codec (``nmea`` adds ``$`` and the checksum)."""
        if not self.text:
            raise TypeError(f"codec {self.spec.codec!r} is binary: use send_frames(), or write() for raw bytes")
        data = b"".join(self.encode(line) for line in lines)
        await self.write(data)
        self.sent += len(lines)
        return data

    async def noise(self, nbytes: int) -> bytes:
        """Send ``nbytes`` of garbage ending in the codec's delimiter, so the next
        frame decodes cleanly. For ``fh1`` and ``nmea`` it never decodes to a
        frame (one ``rejected``, or more); ``lines`` accepts any text, so there
        it is a garbage line (a frame) unless longer than ``max_line``."""
        noise = self.wire.noise(self._rng, nbytes)
        if noise is None:  # pragma: no cover - 2**-16 odds, 16 times
            raise RuntimeError("could not make noise that does not decode")
        await self.write(noise.data)
        return noise.data

    async def write(self, data: bytes) -> int:
        """Raw bytes onto the wire (awaits room in the pty; never blocks the loop).
        Returns the bytes written: fewer if the board is unplugged meanwhile."""
        async with self._writing:
            written = await self.port.write(data)
        self.bytes_written += written
        return written

    # -- the cable ----------------------------------------------------------------

    def unplug(self) -> None:
        """The device node goes away, and its stable link with it (as udev
        removes /dev/serial/by-id links): a link left pointing at the dead
        /dev/pts/N would let the host's reconnect open whatever pty the kernel
        hands out next under that number, possibly another test's."""
        self.port.unplug()
        self.unplugs += 1

    def replug(self) -> None:
        self.port.replug()

    async def drain(self, timeout: float) -> bool:
        """Await the host reading everything written (before a clean unplug).

        True as soon as the tty is empty (milliseconds when the host keeps up)
        or unplugged; False if bytes were still unread after ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        quiet = 0
        while loop.time() < deadline:
            pending = self.port.unread()
            if pending is None:
                return True
            quiet = quiet + 1 if pending == 0 else 0
            if quiet >= 2:  # twice: bytes may still sit in the tty layer's flip buffer
                return True
            await asyncio.sleep(_DRAIN_POLL)
        return False

    # -- streaming --------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def streaming(self, rate: float | None = None) -> AsyncIterator[EmulatedBoard]:
        """Send frames at ``rate`` (default: the board's) while inside, like running firmware."""
        stream = Stream(self, _Countable(self), rate or self.spec.rate)
        task = asyncio.create_task(stream.run(), name=f"stream:{self.path}")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- downlink ---------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def answering(self, policy: AckPolicy | None = None, **options: Any) -> AsyncIterator[Answers]:
        """Answer the host's fh1 commands with acks while inside, like firmware
        that takes commands: ``async with board.answering(drop_first=1, delay=0.2) as answers``
        (options: :class:`~firmware_host.emulation.acks.AckPolicy`). Every frame the
        host sends lands in ``answers.received`` (so ``read_downlink`` is not used meanwhile)."""
        if not isinstance(self.codec, Fh1Codec):
            raise TypeError(f"codec {self.spec.codec!r} has no commands to answer (fh1 has)")
        answerer = Answerer(policy or AckPolicy(**options), self._seed, max_payload=self.codec.max_payload)
        answers = Answers(self, answerer)
        tasks = [
            asyncio.create_task(answers.read(), name=f"answer-read:{self.path}"),
            asyncio.create_task(answers.write(), name=f"answer-write:{self.path}"),
        ]
        try:
            yield answers
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def read_downlink(self, timeout: float = 5.0) -> list[Frame]:
        """Await what the host sent (``rt.send(...)``), decoded with the board's codec."""
        async with asyncio.timeout(timeout):
            while True:
                frames = self._downlink.feed(await self.port.read(), time.time())
                if frames:
                    return frames

    def __repr__(self) -> str:
        return f"<EmulatedBoard {self.spec.name} on {self.path}>"


class Answers:
    """What :meth:`EmulatedBoard.answering` yields: the host's frames and the acks."""

    def __init__(self, board: EmulatedBoard, answerer: Answerer) -> None:
        self.board = board
        self.answerer = answerer
        self._due: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        self._arrived = asyncio.Event()

    @property
    def received(self) -> list[Frame]:
        """Every frame the host sent so far, commands or not."""
        return self.answerer.received

    @property
    def commands(self) -> int:
        return self.answerer.commands

    @property
    def acked(self) -> int:
        return self.answerer.acked

    @property
    def dropped(self) -> int:
        return self.answerer.dropped

    async def wait_received(self, count: int, timeout: float = 5.0) -> list[Frame]:
        """Until the host has sent at least ``count`` frames; TimeoutError after ``timeout``."""
        async with asyncio.timeout(timeout):
            while len(self.received) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.received

    async def read(self) -> None:
        """Decode the downlink; schedule each ack at its due time (delays are equal, so in order)."""
        board = self.board
        port = board.port
        loop = asyncio.get_running_loop()
        delay = self.answerer.policy.delay
        while True:
            try:
                data = await port.read()
            except ConnectionError:  # unplugged: the host's commands go nowhere until the replug
                await port.when_plugged()
                board._downlink.reset()
                continue
            for frame in board._downlink.feed(data, time.time()):
                reply = self.answerer.answer(frame)
                if reply is not None:
                    self._due.put_nowait((loop.time() + delay, reply))
            self._arrived.set()

    async def write(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, reply = await self._due.get()
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            # the board's own uplink seq: the host sees no gap
            await self.board.write(self.board.encode(reply, type=TYPE_COMMAND_ACK))


class _Countable:
    """What :meth:`EmulatedBoard.streaming` plays: the board's default frames,
    one per tick. Ticks nobody hears are not sent and take no seq: a
    powered-off board sends nothing, and catches nothing up."""

    def __init__(self, board: EmulatedBoard) -> None:
        self.board = board

    async def send(self, k: int, end: int) -> None:
        await self.board.send_frames(end - k)

    def lose(self, k: int, end: int, *, overrun: bool) -> None:
        pass

    def unplugged(self, drained: bool) -> None:
        pass
