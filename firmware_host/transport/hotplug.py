"""When to list the ports again: udev's events, or a steady interval.

With the ``[udev]`` extra (pyudev) and udevd running, the kernel's tty add
and remove events wake the watcher: nothing runs while nothing is plugged.
Otherwise it lists the ports every ``[serial] scan_interval`` (one listing in
an executor; nothing per frame).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Protocol

from firmware_host.errors import ConfigError

__all__ = ["IntervalTrigger", "ScanTrigger", "UdevTrigger", "make_trigger", "udev_running"]

#: where udevd keeps its control socket: no udevd, no events (a container)
UDEV_CONTROL = "/run/udev/control"
#: the most udev events taken in one wake-up: a storm of them still yields
#: to the loop, and one scan covers them all
MAX_EVENTS_PER_WAKE = 256


class ScanTrigger(Protocol):
    async def wait(self) -> None:
        """Return when the ports should be listed again."""
        ...

    def close(self) -> None: ...


class IntervalTrigger:
    """A listing every ``interval`` seconds."""

    def __init__(self, interval: float) -> None:
        self.interval = interval

    async def wait(self) -> None:
        await asyncio.sleep(self.interval)

    def close(self) -> None:
        pass


class UdevTrigger:
    """A listing after each batch of udev tty events (pyudev's netlink
    monitor, read when the loop sees its socket readable: no thread)."""

    def __init__(self, pyudev: Any) -> None:
        self._monitor = pyudev.Monitor.from_netlink(pyudev.Context())
        self._monitor.filter_by(subsystem="tty")
        self._monitor.start()
        self._due = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def _listen(self) -> None:
        # at the first wait, not at construction: a start that fails before
        # the watcher starts leaves no reader on the loop
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._monitor.fileno(), self._readable)

    def _readable(self) -> None:
        # take what is queued without blocking (timeout 0); the scan sees the result
        for _ in range(MAX_EVENTS_PER_WAKE):
            if self._monitor.poll(timeout=0) is None:
                break
        self._due.set()

    async def wait(self) -> None:
        if self._loop is None:
            self._listen()
        await self._due.wait()
        self._due.clear()

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self._monitor.fileno())
            self._loop = None


def udev_running() -> bool:
    return os.path.exists(UDEV_CONTROL)


def make_trigger(mode: str, interval: float, *, source: str = "<config>") -> ScanTrigger:
    """The trigger ``[serial] hotplug`` asks for; ``auto``: udev when pyudev is
    installed and udevd runs, else the interval. ``udev`` without them is a
    config error (one line)."""
    if mode == "scan":
        return IntervalTrigger(interval)

    def without_udev(problem: str) -> ScanTrigger:
        # auto falls back to the interval; udev asked for by name is the user's mistake
        if mode == "auto":
            return IntervalTrigger(interval)
        raise ConfigError(f"[serial] hotplug{problem}", source=source, key="serial.hotplug") from None

    try:  # only now: pyudev is the optional extra [udev]
        import pyudev
    except ImportError as exc:
        return without_udev(f" = \"udev\" needs pyudev ({exc}): pip install 'firmware-host[udev]'")
    if not udev_running():
        return without_udev(f' = "udev" needs udevd running (no {UDEV_CONTROL}); use "scan"')
    try:
        return UdevTrigger(pyudev)
    except OSError as exc:  # no netlink socket for us (a sandbox)
        return without_udev(f": cannot listen to udev: {exc}")
