"""A fleet of emulated boards on pty pairs: every board runs without hardware.

A :class:`Fleet` plays a list of boards, each an
:class:`~firmware_host.emulation.board.EmulatedBoard` (the test kit's board)
behind a stable symlink, at the board's frame rate, with its payload
generator and optional faults (line noise, corrupted frames, skipped seqs,
bursts, unplug/replug). It counts exactly what it put on the wire, so tests
can hold the host's counters to it: ``frames == sent + noise_frames``,
``rejected == corrupted + noise_rejected + invalid``, ``gaps`` as
:attr:`EmulatedDevice.gaps`.

Like USB CDC firmware that waits for the host to open the port, a device
starts streaming only once the host has opened its pty
(:class:`~firmware_host.emulation.hostwatch.HostWatch`). Bytes written before
that would be flushed by the host unseen, which would make the counts inexact.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Mapping, Sequence

from firmware_host.config.boards import Board, BoardError, load_boards
from firmware_host.config.schema import DeviceConfig
from firmware_host.emulation.acks import AckPolicy
from firmware_host.emulation.board import BoardSpec, EmulatedBoard
from firmware_host.emulation.device import DeviceAcks, EmulatedDevice, FaultOptions, FleetPlayer, unplayable
from firmware_host.emulation.hostwatch import HostWatch
from firmware_host.emulation.stream import Cable, Stream, check_rate
from firmware_host.emulation.virtualport import VirtualPort
from firmware_host.emulation.wire import WIRE_CODECS

__all__ = ["DEFAULT_FLEET", "EmulatedDevice", "FaultOptions", "Fleet", "emulate_main", "parse_emulate_spec"]

log = logging.getLogger("firmware_host.emulator")

#: ``--emulate`` alone: one of each shipped board
DEFAULT_FLEET: tuple[str, ...] = ("nucleo-imu", "env-sensor", "gnss-nmea", "csv-uart")
MAX_COUNT = 256
#: the default: every fault off (frozen, so one instance serves every fleet)
NO_FAULTS = FaultOptions()
#: the default: every fh1 board acks every command at once, echoing its body
ALWAYS_ACK = AckPolicy()


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
    ``acks``: how fh1 boards answer the host's commands (None: they do not).
    """

    def __init__(
        self,
        plan: Sequence[tuple[Board, int]],
        directory: str | os.PathLike[str] | None = None,
        *,
        faults: FaultOptions = NO_FAULTS,
        rate: float | None = None,
        seed: object = None,
        wait_for_host: bool = True,
        acks: AckPolicy | None = ALWAYS_ACK,
    ) -> None:
        if rate is not None:
            check_rate(rate)
        for board, _count in plan:
            if board.codec not in WIRE_CODECS:
                raise unplayable(board)
        self.plan = list(plan)
        self.faults = faults
        self.rate = rate
        self.seed = seed
        self.wait_for_host = wait_for_host
        self.acks = acks
        self._answering: list[DeviceAcks] = []
        self.directory: str | None = os.fspath(directory) if directory is not None else None
        self.devices: list[EmulatedDevice] = []
        self._created_dir = False
        self._streams: list[Stream] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._ack_tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        # off the loop: a directory on a slow disk must not stall it
        directory, self._created_dir = await asyncio.to_thread(_prepare_directory, self.directory)
        self.directory = directory
        # a seeded run also fixes the emulated GNSS clock, so sentences repeat exactly
        base_time = 1735732800.0 if self.seed is not None else None
        faults = self.faults
        cable = Cable(faults.unplug_every, faults.unplug_for) if faults.unplug_every else None
        try:
            for board, count in self.plan:
                rate = self.rate or board.emulator.rate
                for i in range(count):
                    name = f"{board.name}-{i}"
                    port = VirtualPort(os.path.join(directory, name))
                    emulator = EmulatedBoard(port, BoardSpec.from_board(board))
                    dev = EmulatedDevice(name, port.path, board, emulator, HostWatch(port, wait=self.wait_for_host))
                    self.devices.append(dev)
                    if self.acks is not None and board.codec == "fh1":
                        answering = DeviceAcks(dev, self.acks, self.seed)
                        dev.host.downlink = answering.downlink
                        self._answering.append(answering)
                    player = FleetPlayer(dev, faults, self.seed, rate, base_time)
                    stream = Stream(emulator, player, rate, burst=max(1, faults.burst), cable=cable, host=dev.host)
                    self._streams.append(stream)
        except BaseException:
            await self.stop()
            raise
        self._tasks = [
            asyncio.create_task(self._run(dev, stream), name=f"emulate:{dev.name}")
            for dev, stream in zip(self.devices, self._streams, strict=True)
        ]
        self._ack_tasks = [
            asyncio.create_task(answering.run(), name=f"acks:{answering.dev.name}") for answering in self._answering
        ]

    @staticmethod
    async def _run(dev: EmulatedDevice, stream: Stream) -> None:
        try:
            await stream.run()
        except asyncio.CancelledError:
            raise
        except Exception:  # one broken device must not take the others down
            log.exception("emulated device %s failed", dev.name)
            dev.inexact = True

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
                schema=d.board.schema,
            )
            for d in self.devices
        ]

    async def stop_sending(self, timeout: float = 2.0) -> None:
        """Stop writing between frames (ports stay open so the host can read the rest)."""
        for stream in self._streams:
            stream.stop()
        for task in self._ack_tasks:  # an ack due later is not written
            task.cancel()
        if self._ack_tasks:
            await asyncio.gather(*self._ack_tasks, return_exceptions=True)
        if self._tasks:
            _done, pending = await asyncio.wait(self._tasks, timeout=timeout)
            for task in pending:  # parked on a full pty nobody reads
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    async def stop(self, timeout: float = 2.0) -> None:
        """Stop sending, close the ports, remove the links (and the directory if ours).
        ``timeout``: how long a frame being written may take to finish (0 when
        the host has stopped reading: a write parked on a full pty never would)."""
        await self.stop_sending(timeout)
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
    acks: bool = True,
    ack_drop_first: int = 0,
    ack_drop: float = 0.0,
    ack_delay: float = 0.0,
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
        policy = AckPolicy(drop_first=ack_drop_first, drop=ack_drop, delay=ack_delay) if acks else None
        fleet = Fleet(plan, directory, faults=faults, rate=rate, seed=seed, acks=policy)
    except ValueError as exc:
        print(f"firmware-host: emulate: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_emulate(fleet, duration))
    except BrokenPipeError:
        raise  # stdout's reader left: the CLI ends quietly (cli/brokenpipe.py)
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
            f"overrun {c['overrun']}, unplugs {c['unplugs']}"
            + (f", commands {c['commands']} (acked {c['acks']}, dropped {c['acks_dropped']})" if c["commands"] else ""),
            file=sys.stderr,
        )
    return 0
