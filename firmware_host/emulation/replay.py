"""Play a recording back on a pty, at its pace or faster, and say in advance
what the host must count.

A :class:`Replay` is a recording (firmware_host.recordfile) on a
:class:`~firmware_host.emulation.virtualport.VirtualPort`: once a host opens
the port (:class:`~firmware_host.emulation.hostwatch.HostWatch`, as the
fleet waits), it writes each recorded read at its receive time divided by
``speed`` (0: as fast as the host takes them). Faults (:class:`ReplayFaults`)
are applied to the recorded frames beforehand, seeded, so a replay is the
same bytes every time; and because codecs are pure, decoding those bytes
with the device's codec on this side gives the exact ``frames``,
``rejected`` and ``gaps`` the runtime must count (:attr:`Replay.expected`)
before a byte is played.
"""

from __future__ import annotations

import asyncio
import functools
import math
import os
import random
import shutil
import signal
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from firmware_host.codecs import CodecFactory
from firmware_host.config._check import NAME_PATTERN
from firmware_host.config.schema import DEFAULT_BAUDRATE
from firmware_host.emulation.device import NOISE_MAX, NOISE_MIN
from firmware_host.emulation.hostwatch import HostWatch
from firmware_host.emulation.stream import IDLE_POLL, MIN_TICK
from firmware_host.emulation.virtualport import VirtualPort, wake
from firmware_host.emulation.wire import Wire, make_wire
from firmware_host.recordfile import Recording, RecordingError, read_recording

#: codecs whose frames end at a delimiter (0x00, newline): the ones faults can be applied to frame by frame
FAULT_CODECS = ("fh1", "lines", "nmea")

__all__ = ["Expected", "Replay", "ReplayFaults", "fault_chunks", "predict", "replay_main", "speed_value"]

Chunks = list[tuple[int, bytes]]


def speed_value(text: str) -> float:
    """``--speed``: a factor > 0, or ``0`` / ``max`` (as fast as the host reads). ValueError (one line)."""
    if text.strip().lower() == "max":
        return 0.0
    try:
        speed = float(text)
    except ValueError:
        raise ValueError(f"speed must be a number > 0, or 0 or 'max' for as fast as possible, not {text!r}") from None
    if not (math.isfinite(speed) and speed >= 0):
        raise ValueError(f"speed must be a number > 0, or 0 or 'max' for as fast as possible, not {text!r}")
    return speed


@dataclass(frozen=True)
class ReplayFaults:
    """Faults applied to the recorded frames (each a probability per frame), seeded."""

    noise: float = 0.0  # garbage before the frame (the fleet's noise: terminated, never a frame)
    corrupt: float = 0.0  # one bit of the frame flipped
    drop: float = 0.0  # one byte of the frame lost on the wire
    skip: float = 0.0  # the whole frame lost
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("noise", "corrupt", "drop", "skip"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability from 0 to 1, got {value!r}")

    @property
    def any(self) -> bool:
        return bool(self.noise or self.corrupt or self.drop or self.skip)


@dataclass(frozen=True)
class Expected:
    """What the host's counters for the replayed device must read once it has read everything."""

    frames: int
    rejected: int
    gaps: int
    #: ``rejected`` once the host closes the port: a partial last frame counts then
    rejected_at_close: int

    def line(self) -> str:
        text = f"expect: frames={self.frames} rejected={self.rejected} gaps={self.gaps}"
        if self.rejected_at_close != self.rejected:
            text += f" (rejected={self.rejected_at_close} once the port closes)"
        return text


def _damage(unit: bytes, rng: random.Random, faults: ReplayFaults, wire: Wire) -> bytes:
    """One recorded frame (its delimiter last) with the faults that hit it."""
    body, delim = unit[:-1], unit[-1:]
    out = b""
    if faults.noise and rng.random() < faults.noise:
        noise = wire.noise(rng, rng.randint(NOISE_MIN, NOISE_MAX))
        if noise is not None:
            out = noise.data
    if faults.corrupt and rng.random() < faults.corrupt and body:
        i = rng.randrange(len(body))
        # a bit whose flip does not make a delimiter: the frame stays one frame, damaged
        bits = [b for b in range(8) if body[i] ^ (1 << b) != delim[0]]
        damaged = bytearray(body)
        damaged[i] ^= 1 << rng.choice(bits)
        body = bytes(damaged)
    if faults.drop and rng.random() < faults.drop and body:
        i = rng.randrange(len(body))
        body = body[:i] + body[i + 1 :]
    return out + body + delim


def fault_chunks(chunks: Chunks, wire: Wire, faults: ReplayFaults) -> Chunks:
    """The recorded reads with ``faults`` applied, frame by frame (a frame ends
    at the codec's delimiter). A frame goes out whole, at the time of the read
    that completed it; bytes after the last delimiter go out as recorded."""
    if not faults.any:
        return list(chunks)
    rng = random.Random(f"replay:{faults.seed}")
    delim = wire.delimiter
    out: Chunks = []
    # the bytes of the frame under way, joined only when a read completes it: reads without
    # a delimiter (a wrong codec, a slow line) must not copy the growing partial each time
    partial: list[bytes] = []
    for t_us, data in chunks:
        if delim not in data:
            partial.append(data)
            continue
        partial.append(data)
        pieces = b"".join(partial).split(delim)
        partial = [pieces.pop()]
        sent = []
        for piece in pieces:
            if faults.skip and rng.random() < faults.skip:
                continue
            sent.append(_damage(piece + delim, rng, faults, wire))
        if sent:
            out.append((t_us, b"".join(sent)))
    rest = b"".join(partial)
    if rest:
        out.append((chunks[-1][0], rest))
    return out


def predict(chunks: Chunks, wire: Wire) -> Expected:
    """Decode ``chunks`` as the host will, with a fresh codec of the device's."""
    probe = wire.decoder("replay")
    frames = 0
    for _, data in chunks:
        frames += len(probe.feed(data, 0.0))
    rejected, gaps = probe.rejected, probe.gaps
    probe.reset()  # what the host's reader does when its port closes
    return Expected(frames, rejected, gaps, probe.rejected)


class Replay:
    """A recording played on ``port`` once a host opens it.

    ``codec`` and ``codec_options`` default to the recording's (a recording
    that names no codec needs one). ``speed``: 1 the recorded pace, X times
    faster, 0 as fast as the host reads. ValueError (one line) for a bad codec,
    speed or fault.
    """

    def __init__(
        self,
        recording: Recording,
        port: VirtualPort,
        *,
        speed: float = 1.0,
        faults: ReplayFaults | None = None,
        codec: str | None = None,
        codec_options: Mapping[str, int] | None = None,
        registry: Mapping[str, CodecFactory] | None = None,
    ) -> None:
        if not (math.isfinite(speed) and speed >= 0):
            raise ValueError(f"speed must be a number >= 0 (0: as fast as possible), not {speed!r}")
        header = recording.header
        name = codec or header.codec
        if name is None:
            raise ValueError("the recording names no codec: give the device's (--codec)")
        options = dict(codec_options if codec_options is not None else header.codec_options if not codec else {})
        self.recording = recording
        self.port = port
        self.speed = speed
        self.faults = faults or ReplayFaults()
        self.codec = name
        self.codec_options = options
        self.wire = make_wire(name, options, registry=registry)
        if self.faults.any and name not in FAULT_CODECS:
            # faults go frame by frame, a frame ending at the codec's delimiter; other codecs
            # (ubx: length-framed) have none, and a zero byte inside a payload would split a frame
            codecs = ", ".join(FAULT_CODECS)
            raise ValueError(f"faults need a codec whose frames end at a delimiter ({codecs}), not {name}")
        #: what is played: the recorded reads, with the faults
        self.chunks = fault_chunks(recording.chunks, self.wire, self.faults)
        #: the host's counters once it has read everything played
        self.expected = predict(self.chunks, self.wire)
        self.host = HostWatch(port)
        #: bytes and reads written so far
        self.played_bytes = 0
        self.played_chunks = 0
        self.done = False

    @property
    def path(self) -> str:
        return self.port.path

    @property
    def nbytes(self) -> int:
        return sum(len(d) for _, d in self.chunks)

    def config(self, name: str = "replay", **overrides: Any) -> dict[str, Any]:
        """A ``[[devices]]`` entry that reads this replay with the codec it was predicted for."""
        entry: dict[str, Any] = {
            "name": name,
            "port": self.path,
            "codec": self.codec,
            "baudrate": self.recording.header.baudrate or DEFAULT_BAUDRATE,
            **self.codec_options,
        }
        entry.update(overrides)
        return entry

    async def wait_for_host(self) -> None:
        """Return once a host has opened the port (bytes written before would be flushed unseen)."""
        loop = asyncio.get_running_loop()
        host = self.host
        while True:
            host.poll(loop.time())
            if host.listening:
                return
            await self._pause(IDLE_POLL)

    async def _pause(self, delay: float) -> None:
        # the host's open shows as input on the master (a flush packet); a host
        # that only configures the line has no event: look again after ``delay``
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        done = functools.partial(wake, fut)
        timer = loop.call_later(delay, done)
        fd, generation = self.port.master, self.port.generation
        if fd is not None:
            loop.add_reader(fd, done)
        try:
            await fut
        finally:
            timer.cancel()
            if fd is not None and self.port.owns(fd, generation):
                loop.remove_reader(fd)

    async def play(self) -> int:
        """Wait for a host, then write every read at its time; the bytes written."""
        await self.wait_for_host()
        loop = asyncio.get_running_loop()
        chunks, speed = self.chunks, self.speed
        t0 = loop.time()
        first = chunks[0][0] if chunks else 0
        for t_us, data in chunks:
            if speed:
                delay = t0 + (t_us - first) / 1e6 / speed - loop.time()
                if delay > MIN_TICK:
                    await asyncio.sleep(delay)
            written = await self.port.write(data)
            self.played_bytes += written
            self.played_chunks += 1
            if written < len(data):
                break  # unplugged: the rest is lost, as on a pulled cable
        self.done = True
        return self.played_bytes

    def close(self) -> None:
        self.port.close()

    def __repr__(self) -> str:
        return f"<Replay {self.codec} on {self.path}: {len(self.chunks)} reads, {self.expected.line()}>"


# --------------------------------------------------------------------- command line


def replay_main(
    path: str,
    *,
    speed: float = 1.0,
    faults: ReplayFaults | None = None,
    codec: str | None = None,
    directory: str | None = None,
    duration: float | None = None,
) -> int:
    """``firmware-host emulate --replay FILE``: print ``NAME PATH`` and the
    expected counters, play once a host opens the port, then keep the port
    open until a signal or ``duration``. Exit 0; 2 for a bad file or option;
    1 when the port cannot be made."""
    try:
        recording = read_recording(path)
    except (RecordingError, OSError) as exc:
        text = str(exc) if isinstance(exc, RecordingError) else f"cannot read {path}: {exc.strerror or exc}"
        print(f"firmware-host: emulate --replay: {text}", file=sys.stderr)
        return 2
    made = directory is None
    try:
        where = tempfile.mkdtemp(prefix="firmware-host-replay-") if directory is None else directory
        os.makedirs(where, exist_ok=True)
        name = recording.header.device
        if not name or name in (".", "..") or not NAME_PATTERN.fullmatch(name):
            name = "replay"  # the header is the file's word: never a path
        port = VirtualPort(os.path.join(where, name))
    except OSError as exc:
        print(f"firmware-host: emulate --replay: {exc}", file=sys.stderr)
        return 1
    try:
        try:
            replay = Replay(recording, port, speed=speed, faults=faults, codec=codec)
        except ValueError as exc:
            print(f"firmware-host: emulate --replay: {exc}", file=sys.stderr)
            return 2
        try:
            return asyncio.run(_replay(name, replay, duration))
        except BrokenPipeError:
            raise  # stdout's reader left: the CLI ends quietly (cli/brokenpipe.py)
        except OSError as exc:  # the pty failed under us
            print(f"firmware-host: emulate --replay: {exc}", file=sys.stderr)
            return 1
    finally:
        port.close()
        if made:
            shutil.rmtree(where, ignore_errors=True)


async def _replay(name: str, replay: Replay, duration: float | None) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"{name} {replay.path}")
    print(replay.expected.line())
    sys.stdout.flush()  # whoever reads the path must get it now, not at exit
    for note in replay.recording.notes():
        print(f"firmware-host: emulate --replay: {note}", file=sys.stderr)
    started = loop.time()
    playing = asyncio.ensure_future(replay.play())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((playing, stopping), timeout=duration, return_when=asyncio.FIRST_COMPLETED)
        if playing.done() and not playing.cancelled():
            playing.result()
            print(
                f"replayed {replay.played_chunks} reads ({replay.played_bytes} bytes) in {loop.time() - started:.3f}s",
                file=sys.stderr,
            )
            # the port stays open: the host reads the rest, and closing would cost it an error
            left = None if duration is None else max(0.0, duration - (loop.time() - started))
            await asyncio.wait((stopping,), timeout=left)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        for task in (playing, stopping):
            task.cancel()
        await asyncio.gather(playing, stopping, return_exceptions=True)
    return 0
