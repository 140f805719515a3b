"""Emulated boards on pty pairs: every board runs without hardware.

A :class:`Fleet` plays a list of boards, each on a :class:`VirtualPort`
behind a stable symlink, at the board's frame rate, with optional faults
(line noise, corrupted frames, skipped seqs, bursts, unplug/replug). It
counts exactly what it put on the wire, so tests can hold the host's
counters to it: ``frames == sent + noise_frames``, ``rejected == corrupted +
noise_rejected + invalid``, ``gaps`` as :attr:`EmulatedDevice.gaps`.

Like USB CDC firmware that waits for the host to open the port, a device
starts streaming only once the host has opened its pty (seen as the input
flush pyserial does on open, through the master's packet mode, or as the
host configuring the line). Bytes written before that would be flushed by
the host unseen, which would make the counts inexact.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import logging
import math
import os
import random
import shutil
import signal
import struct
import sys
import tempfile
import termios
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from firmware_host.config.boards import Board, BoardError, load_boards
from firmware_host.config.schema import DeviceConfig
from firmware_host.emulation.generators import Generator, Item, Wire, make_generator
from firmware_host.emulation.virtualport import VirtualPort
from firmware_host.emulation.virtualport import wake as wake_once

__all__ = ["DEFAULT_FLEET", "EmulatedDevice", "FaultOptions", "Fleet", "emulate_main", "parse_emulate_spec"]

log = logging.getLogger("firmware_host.emulator")

#: ``--emulate`` alone: one of each shipped board
DEFAULT_FLEET: tuple[str, ...] = ("nucleo-imu", "env-sensor", "gnss-nmea", "csv-uart")
MAX_COUNT = 256
#: shortest sleep between writes: at 1 kHz a wake writes a few frames, not one
MIN_TICK = 0.004
#: how far a device may fall behind its clock before it drops frames (TX overrun)
MAX_LAG = 0.5
#: how often a device that waits for the host checks the line settings
IDLE_POLL = 0.1
#: a host that configured the line but sent no flush is taken as listening after this
TERMIOS_SETTLE = 0.05
#: the line speed a fresh pty gets; a host opening it always sets another
_SENTINEL_SPEED = termios.B50
_SEQ_MASK = 0xFFFFFFFF


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
    """One emulated board and what it has put on the wire so far."""

    name: str
    path: str  # the stable symlink the host opens
    board: Board
    port: VirtualPort
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
    unplugs: int = 0
    host_opens: int = 0
    bytes_written: int = 0
    downlink_bytes: int = 0  # bytes the host wrote to the device
    inexact: bool = False  # True if something made the counts above unreliable
    _last_seq: int | None = field(default=None, repr=False)

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
            "inexact",
        )
        return {k: getattr(self, k) for k in keys}


def parse_emulate_spec(specs: Sequence[str], boards: Mapping[str, Board]) -> list[tuple[Board, int]]:
    """``("@default",)`` or items like ``"nucleo-imu:2"``, ``"nucleo-imu:2,gnss-nmea"``.

    Repeated boards add up, in first-seen order. Raises ValueError (one line).
    """
    known = ", ".join(sorted(boards)) or "none"
    counts: dict[str, int] = {}
    for spec in specs:
        for item in spec.split(","):
            item = item.strip()
            if item == "@default":
                for name in DEFAULT_FLEET:
                    if name not in boards:
                        raise ValueError(f"default board {name!r} is not defined (known: {known})")
                    counts[name] = counts.get(name, 0) + 1
                continue
            name, sep, n_text = item.partition(":")
            if not name:
                raise ValueError(f"empty board name in {spec!r}: expected BOARD or BOARD:N (known: {known})")
            if name not in boards:
                raise ValueError(f"unknown board {name!r} (known: {known})")
            n = 1
            if sep:
                if not n_text.isdigit() or not 1 <= int(n_text) <= MAX_COUNT:
                    raise ValueError(
                        f"bad count {n_text!r} in {item!r}: expected BOARD:N with N from 1 to "
                        f"{MAX_COUNT} (known boards: {known})"
                    )
                n = int(n_text)
            counts[name] = counts.get(name, 0) + n
    if not counts:
        raise ValueError(f"no boards to emulate (known: {known})")
    for name, n in counts.items():
        if n > MAX_COUNT:
            raise ValueError(f"{n} × {name!r} is too many (at most {MAX_COUNT} of a board)")
    return [(boards[name], n) for name, n in counts.items()]


# --------------------------------------------------------------------- one device


class _Runner:
    """Plays one device: its clock, its faults, its port."""

    def __init__(
        self,
        dev: EmulatedDevice,
        rate: float,
        faults: FaultOptions,
        seed: object,
        base_time: float | None,
        wait_for_host: bool,
    ) -> None:
        self.dev = dev
        self.rate = rate
        self.faults = faults
        self.wire = Wire(dev.board)
        seeded = seed is not None
        self.payload_rng = random.Random(f"{seed}:{dev.name}:payload") if seeded else random.Random()
        self.fault_rng = random.Random(f"{seed}:{dev.name}:faults") if seeded else random.Random()
        self.gen: Generator = make_generator(
            dev.board.emulator, dev.board.codec, rate=rate, rng=self.payload_rng, base_time=base_time
        )
        self.burst = max(1, faults.burst)
        self.wait_for_host = wait_for_host
        self.listening = not wait_for_host
        self.stopping = False
        self._termios_changed_at: float | None = None
        self._wake: asyncio.Future[None] | None = None
        self._effects: dict[str, tuple[int, int]] = {}  # replayed line -> host effect
        self.arm()

    # -- host detection ----------------------------------------------------------

    def arm(self) -> None:
        """Prepare a fresh pty so the host's open can be seen."""
        self.listening = not self.wait_for_host
        self._termios_changed_at = None
        fd = self.dev.port.master
        if fd is None or not self.wait_for_host:
            return
        try:
            # packet mode: the host's tcflush (pyserial does one on open) shows up on our side
            fcntl.ioctl(fd, termios.TIOCPKT, struct.pack("i", 1))
            attrs = termios.tcgetattr(fd)  # a pty master's termios are its slave's
            attrs[4] = attrs[5] = _SENTINEL_SPEED
            termios.tcsetattr(fd, termios.TCSANOW, attrs)
        except (OSError, termios.error, AttributeError):
            self.listening = True  # no way to tell: stream at once

    def poll_host(self, now: float) -> None:
        """Read what the host sent (packet mode) and notice it opening the port."""
        port = self.dev.port
        while True:
            data = port.read_nowait()
            if not data:
                break
            if data[0] == termios.TIOCPKT_DATA:
                self.dev.downlink_bytes += len(data) - 1
            elif data[0] & termios.TIOCPKT_FLUSHREAD:
                self.dev.host_opens += 1
                self.listening = True
        if self.listening or port.master is None:
            return
        try:
            speeds = termios.tcgetattr(port.master)[4:6]
        except termios.error:
            return
        if speeds != [_SENTINEL_SPEED, _SENTINEL_SPEED]:
            # configured but no flush (yet): a reader that does not flush; give a
            # flushing one (pyserial flushes right after configuring) time to do so first
            if self._termios_changed_at is None:
                self._termios_changed_at = now
            elif now - self._termios_changed_at >= TERMIOS_SETTLE:
                self.dev.host_opens += 1
                self.listening = True

    # -- the clock -------------------------------------------------------------------

    def due(self, elapsed: float) -> int:
        """Ticks due ``elapsed`` seconds after the clock started (bursts come whole)."""
        groups = math.floor(elapsed * self.rate / self.burst + 1e-9) + 1
        return groups * self.burst

    def time_of(self, k: int) -> float:
        return (k // self.burst) * self.burst / self.rate

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        dev, faults = self.dev, self.faults
        # the device's clock starts when a host first opens the port
        while not self.stopping:
            self.poll_host(loop.time())
            if self.listening:
                break
            await self.pause(IDLE_POLL, dev.port.master)
        t0 = loop.time()
        k = 0
        lag_limit = max(self.burst, math.ceil(self.rate * MAX_LAG))
        next_unplug = t0 + faults.unplug_every if faults.unplug_every else None
        replug_at: float | None = None
        while not self.stopping:
            now = loop.time()
            if replug_at is not None and now >= replug_at:
                self.replug()
                replug_at = None
                next_unplug = now + faults.unplug_every
            elif next_unplug is not None and now >= next_unplug:
                await self.drain()
                self.unplug()
                now = loop.time()
                replug_at, next_unplug = now + faults.unplug_for, None
            self.poll_host(now)  # the host opening the port, downlink bytes
            deliverable = dev.port.plugged and self.listening
            due = self.due(now - t0)
            if deliverable and due - k > lag_limit:
                self.lose(k, due - lag_limit, overrun=True)
                k = due - lag_limit
            if due > k:
                if deliverable:
                    await self.send(k, due)
                else:
                    self.lose(k, due)
                k = due
            now = loop.time()
            wake = t0 + self.time_of(k)
            if deliverable:
                wake = max(wake, now + MIN_TICK)
            else:
                wake = min(wake, now + IDLE_POLL)
            for event in (replug_at, next_unplug):
                if event is not None:
                    wake = min(wake, event)
            await self.pause(wake - now, None if deliverable else dev.port.master)

    async def pause(self, delay: float, readable: int | None = None) -> None:
        """Sleep ``delay`` s; wake early on stop or when ``readable`` (the master) has input."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        done = functools.partial(wake_once, fut)
        self._wake = fut
        timer = loop.call_later(max(0.0, delay), done)
        if readable is not None:
            loop.add_reader(readable, done)
        try:
            await fut
        finally:
            timer.cancel()
            self._wake = None
            if readable is not None and self.dev.port.master == readable:
                loop.remove_reader(readable)

    def stop(self) -> None:
        self.stopping = True
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    # -- frames -------------------------------------------------------------------

    def lose(self, k: int, end: int, overrun: bool = False) -> None:
        """Ticks k..end-1 happen with nobody to hear them: seqs advance, nothing is written."""
        dev = self.dev
        n = sum(len(self.gen.tick(i)) for i in range(k, end))
        if self.wire.name == "fh1":
            dev.seq = (dev.seq + n) & _SEQ_MASK
        if overrun:
            dev.overrun += n
        else:
            dev.lost_unplugged += n

    async def send(self, k: int, end: int) -> None:
        dev, wire, faults, rng = self.dev, self.wire, self.faults, self.fault_rng
        fh1 = wire.name == "fh1"
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
                    noise = wire.noise(rng)
                    if noise is not None:
                        add(noise[0], "noise", 0, noise[1], noise[2])
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
        written = await self.write(b"".join(chunks))
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

    def _effect(self, item: Item) -> tuple[int, int]:
        key = item if isinstance(item, str) else item.hex()
        got = self._effects.get(key)
        if got is None:
            got = self._effects[key] = self.wire.effect(self.wire.frame(item, 0))
        return got

    async def write(self, data: bytes) -> int:
        """Write ``data`` to the current pty; returns the bytes written (fewer if unplugged)."""
        port, dev = self.dev.port, self.dev
        fd = port.master
        view = memoryview(data)
        written = 0
        loop = asyncio.get_running_loop()
        while written < len(data):
            if fd is None or port.master != fd:
                break
            n = port.write_nowait(view[written:])
            if n:
                written += n
                dev.bytes_written += n
                continue
            # the host is not reading fast enough: wait for room (the pty buffer is small)
            fut: asyncio.Future[None] = loop.create_future()
            done = functools.partial(wake_once, fut)
            loop.add_writer(fd, done)
            timer = loop.call_later(0.1, done)  # re-check: an unplug closes the fd under us
            try:
                await fut
            finally:
                timer.cancel()
                if port.master == fd:
                    loop.remove_writer(fd)
        return written

    # -- the cable ----------------------------------------------------------------

    async def drain(self, timeout: float = 5.0) -> None:
        """Before pulling the cable, let the host read what was written (clean unplug).

        Returns as soon as the tty is empty (milliseconds when the host keeps
        up); the cap only matters on a host starved of CPU, where 1 s was seen
        to be too short and made the emulator's counts inexact."""
        slave = getattr(self.dev.port, "_slave", None)
        if slave is None or not self.listening:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        quiet = 0
        while loop.time() < deadline:
            try:
                pending = struct.unpack("i", fcntl.ioctl(slave, termios.FIONREAD, b"\0\0\0\0"))[0]
            except OSError:
                return
            quiet = quiet + 1 if pending == 0 else 0
            if quiet >= 2:  # twice: bytes may still sit in the tty layer's flip buffer
                return
            await asyncio.sleep(0.005)
        log.debug("%s: host did not read everything before the unplug", self.dev.name)
        self.dev.inexact = True

    def unplug(self) -> None:
        port = self.dev.port
        port.unplug()
        # as udev does: the link goes away, so a host never opens a stale pty
        # number that the kernel hands to another device meanwhile
        if port.link:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(port.link)
        self.listening = False
        self.dev.unplugs += 1

    def replug(self) -> None:
        self.dev.port.plug()
        self.arm()


# --------------------------------------------------------------------- the fleet


def _prepare_directory(directory: str | None) -> tuple[str, bool]:
    """The fleet's link directory, and whether we made it (and so remove it)."""
    if directory is None:
        return tempfile.mkdtemp(prefix="firmware-host-emu-"), True
    if not os.path.isdir(directory):
        os.makedirs(directory)
        return directory, True
    return directory, False


class Fleet:
    """Emulated boards on pty pairs, each behind a stable symlink in ``directory``.

    ``plan`` is what :func:`parse_emulate_spec` returns. ``rate`` overrides every
    board's frame rate; ``seed`` makes payloads and faults reproducible.
    ``wait_for_host=False`` streams at once instead of waiting for a host to
    open the port (bytes nobody reads then pile up in the pty, and are lost).
    """

    def __init__(
        self,
        plan: Sequence[tuple[Board, int]],
        directory: str | os.PathLike[str] | None = None,
        *,
        faults: FaultOptions = FaultOptions(),
        rate: float | None = None,
        seed: object = None,
        wait_for_host: bool = True,
    ) -> None:
        if rate is not None and not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"rate must be a positive number of frames per second, got {rate!r}")
        self.plan = list(plan)
        self.faults = faults
        self.rate = rate
        self.seed = seed
        self.wait_for_host = wait_for_host
        self.directory: str | None = os.fspath(directory) if directory is not None else None
        self.devices: list[EmulatedDevice] = []
        self._created_dir = False
        self._runners: list[_Runner] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        # off the loop: a directory on a slow disk must not stall it
        directory, self._created_dir = await asyncio.to_thread(_prepare_directory, self.directory)
        self.directory = directory
        # a seeded run also fixes the emulated GNSS clock, so sentences repeat exactly
        base_time = 1735732800.0 if self.seed is not None else None
        try:
            for board, count in self.plan:
                rate = self.rate or board.emulator.rate
                for i in range(count):
                    name = f"{board.name}-{i}"
                    port = VirtualPort(os.path.join(directory, name))
                    dev = EmulatedDevice(name, port.path, board, port)
                    self.devices.append(dev)
                    self._runners.append(_Runner(dev, rate, self.faults, self.seed, base_time, self.wait_for_host))
        except BaseException:
            await self.stop()
            raise
        self._tasks = [asyncio.create_task(self._run(r), name=f"emulate:{r.dev.name}") for r in self._runners]

    @staticmethod
    async def _run(runner: _Runner) -> None:
        try:
            await runner.run()
        except asyncio.CancelledError:
            raise
        except Exception:  # one broken device must not take the others down
            log.exception("emulated device %s failed", runner.dev.name)
            runner.dev.inexact = True

    def device(self, name: str) -> EmulatedDevice:
        for dev in self.devices:
            if dev.name == name:
                return dev
        raise KeyError(name)

    def device_configs(self) -> list[DeviceConfig]:
        """One DeviceConfig per emulated device, as if from ``[[devices]]`` with ``board``."""
        return [
            DeviceConfig(
                name=d.name,
                port=d.path,
                match=None,
                board=d.board.name,
                codec=d.board.codec,
                codec_options=dict(d.board.codec_options),
                baudrate=d.board.baudrate,
            )
            for d in self.devices
        ]

    async def stop_sending(self, timeout: float = 2.0) -> None:
        """Stop writing between frames (ports stay open so the host can read the rest)."""
        for runner in self._runners:
            runner.stop()
        if self._tasks:
            _done, pending = await asyncio.wait(self._tasks, timeout=timeout)
            for task in pending:  # parked on a full pty nobody reads
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    async def stop(self) -> None:
        """Stop sending, close the ports, remove the links (and the directory if ours)."""
        await self.stop_sending()
        for dev in self.devices:
            dev.port.close()
        if self._created_dir and self.directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    async def __aenter__(self) -> Fleet:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


# --------------------------------------------------------------------- command line


def emulate_main(
    *,
    board: str,
    count: int = 1,
    rate: float | None = None,
    directory: str | None = None,
    noise: float = 0.0,
    corrupt: float = 0.0,
    skip: float = 0.0,
    burst: int = 0,
    unplug_every: float = 0.0,
    duration: float | None = None,
    seed: int | None = None,
    boards_dirs: Sequence[str] = (),
) -> int:
    """``firmware-host emulate``: print ``NAME PATH`` per device, run until a signal
    or ``duration``. Exit status 0, or 2 for a bad board or option."""
    try:
        boards = load_boards(list(boards_dirs))
    except BoardError as exc:
        print(f"firmware-host: {exc}", file=sys.stderr)
        return 2
    # BOARD may itself be a spec ("nucleo-imu:2,gnss-nmea"); -n counts a bare board
    spec = board if (":" in board or "," in board or board.startswith("@")) else f"{board}:{count}"
    try:
        plan = parse_emulate_spec([spec], boards)
        faults = FaultOptions(noise=noise, corrupt=corrupt, skip=skip, burst=burst, unplug_every=unplug_every)
        fleet = Fleet(plan, directory, faults=faults, rate=rate, seed=seed)
    except ValueError as exc:
        print(f"firmware-host: emulate: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_emulate(fleet, duration))
    except OSError as exc:  # e.g. the link directory is not writable
        print(f"firmware-host: emulate: {exc}", file=sys.stderr)
        return 1


async def _emulate(fleet: Fleet, duration: float | None) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await fleet.start()
        for dev in fleet.devices:
            print(f"{dev.name} {dev.path}")
        sys.stdout.flush()  # whoever reads the paths must get them now, not at exit
        try:
            await asyncio.wait_for(stop.wait(), duration)
        except TimeoutError:
            pass
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await fleet.stop()
    for dev in fleet.devices:
        c = dev.counters()
        print(
            f"{dev.name}: sent {c['sent']}, corrupted {c['corrupted']}, skipped {c['skipped']}, "
            f"noise {c['noise_events']} ({c['noise_bytes']} bytes), lost unplugged {c['lost_unplugged']}, "
            f"overrun {c['overrun']}, unplugs {c['unplugs']}",
            file=sys.stderr,
        )
    return 0
