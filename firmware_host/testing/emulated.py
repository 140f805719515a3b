"""Emulated boards on pty pairs, and the device under test (real or emulated).

An :class:`EmulatedBoard` is a :class:`~firmware_host.virtualport.VirtualPort`
plus the codec of a board (or a bare codec name): it sends frames and lines
encoded the way that board's firmware would, injects noise, streams at the
board's rate, and decodes what the host writes back (downlink).

Self-contained on purpose: the full emulator (``firmware_host.emulator``)
models far more (fault injection, replay); tests need exact, countable input.
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

from firmware_host.codecs import BUILTIN_CODECS, Codec, CodecFactory, make_codec
from firmware_host.config.boards import Board, load_board_file, load_boards
from firmware_host.config.schema import DEFAULT_BAUDRATE
from firmware_host.emulation.virtualport import VirtualPort
from firmware_host.frames import Frame

#: frames per second when streaming without a board profile
DEFAULT_RATE = 100.0
#: a noise run is re-rolled at most this often if it happens to decode
_NOISE_TRIES = 16

Body = bytes | str
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


def resolve_board(
    name: str,
    codecs: Mapping[str, CodecFactory] | None = None,
    *,
    boards: Mapping[str, Board] | None = None,
    codec_options: Mapping[str, int] | None = None,
) -> BoardSpec:
    """``name`` is a board (shipped, ``$FIRMWARE_HOST_BOARDS``, or a ``.toml``
    path) or a codec name; ``codec_options`` override the board's."""
    registry = {**BUILTIN_CODECS, **(codecs or {})}
    codec_options = dict(codec_options or {})
    if name in registry and (boards is None or name not in boards):
        return BoardSpec(codec=name, codec_options=codec_options)
    if name.endswith(".toml") and os.path.isfile(name):
        board: Board | None = load_board_file(name)
    else:
        known = load_boards() if boards is None else boards
        board = known.get(name)
        if board is None:
            raise LookupError(
                f"unknown board or codec {name!r} (boards: {', '.join(sorted(known)) or 'none'};"
                f" codecs: {', '.join(sorted(registry))})"
            )
    assert board is not None
    emu = board.emulator
    return BoardSpec(
        codec=board.codec,
        codec_options={**board.codec_options, **codec_options},
        baudrate=board.baudrate,
        board=board,
        rate=emu.rate,
        frame_type=emu.frame_type,
        payload_size=emu.payload_size,
    )


class EmulatedBoard:
    """A board's firmware on a pty pair. The host opens :attr:`path`."""

    def __init__(
        self, port: VirtualPort, spec: BoardSpec, codecs: Mapping[str, CodecFactory] | None = None, seed: int = 0
    ) -> None:
        self.port = port
        self.spec = spec
        self._registry = codecs
        #: encodes uplink frames (its options bound what we may send)
        self.codec: Codec = make_codec(spec.codec, "emulated", dict(spec.codec_options), codecs)
        #: decodes downlink; a separate instance so its state is the host's stream only
        self._downlink: Codec = make_codec(spec.codec, "downlink", dict(spec.codec_options), codecs)
        #: next fh1 seq (text codecs number frames on the host; this counts them)
        self.seq = 0
        #: frames sent so far (send_frames, send_lines and streaming)
        self.sent = 0
        self._rng = random.Random(seed)

    @property
    def path(self) -> str:
        return self.port.path

    @property
    def text(self) -> bool:
        return self.codec.text

    def config(self, name: str = "dut", **overrides: Any) -> dict[str, Any]:
        """A ``[[devices]]`` entry for the runtime config that reads this board."""
        return device_config(name, self.path, self.spec, **overrides)

    # -- uplink ---------------------------------------------------------------

    def encode(self, body: Body | None = None, *, type: int | None = None, seq: int | None = None) -> bytes:
        """Wire bytes of one frame (default body and type: the board's), advancing ``seq``."""
        seq = self.seq if seq is None else seq
        if body is None:
            body = self._default_body(seq)
        frame_type = self.spec.frame_type if type is None and not self.text else type
        wire = self.codec.encode(frame_type, seq, body)
        self.seq = seq + 1
        return wire

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
        data = self._noise(nbytes)
        await self.write(data)
        return data

    async def write(self, data: bytes) -> None:
        """Raw bytes onto the wire (awaits room in the pty; never blocks the loop)."""
        await self.port.write(data)

    def unplug(self) -> None:
        """The device node goes away, and its stable link with it (as udev
        removes /dev/serial/by-id links): a link left pointing at the dead
        /dev/pts/N would let the host's reconnect open whatever pty the kernel
        hands out next under that number, possibly another test's."""
        self.port.unplug()
        if self.port.link:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.port.link)

    def replug(self) -> None:
        self.port.replug()

    @contextlib.asynccontextmanager
    async def streaming(self, rate: float | None = None) -> AsyncIterator[EmulatedBoard]:
        """Send frames at ``rate`` (default: the board's) while inside, like running firmware."""
        task = asyncio.create_task(self._stream(rate or self.spec.rate), name=f"stream:{self.path}")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _stream(self, rate: float) -> None:
        loop = asyncio.get_running_loop()
        start, due_sent = loop.time(), 0
        # one write per tick of at least 5 ms: asyncio cannot pace 1 kHz frame by frame
        tick = max(1.0 / rate, 0.005)
        while True:
            due = int((loop.time() - start) * rate) + 1
            if not self.port.plugged:
                due_sent = due  # a powered-off board sends nothing, and catches nothing up
            elif due > due_sent:
                n = min(due - due_sent, 1000)
                await self.send_frames(n)
                due_sent += n
            await asyncio.sleep(tick)

    # -- downlink ---------------------------------------------------------------

    async def read_downlink(self, timeout: float = 5.0) -> list[Frame]:
        """Await what the host sent (``rt.send(...)``), decoded with the board's codec."""
        async with asyncio.timeout(timeout):
            while True:
                frames = self._downlink.feed(await self.port.read(), time.time())
                if frames:
                    return frames

    # -- helpers ------------------------------------------------------------------

    def _default_body(self, seq: int) -> Body:
        if self.text:
            return f"FHTST,{seq}" if self.spec.codec == "nmea" else f"frame {seq}"
        size = self.spec.payload_size or 4
        pattern = (seq & 0xFFFFFFFF).to_bytes(4, "little")
        return (pattern * (size // 4 + 1))[:size]

    def _noise(self, nbytes: int) -> bytes:
        delim = b"\n" if self.text else b"\x00"
        alphabet = bytes(b for b in range(1, 256) if b != delim[0])
        for _ in range(_NOISE_TRIES):
            body = bytes(self._rng.choice(alphabet) for _ in range(max(nbytes - 1, 0)))
            data = body + delim
            if self.spec.codec == "lines":
                return data
            probe = make_codec(self.spec.codec, "probe", dict(self.spec.codec_options), self._registry)
            if not probe.feed(data, 0.0):
                return data
        raise RuntimeError("could not make noise that does not decode")  # pragma: no cover - 2**-16 odds, 16 times

    def __repr__(self) -> str:
        return f"<EmulatedBoard {self.spec.name} on {self.path}>"


def device_config(name: str, path: str, spec: BoardSpec, **overrides: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name,
        "port": path,
        "codec": spec.codec,
        "baudrate": spec.baudrate,
        **spec.codec_options,
    }
    entry.update(overrides)
    return entry


class DeviceUnderTest:
    """What ``fh_device`` yields: the real port given with ``--fh-port``, or
    an emulated board on a pty. The same test code drives both."""

    def __init__(self, path: str, spec: BoardSpec, emulator: EmulatedBoard | None = None) -> None:
        self.path = path
        self.spec = spec
        #: the emulated board (None on real hardware): send frames, noise, unplug
        self.emulator = emulator

    @property
    def emulated(self) -> bool:
        return self.emulator is not None

    @property
    def codec(self) -> str:
        return self.spec.codec

    def config(self, name: str = "dut", **overrides: Any) -> dict[str, Any]:
        """A ``[[devices]]`` entry: port, codec, codec options and baudrate of the board."""
        return device_config(name, self.path, self.spec, **overrides)

    @contextlib.asynccontextmanager
    async def streaming(self, rate: float | None = None) -> AsyncIterator[DeviceUnderTest]:
        """While inside, the device sends frames: an emulated board streams at
        its board's rate; real hardware streams by itself, so this does nothing."""
        if self.emulator is None:
            yield self
            return
        async with self.emulator.streaming(rate):
            yield self

    def __repr__(self) -> str:
        kind = "emulated" if self.emulated else "hardware"
        return f"<DeviceUnderTest {self.spec.name} {kind} at {self.path}>"
