"""A board's firmware main loop: ticks at a rate, written while someone listens.

A :class:`Stream` paces one emulated board: tick ``k`` is due ``k / rate``
seconds after the clock starts (bursts come whole), and every wake writes the
ticks due since the last one. What a tick sends is the :class:`Player`'s
business (the fleet's generators and faults, or the test kit's countable
frames); the stream decides when, and what happens to ticks nobody hears
(unplugged, the host not listening yet, or so far behind that the backlog is
dropped, as firmware with a full TX buffer drops). It can also pull the cable
on a schedule (:class:`Cable`), between frames and once the host has read
what was written, so the counts stay exact.
"""

from __future__ import annotations

import asyncio
import functools
import math
from dataclasses import dataclass
from typing import Protocol

from firmware_host.emulation.hostwatch import HostWatch
from firmware_host.emulation.virtualport import VirtualPort, wake

__all__ = [
    "DRAIN_TIMEOUT",
    "IDLE_POLL",
    "MAX_LAG",
    "MIN_TICK",
    "Cable",
    "Device",
    "Pacer",
    "Player",
    "Stream",
    "check_rate",
]

#: shortest sleep between writes: at 1 kHz a wake writes a few frames, not one
MIN_TICK = 0.004
#: how far a board may fall behind its clock before it drops frames (TX overrun)
MAX_LAG = 0.5
#: how often a board that waits for the host checks the line settings
IDLE_POLL = 0.1
#: the most a clean unplug waits for the host to read what was written; only
#: a host starved of CPU comes near it (1 s was seen to be too short there)
DRAIN_TIMEOUT = 5.0


def check_rate(rate: float) -> None:
    """ValueError (one line) unless ``rate`` is a positive, finite number of frames per second."""
    if not (rate > 0 and math.isfinite(rate)):
        raise ValueError(f"rate must be a positive number of frames per second, got {rate!r}")


@dataclass(frozen=True)
class Pacer:
    """The clock arithmetic of ``rate`` ticks per second, in bursts of ``burst``."""

    rate: float
    burst: int = 1

    def __post_init__(self) -> None:
        check_rate(self.rate)
        if self.burst < 1:
            raise ValueError(f"burst must be >= 1, got {self.burst!r}")

    def due(self, elapsed: float) -> int:
        """Ticks due ``elapsed`` seconds after the clock started (bursts come whole)."""
        groups = math.floor(elapsed * self.rate / self.burst + 1e-9) + 1
        return groups * self.burst

    def time_of(self, k: int) -> float:
        """When tick ``k`` is due, in seconds after the clock started."""
        return (k // self.burst) * self.burst / self.rate

    @property
    def lag_limit(self) -> int:
        """Ticks a board may owe before it drops the backlog."""
        return max(self.burst, math.ceil(self.rate * MAX_LAG))


@dataclass(frozen=True)
class Cable:
    """Unplug the board every ``every`` seconds for ``down_for`` seconds."""

    every: float
    down_for: float


class Player(Protocol):
    """What a stream plays: the frames of its ticks."""

    async def send(self, k: int, end: int) -> None:
        """Write the frames of ticks ``k`` .. ``end - 1`` (the board is plugged, the host listening)."""

    def lose(self, k: int, end: int, *, overrun: bool) -> None:
        """Ticks ``k`` .. ``end - 1`` happened with nobody to hear them (``overrun``:
        the board fell behind; else unplugged, or the host not listening)."""

    def unplugged(self, drained: bool) -> None:
        """The cable was pulled; ``drained`` is False if the host had not read everything."""


class Device(Protocol):
    """The board a stream drives (an :class:`~firmware_host.emulation.board.EmulatedBoard`)."""

    @property
    def port(self) -> VirtualPort: ...

    async def drain(self, timeout: float) -> bool: ...

    def unplug(self) -> None: ...

    def replug(self) -> None: ...


class Stream:
    """Plays ``player`` on ``device`` at ``rate`` ticks per second until :meth:`stop`.

    With ``host``, the clock starts when a host first opens the port and only
    what is written while it listens is sent; with ``cable``, the board is
    unplugged and replugged on that schedule.
    """

    def __init__(
        self,
        device: Device,
        player: Player,
        rate: float,
        *,
        burst: int = 1,
        cable: Cable | None = None,
        host: HostWatch | None = None,
    ) -> None:
        self.device = device
        self.player = player
        self.pacer = Pacer(rate, burst)
        self.cable = cable
        self.host = host
        self.stopping = False
        self._wake: asyncio.Future[None] | None = None

    def listening(self) -> bool:
        return self.host is None or self.host.listening

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        device, player, pacer, cable, host = self.device, self.player, self.pacer, self.cable, self.host
        port = device.port
        while host is not None and not self.stopping:
            host.poll(loop.time())
            if host.listening:
                break
            await self.pause(IDLE_POLL, idle=True)
        t0 = loop.time()
        k = 0
        next_unplug = t0 + cable.every if cable else None
        replug_at: float | None = None
        while not self.stopping:
            now = loop.time()
            if cable is not None and replug_at is not None and now >= replug_at:
                device.replug()
                if host is not None:
                    host.reset()
                replug_at, next_unplug = None, now + cable.every
            elif cable is not None and next_unplug is not None and now >= next_unplug:
                drained = await device.drain(DRAIN_TIMEOUT) if self.listening() else True
                device.unplug()
                if host is not None:
                    host.reset()
                player.unplugged(drained)
                now = loop.time()
                replug_at, next_unplug = now + cable.down_for, None
            if host is not None:
                host.poll(now)  # the host opening the port, downlink bytes
            deliverable = port.plugged and self.listening()
            due = pacer.due(now - t0)
            if deliverable and due - k > pacer.lag_limit:
                player.lose(k, due - pacer.lag_limit, overrun=True)
                k = due - pacer.lag_limit
            if due > k:
                if deliverable:
                    await player.send(k, due)
                else:
                    player.lose(k, due, overrun=False)
                k = due
            now = loop.time()
            wake_at = t0 + pacer.time_of(k)
            if deliverable:
                wake_at = max(wake_at, now + MIN_TICK)
            else:
                wake_at = min(wake_at, now + IDLE_POLL)
            for event in (replug_at, next_unplug):
                if event is not None:
                    wake_at = min(wake_at, event)
            await self.pause(wake_at - now, idle=not deliverable)

    async def pause(self, delay: float, *, idle: bool = False) -> None:
        """Sleep ``delay`` s; wake early on :meth:`stop`, and when ``idle``
        also on input from the host or on a replug."""
        loop = asyncio.get_running_loop()
        port = self.device.port
        fut: asyncio.Future[None] = loop.create_future()
        done = functools.partial(wake, fut)
        self._wake = fut
        timer = loop.call_later(max(0.0, delay), done)
        host = self.host
        # idle: wake on the host opening the port; a board that answers
        # commands also wakes on them, or an ack would wait for the next tick
        readable = port.master if host is not None and (idle or host.downlink is not None) else None
        generation = port.generation
        plugged = port.when_plugged() if idle and not port.plugged else None
        if readable is not None:
            loop.add_reader(readable, done)
        if plugged is not None:
            plugged.add_done_callback(lambda _: done())
        try:
            await fut
        finally:
            timer.cancel()
            self._wake = None
            if readable is not None and port.owns(readable, generation):
                loop.remove_reader(readable)
            if plugged is not None:
                plugged.cancel()

    def stop(self) -> None:
        """Stop between frames: the loop ends at its next wake, which this brings forward."""
        self.stopping = True
        if self._wake is not None:
            wake(self._wake)
